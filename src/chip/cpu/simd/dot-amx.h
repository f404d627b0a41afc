/*
 * dot-amx.h - the avx512amx path's prefill products: packed Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 panels against 16 or
 * more activation columns on the AMX tile unit (tdpbssd: 16 x 16 dot products of 64 int8 pairs per instruction, about
 * seven times vpdpbusd's throughput per core). Included by dot-avx512.c after the VNNI copy of dot-avx512-int.h, whose
 * panel_block unpacks the levels and whose gemm_packed takes the columns that do not fill a tile.
 *
 * A packed block's eight 64-byte steps (byte 4r + j: element 4s + j of row r) are already the layout tdpbssd wants for
 * its second operand (K / 4 rows of 16 rows' quads), so a panel's blocks are unpacked once into the scratch as signed
 * levels (the stored level minus the type's zero) and read as 8 x 64-byte tiles; the first operand is 16 columns' Q8
 * activation levels, read in place or, for long rows and calls of many panels, copied once per call so that each
 * block's 16 x 32 bytes are contiguous. Every block has its own scales, so each tdpbssd covers one block (K = 32) into
 * a zeroed tile, and its 16 x 16 integer dots leave through memory for AVX-512 to scale and add: per column and block,
 * acc + cvt(dot) x (dw x dx) (+ mw x dx x sum for the affine types), panel_column's operations in its order on the
 * same exact integer, so each column gets the bits of the VNNI gemm.
 *
 * Where the time goes (tdpbssd costs the same at K = 32 as at 64, so half the tile peak is the ceiling): per 16 x 16
 * x 32 block the tile store alone takes as long as the tdpbssd, and the 16 loads, conversions and multiply-adds that
 * scale its dots take longer. One column tile by one panel per pass keeps the 16 columns' sums in registers (the
 * earlier 2 x 2 tiles kept theirs in memory: 64 more loads and stores a block), and each block's 16 column scales are
 * gathered into one vector's worth of memory once per call. Against that earlier kernel, in one /tmp harness over
 * ty__simd_gemm_packed (Q8_0, one thread, alternating binaries): 896 inputs x 64 rows x 208 columns (a prefill's
 * gate and up slices) 483-487 -> 587-589 GOP/s, 4864 x 32 x 64 (a small share of down) 257-263 -> 496-533, the
 * whole 896 x 4864 x 512 and 4864 x 896 x 512 within noise (476-611 either way, the host varying); about 8-9% of
 * the tile peak.
 *
 * Tiles: 0-3 dots (16 columns x 16 rows of int32), 4-5 column tiles (16 x 32 bytes), 6-7 panel blocks (8 x 64 bytes).
 * The tile configuration is loaded at each call and released at its end, so a thread never carries tile state
 * between calls.
 */

#if defined(TY_HAVE_AMX_KERNELS)

#define AMX_COLS          16   /* activation columns per tile */
#define AMX_COPY_MIN_K    2048 /* the shortest rows, and the fewest rows of a call, whose column tiles are copied */
#define AMX_COPY_MIN_ROWS 64

/* acc[t] (column t's 16 rows) + the dots of block b (16 columns x 16 rows, int32, from memory) scaled as panel_column
 * scales them, with the column tile's scales dx (and for the affine types dm = d x sum) of the block: the same
 * operations on the same exact integers, so the bits of the VNNI gemm. */
INLINE AVX512_AMX void amx_scale_add(int AFFINE, const int32_t *dots, const uint8_t *blk, const float *dx,
                                     const float *dm, __m512 acc[AMX_COLS]) {
    const __m512 dw = _mm512_load_ps(blk + 512);
#pragma GCC unroll 16
    for (int t = 0; t < AMX_COLS; t++)
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(dots + 16 * t)),
                                 _mm512_mul_ps(dw, _mm512_set1_ps(dx[t])), acc[t]);
    if (AFFINE) {
        const __m512 mw = _mm512_load_ps(blk + 576);
#pragma GCC unroll 16
        for (int t = 0; t < AMX_COLS; t++) acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(dm[t]), acc[t]);
    }
}

