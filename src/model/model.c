/*
 * model.c - loading a Qwen2/Qwen3/Qwen3-MoE/Qwen3-Next/Qwen3.5 model from GGUF: the architecture and every
 * hyperparameter from the file's metadata, then every tensor by its llama.cpp name, checked for presence, type and
 * shape against those hyperparameters before anything runs. Weights stay in the mapped file: on a host backend the
 * whole tensor data section becomes one zero-copy buffer and each weight a view of it; a GPU backend uploads the
 * section once.
 */
#include "model/model-impl.h"
#include "train/lora.h"
#include "model/quant.h"
#include "model/tokenizer.h"

#include <inttypes.h>
#include <stdio.h>

static const char *const arch_names[TY_ARCH_COUNT] = {"qwen2", "qwen3", "qwen3moe", "qwen3next", "qwen35", "qwen35moe"};

/* ==== Hyperparameters ==== */

/* Reads `<arch>.<suffix>` as an integer in [min, max]. Absent: `def` when not required, else an error. */
static enum ty_status hp_int(const struct ty_gguf *g, const char *arch, const char *suffix, bool required, int64_t def,
                             int64_t min, int64_t max, int32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    enum ty_status st = ty__gguf_get_int(g, key, &v);
    if (st == TY_ERR_NOT_FOUND) {
        if (required)
            return ty__error(TY_ERR_FORMAT, "metadata key '%s' is missing; the file is not a complete %s model", key,
                             arch);
        v = def;
    } else if (st != TY_OK) {
        return st;
    }
    if (v < min || v > max)
        return ty__error(TY_ERR_FORMAT, "metadata key '%s' = %" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]",
                         key, v, min, max);
    *out = (int32_t)v;
    return TY_OK;
}

static enum ty_status hp_float(const struct ty_gguf *g, const char *arch, const char *suffix, bool required, double def,
                               double min, double max, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    double v;
    enum ty_status st = ty__gguf_get_float(g, key, &v);
    if (st == TY_ERR_NOT_FOUND) {
        if (required)
            return ty__error(TY_ERR_FORMAT, "metadata key '%s' is missing; the file is not a complete %s model", key,
                             arch);
        v = def;
    } else if (st != TY_OK) {
        return st;
    }
    if (!(v >= min && v <= max))
        return ty__error(TY_ERR_FORMAT, "metadata key '%s' = %g is out of range [%g, %g]", key, v, min, max);
    *out = (float)v;
    return TY_OK;
}

static enum ty_status read_rope(const struct ty_gguf *g, const char *arch, struct ty_hparams *hp) {
    struct ty_rope_config *r = &hp->rope;
    memset(r, 0, sizeof *r);
    TY_TRY(hp_int(g, arch, "rope.dimension_count", false, hp->head_dim_k, 2, hp->head_dim_k, &r->n_dims));
    if (r->n_dims % 2 != 0)
        return ty__error(TY_ERR_FORMAT, "metadata key '%s.rope.dimension_count' = %d must be even", arch, r->n_dims);
    TY_TRY(hp_float(g, arch, "rope.freq_base", false, 10000.0, 1.0 + 1e-6, 1e12, &r->freq_base));

    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    struct ty_gguf_str type;
    enum ty_status st = ty__gguf_get_str(g, key, &type);
    r->scaling = TY_ROPE_SCALING_NONE;
    r->factor = 1.0f;
    if (st == TY_OK) {
        if (type.len == 4 && !memcmp(type.data, "none", 4)) {
            r->scaling = TY_ROPE_SCALING_NONE;
        } else if (type.len == 6 && !memcmp(type.data, "linear", 6)) {
            r->scaling = TY_ROPE_SCALING_LINEAR;
        } else if (type.len == 4 && !memcmp(type.data, "yarn", 4)) {
            r->scaling = TY_ROPE_SCALING_YARN;
        } else {
            return ty__error(TY_ERR_UNSUPPORTED,
                             "RoPE scaling '%.*s' (%s) is not supported; supported: none, linear, yarn",
                             (int)(type.len > 64 ? 64 : type.len), type.data, key);
        }
    } else if (st != TY_ERR_NOT_FOUND) {
        return st;
    } else {
        /* Older files give only a linear factor. */
        float lin;
        TY_TRY(hp_float(g, arch, "rope.scale_linear", false, 1.0, 1e-6, 1e6, &lin));
        if (lin != 1.0f) {
            r->scaling = TY_ROPE_SCALING_LINEAR;
            r->factor = lin;
        }
    }
    if (r->scaling != TY_ROPE_SCALING_NONE) {
        TY_TRY(hp_float(g, arch, "rope.scaling.factor", r->factor == 1.0f, r->factor, 1e-6, 1e6, &r->factor));
    }
    if (r->scaling == TY_ROPE_SCALING_YARN) {
        TY_TRY(hp_int(g, arch, "rope.scaling.original_context_length", false, hp->n_ctx_train, 1, INT32_MAX,
                      &r->orig_ctx));
        TY_TRY(hp_float(g, arch, "rope.scaling.attn_factor", false, 0.0, 0.0, 1e6, &r->attn_factor));
        TY_TRY(hp_float(g, arch, "rope.scaling.yarn_beta_fast", false, 32.0, 1e-6, 1e6, &r->beta_fast));
        TY_TRY(hp_float(g, arch, "rope.scaling.yarn_beta_slow", false, 1.0, 1e-6, 1e6, &r->beta_slow));
    }
    return TY_OK;
}

