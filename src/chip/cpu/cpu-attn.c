/*
 * cpu-attn.c - causal attention of the fast CPU backend, flash style (Dao et al., 2022, after the online softmax of
 * Milakov & Gimelshein, 2018): keys and values are visited in tiles of TILE_KEYS positions with a running maximum and
 * sum per (query, head), so no score row as long as the context is ever stored.
 *
 * Work unit: one KV head and a block of up to QUERY_BLOCK consecutive queries of one sequence (a paged batch holds
 * several sequences, each with its own keys in a paged pool, found through its block table). A tile of keys and values
 * is converted to f32 once (f16 caches: exactly; keys transposed) and then serves every query of the block and every
 * query head of the KV head's group (GQA), so a prefill reads each cached tile once per query block instead of once
 * per (query, head). Threads take units from a shared counter, largest first, which evens out the causal triangle's
 * growing rows, and a worker the OS has not scheduled in time is not waited for (ty__threadpool_run_any). A decode step
 * of the fast backend's attn_block runs attention as the middle phase of one dispatch (ty__cpu_attention_fused): the
 * q/k/v product before it, each KV head's RoPE and cache write as the unit's first step, the output projection after.
 *
 * Within a unit the (query, head) pairs that see a tile go through it PAIR_BLOCK at a time, as small matrix
 * products with register tiles (gemm style): the scores of the block's pairs against the tile, each loaded K vector
 * serving every pair of the block; one online-softmax step per pair; then P.V, each loaded V row serving every pair.
 * That is what brings the multiply-adds near the FMA peak, where one pair at a time needed a load per multiply-add.
 *
 * Each pair's step over a tile, the same f32 operations in the same order wherever the pair is computed:
 *   s_j = (sum over e, in order, of q_e k_je) * scale          for the keys j the query sees (its own position on)
 *   m'  = max(m, max_j s_j),  c = exp(m - m'),  w_j = exp(s_j - m')
 *   l   = l * c + ((w_0..15 + w_16..31) + (w_32..47 + w_48..63))     16 lanes; masked keys weigh exactly 0
 *   o   = o * c, then o += w_j v_j for each key j in order
 * and at the end out = o / (l's lanes summed in order). exp is vexp.h's (the trainer's too).
 *
 * Batch invariance: so a (query, head) pair runs the same operations in the same order whichever block, unit, batch
 * or thread it is in: tiles start at absolute positions (multiples of TILE_KEYS), the visible part of a tile depends
 * only on the query's own position, the lanes of a score vector never mix, and P.V adds exactly a pair's own keys
 * whatever other pairs share its block. So a token decoded alone gets the same bits as inside a prefill or a batch,
 * which continuous batching relies on (tests/chip/test_attn.c, test_backend_fast.c, test_paged_attn.c).
 */
#include "chip/cpu/cpu-impl.h"
#include "chip/cpu/simd/simd.h"
#include "chip/cpu/simd/vexp.h"

#include <math.h>
#include <stdatomic.h>

#define TILE_KEYS   64
#define QUERY_BLOCK 16
#define CHUNK       16 /* floats of one vector: keys of a score vector, dimensions of a value vector */
#define KEY_CHUNKS  (TILE_KEYS / CHUNK)
/* (query, head) pairs that share each loaded K or V vector, and the chunks of 16 keys (output dimensions) a kernel
 * keeps in registers: AVX-512, 4 pairs x 4 chunks, 16 accumulators in half of its 32 registers; AVX, where a v16 is
 * two registers, 2 pairs x 2 chunks (8 of 16; one pair's 64 keys would fill them and need a load per multiply-add:
 * 51% of bench_kernels' attention FMA peak on one Zen 4 thread, against 53-62% with 2 x 2); otherwise (SSE: four
 * registers a v16; NEON) one pair. */
#if defined(__AVX512F__) || defined(TY_AVX512_EMULATED) /* emulated: the AVX-512 shapes as AVX2 code, for tests */
#define PAIR_BLOCK 4
#define REG_CHUNKS 4
#elif defined(__AVX__)
#define PAIR_BLOCK 2
#define REG_CHUNKS 2
#else
#define PAIR_BLOCK 1
#define REG_CHUNKS 4
#endif
#define VALUE_CHUNK (REG_CHUNKS * CHUNK) /* output dimensions accumulated in registers at a time */

