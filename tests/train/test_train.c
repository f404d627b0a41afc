/*
 * test_train.c - the trainer (src/train/): the gemm against a plain f64 reference, every op's backward against
 * central finite differences, the whole model's gradients against finite differences, gradient accumulation, thread
 * independence, exact resume from a checkpoint (and its error cases), the exported GGUF's logits through the
 * inference path (ty_context_eval) against the trainer's forward, and a 200-step AdamW run against PyTorch's loss
 * curve (tests/data/train, made by tests/fixtures/make_train_fixtures.py).
 *
 * Tolerances (f32 throughout):
 *  - gemm vs f64 reference: |err| <= 1e-5 * (1 + |ref|) with K <= 300.
 *  - finite differences: central, step 1e-2 on inputs of unit scale (1e-3 on model parameters), computed in f32 so
 *    rounding of the loss limits them: |analytic - numeric| <= 2e-3 * (|numeric| + 0.05) per op, and
 *    <= 2e-2 * |numeric| + 2e-3 per model parameter (the whole model's loss rounds to ~1e-7 relative).
 *  - exported GGUF through ty_context_eval (f32 KV cache) vs the trainer's logits: 1e-4 absolute.
 *  - PyTorch: loss before step 0 within 1e-5, per-tensor gradient norms of step 0 within 1e-4 relative, and every
 *    step's loss over 200 steps within 1e-5 relative (measured: 2.7e-7; summation order differs from PyTorch's).
 */
#define TRAIN_FIXTURE_SEED 12345
#include "train-fixture.h"

#include "model/tokenizer.h"

#include <jansson.h>

/* ==== Helpers ==== */

