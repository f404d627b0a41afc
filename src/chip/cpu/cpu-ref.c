/*
 * cpu-ref.c - the reference CPU backend: every op of backend.h in plain C, the yardstick that faster backends are
 * tested against. It is meant to be read, but it is not needlessly slow:
 *  - weights are read in place (buffers can wrap the mapped GGUF file);
 *  - a matrix product dequantises a slice of a weight row at a time into a stack buffer and dots it with every
 *    token of the batch, so each weight byte is read once per batch and nothing is allocated;
 *  - matmul and attention split their outputs across the thread pool. Each output element is computed by one thread
 *    in a fixed order, so results do not depend on the thread count or the batch size (decoding a token gives the
 *    same logits as prefilling it).
 * Accumulation is in f32 with 32 partial sums, which is both more accurate than one running sum and easy for the
 * compiler to vectorise.
 */
#include "chip/cpu/cpu-impl.h"
#include "chip/cpu/simd/vexp.h"
#include "model/quant.h"

#include <math.h>
#include <pthread.h>

/* Weight elements dequantised per step: a multiple of every block size (32, 256), 4 KiB of stack. */
#define MATMUL_CHUNK 1024
/* Below this many multiply-adds an op runs on the calling thread: waking the pool would cost more than the work. */
#define MIN_PARALLEL_WORK (1 << 17)

/* Runs fn on the pool, or alone on this thread for small work (results do not depend on the split). */
static void run_split(struct ty_cpu_ctx *c, double work, ty_task_fn fn, void *arg) {
    if (work < MIN_PARALLEL_WORK)
        fn(arg, 0, 1);
    else
        ty__threadpool_run(c->pool, fn, arg);
}

/* ==== Small helpers ==== */

/* f16 -> f32 by table: the attention loop converts every cached key and value, and a call per element would
 * dominate it. Filled once from the exact conversion in base/half.c. */
float ty__cpu_f16_table[1 << 16];
#define f16_table ty__cpu_f16_table
static pthread_once_t f16_table_once = PTHREAD_ONCE_INIT;
static void f16_table_init(void) {
    for (uint32_t i = 0; i < (1u << 16); i++) f16_table[i] = ty__f16_to_f32((ty_f16)i);
}

/* 32 partial sums: independent chains, so the compiler can keep several vector FMAs in flight instead of waiting on
 * one accumulator, and a more accurate sum than a single running total. */
#define DOT_LANES 32

static float sum_lanes(const float *acc) {
    float s[DOT_LANES / 2];
    for (int j = 0; j < DOT_LANES / 2; j++) s[j] = acc[j] + acc[j + DOT_LANES / 2];
    for (int w = DOT_LANES / 4; w >= 1; w /= 2)
        for (int j = 0; j < w; j++) s[j] = s[j] + s[j + w];
    return s[0];
}

static float dot_f32(const float *a, const float *b, int64_t n) {
    float acc[DOT_LANES] = {0};
    int64_t i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int j = 0; j < DOT_LANES; j++) acc[j] += a[i + j] * b[i + j];
    for (int j = 0; i < n; i++, j++) acc[j] += a[i] * b[i];
    return sum_lanes(acc);
}

static float dot_f16(const float *a, const ty_f16 *b, int64_t n) {
    float acc[DOT_LANES] = {0};
    int64_t i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int j = 0; j < DOT_LANES; j++) acc[j] += a[i + j] * f16_table[b[i + j]];
    for (int j = 0; i < n; i++, j++) acc[j] += a[i] * f16_table[b[i]];
    return sum_lanes(acc);
}

/* Row r (counting over dimensions 1..3) of a tensor whose rows may be strided. */
static inline void *row_ptr(const struct ty_tensor *t, int64_t r) {
    int64_t i1 = r % t->ne[1], i2 = (r / t->ne[1]) % t->ne[2], i3 = r / (t->ne[1] * t->ne[2]);
    return ty__tensor_row(t, i1, i2, i3);
}

/* ==== Memory ==== */

static enum ty_status cpu_buffer_alloc(struct ty_backend *be, struct ty_buffer *buf, size_t size) {
    buf->data = ty__malloc_aligned(size ? size : 1);
    if (!buf->data)
        return ty__error(TY_ERR_NO_MEMORY, "out of memory allocating %zu bytes (%.1f MiB); use a smaller context", size,
                         (double)size / (1 << 20));
    buf->host = true;
    return TY_OK;
}

