/*
 * server.c - the HTTP/1.1 front of `tongyun serve`: routing, auth, per-key limits, the OpenAI endpoints, SSE
 * streaming, metrics, the request log, the usage ledger and SIGTERM drain. Generation runs on the engine's scheduler
 * thread (engine.c); this file turns its token callbacks into OpenAI responses.
 *
 * Why libevent's evhttp: it is packaged and maintained in Debian (libevent 2.1), is plain C with no build-time code
 * generation, and gives what a server on the open network needs without writing an HTTP parser: HTTP/1.1 keep-alive,
 * chunked replies that can be fed piecemeal (evhttp_send_reply_chunk, which SSE needs), limits on header and body
 * size (evhttp_set_max_headers_size/_body_size), and per-socket read/write timeouts. libmicrohttpd would do too but
 * pushes chunked replies through a pull callback that suspends and resumes connections; h2o is not in Debian stable
 * as a library. evhttp has no whole-request deadline, so this file adds one: every connection gets a timer (through
 * evhttp_set_bevcb, which hands us each connection's bufferevent) that closes it when it has not delivered a complete
 * request within read_timeout of being accepted or of its previous reply. A slow-loris client that trickles bytes
 * (which resets evhttp's own per-read timeout) is cut off all the same.
 *
 * Threads: libevent runs on the main thread and owns every evhttp object. The engine thread never touches them: its
 * callbacks write into the request's own buffers under the request's mutex and queue the request on a notify list,
 * then wake the loop with event_active() (libevent is built thread-aware with evthread_use_pthreads). The loop
 * thread sends what is pending. A request object is reference-counted: one reference for the HTTP side (until the
 * reply is sent or the connection closes), one for the engine (until every choice is done), one per notify.
 */
#include "cloud/cloud-impl.h"
#include "model/chat-impl.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct ty_server_params ty__server_default_params(void) {
    return (struct ty_server_params){
        .host = "127.0.0.1",
        .port = 8080,
        .max_seqs = 8,
        .max_waiting = 256,
        .prefix_mb = -1, /* every free KV block stays reusable until it is needed (vLLM's default too) */
        .read_timeout = 30,
        .io_timeout = 15,
        .request_timeout = 600,
        .drain_timeout = 30,
        .max_body = 8 << 20,
        .max_headers = 16 << 10,
        .lora_scale = 1.0f,
        .max_conns = 512, /* well under the usual 1024 open files, leaving room for the model, ledger and logs */
    };
}

/* ==== State ==== */

struct conn {
    struct srv *s;
    struct bufferevent *bev;         /* one reference held by us */
    struct evhttp_connection *evcon; /* known once a request was dispatched */
    struct event *timer;
    struct sreq *cur; /* the generation request being served, or NULL */
    bool busy;
    struct conn *prev, *next;
};

struct choice {
    struct ty_detokenizer dt;
    struct ty_buf held; /* text held back because it may begin a stop string */
    struct ty_stream_parser parser;
    struct ty_buf reasoning, content; /* non-streamed replies */
    json_t *tools;                    /* non-streamed: tool calls */
    json_t *lp;                       /* logprobs not yet sent (stream) or all (non-stream) */
    int64_t n_bytes;                  /* bytes of text generated so far (completion text_offset) */
    int n_gen;
    bool stopped, done, role_sent, any_tool;
    enum ty_finish finish;
};

struct sreq {
    atomic_int ref;
    pthread_mutex_t mu;
    struct srv *s;
    struct evhttp_request *req; /* NULL once the connection is gone or the reply is complete */
    struct conn *conn;
    enum ty_api_kind kind;
    bool stream, include_usage, logprobs, parse_reasoning, parse_tools;
    int n, top_lp;
    char *stop[TY_MAX_STOP];
    int n_stop;
    char id[48];
    long long created;
    int32_t n_prompt;
    uint64_t handle;
    struct choice ch[TY_MAX_N];
    struct ty_buf out; /* bytes to send: SSE events, or the whole body */
    int n_done, status;
    bool engine_done, finalized, reply_started, queued;
    double t0, t_first, t_last;
    struct ty_key *key;
    char key_name[64], client[64];
    const char *path;
    struct sreq *notify_next;
};

struct srv {
    struct ty_server_params p;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *notify_ev, *sigterm_ev, *sigint_ev, *drain_ev, *peer_ev;
    struct ty_model *model;
    const struct ty_tokenizer *tok;
    struct ty_engine *engine;
    struct ty_keyring keys;
    bool open_mode;
    struct ty_ledger *ledger;
    struct ty_metrics metrics;
    const char *model_name;
    int32_t n_ctx, n_vocab;
    char *piece; /* engine thread only: detokenizer output */
    size_t piece_cap;
    pthread_mutex_t nmu;
    struct sreq *notify_head;
    struct conn *conns;
    int32_t n_conns; /* in `conns`; at p.max_conns the listener pauses (pause_accept) */
    bool draining;
    double drain_deadline;
    double drain_quiet_since; /* when in_flight last reached 0 during a drain; 0 while requests are in flight */
    int64_t in_flight;
    long long created;
    uint64_t req_counter;
};

/* ==== Small helpers ==== */

static void add_header(struct evhttp_request *req, const char *k, const char *v) {
    evhttp_add_header(evhttp_request_get_output_headers(req), k, v);
}

/* A JSON string from bytes that may not be valid UTF-8 (a token can end mid-character): bad bytes become U+FFFD. */
static json_t *json_lossy(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j) return j;
    struct ty_buf b = {0};
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        json_t *t = len && i + len <= n ? json_stringn(s + i, len) : NULL;
        if (t) {
            ty__buf_append(&b, s + i, len);
            json_decref(t);
            i += len;
        } else {
            ty__buf_puts(&b, "\xEF\xBF\xBD");
            i++;
        }
    }
    j = json_stringn(b.data ? b.data : "", b.len);
    ty__buf_free(&b);
    return j;
}

static void iso_time(char *out, size_t cap) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* One structured line per request on stderr. Prompt text is never part of it. */
static void log_request(struct srv *s, const char *method, const char *path, int status, const char *key,
                        const char *client, double ms, json_t *extra) {
    char ts[40];
    iso_time(ts, sizeof ts);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:s,s:f}", "ts", ts, "event", "request", "method", method, "path",
                          path, "status", status, "key", key ? key : "-", "client", client ? client : "-", "ms", ms);
    if (o && extra) json_object_update(o, extra);
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (line) fprintf(stderr, "%s\n", line);
    free(line);
    json_decref(o);
    (void)s;
}

static void send_body(struct srv *s, struct evhttp_request *req, int status, const char *ctype, const char *body,
                      size_t len) {
    add_header(req, "Content-Type", ctype);
    if (s->draining) add_header(req, "Connection", "close");
    struct evbuffer *b = evbuffer_new();
    if (b) evbuffer_add(b, body, len);
    evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", b);
    if (b) evbuffer_free(b);
    ty__metrics_status(&s->metrics, status);
}

static void send_error(struct srv *s, struct evhttp_request *req, const struct ty_oai_error *err) {
    char *body = ty__oai_error_json(err);
    const char *fallback = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}";
    send_body(s, req, err->status, "application/json", body ? body : fallback, strlen(body ? body : fallback));
    ty_free(body);
}

static void send_json(struct srv *s, struct evhttp_request *req, int status, json_t *o) {
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (!body) {
        struct ty_oai_error e;
        ty__oai_error_set(&e, 500, "server_error", NULL, NULL, "out of memory writing the response");
        send_error(s, req, &e);
    } else {
        send_body(s, req, status, "application/json", body, strlen(body));
    }
    free(body);
    json_decref(o);
}

