/*
 * test_paged_attn.c - the attention_paged op (backend.h, version 3) against the contiguous attention op: a batch of
 * sequences whose keys sit in scattered blocks of a pool must give, for every (token, head), exactly the bits that
 * `attention` gives over the same keys laid out contiguously, whatever else is in the batch. Checked for the
 * reference backend's own kernel, for the gather fallback a backend without the op gets (ty__attention_paged_gather),
 * and for the "cpu" backend through the wrapper; over F32 and F16 pools, with grouped KV heads, prefill chunks that
 * start mid-block, single decode tokens, and sequences that share their first blocks (a cached prefix).
 */
#include "harness.h"
#include "chip/backend.h"

#include <stdlib.h>

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static double urand(void) { /* uniform in [-1, 1) */
    return ty_test_urand(&rng_state);
}

struct owned {
    struct ty_buffer *buf;
    struct ty_tensor t;
};
static struct owned make(struct ty_backend *be, enum ty_type type, int64_t ne0, int64_t ne1, int64_t ne2) {
    struct owned o = {0};
    struct ty_tensor probe;
    ty__tensor_init(&probe, NULL, 0, type, ne0, ne1, ne2, 1);
    CHECK_OK(ty__backend_buffer_alloc(be, ty__tensor_size(&probe), &o.buf));
    ty__tensor_init(&o.t, o.buf, 0, type, ne0, ne1, ne2, 1);
    return o;
}

#define BLOCK   4
#define N_SEQS  4
#define DK      24
#define DV      16
#define N_HEAD  6
#define N_KV    2
#define N_POOL  40 /* blocks */
#define MAX_CTX 40

/* Sequence s: `n` new tokens at positions pos0.. over `ctx` = pos0 + n keys. */
struct seq_case {
    int32_t pos0, n;
};

enum mode { MODE_OP, MODE_GATHER, MODE_WRAPPER };

