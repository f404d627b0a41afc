/*
 * bench_kernels.c - the CPU kernel library against this machine's roofline, measured in the same run:
 *
 *   roofline   read bandwidth and the peak of the f32 FMA / integer dot / bf16 dot instructions (roofline.h),
 *              for each thread count;
 *   ffn_down   gemv of one Qwen2.5-0.5B FFN down projection (896 rows of 4864), the same matrix again and again: the
 *              kernel's own speed once the matrix sits in cache (GB/s of weight bytes; no roofline applies);
 *   model      gemv over every weight matrix of Qwen2.5-0.5B once, as one decode step reads them (24 layers of q, k,
 *              v, o, gate, up, down, then the 151936-row output matrix: 494M weights), each matrix split by rows
 *              across the thread pool: GB/s of weight bytes, the GB/s of plain reads of the same memory with the same
 *              split, passes of the two alternating (the roofline of that memory in the same seconds: on the 2-core
 *              VM the host gives two threads ~33 or ~55 GB/s and flips between them within seconds), and the
 *              percentage;
 *   prefill    gemm of every layer matrix of the same model (the output matrix aside: a prompt computes one row of
 *              logits) with --prefill columns (tokens; a list measures each width: a short prompt's gemm runs
 *              further below the peak than a long one's, and its weights stream from memory as in the engine):
 *              GOP/s (2 per multiply-add) and the percentage of the peak of the instruction the gemm kernel is
 *              built on;
 *   attention  (with --attention N[,N...]) the fast backend's causal attention (cpu-attn.c) over a prompt of N
 *              tokens from position 0, Qwen2.5-0.5B's heads (14 query heads on 2 KV heads of 64) over an f16 cache:
 *              GFLOP/s of the exact causal count (2 per multiply-add, q.k and p.v) and the percentage of the f32 FMA
 *              peak, the roofline `tongyun bench` holds attention to; with --attention-decode N[,N...] the same
 *              for one decode step at a context of N cached tokens (the query at position N - 1), with its cache hot
 *              and from memory (24 caches attended in turn, as a 24-layer model's step reads them). The caches are
 *              head-major, as the engine's (ty__kv_cache_head_major).
 * Each weight type is run pure (rows that do not fit a K type's 256 fall back as llama.cpp does: Q4_K -> Q5_0,
 * Q5_K -> Q5_1, Q6_K -> Q8_0), plus q4_k_m, the mix `tongyun quantize q4_k_m` gives Qwen2.5-0.5B. Weights are random
 * blocks with sane scales (the kernels' speed does not depend on the values); activations are quantised once per
 * row, outside the timing.
 *
 *   bench_kernels [--types q8_0,q4_0,...|all|none] [--threads 1,2] [--seconds S] [--prefill N[,N...]]
 *                 [--layout natural|packed|both] [--isa PATH] [--attention N[,N...]]
 *                 [--attention-decode N[,N...]] [--json]
 *
 * Types with a packed layout (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, and the q4_k_m mix: Q5_0 and Q8_0 at this width) run twice
 * by default: in the file's layout and packed once beforehand as a backend would at load ("/p" in the table).
 *
 * Figures are the best repetition within the time budget, as the roofline's are.
 */
#include "base/threads.h"
#include "bench-args.h"
#include "chip/cpu/cpu-impl.h"
#include "chip/cpu/roofline.h"
#include "model/quant.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

/* ==== Random weights ==== */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Offsets of the f16 scale fields in a block (-1 ends). */
static const int *scale_fields(enum ty_type t) {
    static const int d0[] = {0, -1}, dm[] = {0, 2, -1}, q6[] = {208, -1}, none[] = {-1};
    switch (t) {
    case TY_TYPE_Q4_0:
    case TY_TYPE_Q5_0:
    case TY_TYPE_Q8_0:
        return d0;
    case TY_TYPE_Q4_1:
    case TY_TYPE_Q5_1:
    case TY_TYPE_Q4_K:
    case TY_TYPE_Q5_K:
        return dm;
    case TY_TYPE_Q6_K:
        return q6;
    default:
        return none;
    }
}

/* Random bytes, then every float finite and every scale small, so no NaN or denormal slows anything down. */
static void fill_random(enum ty_type t, uint8_t *w, size_t bytes) {
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t v = next_u64();
        memcpy(w + i, &v, 8);
    }
    const struct ty_type_traits *tt = ty__type_traits(t);
    if (t == TY_TYPE_F32) {
        for (size_t i = 0; i + 4 <= bytes; i += 4) {
            uint32_t v;
            memcpy(&v, w + i, 4);
            v = (v & 0x807fffffu) | 0x3f000000u;
            memcpy(w + i, &v, 4);
        }
    } else if (t == TY_TYPE_F16 || t == TY_TYPE_BF16) {
        uint16_t keep = t == TY_TYPE_F16 ? 0x83ff : 0x807f, exp = t == TY_TYPE_F16 ? 0x3800 : 0x3f00;
        for (size_t i = 0; i + 2 <= bytes; i += 2) {
            uint16_t v;
            memcpy(&v, w + i, 2);
            v = (uint16_t)((v & keep) | exp);
            memcpy(w + i, &v, 2);
        }
    } else {
        for (size_t b = 0; b < bytes / tt->type_size; b++)
            for (const int *o = scale_fields(t); *o >= 0; o++) {
                uint16_t h = (uint16_t)(0x2000 | (next_u64() & 0x3ff)); /* about 2^-7 */
                memcpy(w + b * tt->type_size + *o, &h, 2);
            }
    }
}

