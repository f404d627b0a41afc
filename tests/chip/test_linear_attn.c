/*
 * test_linear_attn.c - the linear-attention (Gated DeltaNet) ops of backend.h and their host kernels
 * (src/chip/linear-attn.c), against formulas computed here in double precision:
 *
 *  - gated_delta: on a 300-step random sequence (not a multiple of the chunk), 4 value heads sharing 2 query/key
 *    heads, a non-zero initial state and realistic decays, the recurrent and the chunked forms agree within 1e-5
 *    (outputs and final state), and each is within 1e-4 of the naive recurrence in double. Through the backend op: a
 *    prefill of 150 steps (chunked) followed by decoding one step at a time (recurrent) gives the same outputs and
 *    state, 1 and 3 threads give identical bits, and a backend without the op falls back to the host kernel.
 *  - conv1d_causal: the formula with and without SiLU, and a sequence split into batches carrying the state equals
 *    one batch.
 *  - l2_norm: the formula, in place.
 *  - both split among 3 threads give the same bits as on one, the conv state included.
 */
#include "harness.h"
#include "chip/backend.h"

#include <stdlib.h>

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static double urand(void) { /* uniform in [-1, 1) */
    return ty_test_urand(&rng_state);
}

static struct ty_backend *be;

struct owned {
    struct ty_buffer *buf;
    struct ty_tensor t;
};
static struct owned make(int64_t ne0, int64_t ne1, int64_t ne2, const float *data) {
    struct owned o = {0};
    struct ty_tensor probe;
    ty__tensor_init(&probe, NULL, 0, TY_TYPE_F32, ne0, ne1, ne2, 1);
    CHECK_OK(ty__backend_buffer_alloc(be, ty__tensor_size(&probe), &o.buf));
    ty__tensor_init(&o.t, o.buf, 0, TY_TYPE_F32, ne0, ne1, ne2, 1);
    if (data) CHECK_OK(ty__backend_tensor_set(be, &o.t, data, 0, ty__tensor_size(&o.t)));
    return o;
}
static void drop(struct owned *o) {
    ty__backend_buffer_free(o->buf);
}
static float *F(const struct owned *o) {
    return ty__tensor_host(&o->t);
}

/* ==== Gated delta rule ==== */

enum { T = 300, HK = 2, HV = 4, DK = 32, DV = 24, T_PRE = 150 };

struct gdn_case {
    float *q, *k, *v, *g, *beta, *state0; /* (DK,HK,T) (DK,HK,T) (DV,HV,T) (HV,T) (HV,T) (DV,DK,HV) */
    float scale;
};

static void make_case(struct gdn_case *c) {
    c->q = ty__malloc(sizeof(float) * DK * HK * T);
    c->k = ty__malloc(sizeof(float) * DK * HK * T);
    c->v = ty__malloc(sizeof(float) * DV * HV * T);
    c->g = ty__malloc(sizeof(float) * HV * T);
    c->beta = ty__malloc(sizeof(float) * HV * T);
    c->state0 = ty__malloc(sizeof(float) * DV * DK * HV);
    /* q and k L2-normalised per head, as the layer does before the rule */
    float *qk[2] = {c->q, c->k};
    for (int w = 0; w < 2; w++) {
        for (int r = 0; r < HK * T; r++) {
            double ss = 0;
            for (int i = 0; i < DK; i++) {
                qk[w][r * DK + i] = (float)urand();
                ss += (double)qk[w][r * DK + i] * qk[w][r * DK + i];
            }
            for (int i = 0; i < DK; i++) qk[w][r * DK + i] = (float)(qk[w][r * DK + i] / sqrt(ss));
        }
    }
    for (int i = 0; i < DV * HV * T; i++) c->v[i] = (float)(4.0 * urand());
    for (int i = 0; i < HV * T; i++) {
        /* Qwen3-Next: g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b) */
        double a = 2.0 * urand();
        c->g[i] = (float)(-0.5 * log1p(exp(a - 2.0)));
        c->beta[i] = (float)(1.0 / (1.0 + exp(-2.0 * urand())));
    }
    for (int i = 0; i < DV * DK * HV; i++) c->state0[i] = (float)(2.0 * urand());
    c->scale = (float)(1.0 / sqrt((double)DK));
}

static void free_case(struct gdn_case *c) {
    ty_free(c->q);
    ty_free(c->k);
    ty_free(c->v);
    ty_free(c->g);
    ty_free(c->beta);
    ty_free(c->state0);
}