static enum ty_status cpu_buffer_wrap(struct ty_backend *be, struct ty_buffer *buf, void *host, size_t size) {
    buf->data = host;
    buf->host = true;
    return TY_OK;
}

static void cpu_buffer_free(struct ty_backend *be, struct ty_buffer *buf) {
    if (!buf->wrapped) ty__free_aligned(buf->data);
    buf->data = NULL;
}

static enum ty_status cpu_tensor_set(struct ty_backend *be, const struct ty_tensor *t, const void *src, size_t offset,
                                     size_t size) {
    memcpy((char *)ty__tensor_host(t) + offset, src, size);
    return TY_OK;
}

static enum ty_status cpu_tensor_get(struct ty_backend *be, const struct ty_tensor *t, void *dst, size_t offset,
                                     size_t size) {
    memcpy(dst, (const char *)ty__tensor_host(t) + offset, size);
    return TY_OK;
}

/* ==== Ops ==== */

static enum ty_status cpu_get_rows(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *w,
                                   const struct ty_tensor *ids) {
    const struct ty_type_traits *tr = ty__type_traits(w->type);
    const int32_t *id = ty__tensor_host(ids);
    for (int64_t t = 0; t < dst->ne[1]; t++) {
        TY_ASSERT(id[t] >= 0 && id[t] < w->ne[1]);
        tr->to_float(ty__tensor_row(w, id[t], 0, 0), ty__tensor_row(dst, t, 0, 0), w->ne[0]);
    }
    return TY_OK;
}

void ty__cpu_rms_norm_row(const float *x, const float *w, float eps, int64_t d, float *y) {
    /* the mean of squares rounded once, as a pairwise f32 sum nearly is; eight running sums, which the compilers
     * keep in one vector (a single sum is a chain of dependent adds, six times slower here) */
    double part[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++) part[j] += (double)x[i + j] * x[i + j];
    double ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (; i < d; i++) ss += (double)x[i] * x[i];
    float var = (float)(ss / (double)d);
    float scale = 1.0f / sqrtf(var + eps);
    for (i = 0; i < d; i++) y[i] = w[i] * (x[i] * scale);
}

static enum ty_status cpu_rms_norm(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *x,
                                   const struct ty_tensor *w, float eps) {
    const float *wt = ty__tensor_host(w);
    for (int64_t r = 0; r < ty__tensor_nrows(x); r++)
        ty__cpu_rms_norm_row(row_ptr(x, r), wt, eps, x->ne[0], row_ptr(dst, r));
    return TY_OK;
}

struct matmul_task {
    const struct ty_tensor *dst, *w, *x, *bias;
    const struct ty_type_traits *tr;
};

static void matmul_rows(void *arg, int ith, int nth) {
    const struct matmul_task *m = arg;
    const struct ty_tensor *dst = m->dst, *w = m->w, *x = m->x;
    int64_t n_in = w->ne[0], n_tok = x->ne[1];
    int64_t r0, r1;
    ty__split_range(w->ne[1], ith, nth, &r0, &r1);
    const float *bias = m->bias ? ty__tensor_host(m->bias) : NULL;
    float tmp[MATMUL_CHUNK];
    size_t block_bytes = m->tr->type_size;
    int64_t block = m->tr->block_size;
    for (int64_t r = r0; r < r1; r++) {
        const char *wrow = ty__tensor_row(w, r, 0, 0);
        for (int64_t c0 = 0; c0 < n_in; c0 += MATMUL_CHUNK) {
            int64_t len = n_in - c0 < MATMUL_CHUNK ? n_in - c0 : MATMUL_CHUNK;
            const char *src = wrow + (size_t)(c0 / block) * block_bytes;
            const float *wv;
            if (w->type == TY_TYPE_F32 && (uintptr_t)src % sizeof(float) == 0) {
                wv = (const float *)src; /* read in place */
            } else {
                m->tr->to_float(src, tmp, len);
                wv = tmp;
            }
            for (int64_t t = 0; t < n_tok; t++) {
                const float *xv = (const float *)ty__tensor_row(x, t, 0, 0) + c0;
                float *out = (float *)ty__tensor_row(dst, t, 0, 0) + r;
                float part = dot_f32(wv, xv, len);
                *out = c0 == 0 ? part : *out + part;
            }
        }
        if (bias)
            for (int64_t t = 0; t < n_tok; t++) ((float *)ty__tensor_row(dst, t, 0, 0))[r] += bias[r];
    }
}

