// Internal to edgessd's x86 kernels: the helpers both SIMD variants share. Included by
// edgessd-mm-avx2.c and edgessd-mm-avx512.c after their target pragmas, so each compiles
// them for its own ISA (every instruction here is AVX2 + F16C).
#pragma once

#include "edgessd-mm-impl.h"

#include <immintrin.h>

#define ES_INLINE static inline __attribute__((always_inline))

// how far ahead of the block in hand to prefetch weights: blocks of 32 one line at a time,
// 256 blocks ahead, into L2 (more misses in flight than L1 allows)
#define ES_PREFETCH_BLOCKS32 256
// super-blocks of 256: every line of the one 32 ahead, into L1. One line per block (a block is
// 144-210 bytes) leaves the rest to the hardware prefetcher, and one column then reads 15-20%
// slower; a single-thread Q4_K matrix measured 9-10 ns a block that way, 7.7 with every line
#define ES_PREFETCH_BLOCKS256 32

ES_INLINE void es_prefetch256(const char * row, int64_t b, size_t bw) {
    const char * p = row + (b + ES_PREFETCH_BLOCKS256) * bw;
    for (size_t o = 0; o < bw; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

ES_INLINE float h2f(es_half h) { return _cvtsh_ss(h); }

// es_hsum8, on a vector
ES_INLINE float hsum8(__m256 v) {
    const __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // v_i + v_{i+4}
    const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));                                  // a0+a2, a1+a3
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}

// es_q4_K_scale_min of sub-blocks 0-7 of a Q4_K or Q5_K block as one vector (bytes 0-7 the
// scales, 8-15 the mins), from the block's first 16 bytes (d, dmin, the 12 packed bytes) in one load: header byte
// 4 + i is packed byte i. The low bits come from the bytes lo picks, masked by lo_mask (bytes
// 12-15 take the high nibble instead, lo_mask2); bits 4-5 from the top two bits of the bytes
// hi picks. Scalar code and a vector built from four stores would cost more than the block.
ES_INLINE __m128i es_q4_K_scales_mins_v(const void * blk) {
    const __m128i hdr = _mm_loadu_si128((const __m128i *) blk);
    const __m128i lo = _mm_shuffle_epi8(hdr, _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m128i hi = _mm_shuffle_epi8(hdr, _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11));
    const __m128i lo_mask  = _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0);
    const __m128i lo_mask2 = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15);
    return _mm_or_si128(_mm_or_si128(_mm_and_si128(lo, lo_mask), _mm_and_si128(_mm_srli_epi16(lo, 4), lo_mask2)),
                        _mm_srli_epi16(_mm_and_si128(hi, _mm_set1_epi8((char) 0xC0)), 2));
}

// bit `bit` (0..7) of each byte of hb, as 0x10: Q5_K's fifth bit in place over a nibble
ES_INLINE __m256i es_q5_K_high(__m256i hb, int bit) {
    const __m256i m = _mm256_set1_epi8(0x10);
    // 16-bit shifts: a bit that crosses into the neighbouring byte never lands on bit 4
    return bit <= 4 ? _mm256_and_si256(_mm256_slli_epi16(hb, 4 - bit), m)
                    : _mm256_and_si256(_mm256_srli_epi16(hb, bit - 4), m);
}

// ---- blocks of 32 ----

// unpack one block of 32 into signed bytes (w) and its scale; Q4_1 gives unsigned bytes and a min
ES_INLINE __m256i unpack32(int type, const void * blk, float * d, float * m) {
    switch (type) {
        case EDGESSD_Q8_0: {
            const es_block_q8_0 * x = blk;
            *d = h2f(x->d);
            return _mm256_loadu_si256((const __m256i *) x->qs);
        }
        case EDGESSD_Q4_0: {
            const es_block_q4_0 * x = blk;
            *d = h2f(x->d);
            const __m128i q = _mm_loadu_si128((const __m128i *) x->qs);
            const __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
            return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(0xF)), _mm256_set1_epi8(8));
        }
        case EDGESSD_Q5_0: {
            const es_block_q5_0 * x = blk;
            *d = h2f(x->d);
            const __m128i q = _mm_loadu_si128((const __m128i *) x->qs);
            const __m256i v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0xF));
            uint32_t qh;
            memcpy(&qh, x->qh, 4);
            // byte i gets bit i of qh, as 0x10
            const __m256i shuf = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                                   0x0101010101010101LL, 0x0000000000000000LL);
            const __m256i bit  = _mm256_set1_epi64x(0x8040201008040201LL);
            __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int) qh), shuf);
            h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
            h = _mm256_and_si256(h, _mm256_set1_epi8(0x10));
            return _mm256_sub_epi8(_mm256_or_si256(v, h), _mm256_set1_epi8(16));
        }
        default: {  // Q4_1
            const es_block_q4_1 * x = blk;
            *d = h2f(x->d);
            *m = h2f(x->m);
            const __m128i q = _mm_loadu_si128((const __m128i *) x->qs);
            return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0xF));
        }
    }
}

