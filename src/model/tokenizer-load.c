/*
 * tokenizer-load.c - building a tokenizer from Hugging Face's tokenizer.json (+ tokenizer_config.json, config.json)
 * or from a GGUF file's tokenizer.ggml.* metadata, and writing that metadata the way llama.cpp's converter does.
 *
 * Every input is hostile: sizes are bounded before anything is allocated from them, every id is range-checked, every
 * merge must name tokens that exist, and errors say which key, entry or merge is wrong. A tokenizer.json whose
 * pipeline Tongyun cannot reproduce exactly (another model type, a normaliser other than NFC, a post-processor that
 * adds tokens, ...) is refused with a message naming the part, never tokenized approximately.
 */
#include "tokenizer-impl.h"
#include "base/json.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ==== JSON helpers ==== */

/* Optional boolean member: absent or null gives `def`. */
static enum ty_status get_bool(const json_t *obj, const char *key, bool def, const char *where, bool *out) {
    const json_t *v = json_object_get(obj, key);
    *out = def;
    if (!v || json_is_null(v)) return TY_OK;
    if (!json_is_boolean(v))
        return ty__error(TY_ERR_FORMAT, "%s: \"%s\" should be a boolean, not %s", where, key, ty__json_kind(v));
    *out = json_is_true(v);
    return TY_OK;
}

/* Optional string member: absent or null gives NULL. */
static enum ty_status get_str(const json_t *obj, const char *key, const char *where, const char **out, size_t *len) {
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (len) *len = 0;
    if (!v || json_is_null(v)) return TY_OK;
    if (!json_is_string(v))
        return ty__error(TY_ERR_FORMAT, "%s: \"%s\" should be a string, not %s", where, key, ty__json_kind(v));
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return TY_OK;
}

static const char *type_of(const json_t *obj) {
    const json_t *t = json_object_get(obj, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

/* ==== tokenizer.json ==== */

/* Scratch for byte-level decoding of vocabulary strings. */
struct hf_ctx {
    char *buf;
    size_t cap;
};

static enum ty_status decode_key(struct hf_ctx *c, const char *s, size_t len, size_t *out_len) {
    if (len > c->cap) {
        size_t cap = len < 256 ? 256 : len;
        char *p = ty__realloc(c->buf, cap);
        if (!p) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
        c->buf = p;
        c->cap = cap;
    }
    return ty__bytelevel_decode(s, len, c->buf, out_len) ? TY_OK : TY_ERR_FORMAT;
}

static enum ty_status check_normalizer(struct ty_tokenizer *t, const json_t *n) {
    if (!n || json_is_null(n)) return TY_OK;
    const char *type = type_of(n);
    if (!type) return ty__error(TY_ERR_FORMAT, "tokenizer.json: normalizer has no \"type\"");
    if (!strcmp(type, "NFC")) {
        t->nfc = true;
        return TY_OK;
    }
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) return ty__error(TY_ERR_FORMAT, "tokenizer.json: normalizer Sequence has no list");
        for (size_t i = 0; i < json_array_size(list); i++) TY_TRY(check_normalizer(t, json_array_get(list, i)));
        return TY_OK;
    }
    return ty__error(TY_ERR_UNSUPPORTED,
                     "tokenizer.json: normalizer \"%s\" is not supported (only NFC or none, as Qwen's tokenizers use)",
                     type);
}

static enum ty_status check_bytelevel(const json_t *b, const char *what) {
    bool prefix;
    TY_TRY(get_bool(b, "add_prefix_space", false, what, &prefix));
    if (prefix) return ty__error(TY_ERR_UNSUPPORTED, "tokenizer.json: %s with add_prefix_space is not supported", what);
    return TY_OK;
}

