#!/usr/bin/env bash
# bench_train.sh - training tokens/s of Tongyun's trainer against PyTorch's CPU training on the same qwen3 shape,
# batch and thread count (2 unless --threads says otherwise), measured in the same run (alternating, best of R rounds
# each, so a noisy machine penalises both alike), plus Tongyun's MFU against the FMA peak bench_train measures beside
# it. PyTorch runs twice a round, with its OpenMP's default (spinning) wait policy and with OMP_WAIT_POLICY=PASSIVE,
# and keeps the better: spinning threads collapse on a machine with other load (5x slower measured), sleeping ones
# lose a little on a quiet one, so the better of the two is PyTorch's fair figure either way.
#
#   bench/bench_train.sh [BUILD_DIR] [-- extra bench_train flags, also passed to the PyTorch script]
#   bench/bench_train.sh build -- --vocab 4096 --layers 6 --heads 4 --kv-heads 2 --head-dim 64   # Tongyun-Mini's shape
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
args=(--threads 2 "$@") # a later --threads wins in both programs
best_ty=0 best_pt=0 mfu=0
tok_s() { echo "$1" | sed 's/.*"tok_s": \([0-9.]*\).*/\1/'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a ? b : a) }'; }
for r in $(seq 1 "$ROUNDS"); do
    ty=$("$BUILD/bench/bench_train" --json "${args[@]}")
    pt=$("$PY" "$SRC/bench/bench_train_torch.py" "${args[@]}" 2> /dev/null)
    pp=$(OMP_WAIT_POLICY=PASSIVE "$PY" "$SRC/bench/bench_train_torch.py" "${args[@]}" 2> /dev/null)
    echo "round $r: $ty"
    echo "round $r: $pt"
    echo "round $r: ${pp%\}}, \"omp_wait_policy\": \"passive\"}"
    t=$(tok_s "$ty")
    if awk -v a="$best_ty" -v b="$t" 'BEGIN { exit !(b > a) }'; then
        mfu=$(echo "$ty" | sed 's/.*"mfu": \([0-9.]*\).*/\1/')
    fi
    best_ty=$(max "$best_ty" "$t")
    best_pt=$(max "$best_pt" "$(max "$(tok_s "$pt")" "$(tok_s "$pp")")")
done
awk -v a="$best_ty" -v b="$best_pt" -v m="$mfu" 'BEGIN {
    printf "tongyun %.0f tok/s (MFU %.1f%% of the measured FMA peak), pytorch %.0f tok/s: %.2fx\n", a, m * 100, b, a / b }'