static double weighted(const float *y, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

static struct ty_train_config tiny_config(bool tied) {
    return fixture_config(37, 16, 4, 24, tied);
}

/* ==== GEMM ==== */

static void check_gemm(void *ctx, int64_t M, int64_t N, int64_t K, int trans, bool acc) {
    struct gemm_case g = gemm_case_new(M, N, K, trans);
    gemm_case_run(&g, ctx, g.C, acc, TY_TRAIN_PRECISION_F32);
    double worst = 0;
    for (int64_t m = 0; m < M; m++) {
        for (int64_t n = 0; n < N; n++) {
            double s = acc ? g.C0[m * N + n] : 0.0;
            for (int64_t k = 0; k < K; k++) s += (double)g.A[m * g.rs + k * g.cs] * g.B[k * g.b_rs + n * g.b_cs];
            double e = fabs(g.C[m * N + n] - s) / (1 + fabs(s));
            worst = e > worst ? e : worst;
        }
    }
    CHECK_MSG(worst <= 1e-5, "gemm %lld x %lld x %lld trans %d acc %d: error %g", (long long)M, (long long)N,
              (long long)K, trans, acc, worst);
    gemm_case_same_on_one_thread(&g, ctx, acc, TY_TRAIN_PRECISION_F32);
    gemm_case_free(&g);
}

static void test_gemm(void) {
    struct ty_threadpool *tp = NULL;
    void *ctx = NULL;
    CHECK_OK(ty__threadpool_init(2, &tp));
    CHECK_OK(ty__train_cpu_ctx_new(tp, &ctx));
    /* edges of every tile and block size: several row and column blocks, and k chunks (the last two) */
    int64_t shapes[][3] = {{1, 1, 1},    {4, 32, 8},      {5, 33, 7},     {37, 70, 300}, {128, 96, 64},
                           {3, 200, 17}, {150, 1090, 40}, {290, 70, 300}, {9, 2100, 260}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        for (int t = 0; t < 4; t++) {
            check_gemm(ctx, shapes[i][0], shapes[i][1], shapes[i][2], t, t & 1);
            check_gemm(NULL, shapes[i][0], shapes[i][1], shapes[i][2], t, !(t & 1));
        }
    }
    ty__train_cpu_ctx_free(ctx);
    ty__threadpool_free(tp);
}

/* ==== Ops vs finite differences ==== */

#define FD_H 1e-2f

static void fd_check(const char *what, const float *analytic, float *x, size_t n, double (*loss)(void *), void *ctx) {
    double worst = 0;
    size_t stride = n > 64 ? n / 61 : 1;
    for (size_t i = 0; i < n; i += stride) {
        float keep = x[i];
        x[i] = keep + FD_H;
        double lp = loss(ctx);
        x[i] = keep - FD_H;
        double lm = loss(ctx);
        x[i] = keep;
        double num = (lp - lm) / (2.0 * FD_H);
        double e = fabs(analytic[i] - num) / (fabs(num) + 0.05);
        worst = e > worst ? e : worst;
    }
    CHECK_MSG(worst <= 2e-3, "%s: finite-difference mismatch %g", what, worst);
}

struct op_case {
    const struct ty_train_ops *o;
    int64_t rows, dim, T, H, Hkv, hd, S, nseq, V;
    float *x, *w, *y, *r, *rstd, *q, *k, *v, *p, *u;
    int32_t *pos, *tgt;
    struct ty_rope rope;
};

static double rms_loss(void *arg) {
    struct op_case *c = arg;
    c->o->rms_norm_fwd(NULL, c->y, c->rstd, c->x, c->w, c->rows, c->dim, 1e-6f);
    return weighted(c->y, c->r, (size_t)(c->rows * c->dim));
}

static void test_rms_norm_grad(void) {
    struct op_case c = {.o = ty__train_ops_cpu(), .rows = 5, .dim = 24};
    size_t n = (size_t)(c.rows * c.dim);
    float x[120], w[24], y[120], r[120], rstd[5], dx[120] = {0}, dw[24] = {0};
    c.x = x, c.w = w, c.y = y, c.r = r, c.rstd = rstd;
    fill(x, n, 1), fill(w, 24, 1), fill(r, n, 1);
    rms_loss(&c);
    c.o->rms_norm_bwd(NULL, dx, dw, r, x, rstd, w, c.rows, c.dim);
    fd_check("rms_norm dx", dx, x, n, rms_loss, &c);
    fd_check("rms_norm dw", dw, w, 24, rms_loss, &c);
}

static double rope_loss(void *arg) {
    struct op_case *c = arg;
    size_t n = (size_t)(c->T * c->H * c->hd);
    memcpy(c->y, c->x, n * 4);
    c->o->rope(NULL, c->y, c->pos, c->T, c->H, c->hd, &c->rope, false);
    return weighted(c->y, c->r, n);
}

static void test_rope_grad(void) {
    struct op_case c = {.o = ty__train_ops_cpu(), .T = 6, .H = 2, .hd = 8};
    struct ty_rope_config rc = {.n_dims = 8, .freq_base = 100.0f};
    CHECK_OK(ty__rope_init(&rc, &c.rope));
    float x[96], y[96], r[96], dx[96];
    int32_t pos[6] = {0, 1, 2, 7, 30, 100};
    c.x = x, c.y = y, c.r = r, c.pos = pos;
    fill(x, 96, 1), fill(r, 96, 1);
    memcpy(dx, r, sizeof dx);
    c.o->rope(NULL, dx, pos, 6, 2, 8, &c.rope, true);
    fd_check("rope", dx, x, 96, rope_loss, &c);
}

static double attn_loss(void *arg) {
    struct op_case *c = arg;
    c->o->attn_fwd(NULL, c->y, c->p, c->q, c->k, c->v, c->nseq, c->S, c->H, c->Hkv, c->hd, 0.5f,
                   TY_TRAIN_PRECISION_F32);
    return weighted(c->y, c->r, (size_t)(c->nseq * c->S * c->H * c->hd));
}

static void test_attention_grad(void) {
    struct op_case c = {.o = ty__train_ops_cpu(), .nseq = 2, .S = 5, .H = 4, .Hkv = 2, .hd = 6};
    enum { NQ = 2 * 5 * 4 * 6, NK = 2 * 5 * 2 * 6 };
    float q[NQ], k[NK], v[NK], y[NQ], r[NQ], p[2 * 4 * 25], dq[NQ], dk[NK], dv[NK];
    c.q = q, c.k = k, c.v = v, c.y = y, c.r = r, c.p = p;
    fill(q, NQ, 1), fill(k, NK, 1), fill(v, NK, 1), fill(r, NQ, 1);
    attn_loss(&c);
    CHECK_OK(c.o->attn_bwd(NULL, dq, dk, dv, r, p, q, k, v, 2, 5, 4, 2, 6, 0.5f, TY_TRAIN_PRECISION_F32));
    fd_check("attention dq", dq, q, NQ, attn_loss, &c);
    fd_check("attention dk", dk, k, NK, attn_loss, &c);
    fd_check("attention dv", dv, v, NK, attn_loss, &c);
    /* causality: the probabilities above the diagonal are exactly zero */
    CHECK(p[1] == 0.0f && p[4] == 0.0f && p[25 + 2 * 5 + 3] == 0.0f);
}

/* Sequences longer than the kernel's row block (64 queries): forward and backward against the formulas in f64
 * (softmax, then dP = dO V^T, dS = P (dP - rowsum(P dP)) scale, dQ = dS K, dK = dS^T Q, dV = P^T dO), so every
 * block boundary of the causal mask is covered; 1e-5 relative to the largest magnitude. */
static void test_attention_blocks(void) {
    enum { NS = 2, S = 131, H = 4, HKV = 2, HD = 8 };
    const struct ty_train_ops *o = ty__train_ops_cpu();
    size_t nq = (size_t)NS * S * H * HD, nk = (size_t)NS * S * HKV * HD, np = (size_t)NS * H * S * S;
    float *q = ty__malloc(nq * 4), *k = ty__malloc(nk * 4), *v = ty__malloc(nk * 4), *out = ty__malloc(nq * 4);
    float *dout = ty__malloc(nq * 4), *p = ty__malloc(np * 4), *dq = ty__malloc(nq * 4), *dk = ty__malloc(nk * 4);
    float *dv = ty__malloc(nk * 4);
    double *rq = ty__calloc(nq, 8), *rk = ty__calloc(nk, 8), *rv = ty__calloc(nk, 8), *ro = ty__calloc(nq, 8);
    double *pr = ty__malloc(S * 8), *dp = ty__malloc(S * 8);
    fill(q, nq, 1), fill(k, nk, 1), fill(v, nk, 1), fill(dout, nq, 1);
    struct ty_threadpool *tp = NULL;
    void *ctx = NULL;
    CHECK_OK(ty__threadpool_init(2, &tp));
    CHECK_OK(ty__train_cpu_ctx_new(tp, &ctx));
    CHECK_OK(o->attn_fwd(ctx, out, p, q, k, v, NS, S, H, HKV, HD, 0.35f, TY_TRAIN_PRECISION_F32));
    CHECK_OK(o->attn_bwd(ctx, dq, dk, dv, dout, p, q, k, v, NS, S, H, HKV, HD, 0.35f, TY_TRAIN_PRECISION_F32));
#define QI(s, i, h) ((((size_t)(s)*S + (i)) * H + (h)) * HD)
#define KI(s, t, h) ((((size_t)(s)*S + (t)) * HKV + (h)) * HD)
    for (int s = 0; s < NS; s++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < S; i++) {
                int hk = h / (H / HKV);
                double mx = -1e300, sum = 0, rowdot = 0;
                for (int t = 0; t <= i; t++) {
                    double d = 0;
                    for (int e = 0; e < HD; e++) d += (double)q[QI(s, i, h) + e] * k[KI(s, t, hk) + e];
                    pr[t] = d * 0.35f;
                    mx = pr[t] > mx ? pr[t] : mx;
                }
                for (int t = 0; t <= i; t++) sum += pr[t] = exp(pr[t] - mx);
                for (int t = 0; t <= i; t++) {
                    pr[t] /= sum;
                    double d = 0;
                    for (int e = 0; e < HD; e++) {
                        ro[QI(s, i, h) + e] += pr[t] * v[KI(s, t, hk) + e];
                        d += (double)dout[QI(s, i, h) + e] * v[KI(s, t, hk) + e];
                    }
                    dp[t] = d;
                    rowdot += pr[t] * d;
                }
                for (int t = 0; t <= i; t++) {
                    double ds = pr[t] * (dp[t] - rowdot) * 0.35f;
                    for (int e = 0; e < HD; e++) {
                        rq[QI(s, i, h) + e] += ds * k[KI(s, t, hk) + e];
                        rk[KI(s, t, hk) + e] += ds * q[QI(s, i, h) + e];
                        rv[KI(s, t, hk) + e] += pr[t] * dout[QI(s, i, h) + e];
                    }
                }
            }
#undef QI
#undef KI
    const float *got[4] = {out, dq, dk, dv};
    const double *want[4] = {ro, rq, rk, rv};
    size_t n[4] = {nq, nq, nk, nk};
    for (int c = 0; c < 4; c++) {
        double worst = 0, big = 0;
        for (size_t i = 0; i < n[c]; i++) big = fabs(want[c][i]) > big ? fabs(want[c][i]) : big;
        for (size_t i = 0; i < n[c]; i++) {
            double e = fabs(got[c][i] - want[c][i]) / big;
            worst = e > worst ? e : worst;
        }
        CHECK_MSG(worst <= 1e-5, "blocked attention (%s) vs f64: %g", (const char *[]){"out", "dq", "dk", "dv"}[c],
                  worst);
    }
    ty__train_cpu_ctx_free(ctx);
    ty__threadpool_free(tp);
    ty_free(q), ty_free(k), ty_free(v), ty_free(out), ty_free(dout), ty_free(p), ty_free(dq), ty_free(dk);
    ty_free(dv), ty_free(rq), ty_free(rk), ty_free(rv), ty_free(ro), ty_free(pr), ty_free(dp);
}

static double glu_loss(void *arg) {
    struct op_case *c = arg;
    c->o->swiglu_fwd(NULL, c->y, c->x, c->u, c->rows);
    return weighted(c->y, c->r, (size_t)c->rows);
}

static void test_swiglu_grad(void) {
    struct op_case c = {.o = ty__train_ops_cpu(), .rows = 50};
    float g[50], u[50], y[50], r[50], dg[50], du[50];
    c.x = g, c.u = u, c.y = y, c.r = r;
    fill(g, 50, 3), fill(u, 50, 1), fill(r, 50, 1);
    c.o->swiglu_bwd(NULL, dg, du, r, g, u, 50);
    fd_check("swiglu dg", dg, g, 50, glu_loss, &c);
    fd_check("swiglu du", du, u, 50, glu_loss, &c);
}

static double xent_loss(void *arg) {
    struct op_case *c = arg;
    memcpy(c->y, c->x, (size_t)(c->rows * c->V) * 4);
    c->o->cross_entropy(NULL, c->y, c->rstd, c->tgt, c->rows, c->V, 0.0f);
    double s = 0;
    for (int64_t i = 0; i < c->rows; i++) s += c->rstd[i] * (i + 1);
    return s;
}

static void test_cross_entropy_grad(void) {
    struct op_case c = {.o = ty__train_ops_cpu(), .rows = 4, .V = 11};
    float x[44], y[44], loss[4], d[44];
    int32_t tgt[4] = {3, -1, 0, 10};
    c.x = x, c.y = y, c.rstd = loss, c.tgt = tgt;
    fill(x, 44, 3);
    /* row i weighs (i + 1): scale each row's gradient by hand, the op takes one scale */
    memcpy(d, x, sizeof d);
    c.o->cross_entropy(NULL, d, loss, tgt, 4, 11, 1.0f);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 11; j++) d[i * 11 + j] *= (float)(i + 1);
    CHECK(loss[1] == 0.0f && d[11] == 0.0f); /* ignored target */
    fd_check("cross_entropy", d, x, 44, xent_loss, &c);
}

