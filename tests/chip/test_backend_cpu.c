/*
 * test_backend_cpu.c - every op of the reference CPU backend (src/chip/cpu/cpu-ref.c) against a naive formula
 * computed here in double precision, plus the shared parts of backend.c: tensor views, the registry, the copy
 * fallback for backends that cannot wrap host memory, and the RoPE frequency tables (default, linear, YaRN).
 *
 *  - matmul: for every weight type, W is quantised with the type's from_float, dequantised again with to_float, and
 *    the product of that f32 matrix with random activations (naive, in double) is the reference. Rows longer than
 *    the kernel's dequantisation chunk, an output count that does not divide among the threads, strided views and a
 *    bias are all exercised. Results must also be bit-identical whatever the batch size or thread count.
 *  - attention: naive two-pass softmax attention in double over an F32 and an F16 cache, including scores large
 *    enough that an unshifted exp() would overflow.
 *  - rope: the rotation formula applied in double with the op's own frequency table; the tables themselves against
 *    HF's formulas written out here independently.
 */
#include "harness.h"
#include "backend-fixture.h"
#include "attention-ref.h"
#include "chip/backend.h"
#include "model/quant.h"

#include <stdlib.h>

/* ==== Helpers ==== */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static void fill(float *x, int64_t n, double scale) {
    fixture_fill(&rng_state, x, n, scale);
}

static struct ty_backend *be;

static struct owned make(enum ty_type type, int64_t ne0, int64_t ne1, int64_t ne2, const void *data) {
    return owned_make(be, type, ne0, ne1, ne2, data);
}
static void drop(struct owned *o) {
    owned_drop(o);
}

static double max_abs(const double *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as the maximum */
    }
    return m;
}

/* ==== Tensors and the registry ==== */

static void test_views(void) {
    struct ty_tensor t;
    ty__tensor_init(&t, NULL, 128, TY_TYPE_F32, 8, 3, 5, 1);
    CHECK(t.nb[0] == 4 && t.nb[1] == 32 && t.nb[2] == 96 && t.nb[3] == 480);
    CHECK(ty__tensor_is_contiguous(&t) && ty__tensor_size(&t) == 480 && ty__tensor_nrows(&t) == 15);
    struct ty_tensor s = ty__tensor_slice(&t, 2, 1, 3);
    CHECK(s.offs == 128 + 96 && s.ne[2] == 3 && ty__tensor_is_contiguous(&s));
    struct ty_tensor c = ty__tensor_slice(&t, 1, 1, 2);
    CHECK(c.offs == 128 + 32 && !ty__tensor_is_contiguous(&c));
    struct ty_tensor r = ty__tensor_reshape(&t, 24, 5, 1, 1);
    CHECK(r.nb[1] == 96 && r.ne[1] == 5 && r.offs == 128);

    struct ty_tensor q;
    ty__tensor_init(&q, NULL, 0, TY_TYPE_Q4_K, 512, 2, 1, 1);
    CHECK(q.nb[0] == sizeof(struct ty_block_q4_K) && q.nb[1] == 2 * sizeof(struct ty_block_q4_K));
    CHECK(ty__tensor_size(&q) == 4 * sizeof(struct ty_block_q4_K));
}

static void test_registry(void) {
    struct ty_backend *b = NULL;
    CHECK_STATUS(ty__backend_init("no-such-backend", 1, &b), TY_ERR_UNSUPPORTED);
    CHECK(b == NULL);
    CHECK(strstr(ty_last_error(), "no-such-backend") && strstr(ty_last_error(), "cpu-ref"));
    CHECK_OK(ty__backend_init(NULL, 1, &b));
    CHECK(b && b->iface->version == TY_BACKEND_IFACE_VERSION);
    ty__backend_free(b);
    CHECK_OK(ty__backend_init("cpu", 2, &b));
    ty__backend_free(b);
    CHECK_STATUS(ty__backend_init("cpu-ref", -1, &b), TY_ERR_INVALID_ARG);
    CHECK(strstr(ty__backend_names(), "cpu-ref") != NULL);
}

