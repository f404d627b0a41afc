/*
 * test_train_bf16.c - mixed-precision training (TY_TRAIN_PRECISION_BF16, src/train/ops.c's BF16 GEMM): the bf16 gemm
 * against an f32 reference on bf16-rounded operands, attention's bf16 products against f32 attention, a 150-step
 * bf16 run against the f32 run from the same weights and data, thread-count independence and exact resume in bf16,
 * and the checkpoint's precision: a resume in another precision is refused, and a version-1 checkpoint (written before
 * mixed precision existed) loads as an f32 run. The tests that run bf16 kernels skip, with the reason printed, on a
 * CPU without AVX512_BF16 (or a TY_CPU_ISA path without it); the checkpoint ones run everywhere.
 *
 * Tolerances:
 *  - gemm: the reference sums the exact f32 products of the bf16-rounded operands in f32, in the order the Intel SDM
 *    gives for vdpbf16ps (per pair of k, the odd product then the even one; pairs in k order). The kernel must match
 *    within 1e-6 of sum_k |a_k b_k| + |C0| (measured on Zen 4: bit for bit). The unrounded f64 product must differ by
 *    more than 1e-4 relative somewhere, or the operands were not rounded.
 *  - attention (bf16 products, f32 softmax) vs f32 attention: 2e-2 of (1 + |f32 value|) on unit-scale inputs
 *    (measured: at most 4.3e-3, on dv).
 *  - training: 150 AdamW steps of a 2-layer model (embd 64, vocab 97) on a learnable token sequence, from the same
 *    initial weights and batches: every step's bf16 loss within 2% (relative) of the f32 loss, the mean of the last 10
 *    steps within 0.5%, and both curves fall by more than half (measured: 0.73% and 0.03%; see the printed figures).
 */
#define TRAIN_FIXTURE_SEED 987654321
#include "train-fixture.h"

/* ==== Helpers ==== */

static float round_bf16(float x) {
    return ty__bf16_to_f32(ty__f32_to_bf16(x));
}

/* Whether this machine runs bf16 kernels; prints why a test skips when it does not. */
static bool bf16_here(const char *test) {
    if (ty__train_ops_cpu()->check_precision(NULL, TY_TRAIN_PRECISION_BF16) == TY_OK) return true;
    printf("  skip %s: %s\n", test, ty_last_error());
    return false;
}

static struct ty_train_config small_config(void) {
    return fixture_config(97, 64, 16, 160, true);
}

/* ==== GEMM ==== */

/* C (+)= A B in bf16 against the documented chain on rounded operands; returns the worst deviation from the exact
 * product of the unrounded operands (relative to 1 + |value|), to show the rounding happened. */
static double check_gemm_bf16(void *ctx, int64_t M, int64_t N, int64_t K, int trans, bool acc) {
    struct gemm_case g = gemm_case_new(M, N, K, trans);
    gemm_case_run(&g, ctx, g.C, acc, TY_TRAIN_PRECISION_BF16);
    const float *A = g.A, *B = g.B, *C = g.C, *C0 = g.C0;
    const int64_t rs = g.rs, cs = g.cs, b_rs = g.b_rs, b_cs = g.b_cs;
    double worst = 0, unrounded = 0;
    int64_t exact = 0;
    for (int64_t m = 0; m < M; m++) {
        for (int64_t n = 0; n < N; n++) {
            float s = acc ? C0[m * N + n] : 0.0f;
            double mag = fabs(s), full = s;
            for (int64_t k = 0; k < K; k += 2) {
                float p0 = round_bf16(A[m * rs + k * cs]) * round_bf16(B[k * b_rs + n * b_cs]), p1 = 0.0f;
                if (k + 1 < K) p1 = round_bf16(A[m * rs + (k + 1) * cs]) * round_bf16(B[(k + 1) * b_rs + n * b_cs]);
                s += p1;
                s += p0;
                mag += fabs(p0) + fabs(p1);
                full += (double)A[m * rs + k * cs] * B[k * b_rs + n * b_cs];
                if (k + 1 < K) full += (double)A[m * rs + (k + 1) * cs] * B[(k + 1) * b_rs + n * b_cs];
            }
            float c = C[m * N + n];
            worst = fmax(worst, fabs(c - s) / (mag + 1e-30));
            unrounded = fmax(unrounded, fabs(c - full) / (1 + fabs(full)));
            exact += c == s;
        }
    }
    CHECK_MSG(worst <= 1e-6, "bf16 gemm %lld x %lld x %lld trans %d acc %d: error %g of the magnitude", (long long)M,
              (long long)N, (long long)K, trans, acc, worst);
#if defined(TY_AVX512_EMULATED) /* the emulated build's vdpbf16ps follows the SDM exactly (tests/chip/avx512-emu.h) */
    CHECK_MSG(exact == M * N, "bf16 gemm %lld x %lld x %lld: %lld of %lld elements bit-exact with the SDM order",
              (long long)M, (long long)N, (long long)K, (long long)exact, (long long)(M * N));
#endif
    if (exact != M * N)
        printf("  note: bf16 gemm %lldx%lldx%lld: %lld of %lld elements bit-exact with the SDM order\n", (long long)M,
               (long long)N, (long long)K, (long long)exact, (long long)(M * N));
    gemm_case_same_on_one_thread(&g, ctx, acc, TY_TRAIN_PRECISION_BF16);
    gemm_case_free(&g);
    return unrounded;
}

