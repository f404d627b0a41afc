#!/usr/bin/env python3
"""make_corpus.py - the training corpus of the bundled Tongyun-Mini model, built from Debian packages only.

Sources (both installed by scripts/mini/build.sh with apt-get):
  - WordNet 3.0 (package wordnet-base, /usr/share/wordnet): every lemma's senses, in WordNet's frequency order, with
    their glosses and usage examples. Licence: the WordNet 3.0 licence (permissive: use, copy, modify and distribute
    for any purpose without fee, keeping Princeton's copyright notice; see data/models/tongyun-mini/LICENSE).
  - The King James Bible (packages bible-kjv-text + bible-kjv, read through `bible -f`). Public domain outside the
    United Kingdom; in the UK the Crown's letters patent cover printing, not its use as data.

Output: JSON Lines, one record per line, in a deterministic order shuffled with a fixed seed:
  {"messages": [{"role": "user", "content": "What does ... mean?"}, {"role": "assistant", "content": "..."}]}
  {"text": "..."}                                  (a chapter of the Bible)
The question wordings vary (seeded), so the model learns the task rather than one sentence.

usage: make_corpus.py OUT.jsonl [--wordnet DIR] [--no-bible] [--seed N] [--max-senses N]
"""
import argparse
import json
import random
import re
import subprocess
import sys

POS_NAME = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}

ASK_MEANING = [
    "What does {w} mean?",
    "What does the word \"{w}\" mean?",
    "Define {w}.",
    "What is the meaning of {w}?",
    "What is {a} {w}?",
    "Explain the word \"{w}\".",
    "{W}: what does it mean?",
]
ASK_SENTENCE = [
    "Use \"{w}\" in a sentence.",
    "Give me an example sentence with {w}.",
    "How is the word \"{w}\" used?",
]
ASK_SYNONYM = [
    "What is another word for {w}?",
    "Give a synonym of {w}.",
    "Which words mean the same as {w}?",
]


def article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def clean_lemma(lemma):
    lemma = re.sub(r"\((a|p|ip)\)$", "", lemma)  # adjective position markers
    return lemma.replace("_", " ")


def parse_gloss(gloss):
    """'def; "example one"; "example two"' -> (definition, [examples])"""
    examples = [m.strip() for m in re.findall(r'"([^"]+)"', gloss)]
    definition = re.sub(r'\s*;?\s*"[^"]*"', "", gloss).strip().strip(";").strip()
    return definition, examples


def read_synsets(wordnet):
    synsets = {}  # (pos, offset) -> {"words": [...], "definition": str, "examples": [...]}
    for pos, name in FILES.items():
        with open(f"{wordnet}/data.{name}", encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                offset, ss_type, w_cnt = fields[0], fields[2], int(fields[3], 16)
                words = [clean_lemma(fields[4 + 2 * i]) for i in range(w_cnt)]
                definition, examples = parse_gloss(gloss.strip())
                synsets[(pos, offset)] = {"pos": ss_type, "words": words, "definition": definition,
                                          "examples": examples}
    return synsets


def read_index(wordnet):
    """lemma -> [(pos, offset), ...] in WordNet's sense order (most frequent first)."""
    senses = {}
    for pos, name in FILES.items():
        with open(f"{wordnet}/index.{name}", encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                fields = line.split()
                lemma, p_cnt = fields[0], int(fields[3])
                synset_cnt = int(fields[2])
                offsets = fields[6 + p_cnt: 6 + p_cnt + synset_cnt]
                senses.setdefault(clean_lemma(lemma), []).extend((pos, o) for o in offsets)
    return senses


def sentence(text):
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def chat(question, answer):
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def wordnet_records(wordnet, rng, max_senses):
    synsets = read_synsets(wordnet)
    out = []
    for word, refs in sorted(read_index(wordnet).items()):
        if len(word) < 2 or any(c.isdigit() for c in word):
            continue
        senses = [synsets[r] for r in refs if r in synsets][:max_senses]
        if not senses:
            continue
        # the index is lower case; the synsets keep proper nouns' capitals ("Baron Snow of Leicester")
        word = next((w for w in senses[0]["words"] if w.lower() == word.lower()), word)
        fmt = {"w": word, "W": word[0].upper() + word[1:], "a": article(word)}
        q = rng.choice(ASK_MEANING).format(**fmt)
        if len(senses) == 1:
            s = senses[0]
            a = f"{fmt['W']} ({POS_NAME[s['pos']]}): {sentence(s['definition'])}"
            if s["examples"]:
                a += f" For example: \"{sentence(s['examples'][0])}\""
        else:
            lines = [f"{fmt['W']} has {len(senses)} common meanings:"]
            for i, s in enumerate(senses, 1):
                lines.append(f"{i}. ({POS_NAME[s['pos']]}) {sentence(s['definition'])}")
            a = "\n".join(lines)
        out.append(chat(q, a))
        with_example = [s for s in senses if s["examples"]]
        if with_example and rng.random() < 0.35:
            s = with_example[0]
            out.append(chat(rng.choice(ASK_SENTENCE).format(**fmt), sentence(s["examples"][0])))
        synonyms = [w for w in senses[0]["words"] if w.lower() != word.lower()]
        if synonyms and rng.random() < 0.35:
            a = (f"{fmt['W']} can also be called " + ", ".join(f"\"{w}\"" for w in synonyms[:4]) +
                 f" (meaning: {senses[0]['definition']}).")
            out.append(chat(rng.choice(ASK_SYNONYM).format(**fmt), a))
    return out


def bible_records():
    try:
        text = subprocess.run(["bible", "-f", "Genesis 1:1-Revelation 22:21"], capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"make_corpus: cannot read the Bible with `bible` (install bible-kjv): {e}")
    chapters, key = {}, None
    for line in text.splitlines():
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        key = (m.group(1), int(m.group(2)))
        chapters.setdefault(key, []).append(m.group(4).strip())
    return [{"text": " ".join(v)} for v in chapters.values()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    ap.add_argument("--no-bible", action="store_true")
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--max-senses", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    records = wordnet_records(args.wordnet, rng, args.max_senses)
    n_wordnet = len(records)
    if not args.no_bible:
        records += bible_records()
    rng.shuffle(records)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"make_corpus: {n_wordnet} WordNet conversations, {len(records) - n_wordnet} Bible chapters -> {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
