// The C specification of edgessd's small-batch matmul kernels.
//
// It fixes, for every output element, which integer sums are formed and in which order
// the float operations run. Integer sums are exact, so a SIMD variant may form them in any
// order; its float operations must be these, in this order:
//
//   lane(p) = (p mod 32) / 4 for the position p inside a weight block, giving 8 lanes.
//   For each block b of the row, in order, and each lane l:
//     isum[l] = the exact integer dot product of the block's quants with the column's
//               quants over the positions of lane l (with the block's integer sub-scales)
//     acc[l]  = fmaf(s_b, (float) isum[l], acc[l])           s_b = d_weight * d_column
//     K-quants add a min term per lane:  acc[l] = fmaf(-m_b, (float) mlane[l], acc[l])
//   result = es_hsum8(acc)       (+ accm for Q4_1, whose mins sum in one scalar)
//
// Nothing depends on how many columns are computed together, so one column alone and the
// same column in a batch of 16 give the same bits.
#include "edgessd-mm-impl.h"

#include <math.h>

// ---- blocks of 32: Q8_0, Q4_0, Q5_0 (signed quants), Q4_1 (unsigned quants and a min) ----

typedef struct {
    int   w[32];  // quants as the dot product sees them
    float d;      // block scale
    float m;      // block min (Q4_1 only)
} dec32;

static void decode32(int type, const void * blk, dec32 * o) {
    o->d = o->m = 0.0f;
    switch (type) {
        case EDGESSD_Q8_0: {
            const es_block_q8_0 * x = blk;
            for (int i = 0; i < 32; ++i) o->w[i] = x->qs[i];
            o->d = es_fp16_to_fp32(x->d);
        } break;
        case EDGESSD_Q4_0: {
            const es_block_q4_0 * x = blk;
            for (int i = 0; i < 16; ++i) {
                o->w[i]      = (x->qs[i] & 0xF) - 8;
                o->w[i + 16] = (x->qs[i] >> 4) - 8;
            }
            o->d = es_fp16_to_fp32(x->d);
        } break;
        case EDGESSD_Q5_0: {
            const es_block_q5_0 * x = blk;
            uint32_t qh;
            memcpy(&qh, x->qh, 4);
            for (int i = 0; i < 16; ++i) {
                o->w[i]      = ((x->qs[i] & 0xF) | (((qh >> i) & 1) << 4)) - 16;
                o->w[i + 16] = ((x->qs[i] >> 4) | (((qh >> (i + 16)) & 1) << 4)) - 16;
            }
            o->d = es_fp16_to_fp32(x->d);
        } break;
        case EDGESSD_Q4_1: {
            const es_block_q4_1 * x = blk;
            for (int i = 0; i < 16; ++i) {
                o->w[i]      = x->qs[i] & 0xF;
                o->w[i + 16] = x->qs[i] >> 4;
            }
            o->d = es_fp16_to_fp32(x->d);
            o->m = es_fp16_to_fp32(x->m);
        } break;
    }
}

static size_t block_bytes(int type) {
    switch (type) {
        case EDGESSD_Q8_0: return sizeof(es_block_q8_0);
        case EDGESSD_Q4_0: return sizeof(es_block_q4_0);
        case EDGESSD_Q5_0: return sizeof(es_block_q5_0);
        case EDGESSD_Q4_1: return sizeof(es_block_q4_1);
    }
    return 0;
}

static float dot32_row(int type, int64_t n, const char * row, const char * ycol) {
    const int64_t nb = n / 32;
    const size_t bw = block_bytes(type);
    float acc[8] = {0};
    float accm = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
        dec32 x;
        decode32(type, row + b * bw, &x);
        const int8_t * yq;
        float dy;
        if (type == EDGESSD_Q4_1) {
            const es_block_q8_1 * yb = (const es_block_q8_1 *) ycol + b;
            yq = yb->qs;
            dy = es_fp16_to_fp32(yb->d);
            accm = fmaf(x.m, es_fp16_to_fp32(yb->s), accm);
        } else {
            const es_block_q8_0 * yb = (const es_block_q8_0 *) ycol + b;
            yq = yb->qs;
            dy = es_fp16_to_fp32(yb->d);
        }
        const float s = x.d * dy;
        for (int l = 0; l < 8; ++l) {
            int isum = 0;
            for (int i = 4 * l; i < 4 * l + 4; ++i) isum += x.w[i] * yq[i];
            acc[l] = fmaf(s, (float) isum, acc[l]);
        }
    }
    return es_hsum8(acc) + accm;
}

// ---- super-blocks of 256 against Q8_K: Q4_K, Q5_K, Q6_K ----

typedef struct {
    int   q[256];     // unsigned quants: Q4_K 0..15, Q5_K 0..31, Q6_K 0..63 (its offset of 32 is in the min term)
    int   sc[16];     // integer scale of each 16 positions
    int   cm[16];     // integer min coefficient of each 16 positions, against the column's bsums
    float d, dm;      // the block's float scale of sc and of cm
} dec256;

