/*
 * test_safetensors.c - the safetensors reader and checkpoint folders: valid files built here byte by byte, every kind
 * of malformed header the reader must refuse (each with a message that names the problem), hostile shard names in an
 * index, failed allocations, and the committed Hugging Face fixtures.
 */
#include "harness.h"

#include "model/safetensors.h"

#include <stdlib.h>
#include <sys/stat.h>

/* ==== Building files ==== */

/* A safetensors image: 8-byte length, `header`, then `ndata` bytes of `data`. Free with free(). */
static uint8_t *image(const char *header, const void *data, size_t ndata, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + ndata;
    uint8_t *b = malloc(*size ? *size : 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    if (ndata) memcpy(b + 8 + h, data, ndata);
    return b;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static void write_image(const char *path, const char *header, const void *data, size_t ndata) {
    size_t n;
    uint8_t *b = image(header, data, ndata, &n);
    write_file(path, b, n);
    free(b);
}

/* Opens an in-memory image that must fail with `want`, and checks that the message names `needle` (and the label). */
static void expect_bad(const char *header, const void *data, size_t ndata, enum ty_status want, const char *needle) {
    size_t n;
    uint8_t *b = image(header, data, ndata, &n);
    struct ty_safetensors *st = (struct ty_safetensors *)1;
    enum ty_status s = ty__safetensors_open_memory(b, n, "bad.safetensors", &st);
    CHECK_MSG(s == want, "header %s: got %s (%s), want %s", header, ty_status_str(s), ty_last_error(),
              ty_status_str(want));
    CHECK(st == NULL);
    CHECK_MSG(strstr(ty_last_error(), needle) != NULL, "message '%s' lacks '%s'", ty_last_error(), needle);
    CHECK_MSG(strstr(ty_last_error(), "bad.safetensors") != NULL, "message '%s' lacks the file name", ty_last_error());
    free(b);
}

static const float six[6] = {1, 2, 3, 4, 5, 6};

/* ==== Valid files ==== */

static void test_valid_memory(void) {
    /* F32 [2,3] at [0,24), BF16 [4] at [24,32), a scalar F16 at [32,34), an empty tensor, metadata, padding. */
    uint8_t data[34];
    memcpy(data, six, 24);
    uint16_t bf[4] = {0x3f80, 0xc000, 0x4040, 0x0000}; /* 1, -2, 3, 0 */
    memcpy(data + 24, bf, 8);
    uint16_t h = 0x3c00; /* f16 1.0 */
    memcpy(data + 32, &h, 2);
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                      "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[32,32]},"
                      "\"s\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[32,34]}}     ";
    size_t n;
    uint8_t *b = image(hdr, data, sizeof data, &n);
    struct ty_safetensors *st;
    CHECK_OK(ty__safetensors_open_memory(b, n, "mem", &st));
    if (!st) {
        free(b);
        return;
    }
    CHECK(ty__safetensors_n_tensors(st) == 4);
    /* data-offset order */
    CHECK(!strcmp(ty__safetensors_tensor(st, 0)->name, "a.weight"));
    CHECK(!strcmp(ty__safetensors_tensor(st, 1)->name, "b"));
    CHECK(ty__safetensors_tensor(st, 4) == NULL);
    const struct ty_st_tensor *a = ty__safetensors_find(st, "a.weight");
    CHECK(a && a->dtype == TY_ST_F32 && a->n_dims == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->n_elements == 6 &&
          a->nbytes == 24);
    CHECK(ty__safetensors_find(st, "missing") == NULL);
    CHECK(ty__safetensors_find(st, "__metadata__") == NULL);
    float f[6] = {0};
    CHECK_OK(ty__st_read_f32(a, 0, 6, f));
    CHECK(f[0] == 1 && f[5] == 6);
    CHECK_OK(ty__st_read_f32(a, 4, 2, f));
    CHECK(f[0] == 5 && f[1] == 6);
    CHECK_STATUS(ty__st_read_f32(a, 4, 3, f), TY_ERR_INVALID_ARG);
    CHECK(strstr(ty_last_error(), "a.weight") != NULL);
    const struct ty_st_tensor *bt = ty__safetensors_find(st, "b");
    CHECK(bt && bt->dtype == TY_ST_BF16 && !strcmp(ty__st_dtype_name(bt->dtype), "BF16"));
    CHECK_OK(ty__st_read_f32(bt, 0, 4, f));
    CHECK(f[0] == 1 && f[1] == -2 && f[2] == 3 && f[3] == 0);
    const struct ty_st_tensor *s = ty__safetensors_find(st, "s");
    CHECK(s && s->n_dims == 0 && s->n_elements == 1 && s->nbytes == 2);
    CHECK_OK(ty__st_read_f32(s, 0, 1, f));
    CHECK(f[0] == 1.0f);
    const struct ty_st_tensor *e = ty__safetensors_find(st, "empty");
    CHECK(e && e->n_elements == 0 && e->nbytes == 0);
    CHECK(!strcmp(e->file, "mem"));
    ty__safetensors_close(st);
    free(b);
}

static void test_valid_file_and_dtypes(void) {
    double d[2] = {0.5, -1e30};
    const char *path = ty_test_tmp("f64.safetensors");
    write_image(path, "{\"x\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", d, sizeof d);
    struct ty_safetensors *st;
    CHECK_OK(ty__safetensors_open(path, &st));
    if (!st) return;
    const struct ty_st_tensor *x = ty__safetensors_find(st, "x");
    float f[2];
    CHECK(x && x->file && strstr(x->file, "f64.safetensors"));
    CHECK_OK(ty__st_read_f32(x, 0, 2, f));
    CHECK(f[0] == 0.5f && f[1] == -1e30f);
    ty__safetensors_close(st);

    /* I64 parses (a checkpoint may hold integer buffers) but cannot be read as weights. */
    int64_t iv[3] = {1, 2, 3};
    size_t n;
    uint8_t *b = image("{\"position_ids\":{\"dtype\":\"I64\",\"shape\":[1,3],\"data_offsets\":[0,24]}}", iv, 24, &n);
    CHECK_OK(ty__safetensors_open_memory(b, n, "ints", &st));
    if (st) {
        const struct ty_st_tensor *p = ty__safetensors_find(st, "position_ids");
        CHECK(p && p->dtype == TY_ST_I64);
        CHECK_STATUS(ty__st_read_f32(p, 0, 3, f), TY_ERR_UNSUPPORTED);
        CHECK(strstr(ty_last_error(), "unsupported dtype I64") && strstr(ty_last_error(), "position_ids"));
        ty__safetensors_close(st);
    }
    free(b);

    CHECK_STATUS(ty__safetensors_open(ty_test_tmp("does-not-exist.safetensors"), &st), TY_ERR_IO);
    CHECK(strstr(ty_last_error(), "does-not-exist.safetensors") != NULL);
}

/* ==== Malformed headers ==== */

static void test_bad_length(void) {
    struct ty_safetensors *st;
    uint8_t tiny[5] = {1, 0, 0, 0, 0};
    CHECK_STATUS(ty__safetensors_open_memory(tiny, sizeof tiny, "bad.safetensors", &st), TY_ERR_FORMAT);
    CHECK(strstr(ty_last_error(), "too short") != NULL);
    CHECK_STATUS(ty__safetensors_open_memory(NULL, 0, "bad.safetensors", &st), TY_ERR_FORMAT);

    uint8_t huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
    CHECK_STATUS(ty__safetensors_open_memory(huge, sizeof huge, "bad.safetensors", &st), TY_ERR_FORMAT);
    CHECK(strstr(ty_last_error(), "exceeds") != NULL);
    uint8_t all_ones[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CHECK_STATUS(ty__safetensors_open_memory(all_ones, sizeof all_ones, "bad.safetensors", &st), TY_ERR_FORMAT);

    uint8_t past[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    CHECK_STATUS(ty__safetensors_open_memory(past, sizeof past, "bad.safetensors", &st), TY_ERR_FORMAT);
    CHECK(strstr(ty_last_error(), "past the end of the file") != NULL);
}

static void test_bad_json(void) {
    expect_bad("{\"a\":", NULL, 0, TY_ERR_FORMAT, "not valid JSON");
    expect_bad("", NULL, 0, TY_ERR_FORMAT, "not valid JSON");
    expect_bad("[1,2]", NULL, 0, TY_ERR_FORMAT, "not a JSON object");
    expect_bad("{} trailing", NULL, 0, TY_ERR_FORMAT, "not valid JSON");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               six, 8, TY_ERR_FORMAT, "duplicate");
    expect_bad("{\"a\":[1]}", NULL, 0, TY_ERR_FORMAT, "tensor a: header entry is not a JSON object");
    /* Invalid UTF-8 inside the header. */
    expect_bad("{\"\xff\":{}}", NULL, 0, TY_ERR_FORMAT, "not valid JSON");
}

static void test_bad_entries(void) {
    expect_bad("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", six, 4, TY_ERR_FORMAT, "tensor w: missing");
    expect_bad("{\"w\":{\"dtype\":\"F4\",\"shape\":[8],\"data_offsets\":[0,4]}}", six, 4, TY_ERR_UNSUPPORTED,
               "tensor w: unsupported dtype F4");
    expect_bad("{\"w\":{\"dtype\":\"Q8_0\",\"shape\":[1],\"data_offsets\":[0,4]}}", six, 4, TY_ERR_UNSUPPORTED,
               "unsupported dtype Q8_0");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,4]}}", six, 4, TY_ERR_FORMAT,
               "\"shape\"");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", six, 4, TY_ERR_FORMAT,
               "shape[0] is not a non-negative integer");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", six, 4, TY_ERR_FORMAT, "shape[0]");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", six, 4,
               TY_ERR_FORMAT, "rank 9");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],"
               "\"data_offsets\":[0,4]}}",
               six, 4, TY_ERR_FORMAT, "overflows");
    /* The element count fits but the byte count does not. */
    expect_bad("{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", six, 4,
               TY_ERR_FORMAT, "overflows");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", six, 4, TY_ERR_FORMAT, "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", six, 4, TY_ERR_FORMAT,
               "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", six, 4, TY_ERR_FORMAT,
               "end before they begin");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,400]}}", six, 4, TY_ERR_FORMAT,
               "past the end of the data section");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}", six, 4,
               TY_ERR_FORMAT, "not valid JSON"); /* jansson refuses integers past INT64_MAX */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", six, 4, TY_ERR_FORMAT,
               "hold 4 bytes but F32 shape needs 8");
}

