/*
 * test_base.c - the base layer: half-precision conversions (exhaustive over all 65536 f16 values, and round-to-
 * nearest-even at the boundaries), the counting allocator and its fault injection, the growable buffer, checked
 * arithmetic, error messages, status strings and file mapping.
 */
#include "harness.h"

#include <stdlib.h>

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_f16_roundtrip_exhaustive(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ty__f16_to_f32((ty_f16)h);
        ty_f16 back = ty__f32_to_f16(f);
        bool nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
        if (nan ? !(isnan(f) && ((back >> 10) & 0x1f) == 0x1f && (back & 0x3ff)) : back != h) bad++;
    }
    CHECK_MSG(bad == 0, "%d f16 values did not round-trip", bad);
    CHECK(ty__f16_to_f32(0x3c00) == 1.0f);
    CHECK(ty__f16_to_f32(0xc000) == -2.0f);
    CHECK(ty__f16_to_f32(0x0001) == 5.9604644775390625e-08f); /* smallest subnormal */
    CHECK(ty__f16_to_f32(0x7bff) == 65504.0f);
}

static void test_f16_rounding(void) {
    /* 1 + 2^-11 is halfway between 1 and the next f16 (1 + 2^-10): ties to even -> 1. */
    CHECK(ty__f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);
    /* 1 + 3*2^-11 is halfway between 1+2^-10 (odd mantissa) and 1+2^-9: ties to even -> 1+2^-9. */
    CHECK(ty__f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);
    CHECK(ty__f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01); /* just above half: rounds up */
    CHECK(ty__f32_to_f16(65520.0f) == 0x7c00);                   /* rounds to inf */
    CHECK(ty__f32_to_f16(65519.0f) == 0x7bff);
    CHECK(ty__f32_to_f16(0x1p-25f) == 0x0000);            /* exactly half the smallest subnormal: ties to even 0 */
    CHECK(ty__f32_to_f16(0x1p-25f + 0x1p-35f) == 0x0001); /* above half */
    CHECK(ty__f32_to_f16(-0.0f) == 0x8000);
    CHECK(ty__f32_to_f16(INFINITY) == 0x7c00);
}

/* The row conversion (F16C where the build has it) against the scalar one, bit for bit: every f16 value, the
 * midpoints between neighbours and random bit patterns (NaNs, infinities, overflow and subnormals among them). */
static void test_f16_row(void) {
    enum { N = 3 * 65536 + 7 };
    float *x = ty__malloc(sizeof(float) * N);
    ty_f16 *y = ty__malloc(sizeof(ty_f16) * N);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (uint32_t h = 0; h < 65536; h++) {
        x[h] = ty__f16_to_f32((ty_f16)h);
        uint32_t mid = bits(x[h]) + 0x1000u; /* halfway to the next f16, for normal values */
        memcpy(&x[65536 + h], &mid, 4);
    }
    for (int i = 2 * 65536; i < N; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t u = (uint32_t)s;
        memcpy(&x[i], &u, 4);
    }
    ty__f32_to_f16_row(x, y, N);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += y[i] != ty__f32_to_f16(x[i]);
    CHECK_MSG(bad == 0, "%d of %d f32 -> f16 row conversions differ from the scalar one", bad, N);
    ty_free(x);
    ty_free(y);
}

static void test_bf16(void) {
    CHECK(ty__f32_to_bf16(1.0f) == 0x3f80);
    CHECK(bits(ty__bf16_to_f32(0x3f80)) == bits(1.0f));
    /* 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even -> 1.0 */
    CHECK(ty__f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);
    CHECK(ty__f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81);
    CHECK(isnan(ty__bf16_to_f32(ty__f32_to_bf16(NAN))));
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) continue; /* NaN payloads */
        if (ty__f32_to_bf16(ty__bf16_to_f32((ty_bf16)h)) != h) bad++;
    }
    CHECK(bad == 0);
}

