/*
 * test_convert_values.c - the values that `convert` writes: each fixture checkpoint is converted to F32, F16, BF16 and
 * Q8_0 and every GGUF tensor is read back and compared element by element with the safetensors tensor it came from
 * (exact for lossless conversions, the rounding of the target type otherwise). The name mapping here is written
 * independently of convert.c's table, so a wrong row there shows up as a missing or mismatched tensor. Also: the
 * hyperparameter checks that the shell test cannot reach easily, on edited copies of a fixture.
 */
#include "harness.h"

#include "model/convert.h"
#include "model/gguf.h"
#include "model/quant.h"
#include "model/safetensors.h"

#include <stdlib.h>
#include <sys/stat.h>

/* GGUF name -> Hugging Face name, or false when the name has no source (should not happen). */
static bool hf_name(const char *gguf, char *out, size_t cap) {
    static const char *const global[][2] = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
        {"output.weight", "lm_head.weight"},
    };
    for (size_t i = 0; i < sizeof global / sizeof global[0]; i++)
        if (!strcmp(gguf, global[i][0])) return snprintf(out, cap, "%s", global[i][1]) > 0;
    static const char *const layer[][2] = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_q.bias", "self_attn.q_proj.bias"},
        {"attn_k.weight", "self_attn.k_proj.weight"},
        {"attn_k.bias", "self_attn.k_proj.bias"},
        {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_v.bias", "self_attn.v_proj.bias"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"attn_q_norm.weight", "self_attn.q_norm.weight"},
        {"attn_k_norm.weight", "self_attn.k_norm.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},
        {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"},
    };
    int blk, n = 0;
    if (sscanf(gguf, "blk.%d.%n", &blk, &n) != 1 || n == 0) return false;
    for (size_t i = 0; i < sizeof layer / sizeof layer[0]; i++)
        if (!strcmp(gguf + n, layer[i][0])) return snprintf(out, cap, "model.layers.%d.%s", blk, layer[i][1]) > 0;
    return false;
}

/* Converts `model` to `type` and compares every tensor with its source. Returns the number of tensors compared. */
static int check_model(const char *model, enum ty_type type) {
    char dir[1024], out[1024];
    snprintf(dir, sizeof dir, "%s", ty_test_src("tests/data/models/"));
    strncat(dir, model, sizeof dir - strlen(dir) - 1);
    snprintf(out, sizeof out, "%s", ty_test_tmp(model));
    snprintf(out + strlen(out), sizeof out - strlen(out), "-%s.gguf", ty_type_name(type));

    struct ty_convert_params p = ty__convert_default_params();
    p.type = type;
    CHECK_OK(ty__convert_hf(dir, out, &p));
    struct ty_gguf *g = NULL;
    struct ty_checkpoint *ck = NULL;
    CHECK_OK(ty__gguf_open(out, &g));
    CHECK_OK(ty__checkpoint_open(dir, &ck));
    int compared = 0;
    if (!g || !ck) goto done;

    int64_t file_type;
    CHECK(ty__gguf_get_int(g, "general.file_type", &file_type) == TY_OK && file_type == ty__convert_file_type(type));
    for (int64_t i = 0; i < ty__gguf_n_tensors(g); i++) {
        const struct ty_gguf_tensor *gt = ty__gguf_tensor(g, i);
        char src_name[256];
        CHECK_MSG(hf_name(gt->name, src_name, sizeof src_name), "unexpected tensor %s", gt->name);
        const struct ty_st_tensor *st = ty__checkpoint_find(ck, src_name);
        CHECK_MSG(st != NULL, "%s: source %s not in the checkpoint", gt->name, src_name);
        if (!st) continue;
        /* Shapes reversed, data not transposed. */
        CHECK_MSG(gt->n_dims == st->n_dims, "%s: %d dims, source %d", gt->name, gt->n_dims, st->n_dims);
        for (int d = 0; d < gt->n_dims && d < st->n_dims; d++)
            CHECK_MSG(gt->ne[d] == st->shape[st->n_dims - 1 - d], "%s: ne[%d] = %lld", gt->name, d,
                      (long long)gt->ne[d]);
        enum ty_type want_type = st->n_dims == 1 ? TY_TYPE_F32 : type;
        CHECK_MSG(gt->type == want_type, "%s: type %s, want %s", gt->name, ty_type_name(gt->type),
                  ty_type_name(want_type));
        int64_t n = st->n_elements;
        float *ref = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
        CHECK_OK(ty__st_read_f32(st, 0, n, ref));
        const struct ty_type_traits *gtt = ty__type_traits(gt->type);
        gtt->to_float(gt->data, got, n);
        int64_t bad = -1;
        for (int64_t k = 0; k < n; k++) {
            double want;
            switch (gt->type) {
            case TY_TYPE_F32:
                want = ref[k];
                break;
            case TY_TYPE_F16:
                want = ty__f16_to_f32(ty__f32_to_f16(ref[k]));
                break;
            case TY_TYPE_BF16:
                want = ty__bf16_to_f32(ty__f32_to_bf16(ref[k]));
                break;
            default:
                want = got[k];
                break; /* quantized: bounded per block below */
            }
            if ((double)got[k] != want && bad < 0) bad = k;
        }
        CHECK_MSG(bad < 0, "%s (%s): element %lld is %.9g, want %.9g", gt->name, ty_type_name(gt->type), (long long)bad,
                  bad >= 0 ? got[bad] : 0.0, bad >= 0 ? ref[bad] : 0.0);
        if (gtt->is_quantized) {
            /* Q8_0: each value within half a step of its block's scale (amax / 127), plus f16 rounding of d. */
            for (int64_t b0 = 0; b0 < n; b0 += gtt->block_size) {
                double amax = 0, err = 0;
                for (int64_t k = b0; k < b0 + gtt->block_size; k++) {
                    if (fabs(ref[k]) > amax) amax = fabs(ref[k]);
                    if (fabs((double)got[k] - ref[k]) > err) err = fabs((double)got[k] - ref[k]);
                }
                if (err > amax / 127.0 * 0.51 + amax * 1e-3 + 1e-7) {
                    CHECK_MSG(false, "%s: block at %lld: error %.3g for amax %.3g", gt->name, (long long)b0, err, amax);
                    break;
                }
            }
        }
        free(ref);
        free(got);
        compared++;
    }
done:
    ty__checkpoint_close(ck);
    ty__gguf_close(g);
    remove(out);
    return compared;
}

static void test_values(void) {
    static const struct {
        const char *name;
        int n_tensors; /* qwen2: 1 + 2 * 12 + 1 (+ output.weight when untied); qwen3: 1 + 2 * 11 + 1 (+ 1) */
    } models[] = {{"qwen2-tiny", 27}, {"qwen2-tiny-tied", 26}, {"qwen3-tiny", 24}, {"qwen3-tiny-untied", 25}};
    static const enum ty_type types[] = {TY_TYPE_F32, TY_TYPE_F16, TY_TYPE_BF16, TY_TYPE_Q8_0};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            int n = check_model(models[m].name, types[t]);
            CHECK_MSG(n == models[m].n_tensors, "%s %s: %d tensors, want %d", models[m].name, ty_type_name(types[t]), n,
                      models[m].n_tensors);
        }
}