static void test_bf16_gemm(void) {
    if (!bf16_here("test_bf16_gemm")) return;
    struct ty_threadpool *tp = NULL;
    void *ctx = NULL;
    CHECK_OK(ty__threadpool_init(2, &tp));
    CHECK_OK(ty__train_cpu_ctx_new(tp, &ctx));
    /* edges of every tile and block, odd K (a padded pair), K past one block of 512 (the last two) */
    int64_t shapes[][3] = {{1, 1, 1},    {4, 32, 8},      {5, 33, 7},     {37, 70, 300},  {128, 96, 64},
                           {3, 200, 17}, {150, 1090, 40}, {290, 70, 301}, {9, 2100, 260}, {40, 64, 1100}};
    double unrounded = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        for (int t = 0; t < 4; t++) {
            unrounded = fmax(unrounded, check_gemm_bf16(ctx, shapes[i][0], shapes[i][1], shapes[i][2], t, t & 1));
            unrounded = fmax(unrounded, check_gemm_bf16(NULL, shapes[i][0], shapes[i][1], shapes[i][2], t, !(t & 1)));
        }
    }
    printf("  bf16 gemm vs the unrounded product: worst %.3g relative\n", unrounded);
    CHECK_MSG(unrounded > 1e-4, "the bf16 gemm matches the unrounded product to %g: operands were not rounded",
              unrounded);
    ty__train_cpu_ctx_free(ctx);
    ty__threadpool_free(tp);
}

/* ==== Attention ==== */

static void test_bf16_attention(void) {
    if (!bf16_here("test_bf16_attention")) return;
    enum { NS = 2, S = 150, H = 4, HKV = 2, HD = 32 };
    const struct ty_train_ops *o = ty__train_ops_cpu();
    size_t nq = (size_t)NS * S * H * HD, nk = (size_t)NS * S * HKV * HD, np = (size_t)NS * H * S * S;
    float *q = ty__malloc(nq * 4), *k = ty__malloc(nk * 4), *v = ty__malloc(nk * 4), *dout = ty__malloc(nq * 4);
    float *res[2][5], *p1 = ty__malloc(np * 4);
    fill(q, nq, 1), fill(k, nk, 1), fill(v, nk, 1), fill(dout, nq, 1);
    struct ty_threadpool *tp = NULL;
    void *ctx = NULL;
    CHECK_OK(ty__threadpool_init(2, &tp));
    CHECK_OK(ty__train_cpu_ctx_new(tp, &ctx));
    size_t n[5] = {nq, np, nq, nk, nk};
    for (int pr = 0; pr < 2; pr++) {
        enum ty_train_precision prec = pr ? TY_TRAIN_PRECISION_BF16 : TY_TRAIN_PRECISION_F32;
        for (int i = 0; i < 5; i++) res[pr][i] = ty__malloc(n[i] * 4);
        CHECK_OK(o->attn_fwd(ctx, res[pr][0], res[pr][1], q, k, v, NS, S, H, HKV, HD, 0.4f, prec));
        CHECK_OK(o->attn_bwd(ctx, res[pr][2], res[pr][3], res[pr][4], dout, res[pr][1], q, k, v, NS, S, H, HKV, HD,
                             0.4f, prec));
    }
    const char *names[5] = {"out", "p", "dq", "dk", "dv"};
    for (int i = 0; i < 5; i++) {
        double worst = 0;
        for (size_t j = 0; j < n[i]; j++)
            worst = fmax(worst, fabs(res[1][i][j] - res[0][i][j]) / (1 + fabs(res[0][i][j])));
        CHECK_MSG(worst <= 2e-2 && worst > 0, "bf16 attention %s vs f32: %g", names[i], worst);
        printf("%s  bf16 attention %s vs f32: %.3g", i ? "," : "", names[i], worst);
    }
    printf("\n");
    /* one thread gives the same bits */
    float *out1 = ty__malloc(nq * 4), *dq1 = ty__malloc(nq * 4), *dk1 = ty__malloc(nk * 4), *dv1 = ty__malloc(nk * 4);
    CHECK_OK(o->attn_fwd(NULL, out1, p1, q, k, v, NS, S, H, HKV, HD, 0.4f, TY_TRAIN_PRECISION_BF16));
    CHECK_OK(o->attn_bwd(NULL, dq1, dk1, dv1, dout, p1, q, k, v, NS, S, H, HKV, HD, 0.4f, TY_TRAIN_PRECISION_BF16));
    CHECK(memcmp(out1, res[1][0], nq * 4) == 0 && memcmp(p1, res[1][1], np * 4) == 0);
    CHECK(memcmp(dq1, res[1][2], nq * 4) == 0 && memcmp(dk1, res[1][3], nk * 4) == 0 &&
          memcmp(dv1, res[1][4], nk * 4) == 0);
    ty_free(out1), ty_free(dq1), ty_free(dk1), ty_free(dv1), ty_free(p1);
    for (int pr = 0; pr < 2; pr++)
        for (int i = 0; i < 5; i++) ty_free(res[pr][i]);
    ty_free(q), ty_free(k), ty_free(v), ty_free(dout);
    ty__train_cpu_ctx_free(ctx);
    ty__threadpool_free(tp);
}

