/*
 * cpu.c - the fast CPU backend ("cpu"): the reference backend (cpu-ref.c) with the matrix products, where a forward
 * pass spends its time, done by the SIMD kernel library (simd/simd.h) on the dispatch path TY_CPU_ISA names (else
 * the best this CPU has), attention done flash style (cpu-attn.c), and the fusions of backend.h versions 3 to 5
 * (weight_prepare, matmul_multi, matmul_swiglu; attn_input, ffn_input; attn_block, ffn). Every other op is the
 * reference's own function, shared through its table.
 *
 * Weights. weight_prepare copies each weight matrix once, at load, into memory on transparent huge pages, repacked
 * into 16-row panels (ty__pack, the layout the fastest kernels read) where the dispatch path has panel kernels for the
 * type (on AVX-512: every type; elsewhere the 32-element block types), else byte for byte. Huge pages decide decode
 * speed: one thread streams 16.5 GB/s from the 4 KiB pages of a file mapping and 26.9 GB/s from 2 MiB pages on the
 * 2-core Zen 4 (base.h, ty__huge_calloc). The file-mapped original stays for the other ops (get_rows of tied
 * embeddings). A matrix nobody prepared runs from the file in its own layout.
 *
 * One matrix product (or several sharing an input: matmul_multi) is one dispatch of the thread pool:
 *   1. the threads quantise the input's columns to the activation format of each weight type (once per column and
 *      format, however many weights read them), then meet at a barrier;
 *   2. the weights' rows, in 16-row units over all weights of the call, are split into one contiguous range per
 *      thread, so the threads stream disjoint weight bytes; each thread runs its range over every column, in column
 *      blocks whose activations stay in L2 while the weights stream past, then takes over what another thread has
 *      not reached (the shares below), so a core the host slows does not hold the product back.
 * A product of a few columns (decode) skips the barrier: the caller quantises the columns before the dispatch, and
 * each thread streams its own share (one contiguous range of the call's rows over all its weights, as a static split
 * would give it, so the hardware prefetcher sees long streams): all of it but a small reserve in one take, then the
 * reserve in halves; a thread done with its share takes halves from the back of another's (struct share, take). The
 * workers join only if they are free before the caller is done (ty__threadpool_run_any), so on a busy machine a thread
 * the OS holds back is not waited for: its share is taken over. While the caller works alone between two such
 * products, each worker reads the head of its next share into its cache (see "Reading ahead"). A decode step's layer
 * halves (attn_block, ffn) each run their products and attention as one dispatch of phases (see "A layer's halves").
 *
 * Batch invariance. A column's result is bit for bit the same whatever the number of columns, the other weights of
 * a matmul_multi or the thread count, because every column goes through one kernel chosen by (path, weight type)
 * alone: gemm_packed where it works straight on panels (gemm_packed_direct: one column is gemv_packed's, see
 * simd.h), else gemv one column at a time over L1-sized row tiles. Both compute each row independently of the rows
 * around it.
 * So a token decoded alone equals the same token inside a prefill or a batch of sequences, which continuous
 * batching relies on. (The price, on paths without direct panel kernels for a type: its prefill runs at gemv speed
 * on cached tiles rather than with the repacking panel gemm of simd/gemm.c.)
 */
#include "chip/cpu/cpu-impl.h"
#include "chip/cpu/roofline.h"
#include "chip/cpu/simd/simd.h"
#include "model/quant.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* Rows per work unit of the split among threads: a packed panel. */
#define UNIT_ROWS TY_PACK_ROWS
/* Bytes of quantised activations a column block keeps in L2 while the weights stream past. */
#define COL_BLOCK_BYTES (256 << 10)
/* ... but a block of at least this many columns where every product runs on panels (gemm_packed_direct), whose
 * tiles are unpacked once per block and whose weights stream once per block: with long rows (Qwen2.5-7B's down
 * product, 18944 inputs) the byte rule gave 8 columns, and the AVX2 panel gemm of a thread's 1792 rows ran at 96
 * GOP/s on one thread against 146 with 64 (a /tmp harness over ty__simd_gemm_packed); Qwen3-8B's down (12288) 130
 * against 152. `tongyun bench -p 256 --profile` of Qwen2.5-7B Q4_0 (mkmodel --layers 4), one thread, three runs
 * alternating: ffn 11.7-12.0 -> 10.3-10.7 ms a token; Qwen2.5-0.5B's ffn (down: 48 -> 64 columns) unchanged. */
#define MIN_DIRECT_COL_BLOCK 64
/* Weight bytes of a row tile that gemv runs over every column of a block (non-direct types). */
#define TILE_BYTES (32 << 10)
/* Rows of gate and up a swiglu product of many columns computes before it combines them (over every column): their
 * outputs for a prefill of 512 tokens, 2 x 64 rows x 512 x 4 bytes, stay in L2. */
#define SWIGLU_ROWS (4 * UNIT_ROWS)
/* Columns ahead whose gate and up rows the swiglu asks for while it combines the current one. */
#define SWIGLU_AHEAD 4
/* Below this many multiply-adds a product runs on the calling thread: waking the pool would cost more. */
#define MIN_PARALLEL_WORK (1 << 16)
/* Products of at most this many columns are quantised by the caller and shared out among the threads (decode). */
#define FEW_COLS 4
/* The part of a thread's share of a few-column product that it keeps back from its first take, to even out the
 * threads' finishing times (see take): 1/SHARE_RESERVE of the share, at least MIN_RESERVE units. */
#define SHARE_RESERVE 16
#define MIN_RESERVE   4
/* Bytes of its share of the next few-column product that a worker reads ahead while it waits for it (see
 * idle_prefetch): well inside its L2, so they are still there when it streams them. */
#define IDLE_PREFETCH_BYTES (256 << 10)
/* Huge-page arena chunks for prepared weights. */
#define ARENA_CHUNK ((size_t)64 << 20)

/* ==== State ==== */

/* A weight matrix copied by weight_prepare. */
struct prepared {
    const void *key; /* host address of row 0 of the original (NULL: empty slot) */
    int64_t n, rows;
    enum ty_type type;
    bool packed;      /* panels of ty__pack, else rows in the original layout */
    const void *data; /* in the arena */
    size_t stride;    /* panel stride (packed) or row bytes */
    int32_t next;     /* few-column products led by this weight: the slot of struct cpu_fast's `next` that says where
                       * each worker's share of the product after it began last time, or -1 */
};

/* Where a worker's share of a few-column product begins: its first bytes, up to IDLE_PREFETCH_BYTES, in one stream. */
struct share_head {
    const char *p;
    size_t bytes;
};

/* The share head a worker reads ahead after its current task (idle_prefetch), one per cache line. Written by the
 * caller before a dispatch, taken by the worker after it; both fields atomic, so a worker that races with the next
 * dispatch at worst reads ahead a mismatched range (a prefetch never faults). */
struct ahead {
    _Alignas(64) _Atomic(const char *) p;
    atomic_size_t bytes;
};

struct chunk {
    void *base;
    size_t size, used;
};

/* The RoPE cos/sin of each column of the last attn_input batch, reused by the next call with the same positions and
 * RoPE (every later layer of the same forward pass): the angles cost 64 libm calls a column, about as much as the
 * rest of the head steps. Each thread fills the columns it quantises, the ones whose heads it later rotates (mm_run).
 */
struct angles {
    struct ty_rope rope; /* the key: RoPE and positions */
    int32_t *pos;        /* (cols) */
    float *cs, *sn;      /* (cols, n_dims / 2) */
    int64_t cols;
    void *mem;  /* pos, cs and sn */
    size_t cap; /* bytes of mem */
};

