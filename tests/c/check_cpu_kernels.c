// Checks edgessd's CPU kernels (patches/cpu-kernels) on random blocks:
//   1. every SIMD variant this CPU runs equals the C specification bit for bit,
//      for odd row counts, 1..16 columns, strided rows and outputs;
//   2. a column computed alone equals the same column in a batch of 16, bit for bit;
//   3. the specification is the dot product: within float rounding of a double-precision
//      dot of the dequantized weights and activations;
//   4. the same for Q4_K and Q6_K re-laid out in 16-row groups (edgessd-x16.h), packed in two parts
//      and computed from a group that is not the first.
// Prints one line per failure and a closing "N passed, M failed"; exit 1 on any failure.
#include "edgessd-mm-impl.h"
#include "edgessd-x16.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t) (rng >> 16);
}
static int irange(int lo, int hi) { return lo + (int) (rnd() % (uint32_t) (hi - lo + 1)); }

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
static es_half rnd_half(void) {  // normal halves from 2^-12 to 2^2, either sign
    return (es_half) (((rnd() & 1) << 15) | ((uint32_t) irange(3, 17) << 10) | (rnd() & 0x3ff));
}

static int block_elems(int type) { return type == EDGESSD_Q4_K || type == EDGESSD_Q5_K || type == EDGESSD_Q6_K ? 256 : 32; }
static size_t wblock_bytes(int type) {
    switch (type) {
        case EDGESSD_Q8_0: return sizeof(es_block_q8_0);
        case EDGESSD_Q4_0: return sizeof(es_block_q4_0);
        case EDGESSD_Q5_0: return sizeof(es_block_q5_0);
        case EDGESSD_Q4_1: return sizeof(es_block_q4_1);
        default:           return es_bytes256(type);
    }
}
static size_t yblock_bytes(int type) {
    if (block_elems(type) == 256) return sizeof(es_block_q8_K);
    return type == EDGESSD_Q4_1 ? sizeof(es_block_q8_1) : sizeof(es_block_q8_0);
}

// random weight blocks: random bits, halves kept finite; extreme = every quant at its maximum
static void fill_weights(int type, char * p, size_t nblocks, int extreme) {
    const size_t bw = wblock_bytes(type);
    for (size_t i = 0; i < nblocks * bw; ++i) p[i] = extreme ? (char) 0xFF : (char) rnd();
    for (size_t b = 0; b < nblocks; ++b) {
        char * blk = p + b * bw;
        es_half * h;
        switch (type) {
            case EDGESSD_Q4_1: h = (es_half *) blk; h[0] = rnd_half(); h[1] = rnd_half(); break;
            case EDGESSD_Q4_K:
            case EDGESSD_Q5_K: h = (es_half *) blk; h[0] = rnd_half(); h[1] = rnd_half(); break;
            case EDGESSD_Q6_K: ((es_block_q6_K *) blk)->d = rnd_half(); break;
            case EDGESSD_Q8_0:
                ((es_block_q8_0 *) blk)->d = rnd_half();
                if (extreme) memset(((es_block_q8_0 *) blk)->qs, 0x80, 32);  // -128 everywhere
                break;
            default: ((es_half *) blk)[0] = rnd_half(); break;
        }
        if (type == EDGESSD_Q6_K && extreme) memset(((es_block_q6_K *) blk)->scales, 0x80, 16);  // -128
    }
}

static void fill_acts(int type, char * p, size_t nblocks, int extreme) {
    for (size_t b = 0; b < nblocks; ++b) {
        int8_t q[256];
        const int ne = block_elems(type);
        int sum = 0;
        for (int i = 0; i < ne; ++i) { q[i] = (int8_t) (extreme ? ((i & 1) ? -127 : 127) : irange(-127, 127)); sum += q[i]; }
        if (ne == 256) {
            es_block_q8_K * y = (es_block_q8_K *) p + b;
            y->d = (float) irange(1, 1000) / 4096.0f;
            memcpy(y->qs, q, 256);
            for (int g = 0; g < 16; ++g) {
                int s = 0;
                for (int i = 0; i < 16; ++i) s += q[16 * g + i];
                y->bsums[g] = (int16_t) s;
            }
        } else if (type == EDGESSD_Q4_1) {
            es_block_q8_1 * y = (es_block_q8_1 *) p + b;
            y->d = rnd_half();
            y->s = f2h(es_fp16_to_fp32(y->d) * (float) sum);
            memcpy(y->qs, q, 32);
        } else {
            es_block_q8_0 * y = (es_block_q8_0 *) p + b;
            y->d = rnd_half();
            memcpy(y->qs, q, 32);
        }
    }
}

