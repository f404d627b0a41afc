#!/usr/bin/env bash
# bench_train.sh - training tokens/s of Tongyun's trainer against PyTorch's CPU training on the same qwen3 shape,
# batch and thread count, measured in the same run (alternating, best of R rounds each, so a noisy machine penalises
# both alike), plus Tongyun's MFU against the FMA peak bench_train measures beside it.
#
#   bench/bench_train.sh [BUILD_DIR] [-- extra bench_train flags, also passed to the PyTorch script]
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
best_ty=0 best_pt=0
for r in $(seq 1 "$ROUNDS"); do
    ty=$("$BUILD/bench/bench_train" --json "$@")
    pt=$("$PY" "$SRC/bench/bench_train_torch.py" "$@" 2> /dev/null)
    echo "round $r: $ty"
    echo "round $r: $pt"
    t=$(echo "$ty" | sed 's/.*"tok_s": \([0-9.]*\).*/\1/')
    p=$(echo "$pt" | sed 's/.*"tok_s": \([0-9.]*\).*/\1/')
    best_ty=$(awk -v a="$best_ty" -v b="$t" 'BEGIN { print (b > a ? b : a) }')
    best_pt=$(awk -v a="$best_pt" -v b="$p" 'BEGIN { print (b > a ? b : a) }')
done
awk -v a="$best_ty" -v b="$best_pt" 'BEGIN { printf "tongyun %.0f tok/s, pytorch %.0f tok/s: %.2fx\n", a, b, a / b }'
