/*
 * pack.c - the packed weight layouts (see simd.h) of the 32-element block types and of the K-quants: packing once at
 * load, the exact inverse, and the scalar reference kernels on packed panels.
 *
 * Why: in the file's own layout one 64-byte vector can hold only two blocks' worth of levels after a gather, and each
 * block's scale costs a conversion and a multiply per two blocks, so a Zen 4 core decodes Q4_0 at about 14 GB/s of
 * weights, under a thread's share of DRAM bandwidth. Interleaving 16 rows puts one 4-element step of 16 rows in one
 * vector: a vpdpbusd per step with a broadcast activation quad, one scale conversion per 16 blocks, and nibbles that
 * need no gather. The panel keeps the blocks' size, so decode reads the same bytes.
 */
#include "chip/cpu/simd/simd-impl.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#endif

/* Bytes of one element of a float type with a packed layout (F32, F16, BF16); 0 for the others. */
static size_t float_size(enum ty_type type) {
    return type == TY_TYPE_F32 ? 4 : type == TY_TYPE_F16 || type == TY_TYPE_BF16 ? 2 : 0;
}

bool ty__pack_supported(enum ty_type type) {
    struct ty_pack_layout l;
    struct ty_pack_k_layout kl;
    return ty__pack_layout(type, &l) || ty__pack_k_layout(type, &kl) || float_size(type) > 0;
}

size_t ty__pack_size(enum ty_type type, int64_t rows, int64_t n) {
    struct ty_pack_layout l;
    struct ty_pack_k_layout kl;
    if (rows < 0) return 0;
    size_t panels = (size_t)((rows + TY_PACK_ROWS - 1) / TY_PACK_ROWS);
    if (ty__pack_k_layout(type, &kl)) return n % TY_QK_K != 0 ? 0 : panels * (size_t)(n / TY_QK_K) * (size_t)kl.bp;
    if (float_size(type)) return n < 0 ? 0 : panels * (size_t)n * TY_PACK_ROWS * float_size(type);
    if (!ty__pack_layout(type, &l) || n % 32 != 0) return 0;
    return panels * (size_t)(n / 32) * (size_t)l.bp;
}

/* ==== K-quant panels ==== */

/* The 256 stored levels of a natural super-block: 0..15 (Q4_K), 0..31 (Q5_K), 0..63 (Q6_K, level + 32). Element e
 * of Q4_K / Q5_K is nibble (e / 32) % 2 of qs[32 (e / 64) + e % 32], plus bit e / 32 of qh[e % 32]; Q6_K's layout is
 * dot-scalar.c's (halves of 128, quarters of 32). */
static void k_levels(const struct ty_pack_k_layout *l, const uint8_t *blk, uint8_t u[TY_QK_K]) {
    if (l->six) {
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 32; k++) {
                const uint8_t *ql = blk + 64 * h, qh = blk[128 + 32 * h + k];
                uint8_t *o = u + 128 * h + k;
                o[0] = (uint8_t)((ql[k] & 0x0f) | (qh & 3) << 4);
                o[32] = (uint8_t)((ql[32 + k] & 0x0f) | ((qh >> 2) & 3) << 4);
                o[64] = (uint8_t)((ql[k] >> 4) | ((qh >> 4) & 3) << 4);
                o[96] = (uint8_t)((ql[32 + k] >> 4) | ((qh >> 6) & 3) << 4);
            }
        return;
    }
    const uint8_t *qs = blk + (l->five ? 48 : 16);
    for (int g2 = 0; g2 < 4; g2++)
        for (int k = 0; k < 32; k++) {
            u[64 * g2 + k] = qs[32 * g2 + k] & 0x0f;
            u[64 * g2 + 32 + k] = qs[32 * g2 + k] >> 4;
        }
    if (l->five)
        for (int e = 0; e < TY_QK_K; e++) u[e] |= (uint8_t)(((blk[16 + e % 32] >> (e / 32)) & 1) << 4);
}

