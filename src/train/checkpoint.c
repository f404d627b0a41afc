/*
 * checkpoint.c - training checkpoints for exact resume: the f32 parameters, both Adam moments, the step count and
 * what identifies the run (seed, batch shape, optimizer settings, data hash), followed by a 64-bit FNV-1a checksum of
 * every byte before it. Version 2 adds the precision of the products after the header (a bf16 run continues in
 * bf16); version 1 files, written before mixed precision existed, load as f32 runs. The data order is a function of
 * (seed, step) alone (data.c), so these are all a resumed run needs to continue the same loss curve bit for bit.
 * Little-endian hosts only (the bytes are written as they lie in memory); a checkpoint is a working file of one
 * machine, the GGUF export is the portable result.
 */
#include "train/train.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#define CKPT_MAGIC   "TYTRAIN1"
#define CKPT_VERSION 2u

struct hasher {
    uint64_t h;
};

static void hash_bytes(struct hasher *hs, const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = hs->h;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    hs->h = h;
}

/* The header fields in file order: the model shape, then the run id, then the step. */
struct ckpt_header {
    char magic[8];
    uint32_t version;
    int32_t shape[8]; /* n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, tied */
    uint64_t n_params;
    uint64_t seed;
    int64_t n_seq, seq_len, accum;
    double lr, lr_min, beta1, beta2, eps, weight_decay, clip;
    int64_t warmup, total_steps;
    uint64_t data_hash;
    int64_t step;
};

/* What version 2 adds after the header. */
struct ckpt_ext {
    uint32_t precision; /* enum ty_train_precision */
    uint32_t reserved;  /* 0 */
};

static void shape_of(const struct ty_train_config *c, int32_t *s) {
    s[0] = c->n_vocab, s[1] = c->n_embd, s[2] = c->n_layer, s[3] = c->n_head, s[4] = c->n_head_kv;
    s[5] = c->head_dim, s[6] = c->n_ff, s[7] = c->tied;
}

static enum ty_status write_all(FILE *f, const void *p, size_t n, struct hasher *hs, const char *path) {
    hash_bytes(hs, p, n);
    if (fwrite(p, 1, n, f) != n) return ty__error(TY_ERR_IO, "checkpoint %s: write failed: %s", path, strerror(errno));
    return TY_OK;
}