/* A backend that cannot wrap host memory must get an uploaded copy with the same bytes. */
static void test_wrap_fallback(void) {
    struct ty_backend_iface no_wrap = *be->iface;
    no_wrap.buffer_wrap = NULL;
    struct ty_backend copy_be = {.iface = &no_wrap, .ctx = be->ctx};
    size_t n = 1001;
    unsigned char *host = ty__malloc(n);
    for (size_t i = 0; i < n; i++) host[i] = (unsigned char)(i * 7 + 3);
    struct ty_buffer *buf;
    CHECK_OK(ty__backend_buffer_wrap(&copy_be, host, n, &buf));
    CHECK(buf->data != host && !buf->wrapped && buf->size == n);
    CHECK(memcmp(buf->data, host, n) == 0);
    ty__backend_buffer_free(buf);
    CHECK_OK(ty__backend_buffer_wrap(be, host, n, &buf));
    CHECK(buf->data == host && buf->wrapped);
    ty__backend_buffer_free(buf);
    ty_free(host);
}

/* ==== matmul and get_rows for every weight type ==== */

static const enum ty_type weight_types[] = {TY_TYPE_F32,  TY_TYPE_F16,  TY_TYPE_BF16, TY_TYPE_Q8_0,
                                            TY_TYPE_Q4_0, TY_TYPE_Q4_1, TY_TYPE_Q5_0, TY_TYPE_Q5_1,
                                            TY_TYPE_Q4_K, TY_TYPE_Q5_K, TY_TYPE_Q6_K};

