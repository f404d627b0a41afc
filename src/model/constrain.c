/*
 * constrain.c - constrained decoding: compiles a JSON Schema (or "any object", or a forced <tool_call>) into a graph
 * of grammar nodes, runs it as a byte-level pushdown matcher, and computes per step which tokens the matcher accepts
 * by walking a prefix trie of the vocabulary. See constrain.h for the language generated and its limits.
 *
 * The matcher's state is a small set of stacks (alternatives of anyOf/oneOf and of type lists run side by side
 * until the bytes tell them apart). A stack is a linked list of immutable frames, so a step never changes a frame: it
 * allocates the new top frames and points them at the untouched rest. That makes backtracking free: the mask walk
 * visits the trie depth first, keeps one state set per trie depth, and releases a subtree's frames by resetting a bump
 * allocator to the mark taken before it. A subtree whose prefix every stack rejects is skipped whole, which is what
 * makes a 152k vocabulary affordable: in most JSON positions only a few hundred trie nodes survive the first byte.
 *
 * Numbers and literals (true, enum values) are complete but may go on ("1" may become "12"), so they stay on the
 * stack after their last byte and pop when a byte cannot continue them; strings, objects and arrays pop on their
 * closing byte. A value's parent frame is pushed already in its after-value state, so completing a value is just
 * returning to the parent: nothing is allocated.
 */
#include "model/constrain.h"
#include "base/json.h"
#include "model/tokenizer-impl.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Largest object (properties tracked in a 64-bit set), nodes per grammar, alternatives of one anyOf/oneOf, values of
 * one enum, and stacks alive at once (more alternatives than this are cut, which only narrows the language). */
#define MAX_PROPS    64
#define MAX_NODES    8192
#define MAX_ALTS     128
#define MAX_LITERALS 4096
#define MAX_STACKS   32
/* Nesting of schemas inside one another while compiling, and of anyOf inside anyOf when a value starts. */
#define MAX_SCHEMA_DEPTH 64
#define MAX_ANYOF_NEST   32
/* Digits of a generated number's integer part, fraction and exponent. */
#define MAX_INT_DIGITS  15
#define MAX_FRAC_DIGITS 15
#define MAX_EXP_DIGITS  2
/* Longest token the trie holds (longer ones are never allowed under a constraint). */
#define MAX_TOKEN_LEN 1024

#define NO_NODE (-1)

/* ==== Grammar nodes ==== */

enum nkind { N_ANY, N_OBJECT, N_ARRAY, N_STRING, N_NUMBER, N_INTEGER, N_LITERAL, N_ANYOF };

/* Nodes every grammar has at fixed indices: what an unconstrained JSON value is made of. */
enum { NODE_ANY = 0, NODE_TFN = 1, NODE_ANY_OBJ = 2, NODE_ANY_ARR = 3, NODE_ANY_STR = 4, NODE_NUMBER = 5 };

struct gprop {
    char *enc; /* the name as it appears between the key's quotes (JSON-escaped) */
    uint32_t len;
    int32_t node;
};

struct glit {
    char *s; /* the value's canonical JSON text */
    uint32_t len;
};

struct gnode {
    uint8_t kind;
    int32_t n;           /* properties, literals, alternatives or prefix items */
    struct gprop *props; /* N_OBJECT (n), in generation order */
    uint64_t req;        /* N_OBJECT: bit i = props[i] is required */
    int32_t addl;        /* N_OBJECT: node of additional properties, or NO_NODE */
    int32_t *ids;        /* N_ANYOF alternatives, N_ARRAY prefix items (n) */
    int32_t items;       /* N_ARRAY: node of items past the prefix, or NO_NODE */
    int64_t min, max;    /* N_ARRAY items, N_STRING characters; max -1 = unbounded */
    struct glit *lits;   /* N_LITERAL (n), sorted by bytes */
    int32_t h;           /* the least nesting height of a value (0: a scalar exists; HEIGHT_INF: none exists) */
    int32_t h_props;     /* N_OBJECT: the largest height among its properties and additional properties */
};

#define HEIGHT_INF (1 << 20)

struct ty_grammar {
    _Atomic int refs;
    struct gnode *nodes; /* (n_nodes) */
    int32_t n_nodes, cap_nodes;
    int32_t root;
    char *prefix, *suffix; /* literal text around the value (the tool-call tags) */
    uint32_t prefix_len, suffix_len;
    bool after_reasoning;
    enum ty_status node_fail; /* why node_new last failed: too many nodes (the schema's fault) or out of memory */
};

static void grammar_free(struct ty_grammar *g) {
    if (!g) return;
    for (int32_t i = 0; i < g->n_nodes; i++) {
        struct gnode *n = &g->nodes[i];
        for (int32_t k = 0; n->props && k < n->n; k++) ty_free(n->props[k].enc);
        for (int32_t k = 0; n->lits && k < n->n; k++) ty_free(n->lits[k].s);
        ty_free(n->props);
        ty_free(n->lits);
        ty_free(n->ids);
    }
    ty_free(g->nodes);
    ty_free(g->prefix);
    ty_free(g->suffix);
    ty_free(g);
}

struct ty_grammar *ty__grammar_ref(struct ty_grammar *g) {
    if (g) atomic_fetch_add(&g->refs, 1);
    return g;
}

void ty__grammar_unref(struct ty_grammar *g) {
    if (g && atomic_fetch_sub(&g->refs, 1) == 1) grammar_free(g);
}

static int32_t node_new(struct ty_grammar *g, uint8_t kind) {
    if (g->n_nodes >= MAX_NODES) {
        g->node_fail =
            ty__error(TY_ERR_UNSUPPORTED, "the schema needs more than %d grammar nodes; simplify it", MAX_NODES);
        return NO_NODE;
    }
    if (g->n_nodes == g->cap_nodes) {
        int32_t cap = g->cap_nodes ? g->cap_nodes * 2 : 32;
        struct gnode *nn = ty__realloc(g->nodes, (size_t)cap * sizeof *nn);
        if (!nn) {
            g->node_fail = ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
            return NO_NODE;
        }
        g->nodes = nn;
        g->cap_nodes = cap;
    }
    struct gnode *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->addl = n->items = NO_NODE;
    n->max = -1;
    return g->n_nodes++;
}

static int lit_cmp(const void *a, const void *b) {
    const struct glit *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Sorts a literal node's values and drops duplicates: the matcher needs them ordered by bytes. */
static void lits_finish(struct gnode *n) {
    qsort(n->lits, (size_t)n->n, sizeof *n->lits, lit_cmp);
    int32_t k = 0;
    for (int32_t i = 0; i < n->n; i++) {
        if (k && !lit_cmp(&n->lits[k - 1], &n->lits[i])) {
            ty_free(n->lits[i].s);
            continue;
        }
        n->lits[k++] = n->lits[i];
    }
    n->n = k;
}

/* A literal node of the given texts (copied). */
static int32_t lit_node(struct ty_grammar *g, const char *const *texts, int32_t n) {
    int32_t id = node_new(g, N_LITERAL);
    if (id == NO_NODE) return NO_NODE;
    struct glit *l = ty__calloc((size_t)n, sizeof *l);
    g->nodes[id].lits = l;
    if (!l) goto oom;
    for (int32_t i = 0; i < n; i++) {
        l[i].len = (uint32_t)strlen(texts[i]);
        if (!(l[i].s = ty__strdup(texts[i]))) goto oom;
        g->nodes[id].n = i + 1;
    }
    lits_finish(&g->nodes[id]);
    return id;
oom:
    ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    return NO_NODE;
}

/* The nodes of an unconstrained JSON value, at their fixed indices. */
static enum ty_status add_fixed_nodes(struct ty_grammar *g) {
    static const char *const tfn[] = {"true", "false", "null"};
    if (node_new(g, N_ANY) != NODE_ANY || lit_node(g, tfn, 3) != NODE_TFN || node_new(g, N_OBJECT) != NODE_ANY_OBJ ||
        node_new(g, N_ARRAY) != NODE_ANY_ARR || node_new(g, N_STRING) != NODE_ANY_STR ||
        node_new(g, N_NUMBER) != NODE_NUMBER)
        return g->node_fail;
    g->nodes[NODE_ANY_OBJ].addl = NODE_ANY;
    g->nodes[NODE_ANY_ARR].items = NODE_ANY;
    return TY_OK;
}

/* ==== Schema compiler ==== */

struct memo {
    const json_t *schema;
    int32_t node;
};

struct cc {
    struct ty_grammar *g;
    json_t *root; /* what "#" refers to */
    struct memo *memo;
    size_t n_memo, cap_memo;
    int depth;
    char path[512]; /* JSON pointer of the schema being compiled, for messages */
    size_t path_len;
};

static size_t path_push(struct cc *c, const char *a, const char *b) {
    size_t old = c->path_len;
    int w = snprintf(c->path + old, sizeof c->path - old, "/%s%s%s", a, b ? "/" : "", b ? b : "");
    c->path_len = w < 0 || (size_t)w >= sizeof c->path - old ? sizeof c->path - 1 : old + (size_t)w;
    return old;
}

static void path_pop(struct cc *c, size_t old) {
    c->path_len = old;
    c->path[old] = 0;
}

static const char *where(const struct cc *c) {
    return c->path;
}

static bool is_annotation(const char *k) {
    static const char *const ann[] = {"title",   "description", "default",      "examples",  "$schema",
                                      "$id",     "$comment",    "readOnly",     "writeOnly", "deprecated",
                                      "$anchor", "example",     "discriminator"};
    for (size_t i = 0; i < sizeof ann / sizeof *ann; i++)
        if (!strcmp(k, ann[i])) return true;
    return false;
}

static bool is_supported(const char *k) {
    static const char *const kw[] = {"type",      "properties", "required", "additionalProperties",
                                     "enum",      "const",      "items",    "prefixItems",
                                     "minItems",  "maxItems",   "anyOf",    "oneOf",
                                     "allOf",     "$ref",       "$defs",    "definitions",
                                     "minLength", "maxLength",  "nullable", "uniqueItems"};
    for (size_t i = 0; i < sizeof kw / sizeof *kw; i++)
        if (!strcmp(k, kw[i])) return true;
    return false;
}

static enum ty_status compile(struct cc *c, json_t *s, int32_t *out);

/* Resolves a local reference "#", "#/$defs/x", "#/definitions/x" or any "#/json/pointer". */
static enum ty_status resolve_ref(struct cc *c, const char *ref, json_t **out) {
    if (ref[0] != '#')
        return ty__error(TY_ERR_UNSUPPORTED,
                         "schema %s: $ref '%s' is not supported: only references inside the schema (\"#/$defs/...\") "
                         "are",
                         where(c), ref);
    json_t *v = c->root;
    const char *p = ref + 1;
    while (*p == '/' && v) {
        p++;
        char tok[256];
        size_t n = 0;
        while (*p && *p != '/') {
            char ch = *p++;
            if (ch == '~' && (*p == '0' || *p == '1')) ch = *p++ == '0' ? '~' : '/';
            if (n + 1 < sizeof tok) tok[n++] = ch;
        }
        tok[n] = 0;
        if (json_is_object(v)) {
            v = json_object_get(v, tok);
        } else if (json_is_array(v)) {
            char *end;
            unsigned long i = strtoul(tok, &end, 10);
            v = *end || !n ? NULL : json_array_get(v, i);
        } else {
            v = NULL;
        }
    }
    if (!v || *p)
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: $ref '%s' points to nothing in the schema", where(c), ref);
    *out = v;
    return TY_OK;
}

/* `v` as compact JSON text, copied with the counting allocator. */
static enum ty_status json_text(const json_t *v, char **out, uint32_t *len) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    *out = ty__strdup(s);
    *len = *out ? (uint32_t)strlen(*out) : 0;
    free(s); /* jansson allocates with malloc */
    return *out ? TY_OK : ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
}

