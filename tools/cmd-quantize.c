/* cmd-quantize.c - PLACEHOLDER during development; replaced by the real command before any commit. */
#include "cli.h"
int ty_cmd_quantize(int argc, char **argv) { fprintf(stderr, "tongyun quantize: not implemented yet\n"); return 1; }
