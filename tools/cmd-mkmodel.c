/*
 * cmd-mkmodel.c - `tongyun mkmodel --preset NAME --type TYPE OUT.gguf`: writes a synthetic random-weight model at a
 * released Qwen model's shapes, with the real Qwen3 tokenizer, for benchmarks without downloads (src/model/mkmodel.c
 * does the work). This file finds the tokenizer, keeps big presets within the development machines' memory, and
 * reports what was written and how fast.
 */
#include "cli.h"

#include "model/mkmodel.h"
#include "model/quant-mix.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Without --layers, a preset whose file would exceed this is cut to the layers that fit: the development and CI
 * machines have 24 GiB, and the model is mapped whole, with the KV cache and the OS beside it. */
#define DEFAULT_MAX_BYTES ((uint64_t)20 << 30)

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tongyun mkmodel --preset NAME --type TYPE OUT.gguf [--seed S] [--layers N|all]\n"
        "                       [--tokenizer PATH] [--threads N]\n"
        "       tongyun mkmodel --list\n"
        "\n"
        "Writes a synthetic model: the exact shapes of a released Qwen checkpoint, random weights at a\n"
        "realistic scale (activations and logits of a trained model's magnitude, not its knowledge), and the\n"
        "real Qwen3 tokenizer. The GGUF has the metadata keys and tensor names `tongyun convert` writes for the\n"
        "real checkpoint, so run, inspect and bench load it as they would the real model. Same seed, same bytes.\n"
        "\n"
        "Options:\n"
        "  --preset NAME     a released shape (see --list)\n"
        "  --type TYPE       weight type, as `tongyun quantize` takes it: %s\n"
        "  --seed S          random seed (default 1)\n"
        "  --layers N|all    write only the first N layers. Without it, a preset whose file would exceed 20 GiB\n"
        "                    keeps the layers that fit (Qwen3-30B-A3B at most types; 7B/8B at f32); `all`\n"
        "                    writes every layer whatever the size. A reduced model says so: its general.name\n"
        "                    reads \"..., N of M layers\" and the key tongyun.synthetic.reduced states what differs.\n"
        "  --tokenizer PATH  tokenizer.json, or a folder holding tokenizer.json and tokenizer_config.json\n"
        "                    (default: data/qwen3/ beside the tongyun binary, data/qwen3.5/ for the qwen3.5\n"
        "                    presets, which the build decompresses from data/tokenizers/; or make one: gzip -dc\n"
        "                    data/tokenizers/qwen3/tokenizer.json.gz > tokenizer.json)\n"
        "  --threads N       generator threads (default: one per core); the output does not depend on it\n"
        "  --list            list the presets with their shapes and sizes\n"
        "  -h, --help        show this help\n"
        "\n"
        "Exit status: 0 on success, 1 on failure (OUT is left untouched), 2 on a usage error.\n",
        ty__quant_target_names());
}

static void list_presets(void) {
    int n;
    const struct ty_mkmodel_preset *ps = ty__mkmodel_presets(&n);
    printf("%-14s %-9s %6s %6s %6s %7s %8s %7s %-6s %-13s %9s %9s %9s\n", "preset", "arch", "layers", "embd", "ff",
           "heads", "head_dim", "vocab", "tied", "experts", "params", "f16", "q4_k_m");
    for (int i = 0; i < n; i++) {
        const struct ty_mkmodel_preset *p = &ps[i];
        char heads[16], experts[32], params[32];
        snprintf(heads, sizeof heads, "%d/%d", p->n_head, p->n_head_kv);
        uint64_t active, total = ty__mkmodel_n_params(p, p->n_layer, &active);
        if (p->n_expert)
            snprintf(experts, sizeof experts, "%d top-%d x%d", p->n_expert, p->n_expert_used, p->n_ff_exp);
        else
            snprintf(experts, sizeof experts, "-");
        if (p->n_expert)
            snprintf(params, sizeof params, "%.1fB/%.1fB", (double)total / 1e9, (double)active / 1e9);
        else
            snprintf(params, sizeof params, "%.2fB", (double)total / 1e9);
        double gib[2] = {0, 0};
        const char *types[2] = {"f16", "q4_k_m"};
        for (int k = 0; k < 2; k++) {
            struct ty_mkmodel_params mp = {.preset = p, .type = types[k], .n_layer = p->n_layer};
            struct ty_mkmodel_info info;
            if (ty__mkmodel_plan(&mp, &info) == TY_OK) gib[k] = (double)info.tensor_bytes / (double)(1ull << 30);
        }
        printf("%-14s %-9s %6d %6d %6d %7s %8d %7d %-6s %-13s %9s %6.2f GiB %6.2f GiB\n", p->name, p->arch, p->n_layer,
               p->n_embd, p->n_ff, heads, p->head_dim, p->n_vocab, p->tied ? "yes" : "no", experts, params, gib[0],
               gib[1]);
    }
    printf("\nEvery preset copies its checkpoint's config.json (sources in src/model/mkmodel.c); qwen2 presets have\n"
           "q/k/v biases, qwen3 ones q/k norms. MoE params are total/active.\n");
}

static bool is_dir(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISDIR(s.st_mode);
}

