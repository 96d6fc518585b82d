// The C specification of edgessd's attention kernel.
//
// For one query row q (d floats) over KV positions 0..n_kv-1, with K and V in F16 (their
// conversion to float is exact):
//
//   state: M = -inf, S = 0, acc[0..d) = 0
//   for each block of EDGESSD_FA_BLOCK positions starting at j0 = 0, 16, 32, ..., in order:
//     the visible positions j: inside the view and mask[j] != -inf (es_fa_visible)
//     none visible: skip the block (its step would leave the state's bits as they are)
//     for each visible j:
//       dot_j  = es_fa_hsum16(lane), lane[l] accumulating fmaf(q[i], k_j[i], lane[l]) over
//                i = l, l+16, l+32, ... in order
//       s_j    = dot_j * scale + mask[j]
//     Mn = max(M, max_j s_j)
//     ms = es_fa_exp(M - Mn)                  (0 for the first block)
//     p_j = es_fa_exp(s_j - Mn), and 0 for the positions of the block not visible
//     S  = S * ms + es_fa_hsum16(p)           (p by the position's offset in the block)
//     acc[i] = acc[i] * ms, then acc[i] = fmaf(p_j, v_j[i], acc[i]) for each visible j in order
//     M  = Mn
//   out[i] = acc[i] * (S == 0 ? 0 : 1/S)
//
// Nothing depends on the other rows of the call, on n_kv beyond the row's last visible
// position, or on how calls are spread over threads. A variant may skip a multiplication by
// ms where ms == 1: that leaves the same bits.
#include "edgessd-fa-impl.h"

static float dot16(const float * q, const float * k, int64_t d) {
    float lane[16] = {0};
    for (int64_t i = 0; i < d; i += 16) {
        for (int l = 0; l < 16; ++l) lane[l] = fmaf(q[i + l], k[i + l], lane[l]);
    }
    return es_fa_hsum16(lane);
}

static void fa_ref(const edgessd_fa_args * a) {
    const int64_t d = a->d;
    float * kf  = a->scratch;                    // the block's visible K rows, in F32
    float * vf  = kf + EDGESSD_FA_BLOCK * d;     // and V rows
    float * acc = vf + EDGESSD_FA_BLOCK * d;     // each query row's accumulator
    float M[EDGESSD_FA_MAX_ROWS], S[EDGESSD_FA_MAX_ROWS];
    for (int r = 0; r < a->nrows; ++r) {
        M[r] = -INFINITY;
        S[r] = 0.0f;
        for (int64_t i = 0; i < d; ++i) acc[r * d + i] = 0.0f;
    }
    for (int64_t j0 = 0; j0 < a->n_kv; j0 += EDGESSD_FA_BLOCK) {
        int pos[EDGESSD_FA_BLOCK];
        float mv[EDGESSD_FA_BLOCK];
        const int nv = es_fa_visible(a, j0, pos, mv);
        if (nv == 0) continue;
        for (int t = 0; t < nv; ++t) {
            const uint16_t * kr = (const uint16_t *) ((const char *) a->k + (j0 + pos[t]) * a->k_stride);
            const uint16_t * vr = (const uint16_t *) ((const char *) a->v + (j0 + pos[t]) * a->v_stride);
            for (int64_t i = 0; i < d; ++i) {
                kf[t * d + i] = es_fp16_to_fp32(kr[i]);
                vf[t * d + i] = es_fp16_to_fp32(vr[i]);
            }
        }
        for (int r = 0; r < a->nrows; ++r) {
            float s[EDGESSD_FA_BLOCK];
            float m = -INFINITY;
            for (int t = 0; t < nv; ++t) {
                s[t] = dot16(a->q[r], kf + t * d, d) * a->scale + mv[t];
                if (s[t] > m) m = s[t];
            }
            const float Mn = m > M[r] ? m : M[r];
            const float ms = es_fa_rescale(M[r], Mn);
            float p[EDGESSD_FA_BLOCK] = {0};
            for (int t = 0; t < nv; ++t) p[pos[t]] = es_fa_exp(s[t] - Mn);
            S[r] = S[r] * ms + es_fa_hsum16(p);
            float * ar = acc + r * d;
            for (int64_t i = 0; i < d; ++i) ar[i] = ar[i] * ms;
            for (int t = 0; t < nv; ++t) {
                for (int64_t i = 0; i < d; ++i) ar[i] = fmaf(p[pos[t]], vf[t * d + i], ar[i]);
            }
            M[r] = Mn;
        }
    }
    for (int r = 0; r < a->nrows; ++r) {
        const float inv = S[r] == 0.0f ? 0.0f : 1.0f / S[r];
        for (int64_t i = 0; i < d; ++i) a->out[r][i] = acc[r * d + i] * inv;
    }
}

edgessd_fa_fn edgessd_fa_ref_kernel(void) { return fa_ref; }
