/*
 * gguf.h - the GGUF file format (v2 and v3): a hardened, mmapped reader and a streaming writer.
 *
 * The reader treats the file as hostile: every count, length, dimension, offset and product is checked for overflow
 * and against the file size before use, and nothing is allocated in proportion to a count the file claims before that
 * count has been checked against the bytes actually present. Errors name the key or tensor and the problem.
 *
 * Layout reference: the GGUF specification (ggml's docs/gguf.md). All integers are little-endian.
 */
#ifndef TY_GGUF_H
#define TY_GGUF_H

#include "base/base.h"

/* Metadata value types, values as in the file. */
enum ty_gguf_type {
    TY_GGUF_TYPE_UINT8 = 0,
    TY_GGUF_TYPE_INT8 = 1,
    TY_GGUF_TYPE_UINT16 = 2,
    TY_GGUF_TYPE_INT16 = 3,
    TY_GGUF_TYPE_UINT32 = 4,
    TY_GGUF_TYPE_INT32 = 5,
    TY_GGUF_TYPE_FLOAT32 = 6,
    TY_GGUF_TYPE_BOOL = 7,
    TY_GGUF_TYPE_STRING = 8,
    TY_GGUF_TYPE_ARRAY = 9,
    TY_GGUF_TYPE_UINT64 = 10,
    TY_GGUF_TYPE_INT64 = 11,
    TY_GGUF_TYPE_FLOAT64 = 12,
    TY_GGUF_TYPE_COUNT = 13
};

#define TY_GGUF_MAX_DIMS          4
#define TY_GGUF_DEFAULT_ALIGNMENT 32

const char *ty__gguf_type_name(enum ty_gguf_type t);

/* A string inside the mapped file: not NUL-terminated, valid while the reader is open. */
struct ty_gguf_str {
    const char *data;
    uint64_t len;
};

struct ty_gguf_tensor {
    const char *name; /* NUL-terminated copy owned by the reader */
    enum ty_type type;
    int n_dims;
    int64_t ne[TY_GGUF_MAX_DIMS]; /* elements per dimension, ne[0] fastest-varying; unused dims are 1 */
    uint64_t offset;              /* from the start of the data section */
    size_t nbytes;
    const void *data; /* into the mapping; valid while the reader is open */
};

/* ==== Reader ==== */

struct ty_gguf;

/* Opens and validates a GGUF file (mmapped). Free with ty__gguf_close(). Fails with TY_ERR_FORMAT for a malformed
 * file, TY_ERR_UNSUPPORTED for a well-formed one this reader cannot use (GGUF v1, big-endian, a tensor type without
 * traits in quant.h) and TY_ERR_IO when the file cannot be read; the message names the key, tensor or field. */
enum ty_status ty__gguf_open(const char *path, struct ty_gguf **out);
/* The same over a caller-owned buffer that must outlive the reader (used by the fuzzer and tests). */
enum ty_status ty__gguf_open_memory(const void *data, size_t size, struct ty_gguf **out);
void ty__gguf_close(struct ty_gguf *g);

uint32_t ty__gguf_version(const struct ty_gguf *g);
uint32_t ty__gguf_alignment(const struct ty_gguf *g);
size_t ty__gguf_data_offset(const struct ty_gguf *g); /* file offset of the tensor data section */
size_t ty__gguf_file_size(const struct ty_gguf *g);

/* Metadata by index (0 .. n_kv-1) or by key. */
int64_t ty__gguf_n_kv(const struct ty_gguf *g);
int64_t ty__gguf_find_key(const struct ty_gguf *g, const char *key); /* index, or -1 */
const char *ty__gguf_key(const struct ty_gguf *g, int64_t i);        /* NUL-terminated copy */
enum ty_gguf_type ty__gguf_kv_type(const struct ty_gguf *g, int64_t i);

/* Typed getters by key. TY_ERR_NOT_FOUND when absent; TY_ERR_FORMAT (naming the key, wanted and actual type) on a
 * type mismatch. Integer getters accept any integer type whose value fits; float getters accept f32 and f64. */
enum ty_status ty__gguf_get_int(const struct ty_gguf *g, const char *key, int64_t *out);
enum ty_status ty__gguf_get_uint(const struct ty_gguf *g, const char *key, uint64_t *out);
enum ty_status ty__gguf_get_float(const struct ty_gguf *g, const char *key, double *out);
enum ty_status ty__gguf_get_bool(const struct ty_gguf *g, const char *key, bool *out);
enum ty_status ty__gguf_get_str(const struct ty_gguf *g, const char *key, struct ty_gguf_str *out);
/* A NUL-terminated copy of a string value (ty_free). */
enum ty_status ty__gguf_get_strdup(const struct ty_gguf *g, const char *key, char **out);