/* The recurrence in double: out (DV,HV,T), state (DV,DK,HV) from state0. */
static void naive_gdn(const struct gdn_case *c, double *out, double *state) {
    for (int i = 0; i < DV * DK * HV; i++) state[i] = c->state0[i];
    for (int h = 0; h < HV; h++) {
        int hk = h / (HV / HK);
        double *S = state + (size_t)h * DK * DV;
        for (int t = 0; t < T; t++) {
            const float *q = c->q + ((size_t)t * HK + hk) * DK, *k = c->k + ((size_t)t * HK + hk) * DK;
            const float *v = c->v + ((size_t)t * HV + h) * DV;
            double decay = exp((double)c->g[t * HV + h]), beta = c->beta[t * HV + h];
            for (int i = 0; i < DK * DV; i++) S[i] *= decay;
            for (int j = 0; j < DV; j++) {
                double kv = 0;
                for (int i = 0; i < DK; i++) kv += S[i * DV + j] * k[i];
                double delta = beta * (v[j] - kv);
                for (int i = 0; i < DK; i++) S[i * DV + j] += k[i] * delta;
            }
            for (int j = 0; j < DV; j++) {
                double o = 0;
                for (int i = 0; i < DK; i++) o += S[i * DV + j] * q[i] * (double)c->scale;
                out[((size_t)t * HV + h) * DV + j] = o;
            }
        }
    }
}

struct gdn_tensors {
    struct owned q, k, v, g, beta, state, out;
};

static void gdn_tensors(struct gdn_tensors *x, const struct gdn_case *c) {
    x->q = make(DK, HK, T, c->q);
    x->k = make(DK, HK, T, c->k);
    x->v = make(DV, HV, T, c->v);
    x->g = make(HV, T, 1, c->g);
    x->beta = make(HV, T, 1, c->beta);
    x->state = make(DV, DK, HV, c->state0);
    x->out = make(DV, HV, T, NULL);
}

static void gdn_drop(struct gdn_tensors *x) {
    struct owned *all[] = {&x->q, &x->k, &x->v, &x->g, &x->beta, &x->state, &x->out};
    for (int i = 0; i < 7; i++) drop(all[i]);
}

/* Steps [t0, t0 + n) through the backend op. */
static void gdn_op(struct gdn_tensors *x, const struct gdn_case *c, int64_t t0, int64_t n) {
    struct ty_tensor q = ty__tensor_slice(&x->q.t, 2, t0, n), k = ty__tensor_slice(&x->k.t, 2, t0, n);
    struct ty_tensor v = ty__tensor_slice(&x->v.t, 2, t0, n), o = ty__tensor_slice(&x->out.t, 2, t0, n);
    struct ty_tensor g = ty__tensor_slice(&x->g.t, 1, t0, n), b = ty__tensor_slice(&x->beta.t, 1, t0, n);
    CHECK_OK(ty__backend_gated_delta(be, &o, &q, &k, &v, &g, &b, &x->state.t, c->scale));
}

