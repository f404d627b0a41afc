/*
 * dispatch.c - which kernels run: CPU feature detection (cpuid and XCR0 on x86-64, the auxiliary vector on AArch64),
 * one kernel table per dispatch path built on first use, the TY_CPU_ISA override, and the active path.
 *
 * A path's table starts as a copy of the path below it and each instruction set overrides the entries it has
 * kernels for, so a path never lacks a type and a new kernel is one assignment in its own file.
 */
#include "chip/cpu/simd/simd-impl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* ==== CPU features ==== */

static struct ty_cpu_features features;
static pthread_once_t features_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__) || defined(__i386__)
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

/* Linux hands out the 8 KiB AMX tile state only to a process that asks for it (arch_prctl ARCH_REQ_XCOMP_PERM for
 * XTILEDATA, kernel 5.16 on); without the grant the first tile instruction faults. */
static bool amx_granted(void) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return false;
#endif
}
#endif

static void detect(void) {
    struct ty_cpu_features f = {0};
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        bool osxsave = c & (1u << 27);
        uint64_t xcr0 = osxsave ? read_xcr0() : 0;
        bool ymm = (xcr0 & 0x6) == 0x6;   /* SSE and AVX state */
        bool zmm = (xcr0 & 0xe6) == 0xe6; /* + opmask, ZMM0-15 upper halves, ZMM16-31 */
        bool avx = ymm && (c & (1u << 28));
        f.fma = avx && (c & (1u << 12));
        f.f16c = avx && (c & (1u << 29));
        unsigned max_leaf = __get_cpuid_max(0, NULL);
        if (max_leaf >= 7 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) {
            unsigned max_sub = a;
            f.avx2 = avx && (b & (1u << 5));
            f.avx512f = zmm && (b & (1u << 16));
            f.avx512dq = f.avx512f && (b & (1u << 17));
            f.avx512bw = f.avx512f && (b & (1u << 30));
            f.avx512vl = f.avx512f && (b & (1u << 31));
            f.avx512vbmi = f.avx512f && (c & (1u << 1));
            f.avx512vnni = f.avx512f && (c & (1u << 11));
            bool tiles = (xcr0 & 0x60000) == 0x60000;                 /* XTILECFG and XTILEDATA */
            bool amx = tiles && (d & (1u << 24)) && (d & (1u << 25)); /* AMX-TILE, AMX-INT8 */
            if (max_sub >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512bf16 = f.avx512f && (a & (1u << 5));
            f.amx_int8 = amx && f.avx512bf16 && amx_granted();
        }
    }
#if defined(TY_AVX512_EMULATED) /* the emulated test build: its AVX-512 kernels run as AVX2 code (dot-avx512.c) */
    f.avx512f = f.avx512dq = f.avx512bw = f.avx512vl = f.avx512vnni = f.avx512bf16 = f.avx2 && f.fma && f.f16c;
    f.amx_int8 = false; /* no portable AMX intrinsics: dot-amx.h is not built there */
#endif
#elif defined(__aarch64__)
    f.neon = true; /* Advanced SIMD is mandatory in AArch64 */
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
    f.dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__ARM_FEATURE_DOTPROD)
    f.dotprod = true;
#endif
#endif
    features = f;
}

const struct ty_cpu_features *ty__cpu_features(void) {
    pthread_once(&features_once, detect);
    return &features;
}

/* ==== Paths ==== */

static const char *const isa_names[TY_CPU_ISA_COUNT] = {
    [TY_CPU_ISA_SCALAR] = "scalar",
    [TY_CPU_ISA_AVX2] = "avx2",
    [TY_CPU_ISA_AVX512] = "avx512",
    [TY_CPU_ISA_AVX512VNNI] = "avx512vnni",
    [TY_CPU_ISA_AVX512BF16] = "avx512bf16",
    [TY_CPU_ISA_AVX512AMX] = "avx512amx",
    [TY_CPU_ISA_NEON] = "neon",
};

const char *ty__cpu_isa_name(enum ty_cpu_isa isa) {
    return (unsigned)isa < TY_CPU_ISA_COUNT ? isa_names[isa] : "unknown";
}

bool ty__cpu_isa_from_name(const char *name, enum ty_cpu_isa *out) {
    for (int i = 0; name && i < TY_CPU_ISA_COUNT; i++) {
        if (!strcasecmp(name, isa_names[i])) {
            *out = (enum ty_cpu_isa)i;
            return true;
        }
    }
    return false;
}

bool ty__cpu_isa_supported(enum ty_cpu_isa isa) {
    const struct ty_cpu_features *f = ty__cpu_features();
    bool avx2 = f->avx2 && f->fma && f->f16c;
    bool avx512 = avx2 && f->avx512f && f->avx512bw && f->avx512dq && f->avx512vl;
    switch (isa) {
    case TY_CPU_ISA_SCALAR:
        return true;
#if defined(__x86_64__)
    case TY_CPU_ISA_AVX2:
        return avx2;
    case TY_CPU_ISA_AVX512:
        return avx512;
    case TY_CPU_ISA_AVX512VNNI:
        return avx512 && f->avx512vnni;
    case TY_CPU_ISA_AVX512BF16:
        return avx512 && f->avx512vnni && f->avx512bf16;
    case TY_CPU_ISA_AVX512AMX:
        return avx512 && f->avx512vnni && f->avx512bf16 && f->amx_int8;
#else
    case TY_CPU_ISA_AVX512AMX:
    case TY_CPU_ISA_AVX2:
    case TY_CPU_ISA_AVX512:
    case TY_CPU_ISA_AVX512VNNI:
    case TY_CPU_ISA_AVX512BF16:
        return (void)avx512, false;
#endif
    case TY_CPU_ISA_NEON:
        return f->neon && f->dotprod && ty__simd_neon_built();
    default:
        return false;
    }
}

