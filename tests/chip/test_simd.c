/*
 * test_simd.c - the CPU kernel library (src/chip/cpu/simd/) on every dispatch path this CPU supports:
 *
 *  - activation quantisers: each path's output is byte-identical to the scalar reference (and Q8_K to quant-k.c's
 *    ty__q8_K_from_float), on random rows and on blocks of zeros, tiny, huge, infinite and NaN values;
 *  - gemv, for every weight type and several row lengths (block tails included), against three references:
 *      1. the scalar kernel on the same activation row: only the order of f32 additions differs, NMSE <= 1e-9;
 *      2. the exact sum the kernel claims to compute, in f64: the type's reference dequantisation (to_float) of the
 *         weights times the dequantised activation row, NMSE <= 1e-9;
 *      3. the ground truth, the dequantised weights times the f32 activations in f64. The only error left is the
 *         activation's rounding, whose expected NMSE is predicted from the data itself: rounding to a step d leaves
 *         an error of variance d^2 / 12 per element, so E[err_r^2] = sum_i w_ri^2 d_i^2 / 12 and the prediction is
 *         sum_r E[err_r^2] / sum_r y_r^2. Over all rows and lengths of a (path, type) the measured NMSE must stay
 *         below 4x the prediction (measured 0.9x to 2.5x over many seeds: the error of one activation row is one
 *         draw, shared by all weight rows), and below 8x for any single length.
 *         For f32 activations the bound is the flat 1e-6 asked of f32 paths.
 *  - gemm against gemv of the same path (NMSE <= 1e-9), with row panels, column groups and K chunks all partial;
 *  - results independent of how rows and columns are split (bit for bit);
 *  - packed panels: pack / unpack round trip, and the packed gemv and gemm of every path against the scalar kernels
 *    on the rows they came from; K-quant panels only on the paths that have their kernels (AVX-512); where gemm runs
 *    straight on the panels, every column of a 1..17-column gemm bit for bit what gemv gives it;
 *  - the dispatch table: path names, TY_CPU_ISA parsing and its errors, every supported path complete;
 *  - the roofline's report (fields filled and plausible; never its speed) and its huge-page allocation.
 * Every measured NMSE is printed, so the test log documents the kernels' accuracy.
 */
#include "harness.h"
#include "chip/cpu/roofline.h"
#include "chip/cpu/simd/simd-impl.h"

#include <stdlib.h>

/* ==== Helpers ==== */

static uint64_t rng = 0x243f6a8885a308d3ull; /* fixed: the test is deterministic */
static uint64_t next_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static double urand(void) { /* [0, 1) */
    return (double)(next_u64() >> 11) / (double)(1ull << 53);
}
static double gauss(void) {
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

static const enum ty_type all_types[] = {TY_TYPE_F32,  TY_TYPE_F16,  TY_TYPE_BF16, TY_TYPE_Q8_0,
                                         TY_TYPE_Q4_0, TY_TYPE_Q4_1, TY_TYPE_Q5_0, TY_TYPE_Q5_1,
                                         TY_TYPE_Q4_K, TY_TYPE_Q5_K, TY_TYPE_Q6_K};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])

static int n_paths;
static const struct ty_simd *paths[TY_CPU_ISA_COUNT];

static void find_paths(void) {
    n_paths = 0;
    for (int i = 0; i < TY_CPU_ISA_COUNT; i++) {
        const struct ty_simd *s;
        if (ty__cpu_isa_supported((enum ty_cpu_isa)i) && ty__simd_get((enum ty_cpu_isa)i, &s) == TY_OK)
            paths[n_paths++] = s;
    }
}

static double nmse(const double *ref, const float *got, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)got[i] - ref[i];
        num += e * e, den += ref[i] * ref[i];
    }
    if (!(num == num)) return INFINITY; /* NaN */
    return den > 0 ? num / den : num;
}
static double nmse_f(const float *ref, const float *got, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)got[i] - ref[i];
        num += e * e, den += (double)ref[i] * ref[i];
    }
    if (!(num == num)) return INFINITY;
    return den > 0 ? num / den : num;
}

static size_t row_bytes(enum ty_type t, int64_t n) {
    size_t b = 0;
    enum ty_status st = ty__row_size(t, n, &b);
    TY_ASSERT(st == TY_OK);
    return b;
}

/* Byte offset of each f16 scale field in a block, so random blocks get finite scales (-1 ends the list). */
static const int *scale_fields(enum ty_type t) {
    static const int d0[] = {0, -1}, dm[] = {0, 2, -1}, q6[] = {208, -1}, none[] = {-1};
    switch (t) {
    case TY_TYPE_Q4_0:
    case TY_TYPE_Q5_0:
    case TY_TYPE_Q8_0:
        return d0;
    case TY_TYPE_Q4_1:
    case TY_TYPE_Q5_1:
    case TY_TYPE_Q4_K:
    case TY_TYPE_Q5_K:
        return dm;
    case TY_TYPE_Q6_K:
        return q6;
    default:
        return none;
    }
}

/* `rows` weight rows of n elements at stride `ws` bytes: the first half quantised from Gaussian rows of varied
 * scale, the rest (quantised types) random bytes with finite random scales, so every level, sign and scale bit
 * occurs. */