/* Tile C = the dots of block b: tile A the column tile's levels, tile B the panel's block. */
#define AMX_DOTS(C, A, B, b)                                                                                           \
    do {                                                                                                               \
        _tile_loadd(A, x + (size_t)(b)*x_block, (long)x_stride);                                                       \
        _tile_loadd(B, u + (size_t)(b)*UNPACKED_BLOCK, 64);                                                            \
        _tile_zero(C);                                                                                                 \
        _tile_dpbssd(C, A, B);                                                                                         \
    } while (0)

/* One column tile (block b's levels at x + b x_block, row stride x_stride; its scales dx and dm, 16 a block) by one
 * unpacked panel u, every block, the sums in registers. Tiles are not renamed: a tile is loaded or zeroed only once the
 * instruction before it that reads the tile is done. So block j's dots go to tile j % 4 from tiles 4 + j % 2 and 6 + j
 * % 2, and are issued two blocks ahead; step b stores block b's dots and scales block b - 1's (stored a step earlier,
 * so their loads do not wait for the store). out: the columns' rv rows. */
INLINE AVX512_AMX void amx_column_tile(int AFFINE, int64_t nb, const int8_t *x, size_t x_block, size_t x_stride,
                                       const uint8_t *u, const float *dx, const float *dm, int32_t *dots, float *out,
                                       int64_t ld_out, int rv) {
    __m512 acc[AMX_COLS];
    for (int t = 0; t < AMX_COLS; t++) acc[t] = _mm512_setzero_ps();
#define AMX_STEP(C, C2, A2, B2)                                                                                        \
    do {                                                                                                               \
        if (b + 2 < nb) AMX_DOTS(C2, A2, B2, b + 2);                                                                   \
        _tile_stored(C, dots + 256 * (b % 2), 64);                                                                     \
    } while (0)
    AMX_DOTS(0, 4, 6, 0);
    if (nb > 1) AMX_DOTS(1, 5, 7, 1);
    for (int64_t b = 0; b < nb; b++) {
        switch (b % 4) {
        case 0:
            AMX_STEP(0, 2, 4, 6);
            break;
        case 1:
            AMX_STEP(1, 3, 5, 7);
            break;
        case 2:
            AMX_STEP(2, 0, 4, 6);
            break;
        default:
            AMX_STEP(3, 1, 5, 7);
            break;
        }
        if (b > 0)
            amx_scale_add(AFFINE, dots + 256 * ((b - 1) % 2), u + (size_t)(b - 1) * UNPACKED_BLOCK, dx + 16 * (b - 1),
                          dm + 16 * (b - 1), acc);
    }
#undef AMX_STEP
    amx_scale_add(AFFINE, dots + 256 * ((nb - 1) % 2), u + (size_t)(nb - 1) * UNPACKED_BLOCK, dx + 16 * (nb - 1),
                  dm + 16 * (nb - 1), acc);
    const __mmask16 m = lanes_mask(rv);
    for (int t = 0; t < AMX_COLS; t++) _mm512_mask_storeu_ps(out + t * ld_out, m, acc[t]);
}
#undef AMX_DOTS

/* The scales of columns [c0, c0 + nc) (nc a multiple of 16) for amx_column_tile: per column tile and block, the 16
 * columns' d, then (affine types) their d x sum, each the product panel_column forms. Gathered 16 columns at a time
 * (column t's arrays at t x x_stride bytes past column 0's): once per call, not once per panel. */
INLINE AVX512_AMX void amx_gather_scales(bool affine, int64_t n, const void *xq, size_t x_stride, int64_t c0,
                                         int64_t nc, float *dx, float *dm) {
    const int64_t nb = n / 32;
    const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32((int)x_stride));
    for (int64_t c = 0; c < nc; c += AMX_COLS) {
        const struct ty_q8_act a = ty__q8_act((const char *)xq + (size_t)(c0 + c) * x_stride, n);
        float *tx = dx + (size_t)c * (size_t)nb, *tm = dm + (size_t)c * (size_t)nb;
        for (int64_t b = 0; b < nb; b++) {
            const __m512 d = _mm512_i32gather_ps(idx, a.d + b, 1);
            _mm512_store_ps(tx + 16 * b, d);
            if (affine)
                _mm512_store_ps(tm + 16 * b,
                                _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_i32gather_epi32(idx, a.sum + b, 1))));
        }
    }
}

