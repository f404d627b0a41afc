/*
 * trace.c - workload traces for `tongyun sim --trace`: one request per line, as CSV (arrival seconds, prompt tokens,
 * output tokens; an optional header names the columns in any order) or as JSON lines ({"arrival": s,
 * "prompt_tokens": n, "output_tokens": m}). The file is untrusted input: every field is range-checked, errors name
 * the line and the field, and nothing is allocated in proportion to a number the file claims.
 */
#include "sim/sim.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define MAX_TOKENS   10000000 /* per prompt or output */
#define MAX_ARRIVAL  1e9      /* seconds (about 30 years) */
#define MAX_REQUESTS 100000000
#define MAX_COLS     64

static const char *const arrival_names[] = {"arrival", "arrival_s", "arrival_time", "timestamp", "time", "t"};
static const char *const prompt_names[] = {"prompt_tokens", "prompt", "prompt_len", "input_tokens",
                                           "input_len",     "input",  "isl"};
static const char *const output_names[] = {"output_tokens",     "output", "output_len",
                                           "completion_tokens", "osl",    "max_tokens"};

static int which_column(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof arrival_names / sizeof *arrival_names; i++)
        if (strlen(arrival_names[i]) == len && !strncasecmp(name, arrival_names[i], len)) return 0;
    for (size_t i = 0; i < sizeof prompt_names / sizeof *prompt_names; i++)
        if (strlen(prompt_names[i]) == len && !strncasecmp(name, prompt_names[i], len)) return 1;
    for (size_t i = 0; i < sizeof output_names / sizeof *output_names; i++)
        if (strlen(output_names[i]) == len && !strncasecmp(name, output_names[i], len)) return 2;
    return -1;
}

struct trace_buf {
    struct ty_sim_req_spec *v;
    int64_t n, cap;
};

static enum ty_status push(struct trace_buf *b, const char *name, long line, const struct ty_sim_req_spec *r) {
    if (b->n == MAX_REQUESTS)
        return ty__error(TY_ERR_FORMAT, "%s:%ld: more than %d requests in one trace", name, line, MAX_REQUESTS);
    if (b->n == b->cap) {
        int64_t ncap = b->cap ? b->cap * 2 : 1024;
        struct ty_sim_req_spec *nv = ty__realloc(b->v, (size_t)ncap * sizeof *nv);
        if (!nv) return ty__error(TY_ERR_NO_MEMORY, "%s:%ld: out of memory", name, line);
        b->v = nv;
        b->cap = ncap;
    }
    b->v[b->n++] = *r;
    return TY_OK;
}

/* ==== Field parsing ==== */

static enum ty_status parse_arrival(const char *s, size_t len, const char *name, long line, double *out) {
    char tmp[64];
    if (len == 0 || len >= sizeof tmp)
        return ty__error(TY_ERR_FORMAT, "%s:%ld: arrival time is empty or too long", name, line);
    memcpy(tmp, s, len);
    tmp[len] = 0;
    char *end;
    errno = 0;
    double v = strtod(tmp, &end);
    if (end == tmp || *end || errno || !isfinite(v))
        return ty__error(TY_ERR_FORMAT, "%s:%ld: arrival time '%s' is not a number of seconds", name, line, tmp);
    if (v < 0 || v > MAX_ARRIVAL)
        return ty__error(TY_ERR_FORMAT, "%s:%ld: arrival time %s is outside [0, %g] seconds", name, line, tmp,
                         MAX_ARRIVAL);
    *out = v;
    return TY_OK;
}

static enum ty_status parse_tokens(const char *s, size_t len, const char *name, long line, const char *what,
                                   int32_t *out) {
    char tmp[64];
    if (len == 0 || len >= sizeof tmp)
        return ty__error(TY_ERR_FORMAT, "%s:%ld: %s is empty or too long", name, line, what);
    memcpy(tmp, s, len);
    tmp[len] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (end == tmp || *end || errno)
        return ty__error(TY_ERR_FORMAT, "%s:%ld: %s '%s' is not a whole number of tokens", name, line, what, tmp);
    if (v < 1 || v > MAX_TOKENS)
        return ty__error(TY_ERR_FORMAT, "%s:%ld: %s %lld is outside [1, %d]", name, line, what, v, MAX_TOKENS);
    *out = (int32_t)v;
    return TY_OK;
}

/* Trims spaces and one pair of double quotes. */
static void trim(const char **s, size_t *len) {
    while (*len && isspace((unsigned char)**s)) (*s)++, (*len)--;
    while (*len && isspace((unsigned char)(*s)[*len - 1])) (*len)--;
    if (*len >= 2 && (*s)[0] == '"' && (*s)[*len - 1] == '"') (*s)++, *len -= 2;
}

/* ==== CSV ==== */