static void test_bad_tiling(void) {
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               six, 12, TY_ERR_FORMAT, "overlaps tensor a");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               six, 12, TY_ERR_FORMAT, "belong to no tensor");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", six, 12, TY_ERR_FORMAT,
               "cover only 4");
    /* Two views of the same bytes are an overlap too. */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               six, 4, TY_ERR_FORMAT, "overlaps");
}

static void test_alloc_failures(void) {
    const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
    size_t n;
    uint8_t *b = image(hdr, six, 12, &n);
    int ok = 0, oom = 0;
    for (long k = 1; k < 40; k++) {
        ty__alloc_fail_after(k);
        struct ty_safetensors *st = NULL;
        enum ty_status s = ty__safetensors_open_memory(b, n, "mem", &st);
        ty__alloc_fail_after(0);
        CHECK(s == TY_OK || s == TY_ERR_NO_MEMORY);
        if (s == TY_OK) {
            ok++;
            CHECK(ty__safetensors_find(st, "b") != NULL);
            ty__safetensors_close(st);
        } else {
            oom++;
            CHECK(st == NULL);
        }
    }
    CHECK(oom > 0 && ok > 0);
    free(b);
}

/* ==== Checkpoint folders ==== */

static const char *mkdir_tmp(const char *rel) {
    const char *d = ty_test_tmp(rel);
    mkdir(d, 0755);
    return d;
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_file(path, text, strlen(text));
}

