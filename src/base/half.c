/*
 * half.c - portable binary16 and bfloat16 conversion. These are the reference conversions: exact for every input
 * (f16 -> f32 is exact; f32 -> f16 and f32 -> bf16 round to nearest even like F16C/AVX512-BF16 hardware). The fast CPU
 * backend uses hardware instructions and is tested against these. ty__f32_to_f16_row is the one conversion here that
 * uses them itself (F16C, where the build targets it): the KV cache writes of a prefill go through it.
 */
#include "base.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

float ty__f16_to_f32(ty_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t u;
    if (exp == 0x1f) { /* inf or NaN */
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) { /* normal */
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) { /* zero */
        u = sign;
    } else { /* subnormal: renormalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

ty_f16 ty__f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf or NaN (keep NaN quiet and non-zero) */
        return (ty_f16)(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 | ((abs >> 13) & 0x3ff) : 0));
    if (abs >= 0x477ff000u) /* rounds to a value >= 65520: overflow to inf */
        return (ty_f16)(sign | 0x7c00);
    if (abs < 0x38800000u) {                        /* below the smallest normal: subnormal or zero */
        if (abs < 0x33000000u) return (ty_f16)sign; /* below half the smallest subnormal */
        uint32_t e = abs >> 23;
        uint32_t man = (abs & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (ty_f16)(sign | half);
    }
    uint32_t r = abs - 0x38000000u; /* rebias exponent by 112 << 23 */
    uint32_t half = r >> 13;
    uint32_t rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (ty_f16)(sign | half);
}

ty_bf16 ty__f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ty_bf16)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fff + ((u >> 16) & 1);
    return (ty_bf16)(u >> 16);
}

void ty__f32_to_f16_row(const float *x, ty_f16 *y, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    for (; i < n; i++) y[i] = ty__f32_to_f16(x[i]);
}