/* ==== Whole model vs finite differences ==== */

struct model_case {
    struct ty_train_model *m;
    const int32_t *tok;
    int64_t nseq, S;
};

static double model_loss(void *arg) {
    struct model_case *c = arg;
    double loss;
    ty__train_forward(c->m, c->tok, c->nseq, c->S, &loss, NULL);
    return loss;
}

static void check_model_grads(bool tied) {
    struct ty_train_config cfg = tiny_config(tied);
    struct ty_train_model *m = NULL;
    CHECK_OK(ty__train_model_init(&cfg, 2, &m));
    if (!m) return;
    ty__train_model_init_random(m, 99, 0.3f);
    /* norms away from 1 so their gradients are exercised at a generic point */
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].n_dims == 1)
            for (size_t j = 0; j < m->tensors[i].n; j++) m->params[m->tensors[i].offset + j] += 0.3f * frand();
    int32_t tok[2 * 7];
    for (int i = 0; i < 14; i++) tok[i] = (int32_t)((i * 7 + 3) % 37);
    tok[6] = -1; /* an ignored target (the last of sequence 0) */
    ty__train_zero_grads(m);
    double loss;
    CHECK_OK(ty__train_forward_backward(m, tok, 2, 6, 1.0f, &loss));
    struct model_case c = {m, tok, 2, 6};
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m->n_tensors; i++) {
        const struct ty_train_tensor *t = &m->tensors[i];
        for (int s = 0; s < 4; s++) {
            size_t j = (size_t)(s * 7919 + i * 31) % t->n;
            float *p = m->params + t->offset + j, keep = *p;
            const float h = 1e-3f;
            *p = keep + h;
            double lp = model_loss(&c);
            *p = keep - h;
            double lm = model_loss(&c);
            *p = keep;
            double num = (lp - lm) / (2.0 * h), an = m->grads[t->offset + j];
            double e = fabs(an - num) - (2e-2 * fabs(num) + 2e-3);
            if (e > worst) worst = e, worst_name = t->name;
        }
    }
    CHECK_MSG(worst <= 0, "model (%s) gradient vs finite differences: %s off by %g beyond tolerance",
              tied ? "tied" : "untied", worst_name, worst);
    ty__train_model_free(m);
}

