/*
 * test_sim.c - the simulator layer: the device catalogue (every figure sourced, estimates flagged, chips from a file),
 * model presets and GGUF metadata, the roofline performance model against hand-worked figures, the discrete-event
 * core (a lone request against the closed form, macro steps against step-by-step, disaggregation, capacity limits),
 * the published points it must reproduce within 20%, impossible configurations and malformed traces, the planner,
 * training mode, the calibration path and the report. Every simulation here is small: the file runs in seconds, also
 * under ASan.
 */
#include "harness.h"

#include "model/gguf.h"
#include "sim/sim.h"

#include <stdlib.h>

static struct ty_sim_catalog *cat;

static const struct ty_sim_chip *chip(const char *name) {
    const struct ty_sim_chip *c = NULL;
    CHECK_OK(ty__sim_catalog_find(cat, name, &c));
    return c;
}

static struct ty_sim_model model(const char *name) {
    struct ty_sim_model m;
    memset(&m, 0, sizeof m);
    CHECK_OK(ty__sim_model_resolve(name, &m));
    return m;
}

static struct ty_sim_config config(const char *chip_name, const struct ty_sim_model *m, int chips, int tp, int ep) {
    struct ty_sim_config c;
    memset(&c, 0, sizeof c);
    c.chip = chip(chip_name);
    c.model = m;
    c.chips = chips;
    c.tp = tp;
    c.ep = ep;
    c.weight = TY_SIM_DT_BF16;
    c.act = TY_SIM_DT_BF16;
    c.kv = TY_SIM_DT_BF16;
    c.moe_skew = -1;
    ty__sim_config_defaults(&c);
    return c;
}

static bool contains(const char *hay, const char *needle) {
    return hay && strstr(hay, needle) != NULL;
}

/* ==== Catalogue ==== */

static void test_catalogue_has_every_chip_with_sources(void) {
    static const char *const want[] = {"ppu-810e",    "h20",         "a800-sxm", "a800-pcie", "a100",    "h100",
                                       "h200",        "b200",        "tpu-v5e",  "tpu-v5p",   "tpu-v6e", "tpu7x",
                                       "ascend-910b", "ascend-910c", "mi300x",   "host"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) chip(want[i]);
    for (int i = 0; i < ty__sim_catalog_count(cat); i++) {
        const struct ty_sim_chip *c = ty__sim_catalog_at(cat, i);
        json_t *j = ty__sim_chip_json(c);
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v) {
            if (!json_is_object(v)) continue;
            const char *src = json_string_value(json_object_get(v, "source"));
            CHECK_MSG(src && strlen(src) > 3, "%s.%s has no source", c->name, key);
        }
        json_decref(j);
    }
    /* The 810E's compute and bandwidth are not public: estimates, explained. */
    const struct ty_sim_chip *ppu = chip("ppu-810e");
    CHECK(ppu->mem_gb.v == 96 && !ppu->mem_gb.est);
    CHECK(ppu->link_gbs.v == 700 && contains(ppu->link_name, "ICN"));
    CHECK(ppu->bf16_tflops.est && contains(ppu->bf16_tflops.src, "1,945"));
    CHECK(ppu->mem_bw_gbs.est && contains(ppu->mem_bw_gbs.src, "HBM2e"));
    CHECK(ppu->tdp_w.v == 400);
    /* Published figures are not estimates. */
    const struct ty_sim_chip *h20 = chip("h20");
    CHECK(h20->mem_bw_gbs.v == 4000 && !h20->mem_bw_gbs.est);
    CHECK(h20->bf16_tflops.v == 148 && h20->fp8_tflops.v == 296);
    CHECK(contains(h20->mfu.src, "InferSim"));
    CHECK(chip("h100")->bf16_tflops.v == 989 && chip("mi300x")->mem_gb.v == 192);
    /* Aliases. */
    const struct ty_sim_chip *a;
    CHECK_OK(ty__sim_catalog_find(cat, "810E", &a));
    CHECK(a == ppu);
}

