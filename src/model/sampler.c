/*
 * sampler.c - picks the next token from a row of logits. Owns the penalty history (a window of recent tokens with
 * per-token counts), the truncation filters and a seeded random generator, all sized at init so that sampling
 * allocates nothing.
 *
 * The chain, in order:
 *   1. penalties over the last `penalty_last_n` tokens (-1: all of them), written into the caller's logits:
 *      repetition (CTRL paper, Keskar et al. 2019, as llama.cpp applies it: a positive logit is divided by the
 *      penalty, a negative one multiplied), then OpenAI's presence and frequency penalties
 *      (logit -= presence * (count > 0) + frequency * count);
 *   2. greedy when temperature <= 0: the argmax, lowest id on ties (nothing below applies);
 *   3. top-k;  4. temperature;  5. softmax;  6. top-p (the smallest set of most likely tokens whose probability
 *      reaches p, the token that crosses p included);  7. min-p (drop tokens below min_p times the top probability);
 *   8. one draw from what is left, renormalised.
 * Temperature comes before top-p and min-p here, as in Hugging Face transformers, vLLM and OpenAI's API, so that Qwen's
 * published settings (e.g. temperature 0.6 with top_p 0.95) mean what they mean there. llama.cpp's default chain
 * applies temperature after top-p and min-p instead; the two agree whenever temperature is 1 or neither top-p nor min-p
 * is set (top-k and the penalties are unaffected by the order). min-p after top-p keeps exactly the tokens both would
 * keep on their own, because its floor is relative to the most likely token, which top-p always keeps.
 *
 * Nothing sorts the whole vocabulary: top-k is one heap pass over the logits (k <= 1024) or a quickselect, top-p a
 * histogram of probability mass plus a sort of the one bucket where the cut falls, min-p a single filter pass.
 *
 * Ties are broken by the lower token id wherever an order is needed, so the result depends only on the logits, the
 * parameters, the seed and the history. Random numbers come from xoshiro256** (Blackman and Vigna, 2018) seeded
 * through splitmix64: the same seed gives the same stream on every platform.
 */
#include "base/base.h"

#include <math.h>

/* Largest penalty window kept as a ring; longer windows would be better served by -1 (the whole history). */
#define MAX_PENALTY_WINDOW (1 << 24)
/* Buckets of top-p's histogram: 16 per octave of probability down to 0 (see bucket_of). */
#define HIST_BUCKETS 2048
/* Largest top-k found with one heap pass over the logits; larger k copies them all and uses quickselect. */
#define TOP_K_HEAP_MAX 1024

struct cand {
    float v; /* logit, then probability */
    int32_t id;
};

struct ty_sampler {
    struct ty_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    struct cand *cand; /* (n_vocab) scratch for one sampling call */
    double *hist;      /* (HIST_BUCKETS) top-p's probability histogram */

    /* Penalty history; NULL when every penalty is off. */
    bool penalize;
    int32_t *count;      /* (n_vocab) occurrences of each token in the window */
    int32_t *active;     /* (n_vocab) the distinct tokens whose count is > 0, in no particular order */
    int32_t *active_pos; /* (n_vocab) index of a token in `active`, or -1 */
    int32_t n_active;
    int32_t *ring; /* (ring_cap) the window, oldest at ring_head; NULL for the whole history */
    size_t ring_cap, ring_len, ring_head;
};

