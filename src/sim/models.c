/*
 * models.c - model descriptions for the simulator: the built-in presets (each with the configuration it was copied
 * from), descriptions read from a GGUF file's metadata, and the parameter and cache counts the performance model
 * needs. Layers come in three kinds the model treats differently: dense feed-forward, mixture-of-experts (routed and
 * shared experts), and hybrid linear attention (Gated DeltaNet) whose cache is a fixed recurrent state per sequence
 * instead of keys and values per token.
 */
#include "sim/sim.h"

#include "model/gguf.h"
#include "model/quant.h"

#include <math.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>

/* ==== Presets ==== */

#define SRC_HF(repo) "Hugging Face " repo " config.json"

/* Dense Qwen: name, layers, embd, heads, kv heads, head_dim, ffn, vocab, tied, ctx, source. */
#define DENSE(nm, L, E, H, KV, HD, FF, V, TIED, CTX, SRC, ARCH)                                                        \
    {                                                                                                                  \
        .name = nm, .source = SRC, .arch = ARCH, .n_layer = L, .n_embd = E, .n_vocab = V, .n_ctx_train = CTX,          \
        .tied = TIED, .attn = TY_SIM_ATTN_GQA, .n_head = H, .n_head_kv = KV, .head_dim = HD, .head_dim_v = HD,         \
        .n_ff = FF                                                                                                     \
    }

