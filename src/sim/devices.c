/*
 * devices.c - the device catalogue: every chip the simulator knows, each figure with its source and an estimate flag,
 * the efficiency factors with where they came from, chips added from a user's JSON file, and the host CPU, measured
 * by microbenchmarks (host-bench.c) when the catalogue is made.
 *
 * Rules for the table: a published figure cites the publication; a figure that is not public is an estimate (est =
 * true) whose source explains the derivation; 0 means "not known" and the source says so. Efficiency factors are
 * measured where a measurement exists (the H20's come from Alibaba InferSim's kernel benchmarks) and are otherwise
 * labelled assumptions. Prices are assumptions unless a list price is cited.
 */
#include "sim/sim.h"
#include "sim/sim-impl.h"

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <strings.h>
#include <unistd.h>

/* ==== Sources ==== */

#define SRC_NOTES     "Huawei Ascend 910B figures as reported by the press (they vary by SKU)"
#define SRC_H20       "NVIDIA H20 specification as reported by the press (2024)"
#define SRC_A800      "NVIDIA A800 80GB datasheet"
#define SRC_A100      "NVIDIA A100 80GB datasheet"
#define SRC_H100      "NVIDIA H100 SXM5 datasheet"
#define SRC_H200      "NVIDIA H200 SXM datasheet"
#define SRC_B200      "NVIDIA HGX B200 specification"
#define SRC_V5E       "Google Cloud TPU v5e documentation"
#define SRC_V5P       "Google Cloud TPU v5p documentation"
#define SRC_V6E       "Google Cloud TPU v6e (Trillium) documentation"
#define SRC_TPU7X     "Google TPU7x (Ironwood) announcement, 2025"
#define SRC_MI300X    "AMD Instinct MI300X datasheet"
#define SRC_910C      "press reports; CloudMatrix384 paper (arXiv 2506.12708) summary"
#define SRC_PPU       "T-Head Zhenwu 810E launch (Jan 2026) as reported by SCMP, Tom's Hardware, servernews.ru"
#define SRC_PCIE4     "PCIe 4.0 x16: 32 GB/s per direction"
#define SRC_PCIE5     "PCIe 5.0 x16: 64 GB/s per direction"
#define SRC_NP        "not published"
#define SRC_NOFP8     "no FP8 units: FP8 weights are dequantised and computed in BF16"
#define SRC_PRICE     "assumption: an indicative cloud rate per card-hour, not a quote; pass --price"
#define SRC_GCP_PRICE "Google Cloud on-demand list price per chip-hour (check the current price)"

/* Efficiency factors. */
#define SRC_INFERSIM_GEMM "measured: Alibaba InferSim bench_data/gemm/h20 (DeepGEMM, m >= 4096: 0.88-0.95 of peak)"
#define SRC_INFERSIM_BW   "Alibaba InferSim hardware/gpu.py: H20 mem_bw = 4096 GB/s x 0.8"
#define SRC_INFERSIM_FA   "measured: InferSim bench_data/mha/prefill/h20 (FlashAttention-3 at 4096 tokens: 0.82)"
#define SRC_INFERSIM_KV   "measured: InferSim bench_data/mha/decode/h20 (FlashInfer, batch 128 x 4096: 1.07 GB in 401 us)"
#define SRC_WGMMA         "Hopper wgmma.mma_async: the smallest M is 64 rows (PTX ISA)"
#define SRC_LAYER_US      "est.: InferSim bench_data/gemm/h20, the smallest GEMMs take 3.7-5 us; ~5 kernels per layer"
#define SRC_STEP_MS       "InferSim models/model.py: +5 ms per decode iteration for the SGLang scheduler"
#define SRC_ALPHA         "assumption: NCCL-class collective latency per step on the scale-up link"
#define SRC_MEMUTIL       "vLLM default gpu_memory_utilization = 0.9"
#define SRC_ASSUME_MFU    "assumption, not calibrated: typical large-GEMM efficiency of vendor BLAS on this part"
#define SRC_ASSUME_BW     "assumption, not calibrated: same fraction as the H20 figure (InferSim: 0.8)"
#define SRC_ASSUME_FA     "assumption, not calibrated: flash-attention prefill efficiency"
#define SRC_ASSUME_KV     "assumption, not calibrated: same as the H20 measurement (FlashInfer decode, 0.67)"
#define SRC_ASSUME_TILE   "assumption: CTA tiles of tensor-core GEMM kernels have at least 64 rows"
#define SRC_ASSUME_STEP   "assumption: the H20 engine overhead (InferSim, SGLang) applies to this part"
#define SRC_MXU128        "MXU is a 128x128 systolic array (Google TPU documentation)"
#define SRC_MXU256        "MXU is a 256x256 systolic array (Google Trillium/Ironwood documentation)"
#define SRC_CUBE          "Da Vinci cube unit computes 16x16x16 tiles (Huawei Ascend documentation)"

#define FIG(val, source)                                                                                               \
    { (val), (source), false }
#define EST(val, source)                                                                                               \
    { (val), (source), true }

/* Efficiency blocks by family: mfu, mbu, attn_mfu, attn_mbu, tile_m, layer_us, step_ms, link_alpha_us, mem_util. */
#define EFF_H20                                                                                                        \
    .mfu = FIG(0.90, SRC_INFERSIM_GEMM), .mbu = FIG(0.80, SRC_INFERSIM_BW), .attn_mfu = FIG(0.82, SRC_INFERSIM_FA),    \
    .attn_mbu = FIG(0.67, SRC_INFERSIM_KV), .tile_m = FIG(64, SRC_WGMMA), .layer_us = EST(20, SRC_LAYER_US),           \
    .step_ms = FIG(5, SRC_STEP_MS), .link_alpha_us = EST(10, SRC_ALPHA), .mem_util = FIG(0.9, SRC_MEMUTIL)
