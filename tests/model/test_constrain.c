/*
 * test_constrain.c - constrained decoding (src/model/constrain.c) on Qwen3's real 151k-token vocabulary:
 *  - generation with random logits under many schemas always ends, and what it writes parses (jansson) and validates
 *    against the schema, checked by an independent validator written here over the raw schema (not the compiled
 *    grammar);
 *  - the trie-walk mask equals a brute-force mask (every token's bytes walked from the same state) at many states;
 *  - byte-level acceptance and rejection of chosen strings (order of properties, whitespace bound, numbers, escapes,
 *    UTF-8, enum prefixes), end of turn only on a complete value, the reasoning phase and the forced tool call;
 *  - refusal of keywords that cannot be enforced, with a message naming the keyword and where it is.
 * It includes constrain.c to walk single tokens for the brute-force mask. The mask time per token is printed.
 */
#include "harness.h"

#include "../../src/model/constrain.c"
#include "schema_validate.h"

#include <stdlib.h>

static struct ty_tokenizer *qwen;
static struct ty_constrain_vocab *voc;

static bool load_qwen(void) {
    if (qwen) return true;
    const char *path = ty_test_tmp("tokenizer.json");
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "gzip -dc '%s' > '%s'", ty_test_src("data/tokenizers/qwen3/tokenizer.json.gz"), path);
    if (ty_test_sh(cmd, NULL) != 0) return false;
    if (ty_tokenizer_load_json(path, &qwen) != TY_OK) return false;
    double t0 = ty__time_s();
    if (ty__constrain_vocab_init(qwen, &voc) != TY_OK) return false;
    printf("  trie of %d tokens: %d nodes, depth %d, %d added, %d end-of-generation; %d string-safe tokens, the "
           "others' trie %d nodes; built in %.1f ms\n",
           voc->n_vocab, voc->all.n_nodes, voc->all.max_depth, voc->n_special, voc->n_eog, voc->n_str_safe,
           voc->unsafe.n_nodes, (ty__time_s() - t0) * 1e3);
    return true;
}

/* ==== Helpers ==== */

static uint64_t rng_state = 12345;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rndf(void) {
    return (float)(rnd() >> 40) / (float)(1 << 24);
}

static struct ty_grammar *schema_grammar(const char *schema) {
    struct ty_constrain_spec spec = {.kind = TY_CONSTRAIN_JSON_SCHEMA, .schema_json = schema};
    struct ty_grammar *g = NULL;
    CHECK_MSG(ty__grammar_compile(&spec, &g) == TY_OK, "%s: %s", schema, ty_last_error());
    return g;
}

static bool accepts(struct ty_grammar *g, const char *text, bool complete) {
    struct ty_matcher *m = NULL;
    if (ty__matcher_init(g, voc, &m) != TY_OK) return false;
    bool ok = ty__matcher_accept_bytes(m, text, strlen(text)) && (!complete || ty__matcher_can_end(m));
    ty__matcher_free(m);
    return ok;
}

/* The brute-force mask: each token's bytes walked on their own from the matcher's state. */
static void brute_mask(struct ty_matcher *m, uint32_t *mask) {
    const struct ty_constrain_vocab *v = m->v;
    memset(mask, 0, ((size_t)v->n_vocab + 31) / 32 * sizeof *mask);
    bool literal = false;
    for (int i = 0; i < m->cur.n; i++)
        literal |= m->cur.f[i]->kind == F_ROOT && (m->cur.f[i]->st == R_PREFIX || m->cur.f[i]->st == R_SUFFIX);
    for (int32_t id = 0; id < v->n_vocab; id++) {
        if (ty_tokenizer_is_eog(v->tok, id)) {
            if (ty__matcher_can_end(m)) mask_set(mask, id);
            continue;
        }
        if (!mask_has(v->free_mask, id)) continue;
        size_t len;
        const char *s = ty_token_bytes(v->tok, id, &len);
        bool special = mask_has(v->is_special, id);
        if (special && !literal) continue;
        if (len > MAX_TOKEN_LEN) continue;
        struct set r;
        if (run_bytes(m, (const uint8_t *)s, len, &r) && (!special || all_at_root(&r))) mask_set(mask, id);
    }
}

