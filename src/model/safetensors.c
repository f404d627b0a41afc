/*
 * safetensors.c - the hardened safetensors reader and the checkpoint folder (single file or index + shards) built on
 * it. See safetensors.h for the checks; the order of checks follows the file: length prefix, header bounds, JSON,
 * each tensor entry, then the tiling of the data section.
 */
#include "model/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ==== Dtypes ==== */

static const struct {
    const char *name;
    size_t size;
} dtype_info[TY_ST_DTYPE_COUNT] = {
    [TY_ST_BOOL] = {"BOOL", 1},       [TY_ST_U8] = {"U8", 1},           [TY_ST_I8] = {"I8", 1},
    [TY_ST_F8_E5M2] = {"F8_E5M2", 1}, [TY_ST_F8_E4M3] = {"F8_E4M3", 1}, [TY_ST_I16] = {"I16", 2},
    [TY_ST_U16] = {"U16", 2},         [TY_ST_F16] = {"F16", 2},         [TY_ST_BF16] = {"BF16", 2},
    [TY_ST_I32] = {"I32", 4},         [TY_ST_U32] = {"U32", 4},         [TY_ST_F32] = {"F32", 4},
    [TY_ST_I64] = {"I64", 8},         [TY_ST_U64] = {"U64", 8},         [TY_ST_F64] = {"F64", 8},
};

const char *ty__st_dtype_name(enum ty_st_dtype d) {
    return (unsigned)d < TY_ST_DTYPE_COUNT ? dtype_info[d].name : "unknown";
}

size_t ty__st_dtype_size(enum ty_st_dtype d) {
    return (unsigned)d < TY_ST_DTYPE_COUNT ? dtype_info[d].size : 0;
}

static bool dtype_from_name(const char *s, enum ty_st_dtype *out) {
    for (int i = 0; i < TY_ST_DTYPE_COUNT; i++)
        if (!strcmp(s, dtype_info[i].name)) {
            *out = (enum ty_st_dtype)i;
            return true;
        }
    return false;
}

/* ==== One file ==== */

struct ty_safetensors {
    struct ty_file_map map; /* unused (fd -1) for memory readers */
    char *label;
    const uint8_t *data; /* the whole file */
    size_t size;
    size_t data_start; /* 8 + header length */
    int64_t n_tensors;
    struct ty_st_tensor *tensors; /* in data-offset order */
    int64_t *by_name;             /* indices sorted by name */
};

static int cmp_offsets(const void *a, const void *b) {
    const struct ty_st_tensor *x = a, *y = b;
    const uint8_t *xa = x->data, *ya = y->data;
    if (xa != ya) return xa < ya ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* qsort has no context argument in C11, so name sorting goes through a file-static pointer; readers are built on
 * one thread at a time per call chain, and the pointer is only read inside qsort below. */
static _Thread_local const struct ty_st_tensor *sort_base;
static int cmp_names(const void *a, const void *b) {
    return strcmp(sort_base[*(const int64_t *)a].name, sort_base[*(const int64_t *)b].name);
}

static enum ty_status json_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return TY_ERR_FORMAT;
    *out = (uint64_t)json_integer_value(v);
    return TY_OK;
}

