#!/usr/bin/env bash
# test_run_cli.sh - `tongyun run` and `tongyun perplexity` on the tiny Qwen3 fixture (tests/data/models/qwen3-tiny,
# converted here): greedy output is deterministic and streamed text equals the --json text; stdout carries only the
# generated text (or one JSON object) and stats go to stderr; the same seed gives the same sampled text; --chat renders
# the prompt; a prompt longer than the context, an invalid UTF-8 prompt and bad flags fail with clear messages;
# perplexity counts its windows as documented (each window scores all its tokens but the first).
# Numerical agreement with Hugging Face (greedy ids, NLL) is checked in test_reference.c.
set -euo pipefail
: "${TONGYUN:?}" "${TY_SOURCE_DIR:?}"
hf="$TY_SOURCE_DIR/tests/data/models/qwen3-tiny"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_run_cli: $*" >&2; exit 1; }
has() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "$1 lacks '$2'"; }; }

[ -d "$hf" ] || fail "fixture $hf is missing (made by tests/fixtures/make_fixtures.py)"
"$TONGYUN" convert "$hf" "$tmp/m.gguf" --type f32 > "$tmp/convert.log" 2>&1 || { cat "$tmp/convert.log" >&2; fail "convert failed"; }
m="$tmp/m.gguf"
run() { "$TONGYUN" run -m "$m" --threads 2 "$@"; }

# --help on both commands
"$TONGYUN" run --help | grep -q "usage: tongyun run" || fail "run --help"
"$TONGYUN" perplexity --help | grep -q "usage: tongyun perplexity" || fail "perplexity --help"

# Greedy: deterministic, streamed text == JSON text, stats on stderr only.
run -p "Hello, world" -n 24 --temp 0 > "$tmp/g1.out" 2> "$tmp/g1.err" || { cat "$tmp/g1.err" >&2; fail "greedy run failed"; }
run -p "Hello, world" -n 24 --temp 0 > "$tmp/g2.out" 2> /dev/null
cmp -s "$tmp/g1.out" "$tmp/g2.out" || fail "two greedy runs differ"
has "$tmp/g1.err" "tok/s"
grep -q "tok/s" "$tmp/g1.out" && fail "stats were written to stdout"
run -p "Hello, world" -n 24 --temp 0 --json > "$tmp/g.json" 2> /dev/null
[ "$(wc -l < "$tmp/g.json")" = 1 ] || fail "--json printed more than one line: $(cat "$tmp/g.json")"
has "$tmp/g.json" '{"prompt_ids":['
has "$tmp/g.json" '"ids":['
has "$tmp/g.json" '"text":"'
# the streamed text, JSON-escaped the way jansson does for plain characters, appears in the JSON (checked when the
# text has no characters that need escaping)
if ! LC_ALL=C grep -q '[^ -~]\|["\\]' "$tmp/g1.out"; then
    has "$tmp/g.json" "\"text\":\"$(cat "$tmp/g1.out")\"}"
fi
n_ids=$(sed 's/.*"ids":\[\([^]]*\)\].*/\1/' "$tmp/g.json" | tr ',' '\n' | grep -c .)
[ "$n_ids" -le 24 ] && [ "$n_ids" -ge 1 ] || fail "expected 1..24 generated ids, got $n_ids"
# -n 0: nothing generated
run -p "Hello" -n 0 --json > "$tmp/n0.json" 2> /dev/null
has "$tmp/n0.json" '"ids":[]'

# Sampling: the same seed gives the same text.
run -p "The" -n 16 --temp 1.0 --top-k 0 --top-p 1 --min-p 0 --seed 42 > "$tmp/s1.out" 2> /dev/null
run -p "The" -n 16 --temp 1.0 --top-k 0 --top-p 1 --min-p 0 --seed 42 > "$tmp/s2.out" 2> /dev/null
cmp -s "$tmp/s1.out" "$tmp/s2.out" || fail "the same seed gave different text"
run -p "The" -n 8 --temp 0.7 --repeat-penalty 1.3 --presence-penalty 0.5 --frequency-penalty 0.2 --seed 1 \
    --kv-type f32 --ctx 64 > /dev/null 2> "$tmp/pen.err" || { cat "$tmp/pen.err" >&2; fail "penalty flags"; }

# --chat renders the prompt with the chat template: the prompt ids start with <|im_start|> (513 in this vocabulary).
run -p "Hi" --chat --no-think -n 4 --temp 0 --json > "$tmp/chat.json" 2> /dev/null || fail "--chat failed"
has "$tmp/chat.json" '{"prompt_ids":[513,'
run -p "Hi" --chat --system "Be brief." --think -n 4 --temp 0 --json > "$tmp/chat2.json" 2> /dev/null || fail "--chat --system"
[ "$(sed 's/"ids".*//' "$tmp/chat2.json")" != "$(sed 's/"ids".*//' "$tmp/chat.json")" ] || fail "--system did not change the prompt"