/* 16 floats as one value (GCC/clang vector extension): accumulators the compiler keeps in registers (one zmm, two
 * ymm or four xmm, whatever the target has), where a float array indexed in a loop was spilled to the stack on every
 * key. Loads and stores go through memcpy, so any alignment works. */
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
/* Vectors never pass to or from functions by value (pointers and memcpy instead): that changes the ABI where the
 * build targets no AVX-512 (-Wpsabi). */

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
    /* ty__cpu_attention_fused: the hooks, the units not yet taken (bit u: unit u), and the units finished */
    const struct ty_cpu_attn_hooks *hooks;
    atomic_ullong free_units;
    atomic_llong done;
};

/* One thread's scratch: a tile of keys and values in f32, then the running state of QUERY_BLOCK x group pairs
 * (outputs, lane-wise sums), a pair block's scores and weights, and the pairs' maxima (attend_unit's layout). */
static size_t scratch_floats(int64_t dk, int64_t dv, int64_t group) {
    size_t pairs = (size_t)QUERY_BLOCK * (size_t)group;
    return (size_t)TILE_KEYS * (size_t)(dk + dv) + pairs * (size_t)(dv + CHUNK + 1) +
           2 * ((size_t)PAIR_BLOCK * TILE_KEYS + CHUNK);
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

/* Asks for the cache lines of keys [j0, j1) of KV head g (rows of d elements), so the tile's loads find them in
 * flight: a decode step's cache was evicted by the weights streamed since the last step, and the conversion's own
 * loads, a few rows at a time, read it at a fraction of the memory's rate. Into L2, not L1 (locality 1: prefetcht2
 * on x86): a tile's worth of L1 prefetches holds the miss buffers the computation's own loads need and evicts the
 * f32 tiles; one decode step at 4096 positions read from memory (`bench_kernels --attention-decode 4096`, 24 caches
 * in turn) went from 19.5-25.6 to 32.3-32.6 GFLOP/s on one thread and from 36.8-41.9 to 64.7-67.2 on two, against
 * 40 and 57-80 with the cache hot (alternating binaries). */
static void prefetch_tile(const struct ty_tensor *c, const struct attn_seq *sq, int64_t g, int64_t j0, int64_t j1,
                          int64_t d) {
    const size_t bytes = (size_t)d * (c->type == TY_TYPE_F16 ? sizeof(ty_f16) : sizeof(float));
    for (int64_t j = j0; j < j1; j++) {
        int64_t row = sq->table ? (int64_t)sq->table[j / sq->block] * sq->block + j % sq->block : j;
        const uintptr_t src = (uintptr_t)ty__tensor_row(c, g, row, 0);
        for (uintptr_t line = src & ~(uintptr_t)63; line < src + bytes; line += 64)
            __builtin_prefetch((void *)line, 0, 1);
    }
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
    const size_t row_bytes = (size_t)d * (c->type == TY_TYPE_F16 ? sizeof(ty_f16) : sizeof(float));
    if (!trans && !sq->table && c->nb[2] == row_bytes) { /* a head-major cache: the tile's rows are one block */
        const void *src = ty__tensor_row(c, g, j0, 0);
        if (c->type == TY_TYPE_F16)
            f16_row(hw, src, out, (j1 - j0) * d);
        else
            memcpy(out, src, (size_t)(j1 - j0) * row_bytes);
        return;
    }
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

/* ==== The register-tiled kernels ==== */

/* Scores of R (query, head) pairs against the first nc chunks of 16 keys of the transposed K tile:
 * out[r * TILE_KEYS + j] = sum_e q_r[e] kt[e][j], summed over e in order in lane j of its chunk's accumulator. A pair
 * runs the same operations whatever pairs share the block and however many chunks are computed (lanes are
 * independent), which keeps a query's bits independent of its batch. Each K vector loaded serves all R pairs and
 * each broadcast q element all nc chunks: R x nc multiply-adds per e from nc + R loads, where one pair at a time
 * needed a load per multiply-add. A macro with literal shapes, one function per shape: only loops whose trip counts
 * are constants from the start are unrolled early enough for the accumulators to stay in registers. */
#define DEFINE_SCORES(R, NC)                                                                                           \
    static void scores_##R##_##NC(const float *const *qr, const float *kt, int64_t dk, float *out) {                   \
        v16 acc[R][NC];                                                                                                \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < NC; c++) acc[r][c] = (v16){0};                                                         \
        for (int64_t e = 0; e < dk; e++) {                                                                             \
            v16 kv[NC];                                                                                                \
            for (int c = 0; c < NC; c++) memcpy(&kv[c], kt + e * TILE_KEYS + c * CHUNK, sizeof(v16));                  \
            for (int r = 0; r < R; r++) {                                                                              \
                const float qe = qr[r][e];                                                                             \
                for (int c = 0; c < NC; c++) acc[r][c] += qe * kv[c];                                                  \
            }                                                                                                          \
        }                                                                                                              \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int c = 0; c < NC; c++) memcpy(out + r * TILE_KEYS + c * CHUNK, &acc[r][c], sizeof(v16));             \
    }