static enum ty_status read_hparams(const struct ty_gguf *g, const char *arch, struct ty_hparams *hp) {
    const int64_t big = 1 << 20;
    TY_TRY(hp_int(g, arch, "block_count", true, 0, 1, 4096, &hp->n_layer));
    TY_TRY(hp_int(g, arch, "embedding_length", true, 0, 1, big, &hp->n_embd));
    TY_TRY(hp_int(g, arch, "feed_forward_length", true, 0, 1, big, &hp->n_ff));
    TY_TRY(hp_int(g, arch, "attention.head_count", true, 0, 1, 4096, &hp->n_head));
    TY_TRY(hp_int(g, arch, "attention.head_count_kv", false, hp->n_head, 1, hp->n_head, &hp->n_head_kv));
    if (hp->n_head % hp->n_head_kv != 0)
        return ty__error(TY_ERR_FORMAT, "%s.attention.head_count %d is not a multiple of head_count_kv %d", arch,
                         hp->n_head, hp->n_head_kv);
    int32_t def_dim = hp->n_embd / hp->n_head;
    TY_TRY(hp_int(g, arch, "attention.key_length", false, def_dim, 1, TY_ATTN_MAX_HEAD_DIM, &hp->head_dim_k));
    TY_TRY(hp_int(g, arch, "attention.value_length", false, def_dim, 1, TY_ATTN_MAX_HEAD_DIM, &hp->head_dim_v));
    TY_TRY(hp_float(g, arch, "attention.layer_norm_rms_epsilon", true, 0, 0.0, 1.0, &hp->norm_eps));
    TY_TRY(hp_int(g, arch, "context_length", true, 0, 1, INT32_MAX, &hp->n_ctx_train));
    return read_rope(g, arch, hp);
}

/* The experts of a qwen3moe model. llama.cpp always renormalises Qwen3-MoE's top-k weights (every released checkpoint
 * sets norm_topk_prob), so an absent expert_weights_norm means true; our converter writes the config's value. */
static enum ty_status read_moe_hparams(const struct ty_gguf *g, const char *arch, struct ty_hparams *hp) {
    const int64_t big = 1 << 20;
    TY_TRY(hp_int(g, arch, "expert_count", true, 0, 1, 4096, &hp->n_expert));
    TY_TRY(hp_int(g, arch, "expert_used_count", true, 0, 1, hp->n_expert, &hp->n_expert_used));
    TY_TRY(hp_int(g, arch, "expert_feed_forward_length", true, 0, 1, big, &hp->n_ff_exp));
    char key[128];
    snprintf(key, sizeof key, "%s.expert_weights_norm", arch);
    hp->expert_norm = true;
    enum ty_status st = ty__gguf_get_bool(g, key, &hp->expert_norm);
    if (st != TY_OK && st != TY_ERR_NOT_FOUND) return st;
    return TY_OK;
}

/* The hybrid layout of qwen3next (llama.cpp's keys): which layers are Gated DeltaNet, their head counts and dims, the
 * conv kernel, and the shared expert's size. */
