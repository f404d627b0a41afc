/*
 * quant-impl.h - what the quant*.c files share: the per-format conversion kernels that fill the type table in
 * quant.c, and the error-minimising scale searches that every quantiser is built on (quant-search.c).
 */
#ifndef TY_QUANT_IMPL_H
#define TY_QUANT_IMPL_H

#include "model/quant.h"

#include <math.h>

/* No fused multiply-add in the quant*.c files: dequantisation must round after every operation as the format
 * definitions do, and a quantiser should give the same bytes whichever compiler built it. Today every product in these
 * kernels is exact (f16 scale times a few-bit level), so fusing changes nothing (a gcc and a clang build write
 * identical files); this is the safeguard for kernels where that stops being true. gcc keeps ISO C free of contraction;
 * clang contracts unless told not to. */
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

/* Blocks may sit at any offset of a mapped file, so they are copied out rather than dereferenced in place. */
#define TY_LOAD_BLOCK(blk, src, i)  memcpy(&(blk), (const uint8_t *)(src) + (size_t)(i) * sizeof(blk), sizeof(blk))
#define TY_STORE_BLOCK(dst, i, blk) memcpy((uint8_t *)(dst) + (size_t)(i) * sizeof(blk), &(blk), sizeof(blk))

/* ==== Block kernels: n is a multiple of the block size; src and dst need no alignment beyond their element ==== */

void ty__q4_0_to_float(const void *src, float *dst, int64_t n);
void ty__q4_1_to_float(const void *src, float *dst, int64_t n);
void ty__q5_0_to_float(const void *src, float *dst, int64_t n);
void ty__q5_1_to_float(const void *src, float *dst, int64_t n);
void ty__q8_0_to_float(const void *src, float *dst, int64_t n);
void ty__q4_K_to_float(const void *src, float *dst, int64_t n);
void ty__q5_K_to_float(const void *src, float *dst, int64_t n);
void ty__q6_K_to_float(const void *src, float *dst, int64_t n);
void ty__q8_K_to_float(const void *src, float *dst, int64_t n);

void ty__q4_0_from_float(const float *src, void *dst, int64_t n);
void ty__q4_1_from_float(const float *src, void *dst, int64_t n);
void ty__q5_0_from_float(const float *src, void *dst, int64_t n);
void ty__q5_1_from_float(const float *src, void *dst, int64_t n);
void ty__q8_0_from_float(const float *src, void *dst, int64_t n);
void ty__q4_K_from_float(const float *src, void *dst, int64_t n);
void ty__q5_K_from_float(const float *src, void *dst, int64_t n);
void ty__q6_K_from_float(const float *src, void *dst, int64_t n);
void ty__q8_K_from_float(const float *src, void *dst, int64_t n);

/* ==== Scale searches (quant-search.c) ==== */

/* Rounds v to the nearest integer and clamps it to [lo, hi]; NaN goes to lo, so no input is undefined behaviour. */
static inline int ty__quant_round(float v, int lo, int hi) {
    if (!(v >= (float)lo)) v = (float)lo; /* also NaN */
    if (v > (float)hi) v = (float)hi;
    return (int)rintf(v); /* nearest, ties to even */
}

/* Stores a scale as f16, saturating at the largest finite half (65504) so a huge block never dequantises to inf. */
ty_f16 ty__quant_scale_f16(float d);

/* Symmetric fit x[i] ~ d * q[i] with integer q[i] in [qmin, qmax], minimising sum w[i] (x[i] - d q[i])^2 (w NULL:
 * all 1). Tries a spread of candidate scales and refines the best by least squares. Returns d (may be negative: the
 * largest-magnitude value may take the wider, negative end of the range); q receives the levels for that d. */
float ty__quant_fit_sym(int n, const float *x, const float *w, int qmin, int qmax, int8_t *q);

/* Affine fit x[i] ~ d * q[i] + m with q[i] in [0, qmax] and d >= 0, minimising the weighted squared error as above.
 * With `m_nonpositive` the offset is kept <= 0, as K-quant minimums (stored as -dmin * m6, m6 >= 0) require. */
void ty__quant_fit_affine(int n, const float *x, const float *w, int qmax, bool m_nonpositive, uint8_t *q, float *d,
                          float *m);

#endif /* TY_QUANT_IMPL_H */
