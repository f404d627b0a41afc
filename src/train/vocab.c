/*
 * vocab.c - a small vocabulary cut from a byte-level BPE tokenizer, for models trained from scratch: its first
 * `n_base` tokens, its first n_base - 256 merges, and every special (added) token after them, renumbered to follow.
 * Qwen's token 256 + i is the product of merge i, so the cut is itself a valid BPE tokenizer whose tokenization is
 * the full one's with the later merges left out (the check below refuses a tokenizer without that property).
 *
 * The cut goes through the tokenizer's GGUF form (tokenizer.ggml.*), which the tokenizer module already writes and
 * reads, so no tokenizer internals are touched here.
 */
#include "train/train.h"

#include "model/gguf.h"
#include "model/tokenizer.h"

#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

enum { TYPE_NORMAL = 1, TYPE_BYTE = 6 }; /* GGUF token types (llama_token_type) */

static enum ty_status write_temp(struct ty_gguf_writer *w, const char *path) {
    TY_TRY(ty__gguf_writer_begin(w, path));
    return ty__gguf_writer_finish(w);
}

static enum ty_status remap_special(const struct ty_gguf *g, struct ty_gguf_writer *w, const char *key,
                                    const int32_t *map, int64_t n_old) {
    int64_t id;
    if (ty__gguf_get_int(g, key, &id) != TY_OK) return TY_OK;
    if (id < 0 || id >= n_old || map[id] < 0) return TY_OK; /* the token was cut: leave the key out */
    return ty__gguf_writer_set_u32(w, key, (uint32_t)map[id]);
}

