/*
 * test_moe.c - the Qwen3-MoE forward pass (qwen3moe) on tiny models written here with the GGUF writer: 8 experts,
 * top 2, llama.cpp's 3-D ffn_*_exps tensors, and one dense layer among the sparse ones (HF's mlp_only_layers).
 *
 * What is checked against what:
 *  - Logits against a naive double-precision forward pass of Qwen3MoeSparseMoeBlock (softmax router, top-k, weights
 *    renormalised or not as expert_weights_norm says), 1e-4 absolute with f32 weights and an f32 KV cache.
 *  - One batch vs token-by-token decoding (1e-5), and Q8_0 experts close to the f32 model.
 *  - Which expert weights are read, by a backend that wraps cpu-ref and records every matmul's weight: decoding a
 *    token reads exactly expert_used_count experts per sparse layer, and a prefill batch reads each chosen expert of
 *    a layer exactly once.
 *  - Errors: expert tensors that disagree with expert_count or expert_feed_forward_length (the message names the
 *    tensor and both shapes), a missing expert key, expert_used_count > expert_count, a layer with neither a router
 *    nor a dense FFN.
 */
#include "model/model-impl.h"
#include "harness.h"
#include "model/quant.h"
#include "model/tokenizer.h"

#include <math.h>
#include <stdlib.h>

/* ==== Tiny model files ==== */

struct tiny {
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ff_exp, n_expert, n_used, n_vocab, n_ctx_train;
    int dense_layer; /* this layer has a dense FFN; -1 for none */
    int norm;        /* expert_weights_norm: 1, 0, or -1 to leave the key out (true) */
    enum ty_type wtype, exp_type;
    const char *wrong_tensor; /* give this tensor one expert too few */
    const char *skip_tensor;  /* leave this tensor out */
    const char *skip_key;     /* leave this metadata key out (suffix after "qwen3moe.") */
    int bad_used;             /* write this expert_used_count instead, if non-zero */
};

static struct tiny moe_cfg(void) {
    struct tiny c = {.n_embd = 32,
                     .n_layer = 3,
                     .n_head = 4,
                     .n_head_kv = 2,
                     .head_dim = 8,
                     .n_ff = 48,
                     .n_ff_exp = 24,
                     .n_expert = 8,
                     .n_used = 2,
                     .n_vocab = 544,
                     .n_ctx_train = 128,
                     .dense_layer = 1,
                     .norm = -1,
                     .wtype = TY_TYPE_F32,
                     .exp_type = TY_TYPE_F32};
    return c;
}

struct pending_tensor {
    char name[64];
    enum ty_type type;
    int64_t ne[3];
    int n_dims;
    double scale, offset;
};

static void set_u32(struct ty_gguf_writer *w, const struct tiny *c, const char *suffix, uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "qwen3moe.%s", suffix);
    if (!c->skip_key || strcmp(c->skip_key, suffix)) CHECK_OK(ty__gguf_writer_set_u32(w, k, v));
}

static bool write_tiny(const struct tiny *c, const char *path) {
    int before = ty_test_failures;
    struct ty_tokenizer *tok = NULL;
    CHECK_OK(ty__tokenizer_load_hf(ty_test_src("tests/data/models/qwen3-tiny/tokenizer.json"),
                                   ty_test_src("tests/data/models/qwen3-tiny/tokenizer_config.json"), &tok));
    if (!tok) return false;
    struct ty_gguf_writer *w;
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_set_str(w, "general.architecture", "qwen3moe"));
    set_u32(w, c, "block_count", (uint32_t)c->n_layer);
    set_u32(w, c, "context_length", (uint32_t)c->n_ctx_train);
    set_u32(w, c, "embedding_length", (uint32_t)c->n_embd);
    set_u32(w, c, "feed_forward_length", (uint32_t)c->n_ff);
    set_u32(w, c, "attention.head_count", (uint32_t)c->n_head);
    set_u32(w, c, "attention.head_count_kv", (uint32_t)c->n_head_kv);
    set_u32(w, c, "attention.key_length", (uint32_t)c->head_dim);
    set_u32(w, c, "attention.value_length", (uint32_t)c->head_dim);
    set_u32(w, c, "expert_count", (uint32_t)c->n_expert);
    set_u32(w, c, "expert_used_count", (uint32_t)(c->bad_used ? c->bad_used : c->n_used));
    set_u32(w, c, "expert_feed_forward_length", (uint32_t)c->n_ff_exp);
    if (c->norm >= 0) CHECK_OK(ty__gguf_writer_set_bool(w, "qwen3moe.expert_weights_norm", c->norm == 1));
    CHECK_OK(ty__gguf_writer_set_f32(w, "qwen3moe.attention.layer_norm_rms_epsilon", 1e-6f));
    CHECK_OK(ty__gguf_writer_set_f32(w, "qwen3moe.rope.freq_base", 1e6f));
    CHECK_OK(ty__tokenizer_to_gguf(tok, w));
    ty_tokenizer_free(tok);

    int64_t nq = (int64_t)c->n_head * c->head_dim, nkv = (int64_t)c->n_head_kv * c->head_dim;
    struct pending_tensor *ts = ty__calloc(8 + 16 * (size_t)c->n_layer, sizeof *ts);
    int n = 0;
