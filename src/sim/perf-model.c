/*
 * perf-model.c - how long one engine iteration takes: a per-operator roofline on each chip of a serving instance.
 *
 * Every operator costs max(compute, memory) on one chip, where compute = FLOPs / (peak x MFU) and memory = bytes /
 * (bandwidth x MBU), with the efficiency factors of the catalogue (each labelled with its source). Operators:
 *  - GEMMs (attention projections, dense FFN, shared experts, router, output head): FLOPs 2 x M x params over the
 *    tensor-parallel shard, with M padded to the chip's GEMM tile (a batch of 100 rows costs 128 rows on a 64-row
 *    tile); bytes = the shard's weights;
 *  - prefill attention: 2 x (d_qk + d_v) x heads x (query-key pairs), pairs summed causally over each chunk;
 *  - decode attention: the KV cache streamed once per step (MLA: the compressed latent, absorbed);
 *  - Gated DeltaNet layers: the recurrent state read and written per decoding sequence; chunked prefill FLOPs;
 *  - routed experts: tokens x top-k spread over the experts (Poisson), each touched expert's weights read once, each
 *    expert's rows padded to the tile, the busiest expert-parallel rank set by the popularity skew;
 *  - collectives, alpha-beta: ring all-reduce 2(p-1) alpha + 2(p-1)/p bytes / bw for tensor parallelism, all-to-all
 *    dispatch and combine for expert parallelism, point-to-point between pipeline stages;
 *  - a fixed cost per layer (kernel launches) and per iteration (the scheduler).
 *
 * The layout (ty__sim_layout) decides what each chip holds and checks the configuration; its errors name the
 * constraint that failed.
 */
#include "sim/sim.h"
#include "sim/sim-impl.h"

#include <math.h>
#include <stdio.h>
#include <strings.h>

#define STATE_BYTES   4.0   /* linear-attention recurrent state kept in f32 (the recurrence accumulates) */
#define GDN_CHUNK     64.0  /* chunk length of chunked Gated DeltaNet prefill kernels */
#define GPU_RUNTIME_B 0.5e9 /* device memory the runtime keeps (context, graphs, workspace); est. */
#define CPU_RUNTIME_B 0.25e9
#define GIB           1073741824.0

void ty__sim_config_defaults(struct ty_sim_config *c) {
    if (c->chips <= 0) c->chips = 1;
    if (c->chip && c->chips_per_node <= 0) c->chips_per_node = c->chip->node_chips > 0 ? c->chip->node_chips : 8;
    if (c->tp <= 0) c->tp = 1;
    if (c->pp <= 0) c->pp = 1;
    if (c->ep <= 0) c->ep = 1;
    if (c->inter_gbps <= 0) c->inter_gbps = 400;
    if (c->inter_alpha_us <= 0) c->inter_alpha_us = 10;
    /* The scheduling defaults of our server (src/cloud/engine.c) on a CPU; GPU-sized budgets elsewhere. */
    bool cpu = c->chip && c->chip->kind == TY_SIM_CHIP_CPU;
    if (c->max_batch_tokens <= 0) c->max_batch_tokens = cpu ? 256 : 8192;
    if (c->prefill_chunk <= 0) c->prefill_chunk = cpu ? 64 : c->max_batch_tokens;
    if (c->max_seqs <= 0) c->max_seqs = cpu ? 8 : 256;
    if (c->slo_ttft_ms <= 0) c->slo_ttft_ms = 2000;
    if (c->slo_tpot_ms <= 0) c->slo_tpot_ms = 100;
    if (c->moe_skew < 0) c->moe_skew = 0.3;
    if (c->idle_power_frac <= 0) c->idle_power_frac = 0.3;
    if (c->price_hr <= 0 && c->chip) c->price_hr = c->chip->price_hr.v;
    if (c->mem_util <= 0 && c->chip) c->mem_util = c->chip->mem_util.v > 0 ? c->chip->mem_util.v : 0.9;
}

/* ==== Precision to peak ==== */

/* FLOP/s of GEMMs with weights `w` and activations `a` on chip `c`: W8A8 runs at the 8-bit rate where the chip has
 * it; weight-only formats (INT4, FP8 without FP8 units) are dequantised and computed at the BF16 rate. */
