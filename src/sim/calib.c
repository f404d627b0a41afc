/*
 * calib.c - the calibration path against our own engine: predicting what `tongyun bench` will measure on this
 * machine from the host microbenchmarks alone (read bandwidth, FMA rate), and comparing those predictions with a
 * bench run's JSON. The predictions never look at the measurement they are compared with.
 *
 * Generation (tg) streams every weight the token touches once (all layers, the active experts, the output head, one
 * embedding row) plus the KV cache, so its time is bytes / (read bandwidth x MBU), or the FLOPs when those dominate.
 * Prompt processing (pp) is compute-bound: 2 x active parameters per token at the rate of the GEMM's instruction
 * (the integer dot product for quantised weights, f32 FMA for 16/32-bit ones) x MFU, causal attention FLOPs at the
 * FMA rate, plus one pass over the weights per batch of 512 tokens. MFU and MBU are the host chip's labelled
 * assumptions (sim-impl.h): this is the path for a host measured only at start-up. The validation against our engine
 * predicts from the engine's own kernel and thread-pool microbenchmarks instead (engine-calib.c).
 */
#include "sim/sim.h"
#include "sim/sim-impl.h"

#include "model/quant.h"

#include <math.h>
#include <stdio.h>
#include <strings.h>

#define PP_BATCH 512 /* tokens per forward pass in prompt processing (the engine's default n_batch) */
#define KV_BYTES 2   /* f16 KV cache, the engine's default */

enum ty_status ty__sim_predict_bench(const struct ty_sim_host_bench *hb, const struct ty_sim_model *m,
                                     double weight_bits, int n_prompt, int n_gen, int n_depth, int n_threads,
                                     struct ty_sim_bench_pred *out) {
    memset(out, 0, sizeof *out);
    TY_TRY(ty__sim_model_validate(m));
    if (!(hb->read_bw_gbs > 0) || !(hb->fma_gflops > 0))
        return ty__error(TY_ERR_INVALID_ARG, "the host has not been measured (bandwidth and FMA rate are 0)");
    if (!(weight_bits > 0) || weight_bits > 64)
        return ty__error(TY_ERR_INVALID_ARG, "weight bits %g out of range", weight_bits);
    if (n_prompt < 1) n_prompt = 512;
    if (n_gen < 1) n_gen = 128;
    if (n_depth < 0) return ty__error(TY_ERR_INVALID_ARG, "context depth %d is negative", n_depth);
    int th = n_threads > 0 && n_threads < hb->n_threads ? n_threads : hb->n_threads;
    double bw = hb->read_bw_1t_gbs * th < hb->read_bw_gbs ? hb->read_bw_1t_gbs * th : hb->read_bw_gbs;
    double fma = hb->fma_gflops_1t * th < hb->fma_gflops ? hb->fma_gflops_1t * th : hb->fma_gflops;
    /* Quantised weights meet int8-quantised activations in the integer dot product; 16/32-bit weights run in f32. */
    double i8 = hb->int8_gops_1t * th < hb->int8_gops ? hb->int8_gops_1t * th : hb->int8_gops;
    double gemm_rate = weight_bits < 15 && i8 > 0 ? i8 : fma;
    bw *= 1e9;
    fma *= 1e9;
    gemm_rate *= 1e9;
    struct ty_sim_model_stats s;
    ty__sim_model_stats(m, &s);
    /* Weights a token reads: the active matrices and the output head (the embedding table when tied); one row of
     * the embedding, which is negligible. */
    double matrices = s.params_active - s.p_embd - (m->tied ? 0 : s.p_head) + s.p_head;
    double wbytes = matrices * weight_bits / 8;
    double kv_tok = s.n_full * s.kv_elems_token * KV_BYTES;
    double layers_s = m->n_layer * TY_SIM_HOST_LAYER_US * 1e-6;
    /* Generation. */
    double ctx = n_depth + n_prompt + n_gen / 2.0;
    double tg_bytes = wbytes + ctx * kv_tok + (m->full_attn_interval > 1 ? s.n_lin * s.lin_state_elems * 4 * 2 : 0);
    double tg_flops = 2 * matrices + 2 * (s.attn_qk_dim + s.attn_pv_dim) * m->n_head * s.n_full * ctx;
    double t_tg_m = tg_bytes / (bw * TY_SIM_HOST_MBU), t_tg_c = tg_flops / (gemm_rate * TY_SIM_HOST_MFU);
    double t_tg = (t_tg_m > t_tg_c ? t_tg_m : t_tg_c) + layers_s;
    /* Prompt processing. */
    double attn_pairs = n_depth + (n_prompt + 1) / 2.0;
    double pp_gemm = 2 * matrices, pp_attn = 2 * (s.attn_qk_dim + s.attn_pv_dim) * m->n_head * s.n_full * attn_pairs;
    double batch = n_prompt < PP_BATCH ? n_prompt : PP_BATCH;
    double t_pp = pp_gemm / (gemm_rate * TY_SIM_HOST_MFU) + pp_attn / (fma * TY_SIM_HOST_ATTN_MFU) +
                  (wbytes / (bw * TY_SIM_HOST_MBU) + layers_s) / batch;
    out->tg_tok_s = 1 / t_tg;
    out->pp_tok_s = 1 / t_pp;
    out->mem_bw_gbs = bw / 1e9;
    out->tg_bytes_per_tok = tg_bytes;
    out->pp_flops_per_tok = pp_gemm + pp_attn;
    return TY_OK;
}

