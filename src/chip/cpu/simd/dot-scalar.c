/*
 * dot-scalar.c - the scalar reference of the kernel library: the activation quantisers and one dot product per
 * (weight type, activation format) pairing, in plain C, plus the scalar path's table (gemv and gemm as loops of
 * dots). Every SIMD kernel is tested against these, so they are written to be read: one block at a time, integer sums
 * exact, then one f32 multiply-add per block.
 *
 * The sums each pairing computes (dx, sx: a Q8 block's scale and sum of levels; per-16 sums bs for Q8_K):
 *   Q8_0            sum_b dw_b dx_b S_b,                 S_b = sum q a over the block
 *   Q4_0 / Q5_0     sum_b dw_b dx_b (S_b - off sx_b),    S_b = sum u a (u the stored 4/5-bit level, off 8 / 16)
 *   Q4_1 / Q5_1     sum_b dw_b dx_b S_b + m_b dx_b sx_b
 *   Q4_K / Q5_K     sum_B d dx (sum_j sc_j S_j) - dmin dx (sum_j m_j (bs_2j + bs_2j+1))   (sub-blocks of 32)
 *   Q6_K            sum_B d dx sum_j sc_j (S_j - 32 bs_j)                                   (sub-blocks of 16)
 * which equal the dot of the dequantised weights with the dequantised activations, up to f32 rounding.
 */
#include "chip/cpu/simd/simd-impl.h"

#include <math.h>

/* No contraction here: the reference rounds after each operation, whatever the compiler. */
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

/* ==== Activation quantisers ==== */

void ty__quantize_act_f32(const float *x, void *xq, int64_t n) {
    memcpy(xq, x, (size_t)n * sizeof(float));
}

void ty__quantize_act_bf16(const float *x, void *xq, int64_t n) {
    ty_bf16 *y = xq;
    for (int64_t i = 0; i < n; i++) y[i] = ty__f32_to_bf16(x[i]);
}

/* Rounds like ty__quant_round (nearest, ties to even; NaN to the low end), which SIMD code reproduces with
 * max(v, -127), min(v, 127) and a round-to-nearest conversion. */
static int8_t round_level(float v) {
    if (!(v >= -127.0f)) v = -127.0f;
    if (v > 127.0f) v = 127.0f;
    return (int8_t)rintf(v);
}

void ty__quantize_act_q8(const float *x, void *xq, int64_t n) {
    struct ty_q8_act a = ty__q8_act(xq, n);
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) {
            float v = fabsf(x[j]);
            if (v > amax) amax = v; /* NaN never wins, as in vmaxps(|x|, amax) */
        }
        float iscale = ty__q8_act_iscale(amax);
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            int8_t q = iscale != 0 ? round_level(iscale * x[j]) : 0;
            a.qs[32 * b + j] = q;
            sum += q;
        }
        a.d[b] = iscale != 0 ? 1.0f / iscale : 0.0f;
        a.sum[b] = sum;
    }
}

void ty__quantize_act_q8_K(const float *x, void *xq, int64_t n) {
    ty__type_traits(TY_TYPE_Q8_K)->from_float(x, xq, n);
}

void ty__quantize_act_ref(enum ty_act_format act, const float *x, void *xq, int64_t n) {
    switch (act) {
    case TY_ACT_F32:
        ty__quantize_act_f32(x, xq, n);
        return;
    case TY_ACT_BF16:
        ty__quantize_act_bf16(x, xq, n);
        return;
    case TY_ACT_Q8:
        ty__quantize_act_q8(x, xq, n);
        return;
    case TY_ACT_Q8_K:
        ty__quantize_act_q8_K(x, xq, n);
        return;
    case TY_ACT_NONE:
        break;
    }
    TY_ASSERT(!"activation format without a quantiser");
}

size_t ty__act_row_size(enum ty_act_format fmt, int64_t n) {
    size_t un = (size_t)n;
    switch (fmt) {
    case TY_ACT_F32:
        return ty__round_up(un * 4, TY_ACT_ALIGN);
    case TY_ACT_BF16:
        return ty__round_up(un * 2, TY_ACT_ALIGN);
    case TY_ACT_Q8:
        return ty__round_up(un, TY_ACT_ALIGN) + 2 * ty__round_up(un / 32 * 4, TY_ACT_ALIGN);
    case TY_ACT_Q8_K:
        return ty__round_up(un / TY_QK_K * sizeof(struct ty_block_q8_K), TY_ACT_ALIGN);
    case TY_ACT_NONE:
        break;
    }
    return 0;
}