static enum ty_status read_next_hparams(const struct ty_gguf *g, const char *arch, struct ty_hparams *hp) {
    const int64_t big = 1 << 20;
    /* llama.cpp's converter appends the multi-token-prediction blocks of Qwen3.5 after the decoder's layers and counts
     * them in block_count (llama-arch's n_layer_nextn); they are not run, so the decoder is the first block_count -
     * nextn_predict_layers blocks, and the trailing blk.N tensors are left unused. */
    int32_t nextn = 0;
    TY_TRY(hp_int(g, arch, "nextn_predict_layers", false, 0, 0, hp->n_layer - 1, &nextn));
    hp->n_layer -= nextn;
    TY_TRY(hp_int(g, arch, "full_attention_interval", true, 0, 1, 1 << 20, &hp->full_attn_interval));
    TY_TRY(hp_int(g, arch, "ssm.conv_kernel", true, 0, 2, 64, &hp->ssm_conv_kernel));
    TY_TRY(hp_int(g, arch, "ssm.state_size", true, 0, 1, TY_GDN_MAX_HEAD_DIM, &hp->ssm_dim_k));
    TY_TRY(hp_int(g, arch, "ssm.group_count", true, 0, 1, 4096, &hp->ssm_head_k));
    TY_TRY(hp_int(g, arch, "ssm.time_step_rank", true, 0, 1, 4096, &hp->ssm_head_v));
    int32_t inner;
    TY_TRY(hp_int(g, arch, "ssm.inner_size", true, 0, 1, big, &inner));
    if (hp->ssm_head_v % hp->ssm_head_k || inner % hp->ssm_head_v)
        return ty__error(TY_ERR_FORMAT,
                         "%s.ssm.time_step_rank %d (value heads) must be a multiple of ssm.group_count %d (key heads) "
                         "and divide ssm.inner_size %d",
                         arch, hp->ssm_head_v, hp->ssm_head_k, inner);
    hp->ssm_dim_v = inner / hp->ssm_head_v;
    if (hp->ssm_dim_v > TY_GDN_MAX_HEAD_DIM)
        return ty__error(TY_ERR_UNSUPPORTED, "%s: value head dimension %d (ssm.inner_size / time_step_rank) is over %d",
                         arch, hp->ssm_dim_v, TY_GDN_MAX_HEAD_DIM);
    TY_TRY(hp_int(g, arch, "expert_shared_feed_forward_length", false, 0, 0, big, &hp->n_ff_shexp));
    hp->n_recurrent = 0;
    for (int il = 0; il < hp->n_layer; il++) hp->n_recurrent += (il + 1) % hp->full_attn_interval != 0;
    return TY_OK;
}

/* ==== Tensors ==== */

struct loader {
    struct ty_model *m;
    const struct ty_gguf *g;
    const char *data_start; /* the file's tensor data section */
    size_t small_bytes;     /* f32 copies needed so far */
    /* 1-D tensors to convert once the small buffer exists */
    struct pending {
        struct ty_tensor *t;
        const struct ty_gguf_tensor *src;
    } * pending;
    int n_pending;
};

static void shape_str(char *buf, size_t cap, int n_dims, const int64_t *ne) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n_dims && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%" PRId64, i ? ", " : "", ne[i]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
}

/* Finds tensor `name`, checks it, and makes it a backend tensor. `ne1` == 0 asks for a vector of ne0 elements, which
 * is held as F32 (converted when the file stores it otherwise); `ne2` > 1 for a stack of matrices (the experts of a
 * MoE layer). A missing optional tensor gives *out = NULL. */
static enum ty_status load_tensor3(struct loader *L, const char *name, bool required, int64_t ne0, int64_t ne1,
                                   int64_t ne2, const char *why, struct ty_tensor **out) {
    *out = NULL;
    const struct ty_gguf_tensor *gt = ty__gguf_find_tensor(L->g, name);
    if (!gt) {
        if (!required) return TY_OK;
        return ty__error(TY_ERR_FORMAT, "tensor %s is missing; the file is not a complete %s model", name,
                         L->m->arch_name);
    }
    bool vector = ne1 == 0;
    int64_t want[3] = {ne0, ne1, ne2};
    int want_dims = vector ? 1 : ne2 > 1 ? 3 : 2;
    bool ok = gt->ne[0] == ne0 && gt->ne[2] == ne2 && gt->ne[3] == 1 && (vector ? gt->ne[1] == 1 : gt->ne[1] == ne1);
    if (!ok) {
        char exp[96], act[128];
        shape_str(exp, sizeof exp, want_dims, want);
        shape_str(act, sizeof act, gt->n_dims, gt->ne);
        return ty__error(TY_ERR_FORMAT,
                         "tensor %s has shape %s, expected %s (%s); the file does not match its metadata", name, act,
                         exp, why);
    }
    const struct ty_type_traits *tr = ty__type_traits(gt->type);
    if (vector ? (!tr || !tr->to_float) : !ty__backend_weight_type_ok(gt->type))
        return ty__error(TY_ERR_UNSUPPORTED, "tensor %s has type %s, which Tongyun cannot compute with; supported: %s",
                         name, ty_type_name(gt->type), ty__supported_types());
    TY_ASSERT(L->m->n_tensors < L->m->n_tensors_cap);
    struct ty_tensor *t = &L->m->tensors[L->m->n_tensors++];
    if (vector && (gt->type != TY_TYPE_F32 || (uintptr_t)gt->data % sizeof(float) != 0)) {
        /* Kernels read norms and biases as aligned f32; place a converted copy in the small buffer. */
        ty__tensor_init(t, NULL, L->small_bytes, TY_TYPE_F32, ne0, 1, 1, 1);
        L->small_bytes += ((size_t)ne0 * sizeof(float) + 63) & ~(size_t)63;
        L->pending[L->n_pending].t = t;
        L->pending[L->n_pending].src = gt;
        L->n_pending++;
    } else {
        size_t offs = (size_t)((const char *)gt->data - L->data_start);
        ty__tensor_init(t, L->m->weights, offs, gt->type, ne0, vector ? 1 : ne1, ne2, 1);
    }
    *out = t;
    return TY_OK;
}

