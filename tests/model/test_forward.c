/*
 * test_forward.c - the Qwen2/Qwen3 forward pass and the model/context API on tiny models written here with the GGUF
 * writer from random weights (the tokenizer is the 538-token one of tests/data/models, written into each file).
 *
 * What is checked against what:
 *  - Logits against a naive forward pass in double precision written out below from the Hugging Face definitions
 *    (RMSNorm, q/k/v with biases, per-head q/k norm, NeoX RoPE incl. linear and YaRN scaling, causal softmax
 *    attention with grouped KV heads, SwiGLU, tied or untied output), reading the weights back from the file with
 *    to_float. Tolerance 1e-4 absolute with f32 weights and an f32 KV cache.
 *  - Internal consistency: one batch vs several batches vs token-by-token decoding (1e-5); f16 vs f32 KV cache (close,
 *    not equal); 1 vs 3 threads (identical); truncate + re-evaluation reproduces the logits.
 *  - Errors: context full (nothing changes), bad token ids, bad parameters, unsupported architecture, a missing
 *    tensor, a tensor of the wrong shape (the message names it and both shapes), a missing hyperparameter.
 *  - Quantised weights (Q8_0, F16) load and give logits close to the f32 model's; f16 norm weights are converted.
 *  - No memory is left allocated after every free.
 */
#include "harness.h"
#include "chip/backend.h"
#include "model/cost.h"
#include "model/gguf.h"
#include "model/model-impl.h"
#include "model/quant.h"
#include "model/tokenizer.h"

#include <stdlib.h>

/* ==== Tiny model files ==== */

struct tiny {
    const char *arch;
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    enum ty_type wtype;     /* type of the weight matrices */
    enum ty_type norm_type; /* type of the norm weights (F32 normally) */
    bool tied, bias, qk_norm;
    const char *rope_scaling; /* NULL, "linear" or "yarn" */
    float rope_factor;
    int rope_orig_ctx;
    float rope_base;
    const char *skip_tensor;  /* leave this tensor out */
    const char *wrong_tensor; /* give this 2-D tensor one output row too few */
    const char *skip_key;     /* leave this metadata key out (full key) */
};

static struct tiny qwen3_cfg(void) {
    struct tiny c = {"qwen3", 64,    2,    4,      2,    16, 96,   544,  64,   TY_TYPE_F32, TY_TYPE_F32,
                     true,    false, true, "yarn", 4.0f, 16, 1e6f, NULL, NULL, NULL};
    return c;
}

static struct tiny qwen2_cfg(void) {
    struct tiny c = {"qwen2", 48,   2,     6,    2,    8, 80,   538,  128,  TY_TYPE_F32, TY_TYPE_F32,
                     false,   true, false, NULL, 1.0f, 0, 1e4f, NULL, NULL, NULL};
    return c;
}

struct pending_tensor {
    char name[64];
    enum ty_type type;
    int64_t ne[2];
    int n_dims;
    double scale, offset;
};

static void key(struct ty_gguf_writer *w, const struct tiny *c, const char *suffix, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.%s", c->arch, suffix);
}

static bool skip(const struct tiny *c, const char *k) {
    return c->skip_key && !strcmp(c->skip_key, k);
}

static void set_u32(struct ty_gguf_writer *w, const struct tiny *c, const char *suffix, uint32_t v) {
    char k[128];
    key(w, c, suffix, k, sizeof k);
    if (!skip(c, k)) CHECK_OK(ty__gguf_writer_set_u32(w, k, v));
}

static void set_f32(struct ty_gguf_writer *w, const struct tiny *c, const char *suffix, float v) {
    char k[128];
    key(w, c, suffix, k, sizeof k);
    if (!skip(c, k)) CHECK_OK(ty__gguf_writer_set_f32(w, k, v));
}

