/*
 * avx512-emu.h - the AVX-512 intrinsics of dot-avx512.c, roofline.c and the trainer (train/ops.c, optim.c) in
 * portable C, for the library's emulated test build (CMakeLists.txt: tongyun_static_avx512_emulated), whose tests
 * run the avx512, avx512vnni and avx512bf16 paths on a host without AVX-512. SIMDe (Debian's libsimde-dev) provides
 * most intrinsics under their own names (SIMDE_ENABLE_NATIVE_ALIASES); the ones its 0.7.4 lacks, mis-aliases or
 * computes otherwise than the hardware (vdpbf16ps, below) are here, each to the instruction's documented semantics
 * (Intel SDM): masked loads touch no masked-off byte, vpmovdw / vpmovdb truncate, vcvtps2dq rounds to nearest even
 * and gives 0x80000000 for NaN and out-of-range values, reductions add in GCC's order (halves, then quarters...).
 * Only what the kernels use; a kernel that starts using another missing intrinsic fails to build here, not silently.
 */
#ifndef TY_TESTS_AVX512_EMU_H
#define TY_TESTS_AVX512_EMU_H

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#define EMU_INLINE static inline __attribute__((unused))

/* SIMDe 0.7.4's alias of vpmaddwd takes the masked form's four arguments */
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16((a), (b))
/* ... and vshuff32x4 has none under gcc */
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4(a, b, imm) simde_mm512_shuffle_f32x4((a), (b), (imm))

/* ==== Lanes in and out ==== */
#define EMU_TO(arr, v)   memcpy((arr), &(v), sizeof(v))
#define EMU_FROM(v, arr) memcpy(&(v), (arr), sizeof(v))

/* ==== Masks ==== */
EMU_INLINE simde__mmask64 emu_cvtu64_mask64(uint64_t a) {
    return (simde__mmask64)a;
}
#define _cvtu64_mask64(a) emu_cvtu64_mask64(a)

/* ==== Masked loads and stores: lane by lane, only the lanes whose bit is set ==== */
#define EMU_MASKZ_LOAD(name, T, VT, N, MT)                                                                             \
    EMU_INLINE VT name(MT k, const void *p) {                                                                          \
        T lane[N];                                                                                                     \
        for (int i = 0; i < (N); i++) {                                                                                \
            lane[i] = 0;                                                                                               \
            if ((k >> i) & 1) memcpy(&lane[i], (const char *)p + (size_t)i * sizeof(T), sizeof(T));                    \
        }                                                                                                              \
        VT r;                                                                                                          \
        EMU_FROM(r, lane);                                                                                             \
        return r;                                                                                                      \
    }
#define EMU_MASK_STORE(name, T, VT, N, MT)                                                                             \
    EMU_INLINE void name(void *p, MT k, VT a) {                                                                        \
        T lane[N];                                                                                                     \
        EMU_TO(lane, a);                                                                                               \
        for (int i = 0; i < (N); i++)                                                                                  \
            if ((k >> i) & 1) memcpy((char *)p + (size_t)i * sizeof(T), &lane[i], sizeof(T));                          \
    }
EMU_MASKZ_LOAD(emu_mm512_maskz_loadu_epi8, int8_t, simde__m512i, 64, simde__mmask64)
EMU_MASKZ_LOAD(emu_mm512_maskz_loadu_epi16, int16_t, simde__m512i, 32, simde__mmask32)
EMU_MASKZ_LOAD(emu_mm512_maskz_loadu_ps, float, simde__m512, 16, simde__mmask16)
EMU_MASKZ_LOAD(emu_mm256_maskz_loadu_epi16, int16_t, simde__m256i, 16, simde__mmask16)
EMU_MASKZ_LOAD(emu_mm_maskz_loadu_epi32, int32_t, simde__m128i, 4, simde__mmask8)
EMU_MASKZ_LOAD(emu_mm_maskz_loadu_ps, float, simde__m128, 4, simde__mmask8)
EMU_MASK_STORE(emu_mm512_mask_storeu_ps, float, simde__m512, 16, simde__mmask16)
EMU_MASK_STORE(emu_mm256_mask_storeu_epi16, int16_t, simde__m256i, 16, simde__mmask16)
#define _mm512_maskz_loadu_epi8(k, p)     emu_mm512_maskz_loadu_epi8((k), (p))
#define _mm512_maskz_loadu_epi16(k, p)    emu_mm512_maskz_loadu_epi16((k), (p))
#define _mm512_maskz_loadu_ps(k, p)       emu_mm512_maskz_loadu_ps((k), (p))
#define _mm256_maskz_loadu_epi16(k, p)    emu_mm256_maskz_loadu_epi16((k), (p))
#define _mm_maskz_loadu_epi32(k, p)       emu_mm_maskz_loadu_epi32((k), (p))
#define _mm_maskz_loadu_ps(k, p)          emu_mm_maskz_loadu_ps((k), (p))
#define _mm512_mask_storeu_ps(p, k, a)    emu_mm512_mask_storeu_ps((p), (k), (a))
#define _mm256_mask_storeu_epi16(p, k, a) emu_mm256_mask_storeu_epi16((p), (k), (a))