static void test_unknown_chip_lists_known_ones(void) {
    const struct ty_sim_chip *c;
    CHECK_STATUS(ty__sim_catalog_find(cat, "h300", &c), TY_ERR_NOT_FOUND);
    CHECK(contains(ty_last_error(), "unknown chip 'h300'"));
    CHECK(contains(ty_last_error(), "h20") && contains(ty_last_error(), "ppu-810e") &&
          contains(ty_last_error(), "tpu7x"));
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_chips_from_file(void) {
    struct ty_sim_catalog *c2;
    CHECK_OK(ty__sim_catalog_init(false, &c2));
    int before = ty__sim_catalog_count(c2);
    CHECK_OK(ty__sim_catalog_load(c2, ty_test_src("data/devices/example-chips.json")));
    CHECK(ty__sim_catalog_count(c2) == before + 1);
    const struct ty_sim_chip *e;
    CHECK_OK(ty__sim_catalog_find(c2, "example-npu", &e));
    if (e) {
        CHECK(e->mem_gb.v == 64 && e->mfu.v == 0.55);
        CHECK(contains(e->mem_gb.src, "vendor datasheet"));
        CHECK(e->int8_tops.est && !e->bf16_tflops.est);
        CHECK(contains(e->link_gbs.src, "example-chips.json")); /* a plain number: the file is its source */
        CHECK(contains(e->attn_mbu.src, "default"));            /* left out: labelled as a default */
    }
    /* A chip from a file can be simulated. */
    struct ty_sim_model m = model("qwen3-8b");
    struct ty_sim_config c = config("h20", &m, 1, 1, 1);
    c.chip = e;
    ty__sim_config_defaults(&c);
    struct ty_sim_workload w = {.rate = 2,
                                .n_requests = 20,
                                .prompt = {TY_SIM_DIST_FIXED, 256, 0},
                                .output = {TY_SIM_DIST_FIXED, 32, 0},
                                .seed = 3};
    struct ty_sim_result r;
    CHECK_OK(ty__sim_run(&c, &w, &r));
    /* Bad files: errors name the file, the chip and the field. */
    const char *bad = ty_test_tmp("bad-chips.json");
    write_text(bad, "{\"chips\": [{\"name\": \"x1\", \"mem_gb\": 10, \"mem_bw_gbs\": 100}]}");
    CHECK_STATUS(ty__sim_catalog_load(c2, bad), TY_ERR_FORMAT);
    CHECK(contains(ty_last_error(), "x1") && contains(ty_last_error(), "bf16_tflops"));
    write_text(bad, "{\"chips\": [{\"name\": \"x2\", \"mem_gb\": 10, \"mem_bw_gbs\": 100, \"bf16_tflops\": 5, "
                    "\"mfu\": 1.5}]}");
    CHECK_STATUS(ty__sim_catalog_load(c2, bad), TY_ERR_FORMAT);
    CHECK(contains(ty_last_error(), "mfu"));
    write_text(bad, "{\"chips\": [{\"name\": \"x3\", \"mem_gb\": \"lots\", \"mem_bw_gbs\": 1, \"bf16_tflops\": 5}]}");
    CHECK_STATUS(ty__sim_catalog_load(c2, bad), TY_ERR_FORMAT);
    CHECK(contains(ty_last_error(), "mem_gb"));
    write_text(bad, "[1, 2");
    CHECK_STATUS(ty__sim_catalog_load(c2, bad), TY_ERR_FORMAT);
    CHECK(ty__sim_catalog_count(c2) == before + 1);
    ty__sim_catalog_free(c2);
}

static void test_host_microbenchmarks(void) {
    struct ty_sim_host_bench hb;
    CHECK_OK(ty__sim_host_measure(0.2, &hb));
    CHECK(hb.n_threads >= 1);
    CHECK(hb.read_bw_gbs > 0.1 && hb.read_bw_gbs < 10000);
    CHECK(hb.read_bw_gbs >= hb.read_bw_1t_gbs);
    CHECK(hb.fma_gflops > 0.1 && hb.fma_gflops >= hb.fma_gflops_1t);
    CHECK(hb.isa != NULL && hb.int8_gops >= 0);
    CHECK(hb.mem_gb > 0.1);
}

/* ==== Models ==== */

static void test_preset_sizes(void) {
    static const struct {
        const char *name;
        double total, active; /* billions, from the model cards */
    } want[] = {
        {"qwen2.5-7b", 7.62, 7.62},     {"qwen2.5-72b", 72.7, 72.7},     {"qwen3-0.6b", 0.6, 0.6},
        {"qwen3-8b", 8.19, 8.19},       {"qwen3-32b", 32.8, 32.8},       {"qwen3-30b-a3b", 30.5, 3.3},
        {"qwen3-235b-a22b", 235, 22},   {"qwen3-next-80b-a3b", 80, 3.9}, {"qwen3.5-35b-a3b", 35, 3.5},
        {"qwen3.5-397b-a17b", 397, 17}, {"deepseek-r1", 671, 37},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        struct ty_sim_model m = model(want[i].name);
        struct ty_sim_model_stats s;
        ty__sim_model_stats(&m, &s);
        CHECK_MSG(fabs(s.params_total / 1e9 / want[i].total - 1) < 0.05, "%s: %.2fB total, want %.2fB", want[i].name,
                  s.params_total / 1e9, want[i].total);
        CHECK_MSG(fabs(s.params_active / 1e9 / want[i].active - 1) < 0.08, "%s: %.2fB active, want %.2fB", want[i].name,
                  s.params_active / 1e9, want[i].active);
        CHECK(strlen(m.source) > 10);
    }
    struct ty_sim_model mx = model("qwen3-max-1t");
    struct ty_sim_model_stats s;
    ty__sim_model_stats(&mx, &s);
    CHECK(s.params_total > 1e12 && contains(mx.source, "assumed"));
    /* Hybrid: 3 of 4 layers are linear attention with a fixed state; MLA caches a compressed latent. */
    struct ty_sim_model next = model("qwen3-next-80b-a3b");
    ty__sim_model_stats(&next, &s);
    CHECK(s.n_full == 12 && s.n_lin == 36 && s.lin_state_elems > 32 * 128 * 128 - 1);
    CHECK(s.kv_elems_token == 2 * (256 + 256));
    struct ty_sim_model ds = model("deepseek-r1");
    ty__sim_model_stats(&ds, &s);
    CHECK(s.kv_elems_token == 512 + 64 && s.n_dense == 3 && s.n_moe == 58);
    struct ty_sim_model bad;
    CHECK_STATUS(ty__sim_model_resolve("qwen9-1b", &bad), TY_ERR_NOT_FOUND);
    CHECK(contains(ty_last_error(), "qwen3-8b"));
}

static void write_gguf(const char *path, const char *arch, bool hybrid) {
    struct ty_gguf_writer *w;
    char k[96];
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_set_str(w, "general.architecture", arch));
#define SETU(key, v)                                                                                                   \
    do {                                                                                                               \
        snprintf(k, sizeof k, "%s.%s", arch, key);                                                                     \
        CHECK_OK(ty__gguf_writer_set_u32(w, k, v));                                                                    \
    } while (0)
    SETU("block_count", 8);
    SETU("embedding_length", 64);
    SETU("attention.head_count", 8);
    SETU("attention.head_count_kv", 2);
    SETU("attention.key_length", 16);
    SETU("attention.value_length", 16);
    SETU("context_length", 4096);
    SETU("feed_forward_length", 128);
    SETU("expert_count", 16);
    SETU("expert_used_count", 4);
    SETU("expert_feed_forward_length", 32);
    if (hybrid) {
        SETU("expert_shared_feed_forward_length", 32);
        SETU("full_attention_interval", 4);
        SETU("ssm.conv_kernel", 4);
        SETU("ssm.state_size", 16);
        SETU("ssm.group_count", 4);
        SETU("ssm.time_step_rank", 8);
        SETU("ssm.inner_size", 8 * 16);
    }
#undef SETU
    int64_t ne_emb[2] = {64, 100}, ne_out[2] = {64, 100};
    CHECK_OK(ty__gguf_writer_add_tensor(w, "token_embd.weight", TY_TYPE_F16, 2, ne_emb));
    CHECK_OK(ty__gguf_writer_add_tensor(w, "output.weight", TY_TYPE_F32, 2, ne_out));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    static uint8_t zeros[64 * 100 * 4];
    CHECK_OK(ty__gguf_writer_write_tensor(w, zeros, 64 * 100 * 2));
    CHECK_OK(ty__gguf_writer_write_tensor(w, zeros, 64 * 100 * 4));
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);
}

static void test_model_from_gguf(void) {
    const char *path = ty_test_tmp("tiny-moe.gguf");
    write_gguf(path, "qwen3moe", false);
    struct ty_sim_model m;
    CHECK_OK(ty__sim_model_resolve(path, &m));
    CHECK(!strcmp(m.arch, "qwen3moe"));
    CHECK(m.n_layer == 8 && m.n_embd == 64 && m.n_head == 8 && m.n_head_kv == 2 && m.head_dim == 16);
    CHECK(m.n_expert == 16 && m.n_expert_used == 4 && m.n_ff_exp == 32);
    CHECK(m.n_vocab == 100 && !m.tied);
    CHECK_NEAR(m.file_weight_bits, 24, 1e-9); /* an F16 and an F32 matrix of the same size */
    const char *hy = ty_test_tmp("tiny-next.gguf");
    write_gguf(hy, "qwen3next", true);
    CHECK_OK(ty__sim_model_resolve(hy, &m));
    CHECK(m.full_attn_interval == 4 && m.lin_k_heads == 4 && m.lin_v_heads == 8 && m.lin_k_dim == 16 &&
          m.lin_v_dim == 16 && m.lin_conv == 4 && m.n_ff_shexp == 32 && m.attn_gate);
    struct ty_sim_model_stats s;
    ty__sim_model_stats(&m, &s);
    CHECK(s.n_full == 2 && s.n_lin == 6);
    /* A hybrid file without its linear-attention keys names the missing key. */
    const char *broken = ty_test_tmp("broken-next.gguf");
    write_gguf(broken, "qwen3next", false);
    CHECK_STATUS(ty__sim_model_resolve(broken, &m), TY_ERR_FORMAT);
    CHECK(contains(ty_last_error(), "qwen3next.ssm."));
}

/* ==== Performance model ==== */

