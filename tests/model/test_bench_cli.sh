#!/usr/bin/env bash
# test_bench_cli.sh - `tongyun bench` on the tiny Qwen3 and Qwen3-MoE fixtures (converted here, f32): one JSON line per
# thread count carrying the names other tools read, speeds and rooflines that agree with each other, the parameter
# count of the checkpoint, the FLOPs of a prompt token (the output matrix for the last token only), the bytes a decode
# step reads (all weights of the tied dense model; one embedding row and k of E experts in the MoE model), each
# computed independently from the Hugging Face checkpoint here, the recurrent state a hybrid (Qwen3-Next) decode step
# reads and writes back, the tests at a context depth (-d), the op profile (--profile), the table form, and usage
# errors. No timing is asserted: speeds only have to be positive.
set -euo pipefail
: "${TONGYUN:?}" "${TY_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_bench_cli: $*" >&2; exit 1; }
export TY_ROOFLINE_MB=64 # a short roofline: the figures only have to exist here

for m in qwen3-tiny qwen3moe-tiny qwen3next-tiny; do
    "$TONGYUN" convert "$TY_SOURCE_DIR/tests/data/models/$m" "$tmp/$m.gguf" --type f32 -q ||
        fail "convert $m failed"
    "$TONGYUN" bench -m "$tmp/$m.gguf" -p 12 -n 6 -r 2 -t 1,2 --roofline-seconds 0.3 --json > "$tmp/$m.jsonl" \
        2> "$tmp/$m.err" || { cat "$tmp/$m.err" >&2; fail "bench $m failed"; }
done

python3 - "$tmp" "$TY_SOURCE_DIR/tests/data/models" <<'EOF'
import json, math, struct, sys
tmp, models = sys.argv[1], sys.argv[2]

def fail(msg):
    sys.exit("test_bench_cli: " + msg)

def close(a, b, rel=1e-7):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-30)

def st_params(path):  # element count of every tensor of a safetensors file, from its header
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")

def st_shapes(path):  # name -> shape of every tensor of a safetensors file
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}

