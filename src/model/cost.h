/*
 * cost.h - what one token costs a loaded model: the bytes a decode step reads (weights and KV cache) and the
 * arithmetic a prefill does, per weight type. `tongyun bench` divides these by the machine's measured bandwidth and
 * peaks to say how close a run comes to its roofline; the simulator's calibration reads the same figures.
 */
#ifndef TY_MODEL_COST_H
#define TY_MODEL_COST_H

#include "base/base.h"

struct ty_model;

struct ty_model_cost {
    int64_t n_params;          /* elements of every weight tensor */
    int64_t n_params_active;   /* those one token uses (a MoE token: its k experts only) */
    double file_bytes;         /* bytes of every weight tensor as stored */
    double weight_bytes;       /* bytes of weights one decode step reads: all matrices once, one embedding row, the
                                  selected experts' share of each expert tensor (k / n_expert) */
    double kv_bytes_per_pos;   /* bytes of KV cache a decode step reads per position already cached */
    double state_bytes;        /* bytes of recurrent state a decode step reads and writes back (the hybrid models'
                                  linear-attention layers: delta-rule and conv state, f32, each read once and
                                  written once); 0 for a plain transformer */
    double matmul_flops;       /* FLOPs of the weight matrix products of one token (2 per multiply-add) */
    double output_flops;       /* the output matrix's share of matmul_flops: a prompt token without logits skips it */
    enum ty_type output_type;  /* and its weight type */
    double attn_flops_per_pos; /* FLOPs of attention (q.k and p.v) per token per position it attends to */
    double flops_by_type[TY_TYPE_COUNT]; /* matmul_flops split by the weight type of the matrix */
    int32_t n_attn_layers;               /* layers with a KV cache (all of them in a plain transformer) */
};

/* Fills `out` for `m` with a KV cache of type kv_type (F16 or F32). */
void ty__model_cost(const struct ty_model *m, enum ty_type kv_type, struct ty_model_cost *out);

/* The model's weight type as llama.cpp names files ("Q4_K_M", "Q8_0", "BF16"): general.file_type when the file
 * has it, else the type holding most bytes. Static storage. */
const char *ty__model_type_label(const struct ty_model *m);

/* The name of the backend the model runs on ("cpu"). */
const char *ty__model_backend_name(const struct ty_model *m);
/* The backend itself (`tongyun bench --profile` attaches its op profile there). */
struct ty_backend *ty__model_backend(struct ty_model *m);

#endif /* TY_MODEL_COST_H */
