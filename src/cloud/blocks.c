/*
 * blocks.c - the paged KV block manager: fixed-size blocks of TY_KV_BLOCK tokens, per-sequence block tables, reference
 * counts with copy-on-write (parallel sampling shares the prompt's blocks), reservations for admission control, and a
 * prefix cache of freed blocks keyed by a chained SHA-256 of their tokens.
 *
 * Every physical block is in exactly one of three states: referenced (ref > 0), free and cached (ref == 0, hashed,
 * on the LRU list, findable by hash), or free and plain (on the free stack). Allocation takes a plain block first and
 * otherwise evicts the least recently freed cached one. Reservations are promises against the free pool: the
 * invariant n_plain + n_cached >= n_reserved means a sequence can always grow into what it reserved, so admission is
 * the only place that can say "not now" and a running sequence never runs out of blocks.
 *
 * The manager is not thread-safe; the scheduler thread owns it.
 */
#include "cloud/cloud-impl.h"

#include <openssl/evp.h>

struct block {
    int32_t ref;
    bool hashed;
    struct ty_block_hash hash;
    int32_t lru_prev, lru_next; /* when free and cached */
};

struct ty_block_mgr {
    int32_t n_blocks, max_cached;
    struct block *b;   /* (n_blocks) */
    int32_t *free_ids; /* (n_blocks) stack of plain free blocks */
    int32_t n_plain;
    int32_t lru_head, lru_tail, n_cached; /* head: least recently freed */
    int32_t n_reserved;
    int32_t *map; /* (map_cap) open addressing: block id or -1 (empty) or -2 (deleted) */
    uint32_t map_cap;
    uint64_t queries, hits;
};

/* ==== Hashing ==== */

void ty__block_hash(const struct ty_block_hash *parent, const int32_t *tokens, struct ty_block_hash *out) {
    uint8_t msg[32 + 4 * TY_KV_BLOCK];
    if (parent)
        memcpy(msg, parent->h, 32);
    else
        memset(msg, 0, 32);
    for (int i = 0; i < TY_KV_BLOCK; i++) {
        uint32_t v = (uint32_t)tokens[i];
        msg[32 + 4 * i] = (uint8_t)v;
        msg[33 + 4 * i] = (uint8_t)(v >> 8);
        msg[34 + 4 * i] = (uint8_t)(v >> 16);
        msg[35 + 4 * i] = (uint8_t)(v >> 24);
    }
    unsigned int len = 32;
    if (!EVP_Digest(msg, sizeof msg, out->h, &len, EVP_sha256(), NULL)) TY_ASSERT(!"SHA-256 failed");
}

static uint32_t map_slot(const struct ty_block_hash *h, uint32_t cap) {
    uint32_t v;
    memcpy(&v, h->h, 4); /* SHA-256 output is uniform: its first bytes are a fine table index */
    return v & (cap - 1);
}

static int32_t map_find(struct ty_block_mgr *m, const struct ty_block_hash *h) {
    for (uint32_t i = map_slot(h, m->map_cap), k = 0; k < m->map_cap; i = (i + 1) & (m->map_cap - 1), k++) {
        int32_t id = m->map[i];
        if (id == -1) return -1;
        if (id >= 0 && !memcmp(m->b[id].hash.h, h->h, 32)) return id;
    }
    return -1;
}

static void map_insert(struct ty_block_mgr *m, int32_t id) {
    for (uint32_t i = map_slot(&m->b[id].hash, m->map_cap);; i = (i + 1) & (m->map_cap - 1))
        if (m->map[i] < 0) {
            m->map[i] = id;
            return;
        }
}

static void map_remove(struct ty_block_mgr *m, int32_t id) {
    for (uint32_t i = map_slot(&m->b[id].hash, m->map_cap), k = 0; k < m->map_cap;
         i = (i + 1) & (m->map_cap - 1), k++) {
        if (m->map[i] == -1) return;
        if (m->map[i] == id) {
            m->map[i] = -2;
            return;
        }
    }
}

/* ==== Free pool ==== */

static void lru_unlink(struct ty_block_mgr *m, int32_t id) {
    struct block *b = &m->b[id];
    if (b->lru_prev >= 0)
        m->b[b->lru_prev].lru_next = b->lru_next;
    else
        m->lru_head = b->lru_next;
    if (b->lru_next >= 0)
        m->b[b->lru_next].lru_prev = b->lru_prev;
    else
        m->lru_tail = b->lru_prev;
    b->lru_prev = b->lru_next = -1;
    m->n_cached--;
}

static void uncache(struct ty_block_mgr *m, int32_t id) {
    map_remove(m, id);
    m->b[id].hashed = false;
}

static void evict_oldest(struct ty_block_mgr *m) {
    int32_t id = m->lru_head;
    lru_unlink(m, id);
    uncache(m, id);
    m->free_ids[m->n_plain++] = id;
}