/* o_r = o_r * c_r + sum_{j < nk_r} w_r[j] v_j over dimensions [d0, d0 + 16 NV), for R pairs whose key counts nk_r
 * rise with r: keys below nk_0 run for the whole block, sharing each loaded V vector, then each pair its own last
 * keys, so a pair adds exactly its own keys in order whatever its block (a key past a query's end, even one whose V
 * is not finite, never touches it). */
#define DEFINE_VALUES(R, NV)                                                                                           \
    static void values_##R##_##NV(float *const *o, const float *c, const float *w, int64_t ws, const int64_t *nk,      \
                                  const float *vt, int64_t dv, int64_t d0) {                                           \
        v16 acc[R][NV];                                                                                                \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int i = 0; i < NV; i++) {                                                                             \
                v16 oi;                                                                                                \
                memcpy(&oi, o[r] + d0 + i * CHUNK, sizeof(v16));                                                       \
                acc[r][i] = oi * c[r];                                                                                 \
            }                                                                                                          \
        for (int64_t j = 0; j < nk[0]; j++) {                                                                          \
            v16 vv[NV];                                                                                                \
            for (int i = 0; i < NV; i++) memcpy(&vv[i], vt + j * dv + d0 + i * CHUNK, sizeof(v16));                    \
            for (int r = 0; r < R; r++) {                                                                              \
                const float wj = w[r * ws + j];                                                                        \
                for (int i = 0; i < NV; i++) acc[r][i] += wj * vv[i];                                                  \
            }                                                                                                          \
        }                                                                                                              \
        for (int r = 1; r < R; r++)                                                                                    \
            for (int64_t j = nk[0]; j < nk[r]; j++) {                                                                  \
                const float wj = w[r * ws + j];                                                                        \
                for (int i = 0; i < NV; i++) {                                                                         \
                    v16 vv;                                                                                            \
                    memcpy(&vv, vt + j * dv + d0 + i * CHUNK, sizeof(v16));                                            \
                    acc[r][i] += wj * vv;                                                                              \
                }                                                                                                      \
            }                                                                                                          \
        for (int r = 0; r < R; r++)                                                                                    \
            for (int i = 0; i < NV; i++) memcpy(o[r] + d0 + i * CHUNK, &acc[r][i], sizeof(v16));                       \
    }

typedef void (*scores_fn)(const float *const *qr, const float *kt, int64_t dk, float *out);
typedef void (*values_fn)(float *const *o, const float *c, const float *w, int64_t ws, const int64_t *nk,
                          const float *vt, int64_t dv, int64_t d0);