#define EFF_HOPPER                                                                                                     \
    .mfu = EST(0.70, SRC_ASSUME_MFU), .mbu = EST(0.80, SRC_ASSUME_BW), .attn_mfu = EST(0.60, SRC_ASSUME_FA),           \
    .attn_mbu = EST(0.67, SRC_ASSUME_KV), .tile_m = FIG(64, SRC_WGMMA), .layer_us = EST(20, SRC_LAYER_US),             \
    .step_ms = EST(5, SRC_ASSUME_STEP), .link_alpha_us = EST(10, SRC_ALPHA), .mem_util = FIG(0.9, SRC_MEMUTIL)
#define EFF_GPU(mfu_, attn_)                                                                                           \
    .mfu = EST(mfu_, SRC_ASSUME_MFU), .mbu = EST(0.80, SRC_ASSUME_BW), .attn_mfu = EST(attn_, SRC_ASSUME_FA),          \
    .attn_mbu = EST(0.67, SRC_ASSUME_KV), .tile_m = EST(64, SRC_ASSUME_TILE), .layer_us = EST(20, SRC_LAYER_US),       \
    .step_ms = EST(5, SRC_ASSUME_STEP), .link_alpha_us = EST(10, SRC_ALPHA), .mem_util = FIG(0.9, SRC_MEMUTIL)
#define EFF_TPU(tile_, tile_src)                                                                                       \
    .mfu = EST(0.60, SRC_ASSUME_MFU), .mbu = EST(0.80, SRC_ASSUME_BW), .attn_mfu = EST(0.50, SRC_ASSUME_FA),           \
    .attn_mbu = EST(0.67, SRC_ASSUME_KV), .tile_m = FIG(tile_, tile_src), .layer_us = EST(10, SRC_LAYER_US),           \
    .step_ms = EST(5, SRC_ASSUME_STEP), .link_alpha_us = EST(10, SRC_ALPHA), .mem_util = EST(0.9, SRC_MEMUTIL)
#define EFF_ASCEND                                                                                                     \
    .mfu = EST(0.50, SRC_ASSUME_MFU), .mbu = EST(0.70, SRC_ASSUME_BW), .attn_mfu = EST(0.45, SRC_ASSUME_FA),           \
    .attn_mbu = EST(0.60, SRC_ASSUME_KV), .tile_m = FIG(16, SRC_CUBE), .layer_us = EST(30, SRC_LAYER_US),              \
    .step_ms = EST(5, SRC_ASSUME_STEP), .link_alpha_us = EST(15, SRC_ALPHA), .mem_util = EST(0.9, SRC_MEMUTIL)

