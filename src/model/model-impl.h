/*
 * model-impl.h - what model.c (loading), context.c (KV cache, evaluation) and qwen.c (the forward pass) share: the
 * hyperparameters, the weights as backend tensors, and a context's cache and activations. Everything is sized when
 * the model or context is made; a forward pass allocates nothing.
 */
#ifndef TY_MODEL_IMPL_H
#define TY_MODEL_IMPL_H

#include "chip/backend.h"
#include "model/gguf.h"

enum ty_arch {
    TY_ARCH_QWEN2 = 0,
    TY_ARCH_QWEN3 = 1,
    TY_ARCH_QWEN3MOE = 2,
    TY_ARCH_QWEN3NEXT = 3,
    TY_ARCH_QWEN35 = 4,
    TY_ARCH_QWEN35MOE = 5,
    TY_ARCH_COUNT
};

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
    /* hybrid linear attention (qwen3next, qwen-next.c); full_attn_interval == 0 for the others */
    int32_t full_attn_interval; /* full_attention_interval: layer il has full attention iff (il + 1) % it == 0 */
    int32_t n_recurrent;        /* Gated DeltaNet layers */
    int32_t ssm_conv_kernel;    /* ssm.conv_kernel */
    int32_t ssm_head_k;         /* ssm.group_count: key (and query) heads */
    int32_t ssm_head_v;         /* ssm.time_step_rank: value heads, a multiple of ssm_head_k */
    int32_t ssm_dim_k;          /* ssm.state_size: key head dimension */
    int32_t ssm_dim_v;          /* ssm.inner_size / time_step_rank: value head dimension */
    int32_t n_ff_shexp;         /* expert_shared_feed_forward_length; 0 = no shared expert */
    bool ssm_v_tiled; /* qwen35: value head h reads key head h % ssm_head_k (llama.cpp's order), not h / (hv / hk) */
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
    /* hybrid models (qwen3next): a Gated DeltaNet layer has these instead of wq..wo (whose wq is then
     * (n_embd, 2 * n_head * head_dim_k): per head the query, then its output gate) */
    bool recurrent;
    struct ty_tensor *ssm_in;     /* legacy qwen3next files: (n_embd, 2 * hk * dk + 2 * hv * dv) per key head
                                     [q, k, v.., z..]; NULL when ssm_qkv and ssm_gate hold it (llama.cpp's layout) */
    struct ty_tensor *ssm_ba;     /* (n_embd, 2 * hv) per key head [beta.., alpha..] (qwen3next) */
    struct ty_tensor *ssm_conv1d; /* (conv_kernel, 2 * hk * dk + hv * dv) F32 */
    struct ty_tensor *ssm_dt;     /* (hv) dt_bias */
    struct ty_tensor *ssm_a;      /* (hv) -exp(A_log) */
    struct ty_tensor *ssm_norm;   /* (dv) the gated output norm */
    struct ty_tensor *ssm_out;    /* (hv * dv, n_embd) */
    /* separate projections: qwen3next (with ssm_ba) and qwen35 (with ssm_beta/ssm_alpha, value heads tiled) */
    struct ty_tensor *ssm_qkv;   /* (n_embd, 2 * hk * dk + hv * dv) [q | k | v] */
    struct ty_tensor *ssm_gate;  /* (n_embd, hv * dv) z */
    struct ty_tensor *ssm_beta;  /* (n_embd, hv) */
    struct ty_tensor *ssm_alpha; /* (n_embd, hv) */
    /* the shared expert of a MoE layer (qwen3next), or NULL */
    struct ty_tensor *ffn_gate_inp_shexp; /* (n_embd) its sigmoid gate */
    struct ty_tensor *ffn_gate_shexp;     /* (n_embd, n_ff_shexp) */
    struct ty_tensor *ffn_up_shexp;       /* (n_embd, n_ff_shexp) */
    struct ty_tensor *ffn_down_shexp;     /* (n_ff_shexp, n_embd) */
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
    struct ty_lora_applied *lora; /* the adapter applied at load (train/lora.c), or NULL */
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
    struct ty_tensor ids;      /* (n_batch) I32 */
    struct ty_tensor pos;      /* (n_batch) I32 */
    struct ty_tensor x;        /* (n_embd, n_batch) the residual stream */
    struct ty_tensor xn;       /* (n_embd, n_batch) normed input of a block */
    struct ty_tensor q;        /* (head_dim_k, n_head, n_batch) */
    struct ty_tensor k;        /* (head_dim_k, n_head_kv, n_batch) */
    struct ty_tensor v;        /* (head_dim_v, n_head_kv, n_batch) */
    struct ty_tensor att;      /* (head_dim_v, n_head, n_batch) */
    struct ty_tensor proj;     /* (n_embd, n_batch) output of wo and w_down */
    struct ty_tensor gate;     /* (n_ff, n_batch) */
    struct ty_tensor up;       /* (n_ff, n_batch) */
    struct ty_tensor logits;   /* (n_vocab, min(n_batch, TY_LOGITS_CHUNK)) */
    struct ty_buffer *out_buf; /* NULL, or the caller's logits memory of the last call, wrapped (see qwen.c) */
    int32_t *host_pos;         /* (n_batch) staging for positions */
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
    /* NULL: attention reads and writes this context's own k_cache/v_cache; else the paged multi-sequence batch being
     * run (batch.c), whose KV lives in a shared block pool */
    struct ty_paged_run *paged;
    /* hybrid models: the recurrent state of the linear-attention layers and their activations (qwen-next.c), else
     * NULL */
    struct ty_next_state *next;
};