/* Writes the model to `path`; false if anything failed (the checks have already reported it). */
static bool write_tiny(const struct tiny *c, const char *path) {
    int before = ty_test_failures;
    struct ty_tokenizer *tok = NULL;
    CHECK_OK(ty__tokenizer_load_hf(ty_test_src("tests/data/models/qwen3-tiny/tokenizer.json"),
                                   ty_test_src("tests/data/models/qwen3-tiny/tokenizer_config.json"), &tok));
    if (!tok) return false;
    struct ty_gguf_writer *w;
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_set_str(w, "general.architecture", c->arch));
    set_u32(w, c, "block_count", (uint32_t)c->n_layer);
    set_u32(w, c, "context_length", (uint32_t)c->n_ctx_train);
    set_u32(w, c, "embedding_length", (uint32_t)c->n_embd);
    set_u32(w, c, "feed_forward_length", (uint32_t)c->n_ff);
    set_u32(w, c, "attention.head_count", (uint32_t)c->n_head);
    set_u32(w, c, "attention.head_count_kv", (uint32_t)c->n_head_kv);
    set_u32(w, c, "attention.key_length", (uint32_t)c->head_dim);
    set_u32(w, c, "attention.value_length", (uint32_t)c->head_dim);
    set_f32(w, c, "attention.layer_norm_rms_epsilon", 1e-6f);
    set_f32(w, c, "rope.freq_base", c->rope_base);
    if (c->rope_scaling) {
        char k[128];
        key(w, c, "rope.scaling.type", k, sizeof k);
        CHECK_OK(ty__gguf_writer_set_str(w, k, c->rope_scaling));
        set_f32(w, c, "rope.scaling.factor", c->rope_factor);
        if (c->rope_orig_ctx) set_u32(w, c, "rope.scaling.original_context_length", (uint32_t)c->rope_orig_ctx);
    }
    CHECK_OK(ty__tokenizer_to_gguf(tok, w));
    ty_tokenizer_free(tok);

    int64_t nq = (int64_t)c->n_head * c->head_dim, nkv = (int64_t)c->n_head_kv * c->head_dim;
    struct pending_tensor *ts = ty__calloc(8 + 16 * (size_t)c->n_layer, sizeof *ts);
    int n = 0;
#define ADD(nm, ty, ne0_, ne1_, nd, sc, of)                                                                            \
    do {                                                                                                               \
        struct pending_tensor *p_ = &ts[n];                                                                            \
        snprintf(p_->name, sizeof p_->name, "%s", nm);                                                                 \
        p_->type = ty;                                                                                                 \
        p_->ne[0] = ne0_;                                                                                              \
        p_->ne[1] = ne1_;                                                                                              \
        p_->n_dims = nd;                                                                                               \
        p_->scale = sc;                                                                                                \
        p_->offset = of;                                                                                               \
        if (c->wrong_tensor && !strcmp(c->wrong_tensor, nm)) p_->ne[1]--;                                              \
        if (!c->skip_tensor || strcmp(c->skip_tensor, nm)) n++;                                                        \
    } while (0)
    ADD("token_embd.weight", c->wtype, c->n_embd, c->n_vocab, 2, 1.0, 0.0);
    ADD("output_norm.weight", c->norm_type, c->n_embd, 1, 1, 0.2, 1.0);
    if (!c->tied) ADD("output.weight", c->wtype, c->n_embd, c->n_vocab, 2, 2.0 / sqrt(c->n_embd), 0.0);
    for (int il = 0; il < c->n_layer; il++) {
        char nm[64];
#define L(suffix) (snprintf(nm, sizeof nm, "blk.%d.%s", il, suffix), nm)
        double sin_ = 1.5 / sqrt(c->n_embd), sff = 1.5 / sqrt(c->n_ff), so = 1.5 / sqrt((double)nq);
        ADD(L("attn_norm.weight"), c->norm_type, c->n_embd, 1, 1, 0.2, 1.0);
        ADD(L("attn_q.weight"), c->wtype, c->n_embd, nq, 2, sin_, 0.0);
        ADD(L("attn_k.weight"), c->wtype, c->n_embd, nkv, 2, sin_, 0.0);
        ADD(L("attn_v.weight"), c->wtype, c->n_embd, nkv, 2, sin_, 0.0);
        if (c->bias) {
            ADD(L("attn_q.bias"), TY_TYPE_F32, nq, 1, 1, 0.3, 0.0);
            ADD(L("attn_k.bias"), TY_TYPE_F32, nkv, 1, 1, 0.3, 0.0);
            ADD(L("attn_v.bias"), TY_TYPE_F32, nkv, 1, 1, 0.3, 0.0);
        }
        if (c->qk_norm) {
            ADD(L("attn_q_norm.weight"), c->norm_type, c->head_dim, 1, 1, 0.2, 1.0);
            ADD(L("attn_k_norm.weight"), c->norm_type, c->head_dim, 1, 1, 0.2, 1.0);
        }
        ADD(L("attn_output.weight"), c->wtype, nq, c->n_embd, 2, so, 0.0);
        ADD(L("ffn_norm.weight"), c->norm_type, c->n_embd, 1, 1, 0.2, 1.0);
        ADD(L("ffn_gate.weight"), c->wtype, c->n_embd, c->n_ff, 2, sin_, 0.0);
        ADD(L("ffn_up.weight"), c->wtype, c->n_embd, c->n_ff, 2, sin_, 0.0);
        ADD(L("ffn_down.weight"), c->wtype, c->n_ff, c->n_embd, 2, sff, 0.0);
#undef L
    }
