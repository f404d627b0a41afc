/*
 * test_backend_fast.c - the fast CPU backend ("cpu", src/chip/cpu/cpu.c) against the reference backend ("cpu-ref")
 * and a double-precision formula, on every dispatch path this CPU supports (TY_CPU_ISA=scalar, avx2, avx512,
 * avx512vnni, avx512bf16, avx512amx, neon), with 1, 2 and 3 threads.
 *
 * Matrix products, for every weight type, prepared (packed / copied to huge pages by weight_prepare) and not:
 *  - accuracy: NMSE (sum of squared errors over sum of squares) against the product of the dequantised weights with
 *    the f32 input, in double. Bounds, from the activation format the path pairs with the weight type: f32
 *    activations (f32/f16/bf16 weights: the backend never rounds activations to bf16, so a BF16 checkpoint matches
 *    its reference) 1e-9, f32 accumulation only; int8 activations (Q8 / Q8_K blocks, rounding <= amax/254 per
 *    element) 2e-4;
 *  - batch invariance, bit for bit: every column of a 67- (19-, 200-) column product equals the same column alone, in
 *    batches of 2 and 5 starting anywhere, with 1, 2 or 3 threads, prepared or not (the same kernel either way), and
 *    through matmul_multi next to other weights; matmul_swiglu equals matmul, matmul and swiglu bit for bit;
 *  - shapes: rows not a multiple of the 16-row panel, row units that do not divide among the threads, products big
 *    enough to be threaded with one column, a bias, a strided input view.
 * Attention (flash style, cpu-attn.c) against the double-precision formula (max abs error 2e-5) over f16 and f32
 * caches, with GQA, pos0 > 0, several key tiles and query blocks, and batch invariance (each query alone gives the same
 * bits, with any thread count).
 * The fused layer inputs (attn_input: input norm, q/k/v, head norms, RoPE; ffn_input: input norm, gate/up, SwiGLU)
 * equal their ops one by one on the same backend, bit for bit, for 1 .. 200 columns and every thread count; so do a
 * layer's halves (attn_block: attn_input, KV write, attention, output projection, residual add; ffn: the whole
 * feed-forward block with the residual add), whose few-column calls run as one dispatch (checked that they do).
 * Two application threads sharing the backend get what each gets alone. Reading ahead learns the order of a decode
 * step's products and hands each worker the head of its next share (the bytes it hands, exactly).
 * Every other op is compared with cpu-ref bit for bit (the fast backend shares their code today; the test holds any
 * future replacement to the reference): get_rows, rms_norm, rope, copy, swiglu, add, scatter_add, l2_norm,
 * conv1d_causal, gated_delta.
 */
#include "harness.h"
#include "backend-fixture.h"
#include "chip/backend.h"
#include "attention-ref.h"
#include "chip/cpu/cpu-impl.h"
#include "chip/cpu/simd/simd.h"
#include "model/quant.h"

#include <pthread.h>
#include <stdlib.h>

/* ==== Helpers ==== */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static void fill(float *x, int64_t n, double scale) {
    fixture_fill(&rng_state, x, n, scale);
}

static struct ty_backend *ref;     /* cpu-ref, 2 threads */
static struct ty_backend *fast[3]; /* cpu with 1, 2, 3 threads, on the path under test */
static const char *isa_name;

static struct owned make(enum ty_type type, int64_t ne0, int64_t ne1, int64_t ne2, const void *data) {
    return owned_make(ref, type, ne0, ne1, ne2, data);
}
static void drop(struct owned *o) {
    owned_drop(o);
}
static float *host(const struct owned *o) {
    return o->buf->data;
}

static double nmse(const double *want, const float *got, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = want[i] - (double)got[i];
        e += d * d, s += want[i] * want[i];
    }
    return s > 0 ? e / s : e;
}

static double tolerance(enum ty_type type) {
    const struct ty_simd *s;
    CHECK_OK(ty__simd_from_env(&s));
    if (type == TY_TYPE_BF16) return 1e-9; /* the backend keeps f32 activations for bf16 weights on every path */
    switch (ty__simd_act_format(s, type)) {
    case TY_ACT_F32:
        return 1e-9;
    default:
        return 2e-4;
    }
}

/* ==== Matrix products ==== */

static const enum ty_type weight_types[] = {TY_TYPE_F32,  TY_TYPE_F16,  TY_TYPE_BF16, TY_TYPE_Q8_0,
                                            TY_TYPE_Q4_0, TY_TYPE_Q4_1, TY_TYPE_Q5_0, TY_TYPE_Q5_1,
                                            TY_TYPE_Q4_K, TY_TYPE_Q5_K, TY_TYPE_Q6_K};

/* dst = w x (+ bias) on backend b, read back into out (rows x cols). */
static void run_matmul(struct ty_backend *b, const struct ty_tensor *w, const struct ty_tensor *x,
                       const struct ty_tensor *bias, float *out) {
    struct owned d = make(TY_TYPE_F32, w->ne[1], x->ne[1], 1, NULL);
    CHECK_OK(ty__backend_matmul(b, &d.t, w, x, bias));
    memcpy(out, host(&d), ty__tensor_size(&d.t));
    drop(&d);
}