/* The inverse: ORs level u of element e into a zeroed natural super-block. */
static void k_set_level(const struct ty_pack_k_layout *l, uint8_t *blk, int e, int u) {
    if (l->six) {
        int h = e / 128, g = (e % 128) / 32, k = e % 32;
        blk[64 * h + 32 * (g % 2) + k] |= (uint8_t)((u & 0x0f) << (g < 2 ? 0 : 4));
        blk[128 + 32 * h + k] |= (uint8_t)((u >> 4) << (2 * g));
        return;
    }
    uint8_t *qs = blk + (l->five ? 48 : 16);
    qs[32 * (e / 64) + e % 32] |= (uint8_t)((u & 0x0f) << (4 * ((e / 32) % 2)));
    if (l->five) blk[16 + e % 32] |= (uint8_t)((u >> 4) << (e / 32));
}

/* Where element e of row r sits in a packed super-block: the nibble byte and shift, the high-bit byte and shift. */
static void k_packed_pos(const struct ty_pack_k_layout *l, int r, int e, int *qb, int *qsh, int *hb, int *hsh) {
    int g = e / 32, k = e % 32, s = k / 4, byte = 4 * r + k % 4, grp = l->off_grp + l->gb * g;
    *qb = grp + l->qh_b + 64 * (s % 4) + byte, *qsh = s < 4 ? 0 : 4;
    if (l->six)
        *hb = grp + 64 * (s / 4) + byte, *hsh = 2 * (s % 4);
    else
        *hb = grp + byte, *hsh = s;
}

/* Writes row r of a packed super-block (zeroed beforehand: Q5_K rows share their fifth-bit bytes). */
static void pack_k_block(const struct ty_pack_k_layout *l, const uint8_t *blk, int r, uint8_t *p) {
    if (l->six) {
        memcpy(p + 2 * r, blk + 208, 2);
        for (int j = 0; j < 16; j++) p[l->off_sc + 32 * (j / 2) + 2 * r + j % 2] = blk[192 + j];
    } else {
        memcpy(p + 2 * r, blk, 2);
        memcpy(p + l->off_dmin + 2 * r, blk + 2, 2);
        for (int w = 0; w < 3; w++) memcpy(p + l->off_sc + 64 * w + 4 * r, blk + 4 + 4 * w, 4);
    }
    uint8_t u[TY_QK_K];
    k_levels(l, blk, u);
    /* group g: byte 4r + j of chunk c holds elements 4c + j (low nibble) and 16 + 4c + j (high) */
    for (int g = 0; g < 8; g++) {
        const uint8_t *ug = u + 32 * g;
        uint8_t *grp = p + l->off_grp + l->gb * g;
        for (int c = 0; c < 4; c++)
            for (int j = 0; j < 4; j++)
                grp[l->qh_b + 64 * c + 4 * r + j] =
                    (uint8_t)((ug[4 * c + j] & 0x0f) | (ug[16 + 4 * c + j] & 0x0f) << 4);
        if (l->six)
            for (int h = 0; h < 2; h++)
                for (int j = 0; j < 4; j++) {
                    int v = 0;
                    for (int c = 0; c < 4; c++) v |= (ug[16 * h + 4 * c + j] >> 4) << (2 * c);
                    grp[64 * h + 4 * r + j] = (uint8_t)v;
                }
        else if (l->five)
            for (int st = 0; st < 8; st++)
                for (int j = 0; j < 4; j++) grp[4 * r + j] |= (uint8_t)((ug[4 * st + j] >> 4) << st);
    }
}

/* Row r of a packed super-block back in its natural layout. */
static void unpack_k_block(const struct ty_pack_k_layout *l, const uint8_t *p, int r, uint8_t *blk) {
    memset(blk, 0, (size_t)l->bs);
    if (l->six) {
        memcpy(blk + 208, p + 2 * r, 2);
        for (int j = 0; j < 16; j++) blk[192 + j] = p[l->off_sc + 32 * (j / 2) + 2 * r + j % 2];
    } else {
        memcpy(blk, p + 2 * r, 2);
        memcpy(blk + 2, p + l->off_dmin + 2 * r, 2);
        for (int w = 0; w < 3; w++) memcpy(blk + 4 + 4 * w, p + l->off_sc + 64 * w + 4 * r, 4);
    }
    for (int e = 0; e < TY_QK_K; e++) {
        int qb, qsh, hb, hsh;
        k_packed_pos(l, r, e, &qb, &qsh, &hb, &hsh);
        int u = (p[qb] >> qsh) & 0x0f;
        if (l->six)
            u |= ((p[hb] >> hsh) & 3) << 4;
        else if (l->five)
            u |= ((p[hb] >> hsh) & 1) << 4;
        k_set_level(l, blk, e, u);
    }
}

