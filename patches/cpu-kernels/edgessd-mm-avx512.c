// AVX-512 (F, BW, VL, DQ, VNNI) variant of edgessd's small-batch kernels; bit-equal to
// edgessd-mm-ref.c.
//
// The integer work is twice as wide as AVX2's: K-quants take two 32-value chunks per
// instruction (maddubs + vpdpwssd), and blocks of 32 take two columns per instruction
// (vpdpbusd). The float steps stay the specification's 8 lanes per column: 512-bit integer
// sums fold to 8 lanes before any float operation, and paired columns keep one column per
// 256-bit half. Activations must lie in [-127, 127], as ggml's quantizers make them.
#include "edgessd-mm-impl.h"

#include <math.h>

#if defined(__x86_64__) || defined(_M_X64)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#endif

#include "edgessd-mm-x86.h"

// ---- blocks of 32 ----

ES_INLINE void rows32(int type, int64_t n, const void * w, size_t w_stride, int64_t nrows,
                      const void * y, size_t y_stride, int ncols, float * dst, size_t dst_stride) {
    const int64_t nb = n / 32;
    const size_t bw = bytes32(type);
    const size_t by = type == EDGESSD_Q4_1 ? sizeof(es_block_q8_1) : sizeof(es_block_q8_0);
    const size_t yq_off = type == EDGESSD_Q4_1 ? 4 : 2;
    const int signed_w = type != EDGESSD_Q4_1;
    const int npair = ncols / 2;
    es_column_scales scales;
    es_scales_init(&scales, y, y_stride, by, nb, ncols);
    __m512i pick[EDGESSD_MM_MAX_COLS / 2];  // lanes 0-7 from column 2p, 8-15 from column 2p+1
    for (int p = 0; p < npair; ++p) {
        pick[p] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(2 * p)), _mm256_set1_epi32(2 * p + 1), 1);
    }
    for (int64_t r = 0; r < nrows; ++r) {
        const char * row = (const char *) w + r * w_stride;
        __m512 acc2[EDGESSD_MM_MAX_COLS / 2];   // columns 2p (low half) and 2p+1 (high half)
        __m256 acc1 = _mm256_setzero_ps();      // the odd last column
        float accm[EDGESSD_MM_MAX_COLS];
        for (int p = 0; p < npair; ++p) acc2[p] = _mm512_setzero_ps();
        for (int j = 0; j < ncols; ++j) accm[j] = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            float d, m = 0.0f;
            _mm_prefetch(row + (b + 4 * ES_PREFETCH_BLOCKS) * bw, _MM_HINT_T2);
            const __m256i q = unpack32(type, row + b * bw, &d, &m);
            const __m256i aq = signed_w ? _mm256_abs_epi8(q) : q;
            const __mmask32 neg = signed_w ? _mm256_movepi8_mask(q) : 0;
            const __mmask64 neg2 = (__mmask64) neg | ((__mmask64) neg << 32);
            const __m512i aq2 = _mm512_broadcast_i64x4(aq);
            const char * yb0 = (const char *) y + b * by;
            const float * sb = es_scales_of(&scales, b);
            // d times each column's scale: the specification's s_b = d_weight * d_column, per lane
            const __m512 ds = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_loadu_ps(sb));
            for (int p = 0; p < npair; ++p) {
                const char * ya = yb0 + (2 * p) * y_stride, * yc = ya + y_stride;
                __m512i yq = _mm512_inserti64x4(_mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *) (ya + yq_off))),
                                                _mm256_loadu_si256((const __m256i *) (yc + yq_off)), 1);
                if (signed_w) yq = _mm512_mask_sub_epi8(yq, neg2, _mm512_setzero_si512(), yq);  // y * sign(w)
                const __m512i isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aq2, yq);
                const __m512 s = _mm512_permutexvar_ps(pick[p], ds);
                acc2[p] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(isum), acc2[p]);
                if (!signed_w) {
                    accm[2 * p]     = fmaf(m, h2f(((const es_half *) ya)[1]), accm[2 * p]);
                    accm[2 * p + 1] = fmaf(m, h2f(((const es_half *) yc)[1]), accm[2 * p + 1]);
                }
            }
            if (ncols & 1) {
                const char * ya = yb0 + (ncols - 1) * y_stride;
                __m256i yq = _mm256_loadu_si256((const __m256i *) (ya + yq_off));
                if (signed_w) yq = _mm256_sign_epi8(yq, q);
                const __m256i isum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aq, yq);
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * sb[ncols - 1]), _mm256_cvtepi32_ps(isum), acc1);
                if (!signed_w) accm[ncols - 1] = fmaf(m, h2f(((const es_half *) ya)[1]), accm[ncols - 1]);
            }
        }
        for (int p = 0; p < npair; ++p) {
            dst[(2 * p) * dst_stride + r]     = hsum8(_mm512_castps512_ps256(acc2[p])) + accm[2 * p];
            dst[(2 * p + 1) * dst_stride + r] = hsum8(_mm512_extractf32x8_ps(acc2[p], 1)) + accm[2 * p + 1];
        }
        if (ncols & 1) dst[(ncols - 1) * dst_stride + r] = hsum8(acc1) + accm[ncols - 1];
    }
}

