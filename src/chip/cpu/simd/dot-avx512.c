/*
 * dot-avx512.c - the AVX-512 kernels of four dispatch paths:
 *   avx512      AVX-512 F/BW/DQ/VL: integer dots by vpmaddubsw + vpmaddwd, gemm panels of int16 (vpmaddwd);
 *   avx512vnni  + VNNI: vpdpbusd / vpdpwssd, gemm panels of uint8 (vpdpbusd with a broadcast activation quad);
 *   avx512bf16  + BF16: BF16 weights take bf16 activations and vdpbf16ps (32 products per instruction);
 *   avx512amx   + AMX-INT8: prefill of the packed 32-element types on the tile unit (dot-amx.h).
 * Every function carries its own target attribute, so this file builds for any x86-64 and only runs where
 * dispatch.c found the features. F16 weights convert with F16C (vcvtph2ps), BF16 ones by a 16-bit shift or vdpbf16ps.
 *
 * The quantised gemv kernels live in dot-avx512-int.h, compiled once per integer instruction set. Activation
 * quantisers here reproduce the scalar ones bit for bit (same scale arithmetic, round-to-nearest-even conversion,
 * NaN handled by operand order of vmaxps).
 */
#include "chip/cpu/simd/simd-impl.h"

#if defined(__x86_64__)

#include <math.h>

/* TY_AVX512_EMULATED: the library's emulated test build (CMakeLists.txt), the intrinsics in portable C
 * (tests/chip/avx512-emu.h) compiled as AVX2 code */
#if defined(TY_AVX512_EMULATED)
#include "avx512-emu.h"
#define TARGET_BASE "avx2,fma,f16c,bmi,bmi2"
#define AVX512      __attribute__((target(TARGET_BASE)))
#define AVX512_VNNI AVX512
#define AVX512_BF16 AVX512
#else
#include <immintrin.h>
#define TARGET_BASE         "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2"
#define AVX512              __attribute__((target(TARGET_BASE)))
#define AVX512_VNNI         __attribute__((target(TARGET_BASE ",avx512vnni")))
#define AVX512_BF16         __attribute__((target(TARGET_BASE ",avx512vnni,avx512bf16")))
#define AVX512_AMX          __attribute__((target(TARGET_BASE ",avx512vnni,avx512bf16,amx-tile,amx-int8")))
#define TY_HAVE_AMX_KERNELS 1 /* not in the emulated build: no portable AMX intrinsics */
#endif
#define INLINE static inline __attribute__((always_inline))

/* ==== Helpers ==== */

/* The first `bytes` lanes of a 64-byte vector (all of them from 64 up, none from 0 down). */
INLINE AVX512 __mmask64 bytes_mask(int bytes) {
    return bytes >= 64 ? ~0ull : bytes <= 0 ? 0 : (1ull << bytes) - 1;
}

/* The first n of 16 float lanes (all of them from 16 up): a partial panel's rows, a row's last elements. */
INLINE AVX512 __mmask16 lanes_mask(int64_t n) {
    return n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
}

INLINE uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

INLINE int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ==== Activation quantisers ==== */

/* Largest |x| of a vector, NaN lanes ignored: vmaxps returns its second operand when the first is NaN. */
INLINE AVX512 __m512 abs_max(__m512 m, __m512 x) {
    return _mm512_max_ps(_mm512_abs_ps(x), m);
}

/* Levels of x * iscale as ty__quant_round(.., -127, 127) makes them: NaN to -127 (second operand again). */
INLINE AVX512 __m512i levels(__m512 x, __m512 iscale) {
    __m512 v = _mm512_max_ps(_mm512_mul_ps(x, iscale), _mm512_set1_ps(-127.0f));
    return _mm512_cvtps_epi32(_mm512_min_ps(v, _mm512_set1_ps(127.0f)));
}

/* Lane j of the result: v[j] reduced over its 16 lanes, by max (floats, none NaN) or by add (int32). One shuffle
 * network for 16 vectors at once (46 operations) instead of 16 horizontal reductions (about 150). */
INLINE AVX512 __m512 fold2(__m512 a, __m512 b, bool add) {
    return add ? _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)))
               : _mm512_max_ps(a, b);
}
INLINE AVX512 __m512 reduce16(const __m512 *v, bool add) {
    __m512 h[8], q[4], e[2];
    for (int i = 0; i < 8; i++) /* [v2i lanes 0|2, 1|3 folded | v2i+1 the same]: 8 partials per vector */
        h[i] = fold2(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                     _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee), add);
    for (int i = 0; i < 4; i++) /* 128-bit lane k: 4 partials of vector 4i + k */
        q[i] = fold2(_mm512_shuffle_f32x4(h[2 * i], h[2 * i + 1], 0x88),
                     _mm512_shuffle_f32x4(h[2 * i], h[2 * i + 1], 0xdd), add);
    for (int i = 0; i < 2; i++) /* lane k: 2 partials of vectors 8i + k and 8i + 4 + k */
        e[i] = fold2(_mm512_unpacklo_ps(q[2 * i], q[2 * i + 1]), _mm512_unpackhi_ps(q[2 * i], q[2 * i + 1]), add);
    /* lane k: vectors k, 8 + k, 4 + k, 12 + k */
    __m512 r = fold2(_mm512_unpacklo_ps(e[0], e[1]), _mm512_unpackhi_ps(e[0], e[1]), add);
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 13, 9, 5, 1, 14, 10, 6, 2, 12, 8, 4, 0);
    return _mm512_permutexvar_ps(order, r);
}

