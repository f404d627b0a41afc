#!/usr/bin/env bash
# test_sim_cli.sh - the contract of `tongyun devices`, `tongyun sim` and `tongyun plan`, which other tools script:
# the JSON fields the issue names, the SVG chart, the planner's ranked output and `--emit serve`, training mode,
# calibration against a bench JSON (from the host's figures, or from the engine's microbenchmarks), the validation
# report, and the exit codes and messages of impossible or malformed input (1 = the configuration is impossible,
# 2 = usage error).
set -euo pipefail
T=${TONGYUN:-build/tongyun}
SRC=${TY_SOURCE_DIR:-.}
. "$SRC/tests/lib.sh"

# ---- devices ----
"$T" devices --no-measure > "$work/dev.txt"
for chip in ppu-810e h20 a800-sxm a800-pcie a100 h100 h200 b200 tpu-v5e tpu-v5p tpu-v6e tpu7x ascend-910b \
    ascend-910c mi300x host; do
    grep -q "^$chip " "$work/dev.txt" || fail "devices: no row for $chip"
done
grep -q "^ppu-810e .*~2600.*~119" "$work/dev.txt" || fail "devices: the 810E's estimates are not marked"
ok "devices: every chip of the issue, estimates marked with ~"

"$T" devices --json > "$work/dev.json"
json_check "devices --json: every figure has a source; the host is measured" "$work/dev.json" \
    "all(isinstance(v, dict) and v['source'] for c in d['chips'] for k, v in c.items() if isinstance(v, dict)) and \
     [c for c in d['chips'] if c['name'] == 'host'][0]['mem_bw_gbs']['value'] > 0 and \
     d['host_microbenchmarks']['fma_gflops'] > 0"

"$T" devices --no-measure --chips-file "$SRC/data/devices/example-chips.json" > "$work/dev2.txt"
grep -q "^example-npu " "$work/dev2.txt" || fail "devices --chips-file: the file's chip is missing"
ok "devices --chips-file adds a chip"

# ---- sim ----
"$T" sim --model qwen3-8b --chip h20 --chips 8 --rate 20 --requests 200 --prompt-len 1024 --output-len 128 \
    --json > "$work/sim.json"
json_check "sim --json: the contract's fields" "$work/sim.json" \
    "all(isinstance(d[k], (int, float)) for k in ['throughput_tok_s', 'prefill_tok_s_per_chip', \
     'decode_tok_s_per_chip', 'goodput_rps', 'kv_util', 'cost_per_mtok']) and \
     all(all(isinstance(d[m][p], (int, float)) for p in ['p50', 'p90', 'p99']) for m in ['ttft_ms', 'tpot_ms']) \
     and d['requests'] == 200 and d['config']['dp'] == 8 and d['ttft_ms']['p99'] >= d['ttft_ms']['p50']"

"$T" sim --model qwen3-30b-a3b --chip ppu-810e --chips 16 --ep 8 --rate 30 --requests 200 \
    --prompt-len lognormal:2000:0.5 --output-len 200-400 --svg "$work/load.svg" > "$work/sim.txt" 2> "$work/sim.err"
grep -q "TTFT" "$work/sim.txt" && grep -q "goodput" "$work/sim.txt" && grep -q "per million output tokens" \
    "$work/sim.txt" || fail "sim table: $(cat "$work/sim.txt")"
grep -q "<svg" "$work/load.svg" && grep -q "time per output token" "$work/load.svg" || fail "sim --svg: no chart"
ok "sim: readable table and the SVG latency-against-load chart"

printf 'arrival,prompt_tokens,output_tokens\n0.0,500,50\n0.1,700,20\n0.3,300,90\n' > "$work/trace.csv"
"$T" sim --model qwen3-0.6b --chip a100 --chips 1 --trace "$work/trace.csv" --json > "$work/trace.json"
json_check "sim --trace runs the trace's requests" "$work/trace.json" "d['requests'] == 3"

# a closed loop: more clients queue longer (TTFT up) and finish more tokens a second; the front end adds to TTFT
for u in 1 16; do
    "$T" sim --model qwen3-8b --chip h20 --chips 1 --users $u --requests 64 --prompt-len 1024 --output-len 128 \
        --json > "$work/users$u.json"
done
"$T" sim --model qwen3-8b --chip h20 --chips 1 --users 1 --requests 64 --prompt-len 1024 --output-len 128 \
    --front-ms 50 --json > "$work/front.json"
