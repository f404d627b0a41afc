/*
 * cmd-tokenize.c - `tongyun tokenize`: text to token ids with a model's tokenizer (read from a GGUF file without
 * loading weights) or a Hugging Face tokenizer.json. One text prints its ids on one line; --jsonl turns a file of
 * {"text": ...} lines into one JSON array of ids per line, for scripts and reference comparisons.
 */
#include "cli.h"
#include "model/tokenizer.h"

#include <jansson.h>
#include <stdlib.h>

static void usage(FILE *f) {
    fprintf(f, "usage: tongyun tokenize (-m MODEL.gguf | --tokenizer tokenizer.json) [--no-special]\n"
               "                        (TEXT | -f FILE | --jsonl FILE)\n\n"
               "Prints the token ids of TEXT separated by spaces, then a newline. No BOS/EOS is added.\n\n"
               "  -m, --model FILE   read the tokenizer from a GGUF model (its weights are not loaded)\n"
               "  --tokenizer FILE   a Hugging Face tokenizer.json (tokenizer_config.json beside it is read too)\n"
               "  --no-special       treat special tokens such as <|im_start|> as plain text\n"
               "                     (added tokens that are not special, such as <think>, are still recognised)\n"
               "  -f, --file FILE    tokenize the whole of FILE ('-' = standard input) instead of TEXT\n"
               "  --jsonl FILE       read lines {\"text\": ...} ('-' = standard input) and print one JSON array of\n"
               "                     ids per line, in order\n");
}

/* Tokenizes into a growing array. */
static enum ty_status tokenize_all(const struct ty_tokenizer *tok, const char *text, size_t len, unsigned flags,
                                   int32_t **ids, size_t *cap, size_t *n) {
    enum ty_status st = ty_tokenize(tok, text, len, flags, *ids, *cap, n);
    if (st != TY_ERR_BUFFER_TOO_SMALL) return st;
    int32_t *p = ty__realloc(*ids, *n * sizeof *p);
    if (!p) return ty__error(TY_ERR_NO_MEMORY, "out of memory for %zu ids", *n);
    *ids = p;
    *cap = *n;
    return ty_tokenize(tok, text, len, flags, *ids, *cap, n);
}

static void print_ids(const int32_t *ids, size_t n, bool json) {
    if (json) putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? (json ? ", %d" : " %d") : "%d", ids[i]);
    if (json) putchar(']');
    putchar('\n');
}

struct jsonl_ctx {
    const struct ty_tokenizer *tok;
    unsigned flags;
    int32_t *ids;
    size_t cap;
};

static int tokenize_line(void *arg, json_t *v, const json_error_t *err, const char *path, long line_no) {
    struct jsonl_ctx *c = arg;
    const json_t *text = json_is_object(v) ? json_object_get(v, "text") : NULL;
    if (!json_is_string(text)) {
        fprintf(stderr, "tongyun tokenize: %s line %ld: expected {\"text\": \"...\"}%s%s\n", path, line_no,
                v ? "" : ": ", v ? "" : err->text);
        return 1;
    }
    size_t n;
    enum ty_status st =
        tokenize_all(c->tok, json_string_value(text), json_string_length(text), c->flags, &c->ids, &c->cap, &n);
    if (st != TY_OK) {
        fprintf(stderr, "tongyun tokenize: %s line %ld: %s\n", path, line_no, ty_last_error());
        return 1;
    }
    print_ids(c->ids, n, true);
    return 0;
}

static int run_jsonl(const struct ty_tokenizer *tok, const char *path, unsigned flags) {
    struct jsonl_ctx c = {.tok = tok, .flags = flags};
    int rc = ty_cli_jsonl_each("tokenize", path, tokenize_line, &c);
    ty_free(c.ids);
    return rc;
}

/* Reads a whole file or standard input. */
static enum ty_status read_all(const char *path, char **out, size_t *len) {
    if (strcmp(path, "-")) return ty__file_read(path, (size_t)1 << 31, out, len);
    struct ty_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) ty__buf_append(&b, chunk, n);
    if (!b.data) ty__buf_append(&b, "", 0);
    *len = b.len;
    return ty__buf_finish(&b, out);
}

int ty_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *tok_path = NULL, *file = NULL, *jsonl = NULL, *text = NULL;
    unsigned flags = TY_TOKENIZE_SPECIAL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--tokenizer")) {
            if (!(tok_path = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!(file = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--jsonl")) {
            if (!(jsonl = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--no-special")) {
            flags &= ~(unsigned)TY_TOKENIZE_SPECIAL;
        } else if (a[0] == '-' && a[1] && strcmp(a, "--")) {
            fprintf(stderr, "tongyun tokenize: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else {
            if (!strcmp(a, "--")) {
                if (++i >= argc) break;
                a = argv[i];
            }
            if (text) {
                fprintf(stderr, "tongyun tokenize: give the text as one argument (quote it)\n");
                return 2;
            }
            text = a;
        }
    }
    if (!model == !tok_path) {
        fprintf(stderr, "tongyun tokenize: give exactly one of -m MODEL.gguf or --tokenizer tokenizer.json\n\n");
        usage(stderr);
        return 2;
    }
    if ((text != NULL) + (file != NULL) + (jsonl != NULL) != 1) {
        fprintf(stderr, "tongyun tokenize: give exactly one of TEXT, -f FILE or --jsonl FILE\n\n");
        usage(stderr);
        return 2;
    }
    struct ty_tokenizer *tok;
    enum ty_status st = model ? ty__tokenizer_load_gguf_file(model, &tok) : ty_tokenizer_load_json(tok_path, &tok);
    if (st != TY_OK) return ty_cli_fail("tokenize", st);
    int rc = 0;
    if (jsonl) {
        rc = run_jsonl(tok, jsonl, flags);
    } else {
        char *buf = NULL;
        size_t len = text ? strlen(text) : 0, cap = 0, n = 0;
        int32_t *ids = NULL;
        st = file ? read_all(file, &buf, &len) : TY_OK;
        if (st == TY_OK) st = tokenize_all(tok, buf ? buf : text, len, flags, &ids, &cap, &n);
        if (st == TY_OK)
            print_ids(ids, n, false);
        else
            rc = ty_cli_fail("tokenize", st);
        ty_free(buf);
        ty_free(ids);
    }
    ty_tokenizer_free(tok);
    if (fflush(stdout) != 0) rc = 1;
    return rc;
}