/* 16 blocks (512 elements) at once: their largest magnitudes, scales and sums each in one vector. */
INLINE AVX512 void quantize_q8_16(const float *x, struct ty_q8_act a, int64_t b0) {
    __m512 m[16];
    for (int j = 0; j < 16; j++)
        m[j] = abs_max(abs_max(_mm512_setzero_ps(), _mm512_loadu_ps(x + 32 * j)), _mm512_loadu_ps(x + 32 * j + 16));
    const __m512 amax = reduce16(m, false);
    /* ty__q8_act_iscale, 16 at a time */
    const __mmask16 ok = _mm512_cmp_ps_mask(amax, _mm512_set1_ps(1e-30f), _CMP_GE_OQ) &
                         _mm512_cmp_ps_mask(amax, _mm512_set1_ps(3.4e38f), _CMP_LE_OQ);
    const __m512 iscale = _mm512_maskz_div_ps(ok, _mm512_set1_ps(127.0f), amax);
    _mm512_storeu_ps(a.d + b0, _mm512_maskz_div_ps(ok, _mm512_set1_ps(1.0f), iscale));
    float is[16];
    _mm512_storeu_ps(is, iscale);
    __m512 sums[16];
    for (int j = 0; j < 16; j++) {
        const __m512 s = _mm512_set1_ps(is[j]);
        const __mmask16 keep = (ok >> j & 1) ? 0xffff : 0; /* a zero block: levels and sum 0 whatever x holds */
        __m512i q0 = _mm512_maskz_mov_epi32(keep, levels(_mm512_loadu_ps(x + 32 * j), s));
        __m512i q1 = _mm512_maskz_mov_epi32(keep, levels(_mm512_loadu_ps(x + 32 * j + 16), s));
        _mm_storeu_si128((__m128i *)(a.qs + 32 * (b0 + j)), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(a.qs + 32 * (b0 + j) + 16), _mm512_cvtepi32_epi8(q1));
        sums[j] = _mm512_castsi512_ps(_mm512_add_epi32(q0, q1));
    }
    _mm512_storeu_si512(a.sum + b0, _mm512_castps_si512(reduce16(sums, true)));
}

static AVX512 void quantize_q8(const float *x, void *xq, int64_t n) {
    struct ty_q8_act a = ty__q8_act(xq, n);
    int64_t b = 0;
    for (; b + 16 <= n / 32; b += 16) quantize_q8_16(x + 32 * b, a, b);
    for (; b < n / 32; b++) {
        __m512 x0 = _mm512_loadu_ps(x + 32 * b), x1 = _mm512_loadu_ps(x + 32 * b + 16);
        __m512 m = abs_max(abs_max(_mm512_setzero_ps(), x0), x1);
        float iscale = ty__q8_act_iscale(_mm512_reduce_max_ps(m));
        if (iscale == 0) {
            memset(a.qs + 32 * b, 0, 32);
            a.d[b] = 0, a.sum[b] = 0;
            continue;
        }
        __m512 s = _mm512_set1_ps(iscale);
        __m512i q0 = levels(x0, s), q1 = levels(x1, s);
        _mm_storeu_si128((__m128i *)(a.qs + 32 * b), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(a.qs + 32 * b + 16), _mm512_cvtepi32_epi8(q1));
        a.sum[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        a.d[b] = 1.0f / iscale;
    }
}

/* Byte for byte ty__q8_K_from_float (quant-k.c). */
static AVX512 void quantize_q8_K(const float *x, void *xq, int64_t n) {
    struct ty_block_q8_K *y = xq;
    for (int64_t b = 0; b < n / TY_QK_K; b++, x += TY_QK_K) {
        __m512 m = _mm512_setzero_ps();
        for (int j = 0; j < TY_QK_K; j += 16) m = abs_max(m, _mm512_loadu_ps(x + j));
        float amax = _mm512_reduce_max_ps(m);
        float iscale = amax > 0 && isfinite(amax) ? 127.0f / amax : 0;
        __m512 s = _mm512_set1_ps(iscale), q[16];
        for (int j = 0; j < 16; j++) {
            __m512i l = levels(_mm512_loadu_ps(x + 16 * j), s);
            _mm_storeu_si128((__m128i *)(y[b].qs + 16 * j), _mm512_cvtepi32_epi8(l));
            q[j] = _mm512_castsi512_ps(l);
        }
        _mm256_storeu_si256((__m256i *)y[b].bsums, _mm512_cvtepi32_epi16(_mm512_castps_si512(reduce16(q, true))));
        y[b].d = iscale != 0 ? 1.0f / iscale : 0;
    }
}

/* Round to nearest even with the integer trick of ty__f32_to_bf16, so subnormals round as the reference does
 * (vcvtneps2bf16 would flush them to zero). */
INLINE AVX512 __m256i to_bf16(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i hi = _mm512_srli_epi32(u, 16);
    __m512i r =
        _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(hi, _mm512_set1_epi32(1))));
    r = _mm512_srli_epi32(r, 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

static AVX512 void quantize_bf16(const float *x, void *xq, int64_t n) {
    uint16_t *y = xq;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(y + i), to_bf16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(y + i, m, to_bf16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* ==== F32, F16, BF16 weights against f32 activations ==== */

enum fkind { FK_F32, FK_F16, FK_BF16 };

INLINE AVX512 __m512 load_w(enum fkind k, const uint8_t *p, int64_t i) {
    switch (k) {
    case FK_F32:
        return _mm512_loadu_ps(p + 4 * i);
    case FK_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 2 * i)));
    default:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + 2 * i))), 16));
    }
}

