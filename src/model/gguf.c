/*
 * gguf.c - the GGUF reader and writer declared in gguf.h.
 *
 * Reader: the file is mapped (or a caller's buffer is used) and parsed once, front to back, by a cursor that refuses
 * to move past the end. Every claimed count is first compared with the bytes left (each entry has a minimum encoded
 * size), so a hostile count fails before anything is allocated for it; the record arrays grow as entries are actually
 * parsed. Keys and tensor names are copied, NUL-terminated, into one arena; string values stay in the mapping, and
 * string arrays get one shared table of element offsets so that element i is O(1) (the tokenizer reads 150k of them).
 * Lookup by name goes through open-addressed hash tables that also reject duplicates.
 *
 * Writer: metadata values are kept as their encoded bytes, which makes copying any entry from a reader (nested arrays
 * included) a byte copy. Tensor data is streamed in declaration order into `PATH.tmp.<pid>`, renamed on success.
 *
 * Both sides assume a little-endian host, as GGUF v3 files are little-endian unless marked otherwise (we reject the
 * big-endian variant).
 */
#include "model/gguf.h"
#include "model/quant.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the GGUF reader and writer assume a little-endian host");

#define GGUF_MAGIC       "GGUF"
#define MAX_NAME_LEN     65535      /* keys and tensor names */
#define MAX_ALIGNMENT    (1u << 20) /* a larger general.alignment is not a real file */
#define MAX_ARRAY_DEPTH  3          /* an array may hold arrays that hold arrays, no deeper */
#define MIN_KV_BYTES     14         /* key length (8) + 1 key byte + value type (4) + 1 value byte */
#define MIN_TENSOR_BYTES 33         /* name length (8) + 1 name byte + n_dims (4) + 1 dim (8) + type (4) + offset (8) */
#define MSG_NAME_MAX     200        /* longest key or name quoted in a message */

/* ==== Value types ==== */

static const char *const type_names[TY_GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64",
};
/* Encoded size of a scalar; 0 for STRING and ARRAY, whose size depends on the value. */
static const size_t type_sizes[TY_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *ty__gguf_type_name(enum ty_gguf_type t) {
    return (unsigned)t < TY_GGUF_TYPE_COUNT ? type_names[t] : "invalid";
}

static bool type_is_int(enum ty_gguf_type t) {
    switch (t) {
    case TY_GGUF_TYPE_UINT8:
    case TY_GGUF_TYPE_INT8:
    case TY_GGUF_TYPE_UINT16:
    case TY_GGUF_TYPE_INT16:
    case TY_GGUF_TYPE_UINT32:
    case TY_GGUF_TYPE_INT32:
    case TY_GGUF_TYPE_UINT64:
    case TY_GGUF_TYPE_INT64:
        return true;
    default:
        return false;
    }
}

static bool type_is_signed(enum ty_gguf_type t) {
    return t == TY_GGUF_TYPE_INT8 || t == TY_GGUF_TYPE_INT16 || t == TY_GGUF_TYPE_INT32 || t == TY_GGUF_TYPE_INT64;
}

static bool type_is_float(enum ty_gguf_type t) {
    return t == TY_GGUF_TYPE_FLOAT32 || t == TY_GGUF_TYPE_FLOAT64;
}

static uint32_t rd_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Reads an integer of type t at p. Signed values come back in *s (and *is_neg), unsigned ones in *u. */
static void rd_int(enum ty_gguf_type t, const uint8_t *p, uint64_t *u, int64_t *s, bool *is_neg) {
    *u = 0;
    *s = 0;
    *is_neg = false;
    switch (t) {
    case TY_GGUF_TYPE_UINT8:
        *u = p[0];
        break;
    case TY_GGUF_TYPE_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        *u = v;
        break;
    }
    case TY_GGUF_TYPE_UINT32:
        *u = rd_u32(p);
        break;
    case TY_GGUF_TYPE_UINT64:
        *u = rd_u64(p);
        break;
    case TY_GGUF_TYPE_INT8: {
        int8_t v;
        memcpy(&v, p, 1);
        *s = v;
        break;
    }
    case TY_GGUF_TYPE_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        *s = v;
        break;
    }
    case TY_GGUF_TYPE_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        *s = v;
        break;
    }
    case TY_GGUF_TYPE_INT64: {
        int64_t v;
        memcpy(&v, p, 8);
        *s = v;
        break;
    }
    default:
        TY_ASSERT(!"not an integer type");
    }
    if (type_is_signed(t)) {
        *is_neg = *s < 0;
        if (!*is_neg) *u = (uint64_t)*s;
    } else {
        *s = *u <= INT64_MAX ? (int64_t)*u : INT64_MAX;
    }
}

static double rd_float(enum ty_gguf_type t, const uint8_t *p) {
    if (t == TY_GGUF_TYPE_FLOAT32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    double d;
    memcpy(&d, p, 8);
    return d;
}

/* Why a key or tensor name is unacceptable, or NULL. Control bytes are refused because names are printed and used
 * as C strings; nothing else about their spelling is enforced. */
static const char *name_problem(const uint8_t *s, uint64_t len) {
    if (len == 0) return "is empty";
    if (len > MAX_NAME_LEN) return "is longer than 65535 bytes";
    for (uint64_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] == 0x7f) return "contains a NUL or control byte";
    return NULL;
}

static int msg_len(size_t len) {
    return (int)(len < MSG_NAME_MAX ? len : MSG_NAME_MAX);
}

/* ==== Name index: open addressing over an array of names ==== */

typedef const char *(*name_at_fn)(const void *ctx, size_t i);

struct name_index {
    size_t *slots; /* entry index + 1; 0 = empty */
    size_t cap;    /* power of two, or 0 */
    size_t n;
};