static void check_matmul(enum ty_type type, int64_t n_in, int64_t rows, int64_t cols) {
    const struct ty_type_traits *tr = ty__type_traits(type);
    size_t row;
    CHECK_OK(ty__row_size(type, n_in, &row));
    float *wf = ty__malloc(sizeof(float) * n_in * rows), *wd = ty__malloc(sizeof(float) * n_in * rows);
    fill(wf, n_in * rows, 1.0);
    struct owned wo = make(type, n_in, rows, 1, NULL), wo2 = make(type, n_in, rows, 1, NULL);
    for (int64_t r = 0; r < rows; r++) tr->from_float(wf + r * n_in, (char *)host(&wo) + r * row, n_in);
    for (int64_t r = 0; r < rows; r++) tr->to_float((char *)host(&wo) + r * row, wd + r * n_in, n_in);
    memcpy(host(&wo2), host(&wo), row * (size_t)rows); /* the same weights, never prepared */
    for (int i = 0; i < 3; i++) CHECK_OK(ty__backend_weight_prepare(fast[i], &wo.t));

    /* x: columns 1 .. cols of a wider tensor (a view), with a large-ish scale so int8 blocks use their range */
    float *xf = ty__malloc(sizeof(float) * n_in * (cols + 2));
    fill(xf, n_in * (cols + 2), 3.0);
    struct owned xo = make(TY_TYPE_F32, n_in, cols + 2, 1, xf);
    struct ty_tensor x = ty__tensor_slice(&xo.t, 1, 1, cols);
    float *bias = ty__malloc(sizeof(float) * rows);
    fill(bias, rows, 0.5);
    struct owned bo = make(TY_TYPE_F32, rows, 1, 1, bias);

    double *want = ty__malloc(sizeof(double) * rows * cols);
    for (int64_t c = 0; c < cols; c++)
        for (int64_t r = 0; r < rows; r++) {
            double s = bias[r];
            for (int64_t i = 0; i < n_in; i++) s += (double)wd[r * n_in + i] * xf[(c + 1) * n_in + i];
            want[c * rows + r] = s;
        }

    size_t bytes = sizeof(float) * rows * cols;
    float *all = ty__malloc(bytes), *other = ty__malloc(bytes), *unprep = ty__malloc(bytes);
    run_matmul(fast[1], &wo.t, &x, &bo.t, all);
    double e = nmse(want, all, rows * cols), tol = tolerance(type);
    CHECK_MSG(e <= tol, "%s %s %lldx%lld: NMSE %.3g > %.3g", isa_name, ty_type_name(type), (long long)n_in,
              (long long)rows, e, tol);
    run_matmul(fast[1], &wo2.t, &x, &bo.t, unprep);
    e = nmse(want, unprep, rows * cols);
    CHECK_MSG(e <= tol, "%s %s unprepared: NMSE %.3g > %.3g", isa_name, ty_type_name(type), e, tol);

    /* the reference backend agrees within the same bound */
    run_matmul(ref, &wo.t, &x, &bo.t, other);
    e = nmse(want, other, rows * cols);
    CHECK_MSG(e <= 1e-9, "cpu-ref %s: NMSE %.3g", ty_type_name(type), e);

    /* thread counts */
    for (int i = 0; i < 3; i += 2) {
        run_matmul(fast[i], &wo.t, &x, &bo.t, other);
        CHECK_MSG(memcmp(other, all, bytes) == 0, "%s %s: %d threads differ from 2", isa_name, ty_type_name(type),
                  i + 1);
    }
    /* batch invariance: columns alone, and in batches of 2 and 5 from odd starting columns */
    bool same = true, same_unprep = true;
    for (int64_t c = 0; c < cols; c++) {
        struct ty_tensor xc = ty__tensor_slice(&xo.t, 1, 1 + c, 1);
        float *col = ty__malloc(sizeof(float) * rows);
        run_matmul(fast[(int)(c % 3)], &wo.t, &xc, &bo.t, col);
        if (memcmp(col, all + c * rows, sizeof(float) * rows) != 0) same = false;
        run_matmul(fast[(int)(c % 3)], &wo2.t, &xc, &bo.t, col);
        if (memcmp(col, unprep + c * rows, sizeof(float) * rows) != 0) same_unprep = false;
        ty_free(col);
    }
    const int64_t batches[][2] = {{3, 2}, {cols - 7, 5}, {11, 5}};
    for (size_t k = 0; k < sizeof batches / sizeof batches[0]; k++) {
        int64_t c0 = batches[k][0], nb = batches[k][1];
        struct ty_tensor xb = ty__tensor_slice(&xo.t, 1, 1 + c0, nb);
        float *got = ty__malloc(sizeof(float) * rows * nb);
        run_matmul(fast[(int)(k % 3)], &wo.t, &xb, &bo.t, got);
        if (memcmp(got, all + c0 * rows, sizeof(float) * rows * nb) != 0) same = false;
        ty_free(got);
    }
    CHECK_MSG(same, "%s %s: a column's result depends on its batch", isa_name, ty_type_name(type));
    CHECK_MSG(same_unprep, "%s %s unprepared: a column's result depends on its batch", isa_name, ty_type_name(type));

    /* matmul_multi: each output bit for bit what matmul gives */
    struct owned d0 = make(TY_TYPE_F32, rows, cols, 1, NULL), d1 = make(TY_TYPE_F32, rows, cols, 1, NULL);
    struct owned d2 = make(TY_TYPE_F32, rows, cols, 1, NULL);
    const struct ty_tensor *dsts[3] = {&d0.t, &d1.t, &d2.t}, *ws[3] = {&wo.t, &wo2.t, &wo.t};
    const struct ty_tensor *bs[3] = {&bo.t, &bo.t, NULL};
    CHECK_OK(ty__backend_matmul_multi(fast[2], 3, dsts, ws, &x, bs));
    CHECK_MSG(memcmp(host(&d0), all, bytes) == 0 && memcmp(host(&d1), unprep, bytes) == 0,
              "%s %s: matmul_multi differs from matmul", isa_name, ty_type_name(type));
    bool nobias = true;
    for (int64_t c = 0; c < cols; c++)
        for (int64_t r = 0; r < rows; r++)
            if (host(&d2)[c * rows + r] + bias[r] != all[c * rows + r]) nobias = false;
    CHECK_MSG(nobias, "%s %s: matmul_multi without a bias", isa_name, ty_type_name(type));

    /* matmul_swiglu: silu(wo x) * (wo2 x), bit for bit what the unfused ops give */
    struct owned g = make(TY_TYPE_F32, rows, cols, 1, NULL), u = make(TY_TYPE_F32, rows, cols, 1, NULL);
    CHECK_OK(ty__backend_matmul(fast[1], &g.t, &wo.t, &x, NULL));
    CHECK_OK(ty__backend_matmul(fast[1], &u.t, &wo2.t, &x, NULL));
    CHECK_OK(ty__backend_swiglu(ref, &g.t, &g.t, &u.t));
    for (int i = 0; i < 3; i++) {
        memset(host(&d0), 0, bytes);
        CHECK_OK(ty__backend_matmul_swiglu(fast[i], &d0.t, &wo.t, &wo2.t, &x, &d1.t));
        CHECK_MSG(memcmp(host(&d0), host(&g), bytes) == 0,
                  "%s %s: matmul_swiglu differs from matmul + swiglu (%d threads)", isa_name, ty_type_name(type),
                  i + 1);
    }
    struct ty_tensor x1 = ty__tensor_slice(&xo.t, 1, 5, 1), g1 = ty__tensor_slice(&d0.t, 1, 0, 1);
    struct ty_tensor u1 = ty__tensor_slice(&d1.t, 1, 0, 1);
    CHECK_OK(ty__backend_matmul_swiglu(fast[2], &g1, &wo.t, &wo2.t, &x1, &u1));
    CHECK_MSG(memcmp(host(&d0), host(&g) + 4 * rows, sizeof(float) * rows) == 0, "%s %s: matmul_swiglu of one column",
              isa_name, ty_type_name(type));
    /* cpu-ref has none of the fusions: the wrappers' fallbacks must give what its plain ops give */
    CHECK(ref->iface->matmul_multi == NULL && ref->iface->matmul_swiglu == NULL && ref->iface->weight_prepare == NULL);
    CHECK_OK(ty__backend_weight_prepare(ref, &wo.t));           /* a no-op */
    CHECK_OK(ty__backend_matmul(ref, &u.t, &wo2.t, &x, &bo.t)); /* as dsts[1], with its bias */
    CHECK_OK(ty__backend_matmul_multi(ref, 3, dsts, ws, &x, bs));
    CHECK(memcmp(host(&d1), host(&u), bytes) == 0);
    CHECK_OK(ty__backend_matmul(ref, &g.t, &wo.t, &x, NULL));
    CHECK_OK(ty__backend_matmul(ref, &u.t, &wo2.t, &x, NULL));
    CHECK_OK(ty__backend_swiglu(ref, &g.t, &g.t, &u.t));
    CHECK_OK(ty__backend_matmul_swiglu(ref, &d0.t, &wo.t, &wo2.t, &x, &d1.t));
    CHECK_MSG(memcmp(host(&d0), host(&g), bytes) == 0, "%s: the matmul_swiglu fallback differs", ty_type_name(type));
    drop(&g);
    drop(&u);
    drop(&d0);
    drop(&d1);
    drop(&d2);
    ty_free(all);
    ty_free(other);
    ty_free(unprep);
    ty_free(want);
    ty_free(bias);
    drop(&bo);
    drop(&xo);
    ty_free(xf);
    drop(&wo);
    drop(&wo2);
    ty_free(wd);
    ty_free(wf);
}

static void test_matmul(void) {
    for (size_t i = 0; i < sizeof weight_types / sizeof weight_types[0]; i++) {
        check_matmul(weight_types[i], 512, 53, 67);  /* 4 panels, the last of 5 rows; 3 threads share 4 units */
        check_matmul(weight_types[i], 768, 99, 19);  /* threaded even for one column */
        check_matmul(weight_types[i], 256, 37, 200); /* a prefill-wide batch */
    }
}

