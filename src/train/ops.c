/*
 * ops.c - the CPU implementation of the training op table (struct ty_train_ops in train.h): a packed, cache-blocked
 * f32 gemm with an AVX-512 (8 x 32) or AVX2 (6 x 16) FMA micro-kernel and a portable vector-extension one elsewhere,
 * its mixed-precision twin (operands rounded to bf16 as they are packed, an AVX512-BF16 vdpbf16ps micro-kernel
 * accumulating in f32, chosen at run time), blocked causal attention built on the same gemms, and the forward and
 * backward kernels of RMSNorm, NeoX RoPE, SwiGLU and cross-entropy with the vectorised exp of chip/cpu/simd/vexp.h.
 * Every kernel is split over the thread pool by whole output elements (or whole rows), and each element is summed in
 * one fixed order, so results do not depend on the thread count.
 */
#include "train/train.h"

#include "chip/cpu/simd/simd.h"
#include "chip/cpu/simd/vexp.h"

#include <math.h>

/* ==== Context ==== */

/* The ctx of the CPU table: the pool, and one scratch area that grows to the largest kernel's need and is kept, so
 * the steps of a run do not map and fault in fresh pages for every product. */
/* cos | sin of positions [0, rows) of one rope, forward (0) or inverse (1): every layer's rope of a step asks for
 * the same angles, computed once here rather than per call */
struct rope_table {
    struct ty_rope rope;
    int32_t rows;
    float *t; /* (rows, n_dims) */
};

struct cpu_ctx {
    struct ty_threadpool *pool;
    float *scratch;
    size_t cap; /* floats */
    struct rope_table rope[2];
};

enum ty_status ty__train_cpu_ctx_new(struct ty_threadpool *pool, void **out) {
    struct cpu_ctx *c = ty__calloc(1, sizeof *c);
    *out = c;
    if (!c) return ty__error(TY_ERR_NO_MEMORY, "train: out of memory");
    c->pool = pool;
    return TY_OK;
}

void ty__train_cpu_ctx_free(void *ctx) {
    struct cpu_ctx *c = ctx;
    if (!c) return;
    ty__huge_free(c->scratch);
    ty_free(c->rope[0].t);
    ty_free(c->rope[1].t);
    ty_free(c);
}

static struct ty_threadpool *pool_of(void *ctx) {
    return ctx ? ((struct cpu_ctx *)ctx)->pool : NULL;
}

/* n floats of scratch: the ctx's (grown when short), or a fresh allocation the caller frees (*owned) without a ctx.
 * NULL when out of memory. */
static float *scratch_get(void *ctx, size_t n, bool *owned) {
    struct cpu_ctx *c = ctx;
    *owned = false;
    if (!c) {
        *owned = true;
        return ty__malloc(n * sizeof(float));
    }
    if (c->cap < n) {
        ty__huge_free(c->scratch);
        c->scratch = ty__huge_calloc(n, sizeof(float));
        c->cap = c->scratch ? n : 0;
    }
    return c->scratch;
}

static void scratch_put(float *p, bool owned) {
    if (owned) ty_free(p);
}

/* ==== Parallel helper ==== */

struct par {
    void (*fn)(const void *arg, int64_t begin, int64_t end);
    const void *arg;
    int64_t n;
};

static void par_task(void *arg, int ith, int nth) {
    const struct par *p = arg;
    int64_t b, e;
    ty__split_range(p->n, ith, nth, &b, &e);
    if (b < e) p->fn(p->arg, b, e);
}

/* Runs fn over [0, n) split into contiguous ranges, one per thread (inline when small). */
static void parallel_for(void *ctx, int64_t n, int64_t work_per_item,
                         void (*fn)(const void *arg, int64_t begin, int64_t end), const void *arg) {
    struct ty_threadpool *pool = pool_of(ctx);
    if (!pool || n <= 1 || n * work_per_item < 32768) {
        if (n > 0) fn(arg, 0, n);
        return;
    }
    struct par p = {fn, arg, n};
    ty__threadpool_run(pool, par_task, &p);
}

/* The vector width the build targets (a wider one than the ISA has would be split and pass through memory) */
#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
typedef float vf __attribute__((vector_size(VL * 4)));

/* Unaligned loads and stores (macros: a vector passed to a function would change the ABI where the ISA lacks it) */
#define VLOAD(v, p)  memcpy(&(v), (p), sizeof(vf))
#define VSTORE(p, v) memcpy((p), &(v), sizeof(vf))

/* Sums in LANES interleaved partial sums added in a fixed order at the end: vectorisable, and the same bits
 * whatever the thread split. */
#define LANES 8

static inline float sum_sq(const float *x, int64_t n) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += x[i + l] * x[i + l];
    for (; i < n; i++) acc[0] += x[i] * x[i];
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

static inline float dot3(const float *a, const float *b, const float *c, int64_t n) { /* sum a b c */
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += a[i + l] * b[i + l] * c[i + l];
    for (; i < n; i++) acc[0] += a[i] * b[i] * c[i];
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

static inline float dot2(const float *a, const float *b, int64_t n) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) acc[0] += a[i] * b[i];
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

static inline float max_of(const float *x, int64_t n) {
    float acc[LANES];
    for (int l = 0; l < LANES; l++) acc[l] = -INFINITY;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
    for (; i < n; i++) acc[0] = x[i] > acc[0] ? x[i] : acc[0];
    float m = acc[0];
    for (int l = 1; l < LANES; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}

/* ==== GEMM ==== */

/* The micro-kernels' eight rows: M(0); ... M(7); with M a macro over one row's registers (c<r>0, c<r>1). */
#define EACH_OF_8(M)                                                                                                   \
    M(0);                                                                                                              \
    M(1);                                                                                                              \
    M(2);                                                                                                              \
    M(3);                                                                                                              \
    M(4);                                                                                                              \
    M(5);                                                                                                              \
    M(6);                                                                                                              \
    M(7)
/* Row r of a 16-zmm tile (c<r>0, c<r>1: 32 floats of C's row r) started from C or from zero, and stored back: shared
 * by the AVX-512 f32 kernel and the bf16 one, whose accumulators are f32 alike. */
#define ZMM_TILE_IN(r)                                                                                                 \
    c##r##0 = from_c ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();                                             \
    c##r##1 = from_c ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps()
#define ZMM_TILE_OUT(r)                                                                                                \
    _mm512_storeu_ps(c + r * ldc, c##r##0);                                                                            \
    _mm512_storeu_ps(c + r * ldc + 16, c##r##1)

/* Goto/BLIS blocking: C is computed in MR x NR register tiles from a KC x NR panel of B and an MR x KC panel of A,
 * both packed contiguous (zero-padded at the edges) so the micro-kernel streams them with unit stride whatever the
 * operands' layouts: a packed KC x NC block of B is reused by every row of the thread's share and an MC x KC block of
 * A by the NC columns. Every element of C is one chain of fused multiply-adds in k order, started from C (accumulate,
 * or any KC chunk after the first) or from zero; padding only adds rows and columns that are thrown away. So an
 * element's bits depend neither on the tiling, nor on the edge it sits on, nor on the thread split. */
#if defined(__x86_64__) && defined(TY_AVX512_EMULATED)
/* the library's emulated test build (CMakeLists.txt): the AVX-512 f32 kernel and the bf16 section with the
 * intrinsics in portable C (tests/chip/avx512-emu.h), compiled as AVX2 code */
#include "avx512-emu.h"
#define ZMM_KERNEL 1
#elif defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__)
#define ZMM_KERNEL 1
#endif
#if defined(ZMM_KERNEL)
#define MR 8
#define NR 32
#elif defined(__AVX2__) && defined(__FMA__)
#define MR 6
#define NR 16
#else
#define MR 4
#define NR (2 * VL)
#endif
#define KC 256
#define MC (MR * 16)
#define NC (NR * 16)
/* floats of one thread's packing space for blocks of mc x nc: an A block, a B block, room to align them to 64 bytes */
#define GEMM_SCRATCH(mc, nc) ((mc)*KC + KC * (nc) + 32)

struct gemm_job {
    int64_t M, N, K;
    const float *A;
    int64_t a_rs, a_cs;
    const float *B;
    int64_t b_rs, b_cs;
    float *C;
    int64_t ldc;
    bool acc;
    int64_t mc, nc; /* block sizes: MC and NC, or one tile where no packing space could be allocated */
    float *scratch; /* GEMM_SCRATCH(mc, nc) floats per thread (and a_words more with a_once) */
    bool split_m;   /* threads take row tiles (else column tiles) */
    bool bf16;      /* mixed precision: the BF16 GEMM section's kernel */
    bool a_once;    /* bf16: a thread packs all its rows of A once, not once per block of columns */
    size_t a_words; /* the space that takes per thread */
    /* An operand packed before the products (pack_whole): B when split_m, else A (bf16 only), as panels over all
     * of its rows (columns of B) for each block of k: block pc starts at shared + pad * pc floats (f32) or
     * pad * (pc / 2) words (bf16), pad = the rows rounded up to whole panels. It may have been packed over more k
     * than the job's (shared_k >= K: the job reads a prefix of each panel), for an even K below shared_k in bf16 */
    const void *shared;
    int64_t shared_pad, shared_k;
};

#if defined(ZMM_KERNEL)
/* 8 x 32: 16 zmm accumulators, two loads of B and eight broadcasts of A per k. */
static inline void kernel(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, bool from_c) {
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
    EACH_OF_8(ZMM_TILE_IN);
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16), av;
#define ROW(r)                                                                                                         \
    av = _mm512_set1_ps(ap[r]);                                                                                        \
    c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                                                                        \
    c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1)
        EACH_OF_8(ROW);
#undef ROW
        ap += MR;
        bp += NR;
    }
    EACH_OF_8(ZMM_TILE_OUT);
}
#elif defined(__AVX2__) && defined(__FMA__)
/* 6 x 16: 12 ymm accumulators of the 16 registers, two loads of B and six broadcasts of A per k. */
static inline void kernel(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, bool from_c) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
#define IN(r)                                                                                                          \
    c##r##0 = from_c ? _mm256_loadu_ps(c + r * ldc) : _mm256_setzero_ps();                                             \
    c##r##1 = from_c ? _mm256_loadu_ps(c + r * ldc + 8) : _mm256_setzero_ps()
    IN(0);
    IN(1);
    IN(2);
    IN(3);
    IN(4);
    IN(5);
