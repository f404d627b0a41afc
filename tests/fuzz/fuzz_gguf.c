/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader. Opens the input from memory and, when it is accepted, reads
 * everything a caller could: every metadata entry through every getter (whatever its type, so the mismatch paths run
 * too), every array element, and the first and last byte of every tensor's data. Any read outside the input trips
 * ASan. Regression inputs live in tests/fuzz/corpus/gguf/.
 */
#include "model/gguf.h"

#include <stddef.h>
#include <stdint.h>

static volatile uint64_t sink; /* keeps the reads from being optimised away */

static void walk_kv(const struct ty_gguf *g, int64_t i) {
    const char *key = ty__gguf_key(g, i);
    sink += (uint64_t)ty__gguf_kv_type(g, i) + (uint64_t)ty__gguf_find_key(g, key);
    int64_t iv;
    uint64_t uv;
    double dv;
    bool bv;
    struct ty_gguf_str s;
    char *dup = NULL;
    if (ty__gguf_get_int(g, key, &iv) == TY_OK) sink += (uint64_t)iv;
    if (ty__gguf_get_uint(g, key, &uv) == TY_OK) sink += uv;
    if (ty__gguf_get_float(g, key, &dv) == TY_OK) sink += (uint64_t)(dv == dv);
    if (ty__gguf_get_bool(g, key, &bv) == TY_OK) sink += bv;
    if (ty__gguf_get_str(g, key, &s) == TY_OK && s.len) sink += (uint8_t)s.data[0] + (uint8_t)s.data[s.len - 1];
    if (ty__gguf_get_strdup(g, key, &dup) == TY_OK) ty_free(dup);

    enum ty_gguf_type et;
    uint64_t n;
    if (ty__gguf_get_arr(g, key, &et, &n) != TY_OK) return;
    const uint8_t *d = ty__gguf_arr_data(g, key);
    if (d && n) sink += d[0];
    for (uint64_t k = 0; k < n; k++) {
        if (ty__gguf_arr_str(g, key, k, &s) == TY_OK && s.len) sink += (uint8_t)s.data[s.len - 1];
        if (ty__gguf_arr_int(g, key, k, &iv) == TY_OK) sink += (uint64_t)iv;
        if (ty__gguf_arr_float(g, key, k, &dv) == TY_OK) sink += (uint64_t)(dv == dv);
    }
    /* one past the end must be refused */
    if (ty__gguf_arr_str(g, key, n, &s) == TY_OK || ty__gguf_arr_int(g, key, n, &iv) == TY_OK) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct ty_gguf *g;
    if (ty__gguf_open_memory(data, size, &g) != TY_OK) {
        if (!ty_last_error()[0]) __builtin_trap(); /* every rejection carries a message */
        return 0;
    }
    if (ty__gguf_data_offset(g) % ty__gguf_alignment(g) != 0) __builtin_trap();
    for (int64_t i = 0; i < ty__gguf_n_kv(g); i++) walk_kv(g, i);
    for (int64_t i = 0; i < ty__gguf_n_tensors(g); i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
        if (ty__gguf_find_tensor(g, t->name) != t) __builtin_trap();
        const uint8_t *p = t->data;
        if (t->nbytes == 0 || p < data || p + t->nbytes > data + size) __builtin_trap();
        sink += p[0] + p[t->nbytes - 1];
    }
    ty__gguf_close(g);
    return 0;
}
