"""The timing loop the PyTorch peers share: untimed warm-up steps, then timed ones.

report(step, args, **extra) runs args.warmup untimed and args.iters timed calls of step()
(which returns the loss) and prints one JSON line with the median, min and max in ms, the
thread count, torch's version, the last loss and whatever `extra` adds.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Callable

import torch


def report(step: Callable[[], float], args, **extra) -> None:
    for _ in range(args.warmup):
        step()
    times = []
    loss = float("nan")
    for _ in range(args.iters):
        t0 = time.perf_counter()
        loss = step()
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({
        "framework": "pytorch",
        "threads": args.threads,
        "median_ms": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "max_ms": round(max(times), 3),
        "iters": args.iters,
        "warmup": args.warmup,
        **extra,
        "torch": torch.__version__,
        "last_loss": round(loss, 6),
    }))
