/*
 * sim.h - the simulator and planner layer: the device catalogue (every figure with its source), model descriptions
 * (presets or a GGUF file's metadata), a per-operator roofline performance model, a discrete-event simulation of a
 * serving cluster, the planner that searches chip x count x parallelism, the training step model, and the calibration
 * path that predicts `tongyun bench` from the host's microbenchmarks.
 *
 * This header is what tools/cmd-devices.c, cmd-sim.c and cmd-plan.c and the tests use; it is internal (ty__ prefix)
 * and never part of include/tongyun.h. Units are stated per field: GB = 1e9 bytes, TFLOPS = 1e12 FLOP/s, times in
 * seconds unless the name says otherwise.
 */
#ifndef TY_SIM_H
#define TY_SIM_H

#include "base/base.h"

#include <jansson.h>

/* ==== Figures and the device catalogue ==== */

/* A catalogue figure: its value, where it comes from, and whether it is an estimate rather than a published number.
 * A value of 0 means "not known" (the source then says why). */
struct ty_sim_fig {
    double v;
    const char *src;
    bool est;
};

enum ty_sim_chip_kind {
    TY_SIM_CHIP_GPU = 0,
    TY_SIM_CHIP_TPU = 1,
    TY_SIM_CHIP_NPU = 2,
    TY_SIM_CHIP_CPU = 3,
    TY_SIM_CHIP_KIND_COUNT
};

struct ty_sim_chip {
    const char *name; /* catalogue key, lower case: "h20", "ppu-810e", "host" */
    const char *desc; /* "NVIDIA H20 96GB (HGX)" */
    enum ty_sim_chip_kind kind;
    /* Published (or estimated) hardware figures. */
    struct ty_sim_fig mem_gb;      /* device memory, GiB: vendors' "GB" of HBM are binary (an "80GB" H100 has 80 GiB) */
    struct ty_sim_fig mem_bw_gbs;  /* memory bandwidth, GB/s */
    struct ty_sim_fig bf16_tflops; /* dense BF16 (the host CPU: measured f32 FMA rate) */
    struct ty_sim_fig fp8_tflops;  /* dense FP8; 0 = no FP8 units (FP8 weights are then dequantised to BF16) */
    struct ty_sim_fig int8_tops;   /* dense INT8 */
    const char *link_name;         /* "NVLink4", "ICN", "ICI", "HCCS", "Infinity Fabric", "none" */
    struct ty_sim_fig link_gbs;    /* chip-to-chip bandwidth per chip, both directions together, GB/s */
    const char *host_link_name;    /* "PCIe 5.0 x16" */
    struct ty_sim_fig host_gbs;    /* host link per direction, GB/s */
    struct ty_sim_fig tdp_w;       /* board power, W */
    struct ty_sim_fig price_hr;    /* USD per card-hour (an assumption unless a list price is cited) */
    int node_chips;                /* chips in the usual server (intra-node link domain) */
    /* Efficiency factors: what fraction of the peak a serving engine's kernels reach, with where that came from. */
    struct ty_sim_fig mfu;           /* large dense GEMMs, fraction of the peak of their precision */
    struct ty_sim_fig mbu;           /* streaming weights (small-batch GEMMs), fraction of mem_bw */
    struct ty_sim_fig attn_mfu;      /* prefill attention (flash attention), fraction of the BF16 peak */
    struct ty_sim_fig attn_mbu;      /* decode attention streaming the KV cache, fraction of mem_bw */
    struct ty_sim_fig tile_m;        /* GEMM tile rows: a batch of M rows costs ceil(M/tile)*tile rows of compute */
    struct ty_sim_fig layer_us;      /* fixed cost per layer per iteration (kernel launches and tails), us */
    struct ty_sim_fig step_ms;       /* fixed cost per engine iteration (scheduler, sampling), ms */
    struct ty_sim_fig link_alpha_us; /* latency of one collective step on the chip-to-chip link, us */
    struct ty_sim_fig mem_util;      /* fraction of device memory the engine may use */
};

struct ty_sim_catalog;

/* The built-in catalogue, plus the host CPU as a chip. With `measure_host` the host is measured now by
 * microbenchmarks (read bandwidth with 1..N threads, f32 FMA rate; about a second); otherwise its figures are 0 and
 * say "not measured". Free with ty__sim_catalog_free(). */
