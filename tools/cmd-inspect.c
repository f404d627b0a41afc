/*
 * cmd-inspect.c - `tongyun inspect`: what a GGUF file holds and what it needs to run. Prints the format version,
 * every metadata entry (long values summarised), the tensor totals by type, the weight bytes and an estimate of the
 * memory needed, with the KV cache per token worked out from the architecture's metadata. `--json` gives the same
 * facts for scripts; `--tensors` adds the tensor table. It reads only the header and the tensor table, never the
 * weights, so it is instant even on a large model.
 */
#include "cli.h"

#include "model/gguf.h"
#include "model/quant.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <utf8proc.h>

#define ARRAY_PREVIEW_NUM 8 /* array elements shown per array */
#define ARRAY_PREVIEW_STR 4
#define STRING_PREVIEW    72   /* bytes of a string value shown in text mode */
#define DEFAULT_CTX       4096 /* context at which the KV cache is priced when the file names none */

static void usage(FILE *f) {
    fprintf(f,
            "usage: tongyun inspect MODEL.gguf [--json] [--tensors]\n"
            "\n"
            "Shows a GGUF file's format version, metadata, tensors and memory needs without loading the weights.\n"
            "\n"
            "  --tensors   also list every tensor: name, type, shape (ne[0] first, the fastest-varying dimension),\n"
            "              bytes and data offset\n"
            "  --json      print one JSON object instead of text (metadata arrays show their first %d elements)\n"
            "  -h, --help  show this help\n"
            "\n"
            "The memory estimate is the weight bytes (mapped from the file) plus the KV cache, which grows with the\n"
            "context length: the KV bytes per token are computed in f16 from <arch>.block_count,\n"
            "<arch>.attention.head_count_kv and the key/value lengths (or embedding_length / head_count). Layers\n"
            "without attention (hybrid models, <arch>.full_attention_interval) keep a fixed-size state instead.\n"
            "Multi-token-prediction heads (blk.N.nextn.* tensors, <arch>.nextn_predict_layers) are reported and\n"
            "left out of the estimate: Tongyun ignores them.\n"
            "\n"
            "Exit status: 0 on success, 1 when the file cannot be read or is malformed, 2 on a usage error.\n",
            ARRAY_PREVIEW_NUM);
}

/* ==== Formatting ==== */

static const char *fmt_bytes(uint64_t n, char *buf, size_t cap) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 5) v /= 1024, u++;
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " B", n);
    else
        snprintf(buf, cap, "%.2f %s", v, units[u]);
    return buf;
}

static const char *fmt_count(uint64_t n, char *buf, size_t cap) {
    if (n >= 1000000000ull)
        snprintf(buf, cap, "%.2f B", (double)n / 1e9);
    else if (n >= 1000000ull)
        snprintf(buf, cap, "%.2f M", (double)n / 1e6);
    else if (n >= 1000ull)
        snprintf(buf, cap, "%.2f K", (double)n / 1e3);
    else
        snprintf(buf, cap, "%" PRIu64, n);
    return buf;
}

/* Prints up to `max` bytes of s, escaping control characters (C0, DEL and C1) and invalid UTF-8 so that a hostile
 * file cannot drive the terminal. Quoted values escape '"' and '\\' too. Returns the number of columns printed
 * (roughly: one per character). */
static size_t print_escaped(FILE *f, const char *s, uint64_t len, uint64_t max, bool quoted) {
    size_t cols = 0;
    if (quoted) fputc('"', f), cols++;
    uint64_t shown = len < max ? len : max;
    for (uint64_t i = 0; i < shown;) {
        unsigned char ch = (unsigned char)s[i];
        if (quoted && (ch == '"' || ch == '\\')) {
            cols += (size_t)fprintf(f, "\\%c", ch), i++;
        } else if (ch == '\n') {
            cols += (size_t)fprintf(f, "\\n"), i++;
        } else if (ch == '\t') {
            cols += (size_t)fprintf(f, "\\t"), i++;
        } else if (ch < 0x20 || ch == 0x7f) {
            cols += (size_t)fprintf(f, "\\x%02x", ch), i++;
        } else if (ch < 0x80) {
            fputc(ch, f), cols++, i++;
        } else {
            utf8proc_int32_t cp;
            utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
            if (k <= 0 || (uint64_t)k > shown - i || (cp >= 0x80 && cp < 0xa0)) {
                cols += (size_t)fprintf(f, "\\x%02x", ch), i++;
            } else {
                fwrite(s + i, 1, (size_t)k, f);
                cols++;
                i += (uint64_t)k;
            }
        }
    }
    if (quoted) fputc('"', f), cols++;
    if (shown < len) cols += (size_t)fprintf(f, "... (%" PRIu64 " bytes)", len);
    return cols;
}