for name in ("qwen3-tiny", "qwen3moe-tiny"):
    cfg = json.load(open(f"{models}/{name}/config.json"))
    lines = open(f"{tmp}/{name}.jsonl").read().splitlines()
    if len(lines) != 2:
        fail(f"{name}: want one JSON line per thread count (2), got {len(lines)}")
    rows = [json.loads(l) for l in lines]
    if [r["threads"] for r in rows] != [1, 2]:
        fail(f"{name}: threads {[r['threads'] for r in rows]}")
    params = st_params(f"{models}/{name}/model.safetensors")
    h, v, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    for r in rows:
        for k in ("pp_tok_s", "tg_tok_s", "mem_bw_gbs", "tg_roofline_pct", "pp_peak_pct", "fma_gflops",
                  "int8_gops", "tg_roofline_tok_s", "pp_peak_tok_s", "tg_bytes_per_token"):
            if not (isinstance(r.get(k), (int, float)) and r[k] > 0):
                fail(f"{name}: {k} = {r.get(k)!r}, want a positive number")
        if r["n_params"] != params:
            fail(f"{name}: n_params {r['n_params']} != {params} in the checkpoint")
        if r["type"] != "F32" or r["n_prompt"] != 12 or r["n_gen"] != 6 or len(r["tg_samples"]) != 2:
            fail(f"{name}: type/n_prompt/n_gen/samples wrong: {r}")
        if not close(r["tg_roofline_pct"], 100 * r["tg_tok_s"] / r["tg_roofline_tok_s"]):
            fail(f"{name}: tg_roofline_pct disagrees with tg_tok_s / tg_roofline_tok_s")
        if not close(r["pp_peak_pct"], 100 * r["pp_tok_s"] / r["pp_peak_tok_s"]):
            fail(f"{name}: pp_peak_pct disagrees with pp_tok_s / pp_peak_tok_s")
        # decode's roofline: the bandwidth measured around each repetition (one probe figure per repetition, their
        # mean), over the bytes per token
        if len(r["tg_mem_bw_samples"]) != 2 or not all(b > 0 for b in r["tg_mem_bw_samples"]):
            fail(f"{name}: want one positive bandwidth probe figure per decode repetition: {r['tg_mem_bw_samples']}")
        if not close(r["tg_mem_bw_gbs"], sum(r["tg_mem_bw_samples"]) / 2):
            fail(f"{name}: tg_mem_bw_gbs is not the mean of its samples")
        if not close(r["tg_roofline_tok_s"], r["tg_mem_bw_gbs"] * 1e9 / r["tg_bytes_per_token"]):
            fail(f"{name}: tg_roofline_tok_s is not the decode bandwidth / bytes per token")
        if not close(sum(r["tg_samples"]) / 2, r["tg_tok_s"]):
            fail(f"{name}: tg_tok_s is not the mean of its samples")
        # bytes one decode step reads, from the config alone (f32 weights: 4 bytes per parameter)
        want = 4 * params
        if not cfg["tie_word_embeddings"]:
            want -= 4 * h * (v - 1)  # the embedding lookup reads one row
        if cfg.get("num_experts"):
            E, k, ff = cfg["num_experts"], cfg["num_experts_per_tok"], cfg["moe_intermediate_size"]
            moe_layers = L - len(cfg.get("mlp_only_layers", []))
            want -= 4 * moe_layers * 3 * E * h * ff * (1 - k / E)
        if not close(r["tg_weight_bytes_per_token"], want):
            fail(f"{name}: decode reads {r['tg_weight_bytes_per_token']} weight bytes, want {want}")
        # FLOPs of a prompt token: 2 per weight of every matrix it runs (experts at their k / E share), the output
        # matrix for the last of the 12 prompt tokens only, and attention over the mean context
        mats = 0
        for key, shape in st_shapes(f"{models}/{name}/model.safetensors").items():
            if len(shape) < 2 or (key == "model.embed_tokens.weight" and not cfg["tie_word_embeddings"]):
                continue
            share = cfg["num_experts_per_tok"] / cfg["num_experts"] if ".mlp.experts." in key else 1
            mats += math.prod(shape) * share
        attn = L * 2 * cfg["num_attention_heads"] * 2 * cfg["head_dim"] * (12 + 1) / 2
        if not close(r["pp_flops_per_token"], 2 * mats - 2 * h * v * (1 - 1 / 12) + attn, 1e-6):
            fail(f"{name}: prefill FLOPs per token {r['pp_flops_per_token']}, want {2 * mats - 2 * h * v * 11 / 12 + attn}")
        head = cfg["head_dim"]
        kv = L * cfg["num_key_value_heads"] * 2 * head * 2  # f16 K and V per cached position
        if not close(r["tg_bytes_per_token"], want + kv * (6 + 1) / 2):
            fail(f"{name}: bytes per token {r['tg_bytes_per_token']} != weights + mean KV {want + kv * 3.5}")
# the hybrid model: its linear-attention layers add their recurrent state (f32 delta-rule state hv x dk x dv and
# conv state conv_dim x (K - 1), read and written back: 8 bytes per element); only full-attention layers cache KV
cfg = json.load(open(f"{models}/qwen3next-tiny/config.json"))
hk, hv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
dk, dv, K = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"], cfg["linear_conv_kernel_dim"]
n_lin = cfg["layer_types"].count("linear_attention")
state = 8 * n_lin * (hv * dk * dv + (2 * hk * dk + hv * dv) * (K - 1))
kv = (len(cfg["layer_types"]) - n_lin) * cfg["num_key_value_heads"] * 2 * cfg["head_dim"] * 2
for r in (json.loads(l) for l in open(f"{tmp}/qwen3next-tiny.jsonl").read().splitlines()):
    if not close(r["tg_state_bytes_per_token"], state):
        fail(f"qwen3next-tiny: state bytes {r['tg_state_bytes_per_token']}, want {state}")
    if not close(r["tg_bytes_per_token"], r["tg_weight_bytes_per_token"] + state + kv * (6 + 1) / 2):
        fail(f"qwen3next-tiny: bytes per token {r['tg_bytes_per_token']} != weights + state + mean KV")
for name in ("qwen3-tiny", "qwen3moe-tiny"):
    for r in (json.loads(l) for l in open(f"{tmp}/{name}.jsonl").read().splitlines()):
        if r["tg_state_bytes_per_token"] != 0:
            fail(f"{name}: a plain transformer has no recurrent state, got {r['tg_state_bytes_per_token']}")
print("bench JSON checks passed")
EOF

