/*
 * tokenizer-text.c - the text side of the tokenizer: UTF-8 checks, NFC normalisation (utf8proc, skipped when a quick
 * check proves the text stable), the GPT-2 byte-to-unicode alphabet, and the pre-tokenizer that cuts text into the
 * pieces BPE runs on.
 *
 * The pre-tokenizer regex comes from tokenizer.json, where Hugging Face runs it with Oniguruma. PCRE2 runs it here,
 * after translating the escapes whose meaning differs between the two (PCRE2's UCP `\s` also matches U+180E, which
 * Oniguruma's, being Unicode White_Space, does not; Oniguruma's `\h` is a hex digit). For Qwen2's and Qwen3.5's
 * regexes a hand-written matcher does the same job several times faster; the PCRE2 path stays as its reference and
 * the tests compare the two on random text.
 *
 * Which Unicode: the reference's regex engine knows Unicode 14.0 and its NFC tables Unicode 9.0, so the matcher's
 * letter/number/mark classes and the NFC quick check read tables generated from those versions
 * (tokenizer-unicode.c) rather than utf8proc's newer data, and code points the reference's NFC does not know never
 * reach utf8proc.
 */
#include "tokenizer-impl.h"

#include <stdlib.h>
#include <utf8proc.h>

/* ==== UTF-8 ==== */

size_t ty__utf8_seq(const uint8_t *s, size_t n, bool *incomplete) {
    *incomplete = false;
    if (n == 0) return 0;
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte (Unicode Table 3-7) */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if (i >= n) {
            *incomplete = true;
            return 0;
        }
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
    }
    return len;
}

size_t ty__utf8_check(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* eight ASCII bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        bool inc;
        size_t l = ty__utf8_seq(s + i, n - i, &inc);
        if (!l) return i;
        i += l;
    }
    return n;
}

/* Decodes the well-formed sequence at s (already validated). */
static inline uint32_t utf8_decode(const uint8_t *s, size_t *len) {
    uint8_t c = s[0];
    if (c < 0x80) {
        *len = 1;
        return c;
    }
    if (c < 0xE0) {
        *len = 2;
        return ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (c < 0xF0) {
        *len = 3;
        return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *len = 4;
    return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
           (s[3] & 0x3F);
}

uint32_t ty__utf8_decode(const uint8_t *s, size_t *len) {
    return utf8_decode(s, len);
}

static size_t utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ==== NFC ==== */

/* Whether NFC can change a string at this code point, as the reference's Unicode 9.0 tables see it (see
 * tokenizer-unicode.c). Everything below U+0300 is inert, which settles nearly all text without a search. */
static bool nfc_stable_cp(uint32_t cp) {
    if (cp < 0x300) return true;
    size_t lo = 0, hi = ty__uni_nfc_unstable_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < ty__uni_nfc_unstable[mid][0])
            hi = mid;
        else if (cp > ty__uni_nfc_unstable[mid][1])
            lo = mid + 1;
        else
            return false;
    }
    return true;
}

bool ty__nfc_quick(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t l;
        uint32_t cp = utf8_decode(s + i, &l);
        if (!nfc_stable_cp(cp)) return false;
        i += l;
    }
    return true;
}

/* NFC of one region with utf8proc (which allocates with malloc), appended to b. */
static enum ty_status nfc_region(const uint8_t *s, size_t n, struct ty_buf *b) {
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map(s, (utf8proc_ssize_t)n, &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) {
        if (r == UTF8PROC_ERROR_NOMEM) return ty__error(TY_ERR_NO_MEMORY, "out of memory normalising text to NFC");
        return ty__error(TY_ERR_INTERNAL, "NFC normalisation failed: %s", utf8proc_errmsg(r));
    }
    ty__buf_append(b, dst, (size_t)r);
    free(dst);
    return TY_OK;
}

