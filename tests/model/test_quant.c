/*
 * test_quant.c - weight types (src/model/quant*.c) and the `tongyun quantize` command.
 *
 * What is checked against what:
 *  - Dequantisation (to_float) of F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K is compared bit for bit
 *    (memcmp of the float bits) with the gguf Python package's numpy dequantiser, an independent implementation of
 *    the GGUF block formats, on random valid blocks (tests/data/quant/blocks-*.bin -> deq-*.f32, made by
 *    tests/fixtures/make_quant_fixtures.py). Also from an unaligned source buffer.
 *  - F16 and BF16 from_float must reproduce those bit patterns exactly (round to nearest even is exact on them).
 *  - Quantisation (from_float) has no reference bytes: it is our own search. Its quality is measured as RMSE relative
 *    to the data's RMS on Gaussian and heavy-tailed (Student-t) rows, and must stay below fixed bounds; for the types
 *    gguf-py can quantise (its max-magnitude quantisers, errors in reference-rmse.txt) ours must do at least as well.
 *    Every quantised block is also checked for validity (finite scales, K scales in range).
 *  - Edge inputs: zero, constant, all-positive, huge and non-finite blocks.
 *  - Sizes: row_size / tensor_nbytes reject rows that are not a multiple of the block size and report overflow as
 *    TY_ERR_FORMAT instead of wrapping; the type-name table round-trips.
 *  - The command: a small multi-tensor GGUF is written with the GGUF writer, `$TONGYUN quantize` is run on it for
 *    several targets (q8_0, q4_k_m with K-block fallback, f16), and the output is reopened to check metadata, the
 *    per-tensor type rules and that the values are close to the original.
 */
#include "harness.h"
#include "model/gguf.h"
#include "model/quant-impl.h"

#include <float.h>
#include <stdlib.h>

/* ==== Helpers ==== */

static void *read_fixture(const char *name, size_t *size) {
    char *data = NULL;
    size_t n = 0;
    char rel[256];
    snprintf(rel, sizeof rel, "tests/data/quant/%s", name);
    enum ty_status st = ty__file_read(ty_test_src(rel), 1 << 20, &data, &n);
    CHECK_MSG(st == TY_OK, "%s: %s", name, ty_last_error());
    *size = n;
    return data;
}

static double rel_rmse(const float *x, const float *y, int64_t n) {
    double se = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) {
        se += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        ss += (double)x[i] * x[i];
    }
    return ss > 0 ? sqrt(se / ss) : sqrt(se / (double)n);
}

/* Quantises n floats to `type` and back; returns the relative RMSE, or a huge value if anything came back NaN. */
static double round_trip(enum ty_type type, const float *x, int64_t n, float *y) {
    const struct ty_type_traits *tt = ty__type_traits(type);
    size_t nbytes;
    CHECK_OK(ty__row_size(type, n, &nbytes));
    void *q = ty__malloc(nbytes);
    tt->from_float(x, q, n);
    tt->to_float(q, y, n);
    ty_free(q);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(y[i])) return INFINITY;
    return rel_rmse(x, y, n);
}

static const enum ty_type quantized_types[] = {TY_TYPE_Q8_0, TY_TYPE_Q4_0, TY_TYPE_Q4_1, TY_TYPE_Q5_0, TY_TYPE_Q5_1,
                                               TY_TYPE_Q4_K, TY_TYPE_Q5_K, TY_TYPE_Q6_K, TY_TYPE_Q8_K};
#define N_QUANTIZED (int)(sizeof quantized_types / sizeof quantized_types[0])

/* ==== Type table and sizes ==== */

