/*
 * qwen.c - the Qwen2 / Qwen3 / Qwen3-MoE decoder forward pass, written once against the backend interface
 * (chip/backend.h) so that every backend runs the same graph. It follows Hugging Face transformers' Qwen2Model /
 * Qwen3Model / Qwen3MoeModel:
 *
 *   x = embed(tokens)
 *   per layer:  h = rms_norm(x);  q, k, v = h Wq + bq, h Wk + bk, h Wv + bv      (biases: Qwen2)
 *               q, k = rms_norm per head (q_norm, k_norm)                        (Qwen3 only)
 *               q, k = rope(q), rope(k);  cache <- k, v
 *               x = x + attention(q, cache) Wo
 *               h = rms_norm(x);  x = x + (silu(h Wgate) * h Wup) Wdown
 *   logits = rms_norm(x) Woutput                                                 (Woutput = embed when tied)
 *
 * Qwen3-MoE (Qwen3MoeSparseMoeBlock) replaces the FFN of its sparse layers by experts: p = softmax(h Wrouter) in f32,
 * the top-k experts of each token with weights p_e (divided by their sum when norm_topk_prob), and
 * x = x + sum over chosen e of p_e * (silu(h Wgate_e) * h Wup_e) Wdown_e. The router logits come back to the host,
 * which picks the experts and groups the batch's tokens by expert; each chosen expert then runs once on its own
 * tokens (gathered with get_rows), so one token reads only its k experts' weights and a batch reads each chosen
 * expert once, and scatter_add adds the weighted outputs into the residual stream.
 *
 * Keys and values are always read back from the cache, also for the tokens of the current batch, so a batch and
 * token-by-token decoding see the same (possibly f16-rounded) values.
 *
 * The same layers also run a batch of many sequences (ty__qwen_forward_batch, for the serving engine): each token
 * carries its own position, and with ctx->paged set the attention step writes and reads the sequences' blocks of a
 * shared KV pool (batch.c) instead of the context's own cache. Everything else is one op over the whole batch.
 */
#include "model/model-impl.h"

#include <math.h>

#define OP(call) TY_TRY(call)

/* The first n token columns of a (d, n_batch) activation. */
static struct ty_tensor cols(const struct ty_tensor *t, int64_t first, int64_t n) {
    return ty__tensor_slice(t, 1, first, n);
}

/* A (head_dim, n_heads, n_batch) activation as (head_dim * n_heads, n) columns for a matrix product. */
static struct ty_tensor flat_cols(const struct ty_tensor *t, int64_t n) {
    struct ty_tensor f = ty__tensor_reshape(t, t->ne[0] * t->ne[1], t->ne[2], 1, 1);
    return ty__tensor_slice(&f, 1, 0, n);
}

/* Top-k of one token's router logits: softmax over all experts (as HF, in f32 with the maximum subtracted), the k
 * largest probabilities (the lower expert id first on a tie), renormalised to sum to 1 when `norm`. */
static void route_token(const float *logits, int32_t n_expert, int32_t k, bool norm, int32_t *sel, float *w) {
    float max = logits[0];
    for (int32_t e = 1; e < n_expert; e++) max = logits[e] > max ? logits[e] : max;
    float sum = 0.0f;
    for (int32_t e = 0; e < n_expert; e++) sum += expf(logits[e] - max);
    float total = 0.0f;
    for (int32_t i = 0; i < k; i++) {
        int32_t best = -1;
        for (int32_t e = 0; e < n_expert; e++) {
            bool taken = false;
            for (int32_t j = 0; j < i && !taken; j++) taken = sel[j] == e;
            if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
        }
        sel[i] = best;
        w[i] = expf(logits[best] - max) / sum;
        total += w[i];
    }
    if (norm)
        for (int32_t i = 0; i < k; i++) w[i] /= total;
}

