/*
 * bench_pool.c - what a forward pass costs besides its weight matrix products, measured in isolation for the
 * simulator's calibration against our engine (src/sim/calib.c):
 *
 *   dispatch   one empty task handed to the thread pool and waited for (ty__threadpool_run, and ty__threadpool_run_any
 *              that the engine's decode products use): the fixed price of every op the pool runs;
 *   layer      the non-matmul ops of one dense Qwen layer on the "cpu" backend, as src/model/qwen.c runs them: two
 *              RMS norms (plus the per-head q/k norms of Qwen3), RoPE of q and k, the K/V copy into an f16 cache,
 *              attention over the cache, two residual adds; timed for one decode token at context --ctx and for a
 *              --prefill-token prompt from an empty cache (reported per prompt token);
 *   decode batch the backend's matrix product at a decode batch's few columns (1, 2, 4, 8, 16: one per decoding
 *              sequence) over Q8_0 FFN up and down projections (--embd x --ffn and back, prepared as the engine
 *              prepares them at load: the long rows of the down projection are where extra columns cost) that
 *              stream from memory (256 MiB), reported as each width's time over one column's: what a
 *              serving iteration of n decoding sequences pays for its products over one sequence's. The widths
 *              alternate pass by pass and the ratio is the median of the rounds' own, so that a shared machine's
 *              neighbours, who slow a round's passes alike, move it little. It is
 *              the engine's own driver that is timed (cpu.c: the caller quantises the few columns and shares the
 *              rows out in chunks), not a bare kernel: that driver does not hide the extra columns' arithmetic under
 *              the weight stream as bench_kernels' one-call-per-thread gemm does.
 *
 * The matrix products themselves are bench_kernels' business; together the two give the simulator a per-token cost
 * from microbenchmarks alone, never from the end-to-end speed it predicts.
 *
 *   bench_pool [--threads 1,2] [--seconds S] [--embd 896] [--heads 14] [--kv-heads 2] [--head-dim 64] [--qk-norm]
 *              [--ctx 64] [--prefill 512] [--ffn 4864] [--json]
 *
 * Each figure is the best of repeated timings within the budget (--seconds, default 2, a quarter of it for the
 * decode layer, half for the prefill layer and for the decode batches), the machine's capability, as the rooflines
 * are; the decode batches' ratios are medians (above).
 */
#include "base/threads.h"
#include "bench-args.h"
#include "chip/backend.h"
#include "model/quant.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

struct shape {
    int64_t embd, heads, kv_heads, head_dim;
    bool qk_norm;
};

/* ==== Dispatch ==== */

static void empty_task(void *arg, int ith, int nth) {
    (void)arg, (void)ith, (void)nth;
}

/* Best mean microseconds of one dispatch over batches of 200 within `seconds`. */
static double time_dispatch(struct ty_threadpool *pool, bool any, double seconds) {
    double best = 1e30, t_end = ty__time_s() + seconds;
    int reps = 0;
    do {
        double t0 = ty__time_s();
        for (int i = 0; i < 200; i++) {
            if (any)
                ty__threadpool_run_any(pool, empty_task, NULL);
            else
                ty__threadpool_run(pool, empty_task, NULL);
        }
        double t = (ty__time_s() - t0) / 200;
        if (t < best) best = t;
        reps++;
    } while (ty__time_s() < t_end || reps < 5);
    return best * 1e6;
}

/* ==== One layer's non-matmul ops ==== */

struct layer {
    struct ty_backend *be;
    struct ty_buffer *buf;
    struct ty_tensor x, xn, proj, q, k, v, att, norm_w, hnorm_w, pos, kc, vc;
    struct ty_rope rope;
    struct shape sh;
};

