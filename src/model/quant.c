/*
 * quant.c - the weight-type table (names, block sizes, byte sizes), size arithmetic with overflow checks, and the
 * plain-type conversions (F32, F16, BF16). The quantised block formats live in quant-blocks.c (Q4_0 .. Q8_0) and
 * quant-k.c (the 256-element "K" super-blocks), both built on the scale searches of quant-search.c.
 */
#include "model/quant.h"
#include "model/quant-impl.h"

#include <inttypes.h>
#include <strings.h>

/* ==== Plain types ==== */

static void f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
static void f32_from_float(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        ty_f16 h;
        memcpy(&h, p + 2 * i, 2); /* the source may be unaligned inside a mapped file */
        dst[i] = ty__f16_to_f32(h);
    }
}
static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        ty_f16 h = ty__f32_to_f16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        ty_bf16 h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = ty__bf16_to_f32(h);
    }
}
static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        ty_bf16 h = ty__f32_to_bf16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

/* ==== The type table ==== */

/* Indexed by the GGUF type id. Types absent here (Q8_1, Q2_K, Q3_K, integer types, F64) are known by name but hold
 * no weights in Tongyun. Q8_K is an activation format: listed so dot products can use it, but never offered as a
 * weight type to the user. */
static const struct ty_type_traits traits[TY_TYPE_COUNT] = {
    [TY_TYPE_F32] = {"F32", 1, 4, false, f32_to_float, f32_from_float},
    [TY_TYPE_F16] = {"F16", 1, 2, false, f16_to_float, f16_from_float},
    [TY_TYPE_BF16] = {"BF16", 1, 2, false, bf16_to_float, bf16_from_float},
    [TY_TYPE_Q4_0] = {"Q4_0", TY_QK4_0, sizeof(struct ty_block_q4_0), true, ty__q4_0_to_float, ty__q4_0_from_float},
    [TY_TYPE_Q4_1] = {"Q4_1", TY_QK4_0, sizeof(struct ty_block_q4_1), true, ty__q4_1_to_float, ty__q4_1_from_float},
    [TY_TYPE_Q5_0] = {"Q5_0", TY_QK4_0, sizeof(struct ty_block_q5_0), true, ty__q5_0_to_float, ty__q5_0_from_float},
    [TY_TYPE_Q5_1] = {"Q5_1", TY_QK4_0, sizeof(struct ty_block_q5_1), true, ty__q5_1_to_float, ty__q5_1_from_float},
    [TY_TYPE_Q8_0] = {"Q8_0", TY_QK8_0, sizeof(struct ty_block_q8_0), true, ty__q8_0_to_float, ty__q8_0_from_float},
    [TY_TYPE_Q4_K] = {"Q4_K", TY_QK_K, sizeof(struct ty_block_q4_K), true, ty__q4_K_to_float, ty__q4_K_from_float},
    [TY_TYPE_Q5_K] = {"Q5_K", TY_QK_K, sizeof(struct ty_block_q5_K), true, ty__q5_K_to_float, ty__q5_K_from_float},
    [TY_TYPE_Q6_K] = {"Q6_K", TY_QK_K, sizeof(struct ty_block_q6_K), true, ty__q6_K_to_float, ty__q6_K_from_float},
    [TY_TYPE_Q8_K] = {"Q8_K", TY_QK_K, sizeof(struct ty_block_q8_K), true, ty__q8_K_to_float, ty__q8_K_from_float},
};

/* Names of every GGUF type id, including those Tongyun cannot hold, so messages can say what a file contains. */
static const char *const type_names[TY_TYPE_COUNT] = {
    [TY_TYPE_F32] = "F32",   [TY_TYPE_F16] = "F16",   [TY_TYPE_Q4_0] = "Q4_0", [TY_TYPE_Q4_1] = "Q4_1",
    [TY_TYPE_Q5_0] = "Q5_0", [TY_TYPE_Q5_1] = "Q5_1", [TY_TYPE_Q8_0] = "Q8_0", [TY_TYPE_Q8_1] = "Q8_1",
    [TY_TYPE_Q2_K] = "Q2_K", [TY_TYPE_Q3_K] = "Q3_K", [TY_TYPE_Q4_K] = "Q4_K", [TY_TYPE_Q5_K] = "Q5_K",
    [TY_TYPE_Q6_K] = "Q6_K", [TY_TYPE_Q8_K] = "Q8_K", [TY_TYPE_I8] = "I8",     [TY_TYPE_I16] = "I16",
    [TY_TYPE_I32] = "I32",   [TY_TYPE_I64] = "I64",   [TY_TYPE_F64] = "F64",   [TY_TYPE_BF16] = "BF16",
};

const char *ty_type_name(enum ty_type type) {
    if ((unsigned)type >= TY_TYPE_COUNT || !type_names[type]) return "unknown";
    return type_names[type];
}

const struct ty_type_traits *ty__type_traits(enum ty_type type) {
    if ((unsigned)type >= TY_TYPE_COUNT || !traits[type].name) return NULL;
    return &traits[type];
}

/* The weight types a user may ask for (Q8_K is internal). A literal, so no lazily built (racy) buffer; the tests check
 * that every name in it has traits. */
const char *ty__supported_types(void) {
    return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K";
}

bool ty__type_from_name(const char *name, enum ty_type *out) {
    if (!name) return false;
    for (int t = 0; t < TY_TYPE_COUNT; t++) {
        if (!traits[t].name || t == TY_TYPE_Q8_K) continue; /* Q8_K is for activations, never a weight type */
        if (!strcasecmp(traits[t].name, name)) {
            *out = (enum ty_type)t;
            return true;
        }
    }
    return false;
}

/* ==== Sizes ==== */

enum ty_status ty__row_size(enum ty_type type, int64_t n, size_t *out) {
    const struct ty_type_traits *tt = ty__type_traits(type);
    if (!tt)
        return ty__error(TY_ERR_UNSUPPORTED, "type %s (%d) is not supported; supported: %s", ty_type_name(type),
                         (int)type, ty__supported_types());
    if (n < 0) return ty__error(TY_ERR_FORMAT, "negative row length %" PRId64, n);
    if (n % tt->block_size != 0)
        return ty__error(TY_ERR_FORMAT, "row of %" PRId64 " elements is not a multiple of the %s block size %" PRId64,
                         n, tt->name, tt->block_size);
    size_t bytes;
    if (ty__mul_overflow((size_t)(n / tt->block_size), tt->type_size, &bytes))
        return ty__error(TY_ERR_FORMAT, "row of %" PRId64 " %s elements overflows the address space", n, tt->name);
    *out = bytes;
    return TY_OK;
}

enum ty_status ty__tensor_nbytes(enum ty_type type, int n_dims, const int64_t *ne, const char *what, size_t *out) {
    if (!what) what = "tensor";
    if (n_dims < 1 || n_dims > 4) return ty__error(TY_ERR_FORMAT, "%s: %d dimensions (want 1 to 4)", what, n_dims);
    size_t bytes;
    enum ty_status st = ty__row_size(type, ne[0], &bytes);
    if (st != TY_OK) return ty__error_prefix(st, "%s", what);
    for (int i = 1; i < n_dims; i++) {
        if (ne[i] < 0) return ty__error(TY_ERR_FORMAT, "%s: dimension %d is negative (%" PRId64 ")", what, i, ne[i]);
        if (ty__mul_overflow(bytes, (size_t)ne[i], &bytes))
            return ty__error(TY_ERR_FORMAT, "%s: size overflows (dimension %d = %" PRId64 "); the file is corrupt",
                             what, i, ne[i]);
    }
    *out = bytes;
    return TY_OK;
}
