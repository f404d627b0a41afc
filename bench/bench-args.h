/*
 * bench-args.h - command-line pieces the benchmark programs share.
 */
#ifndef TY_BENCH_ARGS_H
#define TY_BENCH_ARGS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A comma-separated list of thread counts ("1,2") into threads[0..max): the count parsed, or -1 when an entry is
 * not a positive number. */
static inline int bench_thread_list(const char *v, int *threads, int max) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", v);
    int n = 0;
    for (char *tok = strtok(buf, ","); tok && n < max; tok = strtok(NULL, ","))
        if ((threads[n++] = atoi(tok)) < 1) return -1;
    return n;
}

#endif /* TY_BENCH_ARGS_H */
