/*
 * cmd-sim.c - `tongyun sim`: simulate a serving cluster (or, with --train, a training step) for a model on N chips of
 * any catalogued kind, and print latency percentiles, throughput, goodput, KV utilisation, cost and energy as a table
 * or JSON; `--svg FILE` sweeps the request rate and charts latency against load. Two more modes serve the simulator's
 * evidence: `--validate OUT.md` regenerates docs/sim-validation.md, `--calibrate BENCH.json` compares predictions with
 * a `tongyun bench --json` run (from the engine's microbenchmarks with --micro-json, and `bench_serve` with
 * --serve-json; src/sim/engine-calib.c).
 */
#include "cli.h"

#include "sim/sim.h"

#include <math.h>
#include <stdlib.h>
#include <strings.h>

#define DEFAULT_REQUESTS 1000
#define SWEEP_POINTS     8

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tongyun sim --model PRESET|FILE.gguf --chip NAME --chips N [--tp N] [--pp N] [--ep N] [--dp N]\n"
        "                   [--rate QPS | --trace FILE | --users N] [--prompt-len L] [--output-len L] [--requests N]\n"
        "                   [--precision bf16|fp8|int8|int4] [--json] [--svg FILE] [options]\n"
        "       tongyun sim --train --model PRESET --chip NAME --chips N [--tp N] [--pp N] [--zero 0-3] ...\n"
        "       tongyun sim --validate OUT.md [--scale] [--bench-json FILE --micro-json F[,F...] [--serve-json F]]\n"
        "       tongyun sim --calibrate BENCH.json [--micro-json F[,F...] [--serve-json F]]\n"
        "\n"
        "Simulates a serving cluster: continuous batching with chunked prefill on every replica, requests routed to\n"
        "the less loaded of two random replicas, KV capacity from memory. Models: %s,\n"
        "or a GGUF file (its metadata). Chips: see `tongyun devices`.\n"
        "\n"
        "cluster:\n"
        "  --chips N              total chips (or --nodes N x --chips-per-node N)\n"
        "  --chips-per-node N     default: the chip's usual node (8 for GPUs)\n"
        "  --tp/--pp/--ep/--dp N  tensor, pipeline, expert and data parallelism; a replica has max(TP,EP) x PP\n"
        "                         chips (EP above TP runs EP/TP data-parallel attention groups)\n"
        "  --intra-link KIND      nvlink, icn or pcie (default: the chip's own link); --intra-gbs GB/s overrides\n"
        "  --net-gbps G           inter-node network per chip in Gb/s (RoCE/IB; default 400); --net-alpha-us\n"
        "  --precision P          weights (and activations for fp8/int8): bf16 (default), fp8, int8, int4\n"
        "  --kv-precision P       bf16 (default), fp8 or int8\n"
        "  --max-batch-tokens N   chunked-prefill token budget per iteration (default 8192; CPU 512)\n"
        "  --max-seqs N           running sequences per replica (default 256)\n"
        "  --disagg N             N replicas only prefill and hand prompts to the others (P/D disaggregation)\n"
        "  --chips-file FILE      add chips from a JSON file\n"
        "workload:\n"
        "  --rate QPS             Poisson arrivals per second\n"
        "  --trace FILE           CSV (arrival_s,prompt_tokens,output_tokens) or JSONL requests instead\n"
        "  --users N              a closed loop of N clients instead: each sends its next request the moment its\n"
        "                         previous one completes, as a load generator does (bench/bench_serve)\n"
        "  --ramp-ms X            (--users) client i sends its first request at i x X ms (default 0)\n"
        "  --front-ms X           a front end that takes one request at a time for X ms before the scheduler sees\n"
        "                         it (HTTP, JSON, tokenising: our server's event loop), counted in TTFT (default 0)\n"
        "  --prompt-len L         N, A-B (uniform), lognormal:MEAN:CV or exp:MEAN (default 1024)\n"
        "  --output-len L         the same for output tokens (default 256)\n"
        "  --requests N           requests to simulate (default %d)\n"
        "  --seed N               random seed (default 1)\n"
        "outputs:\n"
        "  --slo-ttft-ms X        goodput SLO on time to first token (default 2000)\n"
        "  --slo-tpot-ms Y        goodput SLO on time per output token (default 100)\n"
        "  --price USD            card-hour price for the cost figure (default: the catalogue's, an assumption)\n"
        "  --moe-skew CV          expert popularity coefficient of variation (default 0.3)\n"
        "  --json                 one JSON object with throughput_tok_s, prefill/decode_tok_s_per_chip, ttft_ms,\n"
        "                         tpot_ms, e2e_ms (mean, p50, p90, p99), goodput_rps, kv_util, cost_per_mtok, ...\n"
        "  --svg FILE             also sweep %d rates up to saturation and chart TTFT/TPOT p50/p99 against load\n"
        "training (--train):\n"
        "  --zero S               ZeRO stage 0-3 (default 1)\n"
        "  --global-batch N       sequences per step (default 1024); --micro-batch N (default 1)\n"
        "  --seq-len N            tokens per sequence (default 4096); --recompute for full recomputation\n"
        "evidence (scripts/sim-validation.sh runs these):\n"
        "  --validate OUT.md      write the validation report; --scale also times the 10,000-chip scenario\n"
        "  --calibrate BENCH.json predict a `tongyun bench --json` run and print predictions with their errors\n"
        "  --bench-json FILE      (--validate) the `tongyun bench --json` run to compare with\n"
        "  --micro-json F,F...    bench_kernels / bench_pool --json outputs to predict our engine from (without\n"
        "                         them --calibrate uses the host figures measured at start-up)\n"
        "  --serve-json FILE      a `bench_serve --json` run to predict with the simulation of the host\n"
        "  --notes TEXT           (--validate) how the runs were made, printed in the report\n"
        "\n"
        "Exit status: 0 on success, 1 when the configuration is impossible (the message names the constraint),\n"
        "2 on a usage error.\n",
        ty__sim_model_presets(), DEFAULT_REQUESTS, SWEEP_POINTS);
}