/* ==== Dot products ==== */

static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float dot_f32(int64_t n, const void *w, const float *x) {
    const uint8_t *p = w;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        sum += v * x[i];
    }
    return sum;
}

static float dot_f16(int64_t n, const void *w, const float *x) {
    const uint8_t *p = w;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        ty_f16 h;
        memcpy(&h, p + 2 * i, 2);
        sum += ty__f16_to_f32(h) * x[i];
    }
    return sum;
}

static float dot_bf16(int64_t n, const void *w, const float *x) {
    const uint8_t *p = w;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        ty_bf16 h;
        memcpy(&h, p + 2 * i, 2);
        sum += ty__bf16_to_f32(h) * x[i];
    }
    return sum;
}

static float dot_bf16_bf16(int64_t n, const void *w, const ty_bf16 *x) {
    const uint8_t *p = w;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        ty_bf16 h;
        memcpy(&h, p + 2 * i, 2);
        sum += ty__bf16_to_f32(h) * ty__bf16_to_f32(x[i]);
    }
    return sum;
}

static float dot_q8_0(int64_t n, const void *w, struct ty_q8_act a) {
    float sum = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        struct ty_block_q8_0 blk;
        TY_SIMD_LOAD(blk, w, b);
        int32_t s = 0;
        for (int j = 0; j < 32; j++) s += blk.qs[j] * a.qs[32 * b + j];
        sum += ty__f16_to_f32(blk.d) * a.d[b] * (float)s;
    }
    return sum;
}

/* The 4/5-bit level j of a 32-element block: byte j & 15 of qs holds element j (low nibble) and j + 16 (high). */
static int nibble(const uint8_t *qs, int j) {
    return j < 16 ? qs[j] & 0x0f : qs[j - 16] >> 4;
}

static float dot_q4_0(int64_t n, const void *w, struct ty_q8_act a) {
    float sum = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        struct ty_block_q4_0 blk;
        TY_SIMD_LOAD(blk, w, b);
        int32_t s = 0;
        for (int j = 0; j < 32; j++) s += nibble(blk.qs, j) * a.qs[32 * b + j];
        sum += ty__f16_to_f32(blk.d) * a.d[b] * (float)(s - 8 * a.sum[b]);
    }
    return sum;
}

static float dot_q4_1(int64_t n, const void *w, struct ty_q8_act a) {
    float sum = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        struct ty_block_q4_1 blk;
        TY_SIMD_LOAD(blk, w, b);
        int32_t s = 0;
        for (int j = 0; j < 32; j++) s += nibble(blk.qs, j) * a.qs[32 * b + j];
        sum += ty__f16_to_f32(blk.d) * a.d[b] * (float)s + ty__f16_to_f32(blk.m) * a.d[b] * (float)a.sum[b];
    }
    return sum;
}

static float dot_q5_0(int64_t n, const void *w, struct ty_q8_act a) {
    float sum = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        struct ty_block_q5_0 blk;
        TY_SIMD_LOAD(blk, w, b);
        uint32_t qh = load_u32(blk.qh);
        int32_t s = 0;
        for (int j = 0; j < 32; j++) s += (nibble(blk.qs, j) | (int)((qh >> j) & 1) << 4) * a.qs[32 * b + j];
        sum += ty__f16_to_f32(blk.d) * a.d[b] * (float)(s - 16 * a.sum[b]);
    }
    return sum;
}

static float dot_q5_1(int64_t n, const void *w, struct ty_q8_act a) {
    float sum = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        struct ty_block_q5_1 blk;
        TY_SIMD_LOAD(blk, w, b);
        uint32_t qh = load_u32(blk.qh);
        int32_t s = 0;
        for (int j = 0; j < 32; j++) s += (nibble(blk.qs, j) | (int)((qh >> j) & 1) << 4) * a.qs[32 * b + j];
        sum += ty__f16_to_f32(blk.d) * a.d[b] * (float)s + ty__f16_to_f32(blk.m) * a.d[b] * (float)a.sum[b];
    }
    return sum;
}

/* The 6-bit scale and minimum of sub-block j of a Q4_K / Q5_K block (the packing of quant-k.c). */
static void k_scale_min(const uint8_t *scales, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (scales[j + 4] & 0x0f) | (scales[j - 4] >> 6) << 4;
        *m = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4;
    }
}

