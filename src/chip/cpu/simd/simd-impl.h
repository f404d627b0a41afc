/*
 * simd-impl.h - what the kernel files of src/chip/cpu/simd/ share: the activation layouts, the scalar reference
 * kernels every other path is tested against, the table builders of each instruction set, and the panel machinery of
 * the matrix-matrix kernels (gemm.c).
 */
#ifndef TY_SIMD_IMPL_H
#define TY_SIMD_IMPL_H

#include "chip/cpu/simd/simd.h"
#include "model/quant.h"

/* ==== Activation layouts ==== */

#define TY_ACT_ALIGN 64

static inline size_t ty__round_up(size_t v, size_t a) {
    return (v + a - 1) / a * a;
}

/* The three arrays of a TY_ACT_Q8 row of n elements. */
struct ty_q8_act {
    int8_t *qs;   /* (n) */
    float *d;     /* (n / 32) */
    int32_t *sum; /* (n / 32) */
};
static inline struct ty_q8_act ty__q8_act(const void *xq, int64_t n) {
    size_t nb = (size_t)n / 32;
    char *p = (char *)xq;
    struct ty_q8_act a;
    a.qs = (int8_t *)p;
    a.d = (float *)(p + ty__round_up((size_t)n, TY_ACT_ALIGN));
    a.sum = (int32_t *)(p + ty__round_up((size_t)n, TY_ACT_ALIGN) + ty__round_up(nb * sizeof(float), TY_ACT_ALIGN));
    return a;
}

/* The scale of a Q8 activation block from its largest magnitude: the inverse scale, 0 for a block that quantises to
 * zeros. Shared so that every quantiser makes the same choice bit for bit. */
static inline float ty__q8_act_iscale(float amax) {
    return amax >= 1e-30f && amax <= 3.4e38f ? 127.0f / amax : 0.0f;
}

/* ==== gemv row order ====
 * The gemv kernels can interleave R rows (sharing each activation load), but they stream rows one after the other:
 * on a 2-core Zen 4 a single Q8_0 gemv thread read 10.9 GB/s of weights from DRAM with 4 rows interleaved and
 * 18.1 GB/s one row at a time (plain reads: 18.5 GB/s; thread CPU time on a busy machine), the four row streams
 * apparently defeating the prefetchers.
 * Activations live in L1 either way. */
#define TY_GEMV_INTERLEAVE 1

/* ==== Weight streams ====
 * The panel kernels of a few columns (decode) ask for the weight bytes TY_STREAM_AHEAD past the block they read
 * (prefetcht0). The hardware prefetchers alone kept too few lines in flight when the host shared the memory, and
 * which hint helps depends on the core (`bench_kernels --layout packed`: each panel gemv's GB/s against a plain read
 * pass in the same run, 2 threads):
 *  - on a 2-core Sapphire Rapids-class VM, 2048 bytes ahead with prefetcht0 took Q4_0 from 67% to 90-93%, Q4_K_M
 *    from 74-75% to 94-96%, BF16 from 84-85% to 101-103% and Q6_K from 89% to 96%; prefetchnta there fell to 55%
 *    (and halved the Q8_0 tile product), prefetcht2 gave 90-94% but slowed the in-cache rate, 1024 bytes gave 86-88%;
 *  - on the 2-core Zen 4 VM, Q4_0 went from 73-83% to 89-93% with prefetchnta at 1024 bytes, prefetcht0 to between
 *    the two.
 * A prefetch never faults, so reading past a matrix's end is harmless. */
#define TY_STREAM_AHEAD 2048
static inline __attribute__((always_inline)) void ty__stream_ahead(const void *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch((const char *)p + TY_STREAM_AHEAD + o, 0, 3);
}

/* ==== Scalar reference (dot-scalar.c) ==== */

/* dot(w_row, x) for weight type `type` against an activation row of format `act`, in plain C. */
float ty__dot_ref(enum ty_type type, enum ty_act_format act, int64_t n, const void *w, const void *xq);
/* The reference quantiser of each activation format. */
void ty__quantize_act_ref(enum ty_act_format act, const float *x, void *xq, int64_t n);
void ty__quantize_act_f32(const float *x, void *xq, int64_t n);
void ty__quantize_act_bf16(const float *x, void *xq, int64_t n);
void ty__quantize_act_q8(const float *x, void *xq, int64_t n);
void ty__quantize_act_q8_K(const float *x, void *xq, int64_t n);

/* ==== Packed weights (pack.c) ==== */

/* Where things sit in one packed block of 16 rows (see simd.h). */
struct ty_pack_layout {
    int bits;                  /* bits per stored level: 4, 5 or 8 */
    int bs;                    /* bytes of one natural block */
    int bp;                    /* bytes of one packed block: 16 bs */
    int off_m, off_qh, off_qs; /* byte offsets of the minimums, fifth-bit masks and levels */
    int offset;                /* symmetric types: the stored level of zero (8, 16 or 128); 0 for affine types */
    bool affine, five;
};

