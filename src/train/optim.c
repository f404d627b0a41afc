/*
 * optim.c - the optimizer: AdamW with decoupled weight decay on the matrices only, a learning rate with linear warmup
 * and cosine decay, and clipping of the global gradient norm. The arithmetic follows torch.optim.AdamW's
 * single-tensor path (the one PyTorch takes on the CPU) step for step in f32, with the scalars (bias corrections,
 * step size) in f64 as Python computes them, so a run can be checked against PyTorch's loss curve.
 */
#include "train/train.h"

#include <math.h>

#if defined(__x86_64__) && defined(TY_AVX512_EMULATED) /* the emulated test build (see ops.c) */
#include "avx512-emu.h"
#define ZMM_ADAM 1
#elif defined(__AVX512F__)
#include <immintrin.h>
#define ZMM_ADAM 1
#endif

struct ty_train_optim_params ty__train_optim_default_params(void) {
    struct ty_train_optim_params p = {.lr = 1e-3,
                                      .lr_min = 1e-4,
                                      .warmup = 100,
                                      .total_steps = 1000,
                                      .beta1 = 0.9,
                                      .beta2 = 0.95,
                                      .eps = 1e-8,
                                      .weight_decay = 0.1,
                                      .clip = 1.0};
    return p;
}

enum ty_status ty__train_optim_init_n(struct ty_train_optim *o, size_t n_params,
                                      const struct ty_train_optim_params *p) {
    memset(o, 0, sizeof *o);
    o->p = *p;
    o->m = ty__huge_calloc(n_params ? n_params : 1, sizeof(float));
    o->v = ty__huge_calloc(n_params ? n_params : 1, sizeof(float));
    if (!o->m || !o->v) {
        ty__train_optim_free(o);
        return ty__error(TY_ERR_NO_MEMORY, "train: out of memory for the optimizer state of %zu parameters", n_params);
    }
    return TY_OK;
}

enum ty_status ty__train_optim_init(struct ty_train_optim *o, const struct ty_train_model *m,
                                    const struct ty_train_optim_params *p) {
    return ty__train_optim_init_n(o, m->n_params, p);
}

void ty__train_optim_free(struct ty_train_optim *o) {
    ty__huge_free(o->m);
    ty__huge_free(o->v);
    o->m = o->v = NULL;
}

double ty__train_lr(const struct ty_train_optim_params *p, int64_t step) {
    if (p->warmup > 0 && step < p->warmup) return p->lr * (double)(step + 1) / (double)p->warmup;
    int64_t span = p->total_steps - p->warmup;
    double progress = span > 0 ? (double)(step - p->warmup) / (double)span : 1.0;
    if (progress > 1.0) progress = 1.0;
    return p->lr_min + 0.5 * (p->lr - p->lr_min) * (1.0 + cos(M_PI * progress));
}

/* The squared norm is summed in fixed chunks of NORM_CHUNK elements (f64, in LANES interleaved partial sums), the
 * chunks added in order within a tensor and the tensors in order: the threads split the chunks, so the result does
 * not depend on their count. */
#define NORM_CHUNK 16384
#define LANES      8

