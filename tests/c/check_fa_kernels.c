// Checks edgessd's attention kernel (patches/cpu-kernels/edgessd-fa-*) on random inputs:
//   1. every SIMD variant this CPU runs equals the C specification bit for bit, for head
//      sizes 16..512, KV lengths with tails, 1..16 rows, padded strides, all kinds of masks;
//   2. a row computed alone equals the same row among 16, bit for bit;
//   3. a row does not see the view beyond its last visible position: a longer view whose
//      extra and masked positions hold NaN gives the same bits;
//   4. the specification is attention: within float rounding of softmax(q.k*scale+mask).v in
//      double precision, and es_fa_exp is exp within 2 ulp.
// Prints one line per failure and a closing "N passed, M failed"; exit 1 on any failure.
#include "edgessd-fa-impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0xD1B54A32D192ED03ull;
static uint32_t rnd(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t) (rng >> 16);
}
static int irange(int lo, int hi) { return lo + (int) (rnd() % (uint32_t) (hi - lo + 1)); }
static float frange(float lo, float hi) { return lo + (hi - lo) * (float) (rnd() % 1000001) / 1000000.0f; }

static es_half f2h(float f) {  // round to nearest for normal values in range (enough for tests)
    uint32_t b; memcpy(&b, &f, 4);
    const uint32_t sign = (b >> 16) & 0x8000;
    int e = (int) ((b >> 23) & 0xff) - 127 + 15;
    uint32_t m = b & 0x7fffff;
    if (f == 0.0f || e <= 0) return (es_half) sign;
    uint32_t h = sign | ((uint32_t) e << 10) | (m >> 13);
    if ((m >> 12) & 1) h++;
    return (es_half) h;
}

#define H_NEG_INF 0xFC00
#define H_NAN     0x7E00

enum mask_kind { MASK_NONE, MASK_CAUSAL, MASK_HOLES, MASK_VALUES, MASK_ALL_HIDDEN, MASK_KINDS };

typedef struct {
    int64_t d, n_kv, visible_end;  // positions >= visible_end are masked
    size_t k_stride, v_stride;     // in halves
    es_half * k, * v, * mask;
    float * q;                     // EDGESSD_FA_MAX_ROWS rows of d
    float scale;
} fa_case;

static void make_case(fa_case * c, int64_t d, int64_t n_kv, int kind) {
    c->d = d;
    c->n_kv = n_kv;
    c->k_stride = (size_t) d + 8 * (size_t) irange(0, 2);
    c->v_stride = (size_t) d + 8 * (size_t) irange(0, 2);
    c->k = malloc(sizeof(es_half) * c->k_stride * (size_t) n_kv);
    c->v = malloc(sizeof(es_half) * c->v_stride * (size_t) n_kv);
    c->mask = malloc(sizeof(es_half) * (size_t) n_kv);
    c->q = malloc(sizeof(float) * EDGESSD_FA_MAX_ROWS * (size_t) d);
    const float spread = frange(0.2f, 3.0f);  // large spreads make one position dominate
    for (size_t i = 0; i < c->k_stride * (size_t) n_kv; ++i) c->k[i] = f2h(frange(-spread, spread));
    for (size_t i = 0; i < c->v_stride * (size_t) n_kv; ++i) c->v[i] = f2h(frange(-2.0f, 2.0f));
    for (int64_t i = 0; i < EDGESSD_FA_MAX_ROWS * d; ++i) c->q[i] = frange(-spread, spread);
    c->scale = 1.0f / sqrtf((float) d);
    c->visible_end = kind == MASK_NONE ? n_kv : irange(1, (int) n_kv);
    for (int64_t j = 0; j < n_kv; ++j) {
        es_half m = 0;
        if (j >= c->visible_end || kind == MASK_ALL_HIDDEN) m = H_NEG_INF;
        else if (kind == MASK_HOLES && rnd() % 3 == 0) m = H_NEG_INF;
        else if (kind == MASK_HOLES && (j / 16) % 5 == 1) m = H_NEG_INF;  // whole blocks hidden
        else if (kind == MASK_VALUES) m = f2h(frange(-4.0f, 0.0f));
        c->mask[j] = m;
    }
    // what a row must never read: the K and V of positions it does not see
    for (int64_t j = 0; j < n_kv; ++j) {
        if (c->mask[j] != H_NEG_INF) continue;
        for (int64_t i = 0; i < d; ++i) c->k[j * c->k_stride + i] = c->v[j * c->v_stride + i] = H_NAN;
    }
}

static void free_case(fa_case * c) { free(c->k); free(c->v); free(c->mask); free(c->q); }

// rows first..first+nrows-1 of the case through fn, over the first n_kv positions
static void run(edgessd_fa_fn fn, const fa_case * c, int first, int nrows, int64_t n_kv, int masked, float * out) {
    edgessd_fa_args a;
    memset(&a, 0, sizeof a);
    a.d = c->d;
    a.n_kv = n_kv;
    a.nrows = nrows;
    for (int r = 0; r < nrows; ++r) {
        a.q[r] = c->q + (first + r) * c->d;
        a.out[r] = out + r * c->d;
    }
    a.k = c->k;
    a.k_stride = c->k_stride * sizeof(es_half);
    a.v = c->v;
    a.v_stride = c->v_stride * sizeof(es_half);
    a.mask = masked ? c->mask : NULL;
    a.scale = c->scale;
    float * scratch = malloc(sizeof(float) * EDGESSD_FA_SCRATCH_FLOATS(c->d));
    for (size_t i = 0; i < EDGESSD_FA_SCRATCH_FLOATS(c->d); ++i) scratch[i] = NAN;  // nothing may be read unwritten
    a.scratch = scratch;
    fn(&a);
    free(scratch);
}

