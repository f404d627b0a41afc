/*
 * cloud-impl.h - internal declarations of the cloud layer (src/cloud/): the paged KV block manager with its prefix
 * cache, the OpenAI request model and its serialisers, API keys and per-key limits, the usage ledger, metrics, the
 * scheduler (engine) and the HTTP server. tools/cmd-serve.c, cmd-keys.c and cmd-usage.c and the tests use these.
 */
#ifndef TY_CLOUD_IMPL_H
#define TY_CLOUD_IMPL_H

#include "base/base.h"
#include "model/constrain.h"

#include <jansson.h>
#include <pthread.h>

/* ==== Paged KV block manager (blocks.c) ==== */

/* Tokens per KV block. Chunked prefill also works in multiples of this, so chunk boundaries never depend on what
 * else is running. */
#define TY_KV_BLOCK 16

/* A block's chained hash: SHA-256(parent hash || its TY_KV_BLOCK token ids, little-endian int32). Collision-resistant
 * on purpose: with a weak hash a tenant could craft a prompt whose blocks collide with another tenant's and read its
 * cached KV (vLLM CVE-2025-25183). */
struct ty_block_hash {
    uint8_t h[32];
};

struct ty_block_mgr;

/* One sequence's block table: logical block i of the sequence lives in physical block ids[i]. */
struct ty_block_table {
    int32_t *ids;
    int32_t n, cap;
    int32_t n_tokens;   /* tokens the table covers */
    int32_t n_reserved; /* blocks reserved at admission and not yet allocated */
};

struct ty_block_stats {
    int32_t n_total, n_used, n_free, n_cached; /* cached: free to reuse but holding a hashed prefix block */
    int32_t n_reserved;
    uint64_t prefix_queries, prefix_hits; /* in blocks */
};

/* `n_blocks` physical blocks; `max_cached` of the free ones may keep their content as a prefix cache (LRU). */
enum ty_status ty__block_mgr_init(int32_t n_blocks, int32_t max_cached, struct ty_block_mgr **out);
void ty__block_mgr_free(struct ty_block_mgr *m);
void ty__block_mgr_stats(struct ty_block_mgr *m, struct ty_block_stats *out);
/* The chained hash of block `i` of `tokens` given the previous block's hash (NULL for the first). */
void ty__block_hash(const struct ty_block_hash *parent, const int32_t *tokens, struct ty_block_hash *out);
/* Admits a sequence whose prompt is `tokens` (n) and which may grow to `n_max` tokens: maps the longest run of full
 * prompt blocks found in the prefix cache (ref count + 1), allocates blocks for the rest of the prompt and reserves
 * the growth. TY_ERR_NO_MEMORY (no message) when the blocks are not there now: the caller keeps it waiting.
 * `*n_cached_tokens` receives the prompt tokens covered by cached blocks. */
enum ty_status ty__block_admit(struct ty_block_mgr *m, const int32_t *tokens, int32_t n, int32_t n_max,
                               struct ty_block_table *t, int32_t *n_cached_tokens);
/* Registers the full blocks of the prompt `tokens` (n) held by `t` in the prefix cache once they are computed. */
void ty__block_publish(struct ty_block_mgr *m, struct ty_block_table *t, const int32_t *tokens, int32_t n);
/* Appends one token to `t`: takes a new block from the reservation when the last one is full, and copies a shared
 * last block first (copy-on-write). `*copied_from`/`*copied_to` get the physical ids of such a copy, else -1.
 * TY_ERR_NO_MEMORY when the reservation is spent and no block is free. */
enum ty_status ty__block_append(struct ty_block_mgr *m, struct ty_block_table *t, int32_t *copied_from,
                                int32_t *copied_to);
/* `dst` shares every block of `src` (ref counts + 1) and gets a reservation of `n_reserve` blocks of its own:
 * parallel sampling (n > 1) over one prompt. TY_ERR_NO_MEMORY when the reservation cannot be made. */
enum ty_status ty__block_fork(struct ty_block_mgr *m, const struct ty_block_table *src, int32_t n_reserve,
                              struct ty_block_table *dst);
/* Drops the table's references and its unused reservation; blocks whose count reaches 0 become free (keeping their
 * content in the prefix cache when hashed). */
void ty__block_release(struct ty_block_mgr *m, struct ty_block_table *t);
int32_t ty__block_refcount(struct ty_block_mgr *m, int32_t id);

/* ==== OpenAI protocol (openai.c) ==== */

enum ty_api_kind { TY_API_CHAT = 0, TY_API_COMPLETION = 1 };

#define TY_MAX_STOP     4
#define TY_MAX_N        16
#define TY_MAX_TOP_LOGP 20

struct ty_oai_message {
    char *role, *content, *reasoning_content, *tool_calls_json, *tool_call_id, *name;
};