static enum ty_status cpu_matmul(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *w,
                                 const struct ty_tensor *x, const struct ty_tensor *bias) {
    struct ty_cpu_ctx *c = be->ctx;
    struct matmul_task m = {dst, w, x, bias, ty__type_traits(w->type)};
    if (w->ne[0] == 0) { /* an empty sum: only the bias remains */
        for (int64_t t = 0; t < x->ne[1]; t++)
            for (int64_t r = 0; r < w->ne[1]; r++)
                ((float *)ty__tensor_row(dst, t, 0, 0))[r] = bias ? ((const float *)ty__tensor_host(bias))[r] : 0;
        return TY_OK;
    }
    run_split(c, (double)w->ne[0] * (double)w->ne[1] * (double)x->ne[1], matmul_rows, &m);
    return TY_OK;
}

void ty__cpu_rope_angles(const struct ty_rope *rope, int32_t pos, float *cs, float *sn) {
    /* HF: angle = inv_freq * pos as an f32 product, then cos/sin, each times the attention factor. */
    for (int i = 0; i < rope->n_dims / 2; i++) {
        float theta = rope->inv_freq[i] * (float)pos;
        cs[i] = (float)cos((double)theta) * rope->attn_factor;
        sn[i] = (float)sin((double)theta) * rope->attn_factor;
    }
}

void ty__cpu_rope_head(const struct ty_rope *rope, const float *cs, const float *sn, const float *x, float *y,
                       int64_t head_dim) {
    /* through a stack copy: in place (y == x, as attn_input rotates), a direct loop fails the compilers' overlap
     * check and runs one element at a time */
    int half = rope->n_dims / 2;
    float t[TY_ROPE_MAX_DIMS];
    for (int i = 0; i < half; i++) {
        float x0 = x[i], x1 = x[i + half];
        t[i] = x0 * cs[i] - x1 * sn[i];
        t[i + half] = x1 * cs[i] + x0 * sn[i];
    }
    memcpy(y, t, sizeof(float) * (size_t)rope->n_dims);
    if (y != x)
        for (int64_t i = rope->n_dims; i < head_dim; i++) y[i] = x[i];
}

static enum ty_status cpu_rope(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *x,
                               const struct ty_tensor *pos, const struct ty_rope *rope) {
    const int32_t *p = ty__tensor_host(pos);
    float cs[TY_ROPE_MAX_DIMS / 2], sn[TY_ROPE_MAX_DIMS / 2];
    for (int64_t t = 0; t < x->ne[2]; t++) {
        ty__cpu_rope_angles(rope, p[t], cs, sn);
        for (int64_t h = 0; h < x->ne[1]; h++)
            ty__cpu_rope_head(rope, cs, sn, ty__tensor_row(x, h, t, 0), ty__tensor_row(dst, h, t, 0), x->ne[0]);
    }
    return TY_OK;
}

/* ==== Element-wise ops, rows split among the threads ==== */

struct rows_task {
    const struct ty_tensor *dst, *a, *b;
    void (*row)(const struct rows_task *t, int64_t r);
};

static void rows_run(void *arg, int ith, int nth) {
    const struct rows_task *t = arg;
    int64_t r0, r1;
    ty__split_range(ty__tensor_nrows(t->dst), ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) t->row(t, r);
}

/* Every row of dst through t->row, on the pool when there is enough of them (a prefill's residual adds and KV
 * writes; a decode step's single rows stay on the caller). */
static void each_row(struct ty_backend *be, const struct rows_task *t) {
    run_split(be->ctx, (double)ty__tensor_nrows(t->dst) * (double)t->dst->ne[0], rows_run, (void *)t);
}

void ty__cpu_convert_row(enum ty_type type, const float *s, void *o, int64_t d) {
    if (type == TY_TYPE_F32)
        memmove(o, s, (size_t)d * sizeof(float));
    else if (type == TY_TYPE_F16)
        ty__f32_to_f16_row(s, o, d);
    else
        for (int64_t i = 0; i < d; i++) ((ty_bf16 *)o)[i] = ty__f32_to_bf16(s[i]);
}

static void copy_row(const struct rows_task *t, int64_t r) {
    ty__cpu_convert_row(t->dst->type, row_ptr(t->a, r), row_ptr(t->dst, r), t->a->ne[0]);
}

