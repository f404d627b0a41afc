/*
 * chat.c - Qwen's ChatML chat format, natively. ty_chat_render writes a conversation byte for byte as Qwen3's Jinja
 * chat template does when transformers runs it (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, `tojson` =
 * json.dumps(x, ensure_ascii=False)); no template is ever executed. ty_chat_parse takes what the model generated
 * apart again: reasoning, content, and <tool_call> blocks as OpenAI tool calls.
 *
 * The template's rules, in the order it applies them (tests/data/chat/qwen3_chat_template.jinja is the source):
 *  - tools given: one system turn holds the first system message, then "# Tools" and each tool as `tojson`;
 *  - last_query_index: the last user message that is not a wrapped "<tool_response>...</tool_response>";
 *  - an assistant turn after that index keeps its reasoning in a <think> block when it is the last message or has
 *    non-empty reasoning; earlier assistant turns keep only their content (split off at </think>);
 *  - tool calls follow the content, one <tool_call> block each; consecutive tool messages share one user turn.
 *
 * Where the template would fail (Python raising on a None) this file returns an error instead, except for one case
 * that OpenAI clients send every day: an assistant message with content NULL (tool calls only) renders as "".
 */
#include "model/chat-impl.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ==== Python-compatible JSON writer (the template's tojson) ==== */

static void dump_str(struct ty_buf *b, const char *s, size_t n) {
    ty__buf_append(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char hex[8];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            if (c < 0x20) {
                snprintf(hex, sizeof hex, "\\u%04x", c); /* Python writes lowercase hex */
                esc = hex;
            }
        }
        if (!esc) continue;
        ty__buf_append(b, s + run, i - run);
        ty__buf_puts(b, esc);
        run = i + 1;
    }
    ty__buf_append(b, s + run, n - run);
    ty__buf_append(b, "\"", 1);
}

/* Python's repr(float): the shortest digit string that reads back as the same double, written positionally when the
 * decimal point falls within [-4, 16) digits of the first one and in exponent form otherwise (CPython's
 * format_float_short with mode 'r': "1e-05", "0.0001", "1e+16", "1000000000000000.0"). */
static void dump_real(struct ty_buf *b, double x) {
    if (isnan(x)) {
        ty__buf_puts(b, "NaN");
        return;
    }
    if (isinf(x)) {
        ty__buf_puts(b, x > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (x == 0) {
        ty__buf_puts(b, signbit(x) ? "-0.0" : "0.0");
        return;
    }
    char e[48];
    for (int prec = 0; prec <= 16; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, x);
        if (strtod(e, NULL) == x) break;
    }
    /* e is "[-]d[.ddd]e(+|-)XX": collect the digits and the exponent. */
    const char *p = e;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[24];
    size_t nd = 0;
    for (; *p && *p != 'e'; p++)
        if (isdigit((unsigned char)*p) && nd < sizeof digits - 1) digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    int decpt = exp10 + 1; /* value = 0.DIGITS * 10^decpt */
    if (neg) ty__buf_append(b, "-", 1);
    if (decpt <= -4 || decpt > 16) {
        ty__buf_append(b, digits, 1);
        if (nd > 1) {
            ty__buf_append(b, ".", 1);
            ty__buf_append(b, digits + 1, nd - 1);
        }
        ty__buf_printf(b, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    } else if (decpt <= 0) {
        ty__buf_puts(b, "0.");
        for (int i = 0; i < -decpt; i++) ty__buf_append(b, "0", 1);
        ty__buf_append(b, digits, nd);
    } else if ((size_t)decpt < nd) {
        ty__buf_append(b, digits, (size_t)decpt);
        ty__buf_append(b, ".", 1);
        ty__buf_append(b, digits + decpt, nd - (size_t)decpt);
    } else {
        ty__buf_append(b, digits, nd);
        for (size_t i = nd; i < (size_t)decpt; i++) ty__buf_append(b, "0", 1);
        ty__buf_puts(b, ".0");
    }
}

void ty__json_dump_py(const json_t *v, struct ty_buf *b) {
    json_t *mv = (json_t *)v; /* jansson's iterators take non-const pointers but do not modify */
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        ty__buf_append(b, "{", 1);
        bool first = true;
        for (void *it = json_object_iter(mv); it; it = json_object_iter_next(mv, it)) {
            if (!first) ty__buf_puts(b, ", ");
            first = false;
            dump_str(b, json_object_iter_key(it), json_object_iter_key_len(it));
            ty__buf_puts(b, ": ");
            ty__json_dump_py(json_object_iter_value(it), b);
        }
        ty__buf_append(b, "}", 1);
        break;
    }
    case JSON_ARRAY:
        ty__buf_append(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) ty__buf_puts(b, ", ");
            ty__json_dump_py(json_array_get(v, i), b);
        }
        ty__buf_append(b, "]", 1);
        break;
    case JSON_STRING:
        dump_str(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        ty__buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        dump_real(b, json_real_value(v));
        break;
    case JSON_TRUE:
        ty__buf_puts(b, "true");
        break;
    case JSON_FALSE:
        ty__buf_puts(b, "false");
        break;
    case JSON_NULL:
        ty__buf_puts(b, "null");
        break;
    }
}