static enum ty_status layer_init(struct ty_backend *be, const struct shape *sh, int64_t n_tok, int64_t n_ctx,
                                 struct layer *L) {
    memset(L, 0, sizeof *L);
    L->be = be;
    L->sh = *sh;
    int64_t qd = sh->heads * sh->head_dim, kd = sh->kv_heads * sh->head_dim;
    size_t f = sizeof(float);
    size_t need = f * (size_t)(3 * sh->embd * n_tok + 2 * qd * n_tok + 2 * kd * n_tok + sh->embd + sh->head_dim) +
                  sizeof(int32_t) * (size_t)n_tok + 2 * 2 * (size_t)(kd * n_ctx) + 16 * 64;
    TY_TRY(ty__backend_buffer_alloc(be, need, &L->buf));
    size_t off = 0;
#define TAKE(t, type, a, b, c)                                                                                         \
    do {                                                                                                               \
        ty__tensor_init(&(t), L->buf, off, type, a, b, c, 1);                                                          \
        off += (ty__tensor_size(&(t)) + 63) / 64 * 64;                                                                 \
    } while (0)
    TAKE(L->x, TY_TYPE_F32, sh->embd, n_tok, 1);
    TAKE(L->xn, TY_TYPE_F32, sh->embd, n_tok, 1);
    TAKE(L->proj, TY_TYPE_F32, sh->embd, n_tok, 1);
    TAKE(L->q, TY_TYPE_F32, sh->head_dim, sh->heads, n_tok);
    TAKE(L->att, TY_TYPE_F32, sh->head_dim, sh->heads, n_tok);
    TAKE(L->k, TY_TYPE_F32, sh->head_dim, sh->kv_heads, n_tok);
    TAKE(L->v, TY_TYPE_F32, sh->head_dim, sh->kv_heads, n_tok);
    TAKE(L->norm_w, TY_TYPE_F32, sh->embd, 1, 1);
    TAKE(L->hnorm_w, TY_TYPE_F32, sh->head_dim, 1, 1);
    TAKE(L->pos, TY_TYPE_I32, n_tok, 1, 1);
    TAKE(L->kc, TY_TYPE_F16, sh->head_dim, sh->kv_heads, n_ctx);
    TAKE(L->vc, TY_TYPE_F16, sh->head_dim, sh->kv_heads, n_ctx);
#undef TAKE
    /* values of a sane size everywhere (the ops' speed does not depend on them, but NaNs and denormals would) */
    float *fill = ty__malloc(f * (size_t)(sh->embd * n_tok > qd * n_tok ? sh->embd * n_tok : qd * n_tok));
    if (!fill) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the layer's activations");
    int64_t nf = (sh->embd > qd ? sh->embd : qd) * n_tok;
    for (int64_t i = 0; i < nf; i++) fill[i] = (float)((i * 37) % 101 - 50) / 64.0f;
    enum ty_status st = TY_OK;
    const struct ty_tensor *fts[] = {&L->x, &L->q, &L->k, &L->v, &L->norm_w, &L->hnorm_w};
    for (size_t i = 0; i < sizeof fts / sizeof fts[0] && st == TY_OK; i++)
        st = ty__backend_tensor_set(be, fts[i], fill, 0, ty__tensor_size(fts[i]));
    ty_free(fill);
    TY_TRY(st);
    /* a full cache: keys and values at every position (f16 zeros are fine numbers) */
    struct ty_rope_config rc = {.n_dims = (int32_t)sh->head_dim, .freq_base = 1e6f};
    TY_TRY(ty__rope_init(&rc, &L->rope));
    return TY_OK;
}