static void test_matmul_type(enum ty_type type) {
    const int64_t n_in = 1280, n_out = 37, n_tok = 5; /* rows span two dequantisation chunks */
    const struct ty_type_traits *tr = ty__type_traits(type);
    size_t row;
    CHECK_OK(ty__row_size(type, n_in, &row));
    float *wf = ty__malloc(sizeof(float) * n_in * n_out), *wd = ty__malloc(sizeof(float) * n_in * n_out);
    char *wq = ty__malloc(row * n_out);
    fill(wf, n_in * n_out, 1.0);
    for (int64_t r = 0; r < n_out; r++) tr->from_float(wf + r * n_in, wq + r * row, n_in);
    for (int64_t r = 0; r < n_out; r++) tr->to_float(wq + r * row, wd + r * n_in, n_in);

    /* The weights wrapped in place, as the model does with the mapped file. */
    struct ty_buffer *wbuf;
    CHECK_OK(ty__backend_buffer_wrap(be, wq, row * n_out, &wbuf));
    struct ty_tensor w;
    ty__tensor_init(&w, wbuf, 0, type, n_in, n_out, 1, 1);

    /* x: columns 1..5 of a (n_in, 7) tensor, so the kernel reads a view. */
    float *xf = ty__malloc(sizeof(float) * n_in * 7);
    fill(xf, n_in * 7, 1.0);
    struct owned xo = make(TY_TYPE_F32, n_in, 7, 1, xf);
    struct ty_tensor x = ty__tensor_slice(&xo.t, 1, 1, n_tok);
    float bias[37];
    fill(bias, n_out, 0.5);
    struct owned bo = make(TY_TYPE_F32, n_out, 1, 1, bias);
    struct owned dst = make(TY_TYPE_F32, n_out, n_tok, 1, NULL);

    double *ref = ty__malloc(sizeof(double) * n_out * n_tok);
    double scale = 0;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t o = 0; o < n_out; o++) {
            double s = bias[o];
            for (int64_t i = 0; i < n_in; i++) s += (double)wd[o * n_in + i] * xf[(t + 1) * n_in + i];
            ref[t * n_out + o] = s;
            scale += fabs(s);
        }
    CHECK_OK(ty__backend_matmul(be, &dst.t, &w, &x, &bo.t));
    float *got = ty__malloc(sizeof(float) * n_out * n_tok);
    CHECK_OK(ty__backend_tensor_get(be, &dst.t, got, 0, sizeof(float) * n_out * n_tok));
    /* f32 accumulation of 1280 products of magnitude <= 1: a few 1e-6 of the result's typical size. */
    double err = max_abs(ref, got, n_out * n_tok);
    CHECK_MSG(err <= 2e-5, "%s: max abs error %g", ty_type_name(type), err);
    (void)scale;

    /* Same results, bit for bit, one token at a time and without a bias added by the kernel. */
    struct owned one = make(TY_TYPE_F32, n_out, 1, 1, NULL);
    bool same = true;
    for (int64_t t = 0; t < n_tok; t++) {
        struct ty_tensor xt = ty__tensor_slice(&xo.t, 1, 1 + t, 1);
        CHECK_OK(ty__backend_matmul(be, &one.t, &w, &xt, &bo.t));
        float col[37];
        CHECK_OK(ty__backend_tensor_get(be, &one.t, col, 0, sizeof col));
        if (memcmp(col, got + t * n_out, sizeof col) != 0) same = false;
    }
    CHECK_MSG(same, "%s: batched and single-token products differ", ty_type_name(type));

    /* And with one thread. */
    struct ty_backend *be1;
    CHECK_OK(ty__backend_init("cpu-ref", 1, &be1));
    struct ty_buffer *wbuf1, *xbuf1, *dbuf1, *bbuf1;
    CHECK_OK(ty__backend_buffer_wrap(be1, wq, row * n_out, &wbuf1));
    CHECK_OK(ty__backend_buffer_wrap(be1, xf, sizeof(float) * n_in * 7, &xbuf1));
    CHECK_OK(ty__backend_buffer_wrap(be1, bias, sizeof bias, &bbuf1));
    CHECK_OK(ty__backend_buffer_alloc(be1, sizeof(float) * n_out * n_tok, &dbuf1));
    struct ty_tensor w1, x1, b1, d1;
    ty__tensor_init(&w1, wbuf1, 0, type, n_in, n_out, 1, 1);
    ty__tensor_init(&x1, xbuf1, 0, TY_TYPE_F32, n_in, 7, 1, 1);
    x1 = ty__tensor_slice(&x1, 1, 1, n_tok);
    ty__tensor_init(&b1, bbuf1, 0, TY_TYPE_F32, n_out, 1, 1, 1);
    ty__tensor_init(&d1, dbuf1, 0, TY_TYPE_F32, n_out, n_tok, 1, 1);
    CHECK_OK(ty__backend_matmul(be1, &d1, &w1, &x1, &b1));
    CHECK_MSG(memcmp(dbuf1->data, got, sizeof(float) * n_out * n_tok) == 0, "%s: 1 thread differs from 3",
              ty_type_name(type));
    ty__backend_buffer_free(wbuf1);
    ty__backend_buffer_free(xbuf1);
    ty__backend_buffer_free(bbuf1);
    ty__backend_buffer_free(dbuf1);
    ty__backend_free(be1);

    /* get_rows: rows 3, 0, 36, 3 converted to f32 are exactly to_float's output. */
    int32_t ids[4] = {3, 0, 36, 3};
    struct owned io = make(TY_TYPE_I32, 4, 1, 1, ids);
    struct owned ro = make(TY_TYPE_F32, n_in, 4, 1, NULL);
    CHECK_OK(ty__backend_get_rows(be, &ro.t, &w, &io.t));
    float *rows = ty__malloc(sizeof(float) * n_in * 4);
    CHECK_OK(ty__backend_tensor_get(be, &ro.t, rows, 0, sizeof(float) * n_in * 4));
    bool rows_ok = true;
    for (int i = 0; i < 4; i++)
        if (memcmp(rows + i * n_in, wd + ids[i] * n_in, sizeof(float) * n_in) != 0) rows_ok = false;
    CHECK_MSG(rows_ok, "%s: get_rows differs from to_float", ty_type_name(type));

    ty_free(rows);
    drop(&io);
    drop(&ro);
    drop(&one);
    ty_free(got);
    ty_free(ref);
    drop(&dst);
    drop(&bo);
    drop(&xo);
    ty_free(xf);
    ty__backend_buffer_free(wbuf);
    ty_free(wq);
    ty_free(wd);
    ty_free(wf);
}

