/*
 * cmd-chat.c - `tongyun chat`: an interactive, streaming, multi-turn chat on stdin/stdout.
 *
 * Each turn renders the whole conversation with Qwen's chat template (ty_chat_render), tokenizes it, and keeps the KV
 * cache for the longest prefix the new prompt shares with what the context already holds, so only the new part is
 * evaluated. Replies stream token by token; the reasoning of a thinking model is shown dimmed on a terminal and as
 * generated (with its <think> tags) otherwise. The assistant turn is stored without its reasoning, as Qwen's template
 * expects of earlier turns.
 */
#include "cli.h"

#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define DIM   "\033[2m"
#define RESET "\033[0m"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tongyun chat [-m MODEL.gguf] [options]\n\n"
            "Chat with a Qwen model: type a message and press Enter; end a line with \\ to continue it on the next.\n"
            "Commands: /think and /no_think switch thinking on and off, /reset starts a new conversation, /exit (or\n"
            "end of input) quits. Ctrl-C stops a reply that is being written.\n\n"
            "options:\n"
            "  -m, --model PATH      GGUF model file (default: $TONGYUN_MODEL, else the bundled Tongyun-Mini)\n"
            "  --system TEXT         system prompt\n"
            "  --think, --no-think   thinking on or off (default: the template's default, which is on for Qwen3)\n"
            "  --temp T              temperature; 0 = greedy (default 0.6 thinking, 0.7 not thinking: Qwen's advice)\n"
            "  --top-p P             nucleus sampling (default 0.95 thinking, 0.8 not thinking)\n"
            "  --top-k K             keep the K most likely tokens; 0 = off (default 20)\n"
            "  --min-p P             drop tokens below P times the most likely one; 0 = off (default 0)\n"
            "  --repeat-penalty R    penalise the last 64 tokens; 1 = off (default 1)\n"
            "  --presence-penalty P  OpenAI presence penalty over the last 64 tokens (default 0)\n"
            "  --seed S              random seed (default: from the clock)\n"
            "  --ctx N               context length in tokens (default: the model's, at most 4096)\n"
            "  --threads N           worker threads (default: one per core)\n"
            "  --lora FILE[:SCALE]   apply a LoRA adapter from `tongyun finetune` (SCALE default 1)\n"
            "  -n, --max-tokens N    most tokens per reply; -1 = until the model ends its turn (default -1)\n"
            "  -v, --verbose         after each reply, print token counts and the stop reason on stderr\n");
}

/* ==== Options ==== */

struct opts {
    const char *model, *system;
    enum ty_chat_thinking thinking;
    struct ty_sampler_params sp;
    bool set_temp, set_top_p, set_top_k; /* given on the command line: mode switches leave them alone */
    long n_ctx, threads, max_tokens;
    bool verbose;
    struct ty_model_params mp; /* --lora */
};

/* Qwen's recommended settings for Qwen3, for what the command line left open. */
static void apply_mode_defaults(struct opts *o) {
    bool thinking = o->thinking != TY_CHAT_THINKING_OFF;
    if (!o->set_temp) o->sp.temperature = thinking ? 0.6f : 0.7f;
    if (!o->set_top_p) o->sp.top_p = thinking ? 0.95f : 0.8f;
    if (!o->set_top_k) o->sp.top_k = 20;
}

