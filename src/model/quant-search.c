/*
 * quant-search.c - the error-minimising scale searches every quantiser is built on.
 *
 * Rounding x/d to the nearest level is optimal only once d is fixed, and d = max|x|/qmax (the naive choice) wastes
 * levels whenever one value sticks out. So each fit sweeps a spread of candidate scales around the naive one, gives
 * each candidate's integer levels their least-squares scale (and offset), keeps the candidate with the smallest
 * weighted squared error, and then alternates "round to the levels of this scale" with "least-squares scale for these
 * levels" while the error keeps falling. Sums are kept in double: blocks are short, and the error is read off the
 * sums in closed form, where float cancellation would pick the wrong candidate.
 */
#include "model/quant-impl.h"

/* ==== Storage of scales ==== */

ty_f16 ty__quant_scale_f16(float d) {
    const float f16_max = 65504.0f;
    if (d > f16_max) d = f16_max;
    if (d < -f16_max) d = -f16_max;
    return ty__f32_to_f16(d);
}

/* ==== Symmetric fit: x ~ d q ==== */

/* Levels for 1/d = iscale; returns the weighted sums a least-squares scale needs. */
static void sym_levels(int n, const float *x, const float *w, float iscale, int qmin, int qmax, int8_t *q,
                       double *sum_wxq, double *sum_wqq) {
    double sxq = 0, sqq = 0;
    for (int i = 0; i < n; i++) {
        int l = ty__quant_round(iscale * x[i], qmin, qmax);
        double wi = w ? w[i] : 1.0;
        q[i] = (int8_t)l;
        sxq += wi * x[i] * l;
        sqq += wi * (double)l * l;
    }
    *sum_wxq = sxq;
    *sum_wqq = sqq;
}

float ty__quant_fit_sym(int n, const float *x, const float *w, int qmin, int qmax, int8_t *q) {
    TY_ASSERT(n > 0 && n <= 256 && qmin < 0 && qmax > 0);
    float amax = 0, vmax = 0; /* largest magnitude and the signed value that has it */
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            vmax = x[i];
        }
    }
    if (!(amax > 1e-30f) || !isfinite(amax)) { /* all zero (or nothing finite to fit): every level 0 */
        memset(q, 0, (size_t)n);
        return 0;
    }

    /* For the least-squares scale d = sxq/sqq the error is sum(w x^2) - sxq^2/sqq, so the best levels are those with
     * the largest sxq^2/sqq. The extreme value goes to either end of the range (the negative end is one level wider,
     * so mapping it there, with a negative d, often wins) at 100% down to 70% of that end, plus half a level. */
    int8_t cand[256];
    double best_score = -1, best_sxq = 0, best_sqq = 1;
    const int n_steps = 16;
    for (int side = 0; side < 2; side++) {
        float end = side == 0 ? (float)qmin : (float)qmax;
        for (int k = 0; k < n_steps; k++) {
            float target = (end + (end < 0 ? -0.49f : 0.49f)) * (1.0f - 0.02f * (float)k);
            double sxq, sqq;
            sym_levels(n, x, w, target / vmax, qmin, qmax, cand, &sxq, &sqq);
            if (sqq <= 0) continue;
            double score = sxq * sxq / sqq;
            if (score > best_score) {
                best_score = score;
                best_sxq = sxq;
                best_sqq = sqq;
                memcpy(q, cand, (size_t)n);
            }
        }
    }
    if (best_score < 0) { /* cannot happen for a nonzero block: the extreme value always gets a nonzero level */
        memset(q, 0, (size_t)n);
        return 0;
    }

    /* Alternate: round to the levels of the least-squares scale, re-solve, while that helps. */
    float d = (float)(best_sxq / best_sqq);
    for (int iter = 0; iter < 4 && d != 0; iter++) {
        double sxq, sqq;
        sym_levels(n, x, w, 1.0f / d, qmin, qmax, cand, &sxq, &sqq);
        if (sqq <= 0) break;
        double score = sxq * sxq / sqq;
        if (score <= best_score * (1 + 1e-12)) break;
        best_score = score;
        memcpy(q, cand, (size_t)n);
        d = (float)(sxq / sqq);
    }
    return d;
}

/* ==== Affine fit: x ~ d q + m ==== */

struct affine_sums {
    double w, wx, wxx, wq, wqq, wqx;
};