enum ty_status ty__json_parse(const char *text, size_t len, const char *what, json_t **out) {
    json_error_t err;
    *out = json_loadb(text, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &err);
    if (!*out)
        return ty__error(TY_ERR_INVALID_ARG, "%s is not valid JSON: %s (line %d, column %d)", what, err.text, err.line,
                         err.column);
    return TY_OK;
}

/* Jinja's truthiness of a JSON value: empty containers and strings, zero, false and null are false. */
static bool json_truthy(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return json_object_size(v) > 0;
    case JSON_ARRAY:
        return json_array_size(v) > 0;
    case JSON_STRING:
        return json_string_length(v) > 0;
    case JSON_INTEGER:
        return json_integer_value(v) != 0;
    case JSON_REAL:
        return json_real_value(v) != 0;
    case JSON_TRUE:
        return true;
    default:
        return false;
    }
}

/* ==== Spans: the template's Python string methods ==== */

struct span {
    const char *p;
    size_t n;
};

static struct span span_of(const char *s) {
    return (struct span){s, strlen(s)};
}

static struct span lstrip_nl(struct span s) {
    while (s.n && s.p[0] == '\n') s.p++, s.n--;
    return s;
}

static struct span rstrip_nl(struct span s) {
    while (s.n && s.p[s.n - 1] == '\n') s.n--;
    return s;
}

/* First (or last) occurrence of NUL-terminated `pat` inside `s`, or NULL. */
static const char *span_find(struct span s, const char *pat, bool last) {
    size_t m = strlen(pat);
    const char *hit = NULL;
    for (size_t i = 0; i + m <= s.n; i++) {
        if (memcmp(s.p + i, pat, m) != 0) continue;
        hit = s.p + i;
        if (!last) break;
    }
    return hit;
}

static bool has_prefix(const char *s, const char *pre) {
    return strncmp(s, pre, strlen(pre)) == 0;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && memcmp(s + n - m, suf, m) == 0;
}

static void put_span(struct ty_buf *b, struct span s) {
    ty__buf_append(b, s.p, s.n);
}

/* ==== Rendering ==== */

enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL };

static enum ty_status role_of(const struct ty_chat_message *m, size_t i, enum role *out) {
    static const char *const names[] = {"system", "user", "assistant", "tool"};
    if (!m->role)
        return ty__error(TY_ERR_INVALID_ARG, "message %zu has no role; give system, user, assistant or tool", i);
    for (int r = 0; r < 4; r++) {
        if (strcmp(m->role, names[r]) == 0) {
            *out = (enum role)r;
            if (r != ROLE_ASSISTANT && !m->content)
                return ty__error(TY_ERR_INVALID_ARG,
                                 "message %zu (%s) has no content; only an assistant message may "
                                 "leave it NULL",
                                 i, m->role);
            return TY_OK;
        }
    }
    return ty__error(TY_ERR_INVALID_ARG,
                     "message %zu has unknown role '%s'; Qwen's chat format knows system, user, "
                     "assistant and tool",
                     i, m->role);
}