static bool is_closer(int32_t id) {
    size_t len;
    const char *s = ty_token_bytes(qwen, id, &len);
    return len == 1 && (s[0] == '"' || s[0] == '}' || s[0] == ']');
}

/* Generates with random logits under `g` (closing tokens favoured after a while, so that it ends), checking the
 * brute-force mask at the first `brute_steps` steps. Returns the text (ty_free) or NULL when it did not end. */
static char *generate(struct ty_grammar *g, int brute_steps, double *mask_s, int *n_masks) {
    struct ty_matcher *m = NULL;
    CHECK_OK(ty__matcher_init(g, voc, &m));
    if (!m) return NULL;
    size_t words = ((size_t)voc->n_vocab + 31) / 32;
    uint32_t *mask = ty__malloc(words * sizeof *mask), *brute = ty__malloc(words * sizeof *brute);
    float *logits = ty__malloc((size_t)voc->n_vocab * sizeof *logits);
    struct ty_buf out = {0};
    bool ended = false;
    for (int step = 0; step < 400 && !ended; step++) {
        double t0 = ty__time_s();
        int32_t n = ty__matcher_mask(m, mask);
        *mask_s += ty__time_s() - t0;
        ++*n_masks;
        CHECK_MSG(n > 0, "dead end after %s", out.data ? out.data : "");
        if (n <= 0) break;
        if (step < brute_steps) {
            brute_mask(m, brute);
            CHECK_MSG(!memcmp(mask, brute, words * sizeof *mask), "trie mask != brute-force mask after '%s'",
                      out.data ? out.data : "");
        }
        for (int32_t i = 0; i < voc->n_vocab; i++) {
            logits[i] = rndf();
            if (step > 24 && (ty_tokenizer_is_eog(qwen, i) || is_closer(i))) logits[i] += 2.0f + step * 0.1f;
        }
        ty__constrain_apply_mask(mask, logits, voc->n_vocab, voc->n_vocab);
        int32_t best = 0;
        for (int32_t i = 1; i < voc->n_vocab; i++)
            if (logits[i] > logits[best]) best = i;
        CHECK(mask_has(mask, best));
        bool ok = ty__matcher_accept(m, best);
        CHECK_MSG(ok, "token %d allowed by the mask but not accepted", best);
        if (!ok) break;
        if (ty_tokenizer_is_eog(qwen, best)) {
            ended = true;
        } else {
            size_t len;
            const char *s = ty_token_bytes(qwen, best, &len);
            ty__buf_append(&out, s, len);
        }
    }
    ty_free(mask);
    ty_free(brute);
    ty_free(logits);
    ty__matcher_free(m);
    char *text = NULL;
    if (!ended || ty__buf_finish(&out, &text) != TY_OK) {
        CHECK_MSG(ended, "generation did not end: [%s]", out.data ? out.data : "");
        ty__buf_free(&out);
        return NULL;
    }
    return text ? text : ty__strdup("");
}

/* ==== Random generation always parses and validates ==== */

