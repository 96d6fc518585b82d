// AVX2 (+FMA, F16C) variant of edgessd's small-batch kernels; bit-equal to edgessd-mm-ref.c.
//
// Each weight block is loaded and unpacked once per row, then used for every column. The
// integer dot products of a lane are formed with maddubs/madd (exact: no int16 can saturate
// for these value ranges); the float steps are the specification's, lane for lane.
#include "edgessd-mm-impl.h"

#include <math.h>

#if defined(__x86_64__) || defined(_M_X64)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include "edgessd-mm-x86.h"

// ---- blocks of 32 ----

ES_INLINE void rows32(int type, int64_t n, const void * w, size_t w_stride, int64_t nrows,
                      const void * y, size_t y_stride, int ncols, float * dst, size_t dst_stride) {
    const int64_t nb = n / 32;
    const size_t bw = bytes32(type);
    const size_t by = type == EDGESSD_Q4_1 ? sizeof(es_block_q8_1) : sizeof(es_block_q8_0);
    const __m256i ones = _mm256_set1_epi16(1);
    es_column_scales scales;
    es_scales_init(&scales, y, y_stride, by, nb, ncols);
    for (int64_t r = 0; r < nrows; ++r) {
        const char * row = (const char *) w + r * w_stride;
        __m256 acc[EDGESSD_MM_MAX_COLS];
        float accm[EDGESSD_MM_MAX_COLS];
        for (int j = 0; j < ncols; ++j) {
            acc[j] = _mm256_setzero_ps();
            accm[j] = 0.0f;
        }
        for (int64_t b = 0; b < nb; ++b) {
            float d, m = 0.0f;
            _mm_prefetch(row + (b + ES_PREFETCH_BLOCKS32) * bw, _MM_HINT_T2);
            const __m256i q = unpack32(type, row + b * bw, &d, &m);
            const __m256i aq = type == EDGESSD_Q4_1 ? q : _mm256_sign_epi8(q, q);  // |w|, unsigned
            const float * sb = es_scales_of(&scales, b);
            for (int j = 0; j < ncols; ++j) {
                const char * yb = (const char *) y + j * y_stride + b * by;
                const es_half * yh = (const es_half *) yb;          // d, then s for Q8_1
                const __m256i yq = _mm256_loadu_si256((const __m256i *) (yb + (type == EDGESSD_Q4_1 ? 4 : 2)));
                const __m256i sy = type == EDGESSD_Q4_1 ? yq : _mm256_sign_epi8(yq, q);
                const __m256i isum = _mm256_madd_epi16(_mm256_maddubs_epi16(aq, sy), ones);
                const __m256 s = _mm256_set1_ps(d * sb[j]);
                acc[j] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(isum), acc[j]);
                if (type == EDGESSD_Q4_1) {
                    accm[j] = fmaf(m, h2f(yh[1]), accm[j]);
                }
            }
        }
        for (int j = 0; j < ncols; ++j) {
            dst[j * dst_stride + r] = hsum8(acc[j]) + accm[j];
        }
    }
}

#define KERNEL32(name, type)                                                                   \
    static void name(int64_t n, const void * w, size_t ws, int64_t nr, const void * y, size_t ys, \
                     int nc, float * dst, size_t ds) {                                         \
        ES_BY_COLS(rows32, type)                                                               \
    }
KERNEL32(avx2_q8_0, EDGESSD_Q8_0)
KERNEL32(avx2_q4_0, EDGESSD_Q4_0)
KERNEL32(avx2_q5_0, EDGESSD_Q5_0)
KERNEL32(avx2_q4_1, EDGESSD_Q4_1)

// ---- super-blocks of 256 against Q8_K ----

typedef struct {
    __m256i q[8];    // unsigned quants, 32 per chunk
    __m256i sv[8];   // int16 scale of each int16 lane of the chunk's maddubs
    __m256i cm;      // int16 min coefficients against the 16 bsums
    float d, dm;
} unpacked256;

// Q4_K's and Q5_K's 8 scales and 8 mins (12 packed bytes), as unpacked256's sv and cm
static inline void unpack_q4_K_scales(const void * blk, unpacked256 * u) {
    const __m128i sm8 = es_q4_K_scales_mins_v(blk);  // 8 scales, 8 mins (bytes)
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm8));                   // scales as int16
    const __m256i mn16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128(sm8, 8)));  // mins as int16
    for (int c = 0; c < 8; ++c) {
        u->sv[c] = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((short) (0x0100 + 0x0202 * c)));
    }
    // int16 lane g: min of sub-block g/2
    u->cm = _mm256_shuffle_epi8(mn16, _mm256_set_epi8(15, 14, 15, 14, 13, 12, 13, 12, 11, 10, 11, 10, 9, 8, 9, 8,
                                                      7, 6, 7, 6, 5, 4, 5, 4, 3, 2, 3, 2, 1, 0, 1, 0));
}

