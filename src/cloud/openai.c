/*
 * openai.c - the OpenAI protocol: turns a /v1/chat/completions or /v1/completions body into a validated struct
 * ty_oai_request (every field checked for type and range, unknown or unimplemented fields refused with a 400 that
 * names them), writes OpenAI's error object, and splits a stream of generated text into reasoning, content and tool
 * calls as it arrives (the streaming twin of ty_chat_parse).
 *
 * Refusing beats ignoring: a field the server cannot honour is a 400 that says so, never silently dropped. Structured
 * output (response_format json_object/json_schema) and forced tool calls (tool_choice "required" or a named function)
 * are compiled here into a constrained-decoding grammar (model/constrain.h), so a schema the matcher cannot enforce
 * (format, pattern, minimum, ...) is refused with the keyword and its location before anything is queued. With
 * thinking on (chat only), the constraint starts after the reasoning block, as vLLM's reasoning parser hands over to
 * structured output: the reasoning stays free text and the answer (content, or the tool call) is constrained.
 * Fields OpenAI documents as hints (user, metadata, store, parallel_tool_calls, service_tier) are accepted.
 */
#include "cloud/cloud-impl.h"
#include "base/json.h"
#include "model/chat-impl.h"

#include <math.h>
#include <utf8proc.h>
#include <stdio.h>

/* ==== Errors ==== */

/* Replaces, in place, every byte of s that does not belong to a valid UTF-8 sequence with '?': an error quotes the
 * request (a key, jansson's "near '...'"), and a quote cut mid-character, or cut by the buffer's size, is not a JSON
 * string, so the error body could not be written at all. */
static void utf8_repair(char *s) {
    for (size_t i = 0, n = strlen(s); i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        s[i++] = '?';
    }
}

void ty__oai_error_set(struct ty_oai_error *err, int status, const char *type, const char *code, const char *param,
                       const char *fmt, ...) {
    err->status = status;
    err->type = type;
    err->code = code;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    utf8_repair(err->param);
    utf8_repair(err->message);
}

char *ty__oai_error_json(const struct ty_oai_error *err) {
    json_t *e = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", err->message, "type",
                          err->type ? err->type : "invalid_request_error", "param",
                          err->param[0] ? json_string(err->param) : json_null(), "code",
                          err->code ? json_string(err->code) : json_null());
    char *s = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    char *r = s ? ty__strdup(s) : NULL;
    free(s);
    return r;
}

#define BAD(param, ...)                                                                                                \
    do {                                                                                                               \
        ty__oai_error_set(err, 400, "invalid_request_error", NULL, param, __VA_ARGS__);                                \
        return TY_ERR_INVALID_ARG;                                                                                     \
    } while (0)
#define UNSUPPORTED(param, ...)                                                                                        \
    do {                                                                                                               \
        ty__oai_error_set(err, 400, "invalid_request_error", "unsupported_parameter", param, __VA_ARGS__);             \
        return TY_ERR_UNSUPPORTED;                                                                                     \
    } while (0)

/* ==== Field readers: absent or null keeps the default ==== */

static enum ty_status get_num(json_t *o, const char *k, double lo, double hi, double *out, struct ty_oai_error *err) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return TY_OK;
    if (!json_is_number(v)) BAD(k, "'%s' must be a number, not %s", k, ty__json_kind(v));
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) BAD(k, "'%s' is %g; it must be between %g and %g", k, d, lo, hi);
    *out = d;
    return TY_OK;
}

static enum ty_status get_int(json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *out, bool *set,
                              struct ty_oai_error *err) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return TY_OK;
    if (!json_is_integer(v)) BAD(k, "'%s' must be an integer, not %s", k, ty__json_kind(v));
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi)
        BAD(k, "'%s' is %lld; it must be between %lld and %lld", k, (long long)i, (long long)lo, (long long)hi);
    *out = i;
    if (set) *set = true;
    return TY_OK;
}

static enum ty_status get_bool(json_t *o, const char *k, bool *out, struct ty_oai_error *err) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return TY_OK;
    if (!json_is_boolean(v)) BAD(k, "'%s' must be a boolean, not %s", k, ty__json_kind(v));
    *out = json_is_true(v);
    return TY_OK;
}

static enum ty_status get_str(json_t *o, const char *k, char **out, struct ty_oai_error *err) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return TY_OK;
    if (!json_is_string(v)) BAD(k, "'%s' must be a string, not %s", k, ty__json_kind(v));
    if (strlen(json_string_value(v)) != json_string_length(v)) BAD(k, "'%s' contains a NUL character", k);
    if (!(*out = ty__strdup(json_string_value(v)))) BAD(k, "out of memory");
    return TY_OK;
}