/* ==== Request objects ==== */

static void sreq_unref(struct sreq *r) {
    if (atomic_fetch_sub(&r->ref, 1) != 1) return;
    for (int i = 0; i < TY_MAX_N; i++) {
        struct choice *c = &r->ch[i];
        ty__buf_free(&c->held);
        ty__buf_free(&c->reasoning);
        ty__buf_free(&c->content);
        ty__stream_parser_free(&c->parser);
        json_decref(c->tools);
        json_decref(c->lp);
    }
    for (int i = 0; i < r->n_stop; i++) ty_free(r->stop[i]);
    ty__buf_free(&r->out);
    pthread_mutex_destroy(&r->mu);
    ty_free(r);
}

/* Queues `r` for the loop thread (any thread). */
static void notify(struct sreq *r) {
    struct srv *s = r->s;
    pthread_mutex_lock(&s->nmu);
    if (!r->queued) {
        r->queued = true;
        atomic_fetch_add(&r->ref, 1);
        r->notify_next = s->notify_head;
        s->notify_head = r;
    }
    pthread_mutex_unlock(&s->nmu);
    event_active(s->notify_ev, EV_READ, 0);
}

/* ---- Building SSE events and bodies (engine thread, r->mu held) ---- */

static void sse(struct sreq *r, json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s) {
        ty__buf_puts(&r->out, "data: ");
        ty__buf_puts(&r->out, s);
        ty__buf_puts(&r->out, "\n\n");
    }
    free(s);
    json_decref(o);
}

static json_t *chunk_base(struct sreq *r) {
    json_t *o = json_pack("{s:s,s:s,s:I,s:s}", "id", r->id, "object",
                          r->kind == TY_API_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)r->created, "model", r->s->model_name);
    if (o && r->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* One chunk for choice `i` with `delta` (chat) or `text` (completion); attaches logprobs not yet sent. */
static void emit_chunk(struct sreq *r, int i, json_t *delta, const char *text, size_t n, const char *finish) {
    struct choice *c = &r->ch[i];
    json_t *o = chunk_base(r);
    json_t *ch = json_object();
    json_object_set_new(ch, "index", json_integer(i));
    if (r->kind == TY_API_CHAT) {
        if (!c->role_sent) {
            if (!delta) delta = json_object();
            json_object_set_new(delta, "role", json_string("assistant"));
            c->role_sent = true;
        }
        json_object_set_new(ch, "delta", delta ? delta : json_object());
    } else {
        json_object_set_new(ch, "text", json_lossy(text ? text : "", n));
    }
    if (c->lp && (json_array_size(c->lp) || (json_is_object(c->lp) && json_object_size(c->lp)))) {
        if (r->kind == TY_API_CHAT)
            json_object_set_new(ch, "logprobs", json_pack("{s:O}", "content", c->lp));
        else
            json_object_set(ch, "logprobs", c->lp);
        json_decref(c->lp);
        c->lp = NULL;
    } else {
        json_object_set_new(ch, "logprobs", json_null());
    }
    json_object_set_new(ch, "finish_reason", finish ? json_string(finish) : json_null());
    json_object_set_new(o, "choices", json_pack("[o]", ch));
    sse(r, o);
}

struct part_ctx {
    struct sreq *r;
    int i;
};

static void on_part(void *user, enum ty_stream_part part, const char *text, size_t n, int tool_index) {
    struct part_ctx *pc = user;
    struct sreq *r = pc->r;
    struct choice *c = &r->ch[pc->i];
    if (part == TY_PART_TOOL_CALL) c->any_tool = true;
    if (!r->stream) {
        if (part == TY_PART_REASONING) ty__buf_append(&c->reasoning, text, n);
        if (part == TY_PART_CONTENT) ty__buf_append(&c->content, text, n);
        if (part == TY_PART_TOOL_CALL) {
            if (!c->tools) c->tools = json_array();
            json_array_append_new(c->tools, json_loadb(text, n, 0, NULL));
        }
        return;
    }
    if (part == TY_PART_TOOL_CALL) {
        /* as OpenAI streams a call: id, type and name with empty arguments first, then the arguments */
        json_t *call = json_loadb(text, n, 0, NULL);
        json_t *fn = json_object_get(call, "function");
        json_t *d1 = json_pack("{s:[{s:i,s:O,s:s,s:{s:O,s:s}}]}", "tool_calls", "index", tool_index, "id",
                               json_object_get(call, "id"), "type", "function", "function", "name",
                               json_object_get(fn, "name"), "arguments", "");
        emit_chunk(r, pc->i, d1, NULL, 0, NULL);
        json_t *d2 = json_pack("{s:[{s:i,s:{s:O}}]}", "tool_calls", "index", tool_index, "function", "arguments",
                               json_object_get(fn, "arguments"));
        emit_chunk(r, pc->i, d2, NULL, 0, NULL);
        json_decref(call);
        return;
    }
    json_t *d = json_object();
    json_object_set_new(d, part == TY_PART_REASONING ? "reasoning_content" : "content", json_lossy(text, n));
    emit_chunk(r, pc->i, d, NULL, 0, NULL);
}

/* Text that passed the stop-string check. */
static void release(struct sreq *r, int i, const char *text, size_t n, bool final) {
    struct choice *c = &r->ch[i];
    struct part_ctx pc = {r, i};
    if (r->kind == TY_API_CHAT) {
        ty__stream_parser_feed(&c->parser, text, n, final, on_part, &pc);
    } else if (n) {
        if (r->stream)
            emit_chunk(r, i, NULL, text, n, NULL);
        else
            ty__buf_append(&c->content, text, n);
    }
}

/* Appends generated text, holding back what may start a stop string. True when a stop string matched. */
static bool push_text(struct sreq *r, int i, const char *text, size_t n, bool final) {
    struct choice *c = &r->ch[i];
    if (!r->n_stop) {
        release(r, i, text, n, final);
        return false;
    }
    ty__buf_append(&c->held, text, n);
    const char *h = c->held.data ? c->held.data : "";
    size_t len = c->held.len, cut = len, keep = 0;
    bool hit = false;
    for (int k = 0; k < r->n_stop; k++) {
        const char *p = memmem(h, len, r->stop[k], strlen(r->stop[k]));
        if (p && (size_t)(p - h) < cut) cut = (size_t)(p - h), hit = true;
    }
    if (!hit && !final)
        for (int k = 0; k < r->n_stop; k++) {
            size_t sl = strlen(r->stop[k]);
            for (size_t m = sl - 1 < len ? sl - 1 : len; m > keep; m--)
                if (!memcmp(h + len - m, r->stop[k], m)) {
                    keep = m;
                    break;
                }
        }
    size_t out = hit ? cut : len - keep;
    release(r, i, h, out, final || hit);
    if (hit) {
        c->held.len = 0;
    } else {
        memmove(c->held.data, h + out, len - out);
        c->held.len = len - out;
        c->held.data[c->held.len] = 0;
    }
    return hit;
}

static json_t *token_lp_entry(struct srv *s, int32_t id, float lp) {
    size_t n = 0;
    const char *b = ty_token_bytes(s->tok, id, &n);
    json_t *bytes = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(bytes, json_integer((unsigned char)b[i]));
    return json_pack("{s:o,s:f,s:o}", "token", json_lossy(b ? b : "", n), "logprob", (double)lp, "bytes", bytes);
}

static void add_logprobs(struct sreq *r, int i, const struct ty_seq_token *t) {
    struct srv *s = r->s;
    struct choice *c = &r->ch[i];
    if (r->kind == TY_API_CHAT) {
        if (!c->lp) c->lp = json_array();
        json_t *e = token_lp_entry(s, t->id, t->logprob);
        json_t *top = json_array();
        for (int k = 0; k < t->n_top; k++)
            json_array_append_new(top, token_lp_entry(s, t->top_ids[k], t->top_logprobs[k]));
        json_object_set_new(e, "top_logprobs", top);
        json_array_append_new(c->lp, e);
        return;
    }
    if (!c->lp) c->lp = json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
    size_t n = 0;
    const char *b = ty_token_bytes(s->tok, t->id, &n);
    json_array_append_new(json_object_get(c->lp, "tokens"), json_lossy(b ? b : "", n));
    json_array_append_new(json_object_get(c->lp, "token_logprobs"), json_real(t->logprob));
    json_t *top = json_object();
    for (int k = 0; k < t->n_top; k++) {
        const char *tb = ty_token_bytes(s->tok, t->top_ids[k], &n);
        json_t *key = json_lossy(tb ? tb : "", n);
        if (key) json_object_set_new(top, json_string_value(key), json_real(t->top_logprobs[k]));
        json_decref(key);
    }
    json_array_append_new(json_object_get(c->lp, "top_logprobs"), top);
    json_array_append_new(json_object_get(c->lp, "text_offset"), json_integer(c->n_bytes));
}

static const char *finish_name(struct choice *c) {
    switch (c->finish) {
    case TY_FINISH_STOP:
        return c->any_tool ? "tool_calls" : "stop";
    case TY_FINISH_LENGTH:
        return "length";
    default:
        return "stop";
    }
}

static json_t *usage_json(struct sreq *r) {
    int64_t gen = 0;
    for (int i = 0; i < r->n; i++) gen += r->ch[i].n_gen;
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)r->n_prompt, "completion_tokens", (json_int_t)gen,
                     "total_tokens", (json_int_t)(r->n_prompt + gen));
}