static bool is_file(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

/* dir + "/" + name into buf; false when it does not fit (then no path is used). */
static bool join(char *buf, size_t cap, const char *dir, const char *name) {
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n > 0 && (size_t)n < cap;
}

/* Resolves --tokenizer (a file or folder; without it `def_dir` beside the binary) into tokenizer.json and, when
 * present, tokenizer_config.json beside it. */
static bool find_tokenizer(const char *arg, const char *def_dir, char *json, char *config, size_t cap) {
    char dir[PATH_MAX];
    bool ok;
    if (!arg) {
        char exe[PATH_MAX];
        ok = ty_cli_exe_dir(exe, sizeof exe) && join(dir, sizeof dir, exe, def_dir) &&
             join(json, cap, dir, "tokenizer.json");
    } else if (is_dir(arg)) {
        ok = join(json, cap, arg, "tokenizer.json");
        if (ok) snprintf(dir, sizeof dir, "%s", arg);
    } else {
        ok = strlen(arg) < cap && strlen(arg) < sizeof dir;
        if (ok) {
            memcpy(json, arg, strlen(arg) + 1);
            memcpy(dir, arg, strlen(arg) + 1);
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = 0;
            else
                memcpy(dir, ".", 2);
        }
    }
    if (!ok || !is_file(json)) return false;
    if (!join(config, cap, dir, "tokenizer_config.json") || !is_file(config)) config[0] = 0;
    return true;
}

int ty_cmd_mkmodel(int argc, char **argv) {
    const char *preset = NULL, *type = NULL, *out = NULL, *tok_arg = NULL;
    long seed_l = 1, layers = 0, n_threads = 0;
    bool all_layers = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--list")) {
            list_presets();
            return 0;
        } else if (!strcmp(a, "--preset")) {
            if (!(preset = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--type")) {
            if (!(type = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--tokenizer")) {
            if (!(tok_arg = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_int("--seed", v, 0, LONG_MAX, &seed_l)) return 2;
        } else if (!strcmp(a, "--layers")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            if (!strcmp(v, "all"))
                all_layers = true;
            else if (!ty_cli_int("--layers", v, 1, 4096, &layers))
                return 2;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_int("--threads", v, 1, 256, &n_threads)) return 2;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "tongyun mkmodel: unknown option %s (see tongyun mkmodel --help)\n", a);
            return 2;
        } else if (!out) {
            out = a;
        } else {
            fprintf(stderr, "tongyun mkmodel: more than one output file given ('%s', '%s')\n", out, a);
            return 2;
        }
    }
    if (!preset || !type || !out) {
        fprintf(stderr, "tongyun mkmodel: --preset, --type and OUT.gguf are required (tongyun mkmodel --list shows the "
                        "presets)\n");
        return 2;
    }
    struct ty_mkmodel_params mp = {.type = type, .seed = (uint64_t)seed_l, .n_threads = (int)n_threads};
    if (!(mp.preset = ty__mkmodel_find_preset(preset))) {
        fprintf(stderr, "tongyun mkmodel: unknown preset '%s'; tongyun mkmodel --list shows them\n", preset);
        return 2;
    }
    if (!ty__quant_target_find(type)) {
        fprintf(stderr, "tongyun mkmodel: unknown type '%s'; use one of %s\n", type, ty__quant_target_names());
        return 2;
    }
    if (layers > mp.preset->n_layer) {
        fprintf(stderr, "tongyun mkmodel: %s has %d layers; --layers must be 1 .. %d\n", mp.preset->hf_name,
                mp.preset->n_layer, mp.preset->n_layer);
        return 2;
    }
    mp.n_layer = all_layers ? mp.preset->n_layer : (int32_t)layers;
    mp.max_bytes = all_layers || layers ? 0 : DEFAULT_MAX_BYTES;

    /* Qwen3.5 has its own 248k-token vocabulary (data/tokenizers/qwen3.5/); the other presets share Qwen3's. */
    const char *def_dir = !strncmp(mp.preset->arch, "qwen35", 6) ? "data/qwen3.5" : "data/qwen3";
    char json[PATH_MAX], config[PATH_MAX];
    if (!find_tokenizer(tok_arg, def_dir, json, config, sizeof json)) {
        fprintf(stderr,
                "tongyun mkmodel: no tokenizer.json at %s%s; build the project (it decompresses the bundled "
                "tokenizers into data/ beside tongyun) or pass --tokenizer PATH (make one with: gzip -dc "
                "data/tokenizers/%s/tokenizer.json.gz > tokenizer.json)\n",
                tok_arg ? tok_arg : def_dir, tok_arg ? "" : "/ beside the tongyun binary", def_dir + 5);
        return 1;
    }
    mp.tokenizer_json = json;
    mp.tokenizer_config = config[0] ? config : NULL;

    struct ty_mkmodel_info info;
    enum ty_status st = ty__mkmodel_plan(&mp, &info);
    if (st != TY_OK) return ty_cli_fail("mkmodel", st);
    fprintf(stderr, "tongyun mkmodel: %s: %s, %d layers, %.2f GiB of %s weights (%" PRId64 " tensors)\n", out,
            info.name, info.n_layer, (double)info.tensor_bytes / (double)(1ull << 30), type, info.n_tensors);
    if (info.reduced[0]) fprintf(stderr, "tongyun mkmodel: reduced: %s\n", info.reduced);
    if (info.n_fallback)
        fprintf(stderr,
                "tongyun mkmodel: note: %" PRId64 " matrices have rows that are not a multiple of the %s block and "
                "use llama.cpp's fallback type (tongyun inspect shows every tensor's type)\n",
                info.n_fallback, type);

    double t0 = ty__time_s();
    st = ty__mkmodel_write(out, &mp, &info);
    if (st != TY_OK) return ty_cli_fail("mkmodel", st);
    double dt = ty__time_s() - t0;
    if (dt <= 0) dt = 1e-9;
    fprintf(stderr, "tongyun mkmodel: wrote %s in %.2f s (%.0f MiB/s, %.0f M params/s)\n", out, dt,
            (double)info.tensor_bytes / (double)(1 << 20) / dt, (double)info.n_params / 1e6 / dt);
    return 0;
}
