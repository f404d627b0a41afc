#!/usr/bin/env bash
# test_inspect.sh - `tongyun inspect` on a valid GGUF seed (text, --tensors and --json), on files carrying
# multi-token-prediction heads, on corrupt files (exit 1 and a message naming the problem) and --help.
set -euo pipefail
: "${TONGYUN:?}" "${TY_SOURCE_DIR:?}"
corpus="$TY_SOURCE_DIR/tests/fuzz/corpus/gguf"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_inspect: $*" >&2; exit 1; }
has() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "output lacks '$2'"; }; }

# Text output: version, metadata (long arrays summarised), totals by type, weights and the KV cache per token.
# seed-tiny-qwen3: 2 layers x 2 KV heads x (8 + 8) x 2 bytes = 128 bytes per token.
"$TONGYUN" inspect "$corpus/seed-tiny-qwen3.gguf" > "$tmp/out.txt"
has "$tmp/out.txt" "GGUF v3, alignment 32"
has "$tmp/out.txt" "general.architecture"
has "$tmp/out.txt" '"qwen3"'
has "$tmp/out.txt" 'arr[str]  8 elements: ["<unk>", "a", "b", "ab", ...]'
has "$tmp/out.txt" "tensors: 5 (list them with --tensors)"
has "$tmp/out.txt" "Q8_0            2"
has "$tmp/out.txt" "total           5"
has "$tmp/out.txt" "128 B per token = 2 layers x 2 KV heads x (8 + 8) x 2 bytes"
has "$tmp/out.txt" "(training context)"
grep -q "blk.0.attn_q.weight" "$tmp/out.txt" && fail "tensor table printed without --tensors"

"$TONGYUN" inspect --tensors "$corpus/seed-tiny-qwen3.gguf" > "$tmp/t.txt"
has "$tmp/t.txt" "blk.0.attn_q.weight"
has "$tmp/t.txt" "[32, 32]"
has "$tmp/t.txt" "1088"

"$TONGYUN" inspect "$corpus/seed-v2-all-types.gguf" > "$tmp/v2.txt"
has "$tmp/v2.txt" "GGUF v2"
has "$tmp/v2.txt" "arr[arr]  2 elements"
has "$tmp/v2.txt" "9223372036854775808"
has "$tmp/v2.txt" "KV cache        unknown"

# JSON: parseable, with the same facts.
"$TONGYUN" inspect "$corpus/seed-tiny-qwen3.gguf" --json --tensors > "$tmp/out.json"
python3 - "$tmp/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["version"] == 3 and d["alignment"] == 32, d
assert d["n_tensors"] == 5 and len(d["tensors"]) == 5
assert d["kv_cache"]["bytes_per_token"] == 128, d["kv_cache"]
assert d["kv_cache"]["context_train"] == 128
meta = {m["key"]: m for m in d["metadata"]}
assert meta["general.architecture"]["value"] == "qwen3"
assert meta["tokenizer.ggml.tokens"]["length"] == 8 and meta["tokenizer.ggml.tokens"]["first"][:2] == ["<unk>", "a"]
assert sum(t["bytes"] for t in d["by_type"]) == d["total_bytes"] == sum(t["bytes"] for t in d["tensors"])
assert d["multi_token_prediction"]["present"] is False
PY

# Multi-token-prediction heads are reported as present and ignored, and left out of the KV estimate.
python3 - "$tmp/mtp.gguf" <<'PY'
import struct, sys
def s(b): b = b.encode(); return struct.pack("<Q", len(b)) + b
def u32(k, v): return s(k) + struct.pack("<II", 4, v)
kvs = [s("general.architecture") + struct.pack("<I", 8) + s("glm4moe"), u32("glm4moe.block_count", 3),
       u32("glm4moe.nextn_predict_layers", 1), u32("glm4moe.attention.head_count", 2),
       u32("glm4moe.attention.head_count_kv", 1), u32("glm4moe.embedding_length", 16)]
infos = s("blk.0.attn_norm.weight") + struct.pack("<IQIQ", 1, 8, 0, 0) + \
        s("blk.2.nextn.eh_proj.weight") + struct.pack("<IQIQ", 1, 8, 0, 32)
head = b"GGUF" + struct.pack("<IQQ", 3, 2, len(kvs)) + b"".join(kvs) + infos
head += b"\0" * (-len(head) % 32)
open(sys.argv[1], "wb").write(head + b"\0" * 64)
PY
"$TONGYUN" inspect "$tmp/mtp.gguf" > "$tmp/mtp.txt"
has "$tmp/mtp.txt" "multi-token prediction: present and ignored by Tongyun (1 nextn layer(s), 1 blk.N.nextn tensors, 32 B)"
# 2 non-MTP layers x 1 KV head x (8 + 8) x 2 bytes
has "$tmp/mtp.txt" "64 B per token = 2 layers x 1 KV heads x (8 + 8) x 2 bytes"
has "$tmp/mtp.txt" "MTP tensors left out"

# Corrupt files: exit status 1 and a message that names the problem.
set +e
"$TONGYUN" inspect "$corpus/cve-tensor-offset-past-eof.gguf" > /dev/null 2> "$tmp/err.txt"
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "corrupt file: exit status $rc, want 1"
has "$tmp/err.txt" "tongyun inspect:"
has "$tmp/err.txt" "past end of file"
head -c 100 "$corpus/seed-tiny-qwen3.gguf" > "$tmp/trunc.gguf"
set +e
"$TONGYUN" inspect "$tmp/trunc.gguf" > /dev/null 2> "$tmp/err2.txt"
rc=$?
"$TONGYUN" inspect "$tmp/missing.gguf" > /dev/null 2> "$tmp/err3.txt"
rc3=$?
"$TONGYUN" inspect > /dev/null 2>&1
rc4=$?
"$TONGYUN" inspect --bogus "$corpus/seed-tiny-qwen3.gguf" > /dev/null 2>&1
rc5=$?
set -e
[ "$rc" -eq 1 ] || fail "truncated file: exit status $rc, want 1"
has "$tmp/err2.txt" "truncated or corrupt"
[ "$rc3" -eq 1 ] || fail "missing file: exit status $rc3, want 1"
has "$tmp/err3.txt" "missing.gguf"
[ "$rc4" -eq 2 ] || fail "no file: exit status $rc4, want 2"
[ "$rc5" -eq 2 ] || fail "unknown flag: exit status $rc5, want 2"

"$TONGYUN" inspect --help > "$tmp/help.txt"
has "$tmp/help.txt" "usage: tongyun inspect MODEL.gguf"
has "$tmp/help.txt" "--json"
has "$tmp/help.txt" "--tensors"
has "$tmp/help.txt" "KV cache"
echo "test_inspect: ok"
