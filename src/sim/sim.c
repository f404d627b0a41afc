/*
 * sim.c - the discrete-event simulation of a serving cluster.
 *
 * Each serving instance (a replica of max(TP, EP) x PP chips) runs PP pipeline virtual engines; each engine is a
 * continuous-batching scheduler with chunked prefill, the policy of our server (src/cloud/engine.c): requests are
 * admitted in strict arrival order while a sequence slot and the KV memory for the whole request (prompt + output
 * tokens, plus recurrent state for hybrid models) are free, so nothing is ever preempted; every iteration gives each
 * decoding sequence its next token and each sequence still reading its prompt one chunk, ending on an absolute
 * multiple of prefill_chunk, while the prompt tokens of the iteration stay within max_batch_tokens. With prefill/decode
 * disaggregation, prefill-only instances hand finished prompts to decode instances after a KV transfer over the
 * network.
 *
 * Workloads: open-loop arrivals (Poisson or a trace), or a closed loop of clients, each sending its next request the
 * moment its previous one completes (a load generator such as bench/bench_serve). An optional front end takes one
 * request at a time before the scheduler sees it (our server parses and tokenises on one event-loop thread), so
 * requests sent together reach the scheduler one after another and an idle engine starts on the first; requests that
 * reach an engine at the same moment are all queued before it plans its iteration.
 *
 * The event queue holds one event per busy engine (the end of its current iteration) in an indexed binary heap, plus
 * the next arrival and pending KV transfers. There are no per-token events: an iteration is one event, and a run of
 * decode-only iterations with an unchanged batch is one "macro step" that ends at the next completion. Its duration
 * is closed-form because a decode iteration's time is affine in the summed context, which grows by the batch size
 * each iteration. When a request arrives during a macro step, the step is cut short at the end of the iteration in
 * progress. Completions come off a per-engine heap keyed by the decode iteration they finish in. So the cost is
 * O(log) per arrival, prompt chunk and completion, whatever the number of tokens.
 */
