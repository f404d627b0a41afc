/*
 * test_gguf.c - the GGUF reader and writer: a write/read round trip of every metadata type, arrays, string arrays
 * and several tensor types with default and custom alignment; copying entries between files; a hand-built v2 file;
 * a table of malformed inputs built here (each must fail with the right status and a message naming the field);
 * every truncation of a valid file; the committed CVE regression corpus; allocation failure during open and write;
 * and a 150k-entry vocabulary.
 */
#include "harness.h"

#include "model/gguf.h"
#include "model/quant.h"

#include <dirent.h>
#include <stdlib.h>
#include <inttypes.h>
#include <unistd.h>

/* ==== Helpers ==== */

static void fill_bytes(void *dst, size_t n, uint32_t seed) {
    uint8_t *p = dst;
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = (uint8_t)(x >> 24);
    }
}

static bool file_exists(const char *path) {
    return access(path, F_OK) == 0;
}

static const char *tmp_name_of(const char *path) {
    static char buf[4200];
    snprintf(buf, sizeof buf, "%s.tmp.%ld", path, (long)getpid());
    return buf;
}

static bool msg_has(const char *needle) {
    return strstr(ty_last_error(), needle) != NULL;
}

/* Byte builder for hand-made files. */
static void b_u32(struct ty_buf *b, uint32_t v) {
    ty__buf_append(b, &v, 4);
}
static void b_u64(struct ty_buf *b, uint64_t v) {
    ty__buf_append(b, &v, 8);
}
static void b_str(struct ty_buf *b, const char *s) {
    b_u64(b, strlen(s));
    ty__buf_append(b, s, strlen(s));
}
static void b_header(struct ty_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    ty__buf_append(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}
static void b_kv_u32(struct ty_buf *b, const char *key, uint32_t v) {
    b_str(b, key);
    b_u32(b, TY_GGUF_TYPE_UINT32);
    b_u32(b, v);
}
static void b_kv_str(struct ty_buf *b, const char *key, const char *v) {
    b_str(b, key);
    b_u32(b, TY_GGUF_TYPE_STRING);
    b_str(b, v);
}
static void b_tensor(struct ty_buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t offset) {
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) b_u64(b, ne[d]);
    b_u32(b, type);
    b_u64(b, offset);
}
static void b_pad(struct ty_buf *b, size_t align) {
    while (b->len % align) ty__buf_append(b, "", 1);
}
static void b_zeros(struct ty_buf *b, size_t n) {
    for (size_t i = 0; i < n; i++) ty__buf_append(b, "", 1);
}

/* Opens `n` bytes through an exact-size heap copy, so a read one byte past the end trips ASan. */
static enum ty_status open_exact(const void *data, size_t n, struct ty_gguf **out) {
    void *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    enum ty_status st = ty__gguf_open_memory(copy, n, out);
    if (st == TY_OK) {
        /* keep the copy alive as long as the reader: walk it now, then close */
        for (int64_t i = 0; i < ty__gguf_n_tensors(*out); i++) {
            const struct ty_gguf_tensor *t = ty__gguf_tensor(*out, i);
            volatile uint8_t x = ((const uint8_t *)t->data)[t->nbytes - 1];
            (void)x;
        }
        ty__gguf_close(*out);
        *out = NULL;
    }
    free(copy);
    return st;
}

/* ==== Round trip ==== */

struct tspec {
    const char *name;
    enum ty_type type;
    int n_dims;
    int64_t ne[4];
};

static const struct tspec round_tensors[] = {
    {"token_embd.weight", TY_TYPE_Q8_0, 2, {64, 5, 1, 1}},
    {"blk.0.attn_norm.weight", TY_TYPE_F32, 1, {7, 1, 1, 1}},
    {"blk.0.ffn_down.weight", TY_TYPE_Q4_K, 2, {256, 3, 1, 1}},
    {"blk.0.ffn_up.weight", TY_TYPE_Q6_K, 3, {512, 2, 2, 1}},
    {"blk.0.attn_k.weight", TY_TYPE_F16, 4, {3, 2, 2, 2}},
    {"blk.0.attn_v.weight", TY_TYPE_BF16, 2, {9, 3, 1, 1}},
    {"blk.0.attn_q.weight", TY_TYPE_Q4_0, 2, {32, 3, 1, 1}},
    {"output.weight", TY_TYPE_Q5_K, 2, {256, 1, 1, 1}},
};
#define N_ROUND (sizeof round_tensors / sizeof round_tensors[0])

static const uint8_t arr_u8[] = {0, 1, 255};
static const int8_t arr_i8[] = {-128, 0, 127};
static const uint16_t arr_u16[] = {0, 65535};
static const int16_t arr_i16[] = {-32768, 32767, 5};
static const uint32_t arr_u32[] = {4000000000u};
static const int32_t arr_i32[] = {-2147483647 - 1, 2147483647};
static const float arr_f32[] = {1.5f, -0.25f, 3e38f};
static const uint8_t arr_bool[] = {1, 0, 1};
static const uint64_t arr_u64[] = {UINT64_MAX, 0, 42};
static const int64_t arr_i64[] = {INT64_MIN, INT64_MAX};
static const double arr_f64[] = {3.141592653589793, -1e300};

static const char *const strs[] = {"hello", "", "w\xc3\xb6rld", "<|im_end|>"};
static const char bin_str[] = {'a', 0, 'b', '\n'}; /* a string with a NUL inside: lengths, not terminators */

