/* cmd-inspect.c - PLACEHOLDER during development; replaced by the real command before any commit. */
#include "cli.h"
int ty_cmd_inspect(int argc, char **argv) { fprintf(stderr, "tongyun inspect: not implemented yet\n"); return 1; }
