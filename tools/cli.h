/*
 * cli.h - what the `tongyun` subcommands share: the command signature, and small argument helpers that turn a bad
 * flag value into a clear message instead of a silent zero. Each subcommand lives in its own tools/cmd-*.c file.
 */
#ifndef TY_CLI_H
#define TY_CLI_H

#include "base/base.h"

#include <jansson.h>
#include <stdio.h>

/* A subcommand: argv[0] is the subcommand name. Returns the process exit code (0 ok, 1 failure, 2 usage error). */
typedef int (*ty_cli_cmd)(int argc, char **argv);

int ty_cmd_run(int argc, char **argv);
int ty_cmd_chat(int argc, char **argv);
int ty_cmd_inspect(int argc, char **argv);
int ty_cmd_perplexity(int argc, char **argv);
int ty_cmd_tokenize(int argc, char **argv);
int ty_cmd_detokenize(int argc, char **argv);
int ty_cmd_convert(int argc, char **argv);
int ty_cmd_quantize(int argc, char **argv);
int ty_cmd_serve(int argc, char **argv);
int ty_cmd_keys(int argc, char **argv);
int ty_cmd_usage(int argc, char **argv);
int ty_cmd_mkmodel(int argc, char **argv);
int ty_cmd_devices(int argc, char **argv);
int ty_cmd_sim(int argc, char **argv);
int ty_cmd_plan(int argc, char **argv);
int ty_cmd_bench(int argc, char **argv);
int ty_cmd_train(int argc, char **argv);
int ty_cmd_finetune(int argc, char **argv);

/* Inside an option loop over argv with index `i` and a `const char *v`: takes the current flag's value into v
 * (advancing i), or returns 2 (a usage error, which ty_cli_value has explained) from the enclosing function. */
#define TY_CLI_VALUE()                                                                                                 \
    do {                                                                                                               \
        if (!(v = ty_cli_value(argc, argv, &i))) return 2;                                                             \
    } while (0)

/* True when argv[i] is `-h` or `--help`. */
bool ty_cli_is_help(const char *arg);
/* Takes the value after flag argv[*i] (advancing *i), or prints "FLAG needs a value" and returns NULL. */
const char *ty_cli_value(int argc, char **argv, int *i);
/* Parse numbers strictly: the whole string must be a number in range, else a message naming the flag is printed. */
bool ty_cli_int(const char *flag, const char *s, long min, long max, long *out);
bool ty_cli_float(const char *flag, const char *s, double min, double max, double *out);
/* Reads PATH ('-' = standard input) as JSON lines: skips blank lines, parses each, and calls `fn` with the value
 * (NULL when the line is not JSON, with `err` saying why) and its line number, stopping at the first non-zero return,
 * which it returns. `cmd` names the command in messages. */
typedef int (*ty_cli_jsonl_fn)(void *ctx, json_t *v, const json_error_t *err, const char *path, long line_no);
int ty_cli_jsonl_each(const char *cmd, const char *path, ty_cli_jsonl_fn fn, void *ctx);
/* Parses `--lora FILE[:SCALE]` into mp->lora and mp->lora_scale (default 1): text after the last ':' that reads as a
 * number is the scale (`spec` is split in place there); otherwise the whole of `spec` is the file. False, with a
 * message naming the flag, for a scale outside [-100, 100]. */
struct ty_model_params;
bool ty_cli_lora(const char *flag, char *spec, struct ty_model_params *mp);
/* The folder holding the running binary (Linux /proc/self/exe) into buf; false where it cannot be known. */
bool ty_cli_exe_dir(char *buf, size_t cap);
/* The model `run`, `chat` and `serve` use without -m: $TONGYUN_MODEL when set, else the bundled Tongyun-Mini,
 * data/tongyun-mini.gguf beside the binary (the build copies it there from data/tongyun-mini/). Says on stderr which
 * file it took; NULL, with a message, when there is none. Static storage. */
const char *ty_cli_default_model(const char *cmd);
/* Prints "tongyun CMD: " + ty_last_error() (or status text) to stderr and returns 1. */
int ty_cli_fail(const char *cmd, enum ty_status st);

#endif
