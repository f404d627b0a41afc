/*
 * engine.c - the serving engine: a scheduler thread doing iteration-level (continuous) batching over a paged KV
 * block budget, and the compute interface it calls once per iteration.
 *
 * One iteration:
 *   1. ends sequences whose request was cancelled (client gone) or passed its deadline, releasing their slots and
 *      blocks before anything else runs, so a disconnect frees its KV within one step;
 *   2. admits waiting requests in arrival order while a slot and the KV blocks are there. Admission maps the prompt's
 *      cached prefix blocks, allocates the rest and reserves blocks for the longest reply the request may produce,
 *      so a running sequence can never run out of blocks: no preemption is needed and memory is bounded by the
 *      budget. A request that does not fit waits; when the queue is full, submit says so (429 with Retry-After);
 *   3. builds one batch: a prefill chunk for each sequence still reading its prompt (chunks end on absolute multiples
 *      of prefill_chunk, so a long prompt is spread over iterations and never stalls the decoding streams, and the
 *      chunking of a sequence never depends on what else runs), plus one token for every decoding sequence;
 *   4. runs ty__engine_forward on it, without holding the lock, so HTTP threads can submit and cancel meanwhile;
 *   5. samples each sequence that has logits, reports the token through the request's callback, appends it to the
 *      block table (copy-on-write when n > 1 choices share the prompt's last block: the block's KV is copied before
 *      the next batch runs) and finishes sequences that hit end of turn, a stop string, max_tokens or the context.
 *
 * THE COMPUTE (bottom of this file) is paged for the dense and MoE Qwen models: one forward pass over the whole batch
 * (model/batch.c), so every weight is read once per iteration whatever the number of sequences, with the KV in a pool
 * of exactly the block manager's blocks. So the prefix cache saves real compute (a sequence starts after the prompt
 * blocks the cache mapped), and the n > 1 choices of a request prefill their prompt once: choice 0 leads, the others
 * wait for its prefill, then share its prompt blocks and start from its logits. Results are exact: attention is per
 * sequence over its own blocks and the matrix products are batch-invariant, so a sequence's logits never depend on
 * the batch. Hybrid linear-attention models (Qwen3-Next, Qwen3.5), whose per-sequence state is not a KV cache, keep
 * the per-sequence compute: one ty_context per slot, prefix reuse only when the slot a sequence gets still holds the
 * prefix (ty__engine_compute_reusable), and one prefill per choice; the block manager accounts for them all the same.
 */
#include "cloud/cloud-impl.h"
#include "model/model-impl.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

enum seq_state { SEQ_FREE = 0, SEQ_RUNNING, SEQ_DONE };

struct ereq;

struct seq {
    enum seq_state state;
    struct ereq *r;
    int choice;
    int32_t *tokens; /* (n_ctx) prompt then generated */
    int32_t n_tokens, n_prompt, n_computed, n_gen;
    bool fresh;     /* next batch entry resets the slot */
    int32_t leader; /* paged, n > 1, choices after the first: the slot of choice 0 while this one waits for its
                     * prefill; -1 otherwise */
    struct ty_block_table bt;
    struct ty_sampler *smp;
    struct ty_matcher *matcher; /* constrained decoding, or NULL */
};

struct ereq {
    uint64_t handle;
    struct ty_gen_request g; /* g.prompt owned (copy) */
    bool cancelled, admitted;
    int n_done;
    int32_t slots[TY_MAX_N];
    struct ereq *next; /* waiting queue or running list */
};

struct ty_engine {
    struct ty_model *model;
    struct ty_engine_params p;
    struct ty_metrics *metrics;
    int32_t n_vocab;
    struct ty_engine_compute *compute;
    struct ty_block_mgr *blocks;
    struct seq *seqs;                  /* (max_seqs) indexed by slot */
    float *logits;                     /* (max_seqs, n_vocab) */
    float *raw;                        /* (n_vocab) logits before sampling, for logprobs */
    struct ty_constrain_vocab *cvocab; /* the tokenizer's trie for constrained decoding, built at first use */
    uint32_t *cmask;                   /* (cvocab's n_vocab bits) the allowed tokens of one step */
    struct ty_engine_batch_seq *batch; /* (max_seqs) */
    bool paged;                        /* the compute follows the block tables (see the top of this file) */
    int32_t (*copies)[2];              /* (max_seqs) copy-on-write block copies for the next batch */
    int32_t n_copies;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool stop, started;
    struct ereq *wait_head, *wait_tail;
    int32_t n_waiting;
    struct ereq *running; /* admitted requests */
    uint64_t next_handle;
    struct ty_engine_info info;
};

/* ==== Requests ==== */

static void req_finish_choice(struct ty_engine *e, struct ereq *r, int choice, enum ty_finish why) {
    r->g.cb(r->g.user, choice, TY_SEQ_DONE, NULL, why);
    r->n_done++;
    if (why == TY_FINISH_CANCELLED || why == TY_FINISH_DEADLINE) {
        pthread_mutex_lock(&e->metrics->mu);
        e->metrics->cancelled++;
        pthread_mutex_unlock(&e->metrics->mu);
    }
}