static char *dump_compact(const json_t *v) {
    struct ty_buf b = {0};
    ty__json_dump_py(v, &b);
    char *s = NULL;
    return ty__buf_finish(&b, &s) == TY_OK ? s : NULL;
}

/* Message content: a string, null, or an array of {"type":"text","text":...} parts joined. */
static enum ty_status get_content(json_t *m, size_t i, char **out, struct ty_oai_error *err) {
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    json_t *c = json_object_get(m, "content");
    if (!c || json_is_null(c)) return TY_OK;
    if (json_is_string(c)) {
        if (strlen(json_string_value(c)) != json_string_length(c)) BAD(param, "'%s' contains a NUL character", param);
        *out = ty__strdup(json_string_value(c));
        return *out ? TY_OK : TY_ERR_NO_MEMORY;
    }
    if (!json_is_array(c))
        BAD(param, "'%s' must be a string or an array of content parts, not %s", param, ty__json_kind(c));
    struct ty_buf b = {0};
    size_t k;
    json_t *part;
    json_array_foreach(c, k, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type)) {
            ty__buf_free(&b);
            BAD(param, "'%s[%zu]' must be an object with a string 'type'", param, k);
        }
        if (strcmp(json_string_value(type), "text")) {
            ty__buf_free(&b);
            UNSUPPORTED(param, "content part type '%s' is not supported: this server serves text-only models",
                        json_string_value(type));
        }
        if (!json_is_string(text) || strlen(json_string_value(text)) != json_string_length(text)) {
            ty__buf_free(&b);
            BAD(param, "'%s[%zu].text' must be a string without NUL characters", param, k);
        }
        ty__buf_puts(&b, json_string_value(text));
    }
    if (!b.data) ty__buf_puts(&b, "");
    return ty__buf_finish(&b, out);
}

static enum ty_status parse_messages(json_t *root, struct ty_oai_request *r, struct ty_oai_error *err) {
    json_t *msgs = json_object_get(root, "messages");
    if (!msgs) BAD("messages", "'messages' is required");
    if (!json_is_array(msgs)) BAD("messages", "'messages' must be an array, not %s", ty__json_kind(msgs));
    if (!json_array_size(msgs)) BAD("messages", "'messages' must not be empty");
    if (json_array_size(msgs) > 100000) BAD("messages", "'messages' has too many entries");
    r->msgs = ty__calloc(json_array_size(msgs), sizeof *r->msgs);
    if (!r->msgs) BAD("messages", "out of memory");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(m)) BAD(param, "'%s' must be an object, not %s", param, ty__json_kind(m));
        struct ty_oai_message *o = &r->msgs[r->n_msgs++];
        json_t *role = json_object_get(m, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!json_is_string(role)) BAD(param, "'%s' must be a string", param);
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system"; /* OpenAI's newer name for the system role */
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            BAD(param, "unknown role '%s'; expected system, developer, user, assistant or tool", rs);
        if (!(o->role = ty__strdup(rs))) BAD(param, "out of memory");
        const char *const known[] = {"role",         "content",           "name",   "tool_calls",
                                     "tool_call_id", "reasoning_content", "refusal"};
        const char *key;
        json_t *val;
        json_object_foreach(m, key, val) {
            bool ok = false;
            for (size_t k = 0; k < sizeof known / sizeof *known; k++) ok |= !strcmp(key, known[k]);
            if (!ok) {
                snprintf(param, sizeof param, "messages[%zu]", i);
                BAD(param, "unknown field '%s' in '%s'", key, param);
            }
        }
        TY_TRY(get_content(m, i, &o->content, err));
        snprintf(param, sizeof param, "messages[%zu].name", i);
        TY_TRY(get_str(m, "name", &o->name, err));
        TY_TRY(get_str(m, "reasoning_content", &o->reasoning_content, err));
        TY_TRY(get_str(m, "tool_call_id", &o->tool_call_id, err));
        json_t *calls = json_object_get(m, "tool_calls");
        if (calls && !json_is_null(calls)) {
            snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
            if (strcmp(rs, "assistant")) BAD(param, "only assistant messages carry tool_calls");
            if (!json_is_array(calls)) BAD(param, "'%s' must be an array", param);
            size_t k;
            json_t *c;
            json_array_foreach(calls, k, c) {
                json_t *fn = json_object_get(c, "function");
                json_t *args = json_object_get(fn, "arguments");
                if (!json_is_object(c) || !json_is_object(fn) || !json_is_string(json_object_get(fn, "name")) ||
                    !(json_is_string(args) || json_is_object(args)))
                    BAD(param,
                        "'%s[%zu]' must be {\"id\", \"type\": \"function\", \"function\": {\"name\": string, "
                        "\"arguments\": string}}",
                        param, k);
            }
            if (!(o->tool_calls_json = dump_compact(calls))) BAD(param, "out of memory");
        }
        if (!o->content && !o->tool_calls_json && strcmp(rs, "assistant")) {
            snprintf(param, sizeof param, "messages[%zu].content", i);
            BAD(param, "'%s' is required for role '%s'", param, rs);
        }
    }
    return TY_OK;
}