static void test_roofline_by_hand(void) {
    /* One Qwen3-8B BF16 sequence decoding on an H100: every GEMM is weight-bound, so the step is the weights over
     * bandwidth x MBU, plus the KV, the fixed costs and the output head. Worked independently here. */
    struct ty_sim_model m = model("qwen3-8b");
    struct ty_sim_config c = config("h100", &m, 1, 1, 1);
    struct ty_sim_layout l;
    CHECK_OK(ty__sim_layout(&c, &l));
    struct ty_sim_perf *p;
    CHECK_OK(ty__sim_perf_init(&c, &l, &p));
    const struct ty_sim_chip *h = c.chip;
    double bw = h->mem_bw_gbs.v * 1e9;
    double layer_params = 4096.0 * 4096 * 2 + 4096.0 * 1024 * 2 + 3 * 4096.0 * 12288; /* q,o + k,v + ffn */
    double ctx = 1000;
    double kv = ctx * 36 * 8 * 256 * 2; /* tokens x layers x kv heads x (k+v dims) x bytes */
    double expect = 36 * layer_params * 2 / (bw * h->mbu.v) + kv / (bw * h->attn_mbu.v) +
                    4096.0 * 151936 * 2 / (bw * h->mbu.v) + 36 * h->layer_us.v * 1e-6 + h->step_ms.v * 1e-3;
    struct ty_sim_batch b = {.n_dec = 1, .dec_ctx = ctx, .n_logits = 1};
    struct ty_sim_breakdown bd;
    double t = ty__sim_step_time(p, &b, &bd);
    CHECK_NEAR(t, expect, expect * 1e-9);
    CHECK_NEAR(bd.total, t, 1e-15);
    /* Decode is exactly affine in the context. */
    double c0, c1;
    ty__sim_decode_affine(p, 1, &c0, &c1);
    CHECK_NEAR(c0 + c1 * ctx, t, t * 1e-9);
    /* Tile padding: 100 rows cost what 128 do once compute-bound (a prefill of 100 vs 128 tokens' GEMMs). */
    struct ty_sim_batch b100 = {.n_dec = 1000}, b128 = {.n_dec = 1024};
    CHECK_NEAR(ty__sim_step_time(p, &b100, &bd), ty__sim_step_time(p, &b128, NULL), 1e-12);
    /* Prefill of 4096 tokens is compute-bound: the GEMM part is 2 x params x rows / (peak x MFU). */
    struct ty_sim_batch pf = {.n_pf_tok = 4096, .pf_attn_work = 4096.0 * 4097 / 2, .n_pf_seq = 1, .n_logits = 1};
    ty__sim_step_time(p, &pf, &bd);
    CHECK_NEAR(bd.gemm, 36 * 2 * 4096 * layer_params / (h->bf16_tflops.v * 1e12 * h->mfu.v), 1e-9);
    CHECK_NEAR(bd.attn_pf, 36 * 2.0 * 256 * 32 * (4096.0 * 4097 / 2) / (h->bf16_tflops.v * 1e12 * h->attn_mfu.v), 1e-9);
    ty__sim_perf_free(p);
    /* TP 2 halves the weights a chip streams and adds all-reduces. */
    struct ty_sim_config c2 = config("h100", &m, 2, 2, 1);
    CHECK_OK(ty__sim_layout(&c2, &l));
    CHECK_OK(ty__sim_perf_init(&c2, &l, &p));
    double t2 = ty__sim_step_time(p, &b, &bd);
    CHECK(t2 < t && bd.comm > 0);
    ty__sim_perf_free(p);
}

static void test_hybrid_and_moe_costs(void) {
    /* Qwen3-Next: the context only costs in its 12 full-attention layers; its linear layers cost per sequence. */
    struct ty_sim_model next = model("qwen3-next-80b-a3b");
    struct ty_sim_config c = config("h200", &next, 1, 1, 1);
    c.weight = c.act = TY_SIM_DT_FP8; /* 80B parameters: one H200 holds them in FP8 */
    struct ty_sim_layout l;
    CHECK_OK(ty__sim_layout(&c, &l));
    CHECK(l.state_bytes_seq > 0);
    CHECK_NEAR(l.kv_bytes_token, 12.0 * 2 * 512 * 2, 1e-9);
    struct ty_sim_perf *p;
    CHECK_OK(ty__sim_perf_init(&c, &l, &p));
    double c0, c1;
    ty__sim_decode_affine(p, 8, &c0, &c1);
    CHECK_NEAR(c1, 12.0 * 2 * 512 * 2 / (4800e9 * c.chip->attn_mbu.v), 1e-18);
    struct ty_sim_batch b = {.n_dec = 8, .dec_ctx = 8 * 1000.0, .n_logits = 8};
    struct ty_sim_breakdown bd;
    ty__sim_step_time(p, &b, &bd);
    CHECK(bd.lin_attn > 0 && bd.moe > 0);
    ty__sim_perf_free(p);
    /* MoE: with EP, the busiest rank carries more than the mean; skew makes it worse. */
    struct ty_sim_model moe = model("qwen3-30b-a3b");
    double times[2];
    for (int i = 0; i < 2; i++) {
        struct ty_sim_config ce = config("h20", &moe, 8, 1, 8);
        ce.moe_skew = i == 0 ? 0.0 : 1.0;
        CHECK_OK(ty__sim_layout(&ce, &l));
        CHECK_OK(ty__sim_perf_init(&ce, &l, &p));
        struct ty_sim_batch pf = {.n_pf_tok = 8 * 4096, .pf_attn_work = 8 * 4096.0 * 4097 / 2, .n_pf_seq = 8};
        ty__sim_step_time(p, &pf, &bd);
        times[i] = bd.moe;
        ty__sim_perf_free(p);
    }
    CHECK(times[1] > times[0] * 1.05);
}

/* ==== Discrete-event simulation ==== */

static void test_lone_request_matches_closed_form(void) {
    struct ty_sim_model m = model("qwen3-8b");
    struct ty_sim_config c = config("h20", &m, 1, 1, 1);
    struct ty_sim_layout l;
    CHECK_OK(ty__sim_layout(&c, &l));
    struct ty_sim_perf *p;
    CHECK_OK(ty__sim_perf_init(&c, &l, &p));
    int prompt = 3000, out = 50; /* 3000 < 8192: one prefill iteration */
    struct ty_sim_batch pf = {
        .n_pf_tok = prompt, .pf_attn_work = prompt * (prompt + 1) / 2.0, .n_pf_seq = 1, .n_logits = 1};
    double ttft = ty__sim_step_time(p, &pf, NULL);
    double c0, c1, dec = 0;
    ty__sim_decode_affine(p, 1, &c0, &c1);
    for (int g = 1; g < out; g++) dec += c0 + c1 * (prompt + g);
    ty__sim_perf_free(p);
    struct ty_sim_workload w = {.rate = 0.001,
                                .n_requests = 1,
                                .prompt = {TY_SIM_DIST_FIXED, prompt, 0},
                                .output = {TY_SIM_DIST_FIXED, out, 0},
                                .seed = 5};
    struct ty_sim_result r;
    CHECK_OK(ty__sim_run(&c, &w, &r));
    CHECK_NEAR(r.ttft_ms.p50, ttft * 1e3, 1e-6);
    CHECK_NEAR(r.tpot_ms.p50, dec / (out - 1) * 1e3, 1e-6);
    CHECK_NEAR(r.e2e_ms.p50, (ttft + dec) * 1e3, 1e-6);
    CHECK(r.out_tokens == out && r.in_tokens == prompt);
    CHECK(r.events < 10); /* 49 decode iterations in one event */
    /* A long prompt is chunked: 20000 tokens take three iterations of at most 8192. */
    w.prompt.a = 20000;
    CHECK_OK(ty__sim_run(&c, &w, &r));
    CHECK(r.iterations == 3 + (out - 1));
    /* Our server's CPU defaults: chunks of 64 on absolute boundaries, 256 prompt tokens per iteration. */
    c.prefill_chunk = 64;
    c.max_batch_tokens = 256;
    w.prompt.a = 300;
    w.output.a = 2;
    CHECK_OK(ty__sim_run(&c, &w, &r));
    CHECK(r.iterations == 5 + 1); /* 64, 128, 192, 256, 300, then one decode */
    /* Five 300-token prompts at once: the first four take a 64-token chunk each per iteration (the 256 budget),
     * finish in the fifth, where the fifth prompt starts with the 80 tokens left; it then takes four more iterations
     * while the others decode once. 10 iterations carrying 30 sequences in all. */
    struct ty_sim_req_spec five[5] = {{0, 300, 2}, {0, 300, 2}, {0, 300, 2}, {0, 300, 2}, {0, 300, 2}};
    struct ty_sim_trace t = {five, 5};
    struct ty_sim_workload wt = {.trace = &t};
    CHECK_OK(ty__sim_run(&c, &wt, &r));
    CHECK_MSG(r.iterations == 10 && r.mean_batch == 3, "%lld iterations, mean batch %g", (long long)r.iterations,
              r.mean_batch);
    /* The CPU defaults are the server's. */
    struct ty_sim_config cpu = {0};
    struct ty_sim_chip host = *chip("host");
    cpu.chip = &host;
    ty__sim_config_defaults(&cpu);
    CHECK(cpu.max_seqs == 8 && cpu.prefill_chunk == 64 && cpu.max_batch_tokens == 256);
}