static const char *const SCHEMAS[] = {
    "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}, \"age\": {\"type\": \"integer\"}}, "
    "\"required\": [\"name\", \"age\"], \"additionalProperties\": false}",
    "{\"type\": \"array\", \"items\": {\"type\": \"number\"}, \"minItems\": 2, \"maxItems\": 4}",
    "{\"type\": \"string\", \"minLength\": 3, \"maxLength\": 6}",
    "{\"enum\": [\"red\", \"green\", \"blue\", 12, 1, null, {\"a\": [1, 2]}]}",
    "{\"type\": [\"string\", \"null\"]}",
    "{\"type\": \"boolean\"}",
    "{\"type\": \"object\", \"properties\": {\"a\": {\"const\": \"x\"}, \"b\": {\"type\": \"number\"}, "
    "\"c\": {\"type\": \"boolean\"}}, \"required\": [\"c\"]}",
    "{\"type\": \"object\", \"properties\": {\"kind\": {\"type\": \"string\"}}, \"additionalProperties\": "
    "{\"type\": \"integer\"}}",
    "{\"type\": \"object\", \"properties\": {\"q\": {\"type\": \"string\"}}, \"required\": [\"q\", \"extra\"], "
    "\"additionalProperties\": true}",
    "{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"string\", \"maxLength\": 2}, {\"type\": \"array\", \"items\": "
    "{\"type\": \"null\"}, \"maxItems\": 2}]}",
    "{\"oneOf\": [{\"type\": \"object\", \"properties\": {\"t\": {\"const\": \"a\"}, \"v\": {\"type\": \"integer\"}}, "
    "\"required\": [\"t\", \"v\"], \"additionalProperties\": false}, {\"type\": \"object\", \"properties\": {\"t\": "
    "{\"const\": \"b\"}, \"s\": {\"type\": \"string\", \"maxLength\": 4}}, \"required\": [\"t\"], "
    "\"additionalProperties\": false}]}",
    "{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\": \"integer\"}, \"kids\": "
    "{\"type\": \"array\", \"items\": {\"$ref\": \"#/$defs/node\"}, \"maxItems\": 2}}, \"required\": [\"v\"], "
    "\"additionalProperties\": false}}, \"$ref\": \"#/$defs/node\"}",
    "{\"type\": \"array\", \"prefixItems\": [{\"type\": \"string\", \"maxLength\": 3}, {\"type\": \"integer\"}], "
    "\"items\": false, \"minItems\": 1}",
    "{\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"string\", \"nullable\": true}, \"y\": {\"allOf\": "
    "[{\"definitions\": {}, \"type\": \"number\"}]}, \"we\\\"ird\\\\key\": {\"type\": \"integer\"}, \"é\": "
    "{\"type\": \"null\"}}, \"required\": [\"we\\\"ird\\\\key\", \"é\"], \"additionalProperties\": false}",
    "{\"definitions\": {\"c\": {\"enum\": [\"a\", \"ab\", \"abc\"]}}, \"type\": \"array\", \"items\": "
    "{\"$ref\": \"#/definitions/c\"}, \"maxItems\": 3}",
    "{}",
    "{\"type\": \"object\"}",
    "{\"type\": \"string\", \"maxLength\": 0}",
};

static void test_random_generation_validates(void) {
    if (!load_qwen()) {
        CHECK_MSG(false, "cannot load Qwen3's tokenizer");
        return;
    }
    double mask_s = 0;
    int n_masks = 0, n_texts = 0;
    for (size_t i = 0; i < sizeof SCHEMAS / sizeof *SCHEMAS; i++) {
        json_t *schema = json_loads(SCHEMAS[i], 0, NULL);
        CHECK_MSG(schema != NULL, "schema %zu is not JSON", i);
        struct ty_grammar *g = schema_grammar(SCHEMAS[i]);
        for (int run = 0; g && schema && run < 4; run++) {
            char *text = generate(g, run == 0 ? 2 : 0, &mask_s, &n_masks);
            CHECK_MSG(text, "schema %zu did not end", i);
            if (!text) continue;
            n_texts++;
            json_error_t je;
            json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
            CHECK_MSG(v != NULL, "schema %zu: output does not parse (%s): %s", i, je.text, text);
            CHECK_MSG(!v || valid(schema, schema, v, 0), "schema %zu: output does not validate: %s", i, text);
            json_decref(v);
            ty_free(text);
        }
        ty__grammar_unref(g);
        json_decref(schema);
    }
    printf("  %d outputs over %zu schemas; mask %.2f ms per token (%d masks)\n", n_texts,
           sizeof SCHEMAS / sizeof *SCHEMAS, n_masks ? mask_s / n_masks * 1e3 : 0.0, n_masks);
}