static uint64_t hash_name(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static bool name_eq(const char *stored, const char *name, size_t len) {
    return strncmp(stored, name, len) == 0 && stored[len] == 0;
}

/* The entry named `name` (len bytes), or SIZE_MAX. */
static size_t index_find(const struct name_index *ix, const char *name, size_t len, name_at_fn at, const void *ctx) {
    if (!ix->cap) return SIZE_MAX;
    size_t mask = ix->cap - 1;
    for (size_t h = (size_t)hash_name(name, len) & mask;; h = (h + 1) & mask) {
        size_t s = ix->slots[h];
        if (!s) return SIZE_MAX;
        if (name_eq(at(ctx, s - 1), name, len)) return s - 1;
    }
}

static bool index_grow(struct name_index *ix, size_t min_entries, name_at_fn at, const void *ctx) {
    size_t cap = 16;
    while (cap / 2 < min_entries) {
        if (ty__mul_overflow(cap, 2, &cap)) return false;
    }
    if (cap <= ix->cap) return true;
    size_t *slots = ty__calloc(cap, sizeof *slots);
    if (!slots) return false;
    for (size_t i = 0; i < ix->cap; i++) {
        size_t s = ix->slots[i];
        if (!s) continue;
        const char *nm = at(ctx, s - 1);
        size_t h = (size_t)hash_name(nm, strlen(nm)) & (cap - 1);
        while (slots[h]) h = (h + 1) & (cap - 1);
        slots[h] = s;
    }
    ty_free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    return true;
}

/* Adds entry i unless its name is already present. *dup receives the earlier entry's index, or SIZE_MAX. */
static bool index_add(struct name_index *ix, size_t i, name_at_fn at, const void *ctx, size_t *dup) {
    *dup = SIZE_MAX;
    if (!index_grow(ix, ix->n + 1, at, ctx)) return false;
    const char *nm = at(ctx, i);
    size_t len = strlen(nm), mask = ix->cap - 1;
    size_t h = (size_t)hash_name(nm, len) & mask;
    for (; ix->slots[h]; h = (h + 1) & mask) {
        if (name_eq(at(ctx, ix->slots[h] - 1), nm, len)) {
            *dup = ix->slots[h] - 1;
            return true;
        }
    }
    ix->slots[h] = i + 1;
    ix->n++;
    return true;
}

static void index_free(struct name_index *ix) {
    ty_free(ix->slots);
    memset(ix, 0, sizeof *ix);
}

/* ==== Reader ==== */

struct kv {
    size_t key_pos; /* into the names arena, until the arena is final */
    const char *key;
    enum ty_gguf_type type;
    enum ty_gguf_type elem_type; /* arrays */
    uint64_t n;                  /* arrays: element count */
    size_t val_off;              /* file offset of the value; of the first element for arrays */
    size_t raw_off, raw_end;     /* the whole encoded value (array header included), for copying */
    const size_t *str_offs;      /* string arrays: file offset of each element */
};

struct tensor_rec {
    struct ty_gguf_tensor t;
    size_t name_pos;
};

struct ty_gguf {
    const uint8_t *data;
    size_t size;
    struct ty_file_map map;
    bool mapped;
    uint32_t version;
    uint32_t alignment;
    size_t data_offset;
    struct kv *kv;
    size_t n_kv, cap_kv;
    struct tensor_rec *tensors;
    size_t n_tensors, cap_tensors;
    char *names; /* arena of NUL-terminated keys and tensor names */
    size_t *str_offs;
    struct name_index kv_index, tensor_index;
};

static const char *kv_name_at(const void *ctx, size_t i) {
    return ((const struct ty_gguf *)ctx)->kv[i].key;
}
static const char *tensor_name_at(const void *ctx, size_t i) {
    return ((const struct ty_gguf *)ctx)->tensors[i].t.name;
}

struct cursor {
    const uint8_t *data;
    size_t size;
    size_t pos; /* <= size always */
};

static size_t left(const struct cursor *c) {
    return c->size - c->pos;
}

static enum ty_status take(struct cursor *c, size_t n, const char *ctx, const char *field, size_t *at) {
    if (n > left(c))
        return ty__error(TY_ERR_FORMAT,
                         "%s: %s at offset %#zx needs %zu bytes but only %zu are left (file size %zu); the file is "
                         "truncated or corrupt",
                         ctx, field, c->pos, n, left(c), c->size);
    if (at) *at = c->pos;
    c->pos += n;
    return TY_OK;
}

static enum ty_status take_u32(struct cursor *c, const char *ctx, const char *field, uint32_t *v) {
    size_t at = 0;
    TY_TRY(take(c, 4, ctx, field, &at));
    *v = rd_u32(c->data + at);
    return TY_OK;
}

static enum ty_status take_u64(struct cursor *c, const char *ctx, const char *field, uint64_t *v) {
    size_t at = 0;
    TY_TRY(take(c, 8, ctx, field, &at));
    *v = rd_u64(c->data + at);
    return TY_OK;
}

/* A string: u64 length, then that many bytes. *at receives the offset of the bytes. */
static enum ty_status take_str(struct cursor *c, const char *ctx, const char *field, size_t *at, uint64_t *len) {
    size_t len_at = c->pos;
    TY_TRY(take_u64(c, ctx, field, len));
    if (*len > left(c))
        return ty__error(TY_ERR_FORMAT,
                         "%s: %s length %" PRIu64 " at offset %#zx exceeds the %zu bytes left in the file (size %zu); "
                         "the file is truncated or corrupt",
                         ctx, field, *len, len_at, left(c), c->size);
    *at = c->pos;
    c->pos += (size_t)*len;
    return TY_OK;
}

/* Walks one value of type `type`, checking every length against the bytes left. `depth` counts enclosing arrays.
 * When `rec` is non-NULL (a top-level value) it records where the value lives. */
static enum ty_status parse_value(struct cursor *c, uint32_t type, int depth, const char *ctx, struct kv *rec) {
    if (type >= TY_GGUF_TYPE_COUNT)
        return ty__error(TY_ERR_FORMAT, "%s: invalid value type %" PRIu32 " (valid types are 0 to %d)", ctx, type,
                         TY_GGUF_TYPE_COUNT - 1);
    if (type == TY_GGUF_TYPE_STRING) {
        size_t at;
        uint64_t len;
        return take_str(c, ctx, "string value", &at, &len);
    }
    if (type != TY_GGUF_TYPE_ARRAY) return take(c, type_sizes[type], ctx, type_names[type], NULL);

    uint32_t elem;
    uint64_t n;
    TY_TRY(take_u32(c, ctx, "array element type", &elem));
    TY_TRY(take_u64(c, ctx, "array length", &n));
    if (elem >= TY_GGUF_TYPE_COUNT)
        return ty__error(TY_ERR_FORMAT, "%s: array has invalid element type %" PRIu32, ctx, elem);
    if (elem == TY_GGUF_TYPE_ARRAY && depth + 1 >= MAX_ARRAY_DEPTH)
        return ty__error(TY_ERR_FORMAT, "%s: arrays nested more than %d deep are not supported", ctx, MAX_ARRAY_DEPTH);
    size_t min_elem = elem == TY_GGUF_TYPE_STRING ? 8 : elem == TY_GGUF_TYPE_ARRAY ? 12 : type_sizes[elem];
    if (n > left(c) / min_elem)
        return ty__error(TY_ERR_FORMAT,
                         "%s: array of %" PRIu64 " %s elements (at least %zu bytes each) does not fit in the %zu "
                         "bytes left in the file (size %zu); the file is truncated or corrupt",
                         ctx, n, type_names[elem], min_elem, left(c), c->size);
    if (rec) {
        rec->elem_type = (enum ty_gguf_type)elem;
        rec->n = n;
        rec->val_off = c->pos;
    }
    if (elem == TY_GGUF_TYPE_STRING) {
        for (uint64_t i = 0; i < n; i++) {
            if (left(c) < 8)
                return ty__error(TY_ERR_FORMAT,
                                 "%s: string #%" PRIu64 " of the array at offset %#zx is cut off by the end of file "
                                 "(size %zu); the file is truncated or corrupt",
                                 ctx, i, c->pos, c->size);
            uint64_t len = rd_u64(c->data + c->pos);
            if (len > left(c) - 8)
                return ty__error(TY_ERR_FORMAT,
                                 "%s: string #%" PRIu64 " of the array has length %" PRIu64 " at offset %#zx, past the "
                                 "end of file (size %zu); the file is truncated or corrupt",
                                 ctx, i, len, c->pos, c->size);
            c->pos += 8 + (size_t)len;
        }
    } else if (elem == TY_GGUF_TYPE_ARRAY) {
        for (uint64_t i = 0; i < n; i++) TY_TRY(parse_value(c, TY_GGUF_TYPE_ARRAY, depth + 1, ctx, NULL));
    } else {
        c->pos += (size_t)n * min_elem; /* n <= left / min_elem, so this neither overflows nor passes the end */
    }
    return TY_OK;
}

static enum ty_status no_memory(const char *what) {
    return ty__error(TY_ERR_NO_MEMORY, "out of memory while reading GGUF %s", what);
}

/* Appends a NUL-terminated copy of a validated name to the arena; returns its position. */
static bool arena_add(struct ty_buf *arena, const uint8_t *s, size_t len, size_t *pos) {
    *pos = arena->len;
    ty__buf_append(arena, s, len);
    ty__buf_append(arena, "", 1);
    return !arena->oom;
}

static enum ty_status parse_kvs(struct ty_gguf *g, struct cursor *c, uint64_t n_kv, struct ty_buf *arena) {
    char ctx[MSG_NAME_MAX + 64];
    for (uint64_t i = 0; i < n_kv; i++) {
        snprintf(ctx, sizeof ctx, "metadata entry #%" PRIu64, i);
        size_t key_at;
        uint64_t key_len;
        TY_TRY(take_str(c, ctx, "key", &key_at, &key_len));
        const char *why = name_problem(c->data + key_at, key_len);
        if (why) return ty__error(TY_ERR_FORMAT, "%s: key %s", ctx, why);
        snprintf(ctx, sizeof ctx, "metadata key '%.*s'", msg_len(key_len), (const char *)c->data + key_at);

        if (g->n_kv == g->cap_kv) {
            size_t cap = g->cap_kv ? g->cap_kv * 2 : 32;
            struct kv *kv = ty__realloc(g->kv, cap * sizeof *kv);
            if (!kv) return no_memory("metadata");
            g->kv = kv;
            g->cap_kv = cap;
        }
        struct kv *rec = &g->kv[g->n_kv];
        memset(rec, 0, sizeof *rec);
        if (!arena_add(arena, c->data + key_at, (size_t)key_len, &rec->key_pos)) return no_memory("metadata keys");
        g->n_kv++;

        uint32_t type;
        TY_TRY(take_u32(c, ctx, "value type", &type));
        rec->type = type < TY_GGUF_TYPE_COUNT ? (enum ty_gguf_type)type : TY_GGUF_TYPE_COUNT;
        rec->raw_off = c->pos;
        rec->val_off = c->pos;
        TY_TRY(parse_value(c, type, 0, ctx, rec));
        rec->raw_end = c->pos;
    }
    return TY_OK;
}

static enum ty_status parse_tensor_infos(struct ty_gguf *g, struct cursor *c, uint64_t n_tensors,
                                         struct ty_buf *arena) {
    char ctx[MSG_NAME_MAX + 64];
    for (uint64_t i = 0; i < n_tensors; i++) {
        snprintf(ctx, sizeof ctx, "tensor #%" PRIu64, i);
        size_t name_at;
        uint64_t name_len;
        TY_TRY(take_str(c, ctx, "name", &name_at, &name_len));
        const char *why = name_problem(c->data + name_at, name_len);
        if (why) return ty__error(TY_ERR_FORMAT, "%s: name %s", ctx, why);
        const char *name = (const char *)c->data + name_at;
        snprintf(ctx, sizeof ctx, "tensor %.*s", msg_len(name_len), name);

        if (g->n_tensors == g->cap_tensors) {
            size_t cap = g->cap_tensors ? g->cap_tensors * 2 : 64;
            struct tensor_rec *t = ty__realloc(g->tensors, cap * sizeof *t);
            if (!t) return no_memory("tensor table");
            g->tensors = t;
            g->cap_tensors = cap;
        }
        struct tensor_rec *rec = &g->tensors[g->n_tensors];
        memset(rec, 0, sizeof *rec);
        if (!arena_add(arena, c->data + name_at, (size_t)name_len, &rec->name_pos)) return no_memory("tensor names");
        g->n_tensors++;
        struct ty_gguf_tensor *t = &rec->t;

        uint32_t n_dims;
        TY_TRY(take_u32(c, ctx, "dimension count", &n_dims));
        if (n_dims < 1 || n_dims > TY_GGUF_MAX_DIMS)
            return ty__error(TY_ERR_FORMAT, "%s: %" PRIu32 " dimensions; tensors have 1 to %d", ctx, n_dims,
                             TY_GGUF_MAX_DIMS);
        t->n_dims = (int)n_dims;
        int64_t elements = 1;
        for (int d = 0; d < TY_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (int d = 0; d < t->n_dims; d++) {
            uint64_t ne;
            TY_TRY(take_u64(c, ctx, "dimension", &ne));
            if (ne > INT64_MAX)
                return ty__error(TY_ERR_FORMAT, "%s: dimension %d is negative (%" PRId64 ")", ctx, d, (int64_t)ne);
            if (ne == 0)
                return ty__error(TY_ERR_FORMAT, "%s: dimension %d is 0; empty tensors are not allowed", ctx, d);
            t->ne[d] = (int64_t)ne;
            if (__builtin_mul_overflow(elements, t->ne[d], &elements))
                return ty__error(TY_ERR_FORMAT, "%s: element count of shape [%" PRId64 ", %" PRId64 ", ...] overflows",
                                 ctx, t->ne[0], d > 0 ? t->ne[1] : 1);
        }

        uint32_t type;
        TY_TRY(take_u32(c, ctx, "type", &type));
        const struct ty_type_traits *tr = type < TY_TYPE_COUNT ? ty__type_traits((enum ty_type)type) : NULL;
        if (!tr) {
            if (type >= TY_TYPE_COUNT)
                return ty__error(TY_ERR_FORMAT, "%s: unknown tensor type id %" PRIu32 "; supported types: %s", ctx,
                                 type, ty__supported_types());
            const char *tn = ty_type_name((enum ty_type)type);
            if (!strcmp(tn, "unknown"))
                return ty__error(TY_ERR_UNSUPPORTED,
                                 "%s: tensor type id %" PRIu32 " is not supported; supported types: %s", ctx, type,
                                 ty__supported_types());
            return ty__error(TY_ERR_UNSUPPORTED,
                             "%s: tensor type %s (id %" PRIu32 ") is not supported; supported types: %s", ctx, tn, type,
                             ty__supported_types());
        }
        t->type = (enum ty_type)type;
        if (t->ne[0] % tr->block_size != 0)
            return ty__error(TY_ERR_FORMAT,
                             "%s: row length %" PRId64 " is not a multiple of the %s block size %" PRId64, ctx,
                             t->ne[0], tr->name, tr->block_size);
        TY_TRY(ty__tensor_nbytes(t->type, t->n_dims, t->ne, ctx, &t->nbytes));
        TY_TRY(take_u64(c, ctx, "data offset", &t->offset));
    }
    return TY_OK;
}

static enum ty_status read_alignment(struct ty_gguf *g) {
    g->alignment = TY_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = ty__gguf_find_key(g, "general.alignment");
    if (i < 0) return TY_OK;
    const struct kv *kv = &g->kv[i];
    if (!type_is_int(kv->type))
        return ty__error(TY_ERR_FORMAT, "metadata key 'general.alignment' is %s; it must be an unsigned integer",
                         type_names[kv->type]);
    uint64_t u;
    int64_t s;
    bool neg;
    rd_int(kv->type, g->data + kv->val_off, &u, &s, &neg);
    if (neg || u == 0 || (u & (u - 1)) != 0 || u > MAX_ALIGNMENT)
        return ty__error(TY_ERR_FORMAT,
                         "metadata key 'general.alignment' = %s%" PRIu64 ": must be a power of two from 1 to %u",
                         neg ? "-" : "", neg ? (uint64_t)0 - (uint64_t)s : u, MAX_ALIGNMENT);
    g->alignment = (uint32_t)u;
    return TY_OK;
}

static enum ty_status check_tensor_data(struct ty_gguf *g) {
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct ty_gguf_tensor *t = &g->tensors[i].t;
        if (t->offset % g->alignment != 0)
            return ty__error(TY_ERR_FORMAT,
                             "tensor %s: data offset %#" PRIx64 " is not a multiple of the alignment %" PRIu32
                             "; the file is corrupt",
                             t->name, t->offset, g->alignment);
        uint64_t start, end;
        if (ty__add_overflow_u64(g->data_offset, t->offset, &start) || ty__add_overflow_u64(start, t->nbytes, &end))
            return ty__error(TY_ERR_FORMAT, "tensor %s: data offset %#" PRIx64 " overflows; the file is corrupt",
                             t->name, t->offset);
        if (end > g->size)
            return ty__error(TY_ERR_FORMAT,
                             "tensor %s: data [%#" PRIx64 ", %#" PRIx64 ") past end of file (size %zu); the file is "
                             "truncated or corrupt",
                             t->name, start, end, g->size);
        t->data = g->data + start;
    }
    return TY_OK;
}

/* Fills the shared offset table of every string array. The values were walked and bounded by parse_value. */
static enum ty_status index_string_arrays(struct ty_gguf *g) {
    size_t total = 0;
    for (size_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].type == TY_GGUF_TYPE_ARRAY && g->kv[i].elem_type == TY_GGUF_TYPE_STRING)
            total += (size_t)g->kv[i].n; /* each element took >= 8 bytes of the file, so no overflow */
    if (!total) return TY_OK;
    g->str_offs = ty__malloc(total * sizeof *g->str_offs);
    if (!g->str_offs) return no_memory("string arrays");
    size_t *next = g->str_offs;
    for (size_t i = 0; i < g->n_kv; i++) {
        struct kv *kv = &g->kv[i];
        if (kv->type != TY_GGUF_TYPE_ARRAY || kv->elem_type != TY_GGUF_TYPE_STRING) continue;
        kv->str_offs = next;
        size_t pos = kv->val_off;
        for (uint64_t j = 0; j < kv->n; j++) {
            *next++ = pos;
            pos += 8 + (size_t)rd_u64(g->data + pos);
        }
    }
    return TY_OK;
}

