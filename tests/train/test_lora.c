/*
 * test_lora.c - LoRA (src/train/lora.c): the adapters' gradients against central finite differences, and the round
 * trip the issue asks for: an adapter trained for a few steps, saved, then (a) merged into a new GGUF and (b) applied
 * at load to the base GGUF give the same logits through ty_context_eval (f32 KV cache) within 1e-4, and differ from the
 * base model's (the adapter did change something).
 *
 * Tolerance of the finite differences (f32 loss, step 1e-2 on A and B): |analytic - numeric| <= 2e-2 |numeric| + 2e-3.
 */
#include "harness.h"

#include "model/tokenizer.h"
#include "train/lora.h"

static struct ty_train_config config(void) {
    struct ty_train_config c = {.n_vocab = 538,
                                .n_embd = 32,
                                .n_layer = 2,
                                .n_head = 4,
                                .n_head_kv = 2,
                                .head_dim = 8,
                                .n_ff = 48,
                                .n_ctx = 64,
                                .norm_eps = 1e-6f,
                                .tied = true};
    c.rope.freq_base = 10000.0f;
    return c;
}

static void tokens(int32_t *tok, int n, int salt) {
    for (int i = 0; i < n; i++) tok[i] = (int32_t)((i * 37 + salt * 11 + 3) % 530);
}

static void test_lora_grads(void) {
    struct ty_train_config c = config();
    struct ty_train_model *m = NULL;
    struct ty_lora *lo = NULL;
    CHECK_OK(ty__train_model_init(&c, 2, &m));
    if (!m) return;
    ty__train_model_init_random(m, 4, 0.2f);
    unsigned mask;
    CHECK_OK(ty__lora_parse_targets("q,k,v,o,gate,up,down", &mask));
    CHECK_OK(ty__lora_init(m, 3, 6.0f, mask, 9, &lo));
    if (!lo) return;
    /* B random too, so both factors' gradients are non-trivial */
    for (int i = 1; i < lo->n_tensors; i += 2)
        for (size_t k = 0; k < lo->tensors[i].n; k++)
            lo->params[lo->tensors[i].offset + k] = 0.05f * (float)((int)((k * 7 + (size_t)i) % 11) - 5) / 5.0f;
    ty__lora_sync(lo, m);
    int32_t tok[2 * 9];
    tokens(tok, 18, 0);
    double loss;
    ty__train_zero_grads(m);
    CHECK_OK(ty__train_forward_backward(m, tok, 2, 8, 1.0f, &loss));
    ty__lora_grads(lo, m);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < lo->n_tensors; i++) {
        for (int s = 0; s < 3; s++) {
            size_t k = (size_t)(s * 131 + i * 7) % lo->tensors[i].n;
            float *p = lo->params + lo->tensors[i].offset + k, keep = *p;
            double l[2];
            for (int d = 0; d < 2; d++) {
                *p = keep + (d ? -1e-2f : 1e-2f);
                ty__lora_sync(lo, m);
                ty__train_forward(m, tok, 2, 8, &l[d], NULL);
            }
            *p = keep;
            double num = (l[0] - l[1]) / 2e-2, an = lo->grads[lo->tensors[i].offset + k];
            double e = fabs(an - num) - (2e-2 * fabs(num) + 2e-3);
            if (e > worst) worst = e, worst_name = lo->tensors[i].name;
        }
    }
    CHECK_MSG(worst <= 0, "LoRA gradient of %s off by %g beyond tolerance", worst_name, worst);
    ty__lora_free(lo);
    ty__train_model_free(m);
}

static float *eval_logits(struct ty_model *model, const int32_t *ids, int n) {
    struct ty_context *ctx = NULL;
    struct ty_context_params cp = ty_context_default_params();
    cp.kv_type = TY_TYPE_F32;
    cp.n_ctx = 64;
    float *logits = ty__malloc((size_t)n * (size_t)ty_model_n_vocab(model) * 4);
    CHECK_OK(ty_context_init(model, &cp, &ctx));
    if (ctx) CHECK_OK(ty_context_eval(ctx, ids, (size_t)n, TY_LOGITS_ALL, logits));
    ty_context_free(ctx);
    return logits;
}

