#!/usr/bin/env bash
# test_convert_next.sh - `tongyun convert` on the hybrid checkpoints tests/data/models/qwen3next-tiny and qwen35moe-tiny:
# the GGUF has llama.cpp's qwen3next / qwen35moe keys and tensor names (the values are checked against transformers by
# test_next.c), the conv1d weight stays F32 whatever --type says, mtp.* and model.visual.* tensors are skipped, a
# ...ForConditionalGeneration checkpoint (text_config) converts like the text-only one, and checkpoints whose
# config.json disagrees with the tensors (or describes a layout the format cannot hold) are refused with a message
# naming what is wrong and leave no output file.
set -euo pipefail
: "${TONGYUN:?set TONGYUN to the tongyun binary}"
src=${TY_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
model=$src/tests/data/models/qwen3next-tiny
. "$src/tests/lib.sh"


# A good conversion, quantized: the metadata and the tensors llama.cpp's qwen3next reads.
"$TONGYUN" convert "$model" "$work/q.gguf" --type q8_0 >/dev/null 2>"$work/err" || bad "convert: $(cat "$work/err")"
"$TONGYUN" inspect "$work/q.gguf" --tensors >"$work/inspect" 2>&1 || bad "inspect: $(cat "$work/inspect")"
want_kv() { # KEY VALUE
    if grep -qE "^  qwen3next\.$1 +u32 +$2\$" "$work/inspect"; then ok; else bad "key $1 is not $2"; fi
}
want_kv full_attention_interval 2
want_kv ssm.conv_kernel 4
want_kv ssm.state_size 16
want_kv ssm.group_count 2
want_kv ssm.time_step_rank 4
want_kv ssm.inner_size 64
want_kv rope.dimension_count 8
want_kv expert_shared_feed_forward_length 32
want_tensor() { # NAME TYPE
    if grep -qE "^  $1 +$2 " "$work/inspect"; then ok; else bad "tensor $1 is missing or not $2"; fi
}
# llama.cpp's current qwen3next layout: in_proj_qkvz split into attn_qkv (all q, all k, all v) and attn_gate (z)
want_tensor blk.0.attn_qkv.weight Q8_0
want_tensor blk.0.attn_gate.weight Q8_0
want_tensor blk.0.ssm_ba.weight Q8_0
want_tensor blk.0.ssm_conv1d.weight F32
want_tensor blk.0.ssm_a F32
want_tensor blk.0.ssm_dt.bias F32
want_tensor blk.0.ssm_norm.weight F32
want_tensor blk.0.ssm_out.weight Q8_0
want_tensor blk.0.post_attention_norm.weight F32
want_tensor blk.0.ffn_gate_inp_shexp.weight F32
want_tensor blk.0.ffn_up_shexp.weight Q8_0
want_tensor blk.1.attn_q.weight Q8_0
want_tensor blk.2.ffn_gate.weight Q8_0
if grep -qE "^  blk\.0\.attn_q\.weight " "$work/inspect"; then bad "linear layer 0 has attn_q"; else ok; fi
if grep -qE "^  blk\.1\.attn_qkv\.weight " "$work/inspect"; then bad "full-attention layer 1 has attn_qkv"; else ok; fi
if grep -qE "^  blk\.0\.ssm_in\.weight " "$work/inspect"; then bad "qwen3next still has the legacy ssm_in"; else ok; fi


refused "$model" 'c["linear_num_value_heads"] = 8' \
    "tensor model.layers.0.linear_attn.in_proj_qkvz.weight has shape [192, 64] but config.json implies [320, 64]"
refused "$model" 'c["linear_num_key_heads"] = 3' "linear_num_value_heads 4 is not a multiple of linear_num_key_heads 3"
refused "$model" 'c["linear_conv_kernel_dim"] = 3' \
    "tensor model.layers.0.linear_attn.conv1d.weight has shape [128, 1, 4] but config.json implies [128, 1, 3]"
refused "$model" 'c["shared_expert_intermediate_size"] = 64' \
    "tensor model.layers.0.mlp.shared_expert.gate_proj.weight has shape [32, 64] but config.json implies [64, 64]"
refused "$model" 'c["layer_types"] = ["linear_attention", "full_attention", "full_attention", "full_attention"]' \
    'layer_types[2] is "full_attention", but the layers do not repeat with period 2'
refused "$model" 'c["layer_types"] = c["layer_types"][:3]' '"layer_types" has 3 entries for 4 layers'
refused "$model" 'c["layer_types"][0] = "sliding_attention"' \
    'layer_types[0] is not "full_attention" or "linear_attention"'
refused "$model" 'c["rope_parameters"]["partial_rotary_factor"] = 0.1875; c["partial_rotary_factor"] = 0.1875' \
    "= 3 rotated dimensions; RoPE needs an even number"
refused "$model" 'c["layer_types"] = ["linear_attention"] * 3 + ["full_attention"]' \
    "not part of a qwen3next model: model.layers.1.self_attn."
refused "$model" 'del c["linear_key_head_dim"]' 'missing "linear_key_head_dim"'

# Multi-token-prediction tensors (mtp.*, as the released checkpoints have) are skipped with one warning: a shard
# holding two of them is added through an index.
rm -rf "$work/v" "$work/x.gguf"
cp -r "$model" "$work/v"
python3 - "$work/v" <<'PY'
import json, struct, sys
d = sys.argv[1]
b = open(d + "/model.safetensors", "rb").read()
names = [k for k in json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]]) if k != "__metadata__"]
hdr = json.dumps({"mtp.fc.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                  "mtp.norm.weight": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}).encode()
open(d + "/mtp.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + bytes(16))
wm = {n: "model.safetensors" for n in names}
wm.update({"mtp.fc.weight": "mtp.safetensors", "mtp.norm.weight": "mtp.safetensors"})
json.dump({"metadata": {}, "weight_map": wm}, open(d + "/model.safetensors.index.json", "w"))
PY
# (the tensor data, which ends the file, is that of the plain checkpoint: compare the last 64 KiB)
"$TONGYUN" convert "$model" "$work/plain.gguf" --type f32 >/dev/null 2>&1 || bad "convert without mtp"
if "$TONGYUN" convert "$work/v" "$work/x.gguf" --type f32 >/dev/null 2>"$work/err" &&
    grep -qF "skipping the 2 mtp.* tensors (multi-token prediction" "$work/err" &&
    cmp -s <(tail -c 65536 "$work/x.gguf") <(tail -c 65536 "$work/plain.gguf"); then
    ok
else
    bad "mtp tensors: $(cat "$work/err")"
fi

# Qwen3.5 MoE: llama.cpp's qwen35moe keys and names (the values are checked against transformers by test_next.c).
m35=$src/tests/data/models/qwen35moe-tiny
"$TONGYUN" convert "$m35" "$work/m35.gguf" --type f32 >/dev/null 2>"$work/err" || bad "convert qwen35moe: $(cat "$work/err")"
"$TONGYUN" inspect "$work/m35.gguf" --tensors >"$work/inspect" 2>&1 || bad "inspect: $(cat "$work/inspect")"
if grep -qE '^  qwen35moe\.rope\.dimension_sections +arr\[i32\] +4 elements: \[11, 11, 10, 0\]' "$work/inspect"; then ok; else
    bad "qwen35moe rope.dimension_sections"
fi
if grep -qE '^  qwen35moe\.expert_weights_norm +bool +true' "$work/inspect"; then ok; else bad "qwen35moe norm"; fi
for t in attn_qkv.weight attn_gate.weight ssm_beta.weight ssm_alpha.weight ssm_conv1d.weight ssm_a ffn_up_shexp.weight; do
    if grep -qE "^  blk\.0\.$t " "$work/inspect"; then ok; else bad "qwen35moe tensor blk.0.$t missing"; fi
done
if grep -qE "^  blk\.0\.ssm_in\.weight " "$work/inspect"; then bad "qwen35moe has ssm_in"; else ok; fi

# The released checkpoints are ...ForConditionalGeneration: the text model's config in text_config, the vision tower
# beside it (skipped with one warning). Same tensor data as the text-only checkpoint.
rm -rf "$work/v" "$work/x.gguf"
cp -r "$m35" "$work/v"
python3 - "$work/v" <<'PY'
import json, struct, sys
d = sys.argv[1]
c = json.load(open(d + "/config.json"))
json.dump({"architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
           "tie_word_embeddings": c.pop("tie_word_embeddings"), "text_config": c}, open(d + "/config.json", "w"))
b = open(d + "/model.safetensors", "rb").read()
names = [k for k in json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]]) if k != "__metadata__"]
hdr = json.dumps({"model.visual.patch_embed.proj.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
open(d + "/visual.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr.encode() + bytes(8))
wm = {n: "model.safetensors" for n in names}
wm["model.visual.patch_embed.proj.weight"] = "visual.safetensors"
json.dump({"metadata": {}, "weight_map": wm}, open(d + "/model.safetensors.index.json", "w"))
PY
if "$TONGYUN" convert "$work/v" "$work/x.gguf" --type f32 >/dev/null 2>"$work/err" &&
    grep -qF "skipping the 1 model.visual.* tensors" "$work/err" &&
    cmp -s <(tail -c 65536 "$work/x.gguf") <(tail -c 65536 "$work/m35.gguf"); then
    ok
else
    bad "qwen35moe ForConditionalGeneration: $(cat "$work/err")"
fi

refused "$m35" 'c["linear_num_value_heads"] = 8' \
    "tensor model.language_model.layers.0.linear_attn.in_proj_qkv.weight has shape [128, 64] but config.json implies [192, 64]"

finish