#undef ADD
    for (int i = 0; i < n; i++) CHECK_OK(ty__gguf_writer_add_tensor(w, ts[i].name, ts[i].type, ts[i].n_dims, ts[i].ne));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    for (int i = 0; i < n; i++) {
        int64_t count = ts[i].ne[0] * ts[i].ne[1];
        float *f = ty__malloc(sizeof(float) * (size_t)count);
        uint64_t s = ty_test_name_seed(ts[i].name);
        for (int64_t j = 0; j < count; j++) f[j] = (float)(ts[i].offset + ts[i].scale * ty_test_urand(&s));
        size_t nbytes;
        CHECK_OK(ty__tensor_nbytes(ts[i].type, ts[i].n_dims, ts[i].ne, ts[i].name, &nbytes));
        void *q = ty__malloc(nbytes);
        const struct ty_type_traits *tr = ty__type_traits(ts[i].type);
        for (int64_t r = 0; r < ts[i].ne[1]; r++)
            tr->from_float(f + r * ts[i].ne[0], (char *)q + (size_t)r * (nbytes / (size_t)ts[i].ne[1]), ts[i].ne[0]);
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
    int64_t n = t->ne[0] * t->ne[1];
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

/* y[o] = sum_i W[o][i] x[i] + b[o] */
static void ref_matvec(double *y, const double *W, const double *b, const double *x, int n_in, int n_out) {
    for (int o = 0; o < n_out; o++) {
        double s = b ? b[o] : 0;
        for (int i = 0; i < n_in; i++) s += W[(size_t)o * n_in + i] * x[i];
        y[o] = s;
    }
}

/* HF's inverse frequencies, in double: default, linear (divided by factor) and YaRN (ramp between interpolation
 * and extrapolation over whole dimensions, from the original context; attention factor 0.1 ln(factor) + 1). */
static void ref_inv_freq(const struct tiny *c, double *inv, double *mscale) {
    int d = c->head_dim;
    *mscale = 1.0;
    for (int i = 0; i < d / 2; i++) inv[i] = pow(c->rope_base, -2.0 * i / d);
    if (!c->rope_scaling) return;
    if (!strcmp(c->rope_scaling, "linear")) {
        for (int i = 0; i < d / 2; i++) inv[i] /= c->rope_factor;
        return;
    }
    double orig = c->rope_orig_ctx ? c->rope_orig_ctx : c->n_ctx_train;
    double lo = floor(d * log(orig / (32 * 2 * M_PI)) / (2 * log(c->rope_base)));
    double hi = ceil(d * log(orig / (1 * 2 * M_PI)) / (2 * log(c->rope_base)));
    lo = fmax(lo, 0);
    hi = fmin(hi, d - 1);
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < d / 2; i++) {
        double ramp = fmin(1, fmax(0, (i - lo) / (hi - lo)));
        inv[i] = inv[i] / c->rope_factor * ramp + inv[i] * (1 - ramp);
    }
    *mscale = 0.1 * log(c->rope_factor) + 1.0;
}

static void ref_rope(double *v, int d, int pos, const double *inv, double ms) {
    for (int i = 0; i < d / 2; i++) {
        double a = pos * inv[i], c = cos(a) * ms, s = sin(a) * ms;
        double x0 = v[i], x1 = v[i + d / 2];
        v[i] = x0 * c - x1 * s;
        v[i + d / 2] = x1 * c + x0 * s;
    }
}

