/*
 * fuzz_tokenizer.c - the tokenizer under hostile input. The first byte picks what the rest is:
 *   0 mod 4  a tokenizer.json: loading must fail cleanly or give a tokenizer that tokenizes and decodes;
 *   1 mod 4  token ids (4 bytes each) for the streaming detokenizer: output is always valid UTF-8;
 *   else     text for two tokenizers built once from tiny embedded tokenizer.json documents: invalid UTF-8 must be
 *            an error and valid text must tokenize; with the plain one, the hand-written pre-tokenizer must give the
 *            ids the PCRE2 one gives, decoding must give the NFC text back, and streaming that decode one token at a
 *            time must give the same text.
 * Any disagreement aborts, so libFuzzer reports it as a crash.
 */
#include "model/tokenizer-impl.h"

#include <stdio.h>
#include <stdlib.h>

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        fprintf(stderr, "fuzz_tokenizer: " __VA_ARGS__);                                                               \
        fputc('\n', stderr);                                                                                           \
        abort();                                                                                                       \
    } while (0)

/* A byte-level tokenizer.json: all 256 byte tokens, a few merges, Qwen2's pre-tokenizer and NFC, and added tokens
 * (with lstrip/rstrip/single_word/normalized when `flags`). */
static char *tiny_json(bool flags, size_t *len) {
    struct ty_buf b = {0};
    ty__buf_puts(&b, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
    char enc[8];
    for (int c = 0; c < 256; c++) {
        uint8_t byte = (uint8_t)c;
        size_t n = ty__bytelevel_encode(&byte, 1, enc);
        ty__buf_puts(&b, c ? ", \"" : "\"");
        if (enc[0] == '"' || enc[0] == '\\') ty__buf_puts(&b, "\\");
        ty__buf_append(&b, enc, n);
        ty__buf_printf(&b, "\": %d", c);
    }
    static const char *merges[][2] = {{"h", "e"},
                                      {"l", "l"},
                                      {"he", "ll"},
                                      {"\xc4\xa0", "t"},
                                      {"\xc4\xa0t", "h"},
                                      {"hell", "o"},
                                      {"\xc4\xa0", "\xc4\xa0"},
                                      {"\xc3\x83", "\xc2\xa9"},
                                      {"a", "a"},
                                      {"aa", "aa"},
                                      {"1", "2"}};
    size_t nm = sizeof merges / sizeof merges[0];
    for (size_t i = 0; i < nm; i++) ty__buf_printf(&b, ", \"%s%s\": %zu", merges[i][0], merges[i][1], 256 + i);
    ty__buf_puts(&b, "}, \"merges\": [");
    for (size_t i = 0; i < nm; i++) ty__buf_printf(&b, "%s[\"%s\", \"%s\"]", i ? ", " : "", merges[i][0], merges[i][1]);
    size_t id = 256 + nm;
    ty__buf_printf(&b,
                   "]}, \"added_tokens\": [{\"id\": %zu, \"content\": \"<|im_start|>\", \"special\": true}, "
                   "{\"id\": %zu, \"content\": \"<|im_end|>\", \"special\": true}, "
                   "{\"id\": %zu, \"content\": \"<think>\", \"special\": false, \"normalized\": false}",
                   id, id + 1, id + 2);
    if (flags)
        ty__buf_printf(&b,
                       ", {\"id\": %zu, \"content\": \"<mask>\", \"lstrip\": true, \"rstrip\": true, "
                       "\"single_word\": true, \"normalized\": false}, "
                       "{\"id\": %zu, \"content\": \"n\\u0303a\", \"normalized\": true}",
                       id + 3, id + 4);
    ty__buf_printf(&b, "], \"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": {\"type\": \"Sequence\", "
                       "\"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"");
    for (const char *p = ty__tok_regex_qwen2; *p; p++) {
        if (*p == '\\' || *p == '"') ty__buf_append(&b, "\\", 1);
        ty__buf_append(&b, p, 1);
    }
    ty__buf_puts(&b, "\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
                     "\"use_regex\": false}]}, \"decoder\": {\"type\": \"ByteLevel\"}}");
    char *out = NULL;
    *len = b.len;
    if (ty__buf_finish(&b, &out) != TY_OK) FAIL("out of memory building the embedded tokenizer");
    return out;
}

static struct ty_tokenizer *plain, *flagged;

static void init(void) {
    if (plain) return;
    for (int f = 0; f < 2; f++) {
        size_t len;
        char *json = tiny_json(f, &len);
        if (ty__tokenizer_load_hf_mem(json, len, NULL, 0, NULL, 0, f ? &flagged : &plain) != TY_OK)
            FAIL("embedded tokenizer does not load: %s", ty_last_error());
        ty_free(json);
    }
    if (plain->pre_impl != TOK_PRE_QWEN2) FAIL("embedded tokenizer should use the hand-written pre-tokenizer");
}

static int32_t *tokenize(const struct ty_tokenizer *t, const char *s, size_t n, unsigned flags, size_t *n_ids,
                         enum ty_status *st) {
    *n_ids = 0;
    *st = ty_tokenize(t, s, n, flags, NULL, 0, n_ids);
    if (*st != TY_ERR_BUFFER_TOO_SMALL) return NULL;
    int32_t *ids = ty__malloc(*n_ids * sizeof *ids);
    if (!ids) FAIL("out of memory");
    *st = ty_tokenize(t, s, n, flags, ids, *n_ids, n_ids);
    return ids;
}

/* Decodes ids with the streaming detokenizer; checks the output is valid UTF-8. */
static char *decode(const struct ty_tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
    struct ty_buf b = {0};
    struct ty_detokenizer st = {0};
    char piece[256];
    size_t k;
    for (size_t i = 0; i <= n; i++) {
        enum ty_status s = i < n ? ty_detokenize_push(t, &st, ids[i], piece, sizeof piece, &k)
                                 : ty_detokenize_flush(&st, piece, sizeof piece, &k);
        if (s != TY_OK) FAIL("detokenize: %s", ty_last_error());
        if (ty__utf8_check((const uint8_t *)piece, k) != k) FAIL("detokenizer produced invalid UTF-8");
        ty__buf_append(&b, piece, k);
    }
    char *out = NULL;
    *len = b.len;
    if (ty__buf_finish(&b, &out) != TY_OK || !out) FAIL("out of memory");
    return out;
}

static void fuzz_loader(const uint8_t *data, size_t size) {
    struct ty_tokenizer *t = NULL;
    if (ty__tokenizer_load_hf_mem((const char *)data, size, NULL, 0, NULL, 0, &t) != TY_OK) {
        if (t) FAIL("failed load left a tokenizer");
        if (!ty_last_error()[0]) FAIL("failed load left no message");
        return;
    }
    static const char sample[] = "Hello <|im_start|>world 123 \xe4\xb8\xad\xe6\x96\x87 e\xcc\x81 don't  \n\n";
    for (int k = 0; k < 2; k++) {
        const char *s = k ? (const char *)data : sample;
        size_t n = k ? size : sizeof sample - 1, n_ids;
        enum ty_status st;
        int32_t *ids = tokenize(t, s, n, TY_TOKENIZE_SPECIAL, &n_ids, &st);
        if (st == TY_OK) {
            for (size_t i = 0; i < n_ids; i++)
                if (ids[i] < 0 || ids[i] >= ty_tokenizer_n_vocab(t)) FAIL("id %d out of range", ids[i]);
            size_t len;
            ty_free(decode(t, ids, n_ids, &len));
        }
        ty_free(ids);
    }
    ty_tokenizer_free(t);
}

static void fuzz_ids(const uint8_t *data, size_t size) {
    const struct ty_tokenizer *t = plain;
    int32_t ids[4096];
    size_t n = 0;
    for (size_t i = 0; i + 4 <= size && n < 4096; i += 4) {
        uint32_t v;
        memcpy(&v, data + i, 4);
        ids[n++] = (int32_t)(v % (uint32_t)ty_tokenizer_n_vocab(t));
    }
    size_t len;
    ty_free(decode(t, ids, n, &len));
    /* an id past the vocabulary is an error, not a crash */
    struct ty_detokenizer st = {0};
    char out[64];
    if (ty_detokenize_push(t, &st, ty_tokenizer_n_vocab(t), out, sizeof out, &len) != TY_ERR_INVALID_ARG)
        FAIL("out-of-range id accepted");
}

static void fuzz_text(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    bool valid = ty__utf8_check(data, size) == size;
    for (int which = 0; which < 2; which++) {
        struct ty_tokenizer *t = which ? flagged : plain;
        for (unsigned flags = 0; flags <= TY_TOKENIZE_SPECIAL; flags += TY_TOKENIZE_SPECIAL) {
            size_t n_ids;
            enum ty_status st;
            int32_t *ids = tokenize(t, s, size, flags, &n_ids, &st);
            if (!valid) {
                if (st != TY_ERR_INVALID_ARG) FAIL("invalid UTF-8 accepted (status %d)", st);
                ty_free(ids);
                continue;
            }
            if (st != TY_OK) FAIL("valid text rejected: %s", ty_last_error());
            if (which == 0) {
                /* the reference pre-tokenizer gives the same ids */
                t->pre_impl = TOK_PRE_REGEX;
                size_t n_ref;
                enum ty_status st2;
                int32_t *ref = tokenize(t, s, size, flags, &n_ref, &st2);
                t->pre_impl = TOK_PRE_QWEN2;
                if (st2 != TY_OK || n_ref != n_ids || (n_ids && memcmp(ref, ids, n_ids * sizeof *ids)))
                    FAIL("hand-written and PCRE2 pre-tokenizers disagree");
                ty_free(ref);
                /* decoding gives the normalised text back (the plain tokenizer strips nothing) */
                size_t len, nfc_len;
                char *dec = decode(t, ids, n_ids, &len);
                uint8_t *nfc = NULL;
                if (ty__nfc(data, size, &nfc, &nfc_len) != TY_OK) FAIL("NFC failed: %s", ty_last_error());
                if (len != nfc_len || memcmp(dec, nfc, len)) FAIL("decode(tokenize(text)) != NFC(text)");
                ty_free(nfc);
                ty_free(dec);
            }
            ty_free(ids);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init();
    if (size == 0) return 0;
    switch (data[0] % 4) {
    case 0:
        fuzz_loader(data + 1, size - 1);
        break;
    case 1:
        fuzz_ids(data + 1, size - 1);
        break;
    default:
        fuzz_text(data + 1, size - 1);
        break;
    }
    return 0;
}