/* Parses one header entry into `t` (data pointer not yet set: `*begin`/`*end` are the offsets). */
static enum ty_status parse_entry(const char *label, const char *name, const json_t *v, size_t data_size,
                                  struct ty_st_tensor *t, uint64_t *begin, uint64_t *end) {
    if (!json_is_object(v))
        return ty__error(TY_ERR_FORMAT, "%s: tensor %s: header entry is not a JSON object; the file is corrupt", label,
                         name);
    const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
                 *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return ty__error(TY_ERR_FORMAT, "%s: tensor %s: missing or non-string \"dtype\"; the file is corrupt", label,
                         name);
    if (!dtype_from_name(json_string_value(jd), &t->dtype))
        return ty__error(TY_ERR_UNSUPPORTED,
                         "%s: tensor %s: unsupported dtype %s; Tongyun reads F32, F16, BF16 (and F64) tensors", label,
                         name, json_string_value(jd));
    if (!json_is_array(js))
        return ty__error(TY_ERR_FORMAT, "%s: tensor %s: missing or non-array \"shape\"; the file is corrupt", label,
                         name);
    size_t rank = json_array_size(js);
    if (rank > TY_ST_MAX_DIMS)
        return ty__error(TY_ERR_FORMAT, "%s: tensor %s: rank %zu exceeds the maximum of %d", label, name, rank,
                         TY_ST_MAX_DIMS);
    t->n_dims = (int)rank;
    uint64_t n = 1;
    for (int d = 0; d < TY_ST_MAX_DIMS; d++) t->shape[d] = 1;
    for (size_t d = 0; d < rank; d++) {
        uint64_t dim;
        if (json_u64(json_array_get(js, d), &dim) != TY_OK)
            return ty__error(TY_ERR_FORMAT, "%s: tensor %s: shape[%zu] is not a non-negative integer", label, name, d);
        if (ty__mul_overflow_u64(n, dim, &n) || n > (uint64_t)INT64_MAX)
            return ty__error(TY_ERR_FORMAT, "%s: tensor %s: the element count of its shape overflows; corrupt file",
                             label, name);
        t->shape[d] = (int64_t)dim;
    }
    uint64_t nbytes;
    if (ty__mul_overflow_u64(n, ty__st_dtype_size(t->dtype), &nbytes) || nbytes > SIZE_MAX)
        return ty__error(TY_ERR_FORMAT, "%s: tensor %s: byte size of its shape overflows; corrupt file", label, name);
    t->n_elements = (int64_t)n;
    t->nbytes = (size_t)nbytes;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || json_u64(json_array_get(jo, 0), begin) != TY_OK ||
        json_u64(json_array_get(jo, 1), end) != TY_OK)
        return ty__error(TY_ERR_FORMAT,
                         "%s: tensor %s: \"data_offsets\" must be two non-negative integers [begin, end]", label, name);
    if (*begin > *end)
        return ty__error(TY_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu) end before they begin", label, name,
                         (unsigned long long)*begin, (unsigned long long)*end);
    if (*end > data_size)
        return ty__error(TY_ERR_FORMAT,
                         "%s: tensor %s: data_offsets [%llu, %llu) run past the end of the data section (%zu bytes); "
                         "the file is truncated or corrupt",
                         label, name, (unsigned long long)*begin, (unsigned long long)*end, data_size);
    if (*end - *begin != nbytes)
        return ty__error(TY_ERR_FORMAT,
                         "%s: tensor %s: data_offsets [%llu, %llu) hold %llu bytes but %s shape needs %llu; corrupt "
                         "file",
                         label, name, (unsigned long long)*begin, (unsigned long long)*end,
                         (unsigned long long)(*end - *begin), ty__st_dtype_name(t->dtype), (unsigned long long)nbytes);
    return TY_OK;
}