/* The whole response of a non-streamed request, into r->out. */
static void build_body(struct sreq *r) {
    json_t *choices = json_array();
    for (int i = 0; i < r->n; i++) {
        struct choice *c = &r->ch[i];
        json_t *ch = json_pack("{s:i,s:s}", "index", i, "finish_reason", finish_name(c));
        if (r->kind == TY_API_CHAT) {
            json_t *msg = json_pack("{s:s}", "role", "assistant");
            bool tools = c->tools && json_array_size(c->tools);
            json_object_set_new(msg, "content",
                                tools && !c->content.len
                                    ? json_null()
                                    : json_lossy(c->content.data ? c->content.data : "", c->content.len));
            if (c->reasoning.len)
                json_object_set_new(msg, "reasoning_content", json_lossy(c->reasoning.data, c->reasoning.len));
            if (tools) json_object_set(msg, "tool_calls", c->tools);
            json_object_set_new(ch, "message", msg);
            json_object_set_new(ch, "logprobs", c->lp ? json_pack("{s:O}", "content", c->lp) : json_null());
        } else {
            json_object_set_new(ch, "text", json_lossy(c->content.data ? c->content.data : "", c->content.len));
            json_object_set_new(ch, "logprobs", c->lp ? json_incref(c->lp) : json_null());
        }
        json_array_append_new(choices, ch);
    }
    json_t *o =
        json_pack("{s:s,s:s,s:I,s:s,s:o,s:o}", "id", r->id, "object",
                  r->kind == TY_API_CHAT ? "chat.completion" : "text_completion", "created", (json_int_t)r->created,
                  "model", r->s->model_name, "choices", choices, "usage", usage_json(r));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    r->out.len = 0;
    if (s) ty__buf_puts(&r->out, s);
    free(s);
    json_decref(o);
}

/* ---- The engine's callback ---- */

static bool on_seq(void *user, int i, enum ty_seq_event ev, const struct ty_seq_token *t, enum ty_finish finish) {
    struct sreq *r = user;
    struct srv *s = r->s;
    struct choice *c = &r->ch[i];
    bool stop = false;
    pthread_mutex_lock(&r->mu);
    double now = ty__time_s();
    if (ev == TY_SEQ_TOKEN) {
        if (!r->t_first) r->t_first = now;
        r->t_last = now;
        c->n_gen++;
        if (!c->stopped) {
            if (r->logprobs) add_logprobs(r, i, t);
            size_t n = 0;
            if (ty_detokenize_push(s->tok, &c->dt, t->id, s->piece, s->piece_cap, &n) == TY_OK && n) {
                c->n_bytes += (int64_t)n;
                stop = c->stopped = push_text(r, i, s->piece, n, false);
            }
        }
    } else {
        c->done = true;
        c->finish = finish;
        if (!c->stopped) {
            size_t n = 0;
            if (ty_detokenize_flush(&c->dt, s->piece, s->piece_cap, &n) != TY_OK) n = 0;
            c->stopped = push_text(r, i, s->piece, n, true);
        }
        if (r->stream && (finish == TY_FINISH_STOP || finish == TY_FINISH_LENGTH))
            emit_chunk(r, i, r->kind == TY_API_CHAT ? json_object() : NULL, "", 0, finish_name(c));
        if (++r->n_done == r->n) {
            bool failed = false;
            for (int k = 0; k < r->n; k++)
                failed |= r->ch[k].finish == TY_FINISH_DEADLINE || r->ch[k].finish == TY_FINISH_ERROR;
            bool cancelled = false;
            for (int k = 0; k < r->n; k++) cancelled |= r->ch[k].finish == TY_FINISH_CANCELLED;
            struct ty_oai_error err = {0};
            if (failed) {
                bool late = false;
                for (int k = 0; k < r->n; k++) late |= r->ch[k].finish == TY_FINISH_DEADLINE;
                if (late)
                    ty__oai_error_set(&err, 504, "timeout", "request_timeout", NULL,
                                      "the request ran past its deadline of %.0f seconds", s->p.request_timeout);
                else
                    ty__oai_error_set(&err, 500, "server_error", NULL, NULL, "generation failed; see the server log");
            }
            if (r->stream) {
                if (failed) {
                    char *e = ty__oai_error_json(&err);
                    if (e) {
                        ty__buf_printf(&r->out, "data: %s\n\n", e);
                        ty_free(e);
                    }
                } else if (r->include_usage) {
                    json_t *o = chunk_base(r);
                    json_object_set_new(o, "choices", json_array());
                    json_object_set_new(o, "usage", usage_json(r));
                    sse(r, o);
                }
                ty__buf_puts(&r->out, "data: [DONE]\n\n");
                r->status = failed ? err.status : 200;
            } else if (failed) {
                char *e = ty__oai_error_json(&err);
                r->out.len = 0;
                if (e) ty__buf_puts(&r->out, e);
                ty_free(e);
                r->status = err.status;
            } else {
                build_body(r);
                r->status = 200;
            }
            if (cancelled && !failed) r->status = 499; /* nginx's "client closed request" */
            r->engine_done = true;
        }
    }
    pthread_mutex_unlock(&r->mu);
    notify(r);
    if (ev == TY_SEQ_DONE && r->engine_done) sreq_unref(r); /* the engine's reference */
    return stop;
}

/* ==== Connections: the whole-request deadline ==== */

/* The connection cap: at max_conns open connections the listener stops accepting, so further clients wait in the
 * kernel's accept queue (and time out there) instead of taking file descriptors and memory from the served ones;
 * it accepts again as soon as one closes. Once draining, the listener is gone (s->bound is NULL). */
static void pause_accept(struct srv *s, bool pause) {
    struct evconnlistener *l = s->bound ? evhttp_bound_socket_get_listener(s->bound) : NULL;
    if (!l) return;
    if (pause)
        evconnlistener_disable(l);
    else
        evconnlistener_enable(l);
}