INLINE AVX512 __m512 load_w_masked(enum fkind k, const uint8_t *p, int64_t i, __mmask16 m) {
    switch (k) {
    case FK_F32:
        return _mm512_maskz_loadu_ps(m, p + 4 * i);
    case FK_F16:
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + 2 * i));
    default:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p + 2 * i)), 16));
    }
}

/* R rows, two accumulators each (eight independent FMA chains at R = 4). */
INLINE AVX512 void rows_float(enum fkind k, int R, int64_t n, const uint8_t *w, size_t ws, const float *x, float *out) {
    __m512 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            acc[r][0] = _mm512_fmadd_ps(load_w(k, w + r * ws, i), x0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(load_w(k, w + r * ws, i + 16), x1, acc[r][1]);
        }
    }
    for (; i < n; i += 16) {
        __mmask16 m = lanes_mask(n - i);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        for (int r = 0; r < R; r++) acc[r][0] = _mm512_fmadd_ps(load_w_masked(k, w + r * ws, i, m), xv, acc[r][0]);
    }
    for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}

INLINE AVX512 void gemv_float(enum fkind k, int64_t n, int64_t rows, const void *w, size_t ws, const void *xq,
                              float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_float(k, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_float(k, 1, n, p + r * ws, ws, xq, out + r);
}

static AVX512 void gemv_f32(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    gemv_float(FK_F32, n, rows, w, ws, xq, out);
}
static AVX512 void gemv_f16(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    gemv_float(FK_F16, n, rows, w, ws, xq, out);
}
static AVX512 void gemv_bf16(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    gemv_float(FK_BF16, n, rows, w, ws, xq, out);
}

/* ==== F32, F16, BF16 on packed panels (pack.c) ====
 * Step k of a panel is element k of 16 rows: one conversion serves every column, then one FMA per column with the
 * activation broadcast. Two accumulators per column (even and odd k), added once at the end: the same float steps
 * for every column whatever NC is, so gemv (NC = 1) and gemm give a column the same bits. */

INLINE AVX512 __m512 load_step(enum fkind k, const uint8_t *p) {
    switch (k) {
    case FK_F32:
        return _mm512_loadu_ps(p);
    case FK_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    default:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
    }
}

INLINE AVX512 void panel_float(int NC, enum fkind k, int64_t n, const uint8_t *p, const float *const *x, float *out,
                               int64_t ld_out, int rv) {
    const size_t step = k == FK_F32 ? 64 : 32;
    __m512 a0[8], a1[8];
    for (int c = 0; c < NC; c++) a0[c] = a1[c] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= n; i += 2, p += 2 * step) {
        ty__stream_ahead(p, 2 * step);
        __m512 w0 = load_step(k, p), w1 = load_step(k, p + step);
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) {
            a0[c] = _mm512_fmadd_ps(w0, _mm512_set1_ps(x[c][i]), a0[c]);
            a1[c] = _mm512_fmadd_ps(w1, _mm512_set1_ps(x[c][i + 1]), a1[c]);
        }
    }
    if (i < n) {
        __m512 w0 = load_step(k, p);
        for (int c = 0; c < NC; c++) a0[c] = _mm512_fmadd_ps(w0, _mm512_set1_ps(x[c][i]), a0[c]);
    }
    __mmask16 m = lanes_mask(rv);
    for (int c = 0; c < NC; c++) _mm512_mask_storeu_ps(out + c * ld_out, m, _mm512_add_ps(a0[c], a1[c]));
}

