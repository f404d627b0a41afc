/* cmd-convert.c - PLACEHOLDER during development; replaced by the real command before any commit. */
#include "cli.h"
int ty_cmd_convert(int argc, char **argv) { fprintf(stderr, "tongyun convert: not implemented yet\n"); return 1; }