/* A property name as it appears between a key's quotes. */
static enum ty_status name_text(const char *name, char **out, uint32_t *len) {
    json_t *js = json_string(name);
    enum ty_status st = js ? json_text(js, out, len) : ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    json_decref(js);
    if (st != TY_OK) return st;
    memmove(*out, *out + 1, *len - 2); /* drop the quotes */
    *len -= 2;
    (*out)[*len] = 0;
    return TY_OK;
}

/* JSON types as bits, for `type` lists and oneOf's disjointness test. */
enum { T_OBJ = 1, T_ARR = 2, T_STR = 4, T_NUM = 8, T_INT = 16, T_BOOL = 32, T_NULL = 64, T_ALL = 127 };

static unsigned type_bit(const char *t) {
    static const char *const names[] = {"object", "array", "string", "number", "integer", "boolean", "null"};
    for (unsigned i = 0; i < 7; i++)
        if (!strcmp(t, names[i])) return 1u << i;
    return 0;
}

static unsigned value_type(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return T_OBJ;
    case JSON_ARRAY:
        return T_ARR;
    case JSON_STRING:
        return T_STR;
    case JSON_INTEGER:
        return T_INT | T_NUM;
    case JSON_REAL:
        return T_NUM | (json_real_value(v) == floor(json_real_value(v)) ? T_INT : 0);
    case JSON_TRUE:
    case JSON_FALSE:
        return T_BOOL;
    default:
        return T_NULL;
    }
}

/* Code points of a UTF-8 string (what JSON Schema's string lengths count). */
static int64_t utf8_chars(const char *s, size_t n) {
    int64_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static enum ty_status get_count(struct cc *c, json_t *s, const char *k, int64_t *out) {
    json_t *v = json_object_get(s, k);
    if (!v) return TY_OK;
    double d = json_is_integer(v) ? (double)json_integer_value(v) : json_is_real(v) ? json_real_value(v) : -1;
    if (d < 0 || d != floor(d) || d > 1e9)
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: '%s' must be a non-negative integer", where(c), k);
    *out = (int64_t)d;
    return TY_OK;
}

/* enum/const: the values that also satisfy the schema's type and string-length keywords. */
static enum ty_status compile_literals(struct cc *c, json_t *s, unsigned types, int32_t *out) {
    json_t *en = json_object_get(s, "enum"), *cst = json_object_get(s, "const");
    if (en && !json_is_array(en)) return ty__error(TY_ERR_INVALID_ARG, "schema %s: 'enum' must be an array", where(c));
    json_t *one = cst ? json_array() : NULL;
    if (cst && (!one || json_array_append(one, cst))) {
        json_decref(one);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    }
    json_t *vals = cst ? one : en;
    if (json_array_size(vals) > MAX_LITERALS) {
        json_decref(one);
        return ty__error(TY_ERR_UNSUPPORTED, "schema %s: 'enum' has more than %d values", where(c), MAX_LITERALS);
    }
    int64_t minl = 0, maxl = -1;
    enum ty_status st = get_count(c, s, "minLength", &minl);
    if (st == TY_OK) st = get_count(c, s, "maxLength", &maxl);
    int32_t id = st == TY_OK ? node_new(c->g, N_LITERAL) : NO_NODE;
    if (id == NO_NODE) {
        json_decref(one);
        return st != TY_OK ? st : c->g->node_fail;
    }
    struct glit *l = ty__calloc(json_array_size(vals) + 1, sizeof *l);
    c->g->nodes[id].lits = l;
    if (!l) st = ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    size_t i;
    json_t *v;
    json_array_foreach(vals, i, v) {
        if (st != TY_OK) break;
        if (!(value_type(v) & types)) continue;
        if (json_is_string(v)) {
            int64_t k = utf8_chars(json_string_value(v), json_string_length(v));
            if (k < minl || (maxl >= 0 && k > maxl)) continue;
        }
        struct gnode *n = &c->g->nodes[id];
        st = json_text(v, &l[n->n].s, &l[n->n].len);
        if (st == TY_OK) n->n++;
    }
    json_decref(one);
    if (st != TY_OK) return st;
    if (!c->g->nodes[id].n)
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: no value of '%s' satisfies the schema's other keywords",
                         where(c), cst ? "const" : "enum");
    lits_finish(&c->g->nodes[id]);
    *out = id;
    return TY_OK;
}

static enum ty_status compile_object(struct cc *c, json_t *s, int32_t *out) {
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props))
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: 'properties' must be an object", where(c));
    if (req && !json_is_array(req))
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: 'required' must be an array of strings", where(c));
    size_t i;
    json_t *v;
    json_array_foreach(req, i, v) {
        if (!json_is_string(v))
            return ty__error(TY_ERR_INVALID_ARG, "schema %s: 'required' must be an array of strings", where(c));
    }
    /* additional properties: a schema or true allows them; absent allows them only in an object that lists none */
    int32_t addl_node = NO_NODE;
    if (addl && !json_is_false(addl)) {
        size_t old = path_push(c, "additionalProperties", NULL);
        enum ty_status st = compile(c, addl, &addl_node);
        path_pop(c, old);
        TY_TRY(st);
    } else if (!addl && !props) {
        addl_node = NODE_ANY;
    }
    size_t n = json_object_size(props);
    /* required names that are not listed become listed properties of the additional-properties schema */
    json_array_foreach(req, i, v) {
        if (json_object_get(props, json_string_value(v))) continue;
        if (addl_node == NO_NODE)
            return ty__error(TY_ERR_INVALID_ARG,
                             "schema %s: property '%s' is required but not in 'properties' while additional properties "
                             "are not allowed, so no object satisfies the schema",
                             where(c), json_string_value(v));
        n++;
    }
    if (n > MAX_PROPS)
        return ty__error(TY_ERR_UNSUPPORTED, "schema %s: objects with more than %d properties are not supported",
                         where(c), MAX_PROPS);
    int32_t id = node_new(c->g, N_OBJECT);
    if (id == NO_NODE) return c->g->node_fail;
    c->g->nodes[id].addl = addl_node;
    struct gprop *p = ty__calloc(n ? n : 1, sizeof *p);
    c->g->nodes[id].props = p;
    const char **raw = ty__calloc(n ? n : 1, sizeof *raw); /* names as written, to find the required ones */
    if (!p || !raw) {
        ty_free(raw);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    }
    const char *key;
    json_t *sub;
    enum ty_status st = TY_OK;
    int32_t k = 0;
    json_object_foreach(props, key, sub) {
        raw[k] = key;
        st = name_text(key, &p[k].enc, &p[k].len);
        if (st != TY_OK) break;
        c->g->nodes[id].n = ++k;
        size_t old = path_push(c, "properties", key);
        int32_t sn = NO_NODE;
        st = compile(c, sub, &sn);
        path_pop(c, old);
        if (st != TY_OK) break;
        c->g->nodes[id].props[k - 1].node = sn;
    }
    json_array_foreach(req, i, v) {
        if (st != TY_OK) break;
        const char *name = json_string_value(v);
        int32_t at = -1;
        for (int32_t j = 0; j < k && at < 0; j++)
            if (!strcmp(raw[j], name)) at = j;
        if (at < 0) {
            st = name_text(name, &p[k].enc, &p[k].len);
            if (st != TY_OK) break;
            p[k].node = addl_node;
            raw[k] = name;
            at = k;
            c->g->nodes[id].n = ++k;
        }
        c->g->nodes[id].req |= 1ull << at;
    }
    ty_free(raw);
    *out = id;
    return st;
}

static enum ty_status compile_array(struct cc *c, json_t *s, int32_t *out) {
    int64_t mn = 0, mx = -1;
    TY_TRY(get_count(c, s, "minItems", &mn));
    TY_TRY(get_count(c, s, "maxItems", &mx));
    if (mx >= 0 && mn > mx)
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: minItems %lld is more than maxItems %lld", where(c),
                         (long long)mn, (long long)mx);
    json_t *items = json_object_get(s, "items"), *prefix = json_object_get(s, "prefixItems");
    if (json_is_array(items))
        return ty__error(TY_ERR_UNSUPPORTED,
                         "schema %s: 'items' as an array (the draft-7 tuple form) is not supported; use 'prefixItems'",
                         where(c));
    if (prefix && !json_is_array(prefix))
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: 'prefixItems' must be an array", where(c));
    size_t np = json_array_size(prefix);
    if (np > MAX_ALTS) return ty__error(TY_ERR_UNSUPPORTED, "schema %s: more than %d prefixItems", where(c), MAX_ALTS);
    int32_t id = node_new(c->g, N_ARRAY);
    if (id == NO_NODE) return c->g->node_fail;
    c->g->nodes[id].min = mn;
    c->g->nodes[id].max = mx;
    if (np && !(c->g->nodes[id].ids = ty__calloc(np, sizeof(int32_t))))
        return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    for (size_t i = 0; i < np; i++) {
        char idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        size_t old = path_push(c, "prefixItems", idx);
        int32_t sn = NO_NODE;
        enum ty_status st = compile(c, json_array_get(prefix, i), &sn);
        path_pop(c, old);
        TY_TRY(st);
        c->g->nodes[id].ids[i] = sn;
        c->g->nodes[id].n = (int32_t)i + 1;
    }
    int32_t in = NODE_ANY;
    if (json_is_false(items)) {
        in = NO_NODE;
        if (mn > (int64_t)np)
            return ty__error(TY_ERR_INVALID_ARG,
                             "schema %s: minItems %lld needs more items than the %zu prefixItems while 'items' is "
                             "false, so no array satisfies the schema",
                             where(c), (long long)mn, np);
    } else if (items) {
        size_t old = path_push(c, "items", NULL);
        enum ty_status st = compile(c, items, &in);
        path_pop(c, old);
        TY_TRY(st);
    }
    c->g->nodes[id].items = in;
    *out = id;
    return TY_OK;
}

