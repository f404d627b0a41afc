/*
 * gemm.c - the panel driver shared by every instruction set's matrix-matrix kernels (see simd-impl.h): it unpacks R
 * weight rows at a time, for a bounded chunk of K, into the interleaved panel of one micro-kernel, prepares each
 * column's per-group activation scales and sums, and runs the micro-kernel over all columns. Unpacking is paid once
 * per R rows and chunk, then reused by every column (token) of the call, so a prefill of many tokens spends its time
 * in the micro-kernel's integer or bf16 dot products.
 *
 * Loop order: row panels, then K chunks, then column groups. A panel (at most 256 KiB) stays in L2 while every
 * column streams past it; the output of a chunk is added to that of the previous one.
 */
#include "chip/cpu/simd/simd-impl.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#endif

/* ==== Unpacking one weight row into levels ==== */

/* Elements per scale group of a quantised type when unpacked into levels. */
static int group_size(enum ty_type type) {
    return type == TY_TYPE_Q6_K ? 16 : 32;
}

static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Levels lv[kc] and per-group scale and minimum of elements [k0, k0 + kc) of one row, such that
 * w[k] = scale[g] * lv[k] + min[g]; kc and k0 are multiples of the block size. */
static void unpack_levels(enum ty_type type, const void *row, int64_t k0, int64_t kc, int8_t *lv, float *scale,
                          float *min) {
    switch (type) {
    case TY_TYPE_Q8_0:
        for (int64_t b = k0 / 32, i = 0; i < kc / 32; b++, i++) {
            struct ty_block_q8_0 blk;
            TY_SIMD_LOAD(blk, row, b);
            memcpy(lv + 32 * i, blk.qs, 32);
            scale[i] = ty__f16_to_f32(blk.d), min[i] = 0;
        }
        return;
    case TY_TYPE_Q4_0:
    case TY_TYPE_Q4_1:
        for (int64_t b = k0 / 32, i = 0; i < kc / 32; b++, i++) {
            struct ty_block_q4_1 b1;
            struct ty_block_q4_0 b0;
            const uint8_t *qs;
            int off = 0;
            if (type == TY_TYPE_Q4_0) {
                TY_SIMD_LOAD(b0, row, b);
                qs = b0.qs, off = 8;
                scale[i] = ty__f16_to_f32(b0.d), min[i] = 0;
            } else {
                TY_SIMD_LOAD(b1, row, b);
                qs = b1.qs;
                scale[i] = ty__f16_to_f32(b1.d), min[i] = ty__f16_to_f32(b1.m);
            }
            for (int j = 0; j < 16; j++) {
                lv[32 * i + j] = (int8_t)((qs[j] & 0x0f) - off);
                lv[32 * i + j + 16] = (int8_t)((qs[j] >> 4) - off);
            }
        }
        return;
    case TY_TYPE_Q5_0:
    case TY_TYPE_Q5_1:
        for (int64_t b = k0 / 32, i = 0; i < kc / 32; b++, i++) {
            struct ty_block_q5_1 b1;
            struct ty_block_q5_0 b0;
            const uint8_t *qs;
            uint32_t qh;
            int off = 0;
            if (type == TY_TYPE_Q5_0) {
                TY_SIMD_LOAD(b0, row, b);
                qs = b0.qs, qh = load_u32(b0.qh), off = 16;
                scale[i] = ty__f16_to_f32(b0.d), min[i] = 0;
            } else {
                TY_SIMD_LOAD(b1, row, b);
                qs = b1.qs, qh = load_u32(b1.qh);
                scale[i] = ty__f16_to_f32(b1.d), min[i] = ty__f16_to_f32(b1.m);
            }
            for (int j = 0; j < 16; j++) {
                lv[32 * i + j] = (int8_t)(((qs[j] & 0x0f) | ((qh >> j) & 1) << 4) - off);
                lv[32 * i + j + 16] = (int8_t)(((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - off);
            }
        }
        return;
    case TY_TYPE_Q4_K:
    case TY_TYPE_Q5_K:
        for (int64_t b = k0 / TY_QK_K, i = 0; i < kc / TY_QK_K; b++, i++) {
            struct ty_block_q5_K b5;
            struct ty_block_q4_K b4;
            const uint8_t *scales, *qs, *qh = NULL;
            float d, dmin;
            if (type == TY_TYPE_Q5_K) {
                TY_SIMD_LOAD(b5, row, b);
                scales = b5.scales, qs = b5.qs, qh = b5.qh;
                d = ty__f16_to_f32(b5.d), dmin = ty__f16_to_f32(b5.dmin);
            } else {
                TY_SIMD_LOAD(b4, row, b);
                scales = b4.scales, qs = b4.qs;
                d = ty__f16_to_f32(b4.d), dmin = ty__f16_to_f32(b4.dmin);
            }
            for (int j = 0; j < 8; j++) {
                int sc, m;
                if (j < 4) {
                    sc = scales[j] & 63, m = scales[j + 4] & 63;
                } else {
                    sc = (scales[j + 4] & 0x0f) | (scales[j - 4] >> 6) << 4;
                    m = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4;
                }
                scale[8 * i + j] = d * (float)sc;
                min[8 * i + j] = -(dmin * (float)m);
                int8_t *o = lv + TY_QK_K * i + 32 * j;
                const uint8_t *q = qs + 32 * (j / 2);
                int shift = 4 * (j % 2);
                for (int l = 0; l < 32; l++) o[l] = (int8_t)((q[l] >> shift) & 0x0f);
                if (qh)
                    for (int l = 0; l < 32; l++) o[l] = (int8_t)(o[l] | ((qh[l] >> j) & 1) << 4);
            }
        }
        return;
    case TY_TYPE_Q6_K:
        for (int64_t b = k0 / TY_QK_K, i = 0; i < kc / TY_QK_K; b++, i++) {
            struct ty_block_q6_K blk;
            TY_SIMD_LOAD(blk, row, b);
            float d = ty__f16_to_f32(blk.d);
            for (int j = 0; j < 16; j++) scale[16 * i + j] = d * (float)blk.scales[j], min[16 * i + j] = 0;
            int8_t *o = lv + TY_QK_K * i;
            for (int h = 0; h < 2; h++) {
                for (int l = 0; l < 32; l++) {
                    uint8_t a = blk.ql[64 * h + l], c = blk.ql[64 * h + 32 + l], hb = blk.qh[32 * h + l];
                    o[128 * h + l] = (int8_t)(((a & 0x0f) | (hb & 3) << 4) - 32);
                    o[128 * h + 32 + l] = (int8_t)(((c & 0x0f) | ((hb >> 2) & 3) << 4) - 32);
                    o[128 * h + 64 + l] = (int8_t)(((a >> 4) | ((hb >> 4) & 3) << 4) - 32);
                    o[128 * h + 96 + l] = (int8_t)(((c >> 4) | ((hb >> 6) & 3) << 4) - 32);
                }
            }
        }
        return;
    default:
        break;
    }
    TY_ASSERT(!"unpack_levels: not a quantised weight type");
}

/* Elements [k0, k0 + kc) of a plain-type row as f32. */
static void unpack_float(enum ty_type type, const void *row, int64_t k0, int64_t kc, float *out) {
    const uint8_t *p = row;
    switch (type) {
    case TY_TYPE_F32:
        memcpy(out, p + 4 * k0, (size_t)kc * 4);
        return;
    case TY_TYPE_F16:
        for (int64_t i = 0; i < kc; i++) {
            ty_f16 h;
            memcpy(&h, p + 2 * (k0 + i), 2);
            out[i] = ty__f16_to_f32(h);
        }
        return;
    case TY_TYPE_BF16:
        for (int64_t i = 0; i < kc; i++) {
            ty_bf16 h;
            memcpy(&h, p + 2 * (k0 + i), 2);
            out[i] = ty__bf16_to_f32(h);
        }
        return;
    default:
        break;
    }
    TY_ASSERT(!"unpack_float: not a plain weight type");
}

/* ==== Scratch ==== */

struct scratch {
    void *panel;    /* the interleaved values */
    float *scale;   /* (groups, R) */
    float *min;     /* (groups, R) */
    void *row;      /* one row's levels or f32 values for the chunk */
    float *row_sc;  /* one row's group scales */
    float *row_min; /* one row's group minimums */
    float *xs, *xm; /* (C, groups) */
    int32_t *xi;    /* (C, groups) */
    int16_t *x16;   /* (C, kc): activation levels widened for S16 panels */
};

#define MAX_GROUPS  (TY_PANEL_KC_INT / 16)
#define PANEL_BYTES ((size_t)TY_PANEL_MAX_ROWS * TY_PANEL_KC_INT * 2)
_Static_assert((size_t)TY_PANEL_MAX_ROWS *TY_PANEL_KC_FLOAT * 4 <= PANEL_BYTES, "f32 panel fits the scratch");

static size_t layout(struct scratch *s, char *base) {
    size_t off = 0;
#define TAKE(field, bytes)                                                                                             \
    do {                                                                                                               \
        if (s) s->field = (void *)(base + off);                                                                        \
        off += ty__round_up((bytes), 64);                                                                              \
    } while (0)
    TAKE(panel, PANEL_BYTES);
    TAKE(scale, (size_t)MAX_GROUPS * TY_PANEL_MAX_ROWS * 4);
    TAKE(min, (size_t)MAX_GROUPS * TY_PANEL_MAX_ROWS * 4);
    TAKE(row, (size_t)TY_PANEL_KC_INT * 4 > (size_t)TY_PANEL_KC_FLOAT * 4 ? (size_t)TY_PANEL_KC_INT * 4
                                                                          : (size_t)TY_PANEL_KC_FLOAT * 4);
    TAKE(row_sc, (size_t)MAX_GROUPS * 4);
    TAKE(row_min, (size_t)MAX_GROUPS * 4);
    TAKE(xs, (size_t)TY_PANEL_MAX_COLS * MAX_GROUPS * 4);
    TAKE(xm, (size_t)TY_PANEL_MAX_COLS * MAX_GROUPS * 4);
    TAKE(xi, (size_t)TY_PANEL_MAX_COLS * MAX_GROUPS * 4);
    TAKE(x16, (size_t)TY_PANEL_MAX_COLS * TY_PANEL_KC_INT * 2);
#undef TAKE
    return off;
}

size_t ty__gemm_panels_scratch(void) {
    return layout(NULL, NULL);
}

/* ==== Repacking ==== */

static bool is_float_kind(enum ty_panel_kind k) {
    return k == TY_PANEL_F32 || k == TY_PANEL_BF16;
}

/* Levels of elements [k0, k0 + kc) of row r of packed panels (ty__pack). */
static void unpack_levels_packed(enum ty_type type, const void *w, size_t panel_stride, int64_t r, int64_t k0,
                                 int64_t kc, int8_t *lv, float *scale, float *min) {
    struct ty_pack_layout l;
    TY_ASSERT(ty__pack_layout(type, &l));
    const uint8_t *panel = (const uint8_t *)w + (size_t)(r / TY_PACK_ROWS) * panel_stride;
    for (int64_t b = k0 / 32, i = 0; i < kc / 32; b++, i++)
        ty__packed_block_levels(&l, panel + (size_t)b * l.bp, (int)(r % TY_PACK_ROWS), lv + 32 * i, &scale[i], &min[i]);
}

/* Fills the panel with rows [r0, r0 + rv) of w for elements [k0, k0 + kc); lanes rv..R-1 are zero. */
static void repack(const struct ty_gemm_impl *impl, enum ty_type type, bool packed, const void *w, size_t w_stride,
                   int64_t r0, int rv, int64_t k0, int64_t kc, struct scratch *s) {
    const int R = impl->R;
    const int G = group_size(type);
    const int64_t ng = is_float_kind(impl->kind) ? 0 : kc / G;
    if (rv < R) {
        size_t bytes = impl->kind == TY_PANEL_F32 ? 4 : impl->kind == TY_PANEL_U8 || impl->kind == TY_PANEL_S8 ? 1 : 2;
        memset(s->panel, impl->kind == TY_PANEL_U8 ? 0x80 : 0, (size_t)R * (size_t)(kc + 1) * bytes);
        if (ng) {
            memset(s->scale, 0, (size_t)(ng * R) * sizeof(float));
            memset(s->min, 0, (size_t)(ng * R) * sizeof(float));
        }
    }
    for (int r = 0; r < rv; r++) {
        const void *row = packed ? NULL : (const char *)w + (size_t)(r0 + r) * w_stride;
        switch (impl->kind) {
        case TY_PANEL_F32: {
            float *v = s->row, *p = s->panel;
            unpack_float(type, row, k0, kc, v);
            for (int64_t k = 0; k < kc; k++) p[k * R + r] = v[k];
            break;
        }
        case TY_PANEL_BF16: {
            TY_ASSERT(type == TY_TYPE_BF16);
            const uint8_t *src = (const uint8_t *)row + 2 * k0;
            uint32_t *p = s->panel; /* one bf16 pair per lane and step */
            for (int64_t k2 = 0; k2 < kc / 2; k2++) memcpy(&p[k2 * R + r], src + 4 * k2, 4);
            if (kc % 2) { /* odd K: the last element pairs with a zero */
                uint16_t last;
                memcpy(&last, src + 2 * (kc - 1), 2);
                p[(kc / 2) * R + r] = last;
            }
            break;
        }
        case TY_PANEL_S16:
        case TY_PANEL_U8:
        case TY_PANEL_S8: {
            int8_t *lv = s->row;
            if (packed)
                unpack_levels_packed(type, w, w_stride, r0 + r, k0, kc, lv, s->row_sc, s->row_min);
            else
                unpack_levels(type, row, k0, kc, lv, s->row_sc, s->row_min);
            for (int64_t g = 0; g < ng; g++) s->scale[g * R + r] = s->row_sc[g], s->min[g * R + r] = s->row_min[g];
            /* one 4-byte store per step: the unpacking is paid once per panel, but for a few hundred columns it
             * is still a visible share of the call */
            if (impl->kind == TY_PANEL_S16) {
                uint8_t *p = s->panel;
                for (int64_t k2 = 0; k2 < kc / 2; k2++) {
                    int16_t pair[2] = {lv[2 * k2], lv[2 * k2 + 1]};
                    memcpy(p + ((size_t)k2 * R + r) * 4, pair, 4);
                }
            } else {
                uint8_t *p = s->panel;
                uint32_t flip = impl->kind == TY_PANEL_U8 ? 0x80808080u : 0; /* u8 level = level + 128 */
                for (int64_t k4 = 0; k4 < kc / 4; k4++) {
                    uint32_t q;
                    memcpy(&q, lv + 4 * k4, 4);
                    q ^= flip;
                    memcpy(p + ((size_t)k4 * R + r) * 4, &q, 4);
                }
            }
            break;
        }
        }
    }
}

/* Activation values and per-group scales of columns [c0, c0 + nc) for elements [k0, k0 + kc). */
static void prep_cols(const struct ty_gemm_impl *impl, enum ty_type type, enum ty_act_format act, int64_t n,
                      const void *xq, size_t x_stride, int64_t c0, int nc, int64_t k0, int64_t kc, struct scratch *s,
                      struct ty_panel_cols *pc) {
    const int G = group_size(type);
    const int64_t ng = kc / G;
    pc->n = nc;
    pc->ld = ng;
    pc->xsb = act == TY_ACT_Q8_K ? (int64_t)sizeof(struct ty_block_q8_K) : TY_QK_K;
    pc->xs = s->xs, pc->xm = s->xm, pc->xi = s->xi;
    for (int c = 0; c < nc; c++) {
        const char *col = (const char *)xq + (size_t)(c0 + c) * x_stride;
        switch (act) {
        case TY_ACT_F32:
            pc->x[c] = (const float *)col + k0;
            break;
        case TY_ACT_BF16:
            pc->x[c] = (const ty_bf16 *)col + k0;
            break;
        case TY_ACT_Q8: { /* plain loops over arrays: the compiler vectorises them */
            struct ty_q8_act a = ty__q8_act(col, n);
            const float *restrict d = a.d + k0 / 32;
            const int32_t *restrict sum = a.sum + k0 / 32;
            float *restrict xs = s->xs + c * ng, *restrict xm = s->xm + c * ng;
            int32_t *restrict xi = s->xi + c * ng;
            pc->x[c] = a.qs + k0;
            for (int64_t g = 0; g < ng; g++) xs[g] = d[g];
            for (int64_t g = 0; g < ng; g++) xm[g] = d[g] * (float)sum[g];
            for (int64_t g = 0; g < ng; g++) xi[g] = -128 * sum[g];
            break;
        }
        case TY_ACT_Q8_K: { /* levels copied to one run below; per block, the sums of each group */
            const struct ty_block_q8_K *y = (const struct ty_block_q8_K *)col + k0 / TY_QK_K;
            const int per = TY_QK_K / G;
            float *restrict xs = s->xs + c * ng, *restrict xm = s->xm + c * ng;
            int32_t *restrict xi = s->xi + c * ng;
            pc->x[c] = y->qs;
            for (int64_t b = 0; b < kc / TY_QK_K; b++, xs += per, xm += per, xi += per) {
                int32_t sum[16];
                if (G == 16)
                    for (int j = 0; j < 16; j++) sum[j] = y[b].bsums[j];
                else
                    for (int j = 0; j < 8; j++) sum[j] = y[b].bsums[2 * j] + y[b].bsums[2 * j + 1];
                for (int j = 0; j < per; j++) xs[j] = y[b].d, xm[j] = y[b].d * (float)sum[j], xi[j] = -128 * sum[j];
            }
            break;
        }
        case TY_ACT_NONE:
            TY_ASSERT(!"prep_cols: no activation format");
            break;
        }
    }
    /* S16 panels want the levels widened to int16, one contiguous run per column: a copy of nc x kc, small next to
     * the R x nc x kc multiply-adds it feeds. */
    if (impl->kind == TY_PANEL_S16) {
        for (int c = 0; c < nc; c++) {
            const char *col = (const char *)xq + (size_t)(c0 + c) * x_stride;
            int16_t *restrict x16 = s->x16 + (size_t)c * TY_PANEL_KC_INT;
            const int64_t run = act == TY_ACT_Q8_K ? TY_QK_K : kc; /* contiguous levels at a time */
            for (int64_t k = 0; k < kc; k += run) {
                const int8_t *restrict src = act == TY_ACT_Q8_K
                                                 ? ((const struct ty_block_q8_K *)col)[(k0 + k) / TY_QK_K].qs
                                                 : (const int8_t *)pc->x[c] + k;
                for (int64_t j = 0; j < run; j++) x16[k + j] = src[j];
            }
            pc->x[c] = x16;
        }
    }
}

/* ==== Driver ==== */

void ty__gemm_panels(const struct ty_gemm_impl *impl, enum ty_type type, enum ty_act_format act, bool packed, int64_t n,
                     int64_t rows, const void *w, size_t w_stride, int64_t cols, const void *xq, size_t x_stride,
                     float *out, int64_t ld_out, void *scratch) {
    TY_ASSERT(impl->R <= TY_PANEL_MAX_ROWS && impl->C <= TY_PANEL_MAX_COLS);
    TY_ASSERT(!packed || ty__pack_supported(type));
    struct scratch s;
    layout(&s, scratch);
    const bool fl = is_float_kind(impl->kind);
    const int64_t KC = fl ? TY_PANEL_KC_FLOAT : TY_PANEL_KC_INT;
    const int G = fl ? 1 : group_size(type);
    for (int64_t r0 = 0; r0 < rows; r0 += impl->R) {
        int rv = rows - r0 < impl->R ? (int)(rows - r0) : impl->R;
        for (int64_t k0 = 0; k0 < n; k0 += KC) {
            int64_t kc = n - k0 < KC ? n - k0 : KC;
            repack(impl, type, packed, w, w_stride, r0, rv, k0, kc, &s);
            struct ty_panel p = {impl->R, kc, G, false, s.panel, s.scale, s.min};
            if (!fl) {
                p.has_min =
                    type == TY_TYPE_Q4_1 || type == TY_TYPE_Q5_1 || type == TY_TYPE_Q4_K || type == TY_TYPE_Q5_K;
            }
            for (int64_t c0 = 0; c0 < cols; c0 += impl->C) {
                int nc = cols - c0 < impl->C ? (int)(cols - c0) : impl->C;
                struct ty_panel_cols pc;
                prep_cols(impl, type, act, n, xq, x_stride, c0, nc, k0, kc, &s, &pc);
                impl->kernel(&p, &pc, out + c0 * ld_out + r0, ld_out, rv, k0 > 0);
            }
        }
    }
}
