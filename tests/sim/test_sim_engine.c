/*
 * test_sim_engine.c - the engine calibration (src/sim/engine-calib.c) on fixed, committed inputs
 * (tests/sim/data/engine-*): microbenchmark outputs in the formats bench_kernels and bench_pool print, a `tongyun bench
 * --json` file and a `bench_serve --json` file. Each prediction is checked against the same arithmetic done here by
 * hand from the fixture numbers; nothing is timed. A bench_serve level that carries the bandwidth measured around it
 * is priced with that bandwidth; prefill figures at several widths are interpolated by the prompt's width.
 */
#include "../harness.h"

#include "model/gguf.h"
#include "sim/sim.h"

#include <math.h>
#include <string.h>

static bool contains(const char *s, const char *sub) {
    return s && strstr(s, sub) != NULL;
}

static struct ty_sim_micro *load_micro(bool with_bf16) {
    static struct ty_sim_micro mb;
    memset(&mb, 0, sizeof mb);
    CHECK_OK(ty__sim_micro_add_file(&mb, ty_test_src("tests/sim/data/engine-kernels.json")));
    if (with_bf16) CHECK_OK(ty__sim_micro_add_file(&mb, ty_test_src("tests/sim/data/engine-kernels-bf16.json")));
    CHECK_OK(ty__sim_micro_add_file(&mb, ty_test_src("tests/sim/data/engine-pool.json")));
    return &mb;
}

/* Qwen3-0.6B by hand: width 1024, 16 heads and 8 KV heads of 128, FFN 3072, 28 layers, vocabulary 151936 (tied). */
#define L06       28
#define P_LAYER   (1024.0 * 16 * 128 + 1024.0 * 8 * 256 + 16.0 * 128 * 1024 + 3.0 * 1024 * 3072)
#define P_HEAD    (1024.0 * 151936)
#define Q8_0_BYTE (34.0 / 32)

static void test_micro_files(void) {
    struct ty_sim_micro *mb = load_micro(true);
    CHECK(mb->n_eff == 4 && mb->n_pool == 1);
    CHECK(mb->pool_embd == 1024 && mb->pool_ctx == 32 && mb->pool_prefill == 512);
    CHECK(mb->pool[0].threads == 2 && mb->pool[0].run_us == 5 && mb->pool[0].any_us == 3);
    CHECK(!strcmp(mb->eff[1].type, "Q8_0") && mb->eff[1].packed && mb->eff[1].pf_pct == 60);
    CHECK(!strcmp(mb->eff[1].pf_peak, "int8") && mb->eff[1].dec_s == 0.02 && mb->eff[1].dec_read_gbs == 40);
    CHECK(!strcmp(mb->eff[3].act, "f32") && !strcmp(mb->eff[3].isa, "avx512vnni"));
    /* Neither kind of output: a clear error. */
    json_t *bad = json_pack("{s:i}", "x", 1);
    CHECK_STATUS(ty__sim_micro_add_json(mb, bad, "bad.json"), TY_ERR_FORMAT);
    CHECK(contains(ty_last_error(), "bench_kernels --json") && contains(ty_last_error(), "bad.json"));
    json_decref(bad);
}

/* Prefill figures at several widths (bench_kernels --prefill 32,128,512): kept in ascending order whatever the order of
 * the file, the widest is the single-figure summary, and a width in between is interpolated in log(columns). */