/* The ops of one layer for n_tok tokens at positions p0 .. p0 + n_tok - 1. */
static enum ty_status layer_run(struct layer *L, int64_t n_tok, int64_t p0) {
    struct ty_backend *be = L->be;
    int32_t pos[4096];
    for (int64_t i = 0; i < n_tok && i < 4096; i++) pos[i] = (int32_t)(p0 + i);
    TY_TRY(ty__backend_tensor_set(be, &L->pos, pos, 0, (size_t)n_tok * sizeof(int32_t)));
    TY_TRY(ty__backend_rms_norm(be, &L->xn, &L->x, &L->norm_w, 1e-6f));
    if (L->sh.qk_norm) {
        TY_TRY(ty__backend_rms_norm(be, &L->q, &L->q, &L->hnorm_w, 1e-6f));
        TY_TRY(ty__backend_rms_norm(be, &L->k, &L->k, &L->hnorm_w, 1e-6f));
    }
    TY_TRY(ty__backend_rope(be, &L->q, &L->q, &L->pos, &L->rope));
    TY_TRY(ty__backend_rope(be, &L->k, &L->k, &L->pos, &L->rope));
    struct ty_tensor kdst = ty__tensor_slice(&L->kc, 2, p0, n_tok), vdst = ty__tensor_slice(&L->vc, 2, p0, n_tok);
    TY_TRY(ty__backend_copy(be, &kdst, &L->k));
    TY_TRY(ty__backend_copy(be, &vdst, &L->v));
    struct ty_tensor k_all = ty__tensor_slice(&L->kc, 2, 0, p0 + n_tok),
                     v_all = ty__tensor_slice(&L->vc, 2, 0, p0 + n_tok);
    struct ty_attn attn = {0.125f, (int32_t)p0};
    TY_TRY(ty__backend_attention(be, &L->att, &L->q, &k_all, &v_all, &attn));
    TY_TRY(ty__backend_add(be, &L->x, &L->x, &L->proj));
    TY_TRY(ty__backend_rms_norm(be, &L->xn, &L->x, &L->norm_w, 1e-6f));
    TY_TRY(ty__backend_add(be, &L->x, &L->x, &L->proj));
    return ty__backend_sync(be);
}

/* Best seconds of one layer_run within `seconds`. */
static enum ty_status time_layer(struct layer *L, int64_t n_tok, int64_t p0, double seconds, double *best) {
    *best = 1e30;
    TY_TRY(layer_run(L, n_tok, p0)); /* warm-up */
    double t_end = ty__time_s() + seconds;
    int reps = 0;
    do {
        double t0 = ty__time_s();
        TY_TRY(layer_run(L, n_tok, p0));
        double t = ty__time_s() - t0;
        if (t < *best) *best = t;
        reps++;
    } while (ty__time_s() < t_end || reps < 5);
    return TY_OK;
}

/* ==== Decode batches ==== */

#define DB_WIDTHS 5
static const int db_widths[DB_WIDTHS] = {1, 2, 4, 8, 16};

struct dbatch {
    struct ty_buffer *wbuf, *abuf;
    struct ty_tensor *w; /* (n_w) Q8_0: FFN up (embd, ffn) and down (ffn, embd) projections in turn */
    int n_w;
    struct ty_tensor xe, xf, ye, yf; /* (embd, 16) and (ffn, 16) f32: inputs, then outputs */
};

static void dbatch_free(struct dbatch *d) {
    ty__backend_buffer_free(d->wbuf);
    ty__backend_buffer_free(d->abuf);
    ty_free(d->w);
    memset(d, 0, sizeof *d);
}

