/*
 * bench_serve.c - a bounded load generator for `tongyun serve` over loopback: at each concurrency level (default 1, 4,
 * 16 and 64) it keeps that many streamed /v1/completions requests in flight until a fixed number have finished, and
 * reports the aggregate decode throughput (generated tokens per second of wall time), time to first token and time
 * per output token (p50, p90, p99 over the requests), and failures. Everything is bounded: a fixed request count per
 * level, a per-request deadline and socket timeouts, so a stuck server makes the bench fail, never hang.
 *
 *   bench_serve --model MODEL.gguf [--tongyun PATH] [--threads N] [--max-seqs N] [--ctx N]   starts a server
 *   bench_serve --url HOST:PORT                                                              or uses a running one
 *               [--levels 1,4,16,64] [--requests N] [--max-tokens N] [--prompt-words N] [--timeout S]
 *               [--ramp-ms X] [--json]
 *
 * The figure that matters is the ratio of decode tok/s at concurrency 16 to concurrency 1 (the gain of continuous
 * batching, measured in the same run), printed at the end; absolute speeds depend on the machine and its load.
 * Requests are greedy, each with its own short prompt (so that decoding, not prefill, dominates: a long prompt costs
 * the same compute at every level and would hide the gain), and count the tokens the server reports in its usage
 * chunk. With a server of its own it also measures the read bandwidth right before and after each level (mem_bw_gbs:
 * what the simulator's prediction of the level is priced with). Before the levels it times the server's front end
 * (front_s: the median round trip of POST /tokenize with a request's prompt on a new connection, which the front end
 * answers itself after the same connect, HTTP and JSON parsing and tokenising a completion goes through before it
 * reaches the scheduler), and each level lists its requests (per_request: [send time from the level's start, TTFT,
 * end to end], s) so that the load's shape can be read back.
 */
#include "base/base.h"
#include "chip/cpu/roofline.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LEVELS 16

struct opts {
    const char *model, *tongyun, *host;
    int port, threads, max_seqs, ctx;
    int levels[MAX_LEVELS], n_levels;
    int requests; /* per level; 0 = 2 x concurrency, at least 4 */
    int max_tokens, prompt_words;
    double timeout;
    double ramp; /* s between the clients' first requests at a level (a ramp-up) */
    bool json;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ==== One streamed request ==== */

struct result {
    bool ok;
    char err[160];
    double t_send;          /* when it was sent (now_s) */
    double ttft, tpot, e2e; /* seconds; tpot < 0 when fewer than 2 tokens */
    int64_t prompt_tokens, completion_tokens;
};

static int connect_to(const char *host, int port, double timeout) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        p += w, n -= (size_t)w;
    }
    return true;
}

/* The response as it arrives: raw bytes, the de-chunked body, and how far each has been consumed. */
struct stream {
    struct ty_buf raw, body;
    size_t raw_at, body_at;
    bool headers_done, chunked, eof_body, done;
    int status;
    double t_first, t_last;
    int64_t events;
};

/* Moves whole chunks of a chunked body from raw to body. */
static bool dechunk(struct stream *s) {
    for (;;) {
        if (!s->raw.data) return true; /* nothing received yet (no pointer arithmetic on NULL) */
        const char *p = s->raw.data + s->raw_at, *end = s->raw.data + s->raw.len;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) return true;
        char *e;
        unsigned long size = strtoul(p, &e, 16);
        if (e == p) return false;
        if ((size_t)(end - (nl + 1)) < size + 2) return true; /* the chunk is not all here yet */
        if (size == 0) {
            s->eof_body = true;
            return true;
        }
        ty__buf_append(&s->body, nl + 1, size);
        s->raw_at = (size_t)(nl + 1 - s->raw.data) + size + 2;
    }
}