static const struct ty_sim_model presets[] = {
    DENSE("qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, false, 32768, SRC_HF("Qwen/Qwen2.5-7B"), "qwen2"),
    DENSE("qwen2.5-72b", 80, 8192, 64, 8, 128, 29568, 152064, false, 32768, SRC_HF("Qwen/Qwen2.5-72B"), "qwen2"),
    DENSE("qwen3-0.6b", 28, 1024, 16, 8, 128, 3072, 151936, true, 40960, SRC_HF("Qwen/Qwen3-0.6B"), "qwen3"),
    DENSE("qwen3-1.7b", 28, 2048, 16, 8, 128, 6144, 151936, true, 40960, SRC_HF("Qwen/Qwen3-1.7B"), "qwen3"),
    DENSE("qwen3-4b", 36, 2560, 32, 8, 128, 9728, 151936, true, 40960, SRC_HF("Qwen/Qwen3-4B"), "qwen3"),
    DENSE("qwen3-8b", 36, 4096, 32, 8, 128, 12288, 151936, false, 40960, SRC_HF("Qwen/Qwen3-8B"), "qwen3"),
    DENSE("qwen3-14b", 40, 5120, 40, 8, 128, 17408, 151936, false, 40960, SRC_HF("Qwen/Qwen3-14B"), "qwen3"),
    DENSE("qwen3-32b", 64, 5120, 64, 8, 128, 25600, 151936, false, 40960, SRC_HF("Qwen/Qwen3-32B"), "qwen3"),
    {
        .name = "qwen3-30b-a3b",
        .source = SRC_HF("Qwen/Qwen3-30B-A3B") ": 48 layers, hidden 2048, 32 q / 4 kv heads of 128, 128 experts, "
                                               "top-8, expert FFN 768",
        .arch = "qwen3moe",
        .n_layer = 48,
        .n_embd = 2048,
        .n_vocab = 151936,
        .n_ctx_train = 40960,
        .attn = TY_SIM_ATTN_GQA,
        .n_head = 32,
        .n_head_kv = 4,
        .head_dim = 128,
        .head_dim_v = 128,
        .n_ff = 6144,
        .n_expert = 128,
        .n_expert_used = 8,
        .n_ff_exp = 768,
    },
    {
        .name = "qwen3-235b-a22b",
        .source = SRC_HF("Qwen/Qwen3-235B-A22B") ": 94 layers, hidden 4096, 64 q / 4 kv heads of 128, 128 experts, "
                                                 "top-8, expert FFN 1536",
        .arch = "qwen3moe",
        .n_layer = 94,
        .n_embd = 4096,
        .n_vocab = 151936,
        .n_ctx_train = 40960,
        .attn = TY_SIM_ATTN_GQA,
        .n_head = 64,
        .n_head_kv = 4,
        .head_dim = 128,
        .head_dim_v = 128,
        .n_ff = 12288,
        .n_expert = 128,
        .n_expert_used = 8,
        .n_ff_exp = 1536,
    },
    {
        .name = "qwen3-next-80b-a3b",
        .source = SRC_HF("Qwen/Qwen3-Next-80B-A3B-Instruct") ": 48 layers (every 4th full attention, 16 q / 2 kv "
                                                             "heads of 256, gated), Gated DeltaNet 16 key / 32 value "
                                                             "heads of 128, conv 4; 512 experts, top-10, "
                                                             "expert FFN 512, one shared expert of 512",
        .arch = "qwen3next",
        .n_layer = 48,
        .n_embd = 2048,
        .n_vocab = 151936,
        .n_ctx_train = 262144,
        .attn = TY_SIM_ATTN_GQA,
        .n_head = 16,
        .n_head_kv = 2,
        .head_dim = 256,
        .head_dim_v = 256,
        .attn_gate = true,
        .n_ff = 5120,
        .n_expert = 512,
        .n_expert_used = 10,
        .n_ff_exp = 512,
        .n_expert_shared = 1,
        .n_ff_shexp = 512,
        .full_attn_interval = 4,
        .lin_k_heads = 16,
        .lin_v_heads = 32,
        .lin_k_dim = 128,
        .lin_v_dim = 128,
        .lin_conv = 4,
    },
    {
        .name = "qwen3.5-35b-a3b",
        .source = "Qwen3.5-35B-A3B (Qwen3.6-35B-A3B shares the topology): THUDM/slime scripts/models/"
                  "qwen3.5-35B-A3B.sh: 40 layers, hidden 2048, linear-attention freq 4, 16 q / 2 kv heads of 256 "
                  "(gated), DeltaNet 16/32 heads of 128, 256 experts, top-8, FFN 512, shared 512, vocab 248320",
        .arch = "qwen35moe",
        .n_layer = 40,
        .n_embd = 2048,
        .n_vocab = 248320,
        .n_ctx_train = 262144,
        .attn = TY_SIM_ATTN_GQA,
        .n_head = 16,
        .n_head_kv = 2,
        .head_dim = 256,
        .head_dim_v = 256,
        .attn_gate = true,
        .n_ff = 512,
        .n_expert = 256,
        .n_expert_used = 8,
        .n_ff_exp = 512,
        .n_expert_shared = 1,
        .n_ff_shexp = 512,
        .full_attn_interval = 4,
        .lin_k_heads = 16,
        .lin_v_heads = 32,
        .lin_k_dim = 128,
        .lin_v_dim = 128,
        .lin_conv = 4,
    },
    {
        .name = "qwen3.5-397b-a17b",
        .source = "THUDM/slime scripts/models/qwen3.5-397B-A17B.sh: 60 layers, hidden 4096, 32 q / 2 kv heads of 256 "
                  "(gated), 512 experts, top-10, FFN 1024, shared 1024, vocab 248320, hybrid every 4th layer full; "
                  "DeltaNet heads not in that script: assumed 16 key / 64 value heads of 128 (est.)",
        .arch = "qwen35moe",
        .n_layer = 60,
        .n_embd = 4096,
        .n_vocab = 248320,
        .n_ctx_train = 262144,
        .attn = TY_SIM_ATTN_GQA,
        .n_head = 32,
        .n_head_kv = 2,
        .head_dim = 256,
        .head_dim_v = 256,
        .attn_gate = true,
        .n_ff = 1024,
        .n_expert = 512,
        .n_expert_used = 10,
        .n_ff_exp = 1024,
        .n_expert_shared = 1,
        .n_ff_shexp = 1024,
        .full_attn_interval = 4,
        .lin_k_heads = 16,
        .lin_v_heads = 64,
        .lin_k_dim = 128,
        .lin_v_dim = 128,
        .lin_conv = 4,
    },
    {
        .name = "qwen3-max-1t",
        .source = "assumed configuration: Qwen3-Max's architecture is not published (over 1T parameters). Scaled from "
                  "Qwen3-235B-A22B's design: 104 layers, hidden 6144, 64 q / 8 kv heads of 128, 256 experts, top-8, "
                  "expert FFN 2048, vocab 151936: 1.02T parameters, 45B active",
        .arch = "qwen3moe",
        .n_layer = 104,
        .n_embd = 6144,
        .n_vocab = 151936,
        .n_ctx_train = 262144,
        .attn = TY_SIM_ATTN_GQA,
        .n_head = 64,
        .n_head_kv = 8,
        .head_dim = 128,
        .head_dim_v = 128,
        .n_ff = 16384,
        .n_expert = 256,
        .n_expert_used = 8,
        .n_ff_exp = 2048,
    },
    {
        .name = "deepseek-r1",
        .source = SRC_HF("deepseek-ai/DeepSeek-R1") " (DeepSeek-V3 architecture; validation only, not a Qwen "
                                                    "model): 61 layers, hidden 7168, MLA 128 heads (q_lora 1536, "
                                                    "kv_lora 512, nope 128, rope 64, v 128), "
                                                    "3 dense layers of 18432, 256 experts top-8 of 2048 + 1 shared",
        .arch = "deepseek2",
        .n_layer = 61,
        .n_embd = 7168,
        .n_vocab = 129280,
        .n_ctx_train = 163840,
        .attn = TY_SIM_ATTN_MLA,
        .n_head = 128,
        .n_head_kv = 128,
        .head_dim = 192,
        .head_dim_v = 128,
        .q_lora = 1536,
        .kv_lora = 512,
        .qk_nope = 128,
        .qk_rope = 64,
        .n_ff = 18432,
        .n_expert = 256,
        .n_expert_used = 8,
        .n_ff_exp = 2048,
        .n_expert_shared = 1,
        .n_ff_shexp = 2048,
        .n_dense_lead = 3,
    },
};
#define N_PRESETS ((int)(sizeof presets / sizeof presets[0]))

int ty__sim_model_preset_count(void) {
    return N_PRESETS;
}
const struct ty_sim_model *ty__sim_model_preset_at(int i) {
    return i >= 0 && i < N_PRESETS ? &presets[i] : NULL;
}

const char *ty__sim_model_presets(void) {
    static char list[1024];
    if (!list[0]) {
        size_t off = 0;
        for (int i = 0; i < N_PRESETS && off < sizeof list; i++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", presets[i].name);
    }
    return list;
}

/* ==== Validation and counts ==== */

enum ty_status ty__sim_model_validate(const struct ty_sim_model *m) {
    const char *n = m->name[0] ? m->name : "model";
    if (m->n_layer <= 0 || m->n_embd <= 0 || m->n_vocab <= 0 || m->n_head <= 0 || m->head_dim <= 0)
        return ty__error(TY_ERR_INVALID_ARG,
                         "%s: layers, embedding width, vocabulary, heads and head size must all be positive", n);
    if (m->attn == TY_SIM_ATTN_GQA && (m->n_head_kv <= 0 || m->n_head % m->n_head_kv))
        return ty__error(TY_ERR_INVALID_ARG, "%s: %d KV heads must divide the %d query heads", n, m->n_head_kv,
                         m->n_head);
    if (m->attn == TY_SIM_ATTN_MLA && (m->kv_lora <= 0 || m->qk_nope <= 0 || m->qk_rope < 0 || m->head_dim_v <= 0))
        return ty__error(TY_ERR_INVALID_ARG, "%s: MLA needs kv_lora, qk_nope and v head sizes", n);
    if (m->n_expert > 0 && (m->n_expert_used <= 0 || m->n_expert_used > m->n_expert || m->n_ff_exp <= 0))
        return ty__error(TY_ERR_INVALID_ARG,
                         "%s: an MoE model needs 1 <= experts used (%d) <= experts (%d) and an "
                         "expert FFN width",
                         n, m->n_expert_used, m->n_expert);
    if (m->n_expert == 0 && m->n_ff <= 0)
        return ty__error(TY_ERR_INVALID_ARG, "%s: a dense model needs an FFN width", n);
    if (m->n_dense_lead < 0 || m->n_dense_lead > m->n_layer)
        return ty__error(TY_ERR_INVALID_ARG, "%s: leading dense layers out of range", n);
    if (m->full_attn_interval < 0 || m->full_attn_interval > m->n_layer)
        return ty__error(TY_ERR_INVALID_ARG, "%s: full_attention_interval %d out of range", n, m->full_attn_interval);
    if (m->full_attn_interval > 1 &&
        (m->lin_k_heads <= 0 || m->lin_v_heads <= 0 || m->lin_k_dim <= 0 || m->lin_v_dim <= 0))
        return ty__error(TY_ERR_INVALID_ARG, "%s: a hybrid model needs linear-attention head counts and sizes", n);
    return TY_OK;
}

void ty__sim_model_stats(const struct ty_sim_model *m, struct ty_sim_model_stats *s) {
    memset(s, 0, sizeof *s);
    double E = m->n_embd;
    if (m->full_attn_interval > 1) {
        s->n_full = m->n_layer / m->full_attn_interval;
        s->n_lin = m->n_layer - s->n_full;
    } else {
        s->n_full = m->n_layer;
    }
    if (m->n_expert > 0) {
        s->n_dense = m->n_dense_lead;
        s->n_moe = m->n_layer - m->n_dense_lead;
    } else {
        s->n_dense = m->n_layer;
    }
    if (m->attn == TY_SIM_ATTN_MLA) {
        double qk = m->qk_nope + m->qk_rope;
        double q = m->q_lora > 0 ? E * m->q_lora + (double)m->q_lora * m->n_head * qk : E * m->n_head * qk;
        s->p_attn = q + E * (m->kv_lora + m->qk_rope) + (double)m->kv_lora * m->n_head * (m->qk_nope + m->head_dim_v) +
                    (double)m->n_head * m->head_dim_v * E;
        s->kv_elems_token = m->kv_lora + m->qk_rope;
        s->attn_qk_dim = qk;
        s->attn_pv_dim = m->head_dim_v;
    } else {
        double hv = m->head_dim_v > 0 ? m->head_dim_v : m->head_dim;
        s->p_attn = E * m->n_head * m->head_dim * (m->attn_gate ? 2 : 1) + E * m->n_head_kv * (m->head_dim + hv) +
                    m->n_head * hv * E;
        s->kv_elems_token = (double)m->n_head_kv * (m->head_dim + hv);
        s->attn_qk_dim = m->head_dim;
        s->attn_pv_dim = hv;
    }
    if (s->n_lin > 0) {
        double kd = (double)m->lin_k_heads * m->lin_k_dim, vd = (double)m->lin_v_heads * m->lin_v_dim;
        s->p_lin = E * (2 * kd + 2 * vd + 2.0 * m->lin_v_heads) + vd * E;
        s->lin_state_elems = (double)m->lin_v_heads * m->lin_k_dim * m->lin_v_dim +
                             (double)(m->lin_conv > 1 ? m->lin_conv - 1 : 0) * (2 * kd + vd);
    }
    s->p_ffn = 3 * E * m->n_ff;
    if (m->n_expert > 0) {
        s->p_exp = 3 * E * m->n_ff_exp;
        s->p_shexp = (double)m->n_expert_shared * 3 * E * m->n_ff_shexp;
        s->p_router = E * m->n_expert;
    }
    s->p_embd = E * m->n_vocab;
    s->p_head = E * m->n_vocab;
    double per_moe_total = m->n_expert * s->p_exp + s->p_shexp + s->p_router;
    double per_moe_active = m->n_expert_used * s->p_exp + s->p_shexp + s->p_router;
    double common =
        s->n_full * s->p_attn + s->n_lin * s->p_lin + s->n_dense * s->p_ffn + s->p_embd + (m->tied ? 0 : s->p_head);
    s->params_total = common + s->n_moe * per_moe_total;
    s->params_active = common + s->n_moe * per_moe_active;
}

json_t *ty__sim_model_json(const struct ty_sim_model *m) {
    struct ty_sim_model_stats s;
    ty__sim_model_stats(m, &s);
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(m->name));
    json_object_set_new(o, "arch", json_string(m->arch));
    json_object_set_new(o, "source", json_string(m->source));
    json_object_set_new(o, "n_layer", json_integer(m->n_layer));
    json_object_set_new(o, "n_embd", json_integer(m->n_embd));
    json_object_set_new(o, "n_vocab", json_integer(m->n_vocab));
    json_object_set_new(o, "attention", json_string(m->attn == TY_SIM_ATTN_MLA ? "mla" : "gqa"));
    json_object_set_new(o, "n_head", json_integer(m->n_head));
    json_object_set_new(o, "n_head_kv", json_integer(m->n_head_kv));
    json_object_set_new(o, "head_dim", json_integer(m->head_dim));
    if (m->n_expert) {
        json_object_set_new(o, "n_expert", json_integer(m->n_expert));
        json_object_set_new(o, "n_expert_used", json_integer(m->n_expert_used));
        json_object_set_new(o, "n_ff_exp", json_integer(m->n_ff_exp));
        json_object_set_new(o, "n_expert_shared", json_integer(m->n_expert_shared));
    } else {
        json_object_set_new(o, "n_ff", json_integer(m->n_ff));
    }
    if (s.n_lin) {
        json_object_set_new(o, "full_attention_interval", json_integer(m->full_attn_interval));
        json_object_set_new(o, "linear_layers", json_integer(s.n_lin));
    }
    json_object_set_new(o, "params_total", json_real(s.params_total));
    json_object_set_new(o, "params_active", json_real(s.params_active));
    if (m->file_weight_bits > 0) json_object_set_new(o, "file_weight_bits", json_real(m->file_weight_bits));
    return o;
}

/* ==== GGUF ==== */

static enum ty_status get_i(const struct ty_gguf *g, const char *arch, const char *key, bool required, int *out) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int64_t v;
    enum ty_status st = ty__gguf_get_int(g, full, &v);
    if (st == TY_ERR_FORMAT) {
        /* Some keys are per-layer arrays (head_count_kv in hybrid models): take the largest entry. */
        enum ty_gguf_type et;
        uint64_t n;
        if (ty__gguf_get_arr(g, full, &et, &n) == TY_OK && n > 0) {
            int64_t best = 0;
            for (uint64_t i = 0; i < n; i++) {
                int64_t x;
                if (ty__gguf_arr_int(g, full, i, &x) == TY_OK && x > best) best = x;
            }
            v = best;
            st = TY_OK;
        }
    }
    if (st == TY_ERR_NOT_FOUND && !required) return TY_OK;
    if (st != TY_OK)
        return st == TY_ERR_NOT_FOUND
                   ? ty__error(TY_ERR_FORMAT, "GGUF metadata lacks %s, which the simulator needs", full)
                   : st;
    if (v < 0 || v > (int64_t)1 << 30)
        return ty__error(TY_ERR_FORMAT, "GGUF key %s = %lld is out of range", full, (long long)v);
    *out = (int)v;
    return TY_OK;
}