/* Logits (n x n_vocab) of the whole sequence. */
static double *ref_forward(const struct tiny *c, const char *path, const int32_t *ids, int n) {
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(path, &g));
    if (!g) return NULL;
    int E = c->n_embd, H = c->n_head, KV = c->n_head_kv, D = c->head_dim, F = c->n_ff, V = c->n_vocab;
    double *x = ty__calloc((size_t)n * E, sizeof(double));
    double *embd = tensor_f64(g, "token_embd.weight");
    for (int t = 0; t < n; t++) memcpy(x + (size_t)t * E, embd + (size_t)ids[t] * E, sizeof(double) * E);
    double inv[256], ms;
    ref_inv_freq(c, inv, &ms);
    double *h = ty__malloc(sizeof(double) * E), *q = ty__malloc(sizeof(double) * (size_t)n * H * D);
    double *k = ty__malloc(sizeof(double) * (size_t)n * KV * D), *v = ty__malloc(sizeof(double) * (size_t)n * KV * D);
    double *att = ty__malloc(sizeof(double) * H * D), *tmp = ty__malloc(sizeof(double) * (E > F ? E : F));
    double *g1 = ty__malloc(sizeof(double) * F), *u1 = ty__malloc(sizeof(double) * F);
    double *sc = ty__malloc(sizeof(double) * (size_t)n);
    for (int il = 0; il < c->n_layer; il++) {
        char nm[64];
#define W(suffix) (snprintf(nm, sizeof nm, "blk.%d.%s", il, suffix), tensor_f64(g, nm))
        double *an = W("attn_norm.weight"), *wq = W("attn_q.weight"), *wk = W("attn_k.weight"),
               *wv = W("attn_v.weight"), *bq = W("attn_q.bias"), *bk = W("attn_k.bias"), *bv = W("attn_v.bias"),
               *qn = W("attn_q_norm.weight"), *kn = W("attn_k_norm.weight"), *wo = W("attn_output.weight"),
               *fn = W("ffn_norm.weight"), *wg = W("ffn_gate.weight"), *wu = W("ffn_up.weight"),
               *wd = W("ffn_down.weight");
#undef W
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(h, x + (size_t)t * E, an, E);
            ref_matvec(q + (size_t)t * H * D, wq, bq, h, E, H * D);
            ref_matvec(k + (size_t)t * KV * D, wk, bk, h, E, KV * D);
            ref_matvec(v + (size_t)t * KV * D, wv, bv, h, E, KV * D);
            for (int hh = 0; hh < H; hh++) {
                double *qh = q + ((size_t)t * H + hh) * D;
                if (qn) ref_rmsnorm(qh, qh, qn, D);
                ref_rope(qh, D, t, inv, ms);
            }
            for (int hh = 0; hh < KV; hh++) {
                double *kh = k + ((size_t)t * KV + hh) * D;
                if (kn) ref_rmsnorm(kh, kh, kn, D);
                ref_rope(kh, D, t, inv, ms);
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
            ref_matvec(tmp, wo, NULL, att, H * D, E);
            for (int i = 0; i < E; i++) xt[i] += tmp[i];
            ref_rmsnorm(h, xt, fn, E);
            ref_matvec(g1, wg, NULL, h, E, F);
            ref_matvec(u1, wu, NULL, h, E, F);
            for (int i = 0; i < F; i++) g1[i] = g1[i] / (1 + exp(-g1[i])) * u1[i];
            ref_matvec(tmp, wd, NULL, g1, F, E);
            for (int i = 0; i < E; i++) xt[i] += tmp[i];
        }
        double *all[] = {an, wq, wk, wv, bq, bk, bv, qn, kn, wo, fn, wg, wu, wd};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ty_free(all[i]);
    }
    double *on = tensor_f64(g, "output_norm.weight"), *out = tensor_f64(g, "output.weight");
    if (!out) out = embd, embd = NULL;
    double *logits = ty__malloc(sizeof(double) * (size_t)n * V);
    for (int t = 0; t < n; t++) {
        ref_rmsnorm(h, x + (size_t)t * E, on, E);
        ref_matvec(logits + (size_t)t * V, out, NULL, h, E, V);
    }
    ty_free(on);
    ty_free(out);
    ty_free(embd);
    ty_free(x);
    ty_free(h);
    ty_free(q);
    ty_free(k);
    ty_free(v);
    ty_free(att);
    ty_free(tmp);
    ty_free(g1);
    ty_free(u1);
    ty_free(sc);
    ty__gguf_close(g);
    return logits;
}

/* ==== Helpers ==== */

static struct ty_model *load(const char *path, int n_threads) {
    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = n_threads;
    struct ty_model *m = NULL;
    CHECK_OK(ty_model_load(path, &mp, &m));
    return m;
}

/* `c` written to the test directory as `file` and loaded on n_threads; NULL (the failure counted) if either fails. */
static struct ty_model *tiny_model(const struct tiny *c, const char *file, int n_threads) {
    const char *path = ty_test_tmp(file);
    return write_tiny(c, path) ? load(path, n_threads) : NULL;
}

static struct ty_context *context(struct ty_model *m, int n_ctx, int n_batch, enum ty_type kv) {
    struct ty_context_params cp = ty_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_batch;
    cp.kv_type = kv;
    struct ty_context *ctx = NULL;
    CHECK_OK(ty_context_init(m, &cp, &ctx));
    return ctx;
}

static void prompt(int32_t *ids, int n, int n_vocab, uint64_t seed) {
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((ty_test_urand(&seed) * 0.5 + 0.5) * (n_vocab - 1));
}

static float *eval_all(struct ty_context *ctx, const int32_t *ids, int n, int n_vocab) {
    float *lg = ty__malloc(sizeof(float) * (size_t)n * n_vocab);
    CHECK_OK(ty_context_eval(ctx, ids, (size_t)n, TY_LOGITS_ALL, lg));
    return lg;
}

/* ==== Tests ==== */

