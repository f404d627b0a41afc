/*
 * cmd-plan.c - `tongyun plan`: how many chips of which kind, and in what parallel shape, serve a model at a target
 * request rate within TTFT and TPOT objectives, and what that costs. Prints the cheapest configurations ranked, the
 * Pareto front of throughput per chip against per-user speed, and with `--emit serve` the `tongyun serve` command
 * line for the cheapest configuration that fits on one host.
 */
#include "cli.h"

#include "sim/sim.h"

#include <math.h>
#include <stdlib.h>
#include <strings.h>

#define DEFAULT_TOP 10

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tongyun plan --model PRESET|FILE.gguf --rate QPS --ttft-ms X --tpot-ms Y [--chips-from LIST]\n"
        "                    [--prompt-len L] [--output-len L] [--precision P] [--max-chips N] [--top N]\n"
        "                    [--requests N] [--json] [--emit serve]\n"
        "\n"
        "Searches chip x count x parallelism (TP, PP, EP) for the cheapest deployments that serve QPS requests per\n"
        "second with p90 TTFT <= X ms and p90 TPOT <= Y ms, by simulating one replica of each shape.\n"
        "\n"
        "  --chips-from LIST   comma-separated chips to try (default: every accelerator in the catalogue)\n"
        "  --prompt-len L      prompt lengths: N, A-B, lognormal:MEAN:CV, exp:MEAN (default 1024)\n"
        "  --output-len L      output lengths, the same forms (default 256)\n"
        "  --precision P       weight precision: bf16 (default), fp8, int8, int4\n"
        "  --max-chips N       largest deployment considered (default 10000)\n"
        "  --top N             configurations shown (default %d)\n"
        "  --requests N        requests per probe simulation (default 300)\n"
        "  --chips-file FILE   add chips from a JSON file\n"
        "  --json              one JSON object: {\"configs\": [...], \"pareto\": [...]}\n"
        "  --emit serve        print only the `tongyun serve` command for the cheapest one-host configuration\n"
        "\n"
        "Exit status: 0 on success, 1 when nothing meets the objectives (or no config fits on one host with\n"
        "--emit serve), 2 on a usage error.\n",
        DEFAULT_TOP);
}

static json_t *entry_json(const struct ty_sim_plan_entry *e) {
    json_t *o = json_object();
    json_object_set_new(o, "chip", json_string(e->chip->name));
    json_object_set_new(o, "tp", json_integer(e->tp));
    json_object_set_new(o, "pp", json_integer(e->pp));
    json_object_set_new(o, "ep", json_integer(e->ep));
    json_object_set_new(o, "precision", json_string(ty__sim_dtype_name(e->weight)));
    json_object_set_new(o, "replica_chips", json_integer(e->inst_chips));
    json_object_set_new(o, "replicas", json_integer(e->n_inst));
    json_object_set_new(o, "chips", json_integer(e->chips));
    json_object_set_new(o, "cost_per_hour", json_real(e->cost_hr));
    json_object_set_new(o, "rate_per_replica", json_real(e->rate_per_inst));
    json_object_set_new(o, "tok_s_per_chip", json_real(e->tok_s_per_chip));
    json_object_set_new(o, "user_tok_s", json_real(e->user_tok_s));
    json_object_set_new(o, "ttft_p99_ms", json_real(e->ttft_p99_ms));
    json_object_set_new(o, "tpot_p99_ms", json_real(e->tpot_p99_ms));
    json_object_set_new(o, "pareto", json_boolean(e->pareto));
    return o;
}