// double-precision dequantized dot, and the sum of |terms| for its tolerance
static double dequant_dot(int type, int64_t n, const char * w, const char * y, double * mag) {
    float wf[256]; double s = 0, a = 0;
    const int ne = block_elems(type);
    for (int64_t b = 0; b < n / ne; ++b) {
        const char * blk = w + b * wblock_bytes(type);
        if (ne == 256) {
            const es_block_q8_K * yb = (const es_block_q8_K *) y + b;
            if (type == EDGESSD_Q4_K) {
                const es_block_q4_K * x = (const es_block_q4_K *) blk;
                for (int c = 0; c < 8; ++c) {
                    uint8_t sc, mn; es_q4_K_scale_min(c, x->scales, &sc, &mn);
                    for (int i = 0; i < 32; ++i) {
                        const int k = c / 2, p = 32 * k + i;
                        const int q = (c & 1) ? x->qs[p] >> 4 : x->qs[p] & 0xF;
                        wf[32 * c + i] = es_fp16_to_fp32(x->d) * sc * q - es_fp16_to_fp32(x->dmin) * mn;
                    }
                }
            } else if (type == EDGESSD_Q5_K) {  // as ggml's dequantize_row_q5_K
                const es_block_q5_K * x = (const es_block_q5_K *) blk;
                for (int c = 0; c < 8; ++c) {
                    uint8_t sc, mn; es_q4_K_scale_min(c, x->scales, &sc, &mn);
                    for (int i = 0; i < 32; ++i) {
                        const int p = 32 * (c / 2) + i;
                        const int lo = (c & 1) ? x->qs[p] >> 4 : x->qs[p] & 0xF;
                        const int q = lo + ((x->qh[i] & (1 << c)) ? 16 : 0);
                        wf[32 * c + i] = es_fp16_to_fp32(x->d) * sc * q - es_fp16_to_fp32(x->dmin) * mn;
                    }
                }
            } else {
                const es_block_q6_K * x = (const es_block_q6_K *) blk;
                for (int p = 0; p < 256; ++p) {
                    const int h = p / 128, l = p % 128, i = l % 32, part = l / 32;
                    const uint8_t ql = x->ql[64 * h + i + (part & 1) * 32];
                    const int lo = part < 2 ? ql & 0xF : ql >> 4;
                    const int hi = (x->qh[32 * h + i] >> (2 * part)) & 3;
                    wf[p] = es_fp16_to_fp32(x->d) * x->scales[p / 16] * ((lo | (hi << 4)) - 32);
                }
            }
            for (int i = 0; i < 256; ++i) { const double t = (double) wf[i] * yb->d * yb->qs[i]; s += t; a += fabs(t); }
        } else {
            float d = 0, m = 0; int q[32];
            if (type == EDGESSD_Q8_0) { const es_block_q8_0 * x = (const void *) blk; d = es_fp16_to_fp32(x->d); for (int i = 0; i < 32; ++i) q[i] = x->qs[i]; }
            if (type == EDGESSD_Q4_0) { const es_block_q4_0 * x = (const void *) blk; d = es_fp16_to_fp32(x->d); for (int i = 0; i < 16; ++i) { q[i] = (x->qs[i] & 15) - 8; q[i + 16] = (x->qs[i] >> 4) - 8; } }
            if (type == EDGESSD_Q4_1) { const es_block_q4_1 * x = (const void *) blk; d = es_fp16_to_fp32(x->d); m = es_fp16_to_fp32(x->m); for (int i = 0; i < 16; ++i) { q[i] = x->qs[i] & 15; q[i + 16] = x->qs[i] >> 4; } }
            if (type == EDGESSD_Q5_0) {
                const es_block_q5_0 * x = (const void *) blk; uint32_t qh; memcpy(&qh, x->qh, 4); d = es_fp16_to_fp32(x->d);
                for (int i = 0; i < 16; ++i) { q[i] = ((x->qs[i] & 15) | (((qh >> i) & 1) << 4)) - 16; q[i + 16] = ((x->qs[i] >> 4) | (((qh >> (i + 16)) & 1) << 4)) - 16; }
            }
            const int8_t * yq; double dy;
            if (type == EDGESSD_Q4_1) { const es_block_q8_1 * yb = (const es_block_q8_1 *) y + b; yq = yb->qs; dy = es_fp16_to_fp32(yb->d);
                const double t = (double) m * es_fp16_to_fp32(yb->s); s += t; a += fabs(t); }
            else { const es_block_q8_0 * yb = (const es_block_q8_0 *) y + b; yq = yb->qs; dy = es_fp16_to_fp32(yb->d); }
            for (int i = 0; i < 32; ++i) { const double t = (double) d * q[i] * dy * yq[i]; s += t; a += fabs(t); }
        }
    }
    *mag = a;
    return s;
}