/* The expert FFN of the normed columns xn (n_embd, n), added into x. */
enum ty_status ty__qwen_moe(struct ty_context *ctx, const struct ty_layer *l, int32_t n, const struct ty_tensor *xn,
                            const struct ty_tensor *x) {
    const struct ty_hparams *hp = &ctx->model->hp;
    struct ty_backend *be = ctx->be;
    int32_t n_exp = hp->n_expert, k = hp->n_expert_used;

    struct ty_tensor router = cols(&ctx->router, 0, n);
    OP(ty__backend_matmul(be, &router, l->ffn_gate_inp, xn, NULL));
    OP(ty__backend_tensor_get(be, &router, ctx->host_router, 0, (size_t)n * (size_t)n_exp * sizeof(float)));
    int32_t *count = ctx->host_count;
    memset(count, 0, ((size_t)n_exp + 1) * sizeof *count);
    for (int32_t t = 0; t < n; t++) {
        int32_t *sel = ctx->host_sel + (size_t)t * k;
        route_token(ctx->host_router + (size_t)t * n_exp, n_exp, k, hp->expert_norm, sel,
                    ctx->host_selw + (size_t)t * k);
        for (int32_t i = 0; i < k; i++) count[sel[i] + 1]++;
    }
    /* count[e] becomes the start of expert e's run; filling advances it to the end, where e + 1's run starts */
    for (int32_t e = 0; e < n_exp; e++) count[e + 1] += count[e];
    for (int32_t t = 0; t < n; t++) {
        for (int32_t i = 0; i < k; i++) {
            int32_t e = ctx->host_sel[(size_t)t * k + i], at = count[e]++;
            ctx->host_rows[at] = t;
            ctx->host_scale[at] = ctx->host_selw[(size_t)t * k + i];
        }
    }
    int32_t n_pairs = n * k;
    struct ty_tensor rows = ty__tensor_slice(&ctx->moe_rows, 0, 0, n_pairs);
    struct ty_tensor scale = ty__tensor_slice(&ctx->moe_scale, 0, 0, n_pairs);
    OP(ty__backend_tensor_set(be, &rows, ctx->host_rows, 0, (size_t)n_pairs * sizeof(int32_t)));
    OP(ty__backend_tensor_set(be, &scale, ctx->host_scale, 0, (size_t)n_pairs * sizeof(float)));

    for (int32_t e = 0, start = 0; e < n_exp; start = count[e], e++) {
        int32_t c = count[e] - start;
        if (c == 0) continue; /* never read */
        struct ty_tensor ids = ty__tensor_slice(&ctx->moe_rows, 0, start, c);
        struct ty_tensor sc = ty__tensor_slice(&ctx->moe_scale, 0, start, c);
        struct ty_tensor xe = cols(&ctx->moe_x, 0, c), gate = cols(&ctx->moe_gate, 0, c);
        struct ty_tensor up = cols(&ctx->moe_up, 0, c), out = cols(&ctx->moe_out, 0, c);
        struct ty_tensor wg = ty__tensor_slice(l->ffn_gate_exps, 2, e, 1);
        struct ty_tensor wu = ty__tensor_slice(l->ffn_up_exps, 2, e, 1);
        struct ty_tensor wd = ty__tensor_slice(l->ffn_down_exps, 2, e, 1);
        OP(ty__backend_get_rows(be, &xe, xn, &ids));
        OP(ty__backend_matmul_swiglu(be, &gate, &wg, &wu, &xe, &up)); /* gate = silu(xe Wg) * xe Wu, one dispatch */
        OP(ty__backend_matmul(be, &out, &wd, &gate, NULL));
        OP(ty__backend_scatter_add(be, x, &out, &ids, &sc));
    }
    return TY_OK;
}

/* Layer il's own cache as attention sees a batch of n tokens at n_past: the batch's rows (written), every position up
 * to its last (read), and the scale (HF multiplies the f32 scores by head_dim ** -0.5, a double rounded to f32). */
struct cache_views {
    struct ty_tensor k_new, v_new, k_all, v_all;
    struct ty_attn attn;
};

static struct cache_views cache_views(const struct ty_context *ctx, int il, int64_t n) {
    const int32_t p0 = ctx->n_past;
    struct cache_views c;
    c.k_new = ty__tensor_slice(&ctx->k_cache[il], 2, p0, n);
    c.v_new = ty__tensor_slice(&ctx->v_cache[il], 2, p0, n);
    c.k_all = ty__tensor_slice(&ctx->k_cache[il], 2, 0, p0 + n);
    c.v_all = ty__tensor_slice(&ctx->v_cache[il], 2, 0, p0 + n);
    c.attn = (struct ty_attn){(float)(1.0 / sqrt((double)ctx->model->hp.head_dim_k)), p0};
    return c;
}

enum ty_status ty__cache_attend(struct ty_context *ctx, int il, const struct ty_tensor *q, const struct ty_tensor *k,
                                const struct ty_tensor *v, const struct ty_tensor *att) {
    struct ty_backend *be = ctx->be;
    struct cache_views c = cache_views(ctx, il, k->ne[2]);
    OP(ty__backend_copy(be, &c.k_new, k));
    OP(ty__backend_copy(be, &c.v_new, v));
    OP(ty__backend_attention(be, att, q, &c.k_all, &c.v_all, &c.attn));
    return TY_OK;
}

