// AVX-512 (F, BW, VL, VNNI, F16C) variants of the 16-row Q4_K and Q6_K kernels; bit-equal to
// edgessd-x16.c.
//
// Q4_K: per group, super-block and sub-block, the 8 quad vectors of the 16 rows are unpacked
// once and used for up to 8 columns: 8 vpdpbusd per column, each against 4 activation bytes
// broadcast from memory, then one vpmulld by the sub-block's scales and one vpdpwssd of its
// mins against the column's two bsums. Sums stay exact integers until the two float steps
// per super-block, which are the specification's, one lane per row.
//
// Q6_K: per sub-block of 16 quants, 4 quad vectors are put together from their low nibbles
// and high bit pairs (one vpternlogd each), then per column 4 vpdpbusd, the first from
// -32 * bsums[s], and one vpmulld by the sub-block's scales; one float step per super-block.
//
// No software prefetch: the groups are one linear stream, and the hardware prefetcher keeps
// it at the memory's pace (a prefetch of every line 1-8 super-blocks ahead measured 7-35%
// slower for one Q4_K column).
#include "edgessd-x16.h"
#include "edgessd-mm-impl.h"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#endif

#include <immintrin.h>

#define X16_INLINE static inline __attribute__((always_inline))
#define X16_BATCH 8  // columns per pass over a group: 8 quad vectors + 2 per column stay in registers

// acc += w . (4 bytes at p, broadcast to every lane): the broadcast folded into the instruction
#define X16_DPBUSD(acc, w, p) __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *) (p)))

X16_INLINE void x16_group_q4_K(int64_t nb, const uint8_t * grp, const es_block_q8_K * const * ys, const int nc,
                          float * dst, size_t dst_stride) {
    const __m512i m4 = _mm512_set1_epi8(0xF);
    __m512 acc[X16_BATCH];
    for (int j = 0; j < nc; ++j) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t * o = grp + b * EDGESSD_X16_BLOCK_Q4_K;
        __m512i isum[X16_BATCH], msum[X16_BATCH];
        for (int j = 0; j < nc; ++j) isum[j] = msum[j] = _mm512_setzero_si512();
#pragma GCC unroll 8  // unrolled: one column measured 5.1 ns a super-block against 8.1 rolled
        for (int c = 0; c < 8; ++c) {
            __m512i q[8];
            for (int i = 0; i < 8; ++i) {
                const __m512i v = _mm512_loadu_si512((const void *) (o + 320 + ((c / 2) * 8 + i) * 64));
                q[i] = _mm512_and_si512(c & 1 ? _mm512_srli_epi16(v, 4) : v, m4);
            }
            const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) (o + 64 + 16 * c)));
            const __m512i mn = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) (o + 192 + 16 * c)));
            const __m512i mn2 = _mm512_or_si512(mn, _mm512_slli_epi32(mn, 16));  // (mn, mn) int16 pairs
            for (int j = 0; j < nc; ++j) {
                const int8_t * yq = ys[j][b].qs + 32 * c;
                __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
                X16_DPBUSD(s0, q[0], yq + 0);  X16_DPBUSD(s1, q[1], yq + 4);
                X16_DPBUSD(s0, q[2], yq + 8);  X16_DPBUSD(s1, q[3], yq + 12);
                X16_DPBUSD(s0, q[4], yq + 16); X16_DPBUSD(s1, q[5], yq + 20);
                X16_DPBUSD(s0, q[6], yq + 24); X16_DPBUSD(s1, q[7], yq + 28);
                isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), sc));
                int32_t bs;  // bsums[2c] and bsums[2c+1] as one int16 pair
                memcpy(&bs, ys[j][b].bsums + 2 * c, 4);
                msum[j] = _mm512_dpwssd_epi32(msum[j], mn2, _mm512_set1_epi32(bs));
            }
        }
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) o));
        const __m512 dm = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (o + 32)));
        for (int j = 0; j < nc; ++j) {
            const __m512 dy = _mm512_set1_ps(ys[j][b].d);
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(isum[j]), acc[j]);
            acc[j] = _mm512_fnmadd_ps(_mm512_mul_ps(dm, dy), _mm512_cvtepi32_ps(msum[j]), acc[j]);
        }
    }
    for (int j = 0; j < nc; ++j) _mm512_storeu_ps(dst + j * dst_stride, acc[j]);
}

// (A & C) | B, bitwise
#define X16_TERN_AC_OR_B 0xEC

X16_INLINE void x16_group_q6_K(int64_t nb, const uint8_t * grp, const es_block_q8_K * const * ys, const int nc,
                               float * dst, size_t dst_stride) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    __m512 acc[X16_BATCH];
    for (int j = 0; j < nc; ++j) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t * o = grp + b * EDGESSD_X16_BLOCK_Q6_K;
        __m512i isum[X16_BATCH];
        int32_t off[X16_BATCH][16];  // -32 * bsums[s]: where each sub-block's sum starts
        for (int j = 0; j < nc; ++j) {
            isum[j] = _mm512_setzero_si512();
            const __m512i bs = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *) ys[j][b].bsums));
            _mm512_storeu_si512((void *) off[j], _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(bs, 5)));
        }
