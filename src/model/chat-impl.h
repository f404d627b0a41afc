/*
 * chat-impl.h - internal entry points of the chat format (chat.c) beyond ty_chat_render/ty_chat_parse: the rendering
 * variant for Qwen templates whose generation prompt opens the <think> block itself, and the Python-compatible JSON
 * writer the template's `tojson` filter needs, which the server reuses so that what it sends back matches what the
 * model was shown.
 */
#ifndef TY_CHAT_IMPL_H
#define TY_CHAT_IMPL_H

#include "base/base.h"

#include <jansson.h>

/* Options that select among Qwen chat-template variants; zero-initialise for Qwen3's template. */
struct ty__chat_render_opts {
    /* The generation prompt ends "<think>\n" (Qwen3-*-Thinking-2507 and Qwen3.5 templates): the model's output then
     * holds only the closing </think>; parse it with ty_chat_parse(text, true, ...). With TY_CHAT_THINKING_OFF the
     * prompt ends with the closed empty block "<think>\n\n</think>\n\n" instead, as those templates do for
     * enable_thinking=false. */
    bool open_think_in_prompt;
};

/* ty_chat_render with variant options; `opts` may be NULL (Qwen3's template). */
enum ty_status ty__chat_render_ex(const struct ty_chat_message *msgs, size_t n_msgs,
                                  const struct ty_chat_render_params *params, const struct ty__chat_render_opts *opts,
                                  char **out);

/* Appends `v` as Python's json.dumps(v, ensure_ascii=False) writes it, which is what transformers' chat-template
 * `tojson` filter produces: separators ", " and ": ", keys in document order, non-ASCII as is, control characters as
 * \u00xx, floats in Python's shortest round-trip repr (1.0, 1e-05, 1e+16). Two inputs Python accepts cannot reach
 * here, because jansson refuses them when parsing: integers beyond 64 bits and object keys containing \u0000. */
void ty__json_dump_py(const json_t *v, struct ty_buf *b);

/* Parses `len` bytes of JSON text (which may contain \u0000 escapes) into `*out` (json_decref to free); the error
 * names `what` and the line/column jansson reports. */
enum ty_status ty__json_parse(const char *text, size_t len, const char *what, json_t **out);

#endif /* TY_CHAT_IMPL_H */