static void test_matmul_all_types(void) {
    for (size_t i = 0; i < sizeof weight_types / sizeof weight_types[0]; i++) {
        CHECK(ty__backend_weight_type_ok(weight_types[i]));
        test_matmul_type(weight_types[i]);
    }
    CHECK(!ty__backend_weight_type_ok(TY_TYPE_Q8_K));
    CHECK(!ty__backend_weight_type_ok(TY_TYPE_I32));
}

/* ==== Norm, elementwise ops, copy ==== */

static void test_rms_norm(void) {
    const int64_t d = 96, n1 = 3, n2 = 2;
    float x[96 * 6], w[96];
    fill(x, d * n1 * n2, 3.0);
    fill(w, d, 1.0);
    struct owned xo = make(TY_TYPE_F32, d, n1, n2, x), wo = make(TY_TYPE_F32, d, 1, 1, w);
    struct owned yo = make(TY_TYPE_F32, d, n1, n2, NULL);
    const float eps = 1e-6f;
    CHECK_OK(ty__backend_rms_norm(be, &yo.t, &xo.t, &wo.t, eps));
    double ref[96 * 6];
    for (int64_t r = 0; r < n1 * n2; r++) {
        double ss = 0;
        for (int64_t i = 0; i < d; i++) ss += (double)x[r * d + i] * x[r * d + i];
        double s = 1.0 / sqrt(ss / d + eps);
        for (int64_t i = 0; i < d; i++) ref[r * d + i] = w[i] * x[r * d + i] * s;
    }
    float got[96 * 6];
    CHECK_OK(ty__backend_tensor_get(be, &yo.t, got, 0, sizeof got));
    CHECK(max_abs(ref, got, d * n1 * n2) < 1e-5);
    /* in place, on the view of rows 1..2 of each plane (the per-head norm of Qwen3 works on such views) */
    struct ty_tensor v = ty__tensor_slice(&xo.t, 1, 1, 2);
    CHECK(!ty__tensor_is_contiguous(&v));
    CHECK_OK(ty__backend_rms_norm(be, &v, &v, &wo.t, eps));
    CHECK_OK(ty__backend_tensor_get(be, &xo.t, got, 0, sizeof got));
    for (int64_t r = 0; r < n1 * n2; r++) {
        if (r % n1 == 0)
            CHECK(memcmp(got + r * d, x + r * d, sizeof(float) * d) == 0); /* row 0 of each plane untouched */
        else
            CHECK(max_abs(ref + r * d, got + r * d, d) < 1e-5);
    }
    drop(&xo);
    drop(&wo);
    drop(&yo);
}

static void test_elementwise(void) {
    const int64_t n = 200;
    float a[400], b[400];
    fill(a, 2 * n, 8.0);
    fill(b, 2 * n, 2.0);
    struct owned ao = make(TY_TYPE_F32, n, 2, 1, a), bo = make(TY_TYPE_F32, n, 2, 1, b);
    struct owned out = make(TY_TYPE_F32, n, 2, 1, NULL);
    double ref[400];
    float got[400];
    CHECK_OK(ty__backend_swiglu(be, &out.t, &ao.t, &bo.t));
    for (int64_t i = 0; i < 2 * n; i++) ref[i] = a[i] / (1.0 + exp(-(double)a[i])) * b[i];
    CHECK_OK(ty__backend_tensor_get(be, &out.t, got, 0, sizeof got));
    CHECK(max_abs(ref, got, 2 * n) < 1e-5);
    CHECK_OK(ty__backend_add(be, &out.t, &ao.t, &bo.t));
    CHECK_OK(ty__backend_tensor_get(be, &out.t, got, 0, sizeof got));
    bool exact = true;
    for (int64_t i = 0; i < 2 * n; i++) exact &= got[i] == a[i] + b[i];
    CHECK(exact);
    /* in place: a = a + b */
    CHECK_OK(ty__backend_add(be, &ao.t, &ao.t, &bo.t));
    CHECK_OK(ty__backend_tensor_get(be, &ao.t, got, 0, sizeof got));
    exact = true;
    for (int64_t i = 0; i < 2 * n; i++) exact &= got[i] == a[i] + b[i];
    CHECK(exact);
    drop(&ao);
    drop(&bo);
    drop(&out);
}