static enum ty_status parse_tools(json_t *root, struct ty_oai_request *r, struct ty_oai_error *err) {
    json_t *tools = json_object_get(root, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools)) BAD("tools", "'tools' must be an array, not %s", ty__json_kind(tools));
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            json_t *fn = json_object_get(t, "function");
            json_t *type = json_object_get(t, "type");
            if (!json_is_object(t) || !json_is_string(type) || strcmp(json_string_value(type), "function") ||
                !json_is_object(fn) || !json_is_string(json_object_get(fn, "name")))
                BAD("tools", "'tools[%zu]' must be {\"type\": \"function\", \"function\": {\"name\": string, ...}}", i);
            json_t *params = json_object_get(fn, "parameters");
            if (params && !json_is_object(params))
                BAD("tools", "'tools[%zu].function.parameters' must be an object", i);
        }
        if (json_array_size(tools) && !(r->tools_json = dump_compact(tools))) BAD("tools", "out of memory");
    }
    json_t *tc = json_object_get(root, "tool_choice");
    if (tc && !json_is_null(tc)) {
        if (json_is_string(tc)) {
            const char *s = json_string_value(tc);
            if (strcmp(s, "auto") && strcmp(s, "none") && strcmp(s, "required"))
                BAD("tool_choice", "'tool_choice' must be \"auto\", \"none\", \"required\" or a function choice");
            if (!strcmp(s, "required") && !r->tools_json)
                BAD("tool_choice", "tool_choice \"required\" needs a non-empty 'tools' array");
            r->tool_choice = ty__strdup(s);
        } else if (json_is_object(tc)) {
            json_t *type = json_object_get(tc, "type"),
                   *name = json_object_get(json_object_get(tc, "function"), "name");
            if (!json_is_string(type) || strcmp(json_string_value(type), "function") || !json_is_string(name))
                BAD("tool_choice", "'tool_choice' as an object must be {\"type\": \"function\", \"function\": "
                                   "{\"name\": string}}");
            if (!r->tools_json) BAD("tool_choice", "tool_choice names a function but 'tools' is empty");
            r->tool_choice = ty__strdup(json_string_value(name)); /* the grammar checks it is one of the tools */
        } else {
            BAD("tool_choice", "'tool_choice' must be a string or an object, not %s", ty__json_kind(tc));
        }
    }
    return TY_OK;
}

static enum ty_status parse_stop(json_t *root, struct ty_oai_request *r, struct ty_oai_error *err) {
    json_t *stop = json_object_get(root, "stop");
    if (!stop || json_is_null(stop)) return TY_OK;
    json_t *one[1] = {stop};
    size_t n = 1;
    if (json_is_array(stop)) {
        n = json_array_size(stop);
        if (n > TY_MAX_STOP) BAD("stop", "'stop' has %zu entries; at most %d are allowed", n, TY_MAX_STOP);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(stop) ? json_array_get(stop, i) : one[0];
        if (!json_is_string(s)) BAD("stop", "'stop' must be a string or an array of strings");
        size_t len = json_string_length(s);
        if (!len || len > 256 || strlen(json_string_value(s)) != len)
            BAD("stop", "each stop string must be 1 to 256 bytes without NUL characters");
        if (!(r->stop[r->n_stop++] = ty__strdup(json_string_value(s)))) BAD("stop", "out of memory");
    }
    return TY_OK;
}

/* ==== Constrained decoding: logit_bias, response_format, forced tool calls ==== */

/* Most logit_bias entries: OpenAI accepts 300; more only costs a loop per step. */
#define MAX_LOGIT_BIAS 1024