static void test_alloc_counting_and_faults(void) {
    size_t before = ty_mem_allocated();
    char *p = ty__malloc(1000);
    CHECK(p != NULL);
    CHECK(ty_mem_allocated() == before + 1000);
    p = ty__realloc(p, 3000);
    CHECK(ty_mem_allocated() == before + 3000);
    ty_free(p);
    CHECK(ty_mem_allocated() == before);
    void *a = ty__malloc_aligned(100);
    CHECK(((uintptr_t)a & 63) == 0);
    CHECK(ty_mem_allocated() == before + 100);
    ty__free_aligned(a);
    CHECK(ty_mem_allocated() == before);

    ty__alloc_fail_after(2);
    void *x = ty__malloc(8);
    void *y = ty__malloc(8);
    void *z = ty__malloc(8);
    CHECK(x != NULL);
    CHECK(y == NULL);
    CHECK(z != NULL);
    ty_free(x);
    ty_free(z);
    CHECK(ty__calloc(SIZE_MAX / 2, 4) == NULL); /* overflow is refused, not wrapped */
    CHECK(ty__malloc(SIZE_MAX - 4) == NULL);
}

static void test_buf(void) {
    struct ty_buf b = {0};
    for (int i = 0; i < 1000; i++) ty__buf_printf(&b, "%d,", i);
    ty__buf_puts(&b, "end");
    char *s;
    CHECK_OK(ty__buf_finish(&b, &s));
    CHECK(!strncmp(s, "0,1,2,", 6));
    CHECK(strlen(s) == 3893);
    CHECK(!strcmp(s + strlen(s) - 7, "999,end"));
    ty_free(s);

    struct ty_buf f = {0};
    ty__alloc_fail_after(1);
    ty__buf_puts(&f, "hello");
    ty__buf_puts(&f, "world");
    CHECK(f.oom);
    CHECK_STATUS(ty__buf_finish(&f, &s), TY_ERR_NO_MEMORY);
    CHECK(s == NULL);
}

static void test_errors(void) {
    CHECK(!strcmp(ty_status_str(TY_OK), "success"));
    CHECK(!strcmp(ty_status_str(TY_ERR_FORMAT), "malformed or corrupt input"));
    CHECK(!strcmp(ty_status_str((enum ty_status)999), "unknown status"));
    CHECK(ty__error(TY_ERR_FORMAT, "tensor %s: bad", "x") == TY_ERR_FORMAT);
    CHECK(!strcmp(ty_last_error(), "tensor x: bad"));
    CHECK(ty__error_prefix(TY_ERR_FORMAT, "file %s", "m.gguf") == TY_ERR_FORMAT);
    CHECK(!strcmp(ty_last_error(), "file m.gguf: tensor x: bad"));
    /* a prefix that no longer fits keeps the message's start and ends it with "..." */
    char long_name[1000];
    memset(long_name, 'a', sizeof long_name - 1), long_name[sizeof long_name - 1] = 0;
    CHECK(ty__error(TY_ERR_FORMAT, "tensor %s: bad", long_name) == TY_ERR_FORMAT);
    CHECK(ty__error_prefix(TY_ERR_FORMAT, "file %s", "m.gguf") == TY_ERR_FORMAT);
    const char *e = ty_last_error();
    CHECK(strlen(e) == 1023 && !strncmp(e, "file m.gguf: tensor aaa", 23) && !strcmp(e + 1020, "..."));
    size_t r;
    CHECK(ty__mul_overflow(SIZE_MAX / 2 + 1, 2, &r));
    CHECK(!ty__mul_overflow(1 << 20, 1 << 10, &r) && r == (size_t)1 << 30);
    CHECK(ty__add_overflow(SIZE_MAX, 1, &r));
}

static void test_files(void) {
    struct ty_file_map m;
    CHECK_STATUS(ty__file_map("/nonexistent/file.gguf", &m), TY_ERR_IO);
    CHECK(strstr(ty_last_error(), "/nonexistent/file.gguf") != NULL);
    CHECK_STATUS(ty__file_map("/", &m), TY_ERR_IO);
    const char *path = ty_test_tmp("hello.txt");
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs("hello world", f);
    fclose(f);
    CHECK_OK(ty__file_map(path, &m));
    CHECK(m.size == 11 && !memcmp(m.data, "hello world", 11));
    ty__file_unmap(&m);
    char *s;
    size_t n;
    CHECK_OK(ty__file_read(path, 100, &s, &n));
    CHECK(n == 11 && !strcmp(s, "hello world"));
    ty_free(s);
    CHECK_STATUS(ty__file_read(path, 5, &s, &n), TY_ERR_FORMAT);
}

void ty_tests(void) {
    TY_RUN(test_f16_roundtrip_exhaustive);
    TY_RUN(test_f16_rounding);
    TY_RUN(test_f16_row);
    TY_RUN(test_bf16);
    TY_RUN(test_alloc_counting_and_faults);
    TY_RUN(test_buf);
    TY_RUN(test_errors);
    TY_RUN(test_files);
}
