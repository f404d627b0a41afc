/*
 * convert.c - Hugging Face checkpoint to GGUF: reads config.json, maps each safetensors tensor to its llama.cpp name,
 * converts the data tensor by tensor into the chosen type, and writes the hyperparameters, tokenizer and chat template
 * as the metadata keys llama.cpp's convert_hf_to_gguf.py writes for the same architecture.
 *
 * What is supported is data, not code: `archs[]` lists the Hugging Face architectures and the tensors each one has
 * (`rules[]`), so a new dense variant is a table row. Qwen3-MoE's experts, one module per expert in Hugging Face
 * (mlp.experts.E.gate_proj.weight), are stacked into llama.cpp's 3-D ffn_*_exps tensors (ne = {in, out, n_expert}).
 * Qwen3.5 follows llama.cpp's qwen35 / qwen35moe, whose value heads are stored reordered (enum vperm); the names of
 * both hybrid generations are listed in docs/gguf-names.md. Qwen3-Next (hybrid) follows llama.cpp's qwen3next: its
 * Gated DeltaNet tensors become ssm_*, its (1 + w) RMSNorm weights are written with the 1 added, A_log as -exp(A_log),
 * and the conv1d weight [C, 1, K] as a 2-D F32 (K, C).
 *
 * Layout: safetensors and GGUF store the same row-major bytes; GGUF lists dimensions fastest-first, so a PyTorch
 * [out, in] weight becomes ne = {in, out} with no transpose. Qwen2/Qwen3 use NeoX-style RoPE (rotate halves), so unlike
 * llama.cpp's LLaMA conversion no q/k permutation is applied.
 */
#include "model/convert.h"

#include "base/threads.h"
#include "model/gguf.h"
#include "model/quant.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ==== Architectures and tensor names ==== */

/* Which models of the table a rule applies to. */
enum need {
    NEED_ALWAYS,    /* every architecture, required */
    NEED_UNTIED,    /* required unless tie_word_embeddings (then skipped if present) */
    NEED_QKV_BIAS,  /* required where arch->qkv_bias, unexpected elsewhere */
    NEED_QK_NORM,   /* required where arch->qk_norm, unexpected elsewhere */
    NEED_DENSE_FFN, /* layers with a dense FFN: every layer of a dense model, HF's mlp_only_layers of a MoE one */
    NEED_ROUTER,    /* the sparse (expert) layers of a MoE model */
    NEED_EXPERT,    /* the sparse layers, once per expert: `hf` has a %d for the expert; stacked into one tensor */
    NEED_PLAIN,     /* every layer of the architectures without linear attention */
    NEED_HYBRID,    /* every layer of a hybrid (linear-attention) architecture */
    NEED_LINEAR,    /* the Gated DeltaNet layers of a hybrid architecture */
    NEED_LINEAR_G,  /* the Gated DeltaNet layers of Qwen3-Next (grouped q/k/v/z and b/a projections) */
    NEED_LINEAR_S,  /* the Gated DeltaNet layers of Qwen3.5 (separate qkv, z, b and a projections) */
    NEED_GATED_Q,   /* the full-attention layers of a hybrid architecture (q_proj carries the output gate) */
    NEED_SHEXP      /* the sparse layers of an architecture with a shared expert */
};

/* Expected PyTorch shapes, in terms of the config. */
enum shape {
    SH_VOCAB_EMBD, /* [n_vocab, n_embd] */
    SH_EMBD,       /* [n_embd] */
    SH_QO_EMBD,    /* [n_head * head_dim, n_embd] */
    SH_KV_EMBD,    /* [n_head_kv * head_dim, n_embd] */
    SH_EMBD_QO,    /* [n_embd, n_head * head_dim] */
    SH_QO,         /* [n_head * head_dim] */
    SH_KV,         /* [n_head_kv * head_dim] */
    SH_HEAD,       /* [head_dim] */
    SH_FF_EMBD,    /* [n_ff, n_embd] */
    SH_EMBD_FF,    /* [n_embd, n_ff] */
    SH_EXP_EMBD,   /* [n_expert, n_embd] */
    SH_FFE_EMBD,   /* [n_ff_exp, n_embd] per expert */
    SH_EMBD_FFE,   /* [n_embd, n_ff_exp] per expert */
    SH_QG_EMBD,    /* [2 * n_head * head_dim, n_embd]: per head the query, then its output gate */
    SH_QKVZ_EMBD,  /* [2 * n_k * d_k + 2 * n_v * d_v, n_embd] */
    SH_BA_EMBD,    /* [2 * n_v, n_embd] */
    SH_CONV,       /* [2 * n_k * d_k + n_v * d_v, 1, conv_kernel], written as (kernel, channels) */
    SH_HV,         /* [n_v] */
    SH_DV,         /* [d_v] */
    SH_EMBD_VD,    /* [n_embd, n_v * d_v] */
    SH_FFS_EMBD,   /* [n_ff_shexp, n_embd] */
    SH_EMBD_FFS,   /* [n_embd, n_ff_shexp] */
    SH_1_EMBD,     /* [1, n_embd], written as a vector */
    SH_QKV_EMBD,   /* [2 * n_k * d_k + n_v * d_v, n_embd] */
    SH_VD_EMBD,    /* [n_v * d_v, n_embd] */
    SH_HV_EMBD     /* [n_v, n_embd] */
};

/* A change of values on the way (the reference computes with the changed value; llama.cpp stores it changed). */
enum xform {
    XF_NONE = 0,
    XF_PLUS_ONE, /* w + 1: the (1 + w) RMSNorms of the hybrid models */
    XF_NEG_EXP   /* -exp(w): Gated DeltaNet's A = -exp(A_log) */
};

/* Qwen3.5's value heads are written in llama.cpp's tiled order: GGUF value head h = j * n_k + g holds Hugging Face's
 * head g * (n_v / n_k) + j, so that GGUF value head h reads key head h mod n_k (ggml_repeat) where Hugging Face's head
 * g r + j reads key head g (repeat_interleave). Where a tensor's value-head blocks lie: */
enum vperm {
    VP_NONE = 0,
    VP_ROWS, /* the rows from `vp_first` on, in blocks of `vp_block` rows per value head */
    VP_COLS, /* every row's columns, in blocks of `vp_block` columns per value head */
    /* Qwen3-Next's in_proj_qkvz, grouped per key head [q (dk) | k (dk) | v (r dv) | z (r dv)], split as llama.cpp's
     * converter does into attn_qkv (all q, all k, all v: the conv's channel order) and attn_gate (all z); the value
     * heads keep Hugging Face's order. Rows are gathered (vp_first = dk, vp_block = dv). */
    VP_QKVZ_QKV,
    VP_QKVZ_Z
};

struct rule {
    const char *hf;   /* full name, or for per-layer rules the part after "model.layers.N." */
    const char *gguf; /* full name, or the part after "blk.N." */
    bool per_layer;
    enum need need;
    enum shape shape;
    enum xform xform;
    enum vperm vperm; /* on tiled-value architectures only (arch->v_tiled) */
};

