/*
 * dot-avx512-int.h - the AVX-512 integer dot products of the quantised weight types, written once and compiled
 * twice by dot-avx512.c: with KVNNI 1 (vpdpbusd / vpdpwssd accumulate in one instruction) and with KVNNI 0 (AVX-512BW
 * only: vpmaddubsw, vpmaddwd, vpaddd). KSFX names the copy, KTARGET is its target attribute.
 *
 * Layout of the 32-element types: a group of four blocks (72 to 136 bytes) is read with at most three masked loads
 * and its words gathered with vpermt2w, so each 64-byte vector holds two blocks in natural element order
 * [b0 elements 0..31 | b1 elements 0..31], the order of the Q8 activation row. 4/5-bit blocks are first gathered as
 * [qs0 | qs0 | qs1 | qs1] and the second copy of each shifted right by 4 (vpsrlvq), so one AND leaves the low
 * nibbles (elements 0..15) then the high ones (16..31). A vpdpbusd lane then holds four elements of one block: eight
 * lanes per block, so a block's offset correction (-8 * sum of its activation levels for Q4_0) is spread as -sum per
 * lane and its scale dw * dx is one vector multiply per two blocks.
 *
 * Tails (fewer than four blocks left) use the same code with masked loads: missing blocks read as zeros, whose
 * levels, scales and activation sums are all zero.
 */

#define KFN2(name, sfx) name##_##sfx
#define KFN1(name, sfx) KFN2(name, sfx)
#define KFN(name)       KFN1(name, KSFX)

#if KVNNI
#define DPBUSD(acc, u, s) _mm512_dpbusd_epi32((acc), (u), (s))
#define DPWSSD(acc, a, b) _mm512_dpwssd_epi32((acc), (a), (b))
#else
/* u <= 129 keeps vpmaddubsw's pair sums below 32767 (every 4/5/6-bit level); Q8_0 takes the sign path below. */
#define DPBUSD(acc, u, s)                                                                                              \
    _mm512_add_epi32((acc), _mm512_madd_epi16(_mm512_maddubs_epi16((u), (s)), _mm512_set1_epi16(1)))
#define DPWSSD(acc, a, b) _mm512_add_epi32((acc), _mm512_madd_epi16((a), (b)))
#endif

/* ==== 32-element types ==== */

/* One Q8 activation group of four blocks, shared by every weight row of the call. */
struct KFN(q8g) {
    __m512i a01, a23; /* levels of blocks 0-1 and 2-3 */
    __m512 dxA, dxB;  /* each block's scale on its eight lanes */
    __m512i sA, sB;   /* each block's sum of levels on its eight lanes */
    __m512 xmA, xmB;  /* dx * sum / 8 on each lane: an affine block's minimum term, spread over its lanes */
};

INLINE KTARGET void KFN(q8_group)(struct ty_q8_act a, int64_t b0, int nbv, struct KFN(q8g) * g) {
    const __m512i lanes_a = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i lanes_b = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
    __m128 d4;
    __m128i s4;
    if (nbv == 4) {
        g->a01 = _mm512_loadu_si512(a.qs + 32 * b0);
        g->a23 = _mm512_loadu_si512(a.qs + 32 * b0 + 64);
        d4 = _mm_loadu_ps(a.d + b0);
        s4 = _mm_loadu_si128((const __m128i *)(a.sum + b0));
    } else {
        g->a01 = _mm512_maskz_loadu_epi8(bytes_mask(32 * nbv), a.qs + 32 * b0);
        g->a23 = _mm512_maskz_loadu_epi8(bytes_mask(32 * nbv - 64), a.qs + 32 * b0 + 64);
        d4 = _mm_maskz_loadu_ps((__mmask8)((1u << nbv) - 1), a.d + b0);
        s4 = _mm_maskz_loadu_epi32((__mmask8)((1u << nbv) - 1), a.sum + b0);
    }
    g->dxA = _mm512_permutexvar_ps(lanes_a, _mm512_castps128_ps512(d4));
    g->dxB = _mm512_permutexvar_ps(lanes_b, _mm512_castps128_ps512(d4));
    g->sA = _mm512_permutexvar_epi32(lanes_a, _mm512_castsi128_si512(s4));
    g->sB = _mm512_permutexvar_epi32(lanes_b, _mm512_castsi128_si512(s4));
    const __m512 eighth = _mm512_set1_ps(0.125f); /* exact */
    g->xmA = _mm512_mul_ps(_mm512_mul_ps(g->dxA, _mm512_cvtepi32_ps(g->sA)), eighth);
    g->xmB = _mm512_mul_ps(_mm512_mul_ps(g->dxB, _mm512_cvtepi32_ps(g->sB)), eighth);
}

/* Word-gather indices of one 32-element type, built once per call. */
struct KFN(q32idx) {
    __m512i q01, q23; /* [qs0 | qs0 | qs1 | qs1] and [qs2 | qs2 | qs3 | qs3] (4/5-bit) or [qs0 | qs1], [qs2 | qs3] */
    __m512i d, m;     /* scale and minimum words of the four blocks, each eight times */
};

/* Block size `bs` bytes (even), its f16 scale at word 0, the minimum at word 1 (affine types), the 16 nibble bytes
 * at byte `qo`. */
INLINE KTARGET void KFN(q32_indices)(int bs, int qo, struct KFN(q32idx) * ix) {
    uint16_t q01[32], q23[32], d[32], m[32];
    int W = bs / 2, o = qo / 2;
    for (int i = 0; i < 8; i++) {
        for (int c = 0; c < 2; c++) {
            q01[8 * c + i] = (uint16_t)(o + i), q01[16 + 8 * c + i] = (uint16_t)(W + o + i);
            q23[8 * c + i] = (uint16_t)(2 * W + o + i), q23[16 + 8 * c + i] = (uint16_t)(3 * W + o + i);
        }
        for (int k = 0; k < 4; k++) d[8 * k + i] = (uint16_t)(W * k), m[8 * k + i] = (uint16_t)(W * k + 1);
    }
    ix->q01 = _mm512_loadu_si512(q01);
    ix->q23 = _mm512_loadu_si512(q23);
    ix->d = _mm512_loadu_si512(d);
    ix->m = _mm512_loadu_si512(m);
}

/* The nibbles of [qs | qs | qs' | qs'] in element order: the second copy of each block shifted down by 4. */
INLINE KTARGET __m512i KFN(nibbles)(__m512i v) {
    const __m512i shift = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    return _mm512_and_si512(_mm512_srlv_epi64(v, shift), _mm512_set1_epi8(0x0f));
}

/* Loads a group of four blocks of `bs` bytes (only nbv of them valid) as two 64-byte halves. */
INLINE KTARGET void KFN(load_group)(const uint8_t *q, int bs, int nbv, __m512i *A, __m512i *B) {
    int bytes = bs * nbv;
    *A = nbv == 4 ? _mm512_loadu_si512(q) : _mm512_maskz_loadu_epi8(bytes_mask(bytes), q);
    *B = _mm512_maskz_loadu_epi8(bytes_mask(bytes - 64), q + 64);
}

/* Fifth bits of blocks k and k + 1 as a byte mask over [b_k elements 0..31 | b_k+1 elements 0..31]. */
INLINE KTARGET __mmask64 KFN(fifth_bits)(const uint8_t *qh, int bs, int k, int nbv) {
    uint32_t h0 = 0, h1 = 0;
    if (k < nbv) memcpy(&h0, qh + bs * k, 4);
    if (k + 1 < nbv) memcpy(&h1, qh + bs * (k + 1), 4);
    return _cvtu64_mask64((uint64_t)h1 << 32 | h0);
}

