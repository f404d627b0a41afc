/*
 * quant-k.c - the 256-element "K" super-block formats: Q4_K, Q5_K and Q6_K weights, and the Q8_K activation blocks.
 * Reference dequantisation exactly as the GGUF format defines it, and quantisation by a two-level search.
 *
 * Q4_K / Q5_K: eight sub-blocks of 32, x = (d * sc) * q - (dmin * m), with 6-bit sc and m per sub-block packed into
 * 12 bytes and f16 d, dmin per super-block; q has 4 bits (plus a fifth from qh for Q5_K).
 * Q6_K: sixteen sub-blocks of 16, x = (d * sc) * (q - 32), with int8 sc per sub-block and one f16 d.
 * Q8_K: x = d * q, f32 d, plus the sum of each 16 levels for dot products.
 */
#include "model/quant-impl.h"

/* ==== Q4_K / Q5_K scale packing ==== */

/* Bytes 0-3: low 6 bits sc[0..3], top 2 bits the high bits of sc[4..7]. Bytes 4-7: likewise for m. Bytes 8-11: low
 * nibble the low 4 bits of sc[4..7], high nibble those of m[4..7]. */
static void get_scale_min(const uint8_t *scales, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (scales[j + 4] & 0x0f) | (scales[j - 4] >> 6) << 4;
        *m = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4;
    }
}

static void pack_scale_min(const uint8_t sc[8], const uint8_t m[8], uint8_t *scales) {
    for (int j = 0; j < 4; j++) {
        scales[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        scales[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        scales[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | (m[j + 4] & 0x0f) << 4);
    }
}

/* ==== Dequantisation ==== */

void ty__q4_K_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        struct ty_block_q4_K blk;
        TY_LOAD_BLOCK(blk, src, b);
        float d = ty__f16_to_f32(blk.d), dmin = ty__f16_to_f32(blk.dmin);
        for (int j = 0; j < 8; j++, dst += 32) {
            int sc, m;
            get_scale_min(blk.scales, j, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            const uint8_t *qs = blk.qs + 32 * (j / 2); /* even sub-blocks in the low nibbles, odd in the high */
            int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) dst[l] = d1 * (float)((qs[l] >> shift) & 0x0f) - m1;
        }
    }
}

void ty__q5_K_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        struct ty_block_q5_K blk;
        TY_LOAD_BLOCK(blk, src, b);
        float d = ty__f16_to_f32(blk.d), dmin = ty__f16_to_f32(blk.dmin);
        for (int j = 0; j < 8; j++, dst += 32) {
            int sc, m;
            get_scale_min(blk.scales, j, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            const uint8_t *qs = blk.qs + 32 * (j / 2);
            int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) { /* bit j of qh[l] is the fifth bit of element l of sub-block j */
                int q = ((qs[l] >> shift) & 0x0f) | ((blk.qh[l] >> j) & 1) << 4;
                dst[l] = d1 * (float)q - m1;
            }
        }
    }
}

/* Q6_K element e of half h (e in 0..127, group g = e / 32, l = e % 32): the low 4 bits are in ql[64h + 32(g%2) + l]
 * (low nibble for g < 2, high nibble otherwise), the top 2 bits are bits 2g..2g+1 of qh[32h + l]. */
void ty__q6_K_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK_K; b++, dst += TY_QK_K) {
        struct ty_block_q6_K blk;
        TY_LOAD_BLOCK(blk, src, b);
        float d = ty__f16_to_f32(blk.d);
        for (int e = 0; e < TY_QK_K; e++) {
            int h = e / 128, g = (e % 128) / 32, l = e % 32;
            int lo = (blk.ql[64 * h + 32 * (g % 2) + l] >> (g < 2 ? 0 : 4)) & 0x0f;
            int hi = (blk.qh[32 * h + l] >> (2 * g)) & 3;
            float ds = d * (float)blk.scales[e / 16];
            dst[e] = ds * (float)((lo | hi << 4) - 32);
        }
    }
}

