/*
 * dot-avx2.c - the AVX2 + FMA + F16C kernels (any x86-64 since Haswell / Zen 1): activation quantisers, a gemv per
 * weight type on rows in the file's layout, gemm micro-kernels over the repacked int16 and f32 panels of gemm.c, and
 * kernels on the 16-row packed panels of pack.c for every type that packs (what the fast backend runs): gemv straight
 * on them, and a gemm (the quantised types: on tiles of a panel unpacked into L1 once for many columns; the float
 * types: straight on the panels) that gives each column gemv's bits, so a token's result does not depend on its
 * batch. Every function carries its own target attribute, so the file builds for any x86-64 and only runs where
 * dispatch.c found the features.
 *
 * Integer dots multiply unsigned weight levels by signed activation levels with vpmaddubsw (pair sums stay below
 * 32767 for every level of at most 6 bits; Q8_0 moves the weight's sign onto the activation with vpsignb) and widen
 * with vpmaddwd, by one or by the sub-block scales of the K types; on panels the pair sums of up to 6-bit levels add
 * up in int16 first, as far as they cannot overflow. Blocks of 32 in rows are read in element order: the 16 nibble
 * bytes broadcast to both halves and the upper copy shifted down by 4.
 */
#include "chip/cpu/simd/simd-impl.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>

#define AVX2   __attribute__((target("avx2,fma,f16c,bmi,bmi2")))
#define INLINE static inline __attribute__((always_inline))

/* ==== Helpers ==== */

INLINE uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
INLINE uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
INLINE int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

INLINE AVX2 float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
INLINE AVX2 int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
INLINE AVX2 float hmax_ps(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* v as a register the compiler cannot rematerialise by loading it again: a tile's levels, loaded once and used by
 * several columns, would otherwise be reloaded for each (clang does so under register pressure), which cost the Q4_0
 * tile kernel 8% (bench_kernels prefill, one thread). */
INLINE AVX2 __m256i in_register(__m256i v) {
    __asm__("" : "+x"(v));
    return v;
}

INLINE AVX2 __m256i mul_sum_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* 16 nibble bytes as 32 levels in element order: low nibbles (elements 0..15), then high ones (16..31). */
INLINE AVX2 __m256i nibbles32(const uint8_t *qs) {
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0x0f));
}

/* Bit j of the 32-bit word at p as 16 in byte j (the fifth bit of a 5-bit level). The word is broadcast straight
 * from memory (a load); dword d takes bits 4d..4d+3 down to 0..3, then one multiply spreads bit j to bit 4 of byte j
 * (the four shifted copies never overlap, so no carries): fewer shuffles than spreading bytes with vpshufb. For rows
 * in the file's layout; the packed panels store the fifth bits as planes (step_levels). */
INLINE AVX2 __m256i fifth_bits(const uint8_t *p) {
    float f;
    memcpy(&f, p, 4);
    __m256i w =
        _mm256_srlv_epi32(_mm256_castps_si256(_mm256_broadcast_ss(&f)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    w = _mm256_mullo_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x0f)), _mm256_set1_epi32(0x02040810));
    return _mm256_and_si256(w, _mm256_set1_epi8(16));
}

/* ==== Activation quantisers (bit for bit the scalar ones) ==== */

INLINE AVX2 __m256 abs_ps(__m256 x) {
    return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}
/* vmaxps returns its second operand when the first is NaN: NaN lanes never raise the maximum. */
INLINE AVX2 __m256 abs_max(__m256 m, __m256 x) {
    return _mm256_max_ps(abs_ps(x), m);
}
INLINE AVX2 __m256i levels(__m256 x, __m256 iscale) {
    __m256 v = _mm256_max_ps(_mm256_mul_ps(x, iscale), _mm256_set1_ps(-127.0f));
    return _mm256_cvtps_epi32(_mm256_min_ps(v, _mm256_set1_ps(127.0f)));
}
/* Four vectors of 8 int32 levels (in -127..127) as 32 int8 in order. */
INLINE AVX2 __m256i pack_levels(__m256i q0, __m256i q1, __m256i q2, __m256i q3) {
    __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static AVX2 void quantize_q8(const float *x, void *xq, int64_t n) {
    struct ty_q8_act a = ty__q8_act(xq, n);
    for (int64_t b = 0; b < n / 32; b++) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(x + 32 * b + 8 * i), m = abs_max(m, v[i]);
        float iscale = ty__q8_act_iscale(hmax_ps(m));
        if (iscale == 0) {
            memset(a.qs + 32 * b, 0, 32);
            a.d[b] = 0, a.sum[b] = 0;
            continue;
        }
        __m256 s = _mm256_set1_ps(iscale);
        __m256i q[4];
        for (int i = 0; i < 4; i++) q[i] = levels(v[i], s);
        _mm256_storeu_si256((__m256i *)(a.qs + 32 * b), pack_levels(q[0], q[1], q[2], q[3]));
        a.sum[b] = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        a.d[b] = 1.0f / iscale;
    }
}

static AVX2 void quantize_q8_K(const float *x, void *xq, int64_t n) {
    struct ty_block_q8_K *y = xq;
    for (int64_t b = 0; b < n / TY_QK_K; b++, x += TY_QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < TY_QK_K; j += 8) m = abs_max(m, _mm256_loadu_ps(x + j));
        float amax = hmax_ps(m);
        float iscale = amax > 0 && isfinite(amax) ? 127.0f / amax : 0;
        __m256 s = _mm256_set1_ps(iscale);
        for (int j = 0; j < TY_QK_K; j += 32) {
            __m256i q[4];
            for (int i = 0; i < 4; i++) q[i] = levels(_mm256_loadu_ps(x + j + 8 * i), s);
            _mm256_storeu_si256((__m256i *)(y[b].qs + j), pack_levels(q[0], q[1], q[2], q[3]));
            y[b].bsums[j / 16] = (int16_t)hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            y[b].bsums[j / 16 + 1] = (int16_t)hsum_epi32(_mm256_add_epi32(q[2], q[3]));
        }
        y[b].d = iscale != 0 ? 1.0f / iscale : 0;
    }
}

/* ==== F32, F16, BF16 weights ==== */

enum fkind { FK_F32, FK_F16, FK_BF16 };

INLINE AVX2 __m256 load_w(enum fkind k, const uint8_t *p, int64_t i) {
    switch (k) {
    case FK_F32:
        return _mm256_loadu_ps((const float *)(p + 4 * i));
    case FK_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i)));
    default:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 2 * i))), 16));
    }
}

INLINE AVX2 float load_w1(enum fkind k, const uint8_t *p, int64_t i) {
    if (k == FK_F32) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    uint16_t h = load_u16(p + 2 * i);
    return k == FK_F16 ? _cvtsh_ss(h) : ty__bf16_to_f32(h);
}

INLINE AVX2 void rows_float(enum fkind k, int R, int64_t n, const uint8_t *w, size_t ws, const float *x, float *out) {
    __m256 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            acc[r][0] = _mm256_fmadd_ps(load_w(k, w + r * ws, i), x0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(load_w(k, w + r * ws, i + 8), x1, acc[r][1]);
        }
    }
    for (int r = 0; r < R; r++) {
        float s = hsum_ps(_mm256_add_ps(acc[r][0], acc[r][1]));
        for (int64_t j = i; j < n; j++) s += load_w1(k, w + r * ws, j) * x[j];
        out[r] = s;
    }
}

INLINE AVX2 void gemv_float(enum fkind k, int64_t n, int64_t rows, const void *w, size_t ws, const void *xq,
                            float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_float(k, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_float(k, 1, n, p + r * ws, ws, xq, out + r);
}

static AVX2 void gemv_f32(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    gemv_float(FK_F32, n, rows, w, ws, xq, out);
}
static AVX2 void gemv_f16(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    gemv_float(FK_F16, n, rows, w, ws, xq, out);
}
static AVX2 void gemv_bf16(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    gemv_float(FK_BF16, n, rows, w, ws, xq, out);
}

/* ==== 32-element types against Q8 activations ==== */

/* One block's integer dot on eight lanes, the offset correction already spread over them. */
INLINE AVX2 __m256i block_dot(enum ty_type type, const uint8_t *q, const int8_t *xs, int32_t sum, float *m) {
    __m256i a = _mm256_loadu_si256((const __m256i *)xs);
    switch (type) {
    case TY_TYPE_Q8_0: {
        __m256i v = _mm256_loadu_si256((const __m256i *)(q + 2));
        return mul_sum_u8s8(_mm256_sign_epi8(v, v), _mm256_sign_epi8(a, v));
    }
    case TY_TYPE_Q4_0: /* levels + 8: take back 8 * sum, -sum per lane */
        return _mm256_sub_epi32(mul_sum_u8s8(nibbles32(q + 2), a), _mm256_set1_epi32(sum));
    case TY_TYPE_Q4_1:
        *m = _cvtsh_ss(load_u16(q + 2));
        return mul_sum_u8s8(nibbles32(q + 4), a);
    case TY_TYPE_Q5_0: {
        __m256i v = _mm256_or_si256(nibbles32(q + 6), fifth_bits(q + 2));
        return _mm256_sub_epi32(mul_sum_u8s8(v, a), _mm256_set1_epi32(2 * sum));
    }
    default: { /* Q5_1 */
        *m = _cvtsh_ss(load_u16(q + 2));
        return mul_sum_u8s8(_mm256_or_si256(nibbles32(q + 8), fifth_bits(q + 4)), a);
    }
    }
}

INLINE AVX2 void rows_q32(enum ty_type type, int R, int64_t n, const uint8_t *w, size_t ws, struct ty_q8_act a,
                          float *out) {
    const size_t bs = ty__type_traits(type)->type_size;
    const bool affine = type == TY_TYPE_Q4_1 || type == TY_TYPE_Q5_1;
    __m256 acc[4];
    float accm[4] = {0, 0, 0, 0};
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++) {
        float dx = a.d[b];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *q = w + r * ws + b * bs;
            float m = 0;
            __m256i s = block_dot(type, q, a.qs + 32 * b, a.sum[b], &m);
            float d = _cvtsh_ss(load_u16(q)) * dx;
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d), acc[r]);
            if (affine) accm[r] += m * dx * (float)a.sum[b];
        }
    }
    for (int r = 0; r < R; r++) out[r] = hsum_ps(acc[r]) + accm[r];
}