/* Handles every complete SSE line of the body. */
static void read_events(struct stream *s, struct result *r) {
    for (;;) {
        if (!s->body.data) return; /* no body yet (no pointer arithmetic on NULL) */
        const char *p = s->body.data + s->body_at, *end = s->body.data + s->body.len;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) return;
        s->body_at = (size_t)(nl + 1 - s->body.data);
        if ((size_t)(nl - p) < 6 || memcmp(p, "data: ", 6)) continue;
        p += 6;
        if (nl - p >= 6 && !memcmp(p, "[DONE]", 6)) {
            s->done = true;
            return;
        }
        json_t *o = json_loadb(p, (size_t)(nl - p), 0, NULL);
        if (!o) continue;
        json_t *ch = json_object_get(o, "choices");
        if (json_is_array(ch) && json_array_size(ch) > 0) {
            double t = now_s();
            if (!s->events++) s->t_first = t;
            s->t_last = t;
        }
        json_t *u = json_object_get(o, "usage");
        if (json_is_object(u)) {
            r->prompt_tokens = json_integer_value(json_object_get(u, "prompt_tokens"));
            r->completion_tokens = json_integer_value(json_object_get(u, "completion_tokens"));
        }
        json_decref(o);
    }
}

/* Request `id`'s prompt: short, and its own (no prefix cache hits across requests). */
static void make_prompt(const struct opts *o, int id, struct ty_buf *prompt) {
    ty__buf_printf(prompt, "Request %d:", id);
    for (int i = 0; i < o->prompt_words; i++) ty__buf_printf(prompt, " w%d", (id * 131 + i * 7) % 997);
}

/* A POST of `body` (consumed) to `path` on a connection closed after the reply, into req. */
static void http_post(const struct opts *o, const char *path, json_t *body, struct ty_buf *req) {
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    ty__buf_printf(req,
                   "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n%s",
                   path, o->host, text ? strlen(text) : 0, text ? text : "");
    free(text);
}

static void run_request(const struct opts *o, int id, struct result *r) {
    memset(r, 0, sizeof *r);
    r->tpot = -1;
    struct ty_buf prompt = {0}, req = {0};
    make_prompt(o, id, &prompt);
    http_post(o, "/v1/completions",
              json_pack("{s:s, s:s, s:i, s:f, s:b, s:{s:b}}", "model", "bench", "prompt", prompt.data, "max_tokens",
                        o->max_tokens, "temperature", 0.0, "stream", 1, "stream_options", "include_usage", 1),
              &req);
    struct stream s = {0};
    double t0 = now_s(), deadline = t0 + o->timeout;
    r->t_send = t0;
    int fd = connect_to(o->host, o->port, o->timeout);
    if (fd < 0) {
        snprintf(r->err, sizeof r->err, "connect: %s", strerror(errno));
        goto out;
    }
    if (!send_all(fd, req.data, req.len)) {
        snprintf(r->err, sizeof r->err, "send: %s", strerror(errno));
        goto out;
    }
    char chunk[16384];
    while (!s.done && !s.eof_body) {
        if (now_s() > deadline) {
            snprintf(r->err, sizeof r->err, "no answer within %.0f s", o->timeout);
            goto out;
        }
        ssize_t got = recv(fd, chunk, sizeof chunk, 0);
        if (got <= 0) {
            if (got < 0) snprintf(r->err, sizeof r->err, "recv: %s", strerror(errno));
            break;
        }
        ty__buf_append(&s.raw, chunk, (size_t)got);
        if (!s.headers_done) {
            char *h = s.raw.data ? memmem(s.raw.data, s.raw.len, "\r\n\r\n", 4) : NULL;
            if (!h) continue;
            s.headers_done = true;
            if (sscanf(s.raw.data, "HTTP/1.%*d %d", &s.status) != 1) s.status = 0;
            s.chunked = memmem(s.raw.data, (size_t)(h - s.raw.data), "chunked", 7) != NULL;
            s.raw_at = (size_t)(h + 4 - s.raw.data);
            if (s.status != 200) continue; /* read the error body to the end */
        }
        if (s.status != 200) continue;
        if (s.chunked) {
            if (!dechunk(&s)) {
                snprintf(r->err, sizeof r->err, "bad chunked encoding");
                goto out;
            }
        } else {
            ty__buf_append(&s.body, s.raw.data + s.raw_at, s.raw.len - s.raw_at);
            s.raw_at = s.raw.len;
        }
        read_events(&s, r);
    }
    if (s.status != 200) {
        if (!r->err[0]) {
            const char *h = s.raw.data ? memmem(s.raw.data, s.raw.len, "\r\n\r\n", 4) : NULL;
            snprintf(r->err, sizeof r->err, "HTTP %d: %.100s", s.status, h ? h + 4 : "");
        }
        goto out;
    }
    if (!s.done) {
        if (!r->err[0]) snprintf(r->err, sizeof r->err, "stream ended without [DONE]");
        goto out;
    }
    r->ok = s.events > 0 && r->completion_tokens > 0;
    if (!r->ok) snprintf(r->err, sizeof r->err, "no tokens in the answer");
    r->ttft = s.t_first - t0;
    r->e2e = now_s() - t0;
    if (r->completion_tokens > 1) r->tpot = (s.t_last - s.t_first) / (double)(r->completion_tokens - 1);
out:
    if (fd >= 0) close(fd);
    ty_free(s.raw.data);
    ty_free(s.body.data);
    ty_free(prompt.data);
    ty_free(req.data);
}

