/*
 * train.h - training Qwen3-architecture models in C: the op kernels behind a small function table (struct
 * ty_train_ops, backend style: the CPU implementation in ops.c is the first; a GPU backend provides the same entries
 * later, and the model code in train.c calls only the table), f32 master weights with gradients, the forward and
 * backward pass of a whole dense qwen3 model (embedding, RMSNorm, matmul, QK-norm, NeoX RoPE, causal attention with
 * GQA, SwiGLU, tied or untied output, cross-entropy), AdamW with warmup + cosine decay and global-norm clipping
 * (optim.c), checkpoints with exact resume (checkpoint.c) and the token data loader (data.c).
 *
 * Layout: activations are row-major with one row per token, (n_tokens, dim); a weight matrix is stored as GGUF and
 * PyTorch store it, (out, in) row-major, so y = x W^T. Every kernel computes each output element in a fixed order
 * whatever the thread count, so a run is reproducible bit for bit, and a kernel's result does not depend on how the
 * pool splits it.
 */
#ifndef TY_TRAIN_H
#define TY_TRAIN_H

#include "base/threads.h"
#include "chip/backend.h"

/* ==== Op table ==== */

#define TY_TRAIN_OPS_VERSION 3

/* Precision of the products of training (every gemm, and attention's q.k and p.v): f32, or mixed precision where
 * each operand is rounded to bf16 (nearest even) as it is packed and the products accumulate in f32, as
 * torch.autocast("cpu", dtype=torch.bfloat16) runs matmuls. Master weights, gradients, optimizer state, norms, softmax
 * and cross-entropy stay f32 either way, and so do the products' outputs. */
enum ty_train_precision { TY_TRAIN_PRECISION_F32 = 0, TY_TRAIN_PRECISION_BF16 = 1, TY_TRAIN_PRECISION_COUNT };

const char *ty__train_precision_name(enum ty_train_precision p); /* "f32", "bf16"; "unknown" out of range */
bool ty__train_precision_from_name(const char *name, enum ty_train_precision *out);

/* Kernels of training, each over a whole batch. `ctx` is the implementation's state (the CPU's is its thread pool).
 * Gradient outputs named `d*` accumulate (+=) unless the entry says it overwrites, so residual branches and
 * accumulation steps add into one buffer; callers zero them when a fresh value is wanted. */
struct ty_train_ops {
    int version; /* TY_TRAIN_OPS_VERSION */
    const char *name;
    /* TY_OK when products in `prec` can run here; TY_ERR_UNSUPPORTED saying why not (bf16 on a CPU without
     * AVX512_BF16). A kernel given a precision this refuses aborts (TY_ASSERT): callers ask first. */
    enum ty_status (*check_precision)(void *ctx, enum ty_train_precision prec);
    /* C[m, n] (+)= sum_k A[m * a_rs + k * a_cs] * B[k * b_rs + n * b_cs]: (M, K) x (K, N), A and B in any layout
     * (plain or transposed), C row-major, products in `prec`. Overwrites C unless `accumulate`. */
    void (*gemm)(void *ctx, int64_t M, int64_t N, int64_t K, const float *A, int64_t a_rs, int64_t a_cs, const float *B,
                 int64_t b_rs, int64_t b_cs, float *C, int64_t ldc, bool accumulate, enum ty_train_precision prec);
    /* dst (cols, rows) = src (rows, cols) transposed. */
    void (*transpose)(void *ctx, float *dst, const float *src, int64_t rows, int64_t cols);
    /* y = x * rstd * w over each row of `dim`; rstd (n_rows) = 1 / sqrt(mean(x^2) + eps), saved for the backward. */
    void (*rms_norm_fwd)(void *ctx, float *y, float *rstd, const float *x, const float *w, int64_t n_rows, int64_t dim,
                         float eps);
    /* dx += the gradient through the norm; dw += sum over rows of dy * x * rstd. */
    void (*rms_norm_bwd)(void *ctx, float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                         const float *w, int64_t n_rows, int64_t dim);
    /* NeoX RoPE in place on (n_tok, n_head, head_dim); token t has position pos[t]. `inverse` applies the transposed
     * rotation (the backward of the forward rotation). */
    void (*rope)(void *ctx, float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                 const struct ty_rope *rope, bool inverse);
    /* Causal attention of n_seq sequences of seq_len tokens: q (T, n_head, hd), k and v (T, n_head_kv, hd) -> out
     * (T, n_head, hd) (overwritten); p (n_seq, n_head, seq_len, seq_len) receives the softmax probabilities (f32).
     * The products (q.k, p.v) run in `prec`. TY_ERR_NO_MEMORY when the kernel's scratch cannot be allocated. */
    enum ty_status (*attn_fwd)(void *ctx, float *out, float *p, const float *q, const float *k, const float *v,
                               int64_t n_seq, int64_t seq_len, int64_t n_head, int64_t n_head_kv, int64_t hd,
                               float scale, enum ty_train_precision prec);
    /* dq, dk, dv are overwritten; the products run in `prec`. TY_ERR_NO_MEMORY as attn_fwd. */
    enum ty_status (*attn_bwd)(void *ctx, float *dq, float *dk, float *dv, const float *dout, const float *p,
                               const float *q, const float *k, const float *v, int64_t n_seq, int64_t seq_len,
                               int64_t n_head, int64_t n_head_kv, int64_t hd, float scale,
                               enum ty_train_precision prec);
    /* h = silu(g) * u over n elements. */
    void (*swiglu_fwd)(void *ctx, float *h, const float *g, const float *u, int64_t n);
    /* dg, du (overwritten) from dh. */
    void (*swiglu_bwd)(void *ctx, float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);
    /* Cross-entropy of each row of logits (n_rows, n_vocab) against targets: loss[r] = logsumexp - logit[target].
     * Overwrites the logits with their gradient times `grad_scale` ((softmax - onehot) * grad_scale) unless
     * grad_scale is 0. A target < 0 is ignored (loss 0, gradient 0). */
    void (*cross_entropy)(void *ctx, float *logits, float *loss, const int32_t *targets, int64_t n_rows,
                          int64_t n_vocab, float grad_scale);
};

