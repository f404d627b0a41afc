/*
 * mkmodel.c - writes synthetic random-weight Qwen models at the released shapes (see mkmodel.h): the preset table, the
 * tensor list in `tongyun convert`'s names and order, the weight scales, and a row-parallel generator that streams one
 * tensor at a time through the GGUF writer.
 *
 * Scales, chosen so that a forward pass sees activations of the magnitude a trained model has rather than values that
 * vanish or overflow in a deep stack:
 *  - matrices ~ N(0, 1/fan_in): a unit-RMS input gives unit-RMS outputs (fan_in = ne[0], the input dimension);
 *  - the two projections that write into the residual stream (attn_output, ffn_down and the experts' down) are
 *    further scaled by 1/sqrt(2 * n_layer), as GPT-2's initialisation does, so the stream stays near unit RMS
 *    whatever the depth;
 *  - token embeddings and the untied output matrix ~ N(0, (0.5^2)/n_embd), and the final norm's gain is about 4, which
 *    puts the logits' standard deviation near 2 (trained Qwen models show 2 to 4);
 *  - RMSNorm and QK-norm weights ~ 1 with 5% noise; q/k/v biases ~ N(0, 0.05^2); the MoE router ~ N(0, 1/n_embd),
 *    so routing is spread over the experts.
 * Normal deviates come from an Irwin-Hall sum of four 16-bit uniforms (bounded at +-3.46 sigma, about 1 ns each) drawn
 * from xoshiro256+: generation stays well below the cost of quantising.
 */
#include "model/mkmodel.h"

#include "base/threads.h"
#include "model/gguf.h"
#include "model/quant-mix.h"
#include "model/quant.h"
#include "model/tokenizer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>

/* ==== Presets ==== */

/* Figures are the released config.json of each checkpoint on Hugging Face (the base models; the instruct models share
 * every shape, Qwen2.5 instruct models list a shorter max_position_embeddings). All use silu, rms_norm_eps 1e-6,
 * rope_theta 1e6, no rope scaling and no sliding window.
 *  - Qwen/Qwen2.5-0.5B: hidden 896, intermediate 4864, 24 layers, 14/2 heads (head_dim 64), vocab 151936, ctx 32768,
 *    tied; 0.49B parameters.
 *  - Qwen/Qwen2.5-1.5B: hidden 1536, intermediate 8960, 28 layers, 12/2 heads (128), vocab 151936, ctx 131072, tied.
 *  - Qwen/Qwen2.5-7B: hidden 3584, intermediate 18944, 28 layers, 28/4 heads (128), vocab 152064, ctx 131072, untied.
 *  - Qwen/Qwen3-0.6B: hidden 1024, intermediate 3072, 28 layers, 16/8 heads, head_dim 128, vocab 151936, ctx 40960,
 *    tied.
 *  - Qwen/Qwen3-1.7B: hidden 2048, intermediate 6144, 28 layers, 16/8 heads, head_dim 128, ctx 40960, tied.
 *  - Qwen/Qwen3-4B: hidden 2560, intermediate 9728, 36 layers, 32/8 heads, head_dim 128, ctx 40960, tied.
 *  - Qwen/Qwen3-8B: hidden 4096, intermediate 12288, 36 layers, 32/8 heads, head_dim 128, ctx 40960, untied.
 *  - Qwen/Qwen3-30B-A3B: hidden 2048, intermediate 6144 (no dense layer uses it), 48 layers, 32/4 heads, head_dim 128,
 *    128 experts, 8 per token, moe_intermediate 768, norm_topk_prob true, decoder_sparse_step 1, mlp_only_layers [],
 *    vocab 151936, ctx 40960, untied; 30.5B parameters, 3.3B active.
 *  - Qwen/Qwen3-Next-80B-A3B-Instruct: hidden 2048, intermediate 5120 (no dense layer uses it), 48 layers with
 *    full_attention_interval 4 (36 Gated DeltaNet + 12 gated full attention), 16/2 heads, head_dim 256,
 *    partial_rotary_factor 0.25 (64 rotated dimensions), rope_theta 1e7, linear attention with 16 key heads and 32
 *    value heads of 128, conv kernel 4, 512 experts, 10 per token, moe_intermediate 512, a shared expert of 512,
 *    norm_topk_prob true, vocab 151936, ctx 262144, untied; about 80B parameters, 3B active. Its multi-token
 *    prediction layer is not part of the preset (Tongyun ignores it).
 *  - Qwen3.5-35B-A3B (Qwen3_5MoeForConditionalGeneration, text_config; the same shapes as Qwen3.6-35B-A3B): hidden
 * 2048, 40 layers with full_attention_interval 4 (30 Gated DeltaNet + 10 full), 16/2 heads, head_dim 256, partial
 * rotary 0.25, linear attention 16 key / 32 value heads of 128, conv 4, 256 experts, 8 per token, moe_intermediate 512,
 * a shared expert of 512, vocab 248320, ctx 262144, untied; about 35B parameters, 3B active. Taken from public
 *    summaries of its config.json (no hub access here); rope_theta is not in them and is set to Qwen3-Next's 1e7,
 *    which changes no cost. The vision tower and the MTP layer are not part of the preset; the file carries the
 *    Qwen3.5 tokenizer (248,077 ids, data/tokenizers/qwen3.5/) padded to 248320 rows. */
