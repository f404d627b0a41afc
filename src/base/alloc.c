/*
 * alloc.c - the one allocation entry point. Every heap byte Tongyun owns passes through here, so ty_mem_allocated()
 * (and later /metrics and the simulator's calibration) read one true figure. A size header in front of each block
 * makes frees exact. Tests can make the n-th allocation fail to exercise error paths.
 */
#include "base.h"

#include <stdatomic.h>
#include <stdlib.h>

#define HEADER 16 /* keeps 16-byte alignment of the user pointer */

static atomic_size_t bytes_live;
static atomic_long fail_countdown;

void ty__alloc_fail_after(long n) { atomic_store(&fail_countdown, n); }

static bool injected_failure(void) {
    long n = atomic_load(&fail_countdown);
    while (n > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &n, n - 1)) return n == 1;
    }
    return false;
}

void *ty__malloc(size_t size) {
    size_t total;
    if (ty__add_overflow(size, HEADER, &total) || injected_failure()) return NULL;
    unsigned char *p = malloc(total);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    atomic_fetch_add(&bytes_live, size);
    return p + HEADER;
}

void *ty__calloc(size_t n, size_t size) {
    size_t bytes;
    if (ty__mul_overflow(n, size, &bytes)) return NULL;
    void *p = ty__malloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void *ty__realloc(void *ptr, size_t size) {
    if (!ptr) return ty__malloc(size);
    size_t total, old;
    unsigned char *base = (unsigned char *)ptr - HEADER;
    memcpy(&old, base, sizeof old);
    if (ty__add_overflow(size, HEADER, &total) || injected_failure()) return NULL;
    unsigned char *p = realloc(base, total);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    atomic_fetch_sub(&bytes_live, old);
    atomic_fetch_add(&bytes_live, size);
    return p + HEADER;
}

void ty_free(void *ptr) {
    if (!ptr) return;
    unsigned char *base = (unsigned char *)ptr - HEADER;
    size_t size;
    memcpy(&size, base, sizeof size);
    atomic_fetch_sub(&bytes_live, size);
    free(base);
}

char *ty__strndup(const char *s, size_t n) {
    char *d = ty__malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *ty__strdup(const char *s) { return ty__strndup(s, strlen(s)); }

/* Aligned blocks keep their own header: [size][offset back to malloc's pointer] just below the aligned address. */
void *ty__malloc_aligned(size_t size) {
    size_t total;
    if (ty__add_overflow(size, 64 + HEADER, &total) || injected_failure()) return NULL;
    unsigned char *raw = malloc(total);
    if (!raw) return NULL;
    uintptr_t aligned = ((uintptr_t)raw + HEADER + 63) & ~(uintptr_t)63;
    unsigned char *p = (unsigned char *)aligned;
    size_t off = (size_t)(p - raw);
    memcpy(p - 16, &size, sizeof size);
    memcpy(p - 8, &off, sizeof off);
    atomic_fetch_add(&bytes_live, size);
    return p;
}

void ty__free_aligned(void *ptr) {
    if (!ptr) return;
    unsigned char *p = ptr;
    size_t size, off;
    memcpy(&size, p - 16, sizeof size);
    memcpy(&off, p - 8, sizeof off);
    atomic_fetch_sub(&bytes_live, size);
    free(p - off);
}

size_t ty_mem_allocated(void) { return atomic_load(&bytes_live); }