static void write_round_file(const char *path, uint32_t alignment) {
    struct ty_gguf_writer *w;
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_set_str(w, "general.architecture", "qwen3"));
    if (alignment) CHECK_OK(ty__gguf_writer_set_u32(w, "general.alignment", alignment));
    CHECK_OK(ty__gguf_writer_set_u32(w, "t.u32", 4000000000u));
    CHECK_OK(ty__gguf_writer_set_i32(w, "t.i32", -123456));
    CHECK_OK(ty__gguf_writer_set_u64(w, "t.u64", UINT64_MAX));
    CHECK_OK(ty__gguf_writer_set_f32(w, "t.f32", 0.1f));
    CHECK_OK(ty__gguf_writer_set_bool(w, "t.bool", true));
    CHECK_OK(ty__gguf_writer_set_str(w, "t.str", "first"));
    CHECK_OK(ty__gguf_writer_set_str(w, "t.str", "replaced \xe4\xb8\xad")); /* keeps its position */
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.u8", TY_GGUF_TYPE_UINT8, arr_u8, 3));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.i8", TY_GGUF_TYPE_INT8, arr_i8, 3));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.u16", TY_GGUF_TYPE_UINT16, arr_u16, 2));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.i16", TY_GGUF_TYPE_INT16, arr_i16, 3));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.u32", TY_GGUF_TYPE_UINT32, arr_u32, 1));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.i32", TY_GGUF_TYPE_INT32, arr_i32, 2));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.f32", TY_GGUF_TYPE_FLOAT32, arr_f32, 3));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.bool", TY_GGUF_TYPE_BOOL, arr_bool, 3));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.u64", TY_GGUF_TYPE_UINT64, arr_u64, 3));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.i64", TY_GGUF_TYPE_INT64, arr_i64, 2));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.f64", TY_GGUF_TYPE_FLOAT64, arr_f64, 2));
    CHECK_OK(ty__gguf_writer_set_arr(w, "a.empty", TY_GGUF_TYPE_INT32, NULL, 0));
    CHECK_OK(ty__gguf_writer_set_arr_str(w, "a.str", strs, NULL, 4));
    const char *bin[] = {bin_str, "xyz"};
    size_t bin_lens[] = {sizeof bin_str, 2};
    CHECK_OK(ty__gguf_writer_set_arr_str(w, "a.bin", bin, bin_lens, 2));
    CHECK_STATUS(ty__gguf_writer_set_arr(w, "a.bad", TY_GGUF_TYPE_STRING, strs, 1), TY_ERR_INVALID_ARG);

    for (size_t i = 0; i < N_ROUND; i++) {
        const struct tspec *s = &round_tensors[i];
        CHECK_OK(ty__gguf_writer_add_tensor(w, s->name, s->type, s->n_dims, s->ne));
    }
    CHECK_OK(ty__gguf_writer_begin(w, path));
    CHECK(file_exists(tmp_name_of(path)));
    for (size_t i = 0; i < N_ROUND; i++) {
        const struct tspec *s = &round_tensors[i];
        size_t nb = 0;
        CHECK_OK(ty__tensor_nbytes(s->type, s->n_dims, s->ne, s->name, &nb));
        uint8_t *data = malloc(nb);
        fill_bytes(data, nb, (uint32_t)i);
        CHECK_OK(ty__gguf_writer_write_tensor(w, data, nb));
        free(data);
    }
    CHECK_OK(ty__gguf_writer_finish(w));
    CHECK(!file_exists(tmp_name_of(path)));
    ty__gguf_writer_free(w);
}

static void check_num_arr(const struct ty_gguf *g, const char *key, enum ty_gguf_type et, const void *want, size_t elem,
                          uint64_t n) {
    enum ty_gguf_type got_t;
    uint64_t got_n;
    CHECK_OK(ty__gguf_get_arr(g, key, &got_t, &got_n));
    CHECK_MSG(got_t == et && got_n == n, "%s: type %d n %" PRIu64, key, got_t, got_n);
    const void *d = ty__gguf_arr_data(g, key);
    CHECK(d != NULL);
    if (d && n) CHECK_MSG(memcmp(d, want, elem * n) == 0, "%s data differs", key);
}