static void check_against_reference(struct tiny c, const char *file) {
    struct ty_model *m = tiny_model(&c, file, 2);
    if (!m) return;
    const char *path = ty_test_tmp(file);
    CHECK(ty_model_n_vocab(m) == c.n_vocab);
    CHECK(ty_model_n_ctx_train(m) == c.n_ctx_train);
    CHECK(!strcmp(ty_model_arch(m), c.arch));
    CHECK(ty_tokenizer_n_vocab(ty_model_tokenizer(m)) == 538);
    enum { N = 40 };
    int32_t ids[N];
    prompt(ids, N, c.n_vocab, 42);
    struct ty_context *ctx = context(m, 64, 512, TY_TYPE_F32);
    float *lg = eval_all(ctx, ids, N, c.n_vocab);
    double *ref = ref_forward(&c, path, ids, N);
    if (ref) {
        double err = 0, mag = 0;
        for (size_t i = 0; i < (size_t)N * c.n_vocab; i++) {
            err = fmax(err, fabs(ref[i] - lg[i]));
            mag = fmax(mag, fabs(ref[i]));
        }
        CHECK_MSG(err <= 1e-4, "%s: max abs error %g against the naive forward pass (logits up to %g)", file, err, mag);
        CHECK(mag > 1.0); /* the logits are not trivially small */
    }
    ty_free(ref);
    ty_free(lg);
    ty_context_free(ctx);
    ty_model_free(m);
}

static void test_qwen3_yarn_matches_naive(void) {
    check_against_reference(qwen3_cfg(), "qwen3-yarn.gguf");
}

static void test_qwen2_bias_matches_naive(void) {
    check_against_reference(qwen2_cfg(), "qwen2.gguf");
}

static void test_qwen2_linear_tied_matches_naive(void) {
    struct tiny c = qwen2_cfg();
    c.tied = true;
    c.rope_scaling = "linear";
    c.rope_factor = 2.0f;
    check_against_reference(c, "qwen2-linear-tied.gguf");
}

static void test_batches_and_decode_agree(void) {
    struct tiny c = qwen3_cfg();
    struct ty_model *m = tiny_model(&c, "consistency.gguf", 3);
    if (!m) return;
    const char *path = ty_test_tmp("consistency.gguf");
    enum { N = 23 };
    int32_t ids[N];
    prompt(ids, N, c.n_vocab, 7);
    int V = c.n_vocab;
    for (int kv = 0; kv < 2; kv++) {
        enum ty_type kv_type = kv ? TY_TYPE_F16 : TY_TYPE_F32;
        struct ty_context *one = context(m, 64, 512, kv_type), *split = context(m, 64, 5, kv_type);
        struct ty_context *dec = context(m, 64, 512, kv_type);
        float *a = eval_all(one, ids, N, V), *b = eval_all(split, ids, N, V);
        CHECK(ty_context_n_past(one) == N && ty_context_n_past(split) == N);
        float *d = ty__malloc(sizeof(float) * (size_t)N * V);
        for (int i = 0; i < N; i++) CHECK_OK(ty_context_eval(dec, &ids[i], 1, TY_LOGITS_LAST, d + (size_t)i * V));
        CHECK_MSG(ty_test_max_diff(a, b, (size_t)N * V) <= 1e-5, "batch of 5 vs one batch: %g",
                  ty_test_max_diff(a, b, (size_t)N * V));
        CHECK_MSG(ty_test_max_diff(a, d, (size_t)N * V) <= 1e-5, "decode vs batch: %g",
                  ty_test_max_diff(a, d, (size_t)N * V));
        /* LAST gives the final row of ALL */
        struct ty_context *last = context(m, 64, 512, kv_type);
        float *l = ty__malloc(sizeof(float) * V);
        CHECK_OK(ty_context_eval(last, ids, N, TY_LOGITS_LAST, l));
        CHECK(ty_test_max_diff(l, a + (size_t)(N - 1) * V, (size_t)V) <= 1e-5);
        /* NONE then LAST on the rest equals the same rows */
        struct ty_context *none = context(m, 64, 512, kv_type);
        CHECK_OK(ty_context_eval(none, ids, 10, TY_LOGITS_NONE, NULL));
        CHECK_OK(ty_context_eval(none, ids + 10, N - 10, TY_LOGITS_LAST, l));
        CHECK(ty_test_max_diff(l, a + (size_t)(N - 1) * V, (size_t)V) <= 1e-5);
        ty_free(l);
        ty_free(a);
        ty_free(b);
        ty_free(d);
        ty_context_free(one);
        ty_context_free(split);
        ty_context_free(dec);
        ty_context_free(last);
        ty_context_free(none);
    }
    /* f16 vs f32 cache: close, but the rounding shows */
    struct ty_context *c32 = context(m, 64, 512, TY_TYPE_F32), *c16 = context(m, 64, 512, TY_TYPE_F16);
    float *a = eval_all(c32, ids, N, V), *b = eval_all(c16, ids, N, V);
    double diff = ty_test_max_diff(a, b, (size_t)N * V);
    CHECK_MSG(diff > 0 && diff < 2e-2, "f16 vs f32 KV cache: %g", diff);
    ty_free(a);
    ty_free(b);
    ty_context_free(c32);
    ty_context_free(c16);
    ty_model_free(m);

    /* one thread gives the same logits as three */
    struct ty_model *m1 = load(path, 1), *m3 = load(path, 3);
    if (m1 && m3) {
        struct ty_context *x1 = context(m1, 64, 8, TY_TYPE_F16), *x3 = context(m3, 64, 8, TY_TYPE_F16);
        a = eval_all(x1, ids, N, V);
        b = eval_all(x3, ids, N, V);
        CHECK(memcmp(a, b, sizeof(float) * N * V) == 0);
        ty_free(a);
        ty_free(b);
        ty_context_free(x1);
        ty_context_free(x3);
    }
    ty_model_free(m1);
    ty_model_free(m3);
}

