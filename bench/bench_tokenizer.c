/*
 * bench_tokenizer.c - tokenizer throughput on one thread: MB of UTF-8 text per second through ty_tokenize with
 * Qwen3's tokenizer, on two generated corpora:
 *   multilingual  Qwen3's test vectors (tests/data/tokenizer/vectors.jsonl: many languages, code, emoji), shuffled
 *                 and repeated to the requested size;
 *   adversarial   the random and hostile texts of hf-random.jsonl (odd white space, combining marks, runs of
 *                 thousands of one character), likewise;
 *   prose         Debian's license texts and C headers (/usr/share/common-licenses, /usr/include), when present.
 * Each corpus is also run with the PCRE2 pre-tokenizer (the reference path) and in chat-sized calls of one line, so
 * the figures that matter are ratios measured in the same run, not absolute speeds on a shared machine.
 *
 *   bench_tokenizer [--tokenizer tokenizer.json[.gz]] [--mb N] [--only multilingual|adversarial|prose] [--json]
 * Run from the repository root (or set TY_SOURCE_DIR).
 */
#include "model/tokenizer-impl.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char *src_path(const char *rel, char *buf, size_t cap) {
    const char *root = getenv("TY_SOURCE_DIR");
    snprintf(buf, cap, "%s/%s", root ? root : ".", rel);
    return buf;
}

/* Reads a file, through `gzip -dc` when its name ends in .gz. */
static char *slurp(const char *path, size_t *len) {
    size_t n = strlen(path);
    bool gz = n > 3 && !strcmp(path + n - 3, ".gz");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s'", path);
    FILE *f = gz ? popen(cmd, "r") : fopen(path, "rb");
    if (!f) return NULL;
    struct ty_buf b = {0};
    char chunk[1 << 16];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) ty__buf_append(&b, chunk, got);
    int bad = gz ? pclose(f) : fclose(f);
    char *out = NULL;
    size_t n_read = b.len;
    if (bad || ty__buf_finish(&b, &out) != TY_OK || !out) {
        ty_free(out);
        return NULL;
    }
    *len = n_read;
    return out;
}

/* CPU time of this thread: on a shared machine, time spent descheduled does not count against the tokenizer. */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* The "text" of every line of a reference JSONL file. */
static size_t load_texts(const char *rel, char ***texts, size_t **lens) {
    size_t n = 0, cap = 0;
    char path[4096];
    FILE *fp = fopen(src_path(rel, path, sizeof path), "rb");
    if (!fp) return 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, fp)) > 0) {
        json_t *v = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, NULL);
        const json_t *t = json_object_get(v, "text");
        if (json_is_string(t) && json_string_length(t) > 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                *texts = realloc(*texts, cap * sizeof **texts);
                *lens = realloc(*lens, cap * sizeof **lens);
            }
            (*lens)[n] = json_string_length(t);
            (*texts)[n] = malloc((*lens)[n]);
            memcpy((*texts)[n], json_string_value(t), (*lens)[n]);
            n++;
        }
        json_decref(v);
    }
    free(line);
    fclose(fp);
    return n;
}

/* Texts of a JSONL file in random order, one per line, up to `target` bytes. */
static void add_shuffled(struct ty_buf *b, const char *rel, size_t target) {
    char **texts = NULL;
    size_t *lens = NULL, n = load_texts(rel, &texts, &lens);
    while (n && b->len < target) {
        size_t k = next_rand() % n;
        ty__buf_append(b, texts[k], lens[k]);
        ty__buf_append(b, "\n", 1);
    }
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(lens);
}

/* Appends files under `dir` whose names end in `suffix` (non-recursive) while they are valid UTF-8. */
static void add_dir(struct ty_buf *b, const char *dir, const char *suffix, size_t max) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && b->len < max) {
        size_t nl = strlen(e->d_name), sl = strlen(suffix);
        if (e->d_name[0] == '.' || nl < sl || strcmp(e->d_name + nl - sl, suffix)) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        char *s = slurp(path, &len);
        if (s && ty__utf8_check((const uint8_t *)s, len) == len) ty__buf_append(b, s, len);
        ty_free(s);
    }
    if (d) closedir(d);
}

struct result {
    double mb_s, tok_s, ids_per_byte;
};

