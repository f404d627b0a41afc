/*
 * optim.c - the optimizer: AdamW with decoupled weight decay on the matrices only, a learning rate with linear warmup
 * and cosine decay, and clipping of the global gradient norm. The arithmetic follows torch.optim.AdamW's
 * single-tensor path (the one PyTorch takes on the CPU) step for step in f32, with the scalars (bias corrections,
 * step size) in f64 as Python computes them, so a run can be checked against PyTorch's loss curve.
 */
#include "train/train.h"

#include <math.h>

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
    o->m = ty__calloc(n_params ? n_params : 1, sizeof(float));
    o->v = ty__calloc(n_params ? n_params : 1, sizeof(float));
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
    ty_free(o->m);
    ty_free(o->v);
    o->m = o->v = NULL;
}

double ty__train_lr(const struct ty_train_optim_params *p, int64_t step) {
    if (p->warmup > 0 && step < p->warmup) return p->lr * (double)(step + 1) / (double)p->warmup;
    int64_t span = p->total_steps - p->warmup;
    double progress = span > 0 ? (double)(step - p->warmup) / (double)span : 1.0;
    if (progress > 1.0) progress = 1.0;
    return p->lr_min + 0.5 * (p->lr - p->lr_min) * (1.0 + cos(M_PI * progress));
}

static double grad_norm(const struct ty_train_tensor *tensors, int n_tensors, const float *grads) {
    double total = 0.0;
    for (int i = 0; i < n_tensors; i++) {
        const float *g = grads + tensors[i].offset;
        double s = 0.0;
        for (size_t j = 0; j < tensors[i].n; j++) s += (double)g[j] * (double)g[j];
        total += s;
    }
    return sqrt(total);
}

double ty__train_grad_norm(const struct ty_train_model *m) {
    return grad_norm(m->tensors, m->n_tensors, m->grads);
}

struct adam_job {
    const struct ty_train_optim *o;
    const struct ty_train_tensor *tensors;
    int n_tensors;
    float *params;
    const float *grads;
    float clip_coef, decay, b1c, b2, b2c, eps, neg_step, bc2_sqrt;
};

static void adam_tensors(void *arg, int ith, int nth) {
    const struct adam_job *j = arg;
    for (int i = 0; i < j->n_tensors; i++) {
        const struct ty_train_tensor *t = &j->tensors[i];
        int64_t b, e;
        ty__split_range((int64_t)t->n, ith, nth, &b, &e);
        float *p = j->params + t->offset;
        const float *g = j->grads + t->offset;
        float *mm = j->o->m + t->offset, *vv = j->o->v + t->offset;
        for (int64_t k = b; k < e; k++) {
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
    double norm = grad_norm(tensors, n_tensors, grads);
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
    ty__train_sync_weights(m);
}
