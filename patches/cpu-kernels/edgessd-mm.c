// Selection of edgessd's kernels (matmul and attention): which ISA variants this CPU runs, and EDGESSD_CPU_KERNELS.
#include "edgessd-mm-impl.h"
#include "edgessd-fa-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char * const isa_names[EDGESSD_ISA_COUNT] = {"ref", "avx2", "avx512"};

const char * edgessd_mm_isa_name(int isa) {
    return isa >= 0 && isa < EDGESSD_ISA_COUNT ? isa_names[isa] : "stock";
}

int edgessd_mm_isa_supported(int isa) {
    switch (isa) {
        case EDGESSD_ISA_REF:
            return 1;
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
        case EDGESSD_ISA_AVX2:
            __builtin_cpu_init();
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                   __builtin_cpu_supports("f16c");
        case EDGESSD_ISA_AVX512:
            __builtin_cpu_init();
            return edgessd_mm_isa_supported(EDGESSD_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
#endif
        default:
            return 0;
    }
}

edgessd_mm_fn edgessd_mm_kernel(int type, int isa) {
    switch (isa) {
        case EDGESSD_ISA_REF:    return edgessd_mm_ref_kernel(type);
        case EDGESSD_ISA_AVX2:   return edgessd_mm_avx2_kernel(type);
        case EDGESSD_ISA_AVX512: return edgessd_mm_avx512_kernel(type);
    }
    return NULL;
}

edgessd_fa_fn edgessd_fa_kernel(int isa) {
    switch (isa) {
        case EDGESSD_ISA_REF:    return edgessd_fa_ref_kernel();
        case EDGESSD_ISA_AVX2:   return edgessd_fa_avx2_kernel();
        case EDGESSD_ISA_AVX512: return edgessd_fa_avx512_kernel();
    }
    return NULL;
}

static int select_isa(void) {
    const char * env = getenv("EDGESSD_CPU_KERNELS");
    if (env == NULL || *env == '\0' || strcmp(env, "auto") == 0) {
        for (int isa = EDGESSD_ISA_COUNT - 1; isa > EDGESSD_ISA_REF; --isa) {
            if (edgessd_mm_isa_supported(isa)) return isa;
        }
        return -1;  // no SIMD variant for this CPU (e.g. Arm): ggml's own kernels
    }
    if (strcmp(env, "stock") == 0) return -1;
    for (int isa = 0; isa < EDGESSD_ISA_COUNT; ++isa) {
        if (strcmp(env, isa_names[isa]) == 0) {
            if (edgessd_mm_isa_supported(isa)) return isa;
            fprintf(stderr, "edgessd: EDGESSD_CPU_KERNELS=%s: this CPU does not run it; using ggml's kernels\n", env);
            return -1;
        }
    }
    fprintf(stderr, "edgessd: EDGESSD_CPU_KERNELS=%s: use auto, stock, ref, avx2 or avx512; using ggml's kernels\n", env);
    return -1;
}

edgessd_mm_fn edgessd_mm_for_type(int type, int isa) {
    if (isa == EDGESSD_ISA_REF) return edgessd_mm_kernel(type, EDGESSD_ISA_REF);
    for (; isa > EDGESSD_ISA_REF; --isa) {  // a variant without this type falls back to the next
        edgessd_mm_fn fn = edgessd_mm_kernel(type, isa);
        if (fn) return fn;
    }
    return NULL;
}

int edgessd_mm_selected_isa(void) {
    static int selected = -2;  // benign race: every thread computes the same value
    if (selected == -2) selected = select_isa();
    return selected;
}