/* Normalisation is local: nothing composes or reorders across a stable code point (it is a starter that is never the
 * second of a composition), so only the stretches around unstable ones go through utf8proc: from the stable code
 * point before an unstable one (it may be the base a mark composes with) to the next stable one. Long texts with a
 * few decomposed accents then cost little more than a copy. It also keeps utf8proc's newer Unicode data away from
 * code points the reference's Unicode 9.0 tables do not know: those count as stable, so they are never handed to
 * utf8proc, and a stretch never starts at one (to the reference nothing composes with them). */
enum ty_status ty__nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (n > (size_t)PTRDIFF_MAX / 8) return ty__error(TY_ERR_INVALID_ARG, "text of %zu bytes is too long", n);
    struct ty_buf b = {0};
    size_t i = 0, copied = 0, last_stable = 0;
    while (i < n) {
        size_t l = 1;
        uint32_t cp = s[i] < 0x80 ? s[i] : utf8_decode(s + i, &l);
        if (nfc_stable_cp(cp)) {
            last_stable = i;
            i += l;
            continue;
        }
        size_t start = last_stable > copied ? last_stable : copied, j = i + l;
        if (start < i) {
            /* The stable code point before is the base the marks may compose with, unless it is a mark added since
             * Unicode 9.0 (stable in the table, yet with a combining class in utf8proc's newer data): utf8proc would
             * reorder it, the reference would not, so the stretch starts after it. (The one character with a
             * canonical decomposition added since, U+11938, composes from a U+11930 the table keeps out of every
             * stretch.) */
            size_t bl = 1;
            uint32_t base = s[start] < 0x80 ? s[start] : utf8_decode(s + start, &bl);
            if (utf8proc_get_property((utf8proc_int32_t)base)->combining_class) start += bl;
        }
        while (j < n) {
            size_t l2 = 1;
            uint32_t cp2 = s[j] < 0x80 ? s[j] : utf8_decode(s + j, &l2);
            if (nfc_stable_cp(cp2)) break;
            j += l2;
        }
        ty__buf_append(&b, s + copied, start - copied);
        enum ty_status st = nfc_region(s + start, j - start, &b);
        if (st != TY_OK) {
            ty__buf_free(&b);
            return st;
        }
        copied = i = j;
    }
    ty__buf_append(&b, s + copied, n - copied);
    size_t len = b.len;
    if (b.oom) {
        ty__buf_free(&b);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory normalising text to NFC");
    }
    TY_TRY(ty__buf_finish(&b, (char **)out));
    *out_len = len;
    return TY_OK;
}

/* ==== The GPT-2 byte alphabet ==== */

/* Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, DEL, NBSP, soft hyphen) are moved, in
 * byte order, to U+0100.. so that every byte has a visible character (GPT-2's bytes_to_unicode). */
static bool byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

uint32_t ty__byte_to_cp(uint8_t b) {
    if (byte_is_printable(b)) return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++) k += !byte_is_printable(x);
    return 256 + k;
}

int ty__cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    unsigned k = cp - 256;
    for (unsigned b = 0; b < 256; b++) {
        if (!byte_is_printable(b) && k-- == 0) return (int)b;
    }
    return -1;
}

/* Tables built once; the functions above define them. */
static uint32_t byte_cp_tab[256];
static int16_t cp_byte_tab[256 + 68];
static pthread_once_t alphabet_once = PTHREAD_ONCE_INIT;

static void alphabet_init(void) {
    for (unsigned b = 0; b < 256; b++) byte_cp_tab[b] = ty__byte_to_cp((uint8_t)b);
    for (unsigned cp = 0; cp < 256 + 68; cp++) cp_byte_tab[cp] = (int16_t)ty__cp_to_byte(cp);
}

bool ty__bytelevel_decode(const char *s, size_t len, char *out, size_t *out_len) {
    pthread_once(&alphabet_once, alphabet_init);
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        bool inc;
        size_t l = ty__utf8_seq(u + i, len - i, &inc);
        if (!l) return false;
        size_t l2;
        uint32_t cp = utf8_decode(u + i, &l2);
        if (cp >= 256 + 68 || cp_byte_tab[cp] < 0) return false;
        out[o++] = (char)cp_byte_tab[cp];
        i += l;
    }
    *out_len = o;
    return true;
}

