/*
 * data.h - the trainer's data loader (data.c): a corpus tokenized once into a cached token shard, windows of
 * seq_len + 1 tokens, a held-out tail for evaluation, and a shuffled order that depends only on (seed, sample index).
 */
#ifndef TY_TRAIN_DATA_H
#define TY_TRAIN_DATA_H

#include "base/base.h"

enum ty_train_data_format {
    TY_TRAIN_DATA_AUTO = 0,  /* .jsonl / .json = JSON lines, anything else plain text */
    TY_TRAIN_DATA_TEXT = 1,  /* paragraphs separated by blank lines are documents */
    TY_TRAIN_DATA_JSONL = 2, /* {"text": ...} or {"messages": [...]} per line */
};

struct ty_train_data {
    int32_t *tokens; /* (n_tokens) every document, each followed by <|endoftext|> */
    size_t n_tokens;
    uint64_t hash; /* of the tokens: identifies the data in checkpoints */
    int64_t seq_len;
    int64_t n_train, n_eval; /* windows: training windows first, then the held-out tail */
    int64_t *perm;           /* (n_train) the current epoch's order */
    int64_t perm_epoch;
};

struct ty_train_data_stats {
    uint64_t n_docs;
    uint64_t n_invalid; /* documents skipped for invalid UTF-8 */
    size_t n_tokens;
    bool from_cache;
};

/* Tokenizes `path` (or reads `cache_path` when it holds this corpus tokenized by this tokenizer; writes it
 * otherwise; NULL = no cache). An empty corpus, or one whose every document is invalid, is TY_ERR_INVALID_ARG. */
enum ty_status ty__train_data_load(const char *path, enum ty_train_data_format fmt, const struct ty_tokenizer *tok,
                                   const char *cache_path, struct ty_train_data *out,
                                   struct ty_train_data_stats *stats);
/* Cuts the tokens into windows of seq_len + 1 (stride seq_len) and holds out the last eval_frac of them. */
enum ty_status ty__train_data_split(struct ty_train_data *d, int64_t seq_len, double eval_frac);
/* Training samples first_sample .. first_sample + n_seq - 1 into out (n_seq, seq_len + 1). */
enum ty_status ty__train_data_batch(struct ty_train_data *d, uint64_t seed, int64_t first_sample, int64_t n_seq,
                                    int32_t *out);
/* Held-out windows first .. first + n_seq - 1 (wrapping) into out (n_seq, seq_len + 1). */
void ty__train_data_eval_batch(const struct ty_train_data *d, int64_t first, int64_t n_seq, int32_t *out);
void ty__train_data_free(struct ty_train_data *d);

#endif /* TY_TRAIN_DATA_H */
