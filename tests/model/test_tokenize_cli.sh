#!/usr/bin/env bash
# test_tokenize_cli.sh - the contract of `tongyun tokenize` and `tongyun detokenize`: exact output bytes (ids joined
# by single spaces and a newline; JSON arrays with ", "), special tokens on and off, text from an argument, a file or
# standard input, --jsonl over every reference vector in both directions, ids given in several forms, a GGUF model
# (-m) against its tokenizer.json, and the exit codes and messages of bad input (2 = usage, 1 = failure).
set -euo pipefail
T=${TONGYUN:-build/tongyun}
SRC=${TY_SOURCE_DIR:-.}
. "$SRC/tests/lib.sh"
gzip -dc "$SRC/data/tokenizers/qwen3/tokenizer.json.gz" > "$work/tokenizer.json"
cp "$SRC/data/tokenizers/qwen3/tokenizer_config.json" "$work/"
J=$work/tokenizer.json
VEC=$SRC/tests/data/tokenizer/vectors.jsonl

# ---- tokenize: exact bytes ----
printf '9707 11 1879\n' > "$work/want"
"$T" tokenize --tokenizer "$J" "Hello, world" > "$work/got"
same_bytes "tokenize TEXT prints ids, single spaces, one newline" "$work/want" "$work/got"

printf '\n' > "$work/want"
"$T" tokenize --tokenizer "$J" "" > "$work/got"
same_bytes "tokenize of empty text prints an empty line" "$work/want" "$work/got"

printf '151644 872 198 13048 151667 87 151668 151645\n' > "$work/want"
"$T" tokenize --tokenizer "$J" $'<|im_start|>user\nHi<think>x</think><|im_end|>' > "$work/got"
same_bytes "special tokens are recognised by default" "$work/want" "$work/got"

printf '27 91 318 4906 91 29 872 151667\n' > "$work/want"
"$T" tokenize --tokenizer "$J" --no-special '<|im_start|>user<think>' > "$work/got"
same_bytes "--no-special: special tokens are text, <think> is still an added token" "$work/want" "$work/got"

printf 'Hello, world' > "$work/text"
printf '9707 11 1879\n' > "$work/want"
"$T" tokenize --tokenizer "$J" -f "$work/text" > "$work/got"
same_bytes "tokenize -f FILE" "$work/want" "$work/got"
"$T" tokenize --tokenizer "$J" -f - < "$work/text" > "$work/got"
same_bytes "tokenize -f - (standard input)" "$work/want" "$work/got"

# ---- tokenize --jsonl: every reference vector ----
sed -E 's/.*"ids":\[([^]]*)\].*/[\1]/; s/,/, /g' "$VEC" > "$work/want"
"$T" tokenize --tokenizer "$J" --jsonl "$VEC" > "$work/got"
[[ $(wc -l < "$work/got") == 112 ]] || fail "tokenize --jsonl: expected 112 lines"
same_bytes "tokenize --jsonl: all 112 vectors, json.dumps spacing" "$work/want" "$work/got"
"$T" tokenize --tokenizer "$J" --jsonl - < "$VEC" > "$work/got"
same_bytes "tokenize --jsonl - (standard input)" "$work/want" "$work/got"

# ---- detokenize ----
printf 'Hello, world\n' > "$work/want"
for form in "9707 11 1879" "9707,11,1879" "[9707, 11, 1879]"; do
    "$T" detokenize --tokenizer "$J" "$form" > "$work/got"
    same_bytes "detokenize '$form'" "$work/want" "$work/got"
done
"$T" detokenize --tokenizer "$J" 9707 11 1879 > "$work/got"
same_bytes "detokenize IDS as separate arguments" "$work/want" "$work/got"

printf '<|im_start|>\xef\xbf\xbd\n' > "$work/want"
"$T" detokenize --tokenizer "$J" 151644 158 > "$work/got" # 158: the byte 0xE2 alone, an unfinished character
same_bytes "detokenize: special tokens as text, a broken character as U+FFFD" "$work/want" "$work/got"

