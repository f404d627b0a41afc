/*
 * backend.h - the chip layer's compute interface: buffers, tensors that view them, and the ops a Qwen forward pass
 * needs, at the granularity a GPU would want (one call per matrix product, per attention, per norm over a batch).
 *
 * A backend is `{iface, ctx}`: a table of documented function pointers with a version, and the backend's own state.
 * Model code never touches the table; it calls the inline wrappers at the end of this file (`ty__backend_matmul(be,
 * ...)`), which check shapes and types once for every backend and apply the stated fallback when an optional entry is
 * NULL. Backends are found by name through the registry (registry.c), the only place that knows which are compiled in.
 *
 * Execution model: ops are issued in order and may run asynchronously; a backend must execute them as if one after
 * another. ty__backend_tensor_get() and ty__backend_sync() wait for every op issued before them. Host memory passed
 * to tensor_set may be reused as soon as the call returns.
 *
 * Tensors: up to 4 dimensions, ne[0] fastest. Rows (dimension 0) are always contiguous (nb[0] is the element size,
 * or the block size for quantised types); the other dimensions may have any stride, so a slice of a KV cache or one
 * column of a batch is a view, not a copy. Activations are F32; weights may be any type of quant.h; the KV cache is
 * F32 or F16.
 *
 * Adding an op: add the entry at the end of the iface (bumping TY_BACKEND_IFACE_VERSION), give it a wrapper that
 * checks shapes, implement it in cpu/ as the plain reference, and compare every other backend against that.
 */
#ifndef TY_BACKEND_H
#define TY_BACKEND_H

#include "base/base.h"

#define TY_BACKEND_IFACE_VERSION 5
#define TY_TENSOR_MAX_DIMS       4
#define TY_ROPE_MAX_DIMS         512 /* rotated dimensions per head */
#define TY_ATTN_MAX_HEAD_DIM     512
#define TY_GDN_MAX_HEAD_DIM      256 /* key and value dimensions per head of a gated delta rule */
#define TY_GDN_CHUNK             64  /* steps per chunk of the chunked gated delta rule (transformers' chunk_size) */

struct ty_backend;

/* ==== Buffers and tensors ==== */

/* A block of backend memory. Allocated and freed through the backend (ty__backend_buffer_alloc/_wrap/_free). */
struct ty_buffer {
    struct ty_backend *backend;
    void *data;   /* the backend's address of byte 0: a host pointer on host backends, a device pointer on a GPU */
    size_t size;  /* bytes */
    bool host;    /* `data` is host memory that the CPU may read and write directly */
    bool wrapped; /* `data` belongs to the caller (ty__backend_buffer_wrap); freeing the buffer leaves it alone */
    void *priv;   /* the backend's own per-buffer state */
};

/* A typed view of part of a buffer. Plain value: copying a tensor copies the view, never the data. */
struct ty_tensor {
    enum ty_type type;
    int64_t ne[TY_TENSOR_MAX_DIMS]; /* elements per dimension, ne[0] fastest; unused dimensions are 1 */
    size_t nb[TY_TENSOR_MAX_DIMS];  /* byte strides; nb[0] = bytes of one element (one block if quantised) */
    struct ty_buffer *buf;
    size_t offs; /* byte offset of element 0 in buf */
};

/* Fills `t` as a contiguous tensor of shape ne0 x ne1 x ne2 x ne3 at byte `offs` of `buf`. */
void ty__tensor_init(struct ty_tensor *t, struct ty_buffer *buf, size_t offs, enum ty_type type, int64_t ne0,
                     int64_t ne1, int64_t ne2, int64_t ne3);
int64_t ty__tensor_nelements(const struct ty_tensor *t);
int64_t ty__tensor_nrows(const struct ty_tensor *t); /* ne[1] * ne[2] * ne[3] */
/* Bytes a contiguous tensor of this shape occupies. */
size_t ty__tensor_size(const struct ty_tensor *t);
bool ty__tensor_is_contiguous(const struct ty_tensor *t);
bool ty__tensor_same_shape(const struct ty_tensor *a, const struct ty_tensor *b);
/* The view of indices [first, first + n) along dimension `dim`. */
struct ty_tensor ty__tensor_slice(const struct ty_tensor *t, int dim, int64_t first, int64_t n);
/* A KV cache tensor (head_dim, n_kv_heads, n_pos), contiguous as placed, re-strided in place so that the positions of
 * one KV head are adjacent rows (nb[2] one row, nb[1] n_pos rows) over the same bytes: attention runs a unit per KV
 * head and streams that head's keys and values, which with positions outermost were rows of head_dim among
 * n_kv_heads times as many (one 4.6-6 GB/s stream a core on the 2-core Zen 4 VM where a contiguous one reads 25).
 * Views of it (ty__tensor_slice along positions) keep the strides; row access goes through ty__tensor_row. */