struct cpu_fast {
    struct ty_cpu_ctx base; /* first: the reference ops see only this */
    const struct ty_simd *simd;
    const struct ty_simd *k[TY_TYPE_COUNT]; /* the table whose kernels each weight type uses (see kernel_tables) */
    int n_threads;
    struct prepared *tab; /* open addressing on key, power-of-two capacity */
    size_t tab_cap, tab_n;
    struct chunk *chunks;
    int n_chunks, chunks_cap;
    size_t prepared_bytes;
    struct ty_cpu_scratch act;       /* quantised activations of the current call */
    struct ty_cpu_scratch act2;      /* a fused call's second product: each thread's quantised input */
    struct ty_cpu_scratch attn;      /* attention tiles and running state, per thread */
    struct ty_cpu_scratch attn_meta; /* a paged batch's sequence descriptors */
    void *scratch;                   /* (n_threads) gemm scratch areas */
    struct share *shares; /* (2 x n_threads) each thread's share of a threaded product, then of a fused call's second */
    struct angles angles; /* attn_input's RoPE cos/sin of the current batch's positions */
    /* Reading ahead (see idle_prefetch): slots of n_threads share heads each, learned from the order of the calls;
     * the leading weight of the last few-column product (NULL: none, or a larger product since); per worker, the
     * range to read after its task. */
    struct share_head *next;
    int32_t n_next, next_cap;
    const void *last_key;
    struct ahead *ahead;
    size_t handed;  /* bytes of share heads handed to the workers (ty__cpu_read_ahead_handed) */
    size_t chained; /* attn_block and ffn calls run as one dispatch (ty__cpu_chained_calls) */
    /* Held by every op that uses the scratch or the table above, so that contexts on several application threads
     * may share one model (the reference backend keeps no state and needs none). */
    pthread_mutex_t mu;
    size_t scratch_each;
};

/* A thread's share of a few-column product's row units, as a range [lo, hi) of its own sequence of units (see
 * share_units) packed into one word: the owner takes chunks from the front, a thread done with its own share takes
 * them from the back, each with one compare-and-swap. One per cache line. */
struct share {
    _Alignas(64) atomic_uint_least64_t lohi;
};

/* ==== Huge-page arena ==== */

static void *arena_alloc(struct cpu_fast *c, size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    if (c->n_chunks > 0) {
        struct chunk *k = &c->chunks[c->n_chunks - 1];
        if (k->size - k->used >= bytes) {
            void *p = (char *)k->base + k->used;
            k->used += bytes;
            return p;
        }
    }
    if (c->n_chunks == c->chunks_cap) {
        int cap = c->chunks_cap ? 2 * c->chunks_cap : 16;
        struct chunk *nk = ty__realloc(c->chunks, (size_t)cap * sizeof *nk);
        if (!nk) return NULL;
        c->chunks = nk, c->chunks_cap = cap;
    }
    size_t size = bytes > ARENA_CHUNK ? bytes : ARENA_CHUNK;
    void *base = ty__huge_calloc(1, size);
    if (!base) return NULL;
    c->chunks[c->n_chunks++] = (struct chunk){base, size, bytes};
    return base;
}

/* ==== Prepared weights ==== */

static size_t key_hash(const void *key, size_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)key * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 20) & (cap - 1);
}

static const struct prepared *lookup(const struct cpu_fast *c, const struct ty_tensor *w) {
    if (c->tab_n == 0) return NULL;
    const void *key = ty__tensor_host(w);
    for (size_t i = key_hash(key, c->tab_cap);; i = (i + 1) & (c->tab_cap - 1)) {
        const struct prepared *p = &c->tab[i];
        if (!p->key) return NULL;
        if (p->key == key && p->n == w->ne[0] && p->rows == w->ne[1] && p->type == w->type) return p;
    }
}

/* The prepared entry whose key is `key`, or NULL. */
static struct prepared *find_key(struct cpu_fast *c, const void *key) {
    if (!key || c->tab_n == 0) return NULL;
    for (size_t i = key_hash(key, c->tab_cap);; i = (i + 1) & (c->tab_cap - 1)) {
        if (!c->tab[i].key) return NULL;
        if (c->tab[i].key == key) return &c->tab[i];
    }
}

static enum ty_status tab_insert(struct cpu_fast *c, const struct prepared *e) {
    if (2 * (c->tab_n + 1) > c->tab_cap) {
        size_t cap = c->tab_cap ? 2 * c->tab_cap : 256;
        struct prepared *nt = ty__calloc(cap, sizeof *nt);
        if (!nt) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the table of prepared weights");
        for (size_t i = 0; i < c->tab_cap; i++) {
            if (!c->tab[i].key) continue;
            size_t j = key_hash(c->tab[i].key, cap);
            while (nt[j].key) j = (j + 1) & (cap - 1);
            nt[j] = c->tab[i];
        }
        ty_free(c->tab);
        c->tab = nt, c->tab_cap = cap;
    }
    size_t j = key_hash(e->key, c->tab_cap);
    while (c->tab[j].key && c->tab[j].key != e->key) j = (j + 1) & (c->tab_cap - 1);
    if (!c->tab[j].key) c->tab_n++;
    c->tab[j] = *e;
    return TY_OK;
}

struct pack_task {
    enum ty_type type;
    int64_t n, rows;
    const char *src;
    size_t src_stride, panel_stride, row_bytes;
    char *dst;
    bool pack;
};

/* Panels (or plain rows, 16 at a time) split among the threads: loading a large model packs gigabytes. */
static void pack_rows(void *arg, int ith, int nth) {
    const struct pack_task *p = arg;
    int64_t u0, u1, units = (p->rows + TY_PACK_ROWS - 1) / TY_PACK_ROWS;
    ty__split_range(units, ith, nth, &u0, &u1);
    int64_t r0 = u0 * TY_PACK_ROWS, r1 = u1 * TY_PACK_ROWS < p->rows ? u1 * TY_PACK_ROWS : p->rows;
    if (r0 >= r1) return;
    if (p->pack)
        ty__pack(p->type, r1 - r0, p->n, p->src + (size_t)r0 * p->src_stride, p->src_stride,
                 p->dst + (size_t)u0 * p->panel_stride);
    else
        for (int64_t r = r0; r < r1; r++)
            memcpy(p->dst + (size_t)r * p->row_bytes, p->src + (size_t)r * p->src_stride, p->row_bytes);
}

static enum ty_status prepare_locked(struct cpu_fast *c, const struct ty_tensor *w);

static enum ty_status cpu_weight_prepare(struct ty_backend *be, const struct ty_tensor *w) {
    struct cpu_fast *c = be->ctx;
    pthread_mutex_lock(&c->mu);
    enum ty_status st = prepare_locked(c, w);
    pthread_mutex_unlock(&c->mu);
    return st;
}

static enum ty_status prepare_locked(struct cpu_fast *c, const struct ty_tensor *w) {
    const struct ty_simd *s = c->k[w->type];
    if (!w->buf->host || !ty__simd_has(s, w->type) || w->ne[0] == 0 || w->ne[1] == 0) return TY_OK;
    const int64_t n = w->ne[0], rows = w->ne[1];
    const struct ty_type_traits *tr = ty__type_traits(w->type);
    const size_t row_bytes = tr->type_size * (size_t)(n / tr->block_size);
    const bool pack = ty__pack_supported(w->type) && s->t[w->type].gemm_packed;
    for (int64_t e = 0; e < w->ne[2]; e++) {
        const char *src = ty__tensor_row(w, 0, e, 0);
        struct prepared p = {src, n, rows, w->type, pack, NULL, 0, -1};
        size_t bytes = pack ? ty__pack_size(w->type, rows, n) : row_bytes * (size_t)rows;
        void *dst = arena_alloc(c, bytes);
        if (!dst)
            return ty__error(TY_ERR_NO_MEMORY,
                             "out of memory preparing a %s weight of %" PRId64 " x %" PRId64
                             " (%.1f MiB); use the cpu-ref backend to run from the file",
                             ty_type_name(w->type), n, rows, (double)bytes / (1 << 20));
        p.stride = pack ? ty__pack_size(w->type, TY_PACK_ROWS, n) : row_bytes;
        struct pack_task job = {w->type, n, rows, src, w->nb[1], p.stride, row_bytes, dst, pack};
        ty__threadpool_run(c->base.pool, pack_rows, &job);
        p.data = dst;
        c->prepared_bytes += bytes;
        TY_TRY(tab_insert(c, &p));
    }
    return TY_OK;
}