static enum ty_status check_pre_tokenizer(struct ty_tokenizer *t, const json_t *p) {
    if (!p || json_is_null(p))
        return ty__error(TY_ERR_UNSUPPORTED,
                         "tokenizer.json: no pre_tokenizer; only byte-level BPE (a ByteLevel pre-tokenizer) is "
                         "supported");
    const json_t *steps[8];
    size_t n = 0;
    const char *type = type_of(p);
    if (type && !strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > 8)
            return ty__error(TY_ERR_FORMAT, "tokenizer.json: pre_tokenizer Sequence needs 1 to 8 pre-tokenizers");
        for (size_t i = 0; i < json_array_size(list); i++) steps[n++] = json_array_get(list, i);
    } else {
        steps[n++] = p;
    }
    /* Supported: [Split(regex, Isolated)] then ByteLevel(use_regex=false), or ByteLevel(use_regex=true) alone. */
    const char *regex = NULL;
    size_t regex_len = 0;
    bool regex_is_literal = false, saw_bytelevel = false;
    for (size_t i = 0; i < n; i++) {
        const char *st = json_is_object(steps[i]) ? type_of(steps[i]) : NULL;
        if (!st) return ty__error(TY_ERR_FORMAT, "tokenizer.json: pre-tokenizer %zu has no \"type\"", i);
        if (saw_bytelevel)
            return ty__error(TY_ERR_UNSUPPORTED,
                             "tokenizer.json: pre-tokenizer \"%s\" after ByteLevel is not supported", st);
        if (!strcmp(st, "Split")) {
            if (regex)
                return ty__error(TY_ERR_UNSUPPORTED,
                                 "tokenizer.json: more than one Split pre-tokenizer is not supported");
            const json_t *pat = json_object_get(steps[i], "pattern");
            const char *behavior;
            bool invert;
            TY_TRY(get_str(steps[i], "behavior", "tokenizer.json: Split", &behavior, NULL));
            TY_TRY(get_bool(steps[i], "invert", false, "tokenizer.json: Split", &invert));
            if (!behavior || strcmp(behavior, "Isolated") || invert)
                return ty__error(TY_ERR_UNSUPPORTED,
                                 "tokenizer.json: Split with behavior \"%s\"%s is not supported (only Isolated)",
                                 behavior ? behavior : "(none)", invert ? " and invert" : "");
            const json_t *r = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
            const json_t *s = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
            if (json_is_string(r)) {
                regex = json_string_value(r);
                regex_len = json_string_length(r);
            } else if (json_is_string(s)) {
                regex = json_string_value(s);
                regex_len = json_string_length(s);
                regex_is_literal = true;
            } else {
                return ty__error(TY_ERR_FORMAT,
                                 "tokenizer.json: Split pattern must be {\"Regex\": ...} or {\"String\": ...}");
            }
        } else if (!strcmp(st, "ByteLevel")) {
            TY_TRY(check_bytelevel(steps[i], "ByteLevel pre-tokenizer"));
            bool use_regex;
            TY_TRY(get_bool(steps[i], "use_regex", true, "tokenizer.json: ByteLevel", &use_regex));
            if (use_regex) {
                if (regex)
                    return ty__error(TY_ERR_UNSUPPORTED,
                                     "tokenizer.json: Split followed by ByteLevel with use_regex is not supported");
                const struct tok_pre_def *gpt2 = ty__tok_pre_by_name("gpt-2");
                regex = gpt2->regex;
                regex_len = strlen(regex);
            }
            saw_bytelevel = true;
        } else {
            return ty__error(TY_ERR_UNSUPPORTED, "tokenizer.json: pre-tokenizer \"%s\" is not supported", st);
        }
    }
    if (!saw_bytelevel)
        return ty__error(TY_ERR_UNSUPPORTED,
                         "tokenizer.json: the pre-tokenizer has no ByteLevel step; only byte-level BPE is supported");
    if (regex_is_literal) {
        /* A literal split string: quote every character for PCRE2 */
        struct ty_buf b = {0};
        ty__buf_puts(&b, "\\Q");
        ty__buf_append(&b, regex, regex_len);
        ty__buf_puts(&b, "\\E");
        if (b.oom) {
            ty__buf_free(&b);
            return ty__error(TY_ERR_NO_MEMORY, "out of memory");
        }
        if (regex_len && strstr(b.data + 2, "\\E") != b.data + b.len - 2) {
            ty__buf_free(&b);
            return ty__error(TY_ERR_UNSUPPORTED, "tokenizer.json: Split string containing \"\\E\" is not supported");
        }
        enum ty_status st = ty__tok_set_regex(t, b.data, b.len);
        ty__buf_free(&b);
        return st;
    }
    if (regex) return ty__tok_set_regex(t, regex, regex_len);
    return TY_OK;
}

static enum ty_status check_decoder_post(const json_t *root) {
    const json_t *d = json_object_get(root, "decoder");
    if (d && !json_is_null(d)) {
        const char *type = type_of(d);
        if (!type || strcmp(type, "ByteLevel"))
            return ty__error(TY_ERR_UNSUPPORTED, "tokenizer.json: decoder \"%s\" is not supported (only ByteLevel)",
                             type ? type : "(no type)");
    }
    const json_t *p = json_object_get(root, "post_processor");
    if (p && !json_is_null(p)) {
        const char *type = type_of(p);
        if (!type || strcmp(type, "ByteLevel"))
            return ty__error(TY_ERR_UNSUPPORTED,
                             "tokenizer.json: post_processor \"%s\" is not supported (Tongyun adds no BOS/EOS tokens; "
                             "only ByteLevel or none)",
                             type ? type : "(no type)");
    }
    return TY_OK;
}

static enum ty_status check_model_options(struct ty_tokenizer *t, const json_t *model, const json_t *vocab) {
    const char *s;
    size_t len;
    bool b;
    TY_TRY(get_bool(model, "byte_fallback", false, "tokenizer.json: model", &b));
    if (b) return ty__error(TY_ERR_UNSUPPORTED, "tokenizer.json: BPE byte_fallback is not supported");
    TY_TRY(get_str(model, "continuing_subword_prefix", "tokenizer.json: model", &s, &len));
    if (s && len) return ty__error(TY_ERR_UNSUPPORTED, "tokenizer.json: continuing_subword_prefix is not supported");
    TY_TRY(get_str(model, "end_of_word_suffix", "tokenizer.json: model", &s, &len));
    if (s && len) return ty__error(TY_ERR_UNSUPPORTED, "tokenizer.json: end_of_word_suffix is not supported");
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return ty__error(TY_ERR_UNSUPPORTED, "tokenizer.json: BPE dropout is not supported");
    TY_TRY(get_bool(model, "ignore_merges", false, "tokenizer.json: model", &t->ignore_merges));
    TY_TRY(get_str(model, "unk_token", "tokenizer.json: model", &s, &len));
    if (s) {
        const json_t *id = json_object_getn(vocab, s, len);
        if (!json_is_integer(id))
            return ty__error(TY_ERR_FORMAT, "tokenizer.json: unk_token \"%.*s\" is not in the vocabulary",
                             (int)(len > 64 ? 64 : len), s);
        t->unk_id = (int32_t)json_integer_value(id);
    }
    return TY_OK;
}

