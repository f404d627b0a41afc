#!/usr/bin/env bash
# sim-validation.sh - regenerates docs/sim-validation.md: the simulator's published points, the 10,000-chip scale run
# (timed here), the impossible-configuration messages and the calibration against our engine, all computed in this
# run by `tongyun sim --validate`. With BENCH_JSON=file (a `tongyun bench --json` output) the engine comparison is
# filled in too. Build first (make); TONGYUN overrides the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ty=${TONGYUN:-build/tongyun}
args=(sim --validate docs/sim-validation.md --scale)
if [ -n "${BENCH_JSON:-}" ]; then
    args+=(--bench-json "$BENCH_JSON")
fi
"$ty" "${args[@]}"