/* Best of `reps` runs of tokenizing `text` whole (lines = false) or line by line. */
static struct result run(const struct ty_tokenizer *tok, const char *text, size_t len, bool lines, int reps) {
    size_t cap = len + 16, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    double best = 1e30;
    size_t total = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = cpu_s();
        total = 0;
        if (!lines) {
            if (ty_tokenize(tok, text, len, TY_TOKENIZE_SPECIAL, ids, cap, &n) != TY_OK) {
                fprintf(stderr, "bench_tokenizer: %s\n", ty_last_error());
                exit(1);
            }
            total = n;
        } else {
            const char *p = text, *end = text + len;
            while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *stop = nl ? nl + 1 : end;
                if (ty_tokenize(tok, p, (size_t)(stop - p), TY_TOKENIZE_SPECIAL, ids, cap, &n) != TY_OK) {
                    fprintf(stderr, "bench_tokenizer: %s\n", ty_last_error());
                    exit(1);
                }
                total += n;
                p = stop;
            }
        }
        double dt = cpu_s() - t0;
        if (dt < best) best = dt;
    }
    free(ids);
    return (struct result){len / best / 1e6, total / best, (double)total / (double)len};
}

int main(int argc, char **argv) {
    const char *tok_path = NULL;
    double mb = 8;
    bool json = false;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            tok_path = argv[++i];
        else if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr,
                    "usage: bench_tokenizer [--tokenizer tokenizer.json[.gz]] [--mb N] [--only CORPUS] [--json]\n");
            return 2;
        }
    }
    char path[4096];
    if (!tok_path) tok_path = src_path("data/tokenizers/qwen3/tokenizer.json.gz", path, sizeof path);
    size_t jlen;
    char *jtext = slurp(tok_path, &jlen);
    if (!jtext) {
        fprintf(stderr, "bench_tokenizer: cannot read %s (run from the repository root or set TY_SOURCE_DIR)\n",
                tok_path);
        return 1;
    }
    struct ty_tokenizer *tok;
    double t0 = ty__time_s();
    if (ty__tokenizer_load_hf_mem(jtext, jlen, NULL, 0, NULL, 0, &tok) != TY_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", ty_last_error());
        return 1;
    }
    double load_s = ty__time_s() - t0;
    ty_free(jtext);

    size_t target = (size_t)(mb * 1e6);
    struct ty_buf corpus[3] = {{0}, {0}, {0}};
    add_shuffled(&corpus[0], "tests/data/tokenizer/vectors.jsonl", target);
    add_shuffled(&corpus[1], "tests/data/tokenizer/hf-random.jsonl", target);
    add_dir(&corpus[2], "/usr/share/common-licenses", "", target);
    add_dir(&corpus[2], "/usr/include", ".h", target);
    if (corpus[2].len) {
        size_t base = corpus[2].len;
        while (corpus[2].len < target) {
            size_t k = target - corpus[2].len < base ? target - corpus[2].len : base;
            while (k && (corpus[2].data[k] & 0xC0) == 0x80) k--; /* whole characters */
            ty__buf_append(&corpus[2], corpus[2].data, k ? k : base);
        }
    }
    static const char *names[] = {"multilingual", "adversarial", "prose"};
    enum tok_pre_impl fast = tok->pre_impl;
    if (!json) printf("Qwen3 tokenizer loaded in %.2f s; one thread, best of 3 by thread CPU time\n", load_s);
    if (json) printf("{\"bench\": \"tokenizer\", \"load_s\": %.3f", load_s);
    for (int c = 0; c < 3; c++) {
        if (!corpus[c].len || (only && strcmp(only, names[c]))) continue;
        struct result whole = run(tok, corpus[c].data, corpus[c].len, false, 3);
        struct result lines = run(tok, corpus[c].data, corpus[c].len, true, 3);
        tok->pre_impl = TOK_PRE_REGEX;
        struct result ref = run(tok, corpus[c].data, corpus[c].len, false, 3);
        tok->pre_impl = fast;
        if (json) {
            printf(", \"%s_mb\": %.2f, \"%s_mb_per_s\": %.2f, \"%s_tokens_per_s\": %.0f, \"%s_lines_mb_per_s\": %.2f, "
                   "\"%s_pcre2_mb_per_s\": %.2f, \"%s_speedup_vs_pcre2\": %.3f",
                   names[c], corpus[c].len / 1e6, names[c], whole.mb_s, names[c], whole.tok_s, names[c], lines.mb_s,
                   names[c], ref.mb_s, names[c], whole.mb_s / ref.mb_s);
        } else {
            printf("%-12s %5.2f MB, %.3f ids/byte: %7.2f MB/s (%.2f M tokens/s), line by line %7.2f MB/s, "
                   "with the PCRE2 pre-tokenizer %7.2f MB/s (hand-written is %.2fx)\n",
                   names[c], corpus[c].len / 1e6, whole.ids_per_byte, whole.mb_s, whole.tok_s / 1e6, lines.mb_s,
                   ref.mb_s, whole.mb_s / ref.mb_s);
        }
    }
    if (json) printf("}\n");
    for (int c = 0; c < 3; c++) ty__buf_free(&corpus[c]);
    ty_tokenizer_free(tok);
    return 0;
}