static enum ty_status load_tensor(struct loader *L, const char *name, bool required, int64_t ne0, int64_t ne1,
                                  const char *why, struct ty_tensor **out) {
    return load_tensor3(L, name, required, ne0, ne1, 1, why, out);
}

static enum ty_status load_next_layer(struct loader *L, int il);

/* T(field, suffix, ...) loads tensor blk.<il>.<suffix> into l->field: the layer loaders below share it (and the
 * locals L, il, l and name it uses). */
#define T(field, suffix, req, ne0, ne1, why)                                                                           \
    do {                                                                                                               \
        snprintf(name, sizeof name, "blk.%d." suffix, il);                                                             \
        TY_TRY(load_tensor(L, name, req, ne0, ne1, why, &l->field));                                                   \
    } while (0)

/* A MoE layer's experts (the caller loads the router, ffn_gate_inp). */
static enum ty_status load_experts(struct loader *L, int il) {
    const struct ty_hparams *hp = &L->m->hp;
    struct ty_layer *l = &L->m->layers[il];
    int64_t n_embd = hp->n_embd, ne = hp->n_expert, nf = hp->n_ff_exp;
    char name[96];
#define T3(field, suffix, ne0, ne1, why)                                                                               \
    do {                                                                                                               \
        snprintf(name, sizeof name, "blk.%d." suffix, il);                                                             \
        TY_TRY(load_tensor3(L, name, true, ne0, ne1, ne, why, &l->field));                                             \
    } while (0)
    T3(ffn_gate_exps, "ffn_gate_exps.weight", n_embd, nf, "embedding_length, expert_feed_forward_length, expert_count");
    T3(ffn_up_exps, "ffn_up_exps.weight", n_embd, nf, "embedding_length, expert_feed_forward_length, expert_count");
    T3(ffn_down_exps, "ffn_down_exps.weight", nf, n_embd, "expert_feed_forward_length, embedding_length, expert_count");
#undef T3
    return TY_OK;
}

/* A dense layer's SwiGLU feed-forward block. */
static enum ty_status load_dense_ffn(struct loader *L, int il) {
    const struct ty_hparams *hp = &L->m->hp;
    struct ty_layer *l = &L->m->layers[il];
    int64_t n_embd = hp->n_embd;
    char name[96];
    T(w_gate, "ffn_gate.weight", true, n_embd, hp->n_ff, "embedding_length, feed_forward_length");
    T(w_up, "ffn_up.weight", true, n_embd, hp->n_ff, "embedding_length, feed_forward_length");
    T(w_down, "ffn_down.weight", true, hp->n_ff, n_embd, "feed_forward_length, embedding_length");
    L->m->hp.n_dense_ffn++;
    return TY_OK;
}

static enum ty_status load_layer(struct loader *L, int il) {
    if (L->m->hp.full_attn_interval > 0) return load_next_layer(L, il);
    const struct ty_hparams *hp = &L->m->hp;
    struct ty_layer *l = &L->m->layers[il];
    int64_t n_embd = hp->n_embd, n_q = (int64_t)hp->n_head * hp->head_dim_k;
    int64_t n_k = (int64_t)hp->n_head_kv * hp->head_dim_k, n_v = (int64_t)hp->n_head_kv * hp->head_dim_v;
    int64_t n_o = (int64_t)hp->n_head * hp->head_dim_v;
    bool qwen3 = L->m->arch == TY_ARCH_QWEN3 || L->m->arch == TY_ARCH_QWEN3MOE;
    char name[96];
    T(attn_norm, "attn_norm.weight", true, n_embd, 0, "embedding_length");
    T(wq, "attn_q.weight", true, n_embd, n_q, "embedding_length, head_count x key_length");
    T(wk, "attn_k.weight", true, n_embd, n_k, "embedding_length, head_count_kv x key_length");
    T(wv, "attn_v.weight", true, n_embd, n_v, "embedding_length, head_count_kv x value_length");
    /* Qwen2 checkpoints carry q/k/v biases; Qwen3 has them only with attention_bias. Used when present. */
    T(bq, "attn_q.bias", false, n_q, 0, "head_count x key_length");
    T(bk, "attn_k.bias", false, n_k, 0, "head_count_kv x key_length");
    T(bv, "attn_v.bias", false, n_v, 0, "head_count_kv x value_length");
    if (qwen3) {
        T(q_norm, "attn_q_norm.weight", true, hp->head_dim_k, 0, "key_length");
        T(k_norm, "attn_k_norm.weight", true, hp->head_dim_k, 0, "key_length");
    }
    T(wo, "attn_output.weight", true, n_o, n_embd, "head_count x value_length, embedding_length");
    T(ffn_norm, "ffn_norm.weight", true, n_embd, 0, "embedding_length");
    /* A MoE model's layer has experts when it has a router; the others (HF's mlp_only_layers) are dense. */
    if (hp->n_expert > 0)
        T(ffn_gate_inp, "ffn_gate_inp.weight", false, n_embd, hp->n_expert, "embedding_length, expert_count");
    if (l->ffn_gate_inp) return load_experts(L, il);
    snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", il);
    if (hp->n_expert > 0 && !ty__gguf_find_tensor(L->g, name))
        return ty__error(TY_ERR_FORMAT,
                         "layer %d has neither experts (blk.%d.ffn_gate_inp.weight) nor a dense FFN (%s); the file is "
                         "not a complete %s model",
                         il, il, name, L->m->arch_name);
    return load_dense_ffn(L, il);
}