static void test_type_names(void) {
    CHECK(strcmp(ty_type_name(TY_TYPE_Q4_K), "Q4_K") == 0);
    CHECK(strcmp(ty_type_name(TY_TYPE_BF16), "BF16") == 0);
    CHECK(strcmp(ty_type_name(TY_TYPE_Q2_K), "Q2_K") == 0); /* known by name, not supported */
    CHECK(strcmp(ty_type_name((enum ty_type)4), "unknown") == 0);
    CHECK(strcmp(ty_type_name((enum ty_type) - 1), "unknown") == 0);
    CHECK(strcmp(ty_type_name(TY_TYPE_COUNT), "unknown") == 0);

    enum ty_type t = TY_TYPE_COUNT;
    CHECK(ty__type_from_name("q4_k", &t) && t == TY_TYPE_Q4_K);
    CHECK(ty__type_from_name("Q8_0", &t) && t == TY_TYPE_Q8_0);
    CHECK(ty__type_from_name("bf16", &t) && t == TY_TYPE_BF16);
    CHECK(ty__type_from_name("F32", &t) && t == TY_TYPE_F32);
    CHECK(!ty__type_from_name("q4_k_m", &t)); /* a quantize mix, not a type */
    CHECK(!ty__type_from_name("q4", &t));
    CHECK(!ty__type_from_name("", &t));
    CHECK(!ty__type_from_name("q2_k", &t)); /* not supported */
    CHECK(!ty__type_from_name("q8_k", &t)); /* activations only */
    CHECK(!ty__type_from_name(NULL, &t));

    /* Every supported type has traits, a name that round-trips, and both conversions. */
    const char *list = ty__supported_types();
    int n_listed = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        n_listed++;
        CHECK_MSG(ty__type_from_name(tok, &t), "%s", tok);
        const struct ty_type_traits *tt = ty__type_traits(t);
        CHECK(tt && tt->to_float && tt->from_float && strcmp(tt->name, tok) == 0 && strcmp(ty_type_name(t), tok) == 0);
    }
    CHECK(n_listed == 11);
    CHECK(strstr(list, "Q8_K") == NULL); /* activation-only */
    CHECK(ty__type_traits(TY_TYPE_Q8_K) != NULL);
    CHECK(ty__type_traits(TY_TYPE_Q2_K) == NULL);
    CHECK(ty__type_traits(TY_TYPE_COUNT) == NULL);
    CHECK(ty__type_traits((enum ty_type) - 3) == NULL);
}

static void test_sizes(void) {
    size_t n = 0;
    CHECK_OK(ty__row_size(TY_TYPE_F32, 10, &n));
    CHECK(n == 40);
    CHECK_OK(ty__row_size(TY_TYPE_Q4_0, 64, &n));
    CHECK(n == 36);
    CHECK_OK(ty__row_size(TY_TYPE_Q6_K, 512, &n));
    CHECK(n == 420);
    CHECK_OK(ty__row_size(TY_TYPE_Q4_K, 0, &n));
    CHECK(n == 0);
    CHECK_STATUS(ty__row_size(TY_TYPE_Q4_K, 100, &n), TY_ERR_FORMAT);
    CHECK(strstr(ty_last_error(), "multiple") != NULL);
    CHECK_STATUS(ty__row_size(TY_TYPE_Q8_0, 33, &n), TY_ERR_FORMAT);
    CHECK_STATUS(ty__row_size(TY_TYPE_F16, -2, &n), TY_ERR_FORMAT);
    CHECK_STATUS(ty__row_size(TY_TYPE_Q2_K, 256, &n), TY_ERR_UNSUPPORTED);
    /* Rows whose byte count does not fit in size_t: INT64_MAX elements of 4 bytes. */
    CHECK_STATUS(ty__row_size(TY_TYPE_F32, INT64_MAX, &n), TY_ERR_FORMAT);
    CHECK_OK(ty__row_size(TY_TYPE_Q8_0, INT64_MAX / 32 * 32, &n)); /* large but representable: exact, not wrapped */
    CHECK(n == (size_t)(INT64_MAX / 32) * 34);

    int64_t ne[4] = {4096, 11008, 1, 1};
    CHECK_OK(ty__tensor_nbytes(TY_TYPE_Q4_K, 2, ne, "w", &n));
    CHECK(n == (size_t)4096 / 256 * 144 * 11008);
    int64_t huge[4] = {256, (int64_t)1 << 40, (int64_t)1 << 30, 1};
    n = 12345;
    CHECK_STATUS(ty__tensor_nbytes(TY_TYPE_Q4_K, 3, huge, "blk.0.ffn_up.weight", &n), TY_ERR_FORMAT);
    CHECK(strstr(ty_last_error(), "blk.0.ffn_up.weight") != NULL);
    CHECK(n == 12345); /* untouched on failure */
    int64_t bad_row[4] = {300, 2, 1, 1};
    CHECK_STATUS(ty__tensor_nbytes(TY_TYPE_Q4_K, 2, bad_row, "t", &n), TY_ERR_FORMAT);
    int64_t neg[4] = {32, -1, 1, 1};
    CHECK_STATUS(ty__tensor_nbytes(TY_TYPE_Q8_0, 2, neg, "t", &n), TY_ERR_FORMAT);
    CHECK_STATUS(ty__tensor_nbytes(TY_TYPE_F32, 0, ne, "t", &n), TY_ERR_FORMAT);
    CHECK_STATUS(ty__tensor_nbytes(TY_TYPE_F32, 5, ne, "t", &n), TY_ERR_FORMAT);
}

/* ==== Dequantisation against the reference ==== */