static void test_copy(void) {
    const int64_t d = 24, h = 2, n = 3;
    float src[24 * 2 * 3];
    fill(src, d * h * n, 100.0);
    struct owned so = make(TY_TYPE_F32, d, h, n, src);
    /* Into positions 2..4 of a (d, h, 6) cache, f16 and f32. */
    struct owned c16 = make(TY_TYPE_F16, d, h, 6, NULL), c32 = make(TY_TYPE_F32, d, h, 6, NULL);
    struct ty_tensor v16 = ty__tensor_slice(&c16.t, 2, 2, n), v32 = ty__tensor_slice(&c32.t, 2, 2, n);
    CHECK_OK(ty__backend_copy(be, &v16, &so.t));
    CHECK_OK(ty__backend_copy(be, &v32, &so.t));
    const ty_f16 *p16 = (const ty_f16 *)ty__tensor_host(&v16);
    const float *p32 = ty__tensor_host(&v32);
    bool ok16 = true, ok32 = true;
    for (int64_t i = 0; i < d * h * n; i++) {
        ok16 &= p16[i] == ty__f32_to_f16(src[i]);
        ok32 &= p32[i] == src[i];
    }
    CHECK(ok16 && ok32);
    drop(&so);
    drop(&c16);
    drop(&c32);
}

/* ==== RoPE ==== */

static void test_rope_tables(void) {
    struct ty_rope_config cfg = {.n_dims = 64, .freq_base = 1e6f, .scaling = TY_ROPE_SCALING_NONE};
    struct ty_rope plain, lin, yarn;
    CHECK_OK(ty__rope_init(&cfg, &plain));
    CHECK(plain.attn_factor == 1.0f && plain.n_dims == 64);
    bool ok = true;
    for (int i = 0; i < 32; i++)
        ok &= fabs(plain.inv_freq[i] - pow(1e6, -2.0 * i / 64)) <= 1e-6 * pow(1e6, -2.0 * i / 64);
    CHECK(ok);

    cfg.scaling = TY_ROPE_SCALING_LINEAR;
    cfg.factor = 4.0f;
    CHECK_OK(ty__rope_init(&cfg, &lin));
    ok = true;
    for (int i = 0; i < 32; i++) ok &= lin.inv_freq[i] == plain.inv_freq[i] / 4.0f;
    CHECK(ok && lin.attn_factor == 1.0f);

    /* YaRN, written out from the paper's definitions: dimensions rotating more than beta_fast times over the
     * original context keep their frequency, those rotating fewer than beta_slow times are divided by the factor,
     * and a linear ramp (over whole dimensions) joins them. */
    cfg.scaling = TY_ROPE_SCALING_YARN;
    cfg.factor = 4.0f;
    cfg.orig_ctx = 4096;
    CHECK_OK(ty__rope_init(&cfg, &yarn));
    double lo = floor(64 * log(4096 / (32 * 2 * M_PI)) / (2 * log(1e6)));
    double hi = ceil(64 * log(4096 / (1 * 2 * M_PI)) / (2 * log(1e6)));
    if (lo < 0) lo = 0;
    if (hi > 63) hi = 63;
    ok = true;
    int n_kept = 0, n_scaled = 0;
    for (int i = 0; i < 32; i++) {
        double base_f = pow(1e6, -2.0 * i / 64);
        double ramp = fmin(1.0, fmax(0.0, (i - lo) / (hi - lo)));
        double want = base_f / 4.0 * ramp + base_f * (1.0 - ramp);
        ok &= fabs(yarn.inv_freq[i] - want) <= 1e-6 * want;
        n_kept += ramp == 0.0;
        n_scaled += ramp == 1.0;
    }
    CHECK(ok);
    CHECK(n_kept > 0 && n_scaled > 0); /* the test covers both ends of the ramp */
    CHECK_NEAR(yarn.attn_factor, 0.1 * log(4.0) + 1.0, 1e-6);

    cfg.attn_factor = 0.5f;
    CHECK_OK(ty__rope_init(&cfg, &yarn));
    CHECK(yarn.attn_factor == 0.5f);

    cfg.n_dims = 7;
    CHECK_STATUS(ty__rope_init(&cfg, &yarn), TY_ERR_INVALID_ARG);
    cfg.n_dims = 64;
    cfg.orig_ctx = 0;
    CHECK_STATUS(ty__rope_init(&cfg, &yarn), TY_ERR_INVALID_ARG);
}