static void check_round_file(const char *path, uint32_t want_align) {
    struct ty_gguf *g;
    CHECK_OK(ty__gguf_open(path, &g));
    if (!g) return;
    CHECK(ty__gguf_version(g) == 3);
    CHECK(ty__gguf_alignment(g) == want_align);
    CHECK(ty__gguf_data_offset(g) % want_align == 0);
    CHECK(ty__gguf_n_kv(g) == (want_align != TY_GGUF_DEFAULT_ALIGNMENT ? 22 : 21));
    CHECK(ty__gguf_find_key(g, "t.str") == (want_align != TY_GGUF_DEFAULT_ALIGNMENT ? 7 : 6)); /* position kept */
    CHECK(ty__gguf_find_key(g, "nope") == -1);
    CHECK(ty__gguf_find_key(g, "t.st") == -1);
    CHECK(strcmp(ty__gguf_key(g, 0), "general.architecture") == 0);

    int64_t iv;
    uint64_t uv;
    double dv;
    bool bv;
    struct ty_gguf_str sv;
    CHECK_OK(ty__gguf_get_uint(g, "t.u32", &uv));
    CHECK(uv == 4000000000u);
    CHECK_OK(ty__gguf_get_int(g, "t.u32", &iv));
    CHECK(iv == 4000000000);
    CHECK_OK(ty__gguf_get_int(g, "t.i32", &iv));
    CHECK(iv == -123456);
    CHECK_STATUS(ty__gguf_get_uint(g, "t.i32", &uv), TY_ERR_FORMAT);
    CHECK(msg_has("t.i32") && msg_has("negative"));
    CHECK_OK(ty__gguf_get_uint(g, "t.u64", &uv));
    CHECK(uv == UINT64_MAX);
    CHECK_STATUS(ty__gguf_get_int(g, "t.u64", &iv), TY_ERR_FORMAT);
    CHECK(msg_has("t.u64"));
    CHECK_OK(ty__gguf_get_float(g, "t.f32", &dv));
    CHECK(dv == (double)0.1f);
    CHECK_OK(ty__gguf_get_bool(g, "t.bool", &bv));
    CHECK(bv);
    CHECK_OK(ty__gguf_get_str(g, "t.str", &sv));
    CHECK(sv.len == 12 && memcmp(sv.data, "replaced \xe4\xb8\xad", 12) == 0);
    char *dup = NULL;
    CHECK_OK(ty__gguf_get_strdup(g, "general.architecture", &dup));
    CHECK(dup && strcmp(dup, "qwen3") == 0);
    ty_free(dup);
    if (want_align != TY_GGUF_DEFAULT_ALIGNMENT) {
        CHECK_OK(ty__gguf_get_uint(g, "general.alignment", &uv));
        CHECK(uv == want_align);
    }

    /* Type mismatches name the key and both types. */
    CHECK_STATUS(ty__gguf_get_int(g, "t.str", &iv), TY_ERR_FORMAT);
    CHECK(msg_has("'t.str'") && msg_has("str") && msg_has("integer"));
    CHECK_STATUS(ty__gguf_get_float(g, "t.u32", &dv), TY_ERR_FORMAT);
    CHECK(msg_has("t.u32") && msg_has("u32"));
    CHECK_STATUS(ty__gguf_get_str(g, "a.str", &sv), TY_ERR_FORMAT);
    CHECK(msg_has("array of str"));
    CHECK_STATUS(ty__gguf_get_bool(g, "missing.key", &bv), TY_ERR_NOT_FOUND);
    CHECK(msg_has("missing.key"));
    CHECK_STATUS(ty__gguf_get_arr(g, "t.u32", NULL, NULL), TY_ERR_FORMAT);

    check_num_arr(g, "a.u8", TY_GGUF_TYPE_UINT8, arr_u8, 1, 3);
    check_num_arr(g, "a.i8", TY_GGUF_TYPE_INT8, arr_i8, 1, 3);
    check_num_arr(g, "a.u16", TY_GGUF_TYPE_UINT16, arr_u16, 2, 2);
    check_num_arr(g, "a.i16", TY_GGUF_TYPE_INT16, arr_i16, 2, 3);
    check_num_arr(g, "a.u32", TY_GGUF_TYPE_UINT32, arr_u32, 4, 1);
    check_num_arr(g, "a.i32", TY_GGUF_TYPE_INT32, arr_i32, 4, 2);
    check_num_arr(g, "a.f32", TY_GGUF_TYPE_FLOAT32, arr_f32, 4, 3);
    check_num_arr(g, "a.bool", TY_GGUF_TYPE_BOOL, arr_bool, 1, 3);
    check_num_arr(g, "a.u64", TY_GGUF_TYPE_UINT64, arr_u64, 8, 3);
    check_num_arr(g, "a.i64", TY_GGUF_TYPE_INT64, arr_i64, 8, 2);
    check_num_arr(g, "a.f64", TY_GGUF_TYPE_FLOAT64, arr_f64, 8, 2);
    check_num_arr(g, "a.empty", TY_GGUF_TYPE_INT32, NULL, 4, 0);

    CHECK_OK(ty__gguf_arr_int(g, "a.i8", 0, &iv));
    CHECK(iv == -128);
    CHECK_OK(ty__gguf_arr_int(g, "a.u16", 1, &iv));
    CHECK(iv == 65535);
    CHECK_OK(ty__gguf_arr_int(g, "a.i64", 0, &iv));
    CHECK(iv == INT64_MIN);
    CHECK_STATUS(ty__gguf_arr_int(g, "a.u64", 0, &iv), TY_ERR_FORMAT); /* UINT64_MAX does not fit */
    CHECK(msg_has("'a.u64' element 0"));
    CHECK_OK(ty__gguf_arr_int(g, "a.u64", 2, &iv));
    CHECK(iv == 42);
    CHECK_STATUS(ty__gguf_arr_int(g, "a.i8", 3, &iv), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__gguf_arr_int(g, "a.f32", 0, &iv), TY_ERR_FORMAT);
    CHECK_OK(ty__gguf_arr_float(g, "a.f32", 1, &dv));
    CHECK(dv == -0.25);
    CHECK_OK(ty__gguf_arr_float(g, "a.f64", 0, &dv));
    CHECK(dv == 3.141592653589793);
    CHECK_STATUS(ty__gguf_arr_float(g, "a.i32", 0, &dv), TY_ERR_FORMAT);

    enum ty_gguf_type et;
    uint64_t n;
    CHECK_OK(ty__gguf_get_arr(g, "a.str", &et, &n));
    CHECK(et == TY_GGUF_TYPE_STRING && n == 4);
    CHECK(ty__gguf_arr_data(g, "a.str") == NULL);
    for (uint64_t i = 0; i < 4; i++) {
        CHECK_OK(ty__gguf_arr_str(g, "a.str", i, &sv));
        CHECK_MSG(sv.len == strlen(strs[i]) && memcmp(sv.data, strs[i], sv.len) == 0, "a.str[%" PRIu64 "]", i);
    }
    CHECK_STATUS(ty__gguf_arr_str(g, "a.str", 4, &sv), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__gguf_arr_str(g, "a.u8", 0, &sv), TY_ERR_FORMAT);
    CHECK_OK(ty__gguf_arr_str(g, "a.bin", 0, &sv));
    CHECK(sv.len == sizeof bin_str && memcmp(sv.data, bin_str, sizeof bin_str) == 0);
    CHECK_OK(ty__gguf_arr_str(g, "a.bin", 1, &sv));
    CHECK(sv.len == 2 && memcmp(sv.data, "xy", 2) == 0);
    CHECK(ty__gguf_find_key(g, "a.bad") == -1);

    /* Tensors: order, shapes, sizes, alignment and the exact bytes written. */
    CHECK(ty__gguf_n_tensors(g) == (int64_t)N_ROUND);
    size_t expect_end = ty__gguf_data_offset(g);
    for (size_t i = 0; i < N_ROUND && (int64_t)i < ty__gguf_n_tensors(g); i++) {
        const struct tspec *s = &round_tensors[i];
        const struct ty_gguf_tensor *t = ty__gguf_tensor(g, (int64_t)i);
        CHECK(strcmp(t->name, s->name) == 0);
        CHECK(ty__gguf_find_tensor(g, s->name) == t);
        CHECK(t->type == s->type && t->n_dims == s->n_dims);
        for (int d = 0; d < 4; d++) CHECK(t->ne[d] == s->ne[d]);
        size_t nb = 0;
        ty__tensor_nbytes(s->type, s->n_dims, s->ne, s->name, &nb);
        CHECK(t->nbytes == nb);
        CHECK(t->offset % want_align == 0);
        CHECK((const uint8_t *)t->data == (const uint8_t *)ty__gguf_tensor(g, 0)->data + t->offset);
        uint8_t *want = malloc(nb);
        fill_bytes(want, nb, (uint32_t)i);
        CHECK_MSG(memcmp(t->data, want, nb) == 0, "tensor %s data differs", s->name);
        free(want);
        expect_end = ty__gguf_data_offset(g) + t->offset + (nb + want_align - 1) / want_align * want_align;
    }
    CHECK(ty__gguf_find_tensor(g, "token_embd") == NULL);
    CHECK(ty__gguf_file_size(g) == expect_end); /* the data section is padded to the alignment at the end too */
    ty__gguf_close(g);
}

static void test_roundtrip_default_alignment(void) {
    const char *path = ty_test_tmp("round32.gguf");
    write_round_file(path, 0);
    check_round_file(path, TY_GGUF_DEFAULT_ALIGNMENT);
}

