/*
 * fixture.h - what the model tests share about the tiny Hugging Face checkpoints of tests/data/models: converting one
 * with `tongyun convert`, reading its transformers reference (reference.json and logits.f32), the greedy-continuation
 * and perplexity checks against that reference, and copying a GGUF with its metadata edited. Static inline functions,
 * since a test binary links only tests/harness.c beside the library.
 */
#ifndef TY_TEST_MODEL_FIXTURE_H
#define TY_TEST_MODEL_FIXTURE_H

#include "harness.h"
#include "model/gguf.h"

#include <jansson.h>
#include <math.h>

static inline int32_t *fixture_json_ids(json_t *arr, size_t *n) {
    *n = json_array_size(arr);
    int32_t *ids = ty__malloc(sizeof(int32_t) * (*n ? *n : 1));
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return ids;
}

static inline int32_t fixture_argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Converts tests/data/models/<name> to `out` with `tongyun convert --type TYPE`; false (a failed check, with the
 * command's output) when that fails. */
static inline bool fixture_convert(const char *name, const char *type, const char *out) {
    char rel[256], cmd[4096];
    snprintf(rel, sizeof rel, "tests/data/models/%s", name);
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' '%s' --type %s 2>&1", ty_test_cli(), ty_test_src(rel), out, type);
    char *log = NULL;
    int rc = ty_test_sh(cmd, &log);
    CHECK_MSG(rc == 0, "%s -> %d:\n%s", cmd, rc, log ? log : "");
    ty_free(log);
    return rc == 0;
}

/* tests/data/models/<name>/reference.json, and its logits.f32 in *logits (copied to aligned memory; ty_free) of *rows
 * rows of n_vocab. NULL (a failed check) when either cannot be read. */
static inline json_t *fixture_reference(const char *name, float **logits, size_t *rows) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/data/models/%s/reference.json", name);
    json_error_t jerr;
    json_t *ref = json_load_file(ty_test_src(rel), 0, &jerr);
    CHECK_MSG(ref != NULL, "%s: %s", rel, jerr.text);
    if (!ref) return NULL;
    snprintf(rel, sizeof rel, "tests/data/models/%s/logits.f32", name);
    char *raw = NULL;
    size_t raw_size = 0;
    CHECK_OK(ty__file_read(ty_test_src(rel), (size_t)64 << 20, &raw, &raw_size));
    size_t V = (size_t)json_integer_value(json_object_get(ref, "n_vocab"));
    CHECK_MSG(V > 0, "%s: no n_vocab", name);
    if (!raw || V == 0) {
        ty_free(raw);
        json_decref(ref);
        return NULL;
    }
    *logits = ty__malloc(raw_size ? raw_size : 1);
    memcpy(*logits, raw, raw_size);
    *rows = raw_size / (V * sizeof(float));
    ty_free(raw);
    return ref;
}

/* Greedy decoding from ctx, whose last evaluated position gave the logits `last`: each step must pick the token of
 * the reference sequence's "greedy" list, up to the first step whose reference top-1/top-2 margin is below twice the
 * logits tolerance (a near tie: there the order is legitimately decided by rounding, and what follows depends on it).
 * `scratch` holds V floats. `what` names the case in messages. Returns the number of steps compared. */
static inline size_t fixture_check_greedy(struct ty_context *ctx, json_t *seq, const float *last, float *scratch,
                                          int32_t V, double tol, const char *what) {
    json_t *greedy = json_object_get(seq, "greedy"), *margins = json_object_get(seq, "greedy_margins");
    int32_t next = fixture_argmax(last, V);
    size_t checked = 0;
    for (size_t g = 0; g < json_array_size(greedy); g++) {
        if (json_number_value(json_array_get(margins, g)) < 2 * tol) break;
        int32_t want = (int32_t)json_integer_value(json_array_get(greedy, g));
        CHECK_MSG(next == want, "%s: greedy step %zu gave %d, reference %d", what, g, next, want);
        if (next != want) break;
        checked++;
        if (g + 1 == json_array_size(greedy)) break;
        if (ty_context_eval(ctx, &next, 1, TY_LOGITS_LAST, scratch) != TY_OK) {
            CHECK_MSG(false, "decode: %s", ty_last_error());
            break;
        }
        next = fixture_argmax(scratch, V);
    }
    return checked;
}

/* The mean negative log-likelihood of tokens 2..T of the reference's perplexity text, each scored from the logits of
 * the position before, through ctx (cleared first): within 0.1% (relative) of the reference's. */
static inline void fixture_check_nll(struct ty_context *ctx, json_t *ref, int32_t V, const char *what) {
    json_t *ppl = json_object_get(ref, "perplexity");
    size_t T;
    int32_t *ids = fixture_json_ids(json_object_get(ppl, "ids"), &T);
    float *lg = ty__malloc(sizeof(float) * T * (size_t)V);
    CHECK_OK(ty_context_truncate(ctx, 0));
    CHECK_OK(ty_context_eval(ctx, ids, T, TY_LOGITS_ALL, lg));
    double nll = 0;
    for (size_t i = 1; i < T; i++) {
        const float *row = lg + (i - 1) * (size_t)V;
        double mx = row[0], sum = 0;
        for (int32_t j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
        for (int32_t j = 0; j < V; j++) sum += exp((double)row[j] - mx);
        nll -= (double)row[ids[i]] - mx - log(sum);
    }
    nll /= (double)(T - 1);
    double want = json_number_value(json_object_get(ppl, "mean_nll"));
    CHECK_MSG(fabs(nll - want) <= 1e-3 * fabs(want), "%s: mean NLL %.6f, reference %.6f", what, nll, want);
    ty_free(lg);
    ty_free(ids);
}

/* Copies the GGUF `src` to `dst` with metadata key `skip_key` (if non-NULL) left out and whatever `edit` (if
 * non-NULL) adds; the tensors are unchanged. */
typedef void (*fixture_edit_fn)(struct ty_gguf_writer *w);
static inline void fixture_write_edited(const char *src, const char *dst, const char *skip_key, fixture_edit_fn edit) {
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(src, &g));
    if (!g) return;
    struct ty_gguf_writer *w = NULL;
    CHECK_OK(ty__gguf_writer_init(&w));
    for (int64_t i = 0; i < ty__gguf_n_kv(g); i++)
        if (!skip_key || strcmp(ty__gguf_key(g, i), skip_key)) CHECK_OK(ty__gguf_writer_copy_kv(w, g, i));
    if (edit) edit(w);
    for (int64_t i = 0; i < ty__gguf_n_tensors(g); i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
        CHECK_OK(ty__gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne));
    }
    CHECK_OK(ty__gguf_writer_begin(w, dst));
    for (int64_t i = 0; i < ty__gguf_n_tensors(g); i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
        CHECK_OK(ty__gguf_writer_write_tensor(w, t->data, t->nbytes));
    }
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);
    ty__gguf_close(g);
}

#endif