size_t ty__bytelevel_encode(const uint8_t *s, size_t len, char *out) {
    pthread_once(&alphabet_once, alphabet_init);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) o += utf8_encode(byte_cp_tab[s[i]], out + o);
    return o;
}

/* ==== Known pre-tokenizers ==== */

const char ty__tok_regex_qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                   "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char regex_qwen35[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| "
                                   "?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* GPT-2's, which Hugging Face's ByteLevel pre-tokenizer applies when use_regex is true. */
static const char regex_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* llama.cpp's tokenizer.ggml.pre names (llama-vocab.cpp), first name per regex is the one written. */
static const struct tok_pre_def pre_defs[] = {
    {"qwen2", ty__tok_regex_qwen2, true},
    {"deepseek-r1-qwen", ty__tok_regex_qwen2, true},
    {"qwen35", regex_qwen35, true},
    {"gpt-2", regex_gpt2, false},
};

const struct tok_pre_def *ty__tok_pre_by_name(const char *name) {
    for (size_t i = 0; i < sizeof pre_defs / sizeof pre_defs[0]; i++)
        if (!strcmp(pre_defs[i].name, name)) return &pre_defs[i];
    return NULL;
}

const struct tok_pre_def *ty__tok_pre_by_regex(const char *regex) {
    for (size_t i = 0; i < sizeof pre_defs / sizeof pre_defs[0]; i++)
        if (!strcmp(pre_defs[i].regex, regex)) return &pre_defs[i];
    return NULL;
}

const char *ty__tok_pre_names(void) {
    return "qwen2, deepseek-r1-qwen, qwen35, gpt-2";
}

/* ==== Regex translation (Oniguruma -> PCRE2) ==== */

/* Unicode White_Space, which is what Oniguruma's `\s` means. */
#define WS_BODY   "\\t-\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
#define WORD_BODY "\\p{L}\\p{M}\\p{Nd}\\p{Pc}"