#define KERNEL32(name, type)                                                                   \
    static void name(int64_t n, const void * w, size_t ws, int64_t nr, const void * y, size_t ys, \
                     int nc, float * dst, size_t ds) {                                         \
        ES_BY_COLS(rows32, type)                                                               \
    }
KERNEL32(avx512_q8_0, EDGESSD_Q8_0)
KERNEL32(avx512_q4_0, EDGESSD_Q4_0)
KERNEL32(avx512_q5_0, EDGESSD_Q5_0)
KERNEL32(avx512_q4_1, EDGESSD_Q4_1)

// ---- super-blocks of 256 against Q8_K ----

typedef struct {
    __m512i q[4];    // unsigned quants: chunks 2k (low half) and 2k+1 (high half)
    __m512i sv[4];   // int16 scales of each int16 lane of the chunks' maddubs
    __m256i cm;      // int16 min coefficients against the 16 bsums
    float d, dm;
} unpacked256;

ES_INLINE __m512i pair256(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}

// Q4_K's and Q5_K's 8 scales and 8 mins (12 packed bytes), as unpacked256's sv and cm
ES_INLINE void unpack_q4_K_scales(const uint8_t * scales, unpacked256 * u) {
    // int16 lanes 0-7: the 8 scales, 8-15: the 8 mins
    const __m512i sm16 = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(es_q4_K_scales_mins_v(scales)));
    for (int k = 0; k < 4; ++k) {
        // lanes 0-15: scale 2k, 16-31: scale 2k+1
        const __m512i idx = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16((short) (2 * k)),
                                                    _mm512_set1_epi16((short) (2 * k + 1)));
        u->sv[k] = _mm512_permutexvar_epi16(idx, sm16);
    }
    // int16 lane g: min of sub-block g/2
    const __m256i cidx = _mm256_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    u->cm = _mm256_permutexvar_epi16(cidx, _mm512_castsi512_si256(sm16));
}

ES_INLINE void unpack_q4_K(const es_block_q4_K * x, unpacked256 * u) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int k = 0; k < 4; ++k) {
        const __m256i v = _mm256_loadu_si256((const __m256i *) (x->qs + 32 * k));
        u->q[k] = pair256(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    }
    unpack_q4_K_scales(x->scales, u);
    u->d  = h2f(x->d);
    u->dm = h2f(x->dmin);
}

ES_INLINE void unpack_q5_K(const es_block_q5_K * x, unpacked256 * u) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i hb = _mm256_loadu_si256((const __m256i *) x->qh);
    for (int k = 0; k < 4; ++k) {
        const __m256i v = _mm256_loadu_si256((const __m256i *) (x->qs + 32 * k));
        u->q[k] = pair256(_mm256_or_si256(_mm256_and_si256(v, m4), es_q5_K_high(hb, 2 * k)),
                          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), es_q5_K_high(hb, 2 * k + 1)));
    }
    unpack_q4_K_scales(x->scales, u);
    u->d  = h2f(x->d);
    u->dm = h2f(x->dmin);
}

ES_INLINE void unpack_q6_K(const es_block_q6_K * x, unpacked256 * u) {
    for (int h = 0; h < 2; ++h) {
        __m256i q[4];
        es_q6_K_chunks(x, h, q);
        u->q[2 * h]     = pair256(q[0], q[1]);
        u->q[2 * h + 1] = pair256(q[2], q[3]);
    }
    // int16 lane i of chunk c has scale 2c + i/8; a 512-bit pair covers chunks 2k, 2k+1
    const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) x->scales));
    for (int k = 0; k < 4; ++k) {
        const __m512i idx = _mm512_set_epi16(4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3,
                                             4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 2,
                                             4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 1,
                                             4 * k,     4 * k,     4 * k,     4 * k,     4 * k,     4 * k,     4 * k,     4 * k);
        u->sv[k] = _mm512_permutexvar_epi16(idx, _mm512_zextsi256_si512(s16));
    }
    u->cm = _mm256_slli_epi16(s16, 5);  // 32 * scale
    u->d  = h2f(x->d);
    u->dm = u->d;
}