/* On a host backend the output matrix writes the caller's logits memory (wrapped, kept for the next call with the same
 * memory); a backend that cannot wrap host memory computes into the context's logits tensor, copied back. Both give
 * the same bits, whether the caller passes the same memory again or other memory each step. */
static void test_logits_in_place_and_copied_agree(void) {
    struct tiny c = qwen2_cfg();
    struct ty_model *m = tiny_model(&c, "logits-out.gguf", 2);
    if (!m) return;
    enum { N = 6 };
    int32_t ids[N];
    prompt(ids, N, c.n_vocab, 5);
    const size_t V = (size_t)c.n_vocab;
    struct ty_backend *be = ty__model_backend(m);
    const struct ty_backend_iface *iface = be->iface;
    struct ty_backend_iface no_wrap = *iface;
    no_wrap.buffer_wrap = NULL;
    float *same = ty__malloc(sizeof(float) * V), *each = ty__malloc(sizeof(float) * N * V);
    float *copied = ty__malloc(sizeof(float) * N * V);
    struct ty_context *a = context(m, 16, 4, TY_TYPE_F16), *b = context(m, 16, 4, TY_TYPE_F16);
    for (int i = 0; i < N; i++) {
        CHECK_OK(ty_context_eval(a, &ids[i], 1, TY_LOGITS_LAST, same));
        CHECK_OK(ty_context_eval(b, &ids[i], 1, TY_LOGITS_LAST, each + (size_t)i * V));
        CHECK(memcmp(same, each + (size_t)i * V, sizeof(float) * V) == 0);
    }
    CHECK(ty__model_backend(m) == be && be->iface->buffer_wrap); /* the in-place path ran */
    be->iface = &no_wrap;
    struct ty_context *d = context(m, 16, 4, TY_TYPE_F16);
    for (int i = 0; i < N; i++) CHECK_OK(ty_context_eval(d, &ids[i], 1, TY_LOGITS_LAST, copied + (size_t)i * V));
    be->iface = iface;
    CHECK_MSG(memcmp(each, copied, sizeof(float) * N * V) == 0, "logits written in place differ from copied ones");
    CHECK(ty_test_max_diff(each, each + V, V) > 0); /* steps differ: a stale buffer would not pass */
    ty_free(same);
    ty_free(each);
    ty_free(copied);
    ty_context_free(a);
    ty_context_free(b);
    ty_context_free(d);
    ty_model_free(m);
}