/* A block that is free now, ref set to 1. The caller has checked that the pool is not empty. */
static int32_t take_block(struct ty_block_mgr *m) {
    if (!m->n_plain) evict_oldest(m);
    TY_ASSERT(m->n_plain > 0);
    int32_t id = m->free_ids[--m->n_plain];
    m->b[id].ref = 1;
    return id;
}

static void drop_ref(struct ty_block_mgr *m, int32_t id) {
    struct block *b = &m->b[id];
    TY_ASSERT(b->ref > 0);
    if (--b->ref) return;
    if (b->hashed && m->max_cached > 0) {
        b->lru_prev = m->lru_tail;
        b->lru_next = -1;
        if (m->lru_tail >= 0)
            m->b[m->lru_tail].lru_next = id;
        else
            m->lru_head = id;
        m->lru_tail = id;
        m->n_cached++;
        while (m->n_cached > m->max_cached) evict_oldest(m);
    } else {
        if (b->hashed) uncache(m, id);
        m->free_ids[m->n_plain++] = id;
    }
}

static int32_t available(const struct ty_block_mgr *m) {
    return m->n_plain + m->n_cached - m->n_reserved;
}

static bool table_grow(struct ty_block_table *t, int32_t need) {
    if (need <= t->cap) return true;
    int32_t cap = t->cap ? t->cap : 8;
    while (cap < need) cap *= 2;
    int32_t *ids = ty__realloc(t->ids, (size_t)cap * sizeof *ids);
    if (!ids) return false;
    t->ids = ids;
    t->cap = cap;
    return true;
}

/* ==== Public ==== */

enum ty_status ty__block_mgr_init(int32_t n_blocks, int32_t max_cached, struct ty_block_mgr **out) {
    *out = NULL;
    if (n_blocks <= 0 || n_blocks > (1 << 28))
        return ty__error(TY_ERR_INVALID_ARG, "KV block count %d out of range; give a KV budget of at least one block",
                         n_blocks);
    struct ty_block_mgr *m = ty__calloc(1, sizeof *m);
    if (!m) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the block manager");
    m->n_blocks = n_blocks;
    m->max_cached = max_cached < 0 ? 0 : max_cached;
    m->map_cap = 16;
    while (m->map_cap < 2u * (uint32_t)n_blocks) m->map_cap *= 2;
    m->b = ty__calloc((size_t)n_blocks, sizeof *m->b);
    m->free_ids = ty__malloc((size_t)n_blocks * sizeof *m->free_ids);
    m->map = ty__malloc(m->map_cap * sizeof *m->map);
    if (!m->b || !m->free_ids || !m->map) {
        ty__block_mgr_free(m);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory for %d KV blocks", n_blocks);
    }
    for (int32_t i = 0; i < n_blocks; i++) {
        m->b[i].lru_prev = m->b[i].lru_next = -1;
        m->free_ids[i] = n_blocks - 1 - i; /* pop order 0, 1, 2, ...: easier to read in tests */
    }
    m->n_plain = n_blocks;
    m->lru_head = m->lru_tail = -1;
    for (uint32_t i = 0; i < m->map_cap; i++) m->map[i] = -1;
    *out = m;
    return TY_OK;
}

void ty__block_mgr_free(struct ty_block_mgr *m) {
    if (!m) return;
    ty_free(m->b);
    ty_free(m->free_ids);
    ty_free(m->map);
    ty_free(m);
}

void ty__block_mgr_stats(struct ty_block_mgr *m, struct ty_block_stats *out) {
    out->n_total = m->n_blocks;
    out->n_free = m->n_plain + m->n_cached;
    out->n_used = m->n_blocks - out->n_free;
    out->n_cached = m->n_cached;
    out->n_reserved = m->n_reserved;
    out->prefix_queries = m->queries;
    out->prefix_hits = m->hits;
}

int32_t ty__block_refcount(struct ty_block_mgr *m, int32_t id) {
    return id >= 0 && id < m->n_blocks ? m->b[id].ref : -1;
}