/* ==== Every other op, against cpu-ref bit for bit ==== */

/* Runs `op` on a fresh output with both backends and compares. */
#define SAME(what, out_owned, call_ref, call_fast)                                                                     \
    do {                                                                                                               \
        size_t n_ = ty__tensor_size(&(out_owned).t);                                                                   \
        char *keep_ = ty__malloc(n_);                                                                                  \
        CHECK_OK(call_ref);                                                                                            \
        memcpy(keep_, (out_owned).buf->data, n_);                                                                      \
        for (int i_ = 0; i_ < 3; i_++) {                                                                               \
            struct ty_backend *b_ = fast[i_];                                                                          \
            memset((out_owned).buf->data, 0x7f, n_);                                                                   \
            CHECK_OK(call_fast);                                                                                       \
            CHECK_MSG(memcmp(keep_, (out_owned).buf->data, n_) == 0, "%s: %s differs from cpu-ref (%d threads)",       \
                      isa_name, what, i_ + 1);                                                                         \
        }                                                                                                              \
        ty_free(keep_);                                                                                                \
    } while (0)

static void test_other_ops(void) {
    const int64_t d = 64, nh = 4, n = 7, pos0 = 5;
    float buf[4096];

    /* get_rows of a quantised matrix */
    struct owned w = make(TY_TYPE_Q8_0, d, 9, 1, NULL);
    fill(buf, d * 9, 1.0);
    for (int r = 0; r < 9; r++)
        ty__type_traits(TY_TYPE_Q8_0)->from_float(buf + r * d, (char *)host(&w) + r * w.t.nb[1], d);
    int32_t ids[5] = {8, 0, 3, 3, 5};
    struct owned io = make(TY_TYPE_I32, 5, 1, 1, ids), rows = make(TY_TYPE_F32, d, 5, 1, NULL);
    SAME("get_rows", rows, ty__backend_get_rows(ref, &rows.t, &w.t, &io.t),
         ty__backend_get_rows(b_, &rows.t, &w.t, &io.t));

    /* rms_norm over (d, n), then rope of (d, nh, n) at positions pos0.. */
    fill(buf, d * nh * n, 2.0);
    struct owned x = make(TY_TYPE_F32, d, nh * n, 1, buf), y = make(TY_TYPE_F32, d, nh * n, 1, NULL);
    fill(buf, d, 1.0);
    struct owned nw = make(TY_TYPE_F32, d, 1, 1, buf);
    SAME("rms_norm", y, ty__backend_rms_norm(ref, &y.t, &x.t, &nw.t, 1e-6f),
         ty__backend_rms_norm(b_, &y.t, &x.t, &nw.t, 1e-6f));
    struct ty_rope_config rc = {.n_dims = 48, .freq_base = 10000.0f};
    struct ty_rope rope;
    CHECK_OK(ty__rope_init(&rc, &rope));
    int32_t pos[7];
    for (int i = 0; i < n; i++) pos[i] = (int32_t)(pos0 + i);
    struct owned po = make(TY_TYPE_I32, n, 1, 1, pos);
    struct ty_tensor x3 = ty__tensor_reshape(&x.t, d, nh, n, 1), y3 = ty__tensor_reshape(&y.t, d, nh, n, 1);
    SAME("rope", y, ty__backend_rope(ref, &y3, &x3, &po.t, &rope), ty__backend_rope(b_, &y3, &x3, &po.t, &rope));

    /* copy to f16 and bf16 */
    struct owned h16 = make(TY_TYPE_F16, d, nh * n, 1, NULL), hb16 = make(TY_TYPE_BF16, d, nh * n, 1, NULL);
    SAME("copy f16", h16, ty__backend_copy(ref, &h16.t, &x.t), ty__backend_copy(b_, &h16.t, &x.t));
    SAME("copy bf16", hb16, ty__backend_copy(ref, &hb16.t, &x.t), ty__backend_copy(b_, &hb16.t, &x.t));
    /* swiglu, add (in place on a copy each time), scatter_add */
    SAME("swiglu", y, ty__backend_swiglu(ref, &y.t, &x.t, &x.t), ty__backend_swiglu(b_, &y.t, &x.t, &x.t));
    SAME("add", y, ty__backend_add(ref, &y.t, &x.t, &x.t), ty__backend_add(b_, &y.t, &x.t, &x.t));
    float sc[5] = {0.5f, -1.0f, 2.0f, 0.25f, 1.0f};
    int32_t to[5] = {1, 0, 6, 1, 3};
    struct owned so = make(TY_TYPE_F32, 5, 1, 1, sc), tio = make(TY_TYPE_I32, 5, 1, 1, to);
    struct ty_tensor src5 = ty__tensor_slice(&x.t, 1, 0, 5);
    {
        struct owned acc = make(TY_TYPE_F32, d, 7, 1, NULL);
        float *want = ty__malloc(ty__tensor_size(&acc.t));
        memcpy(host(&acc), host(&x), ty__tensor_size(&acc.t));
        CHECK_OK(ty__backend_scatter_add(ref, &acc.t, &src5, &tio.t, &so.t));
        memcpy(want, host(&acc), ty__tensor_size(&acc.t));
        for (int i = 0; i < 3; i++) {
            memcpy(host(&acc), host(&x), ty__tensor_size(&acc.t));
            CHECK_OK(ty__backend_scatter_add(fast[i], &acc.t, &src5, &tio.t, &so.t));
            CHECK_MSG(memcmp(want, host(&acc), ty__tensor_size(&acc.t)) == 0, "%s: scatter_add differs", isa_name);
        }
        ty_free(want);
        drop(&acc);
    }

    /* linear attention: l2_norm, conv1d_causal (state updated: compare it too), gated_delta */
    SAME("l2_norm", y, ty__backend_l2_norm(ref, &y.t, &x.t, 1e-6f), ty__backend_l2_norm(b_, &y.t, &x.t, 1e-6f));
    {
        const int64_t C = 16, K = 4, T = 5;
        float wk[64], st0[48], xin[80];
        fill(wk, K * C, 1.0), fill(st0, C * (K - 1), 1.0), fill(xin, C * T, 1.0);
        struct owned cw = make(TY_TYPE_F32, K, C, 1, wk), cx = make(TY_TYPE_F32, C, T, 1, xin);
        struct owned cs = make(TY_TYPE_F32, C, K - 1, 1, st0), co = make(TY_TYPE_F32, C, T, 1, NULL);
        CHECK_OK(ty__backend_conv1d_causal(ref, &co.t, &cx.t, &cw.t, &cs.t, true));
        float want_o[80], want_s[48];
        memcpy(want_o, host(&co), sizeof want_o), memcpy(want_s, host(&cs), sizeof want_s);
        for (int i = 0; i < 3; i++) {
            memcpy(host(&cs), st0, sizeof st0);
            CHECK_OK(ty__backend_conv1d_causal(fast[i], &co.t, &cx.t, &cw.t, &cs.t, true));
            CHECK_MSG(!memcmp(want_o, host(&co), sizeof want_o) && !memcmp(want_s, host(&cs), sizeof want_s),
                      "%s: conv1d_causal differs", isa_name);
        }
        drop(&cw), drop(&cx), drop(&cs), drop(&co);
    }
    {
        const int64_t dk = 16, dv = 8, hk = 1, hv = 2, T = 6;
        float q[96], k[96], v[96], g[12], beta[12], s0[256];
        fill(q, dk * hk * T, 1.0), fill(k, dk * hk * T, 0.3), fill(v, dv * hv * T, 1.0);
        fill(g, hv * T, 0.5), fill(beta, hv * T, 0.5), fill(s0, dv * dk * hv, 0.1);
        for (int i = 0; i < hv * T; i++) g[i] = -fabsf(g[i]), beta[i] = 0.5f + 0.5f * fabsf(beta[i]);
        struct owned qo = make(TY_TYPE_F32, dk, hk, T, q), ko = make(TY_TYPE_F32, dk, hk, T, k);
        struct owned vo = make(TY_TYPE_F32, dv, hv, T, v), go = make(TY_TYPE_F32, hv, T, 1, g);
        struct owned bo = make(TY_TYPE_F32, hv, T, 1, beta), so2 = make(TY_TYPE_F32, dv, dk, hv, s0);
        struct owned oo = make(TY_TYPE_F32, dv, hv, T, NULL);
        CHECK_OK(ty__backend_gated_delta(ref, &oo.t, &qo.t, &ko.t, &vo.t, &go.t, &bo.t, &so2.t, 0.25f));
        float want_o[96], want_s[256];
        memcpy(want_o, host(&oo), sizeof(float) * dv * hv * T),
            memcpy(want_s, host(&so2), sizeof(float) * dv * dk * hv);
        for (int i = 0; i < 3; i++) {
            memcpy(host(&so2), s0, sizeof(float) * dv * dk * hv);
            CHECK_OK(ty__backend_gated_delta(fast[i], &oo.t, &qo.t, &ko.t, &vo.t, &go.t, &bo.t, &so2.t, 0.25f));
            CHECK_MSG(!memcmp(want_o, host(&oo), sizeof(float) * dv * hv * T) &&
                          !memcmp(want_s, host(&so2), sizeof(float) * dv * dk * hv),
                      "%s: gated_delta differs", isa_name);
        }
        drop(&qo), drop(&ko), drop(&vo), drop(&go), drop(&bo), drop(&so2), drop(&oo);
    }

    drop(&so);
    drop(&tio);
    drop(&h16);
    drop(&hb16);
    drop(&po);
    drop(&nw);
    drop(&x);
    drop(&y);
    drop(&io);
    drop(&rows);
    drop(&w);
}

