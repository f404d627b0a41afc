/*
 * roofline.c - the microbenchmarks of roofline.h.
 *
 *  - Read bandwidth: every thread sums its own contiguous slice of one large buffer with the widest integer loads of
 *    the path, eight independent accumulators so the loop is bound by memory, not by the adds. The buffer is written
 *    once first (by the threads that read it, so pages land near them) and then read in whole passes; a pass's
 *    bandwidth is the buffer's size over the wall time of the pass.
 *  - Peaks: every thread runs independent chains of one instruction on registers (twelve chains: more than latency
 *    times throughput on current cores), a fixed count calibrated to fill the time budget. Results are stored to a
 *    volatile sink so no compiler can drop the work.
 * Threads come from the persistent pool of base/threads.h; a repetition is one pool run, timed from the caller.
 */
#include "chip/cpu/roofline.h"
#include "base/threads.h"

#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__)
#define T_AVX2 __attribute__((target("avx2,fma")))
#endif
#if defined(__x86_64__) && defined(TY_AVX512_EMULATED) /* the emulated test build (see dot-avx512.c) */
#include "avx512-emu.h"
#define T_AVX512 T_AVX2
#define T_VNNI   T_AVX2
#define T_BF16   T_AVX2
#elif defined(__x86_64__)
#include <immintrin.h>
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define T_VNNI   __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define T_BF16   __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,avx2,fma")))
#define T_AMX    __attribute__((target("amx-tile,amx-int8")))
#define HAVE_AMX 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#define CHAINS 12
/* Every loop over the chains (and over a read kernel's accumulators) fully unrolled, so the accumulators live in
 * registers: gcc's -O2 left them on the stack, where each step waits on a store, and measured half the FMA and int8
 * peaks. */
#define EACH_CHAIN(c) _Pragma("GCC unroll 12") for (int c = 0; c < CHAINS; c++)

static _Atomic uint64_t sink; /* where every kernel's result goes, so none can be optimised away */

/* ==== Kernels: each returns something derived from all its work ==== */

/* Sum of n bytes (a multiple of 512) as 64-bit words. */
static uint64_t read_scalar(const uint8_t *p, size_t n) {
    uint64_t s[8] = {0};
    for (size_t i = 0; i < n; i += 64)
        for (int j = 0; j < 8; j++) {
            uint64_t v;
            memcpy(&v, p + i + 8 * j, 8);
            s[j] += v;
        }
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

static double fma_scalar(int64_t iters) {
    float acc[CHAINS];
    EACH_CHAIN(c) acc[c] = (float)c;
    volatile float va = 0.999999f, vb = 1e-7f;
    float a = va, b = vb;
    for (int64_t i = 0; i < iters; i++) EACH_CHAIN(c) acc[c] = __builtin_fmaf(acc[c], a, b);
    double s = 0;
    EACH_CHAIN(c) s += acc[c];
    return s;
}

static double int8_scalar(int64_t iters) {
    int32_t acc[CHAINS] = {0};
    volatile int8_t va = 3, vb = -2;
    int8_t a = va, b = vb;
    for (int64_t i = 0; i < iters; i++)
        EACH_CHAIN(c) acc[c] = acc[c] * a + b; /* a recurrence: no closed form to fold */
    double s = 0;
    EACH_CHAIN(c) s += acc[c];
    return s;
}

#if defined(__x86_64__)
static T_AVX2 uint64_t read_avx2(const uint8_t *p, size_t n) {
    __m256i s[8];
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) s[j] = _mm256_setzero_si256();
    for (size_t i = 0; i < n; i += 256)
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) s[j] =
            _mm256_add_epi64(s[j], _mm256_load_si256((const __m256i *)(p + i + 32 * j)));
    _Pragma("GCC unroll 8") for (int j = 1; j < 8; j++) s[0] = _mm256_add_epi64(s[0], s[j]);
    return (uint64_t)_mm256_extract_epi64(s[0], 0) + (uint64_t)_mm256_extract_epi64(s[0], 3);
}