static void conn_free(struct conn *c) {
    struct srv *s = c->s;
    if (s->p.max_conns > 0 && s->n_conns-- == s->p.max_conns) pause_accept(s, false);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    event_free(c->timer);
    bufferevent_decref(c->bev);
    ty_free(c);
}

static void conn_arm(struct conn *c) {
    struct timeval tv = {(time_t)c->s->p.read_timeout,
                         (suseconds_t)((c->s->p.read_timeout - (double)(time_t)c->s->p.read_timeout) * 1e6)};
    evtimer_add(c->timer, &tv);
}

/* While a streamed reply is under way the connection's timer sends an SSE comment this often, so a request that waits
 * in the queue (or behind a long prefill) keeps its socket alive and tells proxies and clients it is not dead. */
static double keepalive_s(const struct srv *s) {
    double t = s->p.io_timeout / 3.0;
    return t < 5.0 ? t : 5.0;
}

static void conn_arm_keepalive(struct conn *c) {
    double t = keepalive_s(c->s);
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    evtimer_add(c->timer, &tv);
}

/* Sends an SSE comment on `c`'s streamed reply unless tokens went out within the keep-alive interval. */
static void keepalive(struct conn *c) {
    struct sreq *r = c->cur;
    if (!r || !r->stream || !r->reply_started) return;
    pthread_mutex_lock(&r->mu);
    struct evhttp_request *req = r->req;
    double last = r->t_last > r->t0 ? r->t_last : r->t0;
    pthread_mutex_unlock(&r->mu);
    if (!req) return;
    if (ty__time_s() - last >= keepalive_s(c->s) * 0.9) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, ": keep-alive\n\n");
        evhttp_send_reply_chunk(req, b);
        evbuffer_free(b);
    }
    conn_arm_keepalive(c);
}

static void conn_timeout(evutil_socket_t fd, short what, void *arg) {
    struct conn *c = arg;
    if (c->busy) { /* serving: the request's own deadline applies; re-armed for reading when the reply ends */
        keepalive(c);
        return;
    }
    /* Not a complete request within read_timeout (or idle that long): shut the socket down. evhttp sees the end of
     * stream and frees the connection itself; our reference keeps the bufferevent valid until then. */
    evutil_socket_t sock = bufferevent_getfd(c->bev);
    if (sock >= 0) shutdown(sock, SHUT_RDWR);
    conn_free(c); /* c->evcon may already be gone: never touched here */
}

static struct bufferevent *on_new_conn(struct event_base *base, void *arg) {
    struct srv *s = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_THREADSAFE);
    struct conn *c = bev ? ty__calloc(1, sizeof *c) : NULL;
    if (!c) return bev;
    c->s = s;
    c->bev = bev;
    bufferevent_incref(bev);
    c->timer = evtimer_new(base, conn_timeout, c);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    if (s->p.max_conns > 0 && ++s->n_conns == s->p.max_conns) pause_accept(s, true);
    conn_arm(c);
    return bev;
}

static struct conn *conn_of(struct srv *s, struct evhttp_request *req) {
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    for (struct conn *c = s->conns; c; c = c->next)
        if (c->bev == bev) {
            c->evcon = evcon;
            return c;
        }
    return NULL;
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg) {
    struct conn *c = arg;
    struct sreq *r = c->cur;
    if (r) {
        pthread_mutex_lock(&r->mu);
        struct evhttp_request *req = r->req;
        r->req = NULL;
        r->conn = NULL;
        pthread_mutex_unlock(&r->mu);
        /* When libevent itself finds the client gone while a reply is under way (a write fails mid-stream), it
         * detaches the request from the connection (its connection is then NULL) and leaves freeing it to the owner;
         * a request still on the connection is freed with it. */
        if (req && !evhttp_request_get_connection(req)) evhttp_request_free(req);
        ty__engine_cancel(c->s->engine, r->handle);
        c->cur = NULL;
        sreq_unref(r); /* the HTTP side's reference */
    }
    conn_free(c);
}

/* evhttp reads nothing from a connection while its request is being answered, so a client that hangs up on a
 * non-streamed request (or between two streamed chunks) would go unnoticed until the reply is written. Every 10 ms
 * (one peek per busy connection: a small model decodes 900 tokens in well under 50 ms) the connections with a request
 * in the engine are peeked: end of stream or a socket error frees the connection,
 * whose close callback cancels the request, so its sequence and KV blocks go within one engine step. */
static void peer_check(evutil_socket_t fd, short what, void *arg) {
    struct srv *s = arg;
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (!c->busy || !c->cur || !c->evcon) continue;
        evutil_socket_t sock = bufferevent_getfd(c->bev);
        char b;
        ssize_t n = sock >= 0 ? recv(sock, &b, 1, MSG_PEEK | MSG_DONTWAIT) : 0;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            evhttp_connection_free(c->evcon); /* calls on_conn_close, which frees c */
    }
    /* At the connection cap, idle connections whose client has gone are released now rather than at their
     * read_timeout (our reference keeps their socket open until then), so that the listener accepts again. */
    if (s->p.max_conns <= 0 || s->n_conns < s->p.max_conns) return;
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->busy) continue;
        evutil_socket_t sock = bufferevent_getfd(c->bev);
        char b;
        ssize_t n = sock >= 0 ? recv(sock, &b, 1, MSG_PEEK | MSG_DONTWAIT) : 0;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            if (sock >= 0) shutdown(sock, SHUT_RDWR); /* as conn_timeout: evhttp sees the end and frees its side */
            conn_free(c);
        }
    }
}

/* A reply was completed on `c`: the next request must arrive within read_timeout. */
static void conn_idle(struct conn *c) {
    if (!c) return;
    c->busy = false;
    c->cur = NULL;
    conn_arm(c);
}

/* ==== Finishing a generation request (loop thread) ==== */

static void finalize(struct sreq *r) {
    struct srv *s = r->s;
    r->finalized = true;
    double now = ty__time_s();
    int64_t gen = 0, max_gen = 0;
    for (int i = 0; i < r->n; i++) {
        gen += r->ch[i].n_gen;
        if (r->ch[i].n_gen > max_gen) max_gen = r->ch[i].n_gen;
    }
    pthread_mutex_lock(&s->metrics.mu);
    if (r->t_first) ty__metrics_observe(&s->metrics.ttft, r->t_first - r->t0);
    if (max_gen > 1) ty__metrics_observe(&s->metrics.tpot, (r->t_last - r->t_first) / (double)(max_gen - 1));
    ty__metrics_observe(&s->metrics.e2e, now - r->t0);
    pthread_mutex_unlock(&s->metrics.mu);
    if (r->status == 499) ty__metrics_status(&s->metrics, 499);
    if (r->key) ty__keys_release(&s->keys, r->key, now, r->n_prompt + gen);
    if (s->ledger && ty__ledger_add(s->ledger, r->key_name, r->n_prompt, gen, r->status >= 400) != TY_OK)
        TY_LOG_E("%s", ty_last_error());
    const char *fin = r->n ? finish_name(&r->ch[0]) : "-";
    json_t *extra = json_pack("{s:s,s:i,s:I,s:I,s:b,s:s,s:f}", "id", r->id, "n", r->n, "prompt_tokens",
                              (json_int_t)r->n_prompt, "completion_tokens", (json_int_t)gen, "stream", r->stream,
                              "finish_reason", fin, "ttft_ms", r->t_first ? (r->t_first - r->t0) * 1e3 : -1.0);
    log_request(s, "POST", r->path, r->status, r->key_name, r->client, (now - r->t0) * 1e3, extra);
    json_decref(extra);
    s->in_flight--;
}