static void test_model_grads(void) {
    check_model_grads(true);
    check_model_grads(false);
}

/* ==== Accumulation and threads ==== */

static void test_accumulation(void) {
    struct ty_train_config cfg = tiny_config(false);
    struct ty_train_model *m = NULL;
    CHECK_OK(ty__train_model_init(&cfg, 1, &m));
    if (!m) return;
    ty__train_model_init_random(m, 5, 0.1f);
    int32_t tok[4 * 9];
    for (int i = 0; i < 36; i++) tok[i] = (int32_t)((i * 13 + 1) % 37);
    double loss;
    ty__train_zero_grads(m);
    CHECK_OK(ty__train_forward_backward(m, tok, 4, 8, 1.0f, &loss));
    float *full = ty__malloc(m->n_params * 4);
    memcpy(full, m->grads, m->n_params * 4);
    ty__train_zero_grads(m);
    CHECK_OK(ty__train_forward_backward(m, tok, 2, 8, 0.5f, &loss));
    CHECK_OK(ty__train_forward_backward(m, tok + 18, 2, 8, 0.5f, &loss));
    double worst = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        double e = fabs(full[i] - m->grads[i]) / (fabs(full[i]) + 1e-4);
        worst = e > worst ? e : worst;
    }
    CHECK_MSG(worst <= 1e-3, "two accumulated half batches vs one batch: %g", worst);
    /* zeroing leaves the matrices for the backward to overwrite: whatever they held before, the gradients of one
     * batch after ty__train_zero_grads are the same bits */
    for (size_t i = 0; i < m->n_params; i++) m->grads[i] = 123.0f + (float)i;
    ty__train_zero_grads(m);
    CHECK_OK(ty__train_forward_backward(m, tok, 4, 8, 1.0f, &loss));
    CHECK(memcmp(full, m->grads, m->n_params * 4) == 0);
    /* a batch with no counted target adds nothing, and a zeroed model then reads all zeros */
    int32_t none[2 * 2] = {1, -1, 2, -1}; /* two sequences of one input whose target is ignored */
    for (size_t i = 0; i < m->n_params; i++) m->grads[i] = 7.0f;
    ty__train_zero_grads(m);
    CHECK_OK(ty__train_forward_backward(m, none, 2, 1, 1.0f, &loss));
    bool zero = true;
    for (size_t i = 0; i < m->n_params; i++) zero &= m->grads[i] == 0.0f;
    CHECK(zero);
    ty_free(full);
    ty__train_model_free(m);
}

