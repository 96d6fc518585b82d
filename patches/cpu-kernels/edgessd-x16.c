// The re-layout of Q4_K and Q6_K into 16-row groups and the C specification of its kernels
// (edgessd-x16.h).
#include "edgessd-x16.h"
#include "edgessd-mm-impl.h"

#include <math.h>

enum { X16_D = 0, X16_DMIN = 32, X16_SC = 64, X16_MN = 192, X16_QS = 320 };  // Q4_K
_Static_assert(X16_QS + 4 * 8 * 16 * 4 == EDGESSD_X16_BLOCK_Q4_K, "x16 Q4_K block layout");
enum { X16_6_D = 0, X16_6_SC = 32, X16_6_Q = 288, X16_6_SUB = 192 };  // Q6_K
_Static_assert(X16_6_Q + 16 * X16_6_SUB == EDGESSD_X16_BLOCK_Q6_K, "x16 Q6_K block layout");
_Static_assert(EDGESSD_X16_BLOCK_Q6_K == EDGESSD_X16_ROWS * sizeof(es_block_q6_K), "x16 Q6_K is the rows' size");

int edgessd_x16_covers(int type) {
    return type == EDGESSD_Q4_K || type == EDGESSD_Q6_K;
}

static size_t x16_block(int type) {
    return type == EDGESSD_Q4_K ? EDGESSD_X16_BLOCK_Q4_K : EDGESSD_X16_BLOCK_Q6_K;
}

size_t edgessd_x16_size(int type, int64_t n, int64_t nrows) {
    return (size_t) (n / 256) * (size_t) (nrows / EDGESSD_X16_ROWS) * x16_block(type);
}

static void pack_q4_K(const es_block_q4_K * x, int r, uint8_t * o) {
    memcpy(o + X16_D + 2 * r, &x->d, 2);
    memcpy(o + X16_DMIN + 2 * r, &x->dmin, 2);
    for (int c = 0; c < 8; ++c) es_q4_K_scale_min(c, x->scales, o + X16_SC + 16 * c + r, o + X16_MN + 16 * c + r);
    for (int k = 0; k < 4; ++k) {
        for (int i = 0; i < 8; ++i) memcpy(o + X16_QS + ((k * 8 + i) * 16 + r) * 4, x->qs + 32 * k + 4 * i, 4);
    }
}

// quant e (0..255) of a Q6_K block, 0..63 (ggml's dequantize_row_q6_K)
static int q6_K_quant(const es_block_q6_K * x, int e) {
    const int h = e / 128, l = e % 32, part = (e % 128) / 32;
    const uint8_t lo = x->ql[64 * h + l + 32 * (part & 1)];
    return ((part < 2 ? lo : lo >> 4) & 0xF) | (((x->qh[32 * h + l] >> (2 * part)) & 3) << 4);
}

static void pack_q6_K(const es_block_q6_K * x, int r, uint8_t * o) {
    memcpy(o + X16_6_D + 2 * r, &x->d, 2);
    for (int s = 0; s < 16; ++s) {
        o[X16_6_SC + 16 * s + r] = (uint8_t) x->scales[s];
        uint8_t * sub = o + X16_6_Q + X16_6_SUB * s + 4 * r;
        for (int t = 0; t < 4; ++t) {
            int q[4];
            for (int k = 0; k < 4; ++k) q[k] = q6_K_quant(x, 16 * s + 4 * k + t);
            sub[t]       = (uint8_t) ((q[0] & 0xF) | (q[1] & 0xF) << 4);
            sub[64 + t]  = (uint8_t) ((q[2] & 0xF) | (q[3] & 0xF) << 4);
            sub[128 + t] = (uint8_t) (q[0] >> 4 | (q[1] >> 4) << 2 | (q[2] >> 4) << 4 | (q[3] >> 4) << 6);
        }
    }
}

void edgessd_x16_pack(int type, int64_t n, const void * w, size_t w_stride, int64_t g0, int64_t g1, void * dst) {
    const int64_t nb = n / 256;
    const size_t bw = es_bytes256(type), bx = x16_block(type);
    for (int64_t g = g0; g < g1; ++g) {
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t * o = (uint8_t *) dst + (g * nb + b) * bx;
            for (int r = 0; r < EDGESSD_X16_ROWS; ++r) {
                const void * x = (const char *) w + (g * EDGESSD_X16_ROWS + r) * w_stride + b * bw;
                if (type == EDGESSD_Q4_K) pack_q4_K(x, r, o); else pack_q6_K(x, r, o);
            }
        }
    }
}

