/*
 * ops.c - the CPU implementation of the training op table (struct ty_train_ops in train.h): a cache-friendly f32 gemm
 * with a register-blocked micro-kernel (GCC/Clang vector extensions, which become AVX-512 or AVX2 FMAs under
 * -march=native and plain scalar code elsewhere), and the forward and backward kernels of RMSNorm, NeoX RoPE, causal
 * attention, SwiGLU and cross-entropy. Every kernel is split over the thread pool by whole output elements, and each
 * element is summed in one fixed order, so results do not depend on the thread count.
 */
#include "train/train.h"

#include <math.h>

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
    struct ty_threadpool *pool = ctx;
    if (!pool || n <= 1 || n * work_per_item < 32768) {
        if (n > 0) fn(arg, 0, n);
        return;
    }
    struct par p = {fn, arg, n};
    ty__threadpool_run(pool, par_task, &p);
}

/* ==== GEMM ==== */

/* The vector width the build targets (a wider one than the ISA has would be split and pass through memory) */
#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
typedef float vf __attribute__((vector_size(VL * 4)));
/* Rows of a register tile: 2 * MR accumulators, 16 of the 32 registers with AVX-512, 8 of 16 with AVX2 */
#if VL == 16
#define MR 8
#else
#define MR 4
#endif
#define NR (2 * VL)
/* k values per packed panel of B: KC x NR floats (32 KiB with AVX-512) stay in L1 while the row tiles pass */
#define KC 256

/* Unaligned loads and stores (macros: a vector passed to a function would change the ABI where the ISA lacks it) */
#define VLOAD(v, p)  memcpy(&(v), (p), sizeof(vf))
#define VSTORE(p, v) memcpy((p), &(v), sizeof(vf))

/* Every element of C is one chain of multiply-adds in k order, started from C itself (accumulate, or any k chunk
 * after the first) or from zero: the same order whatever the tiling and the thread split. */
struct gemm_job {
    int64_t M, N, K;
    const float *A;
    int64_t a_rs, a_cs;
    const float *B;
    int64_t ldb;
    float *C;
    int64_t ldc;
    bool acc;
    int64_t n_mt; /* row tiles of MR */
};

#if defined(__AVX512F__)
#include <immintrin.h>

/* An 8 x 32 tile of C over k in [k0, k0 + kc), B packed as kc rows of 32: 16 zmm accumulators, one broadcast of A
 * and two loads of B per k. Intrinsics, because the compilers spill the generic version's accumulator array. */
static inline void tile_full(const struct gemm_job *j, int64_t m0, int64_t n0, int64_t k0, int64_t kc, const float *pb,
                             bool from_c) {
    float *c = j->C + m0 * j->ldc + n0;
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
#define IN(r)                                                                                                          \
    c##r##0 = from_c ? _mm512_loadu_ps(c + r * j->ldc) : _mm512_setzero_ps();                                          \
    c##r##1 = from_c ? _mm512_loadu_ps(c + r * j->ldc + 16) : _mm512_setzero_ps();
    IN(0)
    IN(1)
    IN(2)
    IN(3) IN(4) IN(5) IN(6) IN(7)
#undef IN
        const float *a = j->A + m0 * j->a_rs + k0 * j->a_cs;
    const int64_t rs = j->a_rs, cs = j->a_cs;
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(pb + k * NR), b1 = _mm512_loadu_ps(pb + k * NR + 16), av;
        const float *ak = a + k * cs;
#define ROW(r)                                                                                                         \
    av = _mm512_set1_ps(ak[r * rs]);                                                                                   \
    c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                                                                        \
    c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7)
#undef ROW
    }
