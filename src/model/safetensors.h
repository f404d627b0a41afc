/*
 * safetensors.h - a hardened reader for Hugging Face safetensors files and for checkpoints made of one or more of them
 * (a folder with `model.safetensors`, or shards listed in `model.safetensors.index.json`).
 *
 * A file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to the data section that follows the header),
 * then the data. The reader treats the file as hostile and checks what the reference implementation
 * (huggingface/safetensors) checks: header length <= 100 MB and inside the file, valid JSON without duplicate keys,
 * known dtype, shape products without overflow, end - begin == elements * dtype size, and ranges that, sorted, tile
 * the data section exactly (no overlap, no gap, nothing past the end). `__metadata__` is ignored. Every error names
 * the file, the tensor and the problem.
 *
 * Tensors are mapped, not copied: `data` points into the file mapping and stays valid until the reader is closed.
 */
#ifndef TY_SAFETENSORS_H
#define TY_SAFETENSORS_H

#include "base/base.h"

#define TY_ST_MAX_DIMS   8                   /* the largest rank accepted from a file; models use <= 4 */
#define TY_ST_MAX_HEADER ((size_t)100000000) /* the reference implementation's limit */

/* Element types a safetensors file may declare. Only F32, F16 and BF16 (and F64, converted) can be read as floats;
 * the others are parsed and bounds-checked so that a checkpoint holding them still opens, and reading one reports
 * "unsupported dtype". */
enum ty_st_dtype {
    TY_ST_BOOL = 0,
    TY_ST_U8,
    TY_ST_I8,
    TY_ST_F8_E5M2,
    TY_ST_F8_E4M3,
    TY_ST_I16,
    TY_ST_U16,
    TY_ST_F16,
    TY_ST_BF16,
    TY_ST_I32,
    TY_ST_U32,
    TY_ST_F32,
    TY_ST_I64,
    TY_ST_U64,
    TY_ST_F64,
    TY_ST_DTYPE_COUNT
};

const char *ty__st_dtype_name(enum ty_st_dtype d); /* "BF16" */
size_t ty__st_dtype_size(enum ty_st_dtype d);      /* bytes per element */

struct ty_st_tensor {
    const char *name; /* NUL-terminated, owned by the reader */
    const char *file; /* path (or label) of the file holding it, owned by the reader; for messages */
    enum ty_st_dtype dtype;
    int n_dims;                    /* 0 for a scalar */
    int64_t shape[TY_ST_MAX_DIMS]; /* PyTorch order: shape[0] varies slowest; unused dims are 1 */
    int64_t n_elements;            /* product of shape (1 for a scalar, 0 if any dim is 0) */
    size_t nbytes;                 /* n_elements * dtype size */
    const void *data;              /* into the mapping; may be unaligned; valid while the reader is open */
};

/* ==== One file ==== */

struct ty_safetensors;

/* Maps and validates `path`. Free with ty__safetensors_close(). */
enum ty_status ty__safetensors_open(const char *path, struct ty_safetensors **out);
/* The same over a caller-owned buffer that must outlive the reader (fuzzer, tests). `label` names it in messages. */
enum ty_status ty__safetensors_open_memory(const void *data, size_t size, const char *label,
                                           struct ty_safetensors **out);
void ty__safetensors_close(struct ty_safetensors *st);

/* Tensors in data-offset order. */
int64_t ty__safetensors_n_tensors(const struct ty_safetensors *st);
const struct ty_st_tensor *ty__safetensors_tensor(const struct ty_safetensors *st, int64_t i);
const struct ty_st_tensor *ty__safetensors_find(const struct ty_safetensors *st, const char *name); /* or NULL */

/* Converts elements [first, first + n) of `t` (flat, row-major) to float. TY_ERR_UNSUPPORTED, naming the tensor and
 * the dtype, for dtypes other than F32, F16, BF16 and F64; TY_ERR_INVALID_ARG when the range is outside the tensor. */
enum ty_status ty__st_read_f32(const struct ty_st_tensor *t, int64_t first, int64_t n, float *dst);

/* ==== A checkpoint folder (one file or shards) ==== */

struct ty_checkpoint;

/* Opens the weights of a Hugging Face model folder: `model.safetensors.index.json` when present (its `weight_map`
 * names the shard of every tensor; shard names must be plain file names inside `dir`, and every tensor must be in the
 * shard the index says, exactly once), else `model.safetensors`. Free with ty__checkpoint_close(). */
enum ty_status ty__checkpoint_open(const char *dir, struct ty_checkpoint **out);
void ty__checkpoint_close(struct ty_checkpoint *ck);

int64_t ty__checkpoint_n_tensors(const struct ty_checkpoint *ck);
/* Tensors in shard order, then data-offset order. Valid while the checkpoint is open. */
const struct ty_st_tensor *ty__checkpoint_tensor(const struct ty_checkpoint *ck, int64_t i);
/* Lookup by name across shards (binary search); NULL when absent. */
const struct ty_st_tensor *ty__checkpoint_find(const struct ty_checkpoint *ck, const char *name);
int ty__checkpoint_n_files(const struct ty_checkpoint *ck);

#endif /* TY_SAFETENSORS_H */
