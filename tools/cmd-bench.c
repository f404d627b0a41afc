/*
 * cmd-bench.c - `tongyun bench`: prefill and decode speed of a model, as llama-bench reports them (tokens/s, mean ±
 * sd over repetitions), each set against this machine's roofline measured in the same run: decode against the read
 * bandwidth (the weight, KV and recurrent-state bytes one step moves, model/cost.h), prefill against the peak of the
 * instructions the kernels use (int8 dot products for quantised weights, bf16 or f32 FMA otherwise;
 * chip/cpu/roofline.h).
 *
 * Prefill is one batch of -p random tokens with the last token's logits; decode is -n single-token steps, each with its
 * logits, as llama-bench's pp and tg tests: from an empty cache, or with -d on top of that many cached tokens (filled
 * once per depth, untimed; each repetition truncates the cache back to it), as llama-bench's "pp512 @ d4096". One
 * untimed warm-up of each runs first. Decode's bandwidth is measured again right before and right after each of its
 * repetitions (a bandwidth probe, roofline.h), since a VM's host may change it within seconds; the roofline of the
 * start of the run is kept in the table and in mem_bw_gbs. --json prints one JSON object per thread count and depth
 * (JSON Lines), carrying every figure of the table.
 */
#include "cli.h"

#include "base/threads.h"
#include "chip/backend.h"
#include "chip/cpu/roofline.h"
#include "model/cost.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#define MAX_LIST 16

static void usage(FILE *f) {
    fprintf(f,
            "usage: tongyun bench -m MODEL [options]\n"
            "\n"
            "Measures prefill (pp) and decode (tg) tokens/s of a GGUF model, and in the same run this machine's read\n"
            "bandwidth and peak FMA / int8-dot / bf16-dot throughput, and prints each speed as a percentage of its\n"
            "roofline: decode = (weight + KV + recurrent-state bytes per token) / bandwidth, the bandwidth measured\n"
            "right before and after each decode repetition (a VM's host can change it within seconds); prefill =\n"
            "FLOPs / peak of the kernels' instructions. Make a model without downloads with `tongyun mkmodel`.\n"
            "\n"
            "  -m, --model FILE          GGUF model file\n"
            "  -t, --threads N[,N...]    thread counts to run (default: one per core)\n"
            "  -p, --n-prompt N          prompt tokens of the prefill test (default 512; 0 = skip)\n"
            "  -n, --n-gen N             tokens of the decode test (default 128; 0 = skip)\n"
            "  -d, --n-depth N[,N...]    tokens already in the KV cache when each test starts (default 0): the\n"
            "                            tests at a context depth, as llama-bench's \"tg128 @ d4096\"; the\n"
            "                            rooflines count the attention FLOPs and KV bytes of that depth\n"
            "  -r, --repetitions N       timed repetitions of each test (default 5)\n"
            "      --backend NAME        compute backend (default: the best available)\n"
            "      --kv-type f16|f32     KV cache precision (default f16)\n"
            "      --roofline-seconds S  time spent measuring the roofline per thread count (default 2)\n"
            "      --profile             also time every backend op of the timed repetitions: per test, each op's\n"
            "                            calls and microseconds per token, its share of the time, and the GB/s\n"
            "                            of weights (products) or K/V (attention) it read; for products, the\n"
            "                            microseconds the calling thread worked alone (before and after the\n"
            "                            threads stream) and the GB/s of the rest\n"
            "      --json                one JSON object per thread count and depth instead of the table, with\n"
            "                            at least pp_tok_s, tg_tok_s, mem_bw_gbs, tg_roofline_pct, pp_peak_pct\n"
            "                            and n_depth (and with --profile, pp_profile and tg_profile)\n"
            "  -h, --help                this help\n"
            "\n"
            "TY_CPU_ISA=scalar|avx2|avx512|avx512vnni|avx512bf16|avx512amx|neon forces a CPU dispatch path.\n");
}

struct bench_opts {
    const char *model, *backend;
    long threads[MAX_LIST];
    int n_threads;
    long n_prompt, n_gen, reps;
    long depths[MAX_LIST];
    int n_depths;
    double roofline_s;
    enum ty_type kv_type;
    bool json, profile;
};