// attention in double precision, and the size of its terms
static double attention(const fa_case * c, int row, int64_t i, int masked) {
    const float * q = c->q + row * c->d;
    double mx = -INFINITY;
    double * s = malloc(sizeof(double) * (size_t) c->n_kv);
    for (int64_t j = 0; j < c->n_kv; ++j) {
        const float m = masked ? es_fp16_to_fp32(c->mask[j]) : 0.0f;
        s[j] = -INFINITY;
        if (m == -INFINITY) continue;
        double dot = 0;
        for (int64_t e = 0; e < c->d; ++e) dot += (double) q[e] * es_fp16_to_fp32(c->k[j * c->k_stride + e]);
        s[j] = dot * c->scale + m;
        if (s[j] > mx) mx = s[j];
    }
    double num = 0, den = 0;
    for (int64_t j = 0; j < c->n_kv; ++j) {
        if (s[j] == -INFINITY) continue;
        const double p = exp(s[j] - mx);
        den += p;
        num += p * es_fp16_to_fp32(c->v[j * c->v_stride + i]);
    }
    free(s);
    return den == 0 ? 0 : num / den;
}

static int passed, failed;
static void check(int ok, const char * what, int isa, const fa_case * c, int kind, int nrows) {
    if (ok) { passed++; return; }
    failed++;
    if (failed <= 20) printf("FAIL %s: isa %s d %lld n_kv %lld mask %d rows %d\n", what, edgessd_mm_isa_name(isa),
                             (long long) c->d, (long long) c->n_kv, kind, nrows);
}

static void run_case(int64_t d, int64_t n_kv, int kind) {
    fa_case c;
    make_case(&c, d, n_kv, kind);
    const int masked = kind != MASK_NONE;
    const size_t bytes = sizeof(float) * EDGESSD_FA_MAX_ROWS * (size_t) d;
    float * ref = malloc(bytes), * got = malloc(bytes);
    run(edgessd_fa_kernel(EDGESSD_ISA_REF), &c, 0, EDGESSD_FA_MAX_ROWS, n_kv, masked, ref);

    int close = 1;
    for (int r = 0; r < EDGESSD_FA_MAX_ROWS; r += 5) {
        for (int64_t i = 0; i < d; ++i) {
            if (fabs(ref[r * d + i] - attention(&c, r, i, masked)) > 2e-5) close = 0;
        }
    }
    check(close, "specification is not attention", EDGESSD_ISA_REF, &c, kind, EDGESSD_FA_MAX_ROWS);

    for (int isa = EDGESSD_ISA_REF; isa < EDGESSD_ISA_COUNT; ++isa) {
        edgessd_fa_fn fn = edgessd_fa_kernel(isa);
        if (!fn || !edgessd_mm_isa_supported(isa)) continue;
        static const int row_counts[] = {1, 2, 3, 4, 7, 9, EDGESSD_FA_MAX_ROWS};
        for (size_t n = 0; n < sizeof row_counts / sizeof row_counts[0]; ++n) {
            const int nrows = row_counts[n];
            // rows 16-nrows .. 15 together: a row must not depend on its neighbours
            const int first = EDGESSD_FA_MAX_ROWS - nrows;
            memset(got, 0xAB, bytes);
            run(fn, &c, first, nrows, n_kv, masked, got);
            check(memcmp(got, ref + first * d, sizeof(float) * (size_t) (nrows * d)) == 0,
                  isa == EDGESSD_ISA_REF ? "a row alone differs from it among others" : "differs from the specification",
                  isa, &c, kind, nrows);
        }
        if (masked && c.visible_end < n_kv) {
            // the view cut right after the last visible position: the same bits
            memset(got, 0xAB, bytes);
            run(fn, &c, 0, EDGESSD_FA_MAX_ROWS, c.visible_end, masked, got);
            check(memcmp(got, ref, bytes) == 0, "a longer view changes a row", isa, &c, kind, EDGESSD_FA_MAX_ROWS);
        }
    }
    free(ref); free(got);
    free_case(&c);
}

static void check_exp(void) {
    int ok = 1;
    for (int i = 0; i <= 200000 && ok; ++i) {
        const float x = -87.0f * (float) i / 200000.0f;
        const double want = exp((double) x);
        const float wf = (float) want;
        const double ulp = (double) nextafterf(wf, INFINITY) - (double) wf;
        if (fabs((double) es_fa_exp(x) - want) > 2.0 * ulp) ok = 0;
    }
    ok = ok && es_fa_exp(0.0f) == 1.0f && es_fa_exp(-INFINITY) == 0.0f && es_fa_exp(NAN) == 0.0f && es_fa_exp(-90.0f) == 0.0f;
    check(ok, "es_fa_exp is not exp", EDGESSD_ISA_REF, &(fa_case) {0}, 0, 0);
}

int main(void) {
    printf("isas:");
    for (int isa = 0; isa < EDGESSD_ISA_COUNT; ++isa) {
        if (edgessd_mm_isa_supported(isa) && edgessd_fa_kernel(isa)) printf(" %s", edgessd_mm_isa_name(isa));
    }
    printf("\n");
    check_exp();
    const int64_t ds[] = {16, 48, 64, 80, 128, 256, 512};
    const int64_t kvs[] = {1, 5, 16, 17, 40, 64, 129, 300};
    for (size_t a = 0; a < sizeof ds / sizeof ds[0]; ++a) {
        for (size_t b = 0; b < sizeof kvs / sizeof kvs[0]; ++b) {
            for (int kind = 0; kind < MASK_KINDS; ++kind) run_case(ds[a], kvs[b], kind);
        }
    }
    run_case(128, 1500, MASK_CAUSAL);  // a long context
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
