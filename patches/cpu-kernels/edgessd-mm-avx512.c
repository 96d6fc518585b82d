// AVX-512 (F, BW, VL, DQ, VNNI) variant of edgessd's small-batch kernels; bit-equal to
// edgessd-mm-ref.c.
//
// The integer work is twice as wide as AVX2's: K-quants take two 32-value chunks per
// instruction (vpdpbusd, then vpdpwssd for the scales), and blocks of 32 take two columns
// per instruction (vpdpbusd). The float steps stay the specification's 8 lanes per column:
// 512-bit integer sums fold to 8 lanes before any float operation, and paired columns keep
// one column per 256-bit half. Activations must lie in [-127, 127], as ggml's quantizers make them.
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
            _mm_prefetch(row + (b + ES_PREFETCH_BLOCKS32) * bw, _MM_HINT_T2);
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
//
// Per column, each pair of 32-quant chunks is one vpdpbusd: 16 int32 lanes, each the sum of
// 4 products q * y. |4 q y| <= 4 * 63 * 128 fits in int16, so two chunk pairs share one
// register as the low and high int16 halves of each lane, and one vpdpwssd multiplies both by
// their sub-block scales and adds them. Every int32 lane is the same integer as the
// specification's (exact integer sums, no saturation), and the float steps are its steps.

typedef struct {
    __m512i q[4];    // unsigned quants: chunks 2k (low half) and 2k+1 (high half)
    __m512i sv[2];   // int16 pairs: of int32 lane j, the scales of lane j of q[2m] and q[2m+1]
    __m256i cm;      // int16 min coefficients against the 16 bsums
    float d, dm;
} unpacked256;

// the vpermw indexes that build unpacked256.sv from a vector of int16 scales: 8 per super-block
// (Q4_K, Q5_K: one per chunk) or 16 (Q6_K: one per 16 quants, so two per chunk)
typedef struct {
    __m512i sv_idx[2];
    __m256i cm_idx;      // Q4_K, Q5_K: int16 lane g of the mins, the min of sub-block g/2
} consts256;

ES_INLINE void consts256_init(int type, consts256 * c) {
    int16_t idx[2][32];
    for (int m = 0; m < 2; ++m) {
        for (int j = 0; j < 16; ++j) {
            for (int h = 0; h < 2; ++h) {
                const int chunk = 4 * m + 2 * h + (j >= 8);  // lane j of q[2m + h]
                idx[m][2 * j + h] = (int16_t) (type == EDGESSD_Q6_K ? 2 * chunk + (j % 8) / 4 : chunk);
            }
        }
        c->sv_idx[m] = _mm512_loadu_si512((const void *) idx[m]);
    }
    c->cm_idx = _mm256_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
}

// Q4_K's and Q5_K's d, dmin, 8 scales and 8 mins
ES_INLINE void unpack_q4_K_header(const consts256 * c, const void * x, unpacked256 * u) {
    const __m256i sm16 = _mm256_cvtepu8_epi16(es_q4_K_scales_mins_v(x));  // int16 lanes 0-7: scales, 8-15: mins
    for (int m = 0; m < 2; ++m) u->sv[m] = _mm512_permutexvar_epi16(c->sv_idx[m], _mm512_zextsi256_si512(sm16));
    u->cm = _mm256_permutexvar_epi16(c->cm_idx, sm16);
    const __m128 dd = _mm_cvtph_ps(_mm_loadu_si32(x));  // d, dmin
    u->d  = _mm_cvtss_f32(dd);
    u->dm = _mm_cvtss_f32(_mm_movehdup_ps(dd));
}

ES_INLINE void unpack_q4_K(const consts256 * c, const es_block_q4_K * x, unpacked256 * u) {
    // each 32 bytes of nibbles in both halves; the high half shifted right by 4
    const __m512i m4 = _mm512_set1_epi8(0xF);
    const __m512i half_shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    for (int k = 0; k < 4; ++k) {
        const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *) (x->qs + 32 * k)));
        u->q[k] = _mm512_and_si512(_mm512_srlv_epi16(v, half_shift), m4);
    }
    unpack_q4_K_header(c, x, u);
}

ES_INLINE __m512i pair256(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}