/* Many columns: two panels at a time, their steps converted to f32 once per chunk of FLOAT_KC steps into the scratch
 * (32 KiB, in L1) and then read by every column, FLOAT_NC columns at a time. Each f32 vector loaded serves FLOAT_NC
 * columns and each broadcast activation both panels: 24 multiply-adds a step pair from 16 loads, where panel_float
 * converts every step again for each group of 8 columns and loads a broadcast per multiply-add. The same two chains
 * per column and row (even and odd steps, added at the end) as panel_float, kept in the scratch between chunks, so the
 * same bits. */
#define FLOAT_KC 256
#define FLOAT_NC 6

/* Steps [k0, k0 + kc) of NP panels (p0, p1) as f32, step-major: step s of panel j at e + (s * NP + j) * 16. */
INLINE AVX512 void float_chunk(int NP, enum fkind k, const uint8_t *p0, const uint8_t *p1, int64_t k0, int64_t kc,
                               float *e) {
    const size_t step = k == FK_F32 ? 64 : 32;
    for (int64_t s = 0; s < kc; s++) {
        _mm512_store_ps(e + (s * NP) * 16, load_step(k, p0 + (size_t)(k0 + s) * step));
        if (NP == 2) _mm512_store_ps(e + (s * NP + 1) * 16, load_step(k, p1 + (size_t)(k0 + s) * step));
    }
}

/* NC columns x NP panels over the chunk's kc steps (global steps k0..; kc even unless it ends the row): the chains
 * (st: per column and panel, even then odd, 16 floats each) continue from st, or from zero when k0 is 0; `last`
 * writes a0 + a1 to out instead of back to st. */
INLINE AVX512 void float_cols(int NC, int NP, const float *e, int64_t kc, int64_t k0, const float *const *x, float *st,
                              bool last, float *out, int64_t ld_out, int rv0, int rv1) {
    __m512 a0[FLOAT_NC][2], a1[FLOAT_NC][2];
    for (int c = 0; c < NC; c++)
        for (int j = 0; j < NP; j++) {
            a0[c][j] = k0 ? _mm512_load_ps(st + (c * 4 + j * 2) * 16) : _mm512_setzero_ps();
            a1[c][j] = k0 ? _mm512_load_ps(st + (c * 4 + j * 2 + 1) * 16) : _mm512_setzero_ps();
        }
    int64_t s = 0;
    for (; s + 2 <= kc; s += 2) {
        __m512 w0[2], w1[2];
        for (int j = 0; j < NP; j++)
            w0[j] = _mm512_load_ps(e + (s * NP + j) * 16), w1[j] = _mm512_load_ps(e + ((s + 1) * NP + j) * 16);
#pragma GCC unroll 6
        for (int c = 0; c < NC; c++) {
            const __m512 x0 = _mm512_set1_ps(x[c][k0 + s]), x1 = _mm512_set1_ps(x[c][k0 + s + 1]);
            for (int j = 0; j < NP; j++) {
                a0[c][j] = _mm512_fmadd_ps(w0[j], x0, a0[c][j]);
                a1[c][j] = _mm512_fmadd_ps(w1[j], x1, a1[c][j]);
            }
        }
    }
    if (s < kc) /* the row's odd last step: the even chain, as panel_float */
        for (int c = 0; c < NC; c++)
            for (int j = 0; j < NP; j++)
                a0[c][j] =
                    _mm512_fmadd_ps(_mm512_load_ps(e + (s * NP + j) * 16), _mm512_set1_ps(x[c][k0 + s]), a0[c][j]);
    for (int c = 0; c < NC; c++)
        for (int j = 0; j < NP; j++) {
            if (last) {
                const int rv = j ? rv1 : rv0;
                _mm512_mask_storeu_ps(out + c * ld_out + j * TY_PACK_ROWS, lanes_mask(rv),
                                      _mm512_add_ps(a0[c][j], a1[c][j]));
            } else {
                _mm512_store_ps(st + (c * 4 + j * 2) * 16, a0[c][j]);
                _mm512_store_ps(st + (c * 4 + j * 2 + 1) * 16, a1[c][j]);
            }
        }
}