/* Which JSON types a node may produce (for oneOf's disjointness test). */
static unsigned node_types(const struct ty_grammar *g, int32_t id, int guard) {
    const struct gnode *n = &g->nodes[id];
    switch (n->kind) {
    case N_OBJECT:
        return T_OBJ;
    case N_ARRAY:
        return T_ARR;
    case N_STRING:
        return T_STR;
    case N_NUMBER:
    case N_INTEGER:
        return T_NUM;
    case N_LITERAL: {
        unsigned t = 0;
        for (int32_t i = 0; i < n->n; i++) {
            char ch = n->lits[i].s[0];
            t |= ch == '{'                ? T_OBJ
                 : ch == '['              ? T_ARR
                 : ch == '"'              ? T_STR
                 : ch == 't' || ch == 'f' ? T_BOOL
                 : ch == 'n'              ? T_NULL
                                          : T_NUM;
        }
        return t;
    }
    case N_ANYOF: {
        if (guard >= MAX_ANYOF_NEST) return T_ALL;
        unsigned t = 0;
        for (int32_t i = 0; i < n->n; i++) t |= node_types(g, n->ids[i], guard + 1);
        return t;
    }
    default:
        return T_ALL;
    }
}

/* Follows anyOf nodes of one alternative (every compiled schema sits behind one, see compile). */
static int32_t unwrap(const struct ty_grammar *g, int32_t id) {
    for (int i = 0; i < MAX_ANYOF_NEST && g->nodes[id].kind == N_ANYOF && g->nodes[id].n == 1; i++)
        id = g->nodes[id].ids[0];
    return id;
}

static bool lits_disjoint(const struct gnode *a, const struct gnode *b) {
    for (int32_t i = 0; i < a->n; i++)
        for (int32_t j = 0; j < b->n; j++)
            if (!lit_cmp(&a->lits[i], &b->lits[j])) return false;
    return true;
}

/* Two oneOf alternatives that can never match the same value: different types, different literal values, or objects
 * that both require a property whose literal values differ (a discriminator, as pydantic's tagged unions write). */
static bool alts_disjoint(const struct ty_grammar *g, int32_t x, int32_t y) {
    if (!(node_types(g, x, 0) & node_types(g, y, 0))) return true;
    const struct gnode *a = &g->nodes[unwrap(g, x)], *b = &g->nodes[unwrap(g, y)];
    if (a->kind == N_LITERAL && b->kind == N_LITERAL) return lits_disjoint(a, b);
    if (a->kind != N_OBJECT || b->kind != N_OBJECT) return false;
    for (int32_t i = 0; i < a->n; i++) {
        int32_t pa = unwrap(g, a->props[i].node);
        if (!(a->req >> i & 1) || g->nodes[pa].kind != N_LITERAL) continue;
        for (int32_t j = 0; j < b->n; j++) {
            if (!(b->req >> j & 1) || a->props[i].len != b->props[j].len ||
                memcmp(a->props[i].enc, b->props[j].enc, a->props[i].len))
                continue;
            const struct gnode *pb = &g->nodes[unwrap(g, b->props[j].node)];
            if (pb->kind == N_LITERAL && lits_disjoint(&g->nodes[pa], pb)) return true;
        }
    }
    return false;
}

/* An anyOf node over `n` alternatives. */
static enum ty_status anyof_node(struct ty_grammar *g, const int32_t *alts, int32_t n, int32_t *out) {
    int32_t id = node_new(g, N_ANYOF);
    if (id == NO_NODE) return g->node_fail;
    if (!(g->nodes[id].ids = ty__malloc((size_t)n * sizeof(int32_t))))
        return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    memcpy(g->nodes[id].ids, alts, (size_t)n * sizeof(int32_t));
    g->nodes[id].n = n;
    *out = id;
    return TY_OK;
}

static enum ty_status compile_alts(struct cc *c, json_t *list, const char *kw, int32_t *out) {
    if (!json_is_array(list) || !json_array_size(list))
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: '%s' must be a non-empty array of schemas", where(c), kw);
    size_t n = json_array_size(list);
    if (n > MAX_ALTS)
        return ty__error(TY_ERR_UNSUPPORTED, "schema %s: '%s' has more than %d entries", where(c), kw, MAX_ALTS);
    int32_t alts[MAX_ALTS];
    for (size_t i = 0; i < n; i++) {
        char idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        size_t old = path_push(c, kw, idx);
        enum ty_status st = compile(c, json_array_get(list, i), &alts[i]);
        path_pop(c, old);
        TY_TRY(st);
    }
    if (!strcmp(kw, "oneOf"))
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                if (!alts_disjoint(c->g, alts[i], alts[j]))
                    return ty__error(TY_ERR_UNSUPPORTED,
                                     "schema %s: oneOf alternatives %zu and %zu may both match one value, and "
                                     "constrained decoding cannot rule that out; use anyOf, or make them differ by "
                                     "type or by a required property with const values",
                                     where(c), i, j);
    return anyof_node(c->g, alts, (int32_t)n, out);
}

/* A schema object with no combinator at its top: types and their keywords. */
static enum ty_status compile_typed(struct cc *c, json_t *s, int32_t *out) {
    unsigned types = 0;
    json_t *t = json_object_get(s, "type");
    if (json_is_string(t)) {
        if (!(types = type_bit(json_string_value(t))))
            return ty__error(TY_ERR_INVALID_ARG, "schema %s: unknown type '%s'", where(c), json_string_value(t));
    } else if (json_is_array(t)) {
        size_t i;
        json_t *v;
        json_array_foreach(t, i, v) {
            unsigned b = json_is_string(v) ? type_bit(json_string_value(v)) : 0;
            if (!b) return ty__error(TY_ERR_INVALID_ARG, "schema %s: 'type' lists an unknown type", where(c));
            types |= b;
        }
        if (!types) return ty__error(TY_ERR_INVALID_ARG, "schema %s: 'type' is an empty list", where(c));
    } else if (t) {
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: 'type' must be a string or an array of strings", where(c));
    } else {
        /* no type: the keywords present say which types they constrain; with none, any value */
        if (json_object_get(s, "properties") || json_object_get(s, "required") ||
            json_object_get(s, "additionalProperties"))
            types |= T_OBJ;
        if (json_object_get(s, "items") || json_object_get(s, "prefixItems") || json_object_get(s, "minItems") ||
            json_object_get(s, "maxItems"))
            types |= T_ARR;
        if (json_object_get(s, "minLength") || json_object_get(s, "maxLength")) types |= T_STR;
        if (!types) types = T_ALL;
    }
    json_t *nullable = json_object_get(s, "nullable");
    if (nullable && !json_is_boolean(nullable))
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: 'nullable' must be a boolean", where(c));
    if (json_is_true(nullable)) types |= T_NULL;
    if (json_object_get(s, "enum") || json_object_get(s, "const")) return compile_literals(c, s, types, out);
    if (types == T_ALL) {
        *out = NODE_ANY;
        return TY_OK;
    }
    if (types & T_INT && types & T_NUM) types &= ~(unsigned)T_INT;

    int32_t alts[7], n = 0;
    if (types & T_OBJ) TY_TRY(compile_object(c, s, &alts[n++]));
    if (types & T_ARR) TY_TRY(compile_array(c, s, &alts[n++]));
    if (types & T_STR) {
        int64_t mn = 0, mx = -1;
        TY_TRY(get_count(c, s, "minLength", &mn));
        TY_TRY(get_count(c, s, "maxLength", &mx));
        if (mx >= 0 && mn > mx)
            return ty__error(TY_ERR_INVALID_ARG, "schema %s: minLength %lld is more than maxLength %lld", where(c),
                             (long long)mn, (long long)mx);
        if (!mn && mx < 0) {
            alts[n++] = NODE_ANY_STR;
        } else {
            int32_t id = node_new(c->g, N_STRING);
            if (id == NO_NODE) return c->g->node_fail;
            c->g->nodes[id].min = mn;
            c->g->nodes[id].max = mx;
            alts[n++] = id;
        }
    }
    if (types & T_NUM) alts[n++] = NODE_NUMBER;
    if (types & T_INT) {
        int32_t id = node_new(c->g, N_INTEGER);
        if (id == NO_NODE) return c->g->node_fail;
        alts[n++] = id;
    }
    if (types & (T_BOOL | T_NULL)) {
        static const char *const bn[] = {"true", "false", "null"};
        int32_t id = types & T_BOOL ? lit_node(c->g, bn, types & T_NULL ? 3 : 2) : lit_node(c->g, bn + 2, 1);
        if (id == NO_NODE) return c->g->node_fail;
        alts[n++] = id;
    }
    if (n == 1) {
        *out = alts[0];
        return TY_OK;
    }
    return anyof_node(c->g, alts, n, out);
}

static enum ty_status memo_add(struct cc *c, const json_t *s, int32_t node) {
    if (c->n_memo == c->cap_memo) {
        size_t cap = c->cap_memo ? c->cap_memo * 2 : 32;
        struct memo *m = ty__realloc(c->memo, cap * sizeof *m);
        if (!m) return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
        c->memo = m;
        c->cap_memo = cap;
    }
    c->memo[c->n_memo++] = (struct memo){s, node};
    return TY_OK;
}

static enum ty_status compile_inner(struct cc *c, json_t *s, int32_t *out) {
    const char *key;
    json_t *v;
    int n_comb = 0, n_other = 0;
    json_object_foreach(s, key, v) {
        if (is_annotation(key) || !strcmp(key, "$defs") || !strcmp(key, "definitions")) continue;
        if (!is_supported(key))
            return ty__error(TY_ERR_UNSUPPORTED,
                             "schema %s: '%s' is not supported by constrained decoding (the output could not be "
                             "guaranteed to satisfy it); remove it from the schema",
                             where(c), key);
        if (!strcmp(key, "uniqueItems")) {
            if (!json_is_false(v))
                return ty__error(TY_ERR_UNSUPPORTED,
                                 "schema %s: 'uniqueItems': true is not supported by constrained decoding; remove it",
                                 where(c));
            continue;
        }
        if (!strcmp(key, "$ref") || !strcmp(key, "anyOf") || !strcmp(key, "oneOf") || !strcmp(key, "allOf"))
            n_comb++;
        else
            n_other++;
    }
    if (n_comb > 1 || (n_comb && n_other))
        return ty__error(TY_ERR_UNSUPPORTED,
                         "schema %s: $ref, anyOf, oneOf and allOf cannot be combined with each other or with other "
                         "keywords here; move the other keywords into each alternative",
                         where(c));
    json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        if (!json_is_string(ref)) return ty__error(TY_ERR_INVALID_ARG, "schema %s: '$ref' must be a string", where(c));
        json_t *target = NULL;
        TY_TRY(resolve_ref(c, json_string_value(ref), &target));
        char saved[sizeof c->path];
        size_t old = c->path_len;
        memcpy(saved, c->path, sizeof saved);
        snprintf(c->path, sizeof c->path, "%s", json_string_value(ref));
        c->path_len = strlen(c->path);
        enum ty_status st = compile(c, target, out);
        memcpy(c->path, saved, sizeof saved);
        c->path_len = old;
        return st;
    }
    json_t *all = json_object_get(s, "allOf");
    if (all) {
        if (!json_is_array(all) || json_array_size(all) != 1)
            return ty__error(TY_ERR_UNSUPPORTED,
                             "schema %s: 'allOf' is supported with exactly one schema only; merge the schemas",
                             where(c));
        size_t old = path_push(c, "allOf", "0");
        enum ty_status st = compile(c, json_array_get(all, 0), out);
        path_pop(c, old);
        return st;
    }
    if (json_object_get(s, "anyOf")) return compile_alts(c, json_object_get(s, "anyOf"), "anyOf", out);
    if (json_object_get(s, "oneOf")) return compile_alts(c, json_object_get(s, "oneOf"), "oneOf", out);
    return compile_typed(c, s, out);
}

