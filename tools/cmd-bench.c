/*
 * cmd-bench.c - placeholder for `tongyun bench` while it is being written this session; replaced wholly by its author.
 */
#include "cli.h"

int ty_cmd_bench(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "tongyun %s: not implemented yet\n", argv[0]);
    return 1;
}
