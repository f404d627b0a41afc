/*
 * dot-neon.c - the AArch64 kernels: Advanced SIMD with the dot-product extension (sdot, Armv8.2 and later; every
 * Apple M-series, Graviton 2+, Ampere Altra, Cortex-A76+). Weight levels are made signed (4-bit level - 8, and so on)
 * so one sdot multiplies four weight bytes by four activation bytes with no offset correction. F16 weights convert
 * with fcvtl, BF16 ones by a 16-bit shift. The gemm micro-kernel works on int8 panels with sdot by lane: one 16-byte
 * load holds a step of four elements for four rows, and one lane of an activation vector is the matching quad.
 *
 * The file builds with any -march (see sdot below) and only runs where dispatch.c found the feature.
 */
#include "chip/cpu/simd/simd-impl.h"

#if defined(__aarch64__)

#include <arm_neon.h>
#include <math.h>

/* ==== sdot ====
 * With dotprod enabled for the whole build (-march=armv8.2-a+dotprod, or -mcpu/-march=native on such a CPU) nothing
 * is needed. Otherwise gcc reaches the intrinsics through a target attribute on every function here, and the kernels
 * only run where dispatch.c found the feature. clang before 16 hides the dotprod intrinsics unless the build enables
 * them, so there the NEON path exists only in builds for a dotprod CPU. */
#if defined(__ARM_FEATURE_DOTPROD)
#define DOTPROD
#define NEON_DOTPROD 1
#elif defined(__GNUC__) && !defined(__clang__)
#define DOTPROD      __attribute__((target("arch=armv8.2-a+dotprod")))
#define NEON_DOTPROD 1
#else
#define NEON_DOTPROD 0
#endif

#if NEON_DOTPROD

#define INLINE static inline __attribute__((always_inline)) DOTPROD

#define SDOT(acc, a, b) vdotq_s32((acc), (a), (b))
#define SDOT_LANE_FN(lane)                                                                                             \
    INLINE int32x4_t sdot_lane##lane(int32x4_t acc, int8x16_t a, int8x16_t b) {                                        \
        return vdotq_laneq_s32(acc, a, b, lane);                                                                       \
    }
SDOT_LANE_FN(0)
SDOT_LANE_FN(1)
SDOT_LANE_FN(2)
SDOT_LANE_FN(3)

/* ==== Helpers ==== */

INLINE uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
/* A stored f16 as f32, by the hardware conversion (fcvt). */
INLINE float load_f16(const uint8_t *p) {
    __fp16 h;
    memcpy(&h, p, 2);
    return (float)h;
}
INLINE uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* fmaxnm ignores a NaN operand, as the scalar quantisers do. */
INLINE float abs_max(const float *x, int n) {
    float32x4_t m = vdupq_n_f32(0);
    for (int j = 0; j < n; j += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + j)));
    return vmaxnmvq_f32(m);
}

/* ty__quant_round(x * iscale, -127, 127): NaN to -127 (fmaxnm picks the number), ties to even (fcvtns). */
INLINE int32x4_t levels(float32x4_t x, float32x4_t iscale) {
    float32x4_t v = vmaxnmq_f32(vmulq_f32(x, iscale), vdupq_n_f32(-127.0f));
    return vcvtnq_s32_f32(vminnmq_f32(v, vdupq_n_f32(127.0f)));
}

INLINE int8x16_t narrow16(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    int16x8_t lo = vcombine_s16(vmovn_s32(a), vmovn_s32(b)), hi = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
    return vcombine_s8(vmovn_s16(lo), vmovn_s16(hi));
}

/* ==== Activation quantisers ==== */

static DOTPROD void quantize_q8(const float *x, void *xq, int64_t n) {
    struct ty_q8_act a = ty__q8_act(xq, n);
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float iscale = ty__q8_act_iscale(abs_max(xb, 32));
        if (iscale == 0) {
            memset(a.qs + 32 * b, 0, 32);
            a.d[b] = 0, a.sum[b] = 0;
            continue;
        }
        float32x4_t s = vdupq_n_f32(iscale);
        int32x4_t sum = vdupq_n_s32(0);
        for (int j = 0; j < 32; j += 16) {
            int32x4_t q0 = levels(vld1q_f32(xb + j), s), q1 = levels(vld1q_f32(xb + j + 4), s);
            int32x4_t q2 = levels(vld1q_f32(xb + j + 8), s), q3 = levels(vld1q_f32(xb + j + 12), s);
            vst1q_s8(a.qs + 32 * b + j, narrow16(q0, q1, q2, q3));
            sum = vaddq_s32(sum, vaddq_s32(vaddq_s32(q0, q1), vaddq_s32(q2, q3)));
        }
        a.sum[b] = vaddvq_s32(sum);
        a.d[b] = 1.0f / iscale;
    }
}