enum ty_status ty__sim_catalog_init(bool measure_host, struct ty_sim_catalog **out);
void ty__sim_catalog_free(struct ty_sim_catalog *cat);
/* Adds the chips of a JSON file (an object with "chips": [...] or an array of chip objects). Each figure is a number
 * or {"value": N, "source": "...", "estimate": bool}; a chip named like a catalogued one replaces it. Errors name the
 * file, the chip and the field. */
enum ty_status ty__sim_catalog_load(struct ty_sim_catalog *cat, const char *path);
int ty__sim_catalog_count(const struct ty_sim_catalog *cat);
const struct ty_sim_chip *ty__sim_catalog_at(const struct ty_sim_catalog *cat, int i);
/* Finds a chip by name (case-insensitive; a few aliases such as "810e" and "zhenwu-810e"). Unknown names fail with
 * TY_ERR_NOT_FOUND and a message listing every known chip. Valid while the catalogue lives. */
enum ty_status ty__sim_catalog_find(const struct ty_sim_catalog *cat, const char *name, const struct ty_sim_chip **out);
/* The catalogue as JSON (every figure as {"value", "source", "estimate"}). New reference. */
json_t *ty__sim_chip_json(const struct ty_sim_chip *c);

/* ==== Host microbenchmarks ==== */

struct ty_sim_host_bench {
    int n_threads;         /* cores used for the best figures */
    double read_bw_gbs;    /* best read bandwidth with 1 or n_threads threads, GB/s */
    double read_bw_1t_gbs; /* single-thread read bandwidth, GB/s */
    double fma_gflops;     /* f32 FMA rate, best of 1 and n_threads threads, GFLOP/s */
    double fma_gflops_1t;  /* single thread */
    double int8_gops;      /* integer dot-product rate of the quantised GEMM's instruction, GOP/s (0 = none) */
    double int8_gops_1t;
    const char *isa; /* the CPU backend's dispatch path that was timed ("avx512vnni"); static string */
    double mem_gb;   /* physical memory, GiB */
    double seconds;  /* time the measurement took */
};
/* Measures the host with the CPU backend's roofline microbenchmarks (chip/cpu/roofline.h), one thread and one per
 * core. `budget_s` bounds the time spent (0 = about 1 s). */
enum ty_status ty__sim_host_measure(double budget_s, struct ty_sim_host_bench *out);

/* ==== Models ==== */

enum ty_sim_attn_kind { TY_SIM_ATTN_GQA = 0, TY_SIM_ATTN_MLA = 1 };

struct ty_sim_model {
    char name[64];
    char source[320]; /* where the configuration comes from */
    char arch[32];    /* "qwen3", "qwen3moe", "qwen3next", ... */
    int n_layer, n_embd, n_vocab, n_ctx_train;
    bool tied; /* lm_head shares token_embd */
    /* attention */
    enum ty_sim_attn_kind attn;
    int n_head, n_head_kv, head_dim, head_dim_v;
    bool attn_gate;                        /* Qwen3-Next/3.5: a sigmoid gate doubles the query projection */
    int q_lora, kv_lora, qk_nope, qk_rope; /* MLA only */
    /* feed-forward */
    int n_ff; /* dense FFN width (dense layers) */
    int n_expert, n_expert_used, n_ff_exp, n_expert_shared, n_ff_shexp;
    int n_dense_lead; /* leading dense layers in an MoE model (DeepSeek: 3) */
    /* hybrid linear attention (Gated DeltaNet): every full_attn_interval-th layer is full attention */
    int full_attn_interval; /* 0 = every layer is full attention */
    int lin_k_heads, lin_v_heads, lin_k_dim, lin_v_dim, lin_conv;
    /* from a GGUF file: average bits per weight of the file's tensors (0 = use the requested precision) */
    double file_weight_bits;
};

/* Every built-in preset name, for help texts: "qwen3-8b, qwen3-30b-a3b, ...". Static string. */
const char *ty__sim_model_presets(void);
int ty__sim_model_preset_count(void);
const struct ty_sim_model *ty__sim_model_preset_at(int i);
/* A preset by name, or a GGUF file (anything ending in .gguf or naming an existing file) read from its metadata
 * (<arch>.* keys: qwen2, qwen3, qwen3moe, qwen3next, qwen35, qwen35moe). Unknown names list the presets. */
enum ty_status ty__sim_model_resolve(const char *name_or_path, struct ty_sim_model *out);
enum ty_status ty__sim_model_from_gguf(const char *path, struct ty_sim_model *out);
/* Checks the description is self-consistent (positive sizes, heads divisible, ...). */
enum ty_status ty__sim_model_validate(const struct ty_sim_model *m);
json_t *ty__sim_model_json(const struct ty_sim_model *m);