static double gemm_peak(const struct ty_sim_chip *c, enum ty_sim_dtype w, enum ty_sim_dtype a, double file_bits) {
    double bf16 = c->bf16_tflops.v * 1e12;
    if (c->kind == TY_SIM_CHIP_CPU) {
        /* Our CPU engine: quantised weights meet int8-quantised activations in integer dot products; 16- and 32-bit
         * weights are computed in f32 (bf16_tflops holds the measured f32 FMA rate). */
        bool quant =
            file_bits > 0 ? file_bits < 15 : (w == TY_SIM_DT_INT8 || w == TY_SIM_DT_INT4 || w == TY_SIM_DT_FP8);
        return quant && c->int8_tops.v > 0 ? c->int8_tops.v * 1e12 : bf16;
    }
    if (w == TY_SIM_DT_FP8 && a == TY_SIM_DT_FP8 && c->fp8_tflops.v > 0) return c->fp8_tflops.v * 1e12;
    if (w == TY_SIM_DT_INT8 && a == TY_SIM_DT_INT8 && c->int8_tops.v > 0) return c->int8_tops.v * 1e12;
    return bf16;
}

/* ==== Layout ==== */

static const char *model_name(const struct ty_sim_model *m) {
    return m->name[0] ? m->name : "the model";
}

static void divisors(int n, char *buf, size_t cap) {
    size_t off = 0;
    buf[0] = 0;
    for (int d = 1; d <= n && off + 12 < cap; d++)
        if (n % d == 0) off += (size_t)snprintf(buf + off, cap - off, "%s%d", off ? ", " : "", d);
}

/* Weight bytes per parameter: the file's own average when the model came from a GGUF file, else the precision. */
static double weight_bytes(const struct ty_sim_config *c) {
    if (c->model->file_weight_bits > 0) return c->model->file_weight_bits / 8;
    return ty__sim_dtype_bytes(c->weight);
}

/* Embeddings stay in 16-bit when the layers are quantised below that (common practice in FP8/INT4 checkpoints). */
static double embd_bytes(const struct ty_sim_config *c) {
    double wb = weight_bytes(c);
    return c->model->file_weight_bits > 0 ? wb : (wb < 2 ? 2 : wb);
}