/* Sends what the engine produced for `r`. */
static void flush_req(struct sreq *r) {
    struct srv *s = r->s;
    pthread_mutex_lock(&r->mu);
    r->queued = false;
    struct evhttp_request *req = r->req;
    bool done = r->engine_done;
    struct ty_buf out = r->out;
    r->out = (struct ty_buf){0};
    int status = r->status;
    bool stream = r->stream;
    pthread_mutex_unlock(&r->mu);
    if (req) {
        if (stream) {
            if (!r->reply_started) {
                add_header(req, "Content-Type", "text/event-stream");
                add_header(req, "Cache-Control", "no-cache");
                add_header(req, "X-Request-Id", r->id);
                evhttp_send_reply_start(req, 200, "OK");
                r->reply_started = true;
                if (r->conn && !done) conn_arm_keepalive(r->conn);
            }
            if (out.len) {
                struct evbuffer *b = evbuffer_new();
                evbuffer_add(b, out.data, out.len);
                evhttp_send_reply_chunk(req, b);
                evbuffer_free(b);
            }
            if (done) {
                evhttp_send_reply_end(req);
                ty__metrics_status(&s->metrics, 200);
            }
        } else if (done) {
            add_header(req, "X-Request-Id", r->id);
            send_body(s, req, status, "application/json", out.data ? out.data : "", out.len);
        }
        if (done) {
            pthread_mutex_lock(&r->mu);
            r->req = NULL;
            pthread_mutex_unlock(&r->mu);
            struct conn *c = r->conn;
            if (c) {
                if (c->evcon) evhttp_connection_set_closecb(c->evcon, NULL, NULL);
                conn_idle(c);
            }
            r->conn = NULL;
            sreq_unref(r); /* the HTTP side's reference */
        }
    }
    ty__buf_free(&out);
    if (done && !r->finalized) finalize(r);
}

static void on_notify(evutil_socket_t fd, short what, void *arg) {
    struct srv *s = arg;
    pthread_mutex_lock(&s->nmu);
    struct sreq *list = s->notify_head;
    s->notify_head = NULL;
    pthread_mutex_unlock(&s->nmu);
    while (list) {
        struct sreq *r = list;
        list = r->notify_next;
        flush_req(r);
        sreq_unref(r); /* the notify's reference */
    }
}

/* ==== Endpoints ==== */

static char *read_body(struct evhttp_request *req, size_t *len) {
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(in);
    char *body = ty__malloc(*len + 1);
    if (!body) return NULL;
    evbuffer_copyout(in, body, *len);
    body[*len] = 0;
    return body;
}

/* Tokens of a chat request's rendered prompt, or of a completion prompt. `*ids` is ty_free'd by the caller. */
static enum ty_status prompt_tokens(struct srv *s, const struct ty_oai_request *q, bool use_tools, int32_t **ids,
                                    size_t *n, struct ty_oai_error *err) {
    *ids = NULL;
    *n = 0;
    if (q->prompt_ids) {
        for (size_t i = 0; i < q->n_prompt_ids; i++)
            if (q->prompt_ids[i] >= s->n_vocab) {
                ty__oai_error_set(err, 400, "invalid_request_error", NULL, "prompt",
                                  "token id %d is outside the vocabulary (%d tokens)", q->prompt_ids[i], s->n_vocab);
                return TY_ERR_INVALID_ARG;
            }
        *ids = ty__malloc((q->n_prompt_ids ? q->n_prompt_ids : 1) * sizeof **ids);
        if (!*ids) goto oom;
        memcpy(*ids, q->prompt_ids, q->n_prompt_ids * sizeof **ids);
        *n = q->n_prompt_ids;
        return TY_OK;
    }
    char *text = NULL;
    if (q->kind == TY_API_CHAT) {
        struct ty_chat_message *msgs = ty__calloc(q->n_msgs, sizeof *msgs);
        if (!msgs) goto oom;
        for (size_t i = 0; i < q->n_msgs; i++)
            msgs[i] = (struct ty_chat_message){q->msgs[i].role, q->msgs[i].content, q->msgs[i].reasoning_content,
                                               q->msgs[i].tool_calls_json};
        struct ty_chat_render_params rp = {.tools_json = use_tools ? q->tools_json : NULL,
                                           .add_generation_prompt = true,
                                           .thinking = (enum ty_chat_thinking)q->thinking};
        enum ty_status st = ty__chat_render_ex(msgs, q->n_msgs, &rp, NULL, &text);
        ty_free(msgs);
        if (st != TY_OK) {
            ty__oai_error_set(err, 400, "invalid_request_error", NULL, "messages", "%s", ty_last_error());
            return st;
        }
    }
    const char *t = text ? text : q->prompt;
    size_t len = strlen(t), cap = len + 16;
    *ids = ty__malloc(cap * sizeof **ids);
    enum ty_status st = *ids ? ty_tokenize(s->tok, t, len, TY_TOKENIZE_SPECIAL, *ids, cap, n) : TY_ERR_NO_MEMORY;
    ty_free(text);
    if (st == TY_OK) return TY_OK;
    ty_free(*ids);
    *ids = NULL;
    if (st != TY_ERR_NO_MEMORY) {
        ty__oai_error_set(err, 400, "invalid_request_error", NULL, q->kind == TY_API_CHAT ? "messages" : "prompt", "%s",
                          ty_last_error());
        return st;
    }
oom:
    ty__oai_error_set(err, 500, "server_error", NULL, NULL, "out of memory preparing the prompt");
    return TY_ERR_NO_MEMORY;
}

static uint64_t random_u64(void) {
    uint64_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof v) != 1) v = (uint64_t)time(NULL) ^ (uint64_t)ty__time_s();
    return v;
}