grep '"roundtrip":true' "$VEC" > "$work/rt.jsonl"
sed -E 's/.*"ids":(\[[^]]*\]).*/{"ids": \1}/' "$work/rt.jsonl" > "$work/ids.jsonl"
sed -E 's/^\{"text":(.*),"ids":\[.*$/{"text": \1}/' "$work/rt.jsonl" > "$work/want"
"$T" detokenize --tokenizer "$J" --jsonl "$work/ids.jsonl" > "$work/got"
same_bytes "detokenize --jsonl {\"ids\": [...]}: every round-trip vector gives its text back" "$work/want" "$work/got"
sed -E 's/.*"ids":(\[[^]]*\]).*/\1/' "$work/rt.jsonl" > "$work/arrays.jsonl"
"$T" detokenize --tokenizer "$J" --jsonl - < "$work/arrays.jsonl" > "$work/got"
same_bytes "detokenize --jsonl with plain arrays on standard input" "$work/want" "$work/got"

# ---- a GGUF model (-m): the converted tiny Qwen3 against its tokenizer.json ----
TINY=$SRC/tests/data/models/qwen3-tiny
"$T" convert "$TINY" "$work/tiny.gguf" > /dev/null 2>&1 || fail "tongyun convert of $TINY failed (needed for -m)"
for text in "Hello world" $'<|im_start|>user\nhi<|im_end|>' "The quick brown fox 123"; do
    "$T" tokenize --tokenizer "$TINY/tokenizer.json" "$text" > "$work/want"
    "$T" tokenize -m "$work/tiny.gguf" "$text" > "$work/got"
    same_bytes "tokenize -m MODEL.gguf = --tokenizer tokenizer.json: '${text//$'\n'/\\n}'" "$work/want" "$work/got"
done
ids=$("$T" tokenize -m "$work/tiny.gguf" "Hello world")
printf 'Hello world\n' > "$work/want"
"$T" detokenize -m "$work/tiny.gguf" $ids > "$work/got"
same_bytes "detokenize -m MODEL.gguf" "$work/want" "$work/got"

# ---- errors ----
exit_code "tokenize without a tokenizer is a usage error" 2 "exactly one of -m" "$T" tokenize "x"
exit_code "tokenize with both -m and --tokenizer" 2 "exactly one of -m" "$T" tokenize -m a.gguf --tokenizer "$J" "x"
exit_code "tokenize with two texts" 2 "one argument" "$T" tokenize --tokenizer "$J" "a" "b"
exit_code "tokenize with an unknown option" 2 "unknown option '--bogus'" "$T" tokenize --tokenizer "$J" --bogus "a"
exit_code "tokenize of invalid UTF-8 names the offset" 1 "offset 3" "$T" tokenize --tokenizer "$J" $'abc\xff'
exit_code "tokenize with a missing tokenizer file" 1 "no-such.json" "$T" tokenize --tokenizer "$work/no-such.json" "a"
exit_code "tokenize with a GGUF that is not one" 1 "tokenizer.json" "$T" tokenize -m "$J" "a"
printf '{"text": "ok"}\n{"txt": 1}\n' > "$work/bad.jsonl"
exit_code "tokenize --jsonl with a bad line names it" 1 "line 2" "$T" tokenize --tokenizer "$J" --jsonl "$work/bad.jsonl"
exit_code "detokenize of an out-of-range id" 1 "out of range" "$T" detokenize --tokenizer "$J" 151669
exit_code "detokenize of something that is not an id" 1 "not a list of token ids" "$T" detokenize --tokenizer "$J" 12x
exit_code "detokenize without ids" 2 "either token ids or --jsonl" "$T" detokenize --tokenizer "$J"
printf '[1, 2]\n{"ids": [1, -3]}\n' > "$work/bad.jsonl"
exit_code "detokenize --jsonl with a bad id names the line" 1 "line 2" "$T" detokenize --tokenizer "$J" --jsonl "$work/bad.jsonl"
"$T" tokenize --help | grep -q -- "--jsonl" || fail "tokenize --help"
"$T" detokenize --help | grep -q -- "--jsonl" || fail "detokenize --help"
ok "--help of both commands"

finish