/* Picks candidate chips: the list given, or every accelerator (the host CPU only when asked for). */
static enum ty_status pick_chips(const struct ty_sim_catalog *cat, const char *list, const struct ty_sim_chip ***out,
                                 int *n) {
    int cap = ty__sim_catalog_count(cat) + 64;
    const struct ty_sim_chip **v = ty__calloc((size_t)cap, sizeof *v);
    if (!v) return ty__error(TY_ERR_NO_MEMORY, "out of memory");
    *n = 0;
    if (!list) {
        for (int i = 0; i < ty__sim_catalog_count(cat); i++) {
            const struct ty_sim_chip *c = ty__sim_catalog_at(cat, i);
            if (c->kind == TY_SIM_CHIP_CPU) continue;
            bool dup = false; /* a file's chip replaces a built-in one of the same name */
            for (int j = 0; j < *n; j++) dup |= !strcasecmp(v[j]->name, c->name);
            const struct ty_sim_chip *latest;
            if (!dup && ty__sim_catalog_find(cat, c->name, &latest) == TY_OK) v[(*n)++] = latest;
        }
    } else {
        char *copy = ty__strdup(list);
        if (!copy) {
            ty_free(v);
            return ty__error(TY_ERR_NO_MEMORY, "out of memory");
        }
        char *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ') tok++;
            if (!*tok) continue;
            const struct ty_sim_chip *c;
            enum ty_status st = ty__sim_catalog_find(cat, tok, &c);
            if (st != TY_OK || *n == cap) {
                ty_free(copy);
                ty_free(v);
                return st != TY_OK ? st : ty__error(TY_ERR_INVALID_ARG, "--chips-from lists too many chips");
            }
            v[(*n)++] = c;
        }
        ty_free(copy);
        if (*n == 0) {
            ty_free(v);
            return ty__error(TY_ERR_INVALID_ARG, "--chips-from names no chips");
        }
    }
    *out = v;
    return TY_OK;
}

/* Longest request a length distribution gives in practice (lognormal: mean + 4 standard deviations). */
static double dist_max(const struct ty_sim_dist *d) {
    switch (d->kind) {
    case TY_SIM_DIST_UNIFORM:
        return d->b;
    case TY_SIM_DIST_LOGNORMAL:
        return d->a * (1 + 4 * d->b);
    case TY_SIM_DIST_EXP:
        return d->a * 5;
    default:
        return d->a;
    }
}

/* The `tongyun serve` command for the cheapest configuration on one host. Our server runs one replica on one machine
 * today (no tensor, pipeline or expert parallelism flags), so only a single-chip replica becomes a command line; the
 * parallel shape of larger replicas is printed to stderr for the record. */
static int emit_serve(const struct ty_sim_plan *pl, const struct ty_sim_plan_query *q, const char *model_arg,
                      const struct ty_sim_model *m) {
    for (int i = 0; i < pl->n; i++) {
        const struct ty_sim_plan_entry *e = &pl->e[i];
        if (e->chips > e->chip->node_chips) continue;
        const char *path = model_arg;
        char buf[128];
        size_t n = strlen(model_arg);
        if (!(n > 5 && !strcasecmp(model_arg + n - 5, ".gguf"))) {
            snprintf(buf, sizeof buf, "%s.gguf", m->name);
            path = buf;
        }
        long ctx = (long)ceil(dist_max(&q->prompt) + dist_max(&q->output));
        if (m->n_ctx_train > 0 && ctx > m->n_ctx_train) ctx = m->n_ctx_train;
        bool cpu = e->chip->kind == TY_SIM_CHIP_CPU;
        int max_seqs = cpu ? 8 : 256;
        printf("tongyun serve --model %s --max-seqs %d --ctx %ld\n", path, max_seqs, ctx);
        fprintf(stderr,
                "tongyun plan: %d replica%s of %d x %s (TP %d, PP %d, EP %d) on one host, $%.2f/h; the server "
                "runs one replica per process%s; %s\n",
                e->n_inst, e->n_inst == 1 ? "" : "s", e->inst_chips, e->chip->name, e->tp, e->pp, e->ep, e->cost_hr,
                e->inst_chips > 1 ? " and has no TP/PP/EP flags yet" : "",
                path == buf ? "replace the model path with your GGUF file" : "model path as given");
        return 0;
    }
    if (pl->n > 0)
        fprintf(stderr, "tongyun plan: no configuration fits on one host; the cheapest needs %d x %s (%d per node)\n",
                pl->e[0].chips, pl->e[0].chip->name, pl->e[0].chip->node_chips);
    else
        fprintf(stderr, "tongyun plan: no configuration meets the objectives\n");
    return 1;
}

