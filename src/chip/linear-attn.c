/*
 * linear-attn.c - the host kernels of the linear-attention ops of backend.h (Qwen3-Next / Qwen3.5 Gated DeltaNet
 * layers): L2 normalisation, the short causal depthwise conv1d with its state, and the gated delta rule in both its
 * recurrent form (one step at a time, what decoding does) and its chunked parallel form (what a prefill does). They are
 * the reference kernels of the cpu-ref backend and the wrappers' fallback for host backends without these ops; tests
 * check that the two forms agree.
 *
 * The gated delta rule (Yang, Kautz, Hatamizadeh, "Gated Delta Networks", arXiv:2412.06464), per head with state S
 * (dk x dv) and, per step t, a log decay g_t <= 0, a step size beta_t and vectors q_t, k_t (dk), v_t (dv):
 *
 *     S_t = exp(g_t) S_{t-1} + k_t d_t^T,   d_t = beta_t (v_t - exp(g_t) S_{t-1}^T k_t),   o_t = S_t^T (scale q_t)
 *
 * as transformers' torch_recurrent_gated_delta_rule computes it. The chunked form unrolls L steps from S_0 with the
 * cumulative decay G_t = g_1 + ... + g_t inside the chunk:
 *
 *     S_t = e^{G_t} S_0 + sum_{s<=t} e^{G_t - G_s} k_s d_s^T
 *     d_t + beta_t sum_{s<t} e^{G_t - G_s} (k_t . k_s) d_s = beta_t (v_t - e^{G_t} S_0^T k_t)      (lower triangular)
 *     o_t = e^{G_t} S_0^T q'_t + sum_{s<=t} e^{G_t - G_s} (q'_t . k_s) d_s,   q' = scale q
 *
 * so a chunk costs a few L x L and L x d products and one forward substitution instead of L rank-1 updates of S;
 * every exponent is <= 0, so nothing overflows. This is the same computation as transformers'
 * torch_chunk_gated_delta_rule (which inverts the triangular system with the UT transform) up to rounding.
 */
#include "chip/backend.h"
#include "chip/cpu/simd/vexp.h"

#include <math.h>

/* ==== L2 norm and conv1d ==== */