/* In the order tensors are written: embeddings, then each block, then the head (llama.cpp's usual order). */
static const struct rule rules[] = {
    {"model.embed_tokens.weight", "token_embd.weight", false, NEED_ALWAYS, SH_VOCAB_EMBD, XF_NONE, VP_NONE},
    {"input_layernorm.weight", "attn_norm.weight", true, NEED_ALWAYS, SH_EMBD, XF_NONE, VP_NONE},
    {"self_attn.q_proj.weight", "attn_q.weight", true, NEED_PLAIN, SH_QO_EMBD, XF_NONE, VP_NONE},
    {"self_attn.q_proj.weight", "attn_q.weight", true, NEED_GATED_Q, SH_QG_EMBD, XF_NONE, VP_NONE},
    {"self_attn.q_proj.bias", "attn_q.bias", true, NEED_QKV_BIAS, SH_QO, XF_NONE, VP_NONE},
    {"self_attn.k_proj.weight", "attn_k.weight", true, NEED_ALWAYS, SH_KV_EMBD, XF_NONE, VP_NONE},
    {"self_attn.k_proj.bias", "attn_k.bias", true, NEED_QKV_BIAS, SH_KV, XF_NONE, VP_NONE},
    {"self_attn.v_proj.weight", "attn_v.weight", true, NEED_ALWAYS, SH_KV_EMBD, XF_NONE, VP_NONE},
    {"self_attn.v_proj.bias", "attn_v.bias", true, NEED_QKV_BIAS, SH_KV, XF_NONE, VP_NONE},
    {"self_attn.q_norm.weight", "attn_q_norm.weight", true, NEED_QK_NORM, SH_HEAD, XF_NONE, VP_NONE},
    {"self_attn.k_norm.weight", "attn_k_norm.weight", true, NEED_QK_NORM, SH_HEAD, XF_NONE, VP_NONE},
    {"self_attn.o_proj.weight", "attn_output.weight", true, NEED_ALWAYS, SH_EMBD_QO, XF_NONE, VP_NONE},
    {"linear_attn.in_proj_qkvz.weight", "attn_qkv.weight", true, NEED_LINEAR_G, SH_QKVZ_EMBD, XF_NONE, VP_QKVZ_QKV},
    {"linear_attn.in_proj_qkvz.weight", "attn_gate.weight", true, NEED_LINEAR_G, SH_QKVZ_EMBD, XF_NONE, VP_QKVZ_Z},
    {"linear_attn.in_proj_ba.weight", "ssm_ba.weight", true, NEED_LINEAR_G, SH_BA_EMBD, XF_NONE, VP_NONE},
    {"linear_attn.in_proj_qkv.weight", "attn_qkv.weight", true, NEED_LINEAR_S, SH_QKV_EMBD, XF_NONE, VP_ROWS},
    {"linear_attn.in_proj_z.weight", "attn_gate.weight", true, NEED_LINEAR_S, SH_VD_EMBD, XF_NONE, VP_ROWS},
    {"linear_attn.in_proj_b.weight", "ssm_beta.weight", true, NEED_LINEAR_S, SH_HV_EMBD, XF_NONE, VP_ROWS},
    {"linear_attn.in_proj_a.weight", "ssm_alpha.weight", true, NEED_LINEAR_S, SH_HV_EMBD, XF_NONE, VP_ROWS},
    {"linear_attn.conv1d.weight", "ssm_conv1d.weight", true, NEED_LINEAR, SH_CONV, XF_NONE, VP_ROWS},
    {"linear_attn.dt_bias", "ssm_dt.bias", true, NEED_LINEAR, SH_HV, XF_NONE, VP_COLS},
    {"linear_attn.A_log", "ssm_a", true, NEED_LINEAR, SH_HV, XF_NEG_EXP, VP_COLS},
    {"linear_attn.norm.weight", "ssm_norm.weight", true, NEED_LINEAR, SH_DV, XF_NONE, VP_NONE},
    {"linear_attn.out_proj.weight", "ssm_out.weight", true, NEED_LINEAR, SH_EMBD_VD, XF_NONE, VP_COLS},
    {"post_attention_layernorm.weight", "ffn_norm.weight", true, NEED_PLAIN, SH_EMBD, XF_NONE, VP_NONE},
    {"post_attention_layernorm.weight", "post_attention_norm.weight", true, NEED_HYBRID, SH_EMBD, XF_NONE, VP_NONE},
    {"mlp.gate_proj.weight", "ffn_gate.weight", true, NEED_DENSE_FFN, SH_FF_EMBD, XF_NONE, VP_NONE},
    {"mlp.up_proj.weight", "ffn_up.weight", true, NEED_DENSE_FFN, SH_FF_EMBD, XF_NONE, VP_NONE},
    {"mlp.down_proj.weight", "ffn_down.weight", true, NEED_DENSE_FFN, SH_EMBD_FF, XF_NONE, VP_NONE},
    {"mlp.gate.weight", "ffn_gate_inp.weight", true, NEED_ROUTER, SH_EXP_EMBD, XF_NONE, VP_NONE},
    {"mlp.experts.%d.gate_proj.weight", "ffn_gate_exps.weight", true, NEED_EXPERT, SH_FFE_EMBD, XF_NONE, VP_NONE},
    {"mlp.experts.%d.up_proj.weight", "ffn_up_exps.weight", true, NEED_EXPERT, SH_FFE_EMBD, XF_NONE, VP_NONE},
    {"mlp.experts.%d.down_proj.weight", "ffn_down_exps.weight", true, NEED_EXPERT, SH_EMBD_FFE, XF_NONE, VP_NONE},
    {"mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight", true, NEED_SHEXP, SH_1_EMBD, XF_NONE, VP_NONE},
    {"mlp.shared_expert.gate_proj.weight", "ffn_gate_shexp.weight", true, NEED_SHEXP, SH_FFS_EMBD, XF_NONE, VP_NONE},
    {"mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight", true, NEED_SHEXP, SH_FFS_EMBD, XF_NONE, VP_NONE},
    {"mlp.shared_expert.down_proj.weight", "ffn_down_shexp.weight", true, NEED_SHEXP, SH_EMBD_FFS, XF_NONE, VP_NONE},
    {"model.norm.weight", "output_norm.weight", false, NEED_ALWAYS, SH_EMBD, XF_NONE, VP_NONE},
    {"lm_head.weight", "output.weight", false, NEED_UNTIED, SH_VOCAB_EMBD, XF_NONE, VP_NONE},
};
#define N_RULES (int)(sizeof rules / sizeof rules[0])

struct arch {
    const char *hf;   /* config.json "architectures"[0] */
    const char *gguf; /* general.architecture */
    bool qkv_bias;    /* q/k/v projections carry biases */
    bool qk_norm;     /* per-head RMS norms on q and k */
    bool moe;         /* sparse layers of experts (num_experts, mlp_only_layers, decoder_sparse_step) */
    bool hybrid;      /* Gated DeltaNet layers between gated full-attention layers (layer_types) */
    bool shexp;       /* a shared expert beside the routed ones */
    bool split_lin;   /* Qwen3.5: separate linear-attention projections, value heads tiled (enum vperm), weights under
                       * model.language_model., top-k weights always renormalised */
};

static const struct arch archs[] = {
    {"Qwen2ForCausalLM", "qwen2", true, false, false, false, false, false},
    {"Qwen3ForCausalLM", "qwen3", false, true, false, false, false, false},
    {"Qwen3MoeForCausalLM", "qwen3moe", false, true, true, false, false, false},
    {"Qwen3NextForCausalLM", "qwen3next", false, true, true, true, true, false},
    {"Qwen3_5ForCausalLM", "qwen35", false, true, false, true, false, true},
    {"Qwen3_5ForConditionalGeneration", "qwen35", false, true, false, true, false, true},
    {"Qwen3_5MoeForCausalLM", "qwen35moe", false, true, true, true, true, true},
    {"Qwen3_5MoeForConditionalGeneration", "qwen35moe", false, true, true, true, true, true},
};
#define N_ARCHS (int)(sizeof archs / sizeof archs[0])

const char *ty__convert_supported_archs(void) {
    return "Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM, Qwen3NextForCausalLM, Qwen3_5ForCausalLM, "
           "Qwen3_5MoeForCausalLM, Qwen3_5ForConditionalGeneration, Qwen3_5MoeForConditionalGeneration (text)";
}

/* ==== Types ==== */

bool ty__convert_type_ok(enum ty_type type) {
    if (type == TY_TYPE_Q8_K) return false; /* an activation format for dot products, never stored */
    const struct ty_type_traits *tt = ty__type_traits(type);
    return tt && tt->from_float;
}

int ty__convert_file_type(enum ty_type type) {
    /* llama.cpp's LLAMA_FTYPE values; the K types map to their "_S" (all-one-type) variants. */
    switch (type) {
    case TY_TYPE_F32:
        return 0;
    case TY_TYPE_F16:
        return 1;
    case TY_TYPE_Q4_0:
        return 2;
    case TY_TYPE_Q4_1:
        return 3;
    case TY_TYPE_Q8_0:
        return 7;
    case TY_TYPE_Q5_0:
        return 8;
    case TY_TYPE_Q5_1:
        return 9;
    case TY_TYPE_Q2_K:
        return 10;
    case TY_TYPE_Q3_K:
        return 11;
    case TY_TYPE_Q4_K:
        return 14;
    case TY_TYPE_Q5_K:
        return 16;
    case TY_TYPE_Q6_K:
        return 18;
    case TY_TYPE_BF16:
        return 32;
    default:
        return -1;
    }
}

struct ty_convert_params ty__convert_default_params(void) {
    struct ty_convert_params p = {.type = TY_TYPE_F16, .name = NULL, .n_threads = 0};
    return p;
}

/* ==== config.json ==== */

struct hparams {
    const struct arch *arch;
    int64_t n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv, head_dim, n_ctx;
    double rope_theta, norm_eps;
    bool tied;
    /* RoPE scaling: type NULL when none */
    const char *rope_type;
    double rope_factor;
    int64_t rope_orig_ctx;
    bool has_attn_factor, has_beta_fast, has_beta_slow, has_ext_factor;
    double attn_factor, beta_fast, beta_slow, ext_factor;
    /* MoE (arch->moe): n_expert == 0 otherwise */
    int64_t n_expert, n_expert_used, n_ff_exp, sparse_step;
    bool norm_topk;
    const json_t *mlp_only; /* array of dense layer indices, or NULL; borrowed from the config */
    /* hybrid (arch->hybrid) */
    int64_t full_interval; /* layer l has full attention iff (l + 1) % full_interval == 0 */
    int64_t lin_kernel, lin_nk, lin_nv, lin_dk, lin_dv;
    int64_t n_ff_shexp;
    int64_t rope_dims; /* rotated dimensions per head: head_dim x partial_rotary_factor */
    int32_t mrope[4];  /* Qwen3.5: rope_parameters.mrope_section, padded with 0; all 0 when absent */
};

static bool layer_full(const struct hparams *hp, int64_t layer) {
    return !hp->arch->hybrid || (layer + 1) % hp->full_interval == 0;
}

/* As transformers' Qwen3MoeDecoderLayer: experts unless the layer is in mlp_only_layers, every sparse_step-th layer. */
static bool layer_sparse(const struct hparams *hp, int64_t layer) {
    if (hp->n_expert == 0 || (layer + 1) % hp->sparse_step != 0) return false;
    size_t i;
    const json_t *e;
    json_array_foreach(hp->mlp_only, i, e) {
        if (json_integer_value(e) == layer) return false;
    }
    return true;
}

