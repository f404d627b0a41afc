/*
 * qwen-next.c - the hybrid decoder layer of Qwen3-Next and Qwen3.5 and the per-context recurrent state it keeps,
 * following Hugging Face transformers' Qwen3NextDecoderLayer and Qwen3_5(Moe)DecoderLayer. Every
 * full_attention_interval-th layer is gated full attention, the others Gated DeltaNet linear attention; either is
 * followed by a MoE block with a shared expert (or a dense FFN):
 *
 *   Gated DeltaNet (Qwen3NextGatedDeltaNet):
 *     [q k v] = h Wqkv, z = h Wgate,  [b a] = h Wssm_ba     (ssm_ba grouped per key head, de-interleaved here; the
 *                                                            legacy files' grouped [q k v z] = h Wssm_in likewise)
 *     q k v = silu(causal_conv1d([q k v]))                   (kernel K, state: the last K - 1 inputs)
 *     q, k = l2norm(q), l2norm(k);  beta = sigmoid(b);  g = -exp(A_log) * softplus(a + dt_bias)
 *     o = gated_delta_rule(q, k, v, g, beta)                 (state S per value head, dk x dv)
 *     out = (rms_norm(o) * w * silu(z)) Wssm_out
 *   gated attention (Qwen3NextAttention):
 *     [q gate] = h Wq (per head);  k, v = h Wk, h Wv;  q, k = rms_norm per head, partial RoPE (rope.dimension_count)
 *     out = (attention(q, k, v) * sigmoid(gate)) Wo
 *   MoE (Qwen3NextSparseMoeBlock): the experts of qwen.c's ty__qwen_moe, plus sigmoid(h w_gate_shexp) * shared_ffn(h)
 *
 * Qwen3.5 (qwen35, qwen35moe) has separate b and a projections instead of the grouped ssm_ba, and its files store the
 * value heads in llama.cpp's tiled order (value head h reads key head h mod key heads; see docs/gguf-names.md), so
 * the key heads are repeated whole before the delta rule. Its rotary embedding is multimodal,
 * which for text alone is the plain partial rotary embedding used here.
 *
 * Prefill runs the chunked form of the delta rule and decoding the recurrent one (the backend op picks by length; the
 * two agree to rounding, tests/model/test_next.c). The elementwise steps without a backend op (the gates' sigmoid and
 * softplus, a few floats per token and head) are computed on the host between ops, as the router's top-k is.
 *
 * State: per Gated DeltaNet layer a conv state (conv channels x K - 1) and a delta-rule state (dv x dk x value heads),
 * fixed in size whatever the context length. It cannot be rewound to an earlier position, so the context keeps the
 * tokens it has seen, and ty__next_rewind recomputes the state from position 0 (ty_context_truncate, or an evaluation
 * that failed half-way). The full-attention layers keep their KV cache as the other models do.
 */
#include "model/model-impl.h"

#include <math.h>

#define OP(call) TY_TRY(call)

