/*
 * cpu-impl.h - what the two CPU backends share. The fast backend (cpu.c) is the reference backend (cpu-ref.c) with
 * the ops that decide speed replaced: it starts from the reference's table and reuses every op where plain C is
 * already fast enough (norms, RoPE, element-wise ops, the linear-attention kernels), so those exist once.
 */
#ifndef TY_CPU_IMPL_H
#define TY_CPU_IMPL_H

#include "base/threads.h"
#include "chip/backend.h"

/* The first member of either backend's ctx: the reference ops only use the pool. */
struct ty_cpu_ctx {
    struct ty_threadpool *pool;
};

/* The reference backend's table; its ops take any backend whose ctx starts with a struct ty_cpu_ctx. Call
 * ty__cpu_ref_setup() once before using them. */
extern const struct ty_backend_iface ty__cpu_ref_iface;
void ty__cpu_ref_setup(void);
/* f16 -> f32 for every bit pattern (filled by ty__cpu_ref_setup): kernels that convert caches element by element. */
extern float ty__cpu_f16_table[1 << 16];

/* The reference's per-row steps, shared so that fused ops give the same bits as the ops one by one: y = w * x /
 * rms(x) over d elements (y may be x); a token's RoPE cos/sin (n_dims / 2 each); one head rotated (y may be x). */
void ty__cpu_rms_norm_row(const float *x, const float *w, float eps, int64_t d, float *y);
void ty__cpu_rope_angles(const struct ty_rope *rope, int32_t pos, float *cs, float *sn);
void ty__cpu_rope_head(const struct ty_rope *rope, const float *cs, const float *sn, const float *x, float *y,
                       int64_t head_dim);
/* o = silu(g) * u over n elements (o may be g or u): the swiglu op's row. */
void ty__cpu_swiglu_row(const float *g, const float *u, float *o, int64_t n);
/* d floats of s converted to `type` (F32, F16 or BF16, rounding to nearest even) at o: the copy op's row. */
void ty__cpu_convert_row(enum ty_type type, const float *s, void *o, int64_t d);

/* The fast backend's reading ahead (cpu.c): the bytes of share heads it has handed to its workers to read while they
 * wait, in all (for tests; 0 for other backends). */
size_t ty__cpu_read_ahead_handed(const struct ty_backend *be);
/* The fast backend's attn_block and ffn calls that ran as one dispatch of two phases (cpu.c), in all (for tests; 0
 * for other backends). */
size_t ty__cpu_chained_calls(const struct ty_backend *be);

/* A growable scratch area, 64-byte aligned; reserved before a dispatch, never inside one. */
struct ty_cpu_scratch {
    void *p;
    size_t cap;
};
enum ty_status ty__cpu_scratch_reserve(struct ty_cpu_scratch *s, size_t bytes);
void ty__cpu_scratch_free(struct ty_cpu_scratch *s);

/* Flash-style causal attention (cpu-attn.c): the attention op of backend.h on the pool, with per-thread scratch. */
enum ty_status ty__cpu_attention(struct ty_threadpool *pool, struct ty_cpu_scratch *scratch,
                                 const struct ty_tensor *dst, const struct ty_tensor *q, const struct ty_tensor *k,
                                 const struct ty_tensor *v, const struct ty_attn *attn);
/* A fused decode step around attention (cpu.c's attn_block), all in one dispatch of the pool: every thread that joins
 * runs before(arg, ith, nth) (work attention's input depends on, finished before it returns), then takes units, each
 * (one KV head g of the batch's columns [c0, c1)) prepared by unit(arg, g, c0, c1) (that head's own steps: RoPE, the
 * cache write) before it attends, then, once every unit is done, runs then(arg, ith, nth). A thread first takes the
 * units of its own range of KV heads (split as the products before split their rows, so heads stay on the core that
 * mostly computed their rows), then any left. */
struct ty_cpu_attn_hooks {
    ty_task_fn before, then;
    void (*unit)(void *arg, int64_t g, int64_t c0, int64_t c1);
    void *arg;
};
/* ty__cpu_attention with the hooks above, for a batch of at most ty__cpu_attention_max_fused() queries (one query
 * block: one unit per KV head, so no unit reads keys another unit writes). */
enum ty_status ty__cpu_attention_fused(struct ty_threadpool *pool, struct ty_cpu_scratch *scratch,
                                       const struct ty_tensor *dst, const struct ty_tensor *q,
                                       const struct ty_tensor *k, const struct ty_tensor *v, const struct ty_attn *attn,
                                       const struct ty_cpu_attn_hooks *hooks);
int64_t ty__cpu_attention_max_fused(void);
/* The same over a paged KV pool (backend.h's attention_paged): each (token, head) bit for bit what ty__cpu_attention
 * gives over the same keys laid out contiguously. */
enum ty_status ty__cpu_attention_paged(struct ty_threadpool *pool, struct ty_cpu_scratch *scratch,
                                       struct ty_cpu_scratch *meta, const struct ty_tensor *dst,
                                       const struct ty_tensor *q, const struct ty_tensor *k_pool,
                                       const struct ty_tensor *v_pool, const struct ty_paged_attn *p);

#endif /* TY_CPU_IMPL_H */
