#!/usr/bin/env bash
# run-fuzzer.sh FUZZER CORPUS SECONDS - a bounded libFuzzer run inside the test suite. It starts from a copy of the
# committed corpus (regressions included) so that new inputs found here do not dirty the source tree, and fails on
# any crash, leak or sanitizer report. The input that failed is kept in artifacts/NAME/ beside the fuzzer (replay it
# with `FUZZER FILE`, then add it to the corpus as a regression once fixed).
set -euo pipefail
fuzzer=$1 corpus=$2 seconds=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$corpus"/. "$work"/ 2>/dev/null || true
artifacts=$(cd "$(dirname "$fuzzer")" && pwd)/artifacts/$(basename "$fuzzer")
mkdir -p "$artifacts"
cd "$work"
"$fuzzer" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" . 2>&1 | tail -n 25