void ty__q8_K_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK_K; b++, dst += TY_QK_K) {
        struct ty_block_q8_K blk;
        TY_LOAD_BLOCK(blk, src, b);
        for (int j = 0; j < TY_QK_K; j++) dst[j] = blk.d * (float)blk.qs[j];
    }
}

/* ==== Q4_K / Q5_K quantisation ==== */

/* Levels of one sub-block for effective scale d1 and minimum m1 (as dequantisation computes them); returns the
 * squared error. */
static double affine_sub_block(const float *x, float d1, float m1, int qmax, uint8_t *q) {
    double err = 0;
    for (int l = 0; l < 32; l++) {
        q[l] = (uint8_t)(d1 > 0 ? ty__quant_round((x[l] + m1) / d1, 0, qmax) : 0);
        float y = d1 * (float)q[l] - m1;
        err += (double)(y - x[l]) * (y - x[l]);
    }
    return err;
}

/* One super-block of Q4_K (qmax 15) or Q5_K (qmax 31).
 *
 * 1. Fit each sub-block on its own (affine, offset <= 0): its ideal scale s_j and minimum n_j.
 * 2. Quantise them against the super-block scales d = max s / 63 and dmin = max n / 63 (stored as f16).
 * 3. Refine: the least-squares (d, dmin) for the current 6-bit scales and levels, kept when it lowers the error; then
 *    for each sub-block, the best of the 3x3 neighbouring (sc, m) pairs, its levels re-rounded for each.
 * The result is the lowest-error encoding found; every candidate is scored with the exact dequantisation arithmetic.
 */
static void quantize_block_qk(const float *x, int qmax, ty_f16 *d_out, ty_f16 *dmin_out, uint8_t sc[8], uint8_t mn[8],
                              uint8_t q[TY_QK_K]) {
    float s[8], nmin[8], max_s = 0, max_n = 0;
    for (int j = 0; j < 8; j++) {
        float m;
        ty__quant_fit_affine(32, x + 32 * j, NULL, qmax, true, q + 32 * j, &s[j], &m);
        nmin[j] = -m;
        max_s = fmaxf(max_s, s[j]);
        max_n = fmaxf(max_n, nmin[j]);
    }
    ty_f16 dh = ty__quant_scale_f16(max_s / 63.0f), dminh = ty__quant_scale_f16(max_n / 63.0f);
    float d = ty__f16_to_f32(dh), dmin = ty__f16_to_f32(dminh);
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(d > 0 ? ty__quant_round(s[j] / d, 0, 63) : 0);
        mn[j] = (uint8_t)(dmin > 0 ? ty__quant_round(nmin[j] / dmin, 0, 63) : 0);
    }
    double err = 0;
    for (int j = 0; j < 8; j++)
        err += affine_sub_block(x + 32 * j, d * (float)sc[j], dmin * (float)mn[j], qmax, q + 32 * j);

    for (int iter = 0; iter < 2; iter++) {
        /* Least squares over the super-block: x ~ d * (sc_j q) - dmin * m_j. */
        double aa = 0, ab = 0, bb = 0, ax = 0, bx = 0;
        for (int i = 0; i < TY_QK_K; i++) {
            double a = (double)sc[i / 32] * q[i], bv = mn[i / 32];
            aa += a * a, ab += a * bv, bb += bv * bv, ax += a * x[i], bx += bv * x[i];
        }
        double det = aa * bb - ab * ab;
        if (det > 0) {
            double nd = (ax * bb - bx * ab) / det, ndmin = (ax * ab - bx * aa) / det; /* x ~ nd a - ndmin b */
            if (nd > 0 && ndmin >= 0) {
                ty_f16 ndh = ty__quant_scale_f16((float)nd), ndminh = ty__quant_scale_f16((float)ndmin);
                float fd = ty__f16_to_f32(ndh), fdmin = ty__f16_to_f32(ndminh);
                uint8_t nq[TY_QK_K];
                double nerr = 0;
                for (int j = 0; j < 8; j++)
                    nerr += affine_sub_block(x + 32 * j, fd * (float)sc[j], fdmin * (float)mn[j], qmax, nq + 32 * j);
                if (nerr < err) {
                    err = nerr, dh = ndh, dminh = ndminh, d = fd, dmin = fdmin;
                    memcpy(q, nq, TY_QK_K);
                }
            }
        }
        /* Local search over each sub-block's 6-bit scale and minimum. */
        err = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t nq[32];
            double best = affine_sub_block(x + 32 * j, d * (float)sc[j], dmin * (float)mn[j], qmax, q + 32 * j);
            int best_sc = sc[j], best_m = mn[j];
            for (int ds = -1; ds <= 1; ds++) {
                for (int dm = -1; dm <= 1; dm++) {
                    int c = sc[j] + ds, m = mn[j] + dm;
                    if ((ds == 0 && dm == 0) || c < 0 || c > 63 || m < 0 || m > 63) continue;
                    double e = affine_sub_block(x + 32 * j, d * (float)c, dmin * (float)m, qmax, nq);
                    if (e < best) {
                        best = e, best_sc = c, best_m = m;
                        memcpy(q + 32 * j, nq, 32);
                    }
                }
            }
            sc[j] = (uint8_t)best_sc, mn[j] = (uint8_t)best_m;
            err += best;
        }
    }
    *d_out = dh;
    *dmin_out = dminh;
}

