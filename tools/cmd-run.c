/*
 * cmd-run.c - `tongyun run`: generate text from a prompt. The prompt (optionally wrapped in Qwen's chat format) is
 * tokenized with special tokens recognised, prefilled in batches, and continued token by token with the sampler
 * until -n tokens, an end-of-generation token or a full context. Generated text streams to stdout as it is made;
 * logs and speed figures go to stderr, so stdout carries only the answer (or, with --json, one JSON object).
 */
#include "cli.h"

#include <jansson.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(
        f, "usage: tongyun run [-m MODEL] -p PROMPT [options]\n"
           "\n"
           "Generates a continuation of PROMPT with a GGUF model (qwen2, qwen3). Only the generated text goes to\n"
           "stdout, streamed as it is produced; progress and speed go to stderr.\n"
           "\n"
           "  -m, --model FILE           GGUF model file (default: $TONGYUN_MODEL, else the bundled Tongyun-Mini)\n"
           "  -p, --prompt TEXT          the prompt (special tokens such as <|im_start|> are recognised)\n"
           "  -n, --n-predict N          most tokens to generate (default 128); stops earlier at an end token\n"
           "      --temp T               sampling temperature (default 0.8); 0 = greedy\n"
           "      --top-k K              keep the K most likely tokens (default 40; 0 = off)\n"
           "      --top-p P              nucleus sampling (default 0.95; 1 = off)\n"
           "      --min-p P              drop tokens below P x the top probability (default 0.05; 0 = off)\n"
           "      --repeat-penalty R     penalise recent tokens (default 1 = off)\n"
           "      --presence-penalty P   subtract P from recent tokens' logits (default 0)\n"
           "      --frequency-penalty F  subtract F per occurrence (default 0)\n"
           "      --seed S               random seed (default: from the clock; printed to stderr)\n"
           "      --ctx N                context length in tokens (default: the model's, at most 4096)\n"
           "      --threads N            CPU threads (default: one per core)\n"
           "      --lora FILE[:SCALE]    apply a LoRA adapter from `tongyun finetune` (SCALE default 1)\n"
           "      --kv-type f16|f32      KV cache precision (default f16)\n"
           "      --chat                 wrap the prompt as a user message of Qwen's chat format\n"
           "      --think, --no-think    with --chat: ask for / suppress the thinking block\n"
           "      --system TEXT          with --chat: a system message\n"
           "      --json                 print only {\"prompt_ids\": [...], \"ids\": [...], \"text\": \"...\"} at the\n"
           "                             end (ids and text exclude the end-of-generation token)\n"
           "  -h, --help                 this help\n");
}

struct run_opts {
    const char *model, *prompt, *system;
    long n_predict, top_k, ctx, threads;
    double temp, top_p, min_p, repeat, presence, frequency;
    uint64_t seed;
    bool seed_set, chat, json;
    enum ty_chat_thinking thinking;
    enum ty_type kv_type;
    struct ty_model_params mp; /* --lora */
};

/* 0: parsed; 1: --help shown; 2: usage error (message printed). */
static int parse(int argc, char **argv, struct run_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        double d;
        long l;
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            TY_CLI_VALUE();
            o->model = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            TY_CLI_VALUE();
            o->prompt = v;
        } else if (!strcmp(a, "--system")) {
            TY_CLI_VALUE();
            o->system = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, 1L << 30, &o->n_predict)) return 2;
        } else if (!strcmp(a, "--top-k")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, 1L << 30, &o->top_k)) return 2;
        } else if (!strcmp(a, "--ctx")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 1, INT32_MAX, &o->ctx)) return 2;
        } else if (!strcmp(a, "--threads")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 1, 1024, &o->threads)) return 2;
        } else if (!strcmp(a, "--lora")) {
            TY_CLI_VALUE();
            if (!ty_cli_lora(a, argv[i], &o->mp)) return 2;
        } else if (!strcmp(a, "--seed")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, 0x7fffffffffffffffL, &l)) return 2;
            o->seed = (uint64_t)l;
            o->seed_set = true;
        } else if (!strcmp(a, "--temp")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0, 100, &o->temp)) return 2;
        } else if (!strcmp(a, "--top-p")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0, 1, &o->top_p)) return 2;
        } else if (!strcmp(a, "--min-p")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0, 1, &o->min_p)) return 2;
        } else if (!strcmp(a, "--repeat-penalty")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0.01, 100, &o->repeat)) return 2;
        } else if (!strcmp(a, "--presence-penalty")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, -100, 100, &d)) return 2;
            o->presence = d;
        } else if (!strcmp(a, "--frequency-penalty")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, -100, 100, &d)) return 2;
            o->frequency = d;
        } else if (!strcmp(a, "--kv-type")) {
            TY_CLI_VALUE();
            if (!strcmp(v, "f16")) {
                o->kv_type = TY_TYPE_F16;
            } else if (!strcmp(v, "f32")) {
                o->kv_type = TY_TYPE_F32;
            } else {
                fprintf(stderr, "tongyun run: --kv-type expects f16 or f32, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--chat")) {
            o->chat = true;
        } else if (!strcmp(a, "--think")) {
            o->thinking = TY_CHAT_THINKING_ON;
        } else if (!strcmp(a, "--no-think")) {
            o->thinking = TY_CHAT_THINKING_OFF;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else {
            fprintf(stderr, "tongyun run: unknown option '%s' (see tongyun run --help)\n", a);
            return 2;
        }
    }
    if (!o->prompt) {
        fprintf(stderr, "tongyun run: -p PROMPT is required (see tongyun run --help)\n");
        return 2;
    }
    if (!o->model && !(o->model = ty_cli_default_model("run"))) return 2;
    if (!o->chat && (o->system || o->thinking != TY_CHAT_THINKING_DEFAULT)) {
        fprintf(stderr, "tongyun run: --system, --think and --no-think need --chat\n");
        return 2;
    }
    return 0;
}