/* json_object and the forced tool call go the same way. */
static void test_random_object_and_tool_call(void) {
    if (!load_qwen()) return;
    double mask_s = 0;
    int n_masks = 0;
    struct ty_constrain_spec spec = {.kind = TY_CONSTRAIN_JSON_OBJECT};
    struct ty_grammar *g = NULL;
    CHECK_OK(ty__grammar_compile(&spec, &g));
    for (int run = 0; g && run < 4; run++) {
        char *text = generate(g, run == 0 ? 2 : 0, &mask_s, &n_masks);
        json_t *v = text ? json_loads(text, 0, NULL) : NULL;
        CHECK_MSG(json_is_object(v), "json_object output: %s", text ? text : "(none)");
        json_decref(v);
        ty_free(text);
    }
    ty__grammar_unref(g);

    const char *tools = "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": "
                        "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": "
                        "[\"city\"]}}}, {\"type\": \"function\", \"function\": {\"name\": \"now\"}}]";
    spec = (struct ty_constrain_spec){.kind = TY_CONSTRAIN_TOOL_CALL, .tools_json = tools};
    CHECK_OK(ty__grammar_compile(&spec, &g));
    json_t *tj = json_loads(tools, 0, NULL);
    for (int run = 0; g && run < 4; run++) {
        char *text = generate(g, run == 0 ? 3 : 0, &mask_s, &n_masks);
        if (!text) continue;
        struct ty_chat_parsed p;
        CHECK_OK(ty_chat_parse(text, false, &p));
        json_t *calls = p.tool_calls_json ? json_loads(p.tool_calls_json, 0, NULL) : NULL;
        CHECK_MSG(json_array_size(calls) == 1, "tool call output: %s", text);
        json_t *fn = json_object_get(json_array_get(calls, 0), "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments"))
                                      ? json_string_value(json_object_get(fn, "arguments"))
                                      : "",
                                  0, NULL);
        bool found = false;
        for (size_t k = 0; name && k < json_array_size(tj); k++) {
            json_t *f = json_object_get(json_array_get(tj, k), "function");
            if (strcmp(json_string_value(json_object_get(f, "name")), name)) continue;
            found = true;
            json_t *params = json_object_get(f, "parameters");
            CHECK_MSG(json_is_object(args) && (!params || valid(params, params, args, 0)), "arguments: %s", text);
        }
        CHECK_MSG(found, "unknown tool in %s", text);
        CHECK(p.content && !strcmp(p.content, ""));
        json_decref(args);
        json_decref(calls);
        ty_chat_parsed_free(&p);
        ty_free(text);
    }
    json_decref(tj);
    ty__grammar_unref(g);
}

/* ==== Byte-level acceptance ==== */

static void test_object_rules(void) {
    if (!load_qwen()) return;
    struct ty_grammar *g = schema_grammar(SCHEMAS[6]); /* a: const "x", b: number, c: boolean (required) */
    CHECK(accepts(g, "{\"a\": \"x\", \"b\": 1.5, \"c\": true}", true));
    CHECK(accepts(g, "{\"c\":false}", true));
    CHECK(accepts(g, "{\"b\": -0.25e+3, \"c\": true}", true));
    CHECK(!accepts(g, "{\"a\": \"x\"}", true));               /* c is required */
    CHECK(!accepts(g, "{\"c\": true, \"a\": \"x\"}", false)); /* schema order */
    CHECK(!accepts(g, "{\"c\": true, \"c\"", false));         /* twice */
    CHECK(!accepts(g, "{\"d\"", false));                      /* additional, not allowed when properties are listed */
    CHECK(!accepts(g, "{\"a\": \"y\"", false));
    CHECK(!accepts(g, "{\"c\": true,}", false));
    CHECK(accepts(g, "{\"c\": true", false) && !accepts(g, "{\"c\": true", true));
    ty__grammar_unref(g);

    g = schema_grammar(SCHEMAS[7]); /* kind: string; additional: integer */
    CHECK(accepts(g, "{\"kind\": \"k\", \"n\": 3, \"kin\": 4, \"kinds\": 5}", true));
    CHECK(accepts(g, "{\"n\": 3, \"kind\": \"k\"}", true)); /* additional keys may come before listed ones */
    CHECK(!accepts(g, "{\"kind\": \"k\", \"kind\"", false));
    CHECK(!accepts(g, "{\"n\": \"s\"", false));
    CHECK(!accepts(g, "{\"a\\u0062\"", false)); /* no escapes in additional keys */
    ty__grammar_unref(g);

    g = schema_grammar(SCHEMAS[13]); /* names that need escapes, and a non-ASCII one */
    CHECK(accepts(g, "{\"x\": null, \"we\\\"ird\\\\key\": 1, \"é\": null}", true));
    CHECK(!accepts(g, "{\"we\\\"ird\\\\key\": 1}", true));
    ty__grammar_unref(g);
}

