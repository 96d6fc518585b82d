// The re-layout of Q4_K into 16-row groups and the C specification of its kernel (edgessd-x16.h).
#include "edgessd-x16.h"
#include "edgessd-mm-impl.h"

#include <math.h>

enum { X16_D = 0, X16_DMIN = 32, X16_SC = 64, X16_MN = 192, X16_QS = 320 };
_Static_assert(X16_QS + 4 * 8 * 16 * 4 == EDGESSD_X16_BLOCK, "x16 block layout");

size_t edgessd_x16_size(int64_t n, int64_t nrows) {
    return (size_t) (n / 256) * (size_t) (nrows / EDGESSD_X16_ROWS) * EDGESSD_X16_BLOCK;
}

void edgessd_x16_pack(int64_t n, const void * w, size_t w_stride, int64_t g0, int64_t g1, void * dst) {
    const int64_t nb = n / 256;
    for (int64_t g = g0; g < g1; ++g) {
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t * o = (uint8_t *) dst + (g * nb + b) * EDGESSD_X16_BLOCK;
            for (int r = 0; r < EDGESSD_X16_ROWS; ++r) {
                const es_block_q4_K * x =
                    (const es_block_q4_K *) ((const char *) w + (g * EDGESSD_X16_ROWS + r) * w_stride) + b;
                memcpy(o + X16_D + 2 * r, &x->d, 2);
                memcpy(o + X16_DMIN + 2 * r, &x->dmin, 2);
                for (int c = 0; c < 8; ++c) {
                    es_q4_K_scale_min(c, x->scales, o + X16_SC + 16 * c + r, o + X16_MN + 16 * c + r);
                }
                for (int k = 0; k < 4; ++k) {
                    for (int i = 0; i < 8; ++i) memcpy(o + X16_QS + ((k * 8 + i) * 16 + r) * 4, x->qs + 32 * k + 4 * i, 4);
                }
            }
        }
    }
}

// the specification: one row of one group against one column
static float x16_row(int64_t nb, const uint8_t * grp, int r, const es_block_q8_K * y) {
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t * o = grp + b * EDGESSD_X16_BLOCK;
        int32_t isum = 0, msum = 0;
        for (int c = 0; c < 8; ++c) {
            int32_t s = 0;
            for (int i = 0; i < 8; ++i) {
                for (int t = 0; t < 4; ++t) {
                    const int q = (o[X16_QS + (((c / 2) * 8 + i) * 16 + r) * 4 + t] >> (4 * (c & 1))) & 0xF;
                    s += q * y[b].qs[32 * c + 4 * i + t];
                }
            }
            isum += o[X16_SC + 16 * c + r] * s;
            msum += o[X16_MN + 16 * c + r] * (y[b].bsums[2 * c] + y[b].bsums[2 * c + 1]);
        }
        es_half d, dm;
        memcpy(&d, o + X16_D + 2 * r, 2);
        memcpy(&dm, o + X16_DMIN + 2 * r, 2);
        acc = fmaf(es_fp16_to_fp32(d) * y[b].d, (float) isum, acc);
        acc = fmaf(-(es_fp16_to_fp32(dm) * y[b].d), (float) msum, acc);
    }
    return acc;
}

static void x16_ref(int64_t n, const void * wx, int64_t ngroups, const void * y, size_t y_stride, int ncols,
                    float * dst, size_t dst_stride) {
    const int64_t nb = n / 256;
    for (int64_t g = 0; g < ngroups; ++g) {
        const uint8_t * grp = (const uint8_t *) wx + g * nb * EDGESSD_X16_BLOCK;
        for (int j = 0; j < ncols; ++j) {
            const es_block_q8_K * yj = (const es_block_q8_K *) ((const char *) y + j * y_stride);
            for (int r = 0; r < EDGESSD_X16_ROWS; ++r) {
                dst[j * dst_stride + g * EDGESSD_X16_ROWS + r] = x16_row(nb, grp, r, yj);
            }
        }
    }
}

edgessd_x16_fn edgessd_x16_avx512_kernel(void);

edgessd_x16_fn edgessd_x16_kernel(int isa) {
    switch (isa) {
        case EDGESSD_ISA_REF:    return x16_ref;
        case EDGESSD_ISA_AVX512: return edgessd_x16_avx512_kernel();
    }
    return NULL;
}