static T_AVX512 uint64_t read_avx512(const uint8_t *p, size_t n) {
    __m512i s[8];
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) s[j] = _mm512_setzero_si512();
    for (size_t i = 0; i < n; i += 512)
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) s[j] =
            _mm512_add_epi64(s[j], _mm512_load_si512(p + i + 64 * j));
    _Pragma("GCC unroll 8") for (int j = 1; j < 8; j++) s[0] = _mm512_add_epi64(s[0], s[j]);
    /* the lanes summed as unsigned: _mm512_reduce_add_epi64 adds signed 64-bit values, which overflow (UBSan) */
    uint64_t lane[8], sum = 0;
    _mm512_storeu_si512(lane, s[0]);
    for (int j = 0; j < 8; j++) sum += lane[j];
    return sum;
}

static T_AVX2 double fma_avx2(int64_t iters) {
    __m256 acc[CHAINS];
    EACH_CHAIN(c) acc[c] = _mm256_set1_ps((float)c);
    volatile float va = 0.999999f, vb = 1e-7f;
    __m256 a = _mm256_set1_ps(va), b = _mm256_set1_ps(vb);
    for (int64_t i = 0; i < iters; i++) EACH_CHAIN(c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
    _Pragma("GCC unroll 12") for (int c = 1; c < CHAINS; c++) acc[0] = _mm256_add_ps(acc[0], acc[c]);
    return _mm256_cvtss_f32(acc[0]);
}

static T_AVX512 double fma_avx512(int64_t iters) {
    __m512 acc[CHAINS];
    EACH_CHAIN(c) acc[c] = _mm512_set1_ps((float)c);
    volatile float va = 0.999999f, vb = 1e-7f;
    __m512 a = _mm512_set1_ps(va), b = _mm512_set1_ps(vb);
    for (int64_t i = 0; i < iters; i++) EACH_CHAIN(c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
    _Pragma("GCC unroll 12") for (int c = 1; c < CHAINS; c++) acc[0] = _mm512_add_ps(acc[0], acc[c]);
    return _mm512_reduce_add_ps(acc[0]);
}

/* vpmaddubsw + vpaddw: the AVX2 path's integer kernels (u8 weight levels x s8 activations, pair sums added in int16
 * where they cannot overflow); 32 multiply-adds per instruction. The product takes the accumulator as one operand:
 * with loop-invariant operands a compiler could fold the whole loop into one multiply. */
static T_AVX2 double int8_avx2(int64_t iters) {
    __m256i acc[CHAINS];
    EACH_CHAIN(c) acc[c] = _mm256_set1_epi16((short)c);
    volatile char vb = -2;
    __m256i b = _mm256_set1_epi8(vb);
    for (int64_t i = 0; i < iters; i++)
        EACH_CHAIN(c) acc[c] = _mm256_add_epi16(acc[c], _mm256_maddubs_epi16(acc[c], b));
    _Pragma("GCC unroll 12") for (int c = 1; c < CHAINS; c++) acc[0] = _mm256_add_epi16(acc[0], acc[c]);
    return _mm256_extract_epi16(acc[0], 0);
}

/* vpmaddwd + vpaddd: the int16 gemm kernel of the AVX-512 (no VNNI) path; 32 multiply-adds. The product takes the
 * accumulator as one operand, as above. */
static T_AVX512 double int16_avx512(int64_t iters) {
    __m512i acc[CHAINS];
    EACH_CHAIN(c) acc[c] = _mm512_set1_epi32(c);
    volatile short vb = -2;
    __m512i b = _mm512_set1_epi16(vb);
    for (int64_t i = 0; i < iters; i++) EACH_CHAIN(c) acc[c] = _mm512_add_epi32(acc[c], _mm512_madd_epi16(acc[c], b));
    _Pragma("GCC unroll 12") for (int c = 1; c < CHAINS; c++) acc[0] = _mm512_add_epi32(acc[0], acc[c]);
    return _mm512_reduce_add_epi32(acc[0]);
}

/* vpdpbusd: 64 u8 x s8 multiply-adds per instruction. */
static T_VNNI double int8_vnni(int64_t iters) {
    __m512i acc[CHAINS];
    EACH_CHAIN(c) acc[c] = _mm512_set1_epi32(c);
    volatile char va = 3, vb = -2;
    __m512i a = _mm512_set1_epi8(va), b = _mm512_set1_epi8(vb);
    for (int64_t i = 0; i < iters; i++) EACH_CHAIN(c) acc[c] = _mm512_dpbusd_epi32(acc[c], a, b);
    _Pragma("GCC unroll 12") for (int c = 1; c < CHAINS; c++) acc[0] = _mm512_add_epi32(acc[0], acc[c]);
    return _mm512_reduce_add_epi32(acc[0]);
}

/* vdpbf16ps: 32 bf16 multiply-adds per instruction. */
static T_BF16 double bf16_avx512(int64_t iters) {
    __m512 acc[CHAINS];
    EACH_CHAIN(c) acc[c] = _mm512_set1_ps((float)c);
    volatile short va = 0x3f80, vb = 0x3380; /* 1.0 and 2^-24 */
    __m512i a = _mm512_set1_epi16(va), b = _mm512_set1_epi16(vb);
    for (int64_t i = 0; i < iters; i++) EACH_CHAIN(c) acc[c] = _mm512_dpbf16_ps(acc[c], (__m512bh)a, (__m512bh)b);
    _Pragma("GCC unroll 12") for (int c = 1; c < CHAINS; c++) acc[0] = _mm512_add_ps(acc[0], acc[c]);
    return _mm512_reduce_add_ps(acc[0]);
}

#if defined(HAVE_AMX)
/* tdpbssd: 16 x 16 dots of 64 s8 pairs per instruction (16384 multiply-adds); four accumulator tiles, three
 * instructions each per iteration (CHAINS), the two source tiles fixed. Loads and releases its own configuration. */
static T_AMX double int8_amx(int64_t iters) {
    struct ty_amx_config cfg = {.palette = 1};
    for (int t = 0; t < 6; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    static const int8_t src[16 * 64] = {1, 2, 3};
    int32_t out[16 * 16];
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, src, 64);
    _tile_loadd(5, src, 64);
    for (int64_t i = 0; i < iters; i++)
        for (int r = 0; r < CHAINS / 4; r++) {
            _tile_dpbssd(0, 4, 5);
            _tile_dpbssd(1, 5, 4);
            _tile_dpbssd(2, 4, 5);
            _tile_dpbssd(3, 5, 4);
        }
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
}
#endif
#endif

#if defined(__aarch64__)
static uint64_t read_neon(const uint8_t *p, size_t n) {
    uint64x2_t s[8];
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) s[j] = vdupq_n_u64(0);
    for (size_t i = 0; i < n; i += 128)
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) s[j] =
            vaddq_u64(s[j], vld1q_u64((const uint64_t *)(p + i + 16 * j)));
    _Pragma("GCC unroll 8") for (int j = 1; j < 8; j++) s[0] = vaddq_u64(s[0], s[j]);
    return vgetq_lane_u64(s[0], 0) + vgetq_lane_u64(s[0], 1);
}