/* ==== Attention ==== */

/* Flash-style attention against the double-precision formula (max abs error <= 2e-5, as cpu-ref is held to), and
 * batch invariance: every query of the batch alone (at its own pos0) gives the same bits, with 1, 2 or 3 threads. */
static void check_attention(int64_t dk, int64_t dv, int64_t nh, int64_t nkv, int64_t n, int64_t pos0,
                            enum ty_type kv_type, double q_scale) {
    const int64_t n_ctx = pos0 + n + 3;
    float *q = ty__malloc(sizeof(float) * dk * nh * n), *k = ty__malloc(sizeof(float) * dk * nkv * n_ctx);
    float *v = ty__malloc(sizeof(float) * dv * nkv * n_ctx);
    fill(q, dk * nh * n, q_scale), fill(k, dk * nkv * n_ctx, 1.0), fill(v, dv * nkv * n_ctx, 1.0);
    struct owned qo = make(TY_TYPE_F32, dk, nh, n, q);
    struct owned kf = make(TY_TYPE_F32, dk, nkv, n_ctx, k), vf = make(TY_TYPE_F32, dv, nkv, n_ctx, v);
    struct owned kc = make(kv_type, dk, nkv, n_ctx, NULL), vc = make(kv_type, dv, nkv, n_ctx, NULL);
    CHECK_OK(ty__backend_copy(ref, &kc.t, &kf.t));
    CHECK_OK(ty__backend_copy(ref, &vc.t, &vf.t));
    if (kv_type == TY_TYPE_F16) { /* the values the op sees */
        for (int64_t i = 0; i < dk * nkv * n_ctx; i++) k[i] = ty__f16_to_f32(ty__f32_to_f16(k[i]));
        for (int64_t i = 0; i < dv * nkv * n_ctx; i++) v[i] = ty__f16_to_f32(ty__f32_to_f16(v[i]));
    }
    struct ty_attn at = {(float)(1.0 / sqrt((double)dk)), (int32_t)pos0};
    struct ty_tensor kv = ty__tensor_slice(&kc.t, 2, 0, pos0 + n), vv = ty__tensor_slice(&vc.t, 2, 0, pos0 + n);
    struct owned out = make(TY_TYPE_F32, dv, nh, n, NULL), one = make(TY_TYPE_F32, dv, nh, 1, NULL);
    CHECK_OK(ty__backend_attention(fast[1], &out.t, &qo.t, &kv, &vv, &at));
    double err = 0, *want = ty__malloc(sizeof(double) * (size_t)(dv * nh * n));
    ty_test_attention_ref(q, k, v, dk, dv, nh, nkv, n, pos0, at.scale, want);
    for (int64_t i = 0; i < dv * nh * n; i++) err = fmax(err, fabs(want[i] - host(&out)[i]));
    ty_free(want);
    CHECK_MSG(err <= 2e-5, "attention %s, %lld queries at %lld, q scale %g: max abs error %g", ty_type_name(kv_type),
              (long long)n, (long long)pos0, q_scale, err);
    bool same = true;
    for (int i = 0; i < 3; i += 2) {
        struct owned o2 = make(TY_TYPE_F32, dv, nh, n, NULL);
        CHECK_OK(ty__backend_attention(fast[i], &o2.t, &qo.t, &kv, &vv, &at));
        if (memcmp(host(&o2), host(&out), ty__tensor_size(&o2.t)) != 0) same = false;
        drop(&o2);
    }
    for (int64_t t = 0; t < n; t++) {
        struct ty_tensor qt = ty__tensor_slice(&qo.t, 2, t, 1);
        struct ty_attn a1 = {at.scale, (int32_t)(pos0 + t)};
        struct ty_tensor k1 = ty__tensor_slice(&kc.t, 2, 0, pos0 + t + 1),
                         v1 = ty__tensor_slice(&vc.t, 2, 0, pos0 + t + 1);
        CHECK_OK(ty__backend_attention(fast[(int)(t % 3)], &one.t, &qt, &k1, &v1, &a1));
        if (memcmp(host(&one), host(&out) + t * nh * dv, sizeof(float) * nh * dv) != 0) same = false;
    }
    CHECK_MSG(same, "attention %s, %lld queries: a query's result depends on its batch or the threads",
              ty_type_name(kv_type), (long long)n);
    ty_free(q), ty_free(k), ty_free(v);
    drop(&qo), drop(&kf), drop(&vf), drop(&kc), drop(&vc), drop(&out), drop(&one);
}

/* attention_paged: two sequences whose keys sit in shuffled blocks of a pool give, per (token, head), the bits that
 * attention gives over the same keys laid out contiguously. */