/* Accumulates one group of a Q4_0 / Q4_1 / Q5_0 / Q5_1 row into acc. */
INLINE KTARGET void KFN(q45_group)(enum ty_type type, const uint8_t *q, int nbv, const struct KFN(q32idx) * ix,
                                   const struct KFN(q8g) * g, __m512 acc[2]) {
    const bool five = type == TY_TYPE_Q5_0 || type == TY_TYPE_Q5_1;
    const bool affine = type == TY_TYPE_Q4_1 || type == TY_TYPE_Q5_1;
    const int bs = type == TY_TYPE_Q4_0 ? 18 : type == TY_TYPE_Q4_1 ? 20 : type == TY_TYPE_Q5_0 ? 22 : 24;
    const int qho = type == TY_TYPE_Q5_0 ? 2 : 4; /* byte offset of qh in a 5-bit block */
    __m512i A, B;
    KFN(load_group)(q, bs, nbv, &A, &B);
    __m512i v01 = KFN(nibbles)(_mm512_permutex2var_epi16(A, ix->q01, B));
    __m512i v23 = KFN(nibbles)(_mm512_permutex2var_epi16(A, ix->q23, B));
    if (five) {
        const __m512i sixteen = _mm512_set1_epi8(16);
        v01 = _mm512_mask_add_epi8(v01, KFN(fifth_bits)(q + qho, bs, 0, nbv), v01, sixteen);
        v23 = _mm512_mask_add_epi8(v23, KFN(fifth_bits)(q + qho, bs, 2, nbv), v23, sixteen);
    }
    __m512i dw = _mm512_permutex2var_epi16(A, ix->d, B);
    __m512 dwA = _mm512_cvtph_ps(_mm512_castsi512_si256(dw));
    __m512 dwB = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(dw, 1));
    __m512i iA, iB;
    if (affine) {
        iA = DPBUSD(_mm512_setzero_si512(), v01, g->a01);
        iB = DPBUSD(_mm512_setzero_si512(), v23, g->a23);
        __m512i mw = _mm512_permutex2var_epi16(A, ix->m, B);
        acc[0] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(mw)), g->xmA, acc[0]);
        acc[1] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(mw, 1)), g->xmB, acc[1]);
    } else {
        /* levels are stored + 8 (+ 16): take back 8 (16) times the activation sum, -sum (-2 sum) on each lane */
        __m512i cA = five ? _mm512_slli_epi32(g->sA, 1) : g->sA, cB = five ? _mm512_slli_epi32(g->sB, 1) : g->sB;
        iA = DPBUSD(_mm512_sub_epi32(_mm512_setzero_si512(), cA), v01, g->a01);
        iB = DPBUSD(_mm512_sub_epi32(_mm512_setzero_si512(), cB), v23, g->a23);
    }
    acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iA), _mm512_mul_ps(dwA, g->dxA), acc[0]);
    acc[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iB), _mm512_mul_ps(dwB, g->dxB), acc[1]);
}

/* Q8_0: blocks of 34 bytes, so a group of four spans three loads; words gathered from (A, B) and (B, C). */
INLINE KTARGET void KFN(q8_0_group)(const uint8_t *q, int nbv, const struct KFN(q32idx) * ix, const struct KFN(q8g) * g,
                                    __m512 acc[2]) {
    int bytes = 34 * nbv;
    __m512i A = nbv == 4 ? _mm512_loadu_si512(q) : _mm512_maskz_loadu_epi8(bytes_mask(bytes), q);
    __m512i B = _mm512_maskz_loadu_epi8(bytes_mask(bytes - 64), q + 64);
    __m512i C = _mm512_maskz_loadu_epi8(bytes_mask(bytes - 128), q + 128);
    __m512i v01 = _mm512_permutex2var_epi16(A, ix->q01, B);
    __m512i v23 = _mm512_permutex2var_epi16(B, ix->q23, C);
    __m512i dw = _mm512_permutex2var_epi16(A, ix->d, B);
    __m512 dwA = _mm512_cvtph_ps(_mm512_castsi512_si256(dw));
    __m512 dwB = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(dw, 1));
    __m512i iA, iB;
#if KVNNI
    /* signed levels + 128 are unsigned; take back 128 * sum, -16 sum on each of the block's eight lanes */
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    iA = DPBUSD(_mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(g->sA, 4)), _mm512_xor_si512(v01, flip),
                g->a01);
    iB = DPBUSD(_mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(g->sB, 4)), _mm512_xor_si512(v23, flip),
                g->a23);
#else
    /* |w| times a with w's sign: pair sums stay within 2 * 128 * 127 */
    const __m512i zero = _mm512_setzero_si512(), ones = _mm512_set1_epi16(1);
    __m512i sa01 = _mm512_mask_sub_epi8(g->a01, _mm512_movepi8_mask(v01), zero, g->a01);
    __m512i sa23 = _mm512_mask_sub_epi8(g->a23, _mm512_movepi8_mask(v23), zero, g->a23);
    iA = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(v01), sa01), ones);
    iB = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(v23), sa23), ones);
#endif
    acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iA), _mm512_mul_ps(dwA, g->dxA), acc[0]);
    acc[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iB), _mm512_mul_ps(dwB, g->dxB), acc[1]);
}

/* R rows of a 32-element type against one activation row. */
INLINE KTARGET void KFN(rows_q32)(enum ty_type type, int R, int64_t n, const uint8_t *w, size_t ws, struct ty_q8_act a,
                                  const struct KFN(q32idx) * ix, float *out) {
    const int bs = (int)ty__type_traits(type)->type_size;
    const int64_t nb = n / 32;
    __m512 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 4) {
        int nbv = nb - b < 4 ? (int)(nb - b) : 4;
        struct KFN(q8g) g;
        KFN(q8_group)(a, b, nbv, &g);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *q = w + r * ws + (size_t)b * bs;
            if (type == TY_TYPE_Q8_0)
                KFN(q8_0_group)(q, nbv, ix, &g, acc[r]);
            else
                KFN(q45_group)(type, q, nbv, ix, &g, acc[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}

INLINE KTARGET void KFN(gemv_q32)(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t ws, const void *xq,
                                  float *out) {
    struct ty_q8_act a = ty__q8_act(xq, n);
    struct KFN(q32idx) ix;
    switch (type) {
    case TY_TYPE_Q8_0: {
        /* [qs0 | qs1] from (A, B), [qs2 | qs3] from (B, C), scales from (A, B) */
        uint16_t q01[32], q23[32], d[32];
        for (int i = 0; i < 16; i++) {
            q01[i] = (uint16_t)(1 + i), q01[16 + i] = (uint16_t)(18 + i);
            q23[i] = (uint16_t)(35 - 32 + i), q23[16 + i] = (uint16_t)(52 - 32 + i);
        }
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 8; i++) d[8 * k + i] = (uint16_t)(17 * k);
        ix.q01 = _mm512_loadu_si512(q01);
        ix.q23 = _mm512_loadu_si512(q23);
        ix.d = _mm512_loadu_si512(d);
        ix.m = ix.d;
        break;
    }
    case TY_TYPE_Q4_0:
        KFN(q32_indices)(18, 2, &ix);
        break;
    case TY_TYPE_Q4_1:
        KFN(q32_indices)(20, 4, &ix);
        break;
    case TY_TYPE_Q5_0:
        KFN(q32_indices)(22, 6, &ix);
        break;
    default:
        KFN(q32_indices)(24, 8, &ix);
        break;
    }
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        KFN(rows_q32)(type, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, a, &ix, out + r);
    for (; r < rows; r++) KFN(rows_q32)(type, 1, n, p + r * ws, ws, a, &ix, out + r);
}

static KTARGET void KFN(gemv_q8_0)(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    KFN(gemv_q32)(TY_TYPE_Q8_0, n, rows, w, ws, xq, out);
}
static KTARGET void KFN(gemv_q4_0)(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    KFN(gemv_q32)(TY_TYPE_Q4_0, n, rows, w, ws, xq, out);
}
static KTARGET void KFN(gemv_q4_1)(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    KFN(gemv_q32)(TY_TYPE_Q4_1, n, rows, w, ws, xq, out);
}
static KTARGET void KFN(gemv_q5_0)(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    KFN(gemv_q32)(TY_TYPE_Q5_0, n, rows, w, ws, xq, out);
}
static KTARGET void KFN(gemv_q5_1)(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    KFN(gemv_q32)(TY_TYPE_Q5_1, n, rows, w, ws, xq, out);
}

/* ==== K types ==== */

/* The 6-bit scales (low 8 bytes) and minimums (high 8 bytes) of a Q4_K / Q5_K block, one byte each. */
INLINE KTARGET __m128i KFN(k_scales)(const uint8_t *s) {
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4), memcpy(&u1, s + 4, 4), memcpy(&u2, s + 8, 4);
    uint32_t sc_lo = u0 & 0x3f3f3f3f, m_lo = u1 & 0x3f3f3f3f;
    uint32_t sc_hi = (u2 & 0x0f0f0f0f) | ((u0 >> 6) & 0x03030303) << 4;
    uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0f) | ((u1 >> 6) & 0x03030303) << 4;
    return _mm_set_epi32((int)m_hi, (int)m_lo, (int)sc_hi, (int)sc_lo);
}

