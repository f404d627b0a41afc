/*
 * bench_train.c - training throughput of the trainer (src/train/) on the CPU: tokens per second of full steps
 * (forward, backward, AdamW) on a qwen3 model of a given shape with random tokens, in f32 or in bf16 mixed precision
 * (--precision), and the MFU against the peak of the instruction the products run on, measured in the same run
 * (roofline.h): the f32 FMA peak for f32, the vdpbf16ps peak for bf16. `bench/bench_train.sh` runs it beside PyTorch
 * on the same shape, batch and thread count and prints the ratios.
 *
 *   bench_train [--vocab V] [--embd E] [--layers L] [--heads H] [--kv-heads K] [--head-dim D] [--ff F]
 *               [--batch B] [--ctx S] [--steps N] [--threads T] [--precision f32|bf16] [--json] [--profile]
 *
 * Figures: the median step time of N timed steps after one warm-up step. --profile wraps the model's op table
 * (struct ty_train_ops) with one that times each entry, and prints where the timed steps' time went: the products
 * by role (forward X W^T, the input gradient dY W, the weight gradient dY^T X), each other op, zeroing the gradients,
 * the optimizer, and the rest of the step (embedding, residual copies).
 */
#include "chip/cpu/roofline.h"
#include "train/train.h"

#include <stdio.h>
#include <stdlib.h>

/* ==== --profile: the op table, timed ==== */

enum prof_slot {
    P_GEMM_FWD,
    P_GEMM_DX,
    P_GEMM_DW,
    P_GEMM_OTHER,
    P_TRANSPOSE,
    P_RMS_FWD,
    P_RMS_BWD,
    P_ROPE,
    P_ATTN_FWD,
    P_ATTN_BWD,
    P_GLU_FWD,
    P_GLU_BWD,
    P_XENT,
    P_COUNT
};
static const char *const prof_names[P_COUNT] = {"gemm forward (X W^T)",
                                                "gemm input grad (dY W)",
                                                "gemm weight grad (dY^T X)",
                                                "gemm other",
                                                "transpose",
                                                "rms_norm forward",
                                                "rms_norm backward",
                                                "rope",
                                                "attention forward",
                                                "attention backward",
                                                "swiglu forward",
                                                "swiglu backward",
                                                "cross-entropy"};

static const struct ty_train_ops *prof_inner;
static void *prof_inner_ctx;
static double prof_s[P_COUNT], prof_flops[P_COUNT];
static long prof_calls[P_COUNT];
static bool prof_on;           /* only the timed steps count */
static double zero_s, optim_s; /* ty__train_zero_grads, ty__train_optim_step */

#define PROF(slot, flops, call)                                                                                        \
    do {                                                                                                               \
        double t0_ = ty__time_s();                                                                                     \
        call;                                                                                                          \
        if (prof_on) prof_s[slot] += ty__time_s() - t0_, prof_calls[slot]++, prof_flops[slot] += (flops);              \
    } while (0)