enum ty_status ty__sim_layout(const struct ty_sim_config *c, struct ty_sim_layout *l) {
    memset(l, 0, sizeof *l);
    const struct ty_sim_model *m = c->model;
    const struct ty_sim_chip *ch = c->chip;
    if (!m || !ch) return ty__error(TY_ERR_INVALID_ARG, "simulation needs a model and a chip");
    TY_TRY(ty__sim_model_validate(m));
    struct ty_sim_model_stats s;
    ty__sim_model_stats(m, &s);
    const char *mn = model_name(m);
    char divs[256];
    if (c->tp < 1 || c->pp < 1 || c->ep < 1 || c->dp < 0 || c->chips < 1)
        return ty__error(TY_ERR_INVALID_ARG, "TP, PP, EP and --chips must be at least 1 (DP at least 0)");
    if (ch->mem_gb.v <= 0 || ch->mem_bw_gbs.v <= 0 || ch->bf16_tflops.v <= 0)
        return ty__error(
            TY_ERR_INVALID_ARG, "chip '%s' has no measured memory, bandwidth or compute figures%s", ch->name,
            ch->kind == TY_SIM_CHIP_CPU ? " (the host is measured at start-up; do not pass --no-measure)" : "");
    /* Tensor parallelism splits heads. */
    if (m->n_head % c->tp) {
        divisors(m->n_head, divs, sizeof divs);
        return ty__error(TY_ERR_INVALID_ARG,
                         "TP %d does not divide the %d attention heads of %s; use a TP that "
                         "divides %d (%s)",
                         c->tp, m->n_head, mn, m->n_head, divs);
    }
    if (m->attn == TY_SIM_ATTN_GQA && m->n_head_kv % c->tp && c->tp % m->n_head_kv)
        return ty__error(TY_ERR_INVALID_ARG,
                         "TP %d neither divides nor is a multiple of the %d KV heads of %s (KV heads "
                         "are split, or replicated when TP exceeds them)",
                         c->tp, m->n_head_kv, mn);
    if (s.n_lin && (m->lin_v_heads % c->tp || (m->lin_k_heads % c->tp && c->tp % m->lin_k_heads)))
        return ty__error(TY_ERR_INVALID_ARG,
                         "TP %d does not divide the %d linear-attention value heads (%d key heads) "
                         "of %s",
                         c->tp, m->lin_v_heads, m->lin_k_heads, mn);
    /* Expert parallelism splits experts. */
    if (c->ep > 1 && m->n_expert == 0)
        return ty__error(TY_ERR_INVALID_ARG, "EP %d needs a mixture-of-experts model; %s is dense (use --ep 1)", c->ep,
                         mn);
    if (c->ep > 1 && m->n_expert % c->ep) {
        divisors(m->n_expert, divs, sizeof divs);
        return ty__error(TY_ERR_INVALID_ARG,
                         "EP %d does not divide the %d experts of %s; use an EP that divides %d (%s)", c->ep,
                         m->n_expert, mn, m->n_expert, divs);
    }
    if (c->ep > c->tp ? c->ep % c->tp : c->tp % c->ep)
        return ty__error(TY_ERR_INVALID_ARG,
                         "EP %d and TP %d must divide one another: EP above TP runs EP/TP attention "
                         "data-parallel groups, EP below TP splits each expert over TP/EP chips",
                         c->ep, c->tp);
    if (c->pp > m->n_layer)
        return ty__error(TY_ERR_INVALID_ARG, "PP %d exceeds the %d layers of %s", c->pp, m->n_layer, mn);
    l->inst_chips = (c->tp > c->ep ? c->tp : c->ep) * c->pp;
    l->attn_groups = c->ep > c->tp ? c->ep / c->tp : 1;
    l->engines_per_inst = c->pp;
    if (c->dp > 0) {
        if ((long)c->dp * l->inst_chips != c->chips)
            return ty__error(TY_ERR_INVALID_ARG, "max(TP, EP) x PP x DP = %d x %d x %d = %ld chips, but --chips is %d",
                             l->inst_chips / c->pp, c->pp, c->dp, (long)c->dp * l->inst_chips, c->chips);
        l->n_inst = c->dp;
    } else {
        if (c->chips % l->inst_chips)
            return ty__error(TY_ERR_INVALID_ARG,
                             "--chips %d is not a multiple of the %d chips of one replica "
                             "(max(TP %d, EP %d) x PP %d)",
                             c->chips, l->inst_chips, c->tp, c->ep, c->pp);
        l->n_inst = c->chips / l->inst_chips;
    }
    int cpn = c->chips_per_node > 0 ? c->chips_per_node : (ch->node_chips > 0 ? ch->node_chips : 8);
    l->nodes = (c->chips + cpn - 1) / cpn;
    if (c->disagg_prefill < 0 || (c->disagg_prefill > 0 && c->disagg_prefill >= l->n_inst))
        return ty__error(TY_ERR_INVALID_ARG,
                         "prefill/decode disaggregation needs 1 <= prefill instances (%d) < "
                         "instances (%d)",
                         c->disagg_prefill, l->n_inst);
    l->n_prefill_inst = c->disagg_prefill;