DEFINE_SCORES(1, 1)
DEFINE_SCORES(1, 2)
DEFINE_SCORES(1, 3)
DEFINE_SCORES(1, 4)
DEFINE_VALUES(1, 1)
#if PAIR_BLOCK == 4
DEFINE_VALUES(1, 4)
DEFINE_SCORES(2, 1)
DEFINE_SCORES(2, 2)
DEFINE_SCORES(2, 3)
DEFINE_SCORES(2, 4)
DEFINE_SCORES(3, 1)
DEFINE_SCORES(3, 2)
DEFINE_SCORES(3, 3)
DEFINE_SCORES(3, 4)
DEFINE_SCORES(4, 1)
DEFINE_SCORES(4, 2)
DEFINE_SCORES(4, 3)
DEFINE_SCORES(4, 4)
DEFINE_VALUES(2, 1)
DEFINE_VALUES(2, 4)
DEFINE_VALUES(3, 1)
DEFINE_VALUES(3, 4)
DEFINE_VALUES(4, 1)
DEFINE_VALUES(4, 4)
static const scores_fn scores_kernels[PAIR_BLOCK][KEY_CHUNKS] = {
    {scores_1_1, scores_1_2, scores_1_3, scores_1_4},
    {scores_2_1, scores_2_2, scores_2_3, scores_2_4},
    {scores_3_1, scores_3_2, scores_3_3, scores_3_4},
    {scores_4_1, scores_4_2, scores_4_3, scores_4_4},
};
static const values_fn values_kernels[PAIR_BLOCK][2] = {
    {values_1_1, values_1_4}, {values_2_1, values_2_4}, {values_3_1, values_3_4}, {values_4_1, values_4_4}};
#elif PAIR_BLOCK == 2
DEFINE_SCORES(2, 1)
DEFINE_SCORES(2, 2)
DEFINE_VALUES(1, 2)
DEFINE_VALUES(2, 1)
DEFINE_VALUES(2, 2)
/* Two pairs against 3 or 4 chunks: the first two chunks, then the rest (lanes are independent, so the same bits). */
static void scores_2_3(const float *const *qr, const float *kt, int64_t dk, float *out) {
    scores_2_2(qr, kt, dk, out), scores_2_1(qr, kt + 2 * CHUNK, dk, out + 2 * CHUNK);
}
static void scores_2_4(const float *const *qr, const float *kt, int64_t dk, float *out) {
    scores_2_2(qr, kt, dk, out), scores_2_2(qr, kt + 2 * CHUNK, dk, out + 2 * CHUNK);
}
static const scores_fn scores_kernels[PAIR_BLOCK][KEY_CHUNKS] = {{scores_1_1, scores_1_2, scores_1_3, scores_1_4},
                                                                 {scores_2_1, scores_2_2, scores_2_3, scores_2_4}};
static const values_fn values_kernels[PAIR_BLOCK][2] = {{values_1_1, values_1_2}, {values_2_1, values_2_2}};
#elif PAIR_BLOCK == 1
DEFINE_VALUES(1, 4)
static const scores_fn scores_kernels[1][KEY_CHUNKS] = {{scores_1_1, scores_1_2, scores_1_3, scores_1_4}};
static const values_fn values_kernels[1][2] = {{values_1_1, values_1_4}};
#else
#error "PAIR_BLOCK: kernels are instantiated for 1, 2 and 4"
#endif

/* The P.V step of R pairs over all dv dimensions: VALUE_CHUNK at a time, then 16, then the last dv % 16 element by
 * element (the same operations a vector lane runs). */
static void values(float *const *o, const float *c, const float *w, int64_t ws, const int64_t *nk, const float *vt,
                   int64_t dv, int R) {
    int64_t d0 = 0;
    for (; d0 + VALUE_CHUNK <= dv; d0 += VALUE_CHUNK) values_kernels[R - 1][1](o, c, w, ws, nk, vt, dv, d0);
    for (; d0 + CHUNK <= dv; d0 += CHUNK) values_kernels[R - 1][0](o, c, w, ws, nk, vt, dv, d0);
    for (int r = 0; r < R; r++)
        for (int64_t d = d0; d < dv; d++) {
            float a = o[r][d] * c[r];
            for (int64_t j = 0; j < nk[r]; j++) a += w[r * ws + j] * vt[j * dv + d];
            o[r][d] = a;
        }
}

/* Lane-wise maximum of two vectors (of any width) through their bits: GCC's C has no vector ?:. Only its value
 * matters, and the maximum of a set is the same whatever the order, up to the sign of a zero, which changes no
 * difference taken from it. */
#define VMAX(T, TI, a, b) ((T)((((TI)((a) > (b))) & (TI)(a)) | (~((TI)((a) > (b))) & (TI)(b))))