void ty__kv_cache_head_major(struct ty_tensor *t);
/* Bytes of K or V one cached position holds over all KV heads, whatever the cache's strides. */
static inline double ty__kv_position_bytes(const struct ty_tensor *t) {
    return t->ne[2] > 0 ? (double)ty__tensor_size(t) / (double)t->ne[2] : 0;
}
/* The same contiguous data seen with another shape of as many elements. */
struct ty_tensor ty__tensor_reshape(const struct ty_tensor *t, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
/* Host address of element 0; only for tensors in host buffers (backend kernels, tests). */
static inline void *ty__tensor_host(const struct ty_tensor *t) {
    TY_ASSERT(t->buf && t->buf->host);
    return (char *)t->buf->data + t->offs;
}
/* Host address of row (i1, i2, i3). */
static inline void *ty__tensor_row(const struct ty_tensor *t, int64_t i1, int64_t i2, int64_t i3) {
    return (char *)ty__tensor_host(t) + (size_t)i1 * t->nb[1] + (size_t)i2 * t->nb[2] + (size_t)i3 * t->nb[3];
}

/* ==== Op parameters ==== */

enum ty_rope_scaling {
    TY_ROPE_SCALING_NONE = 0,
    TY_ROPE_SCALING_LINEAR = 1, /* positions divided by `factor` */
    TY_ROPE_SCALING_YARN = 2,   /* YaRN (arXiv:2309.00071) as Hugging Face transformers computes it */
    TY_ROPE_SCALING_COUNT
};

/* RoPE as a model describes it. */
struct ty_rope_config {
    int32_t n_dims;  /* rotated dimensions at the start of each head (even, <= TY_ROPE_MAX_DIMS) */
    float freq_base; /* theta */
    enum ty_rope_scaling scaling;
    float factor;      /* context extension factor (linear, YaRN) */
    int32_t orig_ctx;  /* YaRN: context length the model was trained with before extension */
    float beta_fast;   /* YaRN: rotations at which interpolation starts; 0 = 32 */
    float beta_slow;   /* YaRN: rotations at which it is complete; 0 = 1 */
    float attn_factor; /* YaRN: multiplier of cos and sin; 0 = 0.1 * ln(factor) + 1 */
};

/* RoPE as the op applies it: NeoX style (dimension i pairs with i + n_dims/2), angle = pos * inv_freq[i] rounded to
 * f32, rotated values scaled by attn_factor. Computed once from a ty_rope_config by ty__rope_init. */
struct ty_rope {
    int32_t n_dims;
    float attn_factor;
    float inv_freq[TY_ROPE_MAX_DIMS / 2]; /* (n_dims / 2) */
};

/* Derives the per-pair frequencies, as Hugging Face transformers' _compute_*_rope_parameters do (in f32 where they
 * compute in f32). TY_ERR_INVALID_ARG (with a message) for an impossible configuration. */
enum ty_status ty__rope_init(const struct ty_rope_config *cfg, struct ty_rope *out);

struct ty_attn {
    float scale;  /* multiplies q.k; 1/sqrt(head_dim) for Qwen */
    int32_t pos0; /* cache position of the first query: query t sees keys 0 .. pos0 + t (causal) */
};

/* Where a batch of sequences finds its keys in a paged KV pool. Sequence s owns query columns [col, col + n) of the
 * batch; its query t sits at position pos0 + t and sees keys 0 .. pos0 + t; its key at position p is row
 * table_s[p / block] * block + p % block of the pool. The descriptors are host arrays (a device backend uploads them;
 * they are small). */
struct ty_paged_seq {
    int32_t col, n, pos0;
    int32_t n_blocks;     /* entries of `table` (>= blocks covering pos0 + n positions) */
    const int32_t *table; /* (n_blocks) physical block ids */
};
struct ty_paged_attn {
    float scale;   /* multiplies q.k */
    int32_t block; /* positions per KV block */
    int32_t n_seqs;
    const struct ty_paged_seq *seqs; /* (n_seqs) */
    /* Scratch for the fallback of a backend without attention_paged, else unused (may be NULL): gather_k (dk *
     * n_kv_head, >= longest pos0 + n) and gather_v (dv * n_kv_head, same) F32, gather_ids (>= the same) I32, and
     * host_ids, a host array of as many int32. */
    const struct ty_tensor *gather_k, *gather_v, *gather_ids;
    int32_t *host_ids;
};

/* ==== The interface ==== */

/* A layer's attention input (attn_input): xn = rms_norm(x, norm, eps); q, k, v = wq xn (+ bq), wk xn (+ bk),
 * wv xn (+ bv); then each head of q (and of k) RMS-normed with q_norm (k_norm) when that is not NULL, and rotated
 * (NeoX RoPE) at its token's position. */
struct ty_attn_input {
    const struct ty_tensor *q, *k, *v;       /* (n_head * head_dim, n) and so on: the products' outputs, F32 */
    const struct ty_tensor *q3, *k3;         /* q and k again as (head_dim, n_head, n), for the per-head steps */
    const struct ty_tensor *wq, *wk, *wv;    /* (n_embd, rows) weights */
    const struct ty_tensor *bq, *bk, *bv;    /* (rows) F32 biases, or NULL */
    const struct ty_tensor *x;               /* (n_embd, n) F32 residual stream */
    const struct ty_tensor *norm;            /* (n_embd) F32 input norm weight */
    const struct ty_tensor *q_norm, *k_norm; /* (head_dim) F32 or NULL */
    float eps;
    const struct ty_tensor *pos; /* (n) I32 */
    const struct ty_rope *rope;
    const struct ty_tensor *xn; /* (n_embd, n) F32 scratch; content afterwards unspecified */
};

/* A layer's attention output (the second half of attn_block): the batch's keys and values written into the cache,
 * attention over it, and the output projection added to the residual stream: k_new = k, v_new = v (converted to the
 * cache's type); att = attention(q, k_all, v_all, attn); x = x + wo att. */
struct ty_attn_output {
    const struct ty_tensor *x;             /* (n_embd, n) F32 residual stream, updated in place */
    const struct ty_tensor *wo;            /* (n_head * dv, n_embd) weight */
    const struct ty_tensor *q, *k, *v;     /* (dk, n_head, n), (dk, n_kv_head, n), (dv, n_kv_head, n) F32 */
    const struct ty_tensor *k_new, *v_new; /* the cache's rows of the batch (k's and v's shapes), F32 or F16 */
    const struct ty_tensor *k_all, *v_all; /* the cache's rows attention reads: every position up to the batch's last */
    struct ty_attn attn;
    const struct ty_tensor *att;  /* (dv, n_head, n) F32 contiguous scratch: attention's output */
    const struct ty_tensor *proj; /* (n_embd, n) F32 scratch; content afterwards unspecified */
};

/* A layer's feed-forward block (ffn): x = x + w_down (silu(w_gate xn) * (w_up xn)), xn = rms_norm(x, norm, eps). */
struct ty_ffn {
    const struct ty_tensor *x;    /* (n_embd, n) F32 residual stream, updated in place */
    const struct ty_tensor *norm; /* (n_embd) F32 */
    float eps;
    const struct ty_tensor *w_gate, *w_up, *w_down; /* (n_embd, n_ff), (n_embd, n_ff), (n_ff, n_embd) weights */
    /* F32 scratch whose content afterwards is unspecified: xn, proj (n_embd, n); gate, up (n_ff, n) */
    const struct ty_tensor *xn, *gate, *up, *proj;
};

struct ty_backend_iface {
    uint32_t version; /* TY_BACKEND_IFACE_VERSION of the header the backend was built against */
    const char *name; /* registry name, e.g. "cpu-ref" */

    /* Frees the backend and its ctx. Every buffer must have been freed before. */
    void (*free)(struct ty_backend *be);

    /* ---- memory ---- */
    /* Allocates `size` bytes (64-byte aligned, contents undefined): sets buf->data, buf->host and buf->priv. */
    enum ty_status (*buffer_alloc)(struct ty_backend *be, struct ty_buffer *buf, size_t size);
    /* Optional. Makes a buffer of caller-owned host memory (weights mapped from a file) without copying: sets
     * buf->data, buf->host, buf->priv. NULL: the wrapper allocates a buffer and uploads a copy (a GPU backend). */
    enum ty_status (*buffer_wrap)(struct ty_backend *be, struct ty_buffer *buf, void *host, size_t size);
    /* Releases what buffer_alloc or buffer_wrap set up (never the caller's memory of a wrapped buffer). */
    void (*buffer_free)(struct ty_backend *be, struct ty_buffer *buf);
    /* Copies `size` bytes from host `src` to byte `offset` of the contiguous tensor `t`. */
    enum ty_status (*tensor_set)(struct ty_backend *be, const struct ty_tensor *t, const void *src, size_t offset,
                                 size_t size);
    /* Waits for pending ops, then copies `size` bytes at byte `offset` of the contiguous tensor `t` to host `dst`. */
    enum ty_status (*tensor_get)(struct ty_backend *be, const struct ty_tensor *t, void *dst, size_t offset,
                                 size_t size);
    /* Optional. Waits until every issued op has finished. NULL: ops are synchronous. */
    enum ty_status (*sync)(struct ty_backend *be);

    /* ---- ops (shapes are checked by the wrappers; "may alias" means dst may be the same view as that input) ---- */
    /* dst[:, t] = row ids[t] of w, converted to f32. dst (n_embd, n) F32; w (n_embd, n_rows) any weight type;
     * ids (n) I32, each in [0, n_rows). */
    enum ty_status (*get_rows)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *w,
                               const struct ty_tensor *ids);
    /* Per row r of x: dst_r = w * (x_r / sqrt(mean(x_r^2) + eps)), in f32 as HF's RMSNorm. x, dst (d, ...) F32;
     * w (d) F32. dst may alias x. */
    enum ty_status (*rms_norm)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *x,
                               const struct ty_tensor *w, float eps);
    /* dst[o, t] = sum_i w[i, o] * x[i, t] (+ bias[o]). w (n_in, n_out) any weight type; x (n_in, n) F32;
     * bias (n_out) F32 or NULL; dst (n_out, n) F32. No aliasing. */
    enum ty_status (*matmul)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *w,
                             const struct ty_tensor *x, const struct ty_tensor *bias);
    /* NeoX RoPE of each head: x, dst (head_dim, n_heads, n) F32; pos (n) I32. dst may alias x. Dimensions past
     * rope->n_dims are copied unchanged. */
    enum ty_status (*rope)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *x,
                           const struct ty_tensor *pos, const struct ty_rope *rope);
    /* dst = src converted to dst's type (F32, F16 or BF16; f16/bf16 round to nearest even). src F32, same shape.
     * Writes the KV cache. */
    enum ty_status (*copy)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *src);
    /* Causal scaled dot-product attention with grouped KV heads. q (dk, n_head, n) F32; k (dk, n_kv_head, n_kv) and
     * v (dv, n_kv_head, n_kv) F32 or F16 (cache views, n_kv >= pos0 + n); dst (dv, n_head, n) F32. Query head h
     * reads KV head h / (n_head / n_kv_head). Softmax in f32 with the running maximum subtracted. No aliasing. */
    enum ty_status (*attention)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                const struct ty_tensor *k, const struct ty_tensor *v, const struct ty_attn *attn);
    /* dst = silu(gate) * up, silu(x) = x / (1 + exp(-x)). All F32, same shape. dst may alias either input. */
    enum ty_status (*swiglu)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *gate,
                             const struct ty_tensor *up);
    /* dst = a + b. All F32, same shape. dst may alias either input. */
    enum ty_status (*add)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *a,
                          const struct ty_tensor *b);

    /* ---- version 2 ---- */
    /* Optional. For j = 0, 1, ... in order: dst[:, ids[j]] += scale[j] * src[:, j]. dst (d, n) F32; src (d, m) F32;
     * ids (m) I32, each in [0, n), may repeat; scale (m) F32. Combines the outputs of the experts of a mixture of
     * experts, each computed on the tokens routed to it (gathered with get_rows), into the residual stream. No
     * aliasing. NULL: the wrapper runs ty__scatter_add_host when the tensors are in host memory, else fails with
     * TY_ERR_UNSUPPORTED (MoE models then do not run on that backend). */
    enum ty_status (*scatter_add)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *src,
                                  const struct ty_tensor *ids, const struct ty_tensor *scale);

    /* The linear-attention (Gated DeltaNet) ops; each optional. NULL: the wrapper runs the host kernel of
     * linear-attn.c when every tensor is in host memory, else fails with TY_ERR_UNSUPPORTED. */
    /* Per row r of x: dst_r = x_r / sqrt(sum(x_r^2) + eps) (transformers' l2norm). x, dst (d, ...) F32, same shape;
     * dst may alias x. */
    enum ty_status (*l2_norm)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *x, float eps);
    /* Causal depthwise conv1d over time, kernel K, then SiLU when `silu`: with xp = [state | x] (the K - 1 inputs
     * before this batch, then the batch), dst[c, t] = act(sum_j w[j, c] * xp[c, t + j]). x, dst (C, n) F32; w (K, C)
     * F32 (the layout of a PyTorch Conv1d(C, C, K, groups=C) weight); state (C, K - 1) F32, oldest column first,
     * replaced by the last K - 1 columns of xp. No aliasing. */
    enum ty_status (*conv1d_causal)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *x,
                                    const struct ty_tensor *w, const struct ty_tensor *state, bool silu);
    /* The gated delta rule over n steps (formula in linear-attn.c), per value head h with state S_h (dk x dv):
     * S = exp(g_t) S;  S += k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T (scale q_t). q, k (dk, n_head_k, n) F32, value
     * head h reading q/k head h / (n_head / n_head_k); v, dst (dv, n_head, n) F32; g (log decay), beta (n_head, n) F32;
     * state (dv, dk, n_head) F32, read and updated in place. A backend may compute any form equal in exact arithmetic
     * (cpu-ref: chunked from TY_GDN_CHUNK steps on, else recurrent). No aliasing. */
    enum ty_status (*gated_delta)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                  const struct ty_tensor *k, const struct ty_tensor *v, const struct ty_tensor *g,
                                  const struct ty_tensor *beta, const struct ty_tensor *state, float scale);

    /* ---- version 3: paged KV ---- */
    /* Optional. Causal attention of a batch of sequences, each over its own keys in a paged KV pool (struct
     * ty_paged_attn says where). q (dk, n_head, n) F32, the batch's tokens sequence after sequence; k_pool
     * (dk, n_kv_head, n_slots) and v_pool (dv, n_kv_head, n_slots) F32 or F16, contiguous; dst (dv, n_head, n) F32.
     * Each (token, head) must come out exactly as `attention` computes it over the same keys laid out contiguously,
     * so a sequence's numbers never depend on the batch it runs in. No aliasing. NULL: the wrapper gathers each
     * sequence's keys and values into the caller's F32 scratch with get_rows and runs `attention` per sequence
     * (ty__attention_paged_gather). */
    enum ty_status (*attention_paged)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                      const struct ty_tensor *k_pool, const struct ty_tensor *v_pool,
                                      const struct ty_paged_attn *p);

    /* ---- version 3: CPU fusions ---- */
    /* Optional. Called by the model loader once per weight matrix, after loading and before any op reads it, with
     * the view matmul will be given: the backend may keep a copy in a faster layout (packed panels, huge pages) and
     * use it whenever matmul or matmul_multi gets that same view (for a stack of matrices, ne[2] > 1, each matrix
     * sliced out along dimension 2). `w` itself stays valid and unchanged for every other op (get_rows reads tied
     * embeddings). The copy is freed with the backend. NULL: nothing to prepare. */
    enum ty_status (*weight_prepare)(struct ty_backend *be, const struct ty_tensor *w);
    /* Optional. n (1 .. TY_MATMUL_MULTI_MAX) matrix products of one input, dst[i] = w[i] x (+ bias[i]), each with the
     * shapes and rules of matmul: the input is read (and quantised) once for all and one dispatch covers them, so
     * q/k/v and gate/up cost one pass. Each dst[i] must be bit for bit what matmul computes. NULL: the wrapper
     * calls matmul n times. */
    enum ty_status (*matmul_multi)(struct ty_backend *be, int n, const struct ty_tensor *const *dst,
                                   const struct ty_tensor *const *w, const struct ty_tensor *x,
                                   const struct ty_tensor *const *bias);
    /* Optional. The SwiGLU feed-forward input: dst = silu(w_gate x) * (w_up x), as matmul of each then swiglu would
     * give it bit for bit (silu(g) = g / (1 + exp(-g))). w_gate, w_up (n_in, n_ff); x (n_in, n); dst and up
     * (n_ff, n) F32, `up` scratch the backend may use or not. No aliasing. NULL: matmul_multi into dst and up, then
     * swiglu. */
    enum ty_status (*matmul_swiglu)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *w_gate,
                                    const struct ty_tensor *w_up, const struct ty_tensor *x,
                                    const struct ty_tensor *up);

    /* ---- version 4: norm and RoPE fused into the products ---- */
    /* Optional. A layer's attention input (struct ty_attn_input), bit for bit what ty__attn_input_unfused computes
     * with the ops one by one: the input norm folded into the products' input pass, and q/k head norms and RoPE done
     * on the threads, in the call, right after the products. NULL: the wrapper runs the ops one by one. */
    enum ty_status (*attn_input)(struct ty_backend *be, const struct ty_attn_input *a);
    /* Optional. A layer's feed-forward input: dst = silu(w_gate xn) * (w_up xn) with xn = rms_norm(x, norm, eps), bit
     * for bit rms_norm then matmul_swiglu. `xn` (x's shape) and `up` are scratch whose content afterwards is
     * unspecified. NULL: the wrapper runs rms_norm then matmul_swiglu. */
    enum ty_status (*ffn_input)(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *w_gate,
                                const struct ty_tensor *w_up, const struct ty_tensor *x, const struct ty_tensor *norm,
                                float eps, const struct ty_tensor *xn, const struct ty_tensor *up);

    /* ---- version 5: a layer's two halves end to end ---- */
    /* Optional. A layer's attention block over its own cache: attn_input (in), then the attention output (out, whose
     * q, k and v are in's q3, k3 and v viewed as (head_dim, heads, n)), bit for bit what ty__attn_block_unfused
     * computes with the ops one by one. NULL: the wrapper runs them one by one. */
    enum ty_status (*attn_block)(struct ty_backend *be, const struct ty_attn_input *in,
                                 const struct ty_attn_output *out);
    /* Optional. A layer's feed-forward block (struct ty_ffn), bit for bit ty__ffn_unfused. NULL: the ops one by one. */
    enum ty_status (*ffn)(struct ty_backend *be, const struct ty_ffn *f);
};