static DOTPROD void quantize_q8_K(const float *x, void *xq, int64_t n) {
    struct ty_block_q8_K *y = xq;
    for (int64_t b = 0; b < n / TY_QK_K; b++, x += TY_QK_K) {
        float amax = abs_max(x, TY_QK_K);
        float iscale = amax > 0 && isfinite(amax) ? 127.0f / amax : 0;
        float32x4_t s = vdupq_n_f32(iscale);
        for (int j = 0; j < TY_QK_K; j += 16) {
            int32x4_t q0 = levels(vld1q_f32(x + j), s), q1 = levels(vld1q_f32(x + j + 4), s);
            int32x4_t q2 = levels(vld1q_f32(x + j + 8), s), q3 = levels(vld1q_f32(x + j + 12), s);
            vst1q_s8(y[b].qs + j, narrow16(q0, q1, q2, q3));
            y[b].bsums[j / 16] = (int16_t)vaddvq_s32(vaddq_s32(vaddq_s32(q0, q1), vaddq_s32(q2, q3)));
        }
        y[b].d = iscale != 0 ? 1.0f / iscale : 0;
    }
}

/* ==== F32, F16, BF16 weights ==== */

enum fkind { FK_F32, FK_F16, FK_BF16 };

/* Eight weights as two f32 vectors. */
INLINE void load_w8(enum fkind k, const uint8_t *p, int64_t i, float32x4_t *lo, float32x4_t *hi) {
    switch (k) {
    case FK_F32: {
        float t[8];
        memcpy(t, p + 4 * i, 32);
        *lo = vld1q_f32(t), *hi = vld1q_f32(t + 4);
        return;
    }
    case FK_F16: {
        float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(p + 2 * i));
        *lo = vcvt_f32_f16(vget_low_f16(h)), *hi = vcvt_high_f32_f16(h);
        return;
    }
    default: {
        uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8(p + 2 * i));
        *lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
        *hi = vreinterpretq_f32_u32(vshll_high_n_u16(h, 16));
        return;
    }
    }
}

INLINE float load_w1(enum fkind k, const uint8_t *p, int64_t i) {
    if (k == FK_F32) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    uint16_t h = load_u16(p + 2 * i);
    return k == FK_F16 ? load_f16(p + 2 * i) : ty__bf16_to_f32(h);
}

INLINE void rows_float(enum fkind k, int R, int64_t n, const uint8_t *w, size_t ws, const float *x, float *out) {
    float32x4_t acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t x0 = vld1q_f32(x + i), x1 = vld1q_f32(x + i + 4);
        for (int r = 0; r < R; r++) {
            float32x4_t w0, w1;
            load_w8(k, w + r * ws, i, &w0, &w1);
            acc[r][0] = vfmaq_f32(acc[r][0], w0, x0);
            acc[r][1] = vfmaq_f32(acc[r][1], w1, x1);
        }
    }
    for (int r = 0; r < R; r++) {
        float s = vaddvq_f32(vaddq_f32(acc[r][0], acc[r][1]));
        for (int64_t j = i; j < n; j++) s += load_w1(k, w + r * ws, j) * x[j];
        out[r] = s;
    }
}

INLINE void gemv_float(enum fkind k, int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_float(k, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_float(k, 1, n, p + r * ws, ws, xq, out + r);
}

static DOTPROD void gemv_f32(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    gemv_float(FK_F32, n, rows, w, ws, xq, out);
}
static DOTPROD void gemv_f16(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    gemv_float(FK_F16, n, rows, w, ws, xq, out);
}
static DOTPROD void gemv_bf16(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    gemv_float(FK_BF16, n, rows, w, ws, xq, out);
}

/* ==== 32-element types against Q8 activations ==== */

/* Bits 0..15 of qh as 16 in bytes 0..15 (fifth bits of 16 elements). */
INLINE uint8x16_t fifth_bits16(uint32_t bits) {
    static const uint8_t sel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)bits), vdup_n_u8((uint8_t)(bits >> 8)));
    return vandq_u8(vtstq_u8(v, vld1q_u8(sel)), vdupq_n_u8(16));
}

