/*
 * train.c - the trainable qwen3 model: the flat f32 parameter and gradient buffers and their tensor layout (GGUF
 * names and order), random initialisation, loading from and exporting to GGUF, and the forward and backward pass of
 * the whole model written against the op table (train.h), so another backend's table runs the same graph.
 *
 * The forward is the graph of qwen.c (Hugging Face's Qwen3Model) over a batch of independent sequences:
 *   x = embed(tokens); per layer: h = rms(x); q,k,v = h Wq^T, h Wk^T, h Wv^T; q,k = rope(rms_head(q)),
 * rope(rms_head(k)) x += attn(q, k, v) Wo^T; h = rms(x); x += (silu(h Wg^T) * h Wu^T) Wd^T;  logits = rms(x) Wout^T and
 * the backward retraces it with the activations the forward saved (no recomputation). Every product runs in the
 * model's precision (f32, or bf16 operands with f32 accumulation); everything else is f32 whatever it is.
 */
#include "train/train.h"

#include "model/convert.h"
#include "model/mkmodel.h"
#include "model/model-impl.h"
#include "model/tokenizer.h"
#include "model/quant.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

/* ==== Layout ==== */

static void add_tensor(struct ty_train_model *m, const char *name, int n_dims, int64_t ne0, int64_t ne1, bool decay) {
    struct ty_train_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->offset = m->n_params;
    t->n = (size_t)ne0 * (size_t)ne1;
    t->decay = decay;
    m->n_params += t->n;
}

/* The tensors in `tongyun convert`'s order. */
static void make_layout(struct ty_train_model *m) {
    const struct ty_train_config *c = &m->cfg;
    int64_t E = c->n_embd, Q = (int64_t)c->n_head * c->head_dim, KV = (int64_t)c->n_head_kv * c->head_dim;
    char name[48];
    add_tensor(m, "token_embd.weight", 2, E, c->n_vocab, true);
    for (int l = 0; l < c->n_layer; l++) {
#define T(suffix, nd, a, b, decay)                                                                                     \
    (snprintf(name, sizeof name, "blk.%d." suffix, l), add_tensor(m, name, nd, a, b, decay))
        T("attn_norm.weight", 1, E, 1, false);
        T("attn_q.weight", 2, E, Q, true);
        T("attn_k.weight", 2, E, KV, true);
        T("attn_v.weight", 2, E, KV, true);
        T("attn_q_norm.weight", 1, c->head_dim, 1, false);
        T("attn_k_norm.weight", 1, c->head_dim, 1, false);
        T("attn_output.weight", 2, Q, E, true);
        T("ffn_norm.weight", 1, E, 1, false);
        T("ffn_gate.weight", 2, E, c->n_ff, true);
        T("ffn_up.weight", 2, E, c->n_ff, true);
        T("ffn_down.weight", 2, c->n_ff, E, true);
#undef T
    }
    add_tensor(m, "output_norm.weight", 1, E, 1, false);
    if (!c->tied) add_tensor(m, "output.weight", 2, E, c->n_vocab, true);
}

/* Pointers of the views into one flat buffer, tensor i after tensor i-1 as make_layout ordered them. */
static void make_view(const struct ty_train_model *m, float *base, struct ty_train_weights *w,
                      struct ty_train_layer *layers) {
    int i = 0;
#define NEXT (base + m->tensors[i++].offset)
    w->tok_embd = NEXT;
    w->layers = layers;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        struct ty_train_layer *L = &layers[l];
        L->attn_norm = NEXT;
        L->wq = NEXT;
        L->wk = NEXT;
        L->wv = NEXT;
        L->q_norm = NEXT;
        L->k_norm = NEXT;
        L->wo = NEXT;
        L->ffn_norm = NEXT;
        L->w_gate = NEXT;
        L->w_up = NEXT;
        L->w_down = NEXT;
    }
    w->output_norm = NEXT;
    w->output = m->cfg.tied ? w->tok_embd : NEXT;
#undef NEXT
}