/* Splits one merges entry, "a b" or ["a", "b"]. */
static enum ty_status merge_parts(const json_t *m, size_t i, const char **a, size_t *na, const char **b, size_t *nb) {
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t len = json_string_length(m);
        const char *sp = memchr(s, ' ', len);
        if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp - s) - 1))
            return ty__error(TY_ERR_FORMAT, "tokenizer.json: merge %zu (\"%.*s\") is not two tokens split by one space",
                             i, (int)(len > 64 ? 64 : len), s);
        *a = s;
        *na = (size_t)(sp - s);
        *b = sp + 1;
        *nb = len - *na - 1;
        return TY_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *na = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *nb = json_string_length(json_array_get(m, 1));
        return TY_OK;
    }
    return ty__error(TY_ERR_FORMAT, "tokenizer.json: merge %zu should be \"a b\" or [\"a\", \"b\"], not %s", i,
                     ty__json_kind(m));
}

static enum ty_status merge_token(struct ty_tokenizer *t, struct hf_ctx *c, const char *s, size_t len, size_t i,
                                  int32_t *id) {
    size_t rl;
    enum ty_status st = decode_key(c, s, len, &rl);
    *id = st == TY_OK ? ty__tok_lookup(t, c->buf, rl) : -1;
    if (st == TY_ERR_NO_MEMORY) return st;
    if (*id < 0)
        return ty__error(TY_ERR_FORMAT,
                         "tokenizer.json: merge %zu names token \"%.*s\", which is not in the vocabulary", i,
                         (int)(len > 64 ? 64 : len), s);
    return TY_OK;
}

static enum ty_status load_added(struct ty_tokenizer *t, const json_t *added, const json_t *vocab) {
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        char where[64];
        snprintf(where, sizeof where, "tokenizer.json: added_tokens[%zu]", i);
        const json_t *jid = json_object_get(a, "id");
        const char *content;
        size_t len;
        TY_TRY(get_str(a, "content", where, &content, &len));
        if (!json_is_integer(jid) || !content)
            return ty__error(TY_ERR_FORMAT, "%s: needs an integer id and a content", where);
        int32_t id = (int32_t)json_integer_value(jid);
        bool special, lstrip, rstrip, single_word, normalized;
        TY_TRY(get_bool(a, "special", false, where, &special));
        TY_TRY(get_bool(a, "lstrip", false, where, &lstrip));
        TY_TRY(get_bool(a, "rstrip", false, where, &rstrip));
        TY_TRY(get_bool(a, "single_word", false, where, &single_word));
        TY_TRY(get_bool(a, "normalized", !special, where, &normalized));
        if (ty__utf8_check((const uint8_t *)content, len) != len)
            return ty__error(TY_ERR_FORMAT, "%s: content is not valid UTF-8", where);
        struct tok_entry *e = &t->tokens[id];
        /* An added token the model's vocabulary also has keeps the vocabulary's id, and BPE can still reach it. */
        const json_t *vid = json_object_getn(vocab, content, len);
        bool in_vocab = false;
        if (vid) {
            if (json_integer_value(vid) != id)
                return ty__error(TY_ERR_FORMAT, "%s: \"%.*s\" has id %d, but the vocabulary gives it id %lld", where,
                                 (int)(len > 64 ? 64 : len), content, id, (long long)json_integer_value(vid));
            in_vocab = e->len == len && !memcmp(t->pool + e->off, content, len);
        } else if (e->type != TOK_TYPE_UNDEFINED) {
            return ty__error(TY_ERR_FORMAT, "%s: id %d of \"%.*s\" is already taken by another token", where, id,
                             (int)(len > 64 ? 64 : len), content);
        }
        TY_TRY(ty__tok_set(t, id, content, len, special ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED));
        t->tokens[id].in_vocab = in_vocab;
        unsigned flags = (special ? TOK_ADDED_SPECIAL : 0) | (lstrip ? TOK_ADDED_LSTRIP : 0) |
                         (rstrip ? TOK_ADDED_RSTRIP : 0) | (single_word ? TOK_ADDED_SINGLE_WORD : 0) |
                         (normalized ? TOK_ADDED_NORMALIZED : 0);
        if (normalized && t->nfc && !ty__nfc_quick((const uint8_t *)content, len)) {
            /* matched against normalised text, so the pattern is the normalised content */
            uint8_t *norm;
            size_t nlen;
            TY_TRY(ty__nfc((const uint8_t *)content, len, &norm, &nlen));
            enum ty_status st = ty__tok_add_added(t, id, norm, nlen, flags);
            ty_free(norm);
            TY_TRY(st);
        } else {
            TY_TRY(ty__tok_add_added(t, id, NULL, 0, flags));
        }
    }
    return TY_OK;
}

/* Resolves a tokenizer_config.json entry such as "eos_token": "<|im_end|>" or {"content": ...} to an id, the way
 * llama.cpp's SpecialVocab does (by content among the added tokens). */
static int32_t config_token(const struct ty_tokenizer *t, const json_t *cfg, const char *key) {
    const json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return -1;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    for (int32_t k = 0; k < t->n_added; k++) {
        const struct tok_entry *e = &t->tokens[t->added[k].id];
        if (e->len == len && !memcmp(t->pool + e->off, s, len)) return t->added[k].id;
    }
    return -1;
}