/* The CPU implementation. Its ctx (ty__train_cpu_ctx_new) holds the thread pool (not owned) and the kernels' scratch,
 * kept from call to call, so one ctx serves one caller at a time; a NULL ctx runs every kernel on the calling thread.
 */
const struct ty_train_ops *ty__train_ops_cpu(void);
enum ty_status ty__train_cpu_ctx_new(struct ty_threadpool *pool, void **out);
void ty__train_cpu_ctx_free(void *ctx);

/* ==== Model ==== */

struct ty_train_config {
    int32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int32_t n_ctx; /* context_length written to the GGUF */
    float norm_eps;
    struct ty_rope_config rope; /* n_dims = head_dim */
    bool tied;                  /* output = token_embd */
};

struct ty_train_layer {
    float *attn_norm; /* (n_embd) */
    float *wq;        /* (n_head * head_dim, n_embd) */
    float *wk;        /* (n_head_kv * head_dim, n_embd) */
    float *wv;        /* (n_head_kv * head_dim, n_embd) */
    float *q_norm;    /* (head_dim) */
    float *k_norm;    /* (head_dim) */
    float *wo;        /* (n_embd, n_head * head_dim) */
    float *ffn_norm;  /* (n_embd) */
    float *w_gate;    /* (n_ff, n_embd) */
    float *w_up;      /* (n_ff, n_embd) */
    float *w_down;    /* (n_embd, n_ff) */
};

/* Pointers into one flat buffer of every parameter (or gradient), in GGUF tensor order. */
struct ty_train_weights {
    float *tok_embd;               /* (n_vocab, n_embd) */
    struct ty_train_layer *layers; /* (n_layer) */
    float *output_norm;            /* (n_embd) */
    float *output;                 /* (n_vocab, n_embd); == tok_embd when tied */
};

struct ty_train_tensor {
    char name[48]; /* GGUF name: "blk.0.attn_q.weight" */
    int n_dims;    /* 1 or 2 */
    int64_t ne[2]; /* GGUF order: ne[0] = in (row length), ne[1] = out */
    size_t offset; /* floats from the start of the flat buffer */
    size_t n;      /* elements */
    bool decay;    /* weight decay applies (matrices, not norms) */
};

/* Activations of one layer, saved by the forward for the backward. T = n_seq * seq_len tokens. */
struct ty_train_layer_acts {
    float *x_in;  /* (T, n_embd) residual stream entering the layer */
    float *xn1;   /* (T, n_embd) */
    float *rstd1; /* (T) */
    float *q;     /* (T, n_head * hd) before QK-norm */
    float *k;     /* (T, n_head_kv * hd) before QK-norm */
    float *v;     /* (T, n_head_kv * hd) */
    float *rstdq; /* (T * n_head) */
    float *rstdk; /* (T * n_head_kv) */
    float *qr;    /* (T, n_head * hd) normed and rotated */
    float *kr;    /* (T, n_head_kv * hd) */
    float *p;     /* (n_seq, n_head, seq_len, seq_len) attention probabilities */
    float *att;   /* (T, n_head * hd) */
    float *x_mid; /* (T, n_embd) residual after attention */
    float *xn2;   /* (T, n_embd) */
    float *rstd2; /* (T) */
    float *g;     /* (T, n_ff) */
    float *u;     /* (T, n_ff) */
    float *h;     /* (T, n_ff) silu(g) * u */
};