/* Returns 0 to go on, or the exit code (2 usage error, 0 after --help). */
static int parse_args(int argc, char **argv, struct opts *o) {
    *o = (struct opts){.sp = ty_sampler_default_params(), .max_tokens = -1, .mp = ty_model_default_params()};
    o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        double d;
        long l;
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return -1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            TY_CLI_VALUE();
            o->model = v;
        } else if (!strcmp(a, "--system")) {
            TY_CLI_VALUE();
            o->system = v;
        } else if (!strcmp(a, "--think")) {
            o->thinking = TY_CHAT_THINKING_ON;
        } else if (!strcmp(a, "--no-think")) {
            o->thinking = TY_CHAT_THINKING_OFF;
        } else if (!strcmp(a, "--temp")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0, 100, &d)) return 2;
            o->sp.temperature = (float)d;
            o->set_temp = true;
        } else if (!strcmp(a, "--top-p")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0, 1, &d)) return 2;
            o->sp.top_p = (float)d;
            o->set_top_p = true;
        } else if (!strcmp(a, "--top-k")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, INT32_MAX, &l)) return 2;
            o->sp.top_k = (int32_t)l;
            o->set_top_k = true;
        } else if (!strcmp(a, "--min-p")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0, 1, &d)) return 2;
            o->sp.min_p = (float)d;
        } else if (!strcmp(a, "--repeat-penalty")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, 0.01, 100, &d)) return 2;
            o->sp.repeat_penalty = (float)d;
        } else if (!strcmp(a, "--presence-penalty")) {
            TY_CLI_VALUE();
            if (!ty_cli_float(a, v, -2, 2, &d)) return 2;
            o->sp.presence_penalty = (float)d;
        } else if (!strcmp(a, "--seed")) {
            TY_CLI_VALUE();
            char *end;
            unsigned long long s = strtoull(v, &end, 10);
            if (!*v || *end || *v == '-') {
                fprintf(stderr, "tongyun: --seed expects a non-negative integer, got '%s'\n", v);
                return 2;
            }
            o->sp.seed = (uint64_t)s;
        } else if (!strcmp(a, "--ctx")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, INT32_MAX, &o->n_ctx)) return 2;
        } else if (!strcmp(a, "--threads")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, 0, 1024, &o->threads)) return 2;
        } else if (!strcmp(a, "--lora")) {
            TY_CLI_VALUE();
            if (!ty_cli_lora(a, argv[i], &o->mp)) return 2;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            TY_CLI_VALUE();
            if (!ty_cli_int(a, v, -1, INT32_MAX, &o->max_tokens)) return 2;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = true;
        } else {
            fprintf(stderr, "tongyun chat: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o->model && !(o->model = ty_cli_default_model("chat"))) return 2;
    apply_mode_defaults(o);
    return 0;
}

/* ==== Conversation state ==== */

struct turn {
    const char *role; /* static string */
    char *content, *tool_calls_json;
};

struct chat {
    struct opts o;
    struct ty_model *model;
    const struct ty_tokenizer *tok;
    struct ty_context *ctx;
    struct ty_sampler *smp;
    int32_t n_vocab, n_ctx;
    float *logits;   /* (n_vocab) */
    int32_t *cached; /* (n_ctx) the tokens now in the KV cache, in order */
    int32_t n_cached;
    int32_t *prompt; /* (n_ctx) the tokens of the rendered conversation */
    char *piece;     /* detokenizer output, sized for the longest token */
    size_t piece_cap;
    struct turn *turns;
    size_t n_turns, cap_turns;
    int32_t think_open, think_close;
    bool tty_out, tty_in;
    int n_turn;
};

static volatile sig_atomic_t generating, interrupted;

/* Ctrl-C while a reply is written stops the reply; at the prompt it ends the program as usual. */
static void on_sigint(int sig) {
    if (generating) {
        interrupted = 1;
        return;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static bool push_turn(struct chat *c, const char *role, const char *content, const char *tool_calls) {
    if (c->n_turns == c->cap_turns) {
        size_t cap = c->cap_turns ? c->cap_turns * 2 : 16;
        struct turn *t = ty__realloc(c->turns, cap * sizeof *t);
        if (!t) return false;
        c->turns = t;
        c->cap_turns = cap;
    }
    struct turn t = {role, ty__strdup(content), tool_calls ? ty__strdup(tool_calls) : NULL};
    if (!t.content || (tool_calls && !t.tool_calls_json)) {
        ty_free(t.content);
        ty_free(t.tool_calls_json);
        return false;
    }
    c->turns[c->n_turns++] = t;
    return true;
}

static void pop_turns(struct chat *c, size_t keep) {
    while (c->n_turns > keep) {
        struct turn *t = &c->turns[--c->n_turns];
        ty_free(t->content);
        ty_free(t->tool_calls_json);
    }
}

static void chat_free(struct chat *c) {
    pop_turns(c, 0);
    ty_free(c->turns);
    ty_free(c->logits);
    ty_free(c->cached);
    ty_free(c->prompt);
    ty_free(c->piece);
    ty_sampler_free(c->smp);
    ty_context_free(c->ctx);
    ty_model_free(c->model);
}

static enum ty_status chat_open(struct chat *c) {
    struct ty_model_params mp = c->o.mp;
    mp.n_threads = (int)c->o.threads;
    TY_TRY(ty_model_load(c->o.model, &mp, &c->model));
    c->tok = ty_model_tokenizer(c->model);
    c->n_vocab = ty_model_n_vocab(c->model);
    struct ty_context_params cp = ty_context_default_params();
    cp.n_ctx = (int32_t)c->o.n_ctx;
    TY_TRY(ty_context_init(c->model, &cp, &c->ctx));
    c->n_ctx = ty_context_n_ctx(c->ctx);
    TY_TRY(ty_sampler_init(&c->o.sp, c->n_vocab, &c->smp));

    /* The detokenizer needs room for a token's bytes plus a pending partial character. */
    size_t longest = 0;
    for (int32_t id = 0; id < ty_tokenizer_n_vocab(c->tok); id++) {
        size_t len = 0;
        if (ty_token_bytes(c->tok, id, &len) && len > longest) longest = len;
    }
    c->piece_cap = longest + 16;
    c->logits = ty__malloc((size_t)c->n_vocab * sizeof *c->logits);
    c->cached = ty__malloc((size_t)c->n_ctx * sizeof *c->cached);
    c->prompt = ty__malloc((size_t)c->n_ctx * sizeof *c->prompt);
    c->piece = ty__malloc(c->piece_cap);
    if (!c->logits || !c->cached || !c->prompt || !c->piece)
        return ty__error(TY_ERR_NO_MEMORY, "out of memory setting up the chat (context of %d tokens)", c->n_ctx);
    c->think_open = ty_tokenizer_find(c->tok, "<think>");
    c->think_close = ty_tokenizer_find(c->tok, "</think>");
    if (c->o.system && !push_turn(c, "system", c->o.system, NULL))
        return ty__error(TY_ERR_NO_MEMORY, "out of memory storing the system prompt");
    return TY_OK;
}

/* ==== One turn ==== */

enum stop { STOP_EOG, STOP_LIMIT, STOP_CONTEXT, STOP_INTERRUPT };
static const char *const stop_names[] = {"end of turn", "token limit", "context full", "interrupted"};

/* Prints a piece of the reply. On a terminal the reasoning is dimmed and its tags hidden, as are the blank lines
 * between it and the answer; elsewhere the text is written exactly as generated. */
struct display {
    bool in_think, after_think;
};

static void show(struct chat *c, struct display *d, int32_t tok, const char *s, size_t n) {
    if (c->tty_out && c->think_open >= 0 && tok == c->think_open) {
        fputs(DIM, stdout);
        d->in_think = true;
        return;
    }
    if (c->tty_out && c->think_close >= 0 && tok == c->think_close) {
        fputs(RESET, stdout);
        d->in_think = false;
        d->after_think = true;
        return;
    }
    if (c->tty_out && d->after_think) {
        while (n && (*s == '\n' || *s == ' ')) s++, n--;
        if (!n) return;
        d->after_think = false;
    }
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

/* Renders and tokenizes the conversation into c->prompt. TY_ERR_CONTEXT_FULL when it leaves no room to reply. */
static enum ty_status build_prompt(struct chat *c, size_t *n_prompt) {
    struct ty_chat_message *msgs = ty__malloc(c->n_turns * sizeof *msgs);
    if (!msgs) return ty__error(TY_ERR_NO_MEMORY, "out of memory rendering the conversation");
    for (size_t i = 0; i < c->n_turns; i++)
        msgs[i] = (struct ty_chat_message){c->turns[i].role, c->turns[i].content, NULL, c->turns[i].tool_calls_json};
    struct ty_chat_render_params rp = {.add_generation_prompt = true, .thinking = c->o.thinking};
    char *text = NULL;
    enum ty_status st = ty_chat_render(msgs, c->n_turns, &rp, &text);
    ty_free(msgs);
    if (st != TY_OK) return st;
    st = ty_tokenize(c->tok, text, strlen(text), TY_TOKENIZE_SPECIAL, c->prompt, (size_t)c->n_ctx, n_prompt);
    ty_free(text);
    if (st == TY_ERR_BUFFER_TOO_SMALL || (st == TY_OK && *n_prompt >= (size_t)c->n_ctx))
        return ty__error(TY_ERR_CONTEXT_FULL, "the conversation is %zu tokens and the context holds %d", *n_prompt,
                         c->n_ctx);
    return st;
}

/* Brings the KV cache to the prompt: keeps the common prefix, evaluates the rest (always at least the last token,
 * whose logits start the reply). Returns how many tokens were reused. */
static enum ty_status prefill(struct chat *c, size_t n_prompt, size_t *reused) {
    size_t common = 0;
    while (common < (size_t)c->n_cached && common < n_prompt && c->cached[common] == c->prompt[common]) common++;
    if (common == n_prompt) common--;
    TY_TRY(ty_context_truncate(c->ctx, (int32_t)common));
    c->n_cached = (int32_t)common;
    TY_TRY(ty_context_eval(c->ctx, c->prompt + common, n_prompt - common, TY_LOGITS_LAST, c->logits));
    memcpy(c->cached + common, c->prompt + common, (n_prompt - common) * sizeof *c->prompt);
    c->n_cached = (int32_t)n_prompt;
    *reused = common;
    return TY_OK;
}

static enum ty_status generate(struct chat *c, struct ty_buf *reply, int *n_gen, enum stop *stop) {
    struct ty_detokenizer dt = {0};
    struct display disp = {0};
    size_t n;
    *n_gen = 0;
    *stop = STOP_LIMIT;
    enum ty_status st = TY_OK;
    interrupted = 0;
    generating = 1;
    while (c->o.max_tokens < 0 || *n_gen < c->o.max_tokens) {
        if (interrupted) {
            *stop = STOP_INTERRUPT;
            break;
        }
        int32_t t = ty_sampler_sample(c->smp, c->logits);
        if (ty_tokenizer_is_eog(c->tok, t)) {
            *stop = STOP_EOG;
            break;
        }
        ++*n_gen;
        if (ty_detokenize_push(c->tok, &dt, t, c->piece, c->piece_cap, &n) == TY_OK) {
            ty__buf_append(reply, c->piece, n);
            show(c, &disp, t, c->piece, n);
        }
        if (c->n_cached >= c->n_ctx) {
            *stop = STOP_CONTEXT;
            break;
        }
        st = ty_context_eval(c->ctx, &t, 1, TY_LOGITS_LAST, c->logits);
        if (st == TY_ERR_CONTEXT_FULL) {
            *stop = STOP_CONTEXT;
            st = TY_OK;
            break;
        }
        if (st != TY_OK) break;
        c->cached[c->n_cached++] = t;
    }
    generating = 0;
    if (ty_detokenize_flush(&dt, c->piece, c->piece_cap, &n) == TY_OK && n) {
        ty__buf_append(reply, c->piece, n);
        show(c, &disp, -1, c->piece, n);
    }
    if (c->tty_out && disp.in_think) fputs(RESET, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (reply->oom) return ty__error(TY_ERR_NO_MEMORY, "out of memory holding the reply");
    return st;
}

/* Handles one user message. Returns a status only for failures that end the session; a conversation that no longer
 * fits is reported and the session goes on. */
static enum ty_status chat_turn(struct chat *c, const char *user) {
    size_t before = c->n_turns;
    if (!push_turn(c, "user", user, NULL)) return ty__error(TY_ERR_NO_MEMORY, "out of memory storing the message");
    size_t n_prompt = 0, reused = 0;
    enum ty_status st = build_prompt(c, &n_prompt);
    if (st == TY_OK) st = prefill(c, n_prompt, &reused);
    if (st == TY_ERR_CONTEXT_FULL || st == TY_ERR_INVALID_ARG) {
        fprintf(stderr, "tongyun chat: %s\n", ty_last_error());
        if (st == TY_ERR_CONTEXT_FULL)
            fprintf(stderr, "tongyun chat: the context is full; type /reset to start a new conversation%s\n",
                    c->o.n_ctx ? "" : " (or restart with a larger --ctx)");
        pop_turns(c, before);
        return TY_OK;
    }
    TY_TRY(st);

    struct ty_buf reply = {0};
    int n_gen;
    enum stop stop;
    st = generate(c, &reply, &n_gen, &stop);
    if (st != TY_OK) {
        ty__buf_free(&reply);
        return st;
    }
    c->n_turn++;
    if (c->o.verbose)
        fprintf(stderr, "[turn %d: prompt %zu tokens, %zu reused from the cache; %d generated; stop: %s]\n", c->n_turn,
                n_prompt, reused, n_gen, stop_names[stop]);
    if (stop == STOP_CONTEXT)
        fprintf(stderr,
                "tongyun chat: the context (%d tokens) is full; the reply was cut short. Type /reset to start "
                "a new conversation.\n",
                c->n_ctx);

    /* History keeps the answer without its reasoning, as the template shows earlier turns. */
    struct ty_chat_parsed parsed;
    const char *text = reply.data ? reply.data : "";
    bool ok;
    if (ty_chat_parse(text, false, &parsed) == TY_OK) {
        ok = push_turn(c, "assistant", parsed.content, parsed.tool_calls_json);
        ty_chat_parsed_free(&parsed);
    } else {
        ok = push_turn(c, "assistant", text, NULL);
    }
    ty__buf_free(&reply);
    return ok ? TY_OK : ty__error(TY_ERR_NO_MEMORY, "out of memory storing the reply");
}

/* ==== The loop ==== */

/* Reads one message: a line, or several joined where a line ends with a backslash. False at end of input. */
static bool read_message(struct chat *c, struct ty_buf *msg) {
    msg->len = 0;
    if (msg->data) msg->data[0] = 0;
    bool got_any = false;
    char chunk[4096];
    for (;;) {
        if (c->tty_in) {
            fputs(msg->len ? "... " : "> ", stdout);
            fflush(stdout);
        }
        size_t line_start = msg->len;
        bool eol = false;
        while (!eol && fgets(chunk, sizeof chunk, stdin)) {
            got_any = true;
            size_t n = strlen(chunk);
            eol = n && chunk[n - 1] == '\n';
            ty__buf_append(msg, chunk, n);
        }
        if (!eol && msg->len == line_start) return got_any && msg->len > 0; /* end of input */
        while (msg->len > line_start && (msg->data[msg->len - 1] == '\n' || msg->data[msg->len - 1] == '\r'))
            msg->data[--msg->len] = 0;
        if (msg->len > line_start && msg->data[msg->len - 1] == '\\') {
            msg->data[msg->len - 1] = '\n';
            if (eol) continue;
        }
        return !msg->oom;
    }
}

static void trim(char **s) {
    while (**s == ' ' || **s == '\t') ++*s;
    size_t n = strlen(*s);
    while (n && ((*s)[n - 1] == ' ' || (*s)[n - 1] == '\t')) (*s)[--n] = 0;
}

static void set_thinking(struct chat *c, enum ty_chat_thinking mode) {
    c->o.thinking = mode;
    apply_mode_defaults(&c->o);
    struct ty_sampler *s;
    if (ty_sampler_init(&c->o.sp, c->n_vocab, &s) == TY_OK) {
        ty_sampler_free(c->smp);
        c->smp = s;
    }
    fprintf(stderr, "[thinking %s]\n", mode == TY_CHAT_THINKING_OFF ? "off" : "on");
}

int ty_cmd_chat(int argc, char **argv) {
    struct chat c = {0};
    int rc = parse_args(argc, argv, &c.o);
    if (rc) return rc < 0 ? 0 : rc;
    c.tty_in = isatty(STDIN_FILENO);
    c.tty_out = isatty(STDOUT_FILENO);
    enum ty_status st = chat_open(&c);
    if (st != TY_OK) {
        rc = ty_cli_fail("chat", st);
        chat_free(&c);
        return rc;
    }
    if (c.tty_in)
        fprintf(stderr, "tongyun chat: %s (%s), context %d tokens, thinking %s. /think /no_think /reset /exit\n",
                c.o.model, ty_model_arch(c.model), c.n_ctx, c.o.thinking == TY_CHAT_THINKING_OFF ? "off" : "on");
    signal(SIGINT, on_sigint);

    struct ty_buf line = {0};
    while (read_message(&c, &line)) {
        char *msg = line.data;
        trim(&msg);
        if (!*msg) continue;
        if (!strcmp(msg, "/exit") || !strcmp(msg, "/quit")) break;
        if (!strcmp(msg, "/think")) {
            set_thinking(&c, TY_CHAT_THINKING_ON);
        } else if (!strcmp(msg, "/no_think")) {
            set_thinking(&c, TY_CHAT_THINKING_OFF);
        } else if (!strcmp(msg, "/reset")) {
            /* The cache stays: the next prompt shares the system prompt with it, and prefill cuts the rest. */
            pop_turns(&c, c.o.system ? 1 : 0);
            ty_sampler_reset(c.smp);
            fprintf(stderr, "[new conversation]\n");
        } else if ((st = chat_turn(&c, msg)) != TY_OK) {
            break;
        }
    }
    ty__buf_free(&line);
    rc = st == TY_OK ? 0 : ty_cli_fail("chat", st);
    chat_free(&c);
    return rc;
}
