/*
 * dot-amx.h - the avx512amx path's prefill products: packed Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 panels against 16 or
 * more activation columns on the AMX tile unit (tdpbssd: 16 x 16 dot products of 64 int8 pairs per instruction, about
 * seven times vpdpbusd's throughput per core). Included by dot-avx512.c after the VNNI copy of dot-avx512-int.h, whose
 * panel_block unpacks the levels and whose gemm_packed takes the columns that do not fill a tile.
 *
 * A packed block's eight 64-byte steps (byte 4r + j: element 4s + j of row r) are already the layout tdpbssd wants for
 * its second operand (K / 4 rows of 16 rows' quads), so a panel's blocks are unpacked once into the scratch as signed
 * levels (the stored level minus the type's zero) and read as 8 x 64-byte tiles; the first operand is 16 columns'
 * Q8 activation levels, read in place (32 bytes of each row). Every block has its own scales, so each tdpbssd covers
 * one block (K = 32) into a zeroed tile, and its 16 x 16 integer dots leave through memory for AVX-512 to scale and
 * add: per column and block, acc + cvt(dot) x (dw x dx) (+ mw x dx x sum for the affine types), panel_column's
 * operations in its order on the same exact integer, so each column gets the bits of the VNNI gemm.
 *
 * Tiles: 0-3 the dots of two column tiles by two panels, 4-5 the two column tiles (16 rows x 32 bytes), 6-7 the two
 * panels' blocks (8 rows x 64 bytes). The tile configuration is loaded at each call and released at its end, so a
 * thread never carries tile state between calls.
 */

#if defined(TY_HAVE_AMX_KERNELS)

#define AMX_COLS 16 /* activation columns per tile */

/* Bytes of the scratch one call uses: two panels' unpacked blocks, the dot tiles, the f32 accumulators. */
static size_t amx_scratch_bytes(int64_t nb) {
    return 2 * (size_t)nb * UNPACKED_BLOCK + 4096 + 2 * AMX_COLS * 2 * TY_PACK_ROWS * sizeof(float);
}
_Static_assert(UNPACKED_BLOCK == 640 && 4096 + 2 * AMX_COLS * 2 * TY_PACK_ROWS * sizeof(float) <= 8192,
               "TY_AMX_SCRATCH (simd-impl.h) holds a call's scratch");

/* acc[t] (one column's 16 rows of one panel, in memory) + the dots of tile `dots` (16 columns x 16 rows, int32) scaled
 * as panel_column scales them. */
INLINE AVX512_AMX void amx_scale_add(const struct ty_pack_layout *l, const int32_t *dots, const uint8_t *blk,
                                     const struct ty_q8_act *a, int64_t b, float *acc, size_t acc_ld) {
    const __m512 dw = _mm512_load_ps(blk + 512), mw = _mm512_load_ps(blk + 576);
    for (int t = 0; t < AMX_COLS; t++, acc += acc_ld) {
        __m512 s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(dots + 16 * t)),
                                   _mm512_mul_ps(dw, _mm512_set1_ps(a[t].d[b])), _mm512_load_ps(acc));
        if (l->affine) s = _mm512_fmadd_ps(mw, _mm512_set1_ps(a[t].d[b] * (float)a[t].sum[b]), s);
        _mm512_store_ps(acc, s);
    }
}

/* The dots of block b, NT column tiles by NP panels, into tiles 0-3 (the column tiles read in place, the panels' blocks
 * from u0 and u1). */
INLINE AVX512_AMX void amx_issue(int NT, int NP, int64_t b, const int8_t *x0, const int8_t *x1, size_t x_stride,
                                 const uint8_t *u0, const uint8_t *u1) {
    _tile_loadd(4, x0 + 32 * b, (long)x_stride);
    _tile_loadd(6, u0 + (size_t)b * UNPACKED_BLOCK, 64);
    _tile_zero(0);
    _tile_dpbssd(0, 4, 6);
    if (NP == 2) {
        _tile_loadd(7, u1 + (size_t)b * UNPACKED_BLOCK, 64);
        _tile_zero(1);
        _tile_dpbssd(1, 4, 7);
    }
    if (NT == 2) {
        _tile_loadd(5, x1 + 32 * b, (long)x_stride);
        _tile_zero(2);
        _tile_dpbssd(2, 5, 6);
        if (NP == 2) {
            _tile_zero(3);
            _tile_dpbssd(3, 5, 7);
        }
    }
}