static void test_prefill_by_width(void) {
    struct ty_sim_micro mb;
    memset(&mb, 0, sizeof mb);
    json_t *k =
        json_pack("{s:s,s:[{s:s,s:s,s:s,s:[{s:i,s:f,s:i,s:f}],s:[{s:i,s:i,s:s,s:f},{s:i,s:i,s:s,s:f},"
                  "{s:i,s:i,s:s,s:f}]}]}",
                  "isa", "avx512vnni", "types", "type", "Q8_0", "layout", "packed", "act", "q8", "model", "threads", 2,
                  "ms_per_token", 10.0, "bytes", 400000000, "read_gbs", 40.0, "prefill", "threads", 2, "cols", 512,
                  "peak_name", "int8", "peak_pct", 60.0, "threads", 2, "cols", 32, "peak_name", "int8", "peak_pct",
                  30.0, "threads", 2, "cols", 128, "peak_name", "int8", "peak_pct", 50.0);
    CHECK(k != NULL);
    CHECK_OK(ty__sim_micro_add_json(&mb, k, "widths.json"));
    json_decref(k);
    const struct ty_sim_kernel_eff *e = &mb.eff[0];
    CHECK(mb.n_eff == 1 && e->pf_n == 3 && e->pf_pct == 60);
    CHECK(e->pf_cols[0] == 32 && e->pf_cols[1] == 128 && e->pf_cols[2] == 512 && e->pf_pcts[0] == 30);
    CHECK_NEAR(ty__sim_kernel_pf_pct(e, 64), 40, 1e-9); /* halfway between 32 and 128 in log(columns) */
    CHECK_NEAR(ty__sim_kernel_pf_pct(e, 128), 50, 1e-9);
    CHECK_NEAR(ty__sim_kernel_pf_pct(e, 256), 55, 1e-9);
    CHECK_NEAR(ty__sim_kernel_pf_pct(e, 8), 30, 0);    /* held at the ends */
    CHECK_NEAR(ty__sim_kernel_pf_pct(e, 4096), 60, 0); /* held at the ends */
}

static void test_prediction_by_hand(void) {
    struct ty_sim_micro *mb = load_micro(true);
    struct ty_sim_model m;
    CHECK_OK(ty__sim_model_resolve("qwen3-0.6b", &m));
    struct ty_sim_engine_cost c;
    CHECK_OK(ty__sim_engine_cost_preset(&m, TY_TYPE_Q8_0, &c));
    CHECK(c.n_layer == L06 && c.n_embd == 1024);
    CHECK_NEAR(c.layer_bytes, L06 * P_LAYER * Q8_0_BYTE, 1);
    CHECK_NEAR(c.head_bytes, P_HEAD * Q8_0_BYTE, 1);
    CHECK_NEAR(c.layer_flops[TY_TYPE_Q8_0], 2 * L06 * P_LAYER, 1);

    struct ty_sim_roof roof = {2, 40, 200, 800, 400};
    struct ty_sim_engine_pred p;
    CHECK_OK(ty__sim_predict_engine(mb, &roof, "Q8_0", &c, 512, 64, &p));
    /* The packed Q8_0 figures (the engine packs Q8_0): 0.5 GB in 20 ms where plain reads take 12.5 ms. */
    double eff = (0.5e9 / 40e9) / 20e-3;
    CHECK_NEAR(p.dec_eff, 0.625, 1e-12);
    double w = (L06 * P_LAYER + P_HEAD) * Q8_0_BYTE / (40e9 * eff);
    double tg = w + L06 * 50e-6;
    CHECK_NEAR(1 / p.tg_tok_s, tg, 1e-12);
    CHECK_NEAR(p.tg_ops_s, L06 * 50e-6, 1e-15);
    /* Prefill: the layers' FLOPs at 60% of the 800 GOP/s int8 peak, 28 layers of 10 us ops per token, and a 512th of
     * the batch's 113 dispatches (5 us) and of the one output row. */
    double pp =
        2 * L06 * P_LAYER / (800e9 * 0.60) + L06 * 10e-6 + (113 * 5e-6 + P_HEAD * Q8_0_BYTE / (40e9 * eff)) / 512;
    CHECK_NEAR(1 / p.pp_tok_s, pp, 1e-12);
    CHECK_NEAR(p.pf_rate_gops, 480, 1e-9);

    /* BF16: the engine's f32-activation kernels (from the second bench_kernels run) where both were timed. */
    struct ty_sim_engine_cost cb;
    CHECK_OK(ty__sim_engine_cost_preset(&m, TY_TYPE_BF16, &cb));
    CHECK_OK(ty__sim_predict_engine(mb, &roof, "BF16", &cb, 512, 64, &p));
    CHECK_NEAR(p.dec_eff, (1e9 / 40e9) / 40e-3, 1e-12);
    CHECK_NEAR(p.pf_rate_gops, 200 * 0.25, 1e-9); /* 25% of the FMA peak, not 50% of the bf16 one */
    struct ty_sim_micro *only_main = load_micro(false);
    CHECK_OK(ty__sim_predict_engine(only_main, &roof, "BF16", &cb, 512, 64, &p));
    CHECK_NEAR(p.pf_rate_gops, 400 * 0.5, 1e-9);

    /* A share above 1 (a gemv faster than plain reads of its memory, a gemm past its peak) is held to 1. */
    struct ty_sim_micro *fast = load_micro(false);
    json_t *k = json_loads("{\"isa\": \"x\", \"types\": [{\"type\": \"Q4_0\", \"layout\": \"packed\", \"act\": "
                           "\"q8\", \"model\": [{\"threads\": 2, \"bytes\": 1e9, \"ms_per_token\": 10, \"read_gbs\": "
                           "50}], \"prefill\": [{\"threads\": 2, \"peak_name\": \"int8\", \"peak_pct\": 130}]}]}",
                           0, NULL);
    CHECK_OK(ty__sim_micro_add_json(fast, k, "fast.json"));
    json_decref(k);
    struct ty_sim_engine_cost c40;
    CHECK_OK(ty__sim_engine_cost_preset(&m, TY_TYPE_Q4_0, &c40));
    CHECK_OK(ty__sim_predict_engine(fast, &roof, "Q4_0", &c40, 512, 64, &p));
    CHECK(p.clamped && p.dec_eff == 1);
    CHECK_NEAR(p.pf_rate_gops, 800, 1e-9);
    CHECK_OK(ty__sim_predict_engine(mb, &roof, "Q8_0", &c, 512, 64, &p));
    CHECK(!p.clamped);

    /* What is missing is named with the command that makes it. */
    struct ty_sim_engine_cost c4;
    CHECK_OK(ty__sim_engine_cost_preset(&m, TY_TYPE_Q4_K, &c4));
    CHECK_STATUS(ty__sim_predict_engine(mb, &roof, "Q4_K", &c4, 512, 64, &p), TY_ERR_NOT_FOUND);
    CHECK(contains(ty_last_error(), "bench_kernels --types Q4_K --threads 2"));
    struct ty_sim_roof one = roof;
    one.threads = 1;
    CHECK_STATUS(ty__sim_predict_engine(mb, &one, "Q8_0", &c, 512, 64, &p), TY_ERR_NOT_FOUND);
    CHECK(contains(ty_last_error(), "bench_pool --threads 1"));
    struct ty_sim_model m7;
    CHECK_OK(ty__sim_model_resolve("qwen2.5-7b", &m7));
    struct ty_sim_engine_cost c7;
    CHECK_OK(ty__sim_engine_cost_preset(&m7, TY_TYPE_Q8_0, &c7));
    CHECK_STATUS(ty__sim_predict_engine(mb, &roof, "Q8_0", &c7, 512, 64, &p), TY_ERR_INVALID_ARG);
    CHECK(contains(ty_last_error(), "width 1024") && contains(ty_last_error(), "3584"));
    struct ty_sim_model moe;
    CHECK_OK(ty__sim_model_resolve("qwen3-30b-a3b", &moe));
    CHECK_STATUS(ty__sim_engine_cost_preset(&moe, TY_TYPE_Q8_0, &c7), TY_ERR_UNSUPPORTED);
}

