#!/usr/bin/env bash
# test_reference_isa.sh - the model core's reference fixtures (test_reference: logits, greedy continuations and
# perplexity of every tiny checkpoint against Hugging Face transformers, with the tolerances stated there) still match
# on every CPU dispatch path: test_reference runs once per TY_CPU_ISA value, on the default ("cpu") backend, whose
# matrix products use that path's kernels. A path this CPU or build cannot run is reported and skipped (the backend
# refuses it with "cannot run the <path> kernels"); at least the scalar path must run. Where the build has the
# AVX-512 paths in portable C (test_reference_avx512_emulated, CMakeLists.txt), an AVX-512 path the CPU lacks runs
# there instead.
set -uo pipefail
: "${TY_BUILD_DIR:?}"
bin="$TY_BUILD_DIR/tests/test_reference"
[ -x "$bin" ] || { echo "test_reference_isa: $bin is missing; build the tests first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

emulated="$TY_BUILD_DIR/tests/test_reference_avx512_emulated"

ran=0
for isa in scalar avx2 avx512 avx512vnni avx512bf16 avx512amx neon; do
    label=$isa
    TY_CPU_ISA=$isa "$bin" > "$tmp/$isa.log" 2>&1
    status=$?
    if [ $status -ne 0 ] && [[ $isa == avx512* ]] && [ -x "$emulated" ] &&
        grep -q "cannot run the $isa kernels" "$tmp/$isa.log"; then
        label="$isa (in portable C)"
        TY_CPU_ISA=$isa TONGYUN="$TY_BUILD_DIR/tests/tongyun_avx512_emulated" "$emulated" > "$tmp/$isa.log" 2>&1
        status=$?
    fi
    if [ $status -eq 0 ]; then
        echo "ok   $label: $(tail -n 1 "$tmp/$isa.log")"
        ran=$((ran + 1))
    elif grep -q "cannot run the $isa kernels" "$tmp/$isa.log"; then
        echo "skip $isa: not supported here"
    else
        cat "$tmp/$isa.log" >&2
        echo "test_reference_isa: the reference fixtures fail with TY_CPU_ISA=$label" >&2
        exit 1
    fi
done
[ "$ran" -ge 1 ] || { echo "test_reference_isa: no dispatch path ran" >&2; exit 1; }
echo "test_reference_isa: fixtures match on $ran dispatch paths"
