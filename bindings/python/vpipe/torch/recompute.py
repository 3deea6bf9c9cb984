"""RECOMPUTE with PyTorch's activation checkpointing, correct for modules that mutate buffers.

``torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)`` keeps only the
segment's inputs and runs ``fn`` again when the backward needs its activations; the RNG
state is replayed, so dropout draws the same mask twice. A forward that mutates a buffer
(BatchNorm's ``running_mean``/``running_var``/``num_batches_tracked``) would mutate it twice:
once in the forward, once in the recompute. Here every recompute snapshots the segment's
buffers first and restores them afterwards (also when checkpointing stops the recompute
early, which it does by raising through ``fn``), so statistics move once per micro-batch,
exactly as without checkpointing. The recomputed activations are unchanged: in training
mode BatchNorm normalises with the batch's own statistics, not the running ones.
"""

from __future__ import annotations

from typing import Any, Callable, List

import torch
from torch.utils.checkpoint import checkpoint


def run_checkpointed(fn: Callable[..., Any], buffers: List[torch.Tensor], *args: Any) -> Any:
    """``fn(*args)`` under non-reentrant checkpointing; ``buffers`` are restored after each recompute."""
    calls = [0]

    def once(*a: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1 or not buffers:  # the forward itself updates the buffers, as usual
            return fn(*a)
        saved = [b.detach().clone() for b in buffers]
        try:
            return fn(*a)
        finally:
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)

    return checkpoint(once, *args, use_reentrant=False)
