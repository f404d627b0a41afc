/*
 * attention-ref.h - the double-precision reference of causal grouped-query attention that the backend tests hold
 * every attention kernel to: q (dk, nh, n), k (dk, nkv, pos0 + n), v (dv, nkv, pos0 + n) as contiguous floats, query t
 * seeing keys 0 .. pos0 + t, softmax with the maximum subtracted. Writes out (dv, nh, n).
 */
#ifndef TY_TEST_ATTENTION_REF_H
#define TY_TEST_ATTENTION_REF_H

#include "base/base.h"

#include <math.h>

static inline void ty_test_attention_ref(const float *q, const float *k, const float *v, int64_t dk, int64_t dv,
                                         int64_t nh, int64_t nkv, int64_t n, int64_t pos0, double scale, double *out) {
    double *sc = ty__malloc(sizeof(double) * (size_t)(pos0 + n));
    TY_ASSERT(sc);
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < nh; h++) {
            int64_t g = h / (nh / nkv), nk = pos0 + t + 1;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < nk; j++) {
                double s = 0;
                for (int64_t d = 0; d < dk; d++) s += (double)q[(t * nh + h) * dk + d] * k[(j * nkv + g) * dk + d];
                sc[j] = s * scale;
                mx = fmax(mx, sc[j]);
            }
            for (int64_t j = 0; j < nk; j++) sum += (sc[j] = exp(sc[j] - mx));
            for (int64_t d = 0; d < dv; d++) {
                double o = 0;
                for (int64_t j = 0; j < nk; j++) o += sc[j] / sum * v[(j * nkv + g) * dv + d];
                out[(t * nh + h) * dv + d] = o;
            }
        }
    ty_free(sc);
}

#endif /* TY_TEST_ATTENTION_REF_H */
