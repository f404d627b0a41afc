/*
 * convert.h - Hugging Face checkpoint (config.json + safetensors + tokenizer.json) to GGUF, without Python.
 *
 * The output follows llama.cpp's convert_hf_to_gguf.py for the same architectures: the same architecture names,
 * metadata keys, tensor names and shapes, so files written here load in llama.cpp and the other way round. Weights are
 * converted one tensor at a time; the whole model is never in memory.
 */
#ifndef TY_CONVERT_H
#define TY_CONVERT_H

#include "base/base.h"

struct ty_convert_params {
    /* Type of the 2-D weight matrices. Default F16 (as llama.cpp's converter). 1-D tensors (norms, biases) are always
     * F32. A quantized type whose block does not divide a matrix's rows falls back to F16 for that matrix, with a
     * warning, as llama.cpp does. */
    enum ty_type type;
    const char *name; /* general.name; NULL = the checkpoint folder's base name */
    int n_threads;    /* threads converting each tensor's rows; 0 = one per core. The output does not depend on it. */
};

struct ty_convert_params ty__convert_default_params(void);

/* Converts the checkpoint in folder `hf_dir` to the GGUF file `out_path` (written under a temporary name and renamed
 * at the end, so a failed conversion leaves no partial file). Errors name the file, key or tensor at fault. */
enum ty_status ty__convert_hf(const char *hf_dir, const char *out_path, const struct ty_convert_params *params);

/* Hugging Face `architectures` values that convert supports, comma-separated, for messages and --help. */
const char *ty__convert_supported_archs(void);

/* True when `type` can be chosen as the weight type of a conversion (F32, F16, BF16 and the quantized types whose
 * quantizer Tongyun has). */
bool ty__convert_type_ok(enum ty_type type);

/* The GGUF `general.file_type` value (llama.cpp's LLAMA_FTYPE) for a file whose matrices are mostly `type`; -1 if
 * there is none. */
int ty__convert_file_type(enum ty_type type);

#endif /* TY_CONVERT_H */