static void test_attention_paged(void) {
    const int64_t dk = 64, nh = 14, nkv = 2, block = 16, n_blocks = 12;
    const int32_t n0 = 5, pos00 = 37, n1 = 1, pos01 = 70; /* a prefill chunk and a decode step */
    struct owned kp = make(TY_TYPE_F16, dk, nkv, block * n_blocks, NULL),
                 vp = make(TY_TYPE_F16, dk, nkv, block * n_blocks, NULL);
    float *tmp = ty__malloc(sizeof(float) * dk * nkv * block * n_blocks);
    fill(tmp, dk * nkv * block * n_blocks, 1.0);
    struct owned kf = make(TY_TYPE_F32, dk, nkv, block * n_blocks, tmp);
    fill(tmp, dk * nkv * block * n_blocks, 1.0);
    struct owned vf = make(TY_TYPE_F32, dk, nkv, block * n_blocks, tmp);
    CHECK_OK(ty__backend_copy(ref, &kp.t, &kf.t));
    CHECK_OK(ty__backend_copy(ref, &vp.t, &vf.t));
    const int32_t table0[3] = {7, 2, 9}, table1[5] = {0, 11, 4, 5, 1};
    float *qf = ty__malloc(sizeof(float) * dk * nh * (n0 + n1));
    fill(qf, dk * nh * (n0 + n1), 2.0);
    struct owned q = make(TY_TYPE_F32, dk, nh, n0 + n1, qf), out = make(TY_TYPE_F32, dk, nh, n0 + n1, NULL);
    struct ty_paged_seq seqs[2] = {{0, n0, pos00, 3, table0}, {n0, n1, pos01, 5, table1}};
    struct ty_paged_attn pa = {0.125f, (int32_t)block, 2, seqs, NULL, NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(ty__backend_attention_paged(fast[i], &out.t, &q.t, &kp.t, &vp.t, &pa));
        for (int s = 0; s < 2; s++) { /* the sequence's keys gathered into a contiguous cache */
            const struct ty_paged_seq *sq = &seqs[s];
            int64_t nk = sq->pos0 + sq->n;
            struct owned kc = make(TY_TYPE_F16, dk, nkv, nk, NULL), vc = make(TY_TYPE_F16, dk, nkv, nk, NULL);
            for (int64_t j = 0; j < nk; j++) {
                int64_t row = (int64_t)sq->table[j / block] * block + j % block;
                memcpy(ty__tensor_row(&kc.t, 0, j, 0), ty__tensor_row(&kp.t, 0, row, 0), kp.t.nb[2]);
                memcpy(ty__tensor_row(&vc.t, 0, j, 0), ty__tensor_row(&vp.t, 0, row, 0), vp.t.nb[2]);
            }
            struct ty_tensor qs = ty__tensor_slice(&q.t, 2, sq->col, sq->n);
            struct owned o1 = make(TY_TYPE_F32, dk, nh, sq->n, NULL);
            struct ty_attn at = {pa.scale, sq->pos0};
            CHECK_OK(ty__backend_attention(fast[i], &o1.t, &qs, &kc.t, &vc.t, &at));
            CHECK_MSG(!memcmp(host(&o1), host(&out) + sq->col * nh * dk, ty__tensor_size(&o1.t)),
                      "%s: paged attention of sequence %d differs from contiguous (%d threads)", isa_name, s, i + 1);
            drop(&kc), drop(&vc), drop(&o1);
        }
    }
    ty_free(tmp), ty_free(qf);
    drop(&kp), drop(&vp), drop(&kf), drop(&vf), drop(&q), drop(&out);
}

static void test_attention(void) {
    check_attention(16, 12, 4, 2, 3, 4, TY_TYPE_F32, 1.0);    /* dk != dv */
    check_attention(16, 12, 4, 2, 3, 4, TY_TYPE_F16, 400.0);  /* scores in the hundreds */
    check_attention(64, 64, 14, 2, 37, 70, TY_TYPE_F16, 3.0); /* Qwen2.5's 7 heads per KV head, many tiles */
    check_attention(128, 128, 4, 4, 20, 0, TY_TYPE_F32, 1.0); /* no GQA, from position 0 */
    check_attention(64, 64, 8, 2, 1, 200, TY_TYPE_F16, 1.0);  /* decode over a long context */
}

/* ==== Several application threads on one backend ==== */

/* Contexts on different threads may share one model: products of different sizes (so the shared activation scratch
 * grows mid-flight) and attention run concurrently must each give what they give alone. */
struct conc {
    const struct ty_tensor *w, *x;
    const float *want;
    int64_t rows, cols;
    bool same;
};

static void *conc_main(void *arg) {
    struct conc *c = arg;
    struct ty_buffer *buf;
    if (ty__backend_buffer_alloc(ref, sizeof(float) * (size_t)(c->rows * c->cols), &buf) != TY_OK) return NULL;
    struct ty_tensor d;
    ty__tensor_init(&d, buf, 0, TY_TYPE_F32, c->rows, c->cols, 1, 1);
    c->same = true;
    for (int r = 0; r < 40; r++) {
        struct ty_tensor xc = ty__tensor_slice(c->x, 1, 0, 1 + (r * 7 + c->cols) % c->cols);
        struct ty_tensor dc = ty__tensor_slice(&d, 1, 0, xc.ne[1]);
        if (ty__backend_matmul(fast[1], &dc, c->w, &xc, NULL) != TY_OK ||
            memcmp(buf->data, c->want, sizeof(float) * (size_t)(c->rows * xc.ne[1])) != 0)
            c->same = false;
    }
    ty__backend_buffer_free(buf);
    return NULL;
}

static void test_threads_share_backend(void) {
    const int64_t n = 256, rows = 40;
    const int64_t cols[2] = {3, 29};
    struct owned w = make(TY_TYPE_Q4_0, n, rows, 1, NULL);
    float *wf = ty__malloc(sizeof(float) * n * rows);
    fill(wf, n * rows, 1.0);
    for (int64_t r = 0; r < rows; r++)
        ty__type_traits(TY_TYPE_Q4_0)->from_float(wf + r * n, (char *)host(&w) + r * w.t.nb[1], n);
    CHECK_OK(ty__backend_weight_prepare(fast[1], &w.t));
    struct owned xs[2], want[2];
    struct conc cs[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        float *xf = ty__malloc(sizeof(float) * n * cols[i]);
        fill(xf, n * cols[i], 1.0);
        xs[i] = make(TY_TYPE_F32, n, cols[i], 1, xf);
        want[i] = make(TY_TYPE_F32, rows, cols[i], 1, NULL);
        CHECK_OK(ty__backend_matmul(fast[1], &want[i].t, &w.t, &xs[i].t, NULL));
        ty_free(xf);
        cs[i] = (struct conc){&w.t, &xs[i].t, host(&want[i]), rows, cols[i], false};
    }
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, conc_main, &cs[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    CHECK_MSG(cs[0].same && cs[1].same, "%s: concurrent products on one backend differ from alone", isa_name);
    for (int i = 0; i < 2; i++) drop(&xs[i]), drop(&want[i]);
    drop(&w);
    ty_free(wf);
}

/* Reading ahead: a decode step's products come in the same order every token, so once the backend has seen A then B,
 * the next A hands the worker the head of its share of B (and B that of A), and a product of many columns in between
 * breaks the chain. The worker's share is the second half of the row units, 16 rows of 272 bytes (Q8_0, n = 256)
 * each. */
static void test_read_ahead(void) {
    const int64_t n = 256, rows[2] = {512, 1024};
    const size_t unit = 16 * 272;
    struct owned w[2], d[2];
    for (int i = 0; i < 2; i++) {
        float *wf = ty__malloc(sizeof(float) * n * rows[i]);
        fill(wf, n * rows[i], 1.0);
        w[i] = make(TY_TYPE_Q8_0, n, rows[i], 1, NULL);
        for (int64_t r = 0; r < rows[i]; r++)
            ty__type_traits(TY_TYPE_Q8_0)->from_float(wf + r * n, (char *)host(&w[i]) + r * w[i].t.nb[1], n);
        ty_free(wf);
        CHECK_OK(ty__backend_weight_prepare(fast[1], &w[i].t));
        d[i] = make(TY_TYPE_F32, rows[i], 8, 1, NULL);
    }
    float *xf = ty__malloc(sizeof(float) * n * 8);
    fill(xf, n * 8, 1.0);
    struct owned xo = make(TY_TYPE_F32, n, 8, 1, xf);
    const struct ty_tensor x1 = ty__tensor_slice(&xo.t, 1, 0, 1);
    /* (weight, columns, bytes handed): learning A -> B and B -> A, then using them; the 8 columns break the chain,
     * so the B after them learns nothing (else B -> B, 32 units) and hands what follows B (A); the next B learns B -> B
     * and hands it */
    const struct {
        int w, cols;
        size_t handed;
    } steps[] = {{0, 1, 0}, {1, 1, 0},         {0, 1, 32 * unit}, {1, 1, 16 * unit},
                 {0, 8, 0}, {1, 1, 16 * unit}, {1, 1, 32 * unit}};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        const int i = steps[s].w;
        const struct ty_tensor x = steps[s].cols == 1 ? x1 : xo.t, dst = ty__tensor_slice(&d[i].t, 1, 0, steps[s].cols);
        const size_t before = ty__cpu_read_ahead_handed(fast[1]);
        CHECK_OK(ty__backend_matmul(fast[1], &dst, &w[i].t, &x, NULL));
        const size_t handed = ty__cpu_read_ahead_handed(fast[1]) - before;
        CHECK_MSG(handed == steps[s].handed, "%s: step %zu handed %zu bytes, want %zu", isa_name, s, handed,
                  steps[s].handed);
    }
    CHECK(ty__cpu_read_ahead_handed(ref) == 0);
    for (int i = 0; i < 2; i++) drop(&w[i]), drop(&d[i]);
    drop(&xo);
    ty_free(xf);
}