static void make_weights(enum ty_type t, int64_t n, int64_t rows, uint8_t *w, size_t ws) {
    const struct ty_type_traits *tt = ty__type_traits(t);
    float *f = malloc((size_t)n * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = w + r * ws;
        if (!tt->is_quantized || r < (rows + 1) / 2) {
            double scale = 0.02 * (1 + r % 5);
            for (int64_t i = 0; i < n; i++) f[i] = (float)(gauss() * scale);
            tt->from_float(f, row, n);
        } else {
            size_t nb = row_bytes(t, n);
            for (size_t i = 0; i < nb; i++) row[i] = (uint8_t)next_u64();
            for (int64_t b = 0; b < n / tt->block_size; b++)
                for (const int *o = scale_fields(t); *o >= 0; o++) {
                    ty_f16 h = ty__f32_to_f16((float)((urand() * 2 - 1) * 0.01));
                    memcpy(row + b * tt->type_size + *o, &h, 2);
                }
        }
    }
    free(f);
}

static void make_acts(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)gauss();
    if (n > 64) /* an outlier, as real activations have */
        x[n / 3] *= 20;
}

/* The dequantised activation row, and the variance of its rounding error per element. */
static void dequant_act(enum ty_act_format act, const void *xq, const float *x, int64_t n, double *xd, double *var) {
    switch (act) {
    case TY_ACT_F32:
        for (int64_t i = 0; i < n; i++) xd[i] = ((const float *)xq)[i], var[i] = 0;
        return;
    case TY_ACT_BF16:
        for (int64_t i = 0; i < n; i++) {
            xd[i] = ty__bf16_to_f32(((const ty_bf16 *)xq)[i]);
            int e;
            frexp(x[i], &e); /* |x| in [2^(e-1), 2^e): bf16 keeps 8 significant bits, a step of 2^(e-8) */
            double step = ldexp(1.0, e - 8);
            var[i] = x[i] != 0 ? step * step / 12 : 0;
        }
        return;
    case TY_ACT_Q8: {
        struct ty_q8_act a = ty__q8_act(xq, n);
        for (int64_t i = 0; i < n; i++) {
            double d = a.d[i / 32];
            xd[i] = d * a.qs[i];
            var[i] = d * d / 12;
        }
        return;
    }
    case TY_ACT_Q8_K: {
        const struct ty_block_q8_K *y = xq;
        for (int64_t i = 0; i < n; i++) {
            double d = y[i / TY_QK_K].d;
            xd[i] = d * y[i / TY_QK_K].qs[i % TY_QK_K];
            var[i] = d * d / 12;
        }
        return;
    }
    case TY_ACT_NONE:
        break;
    }
    TY_ASSERT(!"no activation format");
}

/* ==== Dispatch ==== */

static void test_dispatch(void) {
    for (int i = 0; i < TY_CPU_ISA_COUNT; i++) {
        enum ty_cpu_isa back;
        CHECK(ty__cpu_isa_from_name(ty__cpu_isa_name((enum ty_cpu_isa)i), &back) && back == (enum ty_cpu_isa)i);
        const struct ty_simd *s;
        enum ty_status st = ty__simd_get((enum ty_cpu_isa)i, &s);
        if (ty__cpu_isa_supported((enum ty_cpu_isa)i)) {
            CHECK_OK(st);
            CHECK(s && s->isa == (enum ty_cpu_isa)i);
            for (int t = 0; s && t < N_TYPES; t++) {
                const struct ty_simd_type *k = &s->t[all_types[t]];
                CHECK_MSG(k->act != TY_ACT_NONE && k->quantize_act && k->gemv && k->gemm && k->gemv_isa && k->gemm_isa,
                          "path %s lacks kernels for %s", s->name, ty_type_name(all_types[t]));
            }
        } else {
            CHECK_STATUS(st, TY_ERR_UNSUPPORTED);
            CHECK(strstr(ty_last_error(), ty__cpu_isa_name((enum ty_cpu_isa)i)) != NULL);
        }
    }
    CHECK(ty__cpu_isa_supported(TY_CPU_ISA_SCALAR));
    CHECK(ty__cpu_isa_supported(ty__cpu_isa_best()));
    enum ty_cpu_isa isa;
    CHECK(ty__cpu_isa_from_name("AVX2", &isa) && isa == TY_CPU_ISA_AVX2);
    CHECK(!ty__cpu_isa_from_name("sse9", &isa));
    CHECK(!ty__cpu_isa_from_name(NULL, &isa));
    CHECK(strcmp(ty__cpu_isa_name(TY_CPU_ISA_COUNT), "unknown") == 0);

    /* TY_CPU_ISA, through the uncached lookup the active table is chosen with */
    const char *saved = getenv("TY_CPU_ISA");
    char *keep = saved ? strdup(saved) : NULL;
    const struct ty_simd *s;
    setenv("TY_CPU_ISA", "scalar", 1);
    CHECK_OK(ty__simd_from_env(&s));
    CHECK(s && s->isa == TY_CPU_ISA_SCALAR);
    setenv("TY_CPU_ISA", "sse9", 1);
    CHECK_STATUS(ty__simd_from_env(&s), TY_ERR_INVALID_ARG);
    CHECK(s == NULL && strstr(ty_last_error(), "sse9") && strstr(ty_last_error(), "avx512vnni"));
    enum ty_cpu_isa missing = TY_CPU_ISA_COUNT;
    for (int i = 0; i < TY_CPU_ISA_COUNT; i++)
        if (!ty__cpu_isa_supported((enum ty_cpu_isa)i)) missing = (enum ty_cpu_isa)i;
    if (missing != TY_CPU_ISA_COUNT) { /* on x86-64 at least neon, on AArch64 the x86 paths */
        setenv("TY_CPU_ISA", ty__cpu_isa_name(missing), 1);
        CHECK_STATUS(ty__simd_from_env(&s), TY_ERR_UNSUPPORTED);
        CHECK(strstr(ty_last_error(), "TY_CPU_ISA") != NULL);
    }
    unsetenv("TY_CPU_ISA");
    CHECK_OK(ty__simd_from_env(&s));
    CHECK(s && s->isa == ty__cpu_isa_best());
    if (keep) setenv("TY_CPU_ISA", keep, 1);
    free(keep);

    const struct ty_simd *active = ty__simd();
    CHECK(active && ty__cpu_isa_supported(active->isa));
    CHECK(ty__act_row_size(TY_ACT_Q8, 64) % 64 == 0 && ty__act_row_size(TY_ACT_Q8, 64) >= 64 + 8 + 8);
    CHECK(ty__act_row_size(TY_ACT_F32, 3) == 64);
    CHECK(ty__act_row_size(TY_ACT_Q8_K, 512) >= 2 * sizeof(struct ty_block_q8_K));
    CHECK(ty__gemm_scratch_size() > 0);

    printf("  cpu: avx2 %d fma %d f16c %d avx512 f %d bw %d dq %d vl %d vnni %d bf16 %d; paths:",
           ty__cpu_features()->avx2, ty__cpu_features()->fma, ty__cpu_features()->f16c, ty__cpu_features()->avx512f,
           ty__cpu_features()->avx512bw, ty__cpu_features()->avx512dq, ty__cpu_features()->avx512vl,
           ty__cpu_features()->avx512vnni, ty__cpu_features()->avx512bf16);
    for (int i = 0; i < n_paths; i++) printf(" %s", paths[i]->name);
    printf("; active %s\n", active->name);
}