/* Bit st of each of 16 plane bytes as 16 in that byte (packed panels: the fifth bits of step st). */
INLINE uint8x16_t plane_bits16(uint8x16_t planes, int st) {
    return vandq_u8(vtstq_u8(planes, vdupq_n_u8((uint8_t)(1u << st))), vdupq_n_u8(16));
}

/* The integer dot of one block, on four lanes. Levels become signed (minus 8 or 16) for the symmetric types, so no
 * correction is needed; affine types keep 0..15 / 0..31 and report their minimum. */
INLINE int32x4_t block_dot(enum ty_type type, const uint8_t *q, const int8_t *xs, float *m) {
    int8x16_t a0 = vld1q_s8(xs), a1 = vld1q_s8(xs + 16);
    int32x4_t z = vdupq_n_s32(0);
    if (type == TY_TYPE_Q8_0)
        return SDOT(SDOT(z, vld1q_s8((const int8_t *)q + 2), a0), vld1q_s8((const int8_t *)q + 18), a1);
    int qo = type == TY_TYPE_Q4_0 ? 2 : type == TY_TYPE_Q4_1 ? 4 : type == TY_TYPE_Q5_0 ? 6 : 8;
    uint8x16_t v = vld1q_u8(q + qo);
    uint8x16_t lo = vandq_u8(v, vdupq_n_u8(0x0f)), hi = vshrq_n_u8(v, 4);
    if (type == TY_TYPE_Q5_0 || type == TY_TYPE_Q5_1) {
        uint32_t qh = load_u32(q + (type == TY_TYPE_Q5_0 ? 2 : 4));
        lo = vorrq_u8(lo, fifth_bits16(qh)), hi = vorrq_u8(hi, fifth_bits16(qh >> 16));
    }
    if (type == TY_TYPE_Q4_1 || type == TY_TYPE_Q5_1) {
        *m = load_f16(q + 2);
    } else {
        uint8x16_t off = vdupq_n_u8(type == TY_TYPE_Q4_0 ? 8 : 16);
        lo = vsubq_u8(lo, off), hi = vsubq_u8(hi, off);
    }
    return SDOT(SDOT(z, vreinterpretq_s8_u8(lo), a0), vreinterpretq_s8_u8(hi), a1);
}