/* Inline so that kernels specialised on a constant type see every field as a constant. */
static inline bool ty__pack_layout(enum ty_type type, struct ty_pack_layout *l) {
    *l = (struct ty_pack_layout){0};
    switch (type) {
    case TY_TYPE_Q4_0:
        l->bits = 4, l->bs = 18, l->offset = 8;
        break;
    case TY_TYPE_Q4_1:
        l->bits = 4, l->bs = 20, l->affine = true;
        break;
    case TY_TYPE_Q5_0:
        l->bits = 5, l->bs = 22, l->offset = 16, l->five = true;
        break;
    case TY_TYPE_Q5_1:
        l->bits = 5, l->bs = 24, l->affine = true, l->five = true;
        break;
    case TY_TYPE_Q8_0:
        l->bits = 8, l->bs = 34, l->offset = 128;
        break;
    default:
        return false;
    }
    l->bp = 16 * l->bs;
    l->off_m = 32;
    l->off_qh = l->off_m + (l->affine ? 32 : 0);
    l->off_qs = l->off_qh + (l->five ? 64 : 0);
    return true;
}
/* The K-quant panels (Q4_K, Q5_K, Q6_K; see simd.h): byte offsets within one packed super-block of 16 rows. */
struct ty_pack_k_layout {
    int bs;                /* bytes of one natural super-block */
    int bp;                /* bytes of one packed super-block: 16 bs */
    int off_dmin, off_sc;  /* minimum scales (Q4_K, Q5_K), sub-block scales */
    int off_grp, gb, qh_b; /* the first group of 32 elements, bytes per group, bytes of high bits in a group */
    bool five, six;        /* Q5_K (one high bit), Q6_K (two high bits, no minimums) */
};

static inline bool ty__pack_k_layout(enum ty_type type, struct ty_pack_k_layout *l) {
    *l = (struct ty_pack_k_layout){0};
    switch (type) {
    case TY_TYPE_Q4_K:
    case TY_TYPE_Q5_K:
        l->five = type == TY_TYPE_Q5_K;
        l->bs = l->five ? 176 : 144;
        l->off_dmin = 32, l->off_sc = 64, l->off_grp = 256;
        l->qh_b = l->five ? 64 : 0;
        break;
    case TY_TYPE_Q6_K:
        l->six = true, l->bs = 210;
        l->off_sc = 32, l->off_grp = 288, l->qh_b = 128;
        break;
    default:
        return false;
    }
    l->gb = l->qh_b + 256;
    l->bp = 16 * l->bs;
    return true;
}

/* Row r of one packed panel against a Q8 activation row (Q8_K for the K-quants), in plain C. */
float ty__dot_packed_ref(enum ty_type type, int64_t n, const void *panel, int r, const void *xq);
void ty__simd_fill_packed_scalar(struct ty_simd *s);
/* Levels (stored level minus the type's offset), scale and minimum of row r of packed block p. */
void ty__packed_block_levels(const struct ty_pack_layout *l, const uint8_t *p, int r, int8_t lv[32], float *scale,
                             float *min);

/* ==== Table builders: each fills the entries it has kernels for and leaves the others as they were ==== */

void ty__simd_fill_scalar(struct ty_simd *s);
void ty__simd_fill_avx2(struct ty_simd *s);              /* dot-avx2.c; no-op off x86-64 */
void ty__simd_fill_avx512(struct ty_simd *s, int level); /* dot-avx512.c; level 0 base, 1 VNNI, 2 + BF16, 3 + AMX */
void ty__simd_fill_neon(struct ty_simd *s);              /* dot-neon.c; no-op off AArch64 */
bool ty__simd_neon_built(void); /* the NEON kernels were compiled (AArch64, and a compiler that reaches sdot) */

/* ==== Panels: the matrix-matrix kernels (gemm.c) ====
 *
 * A gemm call repacks R weight rows at a time, for a chunk of K, into a panel whose layout suits one micro-kernel,
 * then runs that micro-kernel over every column. Quantised rows are unpacked into integer levels with one f32 scale
 * (and, for affine types, one f32 minimum) per group of G elements, so a single kernel per instruction set serves
 * every quantised type: w[k] = scale[g] * level[k] + min[g]. The panel stores the R rows' values interleaved, so one
 * vector load holds the same K step of every row and one broadcast of an activation feeds all R lanes:
 *   TY_PANEL_F32   [k][R] f32                          (vfmadd231ps with a broadcast activation)
 *   TY_PANEL_BF16  [k/2][R][2] bf16                    (vdpbf16ps with a broadcast pair)
 *   TY_PANEL_S16   [k/2][R][2] int16 levels            (vpmaddwd with a broadcast int16 pair)
 *   TY_PANEL_U8    [k/4][R][4] uint8 = level + 128     (vpdpbusd with a broadcast quad; the +128 is taken back
 *                                                       exactly in the integer accumulator, -128 * sum of the quad)
 *   TY_PANEL_S8    [k/4][R][4] int8 levels             (sdot by lane)
 */