static const struct ty_sim_chip builtin[] = {
    {
        .name = "ppu-810e",
        .desc = "T-Head Zhenwu 810E PPU (GPGPU)",
        .kind = TY_SIM_CHIP_GPU,
        .mem_gb = FIG(96, SRC_PPU "; 96 GB HBM2e"),
        .mem_bw_gbs = EST(2600, "est.: not public. 96 GB of HBM2e is six 16 GB stacks; HBM2e runs 3.2-3.6 Gb/s per "
                                "pin on 1024 pins, 410-460 GB/s a stack, so 2.46-2.76 TB/s. 2.6 TB/s sits above the "
                                "A800 (2.04) as the positioning says; HBM2e cannot reach the H20's 4.0 TB/s"),
        .bf16_tflops = EST(119, "est.: not public. China Unicom Qinghai contract: 16,384 cards for 1,945 P (precision "
                                "unknown) = 118.7 TFLOPS per card; consistent with 'beats A800 (312 nominal, but "
                                "export-capped parts), on a par with H20 (148)'. A rough estimate"),
        .fp8_tflops = EST(0, "est.: no FP8 figure is published; treated as absent (FP8 weights computed in BF16)"),
        .int8_tops = EST(238, "est.: 2x the BF16 estimate, the ratio of every tensor-core GPU in this catalogue"),
        .link_name = "ICN",
        .link_gbs = FIG(700, SRC_PPU "; ICN 700 GB/s over 7 ports (read as the per-chip aggregate)"),
        .host_link_name = "PCIe 5.0 x16",
        .host_gbs = FIG(64, SRC_PPU "; " SRC_PCIE5),
        .tdp_w = FIG(400, SRC_PPU "; about 400 W"),
        .price_hr = EST(1.0, SRC_PRICE),
        .node_chips = 8, /* 7 ICN ports: a full mesh of 8 cards */
        .mfu = EST(0.60, "est.: no measurement; a CUDA-like GPGPU assumed below the H20's measured 0.90 until "
                         "calibrated"),
        .mbu = EST(0.75, "est.: no measurement; HBM2e part assumed slightly below the H20 figure (0.8)"),
        .attn_mfu = EST(0.55, SRC_ASSUME_FA),
        .attn_mbu = EST(0.60, "est.: no measurement; below the H20 FlashInfer figure (0.67)"),
        .tile_m = EST(64, SRC_ASSUME_TILE),
        .layer_us = EST(20, SRC_LAYER_US),
        .step_ms = EST(5, SRC_ASSUME_STEP),
        .link_alpha_us = EST(10, SRC_ALPHA),
        .mem_util = EST(0.9, SRC_MEMUTIL),
    },
    {
        .name = "h20",
        .desc = "NVIDIA H20 96GB (HGX)",
        .kind = TY_SIM_CHIP_GPU,
        .mem_gb = FIG(96, SRC_H20 "; 96 GB HBM3"),
        .mem_bw_gbs = FIG(4000, SRC_H20),
        .bf16_tflops = FIG(148, SRC_H20 "; dense"),
        .fp8_tflops = FIG(296, SRC_H20 "; dense"),
        .int8_tops = FIG(296, SRC_H20 "; dense"),
        .link_name = "NVLink4",
        .link_gbs = FIG(900, SRC_H20),
        .host_link_name = "PCIe 5.0 x16",
        .host_gbs = FIG(64, SRC_PCIE5),
        .tdp_w = FIG(400, SRC_H20 "; one chart says 550 W"),
        .price_hr = EST(1.2, SRC_PRICE),
        .node_chips = 8,
        EFF_H20,
    },
    {
        .name = "a800-sxm",
        .desc = "NVIDIA A800 SXM4 80GB",
        .kind = TY_SIM_CHIP_GPU,
        .mem_gb = FIG(80, SRC_A800 "; HBM2e"),
        .mem_bw_gbs = FIG(2039, SRC_A800),
        .bf16_tflops = FIG(312, SRC_A800 "; dense"),
        .fp8_tflops = FIG(0, SRC_NOFP8),
        .int8_tops = FIG(624, SRC_A800 "; dense"),
        .link_name = "NVLink3 (400 GB/s)",
        .link_gbs = FIG(400, SRC_A800 "; NVLink capped at 400 GB/s"),
        .host_link_name = "PCIe 4.0 x16",
        .host_gbs = FIG(32, SRC_PCIE4),
        .tdp_w = FIG(400, SRC_A800),
        .price_hr = EST(1.0, SRC_PRICE),
        .node_chips = 8,
        EFF_GPU(0.70, 0.55),
    },
    {
        .name = "a800-pcie",
        .desc = "NVIDIA A800 PCIe 80GB",
        .kind = TY_SIM_CHIP_GPU,
        .mem_gb = FIG(80, SRC_A800 "; HBM2e"),
        .mem_bw_gbs = FIG(1935, SRC_A800 " (PCIe)"),
        .bf16_tflops = FIG(312, SRC_A800 " (PCIe); dense"),
        .fp8_tflops = FIG(0, SRC_NOFP8),
        .int8_tops = FIG(624, SRC_A800 " (PCIe); dense"),
        .link_name = "NVLink bridge",
        .link_gbs = FIG(400, SRC_A800 " (PCIe); NVLink bridge pairs two cards; other pairs talk over PCIe"),
        .host_link_name = "PCIe 4.0 x16",
        .host_gbs = FIG(32, SRC_PCIE4),
        .tdp_w = FIG(300, SRC_A800 " (PCIe)"),
        .price_hr = EST(0.9, SRC_PRICE),
        .node_chips = 2, /* the NVLink domain is a bridged pair */
        EFF_GPU(0.70, 0.55),
    },
    {
        .name = "a100",
        .desc = "NVIDIA A100 SXM4 80GB",
        .kind = TY_SIM_CHIP_GPU,
        .mem_gb = FIG(80, SRC_A100 "; HBM2e"),
        .mem_bw_gbs = FIG(2039, SRC_A100),
        .bf16_tflops = FIG(312, SRC_A100 "; dense"),
        .fp8_tflops = FIG(0, SRC_NOFP8),
        .int8_tops = FIG(624, SRC_A100 "; dense"),
        .link_name = "NVLink3",
        .link_gbs = FIG(600, SRC_A100),
        .host_link_name = "PCIe 4.0 x16",
        .host_gbs = FIG(32, SRC_PCIE4),
        .tdp_w = FIG(400, SRC_A100),
        .price_hr = EST(1.3, SRC_PRICE),
        .node_chips = 8,
        EFF_GPU(0.70, 0.55),
    },
    {
        .name = "h100",
        .desc = "NVIDIA H100 SXM5 80GB",
        .kind = TY_SIM_CHIP_GPU,
        .mem_gb = FIG(80, SRC_H100 "; HBM3"),
        .mem_bw_gbs = FIG(3350, SRC_H100),
        .bf16_tflops = FIG(989, SRC_H100 "; dense"),
        .fp8_tflops = FIG(1979, SRC_H100 "; dense"),
        .int8_tops = FIG(1979, SRC_H100 "; dense"),
        .link_name = "NVLink4",
        .link_gbs = FIG(900, SRC_H100),
        .host_link_name = "PCIe 5.0 x16",
        .host_gbs = FIG(64, SRC_PCIE5),
        .tdp_w = FIG(700, SRC_H100),
        .price_hr = EST(2.5, SRC_PRICE),
        .node_chips = 8,
        EFF_HOPPER,
    },
    {
        .name = "h200",
        .desc = "NVIDIA H200 SXM 141GB",
        .kind = TY_SIM_CHIP_GPU,
        .mem_gb = FIG(141, SRC_H200 "; HBM3e"),
        .mem_bw_gbs = FIG(4800, SRC_H200),
        .bf16_tflops = FIG(989, SRC_H200 "; dense"),
        .fp8_tflops = FIG(1979, SRC_H200 "; dense"),
        .int8_tops = FIG(1979, SRC_H200 "; dense"),
        .link_name = "NVLink4",
        .link_gbs = FIG(900, SRC_H200),
        .host_link_name = "PCIe 5.0 x16",
        .host_gbs = FIG(64, SRC_PCIE5),
        .tdp_w = FIG(700, SRC_H200),
        .price_hr = EST(3.5, SRC_PRICE),
        .node_chips = 8,
        EFF_HOPPER,
    },
    {
        .name = "b200",
        .desc = "NVIDIA B200 180GB (HGX)",
        .kind = TY_SIM_CHIP_GPU,
        .mem_gb = FIG(180, SRC_B200 "; HBM3e"),
        .mem_bw_gbs = FIG(8000, SRC_B200),
        .bf16_tflops = FIG(2250, SRC_B200 "; dense"),
        .fp8_tflops = FIG(4500, SRC_B200 "; dense (FP4 9,000)"),
        .int8_tops = FIG(4500, SRC_B200 "; dense"),
        .link_name = "NVLink5",
        .link_gbs = FIG(1800, SRC_B200),
        .host_link_name = "PCIe 5.0 x16",
        .host_gbs = EST(64, "est.: " SRC_PCIE5 " (the HGX board's host link is not stated in our sources)"),
        .tdp_w = FIG(1000, SRC_B200),
        .price_hr = EST(5.0, SRC_PRICE),
        .node_chips = 8,
        EFF_GPU(0.70, 0.60),
    },
    {
        .name = "tpu-v5e",
        .desc = "Google TPU v5e",
        .kind = TY_SIM_CHIP_TPU,
        .mem_gb = FIG(16, SRC_V5E "; HBM2"),
        .mem_bw_gbs = FIG(819, SRC_V5E),
        .bf16_tflops = FIG(197, SRC_V5E),
        .fp8_tflops = FIG(0, SRC_NOFP8),
        .int8_tops = FIG(393, SRC_V5E),
        .link_name = "ICI (2D torus)",
        .link_gbs = FIG(400, SRC_V5E "; ICI 400 GB/s bidirectional"),
        .host_link_name = "PCIe (host)",
        .host_gbs = FIG(0, SRC_NP),
        .tdp_w = FIG(0, SRC_NP),
        .price_hr = FIG(1.20, SRC_GCP_PRICE),
        .node_chips = 256, /* one ICI slice */
        EFF_TPU(128, SRC_MXU128),
    },
    {
        .name = "tpu-v5p",
        .desc = "Google TPU v5p",
        .kind = TY_SIM_CHIP_TPU,
        .mem_gb = FIG(95, SRC_V5P "; 95 GiB HBM2e"),
        .mem_bw_gbs = FIG(2765, SRC_V5P),
        .bf16_tflops = FIG(459, SRC_V5P),
        .fp8_tflops = FIG(0, SRC_NOFP8),
        .int8_tops = FIG(918, SRC_V5P),
        .link_name = "ICI (3D torus)",
        .link_gbs = FIG(1200, SRC_V5P "; ICI 1,200 GB/s bidirectional"),
        .host_link_name = "PCIe (host)",
        .host_gbs = FIG(0, SRC_NP),
        .tdp_w = FIG(0, SRC_NP),
        .price_hr = FIG(4.20, SRC_GCP_PRICE),
        .node_chips = 8960, /* one pod */
        EFF_TPU(128, SRC_MXU128),
    },
    {
        .name = "tpu-v6e",
        .desc = "Google TPU v6e (Trillium)",
        .kind = TY_SIM_CHIP_TPU,
        .mem_gb = FIG(32, SRC_V6E),
        .mem_bw_gbs = FIG(1638, SRC_V6E),
        .bf16_tflops = FIG(918, SRC_V6E),
        .fp8_tflops = FIG(0, SRC_NOFP8),
        .int8_tops = FIG(1836, SRC_V6E),
        .link_name = "ICI (2D torus)",
        .link_gbs = FIG(800, SRC_V6E "; ICI 800 GB/s bidirectional"),
        .host_link_name = "PCIe (host)",
        .host_gbs = FIG(0, SRC_NP),
        .tdp_w = FIG(0, SRC_NP),
        .price_hr = FIG(2.70, SRC_GCP_PRICE),
        .node_chips = 256,
        EFF_TPU(256, SRC_MXU256),
    },
    {
        .name = "tpu7x",
        .desc = "Google TPU7x (Ironwood)",
        .kind = TY_SIM_CHIP_TPU,
        .mem_gb = FIG(192, SRC_TPU7X "; 192 GiB HBM3e"),
        .mem_bw_gbs = FIG(7380, SRC_TPU7X),
        .bf16_tflops = FIG(2307, SRC_TPU7X),
        .fp8_tflops = FIG(4614, SRC_TPU7X),
        .int8_tops = FIG(0, SRC_NP),
        .link_name = "ICI (3D torus)",
        .link_gbs = FIG(1200, SRC_TPU7X "; ICI 1,200 GB/s bidirectional; 9,216 chips per pod"),
        .host_link_name = "PCIe (host)",
        .host_gbs = FIG(0, SRC_NP),
        .tdp_w = FIG(0, SRC_NP),
        .price_hr = EST(5.0, SRC_PRICE),
        .node_chips = 9216,
        EFF_TPU(256, SRC_MXU256),
    },
    {
        .name = "ascend-910b",
        .desc = "Huawei Ascend 910B (B1-B4)",
        .kind = TY_SIM_CHIP_NPU,
        .mem_gb = FIG(64, SRC_NOTES "; 64 GB HBM2e (910B4: 32 GB)"),
        .mem_bw_gbs = EST(1600, "est.: 1.2-1.6 TB/s depending on SKU (" SRC_NOTES "); the B1/B2 figure"),
        .bf16_tflops = EST(313, "est.: FP16 ~313-376 TFLOPS depending on SKU (" SRC_NOTES "); the low end"),
        .fp8_tflops = FIG(0, SRC_NOFP8),
        .int8_tops = EST(626, "est.: ~2x FP16 (" SRC_NOTES ")"),
        .link_name = "HCCS",
        .link_gbs = EST(392, "est.: HCCS 392 GB/s is cited but unverified (" SRC_NOTES ")"),
        .host_link_name = "PCIe 5.0 x16",
        .host_gbs = EST(64, "est.: " SRC_PCIE5),
        .tdp_w = EST(400, "est.: 310-400 W depending on SKU (" SRC_NOTES ")"),
        .price_hr = EST(1.0, SRC_PRICE),
        .node_chips = 8,
        EFF_ASCEND,
    },
    {
        .name = "ascend-910c",
        .desc = "Huawei Ascend 910C (two dies)",
        .kind = TY_SIM_CHIP_NPU,
        .mem_gb = EST(128, "est.: press reports"),
        .mem_bw_gbs = EST(3200, "est.: press reports"),
        .bf16_tflops = FIG(752, SRC_910C),
        .fp8_tflops = FIG(0, SRC_NOFP8),
        .int8_tops = EST(1504, "est.: 2x BF16, not published"),
        .link_name = "UB (CloudMatrix)",
        .link_gbs = EST(784, "est.: UB 784 GB/s from a roadmap slide"),
        .host_link_name = "PCIe 5.0 x16",
        .host_gbs = EST(64, "est.: " SRC_PCIE5),
        .tdp_w = FIG(0, SRC_NP),
        .price_hr = EST(2.0, SRC_PRICE),
        .node_chips = 384, /* CloudMatrix384 supernode */
        EFF_ASCEND,
    },
    {
        .name = "mi300x",
        .desc = "AMD Instinct MI300X 192GB",
        .kind = TY_SIM_CHIP_GPU,
        .mem_gb = FIG(192, SRC_MI300X "; HBM3"),
        .mem_bw_gbs = FIG(5300, SRC_MI300X),
        .bf16_tflops = FIG(1307, SRC_MI300X "; dense"),
        .fp8_tflops = FIG(2615, SRC_MI300X "; dense"),
        .int8_tops = FIG(2615, SRC_MI300X "; dense"),
        .link_name = "Infinity Fabric",
        .link_gbs = FIG(896, SRC_MI300X),
        .host_link_name = "PCIe 5.0 x16",
        .host_gbs = FIG(64, SRC_PCIE5),
        .tdp_w = FIG(750, SRC_MI300X),
        .price_hr = EST(2.5, SRC_PRICE),
        .node_chips = 8,
        EFF_GPU(0.60, 0.50),
    },
};

