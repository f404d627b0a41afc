/*
 * constrain.h - constrained decoding (internal): a JSON Schema (or "any JSON object", or a forced Qwen <tool_call>)
 * compiled into a byte-level pushdown matcher, and the per-step set of tokens whose bytes the matcher accepts.
 *
 * Three objects, with separate lifetimes:
 *   struct ty_grammar          what the output must be; compiled once per request from the schema, immutable and
 *                              reference-counted, so the choices of one request share it across threads;
 *   struct ty_constrain_vocab  a prefix trie over the tokenizer's token byte strings, built once per tokenizer and
 *                              shared read-only by every matcher (the per-step mask walks it, pruning every subtree
 *                              whose prefix the grammar already rejects);
 *   struct ty_matcher          one sequence's position in the grammar; not thread-safe, one per sequence.
 *
 * The language generated is a subset of what the schema accepts, chosen so that every output parses and validates:
 *  - object properties come in the schema's order (any optional one may be left out); properties that are neither
 *    listed nor in `required` are generated only when `additionalProperties` is `true` or a schema, never when it is
 *    absent (the output validates either way; this keeps the model on the listed fields, as xgrammar's strict mode),
 *    and only once every required property is written;
 *  - object keys never use backslash escapes (except the escapes a listed property name needs), so a generated key
 *    can always be compared with the listed names; `\u` escapes in strings never encode NUL or a surrogate;
 *  - whitespace between tokens is bounded per run (2 + 4 * nesting depth bytes: room for a newline and four spaces
 *    of indentation per level, and the blank line Qwen writes after </think>) and none follows the value, so the
 *    model cannot spend its budget on invisible spaces; numbers have at most 15 integer, 15 fraction and 2 exponent
 *    digits (so strict parsers read them: integers fit 64 bits, reals never overflow a double); nesting is at most
 * TY_CONSTRAIN_MAX_DEPTH deep;
 *  - end of turn (an end-of-generation token) is allowed only when the value (and the tool-call suffix) is complete.
 * Keywords the matcher cannot enforce (format, pattern, minimum, ...) are refused at compile time with an error that
 * names the keyword and where it is, never silently ignored.
 */
#ifndef TY_CONSTRAIN_H
#define TY_CONSTRAIN_H

#include "base/base.h"

/* Deepest nesting of arrays and objects the matcher generates. */
#define TY_CONSTRAIN_MAX_DEPTH 32

struct ty_grammar;
struct ty_constrain_vocab;
struct ty_matcher;

enum ty_constrain_kind {
    TY_CONSTRAIN_JSON_OBJECT = 0, /* any JSON object (response_format json_object) */
    TY_CONSTRAIN_JSON_SCHEMA = 1, /* a value valid against `schema_json` */
    TY_CONSTRAIN_TOOL_CALL = 2,   /* "<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>" for a tool of
                                     `tools_json` (an OpenAI tools array): `tool_name`, or any of them when NULL */
};

struct ty_constrain_spec {
    enum ty_constrain_kind kind;
    const char *schema_json; /* JSON_SCHEMA: the schema as JSON text */
    const char *tools_json;  /* TOOL_CALL */
    const char *tool_name;   /* TOOL_CALL: the forced function, or NULL for any */
    /* The constraint starts after the reasoning block: text is free (end of turn excepted) until "</think>" has been
     * generated, as vLLM's reasoning parser hands over to structured output. */
    bool after_reasoning;
};

/* Compiles `spec`. Unsupported or contradictory schemas fail with TY_ERR_UNSUPPORTED or TY_ERR_INVALID_ARG and a
 * message naming the keyword and its location ("#/properties/date: 'format' ..."), meant for a 400 answer. The grammar
 * starts with one reference; release it with ty__grammar_unref. */
enum ty_status ty__grammar_compile(const struct ty_constrain_spec *spec, struct ty_grammar **out);
struct ty_grammar *ty__grammar_ref(struct ty_grammar *g);
void ty__grammar_unref(struct ty_grammar *g);

/* Builds the token trie of `tok` (which must outlive it). Thread-safe to share once built. */
enum ty_status ty__constrain_vocab_init(const struct ty_tokenizer *tok, struct ty_constrain_vocab **out);
void ty__constrain_vocab_free(struct ty_constrain_vocab *v);
int32_t ty__constrain_vocab_n(const struct ty_constrain_vocab *v);

/* A matcher at the start of `g` (a reference is taken) over `v` (borrowed; must outlive the matcher). */
enum ty_status ty__matcher_init(struct ty_grammar *g, const struct ty_constrain_vocab *v, struct ty_matcher **out);
void ty__matcher_free(struct ty_matcher *m);

/* The allowed next tokens as a bit set of ceil(n_vocab / 32) words (bit i of word i / 32). Returns the number of
 * allowed tokens; 0 means a dead end (a schema with no finite instance), which the caller ends as an error. */
int32_t ty__matcher_mask(struct ty_matcher *m, uint32_t *mask);
/* Sets logits[i] to -INFINITY for every token the mask (of `n_mask` tokens) does not allow, among `n` logits; ids
 * past the mask's vocabulary are never allowed. */
void ty__constrain_apply_mask(const uint32_t *mask, float *logits, int32_t n, int32_t n_mask);
/* The step before sampling, for a sampler loop: adds OpenAI's logit_bias (`n_bias` ids and values) to `logits`
 * (`n_logits` floats), then, with a matcher, sets every token it does not allow to -INFINITY, using `mask` (words for
 * the matcher's vocabulary) as scratch. False on a dead end (no token allowed). Bias never revives a masked token. */
bool ty__constrain_logits(struct ty_matcher *m, uint32_t *mask, const int32_t *bias_ids, const float *bias_vals,
                          int n_bias, float *logits, int32_t n_logits);
/* Advances over `token`. False (state unchanged) when the token is not allowed. */
bool ty__matcher_accept(struct ty_matcher *m, int32_t token);
/* Advances over raw bytes (tests and fuzzing; no special tokens). False (state unchanged) when rejected. */
bool ty__matcher_accept_bytes(struct ty_matcher *m, const char *s, size_t n);
/* True when the output so far is complete, so end of turn is allowed. */
bool ty__matcher_can_end(const struct ty_matcher *m);
/* True while the matcher waits for the end of the reasoning block. */
bool ty__matcher_in_reasoning(const struct ty_matcher *m);

#endif /* TY_CONSTRAIN_H */
