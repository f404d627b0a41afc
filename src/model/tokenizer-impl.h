/*
 * tokenizer-impl.h - internals of the byte-level BPE tokenizer, shared by its three files:
 *   tokenizer.c       the tables (vocabulary, merges, added tokens), encoding (BPE) and decoding, the public API;
 *   tokenizer-text.c  UTF-8, NFC, the GPT-2 byte alphabet and the pre-tokenizer (PCRE2 and a hand-written Qwen2 one);
 *   tokenizer-load.c  building a tokenizer from tokenizer.json (+ tokenizer_config.json) or GGUF, and writing GGUF.
 *
 * Tokens are stored as their raw bytes (byte-level decoding undone), so BPE runs on token ids and byte values and
 * never on the GPT-2 "unicode alphabet" strings, which only appear at the file boundary.
 */
#ifndef TY_TOKENIZER_IMPL_H
#define TY_TOKENIZER_IMPL_H

#include "model/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>

/* Token types, with the values of GGUF's tokenizer.ggml.token_type (llama.cpp's llama_token_type). */
enum tok_type {
    TOK_TYPE_UNDEFINED = 0, /* an id no token has (a gap in tokenizer.json's ids) */
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

/* Flags of an added token (Hugging Face's AddedToken). */
enum {
    TOK_ADDED_SPECIAL = 1 << 0,     /* matched only with TY_TOKENIZE_SPECIAL */
    TOK_ADDED_LSTRIP = 1 << 1,      /* the match swallows whitespace on its left */
    TOK_ADDED_RSTRIP = 1 << 2,      /* ... and on its right */
    TOK_ADDED_SINGLE_WORD = 1 << 3, /* only when not inside a word */
    TOK_ADDED_NORMALIZED = 1 << 4,  /* matched against the normalised text */
};

/* The most tokens a vocabulary may have; bounds every allocation made from a count found in a file. */
#define TOK_MAX_VOCAB (1 << 24)
/* The largest tokenizer.json accepted (Qwen3's is 11 MB). */
#define TOK_MAX_JSON_BYTES ((size_t)64 << 20)
/* Longest token text, in bytes. */
#define TOK_MAX_TOKEN_BYTES (1 << 16)

struct tok_entry {
    uint32_t off; /* raw bytes at pool + off */
    uint32_t len;
    uint8_t type;     /* enum tok_type */
    uint8_t in_vocab; /* BPE can produce it: a model-vocabulary token (NORMAL/BYTE, or an added token that the
                         model's vocabulary also has) */
};

#define TOK_SLOT_KEY 10
struct tok_slot {
    int32_t id;  /* -1: empty */
    uint8_t len; /* the token's length, 255 for 255 and longer */
    /* Whether BPE of the token's own bytes gives exactly this token (so a pre-token equal to it maps to it without
     * BPE): TOK_DIRECT_*, learnt the first time such a pre-token is met. Atomic because tokenizing threads share
     * it; it caches a pure function, so every thread learns the same answer. */
    _Atomic uint8_t direct;
    uint8_t key[TOK_SLOT_KEY]; /* the token's first bytes, so most lookups never leave the slot */
};
enum { TOK_DIRECT_UNKNOWN = 0, TOK_DIRECT_YES = 1, TOK_DIRECT_NO = 2 };

struct tok_added {
    int32_t id;
    uint32_t off; /* pattern matched in the text (the content, or its NFC form for normalized tokens) */
    uint32_t len;
    uint8_t flags;
};

struct tok_merge {
    uint64_t key; /* left id << 32 | right id */
    int32_t rank; /* -1: empty slot */
    int32_t id;   /* the merged token */
};

/* How the text is cut into pre-tokens. */
enum tok_pre_impl {
    TOK_PRE_REGEX = 0,  /* PCRE2 with the file's regex */
    TOK_PRE_QWEN2 = 1,  /* hand-written matcher of Qwen2's regex; TOK_PRE_REGEX is its reference (tests compare) */
    TOK_PRE_QWEN35 = 2, /* the same for Qwen3.5's, where marks count as letters */
};

struct ty_tokenizer {
    int32_t n_vocab;
    struct tok_entry *tokens; /* (n_vocab) */
    char *pool;               /* raw bytes of every token and added-token pattern */
    size_t pool_len, pool_cap;