struct ty_next_state {
    struct ty_buffer *state_buf;
    struct ty_buffer *act_buf;
    struct ty_tensor *conv_state; /* (n_layer) each (conv_dim, K - 1); unused for full-attention layers */
    struct ty_tensor *ssm_state;  /* (n_layer) each (dv, dk, hv) */
    /* activations, one column per token of a batch */
    struct ty_tensor qkvz;     /* (conv_dim + hv * dv, n_batch) output of ssm_in */
    struct ty_tensor ba;       /* (2 * hv, n_batch) output of ssm_ba */
    struct ty_tensor mixed;    /* (conv_dim, n_batch) [q | k | v] in conv channel order */
    struct ty_tensor conv;     /* (conv_dim, n_batch) after the conv and SiLU */
    struct ty_tensor z;        /* (dv, hv, n_batch) output gate */
    struct ty_tensor core;     /* (dv, hv, n_batch) delta-rule output */
    struct ty_tensor g;        /* (hv, n_batch) log decay */
    struct ty_tensor beta;     /* (hv, n_batch) */
    struct ty_tensor qx;       /* (dk, hv, n_batch) qwen35: the queries repeated per value head (tiled) */
    struct ty_tensor kx;       /* (dk, hv, n_batch) the keys likewise */
    struct ty_tensor qg;       /* (2 * head_dim * n_head, n_batch) output of wq: per head [query | gate] */
    struct ty_tensor agate;    /* (head_dim, n_head, n_batch) */
    struct ty_tensor sh_gate;  /* (n_ff_shexp, n_batch) */
    struct ty_tensor sh_up;    /* (n_ff_shexp, n_batch) */
    struct ty_tensor sh_out;   /* (n_embd, n_batch) */
    struct ty_tensor sh_logit; /* (1, n_batch) */
    struct ty_tensor sh_scale; /* (n_batch) */
    struct ty_tensor cols;     /* (n_batch) I32: 0, 1, 2, ... */
    float *host;               /* staging for the host steps, (host_len) floats */
    size_t host_len;
    float *zeros; /* (zeros_len) for clearing a state */
    size_t zeros_len;
    int32_t *tokens; /* (n_ctx) the tokens at positions 0 .. n_past */
    bool rewinding;
};

/* ==== Context ==== */

static int64_t conv_dim(const struct ty_hparams *hp) {
    return 2 * (int64_t)hp->ssm_head_k * hp->ssm_dim_k + (int64_t)hp->ssm_head_v * hp->ssm_dim_v;
}

static enum ty_status clear_state(struct ty_context *ctx) {
    struct ty_next_state *s = ctx->next;
    for (int il = 0; il < ctx->model->hp.n_layer; il++) {
        if (!ctx->model->layers[il].recurrent) continue;
        OP(ty__backend_tensor_set(ctx->be, &s->conv_state[il], s->zeros, 0, ty__tensor_size(&s->conv_state[il])));
        OP(ty__backend_tensor_set(ctx->be, &s->ssm_state[il], s->zeros, 0, ty__tensor_size(&s->ssm_state[il])));
    }
    return TY_OK;
}

enum ty_status ty__next_context_init(struct ty_context *ctx) {
    const struct ty_model *m = ctx->model;
    const struct ty_hparams *hp = &m->hp;
    if (hp->full_attn_interval == 0) return TY_OK;
    struct ty_next_state *s = ty__calloc(1, sizeof *s);
    if (!s) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the recurrent state");
    ctx->next = s;
    int64_t nb = ctx->n_batch, cd = conv_dim(hp), hv = hp->ssm_head_v, dv = hp->ssm_dim_v, dk = hp->ssm_dim_k;
    int64_t K1 = hp->ssm_conv_kernel - 1; /* >= 1: the loader asks for a kernel of 2 or more */
    s->conv_state = ty__calloc((size_t)hp->n_layer, sizeof *s->conv_state);
    s->ssm_state = ty__calloc((size_t)hp->n_layer, sizeof *s->ssm_state);
    s->tokens = ty__calloc((size_t)ctx->n_ctx, sizeof *s->tokens);
    if (!s->conv_state || !s->ssm_state || !s->tokens)
        return ty__error(TY_ERR_NO_MEMORY, "out of memory for the recurrent state of %d layers", hp->n_layer);

    struct ty_layout lay = {0};
    for (int il = 0; il < hp->n_layer; il++) {
        if (!m->layers[il].recurrent) continue;
        ty__layout_place(&lay, &s->conv_state[il], TY_TYPE_F32, cd, K1, 1);
        ty__layout_place(&lay, &s->ssm_state[il], TY_TYPE_F32, dv, dk, hv);
    }
    if (lay.overflow) return ty__error(TY_ERR_NO_MEMORY, "the recurrent state does not fit in memory");
    TY_TRY(ty__backend_buffer_alloc(ctx->be, lay.size ? lay.size : 64, &s->state_buf));
    for (int il = 0; il < hp->n_layer; il++) {
        s->conv_state[il].buf = s->state_buf;
        s->ssm_state[il].buf = s->state_buf;
    }
    size_t state_bytes = lay.size;

