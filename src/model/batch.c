/*
 * batch.c - the paged multi-sequence forward the serving engine runs once per iteration: a KV pool of fixed-size
 * blocks shared by every sequence, and batches that hold the new tokens of many sequences at once (prefill chunks and
 * single decode tokens side by side).
 *
 * Every matrix product and norm of the batch runs once over all its tokens (qwen.c's layer_forward, unchanged), which
 * is where batching pays: the weights are read once per iteration instead of once per sequence. Only the attention
 * step differs from a single-sequence context: each layer writes the batch's new keys and values into the pool rows
 * its sequences' block tables name, then the backend's attention_paged op attends each sequence's queries over its
 * own blocks. A token's numbers therefore depend only on its sequence, never on what else is in the batch, as long as
 * the matrix product is batch-invariant (each output column computed alone, as both CPU backends do).
 *
 * Block ids and tables belong to the caller (the cloud layer's block manager); this file only reads them.
 */
#include "model/model-impl.h"

#include <math.h>

/* The state of one ty__batch_forward call, reached from the context during the layers (ctx->paged). */
struct ty_paged_run {
    struct ty_kv_pool *pool;
    const struct ty_batch_seq *seqs;
    int32_t n_seqs;
    const int32_t *cols;        /* (n_seqs) first token column of each sequence in the batch */
    struct ty_paged_attn attn;  /* the op's descriptor; seqs point at pseqs */
    struct ty_paged_seq *pseqs; /* (max_seqs) */
};

struct ty_batch {
    struct ty_model *model;
    struct ty_kv_pool *pool;
    struct ty_context *ctx; /* activations only; ctx->paged points at run during a forward */
    int32_t max_tokens, max_seqs, n_ctx;
    struct ty_paged_run run;
    struct ty_paged_seq *pseqs; /* (max_seqs) */
    int32_t *cols;              /* (max_seqs) */
    int32_t *host_tokens;       /* (max_tokens) the batch's tokens, sequence after sequence */
    int32_t *host_pos;          /* (max_tokens) their positions */
    int32_t *host_out;          /* (max_seqs) token columns whose logits are wanted */
    float **out_rows;           /* (max_seqs) where each wanted column's logits go */
    /* gather scratch: the fallback of a backend without attention_paged, and block copies */
    struct ty_buffer *scratch_buf;
    struct ty_tensor gather_k;   /* (head_dim_k * n_head_kv, max(n_ctx, block)) F32 */
    struct ty_tensor gather_v;   /* (head_dim_v * n_head_kv, max(n_ctx, block)) F32 */
    struct ty_tensor gather_ids; /* (max(n_ctx, block)) I32 */
    int32_t *host_ids;           /* (max(n_ctx, block)) */
};

/* ==== The pool ==== */

bool ty__batch_supported(const struct ty_model *model) {
    switch (model->arch) {
    case TY_ARCH_QWEN2:
    case TY_ARCH_QWEN3:
    case TY_ARCH_QWEN3MOE:
        return true;
    default:
        return false; /* an architecture added later runs per sequence until it is checked here */
    }
}

size_t ty__kv_pool_bytes_per_token(const struct ty_model *model) {
    const struct ty_hparams *hp = &model->hp;
    return (size_t)hp->n_layer * (size_t)hp->n_head_kv * (size_t)(hp->head_dim_k + hp->head_dim_v) * sizeof(ty_f16);
}