/* Whether rule r gives a tensor of layer `layer` (-1 for the global tensors). */
static bool rule_applies(const struct rule *r, const struct hparams *hp, int64_t layer) {
    /* the attention tensors of a hybrid model exist in its full-attention layers only */
    if (hp->arch->hybrid && r->per_layer && !strncmp(r->hf, "self_attn.", 10) && !layer_full(hp, layer)) return false;
    switch (r->need) {
    case NEED_PLAIN:
        return !hp->arch->hybrid;
    case NEED_HYBRID:
        return hp->arch->hybrid;
    case NEED_LINEAR:
        return hp->arch->hybrid && !layer_full(hp, layer);
    case NEED_LINEAR_G:
        return hp->arch->hybrid && !hp->arch->split_lin && !layer_full(hp, layer);
    case NEED_LINEAR_S:
        return hp->arch->split_lin && !layer_full(hp, layer);
    case NEED_GATED_Q:
        return hp->arch->hybrid && layer_full(hp, layer);
    case NEED_SHEXP:
        return hp->arch->shexp && layer_sparse(hp, layer);
    case NEED_QKV_BIAS:
        return hp->arch->qkv_bias;
    case NEED_QK_NORM:
        return hp->arch->qk_norm;
    case NEED_DENSE_FFN:
        return !layer_sparse(hp, layer);
    case NEED_ROUTER:
    case NEED_EXPERT:
        return layer_sparse(hp, layer);
    default:
        return true;
    }
}

/* Matches `name` against an expert rule's "prefix%dsuffix" with a canonical decimal below n_expert. */
static bool match_expert(const char *name, const char *pattern, int64_t n_expert, int64_t *expert) {
    const char *pct = strstr(pattern, "%d");
    size_t pre = (size_t)(pct - pattern);
    if (strncmp(name, pattern, pre)) return false;
    const char *p = name + pre;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9')) return false;
    int64_t n = 0;
    while (*p >= '0' && *p <= '9' && n < n_expert) n = n * 10 + (*p++ - '0');
    if (n >= n_expert || strcmp(p, pct + 2)) return false;
    *expert = n;
    return true;
}

static enum ty_status cfg_int(const char *path, const json_t *cfg, const char *key, bool required, int64_t def,
                              int64_t min, int64_t max, int64_t *out) {
    const json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        if (required) return ty__error(TY_ERR_FORMAT, "%s: missing \"%s\"", path, key);
        *out = def;
        return TY_OK;
    }
    if (!json_is_integer(v)) return ty__error(TY_ERR_FORMAT, "%s: \"%s\" must be an integer", path, key);
    int64_t x = json_integer_value(v);
    if (x < min || x > max)
        return ty__error(TY_ERR_FORMAT, "%s: \"%s\" = %lld is outside [%lld, %lld]", path, key, (long long)x,
                         (long long)min, (long long)max);
    *out = x;
    return TY_OK;
}

static enum ty_status cfg_num(const char *path, const json_t *obj, const char *key, bool *present, double *out) {
    const json_t *v = json_object_get(obj, key);
    *present = false;
    if (!v || json_is_null(v)) return TY_OK;
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return ty__error(TY_ERR_FORMAT, "%s: \"%s\" must be a finite number", path, key);
    *present = true;
    *out = json_number_value(v);
    return TY_OK;
}

static enum ty_status parse_rope_scaling(const char *path, const json_t *cfg, struct hparams *hp) {
    /* transformers 5 folds everything into "rope_parameters"; 4.x uses "rope_scaling" (and "type" before
     * "rope_type"). */
    const json_t *rs = json_object_get(cfg, "rope_parameters");
    if (!json_is_object(rs)) rs = json_object_get(cfg, "rope_scaling");
    if (!rs || json_is_null(rs)) return TY_OK;
    if (!json_is_object(rs)) return ty__error(TY_ERR_FORMAT, "%s: \"rope_scaling\" must be an object", path);
    bool present;
    double theta;
    TY_TRY(cfg_num(path, rs, "rope_theta", &present, &theta));
    if (present) hp->rope_theta = theta;
    const json_t *jt = json_object_get(rs, "rope_type");
    if (!json_is_string(jt)) jt = json_object_get(rs, "type");
    if (!jt || json_is_null(jt)) return TY_OK;
    if (!json_is_string(jt)) return ty__error(TY_ERR_FORMAT, "%s: rope_scaling \"rope_type\" must be a string", path);
    const char *type = json_string_value(jt);
    if (!strcmp(type, "default")) return TY_OK;
    if (strcmp(type, "linear") && strcmp(type, "yarn"))
        return ty__error(TY_ERR_UNSUPPORTED, "%s: RoPE scaling type \"%s\" is not supported (supported: linear, yarn)",
                         path, type);
    hp->rope_type = !strcmp(type, "linear") ? "linear" : "yarn";
    TY_TRY(cfg_num(path, rs, "factor", &present, &hp->rope_factor));
    if (!present || !(hp->rope_factor > 0))
        return ty__error(TY_ERR_FORMAT, "%s: rope_scaling of type %s needs a positive \"factor\"", path, type);
    if (!strcmp(type, "linear")) return TY_OK;

    /* YaRN, with transformers' defaults: original context = max_position_embeddings when not given. */
    TY_TRY(cfg_int(path, rs, "original_max_position_embeddings", false, hp->n_ctx, 1, INT32_MAX, &hp->rope_orig_ctx));
    TY_TRY(cfg_num(path, rs, "attention_factor", &hp->has_attn_factor, &hp->attn_factor));
    TY_TRY(cfg_num(path, rs, "beta_fast", &hp->has_beta_fast, &hp->beta_fast));
    TY_TRY(cfg_num(path, rs, "beta_slow", &hp->has_beta_slow, &hp->beta_slow));
    TY_TRY(cfg_num(path, rs, "extrapolation_factor", &hp->has_ext_factor, &hp->ext_factor));
    double unused;
    TY_TRY(cfg_num(path, rs, "mscale", &present, &unused));
    bool present2;
    TY_TRY(cfg_num(path, rs, "mscale_all_dim", &present2, &unused));
    if (present || present2)
        return ty__error(TY_ERR_UNSUPPORTED, "%s: YaRN \"mscale\"/\"mscale_all_dim\" are not supported", path);
    const json_t *tr = json_object_get(rs, "truncate");
    if (tr && !json_is_true(tr) && !json_is_null(tr))
        return ty__error(TY_ERR_UNSUPPORTED, "%s: YaRN with \"truncate\": false is not supported", path);
    return TY_OK;
}

static enum ty_status parse_moe(const char *path, const json_t *cfg, struct hparams *hp) {
    const int64_t big = INT32_MAX;
    TY_TRY(cfg_int(path, cfg, "num_experts", true, 0, 1, 4096, &hp->n_expert));
    TY_TRY(cfg_int(path, cfg, "num_experts_per_tok", true, 0, 1, hp->n_expert, &hp->n_expert_used));
    TY_TRY(cfg_int(path, cfg, "moe_intermediate_size", true, 0, 1, big, &hp->n_ff_exp));
    TY_TRY(cfg_int(path, cfg, "decoder_sparse_step", false, 1, 1, big, &hp->sparse_step));
    const json_t *norm = json_object_get(cfg, "norm_topk_prob");
    if (norm && !json_is_boolean(norm))
        return ty__error(TY_ERR_FORMAT, "%s: \"norm_topk_prob\" must be true or false", path);
    hp->norm_topk = json_is_true(norm); /* Qwen3MoeConfig's default is false */
    const json_t *mo = json_object_get(cfg, "mlp_only_layers");
    if (mo && !json_is_null(mo)) {
        size_t i;
        const json_t *e;
        if (!json_is_array(mo))
            return ty__error(TY_ERR_FORMAT, "%s: \"mlp_only_layers\" must be a list of layer indices", path);
        json_array_foreach(mo, i, e) {
            if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= hp->n_layer)
                return ty__error(TY_ERR_FORMAT, "%s: mlp_only_layers[%zu] is not a layer index below %lld", path, i,
                                 (long long)hp->n_layer);
        }
        hp->mlp_only = mo;
    }
    return TY_OK;
}

/* The hybrid layout (Qwen3NextConfig): layer_types must repeat linear ... linear, full with period
 * full_attention_interval, which is all llama.cpp's qwen3next can express. */