ES_INLINE void unpack_q5_K(const consts256 * c, const es_block_q5_K * x, unpacked256 * u) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i hb = _mm256_loadu_si256((const __m256i *) x->qh);
    for (int k = 0; k < 4; ++k) {
        const __m256i v = _mm256_loadu_si256((const __m256i *) (x->qs + 32 * k));
        u->q[k] = pair256(_mm256_or_si256(_mm256_and_si256(v, m4), es_q5_K_high(hb, 2 * k)),
                          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), es_q5_K_high(hb, 2 * k + 1)));
    }
    unpack_q4_K_header(c, x, u);
}

ES_INLINE void unpack_q6_K(const consts256 * c, const es_block_q6_K * x, unpacked256 * u) {
    for (int h = 0; h < 2; ++h) {
        __m256i q[4];
        es_q6_K_chunks(x, h, q);
        u->q[2 * h]     = pair256(q[0], q[1]);
        u->q[2 * h + 1] = pair256(q[2], q[3]);
    }
    const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) x->scales));
    for (int m = 0; m < 2; ++m) u->sv[m] = _mm512_permutexvar_epi16(c->sv_idx[m], _mm512_zextsi256_si512(s16));
    u->cm = _mm256_slli_epi16(s16, 5);  // 32 * scale
    u->d  = h2f(x->d);
    u->dm = u->d;
}

// acc + one super-block of one row against one column, in the specification's steps
ES_INLINE __m256 block256(const unpacked256 * u, const es_block_q8_K * yb, __m256 acc) {
    __m512i p[4];
    for (int k = 0; k < 4; ++k) {
        p[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u->q[k], _mm512_loadu_si512((const void *) (yb->qs + 64 * k)));
    }
    __m512i s = _mm512_setzero_si512();
    for (int m = 0; m < 2; ++m) {
        const __m512i both = _mm512_mask_blend_epi16(0xAAAAAAAAu, p[2 * m], _mm512_slli_epi32(p[2 * m + 1], 16));
        s = _mm512_dpwssd_epi32(s, both, u->sv[m]);
    }
    const __m256i isum = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
    const __m256i ml = _mm256_madd_epi16(u->cm, _mm256_loadu_si256((const __m256i *) yb->bsums));
    const __m256 dy = _mm256_broadcast_ss(&yb->d);  // d * dy as the spec's scalar product
    acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(u->d), dy), _mm256_cvtepi32_ps(isum), acc);
    return _mm256_fnmadd_ps(_mm256_mul_ps(_mm256_set1_ps(u->dm), dy), _mm256_cvtepi32_ps(ml), acc);
}

ES_INLINE void rows256(int type, int64_t n, const void * w, size_t w_stride, int64_t nrows,
                       const void * y, size_t y_stride, int ncols, float * dst, size_t dst_stride) {
    const int64_t nb = n / 256;
    const size_t bw = es_bytes256(type);
    consts256 c;
    consts256_init(type, &c);
    for (int64_t r = 0; r < nrows; ++r) {
        const char * row = (const char *) w + r * w_stride;
        __m256 acc[EDGESSD_MM_MAX_COLS];
        for (int j = 0; j < ncols; ++j) acc[j] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            unpacked256 u;
            es_prefetch256(row, b, bw);
            if (type == EDGESSD_Q4_K) {
                unpack_q4_K(&c, (const es_block_q4_K *) (row + b * bw), &u);
            } else if (type == EDGESSD_Q5_K) {
                unpack_q5_K(&c, (const es_block_q5_K *) (row + b * bw), &u);
            } else {
                unpack_q6_K(&c, (const es_block_q6_K *) (row + b * bw), &u);
            }
            for (int j = 0; j < ncols; ++j) {
                acc[j] = block256(&u, (const es_block_q8_K *) ((const char *) y + j * y_stride) + b, acc[j]);
            }
        }
        for (int j = 0; j < ncols; ++j) dst[j * dst_stride + r] = hsum8(acc[j]);
    }
}

#define KERNEL256(name, type)                                                                  \
    static void name(int64_t n, const void * w, size_t ws, int64_t nr, const void * y, size_t ys, \
                     int nc, float * dst, size_t ds) {                                         \
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
