/*
 * quant-mix.c - the per-tensor type rules of `tongyun quantize`'s output types, shared with `tongyun mkmodel`: which
 * tensors are weight matrices, llama.cpp's "use more bits" layers of the Q4_K_M / Q5_K_M mixes, and the row-length
 * fallbacks for types whose block does not divide a row.
 */
#include "model/quant-mix.h"

#include "model/quant.h"

#include <inttypes.h>
#include <stdlib.h>
#include <strings.h>

/* ==== Targets ==== */

/* llama.cpp's llama_ftype values, written to general.file_type so other tools label the file correctly. */
enum {
    FTYPE_ALL_F32 = 0,
    FTYPE_MOSTLY_F16 = 1,
    FTYPE_MOSTLY_Q4_0 = 2,
    FTYPE_MOSTLY_Q4_1 = 3,
    FTYPE_MOSTLY_Q8_0 = 7,
    FTYPE_MOSTLY_Q5_0 = 8,
    FTYPE_MOSTLY_Q5_1 = 9,
    FTYPE_MOSTLY_Q4_K_S = 14,
    FTYPE_MOSTLY_Q4_K_M = 15,
    FTYPE_MOSTLY_Q5_K_S = 16,
    FTYPE_MOSTLY_Q5_K_M = 17,
    FTYPE_MOSTLY_Q6_K = 18,
    FTYPE_MOSTLY_BF16 = 32,
};

static const struct ty_quant_target targets[] = {
    {"f32", TY_TYPE_F32, false, FTYPE_ALL_F32},          {"f16", TY_TYPE_F16, false, FTYPE_MOSTLY_F16},
    {"bf16", TY_TYPE_BF16, false, FTYPE_MOSTLY_BF16},    {"q8_0", TY_TYPE_Q8_0, false, FTYPE_MOSTLY_Q8_0},
    {"q4_0", TY_TYPE_Q4_0, false, FTYPE_MOSTLY_Q4_0},    {"q4_1", TY_TYPE_Q4_1, false, FTYPE_MOSTLY_Q4_1},
    {"q5_0", TY_TYPE_Q5_0, false, FTYPE_MOSTLY_Q5_0},    {"q5_1", TY_TYPE_Q5_1, false, FTYPE_MOSTLY_Q5_1},
    {"q4_k", TY_TYPE_Q4_K, false, FTYPE_MOSTLY_Q4_K_S},  {"q5_k", TY_TYPE_Q5_K, false, FTYPE_MOSTLY_Q5_K_S},
    {"q6_k", TY_TYPE_Q6_K, false, FTYPE_MOSTLY_Q6_K},    {"q4_k_m", TY_TYPE_Q4_K, true, FTYPE_MOSTLY_Q4_K_M},
    {"q5_k_m", TY_TYPE_Q5_K, true, FTYPE_MOSTLY_Q5_K_M},
};

const struct ty_quant_target *ty__quant_target_find(const char *name) {
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        if (!strcasecmp(name, targets[i].name)) return &targets[i];
    return NULL;
}

const struct ty_quant_target *ty__quant_target_by_ftype(uint32_t ftype) {
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
        if (targets[i].ftype == ftype) return &targets[i];
    return NULL;
}

const char *ty__quant_target_names(void) {
    return "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m, q5_k_m";
}

/* ==== Which tensor gets which type ==== */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

bool ty__quant_is_weight_matrix(const char *name, int n_dims, const int64_t *ne) {
    /* Dimensions not counting trailing ones: a [4096, 1] tensor is a vector. */
    int dims = n_dims;
    while (dims > 1 && ne[dims - 1] == 1) dims--;
    return ends_with(name, ".weight") && dims >= 2 && !strstr(name, "_norm.weight") &&
           !strstr(name, "ffn_gate_inp.weight") && !strstr(name, "ssm_conv1d.weight");
}

