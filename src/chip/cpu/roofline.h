/*
 * roofline.h - what this machine can do at most, measured in the same run as the figures compared with it: memory
 * read bandwidth (the decode roofline), and the peak throughput of the instructions the kernels are built on (f32 FMA,
 * the integer dot product of the quantised gemm, bf16 dot products where the CPU has them), the prefill roofline.
 *
 * Bandwidth is streamed with the widest loads the CPU has whatever the path (it is the machine's figure); the peaks
 * time the instructions of the path measured. Each figure is the best of several timed repetitions (the machine's
 * capability, not its average under noise), for a given number of threads, each thread pinned to no core in particular
 * and working on its own data. Shared machines are noisy: compare a kernel with a roofline measured in the same
 * process, never across runs.
 */
#ifndef TY_ROOFLINE_H
#define TY_ROOFLINE_H

#include "chip/cpu/simd/simd.h"

/* Reads `bytes` at `buf` (any alignment) with the loads the bandwidth roofline uses and returns a value that depends
 * on every byte read (so no compiler drops the reads), so a caller
 * can time a read of the very memory its kernels stream: on a VM the same code reads 30 or 55 GB/s depending on
 * where the host put a buffer, so a ratio is only fair against the same memory. */
uint64_t ty__roofline_read(const void *buf, size_t bytes);

struct ty_roofline {
    int n_threads;
    enum ty_cpu_isa isa;    /* the dispatch path whose instructions were timed */
    size_t mem_bytes;       /* the buffer streamed (many times the last-level cache) */
    int mem_passes;         /* timed passes over it */
    double mem_bw_gbs;      /* read bandwidth, best pass, 1e9 bytes per second */
    double mem_bw_mean_gbs; /* mean over the passes */
    double fma_gflops;      /* f32 FMA peak, all threads; one fused multiply-add counts 2 FLOPs */
    double int8_gops;       /* integer dot peak of the quantised gemm's instruction; a multiply-add counts 2 OPs */
    double bf16_gflops;     /* vdpbf16ps peak; 0 where the path has no bf16 dot product */
    const char *mem_insn;   /* the load that streamed the buffer, e.g. "vmovdqu64 zmm" */
    const char *fma_insn;   /* e.g. "vfmadd231ps zmm" */
    const char *int8_insn;  /* e.g. "vpdpbusd zmm" (u8 x s8); "vpmaddwd zmm" (s16 x s16) on AVX-512 without VNNI */
    const char *bf16_insn;  /* "vdpbf16ps zmm" or NULL */
    double amx_int8_gops;   /* AMX tile dot peak (avx512amx path only, else 0): the prefill of the types it serves */
    const char *amx_insn;   /* "tdpbssd (AMX, s8 x s8)" or NULL */
};

/* Measures everything with `n_threads` threads (0 = one per core) on the active dispatch path (ty__simd()), within
 * about `seconds_budget` seconds (at least ~0.5 s is useful; the buffer is 512 MiB, set TY_ROOFLINE_MB to change
 * it). TY_ERR_NO_MEMORY when the buffer cannot be had. */
enum ty_status ty__roofline_measure(struct ty_roofline *out, int n_threads, double seconds_budget);

/* The integer peak a quantised type's prefill is rated against: the AMX tile peak where its packed gemm runs on the
 * tiles (k: the type's kernels on r's path), else the integer dot's. */
double ty__roofline_int8_peak(const struct ty_roofline *r, const struct ty_simd_type *k);

/* The same on a given path and buffer size (bytes; 0 = the default). */
enum ty_status ty__roofline_measure_ex(struct ty_roofline *out, int n_threads, double seconds_budget,
                                       enum ty_cpu_isa isa, size_t mem_bytes);

/* A read-bandwidth probe kept beside a benchmark, to measure the bandwidth roofline in the same seconds as the test it
 * bounds. On the 2-core VM the host gives two threads about 33 or about 55 GB/s and flips between the two within
 * seconds (measured back to back: 33, 33, 52, 30, 52, 29 GB/s), so a roofline measured once, before a model loads,
 * can belong to the other state than the test after it. Its own threads (pinned like the engine's) and a buffer of
 * its own on huge pages, written once by the threads that read it. */
struct ty_bw_probe;
/* `bytes` 0 = half the roofline buffer (TY_ROOFLINE_MB / 2). */
enum ty_status ty__bw_probe_new(int n_threads, size_t bytes, struct ty_bw_probe **out);
/* The best of `passes` timed passes over the buffer, in 1e9 bytes per second. */
double ty__bw_probe_gbs(struct ty_bw_probe *p, int passes);
void ty__bw_probe_free(struct ty_bw_probe *p);

#endif /* TY_ROOFLINE_H */