static enum ty_status parse_header(struct ty_safetensors *st) {
    const char *label = st->label;
    if (st->size < 8)
        return ty__error(TY_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file (8-byte header length)",
                         label, st->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | st->data[i];
    if (n > TY_ST_MAX_HEADER)
        return ty__error(TY_ERR_FORMAT,
                         "%s: header length %llu exceeds the %zu-byte limit; the file is corrupt or not safetensors",
                         label, (unsigned long long)n, TY_ST_MAX_HEADER);
    if (n > st->size - 8)
        return ty__error(TY_ERR_FORMAT,
                         "%s: header length %llu runs past the end of the file (%zu bytes); the file is truncated or "
                         "not safetensors",
                         label, (unsigned long long)n, st->size);
    st->data_start = 8 + (size_t)n;
    size_t data_size = st->size - st->data_start;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)st->data + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ty__error(TY_ERR_FORMAT, "%s: header is not valid JSON (%s, at header byte %d); corrupt file", label,
                         jerr.text, jerr.position);
    enum ty_status status = TY_OK;
    if (!json_is_object(root)) {
        status = ty__error(TY_ERR_FORMAT, "%s: header is not a JSON object; corrupt file", label);
        goto done;
    }
    size_t count = json_object_size(root);
    if (json_object_get(root, "__metadata__")) count--;
    st->tensors = ty__calloc(count ? count : 1, sizeof *st->tensors);
    uint64_t *begins = ty__calloc(count ? count : 1, sizeof *begins);
    if (!st->tensors || !begins) {
        ty_free(begins);
        status = ty__error(TY_ERR_NO_MEMORY, "%s: out of memory for %zu tensor entries", label, count);
        goto done;
    }
    const char *key;
    json_t *val;
    int64_t k = 0;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) continue; /* free-form strings; nothing we need */
        struct ty_st_tensor *t = &st->tensors[k];
        uint64_t begin, end;
        t->name = ty__strdup(key);
        if (!t->name) {
            status = ty__error(TY_ERR_NO_MEMORY, "%s: out of memory", label);
            break;
        }
        st->n_tensors = ++k;
        t->file = st->label;
        status = parse_entry(label, key, val, data_size, t, &begin, &end);
        if (status != TY_OK) break;
        t->data = st->data + st->data_start + begin;
        begins[k - 1] = begin;
    }
    ty_free(begins);
    if (status != TY_OK) goto done;

    /* The reference implementation requires the ranges, sorted, to tile the data section exactly. Rejecting overlap
     * also means no two tensors alias the same bytes. */
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_offsets);
    const uint8_t *base = st->data + st->data_start;
    size_t pos = 0;
    for (int64_t i = 0; i < st->n_tensors; i++) {
        const struct ty_st_tensor *t = &st->tensors[i];
        size_t b = (size_t)((const uint8_t *)t->data - base);
        if (b < pos) {
            status = ty__error(TY_ERR_FORMAT,
                               "%s: tensor %s: data [%zu, %zu) overlaps tensor %s, which ends at %zu; corrupt file",
                               label, t->name, b, b + t->nbytes, st->tensors[i - 1].name, pos);
            goto done;
        }
        if (b > pos) {
            status =
                ty__error(TY_ERR_FORMAT, "%s: data bytes [%zu, %zu) before tensor %s belong to no tensor; corrupt file",
                          label, pos, b, t->name);
            goto done;
        }
        pos = b + t->nbytes;
    }
    if (pos != data_size) {
        status = ty__error(TY_ERR_FORMAT,
                           "%s: the data section has %zu bytes but the tensors cover only %zu; the file is corrupt or "
                           "has trailing data",
                           label, data_size, pos);
        goto done;
    }

    st->by_name = ty__malloc(sizeof *st->by_name * (size_t)(st->n_tensors ? st->n_tensors : 1));
    if (!st->by_name) {
        status = ty__error(TY_ERR_NO_MEMORY, "%s: out of memory", label);
        goto done;
    }
    for (int64_t i = 0; i < st->n_tensors; i++) st->by_name[i] = i;
    sort_base = st->tensors;
    qsort(st->by_name, (size_t)st->n_tensors, sizeof *st->by_name, cmp_names);
done:
    json_decref(root);
    return status;
}

static enum ty_status open_common(struct ty_safetensors *st, struct ty_safetensors **out) {
    enum ty_status status = parse_header(st);
    if (status != TY_OK) {
        ty__safetensors_close(st);
        return status;
    }
    *out = st;
    return TY_OK;
}

enum ty_status ty__safetensors_open_memory(const void *data, size_t size, const char *label,
                                           struct ty_safetensors **out) {
    *out = NULL;
    struct ty_safetensors *st = ty__calloc(1, sizeof *st);
    if (!st) return ty__error(TY_ERR_NO_MEMORY, "out of memory opening %s", label ? label : "safetensors buffer");
    st->map.fd = -1;
    st->label = ty__strdup(label ? label : "<memory>");
    if (!st->label) {
        ty_free(st);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    }
    st->data = data;
    st->size = data ? size : 0;
    return open_common(st, out);
}

