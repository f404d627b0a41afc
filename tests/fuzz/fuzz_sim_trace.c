/*
 * fuzz_sim_trace.c - libFuzzer target for workload traces (`tongyun sim --trace`). Any bytes go to the trace parser;
 * what it accepts must hold its promises (at least one request, sorted arrivals, every field in range), and then runs
 * through a small simulation (the first 64 requests, when short enough to be quick), which must finish every request
 * with sane latencies. Seeds and regressions live in tests/fuzz/corpus/sim_trace/.
 */
#include "sim/sim.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_SIM_REQUESTS 64
#define MAX_SIM_TOKENS   65536

static struct ty_sim_catalog *cat;
static struct ty_sim_model model;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!cat) {
        TY_ASSERT(ty__sim_catalog_init(false, &cat) == TY_OK);
        TY_ASSERT(ty__sim_model_resolve("qwen3-0.6b", &model) == TY_OK);
    }
    struct ty_sim_trace t;
    if (ty__sim_trace_parse((const char *)data, size, "fuzz", &t) != TY_OK) {
        TY_ASSERT(ty_last_error()[0] != 0);
        return 0;
    }
    TY_ASSERT(t.n >= 1 && t.reqs != NULL);
    bool small = true;
    for (int64_t i = 0; i < t.n; i++) {
        const struct ty_sim_req_spec *r = &t.reqs[i];
        TY_ASSERT(isfinite(r->arrival) && r->arrival >= 0);
        TY_ASSERT(r->prompt >= 1 && r->output >= 1);
        if (i) TY_ASSERT(r->arrival >= t.reqs[i - 1].arrival);
        if (i < MAX_SIM_REQUESTS && (int64_t)r->prompt + r->output > MAX_SIM_TOKENS) small = false;
    }
    if (small) {
        struct ty_sim_config c = {0};
        TY_ASSERT(ty__sim_catalog_find(cat, "a100", &c.chip) == TY_OK);
        c.model = &model;
        c.chips = 2;
        c.weight = c.act = c.kv = TY_SIM_DT_BF16;
        c.moe_skew = -1;
        ty__sim_config_defaults(&c);
        struct ty_sim_workload w = {.trace = &t, .n_requests = t.n < MAX_SIM_REQUESTS ? t.n : MAX_SIM_REQUESTS};
        struct ty_sim_result r;
        TY_ASSERT(ty__sim_run(&c, &w, &r) == TY_OK);
        TY_ASSERT(r.n_requests == w.n_requests);
        TY_ASSERT(r.ttft_ms.p50 >= 0 && r.e2e_ms.p99 >= r.ttft_ms.p50 - 1e-9 && isfinite(r.e2e_ms.p99));
        TY_ASSERT(r.kv_util >= 0 && r.kv_util_peak <= 1.0 + 1e-9);
    }
    ty__sim_trace_free(&t);
    return 0;
}
