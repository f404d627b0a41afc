#!/usr/bin/env bash
# test_mkmodel_cli.sh - the contract of `tongyun mkmodel`: --list names every preset, usage errors exit 2 with a message
# naming the problem, a missing tokenizer exits 1 and writes nothing, and a written model (Qwen2.5-0.5B shape, 1 layer,
# Q4_K_M mix) is byte-identical across thread counts, states its reduction in `inspect`, and generates with `run`.
set -euo pipefail
T=${TONGYUN:-build/tongyun}
SRC=${TY_SOURCE_DIR:-.}
. "$SRC/tests/lib.sh"
mkdir "$work/tok"
gzip -dc "$SRC/data/tokenizers/qwen3/tokenizer.json.gz" > "$work/tok/tokenizer.json"
cp "$SRC/data/tokenizers/qwen3/tokenizer_config.json" "$work/tok/"

# ---- --list and --help ----
"$T" mkmodel --list > "$work/list"
for p in qwen2.5-0.5b qwen2.5-1.5b qwen2.5-7b qwen3-0.6b qwen3-1.7b qwen3-4b qwen3-8b qwen3-30b-a3b; do
    grep -q "^$p " "$work/list" || fail "--list lacks $p"
done
grep -q "^qwen3-30b-a3b .*qwen3moe .* 48 .*128 top-8" "$work/list" || fail "--list: qwen3-30b-a3b line: $(grep 30b "$work/list")"
ok "--list names every preset"
"$T" mkmodel --help | grep -q "q4_k_m" || fail "--help lacks the types"
ok "--help"

# ---- usage errors (2) and failures (1) ----
M=$work/m.gguf
exit_code "missing arguments" 2 "are required" "$T" mkmodel --preset qwen3-0.6b "$M"
exit_code "unknown preset" 2 "unknown preset 'qwen9'" "$T" mkmodel --preset qwen9 --type q8_0 "$M"
exit_code "unknown type" 2 "unknown type 'q3_k'" "$T" mkmodel --preset qwen3-0.6b --type q3_k "$M"
exit_code "too many layers" 2 "--layers must be 1 .. 24" "$T" mkmodel --preset qwen2.5-0.5b --type q8_0 --layers 25 "$M"
exit_code "zero layers" 2 "--layers expects an integer" "$T" mkmodel --preset qwen2.5-0.5b --type q8_0 --layers 0 "$M"
exit_code "bad seed" 2 "--seed expects an integer" "$T" mkmodel --preset qwen2.5-0.5b --type q8_0 --seed x "$M"
exit_code "missing tokenizer" 1 "no tokenizer.json at $work/none" \
    "$T" mkmodel --preset qwen2.5-0.5b --type q8_0 --tokenizer "$work/none" "$M"
[[ ! -e $M ]] || fail "a failed mkmodel left $M"
ok "nothing written on failure"

# ---- a real file ----
"$T" mkmodel --preset qwen2.5-0.5b --type q4_k_m --layers 1 --seed 3 --threads 1 --tokenizer "$work/tok" "$M" \
    2> "$work/err" || fail "mkmodel: $(cat "$work/err")"
grep -qF "reduced: block_count: 1 of the released 24 layers" "$work/err" || fail "no reduction line: $(cat "$work/err")"
grep -q "wrote .* M params/s" "$work/err" || fail "no speed line: $(cat "$work/err")"
ok "mkmodel writes and reports the reduction"
"$T" mkmodel --preset qwen2.5-0.5b --type q4_k_m --layers 1 --seed 3 --threads 2 --tokenizer "$work/tok/tokenizer.json" \
    "$work/m2.gguf" 2> /dev/null
cmp -s "$M" "$work/m2.gguf" || fail "1 and 2 threads wrote different files"
ok "same seed, same bytes (1 vs 2 threads)"

"$T" inspect --tensors "$M" > "$work/inspect" 2>&1 || fail "inspect: $(cat "$work/inspect")"
grep -q 'qwen2 "Qwen2.5-0.5B synthetic (random weights, seed 3; 1 of 24 layers)"' "$work/inspect" \
    || fail "inspect: name: $(head -5 "$work/inspect")"
grep -q "tongyun.synthetic.reduced" "$work/inspect" || fail "inspect lacks tongyun.synthetic.reduced"
grep -q "tokenizer.chat_template" "$work/inspect" || fail "inspect lacks the chat template"
# Q4_K_M: the tied embedding is the output matrix, whose 896-wide rows do not fit Q6_K's 256 block (-> Q8_0); the other
# 896-wide matrices fall back from Q4_K to Q5_0; layer 0's ffn_down (rows of 4864 = 19 x 256) gets Q6_K.
grep -E "token_embd.weight" "$work/inspect" | grep -qi "q8_0" || fail "token_embd not Q8_0: $(grep token_embd "$work/inspect")"
grep -E "blk.0.attn_q.weight" "$work/inspect" | grep -qi "q5_0" || fail "attn_q not Q5_0"
grep -E "blk.0.ffn_down.weight" "$work/inspect" | grep -qi "q6_k" || fail "ffn_down not Q6_K"
ok "inspect shows the synthetic model"

"$T" run -m "$M" -p "Hello" -n 4 --temp 0 > "$work/gen" 2> "$work/err" || fail "run: $(cat "$work/err")"
grep -q "generated 4 tokens" "$work/err" || fail "run did not generate 4 tokens: $(cat "$work/err")"
ok "run generates from it"

finish