static void pack_k(const struct ty_pack_k_layout *l, int64_t rows, int64_t n, const void *w, size_t w_stride,
                   uint8_t *out) {
    for (int64_t r0 = 0; r0 < rows; r0 += TY_PACK_ROWS)
        for (int64_t b = 0; b < n / TY_QK_K; b++, out += l->bp) {
            memset(out, 0, (size_t)l->bp);
            for (int r = 0; r < TY_PACK_ROWS && r0 + r < rows; r++)
                pack_k_block(l, (const uint8_t *)w + (size_t)(r0 + r) * w_stride + (size_t)b * l->bs, r, out);
        }
}

static void unpack_k(const struct ty_pack_k_layout *l, int64_t rows, int64_t n, const uint8_t *p, void *w,
                     size_t w_stride) {
    for (int64_t r0 = 0; r0 < rows; r0 += TY_PACK_ROWS)
        for (int64_t b = 0; b < n / TY_QK_K; b++, p += l->bp)
            for (int r = 0; r < TY_PACK_ROWS && r0 + r < rows; r++)
                unpack_k_block(l, p, r, (uint8_t *)w + (size_t)(r0 + r) * w_stride + (size_t)b * l->bs);
}

/* Stored levels (0..15, 0..31, or the int8 level + 128 for Q8_0) of one natural block, element order. */
static void block_levels(const struct ty_pack_layout *l, const uint8_t *blk, uint8_t u[32], uint16_t *d, uint16_t *m) {
    memcpy(d, blk, 2);
    if (l->bits == 8) {
        for (int k = 0; k < 32; k++) u[k] = (uint8_t)(blk[2 + k] ^ 0x80);
        return;
    }
    if (l->affine) memcpy(m, blk + 2, 2);
    int qh_off = l->affine ? 4 : 2, qs_off = l->five ? qh_off + 4 : qh_off;
    uint32_t qh = 0;
    if (l->five)
        qh = (uint32_t)blk[qh_off] | (uint32_t)blk[qh_off + 1] << 8 | (uint32_t)blk[qh_off + 2] << 16 |
             (uint32_t)blk[qh_off + 3] << 24;
    for (int j = 0; j < 16; j++) {
        u[j] = (uint8_t)((blk[qs_off + j] & 0x0f) | ((qh >> j) & 1) << 4);
        u[j + 16] = (uint8_t)((blk[qs_off + j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
    }
}

/* ==== Float panels ====
 * F32, F16 and BF16 rows interleave element by element: step k holds element k of the 16 rows, one vector (f32) or
 * half a vector (f16, bf16) that one conversion and one FMA per column with a broadcast activation consume. */

/* Step by step, so the panel is written in order while the 16 row streams are read: loading a large model packs
 * gigabytes. */
static void pack_float(size_t es, int64_t rows, int64_t n, const void *w, size_t w_stride, uint8_t *out) {
    for (int64_t r0 = 0; r0 < rows; r0 += TY_PACK_ROWS, out += (size_t)n * TY_PACK_ROWS * es) {
        const int rv = rows - r0 < TY_PACK_ROWS ? (int)(rows - r0) : TY_PACK_ROWS;
        const uint8_t *row[TY_PACK_ROWS];
        for (int r = 0; r < rv; r++) row[r] = (const uint8_t *)w + (size_t)(r0 + r) * w_stride;
        if (rv < TY_PACK_ROWS) memset(out, 0, (size_t)n * TY_PACK_ROWS * es);
        uint8_t *o = out;
        if (es == 2) {
            for (int64_t k = 0; k < n; k++, o += 2 * TY_PACK_ROWS)
                for (int r = 0; r < rv; r++) memcpy(o + 2 * r, row[r] + 2 * k, 2);
        } else {
            for (int64_t k = 0; k < n; k++, o += 4 * TY_PACK_ROWS)
                for (int r = 0; r < rv; r++) memcpy(o + 4 * r, row[r] + 4 * k, 4);
        }
    }
}

static void unpack_float(size_t es, int64_t rows, int64_t n, const uint8_t *p, void *w, size_t w_stride) {
    for (int64_t r0 = 0; r0 < rows; r0 += TY_PACK_ROWS, p += (size_t)n * TY_PACK_ROWS * es)
        for (int r = 0; r < TY_PACK_ROWS && r0 + r < rows; r++) {
            uint8_t *row = (uint8_t *)w + (size_t)(r0 + r) * w_stride;
            for (int64_t k = 0; k < n; k++) memcpy(row + k * es, p + ((size_t)k * TY_PACK_ROWS + (size_t)r) * es, es);
        }
}

/* Element k of a block sits in step k / 4, byte 4 r + k % 4 of that step; steps 0..3 fill the low nibbles of the four
 * 64-byte chunks and steps 4..7 their high nibbles. */
void ty__pack(enum ty_type type, int64_t rows, int64_t n, const void *w, size_t w_stride, void *dst) {
    struct ty_pack_layout l;
    struct ty_pack_k_layout kl;
    if (ty__pack_k_layout(type, &kl)) {
        TY_ASSERT(n % TY_QK_K == 0);
        pack_k(&kl, rows, n, w, w_stride, dst);
        return;
    }
    if (float_size(type)) {
        pack_float(float_size(type), rows, n, w, w_stride, dst);
        return;
    }
    TY_ASSERT(ty__pack_layout(type, &l) && n % 32 == 0);
    const int64_t nb = n / 32;
    uint8_t *out = dst;
    for (int64_t r0 = 0; r0 < rows; r0 += TY_PACK_ROWS) {
        for (int64_t b = 0; b < nb; b++, out += l.bp) {
            memset(out, 0, (size_t)l.bp);
            for (int r = 0; r < TY_PACK_ROWS && r0 + r < rows; r++) {
                const uint8_t *blk = (const uint8_t *)w + (size_t)(r0 + r) * w_stride + (size_t)b * l.bs;
                uint8_t u[32];
                uint16_t d, m = 0;
                block_levels(&l, blk, u, &d, &m);
                memcpy(out + 2 * r, &d, 2);
                if (l.affine) memcpy(out + l.off_m + 2 * r, &m, 2);
                for (int k = 0; k < 32; k++) {
                    int s = k / 4, byte = 4 * r + k % 4;
                    if (l.bits == 8) {
                        out[l.off_qs + 64 * s + byte] = u[k];
                        continue;
                    }
                    out[l.off_qs + 64 * (s % 4) + byte] |= (uint8_t)((u[k] & 0x0f) << (s < 4 ? 0 : 4));
                    if (l.five) out[l.off_qh + byte] |= (uint8_t)((u[k] >> 4) << s);
                }
            }
        }
    }
}

/* Stored level of element k of row r in a packed block. */
static int packed_level(const struct ty_pack_layout *l, const uint8_t *p, int r, int k) {
    int s = k / 4, byte = 4 * r + k % 4;
    if (l->bits == 8) return p[l->off_qs + 64 * s + byte];
    int u = (p[l->off_qs + 64 * (s % 4) + byte] >> (s < 4 ? 0 : 4)) & 0x0f;
    if (l->five) u |= ((p[l->off_qh + byte] >> s) & 1) << 4;
    return u;
}

/* The gemm driver unpacks every row of every panel it multiplies, so this one walks bytes, not elements: row r owns
 * bytes 4r..4r+3 of each chunk (elements 4c..4c+3 low, 16+4c..19+4c high) and of the fifth-bit planes. */
void ty__packed_block_levels(const struct ty_pack_layout *l, const uint8_t *p, int r, int8_t lv[32], float *scale,
                             float *min) {
    uint16_t d, m = 0;
    memcpy(&d, p + 2 * r, 2);
    if (l->affine) memcpy(&m, p + l->off_m + 2 * r, 2);
    *scale = ty__f16_to_f32(d);
    *min = l->affine ? ty__f16_to_f32(m) : 0;
    if (l->bits == 8) {
        for (int k = 0; k < 32; k++) lv[k] = (int8_t)(p[l->off_qs + 64 * (k / 4) + 4 * r + k % 4] ^ 0x80);
        return;
    }
    for (int c = 0; c < 4; c++) {
        const uint8_t *q = p + l->off_qs + 64 * c + 4 * r;
        for (int j = 0; j < 4; j++) {
            int lo = q[j] & 0x0f, hi = q[j] >> 4;
            if (l->five) {
                lo |= ((p[l->off_qh + 4 * r + j] >> c) & 1) << 4;
                hi |= ((p[l->off_qh + 4 * r + j] >> (c + 4)) & 1) << 4;
            }
            lv[4 * c + j] = (int8_t)(lo - l->offset);
            lv[16 + 4 * c + j] = (int8_t)(hi - l->offset);
        }
    }
}

void ty__unpack(enum ty_type type, int64_t rows, int64_t n, const void *packed, void *w, size_t w_stride) {
    struct ty_pack_layout l;
    struct ty_pack_k_layout kl;
    if (ty__pack_k_layout(type, &kl)) {
        TY_ASSERT(n % TY_QK_K == 0);
        unpack_k(&kl, rows, n, packed, w, w_stride);
        return;
    }
    if (float_size(type)) {
        unpack_float(float_size(type), rows, n, packed, w, w_stride);
        return;
    }
    TY_ASSERT(ty__pack_layout(type, &l) && n % 32 == 0);
    const int64_t nb = n / 32;
    const uint8_t *p = packed;
    for (int64_t r0 = 0; r0 < rows; r0 += TY_PACK_ROWS) {
        for (int64_t b = 0; b < nb; b++, p += l.bp) {
            for (int r = 0; r < TY_PACK_ROWS && r0 + r < rows; r++) {
                uint8_t *blk = (uint8_t *)w + (size_t)(r0 + r) * w_stride + (size_t)b * l.bs;
                int qh_off = l.affine ? 4 : 2, qs_off = l.five ? qh_off + 4 : qh_off;
                memcpy(blk, p + 2 * r, 2);
                if (l.bits == 8) {
                    for (int k = 0; k < 32; k++) blk[2 + k] = (uint8_t)(packed_level(&l, p, r, k) ^ 0x80);
                    continue;
                }
                if (l.affine) memcpy(blk + 2, p + l.off_m + 2 * r, 2);
                uint32_t qh = 0;
                for (int j = 0; j < 16; j++) {
                    int lo = packed_level(&l, p, r, j), hi = packed_level(&l, p, r, j + 16);
                    blk[qs_off + j] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
                    qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
                }
                if (l.five)
                    for (int i = 0; i < 4; i++) blk[qh_off + i] = (uint8_t)(qh >> (8 * i));
            }
        }
    }
}

/* ==== Scalar kernels on packed panels (the reference for the SIMD ones) ==== */

float ty__dot_packed_ref(enum ty_type type, int64_t n, const void *panel, int r, const void *xq) {
    struct ty_pack_layout l;
    struct ty_pack_k_layout kl;
    if (float_size(type)) { /* dot-scalar.c's sum, element by element in the same order */
        const size_t es = float_size(type);
        const uint8_t *p = panel;
        const float *x = xq;
        float sum = 0;
        for (int64_t k = 0; k < n; k++) {
            const uint8_t *e = p + ((size_t)k * TY_PACK_ROWS + (size_t)r) * es;
            float v;
            if (type == TY_TYPE_F32) {
                memcpy(&v, e, 4);
            } else if (type == TY_TYPE_F16) {
                ty_f16 h;
                memcpy(&h, e, 2);
                v = ty__f16_to_f32(h);
            } else {
                ty_bf16 h;
                memcpy(&h, e, 2);
                v = ty__bf16_to_f32(h);
            }
            sum += v * x[k];
        }
        return sum;
    }
    if (ty__pack_k_layout(type, &kl)) {
        /* the natural reference, one super-block at a time, on the row as unpacked: the same sum in the same order */
        const struct ty_block_q8_K *y = xq;
        const uint8_t *p = panel;
        float sum = 0;
        for (int64_t b = 0; b < n / TY_QK_K; b++, p += kl.bp) {
            uint8_t blk[256];
            unpack_k_block(&kl, p, r, blk);
            sum += ty__dot_ref(type, TY_ACT_Q8_K, TY_QK_K, blk, &y[b]);
        }
        return sum;
    }
    TY_ASSERT(ty__pack_layout(type, &l));
    struct ty_q8_act a = ty__q8_act(xq, n);
    const uint8_t *p = panel;
    float sum = 0;
    for (int64_t b = 0; b < n / 32; b++, p += l.bp) {
        int32_t s = 0;
        for (int k = 0; k < 32; k++) s += packed_level(&l, p, r, k) * a.qs[32 * b + k];
        uint16_t d, m;
        memcpy(&d, p + 2 * r, 2);
        if (l.affine) {
            memcpy(&m, p + l.off_m + 2 * r, 2);
            sum += ty__f16_to_f32(d) * a.d[b] * (float)s + ty__f16_to_f32(m) * a.d[b] * (float)a.sum[b];
        } else {
            sum += ty__f16_to_f32(d) * a.d[b] * (float)(s - l.offset * a.sum[b]);
        }
    }
    return sum;
}

#define PACKED_KERNELS(T, name)                                                                                        \
    static void gemv_packed_##name(int64_t n, int64_t rows, const void *w, size_t panel_bytes, const void *xq,         \
                                   float *out) {                                                                       \
        for (int64_t r = 0; r < rows; r++)                                                                             \
            out[r] = ty__dot_packed_ref(T, n, (const char *)w + (size_t)(r / TY_PACK_ROWS) * panel_bytes,              \
                                        (int)(r % TY_PACK_ROWS), xq);                                                  \
    }                                                                                                                  \
    static void gemm_packed_##name(int64_t n, int64_t rows, const void *w, size_t panel_bytes, int64_t cols,           \
                                   const void *xq, size_t x_stride, float *out, int64_t ld_out, void *scratch) {       \
        (void)scratch;                                                                                                 \
        for (int64_t c = 0; c < cols; c++)                                                                             \
            gemv_packed_##name(n, rows, w, panel_bytes, (const char *)xq + c * x_stride, out + c * ld_out);            \
    }

PACKED_KERNELS(TY_TYPE_Q4_0, q4_0)
PACKED_KERNELS(TY_TYPE_Q4_1, q4_1)
PACKED_KERNELS(TY_TYPE_Q5_0, q5_0)
PACKED_KERNELS(TY_TYPE_Q5_1, q5_1)
PACKED_KERNELS(TY_TYPE_Q8_0, q8_0)

void ty__simd_fill_packed_scalar(struct ty_simd *s) {
    s->t[TY_TYPE_Q4_0].gemv_packed = gemv_packed_q4_0, s->t[TY_TYPE_Q4_0].gemm_packed = gemm_packed_q4_0;
    s->t[TY_TYPE_Q4_1].gemv_packed = gemv_packed_q4_1, s->t[TY_TYPE_Q4_1].gemm_packed = gemm_packed_q4_1;
    s->t[TY_TYPE_Q5_0].gemv_packed = gemv_packed_q5_0, s->t[TY_TYPE_Q5_0].gemm_packed = gemm_packed_q5_0;
    s->t[TY_TYPE_Q5_1].gemv_packed = gemv_packed_q5_1, s->t[TY_TYPE_Q5_1].gemm_packed = gemm_packed_q5_1;
    s->t[TY_TYPE_Q8_0].gemv_packed = gemv_packed_q8_0, s->t[TY_TYPE_Q8_0].gemm_packed = gemm_packed_q8_0;
    /* gemm is gemv column by column */
    for (int t = 0; t < TY_TYPE_COUNT; t++) s->t[t].gemm_packed_direct = s->t[t].gemm_packed != NULL;
}