static void seq_end(struct ty_engine *e, int32_t slot, enum ty_finish why) {
    struct seq *s = &e->seqs[slot];
    if (s->state != SEQ_RUNNING) return;
    ty__block_release(e->blocks, &s->bt);
    ty_sampler_free(s->smp);
    s->smp = NULL;
    ty__matcher_free(s->matcher);
    s->matcher = NULL;
    s->state = SEQ_DONE; /* the slot is reusable once the request leaves the running list */
    req_finish_choice(e, s->r, s->choice, why);
}

static void req_free(struct ereq *r) {
    ty_free((void *)r->g.prompt);
    ty_free((void *)r->g.bias_ids);
    ty_free((void *)r->g.bias_vals);
    ty__grammar_unref(r->g.grammar);
    ty_free(r);
}

/* Removes finished requests from the running list and frees their slots. Called with the lock held. */
static void reap(struct ty_engine *e) {
    for (struct ereq **pp = &e->running; *pp;) {
        struct ereq *r = *pp;
        if (r->n_done < r->g.n) {
            pp = &r->next;
            continue;
        }
        for (int i = 0; i < r->g.n; i++) e->seqs[r->slots[i]].state = SEQ_FREE;
        *pp = r->next;
        req_free(r);
    }
}

/* ==== Admission ==== */

static int32_t free_slots(struct ty_engine *e) {
    int32_t n = 0;
    for (int32_t i = 0; i < e->p.max_seqs; i++) n += e->seqs[i].state == SEQ_FREE;
    return n;
}

/* The free slot whose context holds the longest usable prefix of `tokens`, skipping `taken`. */
static int32_t pick_slot(struct ty_engine *e, const int32_t *tokens, int32_t n, const bool *taken, int32_t *reuse) {
    int32_t best = -1, best_reuse = -1;
    for (int32_t i = 0; i < e->p.max_seqs; i++) {
        if (e->seqs[i].state != SEQ_FREE || taken[i]) continue;
        int32_t r = ty__engine_compute_reusable(e->compute, i, tokens, n);
        /* the last prompt token is always computed (its logits start the reply); reuse whole chunks only, so that
         * chunk boundaries (and so the numbers) are the same with or without reuse */
        if (r > n - 1) r = n - 1;
        r -= r % e->p.prefill_chunk;
        if (r > best_reuse) best = i, best_reuse = r;
    }
    *reuse = best_reuse < 0 ? 0 : best_reuse;
    return best;
}

/* Gives sequence `s` a matcher of its request's grammar, building the vocabulary trie the first time (about 0.1 s for
 * Qwen's 152k tokens, once per server). */
static bool constrain_start(struct ty_engine *e, struct seq *s, struct ty_grammar *g) {
    enum ty_status st = TY_OK;
    if (!e->cvocab) {
        st = ty__constrain_vocab_init(ty_model_tokenizer(e->model), &e->cvocab);
        size_t words = e->cvocab ? ((size_t)ty__constrain_vocab_n(e->cvocab) + 31) / 32 + 1 : 1;
        if (st == TY_OK && !(e->cmask = ty__malloc(words * sizeof *e->cmask))) {
            ty__constrain_vocab_free(e->cvocab);
            e->cvocab = NULL;
            st = ty__error(TY_ERR_NO_MEMORY, "out of memory for constrained decoding");
        }
    }
    if (st == TY_OK) st = ty__matcher_init(g, e->cvocab, &s->matcher);
    if (st != TY_OK) TY_LOG_E("engine: %s", ty_last_error());
    return st == TY_OK;
}

