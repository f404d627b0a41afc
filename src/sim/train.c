/*
 * train.c - training mode: the step time and MFU of pretraining a model on N chips with data, tensor and pipeline
 * parallelism and ZeRO stages 0-3.
 *
 * Model FLOPs per token are 6 x active parameters (forward 2, backward 4) plus causal attention, 6 x layers x heads x
 * head_dim x sequence (PaLM's 12 L H Q T, halved for the causal mask); full recomputation adds another forward pass,
 * which costs time but, by the usual convention, does not count toward MFU. Per micro-batch, each pipeline stage
 * computes its layers' share on its TP shard at the chip's measured-or-assumed GEMM efficiency and exchanges four
 * all-reduces per layer (two forward, two backward) over the TP group. The 1F1B schedule adds (PP-1) micro-batch
 * slots of bubble. Gradients are reduced over the DP group once per step: ZeRO 0-2 move 2x the gradient bytes in a
 * ring (reduce-scatter + all-gather), ZeRO 3 adds two parameter all-gathers (forward and backward). Backward overlaps
 * the gradient reduction up to OVERLAP of its length (bucketed reduction, as Megatron and DeepSpeed do).
 *
 * Memory per chip: BF16 weights and gradients, FP32 master weights and Adam moments (12 bytes), sharded by ZeRO
 * stage; activations per layer per micro-batch 34 x s x b x h / TP bytes (Korthikanti et al. 2022, with flash
 * attention), 2 x s x b x h with full recomputation, times the micro-batches in flight on the first stage.
 */
#include "sim/sim.h"
#include "sim/sim-impl.h"

#include <math.h>
#include <stdio.h>

#define OVERLAP 0.8 /* share of the backward pass that can hide gradient reduction; assumption */
#define GIB     1073741824.0

static double ring(double bytes, int n, double bw, double alpha, double factor) {
    if (n <= 1) return 0;
    return factor * ((n - 1) * alpha + (double)(n - 1) / n * bytes / bw);
}