/* Parameter counts and per-token cache sizes, derived once. Parameters count multiply-accumulate weights. */
struct ty_sim_model_stats {
    int n_full, n_lin;      /* full-attention and linear-attention layers */
    int n_moe, n_dense;     /* MoE and dense FFN layers */
    double p_attn;          /* one full-attention layer's projections */
    double p_lin;           /* one linear-attention layer's projections */
    double p_ffn;           /* one dense FFN */
    double p_exp;           /* one routed expert */
    double p_shexp;         /* the shared experts of one MoE layer */
    double p_router;        /* one MoE layer's router */
    double p_embd;          /* token embedding */
    double p_head;          /* output projection (counted even when tied: it is computed) */
    double params_total;    /* stored parameters */
    double params_active;   /* per-token parameters (routed experts: n_expert_used of them) */
    double kv_elems_token;  /* KV cache elements per token per full-attention layer (all KV heads) */
    double lin_state_elems; /* recurrent state elements per sequence per linear layer (all heads) */
    double attn_qk_dim;     /* per-head dims that scale attention FLOPs: QK and PV */
    double attn_pv_dim;
};
void ty__sim_model_stats(const struct ty_sim_model *m, struct ty_sim_model_stats *out);

/* ==== Precision ==== */

enum ty_sim_dtype {
    TY_SIM_DT_F32 = 0,
    TY_SIM_DT_BF16 = 1,
    TY_SIM_DT_FP8 = 2,
    TY_SIM_DT_INT8 = 3,
    TY_SIM_DT_INT4 = 4,
    TY_SIM_DT_COUNT
};
const char *ty__sim_dtype_name(enum ty_sim_dtype d);
bool ty__sim_dtype_parse(const char *s, enum ty_sim_dtype *out);
double ty__sim_dtype_bytes(enum ty_sim_dtype d); /* storage bytes per element, group scales included */

/* ==== Serving configuration ==== */

enum ty_sim_dist_kind {
    TY_SIM_DIST_FIXED = 0,
    TY_SIM_DIST_UNIFORM = 1,
    TY_SIM_DIST_LOGNORMAL = 2,
    TY_SIM_DIST_EXP = 3
};
struct ty_sim_dist {
    enum ty_sim_dist_kind kind;
    double a, b; /* fixed: a; uniform: [a, b]; lognormal: mean a, coefficient of variation b; exp: mean a */
};
/* Parses "N" (fixed), "A-B" (uniform), "lognormal:MEAN:CV" or "exp:MEAN". */
enum ty_status ty__sim_dist_parse(const char *s, struct ty_sim_dist *out);
double ty__sim_dist_mean(const struct ty_sim_dist *d);

/* A request of a workload: arrival time (s), prompt and output tokens. */
struct ty_sim_req_spec {
    double arrival;
    int32_t prompt, output;
};

/* A trace: requests read from CSV (arrival_s,prompt_tokens,output_tokens; header optional) or JSONL
 * ({"arrival": s, "prompt_tokens": n, "output_tokens": m}; "timestamp"/"input_len"/"output_len" accepted too). */
struct ty_sim_trace {
    struct ty_sim_req_spec *reqs; /* (n) sorted by arrival */
    int64_t n;
};
/* Parses a trace from memory; errors name the line and the field. `name` labels messages (the file name). */
enum ty_status ty__sim_trace_parse(const char *data, size_t size, const char *name, struct ty_sim_trace *out);
enum ty_status ty__sim_trace_load(const char *path, struct ty_sim_trace *out);
void ty__sim_trace_free(struct ty_sim_trace *t);

struct ty_sim_workload {
    double rate;        /* Poisson arrivals per second (ignored with a trace) */
    int64_t n_requests; /* requests to simulate (a trace: its length when 0) */
    struct ty_sim_dist prompt, output;
    uint64_t seed;
    const struct ty_sim_trace *trace; /* borrowed, may be NULL */
    int users; /* > 0: a closed loop of this many clients, as a load generator such as bench/bench_serve runs one: each
                  sends its first request at time 0 and its next one the moment its previous one completes, until
                  n_requests have been sent (rate is then ignored; a trace gives the lengths, in order) */
    double ramp_s; /* closed loop: client i sends its first request at i x ramp_s (a load generator's ramp-up) */
};