static inline void unpack_q4_K(const es_block_q4_K * x, unpacked256 * u) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int k = 0; k < 4; ++k) {
        const __m256i v = _mm256_loadu_si256((const __m256i *) (x->qs + 32 * k));
        u->q[2 * k]     = _mm256_and_si256(v, m4);
        u->q[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    unpack_q4_K_scales(x, u);
    u->d  = h2f(x->d);
    u->dm = h2f(x->dmin);
}

static inline void unpack_q5_K(const es_block_q5_K * x, unpacked256 * u) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i hb = _mm256_loadu_si256((const __m256i *) x->qh);
    for (int k = 0; k < 4; ++k) {
        const __m256i v = _mm256_loadu_si256((const __m256i *) (x->qs + 32 * k));
        u->q[2 * k]     = _mm256_or_si256(_mm256_and_si256(v, m4), es_q5_K_high(hb, 2 * k));
        u->q[2 * k + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), es_q5_K_high(hb, 2 * k + 1));
    }
    unpack_q4_K_scales(x, u);
    u->d  = h2f(x->d);
    u->dm = h2f(x->dmin);
}

static inline void unpack_q6_K(const es_block_q6_K * x, unpacked256 * u) {
    es_q6_K_chunks(x, 0, u->q);
    es_q6_K_chunks(x, 1, u->q + 4);
    const __m128i s8 = _mm_loadu_si128((const __m128i *) x->scales);
    for (int c = 0; c < 8; ++c) {
        // bytes 0-7: scale 2c, bytes 8-15: scale 2c+1
        const __m128i pick = _mm_set_epi64x(0x0101010101010101LL * (2 * c + 1), 0x0101010101010101LL * (2 * c));
        u->sv[c] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, pick));
    }
    u->cm = _mm256_slli_epi16(_mm256_cvtepi8_epi16(s8), 5);  // 32 * scale
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
            es_prefetch256(row, b, bw);
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
                __m256i isum = _mm256_setzero_si256();
                for (int c = 0; c < 8; ++c) {
                    const __m256i yq = _mm256_loadu_si256((const __m256i *) (yb->qs + 32 * c));
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(u.q[c], yq), u.sv[c]));
                }
                const __m256i ml = _mm256_madd_epi16(u.cm, _mm256_loadu_si256((const __m256i *) yb->bsums));
                const __m256 dy = _mm256_broadcast_ss(&yb->d);  // d * dy as the spec's scalar product
                acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(vd, dy), _mm256_cvtepi32_ps(isum), acc[j]);
                acc[j] = _mm256_fnmadd_ps(_mm256_mul_ps(vdm, dy), _mm256_cvtepi32_ps(ml), acc[j]);
            }
        }
        for (int j = 0; j < ncols; ++j) dst[j * dst_stride + r] = hsum8(acc[j]);
    }
}


static void avx2_q4_K(int64_t n, const void * w, size_t ws, int64_t nr, const void * y, size_t ys,
                      int nc, float * dst, size_t ds) {
    ES_BY_COLS(rows256, EDGESSD_Q4_K)
}

static void avx2_q5_K(int64_t n, const void * w, size_t ws, int64_t nr, const void * y, size_t ys,
                      int nc, float * dst, size_t ds) {
    ES_BY_COLS(rows256, EDGESSD_Q5_K)
}

static void avx2_q6_K(int64_t n, const void * w, size_t ws, int64_t nr, const void * y, size_t ys,
                      int nc, float * dst, size_t ds) {
    ES_BY_COLS(rows256, EDGESSD_Q6_K)
}

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

edgessd_mm_fn edgessd_mm_avx2_kernel(int type) {
    switch (type) {
        case EDGESSD_Q8_0: return avx2_q8_0;
        case EDGESSD_Q4_0: return avx2_q4_0;
        case EDGESSD_Q5_0: return avx2_q5_0;
        case EDGESSD_Q4_1: return avx2_q4_1;
        case EDGESSD_Q4_K: return avx2_q4_K;
        case EDGESSD_Q5_K: return avx2_q5_K;
        case EDGESSD_Q6_K: return avx2_q6_K;
    }
    return NULL;
}

#else  // not x86-64

edgessd_mm_fn edgessd_mm_avx2_kernel(int type) {
    (void) type;
    return NULL;
}

#endif