static enum ty_status cut(const struct ty_gguf *g, int32_t n_base, struct ty_gguf_writer *w, const char *path) {
    uint64_t n_tok = 0, n_merge = 0;
    enum ty_gguf_type et;
    TY_TRY(ty__gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_tok));
    TY_TRY(ty__gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n_merge));
    if (n_base < 257 || (uint64_t)n_base > n_tok || (uint64_t)(n_base - 256) > n_merge)
        return ty__error(TY_ERR_INVALID_ARG, "--vocab %d must be in 257 .. %" PRIu64 " for this tokenizer", n_base,
                         n_tok < n_merge + 256 ? n_tok : n_merge + 256);
    int32_t *map = ty__malloc(n_tok * sizeof *map);
    const char **strs = ty__malloc((n_tok + n_merge) * sizeof *strs);
    size_t *lens = ty__malloc((n_tok + n_merge) * sizeof *lens);
    int32_t *types = ty__malloc(n_tok * sizeof *types);
    enum ty_status st = map && strs && lens && types ? TY_OK : ty__error(TY_ERR_NO_MEMORY, "out of memory");
    uint64_t n_new = 0;
    for (uint64_t i = 0; st == TY_OK && i < n_tok; i++) {
        int64_t type;
        struct ty_gguf_str s;
        st = ty__gguf_arr_int(g, "tokenizer.ggml.token_type", i, &type);
        if (st == TY_OK) st = ty__gguf_arr_str(g, "tokenizer.ggml.tokens", i, &s);
        if (st != TY_OK) break;
        bool keep = i < (uint64_t)n_base ? true : (type != TYPE_NORMAL && type != TYPE_BYTE && type != 5);
        map[i] = keep ? (int32_t)n_new : -1;
        if (!keep) continue;
        if (i < (uint64_t)n_base && i >= 256 && type != TYPE_NORMAL)
            st = ty__error(TY_ERR_UNSUPPORTED,
                           "token %" PRIu64 " is not a regular token; this tokenizer's first "
                           "tokens are not its bytes and merges, so it cannot be cut",
                           i);
        strs[n_new] = s.data;
        lens[n_new] = s.len;
        types[n_new] = (int32_t)type;
        n_new++;
    }
    /* merge i must produce token 256 + i: its text is the concatenation of the two sides */
    uint64_t n_m = (uint64_t)(n_base - 256);
    for (uint64_t i = 0; st == TY_OK && i < n_m; i++) {
        struct ty_gguf_str m, t;
        st = ty__gguf_arr_str(g, "tokenizer.ggml.merges", i, &m);
        if (st == TY_OK) st = ty__gguf_arr_str(g, "tokenizer.ggml.tokens", 256 + i, &t);
        if (st != TY_OK) break;
        const char *sp = memchr(m.data, ' ', m.len);
        if (!sp || m.len - 1 != t.len || memcmp(m.data, t.data, (size_t)(sp - m.data)) != 0 ||
            memcmp(sp + 1, t.data + (sp - m.data), m.len - 1 - (size_t)(sp - m.data)) != 0)
            st = ty__error(TY_ERR_UNSUPPORTED,
                           "merge %" PRIu64 " does not produce token %" PRIu64
                           "; this tokenizer cannot be cut to its first tokens",
                           i, 256 + i);
        strs[n_new + i] = m.data;
        lens[n_new + i] = m.len;
    }
    if (st == TY_OK) st = ty__gguf_writer_copy_kv(w, g, ty__gguf_find_key(g, "tokenizer.ggml.model"));
    if (st == TY_OK) st = ty__gguf_writer_copy_kv(w, g, ty__gguf_find_key(g, "tokenizer.ggml.pre"));
    if (st == TY_OK) st = ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, lens, n_new);
    if (st == TY_OK) st = ty__gguf_writer_set_arr(w, "tokenizer.ggml.token_type", TY_GGUF_TYPE_INT32, types, n_new);
    if (st == TY_OK) st = ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", strs + n_new, lens + n_new, n_m);
    const char *specials[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                              "tokenizer.ggml.eot_token_id", "tokenizer.ggml.padding_token_id"};
    for (int i = 0; st == TY_OK && i < 4; i++) st = remap_special(g, w, specials[i], map, (int64_t)n_tok);
    for (int64_t i = 0; st == TY_OK && i < ty__gguf_n_kv(g); i++) {
        const char *k = ty__gguf_key(g, i);
        if (!strcmp(k, "tokenizer.ggml.add_bos_token") || !strcmp(k, "tokenizer.ggml.add_eos_token") ||
            !strcmp(k, "tokenizer.chat_template"))
            st = ty__gguf_writer_copy_kv(w, g, i);
    }
    if (st == TY_OK) st = write_temp(w, path);
    ty_free(map);
    ty_free(strs);
    ty_free(lens);
    ty_free(types);
    return st;
}

enum ty_status ty__train_vocab_cut(const struct ty_tokenizer *full, int32_t n_base, const char *tmp_dir,
                                   struct ty_tokenizer **out) {
    *out = NULL;
    char p1[4096], p2[4096];
    snprintf(p1, sizeof p1, "%s/tongyun-vocab-%d-full.gguf", tmp_dir, (int)getpid());
    snprintf(p2, sizeof p2, "%s/tongyun-vocab-%d-cut.gguf", tmp_dir, (int)getpid());
    struct ty_gguf_writer *w1 = NULL, *w2 = NULL;
    struct ty_gguf *g = NULL;
    enum ty_status st = ty__gguf_writer_init(&w1);
    if (st == TY_OK) st = ty__tokenizer_to_gguf(full, w1);
    if (st == TY_OK) st = write_temp(w1, p1);
    if (st == TY_OK) st = ty__gguf_open(p1, &g);
    if (st == TY_OK) st = ty__gguf_writer_init(&w2);
    if (st == TY_OK) st = cut(g, n_base, w2, p2);
    if (st == TY_OK) st = ty__tokenizer_load_gguf_file(p2, out);
    ty__gguf_close(g);
    ty__gguf_writer_free(w1);
    ty__gguf_writer_free(w2);
    remove(p1);
    remove(p2);
    return st;
}
