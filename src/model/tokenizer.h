/*
 * tokenizer.h - internal entry points of Qwen's byte-level BPE tokenizer beyond the public API in tongyun.h: loading
 * from a GGUF file's tokenizer.ggml.* metadata and writing that metadata when converting a checkpoint.
 */
#ifndef TY_TOKENIZER_H
#define TY_TOKENIZER_H

#include "model/gguf.h"

/* Builds a tokenizer from `tokenizer.ggml.*` keys (model "gpt2", pre "qwen2"/"qwen35"...). Errors name the key. */
enum ty_status ty__tokenizer_from_gguf(const struct ty_gguf *g, struct ty_tokenizer **out);
/* Writes the `tokenizer.ggml.*` keys llama.cpp uses (model, pre, tokens, token_type, merges, eos/bos/padding ids,
 * add_bos_token) so that a GGUF written by Tongyun loads in llama.cpp and back. */
enum ty_status ty__tokenizer_to_gguf(const struct ty_tokenizer *tok, struct ty_gguf_writer *w);
/* Loads tokenizer.json plus the special-token ids of tokenizer_config.json (eos/pad; `config_path` may be NULL). */
enum ty_status ty__tokenizer_load_hf(const char *json_path, const char *config_path, struct ty_tokenizer **out);

#endif