static void write_shard(const char *dir, const char *name, const char *header, size_t ndata) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_image(path, header, six, ndata);
}

static const char *ck_error(const char *dir) {
    struct ty_checkpoint *ck = (struct ty_checkpoint *)1;
    enum ty_status s = ty__checkpoint_open(dir, &ck);
    CHECK_MSG(s != TY_OK, "%s opened but should not", dir);
    CHECK(ck == NULL);
    return ty_last_error();
}

static void test_checkpoint_single_and_sharded(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", mkdir_tmp("ck-single"));
    write_shard(dir, "model.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12);
    struct ty_checkpoint *ck;
    CHECK_OK(ty__checkpoint_open(dir, &ck));
    if (ck) {
        CHECK(ty__checkpoint_n_files(ck) == 1 && ty__checkpoint_n_tensors(ck) == 1);
        CHECK(ty__checkpoint_find(ck, "x") != NULL && ty__checkpoint_find(ck, "y") == NULL);
        ty__checkpoint_close(ck);
    }

    snprintf(dir, sizeof dir, "%s", mkdir_tmp("ck-sharded"));
    write_shard(dir, "model-00001-of-00002.safetensors",
                "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                8);
    write_shard(dir, "model-00002-of-00002.safetensors",
                "{\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    write_text(dir, "model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":16},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
               "\"b\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}}");
    CHECK_OK(ty__checkpoint_open(dir, &ck));
    if (ck) {
        CHECK(ty__checkpoint_n_files(ck) == 2 && ty__checkpoint_n_tensors(ck) == 3);
        const struct ty_st_tensor *c = ty__checkpoint_find(ck, "c"), *a = ty__checkpoint_find(ck, "a");
        CHECK(c && strstr(c->file, "model-00002-of-00002.safetensors"));
        CHECK(a && strstr(a->file, "model-00001-of-00002.safetensors"));
        float f[2];
        CHECK(c && ty__st_read_f32(c, 0, 2, f) == TY_OK && f[0] == 1 && f[1] == 2);
        CHECK(!strcmp(ty__checkpoint_tensor(ck, 0)->name, "b")); /* shard order, then offset order */
        ty__checkpoint_close(ck);
    }
}

static void test_checkpoint_bad_index(void) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", mkdir_tmp("ck-bad"));
    const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    write_shard(dir, "s1.safetensors", hdr, 4);
    char s2[4200];
    snprintf(s2, sizeof s2, "%s/s2.safetensors", dir);
    remove(s2); /* made below; a rerun must start without it */
    /* A real file outside the folder that an escaping name would reach. */
    write_shard(ty_test_tmp(""), "outside.safetensors", hdr, 4);

    static const char *const escapes[] = {
        "../outside.safetensors", "..", "sub/s1.safetensors", "/etc/passwd", "..\\\\outside.safetensors", "",
    };
    for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
        char idx[512];
        snprintf(idx, sizeof idx, "{\"weight_map\":{\"a\":\"%s\"}}", escapes[i]);
        write_text(dir, "model.safetensors.index.json", idx);
        const char *msg = ck_error(dir);
        CHECK_MSG(strstr(msg, "not a plain file name") && strstr(msg, "tensor a"), "'%s': %s", escapes[i], msg);
    }
    /* A NUL hidden in the JSON string. */
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s1.safetensors\\u0000/../x\"}}");
    CHECK(strstr(ck_error(dir), "index.json") != NULL);

    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s2.safetensors\"}}");
    CHECK(strstr(ck_error(dir), "shard s2.safetensors, which is missing") != NULL);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"s1.safetensors\",\"zz\":\"s1.safetensors\"}}");
    CHECK(strstr(ck_error(dir), "tensor zz is listed in shard s1.safetensors, which does not contain it") != NULL);
    write_shard(dir, "s2.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"extra\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                8);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"s1.safetensors\",\"extra\":\"s2.safetensors\"}}");
    CHECK(strstr(ck_error(dir), "tensor a is also in this shard") != NULL);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s2.safetensors\"}}");
    CHECK(strstr(ck_error(dir), "tensor extra is not listed") != NULL);
    write_text(dir, "model.safetensors.index.json", "{\"metadata\":{}}");
    CHECK(strstr(ck_error(dir), "no \"weight_map\"") != NULL);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{}}");
    CHECK(strstr(ck_error(dir), "lists no tensors") != NULL);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":7}}");
    CHECK(strstr(ck_error(dir), "not a file name string") != NULL);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\"");
    CHECK(strstr(ck_error(dir), "not valid JSON") != NULL);
    /* A bad shard reports the shard's own problem. */
    write_shard(dir, "s3.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s3.safetensors\"}}");
    CHECK(strstr(ck_error(dir), "s3.safetensors: tensor a: data_offsets") != NULL);

    CHECK(strstr(ck_error(mkdir_tmp("ck-empty")), "no model.safetensors or model.safetensors.index.json") != NULL);
}

