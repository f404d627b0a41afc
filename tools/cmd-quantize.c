/*
 * cmd-quantize.c - `tongyun quantize IN.gguf OUT.gguf TYPE`: re-encodes a GGUF model's weight matrices in another
 * weight type, or in one of llama.cpp's K-quant mixes, and copies everything else.
 *
 * Which tensor gets which type is decided up front for the whole file (the rules are in src/model/quant-mix.c, shared
 * with `tongyun mkmodel`, and in the help text), then tensors are converted one at a time, rows split across threads:
 * each row is dequantised to f32 and re-encoded, so any readable input type works and memory stays at one output
 * tensor plus a row per thread.
 */
#include "cli.h"

#include "model/gguf.h"
#include "model/quant-mix.h"
#include "model/quant.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f, "usage: tongyun quantize IN.gguf OUT.gguf TYPE [--threads N]\n"
               "\n"
               "Re-encodes the weight matrices of a GGUF model in TYPE and copies all metadata, setting\n"
               "general.file_type (llama.cpp's file-type id) and general.quantization_version.\n"
               "\n"
               "TYPE is a weight type, applied to every weight matrix:\n"
               "  f32, f16, bf16              plain floats\n"
               "  q8_0                        8.5 bits per weight (bpw)\n"
               "  q5_1, q5_0, q4_1, q4_0      6, 5.5, 5 and 4.5 bpw, 32-element blocks\n"
               "  q6_k, q5_k, q4_k            6.56, 5.5 and 4.5 bpw, 256-element super-blocks\n"
               "or a mix, with llama.cpp's rules for which tensors get more bits:\n"
               "  q4_k_m, q5_k_m              Q4_K / Q5_K, except:\n"
               "     output.weight (or token_embd.weight when the model ties it to the output) -> Q6_K;\n"
               "     attn_v.weight and ffn_down* -> Q6_K in the first 1/8 of the layers, the last 1/8, and every\n"
               "       third layer in between (layer i of n when i < n/8, i >= 7n/8 or (i - n/8) %% 3 == 2;\n"
               "       attn_v counts attention layers in file order, ffn_down uses the blk.N layer number);\n"
               "     attn_qkv.weight (fused) -> Q5_K for q4_k_m, Q6_K for q5_k_m.\n"
               "\n"
               "Weight matrices are tensors named *.weight with two or more dimensions, except norms, MoE routers\n"
               "(ffn_gate_inp.weight) and SSM convolutions (ssm_conv1d.weight). Every other tensor (norms, biases)\n"
               "is stored as F32. A tensor already in its chosen type is copied unchanged; any other input type is\n"
               "dequantised to f32 first (re-quantising an already quantised model compounds the error: prefer the\n"
               "F16/BF16/F32 original).\n"
               "\n"
               "Rows whose length is not a multiple of the type's block (256 for the K types, 32 for the others)\n"
               "fall back, as llama.cpp does, with a warning on stderr: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,\n"
               "and to F16 when the row is not a multiple of 32 either. In the mixes, an output matrix whose rows\n"
               "do not fit 256 goes to Q8_0.\n"
               "\n"
               "Options:\n"
               "  --threads N   worker threads (default: one per core)\n"
               "  -h, --help    show this help\n"
               "\n"
               "TY_LOG=info lists every tensor with its new type. Exit status: 0 on success, 1 on failure (OUT is\n"
               "left untouched), 2 on a usage error.\n");
}

/* The output types and the rules for which tensor gets which type are in src/model/quant-mix.c, shared with
 * `tongyun mkmodel`. */

#define GGML_QUANTIZATION_VERSION 2 /* the current block layouts; older files used incompatible ones */

/* ==== Conversion, rows split across threads ==== */

struct convert_job {
    const struct ty_gguf_tensor *t;
    const struct ty_type_traits *in, *out;
    int64_t n_rows;
    size_t in_row, out_row; /* bytes per row */
    uint8_t *dst;
    bool check_finite; /* refuse NaN/inf: one would wipe out a whole block's scale */
};