static void test_context_full_and_truncate(void) {
    struct tiny c = qwen2_cfg();
    struct ty_model *m = tiny_model(&c, "ctx.gguf", 2);
    if (!m) return;
    int V = c.n_vocab;
    int32_t ids[16];
    prompt(ids, 16, V, 99);
    struct ty_context *ctx = context(m, 16, 4, TY_TYPE_F16);
    CHECK(ty_context_n_ctx(ctx) == 16);
    float *full = eval_all(ctx, ids, 12, V);
    /* the cache is head-major (ty__kv_cache_head_major): a KV head's successive positions are adjacent rows, and the
     * next head's start n_ctx rows on, so attention streams each head's keys and values contiguously */
    for (int il = 0; il < c.n_layer; il++)
        for (int kv = 0; kv < 2; kv++) {
            const struct ty_tensor *t = kv ? &ctx->v_cache[il] : &ctx->k_cache[il];
            const ptrdiff_t row = (ptrdiff_t)(t->ne[0] * (int64_t)sizeof(ty_f16));
            CHECK(t->ne[1] == 2 && t->ne[2] == 16);
            CHECK((char *)ty__tensor_row(t, 1, 5, 0) - (char *)ty__tensor_row(t, 1, 4, 0) == row);
            CHECK((char *)ty__tensor_row(t, 1, 0, 0) - (char *)ty__tensor_row(t, 0, 0, 0) == 16 * row);
            CHECK(ty__kv_position_bytes(t) == (double)(2 * row));
        }
    float *lg = ty__malloc(sizeof(float) * 16 * (size_t)V);
    CHECK_STATUS(ty_context_eval(ctx, ids, 5, TY_LOGITS_LAST, lg), TY_ERR_CONTEXT_FULL);
    CHECK(strstr(ty_last_error(), "16") != NULL);
    CHECK(ty_context_n_past(ctx) == 12);
    /* Truncate to 5, re-run the same tokens: the same logits. */
    CHECK_OK(ty_context_truncate(ctx, 5));
    CHECK(ty_context_n_past(ctx) == 5);
    CHECK_OK(ty_context_eval(ctx, ids + 5, 7, TY_LOGITS_ALL, lg));
    CHECK(ty_test_max_diff(lg, full + 5 * (size_t)V, 7 * (size_t)V) <= 1e-5);
    /* A different continuation after truncation, then back: still consistent. */
    CHECK_OK(ty_context_truncate(ctx, 11));
    CHECK_OK(ty_context_eval(ctx, ids + 11, 1, TY_LOGITS_LAST, lg));
    CHECK(ty_test_max_diff(lg, full + 11 * (size_t)V, (size_t)V) <= 1e-5);
    CHECK_OK(ty_context_eval(ctx, ids, 4, TY_LOGITS_NONE, NULL)); /* exactly full */
    CHECK(ty_context_n_past(ctx) == 16);
    CHECK_STATUS(ty_context_eval(ctx, ids, 1, TY_LOGITS_LAST, lg), TY_ERR_CONTEXT_FULL);
    CHECK_STATUS(ty_context_truncate(ctx, 17), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty_context_truncate(ctx, -1), TY_ERR_INVALID_ARG);
    CHECK_OK(ty_context_truncate(ctx, 0));

    /* bad input changes nothing */
    int32_t bad[2] = {3, V};
    CHECK_STATUS(ty_context_eval(ctx, bad, 2, TY_LOGITS_LAST, lg), TY_ERR_INVALID_ARG);
    bad[1] = -1;
    CHECK_STATUS(ty_context_eval(ctx, bad, 2, TY_LOGITS_LAST, lg), TY_ERR_INVALID_ARG);
    CHECK(ty_context_n_past(ctx) == 0);
    CHECK_STATUS(ty_context_eval(ctx, ids, 2, TY_LOGITS_LAST, NULL), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty_context_eval(ctx, ids, 0, TY_LOGITS_LAST, lg), TY_ERR_INVALID_ARG);
    CHECK_OK(ty_context_eval(ctx, ids, 0, TY_LOGITS_NONE, NULL));
    CHECK(ty_context_n_past(ctx) == 0);
    ty_free(lg);
    ty_free(full);
    ty_context_free(ctx);

    /* parameters */
    struct ty_context_params cp = ty_context_default_params();
    CHECK(cp.kv_type == TY_TYPE_F16 && cp.n_ctx == 0 && cp.n_batch == 0);
    struct ty_context *x = NULL;
    cp.kv_type = TY_TYPE_Q8_0;
    CHECK_STATUS(ty_context_init(m, &cp, &x), TY_ERR_INVALID_ARG);
    cp = ty_context_default_params();
    cp.n_ctx = -3;
    CHECK_STATUS(ty_context_init(m, &cp, &x), TY_ERR_INVALID_ARG);
    CHECK(x == NULL);
    CHECK_OK(ty_context_init(m, NULL, &x)); /* defaults: the training context, 128 here */
    if (x) CHECK(ty_context_n_ctx(x) == 128);
    ty_context_free(x);
    ty_model_free(m);
}

static void expect_load_error(struct tiny c, const char *file, enum ty_status want, const char *needle1,
                              const char *needle2) {
    const char *path = ty_test_tmp(file);
    if (!write_tiny(&c, path)) return;
    struct ty_model *m = (struct ty_model *)1;
    CHECK_STATUS(ty_model_load(path, NULL, &m), want);
    CHECK(m == NULL);
    const char *msg = ty_last_error();
    CHECK_MSG(strstr(msg, needle1) != NULL, "'%s' not in '%s'", needle1, msg);
    if (needle2) CHECK_MSG(strstr(msg, needle2) != NULL, "'%s' not in '%s'", needle2, msg);
}

