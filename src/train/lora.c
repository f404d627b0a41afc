/*
 * lora.c - LoRA (Hu et al., arXiv:2106.09685) on the trainable model: low-rank adapters W = W0 + (alpha / r) B A on
 * chosen projections, trained with everything else frozen; adapters saved as their own GGUF (llama.cpp's adapter
 * layout: general.type "adapter", adapter.type "lora", adapter.lora.alpha, tensors "<weight>.lora_a" (in, r) and
 * "<weight>.lora_b" (r, out)); and applied to a loaded inference model (ty__lora_apply), merged into new f32 weights.
 *
 * Training reuses the full model's forward and backward: the model's parameters hold the merged W = W0 + s B A
 * (refreshed after every adapter update), its backward yields dW, and the chain rule gives the adapters' gradients,
 * dB = s dW A^T and dA = s B^T dW. That costs a full dW per adapted matrix (as full fine-tuning would), which for
 * the small models trained here is cheap next to the products over the batch, and it keeps one tested backward.
 */
#include "train/lora.h"

#include "model/model-impl.h"
#include "model/quant.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

static const char *const target_names[TY_LORA_N_TARGETS] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                            "ffn_gate", "ffn_up", "ffn_down"};

enum ty_status ty__lora_parse_targets(const char *list, unsigned *mask) {
    *mask = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        static const char *const short_names[TY_LORA_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
        bool found = false;
        for (int t = 0; t < TY_LORA_N_TARGETS; t++) {
            if ((strlen(short_names[t]) == n && !strncmp(p, short_names[t], n)) ||
                (strlen(target_names[t]) == n && !strncmp(p, target_names[t], n))) {
                *mask |= 1u << t;
                found = true;
            }
        }
        if (!found)
            return ty__error(TY_ERR_INVALID_ARG, "LoRA target '%.*s' is unknown; use q, k, v, o, gate, up, down",
                             (int)n, p);
        p += n + (e ? 1 : 0);
    }
    if (!*mask) return ty__error(TY_ERR_INVALID_ARG, "no LoRA target given");
    return TY_OK;
}

/* The base tensor index in the model's layout of target t of layer l. */
static int base_index(const struct ty_train_model *m, int l, int t) {
    char name[48];
    snprintf(name, sizeof name, "blk.%d.%s.weight", l, target_names[t]);
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return i;
    return -1;
}

void ty__lora_free(struct ty_lora *lo) {
    if (!lo) return;
    ty_free(lo->ad);
    ty_free(lo->tensors);
    ty_free(lo->params);
    ty_free(lo->grads);
    ty_free(lo->base);
    ty_free(lo->tmp);
    ty_free(lo);
}