#undef IN
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8), av;
#define ROW(r)                                                                                                         \
    av = _mm256_broadcast_ss(ap + r);                                                                                  \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                                                                        \
    c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1)
        ROW(0);
        ROW(1);
        ROW(2);
        ROW(3);
        ROW(4);
        ROW(5);
#undef ROW
        ap += MR;
        bp += NR;
    }
#define OUT(r)                                                                                                         \
    _mm256_storeu_ps(c + r * ldc, c##r##0);                                                                            \
    _mm256_storeu_ps(c + r * ldc + 8, c##r##1)
    OUT(0);
    OUT(1);
    OUT(2);
    OUT(3);
    OUT(4);
    OUT(5);
#undef OUT
}
#else
/* Portable: GCC/Clang vector extensions, MR x 2 vectors. */
static inline void kernel(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, bool from_c) {
    vf acc[MR][2];
    for (int r = 0; r < MR; r++) {
        if (from_c) {
            VLOAD(acc[r][0], c + r * ldc);
            VLOAD(acc[r][1], c + r * ldc + VL);
        } else {
            acc[r][0] = acc[r][1] = (vf){0};
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        vf b0, b1;
        VLOAD(b0, bp);
        VLOAD(b1, bp + VL);
        for (int r = 0; r < MR; r++) {
            vf av = (vf){0} + ap[r];
            acc[r][0] += av * b0;
            acc[r][1] += av * b1;
        }
        ap += MR;
        bp += NR;
    }
    for (int r = 0; r < MR; r++) {
        VSTORE(c + r * ldc, acc[r][0]);
        VSTORE(c + r * ldc + VL, acc[r][1]);
    }
}
#endif

/* A partial tile through a full one in a local buffer: the same chains, so the same bits as if it were whole. */
static void kernel_edge(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, bool from_c, int64_t mr,
                        int64_t nr) {
    float t[MR * NR];
    if (from_c)
        for (int64_t r = 0; r < mr; r++) memcpy(t + r * NR, c + r * ldc, (size_t)nr * sizeof(float));
    kernel(kc, ap, bp, t, NR, from_c);
    for (int64_t r = 0; r < mr; r++) memcpy(c + r * ldc, t + r * NR, (size_t)nr * sizeof(float));
}

#if defined(__AVX__)
#define TR8 1
#else
#define TR8 0
#endif
#if defined(__x86_64__)
/* dst[i * ldd + j] = src[j * lds + i] for an 8 x 8 block: the packing of an operand stored across the panel's grain.
 * Moves bits only, so it transposes the bf16 pair words of the BF16 GEMM as well (which runs it without an AVX
 * build). */
static inline __attribute__((target("avx"))) void tr8x8(const float *src, int64_t lds, float *dst, int64_t ldd) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds), r2 = _mm256_loadu_ps(src + 2 * lds);
    __m256 r3 = _mm256_loadu_ps(src + 3 * lds), r4 = _mm256_loadu_ps(src + 4 * lds);
    __m256 r5 = _mm256_loadu_ps(src + 5 * lds), r6 = _mm256_loadu_ps(src + 6 * lds);
    __m256 r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3);
    __m256 t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

/* A rows [m0, m0 + mc) x k [k0, k0 + kc) into MR-row panels, each k-major: ap[tile][k][r]. */
static void pack_a(const struct gemm_job *j, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float *ap) {
    for (int64_t i0 = 0; i0 < mc; i0 += MR, ap += MR * kc) {
        int64_t mr = mc - i0 < MR ? mc - i0 : MR;
        const float *a = j->A + (m0 + i0) * j->a_rs + k0 * j->a_cs;
        if (j->a_rs == 1 && mr == MR) {
            for (int64_t k = 0; k < kc; k++) memcpy(ap + k * MR, a + k * j->a_cs, MR * sizeof(float));
            continue;
        }
        if (mr < MR)
            for (int64_t k = 0; k < kc; k++)
                for (int64_t r = mr; r < MR; r++) ap[k * MR + r] = 0.0f;
#if TR8
        if (j->a_cs == 1 && mr == MR && MR % 8 == 0) {
            int64_t k8 = kc / 8 * 8;
            for (int r0 = 0; r0 < MR; r0 += 8)
                for (int64_t k = 0; k < k8; k += 8) tr8x8(a + r0 * j->a_rs + k, j->a_rs, ap + k * MR + r0, MR);
            for (int64_t r = 0; r < MR; r++)
                for (int64_t k = k8; k < kc; k++) ap[k * MR + r] = a[r * j->a_rs + k];
            continue;
        }
#endif
        for (int64_t r = 0; r < mr; r++) {
            const float *ar = a + r * j->a_rs;
            for (int64_t k = 0; k < kc; k++) ap[k * MR + r] = ar[k * j->a_cs];
        }
    }
}

/* B k [k0, k0 + kc) x columns [n0, n0 + nc) into NR-column panels, each k-major: bp[panel][k][c]. */
static void pack_b(const struct gemm_job *j, int64_t n0, int64_t nc, int64_t k0, int64_t kc, float *bp) {
    for (int64_t c0 = 0; c0 < nc; c0 += NR, bp += NR * kc) {
        int64_t nr = nc - c0 < NR ? nc - c0 : NR;
        const float *b = j->B + k0 * j->b_rs + (n0 + c0) * j->b_cs;
        if (j->b_cs == 1 && nr == NR) {
            for (int64_t k = 0; k < kc; k++) memcpy(bp + k * NR, b + k * j->b_rs, NR * sizeof(float));
            continue;
        }
        if (nr < NR)
            for (int64_t k = 0; k < kc; k++)
                for (int64_t c = nr; c < NR; c++) bp[k * NR + c] = 0.0f;
#if TR8
        if (j->b_rs == 1 && nr == NR) {
            int64_t k8 = kc / 8 * 8;
            for (int cg = 0; cg < NR; cg += 8)
                for (int64_t k = 0; k < k8; k += 8) tr8x8(b + cg * j->b_cs + k, j->b_cs, bp + k * NR + cg, NR);
            for (int64_t c = 0; c < NR; c++)
                for (int64_t k = k8; k < kc; k++) bp[k * NR + c] = b[c * j->b_cs + k];
            continue;
        }
#endif
        for (int64_t c = 0; c < nr; c++) {
            const float *bc = b + c * j->b_cs;
            for (int64_t k = 0; k < kc; k++) bp[k * NR + c] = bc[k * j->b_rs];
        }
    }
}