#define ADD(nm, ty, ne0_, ne1_, ne2_, nd, sc, of)                                                                      \
    do {                                                                                                               \
        struct pending_tensor *p_ = &ts[n++];                                                                          \
        snprintf(p_->name, sizeof p_->name, "%s", nm);                                                                 \
        p_->type = ty;                                                                                                 \
        p_->ne[0] = ne0_;                                                                                              \
        p_->ne[1] = ne1_;                                                                                              \
        p_->ne[2] = ne2_;                                                                                              \
        p_->n_dims = nd;                                                                                               \
        p_->scale = sc;                                                                                                \
        p_->offset = of;                                                                                               \
        if (c->wrong_tensor && !strcmp(c->wrong_tensor, nm)) p_->ne[2]--;                                              \
        if (c->skip_tensor && !strcmp(c->skip_tensor, nm)) n--;                                                        \
    } while (0)
    ADD("token_embd.weight", c->wtype, c->n_embd, c->n_vocab, 1, 2, 1.0, 0.0);
    ADD("output_norm.weight", TY_TYPE_F32, c->n_embd, 1, 1, 1, 0.2, 1.0);
    for (int il = 0; il < c->n_layer; il++) {
        char nm[64];
#define L(suffix) (snprintf(nm, sizeof nm, "blk.%d.%s", il, suffix), nm)
        double sin_ = 1.5 / sqrt(c->n_embd), so = 1.5 / sqrt((double)nq);
        ADD(L("attn_norm.weight"), TY_TYPE_F32, c->n_embd, 1, 1, 1, 0.2, 1.0);
        ADD(L("attn_q.weight"), c->wtype, c->n_embd, nq, 1, 2, sin_, 0.0);
        ADD(L("attn_k.weight"), c->wtype, c->n_embd, nkv, 1, 2, sin_, 0.0);
        ADD(L("attn_v.weight"), c->wtype, c->n_embd, nkv, 1, 2, sin_, 0.0);
        ADD(L("attn_q_norm.weight"), TY_TYPE_F32, c->head_dim, 1, 1, 1, 0.2, 1.0);
        ADD(L("attn_k_norm.weight"), TY_TYPE_F32, c->head_dim, 1, 1, 1, 0.2, 1.0);
        ADD(L("attn_output.weight"), c->wtype, nq, c->n_embd, 1, 2, so, 0.0);
        ADD(L("ffn_norm.weight"), TY_TYPE_F32, c->n_embd, 1, 1, 1, 0.2, 1.0);
        if (il == c->dense_layer) {
            ADD(L("ffn_gate.weight"), c->wtype, c->n_embd, c->n_ff, 1, 2, sin_, 0.0);
            ADD(L("ffn_up.weight"), c->wtype, c->n_embd, c->n_ff, 1, 2, sin_, 0.0);
            ADD(L("ffn_down.weight"), c->wtype, c->n_ff, c->n_embd, 1, 2, 1.5 / sqrt(c->n_ff), 0.0);
        } else {
            /* a router with a wide spread, so the top-k choice is far from ties */
            ADD(L("ffn_gate_inp.weight"), TY_TYPE_F32, c->n_embd, c->n_expert, 1, 2, 4.0 / sqrt(c->n_embd), 0.0);
            ADD(L("ffn_gate_exps.weight"), c->exp_type, c->n_embd, c->n_ff_exp, c->n_expert, 3, sin_, 0.0);
            ADD(L("ffn_up_exps.weight"), c->exp_type, c->n_embd, c->n_ff_exp, c->n_expert, 3, sin_, 0.0);
            ADD(L("ffn_down_exps.weight"), c->exp_type, c->n_ff_exp, c->n_embd, c->n_expert, 3, 2.0 / sqrt(c->n_ff_exp),
                0.0);
        }
#undef L
    }
