/*
 * quant.h - weight types: block layouts and the reference (scalar, bit-exact) conversions to and from f32 for F32,
 * F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, plus the Q8_K activation blocks used by dot products.
 *
 * Dequantisation follows each format's definition exactly (it is checked bit for bit against an independent
 * dequantiser). Quantisation picks scales by minimising the weighted squared error; it is our own search and need not
 * produce the same bytes as other tools, only a valid and accurate block.
 */
#ifndef TY_QUANT_H
#define TY_QUANT_H

#include "base/base.h"

struct ty_type_traits {
    const char *name;
    int64_t block_size; /* elements per block (1 for plain types) */
    size_t type_size;   /* bytes per block */
    bool is_quantized;
    /* Converts n elements (a multiple of block_size). NULL when the direction is not supported. */
    void (*to_float)(const void *src, float *dst, int64_t n);
    void (*from_float)(const float *src, void *dst, int64_t n);
};

/* Traits of a type, or NULL if Tongyun cannot hold weights of that type. */
const struct ty_type_traits *ty__type_traits(enum ty_type type);
/* Comma-separated list of supported weight types, for error messages. */
const char *ty__supported_types(void);
/* Parses a type name ("q4_k", "Q8_0", "bf16"; case-insensitive); false when unknown. */
bool ty__type_from_name(const char *name, enum ty_type *out);

/* Bytes of one row of n elements; TY_ERR_FORMAT when n is not a multiple of the block size. */
enum ty_status ty__row_size(enum ty_type type, int64_t n, size_t *out);
/* Bytes of a tensor, with overflow checks on every product; errors name `what` (e.g. the tensor name). */
enum ty_status ty__tensor_nbytes(enum ty_type type, int n_dims, const int64_t *ne, const char *what, size_t *out);

#define TY_QK4_0        32
#define TY_QK8_0        32
#define TY_QK_K         256
#define TY_K_SCALE_SIZE 12

/* Block layouts (byte-compatible with the GGUF definitions). */
struct ty_block_q4_0 {
    ty_f16 d;
    uint8_t qs[TY_QK4_0 / 2];
};
struct ty_block_q4_1 {
    ty_f16 d, m;
    uint8_t qs[TY_QK4_0 / 2];
};
struct ty_block_q5_0 {
    ty_f16 d;
    uint8_t qh[4];
    uint8_t qs[TY_QK4_0 / 2];
};
struct ty_block_q5_1 {
    ty_f16 d, m;
    uint8_t qh[4];
    uint8_t qs[TY_QK4_0 / 2];
};
struct ty_block_q8_0 {
    ty_f16 d;
    int8_t qs[TY_QK8_0];
};
struct ty_block_q4_K {
    ty_f16 d, dmin;
    uint8_t scales[TY_K_SCALE_SIZE];
    uint8_t qs[TY_QK_K / 2];
};
struct ty_block_q5_K {
    ty_f16 d, dmin;
    uint8_t scales[TY_K_SCALE_SIZE];
    uint8_t qh[TY_QK_K / 8];
    uint8_t qs[TY_QK_K / 2];
};
struct ty_block_q6_K {
    uint8_t ql[TY_QK_K / 2];
    uint8_t qh[TY_QK_K / 4];
    int8_t scales[TY_QK_K / 16];
    ty_f16 d;
};
struct ty_block_q8_K {
    float d;
    int8_t qs[TY_QK_K];
    int16_t bsums[TY_QK_K / 16];
};

_Static_assert(sizeof(struct ty_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(struct ty_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(struct ty_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(struct ty_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(struct ty_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(struct ty_block_q4_K) == 144, "q4_K block");
_Static_assert(sizeof(struct ty_block_q5_K) == 176, "q5_K block");
_Static_assert(sizeof(struct ty_block_q6_K) == 210, "q6_K block");

#endif /* TY_QUANT_H */
