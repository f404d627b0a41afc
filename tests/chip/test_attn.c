/*
 * test_attn.c - the fast CPU backend's flash attention (src/chip/cpu/cpu-attn.c) called directly, on the shapes its
 * register-tiled kernels split differently: head dimensions that are not multiples of the 64-wide value step or of
 * the 16-wide vector (80, 40, 24, 12), 256-wide heads, GQA groups of 1 to 8 heads (so a block of (query, head) pairs
 * spans several queries with different key counts, or part of one query), prompts that start mid-tile and cross
 * query blocks. For each, over f16 and f32 caches:
 *  - accuracy against the double-precision formula (tests/chip/attention-ref.h), max abs error 2e-5 (1e-4 where
 *    the scores are in the hundreds: an f32 score of 300 is already 1.5e-5 off, and exp passes that on);
 *  - batch invariance, bit for bit: the same output with 1, 2 and 3 threads, for each query decoded alone at its own
 *    position, and for the prompt split into two chunks anywhere;
 *  - the same bits over a head-major cache (each KV head's positions adjacent, as the engine lays it out);
 *  - causality: a key past a query's position whose K gives a score far above the others and whose V is infinite (the
 *    last key of the batch) leaves every earlier query's bits unchanged. (Not NaN: the exp converts its argument to
 *    an integer, which UBSan rightly reports for NaN.)
 */
#include "harness.h"
#include "attention-ref.h"
#include "chip/cpu/cpu-impl.h"

#include <math.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* A tensor over its own host memory (no backend: the kernel only reads host rows). */
struct host_tensor {
    struct ty_buffer buf;
    struct ty_tensor t;
};
static void host_make(struct host_tensor *h, enum ty_type type, int64_t ne0, int64_t ne1, int64_t ne2) {
    memset(h, 0, sizeof(*h));
    ty__tensor_init(&h->t, NULL, 0, type, ne0, ne1, ne2, 1);
    h->buf.size = ty__tensor_size(&h->t);
    h->buf.data = ty__calloc(1, h->buf.size);
    TY_ASSERT(h->buf.data);
    h->buf.host = true;
    h->t.buf = &h->buf;
}
static void host_free(struct host_tensor *h) {
    ty_free(h->buf.data);
}
static float *f32(const struct host_tensor *h) {
    return h->buf.data;
}

static struct ty_threadpool *pools[3]; /* 1, 2 and 3 threads */
static struct ty_cpu_scratch scratch;

/* out = attention of queries [t0, t0 + n) of q (at positions pos0 + t0 ..) over keys 0 .. pos0 + t0 + n - 1. */
static void attend(int threads, const struct host_tensor *q, const struct host_tensor *k, const struct host_tensor *v,
                   int64_t pos0, int64_t t0, int64_t n, float scale, float *out) {
    struct ty_tensor qs = ty__tensor_slice(&q->t, 2, t0, n);
    struct ty_tensor ks = ty__tensor_slice(&k->t, 2, 0, pos0 + t0 + n),
                     vs = ty__tensor_slice(&v->t, 2, 0, pos0 + t0 + n);
    struct host_tensor o;
    host_make(&o, TY_TYPE_F32, v->t.ne[0], q->t.ne[1], n);
    struct ty_attn at = {scale, (int32_t)(pos0 + t0)};
    CHECK_OK(ty__cpu_attention(pools[threads - 1], &scratch, &o.t, &qs, &ks, &vs, &at));
    memcpy(out, f32(&o), o.buf.size);
    host_free(&o);
}

struct shape {
    int64_t dk, dv, nh, nkv, n, pos0;
    double q_scale, tol; /* tol: max abs error against the formula */
};