/* Q4_K and Q5_K: qh NULL for Q4_K. Sub-block j: element l is nibble (j % 2) of qs[32 (j / 2) + l], plus bit j of
 * qh[l] as the fifth bit. */
static float dot_qk(int64_t n, const void *w, const void *xq, bool five) {
    const struct ty_block_q8_K *y = xq;
    float sum = 0;
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        const uint8_t *scales, *qs, *qh = NULL;
        float d, dmin;
        struct ty_block_q4_K b4;
        struct ty_block_q5_K b5;
        if (five) {
            TY_SIMD_LOAD(b5, w, b);
            scales = b5.scales, qs = b5.qs, qh = b5.qh;
            d = ty__f16_to_f32(b5.d), dmin = ty__f16_to_f32(b5.dmin);
        } else {
            TY_SIMD_LOAD(b4, w, b);
            scales = b4.scales, qs = b4.qs;
            d = ty__f16_to_f32(b4.d), dmin = ty__f16_to_f32(b4.dmin);
        }
        int32_t isc = 0, imin = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            k_scale_min(scales, j, &sc, &m);
            int32_t s = 0;
            for (int l = 0; l < 32; l++) {
                int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f;
                if (qh) q |= ((qh[l] >> j) & 1) << 4;
                s += q * y[b].qs[32 * j + l];
            }
            isc += sc * s;
            imin += m * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        sum += d * y[b].d * (float)isc - dmin * y[b].d * (float)imin;
    }
    return sum;
}

static float dot_q6_K(int64_t n, const void *w, const void *xq) {
    const struct ty_block_q8_K *y = xq;
    float sum = 0;
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        struct ty_block_q6_K blk;
        TY_SIMD_LOAD(blk, w, b);
        int32_t isc = 0;
        for (int j = 0; j < 16; j++) {
            int32_t s = 0;
            for (int l = 0; l < 16; l++) {
                int e = 16 * j + l, h = e / 128, g = (e % 128) / 32, k = e % 32;
                int lo = (blk.ql[64 * h + 32 * (g % 2) + k] >> (g < 2 ? 0 : 4)) & 0x0f;
                int hi = (blk.qh[32 * h + k] >> (2 * g)) & 3;
                s += (lo | hi << 4) * y[b].qs[e];
            }
            isc += blk.scales[j] * (s - 32 * y[b].bsums[j]);
        }
        sum += ty__f16_to_f32(blk.d) * y[b].d * (float)isc;
    }
    return sum;
}

float ty__dot_ref(enum ty_type type, enum ty_act_format act, int64_t n, const void *w, const void *xq) {
    switch (type) {
    case TY_TYPE_F32:
        TY_ASSERT(act == TY_ACT_F32);
        return dot_f32(n, w, xq);
    case TY_TYPE_F16:
        TY_ASSERT(act == TY_ACT_F32);
        return dot_f16(n, w, xq);
    case TY_TYPE_BF16:
        TY_ASSERT(act == TY_ACT_F32 || act == TY_ACT_BF16);
        return act == TY_ACT_F32 ? dot_bf16(n, w, xq) : dot_bf16_bf16(n, w, xq);
    case TY_TYPE_Q8_0:
        TY_ASSERT(act == TY_ACT_Q8);
        return dot_q8_0(n, w, ty__q8_act(xq, n));
    case TY_TYPE_Q4_0:
        TY_ASSERT(act == TY_ACT_Q8);
        return dot_q4_0(n, w, ty__q8_act(xq, n));
    case TY_TYPE_Q4_1:
        TY_ASSERT(act == TY_ACT_Q8);
        return dot_q4_1(n, w, ty__q8_act(xq, n));
    case TY_TYPE_Q5_0:
        TY_ASSERT(act == TY_ACT_Q8);
        return dot_q5_0(n, w, ty__q8_act(xq, n));
    case TY_TYPE_Q5_1:
        TY_ASSERT(act == TY_ACT_Q8);
        return dot_q5_1(n, w, ty__q8_act(xq, n));
    case TY_TYPE_Q4_K:
        TY_ASSERT(act == TY_ACT_Q8_K);
        return dot_qk(n, w, xq, false);
    case TY_TYPE_Q5_K:
        TY_ASSERT(act == TY_ACT_Q8_K);
        return dot_qk(n, w, xq, true);
    case TY_TYPE_Q6_K:
        TY_ASSERT(act == TY_ACT_Q8_K);
        return dot_q6_K(n, w, xq);
    default:
        break;
    }
    TY_ASSERT(!"weight type without a reference dot product");
    return 0;
}

