/*
 * cmd-perplexity.c - `tongyun perplexity`: how well a model predicts a text. The text is tokenized as plain text
 * (special-token strings are not recognised) and cut into non-overlapping windows of --ctx tokens. Each window is
 * evaluated from an empty cache, and every token after the window's first is scored by its negative log-likelihood
 * under the model given the tokens before it in the window (log-softmax in double precision). A text shorter than
 * the window therefore scores tokens 2..T given their whole prefix, as Hugging Face's evaluation does. The result is
 * the mean NLL over all scored tokens and PPL = exp(mean NLL).
 */
#include "cli.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>

/* Logits are fetched this many positions at a time, so memory stays bounded for large vocabularies. */
#define LOGITS_PIECE 128

static void usage(FILE *f) {
    fprintf(f, "usage: tongyun perplexity -m MODEL -f FILE [options]\n"
               "\n"
               "Measures the perplexity of MODEL on the text in FILE. The text is split into non-overlapping windows\n"
               "of --ctx tokens, each evaluated from an empty context; every token after a window's first is scored\n"
               "given the tokens before it in its window. Prints PPL = exp(mean negative log-likelihood).\n"
               "\n"
               "  -m, --model FILE   GGUF model file\n"
               "  -f, --file FILE    UTF-8 text (tokenized as plain text: special-token strings are not recognised)\n"
               "      --ctx N        window length in tokens (default: min(2048, the model's training context))\n"
               "      --threads N    CPU threads (default: one per core)\n"
               "      --kv-type f16|f32  KV cache precision (default f16)\n"
               "      --json         print {\"n_tokens\": T, \"n_scored\": S, \"nll\": x, \"ppl\": y}\n"
               "  -h, --help         this help\n");
}

struct ppl_state {
    struct ty_model *model;
    struct ty_context *ctx;
    char *text;
    int32_t *ids;
    float *logits;
};

static void state_free(struct ppl_state *s) {
    ty_free(s->logits);
    ty_free(s->ids);
    ty_free(s->text);
    ty_context_free(s->ctx);
    ty_model_free(s->model);
}

/* -log softmax(row)[target], in double. */
static double token_nll(const float *row, int32_t n_vocab, int32_t target) {
    double max = row[0];
    for (int32_t j = 1; j < n_vocab; j++)
        if (row[j] > max) max = row[j];
    double sum = 0;
    for (int32_t j = 0; j < n_vocab; j++) sum += exp((double)row[j] - max);
    return -((double)row[target] - max - log(sum));
}