/* C[m0:m1, n0:n1] in f32 on one thread with its packing space. */
static void gemm_range_f32(const struct gemm_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float *scratch) {
    float *ap = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *bp = ap + j->mc * KC;
    const float *b_shared = j->shared;
    TY_ASSERT(!b_shared || (j->split_m && n0 == 0 && n1 == j->N));
    for (int64_t jc = n0; jc < n1; jc += j->nc) {
        int64_t nc = n1 - jc < j->nc ? n1 - jc : j->nc;
        for (int64_t pc = 0; pc < j->K; pc += KC) {
            int64_t kc = j->K - pc < KC ? j->K - pc : KC;
            bool from_c = j->acc || pc > 0;
            /* a shared B's panels are as long as its own block of k (shared_k), of which this job reads kc */
            const float *bpk = bp;
            int64_t bstride = kc;
            if (b_shared) {
                bstride = j->shared_k - pc < KC ? j->shared_k - pc : KC;
                bpk = b_shared + j->shared_pad * pc + jc * bstride;
            } else {
                pack_b(j, jc, nc, pc, kc, bp);
            }
            for (int64_t ic = m0; ic < m1; ic += j->mc) {
                int64_t mc = m1 - ic < j->mc ? m1 - ic : j->mc;
                pack_a(j, ic, mc, pc, kc, ap);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int64_t nr = nc - jr < NR ? nc - jr : NR;
                    const float *bpan = bpk + jr * bstride;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int64_t mr = mc - ir < MR ? mc - ir : MR;
                        float *c = j->C + (ic + ir) * j->ldc + jc + jr;
                        if (mr == MR && nr == NR)
                            kernel(kc, ap + ir * kc, bpan, c, j->ldc, from_c);
                        else
                            kernel_edge(kc, ap + ir * kc, bpan, c, j->ldc, from_c, mr, nr);
                    }
                }
            }
        }
    }
}

/* ==== BF16 GEMM ==== */

/* Mixed precision (TY_TRAIN_PRECISION_BF16): the blocking of the f32 gemm, but the packing rounds each operand to
 * bf16 (nearest even, as vcvtneps2bf16 does) and stores the two values of a pair of consecutive k in one 32-bit word,
 * and the micro-kernel multiplies word broadcasts of A with panels of B by vdpbf16ps, which adds both products of a
 * pair into an f32 lane: twice the multiply-adds of vfmadd231ps per instruction. A product of two bf16 values is
 * exact in f32, so an element is again one chain of f32 additions in a fixed order: per pair, the odd k's product,
 * then the even k's (the Intel SDM's VDPBF16PS; the Zen 4 this was written on matches it bit for bit), pairs in k
 * order, an odd K padded with a zero. Its bits therefore depend neither on the tiling nor on the thread split, as in
 * f32. vdpbf16ps and vcvtneps2bf16 treat denormal inputs as zero, and the packing's scalar path does too, so every
 * path rounds alike. x86-64 only, compiled with target attributes and chosen at run time (check_precision), so a
 * generic build uses it on a CPU that has AVX512_BF16. */
#define BMR 8
#define BNR 32
#define BKC (2 * KC) /* k per block: a block of pairs takes the space of KC floats in the packing space */
_Static_assert(MC % BMR == 0 && NC % BNR == 0, "the f32 blocks hold whole bf16 panels");

#if defined(__x86_64__)
#define HAVE_BF16 1
#if defined(TY_AVX512_EMULATED)
#define T_BF16 __attribute__((target("avx,avx2,fma")))
#else
#define T_BF16 __attribute__((target("avx,avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#endif

/* f32 to bf16 bits as vcvtneps2bf16 converts: nearest even, denormals to (signed) zero, NaN made quiet */
static uint32_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) return (u >> 16) & 0x8000u;
    return ty__f32_to_bf16(f);
}

/* Rows [0, ni) (of A; columns of B) over kc values of k as panels of w rows, padded with zero rows to a whole
 * panel: panel q at dst + q * w * n_pairs holds row q * w + i's pair p in word p * w + i, element (i, 2 p) in the low
 * half and (i, 2 p + 1) in the high half (zero past an odd kc); element (i, k) is x[i * i_s + k * k_s]. Whole blocks
 * at a time, so each source row is read from end to end (the hardware prefetchers see streams, not a stride). */
static T_BF16 void pack_block(const float *x, int64_t i_s, int64_t k_s, int64_t ni, int64_t w, int64_t kc,
                              uint32_t *dst) {
    int64_t n_pairs = (kc + 1) / 2, full = 0, p_done = 0; /* rows and pairs the vector paths did */
    /* panel q0 / w (q0 a multiple of w) starts at dst + q0 * n_pairs: no division in the loops */
    if (k_s == 1 && w % 8 == 0) {
        /* the pairs lie side by side: 16 k of 8 rows rounded at once, then their words transposed 8 x 8 */
        full = ni / 8 * 8, p_done = kc / 16 * 8;
        float t[64];
        for (int64_t q0 = 0; q0 < full; q0 += w) {
            for (int64_t i0 = q0; i0 < q0 + w && i0 < full; i0 += 8) {
                uint32_t *d = dst + q0 * n_pairs + (i0 - q0);
                for (int64_t p0 = 0; p0 < p_done; p0 += 8) {
                    for (int r = 0; r < 8; r++) {
                        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + (i0 + r) * i_s + 2 * p0));
                        memcpy(t + 8 * r, &h, 32);
                    }
                    tr8x8(t, 8, (float *)(d + p0 * w), w);
                }
            }
        }
    } else if (i_s == 1 && w % 8 == 0) {
        /* rows of k lie contiguous: two of them rounded together, then interleaved value by value */
        full = ni / 8 * 8, p_done = kc / 2;
        const __m512i idx16 = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                               6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        const __m256i idx8 = _mm256_setr_epi16(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
        int64_t p = 0;
        if (w == 8)
            /* panels of 8 rows (A of a weight gradient, dY^T): two pairs of a panel are 16 adjacent words, so one
             * 64-byte store each where one 32-byte store per pair went to a panel 8 KiB away (2.5x faster) */
            for (; p + 2 <= p_done; p += 2) {
                const float *lo = x + 2 * p * k_s;
                for (int64_t q0 = 0; q0 < full; q0 += 8) {
                    __m512 l = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(lo + q0)),
                                                  _mm256_loadu_ps(lo + 2 * k_s + q0), 1);
                    __m512 h = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(lo + k_s + q0)),
                                                  _mm256_loadu_ps(lo + 3 * k_s + q0), 1);
                    __m512i v = (__m512i)_mm512_cvtne2ps_pbh(h, l);
                    _mm512_storeu_si512(dst + q0 * n_pairs + p * 8, _mm512_permutexvar_epi16(idx16, v));
                }
            }
        for (; p < p_done; p++) {
            const float *lo = x + 2 * p * k_s, *hi = lo + k_s;
            for (int64_t q0 = 0; q0 < full; q0 += w) {
                uint32_t *d = dst + q0 * n_pairs + p * w;
                int64_t e = full - q0 < w ? full - q0 : w, i = 0;
                for (; i + 16 <= e; i += 16) {
                    __m512i v =
                        (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(hi + q0 + i), _mm512_loadu_ps(lo + q0 + i));
                    _mm512_storeu_si512(d + i, _mm512_permutexvar_epi16(idx16, v));
                }
                for (; i < e; i += 8) {
                    __m256i v =
                        (__m256i)_mm256_cvtne2ps_pbh(_mm256_loadu_ps(hi + q0 + i), _mm256_loadu_ps(lo + q0 + i));
                    _mm256_storeu_si256((__m256i *)(d + i), _mm256_permutexvar_epi16(idx8, v));
                }
            }
        }
    }
    /* the rest one word at a time: pairs the vector path left (an odd or short kc), rows past it, zero padding */
    int64_t rows = (ni + w - 1) / w * w;
    for (int64_t q0 = 0; q0 < rows; q0 += w) {
        for (int64_t i = q0; i < q0 + w; i++) {
            uint32_t *d = dst + q0 * n_pairs + (i - q0);
            for (int64_t p = i < full ? p_done : 0; p < n_pairs; p++) {
                uint32_t lo = 0, hi = 0;
                if (i < ni) {
                    const float *e = x + i * i_s + 2 * p * k_s;
                    lo = bf16_bits(e[0]);
                    if (2 * p + 1 < kc) hi = bf16_bits(e[k_s]);
                }
                d[p * w] = lo | hi << 16;
            }
        }
    }
}

