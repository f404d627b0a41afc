/*
 * bench_sim.c - the simulator at scale: 10,000 chips serving 1,000,000 requests (the scenario of
 * ty__sim_scale_scenario: Qwen3-8B FP8 on 10,000 H20, TP 1, Poisson arrivals at 30,000 req/s, lognormal prompts and
 * outputs), simulated once and timed. The event core is single-threaded; the figure to compare across builds is the
 * wall time and the events per second in the same run.
 *
 *   bench_sim [--chips N] [--requests N] [--rate QPS] [--step-by-step] [--json]
 */
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_seconds(void) {
    struct timespec ts;
    return clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0 ? (double)ts.tv_sec + ts.tv_nsec * 1e-9 : 0;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_sim [--chips N] [--requests N] [--rate QPS] [--step-by-step] [--json]\n");
}

int main(int argc, char **argv) {
    long chips = 0, requests = 0;
    double rate = 0;
    bool as_json = false, step = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--chips") && i + 1 < argc) {
            chips = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--requests") && i + 1 < argc) {
            requests = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--rate") && i + 1 < argc) {
            rate = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--step-by-step")) {
            step = true;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = true;
        } else {
            usage();
            return 2;
        }
    }
    struct ty_sim_catalog *cat;
    if (ty__sim_catalog_init(false, &cat) != TY_OK) {
        fprintf(stderr, "bench_sim: %s\n", ty_last_error());
        return 1;
    }
    struct ty_sim_model m;
    struct ty_sim_config c;
    struct ty_sim_workload w;
    struct ty_sim_result r;
    enum ty_status st = ty__sim_scale_scenario(cat, &m, &c, &w);
    if (chips > 0) c.chips = (int)chips;
    if (requests > 0) w.n_requests = requests;
    if (rate > 0) w.rate = rate;
    c.step_by_step = step;
    double t0 = ty__time_s(), cpu0 = cpu_seconds();
    if (st == TY_OK) st = ty__sim_run(&c, &w, &r);
    double dt = ty__time_s() - t0, cpu = cpu_seconds() - cpu0;
    if (st != TY_OK) {
        fprintf(stderr, "bench_sim: %s\n", ty_last_error());
        ty__sim_catalog_free(cat);
        return 1;
    }
    if (as_json) {
        printf("{\"chips\": %d, \"requests\": %lld, \"rate\": %g, \"wall_s\": %.3f, \"events\": %lld, "
               "\"iterations\": %lld, \"events_per_s\": %.0f, \"cpu_s\": %.3f, \"sim_duration_s\": %.3f}\n",
               c.chips, (long long)r.n_requests, w.rate, dt, (long long)r.events, (long long)r.iterations,
               r.events / dt, cpu, r.duration_s);
    } else {
        printf("bench_sim: %s on %d x %s (TP %d), %lld requests at %g req/s%s\n", m.name, c.chips, c.chip->name, c.tp,
               (long long)r.n_requests, w.rate, step ? " (step by step)" : "");
        printf("  wall time        %.2f s, CPU time %.2f s (%lld events, %.2f M events/s; %lld engine iterations)\n",
               dt, cpu, (long long)r.events, r.events / dt / 1e6, (long long)r.iterations);
        printf("  simulated        %.1f s: %.0f output tok/s, TTFT p50 %.0f / p99 %.0f ms, TPOT p50 %.1f / p99 %.1f "
               "ms, busy %.0f%%\n",
               r.duration_s, r.throughput_tok_s, r.ttft_ms.p50, r.ttft_ms.p99, r.tpot_ms.p50, r.tpot_ms.p99,
               r.busy_frac * 100);
    }
    ty__sim_catalog_free(cat);
    return 0;
}