/* GEMM widths of a measured efficiency curve (ty_sim_config.gemm_rows). Widths below TY_SIM_GEMM_STREAM_ROWS are
 * decode batches, whose products stream the weights: their time is priced as the one-row stream's times the ratio
 * measured at that width (so it follows the bandwidth of the moment); wider ones as a share of the peak. */
#define TY_SIM_GEMM_MAX         12
#define TY_SIM_GEMM_STREAM_ROWS 32

struct ty_sim_config {
    const struct ty_sim_chip *chip;   /* borrowed */
    const struct ty_sim_model *model; /* borrowed */
    int chips;                        /* total chips */
    int chips_per_node;               /* 0 = the chip's usual node */
    int tp, pp, ep, dp;               /* dp 0 = chips / (max(tp, ep) * pp) */
    const char *intra_link;           /* "nvlink", "icn", "pcie" or NULL (the chip's own link) */
    double intra_gbs;                 /* intra-node bandwidth per chip, both directions; 0 = from the link */
    double inter_gbps;                /* inter-node network per chip, Gb/s (RoCE/IB); 0 = 400 */
    double inter_alpha_us;            /* inter-node latency per collective step; 0 = 10 us */
    enum ty_sim_dtype weight, act, kv;
    int max_batch_tokens; /* prompt tokens per iteration (decodes come on top); 0 = 8192 (CPU: 256) */
    int prefill_chunk;    /* most prompt tokens of one sequence per iteration, chunks ending on multiples of it;
                             0 = max_batch_tokens (CPU: 64, our server's default) */
    int max_seqs;         /* running sequences per instance; 0 = 256 (CPU: 8, our server's default) */
    int disagg_prefill;   /* prefill-only instances (prefill/decode disaggregation); 0 = colocated */
    double price_hr;      /* USD per card-hour; 0 = the catalogue's */
    double slo_ttft_ms, slo_tpot_ms; /* goodput SLOs; 0 = 2000 / 100 */
    double moe_skew;                 /* coefficient of variation of expert popularity; <0 = default 0.3 */
    double mem_util;                 /* 0 = the catalogue's */
    double idle_power_frac;          /* idle power as a fraction of TDP; 0 = 0.3 */
    bool step_by_step;               /* testing: one event per iteration, no macro steps (same results, slower) */
    /* What a request meets before the scheduler: a front end that handles one request at a time for front_s seconds
     * (our server: HTTP parsing and tokenising on its one event-loop thread), so requests sent together reach the
     * scheduler one after another and the first may start its prefill alone. Counted in TTFT. 0 = none. */
    double front_s;
    /* Costs measured on our own CPU engine (engine-calib.c); zero for the catalogue's chips. */
    double dec_layer_us; /* per layer and decoding sequence: the ops outside the matrix products (norms, RoPE, the KV
                            copy, attention over a short context), which a batch pays once per sequence */
    int gemm_n;          /* GEMM speed measured by width (rows of the batch), ascending: */
    double gemm_rows[TY_SIM_GEMM_MAX], gemm_share[TY_SIM_GEMM_MAX]; /* share of the chip's peak at each width */
    int dec_n; /* a decode batch's products measured directly (bench_pool): time at dec_rows rows over one row's,
                  ascending from one row; used for the stream widths in place of the ratios gemm_share implies */
    double dec_rows[TY_SIM_GEMM_MAX], dec_ratio[TY_SIM_GEMM_MAX];
};
/* Fills defaults (the values documented as "0 = ..." above). */
void ty__sim_config_defaults(struct ty_sim_config *c);

/* The layout that follows from a configuration: instances, memory per chip, KV capacity. */
struct ty_sim_layout {
    int inst_chips;     /* chips per serving instance: max(tp, ep) * pp */
    int n_inst;         /* instances (data-parallel replicas) */
    int n_prefill_inst; /* of which prefill-only (disaggregation) */
    int attn_groups;    /* data-parallel attention groups inside an instance (ep > tp) */
    int nodes;
    double weight_bytes_chip; /* weights held per chip (worst pipeline stage) */
    double act_bytes_chip;    /* activation reserve per chip */
    double usable_bytes_chip;
    double kv_bytes_token;  /* KV bytes per token per chip */
    double state_bytes_seq; /* recurrent state bytes per sequence per chip */
    double kv_cap_bytes;    /* per engine (one pipeline virtual engine of one instance), in chip-shard bytes */
    double kv_cap_tokens;   /* kv_cap_bytes / kv_bytes_token (no recurrent state counted) */
    int engines_per_inst;   /* pipeline virtual engines: pp */
};
/* Checks the configuration and derives its layout. Impossible configurations fail with TY_ERR_INVALID_ARG and a
 * message naming the constraint: TP not dividing the heads, EP not dividing the experts, the model not fitting,... */