static enum ty_status check_config(const struct ty_train_config *c) {
    if (c->n_vocab < 2 || c->n_embd < 2 || c->n_layer < 1 || c->n_head < 1 || c->n_head_kv < 1 || c->head_dim < 2 ||
        c->n_ff < 1)
        return ty__error(TY_ERR_INVALID_ARG,
                         "train: model shape vocab %d, embd %d, layers %d, heads %d/%d x %d, ff %d is invalid; every "
                         "size must be positive",
                         c->n_vocab, c->n_embd, c->n_layer, c->n_head, c->n_head_kv, c->head_dim, c->n_ff);
    if (c->n_head % c->n_head_kv != 0)
        return ty__error(TY_ERR_INVALID_ARG, "train: %d query heads are not a multiple of %d key/value heads",
                         c->n_head, c->n_head_kv);
    if (c->head_dim % 2 != 0 || c->head_dim > TY_ROPE_MAX_DIMS)
        return ty__error(TY_ERR_INVALID_ARG, "train: head_dim %d must be even and at most %d", c->head_dim,
                         TY_ROPE_MAX_DIMS);
    if (!(c->norm_eps > 0.0f)) return ty__error(TY_ERR_INVALID_ARG, "train: norm epsilon must be positive");
    return TY_OK;
}

enum ty_status ty__train_model_init(const struct ty_train_config *cfg, int n_threads, struct ty_train_model **out) {
    *out = NULL;
    TY_TRY(check_config(cfg));
    struct ty_train_model *m = ty__calloc(1, sizeof *m);
    if (!m) return ty__error(TY_ERR_NO_MEMORY, "train: out of memory");
    m->cfg = *cfg;
    m->cfg.rope.n_dims = cfg->head_dim;
    enum ty_status st = ty__rope_init(&m->cfg.rope, &m->rope);
    int n_tensors = 3 + 11 * cfg->n_layer;
    if (st == TY_OK) {
        m->tensors = ty__calloc((size_t)n_tensors, sizeof *m->tensors);
        struct ty_train_layer *lay = ty__calloc((size_t)cfg->n_layer * 2, sizeof *lay);
        if (!m->tensors || !lay) {
            ty_free(lay);
            st = ty__error(TY_ERR_NO_MEMORY, "train: out of memory");
        } else {
            make_layout(m);
            m->w.layers = lay; /* owns both layer arrays */
            m->params = ty__huge_calloc(m->n_params, sizeof(float));
            m->grads = ty__huge_calloc(m->n_params, sizeof(float));
            if (!m->params || !m->grads) {
                st = ty__error(TY_ERR_NO_MEMORY, "train: out of memory for %zu parameters (%.1f MiB each copy)",
                               m->n_params, (double)m->n_params * 4 / (1 << 20));
            } else {
                make_view(m, m->params, &m->w, lay);
                make_view(m, m->grads, &m->g, lay + cfg->n_layer);
            }
        }
    }
    if (st == TY_OK) st = ty__threadpool_init(n_threads, &m->pool);
    if (st == TY_OK) st = ty__train_cpu_ctx_new(m->pool, &m->ops_ctx);
    if (st != TY_OK) {
        ty__train_model_free(m);
        return st;
    }
    m->ops = ty__train_ops_cpu();
    *out = m;
    return TY_OK;
}

void ty__train_model_free(struct ty_train_model *m) {
    if (!m) return;
    ty__train_cpu_ctx_free(m->ops_ctx);
    ty__threadpool_free(m->pool);
    ty_free(m->w.layers);
    ty_free(m->tensors);
    ty__huge_free(m->params);
    ty__huge_free(m->grads);
    ty_free(m->acts);
    ty__huge_free(m->act_mem);
    ty__huge_free(m->bwd_mem);
    ty_free(m->pos);
    ty_free(m->tokens);
    ty_free(m->targets);
    ty_free(m);
}

size_t ty__train_n_params(const struct ty_train_model *m) {
    return m->n_params;
}

/* ==== Precision ==== */

static const char *const precision_names[TY_TRAIN_PRECISION_COUNT] = {"f32", "bf16"};

const char *ty__train_precision_name(enum ty_train_precision p) {
    return (unsigned)p < TY_TRAIN_PRECISION_COUNT ? precision_names[p] : "unknown";
}

bool ty__train_precision_from_name(const char *name, enum ty_train_precision *out) {
    for (int i = 0; name && i < TY_TRAIN_PRECISION_COUNT; i++) {
        if (!strcmp(name, precision_names[i])) {
            *out = (enum ty_train_precision)i;
            return true;
        }
    }
    return false;
}