void ty__q4_K_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK_K; b++, src += TY_QK_K) {
        struct ty_block_q4_K blk;
        uint8_t sc[8], mn[8], q[TY_QK_K];
        quantize_block_qk(src, 15, &blk.d, &blk.dmin, sc, mn, q);
        pack_scale_min(sc, mn, blk.scales);
        for (int p = 0; p < 4; p++) /* sub-blocks 2p and 2p+1 share 32 bytes: low and high nibbles */
            for (int l = 0; l < 32; l++) blk.qs[32 * p + l] = (uint8_t)(q[64 * p + l] | q[64 * p + 32 + l] << 4);
        TY_STORE_BLOCK(dst, b, blk);
    }
}

void ty__q5_K_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK_K; b++, src += TY_QK_K) {
        struct ty_block_q5_K blk;
        uint8_t sc[8], mn[8], q[TY_QK_K];
        quantize_block_qk(src, 31, &blk.d, &blk.dmin, sc, mn, q);
        pack_scale_min(sc, mn, blk.scales);
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++)
                blk.qs[32 * p + l] = (uint8_t)((q[64 * p + l] & 0x0f) | (q[64 * p + 32 + l] & 0x0f) << 4);
        for (int l = 0; l < 32; l++) {
            uint8_t h = 0;
            for (int j = 0; j < 8; j++) h |= (uint8_t)(((q[32 * j + l] >> 4) & 1) << j);
            blk.qh[l] = h;
        }
        TY_STORE_BLOCK(dst, b, blk);
    }
}

/* ==== Q6_K quantisation ==== */

/* Levels (-32..31) of one 16-element sub-block for effective scale d1; returns the squared error. */
static double sym_sub_block(const float *x, float d1, int8_t *q) {
    double err = 0;
    for (int l = 0; l < 16; l++) {
        q[l] = (int8_t)(d1 != 0 ? ty__quant_round(x[l] / d1, -32, 31) : 0);
        float y = d1 * (float)q[l];
        err += (double)(y - x[l]) * (y - x[l]);
    }
    return err;
}

/* The same plan as Q4_K: per-sub-block symmetric fits, their scales quantised to int8 against one f16 d (the largest
 * goes to -128, the wider end), a least-squares d for the result, and a +-1 search over each sub-block's scale. */
