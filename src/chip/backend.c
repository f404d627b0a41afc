/*
 * backend.c - what every backend shares: tensor views, buffer management around the iface's entries (with the
 * fallback for backends that cannot wrap host memory), and the RoPE frequency table, computed once on the host so
 * that every backend rotates by exactly the same angles.
 */
#include "chip/backend.h"
#include "model/quant.h"

#include <math.h>

/* ==== Tensors ==== */

void ty__tensor_init(struct ty_tensor *t, struct ty_buffer *buf, size_t offs, enum ty_type type, int64_t ne0,
                     int64_t ne1, int64_t ne2, int64_t ne3) {
    const struct ty_type_traits *tr = ty__type_traits(type);
    TY_ASSERT(tr || type == TY_TYPE_I32 || type == TY_TYPE_I8);
    size_t type_size = tr ? tr->type_size : type == TY_TYPE_I32 ? sizeof(int32_t) : 1;
    int64_t block = tr ? tr->block_size : 1;
    TY_ASSERT(ne0 % block == 0);
    memset(t, 0, sizeof *t);
    t->type = type;
    t->buf = buf;
    t->offs = offs;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->ne[3] = ne3;
    t->nb[0] = type_size;
    t->nb[1] = type_size * (size_t)(ne0 / block);
    t->nb[2] = t->nb[1] * (size_t)ne1;
    t->nb[3] = t->nb[2] * (size_t)ne2;
}