enum ty_status ty__kv_pool_init(struct ty_model *model, int32_t n_blocks, int32_t block, struct ty_kv_pool **out) {
    *out = NULL;
    const struct ty_hparams *hp = &model->hp;
    if (n_blocks <= 0 || block <= 0)
        return ty__error(TY_ERR_INVALID_ARG, "a KV pool of %d blocks of %d positions is empty", n_blocks, block);
    struct ty_kv_pool *p = ty__calloc(1, sizeof *p);
    if (!p) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the KV pool");
    p->n_layer = hp->n_layer;
    p->n_blocks = n_blocks;
    p->block = block;
    p->k = ty__calloc((size_t)hp->n_layer, sizeof *p->k);
    p->v = ty__calloc((size_t)hp->n_layer, sizeof *p->v);
    size_t per_tok = ty__kv_pool_bytes_per_token(model), slots = (size_t)n_blocks * (size_t)block, total;
    enum ty_status st = TY_OK;
    if (!p->k || !p->v) st = ty__error(TY_ERR_NO_MEMORY, "out of memory for the KV pool");
    if (st == TY_OK && ty__mul_overflow(per_tok, slots, &total))
        st =
            ty__error(TY_ERR_NO_MEMORY, "a KV pool of %d blocks does not fit in memory; lower the KV budget", n_blocks);
    if (st == TY_OK) st = ty__backend_buffer_alloc(model->be, total, &p->buf);
    if (st != TY_OK) {
        ty__error_prefix(st, "KV pool of %d blocks of %d positions", n_blocks, block);
        ty__kv_pool_free(p);
        return st;
    }
    size_t offs = 0;
    for (int il = 0; il < hp->n_layer; il++) {
        ty__tensor_init(&p->k[il], p->buf, offs, TY_TYPE_F16, hp->head_dim_k, hp->n_head_kv, (int64_t)slots, 1);
        offs += ty__tensor_size(&p->k[il]);
        ty__tensor_init(&p->v[il], p->buf, offs, TY_TYPE_F16, hp->head_dim_v, hp->n_head_kv, (int64_t)slots, 1);
        offs += ty__tensor_size(&p->v[il]);
    }
    TY_ASSERT(offs == total);
    TY_LOG_I("KV pool: %d blocks of %d positions, F16, %.1f MiB", n_blocks, block, (double)total / (1 << 20));
    *out = p;
    return TY_OK;
}

void ty__kv_pool_free(struct ty_kv_pool *p) {
    if (!p) return;
    ty__backend_buffer_free(p->buf);
    ty_free(p->k);
    ty_free(p->v);
    ty_free(p);
}

/* ==== Batches ==== */

enum ty_status ty__batch_init(struct ty_model *model, struct ty_kv_pool *pool, int32_t max_tokens, int32_t max_seqs,
                              int32_t n_ctx, struct ty_batch **out) {
    *out = NULL;
    if (!ty__batch_supported(model))
        return ty__error(TY_ERR_UNSUPPORTED,
                         "the paged batched forward does not run %s models; serve them per "
                         "sequence",
                         model->arch_name);
    if (max_tokens <= 0 || max_seqs <= 0 || n_ctx <= 0)
        return ty__error(TY_ERR_INVALID_ARG, "batch of %d tokens, %d sequences, %d positions: all must be positive",
                         max_tokens, max_seqs, n_ctx);
    const struct ty_hparams *hp = &model->hp;
    struct ty_batch *b = ty__calloc(1, sizeof *b);
    if (!b) return ty__error(TY_ERR_NO_MEMORY, "out of memory for a batch");
    b->model = model;
    b->pool = pool;
    b->max_tokens = max_tokens;
    b->max_seqs = max_seqs;
    b->n_ctx = n_ctx;
    int32_t n_gather = n_ctx > pool->block ? n_ctx : pool->block;
    enum ty_status st = ty__context_init_paged(model, max_tokens, &b->ctx);
    if (st == TY_OK) {
        b->pseqs = ty__calloc((size_t)max_seqs, sizeof *b->pseqs);
        b->cols = ty__calloc((size_t)max_seqs, sizeof *b->cols);
        b->host_tokens = ty__calloc((size_t)max_tokens, sizeof *b->host_tokens);
        b->host_pos = ty__calloc((size_t)max_tokens, sizeof *b->host_pos);
        b->host_out = ty__calloc((size_t)max_seqs, sizeof *b->host_out);
        b->out_rows = ty__calloc((size_t)max_seqs, sizeof *b->out_rows);
        b->host_ids = ty__calloc((size_t)n_gather, sizeof *b->host_ids);
        if (!b->pseqs || !b->cols || !b->host_tokens || !b->host_pos || !b->host_out || !b->out_rows || !b->host_ids)
            st = ty__error(TY_ERR_NO_MEMORY, "out of memory for a batch of %d sequences", max_seqs);
    }
    if (st == TY_OK) {
        int64_t kd = (int64_t)hp->head_dim_k * hp->n_head_kv, vd = (int64_t)hp->head_dim_v * hp->n_head_kv;
        ty__tensor_init(&b->gather_k, NULL, 0, TY_TYPE_F32, kd, n_gather, 1, 1);
        size_t ks = (ty__tensor_size(&b->gather_k) + 63) & ~(size_t)63;
        ty__tensor_init(&b->gather_v, NULL, ks, TY_TYPE_F32, vd, n_gather, 1, 1);
        size_t vs = (ty__tensor_size(&b->gather_v) + 63) & ~(size_t)63;
        ty__tensor_init(&b->gather_ids, NULL, ks + vs, TY_TYPE_I32, n_gather, 1, 1, 1);
        st = ty__backend_buffer_alloc(model->be, ks + vs + ty__tensor_size(&b->gather_ids), &b->scratch_buf);
        b->gather_k.buf = b->gather_v.buf = b->gather_ids.buf = b->scratch_buf;
    }
    if (st != TY_OK) {
        ty__batch_free(b);
        return st;
    }
    b->run.pool = pool;
    b->run.pseqs = b->pseqs;
    b->run.cols = b->cols;
    *out = b;
    return TY_OK;
}

