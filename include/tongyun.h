/*
 * tongyun.h - the public C API of Tongyun, the Qwen model, cloud and chip stack.
 *
 * Tongyun loads Qwen checkpoints from GGUF files, tokenizes text exactly as Qwen's reference tokenizer does, renders
 * Qwen's ChatML chat format, and runs the model on a compute backend. This header is the whole public surface; every
 * type behind it is opaque and every function returns an `enum ty_status` unless it cannot fail.
 *
 * A short tour (error handling trimmed):
 *
 *     struct ty_model *model;
 *     struct ty_model_params mp = ty_model_default_params();
 *     if (ty_model_load("qwen3-0.6b-q8_0.gguf", &mp, &model) != TY_OK)
 *         fprintf(stderr, "%s\n", ty_last_error());      // says what was wrong and what to do
 *
 *     const struct ty_tokenizer *tok = ty_model_tokenizer(model);   // owned by the model
 *     int32_t ids[256];
 *     size_t n;
 *     ty_tokenize(tok, "Hello", 5, TY_TOKENIZE_SPECIAL, ids, 256, &n);
 *
 *     struct ty_context *ctx;
 *     struct ty_context_params cp = ty_context_default_params();
 *     ty_context_init(model, &cp, &ctx);
 *
 *     float *logits = malloc(sizeof(float) * ty_model_n_vocab(model));
 *     ty_context_eval(ctx, ids, n, TY_LOGITS_LAST, logits);     // prefill in one batch
 *
 *     struct ty_sampler *smp;
 *     struct ty_sampler_params sp = ty_sampler_default_params(); // greedy unless temperature > 0
 *     ty_sampler_init(&sp, ty_model_n_vocab(model), &smp);
 *     int32_t next = ty_sampler_sample(smp, logits);             // then ty_context_eval(ctx, &next, 1, ...)
 *
 *     ty_sampler_free(smp); ty_context_free(ctx); ty_model_free(model);
 *
 * Conventions:
 *  - Errors: a function that fails returns a status other than TY_OK and leaves a message for the user, readable on
 *    the same thread with ty_last_error() until the next failing call.
 *  - Ownership: objects made by `_init`/`_load`/`_open` are freed by the matching `_free`/`_close`. Strings that a
 *    function hands back through `char **` are freed with ty_free().
 *  - Enums are append-only; their values are part of the ABI.
 */
#ifndef TONGYUN_H
#define TONGYUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TY_API __declspec(dllexport)
#elif defined(__GNUC__)
#define TY_API __attribute__((visibility("default")))
#else
#define TY_API
#endif

#define TY_VERSION_MAJOR 0
#define TY_VERSION_MINOR 1
#define TY_VERSION_PATCH 0

/* ==== Status ==== */

/* X(name, value, description). The description is the generic text of ty_status_str(); ty_last_error() carries the
 * specific message. */
#define TY_STATUS_LIST(X)                                                                                              \
    X(TY_OK, 0, "success")                                                                                             \
    X(TY_ERR_INVALID_ARG, 1, "invalid argument")                                                                       \
    X(TY_ERR_NO_MEMORY, 2, "out of memory")                                                                            \
    X(TY_ERR_IO, 3, "input/output error")                                                                              \
    X(TY_ERR_FORMAT, 4, "malformed or corrupt input")                                                                  \
    X(TY_ERR_UNSUPPORTED, 5, "not supported")                                                                          \
    X(TY_ERR_NOT_FOUND, 6, "not found")                                                                                \
    X(TY_ERR_CONTEXT_FULL, 7, "context window is full")                                                                \
    X(TY_ERR_BUFFER_TOO_SMALL, 8, "output buffer too small")                                                           \
    X(TY_ERR_INTERNAL, 9, "internal error")

enum ty_status {
#define TY_STATUS_ENUM(name, value, text) name = value,
    TY_STATUS_LIST(TY_STATUS_ENUM)
#undef TY_STATUS_ENUM
        TY_STATUS_COUNT
};