static enum ty_status compile(struct cc *c, json_t *s, int32_t *out) {
    if (json_is_true(s)) {
        *out = NODE_ANY;
        return TY_OK;
    }
    if (json_is_false(s))
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: the schema false accepts no value", where(c));
    if (!json_is_object(s))
        return ty__error(TY_ERR_INVALID_ARG, "schema %s: a schema must be an object or a boolean, not %s", where(c),
                         ty__json_kind(s));
    for (size_t i = 0; i < c->n_memo; i++)
        if (c->memo[i].schema == s) {
            *out = c->memo[i].node;
            return TY_OK;
        }
    if (c->depth >= MAX_SCHEMA_DEPTH)
        return ty__error(TY_ERR_UNSUPPORTED, "schema %s: nested more than %d levels deep", where(c), MAX_SCHEMA_DEPTH);
    /* Recursion through a container (a tree whose children are the same schema) must find its node while the node is
     * being built, so every schema gets a placeholder first: an anyOf of one alternative, filled in when the schema
     * is compiled. A schema that reaches itself before any container is refused below or cut by MAX_ANYOF_NEST. */
    int32_t holder = node_new(c->g, N_ANYOF);
    if (holder == NO_NODE) return c->g->node_fail;
    if (!(c->g->nodes[holder].ids = ty__malloc(sizeof(int32_t))))
        return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    TY_TRY(memo_add(c, s, holder));
    c->depth++;
    int32_t inner = NO_NODE;
    enum ty_status st = compile_inner(c, s, &inner);
    c->depth--;
    if (st == TY_OK && inner == holder)
        st = ty__error(TY_ERR_UNSUPPORTED, "schema %s: a schema that is only a reference to itself", where(c));
    if (st != TY_OK) return st;
    c->g->nodes[holder].ids[0] = inner;
    c->g->nodes[holder].n = 1;
    *out = holder;
    return TY_OK;
}

/* ==== Heights: every state the matcher enters can be completed ==== */

/* The least nesting height of a value of each node, by fixpoint (recursive schemas need it): 0 for scalars, one more
 * than the highest required member for containers, the least alternative for anyOf. Containers may nest only
 * TY_CONSTRAIN_MAX_DEPTH deep, so the matcher starts a value (or allows a key or an item) only where its height still
 * fits: then no state it enters is a dead end, and a schema whose instances are all deeper is refused here. */
static void compute_heights(struct ty_grammar *g) {
    for (int32_t i = 0; i < g->n_nodes; i++) g->nodes[i].h = HEIGHT_INF;
    for (bool changed = true; changed;) {
        changed = false;
        for (int32_t i = 0; i < g->n_nodes; i++) {
            struct gnode *n = &g->nodes[i];
            int32_t h = 0;
            switch (n->kind) {
            case N_OBJECT:
                for (int32_t k = 0; k < n->n; k++)
                    if (n->req >> k & 1 && g->nodes[n->props[k].node].h > h) h = g->nodes[n->props[k].node].h;
                h = h >= HEIGHT_INF ? HEIGHT_INF : h + 1;
                break;
            case N_ARRAY:
                /* items past the prefixItems are all n->items: one look covers them (minItems may be 1e9) */
                for (int64_t k = 0; k < n->min && k <= n->n && h < HEIGHT_INF; k++) {
                    int32_t item = k < n->n ? n->ids[k] : n->items;
                    int32_t ih = item == NO_NODE ? HEIGHT_INF : g->nodes[item].h;
                    if (ih > h) h = ih;
                }
                h = h >= HEIGHT_INF ? HEIGHT_INF : h + 1;
                break;
            case N_ANYOF:
                h = HEIGHT_INF;
                for (int32_t k = 0; k < n->n; k++)
                    if (g->nodes[n->ids[k]].h < h) h = g->nodes[n->ids[k]].h;
                break;
            default:
                break;
            }
            if (h < n->h) {
                n->h = h;
                changed = true;
            }
        }
    }
    for (int32_t i = 0; i < g->n_nodes; i++) {
        struct gnode *n = &g->nodes[i];
        if (n->kind != N_OBJECT) continue;
        n->h_props = n->addl == NO_NODE ? 0 : g->nodes[n->addl].h;
        for (int32_t k = 0; k < n->n; k++)
            if (g->nodes[n->props[k].node].h > n->h_props) n->h_props = g->nodes[n->props[k].node].h;
    }
}

/* ==== Grammar entry point ==== */

static enum ty_status parse_json(const char *text, const char *what, json_t **out) {
    json_error_t je;
    *out = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!*out)
        return ty__error(TY_ERR_INVALID_ARG, "%s is not valid JSON: %s (line %d, column %d)", what, je.text, je.line,
                         je.column);
    return TY_OK;
}

/* The object {"name": <the tool's name>, "arguments": <its parameters>} of one tool. */
static enum ty_status compile_tool(struct cc *c, json_t *fn, int32_t *out) {
    json_t *name = json_object_get(fn, "name"), *params = json_object_get(fn, "parameters");
    if (!json_is_string(name)) return ty__error(TY_ERR_INVALID_ARG, "a tool has no function name");
    json_t *any_obj = NULL;
    if (!params) params = any_obj = json_pack("{s:s}", "type", "object");
    if (!params) return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a tool's schema");
    c->root = params;
    snprintf(c->path, sizeof c->path, "#");
    c->path_len = 1;
    c->n_memo = 0; /* each tool's parameters are a schema document of their own */
    int32_t args = NO_NODE;
    enum ty_status st = compile(c, params, &args);
    c->n_memo = 0;
    json_decref(any_obj);
    if (st != TY_OK) return ty__error_prefix(st, "tool '%s' parameters", json_string_value(name));
    char *lit = NULL;
    uint32_t lit_len = 0;
    TY_TRY(json_text(name, &lit, &lit_len));
    const char *texts[1] = {lit};
    int32_t name_node = lit_node(c->g, texts, 1);
    ty_free(lit);
    int32_t id = name_node == NO_NODE ? NO_NODE : node_new(c->g, N_OBJECT);
    if (id == NO_NODE) return c->g->node_fail;
    struct gprop *p = ty__calloc(2, sizeof *p);
    c->g->nodes[id].props = p;
    if (p) c->g->nodes[id].n = 2;
    if (!p || !(p[0].enc = ty__strdup("name")) || !(p[1].enc = ty__strdup("arguments")))
        return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a tool's schema");
    p[0].len = 4;
    p[0].node = name_node;
    p[1].len = 9;
    p[1].node = args;
    c->g->nodes[id].req = 3;
    *out = id;
    return TY_OK;
}

static enum ty_status compile_tools(struct cc *c, const struct ty_constrain_spec *spec, int32_t *out) {
    json_t *tools = NULL;
    TY_TRY(parse_json(spec->tools_json ? spec->tools_json : "null", "tools", &tools));
    enum ty_status st = TY_OK;
    int32_t alts[MAX_ALTS], n = 0;
    if (!json_is_array(tools) || !json_array_size(tools))
        st = ty__error(TY_ERR_INVALID_ARG, "a forced tool call needs a non-empty 'tools' array");
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        if (st != TY_OK) break;
        json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name) {
            st = ty__error(TY_ERR_INVALID_ARG, "tools[%zu] has no function name", i);
            break;
        }
        if (spec->tool_name && strcmp(name, spec->tool_name)) continue;
        if (n == MAX_ALTS) {
            st = ty__error(TY_ERR_UNSUPPORTED, "more than %d tools", MAX_ALTS);
            break;
        }
        st = compile_tool(c, fn, &alts[n++]);
    }
    if (st == TY_OK && !n)
        st = ty__error(TY_ERR_INVALID_ARG, "tool_choice names function '%s', which is not in 'tools'",
                       spec->tool_name ? spec->tool_name : "");
    json_decref(tools);
    TY_TRY(st);
    if (n == 1) {
        *out = alts[0];
        return TY_OK;
    }
    return anyof_node(c->g, alts, n, out);
}

enum ty_status ty__grammar_compile(const struct ty_constrain_spec *spec, struct ty_grammar **out) {
    *out = NULL;
    struct ty_grammar *g = ty__calloc(1, sizeof *g);
    if (!g) return ty__error(TY_ERR_NO_MEMORY, "out of memory compiling a schema");
    atomic_init(&g->refs, 1);
    g->after_reasoning = spec->after_reasoning;
    struct cc c = {.g = g, .path = "#", .path_len = 1};
    enum ty_status st = add_fixed_nodes(g);
    json_t *schema = NULL;
    if (st == TY_OK) {
        switch (spec->kind) {
        case TY_CONSTRAIN_JSON_OBJECT:
            g->root = NODE_ANY_OBJ;
            break;
        case TY_CONSTRAIN_JSON_SCHEMA:
            st = parse_json(spec->schema_json ? spec->schema_json : "", "the schema", &schema);
            if (st == TY_OK) {
                c.root = schema;
                st = compile(&c, schema, &g->root);
            }
            break;
        case TY_CONSTRAIN_TOOL_CALL:
            st = compile_tools(&c, spec, &g->root);
            if (st == TY_OK &&
                (!(g->prefix = ty__strdup("<tool_call>\n")) || !(g->suffix = ty__strdup("\n</tool_call>"))))
                st = ty__error(TY_ERR_NO_MEMORY, "out of memory compiling tools");
            if (st == TY_OK) {
                g->prefix_len = (uint32_t)strlen(g->prefix);
                g->suffix_len = (uint32_t)strlen(g->suffix);
            }
            break;
        default:
            st = ty__error(TY_ERR_INVALID_ARG, "unknown constraint kind %d", (int)spec->kind);
        }
    }
    json_decref(schema);
    ty_free(c.memo);
    if (st == TY_OK) {
        compute_heights(g);
        if (g->nodes[g->root].h > TY_CONSTRAIN_MAX_DEPTH)
            st = ty__error(TY_ERR_INVALID_ARG,
                           "the schema has no instance nested at most %d deep (a required property or item that "
                           "recurses without end?)",
                           TY_CONSTRAIN_MAX_DEPTH);
    }
    if (st != TY_OK) {
        grammar_free(g);
        return st;
    }
    *out = g;
    return TY_OK;
}

/* ==== Frames: the matcher's stacks ==== */