#undef ADD
    for (int i = 0; i < n; i++) CHECK_OK(ty__gguf_writer_add_tensor(w, ts[i].name, ts[i].type, ts[i].n_dims, ts[i].ne));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    for (int i = 0; i < n; i++) {
        int64_t rows = ts[i].ne[1] * ts[i].ne[2], count = ts[i].ne[0] * rows;
        float *f = ty__malloc(sizeof(float) * (size_t)count);
        uint64_t s = ty_test_name_seed(ts[i].name);
        for (int64_t j = 0; j < count; j++) f[j] = (float)(ts[i].offset + ts[i].scale * ty_test_urand(&s));
        size_t nbytes;
        CHECK_OK(ty__tensor_nbytes(ts[i].type, ts[i].n_dims, ts[i].ne, ts[i].name, &nbytes));
        void *q = ty__malloc(nbytes);
        const struct ty_type_traits *tr = ty__type_traits(ts[i].type);
        for (int64_t r = 0; r < rows; r++)
            tr->from_float(f + r * ts[i].ne[0], (char *)q + (size_t)r * (nbytes / (size_t)rows), ts[i].ne[0]);
        CHECK_OK(ty__gguf_writer_write_tensor(w, q, nbytes));
        ty_free(q);
        ty_free(f);
    }
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);
    ty_free(ts);
    return ty_test_failures == before;
}

/* ==== A naive reference forward pass (double precision, whole sequence, no cache) ==== */

static double *tensor_f64(const struct ty_gguf *g, const char *name) {
    const struct ty_gguf_tensor *t = ty__gguf_find_tensor(g, name);
    if (!t) return NULL;
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2];
    float *f = ty__malloc(sizeof(float) * (size_t)n);
    ty__type_traits(t->type)->to_float(t->data, f, n);
    double *d = ty__malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) d[i] = f[i];
    ty_free(f);
    return d;
}