/* Per Q8_K block of the activation: the sums of each 32 levels as 8 int16 (|sum| <= 32 * 127). */
INLINE KTARGET __m128i KFN(bsums32)(const struct ty_block_q8_K *y) {
    __m256i bs = _mm256_loadu_si256((const __m256i *)y->bsums);
    __m256i pairs = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
    return _mm_packs_epi32(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256(pairs, 1));
}

/* R rows of Q4_K / Q5_K. Sub-blocks 2p and 2p+1 share 32 bytes of qs (low and high nibbles), so one 32-byte load
 * broadcast to both halves and shifted by [0, 4] gives 64 levels in element order. */
INLINE KTARGET void KFN(rows_qk)(bool five, int R, int64_t n, const uint8_t *w, size_t ws,
                                 const struct ty_block_q8_K *y, float *out) {
    const size_t bs = five ? sizeof(struct ty_block_q5_K) : sizeof(struct ty_block_q4_K);
    const size_t qs_off = five ? 48 : 16;
    const __m512i shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0), low4 = _mm512_set1_epi8(0x0f);
    __m512i sc_idx[4], bit[4];
    for (int p = 0; p < 4; p++) {
        sc_idx[p] =
            _mm512_mask_set1_epi16(_mm512_set1_epi16((short)(2 * p)), (__mmask32)0xffff0000u, (short)(2 * p + 1));
        bit[p] = _mm512_mask_set1_epi8(_mm512_set1_epi8((char)(1 << (2 * p))), 0xffffffff00000000ull,
                                       (char)(1 << (2 * p + 1)));
    }
    __m512 acc[4];
    __m128 accm[4];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps(), accm[r] = _mm_setzero_ps();
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        __m512i a[4];
        for (int p = 0; p < 4; p++) a[p] = _mm512_loadu_si512(y[b].qs + 64 * p);
        __m128i bsp = KFN(bsums32)(&y[b]);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *q = w + r * ws + b * bs;
            __m128i scm = KFN(k_scales)(q + 4);
            __m512i sc16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(scm)); /* 8 scales, 8 minimums (words) */
            __m512i qh =
                five ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(q + 16))) : _mm512_setzero_si512();
            __m512i isum = _mm512_setzero_si512();
            for (int p = 0; p < 4; p++) {
                __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(q + qs_off + 32 * p)));
                v = _mm512_and_si512(_mm512_srlv_epi64(v, shift), low4);
                if (five) v = _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(qh, bit[p]), v, _mm512_set1_epi8(16));
                __m512i prod = _mm512_maddubs_epi16(v, a[p]);
                isum = DPWSSD(isum, prod, _mm512_permutexvar_epi16(sc_idx[p], sc16));
            }
            float dx = y[b].d;
            float d = _cvtsh_ss(load_u16(q)) * dx, dmin = _cvtsh_ss(load_u16(q + 2)) * dx;
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d), acc[r]);
            /* minimums: words 8..15 of sc16 times the per-32 activation sums */
            __m128i mins = _mm_madd_epi16(_mm256_extracti128_si256(_mm512_castsi512_si256(sc16), 1), bsp);
            accm[r] = _mm_fmadd_ps(_mm_cvtepi32_ps(mins), _mm_set1_ps(dmin), accm[r]);
        }
    }
    for (int r = 0; r < R; r++) {
        __m128 m = accm[r];
        m = _mm_add_ps(m, _mm_movehl_ps(m, m));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[r] = _mm512_reduce_add_ps(acc[r]) - _mm_cvtss_f32(m);
    }
}

/* R rows of Q6_K. Per half of 128 elements: 64 bytes of ql give elements 0..63 (low nibbles) and 64..127 (high),
 * 32 bytes of qh broadcast to both halves and shifted by [0, 2] or [4, 6] give their top two bits. Scales cover 16
 * elements: eight words of vpmaddubsw output. */
INLINE KTARGET void KFN(rows_q6_K)(int R, int64_t n, const uint8_t *w, size_t ws, const struct ty_block_q8_K *y,
                                   float *out) {
    const __m512i sh_lo = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0), sh_hi = _mm512_set_epi64(6, 6, 6, 6, 4, 4, 4, 4);
    const __m512i low4 = _mm512_set1_epi8(0x0f), low2 = _mm512_set1_epi8(3);
    __m512i sc_idx[4];
    for (int i = 0; i < 4; i++) { /* words [4i x8, 4i+1 x8, 4i+2 x8, 4i+3 x8] */
        uint16_t ix[32];
        for (int k = 0; k < 32; k++) ix[k] = (uint16_t)(4 * i + k / 8);
        sc_idx[i] = _mm512_loadu_si512(ix);
    }
    __m512 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / TY_QK_K; b++) {
        __m512i a[4];
        for (int p = 0; p < 4; p++) a[p] = _mm512_loadu_si512(y[b].qs + 64 * p);
        __m256i bsums = _mm256_loadu_si256((const __m256i *)y[b].bsums);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *q = w + r * ws + b * sizeof(struct ty_block_q6_K);
            __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + 192)));
            __m512i sc16 = _mm512_castsi256_si512(sc);
            __m512i isum = _mm512_setzero_si512();
            for (int h = 0; h < 2; h++) {
                __m512i v = _mm512_loadu_si512(q + 64 * h);
                __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(q + 128 + 32 * h)));
                __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
                lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh_lo), low2), 4));
                hi = _mm512_or_si512(hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh_hi), low2), 4));
                __m512i p0 = _mm512_maddubs_epi16(lo, a[2 * h]), p1 = _mm512_maddubs_epi16(hi, a[2 * h + 1]);
                isum = DPWSSD(isum, p0, _mm512_permutexvar_epi16(sc_idx[2 * h], sc16));
                isum = DPWSSD(isum, p1, _mm512_permutexvar_epi16(sc_idx[2 * h + 1], sc16));
            }
            /* levels are stored + 32: take back 32 * sum_j sc_j bsum_j */
            __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(sc, bsums), 5);
            isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(off));
            float d = _cvtsh_ss(load_u16(q + 208)) * y[b].d;
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d), acc[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_ps(acc[r]);
}

