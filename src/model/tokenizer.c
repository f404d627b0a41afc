/*
 * tokenizer.c - Qwen's byte-level BPE tokenizer: the tables (vocabulary, merges, added tokens), encoding and
 * decoding, and the public ty_tokenize / ty_detokenize_* API.
 *
 * Encoding follows Hugging Face tokenizers step by step, because "the same ids as the reference" is the contract:
 *   1. added tokens that are not `normalized` are cut out of the raw text (leftmost, longest first; special ones only
 *      with TY_TOKENIZE_SPECIAL, as `split_special_tokens` does; lstrip/rstrip/single_word honoured);
 *   2. each remaining segment is normalised (NFC) and `normalized` added tokens are cut out of it;
 *   3. the pre-tokenizer regex cuts the rest into pieces (tokenizer-text.c);
 *   4. each piece's bytes become byte tokens, merged by BPE: the lowest-ranked adjacent pair first, leftmost among
 *      equals, until no pair has a merge.
 * Speed comes from not doing BPE: a piece equal to a vocabulary token BPE reproduces maps to it in one probe of the
 * vocabulary table (whether BPE reproduces it is learnt the first time and kept in the slot, atomically); repeated
 * pieces hit a per-call cache; the first merge round reads a 256x256 byte-pair table. BPE itself rescans a small
 * array for short words and uses a heap for long ones, and the Qwen regex runs as a hand-written matcher. Each fast
 * path keeps its plain counterpart (PCRE2, the heap, BPE) and the tests compare the two.
 *
 * Apart from that memo the tokenizer is immutable after loading, and every call keeps its scratch space to itself,
 * so one tokenizer serves many threads.
 */
#include "tokenizer-impl.h"

#include <stdio.h>
#include <stdlib.h>

/* ==== Hashing ==== */

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static inline uint64_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0x100000001b3ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x87c37b91114253d5ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)s[i] << (8 * i);
    return mix64(h ^ w);
}

/* ==== Building the tables ==== */

enum ty_status ty__tok_create(int32_t n_vocab, struct ty_tokenizer **out) {
    *out = NULL;
    if (n_vocab <= 0 || n_vocab > TOK_MAX_VOCAB)
        return ty__error(TY_ERR_FORMAT, "vocabulary of %d tokens is out of range (1 .. %d)", n_vocab, TOK_MAX_VOCAB);
    struct ty_tokenizer *t = ty__calloc(1, sizeof *t);
    if (!t) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the tokenizer");
    t->tokens = ty__calloc((size_t)n_vocab, sizeof *t->tokens);
    if (!t->tokens) {
        ty_free(t);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory for %d tokens", n_vocab);
    }
    t->n_vocab = n_vocab;
    t->unk_id = t->bos_id = t->eos_id = t->pad_id = t->eot_id = -1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    *out = t;
    return TY_OK;
}

void ty_tokenizer_free(struct ty_tokenizer *t) {
    if (!t) return;
    ty_free(t->tokens);
    ty_free(t->pool);
    ty_free(t->vocab_tab);
    ty_free(t->added);
    ty_free(t->trie);
    ty_free(t->merge_tab);
    ty_free(t->merges);
    ty_free(t->byte_pairs);
    ty_free(t->regex);
    if (t->re) pcre2_code_free(t->re);
    ty_free(t->chat_template);
    ty_free(t);
}

/* Appends bytes to the pool, returning their offset. */
static enum ty_status pool_add(struct ty_tokenizer *t, const void *bytes, size_t len, uint32_t *off) {
    if (len > TOK_MAX_TOKEN_BYTES) return ty__error(TY_ERR_FORMAT, "token of %zu bytes is too long", len);
    if (t->pool_len + len > UINT32_MAX) return ty__error(TY_ERR_FORMAT, "token texts exceed 4 GiB in total");
    if (t->pool_len + len > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 4096;
        while (cap < t->pool_len + len) cap *= 2;
        char *p = ty__realloc(t->pool, cap);
        if (!p) return ty__error(TY_ERR_NO_MEMORY, "out of memory for token texts");
        t->pool = p;
        t->pool_cap = cap;
    }
    if (len) memcpy(t->pool + t->pool_len, bytes, len);
    *off = (uint32_t)t->pool_len;
    t->pool_len += len;
    return TY_OK;
}

enum ty_status ty__tok_set(struct ty_tokenizer *t, int32_t id, const void *bytes, size_t len, enum tok_type type) {
    if (id < 0 || id >= t->n_vocab)
        return ty__error(TY_ERR_FORMAT, "token id %d is out of range (vocabulary of %d)", id, t->n_vocab);
    uint32_t off;
    TY_TRY(pool_add(t, bytes, len, &off));
    t->tokens[id].off = off;
    t->tokens[id].len = (uint32_t)len;
    t->tokens[id].type = (uint8_t)type;
    t->tokens[id].in_vocab = type == TOK_TYPE_NORMAL || type == TOK_TYPE_BYTE;
    return TY_OK;
}

/* A slot matches bytes s when its length and inline prefix agree, and, for tokens longer than the prefix, the rest
 * does too. Most tokens fit the prefix, so a lookup touches one cache line. */
static inline bool slot_match(const struct ty_tokenizer *t, const struct tok_slot *sl, const void *s, size_t len) {
    if (sl->len != (len < 255 ? len : 255)) return false;
    size_t k = len < TOK_SLOT_KEY ? len : TOK_SLOT_KEY;
    if (memcmp(sl->key, s, k)) return false;
    if (len <= TOK_SLOT_KEY) return true;
    const struct tok_entry *e = &t->tokens[sl->id];
    return e->len == len && !memcmp(t->pool + e->off + k, (const char *)s + k, len - k);
}