void ty__l2_norm_host(const struct ty_tensor *dst, const struct ty_tensor *x, float eps, int64_t r0, int64_t r1) {
    int64_t d = x->ne[0];
    for (int64_t r = r0; r < r1; r++) {
        int64_t i1 = r % x->ne[1], i2 = (r / x->ne[1]) % x->ne[2], i3 = r / (x->ne[1] * x->ne[2]);
        const float *xr = ty__tensor_row(x, i1, i2, i3);
        float *yr = ty__tensor_row(dst, i1, i2, i3);
        double ss = 0.0;
        for (int64_t i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        float inv = 1.0f / sqrtf((float)ss + eps); /* HF: x * rsqrt(sum(x * x) + eps) */
        for (int64_t i = 0; i < d; i++) yr[i] = xr[i] * inv;
    }
}

void ty__conv1d_causal_host(const struct ty_tensor *dst, const struct ty_tensor *x, const struct ty_tensor *w,
                            const struct ty_tensor *state, bool silu, int64_t ch0, int64_t ch1) {
    int64_t n = x->ne[1], K = w->ne[0], P = K - 1;
    /* A block of channels at a time, its weights transposed to (K, block): the inner loop then runs over contiguous
     * channels of one input column (a prefill's columns are thousands of floats apart, so a channel-outer loop would
     * touch a new cache line per multiply). */
    enum { CB = 64, KMAX = 64 };
    TY_ASSERT(K <= KMAX);
    float wt[KMAX][CB], acc[CB], t_neg[CB], e[CB];
    for (int64_t c0 = ch0; c0 < ch1; c0 += CB) {
        int64_t nc = ch1 - c0 < CB ? ch1 - c0 : CB;
        for (int64_t c = 0; c < nc; c++) {
            const float *wc = ty__tensor_row(w, c0 + c, 0, 0);
            for (int64_t j = 0; j < K; j++) wt[j][c] = wc[j];
        }
        for (int64_t t = 0; t < n; t++) {
            for (int64_t c = 0; c < nc; c++) acc[c] = 0.0f;
            /* input column t + j - P of the batch, or of the state before it */
            for (int64_t j = 0; j < K; j++) {
                int64_t col = t + j - P;
                const float *xc =
                    (const float *)(col < 0 ? ty__tensor_row(state, P + col, 0, 0) : ty__tensor_row(x, col, 0, 0)) + c0;
                const float *wj = wt[j];
                for (int64_t c = 0; c < nc; c++) acc[c] += wj[c] * xc[c];
            }
            float *out = (float *)ty__tensor_row(dst, t, 0, 0) + c0;
            if (silu) { /* silu(a) = a / (1 + e^-a), with e = exp(-|a|) <= 1 serving both signs (as the SwiGLU) */
                for (int64_t c = 0; c < nc; c++) t_neg[c] = -fabsf(acc[c]);
                ty__exp_nonpositive(t_neg, e, nc);
                for (int64_t c = 0; c < nc; c++) out[c] = (acc[c] >= 0.0f ? acc[c] : acc[c] * e[c]) / (1.0f + e[c]);
            } else {
                for (int64_t c = 0; c < nc; c++) out[c] = acc[c];
            }
        }
    }
    /* the new state of these channels: the last P inputs of [state | x], oldest first */
    const size_t bytes = (size_t)(ch1 - ch0) * sizeof(float);
    for (int64_t j = 0; j < P && ch1 > ch0; j++) {
        int64_t col = n - P + j; /* in the batch when >= 0, else column P + col of the old state */
        float *dst_col = (float *)ty__tensor_row(state, j, 0, 0) + ch0;
        if (col >= 0) {
            memcpy(dst_col, (const float *)ty__tensor_row(x, col, 0, 0) + ch0, bytes);
        } else {
            /* P + col >= j, so reading ahead in the state before overwriting it is safe */
            memmove(dst_col, (const float *)ty__tensor_row(state, P + col, 0, 0) + ch0, bytes);
        }
    }
}

/* ==== Gated delta rule ==== */

struct gdn {
    const struct ty_tensor *dst, *q, *k, *v, *g, *beta, *state;
    float scale;
};

static inline const float *vec(const struct ty_tensor *t, int64_t h, int64_t s) {
    return ty__tensor_row(t, h, s, 0);
}
static inline float scalar(const struct ty_tensor *t, int64_t h, int64_t s) {
    return ((const float *)ty__tensor_row(t, s, 0, 0))[h];
}

/* With 16 running sums, one per lane, so that the compiler can keep them in a vector register: a single sum is a
 * chain of dependent scalar adds, which without -ffast-math it may not reorder (this was half the chunked form's
 * time at dk = 128). */
static float dot(const float *a, const float *b, int64_t n) {
    enum { W = 16 };
    float acc[W] = {0};
    int64_t i = 0;
    for (; i + W <= n; i += W)
        for (int l = 0; l < W; l++) acc[l] += a[i + l] * b[i + l];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    for (int l = 0; l < W; l++) s += acc[l];
    return s;
}

/* Head h, steps [0, n), one at a time. */
static void recurrent_head(const struct gdn *a, int64_t h) {
    int64_t dk = a->q->ne[0], dv = a->v->ne[0], n = a->q->ne[2];
    int64_t hk = h / (a->v->ne[1] / a->k->ne[1]);
    float kv[TY_GDN_MAX_HEAD_DIM], delta[TY_GDN_MAX_HEAD_DIM];
    for (int64_t t = 0; t < n; t++) {
        const float *q = vec(a->q, hk, t), *k = vec(a->k, hk, t), *v = vec(a->v, h, t);
        float decay = expf(scalar(a->g, h, t)), beta = scalar(a->beta, h, t);
        for (int64_t j = 0; j < dv; j++) kv[j] = 0.0f;
        for (int64_t i = 0; i < dk; i++) {
            float *s = ty__tensor_row(a->state, i, h, 0);
            for (int64_t j = 0; j < dv; j++) {
                s[j] *= decay;
                kv[j] += s[j] * k[i];
            }
        }
        for (int64_t j = 0; j < dv; j++) delta[j] = (v[j] - kv[j]) * beta;
        float *o = ty__tensor_row(a->dst, h, t, 0);
        for (int64_t j = 0; j < dv; j++) o[j] = 0.0f;
        for (int64_t i = 0; i < dk; i++) {
            float *s = ty__tensor_row(a->state, i, h, 0);
            float qi = q[i] * a->scale;
            for (int64_t j = 0; j < dv; j++) {
                s[j] += k[i] * delta[j];
                o[j] += s[j] * qi;
            }
        }
    }
}

/* Head h in chunks of TY_GDN_CHUNK steps (see the file comment for the algebra). Per chunk, the decays e^{G_t - G_s}
 * and the products k_t . k_s and q_t . k_s are computed once, and the state is read in one pass (for both e^{G_t}
 * S_0^T k_t and S_0^T q_t) and updated in one pass, each inner loop running over a contiguous row of dv floats. */
static void chunked_head(const struct gdn *a, int64_t h) {
    enum { L = TY_GDN_CHUNK };
    int64_t dk = a->q->ne[0], dv = a->v->ne[0], n = a->q->ne[2];
    int64_t hk = h / (a->v->ne[1] / a->k->ne[1]);
    float G[L], eg[L], wend[L], beta[L], D[L][L], KK[L][L], QK[L][L], d[L][TY_GDN_MAX_HEAD_DIM];
    const float *kp[L], *qp[L];
    float *op[L];
    for (int64_t c0 = 0; c0 < n; c0 += L) {
        int64_t len = n - c0 < L ? n - c0 : L;
        float acc = 0.0f;
        for (int64_t t = 0; t < len; t++) {
            G[t] = acc += scalar(a->g, h, c0 + t);
            beta[t] = scalar(a->beta, h, c0 + t);
            kp[t] = vec(a->k, hk, c0 + t);
            qp[t] = vec(a->q, hk, c0 + t);
            op[t] = ty__tensor_row(a->dst, h, c0 + t, 0);
        }
        for (int64_t t = 0; t < len; t++) {
            eg[t] = expf(G[t]);
            wend[t] = expf(G[len - 1] - G[t]);
            for (int64_t s = 0; s <= t; s++) {
                D[t][s] = expf(G[t] - G[s]);
                KK[t][s] = dot(kp[t], kp[s], dk);
                QK[t][s] = dot(qp[t], kp[s], dk);
            }
        }
        /* one pass over S_0: d_t = S_0^T k_t and o_t = S_0^T q_t */
        for (int64_t t = 0; t < len; t++) {
            float *dt = d[t], *ot = op[t];
            for (int64_t j = 0; j < dv; j++) dt[j] = 0.0f, ot[j] = 0.0f;
        }
        for (int64_t i = 0; i < dk; i++) {
            const float *srow = ty__tensor_row(a->state, i, h, 0);
            for (int64_t t = 0; t < len; t++) {
                float *restrict dt = d[t], *restrict ot = op[t];
                float ki = kp[t][i], qi = qp[t][i];
                for (int64_t j = 0; j < dv; j++) {
                    dt[j] += ki * srow[j];
                    ot[j] += qi * srow[j];
                }
            }
        }
        /* right-hand sides beta_t (v_t - e^{G_t} S_0^T k_t), then forward substitution:
         * d_t -= sum_{s<t} beta_t e^{G_t - G_s} (k_t . k_s) d_s */
        for (int64_t t = 0; t < len; t++) {
            const float *v = vec(a->v, h, c0 + t);
            float *restrict dt = d[t];
            float b = beta[t], e = eg[t];
            for (int64_t j = 0; j < dv; j++) dt[j] = b * (v[j] - e * dt[j]);
            for (int64_t s = 0; s < t; s++) {
                const float *restrict ds = d[s];
                float c = b * D[t][s] * KK[t][s];
                for (int64_t j = 0; j < dv; j++) dt[j] -= c * ds[j];
            }
        }
        /* outputs: scale (e^{G_t} S_0^T q_t + sum_{s<=t} e^{G_t - G_s} (q_t . k_s) d_s) */
        for (int64_t t = 0; t < len; t++) {
            float *restrict ot = op[t];
            float e = a->scale * eg[t];
            for (int64_t j = 0; j < dv; j++) ot[j] *= e;
            for (int64_t s = 0; s <= t; s++) {
                const float *restrict ds = d[s];
                float c = a->scale * D[t][s] * QK[t][s];
                for (int64_t j = 0; j < dv; j++) ot[j] += c * ds[j];
            }
        }
        /* the state at the chunk's end: e^{G_L} S_0 + sum_t e^{G_L - G_t} k_t d_t^T */
        float elast = eg[len - 1];
        for (int64_t i = 0; i < dk; i++) {
            float *restrict srow = ty__tensor_row(a->state, i, h, 0);
            for (int64_t j = 0; j < dv; j++) srow[j] *= elast;
            for (int64_t t = 0; t < len; t++) {
                const float *restrict dt = d[t];
                float c = wend[t] * kp[t][i];
                for (int64_t j = 0; j < dv; j++) srow[j] += c * dt[j];
            }
        }
    }
}

void ty__gated_delta_host(const struct ty_tensor *dst, const struct ty_tensor *q, const struct ty_tensor *k,
                          const struct ty_tensor *v, const struct ty_tensor *g, const struct ty_tensor *beta,
                          const struct ty_tensor *state, float scale, enum ty_gdn_form form, int64_t h0, int64_t h1) {
    struct gdn a = {dst, q, k, v, g, beta, state, scale};
    bool chunked = form == TY_GDN_CHUNKED || (form == TY_GDN_AUTO && q->ne[2] >= TY_GDN_CHUNK);
    for (int64_t h = h0; h < h1; h++) {
        if (chunked)
            chunked_head(&a, h);
        else
            recurrent_head(&a, h);
    }
}