static void test_dequant_reference(void) {
    static const struct {
        enum ty_type type;
        const char *file;
    } cases[] = {{TY_TYPE_F16, "f16"},   {TY_TYPE_BF16, "bf16"}, {TY_TYPE_Q4_0, "q4_0"}, {TY_TYPE_Q4_1, "q4_1"},
                 {TY_TYPE_Q5_0, "q5_0"}, {TY_TYPE_Q5_1, "q5_1"}, {TY_TYPE_Q8_0, "q8_0"}, {TY_TYPE_Q4_K, "q4_k"},
                 {TY_TYPE_Q5_K, "q5_k"}, {TY_TYPE_Q6_K, "q6_k"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct ty_type_traits *tt = ty__type_traits(cases[c].type);
        char name[64];
        size_t n_blocks_bytes = 0, n_ref_bytes = 0;
        snprintf(name, sizeof name, "blocks-%s.bin", cases[c].file);
        uint8_t *blocks = read_fixture(name, &n_blocks_bytes);
        snprintf(name, sizeof name, "deq-%s.f32", cases[c].file);
        float *ref = read_fixture(name, &n_ref_bytes);
        if (!blocks || !ref) {
            ty_free(blocks);
            ty_free(ref);
            continue;
        }
        int64_t n = (int64_t)(n_ref_bytes / sizeof(float));
        size_t want_bytes = 0;
        CHECK_OK(ty__row_size(cases[c].type, n, &want_bytes));
        CHECK_MSG(want_bytes == n_blocks_bytes, "%s: %zu bytes of blocks for %lld values", tt->name, n_blocks_bytes,
                  (long long)n);
        if (want_bytes != n_blocks_bytes) continue;

        float *out = ty__malloc((size_t)n * sizeof(float));
        uint8_t *shifted = ty__malloc(n_blocks_bytes + 1); /* blocks at an odd address, as inside a mapped file */
        memcpy(shifted + 1, blocks, n_blocks_bytes);
        for (int pass = 0; pass < 2; pass++) {
            memset(out, 0xff, (size_t)n * sizeof(float));
            tt->to_float(pass == 0 ? (const void *)blocks : shifted + 1, out, n);
            int64_t bad = -1;
            for (int64_t i = 0; i < n && bad < 0; i++)
                if (memcmp(&out[i], &ref[i], sizeof(float)) != 0) bad = i;
            CHECK_MSG(bad < 0, "%s%s: element %lld: got %.9g, reference %.9g", tt->name, pass ? " (unaligned)" : "",
                      (long long)bad, bad >= 0 ? out[bad] : 0.0, bad >= 0 ? ref[bad] : 0.0);
        }

        /* Plain types: from_float inverts to_float exactly (f16/bf16 -> f32 is exact, and RNE maps it back). NaN
         * patterns are skipped: their payload need not survive. */
        if (!tt->is_quantized) {
            uint8_t *back = ty__malloc(n_blocks_bytes);
            tt->from_float(ref, back, n);
            int64_t bad = -1;
            for (int64_t i = 0; i < n && bad < 0; i++)
                if (!isnan(ref[i]) && memcmp(back + 2 * i, blocks + 2 * i, 2) != 0) bad = i;
            CHECK_MSG(bad < 0, "%s from_float: element %lld (%.9g) does not map back to its bits", tt->name,
                      (long long)bad, bad >= 0 ? ref[bad] : 0.0);
            ty_free(back);
        }
        ty_free(shifted);
        ty_free(out);
        ty_free(blocks);
        ty_free(ref);
    }
}

/* ==== Quantisation quality ==== */

/* The relative RMSE of gguf-py's quantiser for (type, set) from reference-rmse.txt, or -1. */
static double reference_rmse(const char *ref_text, const char *type, const char *set) {
    char key[64];
    snprintf(key, sizeof key, "%s %s ", type, set);
    const char *p = ref_text ? strstr(ref_text, key) : NULL;
    return p ? strtod(p + strlen(key), NULL) : -1;
}

static void test_quant_quality(void) {
    size_t nbytes = 0, ref_len = 0;
    float *w = read_fixture("weights.f32", &nbytes);
    char *ref_text = read_fixture("reference-rmse.txt", &ref_len);
    if (!w || nbytes != 8192 * sizeof(float)) {
        CHECK(!"weights.f32 missing or wrong size");
        ty_free(w);
        ty_free(ref_text);
        return;
    }
    /* Bounds: what the quantisers measure (printed below) with about 10% margin. A mis-packed field lands far above
     * them, and the max-magnitude quantisers of gguf-py above most (and above our figures, checked separately). */
    static const struct {
        enum ty_type type;
        double max_gauss, max_heavy;
    } bounds[] = {
        {TY_TYPE_Q8_0, 0.0060, 0.0086}, {TY_TYPE_Q4_0, 0.089, 0.128},   {TY_TYPE_Q4_1, 0.076, 0.096},
        {TY_TYPE_Q5_0, 0.044, 0.066},   {TY_TYPE_Q5_1, 0.037, 0.047},   {TY_TYPE_Q4_K, 0.077, 0.097},
        {TY_TYPE_Q5_K, 0.038, 0.048},   {TY_TYPE_Q6_K, 0.018, 0.0255},  {TY_TYPE_Q8_K, 0.0075, 0.0163},
        {TY_TYPE_F16, 3e-4, 3e-4},      {TY_TYPE_BF16, 2.5e-3, 2.5e-3}, {TY_TYPE_F32, 0, 0},
    };
    float *y = ty__malloc(4096 * sizeof(float));
    for (size_t c = 0; c < sizeof bounds / sizeof bounds[0]; c++) {
        const char *name = ty_type_name(bounds[c].type);
        double e_gauss = round_trip(bounds[c].type, w, 4096, y);
        double e_heavy = round_trip(bounds[c].type, w + 4096, 4096, y);
        printf("     %-5s relative RMSE: gaussian %.5f, heavy-tailed %.5f", name, e_gauss, e_heavy);
        CHECK_MSG(e_gauss <= bounds[c].max_gauss, "%s gaussian %.5f > %.5f", name, e_gauss, bounds[c].max_gauss);
        CHECK_MSG(e_heavy <= bounds[c].max_heavy, "%s heavy %.5f > %.5f", name, e_heavy, bounds[c].max_heavy);
        double r_gauss = reference_rmse(ref_text, name, "gaussian"), r_heavy = reference_rmse(ref_text, name, "heavy");
        if (r_gauss >= 0) {
            printf(" (gguf-py %.5f, %.5f)", r_gauss, r_heavy);
            /* Reference figures are printed with 6 decimals: allow that rounding. */
            CHECK_MSG(e_gauss <= r_gauss + 1e-6, "%s gaussian %.6f worse than gguf-py %.6f", name, e_gauss, r_gauss);
            CHECK_MSG(e_heavy <= r_heavy + 1e-6, "%s heavy %.6f worse than gguf-py %.6f", name, e_heavy, r_heavy);
        }
        printf("\n");
    }
    CHECK(reference_rmse(ref_text, "Q4_0", "gaussian") > 0); /* the reference file was found and parsed */
    ty_free(y);
    ty_free(w);
    ty_free(ref_text);
}

/* ==== Edge inputs ==== */

static void test_quant_edges(void) {
    enum { N = 512 };
    static float x[N], y[N];
    uint8_t *q = ty__malloc(N * 4);
    for (int t = 0; t < N_QUANTIZED; t++) {
        const struct ty_type_traits *tt = ty__type_traits(quantized_types[t]);
        /* Zero data round-trips to exact zeros. */
        memset(x, 0, sizeof x);
        tt->from_float(x, q, N);
        tt->to_float(q, y, N);
        bool ok = true;
        for (int i = 0; i < N; i++) ok &= y[i] == 0;
        CHECK_MSG(ok, "%s: zero block", tt->name);

        /* Constant, all-positive and all-negative blocks: the offset types must represent them closely, the
         * symmetric ones at least to their step size. */
        static const float consts[] = {0.75f, -3.0f};
        for (int c = 0; c < 2; c++) {
            for (int i = 0; i < N; i++) x[i] = consts[c];
            double e = round_trip(quantized_types[t], x, N, y);
            CHECK_MSG(e < 0.01, "%s: constant %g: relative RMSE %.5f", tt->name, consts[c], e);
        }
        for (int i = 0; i < N; i++) x[i] = 2.0f + (float)((i * 37) % 101) / 50.0f; /* 2 .. 4, never near 0 */
        double e = round_trip(quantized_types[t], x, N, y);
        CHECK_MSG(e < 0.05, "%s: positive block: relative RMSE %.5f", tt->name, e);

        /* Values beyond the f16 range of the scales must saturate, not turn into inf or NaN. */
        for (int i = 0; i < N; i++) x[i] = (i % 2 ? 1.0f : -1.0f) * 1e9f * (float)(i % 7 + 1);
        e = round_trip(quantized_types[t], x, N, y);
        CHECK_MSG(isfinite(e), "%s: huge values dequantise to non-finite", tt->name);

        /* Non-finite input must not crash or be undefined behaviour (the sanitizer build checks); the finite values
         * of the block should survive at least as finite numbers. */
        for (int i = 0; i < N; i++) x[i] = (float)(i % 13) - 6.0f;
        x[3] = NAN, x[100] = INFINITY, x[300] = -INFINITY;
        tt->from_float(x, q, N);
        tt->to_float(q, y, N);

        /* Re-quantising dequantised data does not drift: the second pass loses little more than the first. */
        for (int i = 0; i < N; i++) x[i] = sinf((float)i * 0.37f) * (1.0f + (float)(i % 5));
        double e1 = round_trip(quantized_types[t], x, N, y);
        static float z[N];
        double e2 = round_trip(quantized_types[t], y, N, z);
        CHECK_MSG(e2 <= e1 * 0.5 + 1e-7, "%s: re-quantisation error %.6f vs first pass %.6f", tt->name, e2, e1);
    }
    ty_free(q);

    /* Q8_K: bsums hold the sums of each 16 levels, levels stay in -127..127. */
    struct ty_block_q8_K blk;
    for (int i = 0; i < TY_QK_K; i++) x[i] = cosf((float)i) * 3.0f - (i == 7 ? 10.0f : 0.0f);
    ty__q8_K_from_float(x, &blk, TY_QK_K);
    bool ok = true;
    for (int g = 0; g < TY_QK_K / 16; g++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += blk.qs[16 * g + l], ok &= blk.qs[16 * g + l] >= -127;
        ok &= s == blk.bsums[g];
    }
    CHECK(ok);
}

/* Validity of the scale fields our quantiser writes: finite f16 scales, non-negative K super-block scales. */
static void test_quant_blocks_valid(void) {
    enum { N = 2048 };
    static float x[N];
    uint32_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (float)(1 + i % 9) * (i % 256 < 32 ? 0.001f : 1.0f);
    }
    struct ty_block_q4_K k4[N / TY_QK_K];
    ty__q4_K_from_float(x, k4, N);
    bool ok = true;
    for (int b = 0; b < N / TY_QK_K; b++) {
        float d = ty__f16_to_f32(k4[b].d), dmin = ty__f16_to_f32(k4[b].dmin);
        ok &= isfinite(d) && isfinite(dmin) && d >= 0 && dmin >= 0;
    }
    CHECK(ok);
    struct ty_block_q6_K k6[N / TY_QK_K];
    ty__q6_K_from_float(x, k6, N);
    ok = true;
    for (int b = 0; b < N / TY_QK_K; b++) ok &= isfinite(ty__f16_to_f32(k6[b].d));
    CHECK(ok);
}