    int64_t dh = hp->head_dim_k, n_sh = hp->n_ff_shexp > 0 ? hp->n_ff_shexp : 1;
    lay = (struct ty_layout){0};
    ty__layout_place(&lay, &s->qkvz, TY_TYPE_F32, cd + hv * dv, nb, 1);
    ty__layout_place(&lay, &s->ba, TY_TYPE_F32, 2 * hv, nb, 1);
    ty__layout_place(&lay, &s->mixed, TY_TYPE_F32, cd, nb, 1);
    ty__layout_place(&lay, &s->conv, TY_TYPE_F32, cd, nb, 1);
    ty__layout_place(&lay, &s->z, TY_TYPE_F32, dv, hv, nb);
    ty__layout_place(&lay, &s->core, TY_TYPE_F32, dv, hv, nb);
    ty__layout_place(&lay, &s->g, TY_TYPE_F32, hv, nb, 1);
    ty__layout_place(&lay, &s->beta, TY_TYPE_F32, hv, nb, 1);
    ty__layout_place(&lay, &s->qx, TY_TYPE_F32, dk, hp->ssm_v_tiled ? hv : 1, hp->ssm_v_tiled ? nb : 1);
    ty__layout_place(&lay, &s->kx, TY_TYPE_F32, dk, hp->ssm_v_tiled ? hv : 1, hp->ssm_v_tiled ? nb : 1);
    ty__layout_place(&lay, &s->qg, TY_TYPE_F32, 2 * dh * hp->n_head, nb, 1);
    ty__layout_place(&lay, &s->agate, TY_TYPE_F32, dh, hp->n_head, nb);
    ty__layout_place(&lay, &s->sh_gate, TY_TYPE_F32, n_sh, nb, 1);
    ty__layout_place(&lay, &s->sh_up, TY_TYPE_F32, n_sh, nb, 1);
    ty__layout_place(&lay, &s->sh_out, TY_TYPE_F32, hp->n_embd, nb, 1);
    ty__layout_place(&lay, &s->sh_logit, TY_TYPE_F32, 1, nb, 1);
    ty__layout_place(&lay, &s->sh_scale, TY_TYPE_F32, nb, 1, 1);
    ty__layout_place(&lay, &s->cols, TY_TYPE_I32, nb, 1, 1);
    if (lay.overflow)
        return ty__error(TY_ERR_NO_MEMORY, "linear-attention activations for a batch of %d tokens do not fit in memory",
                         ctx->n_batch);
    TY_TRY(ty__backend_buffer_alloc(ctx->be, lay.size, &s->act_buf));
    struct ty_tensor *all[] = {&s->qkvz,   &s->ba,       &s->mixed,    &s->conv,  &s->z,       &s->core,
                               &s->g,      &s->beta,     &s->qg,       &s->agate, &s->sh_gate, &s->sh_up,
                               &s->sh_out, &s->sh_logit, &s->sh_scale, &s->cols,  &s->qx,      &s->kx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) all[i]->buf = s->act_buf;

    /* host staging: the larger of the gate steps of a batch */
    size_t need = (size_t)(2 * dh * hp->n_head * nb);
    if ((size_t)(4 * hv * nb + 2 * hv) > need) need = (size_t)(4 * hv * nb + 2 * hv);
    if ((size_t)(2 * nb) > need) need = (size_t)(2 * nb);
    s->host_len = need;
    s->zeros_len = (size_t)(cd * K1 > dv * dk * hv ? cd * K1 : dv * dk * hv);
    s->host = ty__calloc(s->host_len, sizeof(float));
    s->zeros = ty__calloc(s->zeros_len, sizeof(float));
    if (!s->host || !s->zeros) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the linear-attention staging");
    int32_t *ids = (int32_t *)s->host;
    for (int64_t i = 0; i < nb; i++) ids[i] = (int32_t)i;
    OP(ty__backend_tensor_set(ctx->be, &s->cols, ids, 0, (size_t)nb * sizeof(int32_t)));
    TY_TRY(clear_state(ctx));
    TY_LOG_I("recurrent state: %d linear-attention layers, %.1f MiB; activations %.1f MiB", hp->n_recurrent,
             (double)state_bytes / (1 << 20), (double)lay.size / (1 << 20));
    return TY_OK;
}

