/*
 * test_tokenizer.c - Qwen's byte-level BPE tokenizer against its references: every test vector of the Qwen3
 * tokenizer (ids exact; decode gives the text back where the reference does), every llama.cpp Qwen2 vocabulary case,
 * 600+ random and adversarial texts tokenized by Hugging Face tokenizers 0.21.1 with special tokens on and split, and
 * a tiny tokenizer exercising lstrip/rstrip/single_word/normalized added tokens. Then: the hand-written Qwen
 * pre-tokenizer against PCRE2 on random text, the small-word BPE against the heap BPE, the NFC quick-check table
 * against utf8proc, invalid UTF-8, the output-buffer contract, streaming detokenization of split and broken UTF-8,
 * the GGUF round trip (ids identical on all of the above), and malformed tokenizer.json and GGUF inputs.
 *
 * It includes tokenizer.c and tokenizer-text.c to reach their static parts.
 */
#include "harness.h"

#include "../../src/model/tokenizer-text.c"
#include "../../src/model/tokenizer.c"

#include <jansson.h>
#include <utf8proc.h>

/* ==== Helpers ==== */

static struct ty_tokenizer *qwen;      /* Qwen3's tokenizer.json, loaded once */
static struct ty_tokenizer *qwen_gguf; /* the same after a GGUF round trip */

static bool msg_has(const char *needle) {
    return strstr(ty_last_error(), needle) != NULL;
}

static const char *qwen_json_path(void) {
    static char path[4096];
    if (!path[0]) {
        snprintf(path, sizeof path, "%s", ty_test_tmp("tokenizer.json"));
        char cmd[9000];
        snprintf(cmd, sizeof cmd, "gzip -dc '%s' > '%s' && cp '%s' '%s'",
                 ty_test_src("data/tokenizers/qwen3/tokenizer.json.gz"), path,
                 ty_test_src("data/tokenizers/qwen3/tokenizer_config.json"), ty_test_tmp("tokenizer_config.json"));
        if (ty_test_sh(cmd, NULL) != 0) fprintf(stderr, "cannot decompress the Qwen3 tokenizer\n");
    }
    return path;
}

/* Tokenizes into a fresh array (ty_free). */
static int32_t *tokenize(const struct ty_tokenizer *t, const char *text, size_t len, unsigned flags, size_t *n) {
    size_t need = 0;
    enum ty_status st = ty_tokenize(t, text, len, flags, NULL, 0, &need);
    *n = 0;
    if (st != TY_OK && st != TY_ERR_BUFFER_TOO_SMALL) return NULL;
    int32_t *ids = ty__malloc((need ? need : 1) * sizeof *ids);
    if (ty_tokenize(t, text, len, flags, ids, need, n) != TY_OK) {
        ty_free(ids);
        return NULL;
    }
    return ids;
}

/* Decodes ids with the streaming detokenizer into a NUL-terminated string (ty_free); its length, which a NUL inside
 * the text makes differ from strlen, goes to *len when len is not NULL. */
static char *detokenize_len(const struct ty_tokenizer *t, const int32_t *ids, size_t n, size_t *len_out) {
    struct ty_buf b = {0};
    struct ty_detokenizer st = {0};
    char piece[1 << 18];
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
    char *out = NULL;
    if (len_out) *len_out = b.len;
    ty__buf_finish(&b, &out);
    return out;
}

static char *detokenize(const struct ty_tokenizer *t, const int32_t *ids, size_t n) {
    return detokenize_len(t, ids, n, NULL);
}

static bool ids_equal_json(const int32_t *ids, size_t n, const json_t *want) {
    if (!json_is_array(want) || json_array_size(want) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i)) != ids[i]) return false;
    return true;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Runs every line {"text", key: [ids]} of a JSONL file through `t`; returns the number of lines. */
static int check_jsonl(const struct ty_tokenizer *t, const char *rel, const char *key, unsigned flags,
                       bool check_roundtrip) {
    FILE *f = fopen(ty_test_src(rel), "rb");
    CHECK_MSG(f != NULL, "cannot open %s", rel);
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int n_lines = 0, bad = 0;
    while ((got = getline(&line, &cap, f)) > 0) {
        json_error_t err;
        json_t *v = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &err);
        CHECK_MSG(v != NULL, "%s line %d: %s", rel, n_lines + 1, err.text);
        if (!v) continue;
        n_lines++;
        const json_t *jt = json_object_get(v, "text");
        const char *text = json_string_value(jt);
        size_t len = json_string_length(jt), n;
        int32_t *ids = tokenize(t, text, len, flags, &n);
        bool ok = ids && ids_equal_json(ids, n, json_object_get(v, key));
        if (!ok && bad++ < 5) {
            fprintf(stderr, "%s line %d (%s): ids differ for \"%.80s\": %s\n", rel, n_lines, key, text,
                    ids ? "" : ty_last_error());
            if (ids) print_ids("got", ids, n);
        }
        CHECK(ok);
        if (ids && check_roundtrip) {
            /* decoding gives the text back, or its NFC form where the reference marks no round trip */
            size_t dec_len = 0;
            char *dec = detokenize_len(t, ids, n, &dec_len);
            const json_t *rt = json_object_get(v, "roundtrip");
            uint8_t *nfc = NULL;
            size_t nfc_len = len;
            const char *want = text;
            if (json_is_false(rt) && ty__nfc((const uint8_t *)text, len, &nfc, &nfc_len) == TY_OK) want = (char *)nfc;
            CHECK_MSG(dec && dec_len == nfc_len && !memcmp(dec, want, nfc_len), "%s line %d: decode gave \"%.80s\"",
                      rel, n_lines, dec ? dec : "(error)");
            ty_free(nfc);
            ty_free(dec);
        }
        ty_free(ids);
        json_decref(v);
    }
    free(line);
    fclose(f);
    return n_lines;
}

static char *tiny_json(const char *vocab_extra, const char *merges, const char *added, const char *pre);

/* ==== Reference vectors ==== */

static void test_load(void) {
    double t0 = ty__time_s();
    CHECK_OK(ty_tokenizer_load_json(qwen_json_path(), &qwen));
    if (!qwen) return;
    printf("  loaded Qwen3 tokenizer.json in %.2f s\n", ty__time_s() - t0);
    CHECK(ty_tokenizer_n_vocab(qwen) == 151669);
    CHECK(qwen->n_merges == 151387);
    CHECK(qwen->nfc);
    CHECK(qwen->pre_impl == TOK_PRE_QWEN2);
    CHECK(qwen->pre_name && !strcmp(qwen->pre_name, "qwen2"));
    CHECK(ty_tokenizer_find(qwen, "<|im_end|>") == 151645);
    CHECK(ty_tokenizer_find(qwen, "<think>") == 151667);
    CHECK(ty_tokenizer_find(qwen, "Hello") == 9707);
    CHECK(ty_tokenizer_find(qwen, "no such token at all") == -1);
    CHECK(ty_tokenizer_is_eog(qwen, 151645));
    CHECK(ty_tokenizer_is_eog(qwen, 151643));
    CHECK(!ty_tokenizer_is_eog(qwen, 151644));
    CHECK(!ty_tokenizer_is_eog(qwen, 9707));
    int32_t bos, eos, pad;
    ty__tokenizer_special_ids(qwen, &bos, &eos, &pad);
    CHECK(bos == 151643 && eos == 151645 && pad == 151643);
    CHECK(ty__tokenizer_chat_template(qwen) && strstr(ty__tokenizer_chat_template(qwen), "<|im_start|>"));
    size_t len;
    const char *b = ty_token_bytes(qwen, 9707, &len);
    CHECK(b && len == 5 && !memcmp(b, "Hello", 5));
    b = ty_token_bytes(qwen, 220, &len);
    CHECK(b && len == 1 && b[0] == ' ');
    b = ty_token_bytes(qwen, 151645, &len);
    CHECK(b && len == 10 && !memcmp(b, "<|im_end|>", 10));
    CHECK(ty_token_bytes(qwen, -1, &len) == NULL && len == 0);
    CHECK(ty_token_bytes(qwen, 151669, &len) == NULL);
}