enum fkind { F_ROOT, F_OBJ, F_KEY, F_ARR, F_STR, F_NUM, F_LIT };
enum { R_PREFIX, R_BEFORE, R_SUFFIX, R_END };                                        /* F_ROOT */
enum { O_OPEN, O_COLON, O_BEFORE_VAL, O_AFTER_VAL, O_AFTER_COMMA };                  /* F_OBJ */
enum { A_OPEN, A_AFTER_VAL, A_AFTER_COMMA };                                         /* F_ARR */
enum { S_NORMAL, S_ESC, S_U0, S_U1, S_U2, S_U3 };                                    /* F_STR */
enum { NUM_MINUS, NUM_ZERO, NUM_INT, NUM_DOT, NUM_FRAC, NUM_E, NUM_ESIGN, NUM_EXP }; /* F_NUM */
enum { K_ADDL = 1 }; /* F_KEY: an additional key is still possible */

struct frame {
    const struct frame *up; /* the parent, already in its after-value state */
    int32_t node;
    uint8_t kind, st, ws, depth;
    uint32_t a;   /* ROOT: position in prefix/suffix; OBJ: next property; KEY/LIT: bytes matched; ARR: items;
                     STR: characters; NUM: digits in the current part */
    uint32_t b;   /* OBJ: chosen property + 1 (0 = additional); KEY/STR: UTF-8 continuation state; LIT: range start */
    uint64_t set; /* KEY: listed names the key may still become; STR: \u value; LIT: range end */
};

/* UTF-8 continuation state: bytes still expected in the low byte, the allowed range of the next one above. */
#define U8_STATE(need, lo, hi) ((uint32_t)(need) | (uint32_t)(lo) << 8 | (uint32_t)(hi) << 16)

/* Advances UTF-8 state `*u` over byte `c` (RFC 3629: no overlongs, surrogates or code points past U+10FFFF). False
 * when `c` is not allowed. */
static bool utf8_step(uint32_t *u, uint8_t c) {
    uint32_t need = *u & 0xff;
    if (need) {
        if (c < ((*u >> 8) & 0xff) || c > ((*u >> 16) & 0xff)) return false;
        *u = need == 1 ? 0 : U8_STATE(need - 1, 0x80, 0xBF);
        return true;
    }
    if (c < 0x80) return true;
    if (c < 0xC2) return false;
    if (c < 0xE0)
        *u = U8_STATE(1, 0x80, 0xBF);
    else if (c == 0xE0)
        *u = U8_STATE(2, 0xA0, 0xBF);
    else if (c == 0xED)
        *u = U8_STATE(2, 0x80, 0x9F);
    else if (c < 0xF0)
        *u = U8_STATE(2, 0x80, 0xBF);
    else if (c == 0xF0)
        *u = U8_STATE(3, 0x90, 0xBF);
    else if (c < 0xF4)
        *u = U8_STATE(3, 0x80, 0xBF);
    else if (c == 0xF4)
        *u = U8_STATE(3, 0x80, 0x8F);
    else
        return false;
    return true;
}

/* A bump allocator of frames in fixed chunks (pointers never move), reset to a mark to free everything after it. */
#define CHUNK 1024
struct arena {
    struct frame **chunks;
    uint32_t n_chunks, used;
    bool oom;
};

static struct frame *arena_alloc(struct arena *a) {
    uint32_t c = a->used / CHUNK;
    if (c >= a->n_chunks) {
        struct frame **nc = ty__realloc(a->chunks, (c + 1) * sizeof *nc);
        struct frame *chunk = nc ? ty__malloc(CHUNK * sizeof *chunk) : NULL;
        if (nc) a->chunks = nc;
        if (!chunk) {
            a->oom = true;
            return NULL;
        }
        a->chunks[a->n_chunks++] = chunk;
    }
    struct frame *f = &a->chunks[c][a->used % CHUNK];
    a->used++;
    return f;
}

static void arena_free(struct arena *a) {
    for (uint32_t i = 0; i < a->n_chunks; i++) ty_free(a->chunks[i]);
    ty_free(a->chunks);
    memset(a, 0, sizeof *a);
}

/* A set of stacks (their top frames). */
struct set {
    const struct frame *f[MAX_STACKS];
    int n;
};

static bool frame_eq(const struct frame *x, const struct frame *y) {
    return x->up == y->up && x->node == y->node && x->kind == y->kind && x->st == y->st && x->ws == y->ws &&
           x->a == y->a && x->b == y->b && x->set == y->set;
}

static void set_add(struct set *s, const struct frame *f) {
    if (!f) return;
    for (int i = 0; i < s->n; i++)
        if (s->f[i] == f || frame_eq(s->f[i], f)) return;
    if (s->n < MAX_STACKS) s->f[s->n++] = f;
}

struct step_ctx {
    const struct ty_grammar *g;
    struct arena *ar;
};

static struct frame *frame_clone(struct step_ctx *x, const struct frame *f) {
    struct frame *n = arena_alloc(x->ar);
    if (n) *n = *f;
    return n;
}

static inline bool is_ws(uint8_t b) {
    return b == ' ' || b == '\n' || b == '\t' || b == '\r';
}

/* Whitespace inside a container or before the root value: a copy with the run one longer, within the bound. */
static void feed_ws(struct step_ctx *x, const struct frame *f, struct set *out) {
    if (f->ws >= 2u + 4u * f->depth || f->ws == 255) return;
    struct frame *n = frame_clone(x, f);
    if (!n) return;
    n->ws++;
    set_add(out, n);
}

static void feed(struct step_ctx *x, const struct frame *f, uint8_t b, struct set *out);

static void feed_lit(struct step_ctx *x, const struct frame *f, uint8_t b, struct set *out) {
    const struct gnode *n = &x->g->nodes[f->node];
    uint32_t pos = f->a, lo = f->b, hi = (uint32_t)f->set, nlo = hi, nhi = hi;
    for (uint32_t i = lo; i < hi; i++) {
        bool ok = n->lits[i].len > pos && (uint8_t)n->lits[i].s[pos] == b;
        if (ok && nlo == hi) nlo = i;
        if (ok) nhi = i + 1;
    }
    if (nlo < nhi) {
        struct frame *c = frame_clone(x, f);
        if (!c) return;
        c->a = pos + 1;
        c->b = nlo;
        c->set = nhi;
        set_add(out, c);
        return;
    }
    if (pos && n->lits[lo].len == pos) feed(x, f->up, b, out); /* complete: the byte is the parent's */
}

/* Starts a value of `node` whose first byte is `b`, under `parent` (already in its after-value state). */
static void start_value(struct step_ctx *x, const struct frame *parent, int32_t node, uint8_t b, struct set *out,
                        int guard) {
    const struct gnode *n = &x->g->nodes[node];
    struct frame f = {.up = parent, .node = node, .depth = (uint8_t)(parent->depth + 1)};
    switch (n->kind) {
    case N_ANYOF:
        if (guard < MAX_ANYOF_NEST)
            for (int32_t i = 0; i < n->n; i++) start_value(x, parent, n->ids[i], b, out, guard + 1);
        return;
    case N_ANY: {
        int32_t to = b == '{'                             ? NODE_ANY_OBJ
                     : b == '['                           ? NODE_ANY_ARR
                     : b == '"'                           ? NODE_ANY_STR
                     : b == '-' || (b >= '0' && b <= '9') ? NODE_NUMBER
                     : b == 't' || b == 'f' || b == 'n'   ? NODE_TFN
                                                          : NO_NODE;
        if (to != NO_NODE) start_value(x, parent, to, b, out, guard + 1);
        return;
    }
    case N_OBJECT:
    case N_ARRAY:
        if (b != (n->kind == N_OBJECT ? '{' : '[') || parent->depth + n->h > TY_CONSTRAIN_MAX_DEPTH) return;
        f.kind = n->kind == N_OBJECT ? F_OBJ : F_ARR;
        f.st = n->kind == N_OBJECT ? O_OPEN : A_OPEN;
        break;
    case N_STRING:
        if (b != '"') return;
        f.kind = F_STR;
        f.st = S_NORMAL;
        break;
    case N_NUMBER:
    case N_INTEGER:
        f.kind = F_NUM;
        if (b == '-')
            f.st = NUM_MINUS;
        else if (b == '0')
            f.st = NUM_ZERO;
        else if (b >= '1' && b <= '9')
            f.st = NUM_INT, f.a = 1;
        else
            return;
        break;
    case N_LITERAL:
        f.kind = F_LIT;
        f.b = 0;
        f.set = (uint64_t)n->n;
        feed_lit(x, &f, b, out); /* copies the frame if the byte fits */
        return;
    }
    set_add(out, frame_clone(x, &f));
}

/* The object's allowed keys after property `next`: every later property up to and including the first required one
 * (properties come in order; optional ones may be skipped). */
static uint64_t key_candidates(const struct gnode *n, uint32_t next) {
    if (next >= (uint32_t)n->n) return 0;
    uint64_t all = (n->n == 64 ? ~0ull : ((1ull << n->n) - 1)) & (~0ull << next);
    uint64_t req = n->req & all;
    if (!req) return all;
    uint64_t first = req & (~req + 1);
    return all & (first | (first - 1));
}

static bool obj_can_close(const struct gnode *n, uint32_t next) {
    return next >= 64 || !(n->req >> next);
}

/* The keys whose values can still be completed in an object at `depth` (required ones always can: the object's own
 * height counts them). */
static uint64_t keys_fitting(const struct ty_grammar *g, const struct gnode *n, int depth) {
    uint64_t all = n->n == 64 ? ~0ull : (1ull << n->n) - 1;
    if (depth + n->h_props <= TY_CONSTRAIN_MAX_DEPTH) return all;
    uint64_t fit = 0;
    for (int32_t k = 0; k < n->n; k++)
        if (depth + g->nodes[n->props[k].node].h <= TY_CONSTRAIN_MAX_DEPTH) fit |= 1ull << k;
    return fit;
}

/* Additional keys come only once every required property is written, so the model cannot put off a required one
 * forever behind keys of its own. */
static bool obj_addl(const struct ty_grammar *g, const struct gnode *n, const struct frame *f) {
    return n->addl != NO_NODE && obj_can_close(n, f->a) && f->depth + g->nodes[n->addl].h <= TY_CONSTRAIN_MAX_DEPTH;
}

static void feed_obj(struct step_ctx *x, const struct frame *f, uint8_t b, struct set *out) {
    const struct gnode *n = &x->g->nodes[f->node];
    if (is_ws(b)) {
        feed_ws(x, f, out);
        return;
    }
    struct frame *c;
    switch (f->st) {
    case O_OPEN:
    case O_AFTER_COMMA:
        if (b == '}' && f->st == O_OPEN) {
            if (obj_can_close(n, f->a)) set_add(out, f->up);
            return;
        }
        if (b != '"') return;
        if ((key_candidates(n, f->a) & keys_fitting(x->g, n, f->depth)) || obj_addl(x->g, n, f)) {
            /* The key frame tracks every listed name the key may still become: an additional key must differ from
             * all of them (a key equal to a listed name is that property, validated by its schema), and only the
             * allowed ones may be chosen. */
            uint64_t all = n->n == 64 ? ~0ull : (1ull << n->n) - 1;
            struct frame k = {.up = f,
                              .node = f->node,
                              .kind = F_KEY,
                              .st = obj_addl(x->g, n, f) ? K_ADDL : 0,
                              .depth = f->depth,
                              .set = all};
            set_add(out, frame_clone(x, &k));
        }
        return;
    case O_AFTER_VAL:
        if (b == '}') {
            if (obj_can_close(n, f->a)) set_add(out, f->up);
        } else if (b == ',' && ((key_candidates(n, f->a) & keys_fitting(x->g, n, f->depth)) || obj_addl(x->g, n, f)) &&
                   (c = frame_clone(x, f))) {
            c->st = O_AFTER_COMMA;
            c->ws = 0;
            set_add(out, c);
        }
        return;
    case O_COLON:
        if (b == ':' && (c = frame_clone(x, f))) {
            c->st = O_BEFORE_VAL;
            c->ws = 0;
            set_add(out, c);
        }
        return;
    case O_BEFORE_VAL: {
        struct frame *p = frame_clone(x, f);
        if (!p) return;
        p->st = O_AFTER_VAL;
        p->ws = 0;
        int32_t node = n->addl;
        if (f->b) {
            node = n->props[f->b - 1].node;
            p->a = f->b; /* the next key comes after this property */
        }
        p->b = 0;
        start_value(x, p, node, b, out, 0);
        return;
    }
    }
}