static bool try_admit(struct ty_engine *e, struct ereq *r) {
    struct ty_gen_request *g = &r->g;
    if (free_slots(e) < g->n) return false;
    int32_t n_max = g->n_prompt + g->max_tokens;
    if (n_max > e->p.n_ctx) n_max = e->p.n_ctx;
    /* with several choices each may copy the shared last prompt block once */
    int32_t extra = g->n > 1 ? TY_KV_BLOCK : 0;
    struct ty_block_table bt[TY_MAX_N];
    int32_t cached = 0;
    if (ty__block_admit(e->blocks, g->prompt, g->n_prompt, n_max + extra, &bt[0], &cached) != TY_OK) return false;
    int32_t reserve = bt[0].n_reserved;
    for (int i = 1; i < g->n; i++) {
        if (ty__block_fork(e->blocks, &bt[0], reserve, &bt[i]) != TY_OK) {
            for (int k = 0; k < i; k++) ty__block_release(e->blocks, &bt[k]);
            return false;
        }
    }
    bool taken[1024] = {0}; /* max_seqs <= 1024 (engine init) */
    for (int i = 0; i < g->n; i++) {
        int32_t reuse;
        int32_t slot = pick_slot(e, g->prompt, g->n_prompt, taken, &reuse);
        TY_ASSERT(slot >= 0);
        taken[slot] = true;
        struct seq *s = &e->seqs[slot];
        struct ty_sampler_params sp = g->sp;
        sp.seed = g->sp.seed + (uint64_t)i; /* each choice its own stream, all reproducible from the seed */
        if (ty_sampler_init(&sp, e->n_vocab, &s->smp) != TY_OK) {
            /* out of memory for a sampler: give up this request now rather than later */
            TY_LOG_E("engine: %s", ty_last_error());
        }
        /* the same for the constrained-decoding state */
        if (s->smp && g->grammar && !constrain_start(e, s, g->grammar)) {
            ty_sampler_free(s->smp);
            s->smp = NULL;
        }
        s->state = SEQ_RUNNING;
        s->r = r;
        s->choice = i;
        memcpy(s->tokens, g->prompt, (size_t)g->n_prompt * sizeof *s->tokens);
        s->n_tokens = s->n_prompt = g->n_prompt;
        /* paged: the prompt blocks the prefix cache mapped hold their KV already; choices after the first wait for
         * the first one's prefill and share it */
        s->n_computed = e->paged ? cached : reuse;
        s->leader = e->paged && i > 0 ? r->slots[0] : -1;
        s->n_gen = 0;
        s->fresh = true;
        s->bt = bt[i];
        r->slots[i] = slot;
        if (!s->smp) seq_end(e, slot, TY_FINISH_ERROR);
    }
    r->admitted = true;
    pthread_mutex_lock(&e->metrics->mu);
    e->metrics->prompt_tokens += (uint64_t)g->n_prompt * (uint64_t)g->n;
    e->metrics->cached_prompt_tokens += (uint64_t)cached;
    pthread_mutex_unlock(&e->metrics->mu);
    return true;
}

/* ==== Sampling ==== */

static void top_logprobs(const float *raw, int32_t n_vocab, float lse, int k, struct ty_seq_token *t) {
    t->n_top = 0;
    for (int32_t id = 0; id < n_vocab; id++) {
        float v = raw[id];
        int pos = t->n_top;
        if (pos == k && !(v > raw[t->top_ids[k - 1]])) continue;
        if (pos == k) pos--;
        while (pos > 0 && v > raw[t->top_ids[pos - 1]]) {
            t->top_ids[pos] = t->top_ids[pos - 1];
            pos--;
        }
        t->top_ids[pos] = id;
        if (t->n_top < k) t->n_top++;
    }
    for (int i = 0; i < t->n_top; i++) t->top_logprobs[i] = raw[t->top_ids[i]] - lse;
}

/* Samples slot `slot` from its logits, reports the token and grows the sequence. */
static void step_seq(struct ty_engine *e, int32_t slot, double now) {
    struct seq *s = &e->seqs[slot];
    struct ereq *r = s->r;
    float *logits = e->logits + (size_t)slot * (size_t)e->n_vocab;
    struct ty_seq_token t = {0};
    bool want_lp = r->g.top_logprobs >= 0;
    if (want_lp) memcpy(e->raw, logits, (size_t)e->n_vocab * sizeof *e->raw);
    /* logit_bias, then the constrained-decoding mask; logprobs stay those of the model (vLLM's default) */
    if (!ty__constrain_logits(s->matcher, e->cmask, r->g.bias_ids, r->g.bias_vals, r->g.n_bias, logits, e->n_vocab)) {
        TY_LOG_E("engine: constrained decoding reached a state no token can continue (a schema without a finite "
                 "instance?); ending the sequence");
        seq_end(e, slot, TY_FINISH_ERROR);
        return;
    }
    t.id = ty_sampler_sample(s->smp, logits);
    if (s->matcher && !ty__matcher_accept(s->matcher, t.id)) {
        TY_LOG_E("engine: sampled token %d outside the constraint's mask; ending the sequence", t.id);
        seq_end(e, slot, TY_FINISH_ERROR);
        return;
    }
    const struct ty_tokenizer *tok = ty_model_tokenizer(e->model);
    if (ty_tokenizer_is_eog(tok, t.id)) {
        seq_end(e, slot, TY_FINISH_STOP);
        return;
    }
    if (want_lp) {
        float mx = -INFINITY;
        for (int32_t i = 0; i < e->n_vocab; i++) mx = fmaxf(mx, e->raw[i]);
        double sum = 0;
        for (int32_t i = 0; i < e->n_vocab; i++) sum += exp((double)(e->raw[i] - mx));
        float lse = mx + (float)log(sum);
        t.logprob = e->raw[t.id] - lse;
        if (r->g.top_logprobs > 0) top_logprobs(e->raw, e->n_vocab, lse, r->g.top_logprobs, &t);
    }
    s->n_gen++;
    pthread_mutex_lock(&e->metrics->mu);
    e->metrics->generation_tokens++;
    pthread_mutex_unlock(&e->metrics->mu);
    bool stop = r->g.cb(r->g.user, s->choice, TY_SEQ_TOKEN, &t, TY_FINISH_STOP);
    if (stop) {
        seq_end(e, slot, TY_FINISH_STOP);
        return;
    }
    if (s->n_gen >= r->g.max_tokens || s->n_tokens >= e->p.n_ctx) {
        seq_end(e, slot, TY_FINISH_LENGTH);
        return;
    }
    int32_t from, to;
    if (ty__block_append(e->blocks, &s->bt, &from, &to) != TY_OK) {
        /* cannot happen while admission reserves the longest reply; fail the sequence rather than overcommit */
        TY_LOG_E("engine: KV block reservation exhausted for a sequence; ending it");
        seq_end(e, slot, TY_FINISH_ERROR);
        return;
    }
    if (from >= 0) { /* copy-on-write: the next batch copies the shared block's KV first (one per sequence and step) */
        e->copies[e->n_copies][0] = from;
        e->copies[e->n_copies][1] = to;
        e->n_copies++;
    }
    s->tokens[s->n_tokens++] = t.id;
    (void)now;
}