static void test_vectors(void) {
    if (!qwen) return;
    int n = check_jsonl(qwen, "tests/data/tokenizer/vectors.jsonl", "ids", TY_TOKENIZE_SPECIAL, true);
    CHECK(n == 112);
}

/* llama.cpp's test-tokenizer-0 cases for Qwen2's vocabulary: inputs separated by "\n__ggml_vocab_test__\n". */
static int check_llamacpp(const struct ty_tokenizer *t) {
    char *inp = NULL, *outp = NULL;
    size_t n_inp, n_out;
    CHECK_OK(ty__file_read(ty_test_src("tests/data/tokenizer/llamacpp-qwen2.inp"), 1 << 20, &inp, &n_inp));
    CHECK_OK(ty__file_read(ty_test_src("tests/data/tokenizer/llamacpp-qwen2.out"), 1 << 20, &outp, &n_out));
    if (!inp || !outp) return 0;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char *p = inp, *o = outp;
    int cases = 0;
    for (;;) {
        char *end = strstr(p, sep);
        if (!end) break;
        char *eol = strchr(o, '\n');
        CHECK(eol != NULL);
        if (!eol) break;
        *eol = 0;
        size_t n;
        int32_t *ids = tokenize(t, p, (size_t)(end - p), TY_TOKENIZE_SPECIAL, &n);
        /* expected: " id id id" */
        size_t k = 0;
        bool ok = ids != NULL;
        for (char *q = o; ok && *q;) {
            char *next;
            long v = strtol(q, &next, 10);
            if (next == q) break;
            ok = k < n && ids[k] == v;
            k++;
            q = next;
        }
        ok = ok && k == n;
        if (!ok) {
            fprintf(stderr, "llama.cpp case %d \"%.*s\": want%s\n", cases, (int)(end - p), p, o);
            if (ids) print_ids("got", ids, n);
        }
        CHECK(ok);
        ty_free(ids);
        cases++;
        p = end + strlen(sep);
        o = eol + 1;
    }
    ty_free(inp);
    ty_free(outp);
    return cases;
}

static void test_llamacpp(void) {
    if (qwen) CHECK(check_llamacpp(qwen) == 46);
}

static void test_hf_random(void) {
    if (!qwen) return;
    CHECK(check_jsonl(qwen, "tests/data/tokenizer/hf-random.jsonl", "ids", TY_TOKENIZE_SPECIAL, false) == 610);
    CHECK(check_jsonl(qwen, "tests/data/tokenizer/hf-random.jsonl", "ids_split", 0, false) == 610);
}

/* One long call (where the per-call piece cache fills, grows and hits) gives the ids of many short calls: texts
 * joined by <|endoftext|>, which cuts the text into independent segments, three times over. */
static void test_long_call_equals_short_calls(void) {
    if (!qwen) return;
    struct ty_buf big = {0};
    int32_t *want = NULL;
    size_t n_want = 0, cap_want = 0;
    for (int round = 0; round < 3; round++) {
        static const char *files[] = {"tests/data/tokenizer/hf-random.jsonl", "tests/data/tokenizer/vectors.jsonl"};
        for (int f = 0; f < 2; f++) {
            FILE *fp = fopen(ty_test_src(files[f]), "rb");
            char *line = NULL;
            size_t lcap = 0;
            while (fp && getline(&line, &lcap, fp) > 0) {
                json_t *v = json_loads(line, JSON_ALLOW_NUL, NULL);
                const json_t *text = json_object_get(v, "text");
                size_t n;
                int32_t *ids =
                    tokenize(qwen, json_string_value(text), json_string_length(text), TY_TOKENIZE_SPECIAL, &n);
                if (n_want + n + 1 > cap_want) {
                    cap_want = (n_want + n + 1) * 2;
                    want = realloc(want, cap_want * sizeof *want);
                }
                if (ids) memcpy(want + n_want, ids, n * sizeof *ids);
                n_want += n;
                want[n_want++] = 151643;
                ty__buf_append(&big, json_string_value(text), json_string_length(text));
                ty__buf_puts(&big, "<|endoftext|>");
                ty_free(ids);
                json_decref(v);
            }
            free(line);
            if (fp) fclose(fp);
        }
    }
    size_t n;
    int32_t *got = tokenize(qwen, big.data, big.len, TY_TOKENIZE_SPECIAL, &n);
    CHECK(got && n == n_want && !memcmp(got, want, n * sizeof *got));
    ty_free(got);
    free(want);
    ty__buf_free(&big);
}

/* Thousands of added tokens sharing a prefix (Gemma-style "<unusedN>"): longest match through the trie. */
static void test_many_added(void) {
    struct ty_buf added = {0};
    for (int i = 0; i < 3000; i++)
        ty__buf_printf(&added, "%s{\"id\": %d, \"content\": \"<unused%d>\", \"special\": true}", i ? ", " : "", 256 + i,
                       i);
    ty__buf_puts(&added, ", {\"id\": 3256, \"content\": \"<unused1>x\", \"special\": false, \"normalized\": false}");
    char *json = tiny_json("", "", added.data, NULL);
    ty__buf_free(&added);
    struct ty_tokenizer *t = NULL;
    if (json) CHECK_OK(ty__tokenizer_load_hf_mem(json, strlen(json), NULL, 0, NULL, 0, &t));
    ty_free(json);
    if (!t) return;
    const char *text = "a<unused2999><unused1>x<unused1><unused12<unused>";
    size_t n;
    int32_t *ids = tokenize(t, text, strlen(text), TY_TOKENIZE_SPECIAL, &n);
    /* a, <unused2999>, <unused1>x (the longest match), <unused1>, then "<unused12<unused>" byte by byte */
    CHECK(ids && n >= 4 && ids[0] == 'a' && ids[1] == 256 + 2999 && ids[2] == 3256 && ids[3] == 257);
    bool no_more = true;
    for (size_t i = 4; ids && i < n; i++) no_more &= ids[i] < 256;
    CHECK(no_more && n == 4 + strlen("<unused12<unused>"));
    ty_free(ids);
    ids = tokenize(t, text, strlen(text), 0, &n); /* without the flag only the non-special one is found */
    CHECK(ids && n == 1 + strlen("<unused2999>") + 1 + strlen("<unused1><unused12<unused>") && ids[1 + 12] == 3256);
    ty_free(ids);
    ty_tokenizer_free(t);
}

static void test_added_flags(void) {
    struct ty_tokenizer *t = NULL;
    CHECK_OK(ty_tokenizer_load_json(ty_test_src("tests/data/tokenizer/tiny-flags.json"), &t));
    if (!t) return;
    CHECK(check_jsonl(t, "tests/data/tokenizer/tiny-flags.jsonl", "ids", TY_TOKENIZE_SPECIAL, false) == 9);
    CHECK(check_jsonl(t, "tests/data/tokenizer/tiny-flags.jsonl", "ids_split", 0, false) == 9);
    ty_tokenizer_free(t);
}

/* ==== Special tokens, invalid input, buffers ==== */

static void test_special_on_off(void) {
    if (!qwen) return;
    const char *text = "<|im_start|>user\nHi<think>x</think><|im_end|>";
    size_t n_on, n_off;
    int32_t *on = tokenize(qwen, text, strlen(text), TY_TOKENIZE_SPECIAL, &n_on);
    int32_t *off = tokenize(qwen, text, strlen(text), 0, &n_off);
    CHECK(on && off);
    if (on && off) {
        CHECK(n_on == 8 && on[0] == 151644 && on[n_on - 1] == 151645);
        bool has_special = false, has_think = false;
        for (size_t i = 0; i < n_off; i++) {
            has_special |= off[i] == 151644 || off[i] == 151645;
            has_think |= off[i] == 151667;
        }
        CHECK(!has_special); /* special tokens are plain text without the flag ... */
        CHECK(has_think);    /* ... while non-special added tokens are still recognised, as split_special_tokens does */
        char *dec = detokenize(qwen, off, n_off);
        CHECK(dec && !strcmp(dec, text));
        ty_free(dec);
    }
    ty_free(on);
    ty_free(off);
}