enum ty_status ty__tok_index_vocab(struct ty_tokenizer *t, bool dup_error) {
    ty_free(t->vocab_tab);
    uint32_t cap = 16;
    while (cap < (size_t)t->n_vocab + (size_t)t->n_vocab / 2) cap <<= 1;
    t->vocab_tab = ty__malloc((size_t)cap * sizeof *t->vocab_tab);
    if (!t->vocab_tab) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the vocabulary index");
    for (uint32_t i = 0; i < cap; i++) t->vocab_tab[i].id = -1;
    t->vocab_mask = cap - 1;
    t->max_token_len = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const struct tok_entry *e = &t->tokens[id];
        if (!e->in_vocab) continue;
        if (e->len > t->max_token_len) t->max_token_len = e->len;
        const char *bytes = t->pool + e->off;
        uint32_t h = (uint32_t)hash_bytes(bytes, e->len) & t->vocab_mask;
        for (;;) {
            struct tok_slot *sl = &t->vocab_tab[h];
            if (sl->id >= 0 && !slot_match(t, sl, bytes, e->len)) {
                h = (h + 1) & t->vocab_mask;
                continue;
            }
            if (sl->id >= 0 && dup_error)
                return ty__error(TY_ERR_FORMAT, "tokens %d and %d have the same bytes; the vocabulary is corrupt",
                                 sl->id, id);
            sl->id = id;
            sl->len = (uint8_t)(e->len < 255 ? e->len : 255);
            atomic_init(&sl->direct, TOK_DIRECT_UNKNOWN);
            memset(sl->key, 0, TOK_SLOT_KEY);
            memcpy(sl->key, bytes, e->len < TOK_SLOT_KEY ? e->len : TOK_SLOT_KEY);
            break;
        }
    }
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        t->byte_id[b] = ty__tok_lookup(t, &byte, 1);
    }
    return TY_OK;
}

static inline struct tok_slot *slot_find(const struct ty_tokenizer *t, const void *s, size_t len, uint64_t hash) {
    if (!t->vocab_tab) return NULL;
    uint32_t h = (uint32_t)hash & t->vocab_mask;
    for (;;) {
        struct tok_slot *sl = &t->vocab_tab[h];
        if (sl->id < 0) return NULL;
        if (slot_match(t, sl, s, len)) return sl;
        h = (h + 1) & t->vocab_mask;
    }
}

static inline int32_t lookup_hashed(const struct ty_tokenizer *t, const void *s, size_t len, uint64_t hash) {
    const struct tok_slot *sl = slot_find(t, s, len, hash);
    return sl ? sl->id : -1;
}

int32_t ty__tok_lookup(const struct ty_tokenizer *t, const void *s, size_t len) {
    return lookup_hashed(t, s, len, hash_bytes(s, len));
}

enum ty_status ty__tok_add_added(struct ty_tokenizer *t, int32_t id, const void *pattern, size_t len, unsigned flags) {
    if (id < 0 || id >= t->n_vocab) return ty__error(TY_ERR_FORMAT, "added token id %d is out of range", id);
    if (t->n_added >= TOK_MAX_VOCAB) return ty__error(TY_ERR_FORMAT, "too many added tokens");
    struct tok_added a = {.id = id, .flags = (uint8_t)flags};
    if (pattern) {
        TY_TRY(pool_add(t, pattern, len, &a.off));
        a.len = (uint32_t)len;
    } else {
        a.off = t->tokens[id].off;
        a.len = t->tokens[id].len;
    }
    struct tok_added *p = ty__realloc(t->added, ((size_t)t->n_added + 1) * sizeof *p);
    if (!p) return ty__error(TY_ERR_NO_MEMORY, "out of memory for added tokens");
    t->added = p;
    t->added[t->n_added++] = a;
    if (flags & TOK_ADDED_NORMALIZED) t->has_normalized_added = true;
    return TY_OK;
}

static int added_cmp(const void *pa, const void *pb) {
    const struct tok_added *a = pa, *b = pb;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* The child of trie node `node` for byte b, or -1. */
static inline int32_t trie_child(const struct ty_tokenizer *t, int32_t node, uint8_t b) {
    int32_t c = t->trie[node].child;
    while (c >= 0 && t->trie[c].byte != b) c = t->trie[c].sibling;
    return c;
}

/* A trie of the added tokens' patterns, so that finding the longest one at a position costs one step per byte of
 * the match however many added tokens there are (some vocabularies have thousands, mostly starting with '<'). */
enum ty_status ty__tok_index_added(struct ty_tokenizer *t) {
    /* by id, so that of two tokens with one pattern the lower id wins */
    if (t->n_added > 1) qsort(t->added, (size_t)t->n_added, sizeof *t->added, added_cmp);
    ty_free(t->trie);
    t->trie = NULL;
    t->n_trie = 0;
    size_t cap = 1;
    for (int32_t k = 0; k < t->n_added; k++) cap += t->added[k].len;
    t->trie = ty__malloc(cap * sizeof *t->trie);
    if (!t->trie) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the added-token index");
    for (int b = 0; b < 256; b++) t->trie_root[b] = -1;
    t->added_lead = -1;
    int n_leads = 0;
    for (int32_t k = 0; k < t->n_added; k++) {
        const struct tok_added *a = &t->added[k];
        if (!a->len) continue; /* Hugging Face ignores empty added tokens */
        const uint8_t *p = (const uint8_t *)t->pool + a->off;
        int32_t node = t->trie_root[p[0]];
        if (node < 0) {
            node = t->n_trie++;
            t->trie[node] = (struct tok_trie){.child = -1, .sibling = -1, .term = {-1, -1}, .byte = p[0]};
            t->trie_root[p[0]] = node;
            n_leads++;
            t->added_lead = p[0];
        }
        for (uint32_t i = 1; i < a->len; i++) {
            int32_t c = trie_child(t, node, p[i]);
            if (c < 0) {
                c = t->n_trie++;
                t->trie[c] =
                    (struct tok_trie){.child = -1, .sibling = t->trie[node].child, .term = {-1, -1}, .byte = p[i]};
                t->trie[node].child = c;
            }
            node = c;
        }
        int cls = (a->flags & TOK_ADDED_NORMALIZED) ? 1 : 0;
        if (t->trie[node].term[cls] < 0) t->trie[node].term[cls] = k;
    }
    if (n_leads != 1) t->added_lead = -1;
    return TY_OK;
}

static inline uint64_t merge_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static inline uint32_t merge_slot(const struct ty_tokenizer *t, uint64_t key) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - t->merge_bits));
}