static enum ty_status load_config(struct ty_tokenizer *t, const char *config, size_t len) {
    json_error_t jerr;
    json_t *cfg = json_loadb(config, len, 0, &jerr);
    if (!cfg)
        return ty__error(TY_ERR_FORMAT, "tokenizer_config.json: line %d column %d: %s", jerr.line, jerr.column,
                         jerr.text);
    enum ty_status st = TY_OK;
    if (!json_is_object(cfg)) {
        st = ty__error(TY_ERR_FORMAT, "tokenizer_config.json: should be a JSON object");
        goto done;
    }
    t->bos_id = config_token(t, cfg, "bos_token");
    t->eos_id = config_token(t, cfg, "eos_token");
    t->pad_id = config_token(t, cfg, "pad_token");
    st = get_bool(cfg, "add_bos_token", false, "tokenizer_config.json", &t->add_bos);
    if (st != TY_OK) goto done;
    const json_t *add_eos = json_object_get(cfg, "add_eos_token");
    if (json_is_boolean(add_eos)) {
        t->has_add_eos = true;
        t->add_eos = json_is_true(add_eos);
    }
    const json_t *tpl = json_object_get(cfg, "chat_template");
    const char *tpl_s = NULL;
    size_t tpl_len = 0;
    if (json_is_string(tpl)) {
        tpl_s = json_string_value(tpl);
        tpl_len = json_string_length(tpl);
    } else if (json_is_array(tpl)) {
        /* [{"name": "default", "template": ...}, ...]: the default one, as llama.cpp's converter picks */
        for (size_t i = 0; i < json_array_size(tpl); i++) {
            const json_t *e = json_array_get(tpl, i), *name = json_object_get(e, "name"),
                         *body = json_object_get(e, "template");
            if (json_is_string(name) && !strcmp(json_string_value(name), "default") && json_is_string(body)) {
                tpl_s = json_string_value(body);
                tpl_len = json_string_length(body);
            }
        }
    }
    if (tpl_s) {
        t->chat_template = ty__strndup(tpl_s, tpl_len);
        if (!t->chat_template) st = ty__error(TY_ERR_NO_MEMORY, "out of memory");
    }
done:
    json_decref(cfg);
    return st;
}

/* config.json's bos/eos/pad_token_id fill what tokenizer_config.json left unset (llama.cpp's SpecialVocab order). */
static enum ty_status load_config_ids(struct ty_tokenizer *t, const char *config, size_t len) {
    json_error_t jerr;
    json_t *cfg = json_loadb(config, len, 0, &jerr);
    if (!cfg) return ty__error(TY_ERR_FORMAT, "config.json: line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    static const char *keys[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    int32_t *ids[] = {&t->bos_id, &t->eos_id, &t->pad_id};
    for (int k = 0; k < 3 && json_is_object(cfg); k++) {
        const json_t *v = json_object_get(cfg, keys[k]);
        if (!json_is_integer(v) || *ids[k] >= 0) continue;
        json_int_t id = json_integer_value(v);
        if (id < 0 || id >= t->n_vocab) {
            /* config.json describes the model, not the tokenizer: a stray id there is skipped, as llama.cpp does */
            TY_LOG_W("config.json: %s %lld is outside the tokenizer's %d tokens; ignored", keys[k], (long long)id,
                     t->n_vocab);
            continue;
        }
        *ids[k] = (int32_t)id;
    }
    json_decref(cfg);
    return TY_OK;
}

static enum ty_status build_hf(const json_t *root, struct hf_ctx *c, struct ty_tokenizer **out) {
    if (!json_is_object(root)) return ty__error(TY_ERR_FORMAT, "tokenizer.json: should be a JSON object");
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return ty__error(TY_ERR_FORMAT, "tokenizer.json: no \"model\" object");
    const char *mtype = type_of(model);
    if (mtype && strcmp(mtype, "BPE"))
        return ty__error(TY_ERR_UNSUPPORTED, "tokenizer.json: model type \"%s\" is not supported (only BPE)", mtype);
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab)) return ty__error(TY_ERR_FORMAT, "tokenizer.json: model.vocab should be an object");
    if (!json_is_array(merges)) return ty__error(TY_ERR_FORMAT, "tokenizer.json: model.merges should be an array");
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        return ty__error(TY_ERR_FORMAT, "tokenizer.json: added_tokens should be an array");

    /* Sizes first: the vocabulary spans every id the file uses. */
    int64_t max_id = -1;
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= TOK_MAX_VOCAB)
            return ty__error(TY_ERR_FORMAT,
                             "tokenizer.json: vocab entry \"%.64s\" has an id that is not an integer in 0 .. %d", key,
                             TOK_MAX_VOCAB - 1);
        if (id > max_id) max_id = id;
    }
    for (size_t i = 0; added && i < json_array_size(added); i++) {
        const json_t *id = json_object_get(json_array_get(added, i), "id");
        json_int_t v = json_is_integer(id) ? json_integer_value(id) : -1;
        if (v < 0 || v >= TOK_MAX_VOCAB)
            return ty__error(TY_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] has no integer id in 0 .. %d", i,
                             TOK_MAX_VOCAB - 1);
        if (v > max_id) max_id = v;
    }
    if (max_id < 0) return ty__error(TY_ERR_FORMAT, "tokenizer.json: the vocabulary is empty");
    /* Ids are dense in real files; bounding the span by the entries present keeps a tiny file from claiming a huge
     * vocabulary (every id costs memory). */
    size_t n_entries = json_object_size(vocab) + (added ? json_array_size(added) : 0);
    if ((size_t)max_id >= 2 * n_entries + 1024)
        return ty__error(TY_ERR_FORMAT,
                         "tokenizer.json: token ids go up to %lld but there are only %zu tokens; the ids are too "
                         "sparse to be a real vocabulary",
                         (long long)max_id, n_entries);

    struct ty_tokenizer *t;
    TY_TRY(ty__tok_create((int32_t)max_id + 1, &t));
    enum ty_status st = TY_OK;