    /* What one chip holds: its tensor-parallel shard of its pipeline stage, its expert-parallel share of experts. */
    double lay_frac = ceil((double)m->n_layer / c->pp) / m->n_layer;
    int tp_e = c->ep < c->tp ? c->tp / c->ep : 1;
    double wb = weight_bytes(c), eb = embd_bytes(c);
    double per_layers = (s.n_full * s.p_attn + s.n_lin * s.p_lin + s.n_dense * s.p_ffn + s.n_moe * s.p_shexp) / c->tp +
                        s.n_moe * s.p_router + s.n_moe * (double)m->n_expert * s.p_exp / ((double)c->ep * tp_e);
    double embd = s.p_embd / c->tp, head = m->tied ? 0 : s.p_head / c->tp;
    double ends = c->pp == 1 ? embd + head : (embd > head ? embd : head);
    l->weight_bytes_chip = per_layers * lay_frac * wb + ends * eb;
    /* Activations of the largest batch, and the logits of every sequence. */
    double groups = l->attn_groups;
    double width = m->n_expert > 0 ? (double)m->n_ff_exp * m->n_expert_used : m->n_ff;
    l->act_bytes_chip = c->max_batch_tokens * (16.0 * m->n_embd + 6.0 * width / c->tp) +
                        (double)c->max_seqs * m->n_vocab / c->tp * 4 +
                        (ch->kind == TY_SIM_CHIP_CPU ? CPU_RUNTIME_B : GPU_RUNTIME_B);
    l->usable_bytes_chip = ch->mem_gb.v * GIB * (c->mem_util > 0 ? c->mem_util : 0.9);
    double kvb = ty__sim_dtype_bytes(c->kv);
    double kv_heads_chip =
        m->attn == TY_SIM_ATTN_MLA ? 1.0 : (m->n_head_kv >= c->tp ? 1.0 / c->tp : 1.0 / m->n_head_kv);
    l->kv_bytes_token = s.n_full * s.kv_elems_token * kv_heads_chip * kvb * lay_frac;
    l->state_bytes_seq = s.n_lin * s.lin_state_elems / c->tp * STATE_BYTES * lay_frac;
    double free_b = l->usable_bytes_chip - l->weight_bytes_chip - l->act_bytes_chip;
    if (free_b <= 0) {
        double total = l->weight_bytes_chip * l->inst_chips;
        return ty__error(TY_ERR_INVALID_ARG,
                         "%s does not fit the memory: in %s its weights take %.1f GB per chip "
                         "(%.1f GB over a replica of %d chip%s: TP %d, PP %d, EP %d) plus %.1f GB of activations, "
                         "but a %s offers %.0f GiB x %.2f = %.1f GB; use more chips per replica (--tp, --pp, --ep), a "
                         "smaller precision (--precision fp8 or int4) or a chip with more memory",
                         mn, m->file_weight_bits > 0 ? "this file's types" : ty__sim_dtype_name(c->weight),
                         l->weight_bytes_chip / 1e9, total / 1e9, l->inst_chips, l->inst_chips == 1 ? "" : "s", c->tp,
                         c->pp, c->ep, l->act_bytes_chip / 1e9, ch->name, ch->mem_gb.v,
                         c->mem_util > 0 ? c->mem_util : 0.9, l->usable_bytes_chip / 1e9);
    }
    /* Each attention group holds its own sequences; each pipeline virtual engine a 1/PP share of every stage. */
    l->kv_cap_bytes = free_b * groups / c->pp;
    l->kv_cap_tokens = l->kv_bytes_token > 0 ? l->kv_cap_bytes / l->kv_bytes_token : INFINITY;
    return TY_OK;
}

/* ==== Coefficients ==== */

#define MOE_TAB_MAX (1 << 17)

struct ty_sim_perf {
    const struct ty_sim_model *m;
    struct ty_sim_model_stats s;
    struct ty_sim_layout l;
    int tp, pp, ep, tp_e, groups;
    double lay_frac;
    double peak, peak_attn, bw;
    double mfu, mbu, attn_mfu, attn_mbu, tile, layer_s, step_s;
    double wb, ab, kvb;
    double kv_heads_chip;
    double skew;
    double tp_bw, tp_alpha, ep_bw, ep_alpha, pp_bw, pp_alpha;
    double *moe_tab; /* (moe_tab_n) expert time per MoE layer by instance tokens; NaN = not yet computed */
    int moe_tab_n;
    /* A measured GEMM curve (ty_sim_config.gemm_rows): compute widths with their share of the peak, and stream widths
     * with their time relative to the narrowest one's */
    double dec_layer_s;
    int n_cw, n_sw;
    double cw[TY_SIM_GEMM_MAX], cshare[TY_SIM_GEMM_MAX], sw[TY_SIM_GEMM_MAX], sratio[TY_SIM_GEMM_MAX];
};

/* y at x by linear interpolation in log(x) between the points (xs ascending), held at the ends. */
static double interp_log(const double *xs, const double *ys, int n, double x) {
    if (x <= xs[0]) return ys[0];
    for (int i = 1; i < n; i++)
        if (x <= xs[i]) {
            double f = log(x / xs[i - 1]) / log(xs[i] / xs[i - 1]);
            return ys[i - 1] + f * (ys[i] - ys[i - 1]);
        }
    return ys[n - 1];
}

/* Splits a configuration's measured GEMM curve into its compute and stream parts (see TY_SIM_GEMM_STREAM_ROWS). A
 * width of m rows at share s took m / s units of time, so a stream width's ratio to the narrowest is
 * (m / s) / (m0 / s0). */