static void test_rope_op(void) {
    const int64_t hd = 32, nh = 3, n = 4;
    struct ty_rope_config cfg = {
        .n_dims = 24, .freq_base = 10000.0f, .scaling = TY_ROPE_SCALING_YARN, .factor = 2.0f, .orig_ctx = 64};
    struct ty_rope rope;
    CHECK_OK(ty__rope_init(&cfg, &rope));
    float x[32 * 3 * 4];
    fill(x, hd * nh * n, 2.0);
    int32_t pos[4] = {0, 7, 300, 12345};
    struct owned xo = make(TY_TYPE_F32, hd, nh, n, x), po = make(TY_TYPE_I32, n, 1, 1, pos);
    struct owned yo = make(TY_TYPE_F32, hd, nh, n, NULL);
    CHECK_OK(ty__backend_rope(be, &yo.t, &xo.t, &po.t, &rope));
    double ref[32 * 3 * 4];
    int half = 12;
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < nh; h++) {
            const float *xr = x + (t * nh + h) * hd;
            double *yr = ref + (t * nh + h) * hd;
            for (int i = 0; i < half; i++) {
                double th = (double)(float)(rope.inv_freq[i] * (float)pos[t]);
                double c = cos(th) * rope.attn_factor, s = sin(th) * rope.attn_factor;
                yr[i] = xr[i] * c - xr[i + half] * s;
                yr[i + half] = xr[i + half] * c + xr[i] * s;
            }
            for (int64_t i = 24; i < hd; i++) yr[i] = xr[i];
        }
    float got[32 * 3 * 4];
    CHECK_OK(ty__backend_tensor_get(be, &yo.t, got, 0, sizeof got));
    CHECK(max_abs(ref, got, hd * nh * n) < 1e-5);
    /* in place gives the same */
    CHECK_OK(ty__backend_rope(be, &xo.t, &xo.t, &po.t, &rope));
    float got2[32 * 3 * 4];
    CHECK_OK(ty__backend_tensor_get(be, &xo.t, got2, 0, sizeof got2));
    CHECK(memcmp(got, got2, sizeof got) == 0);
    drop(&xo);
    drop(&po);
    drop(&yo);
}

/* ==== Attention ==== */

struct attn_case {
    int64_t dk, dv, nh, nkv, n, pos0, n_ctx;
};

