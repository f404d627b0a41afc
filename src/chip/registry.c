/*
 * registry.c - the backends compiled into this build, by name. This is the only file that knows which optional
 * backends exist (`#ifdef TY_USE_CUDA` and the like belong here and nowhere else); everything else asks for a name.
 *
 * "cpu" names the best CPU backend of the build and "cpu-ref" always the plain reference, so tests can compare the
 * two. NULL asks for the best backend overall: the first entry of the table.
 */
#include "chip/backend.h"

#include <pthread.h>
#include <stdio.h>

struct entry {
    const char *name;
    enum ty_status (*init)(int n_threads, struct ty_backend **out);
};

/* Best first. A faster CPU backend, CUDA and OpenCL add their lines above the reference one. */
static const struct entry backends[] = {
    {"cpu", ty__backend_cpu_init},
    {"cpu-ref", ty__backend_cpu_ref_init},
};

static char names[256];
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void build_names(void) {
    size_t len = 0;
    for (size_t i = 0; i < sizeof backends / sizeof backends[0] && len < sizeof names; i++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "", backends[i].name);
}

const char *ty__backend_names(void) {
    pthread_once(&names_once, build_names);
    return names;
}

enum ty_status ty__backend_init(const char *name, int n_threads, struct ty_backend **out) {
    *out = NULL;
    if (n_threads < 0)
        return ty__error(TY_ERR_INVALID_ARG, "thread count %d is negative; use 0 for one per core", n_threads);
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        if (name && strcmp(name, backends[i].name) != 0) continue;
        enum ty_status st = backends[i].init(n_threads, out);
        if (st != TY_OK) return ty__error_prefix(st, "backend '%s'", backends[i].name);
        TY_ASSERT((*out)->iface->version == TY_BACKEND_IFACE_VERSION);
        return TY_OK;
    }
    return ty__error(TY_ERR_UNSUPPORTED, "backend '%s' is not available in this build; available: %s", name,
                     ty__backend_names());
}

void ty__backend_free(struct ty_backend *be) {
    if (be) be->iface->free(be);
}