static double fma_neon(int64_t iters) {
    float32x4_t acc[CHAINS];
    EACH_CHAIN(c) acc[c] = vdupq_n_f32((float)c);
    volatile float va = 0.999999f, vb = 1e-7f;
    float32x4_t a = vdupq_n_f32(va), b = vdupq_n_f32(vb);
    for (int64_t i = 0; i < iters; i++) EACH_CHAIN(c) acc[c] = vfmaq_f32(b, acc[c], a);
    _Pragma("GCC unroll 12") for (int c = 1; c < CHAINS; c++) acc[0] = vaddq_f32(acc[0], acc[c]);
    return vgetq_lane_f32(acc[0], 0);
}

#if defined(__ARM_FEATURE_DOTPROD) || (defined(__GNUC__) && !defined(__clang__))
#if defined(__ARM_FEATURE_DOTPROD)
#define T_DOT
#else
#define T_DOT __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#define HAVE_SDOT 1
/* sdot: 16 s8 x s8 multiply-adds per instruction. */
static T_DOT double int8_neon(int64_t iters) {
    int32x4_t acc[CHAINS];
    EACH_CHAIN(c) acc[c] = vdupq_n_s32(c);
    volatile int8_t va = 3, vb = -2;
    int8x16_t a = vdupq_n_s8(va), b = vdupq_n_s8(vb);
    for (int64_t i = 0; i < iters; i++) EACH_CHAIN(c) acc[c] = vdotq_s32(acc[c], a, b);
    _Pragma("GCC unroll 12") for (int c = 1; c < CHAINS; c++) acc[0] = vaddq_s32(acc[0], acc[c]);
    return vgetq_lane_s32(acc[0], 0);
}
#endif
#endif

