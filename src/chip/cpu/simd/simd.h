/*
 * simd.h - the CPU kernel library: products of weight rows with activation rows for every weight type of quant.h, on
 * every instruction set the machine offers, chosen at run time. The fast CPU backend is built from these; the model
 * never calls them directly.
 *
 * How a matrix product uses them (w: `rows` rows of n elements of weight type T, row r at w + r * w_stride bytes):
 *
 *     const struct ty_simd *s = ty__simd();                    // the dispatch path, chosen once per process
 *     size_t xs = ty__simd_act_row_size(s, T, n);              // bytes of one quantised activation row
 *     ty__simd_quantize_act(s, T, x, xq, n);                   // ONCE per activation row (per token)
 *     ty__simd_gemv(s, T, n, rows, w, w_stride, xq, out);      // decode: out[r] = w_r . x
 *     ty__simd_gemm(s, T, n, rows, w, w_stride, cols, xq, xs,  // prefill: out[c * ld_out + r] = w_r . x_c
 *                   out, ld_out, scratch);                     //   (scratch: ty__gemm_scratch_size() bytes)
 *
 * Activations are quantised to the integer format the weight type's integer dot product pairs with (Q8 blocks for
 * the 32-element types, Q8_K super-blocks with per-16 sums for the K types), so each weight byte meets an int8
 * activation in a vpdpbusd / vpmaddubsw / sdot and the activation's rounding is paid once per row, not per weight
 * row. F32 and F16 weights take f32 activations; BF16 weights take f32 activations, or bf16 ones on the
 * AVX512-BF16 path (vdpbf16ps). The format is a property of the (path, weight type) pair: ty__simd_act_format().
 *
 * Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 matrices should be packed once at load (ty__pack, below): their packed kernels
 * are about 2-5x faster, which decode needs to keep up with DRAM. So should K-quant and F32/F16/BF16 matrices on the
 * paths whose table has packed kernels for them (AVX2, AVX-512): there gemm works from the panels for prefill.
 *
 * Results: every path computes the same sum as the scalar reference (dot-scalar.c) for its activation format, up to
 * the order of f32 additions; tests/chip/test_simd.c holds every path to that and to a dequantise-then-f64 ground
 * truth. A row's result never depends on `rows`, `cols` or how a caller splits them across threads, bit for bit. gemv
 * and gemm (and packed and natural kernels) add in different orders, so a token decoded alone and the same token in a
 * prefill batch agree to f32 rounding (NMSE ~1e-13), not bit for bit.
 *
 * Paths: TY_CPU_ISA=scalar|avx2|avx512|avx512vnni|avx512bf16|avx512amx|neon in the environment forces one (tests,
 * benchmarks, bisecting a numerical difference). ty__simd_from_env() reports an unknown or unsupported name as an
 * error; ty__simd() warns once and uses the best path instead.
 *
 * Threads: every function here is pure (no global state after the first ty__simd() call) and may run on any number
 * of threads at once, each with its own output range and scratch.
 */
#ifndef TY_SIMD_H
#define TY_SIMD_H

#include "base/base.h"

/* ==== Dispatch paths ==== */

enum ty_cpu_isa {
    TY_CPU_ISA_SCALAR = 0,     /* plain C: the reference */
    TY_CPU_ISA_AVX2 = 1,       /* AVX2, FMA, F16C */
    TY_CPU_ISA_AVX512 = 2,     /* + AVX-512 F, BW, DQ, VL */
    TY_CPU_ISA_AVX512VNNI = 3, /* + AVX512-VNNI (vpdpbusd) */
    TY_CPU_ISA_AVX512BF16 = 4, /* + AVX512-BF16 (vdpbf16ps; BF16 weights take bf16 activations) */
    TY_CPU_ISA_AVX512AMX = 5,  /* + AMX-TILE and AMX-INT8 (tdpbssd: prefill of the packed 32-element types) */
    TY_CPU_ISA_NEON = 6,       /* AArch64 Advanced SIMD with the dot-product extension (sdot) */
    TY_CPU_ISA_COUNT
};

/* What the CPU offers (and the OS has enabled: AVX-512 also needs the ZMM state in XCR0). */
struct ty_cpu_features {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512dq, avx512vl, avx512vnni, avx512bf16, avx512vbmi;
    bool amx_int8; /* AMX-TILE and AMX-INT8, their state enabled in XCR0 and granted to this process (Linux) */
    bool neon, dotprod;
};
const struct ty_cpu_features *ty__cpu_features(void);

