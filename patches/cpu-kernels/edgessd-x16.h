// Q4_K weights re-laid out 16 rows at a time, for batches of 1..EDGESSD_MM_MAX_COLS columns.
//
// ggml's Q4_K layout makes a one-column kernel unpack each row's 12-byte scale header and
// reduce 8 float lanes per row and super-block; that arithmetic, not memory, set our t(1).
// Here 16 rows share each super-block's record: their scales and mins unpacked to bytes,
// their quants interleaved 4 bytes per row, so one 512-bit vpdpbusd takes 4 quants of each
// of the 16 rows against 4 broadcast activation bytes, and one float lane is one row.
//
// The specification (edgessd_x16_ref in edgessd-x16.c), per row and column, super-block by
// super-block in order: isum = sum over the 8 sub-blocks c of sc_c * (exact integer dot of
// the 32 quants with the activations), msum = sum over c of mn_c * (bsums[2c] + bsums[2c+1]),
// then acc = fmaf(d * dy, (float) isum, acc) and acc = fmaf(-(dmin * dy), (float) msum, acc),
// from acc = 0. Integer sums are exact, so a variant may form them in any order; the float
// steps are fixed, and nothing depends on the number of columns.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGESSD_X16_ROWS 16
// one super-block of 16 rows: d[16], dmin[16] (f16), sc[8][16], mn[8][16] (u8),
// qs[4 chunk pairs][8 quads][16 rows][4 bytes] (chunk 2k in the low nibbles, 2k+1 in the high)
#define EDGESSD_X16_BLOCK 2368

// bytes of nrows Q4_K rows of n elements re-laid out (nrows a multiple of 16, n of 256)
size_t edgessd_x16_size(int64_t n, int64_t nrows);

// re-lay out row groups [g0, g1) of Q4_K rows (w_stride bytes apart) into dst, which holds
// every group of the matrix: group g at g * (n / 256) * EDGESSD_X16_BLOCK
void edgessd_x16_pack(int64_t n, const void * w, size_t w_stride, int64_t g0, int64_t g1, void * dst);

// dst[j*dst_stride + r] for rows r < 16 * ngroups of the re-laid-out wx (its first group at
// wx) and Q8_K columns j < ncols (1..EDGESSD_MM_MAX_COLS), y_stride bytes apart
typedef void (*edgessd_x16_fn)(int64_t n, const void * wx, int64_t ngroups, const void * y, size_t y_stride,
                               int ncols, float * dst, size_t dst_stride);

// the kernel of an ISA (REF, AVX512), or NULL where there is none
edgessd_x16_fn edgessd_x16_kernel(int isa);

#ifdef __cplusplus
}
#endif