static void print_quoted(FILE *f, const char *s, uint64_t len, uint64_t max) {
    print_escaped(f, s, len, max, true);
}

/* A key or tensor name in a column of `width`. */
static void print_name(FILE *f, const char *s, size_t width) {
    size_t cols = print_escaped(f, s, strlen(s), 4096, false);
    for (; cols < width; cols++) fputc(' ', f);
}

/* A JSON string from arbitrary bytes: invalid UTF-8 becomes U+FFFD so the output stays valid JSON. */
static json_t *json_bytes(const char *s, uint64_t len) {
    json_t *j = json_stringn(s, (size_t)len);
    if (j) return j;
    struct ty_buf b = {0};
    for (uint64_t i = 0; i < len;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) {
            ty__buf_append(&b, "\xef\xbf\xbd", 3);
            i++;
        } else {
            ty__buf_append(&b, s + i, (size_t)k);
            i += (uint64_t)k;
        }
    }
    j = json_stringn(b.data ? b.data : "", b.len);
    ty__buf_free(&b);
    return j ? j : json_null();
}

static json_t *json_float(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

/* ==== Metadata ==== */

/* Prints (text) or builds (JSON) one scalar value. */
static void print_scalar(FILE *f, const struct ty_gguf *g, const char *key, enum ty_gguf_type t) {
    int64_t i;
    uint64_t u;
    double d;
    bool b;
    struct ty_gguf_str s;
    switch (t) {
    case TY_GGUF_TYPE_STRING:
        if (ty__gguf_get_str(g, key, &s) == TY_OK) print_quoted(f, s.data, s.len, STRING_PREVIEW);
        break;
    case TY_GGUF_TYPE_BOOL:
        if (ty__gguf_get_bool(g, key, &b) == TY_OK) fputs(b ? "true" : "false", f);
        break;
    case TY_GGUF_TYPE_FLOAT32:
    case TY_GGUF_TYPE_FLOAT64:
        if (ty__gguf_get_float(g, key, &d) == TY_OK) fprintf(f, "%.9g", d);
        break;
    default:
        if (ty__gguf_get_int(g, key, &i) == TY_OK)
            fprintf(f, "%" PRId64, i);
        else if (ty__gguf_get_uint(g, key, &u) == TY_OK)
            fprintf(f, "%" PRIu64, u);
        break;
    }
}

static json_t *json_scalar(const struct ty_gguf *g, const char *key, enum ty_gguf_type t) {
    int64_t i;
    uint64_t u;
    double d;
    bool b;
    struct ty_gguf_str s;
    switch (t) {
    case TY_GGUF_TYPE_STRING:
        return ty__gguf_get_str(g, key, &s) == TY_OK ? json_bytes(s.data, s.len) : json_null();
    case TY_GGUF_TYPE_BOOL:
        return ty__gguf_get_bool(g, key, &b) == TY_OK ? json_boolean(b) : json_null();
    case TY_GGUF_TYPE_FLOAT32:
    case TY_GGUF_TYPE_FLOAT64:
        return ty__gguf_get_float(g, key, &d) == TY_OK ? json_float(d) : json_null();
    default:
        if (ty__gguf_get_int(g, key, &i) == TY_OK) return json_integer(i);
        if (ty__gguf_get_uint(g, key, &u) == TY_OK) return json_real((double)u); /* above INT64_MAX */
        return json_null();
    }
}

static bool is_int_type(enum ty_gguf_type t) {
    return t != TY_GGUF_TYPE_FLOAT32 && t != TY_GGUF_TYPE_FLOAT64 && t != TY_GGUF_TYPE_BOOL &&
           t != TY_GGUF_TYPE_STRING && t != TY_GGUF_TYPE_ARRAY;
}

static void print_array(FILE *f, const struct ty_gguf *g, const char *key) {
    enum ty_gguf_type et;
    uint64_t n;
    if (ty__gguf_get_arr(g, key, &et, &n) != TY_OK) return;
    fprintf(f, "%" PRIu64 " element%s", n, n == 1 ? "" : "s");
    if (n == 0 || et == TY_GGUF_TYPE_ARRAY) return;
    uint64_t show = et == TY_GGUF_TYPE_STRING ? ARRAY_PREVIEW_STR : ARRAY_PREVIEW_NUM;
    if (show > n) show = n;
    fputs(": [", f);
    for (uint64_t k = 0; k < show; k++) {
        if (k) fputs(", ", f);
        struct ty_gguf_str s;
        int64_t iv;
        double dv;
        if (et == TY_GGUF_TYPE_STRING && ty__gguf_arr_str(g, key, k, &s) == TY_OK)
            print_quoted(f, s.data, s.len, 32);
        else if (is_int_type(et) && ty__gguf_arr_int(g, key, k, &iv) == TY_OK)
            fprintf(f, "%" PRId64, iv);
        else if ((et == TY_GGUF_TYPE_FLOAT32 || et == TY_GGUF_TYPE_FLOAT64) &&
                 ty__gguf_arr_float(g, key, k, &dv) == TY_OK)
            fprintf(f, "%.6g", dv);
        else if (et == TY_GGUF_TYPE_BOOL)
            fputs(((const uint8_t *)ty__gguf_arr_data(g, key))[k] ? "true" : "false", f);
        else
            fputs("?", f); /* a u64 above INT64_MAX */
    }
    fputs(show < n ? ", ...]" : "]", f);
}

static json_t *json_array_summary(const struct ty_gguf *g, const char *key) {
    enum ty_gguf_type et;
    uint64_t n;
    if (ty__gguf_get_arr(g, key, &et, &n) != TY_OK) return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "elem_type", json_string(ty__gguf_type_name(et)));
    json_object_set_new(o, "length", json_integer((json_int_t)n));
    json_t *first = json_array();
    uint64_t show = n < ARRAY_PREVIEW_NUM ? n : ARRAY_PREVIEW_NUM;
    for (uint64_t k = 0; k < show && et != TY_GGUF_TYPE_ARRAY; k++) {
        struct ty_gguf_str s;
        int64_t iv;
        double dv;
        if (et == TY_GGUF_TYPE_STRING && ty__gguf_arr_str(g, key, k, &s) == TY_OK)
            json_array_append_new(first, json_bytes(s.data, s.len));
        else if (is_int_type(et) && ty__gguf_arr_int(g, key, k, &iv) == TY_OK)
            json_array_append_new(first, json_integer(iv));
        else if ((et == TY_GGUF_TYPE_FLOAT32 || et == TY_GGUF_TYPE_FLOAT64) &&
                 ty__gguf_arr_float(g, key, k, &dv) == TY_OK)
            json_array_append_new(first, json_float(dv));
        else if (et == TY_GGUF_TYPE_BOOL)
            json_array_append_new(first, json_boolean(((const uint8_t *)ty__gguf_arr_data(g, key))[k]));
        else
            json_array_append_new(first, json_null());
    }
    json_object_set_new(o, "first", first);
    return o;
}