enum ty_status ty__safetensors_open(const char *path, struct ty_safetensors **out) {
    *out = NULL;
    struct ty_safetensors *st = ty__calloc(1, sizeof *st);
    if (!st) return ty__error(TY_ERR_NO_MEMORY, "out of memory opening %s", path);
    st->map.fd = -1;
    st->label = ty__strdup(path);
    if (!st->label) {
        ty_free(st);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    }
    enum ty_status status = ty__file_map(path, &st->map);
    if (status != TY_OK) {
        ty__safetensors_close(st);
        return status;
    }
    st->data = st->map.data;
    st->size = st->map.size;
    return open_common(st, out);
}

void ty__safetensors_close(struct ty_safetensors *st) {
    if (!st) return;
    for (int64_t i = 0; i < st->n_tensors; i++) ty_free((void *)st->tensors[i].name);
    ty_free(st->tensors);
    ty_free(st->by_name);
    if (st->map.fd >= 0 || st->map.data) ty__file_unmap(&st->map);
    ty_free(st->label);
    ty_free(st);
}

int64_t ty__safetensors_n_tensors(const struct ty_safetensors *st) {
    return st->n_tensors;
}

const struct ty_st_tensor *ty__safetensors_tensor(const struct ty_safetensors *st, int64_t i) {
    return i >= 0 && i < st->n_tensors ? &st->tensors[i] : NULL;
}

const struct ty_st_tensor *ty__safetensors_find(const struct ty_safetensors *st, const char *name) {
    int64_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[st->by_name[mid]].name, name);
        if (c == 0) return &st->tensors[st->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ==== Reading as float ==== */

enum ty_status ty__st_read_f32(const struct ty_st_tensor *t, int64_t first, int64_t n, float *dst) {
    if (first < 0 || n < 0 || first > t->n_elements || n > t->n_elements - first)
        return ty__error(TY_ERR_INVALID_ARG, "%s: tensor %s: elements [%lld, %lld) outside its %lld elements", t->file,
                         t->name, (long long)first, (long long)(first + n), (long long)t->n_elements);
    const uint8_t *p = (const uint8_t *)t->data + (size_t)first * ty__st_dtype_size(t->dtype);
    switch (t->dtype) {
    case TY_ST_F32:
        if (n) memcpy(dst, p, (size_t)n * 4);
        return TY_OK;
    case TY_ST_F16:
        for (int64_t i = 0; i < n; i++) {
            ty_f16 h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = ty__f16_to_f32(h);
        }
        return TY_OK;
    case TY_ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            ty_bf16 h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = ty__bf16_to_f32(h);
        }
        return TY_OK;
    case TY_ST_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return TY_OK;
    default:
        return ty__error(TY_ERR_UNSUPPORTED,
                         "%s: tensor %s: unsupported dtype %s; only F32, F16, BF16 and F64 tensors can be converted",
                         t->file, t->name, ty__st_dtype_name(t->dtype));
    }
}

/* ==== Checkpoint folder ==== */

struct ty_checkpoint {
    int n_files;
    struct ty_safetensors **files;
    char **file_names; /* the shard's name as the index gives it ("model.safetensors" for a single file) */
    int64_t n_tensors;
    const struct ty_st_tensor **tensors; /* shard order, then offset order */
    int64_t *by_name;
};

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    bool slash = a > 0 && dir[a - 1] == '/';
    char *p = ty__malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (!slash) p[a++] = '/';
    memcpy(p + a, name, b + 1);
    return p;
}

static bool file_exists(const char *path) {
    struct stat s;
    return stat(path, &s) == 0;
}

/* A shard name from the index must be a plain file name: anything else could reach outside the model folder. */
static bool shard_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 255 || !strcmp(s, ".") || !strcmp(s, "..")) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f) return false;
    }
    return true;
}

void ty__checkpoint_close(struct ty_checkpoint *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->n_files; i++) {
        ty__safetensors_close(ck->files[i]);
        ty_free(ck->file_names[i]);
    }
    ty_free(ck->files);
    ty_free(ck->file_names);
    ty_free(ck->tensors);
    ty_free(ck->by_name);
    ty_free(ck);
}

