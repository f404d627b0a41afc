/*
 * sweep.c - latency against load: runs one configuration at a series of request rates and draws the result as a
 * hand-written SVG chart, two panels side by side (time to first token, time per output token), each with its p50
 * (solid) and p99 (dashed) against the rate. The y axes switch to a log scale when the values span more than two
 * decades, as they do once the cluster saturates and queues grow.
 */
#include "sim/sim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>

enum ty_status ty__sim_sweep(const struct ty_sim_config *c, const struct ty_sim_workload *w, const double *rates,
                             int n_rates, struct ty_sim_sweep_point *out) {
    if (n_rates < 1) return ty__error(TY_ERR_INVALID_ARG, "a sweep needs at least one rate");
    for (int i = 0; i < n_rates; i++) {
        struct ty_sim_workload wi = *w;
        wi.rate = rates[i];
        wi.trace = NULL;
        out[i].rate = rates[i];
        enum ty_status st = ty__sim_run(c, &wi, &out[i].r);
        if (st != TY_OK) return ty__error_prefix(st, "rate %g req/s", rates[i]);
    }
    return TY_OK;
}

/* ==== SVG ==== */

#define W       960
#define H       440
#define PANEL_W 400
#define PANEL_H 300
#define LEFT0   70
#define LEFT1   560
#define TOP     70

struct axis {
    double lo, hi;
    bool log;
};

static struct axis make_axis(const double *v, int n) {
    double lo = INFINITY, hi = 0;
    for (int i = 0; i < n; i++) {
        if (v[i] > 0 && v[i] < lo) lo = v[i];
        if (v[i] > hi) hi = v[i];
    }
    if (!(hi > 0)) return (struct axis){0, 1, false};
    if (!(lo < INFINITY)) lo = hi;
    struct axis a;
    a.log = hi / lo > 100;
    if (a.log) {
        a.lo = pow(10, floor(log10(lo)));
        a.hi = pow(10, ceil(log10(hi)));
    } else {
        a.lo = 0;
        double step = pow(10, floor(log10(hi)));
        a.hi = ceil(hi / step) * step;
        if (a.hi <= 0) a.hi = 1;
    }
    return a;
}

static double ymap(const struct axis *a, double v) {
    double f;
    if (a->log) {
        if (v < a->lo) v = a->lo;
        f = (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    } else {
        f = (v - a->lo) / (a->hi - a->lo);
    }
    return TOP + PANEL_H - f * PANEL_H;
}

static void esc(struct ty_buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            ty__buf_puts(b, "&lt;");
        else if (*s == '>')
            ty__buf_puts(b, "&gt;");
        else if (*s == '&')
            ty__buf_puts(b, "&amp;");
        else
            ty__buf_append(b, s, 1);
    }
}

