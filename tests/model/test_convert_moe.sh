#!/usr/bin/env bash
# test_convert_moe.sh - `tongyun convert` on Qwen3-MoE checkpoints whose config.json disagrees with the tensors: each
# case must fail with a message naming the tensor and what the config implies, and leave no output file. (The
# successful conversion of tests/data/models/qwen3moe-tiny is checked by test_convert.sh and test_reference.c.)
set -euo pipefail
: "${TONGYUN:?set TONGYUN to the tongyun binary}"
src=${TY_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
model=$src/tests/data/models/qwen3moe-tiny
. "$src/tests/lib.sh"


refused "$model" 'c["num_experts"] = 16' \
    "tensor model.layers.0.mlp.gate.weight has shape [8, 64] but config.json implies [16, 64]"
refused "$model" 'c["num_experts"] = 4' "not part of a qwen3moe model: model.layers.0.mlp.experts.4."
refused "$model" 'c["moe_intermediate_size"] = 48' \
    "tensor model.layers.0.mlp.experts.0.gate_proj.weight has shape [32, 64] but config.json implies [48, 64]"
refused "$model" 'c["mlp_only_layers"] = []' "not part of a qwen3moe model: model.layers.1.mlp."
refused "$model" 'c["mlp_only_layers"] = [0, 1]' "not part of a qwen3moe model: model.layers.0.mlp."
refused "$model" 'c["num_experts_per_tok"] = 9' "num_experts_per_tok"
refused "$model" 'del c["num_experts"]' "num_experts"
refused "$model" 'c["mlp_only_layers"] = [7]' "mlp_only_layers[0] is not a layer index below 3"
refused "$model" 'c["norm_topk_prob"] = "yes"' '"norm_topk_prob" must be true or false'

# A checkpoint missing one expert's tensor: its entry is renamed in the safetensors header (same length, so the data
# offsets stay valid), which also makes an unknown tensor; rename it to a name that is skipped with a warning.
rm -rf "$work/v" "$work/x.gguf"
cp -r "$model" "$work/v"
python3 - "$work/v/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
old, new = b"model.layers.2.mlp.experts.5.up_proj.weight", b"model.layers.2.xxxxxxxx.rotary_emb.inv_freq"
assert len(old) == len(new) and b[8:8 + n].count(old) == 1
b[8:8 + n] = b[8:8 + n].replace(old, new)
open(p, "wb").write(b)
PY
set +e
"$TONGYUN" convert "$work/v" "$work/x.gguf" >/dev/null 2>"$work/err"
rc=$?
set -e
needle="tensor model.layers.2.mlp.experts.5.up_proj.weight is missing; config.json says num_experts = 8"
if [ "$rc" -eq 1 ] && grep -qF -- "$needle" "$work/err" && [ ! -e "$work/x.gguf" ]; then ok; else
    bad "missing expert: rc $rc: $(cat "$work/err")"
fi

finish