/* ==== Activation quantisers ==== */

static void check_quantiser(const struct ty_simd *s, enum ty_act_format act, ty_quantize_act_fn q, const float *x,
                            int64_t n, const char *what) {
    size_t sz = ty__act_row_size(act, n);
    uint8_t *a = ty__malloc_aligned(sz), *b = ty__malloc_aligned(sz);
    memset(a, 0xa5, sz), memset(b, 0xa5, sz);
    q(x, a, n);
    ty__quantize_act_ref(act, x, b, n);
    CHECK_MSG(memcmp(a, b, sz) == 0, "%s: %s activation quantiser differs from the scalar one (%s, n = %lld)", s->name,
              act == TY_ACT_Q8     ? "Q8"
              : act == TY_ACT_Q8_K ? "Q8_K"
              : act == TY_ACT_BF16 ? "BF16"
                                   : "F32",
              what, (long long)n);
    if (act == TY_ACT_Q8_K) { /* and the reference is quant-k.c's own */
        memset(b, 0xa5, sz);
        ty__type_traits(TY_TYPE_Q8_K)->from_float(x, b, n);
        CHECK(memcmp(a, b, sz) == 0);
    }
    ty__free_aligned(a), ty__free_aligned(b);
}

static void test_quantisers(void) {
    const int64_t n = 1024;
    float *x = malloc(n * sizeof(float));
    for (int p = 0; p < n_paths; p++) {
        const struct ty_simd *s = paths[p];
        for (int t = 0; t < N_TYPES; t++) {
            const struct ty_simd_type *k = &s->t[all_types[t]];
            for (int trial = 0; trial < 3; trial++) {
                make_acts(x, n);
                check_quantiser(s, k->act, k->quantize_act, x, n, "random");
            }
            /* edge blocks (each case fills a different 256-element block, so Q8_K sees each alone too) */
            make_acts(x, n);
            for (int i = 0; i < 256; i++) x[i] = 0;                             /* all zero */
            for (int i = 256; i < 512; i++) x[i] = 1e-35f * (float)(i % 7 - 3); /* below the Q8 floor */
            x[600] = 3e38f, x[601] = -3e38f, x[602] = 1e-39f;                   /* huge, subnormal */
            x[700] = 0.5f, x[701] = -0.5f; /* exact ties in level units are rare; ... */
            for (int i = 702; i < 734; i++) x[i] = (float)(i - 718) * 0.25f; /* ... these give ties at amax 4 */
            check_quantiser(s, k->act, k->quantize_act, x, n, "edge values");
            make_acts(x, n);
            x[800] = NAN, x[900] = INFINITY, x[100] = -INFINITY;
            check_quantiser(s, k->act, k->quantize_act, x, n, "NaN and infinity");
        }
        /* Q8 rows of a block count that is not a multiple of 16 (the AVX-512 quantiser takes 16 blocks at a time):
         * 29 blocks, a zero block and a NaN among the last 13 */
        if (s->t[TY_TYPE_Q8_0].act == TY_ACT_Q8) {
            make_acts(x, 928);
            for (int i = 544; i < 576; i++) x[i] = 0;
            x[700] = NAN, x[905] = 1e-39f;
            check_quantiser(s, TY_ACT_Q8, s->t[TY_TYPE_Q8_0].quantize_act, x, 928, "16 blocks and a tail");
        }
        /* rows that are not a multiple of the vector width (f32 / bf16 formats) */
        for (int64_t m = 1; m < 40; m += 3) {
            make_acts(x, m);
            if (s->t[TY_TYPE_BF16].act == TY_ACT_BF16)
                check_quantiser(s, TY_ACT_BF16, s->t[TY_TYPE_BF16].quantize_act, x, m, "short row");
            check_quantiser(s, TY_ACT_F32, s->t[TY_TYPE_F32].quantize_act, x, m, "short row");
        }
    }
    free(x);
}