static enum ty_status ck_add_file(struct ty_checkpoint *ck, const char *dir, const char *name) {
    struct ty_safetensors **f = ty__realloc(ck->files, sizeof *f * (size_t)(ck->n_files + 1));
    if (!f) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    ck->files = f;
    char **fn = ty__realloc(ck->file_names, sizeof *fn * (size_t)(ck->n_files + 1));
    if (!fn) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    ck->file_names = fn;
    char *path = path_join(dir, name);
    char *copy = ty__strdup(name);
    if (!path || !copy) {
        ty_free(path);
        ty_free(copy);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    }
    enum ty_status status = ty__safetensors_open(path, &ck->files[ck->n_files]);
    ty_free(path);
    if (status != TY_OK) {
        ty_free(copy);
        return status;
    }
    ck->file_names[ck->n_files++] = copy;
    return TY_OK;
}

static _Thread_local const struct ty_st_tensor *const *ck_sort_base;
static int cmp_ck_names(const void *a, const void *b) {
    return strcmp(ck_sort_base[*(const int64_t *)a]->name, ck_sort_base[*(const int64_t *)b]->name);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Reads the index, opens each distinct shard (in sorted name order, as other converters do) and checks that the
 * index and the shards agree tensor by tensor. */
static enum ty_status ck_open_index(struct ty_checkpoint *ck, const char *dir, const char *index_path) {
    char *text = NULL;
    size_t len = 0;
    TY_TRY(ty__file_read(index_path, (size_t)64 << 20, &text, &len));
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    ty_free(text);
    if (!root) return ty__error(TY_ERR_FORMAT, "%s: not valid JSON (%s, line %d)", index_path, jerr.text, jerr.line);
    enum ty_status status = TY_OK;
    const char **names = NULL;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        status = ty__error(TY_ERR_FORMAT, "%s: no \"weight_map\" object; the index is corrupt", index_path);
        goto done;
    }
    size_t n = json_object_size(wm);
    if (n == 0) {
        status = ty__error(TY_ERR_FORMAT, "%s: \"weight_map\" lists no tensors", index_path);
        goto done;
    }
    names = ty__calloc(n, sizeof *names);
    if (!names) {
        status = ty__error(TY_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    const char *key;
    json_t *val;
    size_t k = 0;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val)) {
            status = ty__error(TY_ERR_FORMAT, "%s: weight_map entry for tensor %s is not a file name string",
                               index_path, key);
            goto done;
        }
        const char *f = json_string_value(val);
        if (!shard_name_ok(f) || strlen(f) != json_string_length(val)) {
            status = ty__error(TY_ERR_FORMAT,
                               "%s: tensor %s: shard name \"%s\" is not a plain file name (no '/', '\\', \"..\" or "
                               "control characters); refusing to read outside the model folder",
                               index_path, key, f);
            goto done;
        }
        names[k++] = f;
    }
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && !strcmp(names[i], names[i - 1])) continue;
        char *path = path_join(dir, names[i]);
        bool exists = path && file_exists(path);
        ty_free(path);
        if (!exists) {
            status = ty__error(TY_ERR_NOT_FOUND, "%s names shard %s, which is missing from %s; download it too",
                               index_path, names[i], dir);
            goto done;
        }
        status = ck_add_file(ck, dir, names[i]);
        if (status != TY_OK) goto done;
    }
    /* Every index entry must be in its shard, and every shard tensor must be in the index under that shard. */
    json_object_foreach(wm, key, val) {
        const char *f = json_string_value(val);
        const struct ty_st_tensor *t = NULL;
        for (int i = 0; i < ck->n_files && !t; i++)
            if (!strcmp(ck->file_names[i], f)) t = ty__safetensors_find(ck->files[i], key);
        if (!t) {
            status = ty__error(TY_ERR_FORMAT, "%s: tensor %s is listed in shard %s, which does not contain it",
                               index_path, key, f);
            goto done;
        }
    }
    for (int i = 0; i < ck->n_files; i++) {
        struct ty_safetensors *st = ck->files[i];
        for (int64_t j = 0; j < st->n_tensors; j++) {
            const char *name = st->tensors[j].name;
            const char *f = json_string_value(json_object_get(wm, name));
            if (!f) {
                status = ty__error(TY_ERR_FORMAT, "%s: tensor %s is not listed in %s; index and shards disagree",
                                   st->label, name, index_path);
                goto done;
            }
            if (strcmp(f, ck->file_names[i])) {
                status = ty__error(TY_ERR_FORMAT,
                                   "%s: tensor %s is also in this shard, but %s lists it in %s; the tensor is "
                                   "duplicated",
                                   st->label, name, index_path, f);
                goto done;
            }
        }
    }
