/*
 * cmd-train.c - `tongyun train`: trains a qwen3 model from scratch (a preset or explicit shape, with a tokenizer.json)
 * or continues a GGUF model (-m), on a text or JSONL corpus; evaluates on a held-out tail of the corpus; writes
 * checkpoints that resume exactly (--resume), a JSON-lines log (--log) and the final model as a GGUF that run, chat
 * and serve load. `tongyun train --plot LOG.jsonl OUT.svg` renders a log as an SVG chart. --precision bf16 runs the
 * products in mixed precision and fails with a clear error on a CPU without AVX512_BF16 (never a silent fallback:
 * a run's precision is part of what its checkpoints record). The work is in src/train/.
 */
#include "cli.h"

#include "chip/cpu/roofline.h"
#include "model/tokenizer.h"
#include "train-cli.h"
#include "train/data.h"
#include "train/lora.h"
#include "train/train.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <strings.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(
        f, "usage: tongyun train --data CORPUS -o OUT.gguf [model] [options]\n"
           "       tongyun train --plot LOG.jsonl OUT.svg\n"
           "\n"
           "model (one of):\n"
           "  -m MODEL.gguf       continue training a dense qwen3 GGUF (its tokenizer is kept)\n"
           "  --preset NAME       from scratch: tiny (~0.1M + embeddings), small, mini (see --help-presets)\n"
           "  --layers N --embd N --heads N --kv-heads N --head-dim N --ff N\n"
           "                      from scratch with an explicit shape (overrides the preset's fields)\n"
           "  --tokenizer FILE    tokenizer.json for a model from scratch (its vocabulary sets the embedding rows)\n"
           "  --rope-theta X      RoPE base from scratch (default 10000)\n"
           "\n"
           "data:\n"
           "  --data FILE         text (paragraphs = documents) or .jsonl ({\"text\":..} or {\"messages\":[..]})\n"
           "  --format F          auto (default), text or jsonl\n"
           "  --cache FILE        token shard cache (default FILE.tokens beside the corpus; 'none' = no cache)\n"
           "  --eval-frac X       held-out fraction of the corpus's windows (default 0.05)\n"
           "\n"
           "training:\n"
           "  --steps N           optimizer steps (default 1000)      --batch B   sequences per micro-batch (8)\n"
           "  --ctx S             tokens per sequence (default 128)   --accum A   micro-batches per step (1)\n"
           "  --lr X (1e-3)  --lr-min X (lr/10)  --warmup N (steps/20)  --weight-decay X (0.1)  --clip X (1.0)\n"
           "  --seed N            initialisation and data order (default 1)\n"
           "  --precision P       f32 (default) or bf16: mixed precision, every matmul (and attention's q.k, p.v)\n"
           "                      on bf16-rounded operands with f32 accumulation (vdpbf16ps, about twice the f32\n"
           "                      rate); weights, gradients, Adam state, norms, softmax and the loss stay f32.\n"
           "                      Needs a CPU with AVX512_BF16 (an error otherwise); MFU is then against the\n"
           "                      bf16 dot-product peak. Recorded in checkpoints: --resume needs the same value.\n"
           "                      finetune takes it too (the adapters' own small products stay f32).\n"
           "  --init-std X        std of the initial matrices from scratch (default 0.02)\n"
           "  -t, --threads N     threads (default: one per core)\n"
           "\n"
           "evaluation, checkpoints, output:\n"
           "  --eval-every N      held-out evaluation every N steps and at the end (default 100; 0 = only at the end)\n"
           "  --eval-batches N    micro-batches per evaluation (default 8)\n"
           "  --ckpt FILE         checkpoint path (default OUT.gguf.ckpt)   --ckpt-every N (default 100; 0 = off)\n"
           "  --resume            continue from --ckpt; every setting must match the checkpoint's run\n"
           "  --stop-after N      stop (after a checkpoint) once step N is done, as if interrupted\n"
           "  --log FILE.jsonl    append one JSON object per step and per evaluation\n"
           "  --name NAME         general.name of the output (default 'Tongyun trained model')\n"
           "  --no-mfu            skip measuring the FMA (or bf16 dot) peak for the MFU figure\n");
}

