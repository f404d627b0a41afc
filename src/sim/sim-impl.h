/*
 * sim-impl.h - constants the simulator's files share but nothing outside src/sim needs: the host CPU's efficiency
 * assumptions (one place, so the catalogue entry and the `tongyun bench` predictions never disagree) and the
 * collective-bandwidth efficiency of links.
 */
#ifndef TY_SIM_IMPL_H
#define TY_SIM_IMPL_H

/* Share of link bandwidth that collectives achieve (NCCL-style bus bandwidth); an estimate. */
#define TY_SIM_LINK_EFF 0.8

/* Host CPU efficiency, assumptions until `tongyun bench` measurements calibrate them: the share of the measured f32
 * FMA rate the engine's matrix kernels reach, of the measured read bandwidth a matrix-vector product streams, of the
 * FMA rate attention reaches, and the fixed cost per layer (thread-pool wake-ups for ~10 ops). */
#define TY_SIM_HOST_MFU      0.5
#define TY_SIM_HOST_MBU      0.85
#define TY_SIM_HOST_ATTN_MFU 0.3
#define TY_SIM_HOST_LAYER_US 10.0

#endif /* TY_SIM_IMPL_H */