static void gemm_curve(struct ty_sim_perf *p, const struct ty_sim_config *c) {
    int n = c->gemm_n < TY_SIM_GEMM_MAX ? c->gemm_n : TY_SIM_GEMM_MAX;
    double t0 = 0, last = 0;
    for (int i = 0; i < n; i++) {
        double m = c->gemm_rows[i], sh = c->gemm_share[i];
        if (!(m >= 1) || !(m > last) || !(sh > 0)) continue; /* ascending widths, positive shares */
        last = m;
        if (m >= TY_SIM_GEMM_STREAM_ROWS) {
            p->cw[p->n_cw] = m, p->cshare[p->n_cw++] = sh > 1 ? 1 : sh;
        } else if (c->dec_n <= 0) {
            double t = m / sh;
            if (!p->n_sw) t0 = t;
            p->sw[p->n_sw] = m, p->sratio[p->n_sw++] = t / t0;
        }
    }
    /* ratios measured directly take the place of the narrow widths' */
    int nd = c->dec_n < TY_SIM_GEMM_MAX ? c->dec_n : TY_SIM_GEMM_MAX;
    last = 0;
    for (int i = 0; i < nd; i++) {
        double m = c->dec_rows[i], r = c->dec_ratio[i];
        if (!(m >= 1) || !(m > last) || !(r > 0) || m >= TY_SIM_GEMM_STREAM_ROWS) continue;
        last = m;
        p->sw[p->n_sw] = m, p->sratio[p->n_sw++] = r;
    }
}

/* The share of the peak a GEMM of m rows reaches: measured where the configuration has a curve, else the MFU. */
static double share_at(const struct ty_sim_perf *p, double m) {
    return p->n_cw ? interp_log(p->cw, p->cshare, p->n_cw, m) : p->mfu;
}

/* The weight stream's time at m rows relative to one row's (1 without a measured curve): a kernel that does not hide
 * the extra rows' arithmetic under the stream pays for it even while memory-bound. Held between 1 (m rows cannot
 * stream the weights faster than one) and m / m0 (nor slower than streaming them once per row): a ratio outside says
 * the two widths were measured in different states of a shared machine. */
static double stream_ratio(const struct ty_sim_perf *p, double m) {
    if (!p->n_sw || m <= p->sw[0]) return 1;
    double r = interp_log(p->sw, p->sratio, p->n_sw, m);
    return r < 1 ? 1 : r > m / p->sw[0] ? m / p->sw[0] : r;
}

static double link_bw(const struct ty_sim_config *c, bool cross_node, double *alpha) {
    const struct ty_sim_chip *ch = c->chip;
    double intra = c->intra_gbs > 0 ? c->intra_gbs / 2 : ch->link_gbs.v / 2;
    if (c->intra_link && !strcasecmp(c->intra_link, "pcie")) intra = ch->host_gbs.v > 0 ? ch->host_gbs.v : 32;
    double inter = c->inter_gbps / 8;
    if (cross_node || intra <= 0) {
        *alpha = c->inter_alpha_us * 1e-6;
        return (intra > 0 && intra < inter ? intra : inter) * 1e9 * TY_SIM_LINK_EFF;
    }
    *alpha = ch->link_alpha_us.v * 1e-6;
    return intra * 1e9 * TY_SIM_LINK_EFF;
}