struct ty_backend {
    const struct ty_backend_iface *iface;
    void *ctx;                  /* the backend's state */
    struct ty_profile *profile; /* NULL, or where the wrappers record each op's time (profile.c) */
};

/* ==== Registry (registry.c) ==== */

/* Starts the backend called `name` ("cpu", "cpu-ref"; NULL = the best one compiled in) with `n_threads` host threads
 * (0 = one per core). Free with ty__backend_free(). Unknown or compiled-out names are TY_ERR_UNSUPPORTED with the
 * list of available ones. */
enum ty_status ty__backend_init(const char *name, int n_threads, struct ty_backend **out);
void ty__backend_free(struct ty_backend *be);
/* Comma-separated names of the backends compiled in, for messages and --help. */
const char *ty__backend_names(void);

/* The reference CPU backend (cpu/cpu-ref.c): plain C, threaded over output rows, the yardstick for every other. */
enum ty_status ty__backend_cpu_ref_init(int n_threads, struct ty_backend **out);
/* The fast CPU backend (cpu/cpu.c): SIMD kernels of the dispatch path TY_CPU_ISA names (else the best), weights packed
 * at load into huge-page memory, one dispatch per op; every op cpu-ref has. */
enum ty_status ty__backend_cpu_init(int n_threads, struct ty_backend **out);