enum ty_status ty__train_model_set_precision(struct ty_train_model *m, enum ty_train_precision p) {
    if (p != TY_TRAIN_PRECISION_F32 && !m->ops->check_precision)
        return ty__error(TY_ERR_UNSUPPORTED, "train: the %s backend trains in f32 only", m->ops->name);
    if (m->ops->check_precision) TY_TRY(m->ops->check_precision(m->ops_ctx, p));
    m->precision = p;
    return TY_OK;
}

/* ==== Initialisation ==== */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ty__train_model_init_random(struct ty_train_model *m, uint64_t seed, float std) {
    for (int i = 0; i < m->n_tensors; i++) {
        const struct ty_train_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        if (t->n_dims == 1) {
            for (size_t j = 0; j < t->n; j++) p[j] = 1.0f;
            continue;
        }
        uint64_t x = seed ^ ((uint64_t)(i + 1) * 0xd1b54a32d192ed03ull);
        for (size_t j = 0; j < t->n; j += 2) {
            /* Box-Muller on two 53-bit uniforms in (0, 1] */
            double u1 = ((double)(splitmix64(&x) >> 11) + 1.0) * 0x1.0p-53;
            double u2 = (double)(splitmix64(&x) >> 11) * 0x1.0p-53;
            double r = sqrt(-2.0 * log(u1));
            p[j] = (float)(r * cos(2.0 * M_PI * u2)) * std;
            if (j + 1 < t->n) p[j + 1] = (float)(r * sin(2.0 * M_PI * u2)) * std;
        }
    }
}

/* Whether the backward's first write to tensor i is a product that overwrites (grads_fresh) rather than adds. */
static bool written_by_product(const struct ty_train_model *m, int i) {
    /* the matrices, whose weight gradients are products; an untied token embedding is a scatter of rows instead (a
     * tied one is the output's product first, then the scatter adds to it) */
    return m->tensors[i].n_dims == 2 && !(i == 0 && !m->cfg.tied);
}

void ty__train_zero_grads(struct ty_train_model *m) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!written_by_product(m, i)) memset(m->grads + m->tensors[i].offset, 0, m->tensors[i].n * sizeof(float));
    m->grads_fresh = true;
}

/* The zeros grads_fresh stands for, written out where a backward ends without its products. */
static void grads_settle(struct ty_train_model *m) {
    if (!m->grads_fresh) return;
    for (int i = 0; i < m->n_tensors; i++)
        if (written_by_product(m, i)) memset(m->grads + m->tensors[i].offset, 0, m->tensors[i].n * sizeof(float));
    m->grads_fresh = false;
}

double ty__train_flops_per_token(const struct ty_train_config *c, int64_t seq_len) {
    double E = c->n_embd, Q = (double)c->n_head * c->head_dim, KV = (double)c->n_head_kv * c->head_dim;
    double per_layer = E * Q * 2 + E * KV * 2 + 3 * E * c->n_ff;
    double matmul = (double)c->n_layer * per_layer + E * c->n_vocab;
    /* causal attention: q.k and p.v over (seq_len + 1) / 2 keys on average, 2 flops each */
    double attn = (double)c->n_layer * Q * 2 * 2 * (double)(seq_len + 1) / 2;
    return 6 * matmul + 3 * attn;
}

/* ==== Activations ==== */