# --profile: every op of the timed repetitions, counted once per wrapper call even where a backend without the fused
# entries (cpu-ref) runs attn_block and ffn as nested ops; the shares of the ops and of the time outside them add up to
# the whole test
for be in cpu cpu-ref; do
    "$TONGYUN" bench -m "$tmp/qwen3-tiny.gguf" -p 12 -n 6 -r 2 -t 2 --roofline-seconds 0.3 --backend "$be" --profile \
        --json > "$tmp/profile-$be.json" 2> "$tmp/profile.err" || { cat "$tmp/profile.err" >&2; fail "--profile failed"; }
done
python3 - "$tmp" "$TY_SOURCE_DIR/tests/data/models" <<'EOF'
import json, sys
tmp, models = sys.argv[1], sys.argv[2]
L = json.load(open(f"{models}/qwen3-tiny/config.json"))["num_hidden_layers"]
# per decode token: the embedding row, per layer its attention half (input norm, q/k/v, RoPE, K and V writes,
# attention, output projection, residual add) and its feed-forward half; then the final norm and the output matrix
tg_want = {"get_rows": 1, "attn_block": L, "ffn": L, "matmul": 1, "rms_norm": 1}
for be in ("cpu", "cpu-ref"):
    r = json.loads(open(f"{tmp}/profile-{be}.json").read())
    for test, tokens in (("tg_profile", 1), ("pp_profile", 12)):
        ops = {e["op"]: e for e in r[test]}
        calls = {k: round(e["calls_per_token"] * tokens, 6) for k, e in ops.items() if "calls_per_token" in e}
        if test == "tg_profile" and calls != tg_want:
            sys.exit(f"test_bench_cli: {be} decode calls per token {calls}, want {tg_want}")
        for op in ("attn_block", "ffn"):  # a 12-token prompt is one batch: once per layer
            if calls.get(op) != L:
                sys.exit(f"test_bench_cli: {be} prefill {op} ran {calls.get(op)} times per batch, want {L}")
        total = sum(e["share"] for e in r[test])
        if abs(total - 1) > 1e-9:
            sys.exit(f"test_bench_cli: {be} {test} shares add up to {total}, want 1")
        if not (ops["matmul"]["read_gbs"] > 0 and ops["attn_block"]["read_gbs"] > 0 and ops["ffn"]["read_gbs"] > 0):
            sys.exit(f"test_bench_cli: {be} {test}: an op that reads weights or KV reports no bytes: {ops}")
        # the calling thread's time alone: the fast backend's products report it (a part of their time, so their
        # streams run faster than the op as a whole); nothing else does
        products = ("matmul", "attn_block", "ffn")
        for op, e in ops.items():
            alone = e.get("alone_us_per_token", 0)
            if be == "cpu" and op in products:
                if not (0 < alone < e["us_per_token"] and e["streaming_gbs"] > e["read_gbs"]):
                    sys.exit(f"test_bench_cli: {be} {test} {op}: time alone {alone} us of {e['us_per_token']}, "
                             f"streams at {e.get('streaming_gbs')} GB/s against {e['read_gbs']} for the whole op")
            elif alone != 0:
                sys.exit(f"test_bench_cli: {be} {test} {op} reports {alone} us alone, but only the fast backend's "
                         "products have a part alone")
print("bench --profile checks passed")
EOF

# -d: the tests start at a context depth (the cache filled once, untimed): one JSON line per thread count and depth
# in that order, each with its n_depth; a decode step at depth D reads the KV of D + (n + 1) / 2 positions on average
# and a prompt token attends to D + (p + 1) / 2, so the rooflines grow by exactly the depth's KV bytes and attention
# FLOPs over the depth-0 line's; the table names the tests as llama-bench does ("tg6 @ d20")
"$TONGYUN" bench -m "$tmp/qwen3-tiny.gguf" -p 12 -n 6 -r 2 -t 1,2 -d 0,20 --roofline-seconds 0.3 --json \
    > "$tmp/depth.jsonl" 2> "$tmp/depth.err" || { cat "$tmp/depth.err" >&2; fail "bench -d failed"; }