#define OUT(r)                                                                                                         \
    _mm512_storeu_ps(c + r * j->ldc, c##r##0);                                                                         \
    _mm512_storeu_ps(c + r * j->ldc + 16, c##r##1);
    OUT(0) OUT(1) OUT(2) OUT(3) OUT(4) OUT(5) OUT(6) OUT(7)
#undef OUT
}
#else
static inline void tile_full(const struct gemm_job *j, int64_t m0, int64_t n0, int64_t k0, int64_t kc, const float *pb,
                             bool from_c) {
    vf c[MR][2];
    for (int r = 0; r < MR; r++) {
        float *cr = j->C + (m0 + r) * j->ldc + n0;
        if (from_c) {
            VLOAD(c[r][0], cr);
            VLOAD(c[r][1], cr + VL);
        } else {
            c[r][0] = c[r][1] = (vf){0};
        }
    }
    const float *a = j->A + m0 * j->a_rs + k0 * j->a_cs;
    for (int64_t k = 0; k < kc; k++) {
        vf b0, b1;
        VLOAD(b0, pb + k * NR);
        VLOAD(b1, pb + k * NR + VL);
        const float *ak = a + k * j->a_cs;
        for (int r = 0; r < MR; r++) {
            vf av = (vf){0} + ak[r * j->a_rs];
            c[r][0] += av * b0;
            c[r][1] += av * b1;
        }
    }
    for (int r = 0; r < MR; r++) {
        float *cr = j->C + (m0 + r) * j->ldc + n0;
        VSTORE(cr, c[r][0]);
        VSTORE(cr + VL, c[r][1]);
    }
}
#endif

/* Any partial tile over k in [k0, k0 + kc): plain loops, the same order. */
static void tile_edge(const struct gemm_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t k0, int64_t kc,
                      bool from_c) {
    for (int64_t m = m0; m < m1; m++) {
        for (int64_t n = n0; n < n1; n++) {
            float *c = &j->C[m * j->ldc + n];
            float s = from_c ? *c : 0.0f;
            for (int64_t k = k0; k < k0 + kc; k++) s += j->A[m * j->a_rs + k * j->a_cs] * j->B[k * j->ldb + n];
            *c = s;
        }
    }
}

static void pack_panel(const struct gemm_job *j, int64_t n0, int64_t k0, int64_t kc, float *pb) {
    for (int64_t k = 0; k < kc; k++) memcpy(pb + k * NR, j->B + (k0 + k) * j->ldb + n0, NR * sizeof(float));
}

/* Rows [m_begin, m_end) (whole tiles but the last) of the column block at n0, every k chunk. */
static void gemm_block(const struct gemm_job *j, int64_t m_begin, int64_t m_end, int64_t n0, float *pb) {
    for (int64_t k0 = 0; k0 < j->K; k0 += KC) {
        int64_t kc = j->K - k0 < KC ? j->K - k0 : KC;
        bool from_c = j->acc || k0 > 0;
        pack_panel(j, n0, k0, kc, pb);
        for (int64_t m0 = m_begin; m0 < m_end; m0 += MR) {
            if (m0 + MR <= m_end)
                tile_full(j, m0, n0, k0, kc, pb, from_c);
            else
                tile_edge(j, m0, m_end, n0, n0 + NR, k0, kc, from_c);
        }
    }
}

/* Row tiles [begin, end) across every column. */
static void gemm_rows(const void *arg, int64_t begin, int64_t end) {
    const struct gemm_job *j = arg;
    float pb[KC * NR];
    int64_t nfull = j->N / NR * NR, m0 = begin * MR, m1 = end * MR < j->M ? end * MR : j->M;
    for (int64_t n0 = 0; n0 < nfull; n0 += NR) gemm_block(j, m0, m1, n0, pb);
    if (nfull < j->N) tile_edge(j, m0, m1, nfull, j->N, 0, j->K, j->acc);
}

/* Column blocks [begin, end) over every row, for products with few rows. */
static void gemm_cols(const void *arg, int64_t begin, int64_t end) {
    const struct gemm_job *j = arg;
    float pb[KC * NR];
    int64_t nfull_blocks = j->N / NR;
    for (int64_t blk = begin; blk < end; blk++) {
        if (blk < nfull_blocks)
            gemm_block(j, 0, j->M, blk * NR, pb);
        else
            tile_edge(j, 0, j->M, blk * NR, j->N, 0, j->K, j->acc);
    }
}

static void cpu_gemm(void *ctx, int64_t M, int64_t N, int64_t K, const float *A, int64_t a_rs, int64_t a_cs,
                     const float *B, int64_t ldb, float *C, int64_t ldc, bool accumulate) {
    struct gemm_job j = {M, N, K, A, a_rs, a_cs, B, ldb, C, ldc, accumulate, (M + MR - 1) / MR};
    int nth = ctx ? ty__threadpool_size(ctx) : 1;
    int64_t n_cb = (N + NR - 1) / NR;
    if (j.n_mt >= 4 * nth || j.n_mt >= n_cb)
        parallel_for(ctx, j.n_mt, MR * N * K, gemm_rows, &j);
    else
        parallel_for(ctx, n_cb, NR * M * K, gemm_cols, &j);
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
        float ss = 0.0f;
        for (int64_t i = 0; i < j->dim; i++) ss += x[i] * x[i];
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
        float rs = j->rstd[r], dot = 0.0f;
        for (int64_t i = 0; i < j->dim; i++) dot += dy[i] * j->w[i] * x[i] * rs;
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
};

static void rope_rows(const void *arg, int64_t begin, int64_t end) {
    const struct rope_job *j = arg;
    int half = j->rope->n_dims / 2;
    float cs[TY_ROPE_MAX_DIMS / 2], sn[TY_ROPE_MAX_DIMS / 2];
    for (int64_t t = begin; t < end; t++) {
        /* the angles as the inference kernel (cpu-ref.c) and HF compute them: pos * inv_freq in f32 */
        for (int i = 0; i < half; i++) {
            float theta = j->rope->inv_freq[i] * (float)j->pos[t];
            cs[i] = (float)cos((double)theta) * j->rope->attn_factor;
            sn[i] = (float)sin((double)theta) * j->rope->attn_factor;
            if (j->inverse) sn[i] = -sn[i];
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

static void cpu_rope(void *ctx, float *x, const int32_t *pos, int64_t n_tok, int64_t n_head, int64_t head_dim,
                     const struct ty_rope *rope, bool inverse) {
    struct rope_job j = {x, pos, n_head, head_dim, rope, inverse};
    parallel_for(ctx, n_tok, n_head * head_dim * 4 + rope->n_dims * 20, rope_rows, &j);
}

/* ==== Attention ==== */

struct attn_job {
    float *out, *p, *dq, *dk, *dv;
    const float *q, *k, *v, *dout, *pc;
    int64_t n_seq, S, H, Hkv, hd;
    float scale;
};

/* a.b in VL lanes then across them (a fixed order, so still independent of threads), plain for odd lengths */
static inline float dot(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    if (n % VL == 0) {
        vf acc = {0}, x, y;
        for (int64_t i = 0; i < n; i += VL) {
            VLOAD(x, a + i);
            VLOAD(y, b + i);
            acc += x * y;
        }
        for (int l = 0; l < VL; l++) s += acc[l];
        return s;
    }
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Items are (sequence, head) pairs. */
static void attn_fwd_items(const void *arg, int64_t begin, int64_t end) {
    const struct attn_job *j = arg;
    int64_t S = j->S, H = j->H, Hkv = j->Hkv, hd = j->hd, grp = H / Hkv;
    for (int64_t it = begin; it < end; it++) {
        int64_t s = it / H, h = it % H, hk = h / grp;
        float *P = j->p + it * S * S;
        for (int64_t i = 0; i < S; i++) {
            const float *qi = j->q + ((s * S + i) * H + h) * hd;
            float *pr = P + i * S, max = -INFINITY;
            for (int64_t t = 0; t <= i; t++) {
                pr[t] = dot(qi, j->k + ((s * S + t) * Hkv + hk) * hd, hd) * j->scale;
                max = pr[t] > max ? pr[t] : max;
            }
            float sum = 0.0f;
            for (int64_t t = 0; t <= i; t++) sum += pr[t] = expf(pr[t] - max);
            float inv = 1.0f / sum;
            for (int64_t t = 0; t <= i; t++) pr[t] *= inv;
            for (int64_t t = i + 1; t < S; t++) pr[t] = 0.0f;
            float *o = j->out + ((s * S + i) * H + h) * hd;
            for (int64_t d = 0; d < hd; d++) o[d] = 0.0f;
            for (int64_t t = 0; t <= i; t++) {
                const float *vt = j->v + ((s * S + t) * Hkv + hk) * hd;
                for (int64_t d = 0; d < hd; d++) o[d] += pr[t] * vt[d];
            }
        }
    }
}

static void cpu_attn_fwd(void *ctx, float *out, float *p, const float *q, const float *k, const float *v, int64_t n_seq,
                         int64_t seq_len, int64_t n_head, int64_t n_head_kv, int64_t hd, float scale) {
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
                         .scale = scale};
    parallel_for(ctx, n_seq * n_head, seq_len * seq_len * hd * 2, attn_fwd_items, &j);
}

#define ATTN_ROW 2048

/* Items are (sequence, kv head) pairs, so the heads sharing one key/value head add into its dk, dv on one thread:
 *   dP = dO V^T, dS = P * (dP - rowsum(P * dP)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO. */
static void attn_bwd_items(const void *arg, int64_t begin, int64_t end) {
    const struct attn_job *j = arg;
    int64_t S = j->S, H = j->H, Hkv = j->Hkv, hd = j->hd, grp = H / Hkv;
    float dprow[ATTN_ROW];
    for (int64_t it = begin; it < end; it++) {
        int64_t s = it / Hkv, hk = it % Hkv;
        for (int64_t t = 0; t < S; t++) {
            memset(j->dk + ((s * S + t) * Hkv + hk) * hd, 0, (size_t)hd * sizeof(float));
            memset(j->dv + ((s * S + t) * Hkv + hk) * hd, 0, (size_t)hd * sizeof(float));
        }
        for (int64_t h = hk * grp; h < (hk + 1) * grp; h++) {
            const float *P = j->pc + (s * H + h) * S * S;
            for (int64_t i = 0; i < S; i++) {
                const float *pr = P + i * S;
                const float *doi = j->dout + ((s * S + i) * H + h) * hd;
                const float *qi = j->q + ((s * S + i) * H + h) * hd;
                float *dqi = j->dq + ((s * S + i) * H + h) * hd;
                /* dP row i on the stack up to ATTN_ROW keys; beyond, recomputed in the second loop */
                float rowdot = 0.0f;
                for (int64_t t = 0; t <= i; t++) {
                    float dp = dot(doi, j->v + ((s * S + t) * Hkv + hk) * hd, hd);
                    if (t < ATTN_ROW) dprow[t] = dp;
                    rowdot += pr[t] * dp;
                }
                for (int64_t d = 0; d < hd; d++) dqi[d] = 0.0f;
                for (int64_t t = 0; t <= i; t++) {
                    const float *kt = j->k + ((s * S + t) * Hkv + hk) * hd;
                    const float *vt = j->v + ((s * S + t) * Hkv + hk) * hd;
                    float dp = t < ATTN_ROW ? dprow[t] : dot(doi, vt, hd);
                    float dsv = pr[t] * (dp - rowdot) * j->scale;
                    float *dkt = j->dk + ((s * S + t) * Hkv + hk) * hd;
                    float *dvt = j->dv + ((s * S + t) * Hkv + hk) * hd;
                    for (int64_t d = 0; d < hd; d++) {
                        dqi[d] += dsv * kt[d];
                        dkt[d] += dsv * qi[d];
                        dvt[d] += pr[t] * doi[d];
                    }
                }
            }
        }
    }
}

static void cpu_attn_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout, const float *p, const float *q,
                         const float *k, const float *v, int64_t n_seq, int64_t seq_len, int64_t n_head,
                         int64_t n_head_kv, int64_t hd, float scale) {
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
                         .scale = scale};
    parallel_for(ctx, n_seq * n_head_kv, seq_len * seq_len * hd * 8 * (n_head / n_head_kv), attn_bwd_items, &j);
}

/* ==== SwiGLU ==== */

struct glu_job {
    float *h, *dg, *du;
    const float *g, *u, *dh;
};

static inline float sigmoid(float x) {
    return 1.0f / (1.0f + expf(-x));
}

static void glu_fwd_range(const void *arg, int64_t begin, int64_t end) {
    const struct glu_job *j = arg;
    for (int64_t i = begin; i < end; i++) {
        float g = j->g[i];
        j->h[i] = g * sigmoid(g) * j->u[i];
    }
}

static void glu_bwd_range(const void *arg, int64_t begin, int64_t end) {
    const struct glu_job *j = arg;
    for (int64_t i = begin; i < end; i++) {
        float g = j->g[i], sg = sigmoid(g), dh = j->dh[i];
        j->du[i] = dh * g * sg;
        j->dg[i] = dh * j->u[i] * sg * (1.0f + g * (1.0f - sg));
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

static void xent_rows(const void *arg, int64_t begin, int64_t end) {
    const struct xent_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        float *l = j->logits + r * j->V;
        int32_t tgt = j->targets[r];
        if (tgt < 0) {
            j->loss[r] = 0.0f;
            if (j->scale != 0.0f) memset(l, 0, (size_t)j->V * sizeof(float));
            continue;
        }
        float max = l[0];
        for (int64_t i = 1; i < j->V; i++) max = l[i] > max ? l[i] : max;
        float lt = l[tgt];
        /* one exp per logit, kept for the gradient; the sum in f64 */
        double sum = 0.0;
        if (j->scale != 0.0f) {
            for (int64_t i = 0; i < j->V; i++) sum += l[i] = expf(l[i] - max);
        } else {
            for (int64_t i = 0; i < j->V; i++) sum += expf(l[i] - max);
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