/* ==== The scalar path ==== */

#define SCALAR_KERNELS(T, ACT, name)                                                                                   \
    static void gemv_##name(int64_t n, int64_t rows, const void *w, size_t w_stride, const void *xq, float *out) {     \
        for (int64_t r = 0; r < rows; r++) out[r] = ty__dot_ref(T, ACT, n, (const char *)w + r * w_stride, xq);        \
    }                                                                                                                  \
    static void gemm_##name(int64_t n, int64_t rows, const void *w, size_t w_stride, int64_t cols, const void *xq,     \
                            size_t x_stride, float *out, int64_t ld_out, void *scratch) {                              \
        (void)scratch;                                                                                                 \
        for (int64_t c = 0; c < cols; c++)                                                                             \
            gemv_##name(n, rows, w, w_stride, (const char *)xq + c * x_stride, out + c * ld_out);                      \
    }

SCALAR_KERNELS(TY_TYPE_F32, TY_ACT_F32, f32)
SCALAR_KERNELS(TY_TYPE_F16, TY_ACT_F32, f16)
SCALAR_KERNELS(TY_TYPE_BF16, TY_ACT_F32, bf16)
SCALAR_KERNELS(TY_TYPE_Q8_0, TY_ACT_Q8, q8_0)
SCALAR_KERNELS(TY_TYPE_Q4_0, TY_ACT_Q8, q4_0)
SCALAR_KERNELS(TY_TYPE_Q4_1, TY_ACT_Q8, q4_1)
SCALAR_KERNELS(TY_TYPE_Q5_0, TY_ACT_Q8, q5_0)
SCALAR_KERNELS(TY_TYPE_Q5_1, TY_ACT_Q8, q5_1)
SCALAR_KERNELS(TY_TYPE_Q4_K, TY_ACT_Q8_K, q4_K)
SCALAR_KERNELS(TY_TYPE_Q5_K, TY_ACT_Q8_K, q5_K)
SCALAR_KERNELS(TY_TYPE_Q6_K, TY_ACT_Q8_K, q6_K)

static void set(struct ty_simd *s, enum ty_type t, enum ty_act_format act, ty_quantize_act_fn q, ty_gemv_fn gemv,
                ty_gemm_fn gemm) {
    s->t[t] = (struct ty_simd_type){act, q, gemv, gemm, "scalar", "scalar", NULL, NULL, false};
}

void ty__simd_fill_scalar(struct ty_simd *s) {
    set(s, TY_TYPE_F32, TY_ACT_F32, ty__quantize_act_f32, gemv_f32, gemm_f32);
    set(s, TY_TYPE_F16, TY_ACT_F32, ty__quantize_act_f32, gemv_f16, gemm_f16);
    set(s, TY_TYPE_BF16, TY_ACT_F32, ty__quantize_act_f32, gemv_bf16, gemm_bf16);
    set(s, TY_TYPE_Q8_0, TY_ACT_Q8, ty__quantize_act_q8, gemv_q8_0, gemm_q8_0);
    set(s, TY_TYPE_Q4_0, TY_ACT_Q8, ty__quantize_act_q8, gemv_q4_0, gemm_q4_0);
    set(s, TY_TYPE_Q4_1, TY_ACT_Q8, ty__quantize_act_q8, gemv_q4_1, gemm_q4_1);
    set(s, TY_TYPE_Q5_0, TY_ACT_Q8, ty__quantize_act_q8, gemv_q5_0, gemm_q5_0);
    set(s, TY_TYPE_Q5_1, TY_ACT_Q8, ty__quantize_act_q8, gemv_q5_1, gemm_q5_1);
    set(s, TY_TYPE_Q4_K, TY_ACT_Q8_K, ty__quantize_act_q8_K, gemv_q4_K, gemm_q4_K);
    set(s, TY_TYPE_Q5_K, TY_ACT_Q8_K, ty__quantize_act_q8_K, gemv_q5_K, gemm_q5_K);
    set(s, TY_TYPE_Q6_K, TY_ACT_Q8_K, ty__quantize_act_q8_K, gemv_q6_K, gemm_q6_K);
    ty__simd_fill_packed_scalar(s);
}