static AVX512_AMX void amx_gemm_packed(enum ty_type type, int64_t n, int64_t rows, const void *w, size_t panel_stride,
                                       int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                                       void *scratch) {
    struct ty_pack_layout l;
    ty__pack_layout(type, &l);
    const int64_t nb = n / 32, full = cols / AMX_COLS * AMX_COLS;
    /* Long rows whose panels many columns pass: each column tile's levels are copied so that a block's 16 x 32 bytes
     * are contiguous. In the /tmp harness (Q8_0, one thread): 4864 x 896 x 512 read in place at a 6 KiB stride ran
     * 17% slower; for K = 896 the copy did not pay; copied for a call of 32 or 16 rows (4864 x 64 columns, a small
     * share of a down product) it cost 40% and 58% (516-531 -> 305-318 and 499-518 -> 212-218 GOP/s). */
    const bool copy = n >= AMX_COPY_MIN_K && rows >= AMX_COPY_MIN_ROWS;
    /* the scratch: the unpacked panel, two tiles of dots, then the scales (and levels) of as many tiles as fit */
    const size_t fixed = (size_t)nb * UNPACKED_BLOCK + 2 * 1024,
                 per_tile = (size_t)nb * (64 * (l.affine ? 2 : 1) + (copy ? 512 : 0));
    const size_t size = ty__gemm_scratch_size();
    if (full == 0 || !scratch || fixed + per_tile > size || x_stride > INT32_MAX / AMX_COLS) {
        gemm_packed_vnni(type, n, rows, w, panel_stride, cols, xq, x_stride, out, ld_out, scratch);
        return;
    }
    struct ty_amx_config cfg = {.palette = 1};
    for (int t = 0; t < 4; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64; /* dots: 16 columns x 16 int32 */
    for (int t = 4; t < 6; t++) cfg.rows[t] = 16, cfg.colsb[t] = 32; /* columns: 16 x one block of levels */
    for (int t = 6; t < 8; t++) cfg.rows[t] = 8, cfg.colsb[t] = 64;  /* a block of a panel: 8 steps of 16 quads */
    _tile_loadconfig(&cfg);
    uint8_t *u = scratch;
    int32_t *dots = (int32_t *)(u + (size_t)nb * UNPACKED_BLOCK);
    float *dx = (float *)(dots + 512);
    const int64_t chunk = (int64_t)((size - fixed) / per_tile) * AMX_COLS; /* columns that fit */
    for (int64_t c0 = 0; c0 < full; c0 += chunk) {
        const int64_t nc = full - c0 < chunk ? full - c0 : chunk;
        float *dm = dx + (size_t)nc * (size_t)nb;                               /* after every tile's dx */
        int8_t *xl = (int8_t *)(dm + (l.affine ? (size_t)nc * (size_t)nb : 0)); /* then the copied levels */
        amx_gather_scales(l.affine, n, xq, x_stride, c0, nc, dx, dm);
        if (copy)
            for (int64_t c = 0; c < nc; c++) {
                const int8_t *src = (const int8_t *)xq + (size_t)(c0 + c) * x_stride;
                int8_t *dst = xl + (size_t)(c / AMX_COLS) * (size_t)nb * 512 + (size_t)(c % AMX_COLS) * 32;
                for (int64_t b = 0; b < nb; b++) memcpy(dst + (size_t)b * 512, src + 32 * b, 32);
            }
        for (int64_t r = 0; r < rows; r += TY_PACK_ROWS) {
            const int rv = rows - r < TY_PACK_ROWS ? (int)(rows - r) : TY_PACK_ROWS;
            panel_unpack_vnni(&l, nb, (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride, u, l.offset);
            for (int64_t c = 0; c < nc; c += AMX_COLS) {
                const int8_t *x =
                    copy ? xl + (size_t)c * (size_t)nb * 32 : (const int8_t *)xq + (size_t)(c0 + c) * x_stride;
                const size_t xb = copy ? 512 : 32, xs = copy ? 32 : x_stride, at = (size_t)c * (size_t)nb;
                float *o = out + (c0 + c) * ld_out + r;
                if (l.affine)
                    amx_column_tile(1, nb, x, xb, xs, u, dx + at, dm + at, dots, o, ld_out, rv);
                else
                    amx_column_tile(0, nb, x, xb, xs, u, dx + at, dm + at, dots, o, ld_out, rv);
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
