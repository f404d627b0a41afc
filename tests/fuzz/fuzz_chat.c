/*
 * fuzz_chat.c - libFuzzer target for the chat format. The first byte picks what runs; the rest is split at NUL bytes
 * into fields:
 *   mode 0/1: ty_chat_parse(field 0, started_in_thinking = mode), then the parsed turn rendered back as the last
 *             assistant message; tool calls that come out of the parser must be a JSON array;
 *   mode 2:   ty__chat_render_ex with tools_json = field 0 (empty = NULL) and messages from the following fields in
 *             threes: role byte + content, reasoning_content, tool_calls_json (empty = NULL). Bits of the first byte
 *             choose thinking, add_generation_prompt and open_think_in_prompt.
 * Regression inputs live in tests/fuzz/corpus/chat/.
 */
#include "model/chat-impl.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_FIELDS 64

static void fuzz_parse(const char *text, bool started) {
    struct ty_chat_parsed p;
    if (ty_chat_parse(text, started, &p) != TY_OK) return;
    TY_ASSERT(p.content != NULL);
    if (p.tool_calls_json) {
        json_t *calls = json_loads(p.tool_calls_json, 0, NULL);
        TY_ASSERT(json_is_array(calls) && json_array_size(calls) > 0);
        json_decref(calls);
    }
    struct ty_chat_message m[] = {{"user", "q", NULL, NULL}, {"assistant", p.content, p.reasoning, p.tool_calls_json}};
    struct ty_chat_render_params rp = {0};
    char *out = NULL;
    if (ty_chat_render(m, 2, &rp, &out) == TY_OK) TY_ASSERT(out != NULL);
    ty_free(out);
    ty_chat_parsed_free(&p);
}

static void fuzz_render(uint8_t flags, char **fields, size_t n_fields) {
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
    struct ty_chat_message msgs[MAX_FIELDS / 3];
    size_t n = 0;
    for (size_t i = 1; i < n_fields && n < MAX_FIELDS / 3; i += 3) {
        const char *f = fields[i];
        const char *role = *f ? roles[(uint8_t)*f % 5] : NULL;
        const char *content = *f ? f + 1 : NULL; /* an empty field gives a NULL role and content */
        const char *reasoning = i + 1 < n_fields && *fields[i + 1] ? fields[i + 1] : NULL;
        const char *calls = i + 2 < n_fields && *fields[i + 2] ? fields[i + 2] : NULL;
        msgs[n++] = (struct ty_chat_message){role, content, reasoning, calls};
    }
    struct ty_chat_render_params p = {
        .tools_json = n_fields && *fields[0] ? fields[0] : NULL,
        .add_generation_prompt = flags & 0x20,
        .thinking = (enum ty_chat_thinking)((flags >> 2) % 3),
    };
    struct ty__chat_render_opts o = {.open_think_in_prompt = flags & 0x40};
    char *out = NULL;
    enum ty_status st = ty__chat_render_ex(msgs, n, &p, &o, &out);
    TY_ASSERT((st == TY_OK) == (out != NULL));
    ty_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *buf = malloc(size); /* the rest of the input plus a final NUL */
    if (!buf) return 0;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    char *fields[MAX_FIELDS];
    size_t n_fields = 0;
    for (char *p = buf; n_fields < MAX_FIELDS && p <= buf + size - 1; p += strlen(p) + 1) fields[n_fields++] = p;
    switch (data[0] % 3) {
    case 0:
    case 1:
        fuzz_parse(fields[0], data[0] % 3 == 1);
        break;
    default:
        fuzz_render(data[0], fields, n_fields);
    }
    free(buf);
    return 0;
}