static void expect_same(const struct ty_sim_result *a, const struct ty_sim_result *b) {
    const double *x[] = {&a->ttft_ms.p50, &a->ttft_ms.p99,      &a->tpot_ms.p50, &a->tpot_ms.p99,
                         &a->e2e_ms.mean, &a->throughput_tok_s, &a->kv_util,     &a->busy_frac};
    const double *y[] = {&b->ttft_ms.p50, &b->ttft_ms.p99,      &b->tpot_ms.p50, &b->tpot_ms.p99,
                         &b->e2e_ms.mean, &b->throughput_tok_s, &b->kv_util,     &b->busy_frac};
    for (size_t i = 0; i < sizeof x / sizeof *x; i++)
        CHECK_MSG(fabs(*x[i] - *y[i]) <= 1e-6 * fabs(*y[i]) + 1e-9, "metric %zu: %.12g vs %.12g", i, *x[i], *y[i]);
    CHECK(a->iterations == b->iterations);
}

static void test_macro_steps_change_nothing(void) {
    /* Collapsing decode-only iterations into one event must give the same simulation as stepping each one. */
    struct ty_sim_model m = model("qwen3-30b-a3b");
    struct ty_sim_config c = config("h20", &m, 8, 1, 2); /* 4 replicas of EP 2: data-parallel attention groups */
    c.max_seqs = 16;
    struct ty_sim_workload w = {.rate = 40,
                                .n_requests = 400,
                                .prompt = {TY_SIM_DIST_LOGNORMAL, 800, 0.8},
                                .output = {TY_SIM_DIST_EXP, 120, 0},
                                .seed = 11};
    struct ty_sim_result fast, slow;
    CHECK_OK(ty__sim_run(&c, &w, &fast));
    c.step_by_step = true;
    CHECK_OK(ty__sim_run(&c, &w, &slow));
    expect_same(&fast, &slow);
    CHECK(fast.events * 3 < slow.events);
    /* And with prefill/decode disaggregation and pipeline parallelism. */
    struct ty_sim_model d = model("qwen3-8b");
    struct ty_sim_config cd = config("h20", &d, 8, 1, 1);
    cd.disagg_prefill = 2;
    cd.step_by_step = false;
    CHECK_OK(ty__sim_run(&cd, &w, &fast));
    cd.step_by_step = true;
    CHECK_OK(ty__sim_run(&cd, &w, &slow));
    expect_same(&fast, &slow);
    struct ty_sim_config cp = config("a100", &d, 4, 1, 1);
    cp.pp = 2;
    ty__sim_config_defaults(&cp);
    CHECK_OK(ty__sim_run(&cp, &w, &fast));
    cp.step_by_step = true;
    CHECK_OK(ty__sim_run(&cp, &w, &slow));
    expect_same(&fast, &slow);
}

/* bench_serve's load on our server: a closed loop of clients (one request each in flight, the next sent when it
 * completes) behind a front end that hands requests to the scheduler one at a time. */
static void test_closed_loop_and_front_end(void) {
    struct ty_sim_model m = model("qwen3-8b");
    struct ty_sim_config c = config("h20", &m, 1, 1, 1);
    c.max_batch_tokens = 256; /* the server's CPU defaults: all four 39-token prompts fit one iteration */
    c.prefill_chunk = 64;
    c.max_seqs = 16;
    struct ty_sim_layout l;
    CHECK_OK(ty__sim_layout(&c, &l));
    struct ty_sim_perf *p;
    CHECK_OK(ty__sim_perf_init(&c, &l, &p));
    struct ty_sim_batch one = {.n_pf_tok = 39, .pf_attn_work = 39 * 20.0, .n_pf_seq = 1, .n_logits = 1};
    struct ty_sim_batch four = {.n_pf_tok = 156, .pf_attn_work = 4 * 39 * 20.0, .n_pf_seq = 4, .n_logits = 4};
    double t_one = ty__sim_step_time(p, &one, NULL), t_four = ty__sim_step_time(p, &four, NULL);
    ty__sim_perf_free(p);
    struct ty_sim_workload w = {.n_requests = 4,
                                .prompt = {TY_SIM_DIST_FIXED, 39, 0},
                                .output = {TY_SIM_DIST_FIXED, 32, 0},
                                .seed = 3,
                                .users = 4};
    /* No front end: the four first requests reach the scheduler at once and prefill in one iteration. */
    struct ty_sim_result wave, stag;
    CHECK_OK(ty__sim_run(&c, &w, &wave));
    CHECK_NEAR(wave.ttft_ms.min, t_four * 1e3, 1e-9);
    CHECK_NEAR(wave.ttft_ms.p99, t_four * 1e3, 1e-9);
    CHECK(wave.iterations == 1 + 31);
    /* A front end of 0.1 ms a request: the scheduler wakes on the first and prefills it alone, so its TTFT is the
     * front end and a 39-token iteration, shorter than the batched wave's; the other three wait for that iteration
     * and prefill together in the next (with the first's second token), longer than the wave, and the last
     * completions come one iteration later. */
    c.front_s = 1e-4;
    CHECK_OK(ty__sim_run(&c, &w, &stag));
    CHECK_NEAR(stag.ttft_ms.min, (1e-4 + t_one) * 1e3, 1e-9);
    CHECK_MSG(stag.ttft_ms.min < wave.ttft_ms.p50, "first %.2f ms vs wave %.2f ms", stag.ttft_ms.min, wave.ttft_ms.p50);
    CHECK(stag.ttft_ms.p50 > wave.ttft_ms.p50);
    CHECK(stag.iterations == 2 + 31);
    /* A ramp-up shorter than a prefill (the clients' first requests 1 ms apart, as bench_serve sends them): the same
     * pattern as the front end's, the first alone and the other three in the next iteration, each TTFT timed from
     * its own send (so the later ones wait 1 and 2 ms less). */
    c.front_s = 0;
    w.ramp_s = 1e-3;
    struct ty_sim_result ramp;
    CHECK_OK(ty__sim_run(&c, &w, &ramp));
    CHECK_NEAR(ramp.ttft_ms.min, t_one * 1e3, 1e-9);
    CHECK(ramp.ttft_ms.p50 > wave.ttft_ms.p50 && ramp.iterations == 2 + 31);
    w.ramp_s = 0;
    /* Eight requests from four clients: never more than four in flight, and the second four are sent when the first
     * complete (all at once here), so the run is two waves end to end, each TTFT timed from its own send. */
    w.n_requests = 8;
    struct ty_sim_result loop;
    CHECK_OK(ty__sim_run(&c, &w, &loop));
    CHECK_NEAR(loop.duration_s, 2 * wave.duration_s, 1e-9);
    CHECK_NEAR(loop.ttft_ms.p99, wave.ttft_ms.p99, 1e-9);
    CHECK(loop.mean_batch <= 4 + 1e-12);
    /* The same eight as an open-loop burst: all admitted at once (16 slots), they share the first iterations. */
    struct ty_sim_workload burst = w;
    burst.users = 0;
    burst.rate = 1e9;
    struct ty_sim_result b8;
    CHECK_OK(ty__sim_run(&c, &burst, &b8));
    CHECK(b8.mean_batch > 4);
}

