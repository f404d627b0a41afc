/*
 * context.c - one sequence's state: the KV cache (F16 or F32, sized for n_ctx positions) and the activations of a
 * batch (sized for n_batch tokens, with the expert routing tables of a MoE model), all allocated once here. Evaluation
 * splits the input into batches of n_batch tokens and runs the forward pass (qwen.c) on each.
 */
#include "model/model-impl.h"

#include <inttypes.h>

#define DEFAULT_MAX_CTX 4096
#define DEFAULT_BATCH   512

struct ty_context_params ty_context_default_params(void) {
    struct ty_context_params p = {0};
    p.n_ctx = 0;
    p.n_batch = 0;
    p.kv_type = TY_TYPE_F16;
    return p;
}

/* The tensor gets the running offset and no buffer; the caller sets .buf once the buffer is allocated. */
void ty__layout_place(struct ty_layout *lay, struct ty_tensor *t, enum ty_type type, int64_t ne0, int64_t ne1,
                      int64_t ne2) {
    ty__tensor_init(t, NULL, lay->size, type, ne0, ne1, ne2, 1);
    size_t bytes = ty__tensor_size(t), padded;
    if (ty__add_overflow(bytes, 63, &padded) || ty__add_overflow(lay->size, padded & ~(size_t)63, &lay->size))
        lay->overflow = true;
}

static enum ty_status alloc_kv(struct ty_context *ctx) {
    const struct ty_hparams *hp = &ctx->model->hp;
    ctx->k_cache = ty__calloc((size_t)hp->n_layer, sizeof *ctx->k_cache);
    ctx->v_cache = ty__calloc((size_t)hp->n_layer, sizeof *ctx->v_cache);
    if (!ctx->k_cache || !ctx->v_cache) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the KV cache table");
    struct ty_layout lay = {0};
    for (int il = 0; il < hp->n_layer; il++) {
        /* the linear-attention layers of a hybrid model keep a recurrent state instead (qwen-next.c) */
        int64_t n_pos = ctx->model->layers[il].recurrent ? 1 : ctx->n_ctx;
        ty__layout_place(&lay, &ctx->k_cache[il], ctx->kv_type, hp->head_dim_k, hp->n_head_kv, n_pos);
        ty__layout_place(&lay, &ctx->v_cache[il], ctx->kv_type, hp->head_dim_v, hp->n_head_kv, n_pos);
        ty__kv_cache_head_major(&ctx->k_cache[il]);
        ty__kv_cache_head_major(&ctx->v_cache[il]);
    }
    if (lay.overflow)
        return ty__error(TY_ERR_NO_MEMORY, "a KV cache of %d positions does not fit in memory; use a smaller context",
                         ctx->n_ctx);
    enum ty_status st = ty__backend_buffer_alloc(ctx->be, lay.size, &ctx->kv_buf);
    if (st != TY_OK) return ty__error_prefix(st, "KV cache of %d positions", ctx->n_ctx);
    for (int il = 0; il < hp->n_layer; il++) {
        ctx->k_cache[il].buf = ctx->kv_buf;
        ctx->v_cache[il].buf = ctx->kv_buf;
    }
    TY_LOG_I("KV cache: %d positions, %s, %.1f MiB", ctx->n_ctx, ty_type_name(ctx->kv_type),
             (double)lay.size / (1 << 20));
    return TY_OK;
}