/* The padded vocabulary (qwen2-tiny: 576 rows, 538 tokens) becomes 576 tokens, the extra ones UNUSED. */
static void test_padded_vocab(void) {
    const char *out = ty_test_tmp("padded.gguf");
    CHECK_OK(ty__convert_hf(ty_test_src("tests/data/models/qwen2-tiny"), out, NULL));
    struct ty_gguf *g;
    CHECK_OK(ty__gguf_open(out, &g));
    if (!g) return;
    enum ty_gguf_type et;
    uint64_t n = 0;
    CHECK_OK(ty__gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n));
    CHECK(n == 576);
    int64_t type = 0;
    CHECK_OK(ty__gguf_arr_int(g, "tokenizer.ggml.token_type", 575, &type));
    CHECK(type == 5); /* UNUSED */
    CHECK_OK(ty__gguf_arr_int(g, "tokenizer.ggml.token_type", 514, &type));
    CHECK(type == 3); /* <|im_end|>: CONTROL */
    const struct ty_gguf_tensor *e = ty__gguf_find_tensor(g, "token_embd.weight");
    CHECK(e && e->ne[1] == 576 && e->type == TY_TYPE_F16); /* default type */
    ty__gguf_close(g);
    remove(out);
}

/* Makes `dir` (inside this test's temp folder) a fresh copy of the qwen3-tiny fixture with `edit` (a Python statement
 * on the dict `c`) applied to its config.json, and removes `out`. The copy is made file by file, never with a shell
 * `rm -rf` on a formatted path. */