/* ==== Analysis ==== */

struct type_total {
    uint64_t tensors, params, bytes;
};

struct mtp_info {
    uint64_t layers; /* <arch>.nextn_predict_layers, 0 when absent */
    bool key_present;
    uint64_t tensors, bytes;
};

struct kv_estimate {
    bool ok;
    const char *why_not;
    uint64_t bytes_per_token;
    uint64_t layers_total, layers_kv;
    uint64_t head_kv_first, k_len, v_len; /* for the explanation (head count of the first KV layer) */
    bool head_kv_varies;
    uint64_t n_ctx_train;
};

static bool nextn_tensor(const char *name) {
    if (strncmp(name, "blk.", 4) != 0) return false;
    const char *p = name + 4;
    if (*p < '0' || *p > '9') return false;
    while (*p >= '0' && *p <= '9') p++;
    return strncmp(p, ".nextn.", 7) == 0;
}

static bool arch_key(char *buf, size_t cap, const char *arch, const char *suffix) {
    return (size_t)snprintf(buf, cap, "%s.%s", arch, suffix) < cap;
}

/* An unsigned metadata value that may be a scalar or a per-layer array; `layer` picks the element. */
static bool layer_value(const struct ty_gguf *g, const char *key, uint64_t layer, uint64_t *out) {
    int64_t i = ty__gguf_find_key(g, key);
    if (i < 0) return false;
    if (ty__gguf_kv_type(g, i) == TY_GGUF_TYPE_ARRAY) {
        int64_t v;
        if (ty__gguf_arr_int(g, key, layer, &v) != TY_OK || v < 0) return false;
        *out = (uint64_t)v;
        return true;
    }
    return ty__gguf_get_uint(g, key, out) == TY_OK;
}

