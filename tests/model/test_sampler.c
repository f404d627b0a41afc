/*
 * test_sampler.c - the sampler: greedy and its ties, sampled frequencies against the distributions each setting
 * should give (within 5 sigma), truncation by top-k / top-p / min-p (tokens outside are never drawn, also on a large
 * vocabulary where top-p sorts only part of it), the order of temperature and top-p, the exact effect of the
 * penalties on the logits, determinism from a seed, parameter checks and allocation failures. It includes sampler.c
 * to check the selection and sorting routines (and their heapsort fallback) against qsort directly.
 */
#include "harness.h"

#include "../../src/model/sampler.c"

#include <stdlib.h>

#define N_DRAWS 200000

static struct ty_sampler *make(struct ty_sampler_params p, int32_t n_vocab) {
    struct ty_sampler *s = NULL;
    CHECK_OK(ty_sampler_init(&p, n_vocab, &s));
    return s;
}

static struct ty_sampler_params sampling(float temperature, uint64_t seed) {
    struct ty_sampler_params p = ty_sampler_default_params();
    p.temperature = temperature;
    p.seed = seed;
    return p;
}

/* Draws N_DRAWS tokens from `logits` and checks each token's frequency against `want` (probabilities summing to 1;
 * a 0 means the token must never be drawn). */
static void check_frequencies(const char *what, struct ty_sampler_params p, const float *logits, const double *want,
                              int n) {
    struct ty_sampler *s = make(p, n);
    if (!s) return;
    long counts[16] = {0};
    float row[16];
    for (int d = 0; d < N_DRAWS; d++) {
        memcpy(row, logits, sizeof(float) * (size_t)n);
        int32_t t = ty_sampler_sample(s, row);
        CHECK_MSG(t >= 0 && t < n, "%s: token %d out of range", what, t);
        if (t >= 0 && t < n) counts[t]++;
    }
    for (int i = 0; i < n; i++) {
        double f = (double)counts[i] / N_DRAWS;
        if (want[i] == 0) {
            CHECK_MSG(counts[i] == 0, "%s: token %d drawn %ld times but lies outside the kept set", what, i, counts[i]);
        } else {
            double sigma = sqrt(want[i] * (1 - want[i]) / N_DRAWS);
            CHECK_MSG(fabs(f - want[i]) <= 5 * sigma, "%s: token %d frequency %.5f, want %.5f (5 sigma = %.5f)", what,
                      i, f, want[i], 5 * sigma);
        }
    }
    ty_sampler_free(s);
}

/* p = {1/2, 1/4, 1/8, 1/16, 1/16} as logits, shifted by a constant that softmax must ignore. */
static const double P5[5] = {0.5, 0.25, 0.125, 0.0625, 0.0625};
static void p5_logits(float *l) {
    for (int i = 0; i < 5; i++) l[i] = (float)log(P5[i]) + 3.0f;
}

/* q_i proportional to p_i^(1/T), restricted to the first `keep` tokens. */
static void tempered(double temp, int keep, double *q) {
    double sum = 0;
    for (int i = 0; i < 5; i++) sum += q[i] = i < keep ? pow(P5[i], 1 / temp) : 0;
    for (int i = 0; i < 5; i++) q[i] /= sum;
}

