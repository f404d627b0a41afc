/*
 * fuzz_openai_request.c - libFuzzer target for the OpenAI request parser and the streaming output splitter. The first
 * byte picks what runs on the rest of the input:
 *   even: ty__oai_parse as /v1/chat/completions (bit 1 clear) or /v1/completions; a parse that succeeds must give a
 *         request within the validated ranges, and a failure must carry a 4xx status and a JSON error body;
 *   odd:  ty__stream_parser_feed over the bytes cut in pieces whose sizes come from the input itself; every tool call
 *         it emits must be a JSON object with a function name.
 * Seeds and regressions live in tests/fuzz/corpus/openai_request/.
 */
#include "cloud/cloud-impl.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static void check_request(const struct ty_oai_request *r) {
    TY_ASSERT(r->n >= 1 && r->n <= TY_MAX_N);
    TY_ASSERT(r->n_stop >= 0 && r->n_stop <= TY_MAX_STOP);
    TY_ASSERT(r->temperature >= 0 && r->temperature <= 2);
    TY_ASSERT(r->top_p > 0 && r->top_p <= 1);
    TY_ASSERT(r->max_tokens == -1 || (r->max_tokens >= 1 && r->max_tokens <= (1 << 30)));
    TY_ASSERT(r->top_logprobs >= 0 && r->top_logprobs <= TY_MAX_TOP_LOGP);
    if (r->kind == TY_API_CHAT) {
        TY_ASSERT(r->n_msgs > 0 && r->msgs);
        for (size_t i = 0; i < r->n_msgs; i++) TY_ASSERT(r->msgs[i].role != NULL);
    } else {
        TY_ASSERT(r->prompt || r->prompt_ids);
    }
}

static void on_part(void *user, enum ty_stream_part part, const char *text, size_t n, int idx) {
    (void)user;
    if (part != TY_PART_TOOL_CALL) return;
    json_t *call = json_loadb(text, n, 0, NULL);
    TY_ASSERT(json_is_object(call) && idx >= 0);
    TY_ASSERT(json_is_string(json_object_get(json_object_get(call, "function"), "name")));
    json_decref(call);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    if (!(mode & 1)) {
        struct ty_oai_request r;
        struct ty_oai_error e;
        enum ty_api_kind kind = mode & 2 ? TY_API_COMPLETION : TY_API_CHAT;
        if (ty__oai_parse(kind, text, n, "m", &r, &e) == TY_OK) {
            check_request(&r);
            ty__oai_request_free(&r);
        } else {
            TY_ASSERT(e.status >= 400 && e.status < 500 && e.message[0]);
            char *j = ty__oai_error_json(&e);
            TY_ASSERT(j != NULL);
            json_t *o = json_loads(j, 0, NULL);
            TY_ASSERT(json_is_object(json_object_get(o, "error")));
            json_decref(o);
            ty_free(j);
        }
        return 0;
    }
    struct ty_stream_parser p;
    ty__stream_parser_init(&p, mode & 2, mode & 4);
    size_t step = 1 + (mode >> 3), i = 0;
    while (i < n) {
        size_t k = n - i < step ? n - i : step;
        ty__stream_parser_feed(&p, text + i, k, false, on_part, NULL);
        i += k;
    }
    ty__stream_parser_feed(&p, "", 0, true, on_part, NULL);
    ty__stream_parser_free(&p);
    return 0;
}