static void check_attention(const struct attn_case *c, enum ty_type kv_type, double q_scale) {
    const int64_t dk = c->dk, dv = c->dv, nh = c->nh, nkv = c->nkv, n = c->n, pos0 = c->pos0, n_ctx = c->n_ctx;
    float *q = ty__malloc(sizeof(float) * dk * nh * n), *k = ty__malloc(sizeof(float) * dk * nkv * n_ctx);
    float *v = ty__malloc(sizeof(float) * dv * nkv * n_ctx);
    fill(q, dk * nh * n, q_scale);
    fill(k, dk * nkv * n_ctx, 1.0);
    fill(v, dv * nkv * n_ctx, 1.0);
    struct owned qo = make(TY_TYPE_F32, dk, nh, n, q);
    struct owned kf = make(TY_TYPE_F32, dk, nkv, n_ctx, k), vf = make(TY_TYPE_F32, dv, nkv, n_ctx, v);
    struct owned kc = make(kv_type, dk, nkv, n_ctx, NULL), vc = make(kv_type, dv, nkv, n_ctx, NULL);
    CHECK_OK(ty__backend_copy(be, &kc.t, &kf.t));
    CHECK_OK(ty__backend_copy(be, &vc.t, &vf.t));
    /* the values the op will see */
    if (kv_type == TY_TYPE_F16) {
        for (int64_t i = 0; i < dk * nkv * n_ctx; i++) k[i] = ty__f16_to_f32(ty__f32_to_f16(k[i]));
        for (int64_t i = 0; i < dv * nkv * n_ctx; i++) v[i] = ty__f16_to_f32(ty__f32_to_f16(v[i]));
    }
    struct owned out = make(TY_TYPE_F32, dv, nh, n, NULL);
    struct ty_attn attn = {(float)(1.0 / sqrt((double)dk)), (int32_t)pos0};
    /* a cache view holding exactly the visible positions */
    struct ty_tensor kvis = ty__tensor_slice(&kc.t, 2, 0, pos0 + n), vvis = ty__tensor_slice(&vc.t, 2, 0, pos0 + n);
    CHECK_OK(ty__backend_attention(be, &out.t, &qo.t, &kvis, &vvis, &attn));
    double *ref = ty__malloc(sizeof(double) * dv * nh * n);
    ty_test_attention_ref(q, k, v, dk, dv, nh, nkv, n, pos0, attn.scale, ref);
    float *got = ty__malloc(sizeof(float) * dv * nh * n);
    CHECK_OK(ty__backend_tensor_get(be, &out.t, got, 0, sizeof(float) * dv * nh * n));
    double err = max_abs(ref, got, dv * nh * n);
    CHECK_MSG(err < 2e-5, "%s cache, q scale %g, %lld keys: max abs error %g", ty_type_name(kv_type), q_scale,
              (long long)(pos0 + n), err);
    ty_free(got);
    ty_free(ref);
    ty_free(q);
    ty_free(k);
    ty_free(v);
    drop(&qo);
    drop(&kf);
    drop(&vf);
    drop(&kc);
    drop(&vc);
    drop(&out);
}

static void test_attention(void) {
    const struct attn_case small = {16, 12, 4, 2, 3, 4, 9};    /* dk != dv, 2 query heads per KV head */
    const struct attn_case big = {64, 64, 8, 2, 16, 100, 130}; /* enough work to be split across threads */
    check_attention(&small, TY_TYPE_F32, 1.0);
    check_attention(&small, TY_TYPE_F16, 1.0);
    check_attention(&small, TY_TYPE_F32, 400.0); /* scores in the hundreds: exp() without the max shift overflows */
    check_attention(&small, TY_TYPE_F16, 400.0);
    check_attention(&big, TY_TYPE_F32, 1.0);
    check_attention(&big, TY_TYPE_F16, 3.0);
}

void ty_tests(void) {
    CHECK_OK(ty__backend_init("cpu-ref", 3, &be));
    if (!be) return;
    TY_RUN(test_views);
    TY_RUN(test_registry);
    TY_RUN(test_wrap_fallback);
    TY_RUN(test_matmul_all_types);
    TY_RUN(test_rms_norm);
    TY_RUN(test_elementwise);
    TY_RUN(test_copy);
    TY_RUN(test_rope_tables);
    TY_RUN(test_rope_op);
    TY_RUN(test_attention);
    ty__backend_free(be);
    CHECK(ty_mem_allocated() == 0);
}