/* ==== gemv ==== */

struct worst {
    double vs_scalar, vs_exact, vs_truth; /* the largest NMSE over lengths */
    double err, pred, den;                /* sums over all lengths: squared error vs truth, its prediction, sum y^2 */
};

/* One path, one type, one row length: the three references of the file comment. */
static void check_gemv(const struct ty_simd *s, enum ty_type t, int64_t n, int64_t rows, struct worst *wr) {
    const struct ty_simd_type *k = &s->t[t];
    const struct ty_type_traits *tt = ty__type_traits(t);
    size_t rb = row_bytes(t, n), ws = rb + 6; /* a stride that is not the row size, rows at odd offsets */
    uint8_t *wbuf = malloc(ws * (size_t)rows + 16), *w = wbuf + 2;
    make_weights(t, n, rows, w, ws);
    float *x = malloc((size_t)n * sizeof(float));
    make_acts(x, n);
    size_t xs = ty__act_row_size(k->act, n);
    void *xq = ty__malloc_aligned(xs);
    k->quantize_act(x, xq, n);

    float *out = malloc((size_t)rows * sizeof(float)), *ref = malloc((size_t)rows * sizeof(float));
    double *exact = malloc((size_t)rows * sizeof(double)), *truth = malloc((size_t)rows * sizeof(double));
    double *xd = malloc((size_t)n * sizeof(double)), *var = malloc((size_t)n * sizeof(double));
    float *wf = malloc((size_t)n * sizeof(float));
    k->gemv(n, rows, w, ws, xq, out);
    dequant_act(k->act, xq, x, n, xd, var);
    /* The truth comparison uses the rows quantised from Gaussian weights: random-byte rows of the affine types carry
     * large per-block offsets shared by all their elements, which correlates the rows' errors (one activation
     * rounding for all of them) and makes the measured NMSE a poor, heavy-tailed estimate of its mean. */
    const int64_t real_rows = tt->is_quantized ? (rows + 1) / 2 : rows;
    double pred_num = 0, den = 0;
    for (int64_t r = 0; r < rows; r++) {
        ref[r] = ty__dot_ref(t, k->act, n, w + r * ws, xq);
        tt->to_float(w + r * ws, wf, n);
        double e = 0, g = 0, v = 0;
        for (int64_t i = 0; i < n; i++) {
            e += (double)wf[i] * xd[i];
            g += (double)wf[i] * x[i];
            v += (double)wf[i] * wf[i] * var[i];
        }
        exact[r] = e, truth[r] = g;
        if (r < real_rows) pred_num += v, den += g * g;
    }
    double e1 = nmse_f(ref, out, rows), e2 = nmse(exact, out, rows), e3 = nmse(truth, out, real_rows);
    double predicted = den > 0 ? pred_num / den : 0;
    const char *name = ty_type_name(t);
    CHECK_MSG(e1 <= 1e-9, "%s %s n=%lld: NMSE vs scalar kernel %.3g", s->name, name, (long long)n, e1);
    CHECK_MSG(e2 <= 1e-9, "%s %s n=%lld: NMSE vs exact f64 sum %.3g", s->name, name, (long long)n, e2);
    if (k->act == TY_ACT_F32)
        CHECK_MSG(e3 <= 1e-6, "%s %s n=%lld: NMSE vs f64 truth %.3g (f32 path bound 1e-6)", s->name, name, (long long)n,
                  e3);
    else
        CHECK_MSG(e3 <= 8 * predicted + 1e-9, "%s %s n=%lld: NMSE vs f64 truth %.3g, activation rounding predicts %.3g",
                  s->name, name, (long long)n, e3, predicted);
    if (e1 > wr->vs_scalar) wr->vs_scalar = e1;
    if (e2 > wr->vs_exact) wr->vs_exact = e2;
    if (e3 > wr->vs_truth) wr->vs_truth = e3;
    wr->err += e3 * den, wr->pred += pred_num, wr->den += den;

    /* A row's result does not depend on how many rows share the call. */
    for (int64_t r = 0; r < rows; r += 3) {
        float one;
        k->gemv(n, 1, w + r * ws, ws, xq, &one);
        CHECK_MSG(memcmp(&one, &out[r], sizeof one) == 0, "%s %s: row %lld alone %.9g, in a batch %.9g", s->name, name,
                  (long long)r, one, out[r]);
    }
    free(wbuf), free(x), ty__free_aligned(xq), free(out), free(ref), free(exact), free(truth), free(xd), free(var);
    free(wf);
}

