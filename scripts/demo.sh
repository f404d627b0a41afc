#!/usr/bin/env bash
# demo.sh - the README's main job on a fresh machine, with nothing downloaded: chat with the bundled Tongyun-Mini
# model (data/tongyun-mini/, a 5.8M-parameter Qwen3 that Tongyun trained itself on WordNet and the King James Bible;
# it answers in a dictionary's format, but its facts are mostly wrong). Interactive on a terminal; otherwise it shows
# what the file holds and asks one question. Pass MODEL=path.gguf to chat with a real Qwen GGUF instead.
set -euo pipefail
cd "$(dirname "$0")/.."
ty=build/tongyun
MODEL=${MODEL:-build/data/tongyun-mini.gguf}
if [ -t 0 ]; then
    echo "== tongyun chat -m $MODEL --no-think   (try: What does \"river\" mean?  /exit to leave)" >&2
    exec $ty chat -m "$MODEL" --no-think --temp 0
fi
echo "== tongyun inspect $MODEL" >&2
$ty inspect "$MODEL" | head -n 24 >&2
q='What does "river" mean?'
echo "== tongyun run -m $MODEL --chat --no-think --temp 0 -n 48 -p '$q'" >&2
$ty run -m "$MODEL" --chat --no-think --temp 0 -n 48 -p "$q"
echo