static void test_load_errors(void) {
    size_t base = ty_mem_allocated();
    struct tiny c = qwen3_cfg();
    c.arch = "llama";
    expect_load_error(c, "llama.gguf", TY_ERR_UNSUPPORTED, "architecture 'llama' is not supported",
                      "supported: qwen2, qwen3");
    c = qwen3_cfg();
    c.skip_tensor = "blk.1.ffn_up.weight";
    expect_load_error(c, "missing.gguf", TY_ERR_FORMAT, "blk.1.ffn_up.weight", "missing");
    c = qwen3_cfg();
    c.skip_tensor = "blk.0.attn_k_norm.weight"; /* qwen3 needs its q/k norms */
    expect_load_error(c, "no-knorm.gguf", TY_ERR_FORMAT, "blk.0.attn_k_norm.weight", NULL);
    c = qwen3_cfg();
    c.wrong_tensor = "blk.0.attn_k.weight";
    expect_load_error(c, "shape.gguf", TY_ERR_FORMAT, "blk.0.attn_k.weight has shape [64, 31]", "expected [64, 32]");
    c = qwen3_cfg();
    c.skip_key = "qwen3.embedding_length";
    expect_load_error(c, "nokey.gguf", TY_ERR_FORMAT, "qwen3.embedding_length", NULL);
    c = qwen3_cfg();
    c.rope_scaling = "longrope";
    expect_load_error(c, "longrope.gguf", TY_ERR_UNSUPPORTED, "longrope", NULL);

    struct ty_model *m = (struct ty_model *)1;
    CHECK_STATUS(ty_model_load(ty_test_tmp("no-such-file.gguf"), NULL, &m), TY_ERR_IO);
    CHECK(m == NULL);
    struct ty_model_params mp = ty_model_default_params();
    mp.backend = "quantum";
    c = qwen2_cfg();
    const char *path = ty_test_tmp("backend.gguf");
    if (write_tiny(&c, path)) {
        CHECK_STATUS(ty_model_load(path, &mp, &m), TY_ERR_UNSUPPORTED);
        CHECK(strstr(ty_last_error(), "quantum") != NULL);
    }
    CHECK(ty_mem_allocated() == base);
}

/* Quantised matrices and f16 norms load, and the logits stay close to the f32 model's. */
static void test_weight_types(void) {
    struct tiny c = qwen2_cfg();
    c.n_embd = 64; /* every row length a multiple of Q8_0's 32-element blocks */
    c.n_head = 4;
    c.head_dim = 16;
    c.n_ff = 96;
    const char *p32 = ty_test_tmp("w-f32.gguf");
    if (!write_tiny(&c, p32)) return;
    struct ty_model *m = load(p32, 2);
    if (!m) return;
    enum { N = 12 };
    int32_t ids[N];
    prompt(ids, N, c.n_vocab, 5);
    struct ty_context *ctx = context(m, 32, 512, TY_TYPE_F32);
    float *ref = eval_all(ctx, ids, N, c.n_vocab);
    ty_context_free(ctx);
    ty_model_free(m);
    const struct {
        enum ty_type w, norm;
        double tol;
    } cases[] = {
        {TY_TYPE_F16, TY_TYPE_F32, 2e-2}, {TY_TYPE_BF16, TY_TYPE_F32, 2e-1}, {TY_TYPE_Q8_0, TY_TYPE_F16, 2e-1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c.wtype = cases[i].w;
        c.norm_type = cases[i].norm;
        const char *p = ty_test_tmp("w-other.gguf");
        if (!write_tiny(&c, p)) continue;
        m = load(p, 2);
        if (!m) continue;
        ctx = context(m, 32, 512, TY_TYPE_F32);
        float *lg = eval_all(ctx, ids, N, c.n_vocab);
        double d = ty_test_max_diff(ref, lg, (size_t)N * c.n_vocab);
        CHECK_MSG(d > 0 && d < cases[i].tol, "%s weights: max diff %g from f32", ty_type_name(cases[i].w), d);
        ty_free(lg);
        ty_context_free(ctx);
        ty_model_free(m);
    }
    ty_free(ref);
}

void ty_tests(void) {
    size_t base = ty_mem_allocated();
    TY_RUN(test_qwen3_yarn_matches_naive);
    TY_RUN(test_qwen2_bias_matches_naive);
    TY_RUN(test_qwen2_linear_tied_matches_naive);
    TY_RUN(test_batches_and_decode_agree);
    TY_RUN(test_logits_in_place_and_copied_agree);
    TY_RUN(test_context_full_and_truncate);
    TY_RUN(test_load_errors);
    TY_RUN(test_weight_types);
    CHECK_MSG(ty_mem_allocated() == base, "%zu bytes still allocated", ty_mem_allocated() - base);
}