static enum ty_status parse(struct ty_gguf *g) {
    struct cursor c = {g->data, g->size, 0};
    if (g->size == 0) return ty__error(TY_ERR_FORMAT, "the file is empty; not a GGUF file");
    if (g->size < 4 || memcmp(g->data, GGUF_MAGIC, 4) != 0)
        return ty__error(TY_ERR_FORMAT, "not a GGUF file (the first bytes are not \"GGUF\")");
    c.pos = 4;
    uint32_t version;
    TY_TRY(take_u32(&c, "header", "version", &version));
    if (version == 1)
        return ty__error(TY_ERR_UNSUPPORTED,
                         "GGUF version 1 is not supported (only versions 2 and 3 are); re-convert the model with a "
                         "current tool");
    if ((version & 0xffff) == 0 && __builtin_bswap32(version) >= 1 && __builtin_bswap32(version) <= 3)
        return ty__error(TY_ERR_UNSUPPORTED, "big-endian GGUF files are not supported; convert the model to "
                                             "little-endian");
    if (version > 3 && version < 256)
        return ty__error(TY_ERR_UNSUPPORTED,
                         "GGUF version %" PRIu32 " is newer than this reader (it reads versions 2 and 3)", version);
    if (version != 2 && version != 3)
        return ty__error(TY_ERR_FORMAT, "header: invalid GGUF version %" PRIu32 "; the file is corrupt", version);
    g->version = version;