enum ty_status ty__sim_perf_init(const struct ty_sim_config *c, const struct ty_sim_layout *l,
                                 struct ty_sim_perf **out) {
    *out = NULL;
    struct ty_sim_perf *p = ty__calloc(1, sizeof *p);
    if (!p) return ty__error(TY_ERR_NO_MEMORY, "performance model: out of memory");
    const struct ty_sim_chip *ch = c->chip;
    p->m = c->model;
    ty__sim_model_stats(c->model, &p->s);
    p->l = *l;
    p->tp = c->tp;
    p->pp = c->pp;
    p->ep = c->ep;
    p->tp_e = c->ep < c->tp ? c->tp / c->ep : 1;
    p->groups = l->attn_groups;
    p->lay_frac = ceil((double)c->model->n_layer / c->pp) / c->model->n_layer;
    p->peak = gemm_peak(ch, c->weight, c->act, c->model->file_weight_bits);
    p->peak_attn = ch->bf16_tflops.v * 1e12;
    p->bw = ch->mem_bw_gbs.v * 1e9;
    p->mfu = ch->mfu.v > 0 ? ch->mfu.v : 0.5;
    p->mbu = ch->mbu.v > 0 ? ch->mbu.v : 0.7;
    p->attn_mfu = ch->attn_mfu.v > 0 ? ch->attn_mfu.v : 0.5;
    p->attn_mbu = ch->attn_mbu.v > 0 ? ch->attn_mbu.v : 0.6;
    p->tile = ch->tile_m.v >= 1 ? ch->tile_m.v : 1;
    p->layer_s = ch->layer_us.v * 1e-6;
    p->step_s = ch->step_ms.v * 1e-3;
    p->dec_layer_s = c->dec_layer_us > 0 ? c->dec_layer_us * 1e-6 : 0;
    gemm_curve(p, c);
    p->wb = weight_bytes(c);
    p->ab = c->act == TY_SIM_DT_FP8 || c->act == TY_SIM_DT_INT8 ? 1 : 2;
    p->kvb = ty__sim_dtype_bytes(c->kv);
    p->kv_heads_chip = c->model->attn == TY_SIM_ATTN_MLA
                           ? 1.0
                           : (c->model->n_head_kv >= c->tp ? (double)c->model->n_head_kv / c->tp : 1.0);
    p->skew = c->moe_skew >= 0 ? c->moe_skew : 0.3;
    int cpn = c->chips_per_node > 0 ? c->chips_per_node : (ch->node_chips > 0 ? ch->node_chips : 8);
    p->tp_bw = link_bw(c, c->tp > cpn, &p->tp_alpha);
    int span = c->tp > c->ep ? c->tp : c->ep;
    p->ep_bw = link_bw(c, span > cpn, &p->ep_alpha);
    p->pp_bw = link_bw(c, l->inst_chips > cpn, &p->pp_alpha);
    if (c->model->n_expert > 0) {
        long n = (long)c->max_batch_tokens * l->attn_groups + 1;
        if (n > MOE_TAB_MAX) n = MOE_TAB_MAX;
        p->moe_tab = ty__malloc((size_t)n * sizeof *p->moe_tab);
        if (!p->moe_tab) {
            ty_free(p);
            return ty__error(TY_ERR_NO_MEMORY, "performance model: out of memory");
        }
        for (long i = 0; i < n; i++) p->moe_tab[i] = NAN;
        p->moe_tab_n = (int)n;
    }
    *out = p;
    return TY_OK;
}

void ty__sim_perf_free(struct ty_sim_perf *p) {
    if (!p) return;
    ty_free(p->moe_tab);
    ty_free(p);
}

double ty__sim_gemm_stream_ratio(const struct ty_sim_config *c, double rows) {
    struct ty_sim_perf p;
    memset(&p, 0, sizeof p);
    gemm_curve(&p, c);
    return stream_ratio(&p, rows);
}

double ty__sim_gemm_share(const struct ty_sim_config *c, double rows) {
    struct ty_sim_perf p;
    memset(&p, 0, sizeof p);
    p.mfu = c->chip && c->chip->mfu.v > 0 ? c->chip->mfu.v : 0.5;
    gemm_curve(&p, c);
    return share_at(&p, rows);
}

/* ==== Operators (one chip, one layer) ==== */

static double pad_rows(const struct ty_sim_perf *p, double m) {
    if (m <= 0) return 0;
    if (p->tile <= 1) return m;
    return ceil(m / p->tile - 1e-9) * p->tile;
}

/* A GEMM of M rows against `params` weights (this chip's shard). */
static double gemm(const struct ty_sim_perf *p, double m, double params) {
    if (m <= 0 || params <= 0) return 0;
    double tc = 2 * pad_rows(p, m) * params / (p->peak * share_at(p, m));
    double tm = params * p->wb / (p->bw * p->mbu) * stream_ratio(p, m);
    return tc > tm ? tc : tm;
}

/* Ring all-reduce of `bytes` over `n` chips. */
static double allreduce(double bytes, int n, double bw, double alpha) {
    if (n <= 1 || bytes <= 0) return 0;
    return 2.0 * (n - 1) * alpha + 2.0 * (n - 1) / n * bytes / bw;
}