/* Returns the HTTP status sent when the request ended here (for the ledger), or 0 when it went to the engine. */
static int handle_generate(struct srv *s, struct evhttp_request *req, enum ty_api_kind kind, const char *path,
                           struct ty_key *key, const char *key_name, const char *client) {
    struct ty_oai_error err = {0};
    size_t len;
    char *body = read_body(req, &len);
    if (!body) {
        ty__oai_error_set(&err, 500, "server_error", NULL, NULL, "out of memory reading the request");
        send_error(s, req, &err);
        return 500;
    }
    struct ty_oai_request q;
    enum ty_status st = ty__oai_parse(kind, body, len, s->model_name, &q, &err);
    ty_free(body);
    if (st != TY_OK) {
        send_error(s, req, &err);
        return err.status;
    }
    bool use_tools = kind == TY_API_CHAT && q.tools_json && !(q.tool_choice && !strcmp(q.tool_choice, "none"));
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (prompt_tokens(s, &q, use_tools, &ids, &n_ids, &err) != TY_OK) {
        ty__oai_request_free(&q);
        send_error(s, req, &err);
        return err.status;
    }
    for (int i = 0; i < q.n_bias; i++)
        if (q.bias_ids[i] >= s->n_vocab) {
            ty__oai_error_set(&err, 400, "invalid_request_error", NULL, "logit_bias",
                              "'logit_bias' token id %d is outside the vocabulary (%d tokens)", q.bias_ids[i],
                              s->n_vocab);
            ty_free(ids);
            ty__oai_request_free(&q);
            send_error(s, req, &err);
            return err.status;
        }
    if (n_ids == 0 || (int64_t)n_ids >= s->n_ctx || (q.max_tokens > 0 && (int64_t)n_ids + q.max_tokens > s->n_ctx)) {
        if (n_ids == 0)
            ty__oai_error_set(&err, 400, "invalid_request_error", NULL, "prompt", "the prompt is empty");
        else if (q.max_tokens > 0)
            ty__oai_error_set(&err, 400, "invalid_request_error", "context_length_exceeded",
                              kind == TY_API_CHAT ? "messages" : "prompt",
                              "This model's maximum context length is %d tokens. However, you requested %lld tokens "
                              "(%zu in the %s, %lld in the completion). Please reduce the length of the %s or "
                              "completion.",
                              s->n_ctx, (long long)n_ids + (long long)q.max_tokens, n_ids,
                              kind == TY_API_CHAT ? "messages" : "prompt", (long long)q.max_tokens,
                              kind == TY_API_CHAT ? "messages" : "prompt");
        else
            ty__oai_error_set(&err, 400, "invalid_request_error", "context_length_exceeded",
                              kind == TY_API_CHAT ? "messages" : "prompt",
                              "This model's maximum context length is %d tokens. However, your %s resulted in %zu "
                              "tokens, which leaves no room for a reply.",
                              s->n_ctx, kind == TY_API_CHAT ? "messages" : "prompt", n_ids);
        ty_free(ids);
        ty__oai_request_free(&q);
        send_error(s, req, &err);
        return err.status;
    }

    struct sreq *r = ty__calloc(1, sizeof *r);
    if (!r) {
        ty_free(ids);
        ty__oai_request_free(&q);
        ty__oai_error_set(&err, 503, "server_error", "overloaded", NULL, "out of memory; try again later");
        send_error(s, req, &err);
        return 503;
    }
    atomic_init(&r->ref, 2); /* the HTTP side and the engine */
    pthread_mutex_init(&r->mu, NULL);
    r->s = s;
    r->req = req;
    r->kind = kind;
    r->stream = q.stream;
    r->include_usage = q.include_usage;
    r->logprobs = q.logprobs;
    r->top_lp = q.top_logprobs;
    r->n = q.n;
    r->parse_tools = use_tools;
    r->parse_reasoning = kind == TY_API_CHAT && q.thinking != TY_CHAT_THINKING_OFF;
    for (int i = 0; i < q.n_stop; i++) {
        r->stop[i] = q.stop[i];
        q.stop[i] = NULL;
    }
    r->n_stop = q.n_stop;
    q.n_stop = 0;
    for (int i = 0; i < r->n; i++) ty__stream_parser_init(&r->ch[i].parser, r->parse_reasoning, r->parse_tools);
    snprintf(r->id, sizeof r->id, "%s-%016llx", kind == TY_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)random_u64());
    r->created = (long long)time(NULL);
    r->n_prompt = (int32_t)n_ids;
    r->t0 = ty__time_s();
    r->key = key;
    r->path = path;
    snprintf(r->key_name, sizeof r->key_name, "%s", key_name);
    snprintf(r->client, sizeof r->client, "%s", client);
    r->conn = conn_of(s, req);

    struct ty_gen_request g = {
        .prompt = ids,
        .n_prompt = (int32_t)n_ids,
        .max_tokens = (int32_t)(q.max_tokens > 0 ? q.max_tokens : s->n_ctx - (int64_t)n_ids),
        .n = q.n,
        .top_logprobs = q.logprobs ? q.top_logprobs : -1,
        .deadline = r->t0 + s->p.request_timeout,
        .cb = on_seq,
        .user = r,
    };
    g.sp = ty_sampler_default_params();
    g.sp.temperature = (float)q.temperature;
    g.sp.top_p = (float)q.top_p;
    g.sp.top_k = q.top_k;
    g.sp.min_p = (float)q.min_p;
    g.sp.presence_penalty = (float)q.presence_penalty;
    g.sp.frequency_penalty = (float)q.frequency_penalty;
    g.sp.repeat_penalty = (float)q.repetition_penalty;
    g.sp.penalty_last_n = -1;
    g.sp.seed = q.has_seed ? q.seed : random_u64();
    /* constrained decoding and logit_bias: held here until the engine has taken its own copies at submit */
    struct ty_grammar *grammar = q.grammar;
    int32_t *bias_ids = q.bias_ids;
    float *bias_vals = q.bias_vals;
    g.grammar = grammar;
    g.bias_ids = bias_ids;
    g.bias_vals = bias_vals;
    g.n_bias = q.n_bias;
    q.grammar = NULL;
    q.bias_ids = NULL;
    q.bias_vals = NULL;
    ty__oai_request_free(&q);

    s->in_flight++;
    if (r->conn) {
        r->conn->busy = true;
        r->conn->cur = r;
        evtimer_del(r->conn->timer);
        if (r->conn->evcon) evhttp_connection_set_closecb(r->conn->evcon, on_conn_close, r->conn);
    }
    int64_t retry = 0;
    uint64_t h = ty__engine_submit(s->engine, &g, &retry);
    ty_free(ids);
    ty__grammar_unref(grammar);
    ty_free(bias_ids);
    ty_free(bias_vals);
    if (!h) {
        if (retry < 0)
            ty__oai_error_set(&err, 400, "invalid_request_error", NULL, "n",
                              "%d choices of up to %d tokens need more KV cache or sequence slots than this server "
                              "has; lower n or max_tokens",
                              g.n, g.n_prompt + g.max_tokens);
        else
            ty__oai_error_set(&err, 429, "rate_limit_exceeded", "queue_full", NULL,
                              "the server's queue is full; retry after %lld seconds", (long long)retry);
        if (retry > 0) {
            char ra[32];
            snprintf(ra, sizeof ra, "%lld", (long long)retry);
            add_header(req, "Retry-After", ra);
        }
        if (r->conn) {
            if (r->conn->evcon) evhttp_connection_set_closecb(r->conn->evcon, NULL, NULL);
            conn_idle(r->conn);
        }
        s->in_flight--;
        send_error(s, req, &err);
        atomic_store(&r->ref, 1);
        sreq_unref(r);
        return err.status;
    }
    pthread_mutex_lock(&r->mu);
    r->handle = h;
    pthread_mutex_unlock(&r->mu);
    if (r->stream) notify(r); /* headers go out now: the client knows it was accepted while it waits in the queue */
    return 0;
}

/* /tokenize: {"prompt": text} or {"messages": [...], "chat_template_kwargs"?: {...}}; /detokenize: {"tokens": []}. */
static int handle_tokenize(struct srv *s, struct evhttp_request *req, bool detok) {
    struct ty_oai_error err = {0};
    size_t len;
    char *body = read_body(req, &len);
    json_t *root = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    ty_free(body);
    if (!json_is_object(root)) {
        json_decref(root);
        ty__oai_error_set(&err, 400, "invalid_request_error", "invalid_json", NULL,
                          "the request body must be a JSON object");
        send_error(s, req, &err);
        return 400;
    }
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && (!json_is_string(model) || strcmp(json_string_value(model), s->model_name))) {
        json_decref(root);
        ty__oai_error_set(&err, 404, "invalid_request_error", "model_not_found", "model", "this server serves '%s'",
                          s->model_name);
        send_error(s, req, &err);
        return 404;
    }
    if (detok) {
        json_t *toks = json_object_get(root, "tokens");
        struct ty_buf out = {0};
        struct ty_detokenizer dt = {0};
        char piece[512];
        bool ok = json_is_array(toks);
        size_t i;
        json_t *t;
        json_array_foreach(toks, i, t) {
            size_t n;
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= s->n_vocab) {
                ok = false;
                break;
            }
            if (ty_detokenize_push(s->tok, &dt, (int32_t)json_integer_value(t), piece, sizeof piece, &n) == TY_OK)
                ty__buf_append(&out, piece, n);
        }
        size_t n;
        if (ok && ty_detokenize_flush(&dt, piece, sizeof piece, &n) == TY_OK) ty__buf_append(&out, piece, n);
        json_decref(root);
        if (!ok) {
            ty__buf_free(&out);
            ty__oai_error_set(&err, 400, "invalid_request_error", NULL, "tokens",
                              "'tokens' must be an array of token ids below %d", s->n_vocab);
            send_error(s, req, &err);
            return 400;
        }
        send_json(s, req, 200, json_pack("{s:o}", "prompt", json_lossy(out.data ? out.data : "", out.len)));
        ty__buf_free(&out);
        return 200;
    }
    /* reuse the completion/chat request validator on the relevant fields */
    json_t *sub = json_object();
    enum ty_api_kind kind = json_object_get(root, "messages") ? TY_API_CHAT : TY_API_COMPLETION;
    const char *keys[] = {"prompt", "messages", "chat_template_kwargs", "tools"};
    for (size_t k = 0; k < 4; k++)
        if (json_object_get(root, keys[k])) json_object_set(sub, keys[k], json_object_get(root, keys[k]));
    char *text = json_dumps(sub, JSON_COMPACT);
    json_decref(sub);
    json_decref(root);
    struct ty_oai_request q;
    enum ty_status st = text ? ty__oai_parse(kind, text, strlen(text), s->model_name, &q, &err) : TY_ERR_NO_MEMORY;
    free(text);
    int32_t *ids = NULL;
    size_t n = 0;
    if (st == TY_OK) {
        st = prompt_tokens(s, &q, q.tools_json != NULL, &ids, &n, &err);
        ty__oai_request_free(&q);
    }
    if (st != TY_OK) {
        if (!err.status) ty__oai_error_set(&err, 500, "server_error", NULL, NULL, "out of memory");
        send_error(s, req, &err);
        return err.status;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    ty_free(ids);
    send_json(s, req, 200,
              json_pack("{s:o,s:I,s:i}", "tokens", arr, "count", (json_int_t)n, "max_model_len", s->n_ctx));
    return 200;
}

