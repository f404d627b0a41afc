/*
 * quant-blocks.c - the 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: reference dequantisation, exactly
 * as the GGUF format defines it, and quantisation through the scale searches of quant-search.c.
 *
 * Layout shared by the 4- and 5-bit formats: byte j of qs holds element j in its low nibble and element j + 16 in its
 * high nibble; for the 5-bit formats bit j of the little-endian 32-bit qh is the fifth bit of element j. The "_0"
 * formats are symmetric (x = d * (q - 8) or d * (q - 16)); the "_1" formats are affine (x = d * q + m).
 */
#include "model/quant-impl.h"

static uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void store_qh(uint8_t qh[4], uint32_t v) {
    for (int i = 0; i < 4; i++) qh[i] = (uint8_t)(v >> (8 * i));
}

/* ==== Dequantisation ==== */

void ty__q4_0_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK4_0; b++, dst += TY_QK4_0) {
        struct ty_block_q4_0 blk;
        TY_LOAD_BLOCK(blk, src, b);
        float d = ty__f16_to_f32(blk.d);
        for (int j = 0; j < TY_QK4_0 / 2; j++) {
            dst[j] = d * (float)((blk.qs[j] & 0x0f) - 8);
            dst[j + TY_QK4_0 / 2] = d * (float)((blk.qs[j] >> 4) - 8);
        }
    }
}

void ty__q4_1_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK4_0; b++, dst += TY_QK4_0) {
        struct ty_block_q4_1 blk;
        TY_LOAD_BLOCK(blk, src, b);
        float d = ty__f16_to_f32(blk.d), m = ty__f16_to_f32(blk.m);
        for (int j = 0; j < TY_QK4_0 / 2; j++) {
            dst[j] = d * (float)(blk.qs[j] & 0x0f) + m;
            dst[j + TY_QK4_0 / 2] = d * (float)(blk.qs[j] >> 4) + m;
        }
    }
}

void ty__q5_0_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK4_0; b++, dst += TY_QK4_0) {
        struct ty_block_q5_0 blk;
        TY_LOAD_BLOCK(blk, src, b);
        float d = ty__f16_to_f32(blk.d);
        uint32_t qh = load_qh(blk.qh);
        for (int j = 0; j < TY_QK4_0 / 2; j++) {
            int lo = (blk.qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            int hi = (blk.qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)(lo - 16);
            dst[j + TY_QK4_0 / 2] = d * (float)(hi - 16);
        }
    }
}

void ty__q5_1_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK4_0; b++, dst += TY_QK4_0) {
        struct ty_block_q5_1 blk;
        TY_LOAD_BLOCK(blk, src, b);
        float d = ty__f16_to_f32(blk.d), m = ty__f16_to_f32(blk.m);
        uint32_t qh = load_qh(blk.qh);
        for (int j = 0; j < TY_QK4_0 / 2; j++) {
            int lo = (blk.qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
            int hi = (blk.qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)lo + m;
            dst[j + TY_QK4_0 / 2] = d * (float)hi + m;
        }
    }
}

void ty__q8_0_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK8_0; b++, dst += TY_QK8_0) {
        struct ty_block_q8_0 blk;
        TY_LOAD_BLOCK(blk, src, b);
        float d = ty__f16_to_f32(blk.d);
        for (int j = 0; j < TY_QK8_0; j++) dst[j] = d * (float)blk.qs[j];
    }
}

/* ==== Quantisation ==== */

/* Symmetric 4/5-bit block: stored levels are q + offset, offset = -qmin. */
static float quantize_sym_block(const float *x, int qmin, int qmax, uint8_t *levels) {
    int8_t q[TY_QK4_0];
    float d = ty__quant_fit_sym(TY_QK4_0, x, NULL, qmin, qmax, q);
    /* Round to the levels of the scale that is actually stored (f16), so the rounding error of d is not doubled. */
    float df = ty__f16_to_f32(ty__quant_scale_f16(d));
    for (int j = 0; j < TY_QK4_0; j++)
        levels[j] = (uint8_t)(df != 0 ? ty__quant_round(x[j] / df, qmin, qmax) - qmin : -qmin);
    return df;
}

