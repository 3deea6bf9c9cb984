#!/usr/bin/env python3
"""PyTorch peer of the runtime's GPT benchmark: one training step of a small GPT on the CPU.

Model (the same as RuntimeBench.gpt in Sources/VPipeBench/RuntimeBench.swift): token
embedding (vocabulary 256) plus learned positions, 8 pre-LN transformer blocks of width 128
with 4 heads (causal attention through torch's fused scaled_dot_product_attention, MLP
128->512->128 with tanh-GELU), final LayerNorm, head to 256 classes, mean softmax
cross-entropy. Batch 8 sequences of 64 tokens in 4 micro-batches of 2 sequences (gradients
accumulated, as the pipeline does), plain SGD (lr 0.01), float32.

One step = zero_grad, 4 x (forward, loss, backward), optimizer step. Prints one JSON line:

    {"framework": "pytorch", "threads": N, "median_ms": ..., ...}

median_ms is the median of --iters timed steps after --warmup untimed ones, with
torch.set_num_threads(N). Run: python3 bench/torch_gpt.py --threads 1
"""

from __future__ import annotations

import argparse
import torch
from torch import nn
from torch.nn import functional as F

from torch_timing import report


class Block(nn.Module):
    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj_attn = nn.Linear(c, c)
        self.ln2 = nn.LayerNorm(c)
        self.fc = nn.Linear(c, 4 * c)
        self.proj = nn.Linear(4 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj_attn(y.transpose(1, 2).reshape(b, t, c))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab: int, c: int, heads: int, blocks: int, t: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(t, c)
        self.blocks = nn.Sequential(*[Block(c, heads) for _ in range(blocks)])
        self.ln_f = nn.LayerNorm(c)
        self.head = nn.Linear(c, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1])
        return self.head(self.ln_f(self.blocks(self.wte(ids) + self.wpe(pos))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--iters", type=int, default=15, help="timed steps (default 15)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--micro-batches", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=256)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT(args.vocab, args.width, args.heads, args.blocks, args.seq_len)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ids = torch.randint(0, args.vocab, (args.sequences, args.seq_len + 1))
    chunks = list(zip(ids[:, :-1].chunk(args.micro_batches), ids[:, 1:].chunk(args.micro_batches)))

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for x, y in chunks:
            logits = model(x)
            # sum over the micro-batch / all rows: the accumulated gradient is the batch mean's
            loss = F.cross_entropy(logits.view(-1, args.vocab), y.reshape(-1), reduction="sum") / ids[:, 1:].numel()
            loss.backward()
            total += loss.item()
        opt.step()
        return total

    report(step, args, model=f"gpt {args.blocks}x{args.width} h{args.heads} T{args.seq_len} V{args.vocab}, "
                             f"{args.sequences} sequences in {args.micro_batches} micro-batches, sgd")

if __name__ == "__main__":
    main()