/* ==== Comparing with a bench run ==== */

static json_t *get_any(json_t *o, const char *const *keys) {
    for (; *keys; keys++) {
        json_t *v = json_object_get(o, *keys);
        if (v) return v;
    }
    return NULL;
}

static double num(json_t *o, const char *const *keys, double dflt) {
    json_t *v = get_any(o, keys);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

static json_t *err_json(double pred, double meas) {
    return pred > 0 && meas > 0 ? json_real(pred / meas - 1) : json_null();
}

static enum ty_status one_entry(const struct ty_sim_host_bench *hb, const char *path, json_t *e, size_t idx,
                                json_t *rows) {
    static const char *const k_model[] = {"model", "model_path", "file", NULL};
    static const char *const k_type[] = {"type", "weight_type", "ftype", "quant", NULL};
    static const char *const k_pp[] = {"pp_tok_s", "prompt_tok_s", NULL};
    static const char *const k_tg[] = {"tg_tok_s", "gen_tok_s", NULL};
    static const char *const k_bw[] = {"mem_bw_gbs", "bandwidth_gbs", NULL};
    static const char *const k_np[] = {"n_prompt", "pp", "prompt_tokens", NULL};
    static const char *const k_ng[] = {"n_gen", "tg", "gen_tokens", NULL};
    static const char *const k_nd[] = {"n_depth", NULL};
    static const char *const k_th[] = {"threads", "n_threads", NULL};
    if (!json_is_object(e)) return ty__error(TY_ERR_FORMAT, "%s: entry %zu is not an object", path, idx + 1);
    json_t *jm = get_any(e, k_model);
    if (!json_is_string(jm)) return ty__error(TY_ERR_FORMAT, "%s: entry %zu has no \"model\"", path, idx + 1);
    struct ty_sim_model m;
    TY_TRY(ty__sim_model_resolve(json_string_value(jm), &m));
    double bits = m.file_weight_bits;
    json_t *jt = get_any(e, k_type);
    const char *type = json_is_string(jt) ? json_string_value(jt) : NULL;
    if (!(bits > 0)) {
        enum ty_type t;
        const struct ty_type_traits *tr = type && ty__type_from_name(type, &t) ? ty__type_traits(t) : NULL;
        if (!tr)
            return ty__error(TY_ERR_FORMAT,
                             "%s: entry %zu: model '%s' is a preset, so its weight \"type\" is needed "
                             "(Q8_0, Q4_K, F16, ...)",
                             path, idx + 1, json_string_value(jm));
        bits = (double)tr->type_size * 8 / (double)tr->block_size;
    }
    /* `tongyun bench` measures the roofline microbenchmarks in the same process just before the model runs: where
     * the entry carries them, they describe the machine at that moment better than a measurement taken at the
     * simulator's start-up, and they are still microbenchmarks, not the speeds being predicted. */
    static const char *const k_fma[] = {"fma_gflops", NULL};
    static const char *const k_i8[] = {"int8_gops", NULL};
    struct ty_sim_host_bench here = *hb;
    int threads = (int)num(e, k_th, 0);
    bool own = threads > 0 && num(e, k_bw, 0) > 0 && num(e, k_fma, 0) > 0;
    if (own) {
        here.n_threads = threads;
        here.read_bw_gbs = here.read_bw_1t_gbs = num(e, k_bw, 0);
        here.fma_gflops = here.fma_gflops_1t = num(e, k_fma, 0);
        here.int8_gops = here.int8_gops_1t = num(e, k_i8, 0);
    }
    struct ty_sim_bench_pred p;
    TY_TRY(ty__sim_predict_bench(&here, &m, bits, (int)num(e, k_np, 512), (int)num(e, k_ng, 128), (int)num(e, k_nd, 0),
                                 threads, &p));
    double mpp = num(e, k_pp, 0), mtg = num(e, k_tg, 0), mbw = num(e, k_bw, 0);
    json_t *row = json_object();
    json_object_set_new(row, "model", json_string(m.name));
    json_object_set_new(row, "type", json_string(type ? type : "file"));
    json_object_set_new(row, "weight_bits", json_real(bits));
    json_object_set_new(row, "threads", json_integer(threads > 0 ? threads : hb->n_threads));
    json_object_set_new(row, "host_figures", json_string(own ? "the bench run's own microbenchmarks" : "sim start-up"));
    json_t *meas = json_object(), *pred = json_object(), *err = json_object();
    json_object_set_new(meas, "pp_tok_s", mpp > 0 ? json_real(mpp) : json_null());
    json_object_set_new(meas, "tg_tok_s", mtg > 0 ? json_real(mtg) : json_null());
    json_object_set_new(meas, "mem_bw_gbs", mbw > 0 ? json_real(mbw) : json_null());
    json_object_set_new(pred, "pp_tok_s", json_real(p.pp_tok_s));
    json_object_set_new(pred, "tg_tok_s", json_real(p.tg_tok_s));
    json_object_set_new(pred, "mem_bw_gbs", json_real(p.mem_bw_gbs));
    json_object_set_new(err, "pp_tok_s", err_json(p.pp_tok_s, mpp));
    json_object_set_new(err, "tg_tok_s", err_json(p.tg_tok_s, mtg));
    json_object_set_new(err, "mem_bw_gbs", err_json(p.mem_bw_gbs, mbw));
    json_object_set_new(row, "measured", meas);
    json_object_set_new(row, "predicted", pred);
    json_object_set_new(row, "error", err);
    json_array_append_new(rows, row);
    return TY_OK;
}

/* JSON Lines as one array; NULL (jerr set, with the file's line number) when a non-blank line is not JSON. */
static json_t *json_lines(const char *text, size_t size, json_error_t *jerr) {
    json_t *arr = json_array();
    int line_no = 0;
    for (size_t i = 0; i < size;) {
        const char *nl = memchr(text + i, '\n', size - i);
        size_t end = nl ? (size_t)(nl - text) : size;
        line_no++;
        size_t j = i;
        while (j < end && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r')) j++;
        if (j < end) {
            json_t *v = json_loadb(text + j, end - j, 0, jerr);
            if (!v) {
                jerr->line = line_no;
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, v);
        }
        i = end + 1;
    }
    return arr;
}

enum ty_status ty__sim_calibrate(const struct ty_sim_host_bench *hb, const char *path, json_t **out) {
    *out = NULL;
    char *text = NULL;
    size_t size = 0;
    TY_TRY(ty__file_read(path, 64u << 20, &text, &size));
    json_error_t jerr;
    json_t *root = json_loadb(text, size, 0, &jerr);
    if (!root) root = json_lines(text, size, &jerr); /* `tongyun bench --json` writes one object per line */
    ty_free(text);
    if (!root) return ty__error(TY_ERR_FORMAT, "%s: line %d: %s", path, jerr.line, jerr.text);
    json_t *arr = root;
    if (json_is_object(root)) arr = json_object_get(root, "results") ? json_object_get(root, "results") : root;
    json_t *rows = json_array();
    enum ty_status st = TY_OK;
    if (json_is_array(arr)) {
        for (size_t i = 0; i < json_array_size(arr) && st == TY_OK; i++)
            st = one_entry(hb, path, json_array_get(arr, i), i, rows);
    } else {
        st = one_entry(hb, path, arr, 0, rows);
    }
    json_decref(root);
    if (st != TY_OK) {
        json_decref(rows);
        return st;
    }
    *out = rows;
    return TY_OK;
}
