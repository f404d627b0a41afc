/*
 * tongyun.c - the `tongyun` command: dispatches to one subcommand per file (tools/cmd-*.c) and holds the argument
 * helpers they share. This is the only place that turns a status into a process exit code.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

static const struct {
    const char *name;
    ty_cli_cmd fn;
    const char *summary;
} commands[] = {
    {"run", ty_cmd_run, "generate text from a prompt"},
    {"chat", ty_cmd_chat, "interactive multi-turn chat"},
    {"inspect", ty_cmd_inspect, "show a GGUF file's metadata, tensors and memory needs"},
    {"perplexity", ty_cmd_perplexity, "measure perplexity of a model on a text file"},
    {"tokenize", ty_cmd_tokenize, "text to token ids"},
    {"detokenize", ty_cmd_detokenize, "token ids to text"},
    {"convert", ty_cmd_convert, "convert a Hugging Face checkpoint to GGUF"},
    {"quantize", ty_cmd_quantize, "re-encode a GGUF model's weights in another type"},
    {"serve", ty_cmd_serve, "OpenAI-compatible HTTP server with batching, API keys and metrics"},
    {"keys", ty_cmd_keys, "create, list and revoke the server's API keys"},
    {"usage", ty_cmd_usage, "report the server's usage ledger per key per day"},
    {"bench", ty_cmd_bench, "measure prefill and decode speed against this machine's roofline"},
    {"train", ty_cmd_train, "train a Qwen3-architecture model from scratch or from a GGUF"},
    {"finetune", ty_cmd_finetune, "LoRA fine-tuning of a GGUF model on chat conversations"},
    {"mkmodel", ty_cmd_mkmodel, "write a synthetic random-weight model at a released Qwen shape"},
    {"devices", ty_cmd_devices, "the device catalogue, every figure with its source"},
    {"sim", ty_cmd_sim, "simulate serving (or training) a model on a cluster of chips"},
    {"plan", ty_cmd_plan, "find the cheapest chips and parallelism for a load and SLOs"},
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: tongyun COMMAND [ARGS]   (tongyun COMMAND --help for details)\n\n"
            "Tongyun %d.%d.%d - the Qwen model, cloud and chip stack.\n\ncommands:\n",
            TY_VERSION_MAJOR, TY_VERSION_MINOR, TY_VERSION_PATCH);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

bool ty_cli_is_help(const char *arg) {
    return !strcmp(arg, "-h") || !strcmp(arg, "--help");
}

const char *ty_cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "tongyun: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

bool ty_cli_int(const char *flag, const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "tongyun: %s expects an integer in [%ld, %ld], got '%s'\n", flag, min, max, s);
        return false;
    }
    *out = v;
    return true;
}

bool ty_cli_float(const char *flag, const char *s, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max)) {
        fprintf(stderr, "tongyun: %s expects a number in [%g, %g], got '%s'\n", flag, min, max, s);
        return false;
    }
    *out = v;
    return true;
}

bool ty_cli_exe_dir(char *buf, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    if (n <= 0) return false;
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash) return false;
    *slash = 0;
    return true;
}

const char *ty_cli_default_model(const char *cmd) {
    static char path[PATH_MAX];
    const char *env = getenv("TONGYUN_MODEL");
    if (env && *env) {
        fprintf(stderr, "tongyun %s: no -m given: using $TONGYUN_MODEL (%s)\n", cmd, env);
        return env;
    }
    char dir[PATH_MAX];
    int n = ty_cli_exe_dir(dir, sizeof dir) ? snprintf(path, sizeof path, "%s/data/tongyun-mini.gguf", dir) : -1;
    if (n > 0 && (size_t)n < sizeof path && access(path, R_OK) == 0) {
        fprintf(stderr,
                "tongyun %s: no -m given: using the bundled Tongyun-Mini (%s), a 5.8M-parameter model that "
                "knows the format of dictionary answers better than their content\n",
                cmd, path);
        return path;
    }
    fprintf(stderr,
            "tongyun %s: -m MODEL is required (no $TONGYUN_MODEL, and no bundled model at data/tongyun-mini.gguf "
            "beside the binary)\n",
            cmd);
    return NULL;
}

bool ty_cli_lora(const char *flag, char *spec, struct ty_model_params *mp) {
    char *colon = strrchr(spec, ':'), *end = NULL;
    double scale = 1.0;
    if (colon && colon[1]) {
        errno = 0;
        double v = strtod(colon + 1, &end);
        if (!errno && end != colon + 1 && !*end) {
            if (!(v >= -100 && v <= 100)) {
                fprintf(stderr, "tongyun: %s: the scale after ':' must be in [-100, 100], got '%s'\n", flag, colon + 1);
                return false;
            }
            *colon = 0;
            scale = v;
        }
    }
    mp->lora = spec;
    mp->lora_scale = (float)scale;
    return true;
}

int ty_cli_jsonl_each(const char *cmd, const char *path, ty_cli_jsonl_fn fn, void *ctx) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "tongyun %s: cannot open %s\n", cmd, path);
        return 1;
    }
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    long line_no = 0;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &line_cap, f)) > 0) {
        line_no++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (!len) continue;
        json_error_t err;
        json_t *v = json_loadb(line, len, JSON_ALLOW_NUL, &err);
        rc = fn(ctx, v, &err, path, line_no);
        json_decref(v);
    }
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

int ty_cli_fail(const char *cmd, enum ty_status st) {
    const char *msg = ty_last_error();
    fprintf(stderr, "tongyun %s: %s\n", cmd, msg[0] ? msg : ty_status_str(st));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2 || ty_cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tongyun %d.%d.%d\n", TY_VERSION_MAJOR, TY_VERSION_MINOR, TY_VERSION_PATCH);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "tongyun: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