struct ty_train_model {
    struct ty_train_config cfg;
    struct ty_rope rope;
    struct ty_train_tensor *tensors; /* (n_tensors) */
    int n_tensors;
    size_t n_params;
    float *params; /* (n_params) f32 master weights */
    float *grads;  /* (n_params) */
    /* ty__train_zero_grads left the matrices that a product writes first (all but an untied token embedding) as they
     * were: the next backward writes them rather than adds (the same values, without zeroing 48 MB a step) */
    bool grads_fresh;
    struct ty_train_weights w, g; /* views of params, grads */
    const struct ty_train_ops *ops;
    void *ops_ctx;
    struct ty_threadpool *pool;
    enum ty_train_precision precision; /* of the products; f32 unless ty__train_model_set_precision */
    /* activations for n_seq sequences of seq_len tokens (sized by ty__train_model_reserve) */
    int64_t n_seq, seq_len;
    struct ty_train_layer_acts *acts; /* (n_layer) */
    float *x_final;                   /* (T, n_embd) residual leaving the last layer */
    float *xf;                        /* (T, n_embd) normed */
    float *rstdf;                     /* (T) */
    float *logits;                    /* (T, n_vocab); the gradient after the backward */
    float *loss_row;                  /* (T) */
    int32_t *pos;                     /* (T) position of each token */
    int32_t *tokens;                  /* (T) inputs of the current batch */
    int32_t *targets;                 /* (T) */
    float *act_mem;                   /* one allocation holding every activation */
    /* backward scratch */
    float *dx, *dxn, *dq, *dk, *dv, *datt, *dg, *du, *dh, *dtmp;
    float *bwd_mem;
};

/* A model with every tensor allocated (values zero): ty__train_model_init_random or a load fills them. `n_threads`
 * 0 = one per core. Free with ty__train_model_free. */
enum ty_status ty__train_model_init(const struct ty_train_config *cfg, int n_threads, struct ty_train_model **out);
void ty__train_model_free(struct ty_train_model *m);
/* Fills the parameters as Hugging Face initialises Qwen3: matrices ~ N(0, std^2), norms = 1. Reproducible from
 * `seed` alone. */
void ty__train_model_init_random(struct ty_train_model *m, uint64_t seed, float std);
/* Loads a dense qwen3 GGUF (any weight type, dequantised to f32) into a new trainable model. */
enum ty_status ty__train_model_load_gguf(const char *path, int n_threads, struct ty_train_model **out,
                                         struct ty_tokenizer **tok_out);
/* Writes the model as an f32 GGUF that ty_model_load reads, with `tok`'s tokenizer, which is padded in place with
 * unused tokens up to n_vocab when it has fewer (as convert does). Written under a temporary name, then renamed. */
enum ty_status ty__train_model_save_gguf(const struct ty_train_model *m, struct ty_tokenizer *tok, const char *name,
                                         const char *path);
/* The precision of the model's products from now on (forward, backward and evaluation). TY_ERR_UNSUPPORTED, with
 * the model unchanged, when the backend cannot run it here (bf16 needs AVX512_BF16, and a TY_CPU_ISA path that has
 * it): the caller fails rather than silently training in another precision. */
enum ty_status ty__train_model_set_precision(struct ty_train_model *m, enum ty_train_precision p);
/* Sizes the activation buffers for batches of n_seq x seq_len tokens (reallocates only when larger). */
enum ty_status ty__train_model_reserve(struct ty_train_model *m, int64_t n_seq, int64_t seq_len);

/* Forward pass over tokens (n_seq, seq_len + 1): inputs are columns 0..seq_len-1, targets 1..seq_len (a target < 0
 * is ignored). Returns the mean loss over counted targets in *loss; logits stay in m->logits. */
enum ty_status ty__train_forward(struct ty_train_model *m, const int32_t *tokens, int64_t n_seq, int64_t seq_len,
                                 double *loss, int64_t *n_counted);