enum ty_status ty__train_model_reserve(struct ty_train_model *m, int64_t n_seq, int64_t seq_len) {
    if (n_seq < 1 || seq_len < 1)
        return ty__error(TY_ERR_INVALID_ARG, "train: batch of %" PRId64 " x %" PRId64 " tokens is empty", n_seq,
                         seq_len);
    if (m->act_mem && n_seq * seq_len <= m->n_seq * m->seq_len && seq_len <= m->seq_len && n_seq <= m->n_seq)
        return TY_OK;
    const struct ty_train_config *c = &m->cfg;
    size_t T = (size_t)(n_seq * seq_len), E = (size_t)c->n_embd, Q = (size_t)c->n_head * (size_t)c->head_dim;
    size_t KV = (size_t)c->n_head_kv * (size_t)c->head_dim, F = (size_t)c->n_ff, V = (size_t)c->n_vocab;
    size_t H = (size_t)c->n_head, Hkv = (size_t)c->n_head_kv, S = (size_t)seq_len;
    size_t per_layer =
        T * E * 4 + T * 2 + T * Q * 3 + T * KV * 3 + T * H + T * Hkv + (size_t)n_seq * H * S * S + T * F * 3;
    size_t total = per_layer * (size_t)c->n_layer + T * E * 2 + T + T * V + T;
    size_t bwd = T * E * 2 + T * Q * 3 + T * KV * 3 + T * F * 3;
    ty__huge_free(m->act_mem);
    ty__huge_free(m->bwd_mem);
    ty_free(m->acts);
    ty_free(m->pos);
    ty_free(m->tokens);
    ty_free(m->targets);
    /* on huge pages: every op streams these, and 4 KiB pages cost a TLB walk per page */
    m->act_mem = ty__huge_calloc(total, sizeof(float));
    m->bwd_mem = ty__huge_calloc(bwd, sizeof(float));
    m->acts = ty__calloc((size_t)c->n_layer, sizeof *m->acts);
    m->pos = ty__malloc(T * sizeof(int32_t));
    m->tokens = ty__malloc(T * sizeof(int32_t));
    m->targets = ty__malloc(T * sizeof(int32_t));
    if (!m->act_mem || !m->bwd_mem || !m->acts || !m->pos || !m->tokens || !m->targets) {
        ty__huge_free(m->act_mem);
        m->act_mem = NULL;
        return ty__error(TY_ERR_NO_MEMORY, "train: out of memory for the activations of %zu tokens (%.1f MiB)", T,
                         (double)(total + bwd) * 4 / (1 << 20));
    }
    float *p = m->act_mem;
#define TAKE(n) (p += (n), p - (n))
    for (int l = 0; l < c->n_layer; l++) {
        struct ty_train_layer_acts *a = &m->acts[l];
        a->x_in = TAKE(T * E);
        a->xn1 = TAKE(T * E);
        a->rstd1 = TAKE(T);
        a->q = TAKE(T * Q);
        a->k = TAKE(T * KV);
        a->v = TAKE(T * KV);
        a->rstdq = TAKE(T * H);
        a->rstdk = TAKE(T * Hkv);
        a->qr = TAKE(T * Q);
        a->kr = TAKE(T * KV);
        a->p = TAKE((size_t)n_seq * H * S * S);
        a->att = TAKE(T * Q);
        a->x_mid = TAKE(T * E);
        a->xn2 = TAKE(T * E);
        a->rstd2 = TAKE(T);
        a->g = TAKE(T * F);
        a->u = TAKE(T * F);
        a->h = TAKE(T * F);
    }
    m->x_final = TAKE(T * E);
    m->xf = TAKE(T * E);
    m->rstdf = TAKE(T);
    m->logits = TAKE(T * V);
    m->loss_row = TAKE(T);
    TY_ASSERT((size_t)(p - m->act_mem) == total);
    p = m->bwd_mem;
    m->dx = TAKE(T * E);
    m->dxn = TAKE(T * E);
    m->dq = TAKE(T * Q);
    m->datt = TAKE(T * Q);
    m->dtmp = TAKE(T * Q);
    m->dk = TAKE(T * KV);
    m->dv = TAKE(T * KV);
    p += T * KV; /* spare: dtmp holds (T, max(Q, KV)) */
    m->dg = TAKE(T * F);
    m->du = TAKE(T * F);
    m->dh = TAKE(T * F);
#undef TAKE
    TY_ASSERT((size_t)(p - m->bwd_mem) == bwd);
    m->n_seq = n_seq;
    m->seq_len = seq_len;
    return TY_OK;
}

/* ==== Forward ==== */

/* Y (T, out) = X (T, in) W^T, W (out, in) read transposed. Accumulates into Y when `acc`. */
static void mm_fwd(struct ty_train_model *m, float *Y, const float *X, const float *W, int64_t T, int64_t in,
                   int64_t out, bool acc) {
    m->ops->gemm(m->ops_ctx, T, out, in, X, in, 1, W, 1, in, Y, out, acc, m->precision);
}

/* dX (T, in) (+)= dY (T, out) W (out, in); dW (out, in) += dY^T X. */
static void mm_bwd(struct ty_train_model *m, float *dX, bool acc_dx, float *dW, const float *dY, const float *X,
                   const float *W, int64_t T, int64_t in, int64_t out) {
    if (dX) m->ops->gemm(m->ops_ctx, T, in, out, dY, out, 1, W, in, 1, dX, in, acc_dx, m->precision);
    m->ops->gemm(m->ops_ctx, out, in, T, dY, 1, out, X, in, 1, dW, in, !m->grads_fresh, m->precision);
}