static void decode256(int type, const void * blk, dec256 * o) {
    if (type == EDGESSD_Q4_K || type == EDGESSD_Q5_K) {
        // Q5_K is Q4_K's layout with a fifth bit per quant: bit 2k (low nibbles) and bit 2k+1
        // (high nibbles) of qh[i] for chunk k; its scales, mins and offsets are Q4_K's
        const es_block_q4_K * x4 = blk;
        const es_block_q5_K * x5 = blk;
        const uint8_t * scales = type == EDGESSD_Q4_K ? x4->scales : x5->scales;
        const uint8_t * qs     = type == EDGESSD_Q4_K ? x4->qs : x5->qs;
        for (int c = 0; c < 8; ++c) {
            uint8_t sc, mn;
            es_q4_K_scale_min(c, scales, &sc, &mn);
            o->sc[2 * c] = o->sc[2 * c + 1] = sc;
            o->cm[2 * c] = o->cm[2 * c + 1] = mn;
        }
        for (int k = 0; k < 4; ++k) {
            for (int i = 0; i < 32; ++i) {
                o->q[64 * k + i]      = qs[32 * k + i] & 0xF;
                o->q[64 * k + 32 + i] = qs[32 * k + i] >> 4;
                if (type == EDGESSD_Q5_K) {
                    o->q[64 * k + i]      |= ((x5->qh[i] >> (2 * k)) & 1) << 4;
                    o->q[64 * k + 32 + i] |= ((x5->qh[i] >> (2 * k + 1)) & 1) << 4;
                }
            }
        }
        o->d  = es_fp16_to_fp32(x4->d);  // d and dmin lead both layouts
        o->dm = es_fp16_to_fp32(x4->dmin);
    } else {  // Q6_K
        const es_block_q6_K * x = blk;
        for (int h = 0; h < 2; ++h) {
            const uint8_t * ql = x->ql + 64 * h;
            const uint8_t * qh = x->qh + 32 * h;
            int * q = o->q + 128 * h;
            for (int i = 0; i < 32; ++i) {
                q[i]      = (ql[i] & 0xF)      | (((qh[i] >> 0) & 3) << 4);
                q[i + 32] = (ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4);
                q[i + 64] = (ql[i] >> 4)       | (((qh[i] >> 4) & 3) << 4);
                q[i + 96] = (ql[i + 32] >> 4)  | (((qh[i] >> 6) & 3) << 4);
            }
        }
        for (int g = 0; g < 16; ++g) {
            o->sc[g] = x->scales[g];
            o->cm[g] = 32 * x->scales[g];
        }
        o->d  = es_fp16_to_fp32(x->d);
        o->dm = o->d;
    }
}

static float dot256_row(int type, int64_t n, const char * row, const es_block_q8_K * y) {
    const int64_t nb = n / 256;
    const size_t bw = es_bytes256(type);
    float acc[8] = {0};
    for (int64_t b = 0; b < nb; ++b) {
        dec256 x;
        decode256(type, row + b * bw, &x);
        const es_block_q8_K * yb = y + b;
        const float sd = x.d * yb->d;
        const float sm = x.dm * yb->d;
        for (int l = 0; l < 8; ++l) {
            int isum = 0;
            for (int c = 0; c < 8; ++c) {
                for (int p = 32 * c + 4 * l; p < 32 * c + 4 * l + 4; ++p) {
                    isum += x.sc[p / 16] * x.q[p] * yb->qs[p];
                }
            }
            const int mlane = x.cm[2 * l] * yb->bsums[2 * l] + x.cm[2 * l + 1] * yb->bsums[2 * l + 1];
            acc[l] = fmaf(sd, (float) isum, acc[l]);
            acc[l] = fmaf(-sm, (float) mlane, acc[l]);
        }
    }
    return es_hsum8(acc);
}

// ---- the kernels ----

#define REF_KERNEL(name, call)                                                                 \
    static void name(int64_t n, const void * w, size_t w_stride, int64_t nrows,              \
                     const void * y, size_t y_stride, int ncols, float * dst, size_t dst_stride) { \
        for (int64_t r = 0; r < nrows; ++r) {                                                  \
            const char * row = (const char *) w + r * w_stride;                                \
            for (int j = 0; j < ncols; ++j) {                                                  \
                const char * ycol = (const char *) y + j * y_stride;                           \
                dst[j * dst_stride + r] = call;                                                \
            }                                                                                  \
        }                                                                                      \
    }

REF_KERNEL(ref_q8_0, dot32_row(EDGESSD_Q8_0, n, row, ycol))
REF_KERNEL(ref_q4_0, dot32_row(EDGESSD_Q4_0, n, row, ycol))
REF_KERNEL(ref_q5_0, dot32_row(EDGESSD_Q5_0, n, row, ycol))
REF_KERNEL(ref_q4_1, dot32_row(EDGESSD_Q4_1, n, row, ycol))
REF_KERNEL(ref_q4_K, dot256_row(EDGESSD_Q4_K, n, row, (const es_block_q8_K *) ycol))
REF_KERNEL(ref_q5_K, dot256_row(EDGESSD_Q5_K, n, row, (const es_block_q8_K *) ycol))
REF_KERNEL(ref_q6_K, dot256_row(EDGESSD_Q6_K, n, row, (const es_block_q8_K *) ycol))

edgessd_mm_fn edgessd_mm_ref_kernel(int type) {
    switch (type) {
        case EDGESSD_Q8_0: return ref_q8_0;
        case EDGESSD_Q4_0: return ref_q4_0;
        case EDGESSD_Q5_0: return ref_q5_0;
        case EDGESSD_Q4_1: return ref_q4_1;
        case EDGESSD_Q4_K: return ref_q4_K;
        case EDGESSD_Q5_K: return ref_q5_K;
        case EDGESSD_Q6_K: return ref_q6_K;
    }
    return NULL;
}