static enum ty_status alloc_activations(struct ty_context *ctx) {
    const struct ty_hparams *hp = &ctx->model->hp;
    int64_t nb = ctx->n_batch;
    int64_t n_logit_cols = nb < TY_LOGITS_CHUNK ? nb : TY_LOGITS_CHUNK;
    struct ty_layout lay = {0};
    ty__layout_place(&lay, &ctx->ids, TY_TYPE_I32, nb, 1, 1);
    ty__layout_place(&lay, &ctx->pos, TY_TYPE_I32, nb, 1, 1);
    ty__layout_place(&lay, &ctx->x, TY_TYPE_F32, hp->n_embd, nb, 1);
    ty__layout_place(&lay, &ctx->xn, TY_TYPE_F32, hp->n_embd, nb, 1);
    ty__layout_place(&lay, &ctx->q, TY_TYPE_F32, hp->head_dim_k, hp->n_head, nb);
    ty__layout_place(&lay, &ctx->k, TY_TYPE_F32, hp->head_dim_k, hp->n_head_kv, nb);
    ty__layout_place(&lay, &ctx->v, TY_TYPE_F32, hp->head_dim_v, hp->n_head_kv, nb);
    ty__layout_place(&lay, &ctx->att, TY_TYPE_F32, hp->head_dim_v, hp->n_head, nb);
    ty__layout_place(&lay, &ctx->proj, TY_TYPE_F32, hp->n_embd, nb, 1);
    int64_t n_ff = hp->n_dense_ffn > 0 ? hp->n_ff : 1; /* a MoE model may have no dense FFN at all */
    ty__layout_place(&lay, &ctx->gate, TY_TYPE_F32, n_ff, nb, 1);
    ty__layout_place(&lay, &ctx->up, TY_TYPE_F32, n_ff, nb, 1);
    ty__layout_place(&lay, &ctx->logits, TY_TYPE_F32, hp->n_vocab, n_logit_cols, 1);
    int64_t n_pairs = nb * hp->n_expert_used;
    if (hp->n_expert > 0) {
        ty__layout_place(&lay, &ctx->router, TY_TYPE_F32, hp->n_expert, nb, 1);
        ty__layout_place(&lay, &ctx->moe_rows, TY_TYPE_I32, n_pairs, 1, 1);
        ty__layout_place(&lay, &ctx->moe_scale, TY_TYPE_F32, n_pairs, 1, 1);
        ty__layout_place(&lay, &ctx->moe_x, TY_TYPE_F32, hp->n_embd, nb, 1);
        ty__layout_place(&lay, &ctx->moe_gate, TY_TYPE_F32, hp->n_ff_exp, nb, 1);
        ty__layout_place(&lay, &ctx->moe_up, TY_TYPE_F32, hp->n_ff_exp, nb, 1);
        ty__layout_place(&lay, &ctx->moe_out, TY_TYPE_F32, hp->n_embd, nb, 1);
    }
    if (lay.overflow)
        return ty__error(TY_ERR_NO_MEMORY, "activations for a batch of %d tokens do not fit in memory", ctx->n_batch);
    enum ty_status st = ty__backend_buffer_alloc(ctx->be, lay.size, &ctx->act_buf);
    if (st != TY_OK) return ty__error_prefix(st, "activations for a batch of %d tokens", ctx->n_batch);
    struct ty_tensor *all[] = {&ctx->ids,       &ctx->pos,      &ctx->x,      &ctx->xn,     &ctx->q,
                               &ctx->k,         &ctx->v,        &ctx->att,    &ctx->proj,   &ctx->gate,
                               &ctx->up,        &ctx->logits,   &ctx->router, &ctx->moe_x,  &ctx->moe_rows,
                               &ctx->moe_scale, &ctx->moe_gate, &ctx->moe_up, &ctx->moe_out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) all[i]->buf = ctx->act_buf;
    ctx->host_pos = ty__calloc((size_t)nb, sizeof(int32_t));
    if (!ctx->host_pos) return ty__error(TY_ERR_NO_MEMORY, "out of memory for a batch of %d positions", ctx->n_batch);
    if (hp->n_expert > 0) {
        ctx->host_router = ty__calloc((size_t)nb * (size_t)hp->n_expert, sizeof(float));
        ctx->host_sel = ty__calloc((size_t)n_pairs, sizeof(int32_t));
        ctx->host_selw = ty__calloc((size_t)n_pairs, sizeof(float));
        ctx->host_rows = ty__calloc((size_t)n_pairs, sizeof(int32_t));
        ctx->host_scale = ty__calloc((size_t)n_pairs, sizeof(float));
        ctx->host_count = ty__calloc((size_t)hp->n_expert + 1, sizeof(int32_t));
        if (!ctx->host_router || !ctx->host_sel || !ctx->host_selw || !ctx->host_rows || !ctx->host_scale ||
            !ctx->host_count)
            return ty__error(TY_ERR_NO_MEMORY, "out of memory for the expert routing of a batch of %d tokens",
                             ctx->n_batch);
    }
    TY_LOG_I("activations: batch %d, %.1f MiB", ctx->n_batch, (double)lay.size / (1 << 20));
    return TY_OK;
}

