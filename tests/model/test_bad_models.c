/*
 * test_bad_models.c - bad model files through the whole loader (ty_model_load), as a user would hit them: a missing
 * file, a truncated or corrupted copy of a real model, an unsupported architecture, a vocabulary whose indices are out
 * of range (a known GGUF CVE pattern in other engines, which the container alone cannot catch), hyperparameters that
 * disagree with the tensors. Each must fail with a status and a message that names the problem, never crash, and
 * leave no memory behind. The good model is the converted qwen3-tiny fixture.
 */
#include "fixture.h"
#include "harness.h"
#include "model/gguf.h"

#include <stdlib.h>

static const char *good_path;

static bool msg_has(const char *s) {
    return strstr(ty_last_error(), s) != NULL;
}

static enum ty_status load(const char *path) {
    struct ty_model *m = NULL;
    size_t before = ty_mem_allocated();
    enum ty_status st = ty_model_load(path, NULL, &m);
    if (st == TY_OK) {
        ty_model_free(m);
    } else {
        CHECK(m == NULL);
        CHECK_MSG(ty_last_error()[0] != 0, "failed without a message");
    }
    CHECK_MSG(ty_mem_allocated() == before, "%zu bytes left allocated", ty_mem_allocated() - before);
    return st;
}

/* Copies the good model into `path`, replacing metadata key `key` (if non-NULL) through `edit`. */
static void write_edited(const char *path, const char *skip_key, fixture_edit_fn edit) {
    fixture_write_edited(good_path, path, skip_key, edit);
}

static void edit_eos(struct ty_gguf_writer *w) {
    ty__gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 100000);
}
static void edit_arch(struct ty_gguf_writer *w) {
    ty__gguf_writer_set_str(w, "general.architecture", "llama");
}
static void edit_heads(struct ty_gguf_writer *w) {
    ty__gguf_writer_set_u32(w, "qwen3.attention.head_count", 8);
}
static void edit_merges(struct ty_gguf_writer *w) {
    const char *m[] = {"Ġ Ġ", "zzzz qqqq"};
    ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", m, NULL, 2);
}

static void test_good_model_loads(void) {
    CHECK_OK(load(good_path));
}

static void test_missing_file(void) {
    CHECK_STATUS(load("/nonexistent/model.gguf"), TY_ERR_IO);
    CHECK(msg_has("/nonexistent/model.gguf"));
}

static void test_truncated(void) {
    char *data;
    size_t size;
    CHECK_OK(ty__file_read(good_path, 64u << 20, &data, &size));
    if (!data) return;
    size_t cuts[] = {0, 3, 24, 100, size / 3, size / 2, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        const char *path = ty_test_tmp("truncated.gguf");
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL);
        if (!f) break;
        fwrite(data, 1, cuts[i], f);
        fclose(f);
        enum ty_status st = load(path);
        CHECK_MSG(st == TY_ERR_FORMAT, "cut at %zu: %s (%s)", cuts[i], ty_status_str(st), ty_last_error());
    }
    /* corrupt the magic */
    const char *path = ty_test_tmp("badmagic.gguf");
    data[0] = 'X';
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, size, f);
        fclose(f);
        CHECK_STATUS(load(path), TY_ERR_FORMAT);
        CHECK(msg_has("magic"));
    }
    ty_free(data);
}

static void test_vocab_out_of_range(void) {
    const char *path = ty_test_tmp("eos-out-of-range.gguf");
    write_edited(path, NULL, edit_eos);
    CHECK_STATUS(load(path), TY_ERR_FORMAT);
    CHECK(msg_has("tokenizer.ggml.eos_token_id"));
    path = ty_test_tmp("merge-unknown.gguf");
    write_edited(path, NULL, edit_merges);
    CHECK_STATUS(load(path), TY_ERR_FORMAT);
    CHECK(msg_has("tokenizer.ggml.merges[1]"));
}

static void test_unsupported_arch(void) {
    const char *path = ty_test_tmp("llama.gguf");
    write_edited(path, NULL, edit_arch);
    CHECK_STATUS(load(path), TY_ERR_UNSUPPORTED);
    CHECK(msg_has("llama") && msg_has("qwen2") && msg_has("qwen3"));
}

static void test_hparams_disagree_with_tensors(void) {
    const char *path = ty_test_tmp("heads.gguf");
    write_edited(path, NULL, edit_heads);
    CHECK_STATUS(load(path), TY_ERR_FORMAT);
    CHECK_MSG(msg_has("attn_q") || msg_has("head"), "%s", ty_last_error());
    path = ty_test_tmp("no-block-count.gguf");
    write_edited(path, "qwen3.block_count", NULL);
    CHECK_STATUS(load(path), TY_ERR_FORMAT);
    CHECK(msg_has("qwen3.block_count"));
}

void ty_tests(void) {
    good_path = ty_test_tmp("good.gguf");
    if (!fixture_convert("qwen3-tiny", "f16", good_path)) return;
    TY_RUN(test_good_model_loads);
    TY_RUN(test_missing_file);
    TY_RUN(test_truncated);
    TY_RUN(test_vocab_out_of_range);
    TY_RUN(test_unsupported_arch);
    TY_RUN(test_hparams_disagree_with_tensors);
}