/* "1,2,4" into out[]; false (message printed) on a bad entry or too many. */
static bool parse_list(const char *flag, const char *s, long min, long max, long *out, int *n) {
    *n = 0;
    char buf[256];
    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "tongyun bench: %s: list too long\n", flag);
        return false;
    }
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_LIST) {
            fprintf(stderr, "tongyun bench: %s: at most %d values\n", flag, MAX_LIST);
            return false;
        }
        if (!ty_cli_int(flag, tok, min, max, &out[*n])) return false;
        (*n)++;
    }
    if (*n == 0) fprintf(stderr, "tongyun bench: %s needs at least one value\n", flag);
    return *n > 0;
}

/* 0: parsed; 1: --help shown; 2: usage error (message printed). */
static int parse(int argc, char **argv, struct bench_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            TY_CLI_VALUE();
            o->model = v;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            TY_CLI_VALUE();
            if (!parse_list(a, v, 1, 1024, o->threads, &o->n_threads)) return 2;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, 1 << 20, &o->n_prompt)) return 2;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, 1 << 20, &o->n_gen)) return 2;
        } else if (!strcmp(a, "-d") || !strcmp(a, "--n-depth")) {
            TY_CLI_VALUE();
            if (!parse_list(a, v, 0, 1 << 20, o->depths, &o->n_depths)) return 2;
        } else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 1, 1000, &o->reps)) return 2;
        } else if (!strcmp(a, "--backend")) {
            TY_CLI_VALUE();
            o->backend = v;
        } else if (!strcmp(a, "--roofline-seconds")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0.2, 600, &o->roofline_s)) return 2;
        } else if (!strcmp(a, "--kv-type")) {
            TY_CLI_VALUE();
            if (!strcmp(v, "f16") || !strcmp(v, "f32")) {
                o->kv_type = !strcmp(v, "f16") ? TY_TYPE_F16 : TY_TYPE_F32;
            } else {
                fprintf(stderr, "tongyun bench: --kv-type expects f16 or f32, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--profile")) {
            o->profile = true;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else {
            fprintf(stderr, "tongyun bench: unknown option '%s' (see tongyun bench --help)\n", a);
            return 2;
        }
    }
    if (!o->model) {
        fprintf(stderr, "tongyun bench: -m MODEL is required (see tongyun bench --help)\n");
        return 2;
    }
    if (o->n_prompt == 0 && o->n_gen == 0) {
        fprintf(stderr, "tongyun bench: -p and -n are both 0: nothing to measure\n");
        return 2;
    }
    return 0;
}

/* ==== Measuring ==== */

struct stats {
    double mean, sd;
    double samples[1000];
    int n;
};

static void stats_add(struct stats *s, double v) {
    s->samples[s->n++] = v;
}

/* Mean and sample standard deviation, once every repetition is in. */
static void stats_finish(struct stats *s) {
    if (s->n == 0) return;
    double sum = 0, sq = 0;
    for (int i = 0; i < s->n; i++) sum += s->samples[i];
    s->mean = sum / s->n;
    for (int i = 0; i < s->n; i++) sq += (s->samples[i] - s->mean) * (s->samples[i] - s->mean);
    s->sd = s->n > 1 ? sqrt(sq / (s->n - 1)) : 0.0;
}

struct result {
    int threads;
    long depth; /* tokens in the cache when each test starts */
    struct ty_roofline roof;
    struct ty_model_cost cost;
    struct stats pp, tg;
    struct ty_profile pp_prof, tg_prof;                  /* --profile: the ops of the timed repetitions */
    double pp_tokens, pp_seconds, tg_tokens, tg_seconds; /* what the timed repetitions ran, for the profile */
    double tg_bw_gbs;                                    /* read bandwidth around the decode repetitions (mean) */
    struct stats tg_bw;                                  /* per repetition: the mean of the probes before and after */
    double pp_flops, pp_peak_tok_s, pp_peak_gops, tg_bytes, tg_roof_tok_s; /* pp_flops: per prompt token */
    char backend[32], type[32], arch[32]; /* copies: the model is freed before the results are printed */
};

/* Peak of the instruction the kernels of weight type `t` use, in 1e9 operations per second. */
static double type_peak(const struct ty_roofline *r, enum ty_type t) {
    const struct ty_simd *s = ty__simd_for_type(ty__simd(), t);
    switch (ty__simd_act_format(s, t)) {
    case TY_ACT_Q8:
    case TY_ACT_Q8_K:
        return ty__roofline_int8_peak(r, &s->t[t]);
    case TY_ACT_BF16:
        return r->bf16_gflops > 0 ? r->bf16_gflops : r->fma_gflops;
    default:
        return r->fma_gflops;
    }
}

