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

/* Adds UNUSED "[PAD<id>]" tokens up to `n_vocab` (a model whose embedding has more rows than the tokenizer has ids,
 * as Qwen's checkpoints do), as llama.cpp's converter does. */
enum ty_status ty__tokenizer_pad_vocab(struct ty_tokenizer *t, int32_t n_vocab);
/* The chat template carried with the tokenizer (tokenizer_config.json or GGUF), or NULL. */
const char *ty__tokenizer_chat_template(const struct ty_tokenizer *t);
/* BOS/EOS/padding ids (-1 when unknown). */
void ty__tokenizer_special_ids(const struct ty_tokenizer *t, int32_t *bos, int32_t *eos, int32_t *pad);
/* Opens a GGUF file only to read its tokenizer (no weights are touched); the tokenizer owns copies of everything. */
enum ty_status ty__tokenizer_load_gguf_file(const char *path, struct ty_tokenizer **out);

#endif