enum ty_status ty__sim_model_from_gguf(const char *path, struct ty_sim_model *out) {
    memset(out, 0, sizeof *out);
    struct ty_gguf *g;
    TY_TRY(ty__gguf_open(path, &g));
    enum ty_status st = TY_OK;
    char *arch = NULL;
    st = ty__gguf_get_strdup(g, "general.architecture", &arch);
    if (st != TY_OK) {
        ty__gguf_close(g);
        return ty__error_prefix(st, "%s", path);
    }
    static const char *const known[] = {"qwen2",  "qwen3",     "qwen2moe",  "qwen3moe", "qwen3next",
                                        "qwen35", "qwen35moe", "deepseek2", "llama"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= !strcmp(arch, known[i]);
    if (!ok) {
        st = ty__error(TY_ERR_UNSUPPORTED,
                       "%s: architecture '%s' is not modelled; the simulator reads qwen2, qwen3, "
                       "qwen2moe, qwen3moe, qwen3next, qwen35, qwen35moe and deepseek2",
                       path, arch);
        goto done;
    }
    snprintf(out->arch, sizeof out->arch, "%s", arch);
    const char *base = strrchr(path, '/');
    snprintf(out->name, sizeof out->name, "%s", base ? base + 1 : path);
    snprintf(out->source, sizeof out->source, "GGUF metadata of %s (%s.*)", path, arch);
    out->attn = TY_SIM_ATTN_GQA;
    if ((st = get_i(g, arch, "block_count", true, &out->n_layer)) != TY_OK) goto done;
    if ((st = get_i(g, arch, "embedding_length", true, &out->n_embd)) != TY_OK) goto done;
    if ((st = get_i(g, arch, "attention.head_count", true, &out->n_head)) != TY_OK) goto done;
    out->n_head_kv = out->n_head;
    if ((st = get_i(g, arch, "attention.head_count_kv", false, &out->n_head_kv)) != TY_OK) goto done;
    out->head_dim = out->n_head ? out->n_embd / out->n_head : 0;
    if ((st = get_i(g, arch, "attention.key_length", false, &out->head_dim)) != TY_OK) goto done;
    out->head_dim_v = out->head_dim;
    if ((st = get_i(g, arch, "attention.value_length", false, &out->head_dim_v)) != TY_OK) goto done;
    if ((st = get_i(g, arch, "feed_forward_length", false, &out->n_ff)) != TY_OK) goto done;
    if ((st = get_i(g, arch, "context_length", false, &out->n_ctx_train)) != TY_OK) goto done;
    if ((st = get_i(g, arch, "expert_count", false, &out->n_expert)) != TY_OK) goto done;
    if ((st = get_i(g, arch, "expert_used_count", false, &out->n_expert_used)) != TY_OK) goto done;
    if ((st = get_i(g, arch, "expert_feed_forward_length", false, &out->n_ff_exp)) != TY_OK) goto done;
    if ((st = get_i(g, arch, "expert_shared_feed_forward_length", false, &out->n_ff_shexp)) != TY_OK) goto done;
    if ((st = get_i(g, arch, "expert_shared_count", false, &out->n_expert_shared)) != TY_OK) goto done;
    if (out->n_ff_shexp > 0 && out->n_expert_shared == 0) out->n_expert_shared = 1;
    if ((st = get_i(g, arch, "leading_dense_block_count", false, &out->n_dense_lead)) != TY_OK) goto done;
    if (out->n_expert > 0 && out->n_ff_exp == 0) out->n_ff_exp = out->n_ff; /* qwen2moe files may only have this */
    /* Hybrid linear attention, with llama.cpp's key names: ssm.state_size = linear key head size, ssm.group_count =
     * linear key heads, ssm.time_step_rank = linear value heads, ssm.inner_size = value heads x value head size. */
    if ((st = get_i(g, arch, "full_attention_interval", false, &out->full_attn_interval)) != TY_OK) goto done;
    if (!strcmp(arch, "qwen3next") || !strncmp(arch, "qwen35", 6)) {
        int inner = 0;
        out->attn_gate = true;
        if (out->full_attn_interval == 0) out->full_attn_interval = 4;
        if ((st = get_i(g, arch, "ssm.conv_kernel", true, &out->lin_conv)) != TY_OK) goto done;
        if ((st = get_i(g, arch, "ssm.state_size", true, &out->lin_k_dim)) != TY_OK) goto done;
        if ((st = get_i(g, arch, "ssm.group_count", true, &out->lin_k_heads)) != TY_OK) goto done;
        if ((st = get_i(g, arch, "ssm.time_step_rank", true, &out->lin_v_heads)) != TY_OK) goto done;
        if ((st = get_i(g, arch, "ssm.inner_size", true, &inner)) != TY_OK) goto done;
        out->lin_v_dim = out->lin_v_heads ? inner / out->lin_v_heads : 0;
    }
    if (!strcmp(arch, "deepseek2")) {
        out->attn = TY_SIM_ATTN_MLA;
        if ((st = get_i(g, arch, "attention.q_lora_rank", false, &out->q_lora)) != TY_OK) goto done;
        if ((st = get_i(g, arch, "attention.kv_lora_rank", true, &out->kv_lora)) != TY_OK) goto done;
        if ((st = get_i(g, arch, "rope.dimension_count", true, &out->qk_rope)) != TY_OK) goto done;
        out->qk_nope = out->head_dim - out->qk_rope;
    }
    /* Vocabulary: the key, else the token list, else the embedding's shape. */
    if ((st = get_i(g, arch, "vocab_size", false, &out->n_vocab)) != TY_OK) goto done;
    const struct ty_gguf_tensor *emb = ty__gguf_find_tensor(g, "token_embd.weight");
    if (!out->n_vocab) {
        enum ty_gguf_type et;
        uint64_t n;
        if (ty__gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) == TY_OK)
            out->n_vocab = (int)(n < (1u << 30) ? n : 0);
        if (emb && emb->n_dims >= 2 && emb->ne[1] > 0 && emb->ne[1] < (1 << 30)) out->n_vocab = (int)emb->ne[1];
    }
    out->tied = ty__gguf_find_tensor(g, "output.weight") == NULL;
    /* The file's average bits per weight, from every tensor's stored bytes. */
    double bits = 0, elems = 0;
    for (int64_t i = 0; i < ty__gguf_n_tensors(g); i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
        double ne = 1;
        for (int d = 0; d < t->n_dims; d++) ne *= (double)t->ne[d];
        if (t->n_dims < 2) continue; /* norms and biases: negligible and often f32 */
        bits += (double)t->nbytes * 8;
        elems += ne;
    }
    out->file_weight_bits = elems > 0 ? bits / elems : 0;
    st = ty__sim_model_validate(out);
    if (st != TY_OK) ty__error_prefix(st, "%s", path);
done:
    ty_free(arch);
    ty__gguf_close(g);
    return st;
}