static enum ty_status translate_regex(const char *re, size_t len, struct ty_buf *b) {
    bool in_class = false;
    size_t class_start = 0;
    for (size_t i = 0; i < len; i++) {
        char c = re[i];
        if (c == '\\' && i + 1 < len) {
            char e = re[++i];
            const char *rep = NULL;
            bool negated = e == 'S' || e == 'W' || e == 'H';
            switch (e) {
            case 's':
            case 'S':
                rep = WS_BODY;
                break;
            case 'w':
            case 'W':
                rep = WORD_BODY;
                break;
            case 'h':
            case 'H':
                rep = "0-9a-fA-F";
                break;
            default:
                break;
            }
            if (!rep) {
                ty__buf_append(b, re + i - 1, 2);
                continue;
            }
            if (in_class) {
                if (negated)
                    return ty__error(TY_ERR_UNSUPPORTED,
                                     "pre-tokenizer regex: '\\%c' inside a character class (offset %zu) is not "
                                     "supported",
                                     e, i - 1);
                ty__buf_puts(b, rep);
            } else {
                ty__buf_puts(b, negated ? "[^" : "[");
                ty__buf_puts(b, rep);
                ty__buf_puts(b, "]");
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            ty__buf_append(b, &c, 1);
            class_start = i + 1;
            if (class_start < len && re[class_start] == '^') {
                ty__buf_append(b, "^", 1);
                class_start++;
                i++;
            }
            continue;
        }
        if (in_class) {
            if (c == ']' && i != class_start) {
                in_class = false;
            } else if (c == '[' && !(i + 1 < len && re[i + 1] == ':')) {
                return ty__error(TY_ERR_UNSUPPORTED,
                                 "pre-tokenizer regex: nested character class at offset %zu is not supported", i);
            } else if (c == '&' && i + 1 < len && re[i + 1] == '&') {
                return ty__error(TY_ERR_UNSUPPORTED,
                                 "pre-tokenizer regex: class intersection '&&' at offset %zu is not supported", i);
            }
        }
        ty__buf_append(b, &c, 1);
    }
    return TY_OK;
}

enum ty_status ty__tok_set_regex(struct ty_tokenizer *t, const char *regex, size_t len) {
    if (len > 65536) return ty__error(TY_ERR_FORMAT, "pre-tokenizer regex of %zu bytes is too long", len);
    if (memchr(regex, 0, len)) return ty__error(TY_ERR_FORMAT, "pre-tokenizer regex contains a NUL byte");
    if (ty__utf8_check((const uint8_t *)regex, len) != len)
        return ty__error(TY_ERR_FORMAT, "pre-tokenizer regex is not valid UTF-8");
    struct ty_buf b = {0};
    enum ty_status st = translate_regex(regex, len, &b);
    if (st != TY_OK) {
        ty__buf_free(&b);
        return st;
    }
    if (b.oom || !b.data) {
        ty__buf_free(&b);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory translating the pre-tokenizer regex");
    }
    int err;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)b.data, b.len, PCRE2_UTF | PCRE2_UCP, &err, &erroff, NULL);
    ty__buf_free(&b);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return ty__error(TY_ERR_UNSUPPORTED, "pre-tokenizer regex does not compile (%s, near offset %zu): %.*s",
                         (const char *)msg, (size_t)erroff, (int)(len > 200 ? 200 : len), regex);
    }
    char *copy = ty__strndup(regex, len);
    if (!copy) {
        pcre2_code_free(re);
        return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    }
    if (t->re) pcre2_code_free(t->re);
    ty_free(t->regex);
    t->re = re;
    t->regex = copy;
    /* Without JIT (some platforms) the interpreter gives the same matches, only slower. */
    t->re_jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    t->pre_impl = TOK_PRE_REGEX;
    if (!strcmp(copy, ty__tok_regex_qwen2))
        t->pre_impl = TOK_PRE_QWEN2;
    else if (!strcmp(copy, regex_qwen35))
        t->pre_impl = TOK_PRE_QWEN35;
    return TY_OK;
}

/* ==== Pre-tokenizer: PCRE2 ==== */

void ty__tok_split_free(struct tok_split *sp) {
    if (sp->md) pcre2_match_data_free(sp->md);
    if (sp->mctx) pcre2_match_context_free(sp->mctx);
    if (sp->jit_stack) pcre2_jit_stack_free(sp->jit_stack);
    memset(sp, 0, sizeof *sp);
}

/* Backtracking budget per match: a hostile regex in tokenizer.json fails with an error instead of running forever. */
#define TOK_MATCH_LIMIT 50000000u

