#!/usr/bin/env bash
# test_convert.sh - `tongyun convert` end to end on the committed Hugging Face fixtures (tests/data/models/): every
# model in f32, f16, bf16 and q8_0, each output read back with `tongyun inspect --json` and checked against the
# fixture's own config.json (architecture, hyperparameters, RoPE scaling, vocabulary size, tensor names, types and
# shapes). Then the command's usage errors and a few refused checkpoints, which must leave no output file behind.
set -euo pipefail
: "${TONGYUN:?set TONGYUN to the tongyun binary}"
src=${TY_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
models=$src/tests/data/models
. "$src/tests/lib.sh"

# check.py GGUF_JSON CONFIG TYPE: compares an inspect dump with the checkpoint's config.json.
cat >"$work/check.py" <<'EOF'
import json, sys
dump, cfg, want_type = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3].upper()
kv = {m["key"]: m for m in dump["metadata"]}
errors = []
def expect(what, got, want):
    if got != want:
        errors.append("%s: got %r, want %r" % (what, got, want))
def val(key):
    m = kv.get(key)
    if m is None:
        errors.append("missing key " + key)
        return None
    return m.get("value", m.get("length"))

arch = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3moe"}[cfg["architectures"][0]]
ftype = {"F32": 0, "F16": 1, "BF16": 32, "Q8_0": 7}[want_type]
expect("architecture", val("general.architecture"), arch)
expect("file_type", val("general.file_type"), ftype)
head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
for key, want in [("block_count", cfg["num_hidden_layers"]), ("context_length", cfg["max_position_embeddings"]),
                  ("embedding_length", cfg["hidden_size"]), ("feed_forward_length", cfg["intermediate_size"]),
                  ("attention.head_count", cfg["num_attention_heads"]),
                  ("attention.head_count_kv", cfg["num_key_value_heads"]),
                  ("attention.key_length", head_dim), ("attention.value_length", head_dim)]:
    expect(key, val(arch + "." + key), want)
