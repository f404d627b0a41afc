/* cmd-tokenize.c - PLACEHOLDER during development; replaced by the real command before any commit. */
#include "cli.h"
int ty_cmd_tokenize(int argc, char **argv) { fprintf(stderr, "tongyun tokenize: not implemented yet\n"); return 1; }