static void run_case(struct ty_backend *be, enum ty_type kv_type, enum mode mode) {
    const struct seq_case sc[N_SEQS] = {{0, 7}, {9, 1}, {13, 6}, {5, 1}}; /* prefill, decode, chunk mid-block, decode */
    int32_t n_tok = 0, cols[N_SEQS];
    for (int s = 0; s < N_SEQS; s++) cols[s] = n_tok, n_tok += sc[s].n;

    /* block tables: scattered, distinct ids; sequence 3 shares its first block with sequence 2 (a cached prefix) */
    int32_t tables[N_SEQS][MAX_CTX / BLOCK];
    int32_t next = N_POOL - 1;
    for (int s = 0; s < N_SEQS; s++)
        for (int b = 0; b < MAX_CTX / BLOCK; b++) tables[s][b] = (next = (next * 7 + 3) % N_POOL);
    tables[3][0] = tables[2][0];

    struct owned kp = make(be, kv_type, DK, N_KV, N_POOL * BLOCK), vp = make(be, kv_type, DV, N_KV, N_POOL * BLOCK);
    struct owned q = make(be, TY_TYPE_F32, DK, N_HEAD, n_tok), out = make(be, TY_TYPE_F32, DV, N_HEAD, n_tok);
    size_t esz = kv_type == TY_TYPE_F16 ? 2 : 4;
    /* pool contents: random, with the shared block written once */
    size_t kbytes = ty__tensor_size(&kp.t), vbytes = ty__tensor_size(&vp.t);
    float *kf = malloc(kbytes / esz * sizeof(float)), *vf = malloc(vbytes / esz * sizeof(float));
    for (size_t i = 0; i < kbytes / esz; i++) kf[i] = (float)(urand() * 3.0);
    for (size_t i = 0; i < vbytes / esz; i++) vf[i] = (float)urand();
    if (kv_type == TY_TYPE_F16) {
        ty_f16 *kh = malloc(kbytes), *vh = malloc(vbytes);
        for (size_t i = 0; i < kbytes / esz; i++) kh[i] = ty__f32_to_f16(kf[i]);
        for (size_t i = 0; i < vbytes / esz; i++) vh[i] = ty__f32_to_f16(vf[i]);
        CHECK_OK(ty__backend_tensor_set(be, &kp.t, kh, 0, kbytes));
        CHECK_OK(ty__backend_tensor_set(be, &vp.t, vh, 0, vbytes));
        free(kh);
        free(vh);
    } else {
        CHECK_OK(ty__backend_tensor_set(be, &kp.t, kf, 0, kbytes));
        CHECK_OK(ty__backend_tensor_set(be, &vp.t, vf, 0, vbytes));
    }
    float *qh = malloc((size_t)n_tok * N_HEAD * DK * sizeof(float));
    for (int64_t i = 0; i < (int64_t)n_tok * N_HEAD * DK; i++) qh[i] = (float)(urand() * 2.0);
    CHECK_OK(ty__backend_tensor_set(be, &q.t, qh, 0, ty__tensor_size(&q.t)));

    struct ty_paged_seq seqs[N_SEQS];
    for (int s = 0; s < N_SEQS; s++)
        seqs[s] = (struct ty_paged_seq){cols[s], sc[s].n, sc[s].pos0, MAX_CTX / BLOCK, tables[s]};
    struct owned gk = make(be, TY_TYPE_F32, DK * N_KV, MAX_CTX, 1), gv = make(be, TY_TYPE_F32, DV * N_KV, MAX_CTX, 1);
    struct owned gi = make(be, TY_TYPE_I32, MAX_CTX, 1, 1);
    int32_t host_ids[MAX_CTX];
    struct ty_paged_attn p = {0.3f, BLOCK, N_SEQS, seqs, &gk.t, &gv.t, &gi.t, host_ids};
    if (mode == MODE_OP) {
        CHECK(ty__backend_has_attention_paged(be));
        CHECK_OK(be->iface->attention_paged(be, &out.t, &q.t, &kp.t, &vp.t, &p));
    } else if (mode == MODE_GATHER) {
        CHECK_OK(ty__attention_paged_gather(be, &out.t, &q.t, &kp.t, &vp.t, &p));
    } else {
        CHECK_OK(ty__backend_attention_paged(be, &out.t, &q.t, &kp.t, &vp.t, &p));
    }
    float *got = malloc(ty__tensor_size(&out.t));
    CHECK_OK(ty__backend_tensor_get(be, &out.t, got, 0, ty__tensor_size(&out.t)));

    /* the reference: per sequence, its keys copied into a contiguous cache, then the contiguous op */
    int64_t bad = 0;
    for (int s = 0; s < N_SEQS; s++) {
        int32_t n_keys = sc[s].pos0 + sc[s].n;
        struct owned kc = make(be, kv_type, DK, N_KV, n_keys), vc = make(be, kv_type, DV, N_KV, n_keys);
        size_t krow = (size_t)DK * N_KV * esz, vrow = (size_t)DV * N_KV * esz;
        char *kall = malloc(kbytes), *vall = malloc(vbytes);
        CHECK_OK(ty__backend_tensor_get(be, &kp.t, kall, 0, kbytes));
        CHECK_OK(ty__backend_tensor_get(be, &vp.t, vall, 0, vbytes));
        for (int32_t j = 0; j < n_keys; j++) {
            size_t slot = (size_t)tables[s][j / BLOCK] * BLOCK + (size_t)(j % BLOCK);
            CHECK_OK(ty__backend_tensor_set(be, &kc.t, kall + slot * krow, (size_t)j * krow, krow));
            CHECK_OK(ty__backend_tensor_set(be, &vc.t, vall + slot * vrow, (size_t)j * vrow, vrow));
        }
        struct owned qs = make(be, TY_TYPE_F32, DK, N_HEAD, sc[s].n), os = make(be, TY_TYPE_F32, DV, N_HEAD, sc[s].n);
        CHECK_OK(ty__backend_tensor_set(be, &qs.t, qh + (size_t)cols[s] * N_HEAD * DK, 0, ty__tensor_size(&qs.t)));
        struct ty_attn attn = {0.3f, sc[s].pos0};
        CHECK_OK(ty__backend_attention(be, &os.t, &qs.t, &kc.t, &vc.t, &attn));
        float *want = malloc(ty__tensor_size(&os.t));
        CHECK_OK(ty__backend_tensor_get(be, &os.t, want, 0, ty__tensor_size(&os.t)));
        const float *g = got + (size_t)cols[s] * N_HEAD * DV;
        for (int64_t i = 0; i < (int64_t)sc[s].n * N_HEAD * DV; i++) bad += memcmp(&g[i], &want[i], sizeof(float)) != 0;
        free(want);
        free(kall);
        free(vall);
        ty__backend_buffer_free(kc.buf);
        ty__backend_buffer_free(vc.buf);
        ty__backend_buffer_free(qs.buf);
        ty__backend_buffer_free(os.buf);
    }
    CHECK_MSG(bad == 0, "%lld outputs differ from contiguous attention (mode %d, %s)", (long long)bad, (int)mode,
              ty_type_name(kv_type));
    free(got);
    free(qh);
    free(kf);
    free(vf);
    struct owned *all[] = {&kp, &vp, &q, &out, &gk, &gv, &gi};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ty__backend_buffer_free(all[i]->buf);
}