enum ty_status ty__sim_train(const struct ty_sim_train_config *c, struct ty_sim_train_result *r) {
    memset(r, 0, sizeof *r);
    const struct ty_sim_model *m = c->model;
    const struct ty_sim_chip *ch = c->chip;
    if (!m || !ch) return ty__error(TY_ERR_INVALID_ARG, "training needs a model and a chip");
    TY_TRY(ty__sim_model_validate(m));
    if (c->tp < 1 || c->pp < 1 || c->dp < 0 || c->chips < 1)
        return ty__error(TY_ERR_INVALID_ARG, "TP, PP and --chips must be at least 1");
    if (c->zero < 0 || c->zero > 3) return ty__error(TY_ERR_INVALID_ARG, "ZeRO stage %d: use 0, 1, 2 or 3", c->zero);
    if (m->n_head % c->tp)
        return ty__error(TY_ERR_INVALID_ARG, "TP %d does not divide the %d attention heads of %s", c->tp, m->n_head,
                         m->name);
    if (c->pp > m->n_layer) return ty__error(TY_ERR_INVALID_ARG, "PP %d exceeds the %d layers", c->pp, m->n_layer);
    int dp = c->dp > 0 ? c->dp : c->chips / (c->tp * c->pp);
    if (dp < 1 || (long)dp * c->tp * c->pp != c->chips)
        return ty__error(TY_ERR_INVALID_ARG, "TP x PP x DP = %d x %d x %d must equal --chips %d", c->tp, c->pp, dp,
                         c->chips);
    if (c->seq_len < 1 || c->micro_batch < 1 || c->global_batch < 1)
        return ty__error(TY_ERR_INVALID_ARG, "sequence length, micro-batch and global batch must be at least 1");
    if (c->global_batch % (c->micro_batch * dp))
        return ty__error(TY_ERR_INVALID_ARG,
                         "the global batch (%d sequences) must be a multiple of micro-batch x DP "
                         "= %d x %d",
                         c->global_batch, c->micro_batch, dp);
    if (ch->bf16_tflops.v <= 0 || ch->mem_gb.v <= 0)
        return ty__error(TY_ERR_INVALID_ARG, "chip '%s' has no compute or memory figures", ch->name);
    struct ty_sim_model_stats s;
    ty__sim_model_stats(m, &s);
    int n_micro = c->global_batch / (c->micro_batch * dp);
    r->n_micro = n_micro;
    double seq = c->seq_len, mb = c->micro_batch, h = m->n_embd;
    /* causal: 3 x heads x (d_qk + d_v) x seq per layer, forward and backward */
    double attn_tok = 3.0 * s.n_full * m->n_head * (s.attn_qk_dim + s.attn_pv_dim) * seq;
    r->flops_per_token = 6 * s.params_active + attn_tok;
    double work = r->flops_per_token * (c->recompute ? 8.0 / 6.0 : 1.0);
    /* One micro-batch on one stage and one TP shard. */
    double peak = ch->bf16_tflops.v * 1e12, mfu = ch->mfu.v > 0 ? ch->mfu.v : 0.5;
    double t_mb = work * mb * seq / c->pp / c->tp / (peak * mfu) + 3.0 * m->n_layer / c->pp * ch->layer_us.v * 1e-6;
    int cpn = c->chips_per_node > 0 ? c->chips_per_node : (ch->node_chips > 0 ? ch->node_chips : 8);
    double intra = ch->link_gbs.v / 2 * 1e9 * TY_SIM_LINK_EFF,
           inter = (c->inter_gbps > 0 ? c->inter_gbps : 400) / 8 * 1e9 * TY_SIM_LINK_EFF;
    if (intra <= 0) intra = inter;
    double a_intra = ch->link_alpha_us.v * 1e-6, a_inter = 10e-6;
    double tp_bw = c->tp <= cpn ? intra : (intra < inter ? intra : inter);
    double tp_a = c->tp <= cpn ? a_intra : a_inter;
    double act_bytes = mb * seq * h * 2;
    double t_tp_mb = 4.0 * m->n_layer / c->pp * ring(act_bytes, c->tp, tp_bw, tp_a, 2);
    /* Pipeline: 1F1B, and a point-to-point activation per micro-batch per stage boundary, both directions. */
    bool pp_cross = (long)c->tp * c->pp > cpn;
    double pp_bw = pp_cross ? (intra < inter ? intra : inter) : intra, pp_a = pp_cross ? a_inter : a_intra;
    double t_p2p = c->pp > 1 ? 2 * (pp_a + act_bytes / pp_bw) : 0;
    double slot = t_mb + t_tp_mb + t_p2p;
    r->t_compute = n_micro * t_mb;
    r->t_tp_comm = n_micro * t_tp_mb;
    r->t_pp_comm = n_micro * t_p2p;
    r->t_bubble = (c->pp - 1) * slot;
    double pipeline = (n_micro + c->pp - 1) * slot;
    /* Data parallel: gradients (and with ZeRO-3, parameters) over the DP group; it spans nodes unless it fits one. */
    double params_chip = s.params_total / c->tp / c->pp;
    bool dp_cross = (long)dp * c->tp * c->pp > cpn;
    double dp_bw = dp_cross ? (intra < inter ? intra : inter) : intra, dp_a = dp_cross ? a_inter : a_intra;
    double grad_bytes = params_chip * 2;
    double t_dp = ring(grad_bytes, dp, dp_bw, dp_a, 2);
    if (c->zero == 3) t_dp += ring(grad_bytes, dp, dp_bw, dp_a, 2); /* parameter all-gathers, forward and backward */
    double backward = pipeline * 2.0 / 3.0;
    double hidden = OVERLAP * backward;
    r->t_dp_comm = t_dp > hidden ? t_dp - hidden : 0;
    r->step_s = pipeline + r->t_dp_comm;
    double tokens = (double)c->global_batch * seq;
    r->tokens_per_s = tokens / r->step_s;
    r->mfu = r->flops_per_token * tokens / (r->step_s * c->chips * peak);
    /* Memory. */
    double shard_o = c->zero >= 1 ? dp : 1, shard_g = c->zero >= 2 ? dp : 1, shard_p = c->zero >= 3 ? dp : 1;
    r->mem_params_gb = params_chip * 2 / shard_p / 1e9;
    r->mem_grads_gb = params_chip * 2 / shard_g / 1e9;
    r->mem_optim_gb = params_chip * 12 / shard_o / 1e9;
    double layers_stage = ceil((double)m->n_layer / c->pp);
    double act_layer = c->recompute ? 2 * seq * mb * h : 34 * seq * mb * h / c->tp;
    double in_flight = n_micro < c->pp ? n_micro : c->pp;
    r->mem_act_gb = act_layer * layers_stage * in_flight / 1e9;
    r->mem_total_gb = r->mem_params_gb + r->mem_grads_gb + r->mem_optim_gb + r->mem_act_gb;
    r->mem_cap_gb = ch->mem_gb.v * GIB / 1e9;
    if (r->mem_total_gb > r->mem_cap_gb)
        return ty__error(TY_ERR_INVALID_ARG,
                         "training %s does not fit the memory: %.1f GB per chip (weights %.1f, "
                         "gradients %.1f, optimizer %.1f, activations %.1f) on a %s of %.0f GB; raise TP/PP, the ZeRO "
                         "stage, turn on --recompute or lower the micro-batch",
                         m->name, r->mem_total_gb, r->mem_params_gb, r->mem_grads_gb, r->mem_optim_gb, r->mem_act_gb,
                         ch->name, r->mem_cap_gb);
    return TY_OK;
}