/* Tiles 0-3 to dots (1024 int32 each, in the order of amx_issue's tiles). */
INLINE AVX512_AMX void amx_store(int NT, int NP, int32_t *dots) {
    _tile_stored(0, dots, 64);
    if (NP == 2) _tile_stored(1, dots + 256, 64);
    if (NT == 2) _tile_stored(2, dots + 512, 64);
    if (NT == 2 && NP == 2) _tile_stored(3, dots + 768, 64);
}

/* NT column tiles (1 or 2) by NP panels (1 or 2), every block: acc (NT * 16 columns x NP * 16 rows, row stride
 * NP * 16 floats) holds the sums. (Issuing block b + 1's products before scaling block b's dots, from a second
 * buffer, measured the same.) */
INLINE AVX512_AMX void amx_tiles(int NT, int NP, const struct ty_pack_layout *l, int64_t nb, const int8_t *x0,
                                 const int8_t *x1, size_t x_stride, const uint8_t *u0, const uint8_t *u1,
                                 const struct ty_q8_act *a, int32_t *dots, float *acc) {
    const size_t ld = (size_t)NP * TY_PACK_ROWS;
    for (int64_t b = 0; b < nb; b++) {
        amx_issue(NT, NP, b, x0, x1, x_stride, u0, u1);
        amx_store(NT, NP, dots);
        const uint8_t *b0 = u0 + (size_t)b * UNPACKED_BLOCK, *b1 = u1 + (size_t)b * UNPACKED_BLOCK;
        amx_scale_add(l, dots, b0, a, b, acc, ld);
        if (NP == 2) amx_scale_add(l, dots + 256, b1, a, b, acc + TY_PACK_ROWS, ld);
        if (NT == 2) amx_scale_add(l, dots + 512, b0, a + AMX_COLS, b, acc + AMX_COLS * ld, ld);
        if (NT == 2 && NP == 2)
            amx_scale_add(l, dots + 768, b1, a + AMX_COLS, b, acc + AMX_COLS * ld + TY_PACK_ROWS, ld);
    }
}