static enum ty_status forward(struct ty_train_model *m, const int32_t *tokens, int64_t n_seq, int64_t S) {
    const struct ty_train_config *c = &m->cfg;
    const struct ty_train_ops *o = m->ops;
    void *ox = m->ops_ctx;
    TY_TRY(ty__train_model_reserve(m, n_seq, S));
    int64_t T = n_seq * S, E = c->n_embd, H = c->n_head, Hkv = c->n_head_kv, hd = c->head_dim;
    int64_t Q = H * hd, KV = Hkv * hd, F = c->n_ff, V = c->n_vocab;
    for (int64_t s = 0; s < n_seq; s++) {
        for (int64_t t = 0; t < S; t++) {
            int32_t in = tokens[s * (S + 1) + t], tg = tokens[s * (S + 1) + t + 1];
            if (in < 0 || in >= V)
                return ty__error(TY_ERR_INVALID_ARG,
                                 "train: token id %d at sequence %" PRId64 ", position %" PRId64
                                 " is outside the vocabulary of %" PRId64,
                                 in, s, t, V);
            if (tg >= V)
                return ty__error(TY_ERR_INVALID_ARG, "train: target id %d is outside the vocabulary of %" PRId64, tg,
                                 V);
            m->tokens[s * S + t] = in;
            m->targets[s * S + t] = tg;
            m->pos[s * S + t] = (int32_t)t;
        }
    }
    float *x = m->acts[0].x_in;
    for (int64_t t = 0; t < T; t++)
        memcpy(x + t * E, m->w.tok_embd + (size_t)m->tokens[t] * (size_t)E, (size_t)E * sizeof(float));
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int l = 0; l < c->n_layer; l++) {
        struct ty_train_layer_acts *a = &m->acts[l];
        const struct ty_train_layer *W = &m->w.layers[l];
        float *x_out = l + 1 < c->n_layer ? m->acts[l + 1].x_in : m->x_final;
        o->rms_norm_fwd(ox, a->xn1, a->rstd1, a->x_in, W->attn_norm, T, E, c->norm_eps);
        mm_fwd(m, a->q, a->xn1, W->wq, T, E, Q, false);
        mm_fwd(m, a->k, a->xn1, W->wk, T, E, KV, false);
        mm_fwd(m, a->v, a->xn1, W->wv, T, E, KV, false);
        o->rms_norm_fwd(ox, a->qr, a->rstdq, a->q, W->q_norm, T * H, hd, c->norm_eps);
        o->rms_norm_fwd(ox, a->kr, a->rstdk, a->k, W->k_norm, T * Hkv, hd, c->norm_eps);
        o->rope(ox, a->qr, m->pos, T, H, hd, &m->rope, false);
        o->rope(ox, a->kr, m->pos, T, Hkv, hd, &m->rope, false);
        TY_TRY(o->attn_fwd(ox, a->att, a->p, a->qr, a->kr, a->v, n_seq, S, H, Hkv, hd, scale, m->precision));
        memcpy(a->x_mid, a->x_in, (size_t)(T * E) * sizeof(float));
        mm_fwd(m, a->x_mid, a->att, W->wo, T, Q, E, true);
        o->rms_norm_fwd(ox, a->xn2, a->rstd2, a->x_mid, W->ffn_norm, T, E, c->norm_eps);
        mm_fwd(m, a->g, a->xn2, W->w_gate, T, E, F, false);
        mm_fwd(m, a->u, a->xn2, W->w_up, T, E, F, false);
        o->swiglu_fwd(ox, a->h, a->g, a->u, T * F);
        memcpy(x_out, a->x_mid, (size_t)(T * E) * sizeof(float));
        mm_fwd(m, x_out, a->h, W->w_down, T, F, E, true);
    }
    o->rms_norm_fwd(ox, m->xf, m->rstdf, m->x_final, m->w.output_norm, T, E, c->norm_eps);
    mm_fwd(m, m->logits, m->xf, m->w.output, T, E, V, false);
    return TY_OK;
}

static void sum_loss(const struct ty_train_model *m, int64_t T, double *loss, int64_t *n_counted) {
    double sum = 0.0;
    int64_t n = 0;
    for (int64_t t = 0; t < T; t++) {
        if (m->targets[t] < 0) continue;
        sum += m->loss_row[t];
        n++;
    }
    *loss = n ? sum / (double)n : 0.0;
    if (n_counted) *n_counted = n;
}