enum ty_status ty__block_admit(struct ty_block_mgr *m, const int32_t *tokens, int32_t n, int32_t n_max,
                               struct ty_block_table *t, int32_t *n_cached_tokens) {
    TY_ASSERT(n > 0 && n_max >= n);
    memset(t, 0, sizeof *t);
    *n_cached_tokens = 0;
    int32_t n_prompt_blocks = (n + TY_KV_BLOCK - 1) / TY_KV_BLOCK;
    int32_t n_max_blocks = (n_max + TY_KV_BLOCK - 1) / TY_KV_BLOCK;
    /* The last prompt token is always computed (its logits start the reply), so its block is never taken from the
     * cache even when full. */
    int32_t n_lookup = (n - 1) / TY_KV_BLOCK;
    int32_t hits = 0, hits_free = 0;
    struct ty_block_hash h;
    for (int32_t i = 0; i < n_lookup; i++) {
        ty__block_hash(i ? &h : NULL, tokens + (size_t)i * TY_KV_BLOCK, &h);
        int32_t id = map_find(m, &h);
        if (id < 0) break;
        hits++;
        if (m->b[id].ref == 0) hits_free++;
    }
    int32_t need = (n_prompt_blocks - hits) + (n_max_blocks - n_prompt_blocks);
    if (need + hits_free > available(m)) return TY_ERR_NO_MEMORY;
    if (!table_grow(t, n_max_blocks)) return ty__error(TY_ERR_NO_MEMORY, "out of memory for a block table");
    m->queries += (uint64_t)n_lookup;
    m->hits += (uint64_t)hits;
    for (int32_t i = 0; i < hits; i++) {
        ty__block_hash(i ? &h : NULL, tokens + (size_t)i * TY_KV_BLOCK, &h);
        int32_t id = map_find(m, &h);
        TY_ASSERT(id >= 0);
        if (m->b[id].ref == 0) lru_unlink(m, id);
        m->b[id].ref++;
        t->ids[t->n++] = id;
    }
    while (t->n < n_prompt_blocks) t->ids[t->n++] = take_block(m);
    t->n_tokens = n;
    t->n_reserved = n_max_blocks - n_prompt_blocks;
    m->n_reserved += t->n_reserved;
    *n_cached_tokens = hits * TY_KV_BLOCK;
    return TY_OK;
}

void ty__block_publish(struct ty_block_mgr *m, struct ty_block_table *t, const int32_t *tokens, int32_t n) {
    struct ty_block_hash h;
    int32_t full = n / TY_KV_BLOCK;
    if (full > t->n) full = t->n;
    for (int32_t i = 0; i < full; i++) {
        ty__block_hash(i ? &h : NULL, tokens + (size_t)i * TY_KV_BLOCK, &h);
        struct block *b = &m->b[t->ids[i]];
        if (b->hashed) continue;
        if (map_find(m, &h) >= 0) continue; /* another sequence computed the same block first */
        b->hash = h;
        b->hashed = true;
        map_insert(m, t->ids[i]);
    }
}

/* A new block for `t`: from its reservation, else from the pool if something is available. */
static int32_t new_block_for(struct ty_block_mgr *m, struct ty_block_table *t) {
    if (t->n_reserved > 0) {
        t->n_reserved--;
        m->n_reserved--;
    } else if (available(m) <= 0) {
        return -1;
    }
    return take_block(m);
}

enum ty_status ty__block_append(struct ty_block_mgr *m, struct ty_block_table *t, int32_t *copied_from,
                                int32_t *copied_to) {
    *copied_from = *copied_to = -1;
    if (t->n_tokens % TY_KV_BLOCK == 0) {
        if (!table_grow(t, t->n + 1)) return ty__error(TY_ERR_NO_MEMORY, "out of memory for a block table");
        int32_t id = new_block_for(m, t);
        if (id < 0) return TY_ERR_NO_MEMORY;
        t->ids[t->n++] = id;
    } else {
        int32_t last = t->ids[t->n - 1];
        if (m->b[last].ref > 1) {
            int32_t id = new_block_for(m, t);
            if (id < 0) return TY_ERR_NO_MEMORY;
            drop_ref(m, last);
            t->ids[t->n - 1] = id;
            *copied_from = last;
            *copied_to = id;
        }
    }
    t->n_tokens++;
    return TY_OK;
}

enum ty_status ty__block_fork(struct ty_block_mgr *m, const struct ty_block_table *src, int32_t n_reserve,
                              struct ty_block_table *dst) {
    memset(dst, 0, sizeof *dst);
    if (n_reserve > available(m)) return TY_ERR_NO_MEMORY;
    if (!table_grow(dst, src->cap > src->n ? src->cap : src->n + 1))
        return ty__error(TY_ERR_NO_MEMORY, "out of memory for a block table");
    for (int32_t i = 0; i < src->n; i++) {
        dst->ids[i] = src->ids[i];
        m->b[src->ids[i]].ref++;
    }
    dst->n = src->n;
    dst->n_tokens = src->n_tokens;
    dst->n_reserved = n_reserve;
    m->n_reserved += n_reserve;
    return TY_OK;
}

void ty__block_release(struct ty_block_mgr *m, struct ty_block_table *t) {
    /* Later blocks first, so that the LRU evicts a prefix's tail before its head: a shorter prefix stays usable. */
    for (int32_t i = t->n - 1; i >= 0; i--) drop_ref(m, t->ids[i]);
    m->n_reserved -= t->n_reserved;
    ty_free(t->ids);
    memset(t, 0, sizeof *t);
}
