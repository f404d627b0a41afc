/*
 * train-cli.h - what `tongyun finetune` (cmd-finetune.c) shares with `tongyun train` (cmd-train.c): one argument
 * parser and training loop, with LoRA settings when fine-tuning.
 */
#ifndef TY_TRAIN_CLI_H
#define TY_TRAIN_CLI_H

struct ty_train_cli_lora {
    int rank;
    float alpha;
    unsigned targets;       /* ty__lora_parse_targets mask */
    const char *merge_path; /* also write the merged model here, or NULL */
};

/* Parses train's arguments (argv[0] = the command) and runs; with `lora`, trains adapters on -m's model, writes
 * them to -o and the merged model to lora->merge_path. Returns the exit code. */
int ty__train_cli(int argc, char **argv, const struct ty_train_cli_lora *lora);

#endif