/* ==== Op profile (profile.c): where a forward pass spends its time, op by op ==== */

/* The ops a wrapper below issues, as the profile counts them. */
/* clang-format off: one op a line (clang-format cannot keep an X-macro list that way) */
#define TY_PROFILE_OPS(X)                                                                                              \
    X(GET_ROWS, "get_rows")                                                                                            \
    X(RMS_NORM, "rms_norm")                                                                                            \
    X(MATMUL, "matmul")                                                                                                \
    X(ROPE, "rope")                                                                                                    \
    X(COPY, "copy (KV write)")                                                                                         \
    X(ATTENTION, "attention")                                                                                          \
    X(SWIGLU, "swiglu")                                                                                                \
    X(ADD, "add")                                                                                                      \
    X(SCATTER_ADD, "scatter_add")                                                                                      \
    X(L2_NORM, "l2_norm")                                                                                              \
    X(CONV1D, "conv1d_causal")                                                                                         \
    X(GATED_DELTA, "gated_delta")                                                                                      \
    X(ATTENTION_PAGED, "attention_paged")                                                                              \
    X(MATMUL_MULTI, "matmul_multi")                                                                                    \
    X(MATMUL_SWIGLU, "matmul_swiglu")                                                                                  \
    X(ATTN_INPUT, "attn_input")                                                                                        \
    X(FFN_INPUT, "ffn_input")                                                                                          \
    X(ATTN_BLOCK, "attn_block")                                                                                        \
    X(FFN, "ffn")
/* clang-format on */
#define TY_PROFILE_ENUM(e, name) TY_OP_##e,
enum ty_profile_op { TY_PROFILE_OPS(TY_PROFILE_ENUM) TY_OP_COUNT };
#undef TY_PROFILE_ENUM

/* Totals since the last reset. With a profile attached (be->profile), each wrapper times its op from entry to
 * return, waiting for the backend (sync) before the clock stops so that asynchronous backends are timed too. An op
 * issued from inside another's wrapper (a fallback's steps) counts toward the outer op only. */
struct ty_profile {
    uint64_t calls[TY_OP_COUNT];
    double seconds[TY_OP_COUNT];
    double bytes[TY_OP_COUNT]; /* weight bytes the products read; K and V bytes attention reads */
    /* Of seconds: what the backend reports (ty__profile_alone) as the calling thread's work alone, its other threads
     * waiting: a product's steps before the threads start streaming and after the last is done. */
    double alone[TY_OP_COUNT];
    int depth;                  /* wrappers entered and not yet returned */
    enum ty_profile_op current; /* the outermost op open (valid while depth > 0) */
};

const char *ty__profile_op_name(enum ty_profile_op op);

/* One op's measurement: opened by TY_PROFILE_SCOPE at a wrapper's entry, closed when the wrapper returns. */
struct ty_profile_scope {
    struct ty_backend *be; /* NULL: not profiling */
    enum ty_profile_op op;
    double bytes, t0;
};
struct ty_profile_scope ty__profile_begin(struct ty_backend *be, enum ty_profile_op op, double bytes);
void ty__profile_end(struct ty_profile_scope *s);
/* The scope's cleanup: nothing to do, and no call, when no profile was attached. */
static inline void ty__profile_close(struct ty_profile_scope *s) {
    if (s->be) ty__profile_end(s);
}
/* Adds `seconds` to the open op's time alone (struct ty_profile); nothing when no profile is attached or no op is
 * open. For backends that run an op on several threads. */
void ty__profile_alone(struct ty_backend *be, double seconds);
/* The bytes the products of n weights read; the K and V bytes a paged attention reads. */
double ty__profile_weight_bytes(int n, const struct ty_tensor *const *w);
double ty__profile_paged_bytes(const struct ty_tensor *k_pool, const struct ty_tensor *v_pool,
                               const struct ty_paged_attn *p);

/* At the top of a wrapper: times the rest of it. `bytes` is evaluated only when profiling. */
#define TY_PROFILE_SCOPE(be, op, bytes)                                                                                \
    struct ty_profile_scope ty__profile_scope __attribute__((cleanup(ty__profile_close), unused)) =                    \
        (be)->profile ? ty__profile_begin((be), (op), (double)(bytes)) : (struct ty_profile_scope) {                   \
        0                                                                                                              \
    }

/* ==== Wrappers: the only way callers reach a backend ==== */

static inline const char *ty__backend_name(const struct ty_backend *be) {
    return be->iface->name;
}

/* Allocates a buffer of `size` bytes. Free with ty__backend_buffer_free. */
enum ty_status ty__backend_buffer_alloc(struct ty_backend *be, size_t size, struct ty_buffer **out);
/* A buffer over caller-owned host memory that must outlive it: zero-copy where the backend can read host memory,
 * else an uploaded copy. */
enum ty_status ty__backend_buffer_wrap(struct ty_backend *be, void *host, size_t size, struct ty_buffer **out);
void ty__backend_buffer_free(struct ty_buffer *buf); /* NULL is allowed */
/* True when ty__backend_buffer_wrap is zero-copy: the backend's ops read and write the caller's host memory. */
static inline bool ty__backend_wraps_host(const struct ty_backend *be) {
    return be->iface->buffer_wrap != NULL;
}

static inline enum ty_status ty__backend_tensor_set(struct ty_backend *be, const struct ty_tensor *t, const void *src,
                                                    size_t offset, size_t size) {
    TY_ASSERT(ty__tensor_is_contiguous(t) && offset + size <= ty__tensor_size(t));
    TY_ASSERT(t->offs + offset + size <= t->buf->size);
    return be->iface->tensor_set(be, t, src, offset, size);
}

static inline enum ty_status ty__backend_tensor_get(struct ty_backend *be, const struct ty_tensor *t, void *dst,
                                                    size_t offset, size_t size) {
    TY_ASSERT(ty__tensor_is_contiguous(t) && offset + size <= ty__tensor_size(t));
    TY_ASSERT(t->offs + offset + size <= t->buf->size);
    return be->iface->tensor_get(be, t, dst, offset, size);
}

static inline enum ty_status ty__backend_sync(struct ty_backend *be) {
    return be->iface->sync ? be->iface->sync(be) : TY_OK;
}

/* True for the types a weight matrix may have (F32, F16, BF16 and the quantised types of quant.h). */
bool ty__backend_weight_type_ok(enum ty_type type);

static inline bool ty__is_f32_rows(const struct ty_tensor *t) {
    return t->type == TY_TYPE_F32 && t->nb[0] == sizeof(float);
}

static inline enum ty_status ty__backend_get_rows(struct ty_backend *be, const struct ty_tensor *dst,
                                                  const struct ty_tensor *w, const struct ty_tensor *ids) {
    TY_PROFILE_SCOPE(be, TY_OP_GET_ROWS, 0);
    TY_ASSERT(ty__is_f32_rows(dst) && ty__backend_weight_type_ok(w->type) && ids->type == TY_TYPE_I32);
    TY_ASSERT(dst->ne[0] == w->ne[0] && dst->ne[1] == ids->ne[0] && ty__tensor_is_contiguous(ids));
    TY_ASSERT(dst->ne[2] == 1 && dst->ne[3] == 1 && w->ne[2] == 1 && w->ne[3] == 1);
    return be->iface->get_rows(be, dst, w, ids);
}