/* The generic description of a status; never NULL. */
TY_API const char *ty_status_str(enum ty_status status);
/* The message of the last failing call on this thread; "" when none. Valid until the next failing call. */
TY_API const char *ty_last_error(void);
/* Frees memory that a Tongyun function handed to the caller. NULL is allowed. */
TY_API void ty_free(void *ptr);
/* Bytes currently allocated through Tongyun's allocator (weights mapped from a file are not counted). */
TY_API size_t ty_mem_allocated(void);

/* ==== Tensor types ==== */

/* Values are those of the GGUF file format (ggml's type ids), so a file's type field maps directly. */
enum ty_type {
    TY_TYPE_F32 = 0,
    TY_TYPE_F16 = 1,
    TY_TYPE_Q4_0 = 2,
    TY_TYPE_Q4_1 = 3,
    TY_TYPE_Q5_0 = 6,
    TY_TYPE_Q5_1 = 7,
    TY_TYPE_Q8_0 = 8,
    TY_TYPE_Q8_1 = 9,
    TY_TYPE_Q2_K = 10,
    TY_TYPE_Q3_K = 11,
    TY_TYPE_Q4_K = 12,
    TY_TYPE_Q5_K = 13,
    TY_TYPE_Q6_K = 14,
    TY_TYPE_Q8_K = 15,
    TY_TYPE_I8 = 24,
    TY_TYPE_I16 = 25,
    TY_TYPE_I32 = 26,
    TY_TYPE_I64 = 27,
    TY_TYPE_F64 = 28,
    TY_TYPE_BF16 = 30,
    TY_TYPE_COUNT = 40
};

/* The type's name as GGUF tools print it ("Q4_K", "BF16"); "unknown" for values Tongyun does not know. */
TY_API const char *ty_type_name(enum ty_type type);

/* ==== Tokenizer ==== */

struct ty_tokenizer;

enum ty_tokenize_flags {
    TY_TOKENIZE_SPECIAL = 1 << 0, /* recognise added/special tokens such as <|im_start|> in the text */
};

/* Loads a Hugging Face tokenizer.json (byte-level BPE). Free with ty_tokenizer_free(). */
TY_API enum ty_status ty_tokenizer_load_json(const char *path, struct ty_tokenizer **out);
TY_API void ty_tokenizer_free(struct ty_tokenizer *tok);
TY_API int32_t ty_tokenizer_n_vocab(const struct ty_tokenizer *tok);
/* The id of a token given by its exact text (e.g. "<|im_end|>"), or -1. */
TY_API int32_t ty_tokenizer_find(const struct ty_tokenizer *tok, const char *text);
/* End-of-sequence ids: `<|im_end|>`, `<|endoftext|>` and the file's eos. True when `id` ends generation. */
TY_API bool ty_tokenizer_is_eog(const struct ty_tokenizer *tok, int32_t id);

/* Tokenizes `len` bytes of UTF-8 `text` into `ids` (capacity `cap`). `*n_out` receives the number of ids; when it
 * exceeds `cap` the call returns TY_ERR_BUFFER_TOO_SMALL and writes nothing, so callers may size and retry. Invalid
 * UTF-8 is an error (TY_ERR_INVALID_ARG) that names the byte offset. */
TY_API enum ty_status ty_tokenize(const struct ty_tokenizer *tok, const char *text, size_t len, unsigned flags,
                                  int32_t *ids, size_t cap, size_t *n_out);

/* The raw bytes of one token (byte-level decoding undone). Not NUL-terminated; NULL for an invalid id. */
TY_API const char *ty_token_bytes(const struct ty_tokenizer *tok, int32_t id, size_t *len);

/* Streaming detokenizer: turns ids into text and holds back a UTF-8 character split across tokens until it is
 * complete. Zero-initialise before first use. */