/* The roofline figures of `res` from its cost and measured peaks: its tests start at res->depth cached tokens, so a
 * prompt token attends to depth + (n_prompt + 1) / 2 positions on average and a decode step reads the KV of depth +
 * (n_gen + 1) / 2. */
static void rooflines(struct result *res, long n_prompt, long n_gen) {
    const struct ty_model_cost *c = &res->cost;
    const double depth = (double)res->depth;
    if (n_prompt > 0) {
        /* the ideal time of one prompt token: each type's share of the FLOPs at its own peak, attention at FMA peak;
         * the output matrix runs for the last token only (the prompt's one row of logits) */
        double attn = c->attn_flops_per_pos * (depth + (double)(n_prompt + 1) / 2.0),
               s = attn / (res->roof.fma_gflops * 1e9);
        double skipped = c->output_flops * (1.0 - 1.0 / (double)n_prompt);
        for (int t = 0; t < TY_TYPE_COUNT; t++) {
            double f = c->flops_by_type[t] - (t == (int)c->output_type ? skipped : 0.0);
            if (f > 0) s += f / (type_peak(&res->roof, (enum ty_type)t) * 1e9);
        }
        res->pp_flops = c->matmul_flops - skipped + attn;
        res->pp_peak_tok_s = s > 0 ? 1.0 / s : 0;
        res->pp_peak_gops = res->pp_flops * res->pp_peak_tok_s / 1e9;
    }
    if (n_gen > 0) {
        res->tg_bytes = c->weight_bytes + c->state_bytes + c->kv_bytes_per_pos * (depth + (double)(n_gen + 1) / 2.0);
        res->tg_bw_gbs = res->tg_bw.n > 0 ? res->tg_bw.mean : res->roof.mem_bw_gbs;
        res->tg_roof_tok_s = res->tg_bw_gbs * 1e9 / res->tg_bytes;
    }
}

/* The tests of one thread count at one depth on a loaded model: the cache is filled to the depth once (untimed), and
 * every repetition truncates it back there. */
static enum ty_status run_depth(const struct bench_opts *o, struct ty_context *ctx, struct ty_backend *be,
                                struct ty_bw_probe *probe, const int32_t *ids, float *logits, struct result *res) {
    const int32_t depth = (int32_t)res->depth;
    TY_TRY(ty_context_truncate(ctx, 0));
    if (depth > 0) TY_TRY(ty_context_eval(ctx, ids, (size_t)depth, TY_LOGITS_NONE, NULL));
    ids += depth;
    for (long rep = -1; rep < o->reps && o->n_prompt > 0; rep++) { /* rep -1: warm-up */
        TY_TRY(ty_context_truncate(ctx, depth));
        be->profile = o->profile && rep >= 0 ? &res->pp_prof : NULL;
        double t0 = ty__time_s();
        enum ty_status st = ty_context_eval(ctx, ids, (size_t)o->n_prompt, TY_LOGITS_LAST, logits);
        double t = ty__time_s() - t0;
        be->profile = NULL;
        TY_TRY(st);
        if (rep >= 0)
            stats_add(&res->pp, (double)o->n_prompt / t), res->pp_tokens += (double)o->n_prompt, res->pp_seconds += t;
    }
    /* Decode's roofline is measured around each timed repetition (a probe right before and right after it): the
     * bandwidth a VM's host gives can change within seconds (roofline.h). */
    for (long rep = -1; rep < o->reps && o->n_gen > 0; rep++) {
        TY_TRY(ty_context_truncate(ctx, depth));
        long steps = rep < 0 ? (o->n_gen < 8 ? o->n_gen : 8) : o->n_gen;
        double bw_before = rep >= 0 ? ty__bw_probe_gbs(probe, 2) : 0;
        be->profile = o->profile && rep >= 0 ? &res->tg_prof : NULL;
        enum ty_status st = TY_OK;
        double t0 = ty__time_s();
        for (long i = 0; i < steps && st == TY_OK; i++) st = ty_context_eval(ctx, &ids[i], 1, TY_LOGITS_LAST, logits);
        double t = ty__time_s() - t0;
        be->profile = NULL;
        TY_TRY(st);
        if (rep < 0) continue;
        stats_add(&res->tg, (double)steps / t), res->tg_tokens += (double)steps, res->tg_seconds += t;
        stats_add(&res->tg_bw, (bw_before + ty__bw_probe_gbs(probe, 2)) / 2);
    }
    stats_finish(&res->pp);
    stats_finish(&res->tg);
    stats_finish(&res->tg_bw);
    rooflines(res, o->n_prompt, o->n_gen);
    return TY_OK;
}