/* Runs `steps` steps from seed 3 with `threads` threads; returns the parameters (ty_free) and the losses. */
static float *run_steps(int threads, int steps, double *losses) {
    struct ty_train_config cfg = tiny_config(true);
    struct ty_train_model *m = NULL;
    if (ty__train_model_init(&cfg, threads, &m) != TY_OK) return NULL;
    ty__train_model_init_random(m, 3, 0.1f);
    struct ty_train_optim o;
    struct ty_train_optim_params op = ty__train_optim_default_params();
    op.warmup = 2, op.total_steps = steps;
    ty__train_optim_init(&o, m, &op);
    int32_t tok[3 * 17];
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < 51; i++) tok[i] = (int32_t)((i * 11 + s * 5) % 37);
        ty__train_zero_grads(m);
        ty__train_forward_backward(m, tok, 3, 16, 1.0f, &losses[s]);
        ty__train_optim_step(&o, m, NULL, NULL);
    }
    float *p = ty__malloc(m->n_params * 4);
    memcpy(p, m->params, m->n_params * 4);
    ty__train_optim_free(&o);
    ty__train_model_free(m);
    return p;
}

static void test_thread_independence(void) {
    double l1[4], l2[4];
    float *p1 = run_steps(1, 4, l1), *p2 = run_steps(2, 4, l2);
    CHECK(p1 && p2);
    if (p1 && p2) {
        struct ty_train_config cfg = tiny_config(true);
        struct ty_train_model *m = NULL;
        CHECK_OK(ty__train_model_init(&cfg, 1, &m));
        CHECK(memcmp(p1, p2, m->n_params * 4) == 0);
        CHECK(memcmp(l1, l2, sizeof l1) == 0);
        CHECK(l1[3] < l1[0]);
        ty__train_model_free(m);
    }
    ty_free(p1);
    ty_free(p2);
}

/* ==== Checkpoints ==== */

static void batch_of(int step, int32_t *tok) {
    for (int i = 0; i < 2 * 13; i++) tok[i] = (int32_t)((i * 7 + step * 3 + i / 13) % 37);
}