const char *ty__cpu_isa_name(enum ty_cpu_isa isa); /* "avx512vnni"; "unknown" out of range */
bool ty__cpu_isa_from_name(const char *name, enum ty_cpu_isa *out);
bool ty__cpu_isa_supported(enum ty_cpu_isa isa); /* this CPU can run the path */
enum ty_cpu_isa ty__cpu_isa_best(void);          /* the fastest supported path */

/* The AMX palette-1 tile configuration (64 bytes, as ldtilecfg reads it): the avx512amx kernels and the roofline. */
struct ty_amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* ==== Activation formats ==== */

enum ty_act_format {
    TY_ACT_NONE = 0, /* no kernels for this weight type */
    TY_ACT_F32 = 1,  /* n floats */
    TY_ACT_BF16 = 2, /* n bf16, rounded to nearest even */
    /* 32-element blocks: int8 qs[n] (round(x / d), in -127..127), then float d[n / 32] (d = amax / 127 of the block,
     * as 1 / (127 / amax)), then int32 sum[n / 32] (the sum of the block's qs). Each array starts on a 64-byte
     * boundary. A block whose largest magnitude is 0, below 1e-30 or not finite is all zeros with d = 0. */
    TY_ACT_Q8 = 3,
    /* n / 256 struct ty_block_q8_K, byte for byte what ty__q8_K_from_float writes. */
    TY_ACT_Q8_K = 4,
};

/* Bytes of one activation row of n elements, rounded up to 64 so that consecutive rows stay aligned. */
size_t ty__act_row_size(enum ty_act_format fmt, int64_t n);

/* ==== Kernels ==== */

/* Writes one activation row. n is a multiple of the weight type's block size (1, 32 or 256). */
typedef void (*ty_quantize_act_fn)(const float *x, void *xq, int64_t n);
/* out[r] = dot(row r, x) for r in [0, rows); row r starts at (const char *)w + r * w_stride. */
typedef void (*ty_gemv_fn)(int64_t n, int64_t rows, const void *w, size_t w_stride, const void *xq, float *out);
/* out[c * ld_out + r] = dot(row r, column c) for r < rows, c < cols; column c is the activation row at
 * (const char *)xq + c * x_stride. `scratch` is ty__gemm_scratch_size() bytes, 64-byte aligned, owned by the caller
 * and used by one call at a time. */
typedef void (*ty_gemm_fn)(int64_t n, int64_t rows, const void *w, size_t w_stride, int64_t cols, const void *xq,
                           size_t x_stride, float *out, int64_t ld_out, void *scratch);

/* The kernels of one path for one weight type. All NULL (act TY_ACT_NONE) when the type has none. */
struct ty_simd_type {
    enum ty_act_format act;
    ty_quantize_act_fn quantize_act;
    ty_gemv_fn gemv;
    ty_gemm_fn gemm;
    const char *gemv_isa; /* the instruction set of each kernel ("avx512vnni", "avx2", "scalar"): a path uses its */
    const char *gemm_isa; /* own kernels where they pay and inherits the previous path's elsewhere */
    /* On packed panels (below), for the types ty__pack_supported() accepts, where this path reads their panels;
     * NULL elsewhere (pack a matrix only where these are set). The `w_stride`
     * argument is the panel stride (ty__pack_size(type, TY_PACK_ROWS, n)) and row 0 starts a panel. */
    ty_gemv_fn gemv_packed;
    ty_gemm_fn gemm_packed;
    /* gemm_packed works from the panels (no repacking into gemm.c's layouts; AVX2 unpacks tiles of a panel into the
     * scratch, shared by many columns) and computes every column alike whatever `cols` is, one column with
     * gemv_packed's steps: a backend may run every matrix product through it, decode included, and a column's result
     * then never depends on the batch it came in. ty__simd_gemm_packed gives such a type's single column to
     * gemv_packed itself, whose panel loop streams faster than gemm_packed's over a runtime column count (one thread:
     * Q8_0 3.5-5%, Q5_0 2-4%), which decode, bound by each core's stream, pays. */
    bool gemm_packed_direct;
};

struct ty_simd {
    enum ty_cpu_isa isa;
    const char *name;
    struct ty_simd_type t[TY_TYPE_COUNT]; /* indexed by weight type */
};