void ty__next_context_free(struct ty_context *ctx) {
    struct ty_next_state *s = ctx->next;
    if (!s) return;
    ty__backend_buffer_free(s->state_buf);
    ty__backend_buffer_free(s->act_buf);
    ty_free(s->conv_state);
    ty_free(s->ssm_state);
    ty_free(s->tokens);
    ty_free(s->host);
    ty_free(s->zeros);
    ty_free(s);
    ctx->next = NULL;
}

void ty__next_record(struct ty_context *ctx, const int32_t *tokens, int32_t n) {
    int32_t *dst = ctx->next->tokens + ctx->n_past;
    TY_ASSERT(ctx->n_past + n <= ctx->n_ctx);
    if (dst != tokens) memmove(dst, tokens, (size_t)n * sizeof *tokens);
}

enum ty_status ty__next_rewind(struct ty_context *ctx, int32_t n_past) {
    struct ty_next_state *s = ctx->next;
    TY_ASSERT(s && n_past >= 0 && n_past <= ctx->n_past);
    ctx->n_past = 0;
    TY_TRY(clear_state(ctx));
    /* a failure while recomputing leaves the context empty (consistent) rather than recursing */
    if (s->rewinding || n_past == 0) return TY_OK;
    s->rewinding = true;
    enum ty_status st = ty_context_eval(ctx, s->tokens, (size_t)n_past, TY_LOGITS_NONE, NULL);
    s->rewinding = false;
    if (st != TY_OK) {
        ctx->n_past = 0;
        (void)clear_state(ctx);
        return ty__error_prefix(st, "recomputing the recurrent state of %d positions", n_past);
    }
    return TY_OK;
}

/* ==== Forward ==== */

static struct ty_tensor cols(const struct ty_tensor *t, int64_t first, int64_t n) {
    return ty__tensor_slice(t, 1, first, n);
}

/* A strided view of `t`'s bytes from byte `offs` on: ne0 x ne1 x ne2 F32 with byte strides nb1, nb2. */
static struct ty_tensor view3(const struct ty_tensor *t, size_t offs, int64_t ne0, int64_t ne1, int64_t ne2, size_t nb1,
                              size_t nb2) {
    struct ty_tensor v = *t;
    v.offs = t->offs + offs;
    v.ne[0] = ne0, v.ne[1] = ne1, v.ne[2] = ne2, v.ne[3] = 1;
    v.nb[0] = sizeof(float), v.nb[1] = nb1, v.nb[2] = nb2, v.nb[3] = nb2 * (size_t)ne2;
    return v;
}

static inline float sigmoidf(float x) {
    return 1.0f / (1.0f + expf(-x));
}

/* torch.nn.functional.softplus with its default threshold: x past 20 is returned as is. */
static inline float softplusf(float x) {
    return x > 20.0f ? x : log1pf(expf(x));
}

/* silu(gate) * up, then (.., n) W into out: the dense FFN and the shared expert. */
static enum ty_status swiglu_ffn(struct ty_backend *be, const struct ty_tensor *wg, const struct ty_tensor *wu,
                                 const struct ty_tensor *wd, const struct ty_tensor *xn, const struct ty_tensor *gate,
                                 const struct ty_tensor *up, const struct ty_tensor *out) {
    OP(ty__backend_matmul_swiglu(be, gate, wg, wu, xn, up)); /* gate and up in one pass over xn */
    return ty__backend_matmul(be, out, wd, gate, NULL);
}

/* qwen3next's grouped input projection (llama.cpp's legacy layout): ssm_in gives per key head [q (dk) | k (dk) |
 * v (r dv) | z (r dv)], which go to `mixed` in conv order (all q, then all k, then all v; value head g r + j being the
 * j-th of key head g's group) and to z. */