static const struct ty_mkmodel_preset presets[] = {
    {"qwen2.5-0.5b",
     "Qwen2.5-0.5B",
     "qwen2",
     151936,
     896,
     4864,
     24,
     14,
     2,
     64,
     32768,
     1e6f,
     1e-6f,
     true,
     true,
     false,
     0,
     0,
     0,
     false,
     "Qwen/Qwen2.5-0.5B config.json"},
    {"qwen2.5-1.5b",
     "Qwen2.5-1.5B",
     "qwen2",
     151936,
     1536,
     8960,
     28,
     12,
     2,
     128,
     131072,
     1e6f,
     1e-6f,
     true,
     true,
     false,
     0,
     0,
     0,
     false,
     "Qwen/Qwen2.5-1.5B config.json"},
    {"qwen2.5-7b",
     "Qwen2.5-7B",
     "qwen2",
     152064,
     3584,
     18944,
     28,
     28,
     4,
     128,
     131072,
     1e6f,
     1e-6f,
     false,
     true,
     false,
     0,
     0,
     0,
     false,
     "Qwen/Qwen2.5-7B config.json"},
    {"qwen3-0.6b",
     "Qwen3-0.6B",
     "qwen3",
     151936,
     1024,
     3072,
     28,
     16,
     8,
     128,
     40960,
     1e6f,
     1e-6f,
     true,
     false,
     true,
     0,
     0,
     0,
     false,
     "Qwen/Qwen3-0.6B config.json"},
    {"qwen3-1.7b",
     "Qwen3-1.7B",
     "qwen3",
     151936,
     2048,
     6144,
     28,
     16,
     8,
     128,
     40960,
     1e6f,
     1e-6f,
     true,
     false,
     true,
     0,
     0,
     0,
     false,
     "Qwen/Qwen3-1.7B config.json"},
    {"qwen3-4b", "Qwen3-4B", "qwen3", 151936, 2560, 9728,  36,
     32,         8,          128,     40960,  1e6f, 1e-6f, true,
     false,      true,       0,       0,      0,    false, "Qwen/Qwen3-4B config.json"},
    {"qwen3-8b", "Qwen3-8B", "qwen3", 151936, 4096, 12288, 36,
     32,         8,          128,     40960,  1e6f, 1e-6f, false,
     false,      true,       0,       0,      0,    false, "Qwen/Qwen3-8B config.json"},
    {"qwen3-30b-a3b",
     "Qwen3-30B-A3B",
     "qwen3moe",
     151936,
     2048,
     6144,
     48,
     32,
     4,
     128,
     40960,
     1e6f,
     1e-6f,
     false,
     false,
     true,
     128,
     8,
     768,
     true,
     "Qwen/Qwen3-30B-A3B config.json"},
    {"qwen3-next-80b-a3b",
     "Qwen3-Next-80B-A3B",
     "qwen3next",
     151936,
     2048,
     5120,
     48,
     16,
     2,
     256,
     262144,
     1e7f,
     1e-6f,
     false,
     false,
     true,
     512,
     10,
     512,
     true,
     "Qwen/Qwen3-Next-80B-A3B-Instruct config.json"},
    {"qwen3.5-35b-a3b",
     "Qwen3.5-35B-A3B",
     "qwen35moe",
     248320,
     2048,
     512,
     40,
     16,
     2,
     256,
     262144,
     1e7f,
     1e-6f,
     false,
     false,
     true,
     256,
     8,
     512,
     true,
     "Qwen/Qwen3.5-35B-A3B config.json (text_config) as summarised in public notes; rope_theta assumed"},
};

/* The hybrid part of a preset's shape (qwen3next), by preset name: kept apart from ty_mkmodel_preset so that the
 * plain presets need no hybrid fields. */
struct hybrid_shape {
    const char *preset;
    int32_t full_interval, conv_kernel, n_k, n_v, d_k, d_v, n_ff_shexp, rope_dims;
    bool split; /* Qwen3.5: separate ssm_beta / ssm_alpha (not ssm_ba), value heads tiled, MRoPE sections */
};
static const struct hybrid_shape hybrids[] = {
    {"qwen3-next-80b-a3b", 4, 4, 16, 32, 128, 128, 512, 64, false},
    {"qwen3.5-35b-a3b", 4, 4, 16, 32, 128, 128, 512, 64, true},
};

static const struct hybrid_shape *hybrid_of(const struct ty_mkmodel_preset *p) {
    for (size_t i = 0; i < sizeof hybrids / sizeof hybrids[0]; i++)
        if (!strcmp(hybrids[i].preset, p->name)) return &hybrids[i];
    return NULL;
}
#define N_PRESETS (int)(sizeof presets / sizeof presets[0])

const struct ty_mkmodel_preset *ty__mkmodel_presets(int *n) {
    *n = N_PRESETS;
    return presets;
}

const struct ty_mkmodel_preset *ty__mkmodel_find_preset(const char *name) {
    for (int i = 0; i < N_PRESETS; i++)
        if (!strcasecmp(name, presets[i].name)) return &presets[i];
    return NULL;
}

/* ==== Tensors ==== */

