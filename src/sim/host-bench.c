/*
 * host-bench.c - the host CPU as a catalogue chip: its read bandwidth, f32 FMA rate and integer dot-product rate,
 * measured at start-up with the CPU backend's roofline microbenchmarks (src/chip/cpu/roofline.c), with one thread and
 * with one per core. The simulator's predictions for our own engine start from these numbers only, never from the
 * result being predicted.
 */
#include "sim/sim.h"

#include "base/threads.h"
#include "chip/cpu/roofline.h"

#include <unistd.h>

#define BW_BYTES (192u << 20) /* far past any last-level cache, small enough for a sanitizer build */

enum ty_status ty__sim_host_measure(double budget_s, struct ty_sim_host_bench *out) {
    memset(out, 0, sizeof *out);
    if (budget_s <= 0) budget_s = 1.0;
    double t0 = ty__time_s();
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    out->mem_gb = pages > 0 && psize > 0 ? (double)pages * (double)psize / (1024.0 * 1024 * 1024) : 0;
    enum ty_cpu_isa isa = ty__simd()->isa;
    struct ty_roofline one, all;
    TY_TRY(ty__roofline_measure_ex(&one, 1, budget_s / 2, isa, BW_BYTES));
    int ncpu = ty__cpu_count();
    if (ncpu > 1) {
        TY_TRY(ty__roofline_measure_ex(&all, ncpu, budget_s / 2, isa, BW_BYTES));
    } else {
        all = one;
    }
    out->n_threads = all.n_threads;
    out->read_bw_1t_gbs = one.mem_bw_gbs;
    out->fma_gflops_1t = one.fma_gflops;
    out->int8_gops_1t = one.int8_gops;
    /* The best figure over 1..N threads (on a shared machine N threads can measure below one). */
    out->read_bw_gbs = all.mem_bw_gbs > one.mem_bw_gbs ? all.mem_bw_gbs : one.mem_bw_gbs;
    out->fma_gflops = all.fma_gflops > one.fma_gflops ? all.fma_gflops : one.fma_gflops;
    out->int8_gops = all.int8_gops > one.int8_gops ? all.int8_gops : one.int8_gops;
    out->isa = ty__cpu_isa_name(isa);
    out->seconds = ty__time_s() - t0;
    if (!(out->read_bw_gbs > 0) || !(out->fma_gflops > 0))
        return ty__error(TY_ERR_INTERNAL,
                         "host microbenchmark measured nothing (bandwidth %.3g GB/s, FMA %.3g GFLOP/s)",
                         out->read_bw_gbs, out->fma_gflops);
    return TY_OK;
}