python3 - "$tmp" "$TY_SOURCE_DIR/tests/data/models" <<'EOF2'
import json, sys
tmp, models = sys.argv[1], sys.argv[2]
cfg = json.load(open(f"{models}/qwen3-tiny/config.json"))
L, head = cfg["num_hidden_layers"], cfg["head_dim"]
kv = L * cfg["num_key_value_heads"] * 2 * head * 2  # f16 K and V bytes per cached position
attn = L * 2 * cfg["num_attention_heads"] * 2 * head  # attention FLOPs per (query, key) pair
rows = [json.loads(l) for l in open(f"{tmp}/depth.jsonl").read().splitlines()]
if [(r["threads"], r["n_depth"]) for r in rows] != [(1, 0), (1, 20), (2, 0), (2, 20)]:
    sys.exit(f"test_bench_cli: -d lines {[(r['threads'], r['n_depth']) for r in rows]}")
if any(r["attn_flops_per_position"] != attn for r in rows):
    sys.exit(f"test_bench_cli: attn_flops_per_position {[r['attn_flops_per_position'] for r in rows]}, want {attn}")
for d0, d20 in ((rows[0], rows[1]), (rows[2], rows[3])):
    if not all(r[k] > 0 for r in (d0, d20) for k in ("pp_tok_s", "tg_tok_s", "pp_peak_pct", "tg_roofline_pct")):
        sys.exit(f"test_bench_cli: -d: a speed or roofline is not positive: {d20}")
    if abs(d20["tg_bytes_per_token"] - d0["tg_bytes_per_token"] - 20 * kv) > 1e-6 * d20["tg_bytes_per_token"]:
        sys.exit(f"test_bench_cli: -d 20: decode bytes {d20['tg_bytes_per_token']}, want "
                 f"{d0['tg_bytes_per_token']} + 20 x {kv}")
    if abs(d20["pp_flops_per_token"] - d0["pp_flops_per_token"] - 20 * attn) > 1e-6 * d20["pp_flops_per_token"]:
        sys.exit(f"test_bench_cli: -d 20: prefill FLOPs {d20['pp_flops_per_token']}, want "
                 f"{d0['pp_flops_per_token']} + 20 x {attn}")
print("bench -d checks passed")
EOF2
"$TONGYUN" bench -m "$tmp/qwen3-tiny.gguf" -p 8 -n 4 -r 1 -t 1,2 -d 20 --roofline-seconds 0.3 > "$tmp/depth.out" \
    2>&1 || { cat "$tmp/depth.out" >&2; fail "table run with -d failed"; }
for want in "| pp8 @ d20 |" "| tg4 @ d20 |" "prefill scaling 1 -> 2 threads @ d20:"; do
    grep -qF -- "$want" "$tmp/depth.out" || { cat "$tmp/depth.out" >&2; fail "-d table lacks '$want'"; }
done

# the table
"$TONGYUN" bench -m "$tmp/qwen3-tiny.gguf" -p 8 -n 4 -r 1 -t 1 --roofline-seconds 0.3 --profile > "$tmp/table.out" \
    2>&1 || { cat "$tmp/table.out" >&2; fail "table run failed"; }
for want in "| pp8 |" "| tg4 |" "% of roofline" "read GB/s" "profile of tg4, 1 threads" "| attn_block | 2.0 |" \
    "| us/token alone | GB/s streaming |"; do
    grep -qF -- "$want" "$tmp/table.out" || { cat "$tmp/table.out" >&2; fail "table lacks '$want'"; }
done

# usage errors exit 2 with a message; a missing model exits 1
expect() {
    local want=$1 needle=$2
    shift 2
    set +e
    "$TONGYUN" bench "$@" > "$tmp/e.out" 2>&1
    local rc=$?
    set -e
    [ "$rc" = "$want" ] || { cat "$tmp/e.out" >&2; fail "bench $* exited $rc, want $want"; }
    grep -qF -- "$needle" "$tmp/e.out" || { cat "$tmp/e.out" >&2; fail "bench $* does not say '$needle'"; }
}
expect 2 "-m MODEL is required" -p 8
expect 2 "nothing to measure" -m "$tmp/qwen3-tiny.gguf" -p 0 -n 0
expect 2 "-t" -m "$tmp/qwen3-tiny.gguf" -t 1,x
expect 2 "--kv-type" -m "$tmp/qwen3-tiny.gguf" --kv-type q8
expect 2 "-d" -m "$tmp/qwen3-tiny.gguf" -d 5,-1
expect 1 "no-such.gguf" -m "$tmp/no-such.gguf"
echo "test_bench_cli: all checks passed"