enum init {
    INIT_EMBED,  /* token embeddings and the untied output: N(0, 0.25/n_embd) */
    INIT_MATRIX, /* N(0, 1/fan_in) */
    INIT_RESID,  /* a projection into the residual stream: N(0, 1/fan_in) / sqrt(2 n_layer) */
    INIT_NORM,   /* ~1 with 5% noise */
    INIT_GAIN,   /* the final norm: ~4 with 5% noise */
    INIT_BIAS,   /* N(0, 0.05^2) */
    INIT_CONV,   /* the Gated DeltaNet conv kernel: N(0, 1/kernel) */
    INIT_DECAY   /* Gated DeltaNet's A = -exp(A_log): about -2, never positive in practice (6 sigma) */
};

struct mk_tensor {
    char name[64];
    int n_dims;
    int64_t ne[4];
    enum init init;
    enum ty_type type;
    size_t nbytes;
};

struct mk_list {
    struct mk_tensor *t;
    int64_t n, cap;
};

static enum ty_status add(struct mk_list *L, enum init init, int n_dims, int64_t ne0, int64_t ne1, int64_t ne2,
                          const char *fmt, int layer) {
    if (L->n == L->cap) {
        int64_t cap = L->cap ? 2 * L->cap : 64;
        struct mk_tensor *t = ty__realloc(L->t, (size_t)cap * sizeof *t);
        if (!t) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the tensor list");
        L->t = t;
        L->cap = cap;
    }
    struct mk_tensor *t = &L->t[L->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, fmt, layer);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->ne[3] = 1;
    t->init = init;
    return TY_OK;
}

/* The tensors of the model in the order `tongyun convert` writes them (its rules[] table): embeddings, each block,
 * then the head. Shapes in GGUF order (ne[0] = input dimension). */
static enum ty_status list_hybrid_layer(const struct ty_mkmodel_preset *p, const struct hybrid_shape *h, int il,
                                        struct mk_list *L) {
    int64_t E = p->n_embd, Q = (int64_t)p->n_head * p->head_dim, KV = (int64_t)p->n_head_kv * p->head_dim;
    int64_t kd = (int64_t)h->n_k * h->d_k, vd = (int64_t)h->n_v * h->d_v;
    TY_TRY(add(L, INIT_NORM, 1, E, 1, 1, "blk.%d.attn_norm.weight", il));
    if ((il + 1) % h->full_interval == 0) {
        TY_TRY(add(L, INIT_MATRIX, 2, E, 2 * Q, 1, "blk.%d.attn_q.weight", il)); /* per head: query, output gate */
        TY_TRY(add(L, INIT_MATRIX, 2, E, KV, 1, "blk.%d.attn_k.weight", il));
        TY_TRY(add(L, INIT_MATRIX, 2, E, KV, 1, "blk.%d.attn_v.weight", il));
        TY_TRY(add(L, INIT_NORM, 1, p->head_dim, 1, 1, "blk.%d.attn_q_norm.weight", il));
        TY_TRY(add(L, INIT_NORM, 1, p->head_dim, 1, 1, "blk.%d.attn_k_norm.weight", il));
        TY_TRY(add(L, INIT_RESID, 2, Q, E, 1, "blk.%d.attn_output.weight", il));
    } else {
        /* Qwen3-Next too: llama.cpp's converter writes attn_qkv + attn_gate for it, with the grouped ssm_ba */
        TY_TRY(add(L, INIT_MATRIX, 2, E, 2 * kd + vd, 1, "blk.%d.attn_qkv.weight", il));
        TY_TRY(add(L, INIT_MATRIX, 2, E, vd, 1, "blk.%d.attn_gate.weight", il));
        if (h->split) {
            TY_TRY(add(L, INIT_MATRIX, 2, E, h->n_v, 1, "blk.%d.ssm_beta.weight", il));
            TY_TRY(add(L, INIT_MATRIX, 2, E, h->n_v, 1, "blk.%d.ssm_alpha.weight", il));
        } else {
            TY_TRY(add(L, INIT_MATRIX, 2, E, 2 * h->n_v, 1, "blk.%d.ssm_ba.weight", il));
        }
        TY_TRY(add(L, INIT_CONV, 2, h->conv_kernel, 2 * kd + vd, 1, "blk.%d.ssm_conv1d.weight", il));
        TY_TRY(add(L, INIT_BIAS, 1, h->n_v, 1, 1, "blk.%d.ssm_dt.bias", il));
        TY_TRY(add(L, INIT_DECAY, 1, h->n_v, 1, 1, "blk.%d.ssm_a", il));
        TY_TRY(add(L, INIT_NORM, 1, h->d_v, 1, 1, "blk.%d.ssm_norm.weight", il));
        TY_TRY(add(L, INIT_RESID, 2, vd, E, 1, "blk.%d.ssm_out.weight", il));
    }
    TY_TRY(add(L, INIT_NORM, 1, E, 1, 1, "blk.%d.post_attention_norm.weight", il));
    TY_TRY(add(L, INIT_MATRIX, 2, E, p->n_expert, 1, "blk.%d.ffn_gate_inp.weight", il));
    TY_TRY(add(L, INIT_MATRIX, 3, E, p->n_ff_exp, p->n_expert, "blk.%d.ffn_gate_exps.weight", il));
    TY_TRY(add(L, INIT_MATRIX, 3, E, p->n_ff_exp, p->n_expert, "blk.%d.ffn_up_exps.weight", il));
    TY_TRY(add(L, INIT_RESID, 3, p->n_ff_exp, E, p->n_expert, "blk.%d.ffn_down_exps.weight", il));
    TY_TRY(add(L, INIT_MATRIX, 1, E, 1, 1, "blk.%d.ffn_gate_inp_shexp.weight", il));
    TY_TRY(add(L, INIT_MATRIX, 2, E, h->n_ff_shexp, 1, "blk.%d.ffn_gate_shexp.weight", il));
    TY_TRY(add(L, INIT_MATRIX, 2, E, h->n_ff_shexp, 1, "blk.%d.ffn_up_shexp.weight", il));
    return add(L, INIT_RESID, 2, h->n_ff_shexp, E, 1, "blk.%d.ffn_down_shexp.weight", il);
}