/* Paged, n > 1: choice 0 in slot `lead` has computed the shared prompt. The choices waiting for it start from its
 * logits (copied before it samples, which may change them) and the prompt blocks they already share. Their slots go
 * to `out`; the caller steps them after the leader. */
static int32_t release_followers(struct ty_engine *e, int32_t lead, int32_t *out) {
    struct ereq *r = e->seqs[lead].r;
    size_t row = (size_t)e->n_vocab;
    int32_t n = 0;
    for (int i = 1; i < r->g.n; i++) {
        struct seq *f = &e->seqs[r->slots[i]];
        if (f->state != SEQ_RUNNING || f->leader != lead) continue;
        f->leader = -1;
        f->n_computed = f->n_prompt;
        f->fresh = false;
        memcpy(e->logits + (size_t)r->slots[i] * row, e->logits + (size_t)lead * row, row * sizeof(float));
        out[n++] = r->slots[i];
    }
    return n;
}

/* ==== The scheduler thread ==== */

static void update_info(struct ty_engine *e) {
    int32_t running = 0;
    for (int32_t i = 0; i < e->p.max_seqs; i++) running += e->seqs[i].state == SEQ_RUNNING;
    e->info.running = running;
    e->info.waiting = e->n_waiting;
    ty__block_mgr_stats(e->blocks, &e->info.blocks);
    struct ty_metrics *m = e->metrics;
    pthread_mutex_lock(&m->mu);
    m->running = running;
    m->waiting = e->n_waiting;
    m->kv_used = e->info.blocks.n_used;
    m->kv_free = e->info.blocks.n_free;
    m->kv_total = e->info.blocks.n_total;
    m->kv_cached = e->info.blocks.n_cached;
    m->prefix_queries = e->info.blocks.prefix_queries;
    m->prefix_hits = e->info.blocks.prefix_hits;
    pthread_mutex_unlock(&m->mu);
}

/* Step 1 and 2, with the lock held. */
static void schedule(struct ty_engine *e, double now) {
    for (struct ereq *r = e->running; r; r = r->next) {
        bool late = r->g.deadline > 0 && now > r->g.deadline;
        if (!r->cancelled && !late) continue;
        for (int i = 0; i < r->g.n; i++)
            if (e->seqs[r->slots[i]].state == SEQ_RUNNING)
                seq_end(e, r->slots[i], r->cancelled ? TY_FINISH_CANCELLED : TY_FINISH_DEADLINE);
    }
    /* waiting requests that were cancelled or expired leave the queue without running */
    for (struct ereq **pp = &e->wait_head; *pp;) {
        struct ereq *r = *pp;
        bool late = r->g.deadline > 0 && now > r->g.deadline;
        if (!r->cancelled && !late) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        e->n_waiting--;
        for (int i = 0; i < r->g.n; i++)
            req_finish_choice(e, r, i, r->cancelled ? TY_FINISH_CANCELLED : TY_FINISH_DEADLINE);
        req_free(r);
    }
    e->wait_tail = NULL;
    for (struct ereq *r = e->wait_head; r; r = r->next) e->wait_tail = r;
    reap(e);
    while (e->wait_head && try_admit(e, e->wait_head)) {
        struct ereq *r = e->wait_head;
        e->wait_head = r->next;
        if (!e->wait_head) e->wait_tail = NULL;
        e->n_waiting--;
        r->next = e->running;
        e->running = r;
    }
    reap(e);
    update_info(e);
}