static KTARGET void KFN(gemv_q4_K)(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        KFN(rows_qk)(false, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) KFN(rows_qk)(false, 1, n, p + r * ws, ws, xq, out + r);
}
static KTARGET void KFN(gemv_q5_K)(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        KFN(rows_qk)(true, TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) KFN(rows_qk)(true, 1, n, p + r * ws, ws, xq, out + r);
}
static KTARGET void KFN(gemv_q6_K)(int64_t n, int64_t rows, const void *w, size_t ws, const void *xq, float *out) {
    const uint8_t *p = w;
    int64_t r = 0;
    for (; r + TY_GEMV_INTERLEAVE <= rows; r += TY_GEMV_INTERLEAVE)
        KFN(rows_q6_K)(TY_GEMV_INTERLEAVE, n, p + r * ws, ws, xq, out + r);
    for (; r < rows; r++) KFN(rows_q6_K)(1, n, p + r * ws, ws, xq, out + r);
}

/* ==== Packed 4/5-bit panels (pack.c) ==== */

/* The fifth bits of step st of a packed block (Q5_0, Q5_1) or group (Q5_K) as a byte mask over its 64-byte step
 * vector: bit st of each byte of the 64 plane bytes (pack.c stores a bit per step in the level's byte position). */
INLINE KTARGET __mmask64 KFN(plane_mask)(__m512i planes, int st) {
    return _mm512_test_epi8_mask(planes, _mm512_set1_epi8((char)(1u << st)));
}

/* One panel of 16 rows: per block, four 64-byte chunks give the levels of steps c (low nibbles) and c + 4 (high),
 * each step one integer dot of 16 rows with a broadcast activation quad; two chains, one per nibble. The float
 * steps are panel_gemm_body's, in its order, so a column gets the same bits from gemv and from gemm. A symmetric
 * type's dot starts at -offset * the block's activation sum: `start` (or NULL: computed here) holds them, read with
 * one broadcast load per block; a multiply and a broadcast from a general register per block cost Q8_0's
 * one-thread stream 5-9% (decode on one thread and in the host's fast state is bound by each core's stream, so
 * every instruction between the loads counts). */
INLINE KTARGET void KFN(panel_q45)(const struct ty_pack_layout *l, int64_t nb, const uint8_t *p, struct ty_q8_act a,
                                   const int32_t *start, float *out, int rv) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), sixteen = _mm512_set1_epi8(16);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++, p += l->bp) {
        ty__stream_ahead(p, l->bp);
        const int8_t *x = a.qs + 32 * b;
        __m512i i0 = l->affine ? _mm512_setzero_si512()
                     : start   ? _mm512_set1_epi32(start[b])
                               : _mm512_set1_epi32(-l->offset * a.sum[b]);
        __m512i i1 = _mm512_setzero_si512();
        if (l->bits == 8) { /* Q8_0: one 64-byte vector per step, levels + 128 */
#if !KVNNI
            /* vpmaddubsw would saturate on levels up to 255: back to signed levels, sign moved to the activation */
            i0 = _mm512_setzero_si512();
            const __m512i flip = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
#endif
            for (int st = 0; st < 8; st++) {
                __m512i v = _mm512_loadu_si512(p + l->off_qs + 64 * st), xb = _mm512_set1_epi32(load_i32(x + 4 * st));
#if KVNNI
                if (st % 2)
                    i1 = DPBUSD(i1, v, xb);
                else
                    i0 = DPBUSD(i0, v, xb);
#else
                __m512i q = _mm512_xor_si512(v, flip);
                __m512i sx = _mm512_mask_sub_epi8(xb, _mm512_movepi8_mask(q), zero, xb);
                __m512i d = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(q), sx), _mm512_set1_epi16(1));
                if (st % 2)
                    i1 = _mm512_add_epi32(i1, d);
                else
                    i0 = _mm512_add_epi32(i0, d);
#endif
            }
        }
        for (int c = 0; c < 4 && l->bits != 8; c++) {
            __m512i v = _mm512_loadu_si512(p + l->off_qs + 64 * c);
            __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
            if (l->five) {
                const __m512i planes = _mm512_loadu_si512(p + l->off_qh);
                lo = _mm512_mask_add_epi8(lo, KFN(plane_mask)(planes, c), lo, sixteen);
                hi = _mm512_mask_add_epi8(hi, KFN(plane_mask)(planes, c + 4), hi, sixteen);
            }
            i0 = DPBUSD(i0, lo, _mm512_set1_epi32(load_i32(x + 4 * c)));
            i1 = DPBUSD(i1, hi, _mm512_set1_epi32(load_i32(x + 16 + 4 * c)));
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), _mm512_mul_ps(dw, _mm512_set1_ps(a.d[b])),
                              acc);
        if (l->affine) {
            __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + l->off_m)));
            acc = _mm512_fmadd_ps(m, _mm512_set1_ps(a.d[b] * (float)a.sum[b]), acc);
        }
    }
    _mm512_mask_storeu_ps(out, lanes_mask(rv), acc);
}

/* Blocks (K / 32) up to which gemv_packed keeps the integer starts of panel_q45 in a table on the stack. */
#ifndef GEMV_STARTS
#define GEMV_STARTS 1024
#endif

INLINE KTARGET void KFN(gemv_packed)(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                     const void *xq, float *out) {
    struct ty_pack_layout l;
    ty__pack_layout(type, &l);
    struct ty_q8_act a = ty__q8_act(xq, n);
    int32_t table[GEMV_STARTS], *start = !l.affine && n / 32 <= GEMV_STARTS ? table : NULL;
    for (int64_t b = 0; start && b < n / 32; b++) start[b] = -l.offset * a.sum[b];
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        const uint8_t *p = (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride;
        const int rv = rows - r < TY_PACK_ROWS ? (int)(rows - r) : TY_PACK_ROWS;
        if (start) /* two calls, so that each inlined copy knows which start it reads */
            KFN(panel_q45)(&l, n / 32, p, a, start, out + r, rv);
        else
            KFN(panel_q45)(&l, n / 32, p, a, NULL, out + r, rv);
    }
}

/* Gemm straight from packed panels: a block's eight steps are unpacked once into registers and used by many columns,
 * so the only per-column work is the integer dots and one scale per block. (Q8_0 only with VNNI: without it
 * vpmaddubsw cannot take levels up to 255.) */

/* One block of a panel in registers: its eight steps' levels (0..15, 0..31 with the fifth bit, 0..255) and its
 * scales (and minima, for the affine types). */
INLINE KTARGET void KFN(panel_block)(const struct ty_pack_layout *l, const uint8_t *p, __m512i v[8], __m512 *dw,
                                     __m512 *mw) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), sixteen = _mm512_set1_epi8(16);
    if (l->bits == 8) {
        for (int st = 0; st < 8; st++) v[st] = _mm512_loadu_si512(p + l->off_qs + 64 * st);
    } else {
        for (int c = 0; c < 4; c++) {
            __m512i q = _mm512_loadu_si512(p + l->off_qs + 64 * c);
            v[c] = _mm512_and_si512(q, low4), v[c + 4] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
        }
    }
    if (l->five) {
        const __m512i planes = _mm512_loadu_si512(p + l->off_qh);
        for (int st = 0; st < 8; st++) v[st] = _mm512_mask_add_epi8(v[st], KFN(plane_mask)(planes, st), v[st], sixteen);
    }
    *dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    *mw = l->affine ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + l->off_m))) : *dw;
}

/* One column's step over block b of a panel: acc + (its integer dot - offset x its activation sum) x dw x dx (+ the
 * minima's term). */