/* ==== The committed fixtures (written by transformers' save_pretrained) ==== */

static void test_fixtures(void) {
    struct ty_checkpoint *ck;
    CHECK_OK(ty__checkpoint_open(ty_test_src("tests/data/models/qwen3-tiny-untied"), &ck));
    if (ck) {
        CHECK(ty__checkpoint_n_files(ck) > 1);
        const struct ty_st_tensor *e = ty__checkpoint_find(ck, "model.embed_tokens.weight");
        CHECK(e && e->dtype == TY_ST_F32 && e->n_dims == 2 && e->shape[1] == 64);
        CHECK(ty__checkpoint_find(ck, "lm_head.weight") != NULL);
        CHECK(ty__checkpoint_find(ck, "model.layers.1.self_attn.k_norm.weight") != NULL);
        ty__checkpoint_close(ck);
    }
    CHECK_OK(ty__checkpoint_open(ty_test_src("tests/data/models/qwen2-tiny-tied"), &ck));
    if (ck) {
        CHECK(ty__checkpoint_n_files(ck) == 1);
        CHECK(ty__checkpoint_find(ck, "lm_head.weight") == NULL); /* tied: not saved */
        const struct ty_st_tensor *n = ty__checkpoint_find(ck, "model.norm.weight");
        CHECK(n && n->dtype == TY_ST_BF16 && n->n_dims == 1 && n->shape[0] == 64);
        float f[64];
        CHECK(n && ty__st_read_f32(n, 0, 64, f) == TY_OK);
        /* Norm weights were drawn around 1 (see make_fixtures.py). */
        double mean = 0;
        for (int i = 0; i < 64; i++) mean += f[i] / 64.0;
        CHECK(mean > 0.8 && mean < 1.2);
        ty__checkpoint_close(ck);
    }
}

void ty_tests(void) {
    TY_RUN(test_valid_memory);
    TY_RUN(test_valid_file_and_dtypes);
    TY_RUN(test_bad_length);
    TY_RUN(test_bad_json);
    TY_RUN(test_bad_entries);
    TY_RUN(test_bad_tiling);
    TY_RUN(test_alloc_failures);
    TY_RUN(test_checkpoint_single_and_sharded);
    TY_RUN(test_checkpoint_bad_index);
    TY_RUN(test_fixtures);
}