/* One pair's step of the online softmax over a tile, on its row of raw scores x (in place; chunks at and past
 * ceil(nk / 16) were not computed): scaled, keys at and past nk masked to -inf, the running maximum updated, and the
 * scores shifted by it. Returns the argument of the factor that rescales what was summed against the old maximum (0
 * when it stays, -inf on the first tile). The row is always handled whole, so that its loops unroll into
 * registers. */
static inline __attribute__((always_inline)) float softmax_shift(float *x, int64_t nk, float scale, float *mx) {
    const v16 neg_inf = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                         -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    v16 s[KEY_CHUNKS];
    for (int c = 0; c < KEY_CHUNKS; c++) {
        memcpy(&s[c], x + c * CHUNK, sizeof(v16));
        s[c] *= scale;
    }
    if (nk < TILE_KEYS)
        for (int c = 0; c < KEY_CHUNKS; c++) {
            v16i keep = lane < (int32_t)(nk - c * CHUNK);
            s[c] = (v16)((keep & (v16i)s[c]) | (~keep & (v16i)neg_inf));
        }
    v16 m = VMAX(v16, v16i, VMAX(v16, v16i, s[0], s[1]), VMAX(v16, v16i, s[2], s[3]));
    v8 m8, h8;
    memcpy(&m8, &m, sizeof(v8)), memcpy(&h8, (char *)&m + sizeof(v8), sizeof(v8));
    m8 = VMAX(v8, v8i, m8, h8);
    v4 m4, h4;
    memcpy(&m4, &m8, sizeof(v4)), memcpy(&h4, (char *)&m8 + sizeof(v4), sizeof(v4));
    m4 = VMAX(v4, v4i, m4, h4);
    float top = m4[0] > m4[1] ? m4[0] : m4[1], top2 = m4[2] > m4[3] ? m4[2] : m4[3];
    top = top > top2 ? top : top2;
    const float old = *mx, now = top > old ? top : old;
    *mx = now;
    for (int c = 0; c < KEY_CHUNKS; c++) {
        s[c] -= now;
        memcpy(x + c * CHUNK, &s[c], sizeof(v16));
    }
    return old - now;
}

/* sum = sum * c + the tile's weights, lane by lane, as ((w0 + w1) + (w2 + w3)): the weights of masked keys are
 * zeros, which add exactly. */
static inline __attribute__((always_inline)) void softmax_sum(const float *w, float c, float *sum) {
    v16 w4[KEY_CHUNKS], s;
    for (int i = 0; i < KEY_CHUNKS; i++) memcpy(&w4[i], w + i * CHUNK, sizeof(v16));
    memcpy(&s, sum, sizeof(v16));
    s = s * c + ((w4[0] + w4[1]) + (w4[2] + w4[3]));
    memcpy(sum, &s, sizeof(v16));
}

/* ==== One unit: a KV head and a block of queries ==== */