    uint64_t n_tensors, n_kv;
    TY_TRY(take_u64(&c, "header", "tensor count", &n_tensors));
    TY_TRY(take_u64(&c, "header", "metadata count", &n_kv));
    if (n_kv > left(&c) / MIN_KV_BYTES)
        return ty__error(TY_ERR_FORMAT,
                         "header: metadata count %" PRIu64 " needs at least %d bytes per entry but only %zu bytes are "
                         "left (file size %zu); the file is truncated or corrupt",
                         n_kv, MIN_KV_BYTES, left(&c), c.size);
    if (n_tensors > left(&c) / MIN_TENSOR_BYTES)
        return ty__error(TY_ERR_FORMAT,
                         "header: tensor count %" PRIu64 " needs at least %d bytes per tensor but only %zu bytes are "
                         "left (file size %zu); the file is truncated or corrupt",
                         n_tensors, MIN_TENSOR_BYTES, left(&c), c.size);

    struct ty_buf arena = {0};
    enum ty_status st = parse_kvs(g, &c, n_kv, &arena);
    if (st == TY_OK && n_tensors > left(&c) / MIN_TENSOR_BYTES)
        st = ty__error(TY_ERR_FORMAT,
                       "header: tensor count %" PRIu64 " needs at least %d bytes per tensor but only %zu bytes are "
                       "left after the metadata (file size %zu); the file is truncated or corrupt",
                       n_tensors, MIN_TENSOR_BYTES, left(&c), c.size);
    if (st == TY_OK) st = parse_tensor_infos(g, &c, n_tensors, &arena);
    if (st != TY_OK) {
        ty__buf_free(&arena);
        return st;
    }
    if (!arena.data) ty__buf_append(&arena, "", 0);
    if (arena.oom) {
        ty__buf_free(&arena);
        return no_memory("names");
    }
    g->names = arena.data; /* owned from here on, freed by close */
    for (size_t i = 0; i < g->n_kv; i++) g->kv[i].key = g->names + g->kv[i].key_pos;
    for (size_t i = 0; i < g->n_tensors; i++) g->tensors[i].t.name = g->names + g->tensors[i].name_pos;

