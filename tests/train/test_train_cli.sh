#!/usr/bin/env bash
# test_train_cli.sh - the contract of `tongyun train`: a run from scratch on a text corpus writes a GGUF that `run`
# loads and a JSON-lines log that `--plot` renders; a run stopped at a checkpoint and resumed logs exactly the losses
# of the uninterrupted run (same thread count); JSONL corpora ({"text"} and {"messages"}) train; and bad input gets
# a clear error: an empty corpus, invalid UTF-8 (skipped with a count), a corrupt checkpoint, a resume with other
# hyperparameters (or another --precision), usage errors (exit 2). --precision bf16 resumes exactly too, and is refused
# with a clear error where the CPU (or the TY_CPU_ISA path) lacks AVX512_BF16.
set -euo pipefail
T=${TONGYUN:-build/tongyun}
SRC=${TY_SOURCE_DIR:-.}
TOK="$SRC/tests/data/models/qwen3-tiny/tokenizer.json"
. "$SRC/tests/lib.sh"

# a small corpus: 120 paragraphs of simple sentences
words=(the cat sat on a mat and dog ran to house with red blue green small big tree water)
for p in $(seq 1 120); do
    line=""
    for w in $(seq 1 $((10 + p % 17))); do line+="${words[$(((p * 7 + w * 13) % 19))]} "; done
    printf '%s.\n\n' "$line"
done > "$work/corpus.txt"

common=(--tokenizer "$TOK" --preset tiny --batch 2 --ctx 16 --lr 3e-3 --eval-every 4 --eval-batches 2 -t 2 --no-mfu)

# ---- from scratch, output loads in run, plot ----
exit_code "train from scratch" 0 "held-out loss" \
    "$T" train --data "$work/corpus.txt" -o "$work/a.gguf" --steps 12 --log "$work/a.jsonl" "${common[@]}"
