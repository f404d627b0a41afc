/*
 * model-impl.h - what model.c (loading), context.c (KV cache, evaluation) and qwen.c (the forward pass) share: the
 * hyperparameters, the weights as backend tensors, and a context's cache and activations. Everything is sized when
 * the model or context is made; a forward pass allocates nothing.
 */
#ifndef TY_MODEL_IMPL_H
#define TY_MODEL_IMPL_H

#include "chip/backend.h"
#include "model/gguf.h"

enum ty_arch { TY_ARCH_QWEN2 = 0, TY_ARCH_QWEN3 = 1, TY_ARCH_QWEN3MOE = 2, TY_ARCH_COUNT };

struct ty_hparams {
    int32_t n_vocab; /* rows of token_embd (may exceed the tokenizer's vocabulary: padding) */
    int32_t n_embd;  /* hidden size */
    int32_t n_layer;
    int32_t n_head;      /* query heads */
    int32_t n_head_kv;   /* key/value heads (GQA groups) */
    int32_t head_dim_k;  /* attention.key_length */
    int32_t head_dim_v;  /* attention.value_length */
    int32_t n_ff;        /* feed_forward_length: the dense FFN (of the layers without experts in a MoE model) */
    int32_t n_ctx_train; /* context_length */
    float norm_eps;      /* attention.layer_norm_rms_epsilon */
    struct ty_rope_config rope;
    /* mixture of experts (qwen3moe); n_expert == 0 for dense models */
    int32_t n_expert;      /* expert_count */
    int32_t n_expert_used; /* expert_used_count: experts per token (top-k) */
    int32_t n_ff_exp;      /* expert_feed_forward_length */
    bool expert_norm;      /* expert_weights_norm: renormalise the top-k router weights to sum to 1 */
    int32_t n_dense_ffn;   /* layers with a dense FFN (all of them in a dense model) */
};

struct ty_layer {
    struct ty_tensor *attn_norm; /* (n_embd) */
    struct ty_tensor *wq;        /* (n_embd, n_head * head_dim_k) */
    struct ty_tensor *wk;        /* (n_embd, n_head_kv * head_dim_k) */
    struct ty_tensor *wv;        /* (n_embd, n_head_kv * head_dim_v) */
    struct ty_tensor *bq;        /* (n_head * head_dim_k) or NULL */
    struct ty_tensor *bk;        /* (n_head_kv * head_dim_k) or NULL */
    struct ty_tensor *bv;        /* (n_head_kv * head_dim_v) or NULL */
    struct ty_tensor *q_norm;    /* (head_dim_k), qwen3 only, else NULL */
    struct ty_tensor *k_norm;    /* (head_dim_k), qwen3 only, else NULL */
    struct ty_tensor *wo;        /* (n_head * head_dim_v, n_embd) */
    struct ty_tensor *ffn_norm;  /* (n_embd) */
    struct ty_tensor *w_gate;    /* (n_embd, n_ff) */
    struct ty_tensor *w_up;      /* (n_embd, n_ff) */
    struct ty_tensor *w_down;    /* (n_ff, n_embd) */
    /* a MoE layer has these instead of w_gate, w_up, w_down (which are then NULL) */
    struct ty_tensor *ffn_gate_inp;  /* (n_embd, n_expert) the router */
    struct ty_tensor *ffn_gate_exps; /* (n_embd, n_ff_exp, n_expert) */
    struct ty_tensor *ffn_up_exps;   /* (n_embd, n_ff_exp, n_expert) */
    struct ty_tensor *ffn_down_exps; /* (n_ff_exp, n_embd, n_expert) */
};