/* ==== Scale searches ==== */

static void test_fit(void) {
    /* Exactly representable data is recovered exactly: x = 0.5 * q for q in -8..7. */
    float x[32];
    int8_t q[32];
    for (int i = 0; i < 32; i++) x[i] = 0.5f * (float)(i % 16 - 8);
    float d = ty__quant_fit_sym(32, x, NULL, -8, 7, q);
    bool ok = true;
    for (int i = 0; i < 32; i++) ok &= d * (float)q[i] == x[i];
    CHECK_MSG(ok, "symmetric fit of exact data: d = %g", d);

    /* Affine: x = 0.25 q - 1 for q in 0..15. */
    uint8_t u[32];
    float m;
    for (int i = 0; i < 32; i++) x[i] = 0.25f * (float)(i % 16) - 1.0f;
    ty__quant_fit_affine(32, x, NULL, 15, true, u, &d, &m);
    ok = true;
    for (int i = 0; i < 32; i++) ok &= fabsf(d * (float)u[i] + m - x[i]) < 1e-6f;
    CHECK_MSG(ok, "affine fit of exact data: d = %g, m = %g", d, m);

    /* The search beats the naive scale when one value sticks out: 31 values in [-1, 1] and one at 3. */
    for (int i = 0; i < 32; i++) x[i] = sinf((float)i * 1.3f);
    x[5] = 3.0f;
    d = ty__quant_fit_sym(32, x, NULL, -8, 7, q);
    double err_fit = 0, err_naive = 0;
    for (int i = 0; i < 32; i++) {
        err_fit += (x[i] - d * q[i]) * (x[i] - d * q[i]);
        float dn = 3.0f / -8.0f; /* the naive choice: extreme value on the wider end */
        int qn = ty__quant_round(x[i] / dn, -8, 7);
        err_naive += (x[i] - dn * qn) * (x[i] - dn * qn);
    }
    CHECK_MSG(err_fit < err_naive, "fit %g vs naive %g", err_fit, err_naive);

    /* With m_nonpositive, positive data keeps m <= 0. */
    for (int i = 0; i < 32; i++) x[i] = 5.0f + (float)(i % 4);
    ty__quant_fit_affine(32, x, NULL, 15, true, u, &d, &m);
    CHECK(m <= 0);
    ty__quant_fit_affine(32, x, NULL, 15, false, u, &d, &m);
    CHECK_NEAR(m, 5.0, 1e-4);
}

