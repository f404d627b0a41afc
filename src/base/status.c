/*
 * status.c - status strings, the per-thread last-error message and the assertion hook.
 * The message buffer is thread-local so that concurrent server requests never see each other's errors.
 */
#include "base.h"

#include <stdio.h>
#include <stdlib.h>

static _Thread_local char last_error[1024];

const char *ty_status_str(enum ty_status status) {
    switch (status) {
#define TY_STATUS_CASE(name, value, text)                                                                              \
    case name:                                                                                                         \
        return text;
        TY_STATUS_LIST(TY_STATUS_CASE)
#undef TY_STATUS_CASE
    default:
        return "unknown status";
    }
}

const char *ty_last_error(void) {
    return last_error;
}

enum ty_status ty__error(enum ty_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

enum ty_status ty__error_prefix(enum ty_status status, const char *fmt, ...) {
    char prefix[512], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    if (snprintf(last_error, sizeof last_error, "%s: %s", prefix, old[0] ? old : ty_status_str(status)) >=
        (int)sizeof last_error)
        memcpy(last_error + sizeof last_error - 4, "...", 4); /* cut short: say so */
    return status;
}

static void default_abort(const char *file, int line, const char *expr) {
    fprintf(stderr, "tongyun: assertion failed at %s:%d: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}

static ty_abort_hook abort_hook = default_abort;

ty_abort_hook ty_set_abort_hook(ty_abort_hook hook) {
    ty_abort_hook old = abort_hook;
    abort_hook = hook ? hook : default_abort;
    return old;
}

void ty__assert_fail(const char *file, int line, const char *expr) {
    abort_hook(file, line, expr);
    abort(); /* a hook that returns still must not let execution continue past a broken invariant */
}