/* ==== Routing ==== */

static struct ty_key *authenticate(struct srv *s, struct evhttp_request *req, bool *ok) {
    *ok = true;
    if (s->open_mode) return NULL;
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    struct ty_key *k = NULL;
    if (h && !strncasecmp(h, "Bearer ", 7)) k = ty__keys_find(&s->keys, h + 7, strlen(h + 7));
    *ok = k != NULL;
    return k;
}

static void on_request(struct evhttp_request *req, void *arg) {
    struct srv *s = arg;
    double t0 = ty__time_s();
    const char *uri = evhttp_request_get_uri(req);
    struct evhttp_uri *u = evhttp_uri_parse(uri);
    char path[128];
    snprintf(path, sizeof path, "%s", u && evhttp_uri_get_path(u) ? evhttp_uri_get_path(u) : "/");
    if (u) evhttp_uri_free(u);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *method = cmd == EVHTTP_REQ_GET ? "GET" : cmd == EVHTTP_REQ_POST ? "POST" : "OTHER";
    char client[64] = "-";
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon) {
        char *addr;
        ev_uint16_t port;
        evhttp_connection_get_peer(evcon, &addr, &port);
        snprintf(client, sizeof client, "%s", addr ? addr : "-");
    }
    struct conn *c = conn_of(s, req);
    if (c) evtimer_del(c->timer);

    struct ty_oai_error err = {0};
    int status = 0;
    const char *key_name = s->open_mode ? "open" : "-";
    bool gen = !strcmp(path, "/v1/chat/completions") || !strcmp(path, "/v1/completions");
    bool known = gen || !strcmp(path, "/v1/models") || !strcmp(path, "/tokenize") || !strcmp(path, "/detokenize") ||
                 !strcmp(path, "/health") || !strcmp(path, "/metrics");
    bool want_post = gen || !strcmp(path, "/tokenize") || !strcmp(path, "/detokenize");

    if (!known) {
        ty__oai_error_set(&err, 404, "invalid_request_error", "not_found", NULL, "no route %s %s", method, path);
    } else if ((want_post && cmd != EVHTTP_REQ_POST) || (!want_post && cmd != EVHTTP_REQ_GET)) {
        ty__oai_error_set(&err, 405, "invalid_request_error", "method_not_allowed", NULL, "%s needs %s", path,
                          want_post ? "POST" : "GET");
    } else if (!strcmp(path, "/health")) {
        send_json(s, req, s->draining ? 503 : 200, json_pack("{s:s}", "status", s->draining ? "draining" : "ok"));
        status = s->draining ? 503 : 200;
    } else if (!strcmp(path, "/metrics")) {
        struct ty_buf b = {0};
        ty__metrics_render(&s->metrics, s->model_name, &b);
        send_body(s, req, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
        ty__buf_free(&b);
        status = 200;
    } else if (s->draining) {
        ty__oai_error_set(&err, 503, "server_error", "shutting_down", NULL,
                          "the server is shutting down; retry on another replica");
    } else {
        bool ok;
        struct ty_key *key = authenticate(s, req, &ok);
        if (!ok) {
            ty__oai_error_set(&err, 401, "invalid_request_error", "invalid_api_key", NULL,
                              "missing or invalid API key; send it as 'Authorization: Bearer KEY'");
            add_header(req, "WWW-Authenticate", "Bearer");
        } else {
            if (key) key_name = key->name;
            if (!strcmp(path, "/v1/models")) {
                json_t *m = json_pack("{s:s,s:[{s:s,s:s,s:I,s:s,s:i}]}", "object", "list", "data", "id", s->model_name,
                                      "object", "model", "created", (json_int_t)s->created, "owned_by", "tongyun",
                                      "max_model_len", s->n_ctx);
                send_json(s, req, 200, m);
                status = 200;
            } else if (!strcmp(path, "/tokenize") || !strcmp(path, "/detokenize")) {
                status = handle_tokenize(s, req, !strcmp(path, "/detokenize"));
            } else {
                int64_t retry = 0;
                const char *which = "";
                if (key && !ty__keys_acquire(&s->keys, key, t0, &retry, &which)) {
                    ty__oai_error_set(&err, 429, "rate_limit_exceeded", "rate_limit_exceeded", NULL,
                                      "key '%s' is over its %s limit; retry after %lld seconds", key->name, which,
                                      (long long)retry);
                    char ra[32];
                    snprintf(ra, sizeof ra, "%lld", (long long)retry);
                    add_header(req, "Retry-After", ra);
                    if (s->ledger) ty__ledger_add(s->ledger, key_name, 0, 0, true);
                } else {
                    enum ty_api_kind kind = !strcmp(path, "/v1/chat/completions") ? TY_API_CHAT : TY_API_COMPLETION;
                    const char *spath = kind == TY_API_CHAT ? "/v1/chat/completions" : "/v1/completions";
                    status = handle_generate(s, req, kind, spath, key, key_name, client);
                    if (status == 0) return; /* the engine has it; logged when it ends */
                    if (key) ty__keys_release(&s->keys, key, ty__time_s(), 0);
                    if (s->ledger) ty__ledger_add(s->ledger, key_name, 0, 0, true);
                }
            }
        }
    }
    if (!status) {
        send_error(s, req, &err);
        status = err.status;
    }
    if (c) conn_idle(c);
    log_request(s, method, path, status, key_name, client, (ty__time_s() - t0) * 1e3, NULL);
}

/* ==== Signals and drain ==== */

/* A request leaves in_flight when its last chunk is handed to libevent, which may still hold it in the connection's
 * output buffer. Exiting the loop then would cut the stream short, so the drain waits until nothing has been in flight
 * for DRAIN_QUIET_S, during which the loop keeps writing. */
#define DRAIN_QUIET_S 0.25