/* ==== Presets ==== */

struct preset {
    const char *name;
    int32_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
};

static const struct preset presets[] = {
    {"tiny", 64, 2, 4, 2, 16, 192},
    {"small", 128, 4, 4, 2, 32, 384},
    {"mini", 256, 8, 8, 4, 32, 768},
};

/* ==== Plot ==== */

struct series {
    double *x, *y;
    size_t n, cap;
};

static bool series_add(struct series *s, double x, double y) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        double *nx = ty__realloc(s->x, cap * sizeof *nx);
        if (!nx) return false;
        s->x = nx;
        double *ny = ty__realloc(s->y, cap * sizeof *ny);
        if (!ny) return false;
        s->y = ny;
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
    return true;
}

struct plot_ctx {
    struct series train, eval;
};

static int plot_line(void *arg, json_t *v, const json_error_t *err, const char *path, long line_no) {
    struct plot_ctx *c = arg;
    if (!v) {
        fprintf(stderr, "tongyun train --plot: %s:%ld: %s\n", path, line_no, err->text);
        return 1;
    }
    json_t *step = json_object_get(v, "step");
    if (!json_is_number(step)) return 0;
    json_t *loss = json_object_get(v, "loss"), *ev = json_object_get(v, "eval_loss");
    bool ok = true;
    if (json_is_number(loss)) ok = series_add(&c->train, json_number_value(step), json_number_value(loss));
    if (json_is_number(ev)) ok = ok && series_add(&c->eval, json_number_value(step), json_number_value(ev));
    if (!ok) {
        fprintf(stderr, "tongyun train --plot: out of memory\n");
        return 1;
    }
    return 0;
}