/* The active path: TY_CPU_ISA when set and supported (else a warning and the best path), else the best. */
const struct ty_simd *ty__simd(void);
/* The table of a given path; TY_ERR_UNSUPPORTED (with a message) when this CPU or build cannot run it. */
enum ty_status ty__simd_get(enum ty_cpu_isa isa, const struct ty_simd **out);
/* The path TY_CPU_ISA names (or the best one when unset); TY_ERR_UNSUPPORTED / TY_ERR_INVALID_ARG with a message
 * when the name is unknown or the CPU lacks the path. For a backend's init, so a forced path fails loudly. */
enum ty_status ty__simd_from_env(const struct ty_simd **out);

/* The table whose kernels weight type t uses on `path` in the fast CPU backend: the path's own, except BF16 weights
 * on a path that pairs them with bf16 activations (avx512bf16), which take the nearest path below with f32
 * activations. A BF16 checkpoint holds the exact reference weights and transformers multiplies them with f32
 * activations; rounding the activations to bf16 moved the tiny reference models' logits by up to 0.05, far past their
 * 1e-4 fixture tolerance. Decode streams the same bytes either way; only a BF16 prefill gives up vdpbf16ps. Shared
 * with `tongyun bench`, which rates each type against the peak of the instruction its kernel really uses. */
const struct ty_simd *ty__simd_for_type(const struct ty_simd *path, enum ty_type t);

/* Scratch bytes a gemm call needs (independent of the shapes: K is processed in bounded chunks). */
size_t ty__gemm_scratch_size(void);

/* ==== Packed weights ====
 * Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 matrices run fastest repacked once, when the model is loaded, into panels of
 * TY_PACK_ROWS rows that interleave the rows block by block, so one vector holds the same four elements of 16 rows
 * and one integer dot instruction with a broadcast activation quad advances all 16 rows. A panel holds the same bytes
 * as its rows (decode reads no more), the last panel is padded with zero rows, and every path has packed kernels, so
 * a packed matrix runs whatever TY_CPU_ISA says. One packed block of 16 rows (type size x 16 bytes):
 *     ty_f16 d[16];            the rows' scales
 *     ty_f16 m[16];            their minimums (Q4_1, Q5_1)
 *     uint8_t qh[64];          fifth bits (Q5_0, Q5_1): byte 4r + j, bit s = element 4s + j of row r (the byte's
 *                              position in each step's vector, a bit per step: one shift and mask per step)
 *     uint8_t qs[4][64];       chunk c, byte 4r + j: low nibble element 4c + j, high nibble element 16 + 4c + j
 *     (Q8_0: uint8_t qs[8][64]; step s, byte 4r + j: element 4s + j of row r, plus 128)
 * Panels follow each other; within a panel the blocks of its rows come in order.
 *
 * Q4_K, Q5_K and Q6_K pack the same way, one 256-element super-block of 16 rows at a time, but only on the paths
 * whose table has their packed kernels (AVX2, AVX-512; ty__simd_type.gemm_packed non-NULL): a backend packs a K-quant
 * matrix only where its path reads the panels. Within a super-block, element 32 g + k (group g of 32) sits in step
 * s = k / 4, byte 4r + k % 4, as in the 32-element types. One packed super-block of 16 rows:
 *   Q4_K (2304 bytes), Q5_K (2816):
 *     ty_f16 d[16], dmin[16];
 *     uint32_t sc[3][16];        word w of row r: the row's 12 scale bytes 4w..4w+3, as quant-k.c packs them
 *     then per group g of 32 elements, in order (one stream for the prefetchers):
 *       uint8_t qh[64];          Q5_K only: byte 4r + j, bit s = fifth bit of element 32g + 4s + j of row r
 *       uint8_t qs[4][64];       chunk c, byte 4r + j: low nibble element 32g + 4c + j, high nibble + 16
 *   Q6_K (3360 bytes):
 *     ty_f16 d[16];
 *     int8_t sc[8][16][2];       pair p, row r: the scales of sub-blocks (of 16) 2p and 2p + 1
 *     then per group g of 32 elements:
 *       uint8_t qh[2][64];       half h, byte 4r + j, bits 2c..2c+1: the top two bits of element 32g + 16h + 4c + j
 *       uint8_t qs[4][64];       as Q4_K (the low four bits)
 * F32, F16 and BF16 (the same paths, f32 activations only) interleave element by element: step k of a panel is
 * element k of its 16 rows, n steps of 16 values. The panel holds the same bytes as its rows. */