static enum ty_status csv_line(const char *p, size_t len, const char *name, long line, int *cols, bool first,
                               struct trace_buf *b) {
    const char *f[MAX_COLS];
    size_t fl[MAX_COLS];
    int nf = 0;
    const char *start = p;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || p[i] == ',') {
            if (nf == MAX_COLS) return ty__error(TY_ERR_FORMAT, "%s:%ld: more than %d columns", name, line, MAX_COLS);
            f[nf] = start;
            fl[nf] = (size_t)(p + i - start);
            trim(&f[nf], &fl[nf]);
            nf++;
            start = p + i + 1;
        }
    }
    if (first) {
        /* A header names columns: some field there is not a number at all. */
        bool header = false;
        for (int i = 0; i < nf && !header; i++) {
            char tmp[64];
            size_t n = fl[i] < sizeof tmp - 1 ? fl[i] : sizeof tmp - 1;
            memcpy(tmp, f[i], n);
            tmp[n] = 0;
            char *end;
            strtod(tmp, &end);
            header = end == tmp || *end;
        }
        if (header) {
            cols[0] = cols[1] = cols[2] = -1;
            for (int i = 0; i < nf; i++) {
                int w = which_column(f[i], fl[i]);
                if (w >= 0 && cols[w] < 0) cols[w] = i;
            }
            static const char *const need[] = {"an arrival column (arrival, timestamp, ...)",
                                               "a prompt column (prompt_tokens, input_len, ...)",
                                               "an output column (output_tokens, output_len, ...)"};
            for (int w = 0; w < 3; w++)
                if (cols[w] < 0) return ty__error(TY_ERR_FORMAT, "%s:%ld: the header lacks %s", name, line, need[w]);
            return TY_OK;
        }
    }
    int maxc = cols[0] > cols[1] ? cols[0] : cols[1];
    if (cols[2] > maxc) maxc = cols[2];
    if (nf <= maxc)
        return ty__error(TY_ERR_FORMAT, "%s:%ld: expected %d columns (arrival, prompt tokens, output tokens), found %d",
                         name, line, maxc + 1, nf);
    struct ty_sim_req_spec r;
    TY_TRY(parse_arrival(f[cols[0]], fl[cols[0]], name, line, &r.arrival));
    TY_TRY(parse_tokens(f[cols[1]], fl[cols[1]], name, line, "prompt length", &r.prompt));
    TY_TRY(parse_tokens(f[cols[2]], fl[cols[2]], name, line, "output length", &r.output));
    return push(b, name, line, &r);
}

/* ==== JSON lines ==== */

static json_t *get_any(json_t *o, const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(o, names[i]);
        if (v) return v;
    }
    return NULL;
}

static enum ty_status jsonl_line(const char *p, size_t len, const char *name, long line, struct trace_buf *b) {
    json_error_t err;
    json_t *o = json_loadb(p, len, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &err);
    if (!o) return ty__error(TY_ERR_FORMAT, "%s:%ld: column %d: invalid JSON: %s", name, line, err.column, err.text);
    enum ty_status st = TY_OK;
    if (!json_is_object(o)) {
        st = ty__error(TY_ERR_FORMAT, "%s:%ld: expected a JSON object per line", name, line);
        goto done;
    }
    /* Nothing may follow the object on the line but spaces. */
    if (err.position > 0 && (size_t)err.position < len) {
        for (size_t i = (size_t)err.position; i < len; i++)
            if (!isspace((unsigned char)p[i])) {
                st = ty__error(TY_ERR_FORMAT, "%s:%ld: column %zu: text after the JSON object", name, line, i + 1);
                goto done;
            }
    }
    json_t *a = get_any(o, arrival_names, sizeof arrival_names / sizeof *arrival_names);
    json_t *pr = get_any(o, prompt_names, sizeof prompt_names / sizeof *prompt_names);
    json_t *ou = get_any(o, output_names, sizeof output_names / sizeof *output_names);
    if (!a || !pr || !ou) {
        st = ty__error(TY_ERR_FORMAT, "%s:%ld: missing %s", name, line,
                       !a    ? "\"arrival\" (seconds)"
                       : !pr ? "\"prompt_tokens\""
                             : "\"output_tokens\"");
        goto done;
    }
    struct ty_sim_req_spec r;
    if (!json_is_number(a)) {
        st = ty__error(TY_ERR_FORMAT, "%s:%ld: \"arrival\" must be a number of seconds", name, line);
        goto done;
    }
    r.arrival = json_number_value(a);
    if (!isfinite(r.arrival) || r.arrival < 0 || r.arrival > MAX_ARRIVAL) {
        st = ty__error(TY_ERR_FORMAT, "%s:%ld: arrival time %g is outside [0, %g] seconds", name, line, r.arrival,
                       MAX_ARRIVAL);
        goto done;
    }
    json_t *tok[2] = {pr, ou};
    int32_t *dst[2] = {&r.prompt, &r.output};
    static const char *const what[2] = {"prompt length", "output length"};
    for (int i = 0; i < 2; i++) {
        if (!json_is_integer(tok[i])) {
            st = ty__error(TY_ERR_FORMAT, "%s:%ld: %s must be a whole number", name, line, what[i]);
            goto done;
        }
        json_int_t v = json_integer_value(tok[i]);
        if (v < 1 || v > MAX_TOKENS) {
            st = ty__error(TY_ERR_FORMAT, "%s:%ld: %s %lld is outside [1, %d]", name, line, what[i], (long long)v,
                           MAX_TOKENS);
            goto done;
        }
        *dst[i] = (int32_t)v;
    }
    st = push(b, name, line, &r);
done:
    json_decref(o);
    return st;
}