enum ty_status ty__tok_merges_begin(struct ty_tokenizer *t, size_t n) {
    if (n > (size_t)TOK_MAX_VOCAB * 4) return ty__error(TY_ERR_FORMAT, "%zu merges is too many", n);
    uint32_t cap = 16;
    while (cap < n + n / 2 && cap < (1u << 30)) cap <<= 1; /* load <= 2/3: a smaller table stays in cache */
    int bits = 0;
    while ((1u << bits) < cap) bits++;
    ty_free(t->merge_tab);
    ty_free(t->merges);
    t->merge_tab = ty__malloc((size_t)cap * sizeof *t->merge_tab);
    t->merges = ty__malloc((n ? n : 1) * sizeof *t->merges);
    if (!t->merge_tab || !t->merges) return ty__error(TY_ERR_NO_MEMORY, "out of memory for %zu merges", n);
    for (uint32_t i = 0; i < cap; i++) t->merge_tab[i].rank = -1;
    t->merge_mask = cap - 1;
    t->merge_bits = bits;
    t->n_merges = 0;
    return TY_OK;
}

static inline const struct tok_merge *merge_find(const struct ty_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = merge_key(a, b);
    uint32_t h = merge_slot(t, key);
    for (;;) {
        const struct tok_merge *m = &t->merge_tab[h];
        if (m->rank < 0) return NULL;
        if (m->key == key) return m;
        h = (h + 1) & t->merge_mask;
    }
}

enum ty_status ty__tok_merge_add(struct ty_tokenizer *t, int32_t left, int32_t right, const char *what,
                                 uint64_t index) {
    const struct tok_entry *a = &t->tokens[left], *b = &t->tokens[right];
    size_t len = (size_t)a->len + b->len;
    char stack[256];
    char *buf = len <= sizeof stack ? stack : ty__malloc(len);
    if (!buf) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    memcpy(buf, t->pool + a->off, a->len);
    memcpy(buf + a->len, t->pool + b->off, b->len);
    int32_t id = ty__tok_lookup(t, buf, len);
    if (buf != stack) ty_free(buf);
    if (id < 0)
        return ty__error(TY_ERR_FORMAT, "%s[%llu]: the merged token (of tokens %d and %d) is not in the vocabulary",
                         what, (unsigned long long)index, left, right);
    int32_t rank = t->n_merges;
    uint64_t key = merge_key(left, right);
    uint32_t h = merge_slot(t, key);
    for (;;) {
        struct tok_merge *m = &t->merge_tab[h];
        if (m->rank < 0 || m->key == key) {
            m->key = key;
            m->rank = rank;
            m->id = id;
            break;
        }
        h = (h + 1) & t->merge_mask;
    }
    t->merges[t->n_merges][0] = left;
    t->merges[t->n_merges][1] = right;
    t->n_merges++;
    return TY_OK;
}

void ty__tok_finish_specials(struct ty_tokenizer *t) {
    int32_t cand[] = {t->eos_id, t->eot_id, ty_tokenizer_find(t, "<|im_end|>"), ty_tokenizer_find(t, "<|endoftext|>")};
    t->n_eog = 0;
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
        if (cand[i] < 0 || cand[i] >= t->n_vocab) continue;
        bool dup = false;
        for (int k = 0; k < t->n_eog; k++) dup |= t->eog[k] == cand[i];
        if (!dup) t->eog[t->n_eog++] = cand[i];
    }
}

enum ty_status ty__tokenizer_pad_vocab(struct ty_tokenizer *t, int32_t n_vocab) {
    if (n_vocab < t->n_vocab)
        return ty__error(TY_ERR_INVALID_ARG, "cannot pad a vocabulary of %d tokens down to %d", t->n_vocab, n_vocab);
    if (n_vocab > TOK_MAX_VOCAB) return ty__error(TY_ERR_INVALID_ARG, "vocabulary of %d is too large", n_vocab);
    if (n_vocab == t->n_vocab) return TY_OK;
    struct tok_entry *e = ty__realloc(t->tokens, (size_t)n_vocab * sizeof *e);
    if (!e) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    memset(e + t->n_vocab, 0, (size_t)(n_vocab - t->n_vocab) * sizeof *e);
    t->tokens = e;
    int32_t old = t->n_vocab;
    t->n_vocab = n_vocab;
    for (int32_t id = old; id < n_vocab; id++) {
        char name[32];
        int len = snprintf(name, sizeof name, "[PAD%d]", id);
        TY_TRY(ty__tok_set(t, id, name, (size_t)len, TOK_TYPE_UNUSED));
    }
    return TY_OK;
}