static void test_roundtrip_custom_alignment(void) {
    const char *path = ty_test_tmp("round256.gguf");
    write_round_file(path, 256);
    check_round_file(path, 256);
    path = ty_test_tmp("round1.gguf");
    write_round_file(path, 1);
    check_round_file(path, 1);
}

/* Copies every entry and tensor of a reader into a new file and compares the two. */
static void test_copy_kv(void) {
    const char *src = ty_test_tmp("copy-src.gguf"), *dst = ty_test_tmp("copy-dst.gguf");
    write_round_file(src, 64);
    struct ty_gguf *a;
    CHECK_OK(ty__gguf_open(src, &a));
    if (!a) return;
    struct ty_gguf_writer *w;
    CHECK_OK(ty__gguf_writer_init(&w));
    for (int64_t i = 0; i < ty__gguf_n_kv(a); i++) CHECK_OK(ty__gguf_writer_copy_kv(w, a, i));
    CHECK_STATUS(ty__gguf_writer_copy_kv(w, a, ty__gguf_n_kv(a)), TY_ERR_INVALID_ARG);
    for (int64_t i = 0; i < ty__gguf_n_tensors(a); i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(a, i);
        CHECK_OK(ty__gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne));
    }
    CHECK_OK(ty__gguf_writer_begin(w, dst));
    for (int64_t i = 0; i < ty__gguf_n_tensors(a); i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(a, i);
        CHECK_OK(ty__gguf_writer_write_tensor(w, t->data, t->nbytes));
    }
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);
    /* Same entries, same layout: the files are byte-identical. */
    char *da = NULL, *db = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(ty__file_read(src, 1 << 20, &da, &na));
    CHECK_OK(ty__file_read(dst, 1 << 20, &db, &nb));
    CHECK(da && db && na == nb && memcmp(da, db, na) == 0);
    ty_free(da);
    ty_free(db);
    ty__gguf_close(a);
}

/* ==== A hand-built v2 file, with a nested array, copied into v3 ==== */

static size_t build_v2(struct ty_buf *b) {
    b_header(b, 2, 1, 4);
    size_t kv_start = b->len;
    b_kv_str(b, "general.architecture", "qwen2");
    b_kv_u32(b, "qwen2.block_count", 24);
    b_str(b, "nested"); /* [[1, 2], ["s"]] */
    b_u32(b, TY_GGUF_TYPE_ARRAY);
    b_u32(b, TY_GGUF_TYPE_ARRAY);
    b_u64(b, 2);
    b_u32(b, TY_GGUF_TYPE_UINT8);
    b_u64(b, 2);
    ty__buf_append(b, "\x01\x02", 2);
    b_u32(b, TY_GGUF_TYPE_STRING);
    b_u64(b, 1);
    b_str(b, "s");
    b_str(b, "tokens");
    b_u32(b, TY_GGUF_TYPE_ARRAY);
    b_u32(b, TY_GGUF_TYPE_STRING);
    b_u64(b, 2);
    b_str(b, "ab");
    b_str(b, "c");
    size_t kv_end = b->len;
    uint64_t ne[] = {4, 2};
    b_tensor(b, "w", 2, ne, TY_TYPE_F32, 0);
    b_pad(b, 32);
    for (int i = 0; i < 8; i++) {
        float f = (float)i;
        ty__buf_append(b, &f, 4);
    }
    (void)kv_start;
    return kv_end;
}

static void test_v2_file(void) {
    struct ty_buf b = {0};
    size_t kv_end = build_v2(&b);
    struct ty_gguf *g;
    CHECK_OK(ty__gguf_open_memory(b.data, b.len, &g));
    if (!g) {
        ty__buf_free(&b);
        return;
    }
    CHECK(ty__gguf_version(g) == 2);
    CHECK(ty__gguf_n_kv(g) == 4);
    uint64_t u;
    CHECK_OK(ty__gguf_get_uint(g, "qwen2.block_count", &u));
    CHECK(u == 24);
    enum ty_gguf_type et;
    uint64_t n;
    CHECK_OK(ty__gguf_get_arr(g, "nested", &et, &n));
    CHECK(et == TY_GGUF_TYPE_ARRAY && n == 2);
    CHECK(ty__gguf_arr_data(g, "nested") == NULL);
    int64_t iv;
    CHECK_STATUS(ty__gguf_arr_int(g, "nested", 0, &iv), TY_ERR_FORMAT);
    struct ty_gguf_str s;
    CHECK_OK(ty__gguf_arr_str(g, "tokens", 1, &s));
    CHECK(s.len == 1 && s.data[0] == 'c');
    const struct ty_gguf_tensor *t = ty__gguf_find_tensor(g, "w");
    CHECK(t && t->type == TY_TYPE_F32 && t->ne[0] == 4 && t->ne[1] == 2 && t->ne[2] == 1 && t->nbytes == 32);
    if (t) {
        float f;
        memcpy(&f, (const uint8_t *)t->data + 28, 4);
        CHECK(f == 7.0f);
    }

    /* copy_kv of every entry (nested array included) reproduces the metadata bytes exactly in a v3 file. */
    const char *path = ty_test_tmp("v2-copy.gguf");
    struct ty_gguf_writer *w;
    CHECK_OK(ty__gguf_writer_init(&w));
    for (int64_t i = 0; i < ty__gguf_n_kv(g); i++) CHECK_OK(ty__gguf_writer_copy_kv(w, g, i));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);
    char *d = NULL;
    size_t dn = 0;
    CHECK_OK(ty__file_read(path, 1 << 20, &d, &dn));
    CHECK(d && dn >= kv_end && memcmp(d + 24, b.data + 24, kv_end - 24) == 0);
    uint32_t ver;
    if (d) memcpy(&ver, d + 4, 4);
    CHECK(d && ver == 3);
    ty_free(d);
    struct ty_gguf *g3;
    CHECK_OK(ty__gguf_open(path, &g3));
    if (g3) {
        CHECK_OK(ty__gguf_get_arr(g3, "nested", &et, &n));
        CHECK(et == TY_GGUF_TYPE_ARRAY && n == 2);
        CHECK(ty__gguf_n_tensors(g3) == 0);
        ty__gguf_close(g3);
    }
    ty__gguf_close(g);
    ty__buf_free(&b);
}

/* ==== Malformed inputs ==== */