/* ==== The front end's time per request ==== */

/* One POST /tokenize of request `id`'s prompt on a new connection, read to the end of the reply: seconds, or -1. */
static double front_once(const struct opts *o, int id) {
    struct ty_buf prompt = {0}, req = {0};
    make_prompt(o, id, &prompt);
    http_post(o, "/tokenize", json_pack("{s:s}", "prompt", prompt.data), &req);
    double t0 = now_s(), t = -1;
    int fd = connect_to(o->host, o->port, o->timeout);
    bool ok = fd >= 0 && send_all(fd, req.data, req.len);
    char buf[4096];
    size_t got_total = 0;
    for (ssize_t got; ok && (got = recv(fd, buf, sizeof buf, 0)) > 0;) {
        if (!got_total && (got < 12 || memcmp(buf + 9, "200", 3))) ok = false; /* "HTTP/1.1 200" */
        got_total += (size_t)got;
    }
    if (ok && got_total) t = now_s() - t0;
    if (fd >= 0) close(fd);
    ty_free(prompt.data);
    ty_free(req.data);
    return t;
}

static int cmp_double(const void *a, const void *b);

/* The median of a few front_once on an idle server (0 when none succeeded). */
static double front_time(const struct opts *o) {
    enum { N = 15 };
    double v[N];
    int n = 0;
    for (int i = 0; i < N; i++) {
        double t = front_once(o, 900000 + i);
        if (t >= 0) v[n++] = t;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n ? v[n / 2] : 0;
}

/* ==== One concurrency level ==== */

struct level {
    const struct opts *o;
    int concurrency, n_requests, first_id;
    double t0; /* when the level started */
    pthread_mutex_t mu;
    int next;
    struct result *res; /* (n_requests) */
};

static void *worker(void *arg) {
    struct level *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int i = l->next < l->n_requests ? l->next++ : -1;
        pthread_mutex_unlock(&l->mu);
        if (i < 0) return NULL;
        /* the ramp-up: the clients' first requests --ramp-ms apart. Sent at once, they raced the server's scheduler:
         * on 2 cores it admitted the first alone or the first two together from run to run, and TTFT flipped
         * between two patterns; a few milliseconds apart (well under a prefill) the first always starts alone and
         * the others join the next iteration together */
        double wait = i < l->concurrency ? l->t0 + (double)i * l->o->ramp - now_s() : 0;
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
            nanosleep(&ts, NULL);
        }
        run_request(l->o, l->first_id + i, &l->res[i]);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, int n, double p) {
    if (n == 0) return 0;
    int k = (int)(p / 100.0 * n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

struct summary {
    int concurrency, n, ok;
    double (*per)[3]; /* (n) send time from the level's start, TTFT, end to end; -1 where the request failed */
    int64_t prompt_tokens, completion_tokens;
    double wall, tok_s, ttft[3], tpot[3], e2e_mean;
    double mem_bw_gbs; /* read bandwidth right before and after the level (mean; 0 = not measured) */
    char first_err[160];
};

static void run_level(const struct opts *o, int c, int first_id, struct summary *sm) {
    struct level l = {.o = o, .concurrency = c, .first_id = first_id};
    memset(sm, 0, sizeof *sm);
    l.n_requests = o->requests > 0 ? o->requests : (2 * c < 4 ? 4 : 2 * c);
    l.res = calloc((size_t)l.n_requests, sizeof *l.res);
    pthread_mutex_init(&l.mu, NULL);
    pthread_t *th = calloc((size_t)c, sizeof *th);
    double t0 = now_s();
    l.t0 = t0;
    int started = 0;
    for (int i = 0; i < c; i++)
        if (pthread_create(&th[started], NULL, worker, &l) == 0) started++;
    if (!started) worker(&l); /* no threads: run the level serially rather than not at all */
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    sm->concurrency = c;
    sm->n = l.n_requests;
    sm->wall = now_s() - t0;
    sm->per = calloc((size_t)l.n_requests, sizeof *sm->per);
    for (int i = 0; sm->per && i < l.n_requests; i++) {
        const struct result *r = &l.res[i];
        sm->per[i][0] = r->t_send > 0 ? r->t_send - t0 : -1;
        sm->per[i][1] = r->ok ? r->ttft : -1;
        sm->per[i][2] = r->ok ? r->e2e : -1;
    }
    double *ttft = calloc((size_t)l.n_requests, sizeof *ttft), *tpot = calloc((size_t)l.n_requests, sizeof *tpot);
    int n_tpot = 0;
    for (int i = 0; i < l.n_requests; i++) {
        struct result *r = &l.res[i];
        if (!r->ok) {
            if (!sm->first_err[0]) snprintf(sm->first_err, sizeof sm->first_err, "%s", r->err);
            continue;
        }
        ttft[sm->ok++] = r->ttft;
        if (r->tpot >= 0) tpot[n_tpot++] = r->tpot;
        sm->prompt_tokens += r->prompt_tokens;
        sm->completion_tokens += r->completion_tokens;
        sm->e2e_mean += r->e2e;
    }
    if (sm->ok) sm->e2e_mean /= sm->ok;
    qsort(ttft, (size_t)sm->ok, sizeof *ttft, cmp_double);
    qsort(tpot, (size_t)n_tpot, sizeof *tpot, cmp_double);
    const double ps[3] = {50, 90, 99};
    for (int k = 0; k < 3; k++) {
        sm->ttft[k] = pct(ttft, sm->ok, ps[k]);
        sm->tpot[k] = pct(tpot, n_tpot, ps[k]);
    }
    sm->tok_s = sm->wall > 0 ? (double)sm->completion_tokens / sm->wall : 0;
    free(ttft);
    free(tpot);
    free(th);
    free(l.res);
    pthread_mutex_destroy(&l.mu);
}

/* ==== Starting a server ==== */

struct server {
    pid_t pid;
    int err_fd; /* its stderr */
    pthread_t drain;
    bool draining;
};

/* The server logs a line per request to stderr: keep reading it so that it never blocks on a full pipe. */
static void *drain_log(void *arg) {
    struct server *s = arg;
    char buf[4096];
    while (read(s->err_fd, buf, sizeof buf) > 0) {}
    return NULL;
}

static bool start_server(const struct opts *o, struct server *s, int *port) {
    int pfd[2];
    if (pipe(pfd) != 0) return false;
    char threads[16], seqs[16], ctx[16], io[32];
    snprintf(threads, sizeof threads, "%d", o->threads);
    snprintf(seqs, sizeof seqs, "%d", o->max_seqs);
    snprintf(ctx, sizeof ctx, "%d", o->ctx);
    /* a streamed request waiting for its first token is silent: the server must not cut it off before our deadline */
    snprintf(io, sizeof io, "%.0f", o->timeout);
    s->pid = fork();
    if (s->pid < 0) return false;
    if (s->pid == 0) {
        dup2(pfd[1], 2);
        close(pfd[0]);
        close(pfd[1]);
        const char *argv[] = {o->tongyun,
                              "serve",
                              "-m",
                              o->model,
                              "--name",
                              "bench",
                              "--port",
                              "0",
                              "--max-seqs",
                              seqs,
                              "--ctx",
                              ctx,
                              "--io-timeout",
                              io,
                              "--request-timeout",
                              io,
                              o->threads > 0 ? "--threads" : NULL,
                              threads,
                              NULL};
        execv(o->tongyun, (char *const *)argv);
        fprintf(stderr, "bench_serve: cannot run %s: %s\n", o->tongyun, strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    s->err_fd = pfd[0];
    /* wait for {"event":"listening",...,"port":N} (the model loads first) */
    struct ty_buf log = {0};
    double deadline = now_s() + 600;
    char buf[4096];
    *port = 0;
    while (!*port && now_s() < deadline) {
        struct pollfd p = {s->err_fd, POLLIN, 0};
        if (poll(&p, 1, 1000) <= 0) continue;
        ssize_t got = read(s->err_fd, buf, sizeof buf);
        if (got <= 0) break;
        ty__buf_append(&log, buf, (size_t)got);
        const char *ev = memmem(log.data, log.len, "\"event\":\"listening\"", 19);
        const char *pp = ev ? memmem(ev, log.len - (size_t)(ev - log.data), "\"port\":", 7) : NULL;
        if (pp) *port = atoi(pp + 7);
    }
    if (!*port) {
        fprintf(stderr, "bench_serve: the server did not start:\n%.*s\n", (int)(log.len > 4000 ? 4000 : log.len),
                log.data ? log.data : "");
        ty_free(log.data);
        return false;
    }
    ty_free(log.data);
    s->draining = pthread_create(&s->drain, NULL, drain_log, s) == 0;
    return true;
}

static void stop_server(struct server *s) {
    if (s->pid <= 0) return;
    kill(s->pid, SIGTERM);
    int st;
    double deadline = now_s() + 60;
    while (waitpid(s->pid, &st, WNOHANG) == 0) {
        if (now_s() > deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            break;
        }
        usleep(20000);
    }
    if (s->draining) pthread_join(s->drain, NULL);
    close(s->err_fd);
}

/* ==== Main ==== */

static void usage(void) {
    fprintf(stderr,
            "usage: bench_serve (--model MODEL.gguf [--tongyun PATH] [--threads N] [--max-seqs N] [--ctx N] | --url "
            "HOST:PORT)\n"
            "                   [--levels 1,4,16,64] [--requests N] [--max-tokens N] [--prompt-words N] [--timeout "
            "S]\n"
            "                   [--ramp-ms X (default 3: client i sends its first request at i x X ms)] [--json]\n");
}

static bool parse_levels(const char *s, struct opts *o) {
    o->n_levels = 0;
    while (*s && o->n_levels < MAX_LEVELS) {
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s || v < 1 || v > 1024) return false;
        o->levels[o->n_levels++] = (int)v;
        s = *e == ',' ? e + 1 : e;
        if (*e && *e != ',') return false;
    }
    return o->n_levels > 0;
}

int main(int argc, char **argv) {
    struct opts o = {.host = "127.0.0.1",
                     .threads = 0,
                     .max_seqs = 64,
                     .ctx = 512,
                     .levels = {1, 4, 16, 64},
                     .n_levels = 4,
                     .max_tokens = 64,
                     .prompt_words = 8,
                     .timeout = 300,
                     .ramp = 0.003};
    static char tongyun[4096];
    const char *slash = strrchr(argv[0], '/');
    snprintf(tongyun, sizeof tongyun, "%.*s%s../tongyun", slash ? (int)(slash - argv[0] + 1) : 0, argv[0],
             slash ? "" : "./"); /* build/bench/bench_serve -> build/tongyun */
    o.tongyun = tongyun;
    static char host[256];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool has = v != NULL;
#define NEXT()                                                                                                         \
    do {                                                                                                               \
        if (!has) {                                                                                                    \
            usage();                                                                                                   \
            return 2;                                                                                                  \
        }                                                                                                              \
        i++;                                                                                                           \
    } while (0)
        if (!strcmp(a, "--model")) {
            NEXT();
            o.model = v;
        } else if (!strcmp(a, "--tongyun")) {
            NEXT();
            o.tongyun = v;
        } else if (!strcmp(a, "--url")) {
            NEXT();
            const char *c = strrchr(v, ':');
            if (!strncmp(v, "http://", 7)) v += 7;
            if (!c || c < v) {
                usage();
                return 2;
            }
            snprintf(host, sizeof host, "%.*s", (int)(c - v), v);
            o.host = host;
            o.port = atoi(c + 1);
        } else if (!strcmp(a, "--threads")) {
            NEXT();
            o.threads = atoi(v);
        } else if (!strcmp(a, "--max-seqs")) {
            NEXT();
            o.max_seqs = atoi(v);
        } else if (!strcmp(a, "--ctx")) {
            NEXT();
            o.ctx = atoi(v);
        } else if (!strcmp(a, "--levels")) {
            NEXT();
            if (!parse_levels(v, &o)) {
                usage();
                return 2;
            }
        } else if (!strcmp(a, "--requests")) {
            NEXT();
            o.requests = atoi(v);
        } else if (!strcmp(a, "--max-tokens")) {
            NEXT();
            o.max_tokens = atoi(v);
        } else if (!strcmp(a, "--prompt-words")) {
            NEXT();
            o.prompt_words = atoi(v);
        } else if (!strcmp(a, "--timeout")) {
            NEXT();
            o.timeout = atof(v);
        } else if (!strcmp(a, "--ramp-ms")) {
            NEXT();
            o.ramp = atof(v) * 1e-3;
        } else if (!strcmp(a, "--json")) {
            o.json = true;
        } else {
            usage();
            return 2;
        }
    }
    if ((!o.model) == (o.port == 0) || o.max_tokens < 1 || o.prompt_words < 0 || o.timeout <= 0 || !(o.ramp >= 0)) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct server srv = {0};
    if (o.model && !start_server(&o, &srv, &o.port)) {
        stop_server(&srv);
        return 1;
    }
    /* one request first: the weights are paged in and the server is warm before anything is timed */
    struct result warm;
    run_request(&o, 1000000, &warm);
    if (!warm.ok) fprintf(stderr, "bench_serve: warm-up request failed: %s\n", warm.err);
    double front = front_time(&o);
    struct summary sm[MAX_LEVELS];
    int failed = 0;
    /* A server on this machine: the read bandwidth right before and right after each level, with as many threads as
     * the server computes with, so that a prediction can use the bandwidth of the level's own seconds (a VM's host
     * can change it within seconds: chip/cpu/roofline.h). */
    struct ty_bw_probe *probe = NULL;
    if (o.model && ty__bw_probe_new(o.threads > 0 ? o.threads : 0, 0, &probe) != TY_OK)
        fprintf(stderr, "bench_serve: no bandwidth probe (%s); levels carry no mem_bw_gbs\n", ty_last_error());
    for (int i = 0; i < o.n_levels; i++) {
        double bw0 = probe ? ty__bw_probe_gbs(probe, 2) : 0;
        run_level(&o, o.levels[i], (i + 1) * 10000, &sm[i]);
        if (probe) sm[i].mem_bw_gbs = (bw0 + ty__bw_probe_gbs(probe, 2)) / 2;
        failed += sm[i].n - sm[i].ok;
        fprintf(stderr, "concurrency %3d: %d/%d ok, %.1f decode tok/s, TTFT p50 %.3f s p99 %.3f s%s%s\n",
                sm[i].concurrency, sm[i].ok, sm[i].n, sm[i].tok_s, sm[i].ttft[0], sm[i].ttft[2],
                sm[i].first_err[0] ? "; first error: " : "", sm[i].first_err);
    }
    stop_server(&srv);
    ty__bw_probe_free(probe);

    double base = 0, at16 = 0;
    for (int i = 0; i < o.n_levels; i++) {
        if (sm[i].concurrency == 1) base = sm[i].tok_s;
        if (sm[i].concurrency == 16) at16 = sm[i].tok_s;
    }
    double gain = base > 0 && at16 > 0 ? at16 / base : 0;
    if (o.json) {
        /* the server's compute threads: as passed, else its default of one per core (unknown for --url) */
        long threads = o.threads > 0 ? o.threads : o.model ? sysconf(_SC_NPROCESSORS_ONLN) : -1;
        printf("{\"bench\":\"serve\",\"model\":\"%s\",\"max_tokens\":%d,\"prompt_words\":%d,\"max_seqs\":%d,"
               "\"threads\":%ld,\"front_s\":%.6f,\"ramp_s\":%.6f,\"levels\":[",
               o.model ? o.model : "(running server)", o.max_tokens, o.prompt_words, o.max_seqs, threads, front,
               o.ramp);
        for (int i = 0; i < o.n_levels; i++) {
            const struct summary *s = &sm[i];
            printf("%s{\"concurrency\":%d,\"requests\":%d,\"ok\":%d,\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
                   "\"wall_s\":%.5f,\"decode_tok_s\":%.2f,\"ttft_s\":{\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f},"
                   "\"tpot_s\":{\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f},\"e2e_mean_s\":%.3f,\"mem_bw_gbs\":%.2f",
                   i ? "," : "", s->concurrency, s->n, s->ok, (long long)s->prompt_tokens,
                   (long long)s->completion_tokens, s->wall, s->tok_s, s->ttft[0], s->ttft[1], s->ttft[2], s->tpot[0],
                   s->tpot[1], s->tpot[2], s->e2e_mean, s->mem_bw_gbs);
            /* the level's requests in the order they were taken: [sent at, TTFT, end to end] */
            printf(",\"per_request\":[");
            for (int k = 0; s->per && k < s->n; k++)
                printf("%s[%.4f,%.4f,%.4f]", k ? "," : "", s->per[k][0], s->per[k][1], s->per[k][2]);
            printf("]}");
        }
        printf("],\"decode_gain_16_over_1\":%.2f,\"failed\":%d}\n", gain, failed);
    } else {
        printf("%-11s %8s %10s %14s %27s %27s\n", "concurrency", "requests", "tokens", "decode tok/s",
               "TTFT p50/p90/p99 (s)", "TPOT p50/p90/p99 (ms)");
        for (int i = 0; i < o.n_levels; i++) {
            const struct summary *s = &sm[i];
            printf("%-11d %5d/%-3d %10lld %14.2f %9.3f/%8.3f/%8.3f %9.1f/%8.1f/%8.1f\n", s->concurrency, s->ok, s->n,
                   (long long)s->completion_tokens, s->tok_s, s->ttft[0], s->ttft[1], s->ttft[2], s->tpot[0] * 1e3,
                   s->tpot[1] * 1e3, s->tpot[2] * 1e3);
        }
        if (gain > 0) printf("decode tok/s at concurrency 16 / concurrency 1: %.2fx\n", gain);
        if (front > 0) printf("front end per request (POST /tokenize round trip, median): %.2f ms\n", front * 1e3);
    }
    for (int i = 0; i < o.n_levels; i++) free(sm[i].per);
    return failed ? 1 : 0;
}