/* 8 x 32 as the f32 kernel: 16 zmm accumulators, two loads of B and eight word broadcasts of A per pair of k. */
static inline T_BF16 void kernel_bf16(int64_t n_pairs, const uint32_t *ap, const uint32_t *bp, float *c, int64_t ldc,
                                      bool from_c) {
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
    EACH_OF_8(ZMM_TILE_IN);
    for (int64_t k = 0; k < n_pairs; k++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp), b1 = (__m512bh)_mm512_loadu_si512(bp + 16), av;
#define ROW(r)                                                                                                         \
    av = (__m512bh)_mm512_set1_epi32((int)ap[r]);                                                                      \
    c##r##0 = _mm512_dpbf16_ps(c##r##0, av, b0);                                                                       \
    c##r##1 = _mm512_dpbf16_ps(c##r##1, av, b1)
        EACH_OF_8(ROW);
#undef ROW
        ap += BMR;
        bp += BNR;
    }
    EACH_OF_8(ZMM_TILE_OUT);
}

static T_BF16 void kernel_bf16_edge(int64_t n_pairs, const uint32_t *ap, const uint32_t *bp, float *c, int64_t ldc,
                                    bool from_c, int64_t mr, int64_t nr) {
    float t[BMR * BNR];
    if (from_c)
        for (int64_t r = 0; r < mr; r++) memcpy(t + r * BNR, c + r * ldc, (size_t)nr * sizeof(float));
    kernel_bf16(n_pairs, ap, bp, t, BNR, from_c);
    for (int64_t r = 0; r < mr; r++) memcpy(c + r * ldc, t + r * BNR, (size_t)nr * sizeof(float));
}

/* C[m0:m1, n0:n1] in mixed precision. The packing space holds mc x KC words of A (or, with a_once, all of the
 * range's rows of A over every k: a_words), then KC x nc words of B; an operand in j->shared is read from there
 * (then [m0, m1) or [n0, n1) is all of its rows or columns). */
