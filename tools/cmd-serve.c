/*
 * cmd-serve.c - `tongyun serve`: the OpenAI-compatible HTTP server (src/cloud/). Parses flags into
 * struct ty_server_params and runs the server until SIGTERM, which drains in-flight requests first.
 */
#include "cli.h"
#include "cloud/cloud-impl.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tongyun serve [-m MODEL.gguf] [options]\n\n"
            "Serves the model over an OpenAI-compatible HTTP API: /v1/chat/completions, /v1/completions, /v1/models,\n"
            "/tokenize, /detokenize, /health and /metrics (Prometheus). One JSON line per request goes to stderr.\n\n"
            "options:\n"
            "  -m, --model PATH         GGUF model file (default: $TONGYUN_MODEL, else the bundled Tongyun-Mini)\n"
            "  --name NAME              model name clients send (default: the file name)\n"
            "  --host ADDR              address to bind (default 127.0.0.1: this machine only)\n"
            "  --port N                 port (default 8080; 0 = any free port, printed at start)\n"
            "  --api-keys FILE          keys file from `tongyun keys create`; without it the server is OPEN to\n"
            "                           anyone who can reach it\n"
            "  --db PATH                SQLite usage ledger (per key per day; default: none)\n"
            "  --max-seqs N             sequences decoded together (default 8)\n"
            "  --max-waiting N          requests queued before 429 (default 256)\n"
            "  --ctx N                  context length per sequence (default: the model's, at most 4096)\n"
            "  --kv-mem MB              KV cache budget (default: max-seqs full contexts)\n"
            "  --prefix-cache MB        KV kept for prefix reuse after requests end (default: every free KV block,\n"
            "                           evicted least recently used first; 0 = off)\n"
            "  --threads N              compute threads (default: one per core)\n"
            "  --lora FILE[:SCALE]      apply a LoRA adapter from `tongyun finetune` (SCALE default 1)\n"
            "  --read-timeout S         seconds a client has to send a whole request, or stay idle (default 30)\n"
            "  --io-timeout S           seconds of socket silence allowed while reading or writing (default 15)\n"
            "  --request-timeout S      deadline of one generation request (default 600)\n"
            "  --drain-timeout S        on SIGTERM, seconds in-flight requests get to finish (default 30)\n"
            "  --max-body BYTES         largest request body (default 8 MiB)\n"
            "  --max-conns N            open client connections; more wait in the kernel's queue (default 512)\n");
}

int ty_cmd_serve(int argc, char **argv) {
    struct ty_server_params p = ty__server_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long l;
        double d;
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            TY_CLI_VALUE();
            p.model_path = v;
        } else if (!strcmp(a, "--name")) {
            TY_CLI_VALUE();
            p.served_name = v;
        } else if (!strcmp(a, "--host")) {
            TY_CLI_VALUE();
            p.host = v;
        } else if (!strcmp(a, "--port")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, 65535, &l)) return 2;
            p.port = (int)l;
        } else if (!strcmp(a, "--api-keys")) {
            TY_CLI_VALUE();
            p.keys_path = v;
        } else if (!strcmp(a, "--db")) {
            TY_CLI_VALUE();
            p.db_path = v;
        } else if (!strcmp(a, "--max-seqs")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 1, 1024, &l)) return 2;
            p.max_seqs = (int32_t)l;
        } else if (!strcmp(a, "--max-waiting")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 1, 1 << 20, &l)) return 2;
            p.max_waiting = (int32_t)l;
        } else if (!strcmp(a, "--ctx")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 16, 1 << 24, &l)) return 2;
            p.n_ctx = (int32_t)l;
        } else if (!strcmp(a, "--kv-mem")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 1, 1 << 24, &l)) return 2;
            p.kv_mb = l;
        } else if (!strcmp(a, "--prefix-cache")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, 1 << 24, &l)) return 2;
            p.prefix_mb = l;
        } else if (!strcmp(a, "--threads")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, 1024, &l)) return 2;
            p.threads = (int)l;
        } else if (!strcmp(a, "--lora")) {
            TY_CLI_VALUE();
            struct ty_model_params mp = ty_model_default_params();
            if (!ty_cli_lora(a, argv[i], &mp)) return 2;
            p.lora = mp.lora;
            p.lora_scale = mp.lora_scale;
        } else if (!strcmp(a, "--read-timeout") || !strcmp(a, "--io-timeout") || !strcmp(a, "--request-timeout") ||
                   !strcmp(a, "--drain-timeout")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0.1, 86400, &d)) return 2;
            double *dst = !strcmp(a, "--read-timeout")      ? &p.read_timeout
                          : !strcmp(a, "--io-timeout")      ? &p.io_timeout
                          : !strcmp(a, "--request-timeout") ? &p.request_timeout
                                                            : &p.drain_timeout;
            *dst = d;
        } else if (!strcmp(a, "--max-body")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 1024, 1L << 30, &l)) return 2;
            p.max_body = l;
        } else if (!strcmp(a, "--max-conns")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 1, 1 << 20, &l)) return 2;
            p.max_conns = (int32_t)l;
        } else {
            fprintf(stderr, "tongyun serve: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!p.model_path && !(p.model_path = ty_cli_default_model("serve"))) return 2;
    enum ty_status st = ty__server_run(&p);
    return st == TY_OK ? 0 : ty_cli_fail("serve", st);
}