/* Every depth's tests with `threads` threads into res[0 .. o->n_depths): one roofline measurement and one model load
 * for all of them. */
static enum ty_status run_one(const struct bench_opts *o, int threads, struct result *res) {
    memset(res, 0, (size_t)o->n_depths * sizeof *res);
    TY_TRY(ty__roofline_measure(&res[0].roof, threads, o->roofline_s));

    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = threads;
    mp.backend = o->backend;
    struct ty_model *model = NULL;
    struct ty_context *ctx = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    struct ty_bw_probe *probe = NULL;
    enum ty_status st = ty_model_load(o->model, &mp, &model);
    if (st != TY_OK) return st;
    ty__model_cost(model, o->kv_type, &res[0].cost);
    snprintf(res[0].backend, sizeof res[0].backend, "%s", ty__model_backend_name(model));
    snprintf(res[0].type, sizeof res[0].type, "%s", ty__model_type_label(model));
    snprintf(res[0].arch, sizeof res[0].arch, "%s", ty_model_arch(model));

    long max_depth = 0;
    for (int d = 0; d < o->n_depths; d++) max_depth = o->depths[d] > max_depth ? o->depths[d] : max_depth;
    struct ty_context_params cp = ty_context_default_params();
    int64_t need = max_depth + (o->n_prompt > o->n_gen ? o->n_prompt : o->n_gen) + 1; /* each at most 2^20 */
    cp.n_ctx = (int32_t)need;
    /* the prefill test's batch; a decode-only run fills its depth in batches of up to 512 */
    cp.n_batch = (int32_t)(o->n_prompt > 0 ? o->n_prompt : max_depth > 512 ? 512 : max_depth > 0 ? max_depth : 1);
    cp.kv_type = o->kv_type;
    int32_t n_vocab = ty_model_n_vocab(model);
    if ((st = ty_context_init(model, &cp, &ctx)) != TY_OK) goto done;
    ids = ty__malloc((size_t)need * sizeof *ids);
    logits = ty__malloc((size_t)n_vocab * sizeof *logits);
    if (!ids || !logits) {
        st = ty__error(TY_ERR_NO_MEMORY, "out of memory for %" PRId64 " token ids", need);
        goto done;
    }
    uint64_t rng = 0x2545f4914f6cdd1dull; /* the same tokens every run */
    for (int64_t i = 0; i < need; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        ids[i] = (int32_t)(rng % (uint64_t)n_vocab);
    }
    if (o->n_gen > 0 && (st = ty__bw_probe_new(threads, 0, &probe)) != TY_OK) goto done;
    for (int d = 0; d < o->n_depths && st == TY_OK; d++) {
        struct result *r = &res[d];
        if (d > 0) { /* the figures every depth shares */
            r->roof = res[0].roof, r->cost = res[0].cost;
            memcpy(r->backend, res[0].backend, sizeof r->backend), memcpy(r->type, res[0].type, sizeof r->type);
            memcpy(r->arch, res[0].arch, sizeof r->arch);
        }
        r->threads = threads, r->depth = o->depths[d];
        st = run_depth(o, ctx, ty__model_backend(model), probe, ids, logits, r);
    }
done:
    ty__bw_probe_free(probe);
    ty_free(ids);
    ty_free(logits);
    ty_context_free(ctx);
    ty_model_free(model);
    return st;
}

/* ==== Reporting ==== */

static double pct(double v, double roof) {
    return roof > 0 ? 100.0 * v / roof : 0;
}

static void print_header(const struct bench_opts *o, const struct result *r) {
    printf("model: %s (%s %s, %.2f GiB, %.3g B params, %.3g B active per token)\n", o->model, r->arch, r->type,
           r->cost.file_bytes / (1024.0 * 1024 * 1024), (double)r->cost.n_params / 1e9,
           (double)r->cost.n_params_active / 1e9);
    printf("decode reads %.1f MiB of weights per token + %.1f KiB of KV per cached position (KV %s)\n",
           r->cost.weight_bytes / (1024.0 * 1024), r->cost.kv_bytes_per_pos / 1024.0,
           o->kv_type == TY_TYPE_F32 ? "f32" : "f16");
    printf("\n| threads | isa | read GB/s | f32 FMA GFLOP/s | int8 dot GOP/s | bf16 dot GFLOP/s |\n"
           "| ---: | --- | ---: | ---: | ---: | ---: |\n");
}