/* A GEMM curve measured by width (our CPU engine's bench_kernels): narrow widths scale the weight stream by the time
 * ratio measured, wide ones take their share of the peak; decode layer ops are paid per sequence. */
static void test_gemm_curve(void) {
    struct ty_sim_model m = model("qwen3-8b");
    struct ty_sim_config c = config("h20", &m, 1, 1, 1);
    struct ty_sim_chip ch = *c.chip;
    ch.tile_m.v = 1; /* no tile padding: a row costs a row, as on a CPU */
    c.chip = &ch;
    struct ty_sim_layout l;
    CHECK_OK(ty__sim_layout(&c, &l));
    struct ty_sim_perf *p;
    struct ty_sim_batch d1 = {.n_dec = 1, .dec_ctx = 100, .n_logits = 1};
    struct ty_sim_batch d4 = {.n_dec = 4, .dec_ctx = 400, .n_logits = 4};
    struct ty_sim_batch pf = {.n_pf_tok = 128, .pf_attn_work = 128 * 64.5, .n_pf_seq = 1, .n_logits = 1};
    struct ty_sim_breakdown a1, a4, apf, b1, b4, bpf;
    CHECK_OK(ty__sim_perf_init(&c, &l, &p));
    ty__sim_step_time(p, &d1, &a1);
    ty__sim_step_time(p, &d4, &a4);
    ty__sim_step_time(p, &pf, &apf);
    ty__sim_perf_free(p);
    CHECK_NEAR(a4.gemm, a1.gemm, 1e-12); /* without a curve, four rows stream the weights as one does */
    const double rows[] = {1, 4, 32, 128}, share[] = {0.1, 0.3, 0.5, 0.6};
    c.gemm_n = 4;
    for (int i = 0; i < 4; i++) c.gemm_rows[i] = rows[i], c.gemm_share[i] = share[i];
    c.dec_layer_us = 7;
    CHECK_OK(ty__sim_perf_init(&c, &l, &p));
    ty__sim_step_time(p, &d1, &b1);
    ty__sim_step_time(p, &d4, &b4);
    ty__sim_step_time(p, &pf, &bpf);
    ty__sim_perf_free(p);
    CHECK_NEAR(b1.gemm, a1.gemm, 1e-12 * a1.gemm);
    /* 4 rows at share 0.3 take (4 / 0.3) / (1 / 0.1) = 4/3 of one row's time */
    CHECK_NEAR(b4.gemm, a1.gemm * 4 / 3, 1e-9 * a1.gemm);
    CHECK_NEAR(b4.lm_head, a1.lm_head * 4 / 3, 1e-9 * a1.lm_head);
    /* 128 rows are compute-bound on the H20: at share 0.6 of the peak instead of the catalogue's MFU */
    CHECK_NEAR(bpf.gemm, apf.gemm * c.chip->mfu.v / 0.6, 1e-9 * bpf.gemm);
    /* the layer ops: 7 us per layer and decoding sequence */
    CHECK_NEAR(b4.fixed - a4.fixed, 4 * 36 * 7e-6, 1e-12);
    CHECK_NEAR(b1.fixed - a1.fixed, 36 * 7e-6, 1e-12);
    /* Decode-batch ratios measured directly (bench_pool) replace the narrow widths' implied ones; beyond the widest
     * the ratio is held, and never above streaming the weights once per row. */
    c.dec_n = 3;
    c.dec_rows[0] = 1, c.dec_rows[1] = 2, c.dec_rows[2] = 4;
    c.dec_ratio[0] = 1, c.dec_ratio[1] = 1.1, c.dec_ratio[2] = 1.5;
    CHECK_OK(ty__sim_perf_init(&c, &l, &p));
    ty__sim_step_time(p, &d4, &b4);
    ty__sim_perf_free(p);
    CHECK_NEAR(b4.gemm, a1.gemm * 1.5, 1e-9 * a1.gemm);
    CHECK_NEAR(ty__sim_gemm_stream_ratio(&c, 4), 1.5, 1e-12);
    CHECK_NEAR(ty__sim_gemm_stream_ratio(&c, 16), 1.5, 1e-12);
    CHECK_NEAR(ty__sim_gemm_stream_ratio(&c, 1), 1, 0);
    c.dec_ratio[1] = 3; /* two rows measured slower than two streams: held to 2 */
    CHECK_NEAR(ty__sim_gemm_stream_ratio(&c, 2), 2, 1e-12);
}

static void test_load_and_limits(void) {
    struct ty_sim_model m = model("qwen3-8b");
    struct ty_sim_config c = config("h100", &m, 2, 1, 1);
    struct ty_sim_workload w = {.rate = 2,
                                .n_requests = 300,
                                .prompt = {TY_SIM_DIST_UNIFORM, 200, 600},
                                .output = {TY_SIM_DIST_FIXED, 64, 0},
                                .seed = 9};
    struct ty_sim_result lo, hi, one;
    CHECK_OK(ty__sim_run(&c, &w, &lo));
    w.rate = 500;
    CHECK_OK(ty__sim_run(&c, &w, &hi));
    /* More load: longer queues, bigger batches, more throughput, fuller KV. */
    CHECK(hi.ttft_ms.p99 > lo.ttft_ms.p99 && hi.tpot_ms.p50 > lo.tpot_ms.p50);
    CHECK(hi.throughput_tok_s > lo.throughput_tok_s && hi.mean_batch > lo.mean_batch);
    CHECK(hi.kv_util > lo.kv_util && hi.kv_util_peak <= 1.0 + 1e-9);
    CHECK(lo.slo_attainment > 0.99 && lo.goodput_rps > 1.5);
    CHECK(hi.cost_per_mtok < lo.cost_per_mtok && hi.energy_j_per_tok < lo.energy_j_per_tok);
    CHECK_NEAR(lo.out_tokens, 300 * 64, 0);
    /* One sequence at a time: the batch never exceeds one. */
    c.max_seqs = 1;
    CHECK_OK(ty__sim_run(&c, &w, &one));
    CHECK(one.mean_batch <= 1.0 + 1e-9 && one.ttft_ms.p50 > hi.ttft_ms.p50);
    /* Same seed, same result; another seed, another workload. */
    struct ty_sim_result again, other;
    c.max_seqs = 0;
    ty__sim_config_defaults(&c);
    CHECK_OK(ty__sim_run(&c, &w, &again));
    expect_same(&again, &hi);
    w.seed = 10;
    CHECK_OK(ty__sim_run(&c, &w, &other));
    CHECK(other.ttft_ms.p50 != hi.ttft_ms.p50);
    /* JSON carries the contract's fields. */
    struct ty_sim_layout l;
    CHECK_OK(ty__sim_layout(&c, &l));
    json_t *j = ty__sim_result_json(&c, &l, &hi);
    static const char *const keys[] = {
        "throughput_tok_s", "prefill_tok_s_per_chip", "decode_tok_s_per_chip", "goodput_rps",
        "kv_util",          "cost_per_mtok"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) CHECK(json_is_number(json_object_get(j, keys[i])));
    for (int k = 0; k < 2; k++) {
        json_t *pct = json_object_get(j, k ? "tpot_ms" : "ttft_ms");
        CHECK(json_is_number(json_object_get(pct, "p50")) && json_is_number(json_object_get(pct, "p90")) &&
              json_is_number(json_object_get(pct, "p99")));
    }
    json_decref(j);
}