INLINE void rows_q32(enum ty_type type, int R, int64_t n, const uint8_t *w, size_t ws, struct ty_q8_act a, float *out) {
    const size_t bs = ty__type_traits(type)->type_size;
    const bool affine = type == TY_TYPE_Q4_1 || type == TY_TYPE_Q5_1;
    float32x4_t acc[4];
    float accm[4] = {0, 0, 0, 0};
    for (int r = 0; r < R; r++) acc[r] = vdupq_n_f32(0);
    for (int64_t b = 0; b < n / 32; b++) {
        float dx = a.d[b];
        for (int r = 0; r < R; r++) {
            const uint8_t *q = w + r * ws + b * bs;
            float m = 0;
            int32x4_t s = block_dot(type, q, a.qs + 32 * b, &m);
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(s), load_f16(q) * dx);
            if (affine) accm[r] += m * dx * (float)a.sum[b];
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(acc[r]) + accm[r];
}

INLINE void gemv_q32(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    struct ty_q8_act a = ty__q8_act(xq, n);
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_q32(type, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, a, out + r);
    for (; r < rows; r++) rows_q32(type, 1, n, p + r * ws, ws, a, out + r);
}

#define Q32_GEMV(name, T)                                                                                              \
    static DOTPROD void name(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {          \
        gemv_q32(T, n, rows, w, ws, xq, out);                                                                          \
    }
Q32_GEMV(gemv_q8_0, TY_TYPE_Q8_0)
Q32_GEMV(gemv_q4_0, TY_TYPE_Q4_0)
Q32_GEMV(gemv_q4_1, TY_TYPE_Q4_1)
Q32_GEMV(gemv_q5_0, TY_TYPE_Q5_0)
Q32_GEMV(gemv_q5_1, TY_TYPE_Q5_1)

/* ==== K types against Q8_K activations ==== */

INLINE void k_scales(const uint8_t *s, uint8_t sc[8], uint8_t m[8]) {
    uint32_t u0 = load_u32(s), u1 = load_u32(s + 4), u2 = load_u32(s + 8);
    uint32_t w[4] = {u0 & 0x3f3f3f3f, (u2 & 0x0f0f0f0f) | ((u0 >> 6) & 0x03030303) << 4, u1 & 0x3f3f3f3f,
                     ((u2 >> 4) & 0x0f0f0f0f) | ((u1 >> 6) & 0x03030303) << 4};
    memcpy(sc, w, 8);
    memcpy(m, w + 2, 8);
}

INLINE void rows_qk(bool five, int R, int64_t n, const uint8_t *w, size_t ws, const struct ty_block_q8_K *y,
                    float *out) {
    const size_t bs = five ? sizeof(struct ty_block_q5_K) : sizeof(struct ty_block_q4_K);
    const size_t qs_off = five ? 48 : 16;
    const uint8x16_t low4 = vdupq_n_u8(0x0f), sixteen = vdupq_n_u8(16);
    float32x4_t acc[4];
    float accm[4] = {0, 0, 0, 0};
    for (int r = 0; r < R; r++) acc[r] = vdupq_n_f32(0);
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        int bs32[8];
        for (int j = 0; j < 8; j++) bs32[j] = y[b].bsums[2 * j] + y[b].bsums[2 * j + 1];
        for (int r = 0; r < R; r++) {
            const uint8_t *q = w + r * ws + b * bs;
            uint8_t sc[8], mn[8];
            k_scales(q + 4, sc, mn);
            uint8x16_t qh0 = vdupq_n_u8(0), qh1 = vdupq_n_u8(0);
            if (five) qh0 = vld1q_u8(q + 16), qh1 = vld1q_u8(q + 32);
            int32x4_t isum = vdupq_n_s32(0);
            for (int j = 0; j < 8; j++) { /* sub-block j: nibble (j % 2) of qs[32 (j / 2) .. + 31] */
                const uint8_t *qs = q + qs_off + 32 * (j / 2);
                uint8x16_t v0 = vld1q_u8(qs), v1 = vld1q_u8(qs + 16);
                if (j % 2)
                    v0 = vshrq_n_u8(v0, 4), v1 = vshrq_n_u8(v1, 4);
                else
                    v0 = vandq_u8(v0, low4), v1 = vandq_u8(v1, low4);
                if (five) {
                    uint8x16_t bit = vdupq_n_u8((uint8_t)(1u << j));
                    v0 = vorrq_u8(v0, vandq_u8(vtstq_u8(qh0, bit), sixteen));
                    v1 = vorrq_u8(v1, vandq_u8(vtstq_u8(qh1, bit), sixteen));
                }
                int32x4_t s = SDOT(vdupq_n_s32(0), vreinterpretq_s8_u8(v0), vld1q_s8(y[b].qs + 32 * j));
                s = SDOT(s, vreinterpretq_s8_u8(v1), vld1q_s8(y[b].qs + 32 * j + 16));
                isum = vmlaq_n_s32(isum, s, sc[j]);
            }
            int32_t imin = 0;
            for (int j = 0; j < 8; j++) imin += mn[j] * bs32[j];
            float d = load_f16(q) * y[b].d, dmin = load_f16(q + 2) * y[b].d;
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(isum), d);
            accm[r] += dmin * (float)imin;
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(acc[r]) - accm[r];
}

INLINE void rows_q6_K(int R, int64_t n, const uint8_t *w, size_t ws, const struct ty_block_q8_K *y, float *out) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f), low2 = vdupq_n_u8(3), off = vdupq_n_u8(32);
    float32x4_t acc[4];
    for (int r = 0; r < R; r++) acc[r] = vdupq_n_f32(0);
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *q = w + r * ws + b * sizeof(struct ty_block_q6_K);
            const int8_t *sc = (const int8_t *)(q + 192);
            int32x4_t isum = vdupq_n_s32(0);
            for (int h = 0; h < 2; h++) {
                for (int half = 0; half < 2; half++) { /* elements l = 16 half .. + 15 of each group */
                    uint8x16_t l0 = vld1q_u8(q + 64 * h + 16 * half), l1 = vld1q_u8(q + 64 * h + 32 + 16 * half);
                    uint8x16_t hb = vld1q_u8(q + 128 + 32 * h + 16 * half);
                    uint8x16_t g[4] = {vandq_u8(l0, low4), vandq_u8(l1, low4), vshrq_n_u8(l0, 4), vshrq_n_u8(l1, 4)};
                    for (int k = 0; k < 4; k++) {
                        uint8x16_t top = vandq_u8(vshlq_u8(hb, vdupq_n_s8((int8_t)(-2 * k))), low2);
                        int8x16_t v = vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(g[k], vshlq_n_u8(top, 4)), off));
                        int e = 128 * h + 32 * k + 16 * half; /* first element, and its sub-block e / 16 */
                        int32x4_t s = SDOT(vdupq_n_s32(0), v, vld1q_s8(y[b].qs + e));
                        isum = vmlaq_n_s32(isum, s, sc[e / 16]);
                    }
                }
            }
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(isum), load_f16(q + 208) * y[b].d);
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(acc[r]);
}

