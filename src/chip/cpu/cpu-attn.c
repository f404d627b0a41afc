/*
 * cpu-attn.c - causal attention of the fast CPU backend, flash style (Dao et al., 2022, after the online softmax of
 * Milakov & Gimelshein, 2018): keys and values are visited in tiles of TILE_KEYS positions with a running maximum and
 * sum per (query, head), so no score row as long as the context is ever stored.
 *
 * Work unit: one KV head and a block of up to QUERY_BLOCK consecutive queries of one sequence (a paged batch holds
 * several sequences, each with its own keys in a paged pool, found through its block table). A tile of keys and values
 * is converted to f32 once (f16 caches: exactly) and then serves every query of the block and every query head of the
 * KV head's group (GQA), so a prefill reads each cached tile once per query block instead of once per (query, head).
 * Threads take units from a shared counter, which evens out the causal triangle's growing rows, and a worker the OS
 * has not scheduled in time is not waited for (ty__threadpool_run_any).
 *
 * Batch invariance: a (query, head) pair runs the same operations in the same order whichever block or unit it is in:
 * tiles start at absolute positions (multiples of TILE_KEYS), the visible part of a tile depends only on the query's
 * own position, and each dot product and update is a fixed sequence of f32 operations. So a token decoded alone gets
 * the same bits as inside a prefill or a batch, which continuous batching relies on.
 */
#include "chip/cpu/cpu-impl.h"
#include "chip/cpu/simd/simd.h"
#include "chip/cpu/simd/vexp.h"

#include <math.h>
#include <stdatomic.h>

#define TILE_KEYS   64
#define QUERY_BLOCK 16
#define VALUE_CHUNK 64 /* output dimensions accumulated in registers at a time */

/* 16 floats as one value (GCC/clang vector extension): accumulators the compiler keeps in registers (one zmm, two
 * ymm or four xmm, whatever the target has), where a float array indexed in a loop was spilled to the stack on every
 * key. Loads and stores go through memcpy, so any alignment works. */
typedef float v16 __attribute__((vector_size(64)));
/* Four consecutive v16 (64 floats) from or to memory; macros, since passing such vectors to functions changes the
 * ABI where the build targets no AVX-512 (-Wpsabi). */
#define LOAD64(v, p)  memcpy((v), (p), 4 * sizeof(v16))
#define STORE64(p, v) memcpy((p), (v), 4 * sizeof(v16))

/* The queries of one sequence: columns [col, col + n) at positions pos0.., keys through `table` (NULL: contiguous). */
struct attn_seq {
    int64_t col, n, pos0;
    const int32_t *table;
    int64_t block;
};

struct attn_task {
    const struct ty_tensor *dst, *q, *k, *v;
    float scale;
    int64_t group; /* query heads per KV head */
    const struct attn_seq *seqs;
    int64_t n_seqs;
    int64_t n_units;      /* (sequence, query block, KV head) triples */
    const int64_t *unit0; /* (n_seqs + 1) first unit of each sequence */
    char *scratch;
    size_t per_thread;
    atomic_llong next; /* the next unit to take */
};

/* One thread's scratch: a tile of keys and values in f32, then the running state of QUERY_BLOCK x group pairs, then
 * one tile's scores. */
static size_t scratch_floats(int64_t dk, int64_t dv, int64_t group) {
    size_t pairs = (size_t)QUERY_BLOCK * (size_t)group;
    return (size_t)TILE_KEYS * (size_t)(dk + dv) + pairs * (size_t)(dv + 2) + TILE_KEYS;
}

/* y = exp(x) for x <= 0 (and -inf), within 2 ulp: the softmax weights. A plain loop of f32 arithmetic the compiler
 * turns into vector code, where libm's expf is a call per element (half of a prefill's attention time). Cody-Waite
 * reduction x = n ln2 + r, |r| <= ln2 / 2, then Cephes' degree-6 polynomial for e^r and 2^n put in the exponent.
 * Kept out of line: inlined into attend_unit, clang no longer proves the loop safe to vectorise and runs it scalar
 * (a third of a prefill's attention time). */
__attribute__((noinline)) static void exp_nonpositive(const float *x, float *y, int64_t n) { /* y may be x */
    ty__exp_nonpositive(x, y, n); /* shared with the trainer: chip/cpu/simd/vexp.h */
}

/* Row conversion f16 -> f32, exact either way: the F16C instruction where the CPU has it (the table lookup costs
 * about a nanosecond per element, a tenth of a short-context decode step), else the reference's table. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
__attribute__((target("avx,f16c"))) static void f16_row_f16c(const ty_f16 *h, float *o, int64_t d) {
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(o + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < d; i++) o[i] = ty__cpu_f16_table[h[i]];
}
/* Eight keys' f16 rows (d a multiple of 8) into the transposed f32 tile: 8 x 8 blocks converted and transposed in
 * registers, where element-wise stores cost 64 scattered writes per key. */