enum ty_status ty__lora_init(struct ty_train_model *m, int rank, float alpha, unsigned targets, uint64_t seed,
                             struct ty_lora **out) {
    *out = NULL;
    if (rank < 1) return ty__error(TY_ERR_INVALID_ARG, "LoRA rank must be at least 1 (got %d)", rank);
    struct ty_lora *lo = ty__calloc(1, sizeof *lo);
    if (!lo) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    lo->rank = rank;
    lo->alpha = alpha;
    lo->scale = alpha / (float)rank;
    int n = 0;
    for (int t = 0; t < TY_LORA_N_TARGETS; t++)
        if (targets & (1u << t)) n++;
    n *= m->cfg.n_layer;
    lo->ad = ty__calloc((size_t)n, sizeof *lo->ad);
    lo->tensors = ty__calloc((size_t)n * 2, sizeof *lo->tensors);
    enum ty_status st = lo->ad && lo->tensors ? TY_OK : ty__error(TY_ERR_NO_MEMORY, "out of memory");
    size_t n_base = 0, max_w = 0;
    for (int l = 0; st == TY_OK && l < m->cfg.n_layer; l++) {
        for (int t = 0; t < TY_LORA_N_TARGETS; t++) {
            if (!(targets & (1u << t))) continue;
            struct ty_lora_adapter *a = &lo->ad[lo->n_ad++];
            a->base = base_index(m, l, t);
            TY_ASSERT(a->base >= 0);
            const struct ty_train_tensor *bt = &m->tensors[a->base];
            a->in = bt->ne[0];
            a->out = bt->ne[1];
            a->base_offset = n_base;
            n_base += bt->n;
            max_w = bt->n > max_w ? bt->n : max_w;
            struct ty_train_tensor *ta = &lo->tensors[lo->n_tensors++], *tb = &lo->tensors[lo->n_tensors++];
            snprintf(ta->name, sizeof ta->name, "%s.lora_a", bt->name);
            ta->n_dims = 2, ta->ne[0] = a->in, ta->ne[1] = rank, ta->offset = lo->n_params;
            ta->n = (size_t)a->in * (size_t)rank, ta->decay = false;
            lo->n_params += ta->n;
            snprintf(tb->name, sizeof tb->name, "%s.lora_b", bt->name);
            tb->n_dims = 2, tb->ne[0] = rank, tb->ne[1] = a->out, tb->offset = lo->n_params;
            tb->n = (size_t)a->out * (size_t)rank, tb->decay = false;
            lo->n_params += tb->n;
        }
    }
    if (st == TY_OK) {
        lo->params = ty__calloc(lo->n_params, sizeof(float));
        lo->grads = ty__calloc(lo->n_params, sizeof(float));
        lo->base = ty__malloc(n_base * sizeof(float));
        lo->tmp = ty__malloc((max_w > (size_t)rank * 4096 ? max_w : (size_t)rank * 4096) * sizeof(float));
        if (!lo->params || !lo->grads || !lo->base || !lo->tmp)
            st = ty__error(TY_ERR_NO_MEMORY, "out of memory for LoRA adapters");
    }
    if (st != TY_OK) {
        ty__lora_free(lo);
        return st;
    }
    /* A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform(a = sqrt 5)), B = 0: training starts at W0 */
    uint64_t x = seed ^ 0x5851f42d4c957f2dull;
    for (int i = 0; i < lo->n_ad; i++) {
        struct ty_lora_adapter *a = &lo->ad[i];
        const struct ty_train_tensor *bt = &m->tensors[a->base];
        memcpy(lo->base + a->base_offset, m->params + bt->offset, bt->n * sizeof(float));
        float *A = lo->params + lo->tensors[2 * i].offset, bound = 1.0f / sqrtf((float)a->in);
        for (size_t k = 0; k < lo->tensors[2 * i].n; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            A[k] = ((float)((double)(x >> 11) * 0x1.0p-53) * 2.0f - 1.0f) * bound;
        }
    }
    *out = lo;
    return TY_OK;
}

void ty__lora_sync(struct ty_lora *lo, struct ty_train_model *m) {
    for (int i = 0; i < lo->n_ad; i++) {
        const struct ty_lora_adapter *a = &lo->ad[i];
        const struct ty_train_tensor *bt = &m->tensors[a->base];
        const float *A = lo->params + lo->tensors[2 * i].offset, *B = lo->params + lo->tensors[2 * i + 1].offset;
        float *W = m->params + bt->offset;
        /* W = W0 + s (B A): B A first, then scaled and added, as the inference-side merge does; in f32 whatever the
         * model's precision, as these products make master weights and gradients, not activations */
        m->ops->gemm(m->ops_ctx, a->out, a->in, lo->rank, B, lo->rank, 1, A, a->in, 1, lo->tmp, a->in, false,
                     TY_TRAIN_PRECISION_F32);
        const float *W0 = lo->base + a->base_offset;
        for (size_t k = 0; k < bt->n; k++) W[k] = W0[k] + lo->scale * lo->tmp[k];
    }
}

void ty__lora_grads(struct ty_lora *lo, const struct ty_train_model *m) {
    for (int i = 0; i < lo->n_ad; i++) {
        const struct ty_lora_adapter *a = &lo->ad[i];
        const float *dW = m->grads + m->tensors[a->base].offset;
        const float *A = lo->params + lo->tensors[2 * i].offset, *B = lo->params + lo->tensors[2 * i + 1].offset;
        float *dA = lo->grads + lo->tensors[2 * i].offset, *dB = lo->grads + lo->tensors[2 * i + 1].offset;
        int64_t r = lo->rank;
        /* dB (out, r) = s dW (out, in) A^T, A (r, in) read transposed */
        m->ops->gemm(m->ops_ctx, a->out, r, a->in, dW, a->in, 1, A, 1, a->in, dB, r, false, TY_TRAIN_PRECISION_F32);
        /* dA (r, in) = s B^T (r, out) dW (out, in) */
        m->ops->gemm(m->ops_ctx, r, a->in, a->out, B, 1, r, dW, a->in, 1, dA, a->in, false, TY_TRAIN_PRECISION_F32);
        for (size_t k = 0; k < lo->tensors[2 * i].n; k++) dA[k] *= lo->scale;
        for (size_t k = 0; k < lo->tensors[2 * i + 1].n; k++) dB[k] *= lo->scale;
    }
}