# clients ramped 100 s apart never meet: each of the 16 first requests runs alone, as a single client's would
"$T" sim --model qwen3-8b --chip h20 --chips 1 --users 16 --requests 16 --prompt-len 1024 --output-len 128 \
    --ramp-ms 100000 --json > "$work/ramp.json"
python3 - "$work/users1.json" "$work/users16.json" "$work/front.json" "$work/ramp.json" << 'PY' ||
import json, sys
one, many, front, ramp = (json.load(open(f)) for f in sys.argv[1:])
assert abs(ramp['ttft_ms']['p99'] - one['ttft_ms']['p50']) < 1e-6, (ramp['ttft_ms'], one['ttft_ms'])
assert one['requests'] == many['requests'] == 64
assert many['ttft_ms']['p50'] > 2 * one['ttft_ms']['p50'] and many['throughput_tok_s'] > 4 * one['throughput_tok_s']
assert abs(front['ttft_ms']['p50'] - one['ttft_ms']['p50'] - 50) < 1, (front['ttft_ms'], one['ttft_ms'])
PY
    fail "sim --users/--ramp-ms/--front-ms"
ok "sim --users: a closed loop of clients (--ramp-ms apart); --front-ms: a serial front end counted in TTFT"
exit_code "sim: --users with --rate" 2 "give one of --rate QPS, --trace FILE or --users N" \
    "$T" sim --model qwen3-8b --chip h20 --chips 1 --users 4 --rate 3

"$T" sim --model qwen3-8b --chip h20 --chips 8 --disagg 2 --rate 10 --requests 100 --json > "$work/pd.json"
json_check "sim --disagg: prefill/decode disaggregation" "$work/pd.json" \
    "d['config']['prefill_instances'] == 2 and d['throughput_tok_s'] > 0"

"$T" sim --train --model qwen3-8b --chip ppu-810e --chips 256 --tp 8 --pp 2 --zero 1 --global-batch 512 \
    --json > "$work/train.json"
json_check "sim --train: step time and MFU" "$work/train.json" \
    "0 < d['mfu'] < 1 and d['step_s'] > 0 and d['dp'] == 16"

# ---- impossible or malformed input: exit 1 and a message naming the constraint ----
exit_code "TP not dividing the heads" 1 "TP 3 does not divide the 32 attention heads" \
    "$T" sim --model qwen3-8b --chip h20 --chips 3 --tp 3 --rate 1
exit_code "EP not dividing the experts" 1 "EP 3 does not divide the 128 experts" \
    "$T" sim --model qwen3-30b-a3b --chip h20 --chips 3 --ep 3 --rate 1
exit_code "model does not fit" 1 "does not fit the memory" \
    "$T" sim --model qwen3-235b-a22b --chip h100 --chips 1 --rate 1
exit_code "unknown chip lists the known ones" 1 "known chips: ppu-810e, h20" \
    "$T" sim --model qwen3-8b --chip h300 --rate 1
exit_code "unknown model lists the presets" 1 "qwen3-30b-a3b" "$T" sim --model qwen9 --chip h20 --rate 1
printf 'arrival,prompt_tokens,output_tokens\n0.0,128,64\n0.5,abc,64\n' > "$work/bad.csv"
exit_code "malformed trace names the line" 1 "bad.csv:3: prompt length 'abc'" \
    "$T" sim --model qwen3-8b --chip h20 --trace "$work/bad.csv"
exit_code "usage: --rate, --trace or --users" 2 "give one of --rate QPS, --trace FILE or --users N" "$T" sim --model qwen3-8b --chip h20
exit_code "usage: bad number" 2 "--tp expects an integer" "$T" sim --model qwen3-8b --chip h20 --tp x --rate 1
exit_code "usage: bad precision" 2 "--precision expects" "$T" sim --model qwen3-8b --chip h20 --precision q9

# ---- plan ----
"$T" plan --model qwen3-8b --rate 40 --ttft-ms 2000 --tpot-ms 50 --chips-from h20,a100,ppu-810e --requests 60 \
    --json > "$work/plan.json"
json_check "plan --json: ranked by cost, with a Pareto front" "$work/plan.json" \
    "len(d['configs']) > 0 and len(d['pareto']) > 0 and \
     all(a['cost_per_hour'] <= b['cost_per_hour'] for a, b in zip(d['configs'], d['configs'][1:])) and \
     all(c['replicas'] * c['rate_per_replica'] >= 40 - 1e-6 for c in d['configs'])"
