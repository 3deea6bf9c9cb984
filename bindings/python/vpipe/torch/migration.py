"""Live re-partition across ranks: moving layers, with their weights, buffers and optimizer
state, from the rank that owns them under the old plan to the rank that owns them under the
new one.

Every rank knows both plans, so every rank computes the same list of moves and no
negotiation is needed. Per (sender, receiver) pair one blob travels (vpipe.torch.wire):
``{"tensors": {state_dict key: tensor}, "optimizer": {"state": {name: ...}}}`` for all layers
that pair moves. Sends are started first (non-blocking), then each rank receives from its
senders in rank order, then the sends are awaited: no cycle can block.

A rank keeps every module of the model, but a parameter or buffer it does not own is
released (an empty tensor; ``Ownership`` remembers its shape and dtype) so its memory is
that of its stage only; a moved-in tensor is restored into the same ``nn.Parameter`` object.
"""

from __future__ import annotations

from typing import Any, Dict, List, Set, Tuple

import torch
from torch import nn

from . import wire
from .tracing import TracedModel


def layer_state_keys(traced: TracedModel) -> List[List[str]]:
    """For each layer, the model's state_dict keys (parameters and buffers) it uses."""
    keys = list(traced.model.state_dict(keep_vars=True).keys())
    out: List[List[str]] = []
    for layer in traced.layers:
        mine: List[str] = []
        targets = [str(n.target) for n in layer.nodes if n.op == "call_module"]
        attrs = [str(a.target) for n in layer.nodes for a in n.all_input_nodes if a.op == "get_attr"]
        for k in keys:
            if any(k.startswith(t + ".") for t in targets) or k in attrs:
                mine.append(k)
        out.append(mine)
    return out


def owners(plan: Any, layers: int) -> List[int]:
    """The stage (= rank) owning each layer."""
    owner = [0] * layers
    for s, st in enumerate(plan.stages):
        for l in range(st.first_layer, st.last_layer + 1):
            owner[l] = s
    return owner


class Ownership:
    """Which of the model's tensors this rank holds; the others are released."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.entries: Dict[str, torch.Tensor] = dict(model.state_dict(keep_vars=True))
        self.meta: Dict[str, Tuple[torch.Size, torch.dtype]] = {k: (t.shape, t.dtype) for k, t in self.entries.items()}

    def keep_only(self, keys: Set[str]) -> None:
        for k, t in self.entries.items():
            if k not in keys and t.numel() > 0:
                t.data = torch.empty(0, dtype=t.dtype, device=t.device)

    def restore(self, key: str, value: torch.Tensor) -> None:
        shape, dtype = self.meta[key]
        if tuple(value.shape) != tuple(shape) or value.dtype != dtype:
            raise RuntimeError(f"migration received {key} as {tuple(value.shape)} {value.dtype}, "
                               f"expected {tuple(shape)} {dtype}")
        t = self.entries[key]
        t.data = value.to(t.device)

    def held_bytes(self) -> int:
        seen = set()
        total = 0
        for t in self.entries.values():
            if t.numel() and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                total += t.numel() * t.element_size()
        return total


def migrate(rank: int, old_plan: Any, new_plan: Any, per_layer_keys: List[List[str]], ownership: Ownership,
            optimizer_state: Dict[str, Any]) -> Dict[str, Any]:
    """Moves every layer whose owner changes; returns the optimizer state (by parameter name)
    this rank received. ``optimizer_state`` is this rank's current state by name."""
    count = len(per_layer_keys)
    old, new = owners(old_plan, count), owners(new_plan, count)
    outgoing: Dict[int, List[int]] = {}
    incoming: Dict[int, List[int]] = {}
    for l in range(count):
        if old[l] != new[l]:
            if old[l] == rank:
                outgoing.setdefault(new[l], []).append(l)
            if new[l] == rank:
                incoming.setdefault(old[l], []).append(l)
    works: List[Any] = []
    for dst in sorted(outgoing):
        keys = [k for l in outgoing[dst] for k in per_layer_keys[l]]
        blob = {
            "tensors": {k: ownership.entries[k].detach().clone() for k in keys},
            "optimizer": {k: optimizer_state["state"][k] for k in keys if k in optimizer_state.get("state", {})},
        }
        works += wire.send_object(blob, dst)
    received_opt: Dict[str, Any] = {}
    for src in sorted(incoming):
        blob = wire.recv_object(src)
        for k, v in blob["tensors"].items():
            ownership.restore(k, v)
        received_opt.update(blob["optimizer"])
    for w in works:
        w.wait()
    return received_opt