/* Tokenizes `text` (special tokens recognised) into a fresh array (ty_free). */
static enum ty_status tokenize(const struct ty_tokenizer *tok, const char *text, int32_t **ids, size_t *n) {
    size_t len = strlen(text), cap = len + 16;
    *ids = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *buf = ty__malloc(cap * sizeof(int32_t));
        if (!buf) return ty__error(TY_ERR_NO_MEMORY, "out of memory tokenizing %zu bytes", len);
        enum ty_status st = ty_tokenize(tok, text, len, TY_TOKENIZE_SPECIAL, buf, cap, n);
        if (st == TY_OK) {
            *ids = buf;
            return TY_OK;
        }
        ty_free(buf);
        if (st != TY_ERR_BUFFER_TOO_SMALL) return st;
        cap = *n;
    }
    return ty__error(TY_ERR_INTERNAL, "the tokenizer kept asking for a larger buffer");
}

/* Emits the text of one token: streamed to stdout, or collected for --json. */
struct out_text {
    struct ty_buf text;
    bool stream;
    char small[256];
};

static enum ty_status emit(struct out_text *o, const char *s, size_t n) {
    if (o->stream) {
        fwrite(s, 1, n, stdout);
        fflush(stdout);
    } else {
        ty__buf_append(&o->text, s, n);
    }
    return TY_OK;
}

static enum ty_status emit_token(struct out_text *o, const struct ty_tokenizer *tok, struct ty_detokenizer *dt,
                                 int32_t id) {
    size_t n, len = 0;
    ty_token_bytes(tok, id, &len);
    char *buf = o->small;
    size_t cap = sizeof o->small;
    if (len + 16 > cap) {
        cap = len + 16;
        buf = ty__malloc(cap);
        if (!buf) return ty__error(TY_ERR_NO_MEMORY, "out of memory decoding token %d", id);
    }
    enum ty_status st = ty_detokenize_push(tok, dt, id, buf, cap, &n);
    if (st == TY_OK) emit(o, buf, n);
    if (buf != o->small) ty_free(buf);
    return st;
}