const char *ty__tokenizer_chat_template(const struct ty_tokenizer *t) {
    return t->chat_template;
}

void ty__tokenizer_special_ids(const struct ty_tokenizer *t, int32_t *bos, int32_t *eos, int32_t *pad) {
    if (bos) *bos = t->bos_id;
    if (eos) *eos = t->eos_id;
    if (pad) *pad = t->pad_id;
}

/* ==== Public queries ==== */

int32_t ty_tokenizer_n_vocab(const struct ty_tokenizer *t) {
    return t ? t->n_vocab : 0;
}

int32_t ty_tokenizer_find(const struct ty_tokenizer *t, const char *text) {
    if (!t || !text) return -1;
    size_t len = strlen(text);
    for (int32_t k = 0; k < t->n_added; k++) {
        const struct tok_entry *e = &t->tokens[t->added[k].id];
        if (e->len == len && !memcmp(t->pool + e->off, text, len)) return t->added[k].id;
    }
    return ty__tok_lookup(t, text, len);
}

bool ty_tokenizer_is_eog(const struct ty_tokenizer *t, int32_t id) {
    if (!t) return false;
    for (int k = 0; k < t->n_eog; k++)
        if (t->eog[k] == id) return true;
    return false;
}

const char *ty_token_bytes(const struct ty_tokenizer *t, int32_t id, size_t *len) {
    if (len) *len = 0;
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    const struct tok_entry *e = &t->tokens[id];
    /* Ids that no text maps to (gaps, llama.cpp's "[PAD<n>]" fillers) decode to nothing, as both references do. */
    if (e->type == TOK_TYPE_UNDEFINED || e->type == TOK_TYPE_UNUSED) return "";
    if (len) *len = e->len;
    return e->len ? t->pool + e->off : "";
}

/* ==== Encoding ==== */

/* Words up to this many symbols are merged by rescanning a small array; longer ones use a heap (n log n). */
static size_t bpe_small_max = 48;

/* Per-call cache of short pieces' ids: real text repeats its words, and one hash probe into this small table costs
 * far less than BPE's walk through the big merge table. Made only once a call has seen enough pieces to pay off. */
#define WC_MIN_PIECES  256  /* pieces seen before the cache is made */
#define WC_MAX_KEY     48   /* longest piece cached, in bytes */
#define WC_MIN_ENTRIES 4096 /* the cache starts this small and doubles as it fills */
#define WC_MAX_ENTRIES 65536
struct wc_ent {
    uint64_t hash; /* 0 = empty */
    uint32_t key_off, ids_off;
    uint16_t key_len, n_ids;
};

struct tok_work {
    const struct ty_tokenizer *t;
    unsigned flags;
    size_t n_pieces;
    struct wc_ent *wc; /* (wc_mask + 1) slots */
    uint32_t wc_mask, wc_used;
    char *wc_keys; /* key bytes */
    size_t wc_keys_len, wc_keys_cap;
    int32_t *wc_ids;
    size_t wc_ids_len, wc_ids_cap;
    int32_t *out; /* ids produced so far */
    size_t n_out, cap_out;
    int32_t *sym, *rank, *mid, *prev, *next; /* BPE scratch, cap_sym each */
    uint64_t *heap; /* 3 * cap_sym entries of rank << 32 | position: one compare orders by rank, then leftmost */
    size_t cap_sym;
    struct tok_split split;
    /* short calls (a chat turn) never allocate: the first buffers live here */
    int32_t out_inline[512];
    int32_t sym_inline[5][64];
    uint64_t heap_inline[3 * 64];
};

static void work_init(struct tok_work *w, const struct ty_tokenizer *t, unsigned flags) {
    memset(w, 0, offsetof(struct tok_work, out_inline));
    w->t = t;
    w->flags = flags;
    w->out = w->out_inline;
    w->cap_out = sizeof w->out_inline / sizeof w->out_inline[0];
    int32_t **arrs[] = {&w->sym, &w->rank, &w->mid, &w->prev, &w->next};
    for (size_t i = 0; i < 5; i++) *arrs[i] = w->sym_inline[i];
    w->heap = w->heap_inline;
    w->cap_sym = 64;
}

/* Grows an array that may still be one of the inline buffers (which are copied out, never freed). */
static void *grow(void *p, const void *inline_buf, size_t used_bytes, size_t new_bytes) {
    if (p != inline_buf) return ty__realloc(p, new_bytes);
    void *q = ty__malloc(new_bytes);
    if (q && used_bytes) memcpy(q, p, used_bytes);
    return q;
}

static enum ty_status work_reserve_out(struct tok_work *w, size_t extra) {
    if (w->n_out + extra <= w->cap_out) return TY_OK;
    size_t cap = w->cap_out;
    while (cap < w->n_out + extra) cap *= 2;
    int32_t *p = grow(w->out, w->out_inline, w->n_out * sizeof *p, cap * sizeof *p);
    if (!p) return ty__error(TY_ERR_NO_MEMORY, "out of memory for %zu token ids", cap);
    w->out = p;
    w->cap_out = cap;
    return TY_OK;
}

static inline enum ty_status emit(struct tok_work *w, int32_t id) {
    if (w->n_out == w->cap_out) TY_TRY(work_reserve_out(w, 1));
    w->out[w->n_out++] = id;
    return TY_OK;
}

