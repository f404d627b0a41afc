/*
 * train-fixture.h - what the trainer's tests share: a seeded uniform generator, a small qwen3 config, and a gemm case
 * (random operands in either layout) with the check that one thread gives the bits the pool gave.
 */
#ifndef TY_TEST_TRAIN_FIXTURE_H
#define TY_TEST_TRAIN_FIXTURE_H

#include "harness.h"

#include "train/train.h"

/* Uniform in [-1, 1) from the including test's own seed (define TRAIN_FIXTURE_SEED before the include). */
static uint64_t rng_state = TRAIN_FIXTURE_SEED;
static float frand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}
static void fill(float *p, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
}

/* Two layers, four query heads sharing two KV heads, context 64: the shape every trainer test builds on. */
static inline struct ty_train_config fixture_config(int64_t vocab, int64_t embd, int64_t head_dim, int64_t ff,
                                                    bool tied) {
    struct ty_train_config c = {.n_vocab = vocab,
                                .n_embd = embd,
                                .n_layer = 2,
                                .n_head = 4,
                                .n_head_kv = 2,
                                .head_dim = head_dim,
                                .n_ff = ff,
                                .n_ctx = 64,
                                .norm_eps = 1e-6f,
                                .tied = tied};
    c.rope.freq_base = 10000.0f;
    return c;
}

/* C (M x N) = C0 (+) A B with A (M x K) stored transposed when trans & 1 and B (K x N) when trans & 2; element (m, k)
 * of A is A[m * rs + k * cs], element (k, n) of B is B[k * b_rs + n * b_cs]. */
struct gemm_case {
    int64_t M, N, K, rs, cs, b_rs, b_cs;
    float *A, *B, *C, *C0;
};

static inline struct gemm_case gemm_case_new(int64_t M, int64_t N, int64_t K, int trans) {
    struct gemm_case g = {M,
                          N,
                          K,
                          trans & 1 ? 1 : K,
                          trans & 1 ? M : 1,
                          trans & 2 ? 1 : N,
                          trans & 2 ? K : 1,
                          ty__malloc((size_t)(M * K) * 4),
                          ty__malloc((size_t)(K * N) * 4),
                          ty__malloc((size_t)(M * N) * 4),
                          ty__malloc((size_t)(M * N) * 4)};
    fill(g.A, (size_t)(M * K), 1), fill(g.B, (size_t)(K * N), 1), fill(g.C0, (size_t)(M * N), 1);
    memcpy(g.C, g.C0, (size_t)(M * N) * 4);
    return g;
}

static inline void gemm_case_run(const struct gemm_case *g, void *ctx, float *C, bool acc, enum ty_train_precision p) {
    ty__train_ops_cpu()->gemm(ctx, g->M, g->N, g->K, g->A, g->rs, g->cs, g->B, g->b_rs, g->b_cs, C, g->N, acc, p);
}

/* With a pool (ctx), the gemm again on one thread must give the same bits: each element is one chain in k order,
 * whatever the split. */
static inline void gemm_case_same_on_one_thread(const struct gemm_case *g, void *ctx, bool acc,
                                                enum ty_train_precision p) {
    if (!ctx) return;
    float *C1 = ty__malloc((size_t)(g->M * g->N) * 4);
    memcpy(C1, g->C0, (size_t)(g->M * g->N) * 4);
    gemm_case_run(g, NULL, C1, acc, p);
    CHECK_MSG(memcmp(g->C, C1, (size_t)(g->M * g->N) * 4) == 0, "%s gemm %lld x %lld x %lld: 2 threads differ from 1",
              ty__train_precision_name(p), (long long)g->M, (long long)g->N, (long long)g->K);
    ty_free(C1);
}

static inline void gemm_case_free(struct gemm_case *g) {
    ty_free(g->A), ty_free(g->B), ty_free(g->C), ty_free(g->C0);
}

#endif /* TY_TEST_TRAIN_FIXTURE_H */