/* ==== The quantize command ==== */

/* A small model in the shape of a Qwen3 checkpoint with tied embeddings (no output.weight), with rows that fit the K
 * blocks (256), rows that only fit 32 (ffn_up: 96) and rows that fit neither (extra.weight: 40), in mixed input
 * types. Values are a deterministic pseudo-random function of (tensor, index). */
#define CMD_LAYERS 8
static const struct {
    const char *name; /* "%d" is the layer */
    enum ty_type type;
    int n_dims;
    int64_t ne[2];
} cmd_tensors[] = {
    {"blk.%d.attn_norm.weight", TY_TYPE_F32, 1, {256, 1}}, {"blk.%d.attn_q.weight", TY_TYPE_BF16, 2, {256, 128}},
    {"blk.%d.attn_v.weight", TY_TYPE_F16, 2, {256, 32}},   {"blk.%d.ffn_down.weight", TY_TYPE_F32, 2, {256, 128}},
    {"blk.%d.ffn_up.weight", TY_TYPE_F32, 2, {96, 32}},    {"blk.%d.attn_q.bias", TY_TYPE_F16, 1, {128, 1}},
};

static float cmd_value(uint32_t tensor, uint32_t i) {
    uint32_t h = tensor * 2654435761u ^ (i * 2246822519u + 0x9e3779b9u);
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    float u = (float)(h >> 8) / 16777216.0f; /* [0, 1) */
    return (u - 0.5f) * 0.2f * (1.0f + (float)(tensor % 3));
}