enum ty_status ty__lora_save(const struct ty_lora *lo, const char *path) {
    struct ty_gguf_writer *w = NULL;
    enum ty_status st = ty__gguf_writer_init(&w);
    if (st == TY_OK) st = ty__gguf_writer_set_str(w, "general.architecture", "qwen3");
    if (st == TY_OK) st = ty__gguf_writer_set_str(w, "general.type", "adapter");
    if (st == TY_OK) st = ty__gguf_writer_set_str(w, "adapter.type", "lora");
    if (st == TY_OK) st = ty__gguf_writer_set_f32(w, "adapter.lora.alpha", lo->alpha);
    for (int i = 0; st == TY_OK && i < lo->n_tensors; i++)
        st = ty__gguf_writer_add_tensor(w, lo->tensors[i].name, TY_TYPE_F32, 2, lo->tensors[i].ne);
    if (st == TY_OK) st = ty__gguf_writer_begin(w, path);
    for (int i = 0; st == TY_OK && i < lo->n_tensors; i++)
        st = ty__gguf_writer_write_tensor(w, lo->params + lo->tensors[i].offset, lo->tensors[i].n * sizeof(float));
    if (st == TY_OK) st = ty__gguf_writer_finish(w);
    ty__gguf_writer_free(w);
    return st;
}

/* ==== Applying an adapter file to a loaded model ==== */

struct ty_lora_applied {
    struct ty_buffer *buf; /* the merged f32 weights */
};

void ty__lora_applied_free(struct ty_lora_applied *la) {
    if (!la) return;
    ty__backend_buffer_free(la->buf);
    ty_free(la);
}

/* The model's weight tensor of name "blk.L.<target>.weight", or NULL. */
static struct ty_tensor *model_weight(struct ty_model *m, const char *name, size_t len) {
    for (int l = 0; l < m->hp.n_layer; l++) {
        struct ty_layer *L = &m->layers[l];
        struct ty_tensor *ts[TY_LORA_N_TARGETS] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (int t = 0; t < TY_LORA_N_TARGETS; t++) {
            char want[64];
            int n = snprintf(want, sizeof want, "blk.%d.%s.weight", l, target_names[t]);
            if ((size_t)n == len && !strncmp(want, name, len)) return ts[t];
        }
    }
    return NULL;
}

/* Adapter tensor i when it is "<weight>.lora_a": *tb its "<weight>.lora_b" and *w the model's weight (either NULL
 * when there is none), *wlen the length of "<weight>". false for any other tensor. */
static bool lora_pair(struct ty_model *m, struct ty_gguf *g, int64_t i, const struct ty_gguf_tensor **ta,
                      const struct ty_gguf_tensor **tb, struct ty_tensor **w, int *wlen) {
    *ta = ty__gguf_tensor(g, i);
    size_t len = strlen((*ta)->name);
    if (len < 7 || strcmp((*ta)->name + len - 7, ".lora_a") != 0) return false;
    char bname[160];
    snprintf(bname, sizeof bname, "%.*s.lora_b", (int)(len - 7), (*ta)->name);
    *tb = ty__gguf_find_tensor(g, bname);
    *w = model_weight(m, (*ta)->name, len - 7);
    *wlen = (int)(len - 7);
    return true;
}

