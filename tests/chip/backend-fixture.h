/*
 * backend-fixture.h - what the backend tests share: random test data from the harness's generator, and tensors
 * that own their buffer on a given backend.
 */
#ifndef TY_TESTS_CHIP_BACKEND_FIXTURE_H
#define TY_TESTS_CHIP_BACKEND_FIXTURE_H

#include "harness.h"
#include "chip/backend.h"

/* x[i] uniform in [-scale, scale), drawn from *state. */
static inline void fixture_fill(uint64_t *state, float *x, int64_t n, double scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(ty_test_urand(state) * scale);
}

/* A contiguous tensor in a fresh buffer of backend `b`, holding `data` (zeros when data is NULL). */
struct owned {
    struct ty_buffer *buf;
    struct ty_tensor t;
};
static inline struct owned owned_make(struct ty_backend *b, enum ty_type type, int64_t ne0, int64_t ne1, int64_t ne2,
                                      const void *data) {
    struct owned o = {0};
    struct ty_tensor probe;
    ty__tensor_init(&probe, NULL, 0, type, ne0, ne1, ne2, 1);
    CHECK_OK(ty__backend_buffer_alloc(b, ty__tensor_size(&probe), &o.buf));
    if (!o.buf) return o;
    ty__tensor_init(&o.t, o.buf, 0, type, ne0, ne1, ne2, 1);
    if (data)
        CHECK_OK(ty__backend_tensor_set(b, &o.t, data, 0, ty__tensor_size(&o.t)));
    else
        memset(o.buf->data, 0, ty__tensor_size(&o.t));
    return o;
}
static inline void owned_drop(struct owned *o) {
    ty__backend_buffer_free(o->buf);
}

#endif /* TY_TESTS_CHIP_BACKEND_FIXTURE_H */