static void test_values(void) {
    if (!load_qwen()) return;
    struct ty_grammar *g = schema_grammar("{\"type\": \"array\", \"items\": {}}");
    CHECK(accepts(g, "[1, -0, 0.5, 1e5, -2E-3, \"a\\n\\u00e9\\/\", true, false, null, {}, [], {\"k\": [{}]}]", true));
    CHECK(!accepts(g, "[01", false));
    CHECK(!accepts(g, "[1.]", false));
    CHECK(!accepts(g, "[.5", false));
    CHECK(!accepts(g, "[1,]", false));
    CHECK(!accepts(g, "[tru]", false));
    CHECK(!accepts(g, "[\"\\u0000\"", false));
    CHECK(!accepts(g, "[\"\\ud8", false)); /* a surrogate escape is cut at its second digit */
    CHECK(accepts(g, "[\"\\ud7ff\"]", true));
    CHECK(!accepts(g, "[\"\\x\"", false));
    CHECK(!accepts(g, "[\"a\tb\"", false));
    CHECK(!accepts(g, "[\"\xc0\x80\"", false));     /* overlong */
    CHECK(!accepts(g, "[\"\xed\xa0\x80\"", false)); /* UTF-8 surrogate */
    CHECK(accepts(g, "[\"\xf0\x9f\x98\x80\"]", true));
    CHECK(accepts(g, "[123456789012345", false) && !accepts(g, "[1234567890123456", false));
    ty__grammar_unref(g);

    g = schema_grammar("{\"type\": \"string\", \"minLength\": 2, \"maxLength\": 3}");
    CHECK(accepts(g, "\"ab\"", true) && accepts(g, "\"\xc3\xa9\\n\xe4\xb8\xad\"", true));
    CHECK(!accepts(g, "\"a\"", false) && !accepts(g, "\"abcd", false));
    ty__grammar_unref(g);

    g = schema_grammar("{\"type\": \"integer\"}");
    CHECK(accepts(g, "-12", true) && accepts(g, "0", true));
    CHECK(!accepts(g, "1.5", false) && !accepts(g, "1e3", false) && !accepts(g, "-", true));
    ty__grammar_unref(g);

    g = schema_grammar(SCHEMAS[14]); /* enum a, ab, abc in an array */
    CHECK(accepts(g, "[\"a\", \"abc\", \"ab\"]", true));
    CHECK(!accepts(g, "[\"abcd\"", false) && !accepts(g, "[\"b", false));
    CHECK(!accepts(g, "[\"a\",\"a\",\"a\",", false)); /* maxItems 3 */
    ty__grammar_unref(g);
}

static void test_whitespace_bounded(void) {
    if (!load_qwen()) return;
    struct ty_grammar *g = schema_grammar("{\"type\": \"object\"}");
    char buf[200];
    /* depth 1: 2 + 4 bytes per run; depth 0 (before the value): 2 */
    snprintf(buf, sizeof buf, "{%6s\"a\"%6s:%6s1%6s}", "", "", "", "");
    CHECK(accepts(g, buf, true));
    snprintf(buf, sizeof buf, "{%7s", "");
    CHECK(!accepts(g, buf, false));
    CHECK(accepts(g, "\n\n{}", true));
    CHECK(!accepts(g, "\n\n\n{}", false));
    CHECK(accepts(g, "{\"a\": {\n         \"b\": 1}}", true)); /* depth 2: 10 */
    CHECK(!accepts(g, "{\"a\": {\n          \"b\"", false));
    CHECK(!accepts(g, "{} ", false)); /* nothing after the value */
    CHECK(accepts(g, "{\n  \"a\": [\n    1,\n    2\n  ]\n}", true));
    ty__grammar_unref(g);
}