/* Arrays: element type and count; then elements. Numeric arrays are contiguous little-endian data in the mapping
 * (possibly unaligned: read with memcpy). String arrays are read element by element. */
enum ty_status ty__gguf_get_arr(const struct ty_gguf *g, const char *key, enum ty_gguf_type *elem_type, uint64_t *n);
const void *ty__gguf_arr_data(const struct ty_gguf *g, const char *key); /* numeric arrays only, else NULL */
enum ty_status ty__gguf_arr_str(const struct ty_gguf *g, const char *key, uint64_t i, struct ty_gguf_str *out);
/* Numeric array element i converted to int64 / double (any integer type / f32 / f64). */
enum ty_status ty__gguf_arr_int(const struct ty_gguf *g, const char *key, uint64_t i, int64_t *out);
enum ty_status ty__gguf_arr_float(const struct ty_gguf *g, const char *key, uint64_t i, double *out);

/* Tensors. */
int64_t ty__gguf_n_tensors(const struct ty_gguf *g);
const struct ty_gguf_tensor *ty__gguf_tensor(const struct ty_gguf *g, int64_t i);
const struct ty_gguf_tensor *ty__gguf_find_tensor(const struct ty_gguf *g, const char *name); /* or NULL */

/* ==== Writer ==== */

struct ty_gguf_writer;

/* Starts an empty GGUF v3 file description. Metadata and tensor infos are collected in memory; tensor data is
 * streamed to disk in order, so converting a model never holds all its weights at once. */
enum ty_status ty__gguf_writer_init(struct ty_gguf_writer **out);
void ty__gguf_writer_free(struct ty_gguf_writer *w);

/* Metadata setters; setting an existing key replaces it, keeping its position. Values are copied. */
enum ty_status ty__gguf_writer_set_u32(struct ty_gguf_writer *w, const char *key, uint32_t v);
enum ty_status ty__gguf_writer_set_i32(struct ty_gguf_writer *w, const char *key, int32_t v);
enum ty_status ty__gguf_writer_set_u64(struct ty_gguf_writer *w, const char *key, uint64_t v);
enum ty_status ty__gguf_writer_set_f32(struct ty_gguf_writer *w, const char *key, float v);
enum ty_status ty__gguf_writer_set_bool(struct ty_gguf_writer *w, const char *key, bool v);
enum ty_status ty__gguf_writer_set_str(struct ty_gguf_writer *w, const char *key, const char *v);
/* Numeric array of `n` elements of `elem_type` (not STRING/ARRAY), copied from `data`. */
enum ty_status ty__gguf_writer_set_arr(struct ty_gguf_writer *w, const char *key, enum ty_gguf_type elem_type,
                                       const void *data, uint64_t n);
/* String array; `lens` may be NULL for NUL-terminated strings. */
enum ty_status ty__gguf_writer_set_arr_str(struct ty_gguf_writer *w, const char *key, const char *const *strs,
                                           const size_t *lens, uint64_t n);
/* Copies one metadata entry (any type, arrays included) from a reader. */
enum ty_status ty__gguf_writer_copy_kv(struct ty_gguf_writer *w, const struct ty_gguf *g, int64_t i);

/* Declares a tensor; the row length ne[0] must be a multiple of the type's block size. */
enum ty_status ty__gguf_writer_add_tensor(struct ty_gguf_writer *w, const char *name, enum ty_type type, int n_dims,
                                          const int64_t *ne);
/* Opens `path` for writing (a temporary name beside it) and writes the header, metadata and tensor infos. */
enum ty_status ty__gguf_writer_begin(struct ty_gguf_writer *w, const char *path);
/* Writes the data of the next declared tensor, in declaration order; `nbytes` must equal its size. */
enum ty_status ty__gguf_writer_write_tensor(struct ty_gguf_writer *w, const void *data, size_t nbytes);
/* Checks that every tensor was written, flushes, and renames the temporary file to `path`. On any earlier failure
 * the temporary file is removed and `path` is left untouched. */
enum ty_status ty__gguf_writer_finish(struct ty_gguf_writer *w);

#endif /* TY_GGUF_H */