struct opts {
    const char *model, *chip, *trace, *svg, *chips_file, *validate, *bench_json, *calibrate, *intra_link;
    const char *micro_json, *serve_json, *notes;
    const char *prompt_len, *output_len;
    long chips, chips_per_node, nodes, tp, pp, ep, dp, requests, max_batch_tokens, prefill_chunk, max_seqs, disagg,
        seed, users;
    double rate, intra_gbs, net_gbps, net_alpha_us, price, slo_ttft, slo_tpot, moe_skew, front_ms, ramp_ms;
    enum ty_sim_dtype weight, kv, act;
    bool act_set;
    bool json, train, scale, recompute;
    long zero, global_batch, micro_batch, seq_len;
};

static int parse(int argc, char **argv, struct opts *o) {
    memset(o, 0, sizeof *o);
    o->weight = TY_SIM_DT_BF16;
    o->kv = TY_SIM_DT_BF16;
    o->moe_skew = -1;
    o->requests = DEFAULT_REQUESTS;
    o->seed = 1;
    o->zero = 1;
    o->global_batch = 1024;
    o->micro_batch = 1;
    o->seq_len = 4096;
    o->prompt_len = "1024";
    o->output_len = "256";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
#define VAL()                                                                                                          \
    do {                                                                                                               \
        if (!(v = ty_cli_value(argc, argv, &i))) return 2;                                                             \
    } while (0)
#define INT(field, lo, hi)                                                                                             \
    do {                                                                                                               \
        VAL();                                                                                                         \
        if (!ty_cli_int(a, v, lo, hi, &o->field)) return 2;                                                            \
    } while (0)
#define FLT(field, lo, hi)                                                                                             \
    do {                                                                                                               \
        VAL();                                                                                                         \
        if (!ty_cli_float(a, v, lo, hi, &o->field)) return 2;                                                          \
    } while (0)
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "--model") || !strcmp(a, "-m")) {
            VAL();
            o->model = v;
        } else if (!strcmp(a, "--chip")) {
            VAL();
            o->chip = v;
        } else if (!strcmp(a, "--chips")) {
            INT(chips, 1, 1000000);
        } else if (!strcmp(a, "--chips-per-node")) {
            INT(chips_per_node, 1, 1000000);
        } else if (!strcmp(a, "--nodes")) {
            INT(nodes, 1, 1000000);
        } else if (!strcmp(a, "--tp")) {
            INT(tp, 1, 4096);
        } else if (!strcmp(a, "--pp")) {
            INT(pp, 1, 4096);
        } else if (!strcmp(a, "--ep")) {
            INT(ep, 1, 65536);
        } else if (!strcmp(a, "--dp")) {
            INT(dp, 1, 1000000);
        } else if (!strcmp(a, "--intra-link")) {
            VAL();
            if (strcmp(v, "nvlink") && strcmp(v, "icn") && strcmp(v, "pcie") && strcmp(v, "ici") && strcmp(v, "hccs")) {
                fprintf(stderr, "tongyun sim: --intra-link expects nvlink, icn, ici, hccs or pcie, got '%s'\n", v);
                return 2;
            }
            o->intra_link = v;
        } else if (!strcmp(a, "--intra-gbs")) {
            FLT(intra_gbs, 0.001, 1e6);
        } else if (!strcmp(a, "--net-gbps")) {
            FLT(net_gbps, 0.001, 1e6);
        } else if (!strcmp(a, "--net-alpha-us")) {
            FLT(net_alpha_us, 0, 1e6);
        } else if (!strcmp(a, "--precision") || !strcmp(a, "--kv-precision")) {
            VAL();
            enum ty_sim_dtype d;
            if (!ty__sim_dtype_parse(v, &d) || d == TY_SIM_DT_F32 || (a[2] == 'k' && d == TY_SIM_DT_INT4)) {
                fprintf(stderr, "tongyun sim: %s expects bf16, fp8, int8%s, got '%s'\n", a,
                        a[2] == 'k' ? "" : " or int4", v);
                return 2;
            }
            if (a[2] == 'k')
                o->kv = d;
            else
                o->weight = d;
        } else if (!strcmp(a, "--max-batch-tokens")) {
            INT(max_batch_tokens, 1, 1 << 20);
        } else if (!strcmp(a, "--prefill-chunk")) {
            INT(prefill_chunk, 1, 1 << 20);
        } else if (!strcmp(a, "--max-seqs")) {
            INT(max_seqs, 1, 1 << 20);
        } else if (!strcmp(a, "--act-precision")) {
            VAL();
            if (!ty__sim_dtype_parse(v, &o->act) || o->act == TY_SIM_DT_F32 || o->act == TY_SIM_DT_INT4) {
                fprintf(stderr, "tongyun sim: --act-precision expects bf16, fp8 or int8, got '%s'\n", v);
                return 2;
            }
            o->act_set = true;
        } else if (!strcmp(a, "--disagg")) {
            INT(disagg, 1, 1000000);
        } else if (!strcmp(a, "--chips-file")) {
            VAL();
            o->chips_file = v;
        } else if (!strcmp(a, "--rate")) {
            FLT(rate, 1e-9, 1e12);
        } else if (!strcmp(a, "--trace")) {
            VAL();
            o->trace = v;
        } else if (!strcmp(a, "--prompt-len")) {
            VAL();
            o->prompt_len = v;
        } else if (!strcmp(a, "--output-len")) {
            VAL();
            o->output_len = v;
        } else if (!strcmp(a, "--users")) {
            INT(users, 1, 10000000);
        } else if (!strcmp(a, "--ramp-ms")) {
            FLT(ramp_ms, 0, 1e9);
        } else if (!strcmp(a, "--front-ms")) {
            FLT(front_ms, 0, 1e6);
        } else if (!strcmp(a, "--requests")) {
            INT(requests, 1, 100000000);
        } else if (!strcmp(a, "--seed")) {
            INT(seed, 0, 0x7fffffffL);
        } else if (!strcmp(a, "--slo-ttft-ms")) {
            FLT(slo_ttft, 1e-6, 1e12);
        } else if (!strcmp(a, "--slo-tpot-ms")) {
            FLT(slo_tpot, 1e-6, 1e12);
        } else if (!strcmp(a, "--price")) {
            FLT(price, 0, 1e6);
        } else if (!strcmp(a, "--moe-skew")) {
            FLT(moe_skew, 0, 10);
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--svg")) {
            VAL();
            o->svg = v;
        } else if (!strcmp(a, "--train")) {
            o->train = true;
        } else if (!strcmp(a, "--zero")) {
            INT(zero, 0, 3);
        } else if (!strcmp(a, "--global-batch")) {
            INT(global_batch, 1, 1 << 30);
        } else if (!strcmp(a, "--micro-batch")) {
            INT(micro_batch, 1, 1 << 20);
        } else if (!strcmp(a, "--seq-len")) {
            INT(seq_len, 1, 1 << 24);
        } else if (!strcmp(a, "--recompute")) {
            o->recompute = true;
        } else if (!strcmp(a, "--validate")) {
            VAL();
            o->validate = v;
        } else if (!strcmp(a, "--scale")) {
            o->scale = true;
        } else if (!strcmp(a, "--bench-json")) {
            VAL();
            o->bench_json = v;
        } else if (!strcmp(a, "--calibrate")) {
            VAL();
            o->calibrate = v;
        } else if (!strcmp(a, "--micro-json")) {
            VAL();
            o->micro_json = v;
        } else if (!strcmp(a, "--serve-json")) {
            VAL();
            o->serve_json = v;
        } else if (!strcmp(a, "--notes")) {
            VAL();
            o->notes = v;
        } else {
            fprintf(stderr, "tongyun sim: unknown argument '%s' (see tongyun sim --help)\n", a);
            return 2;
        }