static DOTPROD void gemv_q4_K(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_qk(false, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_qk(false, 1, n, p + r * ws, ws, xq, out + r);
}
static DOTPROD void gemv_q5_K(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_qk(true, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_qk(true, 1, n, p + r * ws, ws, xq, out + r);
}
static DOTPROD void gemv_q6_K(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_q6_K(TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_q6_K(1, n, p + r * ws, ws, xq, out + r);
}

/* ==== Packed 4/5-bit panels (pack.c): 16 rows as four vectors of four, sdot by lane ==== */

INLINE void panel_q45(const struct ty_pack_layout *l, int64_t nb, const uint8_t *p, struct ty_q8_act a, float *out,
                      int rv) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    float32x4_t acc[4], accm[4];
    for (int g = 0; g < 4; g++) acc[g] = accm[g] = vdupq_n_f32(0);
    for (int64_t b = 0; b < nb; b++, p += l->bp) {
        int8x16_t x0 = vld1q_s8(a.qs + 32 * b), x1 = vld1q_s8(a.qs + 32 * b + 16);
        int32x4_t i[4];
        for (int g = 0; g < 4; g++) i[g] = vdupq_n_s32(l->affine || l->bits == 8 ? 0 : -l->offset * a.sum[b]);
        if (l->bits == 8) { /* Q8_0: levels + 128 back to signed; step s is lane s % 4 of x0 or x1 */
#define STEP8(st, xv, lane)                                                                                            \
    for (int g = 0; g < 4; g++) {                                                                                      \
        int8x16_t q = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p + l->off_qs + 64 * (st) + 16 * g), vdupq_n_u8(0x80)));   \
        i[g] = sdot_lane##lane(i[g], q, xv);                                                                           \
    }
            STEP8(0, x0, 0)
            STEP8(1, x0, 1)
            STEP8(2, x0, 2)
            STEP8(3, x0, 3)
            STEP8(4, x1, 0)
            STEP8(5, x1, 1)
            STEP8(6, x1, 2)
            STEP8(7, x1, 3)
#undef STEP8
        }
        /* chunk c: low nibbles are step c (lane c of x0), high nibbles step c + 4 (lane c of x1) */
#define CHUNK(c)                                                                                                       \
    do {                                                                                                               \
        for (int g = 0; g < 4; g++) {                                                                                  \
            uint8x16_t v = vld1q_u8(p + l->off_qs + 64 * (c) + 16 * g);                                                \
            uint8x16_t lo = vandq_u8(v, low4), hi = vshrq_n_u8(v, 4);                                                  \
            if (l->five) {                                                                                             \
                const uint8x16_t planes = vld1q_u8(p + l->off_qh + 16 * g);                                            \
                lo = vorrq_u8(lo, plane_bits16(planes, c));                                                            \
                hi = vorrq_u8(hi, plane_bits16(planes, (c) + 4));                                                      \
            }                                                                                                          \
            i[g] = sdot_lane##c(i[g], vreinterpretq_s8_u8(lo), x0);                                                    \
            i[g] = sdot_lane##c(i[g], vreinterpretq_s8_u8(hi), x1);                                                    \
        }                                                                                                              \
    } while (0)
        if (l->bits != 8) {
            CHUNK(0);
            CHUNK(1);
            CHUNK(2);
            CHUNK(3);
        }
#undef CHUNK
        float dx = a.d[b], xm = a.d[b] * (float)a.sum[b];
        float16x8_t d01 = vreinterpretq_f16_u8(vld1q_u8(p)), d23 = vreinterpretq_f16_u8(vld1q_u8(p + 16));
        float32x4_t dw[4] = {vcvt_f32_f16(vget_low_f16(d01)), vcvt_high_f32_f16(d01), vcvt_f32_f16(vget_low_f16(d23)),
                             vcvt_high_f32_f16(d23)};
        for (int g = 0; g < 4; g++) acc[g] = vfmaq_f32(acc[g], vcvtq_f32_s32(i[g]), vmulq_n_f32(dw[g], dx));
        if (l->affine) {
            float16x8_t m01 = vreinterpretq_f16_u8(vld1q_u8(p + l->off_m));
            float16x8_t m23 = vreinterpretq_f16_u8(vld1q_u8(p + l->off_m + 16));
            accm[0] = vfmaq_n_f32(accm[0], vcvt_f32_f16(vget_low_f16(m01)), xm);
            accm[1] = vfmaq_n_f32(accm[1], vcvt_high_f32_f16(m01), xm);
            accm[2] = vfmaq_n_f32(accm[2], vcvt_f32_f16(vget_low_f16(m23)), xm);
            accm[3] = vfmaq_n_f32(accm[3], vcvt_high_f32_f16(m23), xm);
        }
    }
    float t[16];
    for (int g = 0; g < 4; g++) vst1q_f32(t + 4 * g, vaddq_f32(acc[g], accm[g]));
    memcpy(out, t, (size_t)rv * sizeof(float));
}