static int passed, failed;
static void check(int ok, const char * what, int type, int isa, int64_t n, int64_t nr, int nc) {
    if (ok) { passed++; return; }
    failed++;
    if (failed <= 20) printf("FAIL %s: type %d isa %s n %lld rows %lld cols %d\n", what, type,
                             edgessd_mm_isa_name(isa), (long long) n, (long long) nr, nc);
}

// whether every row and column of out is the dequantized dot product, within float rounding
static int all_close(int type, int64_t n, int64_t nrows, const char * w, size_t wstride, const char * y,
                     size_t ystride, const float * out, size_t dstride) {
    for (int j = 0; j < EDGESSD_MM_MAX_COLS; ++j) {
        for (int64_t r = 0; r < nrows; ++r) {
            double mag, want = dequant_dot(type, n, w + r * wstride, y + j * ystride, &mag);
            if (fabs(out[j * dstride + r] - want) > 1e-5 * mag + 1e-30) return 0;
        }
    }
    return 1;
}

static void run_case(int type, int64_t n, int64_t nrows, int extreme) {
    const int ne = block_elems(type);
    const size_t wrow = (size_t) (n / ne) * wblock_bytes(type), yrow = (size_t) (n / ne) * yblock_bytes(type);
    const size_t wstride = wrow + 16 * (nrows & 1), ystride = yrow + 64;  // odd row counts get padded strides
    const size_t dstride = (size_t) nrows + 3;
    char * w = malloc(wstride * nrows), * y = malloc(ystride * EDGESSD_MM_MAX_COLS);
    float * ref = malloc(sizeof(float) * dstride * EDGESSD_MM_MAX_COLS);
    float * got = malloc(sizeof(float) * dstride * EDGESSD_MM_MAX_COLS);
    for (int64_t r = 0; r < nrows; ++r) fill_weights(type, w + r * wstride, (size_t) (n / ne), extreme);
    for (int j = 0; j < EDGESSD_MM_MAX_COLS; ++j) fill_acts(type, y + j * ystride, (size_t) (n / ne), extreme);

    edgessd_mm_kernel(type, EDGESSD_ISA_REF)(n, w, wstride, nrows, y, ystride, EDGESSD_MM_MAX_COLS, ref, dstride);
    const int close = all_close(type, n, nrows, w, wstride, y, ystride, ref, dstride);
    check(close, "specification is not the dequantized dot product", type, EDGESSD_ISA_REF, n, nrows, 16);

    for (int isa = EDGESSD_ISA_REF; isa < EDGESSD_ISA_COUNT; ++isa) {
        edgessd_mm_fn fn = edgessd_mm_kernel(type, isa);
        if (!fn || !edgessd_mm_isa_supported(isa)) continue;
        for (int nc = 1; nc <= EDGESSD_MM_MAX_COLS; ++nc) {
            memset(got, 0xAB, sizeof(float) * dstride * EDGESSD_MM_MAX_COLS);
            // columns 16-nc .. 15 together: column j of a batch must not depend on its neighbours
            const int j0 = EDGESSD_MM_MAX_COLS - nc;
            fn(n, w, wstride, nrows, y + j0 * ystride, ystride, nc, got, dstride);
            int same = 1;
            for (int j = 0; j < nc; ++j) {
                if (memcmp(got + j * dstride, ref + (j0 + j) * dstride, sizeof(float) * nrows) != 0) same = 0;
            }
            check(same, isa == EDGESSD_ISA_REF ? "a column alone differs from it in a batch"
                                               : "differs from the specification", type, isa, n, nrows, nc);
        }
    }
    free(w); free(y); free(ref); free(got);
}