done:
    ty_free(names);
    json_decref(root);
    return status;
}

enum ty_status ty__checkpoint_open(const char *dir, struct ty_checkpoint **out) {
    *out = NULL;
    struct ty_checkpoint *ck = ty__calloc(1, sizeof *ck);
    if (!ck) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    enum ty_status status = TY_OK;
    char *index_path = path_join(dir, "model.safetensors.index.json");
    char *single_path = path_join(dir, "model.safetensors");
    if (!index_path || !single_path) {
        status = ty__error(TY_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    if (file_exists(index_path)) {
        status = ck_open_index(ck, dir, index_path);
    } else if (file_exists(single_path)) {
        status = ck_add_file(ck, dir, "model.safetensors");
    } else {
        status = ty__error(TY_ERR_NOT_FOUND,
                           "%s: no model.safetensors or model.safetensors.index.json; Tongyun converts safetensors "
                           "checkpoints only (re-save pytorch_model.bin ones with safetensors first)",
                           dir);
    }
    if (status != TY_OK) goto fail;

    for (int i = 0; i < ck->n_files; i++) ck->n_tensors += ck->files[i]->n_tensors;
    ck->tensors = ty__malloc(sizeof *ck->tensors * (size_t)(ck->n_tensors ? ck->n_tensors : 1));
    ck->by_name = ty__malloc(sizeof *ck->by_name * (size_t)(ck->n_tensors ? ck->n_tensors : 1));
    if (!ck->tensors || !ck->by_name) {
        status = ty__error(TY_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    int64_t k = 0;
    for (int i = 0; i < ck->n_files; i++)
        for (int64_t j = 0; j < ck->files[i]->n_tensors; j++) ck->tensors[k++] = &ck->files[i]->tensors[j];
    for (int64_t i = 0; i < ck->n_tensors; i++) ck->by_name[i] = i;
    ck_sort_base = ck->tensors;
    qsort(ck->by_name, (size_t)ck->n_tensors, sizeof *ck->by_name, cmp_ck_names);
    for (int64_t i = 1; i < ck->n_tensors; i++) {
        const struct ty_st_tensor *a = ck->tensors[ck->by_name[i - 1]], *b = ck->tensors[ck->by_name[i]];
        if (!strcmp(a->name, b->name)) {
            status = ty__error(TY_ERR_FORMAT, "tensor %s is in both %s and %s; the checkpoint is inconsistent", a->name,
                               a->file, b->file);
            goto fail;
        }
    }
    ty_free(index_path);
    ty_free(single_path);
    *out = ck;
    return TY_OK;
fail:
    ty_free(index_path);
    ty_free(single_path);
    ty__checkpoint_close(ck);
    return status;
}

int64_t ty__checkpoint_n_tensors(const struct ty_checkpoint *ck) {
    return ck->n_tensors;
}

const struct ty_st_tensor *ty__checkpoint_tensor(const struct ty_checkpoint *ck, int64_t i) {
    return i >= 0 && i < ck->n_tensors ? ck->tensors[i] : NULL;
}

const struct ty_st_tensor *ty__checkpoint_find(const struct ty_checkpoint *ck, const char *name) {
    int64_t lo = 0, hi = ck->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ck->tensors[ck->by_name[mid]]->name, name);
        if (c == 0) return ck->tensors[ck->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int ty__checkpoint_n_files(const struct ty_checkpoint *ck) {
    return ck->n_files;
}
