/*
 * model-impl.h - what model.c (loading), context.c (KV cache, evaluation) and qwen.c (the forward pass) share: the
 * hyperparameters, the weights as backend tensors, and a context's cache and activations. Everything is sized when
 * the model or context is made; a forward pass allocates nothing.
 */
#ifndef TY_MODEL_IMPL_H
#define TY_MODEL_IMPL_H

#include "chip/backend.h"
#include "model/gguf.h"

enum ty_arch { TY_ARCH_QWEN2 = 0, TY_ARCH_QWEN3 = 1, TY_ARCH_COUNT };

struct ty_hparams {
    int32_t n_vocab; /* rows of token_embd (may exceed the tokenizer's vocabulary: padding) */
    int32_t n_embd;  /* hidden size */
    int32_t n_layer;
    int32_t n_head;      /* query heads */
    int32_t n_head_kv;   /* key/value heads (GQA groups) */
    int32_t head_dim_k;  /* attention.key_length */
    int32_t head_dim_v;  /* attention.value_length */
    int32_t n_ff;        /* feed_forward_length */
    int32_t n_ctx_train; /* context_length */
    float norm_eps;      /* attention.layer_norm_rms_epsilon */
    struct ty_rope_config rope;
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
};

struct ty_model {
    enum ty_arch arch;
    char *arch_name; /* "qwen2", "qwen3" */
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
};

/* Runs tokens[0..n) (n <= n_batch) at positions n_past.. through the model, appending to the KV cache. Logits:
 * `all` writes n rows to `logits`, else `last` writes the last row, else none. Does not advance n_past. */
enum ty_status ty__qwen_forward(struct ty_context *ctx, const int32_t *tokens, int32_t n, bool all, bool last,
                                float *logits);

#endif /* TY_MODEL_IMPL_H */
