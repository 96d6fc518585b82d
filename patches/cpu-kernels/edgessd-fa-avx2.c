// AVX2 (with FMA and F16C) variant of edgessd's attention kernel: 8 lanes a vector, two to
// the specification's 16 lanes; bit-equal to edgessd-fa-ref.c.
#include "edgessd-fa-impl.h"

#if defined(__x86_64__) || defined(_M_X64)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#include "edgessd-mm-x86.h"

typedef __m256 fa_v;
#define FA_VL 8
ES_INLINE fa_v fa_load(const float * p) { return _mm256_loadu_ps(p); }
ES_INLINE void fa_store(float * p, fa_v v) { _mm256_storeu_ps(p, v); }
ES_INLINE fa_v fa_set1(float x) { return _mm256_set1_ps(x); }
ES_INLINE fa_v fa_zero(void) { return _mm256_setzero_ps(); }
ES_INLINE fa_v fa_add(fa_v a, fa_v b) { return _mm256_add_ps(a, b); }
ES_INLINE fa_v fa_sub(fa_v a, fa_v b) { return _mm256_sub_ps(a, b); }
ES_INLINE fa_v fa_mul(fa_v a, fa_v b) { return _mm256_mul_ps(a, b); }
ES_INLINE fa_v fa_fmadd(fa_v a, fa_v b, fa_v c) { return _mm256_fmadd_ps(a, b, c); }
ES_INLINE fa_v fa_load_h(const uint16_t * p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) p)); }

ES_INLINE float fa_hsum16(const fa_v * v) { return hsum8(_mm256_add_ps(v[0], v[1])); }

// es_fa_exp, lane by lane
ES_INLINE fa_v fa_exp(fa_v x) {
    const fa_v ok = _mm256_cmp_ps(x, fa_set1(ES_FA_EXP_MIN), _CMP_GE_OQ);
    const fa_v n = fa_sub(fa_add(fa_mul(x, fa_set1(ES_FA_LOG2E)), fa_set1(ES_FA_ROUND)), fa_set1(ES_FA_ROUND));
    fa_v r = fa_fmadd(n, fa_set1(-ES_FA_LN2_HI), x);
    r = fa_fmadd(n, fa_set1(-ES_FA_LN2_LO), r);
    fa_v p = fa_set1(ES_FA_P0);
    p = fa_fmadd(p, r, fa_set1(ES_FA_P1));
    p = fa_fmadd(p, r, fa_set1(ES_FA_P2));
    p = fa_fmadd(p, r, fa_set1(ES_FA_P3));
    p = fa_fmadd(p, r, fa_set1(ES_FA_P4));
    p = fa_fmadd(p, r, fa_set1(ES_FA_P5));
    p = fa_fmadd(p, r, fa_set1(1.0f));
    p = fa_fmadd(p, r, fa_set1(1.0f));
    const __m256i e = _mm256_cvtps_epi32(_mm256_and_ps(n, ok));  // lanes not ok: 0, masked below
    const fa_v two_n = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
    return _mm256_and_ps(fa_mul(p, two_n), ok);
}

#include "edgessd-fa-x86.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

edgessd_fa_fn edgessd_fa_avx2_kernel(void) { return fa_x86; }

#else  // not x86-64

edgessd_fa_fn edgessd_fa_avx2_kernel(void) { return NULL; }

#endif