enum ty_status ty__sim_layout(const struct ty_sim_config *c, struct ty_sim_layout *out);

/* ==== Performance model ==== */

/* One engine iteration's work, on one instance. */
struct ty_sim_batch {
    double n_pf_tok;     /* prompt tokens computed this iteration (chunks) */
    double pf_attn_work; /* sum over chunks of c * (p + (c + 1) / 2): query-key pairs of causal prefill attention */
    double n_pf_seq;     /* sequences with a chunk this iteration */
    double n_dec;        /* sequences decoding one token */
    double dec_ctx;      /* sum of their context lengths */
    double n_logits;     /* rows of the output projection (decodes + prompts finishing) */
};

/* Where the time of one iteration goes, s. */
struct ty_sim_breakdown {
    double gemm, attn_pf, attn_dec, lin_attn, moe, comm, lm_head, fixed, total;
};

struct ty_sim_perf; /* per-configuration coefficients; tables filled lazily */
enum ty_status ty__sim_perf_init(const struct ty_sim_config *c, const struct ty_sim_layout *l,
                                 struct ty_sim_perf **out);
void ty__sim_perf_free(struct ty_sim_perf *p);
/* Wall time of one iteration of a pipeline virtual engine (all pipeline stages), s. */
double ty__sim_step_time(struct ty_sim_perf *p, const struct ty_sim_batch *b, struct ty_sim_breakdown *bd);
/* What a GEMM of `rows` rows costs over a one-row weight stream under the configuration's measured curve
 * (ty_sim_config.gemm_rows; 1 without one, or for rows at or below its narrowest width). */
double ty__sim_gemm_stream_ratio(const struct ty_sim_config *c, double rows);
/* The share of the peak a GEMM of `rows` rows reaches under the configuration (its measured curve, else the chip's
 * MFU). */
double ty__sim_gemm_share(const struct ty_sim_config *c, double rows);
/* Decode-only iterations are affine in the summed context: t = c0 + c1 * dec_ctx. */
void ty__sim_decode_affine(struct ty_sim_perf *p, double n_dec, double *c0, double *c1);

/* ==== Simulation ==== */

struct ty_sim_pct {
    double mean, p50, p90, p99;
    double min; /* the smallest (the request that waited least) */
};

struct ty_sim_result {
    int64_t n_requests;
    double duration_s; /* first arrival to last completion */
    double in_tokens, out_tokens;
    struct ty_sim_pct ttft_ms, tpot_ms, e2e_ms;
    double throughput_tok_s; /* output tokens per second */
    double total_tok_s;      /* prompt + output tokens per second */
    double prefill_tok_s_per_chip, decode_tok_s_per_chip;
    double request_rps;
    double goodput_rps;           /* requests meeting both SLOs per second */
    double slo_attainment;        /* fraction meeting both SLOs */
    double kv_util, kv_util_peak; /* time-averaged and peak fraction of KV capacity holding tokens */
    double busy_frac;             /* fraction of instance time spent computing */
    double cost_per_mtok;         /* USD per million output tokens */
    double cost_per_mtok_total;   /* USD per million prompt + output tokens */
    double energy_j_per_tok;      /* J per output token */
    double mean_batch;            /* mean sequences per iteration */
    int64_t iterations, events;
    double sim_seconds; /* wall time of the simulation itself */
};

enum ty_status ty__sim_run(const struct ty_sim_config *c, const struct ty_sim_workload *w, struct ty_sim_result *out);
json_t *ty__sim_result_json(const struct ty_sim_config *c, const struct ty_sim_layout *l,
                            const struct ty_sim_result *r);
json_t *ty__sim_config_json(const struct ty_sim_config *c, const struct ty_sim_layout *l);

/* Latency against load: runs the workload at each rate and writes an SVG chart of TTFT and TPOT p50/p99. */
struct ty_sim_sweep_point {
    double rate;
    struct ty_sim_result r;
};
enum ty_status ty__sim_sweep(const struct ty_sim_config *c, const struct ty_sim_workload *w, const double *rates,
                             int n_rates, struct ty_sim_sweep_point *out);
enum ty_status ty__sim_sweep_svg(const struct ty_sim_config *c, const struct ty_sim_sweep_point *pts, int n,
                                 const char *path);

/* ==== Planner ==== */

