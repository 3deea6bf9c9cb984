#!/usr/bin/env python3
"""PyTorch peer of the runtime benchmark: one training step of a 3-layer MLP on the CPU.

Model: Linear 1024->1024, ReLU, Linear 1024->1024, ReLU, Linear 1024->16, mean softmax
cross-entropy against integer classes; batch 256, float32; plain SGD (lr 0.01).
One step = zero_grad, forward, loss, backward, optimizer step. Prints one JSON line:

    {"framework": "pytorch", "threads": N, "median_ms": ..., ...}

median_ms is the median of --iters timed steps after --warmup untimed ones, with
torch.set_num_threads(N). Run: python3 bench/torch_mlp.py --threads 1
"""

from __future__ import annotations

import argparse
import torch
from torch import nn

from torch_timing import report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--iters", type=int, default=20, help="timed steps (default 20)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=16)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    w, c = args.width, args.classes
    model = nn.Sequential(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, c))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, w)
    y = torch.randint(0, c, (args.batch,))

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    report(step, args, batch=args.batch, model=f"mlp {w}-{w}-{w}-{c} relu, cross-entropy, sgd")

if __name__ == "__main__":
    main()