/* Writes the test model to `path`; `poison` puts a NaN into blk.5.attn_q.weight. Returns false on failure. */
static bool write_cmd_model(const char *path, bool poison) {
    struct ty_gguf_writer *w = NULL;
    bool ok = ty__gguf_writer_init(&w) == TY_OK;
    static const char *const toks[] = {"a", "b", "<|im_end|>"};
    ok = ok && ty__gguf_writer_set_str(w, "general.architecture", "qwen3") == TY_OK;
    ok = ok && ty__gguf_writer_set_str(w, "general.name", "quant-test") == TY_OK;
    ok = ok && ty__gguf_writer_set_u32(w, "general.file_type", 1) == TY_OK;
    ok = ok && ty__gguf_writer_set_u32(w, "qwen3.block_count", CMD_LAYERS) == TY_OK;
    ok = ok && ty__gguf_writer_set_f32(w, "qwen3.rope.freq_base", 1e6f) == TY_OK;
    ok = ok && ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3) == TY_OK;

    /* Declaration order is write order: token_embd, the layers, output_norm, extra. */
    char name[64];
    int64_t emb_ne[2] = {256, 64}, norm_ne[1] = {256}, extra_ne[2] = {40, 8};
    ok = ok && ty__gguf_writer_add_tensor(w, "token_embd.weight", TY_TYPE_F16, 2, emb_ne) == TY_OK;
    for (int l = 0; l < CMD_LAYERS; l++) {
        for (size_t k = 0; k < sizeof cmd_tensors / sizeof cmd_tensors[0]; k++) {
            snprintf(name, sizeof name, cmd_tensors[k].name, l);
            ok = ok && ty__gguf_writer_add_tensor(w, name, cmd_tensors[k].type, cmd_tensors[k].n_dims,
                                                  cmd_tensors[k].ne) == TY_OK;
        }
    }
    ok = ok && ty__gguf_writer_add_tensor(w, "output_norm.weight", TY_TYPE_F16, 1, norm_ne) == TY_OK;
    ok = ok && ty__gguf_writer_add_tensor(w, "extra.weight", TY_TYPE_F32, 2, extra_ne) == TY_OK;
    ok = ok && ty__gguf_writer_begin(w, path) == TY_OK;

    /* Tensor data: f32 values converted to the declared type. */
    uint32_t tensor_id = 0;
    for (int pass = 0; ok; pass++) {
        enum ty_type type;
        int64_t n;
        if (pass == 0) {
            type = TY_TYPE_F16, n = 256 * 64;
        } else if (pass <= CMD_LAYERS * 6) {
            int k = (pass - 1) % 6;
            type = cmd_tensors[k].type, n = cmd_tensors[k].ne[0] * cmd_tensors[k].ne[1];
        } else if (pass == CMD_LAYERS * 6 + 1) {
            type = TY_TYPE_F16, n = 256;
        } else if (pass == CMD_LAYERS * 6 + 2) {
            type = TY_TYPE_F32, n = 40 * 8;
        } else {
            break;
        }
        float *x = ty__malloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) x[i] = cmd_value(tensor_id, (uint32_t)i);
        if (poison && pass == 5 * 6 + 2) x[77] = NAN; /* blk.5.attn_q.weight */
        size_t nbytes = 0;
        ok = ty__row_size(type, n, &nbytes) == TY_OK;
        void *buf = ty__malloc(nbytes);
        ty__type_traits(type)->from_float(x, buf, n);
        ok = ok && ty__gguf_writer_write_tensor(w, buf, nbytes) == TY_OK;
        ty_free(buf);
        ty_free(x);
        tensor_id++;
    }
    ok = ok && ty__gguf_writer_finish(w) == TY_OK;
    CHECK_MSG(ok, "writing the test model: %s", ty_last_error());
    ty__gguf_writer_free(w);
    return ok;
}