/* A parsed and validated request. Strings are owned (ty_free via ty__oai_request_free). */
struct ty_oai_request {
    enum ty_api_kind kind;
    char *model;
    struct ty_oai_message *msgs; /* chat */
    size_t n_msgs;
    char *prompt; /* completion: text, or NULL when prompt_ids is given */
    int32_t *prompt_ids;
    size_t n_prompt_ids;
    char *tools_json;  /* JSON array or NULL */
    char *tool_choice; /* "auto", "none", "required" or a function name; NULL = auto */
    /* Constrained decoding (response_format json_object/json_schema, tool_choice "required" or a named function):
     * the compiled grammar (one reference, released by ty__oai_request_free), or NULL for free text. */
    struct ty_grammar *grammar;
    int32_t *bias_ids; /* logit_bias: token ids (n_bias), not yet checked against the vocabulary */
    float *bias_vals;  /* and their biases, in [-100, 100] */
    int n_bias;
    bool stream, include_usage;
    int n;
    double temperature, top_p, min_p, presence_penalty, frequency_penalty, repetition_penalty;
    int32_t top_k;
    int64_t max_tokens; /* -1 = until the context is full */
    bool has_seed;
    uint64_t seed;
    char *stop[TY_MAX_STOP];
    int n_stop;
    bool logprobs;
    int top_logprobs;
    int thinking; /* enum ty_chat_thinking */
    bool echo;
    char *user;
};

/* An error to send: HTTP status and OpenAI's error object fields. */
struct ty_oai_error {
    int status;
    const char *type; /* "invalid_request_error", "authentication_error", "rate_limit_exceeded", ... */
    const char *code; /* may be NULL */
    char param[64];
    char message[512];
};

/* Parses a request body. On failure fills `err` (status 400 with type and message) and returns it non-OK. */
enum ty_status ty__oai_parse(enum ty_api_kind kind, const char *body, size_t len, const char *served_model,
                             struct ty_oai_request *req, struct ty_oai_error *err);