/* ==== Norm and RoPE fusions (attn_input, ffn_input) ==== */

/* A weight of n_in x rows of `type`, random, prepared on every fast backend. */
static struct owned random_weight(enum ty_type type, int64_t n_in, int64_t rows, float *buf) {
    const struct ty_type_traits *tr = ty__type_traits(type);
    size_t row;
    CHECK_OK(ty__row_size(type, n_in, &row));
    struct owned w = make(type, n_in, rows, 1, NULL);
    fill(buf, n_in * rows, 1.0);
    for (int64_t r = 0; r < rows; r++) tr->from_float(buf + r * n_in, (char *)host(&w) + r * row, n_in);
    for (int k = 0; k < 3; k++) CHECK_OK(ty__backend_weight_prepare(fast[k], &w.t));
    return w;
}

/* What a layer's attention input reads besides x: the q/k/v weights (random, prepared) and biases, the input norm, the
 * head norms, the columns' positions (column i at pos0 + step * i) and a RoPE rotating rope_dims of each head. */
struct attn_in_fixture {
    struct owned w[3], b[3], nw, qn, kn, po;
    struct ty_rope rope;
};

static void attn_in_make(struct attn_in_fixture *f, enum ty_type type, int64_t n_embd, int64_t hd,
                         const int64_t rows[3], int64_t cols, int32_t pos0, int32_t step, int32_t rope_dims,
                         float *buf) {
    for (int i = 0; i < 3; i++) {
        f->w[i] = random_weight(type, n_embd, rows[i], buf);
        fill(buf, rows[i], 0.5);
        f->b[i] = make(TY_TYPE_F32, rows[i], 1, 1, buf);
    }
    fill(buf, n_embd, 1.0);
    f->nw = make(TY_TYPE_F32, n_embd, 1, 1, buf);
    fill(buf, hd, 1.0);
    f->qn = make(TY_TYPE_F32, hd, 1, 1, buf);
    fill(buf, hd, 1.0);
    f->kn = make(TY_TYPE_F32, hd, 1, 1, buf);
    int32_t *pos = ty__malloc(sizeof *pos * (size_t)cols);
    for (int64_t i = 0; i < cols; i++) pos[i] = (int32_t)(pos0 + step * i);
    f->po = make(TY_TYPE_I32, cols, 1, 1, pos);
    ty_free(pos);
    struct ty_rope_config rc = {.n_dims = rope_dims, .freq_base = 10000.0f};
    CHECK_OK(ty__rope_init(&rc, &f->rope));
}

static void attn_in_drop(struct attn_in_fixture *f) {
    for (int i = 0; i < 3; i++) drop(&f->w[i]), drop(&f->b[i]);
    drop(&f->nw), drop(&f->qn), drop(&f->kn), drop(&f->po);
}

/* attn_input against the same ops one by one on the same backend, bit for bit: with and without biases and head
 * norms, partial RoPE, 1 .. 200 columns (the few-column path quantises on the caller and rotates after the dispatch,
 * the many-column one does both on the threads), every thread count. Column i is at position pos0 + 2 i; RoPE
 * rotates rope_dims of each head. */
static void check_attn_input(enum ty_type type, int64_t cols, bool bias, bool head_norm, int32_t pos0,
                             int32_t rope_dims) {
    const int64_t n_embd = 256, hd = 64, nh = 5, nkv = 1, rows[3] = {hd * nh, hd * nkv, hd * nkv};
    float *buf = ty__malloc(sizeof(float) * (size_t)(n_embd * (rows[0] + cols) + 64));
    struct attn_in_fixture f;
    attn_in_make(&f, type, n_embd, hd, rows, cols, pos0, 2, rope_dims, buf);
    fill(buf, n_embd * cols, 2.0);
    struct owned x = make(TY_TYPE_F32, n_embd, cols, 1, buf), xn = make(TY_TYPE_F32, n_embd, cols, 1, NULL);
    struct owned out[2][3];
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < 3; i++) out[v][i] = make(TY_TYPE_F32, rows[i], cols, 1, NULL);
    for (int k = 0; k < 3; k++) {
        struct ty_attn_input a[2];
        for (int v = 0; v < 2; v++) {
            struct ty_tensor q3 = ty__tensor_reshape(&out[v][0].t, hd, nh, cols, 1);
            struct ty_tensor k3 = ty__tensor_reshape(&out[v][1].t, hd, nkv, cols, 1);
            a[v] = (struct ty_attn_input){&out[v][0].t, &out[v][1].t, &out[v][2].t, NULL,    NULL, &f.w[0].t, &f.w[1].t,
                                          &f.w[2].t,    NULL,         NULL,         NULL,    &x.t, &f.nw.t,   NULL,
                                          NULL,         1e-6f,        &f.po.t,      &f.rope, &xn.t};
            if (bias) a[v].bq = &f.b[0].t, a[v].bk = &f.b[1].t, a[v].bv = &f.b[2].t;
            if (head_norm) a[v].q_norm = &f.qn.t, a[v].k_norm = &f.kn.t;
            for (int i = 0; i < 3; i++) memset(host(&out[v][i]), 0x7f, ty__tensor_size(&out[v][i].t));
            a[v].q3 = &q3, a[v].k3 = &k3;
            CHECK_OK(v == 0 ? ty__attn_input_unfused(fast[k], &a[v]) : ty__backend_attn_input(fast[k], &a[v]));
        }
        for (int i = 0; i < 3; i++)
            CHECK_MSG(!memcmp(host(&out[0][i]), host(&out[1][i]), ty__tensor_size(&out[0][i].t)),
                      "%s: attn_input %s, %lld columns, bias %d, head norm %d, %d threads: output %d (q, k, v) differs "
                      "from the ops one by one",
                      isa_name, ty_type_name(type), (long long)cols, bias, head_norm, k + 1, i);
    }
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < 3; i++) drop(&out[v][i]);
    attn_in_drop(&f);
    drop(&x), drop(&xn);
    ty_free(buf);
}