static void test_trace_workload(void) {
    const char *csv = "# arrival in seconds\narrival,prompt_tokens,output_tokens\n0.5,100,10\n0.0,200,20\n"
                      "1.5,300,30\n";
    struct ty_sim_trace t;
    CHECK_OK(ty__sim_trace_parse(csv, strlen(csv), "t.csv", &t));
    CHECK(t.n == 3 && t.reqs[0].arrival == 0.0 && t.reqs[0].prompt == 200 && t.reqs[2].output == 30);
    struct ty_sim_model m = model("qwen3-0.6b");
    struct ty_sim_config c = config("a100", &m, 1, 1, 1);
    struct ty_sim_workload w = {.trace = &t};
    struct ty_sim_result r;
    CHECK_OK(ty__sim_run(&c, &w, &r));
    CHECK(r.n_requests == 3 && r.in_tokens == 600 && r.out_tokens == 60);
    ty__sim_trace_free(&t);
    /* JSON lines, other column names, header-less CSV. */
    const char *jl = "{\"arrival\": 0.25, \"prompt_tokens\": 7, \"output_tokens\": 3}\n\n"
                     "{\"timestamp\": 1, \"input_len\": 8, \"output_len\": 4}\n";
    CHECK_OK(ty__sim_trace_parse(jl, strlen(jl), "t.jsonl", &t));
    CHECK(t.n == 2 && t.reqs[1].prompt == 8);
    ty__sim_trace_free(&t);
    const char *plain = "0,5,6\r\n1,7,8\r\n";
    CHECK_OK(ty__sim_trace_parse(plain, strlen(plain), "p.csv", &t));
    CHECK(t.n == 2 && t.reqs[1].output == 8);
    ty__sim_trace_free(&t);
}

static void expect_trace_error(const char *text, const char *want) {
    struct ty_sim_trace t;
    enum ty_status st = ty__sim_trace_parse(text, strlen(text), "bad.csv", &t);
    CHECK_MSG(st == TY_ERR_FORMAT, "trace %s parsed", text);
    CHECK_MSG(contains(ty_last_error(), want), "message '%s' lacks '%s'", ty_last_error(), want);
    if (st == TY_OK) ty__sim_trace_free(&t);
}

static void test_malformed_traces(void) {
    expect_trace_error("arrival,prompt_tokens,output_tokens\n0.0,128,64\n0.5,abc,64\n",
                       "bad.csv:3: prompt length 'abc'");
    expect_trace_error("0,1,2\n1,2\n", "bad.csv:2: expected 3 columns");
    expect_trace_error("0,0,5\n", "bad.csv:1: prompt length 0 is outside");
    expect_trace_error("-1,5,5\n", "bad.csv:1: arrival time -1");
    expect_trace_error("nan,5,5\n", "bad.csv:1: arrival time 'nan' is not a number");
    expect_trace_error("0,5,99999999999\n", "bad.csv:1: output length");
    expect_trace_error("time,foo,bar\n", "bad.csv:1: the header lacks a prompt column");
    expect_trace_error("{\"arrival\": 0, \"prompt_tokens\": 3}\n", "bad.csv:1: missing \"output_tokens\"");
    expect_trace_error("{\"arrival\": 0, \"prompt_tokens\": 3, \"output_tokens\": 2}\n{\"arrival\": 1, "
                       "\"prompt_tokens\": 3.5, \"output_tokens\": 2}\n",
                       "bad.csv:2: prompt length must be a whole number");
    expect_trace_error("{\"arrival\": 0, \"prompt_tokens\": 3, \"output_tokens\": 2} x\n", "text after the JSON");
    expect_trace_error("{\"arrival\": 0, \"prompt_tokens\": 3, \"output_tokens\": 2}\n0,1,1\n", "bad.csv:2: expected a "
                                                                                                "JSON object");
    expect_trace_error("{\"arrival\": [0]", "bad.csv:1: column");
    expect_trace_error("# nothing\n\n", "no requests");
    struct ty_sim_trace t;
    static const char nul[] = "0,5,5\n1,\0,5\n";
    CHECK_STATUS(ty__sim_trace_parse(nul, sizeof nul - 1, "bad.csv", &t), TY_ERR_FORMAT);
    CHECK(contains(ty_last_error(), "bad.csv:2: NUL byte"));
    CHECK_STATUS(ty__sim_trace_load(ty_test_tmp("missing.csv"), &t), TY_ERR_IO);
}

static void test_impossible_configurations(void) {
    struct ty_sim_layout l;
    struct ty_sim_model m8 = model("qwen3-8b");
    struct ty_sim_config c = config("h20", &m8, 3, 3, 1);
    CHECK_STATUS(ty__sim_layout(&c, &l), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "TP 3 does not divide the 32 attention heads of qwen3-8b"));
    CHECK(contains(ty_last_error(), "1, 2, 4, 8, 16, 32"));
    struct ty_sim_model moe = model("qwen3-30b-a3b");
    c = config("h20", &moe, 3, 1, 3);
    CHECK_STATUS(ty__sim_layout(&c, &l), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "EP 3 does not divide the 128 experts of qwen3-30b-a3b"));
    c = config("h20", &m8, 2, 1, 2);
    CHECK_STATUS(ty__sim_layout(&c, &l), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "needs a mixture-of-experts model"));
    struct ty_sim_model big = model("qwen3-235b-a22b");
    c = config("h100", &big, 1, 1, 1);
    CHECK_STATUS(ty__sim_layout(&c, &l), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "does not fit the memory") && contains(ty_last_error(), "h100"));
    c = config("h100", &big, 8, 8, 1); /* and it fits on eight */
    c.weight = TY_SIM_DT_FP8;
    CHECK_OK(ty__sim_layout(&c, &l));
    c = config("h20", &m8, 6, 4, 1);
    CHECK_STATUS(ty__sim_layout(&c, &l), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "--chips 6 is not a multiple of the 4 chips of one replica"));
    c = config("h20", &moe, 8, 2, 8);
    c.dp = 2;
    CHECK_STATUS(ty__sim_layout(&c, &l), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "--chips is 8"));
    c = config("h20", &m8, 2, 1, 1);
    c.disagg_prefill = 2;
    CHECK_STATUS(ty__sim_layout(&c, &l), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "disaggregation"));
    /* A request whose KV cannot fit one replica's cache. */
    struct ty_sim_model m32 = model("qwen3-32b");
    c = config("h100", &m32, 1, 1, 1);
    struct ty_sim_workload w = {.rate = 1,
                                .n_requests = 1,
                                .prompt = {TY_SIM_DIST_FIXED, 100000, 0},
                                .output = {TY_SIM_DIST_FIXED, 128, 0},
                                .seed = 1};
    struct ty_sim_result r;
    CHECK_STATUS(ty__sim_run(&c, &w, &r), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "request 1 needs KV memory for 100128 tokens"));
    /* Workload parameters. */
    struct ty_sim_dist d;
    CHECK_STATUS(ty__sim_dist_parse("12x", &d), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__sim_dist_parse("5-2", &d), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__sim_dist_parse("lognormal:100", &d), TY_ERR_INVALID_ARG);
    CHECK_OK(ty__sim_dist_parse("lognormal:100:0.5", &d));
    CHECK(d.kind == TY_SIM_DIST_LOGNORMAL && d.a == 100 && d.b == 0.5);
    CHECK_OK(ty__sim_dist_parse("128-512", &d));
    CHECK(d.kind == TY_SIM_DIST_UNIFORM && ty__sim_dist_mean(&d) == 320);
    c = config("h100", &m8, 1, 1, 1);
    w.rate = 0;
    w.prompt.a = 10;
    CHECK_STATUS(ty__sim_run(&c, &w, &r), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "--rate"));
}

