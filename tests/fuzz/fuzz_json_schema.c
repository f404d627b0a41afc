/*
 * fuzz_json_schema.c - libFuzzer target for the JSON Schema compiler and the byte-level matcher of constrained
 * decoding (src/model/constrain.c). The input is a schema, optionally followed by a NUL byte and candidate output:
 *  - compiling any input either succeeds or fails with a message (never a crash, leak or hang);
 *  - with candidate output, its bytes go through the matcher one at a time until one is refused; whenever the matcher
 *    says the output is complete, the accepted bytes must parse (jansson) and validate against the schema (the
 *    independent validator of tests/model/schema_validate.h);
 *  - without it, the matcher generates bytes itself, choosing among the bytes it allows with a generator seeded from
 *    the input: at every step some byte must be allowed unless the output is complete (no dead ends), and a complete
 *    output must parse and validate.
 * Seeds and regressions live in tests/fuzz/corpus/json_schema/.
 */
#include "../../src/model/constrain.c"
#include "../model/schema_validate.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* The matcher's state allows byte `b` (tried without committing). */
static bool allows(struct ty_matcher *m, uint8_t b) {
    struct set r;
    return run_bytes(m, &b, 1, &r);
}

/* Of the allowed bytes `c` (k), the one that best closes the innermost open value. */
static uint8_t closer(const struct ty_matcher *m, const uint8_t *c, int k) {
    static const char *const pref[] = {
        [F_ROOT] = "", [F_OBJ] = "}:\"", [F_KEY] = "\"", [F_ARR] = "]0", [F_STR] = "\"", [F_NUM] = "}]", [F_LIT] = ""};
    for (const char *p = pref[m->cur.f[0]->kind]; *p; p++)
        for (int i = 0; i < k; i++)
            if (c[i] == (uint8_t)*p) return c[i];
    for (int i = 0; i < k; i++)
        if (!is_ws(c[i])) return c[i];
    return c[0];
}

static void check_complete(json_t *schema, const char *text, size_t n) {
    json_error_t je;
    json_t *v = json_loadb(text, n, JSON_DECODE_ANY, &je);
    if (!v) {
        fprintf(stderr, "matcher accepted text that does not parse (%s): %.*s\n", je.text, (int)n, text);
        TY_ASSERT(v != NULL);
    }
    if (!valid(schema, schema, v, 0)) {
        fprintf(stderr, "matcher accepted text that does not validate: %.*s\n", (int)n, text);
        TY_ASSERT(false);
    }
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t schema_len = nul ? (size_t)(nul - data) : size;
    char *text = malloc(schema_len + 1);
    if (!text) return 0;
    memcpy(text, data, schema_len);
    text[schema_len] = 0;
    struct ty_constrain_spec spec = {.kind = TY_CONSTRAIN_JSON_SCHEMA, .schema_json = text};
    struct ty_grammar *g = NULL;
    enum ty_status st = ty__grammar_compile(&spec, &g);
    json_t *schema = st == TY_OK ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    free(text);
    if (st != TY_OK) {
        TY_ASSERT(ty_last_error()[0]);
        return 0;
    }
    TY_ASSERT(schema != NULL);
    struct ty_matcher *m = NULL;
    if (ty__matcher_init(g, NULL, &m) != TY_OK) {
        ty__grammar_unref(g);
        json_decref(schema);
        return 0;
    }
    char out[4096];
    size_t n = 0;
    if (nul) {
        for (const uint8_t *p = nul + 1; p < data + size && n < sizeof out; p++) {
            if (!ty__matcher_accept_bytes(m, (const char *)p, 1)) break;
            out[n++] = (char)*p;
            if (ty__matcher_can_end(m)) check_complete(schema, out, n);
        }
    } else {
        uint64_t seed = 1469598103934665603ull;
        for (size_t i = 0; i < size; i++) seed = (seed ^ data[i]) * 1099511628211ull;
        uint8_t choices[256];
        for (int step = 0; n < sizeof out; step++) {
            bool end = ty__matcher_can_end(m);
            if (end) check_complete(schema, out, n);
            int k = 0;
            for (int b = 0; b < 256; b++)
                if (allows(m, (uint8_t)b)) choices[k++] = (uint8_t)b;
            TY_ASSERT(k > 0 || end); /* no dead end: what the matcher allows can always be completed */
            if (!k || (end && (seed >> 7) % 4 == 0)) break;
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            uint8_t pick = choices[(seed >> 33) % (uint64_t)k];
            if (step > 200) pick = closer(m, choices, k); /* after a while, close what is open so generation ends */
            TY_ASSERT(ty__matcher_accept_bytes(m, (const char *)&pick, 1));
            out[n++] = (char)pick;
        }
    }
    ty__matcher_free(m);
    ty__grammar_unref(g);
    json_decref(schema);
    return 0;
}
