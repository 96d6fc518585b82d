// Internal to edgessd's attention kernel: the pieces of its specification that every variant
// shares (see edgessd-fa-ref.c for the whole of it).
#pragma once

#include "edgessd-fa.h"
#include "edgessd-mm-impl.h"  // es_half, es_fp16_to_fp32, es_hsum8, no fused multiply-adds

#include <math.h>

// The specification's exp, defined by basic operations and fmaf only, so that a SIMD variant
// can repeat it exactly (libm's expf differs between libraries and from any vector exp).
// For x <= 0: below ES_FA_EXP_MIN (and for -inf or NaN) the result is 0; otherwise
//   n = round-to-nearest(x * log2(e)), r = x - n*ln2 (in two fmaf steps),
//   p = 1 + r*(1 + r*(P5 + r*(P4 + r*(P3 + r*(P2 + r*(P1 + r*P0))))))  (Horner, fmaf),
//   result = p * 2^n.
// The coefficients are Cephes's expf minimax polynomial; the error is about 1 ulp.
#define ES_FA_EXP_MIN  (-87.0f)
#define ES_FA_LOG2E    1.44269504088896341f
#define ES_FA_LN2_HI   0.693359375f
#define ES_FA_LN2_LO   (-2.12194440e-4f)
#define ES_FA_ROUND    12582912.0f  // 1.5 * 2^23: (t + R) - R rounds t to an integer
#define ES_FA_P0       1.9875691500e-4f
#define ES_FA_P1       1.3981999507e-3f
#define ES_FA_P2       8.3334519073e-3f
#define ES_FA_P3       4.1665795894e-2f
#define ES_FA_P4       1.6666665459e-1f
#define ES_FA_P5       5.0000001201e-1f

static inline float es_fa_exp(float x) {
    if (!(x >= ES_FA_EXP_MIN)) return 0.0f;
    const float n = (x * ES_FA_LOG2E + ES_FA_ROUND) - ES_FA_ROUND;
    float r = fmaf(n, -ES_FA_LN2_HI, x);
    r = fmaf(n, -ES_FA_LN2_LO, r);
    float p = ES_FA_P0;
    p = fmaf(p, r, ES_FA_P1);
    p = fmaf(p, r, ES_FA_P2);
    p = fmaf(p, r, ES_FA_P3);
    p = fmaf(p, r, ES_FA_P4);
    p = fmaf(p, r, ES_FA_P5);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    const uint32_t bits = (uint32_t) ((int32_t) n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

// The sum of 16 lanes: v_i + v_{i+8}, then es_hsum8
static inline float es_fa_hsum16(const float v[16]) {
    float a[8];
    for (int i = 0; i < 8; ++i) a[i] = v[i] + v[i + 8];
    return es_hsum8(a);
}

// The positions of block [j0, j0 + EDGESSD_FA_BLOCK) that a row sees: those inside the view
// whose mask value is not -inf. Writes their offsets in the block (in order) to pos and their
// mask values to mv; returns how many. A block nobody sees is skipped: with no visible
// position its step would change nothing (see edgessd-fa-ref.c).
static inline int es_fa_visible(const edgessd_fa_args * a, int64_t j0, int pos[EDGESSD_FA_BLOCK],
                                float mv[EDGESSD_FA_BLOCK]) {
    const int64_t nb = a->n_kv - j0 < EDGESSD_FA_BLOCK ? a->n_kv - j0 : EDGESSD_FA_BLOCK;
    int n = 0;
    for (int j = 0; j < nb; ++j) {
        const float m = a->mask ? es_fp16_to_fp32(a->mask[j0 + j]) : 0.0f;
        if (m != -INFINITY) {
            pos[n] = j;
            mv[n++] = m;
        }
    }
    return n;
}

// The step's scale of the old state: exp(M - Mn), 0 where there was no state yet
static inline float es_fa_rescale(float M, float Mn) {
    return es_fa_exp(M - Mn);  // M = -inf: exp(-inf) = 0; M = Mn = -inf: exp(NaN) = 0
}

// kernel of each variant (NULL where none)
edgessd_fa_fn edgessd_fa_ref_kernel(void);
edgessd_fa_fn edgessd_fa_avx2_kernel(void);
edgessd_fa_fn edgessd_fa_avx512_kernel(void);