/* ==== Matrix products ==== */

struct mm_item {
    const void *key; /* the prepared entry's key, or NULL (running from the file) */
    const struct ty_tensor *dst;
    const float *bias; /* (rows) or NULL */
    enum ty_type type;
    const void *w; /* rows or panels */
    size_t stride; /* row bytes or panel stride */
    bool packed;   /* panels */
    bool direct;   /* through gemm_packed, else gemv column by column */
    int slot;      /* activation slot */
    int64_t rows;
    int64_t unit0; /* first global unit */
    int64_t units;
};

struct mm_task {
    struct cpu_fast *c;
    const struct ty_tensor *x;
    int64_t n, cols;
    int n_items;
    struct mm_item it[TY_MATMUL_MULTI_MAX];
    int n_slots;
    enum ty_type slot_type[TY_MATMUL_MULTI_MAX]; /* a weight type whose activation format the slot holds */
    char *slot_act[TY_MATMUL_MULTI_MAX];
    size_t slot_stride[TY_MATMUL_MULTI_MAX];
    size_t act_each; /* nonzero: each thread quantises the input for itself, thread ith's slots at ith * act_each */
    int64_t units;   /* over all items */
    int64_t col_blk; /* columns per block */
    int64_t reserve; /* what a share's first take leaves (see take) */
    bool swiglu;     /* two items of the same shape, split alike: item 0's dst = silu(item 0) * item 1 */
    /* ffn_input / attn_input fusions */
    const float *norm_w; /* input RMSNorm applied to each column as it is quantised (NULL: x as it is) */
    float eps;
    float *norm_rows;                  /* (n, n_threads) one normed column per thread */
    const struct ty_attn_input *heads; /* q/k head norms and RoPE once the products are done, or NULL */
    struct angles *angles;             /* with heads: their cos/sin per column */
    bool fill_angles;                  /* computed in this call (else kept from the last) */
    struct share *shares; /* (nth) each thread's own share, taken over from the back when idle; NULL: one thread */
    bool threaded;        /* worth the pool */
    /* fused calls (attn_block, ffn) */
    atomic_llong *done;            /* units finished, counted after each take (NULL: not counted) */
    const struct ty_tensor *resid; /* the residual stream each row's result is added to (NULL: none) */
};

/* Rows [r0, r1) of one item, every column. */
static void run_item_rows(const struct mm_task *t, const struct mm_item *it, int64_t r0, int64_t r1, void *scratch) {
    const struct ty_simd *s = t->c->k[it->type];
    const char *act = t->slot_act[it->slot];
    const size_t xs = t->slot_stride[it->slot];
    const size_t ld = it->dst->nb[1] / sizeof(float);
    float *out0 = ty__tensor_host(it->dst);
    const int64_t n = t->n;
    for (int64_t c0 = 0; c0 < t->cols; c0 += t->col_blk) {
        const int64_t nc = t->cols - c0 < t->col_blk ? t->cols - c0 : t->col_blk;
        if (it->direct) {
            const void *w = (const char *)it->w + (size_t)(r0 / TY_PACK_ROWS) * it->stride;
            ty__simd_gemm_packed(s, it->type, n, r1 - r0, w, it->stride, nc, act + (size_t)c0 * xs, xs,
                                 out0 + (size_t)c0 * ld + r0, (int64_t)ld, scratch);
            continue;
        }
        /* gemv over row tiles that stay in L1 while every column of the block passes */
        int64_t tile = (int64_t)(TILE_BYTES / (it->packed ? it->stride / TY_PACK_ROWS : it->stride));
        tile = tile < UNIT_ROWS ? UNIT_ROWS : tile / UNIT_ROWS * UNIT_ROWS;
        if (nc == 1) tile = r1 - r0; /* one column (decode): one stream, rows do not depend on the tiling */
        for (int64_t ra = r0; ra < r1; ra += tile) {
            const int64_t rb = r1 - ra < tile ? r1 : ra + tile;
            for (int64_t c = c0; c < c0 + nc; c++) {
                float *out = out0 + (size_t)c * ld + ra;
                const void *x = act + (size_t)c * xs;
                if (it->packed)
                    ty__simd_gemv_packed(s, it->type, n, rb - ra,
                                         (const char *)it->w + (size_t)(ra / TY_PACK_ROWS) * it->stride, it->stride, x,
                                         out);
                else
                    ty__simd_gemv(s, it->type, n, rb - ra, (const char *)it->w + (size_t)ra * it->stride, it->stride, x,
                                  out);
            }
        }
    }
    if (it->bias)
        for (int64_t c = 0; c < t->cols; c++) {
            float *out = out0 + (size_t)c * ld;
            for (int64_t r = r0; r < r1; r++) out[r] += it->bias[r];
        }
    if (t->resid) /* the add op's element order: x + out */
        for (int64_t c = 0; c < t->cols; c++) {
            const float *out = out0 + (size_t)c * ld;
            float *x = ty__tensor_row(t->resid, c, 0, 0);
            for (int64_t r = r0; r < r1; r++) x[r] = x[r] + out[r];
        }
}

/* Rows [r0, r1) of every column of a gate/up pair: item 0's output becomes silu(item 0) * item 1, the reference's
 * swiglu element for element. */
static void swiglu_combine(const struct mm_task *t, int64_t r0, int64_t r1) {
    for (int64_t c = 0; c < t->cols; c++) {
        if (c + SWIGLU_AHEAD < t->cols) /* a few hundred bytes a column, columns rows apart: no stream to detect */
            for (int i = 0; i < 2; i++) {
                const char *p = (const char *)ty__tensor_row(t->it[i].dst, c + SWIGLU_AHEAD, 0, 0) + r0 * 4;
                for (int64_t b = 0; b < (r1 - r0) * 4; b += 64) __builtin_prefetch(p + b);
            }
        float *o = (float *)ty__tensor_row(t->it[0].dst, c, 0, 0) + r0;
        ty__cpu_swiglu_row(o, (const float *)ty__tensor_row(t->it[1].dst, c, 0, 0) + r0, o, r1 - r0);
    }
}

/* Units [u0, u1) of the call: the rows they cover in each item (in swiglu mode, the same rows of both, combined). */
static void run_units(const struct mm_task *t, int64_t u0, int64_t u1, void *scratch) {
    if (t->swiglu) {
        /* Many columns: a few panels at a time, so the swiglu reads both outputs while they are still in L2. Few
         * columns (decode): the whole range of gate, then of up, then the swiglu. Switching between the two weights
         * every few panels cost one thread 17% of its stream; combining on the caller after the dispatch cost it a
         * serial pass over both outputs, half of them written by the other core (2.4 us a layer at 4864 rows, and
         * each line another core wrote is a transfer between them). */
        const struct mm_item *g = &t->it[0], *u = &t->it[1];
        const int64_t end = u1 * UNIT_ROWS < g->rows ? u1 * UNIT_ROWS : g->rows;
        const int64_t step = t->cols <= FEW_COLS ? end : SWIGLU_ROWS;
        for (int64_t r0 = u0 * UNIT_ROWS; r0 < end; r0 += step) {
            const int64_t r1 = end - r0 < step ? end : r0 + step;
            run_item_rows(t, g, r0, r1, scratch);
            run_item_rows(t, u, r0, r1, scratch);
            swiglu_combine(t, r0, r1);
        }
        return;
    }
    for (int i = 0; i < t->n_items; i++) {
        const struct mm_item *it = &t->it[i];
        int64_t a = u0 > it->unit0 ? u0 : it->unit0, b = u1 < it->unit0 + it->units ? u1 : it->unit0 + it->units;
        if (a >= b) continue;
        int64_t r0 = (a - it->unit0) * UNIT_ROWS, r1 = (b - it->unit0) * UNIT_ROWS;
        run_item_rows(t, it, r0, r1 < it->rows ? r1 : it->rows, scratch);
    }
}