static void test_greedy(void) {
    struct ty_sampler *s = make(ty_sampler_default_params(), 4);
    if (!s) return;
    float ties[4] = {1, 5, 5, 3};
    CHECK(ty_sampler_sample(s, ties) == 1);
    float neg[4] = {-3, -1, -2, -1};
    CHECK(ty_sampler_sample(s, neg) == 1);
    float with_nan[4] = {NAN, 2, NAN, 1};
    CHECK(ty_sampler_sample(s, with_nan) == 1);
    ty_sampler_free(s);

    /* Sampling with nothing finite to sample from falls back to the argmax rule. */
    s = make(sampling(1.0f, 1), 4);
    if (!s) return;
    float none[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    CHECK(ty_sampler_sample(s, none) == 0);
    float inf[4] = {0, INFINITY, 1, INFINITY};
    CHECK(ty_sampler_sample(s, inf) == 1);
    ty_sampler_free(s);

    /* top_k = 1 and top_p = 0 leave only the most likely token, lowest id on ties. */
    struct ty_sampler_params p = sampling(0.8f, 2);
    p.top_k = 1;
    s = make(p, 4);
    for (int i = 0; s && i < 100; i++) {
        float row[4] = {1, 5, 5, 3};
        CHECK(ty_sampler_sample(s, row) == 1);
    }
    ty_sampler_free(s);
    p = sampling(0.8f, 3);
    p.top_p = 0.0f;
    s = make(p, 4);
    for (int i = 0; s && i < 100; i++) {
        float row[4] = {1, 5, 5, 3};
        CHECK(ty_sampler_sample(s, row) == 1);
    }
    ty_sampler_free(s);
}

static void test_distributions(void) {
    float l[5];
    p5_logits(l);
    double q[5];
    const double temps[] = {1.0, 0.5, 2.0};
    for (int i = 0; i < 3; i++) {
        char what[64];
        snprintf(what, sizeof what, "temperature %.1f", temps[i]);
        tempered(temps[i], 5, q);
        check_frequencies(what, sampling((float)temps[i], 100 + (uint64_t)i), l, q, 5);
    }
}

static void test_truncation(void) {
    float l[5];
    p5_logits(l);
    double q[5];
    struct ty_sampler_params p;

    p = sampling(1.0f, 7);
    p.top_k = 2;
    tempered(1, 2, q);
    check_frequencies("top_k 2", p, l, q, 5);
    p.top_k = 3;
    p.temperature = 0.5f;
    tempered(0.5, 3, q);
    check_frequencies("top_k 3, temperature 0.5", p, l, q, 5);

    /* top-p keeps the smallest head reaching p, the token that crosses p included: 0.5 + 0.25 >= 0.7 */
    p = sampling(1.0f, 8);
    p.top_p = 0.7f;
    tempered(1, 2, q);
    check_frequencies("top_p 0.7", p, l, q, 5);
    p.top_p = 0.8f; /* 0.5 + 0.25 + 0.125 */
    tempered(1, 3, q);
    check_frequencies("top_p 0.8", p, l, q, 5);

    /* min-p is relative to the most likely token: 0.3 * 0.5 = 0.15 keeps two tokens, 0.2 * 0.5 keeps three */
    p = sampling(1.0f, 9);
    p.min_p = 0.3f;
    tempered(1, 2, q);
    check_frequencies("min_p 0.3", p, l, q, 5);
    p.min_p = 0.2f;
    tempered(1, 3, q);
    check_frequencies("min_p 0.2", p, l, q, 5);

    /* Temperature comes before top-p: at T = 0.5 the probabilities are {.744, .186, .047, .012, .012}, so top_p 0.9
     * keeps two tokens (applied at T = 1 first, as llama.cpp's chain does, it would keep four). */
    p = sampling(0.5f, 10);
    p.top_p = 0.9f;
    tempered(0.5, 2, q);
    check_frequencies("temperature 0.5 then top_p 0.9", p, l, q, 5);

    /* Everything together: top_k 4 drops token 4 (tied with 3, higher id); T 2 -> {.39, .28, .20, .14}; top_p 0.7
     * keeps three; min_p 0.6 (floor .6 * .39 = .23) keeps two. */
    p = sampling(2.0f, 11);
    p.top_k = 4;
    p.top_p = 0.7f;
    p.min_p = 0.6f;
    tempered(2, 2, q);
    check_frequencies("top_k + T + top_p + min_p", p, l, q, 5);
}

/* ==== Large vocabulary: top-p's partial sort against a full sort ==== */

struct ref {
    float v;
    int32_t id;
};

static int ref_cmp(const void *a, const void *b) {
    const struct ref *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : 1;
}

/* The kept set by the definition: sort everything, accumulate until top_p * total. */
static int32_t reference_top_p(const float *logits, int32_t n, float temp, float top_p, bool *kept) {
    struct ref *r = malloc(sizeof *r * (size_t)n);
    float maxv = -INFINITY;
    for (int32_t i = 0; i < n; i++) maxv = logits[i] > maxv ? logits[i] : maxv;
    double sum = 0;
    for (int32_t i = 0; i < n; i++) {
        r[i] = (struct ref){expf((logits[i] - maxv) * (1.0f / temp)), i};
        sum += r[i].v;
    }
    qsort(r, (size_t)n, sizeof *r, ref_cmp);
    double cum = 0;
    int32_t k = 0;
    memset(kept, 0, (size_t)n);
    while (k < n) {
        cum += r[k].v;
        kept[r[k++].id] = true;
        if (cum >= (double)top_p * sum) break;
    }
    free(r);
    return k;
}

static void test_top_p_large_vocab(void) {
    const int32_t n = 50000;
    float *logits = malloc(sizeof(float) * (size_t)n), *row = malloc(sizeof(float) * (size_t)n);
    bool *kept = malloc((size_t)n);
    uint64_t x = 12345;
    struct {
        const char *what;
        float head; /* logit of 12 head tokens above a flat tail in [0, 1) */
        float temp, top_p;
    } setups[] = {
        {"peaked", 9.0f, 1.0f, 0.9f},  /* the cut falls inside the first block */
        {"flat", 0.0f, 1.0f, 0.6f},    /* about 30k tokens: several blocks */
        {"medium", 6.0f, 0.7f, 0.97f}, /* a few hundred: the second block */
    };
    for (size_t c = 0; c < sizeof setups / sizeof *setups; c++) {
        for (int32_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            logits[i] = (float)(x >> 40) / (float)(1 << 24);
        }
        for (int32_t h = 0; h < 12; h++) logits[(h * 4099 + 17) % n] = setups[c].head - 0.1f * (float)h;
        int32_t n_kept = reference_top_p(logits, n, setups[c].temp, setups[c].top_p, kept);
        struct ty_sampler_params p = sampling(setups[c].temp, 77 + c);
        p.top_p = setups[c].top_p;
        struct ty_sampler *s = make(p, n);
        if (!s) break;
        int outside = 0;
        for (int d = 0; d < 300; d++) {
            memcpy(row, logits, sizeof(float) * (size_t)n);
            int32_t t = ty_sampler_sample(s, row);
            if (t < 0 || t >= n || !kept[t]) outside++;
        }
        CHECK_MSG(outside == 0, "%s (%d kept): %d draws outside the top-p set", setups[c].what, n_kept, outside);
        ty_sampler_free(s);
    }
    free(logits);
    free(row);
    free(kept);
}

/* top-k on a large vocabulary, by the heap scan (k <= 1024) and by quickselect (larger k): only the k most likely. */
static void test_top_k_large_vocab(void) {
    const int32_t n = 50000;
    float *logits = malloc(sizeof(float) * (size_t)n), *row = malloc(sizeof(float) * (size_t)n);
    struct ref *r = malloc(sizeof *r * (size_t)n);
    bool *kept = calloc((size_t)n, 1);
    uint64_t x = 4242;
    for (int32_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        logits[i] = (float)(x >> 52) / 64.0f; /* 4096 levels: plenty of ties across the cut */
        r[i] = (struct ref){logits[i], i};
    }
    qsort(r, (size_t)n, sizeof *r, ref_cmp);
    const int32_t ks[] = {20, 2000};
    for (int j = 0; j < 2; j++) {
        memset(kept, 0, (size_t)n);
        for (int32_t i = 0; i < ks[j]; i++) kept[r[i].id] = true;
        struct ty_sampler_params p = sampling(5.0f, 5 + (uint64_t)j); /* hot: spread the draws over the kept set */
        p.top_k = ks[j];
        struct ty_sampler *s = make(p, n);
        if (!s) break;
        int outside = 0;
        for (int d = 0; d < 300; d++) {
            memcpy(row, logits, sizeof(float) * (size_t)n);
            int32_t t = ty_sampler_sample(s, row);
            outside += t < 0 || t >= n || !kept[t];
        }
        CHECK_MSG(outside == 0, "top_k %d: %d draws outside the k most likely", ks[j], outside);
        ty_sampler_free(s);
    }
    free(logits);
    free(row);
    free(r);
    free(kept);
}

/* ==== Selection and sorting internals ==== */

static bool same_as_reference(const struct cand *c, const struct ref *r, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (c[i].id != r[i].id || c[i].v != r[i].v) return false;
    return true;
}

static void test_selection_internals(void) {
    enum { N = 3000 };
    static struct cand c[N], c2[N];
    static struct ref r[N];
    uint64_t x = 99;
    for (int pattern = 0; pattern < 5; pattern++) {
        for (int i = 0; i < N; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            float v = pattern == 0   ? (float)(x >> 40)                /* random */
                      : pattern == 1 ? (float)(x >> 61)                /* 8 values: many ties */
                      : pattern == 2 ? (float)i                        /* ascending */
                      : pattern == 3 ? (float)(N - i)                  /* descending */
                                     : (float)(i < N / 2 ? i : N - i); /* organ pipe */
            c[i] = (struct cand){v, (int32_t)((i * 7919) % N)};
            r[i] = (struct ref){c[i].v, c[i].id};
        }
        qsort(r, N, sizeof *r, ref_cmp);
        memcpy(c2, c, sizeof c);
        sort_cands(c2, N);
        CHECK_MSG(same_as_reference(c2, r, N), "pattern %d: sort_cands differs from qsort", pattern);
        memcpy(c2, c, sizeof c);
        sort_range(c2, N, 0); /* depth exhausted at once: all heapsort */
        CHECK_MSG(same_as_reference(c2, r, N), "pattern %d: heapsort differs from qsort", pattern);
        const size_t ks[] = {1, 2, 20, 1500, N - 1};
        for (size_t j = 0; j < sizeof ks / sizeof *ks; j++) {
            memcpy(c2, c, sizeof c);
            select_first(c2, N, ks[j]);
            sort_cands(c2, ks[j]);
            CHECK_MSG(same_as_reference(c2, r, ks[j]), "pattern %d: select_first(%zu) picked other tokens", pattern,
                      ks[j]);
        }

        /* top_k_scan reads logits directly (ids are positions) */
        static float logits[N];
        for (int i = 0; i < N; i++) {
            logits[c[i].id] = c[i].v;
            r[i] = (struct ref){c[i].v, c[i].id};
        }
        qsort(r, N, sizeof *r, ref_cmp);
        for (size_t j = 0; j < sizeof ks / sizeof *ks; j++) {
            top_k_scan(logits, N, ks[j], c2);
            sort_cands(c2, ks[j]);
            CHECK_MSG(same_as_reference(c2, r, ks[j]), "pattern %d: top_k_scan(%zu) picked other tokens", pattern,
                      ks[j]);
        }
    }
}

/* ==== Penalties ==== */

static void test_penalties_exact(void) {
    struct ty_sampler_params p = ty_sampler_default_params(); /* greedy: the logits show the penalties alone */
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.penalty_last_n = 3;
    struct ty_sampler *s = make(p, 8);
    if (!s) return;
    ty_sampler_accept(s, 1);
    ty_sampler_accept(s, 1);
    ty_sampler_accept(s, 2);
    ty_sampler_accept(s, -1); /* ignored: not a token */
    ty_sampler_accept(s, 8);
    float l[8] = {0, 3, -1, 2, 0, 0, 0, 0};
    CHECK(ty_sampler_sample(s, l) == 3); /* and 3 joins the window, pushing out the first 1 */
    CHECK(l[1] == 3.0f / 2 - 0.5f - 2 * 0.25f);
    CHECK(l[2] == -1.0f * 2 - 0.5f - 0.25f);
    CHECK(l[0] == 0 && l[3] == 2 && l[4] == 0);

    float l2[8] = {0, 3, -1, 2, 0, 0, 0, 0}; /* window is now {1, 2, 3} */
    CHECK(ty_sampler_sample(s, l2) == 1);
    CHECK(l2[1] == 1.5f - 0.75f);
    CHECK(l2[2] == -2.0f - 0.75f);
    CHECK(l2[3] == 1.0f - 0.75f);
    CHECK(l2[0] == 0);

    ty_sampler_reset(s); /* forgets the history */
    float l3[8] = {0, 3, -1, 2, 0, 0, 0, 0};
    ty_sampler_sample(s, l3);
    CHECK(l3[1] == 3 && l3[2] == -1 && l3[3] == 2);
    ty_sampler_free(s);

    /* -1: the whole history; frequency counts every occurrence */
    p = ty_sampler_default_params();
    p.frequency_penalty = 1.0f;
    p.penalty_last_n = -1;
    s = make(p, 4);
    if (!s) return;
    for (int i = 0; i < 100; i++) ty_sampler_accept(s, 2);
    float l4[4] = {0, 0, 150, 0};
    CHECK(ty_sampler_sample(s, l4) == 2 && l4[2] == 50);
    ty_sampler_free(s);

    /* window 0: penalties off whatever they are set to */
    p = ty_sampler_default_params();
    p.repeat_penalty = 3.0f;
    p.presence_penalty = 1.0f;
    p.penalty_last_n = 0;
    s = make(p, 4);
    if (!s) return;
    ty_sampler_accept(s, 0);
    float l5[4] = {4, 1, 2, 3};
    CHECK(ty_sampler_sample(s, l5) == 0 && l5[0] == 4);
    ty_sampler_free(s);

    /* The penalty changes what gets picked: a repeated favourite loses to the runner-up. */
    p = ty_sampler_default_params();
    p.presence_penalty = 2.0f;
    s = make(p, 3);
    if (!s) return;
    int32_t seq[4];
    for (int i = 0; i < 4; i++) {
        float row[3] = {3, 2, 0};
        seq[i] = ty_sampler_sample(s, row);
    }
    CHECK(seq[0] == 0 && seq[1] == 1 && seq[2] == 0 && seq[3] == 0); /* 3-2=1 vs 2-2=0, then both seen: 0 wins */
    ty_sampler_free(s);
}

/* ==== Determinism ==== */

static void draw(struct ty_sampler *s, int32_t *out, int n_draws) {
    float row[1000];
    for (int d = 0; d < n_draws; d++) {
        for (int i = 0; i < 1000; i++) row[i] = (float)(i % 7);
        out[d] = ty_sampler_sample(s, row);
    }
}

static void test_determinism(void) {
    struct ty_sampler_params p = sampling(1.0f, 42);
    p.top_k = 500;
    p.top_p = 0.95f;
    p.repeat_penalty = 1.1f;
    int32_t a[300], b[300], c[300], r[300];
    struct ty_sampler *s1 = make(p, 1000), *s2 = make(p, 1000);
    p.seed = 43;
    struct ty_sampler *s3 = make(p, 1000);
    if (!s1 || !s2 || !s3) return;
    size_t mem = ty_mem_allocated();
    draw(s1, a, 300);
    CHECK(ty_mem_allocated() == mem); /* sampling allocates nothing */
    draw(s2, b, 300);
    draw(s3, c, 300);
    ty_sampler_reset(s1);
    draw(s1, r, 300);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, r, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    int distinct = 0;
    for (int i = 1; i < 300; i++) distinct += a[i] != a[0];
    CHECK(distinct > 100);
    ty_sampler_free(s1);
    ty_sampler_free(s2);
    ty_sampler_free(s3);
}

/* ==== Parameters and allocation failures ==== */

static void test_params(void) {
    struct ty_sampler *s = (struct ty_sampler *)&s;
    struct ty_sampler_params d = ty_sampler_default_params();
    CHECK(d.temperature <= 0 && d.top_k <= 0 && d.top_p >= 1 && d.min_p <= 0 && d.repeat_penalty == 1);
    CHECK_STATUS(ty_sampler_init(&d, 0, &s), TY_ERR_INVALID_ARG);
    CHECK(s == NULL);
    struct ty_sampler_params bad[6];
    for (int i = 0; i < 6; i++) bad[i] = d;
    bad[0].temperature = NAN;
    bad[1].repeat_penalty = 0;
    bad[2].top_p = -0.1f;
    bad[3].min_p = 1.5f;
    bad[4].penalty_last_n = -2;
    bad[5].frequency_penalty = INFINITY;
    for (int i = 0; i < 6; i++) CHECK_MSG(ty_sampler_init(&bad[i], 10, &s) == TY_ERR_INVALID_ARG, "bad params %d", i);
    CHECK_OK(ty_sampler_init(NULL, 10, &s)); /* NULL params = defaults */
    ty_sampler_free(s);
    ty_sampler_free(NULL);

    d.repeat_penalty = 1.3f;
    d.penalty_last_n = 32;
    size_t before = ty_mem_allocated();
    bool succeeded = false;
    for (long k = 1; k < 20 && !succeeded; k++) {
        ty__alloc_fail_after(k);
        enum ty_status st = ty_sampler_init(&d, 1000, &s);
        ty__alloc_fail_after(0);
        succeeded = st == TY_OK;
        if (!succeeded) CHECK(st == TY_ERR_NO_MEMORY && s == NULL);
        ty_sampler_free(succeeded ? s : NULL);
        CHECK_MSG(ty_mem_allocated() == before, "failure %ld leaked", k);
    }
    CHECK(succeeded);
}

void ty_tests(void) {
    TY_RUN(test_greedy);
    TY_RUN(test_distributions);
    TY_RUN(test_truncation);
    TY_RUN(test_top_p_large_vocab);
    TY_RUN(test_top_k_large_vocab);
    TY_RUN(test_selection_internals);
    TY_RUN(test_penalties_exact);
    TY_RUN(test_determinism);
    TY_RUN(test_params);
}
