#!/usr/bin/env bash
# build-corpus.sh - the Tongyun-Mini training corpus, from Debian packages only:
#   - WordNet 3.0 glosses and examples (package wordnet-base, /usr/share/wordnet/data.{noun,verb,adj,adv}), turned
#     into ChatML conversations: user "What does X mean?", assistant "X (noun): <gloss>." plus its example when the
#     gloss has one. Licence: the WordNet 3.0 licence (Princeton University; BSD-like, redistribution allowed with the
#     copyright notice), see /usr/share/doc/wordnet-base/copyright.
#   - the King James Version of the Bible (package bible-kjv-text, printed with the bible-kjv `bible` program), one
#     chapter per {"text": ...} document. Public domain (outside the UK).
#
#   data/tongyun-mini/build-corpus.sh OUT.jsonl
#
# The output is deterministic (fixed file order, no randomness); `tongyun train` shuffles with its --seed.
set -euo pipefail
out=${1:?usage: build-corpus.sh OUT.jsonl}
WN=${WORDNET_DIR:-/usr/share/wordnet}
[[ -r "$WN/data.noun" ]] || { echo "build-corpus: $WN/data.noun not found; install wordnet-base" >&2; exit 1; }
command -v bible > /dev/null || { echo "build-corpus: the bible program is missing; install bible-kjv" >&2; exit 1; }
: > "$out"
for pos in noun verb adj adv; do
    # data.POS: "offset lexfile type w_cnt(hex) word lex_id ... | gloss"; license lines start with two spaces
    awk -v pos="$pos" '
        function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, " ", s); return s }
        /^  / { next }
        {
            bar = index($0, " | ")
            if (!bar) next
            gloss = substr($0, bar + 3)
            sub(/[ \t]+$/, "", gloss)
            word = $5
            gsub(/_/, " ", word)
            sub(/\([a-z]+\)$/, "", word)          # adjective markers such as "(a)"
            def = gloss; ex = ""
            q = index(gloss, "; \"")
            if (q) { def = substr(gloss, 1, q - 1); ex = substr(gloss, q + 2) }
            a = word " (" pos "): " def "."
            if (ex != "") a = a " For example: " ex
            printf "{\"messages\": [{\"role\": \"user\", \"content\": \"What does \\\"%s\\\" mean?\"}, {\"role\": \"assistant\", \"content\": \"%s\"}]}\n", esc(word), esc(a)
        }' "$WN/data.$pos" >> "$out"
done
# the Bible, chapter by chapter: lines "Ge1:1 text"
bible -f "Gen1:1-Rev22:21" 2> /dev/null | awk '
    function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, " ", s); return s }
    /^[0-9A-Za-z]+[0-9]+:[0-9]+ / {
        ref = $1; sub(/:.*/, "", ref)
        if (ref != cur && buf != "") { printf "{\"text\": \"%s\"}\n", esc(buf); buf = "" }
        cur = ref
        line = $0; sub(/^[^ ]+ /, "", line)
        buf = buf (buf == "" ? "" : " ") line
        next
    }
    END { if (buf != "") printf "{\"text\": \"%s\"}\n", esc(buf) }' >> "$out"
echo "build-corpus: $(wc -l < "$out") documents, $(wc -c < "$out") bytes in $out" >&2