static void test_checkpoint_resume(void) {
    struct ty_train_config cfg = tiny_config(false);
    struct ty_train_optim_params op = ty__train_optim_default_params();
    op.warmup = 2, op.total_steps = 6;
    struct ty_train_run_id id = {.seed = 1, .n_seq = 2, .seq_len = 12, .accum = 1, .optim = op, .data_hash = 77};
    const char *path = ty_test_tmp("ckpt.bin");
    double straight[6], resumed[6];
    int32_t tok[26];
    struct ty_train_model *a = NULL, *b = NULL;
    CHECK_OK(ty__train_model_init(&cfg, 2, &a));
    CHECK_OK(ty__train_model_init(&cfg, 2, &b));
    if (!a || !b) return;
    ty__train_model_init_random(a, 8, 0.1f);
    struct ty_train_optim oa, ob;
    CHECK_OK(ty__train_optim_init(&oa, a, &op));
    CHECK_OK(ty__train_optim_init(&ob, b, &op));
    for (int s = 0; s < 6; s++) {
        batch_of(s, tok);
        ty__train_zero_grads(a);
        CHECK_OK(ty__train_forward_backward(a, tok, 2, 12, 1.0f, &straight[s]));
        ty__train_optim_step(&oa, a, NULL, NULL);
        if (s == 2) {
            CHECK_OK(ty__train_checkpoint_save(path, a, &oa, &id));
            memcpy(resumed, straight, sizeof resumed);
        }
    }
    CHECK_OK(ty__train_checkpoint_load(path, b, &ob, &id));
    CHECK(ob.step == 3);
    for (int s = 3; s < 6; s++) {
        batch_of(s, tok);
        ty__train_zero_grads(b);
        CHECK_OK(ty__train_forward_backward(b, tok, 2, 12, 1.0f, &resumed[s]));
        ty__train_optim_step(&ob, b, NULL, NULL);
    }
    CHECK(memcmp(straight, resumed, sizeof straight) == 0);
    CHECK(memcmp(a->params, b->params, a->n_params * 4) == 0);

    /* a resume with other hyperparameters names the setting */
    struct ty_train_run_id other = id;
    other.optim.lr *= 2;
    CHECK_STATUS(ty__train_checkpoint_load(path, b, &ob, &other), TY_ERR_INVALID_ARG);
    CHECK(strstr(ty_last_error(), "--lr") != NULL);
    /* a flipped byte fails the checksum; a truncated file is named as such */
    char *data = NULL;
    size_t size = 0;
    CHECK_OK(ty__file_read(path, 1 << 26, &data, &size));
    if (data) {
        const char *bad = ty_test_tmp("ckpt-bad.bin");
        data[size / 2] ^= 0x40;
        FILE *f = fopen(bad, "wb");
        fwrite(data, 1, size, f);
        fclose(f);
        CHECK_STATUS(ty__train_checkpoint_load(bad, b, &ob, &id), TY_ERR_FORMAT);
        CHECK(strstr(ty_last_error(), "checksum") != NULL);
        f = fopen(bad, "wb");
        fwrite(data, 1, size - 100, f);
        fclose(f);
        CHECK_STATUS(ty__train_checkpoint_load(bad, b, &ob, &id), TY_ERR_FORMAT);
        CHECK(strstr(ty_last_error(), "truncated") != NULL);
        ty_free(data);
    }
    ty__train_optim_free(&oa);
    ty__train_optim_free(&ob);
    ty__train_model_free(a);
    ty__train_model_free(b);
}

/* ==== Export: the inference path computes the trainer's logits ==== */

static void check_export(bool tied, int32_t n_vocab) {
    struct ty_tokenizer *tok = NULL;
    CHECK_OK(ty__tokenizer_load_hf(ty_test_src("tests/data/models/qwen3-tiny/tokenizer.json"),
                                   ty_test_src("tests/data/models/qwen3-tiny/tokenizer_config.json"), &tok));
    struct ty_train_config cfg = tiny_config(tied);
    cfg.n_vocab = n_vocab;
    struct ty_train_model *m = NULL;
    CHECK_OK(ty__train_model_init(&cfg, 2, &m));
    if (!m || !tok) return;
    ty__train_model_init_random(m, 21, 0.2f);
    const char *path = ty_test_tmp(tied ? "export-tied.gguf" : "export.gguf");
    CHECK_OK(ty__train_model_save_gguf(m, tok, "test export", path));
    int32_t ids[17];
    for (int i = 0; i < 17; i++) ids[i] = (int32_t)((i * 97 + 5) % 530);
    double loss;
    CHECK_OK(ty__train_forward(m, ids, 1, 16, &loss, NULL));
    struct ty_model *model = NULL;
    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = 1;
    CHECK_OK(ty_model_load(path, &mp, &model));
    if (model) {
        CHECK(ty_model_n_vocab(model) == n_vocab);
        struct ty_context *ctx = NULL;
        struct ty_context_params cp = ty_context_default_params();
        cp.kv_type = TY_TYPE_F32;
        cp.n_ctx = 64;
        CHECK_OK(ty_context_init(model, &cp, &ctx));
        float *logits = ty__malloc((size_t)16 * (size_t)n_vocab * 4);
        CHECK_OK(ty_context_eval(ctx, ids, 16, TY_LOGITS_ALL, logits));
        double worst = 0;
        for (size_t i = 0; i < (size_t)16 * (size_t)n_vocab; i++) {
            double e = fabs(logits[i] - m->logits[i]);
            worst = e > worst ? e : worst;
        }
        CHECK_MSG(worst <= 1e-4, "exported GGUF logits differ from the trainer's by %g", worst);
        ty_free(logits);
        ty_context_free(ctx);
        ty_model_free(model);
    }
    ty_tokenizer_free(tok);
    ty__train_model_free(m);
}