static double chunk_sq(const float *g, size_t n) {
    double acc[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += (double)g[i + l] * (double)g[i + l];
    for (; i < n; i++) acc[0] += (double)g[i] * (double)g[i];
    double s = 0.0;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

struct norm_job {
    const struct ty_train_tensor *tensors;
    int n_tensors;
    const float *grads;
    double *part; /* (chunks of every tensor, in order) */
    int64_t n_chunks;
};

static void norm_task(void *arg, int ith, int nth) {
    const struct norm_job *j = arg;
    int64_t b, e, c = 0;
    ty__split_range(j->n_chunks, ith, nth, &b, &e);
    for (int i = 0; i < j->n_tensors && c < e; i++) {
        size_t n = j->tensors[i].n;
        const float *g = j->grads + j->tensors[i].offset;
        for (size_t k = 0; k < n; k += NORM_CHUNK, c++)
            if (c >= b && c < e) j->part[c] = chunk_sq(g + k, n - k < NORM_CHUNK ? n - k : NORM_CHUNK);
    }
}

static double grad_norm(struct ty_threadpool *pool, const struct ty_train_tensor *tensors, int n_tensors,
                        const float *grads) {
    struct norm_job j = {tensors, n_tensors, grads, NULL, 0};
    for (int i = 0; i < n_tensors; i++) j.n_chunks += (int64_t)((tensors[i].n + NORM_CHUNK - 1) / NORM_CHUNK);
    j.part = ty__malloc((size_t)(j.n_chunks ? j.n_chunks : 1) * sizeof(double));
    double total = 0.0;
    int64_t c = 0;
    for (int i = 0; i < n_tensors; i++) {
        const float *g = grads + tensors[i].offset;
        if (i == 0 && j.part) {
            if (pool)
                ty__threadpool_run(pool, norm_task, &j);
            else
                norm_task(&j, 0, 1);
        }
        double s = 0.0;
        for (size_t k = 0; k < tensors[i].n; k += NORM_CHUNK, c++)
            s += j.part ? j.part[c] : chunk_sq(g + k, tensors[i].n - k < NORM_CHUNK ? tensors[i].n - k : NORM_CHUNK);
        total += s;
    }
    ty_free(j.part);
    return sqrt(total);
}

double ty__train_grad_norm(const struct ty_train_model *m) {
    return grad_norm(m->pool, m->tensors, m->n_tensors, m->grads);
}

struct adam_job {
    const struct ty_train_optim *o;
    const struct ty_train_tensor *tensors;
    int n_tensors;
    float *params;
    const float *grads;
    float clip_coef, decay, b1c, b2, b2c, eps, neg_step, bc2_sqrt;
};

/* Threads take whole blocks of ADAM_BLOCK elements of each tensor and the last one its tail, so which elements take
 * the vector path does not depend on the thread count. */
#define ADAM_BLOCK 64

static void adam_tensors(void *arg, int ith, int nth) {
    const struct adam_job *j = arg;
    for (int i = 0; i < j->n_tensors; i++) {
        const struct ty_train_tensor *t = &j->tensors[i];
        int64_t n_blocks = (int64_t)t->n / ADAM_BLOCK, b, e;
        ty__split_range(n_blocks, ith, nth, &b, &e);
        b *= ADAM_BLOCK;
        e *= ADAM_BLOCK;
        float *p = j->params + t->offset;
        const float *g = j->grads + t->offset;
        float *mm = j->o->m + t->offset, *vv = j->o->v + t->offset;
        int64_t k = b;
#if defined(ZMM_ADAM)
        const __m512 clip = _mm512_set1_ps(j->clip_coef), decay = _mm512_set1_ps(t->decay ? j->decay : 1.0f);
        const __m512 b1c = _mm512_set1_ps(j->b1c), b2 = _mm512_set1_ps(j->b2), b2c = _mm512_set1_ps(j->b2c);
        const __m512 eps = _mm512_set1_ps(j->eps), neg_step = _mm512_set1_ps(j->neg_step);
        const __m512 bc2 = _mm512_set1_ps(j->bc2_sqrt);
        for (; k < e; k += 16) {
            __m512 gk = _mm512_mul_ps(_mm512_loadu_ps(g + k), clip);
            __m512 pk = _mm512_mul_ps(_mm512_loadu_ps(p + k), decay), m0 = _mm512_loadu_ps(mm + k);
            __m512 m1 = _mm512_fmadd_ps(b1c, _mm512_sub_ps(gk, m0), m0);
            __m512 v1 = _mm512_fmadd_ps(_mm512_mul_ps(b2c, gk), gk, _mm512_mul_ps(_mm512_loadu_ps(vv + k), b2));
            __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v1), bc2), eps);
            _mm512_storeu_ps(mm + k, m1);
            _mm512_storeu_ps(vv + k, v1);
            _mm512_storeu_ps(p + k, _mm512_fmadd_ps(neg_step, _mm512_div_ps(m1, den), pk));
        }
#endif
        if (ith == nth - 1) e = (int64_t)t->n;
        for (; k < e; k++) {
            float gk = g[k] * j->clip_coef;
            if (t->decay) p[k] *= j->decay;
            mm[k] = mm[k] + j->b1c * (gk - mm[k]);    /* exp_avg.lerp_(grad, 1 - beta1) */
            vv[k] = vv[k] * j->b2 + j->b2c * gk * gk; /* exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2) */
            float denom = sqrtf(vv[k]) / j->bc2_sqrt + j->eps;
            p[k] = p[k] + j->neg_step * (mm[k] / denom); /* param.addcdiv_(exp_avg, denom, -step_size) */
        }
    }
}

void ty__train_optim_update(struct ty_train_optim *o, struct ty_threadpool *pool, const struct ty_train_tensor *tensors,
                            int n_tensors, float *params, const float *grads, double *grad_norm_out, double *lr_out) {
    const struct ty_train_optim_params *p = &o->p;
    double norm = grad_norm(pool, tensors, n_tensors, grads);
    /* torch.nn.utils.clip_grad_norm_: coef = max_norm / (total + 1e-6), applied only when below 1 */
    double coef = 1.0;
    if (p->clip > 0) {
        coef = p->clip / (norm + 1e-6);
        if (coef > 1.0) coef = 1.0;
    }
    double lr = ty__train_lr(p, o->step);
    o->step++;
    double bc1 = 1.0 - pow(p->beta1, (double)o->step), bc2 = 1.0 - pow(p->beta2, (double)o->step);
    struct adam_job j = {.o = o,
                         .tensors = tensors,
                         .n_tensors = n_tensors,
                         .params = params,
                         .grads = grads,
                         .clip_coef = (float)coef,
                         .decay = (float)(1.0 - lr * p->weight_decay),
                         .b1c = (float)(1.0 - p->beta1),
                         .b2 = (float)p->beta2,
                         .b2c = (float)(1.0 - p->beta2),
                         .eps = (float)p->eps,
                         .neg_step = (float)(-(lr / bc1)),
                         .bc2_sqrt = (float)sqrt(bc2)};
    ty__threadpool_run(pool, adam_tensors, &j);
    if (grad_norm_out) *grad_norm_out = norm;
    if (lr_out) *lr_out = lr;
}

void ty__train_optim_step(struct ty_train_optim *o, struct ty_train_model *m, double *grad_norm_out, double *lr_out) {
    ty__train_optim_update(o, m->pool, m->tensors, m->n_tensors, m->params, m->grads, grad_norm_out, lr_out);
}
