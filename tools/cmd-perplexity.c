/* cmd-perplexity.c - PLACEHOLDER during development; replaced by the real command before any commit. */
#include "cli.h"
int ty_cmd_perplexity(int argc, char **argv) { fprintf(stderr, "tongyun perplexity: not implemented yet\n"); return 1; }