static void run_x16_case(int type, int64_t n, int64_t ngroups, int extreme) {
    const int64_t nrows = ngroups * EDGESSD_X16_ROWS, nb = n / 256;
    const size_t wstride = (size_t) nb * es_bytes256(type) + 16, ystride = (size_t) nb * sizeof(es_block_q8_K) + 64;
    const size_t dstride = (size_t) nrows + 3, gbytes = edgessd_x16_size(type, n, EDGESSD_X16_ROWS);
    char * w = malloc(wstride * nrows), * y = malloc(ystride * EDGESSD_MM_MAX_COLS);
    char * wx = malloc(edgessd_x16_size(type, n, nrows));
    float * ref = malloc(sizeof(float) * dstride * EDGESSD_MM_MAX_COLS);
    float * got = malloc(sizeof(float) * dstride * EDGESSD_MM_MAX_COLS);
    for (int64_t r = 0; r < nrows; ++r) fill_weights(type, w + r * wstride, (size_t) nb, extreme);
    for (int j = 0; j < EDGESSD_MM_MAX_COLS; ++j) fill_acts(type, y + j * ystride, (size_t) nb, extreme);
    check(edgessd_x16_size(type, n, nrows) == gbytes * ngroups && gbytes == (size_t) nb * (type == EDGESSD_Q4_K ? EDGESSD_X16_BLOCK_Q4_K : EDGESSD_X16_BLOCK_Q6_K), "x16 size", type, EDGESSD_ISA_REF, n, nrows, 0);
    edgessd_x16_pack(type, n, w, wstride, 0, ngroups / 2, wx);  // in two parts, as threads pack their shares
    edgessd_x16_pack(type, n, w, wstride, ngroups / 2, ngroups, wx);

    edgessd_x16_kernel(type, EDGESSD_ISA_REF)(n, wx, ngroups, y, ystride, EDGESSD_MM_MAX_COLS, ref, dstride);
    const int close = all_close(type, n, nrows, w, wstride, y, ystride, ref, dstride);
    check(close, "x16 specification is not the dequantized dot product", type, EDGESSD_ISA_REF, n, nrows, 16);

    for (int isa = EDGESSD_ISA_REF; isa < EDGESSD_ISA_COUNT; ++isa) {
        edgessd_x16_fn fn = edgessd_x16_kernel(type, isa);
        if (!fn || !edgessd_mm_isa_supported(isa)) continue;
        for (int nc = 1; nc <= EDGESSD_MM_MAX_COLS; ++nc) {
            memset(got, 0xAB, sizeof(float) * dstride * EDGESSD_MM_MAX_COLS);
            const int j0 = EDGESSD_MM_MAX_COLS - nc;
            fn(n, wx, ngroups, y + j0 * ystride, ystride, nc, got, dstride);
            int same = 1;
            for (int j = 0; j < nc; ++j) {
                if (memcmp(got + j * dstride, ref + (j0 + j) * dstride, sizeof(float) * nrows) != 0) same = 0;
            }
            check(same, isa == EDGESSD_ISA_REF ? "x16: a column alone differs from it in a batch"
                                               : "x16 differs from the specification", type, isa, n, nrows, nc);
        }
        if (ngroups > 1) {  // the groups after the first, as a thread's chunk computes them
            fn(n, wx + gbytes, ngroups - 1, y, ystride, 3, got, dstride);
            int same = 1;
            for (int j = 0; j < 3; ++j) {
                if (memcmp(got + j * dstride, ref + j * dstride + EDGESSD_X16_ROWS,
                           sizeof(float) * (nrows - EDGESSD_X16_ROWS)) != 0) same = 0;
            }
            check(same, "x16 from a later group differs", type, isa, n, nrows, 3);
        }
    }
    free(w); free(y); free(wx); free(ref); free(got);
}

int main(void) {
    const int types[] = {EDGESSD_Q4_K, EDGESSD_Q5_K, EDGESSD_Q6_K, EDGESSD_Q8_0, EDGESSD_Q4_0, EDGESSD_Q5_0, EDGESSD_Q4_1};
    const int64_t rows[] = {1, 2, 3, 7, 8, 9, 17};
    printf("isas:");
    for (int isa = 0; isa < EDGESSD_ISA_COUNT; ++isa) {
        if (edgessd_mm_isa_supported(isa)) printf(" %s", edgessd_mm_isa_name(isa));
    }
    printf("\n");
    for (size_t t = 0; t < sizeof types / sizeof types[0]; ++t) {
        const int ne = block_elems(types[t]);
        const int64_t ns[] = {ne, 2 * ne, 6 * ne, 11 * ne};
        for (size_t i = 0; i < 4; ++i) {
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; ++r) run_case(types[t], ns[i], rows[r], 0);
        }
        run_case(types[t], 4 * ne, 5, 1);
        // rows longer than 1024 blocks of 32: the AVX-512 kernel converts column scales per row there
        if (ne == 32) run_case(types[t], 1027 * ne, 3, 0);
    }
    for (int t = 0; t < 2; ++t) {
        const int type = t == 0 ? EDGESSD_Q4_K : EDGESSD_Q6_K;
        for (int64_t g = 1; g <= 3; ++g) {
            for (int64_t nb = 1; nb <= 6; nb += 5) run_x16_case(type, 256 * nb, g, 0);
        }
        run_x16_case(type, 256 * 4, 2, 1);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
