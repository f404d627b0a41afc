/*
 * cmd-detokenize.c - `tongyun detokenize`: token ids back to text with a model's tokenizer (read from a GGUF file
 * without loading weights) or a Hugging Face tokenizer.json. Ids come as arguments, or as a file of JSON lines for
 * scripts; bytes that do not form UTF-8 become U+FFFD, as the reference decoder does.
 */
#include "cli.h"
#include "model/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

static void usage(FILE *f) {
    fprintf(f, "usage: tongyun detokenize (-m MODEL.gguf | --tokenizer tokenizer.json) (IDS... | --jsonl FILE)\n\n"
               "Prints the text of the token ids, then a newline. IDS may be separate arguments or one argument\n"
               "such as \"9707 11 1879\", \"9707,11,1879\" or \"[9707, 11, 1879]\".\n\n"
               "  -m, --model FILE   read the tokenizer from a GGUF model (its weights are not loaded)\n"
               "  --tokenizer FILE   a Hugging Face tokenizer.json\n"
               "  --jsonl FILE       read lines {\"ids\": [...]} or [...] ('-' = standard input) and print\n"
               "                     {\"text\": ...} per line, in order\n");
}

/* Appends the text of ids[0..n) to b. */
static enum ty_status decode(const struct ty_tokenizer *tok, const int32_t *ids, size_t n, struct ty_buf *b) {
    struct ty_detokenizer st = {0};
    size_t cap = 1024, len;
    char *piece = ty__malloc(cap);
    if (!piece) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    enum ty_status s = TY_OK;
    for (size_t i = 0; i <= n && s == TY_OK; i++) {
        for (;;) {
            s = i < n ? ty_detokenize_push(tok, &st, ids[i], piece, cap, &len)
                      : ty_detokenize_flush(&st, piece, cap, &len);
            if (s != TY_ERR_BUFFER_TOO_SMALL) break;
            char *p = ty__realloc(piece, len + 1);
            if (!p) {
                s = ty__error(TY_ERR_NO_MEMORY, "out of memory");
                break;
            }
            piece = p;
            cap = len + 1;
        }
        if (s == TY_OK) ty__buf_append(b, piece, len);
    }
    ty_free(piece);
    if (s == TY_OK && b->oom) s = ty__error(TY_ERR_NO_MEMORY, "out of memory");
    return s;
}

static bool push_id(int32_t **ids, size_t *n, size_t *cap, long long v) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        int32_t *p = ty__realloc(*ids, nc * sizeof *p);
        if (!p) return false;
        *ids = p;
        *cap = nc;
    }
    (*ids)[(*n)++] = (int32_t)v;
    return true;
}

/* Parses "1 2 3", "1,2,3" or "[1, 2, 3]" into ids; false (with a message) on anything else. */
static bool parse_ids(const char *arg, int32_t n_vocab, int32_t **ids, size_t *n, size_t *cap) {
    const char *p = arg;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '[' || *p == ']' || *p == '\t' || *p == '\n') p++;
        if (!*p) return true;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno) {
            fprintf(stderr, "tongyun detokenize: '%s' is not a list of token ids\n", arg);
            return false;
        }
        if (v < 0 || v >= n_vocab) {
            fprintf(stderr, "tongyun detokenize: token id %lld is out of range (vocabulary of %d)\n", v, n_vocab);
            return false;
        }
        if (!push_id(ids, n, cap, v)) {
            fprintf(stderr, "tongyun detokenize: out of memory\n");
            return false;
        }
        p = end;
    }
}

struct jsonl_ctx {
    const struct ty_tokenizer *tok;
    int32_t *ids;
    size_t cap;
};