/* Lays tensors out one after another, 64-byte aligned, in a buffer that does not exist yet (context.c): each
 * ty__layout_place sets a tensor's offset to the running size; the caller then allocates `size` bytes and points the
 * tensors' .buf at that buffer. `overflow` is set when the size does not fit a size_t. */
struct ty_layout {
    size_t size;
    bool overflow;
};
void ty__layout_place(struct ty_layout *lay, struct ty_tensor *t, enum ty_type type, int64_t ne0, int64_t ne1,
                      int64_t ne2);

/* Runs tokens[0..n) (n <= n_batch) at positions n_past.. through the model, appending to the KV cache. Logits:
 * `all` writes n rows to `logits`, else `last` writes the last row, else none. Does not advance n_past. */
enum ty_status ty__qwen_forward(struct ty_context *ctx, const int32_t *tokens, int32_t n, bool all, bool last,
                                float *logits);
/* The expert FFN (router, top-k, grouped experts) of normed columns xn (n_embd, n), added into x (qwen.c). */
enum ty_status ty__qwen_moe(struct ty_context *ctx, const struct ty_layer *l, int32_t n, const struct ty_tensor *xn,
                            const struct ty_tensor *x);

/* ==== Hybrid linear-attention models (qwen-next.c) ====
 * A context of a hybrid model keeps, per Gated DeltaNet layer, a conv state and a delta-rule state instead of KV. That
 * state cannot be rewound, so the context also keeps the tokens it has seen, and going back (ty_context_truncate, a
 * failed evaluation) recomputes the state from the start. */

/* Allocates ctx->next for a hybrid model (nothing for the others). */
enum ty_status ty__next_context_init(struct ty_context *ctx);
void ty__next_context_free(struct ty_context *ctx);
/* Layer il of a hybrid model over the batch's n columns (ty__qwen_forward's per-layer step). */
enum ty_status ty__next_layer_forward(struct ty_context *ctx, int il, int32_t n, const struct ty_tensor *pos);
/* Remembers tokens[0..n) as the ones at positions n_past.. (called before they are evaluated). */
void ty__next_record(struct ty_context *ctx, const int32_t *tokens, int32_t n);
/* Makes the context hold its first n_past positions (n_past <= ctx->n_past): clears the recurrent state and, when
 * n_past > 0, evaluates the remembered tokens again. */
enum ty_status ty__next_rewind(struct ty_context *ctx, int32_t n_past);

/* ==== Paged multi-sequence forward (batch.c, qwen.c) ====
 * The serving engine runs the tokens of many sequences as one batch: every matrix product runs once over the whole
 * batch, and attention runs per sequence over the KV blocks its block table names in one shared pool. */