static void quantize_block_q6_K(const float *x, ty_f16 *d_out, int8_t sc[16], int8_t q[TY_QK_K]) {
    float s[16], smax = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        s[j] = ty__quant_fit_sym(16, x + 16 * j, NULL, -32, 31, q + 16 * j);
        if (fabsf(s[j]) > amax) amax = fabsf(s[j]), smax = s[j];
    }
    ty_f16 dh = ty__quant_scale_f16(smax / -128.0f);
    float d = ty__f16_to_f32(dh);
    for (int j = 0; j < 16; j++) sc[j] = (int8_t)(d != 0 ? ty__quant_round(s[j] / d, -128, 127) : 0);
    double err = 0;
    for (int j = 0; j < 16; j++) err += sym_sub_block(x + 16 * j, d * (float)sc[j], q + 16 * j);

    for (int iter = 0; iter < 2; iter++) {
        double aa = 0, ax = 0;
        for (int i = 0; i < TY_QK_K; i++) {
            double a = (double)sc[i / 16] * q[i];
            aa += a * a, ax += a * x[i];
        }
        if (aa > 0) {
            ty_f16 ndh = ty__quant_scale_f16((float)(ax / aa));
            float fd = ty__f16_to_f32(ndh);
            int8_t nq[TY_QK_K];
            double nerr = 0;
            for (int j = 0; j < 16; j++) nerr += sym_sub_block(x + 16 * j, fd * (float)sc[j], nq + 16 * j);
            if (nerr < err) {
                err = nerr, dh = ndh, d = fd;
                memcpy(q, nq, TY_QK_K);
            }
        }
        err = 0;
        for (int j = 0; j < 16; j++) {
            int8_t nq[16];
            double best = sym_sub_block(x + 16 * j, d * (float)sc[j], q + 16 * j);
            int best_sc = sc[j];
            for (int c = sc[j] - 1; c <= sc[j] + 1; c += 2) {
                if (c < -128 || c > 127) continue;
                double e = sym_sub_block(x + 16 * j, d * (float)c, nq);
                if (e < best) {
                    best = e, best_sc = c;
                    memcpy(q + 16 * j, nq, 16);
                }
            }
            sc[j] = (int8_t)best_sc;
            err += best;
        }
    }
    *d_out = dh;
}

void ty__q6_K_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK_K; b++, src += TY_QK_K) {
        struct ty_block_q6_K blk;
        int8_t q[TY_QK_K];
        quantize_block_q6_K(src, &blk.d, blk.scales, q);
        uint8_t u[TY_QK_K]; /* stored levels 0..63 */
        for (int i = 0; i < TY_QK_K; i++) u[i] = (uint8_t)(q[i] + 32);
        for (int h = 0; h < 2; h++) {
            const uint8_t *v = u + 128 * h;
            for (int l = 0; l < 32; l++) {
                blk.ql[64 * h + l] = (uint8_t)((v[l] & 0x0f) | (v[64 + l] & 0x0f) << 4);
                blk.ql[64 * h + 32 + l] = (uint8_t)((v[32 + l] & 0x0f) | (v[96 + l] & 0x0f) << 4);
                blk.qh[32 * h + l] =
                    (uint8_t)(v[l] >> 4 | (v[32 + l] >> 4) << 2 | (v[64 + l] >> 4) << 4 | (v[96 + l] >> 4) << 6);
            }
        }
        TY_STORE_BLOCK(dst, b, blk);
    }
}

/* ==== Q8_K (activations) ==== */

/* Activations are quantised on every token, so this is the plain max-magnitude scale, levels kept in -127..127 so a
 * dot-product kernel may negate them without overflow. bsums lets a kernel fold a weight block's minimum in once per
 * 16 levels. */
void ty__q8_K_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK_K; b++, src += TY_QK_K) {
        struct ty_block_q8_K blk;
        float amax = 0;
        for (int j = 0; j < TY_QK_K; j++) amax = fmaxf(amax, fabsf(src[j]));
        float iscale = amax > 0 && isfinite(amax) ? 127.0f / amax : 0;
        blk.d = iscale != 0 ? 1.0f / iscale : 0;
        for (int j = 0; j < TY_QK_K; j++) blk.qs[j] = (int8_t)ty__quant_round(iscale * src[j], -127, 127);
        for (int g = 0; g < TY_QK_K / 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += blk.qs[16 * g + l];
            blk.bsums[g] = (int16_t)sum;
        }
        TY_STORE_BLOCK(dst, b, blk);
    }
}