void ty__batch_free(struct ty_batch *b) {
    if (!b) return;
    ty_context_free(b->ctx);
    ty__backend_buffer_free(b->scratch_buf);
    ty_free(b->pseqs);
    ty_free(b->cols);
    ty_free(b->host_tokens);
    ty_free(b->host_pos);
    ty_free(b->host_out);
    ty_free(b->out_rows);
    ty_free(b->host_ids);
    ty_free(b);
}

enum ty_status ty__batch_copy_block(struct ty_batch *b, int32_t from, int32_t to) {
    struct ty_kv_pool *p = b->pool;
    struct ty_backend *be = b->model->be;
    TY_ASSERT(from >= 0 && from < p->n_blocks && to >= 0 && to < p->n_blocks);
    if (from == to) return TY_OK;
    /* through F32 scratch: get_rows widens F16 exactly and copy narrows it back exactly, on any backend */
    for (int32_t i = 0; i < p->block; i++) b->host_ids[i] = from * p->block + i;
    struct ty_tensor ids = ty__tensor_slice(&b->gather_ids, 0, 0, p->block);
    TY_TRY(ty__backend_tensor_set(be, &ids, b->host_ids, 0, (size_t)p->block * sizeof(int32_t)));
    for (int il = 0; il < p->n_layer; il++) {
        for (int kv = 0; kv < 2; kv++) {
            const struct ty_tensor *pool = kv ? &p->v[il] : &p->k[il];
            const struct ty_tensor *scr = kv ? &b->gather_v : &b->gather_k;
            struct ty_tensor rows = ty__tensor_reshape(pool, pool->ne[0] * pool->ne[1], pool->ne[2], 1, 1);
            struct ty_tensor tmp = ty__tensor_slice(scr, 1, 0, p->block);
            TY_TRY(ty__backend_get_rows(be, &tmp, &rows, &ids));
            struct ty_tensor dst = ty__tensor_slice(&rows, 1, (int64_t)to * p->block, p->block);
            TY_TRY(ty__backend_copy(be, &dst, &tmp));
        }
    }
    return TY_OK;
}