#define CHECK_ST(expr)                                                                                                 \
    do {                                                                                                               \
        if ((st = (expr)) != TY_OK) goto fail;                                                                         \
    } while (0)
    CHECK_ST(check_normalizer(t, json_object_get(root, "normalizer")));
    size_t klen;
    json_object_keylen_foreach((json_t *)vocab, key, klen, val) {
        int32_t id = (int32_t)json_integer_value(val);
        size_t rl;
        if (t->tokens[id].type != TOK_TYPE_UNDEFINED) {
            st = ty__error(TY_ERR_FORMAT, "tokenizer.json: vocab id %d is given to two tokens (one is \"%.64s\")", id,
                           key);
            goto fail;
        }
        st = decode_key(c, key, klen, &rl);
        if (st == TY_ERR_FORMAT)
            st = ty__error(TY_ERR_FORMAT,
                           "tokenizer.json: vocab token \"%.64s\" (id %d) is not in the byte-level alphabet; only "
                           "byte-level BPE is supported",
                           key, id);
        if (st != TY_OK) goto fail;
        CHECK_ST(ty__tok_set(t, id, c->buf, rl, TOK_TYPE_NORMAL));
    }
    if (added) CHECK_ST(load_added(t, added, vocab));
    CHECK_ST(ty__tok_index_vocab(t, true));
    CHECK_ST(ty__tok_index_added(t));
    CHECK_ST(check_model_options(t, model, vocab));
    CHECK_ST(check_pre_tokenizer(t, json_object_get(root, "pre_tokenizer")));
    CHECK_ST(check_decoder_post(root));

    size_t n_merges = json_array_size(merges);
    CHECK_ST(ty__tok_merges_begin(t, n_merges));
    for (size_t i = 0; i < n_merges; i++) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        int32_t ia, ib;
        CHECK_ST(merge_parts(json_array_get(merges, i), i, &a, &na, &b, &nb));
        CHECK_ST(merge_token(t, c, a, na, i, &ia));
        CHECK_ST(merge_token(t, c, b, nb, i, &ib));
        CHECK_ST(ty__tok_merge_add(t, ia, ib, "tokenizer.json: model.merges", i));
    }
    CHECK_ST(ty__tok_prepare(t));
    t->pre_name = NULL;
    if (t->regex) {
        const struct tok_pre_def *d = ty__tok_pre_by_regex(t->regex);
        if (d && d->nfc == t->nfc) t->pre_name = d->name;
    }
#undef CHECK_ST
    *out = t;
    return TY_OK;
fail:
    ty_tokenizer_free(t);
    return st;
}