INLINE void gemv_packed(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride, const void *xq,
                        float *out) {
    struct ty_pack_layout l;
    ty__pack_layout(type, &l);
    struct ty_q8_act a = ty__q8_act(xq, n);
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        int rv = rows - r < TY_PACK_ROWS ? (int)(rows - r) : TY_PACK_ROWS;
        panel_q45(&l, n / 32, (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride, a, out + r, rv);
    }
}

#define PACKED_GEMV(name, T)                                                                                           \
    static DOTPROD void name(int64_t n, int64_t rows, const void *w, size_t ps, const void *xq, float *out) {          \
        gemv_packed(T, n, rows, w, ps, xq, out);                                                                       \
    }
PACKED_GEMV(gemv_packed_q4_0, TY_TYPE_Q4_0)
PACKED_GEMV(gemv_packed_q4_1, TY_TYPE_Q4_1)
PACKED_GEMV(gemv_packed_q5_0, TY_TYPE_Q5_0)
PACKED_GEMV(gemv_packed_q5_1, TY_TYPE_Q5_1)
PACKED_GEMV(gemv_packed_q8_0, TY_TYPE_Q8_0)

/* ==== Gemm micro-kernels: 8 rows (two vectors of four) by up to 4 columns ==== */

#define PR 8

INLINE void store_cols(int NC, float32x4_t acc[][2], float *out, int64_t ld_out, int c0, int rv, bool accumulate) {
    for (int c = 0; c < NC; c++) {
        float t[PR], *o = out + (c0 + c) * ld_out;
        vst1q_f32(t, acc[c][0]), vst1q_f32(t + 4, acc[c][1]);
        for (int r = 0; r < rv; r++) o[r] = accumulate ? o[r] + t[r] : t[r];
    }
}

/* Int8 panel: [k/4][8 rows][4]; sdot by lane with the column's activation quads, four steps per vector load. */
INLINE void s8_body(int NC, const struct ty_panel *p, const struct ty_panel_cols *pc, int c0, float *out,
                    int64_t ld_out, int rv, bool accumulate) {
    float32x4_t accf[4][2];
    const int8_t *x[4];
    for (int c = 0; c < NC; c++) accf[c][0] = accf[c][1] = vdupq_n_f32(0), x[c] = pc->x[c0 + c];
    const int8_t *wp = p->w;
    const int G = p->G;
    for (int64_t g = 0; g < p->kc / G; g++) {
        int32x4_t acci[4][2];
        for (int c = 0; c < NC; c++) acci[c][0] = acci[c][1] = vdupq_n_s32(0);
        for (int s = 0; s < G / 4; s += 4, wp += 4 * 32) { /* G is 16 or 32: whole groups of four steps */
            int8x16_t xv[4];
            const int64_t off = (g * G / TY_QK_K) * pc->xsb + g * G % TY_QK_K + 4 * s;
            for (int c = 0; c < NC; c++) xv[c] = vld1q_s8(x[c] + off);
#define STEP(lane)                                                                                                     \
    do {                                                                                                               \
        int8x16_t w0 = vld1q_s8(wp + 32 * (lane)), w1 = vld1q_s8(wp + 32 * (lane) + 16);                               \
        for (int c = 0; c < NC; c++) {                                                                                 \
            acci[c][0] = sdot_lane##lane(acci[c][0], w0, xv[c]);                                                       \
            acci[c][1] = sdot_lane##lane(acci[c][1], w1, xv[c]);                                                       \
        }                                                                                                              \
    } while (0)
            STEP(0);
            STEP(1);
            STEP(2);
            STEP(3);
#undef STEP
        }
        float32x4_t sc0 = vld1q_f32(p->scale + g * PR), sc1 = vld1q_f32(p->scale + g * PR + 4);
        for (int c = 0; c < NC; c++) {
            float xs = pc->xs[(c0 + c) * pc->ld + g];
            accf[c][0] = vfmaq_f32(accf[c][0], vcvtq_f32_s32(acci[c][0]), vmulq_n_f32(sc0, xs));
            accf[c][1] = vfmaq_f32(accf[c][1], vcvtq_f32_s32(acci[c][1]), vmulq_n_f32(sc1, xs));
        }
        if (p->has_min) {
            float32x4_t m0 = vld1q_f32(p->min + g * PR), m1 = vld1q_f32(p->min + g * PR + 4);
            for (int c = 0; c < NC; c++) {
                float xm = pc->xm[(c0 + c) * pc->ld + g];
                accf[c][0] = vfmaq_n_f32(accf[c][0], m0, xm);
                accf[c][1] = vfmaq_n_f32(accf[c][1], m1, xm);
            }
        }
    }
    store_cols(NC, accf, out, ld_out, c0, rv, accumulate);
}