static enum ty_status split_qkvz(struct ty_context *ctx, const struct ty_layer *l, int32_t n,
                                 const struct ty_tensor *xn, const struct ty_tensor *mixed, const struct ty_tensor *z) {
    const struct ty_hparams *hp = &ctx->model->hp;
    struct ty_next_state *s = ctx->next;
    struct ty_backend *be = ctx->be;
    int64_t hk = hp->ssm_head_k, hv = hp->ssm_head_v, dk = hp->ssm_dim_k, dv = hp->ssm_dim_v, r = hv / hk;
    int64_t kd = hk * dk, cd = conv_dim(hp), qkvz_dim = cd + hv * dv;
    const size_t F = sizeof(float);
    struct ty_tensor qkvz = cols(&s->qkvz, 0, n);
    OP(ty__backend_matmul(be, &qkvz, l->ssm_in, xn, NULL));
    size_t group = (size_t)(2 * dk + 2 * r * dv) * F, col_in = (size_t)qkvz_dim * F, col_mx = (size_t)cd * F;
    struct ty_tensor src, dst;
    src = view3(&qkvz, 0, dk, hk, n, group, col_in);
    dst = view3(mixed, 0, dk, hk, n, (size_t)dk * F, col_mx);
    OP(ty__backend_copy(be, &dst, &src));
    src = view3(&qkvz, (size_t)dk * F, dk, hk, n, group, col_in);
    dst = view3(mixed, (size_t)kd * F, dk, hk, n, (size_t)dk * F, col_mx);
    OP(ty__backend_copy(be, &dst, &src));
    src = view3(&qkvz, (size_t)(2 * dk) * F, r * dv, hk, n, group, col_in);
    dst = view3(mixed, (size_t)(2 * kd) * F, r * dv, hk, n, (size_t)(r * dv) * F, col_mx);
    OP(ty__backend_copy(be, &dst, &src));
    src = view3(&qkvz, (size_t)(2 * dk + r * dv) * F, r * dv, hk, n, group, col_in);
    dst = view3(z, 0, r * dv, hk, n, (size_t)(r * dv) * F, (size_t)(hv * dv) * F);
    return ty__backend_copy(be, &dst, &src);
}

/* qwen3next's ssm_ba gives per key head [b (r) | a (r)] (computed into ba), which come back to the host as hb, ha
 * (n x hv). */
static enum ty_status split_ba(struct ty_context *ctx, int32_t n, const struct ty_tensor *ba, float *hb, float *ha,
                               float *hba) {
    const struct ty_hparams *hp = &ctx->model->hp;
    int64_t hk = hp->ssm_head_k, hv = hp->ssm_head_v, r = hv / hk;
    OP(ty__backend_tensor_get(ctx->be, ba, hba, 0, (size_t)(2 * hv * n) * sizeof(float)));
    for (int64_t t = 0; t < n; t++) {
        for (int64_t g = 0; g < hk; g++) {
            for (int64_t j = 0; j < r; j++) {
                hb[t * hv + g * r + j] = hba[t * 2 * hv + g * 2 * r + j];
                ha[t * hv + g * r + j] = hba[t * 2 * hv + g * 2 * r + r + j];
            }
        }
    }
    return TY_OK;
}