/* ==== The model ==== */

struct mat {
    const char *name;
    enum ty_type type;
    int64_t rows, n;
    size_t row_bytes;
    uint8_t *w;
    void *xq;            /* its activation row */
    bool packed;         /* w holds packed panels (ty__pack) */
    size_t panel_stride; /* bytes per panel when packed */
};

/* llama.cpp's fallback for rows a K type does not fit. */
static enum ty_type fit(enum ty_type t, int64_t n) {
    if (n % ty__type_traits(t)->block_size == 0) return t;
    switch (t) {
    case TY_TYPE_Q4_K:
        return TY_TYPE_Q5_0;
    case TY_TYPE_Q5_K:
        return TY_TYPE_Q5_1;
    case TY_TYPE_Q6_K:
        return TY_TYPE_Q8_0;
    default:
        return TY_TYPE_F16;
    }
}

#define MIX_Q4_K_M ((enum ty_type)1000) /* not a weight type: the q4_k_m mix */

/* The type of one matrix: `t`, or the q4_k_m rules (tools/cmd-quantize.c) for Qwen2.5-0.5B's 24 layers. */
static enum ty_type type_of(enum ty_type t, const char *name, int layer, int64_t n) {
    if (t != MIX_Q4_K_M) return fit(t, n);
    const int L = 24;
    bool more = layer < L / 8 || layer >= 7 * L / 8 || (layer - L / 8) % 3 == 2;
    if (!strcmp(name, "output")) return n % TY_QK_K == 0 ? TY_TYPE_Q6_K : TY_TYPE_Q8_0;
    if ((!strcmp(name, "attn_v") || !strcmp(name, "ffn_down")) && more) return fit(TY_TYPE_Q6_K, n);
    return fit(TY_TYPE_Q4_K, n);
}

static const char *act_name(enum ty_act_format a) {
    return a == TY_ACT_Q8 ? "q8" : a == TY_ACT_Q8_K ? "q8_K" : a == TY_ACT_BF16 ? "bf16" : "f32";
}

static const char *type_label(enum ty_type t) {
    return t == MIX_Q4_K_M ? "Q4_K_M" : ty_type_name(t);
}

/* All matrices of a model live in one arena on huge pages, in order, as a backend that copies or packs its weights
 * would hold them: a decode step is then one long stream. */
struct model {
    struct mat *m;
    int count;
    size_t bytes;   /* weight bytes */
    uint8_t *arena; /* the matrices' memory */
    size_t arena_size, used;
    uint8_t *tmp; /* rows before packing */
    size_t tmp_size;
};

static void *arena_take(struct model *md, size_t bytes) {
    if (md->used + bytes > md->arena_size) return NULL;
    void *p = md->arena + md->used;
    md->used += (bytes + 63) / 64 * 64;
    return p;
}

/* A random matrix from the arena; packed when `pack` and the type has a packed layout. */
static bool add_mat(const struct ty_simd *s, struct model *md, const char *name, enum ty_type t, int64_t rows,
                    int64_t n, const float *x, bool pack) {
    struct mat *m = &md->m[md->count];
    m->name = name, m->type = t, m->rows = rows, m->n = n;
    if (ty__row_size(t, n, &m->row_bytes) != TY_OK) return false;
    size_t bytes = m->row_bytes * (size_t)rows;
    m->xq = ty__malloc_aligned(ty__simd_act_row_size(s, t, n));
    if (!m->xq) return false;
    if (pack && ty__pack_supported(t) && s->t[t].gemm_packed) { /* K-quants: only on paths that read their panels */
        size_t pbytes = ty__pack_size(t, rows, n);
        if (md->tmp_size < bytes) {
            ty__free_aligned(md->tmp);
            md->tmp = ty__malloc_aligned(bytes), md->tmp_size = bytes;
        }
        m->w = arena_take(md, pbytes);
        if (!md->tmp || !m->w) return false;
        fill_random(t, md->tmp, bytes);
        ty__pack(t, rows, n, md->tmp, m->row_bytes, m->w);
        m->packed = true, m->panel_stride = ty__pack_size(t, TY_PACK_ROWS, n);
    } else {
        if (!(m->w = arena_take(md, bytes))) return false;
        fill_random(t, m->w, bytes);
    }
    ty__simd_quantize_act(s, t, x, m->xq, n);
    md->bytes += bytes;
    md->count++;
    return true;
}

