#!/usr/bin/env bash
# bench_train.sh - training tokens/s of Tongyun's trainer against PyTorch's CPU training on the same qwen3 shape,
# batch and thread count (2 unless --threads says otherwise), measured in the same run (alternating, best of R rounds
# each, so a noisy machine penalises all alike). Both sides run in f32 and in bf16 mixed precision: Tongyun with
# --precision bf16 (bf16 operands, f32 accumulation; skipped, with the reason, on a CPU without AVX512_BF16), PyTorch
# under torch.autocast("cpu", dtype=torch.bfloat16). The headline compares Tongyun's faster precision with PyTorch's
# faster one, the comparison a user makes; the like-for-like ratios are printed too. Tongyun's MFU is against the peak
# of the instruction its products run on, measured beside it: the f32 FMA peak for f32, the vdpbf16ps peak for bf16.
# PyTorch runs twice per precision and round, with its OpenMP's default (spinning) wait policy and with
# OMP_WAIT_POLICY=PASSIVE, and keeps the better: spinning threads collapse on a machine with other load (5x slower
# measured), sleeping ones lose a little on a quiet one, so the better of the two is PyTorch's fair figure either way.
#
#   bench/bench_train.sh [BUILD_DIR] [-- extra bench_train flags, also passed to the PyTorch script]
#   bench/bench_train.sh build -- --vocab 4160 --embd 384 --layers 6 --heads 6 --kv-heads 2 --head-dim 64 --ff 1152
#                                                                                     # Tongyun-Mini's shape
#   env: PYTHON (default /tmp/venv-train/bin/python, then python3) with torch==2.8.0 transformers==4.57.1;
#        ROUNDS (default 2)
set -euo pipefail
BUILD=${1:-build}
shift || true
[[ "${1:-}" == "--" ]] && shift
SRC=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-/tmp/venv-train/bin/python}
[[ -x "$PY" ]] || PY=python3
ROUNDS=${ROUNDS:-2}
args=(--threads 2) # a later --threads wins in both programs; --precision is the script's to choose
while [[ $# -gt 0 ]]; do
    if [[ "$1" == "--precision" ]]; then
        echo "bench_train.sh: ignoring --precision $2 (both precisions are measured)" >&2
        shift 2
        continue
    fi
    args+=("$1")
    shift
done
field() { echo "$1" | sed -n "s/.*\"$2\": \"\{0,1\}\([^,\"}]*\).*/\1/p"; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a ? b : a) }'; }
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

precisions=(f32 bf16)
if ! "$BUILD/bench/bench_train" --json --precision bf16 --steps 1 --layers 1 --vocab 256 > /dev/null 2> "${TMPDIR:-/tmp}/bench_train.$$.err"; then
    echo "tongyun bf16: skipped: $(cat "${TMPDIR:-/tmp}/bench_train.$$.err")"
    precisions=(f32)
fi
rm -f "${TMPDIR:-/tmp}/bench_train.$$.err"

declare -A ty=([f32]=0 [bf16]=0) mfu=([f32]=0 [bf16]=0) pt=([f32]=0 [bf16]=0)
for r in $(seq 1 "$ROUNDS"); do
    for p in "${precisions[@]}"; do
        out=$("$BUILD/bench/bench_train" --json --precision "$p" "${args[@]}")
        echo "round $r: $out"
        t=$(field "$out" tok_s)
        if gt "$t" "${ty[$p]}"; then ty[$p]=$t mfu[$p]=$(field "$out" mfu); fi
    done
    for p in f32 bf16; do
        for policy in default passive; do
            if [[ $policy == passive ]]; then
                out=$(OMP_WAIT_POLICY=PASSIVE "$PY" "$SRC/bench/bench_train_torch.py" --precision "$p" "${args[@]}" 2> /dev/null)
                echo "round $r: ${out%\}}, \"omp_wait_policy\": \"passive\"}"
            else
                out=$("$PY" "$SRC/bench/bench_train_torch.py" --precision "$p" "${args[@]}" 2> /dev/null)
                echo "round $r: $out"
            fi
            pt[$p]=$(max "${pt[$p]}" "$(field "$out" tok_s)")
        done
    done
done

printf 'tongyun f32:  %8.0f tok/s (MFU %.1f%% of the measured f32 FMA peak)\n' "${ty[f32]}" "$(awk -v m="${mfu[f32]}" 'BEGIN { print m * 100 }')"
if [[ ${#precisions[@]} == 2 ]]; then
    printf 'tongyun bf16: %8.0f tok/s (MFU %.1f%% of the measured bf16 dot-product (vdpbf16ps) peak)\n' "${ty[bf16]}" \
        "$(awk -v m="${mfu[bf16]}" 'BEGIN { print m * 100 }')"
fi
printf 'pytorch f32:  %8.0f tok/s\n' "${pt[f32]}"
printf 'pytorch bf16: %8.0f tok/s (torch.autocast bfloat16)\n' "${pt[bf16]}"
awk -v a="${ty[f32]}" -v b="${pt[f32]}" 'BEGIN { printf "like for like: f32 %.2fx", a / b }'
if [[ ${#precisions[@]} == 2 ]]; then
    awk -v a="${ty[bf16]}" -v b="${pt[bf16]}" 'BEGIN { printf ", bf16 %.2fx", a / b }'
fi
echo
best_ty=f32 best_pt=f32
gt "${ty[bf16]}" "${ty[f32]}" && best_ty=bf16
gt "${pt[bf16]}" "${pt[f32]}" && best_pt=bf16
awk -v a="${ty[$best_ty]}" -v b="${pt[$best_pt]}" -v x="$best_ty" -v y="$best_pt" 'BEGIN {
    printf "tongyun (best: %s) %.0f tok/s vs pytorch (best: %s) %.0f tok/s: %.2fx\n", x, a, y, b, a / b }'