/* A qwen3next layer: Gated DeltaNet or gated full attention by full_attention_interval, then a MoE block with a shared
 * expert (or a dense FFN). Its pre-FFN norm is llama.cpp's post_attention_norm; the (1 + w) of the reference's
 * RMSNorms is already folded into every norm weight by the converter. */
static enum ty_status load_next_layer(struct loader *L, int il) {
    const struct ty_hparams *hp = &L->m->hp;
    struct ty_layer *l = &L->m->layers[il];
    int64_t n_embd = hp->n_embd;
    char name[96];
    l->recurrent = (il + 1) % hp->full_attn_interval != 0;
    /* the layer's kind comes from the metadata; the tensors must agree */
    char other[96];
    /* qwen3next: llama.cpp's converter now writes attn_qkv + attn_gate (value heads in Hugging Face's order) with
     * ssm_ba; its early files and Tongyun's until 2026-11-29 have the grouped ssm_in instead. Both load. */
    snprintf(name, sizeof name, "blk.%d.ssm_in.weight", il);
    bool grouped = !hp->ssm_v_tiled && ty__gguf_find_tensor(L->g, name);
    const char *lin = grouped ? "ssm_in.weight" : "attn_qkv.weight";
    snprintf(name, sizeof name, "blk.%d.%s", il, l->recurrent ? lin : "attn_q.weight");
    snprintf(other, sizeof other, "blk.%d.%s", il, l->recurrent ? "attn_q.weight" : lin);
    if (!ty__gguf_find_tensor(L->g, name) && ty__gguf_find_tensor(L->g, other))
        return ty__error(TY_ERR_FORMAT,
                         "layer %d is a %s layer by %s.full_attention_interval = %d, but the file has %s and no %s; "
                         "the metadata does not match the tensors",
                         il, l->recurrent ? "linear-attention" : "full-attention", L->m->arch_name,
                         hp->full_attn_interval, other, name);
    T(attn_norm, "attn_norm.weight", true, n_embd, 0, "embedding_length");
    if (l->recurrent) {
        int64_t hk = hp->ssm_head_k, hv = hp->ssm_head_v, dk = hp->ssm_dim_k, dv = hp->ssm_dim_v;
        int64_t conv = 2 * hk * dk + hv * dv;
        if (grouped) {
            T(ssm_in, "ssm_in.weight", true, n_embd, conv + hv * dv,
              "embedding_length, 2 x ssm.group_count x ssm.state_size + 2 x ssm.inner_size");
        } else {
            T(ssm_qkv, "attn_qkv.weight", true, n_embd, conv,
              "embedding_length, 2 x ssm.group_count x ssm.state_size + ssm.inner_size");
            T(ssm_gate, "attn_gate.weight", true, n_embd, hv * dv, "embedding_length, ssm.inner_size");
        }
        if (hp->ssm_v_tiled) {
            T(ssm_beta, "ssm_beta.weight", true, n_embd, hv, "embedding_length, ssm.time_step_rank");
            T(ssm_alpha, "ssm_alpha.weight", true, n_embd, hv, "embedding_length, ssm.time_step_rank");
        } else {
            /* llama.cpp's early files call it ssm_beta_alpha */
            T(ssm_ba, "ssm_ba.weight", false, n_embd, 2 * hv, "embedding_length, 2 x ssm.time_step_rank");
            if (!l->ssm_ba)
                T(ssm_ba, "ssm_beta_alpha.weight", true, n_embd, 2 * hv, "embedding_length, 2 x ssm.time_step_rank");
        }
        T(ssm_conv1d, "ssm_conv1d.weight", true, hp->ssm_conv_kernel, conv,
          "ssm.conv_kernel, 2 x ssm.group_count x ssm.state_size + ssm.inner_size");
        if (l->ssm_conv1d->type != TY_TYPE_F32)
            return ty__error(TY_ERR_UNSUPPORTED, "tensor blk.%d.ssm_conv1d.weight has type %s; it must be F32", il,
                             ty_type_name(l->ssm_conv1d->type));
        T(ssm_dt, "ssm_dt.bias", true, hv, 0, "ssm.time_step_rank");
        T(ssm_a, "ssm_a", true, hv, 0, "ssm.time_step_rank");
        T(ssm_norm, "ssm_norm.weight", true, dv, 0, "ssm.inner_size / ssm.time_step_rank");
        T(ssm_out, "ssm_out.weight", true, hv * dv, n_embd, "ssm.inner_size, embedding_length");
    } else {
        int64_t dh = hp->head_dim_k, n_q = (int64_t)hp->n_head * dh, n_kv = (int64_t)hp->n_head_kv * dh;
        T(wq, "attn_q.weight", true, n_embd, 2 * n_q, "embedding_length, 2 x head_count x key_length");
        T(wk, "attn_k.weight", true, n_embd, n_kv, "embedding_length, head_count_kv x key_length");
        T(wv, "attn_v.weight", true, n_embd, n_kv, "embedding_length, head_count_kv x value_length");
        T(q_norm, "attn_q_norm.weight", true, dh, 0, "key_length");
        T(k_norm, "attn_k_norm.weight", true, dh, 0, "key_length");
        T(wo, "attn_output.weight", true, n_q, n_embd, "head_count x value_length, embedding_length");
    }
    T(ffn_norm, "post_attention_norm.weight", true, n_embd, 0, "embedding_length");
    T(ffn_gate_inp, "ffn_gate_inp.weight", false, n_embd, hp->n_expert, "embedding_length, expert_count");
    if (l->ffn_gate_inp) {
        TY_TRY(load_experts(L, il));
        if (hp->n_ff_shexp > 0) {
            int64_t ns = hp->n_ff_shexp;
            T(ffn_gate_inp_shexp, "ffn_gate_inp_shexp.weight", true, n_embd, 0, "embedding_length");
            T(ffn_gate_shexp, "ffn_gate_shexp.weight", true, n_embd, ns,
              "embedding_length, expert_shared_feed_forward_length");
            T(ffn_up_shexp, "ffn_up_shexp.weight", true, n_embd, ns,
              "embedding_length, expert_shared_feed_forward_length");
            T(ffn_down_shexp, "ffn_down_shexp.weight", true, ns, n_embd,
              "expert_shared_feed_forward_length, embedding_length");
        } else {
            snprintf(name, sizeof name, "blk.%d.ffn_gate_inp_shexp.weight", il);
            if (ty__gguf_find_tensor(L->g, name))
                return ty__error(TY_ERR_FORMAT,
                                 "tensor %s is present but %s.expert_shared_feed_forward_length is missing or 0; the "
                                 "metadata does not match the tensors",
                                 name, L->m->arch_name);
        }
        return TY_OK;
    }
    return load_dense_ffn(L, il);
}
#undef T