static float half_at(const uint8_t * p) {
    es_half h;
    memcpy(&h, p, 2);
    return es_fp16_to_fp32(h);
}

// the specification: one row of one Q4_K super-block against one column
static float q4_K_step(const uint8_t * o, int r, const es_block_q8_K * y, float acc) {
    int32_t isum = 0, msum = 0;
    for (int c = 0; c < 8; ++c) {
        int32_t s = 0;
        for (int i = 0; i < 8; ++i) {
            for (int t = 0; t < 4; ++t) {
                const int q = (o[X16_QS + (((c / 2) * 8 + i) * 16 + r) * 4 + t] >> (4 * (c & 1))) & 0xF;
                s += q * y->qs[32 * c + 4 * i + t];
            }
        }
        isum += o[X16_SC + 16 * c + r] * s;
        msum += o[X16_MN + 16 * c + r] * (y->bsums[2 * c] + y->bsums[2 * c + 1]);
    }
    acc = fmaf(half_at(o + X16_D + 2 * r) * y->d, (float) isum, acc);
    return fmaf(-(half_at(o + X16_DMIN + 2 * r) * y->d), (float) msum, acc);
}

// the specification: one row of one Q6_K super-block against one column
static float q6_K_step(const uint8_t * o, int r, const es_block_q8_K * y, float acc) {
    int32_t total = 0;
    for (int s = 0; s < 16; ++s) {
        const uint8_t * sub = o + X16_6_Q + X16_6_SUB * s + 4 * r;
        int32_t dot = 0;
        for (int k = 0; k < 4; ++k) {
            for (int t = 0; t < 4; ++t) {
                const int q = ((sub[64 * (k / 2) + t] >> (4 * (k & 1))) & 0xF) | ((sub[128 + t] >> (2 * k)) & 3) << 4;
                dot += q * y->qs[16 * s + 4 * k + t];
            }
        }
        total += (int8_t) o[X16_6_SC + 16 * s + r] * (dot - 32 * y->bsums[s]);
    }
    return fmaf(half_at(o + X16_6_D + 2 * r) * y->d, (float) total, acc);
}

static void x16_ref(int type, int64_t n, const void * wx, int64_t ngroups, const void * y, size_t y_stride,
                    int ncols, float * dst, size_t dst_stride) {
    const int64_t nb = n / 256;
    const size_t bx = x16_block(type);
    for (int64_t g = 0; g < ngroups; ++g) {
        const uint8_t * grp = (const uint8_t *) wx + g * nb * bx;
        for (int j = 0; j < ncols; ++j) {
            const es_block_q8_K * yj = (const es_block_q8_K *) ((const char *) y + j * y_stride);
            for (int r = 0; r < EDGESSD_X16_ROWS; ++r) {
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; ++b) {
                    acc = type == EDGESSD_Q4_K ? q4_K_step(grp + b * bx, r, yj + b, acc)
                                               : q6_K_step(grp + b * bx, r, yj + b, acc);
                }
                dst[j * dst_stride + g * EDGESSD_X16_ROWS + r] = acc;
            }
        }
    }
}

static void x16_ref_q4_K(int64_t n, const void * wx, int64_t ngroups, const void * y, size_t y_stride, int ncols,
                         float * dst, size_t dst_stride) {
    x16_ref(EDGESSD_Q4_K, n, wx, ngroups, y, y_stride, ncols, dst, dst_stride);
}

static void x16_ref_q6_K(int64_t n, const void * wx, int64_t ngroups, const void * y, size_t y_stride, int ncols,
                         float * dst, size_t dst_stride) {
    x16_ref(EDGESSD_Q6_K, n, wx, ngroups, y, y_stride, ncols, dst, dst_stride);
}

edgessd_x16_fn edgessd_x16_avx512_kernel(int type);

edgessd_x16_fn edgessd_x16_kernel(int type, int isa) {
    if (!edgessd_x16_covers(type)) return NULL;
    switch (isa) {
        case EDGESSD_ISA_REF:    return type == EDGESSD_Q4_K ? x16_ref_q4_K : x16_ref_q6_K;
        case EDGESSD_ISA_AVX512: return edgessd_x16_avx512_kernel(type);
    }
    return NULL;
}