/* Forward + backward: gradients are ADDED into m->grads with the loss scaled by `grad_scale` (1/n_accum for
 * accumulation over micro-batches); after ty__train_zero_grads the first call's gradients are the whole value. */
enum ty_status ty__train_forward_backward(struct ty_train_model *m, const int32_t *tokens, int64_t n_seq,
                                          int64_t seq_len, float grad_scale, double *loss);
/* Gradients to zero, in meaning: see grads_fresh. */
void ty__train_zero_grads(struct ty_train_model *m);
/* Parameters of the model (tied embeddings once). */
size_t ty__train_n_params(const struct ty_train_model *m);
/* Training FLOPs per token of a sequence of seq_len (6 per weight use + attention), for MFU. */
double ty__train_flops_per_token(const struct ty_train_config *cfg, int64_t seq_len);

/* ==== Optimizer ==== */

struct ty_train_optim_params {
    double lr;           /* peak learning rate */
    double lr_min;       /* floor of the cosine decay */
    int64_t warmup;      /* steps of linear warmup from lr/warmup to lr */
    int64_t total_steps; /* the cosine reaches lr_min here */
    double beta1, beta2, eps;
    double weight_decay; /* decoupled, on matrices only */
    double clip;         /* global gradient norm limit; <= 0 = off */
};

struct ty_train_optim {
    struct ty_train_optim_params p;
    int64_t step; /* steps taken */
    float *m;     /* (n_params) first moment */
    float *v;     /* (n_params) second moment */
};

struct ty_train_optim_params ty__train_optim_default_params(void);
enum ty_status ty__train_optim_init(struct ty_train_optim *o, const struct ty_train_model *m,
                                    const struct ty_train_optim_params *p);
/* The same for any parameter set of n_params floats (LoRA adapters). */
enum ty_status ty__train_optim_init_n(struct ty_train_optim *o, size_t n_params, const struct ty_train_optim_params *p);
void ty__train_optim_free(struct ty_train_optim *o);
/* Learning rate of step `step` (0-based): linear warmup lr * (step + 1) / warmup, then cosine to lr_min. */
double ty__train_lr(const struct ty_train_optim_params *p, int64_t step);
/* The global L2 norm of the gradients (f64 sum of per-tensor f32 squares, as torch's clip_grad_norm_). */
double ty__train_grad_norm(const struct ty_train_model *m);
/* One AdamW step (torch.optim.AdamW's arithmetic) after clipping. Returns the
 * gradient norm before clipping in *grad_norm and the learning rate used in *lr. */
void ty__train_optim_step(struct ty_train_optim *o, struct ty_train_model *m, double *grad_norm, double *lr);
/* One clipped AdamW step of any parameter set laid out by `tensors` (offsets into params and grads). */
void ty__train_optim_update(struct ty_train_optim *o, struct ty_threadpool *pool, const struct ty_train_tensor *tensors,
                            int n_tensors, float *params, const float *grads, double *grad_norm, double *lr);

/* ==== Vocabulary ==== */

/* A tokenizer of `full`'s first n_base tokens, first n_base - 256 merges and all its special tokens renumbered after
 * them (vocab.c). TY_ERR_UNSUPPORTED for a tokenizer whose token 256 + i is not merge i's product. `tmp_dir` holds two
 * temporary files during the call. Free with ty_tokenizer_free. */
enum ty_status ty__train_vocab_cut(const struct ty_tokenizer *full, int32_t n_base, const char *tmp_dir,
                                   struct ty_tokenizer **out);

/* ==== Checkpoints ==== */

/* What must match for a resume to continue the same run. */
struct ty_train_run_id {
    uint64_t seed;
    int64_t n_seq, seq_len, accum;
    struct ty_train_optim_params optim;
    uint64_t data_hash; /* of the token shard */
    enum ty_train_precision precision;
};

/* Writes params, Adam moments, step and run id (precision included), with a checksum, atomically (temporary file +
 * rename). */
enum ty_status ty__train_checkpoint_save(const char *path, const struct ty_train_model *m,
                                         const struct ty_train_optim *o, const struct ty_train_run_id *id);
/* Reads a checkpoint into a model of the same config and an optimizer. A corrupt or truncated file, another model
 * shape, or a run id differing from `id` is a clear TY_ERR_FORMAT / TY_ERR_INVALID_ARG error naming the field. */
enum ty_status ty__train_checkpoint_load(const char *path, struct ty_train_model *m, struct ty_train_optim *o,
                                         const struct ty_train_run_id *id);

#endif /* TY_TRAIN_H */