static void print_roof_row(const struct result *r) {
    const struct ty_roofline *f = &r->roof;
    char amx[48] = "";
    if (f->amx_int8_gops > 0) snprintf(amx, sizeof amx, " (AMX tiles: %.0f)", f->amx_int8_gops);
    printf("| %d | %s | %.1f (%s) | %.0f | %.0f%s | %.0f |\n", r->threads, ty__cpu_isa_name(f->isa), f->mem_bw_gbs,
           f->mem_insn ? f->mem_insn : "?", f->fma_gflops, f->int8_gops, amx, f->bf16_gflops);
}

/* GB/s of `bytes` over `seconds`, 0 when either is not positive. */
static double gbs(double bytes, double seconds) {
    return bytes > 0 && seconds > 0 ? bytes / seconds / 1e9 : 0;
}

/* One test's profile: per op with calls, its calls and microseconds per token, its share of the test's time, the
 * GB/s it read, the microseconds per token its calling thread worked alone (a product's steps before and after its
 * threads stream: quantising the input, SwiGLU, head norms and RoPE) and the GB/s of the rest (the streams); then the
 * time outside every op (the model's own work between them: graph set-up, logits copy). */
static void print_profile(const char *test, const struct result *r, const struct ty_profile *p, double tokens,
                          double seconds) {
    if (tokens <= 0 || seconds <= 0) return;
    printf("\nprofile of %s, %d threads (%.0f tokens, %.3f s):\n\n| op | calls/token | us/token | %% of time | GB/s "
           "read | us/token alone | GB/s streaming |\n"
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
           test, r->threads, tokens, seconds);
    double in_ops = 0;
    for (int op = 0; op < TY_OP_COUNT; op++) {
        if (!p->calls[op]) continue;
        in_ops += p->seconds[op];
        printf("| %s | %.1f | %.1f | %.1f |", ty__profile_op_name((enum ty_profile_op)op),
               (double)p->calls[op] / tokens, p->seconds[op] * 1e6 / tokens, pct(p->seconds[op], seconds));
        double all = gbs(p->bytes[op], p->seconds[op]), streaming = gbs(p->bytes[op], p->seconds[op] - p->alone[op]);
        all > 0 ? printf(" %.1f |", all) : printf(" |");
        p->alone[op] > 0 ? printf(" %.1f |", p->alone[op] * 1e6 / tokens) : printf(" |");
        streaming > 0 && p->alone[op] > 0 ? printf(" %.1f |\n", streaming) : printf(" |\n");
    }
    printf("| (outside the ops) | | %.1f | %.1f | | | |\n", (seconds - in_ops) * 1e6 / tokens,
           pct(seconds - in_ops, seconds));
}

static json_t *profile_json(const struct ty_profile *p, double tokens, double seconds) {
    json_t *a = json_array();
    double in_ops = 0;
    for (int op = 0; op < TY_OP_COUNT && tokens > 0; op++) {
        if (!p->calls[op]) continue;
        in_ops += p->seconds[op];
        json_t *e = json_object();
        json_object_set_new(e, "op", json_string(ty__profile_op_name((enum ty_profile_op)op)));
        json_object_set_new(e, "calls_per_token", json_real((double)p->calls[op] / tokens));
        json_object_set_new(e, "us_per_token", json_real(p->seconds[op] * 1e6 / tokens));
        json_object_set_new(e, "share", json_real(seconds > 0 ? p->seconds[op] / seconds : 0));
        json_object_set_new(e, "read_gbs", json_real(gbs(p->bytes[op], p->seconds[op])));
        json_object_set_new(e, "alone_us_per_token", json_real(p->alone[op] * 1e6 / tokens));
        json_object_set_new(e, "streaming_gbs", json_real(gbs(p->bytes[op], p->seconds[op] - p->alone[op])));
        json_array_append_new(a, e);
    }
    json_t *e = json_object();
    json_object_set_new(e, "op", json_string("(outside the ops)"));
    json_object_set_new(e, "us_per_token", json_real(tokens > 0 ? (seconds - in_ops) * 1e6 / tokens : 0));
    json_object_set_new(e, "share", json_real(seconds > 0 ? (seconds - in_ops) / seconds : 0));
    json_array_append_new(a, e);
    return a;
}