static int measure(const char *model, const char *file, long ctx_len, long threads, enum ty_type kv, bool json,
                   struct ppl_state *s) {
    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = (int)threads;
    enum ty_status st = ty_model_load(model, &mp, &s->model);
    if (st != TY_OK) return ty_cli_fail("perplexity", st);
    size_t len;
    st = ty__file_read(file, (size_t)1 << 30, &s->text, &len);
    if (st != TY_OK) return ty_cli_fail("perplexity", st);

    const struct ty_tokenizer *tok = ty_model_tokenizer(s->model);
    size_t cap = len + 1, n_tok; /* byte-level BPE: never more tokens than bytes */
    s->ids = ty__malloc(cap * sizeof(int32_t));
    if (!s->ids) return ty_cli_fail("perplexity", ty__error(TY_ERR_NO_MEMORY, "out of memory tokenizing %s", file));
    st = ty_tokenize(tok, s->text, len, 0, s->ids, cap, &n_tok);
    if (st != TY_OK) {
        ty__error_prefix(st, "%s", file);
        return ty_cli_fail("perplexity", st);
    }
    if (n_tok < 2) {
        fprintf(stderr, "tongyun perplexity: %s has %zu token%s; at least 2 are needed to score one\n", file, n_tok,
                n_tok == 1 ? "" : "s");
        return 1;
    }

    int32_t train = ty_model_n_ctx_train(s->model);
    int32_t window = ctx_len ? (int32_t)ctx_len : (train < 2048 ? train : 2048);
    struct ty_context_params cp = ty_context_default_params();
    cp.n_ctx = window;
    cp.kv_type = kv;
    st = ty_context_init(s->model, &cp, &s->ctx);
    if (st != TY_OK) return ty_cli_fail("perplexity", st);
    int32_t n_vocab = ty_model_n_vocab(s->model);
    s->logits = ty__malloc(sizeof(float) * (size_t)n_vocab * LOGITS_PIECE);
    if (!s->logits) return ty_cli_fail("perplexity", ty__error(TY_ERR_NO_MEMORY, "out of memory for logits"));

    double nll = 0;
    size_t n_scored = 0;
    struct ty_progress bar;
    ty__progress_begin(&bar, "perplexity", n_tok);
    double t0 = ty__time_s();
    for (size_t w0 = 0; w0 < n_tok; w0 += (size_t)window) {
        size_t wn = n_tok - w0 < (size_t)window ? n_tok - w0 : (size_t)window;
        if (wn < 2) break; /* a last window of one token has nothing to score */
        st = ty_context_truncate(s->ctx, 0);
        if (st != TY_OK) return ty_cli_fail("perplexity", st);
        for (size_t p0 = 0; p0 < wn; p0 += LOGITS_PIECE) {
            size_t pn = wn - p0 < LOGITS_PIECE ? wn - p0 : LOGITS_PIECE;
            st = ty_context_eval(s->ctx, s->ids + w0 + p0, pn, TY_LOGITS_ALL, s->logits);
            if (st != TY_OK) return ty_cli_fail("perplexity", st);
            /* row i predicts the token at window position p0 + i + 1 */
            for (size_t i = 0; i < pn && p0 + i + 1 < wn; i++) {
                nll += token_nll(s->logits + i * (size_t)n_vocab, n_vocab, s->ids[w0 + p0 + i + 1]);
                n_scored++;
            }
            ty__progress_update(&bar, w0 + p0 + pn);
        }
    }
    ty__progress_end(&bar);
    double dt = ty__time_s() - t0;
    double mean = nll / (double)n_scored, ppl = exp(mean);
    if (json) {
        json_t *obj = json_pack("{s:I, s:I, s:f, s:f}", "n_tokens", (json_int_t)n_tok, "n_scored", (json_int_t)n_scored,
                                "nll", mean, "ppl", ppl);
        char *dump = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
        json_decref(obj);
        if (!dump) return ty_cli_fail("perplexity", ty__error(TY_ERR_NO_MEMORY, "out of memory writing JSON"));
        printf("%s\n", dump);
        free(dump);
    } else {
        printf("perplexity %.4f (mean NLL %.6f over %zu scored tokens of %zu, windows of %d)\n", ppl, mean, n_scored,
               n_tok, window);
    }
    fprintf(stderr, "tongyun perplexity: %zu tokens in %.2f s (%.1f tok/s)\n", n_tok, dt, dt > 0 ? n_tok / dt : 0.0);
    return 0;
}

int ty_cmd_perplexity(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    long ctx = 0, threads = 0;
    bool json = false;
    enum ty_type kv = TY_TYPE_F16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            model = v;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            file = v;
        } else if (!strcmp(a, "--ctx")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_int(a, v, 2, INT32_MAX, &ctx)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_int(a, v, 1, 1024, &threads)) return 2;
        } else if (!strcmp(a, "--kv-type")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            if (!strcmp(v, "f16")) {
                kv = TY_TYPE_F16;
            } else if (!strcmp(v, "f32")) {
                kv = TY_TYPE_F32;
            } else {
                fprintf(stderr, "tongyun perplexity: --kv-type expects f16 or f32, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else {
            fprintf(stderr, "tongyun perplexity: unknown option '%s' (see tongyun perplexity --help)\n", a);
            return 2;
        }
    }
    if (!model || !file) {
        fprintf(stderr, "tongyun perplexity: %s is required (see tongyun perplexity --help)\n",
                !model ? "-m MODEL" : "-f FILE");
        return 2;
    }
    struct ppl_state s = {0};
    int rc = measure(model, file, ctx, threads, kv, json, &s);
    state_free(&s);
    return rc;
}
