/*
 * test_mkmodel.c - synthetic models (src/model/mkmodel.c): the presets against the published parameter counts, the
 * generator's statistics and reproducibility, the per-tensor types of the mixes and the layer reduction of a preset
 * that does not fit, and one real file (Qwen2.5-0.5B shape, 2 layers, Q8_0, real tokenizer) checked key by key,
 * tensor by tensor, byte for byte against a second write with other thread and layer counts, and run through
 * ty_model_load + ty_context_eval: the logits of a 16-token prompt must be finite with a sane spread, which fails if
 * the weight scales are broken.
 */
#include "harness.h"

#include "../../src/model/mkmodel.c"

#include <stdlib.h>

/* ==== Presets ==== */

/* Published totals (the model cards' "Number of Parameters"), and the computed count from the preset's shapes. */
static void test_presets(void) {
    static const struct {
        const char *name;
        double params, active;
    } cards[] = {
        {"qwen2.5-0.5b", 0.49e9, 0},
        {"qwen2.5-1.5b", 1.54e9, 0},
        {"qwen2.5-7b", 7.61e9, 0},
        {"qwen3-0.6b", 0.6e9, 0},
        {"qwen3-1.7b", 1.7e9, 0},
        {"qwen3-4b", 4.0e9, 0},
        {"qwen3-8b", 8.2e9, 0},
        {"qwen3-30b-a3b", 30.5e9, 3.3e9},
        /* the hybrid models' cards give only the rounded "A3B" for active parameters (computed: 3.9B and 3.5B with the
         * embeddings); Qwen3.5's card total (35.95B) includes the vision tower and MTP layer, so its name's 35B */
        {"qwen3-next-80b-a3b", 80e9, 0},
        {"qwen3.5-35b-a3b", 35e9, 0},
    };
    int n;
    (void)ty__mkmodel_presets(&n);
    CHECK(n == (int)(sizeof cards / sizeof cards[0]));
    for (size_t i = 0; i < sizeof cards / sizeof cards[0]; i++) {
        const struct ty_mkmodel_preset *p = ty__mkmodel_find_preset(cards[i].name);
        CHECK_MSG(p != NULL, "preset %s", cards[i].name);
        if (!p) continue;
        uint64_t active, total = ty__mkmodel_n_params(p, p->n_layer, &active);
        CHECK_MSG(fabs((double)total / cards[i].params - 1) < 0.02, "%s: %.4g params, card says %.4g", p->name,
                  (double)total, cards[i].params);
        if (cards[i].active > 0)
            CHECK_MSG(fabs((double)active / cards[i].active - 1) < 0.03, "%s: %.4g active, card says %.4g", p->name,
                      (double)active, cards[i].active);
        CHECK(p->n_head % p->n_head_kv == 0 && p->head_dim % 2 == 0 && p->n_embd % 32 == 0);
        bool hybrid = !strcmp(p->arch, "qwen3next") || !strcmp(p->arch, "qwen35moe"); /* tested in test_next.c */
        CHECK(hybrid || !strcmp(p->arch, p->qkv_bias ? "qwen2" : p->n_expert ? "qwen3moe" : "qwen3"));
        CHECK(p->qk_norm == !p->qkv_bias);
    }
    CHECK(ty__mkmodel_n_params(ty__mkmodel_find_preset("qwen2.5-0.5b"), 24, NULL) == 494032768ull); /* exact */
    CHECK(ty__mkmodel_find_preset("Qwen3-8B") != NULL);
    CHECK(ty__mkmodel_find_preset("qwen3-9b") == NULL);
}

/* ==== Generator ==== */