/* {"token id": bias, ...}: ids as decimal strings, biases in [-100, 100] as OpenAI documents. */
static enum ty_status parse_logit_bias(json_t *root, struct ty_oai_request *r, struct ty_oai_error *err) {
    json_t *lb = json_object_get(root, "logit_bias");
    if (!lb || json_is_null(lb)) return TY_OK;
    if (!json_is_object(lb)) BAD("logit_bias", "'logit_bias' must be an object mapping token ids to biases");
    size_t n = json_object_size(lb);
    if (n > MAX_LOGIT_BIAS)
        BAD("logit_bias", "'logit_bias' has %zu entries; at most %d are allowed", n, MAX_LOGIT_BIAS);
    if (!n) return TY_OK;
    r->bias_ids = ty__malloc(n * sizeof *r->bias_ids);
    r->bias_vals = ty__malloc(n * sizeof *r->bias_vals);
    if (!r->bias_ids || !r->bias_vals) BAD("logit_bias", "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(lb, key, val) {
        char *end = NULL;
        long long id = strtoll(key, &end, 10);
        if (!key[0] || *end || key[0] == '-' || key[0] == '+' || id < 0 || id > INT32_MAX)
            BAD("logit_bias", "'logit_bias' key '%s' is not a token id (a non-negative integer as a string)", key);
        if (!json_is_number(val)) BAD("logit_bias", "'logit_bias[\"%s\"]' must be a number", key);
        double b = json_number_value(val);
        if (!(b >= -100 && b <= 100))
            BAD("logit_bias", "'logit_bias[\"%s\"]' is %g; it must be in [-100, 100]", key, b);
        r->bias_ids[r->n_bias] = (int32_t)id;
        r->bias_vals[r->n_bias++] = (float)b;
    }
    return TY_OK;
}

/* A grammar compile failure as a 400 naming `param`. */
static enum ty_status constraint_error(enum ty_status st, const char *param, struct ty_oai_error *err) {
    ty__oai_error_set(err, st == TY_ERR_NO_MEMORY ? 500 : 400,
                      st == TY_ERR_NO_MEMORY ? "server_error" : "invalid_request_error",
                      st == TY_ERR_UNSUPPORTED ? "unsupported_parameter" : NULL, param, "%s", ty_last_error());
    return st;
}