static bool init_model(struct model *md, int n_mats, size_t arena_size) {
    memset(md, 0, sizeof *md);
    md->m = calloc((size_t)n_mats, sizeof *md->m);
    md->arena = ty__huge_calloc(1, arena_size);
    md->arena_size = arena_size;
    return md->m && md->arena;
}

static void free_model(struct model *md) {
    for (int i = 0; i < md->count; i++) ty__free_aligned(md->m[i].xq);
    ty__huge_free(md->arena);
    ty__free_aligned(md->tmp);
    free(md->m);
    memset(md, 0, sizeof *md);
}

/* Qwen2.5-0.5B: hidden 896, 14 heads of 64, 2 KV heads, FFN 4864, 24 layers, vocabulary 151936 (output tied to the
 * embedding, read once per token as the output matrix). */
static bool build_model(const struct ty_simd *s, enum ty_type t, const float *x, bool pack, struct model *md) {
    const int64_t d = 896, kv = 128, ff = 4864, vocab = 151936;
    /* at most 4 bytes a weight, plus alignment */
    size_t worst = (size_t)4 * (size_t)(24 * (2 * d * d + 2 * kv * d + 3 * d * ff) + vocab * d) + 169 * 64;
    if (!init_model(md, 24 * 7 + 1, worst)) return false;
    for (int l = 0; l < 24; l++) {
        static const char *names[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        const int64_t rows[] = {d, kv, kv, d, ff, ff, d}, n[] = {d, d, d, d, d, d, ff};
        for (int i = 0; i < 7; i++)
            if (!add_mat(s, md, names[i], type_of(t, names[i], l, n[i]), rows[i], n[i], x, pack)) return false;
    }
    return add_mat(s, md, "output", type_of(t, "output", 0, d), vocab, d, x, pack);
}

/* ==== Timed runs ==== */

struct gemv_job {
    const struct ty_simd *s;
    const struct mat *m;
    float *out;
    bool read_only; /* read the bytes the gemv would, with the roofline's loads, and compute nothing */
};

/* Rows split in multiples of 16 (a packed panel), each thread a contiguous range. */
static void gemv_task(void *arg, int ith, int nth) {
    struct gemv_job *j = arg;
    const struct mat *m = j->m;
    int64_t b, e;
    ty__split_range((m->rows + TY_PACK_ROWS - 1) / TY_PACK_ROWS, ith, nth, &b, &e);
    b *= TY_PACK_ROWS, e *= TY_PACK_ROWS;
    if (e > m->rows) e = m->rows;
    if (e <= b) return;
    if (j->read_only) {
        size_t from = m->packed ? (size_t)(b / TY_PACK_ROWS) * m->panel_stride : (size_t)b * m->row_bytes;
        size_t to =
            m->packed ? (size_t)((e + TY_PACK_ROWS - 1) / TY_PACK_ROWS) * m->panel_stride : (size_t)e * m->row_bytes;
        j->out[b] = (float)ty__roofline_read(m->w + from, to - from);
    } else if (m->packed)
        ty__simd_gemv_packed(j->s, m->type, m->n, e - b, m->w + (size_t)(b / TY_PACK_ROWS) * m->panel_stride,
                             m->panel_stride, m->xq, j->out + b);
    else
        ty__simd_gemv(j->s, m->type, m->n, e - b, m->w + (size_t)b * m->row_bytes, m->row_bytes, m->xq, j->out + b);
}

/* Seconds of one pass over every matrix of md, one dispatch per matrix. */
static double pass_gemv(struct ty_threadpool *pool, const struct ty_simd *s, const struct model *md, float *out,
                        bool read_only) {
    double t0 = ty__time_s();
    for (int i = 0; i < md->count; i++) {
        struct gemv_job j = {s, &md->m[i], out, read_only};
        ty__threadpool_run(pool, gemv_task, &j);
    }
    return ty__time_s() - t0;
}

/* Best and mean seconds of the gemv pass over md, and (read_best non-NULL) the best of plain reads of the same memory,
 * the two passes alternating: on a VM the host can change the bandwidth within seconds, so the gemv and the reads it
 * is compared with must sample the same seconds. */
static void time_gemv(struct ty_threadpool *pool, const struct ty_simd *s, const struct model *md, float *out,
                      double seconds, double *best, double *mean, double *read_best) {
    *best = 1e30;
    if (read_best) *read_best = 1e30;
    pass_gemv(pool, s, md, out, false); /* warm-up */
    double sum = 0, t_end = ty__time_s() + seconds;
    int reps = 0;
    do {
        if (read_best) {
            double r = pass_gemv(pool, s, md, out, true);
            if (r < *read_best) *read_best = r;
        }
        double t = pass_gemv(pool, s, md, out, false);
        sum += t;
        if (t < *best) *best = t;
        reps++;
    } while (ty__time_s() < t_end || reps < 3);
    *mean = sum / reps;
}

struct gemm_job {
    const struct ty_simd *s;
    const struct mat *m;
    int64_t cols;
    const uint8_t *xq;
    size_t xs;
    float *out;
    void **scratch;
};

static void gemm_task(void *arg, int ith, int nth) {
    struct gemm_job *j = arg;
    int64_t b, e;
    ty__split_range((j->m->rows + 15) / 16, ith, nth, &b, &e);
    b *= 16, e *= 16;
    if (e > j->m->rows) e = j->m->rows;
    if (e <= b) return;
    const struct mat *m = j->m;
    if (m->packed)
        ty__simd_gemm_packed(j->s, m->type, m->n, e - b, m->w + (size_t)(b / TY_PACK_ROWS) * m->panel_stride,
                             m->panel_stride, j->cols, j->xq, j->xs, j->out + b, m->rows, j->scratch[ith]);
    else
        ty__simd_gemm(j->s, m->type, m->n, e - b, m->w + (size_t)b * m->row_bytes, m->row_bytes, j->cols, j->xq, j->xs,
                      j->out + b, m->rows, j->scratch[ith]);
}

/* The table whose kernels the fast CPU backend runs for weight type t on path s (cpu.c, kernel_tables): the path's
 * own, except BF16 weights where the path pairs them with bf16 activations, which take the path below's f32 ones. */
static const struct ty_simd *backend_table(const struct ty_simd *s, enum ty_type t) {
    if (t != TY_TYPE_BF16 || s->t[t].act != TY_ACT_BF16) return s;
    for (int isa = (int)s->isa - 1; isa >= 0; isa--) {
        const struct ty_simd *below;
        if (ty__simd_get((enum ty_cpu_isa)isa, &below) == TY_OK && below->t[t].act == TY_ACT_F32) return below;
    }
    return s;
}

/* ==== Main ==== */

static const enum ty_type default_types[] = {TY_TYPE_F32,  TY_TYPE_F16,  TY_TYPE_BF16, TY_TYPE_Q8_0,
                                             TY_TYPE_Q6_K, TY_TYPE_Q5_K, TY_TYPE_Q5_1, TY_TYPE_Q5_0,
                                             TY_TYPE_Q4_K, TY_TYPE_Q4_1, TY_TYPE_Q4_0, MIX_Q4_K_M};

/* ==== Attention ==== */

#define COLD_LAYERS 24 /* Qwen2.5-0.5B's: the caches a decode step's attention reads in turn */

/* Best GFLOP/s over `seconds` of causal attention over n cached tokens from position 0 (see the header): a prompt of
 * all n (decode false), or one decode step, the query at position n - 1. `layers` caches are attended in turn and the
 * time is per cache: 1 keeps the one cache hot; COLD_LAYERS makes a decode step read its keys and values from memory,
 * as a model's step does after the other layers' weights and caches went through. */
static double time_attention(struct ty_threadpool *pool, int64_t n, bool decode, int layers, double seconds) {
    const int64_t dk = 64, dv = 64, nh = 14, nkv = 2, nq = decode ? 1 : n;
    const int nbuf = 2 + 2 * layers; /* q, out, then each layer's k and v */
    struct ty_buffer buf[2 + 2 * COLD_LAYERS] = {{0}};
    struct ty_tensor t[2 + 2 * COLD_LAYERS]; /* q (dk, nh, nq), out (dv, nh, nq) f32; k (dk, nkv, n), v f16 */
    TY_ASSERT(layers >= 1 && layers <= COLD_LAYERS);
    for (int i = 0; i < nbuf; i++) {
        const bool kv = i >= 2, is_v = kv && i % 2;
        ty__tensor_init(&t[i], NULL, 0, kv ? TY_TYPE_F16 : TY_TYPE_F32, kv && !is_v ? dk : dv, kv ? nkv : nh,
                        kv ? n : nq, 1);
        buf[i].size = ty__tensor_size(&t[i]), buf[i].host = true;
        if (!(buf[i].data = ty__malloc_aligned(buf[i].size))) return 0;
        t[i].buf = &buf[i];
        if (kv) ty__kv_cache_head_major(&t[i]); /* laid out as the engine's cache */
        for (int64_t j = 0; j < ty__tensor_nelements(&t[i]); j++) {
            float r = (float)((int64_t)(next_u64() % 2001) - 1000) / 500.0f;
            if (kv)
                ((ty_f16 *)buf[i].data)[j] = ty__f32_to_f16(r);
            else
                ((float *)buf[i].data)[j] = r;
        }
    }
    struct ty_cpu_scratch scratch = {0};
    struct ty_attn at = {0.125f, decode ? (int32_t)n - 1 : 0};
    double tb = 1e30, t_end = ty__time_s() + seconds;
    int reps = 0;
    do {
        double t0 = ty__time_s();
        for (int l = 0; l < layers; l++)
            if (ty__cpu_attention(pool, &scratch, &t[1], &t[0], &t[2 + 2 * l], &t[3 + 2 * l], &at) != TY_OK) {
                tb = 1e30;
                break;
            }
        double tt = (ty__time_s() - t0) / layers;
        if (tt < tb) tb = tt;
        reps++;
    } while (ty__time_s() < t_end || reps < 3);
    ty__cpu_scratch_free(&scratch);
    for (int i = 0; i < nbuf; i++) ty__free_aligned(buf[i].data);
    return (double)(dk + dv) * (double)nh * (decode ? 2.0 * (double)n : (double)n * (double)(n + 1)) / tb / 1e9;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_kernels [--types LIST|all|none] [--threads LIST] [--seconds S] [--prefill N[,N...]] "
                    "[--layout natural|packed|both] [--isa PATH] [--attention N[,N...]] [--attention-decode N[,N...]] "
                    "[--json]\n"
                    "  LIST: comma-separated weight types (f32, f16, bf16, q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1,\n"
                    "        q4_0) and q4_k_m; thread counts likewise (default: 1 and the core count)\n");
    return 2;
}

