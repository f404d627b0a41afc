#!/usr/bin/env bash
# test_server.sh - runs tests/cloud/test_server.py (pytest, the official `openai` client) against the real
# `tongyun serve` on loopback. Keeps a virtual environment with pinned packages in the build folder, converts the
# tiny Qwen3 fixture to GGUF, and ends with pytest's summary.
set -euo pipefail
: "${TONGYUN:?set TONGYUN to the tongyun binary}"
src=${TY_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${TY_BUILD_DIR:-$src/build}
venv=$build/venv
pins=(openai==1.54.3 pytest==8.3.3 jsonschema==4.23.0 httpx==0.27.2)
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai, pytest, jsonschema, httpx' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$TONGYUN" convert "$src/tests/data/models/qwen3-tiny" "$work/qwen3-tiny.gguf" --type f32 -q
export TY_TEST_MODEL=$work/qwen3-tiny.gguf TY_TEST_WORK=$work TONGYUN
cd "$src/tests/cloud"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider test_server.py "$@"