static enum ty_status dbatch_init(struct ty_backend *be, int64_t embd, int64_t ffn, struct dbatch *d) {
    memset(d, 0, sizeof *d);
    if (embd % TY_QK8_0 || ffn % TY_QK8_0)
        return ty__error(TY_ERR_INVALID_ARG, "--embd %lld and --ffn %lld must be multiples of 32", (long long)embd,
                         (long long)ffn);
    size_t mat = (size_t)(ffn * (embd / TY_QK8_0)) * sizeof(struct ty_block_q8_0); /* either projection */
    d->n_w = 2 * (int)((256u << 20) / (2 * mat) + 1);
    d->w = ty__calloc((size_t)d->n_w, sizeof *d->w);
    struct ty_block_q8_0 *blk = ty__malloc(mat);
    int64_t rows = ffn > embd ? ffn : embd;
    float *fill = ty__malloc((size_t)rows * 16 * sizeof(float));
    enum ty_status st = d->w && blk && fill ? TY_OK : ty__error(TY_ERR_NO_MEMORY, "out of memory for the weights");
    if (st == TY_OK) st = ty__backend_buffer_alloc(be, mat * (size_t)d->n_w, &d->wbuf);
    /* blocks of a sane scale (the kernels' speed does not depend on the values) */
    for (size_t i = 0; st == TY_OK && i < mat / sizeof *blk; i++) {
        blk[i].d = ty__f32_to_f16(0.01f);
        for (int k = 0; k < TY_QK8_0; k++) blk[i].qs[k] = (int8_t)((i * 7 + (size_t)k * 13) % 255 - 127);
    }
    for (int i = 0; st == TY_OK && i < d->n_w; i++) {
        ty__tensor_init(&d->w[i], d->wbuf, mat * (size_t)i, TY_TYPE_Q8_0, i % 2 ? ffn : embd, i % 2 ? embd : ffn, 1, 1);
        st = ty__backend_tensor_set(be, &d->w[i], blk, 0, mat);
        if (st == TY_OK) st = ty__backend_weight_prepare(be, &d->w[i]);
    }
    size_t eb = ((size_t)embd * 16 * sizeof(float) + 63) / 64 * 64,
           fb = ((size_t)ffn * 16 * sizeof(float) + 63) / 64 * 64;
    if (st == TY_OK) st = ty__backend_buffer_alloc(be, 2 * (eb + fb), &d->abuf);
    if (st == TY_OK) {
        ty__tensor_init(&d->xe, d->abuf, 0, TY_TYPE_F32, embd, 16, 1, 1);
        ty__tensor_init(&d->xf, d->abuf, eb, TY_TYPE_F32, ffn, 16, 1, 1);
        ty__tensor_init(&d->ye, d->abuf, eb + fb, TY_TYPE_F32, embd, 16, 1, 1);
        ty__tensor_init(&d->yf, d->abuf, 2 * eb + fb, TY_TYPE_F32, ffn, 16, 1, 1);
        for (int64_t i = 0; i < rows * 16; i++) fill[i] = (float)((i * 37) % 101 - 50) / 64.0f;
        st = ty__backend_tensor_set(be, &d->xe, fill, 0, ty__tensor_size(&d->xe));
        if (st == TY_OK) st = ty__backend_tensor_set(be, &d->xf, fill, 0, ty__tensor_size(&d->xf));
    }
    ty_free(blk);
    ty_free(fill);
    if (st != TY_OK) dbatch_free(d);
    return st;
}

