/*
 * paged-attn.c - the fallback of the attention_paged op (backend.h, version 3) for a backend that leaves the entry
 * NULL: each sequence's keys and values are gathered from the paged pool, in position order, into contiguous F32
 * scratch with get_rows (which converts F16 exactly), and the backend's own contiguous `attention` runs over them.
 * It costs a copy of every visible key and value per layer, which is small next to the matrix products of a batch,
 * and lets any backend serve the paged multi-sequence forward before it has a kernel of its own.
 */
#include "chip/backend.h"

enum ty_status ty__attention_paged_gather(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *q,
                                          const struct ty_tensor *k_pool, const struct ty_tensor *v_pool,
                                          const struct ty_paged_attn *p) {
    if (!p->gather_k || !p->gather_v || !p->gather_ids || !p->host_ids)
        return ty__error(TY_ERR_UNSUPPORTED,
                         "backend %s has no paged attention op and no gather scratch was given; allocate the scratch "
                         "of struct ty_paged_attn",
                         be->iface->name);
    int64_t dk = k_pool->ne[0], dv = v_pool->ne[0], n_kv = k_pool->ne[1], n_slots = k_pool->ne[2];
    /* the pool as a matrix of slots, one row per position: get_rows reads any row of it */
    struct ty_tensor kp = ty__tensor_reshape(k_pool, dk * n_kv, n_slots, 1, 1);
    struct ty_tensor vp = ty__tensor_reshape(v_pool, dv * n_kv, n_slots, 1, 1);
    for (int32_t s = 0; s < p->n_seqs; s++) {
        const struct ty_paged_seq *sq = &p->seqs[s];
        int32_t n_keys = sq->pos0 + sq->n;
        TY_ASSERT(n_keys <= p->gather_ids->ne[0] && n_keys <= p->gather_k->ne[1] && n_keys <= p->gather_v->ne[1]);
        TY_ASSERT(p->gather_k->ne[0] == dk * n_kv && p->gather_v->ne[0] == dv * n_kv);
        for (int32_t j = 0; j < n_keys; j++) p->host_ids[j] = sq->table[j / p->block] * p->block + j % p->block;
        struct ty_tensor ids = ty__tensor_slice(p->gather_ids, 0, 0, n_keys);
        TY_TRY(ty__backend_tensor_set(be, &ids, p->host_ids, 0, (size_t)n_keys * sizeof(int32_t)));
        struct ty_tensor gk = ty__tensor_slice(p->gather_k, 1, 0, n_keys);
        struct ty_tensor gv = ty__tensor_slice(p->gather_v, 1, 0, n_keys);
        TY_TRY(ty__backend_get_rows(be, &gk, &kp, &ids));
        TY_TRY(ty__backend_get_rows(be, &gv, &vp, &ids));
        /* (d * n_kv, n_keys) columns seen as (d, n_kv, n_keys): the layout `attention` reads */
        struct ty_tensor k3 = gk, v3 = gv;
        k3.ne[0] = dk, k3.ne[1] = n_kv, k3.ne[2] = n_keys;
        k3.nb[1] = (size_t)dk * sizeof(float), k3.nb[2] = gk.nb[1], k3.nb[3] = gk.nb[1] * (size_t)n_keys;
        v3.ne[0] = dv, v3.ne[1] = n_kv, v3.ne[2] = n_keys;
        v3.nb[1] = (size_t)dv * sizeof(float), v3.nb[2] = gv.nb[1], v3.nb[3] = gv.nb[1] * (size_t)n_keys;
        struct ty_tensor qs = ty__tensor_slice(q, 2, sq->col, sq->n), ds = ty__tensor_slice(dst, 2, sq->col, sq->n);
        struct ty_attn attn = {p->scale, sq->pos0};
        TY_TRY(ty__backend_attention(be, &ds, &qs, &k3, &v3, &attn));
    }
    return TY_OK;
}