enum ty_status ty_context_init(struct ty_model *model, const struct ty_context_params *params,
                               struct ty_context **out) {
    if (!out) return ty__error(TY_ERR_INVALID_ARG, "ty_context_init: out is NULL");
    *out = NULL;
    if (!model) return ty__error(TY_ERR_INVALID_ARG, "ty_context_init: model is NULL");
    struct ty_context_params def = ty_context_default_params();
    if (!params) params = &def;
    if (params->n_ctx < 0)
        return ty__error(TY_ERR_INVALID_ARG, "context length %d is negative; use 0 for the model's default",
                         params->n_ctx);
    if (params->n_batch < 0)
        return ty__error(TY_ERR_INVALID_ARG, "batch size %d is negative; use 0 for the default (%d)", params->n_batch,
                         DEFAULT_BATCH);
    if (params->kv_type != TY_TYPE_F16 && params->kv_type != TY_TYPE_F32)
        return ty__error(TY_ERR_INVALID_ARG, "KV cache type %s is not supported; use F16 or F32",
                         ty_type_name(params->kv_type));
    struct ty_context *ctx = ty__calloc(1, sizeof *ctx);
    if (!ctx) return ty__error(TY_ERR_NO_MEMORY, "out of memory creating a context");
    ctx->model = model;
    ctx->be = model->be;
    ctx->kv_type = params->kv_type;
    int32_t train = model->hp.n_ctx_train;
    ctx->n_ctx = params->n_ctx ? params->n_ctx : (train < DEFAULT_MAX_CTX ? train : DEFAULT_MAX_CTX);
    ctx->n_batch = params->n_batch ? params->n_batch : DEFAULT_BATCH;
    if (ctx->n_batch > ctx->n_ctx) ctx->n_batch = ctx->n_ctx; /* a larger batch could never be used */
    enum ty_status st = alloc_kv(ctx);
    if (st == TY_OK) st = alloc_activations(ctx);
    if (st == TY_OK) st = ty__next_context_init(ctx);
    if (st != TY_OK) {
        ty_context_free(ctx);
        return st;
    }
    *out = ctx;
    return TY_OK;
}

enum ty_status ty__context_init_paged(struct ty_model *model, int32_t n_batch, struct ty_context **out) {
    *out = NULL;
    if (n_batch <= 0) return ty__error(TY_ERR_INVALID_ARG, "batch size %d must be positive", n_batch);
    struct ty_context *ctx = ty__calloc(1, sizeof *ctx);
    if (!ctx) return ty__error(TY_ERR_NO_MEMORY, "out of memory creating a context");
    ctx->model = model;
    ctx->be = model->be;
    ctx->kv_type = TY_TYPE_F16;
    ctx->n_batch = n_batch;
    ctx->n_ctx = 0; /* no KV of its own: the paged batch (ctx->paged) says where every position lives */
    enum ty_status st = alloc_activations(ctx);
    if (st != TY_OK) {
        ty_context_free(ctx);
        return st;
    }
    *out = ctx;
    return TY_OK;
}