struct ty_sim_plan_query {
    const struct ty_sim_model *model;
    double rate; /* requests per second to serve */
    double slo_ttft_ms, slo_tpot_ms;
    struct ty_sim_dist prompt, output;
    const struct ty_sim_chip **chips; /* candidates (borrowed) */
    int n_chips;
    enum ty_sim_dtype weight; /* BF16 by default */
    int max_chips;            /* cap on a configuration's total chips; 0 = 10000 */
    int requests;             /* requests per probe simulation; 0 = 300 */
    uint64_t seed;
};

struct ty_sim_plan_entry {
    const struct ty_sim_chip *chip;
    int tp, pp, ep;
    enum ty_sim_dtype weight;
    int inst_chips, n_inst, chips;
    double rate_per_inst;  /* highest rate one instance serves within the SLOs */
    double cost_hr;        /* USD per hour for the whole deployment */
    double tok_s_per_chip; /* output tokens per second per chip at that rate */
    double user_tok_s;     /* per-user decode speed, 1000 / TPOT p50 */
    double ttft_p99_ms, tpot_p99_ms;
    bool pareto; /* on the front of throughput per chip against per-user speed */
};

struct ty_sim_plan {
    struct ty_sim_plan_entry *e; /* (n) ranked by cost, cheapest first */
    int n;
    int n_tried;    /* configurations examined */
    int n_rejected; /* impossible (memory, divisibility) */
};
enum ty_status ty__sim_plan_search(const struct ty_sim_plan_query *q, struct ty_sim_plan *out);
void ty__sim_plan_free(struct ty_sim_plan *p);

/* ==== Training ==== */

struct ty_sim_train_config {
    const struct ty_sim_chip *chip;
    const struct ty_sim_model *model;
    int chips, chips_per_node;
    int tp, pp, dp;   /* dp 0 = chips / (tp * pp) */
    int zero;         /* ZeRO stage 0..3 */
    int global_batch; /* sequences per optimizer step */
    int micro_batch;  /* sequences per micro-batch */
    int seq_len;
    bool recompute;    /* full activation recomputation */
    double inter_gbps; /* 0 = 400 */
};

struct ty_sim_train_result {
    double step_s, tokens_per_s, mfu;
    double t_compute, t_bubble, t_tp_comm, t_dp_comm, t_pp_comm; /* s per step (exposed) */
    double mem_params_gb, mem_grads_gb, mem_optim_gb, mem_act_gb, mem_total_gb, mem_cap_gb;
    double flops_per_token; /* model FLOPs (6N + attention), no recomputation */
    int n_micro;
};
enum ty_status ty__sim_train(const struct ty_sim_train_config *c, struct ty_sim_train_result *out);
json_t *ty__sim_train_json(const struct ty_sim_train_config *c, const struct ty_sim_train_result *r);

/* ==== Calibration against our own engine ==== */

/* Predicts `tongyun bench` on the host from microbenchmarks only: prompt-processing and generation tokens/s for a
 * model whose weights take `weight_bits` bits each (the file's average; Q4_K_M ~4.9, Q8_0 8.5, F16 16). */
struct ty_sim_bench_pred {
    double pp_tok_s, tg_tok_s, mem_bw_gbs;
    double tg_bytes_per_tok; /* bytes streamed per generated token */
    double pp_flops_per_tok;
};
/* n_depth: tokens already cached when the tests start (`tongyun bench -d`): attention and KV reads grow by it. */
enum ty_status ty__sim_predict_bench(const struct ty_sim_host_bench *hb, const struct ty_sim_model *m,
                                     double weight_bits, int n_prompt, int n_gen, int n_depth, int n_threads,
                                     struct ty_sim_bench_pred *out);
/* Compares a `tongyun bench --json` output (an object or array of objects with pp_tok_s, tg_tok_s, mem_bw_gbs and the
 * model) with predictions from `hb`; returns a JSON array of {model, type, measured, predicted, error}. */
enum ty_status ty__sim_calibrate(const struct ty_sim_host_bench *hb, const char *bench_json_path, json_t **out);

/* ==== Calibration from the engine's own microbenchmarks (engine-calib.c) ==== */

#define TY_SIM_MICRO_MAX_COLS 8 /* prefill column counts per kernel figure */