/* One pass of n columns over every weight matrix. */
static enum ty_status dbatch_pass(struct ty_backend *be, struct dbatch *d, int n, double *secs) {
    struct ty_tensor xe = ty__tensor_slice(&d->xe, 1, 0, n), xf = ty__tensor_slice(&d->xf, 1, 0, n),
                     ye = ty__tensor_slice(&d->ye, 1, 0, n), yf = ty__tensor_slice(&d->yf, 1, 0, n);
    double t0 = ty__time_s();
    for (int i = 0; i < d->n_w; i++)
        TY_TRY(ty__backend_matmul(be, i % 2 ? &ye : &yf, &d->w[i], i % 2 ? &xf : &xe, NULL));
    TY_TRY(ty__backend_sync(be));
    *secs = ty__time_s() - t0;
    return TY_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Each width's time over one column's: the median over rounds of the ratio within a round, the widths alternating
 * pass by pass within `seconds` (a neighbour that takes a core for a while slows a round's passes alike, and the
 * median drops the rounds it cut through). */
#define DB_ROUNDS 64
static enum ty_status time_dbatch(struct ty_backend *be, struct dbatch *d, double seconds, double *ratio) {
    double t[DB_WIDTHS], r[DB_WIDTHS][DB_ROUNDS];
    for (int k = 0; k < DB_WIDTHS; k++) TY_TRY(dbatch_pass(be, d, db_widths[k], &t[k])); /* warm-up */
    double t_end = ty__time_s() + seconds;
    int n = 0;
    do {
        for (int k = 0; k < DB_WIDTHS; k++) TY_TRY(dbatch_pass(be, d, db_widths[k], &t[k]));
        for (int k = 0; k < DB_WIDTHS; k++) r[k][n] = t[k] / t[0];
        n++;
    } while (n < DB_ROUNDS && (ty__time_s() < t_end || n < 5));
    for (int k = 0; k < DB_WIDTHS; k++) {
        qsort(r[k], (size_t)n, sizeof(double), cmp_double);
        ratio[k] = n % 2 ? r[k][n / 2] : (r[k][n / 2 - 1] + r[k][n / 2]) / 2;
    }
    return TY_OK;
}

/* ==== Main ==== */

static int usage(void) {
    fprintf(stderr, "usage: bench_pool [--threads 1,2] [--seconds S] [--embd N] [--heads N] [--kv-heads N] "
                    "[--head-dim N] [--qk-norm] [--ctx N] [--prefill N] [--ffn N] [--json]\n");
    return 2;
}

static bool int_arg(const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *e;
    long long x = v ? strtoll(v, &e, 10) : 0;
    if (!v || *e || x < lo || x > hi) return false;
    *out = x;
    return true;
}

int main(int argc, char **argv) {
    struct shape sh = {896, 14, 2, 64, false};
    int threads[8] = {1, ty__cpu_count()}, n_threads = ty__cpu_count() > 1 ? 2 : 1;
    double seconds = 2.0;
    int64_t ctx = 64, prefill = 512, ffn = 4864;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--qk-norm")) {
            sh.qk_norm = true;
        } else if (!strcmp(a, "--threads") && v) {
            i++;
            if ((n_threads = bench_int_list(v, threads, 8)) < 1) return usage();
        } else if (!strcmp(a, "--seconds") && v) {
            seconds = atof(argv[++i]);
            if (!(seconds > 0)) return usage();
        } else if (!strcmp(a, "--embd")) {
            if (!int_arg(v, 1, 1 << 16, &sh.embd)) return usage();
            i++;
        } else if (!strcmp(a, "--heads")) {
            if (!int_arg(v, 1, 1024, &sh.heads)) return usage();
            i++;
        } else if (!strcmp(a, "--kv-heads")) {
            if (!int_arg(v, 1, 1024, &sh.kv_heads)) return usage();
            i++;
        } else if (!strcmp(a, "--head-dim")) {
            if (!int_arg(v, 2, 256, &sh.head_dim) || sh.head_dim % 2) return usage();
            i++;
        } else if (!strcmp(a, "--ctx")) {
            if (!int_arg(v, 1, 1 << 20, &ctx)) return usage();
            i++;
        } else if (!strcmp(a, "--ffn")) {
            if (!int_arg(v, 32, 1 << 18, &ffn)) return usage();
            i++;
        } else if (!strcmp(a, "--prefill")) {
            if (!int_arg(v, 1, 4096, &prefill)) return usage();
            i++;
        } else {
            return usage();
        }
    }
    if (sh.heads % sh.kv_heads) {
        fprintf(stderr, "bench_pool: --heads %lld is not a multiple of --kv-heads %lld\n", (long long)sh.heads,
                (long long)sh.kv_heads);
        return 2;
    }
    if (n_threads == 2 && threads[1] == 1) n_threads = 1;

    json_t *root = json_object(), *jth = json_array();
    json_object_set_new(root, "bench", json_string("pool"));
    json_object_set_new(root, "cores", json_integer(ty__cpu_count()));
    json_t *jsh = json_object();
    json_object_set_new(jsh, "embd", json_integer(sh.embd));
    json_object_set_new(jsh, "heads", json_integer(sh.heads));
    json_object_set_new(jsh, "kv_heads", json_integer(sh.kv_heads));
    json_object_set_new(jsh, "head_dim", json_integer(sh.head_dim));
    json_object_set_new(jsh, "qk_norm", json_boolean(sh.qk_norm));
    json_object_set_new(root, "shape", jsh);
    json_object_set_new(root, "ctx", json_integer(ctx));
    json_object_set_new(root, "prefill", json_integer(prefill));
    if (!json)
        printf(
            "| threads | dispatch us (run) | dispatch us (run_any) | layer us, decode at ctx %lld | layer us per "
            "token, prefill %lld | decode batch 2 / 4 / 8 / 16 over 1 |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n",
            (long long)ctx, (long long)prefill);
    int rc = 0;
    for (int t = 0; t < n_threads && !rc; t++) {
        struct ty_threadpool *pool = NULL;
        struct ty_backend *be = NULL;
        struct layer dec = {0}, pre = {0};
        struct dbatch db = {0};
        double d_run = 0, d_any = 0, t_dec = 0, t_pre = 0, ratio[DB_WIDTHS] = {0};
        enum ty_status st = ty__threadpool_init(threads[t], &pool);
        if (st == TY_OK) {
            ty__threadpool_pin(pool);
            d_run = time_dispatch(pool, false, seconds / 8);
            d_any = time_dispatch(pool, true, seconds / 8);
            ty__threadpool_free(pool);
            st = ty__backend_init("cpu", threads[t], &be);
        }
        if (st == TY_OK) st = layer_init(be, &sh, 1, ctx + 1, &dec);
        if (st == TY_OK) st = time_layer(&dec, 1, ctx, seconds / 4, &t_dec);
        if (st == TY_OK) st = layer_init(be, &sh, prefill, prefill, &pre);
        if (st == TY_OK) st = time_layer(&pre, prefill, 0, seconds / 2, &t_pre);
        ty__backend_buffer_free(dec.buf);
        ty__backend_buffer_free(pre.buf);
        if (st == TY_OK) st = dbatch_init(be, sh.embd, ffn, &db);
        if (st == TY_OK) st = time_dbatch(be, &db, seconds / 2, ratio);
        dbatch_free(&db);
        if (be) ty__backend_free(be);
        if (st != TY_OK) {
            fprintf(stderr, "bench_pool: %s\n", ty_last_error());
            rc = 1;
            break;
        }
        json_t *r = json_object();
        json_object_set_new(r, "threads", json_integer(threads[t]));
        json_object_set_new(r, "dispatch_run_us", json_real(d_run));
        json_object_set_new(r, "dispatch_any_us", json_real(d_any));
        json_object_set_new(r, "layer_decode_us", json_real(t_dec * 1e6));
        json_object_set_new(r, "layer_prefill_us_per_token", json_real(t_pre * 1e6 / (double)prefill));
        json_t *jdb = json_array();
        for (int k = 0; k < DB_WIDTHS; k++)
            json_array_append_new(jdb, json_pack("{s:i,s:f}", "rows", db_widths[k], "ratio", ratio[k]));
        json_object_set_new(r, "decode_batch", jdb);
        json_array_append_new(jth, r);
        if (!json)
            printf("| %d | %.2f | %.2f | %.1f | %.2f | %.2f / %.2f / %.2f / %.2f |\n", threads[t], d_run, d_any,
                   t_dec * 1e6, t_pre * 1e6 / (double)prefill, ratio[1], ratio[2], ratio[3], ratio[4]);
    }
    json_object_set_new(root, "threads", jth);
    if (json && !rc) {
        char *txt = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
        if (txt) puts(txt);
        free(txt);
    }
    json_decref(root);
    return rc;
}