static enum ty_status parse_hybrid(const char *path, const json_t *cfg, struct hparams *hp) {
    const int64_t big = INT32_MAX;
    TY_TRY(cfg_int(path, cfg, "linear_conv_kernel_dim", true, 0, 2, 64, &hp->lin_kernel));
    TY_TRY(cfg_int(path, cfg, "linear_num_key_heads", true, 0, 1, 4096, &hp->lin_nk));
    TY_TRY(cfg_int(path, cfg, "linear_num_value_heads", true, 0, 1, 4096, &hp->lin_nv));
    TY_TRY(cfg_int(path, cfg, "linear_key_head_dim", true, 0, 1, 256, &hp->lin_dk));
    TY_TRY(cfg_int(path, cfg, "linear_value_head_dim", true, 0, 1, 256, &hp->lin_dv));
    if (hp->lin_nv % hp->lin_nk)
        return ty__error(TY_ERR_FORMAT,
                         "%s: linear_num_value_heads %lld is not a multiple of linear_num_key_heads %lld", path,
                         (long long)hp->lin_nv, (long long)hp->lin_nk);
    if (hp->arch->shexp)
        TY_TRY(cfg_int(path, cfg, "shared_expert_intermediate_size", true, 0, 1, big, &hp->n_ff_shexp));
    const json_t *lt = json_object_get(cfg, "layer_types");
    int64_t interval = 0;
    if (json_is_array(lt)) {
        if ((int64_t)json_array_size(lt) != hp->n_layer)
            return ty__error(TY_ERR_FORMAT, "%s: \"layer_types\" has %zu entries for %lld layers", path,
                             json_array_size(lt), (long long)hp->n_layer);
        size_t i;
        const json_t *e;
        json_array_foreach(lt, i, e) {
            const char *t = json_string_value(e);
            if (!t || (strcmp(t, "full_attention") && strcmp(t, "linear_attention")))
                return ty__error(TY_ERR_UNSUPPORTED,
                                 "%s: layer_types[%zu] is not \"full_attention\" or "
                                 "\"linear_attention\"",
                                 path, i);
            if (!interval && !strcmp(t, "full_attention")) interval = (int64_t)i + 1;
        }
        if (!interval) interval = hp->n_layer + 1; /* no full-attention layer at all */
        json_array_foreach(lt, i, e) {
            bool full = ((int64_t)i + 1) % interval == 0;
            if (full != !strcmp(json_string_value(e), "full_attention"))
                return ty__error(TY_ERR_UNSUPPORTED,
                                 "%s: layer_types[%zu] is \"%s\", but the layers do not repeat with period %lld (the "
                                 "first full-attention layer); only periodic layouts (full_attention_interval) can be "
                                 "written",
                                 path, i, json_string_value(e), (long long)interval);
        }
    } else {
        TY_TRY(cfg_int(path, cfg, "full_attention_interval", true, 0, 1, big, &interval));
    }
    hp->full_interval = interval;
    /* partial rotary: transformers 5 reads it from rope_parameters, 4.x from the top level */
    double factor = 1.0, v;
    bool present;
    TY_TRY(cfg_num(path, cfg, "partial_rotary_factor", &present, &v));
    if (present) factor = v;
    const json_t *rp = json_object_get(cfg, "rope_parameters");
    if (json_is_object(rp)) {
        TY_TRY(cfg_num(path, rp, "partial_rotary_factor", &present, &v));
        if (present) factor = v;
    }
    if (!(factor > 0 && factor <= 1))
        return ty__error(TY_ERR_FORMAT, "%s: partial_rotary_factor %g is not in (0, 1]", path, factor);
    hp->rope_dims = (int64_t)((double)hp->head_dim * factor); /* Python's int() */
    if (hp->rope_dims < 2 || hp->rope_dims % 2)
        return ty__error(TY_ERR_FORMAT,
                         "%s: head_dim %lld x partial_rotary_factor %g = %lld rotated dimensions; RoPE "
                         "needs an even number",
                         path, (long long)hp->head_dim, factor, (long long)hp->rope_dims);
    return TY_OK;
}

static enum ty_status parse_config(const char *path, const json_t *top, struct hparams *hp) {
    memset(hp, 0, sizeof *hp);
    if (!json_is_object(top)) return ty__error(TY_ERR_FORMAT, "%s: not a JSON object", path);
    /* a vision-language checkpoint (Qwen3.5 ...ForConditionalGeneration) describes its text model in text_config */
    const json_t *cfg = json_is_object(json_object_get(top, "text_config")) ? json_object_get(top, "text_config") : top;
    const json_t *ja = json_object_get(top, "architectures");
    const char *an = json_is_array(ja) ? json_string_value(json_array_get(ja, 0)) : NULL;
    if (!an)
        return ty__error(TY_ERR_FORMAT, "%s: no \"architectures\" list; supported: %s", path,
                         ty__convert_supported_archs());
    for (int i = 0; i < N_ARCHS; i++)
        if (!strcmp(archs[i].hf, an)) hp->arch = &archs[i];
    if (!hp->arch)
        return ty__error(TY_ERR_UNSUPPORTED, "%s: architecture %s is not supported; supported: %s", path, an,
                         ty__convert_supported_archs());

    const int64_t big = INT32_MAX;
    TY_TRY(cfg_int(path, cfg, "hidden_size", true, 0, 1, big, &hp->n_embd));
    /* Qwen3.5-MoE has no dense FFN and no intermediate_size (feed_forward_length then repeats the expert size) */
    TY_TRY(cfg_int(path, cfg, "intermediate_size", !(hp->arch->split_lin && hp->arch->moe), 0, 1, big, &hp->n_ff));
    TY_TRY(cfg_int(path, cfg, "num_hidden_layers", true, 0, 1, 100000, &hp->n_layer));
    TY_TRY(cfg_int(path, cfg, "num_attention_heads", true, 0, 1, big, &hp->n_head));
    TY_TRY(cfg_int(path, cfg, "num_key_value_heads", false, hp->n_head, 1, big, &hp->n_head_kv));
    TY_TRY(cfg_int(path, cfg, "max_position_embeddings", true, 0, 1, big, &hp->n_ctx));
    TY_TRY(cfg_int(path, cfg, "vocab_size", false, 0, 0, big, &hp->n_vocab)); /* 0: take it from the embedding */
    if (hp->n_head % hp->n_head_kv)
        return ty__error(TY_ERR_FORMAT, "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
                         path, (long long)hp->n_head, (long long)hp->n_head_kv);
    if (!json_object_get(cfg, "head_dim") || json_is_null(json_object_get(cfg, "head_dim"))) {
        if (hp->n_embd % hp->n_head)
            return ty__error(TY_ERR_FORMAT, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", path,
                             (long long)hp->n_embd, (long long)hp->n_head);
        hp->head_dim = hp->n_embd / hp->n_head;
    } else {
        TY_TRY(cfg_int(path, cfg, "head_dim", true, 0, 2, 65536, &hp->head_dim));
    }
    if (hp->head_dim % 2)
        return ty__error(TY_ERR_FORMAT, "%s: head_dim %lld is odd; RoPE needs pairs", path, (long long)hp->head_dim);

    bool present;
    hp->rope_theta = 10000.0; /* transformers' default for Qwen2/Qwen3 */
    double v;
    TY_TRY(cfg_num(path, cfg, "rope_theta", &present, &v));
    if (present) hp->rope_theta = v;
    hp->norm_eps = 1e-6;
    TY_TRY(cfg_num(path, cfg, "rms_norm_eps", &present, &v));
    if (present) hp->norm_eps = v;
    if (!(hp->rope_theta > 0) || !(hp->norm_eps > 0))
        return ty__error(TY_ERR_FORMAT, "%s: rope_theta and rms_norm_eps must be positive", path);

    const json_t *tie = json_object_get(cfg, "tie_word_embeddings");
    if (!tie) tie = json_object_get(top, "tie_word_embeddings");
    if (tie && !json_is_boolean(tie))
        return ty__error(TY_ERR_FORMAT, "%s: \"tie_word_embeddings\" must be true or false", path);
    hp->tied = json_is_true(tie); /* Qwen2Config and Qwen3Config default to false */