static enum ty_status prof_check_precision(void *ctx, enum ty_train_precision prec) {
    (void)ctx;
    return prof_inner->check_precision(prof_inner_ctx, prec);
}
static void prof_gemm(void *ctx, int64_t M, int64_t N, int64_t K, const float *A, int64_t a_rs, int64_t a_cs,
                      const float *B, int64_t b_rs, int64_t b_cs, float *C, int64_t ldc, bool acc,
                      enum ty_train_precision prec) {
    (void)ctx;
    /* the model's three layouts (train.c mm_fwd, mm_bwd): A row-major and B = W^T; A row-major and B = W; A = dY^T */
    enum prof_slot s = a_cs == 1 && b_rs == 1   ? P_GEMM_FWD
                       : a_cs == 1 && b_cs == 1 ? P_GEMM_DX
                       : a_rs == 1 && b_cs == 1 ? P_GEMM_DW
                                                : P_GEMM_OTHER;
    PROF(s, 2.0 * (double)M * (double)N * (double)K,
         prof_inner->gemm(prof_inner_ctx, M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, acc, prec));
}
static void prof_transpose(void *ctx, float *dst, const float *src, int64_t rows, int64_t cols) {
    (void)ctx;
    PROF(P_TRANSPOSE, 0, prof_inner->transpose(prof_inner_ctx, dst, src, rows, cols));
}
static void prof_rms_fwd(void *ctx, float *y, float *rstd, const float *x, const float *w, int64_t n_rows, int64_t dim,
                         float eps) {
    (void)ctx;
    PROF(P_RMS_FWD, 0, prof_inner->rms_norm_fwd(prof_inner_ctx, y, rstd, x, w, n_rows, dim, eps));
}
static void prof_rms_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                         const float *w, int64_t n_rows, int64_t dim) {
    (void)ctx;
    PROF(P_RMS_BWD, 0, prof_inner->rms_norm_bwd(prof_inner_ctx, dx, dw, dy, x, rstd, w, n_rows, dim));
}
static void prof_rope(void *ctx, float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                      const struct ty_rope *rope, bool inverse) {
    (void)ctx;
    PROF(P_ROPE, 0, prof_inner->rope(prof_inner_ctx, x, pos, n_tok, n_head, head_dim, rope, inverse));
}
static enum ty_status prof_attn_fwd(void *ctx, float *out, float *p, const float *q, const float *k, const float *v,
                                    int64_t n_seq, int64_t S, int64_t H, int64_t Hkv, int64_t hd, float scale,
                                    enum ty_train_precision prec) {
    (void)ctx;
    enum ty_status st;
    /* q.k over the causal half and p.v: 2 S (S + 1) / 2 hd each, per head and sequence */
    PROF(P_ATTN_FWD, 2.0 * (double)(n_seq * H) * (double)(S * (S + 1)) * (double)hd,
         st = prof_inner->attn_fwd(prof_inner_ctx, out, p, q, k, v, n_seq, S, H, Hkv, hd, scale, prec));
    return st;
}
static enum ty_status prof_attn_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout, const float *p,
                                    const float *q, const float *k, const float *v, int64_t n_seq, int64_t S, int64_t H,
                                    int64_t Hkv, int64_t hd, float scale, enum ty_train_precision prec) {
    (void)ctx;
    enum ty_status st;
    PROF(P_ATTN_BWD, 4.0 * (double)(n_seq * H) * (double)(S * (S + 1)) * (double)hd,
         st = prof_inner->attn_bwd(prof_inner_ctx, dq, dk, dv, dout, p, q, k, v, n_seq, S, H, Hkv, hd, scale, prec));
    return st;
}
static void prof_glu_fwd(void *ctx, float *h, const float *g, const float *u, int64_t n) {
    (void)ctx;
    PROF(P_GLU_FWD, 0, prof_inner->swiglu_fwd(prof_inner_ctx, h, g, u, n));
}
static void prof_glu_bwd(void *ctx, float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    (void)ctx;
    PROF(P_GLU_BWD, 0, prof_inner->swiglu_bwd(prof_inner_ctx, dg, du, dh, g, u, n));
}
static void prof_xent(void *ctx, float *logits, float *loss, const int32_t *targets, int64_t n_rows, int64_t n_vocab,
                      float grad_scale) {
    (void)ctx;
    PROF(P_XENT, 0, prof_inner->cross_entropy(prof_inner_ctx, logits, loss, targets, n_rows, n_vocab, grad_scale));
}

static const struct ty_train_ops prof_ops = {TY_TRAIN_OPS_VERSION,
                                             "profiled",
                                             prof_check_precision,
                                             prof_gemm,
                                             prof_transpose,
                                             prof_rms_fwd,
                                             prof_rms_bwd,
                                             prof_rope,
                                             prof_attn_fwd,
                                             prof_attn_bwd,
                                             prof_glu_fwd,
                                             prof_glu_bwd,
                                             prof_xent};