static void test_invalid_utf8(void) {
    if (!qwen) return;
    static const struct {
        const char *s;
        size_t off;
    } bad[] = {
        {"abc\xff", 3},        {"\x80", 0},
        {"ok \xc0\xaf", 3},    {"\xed\xa0\x80 surrogate", 0},
        {"trunc \xe2\x82", 6}, {"\xf4\x90\x80\x80", 0},
        {"x\xe2\x28\xa1", 1},  {"<|im_end|>\xfe", 10},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t ids[64];
        size_t n = 99;
        CHECK_STATUS(ty_tokenize(qwen, bad[i].s, strlen(bad[i].s), TY_TOKENIZE_SPECIAL, ids, 64, &n),
                     TY_ERR_INVALID_ARG);
        char want[32];
        snprintf(want, sizeof want, "offset %zu", bad[i].off);
        CHECK_MSG(msg_has(want), "case %zu: %s", i, ty_last_error());
        CHECK(n == 0);
    }
    /* a NUL byte is valid text */
    int32_t ids[8];
    size_t n;
    CHECK_OK(ty_tokenize(qwen, "a\0b", 3, 0, ids, 8, &n));
    CHECK(n == 3);
    CHECK_OK(ty_tokenize(qwen, "", 0, 0, NULL, 0, &n));
    CHECK(n == 0);
    CHECK_STATUS(ty_tokenize(NULL, "a", 1, 0, ids, 8, &n), TY_ERR_INVALID_ARG);
}

static void test_buffer_contract(void) {
    if (!qwen) return;
    const char *text = "Hello world, this is Qwen.";
    int32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = -7;
    size_t n = 0;
    CHECK_STATUS(ty_tokenize(qwen, text, strlen(text), 0, ids, 3, &n), TY_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 8);
    bool untouched = true;
    for (int i = 0; i < 64; i++) untouched &= ids[i] == -7;
    CHECK(untouched);
    CHECK_OK(ty_tokenize(qwen, text, strlen(text), 0, ids, n, &n));
    CHECK(n == 8 && ids[0] == 9707 && ids[1] == 1879 && ids[7] == 13);
}

/* ==== Detokenizer ==== */

static void push_str(const struct ty_tokenizer *t, struct ty_detokenizer *st, int32_t id, const char *want) {
    char out[64];
    size_t n;
    CHECK_OK(ty_detokenize_push(t, st, id, out, sizeof out, &n));
    CHECK_MSG(n == strlen(want) && !memcmp(out, want, n) && out[n] == 0, "token %d gave \"%.*s\", want \"%s\"", id,
              (int)n, out, want);
}