static void *engine_main(void *arg) {
    struct ty_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        double now = ty__time_s();
        schedule(e, now);
        if (e->stop) break;
        /* Step 3: the batch. */
        int32_t nb = 0, budget = e->p.prefill_budget;
        for (int32_t slot = 0; slot < e->p.max_seqs; slot++) {
            struct seq *s = &e->seqs[slot];
            if (s->state != SEQ_RUNNING) continue;
            if (s->leader >= 0) { /* waits for choice 0's prefill; if that choice failed, so does this one */
                if (e->seqs[s->leader].state != SEQ_RUNNING) seq_end(e, slot, TY_FINISH_ERROR);
                continue;
            }
            int32_t todo = s->n_tokens - s->n_computed;
            TY_ASSERT(todo > 0);
            bool prefill = s->n_computed < s->n_prompt;
            if (prefill) {
                if (budget <= 0) continue; /* next iteration; decoding streams go on meanwhile */
                int32_t chunk_end = (s->n_computed / e->p.prefill_chunk + 1) * e->p.prefill_chunk;
                if (chunk_end > s->n_tokens) chunk_end = s->n_tokens;
                todo = chunk_end - s->n_computed;
                budget -= todo;
            }
            e->batch[nb++] = (struct ty_engine_batch_seq){
                .slot = slot,
                .reset = s->fresh,
                .pos = s->n_computed,
                .tokens = s->tokens + s->n_computed,
                .n_tokens = todo,
                .want_logits = s->n_computed + todo == s->n_tokens,
                .blocks = &s->bt,
                .logits = e->logits + (size_t)slot * (size_t)e->n_vocab,
            };
        }
        if (!nb) {
            if (!e->wait_head || e->stop) {
                pthread_cond_wait(&e->cv, &e->mu);
            } else {
                /* the head waits for blocks held by nobody running: cannot happen, but never spin */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 10 * 1000 * 1000;
                if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
                pthread_cond_timedwait(&e->cv, &e->mu, &ts);
            }
            continue;
        }
        /* Step 4: compute, unlocked. Sequences in the batch cannot be freed meanwhile: only this thread ends them. */
        pthread_mutex_unlock(&e->mu);
        struct ty_engine_batch b = {e->batch, nb, (const int32_t(*)[2])e->copies, e->n_copies};
        enum ty_status st = ty__engine_forward(e->compute, &b);
        pthread_mutex_lock(&e->mu);
        e->n_copies = 0;
        /* Step 5. */
        now = ty__time_s();
        for (int32_t i = 0; i < nb; i++) {
            struct ty_engine_batch_seq *bs = &e->batch[i];
            struct seq *s = &e->seqs[bs->slot];
            if (s->state != SEQ_RUNNING) continue;
            if (st != TY_OK && bs->status != TY_OK) {
                TY_LOG_E("engine: forward pass failed for a sequence: %s", ty_last_error());
                seq_end(e, bs->slot, TY_FINISH_ERROR);
                continue;
            }
            s->fresh = false;
            bool was_prefill = s->n_computed < s->n_prompt;
            s->n_computed += bs->n_tokens;
            int32_t followers[TY_MAX_N], n_followers = 0;
            if (was_prefill && s->n_computed >= s->n_prompt) {
                ty__block_publish(e->blocks, &s->bt, s->tokens, s->n_prompt);
                if (e->paged) n_followers = release_followers(e, bs->slot, followers);
            }
            if (bs->want_logits) step_seq(e, bs->slot, now);
            for (int32_t k = 0; k < n_followers; k++) step_seq(e, followers[k], now);
        }
    }
    /* shutting down: every sequence and waiting request ends as cancelled */
    for (struct ereq *r = e->running; r; r = r->next) r->cancelled = true;
    for (struct ereq *r = e->wait_head; r; r = r->next) r->cancelled = true;
    e->stop = false;
    schedule(e, ty__time_s());
    e->stop = true;
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ==== Public ==== */

/* KV bytes per token of the per-sequence compute, measured: the allocator's growth for one context of 2 blocks more
 * than another. */
static size_t measured_kv_per_token(struct ty_model *model) {
    size_t per_tok = 0;
    struct ty_context *a = NULL, *b = NULL;
    struct ty_context_params cp = ty_context_default_params();
    cp.n_ctx = TY_KV_BLOCK;
    size_t m0 = ty_mem_allocated();
    if (ty_context_init(model, &cp, &a) == TY_OK) {
        size_t m1 = ty_mem_allocated();
        cp.n_ctx = 3 * TY_KV_BLOCK;
        if (ty_context_init(model, &cp, &b) == TY_OK) {
            size_t m2 = ty_mem_allocated();
            if (m2 - m1 > m1 - m0) per_tok = ((m2 - m1) - (m1 - m0)) / (2 * TY_KV_BLOCK);
        }
    }
    ty_context_free(a);
    ty_context_free(b);
    return per_tok ? per_tok : 1;
}