static enum ty_status load_tensors(struct ty_model *m) {
    const struct ty_hparams *hp0 = &m->hp;
    const struct ty_gguf_tensor *embd = ty__gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!embd)
        return ty__error(TY_ERR_FORMAT, "tensor token_embd.weight is missing; the file is not a complete %s model",
                         m->arch_name);
    if (embd->ne[1] < 1 || embd->ne[1] > INT32_MAX)
        return ty__error(TY_ERR_FORMAT, "tensor token_embd.weight has %" PRId64 " rows; expected 1 .. %d", embd->ne[1],
                         INT32_MAX);
    m->hp.n_vocab = (int32_t)embd->ne[1];

    /* One zero-copy buffer over the whole data section. */
    size_t data_off = ty__gguf_data_offset(m->gguf), file_size = ty__gguf_file_size(m->gguf);
    const char *data_start = (const char *)embd->data - embd->offset;
    TY_TRY(ty__backend_buffer_wrap(m->be, (void *)data_start, file_size - data_off, &m->weights));

    m->n_tensors_cap = 3 + 24 * hp0->n_layer;
    m->tensors = ty__calloc((size_t)m->n_tensors_cap, sizeof *m->tensors);
    m->layers = ty__calloc((size_t)hp0->n_layer, sizeof *m->layers);
    struct loader L = {m, m->gguf, data_start, 0, NULL, 0};
    L.pending = ty__calloc((size_t)m->n_tensors_cap, sizeof *L.pending);
    if (!m->tensors || !m->layers || !L.pending) {
        ty_free(L.pending);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory for the tensor table of %d layers", hp0->n_layer);
    }
    enum ty_status st;
    int64_t n_embd = hp0->n_embd, n_vocab = hp0->n_vocab;
    st = load_tensor(&L, "token_embd.weight", true, n_embd, n_vocab, "embedding_length, vocabulary", &m->tok_embd);
    if (st == TY_OK) st = load_tensor(&L, "output_norm.weight", true, n_embd, 0, "embedding_length", &m->output_norm);
    if (st == TY_OK)
        st = load_tensor(&L, "output.weight", false, n_embd, n_vocab, "embedding_length, rows of token_embd",
                         &m->output);
    if (st == TY_OK && !m->output) m->output = m->tok_embd; /* tied embeddings */
    for (int il = 0; st == TY_OK && il < hp0->n_layer; il++) st = load_layer(&L, il);

    /* Converted vectors: compute host copies, then upload them into one small buffer. */
    if (st == TY_OK && L.n_pending > 0) st = ty__backend_buffer_alloc(m->be, L.small_bytes, &m->small);
    for (int i = 0; st == TY_OK && i < L.n_pending; i++) {
        struct ty_tensor *t = L.pending[i].t;
        const struct ty_gguf_tensor *src = L.pending[i].src;
        t->buf = m->small;
        float *tmp = ty__malloc((size_t)t->ne[0] * sizeof(float));
        if (!tmp) {
            st = ty__error(TY_ERR_NO_MEMORY, "out of memory converting tensor %s", src->name);
            break;
        }
        ty__type_traits(src->type)->to_float(src->data, tmp, t->ne[0]);
        st = ty__backend_tensor_set(m->be, t, tmp, 0, (size_t)t->ne[0] * sizeof(float));
        ty_free(tmp);
    }
    ty_free(L.pending);
    /* The backend may lay each weight matrix out as its kernels like best (packed, on huge pages). The token
     * embedding is only read by get_rows, unless it doubles as the output projection. */
    for (int i = 0; st == TY_OK && i < m->n_tensors; i++) {
        const struct ty_tensor *t = &m->tensors[i];
        bool matrix = t->ne[1] > 1 && t->ne[3] == 1 && ty__backend_weight_type_ok(t->type);
        if (matrix && (t != m->tok_embd || m->output == m->tok_embd)) st = ty__backend_weight_prepare(m->be, t);
    }
    return st;
}