/* A test's name as llama-bench prints it: "pp512", "tg128", "tg128 @ d4096". */
static const char *test_name(char *buf, size_t size, const char *kind, long tokens, long depth) {
    if (depth > 0)
        snprintf(buf, size, "%s%ld @ d%ld", kind, tokens, depth);
    else
        snprintf(buf, size, "%s%ld", kind, tokens);
    return buf;
}

/* rs: o->n_threads x o->n_depths results, thread count by thread count. */
static void print_table(const struct bench_opts *o, const struct result *rs) {
    const int n = o->n_threads * o->n_depths;
    char name[64];
    print_header(o, &rs[0]);
    for (int i = 0; i < n; i += o->n_depths) print_roof_row(&rs[i]);
    printf("\n| backend | threads | test | t/s | roofline t/s | %% of roofline |\n"
           "| --- | ---: | --- | ---: | ---: | ---: |\n");
    for (int i = 0; i < n; i++) {
        const struct result *r = &rs[i];
        if (o->n_prompt > 0)
            printf("| %s | %d | %s | %.2f ± %.2f | %.1f (%.0f GOP/s) | %.1f |\n", r->backend, r->threads,
                   test_name(name, sizeof name, "pp", o->n_prompt, r->depth), r->pp.mean, r->pp.sd, r->pp_peak_tok_s,
                   r->pp_peak_gops, pct(r->pp.mean, r->pp_peak_tok_s));
        if (o->n_gen > 0)
            printf("| %s | %d | %s | %.2f ± %.2f | %.1f (%.1f MiB/token at %.1f GB/s) | %.1f |\n", r->backend,
                   r->threads, test_name(name, sizeof name, "tg", o->n_gen, r->depth), r->tg.mean, r->tg.sd,
                   r->tg_roof_tok_s, r->tg_bytes / (1024.0 * 1024), r->tg_bw_gbs, pct(r->tg.mean, r->tg_roof_tok_s));
    }
    for (int d = 0; d < o->n_depths && o->n_threads > 1 && o->n_prompt > 0; d++) {
        const struct result *first = &rs[d], *last = &rs[n - o->n_depths + d];
        if (first->pp.mean <= 0) continue;
        printf("%sprefill scaling %d -> %d threads", d ? "" : "\n", first->threads, last->threads);
        if (first->depth > 0) printf(" @ d%ld", first->depth);
        printf(": %.2fx\n", last->pp.mean / first->pp.mean);
    }
    for (int i = 0; i < n && o->profile; i++) {
        print_profile(test_name(name, sizeof name, "pp", o->n_prompt, rs[i].depth), &rs[i], &rs[i].pp_prof,
                      rs[i].pp_tokens, rs[i].pp_seconds);
        print_profile(test_name(name, sizeof name, "tg", o->n_gen, rs[i].depth), &rs[i], &rs[i].tg_prof,
                      rs[i].tg_tokens, rs[i].tg_seconds);
    }
}

static json_t *samples_json(const struct stats *s) {
    json_t *a = json_array();
    for (int i = 0; i < s->n; i++) json_array_append_new(a, json_real(s->samples[i]));
    return a;
}