INLINE AVX2 void gemv_q32(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t ws, const void *xq,
                          float *out) {
    struct ty_q8_act a = ty__q8_act(xq, n);
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_q32(type, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, a, out + r);
    for (; r < rows; r++) rows_q32(type, 1, n, p + r * ws, ws, a, out + r);
}

#define Q32_GEMV(name, T)                                                                                              \
    static AVX2 void name(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {             \
        gemv_q32(T, n, rows, w, ws, xq, out);                                                                          \
    }
Q32_GEMV(gemv_q8_0, TY_TYPE_Q8_0)
Q32_GEMV(gemv_q4_0, TY_TYPE_Q4_0)
Q32_GEMV(gemv_q4_1, TY_TYPE_Q4_1)
Q32_GEMV(gemv_q5_0, TY_TYPE_Q5_0)
Q32_GEMV(gemv_q5_1, TY_TYPE_Q5_1)

/* ==== K types against Q8_K activations ==== */

/* The 6-bit scales sc[0..7] and minimums m[0..7] of a Q4_K / Q5_K block. */
INLINE void k_scales(const uint8_t *s, uint8_t sc[8], uint8_t m[8]) {
    uint32_t u0 = load_u32(s), u1 = load_u32(s + 4), u2 = load_u32(s + 8);
    uint32_t w[4] = {u0 & 0x3f3f3f3f, (u2 & 0x0f0f0f0f) | ((u0 >> 6) & 0x03030303) << 4, u1 & 0x3f3f3f3f,
                     ((u2 >> 4) & 0x0f0f0f0f) | ((u1 >> 6) & 0x03030303) << 4};
    memcpy(sc, w, 8);
    memcpy(m, w + 2, 8);
}

INLINE AVX2 void rows_qk(bool five, int R, int64_t n, const uint8_t *w, size_t ws, const struct ty_block_q8_K *y,
                         float *out) {
    const size_t bs = five ? sizeof(struct ty_block_q5_K) : sizeof(struct ty_block_q4_K);
    const size_t qs_off = five ? 48 : 16;
    const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256 acc[4];
    float accm[4] = {0, 0, 0, 0};
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        int bs32[8];
        for (int j = 0; j < 8; j++) bs32[j] = y[b].bsums[2 * j] + y[b].bsums[2 * j + 1];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *q = w + r * ws + b * bs;
            uint8_t sc[8], mn[8];
            k_scales(q + 4, sc, mn);
            __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(q + 16)) : _mm256_setzero_si256();
            __m256i isum = _mm256_setzero_si256();
            for (int p = 0; p < 4; p++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(q + qs_off + 32 * p));
                __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                if (five) {
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * p), one), 4));
                    hi = _mm256_or_si256(hi,
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * p + 1), one), 4));
                }
                __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(y[b].qs + 64 * p)));
                __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y[b].qs + 64 * p + 32)));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * p])));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * p + 1])));
            }
            int32_t imin = 0;
            for (int j = 0; j < 8; j++) imin += mn[j] * bs32[j];
            float d = _cvtsh_ss(load_u16(q)) * y[b].d, dmin = _cvtsh_ss(load_u16(q + 2)) * y[b].d;
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d), acc[r]);
            accm[r] += dmin * (float)imin;
        }
    }
    for (int r = 0; r < R; r++) out[r] = hsum_ps(acc[r]) - accm[r];
}

INLINE AVX2 void rows_q6_K(int R, int64_t n, const uint8_t *w, size_t ws, const struct ty_block_q8_K *y, float *out) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), low2 = _mm256_set1_epi8(3);
    __m256 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        __m256i bsums = _mm256_loadu_si256((const __m256i *)y[b].bsums);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *q = w + r * ws + b * sizeof(struct ty_block_q6_K);
            const int8_t *sc = (const int8_t *)(q + 192);
            __m256i isum = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                __m256i q0 = _mm256_loadu_si256((const __m256i *)(q + 64 * h));
                __m256i q1 = _mm256_loadu_si256((const __m256i *)(q + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(q + 128 + 32 * h));
                __m256i g[4] = {_mm256_and_si256(q0, low4), _mm256_and_si256(q1, low4),
                                _mm256_and_si256(_mm256_srli_epi16(q0, 4), low4),
                                _mm256_and_si256(_mm256_srli_epi16(q1, 4), low4)};
                for (int k = 0; k < 4; k++) {
                    __m256i top = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), low2);
                    __m256i v = _mm256_or_si256(g[k], _mm256_slli_epi16(top, 4));
                    __m256i p =
                        _mm256_maddubs_epi16(v, _mm256_loadu_si256((const __m256i *)(y[b].qs + 128 * h + 32 * k)));
                    int j = 8 * h + 2 * k; /* sub-blocks j (words 0..7) and j + 1 (words 8..15) */
                    __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[j + 1]), _mm_set1_epi16(sc[j]));
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, s));
                }
            }
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
            isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5));
            float d = _cvtsh_ss(load_u16(q + 208)) * y[b].d;
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d), acc[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = hsum_ps(acc[r]);
}

static AVX2 void gemv_q4_K(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_qk(false, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_qk(false, 1, n, p + r * ws, ws, xq, out + r);
}
static AVX2 void gemv_q5_K(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_qk(true, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_qk(true, 1, n, p + r * ws, ws, xq, out + r);
}
static AVX2 void gemv_q6_K(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_q6_K(TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_q6_K(1, n, p + r * ws, ws, xq, out + r);
}

/* ==== Packed 32-element panels (pack.c): 16 rows as two halves of 8 ====
 * gemv streams the panels (decode); gemm (prefill) runs on tiles of them unpacked into L1 (below). Both go through the
 * same step helpers, and give every column the same operations in the same order, so the same bits: integer sums are
 * exact whatever their grouping, and the float steps are the same. */

/* The panel of packed rows [r, r + TY_PACK_ROWS) (r a multiple of it), and how many of its rows the matrix has. */
INLINE const uint8_t *panel_at(const void *w, size_t panel_stride, int64_t r) {
    return (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride;
}
INLINE int panel_rows(int64_t rows, int64_t r) {
    return rows - r < TY_PACK_ROWS ? (int)(rows - r) : TY_PACK_ROWS;
}

/* One step k (0..3) of 8 packed rows of 4/5-bit levels (the 32-element types and Q4_K / Q5_K alike): the low nibbles
 * of the 32 bytes at qs (lo: elements 4k..4k+3 of each row, one dword a row) and the high ones (hi: 16+4k..), with
 * the fifth bits of the 32 plane bytes at qh where qh is not NULL: bit k (lo's step) and bit 4 + k (hi's) of each,
 * moved to bit 4 by one 16-bit shift each (what crosses into the next byte is masked off). Spreading a 32-bit mask a
 * step over 32 bytes took five instructions (Q5_0 gemv ~20 GB/s a core, against 41 for Q4_0). */
INLINE AVX2 void step_levels(const uint8_t *qs, const uint8_t *qh, int k, __m256i *lo, __m256i *hi) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(16);
    __m256i v = _mm256_loadu_si256((const __m256i *)qs);
    *lo = _mm256_and_si256(v, low4), *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    if (qh) {
        const __m256i planes = _mm256_loadu_si256((const __m256i *)qh);
        *lo = _mm256_or_si256(*lo, _mm256_and_si256(_mm256_slli_epi16(planes, 4 - k), bit4));
        *hi = _mm256_or_si256(*hi, _mm256_and_si256(k ? _mm256_srli_epi16(planes, k) : planes, bit4));
    }
}

/* Step k (0..3) of half h of a packed 4/5-bit block. */
INLINE AVX2 void q32_step_levels(const struct ty_pack_layout *l, const uint8_t *pb, int h, int k, __m256i *lo,
                                 __m256i *hi) {
    step_levels(pb + l->off_qs + 64 * k + 32 * h, l->five ? pb + l->off_qh + 32 * h : NULL, k, lo, hi);
}

/* Step st (0..7) of half h of a packed Q8_0 block: the signed levels of elements 4st..4st+3 of its 8 rows. */
INLINE AVX2 __m256i q8_step_levels(const struct ty_pack_layout *l, const uint8_t *pb, int h, int st) {
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(pb + l->off_qs + 64 * st + 32 * h)),
                            _mm256_set1_epi8((char)0x80));
}

/* One Q8_0 step against NC columns: q the signed levels, qa their magnitudes (the sign moves onto x). */
INLINE AVX2 void q8_step_dot(int NC, __m256i q, __m256i qa, const int8_t *const *x, int st, __m256i *isum) {
    for (int c = 0; c < NC; c++) {
        __m256i xb = _mm256_set1_epi32(load_i32(x[c] + 4 * st));
        isum[c] = _mm256_add_epi32(isum[c], mul_sum_u8s8(qa, _mm256_sign_epi8(xb, q)));
    }
}

/* One 4/5-bit step against NC columns: the pair sums of lo and hi into each column's int16 sums. */
INLINE AVX2 void q32_step_dot(int NC, __m256i lo, __m256i hi, const int8_t *const *x, int k, __m256i *w16) {
    for (int c = 0; c < NC; c++) {
        __m256i q0 = _mm256_set1_epi32(load_i32(x[c] + 4 * k)), q1 = _mm256_set1_epi32(load_i32(x[c] + 16 + 4 * k));
        w16[c] = _mm256_add_epi16(w16[c], _mm256_add_epi16(_mm256_maddubs_epi16(lo, q0), _mm256_maddubs_epi16(hi, q1)));
    }
}

/* Steps whose pair sums add up in int16 (at most 2 x 31 x 127 each): a whole block of 4-bit levels, half of 5-bit. */
INLINE int q32_piece(const struct ty_pack_layout *l) {
    return l->five ? 2 : 4;
}

/* Both halves of one packed block against one column (x: its 32 levels of the block), each line of levels used
 * whole: isum[h] (each row's start, the offset correction) plus the rows' integer dots. 4/5-bit levels: the pair sums
 * of vpmaddubsw add up in int16 over a piece before one vpmaddwd widens them: about half the multiplies of widening
 * each. Q8_0: signed levels again, the sign moved onto x. */
INLINE AVX2 void q32_block(const struct ty_pack_layout *l, const uint8_t *pb, const int8_t *x, __m256i *isum) {
    if (l->bits == 8) {
        for (int st = 0; st < 8; st++)
            for (int h = 0; h < 2; h++) {
                __m256i q = q8_step_levels(l, pb, h, st);
                q8_step_dot(1, q, _mm256_sign_epi8(q, q), &x, st, isum + h);
            }
        return;
    }
    for (int k0 = 0; k0 < 4; k0 += q32_piece(l)) {
        __m256i w16[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int k = k0; k < k0 + q32_piece(l); k++)
            for (int h = 0; h < 2; h++) {
                __m256i lo, hi;
                q32_step_levels(l, pb, h, k, &lo, &hi);
                q32_step_dot(1, lo, hi, &x, k, w16 + h);
            }
        for (int h = 0; h < 2; h++)
            isum[h] = _mm256_add_epi32(isum[h], _mm256_madd_epi16(w16[h], _mm256_set1_epi16(1)));
    }
}

/* The offset correction a row's integer dot starts from: -offset x the block's activation sum (symmetric types). */
INLINE AVX2 __m256i q32_start(const struct ty_pack_layout *l, int32_t sum) {
    if (l->affine || l->bits == 8) return _mm256_setzero_si256();
    /* |sum| <= 32 x 127 fits the low word; vpmaddwd by (-offset, 0) saves a trip through a general register */
    return _mm256_madd_epi16(_mm256_set1_epi32(sum), _mm256_set1_epi32(-l->offset & 0xffff));
}

/* A half block's float step for one column from its row scales dw (and minimums m, affine types): its dot times
 * scale x dx, and for affine types minimum x dx x sum. */
INLINE AVX2 void q32_float(const struct ty_pack_layout *l, __m256 dw, __m256 m, __m256i isum, float dx, int32_t sum,
                           __m256 *acc, __m256 *accm) {
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(dx)), *acc);
    if (l->affine) *accm = _mm256_fmadd_ps(m, _mm256_set1_ps(dx * (float)sum), *accm);
}