static int plot(const char *log_path, const char *svg_path) {
    struct plot_ctx c = {0};
    int rc = ty_cli_jsonl_each("train --plot", log_path, plot_line, &c);
    if (rc == 0 && c.train.n == 0 && c.eval.n == 0) {
        fprintf(stderr, "tongyun train --plot: %s has no step with a loss; is it a `tongyun train --log` file?\n",
                log_path);
        rc = 1;
    }
    if (rc == 0) {
        double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
        struct series *all[2] = {&c.train, &c.eval};
        for (int s = 0; s < 2; s++) {
            for (size_t i = 0; i < all[s]->n; i++) {
                x0 = fmin(x0, all[s]->x[i]), x1 = fmax(x1, all[s]->x[i]);
                y0 = fmin(y0, all[s]->y[i]), y1 = fmax(y1, all[s]->y[i]);
            }
        }
        if (x1 <= x0) x1 = x0 + 1;
        if (y1 <= y0) y1 = y0 + 1;
        double pad = (y1 - y0) * 0.05;
        y0 -= pad, y1 += pad;
        const double W = 800, H = 450, L = 70, R = 20, T = 30, B = 50;
        FILE *f = fopen(svg_path, "w");
        if (!f) {
            fprintf(stderr, "tongyun train --plot: cannot write %s\n", svg_path);
            rc = 1;
        } else {
            fprintf(f,
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" font-family=\"sans-serif\" "
                    "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                    W, H);
            fprintf(f, "<text x=\"%g\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">loss (%s)</text>\n", W / 2,
                    log_path);
            for (int i = 0; i <= 5; i++) {
                double yv = y0 + (y1 - y0) * i / 5, py = H - B - (H - T - B) * i / 5;
                double xv = x0 + (x1 - x0) * i / 5, px = L + (W - L - R) * i / 5;
                fprintf(f, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#ddd\"/>\n", L, py, W - R, py);
                fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.3g</text>\n", L - 6, py + 4, yv);
                fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%.0f</text>\n", px, H - B + 18, xv);
            }
            fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">step</text>\n", W / 2, H - 10);
            const char *colour[2] = {"#1f77b4", "#d62728"}, *label[2] = {"train", "held-out"};
            for (int s = 0; s < 2; s++) {
                if (all[s]->n == 0) continue;
                fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", colour[s]);
                for (size_t i = 0; i < all[s]->n; i++)
                    fprintf(f, "%.1f,%.1f ", L + (W - L - R) * (all[s]->x[i] - x0) / (x1 - x0),
                            H - B - (H - T - B) * (all[s]->y[i] - y0) / (y1 - y0));
                fprintf(f, "\"/>\n<text x=\"%g\" y=\"%g\" fill=\"%s\">%s</text>\n", W - R - 80, T + 16 + 16 * s,
                        colour[s], label[s]);
            }
            fprintf(f, "</svg>\n");
            if (fclose(f) != 0) rc = 1;
        }
    }
    ty_free(c.train.x), ty_free(c.train.y), ty_free(c.eval.x), ty_free(c.eval.y);
    return rc;
}

/* ==== Training ==== */

struct opts {
    const char *data, *out, *model, *tokenizer, *preset, *cache, *ckpt, *log, *name;
    enum ty_train_data_format format;
    enum ty_train_precision precision;
    int32_t layers, embd, heads, kv_heads, head_dim, ff, vocab;
    double rope_theta, init_std, eval_frac;
    int64_t steps, batch, ctx, accum, warmup, eval_every, eval_batches, ckpt_every, stop_after;
    double lr, lr_min, weight_decay, clip;
    uint64_t seed;
    int threads;
    bool resume, no_mfu, warmup_set, lr_min_set;
};

static double evaluate(struct ty_train_model *m, const struct ty_train_data *d, const struct opts *o, int32_t *buf) {
    double sum = 0;
    int64_t count = 0;
    int64_t n_batches = o->eval_batches;
    if (n_batches * o->batch > d->n_eval) n_batches = (d->n_eval + o->batch - 1) / o->batch;
    for (int64_t b = 0; b < n_batches; b++) {
        ty__train_data_eval_batch(d, b * o->batch, o->batch, buf);
        double loss;
        int64_t n;
        if (ty__train_forward(m, buf, o->batch, o->ctx, &loss, &n) != TY_OK) return NAN;
        sum += loss * (double)n;
        count += n;
    }
    return count ? sum / (double)count : NAN;
}

/* The held-out loss of a unigram model of the training windows (add-one smoothed): the baseline a trained model's
 * held-out loss should beat by far. */
static double unigram_loss(const struct ty_train_data *d, int32_t n_vocab) {
    double *count = ty__calloc((size_t)n_vocab, sizeof *count);
    if (!count) return NAN;
    size_t n_train = (size_t)d->n_train * (size_t)d->seq_len, total = 0;
    for (size_t i = 0; i < n_train && i < d->n_tokens; i++) count[d->tokens[i]] += 1, total++;
    double sum = 0;
    size_t n = 0;
    for (int64_t w = d->n_train; w < d->n_train + d->n_eval; w++) {
        for (int64_t t = 1; t <= d->seq_len; t++) {
            int32_t id = d->tokens[(size_t)w * (size_t)d->seq_len + (size_t)t];
            sum -= log((count[id] + 1) / ((double)total + n_vocab));
            n++;
        }
    }
    ty_free(count);
    return n ? sum / (double)n : NAN;
}

static void log_json(FILE *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_json(FILE *log, const char *fmt, ...) {
    if (!log) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(log, fmt, ap);
    va_end(ap);
    fflush(log);
}

static void fmt_eta(double s, char *buf, size_t cap) {
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, cap, "?");
        return;
    }
    int h = (int)(s / 3600), mi = (int)(fmod(s, 3600) / 60), se = (int)fmod(s, 60);
    if (h)
        snprintf(buf, cap, "%dh%02dm", h, mi);
    else
        snprintf(buf, cap, "%dm%02ds", mi, se);
}