static const uint64_t ne8[] = {8};

/* A valid base: one kv, one F32 tensor [8], data present. */
static void base_file(struct ty_buf *b, uint32_t alignment_kv, uint32_t type, uint64_t offset, const uint64_t *ne,
                      uint32_t n_dims) {
    b_header(b, 3, 1, alignment_kv ? 2 : 1);
    b_kv_str(b, "general.architecture", "qwen3");
    if (alignment_kv) b_kv_u32(b, "general.alignment", alignment_kv);
    b_tensor(b, "blk.3.attn_q.weight", n_dims, ne, type, offset);
    b_pad(b, 32);
    b_zeros(b, 32);
}

static void m_bad_magic(struct ty_buf *b) {
    base_file(b, 0, 0, 0, ne8, 1);
    memcpy(b->data, "GGML", 4);
}
static void m_v1(struct ty_buf *b) {
    base_file(b, 0, 0, 0, ne8, 1);
    b->data[4] = 1;
}
static void m_v4(struct ty_buf *b) {
    base_file(b, 0, 0, 0, ne8, 1);
    b->data[4] = 4;
}
static void m_big_endian(struct ty_buf *b) {
    base_file(b, 0, 0, 0, ne8, 1);
    uint32_t v = 0x03000000;
    memcpy(b->data + 4, &v, 4);
}
static void m_huge_key_len(struct ty_buf *b) {
    b_header(b, 3, 0, 1);
    b_u64(b, UINT64_MAX - 2);
    ty__buf_append(b, "general.architecture", 20);
}
static void m_huge_str_value(struct ty_buf *b) {
    b_header(b, 3, 0, 1);
    b_str(b, "general.name");
    b_u32(b, TY_GGUF_TYPE_STRING);
    b_u64(b, (uint64_t)1 << 62);
    b_zeros(b, 16);
}
static void m_kv_count_huge(struct ty_buf *b) {
    b_header(b, 3, 0, (uint64_t)1 << 60);
    b_kv_u32(b, "a", 1);
}
static void m_tensor_count_overflow(struct ty_buf *b) {
    b_header(b, 3, 0x0AAAAAAAAAAAAAABull, 0); /* times a 24-byte struct wraps to a small number */
    b_tensor(b, "w", 1, ne8, 0, 0);
}
static void m_offset_past_eof(struct ty_buf *b) {
    base_file(b, 0, 0, 4096, ne8, 1);
}
static void m_offset_overflow(struct ty_buf *b) {
    base_file(b, 0, 0, UINT64_MAX - 31, ne8, 1);
}
static void m_valid(struct ty_buf *b) {
    base_file(b, 0, 0, 0, ne8, 1);
}
static void m_kv_invalid_type(struct ty_buf *b) {
    b_header(b, 3, 0, 1);
    b_str(b, "a.b");
    b_u32(b, 13);
    b_u64(b, 0);
}
static void m_arr_huge(struct ty_buf *b) {
    b_header(b, 3, 0, 1);
    b_str(b, "a.b");
    b_u32(b, TY_GGUF_TYPE_ARRAY);
    b_u32(b, TY_GGUF_TYPE_UINT64);
    b_u64(b, (uint64_t)1 << 61); /* x 8 bytes wraps to 0 */
    b_zeros(b, 16);
}
static void m_arr_nested_deep(struct ty_buf *b) {
    b_header(b, 3, 0, 1);
    b_str(b, "deep");
    b_u32(b, TY_GGUF_TYPE_ARRAY);
    for (int i = 0; i < 10; i++) {
        b_u32(b, TY_GGUF_TYPE_ARRAY);
        b_u64(b, 1);
    }
    b_u32(b, TY_GGUF_TYPE_UINT8);
    b_u64(b, 0);
}
static void m_n_dims_5(struct ty_buf *b) {
    uint64_t ne[] = {8, 1, 1, 1, 1};
    base_file(b, 0, 0, 0, ne, 5);
}
static void m_ne_negative(struct ty_buf *b) {
    uint64_t ne[] = {8, (uint64_t)-4};
    base_file(b, 0, 0, 0, ne, 2);
}
static void m_ne_zero(struct ty_buf *b) {
    uint64_t ne[] = {8, 0};
    base_file(b, 0, 0, 0, ne, 2);
}
static void m_ne_product_overflow(struct ty_buf *b) {
    uint64_t ne[] = {(uint64_t)1 << 40, (uint64_t)1 << 40};
    base_file(b, 0, 0, 0, ne, 2);
}
static void m_nbytes_overflow(struct ty_buf *b) {
    uint64_t ne[] = {(uint64_t)1 << 61, 2}; /* 2^62 elements fit, 2^64 bytes do not */
    base_file(b, 0, 0, 0, ne, 2);
}
static void m_unknown_type(struct ty_buf *b) {
    base_file(b, 0, 99, 0, ne8, 1);
}
static void m_unsupported_type(struct ty_buf *b) {
    base_file(b, 0, 16, 0, ne8, 1);
} /* IQ2_XXS */
static void m_row_not_block(struct ty_buf *b) {
    uint64_t ne[] = {16};
    base_file(b, 0, TY_TYPE_Q8_0, 0, ne, 1);
}
static void m_dup_tensor(struct ty_buf *b) {
    b_header(b, 3, 2, 0);
    b_tensor(b, "blk.0.ffn_up.weight", 1, ne8, 0, 0);
    b_tensor(b, "blk.0.ffn_up.weight", 1, ne8, 0, 32);
    b_pad(b, 32);
    b_zeros(b, 64);
}
static void m_dup_key(struct ty_buf *b) {
    b_header(b, 3, 0, 2);
    b_kv_u32(b, "qwen3.block_count", 2);
    b_kv_u32(b, "qwen3.block_count", 3);
}
static void m_misaligned(struct ty_buf *b) {
    base_file(b, 0, 0, 4, ne8, 1);
}
static void m_name_ctrl(struct ty_buf *b) {
    b_header(b, 3, 1, 0);
    b_tensor(b, "bad\x1b[2Jname", 1, ne8, 0, 0);
    b_pad(b, 32);
    b_zeros(b, 32);
}

struct malformed {
    const char *what;
    void (*build)(struct ty_buf *b);
    enum ty_status want;
    const char *needle; /* the message must contain this */
};