/* The row scales (minimums) of half h of a packed block. */
INLINE AVX2 __m256 q32_scales(const uint8_t *pb, int h) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(pb + 16 * h)));
}
INLINE AVX2 __m256 q32_mins(const struct ty_pack_layout *l, const uint8_t *pb, int h) {
    return l->affine ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(pb + l->off_m + 16 * h)))
                     : _mm256_setzero_ps();
}

/* Rows 8h.. of a panel (rv valid in the whole panel) from a half's sums. */
INLINE AVX2 void store_half(float *out, int h, int rv, __m256 acc, __m256 accm) {
    int n = rv - 8 * h < 8 ? rv - 8 * h : 8;
    if (n == 8) { /* a whole half: one store, not a library call per column (1% of a prefill) */
        _mm256_storeu_ps(out + 8 * h, _mm256_add_ps(acc, accm));
        return;
    }
    if (n <= 0) return;
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(acc, accm));
    memcpy(out + 8 * h, t, (size_t)n * sizeof(float));
}

/* One column, both halves of each block in turn (one pass over the panel: decode streams it once). */
INLINE AVX2 void panel_q32(const struct ty_pack_layout *l, int64_t nb, const uint8_t *p, struct ty_q8_act a, float *out,
                           int rv) {
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, accm[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++, p += l->bp) {
        ty__stream_ahead(p, l->bp);
        __m256i isum[2] = {q32_start(l, a.sum[b]), q32_start(l, a.sum[b])};
        q32_block(l, p, a.qs + 32 * b, isum);
        for (int h = 0; h < 2; h++)
            q32_float(l, q32_scales(p, h), q32_mins(l, p, h), isum[h], a.d[b], a.sum[b], &acc[h], &accm[h]);
    }
    for (int h = 0; h < 2; h++) store_half(out, h, rv, acc[h], accm[h]);
}

/* ==== A few columns straight on the panels (a batch of decode steps) ====
 * Up to FEW_DIRECT columns stream each panel once, each step's levels extracted once for all of them, where the
 * tiles' unpacking (shared by many columns in a prefill) costs more than it saves: two to four columns ran at the
 * speed of one column each (bench_kernels --prefill 2,4). Every column gets gemv's operations (exact integer sums,
 * the same float steps in the same order), so its bits do not depend on the batch. */
#define FEW_DIRECT 4

/* Both halves of one packed block against NC columns (x[c]): isum[2c + h] as q32_block's isum[h] for column c. */
INLINE AVX2 void q32_block_cols(int NC, const struct ty_pack_layout *l, const uint8_t *pb, const int8_t *const *x,
                                __m256i *isum) {
    if (l->bits == 8) {
        for (int st = 0; st < 8; st++)
            for (int h = 0; h < 2; h++) {
                const __m256i q = q8_step_levels(l, pb, h, st), qa = _mm256_sign_epi8(q, q);
                for (int c = 0; c < NC; c++) q8_step_dot(1, q, qa, x + c, st, isum + 2 * c + h);
            }
        return;
    }
    for (int k0 = 0; k0 < 4; k0 += q32_piece(l)) {
        __m256i w16[2 * FEW_DIRECT];
        for (int c = 0; c < 2 * NC; c++) w16[c] = _mm256_setzero_si256();
        for (int k = k0; k < k0 + q32_piece(l); k++)
            for (int h = 0; h < 2; h++) {
                __m256i lo, hi;
                q32_step_levels(l, pb, h, k, &lo, &hi);
                for (int c = 0; c < NC; c++) q32_step_dot(1, lo, hi, x + c, k, w16 + 2 * c + h);
            }
        for (int c = 0; c < 2 * NC; c++)
            isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(w16[c], _mm256_set1_epi16(1)));
    }
}

/* NC columns (a[c], into out[c]) over one panel, both halves of each block in turn. */
INLINE AVX2 void panel_q32_cols(int NC, const struct ty_pack_layout *l, int64_t nb, const uint8_t *p,
                                const struct ty_q8_act *a, float *const *out, int rv) {
    __m256 acc[2 * FEW_DIRECT], accm[2 * FEW_DIRECT];
    for (int c = 0; c < 2 * NC; c++) acc[c] = accm[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, p += l->bp) {
        ty__stream_ahead(p, l->bp);
        const int8_t *x[FEW_DIRECT];
        __m256i isum[2 * FEW_DIRECT];
        for (int c = 0; c < NC; c++) x[c] = a[c].qs + 32 * b, isum[2 * c] = isum[2 * c + 1] = q32_start(l, a[c].sum[b]);
        q32_block_cols(NC, l, p, x, isum);
        for (int c = 0; c < NC; c++)
            for (int h = 0; h < 2; h++)
                q32_float(l, q32_scales(p, h), q32_mins(l, p, h), isum[2 * c + h], a[c].d[b], a[c].sum[b],
                          &acc[2 * c + h], &accm[2 * c + h]);
    }
    for (int c = 0; c < NC; c++)
        for (int h = 0; h < 2; h++) store_half(out[c], h, rv, acc[2 * c + h], accm[2 * c + h]);
}

INLINE AVX2 void gemv_panels_q32(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                 const void *xq, float *out) {
    struct ty_pack_layout l;
    ty__pack_layout(type, &l);
    struct ty_q8_act a = ty__q8_act(xq, n);
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        const int rv = panel_rows(rows, r);
        panel_q32(&l, n / 32, panel_at(w, panel_stride, r), a, out + r, rv);
    }
}

/* ==== gemm of the 32-element types on unpacked tiles ====
 * Many columns pass over each panel, so its levels are unpacked once per chunk of blocks into a tile that stays in
 * L1 (the scratch), and every column then costs only its multiplies, sums and float steps: the nibble and fifth-bit
 * work, which bounded the 4-column kernel straight on the panels (Q5_0 prefill 88 GOP/s a thread), is shared by up to
 * TILE_COLS columns. A column's accumulators carry over from chunk to chunk, so its sums are gemv's, step for step. */