#define N_BUILTIN ((int)(sizeof builtin / sizeof builtin[0]))

/* ==== Figure fields, by name (JSON in and out) ==== */

static const struct {
    const char *key;
    size_t off;
    const char *unit;
} fig_fields[] = {
    {"mem_gb", offsetof(struct ty_sim_chip, mem_gb), "GiB"},
    {"mem_bw_gbs", offsetof(struct ty_sim_chip, mem_bw_gbs), "GB/s"},
    {"bf16_tflops", offsetof(struct ty_sim_chip, bf16_tflops), "TFLOPS"},
    {"fp8_tflops", offsetof(struct ty_sim_chip, fp8_tflops), "TFLOPS"},
    {"int8_tops", offsetof(struct ty_sim_chip, int8_tops), "TOPS"},
    {"link_gbs", offsetof(struct ty_sim_chip, link_gbs), "GB/s"},
    {"host_gbs", offsetof(struct ty_sim_chip, host_gbs), "GB/s"},
    {"tdp_w", offsetof(struct ty_sim_chip, tdp_w), "W"},
    {"price_hr", offsetof(struct ty_sim_chip, price_hr), "USD/h"},
    {"mfu", offsetof(struct ty_sim_chip, mfu), ""},
    {"mbu", offsetof(struct ty_sim_chip, mbu), ""},
    {"attn_mfu", offsetof(struct ty_sim_chip, attn_mfu), ""},
    {"attn_mbu", offsetof(struct ty_sim_chip, attn_mbu), ""},
    {"tile_m", offsetof(struct ty_sim_chip, tile_m), "rows"},
    {"layer_us", offsetof(struct ty_sim_chip, layer_us), "us"},
    {"step_ms", offsetof(struct ty_sim_chip, step_ms), "ms"},
    {"link_alpha_us", offsetof(struct ty_sim_chip, link_alpha_us), "us"},
    {"mem_util", offsetof(struct ty_sim_chip, mem_util), ""},
};
#define N_FIG_FIELDS ((int)(sizeof fig_fields / sizeof fig_fields[0]))