static void test_export_logits(void) {
    check_export(true, 538);
    check_export(false, 576); /* padded vocabulary */
}

/* A converted Hugging Face model (YaRN RoPE, tied; untied) loads into the trainer and its forward gives the inference
 * path's logits: the loader and the RoPE variants agree with ty_context_eval. */
static void check_loaded(const char *hf_dir, const char *name) {
    const char *gguf = ty_test_tmp(name);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' '%s' --type f32 -q", ty_test_cli(), ty_test_src(hf_dir), gguf);
    CHECK(ty_test_sh(cmd, NULL) == 0);
    struct ty_train_model *m = NULL;
    CHECK_OK(ty__train_model_load_gguf(gguf, 2, &m, NULL));
    struct ty_model *model = NULL;
    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = 1;
    CHECK_OK(ty_model_load(gguf, &mp, &model));
    if (m && model) {
        int32_t ids[21];
        for (int i = 0; i < 21; i++) ids[i] = (int32_t)((i * 53 + 7) % 530);
        double loss;
        CHECK_OK(ty__train_forward(m, ids, 1, 20, &loss, NULL));
        struct ty_context *ctx = NULL;
        struct ty_context_params cp = ty_context_default_params();
        cp.kv_type = TY_TYPE_F32;
        cp.n_ctx = 64;
        CHECK_OK(ty_context_init(model, &cp, &ctx));
        size_t n = (size_t)20 * (size_t)m->cfg.n_vocab;
        float *logits = ty__malloc(n * 4);
        if (ctx) CHECK_OK(ty_context_eval(ctx, ids, 20, TY_LOGITS_ALL, logits));
        double worst = 0;
        for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(logits[i] - m->logits[i]));
        CHECK_MSG(worst <= 1e-4, "%s: trainer vs inference logits differ by %g", hf_dir, worst);
        ty_free(logits);
        ty_context_free(ctx);
    }
    ty_model_free(model);
    ty__train_model_free(m);
}

static void test_load_converted(void) {
    check_loaded("tests/data/models/qwen3-tiny", "qwen3-tiny.gguf");
    check_loaded("tests/data/models/qwen3-tiny-untied", "qwen3-tiny-untied.gguf");
}

/* ==== PyTorch reference run ==== */

static void test_pytorch_curve(void) {
    char *text = NULL;
    CHECK_OK(ty__file_read(ty_test_src("tests/data/train/reference.json"), 1 << 22, &text, NULL));
    json_error_t err;
    json_t *ref = text ? json_loads(text, 0, &err) : NULL;
    ty_free(text);
    CHECK(ref != NULL);
    if (!ref) return;
    const char *gguf = ty_test_tmp("pytorch-init.gguf");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' convert '%s' '%s' --type f32 -q", ty_test_cli(),
             ty_test_src("tests/data/train/init"), gguf);
    CHECK(ty_test_sh(cmd, NULL) == 0);
    struct ty_train_model *m = NULL;
    CHECK_OK(ty__train_model_load_gguf(gguf, 2, &m, NULL));
    if (!m) {
        json_decref(ref);
        return;
    }
    int steps = (int)json_integer_value(json_object_get(ref, "steps"));
    int B = (int)json_integer_value(json_object_get(ref, "batch")),
        S = (int)json_integer_value(json_object_get(ref, "seq"));
    struct ty_train_optim_params op = {
        .lr = json_real_value(json_object_get(ref, "lr")),
        .lr_min = json_real_value(json_object_get(ref, "lr_min")),
        .warmup = json_integer_value(json_object_get(ref, "warmup")),
        .total_steps = steps,
        .beta1 = json_real_value(json_object_get(ref, "beta1")),
        .beta2 = json_real_value(json_object_get(ref, "beta2")),
        .eps = json_real_value(json_object_get(ref, "eps")),
        .weight_decay = json_real_value(json_object_get(ref, "weight_decay")),
        .clip = json_real_value(json_object_get(ref, "clip")),
    };
    struct ty_train_optim o;
    CHECK_OK(ty__train_optim_init(&o, m, &op));
    char *raw = NULL;
    size_t raw_size = 0;
    CHECK_OK(ty__file_read(ty_test_src("tests/data/train/batches.u16"), 1 << 22, &raw, &raw_size));
    size_t per_step = (size_t)B * (size_t)(S + 1);
    CHECK(raw && raw_size == (size_t)steps * per_step * 2);
    int32_t *tok = ty__malloc(per_step * 4);
    json_t *losses = json_object_get(ref, "loss"), *g0 = json_object_get(ref, "grad0_norms");
    double worst = 0;
    int worst_step = -1;
    for (int s = 0; raw && raw_size == (size_t)steps * per_step * 2 && s < steps; s++) {
        for (size_t i = 0; i < per_step; i++) {
            const unsigned char *b = (const unsigned char *)raw + ((size_t)s * per_step + i) * 2;
            tok[i] = b[0] | (b[1] << 8);
        }
        double loss;
        ty__train_zero_grads(m);
        CHECK_OK(ty__train_forward_backward(m, tok, B, S, 1.0f, &loss));
        double want = json_real_value(json_array_get(losses, (size_t)s));
        if (s == 0) {
            CHECK_NEAR(loss, want, 1e-5);
            for (int i = 0; i < m->n_tensors; i++) {
                const struct ty_train_tensor *t = &m->tensors[i];
                double n2 = 0;
                for (size_t j = 0; j < t->n; j++) n2 += (double)m->grads[t->offset + j] * m->grads[t->offset + j];
                double w = json_real_value(json_object_get(g0, t->name));
                CHECK_MSG(fabs(sqrt(n2) - w) <= 1e-4 * w, "step 0 gradient norm of %s: %.9g, PyTorch %.9g", t->name,
                          sqrt(n2), w);
            }
        }
        double e = fabs(loss - want) / want;
        if (e > worst) worst = e, worst_step = s;
        ty__train_optim_step(&o, m, NULL, NULL);
    }
    printf("  pytorch curve: worst relative loss difference %.3g at step %d of %d\n", worst, worst_step, steps);
    CHECK_MSG(worst <= 1e-5, "loss curve differs from PyTorch's by %g (relative) at step %d", worst, worst_step);
    ty_free(tok);
    ty_free(raw);
    ty__train_optim_free(&o);
    ty__train_model_free(m);
    json_decref(ref);
}