static void test_reasoning_and_tool_call(void) {
    if (!load_qwen()) return;
    struct ty_constrain_spec spec = {.kind = TY_CONSTRAIN_JSON_OBJECT, .after_reasoning = true};
    struct ty_grammar *g = NULL;
    CHECK_OK(ty__grammar_compile(&spec, &g));
    struct ty_matcher *m = NULL;
    CHECK_OK(ty__matcher_init(g, voc, &m));
    size_t words = ((size_t)voc->n_vocab + 31) / 32;
    uint32_t *mask = ty__malloc(words * sizeof *mask);
    int32_t im_end = ty_tokenizer_find(qwen, "<|im_end|>"), think_end = ty_tokenizer_find(qwen, "</think>");
    int32_t tool_open = ty_tokenizer_find(qwen, "<tool_call>"), brace = ty_tokenizer_find(qwen, "{");
    CHECK(im_end >= 0 && think_end >= 0 && tool_open >= 0 && brace >= 0);
    int32_t n = ty__matcher_mask(m, mask);
    CHECK(n > 100000 && !mask_has(mask, im_end) && mask_has(mask, think_end) && mask_has(mask, brace));
    CHECK(ty__matcher_in_reasoning(m) && !ty__matcher_accept(m, im_end));
    CHECK(ty__matcher_accept_bytes(m, "<think>\nhmm {not json} </thi", 28));
    CHECK(ty__matcher_in_reasoning(m));
    CHECK(ty__matcher_accept_bytes(m, "nk>\n\n{", 6) && !ty__matcher_in_reasoning(m));
    CHECK(!ty__matcher_can_end(m) && ty__matcher_accept_bytes(m, "}", 1) && ty__matcher_can_end(m));
    CHECK(ty__matcher_accept(m, im_end));
    ty__matcher_free(m);
    /* the token that closes the block may not go on with bytes the value cannot start with */
    CHECK_OK(ty__matcher_init(g, voc, &m));
    CHECK(ty__matcher_accept_bytes(m, "x</think", 8));
    ty__matcher_mask(m, mask);
    int32_t gt_x = ty_tokenizer_find(qwen, ">x"), gt_nl = ty_tokenizer_find(qwen, ">\n\n");
    if (gt_x >= 0) CHECK(!mask_has(mask, gt_x));
    if (gt_nl >= 0) CHECK(mask_has(mask, gt_nl));
    ty__matcher_free(m);
    ty__grammar_unref(g);

    const char *tools = "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": "
                        "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": "
                        "[\"city\"]}}}, {\"type\": \"function\", \"function\": {\"name\": \"now\"}}]";
    spec = (struct ty_constrain_spec){.kind = TY_CONSTRAIN_TOOL_CALL, .tools_json = tools, .tool_name = "get_weather"};
    CHECK_OK(ty__grammar_compile(&spec, &g));
    CHECK(accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
                  true));
    CHECK(!accepts(g, "<tool_call>\n{\"name\": \"now\"", false));
    CHECK(accepts(g, "\n\n<tool_call>\n\n{\"name\"", false) && !accepts(g, "\n\n\n<tool_call>", false));
    CHECK(!accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}", false));
    CHECK(!accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"P\"}}", true));
    CHECK_OK(ty__matcher_init(g, voc, &m));
    ty__matcher_mask(m, mask);
    CHECK(mask_has(mask, tool_open) && !mask_has(mask, im_end) && !mask_has(mask, brace));
    CHECK(ty__matcher_accept(m, tool_open));
    CHECK(ty__matcher_accept_bytes(m, "\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"", 48));
    ty__matcher_mask(m, mask);
    CHECK(!mask_has(mask, tool_open) && !mask_has(mask, think_end)); /* added tokens never inside the value */
    ty__matcher_free(m);
    ty__grammar_unref(g);
    spec.tool_name = "nope";
    CHECK_STATUS(ty__grammar_compile(&spec, &g), TY_ERR_INVALID_ARG);
    ty_free(mask);
}

/* ==== Mask time per state (printed, not asserted: timings on shared machines are noise) ==== */
/* Each state's mask is also checked against the brute-force mask, the string fast path's states included. */

static void test_mask_time_by_state(void) {
    if (!load_qwen()) return;
    const struct {
        const char *what, *schema, *prefix;
    } cases[] = {
        {"value start (any JSON)", "{}", ""},
        {"object key, 3 listed names", SCHEMAS[6], "{"},
        {"inside a free string", "{\"type\": \"array\", \"items\": {\"type\": \"string\"}}", "[\"abc"},
        {"inside a string, maxLength 40", "{\"type\": \"string\", \"maxLength\": 40}", "\"abc"},
        {"string with 1 character of room", "{\"type\": \"string\", \"maxLength\": 4}", "\"a\\u00e9c"},
        {"free object key (json_object)", "{\"type\": \"object\"}", "{\"ab"},
        {"key past the listed names", SCHEMAS[7], "{\"kind\": \"x\", \"kinz"},
        {"inside a string, mid-character", "{\"type\": \"string\"}", "\"\xe4\xb8"},
        {"inside a number", "{\"type\": \"array\", \"items\": {\"type\": \"number\"}}", "[12"},
        {"enum prefix", SCHEMAS[3], "\"gr"},
    };
    size_t words = ((size_t)voc->n_vocab + 31) / 32;
    uint32_t *mask = ty__malloc(words * sizeof *mask);
    for (size_t i = 0; mask && i < sizeof cases / sizeof *cases; i++) {
        struct ty_grammar *g = schema_grammar(cases[i].schema);
        struct ty_matcher *m = NULL;
        if (!g || ty__matcher_init(g, voc, &m) != TY_OK) {
            ty__grammar_unref(g);
            continue;
        }
        CHECK(ty__matcher_accept_bytes(m, cases[i].prefix, strlen(cases[i].prefix)));
        int32_t n = 0;
        double t0 = ty__time_s();
        for (int k = 0; k < 5; k++) n = ty__matcher_mask(m, mask);
        double ms = (ty__time_s() - t0) / 5 * 1e3;
        CHECK(n > 0);
        printf("  mask %-32s %7.2f ms, %6d tokens allowed\n", cases[i].what, ms, n);
        uint32_t *brute = ty__malloc(words * sizeof *brute);
        if (brute) {
            brute_mask(m, brute);
            CHECK_MSG(!memcmp(mask, brute, words * sizeof *mask), "%s: trie mask != brute-force mask", cases[i].what);
            ty_free(brute);
        }
        ty__matcher_free(m);
        ty__grammar_unref(g);
    }
    ty_free(mask);
}

/* ==== Refusals ==== */

static void refused(const char *schema, enum ty_status want, const char *needle) {
    struct ty_constrain_spec spec = {.kind = TY_CONSTRAIN_JSON_SCHEMA, .schema_json = schema};
    struct ty_grammar *g = NULL;
    enum ty_status st = ty__grammar_compile(&spec, &g);
    CHECK_MSG(st == want && !g, "%s -> %s", schema, ty_status_str(st));
    CHECK_MSG(strstr(ty_last_error(), needle), "%s: message '%s' lacks '%s'", schema, ty_last_error(), needle);
    ty__grammar_unref(g);
}

static void test_refusals(void) {
    refused("{\"type\": \"string\", \"format\": \"date\"}", TY_ERR_UNSUPPORTED, "'format'");
    refused("{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"string\", \"pattern\": \"^a\"}}}",
            TY_ERR_UNSUPPORTED, "#/properties/a: 'pattern'");
    refused("{\"type\": \"integer\", \"minimum\": 3}", TY_ERR_UNSUPPORTED, "'minimum'");
    refused("{\"type\": \"array\", \"uniqueItems\": true}", TY_ERR_UNSUPPORTED, "uniqueItems");
    refused("{\"allOf\": [{\"type\": \"string\"}, {\"maxLength\": 3}]}", TY_ERR_UNSUPPORTED, "allOf");
    refused("{\"oneOf\": [{\"type\": \"string\"}, {\"type\": \"string\", \"maxLength\": 3}]}", TY_ERR_UNSUPPORTED,
            "oneOf alternatives 0 and 1");
    refused("{\"$ref\": \"http://example.com/s.json\"}", TY_ERR_UNSUPPORTED, "$ref");
    refused("{\"$ref\": \"#/$defs/missing\"}", TY_ERR_INVALID_ARG, "points to nothing");
    refused("{\"$ref\": \"#\"}", TY_ERR_UNSUPPORTED, "itself");
    refused("{\"type\": \"array\", \"minItems\": 3, \"maxItems\": 2}", TY_ERR_INVALID_ARG, "minItems");
    refused("{\"type\": \"string\", \"minLength\": 3, \"maxLength\": 2}", TY_ERR_INVALID_ARG, "minLength");
    refused("{\"type\": \"object\", \"properties\": {}, \"required\": [\"a\"], \"additionalProperties\": false}",
            TY_ERR_INVALID_ARG, "'a' is required");
    refused("{\"type\": \"strin\"}", TY_ERR_INVALID_ARG, "unknown type");
    refused("{\"enum\": [1, 2], \"type\": \"string\"}", TY_ERR_INVALID_ARG, "no value of 'enum'");
    refused("{\"type\": \"object\", \"properties\": {\"a\": false}}", TY_ERR_INVALID_ARG, "#/properties/a");
    refused("{\"type\": \"object\", \"if\": {}}", TY_ERR_UNSUPPORTED, "'if'");
    refused("[1]", TY_ERR_INVALID_ARG, "must be an object");
    refused("{\"type\": ", TY_ERR_INVALID_ARG, "not valid JSON");
    refused("{\"anyOf\": [{\"type\": \"string\"}], \"maxLength\": 3}", TY_ERR_UNSUPPORTED, "combined");
    refused("{\"type\": \"object\", \"properties\": {\"a\": {\"$ref\": \"#\"}}, \"required\": [\"a\"]}",
            TY_ERR_INVALID_ARG, "no instance");
    refused("{\"type\": \"array\", \"items\": {\"$ref\": \"#\"}, \"minItems\": 1}", TY_ERR_INVALID_ARG, "no instance");
    /* more grammar nodes than the compiler allows: the schema's fault (a 400 from the server), not out of memory;
     * 128 alternatives of 64 properties each need 128 x 65 nodes (found by fuzz_openai_request as a 500) */
    struct ty_buf big = {0};
    ty__buf_puts(&big, "{\"anyOf\": [");
    for (int a = 0; a < 128; a++) {
        ty__buf_printf(&big, "%s{\"type\": \"object\", \"properties\": {", a ? ", " : "");
        for (int k = 0; k < 64; k++) ty__buf_printf(&big, "%s\"p%d\": {\"type\": \"integer\"}", k ? ", " : "", k);
        ty__buf_puts(&big, "}}");
    }
    ty__buf_puts(&big, "]}");
    char *text = NULL;
    CHECK_OK(ty__buf_finish(&big, &text));
    if (text) refused(text, TY_ERR_UNSUPPORTED, "grammar nodes");
    ty_free(text);
}

void ty_tests(void) {
    TY_RUN(test_refusals);
    TY_RUN(test_values);
    TY_RUN(test_object_rules);
    TY_RUN(test_whitespace_bounded);
    TY_RUN(test_reasoning_and_tool_call);
    TY_RUN(test_mask_time_by_state);
    TY_RUN(test_random_generation_validates);
    TY_RUN(test_random_object_and_tool_call);
    ty__constrain_vocab_free(voc);
    ty_tokenizer_free(qwen);
}