enum ty_status ty__train_checkpoint_save(const char *path, const struct ty_train_model *m,
                                         const struct ty_train_optim *o, const struct ty_train_run_id *id) {
    struct ckpt_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CKPT_MAGIC, 8);
    h.version = CKPT_VERSION;
    shape_of(&m->cfg, h.shape);
    h.n_params = m->n_params;
    h.seed = id->seed;
    h.n_seq = id->n_seq, h.seq_len = id->seq_len, h.accum = id->accum;
    h.lr = id->optim.lr, h.lr_min = id->optim.lr_min, h.beta1 = id->optim.beta1, h.beta2 = id->optim.beta2;
    h.eps = id->optim.eps, h.weight_decay = id->optim.weight_decay, h.clip = id->optim.clip;
    h.warmup = id->optim.warmup, h.total_steps = id->optim.total_steps;
    h.data_hash = id->data_hash;
    h.step = o->step;
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return ty__error(TY_ERR_INVALID_ARG, "checkpoint path is too long");
    FILE *f = fopen(tmp, "wb");
    if (!f) return ty__error(TY_ERR_IO, "checkpoint %s: cannot create: %s", tmp, strerror(errno));
    struct hasher hs = {1469598103934665603ull};
    size_t nb = m->n_params * sizeof(float);
    struct ckpt_ext ext = {(uint32_t)id->precision, 0};
    enum ty_status st = write_all(f, &h, sizeof h, &hs, tmp);
    if (st == TY_OK) st = write_all(f, &ext, sizeof ext, &hs, tmp);
    if (st == TY_OK) st = write_all(f, m->params, nb, &hs, tmp);
    if (st == TY_OK) st = write_all(f, o->m, nb, &hs, tmp);
    if (st == TY_OK) st = write_all(f, o->v, nb, &hs, tmp);
    uint64_t sum = hs.h;
    if (st == TY_OK && fwrite(&sum, 1, 8, f) != 8)
        st = ty__error(TY_ERR_IO, "checkpoint %s: write failed: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && st == TY_OK)
        st = ty__error(TY_ERR_IO, "checkpoint %s: close failed: %s", tmp, strerror(errno));
    if (st == TY_OK && rename(tmp, path) != 0)
        st = ty__error(TY_ERR_IO, "checkpoint: cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (st != TY_OK) remove(tmp);
    return st;
}

#define SAME(field, fmt, flag)                                                                                         \
    do {                                                                                                               \
        if (h->field != want->field)                                                                                   \
            return ty__error(TY_ERR_INVALID_ARG,                                                                       \
                             "checkpoint %s was written with %s " fmt ", this run has " fmt                            \
                             "; resume with the same settings or start a new run without --resume",                    \
                             path, flag, h->field, want->field);                                                       \
    } while (0)

static enum ty_status check_run(const char *path, const struct ckpt_header *h, const struct ckpt_header *want) {
    SAME(seed, "%" PRIu64, "--seed");
    SAME(n_seq, "%" PRId64, "--batch");
    SAME(seq_len, "%" PRId64, "--ctx");
    SAME(accum, "%" PRId64, "--accum");
    SAME(lr, "%g", "--lr");
    SAME(lr_min, "%g", "--lr-min");
    SAME(warmup, "%" PRId64, "--warmup");
    SAME(total_steps, "%" PRId64, "--steps");
    SAME(beta1, "%g", "beta1");
    SAME(beta2, "%g", "beta2");
    SAME(eps, "%g", "adam eps");
    SAME(weight_decay, "%g", "--weight-decay");
    SAME(clip, "%g", "--clip");
    SAME(data_hash, "%#" PRIx64, "corpus (token hash)");
    return TY_OK;
}

enum ty_status ty__train_checkpoint_load(const char *path, struct ty_train_model *m, struct ty_train_optim *o,
                                         const struct ty_train_run_id *id) {
    struct ty_file_map map;
    TY_TRY(ty__file_map(path, &map));
    enum ty_status st = TY_OK;
    struct ckpt_header h, want;
    struct ckpt_ext ext = {TY_TRAIN_PRECISION_F32, 0};
    size_t nb = m->n_params * sizeof(float), hsize = sizeof h;
    if (map.size < sizeof h || memcmp(map.data, CKPT_MAGIC, 8) != 0) {
        st = ty__error(TY_ERR_FORMAT, "%s is not a Tongyun training checkpoint (bad magic or too short)", path);
        goto done;
    }
    memcpy(&h, map.data, sizeof h);
    if (h.version != 1 && h.version != CKPT_VERSION) {
        st = ty__error(TY_ERR_UNSUPPORTED, "checkpoint %s has version %u; this build reads versions 1 to %u", path,
                       h.version, CKPT_VERSION);
        goto done;
    }
    if (h.version >= 2) hsize += sizeof ext;
    size_t need = hsize + 3 * nb + 8;
    int32_t shape[8];
    shape_of(&m->cfg, shape);
    if (memcmp(shape, h.shape, sizeof shape) != 0 || h.n_params != m->n_params) {
        st = ty__error(TY_ERR_INVALID_ARG,
                       "checkpoint %s holds a model of vocab %d, embd %d, %d layers, heads %d/%d x %d, ff %d; this "
                       "run's model differs; use the same model settings",
                       path, h.shape[0], h.shape[1], h.shape[2], h.shape[3], h.shape[4], h.shape[5], h.shape[6]);
        goto done;
    }
    if (map.size != need) {
        st = ty__error(TY_ERR_FORMAT, "checkpoint %s is %zu bytes, expected %zu; it is truncated or corrupt", path,
                       map.size, need);
        goto done;
    }
    struct hasher hs = {1469598103934665603ull};
    hash_bytes(&hs, map.data, need - 8);
    uint64_t sum;
    memcpy(&sum, map.data + need - 8, 8);
    if (sum != hs.h) {
        st = ty__error(TY_ERR_FORMAT, "checkpoint %s: checksum mismatch; the file is corrupt", path);
        goto done;
    }
    memset(&want, 0, sizeof want);
    want.seed = id->seed;
    want.n_seq = id->n_seq, want.seq_len = id->seq_len, want.accum = id->accum;
    want.lr = id->optim.lr, want.lr_min = id->optim.lr_min, want.beta1 = id->optim.beta1;
    want.beta2 = id->optim.beta2, want.eps = id->optim.eps, want.weight_decay = id->optim.weight_decay;
    want.clip = id->optim.clip, want.warmup = id->optim.warmup, want.total_steps = id->optim.total_steps;
    want.data_hash = id->data_hash;
    st = check_run(path, &h, &want);
    if (st != TY_OK) goto done;
    if (h.version >= 2) memcpy(&ext, map.data + sizeof h, sizeof ext);
    if (ext.precision >= TY_TRAIN_PRECISION_COUNT) {
        st = ty__error(TY_ERR_FORMAT, "checkpoint %s: precision %u is unknown; the file is from a newer build", path,
                       ext.precision);
        goto done;
    }
    if (ext.precision != (uint32_t)id->precision) {
        st = ty__error(TY_ERR_INVALID_ARG,
                       "checkpoint %s was written with --precision %s, this run has %s; resume with the same settings "
                       "or start a new run without --resume",
                       path, ty__train_precision_name((enum ty_train_precision)ext.precision),
                       ty__train_precision_name(id->precision));
        goto done;
    }
    memcpy(m->params, map.data + hsize, nb);
    memcpy(o->m, map.data + hsize + nb, nb);
    memcpy(o->v, map.data + hsize + 2 * nb, nb);
    o->step = h.step;
done:
    ty__file_unmap(&map);
    return st;
}