static enum ty_status list_tensors(const struct ty_mkmodel_preset *p, int32_t n_layer, struct mk_list *L) {
    int64_t E = p->n_embd, Q = (int64_t)p->n_head * p->head_dim, KV = (int64_t)p->n_head_kv * p->head_dim;
    const struct hybrid_shape *hy = hybrid_of(p);
    TY_TRY(add(L, INIT_EMBED, 2, E, p->n_vocab, 1, "token_embd.weight", 0));
    for (int il = 0; il < n_layer; il++) {
        if (hy) {
            TY_TRY(list_hybrid_layer(p, hy, il, L));
            continue;
        }
        TY_TRY(add(L, INIT_NORM, 1, E, 1, 1, "blk.%d.attn_norm.weight", il));
        TY_TRY(add(L, INIT_MATRIX, 2, E, Q, 1, "blk.%d.attn_q.weight", il));
        if (p->qkv_bias) TY_TRY(add(L, INIT_BIAS, 1, Q, 1, 1, "blk.%d.attn_q.bias", il));
        TY_TRY(add(L, INIT_MATRIX, 2, E, KV, 1, "blk.%d.attn_k.weight", il));
        if (p->qkv_bias) TY_TRY(add(L, INIT_BIAS, 1, KV, 1, 1, "blk.%d.attn_k.bias", il));
        TY_TRY(add(L, INIT_MATRIX, 2, E, KV, 1, "blk.%d.attn_v.weight", il));
        if (p->qkv_bias) TY_TRY(add(L, INIT_BIAS, 1, KV, 1, 1, "blk.%d.attn_v.bias", il));
        if (p->qk_norm) {
            TY_TRY(add(L, INIT_NORM, 1, p->head_dim, 1, 1, "blk.%d.attn_q_norm.weight", il));
            TY_TRY(add(L, INIT_NORM, 1, p->head_dim, 1, 1, "blk.%d.attn_k_norm.weight", il));
        }
        TY_TRY(add(L, INIT_RESID, 2, Q, E, 1, "blk.%d.attn_output.weight", il));
        TY_TRY(add(L, INIT_NORM, 1, E, 1, 1, "blk.%d.ffn_norm.weight", il));
        if (p->n_expert == 0) {
            TY_TRY(add(L, INIT_MATRIX, 2, E, p->n_ff, 1, "blk.%d.ffn_gate.weight", il));
            TY_TRY(add(L, INIT_MATRIX, 2, E, p->n_ff, 1, "blk.%d.ffn_up.weight", il));
            TY_TRY(add(L, INIT_RESID, 2, p->n_ff, E, 1, "blk.%d.ffn_down.weight", il));
        } else {
            TY_TRY(add(L, INIT_MATRIX, 2, E, p->n_expert, 1, "blk.%d.ffn_gate_inp.weight", il));
            TY_TRY(add(L, INIT_MATRIX, 3, E, p->n_ff_exp, p->n_expert, "blk.%d.ffn_gate_exps.weight", il));
            TY_TRY(add(L, INIT_MATRIX, 3, E, p->n_ff_exp, p->n_expert, "blk.%d.ffn_up_exps.weight", il));
            TY_TRY(add(L, INIT_RESID, 3, p->n_ff_exp, E, p->n_expert, "blk.%d.ffn_down_exps.weight", il));
        }
    }
    TY_TRY(add(L, INIT_GAIN, 1, E, 1, 1, "output_norm.weight", 0));
    if (!p->tied) TY_TRY(add(L, INIT_EMBED, 2, E, p->n_vocab, 1, "output.weight", 0));
    return TY_OK;
}