/* Scratch for a word of n symbols; contents are not kept. */
static enum ty_status work_reserve_sym(struct tok_work *w, size_t n) {
    if (n <= w->cap_sym) return TY_OK;
    size_t cap = w->cap_sym;
    while (cap < n) cap *= 2;
    int32_t **arrs[] = {&w->sym, &w->rank, &w->mid, &w->prev, &w->next};
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) {
        int32_t *p = grow(*arrs[i], w->sym_inline[i], 0, cap * sizeof *p);
        if (!p) return ty__error(TY_ERR_NO_MEMORY, "out of memory for a word of %zu bytes", n);
        *arrs[i] = p;
    }
    uint64_t *h = grow(w->heap, w->heap_inline, 0, cap * 3 * sizeof *h);
    if (!h) return ty__error(TY_ERR_NO_MEMORY, "out of memory for a word of %zu bytes", n);
    w->heap = h;
    w->cap_sym = cap;
    return TY_OK;
}

static void work_free(struct tok_work *w) {
    ty_free(w->wc);
    ty_free(w->wc_keys);
    ty_free(w->wc_ids);
    if (w->out != w->out_inline) ty_free(w->out);
    int32_t *arrs[] = {w->sym, w->rank, w->mid, w->prev, w->next};
    for (size_t i = 0; i < 5; i++)
        if (arrs[i] != w->sym_inline[i]) ty_free(arrs[i]);
    if (w->heap != w->heap_inline) ty_free(w->heap);
    ty__tok_split_free(&w->split);
}

/* Merges sym[0..n) in place by rescanning for the lowest rank; returns the new length. `bytes`, when not NULL, are
 * the bytes sym[] was made from one for one, so the first round reads the byte-pair table instead of hashing. */
static size_t bpe_small(const struct ty_tokenizer *t, int32_t *sym, int32_t *rank, int32_t *mid, size_t n,
                        const uint8_t *bytes) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (bytes && t->byte_pairs) {
            const struct tok_pair *p = &t->byte_pairs[bytes[i] << 8 | bytes[i + 1]];
            rank[i] = p->rank >= 0 ? p->rank : INT32_MAX;
            mid[i] = p->id;
            continue;
        }
        const struct tok_merge *m = merge_find(t, sym[i], sym[i + 1]);
        rank[i] = m ? m->rank : INT32_MAX;
        mid[i] = m ? m->id : -1;
    }
    while (n > 1) {
        int32_t best = INT32_MAX;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (rank[i] < best) {
                best = rank[i];
                bi = i;
            }
        }
        if (best == INT32_MAX) break;
        sym[bi] = mid[bi];
        /* drop symbol bi+1 and the pair (bi+1, bi+2) */
        memmove(sym + bi + 1, sym + bi + 2, (n - bi - 2) * sizeof *sym);
        if (bi + 2 < n) {
            memmove(rank + bi + 1, rank + bi + 2, (n - bi - 3) * sizeof *rank);
            memmove(mid + bi + 1, mid + bi + 2, (n - bi - 3) * sizeof *mid);
        }
        n--;
        for (size_t i = bi ? bi - 1 : 0; i <= bi && i + 1 < n; i++) {
            const struct tok_merge *m = merge_find(t, sym[i], sym[i + 1]);
            rank[i] = m ? m->rank : INT32_MAX;
            mid[i] = m ? m->id : -1;
        }
    }
    return n;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (e >= h[p]) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], e = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        c += c + 1 < m && h[c + 1] < h[c];
        if (h[c] >= e) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = e;
    return top;
}

static inline uint64_t heap_key(int32_t rank, int32_t pos) {
    return (uint64_t)(uint32_t)rank << 32 | (uint32_t)pos;
}

/* The same merges with a heap of (rank, position) and a linked list, as Hugging Face's Word::merge_all does; an
 * entry whose pair has changed since it was pushed is skipped when popped. Compacts sym[] and returns the new
 * length. `bytes` as for bpe_small. */
