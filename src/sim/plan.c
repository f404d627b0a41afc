/*
 * plan.c - the planner behind `tongyun plan`: for a model, a target request rate and latency SLOs, it tries every
 * candidate chip with every tensor/pipeline/expert-parallel shape that fits, finds by simulation the highest rate one
 * replica serves within the SLOs (p90 TTFT and p90 TPOT), and sizes the deployment: replicas = ceil(rate / per-replica
 * rate). Results are ranked by cost per hour; the Pareto front of output throughput per chip against per-user decode
 * speed (1000 / TPOT p50) is marked.
 *
 * Each probe is a short simulation of one replica (a few hundred requests), so a search over ~16 chips and a few
 * dozen shapes each takes seconds. Shapes that cannot fit or divide (the layout's errors) are counted, not shown.
 */
#include "sim/sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define BISECT_STEPS 8

struct probe {
    bool ok;    /* the simulation ran */
    bool meets; /* p90 TTFT and p90 TPOT within the SLOs */
    struct ty_sim_result r;
};

static struct probe run_probe(const struct ty_sim_config *c, const struct ty_sim_plan_query *q, double rate) {
    struct probe p = {0};
    struct ty_sim_workload w = {.rate = rate,
                                .n_requests = q->requests > 0 ? q->requests : 300,
                                .prompt = q->prompt,
                                .output = q->output,
                                .seed = q->seed ? q->seed : 7};
    if (ty__sim_run(c, &w, &p.r) != TY_OK) return p;
    p.ok = true;
    p.meets = p.r.ttft_ms.p90 <= q->slo_ttft_ms && p.r.tpot_ms.p90 <= q->slo_tpot_ms;
    return p;
}