/* Columns [c0, c1) of the input, into every activation slot. */
static void quantize_cols(const struct mm_task *t, int64_t c0, int64_t c1, int ith) {
    for (int64_t col = c0; col < c1; col++) {
        const float *src = ty__tensor_row(t->x, col, 0, 0);
        if (t->norm_w) { /* the layer's input norm, on the way into the quantiser: no normed copy of x is stored */
            float *r = t->norm_rows + (size_t)ith * (size_t)t->n;
            ty__cpu_rms_norm_row(src, t->norm_w, t->eps, t->n, r);
            src = r;
        }
        for (int slot = 0; slot < t->n_slots; slot++)
            ty__simd_quantize_act(t->c->k[t->slot_type[slot]], t->slot_type[slot], src,
                                  t->slot_act[slot] + (size_t)col * t->slot_stride[slot], t->n);
    }
}

/* Columns [c0, c1) of the angle cache, from the positions it holds. */
static void fill_angles(struct angles *an, int64_t c0, int64_t c1) {
    const int64_t half = an->rope.n_dims / 2;
    for (int64_t c = c0; c < c1; c++) ty__cpu_rope_angles(&an->rope, an->pos[c], an->cs + c * half, an->sn + c * half);
}

/* Head h of column c of attn_input's q (key false) or k (key true): RMS-normed when the model has head norms, then
 * rotated. */
static void head_step(const struct ty_attn_input *a, const struct angles *an, bool key, int64_t h, int64_t c) {
    const struct ty_tensor *h3 = key ? a->k3 : a->q3, *hn = key ? a->k_norm : a->q_norm;
    const int64_t half = an->rope.n_dims / 2;
    float *r = ty__tensor_row(h3, h, c, 0);
    if (hn) ty__cpu_rms_norm_row(r, ty__tensor_host(hn), a->eps, h3->ne[0], r);
    ty__cpu_rope_head(a->rope, an->cs + c * half, an->sn + c * half, r, r, h3->ne[0]);
}

/* Columns [c0, c1) of attn_input's q and k, every head. */
static void qk_heads(const struct ty_attn_input *a, const struct angles *an, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
        for (int64_t h = 0; h < a->q3->ne[1]; h++) head_step(a, an, false, h, c);
        for (int64_t h = 0; h < a->k3->ne[1]; h++) head_step(a, an, true, h, c);
    }
}

/* Points the angle cache at attn_input's positions and RoPE: true when they differ from the last call's, so the
 * angles must be computed again (the key is set here, the angles by fill_angles). */
static enum ty_status angles_prepare(struct angles *an, const struct ty_attn_input *a, int64_t cols, bool *fill) {
    const int32_t *pos = ty__tensor_host(a->pos);
    *fill = !(an->cols == cols && memcmp(&an->rope, a->rope, sizeof an->rope) == 0 &&
              memcmp(an->pos, pos, (size_t)cols * sizeof *pos) == 0);
    if (!*fill) return TY_OK;
    const size_t half = (size_t)(a->rope->n_dims / 2), bytes = (size_t)cols * (sizeof *pos + 2 * half * sizeof(float));
    if (bytes > an->cap) { /* one block: positions, then cos, then sin */
        ty_free(an->mem);
        an->cols = 0, an->cap = 0; /* no valid key until filled */
        if (!(an->mem = ty__malloc(bytes)))
            return ty__error(TY_ERR_NO_MEMORY, "out of memory for the RoPE angles of %" PRId64 " tokens", cols);
        an->cap = bytes;
    }
    an->pos = an->mem, an->cs = (float *)(an->pos + cols), an->sn = an->cs + (size_t)cols * half;
    an->rope = *a->rope, an->cols = cols;
    memcpy(an->pos, pos, (size_t)cols * sizeof *pos);
    return TY_OK;
}

/* Thread r's share of the call: the r-th of nth contiguous ranges of the call's units, over its items in order. A
 * thread streams one weight after another, never switching back; where the weights lie next to each other in the
 * arena (prepared in file order: q/k/v and gate/up in the files Tongyun writes), a share is one stream. Runs
 * positions [v0, v1) of the share (nothing when scratch is NULL) and returns its length. */
static int64_t share_units(const struct mm_task *t, int r, int nth, int64_t v0, int64_t v1, void *scratch) {
    int64_t lo, hi;
    ty__split_range(t->units, r, nth, &lo, &hi);
    if (scratch && v0 < v1) run_units(t, lo + v0, lo + v1 < hi ? lo + v1 : hi, scratch);
    return hi - lo;
}

/* Takes units from a share: its owner from the front, all but `reserve` while more than twice that is left, else half
 * of what is left; another thread from the back, half of what is left. Each take is a compare-and-swap, which on x86
 * drains the core's outstanding loads (a locked instruction is a full fence): taking 16 units at a time cost decode up
 * to 9% (Q4_0) in the host's fast state (two threads at ~58 GB/s), so a thread streams its share in as few takes as
 * the balance at the end allows, and the halves a thread takes from another's back are each one forward stream. */