void ty__oai_request_free(struct ty_oai_request *req);
/* {"error": {"message", "type", "param", "code"}} as a NUL-terminated string (ty_free). */
char *ty__oai_error_json(const struct ty_oai_error *err);
void ty__oai_error_set(struct ty_oai_error *err, int status, const char *type, const char *code, const char *param,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Streaming split of generated text into reasoning, content and tool calls, as ty_chat_parse splits a whole reply,
 * but emitting as soon as text is known not to be (part of) a tag. */
enum ty_stream_part { TY_PART_REASONING, TY_PART_CONTENT, TY_PART_TOOL_CALL };
typedef void (*ty_stream_emit)(void *user, enum ty_stream_part part, const char *text, size_t n, int tool_index);
struct ty_stream_parser {
    int state; /* internal */
    bool parse_reasoning, parse_tools;
    struct ty_buf pend; /* text not yet emitted */
    int n_tools;
    bool content_started, reasoning_started;
};
void ty__stream_parser_init(struct ty_stream_parser *p, bool parse_reasoning, bool parse_tools);
/* Feeds text; `emit` gets reasoning/content text or, for TY_PART_TOOL_CALL, the JSON of one OpenAI tool call
 * ({"id","type","function":{"name","arguments"}}). With `final` everything held back is flushed. */
void ty__stream_parser_feed(struct ty_stream_parser *p, const char *text, size_t n, bool final, ty_stream_emit emit,
                            void *user);
void ty__stream_parser_free(struct ty_stream_parser *p);

/* ==== API keys and limits (tenants.c) ==== */

struct ty_key {
    char name[64];
    uint8_t salt[16];
    uint8_t hash[32];                 /* SHA-256(salt || key) */
    int64_t rpm, tpm, max_concurrent; /* 0 = unlimited */
    bool revoked;
    /* runtime state (server only) */
    double req_tokens, tok_tokens, last_refill; /* token buckets */
    int64_t in_flight;
};

struct ty_keyring {
    struct ty_key *keys;
    size_t n;
    pthread_mutex_t mu;
};

enum ty_status ty__keys_load(const char *path, struct ty_keyring *out); /* a missing file is an empty ring */
enum ty_status ty__keys_save(const char *path, const struct ty_keyring *ring);
void ty__keys_free(struct ty_keyring *ring);
/* Creates a key: writes the secret ("sk-ty-" + 64 hex digits, NUL-terminated) to `secret` (cap >= 80). */
enum ty_status ty__keys_create(struct ty_keyring *ring, const char *name, int64_t rpm, int64_t tpm, int64_t max_conc,
                               char *secret, size_t cap);
/* The key matching `secret`, or NULL. Every stored key is compared, in constant time, so timing says nothing about
 * which bytes matched (vLLM CVE-2025-59425). Revoked keys never match. */
struct ty_key *ty__keys_find(struct ty_keyring *ring, const char *secret, size_t len);
/* Takes one request from the key's budgets at time `now` (seconds). False (and `*retry_after` in seconds) when its
 * requests-per-minute, tokens-per-minute or concurrency limit is reached. On success in_flight is raised. */
bool ty__keys_acquire(struct ty_keyring *ring, struct ty_key *k, double now, int64_t *retry_after, const char **which);
/* Ends a request: lowers in_flight and charges `tokens` to the tokens-per-minute bucket. */
void ty__keys_release(struct ty_keyring *ring, struct ty_key *k, double now, int64_t tokens);

/* ==== Usage ledger (ledger.c) ==== */

struct ty_ledger;
enum ty_status ty__ledger_open(const char *path, struct ty_ledger **out);
void ty__ledger_close(struct ty_ledger *l);
/* Adds one request to (key, today UTC) in its own committed transaction. */
enum ty_status ty__ledger_add(struct ty_ledger *l, const char *key, int64_t prompt_tokens, int64_t completion_tokens,
                              bool error);
/* Writes a table of the ledger to `f` (rows since `since_day` "YYYY-MM-DD" or all when NULL), or JSON lines. */
enum ty_status ty__ledger_report(struct ty_ledger *l, const char *since_day, bool json, void *file);

/* ==== Metrics (metrics.c) ==== */

#define TY_HIST_BUCKETS 14
struct ty_hist {
    uint64_t counts[TY_HIST_BUCKETS + 1]; /* last: +Inf */
    double sum;
    uint64_t n;
};
struct ty_metrics {
    pthread_mutex_t mu;
    uint64_t requests_by_status[6]; /* index: status / 100 (1xx..5xx) */
    uint64_t by_code[600];
    struct ty_hist ttft, tpot, e2e;
    uint64_t prompt_tokens, generation_tokens, cached_prompt_tokens;
    int64_t running, waiting;
    int32_t kv_used, kv_free, kv_total, kv_cached;
    uint64_t prefix_queries, prefix_hits;
    uint64_t preempted, cancelled;
};
void ty__metrics_init(struct ty_metrics *m);
void ty__metrics_observe(struct ty_hist *h, double seconds);
void ty__metrics_status(struct ty_metrics *m, int status);
void ty__metrics_render(struct ty_metrics *m, const char *model, struct ty_buf *out);

/* ==== Engine: scheduler and compute interface (engine.c) ==== */

struct ty_engine;

struct ty_engine_params {
    int32_t max_seqs;       /* sequences decoded together */
    int32_t n_ctx;          /* tokens per sequence */
    int64_t kv_bytes;       /* KV budget; 0 = max_seqs full contexts */
    int64_t prefix_bytes;   /* prefix cache budget; -1 = every free block, 0 = off */
    int32_t max_waiting;    /* queue length before 429 */
    int32_t prefill_chunk;  /* tokens of one sequence's prompt per iteration (multiple of TY_KV_BLOCK) */
    int32_t prefill_budget; /* prompt tokens per iteration over all sequences */
};

/* What a sequence emits. Called on the engine thread; must not block. */
enum ty_seq_event { TY_SEQ_TOKEN, TY_SEQ_DONE };
struct ty_seq_token {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_ids[TY_MAX_TOP_LOGP];
    float top_logprobs[TY_MAX_TOP_LOGP];
};
enum ty_finish { TY_FINISH_STOP, TY_FINISH_LENGTH, TY_FINISH_CANCELLED, TY_FINISH_DEADLINE, TY_FINISH_ERROR };
/* For TY_SEQ_TOKEN the callback returns true to end the choice there (a stop string matched): it then gets
 * TY_SEQ_DONE with TY_FINISH_STOP. The return value of a TY_SEQ_DONE call is ignored. */
typedef bool (*ty_seq_cb)(void *user, int choice, enum ty_seq_event ev, const struct ty_seq_token *tok,
                          enum ty_finish finish);

struct ty_gen_request {
    const int32_t *prompt; /* copied at submit */
    int32_t n_prompt;
    int32_t max_tokens; /* > 0 */
    int n;              /* choices */
    struct ty_sampler_params sp;
    int top_logprobs; /* -1 = no logprobs */
    double deadline;  /* ty__time_s() value; 0 = none */
    ty_seq_cb cb;
    void *user;
    struct ty_grammar *grammar; /* constrained decoding, or NULL; the engine takes its own reference at submit */
    const int32_t *bias_ids;    /* logit_bias (n_bias ids and values), copied at submit */
    const float *bias_vals;
    int n_bias;
};

struct ty_engine_info {
    int32_t running, waiting;
    struct ty_block_stats blocks;
};

enum ty_status ty__engine_init(struct ty_model *model, const struct ty_engine_params *p, struct ty_metrics *metrics,
                               struct ty_engine **out);
/* Stops the scheduler thread (ending every sequence with TY_FINISH_CANCELLED) and frees. */
void ty__engine_free(struct ty_engine *e);
/* Queues a request. Returns a handle for ty__engine_cancel, or 0 when the queue is full (`*retry_after` set to the
 * seconds to wait) or the request could never be admitted (more choices than slots or more KV blocks than the
 * budget; `*retry_after` = -1). The
 * callback fires TY_SEQ_DONE exactly once per choice. */
uint64_t ty__engine_submit(struct ty_engine *e, const struct ty_gen_request *r, int64_t *retry_after);
/* Cancels a request; its sequences and blocks are freed in the next iteration. Unknown handles are ignored. */
void ty__engine_cancel(struct ty_engine *e, uint64_t handle);
void ty__engine_info(struct ty_engine *e, struct ty_engine_info *out);
int32_t ty__engine_n_ctx(const struct ty_engine *e);

/* ---- The compute interface the scheduler calls once per iteration ----
 * A batch lists, for each scheduled sequence, the slot it runs in, the position of its first new token and the new
 * tokens (a prefill chunk or one decoded token). The forward pass appends those tokens to the sequence's KV and writes
 * the last token's logits into logits[i] (n_vocab floats) for entries with want_logits.
 *
 * Two implementations, chosen by the model's architecture (ty__batch_supported):
 *  - paged (Qwen2, Qwen3, Qwen3-MoE): one forward over the whole batch (model/batch.c). The KV lives in a pool of
 *    exactly the block manager's blocks, addressed through each entry's block table, so a block the prefix cache
 *    maps already holds its KV, n > 1 choices read their shared prompt blocks, and `copies` (copy-on-write) are
 *    applied before the batch runs. Slots and `reset` do not matter to it.
 *  - per sequence (hybrid linear-attention models, whose state is not a KV cache): one ty_context per slot, each
 *    entry run alone; `reset` says the slot starts a new sequence (what it held before position `pos` is the prefix
 *    ty__engine_compute_reusable found). */
struct ty_engine_batch_seq {
    int32_t slot;
    bool reset; /* the slot starts a new sequence here */
    int32_t pos;
    const int32_t *tokens;
    int32_t n_tokens;
    bool want_logits;
    const struct ty_block_table *blocks;
    float *logits;         /* (n_vocab) out */
    enum ty_status status; /* out */
};
struct ty_engine_batch {
    struct ty_engine_batch_seq *seqs;
    int32_t n_seqs;
    const int32_t (*copies)[2]; /* (n_copies) physical KV blocks {from, to} to copy before the batch runs */
    int32_t n_copies;
};
struct ty_engine_compute;
/* `n_blocks` KV blocks of TY_KV_BLOCK positions (the block manager's), batches of up to `max_tokens` tokens. */
enum ty_status ty__engine_compute_init(struct ty_model *model, int32_t n_slots, int32_t n_ctx, int32_t max_tokens,
                                       int32_t n_blocks, struct ty_engine_compute **out);
void ty__engine_compute_free(struct ty_engine_compute *c);
/* True when the compute is paged: KV follows the block tables (see above). */
bool ty__engine_compute_paged(const struct ty_engine_compute *c);
/* Per-sequence compute: tokens of slot `slot` whose KV can be reused for a sequence starting with `tokens` (n).
 * Always 0 when paged (the block manager's prefix cache says what is reusable). */
int32_t ty__engine_compute_reusable(struct ty_engine_compute *c, int32_t slot, const int32_t *tokens, int32_t n);
enum ty_status ty__engine_forward(struct ty_engine_compute *c, struct ty_engine_batch *b);

/* ==== HTTP server (server.c) ==== */

struct ty_server_params {
    const char *model_path, *served_name, *host, *keys_path, *db_path;
    int port, threads;
    int32_t max_seqs, n_ctx, max_waiting;
    int64_t kv_mb, prefix_mb;
    double read_timeout;    /* seconds a connection may take to send a complete request (or sit idle) */
    double io_timeout;      /* seconds of silence on a socket while reading or writing */
    double request_timeout; /* deadline of one generation request */
    double drain_timeout;   /* SIGTERM: seconds in-flight requests get to finish */
    int64_t max_body, max_headers;
    int32_t max_conns; /* open client connections; at the cap the server stops accepting until one closes */
    const char *lora;  /* LoRA adapter applied at load, or NULL */
    float lora_scale;
    bool log_prompts;
};
struct ty_server_params ty__server_default_params(void);
/* Loads the model and serves until SIGTERM or SIGINT (then drains). Returns TY_OK after a clean shutdown. */
enum ty_status ty__server_run(const struct ty_server_params *p);

#endif /* TY_CLOUD_IMPL_H */