/* ==== Published points: each figure, its source, the prediction within 20% ==== */

static void test_published_points(void) {
    /* The figures and where they were published, written out here as well as in src/sim/validate.c. */
    static const struct {
        const char *id;
        double figure;
        const char *source;
    } pub[] = {
        {"infersim-qwen3-30b-a3b-prefill", 16594, "InferSim README: Qwen3-30B-A3B-BF16 on H20, prefill TGS (actual)"},
        {"infersim-qwen3-30b-a3b-decode", 2749, "InferSim README: Qwen3-30B-A3B-BF16 on H20, decode TGS (actual)"},
        {"infersim-qwen3-8b-prefill", 15061, "InferSim README: Qwen3-8B-FP8 on H20, prefill TGS (actual)"},
        {"infersim-qwen3-8b-decode", 2682, "InferSim README: Qwen3-8B-FP8 on H20, decode TGS (actual)"},
        {"sglang-deepseek-r1-h20-prefill", 16500,
         "lmsys.org 2025-09-26 (SGLang, Ant Group): 16.5k input tok/s per "
         "H20 node"},
    };
    int asserted = 0;
    for (size_t i = 0; i < sizeof pub / sizeof *pub; i++) {
        int k = -1;
        for (int j = 0; j < ty__sim_published_count(); j++)
            if (!strcmp(ty__sim_published_at(j)->id, pub[i].id)) k = j;
        CHECK_MSG(k >= 0, "published point %s missing", pub[i].id);
        if (k < 0) continue;
        const struct ty_sim_published *p = ty__sim_published_at(k);
        CHECK(p->published == pub[i].figure && p->asserted && p->tolerance <= 0.20 && strlen(p->assumptions) > 20);
        double pred = 0;
        CHECK_OK(ty__sim_published_predict(cat, k, &pred));
        CHECK_MSG(fabs(pred / pub[i].figure - 1) <= 0.20, "%s (%s): predicted %.0f, published %.0f (%+.1f%%)",
                  pub[i].id, pub[i].source, pred, pub[i].figure, (pred / pub[i].figure - 1) * 100);
        asserted++;
    }
    CHECK(asserted == 5);
}

/* ==== Planner ==== */

static void test_planner(void) {
    struct ty_sim_model m = model("qwen3-8b");
    const struct ty_sim_chip *chips[] = {chip("h20"), chip("a100")};
    struct ty_sim_plan_query q = {.model = &m,
                                  .rate = 20,
                                  .slo_ttft_ms = 2000,
                                  .slo_tpot_ms = 60,
                                  .prompt = {TY_SIM_DIST_FIXED, 1000, 0},
                                  .output = {TY_SIM_DIST_FIXED, 100, 0},
                                  .chips = chips,
                                  .n_chips = 2,
                                  .weight = TY_SIM_DT_BF16,
                                  .requests = 80,
                                  .seed = 3};
    struct ty_sim_plan pl;
    CHECK_OK(ty__sim_plan_search(&q, &pl));
    CHECK(pl.n > 0 && pl.n_tried >= pl.n);
    bool any_pareto = false;
    for (int i = 0; i < pl.n; i++) {
        const struct ty_sim_plan_entry *e = &pl.e[i];
        CHECK(e->rate_per_inst > 0 && e->n_inst * e->rate_per_inst >= q.rate - 1e-9);
        CHECK(e->chips == e->n_inst * e->inst_chips && e->tpot_p99_ms > 0);
        CHECK_NEAR(e->cost_hr, e->chips * e->chip->price_hr.v, 1e-9);
        if (i) CHECK(pl.e[i - 1].cost_hr <= e->cost_hr);
        any_pareto |= e->pareto;
    }
    CHECK(any_pareto);
    ty__sim_plan_free(&pl);
    /* An objective nothing can meet. */
    q.slo_tpot_ms = 0.01;
    CHECK_OK(ty__sim_plan_search(&q, &pl));
    CHECK(pl.n == 0 && pl.n_rejected > 0);
    ty__sim_plan_free(&pl);
}

/* ==== Training ==== */

static void test_training(void) {
    struct ty_sim_model m = model("qwen3-8b");
    struct ty_sim_train_config tc = {.chip = chip("h100"),
                                     .model = &m,
                                     .chips = 64,
                                     .tp = 8,
                                     .pp = 1,
                                     .zero = 1,
                                     .global_batch = 512,
                                     .micro_batch = 1,
                                     .seq_len = 4096};
    struct ty_sim_train_result a, b;
    CHECK_OK(ty__sim_train(&tc, &a));
    CHECK(a.mfu > 0.2 && a.mfu <= tc.chip->mfu.v + 1e-9);
    CHECK_NEAR(a.tokens_per_s * a.step_s, 512.0 * 4096, 1e-3);
    /* 6N per token, plus attention. */
    struct ty_sim_model_stats s;
    ty__sim_model_stats(&m, &s);
    CHECK(a.flops_per_token > 6 * s.params_active && a.flops_per_token < 7 * s.params_active);
    tc.chips = 128;
    CHECK_OK(ty__sim_train(&tc, &b));
    CHECK(b.step_s < a.step_s && b.tokens_per_s > a.tokens_per_s);
    /* ZeRO shards optimizer state; pipeline adds a bubble; the 810E trains too. */
    tc.zero = 3;
    CHECK_OK(ty__sim_train(&tc, &b));
    CHECK(b.mem_optim_gb < a.mem_optim_gb && b.mem_params_gb < a.mem_params_gb);
    tc.zero = 1;
    tc.pp = 4;
    tc.tp = 2;
    CHECK_OK(ty__sim_train(&tc, &b));
    CHECK(b.t_bubble > 0);
    tc.chip = chip("ppu-810e");
    CHECK_OK(ty__sim_train(&tc, &b));
    CHECK(b.mfu > 0 && b.step_s > 0);
    /* Too big for the memory. */
    struct ty_sim_model m32 = model("qwen3-32b");
    struct ty_sim_train_config t1 = {.chip = chip("h100"),
                                     .model = &m32,
                                     .chips = 8,
                                     .tp = 1,
                                     .pp = 1,
                                     .zero = 0,
                                     .global_batch = 8,
                                     .micro_batch = 1,
                                     .seq_len = 4096};
    CHECK_STATUS(ty__sim_train(&t1, &b), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "does not fit the memory"));
    t1.global_batch = 9;
    CHECK_STATUS(ty__sim_train(&t1, &b), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "multiple of micro-batch x DP"));
}

/* ==== Calibration path ==== */