static bool make_variant(const char *dir, const char *out, const char *edit) {
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"};
    char src[4096], dst[4096], cmd[8192];
    remove(out);
    mkdir(dir, 0755);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(src, sizeof src, "%s/%s", ty_test_src("tests/data/models/qwen3-tiny"), files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        FILE *in = fopen(src, "rb"), *o = fopen(dst, "wb");
        if (!in || !o) {
            if (in) fclose(in);
            if (o) fclose(o);
            return false;
        }
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, o);
        fclose(in);
        fclose(o);
    }
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import json; p='%s/config.json'; c=json.load(open(p)); %s; json.dump(c, open(p, 'w'))\"",
             dir, edit);
    return ty_test_sh(cmd, NULL) == 0;
}

/* Edited copies of a fixture's config.json that must be refused, each with a message naming the problem. */
static void test_config_errors(void) {
    static const struct {
        const char *edit; /* python statement on dict c */
        enum ty_status want;
        const char *needle;
    } cases[] = {
        {"c['hidden_act'] = 'gelu'", TY_ERR_UNSUPPORTED, "hidden_act gelu is not supported"},
        {"c['num_key_value_heads'] = 3", TY_ERR_FORMAT, "not a multiple of num_key_value_heads 3"},
        {"c['hidden_size'] = 64.5", TY_ERR_FORMAT, "\"hidden_size\" must be an integer"},
        {"del c['max_position_embeddings']", TY_ERR_FORMAT, "missing \"max_position_embeddings\""},
        {"c['layer_types'] = ['full_attention', 'sliding_attention']", TY_ERR_UNSUPPORTED,
         "layer 1 is \"sliding_attention\""},
        {"c['attention_bias'] = True", TY_ERR_UNSUPPORTED, "attention_bias = true is not supported"},
        {"c['rope_scaling'] = {'rope_type': 'yarn'}", TY_ERR_FORMAT, "needs a positive \"factor\""},
        {"c['rope_scaling'] = {'rope_type': 'yarn', 'factor': 4, 'truncate': False}", TY_ERR_UNSUPPORTED, "truncate"},
        {"c['rms_norm_eps'] = -1", TY_ERR_FORMAT, "must be positive"},
        {"c['architectures'] = []", TY_ERR_FORMAT, "no \"architectures\" list"},
        {"c['vocab_size'] = 600", TY_ERR_FORMAT, "has shape [538, 64] but config.json implies [600, 64]"},
    };
    char dir[2048], out[2048];
    snprintf(dir, sizeof dir, "%s", ty_test_tmp("cfg-variant"));
    snprintf(out, sizeof out, "%s", ty_test_tmp("cfg-variant.gguf"));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(make_variant(dir, out, cases[i].edit));
        enum ty_status st = ty__convert_hf(dir, out, NULL);
        CHECK_MSG(st == cases[i].want, "%s: got %s (%s)", cases[i].edit, ty_status_str(st), ty_last_error());
        CHECK_MSG(strstr(ty_last_error(), cases[i].needle) != NULL, "%s: message '%s' lacks '%s'", cases[i].edit,
                  ty_last_error(), cases[i].needle);
        FILE *f = fopen(out, "rb");
        CHECK_MSG(f == NULL, "%s: output written despite the error", cases[i].edit);
        if (f) fclose(f);
    }
    /* A config that moves rope_theta and the scaling into transformers 5's rope_parameters still converts. */
    CHECK(make_variant(dir, out, "c['rope_parameters'] = dict(c.pop('rope_scaling'), rope_theta=c.pop('rope_theta'))"));
    CHECK_OK(ty__convert_hf(dir, out, NULL));
    struct ty_gguf *g;
    if (ty__gguf_open(out, &g) == TY_OK) {
        double theta = 0, factor = 0;
        CHECK_OK(ty__gguf_get_float(g, "qwen3.rope.freq_base", &theta));
        CHECK_OK(ty__gguf_get_float(g, "qwen3.rope.scaling.factor", &factor));
        CHECK(theta == 1000000.0 && factor == 4.0);
        ty__gguf_close(g);
    }
    remove(out);

    struct ty_convert_params p = ty__convert_default_params();
    p.type = TY_TYPE_Q8_K;
    CHECK_STATUS(ty__convert_hf(dir, out, &p), TY_ERR_INVALID_ARG);
    CHECK(strstr(ty_last_error(), "cannot convert to type Q8_K") != NULL);
}