#define TILE_BLOCKS 16 /* blocks per tile: 16 x 1152 bytes, in L1 */
#define TILE_COLS   64 /* columns per pass over a panel's tiles */

struct q32_tile {       /* both halves of a block */
    __m256i lv[2][16];  /* 4/5 bits: lo and hi of steps 0..3; Q8_0: the signed levels of steps 0..7, then magnitudes */
    __m256 dw[2], m[2]; /* row scales, minimums (affine types) */
};
_Static_assert(TILE_BLOCKS * sizeof(struct q32_tile) <= (size_t)TY_PANEL_MAX_ROWS * TY_PANEL_KC_INT * 2,
               "a tile fits the gemm scratch (its panel buffer alone)");

INLINE AVX2 void q32_unpack(const struct ty_pack_layout *l, const uint8_t *pb, struct q32_tile *t) {
    for (int h = 0; h < 2; h++) {
        if (l->bits == 8)
            for (int st = 0; st < 8; st++)
                t->lv[h][st] = q8_step_levels(l, pb, h, st),
                t->lv[h][8 + st] = _mm256_sign_epi8(t->lv[h][st], t->lv[h][st]);
        else
            for (int k = 0; k < 4; k++) q32_step_levels(l, pb, h, k, &t->lv[h][2 * k], &t->lv[h][2 * k + 1]);
        t->dw[h] = q32_scales(pb, h), t->m[h] = q32_mins(l, pb, h);
    }
}

/* NC columns (a[c]) over tiles of blocks b0.., both halves at once (acc[2c + h]): each broadcast activation quad
 * serves 16 rows, each level vector NC columns. Sharing the quads, the column's scale and its offset term between the
 * halves took one thread's Q4_0 prefill in bench_kernels from 144 to 152 GOP/s, Q5_0 from 135 to 143; loading each
 * level vector once for both columns (in_register) to 162 and 147-152. Tried and no faster (same bench): 3 columns;
 * the step in inline assembly; the roles swapped (each row's weight quad broadcast against activation vectors of 8
 * columns laid out per call, half the instructions per vpmaddubsw: 163-166 for Q4_0, Q4_1 and Q5_0 slower). */
INLINE AVX2 void q32_tile_cols(int NC, const struct ty_pack_layout *l, const struct q32_tile *t, int64_t b0, int64_t nb,
                               const struct ty_q8_act *a, __m256 *acc, __m256 *accm) {
    for (int64_t i = 0; i < nb; i++, t++) {
        const int64_t b = b0 + i;
        const int8_t *x[2];
        __m256i isum[4];
        for (int c = 0; c < NC; c++) x[c] = a[c].qs + 32 * b;
        /* the halves' steps through the shared step helpers: a 4/5-bit step's levels loaded once for the NC
         * columns, each column's broadcast quads once for both halves (the same expressions, computed once) */
        if (l->bits == 8) {
            for (int c = 0; c < 2 * NC; c++) isum[c] = _mm256_setzero_si256();
            for (int st = 0; st < 8; st++)
                for (int c = 0; c < NC; c++)
                    for (int h = 0; h < 2; h++)
                        q8_step_dot(1, t->lv[h][st], t->lv[h][8 + st], x + c, st, isum + 2 * c + h);
        } else {
            for (int c = 0; c < NC; c++) isum[2 * c] = isum[2 * c + 1] = q32_start(l, a[c].sum[b]);
            for (int k0 = 0; k0 < 4; k0 += q32_piece(l)) {
                __m256i w16[4];
                for (int c = 0; c < 2 * NC; c++) w16[c] = _mm256_setzero_si256();
                for (int k = k0; k < k0 + q32_piece(l); k++)
                    for (int h = 0; h < 2; h++) {
                        const __m256i lo = in_register(t->lv[h][2 * k]), hi = in_register(t->lv[h][2 * k + 1]);
                        for (int c = 0; c < NC; c++) q32_step_dot(1, lo, hi, x + c, k, w16 + 2 * c + h);
                    }
                for (int c = 0; c < 2 * NC; c++)
                    isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(w16[c], _mm256_set1_epi16(1)));
            }
        }
        for (int c = 0; c < NC; c++)
            for (int h = 0; h < 2; h++)
                q32_float(l, t->dw[h], t->m[h], isum[2 * c + h], a[c].d[b], a[c].sum[b], &acc[2 * c + h],
                          &accm[2 * c + h]);
    }
}

/* ==== Packed K-quant panels (pack.c): 16 rows as two halves of 8 ====
 * A half's sub-block (Q4_K, Q5_K: 32 elements; Q6_K: 16) is a few vpmaddubsw per step against broadcast activation
 * quads whose int16 pair sums add up as far as they cannot overflow (Q4_K's whole sub-block, 8 x 2 x 15 x 127;
 * Q5_K's and Q6_K's halves of it), then one vpmaddwd by the rows' scales (each row's scale in both words of its dword)
 * gives sub-block sums times scales, exact in int32 as on the other paths. gemv streams the panels; gemm runs on
 * unpacked tiles (below) through the same steps, so the same bits. */

/* vpshufb selectors within each 128-bit lane: byte k of every dword into both of its words, zero-extended. */
INLINE AVX2 __m256i dword_byte_twice(int k) {
    const __m256i offs =
        _mm256_setr_epi32(0, 0x00040004, 0x00080008, 0x000c000c, 0, 0x00040004, 0x00080008, 0x000c000c);
    return _mm256_add_epi32(_mm256_set1_epi32((int)(0x80008000u | (unsigned)k | (unsigned)k << 16)), offs);
}

/* The 6-bit scales and minimums of half h of a Q4_K / Q5_K super-block: byte j of dword r holds row r's of sub-block
 * j (lo) or 4 + j (hi). */
struct qk_scales {
    __m256i s_lo, s_hi, m_lo, m_hi;
};
INLINE AVX2 struct qk_scales qk_half_scales(const struct ty_pack_k_layout *l, const uint8_t *p, int h) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), m6 = _mm256_set1_epi8(0x3f), m2h = _mm256_set1_epi8(0x30);
    const __m256i W0 = _mm256_loadu_si256((const __m256i *)(p + l->off_sc + 32 * h));
    const __m256i W1 = _mm256_loadu_si256((const __m256i *)(p + l->off_sc + 64 + 32 * h));
    const __m256i W2 = _mm256_loadu_si256((const __m256i *)(p + l->off_sc + 128 + 32 * h));
    return (struct qk_scales){
        _mm256_and_si256(W0, m6),
        _mm256_or_si256(_mm256_and_si256(W2, low4), _mm256_and_si256(_mm256_srli_epi32(W0, 2), m2h)),
        _mm256_and_si256(W1, m6),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(W2, 4), low4),
                        _mm256_and_si256(_mm256_srli_epi32(W1, 2), m2h)),
    };
}

/* Sub-block j's scale and minimum of each row in both words of its dword (vpmaddwd operands). */
INLINE AVX2 void qk_sub_scales(const struct qk_scales *s, int j, __m256i *sc, __m256i *mn) {
    const __m256i sel = dword_byte_twice(j % 4);
    *sc = _mm256_shuffle_epi8(j < 4 ? s->s_lo : s->s_hi, sel);
    *mn = _mm256_shuffle_epi8(j < 4 ? s->m_lo : s->m_hi, sel);
}

/* Step k (0..3) of sub-block j of half h of a Q4_K / Q5_K super-block. */
INLINE AVX2 void qk_step_levels(bool five, const struct ty_pack_k_layout *l, const uint8_t *p, int j, int h, int k,
                                __m256i *lo, __m256i *hi) {
    const uint8_t *grp = p + l->off_grp + l->gb * j;
    step_levels(grp + l->qh_b + 64 * k + 32 * h, five ? grp + 32 * h : NULL, k, lo, hi);
}

/* A sub-block's int16 sums (w16[piece][c]; Q5_K's two pieces) widened by the rows' scales into A[c], its minimums
 * against the activation's two sums of 16 into B[c]. */
INLINE AVX2 void qk_sub_sums(int NC, bool five, __m256i (*w16)[4], __m256i sc, __m256i mn,
                             const struct ty_block_q8_K *const *y, int j, __m256i *A, __m256i *B) {
    for (int c = 0; c < NC; c++) {
        __m256i d = _mm256_madd_epi16(w16[0][c], sc);
        if (five) d = _mm256_add_epi32(d, _mm256_madd_epi16(w16[1][c], sc));
        A[c] = _mm256_add_epi32(A[c], d);
        B[c] = _mm256_add_epi32(B[c], _mm256_madd_epi16(mn, _mm256_set1_epi32(load_i32(y[c]->bsums + 2 * j))));
    }
}

/* Both halves of a Q4_K (five false) / Q5_K super-block against one column (y: its block), sub-block by sub-block:
 * A[h] += each row's sub-block dots times their scales, B[h] += its minimums against the activation's sums of 16. A
 * step's broadcast quads serve both halves (the same expressions, computed once). */
INLINE AVX2 void qk_super(bool five, const struct ty_pack_k_layout *l, const uint8_t *p, const struct ty_block_q8_K *y,
                          __m256i *A, __m256i *B) {
    const struct qk_scales s[2] = {qk_half_scales(l, p, 0), qk_half_scales(l, p, 1)};
    for (int j = 0; j < 8; j++) {
        const int8_t *x = y->qs + 32 * j;
        for (int h = 0; h < 2; h++) {
            __m256i w16[2][4] = {{_mm256_setzero_si256()}, {_mm256_setzero_si256()}}; /* piece, column */
            for (int k = 0; k < 4; k++) {
                __m256i lo, hi;
                qk_step_levels(five, l, p, j, h, k, &lo, &hi);
                q32_step_dot(1, lo, hi, &x, k, w16[five ? k / 2 : 0]);
            }
            __m256i sc, mn;
            qk_sub_scales(&s[h], j, &sc, &mn);
            qk_sub_sums(1, five, w16, sc, mn, &y, j, A + h, B + h);
        }
    }
}