static enum ty_status layer_forward(struct ty_context *ctx, int il, int32_t n, const struct ty_tensor *pos) {
    const struct ty_model *m = ctx->model;
    const struct ty_hparams *hp = &m->hp;
    const struct ty_layer *l = &m->layers[il];
    struct ty_backend *be = ctx->be;

    struct ty_tensor x = cols(&ctx->x, 0, n), xn = cols(&ctx->xn, 0, n), proj = cols(&ctx->proj, 0, n);
    struct ty_tensor q2 = flat_cols(&ctx->q, n), k2 = flat_cols(&ctx->k, n), v2 = flat_cols(&ctx->v, n);
    struct ty_tensor q3 = ty__tensor_slice(&ctx->q, 2, 0, n), k3 = ty__tensor_slice(&ctx->k, 2, 0, n);
    struct ty_tensor v3 = ty__tensor_slice(&ctx->v, 2, 0, n);
    struct ty_tensor att2 = flat_cols(&ctx->att, n), att3 = ty__tensor_slice(&ctx->att, 2, 0, n);

    /* attention block: input norm, q/k/v, head norms and RoPE (backend.h: attn_input), then the KV write, attention,
     * the output projection and the residual add */
    struct ty_attn_input in = {.q = &q2, .k = &k2, .v = &v2, .q3 = &q3, .k3 = &k3};
    in.wq = l->wq, in.wk = l->wk, in.wv = l->wv, in.bq = l->bq, in.bk = l->bk, in.bv = l->bv;
    in.x = &x, in.norm = l->attn_norm, in.q_norm = l->q_norm, in.k_norm = l->k_norm, in.eps = hp->norm_eps;
    in.pos = pos, in.rope = &m->rope, in.xn = &xn;
    if (ctx->paged) {
        /* a batch of many sequences: their KV lives in the shared block pool (batch.c) */
        OP(ty__backend_attn_input(be, &in));
        TY_TRY(ty__paged_attend(ctx, il, &q3, &k3, &v3, &att3));
        OP(ty__backend_matmul(be, &proj, l->wo, &att2, NULL));
        OP(ty__backend_add(be, &x, &x, &proj));
    } else {
        /* the sequence's own cache: the whole block as one op (backend.h: attn_block) */
        struct cache_views c = cache_views(ctx, il, n);
        struct ty_attn_output out = {&x,       l->wo,    &q3,      &k3,    &v3,   &c.k_new,
                                     &c.v_new, &c.k_all, &c.v_all, c.attn, &att3, &proj};
        OP(ty__backend_attn_block(be, &in, &out));
    }

    /* feed-forward block */
    if (l->ffn_gate_inp) {
        OP(ty__backend_rms_norm(be, &xn, &x, l->ffn_norm, hp->norm_eps));
        return ty__qwen_moe(ctx, l, n, &xn, &x);
    }
    struct ty_tensor gate = cols(&ctx->gate, 0, n), up = cols(&ctx->up, 0, n);
    /* x += (silu(xn Wgate) * xn Wup) Wdown, xn = rms_norm(x): one op (backend.h: ffn) */
    struct ty_ffn ffn = {&x, l->ffn_norm, hp->norm_eps, l->w_gate, l->w_up, l->w_down, &xn, &gate, &up, &proj};
    OP(ty__backend_ffn(be, &ffn));
    return TY_OK;
}

/* Final norm and output projection of token columns [first, first + n), n <= the logits tensor's columns, into host
 * `out` (n rows of n_vocab floats). A backend that works in host memory writes `out` itself, wrapped as a buffer
 * (kept for the next call with the same memory): copying a row of logits (600 KB for Qwen2.5) cost a decode step
 * ~70 us on the 2-core VM. Others compute into the logits tensor, copied back. */
static enum ty_status output_rows(struct ty_context *ctx, int32_t first, int32_t n, float *out) {
    const struct ty_model *m = ctx->model;
    struct ty_backend *be = ctx->be;
    struct ty_tensor x = cols(&ctx->x, first, n), xn = cols(&ctx->xn, first, n), lg;
    const size_t bytes = (size_t)n * (size_t)m->hp.n_vocab * sizeof(float);
    OP(ty__backend_rms_norm(be, &xn, &x, m->output_norm, m->hp.norm_eps));
    if (!ty__backend_wraps_host(be)) {
        lg = cols(&ctx->logits, 0, n);
        OP(ty__backend_matmul(be, &lg, m->output, &xn, NULL));
        return ty__backend_tensor_get(be, &lg, out, 0, bytes);
    }
    if (!ctx->out_buf || ctx->out_buf->data != (void *)out || ctx->out_buf->size != bytes) {
        ty__backend_buffer_free(ctx->out_buf);
        ctx->out_buf = NULL;
        TY_TRY(ty__backend_buffer_wrap(be, out, bytes, &ctx->out_buf));
    }
    ty__tensor_init(&lg, ctx->out_buf, 0, TY_TYPE_F32, m->hp.n_vocab, n, 1, 1);
    OP(ty__backend_matmul(be, &lg, m->output, &xn, NULL));
    return TY_OK;
}

