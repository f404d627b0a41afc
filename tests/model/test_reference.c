/*
 * test_reference.c - the forward pass against Hugging Face transformers: every tiny checkpoint of tests/data/models
 * (see its README.md) is converted with `tongyun convert` and run, and its outputs compared with reference.json and
 * logits.f32, which transformers computed in float32 with eager attention.
 *
 *  - Logits of every stored sequence (one forward pass over the prompt, all positions), max abs error:
 *      <= 1e-4 with F32 weights (and BF16 weights for a BF16 checkpoint, which then holds exactly the reference
 *              weights) and an F32 KV cache; this run uses a batch of 7 tokens so that prompts span several batches;
 *      <= 1e-2 with F16 weights and an F32 cache (weight rounding alone: up to ~0.0099 on qwen3-tiny, whose logits
 *              reach 7.7);
 *      <= 1e-2 with F32 weights and the default F16 cache (cache rounding alone: up to ~0.005).
 *  - Greedy continuations of 32 tokens, decoded one token at a time from the KV cache: identical to the reference's,
 *    up to the first step whose reference top-1/top-2 margin is below twice the logits tolerance (there the order is
 *    legitimately decided by rounding, and what follows depends on it).
 *  - Perplexity: the mean negative log-likelihood of tokens 2..T of the stored text within 0.1% (relative).
 *  - The tokenizer embedded by convert reproduces the stored prompt ids.
 *  - The commands: `tongyun run --temp 0 --json` gives the prompt ids and the greedy continuation (up to the first
 *    end-of-generation token, where it stops), and `tongyun perplexity --json` the token counts and the NLL.
 */
#include "fixture.h"
#include "harness.h"

#include <jansson.h>
#include <stdlib.h>

static const char *const models[] = {"qwen2-tiny", "qwen2-tiny-tied", "qwen3-tiny", "qwen3-tiny-untied",
                                     "qwen3moe-tiny"};

struct run {
    const char *type; /* convert's --type */
    double tol;       /* logits max abs error */
    enum ty_type kv;  /* KV cache type */
    int n_batch;
};

/* `text` single-quoted for sh (ty_free). */
static char *sh_quote(const char *text) {
    struct ty_buf b = {0};
    ty__buf_puts(&b, "'");
    for (const char *p = text; *p; p++) {
        if (*p == '\'')
            ty__buf_puts(&b, "'\\''");
        else
            ty__buf_append(&b, p, 1);
    }
    ty__buf_puts(&b, "'");
    char *out = NULL;
    ty__buf_finish(&b, &out);
    return out;
}

/* Runs a tongyun command line (arguments after the CLI path) and parses its stdout as one JSON object. */
static json_t *cli_json(const char *args) {
    size_t need = strlen(args) + 4096;
    char *cmd = ty__malloc(need);
    snprintf(cmd, need, "'%s' %s 2>/dev/null", ty_test_cli(), args);
    char *out = NULL;
    int rc = ty_test_sh(cmd, &out);
    CHECK_MSG(rc == 0, "%s -> exit %d", cmd, rc);
    json_error_t err;
    json_t *j = rc == 0 && out ? json_loads(out, JSON_ALLOW_NUL, &err) : NULL;
    CHECK_MSG(j != NULL, "%s: stdout is not one JSON object: %s", cmd, out ? out : "");
    ty_free(out);
    ty_free(cmd);
    return j;
}

/* `tongyun run --temp 0 --json` continues the prompt as the reference's greedy list does (up to an end-of-generation
 * token, where run stops, or a near tie), and `tongyun perplexity --json` reproduces the reference NLL. */
