/*
 * schema_validate.h - a small JSON Schema validator over the raw schema (jansson), independent of the grammar that
 * src/model/constrain.c compiles: the keywords constrained decoding supports, with JSON Schema's semantics (1 == 1.0,
 * string lengths in code points, oneOf = exactly one). Shared by tests/model/test_constrain.c and
 * tests/fuzz/fuzz_json_schema.c to check that what the matcher accepts validates.
 */
#ifndef TY_TEST_SCHEMA_VALIDATE_H
#define TY_TEST_SCHEMA_VALIDATE_H

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A local reference "#/a/b" (JSON pointer, ~0 and ~1 unescaped; array members by index). */
static json_t *resolve(json_t *root, const char *ref) {
    if (!ref || ref[0] != '#') return NULL;
    json_t *v = root;
    for (const char *p = ref + 1; *p == '/' && v;) {
        char tok[256];
        size_t n = 0;
        for (p++; *p && *p != '/'; p++) {
            char ch = *p;
            if (ch == '~' && (p[1] == '0' || p[1] == '1')) ch = *++p == '0' ? '~' : '/';
            if (n + 1 < sizeof tok) tok[n++] = ch;
        }
        tok[n] = 0;
        v = json_is_array(v) ? json_array_get(v, (size_t)atol(tok)) : json_object_get(v, tok);
    }
    return v;
}

static double num(json_t *x) {
    return json_number_value(x);
}

/* Equality as JSON Schema (and Python) sees it: 1 == 1.0. */
static bool json_eq(json_t *a, json_t *b) {
    if (json_is_number(a) && json_is_number(b)) return json_number_value(a) == json_number_value(b);
    if (json_typeof(a) != json_typeof(b)) return false;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!json_eq(json_array_get(a, i), json_array_get(b, i))) return false;
        return true;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return false;
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !json_eq(v, w)) return false;
        }
        return true;
    }
    return json_equal(a, b);
}

static bool has_type(json_t *v, const char *t) {
    if (!strcmp(t, "object")) return json_is_object(v);
    if (!strcmp(t, "array")) return json_is_array(v);
    if (!strcmp(t, "string")) return json_is_string(v);
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "integer"))
        return json_is_integer(v) || (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    if (!strcmp(t, "null")) return json_is_null(v);
    return false;
}

static bool valid(json_t *root, json_t *s, json_t *v, int depth) {
    if (depth > 200) return false;
    if (json_is_boolean(s)) return json_is_true(s);
    json_t *x;
    if ((x = json_object_get(s, "$ref"))) return valid(root, resolve(root, json_string_value(x)), v, depth + 1);
    if ((x = json_object_get(s, "anyOf"))) {
        for (size_t i = 0; i < json_array_size(x); i++)
            if (valid(root, json_array_get(x, i), v, depth + 1)) return true;
        return false;
    }
    if ((x = json_object_get(s, "oneOf"))) {
        int n = 0;
        for (size_t i = 0; i < json_array_size(x); i++) n += valid(root, json_array_get(x, i), v, depth + 1);
        return n == 1;
    }
    if ((x = json_object_get(s, "allOf"))) {
        for (size_t i = 0; i < json_array_size(x); i++)
            if (!valid(root, json_array_get(x, i), v, depth + 1)) return false;
        return true;
    }
    if ((x = json_object_get(s, "type"))) {
        bool ok = json_is_true(json_object_get(s, "nullable")) && json_is_null(v);
        if (json_is_string(x)) ok |= has_type(v, json_string_value(x));
        for (size_t i = 0; json_is_array(x) && i < json_array_size(x); i++)
            ok |= has_type(v, json_string_value(json_array_get(x, i)));
        if (!ok) return false;
    }
    if ((x = json_object_get(s, "const")) && !json_eq(x, v)) return false;
    if ((x = json_object_get(s, "enum"))) {
        bool ok = false;
        for (size_t i = 0; i < json_array_size(x); i++) ok |= json_eq(json_array_get(x, i), v);
        if (!ok) return false;
    }
    if (json_is_string(v)) {
        int64_t n = 0;
        const char *p = json_string_value(v);
        for (size_t i = 0; i < json_string_length(v); i++) n += ((unsigned char)p[i] & 0xC0) != 0x80;
        if ((x = json_object_get(s, "minLength")) && n < num(x)) return false;
        if ((x = json_object_get(s, "maxLength")) && n > num(x)) return false;
    }
    if (json_is_object(v)) {
        json_t *props = json_object_get(s, "properties"), *addl = json_object_get(s, "additionalProperties");
        json_t *req = json_object_get(s, "required");
        for (size_t i = 0; i < json_array_size(req); i++)
            if (!json_object_get(v, json_string_value(json_array_get(req, i)))) return false;
        const char *k;
        json_t *val;
        json_object_foreach(v, k, val) {
            json_t *ps = json_object_get(props, k);
            if (ps ? !valid(root, ps, val, depth + 1) : addl && !valid(root, addl, val, depth + 1)) return false;
        }
    }
    if (json_is_array(v)) {
        json_t *prefix = json_object_get(s, "prefixItems"), *items = json_object_get(s, "items");
        size_t n = json_array_size(v);
        if ((x = json_object_get(s, "minItems")) && n < num(x)) return false;
        if ((x = json_object_get(s, "maxItems")) && n > num(x)) return false;
        for (size_t i = 0; i < n; i++) {
            json_t *is = i < json_array_size(prefix) ? json_array_get(prefix, i) : items;
            if (is && !valid(root, is, json_array_get(v, i), depth + 1)) return false;
        }
    }
    return true;
}

#endif
