/*
 * bench_train.c - training throughput of the trainer (src/train/) on the CPU: tokens per second of full steps
 * (forward, backward, AdamW) on a qwen3 model of a given shape with random tokens, in f32 or in bf16 mixed precision
 * (--precision), and the MFU against the peak of the instruction the products run on, measured in the same run
 * (roofline.h): the f32 FMA peak for f32, the vdpbf16ps peak for bf16. `bench/bench_train.sh` runs it beside PyTorch
 * on the same shape, batch and thread count and prints the ratios.
 *
 *   bench_train [--vocab V] [--embd E] [--layers L] [--heads H] [--kv-heads K] [--head-dim D] [--ff F]
 *               [--batch B] [--ctx S] [--steps N] [--threads T] [--precision f32|bf16] [--json]
 *
 * Figures: the median step time of N timed steps after one warm-up step.
 */
#include "chip/cpu/roofline.h"
#include "train/train.h"

#include <stdio.h>
#include <stdlib.h>

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
    bool json = false;
    enum ty_train_precision prec = TY_TRAIN_PRECISION_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v = i + 1 < argc ? atol(argv[i + 1]) : 0;
        if (!strcmp(a, "--json")) {
            json = true;
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
    struct ty_train_optim_params op = ty__train_optim_default_params();
    ty__train_optim_init(&o, m, &op);
    size_t n_tok = (size_t)batch * (size_t)(ctx + 1);
    int32_t *tok = malloc(n_tok * sizeof *tok);
    uint64_t x = 42;
    for (size_t i = 0; i < n_tok; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((x >> 33) % (uint64_t)c.n_vocab);
    }
    double *t = malloc((size_t)(steps + 1) * sizeof *t), loss = 0;
    for (long s = 0; s <= steps; s++) {
        double t0 = ty__time_s();
        ty__train_zero_grads(m);
        if (ty__train_forward_backward(m, tok, batch, ctx, 1.0f, &loss) != TY_OK) {
            fprintf(stderr, "bench_train: %s\n", ty_last_error());
            return 1;
        }
        ty__train_optim_step(&o, m, NULL, NULL);
        t[s] = ty__time_s() - t0;
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
    free(tok);
    free(t);
    ty__train_optim_free(&o);
    ty__train_model_free(m);
    return 0;
}