struct ty_detokenizer {
    char pending[8];
    size_t n_pending;
};
/* Appends the text of `id` to `out` (capacity `cap`, NUL-terminated on return) and stores its length in `*n_out`.
 * When `cap` cannot hold the bytes plus a NUL it returns TY_ERR_BUFFER_TOO_SMALL, sets `*n_out` to the length needed
 * (without the NUL) and leaves the stream state unchanged, so the caller can grow the buffer and retry. A buffer of
 * 3 * (ty_token_bytes' length + 3) + 1 bytes always suffices. Bytes that can never form valid UTF-8 become one U+FFFD
 * per broken sequence, as Hugging Face's decoder does. */
TY_API enum ty_status ty_detokenize_push(const struct ty_tokenizer *tok, struct ty_detokenizer *st, int32_t id,
                                         char *out, size_t cap, size_t *n_out);
/* Emits what is still pending at the end of the stream: an incomplete character becomes one U+FFFD. */
TY_API enum ty_status ty_detokenize_flush(struct ty_detokenizer *st, char *out, size_t cap, size_t *n_out);

/* ==== Model ==== */

struct ty_model;

struct ty_model_params {
    int n_threads;       /* worker threads for the backend; 0 = one per core */
    const char *backend; /* backend name ("cpu"); NULL = the best available */
    const char *lora;    /* a LoRA adapter GGUF (`tongyun finetune`) applied at load, or NULL */
    float lora_scale;    /* its strength: 1 = as trained (the default), 0 = off */
};

TY_API struct ty_model_params ty_model_default_params(void);
/* Loads a GGUF model (qwen2, qwen3). Weights are mapped from the file, which must stay unchanged while the model
 * lives. Free with ty_model_free(). */
TY_API enum ty_status ty_model_load(const char *path, const struct ty_model_params *params, struct ty_model **out);
TY_API void ty_model_free(struct ty_model *model);
/* The model's tokenizer, owned by the model and valid while it lives. */
TY_API const struct ty_tokenizer *ty_model_tokenizer(const struct ty_model *model);
TY_API int32_t ty_model_n_vocab(const struct ty_model *model);
TY_API int32_t ty_model_n_ctx_train(const struct ty_model *model);
/* The GGUF `general.architecture` ("qwen3"). Valid while the model lives. */
TY_API const char *ty_model_arch(const struct ty_model *model);

/* ==== Context: one sequence's KV cache and its position ==== */

struct ty_context;

enum ty_logits_mode {
    TY_LOGITS_NONE = 0, /* compute no logits (prompt prefix that needs none) */
    TY_LOGITS_LAST = 1, /* n_vocab floats for the last token */
    TY_LOGITS_ALL = 2,  /* n_tokens * n_vocab floats, row per token */
};

struct ty_context_params {
    int32_t n_ctx;        /* context length in tokens; 0 = the model's training context, capped at 4096 */
    int32_t n_batch;      /* most tokens computed in one forward pass; longer inputs are split; 0 = 512 */
    enum ty_type kv_type; /* TY_TYPE_F16 (default) or TY_TYPE_F32 */
};

TY_API struct ty_context_params ty_context_default_params(void);
TY_API enum ty_status ty_context_init(struct ty_model *model, const struct ty_context_params *params,
                                      struct ty_context **out);
TY_API void ty_context_free(struct ty_context *ctx);
/* Runs `n` tokens at positions n_past .. n_past+n-1 and appends them to the KV cache. Writes logits per `mode` into
 * caller-owned `logits` (may be NULL with TY_LOGITS_NONE). Fails with TY_ERR_CONTEXT_FULL, changing nothing, when the
 * tokens do not fit in n_ctx. */
TY_API enum ty_status ty_context_eval(struct ty_context *ctx, const int32_t *tokens, size_t n, enum ty_logits_mode mode,
                                      float *logits);