static void test_generator(void) {
    enum { N = 1 << 20 };
    float *a = ty__malloc(N * sizeof(float)), *b = ty__malloc(N * sizeof(float));
    struct rng g;
    rng_seed(&g, 42, name_hash("x"), 3);
    fill_normal(&g, a, N, 0.5f, 2.0f);
    double s = 0, s2 = 0, s4 = 0;
    for (int i = 0; i < N; i++) s += a[i];
    double mean = s / N;
    for (int i = 0; i < N; i++) {
        double d = a[i] - mean;
        s2 += d * d;
        s4 += d * d * d * d;
    }
    double var = s2 / N, kurt = s4 / N / (var * var);
    CHECK_NEAR(mean, 0.5, 0.01);
    CHECK_NEAR(sqrt(var), 2.0, 0.01);
    CHECK_NEAR(kurt, 2.7, 0.05); /* Irwin-Hall n=4: 3 - 6/(5*4) = 2.7, close to a normal's 3 */
    /* Same (seed, tensor, row): same values; any one of them changed: different. */
    rng_seed(&g, 42, name_hash("x"), 3);
    fill_normal(&g, b, N, 0.5f, 2.0f);
    CHECK(!memcmp(a, b, N * sizeof(float)));
    uint64_t variants[3][3] = {{43, name_hash("x"), 3}, {42, name_hash("y"), 3}, {42, name_hash("x"), 4}};
    for (int v = 0; v < 3; v++) {
        rng_seed(&g, variants[v][0], variants[v][1], variants[v][2]);
        fill_normal(&g, b, 64, 0.5f, 2.0f);
        CHECK_MSG(memcmp(a, b, 64 * sizeof(float)) != 0, "variant %d", v);
    }
    ty_free(a);
    ty_free(b);
}

/* ==== Planning ==== */

static const struct mk_tensor *find(const struct plan *pl, const char *name) {
    for (int64_t i = 0; i < pl->list.n; i++)
        if (!strcmp(pl->list.t[i].name, name)) return &pl->list.t[i];
    return NULL;
}

static void test_plan(void) {
    struct ty_mkmodel_params mp = {.preset = ty__mkmodel_find_preset("qwen3-0.6b"), .type = "q4_k_m", .seed = 1};
    struct ty_mkmodel_info info;
    struct plan pl = {0};
    CHECK_OK(make_plan(&mp, &pl, &info));
    /* llama.cpp's Q4_K_M: the tied embedding is the output matrix (Q6_K); attn_v / ffn_down get Q6_K in the first
     * and last eighth and every third layer between (28 layers: 0-2, 5, 8, ..., 24-27); the rest Q4_K; norms F32. */
    const struct mk_tensor *t;
    CHECK((t = find(&pl, "token_embd.weight")) && t->type == TY_TYPE_Q6_K);
    CHECK(find(&pl, "output.weight") == NULL);
    CHECK((t = find(&pl, "blk.0.attn_v.weight")) && t->type == TY_TYPE_Q6_K);
    CHECK((t = find(&pl, "blk.3.attn_v.weight")) && t->type == TY_TYPE_Q4_K);
    CHECK((t = find(&pl, "blk.5.ffn_down.weight")) && t->type == TY_TYPE_Q6_K);
    CHECK((t = find(&pl, "blk.4.ffn_down.weight")) && t->type == TY_TYPE_Q4_K);
    CHECK((t = find(&pl, "blk.27.attn_q.weight")) && t->type == TY_TYPE_Q4_K);
    CHECK((t = find(&pl, "blk.0.attn_q_norm.weight")) && t->type == TY_TYPE_F32 && t->ne[0] == 128);
    CHECK(pl.list.n == 1 + 28 * 11 + 1);
    CHECK(info.n_layer == 28 && info.reduced[0] == 0 && info.n_fallback == 0);
    ty_free(pl.list.t);

    /* Qwen2.5-0.5B's 896-wide rows do not fit a 256 block: Q4_K falls back to Q5_0 there, as llama.cpp does. */
    mp = (struct ty_mkmodel_params){.preset = ty__mkmodel_find_preset("qwen2.5-0.5b"), .type = "q4_k", .n_layer = 1};
    pl = (struct plan){0};
    CHECK_OK(make_plan(&mp, &pl, &info));
    CHECK((t = find(&pl, "blk.0.attn_q.weight")) && t->type == TY_TYPE_Q5_0);
    CHECK((t = find(&pl, "blk.0.ffn_down.weight")) && t->type == TY_TYPE_Q4_K); /* 4864 = 19 x 256 */
    CHECK((t = find(&pl, "blk.0.attn_q.bias")) && t->type == TY_TYPE_F32);
    CHECK(info.n_fallback == 7); /* token_embd, q, k, v, attn_output, gate, up */
    CHECK(strstr(info.reduced, "1 of the released 24 layers") != NULL);
    ty_free(pl.list.t);

    /* Qwen3-30B-A3B at Q8_0 (about 30 GiB) does not fit 20 GiB: the layers are cut, and the name says so. */
    mp = (struct ty_mkmodel_params){
        .preset = ty__mkmodel_find_preset("qwen3-30b-a3b"), .type = "q8_0", .seed = 5, .max_bytes = (uint64_t)20 << 30};
    pl = (struct plan){0};
    CHECK_OK(make_plan(&mp, &pl, &info));
    CHECK(info.n_layer > 1 && info.n_layer < 48);
    CHECK(info.tensor_bytes <= mp.max_bytes);
    CHECK(strstr(info.name, "Qwen3-30B-A3B") && strstr(info.name, "of 48 layers") && strstr(info.name, "seed 5"));
    CHECK(strstr(info.reduced, "of the released 48 layers") != NULL);
    CHECK((t = find(&pl, "blk.0.ffn_gate_exps.weight")) && t->n_dims == 3 && t->ne[0] == 2048 && t->ne[1] == 768 &&
          t->ne[2] == 128 && t->type == TY_TYPE_Q8_0);
    CHECK((t = find(&pl, "blk.0.ffn_down_exps.weight")) && t->ne[0] == 768 && t->ne[1] == 2048 && t->ne[2] == 128);
    CHECK((t = find(&pl, "blk.0.ffn_gate_inp.weight")) && t->type == TY_TYPE_F32 && t->ne[1] == 128);
    CHECK(find(&pl, "blk.0.ffn_gate.weight") == NULL && find(&pl, "output.weight") != NULL);
    /* One more layer would not have fitted. */
    struct ty_mkmodel_info more;
    struct ty_mkmodel_params mp2 = mp;
    mp2.n_layer = info.n_layer + 1;
    CHECK_OK(ty__mkmodel_plan(&mp2, &more));
    CHECK(more.tensor_bytes > mp.max_bytes);
    ty_free(pl.list.t);

    /* Bad requests. */
    mp.n_layer = 49;
    CHECK_STATUS(ty__mkmodel_plan(&mp, &info), TY_ERR_INVALID_ARG);
    mp.n_layer = 0;
    mp.type = "q3_k";
    CHECK_STATUS(ty__mkmodel_plan(&mp, &info), TY_ERR_INVALID_ARG);
    mp.type = "q8_0";
    mp.max_bytes = 1 << 20;
    CHECK_STATUS(ty__mkmodel_plan(&mp, &info), TY_ERR_INVALID_ARG);
    CHECK(strstr(ty_last_error(), "even one layer") != NULL);
}