static void test_gemv(void) {
    for (int t = 0; t < N_TYPES; t++) {
        enum ty_type type = all_types[t];
        int64_t bsz = ty__type_traits(type)->block_size;
        /* block counts 1..7 hit every tail of a group of four; 896 and 4864 are Qwen2.5-0.5B's widths */
        int64_t lens_q32[] = {32, 64, 96, 160, 224, 896, 4864};
        int64_t lens_k[] = {256, 768, 1280, 4864};
        int64_t lens_f[] = {1, 7, 16, 31, 33, 100, 896, 4864};
        const int64_t *lens = bsz == 32 ? lens_q32 : bsz == TY_QK_K ? lens_k : lens_f;
        int nl = bsz == 32 ? 7 : bsz == TY_QK_K ? 4 : 8;
        for (int p = 0; p < n_paths; p++) {
            struct worst wr = {0};
            for (int trial = 0; trial < 3; trial++) /* fresh weights and activations: the prediction is a mean */
                for (int l = 0; l < nl; l++) check_gemv(paths[p], type, lens[l], lens[l] < 256 ? 23 : 11, &wr);
            enum ty_act_format act = paths[p]->t[type].act;
            double all = wr.err / wr.den, pred = wr.pred / wr.den;
            if (act != TY_ACT_F32)
                CHECK_MSG(all <= 4 * pred,
                          "%s %s: NMSE vs f64 truth %.3g over all lengths, activation rounding "
                          "predicts %.3g",
                          paths[p]->name, ty_type_name(type), all, pred);
            printf("  %-10s %-5s act %-4s max NMSE vs scalar %.1e, vs exact %.1e, vs truth %.1e; all lengths vs truth "
                   "%.2e = %.2fx predicted\n",
                   paths[p]->name, ty_type_name(type),
                   act == TY_ACT_Q8     ? "q8"
                   : act == TY_ACT_Q8_K ? "q8_K"
                   : act == TY_ACT_BF16 ? "bf16"
                                        : "f32",
                   wr.vs_scalar, wr.vs_exact, wr.vs_truth, all, pred > 0 ? all / pred : 0);
        }
    }
}

/* ==== gemm ==== */

static void check_gemm(const struct ty_simd *s, enum ty_type t, int64_t n, int64_t rows, int64_t cols, void *scratch) {
    const struct ty_simd_type *k = &s->t[t];
    size_t ws = row_bytes(t, n) + 2;
    uint8_t *w = malloc(ws * (size_t)rows);
    make_weights(t, n, rows, w, ws);
    size_t xs = ty__act_row_size(k->act, n);
    uint8_t *xq = ty__malloc_aligned(xs * (size_t)cols);
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t c = 0; c < cols; c++) {
        make_acts(x, n);
        k->quantize_act(x, xq + c * xs, n);
    }
    const int64_t ld = rows + 3;
    float *out = malloc((size_t)(ld * cols) * sizeof(float)), *ref = malloc((size_t)(ld * cols) * sizeof(float));
    for (int64_t i = 0; i < ld * cols; i++) out[i] = ref[i] = -7; /* the gap rows must stay untouched */
    k->gemm(n, rows, w, ws, cols, xq, xs, out, ld, scratch);
    for (int64_t c = 0; c < cols; c++) k->gemv(n, rows, w, ws, xq + c * xs, ref + c * ld);
    double e = nmse_f(ref, out, ld * cols);
    CHECK_MSG(e <= 1e-9, "%s %s gemm n=%lld %lldx%lld: NMSE vs gemv %.3g", s->name, ty_type_name(t), (long long)n,
              (long long)rows, (long long)cols, e);
    bool gaps = true;
    for (int64_t c = 0; c < cols; c++)
        for (int64_t r = rows; r < ld; r++) gaps &= out[c * ld + r] == -7;
    CHECK_MSG(gaps, "%s %s gemm wrote outside its rows", s->name, ty_type_name(t));

    /* Splitting rows and columns (as threads and callers do) changes nothing, bit for bit. */
    float *part = malloc((size_t)(ld * cols) * sizeof(float));
    int64_t r1 = rows / 3, c1 = cols / 2;
    k->gemm(n, r1, w, ws, c1, xq, xs, part, ld, scratch);
    k->gemm(n, rows - r1, w + r1 * ws, ws, c1, xq, xs, part + r1, ld, scratch);
    k->gemm(n, rows, w, ws, cols - c1, xq + c1 * xs, xs, part + c1 * ld, ld, scratch);
    bool same = true;
    for (int64_t c = 0; c < cols; c++)
        for (int64_t r = 0; r < rows; r++) same &= memcmp(&part[c * ld + r], &out[c * ld + r], sizeof(float)) == 0;
    CHECK_MSG(same, "%s %s gemm: results depend on the split", s->name, ty_type_name(t));
    free(w), ty__free_aligned(xq), free(x), free(out), free(ref), free(part);
}

static void test_gemm(void) {
    void *scratch = ty__malloc_aligned(ty__gemm_scratch_size());
    for (int p = 0; p < n_paths; p++) {
        for (int t = 0; t < N_TYPES; t++) {
            enum ty_type type = all_types[t];
            int64_t bsz = ty__type_traits(type)->block_size;
            /* 37 rows: two full panels of 16 and a partial one (and 4 full of 8 + 5); 11 columns: 8 + 2 + 1 */
            if (bsz == 1) {
                check_gemm(paths[p], type, 33, 37, 11, scratch);  /* odd K: the last bf16 pair is half empty */
                check_gemm(paths[p], type, 2080, 21, 5, scratch); /* a second K chunk of 32 */
            } else {
                check_gemm(paths[p], type, bsz == 32 ? 224 : 512, 37, 11, scratch);
                check_gemm(paths[p], type, TY_PANEL_KC_INT + 256, 19, 3, scratch); /* two K chunks */
            }
        }
    }
    ty__free_aligned(scratch);
}

/* ==== Packed panels ==== */

/* Packs rows x n weights of `type` (row stride ws) and checks the panel sizes and that unpacking gives the rows back
 * byte for byte. The panels, to free(). */