uint64_t ty__mkmodel_n_params(const struct ty_mkmodel_preset *p, int32_t n_layer, uint64_t *active) {
    uint64_t E = (uint64_t)p->n_embd, Q = (uint64_t)p->n_head * (uint64_t)p->head_dim;
    uint64_t KV = (uint64_t)p->n_head_kv * (uint64_t)p->head_dim, V = (uint64_t)p->n_vocab;
    uint64_t attn =
        E * Q * 2 + E * KV * 2 + 2 * E + (p->qkv_bias ? Q + 2 * KV : 0) + (p->qk_norm ? 2 * (uint64_t)p->head_dim : 0);
    uint64_t ffn, ffn_active;
    if (p->n_expert == 0) {
        ffn = ffn_active = 3 * E * (uint64_t)p->n_ff;
    } else {
        uint64_t one = 3 * E * (uint64_t)p->n_ff_exp, router = E * (uint64_t)p->n_expert;
        ffn = one * (uint64_t)p->n_expert + router;
        ffn_active = one * (uint64_t)p->n_expert_used + router;
    }
    uint64_t head = E + (p->tied ? 0 : E * V);
    const struct hybrid_shape *h = hybrid_of(p);
    if (h) {
        uint64_t kd = (uint64_t)h->n_k * (uint64_t)h->d_k, vd = (uint64_t)h->n_v * (uint64_t)h->d_v;
        uint64_t nv = (uint64_t)h->n_v, conv = 2 * kd + vd;
        uint64_t full = 2 * E * Q + 2 * E * KV + 2 * (uint64_t)p->head_dim + Q * E;
        uint64_t lin =
            E * (2 * kd + 2 * vd) + E * 2 * nv + (uint64_t)h->conv_kernel * conv + 2 * nv + (uint64_t)h->d_v + vd * E;
        uint64_t shexp = E + 3 * E * (uint64_t)h->n_ff_shexp;
        uint64_t total = V * E + head, act = V * E + head;
        for (int32_t il = 0; il < n_layer; il++) {
            uint64_t mix = (il + 1) % h->full_interval == 0 ? full : lin;
            total += 2 * E + mix + ffn + shexp;
            act += 2 * E + mix + ffn_active + shexp;
        }
        if (active) *active = act;
        return total;
    }
    if (active) *active = V * E + head + (uint64_t)n_layer * (attn + ffn_active);
    return V * E + head + (uint64_t)n_layer * (attn + ffn);
}

/* ==== Planning ==== */

struct plan {
    const struct ty_quant_target *tg;
    struct mk_list list;
    int32_t n_layer;
    uint64_t bytes;
    int64_t n_fallback;
};

/* Tensor list, types and sizes for `n_layer` layers. */
static enum ty_status plan_layers(const struct ty_mkmodel_preset *pr, const struct ty_quant_target *tg, int32_t n_layer,
                                  struct plan *pl) {
    pl->list.n = 0;
    pl->tg = tg;
    pl->n_layer = n_layer;
    TY_TRY(list_tensors(pr, n_layer, &pl->list));
    struct ty_quant_mix_tensor *mt = ty__calloc((size_t)pl->list.n, sizeof *mt);
    if (!mt) return ty__error(TY_ERR_NO_MEMORY, "out of memory planning %" PRId64 " tensors", pl->list.n);
    for (int64_t i = 0; i < pl->list.n; i++) {
        mt[i].name = pl->list.t[i].name;
        mt[i].n_dims = pl->list.t[i].n_dims;
        memcpy(mt[i].ne, pl->list.t[i].ne, sizeof mt[i].ne);
    }
    /* Fallbacks are summarised by the caller rather than warned about tensor by tensor (the 0.5B model's 896-wide
     * rows do not fit a 256-element K block: dozens of matrices). */
    ty__quant_mix_assign(tg, n_layer, mt, pl->list.n, false, &pl->n_fallback);
    enum ty_status st = TY_OK;
    pl->bytes = 0;
    for (int64_t i = 0; i < pl->list.n && st == TY_OK; i++) {
        struct mk_tensor *t = &pl->list.t[i];
        t->type = mt[i].type;
        /* the conv kernel is read as f32 (as llama.cpp keeps it): 4 x channels floats per layer */
        size_t nl = strlen(t->name);
        if (nl >= 18 && !strcmp(t->name + nl - 18, ".ssm_conv1d.weight")) t->type = TY_TYPE_F32;
        st = ty__tensor_nbytes(t->type, t->n_dims, t->ne, t->name, &t->nbytes);
        pl->bytes += t->nbytes;
    }
    ty_free(mt);
    return st;
}

static void fmt_gib(uint64_t n, char *buf, size_t cap) {
    snprintf(buf, cap, "%.2f GiB", (double)n / (double)(1ull << 30));
}