static enum ty_status cpu_copy(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *src) {
    if (dst->type != TY_TYPE_F32 && dst->type != TY_TYPE_F16 && dst->type != TY_TYPE_BF16)
        return ty__error(TY_ERR_UNSUPPORTED, "copy to %s is not supported", ty_type_name(dst->type));
    struct rows_task t = {dst, src, NULL, copy_row};
    if (dst->buf == src->buf) /* an f32 copy within one buffer may overlap from row to row: one thread, in order */
        rows_run(&t, 0, 1);
    else
        each_row(be, &t);
    return TY_OK;
}

struct attn_task {
    const struct ty_tensor *dst, *q, *k, *v;
    const struct ty_attn *attn;        /* contiguous keys: one sequence */
    const struct ty_paged_attn *paged; /* or keys in a paged pool: a batch of sequences */
};

/* One (query, head) pair: a single pass over the visible keys with a running maximum, so no score row of the
 * context's length is ever stored (the "online softmax" of Milakov & Gimelshein, 2018). Query column t sees n_keys
 * keys; key j is row j of k and v, or with a block table row table[j / block] * block + j % block of the pool. The
 * contiguous and the paged op share this loop, so both give the same bits for the same keys. */
static void attend_one(const struct attn_task *a, int64_t t, int64_t h, int64_t n_keys, const int32_t *table,
                       int32_t block) {
    const struct ty_tensor *q = a->q, *k = a->k, *v = a->v;
    int64_t dk = q->ne[0], dv = v->ne[0];
    int64_t kvh = h / (q->ne[1] / k->ne[1]);
    bool f16 = k->type == TY_TYPE_F16;
    const float *qr = ty__tensor_row(q, h, t, 0);
    float acc[TY_ATTN_MAX_HEAD_DIM];
    for (int64_t d = 0; d < dv; d++) acc[d] = 0.0f;
    float max = -INFINITY, sum = 0.0f;
    for (int64_t j = 0; j < n_keys; j++) {
        int64_t row = table ? (int64_t)table[j / block] * block + j % block : j;
        const void *kr = ty__tensor_row(k, kvh, row, 0);
        float score = (f16 ? dot_f16(qr, kr, dk) : dot_f32(qr, kr, dk)) * a->attn->scale;
        if (score > max) {
            float c = expf(max - score);
            sum *= c;
            for (int64_t d = 0; d < dv; d++) acc[d] *= c;
            max = score;
        }
        float p = expf(score - max);
        sum += p;
        const void *vr = ty__tensor_row(v, kvh, row, 0);
        if (f16)
            for (int64_t d = 0; d < dv; d++) acc[d] += p * f16_table[((const ty_f16 *)vr)[d]];
        else
            for (int64_t d = 0; d < dv; d++) acc[d] += p * ((const float *)vr)[d];
    }
    float *out = ty__tensor_row(a->dst, h, t, 0);
    for (int64_t d = 0; d < dv; d++) out[d] = acc[d] / sum;
}

static void attention_pairs(void *arg, int ith, int nth) {
    const struct attn_task *a = arg;
    int64_t n_head = a->q->ne[1];
    int64_t i0, i1;
    ty__split_range(a->q->ne[2] * n_head, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) attend_one(a, i / n_head, i % n_head, a->attn->pos0 + i / n_head + 1, NULL, 0);
}

static enum ty_status cpu_attention(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                    const struct ty_tensor *k, const struct ty_tensor *v, const struct ty_attn *attn) {
    struct ty_cpu_ctx *c = be->ctx;
    struct attn_task a = {dst, q, k, v, attn, NULL};
    double n = (double)q->ne[2], keys = (double)attn->pos0 + (n + 1) / 2; /* average keys per query */
    run_split(c, n * (double)q->ne[1] * keys * (double)(q->ne[0] + v->ne[0]), attention_pairs, &a);
    return TY_OK;
}