"$T" plan --model qwen3-8b --rate 5 --ttft-ms 2000 --tpot-ms 50 --chips-from h20 --requests 60 --emit serve \
    > "$work/serve.txt" 2> /dev/null
grep -q "^tongyun serve --model qwen3-8b.gguf --max-seqs 256 --ctx 1280$" "$work/serve.txt" ||
    fail "plan --emit serve: $(cat "$work/serve.txt")"
ok "plan --emit serve prints a serve command line"
exit_code "plan: nothing meets an impossible SLO" 1 "" \
    "$T" plan --model qwen3-8b --rate 5 --ttft-ms 2000 --tpot-ms 0.001 --chips-from h20 --requests 40 --emit serve
exit_code "plan: required flags" 2 "--rate" "$T" plan --model qwen3-8b

# ---- calibration and the report ----
printf '[{"model": "qwen3-0.6b", "type": "Q8_0", "pp_tok_s": 50, "tg_tok_s": 10, "mem_bw_gbs": 8}]\n' > "$work/bench.json"
"$T" sim --calibrate "$work/bench.json" > "$work/cal.json"
json_check "sim --calibrate compares predictions with a bench run" "$work/cal.json" \
    "d[0]['predicted']['tg_tok_s'] > 0 and abs(d[0]['error']['tg_tok_s'] - (d[0]['predicted']['tg_tok_s'] / 10 - 1)) < 1e-4"
# `tongyun bench --json` writes JSON Lines with its own roofline figures, which the prediction then uses
printf '%s\n' '{"model": "qwen3-0.6b", "type": "Q8_0", "threads": 2, "pp_tok_s": 50, "tg_tok_s": 10, "mem_bw_gbs": 8, "fma_gflops": 100, "int8_gops": 400}' \
    '{"model": "qwen3-0.6b", "type": "Q8_0", "threads": 2, "pp_tok_s": 50, "tg_tok_s": 10, "mem_bw_gbs": 16, "fma_gflops": 100, "int8_gops": 400}' \
    > "$work/bench.jsonl"
"$T" sim --calibrate "$work/bench.jsonl" > "$work/cal2.json"
json_check "sim --calibrate reads JSON Lines and predicts from each entry's own microbenchmarks" "$work/cal2.json" \
    "len(d) == 2 and [r['predicted']['mem_bw_gbs'] for r in d] == [8, 16] and \
     all(r['host_figures'].startswith('the bench run') for r in d) and \
     d[1]['predicted']['tg_tok_s'] > 1.5 * d[0]['predicted']['tg_tok_s']"
"$T" sim --validate "$work/report.md" 2> /dev/null
grep -q "Not compared in this run" "$work/report.md" && grep -q "infersim-qwen3-30b-a3b-decode" "$work/report.md" ||
    fail "sim --validate: report incomplete"
ok "sim --validate writes the report"

# the engine calibration from committed microbenchmark outputs (tests/sim/data/engine-*)
D="$SRC/tests/sim/data"
micro="$D/engine-kernels.json,$D/engine-kernels-bf16.json,$D/engine-pool.json"
"$T" sim --calibrate "$D/engine-bench.jsonl" --micro-json "$micro" --serve-json "$D/engine-serve.json" > "$work/eng.json"
json_check "sim --calibrate --micro-json predicts bench and bench_serve from microbenchmarks" "$work/eng.json" \
    "len(d['bench']) == 2 and abs(d['bench'][0]['breakdown']['dec_eff'] - 0.625) < 1e-9 and \
     abs(d['bench'][0]['error']['tg_tok_s'] - (d['bench'][0]['predicted']['tg_tok_s'] / 30 - 1)) < 1e-5 and \
     len(d['serve']['levels']) == 2 and d['serve']['levels'][1]['predicted']['decode_tok_s'] > 0"
"$T" sim --validate "$work/report2.md" --bench-json "$D/engine-bench.jsonl" --micro-json "$micro" \
    --serve-json "$D/engine-serve.json" --notes "fixture run" 2> /dev/null
grep -q "In this run: [0-9]* of 4 .tongyun bench. figures within 15% ([0-9]* of 4 against each test's best \
repetition); [0-9]* of 4 .bench_serve. figures" \
    "$work/report2.md" && grep -q "fixture run" "$work/report2.md" || fail "sim --validate: engine section incomplete"
ok "sim --validate with the engine's runs writes section 1"
exit_code "sim --calibrate: a microbenchmark file of neither kind" 1 "neither" \
    "$T" sim --calibrate "$D/engine-bench.jsonl" --micro-json "$D/engine-serve.json"

finish
