// edgessd small-batch attention kernel: softmax(q K^T * scale + mask) V for the query rows of
// one token that share one K/V head, with F32 queries and an F16 KV cache.
//
// Each query row is computed with the same operations in the same order whatever else is
// computed with it: the other heads, the other tokens of a batch, the length of the KV view
// beyond the row's last visible position, or the thread count. A k-token batch's attention
// then gives bit for bit the rows of k one-token decodes. The C specification
// (edgessd-fa-ref.c) defines those operations; each SIMD variant is tested bit-equal to it
// (tests/c/check_fa_kernels.c).
//
// Rows sharing a K/V head share its work: each block of EDGESSD_FA_BLOCK positions is
// converted from F16 once for all of them.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGESSD_FA_MAX_ROWS 16   // query rows per call
#define EDGESSD_FA_MAX_D    512  // head size (a multiple of 16)
#define EDGESSD_FA_BLOCK    16   // KV positions per softmax step

// floats of scratch a call needs for head size d: the block's K and V in F32, each row's
// accumulator, and each row's block scores
#define EDGESSD_FA_SCRATCH_FLOATS(d) \
    ((size_t) (2 * EDGESSD_FA_BLOCK + EDGESSD_FA_MAX_ROWS) * (size_t) (d) + EDGESSD_FA_MAX_ROWS * EDGESSD_FA_BLOCK)

typedef struct {
    int64_t          d;         // head size of K and V, a multiple of 16, <= EDGESSD_FA_MAX_D
    int64_t          n_kv;      // KV positions
    int              nrows;     // query rows, 1..EDGESSD_FA_MAX_ROWS
    const float    * q[EDGESSD_FA_MAX_ROWS];    // query rows, d floats each
    float          * out[EDGESSD_FA_MAX_ROWS];  // output rows, d floats each
    const uint16_t * k;         // K rows (F16), position p at k + p*k_stride bytes
    size_t           k_stride;
    const uint16_t * v;         // V rows (F16), likewise
    size_t           v_stride;
    const uint16_t * mask;      // n_kv F16 values added to the scores (-inf: not visible), or NULL
    float            scale;     // applied to q.k before the mask
    float          * scratch;   // EDGESSD_FA_SCRATCH_FLOATS(d) floats
} edgessd_fa_args;

typedef void (*edgessd_fa_fn)(const edgessd_fa_args * a);

// the attention kernel of an ISA (enum edgessd_mm_isa), or NULL where none is built
edgessd_fa_fn edgessd_fa_kernel(int isa);

#ifdef __cplusplus
}
#endif