/* A synthetic one-layer Qwen3 checkpoint with 256-wide rows, so that the K-quant types apply (the fixtures' rows of
 * 64 fall back to F16). Written here tensor by tensor as a safetensors file; the tokenizer files come from a fixture.
 */
static bool write_wide_checkpoint(const char *dir) {
    enum { H = 256, FF = 512, NH = 4, NKV = 2, HD = 64, V = 538 };
    static const struct {
        const char *name;
        int64_t d0, d1; /* d1 = 0: 1-D */
    } ts[] = {
        {"model.embed_tokens.weight", V, H},
        {"model.layers.0.input_layernorm.weight", H, 0},
        {"model.layers.0.self_attn.q_proj.weight", NH * HD, H},
        {"model.layers.0.self_attn.k_proj.weight", NKV * HD, H},
        {"model.layers.0.self_attn.v_proj.weight", NKV * HD, H},
        {"model.layers.0.self_attn.q_norm.weight", HD, 0},
        {"model.layers.0.self_attn.k_norm.weight", HD, 0},
        {"model.layers.0.self_attn.o_proj.weight", H, NH * HD},
        {"model.layers.0.post_attention_layernorm.weight", H, 0},
        {"model.layers.0.mlp.gate_proj.weight", FF, H},
        {"model.layers.0.mlp.up_proj.weight", FF, H},
        {"model.layers.0.mlp.down_proj.weight", H, FF},
        {"model.norm.weight", H, 0},
    };
    struct ty_buf hdr = {0};
    size_t off = 0;
    ty__buf_puts(&hdr, "{");
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        size_t n = (size_t)ts[i].d0 * (size_t)(ts[i].d1 ? ts[i].d1 : 1);
        if (ts[i].d1)
            ty__buf_printf(&hdr, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%zu,%zu]}",
                           i ? "," : "", ts[i].name, (long long)ts[i].d0, (long long)ts[i].d1, off, off + 4 * n);
        else
            ty__buf_printf(&hdr, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],\"data_offsets\":[%zu,%zu]}",
                           i ? "," : "", ts[i].name, (long long)ts[i].d0, off, off + 4 * n);
        off += 4 * n;
    }
    ty__buf_puts(&hdr, "}");
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    if (!f || hdr.oom) {
        if (f) fclose(f);
        ty__buf_free(&hdr);
        return false;
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)hdr.len >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(hdr.data, 1, hdr.len, f);
    ty__buf_free(&hdr);
    /* Gaussian-ish values (sum of uniforms) with a few outliers, as real weights have. */
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < off / 4; i++) {
        float x = 0;
        for (int k = 0; k < 4; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            x += (float)((rng >> 40) & 0xffffff) / 16777216.0f - 0.5f;
        }
        if (i % 997 == 0) x *= 8;
        fwrite(&x, 4, 1, f);
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    if (!f) return false;
    fprintf(f,
            "{\"architectures\":[\"Qwen3ForCausalLM\"],\"hidden_size\":%d,\"intermediate_size\":%d,"
            "\"num_hidden_layers\":1,\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"head_dim\":%d,"
            "\"max_position_embeddings\":512,\"vocab_size\":%d,\"rms_norm_eps\":1e-6,\"rope_theta\":1000000,"
            "\"tie_word_embeddings\":true,\"hidden_act\":\"silu\"}",
            H, FF, NH, NKV, HD, V);
    fclose(f);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp '%s/tokenizer.json' '%s/tokenizer_config.json' '%s/'",
             ty_test_src("tests/data/models/qwen3-tiny"), ty_test_src("tests/data/models/qwen3-tiny"), dir);
    return ty_test_sh(cmd, NULL) == 0;
}