/* A JSON string that is written raw into the prompt must hold no NUL, which would cut the C string short. */
static enum ty_status raw_json_string(const json_t *v, const char *what, size_t i, size_t k, struct ty_buf *b) {
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v))
        return ty__error(TY_ERR_INVALID_ARG, "message %zu, tool call %zu: %s contains a NUL character", i, k, what);
    ty__buf_puts(b, s);
    return TY_OK;
}

/* {%- for tool_call in message.tool_calls %} ... {%- endfor %} */
static enum ty_status render_tool_calls(const json_t *calls, size_t i, bool content_truthy, struct ty_buf *b) {
    for (size_t k = 0; k < json_array_size(calls); k++) {
        const json_t *tc = json_array_get(calls, k);
        if (!json_is_object(tc))
            return ty__error(TY_ERR_INVALID_ARG, "message %zu, tool call %zu is not a JSON object", i, k);
        if ((k == 0 && content_truthy) || k > 0) ty__buf_append(b, "\n", 1);
        const json_t *fn = json_object_get(tc, "function");
        if (fn && json_truthy(fn)) {
            if (!json_is_object(fn))
                return ty__error(TY_ERR_INVALID_ARG, "message %zu, tool call %zu: \"function\" is not an object", i, k);
            tc = fn;
        }
        const json_t *name = json_object_get(tc, "name");
        if (!json_is_string(name))
            return ty__error(TY_ERR_INVALID_ARG, "message %zu, tool call %zu has no function name (a string)", i, k);
        ty__buf_puts(b, "<tool_call>\n{\"name\": \"");
        TY_TRY(raw_json_string(name, "the function name", i, k, b));
        ty__buf_puts(b, "\", \"arguments\": ");
        const json_t *args = json_object_get(tc, "arguments");
        if (!args)
            return ty__error(TY_ERR_INVALID_ARG,
                             "message %zu, tool call %zu has no \"arguments\"; give an object or "
                             "a JSON string",
                             i, k);
        if (json_is_string(args))
            TY_TRY(raw_json_string(args, "the arguments string", i, k, b));
        else
            ty__json_dump_py(args, b);
        ty__buf_puts(b, "}\n</tool_call>");
    }
    return TY_OK;
}

