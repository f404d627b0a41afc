/*
 * test_batch.c - the paged multi-sequence forward (src/model/batch.c) against one ty_context per sequence, on the
 * tiny Qwen2, Qwen3 and Qwen3-MoE fixtures converted here, on the reference backend (whose matrix product is
 * batch-invariant). Three sequences with scattered block tables run through iterations that mix prefill chunks (one
 * starting mid-block) with single decode tokens; every logits row must equal, bit for bit, what the sequence's own
 * context gives for the same tokens fed the same way. Also: a sequence that starts after a prefix whose blocks another
 * sequence computed (the prefix cache) gets the same logits as one that computes the prefix itself; a copied block
 * (copy-on-write) holds the same KV as its source; bad batches are errors.
 */
#include "harness.h"
#include "model/convert.h"
#include "model/model-impl.h"

#include <stdlib.h>

#define BLK 16

static struct ty_model *load_fixture(const char *name) {
    char dir[1024], out[1024];
    snprintf(dir, sizeof dir, "%s", ty_test_src("tests/data/models/"));
    strncat(dir, name, sizeof dir - strlen(dir) - 1);
    snprintf(out, sizeof out, "%s.gguf", ty_test_tmp(name));
    struct ty_convert_params cp = ty__convert_default_params();
    cp.type = TY_TYPE_F32;
    CHECK_OK(ty__convert_hf(dir, out, &cp));
    struct ty_model_params mp = ty_model_default_params();
    mp.backend = "cpu-ref";
    mp.n_threads = 2;
    struct ty_model *m = NULL;
    CHECK_OK(ty_model_load(out, &mp, &m));
    return m;
}

static void tokens(int32_t *ids, int n, int n_vocab, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = (int32_t)((seed >> 8) % (uint32_t)n_vocab);
    }
}

/* A per-sequence reference: a context fed the same pieces. */
struct ref {
    struct ty_context *ctx;
    float *logits;
};

#define N_SEQ  3
#define N_STEP 5
#define CTX    96