/* The tensor's values as f32 (ty_free), or NULL. */
static float *tensor_f32(const struct ty_gguf_tensor *t, int64_t *n_out) {
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    float *y = ty__malloc((size_t)n * sizeof(float));
    const struct ty_type_traits *tt = ty__type_traits(t->type);
    if (!y || !tt) {
        ty_free(y);
        return NULL;
    }
    tt->to_float(t->data, y, n);
    *n_out = n;
    return y;
}

/* The type test expectations give each tensor of the test model for a target. */
static enum ty_type expected_type(const char *target, const char *name, int64_t ne0, int n_dims) {
    bool matrix = n_dims >= 2 && strstr(name, ".weight");
    if (!matrix) return TY_TYPE_F32;
    if (!strcmp(name, "extra.weight")) return TY_TYPE_F16; /* rows of 40 fit no block */
    if (!strcmp(target, "f16")) return TY_TYPE_F16;
    if (!strcmp(target, "q8_0")) return TY_TYPE_Q8_0;
    /* q4_k_m: tied token_embd is the output matrix; layers 0, 3, 6, 7 of 8 get more bits */
    if (!strcmp(name, "token_embd.weight")) return TY_TYPE_Q6_K;
    if (ne0 == 96) return TY_TYPE_Q5_0; /* ffn_up: Q4_K falls back */
    int layer = -1;
    sscanf(name, "blk.%d.", &layer);
    bool more = layer == 0 || layer == 3 || layer == 6 || layer == 7;
    if (strstr(name, "attn_v.weight") || strstr(name, "ffn_down.weight")) return more ? TY_TYPE_Q6_K : TY_TYPE_Q4_K;
    return TY_TYPE_Q4_K;
}

static double max_rel_rmse(enum ty_type type) {
    switch (type) {
    case TY_TYPE_F32:
        return 0;
    case TY_TYPE_F16:
        return 1e-3;
    case TY_TYPE_Q8_0:
        return 0.01;
    case TY_TYPE_Q6_K:
        return 0.03;
    case TY_TYPE_Q5_0:
        return 0.07;
    default:
        return 0.1;
    }
}

/* Runs the command on `in` and checks `out` against the input and the type rules. */
static void check_quantize_run(const char *in, const char *target, uint32_t want_ftype) {
    const char *out = ty_test_tmp(target);
    char cmd[2048], *log = NULL;
    remove(out);
    snprintf(cmd, sizeof cmd, "TY_PROGRESS=0 '%s' quantize '%s' '%s' %s --threads 3 2>&1", ty_test_cli(), in, out,
             target);
    int rc = ty_test_sh(cmd, &log);
    CHECK_MSG(rc == 0, "%s: exit %d: %s", target, rc, log ? log : "");
    if (strcmp(target, "f16") != 0) { /* the fallbacks are reported, naming tensor and type */
        CHECK_MSG(log && strstr(log, "extra.weight") && strstr(log, "F16"), "%s: log: %s", target, log);
    }
    if (!strcmp(target, "q4_k_m"))
        CHECK_MSG(log && strstr(log, "blk.2.ffn_up.weight") && strstr(log, "Q5_0"), "%s", log);
    ty_free(log);

    struct ty_gguf *gi = NULL, *go = NULL;
    CHECK_OK(ty__gguf_open(in, &gi));
    CHECK_OK(ty__gguf_open(out, &go));
    if (!gi || !go) {
        ty__gguf_close(gi);
        ty__gguf_close(go);
        return;
    }
    /* Metadata: copied, with the file type and quantisation version set. */
    int64_t v = -1;
    CHECK_OK(ty__gguf_get_int(go, "general.file_type", &v));
    CHECK_MSG(v == want_ftype, "%s: general.file_type %lld, want %u", target, (long long)v, want_ftype);
    CHECK_OK(ty__gguf_get_int(go, "general.quantization_version", &v));
    CHECK(v == 2);
    CHECK_OK(ty__gguf_get_int(go, "qwen3.block_count", &v));
    CHECK(v == CMD_LAYERS);
    char *s = NULL;
    CHECK_OK(ty__gguf_get_strdup(go, "general.name", &s));
    CHECK(s && !strcmp(s, "quant-test"));
    ty_free(s);
    struct ty_gguf_str tok = {0};
    CHECK_OK(ty__gguf_arr_str(go, "tokenizer.ggml.tokens", 2, &tok));
    CHECK(tok.len == 10 && !memcmp(tok.data, "<|im_end|>", 10));
    CHECK(ty__gguf_n_kv(go) == ty__gguf_n_kv(gi) + 1); /* + general.quantization_version */

    /* Tensors: same names, order and shapes; types by the rules; values close to the input. */
    CHECK(ty__gguf_n_tensors(go) == ty__gguf_n_tensors(gi));
    for (int64_t i = 0; i < ty__gguf_n_tensors(gi) && i < ty__gguf_n_tensors(go); i++) {
        const struct ty_gguf_tensor *a = ty__gguf_tensor(gi, i), *b = ty__gguf_tensor(go, i);
        CHECK_MSG(!strcmp(a->name, b->name), "tensor %lld: %s vs %s", (long long)i, a->name, b->name);
        CHECK(a->n_dims == b->n_dims && !memcmp(a->ne, b->ne, sizeof a->ne));
        enum ty_type want = expected_type(target, a->name, a->ne[0], a->n_dims);
        CHECK_MSG(b->type == want, "%s: %s is %s, want %s", target, b->name, ty_type_name(b->type), ty_type_name(want));
        int64_t na = 0, nb = 0;
        float *xa = tensor_f32(a, &na), *xb = tensor_f32(b, &nb);
        if (xa && xb && na == nb) {
            double e = rel_rmse(xa, xb, na);
            CHECK_MSG(e <= max_rel_rmse(b->type), "%s: %s (%s) relative RMSE %.5f", target, b->name,
                      ty_type_name(b->type), e);
        } else {
            CHECK_MSG(false, "%s: cannot read %s", target, a->name);
        }
        ty_free(xa);
        ty_free(xb);
    }
    ty__gguf_close(gi);
    ty__gguf_close(go);
}