static struct ty_sim_fig *fig_at(struct ty_sim_chip *c, int i) {
    return (struct ty_sim_fig *)((char *)c + fig_fields[i].off);
}
static const struct ty_sim_fig *fig_at_c(const struct ty_sim_chip *c, int i) {
    return (const struct ty_sim_fig *)((const char *)c + fig_fields[i].off);
}

static const char *const kind_names[TY_SIM_CHIP_KIND_COUNT] = {"gpu", "tpu", "npu", "cpu"};

/* ==== Catalogue ==== */

struct ty_sim_catalog {
    struct ty_sim_chip *chips; /* (n) */
    int n, cap;
    char **strings; /* (n_strings) owned strings the chips point at */
    int n_strings, cap_strings;
    struct ty_sim_host_bench host;
    bool host_measured;
};

static const char *own(struct ty_sim_catalog *cat, const char *s) {
    if (!s) return NULL;
    if (cat->n_strings == cat->cap_strings) {
        int ncap = cat->cap_strings ? cat->cap_strings * 2 : 32;
        char **ns = ty__realloc(cat->strings, (size_t)ncap * sizeof *ns);
        if (!ns) return NULL;
        cat->strings = ns;
        cat->cap_strings = ncap;
    }
    char *d = ty__strdup(s);
    if (!d) return NULL;
    cat->strings[cat->n_strings++] = d;
    return d;
}