enum ty_cpu_isa ty__cpu_isa_best(void) {
    static const enum ty_cpu_isa order[] = {TY_CPU_ISA_AVX512AMX, TY_CPU_ISA_AVX512BF16, TY_CPU_ISA_AVX512VNNI,
                                            TY_CPU_ISA_AVX512,    TY_CPU_ISA_AVX2,       TY_CPU_ISA_NEON};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (ty__cpu_isa_supported(order[i])) return order[i];
    return TY_CPU_ISA_SCALAR;
}

/* ==== Tables ==== */

static struct ty_simd tables[TY_CPU_ISA_COUNT];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
    for (int i = 0; i < TY_CPU_ISA_COUNT; i++) {
        tables[i].isa = (enum ty_cpu_isa)i;
        tables[i].name = isa_names[i];
    }
    ty__simd_fill_scalar(&tables[TY_CPU_ISA_SCALAR]);

    tables[TY_CPU_ISA_AVX2] = tables[TY_CPU_ISA_SCALAR];
    ty__simd_fill_avx2(&tables[TY_CPU_ISA_AVX2]);
    tables[TY_CPU_ISA_AVX512] = tables[TY_CPU_ISA_AVX2];
    ty__simd_fill_avx512(&tables[TY_CPU_ISA_AVX512], 0);
    tables[TY_CPU_ISA_AVX512VNNI] = tables[TY_CPU_ISA_AVX512];
    ty__simd_fill_avx512(&tables[TY_CPU_ISA_AVX512VNNI], 1);
    tables[TY_CPU_ISA_AVX512BF16] = tables[TY_CPU_ISA_AVX512VNNI];
    ty__simd_fill_avx512(&tables[TY_CPU_ISA_AVX512BF16], 2);
    tables[TY_CPU_ISA_AVX512AMX] = tables[TY_CPU_ISA_AVX512BF16];
    ty__simd_fill_avx512(&tables[TY_CPU_ISA_AVX512AMX], 3);

    tables[TY_CPU_ISA_NEON] = tables[TY_CPU_ISA_SCALAR];
    ty__simd_fill_neon(&tables[TY_CPU_ISA_NEON]);

    for (int i = 0; i < TY_CPU_ISA_COUNT; i++) {
        tables[i].isa = (enum ty_cpu_isa)i;
        tables[i].name = isa_names[i];
    }
}

enum ty_status ty__simd_get(enum ty_cpu_isa isa, const struct ty_simd **out) {
    *out = NULL;
    if ((unsigned)isa >= TY_CPU_ISA_COUNT)
        return ty__error(TY_ERR_INVALID_ARG, "dispatch path %d does not exist", (int)isa);
    if (!ty__cpu_isa_supported(isa))
        return ty__error(TY_ERR_UNSUPPORTED,
                         "this CPU (or this build) cannot run the %s kernels; the best path here is %s", isa_names[isa],
                         isa_names[ty__cpu_isa_best()]);
    pthread_once(&tables_once, build_tables);
    *out = &tables[isa];
    return TY_OK;
}

static const char *path_list(void) {
    return "scalar, avx2, avx512, avx512vnni, avx512bf16, avx512amx, neon";
}

enum ty_status ty__simd_from_env(const struct ty_simd **out) {
    *out = NULL;
    const char *env = getenv("TY_CPU_ISA");
    if (!env || !*env) return ty__simd_get(ty__cpu_isa_best(), out);
    enum ty_cpu_isa isa;
    if (!ty__cpu_isa_from_name(env, &isa))
        return ty__error(TY_ERR_INVALID_ARG, "TY_CPU_ISA=%s is not a dispatch path; use one of %s (or unset it)", env,
                         path_list());
    enum ty_status st = ty__simd_get(isa, out);
    if (st != TY_OK) return ty__error_prefix(st, "TY_CPU_ISA=%s", env);
    return TY_OK;
}

static _Atomic(const struct ty_simd *) active;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void choose_active(void) {
    const struct ty_simd *s;
    if (ty__simd_from_env(&s) != TY_OK) {
        TY_LOG_W("%s; using the %s kernels instead", ty_last_error(), isa_names[ty__cpu_isa_best()]);
        enum ty_status st = ty__simd_get(ty__cpu_isa_best(), &s);
        TY_ASSERT(st == TY_OK);
    }
    atomic_store_explicit(&active, s, memory_order_release);
}

const struct ty_simd *ty__simd(void) {
    const struct ty_simd *s = atomic_load_explicit(&active, memory_order_acquire);
    if (s) return s;
    pthread_once(&active_once, choose_active);
    return atomic_load_explicit(&active, memory_order_acquire);
}

const struct ty_simd *ty__simd_for_type(const struct ty_simd *path, enum ty_type t) {
    const struct ty_simd *k = path;
    for (int isa = (int)path->isa - 1; t == TY_TYPE_BF16 && isa >= 0 && k->t[t].act == TY_ACT_BF16; isa--) {
        const struct ty_simd *below;
        if (ty__simd_get((enum ty_cpu_isa)isa, &below) == TY_OK && ty__simd_act_format(below, t) == TY_ACT_F32)
            k = below;
    }
    return k;
}

size_t ty__gemm_scratch_size(void) {
    size_t panels = ty__gemm_panels_scratch();
    bool amx = ty__cpu_isa_supported(TY_CPU_ISA_AVX512AMX); /* its larger scratch only where it can run */
    return amx && TY_AMX_SCRATCH > panels ? TY_AMX_SCRATCH : panels;
}