struct convert_part {
    const struct convert_job *job;
    int64_t row_begin, row_end;
    int64_t bad_row; /* first row with a non-finite value, or -1 */
    bool no_memory;
};

static void *convert_rows(void *arg) {
    struct convert_part *p = arg;
    const struct convert_job *j = p->job;
    int64_t ne0 = j->t->ne[0];
    float *row = ty__malloc((size_t)ne0 * sizeof(float));
    if (!row) {
        p->no_memory = true;
        return NULL;
    }
    for (int64_t r = p->row_begin; r < p->row_end; r++) {
        j->in->to_float((const uint8_t *)j->t->data + (size_t)r * j->in_row, row, ne0);
        if (j->check_finite && p->bad_row < 0) {
            for (int64_t i = 0; i < ne0; i++) {
                if (!isfinite(row[i])) {
                    p->bad_row = r;
                    break;
                }
            }
            if (p->bad_row >= 0) break;
        }
        j->out->from_float(row, j->dst + (size_t)r * j->out_row, ne0);
    }
    ty_free(row);
    return NULL;
}

/* Converts tensor t to `type` into a new buffer (ty_free). */
static enum ty_status convert_tensor(const struct ty_gguf_tensor *t, enum ty_type type, int n_threads, size_t nbytes,
                                     uint8_t **out) {
    struct convert_job job = {.t = t, .in = ty__type_traits(t->type), .out = ty__type_traits(type)};
    job.check_finite = job.out->is_quantized;
    TY_TRY(ty__row_size(t->type, t->ne[0], &job.in_row));
    TY_TRY(ty__row_size(type, t->ne[0], &job.out_row));
    job.n_rows = t->ne[1] * t->ne[2] * t->ne[3]; /* the reader checked that the product fits */
    job.dst = ty__malloc(nbytes ? nbytes : 1);
    if (!job.dst) return ty__error(TY_ERR_NO_MEMORY, "out of memory for tensor %s (%zu bytes)", t->name, nbytes);

    /* Small tensors are not worth a thread each: at least 64 rows or so per worker. */
    int64_t n_parts = n_threads;
    if (n_parts > job.n_rows / 64) n_parts = job.n_rows / 64;
    if (n_parts < 1) n_parts = 1;
    struct convert_part parts[256];
    pthread_t threads[256];
    bool started[256] = {false};
    for (int64_t k = 0; k < n_parts; k++)
        parts[k] = (struct convert_part){&job, job.n_rows * k / n_parts, job.n_rows * (k + 1) / n_parts, -1, false};
    for (int64_t k = 1; k < n_parts; k++) started[k] = pthread_create(&threads[k], NULL, convert_rows, &parts[k]) == 0;
    convert_rows(&parts[0]);
    for (int64_t k = 1; k < n_parts; k++) {
        if (started[k])
            pthread_join(threads[k], NULL);
        else
            convert_rows(&parts[k]); /* could not start a thread: do its share here */
    }

    enum ty_status st = TY_OK;
    for (int64_t k = 0; k < n_parts && st == TY_OK; k++) {
        if (parts[k].no_memory) st = ty__error(TY_ERR_NO_MEMORY, "out of memory converting tensor %s", t->name);
        if (parts[k].bad_row >= 0)
            st =
                ty__error(TY_ERR_FORMAT, "tensor %s: row %" PRId64 " holds NaN or infinity; the input model is corrupt",
                          t->name, parts[k].bad_row);
    }
    if (st != TY_OK) {
        ty_free(job.dst);
        return st;
    }
    *out = job.dst;
    return TY_OK;
}

/* ==== The command ==== */

struct plan {
    const struct ty_gguf_tensor *t;
    enum ty_type type;
    size_t nbytes;
};