    /* raw bytes -> id of in-vocabulary tokens (what BPE and merges reach), open addressing */
    struct tok_slot *vocab_tab;
    uint32_t vocab_mask;

    struct tok_added *added; /* (n_added) by id */
    int32_t n_added;
    struct tok_trie {
        int32_t child, sibling; /* first child, next sibling; -1 for none */
        int32_t term[2];        /* the added token (index in added[]) ending here, not normalized / normalized */
        uint8_t byte;
    } * trie; /* (n_trie) the added tokens' patterns */
    int32_t n_trie;
    int32_t trie_root[256];    /* node of each first byte, or -1 */
    int added_lead;            /* the one first byte all added tokens share (Qwen's '<'), or -1 */
    bool has_normalized_added; /* some added token is matched after normalisation */

    struct tok_merge *merge_tab; /* (merge_mask + 1) slots */
    uint32_t merge_mask;
    int merge_bits;
    int32_t (*merges)[2]; /* (n_merges) left, right ids in rank order, kept to write GGUF */
    int32_t n_merges;

    int32_t byte_id[256]; /* id of each single byte's token, or -1 */
    struct tok_pair {
        int32_t rank, id;   /* rank -1: no merge */
    } * byte_pairs;         /* (256 * 256) merges of two byte tokens: the first BPE round without hashing */
    uint32_t max_token_len; /* longest in-vocabulary token, in bytes */
    bool all_bytes;         /* every byte has a token (byte-level vocabularies do) */
    int32_t unk_id;         /* used for a byte with no token; -1: such bytes are dropped, as Hugging Face does */
    bool ignore_merges;     /* a pre-token that is itself in the vocabulary maps to it directly */
    bool nfc;               /* NFC normaliser */

    char *regex; /* the pre-tokenizer's regex as written in the file (Rust/Oniguruma syntax) */
    pcre2_code *re;
    bool re_jit;
    enum tok_pre_impl pre_impl;
    const char *pre_name; /* llama.cpp's tokenizer.ggml.pre for this regex, or NULL when it has none */

    int32_t bos_id, eos_id, pad_id, eot_id; /* -1 when unknown */
    bool add_bos, add_eos, has_add_eos;
    int32_t eog[8];
    int n_eog;
    char *chat_template; /* tokenizer_config.json's chat_template or tokenizer.chat_template; may be NULL */
};

/* ==== Tables (tokenizer.c) ==== */

/* An empty tokenizer with `n_vocab` UNDEFINED tokens. */
enum ty_status ty__tok_create(int32_t n_vocab, struct ty_tokenizer **out);
/* Sets token `id` to `len` raw bytes of type `type`. */
enum ty_status ty__tok_set(struct ty_tokenizer *t, int32_t id, const void *bytes, size_t len, enum tok_type type);
/* Builds the vocabulary map and byte table once every token is set. Duplicate raw bytes: with `dup_error` it is an
 * error naming both ids; otherwise the later id wins (llama.cpp's rule for GGUF vocabularies). */
enum ty_status ty__tok_index_vocab(struct ty_tokenizer *t, bool dup_error);
/* The NORMAL/BYTE token whose raw bytes are `s`, or -1. */
int32_t ty__tok_lookup(const struct ty_tokenizer *t, const void *s, size_t len);
/* Declares token `id` an added token matched in the text by its pattern (its bytes, or `pattern` when not NULL). */
enum ty_status ty__tok_add_added(struct ty_tokenizer *t, int32_t id, const void *pattern, size_t len, unsigned flags);
/* Sorts and indexes the added tokens once all are declared. */
enum ty_status ty__tok_index_added(struct ty_tokenizer *t);
/* Sizes the merge table for `n` merges. Merges are then added in rank order; a repeated pair takes the later rank,
 * as Hugging Face's map does. */
enum ty_status ty__tok_merges_begin(struct ty_tokenizer *t, size_t n);
/* Adds merge `left right` (ids); the merged token must exist. Errors name it as key[index]. */
enum ty_status ty__tok_merge_add(struct ty_tokenizer *t, int32_t left, int32_t right, const char *key, uint64_t index);
/* Last step of loading, once tokens and merges are in: builds the byte-pair table. */
enum ty_status ty__tok_prepare(struct ty_tokenizer *t);
/* Fills eog[] from eos/eot and the usual end-of-turn names. */
void ty__tok_finish_specials(struct ty_tokenizer *t);

/* ==== Text (tokenizer-text.c) ==== */

/* Offset of the first byte that is not part of well-formed UTF-8, or `n` when all is well formed. */
size_t ty__utf8_check(const uint8_t *s, size_t n);
/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 when s[0] starts none; with `incomplete` set when the
 * bytes so far are a valid prefix cut short by the end of the buffer. */
size_t ty__utf8_seq(const uint8_t *s, size_t n, bool *incomplete);
/* The reference's character data (tokenizer-unicode.c, generated): Unicode 14.0 letter/number/mark classes, 2 bits
 * per code point below U+40000, and the code points its Unicode 9.0 NFC can act on. */
extern const uint8_t ty__uni_class_stage1[0x40000 / 256];
extern const uint8_t ty__uni_class_stage2[][64];
extern const uint32_t ty__uni_nfc_unstable[][2];
extern const size_t ty__uni_nfc_unstable_count;
/* Decodes the well-formed UTF-8 sequence at s (validated before), storing its length. */
uint32_t ty__utf8_decode(const uint8_t *s, size_t *len);
/* Unicode White_Space (what `\s` means to Oniguruma and Rust's regex). */
bool ty__cp_is_space(uint32_t cp);
/* A word character as Rust's regex `\w` sees it (letters, marks, decimal digits, connector punctuation, ZWNJ/ZWJ). */
bool ty__cp_is_word(uint32_t cp);
/* True when NFC leaves `s` unchanged for sure (a quick check over code points known to be stable). */
bool ty__nfc_quick(const uint8_t *s, size_t n);
/* NFC of `s` into a NUL-terminated buffer the caller frees with ty_free(). */
enum ty_status ty__nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_len);
/* The GPT-2 byte-to-unicode table: the code point that stands for byte b, and back (-1 when not in the alphabet). */
uint32_t ty__byte_to_cp(uint8_t b);
int ty__cp_to_byte(uint32_t cp);
/* Decodes a byte-level token string (UTF-8 of alphabet characters) into raw bytes; false on a character outside the
 * alphabet or malformed UTF-8. `out` needs `len` bytes. */
