/*
 * tenants.c - API keys and per-key limits. The keys file holds, per key, a name, a random salt, SHA-256(salt || key)
 * and the limits; the key itself is shown once at creation and never stored. Lookup hashes the presented key with
 * each entry's salt and compares every entry in constant time (CRYPTO_memcmp, no early exit), so neither the string
 * compare nor the position of the match leaks through timing (vLLM CVE-2025-59425).
 *
 * Limits are token buckets refilled continuously: requests per minute (one token per request), tokens per minute
 * (charged with the prompt and completion tokens when a request ends; a bucket in debt refuses new requests until it
 * refills) and a cap on concurrent requests. A refusal carries the seconds until the bucket allows one more, which
 * the server sends as Retry-After.
 *
 * File format, one key per line, tab-separated: v1, name, salt (hex), hash (hex), rpm, tpm, max_concurrent, revoked.
 */
#include "cloud/cloud-impl.h"

#include <errno.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void hex(const uint8_t *p, size_t n, char *out) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

static bool unhex(const char *s, uint8_t *out, size_t n) {
    if (strlen(s) != 2 * n) return false;
    for (size_t i = 0; i < 2 * n; i++) {
        int c = s[i], v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return false;
        if (i % 2)
            out[i / 2] |= (uint8_t)v;
        else
            out[i / 2] = (uint8_t)(v << 4);
    }
    return true;
}

static void key_hash(const uint8_t salt[16], const char *secret, size_t len, uint8_t out[32]) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 32;
    bool ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) && EVP_DigestUpdate(c, salt, 16) &&
              EVP_DigestUpdate(c, secret, len) && EVP_DigestFinal_ex(c, out, &n);
    EVP_MD_CTX_free(c);
    TY_ASSERT(ok);
}

enum ty_status ty__keys_load(const char *path, struct ty_keyring *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_init(&out->mu, NULL);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return TY_OK;
        return ty__error(TY_ERR_IO, "cannot open keys file %s: %s", path, strerror(errno));
    }
    char line[1024];
    int lineno = 0;
    enum ty_status st = TY_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[64], salt[64], hash[96];
        long long rpm, tpm, conc;
        int revoked;
        if (sscanf(line, "v1\t%63[^\t]\t%63[^\t]\t%95[^\t]\t%lld\t%lld\t%lld\t%d", name, salt, hash, &rpm, &tpm, &conc,
                   &revoked) != 7) {
            st = ty__error(TY_ERR_FORMAT, "%s:%d: not a key line; the keys file is written by `tongyun keys`", path,
                           lineno);
            break;
        }
        struct ty_key *k = ty__realloc(out->keys, (out->n + 1) * sizeof *k);
        if (!k) {
            st = ty__error(TY_ERR_NO_MEMORY, "out of memory reading %s", path);
            break;
        }
        out->keys = k;
        k = &out->keys[out->n];
        memset(k, 0, sizeof *k);
        snprintf(k->name, sizeof k->name, "%s", name);
        if (!unhex(salt, k->salt, 16) || !unhex(hash, k->hash, 32)) {
            st = ty__error(TY_ERR_FORMAT, "%s:%d: bad salt or hash", path, lineno);
            break;
        }
        k->rpm = rpm;
        k->tpm = tpm;
        k->max_concurrent = conc;
        k->revoked = revoked != 0;
        k->req_tokens = (double)rpm;
        k->tok_tokens = (double)tpm;
        k->last_refill = -1;
        out->n++;
    }
    fclose(f);
    if (st != TY_OK) ty__keys_free(out);
    return st;
}

enum ty_status ty__keys_save(const char *path, const struct ty_keyring *ring) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    mode_t old = umask(077); /* hashes are not secrets, but the file is nobody else's business */
    FILE *f = fopen(tmp, "w");
    umask(old);
    if (!f) return ty__error(TY_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    fprintf(f, "# tongyun API keys: v1 name salt sha256(salt||key) rpm tpm max_concurrent revoked\n");
    for (size_t i = 0; i < ring->n; i++) {
        const struct ty_key *k = &ring->keys[i];
        char salt[33], hash[65];
        hex(k->salt, 16, salt);
        hex(k->hash, 32, hash);
        fprintf(f, "v1\t%s\t%s\t%s\t%lld\t%lld\t%lld\t%d\n", k->name, salt, hash, (long long)k->rpm, (long long)k->tpm,
                (long long)k->max_concurrent, k->revoked ? 1 : 0);
    }
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return ty__error(TY_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    }
    return TY_OK;
}

