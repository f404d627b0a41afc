/*
 * test_chat.c - Qwen chat format: ty_chat_render against renderings of Qwen3's real Jinja template
 * (tests/data/chat/cases.jsonl, made by tests/fixtures/make_chat_fixtures.py), the deviations chat.c documents, its
 * errors, the Thinking-2507 prompt variant, the Python-compatible JSON writer, and ty_chat_parse.
 */
#include "harness.h"
#include "model/chat-impl.h"

#include <stdlib.h>

/* ==== Golden renderings ==== */

static const char *opt_str(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Prints where two renderings part, with a little context, so a failure says what the template did differently. */
static void show_diff(const char *name, const char *want, const char *got) {
    size_t i = 0;
    while (want[i] && want[i] == got[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "case %s: differs at byte %zu\n  want: \"%.*s\"\n  got:  \"%.*s\"\n", name, i, 80, want + from, 80,
            got + from);
}

static void test_golden_cases(void) {
    char *text;
    size_t size;
    CHECK_OK(ty__file_read(ty_test_src("tests/data/chat/cases.jsonl"), 1 << 24, &text, &size));
    if (!text) return;
    int n_cases = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        json_error_t err;
        json_t *c = json_loads(line, 0, &err);
        CHECK_MSG(c != NULL, "cases.jsonl line %d: %s", n_cases + 1, err.text);
        if (!c) continue;
        const char *name = opt_str(c, "name");
        const json_t *ms = json_object_get(c, "messages");
        size_t n = json_array_size(ms);
        struct ty_chat_message *msgs = calloc(n ? n : 1, sizeof *msgs);
        for (size_t i = 0; i < n; i++) {
            const json_t *m = json_array_get(ms, i);
            msgs[i] = (struct ty_chat_message){opt_str(m, "role"), opt_str(m, "content"),
                                               opt_str(m, "reasoning_content"), opt_str(m, "tool_calls_json")};
        }
        const char *th = opt_str(c, "thinking");
        struct ty_chat_render_params p = {
            .tools_json = opt_str(c, "tools_json"),
            .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
            .thinking = !strcmp(th, "on")    ? TY_CHAT_THINKING_ON
                        : !strcmp(th, "off") ? TY_CHAT_THINKING_OFF
                                             : TY_CHAT_THINKING_DEFAULT,
        };
        char *got = NULL;
        enum ty_status st = ty_chat_render(msgs, n, &p, &got);
        CHECK_MSG(st == TY_OK, "case %s: %s", name, ty_last_error());
        const char *want = opt_str(c, "expected");
        if (got && want) {
            bool same = strcmp(got, want) == 0;
            CHECK_MSG(same, "case %s renders differently from Qwen3's template", name);
            if (!same) show_diff(name, want, got);
        }
        /* Thinking "on" must read exactly like the template's default (enable_thinking undefined). */
        if (st == TY_OK && p.thinking == TY_CHAT_THINKING_DEFAULT) {
            char *on = NULL;
            p.thinking = TY_CHAT_THINKING_ON;
            CHECK_OK(ty_chat_render(msgs, n, &p, &on));
            CHECK_MSG(on && !strcmp(on, got), "case %s: THINKING_ON differs from DEFAULT", name);
            ty_free(on);
        }
        ty_free(got);
        free(msgs);
        json_decref(c);
        n_cases++;
    }
    CHECK_MSG(n_cases >= 50, "only %d golden cases read", n_cases);
    ty_free(text);
}

/* ==== Deviations, errors and the prompt variant ==== */

static char *render(const struct ty_chat_message *m, size_t n, const struct ty_chat_render_params *p) {
    char *out = NULL;
    CHECK_OK(ty_chat_render(m, n, p, &out));
    return out;
}

static void test_assistant_null_content(void) {
    /* The template raises on a None content; OpenAI clients send null with tool calls, so chat.c renders "". */
    const char *calls = "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1}}}]";
    struct ty_chat_message with_null[] = {{"user", "hi", NULL, NULL}, {"assistant", NULL, NULL, calls}};
    struct ty_chat_message with_empty[] = {{"user", "hi", NULL, NULL}, {"assistant", "", NULL, calls}};
    struct ty_chat_render_params p = {0};
    char *a = render(with_null, 2, &p), *b = render(with_empty, 2, &p);
    CHECK(a && b && !strcmp(a, b));
    CHECK(a && strstr(a, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call><|im_end|>\n"));
    ty_free(a);
    ty_free(b);
}

static void test_errors(void) {
    struct ty_chat_render_params p = {.add_generation_prompt = true};
    char *out = (char *)"untouched";
    struct ty_chat_message ok[] = {{"user", "hi", NULL, NULL}};
    CHECK_STATUS(ty_chat_render(ok, 0, &p, &out), TY_ERR_INVALID_ARG);
    CHECK(out == NULL);
    CHECK_STATUS(ty_chat_render(NULL, 1, &p, &out), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty_chat_render(ok, 1, NULL, &out), TY_ERR_INVALID_ARG);

    struct ty_chat_message unknown[] = {{"developer", "x", NULL, NULL}};
    CHECK_STATUS(ty_chat_render(unknown, 1, &p, &out), TY_ERR_INVALID_ARG);
    CHECK(strstr(ty_last_error(), "developer") != NULL);
    struct ty_chat_message no_role[] = {{NULL, "x", NULL, NULL}};
    CHECK_STATUS(ty_chat_render(no_role, 1, &p, &out), TY_ERR_INVALID_ARG);
    const char *roles[] = {"system", "user", "tool"};
    for (int i = 0; i < 3; i++) {
        struct ty_chat_message m[] = {{"user", "a", NULL, NULL}, {roles[i], NULL, NULL, NULL}};
        CHECK_STATUS(ty_chat_render(m, 2, &p, &out), TY_ERR_INVALID_ARG);
        CHECK(strstr(ty_last_error(), "no content") != NULL);
    }
    /* An error anywhere, even after valid messages, leaves nothing allocated. */
    size_t before = ty_mem_allocated();
    struct ty_chat_message late[] = {
        {"user", "a", NULL, NULL}, {"assistant", "b", NULL, NULL}, {"robot", "c", NULL, NULL}};
    CHECK_STATUS(ty_chat_render(late, 3, &p, &out), TY_ERR_INVALID_ARG);
    CHECK(ty_mem_allocated() == before);

    p.tools_json = "[{\"type\": \"function\",";
    CHECK_STATUS(ty_chat_render(ok, 1, &p, &out), TY_ERR_INVALID_ARG);
    CHECK(strstr(ty_last_error(), "tools_json") != NULL);
    p.tools_json = "{\"type\": \"function\"}";
    CHECK_STATUS(ty_chat_render(ok, 1, &p, &out), TY_ERR_INVALID_ARG);
    p.tools_json = NULL;
    p.thinking = (enum ty_chat_thinking)7;
    CHECK_STATUS(ty_chat_render(ok, 1, &p, &out), TY_ERR_INVALID_ARG);
    p.thinking = TY_CHAT_THINKING_DEFAULT;

    const char *bad_calls[] = {
        "[{\"function\": {\"name\": \"f\"",                              /* not JSON */
        "{\"function\": {\"name\": \"f\", \"arguments\": {}}}",          /* not an array */
        "[{\"function\": {\"arguments\": {}}}]",                         /* no name */
        "[{\"function\": {\"name\": 3, \"arguments\": {}}}]",            /* name not a string */
        "[{\"function\": {\"name\": \"f\"}}]",                           /* no arguments */
        "[\"f\"]",                                                       /* call not an object */
        "[{\"function\": \"f\"}]",                                       /* function not an object */
        "[{\"function\": {\"name\": \"a\\u0000b\", \"arguments\": {}}}]" /* NUL would cut the prompt */
    };
    for (size_t i = 0; i < sizeof bad_calls / sizeof *bad_calls; i++) {
        struct ty_chat_message m[] = {{"user", "a", NULL, NULL}, {"assistant", "", NULL, bad_calls[i]}};
        CHECK_MSG(ty_chat_render(m, 2, &p, &out) == TY_ERR_INVALID_ARG, "bad tool calls %zu accepted", i);
    }
    /* null and [] mean no calls, as the template's `if message.tool_calls` reads them */
    const char *no_calls[] = {"null", "[]"};
    for (int i = 0; i < 2; i++) {
        struct ty_chat_message m[] = {{"user", "a", NULL, NULL}, {"assistant", "b", NULL, no_calls[i]}};
        char *s = render(m, 2, &p);
        CHECK(s && strstr(s, "<tool_call>") == NULL);
        ty_free(s);
    }
}

static void test_open_think_variant(void) {
    struct ty_chat_message m[] = {{"user", "hi", NULL, NULL}};
    struct ty__chat_render_opts o = {.open_think_in_prompt = true};
    struct ty_chat_render_params p = {.add_generation_prompt = true};
    const char *base = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
    char want[256];
    char *out = NULL;
    for (int th = 0; th < 3; th++) {
        p.thinking = (enum ty_chat_thinking)th;
        CHECK_OK(ty__chat_render_ex(m, 1, &p, &o, &out));
        snprintf(want, sizeof want, "%s%s", base, th == TY_CHAT_THINKING_OFF ? "<think>\n\n</think>\n\n" : "<think>\n");
        CHECK_MSG(out && !strcmp(out, want), "thinking %d: got \"%s\"", th, out ? out : "(null)");
        ty_free(out);
    }
    p.add_generation_prompt = false;
    CHECK_OK(ty__chat_render_ex(m, 1, &p, &o, &out));
    CHECK(out && !strcmp(out, "<|im_start|>user\nhi<|im_end|>\n"));
    ty_free(out);
    /* opts NULL is Qwen3's template */
    p.add_generation_prompt = true;
    p.thinking = TY_CHAT_THINKING_DEFAULT;
    CHECK_OK(ty__chat_render_ex(m, 1, &p, NULL, &out));
    CHECK(out && !strcmp(out, base));
    ty_free(out);
}

static void test_render_alloc_failures(void) {
    const char *tools = "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"x\":[1.5,2]}}}]";
    struct ty_chat_message m[] = {{"system", "s", NULL, NULL},
                                  {"user", "q", NULL, NULL},
                                  {"assistant", "<think>r</think>a", NULL, "[{\"name\":\"f\",\"arguments\":{}}]"},
                                  {"tool", "t", NULL, NULL}};
    struct ty_chat_render_params p = {.tools_json = tools, .add_generation_prompt = true};
    char *ref = render(m, 4, &p);
    size_t before = ty_mem_allocated();
    bool succeeded = false;
    for (long k = 1; k < 200 && !succeeded; k++) {
        char *out = NULL;
        ty__alloc_fail_after(k);
        enum ty_status st = ty_chat_render(m, 4, &p, &out);
        ty__alloc_fail_after(0);
        if (st == TY_OK) {
            succeeded = true;
            CHECK(ref && out && !strcmp(ref, out));
            ty_free(out);
        } else {
            CHECK_MSG(st == TY_ERR_NO_MEMORY && out == NULL, "failure %ld gave %s", k, ty_status_str(st));
        }
        CHECK_MSG(ty_mem_allocated() == before, "failure %ld leaked %zu bytes", k, ty_mem_allocated() - before);
    }
    CHECK(succeeded);
    ty_free(ref);
}

/* ==== Python-compatible JSON ==== */

static void check_dump(const char *json_in, const char *want) {
    json_t *v = NULL;
    CHECK_OK(ty__json_parse(json_in, strlen(json_in), "test input", &v));
    if (!v) return;
    struct ty_buf b = {0};
    ty__json_dump_py(v, &b);
    char *got = NULL;
    CHECK_OK(ty__buf_finish(&b, &got));
    CHECK_MSG(got && !strcmp(got, want), "%s -> \"%s\", want \"%s\"", json_in, got ? got : "(null)", want);
    ty_free(got);
    json_decref(v);
}

static void test_json_dump_py(void) {
    check_dump("{\"b\":1,\"a\":[true,false,null]}", "{\"b\": 1, \"a\": [true, false, null]}");
    check_dump("[1.0, 1e5, 1E-7, 2.50, 0.1, -0.0, 0.0001, 0.00001, 1e16, 1e15, 123.456e2]",
               "[1.0, 100000.0, 1e-07, 2.5, 0.1, -0.0, 0.0001, 1e-05, 1e+16, 1000000000000000.0, 12345.6]");
    check_dump("[1.7976931348623157e308, 5e-324, 0.30000000000000004, 1e-300, 123456789012345678]",
               "[1.7976931348623157e+308, 5e-324, 0.30000000000000004, 1e-300, 123456789012345678]");
    check_dump("[-9223372036854775808, 9223372036854775807, -1.5e-10]",
               "[-9223372036854775808, 9223372036854775807, -1.5e-10]");
    check_dump(
        "\"q\\\" b\\\\ s\\/ n\\n r\\r t\\t b\\b f\\f u\\u0001 z\\u0000 d\\u007f \\u00e9 \\u4e2d \\ud83d\\ude80\"",
        "\"q\\\" b\\\\ s/ n\\n r\\r t\\t b\\b f\\f u\\u0001 z\\u0000 d\x7f \xc3\xa9 \xe4\xb8\xad \xf0\x9f\x9a\x80\"");
    check_dump("{\"k\\n\": {}, \"\xe9\x94\xae\": []}", "{\"k\\n\": {}, \"\xe9\x94\xae\": []}");
    check_dump("{\"a\": 1, \"b\": 2, \"a\": 3}", "{\"a\": 3, \"b\": 2}"); /* Python keeps the first place, last value */
}

/* ==== Parsing generated text ==== */

struct parse_case {
    const char *text;
    bool started;
    const char *reasoning; /* NULL = none expected */
    const char *content;
    const char *calls; /* NULL = none expected */
};

static void check_parse(const struct parse_case *c) {
    struct ty_chat_parsed p;
    CHECK_OK(ty_chat_parse(c->text, c->started, &p));
#define SAME(got, want) ((got) == NULL ? (want) == NULL : (want) != NULL && !strcmp((got), (want)))
    CHECK_MSG(SAME(p.reasoning, c->reasoning), "\"%s\": reasoning \"%s\", want \"%s\"", c->text,
              p.reasoning ? p.reasoning : "(null)", c->reasoning ? c->reasoning : "(null)");
    CHECK_MSG(SAME(p.content, c->content), "\"%s\": content \"%s\", want \"%s\"", c->text,
              p.content ? p.content : "(null)", c->content);
    CHECK_MSG(SAME(p.tool_calls_json, c->calls), "\"%s\": calls %s, want %s", c->text,
              p.tool_calls_json ? p.tool_calls_json : "(null)", c->calls ? c->calls : "(null)");
#undef SAME
    ty_chat_parsed_free(&p);
    CHECK(p.reasoning == NULL && p.content == NULL && p.tool_calls_json == NULL);
}

static void test_parse(void) {
    static const struct parse_case cases[] = {
        /* plain answers, and the Qwen3 thinking layout */
        {"Hello there.", false, NULL, "Hello there.", NULL},
        {"", false, NULL, "", NULL},
        {"<think>\nLet me think.\n</think>\n\nThe answer is 4.", false, "Let me think.", "The answer is 4.", NULL},
        {"<think>\n\n</think>\n\nNo thinking.", false, "", "No thinking.", NULL},
        {"\n<think>r</think>a", false, "r", "a", NULL},
        /* reasoning still open when generation stopped: all of it is reasoning */
        {"<think>\nstill going", false, "still going", "", NULL},
        {"<think>", false, "", "", NULL},
        /* Thinking-2507 style: the prompt opened the block, the text only closes it */
        {"step 1\nstep 2\n</think>\n\nDone.", true, "step 1\nstep 2", "Done.", NULL},
        {"no close yet", true, "no close yet", "", NULL},
        {"", true, "", "", NULL},
        {"<think>\nr\n</think>\n\nx", true, "r", "x", NULL},
        /* a close without an open: the template reads the text before it as reasoning */
        {"thoughts</think>\n\nanswer", false, "thoughts", "answer", NULL},
        /* only newlines are stripped, as the template strips them */
        {"<think>\n  r  \n</think>\n\n  a  \n", false, "  r  ", "  a  \n", NULL},
        /* tool calls */
        {"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Hangzhou\"}}\n</tool_call>", false, NULL,
         "",
         "[{\"type\":\"function\",\"id\":\"call_0\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{"
         "\\\"city\\\": "
         "\\\"Hangzhou\\\"}\"}}]"},
        {"<think>\nTwo cities.\n</think>\n\nChecking both.\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\": "
         "\"\xe5\x8c\x97\xe4\xba\xac\", \"n\": 1.0}}\n</tool_call>\n<tool_call>\n{\"name\": \"w\", \"arguments\": "
         "{}}\n</tool_call>",
         false, "Two cities.", "Checking both.",
         "[{\"type\":\"function\",\"id\":\"call_0\",\"function\":{\"name\":\"w\",\"arguments\":\"{\\\"c\\\": "
         "\\\"\xe5\x8c\x97\xe4\xba\xac\\\", \\\"n\\\": 1.0}\"}},{\"type\":\"function\",\"id\":\"call_1\","
         "\"function\":{\"name\":\"w\",\"arguments\":\"{}\"}}]"},
        /* arguments given as a string are kept; missing arguments mean none */
        {"<tool_call>{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}</tool_call>", false, NULL, "",
         "[{\"type\":\"function\",\"id\":\"call_0\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]"},
        {"<tool_call>{\"name\":\"f\"}</tool_call>", false, NULL, "",
         "[{\"type\":\"function\",\"id\":\"call_0\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]"},
        /* malformed calls stay in the content, untouched; good ones around them are still taken */
        {"<tool_call>\n{\"name\": \"f\", \"arguments\": {\n</tool_call>", false, NULL,
         "<tool_call>\n{\"name\": \"f\", \"arguments\": {\n</tool_call>", NULL},
        {"A<tool_call>{\"arguments\": {}}</tool_call>\n<tool_call>{\"name\":\"g\",\"arguments\":[1, 2]}</tool_call>",
         false, NULL, "A<tool_call>{\"arguments\": {}}</tool_call>",
         "[{\"type\":\"function\",\"id\":\"call_0\",\"function\":{\"name\":\"g\",\"arguments\":\"[1, 2]\"}}]"},
        /* cut off inside a call: kept as content */
        {"Sure.\n<tool_call>\n{\"name\": \"f\", \"argu", false, NULL, "Sure.\n<tool_call>\n{\"name\": \"f\", \"argu",
         NULL},
        /* calls inside the reasoning are thoughts, not calls */
        {"<think><tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call></think>ok", false,
         "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>", "ok", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_parse(&cases[i]);

    struct ty_chat_parsed p;
    CHECK_STATUS(ty_chat_parse(NULL, false, &p), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty_chat_parse("x", false, NULL), TY_ERR_INVALID_ARG);
}

/* What the model generated, parsed and rendered back as the last assistant turn, gives the same text. */
static void test_parse_render_roundtrip(void) {
    const char *gen = "<think>\nCheck the weather.\n</think>\n\nOne moment.\n<tool_call>\n{\"name\": \"get_weather\", "
                      "\"arguments\": {\"city\": \"Hangzhou\", \"days\": [1, 2.5]}}\n</tool_call>\n<tool_call>\n"
                      "{\"name\": \"clock\", \"arguments\": {}}\n</tool_call>";
    struct ty_chat_parsed p;
    CHECK_OK(ty_chat_parse(gen, false, &p));
    struct ty_chat_message m[] = {{"user", "q", NULL, NULL}, {"assistant", p.content, p.reasoning, p.tool_calls_json}};
    struct ty_chat_render_params rp = {0};
    char *out = render(m, 2, &rp);
    char want[1024];
    snprintf(want, sizeof want, "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n", gen);
    CHECK_MSG(out && !strcmp(out, want), "round trip gave \"%s\"", out ? out : "(null)");
    ty_free(out);
    ty_chat_parsed_free(&p);
}

static void test_parse_alloc_failures(void) {
    const char *gen = "<think>r</think>c\n<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":1}}</tool_call>";
    size_t before = ty_mem_allocated();
    bool succeeded = false;
    for (long k = 1; k < 100 && !succeeded; k++) {
        struct ty_chat_parsed p;
        ty__alloc_fail_after(k);
        enum ty_status st = ty_chat_parse(gen, false, &p);
        ty__alloc_fail_after(0);
        if (st == TY_OK) {
            succeeded = true;
            CHECK(p.tool_calls_json != NULL);
        } else {
            CHECK(st == TY_ERR_NO_MEMORY && !p.reasoning && !p.content && !p.tool_calls_json);
        }
        ty_chat_parsed_free(&p);
        CHECK_MSG(ty_mem_allocated() == before, "failure %ld leaked", k);
    }
    CHECK(succeeded);
}

void ty_tests(void) {
    TY_RUN(test_golden_cases);
    TY_RUN(test_assistant_null_content);
    TY_RUN(test_errors);
    TY_RUN(test_open_think_variant);
    TY_RUN(test_render_alloc_failures);
    TY_RUN(test_json_dump_py);
    TY_RUN(test_parse);
    TY_RUN(test_parse_render_roundtrip);
    TY_RUN(test_parse_alloc_failures);
}