__attribute__((target("avx,f16c"))) static void f16_keys8_transposed(const ty_f16 *const *rows, int64_t d, float *out) {
    for (int64_t e0 = 0; e0 < d; e0 += 8) {
        __m256 r[8], t[8], u[8];
        for (int k = 0; k < 8; k++) r[k] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rows[k] + e0)));
        for (int k = 0; k < 8; k += 2)
            t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]), t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
        for (int k = 0; k < 8; k += 4) {
            u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44), u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xee);
            u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44),
                  u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xee);
        }
        for (int i = 0; i < 4; i++) {
            _mm256_storeu_ps(out + (e0 + i) * TILE_KEYS, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
            _mm256_storeu_ps(out + (e0 + i + 4) * TILE_KEYS, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
        }
    }
}
static bool have_f16c(void) {
    return ty__cpu_features()->f16c;
}
#else
static void f16_keys8_transposed(const ty_f16 *const *rows, int64_t d, float *out) {
    (void)rows, (void)d, (void)out;
    TY_ASSERT(false);
}
static void f16_row_f16c(const ty_f16 *h, float *o, int64_t d) {
    for (int64_t i = 0; i < d; i++) o[i] = ty__cpu_f16_table[h[i]];
}
static bool have_f16c(void) {
    return false;
}
#endif

static void f16_row(bool hw, const ty_f16 *h, float *o, int64_t d) {
    if (hw)
        f16_row_f16c(h, o, d);
    else
        for (int64_t i = 0; i < d; i++) o[i] = ty__cpu_f16_table[h[i]];
}

/* Keys [j0, j1) of KV head g as f32: `trans` stores the tile transposed (element e of key j at e * TILE_KEYS + j -
 * j0), so the scores of a query against the whole tile are vector multiply-adds with no horizontal sums; else one
 * row of d after another. */
static void load_tile(const struct ty_tensor *c, const struct attn_seq *sq, int64_t g, int64_t j0, int64_t j1,
                      int64_t d, bool trans, float *out) {
    if (trans && j1 - j0 < TILE_KEYS) /* lanes past the last key are computed and ignored: keep them finite */
        for (int64_t i = 0; i < d; i++)
            memset(out + i * TILE_KEYS + (j1 - j0), 0, sizeof(float) * (size_t)(TILE_KEYS - (j1 - j0)));
    int64_t j = j0;
    const bool hw = c->type == TY_TYPE_F16 && have_f16c(); /* asked once per tile, not per row */
    if (trans && hw && d % 8 == 0)
        for (; j + 8 <= j1; j += 8) {
            const ty_f16 *rows[8];
            for (int k = 0; k < 8; k++) {
                int64_t jk = j + k,
                        row = sq->table ? (int64_t)sq->table[jk / sq->block] * sq->block + jk % sq->block : jk;
                rows[k] = ty__tensor_row(c, g, row, 0);
            }
            f16_keys8_transposed(rows, d, out + (j - j0));
        }
    for (; j < j1; j++) {
        int64_t row = sq->table ? (int64_t)sq->table[j / sq->block] * sq->block + j % sq->block : j;
        const void *src = ty__tensor_row(c, g, row, 0);
        size_t step = trans ? TILE_KEYS : 1;
        float *o = trans ? out + (j - j0) : out + (size_t)(j - j0) * d;
        if (c->type == TY_TYPE_F16 && !trans) {
            f16_row(hw, src, o, d);
        } else if (c->type == TY_TYPE_F16) {
            float conv[TY_ATTN_MAX_HEAD_DIM];
            for (int64_t e0 = 0; e0 < d; e0 += TY_ATTN_MAX_HEAD_DIM) {
                int64_t nd = d - e0 < TY_ATTN_MAX_HEAD_DIM ? d - e0 : TY_ATTN_MAX_HEAD_DIM;
                f16_row(hw, (const ty_f16 *)src + e0, conv, nd);
                for (int64_t i = 0; i < nd; i++) o[(e0 + i) * step] = conv[i];
            }
        } else {
            const float *f = src;
            for (int64_t i = 0; i < d; i++) o[i * step] = f[i];
        }
    }
}