static void ref_rmsnorm(double *y, const double *x, const double *w, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + 1e-6);
    for (int i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

static void ref_matvec(double *y, const double *W, const double *x, int n_in, int n_out) {
    for (int o = 0; o < n_out; o++) {
        double s = 0;
        for (int i = 0; i < n_in; i++) s += W[(size_t)o * n_in + i] * x[i];
        y[o] = s;
    }
}

static void ref_rope(double *v, int d, int pos) {
    for (int i = 0; i < d / 2; i++) {
        double a = pos * pow(1e6, -2.0 * i / d), c = cos(a), s = sin(a);
        double x0 = v[i], x1 = v[i + d / 2];
        v[i] = x0 * c - x1 * s;
        v[i + d / 2] = x1 * c + x0 * s;
    }
}

/* y += SwiGLU FFN of h with the given (row-major [out][in]) matrices. */
static void ref_ffn(double *y, double wt, const double *h, const double *wg, const double *wu, const double *wd, int E,
                    int F) {
    double *g = ty__malloc(sizeof(double) * F), *u = ty__malloc(sizeof(double) * F),
           *o = ty__malloc(sizeof(double) * E);
    ref_matvec(g, wg, h, E, F);
    ref_matvec(u, wu, h, E, F);
    for (int i = 0; i < F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
    ref_matvec(o, wd, g, F, E);
    for (int i = 0; i < E; i++) y[i] += wt * o[i];
    ty_free(g);
    ty_free(u);
    ty_free(o);
}

static double *ref_forward(const struct tiny *c, const char *path, const int32_t *ids, int n) {
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(path, &g));
    if (!g) return NULL;
    int E = c->n_embd, H = c->n_head, KV = c->n_head_kv, D = c->head_dim, V = c->n_vocab, X = c->n_expert;
    int FE = c->n_ff_exp, K = c->n_used;
    double *x = ty__calloc((size_t)n * E, sizeof(double));
    double *embd = tensor_f64(g, "token_embd.weight");
    for (int t = 0; t < n; t++) memcpy(x + (size_t)t * E, embd + (size_t)ids[t] * E, sizeof(double) * E);
    double *h = ty__malloc(sizeof(double) * E), *q = ty__malloc(sizeof(double) * (size_t)n * H * D);
    double *k = ty__malloc(sizeof(double) * (size_t)n * KV * D), *v = ty__malloc(sizeof(double) * (size_t)n * KV * D);
    double *att = ty__malloc(sizeof(double) * H * D), *tmp = ty__malloc(sizeof(double) * E);
    double *sc = ty__malloc(sizeof(double) * (size_t)n), *p = ty__malloc(sizeof(double) * X);
    for (int il = 0; il < c->n_layer; il++) {
        char nm[64];
#define W(suffix) (snprintf(nm, sizeof nm, "blk.%d.%s", il, suffix), tensor_f64(g, nm))
        double *an = W("attn_norm.weight"), *wq = W("attn_q.weight"), *wk = W("attn_k.weight"),
               *wv = W("attn_v.weight"), *qn = W("attn_q_norm.weight"), *kn = W("attn_k_norm.weight"),
               *wo = W("attn_output.weight"), *fn = W("ffn_norm.weight"), *wg = W("ffn_gate.weight"),
               *wu = W("ffn_up.weight"), *wd = W("ffn_down.weight"), *wr = W("ffn_gate_inp.weight"),
               *eg = W("ffn_gate_exps.weight"), *eu = W("ffn_up_exps.weight"), *ed = W("ffn_down_exps.weight");
#undef W
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(h, x + (size_t)t * E, an, E);
            ref_matvec(q + (size_t)t * H * D, wq, h, E, H * D);
            ref_matvec(k + (size_t)t * KV * D, wk, h, E, KV * D);
            ref_matvec(v + (size_t)t * KV * D, wv, h, E, KV * D);
            for (int hh = 0; hh < H; hh++) {
                double *qh = q + ((size_t)t * H + hh) * D;
                ref_rmsnorm(qh, qh, qn, D);
                ref_rope(qh, D, t);
            }
            for (int hh = 0; hh < KV; hh++) {
                double *kh = k + ((size_t)t * KV + hh) * D;
                ref_rmsnorm(kh, kh, kn, D);
                ref_rope(kh, D, t);
            }
        }
        for (int t = 0; t < n; t++) {
            for (int hh = 0; hh < H; hh++) {
                int kvh = hh / (H / KV);
                const double *qh = q + ((size_t)t * H + hh) * D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int d = 0; d < D; d++) s += qh[d] * k[((size_t)j * KV + kvh) * D + d];
                    sc[j] = s / sqrt((double)D);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= t; j++) sum += (sc[j] = exp(sc[j] - mx));
                for (int d = 0; d < D; d++) {
                    double o = 0;
                    for (int j = 0; j <= t; j++) o += sc[j] / sum * v[((size_t)j * KV + kvh) * D + d];
                    att[hh * D + d] = o;
                }
            }
            double *xt = x + (size_t)t * E;
            ref_matvec(tmp, wo, att, H * D, E);
            for (int i = 0; i < E; i++) xt[i] += tmp[i];
            ref_rmsnorm(h, xt, fn, E);
            if (!wr) {
                ref_ffn(xt, 1.0, h, wg, wu, wd, E, c->n_ff);
                continue;
            }
            /* Qwen3MoeSparseMoeBlock: softmax over all experts, top-k, optional renormalisation */
            ref_matvec(p, wr, h, E, X);
            double mx = -INFINITY, sum = 0;
            for (int e = 0; e < X; e++) mx = fmax(mx, p[e]);
            for (int e = 0; e < X; e++) sum += (p[e] = exp(p[e] - mx));
            for (int e = 0; e < X; e++) p[e] /= sum;
            int sel[16];
            double w[16], tot = 0;
            for (int i = 0; i < K; i++) {
                int best = -1;
                for (int e = 0; e < X; e++) {
                    bool taken = false;
                    for (int j = 0; j < i; j++) taken |= sel[j] == e;
                    if (!taken && (best < 0 || p[e] > p[best])) best = e;
                }
                sel[i] = best;
                tot += (w[i] = p[best]);
            }
            for (int i = 0; i < K; i++) {
                size_t e = (size_t)sel[i];
                double wt = c->norm == 0 ? w[i] : w[i] / tot;
                ref_ffn(xt, wt, h, eg + e * FE * E, eu + e * FE * E, ed + e * E * FE, E, FE);
            }
        }
        double *all[] = {an, wq, wk, wv, qn, kn, wo, fn, wg, wu, wd, wr, eg, eu, ed};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ty_free(all[i]);
    }
    double *on = tensor_f64(g, "output_norm.weight");
    double *logits = ty__malloc(sizeof(double) * (size_t)n * V);
    for (int t = 0; t < n; t++) {
        ref_rmsnorm(h, x + (size_t)t * E, on, E);
        ref_matvec(logits + (size_t)t * V, embd, h, E, V);
    }
    double *frees[] = {on, embd, x, h, q, k, v, att, tmp, sc, p};
    for (size_t i = 0; i < sizeof frees / sizeof frees[0]; i++) ty_free(frees[i]);
    ty__gguf_close(g);
    return logits;
}