/* E[ceil(X / t)] * t for X ~ Poisson(lambda): rows a tile-padded expert GEMM computes. */
static double padded_poisson(double lambda, double t) {
    if (lambda <= 0) return 0;
    if (t <= 1) return lambda;
    if (lambda > 30 && lambda > 2 * t) return lambda + t / 2;
    double pmf = exp(-lambda), sum = 0;
    int xmax = (int)(lambda + 12 * sqrt(lambda) + 30);
    for (int x = 1; x <= xmax; x++) {
        pmf *= lambda / x;
        sum += pmf * ceil(x / t);
    }
    return sum * t;
}

/* Routed experts of one MoE layer on the busiest chip, for `tok` tokens in the instance. */
static double moe_experts(const struct ty_sim_perf *p, double tok) {
    const struct ty_sim_model *m = p->m;
    if (tok <= 0) return 0;
    double assign = tok * m->n_expert_used;
    double lambda = assign / m->n_expert;
    double e_loc = (double)m->n_expert / p->ep;
    double params = p->s.p_exp / p->tp_e;
    double touched = e_loc * (1 - exp(-lambda));
    double rows = e_loc * padded_poisson(lambda, p->tile);
    /* The busiest of the EP ranks: its load exceeds the mean by about sqrt(2 ln EP) standard deviations, where the
     * variance has a multinomial part and a part from uneven expert popularity (coefficient of variation `skew`). */
    if (p->ep > 1) {
        double mu = assign / p->ep;
        double imb = 1 + sqrt(p->skew * p->skew / e_loc + 1 / (mu > 1 ? mu : 1)) * sqrt(2 * log((double)p->ep));
        double weight = lambda / p->tile < 1 ? lambda / p->tile : 1; /* padding hides imbalance below one tile */
        rows *= 1 + (imb - 1) * weight;
    }
    double tc = 2 * rows * params / (p->peak * p->mfu);
    double tm = touched * params * p->wb / (p->bw * p->mbu);
    return tc > tm ? tc : tm;
}

static double moe_time(struct ty_sim_perf *p, double tok) {
    long i = (long)(tok + 0.5);
    if (fabs(tok - (double)i) < 1e-9 && i >= 0 && i < p->moe_tab_n) {
        if (isnan(p->moe_tab[i])) p->moe_tab[i] = moe_experts(p, (double)i);
        return p->moe_tab[i];
    }
    return moe_experts(p, tok);
}

/* ==== One iteration ==== */