/* ffn_input against rms_norm then matmul_swiglu on the same backend, bit for bit. */
static void check_ffn_input(enum ty_type type, int64_t cols) {
    const int64_t n_embd = 256, n_ff = 200;
    const struct ty_type_traits *tr = ty__type_traits(type);
    size_t row;
    CHECK_OK(ty__row_size(type, n_embd, &row));
    float *buf = ty__malloc(sizeof(float) * (size_t)(n_embd * (n_ff + cols)));
    struct owned w[2];
    for (int i = 0; i < 2; i++) {
        w[i] = make(type, n_embd, n_ff, 1, NULL);
        fill(buf, n_embd * n_ff, 1.0);
        for (int64_t r = 0; r < n_ff; r++) tr->from_float(buf + r * n_embd, (char *)host(&w[i]) + r * row, n_embd);
        for (int k = 0; k < 3; k++) CHECK_OK(ty__backend_weight_prepare(fast[k], &w[i].t));
    }
    fill(buf, n_embd * cols, 2.0);
    struct owned x = make(TY_TYPE_F32, n_embd, cols, 1, buf), xn = make(TY_TYPE_F32, n_embd, cols, 1, NULL);
    fill(buf, n_embd, 1.0);
    struct owned nw = make(TY_TYPE_F32, n_embd, 1, 1, buf);
    struct owned up = make(TY_TYPE_F32, n_ff, cols, 1, NULL), d0 = make(TY_TYPE_F32, n_ff, cols, 1, NULL);
    struct owned d1 = make(TY_TYPE_F32, n_ff, cols, 1, NULL);
    for (int k = 0; k < 3; k++) {
        memset(host(&d1), 0x7f, ty__tensor_size(&d1.t));
        CHECK_OK(ty__backend_rms_norm(fast[k], &xn.t, &x.t, &nw.t, 1e-6f));
        CHECK_OK(ty__backend_matmul_swiglu(fast[k], &d0.t, &w[0].t, &w[1].t, &xn.t, &up.t));
        CHECK_OK(ty__backend_ffn_input(fast[k], &d1.t, &w[0].t, &w[1].t, &x.t, &nw.t, 1e-6f, &xn.t, &up.t));
        CHECK_MSG(!memcmp(host(&d0), host(&d1), ty__tensor_size(&d0.t)),
                  "%s: ffn_input %s, %lld columns, %d threads differs from rms_norm + matmul_swiglu", isa_name,
                  ty_type_name(type), (long long)cols, k + 1);
    }
    drop(&w[0]), drop(&w[1]), drop(&x), drop(&xn), drop(&nw), drop(&up), drop(&d0), drop(&d1);
    ty_free(buf);
}

static void test_fusions(void) {
    const enum ty_type types[] = {TY_TYPE_Q8_0, TY_TYPE_Q4_K, TY_TYPE_BF16, TY_TYPE_F32};
    const int64_t col_counts[] = {1, 3, 19, 67, 200};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (size_t c = 0; c < sizeof col_counts / sizeof col_counts[0]; c++) {
            check_attn_input(types[t], col_counts[c], c % 2 == 0, c % 2 == 1, 3, 48);
            check_ffn_input(types[t], col_counts[c]);
        }
    check_attn_input(TY_TYPE_Q4_0, 2, true, true, 3, 48);
    /* the fast backend keeps the last call's RoPE angles for the next call with the same positions and RoPE (the
     * next layer): the same column count at other positions, or the same positions with another RoPE, must not
     * reuse them */
    for (int i = 0; i < 2; i++) {
        const int64_t cols = i == 0 ? 19 : 1;
        check_attn_input(TY_TYPE_Q8_0, cols, true, false, 3, 48);
        check_attn_input(TY_TYPE_Q8_0, cols, true, false, 3, 48);
        check_attn_input(TY_TYPE_Q8_0, cols, true, false, 100, 48);
        check_attn_input(TY_TYPE_Q8_0, cols, true, false, 100, 32);
    }
}

/* ==== A layer's halves (attn_output, ffn) ==== */

/* Whether `call` on fast[k] took the one-dispatch path (ty__cpu_chained_calls counted it). */
static bool chained(int k, size_t before) {
    return ty__cpu_chained_calls(fast[k]) == before + 1;
}

/* attn_block against attn_input, copy, copy, attention, matmul and add on the same backend, bit for bit: the residual
 * and both caches (f16 and f32), GQA (4 query heads on 2 KV heads), with and without head norms, keys before the
 * batch, 1 .. 19 columns (up to 4 take the one-dispatch path on 2 and 3 threads, checked), every thread count. */
static void check_attn_block(enum ty_type type, enum ty_type cache, int64_t cols, int32_t pos0, bool head_norm) {
    const int64_t n_embd = 256, hd = 64, nh = 4, nkv = 2, ctx = 64, rows[3] = {hd * nh, hd * nkv, hd * nkv};
    float *buf = ty__malloc(sizeof(float) * (size_t)(n_embd * n_embd + hd * nkv * ctx));
    struct owned wo = random_weight(type, hd * nh, n_embd, buf);
    struct attn_in_fixture f;
    attn_in_make(&f, type, n_embd, hd, rows, cols, pos0, 1, 48, buf);
    fill(buf, n_embd * cols, 2.0);
    struct owned x0 = make(TY_TYPE_F32, n_embd, cols, 1, buf);
    struct owned kc0 = make(cache, hd, nkv, ctx, NULL), vc0 = make(cache, hd, nkv, ctx, NULL);
    struct owned *c0[2] = {&kc0, &vc0};
    for (int i = 0; i < 2; i++) { /* the keys and values before the batch */
        fill(buf, hd * nkv * ctx, 1.0);
        struct ty_tensor flat = ty__tensor_reshape(&c0[i]->t, hd * nkv * ctx, 1, 1, 1);
        struct owned src = make(TY_TYPE_F32, hd * nkv * ctx, 1, 1, buf);
        CHECK_OK(ty__backend_copy(ref, &flat, &src.t));
        drop(&src);
    }
    for (int k = 0; k < 3; k++) {
        struct owned x[2], xn[2], qkv[2][3], kc[2], vc[2], att[2], proj[2];
        for (int v = 0; v < 2; v++) {
            x[v] = make(TY_TYPE_F32, n_embd, cols, 1, host(&x0)), xn[v] = make(TY_TYPE_F32, n_embd, cols, 1, NULL);
            for (int i = 0; i < 3; i++) qkv[v][i] = make(TY_TYPE_F32, rows[i], cols, 1, NULL);
            kc[v] = make(cache, hd, nkv, ctx, host(&kc0)), vc[v] = make(cache, hd, nkv, ctx, host(&vc0));
            att[v] = make(TY_TYPE_F32, hd, nh, cols, NULL), proj[v] = make(TY_TYPE_F32, n_embd, cols, 1, NULL);
            struct ty_tensor q3 = ty__tensor_reshape(&qkv[v][0].t, hd, nh, cols, 1);
            struct ty_tensor k3 = ty__tensor_reshape(&qkv[v][1].t, hd, nkv, cols, 1);
            struct ty_tensor v3 = ty__tensor_reshape(&qkv[v][2].t, hd, nkv, cols, 1);
            struct ty_attn_input in = {&qkv[v][0].t, &qkv[v][1].t, &qkv[v][2].t, &q3,       &k3,
                                       &f.w[0].t,    &f.w[1].t,    &f.w[2].t,    &f.b[0].t, &f.b[1].t,
                                       &f.b[2].t,    &x[v].t,      &f.nw.t,      NULL,      NULL,
                                       1e-6f,        &f.po.t,      &f.rope,      &xn[v].t};
            if (head_norm) in.q_norm = &f.qn.t, in.k_norm = &f.kn.t;
            struct ty_tensor k_new = ty__tensor_slice(&kc[v].t, 2, pos0, cols);
            struct ty_tensor v_new = ty__tensor_slice(&vc[v].t, 2, pos0, cols);
            struct ty_tensor k_all = ty__tensor_slice(&kc[v].t, 2, 0, pos0 + cols);
            struct ty_tensor v_all = ty__tensor_slice(&vc[v].t, 2, 0, pos0 + cols);
            struct ty_attn_output out = {&x[v].t, &wo.t,          &q3,       &k3,       &v3, &k_new, &v_new, &k_all,
                                         &v_all,  {0.125f, pos0}, &att[v].t, &proj[v].t};
            const size_t before = ty__cpu_chained_calls(fast[k]);
            CHECK_OK(v == 0 ? ty__attn_block_unfused(fast[k], &in, &out) : ty__backend_attn_block(fast[k], &in, &out));
            if (v == 1)
                CHECK_MSG(chained(k, before) == (k > 0 && cols <= 4),
                          "%s: attn_block, %lld columns, %d threads: one dispatch %d", isa_name, (long long)cols, k + 1,
                          chained(k, before));
        }
        const struct owned *got[3] = {&x[1], &kc[1], &vc[1]}, *want[3] = {&x[0], &kc[0], &vc[0]};
        for (int i = 0; i < 3; i++)
            CHECK_MSG(!memcmp(host(want[i]), host(got[i]), ty__tensor_size(&want[i]->t)),
                      "%s: attn_block %s, %s cache, %lld columns at %d, head norm %d, %d threads: %s differs from the "
                      "ops one by one",
                      isa_name, ty_type_name(type), ty_type_name(cache), (long long)cols, pos0, head_norm, k + 1,
                      i == 0   ? "the residual"
                      : i == 1 ? "the key cache"
                               : "the value cache");
        for (int v = 0; v < 2; v++) {
            drop(&x[v]), drop(&xn[v]), drop(&kc[v]), drop(&vc[v]), drop(&att[v]), drop(&proj[v]);
            for (int i = 0; i < 3; i++) drop(&qkv[v][i]);
        }
    }
    attn_in_drop(&f);
    drop(&wo), drop(&x0), drop(&kc0), drop(&vc0);
    ty_free(buf);
}

