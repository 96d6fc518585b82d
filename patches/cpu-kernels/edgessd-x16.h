// Q4_K and Q6_K weights re-laid out 16 rows at a time, for batches of 1..EDGESSD_MM_MAX_COLS columns.
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
//
// Q6_K the same way (edgessd_x16_ref's Q6_K rows): per row and column, super-block by
// super-block, T = sum over the 16 sub-blocks s of sc_s * (exact integer dot of the 16 6-bit
// quants with the activations - 32 * bsums[s]), then acc = fmaf(d * dy, (float) T, acc).
// Its record is exactly the size of the 16 rows' blocks.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGESSD_X16_ROWS 16
// Q4_K, one super-block of 16 rows: d[16], dmin[16] (f16), sc[8][16], mn[8][16] (u8),
// qs[4 chunk pairs][8 quads][16 rows][4 bytes] (chunk 2k in the low nibbles, 2k+1 in the high)
#define EDGESSD_X16_BLOCK_Q4_K 2368
// Q6_K, one super-block of 16 rows: d[16] (f16), sc[16 sub-blocks][16] (i8), then per
// sub-block of 16 quants (4 quads), 192 bytes: the low 4 bits of quads 0 and 1 (low, high
// nibble), of quads 2 and 3, then the high 2 bits of quads 0-3 (bits 0-1, 2-3, 4-5, 6-7);
// each 64 bytes as [16 rows][4 bytes]
#define EDGESSD_X16_BLOCK_Q6_K 3360

// whether a type has the 16-row layout (Q4_K, Q6_K)
int edgessd_x16_covers(int type);

// bytes of nrows rows of n elements of a covered type re-laid out (nrows a multiple of 16, n of 256)
size_t edgessd_x16_size(int type, int64_t n, int64_t nrows);

// re-lay out row groups [g0, g1) of rows of a covered type (w_stride bytes apart) into dst,
// which holds every group of the matrix: group g at edgessd_x16_size(type, n, 16 * g)
void edgessd_x16_pack(int type, int64_t n, const void * w, size_t w_stride, int64_t g0, int64_t g1, void * dst);

// dst[j*dst_stride + r] for rows r < 16 * ngroups of the re-laid-out wx (its first group at
// wx) and Q8_K columns j < ncols (1..EDGESSD_MM_MAX_COLS), y_stride bytes apart
typedef void (*edgessd_x16_fn)(int64_t n, const void * wx, int64_t ngroups, const void * y, size_t y_stride,
                               int ncols, float * dst, size_t dst_stride);

// the kernel of a covered type on an ISA (REF, AVX512), or NULL where there is none
edgessd_x16_fn edgessd_x16_kernel(int type, int isa);

#ifdef __cplusplus
}
#endif
