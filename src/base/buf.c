/*
 * buf.c - a growable, always NUL-terminated byte buffer. Appends after an allocation failure are ignored and the
 * failure is reported once by ty__buf_finish, which keeps builder code free of per-append checks.
 */
#include "base.h"

#include <stdio.h>

static bool reserve(struct ty_buf *b, size_t extra) {
    if (b->oom) return false;
    size_t need;
    if (ty__add_overflow(b->len, extra + 1, &need)) {
        b->oom = true;
        return false;
    }
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (ty__mul_overflow(cap, 2, &cap)) {
            cap = need;
            break;
        }
    }
    char *d = ty__realloc(b->data, cap);
    if (!d) {
        b->oom = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

void ty__buf_append(struct ty_buf *b, const void *data, size_t n) {
    if (!reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
}

void ty__buf_puts(struct ty_buf *b, const char *s) {
    ty__buf_append(b, s, strlen(s));
}

void ty__buf_printf(struct ty_buf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n)) {
        if (n < 0) b->oom = true;
        va_end(ap2);
        return;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

enum ty_status ty__buf_finish(struct ty_buf *b, char **out) {
    if (b->oom) {
        ty__buf_free(b);
        *out = NULL;
        return ty__error(TY_ERR_NO_MEMORY, "out of memory building a %zu-byte string", b->len);
    }
    if (!b->data) reserve(b, 0);
    if (b->oom) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    *out = b->data;
    memset(b, 0, sizeof *b);
    return TY_OK;
}

void ty__buf_free(struct ty_buf *b) {
    ty_free(b->data);
    memset(b, 0, sizeof *b);
}
