/*
 * mkmodel.h - synthetic Qwen models for benchmarks without downloads: the released shapes of Qwen2.5, Qwen3 and
 * Qwen3-MoE checkpoints (presets), random weights at a realistic scale, and the real Qwen3 tokenizer, written as the
 * same GGUF file `tongyun convert` would write for a real checkpoint of that shape (same metadata keys, tensor names,
 * shapes and order), so `tongyun run`, `inspect` and `bench` load it like any other model.
 *
 * The weights are reproducible: each row of each tensor is drawn from a generator seeded by (seed, tensor name, row),
 * so the bytes depend neither on the thread count nor on how many layers are written.
 */
#ifndef TY_MKMODEL_H
#define TY_MKMODEL_H

#include "base/base.h"

/* A released model's shape, as its config.json gives it. */
struct ty_mkmodel_preset {
    const char *name;    /* preset name, matched case-insensitively: "qwen2.5-0.5b" */
    const char *hf_name; /* the checkpoint it copies: "Qwen2.5-0.5B" */
    const char *arch;    /* general.architecture: qwen2, qwen3, qwen3moe, qwen3next (hybrid part: mkmodel.c) */
    int32_t n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv, head_dim, n_ctx;
    float rope_theta, norm_eps;
    bool tied;                                 /* tie_word_embeddings: no output.weight */
    bool qkv_bias;                             /* q/k/v projection biases (Qwen2) */
    bool qk_norm;                              /* per-head RMSNorm of q and k (Qwen3) */
    int32_t n_expert, n_expert_used, n_ff_exp; /* 0 for dense models */
    bool expert_norm;                          /* norm_topk_prob */
    const char *source;                        /* where the figures come from */
};

/* The preset table (n entries). */
const struct ty_mkmodel_preset *ty__mkmodel_presets(int *n);
/* The preset called `name` (case-insensitive), or NULL. */
const struct ty_mkmodel_preset *ty__mkmodel_find_preset(const char *name);
/* Parameter count of a preset with `n_layer` layers (tied embeddings counted once); `active` (may be NULL) receives the
 * parameters a token uses (only the selected experts of a MoE layer). */
uint64_t ty__mkmodel_n_params(const struct ty_mkmodel_preset *p, int32_t n_layer, uint64_t *active);

struct ty_mkmodel_params {
    const struct ty_mkmodel_preset *preset;
    const char *type;           /* output type as `tongyun quantize` names it: f16, q8_0, q4_k_m, ... */
    uint64_t seed;              /* same seed, same weights */
    int32_t n_layer;            /* layers to write; 0 = the preset's count, reduced to fit max_bytes when that is set */
    uint64_t max_bytes;         /* with n_layer 0: the most tensor bytes the file may hold (0 = no limit) */
    const char *tokenizer_json; /* Hugging Face tokenizer.json (required) */
    const char *tokenizer_config; /* tokenizer_config.json (special tokens, chat template); may be NULL */
    int n_threads;                /* 0 = one per core; the output does not depend on it */
};

/* What a write produces (or would produce). */
struct ty_mkmodel_info {
    int32_t n_layer; /* layers written */
    int64_t n_tensors;
    uint64_t tensor_bytes; /* bytes of tensor data */
    uint64_t n_params, n_params_active;
    int64_t n_fallback; /* matrices whose rows did not fit the type's block and fell back (see quant-mix.h) */
    char name[192];     /* general.name */
    char reduced[192];  /* tongyun.synthetic.reduced: what differs from the released model; "" when nothing */
};

/* Works out the layer count, tensor types and sizes without writing anything. Fails with TY_ERR_INVALID_ARG on a bad
 * type, layer count, or a preset that does not fit max_bytes even with one layer. */
enum ty_status ty__mkmodel_plan(const struct ty_mkmodel_params *p, struct ty_mkmodel_info *info);

/* Writes the model to `out_path` (under a temporary name, renamed at the end, so a failure leaves no partial file).
 * Memory: one tensor's output bytes plus a row of floats per thread. `info` may be NULL. */
enum ty_status ty__mkmodel_write(const char *out_path, const struct ty_mkmodel_params *p, struct ty_mkmodel_info *info);

/* Writes general.architecture, general.name, general.file_type and the `ARCH.*` hyperparameter keys of a model of
 * shape `pr` with `n_layer` layers, as `tongyun convert` writes them (also used by the trainer's GGUF export). */
struct ty_gguf_writer;
enum ty_status ty__mkmodel_write_hparams(struct ty_gguf_writer *w, const struct ty_mkmodel_preset *pr, int32_t n_layer,
                                         uint32_t file_type, const char *name);

#endif /* TY_MKMODEL_H */