static void attend_unit(const struct attn_task *a, const struct attn_seq *sq, int64_t g, int64_t qb, float *s) {
    const struct ty_tensor *q = a->q, *k = a->k, *v = a->v;
    const int64_t dk = q->ne[0], dv = v->ne[0], group = a->group, pos0 = sq->pos0;
    const int64_t t0 = qb * QUERY_BLOCK, nq = sq->n - t0 < QUERY_BLOCK ? sq->n - t0 : QUERY_BLOCK;
    const float scale = a->scale;
    const int64_t pairs = nq * group;
    float *kt = s, *vt = kt + (size_t)TILE_KEYS * dk, *acc = vt + (size_t)TILE_KEYS * dv;
    float *sum = acc + (size_t)QUERY_BLOCK * group * dv;     /* (16, pairs) lane-wise running sums */
    float *x = sum + (size_t)QUERY_BLOCK * group * CHUNK;    /* (TILE_KEYS, PAIR_BLOCK) scores, CHUNK factors */
    float *wt = x + (size_t)PAIR_BLOCK * TILE_KEYS + CHUNK;  /* exp(x), out of place (see exp_nonpositive) */
    float *mx = wt + (size_t)PAIR_BLOCK * TILE_KEYS + CHUNK; /* (pairs) running maxima */
    for (int64_t p = 0; p < pairs; p++) mx[p] = -INFINITY;
    memset(sum, 0, sizeof(float) * (size_t)(pairs * CHUNK));
    memset(acc, 0, sizeof(float) * (size_t)(pairs * dv));

    const int64_t first_pos = pos0 + t0, last_key = first_pos + nq - 1; /* the block's last query sees 0 .. last_key */
    for (int64_t j0 = 0; j0 <= last_key; j0 += TILE_KEYS) {
        const int64_t j1 = j0 + TILE_KEYS - 1 < last_key ? j0 + TILE_KEYS : last_key + 1;
        if (j0 == 0) prefetch_tile(k, sq, g, j0, j1, dk), prefetch_tile(v, sq, g, j0, j1, dv);
        if (j1 <= last_key) { /* the next tile's, while this one is computed */
            const int64_t j2 = j1 + TILE_KEYS - 1 < last_key ? j1 + TILE_KEYS : last_key + 1;
            prefetch_tile(k, sq, g, j1, j2, dk), prefetch_tile(v, sq, g, j1, j2, dv);
        }
        load_tile(k, sq, g, j0, j1, dk, true, kt);
        load_tile(v, sq, g, j0, j1, dv, false, vt);
        /* the queries that see this tile are the block's last ones; pairs run query by query, head by head */
        const int64_t ti0 = j0 > first_pos ? j0 - first_pos : 0;
        for (int64_t p0 = ti0 * group; p0 < pairs; p0 += PAIR_BLOCK) {
            const int R = pairs - p0 < PAIR_BLOCK ? (int)(pairs - p0) : PAIR_BLOCK;
            const float *qr[PAIR_BLOCK];
            float *o[PAIR_BLOCK], c[PAIR_BLOCK];
            int64_t nk[PAIR_BLOCK] = {0};
            int64_t ti = p0 / group, hi = p0 - ti * group; /* one division per block, not two per pair */
            for (int r = 0; r < R; r++) {
                const int64_t end = first_pos + ti + 1;
                qr[r] = ty__tensor_row(q, g * group + hi, sq->col + t0 + ti, 0);
                o[r] = acc + (size_t)(p0 + r) * dv;
                nk[r] = (end < j1 ? end : j1) - j0;
                if (++hi == group) hi = 0, ti++;
            }
            const int nc = (int)((nk[R - 1] + CHUNK - 1) / CHUNK), row = TILE_KEYS;
            scores_kernels[R - 1][nc - 1](qr, kt, dk, x);
            /* the rescaling factors' arguments follow the scores, padded to a whole vector (a scalar tail of the exp
             * loop would cost as much as the vectors) */
            float *cx = x + R * row;
            for (int r = 0; r < CHUNK; r++) cx[r] = 0.0f;
            for (int r = 0; r < R; r++) cx[r] = softmax_shift(x + r * row, nk[r], scale, &mx[p0 + r]);
            exp_nonpositive(x, wt, R * row + CHUNK); /* the weights, then the rescaling factors */
            for (int r = 0; r < R; r++) {
                c[r] = wt[R * row + r];
                softmax_sum(wt + r * row, c[r], sum + (size_t)(p0 + r) * CHUNK);
            }
            values(o, c, wt, row, nk, vt, dv, R);
        }
    }
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t ti = p / group, hi = p % group;
        float *out = ty__tensor_row(a->dst, g * group + hi, sq->col + t0 + ti, 0);
        const float *o = acc + (size_t)p * dv, *sl = sum + (size_t)p * CHUNK;
        float total = 0;
        for (int i = 0; i < CHUNK; i++) total += sl[i];
        for (int64_t d = 0; d < dv; d++) out[d] = o[d] / total;
    }
}

static void attention_units(void *arg, int ith, int nth) {
    struct attn_task *a = arg;
    float *s = (float *)(a->scratch + (size_t)ith * a->per_thread);
    const int64_t n_kv = a->k->ne[1];
    for (int64_t u; (u = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed)) < a->n_units;) {
        int64_t si = 0;
        while (a->unit0[si + 1] <= u) si++;
        /* a sequence's last query blocks first: they see the most keys, and handing out the largest units first
         * leaves only small ones for the threads that finish early */
        int64_t w = a->unit0[si + 1] - 1 - u;
        attend_unit(a, &a->seqs[si], w % n_kv, w / n_kv, s);
    }
}

