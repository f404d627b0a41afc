/* cmd-chat.c - PLACEHOLDER during development; replaced by the real command before any commit. */
#include "cli.h"
int ty_cmd_chat(int argc, char **argv) { fprintf(stderr, "tongyun chat: not implemented yet\n"); return 1; }