/* Rows [r, r + NP panels) by columns [0, cols), chunk by chunk. */
INLINE AVX512 void float_panels(int NP, enum fkind k, int64_t n, const uint8_t *p0, const uint8_t *p1, int rv0, int rv1,
                                int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out, float *e,
                                float *st) {
    for (int64_t k0 = 0; k0 < n; k0 += FLOAT_KC) {
        const int64_t kc = n - k0 < FLOAT_KC ? n - k0 : FLOAT_KC;
        const bool last = k0 + kc == n;
        float_chunk(NP, k, p0, p1, k0, kc, e);
        for (int64_t c = 0; c < cols;) {
            const float *x[FLOAT_NC];
            const int nc = cols - c < FLOAT_NC ? (int)(cols - c) : FLOAT_NC;
            for (int i = 0; i < nc; i++) x[i] = (const float *)((const char *)xq + (size_t)(c + i) * x_stride);
            float *o = out + c * ld_out, *sc = st + (size_t)c * 64;
            if (nc == FLOAT_NC)
                float_cols(FLOAT_NC, NP, e, kc, k0, x, sc, last, o, ld_out, rv0, rv1), c += FLOAT_NC;
            else if (nc >= 4)
                float_cols(4, NP, e, kc, k0, x, sc, last, o, ld_out, rv0, rv1), c += 4;
            else if (nc >= 2)
                float_cols(2, NP, e, kc, k0, x, sc, last, o, ld_out, rv0, rv1), c += 2;
            else
                float_cols(1, NP, e, kc, k0, x, sc, last, o, ld_out, rv0, rv1), c += 1;
        }
    }
}

/* gemm_packed_float's many-column path: pairs of panels through float_panels (the scratch holds every column's
 * chains, 4 x 64 bytes a column). */
INLINE AVX512 void gemm_packed_float_wide(enum fkind k, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                          int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                                          void *scratch) {
    float *e = scratch, *st = e + 2 * FLOAT_KC * 16;
    for (int64_t r = 0; r < rows; r += 2 * TY_PACK_ROWS) {
        const uint8_t *p0 = (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride;
        const int rv0 = rows - r < TY_PACK_ROWS ? (int)(rows - r) : TY_PACK_ROWS;
        if (rows - r > TY_PACK_ROWS) {
            const int rv1 = rows - r - TY_PACK_ROWS < TY_PACK_ROWS ? (int)(rows - r - TY_PACK_ROWS) : TY_PACK_ROWS;
            float_panels(2, k, n, p0, p0 + panel_stride, rv0, rv1, cols, xq, x_stride, out + r, ld_out, e, st);
        } else {
            float_panels(1, k, n, p0, NULL, rv0, 0, cols, xq, x_stride, out + r, ld_out, e, st);
        }
    }
}

INLINE AVX512 void gemm_packed_float(enum fkind k, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                     int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                                     void *scratch) {
    /* the wide path where the scratch holds the chunk and every column's chains (a few thousand columns; a backend
     * passes at most a few hundred at a time), else the narrow one */
    if (cols >= 2 * FLOAT_NC && scratch && 2 * FLOAT_KC * 64 + (size_t)cols * 256 <= ty__gemm_scratch_size()) {
        gemm_packed_float_wide(k, n, rows, w, panel_stride, cols, xq, x_stride, out, ld_out, scratch);
        return;
    }
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        int rv = rows - r < TY_PACK_ROWS ? (int)(rows - r) : TY_PACK_ROWS;
        const uint8_t *p = (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride;
        for (int64_t c = 0; c < cols;) {
            const float *x[8];
            int nc = cols - c < 8 ? (int)(cols - c) : 8;
            for (int i = 0; i < nc; i++) x[i] = (const float *)((const char *)xq + (size_t)(c + i) * x_stride);
            float *o = out + c * ld_out + r;
            if (nc == 8)
                panel_float(8, k, n, p, x, o, ld_out, rv), c += 8;
            else if (nc >= 4)
                panel_float(4, k, n, p, x, o, ld_out, rv), c += 4;
            else if (nc >= 2)
                panel_float(2, k, n, p, x, o, ld_out, rv), c += 2;
            else
                panel_float(1, k, n, p, x, o, ld_out, rv), c += 1;
        }
    }
}

#define PACKED_FLOAT(sfx, K)                                                                                           \
    static AVX512 void gemm_packed_##sfx(int64_t n, int64_t rows, const void *w, size_t ps, int64_t cols,              \
                                         const void *xq, size_t xs, float *out, int64_t ld_out, void *scratch) {       \
        gemm_packed_float(K, n, rows, w, ps, cols, xq, xs, out, ld_out, scratch);                                      \
    }                                                                                                                  \
    static AVX512 void gemv_packed_##sfx(int64_t n, int64_t rows, const void *w, size_t ps, const void *xq,            \
                                         float *out) {                                                                 \
        gemm_packed_float(K, n, rows, w, ps, 1, xq, 0, out, 0, NULL);                                                  \
    }
PACKED_FLOAT(f32, FK_F32)
PACKED_FLOAT(f16, FK_F16)
PACKED_FLOAT(bf16, FK_BF16)
#undef PACKED_FLOAT

/* ==== BF16 weights against bf16 activations (vdpbf16ps) ==== */