INLINE KTARGET __m512 KFN(panel_column)(const struct ty_pack_layout *l, const __m512i v[8], __m512 dw, __m512 mw,
                                        const struct ty_q8_act *a, int64_t b, __m512 acc) {
    const int8_t *x = a->qs + 32 * b;
    __m512i i = l->affine ? _mm512_setzero_si512() : _mm512_set1_epi32(-l->offset * a->sum[b]);
    for (int st = 0; st < 8; st++) i = DPBUSD(i, v[st], _mm512_set1_epi32(load_i32(x + 4 * st)));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(dw, _mm512_set1_ps(a->d[b])), acc);
    if (l->affine) acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(a->d[b] * (float)a->sum[b]), acc);
    return acc;
}

/* Bytes of one block of a panel unpacked by panel_unpack: its eight steps' levels, then dw and mw as floats. */
#define UNPACKED_BLOCK (10 * 64)

/* Every block of one panel unpacked into `buf` (nb x UNPACKED_BLOCK bytes, 64-byte aligned), for a gemm of many
 * columns to read instead of unpacking each block again for every eight columns (Q5_0's fifth bits alone cost 16
 * operations a block). Each level less `bias` (0 here; the type's zero for the AMX kernel's signed levels). */
INLINE KTARGET void KFN(panel_unpack)(const struct ty_pack_layout *l, int64_t nb, const uint8_t *p, uint8_t *buf,
                                      int bias) {
    const __m512i minus = _mm512_set1_epi8((char)bias);
    for (int64_t b = 0; b < nb; b++, p += l->bp, buf += UNPACKED_BLOCK) {
        __m512i v[8];
        __m512 dw, mw;
        KFN(panel_block)(l, p, v, &dw, &mw);
        for (int st = 0; st < 8; st++) _mm512_store_si512(buf + 64 * st, bias ? _mm512_sub_epi8(v[st], minus) : v[st]);
        _mm512_store_ps(buf + 512, dw), _mm512_store_ps(buf + 576, mw);
    }
}

/* NC columns of one panel, their accumulators in registers; each block unpacked here from the panel at p, or read
 * from `unpacked` (panel_unpack's buffer) when that is not NULL. Either way each column runs panel_column's
 * operations in block order: the same bits. */
INLINE KTARGET void KFN(panel_gemm_body)(int NC, const struct ty_pack_layout *l, int64_t nb, const uint8_t *p,
                                         const uint8_t *unpacked, const struct ty_q8_act *a, float *out, int64_t ld_out,
                                         int rv) {
    __m512 acc[8];
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++, p += l->bp) {
        __m512i v[8];
        __m512 dw, mw;
        if (!unpacked) ty__stream_ahead(p, l->bp);
        if (unpacked) {
            const uint8_t *u = unpacked + (size_t)b * UNPACKED_BLOCK;
            for (int st = 0; st < 8; st++) v[st] = _mm512_load_si512(u + 64 * st);
            dw = _mm512_load_ps(u + 512), mw = _mm512_load_ps(u + 576);
        } else {
            KFN(panel_block)(l, p, v, &dw, &mw);
        }
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) acc[c] = KFN(panel_column)(l, v, dw, mw, &a[c], b, acc[c]);
    }
    __mmask16 m = lanes_mask(rv);
    for (int c = 0; c < NC; c++) _mm512_mask_storeu_ps(out + c * ld_out, m, acc[c]);
}

INLINE KTARGET void KFN(gemm_packed)(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                     int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                                     void *scratch) {
    struct ty_pack_layout l;
    ty__pack_layout(type, &l);
    const int64_t nb = n / 32;
    /* 4/5-bit panels shared by two or more groups of eight columns are unpacked once into the scratch: prefill on
     * one thread (bench_kernels --prefill 512) went from 60-61% to 65-67% of the int8 peak for Q5_0 and from 57-58%
     * to 62-63% for Q5_1 (Q4_0 and Q4_1 within noise); Q8_0's steps are plain loads already. (Keeping 64 columns'
     * accumulators in L1 instead, each block unpacked once for all of them, gave Q5_0 63-65% and cost Q8_0.) */
    uint8_t *buf =
        l.bits != 8 && cols >= 16 && scratch && (size_t)nb * UNPACKED_BLOCK <= ty__gemm_scratch_size() ? scratch : NULL;
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        int rv = rows - r < TY_PACK_ROWS ? (int)(rows - r) : TY_PACK_ROWS;
        const uint8_t *p = (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride;
        if (buf) KFN(panel_unpack)(&l, nb, p, buf, 0);
        for (int64_t c = 0; c < cols;) {
            struct ty_q8_act a[8];
            int nc = cols - c < 8 ? (int)(cols - c) : 8;
            for (int i = 0; i < nc; i++) a[i] = ty__q8_act((const char *)xq + (size_t)(c + i) * x_stride, n);
            float *o = out + c * ld_out + r;
            if (nc == 8)
                KFN(panel_gemm_body)(8, &l, nb, p, buf, a, o, ld_out, rv), c += 8;
            else if (nc >= 4)
                KFN(panel_gemm_body)(4, &l, nb, p, buf, a, o, ld_out, rv), c += 4;
            else if (nc >= 2)
                KFN(panel_gemm_body)(2, &l, nb, p, buf, a, o, ld_out, rv), c += 2;
            else /* one column: the gemv panel, two integer chains (faster, and the same bits: integer sums) */
                KFN(panel_q45)(&l, nb, p, a[0], NULL, o, rv), c += 1;
        }
    }
}

#define KPACKED_GEMM(name, T)                                                                                          \
    static KTARGET void KFN(name)(int64_t n, int64_t rows, const void *w, size_t ps, int64_t cols, const void *xq,     \
                                  size_t xs, float *out, int64_t ld_out, void *scratch) {                              \
        KFN(gemm_packed)(T, n, rows, w, ps, cols, xq, xs, out, ld_out, scratch);                                       \
    }
KPACKED_GEMM(gemm_packed_q4_0, TY_TYPE_Q4_0)
KPACKED_GEMM(gemm_packed_q4_1, TY_TYPE_Q4_1)
KPACKED_GEMM(gemm_packed_q5_0, TY_TYPE_Q5_0)
KPACKED_GEMM(gemm_packed_q5_1, TY_TYPE_Q5_1)
#if KVNNI
KPACKED_GEMM(gemm_packed_q8_0, TY_TYPE_Q8_0)
#endif
#undef KPACKED_GEMM

#define KPACKED(name, T)                                                                                               \
    static KTARGET void KFN(name)(int64_t n, int64_t rows, const void *w, size_t ps, const void *xq, float *out) {     \
        KFN(gemv_packed)(T, n, rows, w, ps, xq, out);                                                                  \
    }
KPACKED(gemv_packed_q4_0, TY_TYPE_Q4_0)
KPACKED(gemv_packed_q4_1, TY_TYPE_Q4_1)
KPACKED(gemv_packed_q5_0, TY_TYPE_Q5_0)
KPACKED(gemv_packed_q5_1, TY_TYPE_Q5_1)
KPACKED(gemv_packed_q8_0, TY_TYPE_Q8_0)
#undef KPACKED

/* ==== Packed K-quant panels (pack.c) ====
 * One 16-row panel against NC columns, a super-block at a time. Each group of 32 elements is unpacked once into
 * eight step vectors (levels of 16 rows, four elements each) shared by every column; a column's sub-block dot is then
 * one vpdpbusd per step with a broadcast activation quad, its scale applied exactly in the integer accumulator
 * (vpmulld), and the super-block's float steps are the same few operations for every column whatever NC is, so a
 * column gets the same bits from gemv (NC = 1) and from gemm. Integer sums are exact: Q4_K's largest is
 * 8 x 63 x 32 x 15 x 127 < 2^25, Q6_K's 16 x 128 x 16 x 63 x 127 < 2^28. */

