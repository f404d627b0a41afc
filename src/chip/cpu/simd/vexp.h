/*
 * vexp.h - exp(x) for x <= 0 over a row of floats, in plain C that the compilers vectorise (no calls, no branches
 * in the loop body): the softmax of the inference attention (cpu-attn.c) and the trainer's softmax, cross-entropy and
 * SiLU (src/train/ops.c) share it. Cody-Waite reduction x = n ln2 + r with a degree-6 polynomial for e^r (Cephes'
 * coefficients): within 2 ulp of expf on [-87, 0]; below -87 the result is 0 (expf would give a denormal or 0).
 * Each element's value does not depend on its position or on how the loop is vectorised.
 */
#ifndef TY_CHIP_CPU_SIMD_VEXP_H
#define TY_CHIP_CPU_SIMD_VEXP_H

#include <stdint.h>

/* exp(x) for x <= 0 (a positive x gives a wrong value), for loops that inline it. */
static inline float ty__exp_nonpositive1(float x) {
    float v = x < -87.0f ? -87.0f : x;
    float fn = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest, |v log2 e| < 2^22 */
    float r = v - fn * 0.693359375f - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } two_n = {.i = ((int32_t)fn + 127) << 23};
    return x < -87.0f ? 0.0f : p * two_n.f;
}

/* y[i] = exp(x[i]) for x[i] <= 0. y may be x. */
static inline void ty__exp_nonpositive(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ty__exp_nonpositive1(x[i]);
}

#endif /* TY_CHIP_CPU_SIMD_VEXP_H */