    const json_t *act = json_object_get(cfg, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu")))
        return ty__error(TY_ERR_UNSUPPORTED, "%s: hidden_act %s is not supported (Qwen uses silu)", path,
                         json_is_string(act) ? json_string_value(act) : "(not a string)");
    const json_t *bias = json_object_get(cfg, "attention_bias");
    if (!hp->arch->qkv_bias && json_is_true(bias))
        return ty__error(TY_ERR_UNSUPPORTED, "%s: %s with attention_bias = true is not supported", path, an);

    /* Sliding-window layers change the attention mask; refuse rather than convert a model we would run wrongly. */
    const json_t *lt = hp->arch->hybrid ? NULL : json_object_get(cfg, "layer_types");
    size_t i;
    const json_t *e;
    json_array_foreach(lt, i, e) {
        if (json_is_string(e) && strcmp(json_string_value(e), "full_attention"))
            return ty__error(TY_ERR_UNSUPPORTED, "%s: layer %zu is \"%s\"; only full attention is supported", path, i,
                             json_string_value(e));
    }
    if (!hp->arch->hybrid && !lt && json_is_true(json_object_get(cfg, "use_sliding_window")))
        return ty__error(TY_ERR_UNSUPPORTED, "%s: use_sliding_window = true is not supported", path);
    if (hp->arch->moe) TY_TRY(parse_moe(path, cfg, hp));
    if (hp->arch->split_lin && hp->arch->moe) {
        hp->norm_topk = true; /* Qwen3_5MoeTopKRouter always renormalises */
        if (!hp->n_ff) hp->n_ff = hp->n_ff_exp;
    }
    if (hp->arch->hybrid) TY_TRY(parse_hybrid(path, cfg, hp));
    if (hp->arch->split_lin) {
        /* interleaved MRoPE sections (transformers' default when absent); for text every section sees the same
         * position, so they do not change the computation, but llama.cpp's qwen35 reads them */
        static const int32_t def[4] = {11, 11, 10, 0};
        memcpy(hp->mrope, def, sizeof def);
        const json_t *rp = json_object_get(cfg, "rope_parameters");
        const json_t *ms = json_is_object(rp) ? json_object_get(rp, "mrope_section") : NULL;
        if (json_is_array(ms)) {
            memset(hp->mrope, 0, sizeof hp->mrope);
            size_t si;
            const json_t *se;
            json_array_foreach(ms, si, se) {
                if (si >= 4 || !json_is_integer(se) || json_integer_value(se) < 0 || json_integer_value(se) > 4096)
                    return ty__error(TY_ERR_FORMAT, "%s: rope_parameters.mrope_section must be up to 4 small integers",
                                     path);
                hp->mrope[si] = (int32_t)json_integer_value(se);
            }
        }
    }
    return parse_rope_scaling(path, cfg, hp);
}

static void expected_shape(const struct hparams *hp, enum shape s, int *n, int64_t d[3]) {
    int64_t qo = hp->n_head * hp->head_dim, kv = hp->n_head_kv * hp->head_dim;
    int64_t kd = hp->lin_nk * hp->lin_dk, vd = hp->lin_nv * hp->lin_dv;
    *n = 2;
    switch (s) {
    case SH_QG_EMBD:
        d[0] = 2 * qo, d[1] = hp->n_embd;
        break;
    case SH_QKVZ_EMBD:
        d[0] = 2 * kd + 2 * vd, d[1] = hp->n_embd;
        break;
    case SH_BA_EMBD:
        d[0] = 2 * hp->lin_nv, d[1] = hp->n_embd;
        break;
    case SH_CONV:
        *n = 3, d[0] = 2 * kd + vd, d[1] = 1, d[2] = hp->lin_kernel;
        break;
    case SH_HV:
        *n = 1, d[0] = hp->lin_nv;
        break;
    case SH_DV:
        *n = 1, d[0] = hp->lin_dv;
        break;
    case SH_EMBD_VD:
        d[0] = hp->n_embd, d[1] = vd;
        break;
    case SH_FFS_EMBD:
        d[0] = hp->n_ff_shexp, d[1] = hp->n_embd;
        break;
    case SH_EMBD_FFS:
        d[0] = hp->n_embd, d[1] = hp->n_ff_shexp;
        break;
    case SH_1_EMBD:
        d[0] = 1, d[1] = hp->n_embd;
        break;
    case SH_QKV_EMBD:
        d[0] = 2 * kd + vd, d[1] = hp->n_embd;
        break;
    case SH_VD_EMBD:
        d[0] = vd, d[1] = hp->n_embd;
        break;
    case SH_HV_EMBD:
        d[0] = hp->lin_nv, d[1] = hp->n_embd;
        break;
    case SH_VOCAB_EMBD:
        d[0] = hp->n_vocab, d[1] = hp->n_embd;
        break;
    case SH_QO_EMBD:
        d[0] = qo, d[1] = hp->n_embd;
        break;
    case SH_KV_EMBD:
        d[0] = kv, d[1] = hp->n_embd;
        break;
    case SH_EMBD_QO:
        d[0] = hp->n_embd, d[1] = qo;
        break;
    case SH_FF_EMBD:
        d[0] = hp->n_ff, d[1] = hp->n_embd;
        break;
    case SH_EMBD_FF:
        d[0] = hp->n_embd, d[1] = hp->n_ff;
        break;
    case SH_EMBD:
        *n = 1, d[0] = hp->n_embd;
        break;
    case SH_QO:
        *n = 1, d[0] = qo;
        break;
    case SH_KV:
        *n = 1, d[0] = kv;
        break;
    case SH_HEAD:
        *n = 1, d[0] = hp->head_dim;
        break;
    case SH_EXP_EMBD:
        d[0] = hp->n_expert, d[1] = hp->n_embd;
        break;
    case SH_FFE_EMBD:
        d[0] = hp->n_ff_exp, d[1] = hp->n_embd;
        break;
    case SH_EMBD_FFE:
        d[0] = hp->n_embd, d[1] = hp->n_ff_exp;
        break;
    }
}

static void shape_str(char *buf, size_t cap, int n, const int64_t *d) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* ==== Planning: which checkpoint tensor becomes which GGUF tensor ==== */

struct item {
    const struct ty_st_tensor *src; /* the source, or the first of a stack */
    char name[96];
    enum ty_type type;
    int n_dims;
    int64_t ne[3]; /* GGUF order: ne[0] = the last PyTorch dimension; ne[2] = the experts of a stack */
    enum xform xform;
    enum vperm vperm;           /* value heads reordered (Qwen3.5) */
    int64_t vp_first, vp_block; /* where the value-head blocks start (row or column), and their size */
    int64_t vp_nk, vp_nv;       /* key and value heads */
    int stack0;                 /* a stack of experts: its sources are plan->stack[stack0 .. stack0 + ne[2]) */
    uint64_t src_bytes;         /* bytes read from the checkpoint */
};

struct plan {
    struct item *items;
    int n_items;
    int cap;
    const struct ty_st_tensor **stack; /* sources of stacked items, in expert order */
    int n_stack, stack_cap;
};

static enum ty_status stack_add(struct plan *p, const struct ty_st_tensor *src) {
    if (p->n_stack == p->stack_cap) {
        int cap = p->stack_cap ? 2 * p->stack_cap : 256;
        const struct ty_st_tensor **st = ty__realloc(p->stack, sizeof *st * (size_t)cap);
        if (!st) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
        p->stack = st;
        p->stack_cap = cap;
    }
    p->stack[p->n_stack++] = src;
    return TY_OK;
}

static enum ty_status plan_add(struct plan *p, const struct ty_st_tensor *src, const char *name) {
    if (p->n_items == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        struct item *it = ty__realloc(p->items, sizeof *it * (size_t)cap);
        if (!it) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
        p->items = it;
        p->cap = cap;
    }
    struct item *it = &p->items[p->n_items++];
    memset(it, 0, sizeof *it);
    it->src = src;
    it->ne[2] = 1;
    it->src_bytes = src->nbytes;
    snprintf(it->name, sizeof it->name, "%s", name);
    return TY_OK;
}

/* Qwen3.5 keeps its text model under model.language_model. (beside model.visual.); the rules name every tensor as
 * the text-only models do (model.), and these translate. */
static const char lm_prefix[] = "model.language_model.";

static void hf_real(const struct hparams *hp, const char *canon, char *buf, size_t cap) {
    if (!hp->arch->split_lin || strncmp(canon, "model.", 6))
        snprintf(buf, cap, "%s", canon);
    else
        snprintf(buf, cap, "%s%s", lm_prefix, canon + 6);
}

static const char *hf_canon(const struct hparams *hp, const char *name, char *buf, size_t cap) {
    if (!hp->arch->split_lin || strncmp(name, lm_prefix, sizeof lm_prefix - 1)) return name;
    snprintf(buf, cap, "model.%s", name + sizeof lm_prefix - 1);
    return buf;
}

/* Parses "model.layers.<n>.<rest>" with n a canonical decimal; returns rest or NULL. */
static const char *layer_suffix(const char *name, int64_t *layer) {
    static const char prefix[] = "model.layers.";
    if (strncmp(name, prefix, sizeof prefix - 1)) return NULL;
    const char *p = name + sizeof prefix - 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9')) return NULL;
    int64_t n = 0;
    while (*p >= '0' && *p <= '9') {
        n = n * 10 + (*p - '0');
        if (n > 1000000) return NULL;
        p++;
    }
    if (*p != '.') return NULL;
    *layer = n;
    return p + 1;
}

static bool is_ignorable(const char *name) {
    /* Rotary tables some exporters saved as buffers: recomputed from rope_theta. */
    size_t n = strlen(name);
    static const char inv[] = ".rotary_emb.inv_freq";
    return n >= sizeof inv - 1 && !strcmp(name + n - (sizeof inv - 1), inv);
}

/* Checks a tensor's PyTorch shape against what config.json implies. */
static enum ty_status check_shape(const struct ty_st_tensor *t, const char *hfname, int en, const int64_t *ed) {
    bool ok = t->n_dims == en;
    for (int d = 0; ok && d < en; d++) ok = t->shape[d] == ed[d];
    if (ok) return TY_OK;
    char got[64], want[64];
    shape_str(got, sizeof got, t->n_dims, t->shape);
    shape_str(want, sizeof want, en, ed);
    return ty__error(TY_ERR_FORMAT, "%s: tensor %s has shape %s but config.json implies %s", t->file, hfname, got,
                     want);
}

/* One stacked tensor of layer l from the layer's n_expert per-expert tensors of rule ru. */
static enum ty_status plan_experts(const struct ty_checkpoint *ck, const struct hparams *hp, const struct rule *ru,
                                   int64_t l, struct plan *plan) {
    char hfname[192], part[96], name[96];
    int en;
    int64_t ed[3];
    expected_shape(hp, ru->shape, &en, ed);
    int stack0 = plan->n_stack;
    uint64_t bytes = 0;
    for (int64_t e = 0; e < hp->n_expert; e++) {
        const char *pct = strstr(ru->hf, "%d");
        snprintf(part, sizeof part, "%.*s%lld%s", (int)(pct - ru->hf), ru->hf, (long long)e, pct + 2);
        char canon[160];
        snprintf(canon, sizeof canon, "model.layers.%lld.%s", (long long)l, part);
        hf_real(hp, canon, hfname, sizeof hfname);
        const struct ty_st_tensor *t = ty__checkpoint_find(ck, hfname);
        if (!t)
            return ty__error(TY_ERR_FORMAT,
                             "tensor %s is missing; config.json says num_experts = %lld, so a %s checkpoint must have "
                             "it",
                             hfname, (long long)hp->n_expert, hp->arch->hf);
        TY_TRY(check_shape(t, hfname, en, ed));
        TY_TRY(stack_add(plan, t));
        bytes += t->nbytes;
    }
    snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, ru->gguf);
    TY_TRY(plan_add(plan, plan->stack[stack0], name));
    struct item *it = &plan->items[plan->n_items - 1];
    it->n_dims = 3;
    it->ne[0] = ed[1];
    it->ne[1] = ed[0];
    it->ne[2] = hp->n_expert;
    it->stack0 = stack0;
    it->src_bytes = bytes;
    return TY_OK;
}