/* The Gated DeltaNet block of layer il over normed columns xn (n_embd, n), its output into proj (n_embd, n). */
static enum ty_status delta_net(struct ty_context *ctx, int il, int32_t n, const struct ty_tensor *xn,
                                const struct ty_tensor *proj) {
    const struct ty_hparams *hp = &ctx->model->hp;
    const struct ty_layer *l = &ctx->model->layers[il];
    struct ty_next_state *s = ctx->next;
    struct ty_backend *be = ctx->be;
    int64_t hk = hp->ssm_head_k, hv = hp->ssm_head_v, dk = hp->ssm_dim_k, dv = hp->ssm_dim_v, r = hv / hk;
    int64_t kd = hk * dk, cd = conv_dim(hp);
    const size_t F = sizeof(float), col_mx = (size_t)cd * F;

    struct ty_tensor mixed = cols(&s->mixed, 0, n), z = ty__tensor_slice(&s->z, 2, 0, n);
    struct ty_tensor gt = cols(&s->g, 0, n), bt = cols(&s->beta, 0, n);
    /* host staging: b and a per token and value head (then beta and the log decay), A and dt_bias, ssm_ba's output */
    float *hb = s->host, *ha = hb + hv * n, *hA = ha + hv * n, *hdt = hA + hv, *hba = hdt + hv;
    /* the input projections of xn, in one pass over it (matmul_multi): [q | k | v] in conv order and z from their
     * own projections (else the grouped ssm_in, split afterwards), b and a from their own (qwen35) or from ssm_ba */
    struct ty_tensor z2 = ty__tensor_reshape(&s->z, hv * dv, ctx->n_batch, 1, 1), ba = cols(&s->ba, 0, n);
    z2 = cols(&z2, 0, n);
    const struct ty_tensor *pd[4], *pw[4];
    int np = 0;
    if (l->ssm_qkv) pd[np] = &mixed, pw[np++] = l->ssm_qkv, pd[np] = &z2, pw[np++] = l->ssm_gate;
    if (l->ssm_beta)
        pd[np] = &bt, pw[np++] = l->ssm_beta, pd[np] = &gt, pw[np++] = l->ssm_alpha;
    else
        pd[np] = &ba, pw[np++] = l->ssm_ba;
    OP(ty__backend_matmul_multi(be, np, pd, pw, xn, NULL));
    if (!l->ssm_qkv) TY_TRY(split_qkvz(ctx, l, n, xn, &mixed, &z));
    if (l->ssm_beta) {
        OP(ty__backend_tensor_get(be, &bt, hb, 0, (size_t)(hv * n) * F));
        OP(ty__backend_tensor_get(be, &gt, ha, 0, (size_t)(hv * n) * F));
    } else {
        TY_TRY(split_ba(ctx, n, &ba, hb, ha, hba));
    }
    OP(ty__backend_tensor_get(be, l->ssm_a, hA, 0, (size_t)hv * F));
    OP(ty__backend_tensor_get(be, l->ssm_dt, hdt, 0, (size_t)hv * F));
    for (int64_t t = 0; t < n; t++) {
        for (int64_t h = 0; h < hv; h++) {
            float a = ha[t * hv + h];
            hb[t * hv + h] = sigmoidf(hb[t * hv + h]);
            ha[t * hv + h] = hA[h] * softplusf(a + hdt[h]);
        }
    }
    OP(ty__backend_tensor_set(be, &gt, ha, 0, (size_t)(hv * n) * F));
    OP(ty__backend_tensor_set(be, &bt, hb, 0, (size_t)(hv * n) * F));

    struct ty_tensor conv = cols(&s->conv, 0, n);
    OP(ty__backend_conv1d_causal(be, &conv, &mixed, l->ssm_conv1d, &s->conv_state[il], true));
    struct ty_tensor q = view3(&conv, 0, dk, hk, n, (size_t)dk * F, col_mx);
    struct ty_tensor k = view3(&conv, (size_t)kd * F, dk, hk, n, (size_t)dk * F, col_mx);
    struct ty_tensor v = view3(&conv, (size_t)(2 * kd) * F, dv, hv, n, (size_t)dv * F, col_mx);
    OP(ty__backend_l2_norm(be, &q, &q, 1e-6f)); /* transformers' l2norm eps */
    OP(ty__backend_l2_norm(be, &k, &k, 1e-6f));
    if (hp->ssm_v_tiled && r > 1) {
        /* value head h reads key head h % hk: the key heads repeated whole, r times over (ggml_repeat's order), so
         * that the op's value head h reads its own copy */
        struct ty_tensor qx = ty__tensor_slice(&s->qx, 2, 0, n), kx = ty__tensor_slice(&s->kx, 2, 0, n);
        for (int64_t j = 0; j < r; j++) {
            struct ty_tensor dq = ty__tensor_slice(&qx, 1, j * hk, hk), dkx = ty__tensor_slice(&kx, 1, j * hk, hk);
            OP(ty__backend_copy(be, &dq, &q));
            OP(ty__backend_copy(be, &dkx, &k));
        }
        q = qx;
        k = kx;
    }

    struct ty_tensor core = ty__tensor_slice(&s->core, 2, 0, n);
    OP(ty__backend_gated_delta(be, &core, &q, &k, &v, &gt, &bt, &s->ssm_state[il], (float)(1.0 / sqrt((double)dk))));
    /* Qwen3NextRMSNormGated: the norm (times its weight) first, then the gate */
    OP(ty__backend_rms_norm(be, &core, &core, l->ssm_norm, hp->norm_eps));
    OP(ty__backend_swiglu(be, &core, &z, &core));
    struct ty_tensor core2 = ty__tensor_reshape(&s->core, hv * dv, ctx->n_batch, 1, 1);
    core2 = cols(&core2, 0, n);
    return ty__backend_matmul(be, proj, l->ssm_out, &core2, NULL);
}

