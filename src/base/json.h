/*
 * json.h - small helpers over jansson shared by every parser of untrusted JSON (tokenizer.json, config.json, OpenAI
 * requests), so their error messages describe values the same way.
 */
#ifndef TY_BASE_JSON_H
#define TY_BASE_JSON_H

#include <jansson.h>

/* "an object", "an array", "a string", "an integer", "a number", "a boolean" or "null": for "expected X, got Y". */
const char *ty__json_kind(const json_t *v);

#endif