static enum ty_status build_plan(const struct ty_checkpoint *ck, const struct hparams *hp, struct plan *plan) {
    const struct arch *a = hp->arch;
    /* Every checkpoint tensor must be accounted for: mapped, skipped for a stated reason, or an error. */
    int64_t n = ty__checkpoint_n_tensors(ck);
    struct ty_buf unknown = {0};
    int n_unknown = 0, n_mtp = 0, n_visual = 0;
    for (int64_t i = 0; i < n; i++) {
        const struct ty_st_tensor *t = ty__checkpoint_tensor(ck, i);
        char cbuf[256];
        const char *cname = hf_canon(hp, t->name, cbuf, sizeof cbuf);
        int64_t layer = -1;
        const char *rest = layer_suffix(cname, &layer);
        bool known = false;
        for (int r = 0; r < N_RULES && !known; r++) {
            const struct rule *ru = &rules[r];
            if (!rule_applies(ru, hp, ru->per_layer ? layer : -1)) continue;
            int64_t expert;
            if (ru->need == NEED_EXPERT)
                known = rest && layer < hp->n_layer && match_expert(rest, ru->hf, hp->n_expert, &expert);
            else
                known = ru->per_layer ? (rest && layer < hp->n_layer && !strcmp(rest, ru->hf)) : !strcmp(cname, ru->hf);
        }
        if (known) continue;
        if (hp->arch->split_lin && !strncmp(t->name, "model.visual.", 13)) { /* the vision tower: said once, below */
            n_visual++;
            continue;
        }
        if (!strncmp(t->name, "mtp.", 4)) { /* hundreds of tensors (one per expert): said once, below */
            n_mtp++;
            continue;
        }
        if (is_ignorable(t->name)) {
            TY_LOG_W("convert: skipping %s (recomputed at run time)", t->name);
            continue;
        }
        if (n_unknown < 8) ty__buf_printf(&unknown, "%s%s", n_unknown ? ", " : "", t->name);
        n_unknown++;
    }
    /* Qwen3-Next's multi-token-prediction layer is not run (llama.cpp's converter leaves it out too) */
    if (n_visual)
        TY_LOG_W("convert: skipping the %d model.visual.* tensors (the vision tower; only the text model is converted)",
                 n_visual);
    if (n_mtp)
        TY_LOG_W("convert: skipping the %d mtp.* tensors (multi-token prediction, which Tongyun does not run)", n_mtp);
    if (n_unknown) {
        if (n_unknown > 8) ty__buf_printf(&unknown, ", ... (%d in all)", n_unknown);
        enum ty_status st =
            ty__error(TY_ERR_UNSUPPORTED,
                      "%s checkpoint has tensors that are not part of a %s model: %s; the checkpoint does not match "
                      "its config.json, or it is a variant Tongyun cannot convert",
                      a->hf, a->gguf, unknown.data ? unknown.data : "?");
        ty__buf_free(&unknown);
        return st;
    }
    ty__buf_free(&unknown);

    /* Then in write order, checking presence and shape. */
    char name[96], hfname[192];
    for (int pass = 0; pass < 3; pass++) {
        /* pass 0: globals before the blocks; pass 1: blocks; pass 2: globals after the blocks */
        int64_t layers = pass == 1 ? hp->n_layer : 1;
        for (int64_t l = 0; l < layers; l++) {
            for (int r = 0; r < N_RULES; r++) {
                const struct rule *ru = &rules[r];
                if (ru->per_layer != (pass == 1)) continue;
                if (pass != 1 && ((pass == 0) != (r == 0))) continue;
                if (!rule_applies(ru, hp, ru->per_layer ? l : -1)) continue;
                if (ru->need == NEED_EXPERT) {
                    TY_TRY(plan_experts(ck, hp, ru, l, plan));
                    continue;
                }
                char canon[160];
                if (ru->per_layer) {
                    snprintf(canon, sizeof canon, "model.layers.%lld.%s", (long long)l, ru->hf);
                    snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, ru->gguf);
                } else {
                    snprintf(canon, sizeof canon, "%s", ru->hf);
                    snprintf(name, sizeof name, "%s", ru->gguf);
                }
                hf_real(hp, canon, hfname, sizeof hfname);
                const struct ty_st_tensor *t = ty__checkpoint_find(ck, hfname);
                if (ru->need == NEED_UNTIED && hp->tied) {
                    if (t)
                        TY_LOG_I("convert: %s ignored: tie_word_embeddings is true (the output reuses token_embd)",
                                 hfname);
                    continue;
                }
                if (!t) {
                    if (ru->need == NEED_UNTIED)
                        return ty__error(TY_ERR_FORMAT,
                                         "tensor %s is missing and config.json says tie_word_embeddings is false; the "
                                         "checkpoint is incomplete",
                                         hfname);
                    return ty__error(TY_ERR_FORMAT, "tensor %s is missing; a %s checkpoint must have it", hfname,
                                     a->hf);
                }
                int en;
                int64_t ed[3];
                expected_shape(hp, ru->shape, &en, ed);
                TY_TRY(check_shape(t, hfname, en, ed));
                TY_TRY(plan_add(plan, t, name));
                struct item *it = &plan->items[plan->n_items - 1];
                it->n_dims = en;
                it->ne[0] = en == 2 ? ed[1] : ed[0];
                it->ne[1] = en == 2 ? ed[0] : 1;
                if (ru->shape == SH_CONV) { /* [C, 1, K]: the same bytes as (K, C) */
                    it->n_dims = 2, it->ne[0] = ed[2], it->ne[1] = ed[0];
                } else if (ru->shape == SH_1_EMBD) {
                    it->n_dims = 1, it->ne[0] = ed[1], it->ne[1] = 1;
                }
                it->xform = ru->xform;
                if (ru->vperm == VP_QKVZ_QKV || ru->vperm == VP_QKVZ_Z) {
                    it->vperm = ru->vperm;
                    it->vp_first = hp->lin_dk;
                    it->vp_block = hp->lin_dv;
                    it->vp_nk = hp->lin_nk;
                    it->vp_nv = hp->lin_nv;
                    it->ne[1] = (ru->vperm == VP_QKVZ_QKV ? 2 * hp->lin_nk * hp->lin_dk : 0) + hp->lin_nv * hp->lin_dv;
                } else if (hp->arch->split_lin && ru->vperm != VP_NONE) {
                    it->vperm = ru->vperm;
                    it->vp_block = ru->shape == SH_HV || ru->shape == SH_HV_EMBD ? 1 : hp->lin_dv;
                    it->vp_first = ru->shape == SH_QKV_EMBD || ru->shape == SH_CONV ? 2 * hp->lin_nk * hp->lin_dk : 0;
                    it->vp_nk = hp->lin_nk;
                    it->vp_nv = hp->lin_nv;
                }
                /* the (1 + w) RMSNorms of the hybrid models, written with the 1 added as llama.cpp does; the gated
                 * norm of the linear attention scales by w itself */
                size_t hl = strlen(hfname);
                if (hp->arch->hybrid && hl >= 11 && !strcmp(hfname + hl - 11, "norm.weight") && ru->need != NEED_LINEAR)
                    it->xform = XF_PLUS_ONE;
            }
        }
    }
    return TY_OK;
}

/* ==== Metadata ==== */

static enum ty_status set_u32(struct ty_gguf_writer *w, const char *arch, const char *key, int64_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return ty__gguf_writer_set_u32(w, k, (uint32_t)v);
}

static enum ty_status set_f32(struct ty_gguf_writer *w, const char *arch, const char *key, double v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return ty__gguf_writer_set_f32(w, k, (float)v);
}