static T_BF16 void gemm_range_bf16(const struct gemm_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                                   float *scratch) {
    uint32_t *ap = (uint32_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    uint32_t *bp = ap + (j->a_once ? j->a_words : (size_t)j->mc * KC);
    int64_t m_pad = (m1 - m0 + BMR - 1) / BMR * BMR; /* rows of a block of A packed once */
    const uint32_t *a_shared = j->shared && !j->split_m ? j->shared : NULL;
    const uint32_t *b_shared = j->shared && j->split_m ? j->shared : NULL;
    TY_ASSERT(!j->shared || j->shared_k == j->K || j->K % 2 == 0);
    if (a_shared) TY_ASSERT(m0 == 0 && m1 == j->M);
    if (b_shared) TY_ASSERT(n0 == 0 && n1 == j->N);
    if (j->a_once && !a_shared) {
        TY_ASSERT((size_t)(m_pad * ((j->K + 1) / 2)) <= j->a_words);
        for (int64_t pc = 0; pc < j->K; pc += BKC)
            pack_block(j->A + m0 * j->a_rs + pc * j->a_cs, j->a_rs, j->a_cs, m1 - m0, BMR,
                       j->K - pc < BKC ? j->K - pc : BKC, ap + m_pad * (pc / 2));
    }
    for (int64_t jc = n0; jc < n1; jc += j->nc) {
        int64_t nc = n1 - jc < j->nc ? n1 - jc : j->nc;
        for (int64_t pc = 0; pc < j->K; pc += BKC) {
            int64_t kc = j->K - pc < BKC ? j->K - pc : BKC, kp = (kc + 1) / 2;
            bool from_c = j->acc || pc > 0;
            /* a shared operand's panels hold its own block of pairs (shared_k), of which this job reads kp */
            int64_t sk = j->shared_k - pc < BKC ? j->shared_k - pc : BKC, skp = (sk + 1) / 2;
            const uint32_t *bblk = bp;
            int64_t bstride = kp, astride = kp;
            if (b_shared)
                bblk = b_shared + j->shared_pad * (pc / 2) + jc * skp, bstride = skp;
            else
                pack_block(j->B + pc * j->b_rs + jc * j->b_cs, j->b_cs, j->b_rs, nc, BNR, kc, bp);
            for (int64_t ic = m0; ic < m1; ic += j->mc) {
                int64_t mc = m1 - ic < j->mc ? m1 - ic : j->mc;
                const uint32_t *ablk = ap;
                if (a_shared)
                    ablk = a_shared + j->shared_pad * (pc / 2) + ic * skp, astride = skp;
                else if (j->a_once)
                    ablk = ap + m_pad * (pc / 2) + (ic - m0) * kp;
                else
                    pack_block(j->A + ic * j->a_rs + pc * j->a_cs, j->a_rs, j->a_cs, mc, BMR, kc, ap);
                for (int64_t jr = 0; jr < nc; jr += BNR) {
                    int64_t nr = nc - jr < BNR ? nc - jr : BNR;
                    for (int64_t ir = 0; ir < mc; ir += BMR) {
                        int64_t mr = mc - ir < BMR ? mc - ir : BMR;
                        float *c = j->C + (ic + ir) * j->ldc + jc + jr;
                        /* a tile that starts from C loads it first thing: fetch the next tile's rows meanwhile
                         * (the weight gradient of the logits, 4160 x 384 accumulated, gained 7%) */
                        if (from_c && ir + BMR < mc)
                            for (int64_t r = 0; r < BMR && ir + BMR + r < mc; r++) {
                                __builtin_prefetch(c + (BMR + r) * j->ldc, 1, 3);
                                __builtin_prefetch(c + (BMR + r) * j->ldc + 16, 1, 3);
                            }
                        if (mr == BMR && nr == BNR)
                            kernel_bf16(kp, ablk + ir * astride, bblk + jr * bstride, c, j->ldc, from_c);
                        else
                            kernel_bf16_edge(kp, ablk + ir * astride, bblk + jr * bstride, c, j->ldc, from_c, mr, nr);
                    }
                }
            }
        }
    }
}
/* Rows [r0, r1) (r0 a multiple of the panel width) of the operand a job shares (B when split_m, else A), packed for
 * every block of k into the layout struct gemm_job describes. */
static T_BF16 void pack_shared_bf16(const struct gemm_job *j, uint32_t *dst, int64_t r0, int64_t r1) {
    bool is_b = j->split_m;
    int64_t w = is_b ? BNR : BMR;
    const float *x = is_b ? j->B : j->A;
    int64_t i_s = is_b ? j->b_cs : j->a_rs, k_s = is_b ? j->b_rs : j->a_cs;
    for (int64_t pc = 0; pc < j->K; pc += BKC) {
        int64_t kc = j->K - pc < BKC ? j->K - pc : BKC;
        pack_block(x + r0 * i_s + pc * k_s, i_s, k_s, r1 - r0, w, kc,
                   dst + j->shared_pad * (pc / 2) + r0 * ((kc + 1) / 2));
    }
}
#else
#define HAVE_BF16 0
#endif

/* Whether this CPU, and the TY_CPU_ISA path, can run the BF16 GEMM; TY_ERR_UNSUPPORTED saying why not. */
static enum ty_status cpu_check_precision(void *ctx, enum ty_train_precision prec) {
    (void)ctx;
    if (prec == TY_TRAIN_PRECISION_F32) return TY_OK;
    if (prec != TY_TRAIN_PRECISION_BF16)
        return ty__error(TY_ERR_INVALID_ARG, "train: precision %d does not exist; use f32 or bf16", (int)prec);
    if (!HAVE_BF16 || !ty__cpu_isa_supported(TY_CPU_ISA_AVX512BF16))
        return ty__error(TY_ERR_UNSUPPORTED,
                         "train: bf16 mixed precision needs an x86-64 CPU with AVX512_BF16 (vdpbf16ps), which this "
                         "machine lacks; train in f32 (--precision f32, the default)");
    enum ty_cpu_isa isa = ty__simd()->isa; /* avx512amx is avx512bf16 plus the tile unit */
    if (isa != TY_CPU_ISA_AVX512BF16 && isa != TY_CPU_ISA_AVX512AMX)
        return ty__error(TY_ERR_UNSUPPORTED,
                         "train: bf16 mixed precision needs the avx512bf16 kernels, but TY_CPU_ISA selects %s; unset "
                         "TY_CPU_ISA or train in f32",
                         ty__simd()->name);
    return TY_OK;
}

/* C[m0:m1, n0:n1] on one thread with its packing space, in the job's precision. */
static void gemm_range(const struct gemm_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float *scratch) {
    if (m0 >= m1 || n0 >= n1) return;
    if (j->K == 0) {
        if (!j->acc)
            for (int64_t m = m0; m < m1; m++) memset(j->C + m * j->ldc + n0, 0, (size_t)(n1 - n0) * sizeof(float));
        return;
    }
#if HAVE_BF16
    if (j->bf16) {
        gemm_range_bf16(j, m0, m1, n0, n1, scratch);
        return;
    }
#endif
    TY_ASSERT(!j->bf16);
    gemm_range_f32(j, m0, m1, n0, n1, scratch);
}

/* ==== Operands packed ahead ==== */

/* Panel width of the operand a job shares (B when split_m, else A). */
static int64_t shared_width(const struct gemm_job *j) {
    return j->bf16 ? (j->split_m ? BNR : BMR) : NR;
}

/* Sets the job up to read its shared operand from a buffer pack_shared fills: shared_pad and shared_k (the job's K);
 * returns the floats the buffer needs (64-byte aligned). f32 shares only B (split_m). */
static size_t shared_setup(struct gemm_job *j) {
    int64_t w = shared_width(j), rows = j->split_m ? j->N : j->M;
    TY_ASSERT(j->bf16 || j->split_m);
    j->shared_pad = (rows + w - 1) / w * w;
    j->shared_k = j->K;
    return (size_t)j->shared_pad * (size_t)(j->bf16 ? (j->K + 1) / 2 : j->K);
}

/* Rows [r0, r1) (r0 a multiple of the panel width) of the job's shared operand, packed into dst for every block of
 * k as struct gemm_job describes: threads pack disjoint parts. */
static void pack_shared(const struct gemm_job *j, void *dst, int64_t r0, int64_t r1) {
    if (r0 >= r1) return;
#if HAVE_BF16
    if (j->bf16) {
        pack_shared_bf16(j, dst, r0, r1);
        return;
    }
#endif
    TY_ASSERT(!j->bf16 && j->split_m);
    for (int64_t pc = 0; pc < j->K; pc += KC) {
        int64_t kc = j->K - pc < KC ? j->K - pc : KC;
        pack_b(j, r0, r1 - r0, pc, kc, (float *)dst + j->shared_pad * pc + r0 * kc);
    }
}

static void pack_shared_task(void *arg, int ith, int nth) {
    const struct gemm_job *j = arg;
    int64_t w = shared_width(j), rows = j->split_m ? j->N : j->M, b, e;
    ty__split_range((rows + w - 1) / w, ith, nth, &b, &e);
    pack_shared(j, (void *)j->shared, b * w, e * w < rows ? e * w : rows);
}

static void gemm_task(void *arg, int ith, int nth) {
    const struct gemm_job *j = arg;
    float *scratch = j->scratch + (size_t)ith * (GEMM_SCRATCH(j->mc, j->nc) + j->a_words);
    int64_t b, e, mr = j->bf16 ? BMR : MR, nr = j->bf16 ? BNR : NR;
    if (j->split_m) {
        ty__split_range((j->M + mr - 1) / mr, ith, nth, &b, &e);
        gemm_range(j, b * mr, e * mr < j->M ? e * mr : j->M, 0, j->N, scratch);
    } else {
        ty__split_range((j->N + nr - 1) / nr, ith, nth, &b, &e);
        gemm_range(j, 0, j->M, b * nr, e * nr < j->N ? e * nr : j->N, scratch);
    }
}

/* The job of C (+)= A B for any layouts; its packing space is set by the caller. */
static struct gemm_job gemm_job_of(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_rs, int64_t a_cs,
                                   const float *B, int64_t b_rs, int64_t b_cs, float *C, int64_t ldc, bool acc,
                                   bool bf16) {
    struct gemm_job j = {M,   N,  K,  A,    a_rs, a_cs, B,     b_rs, b_cs, C, ldc,
                         acc, MC, NC, NULL, true, bf16, false, 0,    NULL, 0, 0};
    return j;
}

#define MAX_MR (MR > BMR ? MR : BMR)
#define MAX_NR (NR > BNR ? NR : BNR)

static void cpu_gemm(void *ctx, int64_t M, int64_t N, int64_t K, const float *A, int64_t a_rs, int64_t a_cs,
                     const float *B, int64_t b_rs, int64_t b_cs, float *C, int64_t ldc, bool accumulate,
                     enum ty_train_precision prec) {
    struct ty_threadpool *pool = pool_of(ctx);
    bool bf16 = prec == TY_TRAIN_PRECISION_BF16;
    TY_ASSERT(!bf16 || cpu_check_precision(ctx, prec) == TY_OK);
    struct gemm_job j = gemm_job_of(M, N, K, A, a_rs, a_cs, B, b_rs, b_cs, C, ldc, accumulate, bf16);
    int nth = pool && M * N * (K + 1) >= 65536 ? ty__threadpool_size(pool) : 1;
    int64_t mr = bf16 ? BMR : MR, nr = bf16 ? BNR : NR;
    j.split_m = (M + mr - 1) / mr >= (N + nr - 1) / nr;
    if (bf16) {
        /* a thread packs its share of one operand and all of the other, and bf16 packing (rounding, pairing) costs
         * enough to matter next to the faster kernel: share the larger one (the weight gradients of narrow
         * matrices, (128, 384) x 1024 tokens, packed 40% fewer values so) */
        j.split_m = M >= N;
        /* a thread that sweeps more than one block of columns packs its rows of A once rather than per block: the
         * rounding makes packing cost more than f32's copy, and the logits' product has 9 blocks of columns */
        int64_t tm = (M + mr - 1) / mr, tn = (N + nr - 1) / nr;
        int64_t rows = (j.split_m ? (tm + nth - 1) / nth : tm) * mr,
                cols = (j.split_m ? tn : (tn + nth - 1) / nth) * nr;
        if (cols > NC) j.a_once = true, j.a_words = (size_t)rows * (size_t)((K + 1) / 2);
        if (!j.split_m && nth > 1) j.a_once = false, j.a_words = 0; /* A is the shared one below */
    }
    /* in bf16 the operand every thread reads whole is packed once, each thread packing a share, instead of once per
     * thread: packing streams its f32 source from memory, and that was a third of all packing */
    size_t shared_floats = bf16 && nth > 1 ? shared_setup(&j) : 0, per_thread = GEMM_SCRATCH(MC, NC) + j.a_words;
    bool owned;
    float *scratch = scratch_get(ctx, (size_t)nth * per_thread + shared_floats + 16, &owned);
    if (!scratch) {
        /* blocks of one tile in a small local space: slower, the same chains and bits */
        float local[GEMM_SCRATCH(MAX_MR, MAX_NR)];
        j.mc = mr, j.nc = nr, j.scratch = local, j.a_once = false, j.a_words = 0;
        gemm_range(&j, 0, M, 0, N, local);
        return;
    }
    j.scratch = scratch;
    if (nth == 1) {
        gemm_range(&j, 0, M, 0, N, scratch);
    } else {
        if (shared_floats) {
            float *sh = scratch + (size_t)nth * per_thread;
            j.shared = (const void *)(((uintptr_t)sh + 63) & ~(uintptr_t)63);
            ty__threadpool_run(pool, pack_shared_task, &j);
        }
        ty__threadpool_run(pool, gemm_task, &j);
    }
    scratch_put(scratch, owned);
}

/* ==== Transpose ==== */

struct tr_job {
    float *dst;
    const float *src;
    int64_t rows, cols;
};

static void tr_range(const void *arg, int64_t begin, int64_t end) {
    const struct tr_job *j = arg;
    /* 16-column strips of the destination rows, so reads and writes both stay within a few cache lines */
    for (int64_t c0 = begin * 16; c0 < end * 16 && c0 < j->cols; c0 += 16) {
        int64_t c1 = c0 + 16 < j->cols ? c0 + 16 : j->cols;
        for (int64_t r = 0; r < j->rows; r++)
            for (int64_t c = c0; c < c1; c++) j->dst[c * j->rows + r] = j->src[r * j->cols + c];
    }
}

static void cpu_transpose(void *ctx, float *dst, const float *src, int64_t rows, int64_t cols) {
    struct tr_job j = {dst, src, rows, cols};
    parallel_for(ctx, (cols + 15) / 16, 16 * rows, tr_range, &j);
}

/* ==== RMSNorm ==== */

struct rms_job {
    float *y, *rstd, *dx, *dw;
    const float *x, *w, *dy;
    int64_t n_rows, dim;
    float eps;
};

static void rms_fwd_rows(const void *arg, int64_t begin, int64_t end) {
    const struct rms_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * j->dim;
        float *y = j->y + r * j->dim;
        float ss = sum_sq(x, j->dim);
        /* HF: variance = x.pow(2).mean(-1) in f32, then x * rsqrt(variance + eps), then weight * that */
        float rs = 1.0f / sqrtf(ss / (float)j->dim + j->eps);
        j->rstd[r] = rs;
        for (int64_t i = 0; i < j->dim; i++) y[i] = j->w[i] * (x[i] * rs);
    }
}