static enum ty_status split_regex(const struct ty_tokenizer *t, struct tok_split *sp, const uint8_t *s, size_t n,
                                  tok_piece_fn fn, void *ctx) {
    if (!sp->md) {
        sp->md = pcre2_match_data_create(1, NULL);
        sp->mctx = pcre2_match_context_create(NULL);
        if (!sp->md || !sp->mctx) return ty__error(TY_ERR_NO_MEMORY, "out of memory for regex match data");
        pcre2_set_match_limit(sp->mctx, TOK_MATCH_LIMIT);
    }
    size_t last = 0, pos = 0; /* end of the last piece; where the next search starts */
    while (pos <= n) {
        int rc = pcre2_match(t->re, s, n, pos, PCRE2_NO_UTF_CHECK, sp->md, sp->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !sp->jit_stack) {
            sp->jit_stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, NULL);
            if (!sp->jit_stack) return ty__error(TY_ERR_NO_MEMORY, "out of memory for the regex JIT stack");
            pcre2_jit_stack_assign(sp->mctx, NULL, sp->jit_stack);
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ty__error(TY_ERR_UNSUPPORTED, "pre-tokenizer regex failed at byte %zu of a text segment: %s", pos,
                             (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sp->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > last) TY_TRY(fn(ctx, s + last, ms - last));
        if (me > ms) {
            TY_TRY(fn(ctx, s + ms, me - ms));
            last = pos = me;
        } else {
            /* An empty match cuts nothing; step over one character so the search moves on. */
            if (ms >= n) break;
            bool inc;
            size_t l = ty__utf8_seq(s + ms, n - ms, &inc);
            pos = ms + (l ? l : 1);
            last = ms;
        }
    }
    if (last < n) TY_TRY(fn(ctx, s + last, n - last));
    return TY_OK;
}

/* ==== Pre-tokenizer: hand-written Qwen2 / Qwen3.5 ==== */

/* Character classes of the Qwen regexes. */
enum { CC_L = 1, CC_N = 2, CC_WS = 4, CC_CRLF = 8, CC_M = 16 };

static uint8_t ascii_cc[128];
static pthread_once_t cc_once = PTHREAD_ONCE_INIT;

static bool is_ws(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

bool ty__cp_is_space(uint32_t cp) {
    return is_ws(cp);
}

bool ty__cp_is_word(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') || cp == '_';
    if (cp == 0x200C || cp == 0x200D) return true;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* Letter, number or mark as the reference's Unicode 14.0 sees it (tokenizer-unicode.c), not as the system's
 * libraries, whose Unicode may be newer. */
static inline unsigned uni_class(uint32_t cp) {
    if (cp < 0x40000)
        return (ty__uni_class_stage2[ty__uni_class_stage1[cp >> 8]][(cp & 255) >> 2] >> ((cp & 3) * 2)) & 3;
    return cp >= 0xE0100 && cp <= 0xE01EF ? 3 : 0;
}

static uint8_t cc_slow(uint32_t cp) {
    static const uint8_t by_class[4] = {0, CC_L, CC_N, CC_M};
    uint8_t c = by_class[uni_class(cp)];
    if (is_ws(cp)) c |= CC_WS;
    if (cp == '\r' || cp == '\n') c |= CC_CRLF;
    return c;
}

static void cc_init(void) {
    for (uint32_t i = 0; i < 128; i++) ascii_cc[i] = cc_slow(i);
}

/* Class of the character at s[i] and its length. */
static inline uint8_t cc_at(const uint8_t *s, size_t i, size_t *len) {
    if (s[i] < 0x80) {
        *len = 1;
        return ascii_cc[s[i]];
    }
    uint32_t cp = utf8_decode(s + i, len);
    return cc_slow(cp);
}

/* Case-insensitive letter test for the contraction alternatives: PCRE2 and Oniguruma both fold U+017F (long s) to s;
 * no other code point folds to the letters used. */
static inline bool ci_letter(const uint8_t *s, size_t n, size_t i, char lower, size_t *len) {
    if (i >= n) return false;
    *len = 1;
    if ((s[i] | 0x20) == lower) return true;
    if (lower == 's' && i + 1 < n && s[i] == 0xC5 && s[i + 1] == 0xBF) {
        *len = 2;
        return true;
    }
    return false;
}

/* Length of the match of the Qwen regex at s[i] (never 0: every character starts a match). `m_is_l`: Qwen3.5's
 * variant, where marks join letters ([\p{L}\p{M}]+). The alternatives are tried in the regex's order, as a
 * backtracking engine does:
 *   1 (?i:'s|'t|'re|'ve|'m|'ll|'d)   2 [^\r\n\p{L}\p{N}]?\p{L}+   3 \p{N}   4 ' ?[^\s\p{L}\p{N}]+[\r\n]*'
 *   5 \s*[\r\n]+   6 \s+(?!\S)   7 \s+ */
static size_t qwen_match(const uint8_t *s, size_t n, size_t i, bool m_is_l) {
    const uint8_t letter = m_is_l ? (CC_L | CC_M) : CC_L;
    size_t l0;
    uint8_t c0 = cc_at(s, i, &l0);
    if (s[i] == '\'') {
        size_t l1, l2;
        if (ci_letter(s, n, i + 1, 's', &l1) || ci_letter(s, n, i + 1, 't', &l1) || ci_letter(s, n, i + 1, 'm', &l1) ||
            ci_letter(s, n, i + 1, 'd', &l1))
            return 1 + l1;
        if ((ci_letter(s, n, i + 1, 'r', &l1) && ci_letter(s, n, i + 2, 'e', &l2)) ||
            (ci_letter(s, n, i + 1, 'v', &l1) && ci_letter(s, n, i + 2, 'e', &l2)) ||
            (ci_letter(s, n, i + 1, 'l', &l1) && ci_letter(s, n, i + 2, 'l', &l2)))
            return 3;
    }
    /* 2: a letter run, optionally led by one character that is not CR, LF, a letter or a number */
    size_t j = i;
    if (!(c0 & letter)) {
        if (!(c0 & (CC_CRLF | CC_L | CC_N)) && i + l0 < n) {
            size_t l1;
            uint8_t c1 = cc_at(s, i + l0, &l1);
            if (c1 & letter) j = i + l0;
        }
    }
    if (j > i || (c0 & letter)) {
        while (j < n) {
            size_t l;
            if (!(cc_at(s, j, &l) & letter)) break;
            j += l;
        }
        return j - i;
    }
    if (c0 & CC_N) return l0; /* 3 */
    /* 4: optional space, a run of "other" characters, then CR/LF */
    const uint8_t not_other = CC_WS | CC_L | CC_N | (m_is_l ? CC_M : 0);
    j = i;
    if (s[i] == ' ' && i + 1 < n) {
        size_t l1;
        if (!(cc_at(s, i + 1, &l1) & not_other)) j = i + 1;
    }
    if (j > i || !(c0 & not_other)) {
        while (j < n) {
            size_t l;
            if (cc_at(s, j, &l) & not_other) break;
            j += l;
        }
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j - i;
    }
    /* c0 is white space: W = the whole white-space run */
    size_t w_end = i, last_crlf = 0, n_chars = 0, last_start = i;
    bool has_crlf = false;
    while (w_end < n) {
        size_t l;
        uint8_t c = cc_at(s, w_end, &l);
        if (!(c & CC_WS)) break;
        if (c & CC_CRLF) {
            has_crlf = true;
            last_crlf = w_end;
        }
        last_start = w_end;
        w_end += l;
        n_chars++;
    }
    if (has_crlf) return last_crlf + 1 - i;           /* 5: up to the last CR/LF of the run */
    if (w_end == n || n_chars == 1) return w_end - i; /* 6 at the end of text, or 7 */
    return last_start - i;                            /* 6: all but the last white-space character */
}

static enum ty_status split_qwen(const uint8_t *s, size_t n, bool m_is_l, tok_piece_fn fn, void *ctx) {
    pthread_once(&cc_once, cc_init);
    size_t i = 0;
    while (i < n) {
        size_t l = qwen_match(s, n, i, m_is_l);
        TY_TRY(fn(ctx, s + i, l));
        i += l;
    }
    return TY_OK;
}

enum ty_status ty__tok_pretokenize(const struct ty_tokenizer *t, enum tok_pre_impl impl, struct tok_split *sp,
                                   const uint8_t *s, size_t n, tok_piece_fn fn, void *ctx) {
    if (n == 0) return TY_OK;
    switch (impl) {
    case TOK_PRE_QWEN2:
        return split_qwen(s, n, false, fn, ctx);
    case TOK_PRE_QWEN35:
        return split_qwen(s, n, true, fn, ctx);
    case TOK_PRE_REGEX:
    default:
        if (!t->re) return fn(ctx, s, n); /* no pre-tokenizer: the whole segment is one piece */
        return split_regex(t, sp, s, n, fn, ctx);
    }
}
