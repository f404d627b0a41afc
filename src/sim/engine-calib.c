/*
 * engine-calib.c - predicting our own engine (`tongyun bench`, `bench/bench_serve`) from microbenchmarks of its parts,
 * never from the speeds being predicted:
 *
 *   - the roofline each bench entry measured in its own process (read bandwidth; f32 FMA, int8 dot and bf16 dot
 *     peaks: chip/cpu/roofline.c);
 *   - bench_kernels: per weight type and thread count, the gemv's speed over a whole model's weights as a share of
 *     plain reads of the same memory (decode), and the prefill gemm's share of its instruction's peak;
 *   - bench_pool: the thread pool's price per dispatch, and the non-matmul ops of one layer (norms, RoPE, the KV
 *     copy, attention over the context, residual adds) for a decode token and per prompt token.
 *
 * A generated token then costs: the weights a token reads (every layer matrix and the output head, counted from the
 * GGUF file's tensors) at the bandwidth measured around the bench's decode times the kernel's share (bench_kernels
 * dispatches the pool once per matrix, as the forward pass does once per product), plus n_layer times bench_pool's
 * layer ops. A prompt token costs each weight type's FLOPs at its kernel's measured share of its peak at the prompt's
 * width (interpolated between the widths bench_kernels ran), plus bench_pool's per-token layer ops, plus its
 * share of the batch's dispatches (four per layer and the head: src/model/qwen.c) and of the one output row the
 * prefill computes.
 *
 * The bench_serve prediction hands the same figures to the simulator as the host chip's (bandwidth x kernel share,
 * with the bandwidth bench_serve measured around each level; the decode layer ops once per decoding sequence, the
 * prefill layer ops as attention's share of the FMA peak): a decode batch of n rows costs the one-row weight stream
 * times bench_pool's decode-batch ratio at n columns (the backend's product driver does not hide the extra columns'
 * arithmetic under the stream on the long rows of the FFN down projection: on the 2-core EPYC the engine's forward
 * of 4 decode rows took 1.3 times one row's, and bench_pool's ratio at 4 is about 1.35), an iteration with prompt
 * tokens bench_kernels' share of the peak at its width. Then it runs the discrete-event simulation of each
 * level as bench_serve makes it: a closed loop of `concurrency` clients, their first requests bench_serve's ramp-up
 * apart, each sending its next request when its previous one completes, behind the server's front end (one event-loop
 * thread: connect, HTTP, JSON and tokenising per request, timed by bench_serve itself as front_s), so that of requests
 * sent together the first reaches an idle scheduler and prefills alone while the others queue for the next iteration,
 * as in the server.
 */
#include "sim/sim.h"
#include "sim/sim-impl.h"

#include "model/gguf.h"
#include "model/quant.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ==== Reading the microbenchmarks ==== */