/* ==== A real file ==== */

static const char *tokenizer_json(void) {
    static char path[4096];
    if (!path[0]) {
        snprintf(path, sizeof path, "%s", ty_test_tmp("tokenizer.json"));
        char cmd[9000];
        snprintf(cmd, sizeof cmd, "gzip -dc '%s' > '%s'", ty_test_src("data/tokenizers/qwen3/tokenizer.json.gz"), path);
        if (ty_test_sh(cmd, NULL) != 0) fprintf(stderr, "cannot decompress the Qwen3 tokenizer\n");
    }
    return path;
}

static double tensor_stat(const struct ty_gguf_tensor *t, double *sd) {
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2];
    float *f = ty__malloc((size_t)n * sizeof(float));
    ty__type_traits(t->type)->to_float(t->data, f, n);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += f[i];
    double mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) s2 += (f[i] - mean) * (f[i] - mean);
    *sd = sqrt(s2 / (double)n);
    ty_free(f);
    return mean;
}

static void check_file(const char *path) {
    struct ty_gguf *g = NULL;
    CHECK_OK(ty__gguf_open(path, &g));
    if (!g) return;
    char *s = NULL;
    int64_t v;
    CHECK(ty__gguf_get_strdup(g, "general.architecture", &s) == TY_OK && !strcmp(s, "qwen2"));
    ty_free(s);
    CHECK(ty__gguf_get_strdup(g, "general.name", &s) == TY_OK && strstr(s, "Qwen2.5-0.5B") &&
          strstr(s, "2 of 24 layers"));
    ty_free(s);
    CHECK(ty__gguf_get_strdup(g, "tongyun.synthetic.reduced", &s) == TY_OK && strstr(s, "2 of the released 24 layers"));
    ty_free(s);
    CHECK(ty__gguf_get_int(g, "qwen2.block_count", &v) == TY_OK && v == 2);
    CHECK(ty__gguf_get_int(g, "qwen2.embedding_length", &v) == TY_OK && v == 896);
    CHECK(ty__gguf_get_int(g, "qwen2.feed_forward_length", &v) == TY_OK && v == 4864);
    CHECK(ty__gguf_get_int(g, "qwen2.attention.head_count_kv", &v) == TY_OK && v == 2);
    CHECK(ty__gguf_get_int(g, "qwen2.context_length", &v) == TY_OK && v == 32768);
    CHECK(ty__gguf_get_int(g, "general.file_type", &v) == TY_OK && v == 7);
    CHECK(ty__gguf_get_int(g, "tongyun.synthetic.seed", &v) == TY_OK && v == 7);
    enum ty_gguf_type et;
    uint64_t n_tok = 0;
    CHECK(ty__gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_tok) == TY_OK && n_tok == 151936);
    CHECK(ty__gguf_find_key(g, "tokenizer.chat_template") < 0); /* no tokenizer_config.json given */
    CHECK(ty__gguf_n_tensors(g) == 2 + 2 * 12);
    CHECK(ty__gguf_find_tensor(g, "output.weight") == NULL); /* tied */
    const struct ty_gguf_tensor *t;
    CHECK((t = ty__gguf_find_tensor(g, "blk.1.attn_q.bias")) && t->type == TY_TYPE_F32 && t->ne[0] == 896);
    CHECK((t = ty__gguf_find_tensor(g, "blk.1.attn_k.weight")) && t->type == TY_TYPE_Q8_0 && t->ne[0] == 896 &&
          t->ne[1] == 128);
    /* The scales the file promises (Q8_0 adds well under 1% noise). */
    double sd, mean;
    if ((t = ty__gguf_find_tensor(g, "blk.0.attn_q.weight"))) {
        mean = tensor_stat(t, &sd);
        CHECK_NEAR(mean, 0, 1e-3);
        CHECK_NEAR(sd * sqrt(896.0), 1.0, 0.02);
    }
    if ((t = ty__gguf_find_tensor(g, "blk.1.ffn_down.weight"))) {
        tensor_stat(t, &sd);
        CHECK_NEAR(sd * sqrt(4864.0) * sqrt(2.0 * 2), 1.0, 0.02); /* residual projection, 2 layers */
    }
    if ((t = ty__gguf_find_tensor(g, "blk.0.attn_norm.weight"))) {
        mean = tensor_stat(t, &sd);
        CHECK_NEAR(mean, 1.0, 0.01);
        CHECK_NEAR(sd, 0.05, 0.01);
    }
    if ((t = ty__gguf_find_tensor(g, "token_embd.weight"))) {
        tensor_stat(t, &sd);
        CHECK_NEAR(sd * sqrt(896.0), 0.5, 0.01);
    }
    ty__gguf_close(g);
}

