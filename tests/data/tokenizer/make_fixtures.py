#!/usr/bin/env python3
"""Makes the tokenizer fixtures that need Hugging Face's reference implementation, so the C tests need no Python.

Run (outputs are committed; rerun only to change them):
    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers==0.21.1
    gzip -dc data/tokenizers/qwen3/tokenizer.json.gz > /tmp/qwen3-tokenizer.json
    /tmp/tokvenv/bin/python tests/data/tokenizer/make_fixtures.py /tmp/qwen3-tokenizer.json

Writes, next to this script:
  hf-random.jsonl   random and adversarial texts with Qwen3's ids, special tokens recognised ("ids") and with
                    split_special_tokens ("ids_split"): {"text", "ids", "ids_split"} per line.
  hf-decode.jsonl   random id sequences (mostly single-byte tokens, so UTF-8 breaks) with the reference's decode
                    (skip_special_tokens=False): {"ids", "text"} per line.
  tiny-flags.json   a 256-byte-token tokenizer with a few merges and added tokens using lstrip/rstrip/single_word/
                    normalized (ids as Hugging Face assigns them: after the vocabulary, in file order).
  tiny-flags.jsonl  texts and the reference ids for tiny-flags.json, both ways.
"""
import json
import os
import random
import sys

import tokenizers
from tokenizers import Tokenizer

assert tokenizers.__version__ == "0.21.1", tokenizers.__version__
HERE = os.path.dirname(os.path.abspath(__file__))

QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def bl(s):
    return "".join(B2U[b] for b in s.encode("utf-8"))


POOLS = [
    ["Hello", "world", "the", "ab", "x", "I", "Q", "qwen", "tokenizer", "don", "THEY", "naïve"],
    [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\t\n ", "\u00a0", "\u2000", "\u3000", "\u0085",
     "\u180e", "\u200b", "\ufeff", "\u2028", "\u2029", "\u202f", "\x0b", "\x0c", "\x1c"],
    ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", "'\u017f", "'x", "'"],
    ["0", "7", "12", "345", "2024", "3.14", "1,000", "٣", "Ⅻ", "½", "²"],
    [".", ",", "!", "?", "...", "--", "==", "->", "()", "{}", "[]", "<", ">", "|", "<|", "|>", "@#", "$", "%", "&&",
     "\"", "`", "~", "_", "\\", "/"],
    ["αβγ", "Ελληνικά", "русский", "Ёж", "日本語", "中文", "한국어", "العربية", "हिन्दी", "ไทย", "עברית",
     "Ω", "ß", "ǅ", "ꙮ", "ｆｕｌｌ", "ｶﾅ"],
    ["e\u0301", "a\u0308", "\u1100\u1161", "\u1100\u1161\u11a8", "\u0301", "\u0300\u0301", "\u304b\u3099", "\u212b",
     "\u2126", "\ufb01", "\u0958", "\u1e9b\u0323"],
    ["🦙", "😀", "👨‍👩‍👧", "🏳️‍🌈", "❤️", "🇨🇳", "✅"],
    ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "<|fim_prefix|>",
     "<|im_", "im_end|>", "<<|im_end|>>", "<|im_start|><|im_end|>"],
    ["\x00", "\x01", "\x1b[0m", "\x7f", "\u00ad", "\ufffd", "\U0010ffff", "\ue000", "\uffff"],
    # the reference's NFC knows Unicode 9.0 and its regex Unicode 14.0: marks and letters added since
    ["\u0308\u0eba", "\u1df6\u1dc0", "a\u1df6\u0301", "e\u0eba\u0301", "\u0301\U00011442", "\U00011f04\U00011f05",
     "\U00031350", "\U0001e290", "\U0001d2c0", "x\U000e0100", "\U00011935\U00011930"],
]


def random_text(rng):
    parts = []
    for _ in range(rng.randint(1, 24)):
        pool = rng.choice(POOLS)
        parts.append(rng.choice(pool))
    return "".join(parts)


def make_hf_random(path):
    tok = Tokenizer.from_file(path)
    rng = random.Random(20240611)
    texts = [random_text(rng) for _ in range(600)]
    texts += [
        "a" * 3000,  # one long word: the heap BPE path
        "ab" * 700,
        " " * 2000 + "x",
        "\n" * 500 + " end",
        "x" + " \t" * 400 + "y",
        "9" * 300,
        "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(1500)),
        "字" * 700,
        "🦙" * 200,
        "e\u0301" * 300,
    ]
    with open(os.path.join(HERE, "hf-random.jsonl"), "w", encoding="utf-8") as f:
        for t in texts:
            tok.encode_special_tokens = False
            ids = tok.encode(t, add_special_tokens=False).ids
            tok.encode_special_tokens = True
            ids_split = tok.encode(t, add_special_tokens=False).ids
            f.write(json.dumps({"text": t, "ids": ids, "ids_split": ids_split}, ensure_ascii=False) + "\n")


def make_hf_decode(path):
    """Random id sequences, mostly single-byte tokens so that UTF-8 breaks, with the reference's decode."""
    tok = Tokenizer.from_file(path)
    rng = random.Random(5)
    with open(os.path.join(HERE, "hf-decode.jsonl"), "w", encoding="utf-8") as f:
        for _ in range(400):
            ids = [rng.randint(0, 255) if rng.random() < 0.6 else rng.randint(0, 151668)
                   for _ in range(rng.randint(1, 16))]
            f.write(json.dumps({"ids": ids, "text": tok.decode(ids, skip_special_tokens=False)},
                               ensure_ascii=False) + "\n")


def make_tiny_flags():
    vocab = {B2U[b]: b for b in range(256)}
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "t"), ("Ġt", "h"), ("hell", "o"), ("Ġ", "Ġ")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    added = [
        {"id": 263, "content": "<mask>", "single_word": True, "lstrip": True, "rstrip": True, "normalized": False,
         "special": False},
        {"id": 264, "content": "[CLS]", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True},
        {"id": 265, "content": "n\u0303a", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True,
         "special": False},
        {"id": 266, "content": "[SEP]", "single_word": False, "lstrip": True, "rstrip": False, "normalized": False,
         "special": True},
        {"id": 267, "content": "[SEP]x", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": False},
    ]
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    path = os.path.join(HERE, "tiny-flags.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    tok = Tokenizer.from_file(path)
    texts = [
        "Hi <mask> there\t<mask>\t<mask>\u2000",
        "<mask> My name <mask> A<mask> <mask>ony <mask>",
        "<mask>, <mask>- x<mask>",
        "[CLS] hello [SEP] the [SEP]x  [SEP]",
        "cafe\u0301 and ña and n\u0303a and n\u0303\u0301a",
        "hello hello  the\n[CLS][CLS]",
        "  <mask>  ",
        "<mask>",
        "",
    ]
    with open(os.path.join(HERE, "tiny-flags.jsonl"), "w", encoding="utf-8") as f:
        for t in texts:
            tok.encode_special_tokens = False
            ids = tok.encode(t, add_special_tokens=False).ids
            tok.encode_special_tokens = True
            ids_split = tok.encode(t, add_special_tokens=False).ids
            f.write(json.dumps({"text": t, "ids": ids, "ids_split": ids_split}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    make_hf_random(sys.argv[1])
    make_hf_decode(sys.argv[1])
    make_tiny_flags()