/* Gated full attention of layer il over normed columns xn, its output into proj. */
static enum ty_status gated_attention(struct ty_context *ctx, int il, int32_t n, const struct ty_tensor *xn,
                                      const struct ty_tensor *pos, const struct ty_tensor *proj) {
    const struct ty_model *m = ctx->model;
    const struct ty_hparams *hp = &m->hp;
    const struct ty_layer *l = &m->layers[il];
    struct ty_next_state *s = ctx->next;
    struct ty_backend *be = ctx->be;
    int64_t dh = hp->head_dim_k, nh = hp->n_head;
    const size_t F = sizeof(float);

    struct ty_tensor qg = cols(&s->qg, 0, n);
    OP(ty__backend_matmul(be, &qg, l->wq, xn, NULL));
    struct ty_tensor q3 = ty__tensor_slice(&ctx->q, 2, 0, n), gate3 = ty__tensor_slice(&s->agate, 2, 0, n);
    size_t head = (size_t)(2 * dh) * F, col = (size_t)(2 * dh * nh) * F;
    struct ty_tensor src = view3(&qg, 0, dh, nh, n, head, col);
    OP(ty__backend_copy(be, &q3, &src));
    src = view3(&qg, (size_t)dh * F, dh, nh, n, head, col);
    OP(ty__backend_copy(be, &gate3, &src));

    struct ty_tensor k3 = ty__tensor_slice(&ctx->k, 2, 0, n), v3 = ty__tensor_slice(&ctx->v, 2, 0, n);
    struct ty_tensor k2 = ty__tensor_reshape(&ctx->k, ctx->k.ne[0] * ctx->k.ne[1], ctx->k.ne[2], 1, 1);
    struct ty_tensor v2 = ty__tensor_reshape(&ctx->v, ctx->v.ne[0] * ctx->v.ne[1], ctx->v.ne[2], 1, 1);
    k2 = cols(&k2, 0, n);
    v2 = cols(&v2, 0, n);
    OP(ty__backend_matmul(be, &k2, l->wk, xn, NULL));
    OP(ty__backend_matmul(be, &v2, l->wv, xn, NULL));
    OP(ty__backend_rms_norm(be, &q3, &q3, l->q_norm, hp->norm_eps));
    OP(ty__backend_rms_norm(be, &k3, &k3, l->k_norm, hp->norm_eps));
    OP(ty__backend_rope(be, &q3, &q3, pos, &m->rope));
    OP(ty__backend_rope(be, &k3, &k3, pos, &m->rope));

    struct ty_tensor att3 = ty__tensor_slice(&ctx->att, 2, 0, n);
    TY_TRY(ty__cache_attend(ctx, il, &q3, &k3, &v3, &att3));

    /* the output gate: att * sigmoid(gate), in place where the backend's memory is the host's (a prefill's columns
     * are megabytes: copying them out and back would cost more than the gate), else through the staging buffer */
    size_t len = (size_t)(dh * nh * n);
    if (att3.buf->host && gate3.buf->host) {
        OP(ty__backend_sync(be));
        float *ha = ty__tensor_host(&att3);
        const float *hgate = ty__tensor_host(&gate3);
        for (size_t i = 0; i < len; i++) ha[i] *= sigmoidf(hgate[i]);
    } else {
        float *ha = s->host, *hgate = ha + len;
        OP(ty__backend_tensor_get(be, &att3, ha, 0, len * F));
        OP(ty__backend_tensor_get(be, &gate3, hgate, 0, len * F));
        for (size_t i = 0; i < len; i++) ha[i] *= sigmoidf(hgate[i]);
        OP(ty__backend_tensor_set(be, &att3, ha, 0, len * F));
    }
    struct ty_tensor att2 = ty__tensor_reshape(&ctx->att, dh * nh, ctx->att.ne[2], 1, 1);
    att2 = cols(&att2, 0, n);
    return ty__backend_matmul(be, proj, l->wo, &att2, NULL);
}