    size_t dup;
    if (!index_grow(&g->kv_index, g->n_kv, kv_name_at, g)) return no_memory("metadata index");
    for (size_t i = 0; i < g->n_kv; i++) {
        if (!index_add(&g->kv_index, i, kv_name_at, g, &dup)) return no_memory("metadata index");
        if (dup != SIZE_MAX)
            return ty__error(TY_ERR_FORMAT,
                             "metadata key '%.*s' appears twice (entries #%zu and #%zu); the file is corrupt",
                             msg_len(strlen(g->kv[i].key)), g->kv[i].key, dup, i);
    }
    if (!index_grow(&g->tensor_index, g->n_tensors, tensor_name_at, g)) return no_memory("tensor index");
    for (size_t i = 0; i < g->n_tensors; i++) {
        if (!index_add(&g->tensor_index, i, tensor_name_at, g, &dup)) return no_memory("tensor index");
        if (dup != SIZE_MAX)
            return ty__error(TY_ERR_FORMAT, "tensor %.*s appears twice (tensors #%zu and #%zu); the file is corrupt",
                             msg_len(strlen(g->tensors[i].t.name)), g->tensors[i].t.name, dup, i);
    }

    TY_TRY(read_alignment(g));
    size_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    if (ty__add_overflow(c.pos, pad, &g->data_offset))
        return ty__error(TY_ERR_FORMAT, "data section offset overflows; the file is corrupt");
    TY_TRY(check_tensor_data(g));
    return index_string_arrays(g);
}

static enum ty_status open_common(struct ty_gguf *g, struct ty_gguf **out) {
    enum ty_status st = parse(g);
    if (st != TY_OK) {
        ty__gguf_close(g);
        return st;
    }
    *out = g;
    return TY_OK;
}

enum ty_status ty__gguf_open_memory(const void *data, size_t size, struct ty_gguf **out) {
    *out = NULL;
    struct ty_gguf *g = ty__calloc(1, sizeof *g);
    if (!g) return no_memory("file");
    g->map.fd = -1;
    g->data = data;
    g->size = data ? size : 0;
    return open_common(g, out);
}

enum ty_status ty__gguf_open(const char *path, struct ty_gguf **out) {
    *out = NULL;
    struct ty_gguf *g = ty__calloc(1, sizeof *g);
    if (!g) return no_memory("file");
    enum ty_status st = ty__file_map(path, &g->map);
    if (st != TY_OK) {
        ty_free(g);
        return st;
    }
    g->mapped = true;
    g->data = g->map.data;
    g->size = g->map.size;
    st = open_common(g, out);
    if (st != TY_OK) return ty__error_prefix(st, "%s", path);
    return TY_OK;
}

void ty__gguf_close(struct ty_gguf *g) {
    if (!g) return;
    if (g->mapped) ty__file_unmap(&g->map);
    index_free(&g->kv_index);
    index_free(&g->tensor_index);
    ty_free(g->kv);
    ty_free(g->tensors);
    ty_free(g->names);
    ty_free(g->str_offs);
    ty_free(g);
}

uint32_t ty__gguf_version(const struct ty_gguf *g) {
    return g->version;
}
uint32_t ty__gguf_alignment(const struct ty_gguf *g) {
    return g->alignment;
}
size_t ty__gguf_data_offset(const struct ty_gguf *g) {
    return g->data_offset;
}
size_t ty__gguf_file_size(const struct ty_gguf *g) {
    return g->size;
}

/* ==== Metadata access ==== */

int64_t ty__gguf_n_kv(const struct ty_gguf *g) {
    return (int64_t)g->n_kv;
}

int64_t ty__gguf_find_key(const struct ty_gguf *g, const char *key) {
    size_t i = index_find(&g->kv_index, key, strlen(key), kv_name_at, g);
    return i == SIZE_MAX ? -1 : (int64_t)i;
}

const char *ty__gguf_key(const struct ty_gguf *g, int64_t i) {
    TY_ASSERT(i >= 0 && (size_t)i < g->n_kv);
    return g->kv[i].key;
}

enum ty_gguf_type ty__gguf_kv_type(const struct ty_gguf *g, int64_t i) {
    TY_ASSERT(i >= 0 && (size_t)i < g->n_kv);
    return g->kv[i].type;
}

static enum ty_status find_kv(const struct ty_gguf *g, const char *key, const struct kv **out) {
    int64_t i = ty__gguf_find_key(g, key);
    if (i < 0) return ty__error(TY_ERR_NOT_FOUND, "metadata key '%s' not found", key);
    *out = &g->kv[i];
    return TY_OK;
}

static enum ty_status wrong_type(const struct kv *kv, const char *wanted) {
    if (kv->type == TY_GGUF_TYPE_ARRAY)
        return ty__error(TY_ERR_FORMAT, "metadata key '%s' is an array of %s, wanted %s", kv->key,
                         type_names[kv->elem_type], wanted);
    return ty__error(TY_ERR_FORMAT, "metadata key '%s' is %s, wanted %s", kv->key, type_names[kv->type], wanted);
}

/* Converts an integer element to int64 or uint64, naming `what` when it does not fit. */
static enum ty_status int_value(const char *key, const char *what, enum ty_gguf_type t, const uint8_t *p,
                                bool want_signed, int64_t *s_out, uint64_t *u_out) {
    uint64_t u;
    int64_t s;
    bool neg;
    rd_int(t, p, &u, &s, &neg);
    if (want_signed) {
        if (!neg && u > INT64_MAX)
            return ty__error(TY_ERR_FORMAT, "metadata key '%s'%s = %" PRIu64 " does not fit in a signed 64-bit integer",
                             key, what, u);
        *s_out = neg ? s : (int64_t)u;
    } else {
        if (neg)
            return ty__error(TY_ERR_FORMAT, "metadata key '%s'%s = %" PRId64 " is negative, wanted an unsigned value",
                             key, what, s);
        *u_out = u;
    }
    return TY_OK;
}

enum ty_status ty__gguf_get_int(const struct ty_gguf *g, const char *key, int64_t *out) {
    const struct kv *kv = NULL;
    TY_TRY(find_kv(g, key, &kv));
    if (!type_is_int(kv->type)) return wrong_type(kv, "an integer");
    return int_value(kv->key, "", kv->type, g->data + kv->val_off, true, out, NULL);
}

enum ty_status ty__gguf_get_uint(const struct ty_gguf *g, const char *key, uint64_t *out) {
    const struct kv *kv = NULL;
    TY_TRY(find_kv(g, key, &kv));
    if (!type_is_int(kv->type)) return wrong_type(kv, "an unsigned integer");
    return int_value(kv->key, "", kv->type, g->data + kv->val_off, false, NULL, out);
}

enum ty_status ty__gguf_get_float(const struct ty_gguf *g, const char *key, double *out) {
    const struct kv *kv = NULL;
    TY_TRY(find_kv(g, key, &kv));
    if (!type_is_float(kv->type)) return wrong_type(kv, "f32 or f64");
    *out = rd_float(kv->type, g->data + kv->val_off);
    return TY_OK;
}

enum ty_status ty__gguf_get_bool(const struct ty_gguf *g, const char *key, bool *out) {
    const struct kv *kv = NULL;
    TY_TRY(find_kv(g, key, &kv));
    if (kv->type != TY_GGUF_TYPE_BOOL) return wrong_type(kv, "bool");
    *out = g->data[kv->val_off] != 0;
    return TY_OK;
}

enum ty_status ty__gguf_get_str(const struct ty_gguf *g, const char *key, struct ty_gguf_str *out) {
    const struct kv *kv = NULL;
    TY_TRY(find_kv(g, key, &kv));
    if (kv->type != TY_GGUF_TYPE_STRING) return wrong_type(kv, "a string");
    out->len = rd_u64(g->data + kv->val_off);
    out->data = (const char *)g->data + kv->val_off + 8;
    return TY_OK;
}