static void affine_levels(int n, const float *x, const float *w, float offset, float iscale, int qmax, uint8_t *q,
                          struct affine_sums *s) {
    s->wq = s->wqq = s->wqx = 0;
    for (int i = 0; i < n; i++) {
        int l = ty__quant_round(iscale * (x[i] - offset), 0, qmax);
        double wi = w ? w[i] : 1.0;
        q[i] = (uint8_t)l;
        s->wq += wi * l;
        s->wqq += wi * (double)l * l;
        s->wqx += wi * (double)l * x[i];
    }
}

static double affine_error(const struct affine_sums *s, double d, double m) {
    return s->wxx - 2 * d * s->wqx - 2 * m * s->wx + d * d * s->wqq + 2 * d * m * s->wq + m * m * s->w;
}

/* Least-squares d, m for fixed levels under the constraints (d >= 0; m <= 0 when asked); returns the error. The
 * unconstrained optimum solves the 2x2 normal equations; when it is infeasible, or the levels are all equal (singular
 * system), the optimum lies on a boundary: m = 0 with its best d, or d = 0 with m the mean. */
static double affine_solve(const struct affine_sums *s, bool m_nonpositive, double *d_out, double *m_out) {
    double cand_d[3], cand_m[3];
    int n = 0;
    double det = s->w * s->wqq - s->wq * s->wq;
    if (det > 0) {
        cand_d[n] = (s->w * s->wqx - s->wq * s->wx) / det;
        cand_m[n++] = (s->wqq * s->wx - s->wq * s->wqx) / det;
    }
    if (s->wqq > 0) cand_d[n] = s->wqx / s->wqq, cand_m[n++] = 0;
    cand_d[n] = 0, cand_m[n++] = s->w > 0 ? s->wx / s->w : 0;
    double best = INFINITY;
    *d_out = 0, *m_out = 0;
    for (int i = 0; i < n; i++) {
        if (cand_d[i] < 0 || (m_nonpositive && cand_m[i] > 0)) continue;
        double e = affine_error(s, cand_d[i], cand_m[i]);
        if (e < best) best = e, *d_out = cand_d[i], *m_out = cand_m[i];
    }
    return best < INFINITY ? best : affine_error(s, 0, 0); /* d = 0, m = 0 is always feasible */
}

void ty__quant_fit_affine(int n, const float *x, const float *w, int qmax, bool m_nonpositive, uint8_t *q, float *d,
                          float *m) {
    TY_ASSERT(n > 0 && n <= 256 && qmax > 0);
    struct affine_sums s = {0};
    float xmin = x[0], xmax = x[0];
    for (int i = 0; i < n; i++) {
        double wi = w ? w[i] : 1.0;
        s.w += wi;
        s.wx += wi * x[i];
        s.wxx += wi * (double)x[i] * x[i];
        if (x[i] < xmin) xmin = x[i];
        if (x[i] > xmax) xmax = x[i];
    }
    if (m_nonpositive && xmin > 0) xmin = 0;
    if (!(xmax > xmin) || !isfinite(xmax - xmin)) { /* constant block (or nothing finite to fit) */
        memset(q, 0, (size_t)n);
        *d = 0;
        *m = isfinite(xmin) ? xmin : 0;
        return;
    }

    /* Candidates spread the range over qmax-1 .. qmax+1 levels (stretching it lets the extremes round inwards, which
     * can pay when they are isolated), each with its own least-squares d and m. */
    uint8_t cand[256];
    double best_err = INFINITY, best_d = 0, best_m = xmin;
    for (int k = -8; k <= 8; k++) {
        float iscale = ((float)qmax + 0.125f * (float)k) / (xmax - xmin);
        affine_levels(n, x, w, xmin, iscale, qmax, cand, &s);
        double dd, mm;
        double err = affine_solve(&s, m_nonpositive, &dd, &mm);
        if (err < best_err) {
            best_err = err;
            best_d = dd;
            best_m = mm;
            memcpy(q, cand, (size_t)n);
        }
    }

    /* Alternate rounding and re-solving while the error falls. */
    for (int iter = 0; iter < 4 && best_d > 0; iter++) {
        affine_levels(n, x, w, (float)best_m, (float)(1.0 / best_d), qmax, cand, &s);
        double dd, mm;
        double err = affine_solve(&s, m_nonpositive, &dd, &mm);
        if (!(err < best_err * (1 - 1e-12))) break;
        best_err = err;
        best_d = dd;
        best_m = mm;
        memcpy(q, cand, (size_t)n);
    }
    *d = (float)best_d;
    *m = (float)best_m;
}