static void test_quantize_command(void) {
    const char *in = ty_test_tmp("model-f32.gguf");
    if (!write_cmd_model(in, false)) return;
    check_quantize_run(in, "q4_k_m", 15);
    check_quantize_run(in, "q8_0", 7);
    check_quantize_run(in, "f16", 1);

    /* Re-quantising a quantised file works (from Q8_0 to Q4_K_M), with a note about compounding error. */
    char cmd[2048], *log = NULL;
    const char *q8 = ty_test_tmp("q8_0"), *requant = ty_test_tmp("requant.gguf");
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s' '%s' Q4_K_M 2>&1", ty_test_cli(), q8, requant);
    CHECK_MSG(ty_test_sh(cmd, &log) == 0, "%s", log ? log : "");
    CHECK(log && strstr(log, "Q8_0"));
    ty_free(log);

    /* Usage errors exit 2; a bad input exits 1 and leaves no output behind. */
    const char *missing = ty_test_tmp("never-written.gguf");
    remove(missing);
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s' '%s' q3_k 2>&1", ty_test_cli(), in, missing);
    log = NULL;
    CHECK(ty_test_sh(cmd, &log) == 2);
    CHECK(log && strstr(log, "q3_k") && strstr(log, "q4_k_m"));
    ty_free(log);
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s' 2>&1", ty_test_cli(), in);
    CHECK(ty_test_sh(cmd, NULL) == 2);
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s' '%s' q8_0 --threads 0 2>&1", ty_test_cli(), in, missing);
    CHECK(ty_test_sh(cmd, NULL) == 2);
    snprintf(cmd, sizeof cmd, "'%s' quantize '%s' '%s' q8_0 2>&1", ty_test_cli(), ty_test_tmp("no-such.gguf"), missing);
    CHECK(ty_test_sh(cmd, NULL) == 1);

    const char *poisoned = ty_test_tmp("poisoned.gguf");
    if (write_cmd_model(poisoned, true)) {
        snprintf(cmd, sizeof cmd, "'%s' quantize '%s' '%s' q4_0 2>&1", ty_test_cli(), poisoned, missing);
        log = NULL;
        CHECK(ty_test_sh(cmd, &log) == 1);
        CHECK_MSG(log && strstr(log, "blk.5.attn_q.weight") && strstr(log, "NaN"), "%s", log ? log : "");
        ty_free(log);
    }
    FILE *f = fopen(missing, "rb");
    CHECK_MSG(f == NULL, "a failed run left %s behind", missing);
    if (f) fclose(f);

    /* --help documents the types and the mixes. */
    snprintf(cmd, sizeof cmd, "'%s' quantize --help", ty_test_cli());
    log = NULL;
    CHECK(ty_test_sh(cmd, &log) == 0);
    CHECK(log && strstr(log, "q4_k_m") && strstr(log, "q6_k") && strstr(log, "--threads") && strstr(log, "Q5_0"));
    ty_free(log);
}

void ty_tests(void) {
    TY_RUN(test_type_names);
    TY_RUN(test_sizes);
    TY_RUN(test_dequant_reference);
    TY_RUN(test_fit);
    TY_RUN(test_quant_quality);
    TY_RUN(test_quant_edges);
    TY_RUN(test_quant_blocks_valid);
    TY_RUN(test_quantize_command);
}