#undef VAL
#undef INT
#undef FLT
    }
    return 0;
}

/* ==== Output ==== */

static void print_json(json_t *j) {
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    if (s) puts(s);
    free(s);
}

static void pct_row(const char *name, const struct ty_sim_pct *p) {
    printf("  %-12s %10.1f %10.1f %10.1f %10.1f\n", name, p->mean, p->p50, p->p90, p->p99);
}

static void print_text(const struct ty_sim_config *c, const struct ty_sim_layout *l, const struct opts *o,
                       const struct ty_sim_result *r) {
    printf("tongyun sim: %s on %d x %s (%d node%s), TP %d PP %d EP %d, %d replica%s of %d chip%s", c->model->name,
           c->chips, c->chip->name, l->nodes, l->nodes == 1 ? "" : "s", c->tp, c->pp, c->ep, l->n_inst,
           l->n_inst == 1 ? "" : "s", l->inst_chips, l->inst_chips == 1 ? "" : "s");
    if (l->n_prefill_inst) printf(" (%d prefill-only)", l->n_prefill_inst);
    printf("\n  %s weights (%.1f GB per chip), %s activations, %s KV: %.0f tokens of KV per %s\n",
           c->model->file_weight_bits > 0 ? "file" : ty__sim_dtype_name(c->weight), l->weight_bytes_chip / 1e9,
           ty__sim_dtype_name(c->act), ty__sim_dtype_name(c->kv), l->kv_cap_tokens,
           c->pp > 1 ? "pipeline engine" : "replica");
    printf("  scheduler: up to %d sequences, %d prompt tokens per iteration in chunks of %d\n",
           c->max_seqs * l->attn_groups, c->max_batch_tokens * l->attn_groups, c->prefill_chunk);
    if (o->trace)
        printf("workload: %lld requests from %s\n", (long long)r->n_requests, o->trace);
    else
        printf("workload: %lld requests, Poisson %.4g req/s, prompt %s, output %s tokens\n", (long long)r->n_requests,
               o->rate, o->prompt_len, o->output_len);
    printf("\n  %-12s %10s %10s %10s %10s\n", "latency ms", "mean", "p50", "p90", "p99");
    pct_row("TTFT", &r->ttft_ms);
    pct_row("TPOT", &r->tpot_ms);
    pct_row("end to end", &r->e2e_ms);
    printf("\n  throughput      %.1f output tok/s, %.1f total tok/s, %.3f req/s over %.2f s\n", r->throughput_tok_s,
           r->total_tok_s, r->request_rps, r->duration_s);
    printf("  per chip        prefill %.1f tok/s, decode %.1f tok/s\n", r->prefill_tok_s_per_chip,
           r->decode_tok_s_per_chip);
    printf("  goodput         %.3f req/s (TTFT <= %g ms and TPOT <= %g ms: %.1f%% of requests)\n", r->goodput_rps,
           c->slo_ttft_ms, c->slo_tpot_ms, r->slo_attainment * 100);
    printf("  KV utilisation  mean %.1f%%, peak %.1f%%; mean batch %.1f sequences; busy %.1f%%\n", r->kv_util * 100,
           r->kv_util_peak * 100, r->mean_batch, r->busy_frac * 100);
    printf("  cost            $%.4f per million output tokens ($%.4f per million total) at $%.2f per card-hour%s\n",
           r->cost_per_mtok, r->cost_per_mtok_total, c->price_hr,
           o->price > 0 ? "" : (c->chip->price_hr.est ? " (assumed)" : " (list price)"));
    if (r->energy_j_per_tok > 0)
        printf("  energy          %.3f J per output token (TDP %.0f W, idle %.0f%% of TDP)\n", r->energy_j_per_tok,
               c->chip->tdp_w.v, c->idle_power_frac * 100);
    else
        printf("  energy          unknown (the %s's power is not published)\n", c->chip->name);
    printf("  simulated       %lld events, %lld iterations in %.3f s\n", (long long)r->events, (long long)r->iterations,
           r->sim_seconds);
}