static const char *ownf(struct ty_sim_catalog *cat, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *ownf(struct ty_sim_catalog *cat, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return own(cat, buf);
}

static enum ty_status push_chip(struct ty_sim_catalog *cat, const struct ty_sim_chip *c) {
    if (cat->n == cat->cap) {
        int ncap = cat->cap ? cat->cap * 2 : 32;
        struct ty_sim_chip *nc = ty__realloc(cat->chips, (size_t)ncap * sizeof *nc);
        if (!nc) return ty__error(TY_ERR_NO_MEMORY, "device catalogue: out of memory");
        cat->chips = nc;
        cat->cap = ncap;
    }
    cat->chips[cat->n++] = *c;
    return TY_OK;
}

/* The host CPU as a chip, from its measured figures. */
static enum ty_status host_chip(struct ty_sim_catalog *cat, struct ty_sim_chip *h) {
    const struct ty_sim_host_bench *hb = &cat->host;
    memset(h, 0, sizeof *h);
    h->name = "host";
    h->kind = TY_SIM_CHIP_CPU;
    h->link_name = "none";
    h->host_link_name = "memory bus";
    h->node_chips = 1;
    if (cat->host_measured) {
        h->desc = ownf(cat, "this machine's CPU (%d cores, %s path, measured at start-up)", hb->n_threads, hb->isa);
        h->mem_gb = (struct ty_sim_fig){hb->mem_gb, "measured: physical memory (sysconf)", false};
        h->mem_bw_gbs = (struct ty_sim_fig){hb->read_bw_gbs,
                                            ownf(cat,
                                                 "measured (chip/cpu/roofline.c): best read bandwidth with 1 or %d "
                                                 "threads (1 thread: %.1f GB/s)",
                                                 hb->n_threads, hb->read_bw_1t_gbs),
                                            false};
        h->bf16_tflops = (struct ty_sim_fig){hb->fma_gflops / 1e3,
                                             ownf(cat,
                                                  "measured (chip/cpu/roofline.c): f32 FMA rate, best of 1 and %d "
                                                  "threads (1 thread: %.1f GFLOP/s); the engine computes in f32",
                                                  hb->n_threads, hb->fma_gflops_1t),
                                             false};
        h->int8_tops = (struct ty_sim_fig){hb->int8_gops / 1e3,
                                           ownf(cat,
                                                "measured (chip/cpu/roofline.c): integer dot-product rate of the "
                                                "quantised GEMM's instruction on the %s path",
                                                hb->isa),
                                           false};
    } else {
        h->desc = "this machine's CPU (not measured)";
        h->mem_gb = (struct ty_sim_fig){0, "not measured (run without --no-measure)", false};
        h->mem_bw_gbs = h->mem_gb;
        h->bf16_tflops = h->mem_gb;
        h->int8_tops = h->mem_gb;
    }
    h->fp8_tflops = (struct ty_sim_fig){0, "no FP8 units: computed in f32", false};
    h->link_gbs = (struct ty_sim_fig){0, "one chip: no chip-to-chip link", false};
    h->host_gbs = (struct ty_sim_fig){0, "the CPU is the host", false};
    h->tdp_w = (struct ty_sim_fig){100, "assumption: a server CPU socket's power under load", true};
    h->price_hr = (struct ty_sim_fig){0.05, "assumption: a small cloud VM's hourly rate", true};
    h->mfu = (struct ty_sim_fig){TY_SIM_HOST_MFU,
                                 "assumption until `tongyun bench` calibrates it: share of the measured FMA "
                                 "rate the engine's matrix kernels reach",
                                 true};
    h->mbu = (struct ty_sim_fig){TY_SIM_HOST_MBU,
                                 "assumption until `tongyun bench` calibrates it: share of the measured read "
                                 "bandwidth a matrix-vector kernel streams",
                                 true};
    h->attn_mfu = (struct ty_sim_fig){TY_SIM_HOST_ATTN_MFU, "assumption: scalar-heavy attention on CPU", true};
    h->attn_mbu = (struct ty_sim_fig){TY_SIM_HOST_MBU, "assumption: as mbu", true};
    h->tile_m = (struct ty_sim_fig){1, "CPU kernels have no tile padding worth modelling", false};
    h->layer_us = (struct ty_sim_fig){TY_SIM_HOST_LAYER_US,
                                      "est.: thread-pool wake-ups, ~1 us for each of ~10 ops per layer", true};
    h->step_ms = (struct ty_sim_fig){0, "no separate scheduler cost in the CPU engine", true};
    h->link_alpha_us = (struct ty_sim_fig){0, "one chip", false};
    h->mem_util = (struct ty_sim_fig){0.8, "assumption: leave a fifth of the memory to the OS", true};
    return TY_OK;
}

enum ty_status ty__sim_catalog_init(bool measure_host, struct ty_sim_catalog **out) {
    *out = NULL;
    struct ty_sim_catalog *cat = ty__calloc(1, sizeof *cat);
    if (!cat) return ty__error(TY_ERR_NO_MEMORY, "device catalogue: out of memory");
    enum ty_status st = TY_OK;
    for (int i = 0; i < N_BUILTIN && st == TY_OK; i++) st = push_chip(cat, &builtin[i]);
    if (st == TY_OK && measure_host) {
        st = ty__sim_host_measure(0, &cat->host);
        if (st == TY_OK) cat->host_measured = true;
    }
    struct ty_sim_chip h;
    if (st == TY_OK) st = host_chip(cat, &h);
    if (st == TY_OK) st = push_chip(cat, &h);
    if (st != TY_OK) {
        ty__sim_catalog_free(cat);
        return st;
    }
    *out = cat;
    return TY_OK;
}

void ty__sim_catalog_free(struct ty_sim_catalog *cat) {
    if (!cat) return;
    for (int i = 0; i < cat->n_strings; i++) ty_free(cat->strings[i]);
    ty_free(cat->strings);
    ty_free(cat->chips);
    ty_free(cat);
}

int ty__sim_catalog_count(const struct ty_sim_catalog *cat) {
    return cat->n;
}
const struct ty_sim_host_bench *ty__sim_catalog_host(const struct ty_sim_catalog *cat) {
    return cat->host_measured ? &cat->host : NULL;
}
const struct ty_sim_chip *ty__sim_catalog_at(const struct ty_sim_catalog *cat, int i) {
    return i >= 0 && i < cat->n ? &cat->chips[i] : NULL;
}

static const struct {
    const char *alias, *name;
} aliases[] = {
    {"810e", "ppu-810e"}, {"zhenwu-810e", "ppu-810e"}, {"zhenwu", "ppu-810e"},  {"ppu", "ppu-810e"},
    {"a800", "a800-sxm"}, {"a100-sxm", "a100"},        {"h100-sxm", "h100"},    {"h200-sxm", "h200"},
    {"v5e", "tpu-v5e"},   {"v5p", "tpu-v5p"},          {"v6e", "tpu-v6e"},      {"trillium", "tpu-v6e"},
    {"tpu-v7", "tpu7x"},  {"ironwood", "tpu7x"},       {"910b", "ascend-910b"}, {"910c", "ascend-910c"},
    {"cpu", "host"},
};

enum ty_status ty__sim_catalog_find(const struct ty_sim_catalog *cat, const char *name,
                                    const struct ty_sim_chip **out) {
    *out = NULL;
    const char *want = name;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcasecmp(name, aliases[i].alias)) want = aliases[i].name;
    /* Later entries win, so a chip from a user file replaces a built-in one of the same name. */
    for (int i = cat->n - 1; i >= 0; i--) {
        if (!strcasecmp(cat->chips[i].name, want)) {
            *out = &cat->chips[i];
            return TY_OK;
        }
    }
    struct ty_buf b = {0};
    for (int i = 0; i < cat->n; i++) ty__buf_printf(&b, "%s%s", i ? ", " : "", cat->chips[i].name);
    enum ty_status st = ty__error(TY_ERR_NOT_FOUND, "unknown chip '%s'; known chips: %s (see `tongyun devices`)", name,
                                  b.data ? b.data : "");
    ty__buf_free(&b);
    return st;
}