static void attend_unit(const struct attn_task *a, const struct attn_seq *sq, int64_t g, int64_t qb, float *s) {
    const struct ty_tensor *q = a->q, *k = a->k, *v = a->v;
    const int64_t dk = q->ne[0], dv = v->ne[0], group = a->group, pos0 = sq->pos0;
    const int64_t t0 = qb * QUERY_BLOCK, nq = sq->n - t0 < QUERY_BLOCK ? sq->n - t0 : QUERY_BLOCK;
    const float scale = a->scale;
    float *kt = s, *vt = kt + (size_t)TILE_KEYS * dk, *acc = vt + (size_t)TILE_KEYS * dv;
    float *mx = acc + (size_t)QUERY_BLOCK * group * dv, *sum = mx + (size_t)QUERY_BLOCK * group;
    float *score = sum + (size_t)QUERY_BLOCK * group;
    const int64_t pairs = nq * group;
    for (int64_t p = 0; p < pairs; p++) mx[p] = -INFINITY, sum[p] = 0.0f;
    memset(acc, 0, sizeof(float) * (size_t)(pairs * dv));

    const int64_t last_key = pos0 + t0 + nq - 1; /* the block's last query sees keys 0 .. last_key */
    for (int64_t j0 = 0; j0 <= last_key; j0 += TILE_KEYS) {
        const int64_t j1 = j0 + TILE_KEYS - 1 < last_key ? j0 + TILE_KEYS : last_key + 1;
        load_tile(k, sq, g, j0, j1, dk, true, kt);
        load_tile(v, sq, g, j0, j1, dv, false, vt);
        for (int64_t ti = 0; ti < nq; ti++) {
            const int64_t end = pos0 + t0 + ti + 1 < j1 ? pos0 + t0 + ti + 1 : j1; /* this query's visible keys */
            if (end <= j0) continue;
            for (int64_t hi = 0; hi < group; hi++) {
                const int64_t h = g * group + hi, p = ti * group + hi;
                const float *qr = ty__tensor_row(q, h, sq->col + t0 + ti, 0);
                const int64_t nk = end - j0;
                /* scores: each key's dot product summed over e in order, in its own lane of a whole tile's worth of
                 * accumulators that stay in registers (lanes past nk hold zeros or stale keys and are not read) */
                v16 sv[4] = {{0}}; /* TILE_KEYS = 64 lanes */
                for (int64_t e = 0; e < dk; e++) {
                    const float qe = qr[e];
                    v16 k4[4];
                    LOAD64(k4, kt + (size_t)e * TILE_KEYS);
                    for (int i = 0; i < 4; i++) sv[i] += qe * k4[i];
                }
                float sc[TILE_KEYS];
                STORE64(sc, sv);
                for (int64_t j = 0; j < nk; j++) score[j] = sc[j];
                float m = -INFINITY;
                for (int64_t j = 0; j < nk; j++) {
                    score[j] *= scale;
                    m = score[j] > m ? score[j] : m;
                }
                float *o = acc + (size_t)p * dv;
                if (m > mx[p]) { /* a new maximum: rescale what was summed against the old one */
                    float c, old = mx[p] - m;
                    exp_nonpositive(&old, &c, 1);
                    sum[p] *= c;
                    for (int64_t d = 0; d < dv; d++) o[d] *= c;
                    mx[p] = m;
                }
                for (int64_t j = 0; j < nk; j++) score[j] -= mx[p];
                float *wt = sc; /* the weights, out of place: an in-place call fails the vector loop's overlap check */
                exp_nonpositive(score, wt, nk);
                for (int64_t j = 0; j < nk; j++) sum[p] += wt[j];
                /* o += sum_j w_j v_j, VALUE_CHUNK dimensions at a time in registers */
                for (int64_t d0 = 0; d0 < dv; d0 += VALUE_CHUNK) {
                    float oc[VALUE_CHUNK];
                    const int64_t nd = dv - d0 < VALUE_CHUNK ? dv - d0 : VALUE_CHUNK;
                    memcpy(oc, o + d0, sizeof(float) * (size_t)nd);
                    if (nd == VALUE_CHUNK) {
                        v16 ov[4];
                        LOAD64(ov, oc);
                        for (int64_t j = 0; j < nk; j++) {
                            const float w = wt[j];
                            v16 v4[4];
                            LOAD64(v4, vt + (size_t)j * dv + d0);
                            for (int i = 0; i < 4; i++) ov[i] += w * v4[i];
                        }
                        STORE64(oc, ov);
                    } else {
                        for (int64_t j = 0; j < nk; j++) {
                            const float w = wt[j], *vr = vt + (size_t)j * dv + d0;
                            for (int64_t d = 0; d < nd; d++) oc[d] += w * vr[d];
                        }
                    }
                    memcpy(o + d0, oc, sizeof(float) * (size_t)nd);
                }
            }
        }
    }
    for (int64_t ti = 0; ti < nq; ti++)
        for (int64_t hi = 0; hi < group; hi++) {
            const int64_t p = ti * group + hi;
            float *out = ty__tensor_row(a->dst, g * group + hi, sq->col + t0 + ti, 0);
            const float *o = acc + (size_t)p * dv;
            for (int64_t d = 0; d < dv; d++) out[d] = o[d] / sum[p];
        }
}

