/*
 * cmd-finetune.c - `tongyun finetune`: LoRA fine-tuning of a GGUF model on a JSONL corpus of ChatML conversations
 * ({"messages": [...]}, rendered with Qwen's chat template; {"text": ...} lines are taken as they are). The adapters
 * are written as a GGUF adapter file (-o) and, with --merge, merged into a new GGUF. The training loop, data loader
 * and every other flag are `tongyun train`'s (train-cli.h).
 */
#include "cli.h"

#include "train-cli.h"
#include "train/lora.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: tongyun finetune -m BASE.gguf --data CHATS.jsonl -o ADAPTER.gguf [--merge MERGED.gguf]\n"
           "                        [--rank R] [--alpha A] [--targets q,k,v,o,gate,up,down] [train options]\n"
           "\n"
           "  --rank R        adapter rank (default 8)\n"
           "  --alpha A       adapter scale numerator: W + (alpha / rank) B A (default 2 x rank)\n"
           "  --targets LIST  projections to adapt (default q,k,v,o)\n"
           "  --merge FILE    also write the base model with the adapters merged in\n"
           "Every option of `tongyun train` applies (--steps, --batch, --ctx, --lr, --precision, --log, ...), except\n"
           "--resume. With --precision bf16 the model's products run in bf16; the adapters' own products (their merge\n"
           "into the weights and their gradients) stay f32.\n");
}

int ty_cmd_finetune(int argc, char **argv) {
    struct ty_train_cli_lora lora = {.rank = 8, .alpha = -1, .targets = 0, .merge_path = NULL};
    const char *targets = "q,k,v,o";
    char **rest = ty__calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) return ty_cli_fail("finetune", TY_ERR_NO_MEMORY);
    int n = 0;
    rest[n++] = argv[0];
    int rc = -1;
    for (int i = 1; i < argc && rc < 0; i++) {
        const char *a = argv[i];
        if (ty_cli_is_help(a)) {
            usage(stdout);
            rc = 0;
        } else if (!strcmp(a, "--rank")) {
            long v;
            const char *s = ty_cli_value(argc, argv, &i);
            if (!s || !ty_cli_int(a, s, 1, 4096, &v))
                rc = 2;
            else
                lora.rank = (int)v;
        } else if (!strcmp(a, "--alpha")) {
            double v;
            const char *s = ty_cli_value(argc, argv, &i);
            if (!s || !ty_cli_float(a, s, 0, 1e6, &v))
                rc = 2;
            else
                lora.alpha = (float)v;
        } else if (!strcmp(a, "--targets")) {
            if (!(targets = ty_cli_value(argc, argv, &i))) rc = 2;
        } else if (!strcmp(a, "--merge")) {
            if (!(lora.merge_path = ty_cli_value(argc, argv, &i))) rc = 2;
        } else {
            rest[n++] = argv[i];
        }
    }
    if (rc < 0 && ty__lora_parse_targets(targets, &lora.targets) != TY_OK) {
        fprintf(stderr, "tongyun finetune: %s\n", ty_last_error());
        rc = 2;
    }
    if (rc < 0) {
        if (lora.alpha < 0) lora.alpha = 2.0f * (float)lora.rank;
        rc = ty__train_cli(n, rest, &lora);
    }
    ty_free(rest);
    return rc;
}