/* ==== JSON ==== */

static json_t *fig_json(const struct ty_sim_fig *f, const char *unit) {
    json_t *o = json_object();
    json_object_set_new(o, "value", isfinite(f->v) ? json_real(f->v) : json_null());
    if (unit && unit[0]) json_object_set_new(o, "unit", json_string(unit));
    json_object_set_new(o, "source", json_string(f->src ? f->src : ""));
    json_object_set_new(o, "estimate", json_boolean(f->est));
    return o;
}

json_t *ty__sim_chip_json(const struct ty_sim_chip *c) {
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(c->name));
    json_object_set_new(o, "desc", json_string(c->desc ? c->desc : ""));
    json_object_set_new(o, "kind", json_string(kind_names[c->kind]));
    json_object_set_new(o, "link_name", json_string(c->link_name ? c->link_name : ""));
    json_object_set_new(o, "host_link_name", json_string(c->host_link_name ? c->host_link_name : ""));
    json_object_set_new(o, "node_chips", json_integer(c->node_chips));
    for (int i = 0; i < N_FIG_FIELDS; i++)
        json_object_set_new(o, fig_fields[i].key, fig_json(fig_at_c(c, i), fig_fields[i].unit));
    return o;
}

/* ==== Chips from a file ==== */

/* A generic GPU-like default for efficiency fields a file leaves out. */
static const struct ty_sim_chip file_defaults = {EFF_GPU(0.70, 0.55)};

static enum ty_status load_fig(struct ty_sim_catalog *cat, const char *path, const char *chip, const char *key,
                               json_t *v, struct ty_sim_fig *out) {
    if (json_is_number(v)) {
        *out = (struct ty_sim_fig){json_number_value(v), ownf(cat, "user file %s", path), false};
    } else if (json_is_object(v)) {
        json_t *val = json_object_get(v, "value");
        json_t *src = json_object_get(v, "source");
        json_t *est = json_object_get(v, "estimate");
        if (!json_is_number(val))
            return ty__error(TY_ERR_FORMAT, "%s: chip '%s': field '%s' needs a numeric \"value\"", path, chip, key);
        if (src && !json_is_string(src))
            return ty__error(TY_ERR_FORMAT, "%s: chip '%s': field '%s': \"source\" must be a string", path, chip, key);
        *out = (struct ty_sim_fig){json_number_value(val),
                                   src ? ownf(cat, "%s (user file %s)", json_string_value(src), path)
                                       : ownf(cat, "user file %s", path),
                                   json_is_true(est)};
    } else {
        return ty__error(TY_ERR_FORMAT, "%s: chip '%s': field '%s' must be a number or {\"value\": N, \"source\": S}",
                         path, chip, key);
    }
    if (!isfinite(out->v) || out->v < 0)
        return ty__error(TY_ERR_FORMAT, "%s: chip '%s': field '%s' must be a finite number >= 0", path, chip, key);
    return TY_OK;
}

