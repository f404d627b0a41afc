#!/usr/bin/env python3
"""bench_train_torch.py - PyTorch's CPU training throughput on the shape bench_train.c measures: a transformers
Qwen3ForCausalLM in f32 (eager attention), AdamW, random tokens, the median step time of N timed steps after one
warm-up step, with torch.set_num_threads(T). --precision bf16 runs the forward and the loss under
torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's mixed precision (f32 master weights, matmuls in bf16; the
backward follows the forward's dtypes). Prints one JSON line. Run by bench/bench_train.sh (pinned versions:
tests/fixtures/requirements-train.txt)."""
import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import Qwen3Config, Qwen3ForCausalLM

ap = argparse.ArgumentParser()
for name, default in [("vocab", 8192), ("embd", 256), ("layers", 4), ("heads", 8), ("kv-heads", 4), ("head-dim", 32),
                      ("ff", 768), ("batch", 8), ("ctx", 128), ("steps", 5), ("threads", 2)]:
    ap.add_argument("--" + name, type=int, default=default)
ap.add_argument("--precision", choices=["f32", "bf16"], default="f32")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(1)
cfg = Qwen3Config(vocab_size=a.vocab, hidden_size=a.embd, intermediate_size=a.ff, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
                  max_position_embeddings=2048, tie_word_embeddings=True, attn_implementation="eager")
model = Qwen3ForCausalLM(cfg).float()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
tok = torch.randint(0, a.vocab, (a.batch, a.ctx + 1))

def autocast():
    if a.precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


times = []
for s in range(a.steps + 1):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with autocast():
        logits = model(input_ids=tok[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), tok[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    times.append(time.perf_counter() - t0)
med = statistics.median(times[1:])
print(json.dumps({"impl": "pytorch " + torch.__version__, "precision": a.precision, "threads": a.threads,
                  "params": sum(p.numel() for p in model.parameters()), "tok_s": round(a.batch * a.ctx / med, 1),
                  "step_s": round(med, 4), "loss": round(float(loss), 4)}))