static AVX512_AMX void amx_gemm_packed(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                       int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                                       void *scratch) {
    struct ty_pack_layout l;
    ty__pack_layout(type, &l);
    const int64_t nb = n / 32, full = cols / AMX_COLS * AMX_COLS;
    if (full == 0 || !scratch || amx_scratch_bytes(nb) > ty__gemm_scratch_size() || x_stride % 4 ||
        x_stride > INT32_MAX) {
        gemm_packed_vnni(type, n, rows, w, panel_stride, cols, xq, x_stride, out, ld_out, scratch);
        return;
    }
    struct ty_amx_config cfg = {.palette = 1};
    for (int t = 0; t < 4; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64; /* dots: 16 columns x 16 int32 */
    for (int t = 4; t < 6; t++) cfg.rows[t] = 16, cfg.colsb[t] = 32; /* columns: 16 x one block of levels */
    for (int t = 6; t < 8; t++) cfg.rows[t] = 8, cfg.colsb[t] = 64;  /* a block of a panel: 8 steps of 16 quads */
    _tile_loadconfig(&cfg);
    uint8_t *u0 = scratch, *u1 = u0 + (size_t)nb * UNPACKED_BLOCK;
    int32_t *dots = (int32_t *)(u1 + (size_t)nb * UNPACKED_BLOCK);
    float *acc = (float *)(dots + 1024);
    for (int64_t r = 0; r < rows; r += 2 * TY_PACK_ROWS) {
        const int np = rows - r > TY_PACK_ROWS ? 2 : 1;
        const uint8_t *p = (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride;
        panel_unpack_vnni(&l, nb, p, u0, l.offset);
        if (np == 2) panel_unpack_vnni(&l, nb, p + panel_stride, u1, l.offset);
        for (int64_t c = 0; c < full; c += 2 * AMX_COLS) {
            const int nt = full - c > AMX_COLS ? 2 : 1;
            struct ty_q8_act a[2 * AMX_COLS];
            for (int i = 0; i < nt * AMX_COLS; i++) a[i] = ty__q8_act((const char *)xq + (size_t)(c + i) * x_stride, n);
            memset(acc, 0, 2 * AMX_COLS * 2 * TY_PACK_ROWS * sizeof(float));
            const int8_t *x0 = a[0].qs, *x1 = nt == 2 ? a[AMX_COLS].qs : NULL;
            if (nt == 2 && np == 2)
                amx_tiles(2, 2, &l, nb, x0, x1, x_stride, u0, u1, a, dots, acc);
            else if (nt == 2)
                amx_tiles(2, 1, &l, nb, x0, x1, x_stride, u0, u1, a, dots, acc);
            else if (np == 2)
                amx_tiles(1, 2, &l, nb, x0, x1, x_stride, u0, u1, a, dots, acc);
            else
                amx_tiles(1, 1, &l, nb, x0, x1, x_stride, u0, u1, a, dots, acc);
            for (int i = 0; i < nt * AMX_COLS; i++) {
                for (int j = 0; j < np; j++) {
                    int64_t r0 = r + (int64_t)j * TY_PACK_ROWS;
                    int rv = rows - r0 < TY_PACK_ROWS ? (int)(rows - r0) : TY_PACK_ROWS;
                    _mm512_mask_storeu_ps(out + (c + i) * ld_out + r0, rv >= 16 ? 0xffff : (__mmask16)((1u << rv) - 1),
                                          _mm512_load_ps(acc + (size_t)i * np * TY_PACK_ROWS + j * TY_PACK_ROWS));
                }
            }
        }
    }
    _tile_release();
    if (full < cols) /* the last columns, fewer than a tile: the VNNI kernel, the same bits */
        gemm_packed_vnni(type, n, rows, w, panel_stride, cols - full, (const char *)xq + (size_t)full * x_stride,
                         x_stride, out + full * ld_out, ld_out, scratch);
}

#define AMX_GEMM(name, T)                                                                                              \
    static AVX512_AMX void name(int64_t n, int64_t rows, const void *w, size_t ps, int64_t cols, const void *xq,       \
                                size_t xs, float *out, int64_t ld_out, void *scratch) {                                \
        amx_gemm_packed(T, n, rows, w, ps, cols, xq, xs, out, ld_out, scratch);                                        \
    }
AMX_GEMM(amx_gemm_q8_0, TY_TYPE_Q8_0)
AMX_GEMM(amx_gemm_q4_0, TY_TYPE_Q4_0)
AMX_GEMM(amx_gemm_q4_1, TY_TYPE_Q4_1)
AMX_GEMM(amx_gemm_q5_0, TY_TYPE_Q5_0)
AMX_GEMM(amx_gemm_q5_1, TY_TYPE_Q5_1)
#undef AMX_GEMM

static void fill_amx(struct ty_simd *s) {
    static const struct {
        enum ty_type type;
        ty_gemm_fn gemm;
    } k[] = {{TY_TYPE_Q8_0, amx_gemm_q8_0},
             {TY_TYPE_Q4_0, amx_gemm_q4_0},
             {TY_TYPE_Q4_1, amx_gemm_q4_1},
             {TY_TYPE_Q5_0, amx_gemm_q5_0},
             {TY_TYPE_Q5_1, amx_gemm_q5_1}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        s->t[k[i].type].gemm_packed = k[i].gemm;
        s->t[k[i].type].gemm_isa = "avx512amx";
    }
}

#endif /* TY_HAVE_AMX_KERNELS */
