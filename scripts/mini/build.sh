#!/usr/bin/env bash
# build.sh - rebuilds the bundled Tongyun-Mini model (data/tongyun-mini/) from its corpus: installs the Debian
# packages the corpus comes from (wordnet-base, bible-kjv-text, bible-kjv) when missing, builds Tongyun, writes the
# corpus with make_corpus.py, trains with `tongyun train`, quantizes to Q5_0 and redraws the loss chart. Everything is
# seeded, so the same thread count gives the same model. Work files go to build/mini/.
#
#   scripts/mini/build.sh                 # the committed model's recipe
#   STEPS=1000 scripts/mini/build.sh      # a shorter run (the default takes about an hour on 2 quiet cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
for pkg in wordnet-base bible-kjv-text bible-kjv; do
    dpkg -s "$pkg" > /dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -q && $sudo apt-get install -y -q "${need[@]}"
fi
make
ty=build/tongyun
work=build/mini
mkdir -p "$work"
python3 scripts/mini/make_corpus.py "$work/corpus.jsonl"
rm -f "$work/train-log.jsonl" "$work/tongyun-mini-f32.gguf.ckpt"
"$ty" train --data "$work/corpus.jsonl" --tokenizer build/data/qwen3/tokenizer.json --vocab 4096 \
    --embd 384 --layers 6 --heads 6 --kv-heads 2 --head-dim 64 --ff 1152 --ctx 128 --batch 8 \
    --steps "${STEPS:-7000}" --lr 2e-3 --lr-min 1e-4 --warmup 100 --eval-every 500 --eval-batches 4 \
    --ckpt-every 250 --seed 1 --log "$work/train-log.jsonl" --name Tongyun-Mini -o "$work/tongyun-mini-f32.gguf"
"$ty" quantize "$work/tongyun-mini-f32.gguf" data/tongyun-mini/tongyun-mini.gguf q5_0
cp "$work/train-log.jsonl" data/tongyun-mini/train-log.jsonl
"$ty" train --plot data/tongyun-mini/train-log.jsonl data/tongyun-mini/train-loss.svg
echo "build.sh: wrote data/tongyun-mini/tongyun-mini.gguf" >&2