enum ty_status ty__gguf_get_strdup(const struct ty_gguf *g, const char *key, char **out) {
    struct ty_gguf_str s = {0};
    TY_TRY(ty__gguf_get_str(g, key, &s));
    *out = ty__strndup(s.data, (size_t)s.len);
    if (!*out) return ty__error(TY_ERR_NO_MEMORY, "out of memory copying metadata key '%s'", key);
    return TY_OK;
}

enum ty_status ty__gguf_get_arr(const struct ty_gguf *g, const char *key, enum ty_gguf_type *elem_type, uint64_t *n) {
    const struct kv *kv = NULL;
    TY_TRY(find_kv(g, key, &kv));
    if (kv->type != TY_GGUF_TYPE_ARRAY) return wrong_type(kv, "an array");
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = kv->n;
    return TY_OK;
}

const void *ty__gguf_arr_data(const struct ty_gguf *g, const char *key) {
    int64_t i = ty__gguf_find_key(g, key);
    if (i < 0) return NULL;
    const struct kv *kv = &g->kv[i];
    if (kv->type != TY_GGUF_TYPE_ARRAY || kv->elem_type == TY_GGUF_TYPE_STRING || kv->elem_type == TY_GGUF_TYPE_ARRAY)
        return NULL;
    return g->data + kv->val_off;
}

/* The array `key` with element i in range and an element type accepted by `ok`. */
static enum ty_status arr_elem(const struct ty_gguf *g, const char *key, uint64_t i, bool (*ok)(enum ty_gguf_type),
                               const char *wanted, const struct kv **out) {
    const struct kv *kv = NULL;
    TY_TRY(find_kv(g, key, &kv));
    if (kv->type != TY_GGUF_TYPE_ARRAY || !ok(kv->elem_type)) return wrong_type(kv, wanted);
    if (i >= kv->n)
        return ty__error(TY_ERR_INVALID_ARG,
                         "metadata key '%s': index %" PRIu64 " is past the array's %" PRIu64 " elements", key, i,
                         kv->n);
    *out = kv;
    return TY_OK;
}

static bool is_string_type(enum ty_gguf_type t) {
    return t == TY_GGUF_TYPE_STRING;
}

enum ty_status ty__gguf_arr_str(const struct ty_gguf *g, const char *key, uint64_t i, struct ty_gguf_str *out) {
    const struct kv *kv = NULL;
    TY_TRY(arr_elem(g, key, i, is_string_type, "an array of strings", &kv));
    size_t off = kv->str_offs[i];
    out->len = rd_u64(g->data + off);
    out->data = (const char *)g->data + off + 8;
    return TY_OK;
}

enum ty_status ty__gguf_arr_int(const struct ty_gguf *g, const char *key, uint64_t i, int64_t *out) {
    const struct kv *kv = NULL;
    TY_TRY(arr_elem(g, key, i, type_is_int, "an array of integers", &kv));
    char what[48];
    snprintf(what, sizeof what, " element %" PRIu64, i);
    return int_value(kv->key, what, kv->elem_type, g->data + kv->val_off + i * type_sizes[kv->elem_type], true, out,
                     NULL);
}

enum ty_status ty__gguf_arr_float(const struct ty_gguf *g, const char *key, uint64_t i, double *out) {
    const struct kv *kv = NULL;
    TY_TRY(arr_elem(g, key, i, type_is_float, "an array of f32 or f64", &kv));
    *out = rd_float(kv->elem_type, g->data + kv->val_off + i * type_sizes[kv->elem_type]);
    return TY_OK;
}

/* ==== Tensors ==== */

int64_t ty__gguf_n_tensors(const struct ty_gguf *g) {
    return (int64_t)g->n_tensors;
}

const struct ty_gguf_tensor *ty__gguf_tensor(const struct ty_gguf *g, int64_t i) {
    TY_ASSERT(i >= 0 && (size_t)i < g->n_tensors);
    return &g->tensors[i].t;
}

const struct ty_gguf_tensor *ty__gguf_find_tensor(const struct ty_gguf *g, const char *name) {
    size_t i = index_find(&g->tensor_index, name, strlen(name), tensor_name_at, g);
    return i == SIZE_MAX ? NULL : &g->tensors[i].t;
}

/* ==== Writer ==== */

struct wkv {
    char *key;
    enum ty_gguf_type type;
    struct ty_buf val; /* the encoded value, exactly as it goes into the file */
};

struct wtensor {
    char *name;
    enum ty_type type;
    int n_dims;
    int64_t ne[TY_GGUF_MAX_DIMS];
    size_t nbytes;
    uint64_t offset; /* from the start of the data section */
};

enum writer_state { W_COLLECTING, W_WRITING, W_DONE, W_FAILED };

struct ty_gguf_writer {
    struct wkv *kv;
    size_t n_kv, cap_kv;
    struct wtensor *t;
    size_t n_t, cap_t;
    struct name_index t_index;
    enum writer_state state;
    char *path, *tmp_path;
    FILE *f;
    uint32_t alignment;
    uint64_t data_offset; /* file offset of the data section */
    size_t next;          /* next tensor to write */
};

static const char *wtensor_name_at(const void *ctx, size_t i) {
    return ((const struct ty_gguf_writer *)ctx)->t[i].name;
}

enum ty_status ty__gguf_writer_init(struct ty_gguf_writer **out) {
    *out = ty__calloc(1, sizeof **out);
    if (!*out) return ty__error(TY_ERR_NO_MEMORY, "out of memory starting a GGUF writer");
    return TY_OK;
}

/* Stops writing after a failure: the temporary file goes, `path` is left as it was. */
static void writer_abort(struct ty_gguf_writer *w) {
    if (w->f) {
        fclose(w->f);
        w->f = NULL;
    }
    if (w->tmp_path) remove(w->tmp_path);
    w->state = W_FAILED;
}

void ty__gguf_writer_free(struct ty_gguf_writer *w) {
    if (!w) return;
    if (w->state == W_WRITING) writer_abort(w);
    for (size_t i = 0; i < w->n_kv; i++) {
        ty_free(w->kv[i].key);
        ty__buf_free(&w->kv[i].val);
    }
    ty_free(w->kv);
    for (size_t i = 0; i < w->n_t; i++) ty_free(w->t[i].name);
    ty_free(w->t);
    index_free(&w->t_index);
    ty_free(w->path);
    ty_free(w->tmp_path);
    ty_free(w);
}

static enum ty_status check_collecting(const struct ty_gguf_writer *w) {
    if (w->state == W_FAILED)
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: an earlier call failed; start a new writer");
    if (w->state != W_COLLECTING)
        return ty__error(TY_ERR_INVALID_ARG,
                         "GGUF writer: metadata and tensors must be added before ty__gguf_writer_begin");
    return TY_OK;
}