static void m_align_48(struct ty_buf *b) {
    base_file(b, 48, 0, 0, ne8, 1);
}
static void m_align_huge(struct ty_buf *b) {
    base_file(b, 1u << 31, 0, 0, ne8, 1);
}
static void m_align_zero_kv(struct ty_buf *b) {
    b_header(b, 3, 1, 1);
    b_kv_u32(b, "general.alignment", 0);
    b_tensor(b, "w", 1, ne8, 0, 0);
    b_pad(b, 32);
    b_zeros(b, 32);
}

static const struct malformed malformed[] = {
    {"bad magic", m_bad_magic, TY_ERR_FORMAT, "GGUF"},
    {"version 1", m_v1, TY_ERR_UNSUPPORTED, "version 1"},
    {"version 4", m_v4, TY_ERR_UNSUPPORTED, "version 4"},
    {"big-endian", m_big_endian, TY_ERR_UNSUPPORTED, "big-endian"},
    {"huge key length", m_huge_key_len, TY_ERR_FORMAT, "key length"},
    {"huge string value", m_huge_str_value, TY_ERR_FORMAT, "'general.name': string value length"},
    {"kv count huge", m_kv_count_huge, TY_ERR_FORMAT, "metadata count"},
    {"tensor count overflow", m_tensor_count_overflow, TY_ERR_FORMAT, "tensor count"},
    {"offset past EOF", m_offset_past_eof, TY_ERR_FORMAT, "tensor blk.3.attn_q.weight: data ["},
    {"offset overflow", m_offset_overflow, TY_ERR_FORMAT, "tensor blk.3.attn_q.weight: data offset"},
    {"alignment 0", m_align_zero_kv, TY_ERR_FORMAT, "general.alignment"},
    {"alignment 48", m_align_48, TY_ERR_FORMAT, "general.alignment' = 48"},
    {"alignment 2^31", m_align_huge, TY_ERR_FORMAT, "power of two"},
    {"invalid value type", m_kv_invalid_type, TY_ERR_FORMAT, "'a.b': invalid value type 13"},
    {"array count huge", m_arr_huge, TY_ERR_FORMAT, "'a.b': array of 2305843009213693952"},
    {"arrays nested deep", m_arr_nested_deep, TY_ERR_FORMAT, "nested"},
    {"n_dims 5", m_n_dims_5, TY_ERR_FORMAT, "blk.3.attn_q.weight: 5 dimensions"},
    {"ne negative", m_ne_negative, TY_ERR_FORMAT, "dimension 1 is negative"},
    {"ne zero", m_ne_zero, TY_ERR_FORMAT, "dimension 1 is 0"},
    {"element product overflow", m_ne_product_overflow, TY_ERR_FORMAT, "overflows"},
    {"byte size overflow", m_nbytes_overflow, TY_ERR_FORMAT, "blk.3.attn_q.weight"},
    {"unknown type id", m_unknown_type, TY_ERR_FORMAT, "type id 99; supported types: "},
    {"unsupported type id", m_unsupported_type, TY_ERR_UNSUPPORTED, "type id 16 is not supported; supported types"},
    {"row not a block multiple", m_row_not_block, TY_ERR_FORMAT, "Q8_0 block size 32"},
    {"duplicate tensor", m_dup_tensor, TY_ERR_FORMAT, "tensor blk.0.ffn_up.weight appears twice"},
    {"duplicate key", m_dup_key, TY_ERR_FORMAT, "'qwen3.block_count' appears twice"},
    {"misaligned offset", m_misaligned, TY_ERR_FORMAT, "not a multiple of the alignment 32"},
    {"control bytes in a name", m_name_ctrl, TY_ERR_FORMAT, "control byte"},
};

static void test_malformed(void) {
    /* The base files the table mutates are valid as they stand. */
    struct ty_buf b = {0};
    m_valid(&b);
    struct ty_gguf *g;
    CHECK_OK(open_exact(b.data, b.len, &g));
    ty__buf_free(&b);

    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        const struct malformed *m = &malformed[i];
        struct ty_buf mb = {0};
        m->build(&mb);
        CHECK(!mb.oom);
        enum ty_status st = open_exact(mb.data, mb.len, &g);
        CHECK_MSG(st == m->want, "%s: got %s (%s)", m->what, ty_status_str(st), ty_last_error());
        CHECK_MSG(msg_has(m->needle), "%s: message '%s' lacks '%s'", m->what, ty_last_error(), m->needle);
        ty__buf_free(&mb);
    }
    CHECK_STATUS(ty__gguf_open_memory(NULL, 0, &g), TY_ERR_FORMAT);
    CHECK(g == NULL);
    CHECK_STATUS(ty__gguf_open(ty_test_tmp("does-not-exist.gguf"), &g), TY_ERR_IO);
    CHECK(msg_has("does-not-exist.gguf"));
}

/* Every proper prefix of a valid file fails with TY_ERR_FORMAT and a message; the whole file opens. The last tensor
 * fills its aligned slot exactly, so the file has no trailing padding that a truncation could remove harmlessly. */
static void test_truncation(void) {
    const char *path = ty_test_tmp("trunc.gguf");
    struct ty_gguf_writer *w;
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_set_str(w, "general.architecture", "qwen3"));
    CHECK_OK(ty__gguf_writer_set_u32(w, "qwen3.block_count", 1));
    const char *toks[] = {"a", "bc", ""};
    CHECK_OK(ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3));
    float sc[] = {1, 2, 3};
    CHECK_OK(ty__gguf_writer_set_arr(w, "tokenizer.ggml.scores", TY_GGUF_TYPE_FLOAT32, sc, 3));
    int64_t ne_q[] = {32, 2}, ne_f[] = {8};
    CHECK_OK(ty__gguf_writer_add_tensor(w, "q", TY_TYPE_Q8_0, 2, ne_q));
    CHECK_OK(ty__gguf_writer_add_tensor(w, "n", TY_TYPE_F32, 1, ne_f));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    uint8_t q[68], f[32];
    fill_bytes(q, sizeof q, 1);
    fill_bytes(f, sizeof f, 2);
    CHECK_OK(ty__gguf_writer_write_tensor(w, q, sizeof q));
    CHECK_OK(ty__gguf_writer_write_tensor(w, f, sizeof f));
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);

    char *data = NULL;
    size_t size = 0;
    CHECK_OK(ty__file_read(path, 1 << 20, &data, &size));
    if (!data) return;
    int bad = 0;
    for (size_t n = 0; n < size; n++) {
        struct ty_gguf *g;
        ty__error(TY_OK, "%s", "");
        enum ty_status st = open_exact(data, n, &g);
        if (st != TY_ERR_FORMAT || !ty_last_error()[0]) {
            if (bad++ < 5)
                CHECK_MSG(0, "prefix of %zu/%zu bytes: %s (%s)", n, size, ty_status_str(st), ty_last_error());
        }
    }
    CHECK(bad == 0);
    struct ty_gguf *g;
    CHECK_OK(open_exact(data, size, &g));
    ty_free(data);
}