static enum ty_status render_assistant(const struct ty_chat_message *m, size_t i, bool last, size_t last_query,
                                       struct ty_buf *b) {
    struct span content = span_of(m->content ? m->content : "");
    struct span reasoning = {"", 0};
    if (m->reasoning_content) {
        reasoning = span_of(m->reasoning_content);
    } else if (span_find(content, "</think>", false)) {
        /* content.split('</think>')[-1].lstrip('\n') and
         * content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
        const char *first = span_find(content, "</think>", false), *lastc = span_find(content, "</think>", true);
        struct span before = rstrip_nl((struct span){content.p, (size_t)(first - content.p)});
        const char *open = span_find(before, "<think>", true);
        if (open) before = (struct span){open + 7, before.n - (size_t)(open + 7 - before.p)};
        reasoning = lstrip_nl(before);
        content = lstrip_nl((struct span){lastc + 8, content.n - (size_t)(lastc + 8 - content.p)});
    }
    ty__buf_puts(b, "<|im_start|>assistant\n");
    if (i > last_query && (last || reasoning.n)) {
        ty__buf_puts(b, "<think>\n");
        put_span(b, rstrip_nl(lstrip_nl(reasoning)));
        ty__buf_puts(b, "\n</think>\n\n");
        put_span(b, lstrip_nl(content));
    } else {
        put_span(b, content);
    }
    if (m->tool_calls_json) {
        json_t *calls;
        TY_TRY(ty__json_parse(m->tool_calls_json, strlen(m->tool_calls_json), "tool_calls_json", &calls));
        enum ty_status st = TY_OK;
        if (json_truthy(calls)) {
            if (!json_is_array(calls))
                st = ty__error(TY_ERR_INVALID_ARG, "message %zu: tool_calls_json is not a JSON array", i);
            else
                st = render_tool_calls(calls, i, content.n > 0, b);
        }
        json_decref(calls);
        if (st != TY_OK) return ty__error_prefix(st, "rendering the chat");
    }
    ty__buf_puts(b, "<|im_end|>\n");
    return TY_OK;
}

static void render_tools_header(const struct ty_chat_message *msgs, const json_t *tools, struct ty_buf *b) {
    ty__buf_puts(b, "<|im_start|>system\n");
    if (!strcmp(msgs[0].role, "system")) {
        ty__buf_puts(b, msgs[0].content);
        ty__buf_puts(b, "\n\n");
    }
    ty__buf_puts(b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
                    "with function signatures within <tools></tools> XML tags:\n<tools>");
    for (size_t k = 0; k < json_array_size(tools); k++) {
        ty__buf_append(b, "\n", 1);
        ty__json_dump_py(json_array_get(tools, k), b);
    }
    ty__buf_puts(b, "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                    "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
                    "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
}

static enum ty_status render(const struct ty_chat_message *msgs, size_t n, const struct ty_chat_render_params *params,
                             const struct ty__chat_render_opts *opts, const json_t *tools, struct ty_buf *b) {
    enum role *roles = ty__malloc(n * sizeof *roles);
    if (!roles) return ty__error(TY_ERR_NO_MEMORY, "out of memory rendering %zu chat messages", n);
    enum ty_status st = TY_OK;
    for (size_t i = 0; i < n && st == TY_OK; i++) st = role_of(&msgs[i], i, &roles[i]);
    if (st != TY_OK) {
        ty_free(roles);
        return st;
    }

    if (tools && json_truthy(tools)) {
        render_tools_header(msgs, tools, b);
    } else if (roles[0] == ROLE_SYSTEM) {
        ty__buf_puts(b, "<|im_start|>system\n");
        ty__buf_puts(b, msgs[0].content);
        ty__buf_puts(b, "<|im_end|>\n");
    }

    /* The last real user query: tool results that come back as user turns wrapped in <tool_response> do not count. */
    size_t last_query = n - 1;
    for (size_t k = n; k-- > 0;) {
        if (roles[k] != ROLE_USER) continue;
        const char *c = msgs[k].content;
        if (has_prefix(c, "<tool_response>") && has_suffix(c, "</tool_response>")) continue;
        last_query = k;
        break;
    }

    for (size_t i = 0; i < n && st == TY_OK; i++) {
        const struct ty_chat_message *m = &msgs[i];
        switch (roles[i]) {
        case ROLE_SYSTEM: /* a system message after the first renders like a user one; the first is done above */
        case ROLE_USER:
            if (roles[i] == ROLE_USER || i > 0)
                ty__buf_printf(b, "<|im_start|>%s\n%s<|im_end|>\n", m->role, m->content);
            break;
        case ROLE_ASSISTANT:
            st = render_assistant(m, i, i == n - 1, last_query, b);
            break;
        case ROLE_TOOL:
            if (i == 0 || roles[i - 1] != ROLE_TOOL) ty__buf_puts(b, "<|im_start|>user");
            ty__buf_puts(b, "\n<tool_response>\n");
            ty__buf_puts(b, m->content);
            ty__buf_puts(b, "\n</tool_response>");
            if (i == n - 1 || roles[i + 1] != ROLE_TOOL) ty__buf_puts(b, "<|im_end|>\n");
            break;
        }
    }
    ty_free(roles);
    if (st != TY_OK) return st;

    if (params->add_generation_prompt) {
        ty__buf_puts(b, "<|im_start|>assistant\n");
        if (params->thinking == TY_CHAT_THINKING_OFF)
            ty__buf_puts(b, "<think>\n\n</think>\n\n");
        else if (opts->open_think_in_prompt)
            ty__buf_puts(b, "<think>\n");
    }
    return TY_OK;
}

enum ty_status ty__chat_render_ex(const struct ty_chat_message *msgs, size_t n_msgs,
                                  const struct ty_chat_render_params *params, const struct ty__chat_render_opts *opts,
                                  char **out) {
    if (!out) return ty__error(TY_ERR_INVALID_ARG, "ty_chat_render: out is NULL");
    *out = NULL;
    if (!params) return ty__error(TY_ERR_INVALID_ARG, "ty_chat_render: params is NULL");
    if (n_msgs == 0 || !msgs)
        return ty__error(TY_ERR_INVALID_ARG, "ty_chat_render: no messages; Qwen's template needs at least one");
    if ((unsigned)params->thinking > TY_CHAT_THINKING_OFF)
        return ty__error(TY_ERR_INVALID_ARG, "ty_chat_render: thinking mode %d is not one of enum ty_chat_thinking",
                         (int)params->thinking);
    static const struct ty__chat_render_opts no_opts = {0};
    if (!opts) opts = &no_opts;

    json_t *tools = NULL;
    if (params->tools_json) {
        TY_TRY(ty__json_parse(params->tools_json, strlen(params->tools_json), "tools_json", &tools));
        if (json_truthy(tools) && !json_is_array(tools)) {
            json_decref(tools);
            return ty__error(TY_ERR_INVALID_ARG, "tools_json is not a JSON array of tool definitions");
        }
    }
    struct ty_buf b = {0};
    enum ty_status st = render(msgs, n_msgs, params, opts, tools, &b);
    json_decref(tools);
    if (st != TY_OK) {
        ty__buf_free(&b);
        return st;
    }
    return ty__buf_finish(&b, out);
}

enum ty_status ty_chat_render(const struct ty_chat_message *msgs, size_t n_msgs,
                              const struct ty_chat_render_params *params, char **out) {
    return ty__chat_render_ex(msgs, n_msgs, params, NULL, out);
}

/* ==== Parsing generated text ==== */

static bool is_ws(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

/* Appends one <tool_call> body to `calls` as an OpenAI tool call. TY_ERR_FORMAT (no message set) when the body is not
 * {"name": string, "arguments": ...}; the caller then keeps the text as content. */
static enum ty_status parse_tool_call(struct span body, json_t *calls) {
    while (body.n && is_ws(body.p[0])) body.p++, body.n--;
    while (body.n && is_ws(body.p[body.n - 1])) body.n--;
    json_error_t err;
    json_t *call = json_loadb(body.p, body.n, 0, &err);
    const json_t *name = json_object_get(call, "name"), *args = json_object_get(call, "arguments");
    if (!json_is_object(call) || !json_is_string(name)) {
        json_decref(call);
        return TY_ERR_FORMAT;
    }
    /* OpenAI sends arguments as a JSON string. An object is written as json.dumps writes it, which is also how the
     * template shows it back to the model; a string the model gave is kept as is; none means no arguments. */
    struct ty_buf a = {0};
    if (!args)
        ty__buf_puts(&a, "{}");
    else if (json_is_string(args))
        ty__buf_append(&a, json_string_value(args), json_string_length(args));
    else
        ty__json_dump_py(args, &a);
    char id[32];
    snprintf(id, sizeof id, "call_%zu", json_array_size(calls));
    json_t *fn = a.oom ? NULL : json_pack("{s:O,s:s%}", "name", name, "arguments", a.data ? a.data : "", a.len);
    /* "o" hands fn to the new object, which jansson frees even when packing fails */
    json_t *entry = fn ? json_pack("{s:s,s:s,s:o}", "type", "function", "id", id, "function", fn) : NULL;
    bool ok = entry && json_array_append_new(calls, entry) == 0;
    ty__buf_free(&a);
    json_decref(call);
    return ok ? TY_OK : ty__error(TY_ERR_NO_MEMORY, "out of memory parsing a tool call");
}

static enum ty_status parse_content(struct span body, struct ty_chat_parsed *out) {
    json_t *calls = json_array();
    if (!calls) return ty__error(TY_ERR_NO_MEMORY, "out of memory parsing generated text");
    struct ty_buf content = {0};
    const char *pos = body.p, *end = body.p + body.n;
    for (;;) {
        const char *open = span_find((struct span){pos, (size_t)(end - pos)}, "<tool_call>", false);
        if (!open) break;
        const char *inner = open + strlen("<tool_call>");
        const char *close = span_find((struct span){inner, (size_t)(end - inner)}, "</tool_call>", false);
        if (!close) break; /* cut off mid-call: the text stays content */
        const char *after = close + strlen("</tool_call>");
        enum ty_status st = parse_tool_call((struct span){inner, (size_t)(close - inner)}, calls);
        if (st == TY_ERR_NO_MEMORY) {
            ty__buf_free(&content);
            json_decref(calls);
            return st;
        }
        /* a malformed call stays in the content as the model wrote it: visible, never silently dropped */
        ty__buf_append(&content, pos, (size_t)((st == TY_OK ? open : after) - pos));
        pos = after;
    }
    ty__buf_append(&content, pos, (size_t)(end - pos));

    /* The template writes content.lstrip('\n'), and "\n" between the content and each tool-call block. */
    size_t start = 0, len = content.len;
    while (start < len && content.data[start] == '\n') start++;
    if (json_array_size(calls))
        while (len > start && is_ws(content.data[len - 1])) len--;
    out->content = content.oom ? NULL : ty__strndup(content.data ? content.data + start : "", len - start);
    ty__buf_free(&content);
    if (!out->content) {
        json_decref(calls);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory parsing generated text");
    }
    if (json_array_size(calls)) {
        char *s = json_dumps(calls, JSON_COMPACT);
        out->tool_calls_json = s ? ty__strdup(s) : NULL;
        free(s); /* jansson allocates with malloc */
        if (!out->tool_calls_json) {
            json_decref(calls);
            return ty__error(TY_ERR_NO_MEMORY, "out of memory writing parsed tool calls");
        }
    }
    json_decref(calls);
    return TY_OK;
}

enum ty_status ty_chat_parse(const char *text, bool started_in_thinking, struct ty_chat_parsed *out) {
    if (!out) return ty__error(TY_ERR_INVALID_ARG, "ty_chat_parse: out is NULL");
    memset(out, 0, sizeof *out);
    if (!text) return ty__error(TY_ERR_INVALID_ARG, "ty_chat_parse: text is NULL");
    struct span all = span_of(text);

    /* Where the reasoning starts: after a leading <think>, at the very start when the prompt opened the block, or
     * (with neither) at the start when a </think> follows anyway, which is how the template itself reads a turn. */
    const char *lead = text;
    while (is_ws(*lead)) lead++;
    const char *rs = NULL;
    if (has_prefix(lead, "<think>"))
        rs = lead + strlen("<think>");
    else if (started_in_thinking)
        rs = text;
    const char *close = span_find(rs ? (struct span){rs, (size_t)(all.p + all.n - rs)} : all, "</think>", false);
    if (!rs && close) rs = text;

    struct span body = all;
    if (rs) {
        const char *rend = close ? close : all.p + all.n; /* unterminated: still thinking when generation stopped */
        struct span r = rstrip_nl(lstrip_nl((struct span){rs, (size_t)(rend - rs)}));
        out->reasoning = ty__strndup(r.p, r.n);
        if (!out->reasoning) return ty__error(TY_ERR_NO_MEMORY, "out of memory parsing generated text");
        const char *bstart = close ? close + strlen("</think>") : all.p + all.n;
        body = (struct span){bstart, (size_t)(all.p + all.n - bstart)};
    }
    enum ty_status st = parse_content(body, out);
    if (st != TY_OK) ty_chat_parsed_free(out);
    return st;
}

void ty_chat_parsed_free(struct ty_chat_parsed *p) {
    if (!p) return;
    ty_free(p->reasoning);
    ty_free(p->content);
    ty_free(p->tool_calls_json);
    memset(p, 0, sizeof *p);
}