static bool take(struct share *sh, int64_t reserve, bool front, int64_t *v0, int64_t *v1) {
    uint_least64_t w = atomic_load_explicit(&sh->lohi, memory_order_relaxed);
    for (;;) {
        int64_t lo = (int64_t)(w >> 32), hi = (int64_t)(w & 0xffffffffu);
        if (lo >= hi) return false;
        int64_t n = front && hi - lo > 2 * reserve ? hi - lo - reserve : (hi - lo + 1) / 2;
        int64_t nlo = front ? lo + n : lo, nhi = front ? hi : hi - n;
        if (atomic_compare_exchange_weak_explicit(&sh->lohi, &w, (uint_least64_t)nlo << 32 | (uint_least64_t)nhi,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            *v0 = front ? lo : hi - n, *v1 = front ? lo + n : hi;
            return true;
        }
    }
}

/* Thread ith's own share, then what is left of the others' (from their backs). */
static void take_shares(const struct mm_task *t, int ith, int nth, void *scratch) {
    int64_t v0, v1;
    for (int k = 0; k < nth; k++) {
        int r = (ith + k) % nth;
        while (take(&t->shares[r], t->reserve, k == 0, &v0, &v1)) {
            share_units(t, r, nth, v0, v1, scratch);
            if (t->done) atomic_fetch_add_explicit(t->done, v1 - v0, memory_order_release);
        }
    }
}

static void mm_run(void *arg, int ith, int nth) {
    struct mm_task *t = arg;
    void *scratch = (char *)t->c->scratch + (size_t)ith * t->c->scratch_each;
    if (t->cols <= FEW_COLS) { /* quantised by the caller: the shares, or every unit on one thread */
        if (t->shares)
            take_shares(t, ith, nth, scratch);
        else
            run_units(t, 0, t->units, scratch);
        return;
    }
    /* 1. quantise (and norm) this thread's columns into every slot, then wait for all columns */
    int64_t j0, j1;
    ty__split_range(t->cols, ith, nth, &j0, &j1);
    quantize_cols(t, j0, j1, ith);
    if (t->fill_angles) fill_angles(t->angles, j0, j1);
    if (nth > 1) ty__threadpool_barrier(t->c->base.pool);
    /* 2. this thread's contiguous range of weight rows, over every column block, then what another has not reached:
     * a core the host slows (another tenant's work) no longer holds the product back */
    if (t->shares) {
        take_shares(t, ith, nth, scratch);
    } else {
        int64_t u0, u1;
        ty__split_range(t->units, ith, nth, &u0, &u1);
        run_units(t, u0, u1, scratch);
    }
    /* 3. (attn_input) once every row is done, this thread's columns of q and k: head norms and RoPE */
    if (t->heads) {
        if (nth > 1) ty__threadpool_barrier(t->c->base.pool);
        qk_heads(t->heads, t->angles, j0, j1);
    }
}

static struct ty_backend_iface cpu_iface;

/* ==== Reading ahead ====
 *
 * A decode step runs the same few-column products in the same order every token, and between two of them the caller
 * works alone (quantising, head norms, the adds, attention's setup) while the workers wait, when the memory is idle.
 * So each product's leading weight remembers where each worker's share of the product after it began last time
 * (learned as the calls come), and each worker, once its task is done, reads that much of its next share into its
 * cache while it waits (idle_prefetch, the pool's idle hook). In the next product it streams those bytes from cache,
 * finishes its share early and takes the rest from the back of the caller's. A wrong guess costs only memory
 * traffic: results never depend on it. */

/* Thread r's share head of a few-column product: where its range of units begins, in one item. */
static struct share_head share_head(const struct mm_task *t, int r, int nth) {
    int64_t lo, hi;
    ty__split_range(t->units, r, nth, &lo, &hi);
    for (int i = 0; i < t->n_items && lo < hi; i++) {
        const struct mm_item *it = &t->it[i];
        if (lo < it->unit0 || lo >= it->unit0 + it->units) continue;
        const size_t unit = it->packed ? it->stride : (size_t)UNIT_ROWS * it->stride;
        const int64_t end = hi < it->unit0 + it->units ? hi : it->unit0 + it->units;
        size_t bytes = (size_t)(end - lo) * unit;
        if (!it->packed && end == it->unit0 + it->units)
            bytes -= (size_t)(it->units * UNIT_ROWS - it->rows) * it->stride;
        return (struct share_head){(const char *)it->w + (size_t)(lo - it->unit0) * unit,
                                   bytes < IDLE_PREFETCH_BYTES ? bytes : IDLE_PREFETCH_BYTES};
    }
    return (struct share_head){NULL, 0};
}

/* A few-column product led by `key` is about to run on the pool: teaches the previous one where this one's worker
 * shares begin, and hands each worker the share heads learned for the product after this one. */
static void read_ahead(struct cpu_fast *c, const struct mm_task *t, const void *key) {
    const int nth = c->n_threads;
    struct prepared *prev = find_key(c, c->last_key);
    if (prev && prev->next < 0) { /* a slot for it (none if memory is short: it only reads ahead less) */
        if (c->n_next == c->next_cap) {
            int32_t cap = c->next_cap ? 2 * c->next_cap : 64;
            struct share_head *nn = ty__realloc(c->next, (size_t)cap * (size_t)nth * sizeof *nn);
            if (nn) c->next = nn, c->next_cap = cap;
        }
        if (c->n_next < c->next_cap) prev->next = c->n_next++;
    }
    if (prev && prev->next >= 0)
        for (int r = 1; r < nth; r++) c->next[(size_t)prev->next * (size_t)nth + (size_t)r] = share_head(t, r, nth);
    c->last_key = key;
    const struct prepared *cur = find_key(c, key);
    if (!cur || cur->next < 0) return;
    for (int r = 1; r < nth; r++) {
        const struct share_head *h = &c->next[(size_t)cur->next * (size_t)nth + (size_t)r];
        atomic_store_explicit(&c->ahead[r].bytes, h->bytes, memory_order_relaxed);
        atomic_store_explicit(&c->ahead[r].p, h->p, memory_order_relaxed);
        c->handed += h->bytes;
    }
}

/* The size_t counter at byte `offset` of the fast backend's state, read under its lock; 0 for other backends. */
static size_t read_counter(const struct ty_backend *be, size_t offset) {
    if (be->iface != &cpu_iface) return 0;
    struct cpu_fast *c = be->ctx;
    pthread_mutex_lock(&c->mu);
    size_t n = *(const size_t *)((const char *)c + offset);
    pthread_mutex_unlock(&c->mu);
    return n;
}

size_t ty__cpu_read_ahead_handed(const struct ty_backend *be) {
    return read_counter(be, offsetof(struct cpu_fast, handed));
}

size_t ty__cpu_chained_calls(const struct ty_backend *be) {
    return read_counter(be, offsetof(struct cpu_fast, chained));
}

/* The pool's idle hook: worker ith reads ahead the range it was handed, a cache line at a time, until a task comes. */
static void idle_prefetch(void *ctx, int ith) {
    struct cpu_fast *c = ctx;
    const char *p = atomic_exchange_explicit(&c->ahead[ith].p, NULL, memory_order_relaxed);
    if (!p) return;
    const size_t bytes = atomic_load_explicit(&c->ahead[ith].bytes, memory_order_relaxed);
    for (size_t o = 0; o < bytes; o += 64) {
        if (o % 4096 == 0 && ty__threadpool_task_waiting(c->base.pool, ith)) return;
        __builtin_prefetch(p + o, 0, 3);
    }
}

enum ty_status ty__cpu_scratch_reserve(struct ty_cpu_scratch *s, size_t bytes) {
    if (bytes <= s->cap) return TY_OK;
    size_t cap = s->cap ? s->cap : 1 << 16;
    while (cap < bytes) cap *= 2;
    void *p = ty__malloc_aligned(cap);
    if (!p)
        return ty__error(TY_ERR_NO_MEMORY, "out of memory for %.1f MiB of CPU scratch; use a smaller batch",
                         (double)cap / (1 << 20));
    ty__free_aligned(s->p);
    s->p = p, s->cap = cap;
    return TY_OK;
}

void ty__cpu_scratch_free(struct ty_cpu_scratch *s) {
    ty__free_aligned(s->p);
    s->p = NULL, s->cap = 0;
}

static bool has_kernels(const struct cpu_fast *c, const struct ty_tensor *w) {
    return ty__simd_has(c->k[w->type], w->type) && w->ne[0] > 0 && w->buf->host;
}

/* What a fused call adds around its products: the input norm (ffn_input, attn_input) and the q/k head steps
 * (attn_input). */
struct fusion {
    const struct ty_tensor *norm;
    float eps;
    const struct ty_attn_input *heads;
};

/* How a product joins a fused call (attn_block, ffn; see "A layer's halves in one dispatch"). */
enum mm_role {
    MM_ALONE,  /* a call of its own */
    MM_FIRST,  /* the first phase: on the pool however small */
    MM_SECOND, /* the second: on the pool, its input quantised by each thread for itself once the first is done */
};

/* Fills t for the products of one input: the items, the activation slots in `act`, the shares in `shares`, and (a few
 * columns, unless MM_SECOND) the quantised input. Weights without kernels are computed here by the reference, on every
 * thread (*ref_s: the seconds that took, with a profile); the fused callers never pass those. `swiglu`: two weights
 * of one shape whose outputs combine into dst[0] (matmul_swiglu). `fu` (or NULL): the fused norm and head steps. */
static enum ty_status mm_prepare(struct ty_backend *be, struct mm_task *t, enum mm_role role,
                                 struct ty_cpu_scratch *act, struct share *shares, int n_w,
                                 const struct ty_tensor *const *dst, const struct ty_tensor *const *w,
                                 const struct ty_tensor *x, const struct ty_tensor *const *bias, bool swiglu,
                                 const struct fusion *fu, double *ref_s) {
    struct cpu_fast *c = be->ctx;
    memset(t, 0, sizeof *t);
    t->c = c, t->x = x, t->n = x->ne[0], t->cols = x->ne[1], t->swiglu = swiglu;
    if (fu) t->norm_w = ty__tensor_host(fu->norm), t->eps = fu->eps, t->heads = fu->heads;
    double work = 0;
    size_t act_bytes = 0, act_col_bytes = 0;
    bool all_direct = true;
    for (int i = 0; i < n_w; i++) {
        const struct ty_tensor *b = bias ? bias[i] : NULL;
        const struct ty_simd *s = c->k[w[i]->type];
        if (!has_kernels(c, w[i])) {
            TY_ASSERT(!swiglu && !fu && role == MM_ALONE);
            /* no kernels for this type (or nothing to sum): the reference computes it, on every thread */
            const double t0 = be->profile ? ty__time_s() : 0;
            TY_TRY(ty__cpu_ref_iface.matmul(be, dst[i], w[i], x, b));
            if (be->profile) *ref_s += ty__time_s() - t0;
            continue;
        }
        struct mm_item *it = &t->it[t->n_items++];
        it->dst = dst[i];
        it->bias = b ? ty__tensor_host(b) : NULL;
        it->type = w[i]->type;
        it->rows = w[i]->ne[1];
        const struct prepared *p = lookup(c, w[i]);
        if (p) {
            it->key = p->key, it->w = p->data, it->stride = p->stride, it->packed = p->packed;
        } else {
            it->w = ty__tensor_host(w[i]), it->stride = w[i]->nb[1], it->packed = false;
        }
        it->direct = it->packed && s->t[it->type].gemm_packed_direct;
        all_direct &= it->direct;
        it->unit0 = t->units;
        it->units = (it->rows + UNIT_ROWS - 1) / UNIT_ROWS;
        t->units += it->units;
        work += (double)t->n * (double)it->rows * (double)t->cols;
        /* one slot per activation format */
        enum ty_act_format fmt = ty__simd_act_format(s, it->type);
        int slot = 0;
        while (slot < t->n_slots && ty__simd_act_format(c->k[t->slot_type[slot]], t->slot_type[slot]) != fmt) slot++;
        if (slot == t->n_slots) {
            t->slot_type[slot] = it->type;
            t->slot_stride[slot] = ty__simd_act_row_size(s, it->type, t->n);
            act_bytes += t->slot_stride[slot] * (size_t)t->cols;
            act_col_bytes += t->slot_stride[slot];
            t->n_slots++;
        }
        it->slot = slot;
    }
    if (t->n_items == 0) return TY_OK;
    size_t norm_bytes = t->norm_w ? (size_t)c->n_threads * (size_t)t->n * sizeof(float) : 0;
    act_bytes = (act_bytes + 63) & ~(size_t)63;
    const size_t copies = role == MM_SECOND ? (size_t)c->n_threads : 1;
    if (role == MM_SECOND) t->act_each = act_bytes;
    TY_TRY(ty__cpu_scratch_reserve(act, copies * act_bytes + norm_bytes));
    size_t off = 0;
    for (int i = 0; i < t->n_slots; i++) {
        t->slot_act[i] = (char *)act->p + off;
        off += t->slot_stride[i] * (size_t)t->cols;
    }
    t->norm_rows = (float *)((char *)act->p + copies * act_bytes);
    int64_t blk = (int64_t)(COL_BLOCK_BYTES / (act_col_bytes ? act_col_bytes : 1));
    const int64_t least = all_direct ? MIN_DIRECT_COL_BLOCK : 8;
    t->col_blk = blk < least ? least : blk / 8 * 8;
    if (t->swiglu) t->units = t->it[0].units; /* each unit covers the same rows of both */
    t->threaded = c->n_threads > 1 && (work >= MIN_PARALLEL_WORK || role != MM_ALONE);
    if (t->cols <= FEW_COLS && role != MM_SECOND) quantize_cols(t, 0, t->cols, 0);
    const int64_t reserve = t->units / c->n_threads / SHARE_RESERVE;
    t->reserve = reserve < MIN_RESERVE ? MIN_RESERVE : reserve;
    if (t->heads) { /* last before the dispatch: a key set here is always followed by its angles */
        t->angles = &c->angles;
        TY_TRY(angles_prepare(t->angles, t->heads, t->cols, &t->fill_angles));
    }
    if (t->threaded) {
        t->shares = shares;
        for (int r = 0; r < c->n_threads; r++)
            atomic_store_explicit(&shares[r].lohi, (uint_least64_t)share_units(t, r, c->n_threads, 0, 0, NULL),
                                  memory_order_relaxed);
    }
    return TY_OK;
}

/* Products of one input: quantises it once per activation format, then runs every weight's rows on the pool (see
 * mm_prepare for the arguments). */
static enum ty_status run_products(struct ty_backend *be, int n_w, const struct ty_tensor *const *dst,
                                   const struct ty_tensor *const *w, const struct ty_tensor *x,
                                   const struct ty_tensor *const *bias, bool swiglu, const struct fusion *fu) {
    struct cpu_fast *c = be->ctx;
    const double t_entry = be->profile ? ty__time_s() : 0;
    double threaded_s = 0; /* of the time before the dispatch, the reference's products (with a profile) */
    struct mm_task t;
    TY_TRY(mm_prepare(be, &t, MM_ALONE, &c->act, c->shares, n_w, dst, w, x, bias, swiglu, fu, &threaded_s));
    if (t.n_items == 0) return TY_OK;
    if (t.threaded && t.cols <= FEW_COLS)
        read_ahead(c, &t, t.it[0].key);
    else
        c->last_key = NULL; /* not one of a decode step's products */
    const double t_run = be->profile ? ty__time_s() : 0;
    if (!t.threaded)
        mm_run(&t, 0, 1);
    else if (t.cols <= FEW_COLS)
        ty__threadpool_run_any(c->base.pool, mm_run, &t); /* a worker that is not free is not waited for */
    else
        ty__threadpool_run(c->base.pool, mm_run, &t); /* every thread: the quantising is split among them */
    const double t_ran = be->profile ? ty__time_s() : 0;
    if (t.heads && t.cols <= FEW_COLS) { /* few columns: the caller's, after the rows */
        if (t.fill_angles) fill_angles(t.angles, 0, t.cols);
        qk_heads(t.heads, t.angles, 0, t.cols);
    }
    if (be->profile) ty__profile_alone(be, (t_run - t_entry - threaded_s) + (ty__time_s() - t_ran)); /* around mm_run */
    return TY_OK;
}

/* run_products with the backend's lock held. */
static enum ty_status products(struct ty_backend *be, int n_w, const struct ty_tensor *const *dst,
                               const struct ty_tensor *const *w, const struct ty_tensor *x,
                               const struct ty_tensor *const *bias, bool swiglu, const struct fusion *fu) {
    struct cpu_fast *c = be->ctx;
    pthread_mutex_lock(&c->mu);
    enum ty_status st = run_products(be, n_w, dst, w, x, bias, swiglu, fu);
    pthread_mutex_unlock(&c->mu);
    return st;
}

static enum ty_status cpu_matmul_multi(struct ty_backend *be, int n_w, const struct ty_tensor *const *dst,
                                       const struct ty_tensor *const *w, const struct ty_tensor *x,
                                       const struct ty_tensor *const *bias) {
    return products(be, n_w, dst, w, x, bias, false, NULL);
}

static enum ty_status cpu_matmul(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *w,
                                 const struct ty_tensor *x, const struct ty_tensor *bias) {
    const struct ty_tensor *d[1] = {dst}, *ws[1] = {w}, *b[1] = {bias};
    return products(be, 1, d, ws, x, b, false, NULL);
}

/* The feed-forward input in one dispatch: each thread computes the same rows of gate and up and combines them while
 * they are in cache (no separate swiglu pass over memory), a few panels at a time for many columns, its whole take of
 * rows for a few (see run_units). */
static enum ty_status cpu_matmul_swiglu(struct ty_backend *be, const struct ty_tensor *dst,
                                        const struct ty_tensor *w_gate, const struct ty_tensor *w_up,
                                        const struct ty_tensor *x, const struct ty_tensor *up) {
    struct cpu_fast *c = be->ctx;
    const struct ty_tensor *d[2] = {dst, up}, *ws[2] = {w_gate, w_up};
    if (has_kernels(c, w_gate) && has_kernels(c, w_up)) return products(be, 2, d, ws, x, NULL, true, NULL);
    TY_TRY(products(be, 2, d, ws, x, NULL, false, NULL));
    return ty__cpu_ref_iface.swiglu(be, dst, dst, up);
}

/* rms_norm then matmul_swiglu, the norm done by the quantiser (see quantize_cols). */
static enum ty_status cpu_ffn_input(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *w_gate,
                                    const struct ty_tensor *w_up, const struct ty_tensor *x,
                                    const struct ty_tensor *norm, float eps, const struct ty_tensor *xn,
                                    const struct ty_tensor *up) {
    struct cpu_fast *c = be->ctx;
    if (!has_kernels(c, w_gate) || !has_kernels(c, w_up)) {
        TY_TRY(ty__cpu_ref_iface.rms_norm(be, xn, x, norm, eps));
        return cpu_matmul_swiglu(be, dst, w_gate, w_up, xn, up);
    }
    const struct ty_tensor *d[2] = {dst, up}, *ws[2] = {w_gate, w_up};
    struct fusion fu = {norm, eps, NULL};
    return products(be, 2, d, ws, x, NULL, true, &fu);
}

/* The attention input in one dispatch: normed input quantised once, q/k/v rows, then (after a barrier, or on the
 * caller for a few columns) each thread's columns of q and k head-normed and rotated while they are in cache. */
static enum ty_status cpu_attn_input(struct ty_backend *be, const struct ty_attn_input *a) {
    struct cpu_fast *c = be->ctx;
    if (!has_kernels(c, a->wq) || !has_kernels(c, a->wk) || !has_kernels(c, a->wv))
        return ty__attn_input_unfused(be, a);
    const struct ty_tensor *d[3] = {a->q, a->k, a->v}, *w[3] = {a->wq, a->wk, a->wv}, *b[3] = {a->bq, a->bk, a->bv};
    struct fusion fu = {a->norm, a->eps, a};
    return products(be, 3, d, w, a->x, b, false, &fu);
}

/* ==== A layer's halves in one dispatch (attn_block, ffn) ====
 *
 * Decode runs a layer as a handful of products, and each dispatch costs a hand-over both ways: the worker wakes, the
 * caller waits for its end, then works alone (quantising the next input, head steps, the residual add) while the
 * worker waits. So for a few columns each half of a layer is one dispatch of phases: every thread that joins takes
 * work of a phase (shares of a product, attention's units), waits until all of it is done (a completion count, not a
 * barrier, so ty__threadpool_run_any still leaves out a worker the OS holds back), and goes on to the next.
 *   attn_block: q/k/v (the caller quantised the normed input) | per KV head: its q and k heads normed and rotated,
 *               its keys and values written to the cache, attention (cpu-attn.c's fused units; a thread takes the
 *               heads of its own range first, whose q rows it mostly computed) | the output projection.
 *   ffn:        gate/up with SwiGLU (the caller quantised the normed input) | down.
 * The last phase quantises the phase before's output on each thread for itself (both threads read all of it anyway)
 * and adds each row of its product into the residual stream as it is done. Kernels and each element's operations are
 * those of the ops one by one (attn_input, attention, matmul, add; ffn_input, matmul, add), so the bits are too. */

struct chain {
    struct cpu_fast *c;
    struct mm_task *first;  /* the first product, its takes counted into `done` */
    struct mm_task *second; /* the last product, of the phase before's output, into the residual */
    atomic_llong done;
    /* attn_block: the layer's attention input and output (the batch's RoPE angles: c->angles) */
    const struct ty_attn_input *in;
    const struct ty_attn_output *out;
};

static void *thread_scratch(const struct cpu_fast *c, int ith) {
    return (char *)c->scratch + (size_t)ith * c->scratch_each;
}

/* The first product's shares, then the wait for all of it. */
static void first_phase(void *arg, int ith, int nth) {
    struct chain *ch = arg;
    take_shares(ch->first, ith, nth, thread_scratch(ch->c, ith));
    ty__threadpool_wait_count(&ch->done, ch->first->units);
}

/* The last product on thread ith, once its input is complete: its own copy of the input quantised, then the shares. */
static void second_phase(void *arg, int ith, int nth) {
    const struct chain *ch = arg;
    struct mm_task mine = *ch->second;
    for (int s = 0; s < mine.n_slots; s++) mine.slot_act[s] += (size_t)ith * mine.act_each;
    quantize_cols(&mine, 0, mine.cols, ith);
    take_shares(&mine, ith, nth, thread_scratch(ch->c, ith));
}

static void chain_run(void *arg, int ith, int nth) {
    first_phase(arg, ith, nth);
    second_phase(arg, ith, nth);
}

/* attn_block's step before attention over KV head g, columns [c0, c1): the head steps of g's group of q heads and of
 * k head g (attn_input's, see qk_heads), then g's new keys and values into the cache (the copy op's rows). */
static void attn_unit(void *arg, int64_t g, int64_t c0, int64_t c1) {
    const struct chain *ch = arg;
    const struct ty_attn_input *in = ch->in;
    const struct ty_attn_output *out = ch->out;
    const struct angles *an = &ch->c->angles;
    const int64_t group = in->q3->ne[1] / in->k3->ne[1];
    for (int64_t c = c0; c < c1; c++) {
        for (int64_t h = g * group; h < (g + 1) * group; h++) head_step(in, an, false, h, c);
        head_step(in, an, true, g, c);
        ty__cpu_convert_row(out->k_new->type, ty__tensor_row(out->k, g, c, 0), ty__tensor_row(out->k_new, g, c, 0),
                            out->k->ne[0]);
        ty__cpu_convert_row(out->v_new->type, ty__tensor_row(out->v, g, c, 0), ty__tensor_row(out->v_new, g, c, 0),
                            out->v->ne[0]);
    }
}

/* Whether a fused call can take its one-dispatch path: a few columns, several threads, kernels for every weight. */
static bool chain_fits(const struct cpu_fast *c, int64_t cols, int n_w, const struct ty_tensor *const *w) {
    if (c->n_threads < 2 || cols > FEW_COLS) return false;
    for (int i = 0; i < n_w; i++)
        if (!has_kernels(c, w[i])) return false;
    return true;
}

static enum ty_status run_ffn(struct ty_backend *be, const struct ty_ffn *f) {
    struct cpu_fast *c = be->ctx;
    const double t_entry = be->profile ? ty__time_s() : 0;
    const struct ty_tensor *d1[2] = {f->gate, f->up}, *w1[2] = {f->w_gate, f->w_up};
    const struct fusion fu = {f->norm, f->eps, NULL};
    struct mm_task first, second;
    struct chain ch = {c, &first, &second, 0, NULL, NULL};
    TY_TRY(mm_prepare(be, &first, MM_FIRST, &c->act, c->shares, 2, d1, w1, f->x, NULL, true, &fu, NULL));
    TY_TRY(mm_prepare(be, &second, MM_SECOND, &c->act2, c->shares + c->n_threads, 1, &f->proj, &f->w_down, f->gate,
                      NULL, false, NULL, NULL));
    first.done = &ch.done, second.resid = f->x;
    read_ahead(c, &first, first.it[0].key);
    c->chained++;
    if (be->profile) ty__profile_alone(be, ty__time_s() - t_entry);
    ty__threadpool_run_any(c->base.pool, chain_run, &ch);
    return TY_OK;
}

/* The feed-forward block: the norm on the way into gate/up's quantiser, gate/up and SwiGLU, then down with the
 * residual add, in one dispatch for a few columns (above); ffn_input, matmul and add for many. */
static enum ty_status cpu_ffn(struct ty_backend *be, const struct ty_ffn *f) {
    struct cpu_fast *c = be->ctx;
    const struct ty_tensor *w[3] = {f->w_gate, f->w_up, f->w_down};
    if (!chain_fits(c, f->x->ne[1], 3, w)) return ty__ffn_unfused(be, f);
    pthread_mutex_lock(&c->mu);
    enum ty_status st = run_ffn(be, f);
    pthread_mutex_unlock(&c->mu);
    return st;
}

static enum ty_status run_attn_block(struct ty_backend *be, const struct ty_attn_input *in,
                                     const struct ty_attn_output *out) {
    struct cpu_fast *c = be->ctx;
    const double t_entry = be->profile ? ty__time_s() : 0;
    const struct ty_tensor *d1[3] = {in->q, in->k, in->v}, *w1[3] = {in->wq, in->wk, in->wv};
    const struct ty_tensor *b1[3] = {in->bq, in->bk, in->bv}, att2 = ty__attn_output_flat(out);
    const struct fusion fu = {in->norm, in->eps, NULL}; /* no heads: those are the attention units' (attn_unit) */
    struct mm_task first, second;
    struct chain ch = {c, &first, &second, 0, in, out};
    TY_TRY(mm_prepare(be, &first, MM_FIRST, &c->act, c->shares, 3, d1, w1, in->x, b1, false, &fu, NULL));
    TY_TRY(mm_prepare(be, &second, MM_SECOND, &c->act2, c->shares + c->n_threads, 1, &out->proj, &out->wo, &att2, NULL,
                      false, NULL, NULL));
    first.done = &ch.done, second.resid = out->x;
    bool fill;
    TY_TRY(angles_prepare(&c->angles, in, in->x->ne[1], &fill));
    if (fill) fill_angles(&c->angles, 0, in->x->ne[1]);
    read_ahead(c, &first, first.it[0].key);
    c->chained++;
    if (be->profile) ty__profile_alone(be, ty__time_s() - t_entry);
    const struct ty_cpu_attn_hooks hooks = {first_phase, second_phase, attn_unit, &ch};
    return ty__cpu_attention_fused(c->base.pool, &c->attn, out->att, out->q, out->k_all, out->v_all, &out->attn,
                                   &hooks);
}

/* A layer's attention block: as above in one dispatch for a few columns, else attn_input and the ops one by one. */
static enum ty_status cpu_attn_block(struct ty_backend *be, const struct ty_attn_input *in,
                                     const struct ty_attn_output *out) {
    struct cpu_fast *c = be->ctx;
    const struct ty_tensor *w[4] = {in->wq, in->wk, in->wv, out->wo};
    if (!chain_fits(c, in->x->ne[1], 4, w) || in->x->ne[1] > ty__cpu_attention_max_fused() || out->k->ne[1] > 64)
        return ty__attn_block_unfused(be, in, out);
    pthread_mutex_lock(&c->mu);
    enum ty_status st = run_attn_block(be, in, out);
    pthread_mutex_unlock(&c->mu);
    return st;
}

/* ==== Attention ==== */

static enum ty_status cpu_attention(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                    const struct ty_tensor *k, const struct ty_tensor *v, const struct ty_attn *attn) {
    struct cpu_fast *c = be->ctx;
    pthread_mutex_lock(&c->mu);
    enum ty_status st = ty__cpu_attention(c->base.pool, &c->attn, dst, q, k, v, attn);
    pthread_mutex_unlock(&c->mu);
    return st;
}

static enum ty_status cpu_attention_paged(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                          const struct ty_tensor *k_pool, const struct ty_tensor *v_pool,
                                          const struct ty_paged_attn *p) {
    struct cpu_fast *c = be->ctx;
    pthread_mutex_lock(&c->mu);
    enum ty_status st = ty__cpu_attention_paged(c->base.pool, &c->attn, &c->attn_meta, dst, q, k_pool, v_pool, p);
    pthread_mutex_unlock(&c->mu);
    return st;
}

/* ==== The backend ==== */

static void cpu_free(struct ty_backend *be) {
    struct cpu_fast *c = be->ctx;
    ty__threadpool_free(c->base.pool);
    pthread_mutex_destroy(&c->mu);
    for (int i = 0; i < c->n_chunks; i++) ty__huge_free(c->chunks[i].base);
    ty_free(c->chunks);
    ty_free(c->tab);
    ty__cpu_scratch_free(&c->act);
    ty__cpu_scratch_free(&c->act2);
    ty__cpu_scratch_free(&c->attn);
    ty__cpu_scratch_free(&c->attn_meta);
    ty__free_aligned(c->scratch);
    ty__free_aligned(c->shares);
    ty__free_aligned(c->ahead);
    ty_free(c->next);
    ty_free(c->angles.mem);
    ty_free(c);
    ty_free(be);
}

/* The kernels of each weight type (simd.h: ty__simd_for_type). */
static void kernel_tables(struct cpu_fast *c) {
    for (int t = 0; t < TY_TYPE_COUNT; t++) c->k[t] = ty__simd_for_type(c->simd, (enum ty_type)t);
}

static pthread_once_t cpu_iface_once = PTHREAD_ONCE_INIT;

static void cpu_iface_init(void) {
    cpu_iface = ty__cpu_ref_iface; /* every op not replaced below is the reference's */
    cpu_iface.name = "cpu";
    cpu_iface.free = cpu_free;
    cpu_iface.matmul = cpu_matmul;
    cpu_iface.attention = cpu_attention;
    cpu_iface.attention_paged = cpu_attention_paged; /* must match attention bit for bit */
    cpu_iface.weight_prepare = cpu_weight_prepare;
    cpu_iface.matmul_multi = cpu_matmul_multi;
    cpu_iface.matmul_swiglu = cpu_matmul_swiglu;
    cpu_iface.attn_input = cpu_attn_input;
    cpu_iface.ffn_input = cpu_ffn_input;
    cpu_iface.attn_block = cpu_attn_block;
    cpu_iface.ffn = cpu_ffn;
}

enum ty_status ty__backend_cpu_init(int n_threads, struct ty_backend **out) {
    *out = NULL;
    const struct ty_simd *simd;
    TY_TRY(ty__simd_from_env(&simd));
    ty__cpu_ref_setup();
    pthread_once(&cpu_iface_once, cpu_iface_init);
    struct ty_backend *be = ty__calloc(1, sizeof *be);
    struct cpu_fast *c = ty__calloc(1, sizeof *c);
    if (!be || !c) {
        ty_free(be);
        ty_free(c);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory creating the CPU backend");
    }
    be->iface = &cpu_iface;
    be->ctx = c;
    pthread_mutex_init(&c->mu, NULL);
    c->simd = simd;
    kernel_tables(c);
    enum ty_status st = ty__threadpool_init(n_threads, &c->base.pool);
    if (st != TY_OK) {
        pthread_mutex_destroy(&c->mu);
        ty_free(be);
        ty_free(c);
        return st;
    }
    c->n_threads = ty__threadpool_size(c->base.pool);
    int pinned = ty__threadpool_pin(c->base.pool);
    c->scratch_each = (ty__gemm_scratch_size() + 63) & ~(size_t)63;
    c->scratch = ty__malloc_aligned(c->scratch_each * (size_t)c->n_threads);
    c->shares = ty__malloc_aligned(2 * sizeof(struct share) * (size_t)c->n_threads);
    c->ahead = ty__malloc_aligned(sizeof(struct ahead) * (size_t)c->n_threads);
    if (!c->scratch || !c->shares || !c->ahead) {
        cpu_free(be);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory for the gemm scratch of %d threads", n_threads);
    }
    for (int r = 0; r < c->n_threads; r++) atomic_init(&c->ahead[r].p, NULL), atomic_init(&c->ahead[r].bytes, 0);
    ty__threadpool_set_idle(c->base.pool, idle_prefetch, c);
    TY_LOG_D("cpu backend: %s kernels, %d threads (%d pinned)", simd->name, c->n_threads, pinned);
    *out = be;
    return TY_OK;
}