/* The shape and type rules of matmul, copy and attention, for their wrappers and the fused ops that contain them. */
static inline void ty__check_matmul(const struct ty_tensor *dst, const struct ty_tensor *w, const struct ty_tensor *x,
                                    const struct ty_tensor *bias) {
    TY_ASSERT(ty__backend_weight_type_ok(w->type) && ty__is_f32_rows(x) && ty__is_f32_rows(dst));
    TY_ASSERT(w->ne[0] == x->ne[0] && dst->ne[0] == w->ne[1] && dst->ne[1] == x->ne[1]);
    TY_ASSERT(w->ne[2] == 1 && w->ne[3] == 1 && x->ne[2] == 1 && x->ne[3] == 1 && dst->ne[2] == 1 && dst->ne[3] == 1);
    TY_ASSERT(!bias || (ty__is_f32_rows(bias) && bias->ne[0] == w->ne[1] && ty__tensor_nrows(bias) == 1));
}
static inline void ty__check_copy(const struct ty_tensor *dst, const struct ty_tensor *src) {
    TY_ASSERT(ty__is_f32_rows(src) && ty__tensor_same_shape(dst, src));
    TY_ASSERT(dst->type == TY_TYPE_F32 || dst->type == TY_TYPE_F16 || dst->type == TY_TYPE_BF16);
}
static inline void ty__check_attention(const struct ty_tensor *dst, const struct ty_tensor *q,
                                       const struct ty_tensor *k, const struct ty_tensor *v,
                                       const struct ty_attn *attn) {
    TY_ASSERT(ty__is_f32_rows(q) && ty__is_f32_rows(dst));
    TY_ASSERT(k->type == TY_TYPE_F32 || k->type == TY_TYPE_F16);
    TY_ASSERT(v->type == k->type && k->nb[0] == v->nb[0]);
    TY_ASSERT(q->ne[0] == k->ne[0] && dst->ne[0] == v->ne[0] && dst->ne[1] == q->ne[1] && dst->ne[2] == q->ne[2]);
    TY_ASSERT(k->ne[1] == v->ne[1] && k->ne[2] == v->ne[2] && k->ne[1] > 0 && q->ne[1] % k->ne[1] == 0);
    TY_ASSERT(attn->pos0 >= 0 && attn->pos0 + q->ne[2] <= k->ne[2]);
    TY_ASSERT(q->ne[0] <= TY_ATTN_MAX_HEAD_DIM && v->ne[0] <= TY_ATTN_MAX_HEAD_DIM);
    TY_ASSERT(q->ne[3] == 1 && k->ne[3] == 1 && v->ne[3] == 1 && dst->ne[3] == 1);
}

static inline enum ty_status ty__backend_rms_norm(struct ty_backend *be, const struct ty_tensor *dst,
                                                  const struct ty_tensor *x, const struct ty_tensor *w, float eps) {
    TY_PROFILE_SCOPE(be, TY_OP_RMS_NORM, 0);
    TY_ASSERT(ty__is_f32_rows(dst) && ty__is_f32_rows(x) && ty__is_f32_rows(w) && ty__tensor_same_shape(dst, x));
    TY_ASSERT(w->ne[0] == x->ne[0] && ty__tensor_nrows(w) == 1);
    return be->iface->rms_norm(be, dst, x, w, eps);
}

static inline enum ty_status ty__backend_matmul(struct ty_backend *be, const struct ty_tensor *dst,
                                                const struct ty_tensor *w, const struct ty_tensor *x,
                                                const struct ty_tensor *bias) {
    TY_PROFILE_SCOPE(be, TY_OP_MATMUL, ty__tensor_size(w));
    ty__check_matmul(dst, w, x, bias);
    return be->iface->matmul(be, dst, w, x, bias);
}

static inline enum ty_status ty__backend_rope(struct ty_backend *be, const struct ty_tensor *dst,
                                              const struct ty_tensor *x, const struct ty_tensor *pos,
                                              const struct ty_rope *rope) {
    TY_PROFILE_SCOPE(be, TY_OP_ROPE, 0);
    TY_ASSERT(ty__is_f32_rows(dst) && ty__is_f32_rows(x) && ty__tensor_same_shape(dst, x) && x->ne[3] == 1);
    TY_ASSERT(pos->type == TY_TYPE_I32 && pos->ne[0] == x->ne[2] && ty__tensor_is_contiguous(pos));
    TY_ASSERT(rope->n_dims % 2 == 0 && rope->n_dims <= x->ne[0] && rope->n_dims <= TY_ROPE_MAX_DIMS);
    return be->iface->rope(be, dst, x, pos, rope);
}

static inline enum ty_status ty__backend_copy(struct ty_backend *be, const struct ty_tensor *dst,
                                              const struct ty_tensor *src) {
    TY_PROFILE_SCOPE(be, TY_OP_COPY, 0);
    ty__check_copy(dst, src);
    return be->iface->copy(be, dst, src);
}

static inline enum ty_status ty__backend_attention(struct ty_backend *be, const struct ty_tensor *dst,
                                                   const struct ty_tensor *q, const struct ty_tensor *k,
                                                   const struct ty_tensor *v, const struct ty_attn *attn) {
    TY_PROFILE_SCOPE(be, TY_OP_ATTENTION,
                     (ty__kv_position_bytes(k) + ty__kv_position_bytes(v)) * (double)(attn->pos0 + q->ne[2]));
    ty__check_attention(dst, q, k, v, attn);
    return be->iface->attention(be, dst, q, k, v, attn);
}

static inline enum ty_status ty__backend_swiglu(struct ty_backend *be, const struct ty_tensor *dst,
                                                const struct ty_tensor *gate, const struct ty_tensor *up) {
    TY_PROFILE_SCOPE(be, TY_OP_SWIGLU, 0);
    TY_ASSERT(ty__is_f32_rows(dst) && ty__is_f32_rows(gate) && ty__is_f32_rows(up));
    TY_ASSERT(ty__tensor_same_shape(dst, gate) && ty__tensor_same_shape(dst, up));
    return be->iface->swiglu(be, dst, gate, up);
}

static inline enum ty_status ty__backend_add(struct ty_backend *be, const struct ty_tensor *dst,
                                             const struct ty_tensor *a, const struct ty_tensor *b) {
    TY_PROFILE_SCOPE(be, TY_OP_ADD, 0);
    TY_ASSERT(ty__is_f32_rows(dst) && ty__is_f32_rows(a) && ty__is_f32_rows(b));
    TY_ASSERT(ty__tensor_same_shape(dst, a) && ty__tensor_same_shape(dst, b));
    return be->iface->add(be, dst, a, b);
}

/* The scatter_add op in plain C on host tensors: the reference kernel, and the fallback for backends without it. */
void ty__scatter_add_host(const struct ty_tensor *dst, const struct ty_tensor *src, const struct ty_tensor *ids,
                          const struct ty_tensor *scale);

static inline enum ty_status ty__backend_scatter_add(struct ty_backend *be, const struct ty_tensor *dst,
                                                     const struct ty_tensor *src, const struct ty_tensor *ids,
                                                     const struct ty_tensor *scale) {
    TY_PROFILE_SCOPE(be, TY_OP_SCATTER_ADD, 0);
    TY_ASSERT(ty__is_f32_rows(dst) && ty__is_f32_rows(src) && ty__is_f32_rows(scale) && ids->type == TY_TYPE_I32);
    TY_ASSERT(dst->ne[0] == src->ne[0] && src->ne[1] == ids->ne[0] && scale->ne[0] == ids->ne[0]);
    TY_ASSERT(ty__tensor_is_contiguous(ids) && ty__tensor_is_contiguous(scale) && ty__tensor_nrows(ids) == 1);
    TY_ASSERT(dst->ne[2] == 1 && dst->ne[3] == 1 && src->ne[2] == 1 && src->ne[3] == 1 && ty__tensor_nrows(scale) == 1);
    if (be->iface->scatter_add) return be->iface->scatter_add(be, dst, src, ids, scale);
    if (dst->buf->host && src->buf->host && ids->buf->host && scale->buf->host) {
        TY_TRY(ty__backend_sync(be));
        ty__scatter_add_host(dst, src, ids, scale);
        return TY_OK;
    }
    return ty__error(TY_ERR_UNSUPPORTED,
                     "backend %s has no scatter_add op, which mixture-of-experts models need; use the cpu backend",
                     be->iface->name);
}

