/*
 * quant-mix.h - which weight type each tensor of a model gets when it is written as one of the output types of
 * `tongyun quantize` (a plain type such as q8_0, or one of llama.cpp's K-quant mixes q4_k_m / q5_k_m). Shared by
 * `tongyun quantize` (re-encoding a file) and `tongyun mkmodel` (writing a synthetic model), so both apply the same
 * rules: one copy.
 */
#ifndef TY_QUANT_MIX_H
#define TY_QUANT_MIX_H

#include "base/base.h"

/* An output type as the user names it. */
struct ty_quant_target {
    const char *name;  /* "q4_k_m" */
    enum ty_type base; /* the type most weight matrices get */
    bool mix;          /* llama.cpp's per-tensor "more bits" rules apply */
    uint32_t ftype;    /* general.file_type (llama.cpp's llama_ftype); a pure K type is its "_S" variant */
};

/* The target named `name` (case-insensitive), or NULL. */
const struct ty_quant_target *ty__quant_target_find(const char *name);
/* The target whose general.file_type is `ftype`, or NULL. */
const struct ty_quant_target *ty__quant_target_by_ftype(uint32_t ftype);
/* "f32, f16, bf16, q8_0, ..., q4_k_m, q5_k_m", for messages. */
const char *ty__quant_target_names(void);

/* One tensor to assign a type to: name and shape in, type out. */
struct ty_quant_mix_tensor {
    const char *name;
    int n_dims;
    int64_t ne[4];     /* GGUF order, unused dims 1 */
    enum ty_type type; /* out */
};

/* True for tensors the target's type applies to: *.weight with two or more dimensions, except norms, MoE routers
 * (ffn_gate_inp) and SSM convolutions. Every other tensor is stored as F32. */
bool ty__quant_is_weight_matrix(const char *name, int n_dims, const int64_t *ne);

/* Sets ts[i].type for all n tensors, given in file order (the mixes count attn_v matrices in that order). `n_layer` is
 * <arch>.block_count, or 0 to take 1 + the largest blk.N. A type whose block does not divide a row falls back as
 * llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16), with a warning per tensor in the log when
 * `warn`; `n_fallback` (may be NULL) receives how many fell back. */
void ty__quant_mix_assign(const struct ty_quant_target *tg, int64_t n_layer, struct ty_quant_mix_tensor *ts, int64_t n,
                          bool warn, int64_t *n_fallback);

#endif /* TY_QUANT_MIX_H */