enum ty_status ty__paged_attend(struct ty_context *ctx, int il, const struct ty_tensor *q, const struct ty_tensor *k,
                                const struct ty_tensor *v, const struct ty_tensor *att) {
    struct ty_paged_run *r = ctx->paged;
    struct ty_kv_pool *p = r->pool;
    struct ty_backend *be = ctx->be;
    int32_t blk = p->block;
    /* the new keys and values into their pool rows: one copy per run of positions within a block */
    for (int32_t s = 0; s < r->n_seqs; s++) {
        const struct ty_batch_seq *sq = &r->seqs[s];
        for (int32_t t = 0; t < sq->n_tokens;) {
            int32_t pos = sq->pos + t, in_blk = pos % blk, len = blk - in_blk;
            if (len > sq->n_tokens - t) len = sq->n_tokens - t;
            int64_t row = (int64_t)sq->blocks[pos / blk] * blk + in_blk;
            struct ty_tensor ks = ty__tensor_slice(k, 2, r->cols[s] + t, len);
            struct ty_tensor vs = ty__tensor_slice(v, 2, r->cols[s] + t, len);
            struct ty_tensor kd = ty__tensor_slice(&p->k[il], 2, row, len);
            struct ty_tensor vd = ty__tensor_slice(&p->v[il], 2, row, len);
            TY_TRY(ty__backend_copy(be, &kd, &ks));
            TY_TRY(ty__backend_copy(be, &vd, &vs));
            t += len;
        }
    }
    return ty__backend_attention_paged(be, att, q, &p->k[il], &p->v[il], &r->attn);
}

enum ty_status ty__batch_forward(struct ty_batch *b, const struct ty_batch_seq *seqs, int32_t n_seqs) {
    const struct ty_hparams *hp = &b->model->hp;
    if (n_seqs <= 0) return TY_OK;
    if (n_seqs > b->max_seqs)
        return ty__error(TY_ERR_INVALID_ARG, "batch of %d sequences; at most %d", n_seqs, b->max_seqs);
    int32_t n = 0, n_out = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        const struct ty_batch_seq *sq = &seqs[s];
        if (sq->n_tokens <= 0 || sq->pos < 0 || sq->pos + sq->n_tokens > b->n_ctx ||
            (int64_t)sq->n_blocks * b->pool->block < (int64_t)sq->pos + sq->n_tokens)
            return ty__error(TY_ERR_INVALID_ARG,
                             "sequence %d of a batch: %d tokens at position %d over %d blocks do not fit a context "
                             "of %d",
                             s, sq->n_tokens, sq->pos, sq->n_blocks, b->n_ctx);
        if (sq->n_tokens > b->max_tokens - n)
            return ty__error(TY_ERR_INVALID_ARG, "batch of more than %d tokens", b->max_tokens);
        for (int32_t t = 0; t < sq->n_tokens; t++) {
            if (sq->tokens[t] < 0 || sq->tokens[t] >= hp->n_vocab)
                return ty__error(TY_ERR_INVALID_ARG, "token id %d is out of range [0, %d)", sq->tokens[t], hp->n_vocab);
            b->host_tokens[n + t] = sq->tokens[t];
            b->host_pos[n + t] = sq->pos + t;
        }
        b->cols[s] = n;
        b->pseqs[s] = (struct ty_paged_seq){n, sq->n_tokens, sq->pos, sq->n_blocks, sq->blocks};
        n += sq->n_tokens;
        if (sq->logits) {
            b->out_rows[n_out] = sq->logits;
            b->host_out[n_out++] = n - 1;
        }
    }
    struct ty_paged_run *r = &b->run;
    r->seqs = seqs;
    r->n_seqs = n_seqs;
    /* HF multiplies the f32 scores by head_dim ** -0.5 (a double rounded to f32), as the contiguous path does */
    r->attn = (struct ty_paged_attn){(float)(1.0 / sqrt((double)hp->head_dim_k)),
                                     b->pool->block,
                                     n_seqs,
                                     b->pseqs,
                                     &b->gather_k,
                                     &b->gather_v,
                                     &b->gather_ids,
                                     b->host_ids};
    b->ctx->paged = r;
    enum ty_status st = ty__qwen_forward_batch(b->ctx, b->host_tokens, b->host_pos, n, b->host_out, n_out, b->out_rows);
    b->ctx->paged = NULL;
    return st;
}