static int64_t count_targets(const int32_t *tokens, int64_t n_seq, int64_t S) {
    int64_t n = 0;
    for (int64_t s = 0; s < n_seq; s++)
        for (int64_t t = 1; t <= S; t++) n += tokens[s * (S + 1) + t] >= 0;
    return n;
}

enum ty_status ty__train_forward(struct ty_train_model *m, const int32_t *tokens, int64_t n_seq, int64_t seq_len,
                                 double *loss, int64_t *n_counted) {
    TY_TRY(forward(m, tokens, n_seq, seq_len));
    int64_t T = n_seq * seq_len;
    /* the logits stay readable: cross_entropy with grad_scale 0 only computes the loss */
    m->ops->cross_entropy(m->ops_ctx, m->logits, m->loss_row, m->targets, T, m->cfg.n_vocab, 0.0f);
    sum_loss(m, T, loss, n_counted);
    return TY_OK;
}

/* ==== Backward ==== */

static enum ty_status forward_backward(struct ty_train_model *m, const int32_t *tokens, int64_t n_seq, int64_t seq_len,
                                       float grad_scale, double *loss) {
    TY_TRY(forward(m, tokens, n_seq, seq_len));
    const struct ty_train_config *c = &m->cfg;
    const struct ty_train_ops *o = m->ops;
    void *ox = m->ops_ctx;
    int64_t S = seq_len, T = n_seq * S, E = c->n_embd, H = c->n_head, Hkv = c->n_head_kv, hd = c->head_dim;
    int64_t Q = H * hd, KV = Hkv * hd, F = c->n_ff, V = c->n_vocab;
    int64_t n_count = count_targets(tokens, n_seq, S);
    /* the mean over counted targets, as torch's cross_entropy with reduction 'mean' */
    float gs = n_count ? grad_scale / (float)n_count : 0.0f;
    o->cross_entropy(ox, m->logits, m->loss_row, m->targets, T, V, gs);
    sum_loss(m, T, loss, NULL);
    if (n_count == 0) {
        grads_settle(m);
        return TY_OK;
    }

    /* logits = xf Wout^T */
    mm_bwd(m, m->dxn, false, m->g.output, m->logits, m->xf, m->w.output, T, E, V);
    memset(m->dx, 0, (size_t)(T * E) * sizeof(float));
    o->rms_norm_bwd(ox, m->dx, m->g.output_norm, m->dxn, m->x_final, m->rstdf, m->w.output_norm, T, E);
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int l = c->n_layer - 1; l >= 0; l--) {
        struct ty_train_layer_acts *a = &m->acts[l];
        const struct ty_train_layer *W = &m->w.layers[l];
        struct ty_train_layer *G = &m->g.layers[l];
        /* m->dx is the gradient of the layer's output; the residual passes it through unchanged */
        mm_bwd(m, m->dh, false, G->w_down, m->dx, a->h, W->w_down, T, F, E);
        o->swiglu_bwd(ox, m->dg, m->du, m->dh, a->g, a->u, T * F);
        mm_bwd(m, m->dxn, false, G->w_gate, m->dg, a->xn2, W->w_gate, T, E, F);
        mm_bwd(m, m->dxn, true, G->w_up, m->du, a->xn2, W->w_up, T, E, F);
        o->rms_norm_bwd(ox, m->dx, G->ffn_norm, m->dxn, a->x_mid, a->rstd2, W->ffn_norm, T, E);
        /* attention block */
        mm_bwd(m, m->datt, false, G->wo, m->dx, a->att, W->wo, T, Q, E);
        TY_TRY(o->attn_bwd(ox, m->dq, m->dk, m->dv, m->datt, a->p, a->qr, a->kr, a->v, n_seq, S, H, Hkv, hd, scale,
                           m->precision));
        o->rope(ox, m->dq, m->pos, T, H, hd, &m->rope, true);
        o->rope(ox, m->dk, m->pos, T, Hkv, hd, &m->rope, true);
        /* datt is free again: it takes the gradient of q before its norm, dtmp that of k */
        memset(m->datt, 0, (size_t)(T * Q) * sizeof(float));
        memset(m->dtmp, 0, (size_t)(T * KV) * sizeof(float));
        o->rms_norm_bwd(ox, m->datt, G->q_norm, m->dq, a->q, a->rstdq, W->q_norm, T * H, hd);
        o->rms_norm_bwd(ox, m->dtmp, G->k_norm, m->dk, a->k, a->rstdk, W->k_norm, T * Hkv, hd);
        mm_bwd(m, m->dxn, false, G->wq, m->datt, a->xn1, W->wq, T, E, Q);
        mm_bwd(m, m->dxn, true, G->wk, m->dtmp, a->xn1, W->wk, T, E, KV);
        mm_bwd(m, m->dxn, true, G->wv, m->dv, a->xn1, W->wv, T, E, KV);
        o->rms_norm_bwd(ox, m->dx, G->attn_norm, m->dxn, a->x_in, a->rstd1, W->attn_norm, T, E);
    }
    m->grads_fresh = false; /* every product has written its matrix */
    /* embedding: rows of one token add in token order, so the sum does not depend on threads */
    for (int64_t t = 0; t < T; t++) {
        float *ge = m->g.tok_embd + (size_t)m->tokens[t] * (size_t)E;
        const float *d = m->dx + t * E;
        for (int64_t i = 0; i < E; i++) ge[i] += d[i];
    }
    return TY_OK;
}

