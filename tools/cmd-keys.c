/*
 * cmd-keys.c - `tongyun keys`: manages the API keys file the server reads. `create` prints a new key once and
 * stores only a salted SHA-256 of it with the key's limits; `list` shows names, limits and state; `revoke` disables a
 * key by name (the line stays, so usage history keeps its name).
 */
#include "cli.h"
#include "cloud/cloud-impl.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tongyun keys create --file KEYS [--name NAME] [--rpm N] [--tpm N] [--max-concurrent N]\n"
            "       tongyun keys list --file KEYS\n"
            "       tongyun keys revoke --file KEYS NAME\n\n"
            "create prints the new key on stdout, once: only its salted hash is stored. Limits are per key;\n"
            "0 (the default) means unlimited: --rpm requests per minute, --tpm tokens per minute (prompt plus\n"
            "completion), --max-concurrent requests at a time. Going over a limit gets HTTP 429 with Retry-After.\n");
}

int ty_cmd_keys(int argc, char **argv) {
    if (argc < 2 || ty_cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1], *file = NULL, *name = NULL, *target = NULL;
    long rpm = 0, tpm = 0, conc = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--file")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            file = v;
        } else if (!strcmp(a, "--name")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            name = v;
        } else if (!strcmp(a, "--rpm") || !strcmp(a, "--tpm") || !strcmp(a, "--max-concurrent")) {
            if (!(v = ty_cli_value(argc, argv, &i))) return 2;
            long *dst = !strcmp(a, "--rpm") ? &rpm : !strcmp(a, "--tpm") ? &tpm : &conc;
            if (!ty_cli_int(a, v, 0, 1L << 40, dst)) return 2;
        } else if (a[0] != '-' && !target) {
            target = a;
        } else {
            fprintf(stderr, "tongyun keys: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!file) {
        fprintf(stderr, "tongyun keys: give the keys file with --file KEYS\n");
        return 2;
    }
    struct ty_keyring ring;
    enum ty_status st = ty__keys_load(file, &ring);
    if (st != TY_OK) return ty_cli_fail("keys", st);
    int rc = 0;
    if (!strcmp(sub, "create")) {
        char auto_name[32], secret[96];
        if (!name) {
            snprintf(auto_name, sizeof auto_name, "key-%zu", ring.n + 1);
            name = auto_name;
        }
        st = ty__keys_create(&ring, name, rpm, tpm, conc, secret, sizeof secret);
        if (st == TY_OK) st = ty__keys_save(file, &ring);
        if (st == TY_OK) {
            printf("%s\n", secret);
            fprintf(stderr, "tongyun keys: created '%s'; the key is shown only this once\n", name);
        } else {
            rc = ty_cli_fail("keys", st);
        }
    } else if (!strcmp(sub, "list")) {
        printf("%-24s %10s %12s %14s %s\n", "name", "rpm", "tpm", "max_concurrent", "state");
        for (size_t i = 0; i < ring.n; i++) {
            const struct ty_key *k = &ring.keys[i];
            printf("%-24s %10lld %12lld %14lld %s\n", k->name, (long long)k->rpm, (long long)k->tpm,
                   (long long)k->max_concurrent, k->revoked ? "revoked" : "active");
        }
    } else if (!strcmp(sub, "revoke")) {
        if (!target) {
            fprintf(stderr, "tongyun keys revoke: give the NAME of the key to revoke\n");
            rc = 2;
        } else {
            bool found = false;
            for (size_t i = 0; i < ring.n; i++)
                if (!strcmp(ring.keys[i].name, target) && !ring.keys[i].revoked) ring.keys[i].revoked = found = true;
            if (!found) {
                fprintf(stderr, "tongyun keys revoke: no active key named '%s'\n", target);
                rc = 1;
            } else if ((st = ty__keys_save(file, &ring)) != TY_OK) {
                rc = ty_cli_fail("keys", st);
            } else {
                fprintf(stderr, "tongyun keys: revoked '%s' (a running server picks it up when restarted)\n", target);
            }
        }
    } else {
        fprintf(stderr, "tongyun keys: unknown subcommand '%s'\n\n", sub);
        usage(stderr);
        rc = 2;
    }
    ty__keys_free(&ring);
    return rc;
}