/* Affine 4/5-bit block: x ~ d q + m. */
static void quantize_affine_block(const float *x, int qmax, uint8_t *levels, ty_f16 *d_out, ty_f16 *m_out) {
    float d, m;
    ty__quant_fit_affine(TY_QK4_0, x, NULL, qmax, false, levels, &d, &m);
    *d_out = ty__quant_scale_f16(d);
    *m_out = ty__quant_scale_f16(m);
    float df = ty__f16_to_f32(*d_out), mf = ty__f16_to_f32(*m_out);
    for (int j = 0; j < TY_QK4_0; j++) levels[j] = (uint8_t)(df != 0 ? ty__quant_round((x[j] - mf) / df, 0, qmax) : 0);
}

static void pack_nibbles(const uint8_t *levels, uint8_t *qs) {
    for (int j = 0; j < TY_QK4_0 / 2; j++)
        qs[j] = (uint8_t)((levels[j] & 0x0f) | (levels[j + TY_QK4_0 / 2] & 0x0f) << 4);
}

static uint32_t fifth_bits(const uint8_t *levels) {
    uint32_t qh = 0;
    for (int j = 0; j < TY_QK4_0; j++) qh |= (uint32_t)((levels[j] >> 4) & 1) << j;
    return qh;
}

void ty__q4_0_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK4_0; b++, src += TY_QK4_0) {
        struct ty_block_q4_0 blk;
        uint8_t levels[TY_QK4_0];
        blk.d = ty__f32_to_f16(quantize_sym_block(src, -8, 7, levels));
        pack_nibbles(levels, blk.qs);
        TY_STORE_BLOCK(dst, b, blk);
    }
}

void ty__q5_0_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK4_0; b++, src += TY_QK4_0) {
        struct ty_block_q5_0 blk;
        uint8_t levels[TY_QK4_0];
        blk.d = ty__f32_to_f16(quantize_sym_block(src, -16, 15, levels));
        pack_nibbles(levels, blk.qs);
        store_qh(blk.qh, fifth_bits(levels));
        TY_STORE_BLOCK(dst, b, blk);
    }
}

void ty__q4_1_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK4_0; b++, src += TY_QK4_0) {
        struct ty_block_q4_1 blk;
        uint8_t levels[TY_QK4_0];
        quantize_affine_block(src, 15, levels, &blk.d, &blk.m);
        pack_nibbles(levels, blk.qs);
        TY_STORE_BLOCK(dst, b, blk);
    }
}

void ty__q5_1_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK4_0; b++, src += TY_QK4_0) {
        struct ty_block_q5_1 blk;
        uint8_t levels[TY_QK4_0];
        quantize_affine_block(src, 31, levels, &blk.d, &blk.m);
        pack_nibbles(levels, blk.qs);
        store_qh(blk.qh, fifth_bits(levels));
        TY_STORE_BLOCK(dst, b, blk);
    }
}

/* With 255 levels clipping an outlier never pays and rounding error is already tiny, so Q8_0 takes the plain
 * max-magnitude scale; the levels are then rounded against the stored f16 scale. */
void ty__q8_0_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t b = 0; b < n / TY_QK8_0; b++, src += TY_QK8_0) {
        struct ty_block_q8_0 blk;
        float amax = 0;
        for (int j = 0; j < TY_QK8_0; j++) amax = fmaxf(amax, fabsf(src[j]));
        blk.d = ty__quant_scale_f16(amax / 127.0f);
        float df = ty__f16_to_f32(blk.d);
        for (int j = 0; j < TY_QK8_0; j++) blk.qs[j] = (int8_t)(df != 0 ? ty__quant_round(src[j] / df, -127, 127) : 0);
        TY_STORE_BLOCK(dst, b, blk);
    }
}