/* ==== Random numbers ==== */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void rng_seed(struct ty_sampler *s) {
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(struct ty_sampler *s) {
    return (double)(xoshiro_next(s->rng) >> 11) * 0x1.0p-53;
}

/* ==== Lifetime ==== */

struct ty_sampler_params ty_sampler_default_params(void) {
    return (struct ty_sampler_params){
        .temperature = 0.0f, /* greedy: deterministic unless the caller asks for sampling */
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repeat_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = 0,
    };
}

static enum ty_status check_params(const struct ty_sampler_params *p, int32_t n_vocab) {
    if (n_vocab <= 0) return ty__error(TY_ERR_INVALID_ARG, "sampler: n_vocab is %d; it must be positive", n_vocab);
    if (isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p) || isnan(p->presence_penalty) ||
        isnan(p->frequency_penalty) || !isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return ty__error(TY_ERR_INVALID_ARG, "sampler: a parameter is NaN or infinite; give finite numbers");
    if (!(p->repeat_penalty > 0) || !isfinite(p->repeat_penalty))
        return ty__error(TY_ERR_INVALID_ARG, "sampler: repeat_penalty %g must be a positive number (1 = off)",
                         (double)p->repeat_penalty);
    if (p->top_p < 0 || p->min_p < 0 || p->min_p > 1)
        return ty__error(TY_ERR_INVALID_ARG,
                         "sampler: top_p %g / min_p %g out of range; top_p >= 0 (1 = off), "
                         "min_p in [0, 1] (0 = off)",
                         (double)p->top_p, (double)p->min_p);
    if (p->penalty_last_n < -1 || p->penalty_last_n > MAX_PENALTY_WINDOW)
        return ty__error(TY_ERR_INVALID_ARG,
                         "sampler: penalty_last_n %d out of range; give -1 (whole history), 0 "
                         "(off) or up to %d",
                         p->penalty_last_n, MAX_PENALTY_WINDOW);
    return TY_OK;
}

enum ty_status ty_sampler_init(const struct ty_sampler_params *params, int32_t n_vocab, struct ty_sampler **out) {
    if (!out) return ty__error(TY_ERR_INVALID_ARG, "ty_sampler_init: out is NULL");
    *out = NULL;
    struct ty_sampler_params p = params ? *params : ty_sampler_default_params();
    TY_TRY(check_params(&p, n_vocab));

    struct ty_sampler *s = ty__calloc(1, sizeof *s);
    if (!s) return ty__error(TY_ERR_NO_MEMORY, "out of memory allocating a sampler");
    s->p = p;
    s->n_vocab = n_vocab;
    s->cand = ty__malloc((size_t)n_vocab * sizeof *s->cand);
    s->hist = ty__malloc(HIST_BUCKETS * sizeof *s->hist);
    bool ok = s->cand && s->hist;
    s->penalize = p.penalty_last_n != 0 &&
                  (p.repeat_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f);
    if (ok && s->penalize) {
        s->count = ty__calloc((size_t)n_vocab, sizeof *s->count);
        s->active = ty__malloc((size_t)n_vocab * sizeof *s->active);
        s->active_pos = ty__malloc((size_t)n_vocab * sizeof *s->active_pos);
        ok = s->count && s->active && s->active_pos;
        if (ok && p.penalty_last_n > 0) {
            s->ring_cap = (size_t)p.penalty_last_n;
            s->ring = ty__malloc(s->ring_cap * sizeof *s->ring);
            ok = s->ring != NULL;
        }
    }
    if (!ok) {
        ty_sampler_free(s);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory allocating a sampler for %d tokens", n_vocab);
    }
    ty_sampler_reset(s);
    *out = s;
    return TY_OK;
}

void ty_sampler_free(struct ty_sampler *smp) {
    if (!smp) return;
    ty_free(smp->cand);
    ty_free(smp->hist);
    ty_free(smp->count);
    ty_free(smp->active);
    ty_free(smp->active_pos);
    ty_free(smp->ring);
    ty_free(smp);
}

void ty_sampler_reset(struct ty_sampler *smp) {
    if (!smp) return;
    rng_seed(smp);
    if (smp->penalize) {
        for (int32_t i = 0; i < smp->n_active; i++) smp->count[smp->active[i]] = 0;
        for (int32_t i = 0; i < smp->n_vocab; i++) smp->active_pos[i] = -1;
        smp->n_active = 0;
        smp->ring_len = smp->ring_head = 0;
    }
}

/* ==== Penalty history ==== */

static void count_add(struct ty_sampler *s, int32_t tok) {
    if (s->count[tok]++ == 0) {
        s->active_pos[tok] = s->n_active;
        s->active[s->n_active++] = tok;
    }
}

static void count_remove(struct ty_sampler *s, int32_t tok) {
    if (--s->count[tok] > 0) return;
    int32_t at = s->active_pos[tok], last = s->active[--s->n_active];
    s->active[at] = last;
    s->active_pos[last] = at;
    s->active_pos[tok] = -1;
}

void ty_sampler_accept(struct ty_sampler *smp, int32_t token) {
    if (!smp || !smp->penalize || token < 0 || token >= smp->n_vocab) return;
    if (smp->ring) {
        if (smp->ring_len == smp->ring_cap) {
            count_remove(smp, smp->ring[smp->ring_head]);
            smp->ring[smp->ring_head] = token;
            smp->ring_head = (smp->ring_head + 1) % smp->ring_cap;
        } else {
            smp->ring[(smp->ring_head + smp->ring_len++) % smp->ring_cap] = token;
        }
    } else if (smp->count[token] == INT32_MAX) {
        return; /* saturate: a whole-history count past 2^31 changes nothing that matters */
    }
    count_add(smp, token);
}

static void apply_penalties(const struct ty_sampler *s, float *logits) {
    const float rep = s->p.repeat_penalty, pres = s->p.presence_penalty, freq = s->p.frequency_penalty;
    for (int32_t i = 0; i < s->n_active; i++) {
        int32_t tok = s->active[i];
        float l = logits[tok];
        if (rep != 1.0f) l = l > 0 ? l / rep : l * rep;
        logits[tok] = l - (pres + freq * (float)s->count[tok]);
    }
}

/* ==== Candidate selection ==== */

/* The candidate order: higher value first, lower id on ties. A strict total order, so every selection and sort below
 * gives one answer however it gets there. */
static inline bool before(struct cand a, struct cand b) {
    return a.v > b.v || (a.v == b.v && a.id < b.id);
}

static inline void swap(struct cand *a, struct cand *b) {
    struct cand t = *a;
    *a = *b;
    *b = t;
}

/* Partitions c[lo..hi] around a median-of-three pivot; returns the pivot's final index. */
static size_t partition(struct cand *c, size_t lo, size_t hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (before(c[mid], c[lo])) swap(&c[mid], &c[lo]);
    if (before(c[hi], c[lo])) swap(&c[hi], &c[lo]);
    if (before(c[mid], c[hi])) swap(&c[mid], &c[hi]); /* the median is now at hi */
    struct cand pivot = c[hi];
    size_t store = lo;
    for (size_t i = lo; i < hi; i++)
        if (before(c[i], pivot)) swap(&c[i], &c[store++]);
    swap(&c[store], &c[hi]);
    return store;
}

/* Heapsort into candidate order: the O(n log n) worst case that bounds the two quick routines below (introsort), so
 * that no arrangement of logits can make a selection quadratic. */
static void sift_down(struct cand *c, size_t root, size_t n) {
    for (size_t child; (child = 2 * root + 1) < n; root = child) {
        if (child + 1 < n && before(c[child], c[child + 1])) child++; /* the later one in candidate order */
        if (!before(c[root], c[child])) return;
        swap(&c[root], &c[child]);
    }
}

static void heap_sort(struct cand *c, size_t n) {
    for (size_t i = n / 2; i-- > 0;) sift_down(c, i, n);
    for (size_t end = n; end-- > 1;) {
        swap(&c[0], &c[end]);
        sift_down(c, 0, end);
    }
}

static int depth_limit(size_t n) {
    int d = 0;
    while (n >>= 1) d++;
    return 2 * d + 4;
}

/* Rearranges c[0..n) so that c[0..k) holds the k first candidates in the order (unsorted). Quickselect: O(n). */
static void select_first(struct cand *c, size_t n, size_t k) {
    if (k == 0 || k >= n) return;
    size_t lo = 0, hi = n - 1;
    for (int depth = depth_limit(n); lo < hi; depth--) {
        if (depth == 0) {
            heap_sort(c + lo, hi - lo + 1);
            return;
        }
        size_t p = partition(c, lo, hi);
        if (p == k - 1 || p == k) return;
        if (p < k)
            lo = p + 1;
        else
            hi = p - 1;
    }
}

static void sort_range(struct cand *c, size_t n, int depth) {
    while (n > 16) {
        if (depth-- == 0) {
            heap_sort(c, n);
            return;
        }
        size_t p = partition(c, 0, n - 1);
        /* recurse into the smaller side, loop on the larger: O(log n) stack */
        if (p < n - p - 1) {
            sort_range(c, p, depth);
            c += p + 1;
            n -= p + 1;
        } else {
            sort_range(c + p + 1, n - p - 1, depth);
            n = p;
        }
    }
    for (size_t i = 1; i < n; i++) {
        struct cand x = c[i];
        size_t j = i;
        for (; j > 0 && before(x, c[j - 1]); j--) c[j] = c[j - 1];
        c[j] = x;
    }
}

static void sort_cands(struct cand *c, size_t n) {
    sort_range(c, n, depth_limit(n));
}

static inline float sanitize(float v) {
    return isnan(v) ? -INFINITY : v;
}

/* The k first candidates of the whole vocabulary in one pass, without copying it: a heap of k whose root is the
 * latest of them; a later logit replaces the root only when it comes before it. Ties go to the lower id, which came
 * first. O(n) with rare O(log k) updates on a model's logits. */
static void top_k_scan(const float *logits, size_t n, size_t k, struct cand *c) {
    for (size_t i = 0; i < k; i++) c[i] = (struct cand){sanitize(logits[i]), (int32_t)i};
    for (size_t i = k / 2; i-- > 0;) sift_down(c, i, k);
    for (size_t i = k; i < n; i++) {
        float v = sanitize(logits[i]);
        if (!(v > c[0].v)) continue; /* equal is not enough: the root has the lower id */
        c[0] = (struct cand){v, (int32_t)i};
        sift_down(c, 0, k);
    }
}

static int32_t argmax(const float *logits, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best] || isnan(logits[best])) best = i;
    return best;
}

