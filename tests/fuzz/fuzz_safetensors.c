/*
 * fuzz_safetensors.c - feeds arbitrary bytes to the safetensors reader as a whole file. Whatever it accepts must be
 * safe to walk: every tensor is looked up by name and its data read back as floats where the dtype allows, so a
 * bounds mistake in the header checks shows up under ASan.
 */
#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct ty_safetensors *st;
    if (ty__safetensors_open_memory(data, size, "fuzz", &st) != TY_OK) return 0;
    float buf[64];
    for (int64_t i = 0; i < ty__safetensors_n_tensors(st); i++) {
        const struct ty_st_tensor *t = ty__safetensors_tensor(st, i);
        TY_ASSERT(ty__safetensors_find(st, t->name) == t);
        int64_t n = t->n_elements < 64 ? t->n_elements : 64;
        if (ty__st_read_f32(t, t->n_elements - n, n, buf) == TY_OK && n > 0) {
            volatile float sink = buf[n - 1];
            (void)sink;
        }
        /* Touch the last byte of the data range. */
        if (t->nbytes) {
            volatile uint8_t last = ((const uint8_t *)t->data)[t->nbytes - 1];
            (void)last;
        }
    }
    ty__safetensors_close(st);
    return 0;
}
