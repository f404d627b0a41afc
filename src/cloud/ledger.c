/*
 * ledger.c - the usage ledger: one SQLite database in WAL mode with a row per API key per UTC day (requests, prompt
 * and completion tokens, errors). Each request is one committed transaction with synchronous=FULL, so a crash or
 * kill -9 loses nothing that was committed; WAL keeps `tongyun usage` readers from blocking the server.
 */
#include "cloud/cloud-impl.h"

#include <sqlite3.h>
#include <stdio.h>
#include <time.h>

struct ty_ledger {
    sqlite3 *db;
    sqlite3_stmt *add;
    pthread_mutex_t mu;
};

static enum ty_status db_fail(sqlite3 *db, const char *what) {
    return ty__error(TY_ERR_IO, "usage ledger: %s: %s", what, db ? sqlite3_errmsg(db) : "cannot open");
}

enum ty_status ty__ledger_open(const char *path, struct ty_ledger **out) {
    *out = NULL;
    struct ty_ledger *l = ty__calloc(1, sizeof *l);
    if (!l) return ty__error(TY_ERR_NO_MEMORY, "out of memory opening the ledger");
    pthread_mutex_init(&l->mu, NULL);
    enum ty_status st = TY_OK;
    if (sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
        SQLITE_OK) {
        st = db_fail(l->db, path);
    } else {
        sqlite3_busy_timeout(l->db, 5000);
        const char *schema = "PRAGMA journal_mode=WAL;"
                             "PRAGMA synchronous=FULL;"
                             "CREATE TABLE IF NOT EXISTS usage ("
                             " key TEXT NOT NULL, day TEXT NOT NULL,"
                             " requests INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,"
                             " completion_tokens INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,"
                             " PRIMARY KEY (key, day));";
        char *msg = NULL;
        if (sqlite3_exec(l->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
            st = ty__error(TY_ERR_IO, "usage ledger %s: %s", path, msg ? msg : "schema failed");
            sqlite3_free(msg);
        } else if (sqlite3_prepare_v2(l->db,
                                      "INSERT INTO usage (key, day, requests, prompt_tokens, completion_tokens, "
                                      "errors) VALUES (?1, ?2, 1, ?3, ?4, ?5) ON CONFLICT (key, day) DO UPDATE SET "
                                      "requests = requests + 1, prompt_tokens = prompt_tokens + ?3, "
                                      "completion_tokens = completion_tokens + ?4, errors = errors + ?5",
                                      -1, &l->add, NULL) != SQLITE_OK) {
            st = db_fail(l->db, "prepare");
        }
    }
    if (st != TY_OK) {
        ty__ledger_close(l);
        return st;
    }
    *out = l;
    return TY_OK;
}

void ty__ledger_close(struct ty_ledger *l) {
    if (!l) return;
    sqlite3_finalize(l->add);
    sqlite3_close(l->db);
    pthread_mutex_destroy(&l->mu);
    ty_free(l);
}

enum ty_status ty__ledger_add(struct ty_ledger *l, const char *key, int64_t prompt_tokens, int64_t completion_tokens,
                              bool error) {
    char day[16];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    pthread_mutex_lock(&l->mu);
    sqlite3_reset(l->add);
    sqlite3_bind_text(l->add, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(l->add, 2, day, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(l->add, 3, prompt_tokens);
    sqlite3_bind_int64(l->add, 4, completion_tokens);
    sqlite3_bind_int(l->add, 5, error ? 1 : 0);
    int rc = sqlite3_step(l->add);
    sqlite3_reset(l->add);
    pthread_mutex_unlock(&l->mu);
    return rc == SQLITE_DONE ? TY_OK : db_fail(l->db, "recording usage");
}

enum ty_status ty__ledger_report(struct ty_ledger *l, const char *since_day, bool json, void *file) {
    FILE *f = file;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(l->db,
                           "SELECT key, day, requests, prompt_tokens, completion_tokens, errors FROM usage "
                           "WHERE day >= ?1 ORDER BY day, key",
                           -1, &q, NULL) != SQLITE_OK)
        return db_fail(l->db, "query");
    sqlite3_bind_text(q, 1, since_day ? since_day : "", -1, SQLITE_TRANSIENT);
    if (!json)
        fprintf(f, "%-24s %-10s %10s %14s %18s %8s\n", "key", "day", "requests", "prompt_tokens", "completion_tokens",
                "errors");
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(q, 0), *day = (const char *)sqlite3_column_text(q, 1);
        long long r = sqlite3_column_int64(q, 2), p = sqlite3_column_int64(q, 3), c = sqlite3_column_int64(q, 4),
                  e = sqlite3_column_int64(q, 5);
        if (json) {
            json_t *o =
                json_pack("{s:s,s:s,s:I,s:I,s:I,s:I}", "key", key, "day", day, "requests", (json_int_t)r,
                          "prompt_tokens", (json_int_t)p, "completion_tokens", (json_int_t)c, "errors", (json_int_t)e);
            char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
            if (s) fprintf(f, "%s\n", s);
            free(s);
            json_decref(o);
        } else {
            fprintf(f, "%-24s %-10s %10lld %14lld %18lld %8lld\n", key, day, r, p, c, e);
        }
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? TY_OK : db_fail(l->db, "query");
}