/* ==== What each path times ==== */

struct kernels {
    uint64_t (*read)(const uint8_t *p, size_t n);
    double (*fma)(int64_t iters);
    double (*int8)(int64_t iters);
    double (*bf16)(int64_t iters);
    double fma_flops, int8_ops, bf16_flops; /* per iteration of one chain */
    const char *mem_insn, *fma_insn, *int8_insn, *bf16_insn;
    double (*amx)(int64_t iters); /* tdpbssd, on the avx512amx path: 32768 OPs per chain and iteration */
};

static struct kernels kernels_for(enum ty_cpu_isa isa) {
    struct kernels k = {read_scalar, fma_scalar,      int8_scalar,           NULL, 2,   2, 0,
                        "mov r64",   "fmaf (scalar)", "imul + add (scalar)", NULL, NULL};
    switch (isa) {
#if defined(__x86_64__)
    case TY_CPU_ISA_AVX2:
        k = (struct kernels){read_avx2,
                             fma_avx2,
                             int8_avx2,
                             NULL,
                             16,
                             64,
                             0,
                             "vmovdqa ymm",
                             "vfmadd231ps ymm",
                             "vpmaddubsw + vpaddw ymm (u8 x s8)",
                             NULL,
                             NULL};
        break;
    case TY_CPU_ISA_AVX512:
        k = (struct kernels){read_avx512,
                             fma_avx512,
                             int16_avx512,
                             NULL,
                             32,
                             64,
                             0,
                             "vmovdqa64 zmm",
                             "vfmadd231ps zmm",
                             "vpmaddwd + vpaddd zmm (int16)",
                             NULL,
                             NULL};
        break;
    case TY_CPU_ISA_AVX512VNNI:
    case TY_CPU_ISA_AVX512BF16:
    case TY_CPU_ISA_AVX512AMX:
        k = (struct kernels){read_avx512,
                             fma_avx512,
                             int8_vnni,
                             NULL,
                             32,
                             128,
                             0,
                             "vmovdqa64 zmm",
                             "vfmadd231ps zmm",
                             "vpdpbusd zmm (u8 x s8)",
                             NULL,
                             NULL};
        if (isa != TY_CPU_ISA_AVX512VNNI) k.bf16 = bf16_avx512, k.bf16_flops = 64, k.bf16_insn = "vdpbf16ps zmm";
#if defined(HAVE_AMX)
        if (isa == TY_CPU_ISA_AVX512AMX) k.amx = int8_amx;
#endif
        break;
#endif
#if defined(__aarch64__)
    case TY_CPU_ISA_NEON:
        k.read = read_neon, k.fma = fma_neon, k.fma_flops = 8, k.mem_insn = "ldr q", k.fma_insn = "fmla v.4s";
#if HAVE_SDOT
        k.int8 = int8_neon, k.int8_ops = 32, k.int8_insn = "sdot v.4s (s8 x s8)";
#endif
        break;
#endif
    default:
        break;
    }
    return k;
}

/* ==== Timed runs on the pool ==== */

struct job {
    const struct kernels *k;
    int what; /* 0 touch, 1 read, 2 fma, 3 int8, 4 bf16, 5 amx */
    uint8_t *buf;
    size_t bytes;
    int64_t iters;
};

static void job_run(void *arg, int ith, int nth) {
    struct job *j = arg;
    if (j->what <= 1) {
        /* slices in units of 4 KiB pages, so each thread streams whole pages of its own */
        int64_t pages = (int64_t)(j->bytes / 4096), b, e;
        ty__split_range(pages, ith, nth, &b, &e);
        uint8_t *p = j->buf + (size_t)b * 4096;
        size_t n = (size_t)(e - b) * 4096;
        if (j->what == 0)
            memset(p, 1 + ith, n);
        else
            atomic_fetch_add_explicit(&sink, j->k->read(p, n), memory_order_relaxed);
        return;
    }
    double r = j->what == 2   ? j->k->fma(j->iters)
               : j->what == 3 ? j->k->int8(j->iters)
               : j->what == 4 ? j->k->bf16(j->iters)
                              : j->k->amx(j->iters);
    atomic_fetch_add_explicit(&sink, (uint64_t)(int64_t)r, memory_order_relaxed);
}

