/*
 * metrics.c - the server's Prometheus metrics: requests by status, TTFT/TPOT/end-to-end histograms, token counters,
 * running and waiting sequences, KV blocks and the prefix-cache hit rate, written in the text exposition format
 * (https://prometheus.io/docs/instrumenting/exposition_formats/). One mutex guards them; updates are a few adds.
 */
#include "cloud/cloud-impl.h"

/* Upper bounds in seconds, shared by the three latency histograms (TPOT uses the low end, e2e the high end). */
static const double bounds[TY_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1,     2.5,  5,     10,   30};

void ty__metrics_init(struct ty_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void ty__metrics_observe(struct ty_hist *h, double s) {
    int i = 0;
    while (i < TY_HIST_BUCKETS && s > bounds[i]) i++;
    h->counts[i]++;
    h->sum += s;
    h->n++;
}

void ty__metrics_status(struct ty_metrics *m, int status) {
    pthread_mutex_lock(&m->mu);
    if (status >= 100 && status < 600) {
        m->requests_by_status[status / 100]++;
        m->by_code[status]++;
    }
    pthread_mutex_unlock(&m->mu);
}

static void hist(struct ty_buf *b, const char *name, const char *help, const char *model, const struct ty_hist *h) {
    ty__buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < TY_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        ty__buf_printf(b, "%s_bucket{model_name=\"%s\",le=\"%g\"} %llu\n", name, model, bounds[i],
                       (unsigned long long)cum);
    }
    cum += h->counts[TY_HIST_BUCKETS];
    ty__buf_printf(b, "%s_bucket{model_name=\"%s\",le=\"+Inf\"} %llu\n", name, model, (unsigned long long)cum);
    ty__buf_printf(b, "%s_sum{model_name=\"%s\"} %.9g\n%s_count{model_name=\"%s\"} %llu\n", name, model, h->sum, name,
                   model, (unsigned long long)h->n);
}

void ty__metrics_render(struct ty_metrics *m, const char *model, struct ty_buf *b) {
    pthread_mutex_lock(&m->mu);
    ty__buf_puts(b, "# HELP tongyun_requests_total HTTP requests answered, by status code.\n"
                    "# TYPE tongyun_requests_total counter\n");
    for (int c = 100; c < 600; c++)
        if (m->by_code[c])
            ty__buf_printf(b, "tongyun_requests_total{code=\"%d\"} %llu\n", c, (unsigned long long)m->by_code[c]);
    hist(b, "tongyun_time_to_first_token_seconds", "Time from arrival to the first generated token.", model, &m->ttft);
    hist(b, "tongyun_time_per_output_token_seconds", "Time between generated tokens after the first.", model, &m->tpot);
    hist(b, "tongyun_e2e_request_latency_seconds", "Time from arrival to the last byte of the answer.", model, &m->e2e);
    ty__buf_printf(b,
                   "# HELP tongyun_prompt_tokens_total Prompt tokens admitted.\n# TYPE tongyun_prompt_tokens_total "
                   "counter\ntongyun_prompt_tokens_total{model_name=\"%s\"} %llu\n"
                   "# HELP tongyun_generation_tokens_total Tokens generated.\n# TYPE tongyun_generation_tokens_total "
                   "counter\ntongyun_generation_tokens_total{model_name=\"%s\"} %llu\n"
                   "# HELP tongyun_num_requests_running Sequences being prefilled or decoded.\n"
                   "# TYPE tongyun_num_requests_running gauge\ntongyun_num_requests_running{model_name=\"%s\"} %lld\n"
                   "# HELP tongyun_num_requests_waiting Sequences waiting for admission.\n"
                   "# TYPE tongyun_num_requests_waiting gauge\ntongyun_num_requests_waiting{model_name=\"%s\"} %lld\n"
                   "# HELP tongyun_kv_blocks_used KV cache blocks referenced by sequences.\n"
                   "# TYPE tongyun_kv_blocks_used gauge\ntongyun_kv_blocks_used{model_name=\"%s\"} %d\n"
                   "# HELP tongyun_kv_blocks_free KV cache blocks free (including cached prefix blocks).\n"
                   "# TYPE tongyun_kv_blocks_free gauge\ntongyun_kv_blocks_free{model_name=\"%s\"} %d\n"
                   "# HELP tongyun_kv_blocks_total KV cache blocks in all.\n"
                   "# TYPE tongyun_kv_blocks_total gauge\ntongyun_kv_blocks_total{model_name=\"%s\"} %d\n"
                   "# HELP tongyun_prefix_cache_blocks Free blocks holding a reusable prefix.\n"
                   "# TYPE tongyun_prefix_cache_blocks gauge\ntongyun_prefix_cache_blocks{model_name=\"%s\"} %d\n"
                   "# HELP tongyun_prefix_cache_queries_total Prompt blocks looked up in the prefix cache.\n"
                   "# TYPE tongyun_prefix_cache_queries_total counter\n"
                   "tongyun_prefix_cache_queries_total{model_name=\"%s\"} %llu\n"
                   "# HELP tongyun_prefix_cache_hits_total Prompt blocks found in the prefix cache.\n"
                   "# TYPE tongyun_prefix_cache_hits_total counter\n"
                   "tongyun_prefix_cache_hits_total{model_name=\"%s\"} %llu\n"
                   "# HELP tongyun_prefix_cache_hit_rate Hits over queries since start.\n"
                   "# TYPE tongyun_prefix_cache_hit_rate gauge\ntongyun_prefix_cache_hit_rate{model_name=\"%s\"} %g\n"
                   "# HELP tongyun_requests_cancelled_total Sequences ended by client disconnect or deadline.\n"
                   "# TYPE tongyun_requests_cancelled_total counter\n"
                   "tongyun_requests_cancelled_total{model_name=\"%s\"} %llu\n",
                   model, (unsigned long long)m->prompt_tokens, model, (unsigned long long)m->generation_tokens, model,
                   (long long)m->running, model, (long long)m->waiting, model, m->kv_used, model, m->kv_free, model,
                   m->kv_total, model, m->kv_cached, model, (unsigned long long)m->prefix_queries, model,
                   (unsigned long long)m->prefix_hits, model,
                   m->prefix_queries ? (double)m->prefix_hits / (double)m->prefix_queries : 0.0, model,
                   (unsigned long long)m->cancelled);
    pthread_mutex_unlock(&m->mu);
}