static void test_gated_delta_forms(void) {
    struct gdn_case c;
    make_case(&c);
    double *ref = ty__malloc(sizeof(double) * DV * HV * T), *ref_state = ty__malloc(sizeof(double) * DV * DK * HV);
    naive_gdn(&c, ref, ref_state);
    double mag = 0;
    for (int i = 0; i < DV * HV * T; i++) mag = fmax(mag, fabs(ref[i]));
    CHECK_MSG(mag > 0.2, "outputs up to %g: too small for the tolerances to mean anything", mag);

    float *out[2], *state[2];
    enum ty_gdn_form forms[2] = {TY_GDN_RECURRENT, TY_GDN_CHUNKED};
    for (int f = 0; f < 2; f++) {
        struct gdn_tensors x;
        gdn_tensors(&x, &c);
        ty__gated_delta_host(&x.out.t, &x.q.t, &x.k.t, &x.v.t, &x.g.t, &x.beta.t, &x.state.t, c.scale, forms[f], 0, HV);
        out[f] = ty__malloc(sizeof(float) * DV * HV * T);
        state[f] = ty__malloc(sizeof(float) * DV * DK * HV);
        memcpy(out[f], F(&x.out), sizeof(float) * DV * HV * T);
        memcpy(state[f], F(&x.state), sizeof(float) * DV * DK * HV);
        double e_out = 0, e_state = 0;
        for (int i = 0; i < DV * HV * T; i++) e_out = fmax(e_out, fabs(ref[i] - out[f][i]));
        for (int i = 0; i < DV * DK * HV; i++) e_state = fmax(e_state, fabs(ref_state[i] - state[f][i]));
        CHECK_MSG(e_out <= 1e-4 && e_state <= 1e-4, "%s form vs double: outputs %g, state %g",
                  f ? "chunked" : "recurrent", e_out, e_state);
        gdn_drop(&x);
    }
    double d_out = ty_test_max_diff(out[0], out[1], DV * HV * T),
           d_state = ty_test_max_diff(state[0], state[1], DV * DK * HV);
    CHECK_MSG(d_out <= 1e-5 && d_state <= 1e-5, "recurrent vs chunked: outputs %g, state %g", d_out, d_state);

    /* the op: prefill (chunked) then decode step by step (recurrent) continues from the prefill's state */
    struct gdn_tensors x;
    gdn_tensors(&x, &c);
    gdn_op(&x, &c, 0, T_PRE);
    for (int64_t t = T_PRE; t < T; t++) gdn_op(&x, &c, t, 1);
    d_out = ty_test_max_diff(out[0], F(&x.out), DV * HV * T);
    d_state = ty_test_max_diff(state[0], F(&x.state), DV * DK * HV);
    CHECK_MSG(d_out <= 1e-5 && d_state <= 1e-5, "prefill + decode vs recurrent: outputs %g, state %g", d_out, d_state);
    float *op_out = ty__malloc(sizeof(float) * DV * HV * T);
    memcpy(op_out, F(&x.out), sizeof(float) * DV * HV * T);
    gdn_drop(&x);

    /* 3 threads: the same bits */
    struct ty_backend *be1 = be;
    CHECK_OK(ty__backend_init("cpu-ref", 3, &be));
    gdn_tensors(&x, &c);
    gdn_op(&x, &c, 0, T_PRE);
    for (int64_t t = T_PRE; t < T; t++) gdn_op(&x, &c, t, 1);
    CHECK(memcmp(op_out, F(&x.out), sizeof(float) * DV * HV * T) == 0);
    gdn_drop(&x);
    ty__backend_free(be);
    be = be1;

    /* a host backend without the op: the wrapper's fallback gives the same bits */
    const struct ty_backend_iface *inner = be->iface;
    struct ty_backend_iface bare = *inner;
    bare.gated_delta = NULL;
    be->iface = &bare;
    gdn_tensors(&x, &c);
    gdn_op(&x, &c, 0, T_PRE);
    for (int64_t t = T_PRE; t < T; t++) gdn_op(&x, &c, t, 1);
    CHECK(memcmp(op_out, F(&x.out), sizeof(float) * DV * HV * T) == 0);
    gdn_drop(&x);
    be->iface = inner;

    for (int f = 0; f < 2; f++) {
        ty_free(out[f]);
        ty_free(state[f]);
    }
    ty_free(op_out);
    ty_free(ref);
    ty_free(ref_state);
    free_case(&c);
}

/* ==== conv1d and L2 norm ==== */

enum { C = 12, N = 20, K = 4 };

static void naive_conv(const float *x, const float *w, const float *state, bool silu, double *out) {
    for (int c = 0; c < C; c++) {
        for (int t = 0; t < N; t++) {
            double acc = 0;
            for (int j = 0; j < K; j++) {
                int col = t + j - (K - 1);
                acc += (double)w[c * K + j] * (col < 0 ? state[(K - 1 + col) * C + c] : x[col * C + c]);
            }
            out[t * C + c] = silu ? acc / (1 + exp(-acc)) : acc;
        }
    }
}

static void test_conv1d(void) {
    float x[N * C], w[K * C], st[(K - 1) * C];
    for (int i = 0; i < N * C; i++) x[i] = (float)urand();
    for (int i = 0; i < K * C; i++) w[i] = (float)urand();
    for (int i = 0; i < (K - 1) * C; i++) st[i] = (float)urand();
    for (int silu = 0; silu < 2; silu++) {
        double ref[N * C];
        naive_conv(x, w, st, silu, ref);
        struct owned tx = make(C, N, 1, x), tw = make(K, C, 1, w), ts = make(C, K - 1, 1, st), to = make(C, N, 1, NULL);
        CHECK_OK(ty__backend_conv1d_causal(be, &to.t, &tx.t, &tw.t, &ts.t, silu));
        double err = 0;
        for (int i = 0; i < N * C; i++) err = fmax(err, fabs(ref[i] - F(&to)[i]));
        CHECK_MSG(err <= 1e-5, "conv1d (silu %d): error %g", silu, err);
        /* the state now holds the last K - 1 inputs */
        CHECK(memcmp(F(&ts), x + (N - (K - 1)) * C, sizeof(float) * (K - 1) * C) == 0);

        /* in batches of 2 (shorter than the kernel) and 18, carrying the state */
        memcpy(F(&ts), st, sizeof st);
        struct ty_tensor a = ty__tensor_slice(&tx.t, 1, 0, 2), ao = ty__tensor_slice(&to.t, 1, 0, 2);
        struct ty_tensor b = ty__tensor_slice(&tx.t, 1, 2, N - 2), bo = ty__tensor_slice(&to.t, 1, 2, N - 2);
        memset(F(&to), 0, sizeof(float) * N * C);
        CHECK_OK(ty__backend_conv1d_causal(be, &ao, &a, &tw.t, &ts.t, silu));
        CHECK_OK(ty__backend_conv1d_causal(be, &bo, &b, &tw.t, &ts.t, silu));
        err = 0;
        for (int i = 0; i < N * C; i++) err = fmax(err, fabs(ref[i] - F(&to)[i]));
        CHECK_MSG(err <= 1e-5, "conv1d in batches (silu %d): error %g", silu, err);
        CHECK(memcmp(F(&ts), x + (N - (K - 1)) * C, sizeof(float) * (K - 1) * C) == 0);
        drop(&tx);
        drop(&tw);
        drop(&ts);
        drop(&to);
    }
}