static void test_lora_round_trip(void) {
    struct ty_train_config c = config();
    struct ty_train_model *m = NULL;
    struct ty_tokenizer *tok = NULL;
    CHECK_OK(ty__tokenizer_load_hf(ty_test_src("tests/data/models/qwen3-tiny/tokenizer.json"), NULL, &tok));
    CHECK_OK(ty__train_model_init(&c, 2, &m));
    if (!m || !tok) return;
    ty__train_model_init_random(m, 6, 0.1f);
    const char *base = ty_test_tmp("base.gguf"), *adapter = ty_test_tmp("adapter.gguf");
    const char *merged = ty_test_tmp("merged.gguf");
    CHECK_OK(ty__train_model_save_gguf(m, tok, "base", base));
    unsigned mask;
    CHECK_OK(ty__lora_parse_targets("q,v,o,up", &mask));
    struct ty_lora *lo = NULL;
    CHECK_OK(ty__lora_init(m, 4, 8.0f, mask, 1, &lo));
    struct ty_train_optim o;
    struct ty_train_optim_params op = ty__train_optim_default_params();
    op.lr = 1e-2, op.warmup = 1, op.total_steps = 6;
    CHECK_OK(ty__train_optim_init_n(&o, lo->n_params, &op));
    int32_t batch[2 * 17];
    double first = 0, loss = 0;
    for (int s = 0; s < 6; s++) {
        tokens(batch, 34, s % 2);
        ty__train_zero_grads(m);
        CHECK_OK(ty__train_forward_backward(m, batch, 2, 16, 1.0f, &loss));
        if (s == 0) first = loss;
        ty__lora_grads(lo, m);
        ty__train_optim_update(&o, m->pool, lo->tensors, lo->n_tensors, lo->params, lo->grads, NULL, NULL);
        ty__lora_sync(lo, m);
    }
    CHECK_MSG(loss < first, "adapter training did not lower the loss: %g -> %g", first, loss);
    CHECK_OK(ty__lora_save(lo, adapter));
    CHECK_OK(ty__train_model_save_gguf(m, tok, "merged", merged));

    int32_t ids[12];
    tokens(ids, 12, 5);
    struct ty_model_params mp = ty_model_default_params();
    mp.n_threads = 1;
    struct ty_model *mb = NULL, *mm = NULL, *ma = NULL;
    CHECK_OK(ty_model_load(base, &mp, &mb));
    CHECK_OK(ty_model_load(merged, &mp, &mm));
    CHECK_OK(ty_model_load(base, &mp, &ma));
    struct ty_lora_applied *la = NULL;
    if (ma) CHECK_OK(ty__lora_apply(ma, adapter, 1.0f, &la));
    if (mb && mm && ma && la) {
        float *lb = eval_logits(mb, ids, 12), *lm = eval_logits(mm, ids, 12), *lapp = eval_logits(ma, ids, 12);
        double diff = 0, moved = 0;
        for (size_t i = 0; i < (size_t)12 * 538; i++) {
            diff = fmax(diff, fabs(lm[i] - lapp[i]));
            moved = fmax(moved, fabs(lm[i] - lb[i]));
        }
        CHECK_MSG(diff <= 1e-4, "merged vs applied adapter logits differ by %g", diff);
        CHECK_MSG(moved > 1e-3, "the adapter did not change the logits (%g)", moved);
        ty_free(lb), ty_free(lm), ty_free(lapp);
    }
    /* a file that is not an adapter is refused and leaves the model alone */
    struct ty_lora_applied *bad = NULL;
    if (mb) CHECK_STATUS(ty__lora_apply(mb, base, 1.0f, &bad), TY_ERR_FORMAT);
    ty__lora_applied_free(la);
    ty_model_free(ma);
    ty_model_free(mm);
    ty_model_free(mb);
    ty__train_optim_free(&o);
    ty__lora_free(lo);
    ty_tokenizer_free(tok);
    ty__train_model_free(m);
}

void ty_tests(void) {
    TY_RUN(test_lora_grads);
    TY_RUN(test_lora_round_trip);
}