/* The highest rate one replica sustains within the SLOs, or 0 when even a lone request misses them. */
static double max_rate(const struct ty_sim_config *c, const struct ty_sim_plan_query *q, struct probe *best) {
    /* Saturation throughput: everything arrives at once. */
    struct probe sat = run_probe(c, q, 1e9);
    if (!sat.ok || !(sat.r.request_rps > 0)) return 0;
    double hi = sat.r.request_rps * 1.05, lo = hi / 256;
    struct probe p = run_probe(c, q, lo);
    if (!p.ok || !p.meets) return 0;
    *best = p;
    for (int i = 0; i < BISECT_STEPS; i++) {
        double mid = sqrt(lo * hi); /* geometric: the answer can sit anywhere in two decades */
        if (i >= 4) mid = (lo + hi) / 2;
        p = run_probe(c, q, mid);
        if (p.ok && p.meets) {
            lo = mid;
            *best = p;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static bool fits(const struct ty_sim_config *c) {
    struct ty_sim_layout l;
    return ty__sim_layout(c, &l) == TY_OK;
}

static int cmp_entry(const void *a, const void *b) {
    const struct ty_sim_plan_entry *x = a, *y = b;
    if (x->cost_hr != y->cost_hr) return x->cost_hr < y->cost_hr ? -1 : 1;
    if (x->chips != y->chips) return x->chips < y->chips ? -1 : 1;
    return x->tok_s_per_chip > y->tok_s_per_chip ? -1 : x->tok_s_per_chip < y->tok_s_per_chip;
}

static enum ty_status push(struct ty_sim_plan *pl, int *cap, const struct ty_sim_plan_entry *e) {
    if (pl->n == *cap) {
        int ncap = *cap ? *cap * 2 : 32;
        struct ty_sim_plan_entry *n = ty__realloc(pl->e, (size_t)ncap * sizeof *n);
        if (!n) return ty__error(TY_ERR_NO_MEMORY, "planner: out of memory");
        pl->e = n;
        *cap = ncap;
    }
    pl->e[pl->n++] = *e;
    return TY_OK;
}

enum ty_status ty__sim_plan_search(const struct ty_sim_plan_query *q, struct ty_sim_plan *out) {
    memset(out, 0, sizeof *out);
    if (!q->model || q->n_chips < 1) return ty__error(TY_ERR_INVALID_ARG, "the planner needs a model and chips to try");
    if (!(q->rate > 0)) return ty__error(TY_ERR_INVALID_ARG, "--rate must be a positive number of requests per second");
    if (!(q->slo_ttft_ms > 0) || !(q->slo_tpot_ms > 0))
        return ty__error(TY_ERR_INVALID_ARG, "--ttft-ms and --tpot-ms must be positive");
    TY_TRY(ty__sim_model_validate(q->model));
    int max_chips = q->max_chips > 0 ? q->max_chips : 10000;
    const struct ty_sim_model *m = q->model;
    static const int tps[] = {1, 2, 4, 8, 16};
    static const int pps[] = {1, 2, 4, 8};
    static const int eps_mult[] = {1, 2, 4, 8, 16, 32, 64};
    int cap = 0;
    enum ty_status st = TY_OK;
    for (int ci = 0; ci < q->n_chips && st == TY_OK; ci++) {
        const struct ty_sim_chip *chip = q->chips[ci];
        int node = chip->node_chips > 0 ? chip->node_chips : 8;
        for (size_t ti = 0; ti < sizeof tps / sizeof *tps && st == TY_OK; ti++) {
            int tp = tps[ti];
            if (tp > node || m->n_head % tp) continue;
            /* EP 1, then EP as a multiple of TP (attention data-parallel groups) for MoE models. */
            int eps[8], n_eps = 0;
            eps[n_eps++] = 1;
            if (m->n_expert > 0)
                for (size_t k = 0; k < sizeof eps_mult / sizeof *eps_mult; k++) {
                    int ep = tp * eps_mult[k];
                    if (ep > 1 && ep <= m->n_expert && m->n_expert % ep == 0 && ep <= node * 8 && n_eps < 8)
                        eps[n_eps++] = ep;
                }
            for (int ei = 0; ei < n_eps && st == TY_OK; ei++) {
                int ep = eps[ei];
                if (ep == tp && tp > 1 && ei > 0) continue; /* EP = TP is the same shape as EP 1 with TP experts */
                for (size_t pi = 0; pi < sizeof pps / sizeof *pps && st == TY_OK; pi++) {
                    int pp = pps[pi];
                    struct ty_sim_config c = {0};
                    c.chip = chip;
                    c.model = m;
                    c.tp = tp;
                    c.pp = pp;
                    c.ep = ep;
                    c.weight = q->weight;
                    c.act = q->weight == TY_SIM_DT_FP8 || q->weight == TY_SIM_DT_INT8 ? q->weight : TY_SIM_DT_BF16;
                    c.kv = TY_SIM_DT_BF16;
                    c.slo_ttft_ms = q->slo_ttft_ms;
                    c.slo_tpot_ms = q->slo_tpot_ms;
                    c.moe_skew = -1;
                    c.chips = (tp > ep ? tp : ep) * pp;
                    ty__sim_config_defaults(&c);
                    if (c.chips > max_chips) continue;
                    out->n_tried++;
                    if (!fits(&c)) {
                        out->n_rejected++;
                        continue;
                    }
                    struct probe best = {0};
                    double r = max_rate(&c, q, &best);
                    if (!(r > 0)) {
                        out->n_rejected++;
                        continue;
                    }
                    struct ty_sim_plan_entry e = {0};
                    e.chip = chip;
                    e.tp = tp;
                    e.pp = pp;
                    e.ep = ep;
                    e.weight = q->weight;
                    e.inst_chips = c.chips;
                    e.rate_per_inst = r;
                    e.n_inst = (int)ceil(q->rate / r - 1e-9);
                    if (e.n_inst < 1) e.n_inst = 1;
                    e.chips = e.n_inst * e.inst_chips;
                    if (e.chips > max_chips) continue;
                    e.cost_hr = e.chips * c.price_hr;
                    e.tok_s_per_chip = best.r.throughput_tok_s / e.inst_chips;
                    e.user_tok_s = best.r.tpot_ms.p50 > 0 ? 1000 / best.r.tpot_ms.p50 : 0;
                    e.ttft_p99_ms = best.r.ttft_ms.p99;
                    e.tpot_p99_ms = best.r.tpot_ms.p99;
                    st = push(out, &cap, &e);
                    break; /* a deeper pipeline than the first that fits only adds latency */
                }
            }
        }
    }
    if (st != TY_OK) {
        ty__sim_plan_free(out);
        return st;
    }
    if (out->n > 1) qsort(out->e, (size_t)out->n, sizeof *out->e, cmp_entry);
    for (int i = 0; i < out->n; i++) {
        bool dominated = false;
        for (int j = 0; j < out->n && !dominated; j++) {
            if (i == j) continue;
            const struct ty_sim_plan_entry *a = &out->e[i], *b = &out->e[j];
            dominated = b->tok_s_per_chip >= a->tok_s_per_chip && b->user_tok_s >= a->user_tok_s &&
                        (b->tok_s_per_chip > a->tok_s_per_chip || b->user_tok_s > a->user_tok_s);
        }
        out->e[i].pareto = !dominated;
    }
    return TY_OK;
}

void ty__sim_plan_free(struct ty_sim_plan *p) {
    if (!p) return;
    ty_free(p->e);
    p->e = NULL;
    p->n = 0;
}