static void cpu_rms_norm_fwd(void *ctx, float *y, float *rstd, const float *x, const float *w, int64_t n_rows,
                             int64_t dim, float eps) {
    struct rms_job j = {.y = y, .rstd = rstd, .x = x, .w = w, .n_rows = n_rows, .dim = dim, .eps = eps};
    parallel_for(ctx, n_rows, 4 * dim, rms_fwd_rows, &j);
}

/* dx = rstd * (dxhat - xhat * mean(dxhat * xhat)) with xhat = x * rstd, dxhat = dy * w. */
static void rms_bwd_rows(const void *arg, int64_t begin, int64_t end) {
    const struct rms_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * j->dim, *dy = j->dy + r * j->dim;
        float *dx = j->dx + r * j->dim;
        float rs = j->rstd[r], dot = dot3(dy, j->w, x, j->dim) * rs;
        dot /= (float)j->dim;
        for (int64_t i = 0; i < j->dim; i++) dx[i] += rs * (dy[i] * j->w[i] - x[i] * rs * dot);
    }
}

/* The weight gradient by columns: each thread sums its features over every row, in row order. */
static void rms_bwd_cols(const void *arg, int64_t begin, int64_t end) {
    const struct rms_job *j = arg;
    for (int64_t r = 0; r < j->n_rows; r++) {
        const float *x = j->x + r * j->dim, *dy = j->dy + r * j->dim;
        float rs = j->rstd[r];
        for (int64_t i = begin; i < end; i++) j->dw[i] += dy[i] * x[i] * rs;
    }
}

static void cpu_rms_norm_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                             const float *w, int64_t n_rows, int64_t dim) {
    struct rms_job j = {
        .dx = dx, .dw = dw, .rstd = (float *)rstd, .x = x, .w = w, .dy = dy, .n_rows = n_rows, .dim = dim};
    parallel_for(ctx, n_rows, 6 * dim, rms_bwd_rows, &j);
    parallel_for(ctx, dim, 3 * n_rows, rms_bwd_cols, &j);
}

/* ==== RoPE ==== */

struct rope_job {
    float *x;
    const int32_t *pos;
    int64_t n_head, hd;
    const struct ty_rope *rope;
    bool inverse;
    const float *table; /* (max_pos + 1, n_dims) cos | sin of each position, or NULL */
    int32_t max_pos;
};

/* cos and sin of every angle of position p, as the inference kernel (cpu-ref.c) and HF compute them: pos * inv_freq
 * in f32, the functions in f64 */
static void rope_angles(const struct ty_rope *rope, int32_t p, bool inverse, float *cs, float *sn) {
    int half = rope->n_dims / 2;
    for (int i = 0; i < half; i++) {
        float theta = rope->inv_freq[i] * (float)p;
        cs[i] = (float)cos((double)theta) * rope->attn_factor;
        sn[i] = (float)sin((double)theta) * rope->attn_factor;
        if (inverse) sn[i] = -sn[i];
    }
}

static void rope_table_rows(const void *arg, int64_t begin, int64_t end) {
    const struct rope_job *j = arg;
    int half = j->rope->n_dims / 2;
    float *t = (float *)j->table;
    for (int64_t p = begin; p < end; p++)
        rope_angles(j->rope, (int32_t)p, j->inverse, t + p * 2 * half, t + p * 2 * half + half);
}