/* ==== Training ==== */

enum { RUN_B = 4, RUN_S = 32 };

/* The batch of step s: windows of a sequence with structure to learn (each token a function of the two before it,
 * one in 16 a random jump), the same for both precisions. */
static void run_batch(int s, int32_t *tok) {
    for (int b = 0; b < RUN_B; b++) {
        uint64_t x = (uint64_t)(s * RUN_B + b) * 0x9e3779b97f4a7c15ull + 1;
        int32_t a = (int32_t)(x % 97), c = (int32_t)((x >> 8) % 97);
        for (int t = 0; t <= RUN_S; t++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            int32_t next = (x >> 60) == 0 ? (int32_t)((x >> 20) % 97) : (c * 5 + (a & 1) * 11 + 3) % 97;
            tok[b * (RUN_S + 1) + t] = next;
            a = c, c = next;
        }
    }
}

/* `steps` AdamW steps from seed 11 in `prec` with `threads` threads; the losses in `losses` and the final parameters
 * (ty_free). With `ckpt`, saves a checkpoint after step `stop` (0-based) and stops there. */
static float *run_steps(enum ty_train_precision prec, int threads, int steps, double *losses, const char *ckpt,
                        int stop) {
    struct ty_train_config cfg = small_config();
    struct ty_train_model *m = NULL;
    if (ty__train_model_init(&cfg, threads, &m) != TY_OK) return NULL;
    CHECK_OK(ty__train_model_set_precision(m, prec));
    ty__train_model_init_random(m, 11, 0.05f);
    struct ty_train_optim o;
    struct ty_train_optim_params op = ty__train_optim_default_params();
    op.lr = 3e-3, op.lr_min = 3e-4, op.warmup = 10, op.total_steps = steps;
    struct ty_train_run_id id = {
        .seed = 11, .n_seq = RUN_B, .seq_len = RUN_S, .accum = 1, .optim = op, .data_hash = 5, .precision = prec};
    CHECK_OK(ty__train_optim_init(&o, m, &op));
    int32_t tok[RUN_B * (RUN_S + 1)];
    int first = 0;
    if (ckpt && stop < 0) { /* resume */
        CHECK_OK(ty__train_checkpoint_load(ckpt, m, &o, &id));
        first = (int)o.step;
    }
    for (int s = first; s < steps; s++) {
        run_batch(s, tok);
        ty__train_zero_grads(m);
        CHECK_OK(ty__train_forward_backward(m, tok, RUN_B, RUN_S, 1.0f, &losses[s]));
        ty__train_optim_step(&o, m, NULL, NULL);
        if (ckpt && s == stop) {
            CHECK_OK(ty__train_checkpoint_save(ckpt, m, &o, &id));
            break;
        }
    }
    float *p = ty__malloc(m->n_params * 4);
    memcpy(p, m->params, m->n_params * 4);
    ty__train_optim_free(&o);
    ty__train_model_free(m);
    return p;
}