static enum ty_status write_hparams(struct ty_gguf_writer *w, const struct hparams *hp, const char *name,
                                    enum ty_type type) {
    const char *a = hp->arch->gguf;
    TY_TRY(ty__gguf_writer_set_str(w, "general.architecture", a));
    TY_TRY(ty__gguf_writer_set_str(w, "general.name", name));
    TY_TRY(ty__gguf_writer_set_u32(w, "general.file_type", (uint32_t)ty__convert_file_type(type)));
    TY_TRY(ty__gguf_writer_set_u32(w, "general.quantization_version", 2));
    TY_TRY(set_u32(w, a, "block_count", hp->n_layer));
    TY_TRY(set_u32(w, a, "context_length", hp->n_ctx));
    TY_TRY(set_u32(w, a, "embedding_length", hp->n_embd));
    TY_TRY(set_u32(w, a, "feed_forward_length", hp->n_ff));
    TY_TRY(set_u32(w, a, "attention.head_count", hp->n_head));
    TY_TRY(set_u32(w, a, "attention.head_count_kv", hp->n_head_kv));
    TY_TRY(set_f32(w, a, "rope.freq_base", hp->rope_theta));
    TY_TRY(set_f32(w, a, "attention.layer_norm_rms_epsilon", hp->norm_eps));
    /* llama.cpp writes these only when config.json has head_dim; writing them always is equivalent and explicit. */
    TY_TRY(set_u32(w, a, "attention.key_length", hp->head_dim));
    TY_TRY(set_u32(w, a, "attention.value_length", hp->head_dim));
    if (hp->n_expert > 0) {
        /* llama.cpp's names; it assumes renormalised weights for qwen3moe, so the flag is written explicitly. */
        TY_TRY(set_u32(w, a, "expert_count", hp->n_expert));
        TY_TRY(set_u32(w, a, "expert_used_count", hp->n_expert_used));
        TY_TRY(set_u32(w, a, "expert_feed_forward_length", hp->n_ff_exp));
        char k[128];
        snprintf(k, sizeof k, "%s.expert_weights_norm", a);
        TY_TRY(ty__gguf_writer_set_bool(w, k, hp->norm_topk));
    }
    if (hp->arch->hybrid) {
        /* llama.cpp's qwen3next keys: state_size is the key head dimension, group_count the key heads,
         * time_step_rank the value heads, inner_size all value heads' dimensions */
        TY_TRY(set_u32(w, a, "rope.dimension_count", hp->rope_dims));
        TY_TRY(set_u32(w, a, "full_attention_interval", hp->full_interval));
        TY_TRY(set_u32(w, a, "ssm.conv_kernel", hp->lin_kernel));
        TY_TRY(set_u32(w, a, "ssm.state_size", hp->lin_dk));
        TY_TRY(set_u32(w, a, "ssm.group_count", hp->lin_nk));
        TY_TRY(set_u32(w, a, "ssm.time_step_rank", hp->lin_nv));
        TY_TRY(set_u32(w, a, "ssm.inner_size", hp->lin_nv * hp->lin_dv));
        if (hp->n_ff_shexp > 0) TY_TRY(set_u32(w, a, "expert_shared_feed_forward_length", hp->n_ff_shexp));
        if (hp->arch->split_lin) {
            char k[128];
            snprintf(k, sizeof k, "%s.rope.dimension_sections", a);
            TY_TRY(ty__gguf_writer_set_arr(w, k, TY_GGUF_TYPE_INT32, hp->mrope, 4));
        }
    }
    if (hp->rope_type) {
        char k[128];
        snprintf(k, sizeof k, "%s.rope.scaling.type", a);
        TY_TRY(ty__gguf_writer_set_str(w, k, hp->rope_type));
        TY_TRY(set_f32(w, a, "rope.scaling.factor", hp->rope_factor));
        if (!strcmp(hp->rope_type, "yarn")) {
            TY_TRY(set_u32(w, a, "rope.scaling.original_context_length", hp->rope_orig_ctx));
            if (hp->has_ext_factor) TY_TRY(set_f32(w, a, "rope.scaling.yarn_ext_factor", hp->ext_factor));
            if (hp->has_attn_factor) TY_TRY(set_f32(w, a, "rope.scaling.yarn_attn_factor", hp->attn_factor));
            if (hp->has_beta_fast) TY_TRY(set_f32(w, a, "rope.scaling.yarn_beta_fast", hp->beta_fast));
            if (hp->has_beta_slow) TY_TRY(set_f32(w, a, "rope.scaling.yarn_beta_slow", hp->beta_slow));
        }
    }
    return TY_OK;
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = ty__malloc(a + b + 2);
    if (!p) return NULL;
    snprintf(p, a + b + 2, "%s%s%s", dir, a && dir[a - 1] == '/' ? "" : "/", name);
    return p;
}

static bool exists(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

/* The tokenizer carries tokenizer_config.json's chat template into tokenizer.chat_template; newer transformers
 * versions save it beside that file as chat_template.jinja instead, which is read here. */
static enum ty_status write_chat_template(struct ty_gguf_writer *w, const struct ty_tokenizer *tok, const char *dir) {
    if (ty__tokenizer_chat_template(tok)) return TY_OK;
    char *jinja = join(dir, "chat_template.jinja");
    if (!jinja) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    enum ty_status st = TY_OK;
    if (exists(jinja)) {
        char *text = NULL;
        st = ty__file_read(jinja, (size_t)16 << 20, &text, NULL);
        if (st == TY_OK) st = ty__gguf_writer_set_str(w, "tokenizer.chat_template", text);
        ty_free(text);
    } else {
        TY_LOG_W("convert: no chat template in %s (tokenizer_config.json or chat_template.jinja); the GGUF has none",
                 dir);
    }
    ty_free(jinja);
    return st;
}

/* ==== Tensor data ==== */

struct scratch {
    struct ty_threadpool *pool;
    float *f32;
    size_t f32_cap; /* floats */
    uint8_t *out;
    size_t out_cap; /* bytes */
};

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    void *q = ty__realloc(*p, need * elem);
    if (!q) return false;
    *p = q;
    *cap = need;
    return true;
}

static bool same_type(enum ty_st_dtype d, enum ty_type t) {
    return (d == TY_ST_F32 && t == TY_TYPE_F32) || (d == TY_ST_F16 && t == TY_TYPE_F16) ||
           (d == TY_ST_BF16 && t == TY_TYPE_BF16);
}

/* One tensor's rows, shared out among the pool's threads; each converts its rows a step at a time through its own
 * slice of the float scratch. Rows are independent (every type's blocks lie within a row), so the bytes do not depend
 * on the thread count. */
struct conv_job {
    const struct ty_st_tensor *src;
    enum xform xform;
    const struct item *it; /* for its value-head reordering */
    const struct ty_type_traits *tt;
    uint8_t *out;
    size_t row_bytes;
    int64_t ncols, nrows, step; /* step: rows per read, per thread (1 when value heads are reordered) */
    float *f32;                 /* (nth, step * ncols + ncols): rows, then a row for reordering */
};

/* The Hugging Face value head that tiled value head h holds (enum vperm). */
static int64_t vhead_src(const struct item *it, int64_t h) {
    int64_t r = it->vp_nv / it->vp_nk;
    return (h % it->vp_nk) * r + h / it->vp_nk;
}

/* Row `i` of attn_qkv or attn_gate: the row of the grouped in_proj_qkvz it is read from (VP_QKVZ_*). */
static int64_t qkvz_src(const struct item *it, int64_t i) {
    int64_t dk = it->vp_first, rdv = it->vp_nv / it->vp_nk * it->vp_block, group = 2 * dk + 2 * rdv;
    int64_t kd = it->vp_nk * dk;
    if (it->vperm == VP_QKVZ_Z) return i / rdv * group + 2 * dk + rdv + i % rdv;
    if (i < 2 * kd) return i % kd / dk * group + (i < kd ? 0 : dk) + i % dk; /* q of key head g, then k */
    i -= 2 * kd;
    return i / rdv * group + 2 * dk + i % rdv;
}

/* Index `i` of a reordered dimension: the index it is read from. */
static int64_t vperm_src(const struct item *it, int64_t i) {
    if (it->vperm == VP_QKVZ_QKV || it->vperm == VP_QKVZ_Z) return qkvz_src(it, i);
    if (i < it->vp_first) return i;
    int64_t k = i - it->vp_first, h = k / it->vp_block;
    return it->vp_first + vhead_src(it, h) * it->vp_block + k % it->vp_block;
}

static void conv_rows(void *arg, int ith, int nth) {
    const struct conv_job *j = arg;
    const struct item *it = j->it;
    int64_t begin, end;
    ty__split_range(j->nrows, ith, nth, &begin, &end);
    float *f = j->f32 + (size_t)ith * (size_t)(j->step * j->ncols + j->ncols);
    for (int64_t r = begin; r < end; r += j->step) {
        int64_t nr = end - r < j->step ? end - r : j->step;
        int64_t src_row = it->vperm != VP_NONE && it->vperm != VP_COLS ? vperm_src(it, r) : r; /* step is 1 then */
        /* The dtype was checked before the job started, and the range is inside the tensor: this cannot fail. */
        enum ty_status st = ty__st_read_f32(j->src, src_row * j->ncols, nr * j->ncols, f);
        TY_ASSERT(st == TY_OK);
        if (it->vperm == VP_COLS) {
            float *tmp = f + j->step * j->ncols;
            memcpy(tmp, f, (size_t)j->ncols * sizeof(float));
            for (int64_t c = 0; c < j->ncols; c++) f[c] = tmp[vperm_src(it, c)];
        }
        int64_t nf = nr * j->ncols;
        if (j->xform == XF_PLUS_ONE)
            for (int64_t i = 0; i < nf; i++) f[i] += 1.0f; /* in f32, as the reference's 1.0 + weight.float() */
        else if (j->xform == XF_NEG_EXP)
            for (int64_t i = 0; i < nf; i++) f[i] = -expf(f[i]); /* as the reference's -A_log.float().exp() */
        j->tt->from_float(f, j->out + (size_t)r * j->row_bytes, nf);
    }
}

/* Converts one tensor (or stack of experts, one after another) into `it->type` and hands it to the writer. The output
 * buffer holds one tensor (the writer takes a tensor's bytes in one call); the float scratch holds a few rows per
 * thread. */