bool ty__bytelevel_decode(const char *s, size_t len, char *out, size_t *out_len);
/* Encodes raw bytes into the byte-level string (`out` needs 2 * len bytes). */
size_t ty__bytelevel_encode(const uint8_t *s, size_t len, char *out);

/* Compiles the pre-tokenizer regex (Rust/Oniguruma syntax as found in tokenizer.json) with PCRE2, translating the
 * classes whose meaning differs, and picks the hand-written matcher when the regex is Qwen2's. */
enum ty_status ty__tok_set_regex(struct ty_tokenizer *t, const char *regex, size_t len);
/* The llama.cpp pre-tokenizer names Tongyun knows, with their regex and whether the model normalises to NFC. */
struct tok_pre_def {
    const char *name;
    const char *regex;
    bool nfc;
};
const struct tok_pre_def *ty__tok_pre_by_name(const char *name);
const struct tok_pre_def *ty__tok_pre_by_regex(const char *regex);
/* "a, b, c" list of the supported names, for error messages. */
const char *ty__tok_pre_names(void);
extern const char ty__tok_regex_qwen2[];

/* Scratch state of one pre-tokenizer run. */
struct tok_split {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
};
void ty__tok_split_free(struct tok_split *sp);
/* Cuts `s` into pre-tokens as Hugging Face's Split pre-tokenizer with behaviour Isolated does (matches and the gaps
 * between them), calling `fn` for each; stops at the first error `fn` returns. `impl` picks the matcher. */
typedef enum ty_status (*tok_piece_fn)(void *ctx, const uint8_t *piece, size_t len);
enum ty_status ty__tok_pretokenize(const struct ty_tokenizer *t, enum tok_pre_impl impl, struct tok_split *sp,
                                   const uint8_t *s, size_t n, tok_piece_fn fn, void *ctx);

/* ==== Loading (tokenizer-load.c) ==== */

/* ty__tokenizer_load_hf over buffers (the fuzzer's entry); `config` may be NULL. `config_json_ids` is a config.json
 * (bos/eos/pad_token_id) or NULL. */
enum ty_status ty__tokenizer_load_hf_mem(const char *json, size_t len, const char *config, size_t config_len,
                                         const char *config_json_ids, size_t ids_len, struct ty_tokenizer **out);

#endif /* TY_TOKENIZER_IMPL_H */
