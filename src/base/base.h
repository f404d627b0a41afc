/*
 * base.h - internal foundation shared by every layer: error reporting, assertions, the counting allocator, checked
 * arithmetic, half-precision conversion, read-only file mapping, a growable byte buffer, logging and progress bars.
 * Nothing here knows about models or servers.
 */
#ifndef TY_BASE_H
#define TY_BASE_H

#include "tongyun.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ==== Errors ==== */

/* Records a message for ty_last_error() and returns `status`, so a failure reads `return ty__error(TY_ERR_FORMAT,
 * "tensor %s: offset %#llx past end of file (size %zu); the file is truncated or corrupt", ...)`. */
enum ty_status ty__error(enum ty_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "`prefix`: " to the current message (adds context as an error travels up) and returns `status`. */
enum ty_status ty__error_prefix(enum ty_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define TY_TRY(expr)                                                                                                   \
    do {                                                                                                               \
        enum ty_status ty_try_st_ = (expr);                                                                            \
        if (ty_try_st_ != TY_OK) return ty_try_st_;                                                                    \
    } while (0)

/* ==== Assertions: broken invariants, never bad input ==== */

typedef void (*ty_abort_hook)(const char *file, int line, const char *expr);
/* Replaces the function called on a failed TY_ASSERT (default: print and abort()). Returns the previous hook. */
ty_abort_hook ty_set_abort_hook(ty_abort_hook hook);
void ty__assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));
#define TY_ASSERT(x)                                                                                                   \
    do {                                                                                                               \
        if (!(x)) ty__assert_fail(__FILE__, __LINE__, #x);                                                             \
    } while (0)

/* ==== Memory: one counting entry point ==== */

void *ty__malloc(size_t size);
void *ty__calloc(size_t n, size_t size);
void *ty__realloc(void *ptr, size_t size);
char *ty__strdup(const char *s);
char *ty__strndup(const char *s, size_t n);
/* Fault injection for tests: the `n`th allocation from now fails (0 disables). */
void ty__alloc_fail_after(long n);
/* 64-byte aligned allocation for weights and activations; free with ty__free_aligned. */
void *ty__malloc_aligned(size_t size);
void ty__free_aligned(void *ptr);
/* Zero-filled memory on transparent huge pages where the OS offers them (Linux: an anonymous mapping with
 * MADV_HUGEPAGE, starting on a 2 MiB boundary; elsewhere an aligned block), for the large buffers that kernels stream:
 * on the 2-core Zen 4 VM one thread streamed 16.5 GB/s from 4 KiB pages and 26.9 GB/s from huge pages (the TLB, not
 * DRAM, bounds a 4 KiB stream). Free with ty__huge_free. */
void *ty__huge_calloc(size_t n, size_t size);
void ty__huge_free(void *ptr);
/* ty_free() is the public free; library code uses it too. */

/* ==== Checked arithmetic: true on overflow ==== */

static inline bool ty__mul_overflow(size_t a, size_t b, size_t *r) {
    return __builtin_mul_overflow(a, b, r);
}
static inline bool ty__add_overflow(size_t a, size_t b, size_t *r) {
    return __builtin_add_overflow(a, b, r);
}
static inline bool ty__mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *r) {
    return __builtin_mul_overflow(a, b, r);
}
static inline bool ty__add_overflow_u64(uint64_t a, uint64_t b, uint64_t *r) {
    return __builtin_add_overflow(a, b, r);
}

/* ==== Half precision ==== */

typedef uint16_t ty_f16;  /* IEEE 754 binary16 bits */
typedef uint16_t ty_bf16; /* bfloat16 bits */

float ty__f16_to_f32(ty_f16 h);
ty_f16 ty__f32_to_f16(float f);                                /* round to nearest even, as the hardware converts */
void ty__f32_to_f16_row(const float *x, ty_f16 *y, int64_t n); /* n of them, bit for bit ty__f32_to_f16 */
static inline float ty__bf16_to_f32(ty_bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
ty_bf16 ty__f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

/* ==== Read-only file mapping ==== */

struct ty_file_map {
    const uint8_t *data;
    size_t size;
    int fd;
};
/* Maps `path` read-only. An empty file maps to data == NULL, size 0. Errors name the path and the OS reason. */
enum ty_status ty__file_map(const char *path, struct ty_file_map *out);
void ty__file_unmap(struct ty_file_map *m);
/* Reads a whole file into a NUL-terminated allocation (ty_free). Refuses files larger than `max_size`. */
enum ty_status ty__file_read(const char *path, size_t max_size, char **out, size_t *size_out);

/* ==== Growable byte buffer ==== */

struct ty_buf {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    bool oom; /* set by a failed append; later appends do nothing, so callers check once at the end */
};
void ty__buf_append(struct ty_buf *b, const void *data, size_t n);
void ty__buf_puts(struct ty_buf *b, const char *s);
void ty__buf_printf(struct ty_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the data to the caller (free with ty_free) or reports TY_ERR_NO_MEMORY if an append failed. */
enum ty_status ty__buf_finish(struct ty_buf *b, char **out);
void ty__buf_free(struct ty_buf *b);

/* ==== Logging (stderr) ==== */

enum ty_log_level { TY_LOG_ERROR = 0, TY_LOG_WARN = 1, TY_LOG_INFO = 2, TY_LOG_DEBUG = 3 };
void ty__log_set_level(enum ty_log_level level);
enum ty_log_level ty__log_get_level(void);
void ty__log(enum ty_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define TY_LOG_E(...) ty__log(TY_LOG_ERROR, __VA_ARGS__)
#define TY_LOG_W(...) ty__log(TY_LOG_WARN, __VA_ARGS__)
#define TY_LOG_I(...) ty__log(TY_LOG_INFO, __VA_ARGS__)
#define TY_LOG_D(...) ty__log(TY_LOG_DEBUG, __VA_ARGS__)

/* ==== Progress bar (stderr, only when stderr is a terminal or TY_PROGRESS=1) ==== */

struct ty_progress {
    const char *label;
    uint64_t total;
    uint64_t done;
    double t_start;
    double t_last_draw;
    bool enabled;
};
void ty__progress_begin(struct ty_progress *p, const char *label, uint64_t total);
void ty__progress_update(struct ty_progress *p, uint64_t done);
void ty__progress_end(struct ty_progress *p);

/* ==== Time ==== */

double ty__time_s(void); /* monotonic seconds */

#endif /* TY_BASE_H */