/* ==== Driver ==== */

struct keyed {
    double arrival;
    int64_t index;
};

static int cmp_keyed(const void *a, const void *b) {
    const struct keyed *x = a, *y = b;
    if (x->arrival != y->arrival) return x->arrival < y->arrival ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index; /* equal times keep file order */
}

/* Sorts by arrival, stably, so a trace gives the same simulation on every libc. */
static enum ty_status sort_arrivals(struct trace_buf *b, const char *name) {
    bool sorted = true;
    for (int64_t k = 1; k < b->n && sorted; k++) sorted = b->v[k].arrival >= b->v[k - 1].arrival;
    if (sorted) return TY_OK;
    struct keyed *key = ty__malloc((size_t)b->n * sizeof *key);
    struct ty_sim_req_spec *nv = ty__malloc((size_t)b->n * sizeof *nv);
    if (!key || !nv) {
        ty_free(key);
        ty_free(nv);
        return ty__error(TY_ERR_NO_MEMORY, "%s: out of memory sorting the trace", name);
    }
    for (int64_t k = 0; k < b->n; k++) key[k] = (struct keyed){b->v[k].arrival, k};
    qsort(key, (size_t)b->n, sizeof *key, cmp_keyed);
    for (int64_t k = 0; k < b->n; k++) nv[k] = b->v[key[k].index];
    ty_free(key);
    ty_free(b->v);
    b->v = nv;
    b->cap = b->n;
    return TY_OK;
}

enum ty_status ty__sim_trace_parse(const char *data, size_t size, const char *name, struct ty_sim_trace *out) {
    memset(out, 0, sizeof *out);
    struct trace_buf b = {0};
    enum ty_status st = TY_OK;
    int fmt = -1; /* 0 CSV, 1 JSONL: decided by the first line with content */
    int cols[3] = {0, 1, 2};
    bool first = true;
    long line = 0;
    size_t i = 0;
    while (i < size && st == TY_OK) {
        line++;
        size_t j = i;
        while (j < size && data[j] != '\n') j++;
        const char *p = data + i;
        size_t len = j - i;
        i = j + 1;
        if (len && p[len - 1] == '\r') len--;
        if (memchr(p, '\0', len)) {
            st = ty__error(TY_ERR_FORMAT, "%s:%ld: NUL byte in a text trace", name, line);
            break;
        }
        const char *q = p;
        size_t ql = len;
        trim(&q, &ql);
        if (ql == 0 || q[0] == '#') continue;
        if (fmt < 0) fmt = q[0] == '{' ? 1 : 0;
        if (fmt == 1) {
            if (q[0] != '{') {
                st = ty__error(TY_ERR_FORMAT, "%s:%ld: expected a JSON object (the trace started as JSON lines)", name,
                               line);
                break;
            }
            st = jsonl_line(q, ql, name, line, &b);
        } else {
            st = csv_line(q, ql, name, line, cols, first, &b);
        }
        first = false;
    }
    if (st == TY_OK && b.n == 0)
        st = ty__error(TY_ERR_FORMAT,
                       "%s: no requests (expected lines of arrival,prompt_tokens,output_tokens or JSON "
                       "objects)",
                       name);
    if (st == TY_OK) st = sort_arrivals(&b, name);
    if (st != TY_OK) {
        ty_free(b.v);
        return st;
    }
    out->reqs = b.v;
    out->n = b.n;
    return TY_OK;
}

enum ty_status ty__sim_trace_load(const char *path, struct ty_sim_trace *out) {
    memset(out, 0, sizeof *out);
    struct ty_file_map m;
    TY_TRY(ty__file_map(path, &m));
    enum ty_status st = m.size ? ty__sim_trace_parse((const char *)m.data, m.size, path, out)
                               : ty__error(TY_ERR_FORMAT, "%s: the trace file is empty", path);
    ty__file_unmap(&m);
    return st;
}

void ty__sim_trace_free(struct ty_sim_trace *t) {
    if (!t) return;
    ty_free(t->reqs);
    t->reqs = NULL;
    t->n = 0;
}
