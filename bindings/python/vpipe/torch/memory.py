"""Measured tensor memory on any device, the CPU included: ``PeakTensorBytes``.

A CPU has no counter like ``torch.cuda.max_memory_allocated``, and a process's resident
size mixes the interpreter, the libraries and the allocator's free lists. This counts what
the cost model counts, the bytes of live tensor storages: every storage alive when the
context is entered (parameters, gradients, optimizer state, buffers: pass them as
``tensors``) plus every storage an operator creates inside it (activations, received
activations, gradients, temporaries, optimizer updates), each until it is freed. It runs
as a ``TorchDispatchMode``, so it sees the backward's operators too; ``peak`` is the largest
sum seen after any operator. It slows every operator down: measure a step, time others.
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._pytree import tree_flatten
from torch.utils._python_dispatch import TorchDispatchMode


class PeakTensorBytes(TorchDispatchMode):
    def __init__(self, tensors: Iterable[torch.Tensor] = ()):
        super().__init__()
        self._live: Dict[Tuple[str, int], Tuple[StorageWeakRef, int]] = {}
        self._current = 0
        self.peak = 0
        for t in tensors:
            self._track(t)
        self.start = self._current

    def _track(self, t: torch.Tensor) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        if storage.nbytes() == 0:
            return
        key = (str(t.device), storage.data_ptr())
        known = self._live.get(key)
        if known is not None and not known[0].expired():
            return
        if known is not None:  # the address was freed and reused
            self._current -= known[1]
        self._live[key] = (StorageWeakRef(storage), storage.nbytes())
        self._current += storage.nbytes()
        self.peak = max(self.peak, self._current)

    @property
    def current(self) -> int:
        """Bytes of the tracked storages alive now."""
        self._collect()
        return self._current

    def _collect(self) -> None:
        for key in [k for k, (ref, _) in self._live.items() if ref.expired()]:
            self._current -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._collect()
        for t in tree_flatten(out)[0]:
            self._track(t)
        return out