static void test_detok_stream(void) {
    if (!qwen) return;
    const int32_t *bid = qwen->byte_id;
    struct ty_detokenizer st = {0};
    /* 🦙 = F0 9F A6 99, one byte token at a time */
    push_str(qwen, &st, bid[0xF0], "");
    push_str(qwen, &st, bid[0x9F], "");
    push_str(qwen, &st, bid[0xA6], "");
    push_str(qwen, &st, bid[0x99], "\xF0\x9F\xA6\x99");
    CHECK(st.n_pending == 0);
    /* the emoji as the reference tokenizes it, then split across a later token */
    size_t n;
    int32_t *ids = tokenize(qwen, "a🦙b", strlen("a🦙b"), 0, &n);
    char *dec = ids ? detokenize(qwen, ids, n) : NULL;
    CHECK(dec && !strcmp(dec, "a🦙b"));
    ty_free(dec);
    ty_free(ids);
    /* a stray continuation byte, an invalid lead byte: one U+FFFD each, without waiting */
    push_str(qwen, &st, bid[0x80], "\xEF\xBF\xBD");
    push_str(qwen, &st, bid[0xFF], "\xEF\xBF\xBD");
    /* a prefix cut by a non-continuation: one U+FFFD for the maximal subpart, then the character */
    push_str(qwen, &st, bid[0xF0], "");
    push_str(qwen, &st, bid[0x9F], "");
    push_str(qwen, &st, bid['a'],
             "\xEF\xBF\xBD"
             "a");
    push_str(qwen, &st, bid[0xE2], "");
    push_str(qwen, &st, 151645, "\xEF\xBF\xBD<|im_end|>");
    /* an unfinished character at the end becomes U+FFFD at flush */
    push_str(qwen, &st, bid[0xE2], "");
    push_str(qwen, &st, bid[0x82], "");
    char out[16];
    CHECK_OK(ty_detokenize_flush(&st, out, sizeof out, &n));
    CHECK(n == 3 && !memcmp(out, "\xEF\xBF\xBD", 3) && st.n_pending == 0);
    CHECK_OK(ty_detokenize_flush(&st, out, sizeof out, &n));
    CHECK(n == 0 && out[0] == 0);
    /* buffer too small: state unchanged, needed length reported */
    struct ty_detokenizer st2 = {0};
    int32_t hello = 9707;
    CHECK_STATUS(ty_detokenize_push(qwen, &st2, hello, out, 5, &n), TY_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 5);
    CHECK_OK(ty_detokenize_push(qwen, &st2, hello, out, 6, &n));
    CHECK(n == 5 && !strcmp(out, "Hello"));
    CHECK_STATUS(ty_detokenize_push(qwen, &st2, 999999, out, sizeof out, &n), TY_ERR_INVALID_ARG);
    /* Hugging Face's decode of the same broken bytes: Python's errors="replace" gives the same text */
    int32_t broken[] = {bid[0xE2], bid[0x82], bid['x'], bid[0xC3], bid[0xA9], bid[0xED], bid[0xA0], bid[0x80]};
    dec = detokenize(qwen, broken, 8);
    CHECK(dec && !strcmp(dec, "\xEF\xBF\xBD"
                              "x\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
    ty_free(dec);
}

/* Decoding gives what the reference's decode gives, broken UTF-8 included (one U+FFFD per maximal ill-formed
 * subpart, as Rust's from_utf8_lossy does). */
static void test_hf_decode(void) {
    if (!qwen) return;
    FILE *f = fopen(ty_test_src("tests/data/tokenizer/hf-decode.jsonl"), "rb");
    CHECK(f != NULL);
    char *line = NULL;
    size_t cap = 0;
    int n_lines = 0, bad = 0;
    while (f && getline(&line, &cap, f) > 0) {
        json_t *v = json_loads(line, JSON_ALLOW_NUL, NULL);
        const json_t *ids = json_object_get(v, "ids"), *text = json_object_get(v, "text");
        int32_t buf[64];
        size_t n = json_array_size(ids);
        for (size_t i = 0; i < n && i < 64; i++) buf[i] = (int32_t)json_integer_value(json_array_get(ids, i));
        size_t len = 0;
        char *dec = n <= 64 ? detokenize_len(qwen, buf, n, &len) : NULL;
        bool ok = dec && len == json_string_length(text) && !memcmp(dec, json_string_value(text), len);
        if (!ok && bad++ < 3) fprintf(stderr, "hf-decode line %d: got \"%s\"\n", n_lines + 1, dec ? dec : "(error)");
        CHECK(ok);
        ty_free(dec);
        json_decref(v);
        n_lines++;
    }
    free(line);
    if (f) fclose(f);
    CHECK(n_lines == 400);
}

/* ==== Fast paths against their references ==== */

struct pieces {
    size_t off[4096], len[4096];
    size_t n;
    const uint8_t *base;
};

static enum ty_status collect(void *ctx, const uint8_t *p, size_t len) {
    struct pieces *ps = ctx;
    if (ps->n < 4096) {
        ps->off[ps->n] = (size_t)(p - ps->base);
        ps->len[ps->n] = len;
    }
    ps->n++;
    return TY_OK;
}

static uint32_t rng_next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/* Random text from characters the Qwen regexes treat differently (letters, marks, numbers, each kind of white space,
 * apostrophes and the letters of contractions, long s, punctuation, symbols, emoji). */
static size_t random_text(uint64_t *rng, char *out, size_t max_chars) {
    static const uint32_t pool[] = {
        'a',     'b',     's',     'S',     't',     'r',     'e',    'E',    'v',     'm',     'l',    'L',
        'd',     'D',     'x',     '\'',    '\'',    ' ',     ' ',    ' ',    '\t',    '\n',    '\r',   0x0B,
        0x0C,    0x1C,    '0',     '7',     '.',     ',',     '!',    '-',    '<',     '|',     '_',    0x85,
        0xA0,    0x17F,   0x301,   0x308,   0x3A9,   0x416,   0x5D0,  0x627,  0x660,   0x915,   0x93F,  0x94D,
        0xE01,   0xE31,   0x1680,  0x180E,  0x2000,  0x2009,  0x200B, 0x2028, 0x2029,  0x202F,  0x205F, 0x2167,
        0x2460,  0x3000,  0x3042,  0x3099,  0x4E2D,  0xAC00,  0xFEFF, 0xFF21, 0x1F999, 0x1F600, 0x200D, 0xFE0F,
        0x10400, 0x1D7CE, 0x1E290, 0x11F04, 0x31350, 0x1E4D0, 0x1DF6, 0x0EBA, 0xE0100, 0x1D2C0, /* Unicode 14 and 15
                                                                                                   additions */
    };
    size_t n = 1 + rng_next(rng) % max_chars, o = 0;
    for (size_t i = 0; i < n; i++) o += utf8_encode(pool[rng_next(rng) % (sizeof pool / sizeof pool[0])], out + o);
    return o;
}

static void test_pretokenizer_fast_vs_regex(void) {
    if (!qwen) return;
    struct ty_tokenizer *t35 = NULL;
    CHECK_OK(ty__tok_create(1, &t35));
    if (!t35) return;
    CHECK_OK(ty__tok_set_regex(t35, regex_qwen35, strlen(regex_qwen35)));
    CHECK(t35->pre_impl == TOK_PRE_QWEN35);
    static struct pieces fast, ref;
    struct tok_split sp = {0};
    char text[4096];
    uint64_t rng = 12345;
    int mismatches = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = random_text(&rng, text, iter < 19000 ? 24 : 600);
        for (int which = 0; which < 2; which++) {
            const struct ty_tokenizer *t = which ? t35 : qwen;
            fast.n = ref.n = 0;
            fast.base = ref.base = (const uint8_t *)text;
            CHECK_OK(ty__tok_pretokenize(t, which ? TOK_PRE_QWEN35 : TOK_PRE_QWEN2, &sp, (const uint8_t *)text, n,
                                         collect, &fast));
            CHECK_OK(ty__tok_pretokenize(t, TOK_PRE_REGEX, &sp, (const uint8_t *)text, n, collect, &ref));
            bool same = fast.n == ref.n;
            for (size_t i = 0; same && i < fast.n && i < 4096; i++)
                same = fast.off[i] == ref.off[i] && fast.len[i] == ref.len[i];
            if (!same && mismatches++ < 3) {
                fprintf(stderr, "pre-tokenizer (%s) differs on:", which ? "qwen35" : "qwen2");
                for (size_t i = 0; i < n; i++) fprintf(stderr, " %02x", (uint8_t)text[i]);
                fprintf(stderr, "\n");
            }
            CHECK(same);
        }
    }
    ty__tok_split_free(&sp);
    ty_tokenizer_free(t35);
}

static void test_bpe_small_vs_heap(void) {
    if (!qwen) return;
    uint64_t rng = 777;
    char text[8192];
    size_t saved = bpe_small_max;
    for (int iter = 0; iter < 300; iter++) {
        /* long runs of letters make long words, which is where the two BPE paths differ in method */
        size_t n = 0, words = 1 + rng_next(&rng) % 8;
        for (size_t w = 0; w < words; w++) {
            size_t len = 1 + rng_next(&rng) % 120;
            static const char *frag[] = {"th", "e", "ing", "a", "on", "中", "é", "x", "ll", "ab", "s"};
            for (size_t k = 0; k < len && n + 8 < sizeof text; k++) {
                const char *f = frag[rng_next(&rng) % (sizeof frag / sizeof frag[0])];
                memcpy(text + n, f, strlen(f));
                n += strlen(f);
            }
            text[n++] = ' ';
        }
        size_t n_small, n_heap;
        bpe_small_max = SIZE_MAX;
        int32_t *a = tokenize(qwen, text, n, 0, &n_small);
        bpe_small_max = 0;
        int32_t *b = tokenize(qwen, text, n, 0, &n_heap);
        bpe_small_max = saved;
        CHECK(a && b && n_small == n_heap && !memcmp(a, b, n_small * sizeof *a));
        ty_free(a);
        ty_free(b);
    }
}

/* A pre-token equal to a vocabulary token maps to it only when BPE of its bytes gives that token; the answer is
 * learnt on first sight. Every token, tokenized twice (learning, then using the answer), gives the same ids. */
static void test_whole_token_shortcut(void) {
    if (!qwen) return;
    int differ = 0, not_direct = 0, checked = 0;
    struct tok_split sp = {0};
    for (int32_t id = 0; id < qwen->n_vocab; id++) {
        const struct tok_entry *e = &qwen->tokens[id];
        const uint8_t *s = (const uint8_t *)qwen->pool + e->off;
        if (!e->in_vocab || e->len < 2 || ty__utf8_check(s, e->len) != e->len || !ty__nfc_quick(s, e->len)) continue;
        /* only tokens that are one pre-token on their own */
        static struct pieces ps;
        ps.n = 0;
        ps.base = s;
        ty__tok_pretokenize(qwen, qwen->pre_impl, &sp, s, e->len, collect, &ps);
        if (ps.n != 1) continue;
        size_t na, nb;
        int32_t *a = tokenize(qwen, (const char *)s, e->len, 0, &na);
        uint8_t learnt = atomic_load(&slot_find(qwen, s, e->len, hash_bytes(s, e->len))->direct);
        int32_t *b = tokenize(qwen, (const char *)s, e->len, 0, &nb);
        checked++;
        if (!a || !b || na != nb || memcmp(a, b, na * sizeof *a)) differ++;
        bool single = na == 1 && a && a[0] == id;
        if (learnt != (single ? TOK_DIRECT_YES : TOK_DIRECT_NO)) differ++;
        not_direct += !single;
        ty_free(a);
        ty_free(b);
    }
    ty__tok_split_free(&sp);
    printf("  %d whole-token pre-tokens checked, %d of them not reached by BPE\n", checked, not_direct);
    CHECK(checked > 100000);
    CHECK(differ == 0);
    /* a token BPE does not reach: "abc" is in the vocabulary, but a+b merges first and ab+c is no merge */
    char *json = tiny_json(", \"ab\": 256, \"bc\": 257, \"abc\": 258", "\"a b\", \"b c\", \"a bc\"", "", NULL);
    struct ty_tokenizer *t = NULL;
    if (json) CHECK_OK(ty__tokenizer_load_hf_mem(json, strlen(json), NULL, 0, NULL, 0, &t));
    ty_free(json);
    if (!t) return;
    for (int round = 0; round < 2; round++) {
        size_t n;
        int32_t *ids = tokenize(t, "abc", 3, 0, &n);
        CHECK(ids && n == 2 && ids[0] == 256 && ids[1] == 'c');
        CHECK(atomic_load(&slot_find(t, "abc", 3, hash_bytes("abc", 3))->direct) == TOK_DIRECT_NO);
        ty_free(ids);
    }
    ty_tokenizer_free(t);
    /* with ignore_merges (Llama 3's tokenizers), a pre-token in the vocabulary maps to it whatever the merges say */
    json = tiny_json(", \"ab\": 256, \"bc\": 257, \"abc\": 258", "\"a b\", \"b c\", \"a bc\"", "", NULL);
    char *model = json ? strstr(json, "\"type\": \"BPE\",") : NULL;
    t = NULL;
    if (model) {
        struct ty_buf b = {0};
        ty__buf_append(&b, json, (size_t)(model - json));
        ty__buf_puts(&b, "\"ignore_merges\": true, ");
        ty__buf_puts(&b, model);
        CHECK_OK(ty__tokenizer_load_hf_mem(b.data, b.len, NULL, 0, NULL, 0, &t));
        ty__buf_free(&b);
    }
    ty_free(json);
    if (!t) return;
    size_t n;
    int32_t *ids = tokenize(t, "abc abcd", 8, 0, &n);
    CHECK(ids && n == 5 && ids[0] == 258 && ids[1] == ' ' && ids[2] == 256 && ids[3] == 'c' && ids[4] == 'd');
    ty_free(ids);
    ty_tokenizer_free(t);
}

/* The generated character data (tokenizer-unicode.c) against the system's libraries: every code point the NFC table
 * lists is one utf8proc's NFC acts on too (the reverse does not hold: marks added since Unicode 9.0 are inert to the
 * reference), and the letter/number/mark classes are PCRE2's, whose Unicode 14.0 is the reference's Oniguruma's. */
static void test_unicode_tables(void) {
    /* the "second" code points of canonical compositions: the last of every canonical decomposition */
    static uint8_t second[0x110000 / 8];
    memset(second, 0, sizeof second);
    for (utf8proc_int32_t cp = 0; cp < 0x110000; cp++) {
        utf8proc_int32_t dec[8];
        int last;
        utf8proc_ssize_t n = utf8proc_decompose_char(cp, dec, 8, UTF8PROC_DECOMPOSE, &last);
        if (n >= 2 && n <= 8) second[dec[n - 1] / 8] |= (uint8_t)(1 << (dec[n - 1] % 8));
    }
    int bad = 0;
    size_t n_unstable = 0;
    for (size_t r = 0; r < ty__uni_nfc_unstable_count; r++) {
        CHECK(ty__uni_nfc_unstable[r][0] <= ty__uni_nfc_unstable[r][1]);
        if (r) CHECK(ty__uni_nfc_unstable[r - 1][1] < ty__uni_nfc_unstable[r][0]);
        for (uint32_t cp = ty__uni_nfc_unstable[r][0]; cp <= ty__uni_nfc_unstable[r][1]; cp++) {
            char s[4];
            size_t len = utf8_encode(cp, s);
            utf8proc_uint8_t *norm = NULL;
            utf8proc_ssize_t nl =
                utf8proc_map((const uint8_t *)s, (utf8proc_ssize_t)len, &norm, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            bool acts = nl != (utf8proc_ssize_t)len || memcmp(norm, s, len) ||
                        utf8proc_get_property((utf8proc_int32_t)cp)->combining_class ||
                        (second[cp / 8] & (1 << (cp % 8)));
            free(norm);
            if (!acts && bad++ < 5) fprintf(stderr, "U+%04X is listed as NFC-unstable but utf8proc leaves it\n", cp);
            CHECK(acts);
            CHECK(!nfc_stable_cp(cp));
            n_unstable++;
        }
    }
    CHECK(n_unstable > 1900); /* 2001 in Unicode 9.0 */
    CHECK(nfc_stable_cp('a') && nfc_stable_cp(0x4E2D) && !nfc_stable_cp(0x301) && nfc_stable_cp(0x1DF6));
    /* classes */
    int en;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR) "^(?:(\\p{L})|(\\p{N})|(\\p{M}))", PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &en, &eo, NULL);
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    CHECK(re && md);
    if (re) pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    int class_bad = 0;
    for (uint32_t cp = 0; re && md && cp < 0xE0200; cp++) {
        if ((cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x40000 && cp < 0xE0000)) continue;
        char s[4];
        size_t len = utf8_encode(cp, s);
        unsigned want = 0;
        if (pcre2_match(re, (PCRE2_SPTR)s, len, 0, 0, md, NULL) > 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            want = ov[2] != PCRE2_UNSET ? 1 : ov[4] != PCRE2_UNSET ? 2 : 3;
        }
        if (uni_class(cp) != want && class_bad++ < 5)
            fprintf(stderr, "U+%04X: class %u in the table, %u in PCRE2\n", cp, uni_class(cp), want);
    }
    CHECK(class_bad == 0);
    if (md) pcre2_match_data_free(md);
    if (re) pcre2_code_free(re);

    /* normalising only the unstable stretches gives what utf8proc gives for the whole text */
    static const uint32_t pool[] = {'a',     'e',    ' ',     'A',    0x301,  0x308,  0x323, 0x327,  0x1100, 0x1161,
                                    0x11A8,  0xAC00, 0x304B,  0x3099, 0x212B, 0xFB01, 0x958, 0x1E9B, 0x4E2D, 0x3A9,
                                    0x1F600, 0x0F73, 0x1D15E, 0x2126, 0x345,  0x5B0,  0x5B7, 0x1EA0};
    uint64_t rng = 99;
    for (int iter = 0; iter < 3000; iter++) {
        char text[512];
        size_t len = 0, chars = 1 + rng_next(&rng) % 60;
        for (size_t k = 0; k < chars; k++)
            len += utf8_encode(pool[rng_next(&rng) % (sizeof pool / sizeof *pool)], text + len);
        uint8_t *mine = NULL, *ref = NULL;
        size_t mine_len = 0;
        CHECK_OK(ty__nfc((const uint8_t *)text, len, &mine, &mine_len));
        utf8proc_ssize_t r =
            utf8proc_map((const uint8_t *)text, (utf8proc_ssize_t)len, &ref, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        CHECK(mine && r >= 0 && (size_t)r == mine_len && !memcmp(mine, ref, mine_len));
        ty_free(mine);
        free(ref);
    }
    CHECK(ty__nfc_quick((const uint8_t *)"plain ascii", 11));
    CHECK(ty__nfc_quick((const uint8_t *)"中文 и ελληνικά", strlen("中文 и ελληνικά")));
    CHECK(!ty__nfc_quick((const uint8_t *)"e\xcc\x81", 3));
}

static void test_bytelevel_alphabet(void) {
    bool seen[324] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = ty__byte_to_cp((uint8_t)b);
        CHECK(cp < 324 && !seen[cp]);
        if (cp < 324) seen[cp] = true;
        CHECK(ty__cp_to_byte(cp) == b);
    }
    CHECK(ty__byte_to_cp(' ') == 0x120);  /* Ġ */
    CHECK(ty__byte_to_cp('\n') == 0x10A); /* Ċ */
    CHECK(ty__byte_to_cp('A') == 'A');
    CHECK(ty__cp_to_byte(' ') == -1);
    char raw[16];
    size_t n;
    CHECK(ty__bytelevel_decode("\xc4\xa0Hello", 7, raw, &n) && n == 6 && !memcmp(raw, " Hello", 6));
    CHECK(!ty__bytelevel_decode("a b", 3, raw, &n));
}

