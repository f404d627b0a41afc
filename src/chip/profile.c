/*
 * profile.c - the op profile of backend.h: per op, the calls, the wall time from a wrapper's entry to its return and
 * the bytes of weights (products) or of K and V (attention) it read, so that `tongyun bench --profile` can say where
 * a token's time goes and how fast each product streams its weights. Only the outermost wrapper of a nest counts:
 * a fallback that issues other ops (attn_input without the fused entry) is one op of the profile. A backend that runs
 * an op on several threads also reports the part of it its calling thread worked alone (ty__profile_alone).
 */
#include "chip/backend.h"

static const char *const op_names[TY_OP_COUNT] = {
#define TY_PROFILE_NAME(e, name) [TY_OP_##e] = name,
    TY_PROFILE_OPS(TY_PROFILE_NAME)
#undef TY_PROFILE_NAME
};

const char *ty__profile_op_name(enum ty_profile_op op) {
    return op >= 0 && op < TY_OP_COUNT ? op_names[op] : "?";
}

struct ty_profile_scope ty__profile_begin(struct ty_backend *be, enum ty_profile_op op, double bytes) {
    if (be->profile->depth++ > 0) return (struct ty_profile_scope){.be = be, .op = TY_OP_COUNT};
    be->profile->current = op;
    return (struct ty_profile_scope){.be = be, .op = op, .bytes = bytes, .t0 = ty__time_s()};
}

void ty__profile_end(struct ty_profile_scope *s) {
    struct ty_profile *p = s->be->profile;
    if (s->op < TY_OP_COUNT) {
        if (s->be->iface->sync) (void)s->be->iface->sync(s->be); /* an asynchronous backend's op ends when it is done */
        p->calls[s->op]++;
        p->seconds[s->op] += ty__time_s() - s->t0;
        p->bytes[s->op] += s->bytes;
    }
    p->depth--;
}

void ty__profile_alone(struct ty_backend *be, double seconds) {
    struct ty_profile *p = be->profile;
    if (p && p->depth > 0) p->alone[p->current] += seconds;
}

double ty__profile_weight_bytes(int n, const struct ty_tensor *const *w) {
    double b = 0;
    for (int i = 0; i < n; i++) b += (double)ty__tensor_size(w[i]);
    return b;
}

double ty__profile_paged_bytes(const struct ty_tensor *k_pool, const struct ty_tensor *v_pool,
                               const struct ty_paged_attn *p) {
    double positions = 0;
    for (int32_t s = 0; s < p->n_seqs; s++) positions += (double)p->seqs[s].pos0 + (double)p->seqs[s].n;
    return positions * (ty__kv_position_bytes(k_pool) + ty__kv_position_bytes(v_pool));
}
