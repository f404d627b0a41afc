#!/usr/bin/env bash
# test_bench_serve.sh - bench/bench_serve against a server it starts on the bundled Tongyun-Mini model: every request
# of every level completes, the JSON carries the figures scripts/sim-validation.sh and the simulator read (per level:
# requests, tokens, decode tok/s, TTFT and TPOT percentiles, and the read bandwidth measured around the level; the
# front end's time per request; each request's send time, TTFT and end to end), and the numbers agree with each
# other; the clients' first requests are sent --ramp-ms apart. No speed is asserted: speeds only have to be positive.
set -euo pipefail
: "${TY_SOURCE_DIR:?}" "${TY_BUILD_DIR:?}" "${TONGYUN:?}"
. "$TY_SOURCE_DIR/tests/lib.sh"
export TY_ROOFLINE_MB=64 # a small bandwidth probe: the figure only has to exist here
"$TY_BUILD_DIR/bench/bench_serve" --model "$TY_SOURCE_DIR/data/tongyun-mini/tongyun-mini.gguf" --tongyun "$TONGYUN" \
    --threads 2 --levels 1,2 --requests 3 --max-tokens 6 --ramp-ms 50 --json > "$work/serve.json" 2> "$work/serve.err" ||
    fail "bench_serve failed: $(cat "$work/serve.err")"
json_check "every request of both levels succeeds, with consistent figures" "$work/serve.json" '
d["failed"] == 0 and d["threads"] == 2 and [l["concurrency"] for l in d["levels"]] == [1, 2]
and all(l["requests"] == 3 and l["ok"] == 3 and l["completion_tokens"] > 0 and l["prompt_tokens"] > 0
        and abs(l["decode_tok_s"] - l["completion_tokens"] / l["wall_s"]) <= 0.02 * l["decode_tok_s"] + 0.01
        and 0 < l["ttft_s"]["p50"] <= l["ttft_s"]["p90"] <= l["ttft_s"]["p99"]
        and l["mem_bw_gbs"] > 0 for l in d["levels"])
and d["front_s"] > 0 and d["ramp_s"] == 0.05 and d["levels"][1]["per_request"][1][0] >= 0.049
and all(len(l["per_request"]) == 3 and all(0 <= s and 0 < t <= e for s, t, e in l["per_request"])
        and sorted(t for _, t, _ in l["per_request"])[1] == l["ttft_s"]["p50"] for l in d["levels"])'
finish
