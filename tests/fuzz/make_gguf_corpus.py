#!/usr/bin/env python3
"""make_gguf_corpus.py - writes the GGUF fuzz seeds and regression corpus into tests/fuzz/corpus/gguf/.

Standard library only; the outputs are committed, so this runs only when the corpus changes:

    python3 tests/fuzz/make_gguf_corpus.py

Files named `seed-*` are small valid GGUF files the fuzzer mutates. Files named `cve-*` each reproduce one pattern
that crashed or corrupted memory in other engines' GGUF parsers (the 2024 reports on ggml's gguf.c: string lengths,
key/tensor counts multiplied by an element size, array counts, n_dims past the dimension array, alignment arithmetic,
tensor offsets and sizes). test_gguf.c asserts that every `cve-*` file is rejected with TY_ERR_FORMAT and a message.
(A vocabulary whose merges or token ids are out of range is the tokenizer's concern, not the container's.)
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
# ggml tensor types
T_F32, T_F16, T_Q4_0, T_Q8_0, T_Q4_K = 0, 1, 2, 8, 12
U64_MAX = (1 << 64) - 1


def gstr(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_u32(key, v):
    return kv(key, U32, struct.pack("<I", v))


def kv_str(key, v):
    return kv(key, STR, gstr(v))


def arr(elem_type, items_bytes, n):
    return struct.pack("<IQ", elem_type, n) + items_bytes


def kv_arr_str(key, items):
    return kv(key, ARR, arr(STR, b"".join(gstr(s) for s in items), len(items)))


def tinfo(name, dims, ttype, offset):
    return gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", ttype, offset)


def header(n_tensors, n_kv, version=3):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def pad(n, align):
    return b"\0" * ((align - n % align) % align)


def gguf(kvs, tensors=(), version=3, align=32, n_tensors=None, n_kv=None):
    """A GGUF file; `tensors` is a list of (name, dims, type, data bytes). Offsets are laid out aligned."""
    infos, blob = b"", b""
    for name, dims, ttype, data in tensors:
        infos += tinfo(name, dims, ttype, len(blob))
        blob += data + pad(len(data), align)
    head = header(len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv, version)
    meta = head + b"".join(kvs) + infos
    return meta + pad(len(meta), align) + blob


def raw_file(kvs, infos, n_tensors, data=b"", align=32):
    meta = header(n_tensors, len(kvs)) + b"".join(kvs) + b"".join(infos)
    return meta + pad(len(meta), align) + data


def det_bytes(n, seed):
    """Deterministic filler bytes (a small LCG), so regenerating gives identical files."""
    out, x = bytearray(), seed
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(x >> 16 & 0xFF)
    return bytes(out)


def f32s(vals):
    return b"".join(struct.pack("<f", v) for v in vals)


def q8_0_rows(rows, seed):
    """Q8_0 blocks: f16 scale then 32 int8 quants."""
    out = b""
    for r in range(rows):
        out += struct.pack("<e", 0.01 * (r + 1)) + det_bytes(32, seed + r)
    return out


def seeds():
    tokens = ["<unk>", "a", "b", "ab", "Hello", " world", "<|im_start|>", "<|im_end|>"]
    base_kvs = [
        kv_str("general.architecture", "qwen3"),
        kv_str("general.name", "tiny seed"),
        kv_u32("qwen3.block_count", 2),
        kv_u32("qwen3.context_length", 128),
        kv_u32("qwen3.embedding_length", 32),
        kv_u32("qwen3.attention.head_count", 4),
        kv_u32("qwen3.attention.head_count_kv", 2),
        kv_u32("qwen3.attention.key_length", 8),
        kv("qwen3.rope.freq_base", F32, struct.pack("<f", 1000000.0)),
        kv_str("tokenizer.ggml.model", "gpt2"),
        kv_arr_str("tokenizer.ggml.tokens", tokens),
        kv("tokenizer.ggml.token_type", ARR, arr(I32, b"".join(struct.pack("<i", 1) for _ in tokens), len(tokens))),
        kv_arr_str("tokenizer.ggml.merges", ["a b"]),
        kv("tokenizer.ggml.add_bos_token", BOOL, b"\0"),
    ]
    yield "seed-tiny-qwen3.gguf", gguf(base_kvs, [
        ("token_embd.weight", [32, 8], T_Q8_0, q8_0_rows(8, 1)),
        ("blk.0.attn_norm.weight", [32], T_F32, f32s([1.0] * 32)),
        ("blk.0.attn_q.weight", [32, 32], T_Q8_0, q8_0_rows(32, 2)),
        ("blk.1.attn_k.weight", [32, 16], T_F16, det_bytes(32 * 16 * 2, 3)),
        ("output_norm.weight", [32], T_F32, f32s([0.5] * 32)),
    ])

    every = [
        kv("t.u8", U8, b"\x07"), kv("t.i8", I8, b"\xf9"), kv("t.u16", U16, struct.pack("<H", 65000)),
        kv("t.i16", I16, struct.pack("<h", -3000)), kv_u32("t.u32", 4000000000),
        kv("t.i32", I32, struct.pack("<i", -2000000000)), kv("t.f32", F32, struct.pack("<f", 0.25)),
        kv("t.bool", BOOL, b"\1"), kv_str("t.str", "h\u00e9llo"),
        kv("t.u64", U64, struct.pack("<Q", 1 << 63)), kv("t.i64", I64, struct.pack("<q", -(1 << 62))),
        kv("t.f64", F64, struct.pack("<d", -1.5)),
        kv("t.arr_f32", ARR, arr(F32, f32s([1, 2, 3]), 3)),
        kv_arr_str("t.arr_str", ["x", "", "yz"]),
        kv("t.arr_arr", ARR, arr(ARR, arr(U8, b"\1\2", 2) + arr(STR, gstr("q"), 1), 2)),
        kv("t.arr_empty", ARR, arr(U64, b"", 0)),
    ]
    yield "seed-v2-all-types.gguf", gguf(every, version=2)

    yield "seed-align64-q4k.gguf", gguf([kv_u32("general.alignment", 64), kv_str("general.architecture", "qwen2")], [
        ("blk.0.ffn_down.weight", [256, 2], T_Q4_K, det_bytes(2 * 144, 4)),
        ("blk.0.ffn_norm.weight", [8], T_F32, f32s(range(8))),
        ("blk.0.attn_v.weight", [32, 1], T_Q4_0, det_bytes(18, 5)),
    ], align=64)


def cves():
    arch = kv_str("general.architecture", "qwen3")
    one = tinfo("w", [8], T_F32, 0)
    data = f32s([0] * 8)

    # Strings: a length that wraps an addition or asks for an enormous allocation.
    yield "cve-huge-string-len.gguf", header(0, 1) + struct.pack("<Q", U64_MAX) + b"general.architecture"
    yield "cve-huge-string-value-len.gguf", header(0, 1) + gstr("general.name") + struct.pack("<IQ", STR, 1 << 63) + b"x"
    yield "cve-string-len-past-eof.gguf", header(0, 1) + gstr("general.name") + struct.pack("<IQ", STR, 4096) + b"abc"
    yield "cve-key-embedded-nul.gguf", raw_file([kv_u32("general.al\0ignment", 32)], [], 0)
    yield "cve-key-empty.gguf", raw_file([kv_u32("", 1)], [], 0)

    # Counts multiplied by an element size before allocation.
    yield "cve-kv-count-huge.gguf", header(0, U64_MAX) + arch
    yield "cve-tensor-count-overflow.gguf", header(1 << 62, 1) + arch + one
    yield "cve-tensor-count-times-size-wraps.gguf", header(0x0AAAAAAAAAAAAAAB, 0) + one
    yield "cve-array-huge-count.gguf", header(0, 1) + kv("a", ARR, struct.pack("<IQ", U64, 1 << 61)) + b"\0" * 16
    yield "cve-array-string-huge-count.gguf", header(0, 1) + kv("tokenizer.ggml.tokens", ARR,
                                                                  struct.pack("<IQ", STR, 1 << 60)) + gstr("a")
    yield "cve-array-string-elem-len-huge.gguf", header(0, 1) + kv("tokenizer.ggml.tokens", ARR, struct.pack(
        "<IQ", STR, 2) + gstr("a") + struct.pack("<Q", U64_MAX - 7) + b"b")
    deep = struct.pack("<IQ", U8, 0)
    for _ in range(64):
        deep = struct.pack("<IQ", ARR, 1) + deep
    yield "cve-array-nested-deep.gguf", header(0, 1) + kv("a", ARR, deep)
    yield "cve-kv-invalid-type.gguf", header(0, 1) + kv("a", 0xFFFFFFFF, b"\0" * 8)
    yield "cve-array-invalid-elem-type.gguf", header(0, 1) + kv("a", ARR, struct.pack("<IQ", 13, 1) + b"\0" * 8)
    yield "cve-key-duplicate.gguf", raw_file([kv_u32("general.alignment", 32), kv_u32("general.alignment", 64)], [], 0)

    # Alignment: zero (division by zero), not a power of two, and values whose padding arithmetic overflows.
    for name, value in [("zero", 0), ("not-power-of-two", 48), ("overflow", 0x80000000), ("u32-max", 0xFFFFFFFF)]:
        yield f"cve-alignment-{name}.gguf", raw_file([kv_u32("general.alignment", value)], [one], 1, data)
    yield "cve-alignment-wrong-type.gguf", raw_file([kv_str("general.alignment", "32")], [one], 1, data)

    # Tensor infos: dimension count past the fixed array, shapes whose products overflow, bad types and offsets.
    yield "cve-tensor-n-dims-5.gguf", raw_file([arch], [tinfo("w", [1, 1, 1, 1, 8], T_F32, 0)], 1, data)
    yield "cve-tensor-n-dims-huge.gguf", raw_file(
        [arch], [gstr("w") + struct.pack("<I", 0xFFFFFFFF) + struct.pack("<Q", 8) * 8], 1)
    yield "cve-tensor-n-dims-zero.gguf", raw_file([arch], [gstr("w") + struct.pack("<IIQ", 0, T_F32, 0)], 1, data)
    yield "cve-tensor-ne-negative.gguf", raw_file([arch], [tinfo("w", [8, U64_MAX], T_F32, 0)], 1, data)
    yield "cve-tensor-ne-zero.gguf", raw_file([arch], [tinfo("w", [8, 0], T_F32, 0)], 1, data)
    yield "cve-tensor-ne-product-overflow.gguf", raw_file(
        [arch], [tinfo("w", [1 << 32, 1 << 32, 1 << 32, 1 << 32], T_F32, 0)], 1, data)
    yield "cve-tensor-nbytes-overflow.gguf", raw_file([arch], [tinfo("w", [1 << 61, 2], T_F32, 0)], 1, data)
    yield "cve-tensor-type-invalid.gguf", raw_file([arch], [tinfo("w", [8], 0xFFFFFFFF, 0)], 1, data)
    yield "cve-tensor-type-out-of-table.gguf", raw_file([arch], [tinfo("w", [8], 40, 0)], 1, data)
    yield "cve-tensor-row-not-block-multiple.gguf", raw_file([arch], [tinfo("w", [33], T_Q8_0, 0)], 1, b"\0" * 64)
    yield "cve-tensor-offset-past-eof.gguf", raw_file([arch], [tinfo("w", [8], T_F32, 1 << 20)], 1, data)
    yield "cve-tensor-offset-overflow.gguf", raw_file([arch], [tinfo("w", [8], T_F32, (1 << 64) - 32)], 1, data)
    yield "cve-tensor-data-past-eof.gguf", raw_file([arch], [tinfo("w", [1 << 20, 1 << 10], T_F32, 0)], 1, data)
    yield "cve-tensor-offset-misaligned.gguf", raw_file(
        [arch], [tinfo("a", [8], T_F32, 0), tinfo("b", [8], T_F32, 33)], 2, data * 3)
    yield "cve-tensor-duplicate-name.gguf", raw_file(
        [arch], [tinfo("w", [8], T_F32, 0), tinfo("w", [8], T_F32, 32)], 2, data * 2)
    yield "cve-tensor-name-huge-len.gguf", raw_file([arch], [struct.pack("<Q", 1 << 40) + b"w" * 40], 1)

    # Header damage.
    yield "cve-truncated-header.gguf", b"GGUF" + struct.pack("<I", 3) + b"\1\0\0"
    yield "cve-bad-magic.gguf", b"GGML" + gguf([arch])[4:]


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.startswith(("seed-", "cve-")):
            os.remove(os.path.join(OUT, old))
    names = set()
    for name, blob in list(seeds()) + list(cves()):
        assert name not in names, name
        names.add(name)
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(blob)
    print(f"wrote {len(names)} files to {OUT}")


if __name__ == "__main__":
    main()
