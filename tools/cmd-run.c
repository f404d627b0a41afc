/* cmd-run.c - PLACEHOLDER during development; replaced by the real command before any commit. */
#include "cli.h"
int ty_cmd_run(int argc, char **argv) { fprintf(stderr, "tongyun run: not implemented yet\n"); return 1; }