enum ty_status ty__sim_model_resolve(const char *name, struct ty_sim_model *out) {
    for (int i = 0; i < N_PRESETS; i++) {
        if (!strcasecmp(name, presets[i].name)) {
            *out = presets[i];
            return TY_OK;
        }
    }
    size_t n = strlen(name);
    struct stat sb;
    if ((n > 5 && !strcasecmp(name + n - 5, ".gguf")) || stat(name, &sb) == 0)
        return ty__sim_model_from_gguf(name, out);
    return ty__error(TY_ERR_NOT_FOUND, "unknown model '%s': give a GGUF file or a preset (%s)", name,
                     ty__sim_model_presets());
}

/* ==== Precision ==== */

static const char *const dtype_names[TY_SIM_DT_COUNT] = {"f32", "bf16", "fp8", "int8", "int4"};

const char *ty__sim_dtype_name(enum ty_sim_dtype d) {
    return d < TY_SIM_DT_COUNT ? dtype_names[d] : "?";
}

bool ty__sim_dtype_parse(const char *s, enum ty_sim_dtype *out) {
    for (int i = 0; i < TY_SIM_DT_COUNT; i++) {
        if (!strcasecmp(s, dtype_names[i])) {
            *out = (enum ty_sim_dtype)i;
            return true;
        }
    }
    if (!strcasecmp(s, "fp16") || !strcasecmp(s, "f16")) {
        *out = TY_SIM_DT_BF16; /* same size and, on every chip here, the same tensor-core rate */
        return true;
    }
    return false;
}

double ty__sim_dtype_bytes(enum ty_sim_dtype d) {
    switch (d) {
    case TY_SIM_DT_F32:
        return 4;
    case TY_SIM_DT_BF16:
        return 2;
    case TY_SIM_DT_FP8:
    case TY_SIM_DT_INT8:
        return 1;
    case TY_SIM_DT_INT4:
        return 4.25 / 8; /* 4-bit weights with one 16-bit scale and zero per group of 128 */
    default:
        return 2;
    }
}