static uint8_t *pack_checked(enum ty_type type, int64_t n, int64_t rows, const uint8_t *w, size_t ws) {
    const size_t rb = row_bytes(type, n);
    const int64_t panels = (rows + TY_PACK_ROWS - 1) / TY_PACK_ROWS;
    size_t psz = ty__pack_size(type, rows, n), pstride = ty__pack_size(type, TY_PACK_ROWS, n);
    CHECK(psz == (size_t)panels * TY_PACK_ROWS * rb && pstride == TY_PACK_ROWS * rb);
    uint8_t *pk = malloc(psz), *back = calloc((size_t)rows, ws);
    ty__pack(type, rows, n, w, ws, pk);
    ty__unpack(type, rows, n, pk, back, ws);
    bool same = true;
    for (int64_t r = 0; r < rows; r++) same &= memcmp(w + r * ws, back + r * ws, rb) == 0;
    CHECK_MSG(same, "%s n=%lld: unpack(pack(w)) != w", ty_type_name(type), (long long)n);
    free(back);
    return pk;
}

static void test_packed(void) {
    static const enum ty_type packable[] = {TY_TYPE_Q8_0, TY_TYPE_Q4_0, TY_TYPE_Q4_1, TY_TYPE_Q5_0, TY_TYPE_Q5_1};
    for (int t = 0; t < N_TYPES; t++)
        CHECK(ty__pack_supported(all_types[t])); /* every type with kernels has a packed layout */
    CHECK(ty__pack_size(TY_TYPE_Q4_K, 16, 224) == 0 && ty__pack_size(TY_TYPE_Q4_0, 16, 40) == 0);
    CHECK(ty__pack_size(TY_TYPE_F32, 17, 33) == 2 * 16 * 33 * 4 && ty__pack_size(TY_TYPE_BF16, 16, 33) == 16 * 33 * 2);
    void *scratch = ty__malloc_aligned(ty__gemm_scratch_size());
    for (int t = 0; t < 5; t++) {
        enum ty_type type = packable[t];
        const int64_t lens[] = {32, 96, 224, 4864};
        for (int l = 0; l < 4; l++) {
            const int64_t n = lens[l], rows = 37, cols = 11; /* two full panels and one of five rows */
            size_t rb = row_bytes(type, n), ws = rb + 4;
            uint8_t *w = calloc((size_t)rows, ws);
            make_weights(type, n, rows, w, ws);
            size_t pstride = ty__pack_size(type, TY_PACK_ROWS, n);
            uint8_t *pk = pack_checked(type, n, rows, w, ws);

            for (int p = 0; p < n_paths; p++) {
                const struct ty_simd *s = paths[p];
                const struct ty_simd_type *k = &s->t[type];
                CHECK(k->gemv_packed && k->gemm_packed && k->act == TY_ACT_Q8);
                size_t xs = ty__act_row_size(k->act, n);
                uint8_t *xq = ty__malloc_aligned(xs * (size_t)cols);
                float *x = malloc((size_t)n * sizeof(float));
                for (int64_t c = 0; c < cols; c++) {
                    make_acts(x, n);
                    k->quantize_act(x, xq + c * xs, n);
                }
                float *ref = malloc((size_t)(rows * cols) * sizeof(float)),
                      *got = malloc((size_t)(rows * cols) * sizeof(float));
                float *pref = malloc((size_t)rows * sizeof(float));
                for (int64_t r = 0; r < rows; r++) {
                    ref[r] = ty__dot_ref(type, TY_ACT_Q8, n, w + r * ws, xq);
                    pref[r] =
                        ty__dot_packed_ref(type, n, pk + (r / TY_PACK_ROWS) * pstride, (int)(r % TY_PACK_ROWS), xq);
                }
                CHECK_MSG(memcmp(ref, pref, (size_t)rows * sizeof(float)) == 0,
                          "%s: the packed reference differs from the natural one", ty_type_name(type));
                k->gemv_packed(n, rows, pk, pstride, xq, got);
                double e = nmse_f(ref, got, rows);
                CHECK_MSG(e <= 1e-9, "%s %s n=%lld: packed gemv NMSE %.3g vs the scalar kernel", s->name,
                          ty_type_name(type), (long long)n, e);
                float one[TY_PACK_ROWS];
                k->gemv_packed(n, 5, pk + 2 * pstride, pstride, xq, one); /* the last, partial panel alone */
                CHECK(memcmp(one, got + 32, 5 * sizeof(float)) == 0);
                /* gemm on packed panels against packed gemv, column by column */
                float *col = malloc((size_t)rows * sizeof(float));
                k->gemm_packed(n, rows, pk, pstride, cols, xq, xs, got, rows, scratch);
                for (int64_t c = 0; c < cols; c++) {
                    k->gemv_packed(n, rows, pk, pstride, xq + c * xs, col);
                    memcpy(ref + c * rows, col, (size_t)rows * sizeof(float));
                }
                e = nmse_f(ref, got, rows * cols);
                CHECK_MSG(e <= 1e-9, "%s %s n=%lld: packed gemm NMSE %.3g vs packed gemv", s->name, ty_type_name(type),
                          (long long)n, e);
                free(col), free(ref), free(got), free(pref), free(x), ty__free_aligned(xq);
            }
            free(w), free(pk);
        }
    }
    ty__free_aligned(scratch);
}

static bool avx512(const struct ty_simd *s) {
    return s->isa == TY_CPU_ISA_AVX512 || s->isa == TY_CPU_ISA_AVX512VNNI || s->isa == TY_CPU_ISA_AVX512BF16 ||
           s->isa == TY_CPU_ISA_AVX512AMX;
}

/* Whether path s reads panels of `type`: the 32-element types on every path; the K-quants and the float types on the
 * AVX2 and AVX-512 paths (the float types with f32 activations: not the bf16-activation BF16 kernels), whose kernels
 * work straight on the panels for any number of columns. A backend packs a matrix only where its path reads the
 * panels. */