static int detokenize_line(void *arg, json_t *v, const json_error_t *err, const char *path, long line_no) {
    struct jsonl_ctx *c = arg;
    int32_t n_vocab = ty_tokenizer_n_vocab(c->tok);
    const json_t *arr = json_is_object(v) ? json_object_get(v, "ids") : v;
    if (!json_is_array(arr)) {
        fprintf(stderr, "tongyun detokenize: %s line %ld: expected {\"ids\": [...]} or [...]%s%s\n", path, line_no,
                v ? "" : ": ", v ? "" : err->text);
        return 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *e = json_array_get(arr, i);
        json_int_t id = json_is_integer(e) ? json_integer_value(e) : -1;
        if (id < 0 || id >= n_vocab) {
            fprintf(stderr, "tongyun detokenize: %s line %ld: element %zu is not a token id (vocabulary of %d)\n", path,
                    line_no, i, n_vocab);
            return 1;
        }
        if (!push_id(&c->ids, &n, &c->cap, id)) {
            fprintf(stderr, "tongyun detokenize: out of memory\n");
            return 1;
        }
    }
    int rc = 0;
    struct ty_buf b = {0};
    enum ty_status st = decode(c->tok, c->ids, n, &b);
    json_t *out = st == TY_OK ? json_pack("{s:s%}", "text", b.data ? b.data : "", b.len) : NULL;
    char *s = out ? json_dumps(out, 0) : NULL;
    if (s) {
        puts(s);
        free(s);
    } else {
        rc = st != TY_OK ? ty_cli_fail("detokenize", st) : 1;
        if (st == TY_OK) fprintf(stderr, "tongyun detokenize: out of memory\n");
    }
    json_decref(out);
    ty__buf_free(&b);
    return rc;
}

static int run_jsonl(const struct ty_tokenizer *tok, const char *path) {
    struct jsonl_ctx c = {.tok = tok};
    int rc = ty_cli_jsonl_each("detokenize", path, detokenize_line, &c);
    ty_free(c.ids);
    return rc;
}

int ty_cmd_detokenize(int argc, char **argv) {
    const char *model = NULL, *tok_path = NULL, *jsonl = NULL;
    int first_id = 0, n_id_args = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--tokenizer")) {
            if (!(tok_path = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--jsonl")) {
            if (!(jsonl = ty_cli_value(argc, argv, &i))) return 2;
        } else if (a[0] == '-' && !(a[1] >= '0' && a[1] <= '9')) {
            fprintf(stderr, "tongyun detokenize: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else {
            /* ids are the trailing arguments */
            if (!n_id_args) first_id = i;
            n_id_args++;
            if (first_id + n_id_args != i + 1) {
                fprintf(stderr, "tongyun detokenize: options must come before the ids\n");
                return 2;
            }
        }
    }
    if (!model == !tok_path) {
        fprintf(stderr, "tongyun detokenize: give exactly one of -m MODEL.gguf or --tokenizer tokenizer.json\n\n");
        usage(stderr);
        return 2;
    }
    if (!jsonl == !n_id_args) {
        fprintf(stderr, "tongyun detokenize: give either token ids or --jsonl FILE\n\n");
        usage(stderr);
        return 2;
    }
    struct ty_tokenizer *tok;
    enum ty_status st = model ? ty__tokenizer_load_gguf_file(model, &tok) : ty_tokenizer_load_json(tok_path, &tok);
    if (st != TY_OK) return ty_cli_fail("detokenize", st);
    int rc = 0;
    if (jsonl) {
        rc = run_jsonl(tok, jsonl);
    } else {
        int32_t *ids = NULL;
        size_t n = 0, cap = 0;
        for (int k = 0; k < n_id_args && rc == 0; k++)
            if (!parse_ids(argv[first_id + k], ty_tokenizer_n_vocab(tok), &ids, &n, &cap)) rc = 1;
        struct ty_buf b = {0};
        if (rc == 0) {
            st = decode(tok, ids, n, &b);
            if (st == TY_OK) {
                fwrite(b.data ? b.data : "", 1, b.len, stdout);
                putchar('\n');
            } else {
                rc = ty_cli_fail("detokenize", st);
            }
        }
        ty__buf_free(&b);
        ty_free(ids);
    }
    ty_tokenizer_free(tok);
    if (fflush(stdout) != 0) rc = 1;
    return rc;
}