/* ==== Top-p ==== */

/* Candidates already in order: keep the head whose sum reaches `target`; *sum becomes the kept sum. */
static size_t top_p_sorted(const struct cand *c, size_t n, double target, double *sum) {
    double cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += c[i].v;
        if (cum >= target) {
            *sum = cum;
            return i + 1;
        }
    }
    return n; /* rounding kept the total just under target: keep everything */
}

/* Probabilities in (0, 1] map to HIST_BUCKETS log-spaced buckets through their float bits, which order the same way as
 * the values: bucket 0 holds the largest, each bucket spans a factor 2^(1/16). */
static inline uint32_t bucket_of(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits >= 0x3f800000u ? 0 : (0x3f800000u - bits) >> 19;
}

/* Unordered candidates: a histogram of probability mass finds the bucket where the running sum crosses `target`; the
 * buckets before it are kept whole, unsorted, and only the crossing bucket is sorted to place the cut exactly. The kept
 * set is the one a full sort would give, at O(n) plus one small sort instead of O(n log n). */
static size_t top_p_buckets(double *hist, struct cand *c, size_t n, double target, double *sum) {
    memset(hist, 0, HIST_BUCKETS * sizeof *hist);
    for (size_t i = 0; i < n; i++) hist[bucket_of(c[i].v)] += c[i].v;
    double cum = 0;
    uint32_t cross = 0;
    while (cross < HIST_BUCKETS && cum + hist[cross] < target) cum += hist[cross++];
    if (cross == HIST_BUCKETS) return n;

    /* Three-way partition: buckets before `cross`, then `cross` itself, then the rest (Dijkstra's flag). */
    size_t lo = 0, mid = 0, hi = n;
    while (mid < hi) {
        uint32_t b = bucket_of(c[mid].v);
        if (b < cross)
            swap(&c[lo++], &c[mid++]);
        else if (b == cross)
            mid++;
        else
            swap(&c[mid], &c[--hi]);
    }
    sort_cands(c + lo, mid - lo);
    double kept = cum;
    for (size_t i = lo; i < mid; i++) {
        kept += c[i].v;
        if (kept >= target) {
            *sum = kept;
            return i + 1;
        }
    }
    *sum = kept;
    return mid;
}