static void test_cost_from_gguf(void) {
    /* Two layers: Q8_0 attention and F16 FFN matrices, a norm (not a matrix), a tied embedding in Q8_0. */
    const char *path = ty_test_tmp("dense.gguf");
    struct ty_gguf_writer *w;
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_set_str(w, "general.architecture", "qwen2"));
    struct {
        const char *name;
        enum ty_type t;
        int64_t ne[2];
        int nd;
    } ts[] = {
        {"token_embd.weight", TY_TYPE_Q8_0, {64, 100}, 2},  {"blk.0.attn_q.weight", TY_TYPE_Q8_0, {64, 64}, 2},
        {"blk.0.ffn_up.weight", TY_TYPE_F16, {64, 128}, 2}, {"blk.0.attn_norm.weight", TY_TYPE_F32, {64, 1}, 1},
        {"blk.1.attn_q.weight", TY_TYPE_Q8_0, {64, 64}, 2}, {"blk.1.ffn_up.weight", TY_TYPE_F16, {64, 128}, 2},
    };
    size_t sizes[6];
    for (int i = 0; i < 6; i++) {
        CHECK_OK(ty__gguf_writer_add_tensor(w, ts[i].name, ts[i].t, ts[i].nd, ts[i].ne));
        int64_t n = ts[i].ne[0] * (ts[i].nd > 1 ? ts[i].ne[1] : 1);
        sizes[i] = ts[i].t == TY_TYPE_Q8_0  ? (size_t)n / 32 * 34
                   : ts[i].t == TY_TYPE_F16 ? (size_t)n * 2
                                            : (size_t)n * 4;
    }
    CHECK_OK(ty__gguf_writer_begin(w, path));
    static uint8_t zeros[64 * 128 * 4];
    for (int i = 0; i < 6; i++) CHECK_OK(ty__gguf_writer_write_tensor(w, zeros, sizes[i]));
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);
    struct ty_sim_engine_cost c;
    CHECK_OK(ty__sim_engine_cost_gguf(path, &c));
    CHECK(c.n_layer == 2 && c.n_embd == 64);
    CHECK_NEAR(c.head_bytes, 64 * 100 / 32 * 34, 0);
    CHECK_NEAR(c.head_flops, 2.0 * 64 * 100, 0);
    CHECK_NEAR(c.layer_bytes, 2 * (64 * 64 / 32 * 34 + 64 * 128 * 2), 0);
    CHECK_NEAR(c.layer_flops[TY_TYPE_Q8_0], 2 * 2.0 * 64 * 64, 0);
    CHECK_NEAR(c.layer_flops[TY_TYPE_F16], 2 * 2.0 * 64 * 128, 0);
    CHECK_NEAR(c.layer_flops[TY_TYPE_F32], 0, 0);
}