/* Bits 2k..2k+1 of each Q6_K qh byte moved to bits 4..5 (16-bit shifts: what crosses a byte is masked off after). */
INLINE AVX2 __m256i q6k_top_bits(__m256i qh, int k) {
    return k == 0   ? _mm256_slli_epi16(qh, 4)
           : k == 1 ? _mm256_slli_epi16(qh, 2)
           : k == 2 ? qh
                    : _mm256_srli_epi16(qh, 2);
}

/* Step k (0..3) of group g of half h of a Q6_K super-block: levels (+ 32) of elements 4k.. (lo, sub-block 2g) and
 * 16+4k.. (hi, sub-block 2g + 1). */
INLINE AVX2 void q6k_step_levels(const struct ty_pack_k_layout *l, const uint8_t *p, int g, int h, int k, __m256i *lo,
                                 __m256i *hi) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    const uint8_t *grp = p + l->off_grp + l->gb * g;
    const __m256i H0 = _mm256_loadu_si256((const __m256i *)(grp + 32 * h));
    const __m256i H1 = _mm256_loadu_si256((const __m256i *)(grp + 64 + 32 * h));
    __m256i t = _mm256_loadu_si256((const __m256i *)(grp + l->qh_b + 64 * k + 32 * h));
    *lo = _mm256_or_si256(_mm256_and_si256(t, low4), _mm256_and_si256(q6k_top_bits(H0, k), m30));
    *hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(t, 4), low4), _mm256_and_si256(q6k_top_bits(H1, k), m30));
}

/* Group g's scales of half h: sp, row r's scales of sub-blocks 2g and 2g + 1 as the two words of dword r; sc0 and sc1
 * each of them in both words. */
INLINE AVX2 void q6k_group_scales(const struct ty_pack_k_layout *l, const uint8_t *p, int g, int h, __m256i *sp,
                                  __m256i *sc0, __m256i *sc1) {
    const __m256i first = _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5,
                                           8, 9, 8, 9, 12, 13, 12, 13);
    *sp = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + l->off_sc + 32 * g + 16 * h)));
    *sc0 = _mm256_shuffle_epi8(*sp, first),
    *sc1 = _mm256_shuffle_epi8(*sp, _mm256_add_epi8(first, _mm256_set1_epi8(2)));
}

/* One Q6_K step against NC columns: lo's pair sums into sub-block 2g's piece k / 2, hi's into 2g + 1's (w16[4][c]). */
INLINE AVX2 void q6k_step_dot(int NC, __m256i lo, __m256i hi, const int8_t *const *x, int k, __m256i (*w16)[4]) {
    for (int c = 0; c < NC; c++) {
        __m256i pl = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(load_i32(x[c] + 4 * k)));
        __m256i ph = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load_i32(x[c] + 16 + 4 * k)));
        if (k % 2)
            w16[k / 2][c] = _mm256_add_epi16(w16[k / 2][c], pl),
                    w16[2 + k / 2][c] = _mm256_add_epi16(w16[2 + k / 2][c], ph);
        else
            w16[k / 2][c] = pl, w16[2 + k / 2][c] = ph;
    }
}

/* A group's int16 sums widened by the rows' scales into A[c], the scales against the activation's sums of 16 into
 * O[c]. */
INLINE AVX2 void q6k_group_sums(int NC, __m256i (*w16)[4], __m256i sp, __m256i sc0, __m256i sc1,
                                const struct ty_block_q8_K *const *y, int g, __m256i *A, __m256i *O) {
    for (int c = 0; c < NC; c++) {
        __m256i d0 = _mm256_add_epi32(_mm256_madd_epi16(w16[0][c], sc0), _mm256_madd_epi16(w16[1][c], sc0));
        __m256i d1 = _mm256_add_epi32(_mm256_madd_epi16(w16[2][c], sc1), _mm256_madd_epi16(w16[3][c], sc1));
        A[c] = _mm256_add_epi32(A[c], _mm256_add_epi32(d0, d1));
        O[c] = _mm256_add_epi32(O[c], _mm256_madd_epi16(sp, _mm256_set1_epi32(load_i32(y[c]->bsums + 2 * g))));
    }
}

/* Both halves of a Q6_K super-block against one column, group by group: A[h] += each row's sub-block dots times their
 * scales, O[h] += its scales against the activation's sums of 16 (the levels' + 32, taken off as 32 O at the end). */
INLINE AVX2 void q6k_super(const struct ty_pack_k_layout *l, const uint8_t *p, const struct ty_block_q8_K *y,
                           __m256i *A, __m256i *O) {
    for (int g = 0; g < 8; g++) {
        const int8_t *x = y->qs + 32 * g;
        for (int h = 0; h < 2; h++) {
            __m256i w16[4][4]; /* sub-block 2g in two pieces, then 2g + 1; column */
            for (int k = 0; k < 4; k++) {
                __m256i lo, hi;
                q6k_step_levels(l, p, g, h, k, &lo, &hi);
                q6k_step_dot(1, lo, hi, &x, k, w16);
            }
            __m256i sp, sc0, sc1;
            q6k_group_scales(l, p, g, h, &sp, &sc0, &sc1);
            q6k_group_sums(1, w16, sp, sc0, sc1, &y, g, A + h, O + h);
        }
    }
}

/* A super-block half's float step for one column from its row scales dw (and minimum scales dm): Q4_K / Q5_K
 * (A dw - B dm) dx, Q6_K (A - 32 O) dw dx. */
INLINE AVX2 __m256 k_float(bool six, __m256 dw, __m256 dm, __m256i A, __m256i B, float dx, __m256 acc) {
    if (six) {
        __m256i a = _mm256_sub_epi32(A, _mm256_slli_epi32(B, 5));
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), _mm256_mul_ps(dw, _mm256_set1_ps(dx)), acc);
    }
    __m256 t = _mm256_fmsub_ps(_mm256_cvtepi32_ps(A), dw, _mm256_mul_ps(_mm256_cvtepi32_ps(B), dm));
    return _mm256_fmadd_ps(t, _mm256_set1_ps(dx), acc);
}
INLINE AVX2 __m256 k_row_scales(const uint8_t *p, int h) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * h)));
}
INLINE AVX2 __m256 k_row_mins(const struct ty_pack_k_layout *l, const uint8_t *p, int h) {
    return l->six ? _mm256_setzero_ps() : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + l->off_dmin + 16 * h)));
}

/* One column: both halves of each super-block in turn (one pass over the panel: decode streams it once). */
INLINE AVX2 void gemv_panels_k(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                               const void *xq, float *out) {
    struct ty_pack_k_layout l;
    ty__pack_k_layout(type, &l);
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        const int rv = panel_rows(rows, r);
        const uint8_t *p = panel_at(w, panel_stride, r);
        __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t b = 0; b < n / TY_QK_K; b++, p += l.bp) {
            ty__stream_ahead(p, l.bp);
            const struct ty_block_q8_K *yb = (const struct ty_block_q8_K *)xq + b;
            __m256i A[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}, B[2] = {A[0], A[0]};
            if (type == TY_TYPE_Q6_K)
                q6k_super(&l, p, yb, A, B);
            else
                qk_super(type == TY_TYPE_Q5_K, &l, p, yb, A, B);
            for (int h = 0; h < 2; h++)
                acc[h] = k_float(l.six, k_row_scales(p, h), k_row_mins(&l, p, h), A[h], B[h], yb->d, acc[h]);
        }
        for (int h = 0; h < 2; h++) store_half(out + r, h, rv, acc[h], _mm256_setzero_ps());
    }
}

/* Both halves of a Q4_K / Q5_K super-block against NC columns (y[c]): A[h][c], B[h][c] as qk_super's A[h], B[h]. */
INLINE AVX2 void qk_super_cols(int NC, bool five, const struct ty_pack_k_layout *l, const uint8_t *p,
                               const struct ty_block_q8_K *const *y, __m256i (*A)[FEW_DIRECT],
                               __m256i (*B)[FEW_DIRECT]) {
    const struct qk_scales s[2] = {qk_half_scales(l, p, 0), qk_half_scales(l, p, 1)};
    for (int j = 0; j < 8; j++) {
        const int8_t *x[FEW_DIRECT];
        for (int c = 0; c < NC; c++) x[c] = y[c]->qs + 32 * j;
        for (int h = 0; h < 2; h++) {
            __m256i w16[2][4]; /* piece, column */
            for (int c = 0; c < NC; c++) w16[0][c] = w16[1][c] = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                __m256i lo, hi;
                qk_step_levels(five, l, p, j, h, k, &lo, &hi);
                q32_step_dot(NC, lo, hi, x, k, w16[five ? k / 2 : 0]);
            }
            __m256i sc, mn;
            qk_sub_scales(&s[h], j, &sc, &mn);
            qk_sub_sums(NC, five, w16, sc, mn, y, j, A[h], B[h]);
        }
    }
}