INLINE AVX512_BF16 __m512 dpbf16(__m512 acc, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

INLINE AVX512_BF16 void rows_bf16_bf16(int R, int64_t n, const uint8_t *w, size_t ws, const uint16_t *x, float *out) {
    __m512 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i x0 = _mm512_loadu_si512(x + i), x1 = _mm512_loadu_si512(x + i + 32);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            acc[r][0] = dpbf16(acc[r][0], _mm512_loadu_si512(w + r * ws + 2 * i), x0);
            acc[r][1] = dpbf16(acc[r][1], _mm512_loadu_si512(w + r * ws + 2 * i + 64), x1);
        }
    }
    for (; i < n; i += 32) {
        __mmask32 m = n - i >= 32 ? 0xffffffffu : (__mmask32)((1u << (n - i)) - 1);
        __m512i xv = _mm512_maskz_loadu_epi16(m, x + i);
        for (int r = 0; r < R; r++) acc[r][0] = dpbf16(acc[r][0], _mm512_maskz_loadu_epi16(m, w + r * ws + 2 * i), xv);
    }
    for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}

static AVX512_BF16 void gemv_bf16_bf16(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        rows_bf16_bf16(TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) rows_bf16_bf16(1, n, p + r * ws, ws, xq, out + r);
}

/* ==== Quantised weights: dot-avx512-int.h, once per integer instruction set ==== */

#define KSFX    base
#define KTARGET AVX512
#define KVNNI   0
#include "chip/cpu/simd/dot-avx512-int.h"
#undef KSFX
#undef KTARGET
#undef KVNNI

#define KSFX    vnni
#define KTARGET AVX512_VNNI
#define KVNNI   1
#include "chip/cpu/simd/dot-avx512-int.h"
#undef KSFX
#undef KTARGET
#undef KVNNI

#include "chip/cpu/simd/dot-amx.h"

/* ==== Gemm micro-kernels: 16 rows (one vector) by up to 8 columns ==== */

#define PR 16 /* panel rows */

INLINE AVX512 void store_cols(int NC, const __m512 *acc, float *out, int64_t ld_out, int c0, int rv, bool accumulate) {
    __mmask16 m = lanes_mask(rv);
    for (int c = 0; c < NC; c++) {
        float *o = out + (c0 + c) * ld_out;
        __m512 v = acc[c];
        if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, o));
        _mm512_mask_storeu_ps(o, m, v);
    }
}

/* out += cvt(acci) * scale * xs (+ min * xm) for one group of every column. */
INLINE AVX512 void group_to_float(int NC, const struct ty_panel *p, const struct ty_panel_cols *pc, int c0, int64_t g,
                                  const __m512i *acci, __m512 *accf) {
    __m512 sc = _mm512_loadu_ps(p->scale + g * PR);
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++) {
        __m512 s = _mm512_mul_ps(sc, _mm512_set1_ps(pc->xs[(c0 + c) * pc->ld + g]));
        accf[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acci[c]), s, accf[c]);
    }
    if (p->has_min) {
        __m512 mn = _mm512_loadu_ps(p->min + g * PR);
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++)
            accf[c] = _mm512_fmadd_ps(mn, _mm512_set1_ps(pc->xm[(c0 + c) * pc->ld + g]), accf[c]);
    }
}

/* Int16 panel, vpmaddwd with a broadcast pair of activation levels. */
INLINE AVX512 void s16_body(int NC, const struct ty_panel *p, const struct ty_panel_cols *pc, int c0, float *out,
                            int64_t ld_out, int rv, bool accumulate) {
    __m512 accf[8];
    const int16_t *x[8];
    for (int c = 0; c < NC; c++) accf[c] = _mm512_setzero_ps(), x[c] = pc->x[c0 + c];
    const uint8_t *wp = p->w;
    const int G = p->G;
    for (int64_t g = 0; g < p->kc / G; g++) {
        __m512i acci[8];
        for (int c = 0; c < NC; c++) acci[c] = _mm512_setzero_si512();
        for (int s = 0; s < G / 2; s++, wp += 64) {
            __m512i wv = _mm512_loadu_si512(wp);
#pragma GCC unroll 8
            for (int c = 0; c < NC; c++)
                acci[c] =
                    _mm512_add_epi32(acci[c], _mm512_madd_epi16(wv, _mm512_set1_epi32(load_i32(x[c] + g * G + 2 * s))));
        }
        group_to_float(NC, p, pc, c0, g, acci, accf);
    }
    store_cols(NC, accf, out, ld_out, c0, rv, accumulate);
}