static void test_against_bench_and_serve(void) {
    struct ty_sim_micro *mb = load_micro(true);
    json_t *rows = NULL;
    CHECK_OK(ty__sim_calibrate_engine(mb, ty_test_src("tests/sim/data/engine-bench.jsonl"), &rows));
    CHECK(json_array_size(rows) == 2);
    struct ty_sim_model m;
    CHECK_OK(ty__sim_model_resolve("qwen3-0.6b", &m));
    struct ty_sim_engine_cost c;
    CHECK_OK(ty__sim_engine_cost_preset(&m, TY_TYPE_Q8_0, &c));
    struct ty_sim_roof roof = {2, 40, 200, 800, 400};
    struct ty_sim_engine_pred p;
    CHECK_OK(ty__sim_predict_engine(mb, &roof, "Q8_0", &c, 512, 64, &p));
    json_t *r0 = json_array_get(rows, 0), *e0 = json_object_get(r0, "error");
    CHECK_NEAR(json_number_value(json_object_get(e0, "tg_tok_s")), p.tg_tok_s / 30 - 1, 1e-12);
    CHECK_NEAR(json_number_value(json_object_get(e0, "pp_tok_s")), p.pp_tok_s / 250 - 1, 1e-12);
    /* and against the best repetition, the figure the best-of microbenchmarks describe */
    json_t *b0 = json_object_get(r0, "error_best");
    CHECK_NEAR(json_number_value(json_object_get(b0, "tg_tok_s")), p.tg_tok_s / 32 - 1, 1e-12);
    CHECK_NEAR(json_number_value(json_object_get(b0, "pp_tok_s")), p.pp_tok_s / 260 - 1, 1e-12);
    json_t *b1 = json_object_get(json_array_get(rows, 1), "measured_best");
    CHECK_NEAR(json_number_value(json_object_get(b1, "tg_tok_s")), 12, 0); /* no samples: the mean */
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(rows, 1), "type")), "BF16"));
    json_decref(rows);

    /* bench_serve through the simulation: the host chip carries the microbenchmarks' figures. */
    struct ty_sim_catalog *cat;
    CHECK_OK(ty__sim_catalog_init(false, &cat));
    json_t *serve = NULL;
    CHECK_OK(ty__sim_predict_serve(cat, mb, ty_test_src("tests/sim/data/engine-bench.jsonl"),
                                   ty_test_src("tests/sim/data/engine-serve.json"), &serve));
    json_t *chip = json_object_get(serve, "chip"), *lv = json_object_get(serve, "levels");
    CHECK_NEAR(json_number_value(json_object_get(chip, "mbu")), p.dec_eff, 1e-12);
    CHECK_NEAR(json_number_value(json_object_get(chip, "layer_us")), 50, 1e-12);
    /* prefill's layer ops as attention: 2 x (128 + 128) x 16 heads x 256.5 positions in 10 us at 200 GFLOP/s */
    CHECK_NEAR(json_number_value(json_object_get(chip, "attn_mfu")), 2.0 * 256 * 16 * 256.5 / (200e9 * 10e-6), 1e-12);
    CHECK_NEAR(json_number_value(json_object_get(chip, "mfu")), 0.60, 1e-12);
    CHECK(json_array_size(lv) == 2);
    json_t *l1 = json_array_get(lv, 0), *l4 = json_array_get(lv, 1);
    CHECK_NEAR(json_number_value(json_object_get(l1, "prompt_tokens")), 25, 0);
    CHECK_NEAR(json_number_value(json_object_get(l1, "output_tokens")), 32, 0);
    /* One sequence decodes at about the bench prediction's pace (the simulator prices the same bytes, dispatches and
     * ops; its attention and output head are its own); four share each weight pass. */
    double t1 = json_number_value(json_object_get(json_object_get(l1, "predicted"), "decode_tok_s"));
    double t4 = json_number_value(json_object_get(json_object_get(l4, "predicted"), "decode_tok_s"));
    CHECK_MSG(t1 > 0.8 * p.tg_tok_s && t1 < 1.05 * p.tg_tok_s, "c=1 %.2f tok/s vs bench prediction %.2f", t1,
              p.tg_tok_s);
    CHECK(t4 > 2.5 * t1);
    double err = json_number_value(json_object_get(json_object_get(l1, "error"), "decode_tok_s"));
    CHECK_NEAR(err, t1 / 32 - 1, 1e-12);
    CHECK_NEAR(json_number_value(json_object_get(l1, "mem_bw_gbs")), 40, 0); /* no level figure: the bench entry's */
    json_decref(serve);

    /* A level that carries the bandwidth bench_serve measured around it is priced with that bandwidth: twice the
     * entry's speeds up its (bandwidth-bound) decode, and the other level keeps the entry's. */
    json_t *sj = json_load_file(ty_test_src("tests/sim/data/engine-serve.json"), 0, NULL);
    CHECK(sj != NULL);
    json_object_set_new(json_array_get(json_object_get(sj, "levels"), 0), "mem_bw_gbs", json_real(80));
    const char *path = ty_test_tmp("serve-bw.json");
    CHECK(json_dump_file(sj, path, 0) == 0);
    json_decref(sj);
    CHECK_OK(ty__sim_predict_serve(cat, mb, ty_test_src("tests/sim/data/engine-bench.jsonl"), path, &serve));
    lv = json_object_get(serve, "levels");
    l1 = json_array_get(lv, 0), l4 = json_array_get(lv, 1);
    CHECK_NEAR(json_number_value(json_object_get(l1, "mem_bw_gbs")), 80, 0);
    CHECK_NEAR(json_number_value(json_object_get(l4, "mem_bw_gbs")), 40, 0);
    double t1_fast = json_number_value(json_object_get(json_object_get(l1, "predicted"), "decode_tok_s"));
    double t4_same = json_number_value(json_object_get(json_object_get(l4, "predicted"), "decode_tok_s"));
    CHECK_MSG(t1_fast > 1.4 * t1, "c=1 at 80 GB/s: %.2f tok/s, at 40: %.2f", t1_fast, t1);
    CHECK_NEAR(t4_same, t4, 1e-9 * t4);
    json_decref(serve);
    ty__sim_catalog_free(cat);
}