/* One weight type (or llama.cpp mix label) at one thread count, from `bench_kernels --json`. */
struct ty_sim_kernel_eff {
    char type[16]; /* "Q8_0", "Q4_K_M", "BF16" */
    char act[8];   /* activation format of its kernels: "q8", "q8_K", "bf16", "f32" */
    char isa[24];  /* the dispatch path bench_kernels ran */
    bool packed;   /* weights repacked into panels, as the engine does at load for the types that have it */
    int threads;
    double dec_s;        /* one gemv pass over every weight matrix of Qwen2.5-0.5B ("model"), a pool dispatch
                            per matrix, best, s */
    double dec_bytes;    /* weight bytes of that pass */
    double dec_read_gbs; /* plain reads of the same memory with the same split, GB/s */
    double pf_pct;       /* prefill gemm over the most --prefill columns run: % of the peak named below (0 = not
                            run) */
    char pf_peak[8];     /* "int8", "bf16" or "fma" */
    int pf_n;            /* prefill figures by column count (bench_kernels --prefill 32,128,512), ascending */
    double pf_cols[TY_SIM_MICRO_MAX_COLS], pf_pcts[TY_SIM_MICRO_MAX_COLS];
    double pf_gops[TY_SIM_MICRO_MAX_COLS]; /* the same as GOP/s (0 where the file has none) */
};

/* The prefill gemm's % of its peak at `cols` columns: interpolated in log(cols) between the column counts measured,
 * held at the nearest one outside them; pf_pct where only one was measured. */
double ty__sim_kernel_pf_pct(const struct ty_sim_kernel_eff *e, double cols);

/* The costs outside the matrix products at one thread count, from `bench_pool --json`. */
struct ty_sim_pool_cost {
    int threads;
    double run_us, any_us; /* one empty ty__threadpool_run / ty__threadpool_run_any */
    double layer_dec_us;   /* non-matmul ops of one layer for one decode token at the measured context */
    double layer_pf_us;    /* the same per prompt token of a prefill of the measured length */
    int db_n;              /* decode batches: the backend's product at db_rows columns over one column's time */
    double db_rows[8], db_ratio[8];
};

#define TY_SIM_MICRO_MAX_EFF  128
#define TY_SIM_MICRO_MAX_POOL 8

struct ty_sim_micro {
    int n_eff, n_pool;
    struct ty_sim_kernel_eff eff[TY_SIM_MICRO_MAX_EFF];
    struct ty_sim_pool_cost pool[TY_SIM_MICRO_MAX_POOL];
    int pool_embd, pool_heads, pool_kv_heads, pool_head_dim, pool_ctx, pool_prefill; /* what bench_pool timed */
};
/* Adds the figures of one microbenchmark output (bench_kernels or bench_pool JSON, told apart by content) to mb
 * (zero it first). `what` names the input in errors. */
enum ty_status ty__sim_micro_add_json(struct ty_sim_micro *mb, json_t *root, const char *what);
/* The same from a file. */
enum ty_status ty__sim_micro_add_file(struct ty_sim_micro *mb, const char *path);

/* What a bench entry measured of the machine in its own process (chip/cpu/roofline.c). */
struct ty_sim_roof {
    int threads;
    double bw_gbs, fma_gflops, int8_gops, bf16_gflops;
};

/* A dense model's per-token work as the engine's forward pass does it (src/model/qwen.c). */
struct ty_sim_engine_cost {
    int n_layer;
    int64_t n_embd;
    double layer_bytes;                /* every layer's weight matrices, as stored */
    double layer_flops[TY_TYPE_COUNT]; /* their FLOPs per token (2 per multiply-add), by weight type */
    double head_bytes, head_flops;     /* the output matrix (the embedding when tied) */
};
/* From a GGUF file's tensors. TY_ERR_UNSUPPORTED for a mixture of experts or a hybrid model. */
enum ty_status ty__sim_engine_cost_gguf(const char *path, struct ty_sim_engine_cost *out);
/* From a preset with every matrix of type t. */
enum ty_status ty__sim_engine_cost_preset(const struct ty_sim_model *m, enum ty_type t, struct ty_sim_engine_cost *out);

/* Thread-pool dispatches of one forward pass per layer (qkv, output projection, gate+up, down) and after the layers
 * (the output head); attention's own dispatch is inside bench_pool's layer figure. */
#define TY_SIM_ENGINE_PRODUCTS_PER_LAYER 4