static int train(const struct opts *o, const struct ty_train_cli_lora *lcfg) {
    struct ty_train_model *m = NULL;
    struct ty_lora *lora = NULL;
    struct ty_tokenizer *tok = NULL;
    struct ty_train_data data = {0};
    struct ty_train_optim opt = {0};
    FILE *log = NULL;
    int32_t *buf = NULL;
    int rc = 1;
    enum ty_status st;

    /* the model and its tokenizer */
    if (o->model) {
        st = ty__train_model_load_gguf(o->model, o->threads, &m, &tok);
    } else {
        st = ty__tokenizer_load_hf(o->tokenizer, NULL, &tok);
        if (st == TY_OK && o->vocab) {
            struct ty_tokenizer *small = NULL;
            const char *tmp = getenv("TMPDIR");
            st = ty__train_vocab_cut(tok, o->vocab, tmp && *tmp ? tmp : "/tmp", &small);
            ty_tokenizer_free(tok);
            tok = small;
        }
        if (st == TY_OK) {
            const struct preset *p = &presets[0];
            for (size_t i = 0; o->preset && i < sizeof presets / sizeof presets[0]; i++)
                if (!strcasecmp(o->preset, presets[i].name)) p = &presets[i];
            struct ty_train_config c = {.n_vocab = ty_tokenizer_n_vocab(tok),
                                        .n_embd = o->embd ? o->embd : p->n_embd,
                                        .n_layer = o->layers ? o->layers : p->n_layer,
                                        .n_head = o->heads ? o->heads : p->n_head,
                                        .n_head_kv = o->kv_heads ? o->kv_heads : p->n_head_kv,
                                        .head_dim = o->head_dim ? o->head_dim : p->head_dim,
                                        .n_ff = o->ff ? o->ff : p->n_ff,
                                        .n_ctx = (int32_t)(o->ctx > 2048 ? o->ctx : 2048),
                                        .norm_eps = 1e-6f,
                                        .tied = true};
            /* embedding rows padded to a multiple of 64, as released Qwen vocabularies are */
            c.n_vocab = (c.n_vocab + 63) / 64 * 64;
            c.rope.freq_base = (float)o->rope_theta;
            st = ty__train_model_init(&c, o->threads, &m);
            if (st == TY_OK) ty__train_model_init_random(m, o->seed, (float)o->init_std);
        }
    }
    if (st == TY_OK) st = ty__train_model_set_precision(m, o->precision);
    if (st == TY_OK && lcfg) st = ty__lora_init(m, lcfg->rank, lcfg->alpha, lcfg->targets, o->seed, &lora);
    if (st != TY_OK) goto fail;
    const struct ty_train_config *c = &m->cfg;
    fprintf(stderr,
            "train: qwen3 %d layers, embd %d, heads %d/%d x %d, ff %d, vocab %d, %s: %.2fM parameters, %s products\n",
            c->n_layer, c->n_embd, c->n_head, c->n_head_kv, c->head_dim, c->n_ff, c->n_vocab,
            c->tied ? "tied" : "untied", (double)m->n_params / 1e6,
            o->precision == TY_TRAIN_PRECISION_BF16 ? "bf16 (f32 accumulation)" : "f32");

    /* data */
    char cache[4096];
    const char *cache_path = NULL;
    if (!o->cache) {
        snprintf(cache, sizeof cache, "%s.tokens", o->data);
        cache_path = cache;
    } else if (strcmp(o->cache, "none") != 0) {
        cache_path = o->cache;
    }
    struct ty_train_data_stats ds;
    st = ty__train_data_load(o->data, o->format, tok, cache_path, &data, &ds);
    if (st != TY_OK) goto fail;
    if (ds.n_invalid)
        fprintf(stderr, "train: skipped %" PRIu64 " document%s with invalid UTF-8\n", ds.n_invalid,
                ds.n_invalid == 1 ? "" : "s");
    st = ty__train_data_split(&data, o->ctx, o->eval_frac);
    if (st != TY_OK) goto fail;
    if (ds.from_cache)
        fprintf(stderr, "train: %zu tokens from the cache %s", data.n_tokens, cache_path);
    else
        fprintf(stderr, "train: %zu tokens, %" PRIu64 " documents", data.n_tokens, ds.n_docs);
    fprintf(stderr, "; %" PRId64 " training and %" PRId64 " held-out windows of %" PRId64 "\n", data.n_train,
            data.n_eval, o->ctx);

    struct ty_train_optim_params op = {.lr = o->lr,
                                       .lr_min = o->lr_min_set ? o->lr_min : o->lr / 10,
                                       .warmup = o->warmup_set ? o->warmup : o->steps / 20,
                                       .total_steps = o->steps,
                                       .beta1 = 0.9,
                                       .beta2 = 0.95,
                                       .eps = 1e-8,
                                       .weight_decay = o->weight_decay,
                                       .clip = o->clip};
    st = lora ? ty__train_optim_init_n(&opt, lora->n_params, &op) : ty__train_optim_init(&opt, m, &op);
    if (st == TY_OK && lora)
        fprintf(stderr, "finetune: LoRA rank %d, alpha %g on %d matrices: %.3fM trainable parameters\n", lora->rank,
                (double)lora->alpha, lora->n_ad, (double)lora->n_params / 1e6);
    if (st != TY_OK) goto fail;
    struct ty_train_run_id id = {.seed = o->seed,
                                 .n_seq = o->batch,
                                 .seq_len = o->ctx,
                                 .accum = o->accum,
                                 .optim = op,
                                 .data_hash = data.hash,
                                 .precision = o->precision};
    char ckpt_buf[4096];
    const char *ckpt = o->ckpt;
    if (!ckpt) {
        snprintf(ckpt_buf, sizeof ckpt_buf, "%s.ckpt", o->out);
        ckpt = ckpt_buf;
    }
    if (o->resume) {
        st = ty__train_checkpoint_load(ckpt, m, &opt, &id);
        if (st != TY_OK) goto fail;
        fprintf(stderr, "train: resumed from %s at step %" PRId64 "\n", ckpt, opt.step);
    }
    if (o->log) {
        log = fopen(o->log, o->resume ? "a" : "w");
        if (!log) {
            fprintf(stderr, "tongyun train: cannot open log %s\n", o->log);
            goto done;
        }
    }
    size_t win = (size_t)(o->ctx + 1);
    buf = ty__malloc((size_t)o->batch * win * sizeof(int32_t));
    if (!buf) {
        st = ty__error(TY_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }

    double uni = unigram_loss(&data, c->n_vocab);
    fprintf(stderr, "train: held-out unigram baseline: loss %.4f, perplexity %.2f\n", uni, exp(uni));
    if (!o->resume) log_json(log, "{\"unigram_eval_loss\": %.9g, \"unigram_eval_ppl\": %.6g}\n", uni, exp(uni));
    double peak = 0;
    if (!o->no_mfu) {
        struct ty_roofline rl;
        /* a bf16 run's MFU is against the peak of the instruction it runs, vdpbf16ps */
        if (ty__roofline_measure_ex(&rl, o->threads, 0.5, ty__simd()->isa, 8u << 20) == TY_OK)
            peak = (o->precision == TY_TRAIN_PRECISION_BF16 ? rl.bf16_gflops : rl.fma_gflops) * 1e9;
    }
    double flops_tok = ty__train_flops_per_token(c, o->ctx);
    int64_t tok_step = o->batch * o->ctx * o->accum;
    bool tty = isatty(2) || (getenv("TY_PROGRESS") && atoi(getenv("TY_PROGRESS")));
    double t_start = ty__time_s(), t_last = t_start;
    int64_t first_step = opt.step;
    for (int64_t s = opt.step; s < o->steps; s++) {
        double t0 = ty__time_s(), loss_sum = 0;
        ty__train_zero_grads(m);
        for (int64_t a = 0; a < o->accum; a++) {
            double loss;
            st = ty__train_data_batch(&data, o->seed, (s * o->accum + a) * o->batch, o->batch, buf);
            if (st == TY_OK) st = ty__train_forward_backward(m, buf, o->batch, o->ctx, 1.0f / (float)o->accum, &loss);
            if (st != TY_OK) goto fail;
            loss_sum += loss;
        }
        double gnorm, lr;
        if (lora) {
            ty__lora_grads(lora, m);
            ty__train_optim_update(&opt, m->pool, lora->tensors, lora->n_tensors, lora->params, lora->grads, &gnorm,
                                   &lr);
            ty__lora_sync(lora, m);
        } else {
            ty__train_optim_step(&opt, m, &gnorm, &lr);
        }
        double loss = loss_sum / (double)o->accum, t1 = ty__time_s();
        double tps = (double)tok_step / (t1 - t0);
        double mfu = peak > 0 ? tps * flops_tok / peak : 0;
        double avg = (t1 - t_start) / (double)(s + 1 - first_step);
        char eta[32];
        fmt_eta(avg * (double)(o->steps - s - 1), eta, sizeof eta);
        log_json(log,
                 "{\"step\": %" PRId64 ", \"loss\": %.9g, \"lr\": %.6g, \"grad_norm\": %.6g, \"tok_s\": %.1f, "
                 "\"mfu\": %.4f}\n",
                 s, loss, lr, gnorm, tps, mfu);
        if (tty && (t1 - t_last > 0.25 || s + 1 == o->steps)) {
            int width = 24, filled = (int)((double)(s + 1) / (double)o->steps * width);
            char bar[32];
            for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
            bar[width] = 0;
            fprintf(stderr, "\rtrain [%s] %" PRId64 "/%" PRId64 " loss %.4f  %.0f tok/s  MFU %.1f%%  ETA %s   ", bar,
                    s + 1, o->steps, loss, tps, mfu * 100, eta);
            t_last = t1;
        }
        bool last = s + 1 == o->steps || (o->stop_after > 0 && s + 1 == o->stop_after);
        if ((o->eval_every > 0 && (s + 1) % o->eval_every == 0) || last) {
            double el = evaluate(m, &data, o, buf);
            log_json(log, "{\"step\": %" PRId64 ", \"eval_loss\": %.9g, \"eval_ppl\": %.6g}\n", s, el, exp(el));
            fprintf(stderr, "%sstep %" PRId64 ": train loss %.4f, held-out loss %.4f, perplexity %.3f\n",
                    tty ? "\n" : "", s + 1, loss, el, exp(el));
        }
        if (!lora && ((o->ckpt_every > 0 && (s + 1) % o->ckpt_every == 0) || last)) {
            st = ty__train_checkpoint_save(ckpt, m, &opt, &id);
            if (st != TY_OK) goto fail;
        }
        if (o->stop_after > 0 && s + 1 == o->stop_after && s + 1 < o->steps) {
            fprintf(stderr, "train: stopped after step %" PRId64 "; checkpoint %s (continue with --resume)\n", s + 1,
                    ckpt);
            rc = 0;
            goto done;
        }
    }
    if (tty) fputc('\n', stderr);
    if (lora) {
        st = ty__lora_save(lora, o->out);
        if (st == TY_OK && lcfg->merge_path) st = ty__train_model_save_gguf(m, tok, o->name, lcfg->merge_path);
        if (st != TY_OK) goto fail;
        fprintf(stderr, "finetune: wrote adapter %s%s%s\n", o->out, lcfg->merge_path ? " and merged model " : "",
                lcfg->merge_path ? lcfg->merge_path : "");
    } else {
        st = ty__train_model_save_gguf(m, tok, o->name, o->out);
        if (st != TY_OK) goto fail;
        fprintf(stderr, "train: wrote %s\n", o->out);
    }
    rc = 0;
    goto done;
fail:
    rc = ty_cli_fail("train", st);
done:
    if (log) fclose(log);
    ty_free(buf);
    ty__train_optim_free(&opt);
    ty__train_data_free(&data);
    ty_tokenizer_free(tok);
    ty__lora_free(lora);
    ty__train_model_free(m);
    return rc;
}

/* ==== Arguments ==== */

#define INT_FLAG(flag, field, lo, hi)                                                                                  \
    if (!strcmp(a, flag)) {                                                                                            \
        long v_;                                                                                                       \
        const char *s_ = ty_cli_value(argc, argv, &i);                                                                 \
        if (!s_ || !ty_cli_int(flag, s_, lo, hi, &v_)) return 2;                                                       \
        o.field = v_;                                                                                                  \
        continue;                                                                                                      \
    }
#define FLOAT_FLAG(flag, field, lo, hi)                                                                                \
    if (!strcmp(a, flag)) {                                                                                            \
        double v_;                                                                                                     \
        const char *s_ = ty_cli_value(argc, argv, &i);                                                                 \
        if (!s_ || !ty_cli_float(flag, s_, lo, hi, &v_)) return 2;                                                     \
        o.field = v_;                                                                                                  \
        continue;                                                                                                      \
    }
#define STR_FLAG(flag, field)                                                                                          \
    if (!strcmp(a, flag)) {                                                                                            \
        if (!(o.field = ty_cli_value(argc, argv, &i))) return 2;                                                       \
        continue;                                                                                                      \
    }

int ty__train_cli(int argc, char **argv, const struct ty_train_cli_lora *lora) {
    struct opts o = {.format = TY_TRAIN_DATA_AUTO,
                     .rope_theta = 10000,
                     .init_std = 0.02,
                     .eval_frac = 0.05,
                     .steps = 1000,
                     .batch = 8,
                     .ctx = 128,
                     .accum = 1,
                     .eval_every = 100,
                     .eval_batches = 8,
                     .ckpt_every = 100,
                     .lr = 1e-3,
                     .weight_decay = 0.1,
                     .clip = 1.0,
                     .seed = 1,
                     .name = "Tongyun trained model"};
    long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (ty_cli_is_help(a)) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--plot")) {
            if (i + 2 >= argc) {
                fprintf(stderr, "tongyun train: --plot needs LOG.jsonl and OUT.svg\n");
                return 2;
            }
            return plot(argv[i + 1], argv[i + 2]);
        }
        STR_FLAG("--data", data);
        STR_FLAG("-o", out);
        STR_FLAG("-m", model);
        STR_FLAG("--tokenizer", tokenizer);
        STR_FLAG("--preset", preset);
        STR_FLAG("--cache", cache);
        STR_FLAG("--ckpt", ckpt);
        STR_FLAG("--log", log);
        STR_FLAG("--name", name);
        INT_FLAG("--vocab", vocab, 257, 1 << 24);
        INT_FLAG("--layers", layers, 1, 256);
        INT_FLAG("--embd", embd, 2, 16384);
        INT_FLAG("--heads", heads, 1, 256);
        INT_FLAG("--kv-heads", kv_heads, 1, 256);
        INT_FLAG("--head-dim", head_dim, 2, 512);
        INT_FLAG("--ff", ff, 1, 65536);
        FLOAT_FLAG("--rope-theta", rope_theta, 2, 1e9);
        FLOAT_FLAG("--init-std", init_std, 0, 10);
        FLOAT_FLAG("--eval-frac", eval_frac, 0, 0.5);
        INT_FLAG("--steps", steps, 1, 100000000);
        INT_FLAG("--batch", batch, 1, 65536);
        INT_FLAG("--ctx", ctx, 2, 65536);
        INT_FLAG("--accum", accum, 1, 65536);
        INT_FLAG("--eval-every", eval_every, 0, 100000000);
        INT_FLAG("--eval-batches", eval_batches, 1, 100000);
        INT_FLAG("--ckpt-every", ckpt_every, 0, 100000000);
        INT_FLAG("--stop-after", stop_after, 1, 100000000);
        INT_FLAG("-t", threads, 0, 1024);
        INT_FLAG("--threads", threads, 0, 1024);
        FLOAT_FLAG("--lr", lr, 0, 10);
        FLOAT_FLAG("--weight-decay", weight_decay, 0, 10);
        FLOAT_FLAG("--clip", clip, 0, 1e9);
        if (!strcmp(a, "--lr-min")) {
            const char *s = ty_cli_value(argc, argv, &i);
            if (!s || !ty_cli_float(a, s, 0, 10, &o.lr_min)) return 2;
            o.lr_min_set = true;
            continue;
        }
        if (!strcmp(a, "--warmup")) {
            const char *s = ty_cli_value(argc, argv, &i);
            long v;
            if (!s || !ty_cli_int(a, s, 0, 100000000, &v)) return 2;
            o.warmup = v;
            o.warmup_set = true;
            continue;
        }
        if (!strcmp(a, "--seed")) {
            const char *s = ty_cli_value(argc, argv, &i);
            if (!s || !ty_cli_int(a, s, 0, LONG_MAX, &seed)) return 2;
            o.seed = (uint64_t)seed;
            continue;
        }
        if (!strcmp(a, "--format")) {
            const char *s = ty_cli_value(argc, argv, &i);
            if (!s) return 2;
            if (!strcmp(s, "auto"))
                o.format = TY_TRAIN_DATA_AUTO;
            else if (!strcmp(s, "text"))
                o.format = TY_TRAIN_DATA_TEXT;
            else if (!strcmp(s, "jsonl"))
                o.format = TY_TRAIN_DATA_JSONL;
            else {
                fprintf(stderr, "tongyun train: --format must be auto, text or jsonl (got '%s')\n", s);
                return 2;
            }
            continue;
        }
        if (!strcmp(a, "--precision")) {
            const char *s = ty_cli_value(argc, argv, &i);
            if (!s) return 2;
            if (!ty__train_precision_from_name(s, &o.precision)) {
                fprintf(stderr, "tongyun train: --precision must be f32 or bf16 (got '%s')\n", s);
                return 2;
            }
            continue;
        }
        if (!strcmp(a, "--resume")) {
            o.resume = true;
            continue;
        }
        if (!strcmp(a, "--no-mfu")) {
            o.no_mfu = true;
            continue;
        }
        fprintf(stderr, "tongyun train: unknown argument '%s' (see --help)\n", a);
        return 2;
    }
    if (!o.data || !o.out) {
        fprintf(stderr, "tongyun train: --data CORPUS and -o OUT.gguf are required (see --help)\n");
        return 2;
    }
    if (lora && !o.model) {
        fprintf(stderr, "tongyun finetune: -m BASE.gguf is required (LoRA adapts an existing model)\n");
        return 2;
    }
    if (lora && o.resume) {
        fprintf(stderr, "tongyun finetune: --resume is not supported for LoRA runs (no adapter checkpoints yet)\n");
        return 2;
    }
    if (!o.model && !o.tokenizer) {
        fprintf(stderr, "tongyun train: a model from scratch needs --tokenizer tokenizer.json (or continue one "
                        "with -m MODEL.gguf)\n");
        return 2;
    }
    if (o.model && (o.vocab || o.preset || o.layers || o.embd || o.heads || o.kv_heads || o.head_dim || o.ff)) {
        fprintf(stderr, "tongyun train: -m takes the model's own shape; drop --preset and the shape flags\n");
        return 2;
    }
    if (o.preset) {
        bool found = false;
        for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) found |= !strcasecmp(o.preset, presets[i].name);
        if (!found) {
            fprintf(stderr, "tongyun train: unknown preset '%s'; use tiny, small or mini\n", o.preset);
            return 2;
        }
    }
    if (o.warmup_set && o.warmup > o.steps) {
        fprintf(stderr, "tongyun train: --warmup %" PRId64 " exceeds --steps %" PRId64 "\n", o.warmup, o.steps);
        return 2;
    }
    return train(&o, lora);
}

int ty_cmd_train(int argc, char **argv) {
    return ty__train_cli(argc, argv, NULL);
}