enum ty_status ty__qwen_forward(struct ty_context *ctx, const int32_t *tokens, int32_t n, bool all, bool last,
                                float *logits) {
    const struct ty_model *m = ctx->model;
    struct ty_backend *be = ctx->be;
    TY_ASSERT(n > 0 && n <= ctx->n_batch && ctx->n_past + n <= ctx->n_ctx);

    struct ty_tensor ids = ty__tensor_slice(&ctx->ids, 0, 0, n), pos = ty__tensor_slice(&ctx->pos, 0, 0, n);
    for (int32_t i = 0; i < n; i++) ctx->host_pos[i] = ctx->n_past + i;
    OP(ty__backend_tensor_set(be, &ids, tokens, 0, (size_t)n * sizeof(int32_t)));
    OP(ty__backend_tensor_set(be, &pos, ctx->host_pos, 0, (size_t)n * sizeof(int32_t)));

    struct ty_tensor x = cols(&ctx->x, 0, n);
    OP(ty__backend_get_rows(be, &x, m->tok_embd, &ids));
    for (int il = 0; il < m->hp.n_layer; il++)
        TY_TRY(ctx->next ? ty__next_layer_forward(ctx, il, n, &pos) : layer_forward(ctx, il, n, &pos));

    size_t row = (size_t)m->hp.n_vocab;
    int32_t chunk = (int32_t)ctx->logits.ne[1];
    if (all) {
        for (int32_t c0 = 0; c0 < n; c0 += chunk)
            TY_TRY(output_rows(ctx, c0, n - c0 < chunk ? n - c0 : chunk, logits + (size_t)c0 * row));
    } else if (last) {
        TY_TRY(output_rows(ctx, n - 1, 1, logits));
    }
    return ty__backend_sync(be);
}

enum ty_status ty__qwen_forward_batch(struct ty_context *ctx, const int32_t *tokens, const int32_t *pos, int32_t n,
                                      const int32_t *out_cols, int32_t n_out, float *const *logits) {
    const struct ty_model *m = ctx->model;
    struct ty_backend *be = ctx->be;
    TY_ASSERT(ctx->paged && n > 0 && n <= ctx->n_batch && n_out >= 0 && n_out <= n);

    struct ty_tensor ids = ty__tensor_slice(&ctx->ids, 0, 0, n), pt = ty__tensor_slice(&ctx->pos, 0, 0, n);
    OP(ty__backend_tensor_set(be, &ids, tokens, 0, (size_t)n * sizeof(int32_t)));
    OP(ty__backend_tensor_set(be, &pt, pos, 0, (size_t)n * sizeof(int32_t)));
    struct ty_tensor x = cols(&ctx->x, 0, n);
    OP(ty__backend_get_rows(be, &x, m->tok_embd, &ids));
    for (int il = 0; il < m->hp.n_layer; il++) TY_TRY(layer_forward(ctx, il, n, &pt));

    /* The wanted columns (each sequence's last token) gathered side by side, so that the output matrix is read once
     * per TY_LOGITS_CHUNK sequences rather than once per sequence. */
    size_t row = (size_t)m->hp.n_vocab;
    int32_t chunk = (int32_t)ctx->logits.ne[1];
    for (int32_t c0 = 0; c0 < n_out; c0 += chunk) {
        int32_t c = n_out - c0 < chunk ? n_out - c0 : chunk;
        struct ty_tensor sel = ty__tensor_slice(&ctx->ids, 0, 0, c), xn = cols(&ctx->xn, 0, c);
        struct ty_tensor lg = cols(&ctx->logits, 0, c);
        OP(ty__backend_tensor_set(be, &sel, out_cols + c0, 0, (size_t)c * sizeof(int32_t)));
        OP(ty__backend_get_rows(be, &xn, &x, &sel));
        OP(ty__backend_rms_norm(be, &xn, &xn, m->output_norm, m->hp.norm_eps));
        OP(ty__backend_matmul(be, &lg, m->output, &xn, NULL));
        for (int32_t i = 0; i < c; i++)
            OP(ty__backend_tensor_get(be, &lg, logits[c0 + i], (size_t)i * row * sizeof(float), row * sizeof(float)));
    }
    return ty__backend_sync(be);
}