/* ==== Helpers ==== */

static struct ty_model *load(const char *path) {
    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = 2;
    struct ty_model *m = NULL;
    CHECK_OK(ty_model_load(path, &mp, &m));
    return m;
}

static struct ty_context *context(struct ty_model *m, int n_ctx, int n_batch) {
    struct ty_context_params cp = ty_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_batch;
    cp.kv_type = TY_TYPE_F32;
    struct ty_context *ctx = NULL;
    CHECK_OK(ty_context_init(m, &cp, &ctx));
    return ctx;
}

static void prompt(int32_t *ids, int n, int n_vocab, uint64_t seed) {
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((ty_test_urand(&seed) * 0.5 + 0.5) * (n_vocab - 1));
}

enum { N_TOK = 24 };

/* ==== Tests ==== */

static void check_against_reference(struct tiny c, const char *file) {
    const char *path = ty_test_tmp(file);
    if (!write_tiny(&c, path)) return;
    struct ty_model *m = load(path);
    if (!m) return;
    CHECK(!strcmp(ty_model_arch(m), "qwen3moe"));
    CHECK(m->hp.n_expert == c.n_expert && m->hp.n_expert_used == c.n_used && m->hp.n_ff_exp == c.n_ff_exp);
    CHECK(m->hp.expert_norm == (c.norm != 0));
    CHECK(m->hp.n_dense_ffn == (c.dense_layer >= 0 ? 1 : 0));
    int32_t ids[N_TOK];
    prompt(ids, N_TOK, c.n_vocab, 7);
    struct ty_context *ctx = context(m, 64, 512);
    float *lg = ty__malloc(sizeof(float) * N_TOK * (size_t)c.n_vocab);
    CHECK_OK(ty_context_eval(ctx, ids, N_TOK, TY_LOGITS_ALL, lg));
    double *ref = ref_forward(&c, path, ids, N_TOK);
    if (ref) {
        double err = 0, mag = 0;
        for (size_t i = 0; i < (size_t)N_TOK * c.n_vocab; i++) {
            err = fmax(err, fabs(ref[i] - lg[i]));
            mag = fmax(mag, fabs(ref[i]));
        }
        CHECK_MSG(err <= 1e-4, "%s: max abs error %g against the naive forward pass (logits up to %g)", file, err, mag);
        CHECK(mag > 1.0);
    }

    /* token by token through a fresh context: the decode path (one token, k experts) gives the same logits */
    struct ty_context *ctx1 = context(m, 64, 512);
    float *one = ty__malloc(sizeof(float) * (size_t)c.n_vocab);
    double err = 0;
    for (int t = 0; t < N_TOK; t++) {
        CHECK_OK(ty_context_eval(ctx1, ids + t, 1, TY_LOGITS_LAST, one));
        for (int i = 0; i < c.n_vocab; i++) err = fmax(err, fabs((double)one[i] - lg[(size_t)t * c.n_vocab + i]));
    }
    CHECK_MSG(err <= 1e-5, "%s: decode vs prefill differ by %g", file, err);
    ty_free(one);
    ty_free(ref);
    ty_free(lg);
    ty_context_free(ctx1);
    ty_context_free(ctx);
    ty_model_free(m);
}