static void check_shape(const struct shape *s, enum ty_type kv_type) {
    const int64_t dk = s->dk, dv = s->dv, nh = s->nh, nkv = s->nkv, n = s->n, pos0 = s->pos0, ctx = pos0 + n;
    const float scale = (float)(1.0 / sqrt((double)dk));
    struct host_tensor q, k, v;
    host_make(&q, TY_TYPE_F32, dk, nh, n);
    host_make(&k, kv_type, dk, nkv, ctx), host_make(&v, kv_type, dv, nkv, ctx);
    float *kf = ty__malloc(sizeof(float) * (size_t)(dk * nkv * ctx)),
          *vf = ty__malloc(sizeof(float) * (size_t)(dv * nkv * ctx));
    for (int64_t i = 0; i < dk * nh * n; i++) f32(&q)[i] = (float)(ty_test_urand(&rng_state) * s->q_scale);
    for (int64_t i = 0; i < dk * nkv * ctx; i++) kf[i] = (float)ty_test_urand(&rng_state);
    for (int64_t i = 0; i < dv * nkv * ctx; i++) vf[i] = (float)ty_test_urand(&rng_state);
    for (int pass = 0; pass < 2; pass++) { /* store the cache; then read back the values the kernel sees */
        float *src[2] = {kf, vf};
        struct host_tensor *dst[2] = {&k, &v};
        for (int w = 0; w < 2; w++) {
            int64_t count = ty__tensor_nelements(&dst[w]->t);
            for (int64_t i = 0; i < count; i++) {
                if (kv_type == TY_TYPE_F32 && pass == 0) f32(dst[w])[i] = src[w][i];
                if (kv_type == TY_TYPE_F16 && pass == 0) ((ty_f16 *)dst[w]->buf.data)[i] = ty__f32_to_f16(src[w][i]);
                if (kv_type == TY_TYPE_F16 && pass == 1) src[w][i] = ty__f16_to_f32(((ty_f16 *)dst[w]->buf.data)[i]);
            }
        }
    }
    const size_t row = (size_t)(dv * nh), bytes = sizeof(float) * row * (size_t)n;
    float *out = ty__malloc(bytes), *other = ty__malloc(bytes);
    double *want = ty__malloc(sizeof(double) * row * (size_t)n);
    attend(1, &q, &k, &v, pos0, 0, n, scale, out);

    ty_test_attention_ref(f32(&q), kf, vf, dk, dv, nh, nkv, n, pos0, scale, want);
    double err = 0;
    for (size_t i = 0; i < row * (size_t)n; i++) err = fmax(err, fabs(want[i] - (double)out[i]));
    CHECK_MSG(err <= s->tol, "attention %s dk %lld dv %lld heads %lld/%lld, %lld queries at %lld: max abs error %g",
              ty_type_name(kv_type), (long long)dk, (long long)dv, (long long)nh, (long long)nkv, (long long)n,
              (long long)pos0, err);

    for (int th = 2; th <= 3; th++) {
        attend(th, &q, &k, &v, pos0, 0, n, scale, other);
        CHECK_MSG(!memcmp(other, out, bytes), "attention %s dk %lld dv %lld heads %lld/%lld: %d threads differ",
                  ty_type_name(kv_type), (long long)dk, (long long)dv, (long long)nh, (long long)nkv, th);
    }
    /* the engine's cache is head-major (ty__kv_cache_head_major): the same keys and values laid out so give the
     * same bits */
    struct host_tensor kh, vh;
    host_make(&kh, kv_type, dk, nkv, ctx), host_make(&vh, kv_type, dv, nkv, ctx);
    ty__kv_cache_head_major(&kh.t), ty__kv_cache_head_major(&vh.t);
    const size_t esize = kv_type == TY_TYPE_F16 ? sizeof(ty_f16) : sizeof(float);
    for (int64_t g = 0; g < nkv; g++)
        for (int64_t p = 0; p < ctx; p++) {
            memcpy(ty__tensor_row(&kh.t, g, p, 0), ty__tensor_row(&k.t, g, p, 0), (size_t)dk * esize);
            memcpy(ty__tensor_row(&vh.t, g, p, 0), ty__tensor_row(&v.t, g, p, 0), (size_t)dv * esize);
        }
    for (int th = 1; th <= 2; th++) {
        attend(th, &q, &kh, &vh, pos0, 0, n, scale, other);
        CHECK_MSG(!memcmp(other, out, bytes),
                  "attention %s dk %lld dv %lld heads %lld/%lld: a head-major cache differs", ty_type_name(kv_type),
                  (long long)dk, (long long)dv, (long long)nh, (long long)nkv);
    }
    attend(1, &q, &kh, &vh, pos0, n - 1, 1, scale, other); /* the last query decoded alone */
    CHECK_MSG(!memcmp(other, out + (size_t)(n - 1) * row, sizeof(float) * row),
              "attention %s dk %lld dv %lld heads %lld/%lld: a decode step over a head-major cache differs",
              ty_type_name(kv_type), (long long)dk, (long long)dv, (long long)nh, (long long)nkv);
    host_free(&kh), host_free(&vh);
    bool alone = true, chunks = true;
    for (int64_t t = 0; t < n; t++) {
        attend(1 + (int)(t % 3), &q, &k, &v, pos0, t, 1, scale, other);
        if (memcmp(other, out + (size_t)t * row, sizeof(float) * row)) alone = false;
    }
    for (int64_t split = 1; split < n; split += n / 3 + 1) {
        attend(2, &q, &k, &v, pos0, 0, split, scale, other);
        attend(3, &q, &k, &v, pos0, split, n - split, scale, other + (size_t)split * row);
        if (memcmp(other, out, bytes)) chunks = false;
    }
    CHECK_MSG(alone,
              "attention %s dk %lld dv %lld heads %lld/%lld, %lld queries at %lld: a query decoded alone differs",
              ty_type_name(kv_type), (long long)dk, (long long)dv, (long long)nh, (long long)nkv, (long long)n,
              (long long)pos0);
    CHECK_MSG(chunks, "attention %s dk %lld dv %lld heads %lld/%lld: the prompt in two chunks differs",
              ty_type_name(kv_type), (long long)dk, (long long)dv, (long long)nh, (long long)nkv);

    /* the batch's last key, in the tile of the queries before it but past their ends: huge K, infinite V */
    if (n > 1) {
        const int64_t last = ctx - 1;
        for (int64_t g = 0; g < nkv; g++) {
            void *kr = ty__tensor_row(&k.t, g, last, 0), *vr = ty__tensor_row(&v.t, g, last, 0);
            for (int64_t e = 0; e < dk; e++)
                if (kv_type == TY_TYPE_F16)
                    ((ty_f16 *)kr)[e] = ty__f32_to_f16(6e4f);
                else
                    ((float *)kr)[e] = 6e4f;
            for (int64_t e = 0; e < dv; e++)
                if (kv_type == TY_TYPE_F16)
                    ((ty_f16 *)vr)[e] = ty__f32_to_f16(e % 2 ? INFINITY : -INFINITY);
                else
                    ((float *)vr)[e] = e % 2 ? INFINITY : -INFINITY;
        }
        for (int th = 1; th <= 3; th += 2) {
            attend(th, &q, &k, &v, pos0, 0, n, scale, other);
            CHECK_MSG(!memcmp(other, out, sizeof(float) * row * (size_t)(n - 1)),
                      "attention %s dk %lld dv %lld heads %lld/%lld: a key past a query's end changed its output",
                      ty_type_name(kv_type), (long long)dk, (long long)dv, (long long)nh, (long long)nkv);
        }
    }
    ty_free(out), ty_free(other), ty_free(want), ty_free(kf), ty_free(vf);
    host_free(&q), host_free(&k), host_free(&v);
}

