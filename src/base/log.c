/*
 * log.c - leveled logging and progress bars, both on stderr so that stdout carries only a command's real output
 * (generated text, ids, JSON). TY_LOG=debug|info|warn|error sets the level; TY_PROGRESS=0/1 forces bars off/on.
 */
#include "base.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int log_level = -1;

static int level_from_env(void) {
    const char *e = getenv("TY_LOG");
    if (!e) return TY_LOG_WARN;
    if (!strcmp(e, "debug")) return TY_LOG_DEBUG;
    if (!strcmp(e, "info")) return TY_LOG_INFO;
    if (!strcmp(e, "error")) return TY_LOG_ERROR;
    return TY_LOG_WARN;
}

void ty__log_set_level(enum ty_log_level level) {
    log_level = (int)level;
}
enum ty_log_level ty__log_get_level(void) {
    if (log_level < 0) log_level = level_from_env();
    return (enum ty_log_level)log_level;
}

void ty__log(enum ty_log_level level, const char *fmt, ...) {
    if ((int)level > (int)ty__log_get_level()) return;
    static const char *names[] = {"error", "warning", "info", "debug"};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "tongyun: %s: %s\n", names[level], msg);
}

double ty__time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void draw(struct ty_progress *p, bool final) {
    double now = ty__time_s();
    if (!final && now - p->t_last_draw < 0.1) return;
    p->t_last_draw = now;
    double frac = p->total ? (double)p->done / (double)p->total : 1.0;
    if (frac > 1) frac = 1;
    int width = 30, fill = (int)(frac * width);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    double el = now - p->t_start;
    double eta = frac > 0 ? el / frac - el : 0;
    fprintf(stderr, "\r%-10s [%s] %5.1f%%  %.1fs elapsed, %.1fs left ", p->label, bar, frac * 100, el, final ? 0 : eta);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

void ty__progress_begin(struct ty_progress *p, const char *label, uint64_t total) {
    const char *e = getenv("TY_PROGRESS");
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->t_start = ty__time_s();
    p->enabled = e ? atoi(e) != 0 : isatty(2);
    if (p->enabled) draw(p, false);
}

void ty__progress_update(struct ty_progress *p, uint64_t done) {
    p->done = done;
    if (p->enabled) draw(p, false);
}

void ty__progress_end(struct ty_progress *p) {
    p->done = p->total;
    if (p->enabled) draw(p, true);
}