enum ty_status ty__engine_init(struct ty_model *model, const struct ty_engine_params *p, struct ty_metrics *metrics,
                               struct ty_engine **out) {
    *out = NULL;
    if (p->max_seqs < 1 || p->max_seqs > 1024)
        return ty__error(TY_ERR_INVALID_ARG, "max sequences %d out of range [1, 1024]", p->max_seqs);
    if (p->n_ctx < TY_KV_BLOCK)
        return ty__error(TY_ERR_INVALID_ARG, "context %d is below one KV block (%d tokens)", p->n_ctx, TY_KV_BLOCK);
    struct ty_engine *e = ty__calloc(1, sizeof *e);
    if (!e) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the engine");
    e->model = model;
    e->p = *p;
    if (e->p.prefill_chunk <= 0) e->p.prefill_chunk = 64;
    e->p.prefill_chunk -= e->p.prefill_chunk % TY_KV_BLOCK;
    if (e->p.prefill_chunk <= 0) e->p.prefill_chunk = TY_KV_BLOCK;
    if (e->p.prefill_budget <= 0) e->p.prefill_budget = 256;
    if (e->p.max_waiting <= 0) e->p.max_waiting = 256;
    e->metrics = metrics;
    e->n_vocab = ty_model_n_vocab(model);
    e->next_handle = 1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);

    int32_t blocks_per_seq = (p->n_ctx + TY_KV_BLOCK - 1) / TY_KV_BLOCK;
    int64_t n_blocks = (int64_t)blocks_per_seq * p->max_seqs;
    int64_t n_cached = 0;
    /* KV bytes per token: the paged pool's F16 rows, or for the per-sequence compute the measured growth of a
     * context (whatever state the architecture keeps) */
    e->paged = ty__batch_supported(model);
    size_t per_tok = e->paged ? ty__kv_pool_bytes_per_token(model) : measured_kv_per_token(model);
    if (p->kv_bytes > 0) n_blocks = p->kv_bytes / (int64_t)(per_tok * TY_KV_BLOCK);
    if (p->prefix_bytes > 0) n_cached = p->prefix_bytes / (int64_t)(per_tok * TY_KV_BLOCK);
    if (p->prefix_bytes < 0) n_cached = n_blocks; /* freed blocks cost nothing to keep: allocation evicts them */
    enum ty_status st = TY_OK;
    if (n_blocks < blocks_per_seq) {
        st = ty__error(TY_ERR_INVALID_ARG,
                       "the KV budget holds %lld blocks of %d tokens (%zu bytes per token), less than one "
                       "context of %d tokens; raise --kv-mem or lower --ctx",
                       (long long)n_blocks, TY_KV_BLOCK, per_tok, p->n_ctx);
    } else {
        if (n_blocks > (1 << 28)) n_blocks = 1 << 28; /* the block manager's limit, far past any real budget */
        TY_LOG_I("engine: %lld KV blocks of %d tokens (%zu bytes per token), prefix cache up to %lld blocks, %s "
                 "compute",
                 (long long)n_blocks, TY_KV_BLOCK, per_tok, (long long)n_cached,
                 e->paged ? "paged batched" : "per-sequence");
    }
    /* the most tokens one iteration can hold: the prefill budget may be passed by one chunk less a token, and every
     * other running sequence decodes one */
    int32_t max_tokens = e->p.prefill_budget + e->p.prefill_chunk - 1 + p->max_seqs;
    if (st == TY_OK)
        st = ty__engine_compute_init(model, p->max_seqs, p->n_ctx, max_tokens, (int32_t)n_blocks, &e->compute);
    if (st == TY_OK) e->paged = ty__engine_compute_paged(e->compute);
    if (st == TY_OK)
        st = ty__block_mgr_init((int32_t)n_blocks, (int32_t)(n_cached > INT32_MAX ? INT32_MAX : n_cached), &e->blocks);
    if (st == TY_OK) {
        e->seqs = ty__calloc((size_t)p->max_seqs, sizeof *e->seqs);
        e->logits = ty__malloc((size_t)p->max_seqs * (size_t)e->n_vocab * sizeof *e->logits);
        e->raw = ty__malloc((size_t)e->n_vocab * sizeof *e->raw);
        e->batch = ty__calloc((size_t)p->max_seqs, sizeof *e->batch);
        e->copies = ty__calloc((size_t)p->max_seqs, sizeof *e->copies);
        if (!e->seqs || !e->logits || !e->raw || !e->batch || !e->copies)
            st = ty__error(TY_ERR_NO_MEMORY, "out of memory for the engine");
        for (int32_t i = 0; st == TY_OK && i < p->max_seqs; i++)
            if (!(e->seqs[i].tokens = ty__malloc((size_t)p->n_ctx * sizeof(int32_t))))
                st = ty__error(TY_ERR_NO_MEMORY, "out of memory for the engine");
    }
    if (st == TY_OK) {
        update_info(e);
        if (pthread_create(&e->thread, NULL, engine_main, e) != 0)
            st = ty__error(TY_ERR_INTERNAL, "cannot start the scheduler thread");
        else
            e->started = true;
    }
    if (st != TY_OK) {
        ty__engine_free(e);
        return st;
    }
    *out = e;
    return TY_OK;
}