/* Both halves of a Q6_K super-block against NC columns, as q6k_super's for each. */
INLINE AVX2 void q6k_super_cols(int NC, const struct ty_pack_k_layout *l, const uint8_t *p,
                                const struct ty_block_q8_K *const *y, __m256i (*A)[FEW_DIRECT],
                                __m256i (*O)[FEW_DIRECT]) {
    for (int g = 0; g < 8; g++) {
        const int8_t *x[FEW_DIRECT];
        for (int c = 0; c < NC; c++) x[c] = y[c]->qs + 32 * g;
        for (int h = 0; h < 2; h++) {
            __m256i w16[4][4]; /* sub-block 2g in two pieces, then 2g + 1; column */
            for (int k = 0; k < 4; k++) {
                __m256i lo, hi;
                q6k_step_levels(l, p, g, h, k, &lo, &hi);
                q6k_step_dot(NC, lo, hi, x, k, w16);
            }
            __m256i sp, sc0, sc1;
            q6k_group_scales(l, p, g, h, &sp, &sc0, &sc1);
            q6k_group_sums(NC, w16, sp, sc0, sc1, y, g, A[h], O[h]);
        }
    }
}

/* NC columns (their activations at xq + c * x_stride, into out[c]) over one panel p of rv valid rows. */
INLINE AVX2 void panel_k_cols(int NC, enum ty_type type, const struct ty_pack_k_layout *l, int64_t n, const uint8_t *p,
                              int rv, const void *xq, size_t x_stride, float *const *out) {
    __m256 acc[2][FEW_DIRECT];
    for (int c = 0; c < NC; c++) acc[0][c] = acc[1][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / TY_QK_K; b++, p += l->bp) {
        ty__stream_ahead(p, l->bp);
        const struct ty_block_q8_K *yb[FEW_DIRECT];
        __m256i A[2][FEW_DIRECT], B[2][FEW_DIRECT];
        for (int c = 0; c < NC; c++) {
            yb[c] = (const struct ty_block_q8_K *)((const char *)xq + (size_t)c * x_stride) + b;
            A[0][c] = A[1][c] = B[0][c] = B[1][c] = _mm256_setzero_si256();
        }
        if (type == TY_TYPE_Q6_K)
            q6k_super_cols(NC, l, p, yb, A, B);
        else
            qk_super_cols(NC, type == TY_TYPE_Q5_K, l, p, yb, A, B);
        for (int c = 0; c < NC; c++)
            for (int h = 0; h < 2; h++)
                acc[h][c] =
                    k_float(l->six, k_row_scales(p, h), k_row_mins(l, p, h), A[h][c], B[h][c], yb[c]->d, acc[h][c]);
    }
    for (int c = 0; c < NC; c++)
        for (int h = 0; h < 2; h++) store_half(out[c], h, rv, acc[h][c], _mm256_setzero_ps());
}

/* ==== gemm of the K-quants on unpacked tiles (as the 32-element types' above) ==== */

#define TILE_SUPERS 4 /* super-blocks per tile: 4 x 5760 bytes, in L1 */

struct k_tile {                           /* both halves of a super-block */
    __m256i lv[2][8][8];                  /* half, sub-block (Q6_K: group of 32) j: lo and hi of steps 0..3 */
    __m256i s0[2][8], s1[2][8], s2[2][8]; /* Q4_K / Q5_K: scales, minimums (words); Q6_K: sc0, sc1, sp of a group */
    __m256 dw[2], dm[2];
};
_Static_assert(TILE_SUPERS * sizeof(struct k_tile) <= (size_t)TY_PANEL_MAX_ROWS * TY_PANEL_KC_INT * 2,
               "a tile fits the gemm scratch (its panel buffer alone)");

INLINE AVX2 void k_unpack(const struct ty_pack_k_layout *l, const uint8_t *p, struct k_tile *t) {
    for (int h = 0; h < 2; h++) {
        if (l->six) {
            for (int g = 0; g < 8; g++) {
                q6k_group_scales(l, p, g, h, &t->s2[h][g], &t->s0[h][g], &t->s1[h][g]);
                for (int k = 0; k < 4; k++)
                    q6k_step_levels(l, p, g, h, k, &t->lv[h][g][2 * k], &t->lv[h][g][2 * k + 1]);
            }
        } else {
            const struct qk_scales sc = qk_half_scales(l, p, h);
            for (int j = 0; j < 8; j++) {
                qk_sub_scales(&sc, j, &t->s0[h][j], &t->s1[h][j]);
                for (int k = 0; k < 4; k++)
                    qk_step_levels(l->five, l, p, j, h, k, &t->lv[h][j][2 * k], &t->lv[h][j][2 * k + 1]);
            }
        }
        t->dw[h] = k_row_scales(p, h), t->dm[h] = k_row_mins(l, p, h);
    }
}

/* One column (y: its first super-block) over tiles of super-blocks s0.., both halves at once (acc[h]): the halves'
 * identical activation broadcasts are one (the compiler shares them), so each serves 16 rows. */
INLINE AVX2 void k_tile_col(const struct ty_pack_k_layout *l, const struct k_tile *t, int64_t s0, int64_t ns,
                            const struct ty_block_q8_K *y, __m256 *acc) {
    for (int64_t i = 0; i < ns; i++, t++) {
        const struct ty_block_q8_K *yb = y + s0 + i;
        __m256i A[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}, B[2] = {A[0], A[0]};
        for (int j = 0; j < 8; j++) {
            const int8_t *x = yb->qs + 32 * j;
            for (int h = 0; h < 2; h++) {
                __m256i w16[4][4];
                if (l->six) {
                    for (int k = 0; k < 4; k++) q6k_step_dot(1, t->lv[h][j][2 * k], t->lv[h][j][2 * k + 1], &x, k, w16);
                    q6k_group_sums(1, w16, t->s2[h][j], t->s0[h][j], t->s1[h][j], &yb, j, A + h, B + h);
                } else {
                    w16[0][0] = w16[1][0] = _mm256_setzero_si256();
                    for (int k = 0; k < 4; k++)
                        q32_step_dot(1, t->lv[h][j][2 * k], t->lv[h][j][2 * k + 1], &x, k, w16[l->five ? k / 2 : 0]);
                    qk_sub_sums(1, l->five, w16, t->s0[h][j], t->s1[h][j], &yb, j, A + h, B + h);
                }
            }
        }
        for (int h = 0; h < 2; h++) acc[h] = k_float(l->six, t->dw[h], t->dm[h], A[h], B[h], yb->d, acc[h]);
    }
}

/* ==== The tile driver, both kinds ==== */

/* Columns of one group over the tiles of a chunk (units u0.., nt of them), both halves of the panel: the 4/5-bit
 * 32-element types 2 at a time (then 1), Q8_0 and the K-quants 1 at a time; their accumulators start at zero in the
 * first chunk (u0 0) and are kept in st[column][half] (sums, minimum terms) between chunks. More columns cost more
 * than the broadcasts they save: Q8_0 2 columns 76-88 GOP/s on one thread (90-94 with its levels in_register), 1
 * column 95-100 (its vpsignb and vpmaddwd per vpmaddubsw bound it, not loads); the K-quants 2 columns (levels
 * in_register) Q4_K 133-145 against 145-149, Q6_K 84-91 against 108-110 (the sub-block sums of 4 columns and halves
 * spill). */
INLINE AVX2 void tile_group(bool kq, const struct ty_pack_layout *l, const struct ty_pack_k_layout *lk,
                            const void *tile, int64_t u0, int64_t nt, int64_t n, const void *xq, size_t x_stride,
                            int ncols, __m256 (*st)[2][2]) {
    const __m256 zero = _mm256_setzero_ps();
    for (int c = 0; c < ncols;) {
        const int nc = ncols - c < 2 || kq || l->bits == 8 ? 1 : 2;
        const char *x = (const char *)xq + (size_t)c * x_stride;
        if (kq) {
            __m256 acc[2] = {u0 ? st[c][0][0] : zero, u0 ? st[c][1][0] : zero};
            k_tile_col(lk, tile, u0, nt, (const struct ty_block_q8_K *)x, acc);
            st[c][0][0] = acc[0], st[c][1][0] = acc[1], st[c][0][1] = st[c][1][1] = zero;
        } else {
            struct ty_q8_act a[2];
            __m256 acc[4], accm[4];
            for (int i = 0; i < nc; i++) {
                a[i] = ty__q8_act(x + (size_t)i * x_stride, n);
                for (int h = 0; h < 2; h++)
                    acc[2 * i + h] = u0 ? st[c + i][h][0] : zero, accm[2 * i + h] = u0 ? st[c + i][h][1] : zero;
            }
            if (nc == 2)
                q32_tile_cols(2, l, tile, u0, nt, a, acc, accm);
            else
                q32_tile_cols(1, l, tile, u0, nt, a, acc, accm);
            for (int i = 0; i < nc; i++)
                for (int h = 0; h < 2; h++) st[c + i][h][0] = acc[2 * i + h], st[c + i][h][1] = accm[2 * i + h];
        }
        c += nc;
    }
}