static enum ty_status apply(struct ty_model *m, struct ty_gguf *g, const char *path, float user_scale,
                            struct ty_lora_applied *la) {
    struct ty_gguf_str type;
    if (ty__gguf_get_str(g, "adapter.type", &type) != TY_OK || type.len != 4 || memcmp(type.data, "lora", 4) != 0)
        return ty__error(TY_ERR_FORMAT, "%s is not a LoRA adapter (adapter.type \"lora\" is missing)", path);
    double alpha;
    TY_TRY(ty__gguf_get_float(g, "adapter.lora.alpha", &alpha));
    int64_t n = ty__gguf_n_tensors(g);
    /* first pass: check every pair and size the buffer */
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        const struct ty_gguf_tensor *ta, *tb;
        struct ty_tensor *w;
        int wlen;
        if (!lora_pair(m, g, i, &ta, &tb, &w, &wlen)) continue;
        if (!tb || !w)
            return ty__error(TY_ERR_FORMAT, "%s: %s has %s", path, ta->name,
                             !tb ? "no matching lora_b" : "no weight of that name in the model");
        if (ta->type != TY_TYPE_F32 || tb->type != TY_TYPE_F32 || ta->ne[0] != w->ne[0] || tb->ne[1] != w->ne[1] ||
            ta->ne[1] != tb->ne[0])
            return ty__error(TY_ERR_FORMAT, "%s: %s does not fit the model's %" PRId64 " x %" PRId64 " weight", path,
                             ta->name, w->ne[0], w->ne[1]);
        total += ((size_t)(w->ne[0] * w->ne[1]) * sizeof(float) + 63) & ~(size_t)63;
    }
    if (total == 0) return ty__error(TY_ERR_FORMAT, "%s holds no lora_a / lora_b tensor pair", path);
    TY_TRY(ty__backend_buffer_alloc(m->be, total, &la->buf));
    size_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const struct ty_gguf_tensor *ta, *tb;
        struct ty_tensor *w;
        int wlen;
        if (!lora_pair(m, g, i, &ta, &tb, &w, &wlen)) continue;
        /* the base weight from the file (the backend may hold it repacked), dequantised */
        char wname[160];
        snprintf(wname, sizeof wname, "%.*s", wlen, ta->name);
        const struct ty_gguf_tensor *src = ty__gguf_find_tensor(m->gguf, wname);
        TY_ASSERT(src);
        int64_t in = w->ne[0], out = w->ne[1], r = ta->ne[1];
        float *W = ty__malloc((size_t)(in * out) * sizeof(float));
        float *A = ty__malloc((size_t)(in * r) * sizeof(float)), *B = ty__malloc((size_t)(out * r) * sizeof(float));
        if (!W || !A || !B) {
            ty_free(W), ty_free(A), ty_free(B);
            return ty__error(TY_ERR_NO_MEMORY, "out of memory applying %s", path);
        }
        ty__type_traits(src->type)->to_float(src->data, W, in * out);
        memcpy(A, ta->data, (size_t)(in * r) * sizeof(float));
        memcpy(B, tb->data, (size_t)(out * r) * sizeof(float));
        float s = (float)(alpha / (double)r) * user_scale;
        /* W += s (B A), the product summed in k order as the trainer's merge does */
        for (int64_t o = 0; o < out; o++) {
            for (int64_t c = 0; c < in; c++) {
                float acc = 0.0f;
                for (int64_t k = 0; k < r; k++) acc += B[o * r + k] * A[k * in + c];
                W[o * in + c] = W[o * in + c] + s * acc;
            }
        }
        struct ty_tensor nt;
        ty__tensor_init(&nt, la->buf, off, TY_TYPE_F32, in, out, 1, 1);
        enum ty_status st = ty__backend_tensor_set(m->be, &nt, W, 0, (size_t)(in * out) * sizeof(float));
        ty_free(W), ty_free(A), ty_free(B);
        TY_TRY(st);
        *w = nt; /* every layer pointer to this weight now sees the merged copy */
        TY_TRY(ty__backend_weight_prepare(m->be, w));
        off += ((size_t)(in * out) * sizeof(float) + 63) & ~(size_t)63;
    }
    return TY_OK;
}

enum ty_status ty__lora_apply(struct ty_model *m, const char *path, float scale, struct ty_lora_applied **out) {
    *out = NULL;
    struct ty_gguf *g = NULL;
    TY_TRY(ty__gguf_open(path, &g));
    struct ty_lora_applied *la = ty__calloc(1, sizeof *la);
    enum ty_status st = la ? apply(m, g, path, scale, la) : ty__error(TY_ERR_NO_MEMORY, "out of memory");
    ty__gguf_close(g);
    if (st != TY_OK) {
        ty__lora_applied_free(la);
        return ty__error_prefix(st, "LoRA %s", path);
    }
    *out = la;
    return TY_OK;
}
