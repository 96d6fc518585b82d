// AVX-512 (F, DQ) variant of edgessd's attention kernel: 16 lanes a vector, bit-equal to
// edgessd-fa-ref.c.
#include "edgessd-fa-impl.h"

#if defined(__x86_64__) || defined(_M_X64)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#endif

#include "edgessd-mm-x86.h"

typedef __m512 fa_v;
#define FA_VL 16
ES_INLINE fa_v fa_load(const float * p) { return _mm512_loadu_ps(p); }
ES_INLINE void fa_store(float * p, fa_v v) { _mm512_storeu_ps(p, v); }
ES_INLINE fa_v fa_set1(float x) { return _mm512_set1_ps(x); }
ES_INLINE fa_v fa_zero(void) { return _mm512_setzero_ps(); }
ES_INLINE fa_v fa_add(fa_v a, fa_v b) { return _mm512_add_ps(a, b); }
ES_INLINE fa_v fa_sub(fa_v a, fa_v b) { return _mm512_sub_ps(a, b); }
ES_INLINE fa_v fa_mul(fa_v a, fa_v b) { return _mm512_mul_ps(a, b); }
ES_INLINE fa_v fa_fmadd(fa_v a, fa_v b, fa_v c) { return _mm512_fmadd_ps(a, b, c); }
ES_INLINE fa_v fa_load_h(const uint16_t * p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) p)); }

ES_INLINE float fa_hsum16(const fa_v * v) {
    return hsum8(_mm256_add_ps(_mm512_castps512_ps256(v[0]), _mm512_extractf32x8_ps(v[0], 1)));
}

// es_fa_exp, lane by lane
ES_INLINE fa_v fa_exp(fa_v x) {
    const __mmask16 ok = _mm512_cmp_ps_mask(x, fa_set1(ES_FA_EXP_MIN), _CMP_GE_OQ);
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
    const __m512i e = _mm512_maskz_cvtps_epi32(ok, n);
    const fa_v two_n = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(e, _mm512_set1_epi32(127)), 23));
    return _mm512_maskz_mul_ps(ok, p, two_n);
}

#include "edgessd-fa-x86.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

edgessd_fa_fn edgessd_fa_avx512_kernel(void) { return fa_x86; }

#else  // not x86-64

edgessd_fa_fn edgessd_fa_avx512_kernel(void) { return NULL; }

#endif