enum ty_status ty__train_forward_backward(struct ty_train_model *m, const int32_t *tokens, int64_t n_seq,
                                          int64_t seq_len, float grad_scale, double *loss) {
    enum ty_status st = forward_backward(m, tokens, n_seq, seq_len, grad_scale, loss);
    if (st != TY_OK) grads_settle(m); /* a failed step leaves zeros, not a mix of written and stale matrices */
    return st;
}

/* ==== GGUF ==== */

enum ty_status ty__train_model_load_gguf(const char *path, int n_threads, struct ty_train_model **out,
                                         struct ty_tokenizer **tok_out) {
    *out = NULL;
    if (tok_out) *tok_out = NULL;
    struct ty_model *src = NULL;
    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = 1;
    mp.backend = "cpu";
    TY_TRY(ty_model_load(path, &mp, &src));
    const struct ty_hparams *hp = &src->hp;
    enum ty_status st = TY_OK;
    if (src->arch != TY_ARCH_QWEN3 || hp->n_expert > 0)
        st = ty__error(TY_ERR_UNSUPPORTED, "%s: architecture %s cannot be trained; the trainer supports dense qwen3",
                       path, src->arch_name);
    else if (hp->head_dim_k != hp->head_dim_v || hp->rope.n_dims != hp->head_dim_k)
        st = ty__error(TY_ERR_UNSUPPORTED, "%s: partial RoPE or key/value head sizes that differ are not supported",
                       path);
    struct ty_train_model *m = NULL;
    if (st == TY_OK) {
        struct ty_train_config c = {.n_vocab = hp->n_vocab,
                                    .n_embd = hp->n_embd,
                                    .n_layer = hp->n_layer,
                                    .n_head = hp->n_head,
                                    .n_head_kv = hp->n_head_kv,
                                    .head_dim = hp->head_dim_k,
                                    .n_ff = hp->n_ff,
                                    .n_ctx = hp->n_ctx_train,
                                    .norm_eps = hp->norm_eps,
                                    .rope = hp->rope,
                                    .tied = !ty__gguf_find_tensor(src->gguf, "output.weight")};
        st = ty__train_model_init(&c, n_threads, &m);
    }
    for (int i = 0; st == TY_OK && i < m->n_tensors; i++) {
        const struct ty_train_tensor *t = &m->tensors[i];
        const struct ty_gguf_tensor *gt = ty__gguf_find_tensor(src->gguf, t->name);
        const struct ty_type_traits *tt = gt ? ty__type_traits(gt->type) : NULL;
        if (!gt)
            st = ty__error(TY_ERR_FORMAT, "%s: tensor %s is missing", path, t->name);
        else if (gt->ne[0] != t->ne[0] || gt->ne[1] * gt->ne[2] * gt->ne[3] != t->ne[1])
            st = ty__error(TY_ERR_FORMAT,
                           "%s: tensor %s has shape %" PRId64 " x %" PRId64 ", expected %" PRId64 " x %" PRId64, path,
                           t->name, gt->ne[0], gt->ne[1], t->ne[0], t->ne[1]);
        else if (!tt || !tt->to_float)
            st = ty__error(TY_ERR_UNSUPPORTED, "%s: tensor %s has type %s, which cannot be dequantised", path, t->name,
                           ty_type_name(gt->type));
        else
            tt->to_float(gt->data, m->params + t->offset, (int64_t)t->n);
    }
    if (st == TY_OK && tok_out) st = ty__tokenizer_load_gguf_file(path, tok_out);
    ty_model_free(src);
    if (st != TY_OK) {
        ty__train_model_free(m);
        return st;
    }
    *out = m;
    return TY_OK;
}