static void test_long_inputs(void) {
    if (!qwen) return;
    /* a megabyte of one character class each: linear time, no regex or stack trouble */
    size_t len = 1 << 20;
    char *s = ty__malloc(len);
    if (!s) return;
    const char fill[] = {' ', 'a', '\n', '7', '!'};
    for (size_t k = 0; k < sizeof fill; k++) {
        memset(s, fill[k], len);
        size_t n;
        int32_t *ids = tokenize(qwen, s, len, 0, &n);
        CHECK_MSG(ids && n > 0, "1 MiB of '%c': %s", fill[k], ty_last_error());
        char *dec = ids ? detokenize(qwen, ids, n) : NULL;
        CHECK(dec && strlen(dec) == len && !memcmp(dec, s, len));
        ty_free(dec);
        ty_free(ids);
    }
    ty_free(s);
}

/* ==== GGUF ==== */

static enum ty_status write_gguf(const struct ty_tokenizer *t, const char *path, const char *override_key,
                                 int64_t override_val) {
    struct ty_gguf_writer *w;
    TY_TRY(ty__gguf_writer_init(&w));
    enum ty_status st = ty__gguf_writer_set_str(w, "general.architecture", "qwen3");
    if (st == TY_OK) st = ty__tokenizer_to_gguf(t, w);
    if (st == TY_OK && override_key) st = ty__gguf_writer_set_u32(w, override_key, (uint32_t)override_val);
    if (st == TY_OK) st = ty__gguf_writer_begin(w, path);
    if (st == TY_OK) st = ty__gguf_writer_finish(w);
    ty__gguf_writer_free(w);
    return st;
}