static size_t bpe_heap(const struct ty_tokenizer *t, struct tok_work *w, size_t n, const uint8_t *bytes) {
    int32_t *sym = w->sym, *prev = w->prev, *next = w->next;
    uint64_t *heap = w->heap;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t rank;
        if (bytes && t->byte_pairs) {
            rank = t->byte_pairs[bytes[i] << 8 | bytes[i + 1]].rank;
        } else {
            const struct tok_merge *m = merge_find(t, sym[i], sym[i + 1]);
            rank = m ? m->rank : -1;
        }
        if (rank >= 0) heap_push(heap, &nh, heap_key(rank, (int32_t)i));
    }
    while (nh) {
        uint64_t e = heap_pop(heap, &nh);
        int32_t p = (int32_t)(uint32_t)e, r = next[p];
        if (sym[p] < 0 || r < 0) continue;
        const struct tok_merge *m = merge_find(t, sym[p], sym[r]);
        if (!m || m->rank != (int32_t)(e >> 32)) continue; /* the pair changed since it was pushed */
        sym[p] = m->id;
        sym[r] = -1;
        next[p] = next[r];
        if (next[r] >= 0) prev[next[r]] = p;
        if (prev[p] >= 0) {
            const struct tok_merge *ml = merge_find(t, sym[prev[p]], sym[p]);
            if (ml) heap_push(heap, &nh, heap_key(ml->rank, prev[p]));
        }
        if (next[p] >= 0) {
            const struct tok_merge *mr = merge_find(t, sym[p], sym[next[p]]);
            if (mr) heap_push(heap, &nh, heap_key(mr->rank, p));
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (sym[i] >= 0) sym[k++] = sym[i];
    return k;
}

static bool wc_grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    void *q = ty__realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

/* Finds the cached ids of piece s (NULL when absent); `*slot` receives the slot to insert into. */
static const struct wc_ent *wc_find(const struct tok_work *w, const uint8_t *s, size_t len, uint64_t h,
                                    uint32_t *slot) {
    uint32_t i = (uint32_t)h & w->wc_mask;
    for (;;) {
        const struct wc_ent *e = &w->wc[i];
        if (!e->hash) break;
        if (e->hash == h && e->key_len == len && !memcmp(w->wc_keys + e->key_off, s, len)) return e;
        i = (i + 1) & w->wc_mask;
    }
    *slot = i;
    return NULL;
}

/* Doubles the cache table while it is below its limit; false when it cannot grow. */
static bool wc_rehash(struct tok_work *w) {
    uint32_t cap = (w->wc_mask + 1) * 2;
    if (cap > WC_MAX_ENTRIES) return false;
    struct wc_ent *tab = ty__calloc(cap, sizeof *tab);
    if (!tab) return false;
    for (uint32_t i = 0; i <= w->wc_mask; i++) {
        if (!w->wc[i].hash) continue;
        uint32_t j = (uint32_t)w->wc[i].hash & (cap - 1);
        while (tab[j].hash) j = (j + 1) & (cap - 1);
        tab[j] = w->wc[i];
    }
    ty_free(w->wc);
    w->wc = tab;
    w->wc_mask = cap - 1;
    return true;
}

/* Remembers ids[0..n) for piece s; failure to allocate only means no caching. */
static void wc_insert(struct tok_work *w, uint32_t slot, const uint8_t *s, size_t len, uint64_t h, const int32_t *ids,
                      size_t n) {
    if (n > UINT16_MAX) return;
    if (w->wc_used >= (w->wc_mask + 1) / 2) {
        if (!wc_rehash(w)) return;
        wc_find(w, s, len, h, &slot); /* the free slot moved */
    }
    if (!wc_grow((void **)&w->wc_keys, &w->wc_keys_cap, w->wc_keys_len + len, 1) ||
        !wc_grow((void **)&w->wc_ids, &w->wc_ids_cap, w->wc_ids_len + n, sizeof *w->wc_ids))
        return;
    memcpy(w->wc_keys + w->wc_keys_len, s, len);
    memcpy(w->wc_ids + w->wc_ids_len, ids, n * sizeof *ids);
    w->wc[slot] = (struct wc_ent){h, (uint32_t)w->wc_keys_len, (uint32_t)w->wc_ids_len, (uint16_t)len, (uint16_t)n};
    w->wc_keys_len += len;
    w->wc_ids_len += n;
    w->wc_used++;
}

/* BPE on one pre-token. */
static enum ty_status encode_piece(void *ctx, const uint8_t *s, size_t len) {
    struct tok_work *w = ctx;
    const struct ty_tokenizer *t = w->t;
    if (len == 1) {
        int32_t id = t->byte_id[s[0]];
        if (id < 0) id = t->unk_id;
        return id >= 0 ? emit(w, id) : TY_OK;
    }
    if (t->ignore_merges) {
        int32_t id = ty__tok_lookup(t, s, len);
        if (id >= 0) return emit(w, id);
    }
    uint64_t h = hash_bytes(s, len);
    struct tok_slot *whole = NULL; /* the token equal to the whole piece, when its BPE result is not known yet */
    if (len <= t->max_token_len) {
        struct tok_slot *sl = slot_find(t, s, len, h);
        if (sl) {
            uint8_t d = atomic_load_explicit(&sl->direct, memory_order_relaxed);
            if (d == TOK_DIRECT_YES) return emit(w, sl->id);
            if (d == TOK_DIRECT_UNKNOWN) whole = sl;
        }
    }
    h |= 1; /* 0 marks an empty cache slot */
    uint32_t slot = 0;
    bool cacheable = false;
    if (len <= WC_MAX_KEY) {
        if (!w->wc && ++w->n_pieces == WC_MIN_PIECES) {
            w->wc = ty__calloc(WC_MIN_ENTRIES, sizeof *w->wc);
            w->wc_mask = WC_MIN_ENTRIES - 1;
        }
        if (w->wc) {
            const struct wc_ent *e = wc_find(w, s, len, h, &slot);
            if (e) {
                TY_TRY(work_reserve_out(w, e->n_ids));
                memcpy(w->out + w->n_out, w->wc_ids + e->ids_off, e->n_ids * sizeof *w->out);
                w->n_out += e->n_ids;
                return TY_OK;
            }
            cacheable = true;
        }
    }
    TY_TRY(work_reserve_sym(w, len));
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = t->byte_id[s[i]];
        if (id < 0) id = t->unk_id;
        if (id >= 0) w->sym[n++] = id;
    }
    const uint8_t *bytes = n == len && t->all_bytes ? s : NULL;
    n = n <= bpe_small_max ? bpe_small(t, w->sym, w->rank, w->mid, n, bytes) : bpe_heap(t, w, n, bytes);
    if (whole)
        atomic_store_explicit(&whole->direct, n == 1 && w->sym[0] == whole->id ? TOK_DIRECT_YES : TOK_DIRECT_NO,
                              memory_order_relaxed);
    if (cacheable) wc_insert(w, slot, s, len, h, w->sym, n);
    TY_TRY(work_reserve_out(w, n));
    memcpy(w->out + w->n_out, w->sym, n * sizeof *w->sym);
    w->n_out += n;
    return TY_OK;
}