# Errors: prompt longer than the context, invalid UTF-8, bad flags.
long=$(printf 'word %.0s' $(seq 1 80))
set +e
run -p "$long" --ctx 16 -n 4 > "$tmp/long.out" 2> "$tmp/long.err"; rc=$?
set -e
[ "$rc" = 1 ] || fail "a prompt longer than the context exited $rc, want 1"
has "$tmp/long.err" "context holds 16"
grep -q "prompt is [0-9]* tokens" "$tmp/long.err" || fail "the error does not give the prompt length: $(cat "$tmp/long.err")"
[ -s "$tmp/long.out" ] && fail "text printed despite the error"
set +e
run -p "$(printf 'bad \xff\xfe byte')" -n 4 > /dev/null 2> "$tmp/utf8.err"; rc=$?
set -e
[ "$rc" = 1 ] || fail "an invalid UTF-8 prompt exited $rc, want 1"
grep -qi "utf-8" "$tmp/utf8.err" || fail "the invalid UTF-8 error does not say so: $(cat "$tmp/utf8.err")"
expect_usage() {
    set +e
    "$TONGYUN" run "$@" > /dev/null 2> "$tmp/usage.err"; rc=$?
    set -e
    [ "$rc" = 2 ] || fail "run $* exited $rc, want 2"
}
# without -m, $TONGYUN_MODEL or a bundled model beside the binary (a copy of it elsewhere), a model is required
cp "$TONGYUN" "$tmp/tongyun-alone"
set +e
env -u TONGYUN_MODEL "$tmp/tongyun-alone" run -p x > /dev/null 2> "$tmp/alone.err"; rc=$?
set -e
[ "$rc" = 2 ] && grep -q -- "-m MODEL is required" "$tmp/alone.err" || fail "run without any model exited $rc: $(cat "$tmp/alone.err")"
expect_usage -m "$m"
expect_usage -m "$m" -p x --temp abc
expect_usage -m "$m" -p x --kv-type q8_0
expect_usage -m "$m" -p x --bogus
expect_usage -m "$m" -p x --system hi
set +e
"$TONGYUN" run -m "$tmp/missing.gguf" -p x > /dev/null 2> "$tmp/missing.err"; rc=$?
set -e
[ "$rc" = 1 ] || fail "a missing model exited $rc, want 1"
has "$tmp/missing.err" "missing.gguf"

# Perplexity: a short text is one window scoring T-1 tokens; with --ctx W the text is cut into windows of W tokens,
# each scoring all its tokens but the first.
printf 'The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again.' > "$tmp/t.txt"
"$TONGYUN" perplexity -m "$m" -f "$tmp/t.txt" --json --threads 2 > "$tmp/p.json" 2> "$tmp/p.err" || { cat "$tmp/p.err" >&2; fail "perplexity failed"; }
T=$(sed 's/.*"n_tokens":\([0-9]*\).*/\1/' "$tmp/p.json")
S=$(sed 's/.*"n_scored":\([0-9]*\).*/\1/' "$tmp/p.json")
[ "$S" = $((T - 1)) ] || fail "one window: n_scored $S, want $((T - 1)) ($(cat "$tmp/p.json"))"
has "$tmp/p.json" '"nll":'
has "$tmp/p.json" '"ppl":'
W=7
"$TONGYUN" perplexity -m "$m" -f "$tmp/t.txt" --json --ctx $W > "$tmp/pw.json" 2> /dev/null
S=$(sed 's/.*"n_scored":\([0-9]*\).*/\1/' "$tmp/pw.json")
full=$((T / W)) rest=$((T % W))
want=$((full * (W - 1) + (rest > 1 ? rest - 1 : 0)))
[ "$S" = "$want" ] || fail "windows of $W over $T tokens: n_scored $S, want $want"
"$TONGYUN" perplexity -m "$m" -f "$tmp/t.txt" > "$tmp/p.txt" 2> /dev/null
grep -q "^perplexity [0-9.]* (mean NLL" "$tmp/p.txt" || fail "plain perplexity output: $(cat "$tmp/p.txt")"
printf 'a' > "$tmp/one.txt"
set +e
"$TONGYUN" perplexity -m "$m" -f "$tmp/one.txt" > /dev/null 2> "$tmp/one.err"; rc=$?
set -e
[ "$rc" = 1 ] || fail "a one-token text exited $rc, want 1"
has "$tmp/one.err" "at least 2"
set +e
"$TONGYUN" perplexity -m "$m" > /dev/null 2>&1; rc=$?
set -e
[ "$rc" = 2 ] || fail "perplexity without -f exited $rc, want 2"
echo "test_run_cli: ok"
