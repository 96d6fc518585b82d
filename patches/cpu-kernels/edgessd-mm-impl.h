// Internal to the edgessd kernels: ggml's block layouts (copied by shape, checked by size)
// and the pieces of the specification that every variant shares.
#pragma once

#include "edgessd-mm.h"

#include <string.h>

// the specification's float steps are explicit: never let the compiler fuse a multiply and an add
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

typedef uint16_t es_half;

typedef struct { es_half d;           uint8_t qs[16]; }                    es_block_q4_0;
typedef struct { es_half d; es_half m; uint8_t qs[16]; }                   es_block_q4_1;
typedef struct { es_half d; uint8_t qh[4]; uint8_t qs[16]; }               es_block_q5_0;
typedef struct { es_half d;           int8_t  qs[32]; }                    es_block_q8_0;
typedef struct { es_half d; es_half s; int8_t qs[32]; }                    es_block_q8_1;
typedef struct { es_half d; es_half dmin; uint8_t scales[12]; uint8_t qs[128]; } es_block_q4_K;
typedef struct { es_half d; es_half dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } es_block_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; es_half d; } es_block_q6_K;
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; }            es_block_q8_K;

_Static_assert(sizeof(es_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(es_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(es_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(es_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(es_block_q8_1) == 36, "q8_1 layout");
_Static_assert(sizeof(es_block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(es_block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(es_block_q6_K) == 210, "q6_K layout");
_Static_assert(sizeof(es_block_q8_K) == 292, "q8_K layout");

// IEEE half to float; exact, so equal to F16C's conversion
static inline float es_fp16_to_fp32(es_half h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);            // inf, nan
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);    // normal
    } else if (man == 0) {
        bits = sign;                                        // zero
    } else {                                                // subnormal: normalise
        exp = 113;
        while (!(man & 0x400)) { man <<= 1; exp--; }
        bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// the bytes of a weight super-block of 256 (Q4_K, Q5_K, Q6_K)
static inline size_t es_bytes256(int type) {
    switch (type) {
        case EDGESSD_Q4_K: return sizeof(es_block_q4_K);
        case EDGESSD_Q5_K: return sizeof(es_block_q5_K);
        default:           return sizeof(es_block_q6_K);
    }
}

// Q4_K's (and Q5_K's) packed 6-bit scale and min of sub-block j (ggml's get_scale_min_k4)
static inline void es_q4_K_scale_min(int j, const uint8_t * q, uint8_t * sc, uint8_t * mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// The one horizontal sum of the specification: ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7))
static inline float es_hsum8(const float v[8]) {
    const float a0 = v[0] + v[4], a1 = v[1] + v[5], a2 = v[2] + v[6], a3 = v[3] + v[7];
    return (a0 + a2) + (a1 + a3);
}

// kernel tables of each variant, indexed by type (NULL where none)
edgessd_mm_fn edgessd_mm_ref_kernel(int type);
edgessd_mm_fn edgessd_mm_avx2_kernel(int type);
edgessd_mm_fn edgessd_mm_avx512_kernel(int type);