struct ty_model {
    enum ty_arch arch;
    char *arch_name; /* "qwen2", "qwen3", "qwen3moe" */
    struct ty_hparams hp;
    struct ty_gguf *gguf; /* the mapped file the weights live in */
    struct ty_tokenizer *tok;
    struct ty_backend *be;
    struct ty_buffer *weights; /* the file's tensor data section (wrapped in place on host backends) */
    struct ty_buffer *small;   /* f32 copies of 1-D tensors stored otherwise in the file, or NULL */
    struct ty_tensor *tensors; /* (n_tensors) every weight the model uses; the pointers below point here */
    int n_tensors;
    int n_tensors_cap;
    struct ty_tensor *tok_embd;    /* (n_embd, n_vocab) */
    struct ty_tensor *output_norm; /* (n_embd) */
    struct ty_tensor *output;      /* (n_embd, n_vocab); token_embd when tied */
    struct ty_layer *layers;       /* (n_layer) */
    struct ty_rope rope;
};

/* Rows of logits computed per output step when every position's logits are asked for. */
#define TY_LOGITS_CHUNK 32

struct ty_context {
    struct ty_model *model;
    struct ty_backend *be;
    int32_t n_ctx;
    int32_t n_batch;
    int32_t n_past;
    enum ty_type kv_type;
    struct ty_buffer *kv_buf;
    struct ty_buffer *act_buf;
    struct ty_tensor *k_cache; /* (n_layer) each (head_dim_k, n_head_kv, n_ctx) */
    struct ty_tensor *v_cache; /* (n_layer) each (head_dim_v, n_head_kv, n_ctx) */
    /* activations, one column per token of a batch */
    struct ty_tensor ids;    /* (n_batch) I32 */
    struct ty_tensor pos;    /* (n_batch) I32 */
    struct ty_tensor x;      /* (n_embd, n_batch) the residual stream */
    struct ty_tensor xn;     /* (n_embd, n_batch) normed input of a block */
    struct ty_tensor q;      /* (head_dim_k, n_head, n_batch) */
    struct ty_tensor k;      /* (head_dim_k, n_head_kv, n_batch) */
    struct ty_tensor v;      /* (head_dim_v, n_head_kv, n_batch) */
    struct ty_tensor att;    /* (head_dim_v, n_head, n_batch) */
    struct ty_tensor proj;   /* (n_embd, n_batch) output of wo and w_down */
    struct ty_tensor gate;   /* (n_ff, n_batch) */
    struct ty_tensor up;     /* (n_ff, n_batch) */
    struct ty_tensor logits; /* (n_vocab, min(n_batch, TY_LOGITS_CHUNK)) */
    int32_t *host_pos;       /* (n_batch) staging for positions */
    /* mixture of experts (n_expert > 0 only): the tokens of a batch grouped by expert, expert after expert */
    struct ty_tensor router;    /* (n_expert, n_batch) router logits */
    struct ty_tensor moe_rows;  /* (n_batch * n_expert_used) I32 token column of each (expert, token) pair */
    struct ty_tensor moe_scale; /* (n_batch * n_expert_used) router weight of each pair */
    struct ty_tensor moe_x;     /* (n_embd, n_batch) the normed inputs of one expert's tokens */
    struct ty_tensor moe_gate;  /* (n_ff_exp, n_batch) */
    struct ty_tensor moe_up;    /* (n_ff_exp, n_batch) */
    struct ty_tensor moe_out;   /* (n_embd, n_batch) one expert's outputs */
    float *host_router;         /* (n_expert * n_batch) router logits read back for top-k */
    int32_t *host_sel;          /* (n_batch * n_expert_used) experts chosen per token */
    float *host_selw;           /* (n_batch * n_expert_used) their weights */
    int32_t *host_rows;         /* (n_batch * n_expert_used) staging for moe_rows */
    float *host_scale;          /* (n_batch * n_expert_used) staging for moe_scale */
    int32_t *host_count;        /* (n_expert + 1) tokens per expert, then start offsets */
};

/* Runs tokens[0..n) (n <= n_batch) at positions n_past.. through the model, appending to the KV cache. Logits:
 * `all` writes n rows to `logits`, else `last` writes the last row, else none. Does not advance n_past. */
enum ty_status ty__qwen_forward(struct ty_context *ctx, const int32_t *tokens, int32_t n, bool all, bool last,
                                float *logits);

#endif /* TY_MODEL_IMPL_H */