static void feed_key(struct step_ctx *x, const struct frame *f, uint8_t b, struct set *out) {
    const struct gnode *n = &x->g->nodes[f->node];
    uint32_t pos = f->a;
    bool addl = f->st & K_ADDL;
    uint64_t allowed = key_candidates(n, f->up->a) & keys_fitting(x->g, n, f->up->depth);
    uint64_t cand = 0;
    for (uint64_t s = f->set; s; s &= s - 1) {
        int i = __builtin_ctzll(s);
        if (n->props[i].len > pos && (uint8_t)n->props[i].enc[pos] == b) cand |= 1ull << i;
    }
    /* a quote that a listed name has here is escaped (names hold no bare quote): it continues that name */
    if (b == '"' && !(cand & allowed)) {
        int32_t exact = -1;
        for (uint64_t s = f->set; s && exact < 0; s &= s - 1)
            if (n->props[__builtin_ctzll(s)].len == pos) exact = __builtin_ctzll(s);
        if (exact >= 0 && !(allowed >> exact & 1)) return; /* a listed property out of order, or again */
        if (exact < 0 && !(addl && !(f->b & 0xff))) return;
        struct frame *o = frame_clone(x, f->up);
        if (!o) return;
        o->st = O_COLON;
        o->ws = 0;
        o->b = (uint32_t)(exact + 1);
        set_add(out, o);
        return;
    }
    uint32_t u = f->b;
    if (addl && (b == '"' || b == '\\' || b < 0x20 || !utf8_step(&u, b))) addl = false;
    if (!(cand & allowed) && !addl) return;
    struct frame *k = frame_clone(x, f);
    if (!k) return;
    k->a = pos + 1;
    k->set = cand;
    k->st = addl ? K_ADDL : 0;
    k->b = addl ? u : 0;
    set_add(out, k);
}

static void feed_arr(struct step_ctx *x, const struct frame *f, uint8_t b, struct set *out) {
    const struct gnode *n = &x->g->nodes[f->node];
    if (is_ws(b)) {
        feed_ws(x, f, out);
        return;
    }
    if (b == ']') {
        if (f->st != A_AFTER_COMMA && (int64_t)f->a >= n->min) set_add(out, f->up);
        return;
    }
    if (f->st == A_AFTER_VAL) {
        struct frame *c;
        bool room = n->max < 0 || (int64_t)f->a < n->max;
        int32_t next = (int32_t)f->a < n->n ? n->ids[f->a] : n->items;
        bool more = next != NO_NODE && f->depth + x->g->nodes[next].h <= TY_CONSTRAIN_MAX_DEPTH;
        if (b == ',' && room && more && (c = frame_clone(x, f))) {
            c->st = A_AFTER_COMMA;
            c->ws = 0;
            set_add(out, c);
        }
        return;
    }
    uint32_t i = f->a;
    if (n->max >= 0 && (int64_t)i >= n->max) return;
    int32_t node = (int32_t)i < n->n ? n->ids[i] : n->items;
    if (node == NO_NODE || f->depth + x->g->nodes[node].h > TY_CONSTRAIN_MAX_DEPTH) return;
    struct frame *p = frame_clone(x, f);
    if (!p) return;
    p->st = A_AFTER_VAL;
    p->ws = 0;
    p->a = i + 1;
    start_value(x, p, node, b, out, 0);
}

static int hexval(uint8_t b) {
    if (b >= '0' && b <= '9') return b - '0';
    if (b >= 'a' && b <= 'f') return b - 'a' + 10;
    if (b >= 'A' && b <= 'F') return b - 'A' + 10;
    return -1;
}

static void feed_str(struct step_ctx *x, const struct frame *f, uint8_t b, struct set *out) {
    const struct gnode *n = &x->g->nodes[f->node];
    struct frame *c;
    bool room = n->max < 0 || (int64_t)f->a < n->max;
    uint32_t u = f->b;
    switch (f->st) {
    case S_NORMAL:
        if (u & 0xff) { /* inside a multi-byte character */
            if (utf8_step(&u, b) && (c = frame_clone(x, f))) {
                c->b = u;
                set_add(out, c);
            }
            return;
        }
        if (b == '"') {
            if ((int64_t)f->a >= n->min) set_add(out, f->up);
            return;
        }
        if (b < 0x20 || !room) return;
        if (b == '\\') {
            if ((c = frame_clone(x, f))) {
                c->st = S_ESC;
                c->a++;
                set_add(out, c);
            }
            return;
        }
        if (!utf8_step(&u, b) || !(c = frame_clone(x, f))) return;
        c->b = u;
        c->a++;
        set_add(out, c);
        return;
    case S_ESC:
        if (b == 'u') {
            if ((c = frame_clone(x, f))) {
                c->st = S_U0;
                c->set = 0;
                set_add(out, c);
            }
        } else if (b && strchr("\"\\/bfnrt", b) && (c = frame_clone(x, f))) {
            c->st = S_NORMAL;
            set_add(out, c);
        }
        return;
    default: {
        int h = hexval(b);
        if (h < 0) return;
        uint64_t v = f->set * 16 + (uint64_t)h;
        /* never a surrogate (which would need a pair) nor NUL (which C parsers refuse); a surrogate is cut as soon as
         * it shows, at the second digit, so every state left can still be completed */
        if (f->st == S_U1 && v >= 0xD8 && v <= 0xDF) return;
        if (f->st == S_U3 && v == 0) return;
        if (!(c = frame_clone(x, f))) return;
        c->set = v;
        c->st = f->st == S_U3 ? S_NORMAL : (uint8_t)(f->st + 1);
        set_add(out, c);
        return;
    }
    }
}

static bool num_complete(const struct frame *f) {
    return f->st == NUM_ZERO || f->st == NUM_INT || f->st == NUM_FRAC || f->st == NUM_EXP;
}

static void feed_num(struct step_ctx *x, const struct frame *f, uint8_t b, struct set *out) {
    bool integer = x->g->nodes[f->node].kind == N_INTEGER, digit = b >= '0' && b <= '9';
    uint8_t st = 255;
    uint32_t a = 0;
    switch (f->st) {
    case NUM_MINUS:
        if (b == '0')
            st = NUM_ZERO;
        else if (digit)
            st = NUM_INT, a = 1;
        break;
    case NUM_ZERO:
    case NUM_INT:
        if (digit && f->st == NUM_INT && f->a < MAX_INT_DIGITS)
            st = NUM_INT, a = f->a + 1;
        else if (!integer && b == '.')
            st = NUM_DOT;
        else if (!integer && (b == 'e' || b == 'E'))
            st = NUM_E;
        break;
    case NUM_DOT:
        if (digit) st = NUM_FRAC, a = 1;
        break;
    case NUM_FRAC:
        if (digit && f->a < MAX_FRAC_DIGITS)
            st = NUM_FRAC, a = f->a + 1;
        else if (b == 'e' || b == 'E')
            st = NUM_E;
        break;
    case NUM_E:
        if (b == '+' || b == '-')
            st = NUM_ESIGN;
        else if (digit)
            st = NUM_EXP, a = 1;
        break;
    case NUM_ESIGN:
        if (digit) st = NUM_EXP, a = 1;
        break;
    case NUM_EXP:
        if (digit && f->a < MAX_EXP_DIGITS) st = NUM_EXP, a = f->a + 1;
        break;
    }
    if (st != 255) {
        struct frame *c = frame_clone(x, f);
        if (c) {
            c->st = st;
            c->a = a;
            set_add(out, c);
        }
        return;
    }
    if (num_complete(f)) feed(x, f->up, b, out);
}

static void feed_root(struct step_ctx *x, const struct frame *f, uint8_t b, struct set *out) {
    const struct ty_grammar *g = x->g;
    struct frame *c;
    switch (f->st) {
    case R_PREFIX:
    case R_SUFFIX: {
        const char *lit = f->st == R_PREFIX ? g->prefix : g->suffix;
        uint32_t len = f->st == R_PREFIX ? g->prefix_len : g->suffix_len;
        if (f->st == R_PREFIX && !f->a && is_ws(b)) { /* the blank line Qwen writes after </think> */
            feed_ws(x, f, out);
            return;
        }
        if (f->a >= len || (uint8_t)lit[f->a] != b || !(c = frame_clone(x, f))) return;
        if (++c->a == len) {
            c->st = f->st == R_PREFIX ? R_BEFORE : R_END;
            c->a = 0;
            c->ws = 0;
        }
        set_add(out, c);
        return;
    }
    case R_BEFORE:
        if (is_ws(b)) {
            feed_ws(x, f, out);
            return;
        }
        if (!(c = frame_clone(x, f))) return;
        c->st = g->suffix_len ? R_SUFFIX : R_END;
        c->ws = 0;
        start_value(x, c, g->root, b, out, 0);
        return;
    default:
        return;
    }
}

static void feed(struct step_ctx *x, const struct frame *f, uint8_t b, struct set *out) {
    switch (f->kind) {
    case F_ROOT:
        feed_root(x, f, b, out);
        return;
    case F_OBJ:
        feed_obj(x, f, b, out);
        return;
    case F_KEY:
        feed_key(x, f, b, out);
        return;
    case F_ARR:
        feed_arr(x, f, b, out);
        return;
    case F_STR:
        feed_str(x, f, b, out);
        return;
    case F_NUM:
        feed_num(x, f, b, out);
        return;
    case F_LIT:
        feed_lit(x, f, b, out);
        return;
    }
}

static void step_set(struct step_ctx *x, const struct set *in, uint8_t b, struct set *out) {
    out->n = 0;
    for (int i = 0; i < in->n; i++) feed(x, in->f[i], b, out);
}

/* The stack's value (and suffix) is complete: end of turn may come now. */
static bool stack_can_end(const struct ty_grammar *g, const struct frame *f) {
    if (f->kind == F_ROOT) return f->st == R_END;
    bool lazy_done =
        (f->kind == F_NUM && num_complete(f)) || (f->kind == F_LIT && f->a && g->nodes[f->node].lits[f->b].len == f->a);
    return lazy_done && f->up->kind == F_ROOT && f->up->st == R_END;
}