/* ---- linear attention: host kernels (linear-attn.c) and wrappers ---- */

enum ty_gdn_form {
    TY_GDN_AUTO = 0,      /* chunked from TY_GDN_CHUNK steps on, else recurrent */
    TY_GDN_RECURRENT = 1, /* one step at a time */
    TY_GDN_CHUNKED = 2    /* chunks of TY_GDN_CHUNK steps */
};

/* Rows [r0, r1) of l2_norm (rows counted over dimensions 1..3, as ty__tensor_nrows). */
void ty__l2_norm_host(const struct ty_tensor *dst, const struct ty_tensor *x, float eps, int64_t r0, int64_t r1);
/* Channels [c0, c1) of conv1d_causal, their state included (channels are independent, so they may be split among
 * threads). */
void ty__conv1d_causal_host(const struct ty_tensor *dst, const struct ty_tensor *x, const struct ty_tensor *w,
                            const struct ty_tensor *state, bool silu, int64_t c0, int64_t c1);
/* The gated delta rule for value heads [h0, h1) in the given form (heads are independent, so they may be split among
 * threads). */
void ty__gated_delta_host(const struct ty_tensor *dst, const struct ty_tensor *q, const struct ty_tensor *k,
                          const struct ty_tensor *v, const struct ty_tensor *g, const struct ty_tensor *beta,
                          const struct ty_tensor *state, float scale, enum ty_gdn_form form, int64_t h0, int64_t h1);

static inline bool ty__all_host(const struct ty_tensor *const *ts, int n) {
    for (int i = 0; i < n; i++)
        if (!ts[i]->buf->host) return false;
    return true;
}

static inline enum ty_status ty__backend_no_op(struct ty_backend *be, const char *op) {
    return ty__error(TY_ERR_UNSUPPORTED,
                     "backend %s has no %s op, which linear-attention models need; use the cpu backend",
                     be->iface->name, op);
}

static inline enum ty_status ty__backend_l2_norm(struct ty_backend *be, const struct ty_tensor *dst,
                                                 const struct ty_tensor *x, float eps) {
    TY_PROFILE_SCOPE(be, TY_OP_L2_NORM, 0);
    TY_ASSERT(ty__is_f32_rows(dst) && ty__is_f32_rows(x) && ty__tensor_same_shape(dst, x));
    if (be->iface->l2_norm) return be->iface->l2_norm(be, dst, x, eps);
    const struct ty_tensor *ts[] = {dst, x};
    if (!ty__all_host(ts, 2)) return ty__backend_no_op(be, "l2_norm");
    TY_TRY(ty__backend_sync(be));
    ty__l2_norm_host(dst, x, eps, 0, ty__tensor_nrows(x));
    return TY_OK;
}

static inline enum ty_status ty__backend_conv1d_causal(struct ty_backend *be, const struct ty_tensor *dst,
                                                       const struct ty_tensor *x, const struct ty_tensor *w,
                                                       const struct ty_tensor *state, bool silu) {
    TY_PROFILE_SCOPE(be, TY_OP_CONV1D, 0);
    TY_ASSERT(ty__is_f32_rows(dst) && ty__is_f32_rows(x) && ty__is_f32_rows(w) && ty__is_f32_rows(state));
    TY_ASSERT(ty__tensor_same_shape(dst, x) && ty__tensor_nrows(x) == x->ne[1] && w->ne[0] >= 1);
    TY_ASSERT(w->ne[1] == x->ne[0] && ty__tensor_nrows(w) == w->ne[1]);
    TY_ASSERT(state->ne[0] == x->ne[0] && state->ne[1] == w->ne[0] - 1 && ty__tensor_nrows(state) == state->ne[1]);
    if (be->iface->conv1d_causal) return be->iface->conv1d_causal(be, dst, x, w, state, silu);
    const struct ty_tensor *ts[] = {dst, x, w, state};
    if (!ty__all_host(ts, 4)) return ty__backend_no_op(be, "conv1d_causal");
    TY_TRY(ty__backend_sync(be));
    ty__conv1d_causal_host(dst, x, w, state, silu, 0, x->ne[0]);
    return TY_OK;
}

static inline enum ty_status ty__backend_gated_delta(struct ty_backend *be, const struct ty_tensor *dst,
                                                     const struct ty_tensor *q, const struct ty_tensor *k,
                                                     const struct ty_tensor *v, const struct ty_tensor *g,
                                                     const struct ty_tensor *beta, const struct ty_tensor *state,
                                                     float scale) {
    TY_PROFILE_SCOPE(be, TY_OP_GATED_DELTA, 0);
    const struct ty_tensor *ts[] = {dst, q, k, v, g, beta, state};
    for (int i = 0; i < 7; i++) TY_ASSERT(ty__is_f32_rows(ts[i]) && ts[i]->ne[3] == 1);
    TY_ASSERT(ty__tensor_same_shape(q, k) && ty__tensor_same_shape(dst, v));
    TY_ASSERT(q->ne[0] <= TY_GDN_MAX_HEAD_DIM && v->ne[0] <= TY_GDN_MAX_HEAD_DIM);
    TY_ASSERT(q->ne[1] > 0 && v->ne[1] % q->ne[1] == 0 && q->ne[2] == v->ne[2]);
    TY_ASSERT(g->ne[0] == v->ne[1] && g->ne[1] == v->ne[2] && g->ne[2] == 1 && ty__tensor_same_shape(g, beta));
    TY_ASSERT(state->ne[0] == v->ne[0] && state->ne[1] == q->ne[0] && state->ne[2] == v->ne[1]);
    if (be->iface->gated_delta) return be->iface->gated_delta(be, dst, q, k, v, g, beta, state, scale);
    if (!ty__all_host(ts, 7)) return ty__backend_no_op(be, "gated_delta");
    TY_TRY(ty__backend_sync(be));
    ty__gated_delta_host(dst, q, k, v, g, beta, state, scale, TY_GDN_AUTO, 0, v->ne[1]);
    return TY_OK;
}

/* ---- paged KV (version 3) ---- */

/* The fallback of attention_paged: per sequence, gathers its keys and values from the pool into p's F32 scratch with
 * get_rows, in position order, and runs `attention` over them. Exact where `attention` converts F16 to F32 exactly
 * (as cpu-ref does). Implemented in paged-attn.c. */
enum ty_status ty__attention_paged_gather(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                          const struct ty_tensor *k_pool, const struct ty_tensor *v_pool,
                                          const struct ty_paged_attn *p);

static inline bool ty__backend_has_attention_paged(const struct ty_backend *be) {
    return be->iface->attention_paged != NULL;
}