static void check_cli(const char *path, json_t *ref, const struct ty_tokenizer *tok, double tol) {
    json_t *seqs = json_object_get(ref, "sequences");
    for (size_t s = 0; s < json_array_size(seqs); s++) {
        json_t *seq = json_array_get(seqs, s);
        if (!json_is_true(json_object_get(seq, "special"))) continue; /* run always recognises special tokens */
        char *q = sh_quote(json_string_value(json_object_get(seq, "text")));
        size_t need = strlen(q) + strlen(path) + 256;
        char *args = ty__malloc(need);
        snprintf(args, need, "run -m '%s' -p %s --temp 0 -n 32 --json --kv-type f32 --threads 2", path, q);
        json_t *j = cli_json(args);
        if (j) {
            CHECK(json_equal(json_object_get(j, "prompt_ids"), json_object_get(seq, "ids")));
            json_t *ids = json_object_get(j, "ids"), *greedy = json_object_get(seq, "greedy");
            json_t *margins = json_object_get(seq, "greedy_margins");
            for (size_t g = 0; g < json_array_size(greedy); g++) {
                if (json_number_value(json_array_get(margins, g)) < 2 * tol) break;
                int32_t want = (int32_t)json_integer_value(json_array_get(greedy, g));
                if (ty_tokenizer_is_eog(tok, want)) {
                    CHECK(json_array_size(ids) == g); /* run stopped here */
                    break;
                }
                CHECK_MSG(g < json_array_size(ids) && json_integer_value(json_array_get(ids, g)) == want,
                          "tongyun run: greedy step %zu differs from the reference", g);
            }
            CHECK(json_is_string(json_object_get(j, "text")));
            json_decref(j);
        }
        ty_free(args);
        ty_free(q);
    }

    json_t *ppl = json_object_get(ref, "perplexity");
    const char *text = json_string_value(json_object_get(ppl, "text"));
    const char *file = ty_test_tmp("ppl.txt");
    FILE *f = fopen(file, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    char args[4096];
    snprintf(args, sizeof args, "perplexity -m '%s' -f '%s' --json --kv-type f32 --threads 2", path, file);
    json_t *j = cli_json(args);
    if (j) {
        json_int_t T = (json_int_t)json_array_size(json_object_get(ppl, "ids"));
        CHECK(json_integer_value(json_object_get(j, "n_tokens")) == T);
        CHECK(json_integer_value(json_object_get(j, "n_scored")) == T - 1);
        double nll = json_number_value(json_object_get(j, "nll")),
               want = json_number_value(json_object_get(ppl, "mean_nll"));
        CHECK_MSG(fabs(nll - want) <= 1e-3 * fabs(want), "tongyun perplexity: NLL %.6f, reference %.6f", nll, want);
        CHECK_NEAR(json_number_value(json_object_get(j, "ppl")), exp(nll), 1e-9 * exp(nll));
        json_decref(j);
    }
}

static void check_model(const char *name, json_t *ref, const float *ref_logits, size_t n_ref_rows,
                        const struct run *run) {
    char out[64];
    snprintf(out, sizeof out, "%s-%s.gguf", name, run->type);
    const char *path = ty_test_tmp(out);
    if (!fixture_convert(name, run->type, path)) return;

    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = 2;
    struct ty_model *m = NULL;
    CHECK_OK(ty_model_load(path, &mp, &m));
    if (!m) return;
    int32_t V = (int32_t)json_integer_value(json_object_get(ref, "n_vocab"));
    CHECK(ty_model_n_vocab(m) == V);
    const struct ty_tokenizer *tok = ty_model_tokenizer(m);

    struct ty_context_params cp = ty_context_default_params();
    cp.kv_type = run->kv;
    cp.n_batch = run->n_batch;
    struct ty_context *ctx = NULL;
    CHECK_OK(ty_context_init(m, &cp, &ctx));
    if (!ctx) {
        ty_model_free(m);
        return;
    }

    json_t *seqs = json_object_get(ref, "sequences");
    for (size_t s = 0; s < json_array_size(seqs); s++) {
        json_t *seq = json_array_get(seqs, s);
        const char *sname = json_string_value(json_object_get(seq, "name"));
        size_t n;
        int32_t *ids = fixture_json_ids(json_object_get(seq, "ids"), &n);
        size_t row0 = (size_t)json_integer_value(json_object_get(seq, "logits_row"));
        CHECK(row0 + n <= n_ref_rows);

        /* the embedded tokenizer gives the same ids */
        const char *text = json_string_value(json_object_get(seq, "text"));
        unsigned flags = json_is_true(json_object_get(seq, "special")) ? TY_TOKENIZE_SPECIAL : 0;
        int32_t tids[1024];
        size_t tn = 0;
        CHECK_OK(ty_tokenize(tok, text, strlen(text), flags, tids, 1024, &tn));
        CHECK_MSG(tn == n && memcmp(tids, ids, n * sizeof(int32_t)) == 0, "%s/%s: tokenization differs", name, sname);

        /* logits of every position */
        CHECK_OK(ty_context_truncate(ctx, 0));
        float *lg = ty__malloc(sizeof(float) * n * (size_t)V);
        CHECK_OK(ty_context_eval(ctx, ids, n, TY_LOGITS_ALL, lg));
        double err = ty_test_max_diff(lg, ref_logits + row0 * (size_t)V, n * (size_t)V);
        CHECK_MSG(err <= run->tol, "%s %s/%s: logits max abs error %g > %g", name, run->type, sname, err, run->tol);

        /* greedy continuation, decoding from the cache */
        char what[256];
        snprintf(what, sizeof what, "%s %s/%s", name, run->type, sname);
        size_t checked = fixture_check_greedy(ctx, seq, lg + (n - 1) * (size_t)V, lg, V, run->tol, what);
        if (run->tol <= 1e-4) CHECK_MSG(checked >= 8, "%s/%s: only %zu greedy steps compared", name, sname, checked);
        ty_free(lg);
        ty_free(ids);
    }

    /* perplexity of the stored text */
    char what[256];
    snprintf(what, sizeof what, "%s %s", name, run->type);
    fixture_check_nll(ctx, ref, V, what);
    if (run->tol <= 1e-4 && run->kv == TY_TYPE_F32 && !strcmp(run->type, "f32")) check_cli(path, ref, tok, run->tol);
    ty_context_free(ctx);
    ty_model_free(m);
}

static void test_reference_models(void) {
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        float *ref_logits = NULL;
        size_t rows = 0;
        json_t *ref = fixture_reference(models[i], &ref_logits, &rows);
        if (!ref) continue;
        const char *wtype = json_string_value(json_object_get(ref, "weights_dtype"));
        struct run runs[4] = {{"f32", 1e-4, TY_TYPE_F32, 7},
                              {"f16", 1e-2, TY_TYPE_F32, 0},
                              {"f32", 1e-2, TY_TYPE_F16, 0}, /* the default cache type */
                              {"bf16", 1e-4, TY_TYPE_F32, 0}};
        int n_runs = wtype && !strcmp(wtype, "BF16") ? 4 : 3;
        for (int r = 0; r < n_runs; r++) check_model(models[i], ref, ref_logits, rows, &runs[r]);
        ty_free(ref_logits);
        json_decref(ref);
    }
}

void ty_tests(void) {
    TY_RUN(test_reference_models);
}