/* ==== Conversions: lane i of the result is F(lane i of a) ==== */
#define EMU_LANES(name, VI, TI, VO, TO, N, F)                                                                          \
    EMU_INLINE VO name(VI a) {                                                                                         \
        TI x[N];                                                                                                       \
        TO y[N];                                                                                                       \
        EMU_TO(x, a);                                                                                                  \
        for (int i = 0; i < (N); i++) y[i] = F(x[i]);                                                                  \
        VO r;                                                                                                          \
        EMU_FROM(r, y);                                                                                                \
        return r;                                                                                                      \
    }
EMU_INLINE float emu_i32_f32(int32_t x) { /* vcvtdq2ps: round to nearest, as C's conversion here */
    return (float)x;
}
EMU_INLINE int32_t emu_f32_i32(float x) { /* vcvtps2dq: nearest even; NaN and out of range: the "integer indefinite" */
    return x >= -2147483648.0f && x < 2147483648.0f ? (int32_t)nearbyintf(x) : INT32_MIN;
}
EMU_INLINE int16_t emu_i32_i16(int32_t x) { /* vpmovdw: the low half */
    return (int16_t)(uint16_t)(uint32_t)x;
}
EMU_INLINE int8_t emu_i32_i8(int32_t x) { /* vpmovdb: the low byte */
    return (int8_t)(uint8_t)(uint32_t)x;
}
EMU_INLINE int32_t emu_u16_i32(uint16_t x) {
    return x;
}
EMU_INLINE float emu_f16_f32(uint16_t x) { /* exact: the host's F16C */
    return _cvtsh_ss(x);
}
EMU_LANES(emu_mm512_cvtepi32_ps, simde__m512i, int32_t, simde__m512, float, 16, emu_i32_f32)
EMU_LANES(emu_mm512_cvtps_epi32, simde__m512, float, simde__m512i, int32_t, 16, emu_f32_i32)
EMU_LANES(emu_mm512_cvtepi32_epi16, simde__m512i, int32_t, simde__m256i, int16_t, 16, emu_i32_i16)
EMU_LANES(emu_mm512_cvtepi32_epi8, simde__m512i, int32_t, simde__m128i, int8_t, 16, emu_i32_i8)
EMU_LANES(emu_mm512_cvtepu16_epi32, simde__m256i, uint16_t, simde__m512i, int32_t, 16, emu_u16_i32)
EMU_LANES(emu_mm512_cvtph_ps, simde__m256i, uint16_t, simde__m512, float, 16, emu_f16_f32)
EMU_INLINE simde__m512i emu_mm512_zextsi256_si512(simde__m256i a) {
    uint8_t y[64] = {0};
    memcpy(y, &a, 32);
    simde__m512i r;
    EMU_FROM(r, y);
    return r;
}
#define _mm512_cvtepi32_ps(a)     emu_mm512_cvtepi32_ps(a)
#define _mm512_cvtps_epi32(a)     emu_mm512_cvtps_epi32(a)
#define _mm512_cvtepi32_epi16(a)  emu_mm512_cvtepi32_epi16(a)
#define _mm512_cvtepi32_epi8(a)   emu_mm512_cvtepi32_epi8(a)
#define _mm512_cvtepu16_epi32(a)  emu_mm512_cvtepu16_epi32(a)
#define _mm512_cvtph_ps(a)        emu_mm512_cvtph_ps(a)
#define _mm512_zextsi256_si512(a) emu_mm512_zextsi256_si512(a)

/* ==== Shifts ==== */
EMU_INLINE simde__m512i emu_mm512_srai_epi32(simde__m512i a, unsigned imm) {
    int32_t x[16];
    EMU_TO(x, a);
    for (int i = 0; i < 16; i++) x[i] = imm > 31 ? (x[i] < 0 ? -1 : 0) : x[i] >> imm; /* arithmetic on gcc/clang */
    simde__m512i r;
    EMU_FROM(r, x);
    return r;
}
#define _mm512_srai_epi32(a, imm) emu_mm512_srai_epi32((a), (unsigned)(imm))