/* ==== Vocabulary cut ==== */

static void test_vocab_cut(void) {
    struct ty_tokenizer *full = NULL, *cut = NULL;
    CHECK_OK(ty__tokenizer_load_hf(ty_test_src("tests/data/models/qwen3-tiny/tokenizer.json"), NULL, &full));
    if (!full) return;
    CHECK_OK(ty__train_vocab_cut(full, 300, ty_test_tmp(""), &cut));
    if (cut) {
        /* 300 regular tokens, then the 26 special tokens renumbered in order */
        CHECK(ty_tokenizer_n_vocab(cut) == 326);
        CHECK(ty_tokenizer_find(cut, "<|endoftext|>") == 300);
        CHECK(ty_tokenizer_find(cut, "<|im_end|>") == 302);
        const char *text = "Hello, the world!\n<|im_start|>user\nwhat is 2+2?<|im_end|>";
        int32_t a[256], b[256];
        size_t na = 0, nb = 0;
        CHECK_OK(ty_tokenize(cut, text, strlen(text), TY_TOKENIZE_SPECIAL, a, 256, &na));
        CHECK_OK(ty_tokenize(full, text, strlen(text), TY_TOKENIZE_SPECIAL, b, 256, &nb));
        CHECK(na >= nb); /* fewer merges: at least as many tokens */
        char out[512] = {0};
        size_t len = 0;
        for (size_t i = 0; i < na; i++) {
            CHECK(a[i] >= 0 && a[i] < 326);
            size_t n = 0;
            const char *bytes = ty_token_bytes(cut, a[i], &n);
            if (bytes && len + n < sizeof out) memcpy(out + len, bytes, n), len += n;
        }
        CHECK(len == strlen(text) && memcmp(out, text, len) == 0);
        ty_tokenizer_free(cut);
    }
    cut = NULL;
    CHECK_STATUS(ty__train_vocab_cut(full, 9999, ty_test_tmp(""), &cut), TY_ERR_INVALID_ARG);
    ty_tokenizer_free(full);
}

void ty_tests(void) {
    TY_RUN(test_vocab_cut);
    TY_RUN(test_gemm);
    TY_RUN(test_rms_norm_grad);
    TY_RUN(test_rope_grad);
    TY_RUN(test_attention_grad);
    TY_RUN(test_attention_blocks);
    TY_RUN(test_swiglu_grad);
    TY_RUN(test_cross_entropy_grad);
    TY_RUN(test_model_grads);
    TY_RUN(test_accumulation);
    TY_RUN(test_thread_independence);
    TY_RUN(test_checkpoint_resume);
    TY_RUN(test_export_logits);
    TY_RUN(test_load_converted);
    TY_RUN(test_pytorch_curve);
}