enum ty_status ty__tok_prepare(struct ty_tokenizer *t) {
    t->all_bytes = true;
    for (int b = 0; b < 256; b++) t->all_bytes &= t->byte_id[b] >= 0;
    ty_free(t->byte_pairs);
    t->byte_pairs = NULL;
    if (t->all_bytes) {
        t->byte_pairs = ty__malloc(256 * 256 * sizeof *t->byte_pairs);
        if (!t->byte_pairs) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the byte-pair table");
        for (int a = 0; a < 256; a++) {
            for (int b = 0; b < 256; b++) {
                const struct tok_merge *m = merge_find(t, t->byte_id[a], t->byte_id[b]);
                t->byte_pairs[a << 8 | b] = m ? (struct tok_pair){m->rank, m->id} : (struct tok_pair){-1, -1};
            }
        }
    }
    return TY_OK;
}

/* Leftmost-longest added token of the given class (normalized or not) in s[from..n), as Hugging Face's
 * Aho-Corasick automaton (MatchKind::LeftmostLongest) finds it. Returns its index in t->added and its start, or -1. */
static int32_t added_find(const struct ty_tokenizer *t, const uint8_t *s, size_t n, size_t from, bool normalized,
                          size_t *start) {
    int cls = normalized ? 1 : 0;
    for (size_t i = from; i < n; i++) {
        if (t->added_lead >= 0) {
            const uint8_t *p = memchr(s + i, t->added_lead, n - i);
            if (!p) return -1;
            i = (size_t)(p - s);
        }
        int32_t node = t->trie_root[s[i]], best = -1;
        for (size_t j = i + 1; node >= 0; j++) {
            if (t->trie[node].term[cls] >= 0) best = t->trie[node].term[cls];
            if (j >= n) break;
            node = trie_child(t, node, s[j]);
        }
        if (best >= 0) {
            *start = i;
            return best;
        }
    }
    return -1;
}

static size_t utf8_prev(const uint8_t *s, size_t i) {
    do i--;
    while (i > 0 && (s[i] & 0xC0) == 0x80);
    return i;
}

static bool word_before(const uint8_t *s, size_t i) {
    if (i == 0) return false;
    size_t p = utf8_prev(s, i), l;
    return ty__cp_is_word(ty__utf8_decode(s + p, &l));
}

static bool word_after(const uint8_t *s, size_t n, size_t i) {
    if (i >= n) return false;
    size_t l;
    return ty__cp_is_word(ty__utf8_decode(s + i, &l));
}

typedef enum ty_status (*segment_fn)(struct tok_work *w, const uint8_t *s, size_t n);

/* Cuts the added tokens of one class out of s and hands the text between them to `plain` (Hugging Face's
 * AddedVocabulary::find_matches). */
static enum ty_status split_added(struct tok_work *w, const uint8_t *s, size_t n, bool normalized, segment_fn plain) {
    const struct ty_tokenizer *t = w->t;
    size_t last = 0, pos = 0, ms;
    int32_t k;
    while (pos < n && (k = added_find(t, s, n, pos, normalized, &ms)) >= 0) {
        const struct tok_added *a = &t->added[k];
        size_t start = ms, stop = ms + a->len;
        pos = stop;
        if ((a->flags & TOK_ADDED_SPECIAL) && !(w->flags & TY_TOKENIZE_SPECIAL)) continue;
        if ((a->flags & TOK_ADDED_SINGLE_WORD) && (word_before(s, start) || word_after(s, n, stop))) continue;
        if (a->flags & TOK_ADDED_LSTRIP) {
            while (start > last) {
                size_t p = utf8_prev(s, start), l;
                if (!ty__cp_is_space(ty__utf8_decode(s + p, &l))) break;
                start = p;
            }
        }
        if (a->flags & TOK_ADDED_RSTRIP) {
            while (stop < n) {
                size_t l;
                if (!ty__cp_is_space(ty__utf8_decode(s + stop, &l))) break;
                stop += l;
            }
            pos = stop;
        }
        if (start > last) TY_TRY(plain(w, s + last, start - last));
        TY_TRY(emit(w, a->id));
        last = stop;
    }
    if (last < n) TY_TRY(plain(w, s + last, n - last));
    return TY_OK;
}

static enum ty_status pretokenize_segment(struct tok_work *w, const uint8_t *s, size_t n) {
    return ty__tok_pretokenize(w->t, w->t->pre_impl, &w->split, s, n, encode_piece, w);
}

/* A segment of raw text between non-normalized added tokens: normalise, cut normalized added tokens, pre-tokenize. */
static enum ty_status normalize_segment(struct tok_work *w, const uint8_t *s, size_t n) {
    const struct ty_tokenizer *t = w->t;
    uint8_t *norm = NULL;
    if (t->nfc && !ty__nfc_quick(s, n)) {
        TY_TRY(ty__nfc(s, n, &norm, &n));
        s = norm;
    }
    enum ty_status st =
        t->has_normalized_added ? split_added(w, s, n, true, pretokenize_segment) : pretokenize_segment(w, s, n);
    ty_free(norm);
    return st;
}

static enum ty_status tokenize_into(struct tok_work *w, const uint8_t *s, size_t n) {
    return w->t->n_added ? split_added(w, s, n, false, normalize_segment) : normalize_segment(w, s, n);
}