static double jnum(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static const char *jstr(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

static enum ty_status add_kernels(struct ty_sim_micro *mb, json_t *root, const char *what) {
    json_t *types = json_object_get(root, "types");
    const char *isa = jstr(root, "isa");
    for (size_t i = 0; i < json_array_size(types); i++) {
        json_t *t = json_array_get(types, i), *model = json_object_get(t, "model"),
               *pre = json_object_get(t, "prefill");
        for (size_t k = 0; k < json_array_size(model); k++) {
            json_t *m = json_array_get(model, k);
            if (mb->n_eff == TY_SIM_MICRO_MAX_EFF)
                return ty__error(TY_ERR_INVALID_ARG, "%s: more than %d kernel figures", what, TY_SIM_MICRO_MAX_EFF);
            struct ty_sim_kernel_eff *e = &mb->eff[mb->n_eff];
            memset(e, 0, sizeof *e);
            snprintf(e->type, sizeof e->type, "%s", jstr(t, "type"));
            snprintf(e->act, sizeof e->act, "%s", jstr(t, "act"));
            snprintf(e->isa, sizeof e->isa, "%s", isa);
            e->packed = !strcmp(jstr(t, "layout"), "packed");
            e->threads = (int)jnum(m, "threads");
            e->dec_s = jnum(m, "ms_per_token") / 1e3;
            e->dec_bytes = jnum(m, "bytes");
            e->dec_read_gbs = jnum(m, "read_gbs");
            if (!e->type[0] || e->threads < 1 || !(e->dec_s > 0) || !(e->dec_bytes > 0) || !(e->dec_read_gbs > 0))
                return ty__error(TY_ERR_FORMAT,
                                 "%s: type entry %zu: a \"model\" figure lacks threads, ms_per_token, bytes or "
                                 "read_gbs; is it `bench_kernels --json` output?",
                                 what, i + 1);
            double most_cols = -1;
            for (size_t p = 0; p < json_array_size(pre); p++) {
                json_t *q = json_array_get(pre, p);
                double cols = jnum(q, "cols");
                if ((int)jnum(q, "threads") != e->threads) continue;
                if (cols >= most_cols) { /* the widest gemm is the single-figure summary */
                    most_cols = cols;
                    e->pf_pct = jnum(q, "peak_pct");
                    snprintf(e->pf_peak, sizeof e->pf_peak, "%s", jstr(q, "peak_name"));
                }
                if (!(cols >= 1) || e->pf_n == TY_SIM_MICRO_MAX_COLS) continue;
                int at = e->pf_n++; /* insertion, ascending by columns */
                while (at > 0 && e->pf_cols[at - 1] > cols) {
                    e->pf_cols[at] = e->pf_cols[at - 1], e->pf_pcts[at] = e->pf_pcts[at - 1];
                    e->pf_gops[at] = e->pf_gops[at - 1], at--;
                }
                e->pf_cols[at] = cols, e->pf_pcts[at] = jnum(q, "peak_pct"), e->pf_gops[at] = jnum(q, "gops");
            }
            mb->n_eff++;
        }
    }
    return TY_OK;
}

static enum ty_status add_pool(struct ty_sim_micro *mb, json_t *root, const char *what) {
    json_t *sh = json_object_get(root, "shape"), *th = json_object_get(root, "threads");
    mb->pool_embd = (int)jnum(sh, "embd");
    mb->pool_heads = (int)jnum(sh, "heads");
    mb->pool_kv_heads = (int)jnum(sh, "kv_heads");
    mb->pool_head_dim = (int)jnum(sh, "head_dim");
    mb->pool_ctx = (int)jnum(root, "ctx");
    mb->pool_prefill = (int)jnum(root, "prefill");
    mb->n_pool = 0;
    for (size_t i = 0; i < json_array_size(th) && mb->n_pool < TY_SIM_MICRO_MAX_POOL; i++) {
        json_t *r = json_array_get(th, i);
        struct ty_sim_pool_cost *p = &mb->pool[mb->n_pool++];
        p->threads = (int)jnum(r, "threads");
        p->run_us = jnum(r, "dispatch_run_us");
        p->any_us = jnum(r, "dispatch_any_us");
        p->layer_dec_us = jnum(r, "layer_decode_us");
        p->layer_pf_us = jnum(r, "layer_prefill_us_per_token");
        if (p->threads < 1 || !(p->layer_dec_us > 0) || !(p->layer_pf_us > 0))
            return ty__error(TY_ERR_FORMAT, "%s: thread entry %zu lacks threads or the layer figures", what, i + 1);
        json_t *db = json_object_get(r, "decode_batch"); /* optional (bench_pool before it had them) */
        p->db_n = 0;
        for (size_t k = 0; k < json_array_size(db) && p->db_n < 8; k++) {
            double rows = jnum(json_array_get(db, k), "rows"), ratio = jnum(json_array_get(db, k), "ratio");
            if (rows >= 1 && ratio > 0 && (p->db_n == 0 || rows > p->db_rows[p->db_n - 1]))
                p->db_rows[p->db_n] = rows, p->db_ratio[p->db_n++] = ratio;
        }
    }
    if (mb->n_pool == 0 || mb->pool_embd < 1)
        return ty__error(TY_ERR_FORMAT, "%s: no thread figures or no shape; is it `bench_pool --json` output?", what);
    return TY_OK;
}

enum ty_status ty__sim_micro_add_json(struct ty_sim_micro *mb, json_t *root, const char *what) {
    if (!json_is_object(root)) return ty__error(TY_ERR_FORMAT, "%s: not a JSON object", what);
    if (json_is_array(json_object_get(root, "types"))) return add_kernels(mb, root, what);
    if (!strcmp(jstr(root, "bench"), "pool")) return add_pool(mb, root, what);
    return ty__error(TY_ERR_FORMAT,
                     "%s: neither `bench_kernels --json` (a \"types\" array) nor `bench_pool --json` "
                     "(\"bench\": \"pool\") output",
                     what);
}

enum ty_status ty__sim_micro_add_file(struct ty_sim_micro *mb, const char *path) {
    char *text = NULL;
    size_t size = 0;
    TY_TRY(ty__file_read(path, 16u << 20, &text, &size));
    json_error_t jerr;
    json_t *root = json_loadb(text, size, 0, &jerr);
    ty_free(text);
    if (!root) return ty__error(TY_ERR_FORMAT, "%s: line %d: %s", path, jerr.line, jerr.text);
    enum ty_status st = ty__sim_micro_add_json(mb, root, path);
    json_decref(root);
    return st;
}

/* The kernel figures the engine's kernels of `type` at `threads` correspond to: packed where bench_kernels ran a
 * packed layout (the engine packs every type that has one at load), and for BF16 the f32-activation kernels where
 * both were run (the CPU backend pairs BF16 weights with f32 activations: chip/cpu/cpu.c, kernel_tables). */
static const struct ty_sim_kernel_eff *find_eff_at(const struct ty_sim_micro *mb, const char *type, int threads,
                                                   bool last) {
    const struct ty_sim_kernel_eff *best = NULL;
    int best_score = -1;
    bool bf16 = !strcasecmp(type, "BF16");
    for (int i = 0; i < mb->n_eff; i++) {
        const struct ty_sim_kernel_eff *e = &mb->eff[i];
        if (e->threads != threads || strcasecmp(e->type, type)) continue;
        int score = (e->packed ? 1 : 0) + (bf16 && !strcmp(e->act, "f32") ? 2 : 0);
        if (score > best_score || (last && score == best_score)) best = e, best_score = score;
    }
    return best;
}

static const struct ty_sim_kernel_eff *find_eff(const struct ty_sim_micro *mb, const char *type, int threads) {
    return find_eff_at(mb, type, threads, false);
}

double ty__sim_kernel_pf_pct(const struct ty_sim_kernel_eff *e, double cols) {
    if (e->pf_n < 2) return e->pf_pct;
    if (cols <= e->pf_cols[0]) return e->pf_pcts[0];
    for (int i = 1; i < e->pf_n; i++)
        if (cols <= e->pf_cols[i]) {
            double f = log(cols / e->pf_cols[i - 1]) / log(e->pf_cols[i] / e->pf_cols[i - 1]);
            return e->pf_pcts[i - 1] + f * (e->pf_pcts[i] - e->pf_pcts[i - 1]);
        }
    return e->pf_pcts[e->pf_n - 1];
}

static const struct ty_sim_pool_cost *find_pool(const struct ty_sim_micro *mb, int threads) {
    for (int i = 0; i < mb->n_pool; i++)
        if (mb->pool[i].threads == threads) return &mb->pool[i];
    return NULL;
}

/* ==== The model's work ==== */

enum ty_status ty__sim_engine_cost_gguf(const char *path, struct ty_sim_engine_cost *out) {
    memset(out, 0, sizeof *out);
    struct ty_gguf *g;
    TY_TRY(ty__gguf_open(path, &g));
    enum ty_status st = TY_OK;
    bool tied = ty__gguf_find_tensor(g, "output.weight") == NULL;
    int max_layer = -1;
    for (int64_t i = 0; i < ty__gguf_n_tensors(g); i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
        if (t->n_dims < 2) continue; /* norms and biases: the layer ops' business */
        double flops = 2.0 * (double)t->ne[0] * (double)t->ne[1];
        if (!strcmp(t->name, "output.weight") || (tied && !strcmp(t->name, "token_embd.weight"))) {
            out->head_bytes += (double)t->nbytes;
            out->head_flops += flops;
            out->n_embd = t->ne[0];
            continue;
        }
        if (!strcmp(t->name, "token_embd.weight")) continue; /* one row per token: negligible */
        int layer = -1;
        if (sscanf(t->name, "blk.%d.", &layer) != 1 || layer < 0) continue;
        if (t->n_dims > 2 && t->ne[2] > 1) {
            st = ty__error(TY_ERR_UNSUPPORTED,
                           "%s: tensor %s holds experts; the engine calibration models dense models only", path,
                           t->name);
            break;
        }
        if (strstr(t->name, "ssm") || strstr(t->name, "attn_qkv")) {
            st = ty__error(TY_ERR_UNSUPPORTED,
                           "%s: tensor %s belongs to a linear-attention layer; the engine calibration models "
                           "dense attention models only",
                           path, t->name);
            break;
        }
        if (layer > max_layer) max_layer = layer;
        out->layer_bytes += (double)t->nbytes;
        if ((unsigned)t->type < TY_TYPE_COUNT) out->layer_flops[t->type] += flops;
    }
    ty__gguf_close(g);
    TY_TRY(st);
    out->n_layer = max_layer + 1;
    if (out->n_layer < 1 || !(out->head_bytes > 0))
        return ty__error(TY_ERR_FORMAT, "%s: no blk.N weight matrices or no output matrix", path);
    return TY_OK;
}

enum ty_status ty__sim_engine_cost_preset(const struct ty_sim_model *m, enum ty_type t,
                                          struct ty_sim_engine_cost *out) {
    memset(out, 0, sizeof *out);
    TY_TRY(ty__sim_model_validate(m));
    if (m->n_expert > 0 || m->full_attn_interval > 1)
        return ty__error(TY_ERR_UNSUPPORTED, "%s: the engine calibration models dense attention models only", m->name);
    const struct ty_type_traits *tr = (unsigned)t < TY_TYPE_COUNT ? ty__type_traits(t) : NULL;
    if (!tr || !tr->block_size) return ty__error(TY_ERR_INVALID_ARG, "weight type %d has no storage size", (int)t);
    struct ty_sim_model_stats s;
    ty__sim_model_stats(m, &s);
    double bytes_per = (double)tr->type_size / (double)tr->block_size;
    double params = (double)m->n_layer * (s.p_attn + s.p_ffn);
    out->n_layer = m->n_layer;
    out->n_embd = m->n_embd;
    out->layer_bytes = params * bytes_per;
    out->layer_flops[t] = 2 * params;
    out->head_bytes = s.p_head * bytes_per;
    out->head_flops = 2 * s.p_head;
    return TY_OK;
}

/* ==== Prediction ==== */

static double peak_of(const struct ty_sim_roof *r, const char *name) {
    if (!strcmp(name, "int8")) return r->int8_gops;
    if (!strcmp(name, "bf16")) return r->bf16_gflops;
    return r->fma_gflops;
}

enum ty_status ty__sim_predict_engine(const struct ty_sim_micro *mb, const struct ty_sim_roof *roof, const char *type,
                                      const struct ty_sim_engine_cost *c, int n_prompt, int n_gen,
                                      struct ty_sim_engine_pred *out) {
    memset(out, 0, sizeof *out);
    (void)n_gen; /* the context of decode's attention is bench_pool's --ctx, which the script sets to n_gen / 2 */
    if (!(roof->bw_gbs > 0) || !(roof->fma_gflops > 0) || roof->threads < 1)
        return ty__error(TY_ERR_INVALID_ARG, "the bench entry carries no roofline (mem_bw_gbs, fma_gflops, threads)");
    const struct ty_sim_pool_cost *pc = find_pool(mb, roof->threads);
    if (!pc)
        return ty__error(TY_ERR_NOT_FOUND, "no bench_pool figures for %d threads; run `bench_pool --threads %d --json`",
                         roof->threads, roof->threads);
    if (mb->pool_embd != c->n_embd)
        return ty__error(TY_ERR_INVALID_ARG,
                         "bench_pool timed layers of width %d but the model's is %lld; run bench_pool with the "
                         "model's shape (--embd, --heads, --kv-heads, --head-dim)",
                         mb->pool_embd, (long long)c->n_embd);
    const struct ty_sim_kernel_eff *e = find_eff(mb, type, roof->threads);
    if (!e)
        return ty__error(TY_ERR_NOT_FOUND,
                         "no bench_kernels figures for %s at %d threads; run `bench_kernels --types %s --threads %d "
                         "--json`",
                         type, roof->threads, type, roof->threads);
    /* Decode. bench_kernels' pass dispatches the pool once per matrix, as the engine's decode does once per product
     * (169 matrices against the engine's 4 products a layer: it fuses q/k/v and gate/up, so if anything it pays
     * fewer). The share is taken with those dispatches in: subtracting an empty dispatch's price measured apart
     * over-corrects on a busy machine, where a worker that waits for a core costs an empty task its whole wait but a
     * real one only the part its own share of the work does not cover. */
    out->dec_eff = e->dec_bytes / (e->dec_read_gbs * 1e9) / e->dec_s;
    /* A gemv cannot stream its weights faster than plain reads of the same bytes, nor a gemm beat its instruction's
     * peak: a share above 1 says the reference measurement was disturbed (a busy machine), so the bound is used. */
    if (out->dec_eff > 1) out->dec_eff = 1, out->clamped = true;
    double bw = roof->bw_gbs * 1e9;
    int products = TY_SIM_ENGINE_PRODUCTS_PER_LAYER * c->n_layer + 1;
    out->tg_weights_s = (c->layer_bytes + c->head_bytes) / (bw * out->dec_eff);
    out->tg_ops_s = c->n_layer * pc->layer_dec_us * 1e-6;
    out->tg_tok_s = 1 / (out->tg_weights_s + out->tg_ops_s);
    /* Prefill: each weight type of the layers at its kernel's share of its peak. */
    if (n_prompt < 1) n_prompt = 1;
    double gemm_s = 0, flops = 0, most = 0;
    for (int t = 0; t < TY_TYPE_COUNT; t++) {
        if (!(c->layer_flops[t] > 0)) continue;
        const char *tn = ty_type_name((enum ty_type)t);
        const struct ty_sim_kernel_eff *k = find_eff(mb, tn, roof->threads);
        if (!k || !(k->pf_pct > 0))
            return ty__error(TY_ERR_NOT_FOUND,
                             "no bench_kernels prefill figure for %s at %d threads (the model's layers hold %s "
                             "weights); run `bench_kernels --types %s --threads %d --prefill %d --json`",
                             tn, roof->threads, tn, tn, roof->threads, n_prompt);
        double peak = peak_of(roof, k->pf_peak);
        if (!(peak > 0))
            return ty__error(TY_ERR_INVALID_ARG, "the bench entry has no %s peak for the %s prefill kernel", k->pf_peak,
                             tn);
        double share = ty__sim_kernel_pf_pct(k, n_prompt) / 100; /* at the prompt's width where it was measured */
        if (share > 1) share = 1, out->clamped = true;
        double rate = peak * 1e9 * share;
        gemm_s += c->layer_flops[t] / rate;
        flops += c->layer_flops[t];
        if (c->layer_flops[t] > most) most = c->layer_flops[t], out->pf_peak_gops = peak;
    }
    out->pp_gemm_s = gemm_s;
    out->pf_rate_gops = gemm_s > 0 ? flops / gemm_s / 1e9 : 0;
    out->pp_ops_s = c->n_layer * pc->layer_pf_us * 1e-6;
    /* once per batch: the dispatches (ty__threadpool_run with a barrier) and the last token's output row */
    out->pp_fixed_s = (products * pc->run_us * 1e-6 + c->head_bytes / (bw * out->dec_eff)) / n_prompt;
    out->pp_tok_s = 1 / (out->pp_gemm_s + out->pp_ops_s + out->pp_fixed_s);
    return TY_OK;
}

/* ==== Comparing with bench runs ==== */

static enum ty_status read_json_any(const char *path, json_t **out) {
    *out = NULL;
    char *text = NULL;
    size_t size = 0;
    TY_TRY(ty__file_read(path, 64u << 20, &text, &size));
    json_error_t jerr;
    json_t *root = json_loadb(text, size, 0, &jerr);
    if (!root) { /* JSON Lines */
        root = json_array();
        int line = 0;
        for (size_t i = 0; i < size;) {
            const char *nl = memchr(text + i, '\n', size - i);
            size_t end = nl ? (size_t)(nl - text) : size;
            line++;
            size_t j = i;
            while (j < end && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r')) j++;
            if (j < end) {
                json_t *v = json_loadb(text + j, end - j, 0, &jerr);
                if (!v) {
                    json_decref(root);
                    ty_free(text);
                    return ty__error(TY_ERR_FORMAT, "%s: line %d: %s", path, line, jerr.text);
                }
                json_array_append_new(root, v);
            }
            i = end + 1;
        }
    }
    ty_free(text);
    *out = root;
    return TY_OK;
}

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The cost of a bench entry's model: its GGUF file, else a preset with the entry's weight type. */
static enum ty_status entry_cost(json_t *e, struct ty_sim_engine_cost *c) {
    const char *model = jstr(e, "model"), *type = jstr(e, "type");
    if (!model[0]) return ty__error(TY_ERR_FORMAT, "a bench entry has no \"model\"");
    if (file_exists(model)) return ty__sim_engine_cost_gguf(model, c);
    struct ty_sim_model m;
    TY_TRY(ty__sim_model_resolve(model, &m));
    enum ty_type t;
    if (!ty__type_from_name(type, &t))
        return ty__error(TY_ERR_FORMAT, "bench entry for preset %s: weight type '%s' is not a single type", model,
                         type);
    return ty__sim_engine_cost_preset(&m, t, c);
}

/* The roofline a bench entry ran against: the bandwidth measured around its decode repetitions where it has it (a
 * VM's host can change the bandwidth within seconds, so the one measured before the model loaded may belong to
 * another state), else the one of the start of its run. */
static struct ty_sim_roof entry_roof(json_t *e) {
    double bw = jnum(e, "tg_mem_bw_gbs") > 0 ? jnum(e, "tg_mem_bw_gbs") : jnum(e, "mem_bw_gbs");
    struct ty_sim_roof r = {(int)jnum(e, "threads"), bw, jnum(e, "fma_gflops"), jnum(e, "int8_gops"),
                            jnum(e, "bf16_gflops")};
    return r;
}

static json_t *err_of(double pred, double meas) {
    return pred > 0 && meas > 0 ? json_real(pred / meas - 1) : json_null();
}

/* The fastest repetition of a bench test (its samples), else its mean. */
static double best_sample(json_t *e, const char *key, double mean) {
    json_t *a = json_object_get(e, key);
    double best = 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        double v = json_is_number(json_array_get(a, i)) ? json_number_value(json_array_get(a, i)) : 0;
        if (v > best) best = v;
    }
    return best > 0 ? best : mean;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

enum ty_status ty__sim_calibrate_engine(const struct ty_sim_micro *mb, const char *bench_path, json_t **out) {
    *out = NULL;
    json_t *root;
    TY_TRY(read_json_any(bench_path, &root));
    if (json_is_object(root)) {
        json_t *a = json_array();
        json_array_append(a, root);
        json_decref(root);
        root = a;
    }
    json_t *rows = json_array();
    enum ty_status st = TY_OK;
    for (size_t i = 0; i < json_array_size(root) && st == TY_OK; i++) {
        json_t *e = json_array_get(root, i);
        struct ty_sim_engine_cost c;
        struct ty_sim_engine_pred p;
        struct ty_sim_roof r = entry_roof(e);
        st = entry_cost(e, &c);
        if (st == TY_OK)
            st = ty__sim_predict_engine(mb, &r, jstr(e, "type"), &c, (int)jnum(e, "n_prompt"), (int)jnum(e, "n_gen"),
                                        &p);
        if (st != TY_OK) {
            ty__error_prefix(st, "%s: entry %zu", bench_path, i + 1);
            break;
        }
        double mpp = jnum(e, "pp_tok_s"), mtg = jnum(e, "tg_tok_s");
        double bpp = best_sample(e, "pp_samples", mpp), btg = best_sample(e, "tg_samples", mtg);
        json_t *row = json_object(), *me = json_object(), *pr = json_object(), *er = json_object(), *bd = json_object();
        json_object_set_new(row, "model", json_string(base_name(jstr(e, "model"))));
        json_object_set_new(row, "type", json_string(jstr(e, "type")));
        json_object_set_new(row, "threads", json_integer(r.threads));
        json_object_set_new(row, "n_prompt", json_integer((json_int_t)jnum(e, "n_prompt")));
        json_object_set_new(row, "n_gen", json_integer((json_int_t)jnum(e, "n_gen")));
        json_object_set_new(me, "pp_tok_s", mpp > 0 ? json_real(mpp) : json_null());
        json_object_set_new(me, "tg_tok_s", mtg > 0 ? json_real(mtg) : json_null());
        json_object_set_new(pr, "pp_tok_s", json_real(p.pp_tok_s));
        json_object_set_new(pr, "tg_tok_s", json_real(p.tg_tok_s));
        json_object_set_new(er, "pp_tok_s", err_of(p.pp_tok_s, mpp));
        json_object_set_new(er, "tg_tok_s", err_of(p.tg_tok_s, mtg));
        json_object_set_new(bd, "mem_bw_gbs", json_real(r.bw_gbs));
        json_object_set_new(bd, "dec_eff", json_real(p.dec_eff));
        json_object_set_new(bd, "clamped", json_boolean(p.clamped));
        json_object_set_new(bd, "tg_weights_ms", json_real(p.tg_weights_s * 1e3));
        json_object_set_new(bd, "tg_ops_ms", json_real(p.tg_ops_s * 1e3));
        json_object_set_new(bd, "pf_rate_gops", json_real(p.pf_rate_gops));
        json_object_set_new(bd, "pf_peak_gops", json_real(p.pf_peak_gops));
        json_object_set_new(bd, "pp_gemm_ms", json_real(p.pp_gemm_s * 1e3));
        json_object_set_new(bd, "pp_ops_ms", json_real(p.pp_ops_s * 1e3));
        json_object_set_new(bd, "pp_fixed_ms", json_real(p.pp_fixed_s * 1e3));
        /* The microbenchmarks report the best of their repetitions (the machine's capability); so does this. On a
         * quiet machine it is the mean; on a busy one it is the figure the best-of microbenchmarks describe. */
        json_t *mb_ = json_object(), *eb = json_object();
        json_object_set_new(mb_, "pp_tok_s", bpp > 0 ? json_real(bpp) : json_null());
        json_object_set_new(mb_, "tg_tok_s", btg > 0 ? json_real(btg) : json_null());
        json_object_set_new(eb, "pp_tok_s", err_of(p.pp_tok_s, bpp));
        json_object_set_new(eb, "tg_tok_s", err_of(p.tg_tok_s, btg));
        json_object_set_new(row, "measured", me);
        json_object_set_new(row, "predicted", pr);
        json_object_set_new(row, "error", er);
        json_object_set_new(row, "measured_best", mb_);
        json_object_set_new(row, "error_best", eb);
        json_object_set_new(row, "breakdown", bd);
        json_array_append_new(rows, row);
    }
    json_decref(root);
    if (st != TY_OK) {
        json_decref(rows);
        return st;
    }
    *out = rows;
    return TY_OK;
}

/* ==== bench_serve through the discrete-event simulation ==== */

enum ty_status ty__sim_predict_serve(const struct ty_sim_catalog *cat, const struct ty_sim_micro *mb,
                                     const char *bench_path, const char *serve_path, json_t **out) {
    *out = NULL;
    json_t *serve = NULL, *bench = NULL;
    TY_TRY(read_json_any(serve_path, &serve));
    if (json_is_array(serve) && json_array_size(serve) > 0) { /* JSON Lines: the last run */
        json_t *last = json_incref(json_array_get(serve, json_array_size(serve) - 1));
        json_decref(serve);
        serve = last;
    }
    enum ty_status st = read_json_any(bench_path, &bench);
    if (st != TY_OK) {
        json_decref(serve);
        return st;
    }
    if (json_is_object(bench)) { /* one entry */
        json_t *a = json_array();
        json_array_append_new(a, bench);
        bench = a;
    }
    const char *model = jstr(serve, "model");
    json_t *entry = NULL;
    for (size_t i = 0; i < json_array_size(bench); i++) {
        json_t *e = json_array_get(bench, i);
        if (!strcmp(jstr(e, "model"), model) && (!entry || jnum(e, "threads") > jnum(entry, "threads"))) entry = e;
    }
    json_t *res = NULL;
    if (!json_is_array(json_object_get(serve, "levels"))) {
        st = ty__error(TY_ERR_FORMAT, "%s: no \"levels\"; is it `bench_serve --json` output?", serve_path);
        goto done;
    }
    if (!entry) {
        st = ty__error(TY_ERR_NOT_FOUND,
                       "%s has no bench entry for %s, the model bench_serve ran; bench that model in the same run",
                       bench_path, model);
        goto done;
    }
    struct ty_sim_engine_cost c;
    struct ty_sim_engine_pred p;
    struct ty_sim_roof r = entry_roof(entry);
    if ((st = entry_cost(entry, &c)) != TY_OK) goto done;
    if ((st = ty__sim_predict_engine(mb, &r, jstr(entry, "type"), &c, 64, 128, &p)) != TY_OK) goto done;
    const struct ty_sim_pool_cost *pc = find_pool(mb, r.threads);
    const struct ty_sim_chip *host;
    if ((st = ty__sim_catalog_find(cat, "host", &host)) != TY_OK) goto done;
    /* The host chip as these microbenchmarks see it. */
    struct ty_sim_chip chip = *host;
    chip.name = "host";
    if (!(chip.mem_gb.v > 0)) { /* a catalogue made without measuring: the memory is still the machine's */
        long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
        chip.mem_gb = (struct ty_sim_fig){pages > 0 && psize > 0 ? (double)pages * (double)psize / 1073741824.0 : 16,
                                          "physical memory (sysconf)", false};
    }
    chip.mem_bw_gbs = (struct ty_sim_fig){r.bw_gbs, "bench entry's roofline (same run)", false};
    chip.bf16_tflops = (struct ty_sim_fig){r.fma_gflops / 1e3, "bench entry's roofline: f32 FMA", false};
    chip.int8_tops = (struct ty_sim_fig){r.int8_gops / 1e3, "bench entry's roofline: int8 dot", false};
    chip.mbu = (struct ty_sim_fig){p.dec_eff, "bench_kernels: gemv / plain reads, dispatch removed", false};
    chip.attn_mbu = chip.mbu;
    chip.mfu = (struct ty_sim_fig){p.pf_peak_gops > 0 ? p.pf_rate_gops / p.pf_peak_gops : TY_SIM_HOST_MFU,
                                   "bench_kernels: prefill gemm share of its peak", false};
    /* bench_pool's layer ops of one decode token are paid once per decoding sequence (cfg.dec_layer_us below), not
     * once per iteration */
    chip.layer_us = (struct ty_sim_fig){0, "bench_pool: priced per decoding sequence (dec_layer_us)", false};
    /* Prefill's layer ops priced as attention: the share of the FMA peak at which bench_pool's prefill ran one
     * layer's ops, counting the attention FLOPs of its causal prompt (they dominate at its length). */
    double pf_attn_flops = 2.0 * 2 * mb->pool_head_dim * mb->pool_heads * (mb->pool_prefill + 1) / 2.0;
    chip.attn_mfu = (struct ty_sim_fig){pf_attn_flops / (r.fma_gflops * 1e9 * pc->layer_pf_us * 1e-6),
                                        "bench_pool: prefill layer ops as a share of the FMA peak", false};
    chip.step_ms = (struct ty_sim_fig){pc->any_us * 1e-3, "bench_pool: the output head's dispatch", false};
    /* The GEMM curve: bench_kernels' widths of the weight type that holds most of the layers' FLOPs. Its narrow widths
     * (a decode batch's few rows) give how much a batch of n rows costs over the one-row weight stream; its wide ones
     * the prefill's share of the peak at the iteration's width. Where that type was timed more than once, the last
     * figures given: scripts/sim-validation.sh times the served type again right before bench_serve, so that the
     * load test and its microbenchmark see the same neighbours on a shared machine. */
    const struct ty_sim_kernel_eff *ke = NULL;
    double most = 0;
    for (int t = 0; t < TY_TYPE_COUNT; t++)
        if (c.layer_flops[t] > most)
            most = c.layer_flops[t], ke = find_eff_at(mb, ty_type_name((enum ty_type)t), r.threads, true);
    /* The server's front end per request: bench_serve's median round trip of a request the front end answers
     * itself after the same connect, parsing and tokenising (POST /tokenize of a request's prompt on a new
     * connection), measured on the idle server before the levels. */
    double front_s = jnum(serve, "front_s") > 0 ? jnum(serve, "front_s") : 0;
    struct ty_sim_model m;
    if ((st = ty__sim_model_resolve(model, &m)) != TY_OK) goto done;
    res = json_object();
    json_t *levels = json_array(), *jc = json_object();
    json_object_set_new(jc, "threads", json_integer(r.threads));
    json_object_set_new(jc, "mem_bw_gbs", json_real(chip.mem_bw_gbs.v));
    json_object_set_new(jc, "mbu", json_real(chip.mbu.v));
    json_object_set_new(jc, "mfu", json_real(chip.mfu.v));
    json_object_set_new(jc, "attn_mfu", json_real(chip.attn_mfu.v));
    json_object_set_new(jc, "layer_us", json_real(pc->layer_dec_us));
    json_object_set_new(jc, "max_seqs", json_integer((json_int_t)jnum(serve, "max_seqs")));
    json_object_set_new(jc, "front_ms", json_real(front_s * 1e3));
    json_object_set_new(res, "model", json_string(base_name(model)));
    json_object_set_new(res, "chip", jc);
    json_object_set_new(res, "levels", levels);
    json_t *jl = json_object_get(serve, "levels");
    for (size_t i = 0; i < json_array_size(jl) && st == TY_OK; i++) {
        json_t *l = json_array_get(jl, i);
        int conc = (int)jnum(l, "concurrency"), ok = (int)jnum(l, "ok");
        if (conc < 1 || ok < 1) continue;
        /* the bandwidth of the level's own seconds where bench_serve measured it (a VM's host can change it within
         * seconds), else the bench entry's */
        double level_bw = jnum(l, "mem_bw_gbs") > 0 ? jnum(l, "mem_bw_gbs") : r.bw_gbs;
        chip.mem_bw_gbs = (struct ty_sim_fig){level_bw,
                                              jnum(l, "mem_bw_gbs") > 0 ? "bench_serve: read bandwidth around the level"
                                                                        : "bench entry's roofline (same run)",
                                              false};
        double in = jnum(l, "prompt_tokens") / ok, outl = jnum(l, "completion_tokens") / ok;
        struct ty_sim_config cfg = {0};
        cfg.chip = &chip;
        cfg.model = &m;
        cfg.chips = 1;
        cfg.weight = TY_SIM_DT_INT8;
        cfg.act = TY_SIM_DT_F32;
        cfg.kv = TY_SIM_DT_BF16; /* 2-byte KV, as the engine's f16 cache */
        cfg.max_seqs = jnum(serve, "max_seqs") > 0 ? (int)jnum(serve, "max_seqs") : 0;
        cfg.moe_skew = -1;
        cfg.front_s = front_s;
        cfg.dec_layer_us = pc->layer_dec_us;
        /* a decode batch's products over one row's: bench_pool's decode-batch figure where it has one (the backend's
         * own driver, widths alternating), else what bench_kernels' narrow gemm widths imply */
        for (int k = 0; k < pc->db_n && cfg.dec_n < TY_SIM_GEMM_MAX; k++) {
            cfg.dec_rows[cfg.dec_n] = pc->db_rows[k];
            cfg.dec_ratio[cfg.dec_n++] = pc->db_ratio[k];
        }
        /* The gemm's rate at each width as a share of the peak the simulated chip has (the bench entry's): from
         * bench_kernels' GOP/s where it gives them, so that a peak its own roofline measured on a busy moment does
         * not scale them */
        double kpeak = ke ? peak_of(&r, ke->pf_peak) : 0;
        for (int k = 0; ke && k < ke->pf_n && cfg.gemm_n < TY_SIM_GEMM_MAX; k++) {
            cfg.gemm_rows[cfg.gemm_n] = ke->pf_cols[k];
            cfg.gemm_share[cfg.gemm_n++] =
                ke->pf_gops[k] > 0 && kpeak > 0 ? ke->pf_gops[k] / kpeak : ke->pf_pcts[k] / 100;
        }
        ty__sim_config_defaults(&cfg);
        /* Without a curve, one prefill share: at the width of a prompt (where the curve has one, it prices each
         * iteration at its own width and this is only reported). */
        struct ty_sim_engine_pred pl;
        if ((st = ty__sim_predict_engine(mb, &r, jstr(entry, "type"), &c, (int)fmax(in, 1), 128, &pl)) != TY_OK) break;
        chip.mfu = (struct ty_sim_fig){pl.pf_peak_gops > 0 ? pl.pf_rate_gops / pl.pf_peak_gops : TY_SIM_HOST_MFU,
                                       "bench_kernels: prefill gemm share at a prompt's width", false};
        /* bench_serve runs a closed loop: `conc` client threads each send a request, wait for its last token and send
         * the next, until `ok` have finished. Its TTFT is timed from each request's own send. */
        struct ty_sim_workload w = {.n_requests = ok,
                                    .prompt = {TY_SIM_DIST_FIXED, in < 1 ? 1 : round(in), 0},
                                    .output = {TY_SIM_DIST_FIXED, outl < 1 ? 1 : round(outl), 0},
                                    .seed = 7,
                                    .users = conc,
                                    .ramp_s = jnum(serve, "ramp_s") > 0 ? jnum(serve, "ramp_s") : 0};
        struct ty_sim_result sr;
        if ((st = ty__sim_run(&cfg, &w, &sr)) != TY_OK) break;
        double ratio = ty__sim_gemm_stream_ratio(&cfg, conc);
        double mtok = jnum(l, "decode_tok_s"), mttft = jnum(json_object_get(l, "ttft_s"), "p50");
        json_t *row = json_object(), *me = json_object(), *pr = json_object(), *er = json_object();
        json_object_set_new(row, "concurrency", json_integer(conc));
        json_object_set_new(row, "prompt_tokens", json_real(in));
        json_object_set_new(row, "output_tokens", json_real(outl));
        json_object_set_new(row, "mem_bw_gbs", json_real(level_bw));
        /* the share at a prompt's width, as the simulation prices it */
        json_object_set_new(row, "prefill_share", json_real(ty__sim_gemm_share(&cfg, fmax(in, 1))));
        json_object_set_new(row, "decode_batch_ratio", json_real(ratio));
        json_object_set_new(me, "decode_tok_s", json_real(mtok));
        json_object_set_new(me, "ttft_p50_s", json_real(mttft));
        json_object_set_new(pr, "decode_tok_s", json_real(sr.throughput_tok_s));
        json_object_set_new(pr, "ttft_p50_s", json_real(sr.ttft_ms.p50 / 1e3));
        json_object_set_new(er, "decode_tok_s", err_of(sr.throughput_tok_s, mtok));
        json_object_set_new(er, "ttft_p50_s", err_of(sr.ttft_ms.p50 / 1e3, mttft));
        json_object_set_new(row, "measured", me);
        json_object_set_new(row, "predicted", pr);
        json_object_set_new(row, "error", er);
        json_array_append_new(levels, row);
    }
done:
    json_decref(serve);
    json_decref(bench);
    if (st != TY_OK) {
        json_decref(res);
        return st;
    }
    *out = res;
    return TY_OK;
}

/* ==== Report section ==== */

static double num_at(json_t *o, const char *a, const char *b) {
    return jnum(json_object_get(o, a), b);
}

static const char *pct_str(json_t *o, const char *a, const char *b, char *buf, size_t cap) {
    json_t *v = json_object_get(json_object_get(o, a), b);
    if (!json_is_number(v)) return "n/a";
    snprintf(buf, cap, "%+.1f%%", json_number_value(v) * 100);
    return buf;
}

static bool within_of(json_t *o, const char *which, const char *b, double tol) {
    json_t *v = json_object_get(json_object_get(o, which), b);
    return json_is_number(v) && fabs(json_number_value(v)) <= tol;
}

static bool within(json_t *o, const char *b, double tol) {
    return within_of(o, "error", b, tol);
}

static void micro_tables(const struct ty_sim_micro *mb, struct ty_buf *b) {
    ty__buf_printf(b,
                   "Microbenchmarks read (`bench/bench_pool.c`, shape: width %d, %d heads, %d KV heads of %d; decode "
                   "at context %d, prefill of %d tokens):\n\n"
                   "| threads | dispatch us (run) | dispatch us (run_any) | layer ops us, decode | layer ops us per "
                   "prompt token | decode batch of 2 / 4 / 8 / 16 rows over 1 |\n|---:|---:|---:|---:|---:|---:|\n",
                   mb->pool_embd, mb->pool_heads, mb->pool_kv_heads, mb->pool_head_dim, mb->pool_ctx, mb->pool_prefill);
    for (int i = 0; i < mb->n_pool; i++) {
        const struct ty_sim_pool_cost *pc = &mb->pool[i];
        ty__buf_printf(b, "| %d | %.2f | %.2f | %.1f | %.2f | ", pc->threads, pc->run_us, pc->any_us, pc->layer_dec_us,
                       pc->layer_pf_us);
        for (int k = 0; k < pc->db_n; k++)
            if (pc->db_rows[k] > 1) ty__buf_printf(b, "%s%.2f", pc->db_rows[k] > 2 ? " / " : "", pc->db_ratio[k]);
        ty__buf_puts(b, pc->db_n ? " |\n" : "- |\n");
    }
    ty__buf_puts(b, "\nKernels (`bench/bench_kernels.c`; decode share = gemv over the Qwen2.5-0.5B weight set / plain "
                    "reads of the same memory, its 169 dispatches included; prefill = the gemm's share of its "
                    "instruction's peak):\n\n"
                    "| type | layout | act | path | threads | decode share | prefill % of peak |\n"
                    "|---|---|---|---|---:|---:|---:|\n");
    for (int i = 0; i < mb->n_eff; i++) {
        const struct ty_sim_kernel_eff *e = &mb->eff[i];
        double k = e->dec_s;
        ty__buf_printf(b, "| %s | %s | %s | %s | %d | %.2f | %.1f (%s) |\n", e->type, e->packed ? "packed" : "natural",
                       e->act, e->isa, e->threads, e->dec_bytes / (e->dec_read_gbs * 1e9) / k, e->pf_pct,
                       e->pf_peak[0] ? e->pf_peak : "-");
    }
    ty__buf_puts(b, "\n");
}

void ty__sim_engine_report(const struct ty_sim_catalog *cat, const struct ty_sim_engine_inputs *eng, struct ty_buf *b) {
    ty__buf_puts(b, "## 1. Our own engine\n\n");
    if (!eng || !eng->bench_json || eng->n_micro == 0) {
        ty__buf_puts(b,
                     "Not compared in this run: regenerate with `scripts/sim-validation.sh`, which runs `tongyun "
                     "bench --json`, `bench_kernels --json`, `bench_pool --json` and `bench_serve --json` and passes "
                     "them as `--bench-json`, `--micro-json` and `--serve-json`.\n\n");
        return;
    }
    struct ty_sim_micro *mb = ty__calloc(1, sizeof *mb);
    if (!mb) {
        ty__buf_puts(b, "Out of memory reading the microbenchmarks.\n\n");
        return;
    }
    for (int i = 0; i < eng->n_micro; i++)
        if (ty__sim_micro_add_file(mb, eng->micro[i]) != TY_OK) {
            ty__buf_printf(b, "Reading the microbenchmarks failed: %s\n\n", ty_last_error());
            ty_free(mb);
            return;
        }
    json_t *rows = NULL, *serve = NULL;
    enum ty_status st = ty__sim_calibrate_engine(mb, eng->bench_json, &rows);
    char serve_err[600] = "";
    if (st == TY_OK && eng->serve_json &&
        ty__sim_predict_serve(cat, mb, eng->bench_json, eng->serve_json, &serve) != TY_OK)
        snprintf(serve_err, sizeof serve_err, "%s", ty_last_error());
    if (st != TY_OK) {
        ty__buf_printf(b, "The prediction failed: %s\n\n", ty_last_error());
        ty_free(mb);
        return;
    }
    int n = 0, ok = 0, okb = 0, sn = 0, sok = 0;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i);
        n += 2;
        ok += within(r, "pp_tok_s", 0.15) + within(r, "tg_tok_s", 0.15);
        okb += within_of(r, "error_best", "pp_tok_s", 0.15) + within_of(r, "error_best", "tg_tok_s", 0.15);
    }
    json_t *lv = serve ? json_object_get(serve, "levels") : NULL;
    for (size_t i = 0; i < json_array_size(lv); i++) {
        json_t *r = json_array_get(lv, i);
        sn += 2;
        sok += within(r, "decode_tok_s", 0.20) + within(r, "ttft_p50_s", 0.20);
    }
    ty__buf_printf(b,
                   "**In this run: %d of %d `tongyun bench` figures within 15%% (%d of %d against each test's best "
                   "repetition)%s",
                   ok, n, okb, n, serve ? "" : ".**");
    if (serve) ty__buf_printf(b, "; %d of %d `bench_serve` figures within 20%%.**", sok, sn);
    ty__buf_puts(
        b, " Measured and predicted in the same run of `scripts/sim-validation.sh`. The host is the "
           "catalogue's `host` chip, and every prediction comes from microbenchmarks of the engine's parts, "
           "never from the speeds it is compared with:\n\n"
           "- the roofline each `tongyun bench` process measured before its model ran (read bandwidth, f32 FMA, "
           "int8 dot, bf16 dot; `src/chip/cpu/roofline.c`);\n"
           "- `bench_kernels`: per weight type and thread count, the gemv's speed over a whole Qwen2.5-0.5B "
           "weight set as a share of plain reads of the same memory (decode), and the prefill gemm's share of its "
           "instruction's peak;\n"
           "- `bench_pool`: the thread pool's price per dispatch and the non-matmul ops of one layer (RMS norms, "
           "RoPE, the KV copy, attention over the context, residual adds) on the CPU backend.\n\n"
           "A generated token = (layer matrices + output matrix bytes, from the GGUF file) / (bandwidth x "
           "decode share, bench_kernels' one dispatch per matrix included) + layers x layer ops. A prompt token = each "
           "weight "
           "type's FLOPs / (its peak x its prefill share) + layers x layer ops per token + its share of the "
           "batch's dispatches and of the one output row. `bench_serve` is predicted by the discrete-event "
           "simulation (`src/sim/sim.c`, the server's scheduling defaults: continuous batching, 64-token prefill "
           "chunks, 256 prompt tokens an iteration) of each level as the load generator makes it: a closed loop of "
           "`concurrency` clients, the first requests a ramp-up apart (bench_serve's `ramp_s`, 3 ms: sent at "
           "once, they raced the server's scheduler, which admitted the first alone or the first two together from "
           "run to run), each sending its next request the moment its previous one completes, behind "
           "the server's front end, which takes one request at a time (its event-loop thread: connect, HTTP and "
           "JSON parsing, tokenising) before the scheduler sees it, so that the first request "
           "meets an idle scheduler and prefills alone while the others wait for the next iteration. Its time per "
           "request is bench_serve's own microbenchmark of it (`front_s`: the median round trip of `POST /tokenize` "
           "with a request's prompt on a new connection, on the idle server before the levels). The host chip gets "
           "the same figures as above (bandwidth x decode share; per decoding sequence the decode layer ops; "
           "prefill's layer ops as attention at the share of the FMA peak bench_pool's prefill reached): a decode "
           "batch of n rows costs the one-row weight stream times bench_pool's decode-batch ratio at n columns (the "
           "backend's product over FFN projections at n columns against one, the widths alternating pass by pass; "
           "its driver does not hide the extra columns' arithmetic under the stream), an iteration with prompt "
           "tokens bench_kernels' share of the peak at its width (timed again right before bench_serve). The "
           "simulation does not price the server's per-token work outside the forward pass (sampling, "
           "detokenising, the SSE stream).\n\n");
    if (eng->notes) ty__buf_printf(b, "%s\n\n", eng->notes);
    ty__buf_puts(b,
                 "Measured = the mean over the repetitions, as `tongyun bench` reports it; the error against the "
                 "best repetition follows in brackets.\n\n"
                 "| model | type | threads | pp measured | pp predicted | error (vs best) | tg measured | tg "
                 "predicted | error (vs best) | decode share x GB/s | tg ms: weights / ops | pp ms per token: gemm / "
                 "ops |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i), *bd = json_object_get(r, "breakdown");
        char e1[32], e2[32], e3[32], e4[32];
        ty__buf_printf(
            b,
            "| %s | %s | %d | %.1f | %.1f | %s%s (%s) | %.2f | %.2f | %s%s (%s) | %.2f%s x %.1f | %.1f / %.2f | %.2f / "
            "%.2f |\n",
            jstr(r, "model"), jstr(r, "type"), (int)jnum(r, "threads"), num_at(r, "measured", "pp_tok_s"),
            num_at(r, "predicted", "pp_tok_s"), pct_str(r, "error", "pp_tok_s", e1, sizeof e1),
            within(r, "pp_tok_s", 0.15) ? "" : " ✗", pct_str(r, "error_best", "pp_tok_s", e3, sizeof e3),
            num_at(r, "measured", "tg_tok_s"), num_at(r, "predicted", "tg_tok_s"),
            pct_str(r, "error", "tg_tok_s", e2, sizeof e2), within(r, "tg_tok_s", 0.15) ? "" : " ✗",
            pct_str(r, "error_best", "tg_tok_s", e4, sizeof e4), jnum(bd, "dec_eff"),
            json_is_true(json_object_get(bd, "clamped")) ? "†" : "", jnum(bd, "mem_bw_gbs"), jnum(bd, "tg_weights_ms"),
            jnum(bd, "tg_ops_ms"), jnum(bd, "pp_gemm_ms"), jnum(bd, "pp_ops_ms"));
    }
    ty__buf_puts(b, "\n✗ = outside 15%. † = a kernel share measured above 1 (faster than plain reads of the same "
                    "memory, or than its instruction's peak) was held to 1: the reference measurement beside it was "
                    "disturbed.\n\n");
    if (serve) {
        json_t *jc = json_object_get(serve, "chip");
        ty__buf_printf(b,
                       "`bench_serve` on %s (server with %d threads, --max-seqs %d); simulated host: the read "
                       "bandwidth bench_serve measured around each level (else the bench entry's, %.1f GB/s) x "
                       "%.2f; %.1f us of layer ops per layer and decoding sequence; front end %.2f ms a request "
                       "(bench_serve's front_s); per level, the prefill gemm's share of its peak at a prompt's "
                       "width (bench_kernels) and what a decode batch of `concurrency` rows costs over one row's "
                       "weight stream (bench_pool):\n\n"
                       "| concurrency | prompt / output tokens | GB/s | prefill share | decode batch / one row | "
                       "decode tok/s measured | predicted | error | TTFT p50 measured | predicted | error |\n"
                       "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
                       jstr(serve, "model"), (int)jnum(jc, "threads"), (int)jnum(jc, "max_seqs"),
                       jnum(jc, "mem_bw_gbs"), jnum(jc, "mbu"), jnum(jc, "layer_us"), jnum(jc, "front_ms"));
        for (size_t i = 0; i < json_array_size(lv); i++) {
            json_t *r = json_array_get(lv, i);
            char e1[32], e2[32];
            ty__buf_printf(
                b, "| %d | %.0f / %.0f | %.1f | %.2f | %.2f | %.1f | %.1f | %s%s | %.0f ms | %.0f ms | %s%s |\n",
                (int)jnum(r, "concurrency"), jnum(r, "prompt_tokens"), jnum(r, "output_tokens"), jnum(r, "mem_bw_gbs"),
                jnum(r, "prefill_share"), jnum(r, "decode_batch_ratio"), num_at(r, "measured", "decode_tok_s"),
                num_at(r, "predicted", "decode_tok_s"), pct_str(r, "error", "decode_tok_s", e1, sizeof e1),
                within(r, "decode_tok_s", 0.20) ? "" : " ✗", num_at(r, "measured", "ttft_p50_s") * 1e3,
                num_at(r, "predicted", "ttft_p50_s") * 1e3, pct_str(r, "error", "ttft_p50_s", e2, sizeof e2),
                within(r, "ttft_p50_s", 0.20) ? "" : " ✗");
        }
        ty__buf_puts(b, "\n✗ = outside 20%.\n\n");
    } else if (eng->serve_json) {
        ty__buf_printf(b, "The `bench_serve` prediction failed: %s\n\n", serve_err);
    }
    micro_tables(mb, b);
    ty__buf_puts(
        b, "What the model leaves out, and so where misses come from: the activation quantisation of each product "
           "(bench_kernels quantises outside its timing); the server's per-token work outside the forward pass "
           "(sampling over the vocabulary, detokenising, the SSE stream, and its threads and the load "
           "generator's competing with the compute for the cores), which `bench_serve` pays and the "
           "simulator does not price; the race between the server's threads when requests arrive together (the "
           "simulation serialises them through the front end; a busy machine may let several reach the scheduler "
           "before it wakes); and noise: on a shared machine the bench processes, bench_kernels and "
           "bench_pool run minutes apart and see different neighbours. The prefill share comes from bench_kernels' "
           "gemm on one FFN matrix at a few widths (interpolated to the prompt's, or to a bench_serve level's "
           "prefill batch); where the engine runs another kernel for a type "
           "(chip/cpu/cpu.c: types without a direct packed gemm prefill through gemv tiles) the share is that "
           "kernel's, not the engine's.\n\n");
    json_decref(rows);
    json_decref(serve);
    ty_free(mb);
}