static bool packs(const struct ty_simd *s, enum ty_type type) {
    if (ty__pack_layout(type, &(struct ty_pack_layout){0})) return true;
    return (s->isa == TY_CPU_ISA_AVX2 || avx512(s)) && s->t[type].act != TY_ACT_BF16;
}

/* The column counts gemm is checked at: 1..17 (every remainder of the kernels' column groups), then all `cols`. */
static int64_t next_cols(int64_t nc, int64_t cols) {
    return nc < 17 || nc == cols ? nc + 1 : cols;
}

/* One packable type at one shape, on every path that has its packed kernels: pack / unpack round trip; the packed
 * reference equals the natural one bit for bit; packed gemv against the scalar kernel (NMSE); and, where gemm works
 * straight on the panels (gemm_packed_direct, which a backend runs for decode and prefill alike), gemm of 1..17 and of
 * `cols` (at least 17) columns, and of the rows from the second panel on, gives every column the bits gemv gives it. */
static void check_packed(enum ty_type type, int64_t n, int64_t rows, int64_t cols, void *scratch) {
    size_t rb = row_bytes(type, n), ws = rb + 4;
    uint8_t *w = calloc((size_t)rows, ws);
    make_weights(type, n, rows, w, ws);
    const int64_t panels = (rows + TY_PACK_ROWS - 1) / TY_PACK_ROWS;
    size_t pstride = ty__pack_size(type, TY_PACK_ROWS, n);
    uint8_t *pk = pack_checked(type, n, rows, w, ws);
    for (int p = 0; p < n_paths; p++) {
        const struct ty_simd *s = paths[p];
        const struct ty_simd_type *k = &s->t[type];
        bool has = packs(s, type);
        CHECK_MSG((k->gemv_packed != NULL) == has && (k->gemm_packed != NULL) == has,
                  "%s %s: packed kernels where the path should (not) have them", s->name, ty_type_name(type));
        if (!has) continue;
        if (!ty__pack_layout(type, &(struct ty_pack_layout){0})) CHECK(k->gemm_packed_direct);
        size_t xs = ty__act_row_size(k->act, n);
        uint8_t *xq = ty__malloc_aligned(xs * (size_t)cols);
        float *x = malloc((size_t)n * sizeof(float));
        for (int64_t c = 0; c < cols; c++) {
            make_acts(x, n);
            k->quantize_act(x, xq + c * xs, n);
        }
        float *ref = malloc((size_t)(rows * cols) * sizeof(float)),
              *one = malloc((size_t)(rows * cols) * sizeof(float));
        float *got = malloc((size_t)(rows * cols) * sizeof(float));
        bool ref_same = true;
        for (int64_t c = 0; c < cols; c++)
            for (int64_t r = 0; r < rows; r++) {
                ref[c * rows + r] = ty__dot_ref(type, k->act, n, w + r * ws, xq + c * xs);
                float pr = ty__dot_packed_ref(type, n, pk + (r / TY_PACK_ROWS) * pstride, (int)(r % TY_PACK_ROWS),
                                              xq + c * xs);
                ref_same &= memcmp(&pr, &ref[c * rows + r], sizeof pr) == 0;
            }
        CHECK_MSG(ref_same, "%s: the packed reference differs from the natural one", ty_type_name(type));
        for (int64_t c = 0; c < cols; c++) k->gemv_packed(n, rows, pk, pstride, xq + c * xs, one + c * rows);
        double e = nmse_f(ref, one, rows * cols);
        printf("  %-10s %-5s n=%-5lld rows=%-3lld packed gemv NMSE %.1e vs the scalar kernel\n", s->name,
               ty_type_name(type), (long long)n, (long long)rows, e);
        CHECK_MSG(e <= 1e-9, "%s %s n=%lld: packed gemv NMSE %.3g vs the scalar kernel", s->name, ty_type_name(type),
                  (long long)n, e);
        float last[TY_PACK_ROWS];
        int64_t r_last = (panels - 1) * TY_PACK_ROWS;
        k->gemv_packed(n, rows - r_last, pk + (panels - 1) * pstride, pstride, xq, last); /* the last panel alone */
        CHECK(memcmp(last, one + r_last, (size_t)(rows - r_last) * sizeof(float)) == 0);
        bool bits = true;
        for (int64_t nc = 1; nc <= cols; nc = next_cols(nc, cols)) {
            k->gemm_packed(n, rows, pk, pstride, nc, xq, xs, got, rows, scratch);
            if (k->gemm_packed_direct) bits &= memcmp(got, one, (size_t)(rows * nc) * sizeof(float)) == 0;
            e = nmse_f(one, got, rows * nc);
            CHECK_MSG(e <= 1e-9, "%s %s n=%lld cols=%lld: packed gemm NMSE %.3g vs packed gemv", s->name,
                      ty_type_name(type), (long long)n, (long long)nc, e);
        }
        if (k->gemm_packed_direct && rows > TY_PACK_ROWS) { /* rows from the second panel on, columns 3..16 */
            k->gemm_packed(n, rows - TY_PACK_ROWS, pk + pstride, pstride, cols - 4, xq + 3 * xs, xs, got, rows,
                           scratch);
            for (int64_t c = 0; c < cols - 4; c++)
                bits &= memcmp(got + c * rows, one + (c + 3) * rows + TY_PACK_ROWS,
                               (size_t)(rows - TY_PACK_ROWS) * sizeof(float)) == 0;
        }
        CHECK_MSG(bits, "%s %s n=%lld rows=%lld: a direct packed gemm column differs from packed gemv", s->name,
                  ty_type_name(type), (long long)n, (long long)rows);
        free(ref), free(one), free(got), free(x), ty__free_aligned(xq);
    }
    free(w), free(pk);
}