/* The (token, head) pairs of a paged batch, numbered sequence after sequence, split evenly among the threads. */
static void attention_paged_pairs(void *arg, int ith, int nth) {
    const struct attn_task *a = arg;
    const struct ty_paged_attn *p = a->paged;
    int64_t n_head = a->q->ne[1], total = 0;
    for (int32_t s = 0; s < p->n_seqs; s++) total += (int64_t)p->seqs[s].n * n_head;
    int64_t i0, i1;
    ty__split_range(total, ith, nth, &i0, &i1);
    for (int32_t s = 0, first = 0; s < p->n_seqs && first < i1; first += p->seqs[s].n * (int32_t)n_head, s++) {
        const struct ty_paged_seq *sq = &p->seqs[s];
        int64_t end = first + (int64_t)sq->n * n_head;
        for (int64_t i = first > i0 ? first : i0; i < end && i < i1; i++) {
            int64_t t = (i - first) / n_head, h = (i - first) % n_head;
            attend_one(a, sq->col + t, h, sq->pos0 + t + 1, sq->table, p->block);
        }
    }
}

static enum ty_status cpu_attention_paged(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                          const struct ty_tensor *k_pool, const struct ty_tensor *v_pool,
                                          const struct ty_paged_attn *p) {
    struct ty_cpu_ctx *c = be->ctx;
    struct ty_attn attn = {p->scale, 0}; /* only the scale is read; positions come per sequence */
    struct attn_task a = {dst, q, k_pool, v_pool, &attn, p};
    double work = 0;
    for (int32_t s = 0; s < p->n_seqs; s++) work += p->seqs[s].n * ((double)p->seqs[s].pos0 + (p->seqs[s].n + 1) / 2.0);
    run_split(c, work * (double)q->ne[1] * (double)(q->ne[0] + v_pool->ne[0]), attention_paged_pairs, &a);
    return TY_OK;
}

/* silu(g) u = g / (1 + e^-g) u, written with e = exp(-|g|) <= 1 so that one vectorised exp serves both signs:
 * g >= 0: g / (1 + e); g < 0: g e / (1 + e). */
static inline float silu_times(float g, float u) {
    const float e = ty__exp_nonpositive1(-fabsf(g)), num = g >= 0.0f ? g : g * e;
    return num / (1.0f + e) * u;
}

void ty__cpu_swiglu_row(const float *g, const float *u, float *o, int64_t n) {
    /* 16 elements at a time through a stack block, which both compilers turn into straight vector code even in place
     * (o == g) and for the short rows a prefill's slices give */
    float t[16];
    int64_t i0 = 0;
    for (; i0 + 16 <= n; i0 += 16) {
        for (int j = 0; j < 16; j++) t[j] = silu_times(g[i0 + j], u[i0 + j]);
        memcpy(o + i0, t, sizeof t);
    }
    for (; i0 < n; i0++) o[i0] = silu_times(g[i0], u[i0]);
}

static void swiglu_row(const struct rows_task *t, int64_t r) {
    ty__cpu_swiglu_row(row_ptr(t->a, r), row_ptr(t->b, r), row_ptr(t->dst, r), t->dst->ne[0]);
}

static enum ty_status cpu_swiglu(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *gate,
                                 const struct ty_tensor *up) {
    each_row(be, &(struct rows_task){dst, gate, up, swiglu_row});
    return TY_OK;
}

static void add_row(const struct rows_task *t, int64_t r) {
    const float *x = row_ptr(t->a, r), *y = row_ptr(t->b, r);
    float *o = row_ptr(t->dst, r), s[256]; /* through a stack block: the residual add is in place (o == x), which
                                            * fails the compilers' overlap check for a direct loop */
    for (int64_t i0 = 0; i0 < t->dst->ne[0]; i0 += 256) {
        const int64_t m = t->dst->ne[0] - i0 < 256 ? t->dst->ne[0] - i0 : 256;
        for (int64_t i = 0; i < m; i++) s[i] = x[i0 + i] + y[i0 + i];
        memcpy(o + i0, s, sizeof(float) * (size_t)m);
    }
}

static enum ty_status cpu_add(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *a,
                              const struct ty_tensor *b) {
    each_row(be, &(struct rows_task){dst, a, b, add_row});
    return TY_OK;
}

static enum ty_status cpu_scatter_add(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *src,
                                      const struct ty_tensor *ids, const struct ty_tensor *scale) {
    ty__scatter_add_host(dst, src, ids, scale);
    return TY_OK;
}

/* The linear-attention ops below split independent rows, channels or heads among the threads, each computed by one
 * thread as a whole, so results do not depend on the thread count. */
struct linear_task {
    const struct ty_tensor *dst, *x, *w, *state;
    float eps;
    bool silu;
};

static void l2_norm_rows(void *arg, int ith, int nth) {
    const struct linear_task *a = arg;
    int64_t r0, r1;
    ty__split_range(ty__tensor_nrows(a->x), ith, nth, &r0, &r1);
    ty__l2_norm_host(a->dst, a->x, a->eps, r0, r1);
}

