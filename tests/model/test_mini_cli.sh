#!/usr/bin/env bash
# test_mini_cli.sh - the bundled Tongyun-Mini model (data/tongyun-mini/, copied beside the binary by the build) is the
# default of `run` and `chat` without -m: it is found, announced on stderr, and answers a definition question in its
# trained dictionary format; $TONGYUN_MODEL overrides it; its held-out perplexity, as logged when it was trained, is
# far below the unigram baseline logged by the same run. (`serve` without -m is tested in tests/cloud/test_server.py.)
set -euo pipefail
: "${TONGYUN:?}" "${TY_SOURCE_DIR:?}"
. "$TY_SOURCE_DIR/tests/lib.sh"
unset TONGYUN_MODEL
[ -f "$(dirname "$TONGYUN")/data/tongyun-mini.gguf" ] || fail "the build did not copy data/tongyun-mini.gguf beside tongyun"
format='^[A-Z][^:]*( \((noun|verb|adjective|adverb)\): | has [0-9] common meanings:)'

"$TONGYUN" run --chat --no-think --temp 0 -n 48 -p 'What does "water" mean?' > "$work/run.out" 2> "$work/run.err" ||
    fail "run without -m: $(cat "$work/run.err")"
grep -q "bundled Tongyun-Mini" "$work/run.err" || fail "run does not say it uses the bundled model: $(cat "$work/run.err")"
grep -Eq "$format" "$work/run.out" || fail "run's answer is not in the trained format: $(cat "$work/run.out")"
ok "run without -m answers with the bundled model in its dictionary format"

printf 'What does the word "house" mean?\n/exit\n' | "$TONGYUN" chat --no-think --temp 0 -n 48 > "$work/chat.out" \
    2> "$work/chat.err" || fail "chat without -m: $(cat "$work/chat.err")"
grep -Eq "$format" "$work/chat.out" || fail "chat's answer is not in the trained format: $(cat "$work/chat.out")"
ok "chat without -m answers in the trained format"

TONGYUN_MODEL="$work/none.gguf" exit_code "TONGYUN_MODEL overrides the bundled model" 1 "none.gguf" \
    "$TONGYUN" run -p hi -n 1

json_check "held-out perplexity far below the unigram baseline" <(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(json.dumps({"uni": next(r["unigram_eval_ppl"] for r in rows if "unigram_eval_ppl" in r),
                  "ppl": [r["eval_ppl"] for r in rows if "eval_ppl" in r][-1]}))' \
    "$TY_SOURCE_DIR/data/tongyun-mini/train-log.jsonl") "d['ppl'] * 10 < d['uni']"
finish