static const char *fmt_mib(size_t n, char *buf, size_t cap) {
    snprintf(buf, cap, "%.2f MiB", (double)n / (1024.0 * 1024.0));
    return buf;
}

/* Decides every tensor's type. Fails when a tensor's type cannot be read. */
static enum ty_status make_plan(const struct ty_gguf *g, const struct ty_quant_target *tg, struct plan *plan) {
    int64_t n = ty__gguf_n_tensors(g);
    int64_t n_layer = 0;
    char *arch = NULL;
    if (ty__gguf_get_strdup(g, "general.architecture", &arch) == TY_OK) {
        char key[256];
        int64_t v;
        snprintf(key, sizeof key, "%s.block_count", arch);
        if (ty__gguf_get_int(g, key, &v) == TY_OK && v > 0) n_layer = v;
        ty_free(arch);
    }
    struct ty_quant_mix_tensor *mt = ty__calloc((size_t)(n ? n : 1), sizeof *mt);
    if (!mt) return ty__error(TY_ERR_NO_MEMORY, "out of memory planning %" PRId64 " tensors", n);
    enum ty_status st = TY_OK;
    for (int64_t i = 0; i < n; i++) {
        const struct ty_gguf_tensor *t = ty__gguf_tensor(g, i);
        plan[i].t = t;
        if (!ty__type_traits(t->type) || !ty__type_traits(t->type)->to_float) {
            st = ty__error(TY_ERR_UNSUPPORTED, "tensor %s has type %s, which Tongyun cannot read; readable types: %s",
                           t->name, ty_type_name(t->type), ty__supported_types());
            break;
        }
        mt[i].name = t->name;
        mt[i].n_dims = t->n_dims;
        memcpy(mt[i].ne, t->ne, sizeof mt[i].ne);
    }
    if (st == TY_OK) ty__quant_mix_assign(tg, n_layer, mt, n, true, NULL);
    for (int64_t i = 0; i < n && st == TY_OK; i++) {
        const struct ty_gguf_tensor *t = plan[i].t;
        plan[i].type = mt[i].type;
        st = ty__tensor_nbytes(plan[i].type, t->n_dims, t->ne, t->name, &plan[i].nbytes);
    }
    ty_free(mt);
    return st;
}