TY_API int32_t ty_context_n_past(const struct ty_context *ctx);
TY_API int32_t ty_context_n_ctx(const struct ty_context *ctx);
/* Forgets every position from `n_past` on, so generation can resume from a shared prefix. Cheap on transformer
 * models (the KV cache is cut); on hybrid models (Qwen3-Next, Qwen3.5) the recurrent state of the linear-attention
 * layers cannot be rewound, so the kept prefix is recomputed from its tokens. */
TY_API enum ty_status ty_context_truncate(struct ty_context *ctx, int32_t n_past);

/* ==== Sampling ==== */

struct ty_sampler;

struct ty_sampler_params {
    float temperature;       /* <= 0: greedy (argmax, lowest id on ties) */
    int32_t top_k;           /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float repeat_penalty;    /* 1: off; divides positive logits, multiplies negative ones of recent tokens */
    float presence_penalty;  /* 0: off; subtracted once from each recent token's logit */
    float frequency_penalty; /* 0: off; subtracted per occurrence of each recent token */
    int32_t penalty_last_n;  /* window of recent tokens the penalties look at; -1 = whole history */
    uint64_t seed;           /* the same seed and inputs give the same tokens */
};

TY_API struct ty_sampler_params ty_sampler_default_params(void);
TY_API enum ty_status ty_sampler_init(const struct ty_sampler_params *params, int32_t n_vocab, struct ty_sampler **out);
TY_API void ty_sampler_free(struct ty_sampler *smp);
/* Picks the next token from `logits` (n_vocab floats, modified in place) and records it in the penalty history. */
TY_API int32_t ty_sampler_sample(struct ty_sampler *smp, float *logits);
/* Records a token that was not sampled (a prompt token) in the penalty history. */
TY_API void ty_sampler_accept(struct ty_sampler *smp, int32_t token);
TY_API void ty_sampler_reset(struct ty_sampler *smp);

/* ==== Chat format (Qwen ChatML) ==== */

struct ty_chat_message {
    const char *role;              /* "system", "user", "assistant" or "tool" */
    const char *content;           /* may be NULL for an assistant turn that only calls tools */
    const char *reasoning_content; /* assistant only; NULL = split from content at </think> as Qwen's template does */
    const char *tool_calls_json;   /* assistant only: a JSON array of OpenAI tool calls, or NULL */
};

enum ty_chat_thinking {
    TY_CHAT_THINKING_DEFAULT = 0, /* the template's default: the model decides (thinking on for Qwen3) */
    TY_CHAT_THINKING_ON = 1,
    TY_CHAT_THINKING_OFF = 2, /* renders an empty <think></think> block, as enable_thinking=false does */
};

struct ty_chat_render_params {
    const char *tools_json; /* a JSON array of OpenAI tool definitions, or NULL */
    bool add_generation_prompt;
    enum ty_chat_thinking thinking;
};

/* Renders messages as Qwen3's chat template does, natively (no template from a file is executed). `*out` is a
 * NUL-terminated string freed with ty_free(). */
TY_API enum ty_status ty_chat_render(const struct ty_chat_message *msgs, size_t n_msgs,
                                     const struct ty_chat_render_params *params, char **out);

struct ty_chat_parsed {
    char *reasoning;       /* text before </think> (without <think>), or NULL when there was none */
    char *content;         /* the answer, tool-call blocks removed */
    char *tool_calls_json; /* a JSON array of OpenAI tool calls parsed from <tool_call> blocks, or NULL */
};

/* Splits generated text into reasoning, content and tool calls. `started_in_thinking` says the prompt ended inside a
 * <think> block (templates that emit only </think>). Free the fields with ty_chat_parsed_free(). */
TY_API enum ty_status ty_chat_parse(const char *text, bool started_in_thinking, struct ty_chat_parsed *out);
TY_API void ty_chat_parsed_free(struct ty_chat_parsed *p);

#ifdef __cplusplus
}
#endif

#endif /* TONGYUN_H */
