/*
 * cmd-train.c - placeholder for `tongyun train` while it is being written this session; replaced wholly by its author.
 */
#include "cli.h"

int ty_cmd_train(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "tongyun %s: not implemented yet\n", argv[0]);
    return 1;
}