/* ==== Vocabulary trie ==== */

/* A trie of token byte strings in preorder: node i's subtree is i .. end[i]-1. */
struct trie {
    uint8_t *byte;   /* (n_nodes) the byte that leads to the node */
    uint16_t *depth; /* (n_nodes) root = 0 */
    uint32_t *end;   /* (n_nodes) */
    int32_t *tok_at; /* (n_nodes) a token whose bytes end here, or -1 (more in dup_next) */
    int32_t n_nodes, max_depth;
};

struct ty_constrain_vocab {
    const struct ty_tokenizer *tok;
    int32_t n_vocab;
    struct trie all;   /* every plain (BPE vocabulary) token */
    int32_t *dup_next; /* (n_vocab) another token with the same bytes, or -1 */
    /* Inside a string with no length cap (or a free object key) every token made only of string characters (no
     * quote, backslash or control byte, whole UTF-8 characters) is allowed and leads to the same kind of state, so
     * such a step allows `str_safe` wholesale and walks only the trie of the other tokens: a few thousand instead of
     * 150k. */
    uint32_t *str_safe; /* (n_vocab bits) */
    int32_t n_str_safe;
    struct trie unsafe;
    /* the same split for strings with a length cap: safe_upto[k - 1] holds the safe tokens of at most k characters
     * (k = 1 .. max_safe_chars), so a string with k characters of room left allows safe_upto[k - 1] wholesale */
    uint32_t *safe_upto;  /* (max_safe_chars, words) */
    int32_t *n_safe_upto; /* (max_safe_chars) */
    int32_t max_safe_chars;
    size_t words;
    uint32_t *is_special; /* (n_vocab bits) added tokens: allowed only inside the literal prefix or suffix */
    int32_t *special;     /* (n_special) the same as a list */
    int32_t n_special;
    int32_t *eog; /* (n_eog) end-of-generation tokens */
    int32_t n_eog;
    int32_t *gt; /* (n_gt) tokens containing '>', which may close the reasoning block */
    int32_t n_gt;
    uint32_t *free_mask; /* (n_vocab bits) what the reasoning phase allows: every real token but end of generation */
    int32_t n_free;
};

struct tok_ref {
    const uint8_t *p;
    uint32_t len;
    int32_t id;
};

static int tok_ref_cmp(const void *a, const void *b) {
    const struct tok_ref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static inline void mask_set(uint32_t *mask, int32_t id) {
    mask[id / 32] |= 1u << (id % 32);
}

static inline bool mask_has(const uint32_t *mask, int32_t id) {
    return mask[id / 32] >> (id % 32) & 1;
}

int32_t ty__constrain_vocab_n(const struct ty_constrain_vocab *v) {
    return v->n_vocab;
}

static void trie_free(struct trie *t) {
    ty_free(t->byte);
    ty_free(t->depth);
    ty_free(t->end);
    ty_free(t->tok_at);
}

void ty__constrain_vocab_free(struct ty_constrain_vocab *v) {
    if (!v) return;
    trie_free(&v->all);
    trie_free(&v->unsafe);
    ty_free(v->str_safe);
    ty_free(v->safe_upto);
    ty_free(v->n_safe_upto);
    ty_free(v->dup_next);
    ty_free(v->is_special);
    ty_free(v->special);
    ty_free(v->eog);
    ty_free(v->gt);
    ty_free(v->free_mask);
    ty_free(v);
}

/* Builds the preorder trie of `refs` (sorted by bytes). */
static bool build_trie(struct trie *v, int32_t *dup_next, const struct tok_ref *refs, int32_t n_refs, size_t total) {
    size_t cap = total + 1;
    v->byte = ty__malloc(cap);
    v->depth = ty__malloc(cap * sizeof *v->depth);
    v->end = ty__malloc(cap * sizeof *v->end);
    v->tok_at = ty__malloc(cap * sizeof *v->tok_at);
    if (!v->byte || !v->depth || !v->end || !v->tok_at) return false;
    for (int32_t i = 0; i < n_refs; i++) dup_next[refs[i].id] = -1;
    uint32_t open[MAX_TOKEN_LEN + 1]; /* the node at each depth of the current path */
    v->byte[0] = 0;
    v->depth[0] = 0;
    v->tok_at[0] = -1;
    open[0] = 0;
    uint32_t n = 1, path_len = 0;
    const struct tok_ref *prev = NULL;
    for (int32_t i = 0; i < n_refs; i++) {
        const struct tok_ref *r = &refs[i];
        uint32_t lcp = 0;
        if (prev) {
            uint32_t m = prev->len < r->len ? prev->len : r->len;
            while (lcp < m && prev->p[lcp] == r->p[lcp]) lcp++;
        }
        if (prev && lcp == r->len && lcp == prev->len) { /* the same bytes as the previous token */
            int32_t at = v->tok_at[open[lcp]];
            dup_next[r->id] = dup_next[at];
            dup_next[at] = r->id;
            continue;
        }
        while (path_len > lcp) v->end[open[path_len--]] = n; /* the previous path's nodes below the common prefix */
        for (uint32_t d = lcp; d < r->len; d++) {
            v->byte[n] = r->p[d];
            v->depth[n] = (uint16_t)(d + 1);
            v->tok_at[n] = -1;
            open[d + 1] = n;
            n++;
        }
        path_len = r->len;
        v->tok_at[open[r->len]] = r->id;
        if ((int32_t)r->len > v->max_depth) v->max_depth = (int32_t)r->len;
        prev = r;
    }
    while (path_len > 0) v->end[open[path_len--]] = n;
    v->end[0] = n;
    v->n_nodes = (int32_t)n;
    return true;
}

enum ty_status ty__constrain_vocab_init(const struct ty_tokenizer *tok, struct ty_constrain_vocab **out) {
    *out = NULL;
    int32_t nv = ty_tokenizer_n_vocab(tok);
    size_t words = ((size_t)nv + 31) / 32 + 1, cnt = (size_t)nv + 1;
    struct ty_constrain_vocab *v = ty__calloc(1, sizeof *v);
    struct tok_ref *refs = ty__malloc(cnt * sizeof *refs);
    if (!v || !refs) goto oom;
    v->tok = tok;
    v->n_vocab = nv;
    v->dup_next = ty__malloc(cnt * sizeof(int32_t));
    v->special = ty__malloc(cnt * sizeof(int32_t));
    v->eog = ty__malloc(cnt * sizeof(int32_t));
    v->gt = ty__malloc(cnt * sizeof(int32_t));
    v->free_mask = ty__calloc(words, sizeof(uint32_t));
    v->is_special = ty__calloc(words, sizeof(uint32_t));
    if (!v->dup_next || !v->special || !v->eog || !v->gt || !v->free_mask || !v->is_special) goto oom;
    for (int32_t k = 0; k < tok->n_added; k++)
        if (tok->added[k].id >= 0 && tok->added[k].id < nv) mask_set(v->is_special, tok->added[k].id);
    int32_t n_refs = 0;
    size_t total = 0;
    for (int32_t id = 0; id < nv; id++) {
        v->dup_next[id] = -1;
        const struct tok_entry *e = &tok->tokens[id];
        size_t len;
        const char *s = ty_token_bytes(tok, id, &len);
        if (!s || e->type == TOK_TYPE_UNDEFINED || e->type == TOK_TYPE_UNUSED) continue;
        if (ty_tokenizer_is_eog(tok, id)) {
            v->eog[v->n_eog++] = id;
            continue;
        }
        if (!len) continue;
        mask_set(v->free_mask, id);
        v->n_free++;
        if (memchr(s, '>', len)) v->gt[v->n_gt++] = id;
        if ((e->type != TOK_TYPE_NORMAL && e->type != TOK_TYPE_BYTE) || mask_has(v->is_special, id)) {
            mask_set(v->is_special, id);
            v->special[v->n_special++] = id;
            continue;
        }
        if (len > MAX_TOKEN_LEN) continue;
        refs[n_refs++] = (struct tok_ref){(const uint8_t *)s, (uint32_t)len, id};
        total += len;
    }
    qsort(refs, (size_t)n_refs, sizeof *refs, tok_ref_cmp);
    if (!build_trie(&v->all, v->dup_next, refs, n_refs, total)) goto oom;
    /* the string-safe tokens, and the trie of the others (refs stay sorted) */
    if (!(v->str_safe = ty__calloc(words, sizeof(uint32_t)))) goto oom;
    int32_t n_unsafe = 0;
    size_t unsafe_total = 0;
    for (int32_t i = 0; i < n_refs; i++) {
        uint32_t u = 0;
        bool safe = true;
        for (uint32_t k = 0; k < refs[i].len && safe; k++) {
            uint8_t c = refs[i].p[k];
            safe = c >= 0x20 && c != '"' && c != '\\' && utf8_step(&u, c);
        }
        if (safe && !u) {
            mask_set(v->str_safe, refs[i].id);
            v->n_str_safe++;
            int32_t chars = (int32_t)utf8_chars((const char *)refs[i].p, refs[i].len);
            if (chars > v->max_safe_chars) v->max_safe_chars = chars;
        } else {
            refs[n_unsafe++] = refs[i];
            unsafe_total += refs[i].len;
        }
    }
    if (!build_trie(&v->unsafe, v->dup_next, refs, n_unsafe, unsafe_total)) goto oom;
    v->words = words;
    size_t nk = v->max_safe_chars > 0 ? (size_t)v->max_safe_chars : 1;
    v->safe_upto = ty__calloc(nk * words, sizeof(uint32_t));
    v->n_safe_upto = ty__calloc(nk, sizeof(int32_t));
    if (!v->safe_upto || !v->n_safe_upto) goto oom;
    for (int32_t id = 0; id < nv; id++) {
        if (!mask_has(v->str_safe, id)) continue;
        size_t len;
        const char *sb = ty_token_bytes(tok, id, &len);
        size_t chars = (size_t)utf8_chars(sb, len);
        for (size_t k = chars; k <= nk; k++) {
            mask_set(v->safe_upto + (k - 1) * words, id);
            v->n_safe_upto[k - 1]++;
        }
    }
    ty_free(refs);
    *out = v;
    return TY_OK;
oom:
    ty_free(refs);
    ty__constrain_vocab_free(v);
    return ty__error(TY_ERR_NO_MEMORY, "out of memory building the constrained-decoding trie for %d tokens", nv);
}

/* ==== Matcher ==== */

#define THINK_END     "</think>"
#define THINK_END_LEN 8

struct ty_matcher {
    struct ty_grammar *g;
    const struct ty_constrain_vocab *v;
    bool reasoning;           /* still inside the reasoning block */
    char tail[THINK_END_LEN]; /* the last bytes generated while reasoning */
    uint32_t n_tail;
    struct set cur;           /* the committed state, in arena `live` */
    struct arena live, spare; /* committed frames (two, swapped on each accept) */
    struct arena scratch;     /* frames of the mask walk and of trial steps */
    struct set *levels;       /* (MAX_TOKEN_LEN + 2) the walk's state set per trie depth */
    uint32_t *marks;          /* (MAX_TOKEN_LEN + 2) scratch arena position before each depth's frames */
};

enum ty_status ty__matcher_init(struct ty_grammar *g, const struct ty_constrain_vocab *v, struct ty_matcher **out) {
    *out = NULL;
    struct ty_matcher *m = ty__calloc(1, sizeof *m);
    if (!m) return ty__error(TY_ERR_NO_MEMORY, "out of memory starting a constrained sequence");
    m->g = ty__grammar_ref(g);
    m->v = v;
    m->reasoning = g->after_reasoning;
    m->levels = ty__malloc((MAX_TOKEN_LEN + 2) * sizeof *m->levels);
    m->marks = ty__malloc((MAX_TOKEN_LEN + 2) * sizeof *m->marks);
    struct frame *r = m->levels && m->marks ? arena_alloc(&m->live) : NULL;
    if (!r) {
        ty__matcher_free(m);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory starting a constrained sequence");
    }
    *r = (struct frame){.kind = F_ROOT, .st = g->prefix_len ? R_PREFIX : R_BEFORE, .node = g->root};
    set_add(&m->cur, r);
    *out = m;
    return TY_OK;
}

void ty__matcher_free(struct ty_matcher *m) {
    if (!m) return;
    ty__grammar_unref(m->g);
    arena_free(&m->live);
    arena_free(&m->spare);
    arena_free(&m->scratch);
    ty_free(m->levels);
    ty_free(m->marks);
    ty_free(m);
}

bool ty__matcher_in_reasoning(const struct ty_matcher *m) {
    return m->reasoning;
}

bool ty__matcher_can_end(const struct ty_matcher *m) {
    if (m->reasoning) return false;
    for (int i = 0; i < m->cur.n; i++)
        if (stack_can_end(m->g, m->cur.f[i])) return true;
    return false;
}

/* Copies a stack into arena `a`. */
static const struct frame *copy_stack(struct arena *a, const struct frame *f) {
    const struct frame *up = f->up ? copy_stack(a, f->up) : NULL;
    if (f->up && !up) return NULL;
    struct frame *n = arena_alloc(a);
    if (!n) return NULL;
    *n = *f;
    n->up = up;
    return n;
}

/* Makes `s` (frames in the scratch arena) the committed state. */
static bool commit(struct ty_matcher *m, const struct set *s) {
    m->spare.used = 0;
    struct set n = {.n = 0};
    for (int i = 0; i < s->n; i++) {
        const struct frame *f = copy_stack(&m->spare, s->f[i]);
        if (!f) return false;
        n.f[n.n++] = f;
    }
    struct arena t = m->live;
    m->live = m->spare;
    m->spare = t;
    m->cur = n;
    return true;
}

/* Runs `n` bytes from the committed state through the scratch arena (reset first); the resulting set in `*out`. */
static bool run_bytes(struct ty_matcher *m, const uint8_t *s, size_t n, struct set *out) {
    struct step_ctx x = {m->g, &m->scratch};
    m->scratch.used = 0;
    m->scratch.oom = false;
    struct set a = m->cur, b;
    for (size_t i = 0; i < n && a.n; i++) {
        step_set(&x, &a, s[i], &b);
        a = b;
    }
    *out = a;
    return a.n > 0 && !m->scratch.oom;
}

static bool all_at_root(const struct set *s) {
    for (int i = 0; i < s->n; i++)
        if (s->f[i]->kind != F_ROOT) return false;
    return true;
}

/* Where the reasoning block ends in `s` given the bytes generated before it: the offset in `s` just past
 * "</think>", or -1. */
static long think_end_in(const struct ty_matcher *m, const char *s, size_t n) {
    char buf[THINK_END_LEN + MAX_TOKEN_LEN];
    size_t k = m->n_tail, len = n < MAX_TOKEN_LEN ? n : MAX_TOKEN_LEN;
    memcpy(buf, m->tail, k);
    memcpy(buf + k, s, len);
    for (size_t i = 0; i + THINK_END_LEN <= k + len; i++)
        if (!memcmp(buf + i, THINK_END, THINK_END_LEN)) return (long)(i + THINK_END_LEN) - (long)k;
    return -1;
}

/* Keeps the last THINK_END_LEN - 1 bytes: all that can start a "</think>" still to come. */
static void tail_push(struct ty_matcher *m, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (m->n_tail == THINK_END_LEN - 1) {
            memmove(m->tail, m->tail + 1, THINK_END_LEN - 2);
            m->n_tail--;
        }
        m->tail[m->n_tail++] = s[i];
    }
}