/* ==== Modes ==== */

static int run_train(const struct opts *o, const struct ty_sim_chip *chip, const struct ty_sim_model *m) {
    struct ty_sim_train_config tc = {.chip = chip,
                                     .model = m,
                                     .chips = (int)o->chips,
                                     .chips_per_node = (int)o->chips_per_node,
                                     .tp = o->tp ? (int)o->tp : 1,
                                     .pp = o->pp ? (int)o->pp : 1,
                                     .dp = (int)o->dp,
                                     .zero = (int)o->zero,
                                     .global_batch = (int)o->global_batch,
                                     .micro_batch = (int)o->micro_batch,
                                     .seq_len = (int)o->seq_len,
                                     .recompute = o->recompute,
                                     .inter_gbps = o->net_gbps};
    struct ty_sim_train_result r;
    enum ty_status st = ty__sim_train(&tc, &r);
    if (st != TY_OK) return ty_cli_fail("sim", st);
    if (o->json) {
        json_t *j = ty__sim_train_json(&tc, &r);
        print_json(j);
        json_decref(j);
        return 0;
    }
    printf("tongyun sim --train: %s on %d x %s, TP %d PP %d DP %d, ZeRO-%d, %d x %d-token sequences per step "
           "(%d micro-batches of %d)%s\n",
           m->name, tc.chips, chip->name, tc.tp, tc.pp, tc.chips / (tc.tp * tc.pp), tc.zero, tc.global_batch,
           tc.seq_len, r.n_micro, tc.micro_batch, tc.recompute ? ", full recomputation" : "");
    printf("  step time       %.3f s (compute %.3f, pipeline bubble %.3f, TP comm %.3f, PP comm %.3f, exposed DP "
           "comm %.3f)\n",
           r.step_s, r.t_compute, r.t_bubble, r.t_tp_comm, r.t_pp_comm, r.t_dp_comm);
    printf("  throughput      %.0f tokens/s (%.0f per chip)\n", r.tokens_per_s, r.tokens_per_s / tc.chips);
    printf("  MFU             %.1f%% (model FLOPs %.3g per token, BF16 peak %.0f TFLOPS%s)\n", r.mfu * 100,
           r.flops_per_token, chip->bf16_tflops.v, chip->bf16_tflops.est ? ", an estimate" : "");
    printf("  memory per chip %.1f GB of %.0f (weights %.1f, gradients %.1f, optimizer %.1f, activations %.1f)\n",
           r.mem_total_gb, r.mem_cap_gb, r.mem_params_gb, r.mem_grads_gb, r.mem_optim_gb, r.mem_act_gb);
    return 0;
}