/* The paged KV pool: per layer, keys and values of n_blocks blocks of `block` positions, F16. Row `id * block + i`
 * holds position i of physical block id. */
struct ty_kv_pool {
    struct ty_buffer *buf;
    struct ty_tensor *k; /* (n_layer) each (head_dim_k, n_head_kv, n_blocks * block) */
    struct ty_tensor *v; /* (n_layer) each (head_dim_v, n_head_kv, n_blocks * block) */
    int32_t n_layer, n_blocks, block;
};

/* Bytes of KV one position takes in a pool of `model`. */
size_t ty__kv_pool_bytes_per_token(const struct ty_model *model);
enum ty_status ty__kv_pool_init(struct ty_model *model, int32_t n_blocks, int32_t block, struct ty_kv_pool **out);
void ty__kv_pool_free(struct ty_kv_pool *pool);

/* One sequence of a batch: n_tokens new tokens at positions pos.., whose KV goes to (and whose attention reads) the
 * blocks of `blocks` (covering pos + n_tokens positions). */
struct ty_batch_seq {
    const int32_t *tokens;
    int32_t n_tokens, pos;
    const int32_t *blocks;
    int32_t n_blocks;
    float *logits; /* (n_vocab) out: the last token's logits, or NULL for none */
};

/* The architectures the paged forward runs (dense and MoE Qwen2/Qwen3). Others, such as the hybrid linear-attention
 * models whose per-sequence state is not a KV cache, run one ty_context per sequence instead. */
bool ty__batch_supported(const struct ty_model *model);

/* What runs batches over a pool: the activations of up to `max_tokens` tokens and `max_seqs` sequences of up to
 * `n_ctx` positions. The pool must outlive it. */
struct ty_batch;
enum ty_status ty__batch_init(struct ty_model *model, struct ty_kv_pool *pool, int32_t max_tokens, int32_t max_seqs,
                              int32_t n_ctx, struct ty_batch **out);
void ty__batch_free(struct ty_batch *b);
/* Copies the KV of physical block `from` to block `to`, every layer (copy-on-write of a shared block). */
enum ty_status ty__batch_copy_block(struct ty_batch *b, int32_t from, int32_t to);
/* Runs the sequences' tokens through the model as one batch, appending their KV to their blocks. A sequence's numbers
 * do not depend on the rest of the batch as long as the backend's matrix product is batch-invariant. */
enum ty_status ty__batch_forward(struct ty_batch *b, const struct ty_batch_seq *seqs, int32_t n_seqs);

/* The paged attention step of layer `il` (batch.c): writes k, v (the batch's new keys and values) into the pool and
 * attends q over each sequence's blocks into att. */
enum ty_status ty__paged_attend(struct ty_context *ctx, int il, const struct ty_tensor *q, const struct ty_tensor *k,
                                const struct ty_tensor *v, const struct ty_tensor *att);
/* The same step for one sequence's own cache (qwen.c): k, v (head_dim, n_head_kv, n) go to layer il's k_cache and
 * v_cache at position n_past, and q attends causally over positions 0 .. n_past + n - 1 into att. */
enum ty_status ty__cache_attend(struct ty_context *ctx, int il, const struct ty_tensor *q, const struct ty_tensor *k,
                                const struct ty_tensor *v, const struct ty_tensor *att);
/* The forward pass of n tokens (n <= n_batch) at the given positions with ctx->paged set: token embedding, every
 * layer, and the logits of token column out_cols[i] written to logits[i] (n_vocab floats), i < n_out. */
enum ty_status ty__qwen_forward_batch(struct ty_context *ctx, const int32_t *tokens, const int32_t *pos, int32_t n,
                                      const int32_t *out_cols, int32_t n_out, float *const *logits);
/* A context with activations for batches of n_batch tokens and no KV cache of its own (context.c), for batch.c. */
enum ty_status ty__context_init_paged(struct ty_model *model, int32_t n_batch, struct ty_context **out);

#endif /* TY_MODEL_IMPL_H */