static void test_shapes(void) {
    static const struct shape shapes[] = {
        {64, 64, 14, 2, 40, 100, 3.0, 2e-5},  /* Qwen2.5-0.5B: 7 heads per KV head, blocks straddle queries */
        {64, 64, 3, 3, 50, 0, 1.0, 2e-5},     /* no GQA: a block of pairs is four queries with four key counts */
        {128, 128, 16, 8, 20, 61, 1.0, 2e-5}, /* 2 heads per KV head, two 64-wide value steps */
        {256, 256, 4, 1, 9, 60, 1.0, 2e-5},   /* Qwen3-Next's 256-wide heads, 4 heads on one KV head */
        {80, 40, 6, 2, 35, 7, 2.0, 2e-5},     /* 64 + 16 key dimensions; 16 + 16 + 8 value dimensions */
        {24, 12, 5, 5, 20, 3, 1.0, 2e-5},     /* value dimensions all in the element-by-element tail */
        {32, 48, 16, 2, 9, 130, 1.0, 2e-5},   /* 8 heads per KV head: two whole blocks per query */
        {16, 16, 5, 1, 70, 0, 300.0, 1e-4},   /* scores in the hundreds: the running maximum jumps, old sums vanish */
        {64, 64, 14, 2, 1, 200, 1.0, 2e-5},   /* decode over a long context */
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        check_shape(&shapes[i], TY_TYPE_F16);
        check_shape(&shapes[i], TY_TYPE_F32);
    }
}

void ty_tests(void) {
    ty__cpu_ref_setup();
    for (int i = 0; i < 3; i++) CHECK_OK(ty__threadpool_init(i + 1, &pools[i]));
    TY_RUN(test_shapes);
    for (int i = 0; i < 3; i++) ty__threadpool_free(pools[i]);
    ty__cpu_scratch_free(&scratch);
}