/* ==== Public API ==== */

struct ty_model_params ty_model_default_params(void) {
    struct ty_model_params p = {0};
    p.n_threads = 0;
    p.backend = NULL;
    p.lora = NULL;
    p.lora_scale = 1.0f;
    return p;
}

static enum ty_status read_arch(struct ty_model *m) {
    enum ty_status st = ty__gguf_get_strdup(m->gguf, "general.architecture", &m->arch_name);
    if (st == TY_ERR_NOT_FOUND)
        return ty__error(TY_ERR_FORMAT, "metadata key 'general.architecture' is missing; the file is not a model");
    if (st != TY_OK) return st;
    for (int a = 0; a < TY_ARCH_COUNT; a++) {
        if (!strcmp(m->arch_name, arch_names[a])) {
            m->arch = (enum ty_arch)a;
            return TY_OK;
        }
    }
    return ty__error(TY_ERR_UNSUPPORTED,
                     "architecture '%s' is not supported; supported: qwen2, qwen3, qwen3moe, qwen3next, qwen35, "
                     "qwen35moe",
                     m->arch_name);
}

/* Reads every page of the mapped weights once, so the first token does not pay for the page faults and a large
 * model's load shows real progress. volatile keeps the compiler from dropping the reads. */
static void prefault_weights(const struct ty_gguf *g) {
    uint64_t total = 0, done = 0;
    int64_t n = ty__gguf_n_tensors(g);
    for (int64_t i = 0; i < n; i++) total += ty__gguf_tensor(g, i)->nbytes;
    struct ty_progress bar;
    ty__progress_begin(&bar, "load", total);
    volatile uint8_t sink = 0;
    for (int64_t i = 0; i < n; i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
        const uint8_t *p = t->data;
        for (size_t off = 0; off < t->nbytes; off += 4096) sink ^= p[off];
        done += t->nbytes;
        ty__progress_update(&bar, done);
    }
    (void)sink;
    ty__progress_end(&bar);
}