json_t *ty__sim_train_json(const struct ty_sim_train_config *c, const struct ty_sim_train_result *r) {
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(c->model->name));
    json_object_set_new(o, "chip", json_string(c->chip->name));
    json_object_set_new(o, "chips", json_integer(c->chips));
    json_object_set_new(o, "tp", json_integer(c->tp));
    json_object_set_new(o, "pp", json_integer(c->pp));
    json_object_set_new(o, "dp", json_integer(c->chips / (c->tp * c->pp)));
    json_object_set_new(o, "zero", json_integer(c->zero));
    json_object_set_new(o, "global_batch", json_integer(c->global_batch));
    json_object_set_new(o, "micro_batch", json_integer(c->micro_batch));
    json_object_set_new(o, "seq_len", json_integer(c->seq_len));
    json_object_set_new(o, "micro_batches", json_integer(r->n_micro));
    json_object_set_new(o, "recompute", json_boolean(c->recompute));
    json_object_set_new(o, "step_s", json_real(r->step_s));
    json_object_set_new(o, "tokens_per_s", json_real(r->tokens_per_s));
    json_object_set_new(o, "mfu", json_real(r->mfu));
    json_object_set_new(o, "flops_per_token", json_real(r->flops_per_token));
    json_t *t = json_object();
    json_object_set_new(t, "compute_s", json_real(r->t_compute));
    json_object_set_new(t, "bubble_s", json_real(r->t_bubble));
    json_object_set_new(t, "tp_comm_s", json_real(r->t_tp_comm));
    json_object_set_new(t, "pp_comm_s", json_real(r->t_pp_comm));
    json_object_set_new(t, "dp_comm_exposed_s", json_real(r->t_dp_comm));
    json_object_set_new(o, "time", t);
    json_t *mem = json_object();
    json_object_set_new(mem, "params_gb", json_real(r->mem_params_gb));
    json_object_set_new(mem, "grads_gb", json_real(r->mem_grads_gb));
    json_object_set_new(mem, "optimizer_gb", json_real(r->mem_optim_gb));
    json_object_set_new(mem, "activations_gb", json_real(r->mem_act_gb));
    json_object_set_new(mem, "total_gb", json_real(r->mem_total_gb));
    json_object_set_new(mem, "capacity_gb", json_real(r->mem_cap_gb));
    json_object_set_new(o, "memory_per_chip", mem);
    return o;
}