void ty_context_free(struct ty_context *ctx) {
    if (!ctx) return;
    ty__next_context_free(ctx);
    ty__backend_buffer_free(ctx->kv_buf);
    ty__backend_buffer_free(ctx->act_buf);
    ty__backend_buffer_free(ctx->out_buf);
    ty_free(ctx->k_cache);
    ty_free(ctx->v_cache);
    ty_free(ctx->host_pos);
    ty_free(ctx->host_router);
    ty_free(ctx->host_sel);
    ty_free(ctx->host_selw);
    ty_free(ctx->host_rows);
    ty_free(ctx->host_scale);
    ty_free(ctx->host_count);
    ty_free(ctx);
}

enum ty_status ty_context_eval(struct ty_context *ctx, const int32_t *tokens, size_t n, enum ty_logits_mode mode,
                               float *logits) {
    if (!ctx) return ty__error(TY_ERR_INVALID_ARG, "ty_context_eval: ctx is NULL");
    if (mode != TY_LOGITS_NONE && mode != TY_LOGITS_LAST && mode != TY_LOGITS_ALL)
        return ty__error(TY_ERR_INVALID_ARG, "ty_context_eval: unknown logits mode %d", (int)mode);
    if (mode != TY_LOGITS_NONE && !logits)
        return ty__error(TY_ERR_INVALID_ARG, "ty_context_eval: logits is NULL but logits were asked for");
    if (n == 0) {
        if (mode == TY_LOGITS_LAST)
            return ty__error(TY_ERR_INVALID_ARG, "ty_context_eval: no tokens, so there is no last token's logits");
        return TY_OK;
    }
    if (!tokens) return ty__error(TY_ERR_INVALID_ARG, "ty_context_eval: tokens is NULL");
    int32_t n_vocab = ctx->model->hp.n_vocab;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return ty__error(TY_ERR_INVALID_ARG, "token id %" PRId32 " at index %zu is out of range [0, %" PRId32 ")",
                             tokens[i], i, n_vocab);
    if (n > (size_t)(ctx->n_ctx - ctx->n_past))
        return ty__error(TY_ERR_CONTEXT_FULL,
                         "%zu tokens do not fit after position %d in a context of %d tokens; truncate the context or "
                         "create one with a larger n_ctx",
                         n, ctx->n_past, ctx->n_ctx);
    int32_t start = ctx->n_past;
    size_t row = (size_t)n_vocab;
    for (size_t off = 0; off < n; off += (size_t)ctx->n_batch) {
        int32_t m = (int32_t)(n - off < (size_t)ctx->n_batch ? n - off : (size_t)ctx->n_batch);
        bool last_batch = off + (size_t)m == n;
        float *out = mode == TY_LOGITS_ALL ? logits + off * row : logits;
        if (ctx->next) ty__next_record(ctx, tokens + off, m);
        enum ty_status st =
            ty__qwen_forward(ctx, tokens + off, m, mode == TY_LOGITS_ALL, mode == TY_LOGITS_LAST && last_batch, out);
        if (st != TY_OK) {
            ctx->n_past = start; /* positions past n_past are ignored, so the cache is as before */
            /* a recurrent state has no positions to ignore: recompute it (hybrid models, qwen-next.c) */
            if (ctx->next) (void)ty__next_rewind(ctx, start);
            return st;
        }
        ctx->n_past += m;
    }
    return TY_OK;
}

int32_t ty_context_n_past(const struct ty_context *ctx) {
    return ctx->n_past;
}
int32_t ty_context_n_ctx(const struct ty_context *ctx) {
    return ctx->n_ctx;
}

enum ty_status ty_context_truncate(struct ty_context *ctx, int32_t n_past) {
    if (!ctx) return ty__error(TY_ERR_INVALID_ARG, "ty_context_truncate: ctx is NULL");
    if (n_past < 0 || n_past > ctx->n_past)
        return ty__error(TY_ERR_INVALID_ARG, "cannot truncate to %d positions: the context holds %d", n_past,
                         ctx->n_past);
    /* hybrid models recompute their recurrent state (see ty__next_rewind) */
    if (ctx->next && n_past < ctx->n_past) return ty__next_rewind(ctx, n_past);
    ctx->n_past = n_past;
    return TY_OK;
}