static void panel(struct ty_buf *b, int left, const char *title, const double *x, const double *p50, const double *p99,
                  int n, double xmax, double slo) {
    double all[512];
    int m = 0;
    for (int i = 0; i < n && m < 510; i++) all[m++] = p50[i], all[m++] = p99[i];
    if (slo > 0 && m < 512) all[m++] = slo;
    struct axis ya = make_axis(all, m);
    ty__buf_printf(b, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#888'/>\n", left, TOP, PANEL_W,
                   PANEL_H);
    ty__buf_printf(b, "<text x='%d' y='%d' font-size='15' text-anchor='middle'>", left + PANEL_W / 2, TOP - 12);
    esc(b, title);
    ty__buf_puts(b, "</text>\n");
    /* y ticks */
    if (ya.log) {
        for (double v = ya.lo; v <= ya.hi * 1.0001; v *= 10) {
            double y = ymap(&ya, v);
            ty__buf_printf(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#eee'/>", left, y, left + PANEL_W, y);
            ty__buf_printf(b, "<text x='%d' y='%.1f' font-size='11' text-anchor='end'>%g</text>\n", left - 6, y + 4, v);
        }
    } else {
        for (int i = 0; i <= 5; i++) {
            double v = ya.lo + (ya.hi - ya.lo) * i / 5, y = ymap(&ya, v);
            ty__buf_printf(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#eee'/>", left, y, left + PANEL_W, y);
            ty__buf_printf(b, "<text x='%d' y='%.1f' font-size='11' text-anchor='end'>%.4g</text>\n", left - 6, y + 4,
                           v);
        }
    }
    /* x ticks */
    for (int i = 0; i <= 5; i++) {
        double v = xmax * i / 5, xx = left + PANEL_W * v / xmax;
        ty__buf_printf(b, "<text x='%.1f' y='%d' font-size='11' text-anchor='middle'>%.3g</text>\n", xx,
                       TOP + PANEL_H + 16, v);
    }
    ty__buf_printf(b, "<text x='%d' y='%d' font-size='12' text-anchor='middle'>request rate (req/s)</text>\n",
                   left + PANEL_W / 2, TOP + PANEL_H + 34);
    ty__buf_printf(b,
                   "<text x='%d' y='%d' font-size='12' text-anchor='middle' transform='rotate(-90 %d %d)'>ms%s"
                   "</text>\n",
                   left - 48, TOP + PANEL_H / 2, left - 48, TOP + PANEL_H / 2, ya.log ? " (log)" : "");
    if (slo > 0) {
        double y = ymap(&ya, slo);
        ty__buf_printf(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#c33' stroke-dasharray='2,4'/>", left, y,
                       left + PANEL_W, y);
        ty__buf_printf(b, "<text x='%d' y='%.1f' font-size='11' fill='#c33' text-anchor='end'>SLO %g ms</text>\n",
                       left + PANEL_W - 4, y - 4, slo);
    }
    const double *series[2] = {p50, p99};
    static const char *const style[2] = {"stroke='#1f5fb4' stroke-width='2'",
                                         "stroke='#e07b00' stroke-width='2' stroke-dasharray='6,4'"};
    static const char *const fill[2] = {"#1f5fb4", "#e07b00"};
    for (int s = 0; s < 2; s++) {
        ty__buf_puts(b, "<polyline fill='none' ");
        ty__buf_puts(b, style[s]);
        ty__buf_puts(b, " points='");
        for (int i = 0; i < n; i++)
            ty__buf_printf(b, "%.1f,%.1f ", left + PANEL_W * x[i] / xmax, ymap(&ya, series[s][i]));
        ty__buf_puts(b, "'/>\n");
        for (int i = 0; i < n; i++)
            ty__buf_printf(b, "<circle cx='%.1f' cy='%.1f' r='3' fill='%s'/>", left + PANEL_W * x[i] / xmax,
                           ymap(&ya, series[s][i]), fill[s]);
        ty__buf_puts(b, "\n");
    }
}

enum ty_status ty__sim_sweep_svg(const struct ty_sim_config *c, const struct ty_sim_sweep_point *pts, int n,
                                 const char *path) {
    if (n < 1 || n > 256) return ty__error(TY_ERR_INVALID_ARG, "an SVG chart takes 1 to 256 points");
    double x[256], t50[256], t99[256], p50[256], p99[256], xmax = 0;
    for (int i = 0; i < n; i++) {
        x[i] = pts[i].rate;
        t50[i] = pts[i].r.ttft_ms.p50;
        t99[i] = pts[i].r.ttft_ms.p99;
        p50[i] = pts[i].r.tpot_ms.p50;
        p99[i] = pts[i].r.tpot_ms.p99;
        if (x[i] > xmax) xmax = x[i];
    }
    if (!(xmax > 0)) xmax = 1;
    struct ty_buf b = {0};
    ty__buf_printf(&b,
                   "<?xml version='1.0' encoding='UTF-8'?>\n<svg xmlns='http://www.w3.org/2000/svg' width='%d' "
                   "height='%d' viewBox='0 0 %d %d' font-family='sans-serif'>\n<rect width='100%%' height='100%%' "
                   "fill='white'/>\n",
                   W, H, W, H);
    char title[512];
    snprintf(title, sizeof title, "%s on %d x %s (TP %d, PP %d, EP %d, %s): latency against load", c->model->name,
             c->chips, c->chip->name, c->tp, c->pp, c->ep, ty__sim_dtype_name(c->weight));
    ty__buf_printf(&b, "<text x='%d' y='24' font-size='16' text-anchor='middle' font-weight='bold'>", W / 2);
    esc(&b, title);
    ty__buf_puts(&b, "</text>\n");
    panel(&b, LEFT0, "time to first token", x, t50, t99, n, xmax, c->slo_ttft_ms);
    panel(&b, LEFT1, "time per output token", x, p50, p99, n, xmax, c->slo_tpot_ms);
    ty__buf_printf(&b,
                   "<g font-size='12'><line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#1f5fb4' stroke-width='2'/>"
                   "<text x='%d' y='%d'>p50</text><line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#e07b00' "
                   "stroke-width='2' stroke-dasharray='6,4'/><text x='%d' y='%d'>p99</text></g>\n",
                   W / 2 - 90, H - 14, W / 2 - 60, H - 14, W / 2 - 54, H - 10, W / 2 + 10, H - 14, W / 2 + 40, H - 14,
                   W / 2 + 46, H - 10);
    ty__buf_puts(&b, "</svg>\n");
    char *svg;
    TY_TRY(ty__buf_finish(&b, &svg));
    FILE *f = fopen(path, "wb");
    if (!f) {
        ty_free(svg);
        return ty__error(TY_ERR_IO, "%s: cannot create the chart: %s", path, strerror(errno));
    }
    size_t len = strlen(svg);
    bool ok = fwrite(svg, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    ty_free(svg);
    if (!ok) return ty__error(TY_ERR_IO, "%s: write failed", path);
    return TY_OK;
}