static void attention_units(void *arg, int ith, int nth) {
    struct attn_task *a = arg;
    float *s = (float *)(a->scratch + (size_t)ith * a->per_thread);
    const int64_t n_kv = a->k->ne[1];
    for (int64_t u; (u = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed)) < a->n_units;) {
        int64_t si = 0;
        while (a->unit0[si + 1] <= u) si++;
        int64_t w = u - a->unit0[si];
        attend_unit(a, &a->seqs[si], w % n_kv, w / n_kv, s);
    }
}

/* Runs the sequences' units on the pool (or alone when small). unit0 has n_seqs + 1 entries. */
static enum ty_status run(struct ty_threadpool *pool, struct ty_cpu_scratch *scratch, struct attn_task *a,
                          int64_t *unit0) {
    const struct ty_tensor *q = a->q, *k = a->k, *v = a->v;
    const int nth = ty__threadpool_size(pool);
    a->group = q->ne[1] / k->ne[1];
    double work = 0;
    unit0[0] = 0;
    for (int64_t i = 0; i < a->n_seqs; i++) {
        const struct attn_seq *sq = &a->seqs[i];
        unit0[i + 1] = unit0[i] + (sq->n + QUERY_BLOCK - 1) / QUERY_BLOCK * k->ne[1];
        work += (double)sq->n * ((double)sq->pos0 + (double)(sq->n + 1) / 2);
    }
    a->n_units = unit0[a->n_seqs];
    a->unit0 = unit0;
    a->per_thread = (scratch_floats(q->ne[0], v->ne[0], a->group) * sizeof(float) + 63) & ~(size_t)63;
    TY_TRY(ty__cpu_scratch_reserve(scratch, a->per_thread * (size_t)nth));
    a->scratch = scratch->p;
    work *= (double)q->ne[1] * (double)(q->ne[0] + v->ne[0]);
    atomic_init(&a->next, 0);
    if (nth == 1 || work < (1 << 16) || a->n_units < 2)
        attention_units(a, 0, 1);
    else
        ty__threadpool_run_any(pool, attention_units, a); /* whoever is free takes the next unit */
    return TY_OK;
}

enum ty_status ty__cpu_attention(struct ty_threadpool *pool, struct ty_cpu_scratch *scratch,
                                 const struct ty_tensor *dst, const struct ty_tensor *q, const struct ty_tensor *k,
                                 const struct ty_tensor *v, const struct ty_attn *attn) {
    struct attn_seq sq = {0, q->ne[2], attn->pos0, NULL, 1};
    struct attn_task a = {dst, q, k, v, attn->scale, 0, &sq, 1, 0, NULL, NULL, 0, 0};
    int64_t unit0[2];
    return run(pool, scratch, &a, unit0);
}

enum ty_status ty__cpu_attention_paged(struct ty_threadpool *pool, struct ty_cpu_scratch *scratch,
                                       struct ty_cpu_scratch *meta, const struct ty_tensor *dst,
                                       const struct ty_tensor *q, const struct ty_tensor *k_pool,
                                       const struct ty_tensor *v_pool, const struct ty_paged_attn *p) {
    if (p->n_seqs == 0) return TY_OK;
    /* per-sequence descriptors and unit offsets, in scratch that grows with the largest batch seen */
    size_t seq_bytes = ((size_t)p->n_seqs * sizeof(struct attn_seq) + 63) & ~(size_t)63;
    TY_TRY(ty__cpu_scratch_reserve(meta, seq_bytes + ((size_t)p->n_seqs + 1) * sizeof(int64_t)));
    struct attn_seq *seqs = meta->p;
    int64_t *unit0 = (int64_t *)((char *)meta->p + seq_bytes);
    for (int32_t i = 0; i < p->n_seqs; i++)
        seqs[i] = (struct attn_seq){p->seqs[i].col, p->seqs[i].n, p->seqs[i].pos0, p->seqs[i].table, p->block};
    struct attn_task a = {dst, q, k_pool, v_pool, p->scale, 0, seqs, p->n_seqs, 0, NULL, NULL, 0, 0};
    return run(pool, scratch, &a, unit0);
}