static void test_packed_direct(void) {
    void *scratch = ty__malloc_aligned(ty__gemm_scratch_size());
    static const enum ty_type k_types[] = {TY_TYPE_Q4_K, TY_TYPE_Q5_K, TY_TYPE_Q6_K};
    for (int t = 0; t < 3; t++) {
        check_packed(k_types[t], 256, 37, 17, scratch); /* two full panels and one of five rows */
        check_packed(k_types[t], 768, 21, 17, scratch);
        /* Qwen2.5-0.5B's ffn_down rows, 70 columns: AVX2's gemm tiles of 4 super-blocks and groups of 64 columns */
        check_packed(k_types[t], 4864, 19, 70, scratch);
    }
    static const enum ty_type q32[] = {TY_TYPE_Q8_0, TY_TYPE_Q4_0, TY_TYPE_Q4_1, TY_TYPE_Q5_0, TY_TYPE_Q5_1};
    for (int t = 0; t < 5; t++) {
        check_packed(q32[t], 224, 23, 17, scratch);
        /* AMX (avx512amx): tiles of 16 columns by one and two panels, then the 2 columns past the last tile */
        check_packed(q32[t], 512, 37, 50, scratch);
        /* ffn_down's rows, 70 columns: AVX2's gemm tiles of 16 blocks (a partial last one) and groups of 64 columns */
        check_packed(q32[t], 4864, 19, 70, scratch);
        check_packed(q32[t], 32, 17, 33, scratch); /* one block: AMX's pipeline of tiles runs dry at once */
        /* long rows and many of them: AMX copies each column tile's levels contiguous */
        check_packed(q32[t], 2048, 70, 40, scratch);
    }
    /* the longest rows AMX takes: the scratch holds one column tile's copied levels and scales at a time, so 34
     * columns run in two passes over the panels, then two past the last tile (a plain and an affine type) */
    check_packed(TY_TYPE_Q4_0, 32768, 65, 34, scratch);
    check_packed(TY_TYPE_Q5_1, 32768, 65, 34, scratch);
    static const enum ty_type ft[] = {TY_TYPE_F32, TY_TYPE_F16, TY_TYPE_BF16};
    for (int t = 0; t < 3; t++) {
        check_packed(ft[t], 33, 37, 17, scratch); /* odd K: the last step has no partner */
        check_packed(ft[t], 896, 21, 17, scratch);
    }
    ty__free_aligned(scratch);
}

/* ==== Roofline (what it reports, never how fast: no timing assertions) ==== */

static void test_roofline(void) {
    size_t bytes = (size_t)3 << 20;
    uint8_t *p = ty__huge_calloc(1, bytes);
    CHECK(p && ((uintptr_t)p % 64) == 0);
    bool zero = true;
    for (size_t i = 0; p && i < bytes; i += 4096) zero &= p[i] == 0;
    CHECK(zero);
    if (p) {
        p[bytes - 1] = 1; /* the whole range is writable, and is read whatever the alignment and length */
        uint64_t a = ty__roofline_read(p + 3, bytes - 3), b = ty__roofline_read(p + 3, bytes - 4);
        CHECK(a != b && ty__roofline_read(p, 0) == 0);
    }
    ty__huge_free(p);

    struct ty_roofline r;
    CHECK_OK(ty__roofline_measure_ex(&r, 2, 0.05, ty__cpu_isa_best(), (size_t)4 << 20));
    CHECK(r.n_threads == 2 && r.isa == ty__cpu_isa_best() && r.mem_bytes == ((size_t)4 << 20) && r.mem_passes >= 3);
    CHECK(r.mem_bw_gbs > 0 && isfinite(r.mem_bw_gbs) && r.mem_bw_mean_gbs <= r.mem_bw_gbs * (1 + 1e-9));
    CHECK(r.fma_gflops > 0 && r.int8_gops > 0 && isfinite(r.fma_gflops) && isfinite(r.int8_gops));
    CHECK(r.fma_insn && r.int8_insn && r.mem_insn);
    CHECK((r.bf16_insn != NULL) == (r.bf16_gflops > 0));
    CHECK((r.amx_insn != NULL) == (r.amx_int8_gops > 0) && (r.amx_int8_gops > 0) == (r.isa == TY_CPU_ISA_AVX512AMX));
    CHECK_STATUS(ty__roofline_measure_ex(&r, 1, 0.05, TY_CPU_ISA_SCALAR, 1000), TY_ERR_INVALID_ARG);
    for (int i = 0; i < TY_CPU_ISA_COUNT; i++)
        if (!ty__cpu_isa_supported((enum ty_cpu_isa)i))
            CHECK_STATUS(ty__roofline_measure_ex(&r, 1, 0.05, (enum ty_cpu_isa)i, 0), TY_ERR_UNSUPPORTED);
}

void ty_tests(void) {
    find_paths();
    TY_RUN(test_dispatch);
    TY_RUN(test_quantisers);
    TY_RUN(test_gemv);
    TY_RUN(test_gemm);
    TY_RUN(test_packed);
    TY_RUN(test_packed_direct);
    TY_RUN(test_roofline);
}