enum ty_status ty_tokenize(const struct ty_tokenizer *tok, const char *text, size_t len, unsigned flags, int32_t *ids,
                           size_t cap, size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!tok || !n_out || (!text && len) || (!ids && cap))
        return ty__error(TY_ERR_INVALID_ARG, "ty_tokenize: tokenizer, text, ids and n_out must not be NULL");
    const uint8_t *s = (const uint8_t *)text;
    size_t bad = ty__utf8_check(s, len);
    if (bad < len)
        return ty__error(TY_ERR_INVALID_ARG, "text is not valid UTF-8: byte 0x%02x at offset %zu", s[bad], bad);
    struct tok_work work, *w = &work;
    work_init(w, tok, flags);
    enum ty_status st = tokenize_into(w, s, len);
    if (st == TY_OK) {
        *n_out = w->n_out;
        if (w->n_out > cap)
            st = ty__error(TY_ERR_BUFFER_TOO_SMALL, "%zu token ids do not fit in a buffer of %zu", w->n_out, cap);
        else if (w->n_out)
            memcpy(ids, w->out, w->n_out * sizeof *ids);
    }
    work_free(w);
    return st;
}

/* ==== Decoding ==== */

/* Turns the bytes a ++ b into text: well-formed UTF-8 is copied, each maximal ill-formed subpart becomes U+FFFD (the
 * Unicode "substitution of maximal subparts", which is what Python's errors="replace" and Rust's from_utf8_lossy,
 * hence Hugging Face's decode, do). A valid but unfinished character at the end is kept back in `keep` unless
 * `final`. Writes at most `cap` bytes to `out` and returns the length the whole text needs. */
static size_t sanitize(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, bool final, char *out, size_t cap,
                       uint8_t keep[8], size_t *n_keep) {
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    size_t n = na + nb, o = 0, i = 0;
    *n_keep = 0;
#define AT(k) ((k) < na ? a[(k)] : b[(k)-na])
#define PUT(p, len)                                                                                                    \
    do {                                                                                                               \
        if (o + (len) <= cap) memcpy(out + o, (p), (len));                                                             \
        o += (len);                                                                                                    \
    } while (0)
    while (i < n) {
        if (i >= na) {
            /* plain runs of the token itself are copied in one go */
            size_t j = i;
            while (j < n && b[j - na] < 0x80) j++;
            if (j > i) {
                PUT(b + (i - na), j - i);
                i = j;
                continue;
            }
        }
        uint8_t tmp[4];
        size_t avail = n - i < 4 ? n - i : 4;
        for (size_t k = 0; k < avail; k++) tmp[k] = AT(i + k);
        bool inc;
        size_t l = ty__utf8_seq(tmp, avail, &inc);
        if (l) {
            PUT(tmp, l);
            i += l;
            continue;
        }
        if (inc && !final) {
            for (size_t k = 0; k < avail; k++) keep[k] = tmp[k];
            *n_keep = avail;
            break;
        }
        /* the maximal subpart: the lead byte plus the continuation bytes that were still acceptable */
        size_t sub = 1;
        if (inc) {
            sub = avail;
        } else {
            while (sub < avail) {
                bool inc2;
                ty__utf8_seq(tmp, sub + 1, &inc2);
                if (!inc2) break;
                sub++;
            }
        }
        PUT(fffd, 3);
        i += sub;
    }
#undef AT
#undef PUT
    return o;
}

enum ty_status ty_detokenize_push(const struct ty_tokenizer *tok, struct ty_detokenizer *st, int32_t id, char *out,
                                  size_t cap, size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!tok || !st || !n_out || (!out && cap))
        return ty__error(TY_ERR_INVALID_ARG, "ty_detokenize_push: tokenizer, state and n_out must not be NULL");
    if (st->n_pending > sizeof st->pending)
        return ty__error(TY_ERR_INVALID_ARG, "detokenizer state is corrupt (zero-initialise it before first use)");
    size_t len;
    const char *bytes = ty_token_bytes(tok, id, &len);
    if (!bytes)
        return ty__error(TY_ERR_INVALID_ARG, "token id %d is out of range (vocabulary of %d)", id, tok->n_vocab);
    uint8_t keep[8];
    size_t n_keep;
    size_t need = sanitize((const uint8_t *)st->pending, st->n_pending, (const uint8_t *)bytes, len, false, out,
                           cap ? cap - 1 : 0, keep, &n_keep);
    *n_out = need;
    if (need + 1 > cap)
        return ty__error(TY_ERR_BUFFER_TOO_SMALL, "token %d needs %zu bytes of output, the buffer has %zu", id,
                         need + 1, cap);
    out[need] = 0;
    memcpy(st->pending, keep, n_keep);
    st->n_pending = n_keep;
    return TY_OK;
}

enum ty_status ty_detokenize_flush(struct ty_detokenizer *st, char *out, size_t cap, size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!st || !n_out || (!out && cap))
        return ty__error(TY_ERR_INVALID_ARG, "ty_detokenize_flush: state and n_out must not be NULL");
    if (st->n_pending > sizeof st->pending)
        return ty__error(TY_ERR_INVALID_ARG, "detokenizer state is corrupt (zero-initialise it before first use)");
    uint8_t keep[8];
    size_t n_keep;
    size_t need =
        sanitize((const uint8_t *)st->pending, st->n_pending, NULL, 0, true, out, cap ? cap - 1 : 0, keep, &n_keep);
    *n_out = need;
    if (need + 1 > cap)
        return ty__error(TY_ERR_BUFFER_TOO_SMALL, "flushing needs %zu bytes of output, the buffer has %zu", need + 1,
                         cap);
    out[need] = 0;
    st->n_pending = 0;
    return TY_OK;
}