static void test_bench_prediction(void) {
    /* A host that streams 20 GB/s and computes 100 GFLOP/s: generation is bandwidth-bound. */
    struct ty_sim_host_bench hb = {
        .n_threads = 2, .read_bw_gbs = 20, .read_bw_1t_gbs = 12, .fma_gflops = 100, .fma_gflops_1t = 50, .mem_gb = 16};
    struct ty_sim_model m = model("qwen3-0.6b");
    struct ty_sim_bench_pred p8, p4, p1t;
    CHECK_OK(ty__sim_predict_bench(&hb, &m, 8.5, 512, 128, 0, 0, &p8));
    CHECK_OK(ty__sim_predict_bench(&hb, &m, 4.5, 512, 128, 0, 0, &p4));
    CHECK_OK(ty__sim_predict_bench(&hb, &m, 8.5, 512, 128, 0, 1, &p1t));
    CHECK(p4.tg_tok_s > p8.tg_tok_s && p1t.tg_tok_s < p8.tg_tok_s);
    CHECK(p8.mem_bw_gbs == 20 && p1t.mem_bw_gbs == 12);
    CHECK_NEAR(1 / p8.tg_tok_s, p8.tg_bytes_per_tok / (20e9 * 0.85) + 28 * 10e-6, 1e-12);
    CHECK(p8.pp_tok_s > p8.tg_tok_s);
    /* At a context depth (bench -d) a generated token reads the depth's KV too and a prompt token attends to it: the
     * bytes grow by depth x the per-position KV, the FLOPs by depth x the attention FLOPs of a position. */
    struct ty_sim_bench_pred d4k, d8k;
    CHECK_OK(ty__sim_predict_bench(&hb, &m, 8.5, 512, 128, 4096, 0, &d4k));
    CHECK_OK(ty__sim_predict_bench(&hb, &m, 8.5, 512, 128, 8192, 0, &d8k));
    CHECK_NEAR(d8k.tg_bytes_per_tok - d4k.tg_bytes_per_tok, d4k.tg_bytes_per_tok - p8.tg_bytes_per_tok, 1e-3);
    CHECK_NEAR(d4k.tg_bytes_per_tok - p8.tg_bytes_per_tok, 4096.0 * 28 * 8 * 128 * 2 * 2, 1e-3); /* 28 layers, f16 */
    CHECK_NEAR(d4k.pp_flops_per_tok - p8.pp_flops_per_tok, 4096.0 * 28 * 16 * (128 + 128) * 2, 1e-3);
    CHECK(d4k.tg_tok_s < p8.tg_tok_s && d4k.pp_tok_s < p8.pp_tok_s);
    CHECK_STATUS(ty__sim_predict_bench(&hb, &m, 8.5, 512, 128, -1, 0, &d4k), TY_ERR_INVALID_ARG);
    /* Quantised weights run prompts on the integer dot product; 16-bit ones on f32 FMA. */
    struct ty_sim_host_bench hb8 = hb;
    hb8.int8_gops = 400, hb8.int8_gops_1t = 200;
    struct ty_sim_bench_pred q8, f16a, f16b;
    CHECK_OK(ty__sim_predict_bench(&hb8, &m, 8.5, 512, 128, 0, 0, &q8));
    CHECK_OK(ty__sim_predict_bench(&hb, &m, 16, 512, 128, 0, 0, &f16a));
    CHECK_OK(ty__sim_predict_bench(&hb8, &m, 16, 512, 128, 0, 0, &f16b));
    CHECK(q8.pp_tok_s > p8.pp_tok_s * 2 && f16a.pp_tok_s == f16b.pp_tok_s);
    /* Against a bench JSON: predictions with the error of each figure. */
    const char *path = ty_test_tmp("bench.json");
    write_text(path, "{\"results\": [{\"model\": \"qwen3-0.6b\", \"type\": \"Q8_0\", \"pp_tok_s\": 100, \"tg_tok_s\": "
                     "30, \"mem_bw_gbs\": 18}, {\"model\": \"qwen3-1.7b\", \"type\": \"Q4_K\", \"tg_tok_s\": 15}]}");
    json_t *rows = NULL;
    CHECK_OK(ty__sim_calibrate(&hb, path, &rows));
    CHECK(json_array_size(rows) == 2);
    json_t *e0 = json_object_get(json_array_get(rows, 0), "error");
    CHECK_NEAR(json_number_value(json_object_get(e0, "tg_tok_s")), p8.tg_tok_s / 30 - 1, 1e-9);
    CHECK_NEAR(json_number_value(json_object_get(e0, "mem_bw_gbs")), 20.0 / 18 - 1, 1e-9);
    CHECK(json_is_null(json_object_get(json_object_get(json_array_get(rows, 1), "error"), "pp_tok_s")));
    json_decref(rows);
    write_text(path, "[{\"model\": \"qwen3-0.6b\", \"tg_tok_s\": 5}]");
    CHECK_STATUS(ty__sim_calibrate(&hb, path, &rows), TY_ERR_FORMAT);
    CHECK(contains(ty_last_error(), "\"type\""));
}

/* ==== Outputs ==== */

static void test_svg_and_report(void) {
    struct ty_sim_model m = model("qwen3-4b");
    struct ty_sim_config c = config("a100", &m, 2, 1, 1);
    struct ty_sim_workload w = {
        .n_requests = 60, .prompt = {TY_SIM_DIST_FIXED, 500, 0}, .output = {TY_SIM_DIST_FIXED, 50, 0}, .seed = 2};
    double rates[3] = {1, 10, 100};
    struct ty_sim_sweep_point pts[3];
    CHECK_OK(ty__sim_sweep(&c, &w, rates, 3, pts));
    CHECK(pts[2].r.ttft_ms.p99 >= pts[0].r.ttft_ms.p99);
    const char *svg = ty_test_tmp("sweep.svg");
    CHECK_OK(ty__sim_sweep_svg(&c, pts, 3, svg));
    char *text = NULL;
    size_t n;
    CHECK_OK(ty__file_read(svg, 1 << 20, &text, &n));
    CHECK(contains(text, "<svg") && contains(text, "</svg>") && contains(text, "time to first token") &&
          contains(text, "polyline") && contains(text, "qwen3-4b"));
    ty_free(text);
    /* The validation report without the engine's runs says how to make them. */
    struct ty_sim_catalog *mc;
    CHECK_OK(ty__sim_catalog_init(true, &mc));
    const char *md = ty_test_tmp("validation.md");
    CHECK_OK(ty__sim_validation_report(mc, md, NULL, false));
    CHECK_OK(ty__file_read(md, 1 << 20, &text, &n));
    CHECK(contains(text, "Not compared in this run") && contains(text, "scripts/sim-validation.sh"));
    for (int i = 0; i < ty__sim_published_count(); i++) CHECK(contains(text, ty__sim_published_at(i)->id));
    CHECK(contains(text, "TP 3 does not divide"));
    ty_free(text);
    ty__sim_catalog_free(mc);
}

void ty_tests(void) {
    CHECK_OK(ty__sim_catalog_init(false, &cat));
    TY_RUN(test_catalogue_has_every_chip_with_sources);
    TY_RUN(test_unknown_chip_lists_known_ones);
    TY_RUN(test_chips_from_file);
    TY_RUN(test_host_microbenchmarks);
    TY_RUN(test_preset_sizes);
    TY_RUN(test_model_from_gguf);
    TY_RUN(test_roofline_by_hand);
    TY_RUN(test_hybrid_and_moe_costs);
    TY_RUN(test_lone_request_matches_closed_form);
    TY_RUN(test_macro_steps_change_nothing);
    TY_RUN(test_closed_loop_and_front_end);
    TY_RUN(test_gemm_curve);
    TY_RUN(test_load_and_limits);
    TY_RUN(test_trace_workload);
    TY_RUN(test_malformed_traces);
    TY_RUN(test_impossible_configurations);
    TY_RUN(test_published_points);
    TY_RUN(test_planner);
    TY_RUN(test_training);
    TY_RUN(test_bench_prediction);
    TY_RUN(test_svg_and_report);
    ty__sim_catalog_free(cat);
}
