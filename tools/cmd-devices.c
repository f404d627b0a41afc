/*
 * cmd-devices.c - `tongyun devices`: the device catalogue. A table of every chip's memory, bandwidth, dense BF16 /
 * FP8 / INT8 rates, chip-to-chip link, host link and power; `--sources` (or `--json`) adds where every figure comes
 * from and which are estimates. The host CPU is measured by microbenchmarks first (about a second; `--no-measure`
 * skips it). Chips from a JSON file join the table with `--chips-file`.
 */
#include "cli.h"

#include "sim/sim.h"

#include <math.h>
#include <stdlib.h>

static void usage(FILE *f) {
    fprintf(f, "usage: tongyun devices [--json] [--sources] [--chips-file FILE] [--no-measure]\n"
               "\n"
               "Lists the chips the simulator knows, with the source of every figure.\n"
               "\n"
               "  --json             one JSON object: {\"chips\": [...]}, each figure {value, unit, source, estimate}\n"
               "  --sources          after the table, every figure of every chip with its source\n"
               "  --chips-file FILE  add chips from a JSON file (see data/devices/example-chips.json)\n"
               "  --no-measure       do not run the host microbenchmarks (the host's figures are then 0)\n"
               "  -h, --help         show this help\n"
               "\n"
               "Figures shown as ~N are estimates (not published); the source says how they were derived.\n"
               "Exit status: 0 on success, 1 when a chips file is unreadable or invalid, 2 on a usage error.\n");
}

static void cell(char *buf, size_t cap, const struct ty_sim_fig *f, const char *fmt) {
    if (!(f->v > 0)) {
        snprintf(buf, cap, "-");
        return;
    }
    char num[24];
    snprintf(num, sizeof num, fmt, f->v);
    snprintf(buf, cap, "%s%.22s", f->est ? "~" : "", num);
}

static void print_table(const struct ty_sim_catalog *cat) {
    printf("%-12s %8s %8s %8s %8s %8s  %-24s %-13s %6s %7s\n", "chip", "mem GiB", "BW GB/s", "BF16 TF", "FP8 TF",
           "INT8 TO", "chip-to-chip (GB/s)", "host link", "TDP W", "$/h");
    for (int i = 0; i < ty__sim_catalog_count(cat); i++) {
        const struct ty_sim_chip *c = ty__sim_catalog_at(cat, i);
        char mem[32], bw[32], bf[32], f8[32], i8[32], link[96], lk[32], tdp[32], price[32];
        cell(mem, sizeof mem, &c->mem_gb, "%.0f");
        cell(bw, sizeof bw, &c->mem_bw_gbs, "%.0f");
        cell(bf, sizeof bf, &c->bf16_tflops, c->bf16_tflops.v < 10 ? "%.2f" : "%.0f");
        cell(f8, sizeof f8, &c->fp8_tflops, "%.0f");
        cell(i8, sizeof i8, &c->int8_tops, "%.0f");
        cell(lk, sizeof lk, &c->link_gbs, "%.0f");
        cell(tdp, sizeof tdp, &c->tdp_w, "%.0f");
        cell(price, sizeof price, &c->price_hr, "%.2f");
        snprintf(link, sizeof link, "%s %s", c->link_name ? c->link_name : "", lk);
        printf("%-12s %8s %8s %8s %8s %8s  %-24.24s %-13.13s %6s %7s\n", c->name, mem, bw, bf, f8, i8, link,
               c->host_link_name ? c->host_link_name : "", tdp, price);
    }
    printf("\n~ = estimate (not published). Prices are assumptions unless a list price is cited; pass --price to "
           "tongyun sim.\nRun `tongyun devices --sources` for the source of every figure and the efficiency factors "
           "(MFU, MBU, ...).\n");
}

static void print_sources(const struct ty_sim_catalog *cat) {
    for (int i = 0; i < ty__sim_catalog_count(cat); i++) {
        const struct ty_sim_chip *c = ty__sim_catalog_at(cat, i);
        json_t *j = ty__sim_chip_json(c);
        printf("\n%s - %s\n", c->name, c->desc ? c->desc : "");
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v) {
            if (!json_is_object(v)) continue;
            json_t *val = json_object_get(v, "value"), *unit = json_object_get(v, "unit");
            printf("  %-14s %s%-10.4g %-7s %s\n", key, json_is_true(json_object_get(v, "estimate")) ? "~" : " ",
                   json_number_value(val), json_is_string(unit) ? json_string_value(unit) : "",
                   json_string_value(json_object_get(v, "source")));
        }
        json_decref(j);
    }
}

int ty_cmd_devices(int argc, char **argv) {
    bool as_json = false, sources = false, measure = true;
    const char *chips_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (ty_cli_is_help(argv[i])) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = true;
        } else if (!strcmp(argv[i], "--sources")) {
            sources = true;
        } else if (!strcmp(argv[i], "--no-measure")) {
            measure = false;
        } else if (!strcmp(argv[i], "--chips-file")) {
            if (!(chips_file = ty_cli_value(argc, argv, &i))) return 2;
        } else {
            fprintf(stderr, "tongyun devices: unknown argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    struct ty_sim_catalog *cat;
    enum ty_status st = ty__sim_catalog_init(measure, &cat);
    if (st != TY_OK) return ty_cli_fail("devices", st);
    if (chips_file && (st = ty__sim_catalog_load(cat, chips_file)) != TY_OK) {
        ty__sim_catalog_free(cat);
        return ty_cli_fail("devices", st);
    }
    if (as_json) {
        json_t *root = json_object(), *arr = json_array();
        for (int i = 0; i < ty__sim_catalog_count(cat); i++)
            json_array_append_new(arr, ty__sim_chip_json(ty__sim_catalog_at(cat, i)));
        json_object_set_new(root, "chips", arr);
        const struct ty_sim_host_bench *hb = ty__sim_catalog_host(cat);
        if (hb) {
            json_t *h = json_object();
            json_object_set_new(h, "threads", json_integer(hb->n_threads));
            json_object_set_new(h, "read_bw_gbs", json_real(hb->read_bw_gbs));
            json_object_set_new(h, "read_bw_1t_gbs", json_real(hb->read_bw_1t_gbs));
            json_object_set_new(h, "fma_gflops", json_real(hb->fma_gflops));
            json_object_set_new(h, "fma_gflops_1t", json_real(hb->fma_gflops_1t));
            json_object_set_new(h, "int8_gops", json_real(hb->int8_gops));
            json_object_set_new(h, "isa", json_string(hb->isa));
            json_object_set_new(h, "seconds", json_real(hb->seconds));
            json_object_set_new(root, "host_microbenchmarks", h);
        }
        char *s = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        json_decref(root);
        if (s) puts(s);
        free(s);
    } else {
        print_table(cat);
        if (sources) print_sources(cat);
    }
    ty__sim_catalog_free(cat);
    return 0;
}