/* Sets `key` to an encoded value (copied), replacing an existing entry in place. */
static enum ty_status set_raw(struct ty_gguf_writer *w, const char *key, enum ty_gguf_type type, const void *val,
                              size_t n) {
    TY_TRY(check_collecting(w));
    const char *why = name_problem((const uint8_t *)key, strlen(key));
    if (why)
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: metadata key '%.*s' %s", msg_len(strlen(key)), key, why);
    struct ty_buf b = {0};
    ty__buf_append(&b, val, n);
    if (b.oom) return ty__error(TY_ERR_NO_MEMORY, "out of memory setting metadata key '%s'", key);
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            ty__buf_free(&w->kv[i].val);
            w->kv[i].val = b;
            w->kv[i].type = type;
            return TY_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        struct wkv *kv = ty__realloc(w->kv, cap * sizeof *kv);
        if (!kv) goto oom;
        w->kv = kv;
        w->cap_kv = cap;
    }
    char *k = ty__strdup(key);
    if (!k) goto oom;
    w->kv[w->n_kv++] = (struct wkv){k, type, b};
    return TY_OK;
oom:
    ty__buf_free(&b);
    return ty__error(TY_ERR_NO_MEMORY, "out of memory setting metadata key '%s'", key);
}

enum ty_status ty__gguf_writer_set_u32(struct ty_gguf_writer *w, const char *key, uint32_t v) {
    return set_raw(w, key, TY_GGUF_TYPE_UINT32, &v, sizeof v);
}
enum ty_status ty__gguf_writer_set_i32(struct ty_gguf_writer *w, const char *key, int32_t v) {
    return set_raw(w, key, TY_GGUF_TYPE_INT32, &v, sizeof v);
}
enum ty_status ty__gguf_writer_set_u64(struct ty_gguf_writer *w, const char *key, uint64_t v) {
    return set_raw(w, key, TY_GGUF_TYPE_UINT64, &v, sizeof v);
}
enum ty_status ty__gguf_writer_set_f32(struct ty_gguf_writer *w, const char *key, float v) {
    return set_raw(w, key, TY_GGUF_TYPE_FLOAT32, &v, sizeof v);
}
enum ty_status ty__gguf_writer_set_bool(struct ty_gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return set_raw(w, key, TY_GGUF_TYPE_BOOL, &b, 1);
}

enum ty_status ty__gguf_writer_set_str(struct ty_gguf_writer *w, const char *key, const char *v) {
    TY_TRY(check_collecting(w));
    struct ty_buf b = {0};
    uint64_t len = strlen(v);
    ty__buf_append(&b, &len, 8);
    ty__buf_append(&b, v, (size_t)len);
    if (b.oom) return ty__error(TY_ERR_NO_MEMORY, "out of memory setting metadata key '%s'", key);
    enum ty_status st = set_raw(w, key, TY_GGUF_TYPE_STRING, b.data, b.len);
    ty__buf_free(&b);
    return st;
}

enum ty_status ty__gguf_writer_set_arr(struct ty_gguf_writer *w, const char *key, enum ty_gguf_type elem_type,
                                       const void *data, uint64_t n) {
    TY_TRY(check_collecting(w));
    if ((unsigned)elem_type >= TY_GGUF_TYPE_COUNT || !type_sizes[elem_type])
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: key '%s': arrays of %s need their own setter", key,
                         ty__gguf_type_name(elem_type));
    size_t bytes;
    if (n > SIZE_MAX || ty__mul_overflow((size_t)n, type_sizes[elem_type], &bytes))
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: key '%s': array of %" PRIu64 " elements is too large", key,
                         n);
    struct ty_buf b = {0};
    uint32_t et = elem_type;
    ty__buf_append(&b, &et, 4);
    ty__buf_append(&b, &n, 8);
    ty__buf_append(&b, data, bytes);
    if (b.oom) return ty__error(TY_ERR_NO_MEMORY, "out of memory setting metadata key '%s'", key);
    enum ty_status st = set_raw(w, key, TY_GGUF_TYPE_ARRAY, b.data, b.len);
    ty__buf_free(&b);
    return st;
}

enum ty_status ty__gguf_writer_set_arr_str(struct ty_gguf_writer *w, const char *key, const char *const *strs,
                                           const size_t *lens, uint64_t n) {
    TY_TRY(check_collecting(w));
    struct ty_buf b = {0};
    uint32_t et = TY_GGUF_TYPE_STRING;
    ty__buf_append(&b, &et, 4);
    ty__buf_append(&b, &n, 8);
    for (uint64_t i = 0; i < n && !b.oom; i++) {
        uint64_t len = lens ? lens[i] : strlen(strs[i]);
        ty__buf_append(&b, &len, 8);
        ty__buf_append(&b, strs[i], (size_t)len);
    }
    if (b.oom) return ty__error(TY_ERR_NO_MEMORY, "out of memory setting metadata key '%s'", key);
    enum ty_status st = set_raw(w, key, TY_GGUF_TYPE_ARRAY, b.data, b.len);
    ty__buf_free(&b);
    return st;
}

enum ty_status ty__gguf_writer_copy_kv(struct ty_gguf_writer *w, const struct ty_gguf *g, int64_t i) {
    if (i < 0 || (size_t)i >= g->n_kv)
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: metadata index %" PRId64 " out of range (%zu entries)", i,
                         g->n_kv);
    const struct kv *kv = &g->kv[i];
    return set_raw(w, kv->key, kv->type, g->data + kv->raw_off, kv->raw_end - kv->raw_off);
}

enum ty_status ty__gguf_writer_add_tensor(struct ty_gguf_writer *w, const char *name, enum ty_type type, int n_dims,
                                          const int64_t *ne) {
    TY_TRY(check_collecting(w));
    const char *why = name_problem((const uint8_t *)name, strlen(name));
    if (why)
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: tensor name '%.*s' %s", msg_len(strlen(name)), name, why);
    if (n_dims < 1 || n_dims > TY_GGUF_MAX_DIMS)
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: tensor %s: %d dimensions; tensors have 1 to %d", name,
                         n_dims, TY_GGUF_MAX_DIMS);
    const struct ty_type_traits *tr = ty__type_traits(type);
    if (!tr)
        return ty__error(TY_ERR_UNSUPPORTED, "GGUF writer: tensor %s: type id %d is not supported; supported types: %s",
                         name, (int)type, ty__supported_types());
    struct wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1)
            return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: tensor %s: dimension %d is %" PRId64 "; must be >= 1",
                             name, d, ne[d]);
        t.ne[d] = ne[d];
    }
    if (t.ne[0] % tr->block_size != 0)
        return ty__error(TY_ERR_INVALID_ARG,
                         "GGUF writer: tensor %s: row length %" PRId64
                         " is not a multiple of the %s block size %" PRId64,
                         name, t.ne[0], tr->name, tr->block_size);
    TY_TRY(ty__tensor_nbytes(type, n_dims, t.ne, name, &t.nbytes));

    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        struct wtensor *nt = ty__realloc(w->t, cap * sizeof *nt);
        if (!nt) return ty__error(TY_ERR_NO_MEMORY, "out of memory adding tensor %s", name);
        w->t = nt;
        w->cap_t = cap;
    }
    t.name = ty__strdup(name);
    if (!t.name) return ty__error(TY_ERR_NO_MEMORY, "out of memory adding tensor %s", name);
    w->t[w->n_t] = t;
    size_t dup;
    if (!index_add(&w->t_index, w->n_t, wtensor_name_at, w, &dup)) {
        ty_free(t.name);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory adding tensor %s", name);
    }
    if (dup != SIZE_MAX) {
        ty_free(t.name);
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: tensor %s declared twice", name);
    }
    w->n_t++;
    return TY_OK;
}