static double timed(struct ty_threadpool *pool, struct job *j) {
    double t0 = ty__time_s();
    ty__threadpool_run(pool, job_run, j);
    return ty__time_s() - t0;
}

/* Best rate (units per second) of a peak kernel over `seconds`: calibrates the iteration count to ~1/5 of it. */
static double peak(struct ty_threadpool *pool, const struct kernels *k, int what, double per_iter, double seconds) {
    struct job j = {k, what, NULL, 0, 1000};
    double t;
    while ((t = timed(pool, &j)) < 0.01 && j.iters < (1ll << 40)) j.iters *= 4;
    j.iters = (int64_t)((double)j.iters * (seconds / 5) / (t > 0 ? t : 1e-3)) + 1;
    double best = 0, t_end = ty__time_s() + seconds;
    int reps = 0;
    do {
        t = timed(pool, &j);
        double rate = per_iter * CHAINS * (double)j.iters * ty__threadpool_size(pool) / t;
        if (rate > best) best = rate;
        reps++;
    } while (ty__time_s() < t_end || reps < 3);
    return best;
}

typedef uint64_t (*read_fn)(const uint8_t *, size_t);

uint64_t ty__roofline_read(const void *buf, size_t bytes) {
    static _Atomic(read_fn) cached;
    read_fn read = atomic_load_explicit(&cached, memory_order_relaxed);
    if (!read) { /* every thread that gets here stores the same pointer */
        read = kernels_for(ty__cpu_isa_best()).read;
        atomic_store_explicit(&cached, read, memory_order_relaxed);
    }
    const uint8_t *p = buf, *end = p + bytes;
    uint64_t sum = 0;
    while (p < end && ((uintptr_t)p % 64) != 0) sum += *p++;
    size_t body = (size_t)(end - p) / 512 * 512;
    if (body) sum += read(p, body);
    for (p += body; p < end; p++) sum += *p;
    return sum;
}

/* The read buffer's size: `bytes`, else TY_ROOFLINE_MB (default 512) MiB divided by `divisor`; whole 4 KiB pages,
 * at least 1 MiB (else an error naming `who`). */
static enum ty_status buffer_bytes(size_t bytes, size_t divisor, const char *who, size_t *out) {
    if (bytes == 0) {
        const char *mb = getenv("TY_ROOFLINE_MB");
        bytes = ((size_t)(mb && atol(mb) > 0 ? atol(mb) : 512) << 20) / divisor;
    }
    *out = bytes / 4096 * 4096;
    if (*out < (1u << 20)) return ty__error(TY_ERR_INVALID_ARG, "%s: buffer of %zu bytes is too small", who, *out);
    return TY_OK;
}