void ty__keys_free(struct ty_keyring *ring) {
    ty_free(ring->keys);
    pthread_mutex_destroy(&ring->mu);
    memset(ring, 0, sizeof *ring);
}

enum ty_status ty__keys_create(struct ty_keyring *ring, const char *name, int64_t rpm, int64_t tpm, int64_t max_conc,
                               char *secret, size_t cap) {
    if (cap < 80) return ty__error(TY_ERR_BUFFER_TOO_SMALL, "key buffer too small");
    if (!name || !*name || strlen(name) >= 64 || strpbrk(name, "\t\n\r"))
        return ty__error(TY_ERR_INVALID_ARG, "key name must be 1 to 63 characters without tabs or newlines");
    for (size_t i = 0; i < ring->n; i++)
        if (!strcmp(ring->keys[i].name, name) && !ring->keys[i].revoked)
            return ty__error(TY_ERR_INVALID_ARG, "a key named '%s' already exists; revoke it or pick another name",
                             name);
    uint8_t raw[32];
    struct ty_key k = {0};
    if (RAND_bytes(raw, sizeof raw) != 1 || RAND_bytes(k.salt, sizeof k.salt) != 1)
        return ty__error(TY_ERR_INTERNAL, "the system random generator failed");
    memcpy(secret, "sk-ty-", 6);
    hex(raw, sizeof raw, secret + 6);
    key_hash(k.salt, secret, strlen(secret), k.hash);
    snprintf(k.name, sizeof k.name, "%s", name);
    k.rpm = rpm;
    k.tpm = tpm;
    k.max_concurrent = max_conc;
    k.req_tokens = (double)rpm;
    k.tok_tokens = (double)tpm;
    k.last_refill = -1;
    struct ty_key *keys = ty__realloc(ring->keys, (ring->n + 1) * sizeof *keys);
    if (!keys) return ty__error(TY_ERR_NO_MEMORY, "out of memory adding a key");
    ring->keys = keys;
    ring->keys[ring->n++] = k;
    return TY_OK;
}

struct ty_key *ty__keys_find(struct ty_keyring *ring, const char *secret, size_t len) {
    struct ty_key *found = NULL;
    for (size_t i = 0; i < ring->n; i++) {
        uint8_t h[32];
        key_hash(ring->keys[i].salt, secret, len, h);
        /* no branch on the result inside the compare; the loop always runs to the end */
        int eq = CRYPTO_memcmp(h, ring->keys[i].hash, 32) == 0;
        if (eq && !ring->keys[i].revoked) found = &ring->keys[i];
    }
    return found;
}

/* ==== Limits ==== */

static void refill(struct ty_key *k, double now) {
    if (k->last_refill < 0) k->last_refill = now;
    double dt = now - k->last_refill;
    if (dt <= 0) return;
    if (k->rpm > 0) k->req_tokens = fmin((double)k->rpm, k->req_tokens + dt * (double)k->rpm / 60.0);
    if (k->tpm > 0) k->tok_tokens = fmin((double)k->tpm, k->tok_tokens + dt * (double)k->tpm / 60.0);
    k->last_refill = now;
}

bool ty__keys_acquire(struct ty_keyring *ring, struct ty_key *k, double now, int64_t *retry_after, const char **which) {
    pthread_mutex_lock(&ring->mu);
    refill(k, now);
    bool ok = true;
    *retry_after = 0;
    if (k->max_concurrent > 0 && k->in_flight >= k->max_concurrent) {
        ok = false;
        *which = "concurrent requests";
        *retry_after = 1;
    } else if (k->rpm > 0 && k->req_tokens < 1.0) {
        ok = false;
        *which = "requests per minute";
        *retry_after = (int64_t)ceil((1.0 - k->req_tokens) * 60.0 / (double)k->rpm);
    } else if (k->tpm > 0 && k->tok_tokens <= 0.0) {
        ok = false;
        *which = "tokens per minute";
        *retry_after = (int64_t)ceil((1.0 - k->tok_tokens) * 60.0 / (double)k->tpm);
    }
    if (ok) {
        if (k->rpm > 0) k->req_tokens -= 1.0;
        k->in_flight++;
    }
    if (*retry_after < 1 && !ok) *retry_after = 1;
    pthread_mutex_unlock(&ring->mu);
    return ok;
}

void ty__keys_release(struct ty_keyring *ring, struct ty_key *k, double now, int64_t tokens) {
    pthread_mutex_lock(&ring->mu);
    refill(k, now);
    if (k->in_flight > 0) k->in_flight--;
    if (k->tpm > 0) k->tok_tokens -= (double)tokens;
    pthread_mutex_unlock(&ring->mu);
}