static enum ty_status parse_constraint(json_t *root, struct ty_oai_request *r, struct ty_oai_error *err) {
    struct ty_constrain_spec spec = {.after_reasoning = r->kind == TY_API_CHAT && r->thinking != TY_CHAT_THINKING_OFF};
    const char *param = NULL;
    bool forced = r->tool_choice && strcmp(r->tool_choice, "auto") && strcmp(r->tool_choice, "none");
    char *schema = NULL;
    json_t *rf = json_object_get(root, "response_format");
    if (rf && !json_is_null(rf)) {
        json_t *t = json_object_get(rf, "type");
        if (!json_is_object(rf) || !json_is_string(t))
            BAD("response_format", "'response_format' must be an object with a string 'type'");
        const char *ts = json_string_value(t), *key;
        json_t *val;
        json_object_foreach(rf, key, val) {
            if (strcmp(key, "type") && (strcmp(ts, "json_schema") || strcmp(key, "json_schema")))
                BAD("response_format", "unknown field 'response_format.%s'", key);
        }
        if (!strcmp(ts, "json_object")) {
            spec.kind = TY_CONSTRAIN_JSON_OBJECT;
            param = "response_format";
        } else if (!strcmp(ts, "json_schema")) {
            json_t *js = json_object_get(rf, "json_schema"), *name = json_object_get(js, "name");
            json_t *sch = json_object_get(js, "schema"), *strict = json_object_get(js, "strict");
            if (!json_is_object(js)) BAD("response_format", "'response_format.json_schema' must be an object");
            json_object_foreach(js, key, val) {
                if (strcmp(key, "name") && strcmp(key, "schema") && strcmp(key, "strict") && strcmp(key, "description"))
                    BAD("response_format", "unknown field 'response_format.json_schema.%s'", key);
            }
            if (!json_is_string(name) || !json_string_length(name) || json_string_length(name) > 64 ||
                strspn(json_string_value(name), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
                    json_string_length(name))
                BAD("response_format", "'response_format.json_schema.name' must be 1 to 64 letters, digits, '_' or "
                                       "'-'");
            if (strict && !json_is_boolean(strict) && !json_is_null(strict))
                BAD("response_format", "'response_format.json_schema.strict' must be a boolean");
            if (sch && !json_is_object(sch) && !json_is_boolean(sch))
                BAD("response_format", "'response_format.json_schema.schema' must be an object");
            /* strict or not, the output always follows the schema: there is no best-effort mode to fall back to */
            schema = sch ? json_dumps(sch, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            if (sch && !schema) BAD("response_format", "out of memory");
            spec.kind = TY_CONSTRAIN_JSON_SCHEMA;
            spec.schema_json = schema ? schema : "true";
            param = "response_format";
        } else if (strcmp(ts, "text")) {
            BAD("response_format", "unknown response_format type '%s'; expected text, json_object or json_schema", ts);
        }
    }
    if (forced) { /* a forced call wins: its arguments are the structured output */
        spec.kind = TY_CONSTRAIN_TOOL_CALL;
        spec.tools_json = r->tools_json;
        spec.tool_name = strcmp(r->tool_choice, "required") ? r->tool_choice : NULL;
        param = "tool_choice";
    }
    enum ty_status st = param ? ty__grammar_compile(&spec, &r->grammar) : TY_OK;
    free(schema); /* jansson's */
    return st == TY_OK ? TY_OK : constraint_error(st, param, err);
}

static bool field_known(enum ty_api_kind kind, const char *key) {
    static const char *const common[] = {"model",
                                         "stream",
                                         "stream_options",
                                         "n",
                                         "temperature",
                                         "top_p",
                                         "top_k",
                                         "min_p",
                                         "max_tokens",
                                         "stop",
                                         "seed",
                                         "presence_penalty",
                                         "frequency_penalty",
                                         "repetition_penalty",
                                         "logprobs",
                                         "user",
                                         "logit_bias",
                                         "response_format",
                                         "metadata",
                                         "store",
                                         "service_tier",
                                         "best_of"};
    static const char *const chat[] = {"messages",      "max_completion_tokens", "top_logprobs",         "tools",
                                       "tool_choice",   "parallel_tool_calls",   "chat_template_kwargs", "functions",
                                       "function_call", "reasoning_effort"};
    static const char *const compl [] = {"prompt", "echo", "suffix"};
    for (size_t i = 0; i < sizeof common / sizeof *common; i++)
        if (!strcmp(key, common[i])) return true;
    const char *const *list = kind == TY_API_CHAT ? chat : compl ;
    size_t n = kind == TY_API_CHAT ? sizeof chat / sizeof *chat : sizeof compl / sizeof *compl ;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(key, list[i])) return true;
    return false;
}

static enum ty_status parse_root(enum ty_api_kind kind, json_t *root, const char *served_model,
                                 struct ty_oai_request *r, struct ty_oai_error *err) {
    if (!json_is_object(root)) BAD(NULL, "the request body must be a JSON object, not %s", ty__json_kind(root));
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!field_known(kind, key)) BAD(key, "unrecognized request argument '%s'", key);
    }
    TY_TRY(get_str(root, "model", &r->model, err));
    if (r->model && strcmp(r->model, served_model)) {
        ty__oai_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                          "the model '%s' does not exist; this server serves '%s'", r->model, served_model);
        return TY_ERR_NOT_FOUND;
    }
    if (kind == TY_API_CHAT) {
        TY_TRY(parse_messages(root, r, err));
        TY_TRY(parse_tools(root, r, err));
        json_t *kw = json_object_get(root, "chat_template_kwargs");
        if (kw && !json_is_null(kw)) {
            if (!json_is_object(kw)) BAD("chat_template_kwargs", "'chat_template_kwargs' must be an object");
            json_object_foreach(kw, key, val) {
                if (strcmp(key, "enable_thinking"))
                    UNSUPPORTED("chat_template_kwargs",
                                "chat_template_kwargs.%s is not supported; only "
                                "enable_thinking is",
                                key);
                if (!json_is_boolean(val)) BAD("chat_template_kwargs", "'enable_thinking' must be a boolean");
                r->thinking = json_is_true(val) ? TY_CHAT_THINKING_ON : TY_CHAT_THINKING_OFF;
            }
        }
        if (json_object_get(root, "functions") || json_object_get(root, "function_call"))
            UNSUPPORTED("functions", "the deprecated 'functions'/'function_call' fields are not supported; use "
                                     "'tools'");
        if (json_object_get(root, "reasoning_effort") && !json_is_null(json_object_get(root, "reasoning_effort")))
            UNSUPPORTED("reasoning_effort", "'reasoning_effort' is not supported; switch thinking with "
                                            "chat_template_kwargs.enable_thinking");
    } else {
        json_t *p = json_object_get(root, "prompt");
        if (!p) BAD("prompt", "'prompt' is required");
        if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
            p = json_array_get(p, 0);
        if (json_is_string(p)) {
            if (strlen(json_string_value(p)) != json_string_length(p)) BAD("prompt", "'prompt' contains a NUL");
            if (!(r->prompt = ty__strdup(json_string_value(p)))) BAD("prompt", "out of memory");
        } else if (json_is_array(p) && json_array_size(p) && json_is_integer(json_array_get(p, 0))) {
            r->n_prompt_ids = json_array_size(p);
            if (!(r->prompt_ids = ty__malloc(r->n_prompt_ids * sizeof *r->prompt_ids))) BAD("prompt", "out of memory");
            for (size_t i = 0; i < r->n_prompt_ids; i++) {
                json_t *t = json_array_get(p, i);
                if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
                    BAD("prompt", "'prompt[%zu]' must be a token id (a non-negative integer)", i);
                r->prompt_ids[i] = (int32_t)json_integer_value(t);
            }
        } else if (json_is_array(p)) {
            UNSUPPORTED("prompt", "batched prompts (an array of several prompts) are not supported; send one request "
                                  "per prompt");
        } else {
            BAD("prompt", "'prompt' must be a string or an array of token ids, not %s", ty__json_kind(p));
        }
        TY_TRY(get_bool(root, "echo", &r->echo, err));
        if (r->echo) UNSUPPORTED("echo", "'echo' is not supported yet");
        json_t *suffix = json_object_get(root, "suffix");
        if (suffix && !json_is_null(suffix)) UNSUPPORTED("suffix", "'suffix' (fill-in-the-middle) is not supported");
    }

    int64_t n = 1, mt = -1, top_k = -1, top_lp = 0, seed = 0;
    bool set = false;
    TY_TRY(get_int(root, "n", 1, TY_MAX_N, &n, NULL, err));
    r->n = (int)n;
    json_t *bo = json_object_get(root, "best_of");
    if (bo && !json_is_null(bo) && !(json_is_integer(bo) && json_integer_value(bo) == r->n))
        UNSUPPORTED("best_of", "'best_of' other than n is not supported");
    TY_TRY(get_num(root, "temperature", 0, 2, &r->temperature, err));
    TY_TRY(get_num(root, "top_p", 0, 1, &r->top_p, err));
    if (json_object_get(root, "top_p") && r->top_p <= 0) BAD("top_p", "'top_p' must be greater than 0");
    TY_TRY(get_int(root, "top_k", -1, 1 << 30, &top_k, NULL, err));
    r->top_k = (int32_t)top_k;
    TY_TRY(get_num(root, "min_p", 0, 1, &r->min_p, err));
    TY_TRY(get_num(root, "presence_penalty", -2, 2, &r->presence_penalty, err));
    TY_TRY(get_num(root, "frequency_penalty", -2, 2, &r->frequency_penalty, err));
    TY_TRY(get_num(root, "repetition_penalty", 0.01, 10, &r->repetition_penalty, err));
    TY_TRY(get_int(root, "max_tokens", 1, 1 << 30, &mt, NULL, err));
    if (kind == TY_API_CHAT) TY_TRY(get_int(root, "max_completion_tokens", 1, 1 << 30, &mt, NULL, err));
    r->max_tokens = mt;
    if (kind == TY_API_COMPLETION && mt < 0) r->max_tokens = 16; /* OpenAI's default for completions */
    TY_TRY(get_int(root, "seed", INT64_MIN, INT64_MAX, &seed, &set, err));
    r->has_seed = set;
    r->seed = (uint64_t)seed;
    TY_TRY(parse_stop(root, r, err));
    set = false;
    if (kind == TY_API_CHAT) {
        TY_TRY(get_bool(root, "logprobs", &r->logprobs, err));
        TY_TRY(get_int(root, "top_logprobs", 0, TY_MAX_TOP_LOGP, &top_lp, &set, err));
        if (set && !r->logprobs) BAD("top_logprobs", "'top_logprobs' requires 'logprobs': true");
        r->top_logprobs = (int)top_lp;
    } else {
        /* completions: logprobs is the number of top alternatives (0..5) */
        TY_TRY(get_int(root, "logprobs", 0, 5, &top_lp, &set, err));
        r->logprobs = set;
        r->top_logprobs = (int)top_lp;
    }
    TY_TRY(get_bool(root, "stream", &r->stream, err));
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) BAD("stream_options", "'stream_options' must be an object");
        if (!r->stream) BAD("stream_options", "'stream_options' is only allowed with 'stream': true");
        json_object_foreach(so, key, val) {
            if (strcmp(key, "include_usage")) BAD("stream_options", "unknown field 'stream_options.%s'", key);
        }
        TY_TRY(get_bool(so, "include_usage", &r->include_usage, err));
    }
    TY_TRY(get_str(root, "user", &r->user, err));
    TY_TRY(parse_logit_bias(root, r, err));
    return parse_constraint(root, r, err);
}