/* Every tensor of `b` (fewer layers) has the same bytes in `a`. */
static void check_same_tensors(const char *a_path, const char *b_path) {
    struct ty_gguf *a = NULL, *b = NULL;
    CHECK_OK(ty__gguf_open(a_path, &a));
    CHECK_OK(ty__gguf_open(b_path, &b));
    if (a && b) {
        int64_t n = ty__gguf_n_tensors(b), same = 0;
        for (int64_t i = 0; i < n; i++) {
            const struct ty_gguf_tensor *tb = ty__gguf_tensor(b, i), *ta = ty__gguf_find_tensor(a, tb->name);
            bool eq = ta && ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, tb->nbytes);
            /* The residual projections' scale depends on the layer count; everything else must match. */
            bool resid = strstr(tb->name, "attn_output") || strstr(tb->name, "ffn_down");
            CHECK_MSG(eq != resid, "%s: %s", tb->name, eq ? "same bytes despite another depth" : "bytes differ");
            same += eq;
        }
        CHECK(same == n - 2);
    }
    ty__gguf_close(a);
    ty__gguf_close(b);
}

static void run_prompt(const char *path) {
    struct ty_model *m = NULL;
    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = 2;
    CHECK_OK(ty_model_load(path, &mp, &m));
    if (!m) return;
    const struct ty_tokenizer *tok = ty_model_tokenizer(m);
    const char *text = "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.";
    int32_t ids[64];
    size_t n = 0;
    CHECK_OK(ty_tokenize(tok, text, strlen(text), 0, ids, 64, &n));
    CHECK(n >= 16);
    n = 16;
    struct ty_context *ctx = NULL;
    struct ty_context_params cp = ty_context_default_params();
    cp.n_ctx = 64;
    CHECK_OK(ty_context_init(m, &cp, &ctx));
    int32_t nv = ty_model_n_vocab(m);
    CHECK(nv == 151936);
    float *logits = ty__malloc((size_t)nv * n * sizeof(float));
    if (ctx && logits) {
        CHECK_OK(ty_context_eval(ctx, ids, n, TY_LOGITS_ALL, logits));
        double worst_lo = 1e30, worst_hi = 0;
        bool finite = true;
        int32_t argmax_prev = -1, n_argmax_changes = 0;
        for (size_t row = 0; row < n; row++) {
            const float *l = logits + row * (size_t)nv;
            double s = 0, s2 = 0;
            int32_t am = 0;
            for (int32_t i = 0; i < nv; i++) {
                finite = finite && isfinite(l[i]);
                s += l[i];
                if (l[i] > l[am]) am = i;
            }
            double mean = s / nv;
            for (int32_t i = 0; i < nv; i++) s2 += (l[i] - mean) * (l[i] - mean);
            double sd = sqrt(s2 / nv);
            if (sd < worst_lo) worst_lo = sd;
            if (sd > worst_hi) worst_hi = sd;
            n_argmax_changes += row > 0 && am != argmax_prev;
            argmax_prev = am;
        }
        printf("  logits over a 16-token prompt: sd %.3f .. %.3f, argmax changed %d times\n", worst_lo, worst_hi,
               n_argmax_changes);
        CHECK(finite);
        CHECK_MSG(worst_lo > 0.5 && worst_hi < 20, "logit sd %.3g .. %.3g", worst_lo, worst_hi);
        /* Positions see different contexts: a collapsed model would predict the same token everywhere. */
        CHECK(n_argmax_changes >= 4);
    }
    ty_free(logits);
    ty_context_free(ctx);
    ty_model_free(m);
}