int main(int argc, char **argv) {
    enum ty_type types[32];
    int n_types = 0, threads[8] = {1, ty__cpu_count()}, n_threads = ty__cpu_count() > 1 ? 2 : 1;
    double seconds = 1.5;
    int prefill[8] = {128}, n_prefill = 1; /* gemm widths; none with --prefill 0 */
    int attention[8], n_attention = 0;     /* prompt lengths of the attention benchmark */
    int attn_decode[8], n_attn_decode = 0; /* contexts of its decode steps */
    bool no_types = false;
    bool json = false;
    const char *isa_name = NULL;
    enum { LAYOUT_BOTH, LAYOUT_NATURAL, LAYOUT_PACKED } layout = LAYOUT_BOTH;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--types") && v) {
            i++;
            if (!strcmp(v, "all")) continue;
            if (!strcmp(v, "none")) {
                no_types = true;
                continue;
            }
            char buf[512];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *tok = strtok(buf, ","); tok && n_types < 32; tok = strtok(NULL, ",")) {
                if (!strcasecmp(tok, "q4_k_m")) {
                    types[n_types++] = MIX_Q4_K_M;
                } else if (!ty__type_from_name(tok, &types[n_types++])) {
                    fprintf(stderr, "bench_kernels: unknown type %s\n", tok);
                    return usage();
                }
            }
        } else if (!strcmp(a, "--threads") && v) {
            i++;
            if ((n_threads = bench_int_list(v, threads, 8)) < 1) return usage();
        } else if (!strcmp(a, "--seconds") && v) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(a, "--prefill") && v) {
            i++;
            if (!strcmp(v, "0"))
                n_prefill = 0;
            else if ((n_prefill = bench_int_list(v, prefill, 8)) < 1)
                return usage();
        } else if (!strcmp(a, "--layout") && v) {
            i++;
            if (!strcmp(v, "natural"))
                layout = LAYOUT_NATURAL;
            else if (!strcmp(v, "packed"))
                layout = LAYOUT_PACKED;
            else if (!strcmp(v, "both"))
                layout = LAYOUT_BOTH;
            else
                return usage();
        } else if (!strcmp(a, "--isa") && v) {
            isa_name = argv[++i];
        } else if (!strcmp(a, "--attention") && v) {
            i++;
            if ((n_attention = bench_int_list(v, attention, 8)) < 1) return usage();
        } else if (!strcmp(a, "--attention-decode") && v) {
            i++;
            if ((n_attn_decode = bench_int_list(v, attn_decode, 8)) < 1) return usage();
        } else {
            return usage();
        }
    }
    if (n_types == 0 && !no_types) {
        n_types = (int)(sizeof default_types / sizeof default_types[0]);
        memcpy(types, default_types, sizeof default_types);
    }
    if (n_threads == 2 && threads[1] == 1) n_threads = 1;

    const struct ty_simd *s = ty__simd();
    if (isa_name) {
        enum ty_cpu_isa isa;
        if (!ty__cpu_isa_from_name(isa_name, &isa) || ty__simd_get(isa, &s) != TY_OK) {
            fprintf(stderr, "bench_kernels: --isa %s: %s\n", isa_name, ty_last_error());
            return 1;
        }
    }

    json_t *root = json_object(), *jroof = json_array(), *jtypes = json_array();
    json_object_set_new(root, "isa", json_string(s->name));
    json_object_set_new(root, "cores", json_integer(ty__cpu_count()));

    /* Rooflines */
    struct ty_roofline roof[8];
    for (int t = 0; t < n_threads; t++) {
        if (ty__roofline_measure_ex(&roof[t], threads[t], 2 * seconds, s->isa, 0) != TY_OK) {
            fprintf(stderr, "bench_kernels: %s\n", ty_last_error());
            return 1;
        }
        json_t *r = json_object();
        json_object_set_new(r, "threads", json_integer(roof[t].n_threads));
        json_object_set_new(r, "mem_bw_gbs", json_real(roof[t].mem_bw_gbs));
        json_object_set_new(r, "mem_bw_mean_gbs", json_real(roof[t].mem_bw_mean_gbs));
        json_object_set_new(r, "mem_bytes", json_integer((json_int_t)roof[t].mem_bytes));
        json_object_set_new(r, "fma_gflops", json_real(roof[t].fma_gflops));
        json_object_set_new(r, "int8_gops", json_real(roof[t].int8_gops));
        json_object_set_new(r, "bf16_gflops", json_real(roof[t].bf16_gflops));
        json_object_set_new(r, "fma_insn", json_string(roof[t].fma_insn));
        json_object_set_new(r, "int8_insn", json_string(roof[t].int8_insn));
        if (roof[t].bf16_insn) json_object_set_new(r, "bf16_insn", json_string(roof[t].bf16_insn));
        json_array_append_new(jroof, r);
        if (!json) {
            printf("roofline %d thread%s (%s): read %.1f GB/s (mean %.1f, %zu MiB x %d), FMA %.0f GFLOP/s [%s], int "
                   "dot %.0f GOP/s [%s]",
                   roof[t].n_threads, roof[t].n_threads > 1 ? "s" : "", s->name, roof[t].mem_bw_gbs,
                   roof[t].mem_bw_mean_gbs, roof[t].mem_bytes >> 20, roof[t].mem_passes, roof[t].fma_gflops,
                   roof[t].fma_insn, roof[t].int8_gops, roof[t].int8_insn);
            if (roof[t].bf16_insn) printf(", bf16 dot %.0f GFLOP/s [%s]", roof[t].bf16_gflops, roof[t].bf16_insn);
            printf("\n");
        }
    }
    json_object_set_new(root, "roofline", jroof);

    /* Attention (its kernel is compiled for the build machine, whatever --isa says) */
    if (n_attention + n_attn_decode > 0) {
        json_t *jatt = json_array();
        ty__cpu_ref_setup(); /* the f16 table of the cache conversion's fallback */
        for (int th = 0; th < n_threads; th++) {
            struct ty_threadpool *pool;
            if (ty__threadpool_init(threads[th], &pool) != TY_OK) return 1;
            for (int ai = 0; ai < n_attention + n_attn_decode; ai++) {
                const bool decode = ai >= n_attention;
                const int n = decode ? attn_decode[ai - n_attention] : attention[ai];
                double gf = time_attention(pool, n, decode, 1, seconds / 2),
                       cold = decode ? time_attention(pool, n, true, COLD_LAYERS, seconds / 2) : 0;
                json_t *j = json_object();
                json_object_set_new(j, "threads", json_integer(ty__threadpool_size(pool)));
                json_object_set_new(j, decode ? "context" : "tokens", json_integer(n));
                json_object_set_new(j, "gflops", json_real(gf));
                json_object_set_new(j, "fma_pct", json_real(100 * gf / roof[th].fma_gflops));
                if (decode) {
                    json_object_set_new(j, "cold_gflops", json_real(cold));
                    json_object_set_new(j, "cold_fma_pct", json_real(100 * cold / roof[th].fma_gflops));
                }
                json_array_append_new(jatt, j);
                if (!json) {
                    printf("attention %s%d, %d thread%s: %.1f GFLOP/s, %.0f%% of the FMA peak",
                           decode ? "decode at context " : "pp", n, ty__threadpool_size(pool),
                           ty__threadpool_size(pool) > 1 ? "s" : "", gf, 100 * gf / roof[th].fma_gflops);
                    if (decode)
                        printf("; from memory (%d caches in turn) %.1f GFLOP/s, %.0f%%", COLD_LAYERS, cold,
                               100 * cold / roof[th].fma_gflops);
                    printf("\n");
                }
            }
            ty__threadpool_free(pool);
        }
        json_object_set_new(root, "attention", jatt);
    }

    /* One activation row of each width. */
    float *x = malloc(4864 * sizeof(float));
    for (int i = 0; i < 4864; i++) x[i] = (float)((int64_t)(next_u64() % 2001) - 1000) / 500.0f;

    if (!json && n_types > 0)
        printf("\n%-9s %-5s %-12s | %-22s | %-36s | %s\n", "type", "act", "gemv kernel", "ffn_down GB/s (cached)",
               "model GB/s, read GB/s, %", "prefill GOP/s, % of peak");
    for (int run = 0; run < 2 * n_types; run++) {
        enum ty_type t = types[run / 2];
        bool pack = run % 2; /* a second run with packed weights, where the type (or the mix) has any */
        enum ty_type base = t == MIX_Q4_K_M ? TY_TYPE_Q4_K : t;
        const struct ty_simd *ks = backend_table(s, base);
        bool packable = t == MIX_Q4_K_M || (ty__pack_supported(t) && ks->t[t].gemm_packed);
        if (pack ? !packable || layout == LAYOUT_NATURAL : packable && layout == LAYOUT_PACKED) continue;
        char label[32];
        snprintf(label, sizeof label, "%s%s", type_label(t), pack ? "/p" : "");
        json_t *jt = json_object(), *jffn = json_array(), *jmodel = json_array(), *jpre = json_array();
        json_object_set_new(jt, "type", json_string(type_label(t)));
        json_object_set_new(jt, "layout", json_string(pack ? "packed" : "natural"));
        json_object_set_new(jt, "act", json_string(act_name(ks->t[base].act)));
        json_object_set_new(jt, "gemv_isa", json_string(ks->t[base].gemv_isa));
        json_object_set_new(jt, "gemm_isa", json_string(ks->t[base].gemm_isa));

        struct model ffn = {0}, md = {0};
        if (!init_model(&ffn, 1, (size_t)4 * 896 * 4864) || !add_mat(ks, &ffn, "ffn_down", base, 896, 4864, x, pack) ||
            !build_model(ks, t, x, pack, &md)) {
            fprintf(stderr, "bench_kernels: out of memory for %s\n", type_label(t));
            return 1;
        }
        int widest = 1;
        for (int pi = 0; pi < n_prefill; pi++) widest = prefill[pi] > widest ? prefill[pi] : widest;
        size_t out_n = 4864 * (size_t)widest > 151936 ? 4864 * (size_t)widest : 151936; /* widest product: FFN rows */
        float *out = malloc(out_n * sizeof(float));
        char line_ffn[128] = "", line_model[160] = "", line_pre[512] = "";
        for (int th = 0; th < n_threads; th++) {
            struct ty_threadpool *pool;
            if (ty__threadpool_init(threads[th], &pool) != TY_OK) return 1;
            int nth = ty__threadpool_size(pool);
            double best, mean;
            time_gemv(pool, ks, &ffn, out, seconds / 3, &best, &mean, NULL);
            double ffn_gbs = (double)ffn.bytes / best / 1e9;
            /* the roofline of this very memory, read with the same split, alternating with the gemv */
            double rbest;
            time_gemv(pool, ks, &md, out, 1.5 * seconds, &best, &mean, &rbest);
            double read_gbs = (double)md.bytes / rbest / 1e9;
            double gbs = (double)md.bytes / best / 1e9, pct = 100 * gbs / read_gbs;
            json_t *f = json_object(), *m = json_object();
            json_object_set_new(f, "threads", json_integer(nth));
            json_object_set_new(f, "gbs", json_real(ffn_gbs));
            json_array_append_new(jffn, f);
            json_object_set_new(m, "threads", json_integer(nth));
            json_object_set_new(m, "bytes", json_integer((json_int_t)md.bytes));
            json_object_set_new(m, "gbs", json_real(gbs));
            json_object_set_new(m, "gbs_mean", json_real((double)md.bytes / mean / 1e9));
            json_object_set_new(m, "ms_per_token", json_real(best * 1e3));
            json_object_set_new(m, "read_gbs", json_real(read_gbs));
            json_object_set_new(m, "roofline_pct", json_real(pct));
            json_object_set_new(m, "machine_roofline_pct", json_real(100 * gbs / roof[th].mem_bw_gbs));
            json_array_append_new(jmodel, m);
            size_t lf = strlen(line_ffn), lm = strlen(line_model);
            snprintf(line_ffn + lf, sizeof line_ffn - lf, "%s%5.1f", th ? " / " : "", ffn_gbs);
            snprintf(line_model + lm, sizeof line_model - lm, "%s%5.1f %4.1f %3.0f%%", th ? " / " : "", gbs, read_gbs,
                     pct);

            for (int pi = 0; pi < n_prefill; pi++) {
                /* every layer matrix (not the output: a prompt computes one row of logits) against `cols` columns,
                 * as a prefill streams the model's weights from memory; activations quantised once per (type,
                 * width), as the engine does once per product */
                const int cols = prefill[pi], n_jobs = md.count - 1;
                struct {
                    enum ty_type type;
                    int64_t n;
                    size_t xs;
                    uint8_t *xq;
                } acts[16]; /* at most a few weight types times two widths */
                int n_acts = 0;
                void *scratch[64];
                for (int i = 0; i < nth && i < 64; i++) scratch[i] = ty__malloc_aligned(ty__gemm_scratch_size());
                struct gemm_job *jobs = calloc((size_t)n_jobs, sizeof *jobs);
                double flops = 0;
                for (int mi = 0; mi < n_jobs; mi++) {
                    const struct mat *mm = &md.m[mi];
                    int ai = 0;
                    while (ai < n_acts && !(acts[ai].type == mm->type && acts[ai].n == mm->n)) ai++;
                    if (ai == 16) {
                        fprintf(stderr, "bench_kernels: more than 16 activation formats in one model\n");
                        return 1;
                    }
                    if (ai == n_acts) {
                        acts[ai].type = mm->type, acts[ai].n = mm->n;
                        acts[ai].xs = ty__simd_act_row_size(ks, mm->type, mm->n);
                        acts[ai].xq = ty__malloc_aligned(acts[ai].xs * (size_t)cols);
                        for (int c = 0; c < cols; c++)
                            ty__simd_quantize_act(ks, mm->type, x, acts[ai].xq + c * acts[ai].xs, mm->n);
                        n_acts++;
                    }
                    jobs[mi] = (struct gemm_job){ks, mm, cols, acts[ai].xq, acts[ai].xs, out, scratch};
                    flops += 2.0 * (double)mm->rows * (double)mm->n * (double)cols;
                }
                double tb = 1e30, t_end = ty__time_s() + seconds / 2;
                int reps = 0;
                do { /* the first pass warms up and is timed too: a pass is long, the best one counts */
                    double t0 = ty__time_s();
                    for (int mi = 0; mi < n_jobs; mi++) ty__threadpool_run(pool, gemm_task, &jobs[mi]);
                    double tt = ty__time_s() - t0;
                    if (tt < tb) tb = tt;
                    reps++;
                } while (ty__time_s() < t_end || reps < 2);
                double gops = flops / tb / 1e9;
                const struct mat *fm = &md.m[0];
                bool fl = ks->t[fm->type].act == TY_ACT_F32, bf = ks->t[fm->type].act == TY_ACT_BF16;
                bool amx = !fl && !bf && ty__roofline_int8_peak(&roof[th], &ks->t[fm->type]) != roof[th].int8_gops;
                double peak_v = fl   ? roof[th].fma_gflops
                                : bf ? roof[th].bf16_gflops
                                     : ty__roofline_int8_peak(&roof[th], &ks->t[fm->type]);
                json_t *p = json_object();
                json_object_set_new(p, "threads", json_integer(nth));
                json_object_set_new(p, "cols", json_integer(cols));
                json_object_set_new(p, "gops", json_real(gops));
                json_object_set_new(p, "peak_name", json_string(fl ? "fma" : bf ? "bf16" : amx ? "amx_int8" : "int8"));
                json_object_set_new(p, "peak_pct", json_real(100 * gops / peak_v));
                json_array_append_new(jpre, p);
                size_t lp = strlen(line_pre);
                snprintf(line_pre + lp, sizeof line_pre - lp, "%s%5.0f %3.0f%%", th || pi ? " / " : "", gops,
                         100 * gops / peak_v);
                for (int i = 0; i < nth && i < 64; i++) ty__free_aligned(scratch[i]);
                for (int i = 0; i < n_acts; i++) ty__free_aligned(acts[i].xq);
                free(jobs);
            }
            ty__threadpool_free(pool);
        }
        json_object_set_new(jt, "ffn_down", jffn);
        json_object_set_new(jt, "model", jmodel);
        json_object_set_new(jt, "model_bytes", json_integer((json_int_t)md.bytes));
        if (n_prefill > 0)
            json_object_set_new(jt, "prefill", jpre);
        else
            json_decref(jpre);
        json_array_append_new(jtypes, jt);
        if (!json)
            printf("%-9s %-5s %-12s | %-22s | %-36s | %s\n", label, act_name(ks->t[base].act), ks->t[base].gemv_isa,
                   line_ffn, line_model, line_pre);
        fflush(stdout);
        free(out);
        free_model(&ffn);
        free_model(&md);
    }
    json_object_set_new(root, "types", jtypes);
    if (json) {
        char *txt = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        puts(txt);
        free(txt);
    } else if (n_types > 0) {
        printf("\n(thread counts: %d", roof[0].n_threads);
        for (int t = 1; t < n_threads; t++) printf(" / %d", roof[t].n_threads);
        printf("; model = all %d matrices of Qwen2.5-0.5B once; prefill = its %d layer matrices x", 24 * 7 + 1, 24 * 7);
        for (int pi = 0; pi < n_prefill; pi++) printf("%s %d", pi ? "," : "", prefill[pi]);
        printf(" tokens, per thread count)\n");
    }
    json_decref(root);
    free(x);
    return 0;
}