static enum ty_status write_rope_scaling(struct ty_gguf_writer *w, const struct ty_rope_config *r) {
    if (r->scaling == TY_ROPE_SCALING_NONE) return TY_OK;
    TY_TRY(ty__gguf_writer_set_str(w, "qwen3.rope.scaling.type",
                                   r->scaling == TY_ROPE_SCALING_LINEAR ? "linear" : "yarn"));
    TY_TRY(ty__gguf_writer_set_f32(w, "qwen3.rope.scaling.factor", r->factor));
    if (r->scaling == TY_ROPE_SCALING_YARN) {
        TY_TRY(ty__gguf_writer_set_u32(w, "qwen3.rope.scaling.original_context_length", (uint32_t)r->orig_ctx));
        if (r->attn_factor > 0) TY_TRY(ty__gguf_writer_set_f32(w, "qwen3.rope.scaling.attn_factor", r->attn_factor));
        if (r->beta_fast > 0) TY_TRY(ty__gguf_writer_set_f32(w, "qwen3.rope.scaling.yarn_beta_fast", r->beta_fast));
        if (r->beta_slow > 0) TY_TRY(ty__gguf_writer_set_f32(w, "qwen3.rope.scaling.yarn_beta_slow", r->beta_slow));
    }
    return TY_OK;
}

static enum ty_status save_gguf(const struct ty_train_model *m, struct ty_tokenizer *tok, const char *name,
                                const char *path, struct ty_gguf_writer *w) {
    const struct ty_train_config *c = &m->cfg;
    struct ty_mkmodel_preset pr = {.name = "trained",
                                   .hf_name = name,
                                   .arch = "qwen3",
                                   .n_vocab = c->n_vocab,
                                   .n_embd = c->n_embd,
                                   .n_ff = c->n_ff,
                                   .n_layer = c->n_layer,
                                   .n_head = c->n_head,
                                   .n_head_kv = c->n_head_kv,
                                   .head_dim = c->head_dim,
                                   .n_ctx = c->n_ctx,
                                   .rope_theta = c->rope.freq_base,
                                   .norm_eps = c->norm_eps,
                                   .tied = c->tied,
                                   .qk_norm = true};
    int32_t n_tok = ty_tokenizer_n_vocab(tok);
    if (n_tok > c->n_vocab)
        return ty__error(TY_ERR_INVALID_ARG, "train: the tokenizer has %d tokens, more than the model's %d rows", n_tok,
                         c->n_vocab);
    if (n_tok < c->n_vocab) TY_TRY(ty__tokenizer_pad_vocab(tok, c->n_vocab));
    TY_TRY(ty__mkmodel_write_hparams(w, &pr, c->n_layer, (uint32_t)ty__convert_file_type(TY_TYPE_F32), name));
    TY_TRY(write_rope_scaling(w, &c->rope));
    TY_TRY(ty__tokenizer_to_gguf(tok, w));
    for (int i = 0; i < m->n_tensors; i++)
        TY_TRY(ty__gguf_writer_add_tensor(w, m->tensors[i].name, TY_TYPE_F32, m->tensors[i].n_dims, m->tensors[i].ne));
    TY_TRY(ty__gguf_writer_begin(w, path));
    for (int i = 0; i < m->n_tensors; i++)
        TY_TRY(ty__gguf_writer_write_tensor(w, m->params + m->tensors[i].offset, m->tensors[i].n * sizeof(float)));
    return ty__gguf_writer_finish(w);
}

enum ty_status ty__train_model_save_gguf(const struct ty_train_model *m, struct ty_tokenizer *tok, const char *name,
                                         const char *path) {
    struct ty_gguf_writer *w = NULL;
    enum ty_status st = ty__gguf_writer_init(&w);
    if (st == TY_OK) st = save_gguf(m, tok, name, path, w);
    ty__gguf_writer_free(w); /* after a failure, removes the temporary file */
    return st;
}
