// edgessd small-batch matmul kernels: quantized weights x 1..EDGESSD_MM_MAX_COLS activation columns.
//
// Every output element is computed with the same operations in the same order whatever the
// number of columns, so a k-token batch gives bit for bit the logits of k one-token decodes.
// The C specification (edgessd-mm-ref.c) defines those operations; each SIMD variant is
// tested bit-equal against it (tests/test_cpu_kernels.py).
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGESSD_MM_MAX_COLS 16

// ggml_type ids of the weight types covered (same numbers as enum ggml_type)
enum edgessd_mm_type {
    EDGESSD_Q4_0 = 2,
    EDGESSD_Q4_1 = 3,
    EDGESSD_Q5_0 = 6,
    EDGESSD_Q8_0 = 8,
    EDGESSD_Q4_K = 12,
    EDGESSD_Q5_K = 13,
    EDGESSD_Q6_K = 14,
};

enum edgessd_mm_isa {
    EDGESSD_ISA_REF    = 0,  // the C specification
    EDGESSD_ISA_AVX2   = 1,  // AVX2 + FMA + F16C
    EDGESSD_ISA_AVX512 = 2,  // AVX-512 F/BW/VL/DQ + VNNI
    EDGESSD_ISA_COUNT  = 3,
};

// dst[j*dst_stride + r] = dot(weight row r, activation column j), r < nrows, j < ncols.
//   n:      elements per row (a multiple of the type's block size)
//   w:      nrows weight rows in ggml's layout for the type, w_stride bytes apart
//   y:      ncols activation rows already quantized to the type's vec_dot type
//           (Q8_K for K-quants, Q8_1 for Q4_1, Q8_0 otherwise), y_stride bytes apart
//   ncols:  1..EDGESSD_MM_MAX_COLS
typedef void (*edgessd_mm_fn)(int64_t n, const void * w, size_t w_stride, int64_t nrows,
                              const void * y, size_t y_stride, int ncols,
                              float * dst, size_t dst_stride);

// the kernel for a type on an ISA, or NULL where none is built
edgessd_mm_fn edgessd_mm_kernel(int type, int isa);

// whether this CPU runs the ISA's kernels (REF: always)
int edgessd_mm_isa_supported(int isa);

const char * edgessd_mm_isa_name(int isa);

// the kernel that runs a type on an ISA: the ISA's own, else the next lower SIMD variant's;
// REF only where REF is asked for; NULL where the type is not covered
edgessd_mm_fn edgessd_mm_for_type(int type, int isa);

// the ISA selected by EDGESSD_CPU_KERNELS (auto|stock|ref|avx2|avx512; default auto: the
// best this CPU runs), or -1 for ggml's stock kernels; read once
int edgessd_mm_selected_isa(void);

#ifdef __cplusplus
}
#endif