#define CURVE_STEPS 150

static void test_bf16_loss_curve(void) {
    if (!bf16_here("test_bf16_loss_curve")) return;
    double lf[CURVE_STEPS], lb[CURVE_STEPS];
    float *pf = run_steps(TY_TRAIN_PRECISION_F32, 2, CURVE_STEPS, lf, NULL, 0);
    float *pb = run_steps(TY_TRAIN_PRECISION_BF16, 2, CURVE_STEPS, lb, NULL, 0);
    double worst = 0, tail_f = 0, tail_b = 0;
    int worst_step = 0;
    for (int s = 0; s < CURVE_STEPS; s++) {
        double e = fabs(lb[s] - lf[s]) / lf[s];
        if (e > worst) worst = e, worst_step = s;
        if (s >= CURVE_STEPS - 10) tail_f += lf[s] / 10, tail_b += lb[s] / 10;
    }
    double tail = fabs(tail_b - tail_f) / tail_f;
    printf("  bf16 vs f32 over %d steps: loss %.4f -> %.4f (f32 %.4f -> %.4f), worst step %.3g%% at step %d, last 10 "
           "steps' mean %.3g%%\n",
           CURVE_STEPS, lb[0], lb[CURVE_STEPS - 1], lf[0], lf[CURVE_STEPS - 1], worst * 100, worst_step, tail * 100);
    CHECK_MSG(worst <= 0.02, "bf16 loss differs from f32's by %g (relative) at step %d", worst, worst_step);
    CHECK_MSG(tail <= 0.005, "bf16's last 10 losses average %.5f, f32's %.5f", tail_b, tail_f);
    CHECK(lb[CURVE_STEPS - 1] < 0.5 * lb[0] && lf[CURVE_STEPS - 1] < 0.5 * lf[0]);
    CHECK(worst > 0); /* the two precisions really differ */
    ty_free(pf), ty_free(pb);
}

static void test_bf16_threads(void) {
    if (!bf16_here("test_bf16_threads")) return;
    double l1[8], l2[8];
    float *p1 = run_steps(TY_TRAIN_PRECISION_BF16, 1, 8, l1, NULL, 0);
    float *p2 = run_steps(TY_TRAIN_PRECISION_BF16, 2, 8, l2, NULL, 0);
    struct ty_train_config cfg = small_config();
    struct ty_train_model *m = NULL;
    CHECK_OK(ty__train_model_init(&cfg, 1, &m));
    CHECK(p1 && p2 && m);
    if (p1 && p2 && m) {
        CHECK_MSG(memcmp(p1, p2, m->n_params * 4) == 0, "bf16 parameters after 8 steps differ between 1 and 2 threads");
        CHECK(memcmp(l1, l2, sizeof l1) == 0);
    }
    ty__train_model_free(m);
    ty_free(p1), ty_free(p2);
}

static void test_bf16_resume(void) {
    if (!bf16_here("test_bf16_resume")) return;
    const char *path = ty_test_tmp("bf16.ckpt");
    double straight[10], resumed[10];
    float *a = run_steps(TY_TRAIN_PRECISION_BF16, 2, 10, straight, NULL, 0);
    float *b0 = run_steps(TY_TRAIN_PRECISION_BF16, 2, 10, resumed, path, 4);
    float *b = run_steps(TY_TRAIN_PRECISION_BF16, 2, 10, resumed, path, -1);
    struct ty_train_config cfg = small_config();
    struct ty_train_model *m = NULL;
    CHECK_OK(ty__train_model_init(&cfg, 1, &m));
    if (a && b && m) {
        CHECK(memcmp(straight, resumed, sizeof straight) == 0);
        CHECK_MSG(memcmp(a, b, m->n_params * 4) == 0, "a bf16 run resumed at step 5 ends with other parameters");
    }
    ty__train_model_free(m);
    ty_free(a), ty_free(b0), ty_free(b);
}