static enum ty_status model_load(struct ty_model *m, const char *path, const struct ty_model_params *params) {
    TY_TRY(ty__gguf_open(path, &m->gguf));
    TY_TRY(read_arch(m));
    TY_TRY(read_hparams(m->gguf, m->arch_name, &m->hp));
    if (m->arch == TY_ARCH_QWEN3MOE) TY_TRY(read_moe_hparams(m->gguf, m->arch_name, &m->hp));
    if (m->arch == TY_ARCH_QWEN3NEXT || m->arch == TY_ARCH_QWEN35 || m->arch == TY_ARCH_QWEN35MOE) {
        /* experts are optional here (dense variants), the hybrid layout is not */
        char key[128];
        snprintf(key, sizeof key, "%s.expert_count", m->arch_name);
        int64_t v;
        if (ty__gguf_get_int(m->gguf, key, &v) == TY_OK) TY_TRY(read_moe_hparams(m->gguf, m->arch_name, &m->hp));
        m->hp.ssm_v_tiled = m->arch != TY_ARCH_QWEN3NEXT;
        TY_TRY(read_next_hparams(m->gguf, m->arch_name, &m->hp));
    }
    TY_TRY(ty__rope_init(&m->hp.rope, &m->rope));
    TY_TRY(ty__backend_init(params->backend, params->n_threads, &m->be));
    TY_TRY(load_tensors(m));
    prefault_weights(m->gguf);
    enum ty_status st = ty__tokenizer_from_gguf(m->gguf, &m->tok);
    if (st != TY_OK) return ty__error_prefix(st, "tokenizer");
    int32_t n_tok_vocab = ty_tokenizer_n_vocab(m->tok);
    if (n_tok_vocab > m->hp.n_vocab)
        TY_LOG_W("the tokenizer has %d tokens but the model only %d embedding rows; ids past %d are rejected",
                 n_tok_vocab, m->hp.n_vocab, m->hp.n_vocab - 1);
    const struct ty_hparams *hp = &m->hp;
    TY_LOG_I("model: %s, %d layers, embd %d, ff %d, heads %d/%d x %d, vocab %d, ctx %d, backend %s", m->arch_name,
             hp->n_layer, hp->n_embd, hp->n_ff, hp->n_head, hp->n_head_kv, hp->head_dim_k, hp->n_vocab, hp->n_ctx_train,
             ty__backend_name(m->be));
    if (hp->n_expert > 0)
        TY_LOG_I("model: %d experts, %d per token%s, expert ff %d; %d of %d layers dense", hp->n_expert,
                 hp->n_expert_used, hp->expert_norm ? " (weights renormalised)" : "", hp->n_ff_exp, hp->n_dense_ffn,
                 hp->n_layer);
    if (hp->full_attn_interval > 0)
        TY_LOG_I("model: %d Gated DeltaNet layers (key heads %d x %d, value heads %d x %d, conv %d), full attention "
                 "every %d layers, rotary dims %d of %d%s",
                 hp->n_recurrent, hp->ssm_head_k, hp->ssm_dim_k, hp->ssm_head_v, hp->ssm_dim_v, hp->ssm_conv_kernel,
                 hp->full_attn_interval, hp->rope.n_dims, hp->head_dim_k, hp->n_ff_shexp > 0 ? ", shared expert" : "");
    return TY_OK;
}

enum ty_status ty_model_load(const char *path, const struct ty_model_params *params, struct ty_model **out) {
    if (!out) return ty__error(TY_ERR_INVALID_ARG, "ty_model_load: out is NULL");
    *out = NULL;
    if (!path) return ty__error(TY_ERR_INVALID_ARG, "ty_model_load: path is NULL");
    struct ty_model_params def = ty_model_default_params();
    if (!params) params = &def;
    struct ty_model *m = ty__calloc(1, sizeof *m);
    if (!m) return ty__error(TY_ERR_NO_MEMORY, "out of memory loading %s", path);
    enum ty_status st = model_load(m, path, params);
    if (st == TY_OK && params->lora) {
        st = ty__lora_apply(m, params->lora, params->lora_scale, &m->lora);
    }
    if (st != TY_OK) {
        ty_model_free(m);
        return st;
    }
    *out = m;
    return TY_OK;
}

void ty_model_free(struct ty_model *m) {
    if (!m) return;
    ty__lora_applied_free(m->lora); /* its f32 weight copies live in a buffer of m->be */
    if (m->tok) ty_tokenizer_free(m->tok);
    ty__backend_buffer_free(m->small);
    ty__backend_buffer_free(m->weights);
    ty__backend_free(m->be);
    ty_free(m->tensors);
    ty_free(m->layers);
    ty__gguf_close(m->gguf);
    ty_free(m->arch_name);
    ty_free(m);
}

const struct ty_tokenizer *ty_model_tokenizer(const struct ty_model *m) {
    return m->tok;
}
int32_t ty_model_n_vocab(const struct ty_model *m) {
    return m->hp.n_vocab;
}
int32_t ty_model_n_ctx_train(const struct ty_model *m) {
    return m->hp.n_ctx_train;
}
const char *ty_model_arch(const struct ty_model *m) {
    return m->arch_name;
}