static void estimate_kv(const struct ty_gguf *g, const char *arch, const struct mtp_info *mtp, struct kv_estimate *e) {
    memset(e, 0, sizeof *e);
    char key[256];
    uint64_t n_layer, n_embd = 0, interval = 0, v;
    if (!arch) {
        e->why_not = "general.architecture is missing";
        return;
    }
    if (arch_key(key, sizeof key, arch, "context_length") && ty__gguf_get_uint(g, key, &v) == TY_OK) e->n_ctx_train = v;
    if (!arch_key(key, sizeof key, arch, "block_count") || ty__gguf_get_uint(g, key, &n_layer) != TY_OK) {
        e->why_not = "<arch>.block_count is missing";
        return;
    }
    if (n_layer > 100000) {
        e->why_not = "<arch>.block_count is implausible";
        return;
    }
    if (mtp->layers && mtp->layers <= n_layer) n_layer -= mtp->layers; /* the MTP layers are the last blocks */
    if (arch_key(key, sizeof key, arch, "embedding_length")) ty__gguf_get_uint(g, key, &n_embd);
    if (arch_key(key, sizeof key, arch, "full_attention_interval")) ty__gguf_get_uint(g, key, &interval);
    char k_head[256], k_head_kv[256], k_klen[256], k_vlen[256];
    arch_key(k_head, sizeof k_head, arch, "attention.head_count");
    arch_key(k_head_kv, sizeof k_head_kv, arch, "attention.head_count_kv");
    arch_key(k_klen, sizeof k_klen, arch, "attention.key_length");
    arch_key(k_vlen, sizeof k_vlen, arch, "attention.value_length");

    e->layers_total = n_layer;
    uint64_t total = 0;
    for (uint64_t il = 0; il < n_layer; il++) {
        if (interval > 0 && (il + 1) % interval != 0) continue; /* a recurrent layer: fixed-size state, no KV */
        uint64_t n_head = 0, n_head_kv = 0, k_len = 0, v_len = 0;
        layer_value(g, k_head, il, &n_head);
        if (!layer_value(g, k_head_kv, il, &n_head_kv)) n_head_kv = n_head;
        if (n_head_kv == 0) continue; /* per-layer arrays mark attention-free layers with 0 */
        if (!layer_value(g, k_klen, il, &k_len)) k_len = n_head ? n_embd / n_head : 0;
        if (!layer_value(g, k_vlen, il, &v_len)) v_len = n_head ? n_embd / n_head : 0;
        if (k_len == 0 || v_len == 0) {
            e->why_not = "the head count or key/value lengths are missing";
            return;
        }
        uint64_t layer_bytes;
        if (n_head_kv > 1000000 || k_len > 1000000 || v_len > 1000000 ||
            ty__mul_overflow_u64(n_head_kv, (k_len + v_len) * 2, &layer_bytes) ||
            ty__add_overflow_u64(total, layer_bytes, &total)) {
            e->why_not = "the attention metadata is implausible";
            return;
        }
        if (e->layers_kv == 0) {
            e->head_kv_first = n_head_kv;
            e->k_len = k_len;
            e->v_len = v_len;
        } else if (n_head_kv != e->head_kv_first || k_len != e->k_len || v_len != e->v_len) {
            e->head_kv_varies = true;
        }
        e->layers_kv++;
    }
    e->ok = true;
    e->bytes_per_token = total;
}

struct report {
    const char *path;
    const char *arch; /* NUL-terminated copy (ty_free) or NULL */
    struct type_total by_type[TY_TYPE_COUNT];
    uint64_t total_bytes, total_params;
    struct mtp_info mtp;
    struct kv_estimate kv;
};