static void rope_rows(const void *arg, int64_t begin, int64_t end) {
    const struct rope_job *j = arg;
    int half = j->rope->n_dims / 2;
    float cs_local[TY_ROPE_MAX_DIMS / 2], sn_local[TY_ROPE_MAX_DIMS / 2];
    for (int64_t t = begin; t < end; t++) {
        const float *cs = cs_local, *sn = sn_local;
        if (j->table && j->pos[t] >= 0 && j->pos[t] <= j->max_pos) {
            cs = j->table + (int64_t)j->pos[t] * 2 * half;
            sn = cs + half;
        } else {
            rope_angles(j->rope, j->pos[t], j->inverse, cs_local, sn_local);
        }
        for (int64_t h = 0; h < j->n_head; h++) {
            float *v = j->x + (t * j->n_head + h) * j->hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

/* The ctx's table of `rope`'s angles (with the sign of `inverse`) for positions [0, rows), computed when the ctx
 * has none that covers them; NULL without a ctx or memory (the caller computes angles per token). */
static const float *rope_table_get(void *ctx, const struct ty_rope *rope, bool inverse, int32_t rows) {
    struct cpu_ctx *c = ctx;
    if (!c) return NULL;
    struct rope_table *rt = &c->rope[inverse];
    if (rt->t && rt->rows >= rows && !memcmp(&rt->rope, rope, sizeof *rope)) return rt->t;
    float *t = ty__malloc((size_t)rows * (size_t)rope->n_dims * sizeof(float));
    if (!t) return NULL;
    ty_free(rt->t);
    rt->t = t, rt->rows = rows, rt->rope = *rope;
    struct rope_job j = {.rope = rope, .inverse = inverse, .table = t};
    parallel_for(ctx, rows, rope->n_dims * 20, rope_table_rows, &j);
    return t;
}

static void cpu_rope(void *ctx, float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                     const struct ty_rope *rope, bool inverse) {
    struct rope_job j = {x, pos, n_head, head_dim, rope, inverse, NULL, -1};
    /* the angles once per position rather than once per token when positions repeat (a batch of sequences) */
    for (int64_t t = 0; t < n_tok; t++) j.max_pos = pos[t] > j.max_pos ? pos[t] : j.max_pos;
    if (j.max_pos >= 0 && j.max_pos < n_tok) j.table = rope_table_get(ctx, rope, inverse, j.max_pos + 1);
    parallel_for(ctx, n_tok, n_head * head_dim * 4 + (j.table ? 0 : rope->n_dims * 20), rope_rows, &j);
}

/* ==== Attention ==== */

/* Rows of queries per block: the scores of a block are a (ATTN_RB, keys up to the block's last row) gemm, so the
 * masked upper triangle is skipped but for the diagonal blocks. 32 rather than 64: a third of the products of 128
 * keys were masked ones, a fifth now (attention 10% faster at 128). Even, as a packed operand's prefix must be. */
#define ATTN_RB 32

struct attn_job {
    float *out, *p, *dq, *dk, *dv;
    const float *q, *k, *v, *dout, *pc;
    int64_t n_seq, S, H, Hkv, hd;
    float scale;
    bool bf16;      /* the products in mixed precision */
    float *scratch; /* per thread: attn_scratch_floats */
};

/* Floats of one packed B of an item: pad(S) x hd (K^T, V^T) or pad(hd) x S (V, K), the larger, aligned. */
static size_t attn_pack_floats(int64_t S, int64_t hd) {
    int64_t w = MAX_NR, a = (S + w - 1) / w * w * hd, b = (hd + w - 1) / w * w * S;
    return (size_t)(a > b ? a : b) + 16;
}

/* Per thread: the gemm packing space, then ATTN_RB x S of dP, then two packed operands of an item. */
static size_t attn_scratch_floats(int64_t S, int64_t hd) {
    return (size_t)GEMM_SCRATCH(MC, NC) + (size_t)ATTN_RB * (size_t)S + 2 * attn_pack_floats(S, hd);
}

/* Packed operand `which` (0, 1) of the item a thread runs, 64-byte aligned. */
static float *attn_pack_space(const struct attn_job *j, float *scratch, int which) {
    float *p = scratch + GEMM_SCRATCH(MC, NC) + ATTN_RB * j->S + (size_t)which * attn_pack_floats(j->S, j->hd);
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* B (k x n) = x[n * n_stride + k] (keys' rows read as K^T, V^T: k runs over a head's dims) when `by_row`, else
 * x[k * n_stride + n] (k runs over keys), packed whole into dst once for an item; products of the item then read it
 * through use_packed, each over a prefix of its columns or of its k (the causal blocks: even lengths, see
 * struct gemm_job). */
static struct gemm_job attn_prepack(const struct attn_job *j, const float *x, int64_t n_stride, bool by_row,
                                    float *dst) {
    int64_t S = j->S, hd = j->hd;
    struct gemm_job g = by_row ? gemm_job_of(S, S, hd, NULL, 0, 0, x, 1, n_stride, NULL, 0, false, j->bf16)
                               : gemm_job_of(S, hd, S, NULL, 0, 0, x, n_stride, 1, NULL, 0, false, j->bf16);
    g.split_m = true;
    shared_setup(&g);
    g.shared = dst;
    pack_shared(&g, dst, 0, g.N);
    return g;
}

static void use_packed(struct gemm_job *g, const struct gemm_job *packed) {
    TY_ASSERT(g->N <= packed->N && g->K <= packed->K && g->bf16 == packed->bf16);
    g->split_m = true;
    g->shared = packed->shared;
    g->shared_pad = packed->shared_pad;
    g->shared_k = packed->shared_k;
}

/* Items are (sequence, KV head) pairs: K^T and V are packed once for the group's query heads and every row block,
 * then per head P = softmax(scale Q K^T) by row blocks, and out = P V. */
static void attn_fwd_item(const struct attn_job *j, int64_t it, float *scratch) {
    int64_t S = j->S, H = j->H, Hkv = j->Hkv, hd = j->hd, grp = H / Hkv;
    int64_t s = it / Hkv, hk = it % Hkv;
    const float *k = j->k + (s * S * Hkv + hk) * hd, *v = j->v + (s * S * Hkv + hk) * hd;
    struct gemm_job kt = attn_prepack(j, k, Hkv * hd, true, attn_pack_space(j, scratch, 0));
    struct gemm_job vp = attn_prepack(j, v, Hkv * hd, false, attn_pack_space(j, scratch, 1));
    for (int64_t h = hk * grp; h < (hk + 1) * grp; h++) {
        float *P = j->p + (s * H + h) * S * S;
        const float *q = j->q + (s * S * H + h) * hd;
        float *out = j->out + (s * S * H + h) * hd;
        for (int64_t i0 = 0; i0 < S; i0 += ATTN_RB) {
            int64_t i1 = i0 + ATTN_RB < S ? i0 + ATTN_RB : S;
            struct gemm_job g =
                gemm_job_of(i1 - i0, i1, hd, q + i0 * H * hd, H * hd, 1, k, 1, Hkv * hd, P + i0 * S, S, false, j->bf16);
            use_packed(&g, &kt);
            gemm_range(&g, 0, g.M, 0, g.N, scratch);
            for (int64_t i = i0; i < i1; i++) {
                float *pr = P + i * S;
                int64_t n = i + 1;
                for (int64_t t = 0; t < n; t++) pr[t] *= j->scale;
                float max = max_of(pr, n);
                for (int64_t t = 0; t < n; t++) pr[t] -= max;
                ty__exp_nonpositive(pr, pr, n);
                float sum = 0.0f, acc[LANES] = {0};
                int64_t t = 0;
                for (; t + LANES <= n; t += LANES)
                    for (int l = 0; l < LANES; l++) acc[l] += pr[t + l];
                for (; t < n; t++) acc[0] += pr[t];
                for (int l = 0; l < LANES; l++) sum += acc[l];
                float inv = 1.0f / sum;
                for (t = 0; t < n; t++) pr[t] *= inv;
                memset(pr + n, 0, (size_t)(S - n) * sizeof(float));
            }
            g = gemm_job_of(i1 - i0, hd, i1, P + i0 * S, S, 1, v, Hkv * hd, 1, out + i0 * H * hd, H * hd, false,
                            j->bf16);
            use_packed(&g, &vp);
            gemm_range(&g, 0, g.M, 0, g.N, scratch);
        }
    }
}

/* Items are (sequence, kv head) pairs, so the heads sharing one key/value head add into its dk, dv on one thread;
 * V^T and K are packed once per item:
 *   dP = dO V^T, dS = scale P * (dP - rowsum(P * dP)), dQ = dS K, dK = dS^T Q, dV = P^T dO, by row blocks. */
static void attn_bwd_item(const struct attn_job *j, int64_t it, float *scratch) {
    int64_t S = j->S, H = j->H, Hkv = j->Hkv, hd = j->hd, grp = H / Hkv;
    int64_t s = it / Hkv, hk = it % Hkv;
    float *D = scratch + GEMM_SCRATCH(MC, NC);
    const float *k = j->k + (s * S * Hkv + hk) * hd, *v = j->v + (s * S * Hkv + hk) * hd;
    float *dk = j->dk + (s * S * Hkv + hk) * hd, *dv = j->dv + (s * S * Hkv + hk) * hd;
    struct gemm_job vt = attn_prepack(j, v, Hkv * hd, true, attn_pack_space(j, scratch, 0));
    struct gemm_job kp = attn_prepack(j, k, Hkv * hd, false, attn_pack_space(j, scratch, 1));
    for (int64_t t = 0; t < S; t++) {
        memset(dk + t * Hkv * hd, 0, (size_t)hd * sizeof(float));
        memset(dv + t * Hkv * hd, 0, (size_t)hd * sizeof(float));
    }
    for (int64_t h = hk * grp; h < (hk + 1) * grp; h++) {
        const float *P = j->pc + (s * H + h) * S * S;
        const float *q = j->q + (s * S * H + h) * hd, *dout = j->dout + (s * S * H + h) * hd;
        float *dq = j->dq + (s * S * H + h) * hd;
        for (int64_t i0 = 0; i0 < S; i0 += ATTN_RB) {
            int64_t i1 = i0 + ATTN_RB < S ? i0 + ATTN_RB : S, rb = i1 - i0;
            const float *Pb = P + i0 * S, *dob = dout + i0 * H * hd;
            struct gemm_job g = gemm_job_of(rb, i1, hd, dob, H * hd, 1, v, 1, Hkv * hd, D, S, false, j->bf16);
            use_packed(&g, &vt);
            gemm_range(&g, 0, g.M, 0, g.N, scratch);
            for (int64_t i = i0; i < i1; i++) {
                const float *pr = P + i * S;
                float *dp = D + (i - i0) * S;
                float rowdot = dot2(pr, dp, i + 1);
                for (int64_t t = 0; t <= i; t++) dp[t] = pr[t] * (dp[t] - rowdot) * j->scale;
                for (int64_t t = i + 1; t < i1; t++) dp[t] = 0.0f;
            }
            g = gemm_job_of(rb, hd, i1, D, S, 1, k, Hkv * hd, 1, dq + i0 * H * hd, H * hd, false, j->bf16);
            use_packed(&g, &kp);
            gemm_range(&g, 0, g.M, 0, g.N, scratch);
            g = gemm_job_of(i1, hd, rb, D, 1, S, q + i0 * H * hd, H * hd, 1, dk, Hkv * hd, true, j->bf16);
            gemm_range(&g, 0, g.M, 0, g.N, scratch);
            g = gemm_job_of(i1, hd, rb, Pb, 1, S, dob, H * hd, 1, dv, Hkv * hd, true, j->bf16);
            gemm_range(&g, 0, g.M, 0, g.N, scratch);
        }
    }
}

struct attn_run {
    const struct attn_job *j;
    void (*item)(const struct attn_job *j, int64_t it, float *scratch);
    int64_t n_items;
};

static void attn_task(void *arg, int ith, int nth) {
    const struct attn_run *r = arg;
    int64_t b, e;
    ty__split_range(r->n_items, ith, nth, &b, &e);
    float *scratch = r->j->scratch + (size_t)ith * attn_scratch_floats(r->j->S, r->j->hd);
    for (int64_t it = b; it < e; it++) r->item(r->j, it, scratch);
}

static enum ty_status attn_run(void *ctx, struct attn_job *j, int64_t n_items,
                               void (*item)(const struct attn_job *, int64_t, float *)) {
    struct ty_threadpool *pool = pool_of(ctx);
    int nth = pool ? ty__threadpool_size(pool) : 1;
    bool owned;
    j->scratch = scratch_get(ctx, (size_t)nth * attn_scratch_floats(j->S, j->hd), &owned);
    if (!j->scratch)
        return ty__error(TY_ERR_NO_MEMORY, "train: out of memory for the attention's scratch (%.1f MiB)",
                         (double)nth * (double)attn_scratch_floats(j->S, j->hd) * 4 / (1 << 20));
    struct attn_run r = {j, item, n_items};
    if (nth == 1 || n_items < 2)
        attn_task(&r, 0, 1);
    else
        ty__threadpool_run(pool, attn_task, &r);
    scratch_put(j->scratch, owned);
    return TY_OK;
}

static enum ty_status cpu_attn_fwd(void *ctx, float *out, float *p, const float *q, const float *k, const float *v,
                                   int64_t n_seq, int64_t seq_len, int64_t n_head, int64_t n_head_kv, int64_t hd,
                                   float scale, enum ty_train_precision prec) {
    TY_ASSERT(cpu_check_precision(ctx, prec) == TY_OK);
    struct attn_job j = {.out = out,
                         .p = p,
                         .q = q,
                         .k = k,
                         .v = v,
                         .n_seq = n_seq,
                         .S = seq_len,
                         .H = n_head,
                         .Hkv = n_head_kv,
                         .hd = hd,
                         .scale = scale,
                         .bf16 = prec == TY_TRAIN_PRECISION_BF16};
    return attn_run(ctx, &j, n_seq * n_head_kv, attn_fwd_item);
}

static enum ty_status cpu_attn_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout, const float *p,
                                   const float *q, const float *k, const float *v, int64_t n_seq, int64_t seq_len,
                                   int64_t n_head, int64_t n_head_kv, int64_t hd, float scale,
                                   enum ty_train_precision prec) {
    TY_ASSERT(cpu_check_precision(ctx, prec) == TY_OK);
    struct attn_job j = {.dq = dq,
                         .dk = dk,
                         .dv = dv,
                         .dout = dout,
                         .pc = p,
                         .q = q,
                         .k = k,
                         .v = v,
                         .n_seq = n_seq,
                         .S = seq_len,
                         .H = n_head,
                         .Hkv = n_head_kv,
                         .hd = hd,
                         .scale = scale,
                         .bf16 = prec == TY_TRAIN_PRECISION_BF16};
    return attn_run(ctx, &j, n_seq * n_head_kv, attn_bwd_item);
}

/* ==== SwiGLU ==== */

struct glu_job {
    float *h, *dg, *du;
    const float *g, *u, *dh;
};

#define GLU_CHUNK 256

/* sigmoid(g) for a chunk, from e = exp(-|g|) (never overflows): 1 / (1 + e) for g >= 0, e / (1 + e) below. */
static void sigmoid_chunk(const float *g, float *sg, int64_t n) {
    for (int64_t i = 0; i < n; i++) sg[i] = -fabsf(g[i]);
    ty__exp_nonpositive(sg, sg, n);
    for (int64_t i = 0; i < n; i++) sg[i] = (g[i] >= 0.0f ? 1.0f : sg[i]) / (1.0f + sg[i]);
}

static void glu_fwd_range(const void *arg, int64_t begin, int64_t end) {
    const struct glu_job *j = arg;
    float sg[GLU_CHUNK];
    for (int64_t i0 = begin; i0 < end; i0 += GLU_CHUNK) {
        int64_t n = end - i0 < GLU_CHUNK ? end - i0 : GLU_CHUNK;
        const float *g = j->g + i0, *u = j->u + i0;
        float *h = j->h + i0;
        sigmoid_chunk(g, sg, n);
        for (int64_t i = 0; i < n; i++) h[i] = g[i] * sg[i] * u[i];
    }
}

static void glu_bwd_range(const void *arg, int64_t begin, int64_t end) {
    const struct glu_job *j = arg;
    float sg[GLU_CHUNK];
    for (int64_t i0 = begin; i0 < end; i0 += GLU_CHUNK) {
        int64_t n = end - i0 < GLU_CHUNK ? end - i0 : GLU_CHUNK;
        const float *g = j->g + i0, *u = j->u + i0, *dh = j->dh + i0;
        float *dg = j->dg + i0, *du = j->du + i0;
        sigmoid_chunk(g, sg, n);
        for (int64_t i = 0; i < n; i++) {
            du[i] = dh[i] * g[i] * sg[i];
            dg[i] = dh[i] * u[i] * sg[i] * (1.0f + g[i] * (1.0f - sg[i]));
        }
    }
}

static void cpu_swiglu_fwd(void *ctx, float *h, const float *g, const float *u, int64_t n) {
    struct glu_job j = {.h = h, .g = g, .u = u};
    parallel_for(ctx, n, 20, glu_fwd_range, &j);
}

static void cpu_swiglu_bwd(void *ctx, float *dg, float *du, const float *dh, const float *g, const float *u,
                           int64_t n) {
    struct glu_job j = {.dg = dg, .du = du, .dh = dh, .g = g, .u = u};
    parallel_for(ctx, n, 25, glu_bwd_range, &j);
}

/* ==== Cross-entropy ==== */

struct xent_job {
    float *logits, *loss;
    const int32_t *targets;
    int64_t V;
    float scale;
};

#define XENT_CHUNK 512

/* sum of exp(l - max) in f64 lanes; the exps are written to `e` (which may be l) */
static double sum_exp(const float *l, float *e, int64_t n, float max) {
    double acc[LANES] = {0};
    for (int64_t i = 0; i < n; i++) e[i] = l[i] - max;
    ty__exp_nonpositive(e, e, n);
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l2 = 0; l2 < LANES; l2++) acc[l2] += (double)e[i + l2];
    for (; i < n; i++) acc[0] += (double)e[i];
    double s = 0.0;
    for (int l2 = 0; l2 < LANES; l2++) s += acc[l2];
    return s;
}

static void xent_rows(const void *arg, int64_t begin, int64_t end) {
    const struct xent_job *j = arg;
    float buf[XENT_CHUNK];
    for (int64_t r = begin; r < end; r++) {
        float *l = j->logits + r * j->V;
        int32_t tgt = j->targets[r];
        if (tgt < 0) {
            j->loss[r] = 0.0f;
            if (j->scale != 0.0f) memset(l, 0, (size_t)j->V * sizeof(float));
            continue;
        }
        float max = max_of(l, j->V), lt = l[tgt];
        /* one exp per logit, kept for the gradient; chunk sums in f64, added in chunk order */
        double sum = 0.0;
        for (int64_t i0 = 0; i0 < j->V; i0 += XENT_CHUNK) {
            int64_t n = j->V - i0 < XENT_CHUNK ? j->V - i0 : XENT_CHUNK;
            sum += sum_exp(l + i0, j->scale != 0.0f ? l + i0 : buf, n, max);
        }
        j->loss[r] = (float)(log(sum) - (double)(lt - max));
        if (j->scale == 0.0f) continue;
        float k = (float)(1.0 / sum) * j->scale;
        for (int64_t i = 0; i < j->V; i++) l[i] *= k;
        l[tgt] -= j->scale;
    }
}

static void cpu_cross_entropy(void *ctx, float *logits, float *loss, const int32_t *targets, int64_t n_rows,
                              int64_t n_vocab, float grad_scale) {
    struct xent_job j = {logits, loss, targets, n_vocab, grad_scale};
    parallel_for(ctx, n_rows, 30 * n_vocab, xent_rows, &j);
}

/* ==== Table ==== */

static const struct ty_train_ops cpu_ops = {
    .version = TY_TRAIN_OPS_VERSION,
    .name = "cpu",
    .check_precision = cpu_check_precision,
    .gemm = cpu_gemm,
    .transpose = cpu_transpose,
    .rms_norm_fwd = cpu_rms_norm_fwd,
    .rms_norm_bwd = cpu_rms_norm_bwd,
    .rope = cpu_rope,
    .attn_fwd = cpu_attn_fwd,
    .attn_bwd = cpu_attn_bwd,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .cross_entropy = cpu_cross_entropy,
};

const struct ty_train_ops *ty__train_ops_cpu(void) {
    return &cpu_ops;
}