int64_t ty__tensor_nelements(const struct ty_tensor *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

int64_t ty__tensor_nrows(const struct ty_tensor *t) {
    return t->ne[1] * t->ne[2] * t->ne[3];
}

static size_t row_bytes(const struct ty_tensor *t) {
    const struct ty_type_traits *tr = ty__type_traits(t->type);
    int64_t block = tr ? tr->block_size : 1;
    return t->nb[0] * (size_t)(t->ne[0] / block);
}

size_t ty__tensor_size(const struct ty_tensor *t) {
    return row_bytes(t) * (size_t)ty__tensor_nrows(t);
}

bool ty__tensor_is_contiguous(const struct ty_tensor *t) {
    size_t expect = row_bytes(t);
    for (int i = 1; i < TY_TENSOR_MAX_DIMS; i++) {
        if (t->ne[i] != 1 && t->nb[i] != expect) return false; /* the stride of a single index never matters */
        expect *= (size_t)t->ne[i];
    }
    return true;
}

bool ty__tensor_same_shape(const struct ty_tensor *a, const struct ty_tensor *b) {
    for (int i = 0; i < TY_TENSOR_MAX_DIMS; i++)
        if (a->ne[i] != b->ne[i]) return false;
    return true;
}

struct ty_tensor ty__tensor_slice(const struct ty_tensor *t, int dim, int64_t first, int64_t n) {
    TY_ASSERT(dim >= 0 && dim < TY_TENSOR_MAX_DIMS && first >= 0 && n >= 0 && first + n <= t->ne[dim]);
    const struct ty_type_traits *tr = ty__type_traits(t->type);
    TY_ASSERT(dim > 0 || !tr || tr->block_size == 1); /* quantised blocks cannot be split */
    struct ty_tensor v = *t;
    v.offs += (size_t)first * t->nb[dim];
    v.ne[dim] = n;
    return v;
}

void ty__kv_cache_head_major(struct ty_tensor *t) {
    TY_ASSERT(ty__tensor_is_contiguous(t) && t->ne[3] == 1);
    const size_t row = row_bytes(t);
    t->nb[2] = row, t->nb[1] = row * (size_t)t->ne[2], t->nb[3] = t->nb[1] * (size_t)t->ne[1];
}

struct ty_tensor ty__tensor_reshape(const struct ty_tensor *t, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) {
    TY_ASSERT(ty__tensor_is_contiguous(t) && ne0 * ne1 * ne2 * ne3 == ty__tensor_nelements(t));
    struct ty_tensor v;
    ty__tensor_init(&v, t->buf, t->offs, t->type, ne0, ne1, ne2, ne3);
    return v;
}

bool ty__backend_weight_type_ok(enum ty_type type) {
    switch (type) {
    case TY_TYPE_F32:
    case TY_TYPE_F16:
    case TY_TYPE_BF16:
    case TY_TYPE_Q4_0:
    case TY_TYPE_Q4_1:
    case TY_TYPE_Q5_0:
    case TY_TYPE_Q5_1:
    case TY_TYPE_Q8_0:
    case TY_TYPE_Q4_K:
    case TY_TYPE_Q5_K:
    case TY_TYPE_Q6_K: {
        const struct ty_type_traits *tr = ty__type_traits(type);
        return tr && tr->to_float;
    }
    default:
        return false;
    }
}

/* ==== Host kernels shared by host backends and the wrappers' fallbacks ==== */

void ty__scatter_add_host(const struct ty_tensor *dst, const struct ty_tensor *src, const struct ty_tensor *ids,
                          const struct ty_tensor *scale) {
    const int32_t *id = ty__tensor_host(ids);
    const float *sc = ty__tensor_host(scale);
    int64_t d = dst->ne[0];
    for (int64_t j = 0; j < src->ne[1]; j++) {
        TY_ASSERT(id[j] >= 0 && id[j] < dst->ne[1]);
        const float *s = ty__tensor_row(src, j, 0, 0);
        float *o = ty__tensor_row(dst, id[j], 0, 0);
        for (int64_t i = 0; i < d; i++) o[i] += sc[j] * s[i];
    }
}

/* ==== Buffers ==== */

enum ty_status ty__backend_buffer_alloc(struct ty_backend *be, size_t size, struct ty_buffer **out) {
    *out = NULL;
    struct ty_buffer *buf = ty__calloc(1, sizeof *buf);
    if (!buf) return ty__error(TY_ERR_NO_MEMORY, "out of memory allocating a buffer descriptor");
    buf->backend = be;
    buf->size = size;
    enum ty_status st = be->iface->buffer_alloc(be, buf, size);
    if (st != TY_OK) {
        ty_free(buf);
        return st;
    }
    *out = buf;
    return TY_OK;
}

enum ty_status ty__backend_buffer_wrap(struct ty_backend *be, void *host, size_t size, struct ty_buffer **out) {
    *out = NULL;
    if (!be->iface->buffer_wrap) {
        /* Fallback: a backend that cannot read host memory gets its own copy, uploaded once. */
        struct ty_buffer *buf;
        TY_TRY(ty__backend_buffer_alloc(be, size, &buf));
        struct ty_tensor all; /* the whole buffer as bytes */
        ty__tensor_init(&all, buf, 0, TY_TYPE_I8, (int64_t)size, 1, 1, 1);
        enum ty_status st = TY_OK;
        const size_t chunk = (size_t)1 << 26;
        for (size_t off = 0; off < size && st == TY_OK; off += chunk) {
            size_t n = size - off < chunk ? size - off : chunk;
            st = be->iface->tensor_set(be, &all, (const char *)host + off, off, n);
        }
        if (st != TY_OK) {
            ty__backend_buffer_free(buf);
            return st;
        }
        *out = buf;
        return TY_OK;
    }
    struct ty_buffer *buf = ty__calloc(1, sizeof *buf);
    if (!buf) return ty__error(TY_ERR_NO_MEMORY, "out of memory allocating a buffer descriptor");
    buf->backend = be;
    buf->size = size;
    buf->wrapped = true;
    enum ty_status st = be->iface->buffer_wrap(be, buf, host, size);
    if (st != TY_OK) {
        ty_free(buf);
        return st;
    }
    *out = buf;
    return TY_OK;
}

void ty__backend_buffer_free(struct ty_buffer *buf) {
    if (!buf) return;
    buf->backend->iface->buffer_free(buf->backend, buf);
    ty_free(buf);
}

/* ==== RoPE frequencies ==== */

/* YaRN's inverse dimension formula: the dimension whose wavelength makes `n_rot` rotations over `ctx` positions. */
static double yarn_correction_dim(double n_rot, int dim, double base, double ctx) {
    return (dim * log(ctx / (n_rot * 2.0 * M_PI))) / (2.0 * log(base));
}

enum ty_status ty__rope_init(const struct ty_rope_config *cfg, struct ty_rope *out) {
    memset(out, 0, sizeof *out);
    int dim = cfg->n_dims;
    if (dim < 2 || dim % 2 != 0 || dim > TY_ROPE_MAX_DIMS)
        return ty__error(TY_ERR_INVALID_ARG, "RoPE dimension count %d must be even and in [2, %d]", dim,
                         TY_ROPE_MAX_DIMS);
    if (!(cfg->freq_base > 1.0f) || !isfinite(cfg->freq_base))
        return ty__error(TY_ERR_INVALID_ARG, "RoPE frequency base %g must be a finite number above 1",
                         (double)cfg->freq_base);
    if (cfg->scaling != TY_ROPE_SCALING_NONE && (!(cfg->factor > 0.0f) || !isfinite(cfg->factor)))
        return ty__error(TY_ERR_INVALID_ARG, "RoPE scaling factor %g must be a positive number", (double)cfg->factor);
    out->n_dims = dim;
    out->attn_factor = 1.0f;
    int half = dim / 2;
    /* HF: inv_freq = 1 / (base ** (arange(0, dim, 2).float() / dim)), every step in f32. */
    float pos_freq[TY_ROPE_MAX_DIMS / 2];
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)dim;
        pos_freq[i] = powf(cfg->freq_base, e);
        out->inv_freq[i] = 1.0f / pos_freq[i];
    }
    switch (cfg->scaling) {
    case TY_ROPE_SCALING_NONE:
        break;
    case TY_ROPE_SCALING_LINEAR:
        for (int i = 0; i < half; i++) out->inv_freq[i] /= cfg->factor;
        break;
    case TY_ROPE_SCALING_YARN: {
        /* As transformers' _compute_yarn_parameters: the correction range from the pre-extension context, truncated
         * to whole dimensions; a linear ramp between interpolated (1 / (factor * pos_freq)) and extrapolated
         * (1 / pos_freq) frequencies; cos and sin scaled by the attention factor 0.1 * ln(factor) + 1. */
        if (cfg->orig_ctx <= 0)
            return ty__error(TY_ERR_INVALID_ARG, "YaRN needs the original context length (got %d)", cfg->orig_ctx);
        double beta_fast = cfg->beta_fast > 0 ? cfg->beta_fast : 32.0;
        double beta_slow = cfg->beta_slow > 0 ? cfg->beta_slow : 1.0;
        double low = floor(yarn_correction_dim(beta_fast, dim, cfg->freq_base, cfg->orig_ctx));
        double high = ceil(yarn_correction_dim(beta_slow, dim, cfg->freq_base, cfg->orig_ctx));
        if (low < 0) low = 0;
        if (high > dim - 1) high = dim - 1;
        if (low == high) high += 0.001; /* HF: prevent a zero-width ramp */
        float range = (float)(high - low);
        for (int i = 0; i < half; i++) {
            float ramp = ((float)i - (float)low) / range;
            ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
            float extrapolation = 1.0f - ramp;
            float inv_extra = 1.0f / pos_freq[i];
            float inv_inter = 1.0f / (cfg->factor * pos_freq[i]);
            out->inv_freq[i] = inv_inter * (1.0f - extrapolation) + inv_extra * extrapolation;
        }
        if (cfg->attn_factor > 0)
            out->attn_factor = cfg->attn_factor;
        else
            out->attn_factor = cfg->factor <= 1.0f ? 1.0f : (float)(0.1 * log((double)cfg->factor) + 1.0);
        break;
    }
    default:
        return ty__error(TY_ERR_INVALID_ARG, "unknown RoPE scaling kind %d", (int)cfg->scaling);
    }
    return TY_OK;
}
