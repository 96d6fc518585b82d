// Internal to edgessd's x86 attention kernels: the body both SIMD variants share, written
// over a vector of FA_VL floats. The including file sets its target, then defines
//   fa_v, FA_VL, fa_load, fa_store, fa_set1, fa_zero, fa_add, fa_sub, fa_mul, fa_fmadd,
//   fa_load_h (FA_VL halves to floats), fa_exp (es_fa_exp on every lane) and
//   fa_hsum16 (es_fa_hsum16 of the 16 lanes held in 16 / FA_VL vectors)
// and gets fa_x86, bit-equal to edgessd-fa-ref.c.
#pragma once

#define FA_NV (16 / FA_VL)  // vectors per 16 lanes

// s[t] = dot(q, k_t) * scale + mv[t] for the nv visible rows of the block; 4 rows at a time
// so that four chains of fused multiply-adds overlap
ES_INLINE void fa_scores(const float * q, const float * kf, int64_t d, int nv, float scale,
                         const float * mv, float * s) {
    int t = 0;
    for (; t + 4 <= nv; t += 4) {
        fa_v acc[4][FA_NV];
        for (int u = 0; u < 4; ++u)
            for (int h = 0; h < FA_NV; ++h) acc[u][h] = fa_zero();
        for (int64_t i = 0; i < d; i += 16) {
            for (int h = 0; h < FA_NV; ++h) {
                const fa_v qv = fa_load(q + i + h * FA_VL);
                for (int u = 0; u < 4; ++u)
                    acc[u][h] = fa_fmadd(qv, fa_load(kf + (t + u) * d + i + h * FA_VL), acc[u][h]);
            }
        }
        for (int u = 0; u < 4; ++u) s[t + u] = fa_hsum16(acc[u]) * scale + mv[t + u];
    }
    for (; t < nv; ++t) {
        fa_v acc[FA_NV];
        for (int h = 0; h < FA_NV; ++h) acc[h] = fa_zero();
        for (int64_t i = 0; i < d; i += 16)
            for (int h = 0; h < FA_NV; ++h)
                acc[h] = fa_fmadd(fa_load(q + i + h * FA_VL), fa_load(kf + t * d + i + h * FA_VL), acc[h]);
        s[t] = fa_hsum16(acc) * scale + mv[t];
    }
}

// acc = acc * ms (skipped where ms == 1: the same bits), then acc += p_t * v_t for each
// visible row in order; four vectors of the accumulator at a time
ES_INLINE void fa_accumulate(float * acc, const float * vf, int64_t d, int nv, const float * pt, float ms) {
    const fa_v vms = fa_set1(ms);
    int64_t i = 0;
    for (; i + 4 * FA_VL <= d; i += 4 * FA_VL) {
        fa_v a[4];
        for (int u = 0; u < 4; ++u) {
            a[u] = fa_load(acc + i + u * FA_VL);
            if (ms != 1.0f) a[u] = fa_mul(a[u], vms);
        }
        for (int t = 0; t < nv; ++t) {
            const fa_v p = fa_set1(pt[t]);
            for (int u = 0; u < 4; ++u) a[u] = fa_fmadd(p, fa_load(vf + t * d + i + u * FA_VL), a[u]);
        }
        for (int u = 0; u < 4; ++u) fa_store(acc + i + u * FA_VL, a[u]);
    }
    for (; i < d; i += FA_VL) {
        fa_v a = fa_load(acc + i);
        if (ms != 1.0f) a = fa_mul(a, vms);
        for (int t = 0; t < nv; ++t) a = fa_fmadd(fa_set1(pt[t]), fa_load(vf + t * d + i), a);
        fa_store(acc + i, a);
    }
}

static void fa_x86(const edgessd_fa_args * a) {
    const int64_t d = a->d;
    float * kf  = a->scratch;
    float * vf  = kf + EDGESSD_FA_BLOCK * d;
    float * acc = vf + EDGESSD_FA_BLOCK * d;
    float M[EDGESSD_FA_MAX_ROWS], S[EDGESSD_FA_MAX_ROWS];
    for (int r = 0; r < a->nrows; ++r) {
        M[r] = -INFINITY;
        S[r] = 0.0f;
        for (int64_t i = 0; i < d; i += FA_VL) fa_store(acc + r * d + i, fa_zero());
    }
    for (int64_t j0 = 0; j0 < a->n_kv; j0 += EDGESSD_FA_BLOCK) {
        int pos[EDGESSD_FA_BLOCK];
        float mv[EDGESSD_FA_BLOCK];
        const int nv = es_fa_visible(a, j0, pos, mv);
        if (nv == 0) continue;
        for (int t = 0; t < nv; ++t) {
            const uint16_t * kr = (const uint16_t *) ((const char *) a->k + (j0 + pos[t]) * a->k_stride);
            const uint16_t * vr = (const uint16_t *) ((const char *) a->v + (j0 + pos[t]) * a->v_stride);
            for (int64_t i = 0; i < d; i += FA_VL) {
                fa_store(kf + t * d + i, fa_load_h(kr + i));
                fa_store(vf + t * d + i, fa_load_h(vr + i));
            }
        }
        for (int r = 0; r < a->nrows; ++r) {
            float s[EDGESSD_FA_BLOCK];
            fa_scores(a->q[r], kf, d, nv, a->scale, mv, s);
            float m = -INFINITY;
            for (int t = 0; t < nv; ++t) m = s[t] > m ? s[t] : m;
            const float Mn = m > M[r] ? m : M[r];
            const float ms = es_fa_rescale(M[r], Mn);
            float sb[16], p[16], pt[EDGESSD_FA_BLOCK];
            for (int j = 0; j < 16; ++j) sb[j] = -INFINITY;
            for (int t = 0; t < nv; ++t) sb[pos[t]] = s[t];
            for (int h = 0; h < FA_NV; ++h)
                fa_store(p + h * FA_VL, fa_exp(fa_sub(fa_load(sb + h * FA_VL), fa_set1(Mn))));
            S[r] = S[r] * ms + es_fa_hsum16(p);
            for (int t = 0; t < nv; ++t) pt[t] = p[pos[t]];
            fa_accumulate(acc + r * d, vf, d, nv, pt, ms);
            M[r] = Mn;
        }
    }
    for (int r = 0; r < a->nrows; ++r) {
        const fa_v inv = fa_set1(S[r] == 0.0f ? 0.0f : 1.0f / S[r]);
        for (int64_t i = 0; i < d; i += FA_VL) fa_store(a->out[r] + i, fa_mul(fa_load(acc + r * d + i), inv));
    }
}
