/*
 * cmd-usage.c - `tongyun usage`: reports the server's usage ledger (SQLite) per API key per UTC day: requests,
 * prompt and completion tokens, and errors. Safe to run while the server writes (WAL).
 */
#include "cli.h"
#include "cloud/cloud-impl.h"

static void usage(FILE *f) {
    fprintf(f, "usage: tongyun usage --db PATH [--since YYYY-MM-DD] [--json]\n\n"
               "Prints the usage ledger of `tongyun serve --db PATH`: one row per key per day.\n"
               "  --since DAY   only days from DAY on\n"
               "  --json        one JSON object per line instead of a table\n");
}

int ty_cmd_usage(int argc, char **argv) {
    const char *db = NULL, *since = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--db")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            db = v;
        } else if (!strcmp(a, "--since")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            since = v;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else {
            fprintf(stderr, "tongyun usage: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!db) {
        fprintf(stderr, "tongyun usage: give the ledger with --db PATH\n");
        return 2;
    }
    struct ty_ledger *l;
    enum ty_status st = ty__ledger_open(db, &l);
    if (st == TY_OK) st = ty__ledger_report(l, since, json, stdout);
    ty__ledger_close(l);
    return st == TY_OK ? 0 : ty_cli_fail("usage", st);
}