static json_t *ids_json(const int32_t *ids, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

struct session {
    struct ty_model *model;
    struct ty_context *ctx;
    struct ty_sampler *smp;
    char *rendered;
    int32_t *prompt_ids, *gen_ids;
    float *logits;
    struct out_text out;
};

static void session_free(struct session *s) {
    ty_free(s->logits);
    ty_free(s->gen_ids);
    ty_free(s->prompt_ids);
    ty_free(s->rendered);
    ty__buf_free(&s->out.text);
    ty_sampler_free(s->smp);
    ty_context_free(s->ctx);
    ty_model_free(s->model);
}

static int generate(const struct run_opts *o, struct session *s) {
    struct ty_model_params mp = o->mp;
    mp.n_threads = (int)o->threads;
    enum ty_status st = ty_model_load(o->model, &mp, &s->model);
    if (st != TY_OK) return ty_cli_fail("run", st);
    const struct ty_tokenizer *tok = ty_model_tokenizer(s->model);
    int32_t n_vocab = ty_model_n_vocab(s->model);

    const char *text = o->prompt;
    if (o->chat) {
        struct ty_chat_message msgs[2];
        size_t n_msgs = 0;
        if (o->system) msgs[n_msgs++] = (struct ty_chat_message){"system", o->system, NULL, NULL};
        msgs[n_msgs++] = (struct ty_chat_message){"user", o->prompt, NULL, NULL};
        struct ty_chat_render_params rp = {NULL, true, o->thinking};
        st = ty_chat_render(msgs, n_msgs, &rp, &s->rendered);
        if (st != TY_OK) return ty_cli_fail("run", st);
        text = s->rendered;
    }
    size_t n_prompt;
    st = tokenize(tok, text, &s->prompt_ids, &n_prompt);
    if (st != TY_OK) {
        ty__error_prefix(st, "the prompt");
        return ty_cli_fail("run", st);
    }
    if (n_prompt == 0) {
        fprintf(stderr, "tongyun run: the prompt is empty; there is nothing to continue\n");
        return 1;
    }

    struct ty_context_params cp = ty_context_default_params();
    cp.n_ctx = (int32_t)o->ctx;
    cp.kv_type = o->kv_type;
    st = ty_context_init(s->model, &cp, &s->ctx);
    if (st != TY_OK) return ty_cli_fail("run", st);
    int32_t n_ctx = ty_context_n_ctx(s->ctx);
    if (n_prompt > (size_t)n_ctx) {
        fprintf(stderr,
                "tongyun run: the prompt is %zu tokens but the context holds %d; use a larger --ctx or a "
                "shorter prompt\n",
                n_prompt, n_ctx);
        return 1;
    }

    struct ty_sampler_params sp = ty_sampler_default_params();
    sp.temperature = (float)o->temp;
    sp.top_k = (int32_t)o->top_k;
    sp.top_p = (float)o->top_p;
    sp.min_p = (float)o->min_p;
    sp.repeat_penalty = (float)o->repeat;
    sp.presence_penalty = (float)o->presence;
    sp.frequency_penalty = (float)o->frequency;
    sp.seed = o->seed;
    st = ty_sampler_init(&sp, n_vocab, &s->smp);
    if (st != TY_OK) return ty_cli_fail("run", st);
    for (size_t i = 0; i < n_prompt; i++) ty_sampler_accept(s->smp, s->prompt_ids[i]);

    s->logits = ty__malloc(sizeof(float) * (size_t)n_vocab);
    s->gen_ids = ty__malloc(sizeof(int32_t) * ((size_t)o->n_predict + 1));
    if (!s->logits || !s->gen_ids) {
        fprintf(stderr, "tongyun run: out of memory\n");
        return 1;
    }
    s->out.stream = !o->json;

    double t0 = ty__time_s();
    st = ty_context_eval(s->ctx, s->prompt_ids, n_prompt, TY_LOGITS_LAST, s->logits);
    if (st != TY_OK) return ty_cli_fail("run", st);
    double t_prompt = ty__time_s() - t0;

    struct ty_detokenizer dt = {0};
    size_t n_gen = 0, n_decoded = 0;
    double t1 = ty__time_s();
    const char *stop = "token limit";
    while (n_gen < (size_t)o->n_predict) {
        int32_t id = ty_sampler_sample(s->smp, s->logits);
        if (ty_tokenizer_is_eog(tok, id)) {
            stop = "end of generation";
            break;
        }
        s->gen_ids[n_gen++] = id;
        st = emit_token(&s->out, tok, &dt, id);
        if (st != TY_OK) return ty_cli_fail("run", st);
        if (n_gen == (size_t)o->n_predict) break;
        if (ty_context_n_past(s->ctx) >= n_ctx) {
            stop = "context full";
            break;
        }
        st = ty_context_eval(s->ctx, &id, 1, TY_LOGITS_LAST, s->logits);
        if (st != TY_OK) return ty_cli_fail("run", st);
        n_decoded++;
    }
    double t_gen = ty__time_s() - t1;
    char tail[64];
    size_t n_tail;
    if (ty_detokenize_flush(&dt, tail, sizeof tail, &n_tail) == TY_OK) emit(&s->out, tail, n_tail);

    if (o->json) {
        json_t *obj = json_object();
        json_object_set_new(obj, "prompt_ids", ids_json(s->prompt_ids, n_prompt));
        json_object_set_new(obj, "ids", ids_json(s->gen_ids, n_gen));
        json_t *jt = json_stringn(s->out.text.data ? s->out.text.data : "", s->out.text.len);
        if (!jt) jt = json_string(""); /* the detokenizer only emits valid UTF-8; this is a safety net */
        json_object_set_new(obj, "text", jt);
        char *dump = json_dumps(obj, JSON_COMPACT);
        json_decref(obj);
        if (!dump || s->out.text.oom) {
            free(dump);
            fprintf(stderr, "tongyun run: out of memory writing JSON\n");
            return 1;
        }
        printf("%s\n", dump);
        free(dump);
    } else if (isatty(STDOUT_FILENO)) {
        printf("\n");
    }
    fflush(stdout);
    /* The generation rate counts single-token evaluations (the first token's logits came from the prompt). */
    fprintf(stderr,
            "tongyun run: prompt %zu tokens in %.2f s (%.1f tok/s); generated %zu tokens in %.2f s (%.1f tok/s); "
            "stopped: %s; seed %llu\n",
            n_prompt, t_prompt, t_prompt > 0 ? n_prompt / t_prompt : 0.0, n_gen, t_gen,
            t_gen > 0 ? n_decoded / t_gen : 0.0, stop, (unsigned long long)o->seed);
    return 0;
}

int ty_cmd_run(int argc, char **argv) {
    struct run_opts o = {0};
    o.mp = ty_model_default_params();
    o.n_predict = 128;
    o.temp = 0.8;
    o.top_k = 40;
    o.top_p = 0.95;
    o.min_p = 0.05;
    o.repeat = 1.0;
    o.kv_type = TY_TYPE_F16;
    o.thinking = TY_CHAT_THINKING_DEFAULT;
    int rc = parse(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    if (!o.seed_set) o.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    struct session s = {0};
    rc = generate(&o, &s);
    session_free(&s);
    return rc;
}