static void check_model(const char *name) {
    struct ty_model *m = load_fixture(name);
    if (!m) return;
    int32_t V = ty_model_n_vocab(m);
    CHECK(ty__batch_supported(m));
    struct ty_kv_pool *pool = NULL;
    struct ty_batch *b = NULL;
    CHECK_OK(ty__kv_pool_init(m, 24, BLK, &pool));
    CHECK_OK(ty__batch_init(m, pool, 64, N_SEQ, CTX, &b));
    if (!pool || !b) return;

    /* block tables: scattered over the pool, no block shared */
    int32_t tables[N_SEQ][CTX / BLK] = {{0}};
    int32_t used = 0, order[24];
    for (int i = 0; i < 24; i++) order[i] = (i * 11 + 5) % 24; /* a permutation of 0..23 */
    for (int s = 0; s < N_SEQ; s++)
        for (int k = 0; k < CTX / BLK - 2; k++) tables[s][k] = order[used++];

    /* the pieces each sequence feeds per iteration (0 = sits this one out) */
    const int32_t plan[N_STEP][N_SEQ] = {{20, 5, 16}, {1, 11, 16}, {1, 1, 0}, {1, 1, 9}, {1, 1, 1}};
    int32_t toks[N_SEQ][CTX], pos[N_SEQ] = {0};
    for (int s = 0; s < N_SEQ; s++) tokens(toks[s], CTX, V, 77u + (uint32_t)s);

    struct ref ref[N_SEQ];
    for (int s = 0; s < N_SEQ; s++) {
        struct ty_context_params cp = ty_context_default_params();
        cp.n_ctx = CTX;
        cp.kv_type = TY_TYPE_F16; /* the pool's type */
        ref[s].ctx = NULL;
        CHECK_OK(ty_context_init(m, &cp, &ref[s].ctx));
        ref[s].logits = malloc((size_t)V * sizeof(float));
    }
    float *got = malloc((size_t)N_SEQ * V * sizeof(float));
    int64_t differ = 0, compared = 0;
    for (int step = 0; step < N_STEP; step++) {
        struct ty_batch_seq bs[N_SEQ];
        int32_t nb = 0, who[N_SEQ];
        for (int s = 0; s < N_SEQ; s++) {
            if (!plan[step][s]) continue;
            bs[nb] = (struct ty_batch_seq){toks[s] + pos[s], plan[step][s], pos[s],
                                           tables[s],        CTX / BLK - 2, got + (size_t)nb * V};
            who[nb++] = s;
        }
        CHECK_OK(ty__batch_forward(b, bs, nb));
        for (int i = 0; i < nb; i++) {
            int s = who[i];
            CHECK_OK(
                ty_context_eval(ref[s].ctx, toks[s] + pos[s], (size_t)plan[step][s], TY_LOGITS_LAST, ref[s].logits));
            differ += memcmp(ref[s].logits, got + (size_t)i * V, (size_t)V * sizeof(float)) != 0;
            compared++;
            pos[s] += plan[step][s];
        }
    }
    CHECK_MSG(differ == 0, "%s: %lld of %lld logits rows differ from the per-sequence context", name, (long long)differ,
              (long long)compared);

    /* prefix reuse: sequence 3 maps sequence 0's first block (positions 0..15, computed above) and starts at 16 */
    int32_t t3[CTX / BLK];
    t3[0] = tables[0][0];
    for (int k = 1; k < CTX / BLK; k++) t3[k] = order[(used + k) % 24];
    struct ty_batch_seq bs3 = {toks[0] + BLK, 8, BLK, t3, CTX / BLK, got};
    CHECK_OK(ty__batch_forward(b, &bs3, 1));
    struct ty_context *c3 = NULL;
    struct ty_context_params cp = ty_context_default_params();
    cp.n_ctx = CTX;
    CHECK_OK(ty_context_init(m, &cp, &c3));
    CHECK_OK(ty_context_eval(c3, toks[0], BLK + 8, TY_LOGITS_LAST, ref[0].logits));
    CHECK_MSG(!memcmp(ref[0].logits, got, (size_t)V * sizeof(float)), "%s: a cached prefix changes the logits", name);

    /* copy-on-write: a copied block reads back as its source, every layer */
    CHECK_OK(ty__batch_copy_block(b, tables[1][0], order[23]));
    size_t rb = (size_t)pool->k[0].nb[2] * BLK;
    char *x = malloc(rb), *y = malloc(rb);
    int bad = 0;
    for (int il = 0; il < pool->n_layer; il++) {
        for (int kv = 0; kv < 2; kv++) {
            const struct ty_tensor *t = kv ? &pool->v[il] : &pool->k[il];
            size_t row = t->nb[2] * BLK;
            memcpy(x, (char *)ty__tensor_host(t) + (size_t)tables[1][0] * row, row);
            memcpy(y, (char *)ty__tensor_host(t) + (size_t)order[23] * row, row);
            bad += memcmp(x, y, row) != 0;
        }
    }
    CHECK(bad == 0);
    free(x);
    free(y);

    /* errors: a sequence past its blocks, a bad token, too many tokens */
    struct ty_batch_seq e1 = {toks[0], 4, 15, tables[0], 1, NULL};
    CHECK_STATUS(ty__batch_forward(b, &e1, 1), TY_ERR_INVALID_ARG);
    int32_t badtok = V;
    struct ty_batch_seq e2 = {&badtok, 1, 0, tables[0], 1, NULL};
    CHECK_STATUS(ty__batch_forward(b, &e2, 1), TY_ERR_INVALID_ARG);
    struct ty_batch_seq e3 = {toks[0], 65, 0, tables[0], CTX / BLK - 2, NULL};
    CHECK_STATUS(ty__batch_forward(b, &e3, 1), TY_ERR_INVALID_ARG);

    ty_context_free(c3);
    for (int s = 0; s < N_SEQ; s++) {
        ty_context_free(ref[s].ctx);
        free(ref[s].logits);
    }
    free(got);
    ty__batch_free(b);
    ty__kv_pool_free(pool);
    ty_model_free(m);
}

static void test_qwen2(void) {
    check_model("qwen2-tiny");
}
static void test_qwen3(void) {
    check_model("qwen3-tiny");
}
static void test_qwen3moe(void) {
    check_model("qwen3moe-tiny");
}

void ty_tests(void) {
    TY_RUN(test_qwen2);
    TY_RUN(test_qwen3);
    TY_RUN(test_qwen3moe);
}