/* Uint8 panel (levels + 128), vpdpbusd with a broadcast quad; the accumulator starts at -128 * the quad sums. */
INLINE AVX512_VNNI void u8_body(int NC, const struct ty_panel *p, const struct ty_panel_cols *pc, int c0, float *out,
                                int64_t ld_out, int rv, bool accumulate) {
    __m512 accf[8];
    const int8_t *x[8];
    for (int c = 0; c < NC; c++) accf[c] = _mm512_setzero_ps(), x[c] = pc->x[c0 + c];
    const uint8_t *wp = p->w;
    const int G = p->G;
    for (int64_t g = 0; g < p->kc / G; g++) {
        __m512i acci[8];
        const int64_t off = (g * G / TY_QK_K) * pc->xsb + g * G % TY_QK_K; /* the group in every column */
        for (int c = 0; c < NC; c++) acci[c] = _mm512_set1_epi32(pc->xi[(c0 + c) * pc->ld + g]);
        for (int s = 0; s < G / 4; s++, wp += 64) {
            __m512i wv = _mm512_loadu_si512(wp);
#pragma GCC unroll 8
            for (int c = 0; c < NC; c++)
                acci[c] = _mm512_dpbusd_epi32(acci[c], wv, _mm512_set1_epi32(load_i32(x[c] + off + 4 * s)));
        }
        group_to_float(NC, p, pc, c0, g, acci, accf);
    }
    store_cols(NC, accf, out, ld_out, c0, rv, accumulate);
}

/* F32 panel, one FMA per row vector, step and column. */
INLINE AVX512 void f32_body(int NC, const struct ty_panel *p, const struct ty_panel_cols *pc, int c0, float *out,
                            int64_t ld_out, int rv, bool accumulate) {
    __m512 acc[8];
    const float *x[8];
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps(), x[c] = pc->x[c0 + c];
    const float *wp = p->w;
    for (int64_t k = 0; k < p->kc; k++, wp += PR) {
        __m512 wv = _mm512_loadu_ps(wp);
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) acc[c] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[c][k]), acc[c]);
    }
    store_cols(NC, acc, out, ld_out, c0, rv, accumulate);
}

/* BF16 panel, vdpbf16ps with a broadcast pair of bf16 activations. */
INLINE AVX512_BF16 void bf16_body(int NC, const struct ty_panel *p, const struct ty_panel_cols *pc, int c0, float *out,
                                  int64_t ld_out, int rv, bool accumulate) {
    __m512 acc[8];
    const uint16_t *x[8];
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps(), x[c] = pc->x[c0 + c];
    const uint8_t *wp = p->w;
    int64_t k2 = 0;
    for (; k2 < p->kc / 2; k2++, wp += 64) {
        __m512i wv = _mm512_loadu_si512(wp);
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) acc[c] = dpbf16(acc[c], wv, _mm512_set1_epi32(load_i32(x[c] + 2 * k2)));
    }
    if (p->kc % 2) { /* odd K: the last step pairs the element with a zero */
        __m512i wv = _mm512_loadu_si512(wp);
        for (int c = 0; c < NC; c++) acc[c] = dpbf16(acc[c], wv, _mm512_set1_epi32((int32_t)x[c][2 * k2]));
    }
    store_cols(NC, acc, out, ld_out, c0, rv, accumulate);
}

/* Kernels for 8, 4, 2 and 1 columns (accumulators stay in registers only at a fixed count). */
#define PANEL_KERNEL(name, body, target)                                                                               \
    static target void name(const struct ty_panel *p, const struct ty_panel_cols *pc, float *out, int64_t ld_out,      \
                            int rv, bool accumulate) {                                                                 \
        int c = 0;                                                                                                     \
        for (; c + 8 <= pc->n; c += 8) body(8, p, pc, c, out, ld_out, rv, accumulate);                                 \
        if (c + 4 <= pc->n) body(4, p, pc, c, out, ld_out, rv, accumulate), c += 4;                                    \
        if (c + 2 <= pc->n) body(2, p, pc, c, out, ld_out, rv, accumulate), c += 2;                                    \
        if (c < pc->n) body(1, p, pc, c, out, ld_out, rv, accumulate);                                                 \
    }

PANEL_KERNEL(kernel_s16, s16_body, AVX512)
PANEL_KERNEL(kernel_u8, u8_body, AVX512_VNNI)
PANEL_KERNEL(kernel_f32, f32_body, AVX512)
PANEL_KERNEL(kernel_bf16, bf16_body, AVX512_BF16)

static const struct ty_gemm_impl impl_s16 = {TY_PANEL_S16, PR, 8, kernel_s16};
static const struct ty_gemm_impl impl_u8 = {TY_PANEL_U8, PR, 8, kernel_u8};
static const struct ty_gemm_impl impl_f32 = {TY_PANEL_F32, PR, 8, kernel_f32};
static const struct ty_gemm_impl impl_bf16 = {TY_PANEL_BF16, PR, 8, kernel_bf16};

TY_GEMM_PANEL_FN(gemm_f32, impl_f32, TY_TYPE_F32, TY_ACT_F32)
TY_GEMM_PANEL_FN(gemm_f16, impl_f32, TY_TYPE_F16, TY_ACT_F32)
TY_GEMM_PANEL_FN(gemm_bf16, impl_f32, TY_TYPE_BF16, TY_ACT_F32)
TY_GEMM_PANEL_FN(gemm_bf16_bf16, impl_bf16, TY_TYPE_BF16, TY_ACT_BF16)