#define TY_PACK_ROWS 16
bool ty__pack_supported(enum ty_type type); /* a packed layout exists (see gemm_packed for a path's kernels) */
/* Bytes of `rows` packed rows of n elements (whole panels); 0 when the type has no packed layout. */
size_t ty__pack_size(enum ty_type type, int64_t rows, int64_t n);
/* Packs `rows` rows (row r at w + r * w_stride) into dst (ty__pack_size bytes); the inverse writes rows back. */
void ty__pack(enum ty_type type, int64_t rows, int64_t n, const void *w, size_t w_stride, void *dst);
void ty__unpack(enum ty_type type, int64_t rows, int64_t n, const void *packed, void *w, size_t w_stride);

/* ==== Wrappers (check the type has kernels; callers use these, not the table) ==== */

static inline enum ty_act_format ty__simd_act_format(const struct ty_simd *s, enum ty_type type) {
    return (unsigned)type < TY_TYPE_COUNT ? s->t[type].act : TY_ACT_NONE;
}
static inline bool ty__simd_has(const struct ty_simd *s, enum ty_type type) {
    return ty__simd_act_format(s, type) != TY_ACT_NONE;
}
static inline size_t ty__simd_act_row_size(const struct ty_simd *s, enum ty_type type, int64_t n) {
    return ty__act_row_size(ty__simd_act_format(s, type), n);
}
static inline void ty__simd_quantize_act(const struct ty_simd *s, enum ty_type type, const float *x, void *xq,
                                         int64_t n) {
    TY_ASSERT(ty__simd_has(s, type));
    s->t[type].quantize_act(x, xq, n);
}
static inline void ty__simd_gemv(const struct ty_simd *s, enum ty_type type, int64_t n, int64_t rows, const void *w,
                                 size_t w_stride, const void *xq, float *out) {
    TY_ASSERT(ty__simd_has(s, type));
    s->t[type].gemv(n, rows, w, w_stride, xq, out);
}
static inline void ty__simd_gemm(const struct ty_simd *s, enum ty_type type, int64_t n, int64_t rows, const void *w,
                                 size_t w_stride, int64_t cols, const void *xq, size_t x_stride, float *out,
                                 int64_t ld_out, void *scratch) {
    TY_ASSERT(ty__simd_has(s, type));
    s->t[type].gemm(n, rows, w, w_stride, cols, xq, x_stride, out, ld_out, scratch);
}

static inline void ty__simd_gemv_packed(const struct ty_simd *s, enum ty_type type, int64_t n, int64_t rows,
                                        const void *panels, size_t panel_stride, const void *xq, float *out) {
    TY_ASSERT(ty__simd_has(s, type) && s->t[type].gemv_packed);
    s->t[type].gemv_packed(n, rows, panels, panel_stride, xq, out);
}
static inline void ty__simd_gemm_packed(const struct ty_simd *s, enum ty_type type, int64_t n, int64_t rows,
                                        const void *panels, size_t panel_stride, int64_t cols, const void *xq,
                                        size_t x_stride, float *out, int64_t ld_out, void *scratch) {
    TY_ASSERT(ty__simd_has(s, type) && s->t[type].gemm_packed);
    if (cols == 1 && s->t[type].gemm_packed_direct) /* the same bits (see gemm_packed_direct), streamed faster */
        s->t[type].gemv_packed(n, rows, panels, panel_stride, xq, out);
    else
        s->t[type].gemm_packed(n, rows, panels, panel_stride, cols, xq, x_stride, out, ld_out, scratch);
}

/* The same on the active path. */
static inline size_t ty__act_size(enum ty_type weight_type, int64_t n) {
    return ty__simd_act_row_size(ty__simd(), weight_type, n);
}
static inline void ty__quantize_act(enum ty_type weight_type, const float *x, void *xq, int64_t n) {
    ty__simd_quantize_act(ty__simd(), weight_type, x, xq, n);
}
static inline void ty__vec_dot(enum ty_type weight_type, int64_t n, float *out, const void *w_row, const void *xq) {
    ty__simd_gemv(ty__simd(), weight_type, n, 1, w_row, 0, xq, out);
}
static inline void ty__gemv_rows(enum ty_type weight_type, int64_t n, int64_t rows, const void *w, size_t w_stride,
                                 const void *xq, float *out) {
    ty__simd_gemv(ty__simd(), weight_type, n, rows, w, w_stride, xq, out);
}
static inline void ty__gemm_tile(enum ty_type weight_type, int64_t n, int64_t rows, const void *w, size_t w_stride,
                                 int64_t cols, const void *xq, size_t x_stride, float *out, int64_t ld_out,
                                 void *scratch) {
    ty__simd_gemm(ty__simd(), weight_type, n, rows, w, w_stride, cols, xq, x_stride, out, ld_out, scratch);
}

#endif /* TY_SIMD_H */
