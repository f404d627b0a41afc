/* cmd-detokenize.c - PLACEHOLDER during development; replaced by the real command before any commit. */
#include "cli.h"
int ty_cmd_detokenize(int argc, char **argv) { fprintf(stderr, "tongyun detokenize: not implemented yet\n"); return 1; }