static void test_write(void) {
    const char *a = ty_test_tmp("a.gguf"), *b = ty_test_tmp("b.gguf");
    char a_path[4096], b_path[4096];
    snprintf(a_path, sizeof a_path, "%s", a);
    snprintf(b_path, sizeof b_path, "%s", b);
    struct ty_mkmodel_params mp = {.preset = ty__mkmodel_find_preset("qwen2.5-0.5b"),
                                   .type = "q8_0",
                                   .seed = 7,
                                   .n_layer = 2,
                                   .tokenizer_json = tokenizer_json(),
                                   .n_threads = 2};
    struct ty_mkmodel_info info;
    double t0 = ty__time_s();
    CHECK_OK(ty__mkmodel_write(a_path, &mp, &info));
    double dt = ty__time_s() - t0;
    printf("  wrote %.1f MiB (%.1f M params) in %.2f s\n", (double)info.tensor_bytes / (1 << 20),
           (double)info.n_params / 1e6, dt);
    CHECK(info.n_layer == 2 && info.n_tensors == 26);
    check_file(a_path);

    /* Another thread count and depth: the same bytes wherever the layer count does not enter the scale. */
    mp.n_layer = 1;
    mp.n_threads = 1;
    CHECK_OK(ty__mkmodel_write(b_path, &mp, NULL));
    check_same_tensors(a_path, b_path);
    run_prompt(a_path);

    /* A failure leaves no file behind, and an existing file untouched. */
    mp.tokenizer_json = ty_test_tmp("missing/tokenizer.json");
    CHECK(ty__mkmodel_write(b_path, &mp, NULL) != TY_OK);
    FILE *f = fopen(b_path, "rb");
    CHECK(f != NULL);
    if (f) fclose(f);
    remove(a_path);
    remove(b_path);
}

void ty_tests(void) {
    TY_RUN(test_presets);
    TY_RUN(test_generator);
    TY_RUN(test_plan);
    TY_RUN(test_write);
}