/* llama.cpp's "use more bits" layers: the first and last eighth, and every third layer in between. */
static bool use_more_bits(int64_t i, int64_t n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The layer number of "blk.N.*", or -1. */
static int64_t layer_of(const char *name) {
    if (strncmp(name, "blk.", 4) != 0) return -1;
    char *end;
    long long v = strtoll(name + 4, &end, 10);
    return end != name + 4 && *end == '.' && v >= 0 ? (int64_t)v : -1;
}

struct mix_state {
    bool has_output;  /* the file has output.weight (else token_embd doubles as the output matrix) */
    int64_t n_layer;  /* <arch>.block_count, else 1 + the largest blk.N */
    int64_t n_attn_v; /* attention value matrices, as llama.cpp counts them (attn_v, attn_qkv, attn_kv_b) */
    int64_t i_attn_v; /* attn_v matrices seen so far */
};

static bool row_fits(enum ty_type type, int64_t ne0) {
    return ne0 % ty__type_traits(type)->block_size == 0;
}

/* The type a weight matrix gets before the row-length fallback. */
static enum ty_type mix_type(const struct ty_quant_target *tg, struct mix_state *ms,
                             const struct ty_quant_mix_tensor *t) {
    const char *name = t->name;
    if (!strcmp(name, "output.weight") || (!ms->has_output && !strcmp(name, "token_embd.weight")))
        return row_fits(tg->base, t->ne[0]) ? TY_TYPE_Q6_K : TY_TYPE_Q8_0;
    if (strstr(name, "attn_v.weight")) return use_more_bits(ms->i_attn_v++, ms->n_attn_v) ? TY_TYPE_Q6_K : tg->base;
    if (strstr(name, "ffn_down")) {
        int64_t layer = layer_of(name);
        return layer >= 0 && use_more_bits(layer, ms->n_layer) ? TY_TYPE_Q6_K : tg->base;
    }
    if (strstr(name, "attn_qkv.weight")) return tg->base == TY_TYPE_Q4_K ? TY_TYPE_Q5_K : TY_TYPE_Q6_K;
    return tg->base;
}

/* A type whose block divides the row: llama.cpp's fallbacks, then F16 (always fits). */
static enum ty_type fallback_type(enum ty_type type, int64_t ne0) {
    if (row_fits(type, ne0)) return type;
    enum ty_type next = type == TY_TYPE_Q4_K   ? TY_TYPE_Q5_0
                        : type == TY_TYPE_Q5_K ? TY_TYPE_Q5_1
                        : type == TY_TYPE_Q6_K ? TY_TYPE_Q8_0
                                               : TY_TYPE_F16;
    return row_fits(next, ne0) ? next : TY_TYPE_F16;
}

void ty__quant_mix_assign(const struct ty_quant_target *tg, int64_t n_layer, struct ty_quant_mix_tensor *ts, int64_t n,
                          bool warn, int64_t *n_fallback) {
    struct mix_state ms = {0};
    int64_t max_layer = -1, fallbacks = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *name = ts[i].name;
        if (!strcmp(name, "output.weight")) ms.has_output = true;
        if (strstr(name, "attn_v.weight") || strstr(name, "attn_qkv.weight") || strstr(name, "attn_kv_b.weight"))
            ms.n_attn_v++;
        if (layer_of(name) > max_layer) max_layer = layer_of(name);
    }
    ms.n_layer = n_layer > 0 ? n_layer : max_layer + 1;
    bool quantized = ty__type_traits(tg->base)->is_quantized;
    for (int64_t i = 0; i < n; i++) {
        struct ty_quant_mix_tensor *t = &ts[i];
        t->type = TY_TYPE_F32;
        if (!ty__quant_is_weight_matrix(t->name, t->n_dims, t->ne)) continue;
        enum ty_type want = tg->mix && quantized ? mix_type(tg, &ms, t) : tg->base;
        t->type = fallback_type(want, t->ne[0]);
        if (t->type != want) {
            fallbacks++;
            if (warn)
                TY_LOG_W("%s: rows of %" PRId64 " are not a multiple of the %s block (%" PRId64 "); using %s", t->name,
                         t->ne[0], ty_type_name(want), ty__type_traits(want)->block_size, ty_type_name(t->type));
        }
    }
    if (n_fallback) *n_fallback = fallbacks;
}