static inline enum ty_status ty__backend_attention_paged(struct ty_backend *be, const struct ty_tensor *dst,
                                                         const struct ty_tensor *q, const struct ty_tensor *k_pool,
                                                         const struct ty_tensor *v_pool,
                                                         const struct ty_paged_attn *p) {
    TY_PROFILE_SCOPE(be, TY_OP_ATTENTION_PAGED, ty__profile_paged_bytes(k_pool, v_pool, p));
    TY_ASSERT(ty__is_f32_rows(q) && ty__is_f32_rows(dst));
    TY_ASSERT(k_pool->type == TY_TYPE_F32 || k_pool->type == TY_TYPE_F16);
    TY_ASSERT(v_pool->type == k_pool->type && ty__tensor_is_contiguous(k_pool) && ty__tensor_is_contiguous(v_pool));
    TY_ASSERT(q->ne[0] == k_pool->ne[0] && dst->ne[0] == v_pool->ne[0] && dst->ne[1] == q->ne[1]);
    TY_ASSERT(dst->ne[2] == q->ne[2] && k_pool->ne[1] == v_pool->ne[1] && k_pool->ne[2] == v_pool->ne[2]);
    TY_ASSERT(k_pool->ne[1] > 0 && q->ne[1] % k_pool->ne[1] == 0);
    TY_ASSERT(q->ne[0] <= TY_ATTN_MAX_HEAD_DIM && v_pool->ne[0] <= TY_ATTN_MAX_HEAD_DIM);
    TY_ASSERT(q->ne[3] == 1 && k_pool->ne[3] == 1 && v_pool->ne[3] == 1 && dst->ne[3] == 1);
    TY_ASSERT(p->block > 0 && k_pool->ne[2] % p->block == 0 && p->n_seqs >= 0);
    int64_t n_pool_blocks = k_pool->ne[2] / p->block;
    for (int32_t s = 0; s < p->n_seqs; s++) {
        const struct ty_paged_seq *q_s = &p->seqs[s];
        TY_ASSERT(q_s->n > 0 && q_s->pos0 >= 0 && q_s->col >= 0 && q_s->col + q_s->n <= q->ne[2]);
        TY_ASSERT((int64_t)q_s->n_blocks * p->block >= (int64_t)q_s->pos0 + q_s->n);
        for (int32_t b = 0; b < (q_s->pos0 + q_s->n + p->block - 1) / p->block; b++)
            TY_ASSERT(q_s->table[b] >= 0 && q_s->table[b] < n_pool_blocks);
    }
    if (be->iface->attention_paged) return be->iface->attention_paged(be, dst, q, k_pool, v_pool, p);
    return ty__attention_paged_gather(be, dst, q, k_pool, v_pool, p);
}

/* ---- CPU fusions (version 3) ---- */

#define TY_MATMUL_MULTI_MAX 4

static inline enum ty_status ty__backend_weight_prepare(struct ty_backend *be, const struct ty_tensor *w) {
    TY_ASSERT(ty__backend_weight_type_ok(w->type) && w->ne[3] == 1);
    return be->iface->weight_prepare ? be->iface->weight_prepare(be, w) : TY_OK;
}

/* dst[i] = w[i] x (+ bias[i]) for i < n; bias may be NULL, or hold NULL entries. */
static inline enum ty_status ty__backend_matmul_multi(struct ty_backend *be, int n, const struct ty_tensor *const *dst,
                                                      const struct ty_tensor *const *w, const struct ty_tensor *x,
                                                      const struct ty_tensor *const *bias) {
    TY_PROFILE_SCOPE(be, TY_OP_MATMUL_MULTI, ty__profile_weight_bytes(n, w));
    TY_ASSERT(n >= 1 && n <= TY_MATMUL_MULTI_MAX);
    if (!be->iface->matmul_multi) {
        for (int i = 0; i < n; i++) TY_TRY(ty__backend_matmul(be, dst[i], w[i], x, bias ? bias[i] : NULL));
        return TY_OK;
    }
    for (int i = 0; i < n; i++) {
        const struct ty_tensor *b = bias ? bias[i] : NULL;
        TY_ASSERT(ty__backend_weight_type_ok(w[i]->type) && ty__is_f32_rows(x) && ty__is_f32_rows(dst[i]));
        TY_ASSERT(w[i]->ne[0] == x->ne[0] && dst[i]->ne[0] == w[i]->ne[1] && dst[i]->ne[1] == x->ne[1]);
        TY_ASSERT(w[i]->ne[2] == 1 && w[i]->ne[3] == 1 && dst[i]->ne[2] == 1 && dst[i]->ne[3] == 1);
        TY_ASSERT(!b || (ty__is_f32_rows(b) && b->ne[0] == w[i]->ne[1] && ty__tensor_nrows(b) == 1));
    }
    TY_ASSERT(x->ne[2] == 1 && x->ne[3] == 1);
    return be->iface->matmul_multi(be, n, dst, w, x, bias);
}

static inline enum ty_status ty__backend_matmul_swiglu(struct ty_backend *be, const struct ty_tensor *dst,
                                                       const struct ty_tensor *w_gate, const struct ty_tensor *w_up,
                                                       const struct ty_tensor *x, const struct ty_tensor *up) {
    TY_PROFILE_SCOPE(be, TY_OP_MATMUL_SWIGLU, ty__tensor_size(w_gate) + ty__tensor_size(w_up));
    TY_ASSERT(ty__tensor_same_shape(w_gate, w_up) && ty__tensor_same_shape(dst, up));
    if (!be->iface->matmul_swiglu) {
        const struct ty_tensor *d[2] = {dst, up}, *w[2] = {w_gate, w_up};
        TY_TRY(ty__backend_matmul_multi(be, 2, d, w, x, NULL));
        return ty__backend_swiglu(be, dst, dst, up);
    }
    TY_ASSERT(ty__backend_weight_type_ok(w_gate->type) && ty__backend_weight_type_ok(w_up->type));
    TY_ASSERT(ty__is_f32_rows(x) && ty__is_f32_rows(dst) && ty__is_f32_rows(up));
    TY_ASSERT(w_gate->ne[0] == x->ne[0] && dst->ne[0] == w_gate->ne[1] && dst->ne[1] == x->ne[1]);
    TY_ASSERT(w_gate->ne[2] == 1 && w_gate->ne[3] == 1 && x->ne[2] == 1 && x->ne[3] == 1 && dst->ne[2] == 1);
    return be->iface->matmul_swiglu(be, dst, w_gate, w_up, x, up);
}

/* ---- norm and RoPE fusions (version 4) ---- */

/* attn_input's meaning, one op at a time: the fallback, and what a fused backend must equal bit for bit. */
static inline enum ty_status ty__attn_input_unfused(struct ty_backend *be, const struct ty_attn_input *a) {
    TY_TRY(ty__backend_rms_norm(be, a->xn, a->x, a->norm, a->eps));
    const struct ty_tensor *d[3] = {a->q, a->k, a->v}, *w[3] = {a->wq, a->wk, a->wv}, *b[3] = {a->bq, a->bk, a->bv};
    TY_TRY(ty__backend_matmul_multi(be, 3, d, w, a->xn, b));
    if (a->q_norm) TY_TRY(ty__backend_rms_norm(be, a->q3, a->q3, a->q_norm, a->eps));
    if (a->k_norm) TY_TRY(ty__backend_rms_norm(be, a->k3, a->k3, a->k_norm, a->eps));
    TY_TRY(ty__backend_rope(be, a->q3, a->q3, a->pos, a->rope));
    return ty__backend_rope(be, a->k3, a->k3, a->pos, a->rope);
}

static inline void ty__check_attn_input(const struct ty_attn_input *a) {
    TY_ASSERT(ty__is_f32_rows(a->x) && ty__tensor_same_shape(a->x, a->xn) && a->x->ne[2] == 1 && a->x->ne[3] == 1);
    TY_ASSERT(ty__is_f32_rows(a->norm) && a->norm->ne[0] == a->x->ne[0] && ty__tensor_nrows(a->norm) == 1);
    const struct ty_tensor *d[3] = {a->q, a->k, a->v}, *w[3] = {a->wq, a->wk, a->wv}, *b[3] = {a->bq, a->bk, a->bv};
    for (int i = 0; i < 3; i++) {
        TY_ASSERT(ty__backend_weight_type_ok(w[i]->type) && ty__is_f32_rows(d[i]) && w[i]->ne[0] == a->x->ne[0]);
        TY_ASSERT(d[i]->ne[0] == w[i]->ne[1] && d[i]->ne[1] == a->x->ne[1] && w[i]->ne[2] == 1 && d[i]->ne[2] == 1);
        TY_ASSERT(!b[i] || (ty__is_f32_rows(b[i]) && b[i]->ne[0] == w[i]->ne[1] && ty__tensor_nrows(b[i]) == 1));
    }
    const struct ty_tensor *h3[2] = {a->q3, a->k3}, *hn[2] = {a->q_norm, a->k_norm};
    for (int i = 0; i < 2; i++) {
        TY_ASSERT(ty__is_f32_rows(h3[i]) && h3[i]->ne[0] * h3[i]->ne[1] == d[i]->ne[0] && h3[i]->ne[2] == a->x->ne[1]);
        TY_ASSERT(ty__tensor_host(h3[i]) == ty__tensor_host(d[i]) && h3[i]->ne[0] <= TY_ATTN_MAX_HEAD_DIM);
        TY_ASSERT(!hn[i] || (ty__is_f32_rows(hn[i]) && hn[i]->ne[0] == h3[i]->ne[0] && ty__tensor_nrows(hn[i]) == 1));
    }
    TY_ASSERT(a->pos->type == TY_TYPE_I32 && a->pos->ne[0] == a->x->ne[1] && a->rope->n_dims <= a->q3->ne[0]);
}

