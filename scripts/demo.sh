#!/usr/bin/env bash
# demo.sh - the README's main job on a fresh machine, with nothing downloaded: convert the tiny Qwen3 fixture
# checkpoint (random weights, made with Hugging Face transformers; see tests/data/models/README.md) to GGUF, show what
# is in it, and chat with it through Qwen's chat format. The weights are random, so the reply is meaningless text:
# what the demo shows is the whole pipeline (safetensors -> GGUF -> tokenizer -> ChatML -> forward pass -> sampling),
# not a useful model. Pass MODEL=path.gguf to chat with a real Qwen GGUF instead.
set -euo pipefail
cd "$(dirname "$0")/.."
ty=build/tongyun
out=build/demo
mkdir -p "$out"
if [ -z "${MODEL:-}" ]; then
    MODEL=$out/qwen3-tiny-f16.gguf
    echo "== tongyun convert tests/data/models/qwen3-tiny $MODEL --type f16" >&2
    $ty convert tests/data/models/qwen3-tiny "$MODEL" --type f16
    echo "== tongyun inspect $MODEL" >&2
    $ty inspect "$MODEL" | head -n 30 >&2
fi
if [ -t 0 ]; then
    echo "== tongyun chat -m $MODEL   (type /exit to leave)" >&2
    exec $ty chat -m "$MODEL" --temp 0
fi
echo "== tongyun run -m $MODEL --chat --no-think --temp 0 -n 32 -p 'What is Tongyun?'   (random weights: the reply is meaningless)" >&2
$ty run -m "$MODEL" --chat --no-think --temp 0 -n 32 -p "What is Tongyun?"
echo
