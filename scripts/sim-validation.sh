#!/usr/bin/env bash
# sim-validation.sh - regenerates docs/sim-validation.md in one run: it measures our engine and predicts it from
# microbenchmarks, then writes the simulator's published points, the 10,000-chip scale run (timed here) and the
# impossible-configuration messages (`tongyun sim --validate`).
#
# The engine part (section 1), all in this run, on synthetic Qwen2.5-0.5B-shaped models (`tongyun mkmodel`, cached in
# build/bench-models/ as scripts/bench-cpu.sh makes them):
#   1. `tongyun bench --json` of each type (Q8_0, Q4_0, Q4_K_M, BF16) at 1 and 2 threads: the figures to predict;
#      each entry also carries the roofline its process measured (bandwidth, FMA, int8 and bf16 peaks);
#   2. microbenchmarks of the engine's parts: bench_pool (thread-pool dispatch, the non-matmul ops of one layer)
#      first, then before each type's bench bench_kernels of the weight types its file holds (each type's gemv share
#      of plain reads and prefill gemm share of its peak);
#   3. bench_serve (a load test of `tongyun serve` on the Q8_0 model at a few concurrency levels), right after
#      bench_kernels of the served type at the widths of its prompt iterations;
#   4. `tongyun sim --validate ... --bench-json --micro-json --serve-json`: predictions from 2 only, compared with 1
#      and 3.
# Output files go to build/sim-validation/ (OUT_DIR). Defaults keep the run near 6-8 minutes on 2 cores; knobs:
#   TYPES="q8_0 q4_0 q4_k_m bf16"  THREADS=1,2  REPS=2  N_PROMPT=512  N_GEN=64
#   SERVE_TYPE=q8_0  SERVE_LEVELS=1,4  SERVE_TOKENS=32  KERNEL_SECONDS=0.4  SKIP_SERVE=1  SKIP_ENGINE=1
# Build first (make); BUILD_DIR (default build) or TONGYUN override the binaries. Run on a quiet machine: the
# microbenchmarks and the bench run minutes apart, so a neighbour's load moves them apart.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
ty=${TONGYUN:-$build/tongyun}
types=${TYPES:-q8_0 q4_0 q4_k_m bf16}
threads=${THREADS:-1,2}
reps=${REPS:-2}
n_prompt=${N_PROMPT:-512}
n_gen=${N_GEN:-64}
serve_type=${SERVE_TYPE:-q8_0}
serve_levels=${SERVE_LEVELS:-1,4}
serve_tokens=${SERVE_TOKENS:-32}
kseconds=${KERNEL_SECONDS:-0.4}
preset=qwen2.5-0.5b
out=${OUT:-docs/sim-validation.md}
dir=${OUT_DIR:-$build/sim-validation}
models=build/bench-models
mkdir -p "$dir" "$models"
args=(sim --validate "$out" --scale)
t0=$(date +%s)
load0=$(cut -d' ' -f1-3 /proc/loadavg 2> /dev/null || echo "?")