INLINE void f32_body(int NC, const struct ty_panel *p, const struct ty_panel_cols *pc, int c0, float *out,
                     int64_t ld_out, int rv, bool accumulate) {
    float32x4_t acc[4][2];
    const float *x[4];
    for (int c = 0; c < NC; c++) acc[c][0] = acc[c][1] = vdupq_n_f32(0), x[c] = pc->x[c0 + c];
    const float *wp = p->w;
    for (int64_t k = 0; k < p->kc; k++, wp += PR) {
        float32x4_t w0 = vld1q_f32(wp), w1 = vld1q_f32(wp + 4);
        for (int c = 0; c < NC; c++) {
            acc[c][0] = vfmaq_n_f32(acc[c][0], w0, x[c][k]);
            acc[c][1] = vfmaq_n_f32(acc[c][1], w1, x[c][k]);
        }
    }
    store_cols(NC, acc, out, ld_out, c0, rv, accumulate);
}

static DOTPROD void kernel_s8(const struct ty_panel *p, const struct ty_panel_cols *pc, float *out, int64_t ld_out,
                              int rv, bool accumulate) {
    int c = 0;
    if (c + 4 <= pc->n) s8_body(4, p, pc, c, out, ld_out, rv, accumulate), c += 4;
    if (c + 2 <= pc->n) s8_body(2, p, pc, c, out, ld_out, rv, accumulate), c += 2;
    if (c < pc->n) s8_body(1, p, pc, c, out, ld_out, rv, accumulate);
}

static DOTPROD void kernel_f32(const struct ty_panel *p, const struct ty_panel_cols *pc, float *out, int64_t ld_out,
                               int rv, bool accumulate) {
    int c = 0;
    if (c + 4 <= pc->n) f32_body(4, p, pc, c, out, ld_out, rv, accumulate), c += 4;
    if (c + 2 <= pc->n) f32_body(2, p, pc, c, out, ld_out, rv, accumulate), c += 2;
    if (c < pc->n) f32_body(1, p, pc, c, out, ld_out, rv, accumulate);
}

static const struct ty_gemm_impl impl_s8 = {TY_PANEL_S8, PR, 4, kernel_s8};
static const struct ty_gemm_impl impl_f32 = {TY_PANEL_F32, PR, 4, kernel_f32};