static inline enum ty_status ty__backend_attn_input(struct ty_backend *be, const struct ty_attn_input *a) {
    TY_PROFILE_SCOPE(be, TY_OP_ATTN_INPUT, ty__tensor_size(a->wq) + ty__tensor_size(a->wk) + ty__tensor_size(a->wv));
    if (!be->iface->attn_input) return ty__attn_input_unfused(be, a);
    ty__check_attn_input(a);
    return be->iface->attn_input(be, a);
}

/* ffn_input's shape and type rules, for its wrapper and ffn's. */
static inline void ty__check_ffn_input(const struct ty_tensor *dst, const struct ty_tensor *w_gate,
                                       const struct ty_tensor *w_up, const struct ty_tensor *x,
                                       const struct ty_tensor *norm, const struct ty_tensor *xn,
                                       const struct ty_tensor *up) {
    TY_ASSERT(ty__is_f32_rows(x) && ty__tensor_same_shape(x, xn) && x->ne[2] == 1 && x->ne[3] == 1);
    TY_ASSERT(ty__is_f32_rows(norm) && norm->ne[0] == x->ne[0] && ty__tensor_nrows(norm) == 1);
    TY_ASSERT(ty__tensor_same_shape(w_gate, w_up) && ty__tensor_same_shape(dst, up));
    TY_ASSERT(ty__backend_weight_type_ok(w_gate->type) && ty__backend_weight_type_ok(w_up->type));
    TY_ASSERT(ty__is_f32_rows(dst) && ty__is_f32_rows(up) && w_gate->ne[0] == x->ne[0]);
    TY_ASSERT(dst->ne[0] == w_gate->ne[1] && dst->ne[1] == x->ne[1] && w_gate->ne[2] == 1 && dst->ne[2] == 1);
}

static inline enum ty_status ty__backend_ffn_input(struct ty_backend *be, const struct ty_tensor *dst,
                                                   const struct ty_tensor *w_gate, const struct ty_tensor *w_up,
                                                   const struct ty_tensor *x, const struct ty_tensor *norm, float eps,
                                                   const struct ty_tensor *xn, const struct ty_tensor *up) {
    TY_PROFILE_SCOPE(be, TY_OP_FFN_INPUT, ty__tensor_size(w_gate) + ty__tensor_size(w_up));
    if (!be->iface->ffn_input) {
        TY_TRY(ty__backend_rms_norm(be, xn, x, norm, eps));
        return ty__backend_matmul_swiglu(be, dst, w_gate, w_up, xn, up);
    }
    ty__check_ffn_input(dst, w_gate, w_up, x, norm, xn, up);
    return be->iface->ffn_input(be, dst, w_gate, w_up, x, norm, eps, xn, up);
}

/* ---- a layer's halves end to end (version 5) ---- */

/* The attention output's scratch seen as the output projection's input: (n_head * dv, n) columns. */
static inline struct ty_tensor ty__attn_output_flat(const struct ty_attn_output *a) {
    return ty__tensor_reshape(a->att, a->att->ne[0] * a->att->ne[1], a->att->ne[2], 1, 1);
}

/* The attention output's meaning (attn_block's second half), one op at a time. */
static inline enum ty_status ty__attn_output_unfused(struct ty_backend *be, const struct ty_attn_output *a) {
    const struct ty_tensor att2 = ty__attn_output_flat(a);
    TY_TRY(ty__backend_copy(be, a->k_new, a->k));
    TY_TRY(ty__backend_copy(be, a->v_new, a->v));
    TY_TRY(ty__backend_attention(be, a->att, a->q, a->k_all, a->v_all, &a->attn));
    TY_TRY(ty__backend_matmul(be, a->proj, a->wo, &att2, NULL));
    return ty__backend_add(be, a->x, a->x, a->proj);
}

/* attn_block's meaning, one op at a time: the fallback, and what a fused backend must equal bit for bit. */
static inline enum ty_status ty__attn_block_unfused(struct ty_backend *be, const struct ty_attn_input *in,
                                                    const struct ty_attn_output *out) {
    TY_TRY(ty__backend_attn_input(be, in));
    return ty__attn_output_unfused(be, out);
}

/* Whether two views start at the same byte of the same buffer (one activation seen with two shapes). */
static inline bool ty__tensor_same_data(const struct ty_tensor *a, const struct ty_tensor *b) {
    return a->buf == b->buf && a->offs == b->offs;
}

static inline enum ty_status ty__backend_attn_block(struct ty_backend *be, const struct ty_attn_input *in,
                                                    const struct ty_attn_output *out) {
    TY_PROFILE_SCOPE(be, TY_OP_ATTN_BLOCK,
                     (double)(ty__tensor_size(in->wq) + ty__tensor_size(in->wk) + ty__tensor_size(in->wv) +
                              ty__tensor_size(out->wo)) +
                         (ty__kv_position_bytes(out->k_all) + ty__kv_position_bytes(out->v_all)) *
                             (double)(out->attn.pos0 + out->q->ne[2]));
    if (!be->iface->attn_block) return ty__attn_block_unfused(be, in, out);
    ty__check_attn_input(in);
    const struct ty_tensor att2 = ty__attn_output_flat(out);
    ty__check_copy(out->k_new, out->k);
    ty__check_copy(out->v_new, out->v);
    TY_ASSERT(out->k_new->type == out->k_all->type && out->v_new->type == out->v_all->type);
    ty__check_attention(out->att, out->q, out->k_all, out->v_all, &out->attn);
    ty__check_matmul(out->proj, out->wo, &att2, NULL);
    TY_ASSERT(ty__is_f32_rows(out->x) && ty__tensor_same_shape(out->x, out->proj) &&
              ty__tensor_same_data(out->x, in->x));
    TY_ASSERT(ty__tensor_same_data(out->q, in->q3) && ty__tensor_same_data(out->k, in->k3));
    TY_ASSERT(ty__tensor_same_data(out->v, in->v) && out->v->ne[0] * out->v->ne[1] == in->v->ne[0]);
    return be->iface->attn_block(be, in, out);
}

/* ffn's meaning, one op at a time: the fallback, and what a fused backend must equal bit for bit. */
static inline enum ty_status ty__ffn_unfused(struct ty_backend *be, const struct ty_ffn *f) {
    TY_TRY(ty__backend_ffn_input(be, f->gate, f->w_gate, f->w_up, f->x, f->norm, f->eps, f->xn, f->up));
    TY_TRY(ty__backend_matmul(be, f->proj, f->w_down, f->gate, NULL));
    return ty__backend_add(be, f->x, f->x, f->proj);
}

static inline enum ty_status ty__backend_ffn(struct ty_backend *be, const struct ty_ffn *f) {
    TY_PROFILE_SCOPE(be, TY_OP_FFN, ty__tensor_size(f->w_gate) + ty__tensor_size(f->w_up) + ty__tensor_size(f->w_down));
    if (!be->iface->ffn) return ty__ffn_unfused(be, f);
    ty__check_ffn_input(f->gate, f->w_gate, f->w_up, f->x, f->norm, f->xn, f->up);
    ty__check_matmul(f->proj, f->w_down, f->gate, NULL);
    TY_ASSERT(ty__tensor_same_shape(f->x, f->proj));
    return be->iface->ffn(be, f);
}

#endif /* TY_BACKEND_H */