enum ty_panel_kind { TY_PANEL_F32, TY_PANEL_BF16, TY_PANEL_S16, TY_PANEL_U8, TY_PANEL_S8 };

#define TY_PANEL_MAX_ROWS 32
#define TY_PANEL_MAX_COLS 8
#define TY_PANEL_KC_INT   4096 /* K elements per chunk for integer panels (a multiple of 256) */
#define TY_PANEL_KC_FLOAT 2048 /* ... for f32 / bf16 panels: 32 rows x 2048 x 4 bytes = 256 KiB, within L2 */

struct ty_panel {
    int R;              /* rows (lanes) in the panel; rows past the matrix end are zeros */
    int64_t kc;         /* K elements in this chunk */
    int G;              /* elements per scale group (integer panels) */
    bool has_min;       /* affine type: min is used */
    const void *w;      /* the interleaved values */
    const float *scale; /* (kc / G, R) */
    const float *min;   /* (kc / G, R) */
};

/* The columns one micro-kernel call works on, at the start of the chunk. */
struct ty_panel_cols {
    int n;                            /* columns, at most the kernel's C */
    const void *x[TY_PANEL_MAX_COLS]; /* activation values: f32, bf16, int16 (S16) or int8 (U8, S8) */
    const float *xs;                  /* (n, kc / G): the activation scale of each group */
    const float *xm;                  /* (n, kc / G): activation scale times the group's sum of levels */
    const int32_t *xi;                /* (n, kc / G): -128 times that sum (U8) */
    int64_t ld;                       /* stride of xs, xm, xi between columns */
    /* Int8 panels read a column's levels in runs of 256 (a Q8_K super-block's) `xsb` bytes apart: 256 for a
     * contiguous row, sizeof(struct ty_block_q8_K) for Q8_K, so no copy is needed. Element e of the chunk is at
     * x[c] + (e / 256) * xsb + e % 256. */
    int64_t xsb;
};

/* Computes out[c * ld_out + r] for r < rows_valid, c < cols->n; adds to out when `accumulate`. */
typedef void (*ty_panel_kernel)(const struct ty_panel *p, const struct ty_panel_cols *cols, float *out, int64_t ld_out,
                                int rows_valid, bool accumulate);

struct ty_gemm_impl {
    enum ty_panel_kind kind;
    int R; /* rows per panel */
    int C; /* most columns per kernel call */
    ty_panel_kernel kernel;
};

/* The whole product of ty_gemm_fn through panels of `impl`; `packed`: w holds packed panels (w_stride their
 * stride) rather than rows. */
void ty__gemm_panels(const struct ty_gemm_impl *impl, enum ty_type type, enum ty_act_format act, bool packed, int64_t n,
                     int64_t rows, const void *w, size_t w_stride, int64_t cols, const void *xq, size_t x_stride,
                     float *out, int64_t ld_out, void *scratch);

/* Defines `static void name(...)`, a ty_gemm_fn for one weight type through ty__gemm_panels. */
#define TY_GEMM_PANEL_FN_EX(name, impl, type, act, packed)                                                             \
    static void name(int64_t n, int64_t rows, const void *w, size_t w_stride, int64_t cols, const void *xq,            \
                     size_t x_stride, float *out, int64_t ld_out, void *scratch) {                                     \
        ty__gemm_panels(&(impl), (type), (act), (packed), n, rows, w, w_stride, cols, xq, x_stride, out, ld_out,       \
                        scratch);                                                                                      \
    }
#define TY_GEMM_PANEL_FN(name, impl, type, act) TY_GEMM_PANEL_FN_EX(name, impl, type, act, false)

/* Scratch the panel driver needs at most. */
size_t ty__gemm_panels_scratch(void);

/* The AMX prefill (dot-amx.h) unpacks a panel whole, 640 bytes a block of 32 elements, into the scratch, and after it
 * keeps the column tiles' scales (64 or 128 bytes a tile and block) and, for long rows, copies of their levels (512
 * more), for rows of up to TY_AMX_MAX_BLOCKS blocks (K = 32768: every Qwen width; at that width the room for one column
 * tile at a time); longer rows take the VNNI kernel. */
#define TY_AMX_MAX_BLOCKS 1024
#define TY_AMX_SCRATCH    (2 * (size_t)TY_AMX_MAX_BLOCKS * 640 + 8192)

/* Block loads: weights may sit at any offset of a mapped file. */
#define TY_SIMD_LOAD(blk, src, i) memcpy(&(blk), (const uint8_t *)(src) + (size_t)(i) * sizeof(blk), sizeof(blk))

#endif /* TY_SIMD_IMPL_H */