/* ==== Regression corpus ==== */

static void test_cve_corpus(void) {
    const char *dir = ty_test_src("tests/fuzz/corpus/gguf");
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "cannot open %s", dir);
    if (!d) return;
    int n_cve = 0, n_seed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        bool cve = strncmp(e->d_name, "cve-", 4) == 0, seed = strncmp(e->d_name, "seed-", 5) == 0;
        if (!cve && !seed) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct ty_gguf *g = NULL;
        ty__error(TY_OK, "%s", "");
        enum ty_status st = ty__gguf_open(path, &g);
        if (cve) {
            n_cve++;
            CHECK_MSG(st == TY_ERR_FORMAT, "%s: got %s (%s)", e->d_name, ty_status_str(st), ty_last_error());
            CHECK_MSG(strlen(ty_last_error()) > strlen(path) + 10, "%s: empty message", e->d_name);
        } else {
            n_seed++;
            CHECK_MSG(st == TY_OK, "%s: %s", e->d_name, ty_last_error());
        }
        ty__gguf_close(g);
    }
    closedir(d);
    CHECK(n_cve >= 20);
    CHECK(n_seed >= 2);
}

/* ==== Writer errors ==== */

static void make_old_file(const char *path) {
    FILE *f = fopen(path, "wb");
    fputs("old contents", f);
    fclose(f);
}

static bool is_old_file(const char *path) {
    char *d = NULL;
    size_t n = 0;
    bool ok = ty__file_read(path, 100, &d, &n) == TY_OK && n == 12 && memcmp(d, "old contents", 12) == 0;
    ty_free(d);
    return ok;
}

static void test_writer_errors(void) {
    const char *path = ty_test_tmp("werr.gguf");
    int64_t ne[] = {32, 2}, ne_bad[] = {33, 2}, ne_neg[] = {32, -1}, ne5[] = {32, 1, 1, 1, 1};
    struct ty_gguf_writer *w;

    /* Declaration errors. */
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_add_tensor(w, "a", TY_TYPE_Q8_0, 2, ne));
    CHECK_STATUS(ty__gguf_writer_add_tensor(w, "a", TY_TYPE_F32, 2, ne), TY_ERR_INVALID_ARG);
    CHECK(msg_has("a declared twice"));
    CHECK_STATUS(ty__gguf_writer_add_tensor(w, "b", TY_TYPE_Q8_0, 2, ne_bad), TY_ERR_INVALID_ARG);
    CHECK(msg_has("block size"));
    CHECK_STATUS(ty__gguf_writer_add_tensor(w, "c", TY_TYPE_F32, 2, ne_neg), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__gguf_writer_add_tensor(w, "d", TY_TYPE_F32, 5, ne5), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__gguf_writer_add_tensor(w, "e", TY_TYPE_Q2_K, 2, ne), TY_ERR_UNSUPPORTED);
    CHECK_STATUS(ty__gguf_writer_add_tensor(w, "", TY_TYPE_F32, 2, ne), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__gguf_writer_set_u32(w, "", 1), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__gguf_writer_set_u32(w, "bad\nkey", 1), TY_ERR_INVALID_ARG);
    CHECK_OK(ty__gguf_writer_set_u32(w, "general.alignment", 24));
    CHECK_STATUS(ty__gguf_writer_begin(w, path), TY_ERR_INVALID_ARG);
    CHECK(msg_has("general.alignment"));
    CHECK_OK(ty__gguf_writer_set_u32(w, "general.alignment", 16)); /* fixable before writing starts */
    ty__gguf_writer_free(w);

    /* Wrong data size: the temp file goes, the old file stays. */
    make_old_file(path);
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_add_tensor(w, "a", TY_TYPE_Q8_0, 2, ne));
    CHECK_OK(ty__gguf_writer_add_tensor(w, "b", TY_TYPE_F32, 2, ne));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    CHECK(file_exists(tmp_name_of(path)));
    CHECK_STATUS(ty__gguf_writer_set_u32(w, "late", 1), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__gguf_writer_add_tensor(w, "late", TY_TYPE_F32, 2, ne), TY_ERR_INVALID_ARG);
    uint8_t buf[256] = {0};
    CHECK_STATUS(ty__gguf_writer_write_tensor(w, buf, 67), TY_ERR_INVALID_ARG);
    CHECK(msg_has("tensor a: got 67 bytes of data, expected 68"));
    CHECK(!file_exists(tmp_name_of(path)));
    CHECK(is_old_file(path));
    CHECK_STATUS(ty__gguf_writer_write_tensor(w, buf, 68), TY_ERR_INVALID_ARG);
    CHECK_STATUS(ty__gguf_writer_finish(w), TY_ERR_INVALID_ARG);
    CHECK(is_old_file(path));
    ty__gguf_writer_free(w);

    /* Finishing early. */
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_add_tensor(w, "a", TY_TYPE_Q8_0, 2, ne));
    CHECK_OK(ty__gguf_writer_add_tensor(w, "b", TY_TYPE_F32, 2, ne));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    CHECK_OK(ty__gguf_writer_write_tensor(w, buf, 68));
    CHECK_STATUS(ty__gguf_writer_finish(w), TY_ERR_INVALID_ARG);
    CHECK(msg_has("1 of 2 tensors"));
    CHECK(!file_exists(tmp_name_of(path)));
    CHECK(is_old_file(path));
    ty__gguf_writer_free(w);

    /* Too many tensors written. */
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_add_tensor(w, "a", TY_TYPE_Q8_0, 2, ne));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    CHECK_OK(ty__gguf_writer_write_tensor(w, buf, 68));
    CHECK_STATUS(ty__gguf_writer_write_tensor(w, buf, 68), TY_ERR_INVALID_ARG);
    CHECK(!file_exists(tmp_name_of(path)));
    ty__gguf_writer_free(w);

    /* Freed in the middle of writing. */
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_add_tensor(w, "a", TY_TYPE_Q8_0, 2, ne));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    ty__gguf_writer_free(w);
    CHECK(!file_exists(tmp_name_of(path)));
    CHECK(is_old_file(path));

    /* A directory that does not exist. */
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_STATUS(ty__gguf_writer_begin(w, ty_test_tmp("no-such-dir/x.gguf")), TY_ERR_IO);
    CHECK(msg_has("no-such-dir"));
    ty__gguf_writer_free(w);
    ty__gguf_writer_free(NULL);
    ty__gguf_close(NULL);
}