enum ty_status ty__roofline_measure_ex(struct ty_roofline *out, int n_threads, double seconds_budget,
                                       enum ty_cpu_isa isa, size_t mem_bytes) {
    memset(out, 0, sizeof *out);
    if (!ty__cpu_isa_supported(isa))
        return ty__error(TY_ERR_UNSUPPORTED, "roofline: this CPU cannot run the %s path", ty__cpu_isa_name(isa));
    TY_TRY(buffer_bytes(mem_bytes, 1, "roofline", &mem_bytes));
    if (!(seconds_budget > 0)) seconds_budget = 2;

    struct ty_threadpool *pool;
    TY_TRY(ty__threadpool_init(n_threads, &pool));
    uint8_t *buf = ty__huge_calloc(1, mem_bytes);
    if (!buf) {
        ty__threadpool_free(pool);
        return ty__error(TY_ERR_NO_MEMORY,
                         "roofline: cannot allocate the %zu MiB read buffer; set TY_ROOFLINE_MB lower",
                         mem_bytes >> 20);
    }
    struct kernels k = kernels_for(isa);
    /* Bandwidth is the machine's, whatever path runs: stream with the widest loads the CPU has. */
    struct kernels best = kernels_for(ty__cpu_isa_best());
    k.read = best.read, k.mem_insn = best.mem_insn;
    out->n_threads = ty__threadpool_size(pool);
    out->isa = isa;
    out->mem_bytes = mem_bytes;
    out->mem_insn = k.mem_insn, out->fma_insn = k.fma_insn, out->int8_insn = k.int8_insn, out->bf16_insn = k.bf16_insn;

    /* Bandwidth: 60% of the budget (after one untimed warm pass), at least three passes. */
    struct job j = {&k, 0, buf, mem_bytes, 0};
    timed(pool, &j);
    j.what = 1;
    timed(pool, &j);
    double t_end = ty__time_s() + 0.6 * seconds_budget, sum = 0;
    do {
        double t = timed(pool, &j);
        double gbs = (double)mem_bytes / t / 1e9;
        sum += gbs;
        if (gbs > out->mem_bw_gbs) out->mem_bw_gbs = gbs;
        out->mem_passes++;
    } while (ty__time_s() < t_end || out->mem_passes < 3);
    out->mem_bw_mean_gbs = sum / out->mem_passes;
    ty__huge_free(buf);

    /* Peaks: the rest of the budget, shared. */
    double share = 0.4 * seconds_budget / (2 + (k.bf16 != NULL) + (k.amx != NULL));
    out->fma_gflops = peak(pool, &k, 2, k.fma_flops, share) / 1e9;
    out->int8_gops = peak(pool, &k, 3, k.int8_ops, share) / 1e9;
    if (k.bf16) out->bf16_gflops = peak(pool, &k, 4, k.bf16_flops, share) / 1e9;
    if (k.amx) out->amx_int8_gops = peak(pool, &k, 5, 32768, share) / 1e9, out->amx_insn = "tdpbssd (AMX, s8 x s8)";
    ty__threadpool_free(pool);
    return TY_OK;
}

/* ==== Bandwidth probe ==== */

struct ty_bw_probe {
    struct ty_threadpool *pool;
    struct kernels k;
    uint8_t *buf;
    size_t bytes;
};

enum ty_status ty__bw_probe_new(int n_threads, size_t bytes, struct ty_bw_probe **out) {
    *out = NULL;
    TY_TRY(buffer_bytes(bytes, 2, "bandwidth probe", &bytes));
    struct ty_bw_probe *p = ty__calloc(1, sizeof *p);
    if (!p) return ty__error(TY_ERR_NO_MEMORY, "bandwidth probe: out of memory");
    p->k = kernels_for(ty__cpu_isa_best());
    p->bytes = bytes;
    enum ty_status st = ty__threadpool_init(n_threads, &p->pool);
    if (st == TY_OK && !(p->buf = ty__huge_calloc(1, bytes)))
        st = ty__error(TY_ERR_NO_MEMORY, "bandwidth probe: cannot allocate %zu MiB; set TY_ROOFLINE_MB lower",
                       bytes >> 20);
    if (st != TY_OK) {
        ty__bw_probe_free(p);
        return st;
    }
    ty__threadpool_pin(p->pool);
    struct job j = {&p->k, 0, p->buf, bytes, 0};
    timed(p->pool, &j); /* each thread writes the slice it will read */
    *out = p;
    return TY_OK;
}

double ty__bw_probe_gbs(struct ty_bw_probe *p, int passes) {
    struct job j = {&p->k, 1, p->buf, p->bytes, 0};
    double best = 0;
    for (int i = 0; i < (passes > 0 ? passes : 1); i++) {
        double gbs = (double)p->bytes / timed(p->pool, &j) / 1e9;
        if (gbs > best) best = gbs;
    }
    return best;
}

void ty__bw_probe_free(struct ty_bw_probe *p) {
    if (!p) return;
    if (p->buf) ty__huge_free(p->buf);
    if (p->pool) ty__threadpool_free(p->pool);
    ty_free(p);
}

double ty__roofline_int8_peak(const struct ty_roofline *r, const struct ty_simd_type *k) {
    bool amx = r->amx_int8_gops > 0 && k->gemm_packed && k->gemm_isa && !strcmp(k->gemm_isa, "avx512amx");
    return amx ? r->amx_int8_gops : r->int8_gops;
}

enum ty_status ty__roofline_measure(struct ty_roofline *out, int n_threads, double seconds_budget) {
    return ty__roofline_measure_ex(out, n_threads, seconds_budget, ty__simd()->isa, 0);
}