ES_INLINE void rows256(int type, int64_t n, const void * w, size_t w_stride, int64_t nrows,
                       const void * y, size_t y_stride, int ncols, float * dst, size_t dst_stride) {
    const int64_t nb = n / 256;
    const size_t bw = es_bytes256(type);
    for (int64_t r = 0; r < nrows; ++r) {
        const char * row = (const char *) w + r * w_stride;
        __m256 acc[EDGESSD_MM_MAX_COLS];
        for (int j = 0; j < ncols; ++j) acc[j] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            unpacked256 u;
            _mm_prefetch(row + (b + ES_PREFETCH_BLOCKS) * bw, _MM_HINT_T2);  // into L2: more misses in flight than L1 allows
            if (type == EDGESSD_Q4_K) {
                unpack_q4_K((const es_block_q4_K *) (row + b * bw), &u);
            } else if (type == EDGESSD_Q5_K) {
                unpack_q5_K((const es_block_q5_K *) (row + b * bw), &u);
            } else {
                unpack_q6_K((const es_block_q6_K *) (row + b * bw), &u);
            }
            const __m256 vd = _mm256_set1_ps(u.d), vdm = _mm256_set1_ps(u.dm);
            for (int j = 0; j < ncols; ++j) {
                const es_block_q8_K * yb = (const es_block_q8_K *) ((const char *) y + j * y_stride) + b;
                __m512i s = _mm512_setzero_si512();
                for (int k = 0; k < 4; ++k) {
                    const __m512i yq = _mm512_loadu_si512((const void *) (yb->qs + 64 * k));
                    s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(u.q[k], yq), u.sv[k]);
                }
                const __m256i isum = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
                const __m256i ml = _mm256_madd_epi16(u.cm, _mm256_loadu_si256((const __m256i *) yb->bsums));
                const __m256 dy = _mm256_broadcast_ss(&yb->d);  // d * dy as the spec's scalar product
                acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(vd, dy), _mm256_cvtepi32_ps(isum), acc[j]);
                acc[j] = _mm256_fnmadd_ps(_mm256_mul_ps(vdm, dy), _mm256_cvtepi32_ps(ml), acc[j]);
            }
        }
        for (int j = 0; j < ncols; ++j) dst[j * dst_stride + r] = hsum8(acc[j]);
    }
}


// One column is cheaper with AVX2's unpacking (no 512-bit inserts and permutes); both variants
// compute the specification's bits, so they can be mixed freely.
#define KERNEL256(name, type)                                                                  \
    static void name(int64_t n, const void * w, size_t ws, int64_t nr, const void * y, size_t ys, \
                     int nc, float * dst, size_t ds) {                                         \
        if (nc == 1) {                                                                         \
            edgessd_mm_avx2_kernel(type)(n, w, ws, nr, y, ys, nc, dst, ds);                    \
            return;                                                                            \
        }                                                                                      \
        ES_BY_COLS(rows256, type)                                                              \
    }
KERNEL256(avx512_q4_K, EDGESSD_Q4_K)
KERNEL256(avx512_q5_K, EDGESSD_Q5_K)
KERNEL256(avx512_q6_K, EDGESSD_Q6_K)

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

edgessd_mm_fn edgessd_mm_avx512_kernel(int type) {
    switch (type) {
        case EDGESSD_Q8_0: return avx512_q8_0;
        case EDGESSD_Q4_0: return avx512_q4_0;
        case EDGESSD_Q5_0: return avx512_q5_0;
        case EDGESSD_Q4_1: return avx512_q4_1;
        case EDGESSD_Q4_K: return avx512_q4_K;
        case EDGESSD_Q5_K: return avx512_q5_K;
        case EDGESSD_Q6_K: return avx512_q6_K;
    }
    return NULL;
}

#else  // not x86-64

edgessd_mm_fn edgessd_mm_avx512_kernel(int type) {
    (void) type;
    return NULL;
}

#endif
