/*
 * cmd-convert.c - `tongyun convert HF_DIR OUT.gguf`: a Hugging Face checkpoint folder (config.json, safetensors,
 * tokenizer.json) to one GGUF file, with the weight type chosen by --type. The work is in src/model/convert.c.
 */
#include "cli.h"

#include "model/convert.h"
#include "model/quant.h"

#include <stdlib.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: tongyun convert HF_DIR OUT.gguf [--type TYPE] [--name NAME] [-t N] [-v | -q]\n"
            "\n"
            "Converts a Hugging Face checkpoint folder to GGUF without Python. HF_DIR holds config.json,\n"
            "model.safetensors (or model.safetensors.index.json and its shards), tokenizer.json and, optionally,\n"
            "tokenizer_config.json (special tokens, chat template). The GGUF uses llama.cpp's names and keys.\n"
            "\n"
            "  --type TYPE       type of the weight matrices (default f16, as llama.cpp's converter);\n"
            "                    one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k.\n"
            "                    Norms and biases are always f32. A quantized type whose block does not\n"
            "                    divide a matrix's rows falls back to f16 for that matrix (with a warning).\n"
            "  --name NAME       general.name (default: the folder's name)\n"
            "  -t, --threads N   threads converting each tensor (default: one per core; same output)\n"
            "  -v, --verbose     list every tensor as it is converted\n"
            "  -q, --quiet       print only warnings and errors\n"
            "\n"
            "Architectures: %s.\n"
            "The output is written under a temporary name and renamed when complete.\n",
            ty__convert_supported_archs());
}

int ty_cmd_convert(int argc, char **argv) {
    struct ty_convert_params p = ty__convert_default_params();
    const char *pos[2] = {NULL, NULL};
    /* A conversion is a one-off job: say what was done (padding, skipped tensors, the result) unless TY_LOG says
     * otherwise. */
    if (!getenv("TY_LOG")) ty__log_set_level(TY_LOG_INFO);
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--type")) {
            const char *v = ty_cli_value(argc, argv, &i);
            if (!v) return 2;
            enum ty_type t;
            if (!ty__type_from_name(v, &t) || !ty__convert_type_ok(t)) {
                fprintf(stderr, "tongyun convert: --type: unknown or unsupported type '%s'; choose one of %s\n", v,
                        ty__supported_types());
                return 2;
            }
            p.type = t;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            const char *v = ty_cli_value(argc, argv, &i);
            long n;
            if (!v || !ty_cli_int(a, v, 1, 1024, &n)) return 2;
            p.n_threads = (int)n;
        } else if (!strcmp(a, "--name")) {
            if (!(p.name = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            ty__log_set_level(TY_LOG_DEBUG);
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            ty__log_set_level(TY_LOG_WARN);
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "tongyun convert: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (n_pos < 2) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "tongyun convert: unexpected argument '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (n_pos != 2) {
        usage(stderr);
        return 2;
    }
    enum ty_status st = ty__convert_hf(pos[0], pos[1], &p);
    if (st != TY_OK) return ty_cli_fail("convert", st);
    return 0;
}