static void test_kquants(void) {
    char dir[2048], out[2048];
    snprintf(dir, sizeof dir, "%s", ty_test_tmp("wide"));
    snprintf(out, sizeof out, "%s", ty_test_tmp("wide.gguf"));
    mkdir(dir, 0755);
    CHECK(write_wide_checkpoint(dir));
    struct ty_checkpoint *ck;
    CHECK_OK(ty__checkpoint_open(dir, &ck));
    if (!ck) return;
    /* Normalised error bounds about twice what the quantizers reach on these values: a wrong layout is far off. */
    static const struct {
        enum ty_type type;
        double max_nmse;
    } types[] = {{TY_TYPE_Q4_K, 0.01}, {TY_TYPE_Q5_K, 0.0025}, {TY_TYPE_Q6_K, 0.0006}, {TY_TYPE_Q4_0, 0.015}};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        struct ty_convert_params p = ty__convert_default_params();
        p.type = types[k].type;
        CHECK_OK(ty__convert_hf(dir, out, &p));
        struct ty_gguf *g;
        if (ty__gguf_open(out, &g) != TY_OK) continue;
        const struct ty_gguf_tensor *gt = ty__gguf_find_tensor(g, "blk.0.ffn_down.weight");
        const struct ty_st_tensor *st = ty__checkpoint_find(ck, "model.layers.0.mlp.down_proj.weight");
        CHECK(gt && st && gt->type == types[k].type && gt->ne[0] == 512 && gt->ne[1] == 256);
        const struct ty_gguf_tensor *norm = ty__gguf_find_tensor(g, "output_norm.weight");
        CHECK(norm && norm->type == TY_TYPE_F32);
        CHECK(ty__gguf_find_tensor(g, "output.weight") == NULL); /* tied */
        if (gt && st) {
            int64_t n = st->n_elements;
            float *ref = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
            CHECK_OK(ty__st_read_f32(st, 0, n, ref));
            ty__type_traits(gt->type)->to_float(gt->data, got, n);
            double err = 0, sig = 0;
            for (int64_t i = 0; i < n; i++) {
                err += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
                sig += (double)ref[i] * ref[i];
            }
            CHECK_MSG(err / sig < types[k].max_nmse, "%s: NMSE %.3g", ty_type_name(types[k].type), err / sig);
            free(ref);
            free(got);
        }
        ty__gguf_close(g);
        remove(out);
    }
    ty__checkpoint_close(ck);
}

void ty_tests(void) {
    TY_RUN(test_values);
    TY_RUN(test_padded_vocab);
    TY_RUN(test_config_errors);
    TY_RUN(test_kquants);
}