static void drain_check(evutil_socket_t fd, short what, void *arg) {
    struct srv *s = arg;
    double now = ty__time_s();
    if (now > s->drain_deadline) {
        if (s->in_flight > 0)
            TY_LOG_W("serve: drain deadline reached with %lld requests in flight; cancelling them",
                     (long long)s->in_flight);
        event_base_loopexit(s->base, NULL);
        return;
    }
    if (s->in_flight > 0) {
        s->drain_quiet_since = 0;
    } else if (s->drain_quiet_since == 0) {
        s->drain_quiet_since = now;
    } else if (now - s->drain_quiet_since >= DRAIN_QUIET_S) {
        event_base_loopexit(s->base, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    struct srv *s = arg;
    if (s->draining) {
        if (sig == SIGINT) event_base_loopexit(s->base, NULL); /* a second Ctrl-C: now */
        return;
    }
    s->draining = true;
    s->drain_deadline = ty__time_s() + s->p.drain_timeout;
    /* structured like the request log, so operators see the drain begin whatever the log level */
    fprintf(stderr, "{\"event\":\"draining\",\"signal\":\"%s\",\"in_flight\":%lld,\"deadline_s\":%g}\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", (long long)s->in_flight, s->p.drain_timeout);
    if (s->bound) {
        evhttp_del_accept_socket(s->http, s->bound);
        s->bound = NULL;
    }
    struct timeval tv = {0, 20000};
    s->drain_ev = event_new(s->base, -1, EV_PERSIST, drain_check, s);
    event_add(s->drain_ev, &tv);
}

/* ==== Run ==== */

enum ty_status ty__server_run(const struct ty_server_params *p) {
    struct srv *s = ty__calloc(1, sizeof *s);
    if (!s) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    s->p = *p;
    pthread_mutex_init(&s->nmu, NULL);
    ty__metrics_init(&s->metrics);
    s->created = (long long)time(NULL);
    enum ty_status st = TY_OK;
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0) st = ty__error(TY_ERR_INTERNAL, "libevent has no pthreads support");

    if (st == TY_OK && p->keys_path)
        st = ty__keys_load(p->keys_path, &s->keys);
    else if (st == TY_OK)
        pthread_mutex_init(&s->keys.mu, NULL);
    if (st == TY_OK) {
        size_t active = 0;
        for (size_t i = 0; i < s->keys.n; i++) active += !s->keys.keys[i].revoked;
        s->open_mode = !p->keys_path;
        if (p->keys_path && !active)
            st = ty__error(TY_ERR_INVALID_ARG,
                           "the keys file %s holds no active key; create one with `tongyun keys "
                           "create --file %s`",
                           p->keys_path, p->keys_path);
        if (s->open_mode)
            TY_LOG_W("serve: no --api-keys file: OPEN MODE, every client may use this server without a key");
    }
    if (st == TY_OK && p->db_path) st = ty__ledger_open(p->db_path, &s->ledger);

    if (st == TY_OK) {
        struct ty_model_params mp = ty_model_default_params();
        mp.n_threads = p->threads;
        mp.lora = p->lora;
        mp.lora_scale = p->lora_scale;
        st = ty_model_load(p->model_path, &mp, &s->model);
    }
    if (st == TY_OK) {
        s->tok = ty_model_tokenizer(s->model);
        s->n_vocab = ty_model_n_vocab(s->model);
        s->n_ctx =
            p->n_ctx > 0 ? p->n_ctx : (ty_model_n_ctx_train(s->model) < 4096 ? ty_model_n_ctx_train(s->model) : 4096);
        if (s->n_ctx <= 0) s->n_ctx = 4096;
        if (p->served_name) {
            s->model_name = p->served_name;
        } else {
            const char *slash = strrchr(p->model_path, '/');
            s->model_name = slash ? slash + 1 : p->model_path;
        }
        size_t longest = 0;
        for (int32_t id = 0; id < ty_tokenizer_n_vocab(s->tok); id++) {
            size_t len = 0;
            if (ty_token_bytes(s->tok, id, &len) && len > longest) longest = len;
        }
        s->piece_cap = longest + 16;
        s->piece = ty__malloc(s->piece_cap);
        if (!s->piece) st = ty__error(TY_ERR_NO_MEMORY, "out of memory");
    }
    if (st == TY_OK) {
        struct ty_engine_params ep = {.max_seqs = p->max_seqs,
                                      .n_ctx = s->n_ctx,
                                      .kv_bytes = p->kv_mb << 20,
                                      .prefix_bytes = p->prefix_mb < 0 ? -1 : p->prefix_mb << 20,
                                      .max_waiting = p->max_waiting};
        st = ty__engine_init(s->model, &ep, &s->metrics, &s->engine);
    }
    if (st == TY_OK) {
        s->base = event_base_new();
        s->http = s->base ? evhttp_new(s->base) : NULL;
        if (!s->http) st = ty__error(TY_ERR_INTERNAL, "cannot start libevent");
    }
    if (st == TY_OK) {
        evhttp_set_max_body_size(s->http, p->max_body);
        evhttp_set_max_headers_size(s->http, p->max_headers);
        struct timeval tv = {(time_t)p->io_timeout, 0};
        evhttp_set_timeout_tv(s->http, &tv);
        evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                                EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
        evhttp_set_bevcb(s->http, on_new_conn, s);
        evhttp_set_gencb(s->http, on_request, s);
        s->bound = evhttp_bind_socket_with_handle(s->http, p->host, (ev_uint16_t)p->port);
        if (!s->bound) st = ty__error(TY_ERR_IO, "cannot listen on %s:%d: %s", p->host, p->port, strerror(errno));
    }
    if (st == TY_OK) {
        s->notify_ev = event_new(s->base, -1, EV_PERSIST, on_notify, s);
        s->sigterm_ev = evsignal_new(s->base, SIGTERM, on_signal, s);
        s->sigint_ev = evsignal_new(s->base, SIGINT, on_signal, s);
        s->peer_ev = event_new(s->base, -1, EV_PERSIST, peer_check, s);
        struct timeval ptv = {0, 10000};
        event_add(s->peer_ev, &ptv);
        event_add(s->sigterm_ev, NULL);
        event_add(s->sigint_ev, NULL);
        /* the actual port, so that --port 0 can be used by tests */
        evutil_socket_t fd = evhttp_bound_socket_get_fd(s->bound);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int port = p->port;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
        fprintf(stderr,
                "{\"event\":\"listening\",\"host\":\"%s\",\"port\":%d,\"model\":\"%s\",\"n_ctx\":%d,"
                "\"max_seqs\":%d,\"auth\":\"%s\"}\n",
                p->host, port, s->model_name, s->n_ctx, p->max_seqs, s->open_mode ? "open" : "keys");
        fflush(stderr);
        event_base_dispatch(s->base);
        fprintf(stderr, "{\"event\":\"stopped\",\"in_flight\":%lld}\n", (long long)s->in_flight);
    }
    /* Shutdown: the engine ends what is left (callbacks queue notifies), then the last flushes run. */
    if (s->engine) {
        ty__engine_free(s->engine);
        s->engine = NULL;
        if (s->notify_ev) on_notify(-1, 0, s);
    }
    while (s->conns) conn_free(s->conns);
    if (s->http) evhttp_free(s->http);
    if (s->notify_ev) event_free(s->notify_ev);
    if (s->sigterm_ev) event_free(s->sigterm_ev);
    if (s->sigint_ev) event_free(s->sigint_ev);
    if (s->drain_ev) event_free(s->drain_ev);
    if (s->peer_ev) event_free(s->peer_ev);
    if (s->base) event_base_free(s->base);
    ty__ledger_close(s->ledger); /* every request was committed as it ended; this closes the WAL cleanly */
    ty_model_free(s->model);
    ty__keys_free(&s->keys);
    ty_free(s->piece);
    pthread_mutex_destroy(&s->nmu);
    ty_free(s);
    return st;
}