/* ==== Reductions: GCC's order (the upper half onto the lower, 8, 4, then pairs) ==== */
#define EMU_REDUCE(name, T, VT, OP)                                                                                    \
    EMU_INLINE T name(VT a) {                                                                                          \
        T x[64 / sizeof(T)];                                                                                           \
        EMU_TO(x, a);                                                                                                  \
        for (int w = (int)(64 / sizeof(T)) / 2; w >= 1; w /= 2)                                                        \
            for (int i = 0; i < w; i++) x[i] = OP(x[i + w], x[i]);                                                     \
        return x[0];                                                                                                   \
    }
#define EMU_ADD(a, b)  ((a) + (b))
#define EMU_WRAP(a, b) ((__typeof__(a))((uint64_t)(a) + (uint64_t)(b))) /* vpaddd / vpaddq wrap around */
#define EMU_MAX(a, b)  ((a) > (b) ? (a) : (b))
EMU_REDUCE(emu_mm512_reduce_add_epi32, int32_t, simde__m512i, EMU_WRAP)
EMU_REDUCE(emu_mm512_reduce_add_epi64, int64_t, simde__m512i, EMU_WRAP)
EMU_REDUCE(emu_mm512_reduce_add_ps, float, simde__m512, EMU_ADD)
EMU_REDUCE(emu_mm512_reduce_max_ps, float, simde__m512, EMU_MAX)
#define _mm512_reduce_add_epi32(a) emu_mm512_reduce_add_epi32(a)
#define _mm512_reduce_add_epi64(a) emu_mm512_reduce_add_epi64(a)
#define _mm512_reduce_add_ps(a)    emu_mm512_reduce_add_ps(a)
#define _mm512_reduce_max_ps(a)    emu_mm512_reduce_max_ps(a)

/* ==== BF16: vcvtne2ps2bf16 / vcvtneps2bf16 and vdpbf16ps as the SDM gives them ====
 * Conversion: NaN made quiet, denormal inputs to signed zero, then nearest even. The dot: denormal inputs (the
 * accumulator and the factors) as zero, each pair's odd product added before its even one, each sum rounded and a
 * denormal sum flushed to zero; a product of two bf16 values is exact in f32. (SIMDe 0.7.4 adds the even product first
 * and keeps denormals.) */
EMU_INLINE float emu_daz(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
    memcpy(&x, &u, 4);
    return x;
}
EMU_INLINE uint16_t emu_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
EMU_INLINE float emu_bf16_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return emu_daz(x);
}
/* vcvtne2ps2bf16: b's lanes converted, then a's */
#define EMU_CVTNE2(name, VI, VO, N)                                                                                    \
    EMU_INLINE VO name(VI a, VI b) {                                                                                   \
        float fa[N], fb[N];                                                                                            \
        uint16_t y[2 * (N)];                                                                                           \
        EMU_TO(fa, a);                                                                                                 \
        EMU_TO(fb, b);                                                                                                 \
        for (int i = 0; i < (N); i++) y[i] = emu_bf16(fb[i]), y[(N) + i] = emu_bf16(fa[i]);                            \
        VO r;                                                                                                          \
        EMU_FROM(r, y);                                                                                                \
        return r;                                                                                                      \
    }
EMU_CVTNE2(emu_mm512_cvtne2ps_pbh, simde__m512, simde__m512bh, 16)
EMU_CVTNE2(emu_mm256_cvtne2ps_pbh, simde__m256, simde__m256bh, 8)
EMU_LANES(emu_mm512_cvtneps_pbh, simde__m512, float, simde__m256bh, uint16_t, 16, emu_bf16)
EMU_INLINE simde__m512 emu_mm512_dpbf16_ps(simde__m512 src, simde__m512bh a, simde__m512bh b) {
    float acc[16];
    uint16_t x[32], y[32];
    EMU_TO(acc, src);
    EMU_TO(x, a);
    EMU_TO(y, b);
    for (int i = 0; i < 16; i++) {
        float t = emu_daz(acc[i]);
        t = emu_daz(t + emu_bf16_f32(x[2 * i + 1]) * emu_bf16_f32(y[2 * i + 1]));
        acc[i] = emu_daz(t + emu_bf16_f32(x[2 * i]) * emu_bf16_f32(y[2 * i]));
    }
    simde__m512 r;
    EMU_FROM(r, acc);
    return r;
}
#undef _mm512_dpbf16_ps
#define _mm512_cvtne2ps_pbh(a, b) emu_mm512_cvtne2ps_pbh((a), (b))
#define _mm256_cvtne2ps_pbh(a, b) emu_mm256_cvtne2ps_pbh((a), (b))
#define _mm512_cvtneps_pbh(a)     emu_mm512_cvtneps_pbh(a)
#define _mm512_dpbf16_ps(s, a, b) emu_mm512_dpbf16_ps((s), (a), (b))

#endif