static void test_gguf_roundtrip(void) {
    if (!qwen) return;
    const char *path = ty_test_tmp("qwen3-tokenizer.gguf");
    CHECK_OK(write_gguf(qwen, path, NULL, 0));
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(path, &g));
    if (!g) return;
    struct ty_gguf_str s;
    CHECK_OK(ty__gguf_get_str(g, "tokenizer.ggml.pre", &s));
    CHECK(s.len == 5 && !memcmp(s.data, "qwen2", 5));
    CHECK_OK(ty__gguf_arr_str(g, "tokenizer.ggml.tokens", 220, &s));
    CHECK(s.len == 2 && !memcmp(s.data, "\xc4\xa0", 2)); /* "Ġ", as llama.cpp writes it */
    CHECK_OK(ty__gguf_arr_str(g, "tokenizer.ggml.merges", 0, &s));
    CHECK(s.len == 5 && !memcmp(s.data, "\xc4\xa0 \xc4\xa0", 5));
    int64_t v;
    CHECK_OK(ty__gguf_arr_int(g, "tokenizer.ggml.token_type", 151644, &v));
    CHECK(v == TOK_TYPE_CONTROL);
    CHECK_OK(ty__gguf_arr_int(g, "tokenizer.ggml.token_type", 151659, &v)); /* <|fim_prefix|> looks special */
    CHECK(v == TOK_TYPE_CONTROL);
    CHECK_OK(ty__gguf_arr_int(g, "tokenizer.ggml.token_type", 151667, &v)); /* <think> */
    CHECK(v == TOK_TYPE_USER_DEFINED);
    CHECK_OK(ty__gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v));
    CHECK(v == 151645);
    CHECK_OK(ty__gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v));
    CHECK(v == 151643);
    CHECK_OK(ty__gguf_get_int(g, "tokenizer.ggml.padding_token_id", &v));
    CHECK(v == 151643);
    bool add_bos = true;
    CHECK_OK(ty__gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos));
    CHECK(!add_bos);
    CHECK_OK(ty__tokenizer_from_gguf(g, &qwen_gguf));
    ty__gguf_close(g);
    if (!qwen_gguf) return;
    CHECK(qwen_gguf->n_vocab == qwen->n_vocab && qwen_gguf->n_merges == qwen->n_merges);
    bool same = true;
    for (int32_t id = 0; id < qwen->n_vocab; id++) {
        size_t la, lb;
        const char *a = ty_token_bytes(qwen, id, &la), *b = ty_token_bytes(qwen_gguf, id, &lb);
        same &= a && b && la == lb && !memcmp(a, b, la);
    }
    CHECK(same);
    CHECK(ty_tokenizer_is_eog(qwen_gguf, 151645) && ty_tokenizer_is_eog(qwen_gguf, 151643));
    CHECK(ty__tokenizer_chat_template(qwen_gguf) &&
          !strcmp(ty__tokenizer_chat_template(qwen_gguf), ty__tokenizer_chat_template(qwen)));
    CHECK(check_jsonl(qwen_gguf, "tests/data/tokenizer/vectors.jsonl", "ids", TY_TOKENIZE_SPECIAL, true) == 112);
    CHECK(check_llamacpp(qwen_gguf) == 46);
    CHECK(check_jsonl(qwen_gguf, "tests/data/tokenizer/hf-random.jsonl", "ids", TY_TOKENIZE_SPECIAL, false) == 610);
}

/* ==== Threads ==== */

struct thread_job {
    const struct ty_tokenizer *t;
    json_t *cases; /* array of {"text", "ids"} */
    int bad;
};

static void *thread_main(void *arg) {
    struct thread_job *job = arg;
    for (int round = 0; round < 10; round++) {
        for (size_t i = 0; i < json_array_size(job->cases); i++) {
            const json_t *c = json_array_get(job->cases, i), *text = json_object_get(c, "text");
            size_t n;
            int32_t *ids = tokenize(job->t, json_string_value(text), json_string_length(text), TY_TOKENIZE_SPECIAL, &n);
            job->bad += !ids || !ids_equal_json(ids, n, json_object_get(c, "ids"));
            ty_free(ids);
        }
    }
    return NULL;
}

/* One tokenizer, fresh from GGUF (nothing learnt yet), shared by four threads tokenizing the reference texts. */
static void test_threads(void) {
    struct ty_tokenizer *t = NULL;
    CHECK_OK(ty__tokenizer_load_gguf_file(ty_test_tmp("qwen3-tokenizer.gguf"), &t));
    if (!t) return;
    json_t *cases = json_array();
    FILE *f = fopen(ty_test_src("tests/data/tokenizer/hf-random.jsonl"), "rb");
    char *line = NULL;
    size_t cap = 0;
    while (f && getline(&line, &cap, f) > 0 && json_array_size(cases) < 300)
        json_array_append_new(cases, json_loads(line, JSON_ALLOW_NUL, NULL));
    free(line);
    if (f) fclose(f);
    CHECK(json_array_size(cases) == 300);
    struct thread_job jobs[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        jobs[k] = (struct thread_job){t, cases, 0};
        CHECK(pthread_create(&th[k], NULL, thread_main, &jobs[k]) == 0);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        CHECK(jobs[k].bad == 0);
    }
    json_decref(cases);
    ty_tokenizer_free(t);
}

static void test_pad_vocab(void) {
    struct ty_tokenizer *t = NULL;
    CHECK_OK(ty_tokenizer_load_json(ty_test_src("tests/data/tokenizer/tiny-flags.json"), &t));
    if (!t) return;
    CHECK(t->n_vocab == 268);
    CHECK_OK(ty__tokenizer_pad_vocab(t, 300));
    CHECK(ty_tokenizer_n_vocab(t) == 300);
    size_t len = 9;
    const char *b = ty_token_bytes(t, 299, &len);
    CHECK(b && len == 0); /* padding decodes to nothing */
    CHECK_STATUS(ty__tokenizer_pad_vocab(t, 10), TY_ERR_INVALID_ARG);
    const char *path = ty_test_tmp("tiny-padded.gguf");
    CHECK_OK(write_gguf(t, path, NULL, 0));
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(path, &g));
    if (g) {
        struct ty_gguf_str s;
        int64_t v;
        CHECK_OK(ty__gguf_arr_str(g, "tokenizer.ggml.tokens", 299, &s));
        CHECK(s.len == 8 && !memcmp(s.data, "[PAD299]", 8));
        CHECK_OK(ty__gguf_arr_int(g, "tokenizer.ggml.token_type", 299, &v));
        CHECK(v == TOK_TYPE_UNUSED);
        struct ty_tokenizer *t2 = NULL;
        CHECK_OK(ty__tokenizer_from_gguf(g, &t2));
        if (t2) {
            /* GGUF keeps ids, bytes and merges (not lstrip/rstrip/single_word, which llama.cpp does not store) */
            CHECK(t2->n_vocab == 300);
            const char *text = "hello hello  the\n[CLS][CLS] [SEP]x";
            size_t na, nb;
            int32_t *a = tokenize(t, text, strlen(text), TY_TOKENIZE_SPECIAL, &na);
            int32_t *b2 = tokenize(t2, text, strlen(text), TY_TOKENIZE_SPECIAL, &nb);
            CHECK(a && b2 && na == 11 && na == nb && !memcmp(a, b2, na * sizeof *a));
            ty_free(a);
            ty_free(b2);
            ty_tokenizer_free(t2);
        }
        ty__gguf_close(g);
    }
    ty_tokenizer_free(t);
}