// Activation scales as floats, [block][column] with 16 columns per block, converted once per
// call instead of once per weight row (a call takes up to 128 rows); above this many blocks
// (n > 32768) each row converts its own, with the same values.
#define ES_SCALE_BLOCKS 1024

typedef struct {
    const char * y;
    size_t y_stride, by;
    int ncols, once;
    float v[ES_SCALE_BLOCKS * EDGESSD_MM_MAX_COLS];  // once: every block; else: the block asked for last
} es_column_scales;

ES_INLINE void es_convert_scales(const es_column_scales * c, int64_t b0, int64_t nb, float * out) {
    for (int64_t b = 0; b < nb; ++b) {
        for (int j = 0; j < EDGESSD_MM_MAX_COLS; ++j) {
            out[b * EDGESSD_MM_MAX_COLS + j] =
                j < c->ncols ? h2f(*(const es_half *) (c->y + j * c->y_stride + (b0 + b) * c->by)) : 0.0f;
        }
    }
}

ES_INLINE void es_scales_init(es_column_scales * c, const void * y, size_t y_stride, size_t by, int64_t nb,
                              int ncols) {
    c->y = (const char *) y;
    c->y_stride = y_stride;
    c->by = by;
    c->ncols = ncols;
    c->once = nb <= ES_SCALE_BLOCKS;
    if (c->once) es_convert_scales(c, 0, nb, c->v);
}

// the 16 column scales of block b (0.0f past ncols)
ES_INLINE const float * es_scales_of(es_column_scales * c, int64_t b) {
    if (c->once) return c->v + b * EDGESSD_MM_MAX_COLS;
    es_convert_scales(c, b, 1, c->v);
    return c->v;
}

ES_INLINE size_t bytes32(int type) {
    switch (type) {
        case EDGESSD_Q8_0: return sizeof(es_block_q8_0);
        case EDGESSD_Q4_0: return sizeof(es_block_q4_0);
        case EDGESSD_Q5_0: return sizeof(es_block_q5_0);
        default:           return sizeof(es_block_q4_1);
    }
}

// the 4 chunks of 32 unsigned 6-bit quants of half h (0, 1) of a Q6_K super-block
ES_INLINE void es_q6_K_chunks(const es_block_q6_K * x, int h, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(0xF), m30 = _mm256_set1_epi8(0x30);
    const __m256i l0 = _mm256_loadu_si256((const __m256i *) (x->ql + 64 * h));
    const __m256i l1 = _mm256_loadu_si256((const __m256i *) (x->ql + 64 * h + 32));
    const __m256i hb = _mm256_loadu_si256((const __m256i *) (x->qh + 32 * h));
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
}

// the column count as a constant, so the compiler keeps each column's accumulator in a register
#define ES_COLS_CASE(fn, type, k) case k: fn(type, n, w, ws, nr, y, ys, k, dst, ds); break;
#define ES_BY_COLS(fn, type)                                                                   \
    switch (nc) {                                                                              \
        ES_COLS_CASE(fn, type, 1)  ES_COLS_CASE(fn, type, 2)  ES_COLS_CASE(fn, type, 3)        \
        ES_COLS_CASE(fn, type, 4)  ES_COLS_CASE(fn, type, 5)  ES_COLS_CASE(fn, type, 6)        \
        ES_COLS_CASE(fn, type, 7)  ES_COLS_CASE(fn, type, 8)  ES_COLS_CASE(fn, type, 9)        \
        ES_COLS_CASE(fn, type, 10) ES_COLS_CASE(fn, type, 11) ES_COLS_CASE(fn, type, 12)       \
        ES_COLS_CASE(fn, type, 13) ES_COLS_CASE(fn, type, 14) ES_COLS_CASE(fn, type, 15)       \
        ES_COLS_CASE(fn, type, 16)                                                             \
        default: break; /* 1 <= ncols <= EDGESSD_MM_MAX_COLS is the caller's promise */        \
    }