[[ -s "$work/a.gguf" ]] || fail "no output model"
[[ -s "$work/corpus.txt.tokens" ]] || fail "no token cache beside the corpus"
[[ $(grep -c '"loss"' "$work/a.jsonl") == 12 ]] || fail "log should hold 12 step lines: $(cat "$work/a.jsonl")"
grep -q '"eval_ppl"' "$work/a.jsonl" || fail "log has no evaluation"
grep -q '"unigram_eval_ppl"' "$work/a.jsonl" || fail "log has no unigram baseline"
first=$(grep '"step": 0,' "$work/a.jsonl" | head -1 | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
last=$(grep '"step": 11,' "$work/a.jsonl" | grep '"loss"' | sed 's/.*"loss": \([0-9.e+-]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "loss did not fall: $first -> $last"
ok "loss falls ($first -> $last)"
"$T" run -m "$work/a.gguf" -p "the cat" -n 4 --seed 1 > "$work/run.out" 2> "$work/run.err" || fail "run cannot load the trained model: $(cat "$work/run.err")"
ok "run loads the output"
exit_code "second run reads the token cache" 0 "from the cache" \
    "$T" train --data "$work/corpus.txt" -o "$work/a2.gguf" --steps 2 "${common[@]}"
"$T" train --plot "$work/a.jsonl" "$work/a.svg" || fail "--plot failed"
grep -q "<polyline" "$work/a.svg" || fail "plot has no curve"
ok "plot renders the log"

# ---- exact resume: stop at step 6 of 12, resume, compare with the uninterrupted log ----
exit_code "stop after 6 steps" 0 "continue with --resume" \
    "$T" train --data "$work/corpus.txt" -o "$work/b.gguf" --steps 12 --stop-after 6 --ckpt "$work/b.ckpt" \
    --log "$work/b.jsonl" "${common[@]}"
exit_code "resume" 0 "resumed from" \
    "$T" train --data "$work/corpus.txt" -o "$work/b.gguf" --steps 12 --ckpt "$work/b.ckpt" --resume \
    --log "$work/b.jsonl" "${common[@]}"
diff <(grep '"loss"' "$work/a.jsonl" | sed 's/, "tok_s".*//') <(grep '"loss"' "$work/b.jsonl" | sed 's/, "tok_s".*//') \
    > "$work/diff" || fail "resumed run's losses differ from the uninterrupted run: $(cat "$work/diff")"
cmp -s "$work/a.gguf" "$work/b.gguf" || fail "resumed run's model differs from the uninterrupted run's"
ok "resumed run reproduces the loss curve and model bit for bit"

# ---- resume errors ----
exit_code "resume with another learning rate" 1 "--lr" \
    "$T" train --data "$work/corpus.txt" -o "$work/b.gguf" --steps 12 --ckpt "$work/b.ckpt" --resume \
    --tokenizer "$TOK" --preset tiny --batch 2 --ctx 16 --lr 1e-3 -t 2 --no-mfu
exit_code "resume with another batch" 1 "--batch" \
    "$T" train --data "$work/corpus.txt" -o "$work/b.gguf" --steps 12 --ckpt "$work/b.ckpt" --resume \
    --tokenizer "$TOK" --preset tiny --batch 3 --ctx 16 --lr 3e-3 -t 2 --no-mfu
cp "$work/b.ckpt" "$work/bad.ckpt"
printf '\xff\xff\xff\xff' | dd of="$work/bad.ckpt" bs=1 seek=5000 conv=notrunc 2> /dev/null
exit_code "corrupt checkpoint" 1 "checksum" \
    "$T" train --data "$work/corpus.txt" -o "$work/b.gguf" --steps 12 --ckpt "$work/bad.ckpt" --resume "${common[@]}"
head -c 1000 "$work/b.ckpt" > "$work/short.ckpt"
exit_code "truncated checkpoint" 1 "truncated" \
    "$T" train --data "$work/corpus.txt" -o "$work/b.gguf" --steps 12 --ckpt "$work/short.ckpt" --resume "${common[@]}"
echo "not a checkpoint at all" > "$work/junk.ckpt"
exit_code "not a checkpoint" 1 "not a Tongyun training checkpoint" \
    "$T" train --data "$work/corpus.txt" -o "$work/b.gguf" --steps 12 --ckpt "$work/junk.ckpt" --resume "${common[@]}"

# ---- mixed precision: a bf16 run resumes exactly, a resume in the other precision is refused, and a CPU path
# without AVX512_BF16 refuses bf16 with a clear error (the bf16 runs skip, with the reason, on such a CPU) ----
exit_code "bad precision" 2 "--precision must be f32 or bf16" \
    "$T" train --data "$work/corpus.txt" -o "$work/x.gguf" --tokenizer "$TOK" --precision fp16
exit_code "bf16 refused on a TY_CPU_ISA path without it" 1 "bf16" \
    env TY_CPU_ISA=avx2 "$T" train --data "$work/corpus.txt" -o "$work/x.gguf" --steps 1 --precision bf16 "${common[@]}"
rc=0 bf16=0
"$T" train --data "$work/corpus.txt" -o "$work/h.gguf" --steps 12 --log "$work/h.jsonl" --precision bf16 \
    "${common[@]}" > "$work/out" 2> "$work/err" || rc=$?
if [[ $rc != 0 ]]; then
    grep -q "AVX512_BF16" "$work/err" || fail "bf16 run failed without naming AVX512_BF16: $(cat "$work/err")"
    echo "skip bf16 runs: $(grep -o 'train: bf16.*' "$work/err")"
else
    grep -q "bf16 (f32 accumulation) products" "$work/err" || fail "a bf16 run does not say so: $(cat "$work/err")"
    ok "bf16 run"
    bf16=1
    exit_code "bf16 stop after 6 steps" 0 "continue with --resume" \
        "$T" train --data "$work/corpus.txt" -o "$work/i.gguf" --steps 12 --stop-after 6 --ckpt "$work/i.ckpt" \
        --log "$work/i.jsonl" --precision bf16 "${common[@]}"
    exit_code "resume a bf16 run in f32" 1 "--precision bf16, this run has f32" \
        "$T" train --data "$work/corpus.txt" -o "$work/i.gguf" --steps 12 --ckpt "$work/i.ckpt" --resume "${common[@]}"
    exit_code "resume an f32 run in bf16" 1 "--precision f32, this run has bf16" \
        "$T" train --data "$work/corpus.txt" -o "$work/b.gguf" --steps 12 --ckpt "$work/b.ckpt" --resume \
        --precision bf16 "${common[@]}"
    exit_code "bf16 resume" 0 "resumed from" \
        "$T" train --data "$work/corpus.txt" -o "$work/i.gguf" --steps 12 --ckpt "$work/i.ckpt" --resume \
        --log "$work/i.jsonl" --precision bf16 "${common[@]}"
    diff <(grep '"loss"' "$work/h.jsonl" | sed 's/, "tok_s".*//') <(grep '"loss"' "$work/i.jsonl" | sed 's/, "tok_s".*//') \
        > "$work/diff" || fail "resumed bf16 run's losses differ from the uninterrupted run: $(cat "$work/diff")"
    cmp -s "$work/h.gguf" "$work/i.gguf" || fail "resumed bf16 run's model differs from the uninterrupted run's"
    ok "resumed bf16 run reproduces the loss curve and model bit for bit"
    ! cmp -s "$work/h.gguf" "$work/a.gguf" || fail "the bf16 run's model is the f32 run's: the products were not bf16"
    ok "bf16 and f32 runs differ"
fi

# ---- corpora ----
: > "$work/empty.txt"
exit_code "empty corpus" 1 "holds no text" \
    "$T" train --data "$work/empty.txt" -o "$work/e.gguf" --steps 2 "${common[@]}"
{
    cat "$work/corpus.txt"
    printf 'bad \xff\xfe bytes here\n\nmore \xc3 broken\n\n'
} > "$work/mixed.txt"
exit_code "invalid UTF-8 skipped with a count" 0 "skipped 2 documents with invalid UTF-8" \
    "$T" train --data "$work/mixed.txt" -o "$work/m.gguf" --steps 2 --cache none "${common[@]}"
{
    for i in $(seq 1 40); do
        echo '{"messages": [{"role": "user", "content": "What does cat mean?"}, {"role": "assistant", "content": "A small animal that says meow."}]}'
        echo '{"text": "the dog ran to the house with the red tree"}'
    done
} > "$work/chat.jsonl"
exit_code "JSONL corpus" 0 "80 documents" \
    "$T" train --data "$work/chat.jsonl" -o "$work/c.gguf" --steps 2 "${common[@]}"
echo '{"text": 5}' > "$work/badshape.jsonl"
exit_code "JSONL line without text or messages" 1 "expected {\"text\": ...}" \
    "$T" train --data "$work/badshape.jsonl" -o "$work/c.gguf" --steps 2 "${common[@]}"

# ---- usage ----
exit_code "no data" 2 "--data CORPUS and -o OUT.gguf are required" "$T" train -o "$work/x.gguf" --tokenizer "$TOK"
exit_code "no tokenizer" 2 "needs --tokenizer" "$T" train --data "$work/corpus.txt" -o "$work/x.gguf"
exit_code "bad preset" 2 "unknown preset" "$T" train --data "$work/corpus.txt" -o "$work/x.gguf" --tokenizer "$TOK" --preset huge
exit_code "bad number" 2 "--steps" "$T" train --data "$work/corpus.txt" -o "$work/x.gguf" --tokenizer "$TOK" --steps many
exit_code "heads not a multiple" 1 "not a multiple" \
    "$T" train --data "$work/corpus.txt" -o "$work/x.gguf" --tokenizer "$TOK" --heads 3 --kv-heads 2 --steps 1 --no-mfu

# ---- continue from a GGUF ----
exit_code "continue from a GGUF" 0 "wrote" \
    "$T" train -m "$work/a.gguf" --data "$work/corpus.txt" -o "$work/d.gguf" --steps 2 --batch 2 --ctx 16 -t 2 --no-mfu

# ---- LoRA fine-tuning ----
exit_code "finetune writes adapter and merged model" 0 "wrote adapter" \
    "$T" finetune -m "$work/a.gguf" --data "$work/chat.jsonl" -o "$work/lora.gguf" --merge "$work/merged.gguf" \
    --rank 4 --targets q,v --steps 4 --batch 2 --ctx 16 --lr 1e-2 -t 2 --no-mfu
[[ -s "$work/lora.gguf" && -s "$work/merged.gguf" ]] || fail "finetune outputs missing"
"$T" run -m "$work/merged.gguf" -p "What does" -n 4 --seed 1 > /dev/null 2> "$work/run.err" || fail "run cannot load the merged model: $(cat "$work/run.err")"
ok "run loads the merged model"
ids() { "$T" run --temp 0 -n 8 -p "What does" --json "$@" 2> "$work/ids.err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ids"])' || fail "run $*: $(cat "$work/ids.err")"; }
[ "$(ids -m "$work/a.gguf" --lora "$work/lora.gguf")" = "$(ids -m "$work/merged.gguf")" ] ||
    fail "run --lora gives other tokens than the merged model"
[ "$(ids -m "$work/a.gguf" --lora "$work/lora.gguf:0")" = "$(ids -m "$work/a.gguf")" ] ||
    fail "run --lora FILE:0 is not the base model"
ok "run --lora FILE[:SCALE] equals the merged model (and scale 0 the base)"
exit_code "run --lora rejects a bad scale" 2 "--lora" "$T" run -m "$work/a.gguf" --lora "$work/lora.gguf:500" -p x
exit_code "run --lora names a missing adapter" 1 "no-such-adapter" \
    "$T" run -m "$work/a.gguf" --lora "$work/no-such-adapter.gguf" -p x -n 1
if [[ $bf16 == 1 ]]; then
    exit_code "finetune in bf16" 0 "wrote adapter" \
        "$T" finetune -m "$work/a.gguf" --data "$work/chat.jsonl" -o "$work/lora16.gguf" --rank 4 --targets q,v \
        --steps 2 --batch 2 --ctx 16 --lr 1e-2 -t 2 --no-mfu --precision bf16
fi
exit_code "finetune needs a base model" 2 "-m BASE.gguf is required" \
    "$T" finetune --data "$work/chat.jsonl" -o "$work/lora.gguf" --tokenizer "$TOK"
exit_code "finetune bad target" 2 "LoRA target 'x' is unknown" \
    "$T" finetune -m "$work/a.gguf" --data "$work/chat.jsonl" -o "$work/lora.gguf" --targets q,x
finish