/* Writes the tiny tokenizer with one key overridden (u32) or removed-by-type-change, and expects from_gguf to fail
 * naming `want`. */
static void expect_gguf_error(const struct ty_tokenizer *t, const char *key, int64_t val, const char *want) {
    const char *path = ty_test_tmp("bad.gguf");
    CHECK_OK(write_gguf(t, path, key, val));
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(path, &g));
    if (!g) return;
    struct ty_tokenizer *out = (struct ty_tokenizer *)1;
    enum ty_status st = ty__tokenizer_from_gguf(g, &out);
    CHECK_MSG(st != TY_OK && out == NULL && msg_has(want), "%s=%lld: %s (%s)", key, (long long)val, ty_status_str(st),
              ty_last_error());
    ty__gguf_close(g);
}

static void expect_gguf_writer_error(const struct ty_tokenizer *t, void (*edit)(struct ty_gguf_writer *),
                                     const char *want) {
    const char *path = ty_test_tmp("bad2.gguf");
    struct ty_gguf_writer *w;
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__tokenizer_to_gguf(t, w));
    edit(w);
    CHECK_OK(ty__gguf_writer_begin(w, path));
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(path, &g));
    if (!g) return;
    struct ty_tokenizer *out = NULL;
    enum ty_status st = ty__tokenizer_from_gguf(g, &out);
    CHECK_MSG(st != TY_OK && out == NULL && msg_has(want), "want \"%s\": %s (%s)", want, ty_status_str(st),
              ty_last_error());
    ty__gguf_close(g);
}

static void edit_pre(struct ty_gguf_writer *w) {
    ty__gguf_writer_set_str(w, "tokenizer.ggml.pre", "llama-bpe");
}
static void edit_model(struct ty_gguf_writer *w) {
    ty__gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
}
static void edit_types(struct ty_gguf_writer *w) {
    int32_t types[3] = {1, 1, 1};
    ty__gguf_writer_set_arr(w, "tokenizer.ggml.token_type", TY_GGUF_TYPE_INT32, types, 3);
}
static void edit_type_value(struct ty_gguf_writer *w) {
    int32_t types[268];
    for (int i = 0; i < 268; i++) types[i] = i == 5 ? 9 : 1;
    ty__gguf_writer_set_arr(w, "tokenizer.ggml.token_type", TY_GGUF_TYPE_INT32, types, 268);
}
static void edit_merges(struct ty_gguf_writer *w) {
    const char *m[] = {"h e", "zz q"};
    ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", m, NULL, 2);
}
static void edit_merge_nospace(struct ty_gguf_writer *w) {
    const char *m[] = {"he"};
    ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", m, NULL, 1);
}
static void edit_tokens(struct ty_gguf_writer *w) {
    const char *tok[268];
    for (int i = 0; i < 268; i++) tok[i] = "a";
    tok[3] = "a b"; /* a raw space is not in the byte-level alphabet */
    ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tok, NULL, 268);
}
static void edit_tokens_type(struct ty_gguf_writer *w) {
    uint32_t v[2] = {1, 2};
    ty__gguf_writer_set_arr(w, "tokenizer.ggml.tokens", TY_GGUF_TYPE_UINT32, v, 2);
}

static void test_malformed_gguf(void) {
    struct ty_tokenizer *t = NULL;
    CHECK_OK(ty_tokenizer_load_json(ty_test_src("tests/data/tokenizer/tiny-flags.json"), &t));
    if (!t) return;
    expect_gguf_error(t, "tokenizer.ggml.eos_token_id", 268, "tokenizer.ggml.eos_token_id");
    expect_gguf_error(t, "tokenizer.ggml.bos_token_id", 4000000000, "tokenizer.ggml.bos_token_id");
    expect_gguf_error(t, "tokenizer.ggml.padding_token_id", 1000, "tokenizer.ggml.padding_token_id");
    expect_gguf_writer_error(t, edit_pre, "llama-bpe");
    CHECK(msg_has("qwen2") && msg_has("qwen35")); /* lists what is supported */
    expect_gguf_writer_error(t, edit_model, "tokenizer.ggml.model");
    expect_gguf_writer_error(t, edit_types, "tokenizer.ggml.token_type");
    expect_gguf_writer_error(t, edit_type_value, "tokenizer.ggml.token_type[5]");
    expect_gguf_writer_error(t, edit_merges, "tokenizer.ggml.merges[1]");
    expect_gguf_writer_error(t, edit_merge_nospace, "tokenizer.ggml.merges[0]");
    expect_gguf_writer_error(t, edit_tokens, "tokenizer.ggml.tokens[3]");
    expect_gguf_writer_error(t, edit_tokens_type, "tokenizer.ggml.tokens");
    ty_tokenizer_free(t);
    /* a GGUF without any tokenizer */
    struct ty_gguf_writer *w;
    const char *path = ty_test_tmp("empty.gguf");
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(path, &g));
    if (g) {
        struct ty_tokenizer *out;
        CHECK_STATUS(ty__tokenizer_from_gguf(g, &out), TY_ERR_FORMAT);
        CHECK(msg_has("tokenizer.ggml.model"));
        ty__gguf_close(g);
    }
}

/* ==== Malformed tokenizer.json ==== */