enum ty_status ty__tokenizer_load_hf_mem(const char *json, size_t len, const char *config, size_t config_len,
                                         const char *config_json_ids, size_t ids_len, struct ty_tokenizer **out) {
    *out = NULL;
    if (len > TOK_MAX_JSON_BYTES)
        return ty__error(TY_ERR_FORMAT, "tokenizer.json of %zu bytes is larger than the %zu-byte limit", len,
                         TOK_MAX_JSON_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return ty__error(TY_ERR_FORMAT, "tokenizer.json: line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    struct hf_ctx c = {0};
    struct ty_tokenizer *t = NULL;
    enum ty_status st = build_hf(root, &c, &t);
    json_decref(root);
    ty_free(c.buf);
    if (st != TY_OK) return st;
    if (config) st = load_config(t, config, config_len);
    if (st == TY_OK && config_json_ids) st = load_config_ids(t, config_json_ids, ids_len);
    if (st != TY_OK) {
        ty_tokenizer_free(t);
        return st;
    }
    /* Qwen's config.json names <|endoftext|> as bos (add_bos_token is false, so it is never added); without a
     * config.json the same token is used, so a GGUF written here carries the bos llama.cpp's conversions carry. */
    if (t->bos_id < 0) t->bos_id = ty_tokenizer_find(t, "<|endoftext|>");
    ty__tok_finish_specials(t);
    *out = t;
    return TY_OK;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* `dir of path` + name, or NULL when it does not fit. */
static bool sibling(const char *path, const char *name, char *out, size_t cap) {
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path + 1) : 0;
    int n = snprintf(out, cap, "%.*s%s", (int)dir, path, name);
    return n > 0 && (size_t)n < cap;
}

enum ty_status ty__tokenizer_load_hf(const char *json_path, const char *config_path, struct ty_tokenizer **out) {
    *out = NULL;
    char *json = NULL, *config = NULL, *ids = NULL;
    size_t len = 0, config_len = 0, ids_len = 0;
    enum ty_status st = ty__file_read(json_path, TOK_MAX_JSON_BYTES, &json, &len);
    if (st == TY_OK && config_path) st = ty__file_read(config_path, (size_t)16 << 20, &config, &config_len);
    char cj[4096];
    if (st == TY_OK && sibling(json_path, "config.json", cj, sizeof cj) && file_exists(cj))
        st = ty__file_read(cj, (size_t)16 << 20, &ids, &ids_len);
    if (st == TY_OK) st = ty__tokenizer_load_hf_mem(json, len, config, config_len, ids, ids_len, out);
    if (st != TY_OK && st != TY_ERR_IO) ty__error_prefix(st, "%s", json_path);
    ty_free(json);
    ty_free(config);
    ty_free(ids);
    return st;
}

enum ty_status ty_tokenizer_load_json(const char *path, struct ty_tokenizer **out) {
    if (!out) return ty__error(TY_ERR_INVALID_ARG, "ty_tokenizer_load_json: out must not be NULL");
    *out = NULL;
    if (!path) return ty__error(TY_ERR_INVALID_ARG, "ty_tokenizer_load_json: path must not be NULL");
    char cfg[4096];
    bool has_cfg = sibling(path, "tokenizer_config.json", cfg, sizeof cfg) && file_exists(cfg);
    return ty__tokenizer_load_hf(path, has_cfg ? cfg : NULL, out);
}

/* ==== GGUF ==== */

#define KEY_MODEL  "tokenizer.ggml.model"
#define KEY_PRE    "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_TYPES  "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"
/* Tongyun's own key (llama.cpp has none; it ignores unknown keys): tokenizer.json's model.ignore_merges, a piece that
 * is itself a token maps to it before any merge. The Qwen3.5 tokenizer needs it for the 201 tokens its BPE never
 * reaches (data/tokenizers/qwen3.5/README.md); llama.cpp tokenizes such a piece by its merges. */
#define KEY_IGNORE_MERGES "tokenizer.ggml.ignore_merges"

static enum ty_status gguf_special(const struct ty_gguf *g, const char *key, int32_t n_vocab, int32_t *out) {
    int64_t v;
    enum ty_status st = ty__gguf_get_int(g, key, &v);
    if (st == TY_ERR_NOT_FOUND) return TY_OK;
    TY_TRY(st);
    if (v < 0 || v >= n_vocab)
        return ty__error(TY_ERR_FORMAT, "%s = %lld is out of range (vocabulary of %d tokens)", key, (long long)v,
                         n_vocab);
    *out = (int32_t)v;
    return TY_OK;
}

static enum ty_status gguf_str_eq(const struct ty_gguf *g, const char *key, char *buf, size_t cap) {
    struct ty_gguf_str s;
    enum ty_status st = ty__gguf_get_str(g, key, &s);
    if (st == TY_ERR_NOT_FOUND) return ty__error(TY_ERR_FORMAT, "GGUF has no %s; it carries no tokenizer", key);
    TY_TRY(st);
    if (s.len >= cap || memchr(s.data, 0, s.len))
        return ty__error(TY_ERR_FORMAT, "%s: value of %llu bytes is not a valid name", key, (unsigned long long)s.len);
    memcpy(buf, s.data, s.len);
    buf[s.len] = 0;
    return TY_OK;
}

static enum ty_status build_gguf(const struct ty_gguf *g, struct ty_tokenizer *t, uint64_t n, bool has_types,
                                 const struct tok_pre_def *pre) {
    char *buf = NULL;
    size_t cap = 0;
    enum ty_status st = TY_OK;
    for (uint64_t i = 0; i < n && st == TY_OK; i++) {
        struct ty_gguf_str s;
        if ((st = ty__gguf_arr_str(g, KEY_TOKENS, i, &s)) != TY_OK) break;
        int64_t type = TOK_TYPE_NORMAL;
        if (has_types && (st = ty__gguf_arr_int(g, KEY_TYPES, i, &type)) != TY_OK) break;
        if (type < TOK_TYPE_NORMAL || type > TOK_TYPE_BYTE) {
            st = ty__error(TY_ERR_FORMAT, "%s[%llu] = %lld is not a token type (1 .. 6)", KEY_TYPES,
                           (unsigned long long)i, (long long)type);
            break;
        }
        if (s.len > TOK_MAX_TOKEN_BYTES || ty__utf8_check((const uint8_t *)s.data, s.len) != s.len) {
            st = ty__error(TY_ERR_FORMAT, "%s[%llu] is not valid UTF-8 text of at most %d bytes", KEY_TOKENS,
                           (unsigned long long)i, TOK_MAX_TOKEN_BYTES);
            break;
        }
        if (type == TOK_TYPE_NORMAL || type == TOK_TYPE_BYTE) {
            if (s.len > cap) {
                size_t nc = s.len < 256 ? 256 : s.len;
                char *p = ty__realloc(buf, nc);
                if (!p) {
                    st = ty__error(TY_ERR_NO_MEMORY, "out of memory");
                    break;
                }
                buf = p;
                cap = nc;
            }
            size_t rl;
            if (!ty__bytelevel_decode(s.data, s.len, buf, &rl)) {
                st = ty__error(TY_ERR_FORMAT,
                               "%s[%llu] (\"%.*s\") is not in the byte-level alphabet of a gpt2 vocabulary", KEY_TOKENS,
                               (unsigned long long)i, (int)(s.len > 64 ? 64 : s.len), s.data);
                break;
            }
            st = ty__tok_set(t, (int32_t)i, buf, rl, (enum tok_type)type);
        } else {
            st = ty__tok_set(t, (int32_t)i, s.data, s.len, (enum tok_type)type);
            if (st == TY_OK && type != TOK_TYPE_UNUSED)
                st = ty__tok_add_added(t, (int32_t)i, NULL, 0, type == TOK_TYPE_USER_DEFINED ? 0 : TOK_ADDED_SPECIAL);
        }
    }
    if (st == TY_OK) st = ty__tok_index_vocab(t, false);
    if (st == TY_OK) st = ty__tok_index_added(t);
    if (st == TY_OK) st = ty__tok_set_regex(t, pre->regex, strlen(pre->regex));
    t->nfc = pre->nfc;
    t->pre_name = pre->name;

    enum ty_gguf_type et;
    uint64_t n_merges = 0;
    if (st == TY_OK) {
        st = ty__gguf_get_arr(g, KEY_MERGES, &et, &n_merges);
        if (st == TY_ERR_NOT_FOUND)
            st = ty__error(TY_ERR_FORMAT, "GGUF has no %s; a gpt2 (BPE) vocabulary needs its merges", KEY_MERGES);
        else if (st == TY_OK && et != TY_GGUF_TYPE_STRING)
            st = ty__error(TY_ERR_FORMAT, "%s should be an array of strings, not of %s", KEY_MERGES,
                           ty__gguf_type_name(et));
    }
    if (st == TY_OK) st = ty__tok_merges_begin(t, n_merges);
    for (uint64_t i = 0; i < n_merges && st == TY_OK; i++) {
        struct ty_gguf_str s;
        if ((st = ty__gguf_arr_str(g, KEY_MERGES, i, &s)) != TY_OK) break;
        /* "a b", split at the first space after the first byte, as llama.cpp does */
        const char *sp = s.len > 1 ? memchr(s.data + 1, ' ', s.len - 1) : NULL;
        if (!sp || s.len > 2 * (size_t)TOK_MAX_TOKEN_BYTES) {
            st = ty__error(TY_ERR_FORMAT, "%s[%llu] (\"%.*s\") is not two tokens separated by a space", KEY_MERGES,
                           (unsigned long long)i, (int)(s.len > 64 ? 64 : s.len), s.data);
            break;
        }
        const char *parts[2] = {s.data, sp + 1};
        size_t lens[2] = {(size_t)(sp - s.data), s.len - (size_t)(sp - s.data) - 1};
        int32_t ids[2];
        for (int k = 0; k < 2 && st == TY_OK; k++) {
            size_t rl;
            if (lens[k] > cap) {
                char *p = ty__realloc(buf, lens[k]);
                if (!p) {
                    st = ty__error(TY_ERR_NO_MEMORY, "out of memory");
                    break;
                }
                buf = p;
                cap = lens[k];
            }
            ids[k] = ty__bytelevel_decode(parts[k], lens[k], buf, &rl) ? ty__tok_lookup(t, buf, rl) : -1;
            if (ids[k] < 0)
                st = ty__error(TY_ERR_FORMAT, "%s[%llu] names token \"%.*s\", which is not in %s", KEY_MERGES,
                               (unsigned long long)i, (int)(lens[k] > 64 ? 64 : lens[k]), parts[k], KEY_TOKENS);
        }
        if (st != TY_OK) break;
        st = ty__tok_merge_add(t, ids[0], ids[1], KEY_MERGES, i);
    }
    ty_free(buf);
    if (st == TY_OK) st = ty__tok_prepare(t);
    return st;
}

enum ty_status ty__tokenizer_from_gguf(const struct ty_gguf *g, struct ty_tokenizer **out) {
    if (!out) return ty__error(TY_ERR_INVALID_ARG, "ty__tokenizer_from_gguf: out must not be NULL");
    *out = NULL;
    char model[64], pre_name[128];
    TY_TRY(gguf_str_eq(g, KEY_MODEL, model, sizeof model));
    if (strcmp(model, "gpt2"))
        return ty__error(TY_ERR_UNSUPPORTED, "%s is \"%s\"; only byte-level BPE (\"gpt2\") is supported", KEY_MODEL,
                         model);
    enum ty_status st = gguf_str_eq(g, KEY_PRE, pre_name, sizeof pre_name);
    if (st != TY_OK) return ty__error(st, "%s; supported pre-tokenizers: %s", ty_last_error(), ty__tok_pre_names());
    const struct tok_pre_def *pre = ty__tok_pre_by_name(pre_name);
    if (!pre)
        return ty__error(TY_ERR_UNSUPPORTED, "%s \"%s\" is not supported; supported: %s", KEY_PRE, pre_name,
                         ty__tok_pre_names());

    enum ty_gguf_type et;
    uint64_t n;
    st = ty__gguf_get_arr(g, KEY_TOKENS, &et, &n);
    if (st == TY_ERR_NOT_FOUND) return ty__error(TY_ERR_FORMAT, "GGUF has no %s", KEY_TOKENS);
    TY_TRY(st);
    if (et != TY_GGUF_TYPE_STRING)
        return ty__error(TY_ERR_FORMAT, "%s should be an array of strings, not of %s", KEY_TOKENS,
                         ty__gguf_type_name(et));
    if (n == 0 || n > TOK_MAX_VOCAB)
        return ty__error(TY_ERR_FORMAT, "%s has %llu tokens (expected 1 .. %d)", KEY_TOKENS, (unsigned long long)n,
                         TOK_MAX_VOCAB);
    uint64_t n_types = 0;
    st = ty__gguf_get_arr(g, KEY_TYPES, &et, &n_types);
    bool has_types = st == TY_OK;
    if (st != TY_OK && st != TY_ERR_NOT_FOUND) return st;
    if (has_types && n_types != n)
        return ty__error(TY_ERR_FORMAT, "%s has %llu entries but %s has %llu", KEY_TYPES, (unsigned long long)n_types,
                         KEY_TOKENS, (unsigned long long)n);

    struct ty_tokenizer *t;
    TY_TRY(ty__tok_create((int32_t)n, &t));
    st = build_gguf(g, t, n, has_types, pre);
    if (st == TY_OK) st = gguf_special(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos_id);
    if (st == TY_OK) st = gguf_special(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos_id);
    if (st == TY_OK) st = gguf_special(g, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad_id);
    if (st == TY_OK) st = gguf_special(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot_id);
    if (st == TY_OK) {
        st = ty__gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
        if (st == TY_ERR_NOT_FOUND) st = TY_OK;
    }
    if (st == TY_OK) {
        st = ty__gguf_get_bool(g, KEY_IGNORE_MERGES, &t->ignore_merges);
        if (st == TY_ERR_NOT_FOUND) st = TY_OK;
    }
    if (st == TY_OK) {
        st = ty__gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos);
        t->has_add_eos = st == TY_OK;
        if (st == TY_ERR_NOT_FOUND) st = TY_OK;
    }
    if (st == TY_OK) {
        st = ty__gguf_get_strdup(g, "tokenizer.chat_template", &t->chat_template);
        if (st == TY_ERR_NOT_FOUND) st = TY_OK;
    }
    if (st != TY_OK) {
        ty_tokenizer_free(t);
        return st;
    }
    ty__tok_finish_specials(t);
    *out = t;
    return TY_OK;
}

enum ty_status ty__tokenizer_load_gguf_file(const char *path, struct ty_tokenizer **out) {
    if (!out) return ty__error(TY_ERR_INVALID_ARG, "ty__tokenizer_load_gguf_file: out must not be NULL");
    *out = NULL;
    struct ty_gguf *g;
    TY_TRY(ty__gguf_open(path, &g));
    enum ty_status st = ty__tokenizer_from_gguf(g, out);
    ty__gguf_close(g);
    if (st != TY_OK) ty__error_prefix(st, "%s", path);
    return st;
}

/* llama.cpp's converter makes an added token a control token when it is special or merely looks like one. */
static bool looks_special(const char *s, size_t n) {
    static const char *names[] = {"<pad>", "<mask>", "<2mass>", "[@BOS@]"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (n == strlen(names[i]) && !memcmp(s, names[i], n)) return true;
#define ENDS(pre, suf)                                                                                                 \
    (n >= strlen(pre) + strlen(suf) && !memcmp(s, pre, strlen(pre)) && !memcmp(s + n - strlen(suf), suf, strlen(suf)))
    return ENDS("<|", "|>") || ENDS("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || ENDS("<unused", ">");
#undef ENDS
}

enum ty_status ty__tokenizer_to_gguf(const struct ty_tokenizer *t, struct ty_gguf_writer *w) {
    if (!t || !w) return ty__error(TY_ERR_INVALID_ARG, "ty__tokenizer_to_gguf: tokenizer and writer must not be NULL");
    if (!t->pre_name)
        return ty__error(TY_ERR_UNSUPPORTED,
                         "this tokenizer's pre-tokenizer (regex %.80s%s, %s) has no llama.cpp tokenizer.ggml.pre name; "
                         "known: %s",
                         t->regex ? t->regex : "(none)", t->regex && strlen(t->regex) > 80 ? "..." : "",
                         t->nfc ? "NFC" : "no normaliser", ty__tok_pre_names());
    size_t n = (size_t)t->n_vocab;
    /* All strings go into one buffer; offsets first, since the buffer moves as it grows. */
    struct ty_buf b = {0};
    size_t *offs = ty__malloc((n + (size_t)t->n_merges) * sizeof *offs);
    size_t *lens = ty__malloc((n + (size_t)t->n_merges) * sizeof *lens);
    const char **ptrs = ty__malloc((n + (size_t)t->n_merges) * sizeof *ptrs);
    int32_t *types = ty__malloc(n * sizeof *types);
    char *tmp = ty__malloc(2 * (size_t)TOK_MAX_TOKEN_BYTES * 2 + 16);
    enum ty_status st = TY_OK;
    if (!offs || !lens || !ptrs || !types || !tmp) {
        st = ty__error(TY_ERR_NO_MEMORY, "out of memory writing the tokenizer");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const struct tok_entry *e = &t->tokens[i];
        const char *raw = t->pool + e->off;
        offs[i] = b.len;
        switch (e->type) {
        case TOK_TYPE_NORMAL:
        case TOK_TYPE_BYTE:
            ty__buf_append(&b, tmp, ty__bytelevel_encode((const uint8_t *)raw, e->len, tmp));
            types[i] = e->type;
            break;
        case TOK_TYPE_UNDEFINED:
            ty__buf_printf(&b, "[PAD%zu]", i);
            types[i] = TOK_TYPE_UNUSED;
            break;
        case TOK_TYPE_USER_DEFINED:
            ty__buf_append(&b, raw, e->len);
            types[i] = looks_special(raw, e->len) ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
            break;
        default:
            ty__buf_append(&b, raw, e->len);
            types[i] = e->type;
            break;
        }
        lens[i] = b.len - offs[i];
    }
    for (int32_t m = 0; m < t->n_merges; m++) {
        size_t k = n + (size_t)m;
        offs[k] = b.len;
        for (int side = 0; side < 2; side++) {
            const struct tok_entry *e = &t->tokens[t->merges[m][side]];
            if (side) ty__buf_append(&b, " ", 1);
            ty__buf_append(&b, tmp, ty__bytelevel_encode((const uint8_t *)t->pool + e->off, e->len, tmp));
        }
        lens[k] = b.len - offs[k];
    }
    if (b.oom) {
        st = ty__error(TY_ERR_NO_MEMORY, "out of memory writing the tokenizer");
        goto done;
    }
    for (size_t k = 0; k < n + (size_t)t->n_merges; k++) ptrs[k] = b.data ? b.data + offs[k] : "";

#define W(expr)                                                                                                        \
    do {                                                                                                               \
        if ((st = (expr)) != TY_OK) goto done;                                                                         \
    } while (0)
    W(ty__gguf_writer_set_str(w, KEY_MODEL, "gpt2"));
    W(ty__gguf_writer_set_str(w, KEY_PRE, t->pre_name));
    W(ty__gguf_writer_set_arr_str(w, KEY_TOKENS, ptrs, lens, n));
    W(ty__gguf_writer_set_arr(w, KEY_TYPES, TY_GGUF_TYPE_INT32, types, n));
    W(ty__gguf_writer_set_arr_str(w, KEY_MERGES, ptrs + n, lens + n, (uint64_t)t->n_merges));
    if (t->bos_id >= 0) W(ty__gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos_id));
    if (t->eos_id >= 0) W(ty__gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos_id));
    if (t->eot_id >= 0) W(ty__gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)t->eot_id));
    if (t->pad_id >= 0) W(ty__gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)t->pad_id));
    W(ty__gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos));
    if (t->ignore_merges) W(ty__gguf_writer_set_bool(w, KEY_IGNORE_MERGES, true));
    if (t->has_add_eos) W(ty__gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos));
    if (t->chat_template) W(ty__gguf_writer_set_str(w, "tokenizer.chat_template", t->chat_template));
#undef W
done:
    ty__buf_free(&b);
    ty_free(offs);
    ty_free(lens);
    ty_free(ptrs);
    ty_free(types);
    ty_free(tmp);
    return st;
}