#include "sim/sim.h"
#include "sim/sim-impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ==== Random numbers (splitmix64: small, fast, good enough for workloads) ==== */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) {
    return ((double)(rng_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static double rng_normal(uint64_t *s) {
    double u1 = rng_unit(s), u2 = rng_unit(s);
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* ==== Length distributions ==== */

enum ty_status ty__sim_dist_parse(const char *s, struct ty_sim_dist *out) {
    memset(out, 0, sizeof *out);
    char *end;
    if (!strncmp(s, "lognormal:", 10)) {
        out->kind = TY_SIM_DIST_LOGNORMAL;
        out->a = strtod(s + 10, &end);
        if (*end != ':') goto bad;
        out->b = strtod(end + 1, &end);
        if (*end || !(out->a >= 1) || !(out->b >= 0) || out->b > 10) goto bad;
        return TY_OK;
    }
    if (!strncmp(s, "exp:", 4)) {
        out->kind = TY_SIM_DIST_EXP;
        out->a = strtod(s + 4, &end);
        if (*end || !(out->a >= 1)) goto bad;
        return TY_OK;
    }
    out->a = strtod(s, &end);
    if (end == s) goto bad;
    if (*end == '-' || *end == ':') {
        out->kind = TY_SIM_DIST_UNIFORM;
        const char *rest = end + 1;
        out->b = strtod(rest, &end);
        if (end == rest || *end || !(out->b >= out->a)) goto bad;
    } else if (*end) {
        goto bad;
    } else {
        out->kind = TY_SIM_DIST_FIXED;
    }
    if (!(out->a >= 1) || out->a > 1e7 || (out->kind == TY_SIM_DIST_UNIFORM && out->b > 1e7)) goto bad;
    return TY_OK;
bad:
    return ty__error(TY_ERR_INVALID_ARG, "length '%s' is not N, A-B, lognormal:MEAN:CV or exp:MEAN (tokens >= 1)", s);
}

double ty__sim_dist_mean(const struct ty_sim_dist *d) {
    return d->kind == TY_SIM_DIST_UNIFORM ? (d->a + d->b) / 2 : d->a;
}

static int32_t dist_sample(const struct ty_sim_dist *d, uint64_t *rng) {
    double x = d->a;
    switch (d->kind) {
    case TY_SIM_DIST_FIXED:
        break;
    case TY_SIM_DIST_UNIFORM:
        x = d->a + floor(rng_unit(rng) * (d->b - d->a + 1));
        break;
    case TY_SIM_DIST_LOGNORMAL: {
        double s2 = log(1 + d->b * d->b);
        x = exp(log(d->a) - s2 / 2 + sqrt(s2) * rng_normal(rng));
        break;
    }
    case TY_SIM_DIST_EXP:
        x = -d->a * log(rng_unit(rng));
        break;
    }
    x = floor(x + 0.5);
    if (x < 1) x = 1;
    if (x > 1e7) x = 1e7;
    return (int32_t)x;
}

/* ==== State ==== */

enum { R_WAIT = 0, R_PREFILL, R_DECODE, R_XFER, R_DONE };

struct req {
    double arrival, t_first, t_done;
    double deliver; /* when the scheduler sees it: after the front end (ty_sim_config.front_s) */
    int32_t prompt, output, prefilled;
    int32_t eng;
    int32_t prev, next; /* the engine's queue */
    uint8_t state;
};

struct fin {
    int64_t key; /* the decode iteration this sequence finishes in */
    int32_t req;
};

struct chunk {
    int32_t req, c;
};

struct engine {
    int32_t q_head, q_tail, q_len;
    int32_t n_adm; /* admitted requests still in the queue: always its first n_adm entries */
    int32_t n_dec;
    double dec_ctx; /* summed context of the decoding sequences */
    struct fin *fh; /* (fh_n) completion heap */
    int32_t fh_n, fh_cap;
    int64_t dstep; /* decode iterations run */
    double kv_res; /* reserved KV bytes */
    double kv_tok; /* tokens in the cache */
    bool prefill_only, busy;
    bool pend; /* listed in sim.pend: requests reached it and it plans once the moment's arrivals are all in */
    double t_start, t_end;
    /* the iteration in flight */
    int64_t k; /* decode iterations it covers (a macro step when > 1) */
    int32_t n_dec_step;
    double c0, c1, S0;
    struct chunk *plan; /* (plan_n) prompt chunks */
    int32_t plan_n, plan_cap;
    /* accounting */
    double busy_time, kv_int, kv_peak;
    int64_t iters;
    double seqs_sum;
    int32_t hpos; /* index in the engine heap, -1 when idle */
};

struct xfer {
    double t;
    int32_t req;
};

struct sim {
    const struct ty_sim_config *c;
    struct ty_sim_layout l;
    struct ty_sim_perf *perf;
    struct req *r;
    int64_t n;
    struct engine *e;
    int32_t n_eng, n_pf_eng; /* engines [0, n_pf_eng) are prefill-only */
    int32_t *heap;           /* (heap_n) engine ids by t_end */
    int32_t *pend;           /* (pend_n) idle engines that requests reached at the current moment */
    int32_t pend_n;
    int32_t heap_n;
    struct xfer *xh; /* (xh_n) pending KV transfers by time */
    int64_t xh_n, xh_cap;
    uint64_t rng;
    double budget, max_seqs, cap, kv_tok_b, state_b, xfer_bw, xfer_alpha;
    int64_t chunk;
    int64_t done, events;
    /* requests [0, issued) have their arrival and delivery times; a closed loop issues one per completion */
    int64_t issued;
    bool closed;
    double front_s, front_free; /* the front end's time per request, and when it is next free */
    /* decode-only affine coefficients by batch size, filled lazily */
    double *aff0, *aff1;
    int32_t aff_n;
};

/* ==== Engine heap (indexed by engine, keyed by t_end) ==== */

static bool eh_less(const struct sim *S, int32_t a, int32_t b) {
    return S->e[a].t_end < S->e[b].t_end || (S->e[a].t_end == S->e[b].t_end && a < b);
}
static void eh_set(struct sim *S, int32_t i, int32_t id) {
    S->heap[i] = id;
    S->e[id].hpos = i;
}
static void eh_up(struct sim *S, int32_t i) {
    int32_t id = S->heap[i];
    while (i > 0) {
        int32_t p = (i - 1) / 2;
        if (!eh_less(S, id, S->heap[p])) break;
        eh_set(S, i, S->heap[p]);
        i = p;
    }
    eh_set(S, i, id);
}
static void eh_down(struct sim *S, int32_t i) {
    int32_t id = S->heap[i];
    for (;;) {
        int32_t l = 2 * i + 1, best = i;
        int32_t bid = id;
        if (l < S->heap_n && eh_less(S, S->heap[l], bid)) best = l, bid = S->heap[l];
        if (l + 1 < S->heap_n && eh_less(S, S->heap[l + 1], bid)) best = l + 1, bid = S->heap[l + 1];
        if (best == i) break;
        eh_set(S, i, bid);
        i = best;
    }
    eh_set(S, i, id);
}
static void eh_push(struct sim *S, int32_t id) {
    S->heap[S->heap_n] = id;
    S->e[id].hpos = S->heap_n;
    eh_up(S, S->heap_n++);
}
static void eh_pop(struct sim *S) {
    int32_t top = S->heap[0];
    S->e[top].hpos = -1;
    if (--S->heap_n > 0) {
        eh_set(S, 0, S->heap[S->heap_n]);
        eh_down(S, 0);
    }
}

/* ==== Completion heap (per engine) ==== */

static bool fh_push(struct engine *e, int64_t key, int32_t req) {
    if (e->fh_n == e->fh_cap) {
        int32_t ncap = e->fh_cap ? e->fh_cap * 2 : 16;
        struct fin *n = ty__realloc(e->fh, (size_t)ncap * sizeof *n);
        if (!n) return false;
        e->fh = n;
        e->fh_cap = ncap;
    }
    int32_t i = e->fh_n++;
    while (i > 0) {
        int32_t p = (i - 1) / 2;
        if (e->fh[p].key <= key) break;
        e->fh[i] = e->fh[p];
        i = p;
    }
    e->fh[i] = (struct fin){key, req};
    return true;
}
static struct fin fh_pop(struct engine *e) {
    struct fin top = e->fh[0], last = e->fh[--e->fh_n];
    int32_t i = 0;
    for (;;) {
        int32_t l = 2 * i + 1, b = l;
        if (l >= e->fh_n) break;
        if (l + 1 < e->fh_n && e->fh[l + 1].key < e->fh[l].key) b = l + 1;
        if (e->fh[b].key >= last.key) break;
        e->fh[i] = e->fh[b];
        i = b;
    }
    if (e->fh_n > 0) e->fh[i] = last;
    return top;
}

/* ==== Transfer heap ==== */

static bool xh_push(struct sim *S, double t, int32_t req) {
    if (S->xh_n == S->xh_cap) {
        int64_t ncap = S->xh_cap ? S->xh_cap * 2 : 64;
        struct xfer *n = ty__realloc(S->xh, (size_t)ncap * sizeof *n);
        if (!n) return false;
        S->xh = n;
        S->xh_cap = ncap;
    }
    int64_t i = S->xh_n++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (S->xh[p].t <= t) break;
        S->xh[i] = S->xh[p];
        i = p;
    }
    S->xh[i] = (struct xfer){t, req};
    return true;
}
static struct xfer xh_pop(struct sim *S) {
    struct xfer top = S->xh[0], last = S->xh[--S->xh_n];
    int64_t i = 0;
    for (;;) {
        int64_t l = 2 * i + 1, b = l;
        if (l >= S->xh_n) break;
        if (l + 1 < S->xh_n && S->xh[l + 1].t < S->xh[l].t) b = l + 1;
        if (S->xh[b].t >= last.t) break;
        S->xh[i] = S->xh[b];
        i = b;
    }
    if (S->xh_n > 0) S->xh[i] = last;
    return top;
}

/* ==== Queues ==== */

static void q_push(struct sim *S, struct engine *e, int32_t id) {
    struct req *r = &S->r[id];
    r->next = -1;
    r->prev = e->q_tail;
    if (e->q_tail >= 0)
        S->r[e->q_tail].next = id;
    else
        e->q_head = id;
    e->q_tail = id;
    e->q_len++;
}
static void q_remove(struct sim *S, struct engine *e, int32_t id) {
    struct req *r = &S->r[id];
    if (r->prev >= 0)
        S->r[r->prev].next = r->next;
    else
        e->q_head = r->next;
    if (r->next >= 0)
        S->r[r->next].prev = r->prev;
    else
        e->q_tail = r->prev;
    r->prev = r->next = -1;
    e->q_len--;
}

/* ==== Scheduling ==== */

static double reserve_bytes(const struct sim *S, const struct engine *e, const struct req *r) {
    double tokens = e->prefill_only ? r->prompt : (double)r->prompt + r->output;
    return tokens * S->kv_tok_b + S->state_b;
}

static void affine(struct sim *S, int32_t n, double *c0, double *c1) {
    if (n < S->aff_n) {
        if (isnan(S->aff0[n])) ty__sim_decode_affine(S->perf, n, &S->aff0[n], &S->aff1[n]);
        *c0 = S->aff0[n];
        *c1 = S->aff1[n];
        return;
    }
    ty__sim_decode_affine(S->perf, n, c0, c1);
}

/* Elapsed time after k decode iterations of the engine's macro step. */
static double macro_T(const struct engine *e, double k) {
    return k * (e->c0 + e->c1 * e->S0) + e->c1 * e->n_dec_step * k * (k - 1) / 2;
}

static void join_decode(struct sim *S, struct engine *e, int32_t id, enum ty_status *st) {
    struct req *r = &S->r[id];
    r->state = R_DECODE;
    e->n_dec++;
    e->dec_ctx += (double)r->prompt + 1;
    if (!fh_push(e, e->dstep + (r->output - 1), id)) *st = ty__error(TY_ERR_NO_MEMORY, "simulation: out of memory");
}

/* Request id's delivery to the scheduler: the front end takes requests one at a time, in arrival order. */
static void front_pass(struct sim *S, int64_t id) {
    struct req *r = &S->r[id];
    double start = r->arrival > S->front_free ? r->arrival : S->front_free;
    r->deliver = start + S->front_s;
    S->front_free = r->deliver;
}

static void finish_req(struct sim *S, int32_t id, double t) {
    S->r[id].t_done = t;
    S->r[id].state = R_DONE;
    S->done++;
    if (S->closed && S->issued < S->n) { /* its client sends the next request now */
        S->r[S->issued].arrival = t;
        front_pass(S, S->issued++);
    }
}

/* Plans and starts the next iteration of engine `ei` at time t, or leaves it idle. */
static enum ty_status start_step(struct sim *S, int32_t ei, double t) {
    struct engine *e = &S->e[ei];
    enum ty_status st = TY_OK;
    e->plan_n = 0;
    double budget = S->budget;
    double running = e->n_dec + e->n_adm;
    struct ty_sim_batch b = {0};
    int32_t id = e->q_head, pos = 0;
    while (id >= 0) {
        struct req *r = &S->r[id];
        int32_t next = r->next;
        if (pos >= e->n_adm) {
            double need = reserve_bytes(S, e, r);
            if (running + 1 > S->max_seqs || e->kv_res + need > S->cap) break;
            e->kv_res += need;
            running++;
            r->state = R_PREFILL;
            e->n_adm++;
            if (r->prefilled >= r->prompt) { /* a transferred prompt: straight to decoding */
                q_remove(S, e, id);
                e->n_adm--;
                e->kv_tok += r->prompt;
                join_decode(S, e, id, &st);
                id = next;
                continue;
            }
        }
        pos++;
        id = next;
        /* An admitted sequence gets one chunk, up to the next multiple of the chunk size, while the iteration's
         * prompt budget lasts (the last chunk may overrun it, as in the server). */
        if (budget <= 0) continue;
        int32_t end = (int32_t)((r->prefilled / S->chunk + 1) * S->chunk);
        if (end > r->prompt) end = r->prompt;
        int32_t c = end - r->prefilled;
        if (e->plan_n == e->plan_cap) {
            int32_t ncap = e->plan_cap ? e->plan_cap * 2 : 16;
            struct chunk *np = ty__realloc(e->plan, (size_t)ncap * sizeof *np);
            if (!np) return ty__error(TY_ERR_NO_MEMORY, "simulation: out of memory");
            e->plan = np;
            e->plan_cap = ncap;
        }
        e->plan[e->plan_n++] = (struct chunk){(int32_t)(r - S->r), c};
        b.n_pf_tok += c;
        b.pf_attn_work += (double)c * (r->prefilled + (c + 1) / 2.0);
        b.n_pf_seq += 1;
        if (end == r->prompt) b.n_logits += 1;
        budget -= c;
    }
    if (st != TY_OK) return st;
    if (e->plan_n == 0 && e->n_dec == 0) return TY_OK; /* idle */
    e->n_dec_step = e->n_dec;
    e->t_start = t;
    if (e->plan_n > 0) {
        b.n_dec = e->n_dec;
        b.dec_ctx = e->dec_ctx;
        b.n_logits += e->n_dec;
        e->k = 1;
        e->t_end = t + ty__sim_step_time(S->perf, &b, NULL);
    } else {
        /* Decode only: run until the next completion in one event. */
        int64_t k = S->c->step_by_step ? 1 : e->fh[0].key - e->dstep;
        if (k < 1) k = 1;
        affine(S, e->n_dec, &e->c0, &e->c1);
        e->S0 = e->dec_ctx;
        e->k = k;
        e->t_end = t + macro_T(e, (double)k);
    }
    e->busy = true;
    eh_push(S, ei);
    return TY_OK;
}

/* A request arrived at a busy engine: end its macro step after the iteration in progress. */
static void cut_macro(struct sim *S, int32_t ei, double t) {
    struct engine *e = &S->e[ei];
    if (!e->busy || e->plan_n > 0 || e->k <= 1 || t >= e->t_end) return;
    double el = t - e->t_start;
    double a = e->c1 * e->n_dec_step / 2, bq = e->c0 + e->c1 * e->S0 - a;
    double j = a > 1e-300 ? (-bq + sqrt(bq * bq + 4 * a * el)) / (2 * a) : el / bq;
    int64_t done = (int64_t)floor(j);
    if (done < 0) done = 0;
    while (done > 0 && macro_T(e, (double)done) > el) done--;
    while (done + 1 < e->k && macro_T(e, (double)(done + 1)) <= el) done++;
    int64_t nk = done + 1;
    if (nk >= e->k) return;
    e->k = nk;
    e->t_end = e->t_start + macro_T(e, (double)nk);
    eh_up(S, e->hpos);
}

static double engine_cap_tokens(const struct sim *S) {
    return S->kv_tok_b > 0 ? S->cap / S->kv_tok_b : 0;
}

/* The iteration of engine `ei` ends at time t: apply its effects. */
static enum ty_status finish_step(struct sim *S, int32_t ei, double t) {
    struct engine *e = &S->e[ei];
    enum ty_status st = TY_OK;
    double dur = t - e->t_start;
    e->busy_time += dur;
    e->iters += e->k;
    e->seqs_sum += (double)e->k * e->n_dec_step + e->plan_n;
    /* KV occupancy over the iteration: a prefill grows linearly through it; a macro step's k decode iterations form a
     * staircase, n tokens a step, under steps whose length grows with the context, integrated exactly so that
     * collapsing the steps changes nothing. Completions free their tokens at its end. */
    double kv_before = e->kv_tok, grown = kv_before + (double)e->n_dec_step * e->k;
    for (int32_t i = 0; i < e->plan_n; i++) grown += e->plan[i].c;
    if (e->plan_n == 0 && e->k > 1) {
        double k = (double)e->k, n = e->n_dec_step;
        double A = kv_before + n / 2, B = n, C = e->c0 + e->c1 * e->S0, D = e->c1 * n;
        e->kv_int += k * A * C + (A * D + B * C) * k * (k - 1) / 2 + B * D * (k - 1) * k * (2 * k - 1) / 6;
    } else {
        e->kv_int += (kv_before + grown) / 2 * dur;
    }
    double cap_tok = engine_cap_tokens(S);
    if (cap_tok > 0 && grown / cap_tok > e->kv_peak) e->kv_peak = grown / cap_tok;
    /* Decode progress: every sequence gained k tokens; those whose last token came now are done. */
    if (e->n_dec_step > 0) {
        e->dstep += e->k;
        e->dec_ctx += (double)e->n_dec_step * e->k;
        e->kv_tok += (double)e->n_dec_step * e->k;
        while (e->fh_n > 0 && e->fh[0].key <= e->dstep) {
            struct fin f = fh_pop(e);
            struct req *r = &S->r[f.req];
            e->n_dec--;
            e->dec_ctx -= (double)r->prompt + r->output;
            e->kv_tok -= (double)r->prompt + r->output - 1;
            e->kv_res -= reserve_bytes(S, e, r);
            finish_req(S, f.req, t);
        }
    }
    /* Prompt chunks. */
    for (int32_t i = 0; i < e->plan_n; i++) {
        int32_t id = e->plan[i].req;
        struct req *r = &S->r[id];
        r->prefilled += e->plan[i].c;
        e->kv_tok += e->plan[i].c;
        if (r->prefilled < r->prompt) continue;
        r->t_first = t;
        q_remove(S, e, id);
        e->n_adm--;
        if (r->output <= 1) {
            e->kv_tok -= r->prompt;
            e->kv_res -= reserve_bytes(S, e, r);
            finish_req(S, id, t);
        } else if (e->prefill_only) {
            e->kv_tok -= r->prompt;
            e->kv_res -= reserve_bytes(S, e, r);
            r->state = R_XFER;
            double dt = S->xfer_alpha + (r->prompt * S->kv_tok_b + S->state_b) / S->xfer_bw;
            if (!xh_push(S, t + dt, id)) return ty__error(TY_ERR_NO_MEMORY, "simulation: out of memory");
        } else {
            join_decode(S, e, id, &st);
        }
    }
    e->plan_n = 0;
    e->busy = false;
    return st;
}

/* Power of two choices over engines [lo, hi) by outstanding requests. */
static int32_t route(struct sim *S, int32_t lo, int32_t hi) {
    int32_t n = hi - lo;
    if (n <= 1) return lo;
    int32_t a = lo + (int32_t)(rng_next(&S->rng) % (uint64_t)n);
    int32_t b = lo + (int32_t)(rng_next(&S->rng) % (uint64_t)n);
    double la = S->e[a].q_len + S->e[a].n_dec, lb = S->e[b].q_len + S->e[b].n_dec;
    return lb < la ? b : a;
}

/* Request id reaches engine ei at time t along with others of the same moment: an idle engine plans its iteration
 * once all of them are queued (start_pending), so requests that reach the scheduler together start together. */
static void enqueue(struct sim *S, int32_t id, int32_t ei, double t) {
    struct engine *e = &S->e[ei];
    S->r[id].eng = ei;
    q_push(S, e, id);
    if (e->busy) {
        cut_macro(S, ei, t);
    } else if (!e->pend) {
        e->pend = true;
        S->pend[S->pend_n++] = ei;
    }
}

static enum ty_status start_pending(struct sim *S, double t) {
    enum ty_status st = TY_OK;
    for (int32_t i = 0; i < S->pend_n; i++) {
        struct engine *e = &S->e[S->pend[i]];
        e->pend = false;
        if (st == TY_OK && !e->busy) st = start_step(S, S->pend[i], t);
    }
    S->pend_n = 0;
    return st;
}

static enum ty_status deliver(struct sim *S, int32_t id, int32_t ei, double t) {
    struct engine *e = &S->e[ei];
    S->r[id].eng = ei;
    q_push(S, e, id);
    if (!e->busy) return start_step(S, ei, t);
    cut_macro(S, ei, t);
    return TY_OK;
}

/* ==== Metrics ==== */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile index. */
static int64_t rank(double q, int64_t n) {
    int64_t i = (int64_t)ceil(q * (double)n) - 1;
    return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

static struct ty_sim_pct percentiles(double *v, int64_t n) {
    struct ty_sim_pct p = {0};
    if (n <= 0) return p;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += v[i];
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    p.mean = sum / n;
    p.min = v[0];
    p.p50 = v[rank(0.50, n)];
    p.p90 = v[rank(0.90, n)];
    p.p99 = v[rank(0.99, n)];
    return p;
}

/* ==== Run ==== */

static void sim_free(struct sim *S) {
    if (S->e)
        for (int32_t i = 0; i < S->n_eng; i++) ty_free(S->e[i].fh), ty_free(S->e[i].plan);
    ty_free(S->e);
    ty_free(S->heap);
    ty_free(S->pend);
    ty_free(S->xh);
    ty_free(S->r);
    ty_free(S->aff0);
    ty_free(S->aff1);
    ty__sim_perf_free(S->perf);
}

static enum ty_status make_requests(struct sim *S, const struct ty_sim_workload *w) {
    const struct ty_sim_trace *tr = w->trace;
    int64_t n = w->n_requests;
    if (tr) {
        if (tr->n <= 0) return ty__error(TY_ERR_INVALID_ARG, "the trace holds no requests");
        if (n <= 0 || n > tr->n) n = tr->n;
    } else {
        if (n <= 0) return ty__error(TY_ERR_INVALID_ARG, "--requests must be at least 1");
        if (w->users <= 0 && (!(w->rate > 0) || !isfinite(w->rate)))
            return ty__error(TY_ERR_INVALID_ARG, "--rate must be a positive number of requests per second");
    }
    if (n > 100000000) return ty__error(TY_ERR_INVALID_ARG, "at most 100,000,000 requests per simulation");
    S->r = ty__calloc((size_t)n, sizeof *S->r);
    if (!S->r) return ty__error(TY_ERR_NO_MEMORY, "simulation: no memory for %lld requests", (long long)n);
    S->n = n;
    S->closed = w->users > 0;
    S->issued = S->closed ? (w->users < n ? w->users : n) : n;
    uint64_t rng = w->seed ? w->seed : 1;
    double t = 0;
    double t0 = tr ? tr->reqs[0].arrival : 0;
    for (int64_t i = 0; i < n; i++) {
        struct req *r = &S->r[i];
        if (S->closed) { /* the clients' first requests ramp_s apart from time 0; the others when they are sent */
            r->arrival = i < S->issued ? (double)i * (w->ramp_s > 0 ? w->ramp_s : 0) : NAN;
            r->prompt = tr ? tr->reqs[i].prompt : dist_sample(&w->prompt, &rng);
            r->output = tr ? tr->reqs[i].output : dist_sample(&w->output, &rng);
        } else if (tr) {
            r->arrival = tr->reqs[i].arrival - t0;
            r->prompt = tr->reqs[i].prompt;
            r->output = tr->reqs[i].output;
        } else {
            t += -log(rng_unit(&rng)) / w->rate;
            r->arrival = t;
            r->prompt = dist_sample(&w->prompt, &rng);
            r->output = dist_sample(&w->output, &rng);
        }
        r->prev = r->next = -1;
        r->eng = -1;
    }
    for (int64_t i = 0; i < S->issued; i++) front_pass(S, i);
    return TY_OK;
}

enum ty_status ty__sim_run(const struct ty_sim_config *cin, const struct ty_sim_workload *w,
                           struct ty_sim_result *out) {
    memset(out, 0, sizeof *out);
    double wall0 = ty__time_s();
    struct ty_sim_config cfg = *cin;
    ty__sim_config_defaults(&cfg);
    struct sim S0 = {0}, *S = &S0;
    S->c = &cfg;
    enum ty_status st = ty__sim_layout(&cfg, &S->l);
    if (st != TY_OK) return st;
    if ((st = ty__sim_perf_init(&cfg, &S->l, &S->perf)) != TY_OK) return st;
    S->front_s = cfg.front_s > 0 ? cfg.front_s : 0;
    if ((st = make_requests(S, w)) != TY_OK) goto done;
    S->n_eng = S->l.n_inst * S->l.engines_per_inst;
    S->n_pf_eng = S->l.n_prefill_inst * S->l.engines_per_inst;
    S->budget = (double)cfg.max_batch_tokens * S->l.attn_groups;
    S->chunk = cfg.prefill_chunk;
    S->max_seqs = (double)cfg.max_seqs * S->l.attn_groups;
    S->cap = S->l.kv_cap_bytes;
    S->kv_tok_b = S->l.kv_bytes_token;
    S->state_b = S->l.state_bytes_seq;
    S->xfer_bw = cfg.inter_gbps / 8 * 1e9 * TY_SIM_LINK_EFF;
    S->xfer_alpha = cfg.inter_alpha_us * 1e-6;
    S->rng = (w->seed ? w->seed : 1) ^ 0x5bd1e995ull;
    /* Every request must fit one engine on its own, or it would wait forever. */
    for (int64_t i = 0; i < S->n; i++) {
        struct req *r = &S->r[i];
        double need_tok = (double)r->prompt + r->output;
        double need = need_tok * S->kv_tok_b + S->state_b;
        if (need > S->cap) {
            st = ty__error(TY_ERR_INVALID_ARG,
                           "request %lld needs KV memory for %.0f tokens (prompt %d + output %d) "
                           "but one %s engine holds %.0f tokens; shorten the requests, raise TP/PP or use a chip with "
                           "more memory",
                           (long long)i + 1, need_tok, r->prompt, r->output, cfg.chip->name, engine_cap_tokens(S));
            goto done;
        }
    }
    S->e = ty__calloc((size_t)S->n_eng, sizeof *S->e);
    S->heap = ty__malloc((size_t)S->n_eng * sizeof *S->heap);
    S->pend = ty__malloc((size_t)S->n_eng * sizeof *S->pend);
    S->aff_n = (int32_t)(S->max_seqs + 1 < 65536 ? S->max_seqs + 1 : 65536);
    S->aff0 = ty__malloc((size_t)S->aff_n * sizeof *S->aff0);
    S->aff1 = ty__malloc((size_t)S->aff_n * sizeof *S->aff1);
    if (!S->e || !S->heap || !S->pend || !S->aff0 || !S->aff1) {
        st = ty__error(TY_ERR_NO_MEMORY, "simulation: no memory for %d engines", S->n_eng);
        goto done;
    }
    for (int32_t i = 0; i < S->aff_n; i++) S->aff0[i] = S->aff1[i] = NAN;
    for (int32_t i = 0; i < S->n_eng; i++) {
        S->e[i].q_head = S->e[i].q_tail = -1;
        S->e[i].hpos = -1;
        S->e[i].prefill_only = i < S->n_pf_eng;
    }

    int64_t next = 0;
    double t_last = 0;
    while (S->done < S->n && st == TY_OK) {
        double ta = next < S->issued ? S->r[next].deliver : INFINITY;
        double te = S->heap_n > 0 ? S->e[S->heap[0]].t_end : INFINITY;
        double tx = S->xh_n > 0 ? S->xh[0].t : INFINITY;
        S->events++;
        if (ta <= te && ta <= tx) {
            do {
                int32_t id = (int32_t)next++;
                enqueue(S, id, S->n_pf_eng > 0 ? route(S, 0, S->n_pf_eng) : route(S, 0, S->n_eng), ta);
            } while (next < S->issued && S->r[next].deliver == ta);
            st = start_pending(S, ta);
        } else if (tx <= te) {
            struct xfer x = xh_pop(S);
            st = deliver(S, x.req, route(S, S->n_pf_eng, S->n_eng), x.t);
        } else if (te < INFINITY) {
            int32_t ei = S->heap[0];
            eh_pop(S);
            t_last = te;
            st = finish_step(S, ei, te);
            if (st == TY_OK) st = start_step(S, ei, te);
        } else {
            st = ty__error(TY_ERR_INTERNAL, "simulation stalled with %lld of %lld requests done", (long long)S->done,
                           (long long)S->n);
        }
    }
    if (st != TY_OK) goto done;

    /* ---- Results ---- */
    out->n_requests = S->n;
    double t_first_arrival = S->r[0].arrival;
    out->duration_s = t_last - t_first_arrival;
    if (out->duration_s <= 0) out->duration_s = 1e-9;
    double *v = ty__malloc((size_t)S->n * sizeof *v);
    if (!v) {
        st = ty__error(TY_ERR_NO_MEMORY, "simulation: out of memory for percentiles");
        goto done;
    }
    int64_t good = 0;
    for (int64_t i = 0; i < S->n; i++) {
        struct req *r = &S->r[i];
        out->in_tokens += r->prompt;
        out->out_tokens += r->output;
        double ttft = (r->t_first - r->arrival) * 1e3;
        double tpot = r->output > 1 ? (r->t_done - r->t_first) * 1e3 / (r->output - 1) : 0;
        if (ttft <= cfg.slo_ttft_ms && tpot <= cfg.slo_tpot_ms) good++;
    }
    for (int64_t i = 0; i < S->n; i++) v[i] = (S->r[i].t_first - S->r[i].arrival) * 1e3;
    out->ttft_ms = percentiles(v, S->n);
    int64_t m = 0;
    for (int64_t i = 0; i < S->n; i++)
        if (S->r[i].output > 1) v[m++] = (S->r[i].t_done - S->r[i].t_first) * 1e3 / (S->r[i].output - 1);
    out->tpot_ms = percentiles(v, m);
    for (int64_t i = 0; i < S->n; i++) v[i] = (S->r[i].t_done - S->r[i].arrival) * 1e3;
    out->e2e_ms = percentiles(v, S->n);
    ty_free(v);

    double dur = out->duration_s;
    int chips = S->l.n_inst * S->l.inst_chips;
    out->throughput_tok_s = out->out_tokens / dur;
    out->total_tok_s = (out->in_tokens + out->out_tokens) / dur;
    out->prefill_tok_s_per_chip = out->in_tokens / dur / chips;
    out->decode_tok_s_per_chip = out->out_tokens / dur / chips;
    out->request_rps = S->n / dur;
    out->goodput_rps = good / dur;
    out->slo_attainment = (double)good / S->n;
    double kv_int = 0, busy = 0, iters = 0, seqs = 0, peak = 0;
    for (int32_t i = 0; i < S->n_eng; i++) {
        kv_int += S->e[i].kv_int;
        busy += S->e[i].busy_time;
        iters += (double)S->e[i].iters;
        seqs += S->e[i].seqs_sum;
        if (S->e[i].kv_peak > peak) peak = S->e[i].kv_peak;
    }
    double cap_tok = engine_cap_tokens(S);
    out->kv_util = cap_tok > 0 && isfinite(cap_tok) ? kv_int / (cap_tok * S->n_eng * dur) : 0;
    out->kv_util_peak = peak;
    /* Pipeline virtual engines share their instance's chips: a chip is busy 1/PP of each engine's iteration. */
    out->busy_frac = busy / (S->n_eng * dur);
    double chip_busy_s = busy / S->l.engines_per_inst * S->l.inst_chips;
    double chip_s = (double)chips * dur;
    double tdp = cfg.chip->tdp_w.v;
    double energy = tdp * (chip_busy_s + (chip_s - chip_busy_s) * cfg.idle_power_frac);
    out->energy_j_per_tok = tdp > 0 && out->out_tokens > 0 ? energy / out->out_tokens : 0;
    double cost = chips * cfg.price_hr * dur / 3600;
    out->cost_per_mtok = out->out_tokens > 0 ? cost / (out->out_tokens / 1e6) : 0;
    out->cost_per_mtok_total = cost / ((out->in_tokens + out->out_tokens) / 1e6);
    out->iterations = (int64_t)iters;
    out->mean_batch = iters > 0 ? seqs / iters : 0;
    out->events = S->events;
    out->sim_seconds = ty__time_s() - wall0;
done:
    sim_free(S);
    return st;
}

/* ==== JSON ==== */

static json_t *pct_json(const struct ty_sim_pct *p) {
    json_t *o = json_object();
    json_object_set_new(o, "mean", json_real(p->mean));
    json_object_set_new(o, "p50", json_real(p->p50));
    json_object_set_new(o, "p90", json_real(p->p90));
    json_object_set_new(o, "p99", json_real(p->p99));
    return o;
}

json_t *ty__sim_config_json(const struct ty_sim_config *c, const struct ty_sim_layout *l) {
    json_t *o = json_object();
    json_object_set_new(o, "chip", json_string(c->chip->name));
    json_object_set_new(o, "model", json_string(c->model->name));
    json_object_set_new(o, "chips", json_integer(c->chips));
    json_object_set_new(o, "chips_per_node", json_integer(c->chips_per_node));
    json_object_set_new(o, "nodes", json_integer(l->nodes));
    json_object_set_new(o, "tp", json_integer(c->tp));
    json_object_set_new(o, "pp", json_integer(c->pp));
    json_object_set_new(o, "ep", json_integer(c->ep));
    json_object_set_new(o, "dp", json_integer(l->n_inst));
    json_object_set_new(o, "attention_dp_groups", json_integer(l->attn_groups));
    json_object_set_new(o, "prefill_instances", json_integer(l->n_prefill_inst));
    json_object_set_new(o, "weight_precision", json_string(ty__sim_dtype_name(c->weight)));
    json_object_set_new(o, "kv_precision", json_string(ty__sim_dtype_name(c->kv)));
    json_object_set_new(o, "max_batch_tokens", json_integer(c->max_batch_tokens));
    json_object_set_new(o, "max_seqs", json_integer(c->max_seqs));
    json_object_set_new(o, "weights_gb_per_chip", json_real(l->weight_bytes_chip / 1e9));
    json_object_set_new(o, "kv_capacity_tokens",
                        isfinite(l->kv_cap_tokens) ? json_real(l->kv_cap_tokens) : json_null());
    json_object_set_new(o, "price_per_card_hour", json_real(c->price_hr));
    json_object_set_new(o, "slo_ttft_ms", json_real(c->slo_ttft_ms));
    json_object_set_new(o, "slo_tpot_ms", json_real(c->slo_tpot_ms));
    return o;
}

json_t *ty__sim_result_json(const struct ty_sim_config *c, const struct ty_sim_layout *l,
                            const struct ty_sim_result *r) {
    json_t *o = json_object();
    json_object_set_new(o, "config", ty__sim_config_json(c, l));
    json_object_set_new(o, "requests", json_integer(r->n_requests));
    json_object_set_new(o, "duration_s", json_real(r->duration_s));
    json_object_set_new(o, "throughput_tok_s", json_real(r->throughput_tok_s));
    json_object_set_new(o, "total_tok_s", json_real(r->total_tok_s));
    json_object_set_new(o, "prefill_tok_s_per_chip", json_real(r->prefill_tok_s_per_chip));
    json_object_set_new(o, "decode_tok_s_per_chip", json_real(r->decode_tok_s_per_chip));
    json_object_set_new(o, "request_rps", json_real(r->request_rps));
    json_object_set_new(o, "ttft_ms", pct_json(&r->ttft_ms));
    json_object_set_new(o, "tpot_ms", pct_json(&r->tpot_ms));
    json_object_set_new(o, "e2e_ms", pct_json(&r->e2e_ms));
    json_object_set_new(o, "goodput_rps", json_real(r->goodput_rps));
    json_object_set_new(o, "slo_attainment", json_real(r->slo_attainment));
    json_object_set_new(o, "kv_util", json_real(r->kv_util));
    json_object_set_new(o, "kv_util_peak", json_real(r->kv_util_peak));
    json_object_set_new(o, "busy_frac", json_real(r->busy_frac));
    json_object_set_new(o, "mean_batch", json_real(r->mean_batch));
    json_object_set_new(o, "cost_per_mtok", json_real(r->cost_per_mtok));
    json_object_set_new(o, "cost_per_mtok_total", json_real(r->cost_per_mtok_total));
    json_object_set_new(o, "energy_j_per_tok", r->energy_j_per_tok > 0 ? json_real(r->energy_j_per_tok) : json_null());
    json_object_set_new(o, "iterations", json_integer(r->iterations));
    json_object_set_new(o, "events", json_integer(r->events));
    json_object_set_new(o, "sim_seconds", json_real(r->sim_seconds));
    return o;
}