static enum ty_status quantize_file(const char *in_path, const char *out_path, const struct ty_quant_target *tg,
                                    int n_threads) {
    struct ty_gguf *g = NULL;
    struct ty_gguf_writer *w = NULL;
    struct plan *plan = NULL;
    enum ty_status st = ty__gguf_open(in_path, &g);
    if (st != TY_OK) return st;

    int64_t n_split;
    if (ty__gguf_get_int(g, "split.count", &n_split) == TY_OK && n_split > 1) {
        st = ty__error(TY_ERR_UNSUPPORTED,
                       "%s is one part of a %" PRId64 "-part split model; merge the parts into one file first", in_path,
                       n_split);
        goto done;
    }
    int64_t n_tensors = ty__gguf_n_tensors(g);
    plan = ty__calloc((size_t)(n_tensors ? n_tensors : 1), sizeof *plan);
    if (!plan) {
        st = ty__error(TY_ERR_NO_MEMORY, "out of memory planning %" PRId64 " tensors", n_tensors);
        goto done;
    }
    if ((st = make_plan(g, tg, plan)) != TY_OK) goto done;

    if ((st = ty__gguf_writer_init(&w)) != TY_OK) goto done;
    for (int64_t i = 0; i < ty__gguf_n_kv(g) && st == TY_OK; i++) st = ty__gguf_writer_copy_kv(w, g, i);
    if (st == TY_OK) st = ty__gguf_writer_set_u32(w, "general.file_type", tg->ftype);
    if (st == TY_OK) st = ty__gguf_writer_set_u32(w, "general.quantization_version", GGML_QUANTIZATION_VERSION);
    for (int64_t i = 0; i < n_tensors && st == TY_OK; i++)
        st = ty__gguf_writer_add_tensor(w, plan[i].t->name, plan[i].type, plan[i].t->n_dims, plan[i].t->ne);
    if (st == TY_OK) st = ty__gguf_writer_begin(w, out_path);
    if (st != TY_OK) goto done;

    /* The bar advances by tensor, weighted by output bytes so that one huge embedding does not stall it. */
    size_t bytes_in = 0, bytes_out = 0, total_out = 0;
    int64_t count_by_type[TY_TYPE_COUNT] = {0};
    bool warned_requant[TY_TYPE_COUNT] = {false};
    for (int64_t i = 0; i < n_tensors; i++) total_out += plan[i].nbytes;
    struct ty_progress prog;
    ty__progress_begin(&prog, "quantize", total_out);
    for (int64_t i = 0; i < n_tensors && st == TY_OK; i++) {
        const struct plan *p = &plan[i];
        const struct ty_gguf_tensor *t = p->t;
        TY_LOG_I("[%" PRId64 "/%" PRId64 "] %s: %s -> %s", i + 1, n_tensors, t->name, ty_type_name(t->type),
                 ty_type_name(p->type));
        if (t->type == p->type) {
            st = ty__gguf_writer_write_tensor(w, t->data, t->nbytes);
        } else {
            if (ty__type_traits(t->type)->is_quantized && !warned_requant[t->type]) {
                warned_requant[t->type] = true;
                fprintf(stderr,
                        "tongyun quantize: note: re-quantising %s tensors adds to their error; quantise from the "
                        "F16/BF16/F32 original when you have it\n",
                        ty_type_name(t->type));
            }
            uint8_t *buf = NULL;
            st = convert_tensor(t, p->type, n_threads, p->nbytes, &buf);
            if (st == TY_OK) st = ty__gguf_writer_write_tensor(w, buf, p->nbytes);
            ty_free(buf);
        }
        bytes_in += t->nbytes;
        bytes_out += p->nbytes;
        count_by_type[p->type]++;
        ty__progress_update(&prog, bytes_out);
    }
    ty__progress_end(&prog);
    if (st == TY_OK) st = ty__gguf_writer_finish(w);
    if (st == TY_OK) {
        char a[32], b[32];
        fprintf(stderr, "tongyun quantize: %s (%s) -> %s (%s) as %s;", in_path, fmt_mib(bytes_in, a, sizeof a),
                out_path, fmt_mib(bytes_out, b, sizeof b), tg->name);
        for (int k = 0; k < TY_TYPE_COUNT; k++)
            if (count_by_type[k]) fprintf(stderr, " %" PRId64 " %s", count_by_type[k], ty_type_name((enum ty_type)k));
        fprintf(stderr, " tensors\n");
    }

done:
    ty__gguf_writer_free(w);
    ty_free(plan);
    ty__gguf_close(g);
    return st;
}

int ty_cmd_quantize(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0;
    long n_threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    for (int i = 1; i < argc; i++) {
        if (ty_cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--threads") || !strcmp(argv[i], "-t")) {
            const char *v = ty_cli_value(argc, argv, &i);
            if (!v || !ty_cli_int("--threads", v, 1, 256, &n_threads)) return 2;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tongyun quantize: unknown option %s (see tongyun quantize --help)\n", argv[i]);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = argv[i];
        } else {
            fprintf(stderr, "tongyun quantize: too many arguments (see tongyun quantize --help)\n");
            return 2;
        }
    }
    if (n_pos != 3) {
        usage(stderr);
        return 2;
    }
    const struct ty_quant_target *tg = ty__quant_target_find(pos[2]);
    if (!tg) {
        fprintf(stderr, "tongyun quantize: unknown type '%s'; use one of %s\n", pos[2], ty__quant_target_names());
        return 2;
    }
    enum ty_status st = quantize_file(pos[0], pos[1], tg, (int)n_threads);
    return st == TY_OK ? 0 : ty_cli_fail("quantize", st);
}