/* The model's backend with every matrix product's weight view recorded. */
static struct ty_backend_iface spy_iface;
static const struct ty_backend_iface *spy_inner;
static struct ty_tensor spy_w[256];
static int spy_n;

static enum ty_status spy_matmul(struct ty_backend *be, const struct ty_tensor *dst, const struct ty_tensor *w,
                                 const struct ty_tensor *x, const struct ty_tensor *bias) {
    if (spy_n < (int)(sizeof spy_w / sizeof spy_w[0])) spy_w[spy_n] = *w;
    spy_n++;
    return spy_inner->matmul(be, dst, w, x, bias);
}

/* Experts of `exps` read by the recorded matmuls, as a count per expert. */
static void experts_read(const struct ty_tensor *exps, int n_expert, int *reads) {
    for (int e = 0; e < n_expert; e++) reads[e] = 0;
    for (int i = 0; i < spy_n && i < (int)(sizeof spy_w / sizeof spy_w[0]); i++) {
        const struct ty_tensor *w = &spy_w[i];
        if (w->buf != exps->buf || w->offs < exps->offs || w->offs >= exps->offs + exps->nb[2] * (size_t)n_expert)
            continue;
        size_t e = (w->offs - exps->offs) / exps->nb[2];
        CHECK(w->ne[2] == 1 && (w->offs - exps->offs) % exps->nb[2] == 0);
        reads[e]++;
    }
}

static void check_expert_reads(void) {
    struct tiny c = moe_cfg();
    const char *path = ty_test_tmp("moe-reads.gguf");
    if (!write_tiny(&c, path)) return;
    struct ty_model *m = load(path);
    if (!m) return;
    spy_inner = m->be->iface;
    spy_iface = *spy_inner;
    spy_iface.matmul = spy_matmul;
    spy_iface.matmul_multi = NULL; /* the fused products fall back to matmul, so every weight read is recorded */
    spy_iface.matmul_swiglu = NULL;
    m->be->iface = &spy_iface;
    struct ty_context *ctx = context(m, 64, 512);
    int32_t ids[N_TOK];
    prompt(ids, N_TOK, c.n_vocab, 11);
    int reads[3][8];

    /* prefill: every expert of a sparse layer is read at most once, and the chosen ones cover all pairs */
    spy_n = 0;
    CHECK_OK(ty_context_eval(ctx, ids, N_TOK - 1, TY_LOGITS_NONE, NULL));
    for (int il = 0; il < c.n_layer; il++) {
        if (il == c.dense_layer) continue;
        const struct ty_layer *l = &m->layers[il];
        experts_read(l->ffn_gate_exps, c.n_expert, reads[0]);
        experts_read(l->ffn_up_exps, c.n_expert, reads[1]);
        experts_read(l->ffn_down_exps, c.n_expert, reads[2]);
        int used = 0;
        for (int e = 0; e < c.n_expert; e++) {
            CHECK_MSG(reads[0][e] <= 1 && reads[0][e] == reads[1][e] && reads[0][e] == reads[2][e],
                      "layer %d expert %d read %d/%d/%d times in one batch", il, e, reads[0][e], reads[1][e],
                      reads[2][e]);
            used += reads[0][e];
        }
        CHECK_MSG(used >= c.n_used && used <= c.n_expert, "layer %d: %d experts read", il, used);
    }

    /* decode: exactly k experts per sparse layer, each once */
    spy_n = 0;
    float *lg = ty__malloc(sizeof(float) * (size_t)c.n_vocab);
    CHECK_OK(ty_context_eval(ctx, ids + N_TOK - 1, 1, TY_LOGITS_LAST, lg));
    for (int il = 0; il < c.n_layer; il++) {
        if (il == c.dense_layer) continue;
        const struct ty_layer *l = &m->layers[il];
        int total[3] = {0, 0, 0};
        const struct ty_tensor *t3[3] = {l->ffn_gate_exps, l->ffn_up_exps, l->ffn_down_exps};
        for (int j = 0; j < 3; j++) {
            experts_read(t3[j], c.n_expert, reads[j]);
            for (int e = 0; e < c.n_expert; e++) {
                CHECK(reads[j][e] <= 1);
                total[j] += reads[j][e];
            }
            CHECK_MSG(total[j] == c.n_used, "layer %d: decoding one token read %d experts, expected %d", il, total[j],
                      c.n_used);
        }
    }
    ty_free(lg);
    ty_context_free(ctx);
    m->be->iface = spy_inner;
    ty_model_free(m);
}