for key, want in [("rope.freq_base", cfg["rope_theta"]), ("attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])]:
    got = val(arch + "." + key)
    if got is None or abs(got - want) > 1e-6 * abs(want):
        errors.append("%s: got %r, want %r" % (key, got, want))
rs = cfg.get("rope_scaling")
if rs:
    expect("rope.scaling.type", val(arch + ".rope.scaling.type"), rs["rope_type"])
    expect("rope.scaling.factor", val(arch + ".rope.scaling.factor"), rs["factor"])
    if rs["rope_type"] == "yarn":
        expect("original_context_length", val(arch + ".rope.scaling.original_context_length"),
               rs["original_max_position_embeddings"])
else:
    expect("no rope scaling", [k for k in kv if ".rope.scaling." in k], [])
n_exp = cfg.get("num_experts", 0) if arch == "qwen3moe" else 0
if n_exp:
    for key, want in [("expert_count", n_exp), ("expert_used_count", cfg["num_experts_per_tok"]),
                      ("expert_feed_forward_length", cfg["moe_intermediate_size"]),
                      ("expert_weights_norm", cfg.get("norm_topk_prob", False))]:
        expect(key, val(arch + "." + key), want)
expect("tokens", val("tokenizer.ggml.tokens"), cfg["vocab_size"])
expect("token types", val("tokenizer.ggml.token_type"), cfg["vocab_size"])
expect("tokenizer model", val("tokenizer.ggml.model"), "gpt2")
if "tokenizer.chat_template" not in kv:
    errors.append("no tokenizer.chat_template")

tensors = {t["name"]: t for t in dump["tensors"]}
H, V, F = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
q, k = cfg["num_attention_heads"] * head_dim, cfg["num_key_value_heads"] * head_dim
want = {"token_embd.weight": [H, V], "output_norm.weight": [H]}
if not cfg["tie_word_embeddings"]:
    want["output.weight"] = [H, V]
for i in range(cfg["num_hidden_layers"]):
    b = "blk.%d." % i
    want.update({b + "attn_norm.weight": [H], b + "attn_q.weight": [H, q], b + "attn_k.weight": [H, k],
                 b + "attn_v.weight": [H, k], b + "attn_output.weight": [q, H], b + "ffn_norm.weight": [H]})
    # Qwen3MoeDecoderLayer: experts unless in mlp_only_layers, every decoder_sparse_step-th layer
    if n_exp and i not in cfg.get("mlp_only_layers", []) and (i + 1) % cfg.get("decoder_sparse_step", 1) == 0:
        FE = cfg["moe_intermediate_size"]
        want.update({b + "ffn_gate_inp.weight": [H, n_exp], b + "ffn_gate_exps.weight": [H, FE, n_exp],
                     b + "ffn_up_exps.weight": [H, FE, n_exp], b + "ffn_down_exps.weight": [FE, H, n_exp]})
    else:
        want.update({b + "ffn_gate.weight": [H, F], b + "ffn_up.weight": [H, F], b + "ffn_down.weight": [F, H]})
    if arch == "qwen2":
        want.update({b + "attn_q.bias": [q], b + "attn_k.bias": [k], b + "attn_v.bias": [k]})
    else:
        want.update({b + "attn_q_norm.weight": [head_dim], b + "attn_k_norm.weight": [head_dim]})
expect("tensor names", sorted(tensors), sorted(want))
for name, shape in want.items():
    t = tensors.get(name)
    if not t:
        continue
    expect(name + " shape", t["shape"], shape)
    expect(name + " type", t["type"], "F32" if len(shape) == 1 or name.endswith("ffn_gate_inp.weight") else want_type)
if errors:
    print("\n".join(errors))
    sys.exit(1)
EOF

n_models=0
for dir in "$models"/*/; do
    [ -f "$dir/config.json" ] || continue
    name=$(basename "$dir")
    # the hybrid models (Qwen3-Next, Qwen3.5) have their own test, test_convert_next.sh
    case $name in qwen3next-* | qwen35*) continue ;; esac
    n_models=$((n_models + 1))
    for type in f32 f16 bf16 q8_0; do
        out=$work/$name-$type.gguf
        if ! "$TONGYUN" convert "$dir" "$out" --type "$type" 2>"$work/err"; then
            bad "convert $name --type $type: $(cat "$work/err")"
            continue
        fi
        if ! "$TONGYUN" inspect "$out" --json --tensors >"$work/dump.json" 2>"$work/err"; then
            bad "inspect $name $type: $(cat "$work/err")"
            continue
        fi
        if python3 "$work/check.py" "$work/dump.json" "$dir/config.json" "$type" >"$work/err"; then ok; else
            bad "$name $type: $(cat "$work/err")"
        fi
        rm -f "$out"
    done
done
[ "$n_models" -ge 4 ] || bad "expected at least 4 fixture models in $models, found $n_models"

# --name sets general.name; by default it is the folder's name.
"$TONGYUN" convert "$models/qwen3-tiny" "$work/named.gguf" --name "Tiny Test" 2>/dev/null
"$TONGYUN" inspect "$work/named.gguf" --json >"$work/dump.json"
if python3 -c 'import json,sys; kv={m["key"]:m.get("value") for m in json.load(open(sys.argv[1]))["metadata"]}; sys.exit(kv["general.name"] != "Tiny Test")' "$work/dump.json"; then ok; else bad "--name not written"; fi

# A quantized type whose block does not divide the rows (64) falls back to F16, with a warning naming the tensor.
"$TONGYUN" convert "$models/qwen3-tiny" "$work/q4k.gguf" --type q4_k 2>"$work/err"
if grep -q "token_embd.weight: rows of 64 are not a multiple of the Q4_K block size 256; writing F16" "$work/err"; then ok; else
    bad "no fallback warning: $(cat "$work/err")"
fi
"$TONGYUN" inspect "$work/q4k.gguf" --json --tensors >"$work/dump.json"
if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); kv={m["key"]:m.get("value") for m in d["metadata"]}; t={x["name"]:x["type"] for x in d["tensors"]}; sys.exit(not (kv["general.file_type"]==14 and t["blk.0.attn_q.weight"]=="F16" and t["output_norm.weight"]=="F32"))' "$work/dump.json"; then ok; else bad "q4_k fallback types"; fi

# The thread count does not change a byte of the output.
for type in q4_0 q8_0 f16; do
    "$TONGYUN" convert -q "$models/qwen3-tiny-untied" "$work/t1.gguf" --type $type -t 1
    "$TONGYUN" convert -q "$models/qwen3-tiny-untied" "$work/t3.gguf" --type $type --threads 3
    if cmp -s "$work/t1.gguf" "$work/t3.gguf"; then ok; else bad "$type: 1 and 3 threads give different files"; fi
done

# expect_fail WANT_RC NEEDLE ARGS...: the command fails with WANT_RC and says NEEDLE on stderr.
expect_fail() {
    local want=$1 needle=$2
    shift 2
    set +e
    "$TONGYUN" convert "$@" >"$work/out" 2>"$work/err"
    local rc=$?
    set -e
    if [ "$rc" -ne "$want" ]; then
        bad "convert $* exited $rc, want $want ($(cat "$work/err"))"
    elif ! grep -qF -- "$needle" "$work/err"; then
        bad "convert $*: stderr lacks '$needle': $(cat "$work/err")"
    else
        ok
    fi
}

"$TONGYUN" convert --help | grep -q "usage: tongyun convert" && ok || bad "--help"
expect_fail 2 "usage: tongyun convert"
expect_fail 2 "usage: tongyun convert" "$models/qwen3-tiny"
expect_fail 2 "unknown or unsupported type 'q9_9'" "$models/qwen3-tiny" "$work/x.gguf" --type q9_9
expect_fail 2 "unknown or unsupported type 'q8_k'" "$models/qwen3-tiny" "$work/x.gguf" --type q8_k
expect_fail 2 "unknown option '--frobnicate'" "$models/qwen3-tiny" "$work/x.gguf" --frobnicate
expect_fail 2 "-t expects an integer" "$models/qwen3-tiny" "$work/x.gguf" -t 0
expect_fail 1 "no-such-dir/config.json" "$work/no-such-dir" "$work/x.gguf"

# Refused checkpoints: a copy of a fixture with one thing changed. Nothing may be written.
variant() {
    rm -rf "$work/v"
    cp -r "$models/$1" "$work/v"
}
edit_config() { edit_json "$work/v/config.json" "$1"; }

variant qwen3-tiny
edit_config 'c["architectures"] = ["LlamaForCausalLM"]'
expect_fail 1 "architecture LlamaForCausalLM is not supported; supported: Qwen2ForCausalLM, Qwen3ForCausalLM" "$work/v" "$work/x.gguf"

variant qwen3-tiny
edit_config 'c["rope_scaling"] = {"rope_type": "dynamic", "factor": 2.0}'
expect_fail 1 'RoPE scaling type "dynamic" is not supported' "$work/v" "$work/x.gguf"

variant qwen3-tiny
edit_config 'c["intermediate_size"] = 96'
expect_fail 1 "tensor model.layers.0.mlp.gate_proj.weight has shape [128, 64] but config.json implies [96, 64]" "$work/v" "$work/x.gguf"

variant qwen3-tiny
edit_config 'c["num_hidden_layers"] = 1'
expect_fail 1 "not part of a qwen3 model: model.layers.1." "$work/v" "$work/x.gguf"

variant qwen3-tiny
edit_config 'c["num_hidden_layers"] = 3'
expect_fail 1 "tensor model.layers.2.input_layernorm.weight is missing" "$work/v" "$work/x.gguf"

variant qwen3-tiny
edit_config 'c["tie_word_embeddings"] = False'
expect_fail 1 "tensor lm_head.weight is missing and config.json says tie_word_embeddings is false" "$work/v" "$work/x.gguf"

variant qwen2-tiny # a Qwen2 checkpoint labelled Qwen3: its biases are foreign, its q/k norms missing
edit_config 'c["architectures"] = ["Qwen3ForCausalLM"]'
expect_fail 1 "self_attn.q_proj.bias" "$work/v" "$work/x.gguf"

variant qwen3-tiny-untied
python3 - "$work/v/model.safetensors.index.json" <<'EOF'
import json, sys
p = sys.argv[1]
idx = json.load(open(p))
name = next(iter(idx["weight_map"]))
idx["weight_map"][name] = "../" + idx["weight_map"][name]
json.dump(idx, open(p, "w"))
EOF
expect_fail 1 "is not a plain file name" "$work/v" "$work/x.gguf"

variant qwen3-tiny
rm "$work/v/tokenizer.json"
expect_fail 1 "tokenizer.json: missing" "$work/v" "$work/x.gguf"

variant qwen3-tiny
truncate -s 1000 "$work/v/model.safetensors"
expect_fail 1 "model.safetensors: header length" "$work/v" "$work/x.gguf"

if ls "$work"/x.gguf* >/dev/null 2>&1; then bad "a failed conversion left $(ls "$work"/x.gguf*)"; else ok; fi

finish