if [ -z "${SKIP_ENGINE:-}" ]; then
    for t in $types; do
        m=$models/$preset-$t.gguf
        [ -f "$m" ] || "$ty" mkmodel --preset "$preset" --type "$t" "$m"
    done
    max_threads=${threads##*,}
    isa=$("$ty" devices --json 2> /dev/null | sed -n 's/.*"isa": *"\([a-z0-9]*\)".*/\1/p' | head -1)
    # The gemm widths bench_kernels times for the bench's prefill (interpolated to its prompt)
    widths="32,128,$n_prompt"
    # The machine's load moves from minute to minute, so each type's microbenchmarks run right before its bench.
    echo "sim-validation: bench_pool" >&2
    "$build/bench/bench_pool" --threads "$threads" --seconds 2 --embd 896 --heads 14 --kv-heads 2 --head-dim 64 \
        --ffn 4864 --ctx $((n_gen / 2)) --prefill "$n_prompt" --json > "$dir/pool.json"
    micro="$dir/pool.json"
    : > "$dir/bench.jsonl"
    seen=","
    for t in $types; do
        # 2. microbenchmarks: the weight types the model holds (q4_k_m mixes Q5_0, Q4_K, Q6_K and Q8_0 at this width)
        ktypes=""
        case $t in
        q4_k_m) want="q4_k_m q5_0 q4_k q6_k q8_0" ;;
        *) want=$t ;;
        esac
        for k in $want; do
            [[ $seen == *",$k,"* ]] || ktypes="$ktypes,$k"
            seen="$seen$k,"
        done
        if [ -n "$ktypes" ]; then
            echo "sim-validation: bench_kernels ${ktypes#,}" >&2
            "$build/bench/bench_kernels" --types "${ktypes#,}" --threads "$threads" --seconds "$kseconds" \
                --prefill "$widths" --json > "$dir/kernels-$t.json"
            micro="$micro,$dir/kernels-$t.json"
        fi
        # The CPU backend runs BF16 weights with f32 activations on a path whose BF16 kernels take bf16 ones
        # (chip/cpu/cpu.c, kernel_tables): time those kernels too.
        if [ "$t" = bf16 ] && [ "$isa" = avx512bf16 ]; then
            "$build/bench/bench_kernels" --isa avx512vnni --types bf16 --threads "$threads" --seconds "$kseconds" \
                --prefill "$widths" --json > "$dir/kernels-bf16-f32.json"
            micro="$micro,$dir/kernels-bf16-f32.json"
        fi
        # 1. the figures to predict
        echo "sim-validation: tongyun bench $t" >&2
        "$ty" bench -m "$models/$preset-$t.gguf" -t "$threads" -p "$n_prompt" -n "$n_gen" -r "$reps" \
            --roofline-seconds 1 --json >> "$dir/bench.jsonl"
    done
    args+=(--bench-json "$dir/bench.jsonl")
    # 3. the load test, right after the served type's gemm at the widths of its prompt iterations (one to a few
    # prompts), so that both see the same neighbours on a shared machine (the serve prediction reads the last figures
    # given for a type)
    if [ -z "${SKIP_SERVE:-}" ]; then
        echo "sim-validation: bench_kernels $serve_type, bench_serve" >&2
        "$build/bench/bench_kernels" --types "$serve_type" --threads "$max_threads" --seconds "$kseconds" \
            --prefill "32,64,128,256" --json > "$dir/kernels-serve.json"
        micro="$micro,$dir/kernels-serve.json"
        "$build/bench/bench_serve" --model "$models/$preset-$serve_type.gguf" --tongyun "$ty" \
            --threads "$max_threads" --max-seqs 16 --levels "$serve_levels" --max-tokens "$serve_tokens" --json \
            > "$dir/serve.json"
        args+=(--serve-json "$dir/serve.json")
    fi
    args+=(--micro-json "$micro")
    notes="Settings of this run: \`tongyun bench -t $threads -p $n_prompt -n $n_gen -r $reps\` (fewer repetitions and"
    notes="$notes a shorter decode than bench-cpu.sh's 3 x tg128, to keep the script near 6-8 minutes; decode's"
    notes="$notes attention context is then n_gen / 2 = $((n_gen / 2)), which bench_pool times);"
    notes="$notes \`bench_kernels --seconds $kseconds --prefill $widths\` (and, right before bench_serve, of"
    notes="$notes $serve_type at --prefill 32,64,128,256: the widths of the load test's prompt iterations);"
    notes="$notes \`bench_serve --max-seqs 16 --levels $serve_levels --max-tokens $serve_tokens\` on $serve_type with"
    notes="$notes $max_threads threads. Raw outputs: \`$dir/\`. Measured on $(nproc) cores"
    notes="$notes ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//'))."
    notes="$notes Load average (1, 5, 15 min) at the start: $load0; at the end:"
    notes="$notes $(cut -d' ' -f1-3 /proc/loadavg 2> /dev/null || echo "?"). With a load near or above the core count"
    notes="$notes the machine is shared: the bench and its microbenchmarks then see different neighbours from one"
    notes="$notes minute to the next, and the comparison says little about the model (each type's microbenchmarks"
    notes="$notes run right before its bench to narrow the gap)."
    args+=(--notes "$notes")
fi
"$ty" "${args[@]}"
echo "sim-validation: done in $(($(date +%s) - t0)) s" >&2