int ty_cmd_plan(int argc, char **argv) {
    const char *model = NULL, *chips_from = NULL, *chips_file = NULL, *prompt = "1024", *output = "256";
    double rate = 0, ttft = 0, tpot = 0;
    long top = DEFAULT_TOP, max_chips = 10000, requests = 300;
    bool as_json = false, emit = false;
    enum ty_sim_dtype weight = TY_SIM_DT_BF16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            as_json = true;
        } else if (!strcmp(a, "--model") || !strcmp(a, "-m")) {
            if (!(model = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--chips-from")) {
            if (!(chips_from = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--chips-file")) {
            if (!(chips_file = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--prompt-len")) {
            if (!(prompt = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--output-len")) {
            if (!(output = ty_cli_value(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--rate")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_float(a, v, 1e-9, 1e12, &rate)) return 2;
        } else if (!strcmp(a, "--ttft-ms")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_float(a, v, 1e-6, 1e12, &ttft)) return 2;
        } else if (!strcmp(a, "--tpot-ms")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_float(a, v, 1e-6, 1e12, &tpot)) return 2;
        } else if (!strcmp(a, "--top")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_int(a, v, 1, 100000, &top)) return 2;
        } else if (!strcmp(a, "--max-chips")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_int(a, v, 1, 1000000, &max_chips)) return 2;
        } else if (!strcmp(a, "--requests")) {
            if (!(v = ty_cli_value(argc, argv, &i)) || !ty_cli_int(a, v, 10, 1000000, &requests)) return 2;
        } else if (!strcmp(a, "--precision")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            if (!ty__sim_dtype_parse(v, &weight) || weight == TY_SIM_DT_F32) {
                fprintf(stderr, "tongyun plan: --precision expects bf16, fp8, int8 or int4, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--emit")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            if (strcmp(v, "serve")) {
                fprintf(stderr, "tongyun plan: --emit knows only 'serve', got '%s'\n", v);
                return 2;
            }
            emit = true;
        } else {
            fprintf(stderr, "tongyun plan: unknown argument '%s' (see tongyun plan --help)\n", a);
            return 2;
        }
    }
    if (!model || !(rate > 0) || !(ttft > 0) || !(tpot > 0)) {
        fprintf(stderr, "tongyun plan: --model, --rate, --ttft-ms and --tpot-ms are required (see --help)\n");
        return 2;
    }
    struct ty_sim_catalog *cat;
    bool host_asked = chips_from && (strstr(chips_from, "host") || strstr(chips_from, "cpu"));
    enum ty_status st = ty__sim_catalog_init(host_asked, &cat);
    if (st != TY_OK) return ty_cli_fail("plan", st);
    struct ty_sim_model m;
    const struct ty_sim_chip **chips = NULL;
    struct ty_sim_plan pl = {0};
    struct ty_sim_plan_query q = {0};
    int n_chips = 0, rc = 0;
    if (chips_file && (st = ty__sim_catalog_load(cat, chips_file)) != TY_OK) goto fail;
    if ((st = ty__sim_model_resolve(model, &m)) != TY_OK) goto fail;
    if ((st = pick_chips(cat, chips_from, &chips, &n_chips)) != TY_OK) goto fail;
    if ((st = ty__sim_dist_parse(prompt, &q.prompt)) != TY_OK) goto fail;
    if ((st = ty__sim_dist_parse(output, &q.output)) != TY_OK) goto fail;
    q.model = &m;
    q.rate = rate;
    q.slo_ttft_ms = ttft;
    q.slo_tpot_ms = tpot;
    q.chips = chips;
    q.n_chips = n_chips;
    q.weight = weight;
    q.max_chips = (int)max_chips;
    q.requests = (int)requests;
    if ((st = ty__sim_plan_search(&q, &pl)) != TY_OK) goto fail;
    if (emit) {
        rc = emit_serve(&pl, &q, model, &m);
    } else if (as_json) {
        json_t *root = json_object(), *cfgs = json_array(), *front = json_array();
        for (int i = 0; i < pl.n; i++) {
            if (i < top) json_array_append_new(cfgs, entry_json(&pl.e[i]));
            if (pl.e[i].pareto) json_array_append_new(front, entry_json(&pl.e[i]));
        }
        json_object_set_new(root, "model", json_string(m.name));
        json_object_set_new(root, "rate", json_real(rate));
        json_object_set_new(root, "ttft_ms", json_real(ttft));
        json_object_set_new(root, "tpot_ms", json_real(tpot));
        json_object_set_new(root, "tried", json_integer(pl.n_tried));
        json_object_set_new(root, "rejected", json_integer(pl.n_rejected));
        json_object_set_new(root, "configs", cfgs);
        json_object_set_new(root, "pareto", front);
        char *s = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        json_decref(root);
        if (s) puts(s);
        free(s);
        if (pl.n == 0) rc = 1;
    } else {
        printf("tongyun plan: %s at %.4g req/s, p90 TTFT <= %g ms, p90 TPOT <= %g ms, prompt %s, output %s, %s\n",
               m.name, rate, ttft, tpot, prompt, output, ty__sim_dtype_name(weight));
        printf("  %d shapes tried, %d impossible or unable to meet the objectives\n\n", pl.n_tried, pl.n_rejected);
        if (pl.n == 0) {
            printf("  nothing meets the objectives: relax --ttft-ms/--tpot-ms, allow more chips or try more chips\n");
            rc = 1;
        } else {
            printf("  %4s %-12s %3s %3s %3s %8s %6s %10s %10s %10s %9s %9s %9s %s\n", "rank", "chip", "TP", "PP", "EP",
                   "replicas", "chips", "$/hour", "req/s/rep", "tok/s/chip", "user t/s", "TTFT p99", "TPOT p99",
                   "pareto");
            for (int i = 0; i < pl.n && i < top; i++) {
                const struct ty_sim_plan_entry *e = &pl.e[i];
                printf("  %4d %-12s %3d %3d %3d %8d %6d %10.2f %10.3g %10.1f %9.1f %9.0f %9.1f %s\n", i + 1,
                       e->chip->name, e->tp, e->pp, e->ep, e->n_inst, e->chips, e->cost_hr, e->rate_per_inst,
                       e->tok_s_per_chip, e->user_tok_s, e->ttft_p99_ms, e->tpot_p99_ms, e->pareto ? "*" : "");
            }
            printf("\n  Pareto front (output tok/s per chip against per-user tok/s):\n");
            for (int i = 0; i < pl.n; i++)
                if (pl.e[i].pareto)
                    printf("    %-12s TP %d PP %d EP %d: %.1f tok/s/chip at %.1f tok/s per user\n", pl.e[i].chip->name,
                           pl.e[i].tp, pl.e[i].pp, pl.e[i].ep, pl.e[i].tok_s_per_chip, pl.e[i].user_tok_s);
            printf("\n  Costs use the catalogue's card-hour prices (mostly assumptions; see tongyun devices).\n");
        }
    }
    ty__sim_plan_free(&pl);
    ty_free(chips);
    ty__sim_catalog_free(cat);
    return rc;
fail:
    rc = ty_cli_fail("plan", st);
    ty__sim_plan_free(&pl);
    ty_free(chips);
    ty__sim_catalog_free(cat);
    return rc;
}
