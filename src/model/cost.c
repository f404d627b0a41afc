/*
 * cost.c - per-token cost of a loaded model (cost.h), counted from the tensors the model actually holds, so a new
 * architecture's weights are counted without a table to update: a matrix is read once per decode step, the token
 * embedding contributes one row (unless it doubles as the output matrix), and a 3-D expert tensor contributes the
 * share of experts a token selects. A hybrid model's linear-attention layers add their recurrent state, which every
 * decode step reads and writes back.
 */
#include "model/cost.h"

#include "model/model-impl.h"
#include "model/quant-mix.h"

#include <ctype.h>

void ty__model_cost(const struct ty_model *m, enum ty_type kv_type, struct ty_model_cost *out) {
    memset(out, 0, sizeof *out);
    const struct ty_hparams *hp = &m->hp;
    double expert_share = hp->n_expert > 0 ? (double)hp->n_expert_used / (double)hp->n_expert : 1.0;
    bool tied = m->output == m->tok_embd;
    for (int i = 0; i < m->n_tensors; i++) {
        const struct ty_tensor *t = &m->tensors[i];
        int64_t ne = ty__tensor_nelements(t);
        double bytes = (double)ty__tensor_size(t);
        out->n_params += ne;
        out->file_bytes += bytes;
        if (t == m->tok_embd && !tied) { /* an embedding lookup reads one row */
            out->weight_bytes += bytes / (double)t->ne[1];
            out->n_params_active += t->ne[0];
            continue;
        }
        double share = t->ne[2] > 1 ? expert_share : 1.0;
        out->weight_bytes += bytes * share;
        out->n_params_active += (int64_t)((double)ne * share);
        if (t->ne[1] > 1) { /* a matrix: every element is one multiply-add per token */
            double flops = 2.0 * (double)ne * share;
            out->matmul_flops += flops;
            if (t == m->output) out->output_flops = flops, out->output_type = t->type;
            if ((unsigned)t->type < TY_TYPE_COUNT) out->flops_by_type[t->type] += flops;
        }
    }
    double kv_elem = kv_type == TY_TYPE_F32 ? 4.0 : 2.0;
    for (int il = 0; il < hp->n_layer; il++)
        if (m->layers[il].wk) out->n_attn_layers++;
    for (int il = 0; il < hp->n_layer; il++) {
        if (!m->layers[il].ssm_out) continue;
        double conv_dim = 2.0 * hp->ssm_head_k * hp->ssm_dim_k + (double)hp->ssm_head_v * hp->ssm_dim_v;
        double elems = (double)hp->ssm_head_v * hp->ssm_dim_k * hp->ssm_dim_v + conv_dim * (hp->ssm_conv_kernel - 1);
        out->state_bytes += 2.0 * 4.0 * elems; /* f32, read and written back */
    }
    out->kv_bytes_per_pos = out->n_attn_layers * (double)hp->n_head_kv * (hp->head_dim_k + hp->head_dim_v) * kv_elem;
    out->attn_flops_per_pos = out->n_attn_layers * 2.0 * (double)hp->n_head * (hp->head_dim_k + hp->head_dim_v);
}

const char *ty__model_type_label(const struct ty_model *m) {
    static _Thread_local char label[16];
    uint64_t ftype;
    const struct ty_quant_target *tg = NULL;
    if (ty__gguf_get_uint(m->gguf, "general.file_type", &ftype) == TY_OK && ftype <= UINT32_MAX)
        tg = ty__quant_target_by_ftype((uint32_t)ftype);
    const char *name = tg ? tg->name : NULL;
    if (!name) {
        double by_type[TY_TYPE_COUNT] = {0};
        int best = 0;
        for (int i = 0; i < m->n_tensors; i++) {
            const struct ty_tensor *t = &m->tensors[i];
            if ((unsigned)t->type >= TY_TYPE_COUNT) continue;
            by_type[t->type] += (double)ty__tensor_size(t);
            if (by_type[t->type] > by_type[best]) best = t->type;
        }
        name = ty_type_name((enum ty_type)best);
    }
    size_t i = 0;
    for (; name[i] && i + 1 < sizeof label; i++) label[i] = (char)toupper((unsigned char)name[i]);
    label[i] = 0;
    return label;
}

const char *ty__model_backend_name(const struct ty_model *m) {
    return ty__backend_name(m->be);
}

struct ty_backend *ty__model_backend(struct ty_model *m) {
    return m->be;
}