/* Takes a unit of a fused call (one per KV head, at most 64): the first left of thread ith's own range (ty__split_range
 * of the units, as the products before split their rows), else the last left of all; -1 when none is. */
static int64_t take_fused_unit(struct attn_task *a, int ith, int nth) {
    int64_t lo, hi;
    ty__split_range(a->n_units, ith, nth, &lo, &hi);
    const unsigned long long own = hi == lo ? 0 : (hi - lo == 64 ? ~0ull : (1ull << (hi - lo)) - 1) << lo;
    for (;;) {
        const unsigned long long left = atomic_load_explicit(&a->free_units, memory_order_relaxed);
        if (!left) return -1;
        const int64_t u = left & own ? __builtin_ctzll(left & own) : 63 - __builtin_clzll(left);
        if (atomic_fetch_and_explicit(&a->free_units, ~(1ull << u), memory_order_relaxed) >> u & 1) return u;
    }
}

static void fused_units(void *arg, int ith, int nth) {
    struct attn_task *a = arg;
    const struct ty_cpu_attn_hooks *h = a->hooks;
    float *s = (float *)(a->scratch + (size_t)ith * a->per_thread);
    h->before(h->arg, ith, nth);
    for (int64_t g; (g = take_fused_unit(a, ith, nth)) >= 0;) {
        h->unit(h->arg, g, 0, a->seqs[0].n);
        attend_unit(a, &a->seqs[0], g, 0, s);
        atomic_fetch_add_explicit(&a->done, 1, memory_order_release);
    }
    ty__threadpool_wait_count(&a->done, a->n_units);
    h->then(h->arg, ith, nth);
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
    if (a->hooks) { /* the phases around want the threads however small this is */
        atomic_init(&a->free_units, a->n_units == 64 ? ~0ull : (1ull << a->n_units) - 1);
        atomic_init(&a->done, 0);
        ty__threadpool_run_any(pool, fused_units, a);
    } else if (nth == 1 || work < (1 << 16) || a->n_units < 2)
        attention_units(a, 0, 1);
    else
        ty__threadpool_run_any(pool, attention_units, a); /* whoever is free takes the next unit */
    return TY_OK;
}

enum ty_status ty__cpu_attention(struct ty_threadpool *pool, struct ty_cpu_scratch *scratch,
                                 const struct ty_tensor *dst, const struct ty_tensor *q, const struct ty_tensor *k,
                                 const struct ty_tensor *v, const struct ty_attn *attn) {
    struct attn_seq sq = {0, q->ne[2], attn->pos0, NULL, 1};
    struct attn_task a = {.dst = dst, .q = q, .k = k, .v = v, .scale = attn->scale, .seqs = &sq, .n_seqs = 1};
    int64_t unit0[2];
    return run(pool, scratch, &a, unit0);
}

int64_t ty__cpu_attention_max_fused(void) {
    return QUERY_BLOCK;
}

enum ty_status ty__cpu_attention_fused(struct ty_threadpool *pool, struct ty_cpu_scratch *scratch,
                                       const struct ty_tensor *dst, const struct ty_tensor *q,
                                       const struct ty_tensor *k, const struct ty_tensor *v, const struct ty_attn *attn,
                                       const struct ty_cpu_attn_hooks *hooks) {
    TY_ASSERT(q->ne[2] <= QUERY_BLOCK && k->ne[1] <= 64); /* one unit per KV head, one bit each */
    struct attn_seq sq = {0, q->ne[2], attn->pos0, NULL, 1};
    struct attn_task a = {.dst = dst, .q = q, .k = k, .v = v, .scale = attn->scale, .seqs = &sq, .n_seqs = 1};
    a.hooks = hooks;
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
    struct attn_task a = {
        .dst = dst, .q = q, .k = k_pool, .v = v_pool, .scale = p->scale, .seqs = seqs, .n_seqs = p->n_seqs};
    return run(pool, scratch, &a, unit0);
}