TY_GEMM_PANEL_FN(gemm_f32, impl_f32, TY_TYPE_F32, TY_ACT_F32)
TY_GEMM_PANEL_FN(gemm_f16, impl_f32, TY_TYPE_F16, TY_ACT_F32)
TY_GEMM_PANEL_FN(gemm_bf16, impl_f32, TY_TYPE_BF16, TY_ACT_F32)
TY_GEMM_PANEL_FN(gemm_q8_0, impl_s8, TY_TYPE_Q8_0, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q4_0, impl_s8, TY_TYPE_Q4_0, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q4_1, impl_s8, TY_TYPE_Q4_1, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q5_0, impl_s8, TY_TYPE_Q5_0, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q5_1, impl_s8, TY_TYPE_Q5_1, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q4_K, impl_s8, TY_TYPE_Q4_K, TY_ACT_Q8_K)
TY_GEMM_PANEL_FN(gemm_q5_K, impl_s8, TY_TYPE_Q5_K, TY_ACT_Q8_K)
TY_GEMM_PANEL_FN(gemm_q6_K, impl_s8, TY_TYPE_Q6_K, TY_ACT_Q8_K)
TY_GEMM_PANEL_FN_EX(gemm_packed_q4_0, impl_s8, TY_TYPE_Q4_0, TY_ACT_Q8, true)
TY_GEMM_PANEL_FN_EX(gemm_packed_q4_1, impl_s8, TY_TYPE_Q4_1, TY_ACT_Q8, true)
TY_GEMM_PANEL_FN_EX(gemm_packed_q5_0, impl_s8, TY_TYPE_Q5_0, TY_ACT_Q8, true)
TY_GEMM_PANEL_FN_EX(gemm_packed_q5_1, impl_s8, TY_TYPE_Q5_1, TY_ACT_Q8, true)
TY_GEMM_PANEL_FN_EX(gemm_packed_q8_0, impl_s8, TY_TYPE_Q8_0, TY_ACT_Q8, true)

void ty__simd_fill_neon(struct ty_simd *s) {
    static const struct {
        enum ty_type type;
        enum ty_act_format act;
        ty_gemv_fn gemv;
        ty_gemm_fn gemm;
    } k[] = {
        {TY_TYPE_F32, TY_ACT_F32, gemv_f32, gemm_f32},     {TY_TYPE_F16, TY_ACT_F32, gemv_f16, gemm_f16},
        {TY_TYPE_BF16, TY_ACT_F32, gemv_bf16, gemm_bf16},  {TY_TYPE_Q8_0, TY_ACT_Q8, gemv_q8_0, gemm_q8_0},
        {TY_TYPE_Q4_0, TY_ACT_Q8, gemv_q4_0, gemm_q4_0},   {TY_TYPE_Q4_1, TY_ACT_Q8, gemv_q4_1, gemm_q4_1},
        {TY_TYPE_Q5_0, TY_ACT_Q8, gemv_q5_0, gemm_q5_0},   {TY_TYPE_Q5_1, TY_ACT_Q8, gemv_q5_1, gemm_q5_1},
        {TY_TYPE_Q4_K, TY_ACT_Q8_K, gemv_q4_K, gemm_q4_K}, {TY_TYPE_Q5_K, TY_ACT_Q8_K, gemv_q5_K, gemm_q5_K},
        {TY_TYPE_Q6_K, TY_ACT_Q8_K, gemv_q6_K, gemm_q6_K},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        ty_quantize_act_fn q = k[i].act == TY_ACT_Q8     ? quantize_q8
                               : k[i].act == TY_ACT_Q8_K ? quantize_q8_K
                                                         : ty__quantize_act_f32;
        struct ty_simd_type *t = &s->t[k[i].type];
        t->act = k[i].act, t->quantize_act = q, t->gemv = k[i].gemv, t->gemm = k[i].gemm;
        t->gemv_isa = t->gemm_isa = "neon";
    }
    s->t[TY_TYPE_Q4_0].gemv_packed = gemv_packed_q4_0, s->t[TY_TYPE_Q4_0].gemm_packed = gemm_packed_q4_0;
    s->t[TY_TYPE_Q4_1].gemv_packed = gemv_packed_q4_1, s->t[TY_TYPE_Q4_1].gemm_packed = gemm_packed_q4_1;
    s->t[TY_TYPE_Q5_0].gemv_packed = gemv_packed_q5_0, s->t[TY_TYPE_Q5_0].gemm_packed = gemm_packed_q5_0;
    s->t[TY_TYPE_Q5_1].gemv_packed = gemv_packed_q5_1, s->t[TY_TYPE_Q5_1].gemm_packed = gemm_packed_q5_1;
    s->t[TY_TYPE_Q8_0].gemv_packed = gemv_packed_q8_0, s->t[TY_TYPE_Q8_0].gemm_packed = gemm_packed_q8_0;
    for (int t = 0; t < TY_TYPE_COUNT; t++) s->t[t].gemm_packed_direct = false; /* the panel driver repacks */
}

bool ty__simd_neon_built(void) {
    return true;
}

#endif /* NEON_DOTPROD */
#endif /* __aarch64__ */

#if !defined(__aarch64__) || !NEON_DOTPROD
void ty__simd_fill_neon(struct ty_simd *s) {
    (void)s;
}
bool ty__simd_neon_built(void) {
    return false;
}
#endif