static void test_paged_op_matches_contiguous(void) {
    struct ty_backend *be;
    CHECK_OK(ty__backend_init("cpu-ref", 2, &be));
    run_case(be, TY_TYPE_F32, MODE_OP);
    run_case(be, TY_TYPE_F16, MODE_OP);
    ty__backend_free(be);
}

static void test_gather_fallback_matches_contiguous(void) {
    struct ty_backend *be;
    CHECK_OK(ty__backend_init("cpu-ref", 2, &be));
    run_case(be, TY_TYPE_F32, MODE_GATHER);
    run_case(be, TY_TYPE_F16, MODE_GATHER);
    ty__backend_free(be);
}

static void test_cpu_backend_wrapper(void) {
    struct ty_backend *be;
    CHECK_OK(ty__backend_init("cpu", 2, &be));
    run_case(be, TY_TYPE_F32, MODE_WRAPPER);
    run_case(be, TY_TYPE_F16, MODE_WRAPPER);
    ty__backend_free(be);
}

/* One thread or several: each (token, head) is computed whole by one thread, so the bits do not change. */
static void test_thread_count_invariant(void) {
    struct ty_backend *be1;
    CHECK_OK(ty__backend_init("cpu-ref", 1, &be1));
    run_case(be1, TY_TYPE_F16, MODE_OP);
    ty__backend_free(be1);
}

/* Without scratch a backend lacking the op cannot gather: a clear error, not a crash. */
static void test_gather_needs_scratch(void) {
    struct ty_backend *be;
    CHECK_OK(ty__backend_init("cpu-ref", 1, &be));
    struct owned kp = make(be, TY_TYPE_F16, DK, N_KV, BLOCK), vp = make(be, TY_TYPE_F16, DV, N_KV, BLOCK);
    struct owned q = make(be, TY_TYPE_F32, DK, N_HEAD, 1), out = make(be, TY_TYPE_F32, DV, N_HEAD, 1);
    int32_t table[1] = {0};
    struct ty_paged_seq s = {0, 1, 0, 1, table};
    struct ty_paged_attn p = {1.0f, BLOCK, 1, &s, NULL, NULL, NULL, NULL};
    CHECK_STATUS(ty__attention_paged_gather(be, &out.t, &q.t, &kp.t, &vp.t, &p), TY_ERR_UNSUPPORTED);
    struct owned *all[] = {&kp, &vp, &q, &out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ty__backend_buffer_free(all[i]->buf);
    ty__backend_free(be);
}

void ty_tests(void) {
    TY_RUN(test_paged_op_matches_contiguous);
    TY_RUN(test_gather_fallback_matches_contiguous);
    TY_RUN(test_cpu_backend_wrapper);
    TY_RUN(test_thread_count_invariant);
    TY_RUN(test_gather_needs_scratch);
}