/* vpshufb selectors: byte k of every dword, zero-extended (k < 4); with `twice`, into both of the dword's words. */
INLINE KTARGET __m512i KFN(dword_bytes)(int k, bool twice) {
    const __m512i offs = _mm512_set_epi32(12, 8, 4, 0, 12, 8, 4, 0, 12, 8, 4, 0, 12, 8, 4, 0);
    if (!twice) return _mm512_add_epi32(_mm512_set1_epi32((int)(0x80808000u | (unsigned)k)), offs);
    return _mm512_add_epi32(_mm512_set1_epi32((int)(0x80008000u | (unsigned)k | (unsigned)k << 16)),
                            _mm512_mullo_epi32(offs, _mm512_set1_epi32(0x10001)));
}

/* The 6-bit scales and minimums of a Q4_K / Q5_K super-block of a panel, 16 rows: byte j of dword r is sub-block j (or
 * 4 + j) of row r. */
INLINE KTARGET void KFN(qk_scales)(const struct ty_pack_k_layout *l, const uint8_t *p, __m512i *s_lo, __m512i *s_hi,
                                   __m512i *m_lo, __m512i *m_hi) {
    const __m512i m6 = _mm512_set1_epi8(0x3f), m4 = _mm512_set1_epi8(0x0f), m2h = _mm512_set1_epi8(0x30);
    __m512i W0 = _mm512_loadu_si512(p + l->off_sc), W1 = _mm512_loadu_si512(p + l->off_sc + 64);
    __m512i W2 = _mm512_loadu_si512(p + l->off_sc + 128);
    *s_lo = _mm512_and_si512(W0, m6), *m_lo = _mm512_and_si512(W1, m6);
    *s_hi = _mm512_or_si512(_mm512_and_si512(W2, m4), _mm512_and_si512(_mm512_srli_epi32(W0, 2), m2h));
    *m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(W2, 4), m4),
                            _mm512_and_si512(_mm512_srli_epi32(W1, 2), m2h));
}

/* Sub-block j of a Q4_K / Q5_K super-block of a panel in registers: its eight steps' levels and its scale, as
 * dwords. */
INLINE KTARGET void KFN(qk_sub)(bool five, const struct ty_pack_k_layout *l, const uint8_t *p, int j, __m512i s_lo,
                                __m512i s_hi, __m512i v[8], __m512i *sc) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), sixteen = _mm512_set1_epi8(16);
    const uint8_t *q = p + l->off_grp + l->gb * j + l->qh_b;
    for (int cc = 0; cc < 4; cc++) {
        __m512i t = _mm512_loadu_si512(q + 64 * cc);
        v[cc] = _mm512_and_si512(t, low4), v[cc + 4] = _mm512_and_si512(_mm512_srli_epi16(t, 4), low4);
    }
    if (five) {
        const __m512i planes = _mm512_loadu_si512(p + l->off_grp + l->gb * j);
        for (int st = 0; st < 8; st++) v[st] = _mm512_mask_add_epi8(v[st], KFN(plane_mask)(planes, st), v[st], sixteen);
    }
    *sc = _mm512_shuffle_epi8(j < 4 ? s_lo : s_hi, KFN(dword_bytes)(j % 4, false));
}

/* Sub-block j's minimum of each row, as two words (against the activation's sums of 16 2j and 2j + 1). */
INLINE KTARGET __m512i KFN(qk_min)(int j, __m512i m_lo, __m512i m_hi) {
    return _mm512_shuffle_epi8(j < 4 ? m_lo : m_hi, KFN(dword_bytes)(j % 4, true));
}

/* Bytes of a Q4_K / Q5_K super-block of a panel unpacked by qk_unpack: per sub-block its eight steps and its scale,
 * then the eight minimums, dw and dm. */
#define QK_SUB      (9 * 64)     /* a sub-block: eight steps, then its scale */
#define QK_MINS     (8 * QK_SUB) /* the eight sub-blocks, then the eight minimums, dw, dm */
#define QK_UNPACKED (QK_MINS + 10 * 64)

/* Every super-block of one Q4_K / Q5_K panel unpacked into `buf` (nsb x QK_UNPACKED bytes, 64-byte aligned). */
INLINE KTARGET void KFN(qk_unpack)(bool five, const struct ty_pack_k_layout *l, int64_t nsb, const uint8_t *p,
                                   uint8_t *buf) {
    for (int64_t b = 0; b < nsb; b++, p += l->bp, buf += QK_UNPACKED) {
        __m512i s_lo, s_hi, m_lo, m_hi;
        KFN(qk_scales)(l, p, &s_lo, &s_hi, &m_lo, &m_hi);
        for (int j = 0; j < 8; j++) {
            __m512i v[8], sc;
            KFN(qk_sub)(five, l, p, j, s_lo, s_hi, v, &sc);
            for (int st = 0; st < 8; st++) _mm512_store_si512(buf + QK_SUB * j + 64 * st, v[st]);
            _mm512_store_si512(buf + QK_SUB * j + 512, sc);
            _mm512_store_si512(buf + QK_MINS + 64 * j, KFN(qk_min)(j, m_lo, m_hi));
        }
        _mm512_store_ps(buf + QK_MINS + 512, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)));
        _mm512_store_ps(buf + QK_MINS + 576, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + l->off_dmin))));
    }
}

/* Q4_K (five false) and Q5_K (five true), NC columns of one panel; each super-block unpacked here, or read from
 * `unpacked` (qk_unpack's buffer; `buffered` a constant, so each call site compiles one way). A sub-block's dot is
 * two chains of four vpdpbusd per column (low and high nibbles), its scale applied in the integer accumulator; the
 * minimums are one vpdpwssd per sub-block, each row's minimum (twice, as two words) against the activation's two sums
 * of 16 of that sub-block, read straight from the block. Per column and super-block the float steps are then
 * (A dw - B dm) dx: the fewest operations besides the vpdpbusd, which set the pace. */
