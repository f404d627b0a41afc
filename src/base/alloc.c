/*
 * alloc.c - the one allocation entry point. Every heap byte Tongyun owns passes through here, so ty_mem_allocated()
 * (and later /metrics and the simulator's calibration) read one true figure. A size header in front of each block
 * makes frees exact. Tests can make the n-th allocation fail to exercise error paths.
 */
#include "base.h"

#include <stdatomic.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define HEADER 16 /* keeps 16-byte alignment of the user pointer */

static atomic_size_t bytes_live;
static atomic_long fail_countdown;

void ty__alloc_fail_after(long n) {
    atomic_store(&fail_countdown, n);
}

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

char *ty__strdup(const char *s) {
    return ty__strndup(s, strlen(s));
}

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

/* Huge-page blocks: an anonymous mapping with the user pointer on a 2 MiB boundary and [size][mapping][length] in
 * the 64 bytes below it (so the header's page is the only small one touched). Elsewhere: an aligned block. */
#define HUGE_ALIGN ((size_t)2 << 20)

void *ty__huge_calloc(size_t n, size_t size) {
    size_t bytes, len;
    if (ty__mul_overflow(n, size, &bytes) || ty__add_overflow(bytes, HUGE_ALIGN + 64, &len) || injected_failure())
        return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    unsigned char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    unsigned char *p = (unsigned char *)(((uintptr_t)raw + 64 + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
    memcpy(p - 24, &bytes, sizeof bytes);
    memcpy(p - 16, &raw, sizeof raw);
    memcpy(p - 8, &len, sizeof len);
    if (bytes) madvise(p, bytes, MADV_HUGEPAGE); /* advice only: without THP the block still works */
    atomic_fetch_add(&bytes_live, bytes);
    return p; /* an anonymous mapping reads as zeros */
#else
    (void)len;
    unsigned char *p = ty__malloc_aligned(bytes);
    if (p) memset(p, 0, bytes);
    return p;
#endif
}

void ty__huge_free(void *ptr) {
    if (!ptr) return;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    unsigned char *p = ptr, *raw;
    size_t bytes, len;
    memcpy(&bytes, p - 24, sizeof bytes);
    memcpy(&raw, p - 16, sizeof raw);
    memcpy(&len, p - 8, sizeof len);
    atomic_fetch_sub(&bytes_live, bytes);
    munmap(raw, len);
#else
    ty__free_aligned(ptr);
#endif
}

size_t ty_mem_allocated(void) {
    return atomic_load(&bytes_live);
}