static void check_quantised_experts(void) {
    struct tiny c = moe_cfg();
    const char *p32 = ty_test_tmp("moe-f32.gguf"), *p8 = ty_test_tmp("moe-q8.gguf");
    struct tiny c8 = c;
    c8.exp_type = TY_TYPE_Q8_0;
    c8.n_embd = 64; /* Q8_0 rows need multiples of 32 */
    c8.n_ff_exp = 32;
    c.n_embd = 64;
    c.n_ff_exp = 32;
    if (!write_tiny(&c, p32) || !write_tiny(&c8, p8)) return;
    struct ty_model *m32 = load(p32), *m8 = load(p8);
    if (m32 && m8) {
        int32_t ids[N_TOK];
        prompt(ids, N_TOK, c.n_vocab, 3);
        struct ty_context *a = context(m32, 64, 8), *b = context(m8, 64, 8);
        float *la = ty__malloc(sizeof(float) * (size_t)c.n_vocab), *lb = ty__malloc(sizeof(float) * (size_t)c.n_vocab);
        CHECK_OK(ty_context_eval(a, ids, N_TOK, TY_LOGITS_LAST, la));
        CHECK_OK(ty_context_eval(b, ids, N_TOK, TY_LOGITS_LAST, lb));
        double err = 0, mag = 0;
        for (int i = 0; i < c.n_vocab; i++) {
            err = fmax(err, fabs((double)la[i] - lb[i]));
            mag = fmax(mag, fabs((double)la[i]));
        }
        CHECK_MSG(err < 0.05 * mag && err > 0, "Q8_0 experts: max diff %g (logits up to %g)", err, mag);
        ty_free(la);
        ty_free(lb);
        ty_context_free(a);
        ty_context_free(b);
    }
    ty_model_free(m32);
    ty_model_free(m8);
}

static void check_load_error(struct tiny c, const char *file, enum ty_status want, const char *needle1,
                             const char *needle2) {
    const char *path = ty_test_tmp(file);
    if (!write_tiny(&c, path)) return;
    struct ty_model *m = NULL;
    CHECK_STATUS(ty_model_load(path, NULL, &m), want);
    CHECK(m == NULL);
    const char *msg = ty_last_error();
    CHECK_MSG(strstr(msg, needle1) != NULL, "'%s' not in '%s'", needle1, msg);
    if (needle2) CHECK_MSG(strstr(msg, needle2) != NULL, "'%s' not in '%s'", needle2, msg);
    ty_model_free(m);
}

void ty_tests(void) {
    struct tiny c = moe_cfg();
    check_against_reference(c, "moe-norm-default.gguf");
    c.norm = 0;
    c.dense_layer = -1;
    check_against_reference(c, "moe-nonorm.gguf");
    c = moe_cfg();
    c.norm = 1;
    c.n_used = 3;
    check_against_reference(c, "moe-norm-top3.gguf");

    check_expert_reads();
    check_quantised_experts();

    c = moe_cfg();
    c.wrong_tensor = "blk.2.ffn_down_exps.weight";
    check_load_error(c, "moe-wrong.gguf", TY_ERR_FORMAT, "blk.2.ffn_down_exps.weight", "[24, 32, 7]");
    c = moe_cfg();
    c.n_ff_exp = 24;
    c.skip_key = "expert_count";
    check_load_error(c, "moe-nokey.gguf", TY_ERR_FORMAT, "qwen3moe.expert_count", NULL);
    c = moe_cfg();
    c.skip_tensor = "blk.2.ffn_gate_inp.weight";
    check_load_error(c, "moe-norouter.gguf", TY_ERR_FORMAT, "layer 2 has neither experts (blk.2.ffn_gate_inp.weight)",
                     "blk.2.ffn_gate.weight");
    c = moe_cfg();
    c.bad_used = 9;
    check_load_error(c, "moe-used.gguf", TY_ERR_FORMAT, "expert_used_count", "9");
}