/* The shared expert of a MoE layer, gated per token by sigmoid(h w), added into x. */
static enum ty_status shared_expert(struct ty_context *ctx, const struct ty_layer *l, int32_t n,
                                    const struct ty_tensor *xn, const struct ty_tensor *x) {
    struct ty_next_state *s = ctx->next;
    struct ty_backend *be = ctx->be;
    struct ty_tensor gate = cols(&s->sh_gate, 0, n), up = cols(&s->sh_up, 0, n), out = cols(&s->sh_out, 0, n);
    OP(swiglu_ffn(be, l->ffn_gate_shexp, l->ffn_up_shexp, l->ffn_down_shexp, xn, &gate, &up, &out));
    struct ty_tensor logit = cols(&s->sh_logit, 0, n);
    OP(ty__backend_matmul(be, &logit, l->ffn_gate_inp_shexp, xn, NULL));
    OP(ty__backend_tensor_get(be, &logit, s->host, 0, (size_t)n * sizeof(float)));
    for (int32_t t = 0; t < n; t++) s->host[t] = sigmoidf(s->host[t]);
    struct ty_tensor scale = ty__tensor_slice(&s->sh_scale, 0, 0, n), ids = ty__tensor_slice(&s->cols, 0, 0, n);
    OP(ty__backend_tensor_set(be, &scale, s->host, 0, (size_t)n * sizeof(float)));
    return ty__backend_scatter_add(be, x, &out, &ids, &scale);
}

enum ty_status ty__next_layer_forward(struct ty_context *ctx, int il, int32_t n, const struct ty_tensor *pos) {
    const struct ty_model *m = ctx->model;
    const struct ty_hparams *hp = &m->hp;
    const struct ty_layer *l = &m->layers[il];
    struct ty_backend *be = ctx->be;
    struct ty_tensor x = cols(&ctx->x, 0, n), xn = cols(&ctx->xn, 0, n), proj = cols(&ctx->proj, 0, n);

    OP(ty__backend_rms_norm(be, &xn, &x, l->attn_norm, hp->norm_eps));
    if (l->recurrent)
        TY_TRY(delta_net(ctx, il, n, &xn, &proj));
    else
        TY_TRY(gated_attention(ctx, il, n, &xn, pos, &proj));
    OP(ty__backend_add(be, &x, &x, &proj));

    OP(ty__backend_rms_norm(be, &xn, &x, l->ffn_norm, hp->norm_eps));
    if (l->ffn_gate_inp) {
        TY_TRY(ty__qwen_moe(ctx, l, n, &xn, &x));
        return l->ffn_gate_shexp ? shared_expert(ctx, l, n, &xn, &x) : TY_OK;
    }
    struct ty_tensor gate = cols(&ctx->gate, 0, n), up = cols(&ctx->up, 0, n);
    OP(swiglu_ffn(be, l->w_gate, l->w_up, l->w_down, &xn, &gate, &up, &proj));
    return ty__backend_add(be, &x, &x, &proj);
}
