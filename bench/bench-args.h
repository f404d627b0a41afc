/*
 * bench-args.h - command-line pieces the benchmark programs share.
 */
#ifndef TY_BENCH_ARGS_H
#define TY_BENCH_ARGS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A comma-separated list of positive counts (threads "1,2", columns "32,128,512") into out[0..max): the count
 * parsed, or -1 when an entry is not a positive number. */
static inline int bench_int_list(const char *v, int *out, int max) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", v);
    int n = 0;
    for (char *tok = strtok(buf, ","); tok && n < max; tok = strtok(NULL, ","))
        if ((out[n++] = atoi(tok)) < 1) return -1;
    return n;
}

#endif /* TY_BENCH_ARGS_H */