/* Panels outer, then groups of TILE_COLS columns, then chunks of blocks (super-blocks) unpacked into the scratch. */
INLINE AVX2 void gemm_tiles(bool kq, const struct ty_pack_layout *pl, const struct ty_pack_k_layout *plk, int64_t n,
                            int64_t rows, const void *w, size_t panel_stride, int64_t cols, const void *xq,
                            size_t x_stride, float *out, int64_t ld_out, void *scratch) {
    const struct ty_pack_layout l = *pl; /* local copies: constants the compiler sees through */
    const struct ty_pack_k_layout lk = *plk;
    const int64_t units = kq ? n / TY_QK_K : n / 32, per = kq ? TILE_SUPERS : TILE_BLOCKS;
    const size_t bp = (size_t)(kq ? lk.bp : l.bp);
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        const int rv = panel_rows(rows, r);
        const uint8_t *p = panel_at(w, panel_stride, r);
        for (int64_t c0 = 0; c0 < cols; c0 += TILE_COLS) {
            const int ncols = cols - c0 < TILE_COLS ? (int)(cols - c0) : TILE_COLS;
            __m256 st[TILE_COLS][2][2]; /* written by the first chunk */
            for (int64_t u0 = 0; u0 < units; u0 += per) {
                const int64_t nt = units - u0 < per ? units - u0 : per;
                for (int64_t i = 0; i < nt; i++)
                    if (kq)
                        k_unpack(&lk, p + (size_t)(u0 + i) * bp, (struct k_tile *)scratch + i);
                    else
                        q32_unpack(&l, p + (size_t)(u0 + i) * bp, (struct q32_tile *)scratch + i);
                tile_group(kq, &l, &lk, scratch, u0, nt, n, (const char *)xq + (size_t)c0 * x_stride, x_stride, ncols,
                           st);
            }
            for (int c = 0; c < ncols; c++)
                for (int h = 0; h < 2; h++) store_half(out + (c0 + c) * ld_out + r, h, rv, st[c][h][0], st[c][h][1]);
        }
    }
}

/* Fewer columns than this run straight on the panels, FEW_DIRECT at a time (each panel read once per group, the
 * groups back to back while it is in cache); more go through the tiles. bench_kernels --prefill N on 2 threads:
 * widths 2 and 4 gained 1.3-3x for Q4_0, Q8_0 and Q4_K_M; at 8-15 the two ran even for Q4_0 and Q8_0 and the tiles
 * were ahead for Q4_K_M. */
#define DIRECT_BELOW 8

/* Panels outer, then groups of up to FEW_DIRECT columns, each through the kernel of its literal width (a single
 * column through gemv's own panel loop). */
INLINE AVX2 void gemm_direct(bool kq, enum ty_type type, const struct ty_pack_layout *pl,
                             const struct ty_pack_k_layout *plk, int64_t n, int64_t rows, const void *w,
                             size_t panel_stride, int64_t cols, const void *xq, size_t x_stride, float *out,
                             int64_t ld_out) {
    const struct ty_pack_layout l = *pl;
    const struct ty_pack_k_layout lk = *plk;
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        const int rv = panel_rows(rows, r);
        const uint8_t *p = panel_at(w, panel_stride, r);
        for (int64_t c0 = 0; c0 < cols; c0 += FEW_DIRECT) {
            const int nc = cols - c0 < FEW_DIRECT ? (int)(cols - c0) : FEW_DIRECT;
            const char *x = (const char *)xq + (size_t)c0 * x_stride;
            float *o[FEW_DIRECT];
            struct ty_q8_act a[FEW_DIRECT];
            for (int c = 0; c < nc; c++) {
                o[c] = out + (size_t)(c0 + c) * (size_t)ld_out + r;
                if (!kq) a[c] = ty__q8_act(x + (size_t)c * x_stride, n);
            }
            if (kq) {
                if (nc == 1) panel_k_cols(1, type, &lk, n, p, rv, x, x_stride, o);
                if (nc == 2) panel_k_cols(2, type, &lk, n, p, rv, x, x_stride, o);
                if (nc == 3) panel_k_cols(3, type, &lk, n, p, rv, x, x_stride, o);
                if (nc == 4) panel_k_cols(4, type, &lk, n, p, rv, x, x_stride, o);
            } else {
                if (nc == 1) panel_q32(&l, n / 32, p, a[0], o[0], rv);
                if (nc == 2) panel_q32_cols(2, &l, n / 32, p, a, o, rv);
                if (nc == 3) panel_q32_cols(3, &l, n / 32, p, a, o, rv);
                if (nc == 4) panel_q32_cols(4, &l, n / 32, p, a, o, rv);
            }
        }
    }
}

/* A packed gemm of either kind: a few columns straight on the panels, more on tiles. */
INLINE AVX2 void gemm_panels(bool kq, enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                             int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out, void *scratch) {
    struct ty_pack_layout l = {0};
    struct ty_pack_k_layout lk = {0};
    if (kq)
        ty__pack_k_layout(type, &lk);
    else
        ty__pack_layout(type, &l);
    if (cols < DIRECT_BELOW)
        gemm_direct(kq, type, &l, &lk, n, rows, w, panel_stride, cols, xq, x_stride, out, ld_out);
    else
        gemm_tiles(kq, &l, &lk, n, rows, w, panel_stride, cols, xq, x_stride, out, ld_out, scratch);
}
INLINE AVX2 void gemm_panels_q32(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                 int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                                 void *scratch) {
    gemm_panels(false, type, n, rows, w, panel_stride, cols, xq, x_stride, out, ld_out, scratch);
}
INLINE AVX2 void gemm_panels_k(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                               int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                               void *scratch) {
    gemm_panels(true, type, n, rows, w, panel_stride, cols, xq, x_stride, out, ld_out, scratch);
}

/* The table's packed kernels of one type: gemv and gemm on panels through the drivers of its kind (q32, k, float). */
#define PACKED(sfx, kind, T)                                                                                           \
    static AVX2 void gemv_packed_##sfx(int64_t n, int64_t rows, const void *w, size_t ps, const void *xq,              \
                                       float *out) {                                                                   \
        gemv_panels_##kind(T, n, rows, w, ps, xq, out);                                                                \
    }                                                                                                                  \
    static AVX2 void gemm_packed_##sfx(int64_t n, int64_t rows, const void *w, size_t ps, int64_t cols,                \
                                       const void *xq, size_t xs, float *out, int64_t ld_out, void *scratch) {         \
        gemm_panels_##kind(T, n, rows, w, ps, cols, xq, xs, out, ld_out, scratch);                                     \
    }

PACKED(q4_0, q32, TY_TYPE_Q4_0)
PACKED(q4_1, q32, TY_TYPE_Q4_1)
PACKED(q5_0, q32, TY_TYPE_Q5_0)
PACKED(q5_1, q32, TY_TYPE_Q5_1)
PACKED(q8_0, q32, TY_TYPE_Q8_0)
PACKED(q4_K, k, TY_TYPE_Q4_K)
PACKED(q5_K, k, TY_TYPE_Q5_K)
PACKED(q6_K, k, TY_TYPE_Q6_K)

/* ==== Packed float panels (pack.c): step k is element k of 16 rows ====
 * One FMA per 8 rows and step against a broadcast activation; a column's steps go round two accumulators per half,
 * added up at the end. BF16 steps are one 32-byte load: its "halves" are the even rows (the low halves of its dwords,
 * shifted up) and the odd rows (the high halves, masked). gemm (direct on the panels) runs two columns at a time with
 * the same accumulators per column, so a column gets gemv's bits; its eight chains keep both FMA pipes busy with one
 * weight load per four FMAs (gemv's four chains run at half the FMA rate, still twice what a thread's share of DRAM
 * needs). */

/* Half h (F32, F16: rows 8h..8h+7; BF16: rows h, h + 2, ..., h + 14) of step i of a panel. */
INLINE AVX2 __m256 float_step(enum fkind k, const uint8_t *p, int64_t i, int h) {
    if (k == FK_F32) return _mm256_loadu_ps((const float *)(p + (size_t)i * 64 + 32 * h));
    if (k == FK_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + (size_t)i * 32 + 16 * h)));
    __m256i v = _mm256_loadu_si256((const __m256i *)(p + (size_t)i * 32));
    return _mm256_castsi256_ps(h ? _mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)) : _mm256_slli_epi32(v, 16));
}

/* A half's eight sums into the panel's rows (rv valid). */
INLINE AVX2 void store_float_half(enum fkind k, float *out, int h, int rv, __m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    for (int i = 0; i < 8; i++) {
        int r = k == FK_BF16 ? 2 * i + h : 8 * h + i;
        if (r < rv) out[r] = t[i];
    }
}

/* NC columns of one panel (out[c * ld_out + r]). */
INLINE AVX2 void panel_float(int NC, enum fkind k, int64_t n, const uint8_t *p, const float *const *x, float *out,
                             int64_t ld_out, int rv) {
    __m256 acc[2][2][2]; /* column, step parity, half */
    for (int c = 0; c < NC; c++)
        for (int u = 0; u < 2; u++) acc[c][u][0] = acc[c][u][1] = _mm256_setzero_ps();
    const size_t step = k == FK_F32 ? 64 : 32;
    for (int64_t i = 0; i < n; i++) {
        const int u = (int)(i & 1);
        if (step == 64 || !u) ty__stream_ahead(p + (size_t)i * step, 64);
        __m256 w0 = float_step(k, p, i, 0), w1 = float_step(k, p, i, 1);
        for (int c = 0; c < NC; c++) {
            __m256 xv = _mm256_broadcast_ss(x[c] + i);
            acc[c][u][0] = _mm256_fmadd_ps(w0, xv, acc[c][u][0]);
            acc[c][u][1] = _mm256_fmadd_ps(w1, xv, acc[c][u][1]);
        }
    }
    for (int c = 0; c < NC; c++)
        for (int h = 0; h < 2; h++)
            store_float_half(k, out + c * ld_out, h, rv, _mm256_add_ps(acc[c][0][h], acc[c][1][h]));
}

INLINE AVX2 void gemv_panels_float(enum fkind k, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                   const void *xq, float *out) {
    const float *x = xq;
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        const int rv = panel_rows(rows, r);
        panel_float(1, k, n, panel_at(w, panel_stride, r), &x, out + r, 0, rv);
    }
}