static void analyse(const struct ty_gguf *g, struct report *r) {
    char *arch = NULL;
    if (ty__gguf_get_strdup(g, "general.architecture", &arch) == TY_OK) r->arch = arch;
    for (int64_t i = 0; i < ty__gguf_n_tensors(g); i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
        uint64_t params = 1;
        for (int d = 0; d < t->n_dims; d++) params *= (uint64_t)t->ne[d]; /* checked by the reader */
        struct type_total *tt = &r->by_type[t->type];
        tt->tensors++;
        tt->params += params;
        tt->bytes += t->nbytes;
        r->total_bytes += t->nbytes;
        r->total_params += params;
        if (nextn_tensor(t->name)) {
            r->mtp.tensors++;
            r->mtp.bytes += t->nbytes;
        }
    }
    char key[256];
    uint64_t v;
    if (r->arch && arch_key(key, sizeof key, r->arch, "nextn_predict_layers") && ty__gguf_find_key(g, key) >= 0) {
        r->mtp.key_present = true;
        if (ty__gguf_get_uint(g, key, &v) == TY_OK) r->mtp.layers = v;
    }
    estimate_kv(g, r->arch, &r->mtp, &r->kv);
}

static void shape_str(const struct ty_gguf_tensor *t, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, d ? ", " : "", t->ne[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* ==== Text output ==== */

static void print_text(const struct ty_gguf *g, const struct report *r, bool list_tensors) {
    char b1[32], b2[32], b3[32];
    FILE *f = stdout;
    printf("%s\n", r->path);
    printf("  format      GGUF v%" PRIu32 ", alignment %" PRIu32 ", data section at offset %#zx, file %s\n",
           ty__gguf_version(g), ty__gguf_alignment(g), ty__gguf_data_offset(g),
           fmt_bytes(ty__gguf_file_size(g), b1, sizeof b1));
    struct ty_gguf_str name;
    if (r->arch || ty__gguf_get_str(g, "general.name", &name) == TY_OK) {
        fputs("  model       ", f);
        if (r->arch)
            print_escaped(f, r->arch, strlen(r->arch), STRING_PREVIEW, false);
        else
            fputs("(no general.architecture)", f);
        if (ty__gguf_get_str(g, "general.name", &name) == TY_OK) {
            fputc(' ', f);
            print_quoted(f, name.data, name.len, STRING_PREVIEW);
        }
        fputc('\n', f);
    }

    int64_t n_kv = ty__gguf_n_kv(g);
    printf("\nmetadata: %" PRId64 " keys\n", n_kv);
    for (int64_t i = 0; i < n_kv; i++) {
        const char *key = ty__gguf_key(g, i);
        enum ty_gguf_type t = ty__gguf_kv_type(g, i);
        char type[16];
        if (t == TY_GGUF_TYPE_ARRAY) {
            enum ty_gguf_type et = TY_GGUF_TYPE_COUNT;
            ty__gguf_get_arr(g, key, &et, NULL);
            snprintf(type, sizeof type, "arr[%s]", ty__gguf_type_name(et));
        } else {
            snprintf(type, sizeof type, "%s", ty__gguf_type_name(t));
        }
        fputs("  ", f);
        print_name(f, key, 44);
        printf(" %-9s ", type);
        if (t == TY_GGUF_TYPE_ARRAY)
            print_array(f, g, key);
        else
            print_scalar(f, g, key, t);
        fputc('\n', f);
    }

    int64_t n_t = ty__gguf_n_tensors(g);
    printf("\ntensors: %" PRId64 "%s\n", n_t, list_tensors || n_t == 0 ? "" : " (list them with --tensors)");
    if (list_tensors && n_t > 0) {
        printf("  %-48s %-6s %-26s %12s %14s\n", "name", "type", "shape", "bytes", "offset");
        for (int64_t i = 0; i < n_t; i++) {
            const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
            char shape[128];
            shape_str(t, shape, sizeof shape);
            fputs("  ", f);
            print_name(f, t->name, 48);
            printf(" %-6s %-26s %12zu %#14" PRIx64 "\n", ty_type_name(t->type), shape, t->nbytes, t->offset);
        }
        fputc('\n', f);
    }
    if (n_t > 0) {
        printf("  %-8s %8s %12s %14s\n", "type", "tensors", "parameters", "bytes");
        for (int ty = 0; ty < TY_TYPE_COUNT; ty++) {
            const struct type_total *tt = &r->by_type[ty];
            if (!tt->tensors) continue;
            printf("  %-8s %8" PRIu64 " %12s %14s\n", ty_type_name((enum ty_type)ty), tt->tensors,
                   fmt_count(tt->params, b1, sizeof b1), fmt_bytes(tt->bytes, b2, sizeof b2));
        }
        printf("  %-8s %8" PRId64 " %12s %14s\n", "total", n_t, fmt_count(r->total_params, b1, sizeof b1),
               fmt_bytes(r->total_bytes, b2, sizeof b2));
    }

    if (r->mtp.tensors || r->mtp.key_present) {
        printf("\nmulti-token prediction: present and ignored by Tongyun (");
        if (r->mtp.key_present) printf("%" PRIu64 " nextn layer(s), ", r->mtp.layers);
        printf("%" PRIu64 " blk.N.nextn tensors, %s)\n", r->mtp.tensors, fmt_bytes(r->mtp.bytes, b1, sizeof b1));
    }

    uint64_t weights = r->total_bytes - r->mtp.bytes;
    printf("\nmemory estimate:\n");
    printf("  weights         %s (mapped from the file%s)\n", fmt_bytes(weights, b1, sizeof b1),
           r->mtp.bytes ? ", MTP tensors left out" : "");
    if (!r->kv.ok) {
        printf("  KV cache        unknown: %s; it grows with the context length\n", r->kv.why_not);
        return;
    }
    const struct kv_estimate *e = &r->kv;
    printf("  KV cache (f16)  %s per token", fmt_bytes(e->bytes_per_token, b1, sizeof b1));
    if (e->layers_kv && !e->head_kv_varies)
        printf(" = %" PRIu64 " layers x %" PRIu64 " KV heads x (%" PRIu64 " + %" PRIu64 ") x 2 bytes", e->layers_kv,
               e->head_kv_first, e->k_len, e->v_len);
    fputc('\n', f);
    if (e->layers_kv < e->layers_total)
        printf("                  (%" PRIu64 " of %" PRIu64 " layers keep a KV cache; the others keep a fixed-size "
               "recurrent state)\n",
               e->layers_kv, e->layers_total);
    uint64_t ctxs[2] = {DEFAULT_CTX, e->n_ctx_train};
    for (int k = 0; k < 2; k++) {
        uint64_t c = ctxs[k];
        if (!c || (k == 1 && c == DEFAULT_CTX)) continue;
        double kvb = (double)e->bytes_per_token * (double)c;
        uint64_t kvu = kvb < 1.8e19 ? (uint64_t)kvb : UINT64_MAX;
        uint64_t sum = weights + kvu >= weights ? weights + kvu : UINT64_MAX;
        printf("  at %7" PRIu64 " tokens  KV %s, total %s%s\n", c, fmt_bytes(kvu, b2, sizeof b2),
               fmt_bytes(sum, b3, sizeof b3), k == 1 ? " (training context)" : "");
    }
    printf("  the KV cache depends on the context you run with; activations add a little on top\n");
}

/* ==== JSON output ==== */

static int print_json(const struct ty_gguf *g, const struct report *r, bool list_tensors) {
    json_t *o = json_object();
    json_object_set_new(o, "file", json_bytes(r->path, strlen(r->path)));
    json_object_set_new(o, "file_size", json_integer((json_int_t)ty__gguf_file_size(g)));
    json_object_set_new(o, "version", json_integer(ty__gguf_version(g)));
    json_object_set_new(o, "alignment", json_integer(ty__gguf_alignment(g)));
    json_object_set_new(o, "data_offset", json_integer((json_int_t)ty__gguf_data_offset(g)));
    json_object_set_new(o, "architecture", r->arch ? json_bytes(r->arch, strlen(r->arch)) : json_null());

    json_t *meta = json_array();
    for (int64_t i = 0; i < ty__gguf_n_kv(g); i++) {
        const char *key = ty__gguf_key(g, i);
        enum ty_gguf_type t = ty__gguf_kv_type(g, i);
        json_t *e = json_object();
        json_object_set_new(e, "key", json_bytes(key, strlen(key)));
        json_object_set_new(e, "type", json_string(ty__gguf_type_name(t)));
        if (t == TY_GGUF_TYPE_ARRAY) {
            json_t *a = json_array_summary(g, key);
            json_object_update(e, a);
            json_decref(a);
        } else {
            json_object_set_new(e, "value", json_scalar(g, key, t));
        }
        json_array_append_new(meta, e);
    }
    json_object_set_new(o, "metadata", meta);

    json_object_set_new(o, "n_tensors", json_integer(ty__gguf_n_tensors(g)));
    if (list_tensors) {
        json_t *ts = json_array();
        for (int64_t i = 0; i < ty__gguf_n_tensors(g); i++) {
            const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
            json_t *shape = json_array();
            for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->ne[d]));
            json_t *e = json_object();
            json_object_set_new(e, "name", json_bytes(t->name, strlen(t->name)));
            json_object_set_new(e, "type", json_string(ty_type_name(t->type)));
            json_object_set_new(e, "shape", shape);
            json_object_set_new(e, "bytes", json_integer((json_int_t)t->nbytes));
            json_object_set_new(e, "offset", json_integer((json_int_t)t->offset));
            json_array_append_new(ts, e);
        }
        json_object_set_new(o, "tensors", ts);
    }
    json_t *bt = json_array();
    for (int ty = 0; ty < TY_TYPE_COUNT; ty++) {
        const struct type_total *tt = &r->by_type[ty];
        if (!tt->tensors) continue;
        json_t *e = json_object();
        json_object_set_new(e, "type", json_string(ty_type_name((enum ty_type)ty)));
        json_object_set_new(e, "tensors", json_integer((json_int_t)tt->tensors));
        json_object_set_new(e, "parameters", json_integer((json_int_t)tt->params));
        json_object_set_new(e, "bytes", json_integer((json_int_t)tt->bytes));
        json_array_append_new(bt, e);
    }
    json_object_set_new(o, "by_type", bt);
    json_object_set_new(o, "total_parameters", json_integer((json_int_t)r->total_params));
    json_object_set_new(o, "total_bytes", json_integer((json_int_t)r->total_bytes));
    json_object_set_new(o, "weight_bytes", json_integer((json_int_t)(r->total_bytes - r->mtp.bytes)));

    json_t *mtp = json_object();
    json_object_set_new(mtp, "present", json_boolean(r->mtp.tensors || r->mtp.key_present));
    json_object_set_new(mtp, "ignored", json_true());
    json_object_set_new(mtp, "layers", json_integer((json_int_t)r->mtp.layers));
    json_object_set_new(mtp, "tensors", json_integer((json_int_t)r->mtp.tensors));
    json_object_set_new(mtp, "bytes", json_integer((json_int_t)r->mtp.bytes));
    json_object_set_new(o, "multi_token_prediction", mtp);

    json_t *kv = json_object();
    if (r->kv.ok) {
        json_object_set_new(kv, "dtype", json_string("f16"));
        json_object_set_new(kv, "bytes_per_token", json_integer((json_int_t)r->kv.bytes_per_token));
        json_object_set_new(kv, "layers", json_integer((json_int_t)r->kv.layers_total));
        json_object_set_new(kv, "layers_with_kv", json_integer((json_int_t)r->kv.layers_kv));
    } else {
        json_object_set_new(kv, "unknown", json_string(r->kv.why_not));
    }
    json_object_set_new(kv, "context_train", json_integer((json_int_t)r->kv.n_ctx_train));
    json_object_set_new(o, "kv_cache", kv);

    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s) {
        fprintf(stderr, "tongyun inspect: out of memory building the JSON output\n");
        return 1;
    }
    puts(s);
    free(s); /* jansson's allocation */
    return 0;
}

/* ==== Command ==== */

int ty_cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false, list_tensors = false;
    for (int i = 1; i < argc; i++) {
        if (ty_cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--tensors")) {
            list_tensors = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tongyun inspect: unknown option '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "tongyun inspect: one model file at a time (got '%s' and '%s')\n", path, argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    struct ty_gguf *g;
    enum ty_status st = ty__gguf_open(path, &g);
    if (st != TY_OK) return ty_cli_fail("inspect", st);
    struct report r = {.path = path};
    analyse(g, &r);
    int rc = 0;
    if (json)
        rc = print_json(g, &r, list_tensors);
    else
        print_text(g, &r, list_tensors);
    ty_free((void *)r.arch);
    ty__gguf_close(g);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "tongyun inspect: cannot write the output\n");
        return 1;
    }
    return rc;
}