/* ==== Checkpoint precision (no bf16 kernel runs) ==== */

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void test_checkpoint_precision(void) {
    struct ty_train_config cfg = small_config();
    struct ty_train_model *m = NULL;
    CHECK_OK(ty__train_model_init(&cfg, 1, &m));
    if (!m) return;
    ty__train_model_init_random(m, 2, 0.05f);
    struct ty_train_optim o;
    struct ty_train_optim_params op = ty__train_optim_default_params();
    CHECK_OK(ty__train_optim_init(&o, m, &op));
    o.step = 7;
    struct ty_train_run_id f32 = {.seed = 1, .n_seq = 2, .seq_len = 8, .accum = 1, .optim = op, .data_hash = 3};
    struct ty_train_run_id bf16 = f32;
    bf16.precision = TY_TRAIN_PRECISION_BF16;
    const char *pb = ty_test_tmp("prec-bf16.ckpt"), *pf = ty_test_tmp("prec-f32.ckpt");
    CHECK_OK(ty__train_checkpoint_save(pb, m, &o, &bf16));
    CHECK_OK(ty__train_checkpoint_save(pf, m, &o, &f32));
    /* either way round, a resume in the other precision names the flag and both values */
    CHECK_STATUS(ty__train_checkpoint_load(pb, m, &o, &f32), TY_ERR_INVALID_ARG);
    CHECK(strstr(ty_last_error(), "--precision bf16") && strstr(ty_last_error(), "f32"));
    CHECK_STATUS(ty__train_checkpoint_load(pf, m, &o, &bf16), TY_ERR_INVALID_ARG);
    CHECK(strstr(ty_last_error(), "--precision f32") && strstr(ty_last_error(), "bf16"));
    o.step = 0;
    CHECK_OK(ty__train_checkpoint_load(pb, m, &o, &bf16));
    CHECK(o.step == 7);

    /* a version-1 file (no precision field: the header, then the tensors) is an f32 run's */
    char *data = NULL;
    size_t size = 0;
    CHECK_OK(ty__file_read(pf, 1 << 26, &data, &size));
    size_t hsize = 8 + 4 + 32 + 4 + 8 * 16; /* magic, version, shape, padding, 16 eight-byte fields */
    if (data && size > hsize + 16) {
        unsigned char *v1 = ty__malloc(size - 8);
        memcpy(v1, data, hsize);
        memcpy(v1 + hsize, data + hsize + 8, size - hsize - 16);
        uint32_t one = 1;
        memcpy(v1 + 8, &one, 4);
        uint64_t sum = fnv1a(v1, size - 16);
        memcpy(v1 + size - 16, &sum, 8);
        const char *p1 = ty_test_tmp("prec-v1.ckpt");
        FILE *f = fopen(p1, "wb");
        fwrite(v1, 1, size - 8, f);
        fclose(f);
        o.step = 0;
        float *before = ty__malloc(m->n_params * 4);
        memcpy(before, m->params, m->n_params * 4);
        memset(m->params, 0, m->n_params * 4);
        CHECK_OK(ty__train_checkpoint_load(p1, m, &o, &f32));
        CHECK(o.step == 7 && memcmp(before, m->params, m->n_params * 4) == 0);
        CHECK_STATUS(ty__train_checkpoint_load(p1, m, &o, &bf16), TY_ERR_INVALID_ARG);
        ty_free(before);
        ty_free(v1);
    }
    ty_free(data);
    ty__train_optim_free(&o);
    ty__train_model_free(m);
}

static void test_precision_names(void) {
    enum ty_train_precision p = TY_TRAIN_PRECISION_F32;
    CHECK(ty__train_precision_from_name("bf16", &p) && p == TY_TRAIN_PRECISION_BF16);
    CHECK(ty__train_precision_from_name("f32", &p) && p == TY_TRAIN_PRECISION_F32);
    CHECK(!ty__train_precision_from_name("fp16", &p));
    CHECK(!strcmp(ty__train_precision_name(TY_TRAIN_PRECISION_BF16), "bf16"));
    /* a model refuses what its backend cannot run, and stays as it was */
    struct ty_train_config cfg = small_config();
    struct ty_train_model *m = NULL;
    CHECK_OK(ty__train_model_init(&cfg, 1, &m));
    if (!m) return;
    enum ty_status st = ty__train_model_set_precision(m, TY_TRAIN_PRECISION_BF16);
    CHECK(st == TY_OK || (st == TY_ERR_UNSUPPORTED && m->precision == TY_TRAIN_PRECISION_F32 &&
                          strstr(ty_last_error(), "bf16") != NULL));
    CHECK_STATUS(ty__train_model_set_precision(m, TY_TRAIN_PRECISION_COUNT), TY_ERR_INVALID_ARG);
    ty__train_model_free(m);
}

void ty_tests(void) {
    TY_RUN(test_precision_names);
    TY_RUN(test_checkpoint_precision);
    TY_RUN(test_bf16_gemm);
    TY_RUN(test_bf16_attention);
    TY_RUN(test_bf16_loss_curve);
    TY_RUN(test_bf16_threads);
    TY_RUN(test_bf16_resume);
}