/* ==== Allocation failure ==== */

static void test_alloc_failure_open(void) {
    const char *path = ty_test_tmp("alloc.gguf");
    write_round_file(path, 0);
    size_t base = ty_mem_allocated();
    int failures = 0;
    for (long n = 1; n < 1000; n++) {
        struct ty_gguf *g = NULL;
        ty__alloc_fail_after(n);
        enum ty_status st = ty__gguf_open(path, &g);
        ty__alloc_fail_after(0);
        if (st == TY_OK) {
            ty__gguf_close(g);
            break;
        }
        failures++;
        CHECK_MSG(st == TY_ERR_NO_MEMORY, "fail at %ld: %s (%s)", n, ty_status_str(st), ty_last_error());
        CHECK(g == NULL);
        CHECK_MSG(ty_mem_allocated() == base, "fail at %ld: %zu bytes leaked", n, ty_mem_allocated() - base);
    }
    CHECK(failures >= 4); /* reader, tables, names, indexes and string offsets all allocate */
    CHECK(ty_mem_allocated() == base);
}

static void test_alloc_failure_write(void) {
    const char *path = ty_test_tmp("alloc-w.gguf");
    size_t base = ty_mem_allocated();
    int failures = 0;
    const char *toks[] = {"x", "yy"};
    int64_t ne[] = {32, 1};
    uint8_t q[34] = {0};
    for (long n = 1; n < 1000; n++) {
        remove(path);
        ty__alloc_fail_after(n);
        struct ty_gguf_writer *w = NULL;
        enum ty_status st = ty__gguf_writer_init(&w);
        if (st == TY_OK) st = ty__gguf_writer_set_str(w, "general.architecture", "qwen3");
        if (st == TY_OK) st = ty__gguf_writer_set_arr_str(w, "tokens", toks, NULL, 2);
        if (st == TY_OK) st = ty__gguf_writer_add_tensor(w, "t", TY_TYPE_Q8_0, 2, ne);
        if (st == TY_OK) st = ty__gguf_writer_begin(w, path);
        if (st == TY_OK) st = ty__gguf_writer_write_tensor(w, q, sizeof q);
        if (st == TY_OK) st = ty__gguf_writer_finish(w);
        ty__alloc_fail_after(0);
        ty__gguf_writer_free(w);
        CHECK(!file_exists(tmp_name_of(path)));
        CHECK_MSG(ty_mem_allocated() == base, "fail at %ld: %zu bytes leaked", n, ty_mem_allocated() - base);
        if (st == TY_OK) break;
        failures++;
        CHECK_MSG(st == TY_ERR_NO_MEMORY, "fail at %ld: %s (%s)", n, ty_status_str(st), ty_last_error());
        CHECK(!file_exists(path));
    }
    CHECK(failures >= 4);
    CHECK(file_exists(path));
}

/* ==== A full-size vocabulary ==== */

static void test_large_vocab(void) {
    enum { N = 151936 };
    const char *path = ty_test_tmp("vocab.gguf");
    char *pool = malloc((size_t)N * 16);
    const char **toks = malloc(N * sizeof *toks);
    int32_t *types = malloc(N * sizeof *types);
    for (int i = 0; i < N; i++) {
        toks[i] = pool + (size_t)i * 16;
        snprintf(pool + (size_t)i * 16, 16, "t%d", i);
        types[i] = i % 3;
    }
    struct ty_gguf_writer *w;
    CHECK_OK(ty__gguf_writer_init(&w));
    CHECK_OK(ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, N));
    CHECK_OK(ty__gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", toks, NULL, N - 1000));
    CHECK_OK(ty__gguf_writer_set_arr(w, "tokenizer.ggml.token_type", TY_GGUF_TYPE_INT32, types, N));
    CHECK_OK(ty__gguf_writer_begin(w, path));
    CHECK_OK(ty__gguf_writer_finish(w));
    ty__gguf_writer_free(w);

    size_t base = ty_mem_allocated();
    struct ty_gguf *g;
    CHECK_OK(ty__gguf_open(path, &g));
    if (g) {
        /* One offset per string and small fixed tables: no per-string allocation, no copy of the values. */
        size_t used = ty_mem_allocated() - base;
        CHECK_MSG(used < (size_t)(2 * N) * sizeof(size_t) + 65536, "open holds %zu bytes", used);
        struct ty_gguf_str s;
        bool all = true;
        for (uint64_t i = 0; i < N; i++) {
            if (ty__gguf_arr_str(g, "tokenizer.ggml.tokens", i, &s) != TY_OK || s.len != strlen(toks[i]) ||
                memcmp(s.data, toks[i], s.len) != 0)
                all = false;
        }
        CHECK(all);
        CHECK_OK(ty__gguf_arr_str(g, "tokenizer.ggml.merges", N - 1001, &s));
        CHECK(s.len == strlen(toks[N - 1001]) && memcmp(s.data, toks[N - 1001], s.len) == 0);
        int64_t v;
        CHECK_OK(ty__gguf_arr_int(g, "tokenizer.ggml.token_type", N - 1, &v));
        CHECK(v == (N - 1) % 3);
        ty__gguf_close(g);
    }
    CHECK(ty_mem_allocated() == base);
    free(pool);
    free(toks);
    free(types);
}

void ty_tests(void) {
    TY_RUN(test_roundtrip_default_alignment);
    TY_RUN(test_roundtrip_custom_alignment);
    TY_RUN(test_copy_kv);
    TY_RUN(test_v2_file);
    TY_RUN(test_malformed);
    TY_RUN(test_truncation);
    TY_RUN(test_cve_corpus);
    TY_RUN(test_writer_errors);
    TY_RUN(test_alloc_failure_open);
    TY_RUN(test_alloc_failure_write);
    TY_RUN(test_large_vocab);
}