void ty__engine_free(struct ty_engine *e) {
    if (!e) return;
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    for (int32_t i = 0; e->seqs && i < e->p.max_seqs; i++) {
        ty_free(e->seqs[i].tokens);
        ty_sampler_free(e->seqs[i].smp);
        ty__matcher_free(e->seqs[i].matcher);
    }
    ty__constrain_vocab_free(e->cvocab);
    ty_free(e->cmask);
    ty_free(e->seqs);
    ty_free(e->logits);
    ty_free(e->raw);
    ty_free(e->batch);
    ty_free(e->copies);
    ty__block_mgr_free(e->blocks);
    ty__engine_compute_free(e->compute);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    ty_free(e);
}

uint64_t ty__engine_submit(struct ty_engine *e, const struct ty_gen_request *g, int64_t *retry_after) {
    *retry_after = 0;
    TY_ASSERT(g->n >= 1 && g->n <= TY_MAX_N && g->n_prompt > 0 && g->max_tokens > 0);
    struct ereq *r = ty__calloc(1, sizeof *r);
    int32_t *prompt = ty__malloc((size_t)g->n_prompt * sizeof *prompt);
    if (!r || !prompt) {
        ty_free(r);
        ty_free(prompt);
        *retry_after = 1;
        return 0;
    }
    memcpy(prompt, g->prompt, (size_t)g->n_prompt * sizeof *prompt);
    r->g = *g;
    r->g.prompt = prompt;
    r->g.bias_ids = NULL;
    r->g.bias_vals = NULL;
    r->g.grammar = ty__grammar_ref(g->grammar);
    if (g->n_bias > 0) {
        int32_t *ids = ty__malloc((size_t)g->n_bias * sizeof *ids);
        float *vals = ty__malloc((size_t)g->n_bias * sizeof *vals);
        r->g.bias_ids = ids;
        r->g.bias_vals = vals;
        if (!ids || !vals) {
            req_free(r);
            *retry_after = 1;
            return 0;
        }
        memcpy(ids, g->bias_ids, (size_t)g->n_bias * sizeof *ids);
        memcpy(vals, g->bias_vals, (size_t)g->n_bias * sizeof *vals);
    }
    pthread_mutex_lock(&e->mu);
    int64_t n_max = g->n_prompt + (int64_t)g->max_tokens + (g->n > 1 ? TY_KV_BLOCK : 0);
    int64_t need = (int64_t)g->n * ((n_max + TY_KV_BLOCK - 1) / TY_KV_BLOCK);
    if (g->n > e->p.max_seqs || need > e->info.blocks.n_total) { /* could never be admitted */
        pthread_mutex_unlock(&e->mu);
        req_free(r);
        *retry_after = -1;
        return 0;
    }
    if (e->n_waiting >= e->p.max_waiting || e->stop) {
        pthread_mutex_unlock(&e->mu);
        req_free(r);
        *retry_after = 1 + e->n_waiting / (e->p.max_seqs > 0 ? e->p.max_seqs : 1);
        return 0;
    }
    r->handle = e->next_handle++;
    if (e->wait_tail)
        e->wait_tail->next = r;
    else
        e->wait_head = r;
    e->wait_tail = r;
    e->n_waiting++;
    uint64_t h = r->handle;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return h;
}