/* Panels outer, columns in pairs inner (the last one alone). */
INLINE AVX2 void gemm_panels_float(enum fkind k, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                   int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                                   void *scratch) {
    (void)scratch;
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        const int rv = panel_rows(rows, r);
        const uint8_t *p = panel_at(w, panel_stride, r);
        for (int64_t c = 0; c < cols; c += 2) {
            const float *x[2] = {(const float *)((const char *)xq + (size_t)c * x_stride), NULL};
            x[1] = c + 1 < cols ? (const float *)((const char *)xq + (size_t)(c + 1) * x_stride) : x[0];
            if (c + 2 <= cols)
                panel_float(2, k, n, p, x, out + c * ld_out + r, ld_out, rv);
            else
                panel_float(1, k, n, p, x, out + c * ld_out + r, ld_out, rv);
        }
    }
}

PACKED(f32, float, FK_F32)
PACKED(f16, float, FK_F16)
PACKED(bf16, float, FK_BF16)
#undef PACKED

/* ==== Gemm micro-kernels: 8 rows (one vector) ==== */

#define PR 8

INLINE AVX2 void store_cols(int NC, const __m256 *acc, float *out, int64_t ld_out, int c0, int rv, bool accumulate) {
    for (int c = 0; c < NC; c++) {
        float *o = out + (c0 + c) * ld_out;
        if (rv == PR) {
            __m256 v = acc[c];
            if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(o));
            _mm256_storeu_ps(o, v);
        } else {
            float t[PR];
            _mm256_storeu_ps(t, acc[c]);
            for (int r = 0; r < rv; r++) o[r] = accumulate ? o[r] + t[r] : t[r];
        }
    }
}

/* Int16 panel: vpmaddwd of 8 rows' level pairs with a broadcast activation pair; up to 4 columns. */
INLINE AVX2 void s16_body(int NC, const struct ty_panel *p, const struct ty_panel_cols *pc, int c0, float *out,
                          int64_t ld_out, int rv, bool accumulate) {
    __m256 accf[4];
    const int16_t *x[4];
    for (int c = 0; c < NC; c++) accf[c] = _mm256_setzero_ps(), x[c] = pc->x[c0 + c];
    const uint8_t *wp = p->w;
    const int G = p->G;
    for (int64_t g = 0; g < p->kc / G; g++) {
        __m256i acci[4];
        for (int c = 0; c < NC; c++) acci[c] = _mm256_setzero_si256();
        for (int s = 0; s < G / 2; s++, wp += 32) {
            __m256i wv = _mm256_loadu_si256((const __m256i *)wp);
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++)
                acci[c] =
                    _mm256_add_epi32(acci[c], _mm256_madd_epi16(wv, _mm256_set1_epi32(load_i32(x[c] + g * G + 2 * s))));
        }
        __m256 sc = _mm256_loadu_ps(p->scale + g * PR);
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) {
            __m256 s = _mm256_mul_ps(sc, _mm256_set1_ps(pc->xs[(c0 + c) * pc->ld + g]));
            accf[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acci[c]), s, accf[c]);
        }
        if (p->has_min) {
            __m256 mn = _mm256_loadu_ps(p->min + g * PR);
            for (int c = 0; c < NC; c++)
                accf[c] = _mm256_fmadd_ps(mn, _mm256_set1_ps(pc->xm[(c0 + c) * pc->ld + g]), accf[c]);
        }
    }
    store_cols(NC, accf, out, ld_out, c0, rv, accumulate);
}

/* F32 panel: one FMA per step and column; up to 8 columns (eight independent chains). */
INLINE AVX2 void f32_body(int NC, const struct ty_panel *p, const struct ty_panel_cols *pc, int c0, float *out,
                          int64_t ld_out, int rv, bool accumulate) {
    __m256 acc[8];
    const float *x[8];
    for (int c = 0; c < NC; c++) acc[c] = _mm256_setzero_ps(), x[c] = pc->x[c0 + c];
    const float *wp = p->w;
    for (int64_t k = 0; k < p->kc; k++, wp += PR) {
        __m256 wv = _mm256_loadu_ps(wp);
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) acc[c] = _mm256_fmadd_ps(wv, _mm256_set1_ps(x[c][k]), acc[c]);
    }
    store_cols(NC, acc, out, ld_out, c0, rv, accumulate);
}

static AVX2 void kernel_s16(const struct ty_panel *p, const struct ty_panel_cols *pc, float *out, int64_t ld_out,
                            int rv, bool accumulate) {
    int c = 0;
    if (c + 4 <= pc->n) s16_body(4, p, pc, c, out, ld_out, rv, accumulate), c += 4;
    if (c + 2 <= pc->n) s16_body(2, p, pc, c, out, ld_out, rv, accumulate), c += 2;
    if (c < pc->n) s16_body(1, p, pc, c, out, ld_out, rv, accumulate);
}

static AVX2 void kernel_f32(const struct ty_panel *p, const struct ty_panel_cols *pc, float *out, int64_t ld_out,
                            int rv, bool accumulate) {
    int c = 0;
    if (c + 8 <= pc->n) f32_body(8, p, pc, c, out, ld_out, rv, accumulate), c += 8;
    if (c + 4 <= pc->n) f32_body(4, p, pc, c, out, ld_out, rv, accumulate), c += 4;
    if (c + 2 <= pc->n) f32_body(2, p, pc, c, out, ld_out, rv, accumulate), c += 2;
    if (c < pc->n) f32_body(1, p, pc, c, out, ld_out, rv, accumulate);
}

static const struct ty_gemm_impl impl_s16 = {TY_PANEL_S16, PR, 4, kernel_s16};
static const struct ty_gemm_impl impl_f32 = {TY_PANEL_F32, PR, 8, kernel_f32};

TY_GEMM_PANEL_FN(gemm_f32, impl_f32, TY_TYPE_F32, TY_ACT_F32)
TY_GEMM_PANEL_FN(gemm_f16, impl_f32, TY_TYPE_F16, TY_ACT_F32)
TY_GEMM_PANEL_FN(gemm_bf16, impl_f32, TY_TYPE_BF16, TY_ACT_F32)
TY_GEMM_PANEL_FN(gemm_q8_0, impl_s16, TY_TYPE_Q8_0, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q4_0, impl_s16, TY_TYPE_Q4_0, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q4_1, impl_s16, TY_TYPE_Q4_1, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q5_0, impl_s16, TY_TYPE_Q5_0, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q5_1, impl_s16, TY_TYPE_Q5_1, TY_ACT_Q8)
TY_GEMM_PANEL_FN(gemm_q4_K, impl_s16, TY_TYPE_Q4_K, TY_ACT_Q8_K)
TY_GEMM_PANEL_FN(gemm_q5_K, impl_s16, TY_TYPE_Q5_K, TY_ACT_Q8_K)
TY_GEMM_PANEL_FN(gemm_q6_K, impl_s16, TY_TYPE_Q6_K, TY_ACT_Q8_K)

/* ==== Table ==== */

void ty__simd_fill_avx2(struct ty_simd *s) {
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
        t->gemv_isa = t->gemm_isa = "avx2";
    }
    s->t[TY_TYPE_Q4_0].gemv_packed = gemv_packed_q4_0, s->t[TY_TYPE_Q4_0].gemm_packed = gemm_packed_q4_0;
    s->t[TY_TYPE_Q4_1].gemv_packed = gemv_packed_q4_1, s->t[TY_TYPE_Q4_1].gemm_packed = gemm_packed_q4_1;
    s->t[TY_TYPE_Q5_0].gemv_packed = gemv_packed_q5_0, s->t[TY_TYPE_Q5_0].gemm_packed = gemm_packed_q5_0;
    s->t[TY_TYPE_Q5_1].gemv_packed = gemv_packed_q5_1, s->t[TY_TYPE_Q5_1].gemm_packed = gemm_packed_q5_1;
    s->t[TY_TYPE_Q8_0].gemv_packed = gemv_packed_q8_0, s->t[TY_TYPE_Q8_0].gemm_packed = gemm_packed_q8_0;
    s->t[TY_TYPE_Q4_K].gemv_packed = gemv_packed_q4_K, s->t[TY_TYPE_Q4_K].gemm_packed = gemm_packed_q4_K;
    s->t[TY_TYPE_Q5_K].gemv_packed = gemv_packed_q5_K, s->t[TY_TYPE_Q5_K].gemm_packed = gemm_packed_q5_K;
    s->t[TY_TYPE_Q6_K].gemv_packed = gemv_packed_q6_K, s->t[TY_TYPE_Q6_K].gemm_packed = gemm_packed_q6_K;
    s->t[TY_TYPE_F32].gemv_packed = gemv_packed_f32, s->t[TY_TYPE_F32].gemm_packed = gemm_packed_f32;
    s->t[TY_TYPE_F16].gemv_packed = gemv_packed_f16, s->t[TY_TYPE_F16].gemm_packed = gemm_packed_f16;
    s->t[TY_TYPE_BF16].gemv_packed = gemv_packed_bf16, s->t[TY_TYPE_BF16].gemm_packed = gemm_packed_bf16;
    for (int t = 0; t < TY_TYPE_COUNT; t++) s->t[t].gemm_packed_direct = s->t[t].gemm_packed != NULL; /* on panels */
}

#else /* not x86-64 */

void ty__simd_fill_avx2(struct ty_simd *s) {
    (void)s;
}

#endif
