/*
 * lora.h - LoRA adapters (lora.c): training them on a ty_train_model, saving them as a GGUF adapter, and applying an
 * adapter file to a loaded inference model.
 */
#ifndef TY_TRAIN_LORA_H
#define TY_TRAIN_LORA_H

#include "train/train.h"

/* Projections an adapter can target, as bits of a mask: q, k, v, o, gate, up, down. */
#define TY_LORA_N_TARGETS 7

struct ty_lora_adapter {
    int base;           /* index of the adapted weight in the model's tensor list */
    int64_t in, out;    /* the weight's shape: (out, in) */
    size_t base_offset; /* its frozen W0 in ty_lora.base */
};

struct ty_lora {
    int rank;
    float alpha, scale;         /* scale = alpha / rank */
    struct ty_lora_adapter *ad; /* (n_ad) */
    int n_ad;
    struct ty_train_tensor *tensors; /* (2 n_ad) A (r, in) then B (out, r) of each adapter, GGUF-named */
    int n_tensors;
    size_t n_params;
    float *params, *grads; /* (n_params) */
    float *base;           /* frozen W0 of every adapted weight */
    float *tmp;            /* scratch: the largest adapted weight */
};

/* "q,k,v,o" (or GGUF names "attn_q", ...) to a target mask. */
enum ty_status ty__lora_parse_targets(const char *list, unsigned *mask);
/* Adapters of rank `rank` on the `targets` projections of every layer; A random, B zero (the model is unchanged).
 * The model's current weights become the frozen W0. Free with ty__lora_free. */
enum ty_status ty__lora_init(struct ty_train_model *m, int rank, float alpha, unsigned targets, uint64_t seed,
                             struct ty_lora **out);
void ty__lora_free(struct ty_lora *lo);
/* Writes W0 + scale B A into the model's parameters (after every adapter update). */
void ty__lora_sync(struct ty_lora *lo, struct ty_train_model *m);
/* The adapters' gradients (overwritten) from the model's weight gradients after a backward. */
void ty__lora_grads(struct ty_lora *lo, const struct ty_train_model *m);
/* Saves the adapters as a GGUF adapter file. */
enum ty_status ty__lora_save(const struct ty_lora *lo, const char *path);

/* Applies the adapter file `path` to a loaded model with an extra `scale` (1 = as trained): each adapted weight is
 * replaced by an f32 copy of W + scale * (alpha / r) B A. The returned handle owns those copies (in a buffer of the
 * model's backend): free it with ty__lora_applied_free after the model's last use and before ty_model_free. Every
 * tensor pair is checked before any weight changes, so a bad file leaves the model as it was. */
struct ty_model;
struct ty_lora_applied;
enum ty_status ty__lora_apply(struct ty_model *m, const char *path, float scale, struct ty_lora_applied **out);
void ty__lora_applied_free(struct ty_lora_applied *la);

#endif /* TY_TRAIN_LORA_H */