static enum ty_status load_chip(struct ty_sim_catalog *cat, const char *path, json_t *o, int idx) {
    if (!json_is_object(o)) return ty__error(TY_ERR_FORMAT, "%s: chip #%d is not a JSON object", path, idx + 1);
    json_t *jn = json_object_get(o, "name");
    if (!json_is_string(jn) || !json_string_length(jn))
        return ty__error(TY_ERR_FORMAT, "%s: chip #%d needs a \"name\" string", path, idx + 1);
    const char *name = json_string_value(jn);
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return ty__error(TY_ERR_FORMAT, "%s: chip name '%s' may use only letters, digits, '-', '_' and '.'", path,
                             name);
    struct ty_sim_chip c = file_defaults;
    for (int i = 0; i < N_FIG_FIELDS; i++) {
        struct ty_sim_fig *f = fig_at(&c, i);
        if (f->src) f->src = ownf(cat, "default for chips from files (%s)", f->src);
    }
    c.name = own(cat, name);
    json_t *jd = json_object_get(o, "desc");
    c.desc = own(cat, json_is_string(jd) ? json_string_value(jd) : name);
    c.kind = TY_SIM_CHIP_GPU;
    json_t *jk = json_object_get(o, "kind");
    if (jk) {
        int k = -1;
        for (int i = 0; i < TY_SIM_CHIP_KIND_COUNT; i++)
            if (json_is_string(jk) && !strcasecmp(json_string_value(jk), kind_names[i])) k = i;
        if (k < 0) return ty__error(TY_ERR_FORMAT, "%s: chip '%s': \"kind\" must be gpu, tpu, npu or cpu", path, name);
        c.kind = (enum ty_sim_chip_kind)k;
    }
    json_t *jl = json_object_get(o, "link_name");
    c.link_name = own(cat, json_is_string(jl) ? json_string_value(jl) : "link");
    json_t *jh = json_object_get(o, "host_link_name");
    c.host_link_name = own(cat, json_is_string(jh) ? json_string_value(jh) : "PCIe");
    c.node_chips = 8;
    json_t *jnc = json_object_get(o, "node_chips");
    if (jnc) {
        if (!json_is_integer(jnc) || json_integer_value(jnc) < 1 || json_integer_value(jnc) > 1000000)
            return ty__error(TY_ERR_FORMAT, "%s: chip '%s': \"node_chips\" must be an integer in [1, 1000000]", path,
                             name);
        c.node_chips = (int)json_integer_value(jnc);
    }
    for (int i = 0; i < N_FIG_FIELDS; i++) {
        json_t *v = json_object_get(o, fig_fields[i].key);
        if (v) TY_TRY(load_fig(cat, path, name, fig_fields[i].key, v, fig_at(&c, i)));
    }
    static const char *const required[] = {"mem_gb", "mem_bw_gbs", "bf16_tflops"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!json_object_get(o, required[i]))
            return ty__error(TY_ERR_FORMAT, "%s: chip '%s' lacks \"%s\" (required: mem_gb, mem_bw_gbs, bf16_tflops)",
                             path, name, required[i]);
    if (c.mem_gb.v <= 0 || c.mem_bw_gbs.v <= 0 || c.bf16_tflops.v <= 0)
        return ty__error(TY_ERR_FORMAT, "%s: chip '%s': mem_gb, mem_bw_gbs and bf16_tflops must be > 0", path, name);
    static const char *const fractions[] = {"mfu", "mbu", "attn_mfu", "attn_mbu", "mem_util"};
    for (size_t i = 0; i < sizeof fractions / sizeof fractions[0]; i++) {
        json_t *v = json_object_get(o, fractions[i]);
        double x = json_is_object(v) ? json_number_value(json_object_get(v, "value")) : json_number_value(v);
        if (v && !(x > 0 && x <= 1))
            return ty__error(TY_ERR_FORMAT, "%s: chip '%s': \"%s\" is a fraction in (0, 1]", path, name, fractions[i]);
    }
    if (c.tile_m.v < 1) c.tile_m.v = 1;
    if (!c.name || !c.desc || !c.link_name || !c.host_link_name)
        return ty__error(TY_ERR_NO_MEMORY, "%s: out of memory", path);
    return push_chip(cat, &c);
}

enum ty_status ty__sim_catalog_load(struct ty_sim_catalog *cat, const char *path) {
    char *text = NULL;
    size_t size = 0;
    TY_TRY(ty__file_read(path, 16u << 20, &text, &size));
    json_error_t err;
    json_t *root = json_loadb(text, size, 0, &err);
    ty_free(text);
    if (!root)
        return ty__error(TY_ERR_FORMAT, "%s: line %d column %d: %s; expected JSON with a \"chips\" array", path,
                         err.line, err.column, err.text);
    json_t *arr = json_is_array(root) ? root : json_object_get(root, "chips");
    if (!json_is_array(arr)) {
        json_decref(root);
        return ty__error(TY_ERR_FORMAT, "%s: expected an array of chips or an object with a \"chips\" array", path);
    }
    enum ty_status st = TY_OK;
    int before = cat->n;
    for (size_t i = 0; i < json_array_size(arr) && st == TY_OK; i++)
        st = load_chip(cat, path, json_array_get(arr, i), (int)i);
    json_decref(root);
    if (st != TY_OK) cat->n = before; /* all or nothing; the owned strings are freed with the catalogue */
    return st;
}