INLINE KTARGET void KFN(panel_qk_body)(int NC, bool five, bool buffered, const struct ty_pack_k_layout *l, int64_t nsb,
                                       const uint8_t *p, const uint8_t *unpacked, const struct ty_block_q8_K *const *y,
                                       float *out, int64_t ld_out, int rv) {
    __m512 acc[8];
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; b++, p += l->bp) {
        if (!buffered) ty__stream_ahead(p, l->bp);
        const uint8_t *ub = buffered ? unpacked + (size_t)b * QK_UNPACKED : NULL;
        __m512i s_lo, s_hi, m_lo, m_hi;
        if (!buffered) KFN(qk_scales)(l, p, &s_lo, &s_hi, &m_lo, &m_hi);
        __m512i A[8];
        for (int c = 0; c < NC; c++) A[c] = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            __m512i v[8], sc;
            if (buffered) {
                for (int st = 0; st < 8; st++) v[st] = _mm512_load_si512(ub + QK_SUB * j + 64 * st);
                sc = _mm512_load_si512(ub + QK_SUB * j + 512);
            } else {
                KFN(qk_sub)(five, l, p, j, s_lo, s_hi, v, &sc);
            }
#pragma GCC unroll 8
            for (int c = 0; c < NC; c++) {
                const int8_t *x = y[c][b].qs + 32 * j;
                __m512i i0 = DPBUSD(_mm512_setzero_si512(), v[0], _mm512_set1_epi32(load_i32(x)));
                __m512i i1 = DPBUSD(_mm512_setzero_si512(), v[4], _mm512_set1_epi32(load_i32(x + 16)));
                for (int st = 1; st < 4; st++) {
                    i0 = DPBUSD(i0, v[st], _mm512_set1_epi32(load_i32(x + 4 * st)));
                    i1 = DPBUSD(i1, v[st + 4], _mm512_set1_epi32(load_i32(x + 16 + 4 * st)));
                }
                A[c] = _mm512_add_epi32(A[c], _mm512_mullo_epi32(_mm512_add_epi32(i0, i1), sc));
            }
        }
        __m512i mn[8];
        for (int j = 0; j < 8; j++)
            mn[j] = buffered ? _mm512_load_si512(ub + QK_MINS + 64 * j) : KFN(qk_min)(j, m_lo, m_hi);
        const __m512 dw =
            buffered ? _mm512_load_ps(ub + QK_MINS + 512) : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        const __m512 dm = buffered ? _mm512_load_ps(ub + QK_MINS + 576)
                                   : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + l->off_dmin)));
        for (int c = 0; c < NC; c++) {
            const int8_t *bs = (const int8_t *)y[c][b].bsums;
            __m512i B = DPWSSD(_mm512_setzero_si512(), mn[0], _mm512_set1_epi32(load_i32(bs)));
            for (int j = 1; j < 8; j++) B = DPWSSD(B, mn[j], _mm512_set1_epi32(load_i32(bs + 4 * j)));
            __m512 t = _mm512_fmsub_ps(_mm512_cvtepi32_ps(A[c]), dw, _mm512_mul_ps(_mm512_cvtepi32_ps(B), dm));
            acc[c] = _mm512_fmadd_ps(t, _mm512_set1_ps(y[c][b].d), acc[c]);
        }
    }
    __mmask16 m = lanes_mask(rv);
    for (int c = 0; c < NC; c++) _mm512_mask_storeu_ps(out + c * ld_out, m, acc[c]);
}

/* Group g (two sub-blocks of 16) of a Q6_K super-block of a panel in registers: its eight steps' levels (+ 32: six
 * bits, four in the nibbles, two in qh) and the two sub-blocks' scales, as dwords. */
INLINE KTARGET void KFN(q6k_group)(const struct ty_pack_k_layout *l, const uint8_t *p, int g, __m512i v[8],
                                   __m512i *sc0, __m512i *sc1) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const uint8_t *h = p + l->off_grp + l->gb * g, *q = h + l->qh_b;
    const __m512i H0 = _mm512_loadu_si512(h), H1 = _mm512_loadu_si512(h + 64);
    for (int cc = 0; cc < 4; cc++) {
        __m512i t = _mm512_loadu_si512(q + 64 * cc);
        /* bits 2cc..2cc+1 of each qh byte to bits 4..5 (16-bit shifts: what crosses a byte is masked off) */
        __m512i h0 = cc == 0   ? _mm512_slli_epi16(H0, 4)
                     : cc == 1 ? _mm512_slli_epi16(H0, 2)
                     : cc == 2 ? H0
                               : _mm512_srli_epi16(H0, 2);
        __m512i h1 = cc == 0   ? _mm512_slli_epi16(H1, 4)
                     : cc == 1 ? _mm512_slli_epi16(H1, 2)
                     : cc == 2 ? H1
                               : _mm512_srli_epi16(H1, 2);
        /* a | (b & c) */
        v[cc] = _mm512_ternarylogic_epi32(_mm512_and_si512(t, low4), h0, m30, 0xf8);
        v[cc + 4] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(t, 4), low4), h1, m30, 0xf8);
    }
    const __m512i sp = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + l->off_sc + 32 * g)));
    *sc0 = _mm512_srai_epi32(_mm512_slli_epi32(sp, 16), 16), *sc1 = _mm512_srai_epi32(sp, 16);
}

/* Bytes of a Q6_K super-block of a panel unpacked by q6k_unpack: per group its eight steps and two scales, then dw. */
#define Q6K_GROUP    (10 * 64) /* a group: eight steps, then its two scales */
#define Q6K_UNPACKED (8 * Q6K_GROUP + 64)

/* Every super-block of one Q6_K panel unpacked into `buf` (nsb x Q6K_UNPACKED bytes, 64-byte aligned). */
INLINE KTARGET void KFN(q6k_unpack)(const struct ty_pack_k_layout *l, int64_t nsb, const uint8_t *p, uint8_t *buf) {
    for (int64_t b = 0; b < nsb; b++, p += l->bp, buf += Q6K_UNPACKED) {
        for (int g = 0; g < 8; g++) {
            __m512i v[8], sc0, sc1;
            KFN(q6k_group)(l, p, g, v, &sc0, &sc1);
            uint8_t *u = buf + Q6K_GROUP * g;
            for (int st = 0; st < 8; st++) _mm512_store_si512(u + 64 * st, v[st]);
            _mm512_store_si512(u + 512, sc0), _mm512_store_si512(u + 576, sc1);
        }
        _mm512_store_ps(buf + 8 * Q6K_GROUP, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)));
    }
}

/* NC columns of one Q6_K panel, each group unpacked here, or read from `unpacked` (q6k_unpack's buffer; `buffered` a
 * constant, so each call site compiles one way). The levels' + 32 enters each sub-block's sum as -32 times its
 * activation sum before the scale multiplies it. */
INLINE KTARGET void KFN(panel_q6k_body)(int NC, bool buffered, const struct ty_pack_k_layout *l, int64_t nsb,
                                        const uint8_t *p, const uint8_t *unpacked, const struct ty_block_q8_K *const *y,
                                        float *out, int64_t ld_out, int rv) {
    __m512 acc[8];
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; b++, p += l->bp) {
        if (!buffered) ty__stream_ahead(p, l->bp);
        const uint8_t *ub = buffered ? unpacked + (size_t)b * Q6K_UNPACKED : NULL;
        __m512i A[8];
        for (int c = 0; c < NC; c++) A[c] = _mm512_setzero_si512();
        for (int g = 0; g < 8; g++) {
            __m512i v[8], sc0, sc1;
            if (buffered) {
                for (int st = 0; st < 8; st++) v[st] = _mm512_load_si512(ub + Q6K_GROUP * g + 64 * st);
                sc0 = _mm512_load_si512(ub + Q6K_GROUP * g + 512), sc1 = _mm512_load_si512(ub + Q6K_GROUP * g + 576);
            } else {
                KFN(q6k_group)(l, p, g, v, &sc0, &sc1);
            }
#pragma GCC unroll 8
            for (int c = 0; c < NC; c++) {
                const int8_t *x = y[c][b].qs + 32 * g;
                __m512i i0 = _mm512_set1_epi32(-32 * y[c][b].bsums[2 * g]);
                __m512i i1 = _mm512_set1_epi32(-32 * y[c][b].bsums[2 * g + 1]);
                for (int st = 0; st < 4; st++) {
                    i0 = DPBUSD(i0, v[st], _mm512_set1_epi32(load_i32(x + 4 * st)));
                    i1 = DPBUSD(i1, v[st + 4], _mm512_set1_epi32(load_i32(x + 16 + 4 * st)));
                }
                A[c] =
                    _mm512_add_epi32(A[c], _mm512_add_epi32(_mm512_mullo_epi32(i0, sc0), _mm512_mullo_epi32(i1, sc1)));
            }
        }
        const __m512 dw =
            buffered ? _mm512_load_ps(ub + 8 * Q6K_GROUP) : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        for (int c = 0; c < NC; c++)
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(A[c]), _mm512_mul_ps(dw, _mm512_set1_ps(y[c][b].d)), acc[c]);
    }
    __mmask16 m = lanes_mask(rv);
    for (int c = 0; c < NC; c++) _mm512_mask_storeu_ps(out + c * ld_out, m, acc[c]);
}