static double level_pred(json_t *serve, int i, const char *key) {
    return json_number_value(
        json_object_get(json_object_get(json_array_get(json_object_get(serve, "levels"), i), "predicted"), key));
}

/* bench_serve as the server meets it: the front end's time per request (bench_serve's front_s) is part of every TTFT,
 * and a decode batch costs what bench_kernels measured at its width over the one-row weight stream. */
static void test_serve_front_end_and_narrow_widths(void) {
    struct ty_sim_micro *mb = load_micro(true);
    struct ty_sim_catalog *cat;
    CHECK_OK(ty__sim_catalog_init(false, &cat));
    const char *bench = ty_test_src("tests/sim/data/engine-bench.jsonl");
    json_t *base = NULL, *front = NULL, *narrow = NULL;
    CHECK_OK(ty__sim_predict_serve(cat, mb, bench, ty_test_src("tests/sim/data/engine-serve.json"), &base));
    json_t *sj = json_load_file(ty_test_src("tests/sim/data/engine-serve.json"), 0, NULL);
    CHECK(sj != NULL);
    json_object_set_new(sj, "front_s", json_real(0.01));
    const char *path = ty_test_tmp("serve-front.json");
    CHECK(json_dump_file(sj, path, 0) == 0);
    json_decref(sj);
    CHECK_OK(ty__sim_predict_serve(cat, mb, bench, path, &front));
    CHECK_NEAR(json_number_value(json_object_get(json_object_get(front, "chip"), "front_ms")), 10, 1e-9);
    /* one stream: each request meets an idle server, so the front end adds exactly its time to the TTFT */
    CHECK_NEAR(level_pred(front, 0, "ttft_p50_s") - level_pred(base, 0, "ttft_p50_s"), 0.01, 1e-9);
    /* Q8_0 (packed) measured at 1 and 4 columns too: 4 rows at 20% of the peak take twice one row's 10% */
    struct ty_sim_kernel_eff *e = NULL;
    for (int i = 0; i < mb->n_eff; i++)
        if (!strcmp(mb->eff[i].type, "Q8_0") && mb->eff[i].packed) e = &mb->eff[i];
    CHECK(e != NULL);
    e->pf_n = 3;
    e->pf_gops[0] = e->pf_gops[1] = e->pf_gops[2] = 0; /* shares only */
    e->pf_cols[0] = 1, e->pf_pcts[0] = 10;
    e->pf_cols[1] = 4, e->pf_pcts[1] = 20;
    e->pf_cols[2] = 512, e->pf_pcts[2] = 60;
    CHECK_OK(ty__sim_predict_serve(cat, mb, bench, ty_test_src("tests/sim/data/engine-serve.json"), &narrow));
    double t1 = level_pred(base, 0, "decode_tok_s"), t4 = level_pred(base, 1, "decode_tok_s");
    CHECK_NEAR(level_pred(narrow, 0, "decode_tok_s"), t1, 1e-9 * t1); /* one row: the stream as it was */
    CHECK_MSG(level_pred(narrow, 1, "decode_tok_s") < 0.8 * t4, "c=4: %.2f tok/s vs %.2f without the widths",
              level_pred(narrow, 1, "decode_tok_s"), t4);
    json_decref(narrow);
    /* bench_pool's decode-batch ratios, where it has them, take the place of the narrow gemm widths': a pool that
     * measured 4 rows at the price of one gives back the prediction without the widths */
    struct ty_sim_micro mb2 = *mb;
    json_t *pool = json_load_file(ty_test_src("tests/sim/data/engine-pool.json"), 0, NULL);
    CHECK(pool != NULL);
    json_t *th0 = json_array_get(json_object_get(pool, "threads"), 0);
    json_object_set_new(th0, "decode_batch",
                        json_pack("[{s:i,s:f},{s:i,s:f}]", "rows", 1, "ratio", 1.0, "rows", 4, "ratio", 1.0));
    CHECK_OK(ty__sim_micro_add_json(&mb2, pool, "pool.json"));
    json_decref(pool);
    CHECK(mb2.pool[0].db_n == 2 && mb2.pool[0].db_rows[1] == 4);
    CHECK_OK(ty__sim_predict_serve(cat, &mb2, bench, ty_test_src("tests/sim/data/engine-serve.json"), &narrow));
    CHECK_NEAR(level_pred(narrow, 1, "decode_tok_s"), t4, 1e-9 * t4);
    json_decref(narrow);
    /* The prefill curve is bench_kernels' GOP/s over the simulated chip's peak (the bench entry's int8 800), not the
     * percentage of the peak its own roofline measured: 400 GOP/s at 512 columns is a share of 0.5 (its 60% aside),
     * held below the narrowest prefill width. */
    e->pf_gops[2] = 400;
    CHECK_OK(ty__sim_predict_serve(cat, mb, bench, ty_test_src("tests/sim/data/engine-serve.json"), &narrow));
    CHECK_NEAR(
        json_number_value(json_object_get(json_array_get(json_object_get(narrow, "levels"), 0), "prefill_share")), 0.5,
        1e-12);
    json_decref(base);
    json_decref(front);
    json_decref(narrow);
    ty__sim_catalog_free(cat);
}

void ty_tests(void) {
    TY_RUN(test_micro_files);
    TY_RUN(test_prefill_by_width);
    TY_RUN(test_prediction_by_hand);
    TY_RUN(test_cost_from_gguf);
    TY_RUN(test_against_bench_and_serve);
    TY_RUN(test_serve_front_end_and_narrow_widths);
}