static void test_l2_norm(void) {
    enum { D = 40, R = 6 };
    float x[D * R];
    for (int i = 0; i < D * R; i++) x[i] = (float)(3.0 * urand());
    struct owned t = make(D, 2, 3, x);
    CHECK_OK(ty__backend_l2_norm(be, &t.t, &t.t, 1e-6f));
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)x[r * D + i] * x[r * D + i];
        for (int i = 0; i < D; i++) CHECK_NEAR(F(&t)[r * D + i], x[r * D + i] / sqrt(ss + 1e-6), 1e-6);
    }
    drop(&t);
}

/* Split among 3 threads (channels of conv1d, rows of l2_norm; sizes past the backend's threading threshold and not a
 * multiple of the split's blocks) and on one: the same bits, the conv state included. */
static void test_threads_same_bits(void) {
    enum { TC = 200, TN = 300, TK = 4, TD = 128, TR = 700 };
    float *x = ty__malloc(sizeof(float) * TC * TN), w[TK * TC], st[(TK - 1) * TC];
    float *lx = ty__malloc(sizeof(float) * TD * TR);
    for (int i = 0; i < TC * TN; i++) x[i] = (float)(2.0 * urand());
    for (int i = 0; i < TK * TC; i++) w[i] = (float)urand();
    for (int i = 0; i < (TK - 1) * TC; i++) st[i] = (float)urand();
    for (int i = 0; i < TD * TR; i++) lx[i] = (float)(3.0 * urand());
    float *out[2], *state[2], *norm[2];
    for (int run = 0; run < 2; run++) {
        struct ty_backend *b = NULL;
        CHECK_OK(ty__backend_init("cpu-ref", run == 0 ? 1 : 3, &b));
        if (!b) break;
        struct owned tx = make(TC, TN, 1, x), tw = make(TK, TC, 1, w), ts = make(TC, TK - 1, 1, st),
                     to = make(TC, TN, 1, NULL), tl = make(TD, TR, 1, lx);
        CHECK_OK(ty__backend_conv1d_causal(b, &to.t, &tx.t, &tw.t, &ts.t, true));
        CHECK_OK(ty__backend_l2_norm(b, &tl.t, &tl.t, 1e-6f));
        out[run] = ty__malloc(sizeof(float) * TC * TN);
        state[run] = ty__malloc(sizeof st);
        norm[run] = ty__malloc(sizeof(float) * TD * TR);
        memcpy(out[run], F(&to), sizeof(float) * TC * TN);
        memcpy(state[run], F(&ts), sizeof st);
        memcpy(norm[run], F(&tl), sizeof(float) * TD * TR);
        drop(&tx), drop(&tw), drop(&ts), drop(&to), drop(&tl);
        ty__backend_free(b);
    }
    CHECK(memcmp(out[0], out[1], sizeof(float) * TC * TN) == 0);
    CHECK(memcmp(state[0], state[1], sizeof st) == 0);
    CHECK(memcmp(state[1], x + (TN - (TK - 1)) * TC, sizeof st) == 0);
    CHECK(memcmp(norm[0], norm[1], sizeof(float) * TD * TR) == 0);
    for (int run = 0; run < 2; run++) ty_free(out[run]), ty_free(state[run]), ty_free(norm[run]);
    ty_free(x);
    ty_free(lx);
}

void ty_tests(void) {
    CHECK_OK(ty__backend_init("cpu-ref", 1, &be));
    if (!be) return;
    TY_RUN(test_gated_delta_forms);
    TY_RUN(test_conv1d);
    TY_RUN(test_l2_norm);
    TY_RUN(test_threads_same_bits);
    ty__backend_free(be);
}