enum ty_status ty__oai_parse(enum ty_api_kind kind, const char *body, size_t len, const char *served_model,
                             struct ty_oai_request *req, struct ty_oai_error *err) {
    memset(req, 0, sizeof *req);
    req->kind = kind;
    req->temperature = 1.0; /* OpenAI's defaults */
    req->top_p = 1.0;
    req->repetition_penalty = 1.0;
    req->n = 1;
    req->max_tokens = -1;
    memset(err, 0, sizeof *err);
    json_error_t je;
    /* JSON_REJECT_DUPLICATES: two values for one key is ambiguous; refusing beats guessing which one wins. */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        ty__oai_error_set(err, 400, "invalid_request_error", "invalid_json", NULL,
                          "the request body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return TY_ERR_FORMAT;
    }
    enum ty_status st = parse_root(kind, root, served_model, req, err);
    json_decref(root);
    if (st != TY_OK) {
        if (!err->status) ty__oai_error_set(err, 400, "invalid_request_error", NULL, NULL, "invalid request");
        ty__oai_request_free(req);
    }
    return st;
}

void ty__oai_request_free(struct ty_oai_request *r) {
    for (size_t i = 0; i < r->n_msgs; i++) {
        struct ty_oai_message *m = &r->msgs[i];
        ty_free(m->role);
        ty_free(m->content);
        ty_free(m->reasoning_content);
        ty_free(m->tool_calls_json);
        ty_free(m->tool_call_id);
        ty_free(m->name);
    }
    ty_free(r->msgs);
    ty_free(r->model);
    ty_free(r->prompt);
    ty_free(r->prompt_ids);
    ty_free(r->tools_json);
    ty_free(r->tool_choice);
    ty__grammar_unref(r->grammar);
    ty_free(r->bias_ids);
    ty_free(r->bias_vals);
    ty_free(r->user);
    for (int i = 0; i < r->n_stop; i++) ty_free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

/* ==== Streaming reasoning / content / tool-call split ==== */

enum { ST_START, ST_REASONING, ST_CONTENT, ST_TOOL };

#define T_THINK_OPEN  "<think>"
#define T_THINK_CLOSE "</think>"
#define T_TOOL_OPEN   "<tool_call>"
#define T_TOOL_CLOSE  "</tool_call>"

void ty__stream_parser_init(struct ty_stream_parser *p, bool parse_reasoning, bool parse_tools) {
    memset(p, 0, sizeof *p);
    p->parse_reasoning = parse_reasoning;
    p->parse_tools = parse_tools;
    p->state = parse_reasoning ? ST_START : ST_CONTENT;
}

void ty__stream_parser_free(struct ty_stream_parser *p) {
    ty__buf_free(&p->pend);
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of `tag`: text that may still become the tag. */
static size_t partial_tag(const char *s, size_t n, const char *tag) {
    size_t t = strlen(tag);
    for (size_t k = t - 1 < n ? t - 1 : n; k > 0; k--)
        if (!memcmp(s + n - k, tag, k)) return k;
    return 0;
}

static const char *find(const char *s, size_t n, const char *tag) {
    size_t t = strlen(tag);
    for (size_t i = 0; i + t <= n; i++)
        if (!memcmp(s + i, tag, t)) return s + i;
    return NULL;
}

static void consume(struct ty_stream_parser *p, size_t n) {
    memmove(p->pend.data, p->pend.data + n, p->pend.len - n + 1);
    p->pend.len -= n;
}

static void emit_content(struct ty_stream_parser *p, const char *s, size_t n, ty_stream_emit emit, void *user) {
    /* as the template reads a turn: content after </think> starts at its first non-newline */
    if (!p->content_started)
        while (n && *s == '\n') s++, n--;
    if (!n) return;
    p->content_started = true;
    emit(user, TY_PART_CONTENT, s, n, -1);
}

static void emit_tool(struct ty_stream_parser *p, const char *body, size_t n, ty_stream_emit emit, void *user) {
    /* one <tool_call> block through the whole-reply parser, so both paths read calls identically */
    struct ty_buf b = {0};
    ty__buf_puts(&b, T_TOOL_OPEN);
    ty__buf_append(&b, body, n);
    ty__buf_puts(&b, T_TOOL_CLOSE);
    struct ty_chat_parsed parsed;
    json_t *calls = NULL;
    if (!b.oom && ty_chat_parse(b.data, false, &parsed) == TY_OK) {
        if (parsed.tool_calls_json) calls = json_loads(parsed.tool_calls_json, 0, NULL);
        ty_chat_parsed_free(&parsed);
    }
    json_t *call = json_array_get(calls, 0);
    char *s = NULL;
    if (call) {
        char id[48];
        snprintf(id, sizeof id, "call_%d", p->n_tools);
        json_object_set_new(call, "id", json_string(id));
        s = json_dumps(call, JSON_COMPACT);
    }
    if (s) {
        emit(user, TY_PART_TOOL_CALL, s, strlen(s), p->n_tools++);
        free(s);
    } else {
        emit_content(p, b.data ? b.data : "", b.len, emit, user); /* malformed: stays visible as text */
    }
    json_decref(calls);
    ty__buf_free(&b);
}

void ty__stream_parser_feed(struct ty_stream_parser *p, const char *text, size_t n, bool final, ty_stream_emit emit,
                            void *user) {
    ty__buf_append(&p->pend, text, n);
    if (p->pend.oom) return;
    if (!p->pend.data) ty__buf_puts(&p->pend, "");
    for (;;) {
        char *s = p->pend.data;
        size_t len = p->pend.len;
        if (p->state == ST_START) {
            size_t ws = 0;
            while (ws < len && (s[ws] == ' ' || s[ws] == '\n' || s[ws] == '\t' || s[ws] == '\r')) ws++;
            size_t rest = len - ws, t = strlen(T_THINK_OPEN), tc = strlen(T_THINK_CLOSE);
            if (rest >= t && !memcmp(s + ws, T_THINK_OPEN, t)) {
                consume(p, ws + t);
                p->state = ST_REASONING;
                continue;
            }
            /* a reply that opens with </think> closed an empty block (the model skipped it, or a constraint made it
             * stop thinking at once), as ty_chat_parse reads it */
            if (rest >= tc && !memcmp(s + ws, T_THINK_CLOSE, tc)) {
                consume(p, ws + tc);
                p->state = ST_CONTENT;
                continue;
            }
            if (!final && ((rest < t && !memcmp(s + ws, T_THINK_OPEN, rest)) ||
                           (rest < tc && !memcmp(s + ws, T_THINK_CLOSE, rest))))
                return; /* may still open or close */
            p->state = ST_CONTENT;
            continue;
        }
        if (p->state == ST_REASONING) {
            if (!p->reasoning_started) { /* reasoning is stripped of newlines at both ends */
                size_t k = 0;
                while (k < len && s[k] == '\n') k++;
                if (k) {
                    consume(p, k);
                    continue;
                }
                if (!len) return;
            }
            const char *c = find(s, len, T_THINK_CLOSE);
            size_t upto = c ? (size_t)(c - s) : len - (final ? 0 : partial_tag(s, len, T_THINK_CLOSE));
            size_t e = upto; /* trailing newlines wait until more reasoning follows them */
            while (e && s[e - 1] == '\n') e--;
            if (e) {
                emit(user, TY_PART_REASONING, s, e, -1);
                p->reasoning_started = true;
            }
            if (c) {
                consume(p, upto + strlen(T_THINK_CLOSE));
                p->state = ST_CONTENT;
                continue;
            }
            consume(p, final ? len : e);
            return;
        }
        if (p->state == ST_CONTENT) {
            const char *o = p->parse_tools ? find(s, len, T_TOOL_OPEN) : NULL;
            size_t upto = o ? (size_t)(o - s) : len - (final || !p->parse_tools ? 0 : partial_tag(s, len, T_TOOL_OPEN));
            if (o) {
                /* content right before a call loses its trailing whitespace, as the template writes "\n" there */
                size_t e = upto;
                while (e && (s[e - 1] == '\n' || s[e - 1] == ' ')) e--;
                emit_content(p, s, e, emit, user);
                consume(p, upto + strlen(T_TOOL_OPEN));
                p->state = ST_TOOL;
                continue;
            }
            /* whitespace may turn out to be the template's separator before a call: hold it back */
            size_t e = upto;
            if (p->parse_tools && (!final || p->n_tools))
                while (e && (s[e - 1] == '\n' || s[e - 1] == ' ')) e--;
            emit_content(p, s, e, emit, user);
            consume(p, final ? len : e);
            return;
        }
        /* ST_TOOL */
        const char *c = find(s, len, T_TOOL_CLOSE);
        if (c) {
            emit_tool(p, s, (size_t)(c - s), emit, user);
            consume(p, (size_t)(c - s) + strlen(T_TOOL_CLOSE));
            /* whitespace between calls is the template's, not content */
            size_t ws = 0;
            while (ws < p->pend.len && (p->pend.data[ws] == '\n' || p->pend.data[ws] == ' ')) ws++;
            consume(p, ws);
            p->state = ST_CONTENT;
            continue;
        }
        if (final) { /* cut off mid-call: the text is content, as ty_chat_parse keeps it */
            struct ty_buf b = {0};
            ty__buf_puts(&b, T_TOOL_OPEN);
            ty__buf_append(&b, s, len);
            if (!b.oom) emit_content(p, b.data, b.len, emit, user);
            ty__buf_free(&b);
            consume(p, len);
        }
        return;
    }
}