static enum ty_status make_plan(const struct ty_mkmodel_params *p, struct plan *pl, struct ty_mkmodel_info *info) {
    memset(info, 0, sizeof *info);
    const struct ty_mkmodel_preset *pr = p->preset;
    if (!pr) return ty__error(TY_ERR_INVALID_ARG, "mkmodel: no preset given");
    const struct ty_quant_target *tg = p->type ? ty__quant_target_find(p->type) : NULL;
    if (!tg)
        return ty__error(TY_ERR_INVALID_ARG, "mkmodel: unknown type '%s'; use one of %s", p->type ? p->type : "(none)",
                         ty__quant_target_names());
    if (p->n_layer < 0 || p->n_layer > pr->n_layer)
        return ty__error(TY_ERR_INVALID_ARG, "mkmodel: %s has %d layers; --layers must be 1 .. %d", pr->hf_name,
                         pr->n_layer, pr->n_layer);
    int32_t n_layer = p->n_layer ? p->n_layer : pr->n_layer;
    TY_TRY(plan_layers(pr, tg, n_layer, pl));
    if (p->n_layer == 0 && p->max_bytes && pl->bytes > p->max_bytes) {
        /* Bytes grow linearly with the layer count: find the most layers that fit. */
        uint64_t full = pl->bytes;
        TY_TRY(plan_layers(pr, tg, 0, pl));
        uint64_t fixed = pl->bytes, per_layer = (full - fixed) / (uint64_t)pr->n_layer;
        char a[32], b[32];
        fmt_gib(full, a, sizeof a);
        fmt_gib(p->max_bytes, b, sizeof b);
        if (fixed + per_layer > p->max_bytes)
            return ty__error(TY_ERR_INVALID_ARG, "mkmodel: %s as %s needs %s, and even one layer exceeds the %s limit",
                             pr->hf_name, tg->name, a, b);
        n_layer = (int32_t)((p->max_bytes - fixed) / per_layer);
        /* a hybrid model keeps whole periods of its layer pattern (linear ... linear, full) */
        const struct hybrid_shape *hy = hybrid_of(pr);
        if (hy && n_layer >= hy->full_interval) n_layer -= n_layer % hy->full_interval;
        TY_TRY(plan_layers(pr, tg, n_layer, pl));
        /* per-layer bytes differ between the layer kinds: step back while the average was optimistic */
        while (pl->bytes > p->max_bytes && n_layer > 1) {
            n_layer -= hy && n_layer > hy->full_interval ? hy->full_interval : 1;
            TY_TRY(plan_layers(pr, tg, n_layer, pl));
        }
        TY_LOG_I("mkmodel: %s as %s would take %s; %d of %d layers fit in %s", pr->hf_name, tg->name, a, n_layer,
                 pr->n_layer, b);
    }
    info->n_layer = n_layer;
    info->n_tensors = pl->list.n;
    info->tensor_bytes = pl->bytes;
    info->n_fallback = pl->n_fallback;
    info->n_params = ty__mkmodel_n_params(pr, n_layer, &info->n_params_active);
    if (n_layer < pr->n_layer) {
        snprintf(info->reduced, sizeof info->reduced,
                 "block_count: %d of the released %d layers (blk.%d .. blk.%d left out); every other shape as released",
                 n_layer, pr->n_layer, n_layer, pr->n_layer - 1);
        const struct hybrid_shape *hy = hybrid_of(pr);
        if (hy) {
            size_t len = strlen(info->reduced);
            snprintf(info->reduced + len, sizeof info->reduced - len,
                     "; full attention every %d layers as released (%d Gated DeltaNet + %d full)", hy->full_interval,
                     n_layer - n_layer / hy->full_interval, n_layer / hy->full_interval);
        }
        snprintf(info->name, sizeof info->name, "%s synthetic (random weights, seed %" PRIu64 "; %d of %d layers)",
                 pr->hf_name, p->seed, n_layer, pr->n_layer);
    } else {
        snprintf(info->name, sizeof info->name, "%s synthetic (random weights, seed %" PRIu64 ")", pr->hf_name,
                 p->seed);
    }
    return TY_OK;
}

enum ty_status ty__mkmodel_plan(const struct ty_mkmodel_params *p, struct ty_mkmodel_info *info) {
    struct plan pl = {0};
    enum ty_status st = make_plan(p, &pl, info);
    ty_free(pl.list.t);
    return st;
}

/* ==== Random numbers ==== */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

struct rng {
    uint64_t s[4];
};