/* Marks in `mask` the tokens of trie `t` whose bytes the state accepts; returns how many. Depth first; levels[d] holds
 * the state after the d bytes on the path to the current node, and a rejected prefix skips its whole subtree. */
static int32_t walk_trie(struct ty_matcher *m, const struct trie *t, uint32_t *mask) {
    struct step_ctx x = {m->g, &m->scratch};
    int32_t count = 0;
    m->scratch.used = 0;
    m->scratch.oom = false;
    m->levels[0] = m->cur;
    m->marks[1] = 0;
    for (int32_t i = 1; i < t->n_nodes;) {
        int d = t->depth[i];
        m->scratch.used = m->marks[d];
        step_set(&x, &m->levels[d - 1], t->byte[i], &m->levels[d]);
        if (!m->levels[d].n) {
            i = (int32_t)t->end[i];
            continue;
        }
        m->marks[d + 1] = m->scratch.used;
        for (int32_t k = t->tok_at[i]; k >= 0; k = m->v->dup_next[k]) mask_set(mask, k), count++;
        i++;
    }
    return count;
}

/* When the state is one stack inside a string, or inside an object key that can only be a free additional key,
 * between characters: the characters it has room for (INT64_MAX without a cap); 0 otherwise. See str_safe. */
static int64_t string_fast_path(const struct ty_matcher *m) {
    if (m->cur.n != 1) return 0;
    const struct frame *f = m->cur.f[0];
    if (f->b & 0xff) return 0;
    if (f->kind == F_KEY) return (f->st & K_ADDL) && !f->set ? INT64_MAX : 0;
    if (f->kind != F_STR || f->st != S_NORMAL) return 0;
    int64_t max = m->g->nodes[f->node].max;
    return max < 0 ? INT64_MAX : max - (int64_t)f->a;
}

int32_t ty__matcher_mask(struct ty_matcher *m, uint32_t *mask) {
    const struct ty_constrain_vocab *v = m->v;
    size_t words = ((size_t)v->n_vocab + 31) / 32;
    if (m->reasoning) {
        /* free text, except a token that closes the block and goes on with bytes the value cannot start with */
        memcpy(mask, v->free_mask, words * sizeof *mask);
        int32_t count = v->n_free;
        for (int32_t i = 0; i < v->n_gt; i++) {
            size_t len;
            const char *s = ty_token_bytes(v->tok, v->gt[i], &len);
            long at = think_end_in(m, s, len);
            struct set r;
            if (at < 0 || (size_t)at == len || run_bytes(m, (const uint8_t *)s + at, len - (size_t)at, &r)) continue;
            mask[v->gt[i] / 32] &= ~(1u << (v->gt[i] % 32));
            count--;
        }
        return count;
    }
    memset(mask, 0, words * sizeof *mask);
    int32_t count = 0;
    if (ty__matcher_can_end(m))
        for (int32_t i = 0; i < v->n_eog; i++) mask_set(mask, v->eog[i]), count++;

    const struct trie *t = &v->all;
    int64_t room = string_fast_path(m);
    if (room > 0) {
        const uint32_t *safe = v->str_safe;
        count += v->n_str_safe;
        if (room < v->max_safe_chars) {
            safe = v->safe_upto + (size_t)(room - 1) * v->words;
            count += v->n_safe_upto[room - 1] - v->n_str_safe;
        }
        for (size_t w = 0; w < words; w++) mask[w] |= safe[w];
        t = &v->unsafe;
    }
    count += walk_trie(m, t, mask);
    bool oom = m->scratch.oom;
    /* added tokens (<tool_call>, ...) only where the literal prefix or suffix spells them out */
    bool literal = false;
    for (int i = 0; i < m->cur.n; i++)
        literal |= m->cur.f[i]->kind == F_ROOT && (m->cur.f[i]->st == R_PREFIX || m->cur.f[i]->st == R_SUFFIX);
    for (int32_t i = 0; literal && i < v->n_special; i++) {
        size_t len;
        const char *s = ty_token_bytes(v->tok, v->special[i], &len);
        struct set r;
        if (run_bytes(m, (const uint8_t *)s, len, &r) && all_at_root(&r)) mask_set(mask, v->special[i]), count++;
        oom |= m->scratch.oom;
    }
    if (oom) {
        TY_LOG_E("constrained decoding: out of memory computing the token mask");
        return 0;
    }
    return count;
}

void ty__constrain_apply_mask(const uint32_t *mask, float *logits, int32_t n, int32_t n_mask) {
    for (int32_t i = 0; i < n; i++)
        if (i >= n_mask || !mask_has(mask, i)) logits[i] = -INFINITY;
}

bool ty__matcher_accept_bytes(struct ty_matcher *m, const char *s, size_t n) {
    if (m->reasoning) {
        long at = think_end_in(m, s, n);
        if (at < 0) {
            tail_push(m, s, n);
            return true;
        }
        m->reasoning = false;
        if (ty__matcher_accept_bytes(m, s + at, n - (size_t)at)) return true;
        m->reasoning = true;
        return false;
    }
    struct set r;
    return run_bytes(m, (const uint8_t *)s, n, &r) && commit(m, &r);
}

bool ty__matcher_accept(struct ty_matcher *m, int32_t token) {
    const struct ty_constrain_vocab *v = m->v;
    if (token < 0 || token >= v->n_vocab) return false;
    if (ty_tokenizer_is_eog(v->tok, token)) return ty__matcher_can_end(m);
    if (!mask_has(v->free_mask, token)) return false;
    size_t len;
    const char *s = ty_token_bytes(v->tok, token, &len);
    if (m->reasoning) return ty__matcher_accept_bytes(m, s, len);
    bool special = mask_has(v->is_special, token);
    if (!special && len > MAX_TOKEN_LEN) return false; /* never in the trie, so never in a mask */
    struct set r;
    if (!run_bytes(m, (const uint8_t *)s, len, &r) || (special && !all_at_root(&r))) return false;
    return commit(m, &r);
}

bool ty__constrain_logits(struct ty_matcher *m, uint32_t *mask, const int32_t *bias_ids, const float *bias_vals,
                          int n_bias, float *logits, int32_t n_logits) {
    for (int i = 0; i < n_bias; i++)
        if (bias_ids[i] >= 0 && bias_ids[i] < n_logits) logits[bias_ids[i]] += bias_vals[i];
    if (!m) return true;
    if (ty__matcher_mask(m, mask) <= 0) return false;
    ty__constrain_apply_mask(mask, logits, n_logits, m->v->n_vocab);
    return true;
}