struct ty_sim_engine_pred {
    double tg_tok_s, pp_tok_s;
    double tg_weights_s, tg_ops_s;          /* per generated token */
    double pp_gemm_s, pp_ops_s, pp_fixed_s; /* per prompt token (fixed: dispatches and the head, shared) */
    double dec_eff;                         /* gemv speed / plain reads of the same memory (at most 1) */
    double pf_rate_gops;                    /* the layers' effective prefill rate */
    bool clamped;        /* a measured share above 1 was held to 1 (its reference measurement was disturbed) */
    double pf_peak_gops; /* the peak it is a share of (the type holding most FLOPs) */
};
/* Predicts `tongyun bench` (pp n_prompt, tg n_gen) of a model with cost c and weight-type label `type` from the
 * microbenchmarks mb and the roofline the bench entry measured; nothing of the bench's speeds is read. Errors name the
 * missing microbenchmark and the command that makes it. */
enum ty_status ty__sim_predict_engine(const struct ty_sim_micro *mb, const struct ty_sim_roof *roof, const char *type,
                                      const struct ty_sim_engine_cost *c, int n_prompt, int n_gen,
                                      struct ty_sim_engine_pred *out);
/* Every entry of a `tongyun bench --json` output predicted from mb and compared: a JSON array of {model, type,
 * threads, measured, predicted, error, breakdown}. */
enum ty_status ty__sim_calibrate_engine(const struct ty_sim_micro *mb, const char *bench_path, json_t **out);
/* `bench_serve --json` predicted by the discrete-event simulation: each concurrency level as a closed loop of that
 * many clients (the requests' mean prompt and output lengths, from the same JSON) behind the server's front end
 * (bench_serve's front_s), on one host engine whose figures come from the microbenchmarks (bench_kernels' gemm at
 * each width, bench_pool's layer ops) and the bench entry of the same model with the most threads (the server's
 * thread count). A JSON object {levels: [{concurrency, measured, predicted, error}], chip: {...}}. */
enum ty_status ty__sim_predict_serve(const struct ty_sim_catalog *cat, const struct ty_sim_micro *mb,
                                     const char *bench_path, const char *serve_path, json_t **out);

/* ==== Validation report ==== */

/* Writes docs/sim-validation.md: the published points (each prediction against its figure), the scale benchmark
 * (run and timed here when `run_scale`), the bad-input checks and the calibration against our engine. `bench_json`
 * (may be NULL) adds the comparison with a `tongyun bench --json` run. `cat` must have the host measured. */
struct ty_sim_engine_inputs {
    const char *bench_json; /* `tongyun bench --json` output (JSON Lines), or NULL */
    const char *micro[8];   /* bench_kernels / bench_pool JSON outputs */
    int n_micro;
    const char *serve_json; /* `bench_serve --json` output, or NULL */
    const char *notes;      /* how the script ran them (reps, durations), or NULL */
};
enum ty_status ty__sim_validation_report(const struct ty_sim_catalog *cat, const char *out_path,
                                         const struct ty_sim_engine_inputs *eng, bool run_scale);
/* Section 1 of the report (our own engine) into b; failures are written into the text, never returned. */
void ty__sim_engine_report(const struct ty_sim_catalog *cat, const struct ty_sim_engine_inputs *eng, struct ty_buf *b);
/* The host's measured figures, or NULL when the catalogue was made without measuring. */
const struct ty_sim_host_bench *ty__sim_catalog_host(const struct ty_sim_catalog *cat);

/* One published point: what was measured, where it was published, and the simulator's prediction under the stated
 * assumptions. Used by the report and by tests/sim/test_sim.c. */
struct ty_sim_published {
    const char *id;     /* "infersim-qwen3-30b-a3b-decode" */
    const char *what;   /* "Qwen3-30B-A3B BF16, H20, decode tokens/GPU/s" */
    const char *source; /* the publication */
    const char *assumptions;
    double published;
    double tolerance; /* fraction, e.g. 0.20 */
    bool asserted;    /* a test holds the prediction to the tolerance; false = reported, known to miss */
};
int ty__sim_published_count(void);
const struct ty_sim_published *ty__sim_published_at(int i);
/* Computes the simulator's prediction of published point i. */
enum ty_status ty__sim_published_predict(const struct ty_sim_catalog *cat, int i, double *pred);

/* The scale scenario (evidence 3): 10,000 H20 chips serving 1,000,000 requests of Qwen3-8B (FP8, TP 1), Poisson
 * arrivals at 30,000 req/s, lognormal prompts (mean 1024) and outputs (mean 256). `m` receives the model the
 * configuration points at. */
enum ty_status ty__sim_scale_scenario(const struct ty_sim_catalog *cat, struct ty_sim_model *m, struct ty_sim_config *c,
                                      struct ty_sim_workload *w);

#endif /* TY_SIM_H */