double ty__sim_step_time(struct ty_sim_perf *p, const struct ty_sim_batch *b, struct ty_sim_breakdown *bd) {
    const struct ty_sim_model *m = p->m;
    const struct ty_sim_model_stats *s = &p->s;
    struct ty_sim_breakdown z = {0};
    double tok = b->n_pf_tok + b->n_dec;
    double g = p->groups;
    double tg = tok / g; /* tokens per attention group: each group of TP chips sees its own share */
    double heads = (double)m->n_head / p->tp;
    /* Full attention layers. */
    double t_proj = gemm(p, tg, s->p_attn / p->tp);
    double attn_pf = 0, attn_dec = 0;
    if (b->pf_attn_work > 0)
        attn_pf = 2 * (s->attn_qk_dim + s->attn_pv_dim) * heads * (b->pf_attn_work / g) / (p->peak_attn * p->attn_mfu);
    if (b->n_dec > 0) {
        double ctx = b->dec_ctx / g;
        double kv_elems =
            m->attn == TY_SIM_ATTN_MLA ? s->kv_elems_token : s->kv_elems_token / m->n_head_kv * p->kv_heads_chip;
        double qk = m->attn == TY_SIM_ATTN_MLA ? m->kv_lora + m->qk_rope : s->attn_qk_dim;
        double pv = m->attn == TY_SIM_ATTN_MLA ? m->kv_lora : s->attn_pv_dim;
        double tc = 2 * (qk + pv) * heads * ctx / (p->peak_attn * p->attn_mfu);
        double tm = ctx * kv_elems * p->kvb / (p->bw * p->attn_mbu);
        attn_dec = tc > tm ? tc : tm;
    }
    /* Linear attention layers: projections, the chunked prefill, the state read and written per decode. */
    double t_lin = 0, t_lin_proj = 0;
    if (s->n_lin > 0) {
        t_lin_proj = gemm(p, tg, s->p_lin / p->tp);
        double vh = (double)m->lin_v_heads / p->tp;
        double state = vh * m->lin_k_dim * m->lin_v_dim;
        double pf_flops = (b->n_pf_tok / g) * vh *
                          (6.0 * m->lin_k_dim * m->lin_v_dim + 2 * GDN_CHUNK * (m->lin_k_dim + m->lin_v_dim));
        double dec_flops = (b->n_dec / g) * vh * 6.0 * m->lin_k_dim * m->lin_v_dim;
        double bytes = ((b->n_dec + b->n_pf_seq) / g) * 2 * state * STATE_BYTES;
        double tc = (pf_flops + dec_flops) / (p->peak_attn * p->attn_mfu);
        double tm = bytes / (p->bw * p->mbu);
        t_lin = tc > tm ? tc : tm;
    }
    /* Feed-forward. */
    double t_ffn = gemm(p, tg, s->p_ffn / p->tp);
    double t_moe = 0, t_shexp = 0, t_a2a = 0;
    if (s->n_moe > 0) {
        t_moe = moe_time(p, tok);
        t_shexp = gemm(p, tg, s->p_shexp / p->tp) + gemm(p, tg, s->p_router);
        if (p->ep > p->tp) {
            /* Dispatch and combine: each chip sends its tokens' top-k copies to the other EP ranks. */
            double bytes = tok / p->ep * m->n_expert_used * m->n_embd * p->ab * (p->ep - 1) / p->ep;
            t_a2a = 2 * (p->ep_alpha + bytes / p->ep_bw);
        }
    }
    /* Tensor-parallel all-reduces: after attention, and after the FFN unless EP combines the experts' output. */
    double ar_bytes = tg * m->n_embd * 2;
    double t_ar = allreduce(ar_bytes, p->tp, p->tp_bw, p->tp_alpha);
    double n_ar_moe = p->ep > p->tp ? 1 : 2;

    double f = p->lay_frac;
    z.gemm = f * (s->n_full * t_proj + s->n_lin * t_lin_proj + s->n_dense * t_ffn + s->n_moe * t_shexp);
    z.attn_pf = f * s->n_full * attn_pf;
    z.attn_dec = f * s->n_full * attn_dec;
    z.lin_attn = f * s->n_lin * t_lin;
    z.moe = f * s->n_moe * t_moe;
    z.comm = f * (s->n_dense * 2 * t_ar + s->n_moe * (n_ar_moe * t_ar + t_a2a));
    z.fixed = f * m->n_layer * (p->layer_s + p->dec_layer_s * b->n_dec / g);
    /* The output head runs on the last stage for the rows that need logits. */
    z.lm_head = gemm(p, b->n_logits / g, s->p_head / p->tp);
    double stage = z.gemm + z.attn_pf + z.attn_dec + z.lin_attn + z.moe + z.comm + z.fixed + z.lm_head;
    double total = stage;
    if (p->pp > 1) {
        double p2p = p->pp_alpha + tg * m->n_embd * p->ab / p->pp_bw;
        total = p->pp * stage + (p->pp - 1) * p2p;
        z.comm = p->pp * z.comm + (p->pp - 1) * p2p;
        z.gemm *= p->pp, z.attn_pf *= p->pp, z.attn_dec *= p->pp, z.lin_attn *= p->pp, z.moe *= p->pp;
        z.fixed *= p->pp, z.lm_head *= p->pp;
    }
    z.fixed += p->step_s;
    total += p->step_s;
    z.total = total;
    if (bd) *bd = z;
    return total;
}

void ty__sim_decode_affine(struct ty_sim_perf *p, double n_dec, double *c0, double *c1) {
    /* Only decode attention depends on the context, and it is linear in it (both roofline sides are), so two points
     * give the line exactly. */
    struct ty_sim_batch b = {.n_dec = n_dec, .dec_ctx = 0, .n_logits = n_dec};
    double t0 = ty__sim_step_time(p, &b, NULL);
    b.dec_ctx = 1e6;
    double t1 = ty__sim_step_time(p, &b, NULL);
    *c0 = t0;
    *c1 = (t1 - t0) / 1e6;
}
