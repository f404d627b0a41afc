/*
 * data.c - training data: a corpus (plain text, paragraphs separated by blank lines; or JSON lines with {"text": ...}
 * or {"messages": [...]} rendered with Qwen's chat template) tokenized once into a binary shard cache, cut into
 * windows of seq_len + 1 tokens, split into training and held-out windows, and served in a shuffled order that is a
 * function of (seed, sample index) alone, so a resumed run sees exactly the batches the uninterrupted run would have.
 *
 * Shard file: "TYTOKS01", u64 corpus hash (FNV-1a of its bytes), u64 tokenizer hash, u64 token count, then the tokens
 * as little-endian i32. A cache whose hashes do not match the corpus and tokenizer is rebuilt.
 */
#include "train/data.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>

#define SHARD_MAGIC "TYTOKS01"

static uint64_t fnv(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
#define FNV0 1469598103934665603ull

static uint64_t tokenizer_hash(const struct ty_tokenizer *tok) {
    uint64_t h = FNV0;
    int32_t n = ty_tokenizer_n_vocab(tok);
    h = fnv(h, &n, sizeof n);
    for (int32_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *b = ty_token_bytes(tok, i, &len);
        if (b) h = fnv(h, b, len);
        h = fnv(h, &len, sizeof len);
    }
    return h;
}

/* ==== Tokenizing ==== */

struct tok_state {
    const struct ty_tokenizer *tok;
    int32_t sep; /* appended after every document */
    int32_t *ids;
    size_t n, cap;
    int32_t *scratch;
    size_t scratch_cap;
    struct ty_train_data_stats *stats;
};

static enum ty_status push_doc(struct tok_state *s, const char *text, size_t len, unsigned flags) {
    if (len == 0) return TY_OK;
    size_t n = 0;
    enum ty_status st = ty_tokenize(s->tok, text, len, flags, s->scratch, s->scratch_cap, &n);
    if (st == TY_ERR_BUFFER_TOO_SMALL) {
        int32_t *p = ty__realloc(s->scratch, (n + 16) * sizeof *p);
        if (!p) return ty__error(TY_ERR_NO_MEMORY, "train data: out of memory tokenizing");
        s->scratch = p;
        s->scratch_cap = n + 16;
        st = ty_tokenize(s->tok, text, len, flags, s->scratch, s->scratch_cap, &n);
    }
    if (st == TY_ERR_INVALID_ARG) { /* invalid UTF-8: the document is skipped and counted */
        s->stats->n_invalid++;
        return TY_OK;
    }
    TY_TRY(st);
    if (s->n + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 1 << 16;
        while (cap < s->n + n + 1) cap *= 2;
        int32_t *p = ty__realloc(s->ids, cap * sizeof *p);
        if (!p) return ty__error(TY_ERR_NO_MEMORY, "train data: out of memory for %zu tokens", cap);
        s->ids = p;
        s->cap = cap;
    }
    memcpy(s->ids + s->n, s->scratch, n * sizeof(int32_t));
    s->n += n;
    if (s->sep >= 0) s->ids[s->n++] = s->sep;
    s->stats->n_docs++;
    return TY_OK;
}

/* Plain text: paragraphs (blank-line separated) are documents. */
static enum ty_status tokenize_text(struct tok_state *s, const char *text, size_t size) {
    size_t start = 0, i = 0;
    while (i < size) {
        /* a blank line: "\n\n" (or "\n" followed by spaces and "\n") ends a paragraph */
        if (text[i] == '\n') {
            size_t j = i + 1;
            while (j < size && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r')) j++;
            if (j < size && text[j] == '\n') {
                TY_TRY(push_doc(s, text + start, i - start, 0));
                while (j < size && (text[j] == '\n' || text[j] == ' ' || text[j] == '\t' || text[j] == '\r')) j++;
                start = i = j;
                continue;
            }
        }
        i++;
    }
    return push_doc(s, text + start, size - start, 0);
}

static enum ty_status render_messages(const json_t *msgs, char **out) {
    size_t n = json_array_size(msgs);
    struct ty_chat_message *m = ty__calloc(n ? n : 1, sizeof *m);
    if (!m) return ty__error(TY_ERR_NO_MEMORY, "train data: out of memory");
    enum ty_status st = TY_OK;
    for (size_t i = 0; i < n && st == TY_OK; i++) {
        const json_t *e = json_array_get(msgs, i);
        m[i].role = json_string_value(json_object_get(e, "role"));
        m[i].content = json_string_value(json_object_get(e, "content"));
        if (!m[i].role) st = ty__error(TY_ERR_FORMAT, "message %zu has no \"role\" string", i);
    }
    struct ty_chat_render_params rp = {
        .tools_json = NULL, .add_generation_prompt = false, .thinking = TY_CHAT_THINKING_DEFAULT};
    if (st == TY_OK) st = ty_chat_render(m, n, &rp, out);
    ty_free(m);
    return st;
}

/* JSON lines: {"text": "..."} or {"messages": [{"role": ..., "content": ...}, ...]}. */
static enum ty_status tokenize_jsonl(struct tok_state *s, const char *path, const char *text, size_t size) {
    size_t line_no = 0;
    for (size_t i = 0; i < size;) {
        size_t j = i;
        while (j < size && text[j] != '\n') j++;
        line_no++;
        size_t len = j - i;
        bool blank = true;
        for (size_t k = i; k < j && blank; k++) blank = text[k] == ' ' || text[k] == '\t' || text[k] == '\r';
        if (!blank) {
            json_error_t err;
            json_t *v = json_loadb(text + i, len, 0, &err);
            if (!v) {
                /* jansson rejects invalid UTF-8 too: such lines are skipped and counted like invalid text */
                if (strstr(err.text, "UTF-8") || strstr(err.text, "utf-8")) {
                    s->stats->n_invalid++;
                } else {
                    return ty__error(TY_ERR_FORMAT, "%s:%zu: not JSON: %s", path, line_no, err.text);
                }
            } else {
                enum ty_status st = TY_OK;
                const json_t *t = json_object_get(v, "text"), *msgs = json_object_get(v, "messages");
                if (json_is_string(t)) {
                    st = push_doc(s, json_string_value(t), json_string_length(t), 0);
                } else if (json_is_array(msgs)) {
                    char *rendered = NULL;
                    st = render_messages(msgs, &rendered);
                    if (st == TY_OK)
                        st = push_doc(s, rendered, strlen(rendered), TY_TOKENIZE_SPECIAL);
                    else
                        st = ty__error_prefix(st, "%s:%zu", path, line_no);
                    ty_free(rendered);
                } else {
                    st = ty__error(TY_ERR_FORMAT, "%s:%zu: expected {\"text\": ...} or {\"messages\": [...]}", path,
                                   line_no);
                }
                json_decref(v);
                TY_TRY(st);
            }
        }
        i = j + 1;
    }
    return TY_OK;
}

static bool is_jsonl(const char *path, enum ty_train_data_format fmt) {
    if (fmt == TY_TRAIN_DATA_JSONL) return true;
    if (fmt == TY_TRAIN_DATA_TEXT) return false;
    size_t n = strlen(path);
    return (n > 6 && !strcmp(path + n - 6, ".jsonl")) || (n > 5 && !strcmp(path + n - 5, ".json"));
}

/* ==== Shard cache ==== */

static enum ty_status read_shard(const char *path, uint64_t corpus_hash, uint64_t tok_hash, int32_t **ids, size_t *n) {
    struct ty_file_map map;
    if (ty__file_map(path, &map) != TY_OK) return TY_ERR_NOT_FOUND;
    enum ty_status st = TY_ERR_NOT_FOUND;
    uint64_t h[3];
    if (map.size >= 32 && !memcmp(map.data, SHARD_MAGIC, 8)) {
        memcpy(h, map.data + 8, sizeof h);
        if (h[0] == corpus_hash && h[1] == tok_hash && map.size == 32 + h[2] * 4) {
            *ids = ty__malloc(h[2] ? h[2] * 4 : 4);
            if (*ids) {
                memcpy(*ids, map.data + 32, h[2] * 4);
                *n = h[2];
                st = TY_OK;
            }
        }
    }
    ty__file_unmap(&map);
    return st;
}

static enum ty_status write_shard(const char *path, uint64_t corpus_hash, uint64_t tok_hash, const int32_t *ids,
                                  size_t n) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return ty__error(TY_ERR_IO, "token cache %s: cannot create: %s", tmp, strerror(errno));
    uint64_t h[3] = {corpus_hash, tok_hash, n};
    bool ok = fwrite(SHARD_MAGIC, 1, 8, f) == 8 && fwrite(h, 8, 3, f) == 3 && fwrite(ids, 4, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return ty__error(TY_ERR_IO, "token cache %s: write failed: %s", path, strerror(errno));
    }
    return TY_OK;
}

enum ty_status ty__train_data_load(const char *path, enum ty_train_data_format fmt, const struct ty_tokenizer *tok,
                                   const char *cache_path, struct ty_train_data *out,
                                   struct ty_train_data_stats *stats) {
    memset(out, 0, sizeof *out);
    memset(stats, 0, sizeof *stats);
    char *text = NULL;
    size_t size = 0;
    TY_TRY(ty__file_read(path, (size_t)1 << 34, &text, &size));
    uint64_t ch = fnv(FNV0, text, size), th = tokenizer_hash(tok);
    enum ty_status st = TY_OK;
    if (cache_path && read_shard(cache_path, ch, th, &out->tokens, &out->n_tokens) == TY_OK) {
        stats->from_cache = true;
    } else {
        struct tok_state s = {.tok = tok, .stats = stats};
        s.sep = ty_tokenizer_find(tok, "<|endoftext|>");
        st = is_jsonl(path, fmt) ? tokenize_jsonl(&s, path, text, size) : tokenize_text(&s, text, size);
        ty_free(s.scratch);
        out->tokens = s.ids;
        out->n_tokens = s.n;
        if (st == TY_OK && cache_path) st = write_shard(cache_path, ch, th, out->tokens, out->n_tokens);
    }
    ty_free(text);
    if (st == TY_OK && out->n_tokens == 0)
        st = ty__error(TY_ERR_INVALID_ARG,
                       "corpus %s holds no text to train on (%" PRIu64 " documents skipped as "
                       "invalid UTF-8); give a non-empty text or JSONL file",
                       path, stats->n_invalid);
    if (st != TY_OK) {
        ty__train_data_free(out);
        return st;
    }
    out->hash = fnv(FNV0, out->tokens, out->n_tokens * sizeof(int32_t));
    stats->n_tokens = out->n_tokens;
    return TY_OK;
}

enum ty_status ty__train_data_split(struct ty_train_data *d, int64_t seq_len, double eval_frac) {
    if (seq_len < 1) return ty__error(TY_ERR_INVALID_ARG, "train data: sequence length must be positive");
    d->seq_len = seq_len;
    int64_t n_win = d->n_tokens > (size_t)seq_len ? (int64_t)((d->n_tokens - 1) / (size_t)seq_len) : 0;
    if (n_win < 2)
        return ty__error(TY_ERR_INVALID_ARG,
                         "corpus has %zu tokens, too few for two windows of %" PRId64 " + 1 tokens; give more text or "
                         "a shorter --ctx",
                         d->n_tokens, seq_len);
    int64_t n_eval = (int64_t)((double)n_win * eval_frac);
    if (eval_frac > 0 && n_eval < 1) n_eval = 1;
    if (n_eval >= n_win) n_eval = n_win - 1;
    /* the held-out windows are the corpus's tail: contiguous text the model never trains on */
    d->n_train = n_win - n_eval;
    d->n_eval = n_eval;
    return TY_OK;
}

void ty__train_data_free(struct ty_train_data *d) {
    ty_free(d->tokens);
    ty_free(d->perm);
    memset(d, 0, sizeof *d);
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The training window of sample `index`: epoch e = index / n_train visits every window once, in the order of a
 * Fisher-Yates shuffle seeded by (seed, e). */
static enum ty_status window_of(struct ty_train_data *d, uint64_t seed, int64_t index, int64_t *win) {
    int64_t epoch = index / d->n_train;
    if (!d->perm || d->perm_epoch != epoch) {
        if (!d->perm) {
            d->perm = ty__malloc((size_t)d->n_train * sizeof *d->perm);
            if (!d->perm) return ty__error(TY_ERR_NO_MEMORY, "train data: out of memory for the shuffle");
        }
        for (int64_t i = 0; i < d->n_train; i++) d->perm[i] = i;
        uint64_t x = seed ^ ((uint64_t)epoch * 0xd1b54a32d192ed03ull);
        for (int64_t i = d->n_train - 1; i > 0; i--) {
            int64_t j = (int64_t)(splitmix64(&x) % (uint64_t)(i + 1));
            int64_t t = d->perm[i];
            d->perm[i] = d->perm[j];
            d->perm[j] = t;
        }
        d->perm_epoch = epoch;
    }
    *win = d->perm[index % d->n_train];
    return TY_OK;
}

enum ty_status ty__train_data_batch(struct ty_train_data *d, uint64_t seed, int64_t first_sample, int64_t n_seq,
                                    int32_t *out) {
    size_t w = (size_t)d->seq_len + 1;
    for (int64_t b = 0; b < n_seq; b++) {
        int64_t win = 0;
        TY_TRY(window_of(d, seed, first_sample + b, &win));
        memcpy(out + (size_t)b * w, d->tokens + (size_t)win * (size_t)d->seq_len, w * sizeof(int32_t));
    }
    return TY_OK;
}

void ty__train_data_eval_batch(const struct ty_train_data *d, int64_t first, int64_t n_seq, int32_t *out) {
    size_t w = (size_t)d->seq_len + 1;
    for (int64_t b = 0; b < n_seq; b++) {
        int64_t win = d->n_train + (first + b) % d->n_eval;
        memcpy(out + (size_t)b * w, d->tokens + (size_t)win * (size_t)d->seq_len, w * sizeof(int32_t));
    }
}