static enum ty_status write_item(struct ty_gguf_writer *w, const struct item *it, const struct plan *plan,
                                 struct scratch *s) {
    size_t nbytes;
    TY_TRY(ty__tensor_nbytes(it->type, it->n_dims, it->ne, it->name, &nbytes));
    int64_t n_src = it->n_dims == 3 ? it->ne[2] : 1;
    bool as_is = it->xform == XF_NONE && it->vperm == VP_NONE;
    if (n_src == 1 && same_type(it->src->dtype, it->type) && as_is) {
        TY_ASSERT(nbytes == it->src->nbytes);
        return ty__gguf_writer_write_tensor(w, it->src->data, nbytes);
    }
    size_t slice = nbytes / (size_t)n_src;
    struct conv_job j = {
        .tt = ty__type_traits(it->type), .ncols = it->ne[0], .nrows = it->ne[1], .xform = it->xform, .it = it};
    TY_ASSERT(j.tt && j.tt->from_float);
    TY_TRY(ty__row_size(it->type, j.ncols, &j.row_bytes));
    int nth = ty__threadpool_size(s->pool);
    j.step = j.ncols ? (int64_t)(((size_t)1 << 16) / (size_t)j.ncols) : 1;
    if (j.step < 1 || it->vperm != VP_NONE) j.step = 1;
    if (!grow((void **)&s->out, &s->out_cap, nbytes ? nbytes : 1, 1) ||
        !grow((void **)&s->f32, &s->f32_cap, (size_t)nth * (size_t)(j.step * j.ncols + j.ncols) + 1, sizeof(float)))
        return ty__error(TY_ERR_NO_MEMORY, "tensor %s: out of memory for a %zu-byte conversion buffer", it->name,
                         nbytes);
    for (int64_t e = 0; e < n_src; e++) {
        const struct ty_st_tensor *t = n_src == 1 ? it->src : plan->stack[it->stack0 + e];
        if (same_type(t->dtype, it->type) && as_is) {
            TY_ASSERT(slice == t->nbytes);
            memcpy(s->out + (size_t)e * slice, t->data, slice);
            continue;
        }
        TY_TRY(ty__st_read_f32(t, 0, 0, NULL)); /* names the tensor if its dtype cannot be read as floats */
        j.src = t;
        j.out = s->out + (size_t)e * slice;
        j.f32 = s->f32;
        ty__threadpool_run(s->pool, conv_rows, &j);
    }
    return ty__gguf_writer_write_tensor(w, s->out, nbytes);
}

/* ==== Driver ==== */

static const char *base_name(const char *dir, char *buf, size_t cap) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    size_t len = n - b < cap - 1 ? n - b : cap - 1;
    memcpy(buf, dir + b, len);
    buf[len] = 0;
    return buf[0] ? buf : "model";
}

enum ty_status ty__convert_hf(const char *hf_dir, const char *out_path, const struct ty_convert_params *params) {
    struct ty_convert_params p = params ? *params : ty__convert_default_params();
    if (!ty__convert_type_ok(p.type))
        return ty__error(TY_ERR_INVALID_ARG, "cannot convert to type %s; choose one of %s", ty_type_name(p.type),
                         ty__supported_types());

    enum ty_status st = TY_OK;
    char *cfg_path = join(hf_dir, "config.json"), *tok_path = join(hf_dir, "tokenizer.json"),
         *tokcfg_path = join(hf_dir, "tokenizer_config.json");
    char *cfg_text = NULL;
    json_t *cfg = NULL;
    struct ty_checkpoint *ck = NULL;
    struct ty_tokenizer *tok = NULL;
    struct ty_gguf_writer *w = NULL;
    struct plan plan = {0};
    struct scratch s = {0};
    struct hparams hp;
    if (!cfg_path || !tok_path || !tokcfg_path) {
        st = ty__error(TY_ERR_NO_MEMORY, "out of memory");
        goto done;
    }

    /* Everything is checked before the output file is created. */
    size_t cfg_len;
    st = ty__file_read(cfg_path, (size_t)16 << 20, &cfg_text, &cfg_len);
    if (st != TY_OK) goto done;
    json_error_t jerr;
    cfg = json_loadb(cfg_text, cfg_len, 0, &jerr);
    if (!cfg) {
        st = ty__error(TY_ERR_FORMAT, "%s: not valid JSON (%s, line %d)", cfg_path, jerr.text, jerr.line);
        goto done;
    }
    if ((st = parse_config(cfg_path, cfg, &hp)) != TY_OK) goto done;
    if ((st = ty__checkpoint_open(hf_dir, &ck)) != TY_OK) goto done;
    char emb_name[96];
    hf_real(&hp, "model.embed_tokens.weight", emb_name, sizeof emb_name);
    const struct ty_st_tensor *emb = ty__checkpoint_find(ck, emb_name);
    if (!hp.n_vocab && emb && emb->n_dims == 2 && emb->shape[0] <= INT32_MAX) hp.n_vocab = emb->shape[0];
    if ((st = build_plan(ck, &hp, &plan)) != TY_OK) goto done;

    if (!exists(tok_path)) {
        st = ty__error(TY_ERR_NOT_FOUND, "%s: missing; the tokenizer is needed to write a usable GGUF", tok_path);
        goto done;
    }
    if ((st = ty__tokenizer_load_hf(tok_path, exists(tokcfg_path) ? tokcfg_path : NULL, &tok)) != TY_OK) goto done;
    int32_t n_tok = ty_tokenizer_n_vocab(tok);
    if (n_tok > hp.n_vocab) {
        st = ty__error(TY_ERR_FORMAT,
                       "%s has %d tokens but the embedding has only %lld rows; tokenizer and weights do not match",
                       tok_path, n_tok, (long long)hp.n_vocab);
        goto done;
    }
    if (n_tok < hp.n_vocab) {
        /* llama.cpp takes n_vocab from the token list, so it must match the embedding: pad with UNUSED tokens. */
        TY_LOG_I("convert: embedding has %lld rows for %d tokens; adding %lld [PAD] tokens", (long long)hp.n_vocab,
                 n_tok, (long long)hp.n_vocab - n_tok);
        if ((st = ty__tokenizer_pad_vocab(tok, (int32_t)hp.n_vocab)) != TY_OK) goto done;
    }

    /* Types: matrices in the chosen type, 1-D tensors in F32; a quantized type that does not divide a row falls
     * back to F16 (llama.cpp's converter does the same). */
    const struct ty_type_traits *tt = ty__type_traits(p.type);
    int n_fallback = 0;
    for (int i = 0; i < plan.n_items; i++) {
        struct item *it = &plan.items[i];
        it->type = it->n_dims == 1 ? TY_TYPE_F32 : p.type;
        /* The router stays F32, as llama.cpp's converter keeps it: rounding its logits would change which experts
         * a token goes to, not just the values. */
        size_t len = strlen(it->name);
        if (len >= 20 && !strcmp(it->name + len - 20, ".ffn_gate_inp.weight")) it->type = TY_TYPE_F32;
        /* the conv1d kernel reads f32 weights (llama.cpp keeps them f32 too): a few K x C floats per layer */
        if (len >= 18 && !strcmp(it->name + len - 18, ".ssm_conv1d.weight")) it->type = TY_TYPE_F32;
        if (it->type == p.type && it->n_dims >= 2 && tt->block_size > 1 && it->ne[0] % tt->block_size) {
            if (n_fallback++ < 4)
                TY_LOG_W("convert: %s: rows of %lld are not a multiple of the %s block size %lld; writing F16",
                         it->name, (long long)it->ne[0], tt->name, (long long)tt->block_size);
            it->type = TY_TYPE_F16;
        }
    }
    if (n_fallback > 4) TY_LOG_W("convert: %d matrices in all fell back to F16", n_fallback);

    char namebuf[256];
    if ((st = ty__gguf_writer_init(&w)) != TY_OK) goto done;
    if ((st = write_hparams(w, &hp, p.name ? p.name : base_name(hf_dir, namebuf, sizeof namebuf), p.type)) != TY_OK)
        goto done;
    if ((st = ty__tokenizer_to_gguf(tok, w)) != TY_OK) goto done;
    if ((st = write_chat_template(w, tok, hf_dir)) != TY_OK) goto done;
    uint64_t total = 0;
    for (int i = 0; i < plan.n_items; i++) {
        const struct item *it = &plan.items[i];
        if ((st = ty__gguf_writer_add_tensor(w, it->name, it->type, it->n_dims, it->ne)) != TY_OK) goto done;
        total += it->src_bytes;
    }
    if ((st = ty__threadpool_init(p.n_threads, &s.pool)) != TY_OK) goto done;
    if ((st = ty__gguf_writer_begin(w, out_path)) != TY_OK) goto done;

    struct ty_progress prog;
    ty__progress_begin(&prog, "converting", total);
    uint64_t done_bytes = 0;
    for (int i = 0; i < plan.n_items; i++) {
        const struct item *it = &plan.items[i];
        char shp[64];
        shape_str(shp, sizeof shp, it->n_dims, it->ne);
        TY_LOG_D("convert: %-28s %-5s -> %-5s ne = %s", it->name, ty__st_dtype_name(it->src->dtype),
                 ty_type_name(it->type), shp);
        if ((st = write_item(w, it, &plan, &s)) != TY_OK) break;
        done_bytes += it->src_bytes;
        ty__progress_update(&prog, done_bytes);
    }
    ty__progress_end(&prog);
    if (st != TY_OK) goto done;
    if ((st = ty__gguf_writer_finish(w)) != TY_OK) goto done;
    TY_LOG_I("convert: wrote %s: %s, %d tensors, %s weights", out_path, hp.arch->gguf, plan.n_items,
             ty_type_name(p.type));

done:
    ty__gguf_writer_free(w);
    ty_tokenizer_free(tok);
    ty__checkpoint_close(ck);
    json_decref(cfg);
    ty_free(cfg_text);
    ty_free(plan.items);
    ty_free(plan.stack);
    ty__threadpool_free(s.pool);
    ty_free(s.f32);
    ty_free(s.out);
    ty_free(cfg_path);
    ty_free(tok_path);
    ty_free(tokcfg_path);
    return st;
}