static enum ty_status cpu_l2_norm(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *x,
                                  float eps) {
    struct linear_task a = {.dst = dst, .x = x, .eps = eps};
    run_split(be->ctx, 3.0 * (double)ty__tensor_nelements(x), l2_norm_rows, &a);
    return TY_OK;
}

static void conv1d_channels(void *arg, int ith, int nth) {
    const struct linear_task *a = arg;
    int64_t b0, b1; /* in blocks of 16 channels, so that each thread's vector loops run whole */
    ty__split_range((a->x->ne[0] + 15) / 16, ith, nth, &b0, &b1);
    ty__conv1d_causal_host(a->dst, a->x, a->w, a->state, a->silu, b0 * 16,
                           b1 * 16 < a->x->ne[0] ? b1 * 16 : a->x->ne[0]);
}

static enum ty_status cpu_conv1d_causal(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *x,
                                        const struct ty_tensor *w, const struct ty_tensor *state, bool silu) {
    struct linear_task a = {.dst = dst, .x = x, .w = w, .state = state, .silu = silu};
    run_split(be->ctx, 8.0 * (double)ty__tensor_nelements(x) * (double)w->ne[0], conv1d_channels, &a);
    return TY_OK;
}

struct gdn_task {
    const struct ty_tensor *dst, *q, *k, *v, *g, *beta, *state;
    float scale;
};

static void gated_delta_heads(void *arg, int ith, int nth) {
    const struct gdn_task *a = arg;
    int64_t h0, h1;
    ty__split_range(a->v->ne[1], ith, nth, &h0, &h1);
    ty__gated_delta_host(a->dst, a->q, a->k, a->v, a->g, a->beta, a->state, a->scale, TY_GDN_AUTO, h0, h1);
}

static enum ty_status cpu_gated_delta(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                      const struct ty_tensor *k, const struct ty_tensor *v, const struct ty_tensor *g,
                                      const struct ty_tensor *beta, const struct ty_tensor *state, float scale) {
    struct ty_cpu_ctx *c = be->ctx;
    struct gdn_task a = {dst, q, k, v, g, beta, state, scale};
    run_split(c, 3.0 * (double)v->ne[1] * (double)v->ne[2] * (double)q->ne[0] * (double)v->ne[0], gated_delta_heads,
              &a);
    return TY_OK;
}

/* ==== The backend ==== */

static void cpu_free(struct ty_backend *be) {
    struct ty_cpu_ctx *c = be->ctx;
    ty__threadpool_free(c->pool);
    ty_free(c);
    ty_free(be);
}

const struct ty_backend_iface ty__cpu_ref_iface = {
    .version = TY_BACKEND_IFACE_VERSION,
    .name = "cpu-ref",
    .free = cpu_free,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_wrap = cpu_buffer_wrap,
    .buffer_free = cpu_buffer_free,
    .tensor_set = cpu_tensor_set,
    .tensor_get = cpu_tensor_get,
    .sync = NULL, /* every op has finished when it returns */
    .get_rows = cpu_get_rows,
    .rms_norm = cpu_rms_norm,
    .matmul = cpu_matmul,
    .rope = cpu_rope,
    .copy = cpu_copy,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .scatter_add = cpu_scatter_add,
    .l2_norm = cpu_l2_norm,
    .conv1d_causal = cpu_conv1d_causal,
    .gated_delta = cpu_gated_delta,
    .attention_paged = cpu_attention_paged,
};

void ty__cpu_ref_setup(void) {
    pthread_once(&f16_table_once, f16_table_init);
}

enum ty_status ty__backend_cpu_ref_init(int n_threads, struct ty_backend **out) {
    *out = NULL;
    ty__cpu_ref_setup();
    struct ty_backend *be = ty__calloc(1, sizeof *be);
    struct ty_cpu_ctx *c = ty__calloc(1, sizeof *c);
    if (!be || !c) {
        ty_free(be);
        ty_free(c);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory creating the CPU backend");
    }
    enum ty_status st = ty__threadpool_init(n_threads, &c->pool);
    if (st != TY_OK) {
        ty_free(be);
        ty_free(c);
        return st;
    }
    be->iface = &ty__cpu_ref_iface;
    be->ctx = c;
    *out = be;
    return TY_OK;
}