static int run_sweep(const struct opts *o, const struct ty_sim_config *c, const struct ty_sim_workload *w) {
    /* Scale first: the request rate of the same requests all arriving at once. Continuous batching keeps absorbing
     * load past it by growing the batch (TPOT grows before queues do), so the sweep goes to twice that. */
    struct ty_sim_workload ws = *w;
    ws.rate = 1e9;
    ws.trace = NULL;
    struct ty_sim_result sat;
    enum ty_status st = ty__sim_run(c, &ws, &sat);
    if (st != TY_OK) return ty_cli_fail("sim", st);
    double rates[SWEEP_POINTS];
    for (int i = 0; i < SWEEP_POINTS; i++) rates[i] = sat.request_rps * (0.1 + 1.9 * i / (SWEEP_POINTS - 1));
    struct ty_sim_sweep_point pts[SWEEP_POINTS];
    st = ty__sim_sweep(c, &ws, rates, SWEEP_POINTS, pts);
    if (st == TY_OK) st = ty__sim_sweep_svg(c, pts, SWEEP_POINTS, o->svg);
    if (st != TY_OK) return ty_cli_fail("sim", st);
    if (!o->json)
        fprintf(stderr, "tongyun sim: wrote %s (%d rates from %.3g to %.3g req/s; all at once: %.3g req/s)\n", o->svg,
                SWEEP_POINTS, rates[0], rates[SWEEP_POINTS - 1], sat.request_rps);
    return 0;
}