/* A small valid tokenizer.json with `vocab`, `merges` and `extra` members spliced in. */
static char *tiny_json(const char *vocab_extra, const char *merges, const char *added, const char *pre) {
    struct ty_buf b = {0};
    ty__buf_puts(&b, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
    for (int c = 0; c < 256; c++) {
        char s[8];
        size_t n = utf8_encode(ty__byte_to_cp((uint8_t)c), s);
        ty__buf_puts(&b, c ? ", \"" : "\"");
        if (s[0] == '"' || s[0] == '\\') ty__buf_puts(&b, "\\");
        ty__buf_append(&b, s, n);
        ty__buf_printf(&b, "\": %d", c);
    }
    ty__buf_printf(&b, "%s}, \"merges\": [%s]}, \"added_tokens\": [%s], \"normalizer\": {\"type\": \"NFC\"}, ",
                   vocab_extra, merges, added);
    ty__buf_printf(&b, "\"pre_tokenizer\": %s, \"decoder\": {\"type\": \"ByteLevel\"}}",
                   pre ? pre : "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}");
    char *out = NULL;
    ty__buf_finish(&b, &out);
    return out;
}

static void expect_json(const char *json, enum ty_status want_st, const char *want) {
    struct ty_tokenizer *t = (struct ty_tokenizer *)1;
    enum ty_status st = ty__tokenizer_load_hf_mem(json, strlen(json), NULL, 0, NULL, 0, &t);
    if (want_st == TY_OK) {
        CHECK_MSG(st == TY_OK, "%s", ty_last_error());
    } else {
        CHECK_MSG(st == want_st && t == NULL && msg_has(want), "want %s \"%s\", got %s: %s", ty_status_str(want_st),
                  want, ty_status_str(st), ty_last_error());
    }
    if (st == TY_OK) ty_tokenizer_free(t);
}

static void expect_tiny(const char *vocab_extra, const char *merges, const char *added, const char *pre,
                        enum ty_status want_st, const char *want) {
    char *json = tiny_json(vocab_extra, merges, added, pre);
    if (json) expect_json(json, want_st, want);
    ty_free(json);
}

static void test_malformed_json(void) {
    expect_tiny("", "", "", NULL, TY_OK, "");
    expect_tiny(", \"ab\": 256", "\"a b\"", "", NULL, TY_OK, "");
    expect_tiny(", \"ab\": 256", "[\"a\", \"b\"]", "", NULL, TY_OK, "");
    expect_json("{\"model\": ", TY_ERR_FORMAT, "line 1");
    expect_json("[1, 2]", TY_ERR_FORMAT, "JSON object");
    expect_json("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", TY_ERR_UNSUPPORTED, "WordPiece");
    expect_tiny("", "\"a zq\"", "", NULL, TY_ERR_FORMAT, "merge 0 names token \"zq\"");
    expect_tiny("", "\"a b\"", "", NULL, TY_ERR_FORMAT, "merged token");
    expect_tiny("", "\"a b c\"", "", NULL, TY_ERR_FORMAT, "merge 0");
    expect_tiny("", "17", "", NULL, TY_ERR_FORMAT, "merge 0");
    expect_tiny(", \"ab\": -4", "", "", NULL, TY_ERR_FORMAT, "\"ab\"");
    expect_tiny(", \"ab\": 99999999999", "", "", NULL, TY_ERR_FORMAT, "\"ab\"");
    expect_tiny(", \"ab\": 16000000", "", "", NULL, TY_ERR_FORMAT, "too sparse");
    expect_tiny(", \"ab\": 65", "", "", NULL, TY_ERR_FORMAT, "id 65");
    expect_tiny(", \"a b\": 300", "", "", NULL, TY_ERR_FORMAT, "byte-level alphabet");
    expect_tiny("", "", "{\"id\": 65, \"content\": \"<x>\", \"special\": true}", NULL, TY_ERR_FORMAT, "already taken");
    expect_tiny("", "", "{\"id\": 300, \"content\": \"a\", \"special\": true}", NULL, TY_ERR_FORMAT,
                "vocabulary gives it id 97");
    expect_tiny("", "", "{\"id\": -1, \"content\": \"<x>\"}", NULL, TY_ERR_FORMAT, "added_tokens[0]");
    expect_tiny("", "", "{\"id\": 300, \"content\": 5}", NULL, TY_ERR_FORMAT, "added_tokens[0]");
    expect_tiny("", "", "{\"id\": 300, \"content\": \"<x>\", \"special\": \"yes\"}", NULL, TY_ERR_FORMAT, "special");
    expect_tiny("", "", "", "{\"type\": \"Whitespace\"}", TY_ERR_UNSUPPORTED, "Whitespace");
    expect_tiny("", "", "",
                "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
                "{\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", "
                "\"use_regex\": false}]}",
                TY_ERR_UNSUPPORTED, "does not compile");
    expect_tiny("", "", "",
                "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
                "{\"Regex\": \"\\\\s+\"}, \"behavior\": \"Removed\"}, {\"type\": \"ByteLevel\"}]}",
                TY_ERR_UNSUPPORTED, "Removed");
    expect_tiny("", "", "", "{\"type\": \"ByteLevel\", \"add_prefix_space\": true}", TY_ERR_UNSUPPORTED,
                "add_prefix_space");
    expect_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": "
                "\"Lowercase\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
                TY_ERR_UNSUPPORTED, "Lowercase");
    expect_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"byte_fallback\": true}, "
                "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
                TY_ERR_UNSUPPORTED, "byte_fallback");
    expect_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": "
                "\"ByteLevel\"}, \"post_processor\": {\"type\": \"TemplateProcessing\"}}",
                TY_ERR_UNSUPPORTED, "TemplateProcessing");
    expect_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}", TY_ERR_FORMAT,
                "duplicate");
    expect_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", TY_ERR_FORMAT, "empty");
    /* a file over the size limit is refused before parsing */
    struct ty_tokenizer *t;
    CHECK_STATUS(ty__tokenizer_load_hf_mem("{}", TOK_MAX_JSON_BYTES + 1, NULL, 0, NULL, 0, &t), TY_ERR_FORMAT);
    CHECK(msg_has("limit"));
    CHECK_STATUS(ty_tokenizer_load_json(ty_test_tmp("no-such-file.json"), &t), TY_ERR_IO);
    /* a hostile regex fails with an error instead of running for ever */
    char *json = tiny_json("", "", "",
                           "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
                           "{\"Regex\": \"(a+)+$\"}, \"behavior\": \"Isolated\"}, {\"type\": "
                           "\"ByteLevel\", \"use_regex\": false}]}");
    t = NULL;
    CHECK_OK(ty__tokenizer_load_hf_mem(json, strlen(json), NULL, 0, NULL, 0, &t));
    ty_free(json);
    if (t) {
        char text[64];
        memset(text, 'a', 40);
        text[40] = '!';
        int32_t ids[64];
        size_t n;
        CHECK_STATUS(ty_tokenize(t, text, 41, 0, ids, 64, &n), TY_ERR_UNSUPPORTED);
        CHECK(msg_has("regex"));
        ty_tokenizer_free(t);
    }
}

static void test_alloc_failures(void) {
    /* every allocation of loading and tokenizing fails once in turn; nothing crashes or leaks */
    char *json = tiny_json(", \"ab\": 256", "\"a b\"", "{\"id\": 257, \"content\": \"<x>\", \"special\": true}", NULL);
    if (!json) return;
    int failures = 0;
    for (long k = 1; k < 400; k++) {
        struct ty_tokenizer *t = NULL;
        ty__alloc_fail_after(k);
        enum ty_status st = ty__tokenizer_load_hf_mem(json, strlen(json), NULL, 0, NULL, 0, &t);
        int32_t ids[64];
        size_t n;
        if (st == TY_OK) st = ty_tokenize(t, "ab<x> abab", 10, TY_TOKENIZE_SPECIAL, ids, 64, &n);
        ty__alloc_fail_after(0);
        if (st != TY_OK) {
            failures++;
            CHECK(st == TY_ERR_NO_MEMORY);
        }
        ty_tokenizer_free(t);
        if (st == TY_OK) break;
    }
    CHECK(failures > 5);
    ty_free(json);
}

void ty_tests(void) {
    TY_RUN(test_load);
    TY_RUN(test_vectors);
    TY_RUN(test_llamacpp);
    TY_RUN(test_hf_random);
    TY_RUN(test_long_call_equals_short_calls);
    TY_RUN(test_added_flags);
    TY_RUN(test_many_added);
    TY_RUN(test_special_on_off);
    TY_RUN(test_invalid_utf8);
    TY_RUN(test_buffer_contract);
    TY_RUN(test_detok_stream);
    TY_RUN(test_hf_decode);
    TY_RUN(test_pretokenizer_fast_vs_regex);
    TY_RUN(test_bpe_small_vs_heap);
    TY_RUN(test_whole_token_shortcut);
    TY_RUN(test_unicode_tables);
    TY_RUN(test_bytelevel_alphabet);
    TY_RUN(test_long_inputs);
    TY_RUN(test_gguf_roundtrip);
    TY_RUN(test_threads);
    TY_RUN(test_pad_vocab);
    TY_RUN(test_malformed_gguf);
    TY_RUN(test_malformed_json);
    TY_RUN(test_alloc_failures);
    ty_tokenizer_free(qwen);
    ty_tokenizer_free(qwen_gguf);
}