/* ffn against ffn_input, matmul and add on the same backend, bit for bit, with the path checked as above. The down
 * weight reads n_ff = 512 inputs, so K-quants run there too. */
static void check_ffn(enum ty_type type, int64_t cols) {
    const int64_t n_embd = 256, n_ff = 512;
    float *buf = ty__malloc(sizeof(float) * (size_t)(n_embd * n_ff));
    struct owned wg = random_weight(type, n_embd, n_ff, buf), wu = random_weight(type, n_embd, n_ff, buf);
    struct owned wd = random_weight(type, n_ff, n_embd, buf);
    fill(buf, n_embd, 1.0);
    struct owned nw = make(TY_TYPE_F32, n_embd, 1, 1, buf);
    fill(buf, n_embd * cols, 2.0);
    struct owned x0 = make(TY_TYPE_F32, n_embd, cols, 1, buf);
    for (int k = 0; k < 3; k++) {
        struct owned x[2], xn[2], gate[2], up[2], proj[2];
        for (int v = 0; v < 2; v++) {
            x[v] = make(TY_TYPE_F32, n_embd, cols, 1, host(&x0)), xn[v] = make(TY_TYPE_F32, n_embd, cols, 1, NULL);
            gate[v] = make(TY_TYPE_F32, n_ff, cols, 1, NULL), up[v] = make(TY_TYPE_F32, n_ff, cols, 1, NULL);
            proj[v] = make(TY_TYPE_F32, n_embd, cols, 1, NULL);
            struct ty_ffn f = {&x[v].t, &nw.t, 1e-6f, &wg.t, &wu.t, &wd.t, &xn[v].t, &gate[v].t, &up[v].t, &proj[v].t};
            const size_t before = ty__cpu_chained_calls(fast[k]);
            CHECK_OK(v == 0 ? ty__ffn_unfused(fast[k], &f) : ty__backend_ffn(fast[k], &f));
            if (v == 1)
                CHECK_MSG(chained(k, before) == (k > 0 && cols <= 4),
                          "%s: ffn, %lld columns, %d threads: one dispatch %d", isa_name, (long long)cols, k + 1,
                          chained(k, before));
        }
        CHECK_MSG(!memcmp(host(&x[0]), host(&x[1]), ty__tensor_size(&x[0].t)),
                  "%s: ffn %s, %lld columns, %d threads: the residual differs from the ops one by one", isa_name,
                  ty_type_name(type), (long long)cols, k + 1);
        for (int v = 0; v < 2; v++) drop(&x[v]), drop(&xn[v]), drop(&gate[v]), drop(&up[v]), drop(&proj[v]);
    }
    drop(&wg), drop(&wu), drop(&wd), drop(&nw), drop(&x0);
    ty_free(buf);
}

static void test_layer_halves(void) {
    const enum ty_type types[] = {TY_TYPE_Q8_0, TY_TYPE_Q4_0, TY_TYPE_Q4_K, TY_TYPE_Q6_K, TY_TYPE_BF16, TY_TYPE_F32};
    const int64_t col_counts[] = {1, 2, 4, 19};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (size_t c = 0; c < sizeof col_counts / sizeof col_counts[0]; c++) {
            check_ffn(types[t], col_counts[c]);
            check_attn_block(types[t], c % 2 ? TY_TYPE_F32 : TY_TYPE_F16, col_counts[c], c == 3 ? 0 : 37, c % 2 == 0);
        }
}

/* ==== Registry ==== */

static void test_registry(void) {
    struct ty_backend *b;
    CHECK_OK(ty__backend_init(NULL, 1, &b));
    CHECK(!strcmp(ty__backend_name(b), "cpu")); /* the fast backend is the default */
    ty__backend_free(b);
    CHECK_OK(ty__backend_init("cpu-ref", 1, &b));
    CHECK(!strcmp(ty__backend_name(b), "cpu-ref") && b->iface->weight_prepare == NULL);
    ty__backend_free(b);
    /* a forced path this CPU cannot run (or an unknown name) fails loudly */
    setenv("TY_CPU_ISA", "no-such-isa", 1);
    CHECK_STATUS(ty__backend_init("cpu", 1, &b), TY_ERR_INVALID_ARG);
    unsetenv("TY_CPU_ISA");
}

void ty_tests(void) {
    CHECK_OK(ty__backend_init("cpu-ref", 2, &ref));
    if (!ref) return;
    TY_RUN(test_registry);
    for (int isa = 0; isa < TY_CPU_ISA_COUNT; isa++) {
        if (!ty__cpu_isa_supported((enum ty_cpu_isa)isa)) continue;
        isa_name = ty__cpu_isa_name((enum ty_cpu_isa)isa);
        setenv("TY_CPU_ISA", isa_name, 1);
        bool ok = true;
        for (int i = 0; i < 3; i++) {
            CHECK_OK(ty__backend_init("cpu", i + 1, &fast[i]));
            ok = ok && fast[i];
        }
        printf("# dispatch path %s\n", isa_name);
        if (ok) {
            TY_RUN(test_matmul);
            TY_RUN(test_other_ops);
            TY_RUN(test_fusions);
            TY_RUN(test_layer_halves);
            TY_RUN(test_attention);
            TY_RUN(test_attention_paged);
            TY_RUN(test_threads_share_backend);
            TY_RUN(test_read_ahead);
        }
        for (int i = 0; i < 3; i++) ty__backend_free(fast[i]), fast[i] = NULL;
    }
    unsetenv("TY_CPU_ISA");
    ty__backend_free(ref);
    CHECK(ty_mem_allocated() == 0);
}