/* Steps 3-7 of the chain: leaves the surviving candidates in c[0..*n) with unnormalised probabilities, and their sum.
 * Returns false when the logits hold no finite maximum (all -inf, or some +inf): the caller then takes the argmax. */
static bool truncate_cands(const struct ty_sampler *s, const float *logits, struct cand *c, size_t *n_out,
                           double *sum_out) {
    const struct ty_sampler_params *p = &s->p;
    size_t n = (size_t)s->n_vocab;
    bool sorted = false;
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        if (p->top_k <= TOP_K_HEAP_MAX) {
            top_k_scan(logits, n, (size_t)p->top_k, c);
        } else {
            for (size_t i = 0; i < n; i++) c[i] = (struct cand){sanitize(logits[i]), (int32_t)i};
            select_first(c, n, (size_t)p->top_k);
        }
        n = (size_t)p->top_k;
        if (p->top_p < 1.0f) {
            sort_cands(c, n); /* top-p needs the order, and k is small */
            sorted = true;
        }
    } else {
        for (size_t i = 0; i < n; i++) c[i] = (struct cand){sanitize(logits[i]), (int32_t)i};
    }

    float maxv = -INFINITY;
    for (size_t i = 0; i < n; i++) maxv = c[i].v > maxv ? c[i].v : maxv;
    if (!isfinite(maxv)) return false;

    /* temperature and softmax in one pass: p_i = exp((l_i - max) / T), unnormalised */
    const float inv_t = 1.0f / p->temperature;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        c[i].v = expf((c[i].v - maxv) * inv_t);
        sum += c[i].v;
    }
    /* After the max subtraction the top candidate's unnormalised probability is exp(0) = 1, so min-p's floor relative
     * to it is min_p itself. */

    if (p->top_p < 1.0f) {
        const double target = (double)p->top_p * sum;
        size_t cut = sorted ? top_p_sorted(c, n, target, &sum) : top_p_buckets(s->hist, c, n, target, &sum);
        n = cut;
    }

    if (p->min_p > 0.0f) {
        size_t kept = 0;
        double kept_sum = 0;
        for (size_t i = 0; i < n; i++) {
            if (c[i].v < p->min_p) continue;
            c[kept++] = c[i];
            kept_sum += c[i].v;
        }
        n = kept; /* never empty: the top candidate has 1 >= min_p */
        sum = kept_sum;
    }
    *n_out = n;
    *sum_out = sum;
    return true;
}

/* ==== Sampling ==== */

int32_t ty_sampler_sample(struct ty_sampler *smp, float *logits) {
    TY_ASSERT(smp && logits);
    if (smp->penalize) apply_penalties(smp, logits);

    int32_t tok;
    size_t n;
    double sum;
    if (smp->p.temperature <= 0.0f || !truncate_cands(smp, logits, smp->cand, &n, &sum)) {
        tok = argmax(logits, smp->n_vocab);
    } else {
        double u = rng_uniform(smp) * sum, acc = 0;
        tok = smp->cand[n - 1].id; /* if rounding leaves u past the last sum */
        for (size_t i = 0; i < n; i++) {
            acc += smp->cand[i].v;
            if (u < acc) {
                tok = smp->cand[i].id;
                break;
            }
        }
    }
    ty_sampler_accept(smp, tok);
    return tok;
}