static void print_json(const struct bench_opts *o, const struct result *r) {
    const struct ty_roofline *f = &r->roof;
    json_t *j = json_object();
    json_object_set_new(j, "model", json_string(o->model));
    json_object_set_new(j, "arch", json_string(r->arch));
    json_object_set_new(j, "type", json_string(r->type));
    json_object_set_new(j, "size_bytes", json_real(r->cost.file_bytes));
    json_object_set_new(j, "n_params", json_integer(r->cost.n_params));
    json_object_set_new(j, "n_params_active", json_integer(r->cost.n_params_active));
    json_object_set_new(j, "backend", json_string(r->backend));
    json_object_set_new(j, "isa", json_string(ty__cpu_isa_name(f->isa)));
    json_object_set_new(j, "threads", json_integer(r->threads));
    json_object_set_new(j, "kv_type", json_string(o->kv_type == TY_TYPE_F32 ? "f32" : "f16"));
    json_object_set_new(j, "n_prompt", json_integer(o->n_prompt));
    json_object_set_new(j, "n_gen", json_integer(o->n_gen));
    json_object_set_new(j, "n_depth", json_integer(r->depth));
    json_object_set_new(j, "attn_flops_per_position", json_real(r->cost.attn_flops_per_pos));
    json_object_set_new(j, "repetitions", json_integer(o->reps));
    json_object_set_new(j, "mem_bw_gbs", json_real(f->mem_bw_gbs));
    json_object_set_new(j, "mem_bw_mean_gbs", json_real(f->mem_bw_mean_gbs));
    json_object_set_new(j, "fma_gflops", json_real(f->fma_gflops));
    json_object_set_new(j, "int8_gops", json_real(f->int8_gops));
    json_object_set_new(j, "int8_insn", json_string(f->int8_insn ? f->int8_insn : "?"));
    json_object_set_new(j, "bf16_gflops", json_real(f->bf16_gflops));
    if (f->amx_int8_gops > 0) json_object_set_new(j, "amx_int8_gops", json_real(f->amx_int8_gops));
    if (o->n_prompt > 0) {
        json_object_set_new(j, "pp_tok_s", json_real(r->pp.mean));
        json_object_set_new(j, "pp_tok_s_sd", json_real(r->pp.sd));
        json_object_set_new(j, "pp_samples", samples_json(&r->pp));
        json_object_set_new(j, "pp_flops_per_token", json_real(r->pp_flops));
        json_object_set_new(j, "pp_peak_gops", json_real(r->pp_peak_gops));
        json_object_set_new(j, "pp_peak_tok_s", json_real(r->pp_peak_tok_s));
        json_object_set_new(j, "pp_peak_pct", json_real(pct(r->pp.mean, r->pp_peak_tok_s)));
        if (o->profile) json_object_set_new(j, "pp_profile", profile_json(&r->pp_prof, r->pp_tokens, r->pp_seconds));
    }
    if (o->n_gen > 0) {
        json_object_set_new(j, "tg_tok_s", json_real(r->tg.mean));
        json_object_set_new(j, "tg_tok_s_sd", json_real(r->tg.sd));
        json_object_set_new(j, "tg_samples", samples_json(&r->tg));
        json_object_set_new(j, "tg_bytes_per_token", json_real(r->tg_bytes));
        json_object_set_new(j, "tg_weight_bytes_per_token", json_real(r->cost.weight_bytes));
        json_object_set_new(j, "tg_state_bytes_per_token", json_real(r->cost.state_bytes));
        json_object_set_new(j, "tg_mem_bw_gbs", json_real(r->tg_bw_gbs));
        json_object_set_new(j, "tg_mem_bw_samples", samples_json(&r->tg_bw));
        json_object_set_new(j, "tg_roofline_tok_s", json_real(r->tg_roof_tok_s));
        json_object_set_new(j, "tg_roofline_pct", json_real(pct(r->tg.mean, r->tg_roof_tok_s)));
        if (o->profile) json_object_set_new(j, "tg_profile", profile_json(&r->tg_prof, r->tg_tokens, r->tg_seconds));
    }
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10));
    if (s) puts(s);
    free(s);
    json_decref(j);
}

int ty_cmd_bench(int argc, char **argv) {
    struct bench_opts o = {.n_prompt = 512, .n_gen = 128, .reps = 5, .roofline_s = 2.0, .kv_type = TY_TYPE_F16};
    int rc = parse(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    if (o.n_threads == 0) o.threads[o.n_threads++] = ty__cpu_count();
    if (o.n_depths == 0) o.depths[o.n_depths++] = 0;
    struct result *rs = ty__calloc((size_t)o.n_threads * (size_t)o.n_depths, sizeof *rs);
    if (!rs) return ty_cli_fail("bench", TY_ERR_NO_MEMORY);
    for (int i = 0; i < o.n_threads; i++) {
        struct result *mine = &rs[(size_t)i * (size_t)o.n_depths];
        enum ty_status st = run_one(&o, (int)o.threads[i], mine);
        if (st != TY_OK) {
            ty_free(rs);
            return ty_cli_fail("bench", st);
        }
        for (int d = 0; d < o.n_depths && o.json; d++) {
            print_json(&o, &mine[d]);
            fflush(stdout);
        }
    }
    if (!o.json) print_table(&o, rs);
    ty_free(rs);
    return 0;
}