int ty_cmd_sim(int argc, char **argv) {
    struct opts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    bool need_host =
        o.validate || o.calibrate || (o.chip && (!strcasecmp(o.chip, "host") || !strcasecmp(o.chip, "cpu")));
    struct ty_sim_catalog *cat;
    enum ty_status st = ty__sim_catalog_init(need_host, &cat);
    if (st != TY_OK) return ty_cli_fail("sim", st);
    if (o.chips_file && (st = ty__sim_catalog_load(cat, o.chips_file)) != TY_OK) goto fail;
    /* --micro-json a.json,b.json: the microbenchmark outputs the engine predictions are built from */
    struct ty_sim_engine_inputs eng = {.bench_json = o.bench_json, .serve_json = o.serve_json, .notes = o.notes};
    char micro_list[2048];
    snprintf(micro_list, sizeof micro_list, "%s", o.micro_json ? o.micro_json : "");
    for (char *save = NULL, *tok = strtok_r(micro_list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (eng.n_micro == (int)(sizeof eng.micro / sizeof eng.micro[0])) {
            fprintf(stderr, "tongyun sim: --micro-json takes at most %d files\n", eng.n_micro);
            ty__sim_catalog_free(cat);
            return 2;
        }
        eng.micro[eng.n_micro++] = tok;
    }
    if (o.validate) {
        st = ty__sim_validation_report(cat, o.validate, &eng, o.scale);
        if (st != TY_OK) goto fail;
        fprintf(stderr, "tongyun sim: wrote %s\n", o.validate);
        ty__sim_catalog_free(cat);
        return 0;
    }
    if (o.calibrate && eng.n_micro > 0) {
        /* from the engine's own microbenchmarks */
        struct ty_sim_micro *mb = ty__calloc(1, sizeof *mb);
        json_t *rows = NULL, *serve = NULL, *all = json_object();
        if (!mb) st = ty__error(TY_ERR_NO_MEMORY, "out of memory");
        for (int i = 0; i < eng.n_micro && st == TY_OK; i++) st = ty__sim_micro_add_file(mb, eng.micro[i]);
        if (st == TY_OK) st = ty__sim_calibrate_engine(mb, o.calibrate, &rows);
        if (st == TY_OK && o.serve_json) st = ty__sim_predict_serve(cat, mb, o.calibrate, o.serve_json, &serve);
        ty_free(mb);
        if (st != TY_OK) {
            json_decref(rows);
            json_decref(all);
            goto fail;
        }
        json_object_set_new(all, "bench", rows);
        if (serve) json_object_set_new(all, "serve", serve);
        print_json(all);
        json_decref(all);
        ty__sim_catalog_free(cat);
        return 0;
    }
    if (o.calibrate) {
        json_t *rows;
        if ((st = ty__sim_calibrate(ty__sim_catalog_host(cat), o.calibrate, &rows)) != TY_OK) goto fail;
        print_json(rows);
        json_decref(rows);
        ty__sim_catalog_free(cat);
        return 0;
    }
    if (!o.model || !o.chip) {
        fprintf(stderr, "tongyun sim: --model and --chip are required (see tongyun sim --help)\n");
        ty__sim_catalog_free(cat);
        return 2;
    }
    struct ty_sim_model m;
    const struct ty_sim_chip *chip;
    if ((st = ty__sim_model_resolve(o.model, &m)) != TY_OK) goto fail;
    if ((st = ty__sim_catalog_find(cat, o.chip, &chip)) != TY_OK) goto fail;
    if (o.nodes) {
        long per = o.chips_per_node ? o.chips_per_node : chip->node_chips;
        if (o.chips && o.chips != o.nodes * per) {
            fprintf(stderr, "tongyun sim: --chips %ld disagrees with --nodes %ld x %ld chips per node\n", o.chips,
                    o.nodes, per);
            ty__sim_catalog_free(cat);
            return 2;
        }
        o.chips = o.nodes * per;
    }
    if (!o.chips) o.chips = 1;
    if (o.train) {
        rc = run_train(&o, chip, &m);
        ty__sim_catalog_free(cat);
        return rc;
    }
    if ((o.trace != NULL) + (o.rate > 0) + (o.users > 0) != 1 || (o.users > 0 && o.svg)) {
        fprintf(stderr, o.users > 0 && o.svg ? "tongyun sim: --svg sweeps --rate; it does not combine with --users\n"
                                             : "tongyun sim: give one of --rate QPS, --trace FILE or --users N\n");
        ty__sim_catalog_free(cat);
        return 2;
    }
    struct ty_sim_config c = {0};
    c.chip = chip;
    c.model = &m;
    c.chips = (int)o.chips;
    c.chips_per_node = (int)o.chips_per_node;
    c.tp = (int)o.tp;
    c.pp = (int)o.pp;
    c.ep = (int)o.ep;
    c.dp = (int)o.dp;
    c.intra_link = o.intra_link;
    c.intra_gbs = o.intra_gbs;
    c.inter_gbps = o.net_gbps;
    c.inter_alpha_us = o.net_alpha_us;
    c.weight = o.weight;
    c.act = o.act_set ? o.act : (o.weight == TY_SIM_DT_FP8 || o.weight == TY_SIM_DT_INT8 ? o.weight : TY_SIM_DT_BF16);
    c.kv = o.kv;
    c.max_batch_tokens = (int)o.max_batch_tokens;
    c.prefill_chunk = (int)o.prefill_chunk;
    c.max_seqs = (int)o.max_seqs;
    c.disagg_prefill = (int)o.disagg;
    c.price_hr = o.price;
    c.slo_ttft_ms = o.slo_ttft;
    c.slo_tpot_ms = o.slo_tpot;
    c.moe_skew = o.moe_skew;
    c.front_s = o.front_ms * 1e-3;
    ty__sim_config_defaults(&c);
    struct ty_sim_layout l;
    if ((st = ty__sim_layout(&c, &l)) != TY_OK) goto fail;
    struct ty_sim_workload w = {.rate = o.rate,
                                .n_requests = o.requests,
                                .seed = (uint64_t)o.seed,
                                .users = (int)o.users,
                                .ramp_s = o.ramp_ms * 1e-3};
    struct ty_sim_trace trace = {0};
    if ((st = ty__sim_dist_parse(o.prompt_len, &w.prompt)) != TY_OK) goto fail;
    if ((st = ty__sim_dist_parse(o.output_len, &w.output)) != TY_OK) goto fail;
    if (o.trace) {
        if ((st = ty__sim_trace_load(o.trace, &trace)) != TY_OK) goto fail;
        w.trace = &trace;
        w.n_requests = trace.n;
    }
    struct ty_sim_result r;
    st = ty__sim_run(&c, &w, &r);
    if (st == TY_OK) {
        if (o.json) {
            json_t *j = ty__sim_result_json(&c, &l, &r);
            json_object_set_new(j, "model", ty__sim_model_json(&m));
            print_json(j);
            json_decref(j);
        } else {
            print_text(&c, &l, &o, &r);
        }
        if (o.svg && (rc = run_sweep(&o, &c, &w)) != 0) {
            ty__sim_trace_free(&trace);
            ty__sim_catalog_free(cat);
            return rc;
        }
    }
    ty__sim_trace_free(&trace);
    if (st != TY_OK) goto fail;
    ty__sim_catalog_free(cat);
    return 0;
fail:
    rc = ty_cli_fail("sim", st);
    ty__sim_catalog_free(cat);
    return rc;
}
