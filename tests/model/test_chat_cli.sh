#!/usr/bin/env bash
# test_chat_cli.sh - `tongyun chat` driven through a pipe with the tiny Qwen3 fixture (tests/data/models/qwen3-tiny,
# converted here): it answers every turn, reuses the KV cache across turns, /reset starts over (the same question gets
# the same answer), /exit stops reading, /no_think and --no-think change the prompt, a full context is reported without
# a crash, usage errors exit 2, and with --temp 0 the whole session is deterministic.
set -euo pipefail
: "${TONGYUN:?}" "${TY_SOURCE_DIR:?}"
hf="$TY_SOURCE_DIR/tests/data/models/qwen3-tiny"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_chat_cli: $*" >&2; exit 1; }
has() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "$1 lacks '$2'"; }; }
# prompt_tokens FILE TURN / reused_tokens FILE TURN: numbers from the -v line of that turn
prompt_tokens() { sed -n "s/^\[turn $2: prompt \([0-9]*\) tokens.*/\1/p" "$1"; }
reused_tokens() { sed -n "s/^\[turn $2: prompt [0-9]* tokens, \([0-9]*\) reused.*/\1/p" "$1"; }

[ -d "$hf" ] || fail "fixture $hf is missing (made by tests/fixtures/make_fixtures.py)"
"$TONGYUN" convert "$hf" "$tmp/m.gguf" --type f32 > "$tmp/convert.log" 2>&1 || { cat "$tmp/convert.log" >&2; fail "convert failed"; }
model="$tmp/m.gguf"
chat() { "$TONGYUN" chat -m "$model" --temp 0 -n 12 -v "$@"; }

# A session: two turns, /reset, the first question again, /exit; the line after /exit must not be answered.
session=$'Hello\nWhat is 2+2?\n/reset\nHello\n/exit\nThis is never read\n'
printf '%s' "$session" | chat > "$tmp/s1.out" 2> "$tmp/s1.err" || { cat "$tmp/s1.err" >&2; fail "session exited non-zero"; }
for t in 1 2 3; do has "$tmp/s1.err" "[turn $t: prompt "; done
grep -qF "[turn 4:" "$tmp/s1.err" && fail "a message after /exit was answered"
has "$tmp/s1.err" "[new conversation]"
[ "$(wc -c < "$tmp/s1.out")" -gt 3 ] || fail "no reply text in $(cat "$tmp/s1.out")"
grep -q $'\033\\[' "$tmp/s1.out" && fail "terminal escapes written to a pipe"

# The second turn reuses the first prompt from the KV cache; after /reset the first prompt is found there again.
p1=$(prompt_tokens "$tmp/s1.err" 1) r2=$(reused_tokens "$tmp/s1.err" 2) p3=$(prompt_tokens "$tmp/s1.err" 3)
r3=$(reused_tokens "$tmp/s1.err" 3)
[ "$(reused_tokens "$tmp/s1.err" 1)" = 0 ] || fail "turn 1 claims reuse from an empty cache"
[ "$r2" -ge "$p1" ] || fail "turn 2 reused $r2 tokens; the first prompt alone is $p1"
[ "$p3" = "$p1" ] || fail "after /reset the prompt is $p3 tokens, not the first prompt's $p1"
[ "$r3" = $((p1 - 1)) ] || fail "after /reset $r3 tokens were reused; want $((p1 - 1)) (all but the last)"

# Deterministic with --temp 0: the same session gives the same bytes; and the answer after /reset is the first
# answer again (one-turn session = first reply; the session's output starts and ends with it).
printf '%s' "$session" | chat > "$tmp/s2.out" 2> /dev/null
cmp -s "$tmp/s1.out" "$tmp/s2.out" || fail "two runs of the same session differ"
printf 'Hello\n' | chat > "$tmp/one.out" 2> /dev/null
n=$(wc -c < "$tmp/one.out")
[ "$(head -c "$n" "$tmp/s1.out" | od -An -tx1)" = "$(od -An -tx1 < "$tmp/one.out")" ] || fail "first reply differs"
[ "$(tail -c "$n" "$tmp/s1.out" | od -An -tx1)" = "$(od -An -tx1 < "$tmp/one.out")" ] || fail "reply after /reset differs"

# End of input without /exit, and a last line without a newline, still get their answer.
printf 'Hello' | chat > "$tmp/eof.out" 2> "$tmp/eof.err"
cmp -s "$tmp/eof.out" "$tmp/one.out" || fail "a last line without newline is answered differently"

# Thinking off renders the empty <think></think> block into the prompt: more prompt tokens, the same either way it is
# asked for; /think switches back.
printf '/no_think\nHello\n' | chat > /dev/null 2> "$tmp/nt.err"
has "$tmp/nt.err" "[thinking off]"
printf 'Hello\n' | chat --no-think > /dev/null 2> "$tmp/nt2.err"
pn=$(prompt_tokens "$tmp/nt.err" 1)
[ "$pn" -gt "$p1" ] || fail "/no_think prompt is $pn tokens, not more than $p1"
[ "$(prompt_tokens "$tmp/nt2.err" 1)" = "$pn" ] || fail "--no-think and /no_think prompts differ"
printf '/think\nHello\n' | chat --no-think > /dev/null 2> "$tmp/t.err"
[ "$(prompt_tokens "$tmp/t.err" 1)" = "$p1" ] || fail "/think did not restore the thinking prompt"

# A context too small for the conversation: the reply is cut, the next message is refused with advice, /reset works.
printf 'Hello\nWhat is 2+2?\n/reset\nHello\n' | "$TONGYUN" chat -m "$model" --temp 0 --ctx 40 -n 100 -v \
    > "$tmp/full.out" 2> "$tmp/full.err" || { cat "$tmp/full.err" >&2; fail "exit non-zero on a full context"; }
has "$tmp/full.err" "stop: context full"
has "$tmp/full.err" "/reset"
has "$tmp/full.err" "the context holds 40"
has "$tmp/full.err" "[turn 2: prompt $p1 tokens"

# Sampling with a seed is reproducible too.
printf 'Hello\nMore\n' | "$TONGYUN" chat -m "$model" --temp 0.9 --seed 7 -n 16 > "$tmp/r1.out" 2> /dev/null
printf 'Hello\nMore\n' | "$TONGYUN" chat -m "$model" --temp 0.9 --seed 7 -n 16 > "$tmp/r2.out" 2> /dev/null
cmp -s "$tmp/r1.out" "$tmp/r2.out" || fail "the same seed gave different replies"

# Usage errors and a missing model.
set +e
cp "$TONGYUN" "$tmp/tongyun-alone" # without -m, $TONGYUN_MODEL or a bundled model beside the binary
env -u TONGYUN_MODEL "$tmp/tongyun-alone" chat < /dev/null > /dev/null 2>&1; [ $? = 2 ] || fail "no model at all should exit 2"
"$TONGYUN" chat -m "$model" --temp -1 < /dev/null > /dev/null 2>&1; [ $? = 2 ] || fail "--temp -1 should exit 2"
"$TONGYUN" chat -m "$model" --bogus < /dev/null > /dev/null 2>&1; [ $? = 2 ] || fail "unknown option should exit 2"
"$TONGYUN" chat -m "$tmp/none.gguf" < /dev/null > /dev/null 2> "$tmp/missing.err"; [ $? = 1 ] || fail "missing model"
set -e
has "$tmp/missing.err" "none.gguf"
"$TONGYUN" chat --help | grep -q "/no_think" || fail "--help does not list the commands"
echo "test_chat_cli: ok"