#define INT_GEMMS(sfx, impl)                                                                                           \
    TY_GEMM_PANEL_FN(gemm_q8_0_##sfx, impl, TY_TYPE_Q8_0, TY_ACT_Q8)                                                   \
    TY_GEMM_PANEL_FN(gemm_q4_0_##sfx, impl, TY_TYPE_Q4_0, TY_ACT_Q8)                                                   \
    TY_GEMM_PANEL_FN(gemm_q4_1_##sfx, impl, TY_TYPE_Q4_1, TY_ACT_Q8)                                                   \
    TY_GEMM_PANEL_FN(gemm_q5_0_##sfx, impl, TY_TYPE_Q5_0, TY_ACT_Q8)                                                   \
    TY_GEMM_PANEL_FN(gemm_q5_1_##sfx, impl, TY_TYPE_Q5_1, TY_ACT_Q8)                                                   \
    TY_GEMM_PANEL_FN(gemm_q4_K_##sfx, impl, TY_TYPE_Q4_K, TY_ACT_Q8_K)                                                 \
    TY_GEMM_PANEL_FN(gemm_q5_K_##sfx, impl, TY_TYPE_Q5_K, TY_ACT_Q8_K)                                                 \
    TY_GEMM_PANEL_FN(gemm_q6_K_##sfx, impl, TY_TYPE_Q6_K, TY_ACT_Q8_K)
INT_GEMMS(s16, impl_s16)
INT_GEMMS(u8, impl_u8)
TY_GEMM_PANEL_FN_EX(gemm_packed_q8_0_s16, impl_s16, TY_TYPE_Q8_0, TY_ACT_Q8, true)

/* ==== Table ==== */

static void set_int_gemm(struct ty_simd *s, bool vnni) {
    static const enum ty_type types[] = {TY_TYPE_Q8_0, TY_TYPE_Q4_0, TY_TYPE_Q4_1, TY_TYPE_Q5_0,
                                         TY_TYPE_Q5_1, TY_TYPE_Q4_K, TY_TYPE_Q5_K, TY_TYPE_Q6_K};
    static const ty_gemm_fn s16[] = {gemm_q8_0_s16, gemm_q4_0_s16, gemm_q4_1_s16, gemm_q5_0_s16,
                                     gemm_q5_1_s16, gemm_q4_K_s16, gemm_q5_K_s16, gemm_q6_K_s16};
    static const ty_gemm_fn u8[] = {gemm_q8_0_u8, gemm_q4_0_u8, gemm_q4_1_u8, gemm_q5_0_u8,
                                    gemm_q5_1_u8, gemm_q4_K_u8, gemm_q5_K_u8, gemm_q6_K_u8};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        struct ty_simd_type *t = &s->t[types[i]];
        t->quantize_act = t->act == TY_ACT_Q8 ? quantize_q8 : quantize_q8_K;
        t->gemm = vnni ? u8[i] : s16[i];
        t->gemm_isa = vnni ? "avx512vnni" : "avx512";
    }
    if (!vnni) s->t[TY_TYPE_Q8_0].gemm_packed = gemm_packed_q8_0_s16, s->t[TY_TYPE_Q8_0].gemm_packed_direct = false;
}

void ty__simd_fill_avx512(struct ty_simd *s, int level) {
    if (level == 0) {
        fill_int_base(s, "avx512");
        set_int_gemm(s, false);
        s->t[TY_TYPE_F32] = (struct ty_simd_type){TY_ACT_F32, ty__quantize_act_f32, gemv_f32,        gemm_f32, "avx512",
                                                  "avx512",   gemv_packed_f32,      gemm_packed_f32, true};
        s->t[TY_TYPE_F16] = (struct ty_simd_type){TY_ACT_F32, ty__quantize_act_f32, gemv_f16,        gemm_f16, "avx512",
                                                  "avx512",   gemv_packed_f16,      gemm_packed_f16, true};
        s->t[TY_TYPE_BF16] =
            (struct ty_simd_type){TY_ACT_F32, ty__quantize_act_f32, gemv_bf16,        gemm_bf16, "avx512",
                                  "avx512",   gemv_packed_bf16,     gemm_packed_bf16, true};
    } else if (level == 1) {
        fill_int_vnni(s, "avx512vnni");
        set_int_gemm(s, true);
    } else if (level == 2) {
        s->t[TY_TYPE_BF16] = (struct ty_simd_type){
            TY_ACT_BF16, quantize_bf16, gemv_bf16_bf16, gemm_bf16_bf16, "avx512bf16", "avx512bf16", NULL, NULL, false};
    } else {
#if defined(TY_HAVE_AMX_KERNELS)
        fill_amx(s);
#endif
    }
}

#else /* not x86-64 */

void ty__simd_fill_avx512(struct ty_simd *s, int level) {
    (void)s, (void)level;
}

#endif