/* The alignment a caller asked for through general.alignment (any integer type), else the default. */
static enum ty_status writer_alignment(struct ty_gguf_writer *w) {
    w->alignment = TY_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        if (!type_is_int(w->kv[i].type))
            return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: general.alignment is %s; it must be an unsigned integer",
                             type_names[w->kv[i].type]);
        uint64_t u;
        int64_t s;
        bool neg;
        rd_int(w->kv[i].type, (const uint8_t *)w->kv[i].val.data, &u, &s, &neg);
        if (neg || u == 0 || (u & (u - 1)) != 0 || u > MAX_ALIGNMENT)
            return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: general.alignment must be a power of two from 1 to %u",
                             MAX_ALIGNMENT);
        w->alignment = (uint32_t)u;
    }
    return TY_OK;
}

static bool put(struct ty_gguf_writer *w, const void *p, size_t n) {
    return fwrite(p, 1, n, w->f) == n;
}

static bool put_padding(struct ty_gguf_writer *w, uint64_t pos) {
    static const uint8_t zeros[64];
    size_t pad = (size_t)((w->alignment - pos % w->alignment) % w->alignment);
    while (pad) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        if (!put(w, zeros, k)) return false;
        pad -= k;
    }
    return true;
}

static enum ty_status write_failed(struct ty_gguf_writer *w, const char *what) {
    enum ty_status st = ty__error(TY_ERR_IO, "%s: cannot write %s: %s", w->tmp_path, what, strerror(errno));
    writer_abort(w);
    return st;
}

/* Checks that the bytes written so far add up to `want`, catching a short write the stream did not report. */
static enum ty_status check_position(struct ty_gguf_writer *w, uint64_t want, const char *what) {
    off_t pos = ftello(w->f);
    if (pos < 0 || (uint64_t)pos != want) {
        enum ty_status st = ty__error(TY_ERR_IO, "%s: after %s the file holds %lld bytes, expected %" PRIu64,
                                      w->tmp_path, what, (long long)pos, want);
        writer_abort(w);
        return st;
    }
    return TY_OK;
}

enum ty_status ty__gguf_writer_begin(struct ty_gguf_writer *w, const char *path) {
    TY_TRY(check_collecting(w));
    TY_TRY(writer_alignment(w));
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        uint64_t padded = w->t[i].nbytes + (w->alignment - w->t[i].nbytes % w->alignment) % w->alignment;
        if (ty__add_overflow_u64(off, padded, &off))
            return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: total tensor data overflows");
    }
    char pid[32];
    snprintf(pid, sizeof pid, ".tmp.%ld", (long)getpid());
    w->path = ty__strdup(path);
    w->tmp_path = ty__malloc(strlen(path) + strlen(pid) + 1);
    if (!w->path || !w->tmp_path) {
        w->state = W_FAILED;
        return ty__error(TY_ERR_NO_MEMORY, "out of memory starting to write %s", path);
    }
    strcpy(w->tmp_path, path);
    strcat(w->tmp_path, pid);
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) {
        w->state = W_FAILED;
        return ty__error(TY_ERR_IO, "%s: cannot create: %s", w->tmp_path, strerror(errno));
    }
    w->state = W_WRITING;

    uint32_t version = 3;
    uint64_t n_t = w->n_t, n_kv = w->n_kv;
    bool ok = put(w, GGUF_MAGIC, 4) && put(w, &version, 4) && put(w, &n_t, 8) && put(w, &n_kv, 8);
    uint64_t pos = 24;
    for (size_t i = 0; ok && i < w->n_kv; i++) {
        const struct wkv *kv = &w->kv[i];
        uint64_t klen = strlen(kv->key);
        uint32_t type = kv->type;
        ok = put(w, &klen, 8) && put(w, kv->key, (size_t)klen) && put(w, &type, 4) && put(w, kv->val.data, kv->val.len);
        pos += 8 + klen + 4 + kv->val.len;
    }
    for (size_t i = 0; ok && i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        uint64_t nlen = strlen(t->name);
        uint32_t n_dims = (uint32_t)t->n_dims, type = (uint32_t)t->type;
        ok = put(w, &nlen, 8) && put(w, t->name, (size_t)nlen) && put(w, &n_dims, 4);
        for (int d = 0; ok && d < t->n_dims; d++) ok = put(w, &t->ne[d], 8);
        ok = ok && put(w, &type, 4) && put(w, &t->offset, 8);
        pos += 8 + nlen + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    if (!ok || !put_padding(w, pos)) return write_failed(w, "the header");
    w->data_offset = pos + (w->alignment - pos % w->alignment) % w->alignment;
    return check_position(w, w->data_offset, "the header");
}

enum ty_status ty__gguf_writer_write_tensor(struct ty_gguf_writer *w, const void *data, size_t nbytes) {
    if (w->state != W_WRITING)
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: write_tensor needs a successful ty__gguf_writer_begin");
    if (w->next >= w->n_t) {
        enum ty_status st =
            ty__error(TY_ERR_INVALID_ARG, "GGUF writer: all %zu declared tensors were already written", w->n_t);
        writer_abort(w);
        return st;
    }
    const struct wtensor *t = &w->t[w->next];
    if (nbytes != t->nbytes) {
        enum ty_status st = ty__error(TY_ERR_INVALID_ARG, "GGUF writer: tensor %s: got %zu bytes of data, expected %zu",
                                      t->name, nbytes, t->nbytes);
        writer_abort(w);
        return st;
    }
    uint64_t end = w->data_offset + t->offset + nbytes;
    if (!put(w, data, nbytes) || !put_padding(w, end)) return write_failed(w, t->name);
    w->next++;
    return check_position(w, end + (w->alignment - end % w->alignment) % w->alignment, t->name);
}

enum ty_status ty__gguf_writer_finish(struct ty_gguf_writer *w) {
    if (w->state != W_WRITING)
        return ty__error(TY_ERR_INVALID_ARG, "GGUF writer: finish needs a successful ty__gguf_writer_begin");
    if (w->next != w->n_t) {
        enum ty_status st =
            ty__error(TY_ERR_INVALID_ARG, "GGUF writer: only %zu of %zu tensors were written (next: %s)", w->next,
                      w->n_t, w->t[w->next].name);
        writer_abort(w);
        return st;
    }
    if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) return write_failed(w, "the end of the file");
    int rc = fclose(w->f);
    w->f = NULL;
    if (rc != 0) return write_failed(w, "the end of the file");
    if (rename(w->tmp_path, w->path) != 0) {
        enum ty_status st = ty__error(TY_ERR_IO, "cannot rename %s to %s: %s", w->tmp_path, w->path, strerror(errno));
        writer_abort(w);
        return st;
    }
    w->state = W_DONE;
    return TY_OK;
}