/* A generator for one row: depends only on (seed, tensor, row). */
static void rng_seed(struct rng *r, uint64_t seed, uint64_t tensor, uint64_t row) {
    uint64_t x = seed ^ (tensor * 0x9e3779b97f4a7c15ull) ^ (row * 0xd1b54a32d192ed03ull);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256+ (Blackman and Vigna): the top bits are full quality, and all four 16-bit lanes are used as uniforms of
 * a sum, where the weak lowest bits do not matter. */
static inline uint64_t rng_next(struct rng *r) {
    uint64_t *s = r->s;
    uint64_t out = s[0] + s[3], t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Fills row[0..n) with approximately N(mean, sd^2): the Irwin-Hall sum of four uniforms on [0, 65535] has mean
 * 131070 and standard deviation 65536 / sqrt(3) (to 1e-9). */
static void fill_normal(struct rng *r, float *row, int64_t n, float mean, float sd) {
    const float k = sd * 1.7320508075688772f / 65536.0f;
    for (int64_t i = 0; i < n; i++) {
        uint64_t x = rng_next(r);
        int32_t s =
            (int32_t)(x & 0xffff) + (int32_t)((x >> 16) & 0xffff) + (int32_t)((x >> 32) & 0xffff) + (int32_t)(x >> 48);
        row[i] = mean + (float)(s - 131070) * k;
    }
}

/* The distribution of a tensor's values. */
static void init_params(const struct ty_mkmodel_preset *pr, int32_t n_layer, const struct mk_tensor *t, float *mean,
                        float *sd) {
    *mean = 0.0f;
    switch (t->init) {
    case INIT_EMBED:
        *sd = 0.5f / sqrtf((float)pr->n_embd);
        break;
    case INIT_MATRIX:
        *sd = 1.0f / sqrtf((float)t->ne[0]);
        break;
    case INIT_RESID:
        *sd = 1.0f / sqrtf((float)t->ne[0]) / sqrtf(2.0f * (float)n_layer);
        break;
    case INIT_NORM:
        *mean = 1.0f, *sd = 0.05f;
        break;
    case INIT_GAIN:
        *mean = 4.0f, *sd = 0.2f;
        break;
    case INIT_BIAS:
        *sd = 0.05f;
        break;
    case INIT_CONV:
        *sd = 1.0f / sqrtf((float)t->ne[0]);
        break;
    case INIT_DECAY:
        *mean = -2.0f, *sd = 0.3f;
        break;
    }
}

/* ==== Writing ==== */

struct gen_job {
    const struct mk_tensor *t;
    const struct ty_type_traits *tt;
    uint64_t seed, tensor_hash;
    float mean, sd;
    int64_t ncols, nrows;
    size_t row_bytes;
    uint8_t *out;
    float *scratch; /* (nth, ncols) */
};

static void gen_rows(void *arg, int ith, int nth) {
    const struct gen_job *j = arg;
    int64_t begin, end;
    ty__split_range(j->nrows, ith, nth, &begin, &end);
    float *row = j->scratch + (size_t)ith * (size_t)j->ncols;
    for (int64_t r = begin; r < end; r++) {
        struct rng g;
        rng_seed(&g, j->seed, j->tensor_hash, (uint64_t)r);
        fill_normal(&g, row, j->ncols, j->mean, j->sd);
        j->tt->from_float(row, j->out + (size_t)r * j->row_bytes, j->ncols);
    }
}

enum ty_status ty__mkmodel_write_hparams(struct ty_gguf_writer *w, const struct ty_mkmodel_preset *pr, int32_t n_layer,
                                         uint32_t file_type, const char *name) {
    const char *a = pr->arch;
    char k[128];
#define U32(suffix, v) (snprintf(k, sizeof k, "%s." suffix, a), ty__gguf_writer_set_u32(w, k, (uint32_t)(v)))
#define F32(suffix, v) (snprintf(k, sizeof k, "%s." suffix, a), ty__gguf_writer_set_f32(w, k, (float)(v)))
    /* The keys and order of convert.c's write_hparams, so the file is what converting the real checkpoint gives. */
    TY_TRY(ty__gguf_writer_set_str(w, "general.architecture", a));
    TY_TRY(ty__gguf_writer_set_str(w, "general.name", name));
    TY_TRY(ty__gguf_writer_set_u32(w, "general.file_type", file_type));
    TY_TRY(ty__gguf_writer_set_u32(w, "general.quantization_version", 2));
    TY_TRY(U32("block_count", n_layer));
    TY_TRY(U32("context_length", pr->n_ctx));
    TY_TRY(U32("embedding_length", pr->n_embd));
    TY_TRY(U32("feed_forward_length", pr->n_ff));
    TY_TRY(U32("attention.head_count", pr->n_head));
    TY_TRY(U32("attention.head_count_kv", pr->n_head_kv));
    TY_TRY(F32("rope.freq_base", pr->rope_theta));
    TY_TRY(F32("attention.layer_norm_rms_epsilon", pr->norm_eps));
    TY_TRY(U32("attention.key_length", pr->head_dim));
    TY_TRY(U32("attention.value_length", pr->head_dim));
    if (pr->n_expert > 0) {
        TY_TRY(U32("expert_count", pr->n_expert));
        TY_TRY(U32("expert_used_count", pr->n_expert_used));
        TY_TRY(U32("expert_feed_forward_length", pr->n_ff_exp));
        snprintf(k, sizeof k, "%s.expert_weights_norm", a);
        TY_TRY(ty__gguf_writer_set_bool(w, k, pr->expert_norm));
    }
    const struct hybrid_shape *hy = hybrid_of(pr);
    if (hy) { /* convert.c's qwen3next keys */
        TY_TRY(U32("rope.dimension_count", hy->rope_dims));
        TY_TRY(U32("full_attention_interval", hy->full_interval));
        TY_TRY(U32("ssm.conv_kernel", hy->conv_kernel));
        TY_TRY(U32("ssm.state_size", hy->d_k));
        TY_TRY(U32("ssm.group_count", hy->n_k));
        TY_TRY(U32("ssm.time_step_rank", hy->n_v));
        TY_TRY(U32("ssm.inner_size", hy->n_v * hy->d_v));
        TY_TRY(U32("expert_shared_feed_forward_length", hy->n_ff_shexp));
        if (hy->split) {
            static const int32_t sections[4] = {11, 11, 10, 0}; /* transformers' default mrope_section */
            snprintf(k, sizeof k, "%s.rope.dimension_sections", a);
            TY_TRY(ty__gguf_writer_set_arr(w, k, TY_GGUF_TYPE_INT32, sections, 4));
        }
    }
#undef U32
#undef F32
    return TY_OK;
}

static enum ty_status write_metadata(struct ty_gguf_writer *w, const struct ty_mkmodel_params *p, const struct plan *pl,
                                     const struct ty_mkmodel_info *info) {
    const struct ty_mkmodel_preset *pr = p->preset;
    TY_TRY(ty__mkmodel_write_hparams(w, pr, pl->n_layer, pl->tg->ftype, info->name));
    /* What makes this file synthetic, for inspect and for anyone reading numbers measured on it. */
    TY_TRY(ty__gguf_writer_set_str(w, "tongyun.synthetic.preset", pr->name));
    TY_TRY(ty__gguf_writer_set_u64(w, "tongyun.synthetic.seed", p->seed));
    TY_TRY(ty__gguf_writer_set_str(w, "tongyun.synthetic.source", pr->source));
    if (info->reduced[0]) TY_TRY(ty__gguf_writer_set_str(w, "tongyun.synthetic.reduced", info->reduced));
    return TY_OK;
}

static enum ty_status write_model(const char *out_path, const struct ty_mkmodel_params *p, struct plan *pl,
                                  const struct ty_mkmodel_info *info, struct ty_gguf_writer *w,
                                  struct ty_threadpool **pool, uint8_t **out, float **scratch) {
    const struct ty_mkmodel_preset *pr = p->preset;
    if (!p->tokenizer_json)
        return ty__error(TY_ERR_INVALID_ARG, "mkmodel: no tokenizer.json given; the model needs the Qwen tokenizer");
    struct ty_tokenizer *tok = NULL;
    TY_TRY(ty__tokenizer_load_hf(p->tokenizer_json, p->tokenizer_config, &tok));
    enum ty_status st = TY_OK;
    int32_t n_tok = ty_tokenizer_n_vocab(tok);
    if (n_tok > pr->n_vocab)
        st = ty__error(TY_ERR_INVALID_ARG, "mkmodel: %s has %d tokens, more than %s's vocabulary of %d",
                       p->tokenizer_json, n_tok, pr->hf_name, pr->n_vocab);
    /* As convert does: llama.cpp takes n_vocab from the token list, so pad it to the embedding's rows. */
    if (st == TY_OK && n_tok < pr->n_vocab) st = ty__tokenizer_pad_vocab(tok, pr->n_vocab);
    if (st == TY_OK) st = write_metadata(w, p, pl, info);
    if (st == TY_OK) st = ty__tokenizer_to_gguf(tok, w);
    ty_tokenizer_free(tok);
    TY_TRY(st);

    size_t max_bytes = 1, max_cols = 1;
    for (int64_t i = 0; i < pl->list.n; i++) {
        const struct mk_tensor *t = &pl->list.t[i];
        TY_TRY(ty__gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne));
        if (t->nbytes > max_bytes) max_bytes = t->nbytes;
        if ((size_t)t->ne[0] > max_cols) max_cols = (size_t)t->ne[0];
    }
    TY_TRY(ty__threadpool_init(p->n_threads, pool));
    int nth = ty__threadpool_size(*pool);
    *out = ty__malloc(max_bytes);
    *scratch = ty__malloc((size_t)nth * max_cols * sizeof(float));
    if (!*out || !*scratch)
        return ty__error(TY_ERR_NO_MEMORY, "mkmodel: out of memory for a %zu-byte tensor buffer", max_bytes);
    TY_TRY(ty__gguf_writer_begin(w, out_path));

    struct ty_progress prog;
    ty__progress_begin(&prog, "mkmodel", pl->bytes);
    uint64_t done = 0;
    for (int64_t i = 0; i < pl->list.n && st == TY_OK; i++) {
        const struct mk_tensor *t = &pl->list.t[i];
        struct gen_job j = {.t = t, .tt = ty__type_traits(t->type), .seed = p->seed, .tensor_hash = name_hash(t->name)};
        TY_ASSERT(j.tt && j.tt->from_float);
        init_params(pr, pl->n_layer, t, &j.mean, &j.sd);
        j.ncols = t->ne[0];
        j.nrows = t->ne[1] * t->ne[2] * t->ne[3];
        j.out = *out;
        j.scratch = *scratch;
        st = ty__row_size(t->type, j.ncols, &j.row_bytes);
        if (st != TY_OK) break;
        ty__threadpool_run(*pool, gen_rows, &j);
        TY_LOG_D("mkmodel: %-32s %-5s mean %g sd %g", t->name, ty_type_name(t->type), (double)j.mean, (double)j.sd);
        st = ty__gguf_writer_write_tensor(w, *out, t->nbytes);
        done += t->nbytes;
        ty__progress_update(&prog, done);
    }
    ty__progress_end(&prog);
    TY_TRY(st);
    return ty__gguf_writer_finish(w);
}

enum ty_status ty__mkmodel_write(const char *out_path, const struct ty_mkmodel_params *p,
                                 struct ty_mkmodel_info *info) {
    struct ty_mkmodel_info local;
    if (!info) info = &local;
    struct plan pl = {0};
    struct ty_gguf_writer *w = NULL;
    struct ty_threadpool *pool = NULL;
    uint8_t *out = NULL;
    float *scratch = NULL;
    enum ty_status st = make_plan(p, &pl, info);
    if (st == TY_OK) st = ty__gguf_writer_init(&w);
    if (st == TY_OK) st = write_model(out_path, p, &pl, info, w, &pool, &out, &scratch);
    ty__gguf_writer_free(w); /* after a failure, removes the temporary file */
    ty__threadpool_free(pool);
    ty_free(out);
    ty_free(scratch);
    ty_free(pl.list.t);
    return st;
}
