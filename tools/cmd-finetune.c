/*
 * cmd-finetune.c - placeholder for `tongyun finetune` while it is being written this session; replaced wholly by its author.
 */
#include "cli.h"

int ty_cmd_finetune(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "tongyun %s: not implemented yet\n", argv[0]);
    return 1;
}