static void prof_print(double step_total_s, long steps, double peak_gflops) {
    double in_ops = 0;
    for (int i = 0; i < P_COUNT; i++) in_ops += prof_s[i];
    printf("where a step's time goes (mean of %ld steps, %.1f ms):\n", steps, step_total_s / (double)steps * 1e3);
    for (int i = 0; i < P_COUNT; i++) {
        if (!prof_calls[i]) continue;
        printf("  %-28s %7.2f ms %5.1f%%  %4ld calls", prof_names[i], prof_s[i] / (double)steps * 1e3,
               100 * prof_s[i] / step_total_s, prof_calls[i] / steps);
        if (prof_flops[i] > 0)
            printf("  %6.1f GFLOP/s = %4.1f%% of peak", prof_flops[i] / prof_s[i] / 1e9,
                   100 * prof_flops[i] / prof_s[i] / 1e9 / peak_gflops);
        printf("\n");
    }
    const char *names[3] = {"zeroing the gradients", "optimizer (AdamW)", "rest of the step"};
    double secs[3] = {zero_s, optim_s, step_total_s - in_ops - zero_s - optim_s};
    for (int i = 0; i < 3; i++)
        printf("  %-28s %7.2f ms %5.1f%%\n", names[i], secs[i] / (double)steps * 1e3, 100 * secs[i] / step_total_s);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    struct ty_train_config c = {.n_vocab = 8192,
                                .n_embd = 256,
                                .n_layer = 4,
                                .n_head = 8,
                                .n_head_kv = 4,
                                .head_dim = 32,
                                .n_ff = 768,
                                .n_ctx = 2048,
                                .norm_eps = 1e-6f,
                                .tied = true};
    c.rope.freq_base = 10000.0f;
    long batch = 8, ctx = 128, steps = 5, threads = 2;
    bool json = false, profile = false;
    enum ty_train_precision prec = TY_TRAIN_PRECISION_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v = i + 1 < argc ? atol(argv[i + 1]) : 0;
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(a, "--profile")) {
            profile = true;
            continue;
        }
        if (!strcmp(a, "--precision")) {
            if (i + 1 >= argc || !ty__train_precision_from_name(argv[i + 1], &prec)) {
                fprintf(stderr, "bench_train: --precision takes f32 or bf16\n");
                return 2;
            }
            i++;
            continue;
        }
        if (i + 1 >= argc || v <= 0) {
            fprintf(stderr, "bench_train: %s needs a positive value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--vocab"))
            c.n_vocab = (int32_t)v;
        else if (!strcmp(a, "--embd"))
            c.n_embd = (int32_t)v;
        else if (!strcmp(a, "--layers"))
            c.n_layer = (int32_t)v;
        else if (!strcmp(a, "--heads"))
            c.n_head = (int32_t)v;
        else if (!strcmp(a, "--kv-heads"))
            c.n_head_kv = (int32_t)v;
        else if (!strcmp(a, "--head-dim"))
            c.head_dim = (int32_t)v;
        else if (!strcmp(a, "--ff"))
            c.n_ff = (int32_t)v;
        else if (!strcmp(a, "--batch"))
            batch = v;
        else if (!strcmp(a, "--ctx"))
            ctx = v;
        else if (!strcmp(a, "--steps"))
            steps = v;
        else if (!strcmp(a, "--threads"))
            threads = v;
        else {
            fprintf(stderr, "bench_train: unknown argument %s\n", a);
            return 2;
        }
    }
    struct ty_roofline rl;
    if (ty__roofline_measure_ex(&rl, (int)threads, 1.0, ty__simd()->isa, 16u << 20) != TY_OK) {
        fprintf(stderr, "bench_train: %s\n", ty_last_error());
        return 1;
    }
    struct ty_train_model *m = NULL;
    struct ty_train_optim o;
    if (ty__train_model_init(&c, (int)threads, &m) != TY_OK || ty__train_model_set_precision(m, prec) != TY_OK) {
        fprintf(stderr, "bench_train: %s\n", ty_last_error());
        ty__train_model_free(m);
        return 1;
    }
    bool bf16 = prec == TY_TRAIN_PRECISION_BF16;
    double peak = bf16 ? rl.bf16_gflops : rl.fma_gflops; /* set_precision succeeded: the path has vdpbf16ps */
    const char *peak_name = bf16 ? "bf16 dot" : "FMA", *insn = bf16 ? rl.bf16_insn : rl.fma_insn;
    ty__train_model_init_random(m, 1, 0.02f);
    if (profile) {
        prof_inner = m->ops, prof_inner_ctx = m->ops_ctx;
        m->ops = &prof_ops;
    }
    struct ty_train_optim_params op = ty__train_optim_default_params();
    ty__train_optim_init(&o, m, &op);
    size_t n_tok = (size_t)batch * (size_t)(ctx + 1);
    int32_t *tok = malloc(n_tok * sizeof *tok);
    uint64_t x = 42;
    for (size_t i = 0; i < n_tok; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((x >> 33) % (uint64_t)c.n_vocab);
    }
    double *t = malloc((size_t)(steps + 1) * sizeof *t), loss = 0, timed_s = 0;
    for (long s = 0; s <= steps; s++) {
        prof_on = s > 0;
        double t0 = ty__time_s();
        ty__train_zero_grads(m);
        double t1 = ty__time_s();
        if (ty__train_forward_backward(m, tok, batch, ctx, 1.0f, &loss) != TY_OK) {
            fprintf(stderr, "bench_train: %s\n", ty_last_error());
            return 1;
        }
        double t2 = ty__time_s();
        ty__train_optim_step(&o, m, NULL, NULL);
        if (prof_on) zero_s += t1 - t0, optim_s += ty__time_s() - t2;
        t[s] = ty__time_s() - t0;
        if (s > 0) timed_s += t[s];
    }
    qsort(t + 1, (size_t)steps, sizeof *t, cmp_double);
    double med = t[1 + steps / 2], tps = (double)(batch * ctx) / med;
    double flops = ty__train_flops_per_token(&c, ctx) * tps;
    double mfu = flops / (peak * 1e9);
    if (json)
        printf("{\"impl\": \"tongyun\", \"precision\": \"%s\", \"threads\": %ld, \"params\": %zu, \"tok_s\": %.1f, "
               "\"step_s\": %.4f, \"gflops\": %.2f, \"fma_peak_gflops\": %.1f, \"bf16_peak_gflops\": %.1f, "
               "\"mfu\": %.4f, \"mfu_of\": \"%s\", \"loss\": %.4f}\n",
               ty__train_precision_name(prec), threads, m->n_params, tps, med, flops / 1e9, rl.fma_gflops,
               rl.bf16_gflops, mfu, bf16 ? "bf16_peak" : "fma_peak", loss);
    else
        printf("tongyun (%s): %zu params, batch %ld x %ld, %ld threads: %.0f tok/s (step %.3f s), %.1f GFLOP/s = "
               "%.1f%% of the %.1f GFLOP/s %s peak (%s)\n",
               ty__train_precision_name(prec), m->n_params, batch, ctx, threads, tps, med, flops / 1e9, mfu * 100, peak,
               peak_name, insn);
    if (profile) {
        prof_print(timed_s, steps, peak);
        m->ops = prof_inner;
    }
    free(tok);
    free(t);
    ty__train_optim_free(&o);
    ty__train_model_free(m);
    return 0;
}