void ty__engine_cancel(struct ty_engine *e, uint64_t handle) {
    pthread_mutex_lock(&e->mu);
    for (struct ereq *r = e->running; r; r = r->next)
        if (r->handle == handle) r->cancelled = true;
    for (struct ereq *r = e->wait_head; r; r = r->next)
        if (r->handle == handle) r->cancelled = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void ty__engine_info(struct ty_engine *e, struct ty_engine_info *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->info;
    pthread_mutex_unlock(&e->mu);
}

int32_t ty__engine_n_ctx(const struct ty_engine *e) {
    return e->p.n_ctx;
}

/* ==== Compute ==== */

struct slot_ctx {
    struct ty_context *ctx;
    int32_t *hist; /* (n_ctx) tokens whose KV the context holds */
    int32_t n_hist;
};

struct ty_engine_compute {
    int32_t n_slots, n_ctx;
    /* paged: one pool and one batch for every sequence */
    struct ty_kv_pool *pool;
    struct ty_batch *batch;
    struct ty_batch_seq *bseqs; /* (n_slots) */
    /* per sequence: one context per slot */
    struct slot_ctx *slots;
};

enum ty_status ty__engine_compute_init(struct ty_model *model, int32_t n_slots, int32_t n_ctx, int32_t max_tokens,
                                       int32_t n_blocks, struct ty_engine_compute **out) {
    *out = NULL;
    struct ty_engine_compute *c = ty__calloc(1, sizeof *c);
    if (!c) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the engine");
    c->n_slots = n_slots;
    c->n_ctx = n_ctx;
    enum ty_status st = TY_OK;
    /* everything up front: the server fails at start, never under load */
    if (ty__batch_supported(model)) {
        st = ty__kv_pool_init(model, n_blocks, TY_KV_BLOCK, &c->pool);
        if (st == TY_OK) st = ty__batch_init(model, c->pool, max_tokens, n_slots, n_ctx, &c->batch);
        if (st == TY_OK && !(c->bseqs = ty__calloc((size_t)n_slots, sizeof *c->bseqs)))
            st = ty__error(TY_ERR_NO_MEMORY, "out of memory for the engine");
        if (st != TY_OK) ty__error_prefix(st, "paged compute for %d sequences of %d tokens", n_slots, n_ctx);
    } else {
        c->slots = ty__calloc((size_t)n_slots, sizeof *c->slots);
        if (!c->slots) st = ty__error(TY_ERR_NO_MEMORY, "out of memory for the engine");
        struct ty_context_params cp = ty_context_default_params();
        cp.n_ctx = n_ctx;
        for (int32_t i = 0; st == TY_OK && i < n_slots; i++) {
            st = ty_context_init(model, &cp, &c->slots[i].ctx);
            if (st == TY_OK && ty_context_n_ctx(c->slots[i].ctx) < n_ctx)
                st = ty__error(TY_ERR_INVALID_ARG, "context of %d tokens is more than the model allows (%d)", n_ctx,
                               ty_context_n_ctx(c->slots[i].ctx));
            if (st == TY_OK && !(c->slots[i].hist = ty__malloc((size_t)n_ctx * sizeof(int32_t))))
                st = ty__error(TY_ERR_NO_MEMORY, "out of memory for %d sequence contexts", n_slots);
        }
        if (st != TY_OK) ty__error_prefix(st, "allocating %d sequence contexts of %d tokens", n_slots, n_ctx);
    }
    if (st != TY_OK) {
        ty__engine_compute_free(c);
        return st;
    }
    *out = c;
    return TY_OK;
}

void ty__engine_compute_free(struct ty_engine_compute *c) {
    if (!c) return;
    ty__batch_free(c->batch);
    ty__kv_pool_free(c->pool);
    ty_free(c->bseqs);
    for (int32_t i = 0; c->slots && i < c->n_slots; i++) {
        ty_context_free(c->slots[i].ctx);
        ty_free(c->slots[i].hist);
    }
    ty_free(c->slots);
    ty_free(c);
}

bool ty__engine_compute_paged(const struct ty_engine_compute *c) {
    return c->batch != NULL;
}

int32_t ty__engine_compute_reusable(struct ty_engine_compute *c, int32_t slot, const int32_t *tokens, int32_t n) {
    if (!c->slots) return 0;
    struct slot_ctx *s = &c->slots[slot];
    int32_t k = 0;
    while (k < s->n_hist && k < n && s->hist[k] == tokens[k]) k++;
    return k;
}

/* Paged: block copies first (copy-on-write), then every entry in one forward pass. */
static enum ty_status forward_paged(struct ty_engine_compute *c, struct ty_engine_batch *b) {
    enum ty_status st = TY_OK;
    for (int32_t i = 0; st == TY_OK && i < b->n_copies; i++)
        st = ty__batch_copy_block(c->batch, b->copies[i][0], b->copies[i][1]);
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const struct ty_engine_batch_seq *q = &b->seqs[i];
        c->bseqs[i] = (struct ty_batch_seq){q->tokens,      q->n_tokens,  q->pos,
                                            q->blocks->ids, q->blocks->n, q->want_logits ? q->logits : NULL};
    }
    if (st == TY_OK) st = ty__batch_forward(c->batch, c->bseqs, b->n_seqs);
    for (int32_t i = 0; i < b->n_seqs; i++) b->seqs[i].status = st;
    return st;
}

enum ty_status ty__engine_forward(struct ty_engine_compute *c, struct ty_engine_batch *b) {
    if (c->batch) return forward_paged(c, b);
    enum ty_status ret = TY_OK;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        struct ty_engine_batch_seq *q = &b->seqs[i];
        struct slot_ctx *s = &c->slots[q->slot];
        q->status = TY_OK;
        if (q->reset || ty_context_n_past(s->ctx) != q->pos) {
            TY_ASSERT(q->pos <= s->n_hist);
            q->status = ty_context_truncate(s->ctx, q->pos);
            s->n_hist = q->pos;
        }
        if (q->status == TY_OK)
            q->status = ty_context_eval(s->ctx, q->tokens, (size_t)q->n_tokens,
                                        q->want_logits ? TY_LOGITS_LAST : TY_LOGITS_NONE, q->logits);
        if (q->status == TY_OK) {
            memcpy(s->hist + q->pos, q->tokens, (size_t)q->n_tokens * sizeof *q->tokens);
            s->n_hist = q->pos + q->n_tokens;
        } else {
            s->n_hist = 0; /* unknown state: never reuse */
            ret = q->status;
        }
    }
    return ret;
}