#pragma GCC unroll 8  // 16 spills: 8 columns measured 28.7 ns a super-block against 25.1
        for (int s = 0; s < 16; ++s) {
            const uint8_t * sub = o + 288 + 192 * s;
            const __m512i lo0 = _mm512_loadu_si512((const void *) sub);
            const __m512i lo1 = _mm512_loadu_si512((const void *) (sub + 64));
            const __m512i hi = _mm512_loadu_si512((const void *) (sub + 128));
            const __m512i q0 = _mm512_ternarylogic_epi32(lo0, _mm512_and_si512(_mm512_slli_epi16(hi, 4), m30), m4, X16_TERN_AC_OR_B);
            const __m512i q1 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(lo0, 4), _mm512_and_si512(_mm512_slli_epi16(hi, 2), m30), m4,
                                                         X16_TERN_AC_OR_B);
            const __m512i q2 = _mm512_ternarylogic_epi32(lo1, _mm512_and_si512(hi, m30), m4, X16_TERN_AC_OR_B);
            const __m512i q3 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(lo1, 4), _mm512_and_si512(_mm512_srli_epi16(hi, 2), m30), m4,
                                                         X16_TERN_AC_OR_B);
            const __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *) (o + 32 + 16 * s)));
            for (int j = 0; j < nc; ++j) {
                const int8_t * yq = ys[j][b].qs + 16 * s;
                __m512i s0 = _mm512_set1_epi32(off[j][s]), s1 = _mm512_setzero_si512();
                X16_DPBUSD(s0, q0, yq + 0); X16_DPBUSD(s1, q1, yq + 4);
                X16_DPBUSD(s0, q2, yq + 8); X16_DPBUSD(s1, q3, yq + 12);
                isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), sc));
            }
        }
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) o));
        for (int j = 0; j < nc; ++j) {
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(ys[j][b].d)), _mm512_cvtepi32_ps(isum[j]), acc[j]);
        }
    }
    for (int j = 0; j < nc; ++j) _mm512_storeu_ps(dst + j * dst_stride, acc[j]);
}

// a constant column count keeps the accumulators in registers
#define X16_BY_COLS(group, nc, ...)                                        \
    switch (nc) {                                                          \
        case 1: group(__VA_ARGS__, 1, out, dst_stride); break;             \
        case 2: group(__VA_ARGS__, 2, out, dst_stride); break;             \
        case 3: group(__VA_ARGS__, 3, out, dst_stride); break;             \
        case 4: group(__VA_ARGS__, 4, out, dst_stride); break;             \
        case 5: group(__VA_ARGS__, 5, out, dst_stride); break;             \
        case 6: group(__VA_ARGS__, 6, out, dst_stride); break;             \
        case 7: group(__VA_ARGS__, 7, out, dst_stride); break;             \
        default: group(__VA_ARGS__, 8, out, dst_stride); break;            \
    }

X16_INLINE void x16_avx512(int type, int64_t n, const void * wx, int64_t ngroups, const void * y, size_t y_stride,
                           int ncols, float * dst, size_t dst_stride) {
    const int64_t nb = n / 256;
    const size_t bx = type == EDGESSD_Q4_K ? EDGESSD_X16_BLOCK_Q4_K : EDGESSD_X16_BLOCK_Q6_K;
    for (int j0 = 0; j0 < ncols; j0 += X16_BATCH) {
        const int nc = ncols - j0 < X16_BATCH ? ncols - j0 : X16_BATCH;
        const es_block_q8_K * ys[X16_BATCH];
        for (int j = 0; j < nc; ++j) ys[j] = (const es_block_q8_K *) ((const char *) y + (j0 + j) * y_stride);
        for (int64_t g = 0; g < ngroups; ++g) {
            const uint8_t * grp = (const uint8_t *) wx + g * nb * bx;
            float * out = dst + j0 * dst_stride + g * EDGESSD_X16_ROWS;
            if (type == EDGESSD_Q4_K) {
                X16_BY_COLS(x16_group_q4_K, nc, nb, grp, ys)
            } else {
                X16_BY_COLS(x16_group_q6_K, nc, nb, grp, ys)
            }
        }
    }
}

static void x16_avx512_q4_K(int64_t n, const void * wx, int64_t ngroups, const void * y, size_t y_stride, int ncols,
                            float * dst, size_t dst_stride) {
    x16_avx512(EDGESSD_Q4_K, n, wx, ngroups, y, y_stride, ncols, dst, dst_stride);
}

static void x16_avx512_q6_K(int64_t n, const void * wx, int64_t ngroups, const void * y, size_t y_stride, int ncols,
                            float * dst, size_t dst_stride) {
    x16_avx512(EDGESSD_Q6_K, n, wx, ngroups, y, y_stride, ncols, dst, dst_stride);
}

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

edgessd_x16_fn edgessd_x16_avx512_kernel(int type) {
    return type == EDGESSD_Q4_K ? x16_avx512_q4_K : x16_avx512_q6_K;
}

#else  // not x86-64 with GCC or clang

edgessd_x16_fn edgessd_x16_avx512_kernel(int type) {
    (void) type;
    return NULL;
}

#endif