INLINE KTARGET void KFN(panel_k)(int NC, enum ty_type type, const struct ty_pack_k_layout *l, int64_t nsb,
                                 const uint8_t *p, const uint8_t *unpacked, const struct ty_block_q8_K *const *y,
                                 float *out, int64_t ld_out, int rv) {
    if (type == TY_TYPE_Q6_K && unpacked)
        KFN(panel_q6k_body)(NC, true, l, nsb, p, unpacked, y, out, ld_out, rv);
    else if (type == TY_TYPE_Q6_K)
        KFN(panel_q6k_body)(NC, false, l, nsb, p, NULL, y, out, ld_out, rv);
    else if (unpacked)
        KFN(panel_qk_body)(NC, type == TY_TYPE_Q5_K, true, l, nsb, p, unpacked, y, out, ld_out, rv);
    else
        KFN(panel_qk_body)(NC, type == TY_TYPE_Q5_K, false, l, nsb, p, NULL, y, out, ld_out, rv);
}

INLINE KTARGET void KFN(gemm_packed_k)(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                       int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                                       void *scratch) {
    struct ty_pack_k_layout l;
    ty__pack_k_layout(type, &l);
    const int64_t nsb = n / TY_QK_K;
    /* K-quant panels shared by two or more groups of eight columns are unpacked once into the scratch (see
     * gemm_packed): prefill on one thread (bench_kernels --prefill 512) Q6_K 64-65% -> 66-67% of the int8 peak (its
     * per-column scale multiplies set the pace), Q4_K 61-66% -> 65-68%, Q5_K 61-62% -> 63-65% (alternating runs) */
    const size_t unpacked = type == TY_TYPE_Q6_K ? Q6K_UNPACKED : QK_UNPACKED;
    uint8_t *buf = cols >= 16 && scratch && (size_t)nsb * unpacked <= ty__gemm_scratch_size() ? scratch : NULL;
    for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
        int rv = rows - r < TY_PACK_ROWS ? (int)(rows - r) : TY_PACK_ROWS;
        const uint8_t *p = (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride;
        if (buf && type == TY_TYPE_Q6_K)
            KFN(q6k_unpack)(&l, nsb, p, buf);
        else if (buf)
            KFN(qk_unpack)(type == TY_TYPE_Q5_K, &l, nsb, p, buf);
        for (int64_t c = 0; c < cols;) {
            const struct ty_block_q8_K *y[8];
            int nc = cols - c < 8 ? (int)(cols - c) : 8;
            for (int i = 0; i < nc; i++) y[i] = (const void *)((const char *)xq + (size_t)(c + i) * x_stride);
            float *o = out + c * ld_out + r;
            if (nc == 8)
                KFN(panel_k)(8, type, &l, nsb, p, buf, y, o, ld_out, rv), c += 8;
            else if (nc >= 4)
                KFN(panel_k)(4, type, &l, nsb, p, buf, y, o, ld_out, rv), c += 4;
            else if (nc >= 2)
                KFN(panel_k)(2, type, &l, nsb, p, buf, y, o, ld_out, rv), c += 2;
            else
                KFN(panel_k)(1, type, &l, nsb, p, buf, y, o, ld_out, rv), c += 1;
        }
    }
}

#define KPACKED_K(T, sfx)                                                                                              \
    static KTARGET void KFN(gemm_packed_##sfx)(int64_t n, int64_t rows, const void *w, size_t ps, int64_t cols,        \
                                               const void *xq, size_t xs, float *out, int64_t ld_out, void *scratch) { \
        KFN(gemm_packed_k)(T, n, rows, w, ps, cols, xq, xs, out, ld_out, scratch);                                     \
    }                                                                                                                  \
    static KTARGET void KFN(gemv_packed_##sfx)(int64_t n, int64_t rows, const void *w, size_t ps, const void *xq,      \
                                               float *out) {                                                           \
        KFN(gemm_packed_k)(T, n, rows, w, ps, 1, xq, 0, out, 0, NULL);                                                 \
    }
KPACKED_K(TY_TYPE_Q4_K, q4_K)
KPACKED_K(TY_TYPE_Q5_K, q5_K)
KPACKED_K(TY_TYPE_Q6_K, q6_K)
#undef KPACKED_K

/* ==== Table ==== */

static void KFN(fill_int)(struct ty_simd *s, const char *isa) {
    static const struct {
        enum ty_type type;
        ty_gemv_fn gemv;
    } k[] = {
        {TY_TYPE_Q8_0, KFN(gemv_q8_0)}, {TY_TYPE_Q4_0, KFN(gemv_q4_0)}, {TY_TYPE_Q4_1, KFN(gemv_q4_1)},
        {TY_TYPE_Q5_0, KFN(gemv_q5_0)}, {TY_TYPE_Q5_1, KFN(gemv_q5_1)}, {TY_TYPE_Q4_K, KFN(gemv_q4_K)},
        {TY_TYPE_Q5_K, KFN(gemv_q5_K)}, {TY_TYPE_Q6_K, KFN(gemv_q6_K)},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        s->t[k[i].type].gemv = k[i].gemv;
        s->t[k[i].type].gemv_isa = isa;
    }
    s->t[TY_TYPE_Q4_0].gemv_packed = KFN(gemv_packed_q4_0);
    s->t[TY_TYPE_Q4_1].gemv_packed = KFN(gemv_packed_q4_1);
    s->t[TY_TYPE_Q5_0].gemv_packed = KFN(gemv_packed_q5_0);
    s->t[TY_TYPE_Q5_1].gemv_packed = KFN(gemv_packed_q5_1);
    s->t[TY_TYPE_Q4_0].gemm_packed = KFN(gemm_packed_q4_0);
    s->t[TY_TYPE_Q4_1].gemm_packed = KFN(gemm_packed_q4_1);
    s->t[TY_TYPE_Q5_0].gemm_packed = KFN(gemm_packed_q5_0);
    s->t[TY_TYPE_Q5_1].gemm_packed = KFN(gemm_packed_q5_1);
    s->t[TY_TYPE_Q8_0].gemv_packed = KFN(gemv_packed_q8_0);
#if KVNNI
    s->t[TY_TYPE_Q8_0].gemm_packed = KFN(gemm_packed_q8_0);
    s->t[TY_TYPE_Q8_0].gemm_packed_direct = true;
#endif
    s->t[TY_TYPE_Q4_0].gemm_packed_direct = s->t[TY_TYPE_Q4_1].gemm_packed_direct = true;
    s->t[TY_TYPE_Q5_0].gemm_packed_direct = s->t[TY_TYPE_Q5_1].gemm_packed_direct = true;
    /* K-quants: packed here and on AVX2 (the scalar and NEON tables keep them in rows) */
    s->t[TY_TYPE_Q4_K].gemv_packed = KFN(gemv_packed_q4_K), s->t[TY_TYPE_Q4_K].gemm_packed = KFN(gemm_packed_q4_K);
    s->t[TY_TYPE_Q5_K].gemv_packed = KFN(gemv_packed_q5_K), s->t[TY_TYPE_Q5_K].gemm_packed = KFN(gemm_packed_q5_K);
    s->t[TY_TYPE_Q6_K].gemv_packed = KFN(gemv_packed_q6_K), s->t[TY_TYPE_Q6_K].gemm_packed = KFN(gemm_packed_q6_K);
    s->t[TY_TYPE_Q4_K].gemm_packed_direct = s->t[TY_TYPE_Q5_K].gemm_packed_direct = true;
    s->t[TY_TYPE_Q6_K].gemm_packed_direct = true;
}

#undef DPBUSD
#undef DPWSSD
#undef KFN
#undef KFN1
#undef KFN2
