"""Per-layer profiles you can trust: medians of repeated, warmed-up measurements of each
traced layer on ONE micro-batch, with their spread.

For every layer of the linearised graph (vpipe.torch.tracing), on the inputs it receives in
a plain forward of the example micro-batch, ``warmup`` untimed and then ``repeats`` timed
runs of:

- the forward, with autograd recording, on detached copies of its inputs (``requires_grad``
  when floating point, so the input gradient is part of the backward, as in a pipeline);
- the backward from a fixed random gradient of every output that carries one (for the last
  layer with a loss: from the scalar loss).

``fwd_seconds``/``bwd_seconds`` are the medians; each ``LayerMeasurement`` keeps every sample
and ``spread`` (``(max - min) / median``), and ``Profile.report()`` prints them. The stash is
what autograd saves (``saved_tensors_hooks``), distinct storages, the layer's parameters left
out; ``output_bytes`` is the bytes of the cut's live set (tracing's definition).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from .. import pb
from .errors import bad, check_number, check_positive_int
from .segments import build_segment, used_after
from .tracing import LeafSpec, TracedModel

DEFAULT_STATE_BYTES_PER_PARAM_BYTE = 4.0  # Adam: weights + gradients + two moments


def _storage_key(t: torch.Tensor) -> Tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def _unique_bytes(tensors: Iterable[torch.Tensor], exclude: Optional[set] = None) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen = set(exclude or ())
    total = 0
    for t in tensors:
        if t.layout != torch.strided:  # sparse and friends: count their values
            total += t.numel() * t.element_size()
            continue
        key = _storage_key(t)
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total


class saved_tensor_bytes:
    """Context manager: counts the bytes autograd saves for the backward inside it.

    ``bytes`` is the size of the distinct storages autograd packs
    (``torch.autograd.graph.saved_tensors_hooks``), ``exclude`` (e.g. parameters, which the
    cost model counts as ``param_bytes``) left out: the cost model's stash.

        with saved_tensor_bytes(exclude=model.parameters()) as saved:
            loss = model(x).sum()
        print(saved.bytes)
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._exclude = {_storage_key(p) for p in exclude}
        self._saved: List[torch.Tensor] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self._saved.append(t)
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def __enter__(self) -> "saved_tensor_bytes":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return _unique_bytes(self._saved, self._exclude)

    @property
    def count(self) -> int:
        return len(self._saved)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _as_input(x: Any) -> Any:
    """A fresh leaf copy of a recorded value, requiring grad where it can carry one."""
    def leaf(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        t = t.detach()
        if t.is_floating_point() or t.is_complex():
            t.requires_grad_(True)
        return t
    return tree_map(leaf, x)


@dataclass
class LayerMeasurement:
    """Every timed sample of one layer (seconds), for one micro-batch."""

    name: str
    fwd_samples: List[float] = field(default_factory=list)
    bwd_samples: List[float] = field(default_factory=list)

    @staticmethod
    def _spread(samples: Sequence[float]) -> float:
        m = statistics.median(samples)
        return (max(samples) - min(samples)) / m if m > 0 else 0.0

    @property
    def fwd_seconds(self) -> float:
        return statistics.median(self.fwd_samples)

    @property
    def bwd_seconds(self) -> float:
        return statistics.median(self.bwd_samples)

    @property
    def fwd_spread(self) -> float:
        return self._spread(self.fwd_samples)

    @property
    def bwd_spread(self) -> float:
        return self._spread(self.bwd_samples)


@dataclass
class Profile:
    """A measured model: ``spec`` for the planner, ``layers`` with every sample."""

    spec: pb.ModelSpec
    layers: List[LayerMeasurement]
    traced: TracedModel

    @property
    def spread(self) -> float:
        """The largest relative spread ((max - min) / median) of any layer's forward or backward."""
        return max(max(l.fwd_spread, l.bwd_spread) for l in self.layers)

    def report(self) -> str:
        lines = [f"{'layer':<24} {'fwd ms':>9} {'spread':>7} {'bwd ms':>9} {'spread':>7} {'samples':>7}"]
        for l in self.layers:
            lines.append(f"{l.name[:24]:<24} {l.fwd_seconds * 1e3:9.3f} {l.fwd_spread:7.1%} "
                         f"{l.bwd_seconds * 1e3:9.3f} {l.bwd_spread:7.1%} {len(l.fwd_samples):7d}")
        return "\n".join(lines)


def measure(
    model: nn.Module,
    example_inputs: Any,
    sample_target: Any = None,
    loss_fn: Optional[Callable[..., torch.Tensor]] = None,
    repeats: int = 5,
    warmup: int = 2,
    state_bytes_per_param_byte: float = DEFAULT_STATE_BYTES_PER_PARAM_BYTE,
    name: str = "",
    example_kwargs: Optional[Dict[str, Any]] = None,
    leaf_modules: Sequence[LeafSpec] = (),
    traced: Optional[TracedModel] = None,
) -> Profile:
    """Traces ``model`` and measures every layer (module docstring); returns a ``Profile``.

    ``example_inputs``: ONE micro-batch, a tensor or a tuple of the forward's positional
    arguments (``example_kwargs`` for keyword ones), on the model's device. Parameters, their
    ``.grad`` and buffers (BatchNorm statistics) are restored afterwards; the RNG is not.
    """
    where = "profile()"
    check_positive_int(where, "repeats", repeats)
    check_positive_int(where, "warmup", warmup, minimum=0)
    check_number(where, "state_bytes_per_param_byte", state_bytes_per_param_byte)
    if (loss_fn is None) != (sample_target is None):
        raise bad(where, "give both loss_fn and sample_target, or neither")
    if loss_fn is not None and not callable(loss_fn):
        raise bad(where, f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if traced is None:
        traced = TracedModel(model, example_inputs, example_kwargs, leaf_modules, where=where)
    for t in tree_flatten(sample_target)[0]:
        if isinstance(t, torch.Tensor) and t.device.type == "meta":
            raise bad(where, "sample_target is on the meta device: give a real tensor of one micro-batch")
    device = next((t.device for t in tree_flatten(list(traced.inputs.values()))[0] if isinstance(t, torch.Tensor)),
                  torch.device("cpu"))
    grads = {p: p.grad for p in model.parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    spec = pb.ModelSpec(name=name, input_bytes=traced.input_bytes(),
                        state_bytes_per_param_byte=float(state_bytes_per_param_byte))
    measurements: List[LayerMeasurement] = []
    counted_params: set = set()
    count = len(traced.layers)
    generator = torch.Generator(device="cpu").manual_seed(0)
    try:
        for layer in traced.layers:
            i = layer.index
            last = i == count - 1
            outputs = used_after(traced, [i], range(i + 1, count), [], model_output=True)
            segment = build_segment(traced, [i], outputs)
            params = list(traced.parameters_of(i, i).items())
            m = LayerMeasurement(layer.name)
            stash = 0
            for r in range(warmup + repeats):
                xs = [_as_input(traced.values[n]) for n in segment.inputs]
                with saved_tensor_bytes(exclude=[p for _, p in params]) as saved:
                    _sync(device)
                    t0 = time.perf_counter()
                    outs = segment.module(*xs)
                    if last and loss_fn is not None:
                        env = dict(zip(segment.inputs, xs))
                        env.update(zip(segment.outputs, outs))
                        out = fx.node.map_arg(traced.output_node.args[0],
                                              lambda n: env[n.name] if n.name in env else traced.values[n.name])
                        loss = loss_fn(out, sample_target)
                    _sync(device)
                    t1 = time.perf_counter()
                stash = saved.bytes
                if last and loss_fn is not None:
                    roots: List[torch.Tensor] = [loss]
                    root_grads: List[Optional[torch.Tensor]] = [None]
                else:
                    roots = [t for t in tree_flatten(list(outs))[0] if isinstance(t, torch.Tensor) and t.requires_grad]
                    root_grads = [torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for t in roots]
                t2 = t3 = 0.0
                if roots:
                    _sync(device)
                    t2 = time.perf_counter()
                    torch.autograd.backward(roots, root_grads)
                    _sync(device)
                    t3 = time.perf_counter()
                for _, p in params:
                    p.grad = None
                del outs, roots, root_grads, xs
                if r >= warmup:
                    m.fwd_samples.append(t1 - t0)
                    m.bwd_samples.append(t3 - t2)
            measurements.append(m)
            layer_spec = spec.layers.add(name=layer.name)
            p = layer_spec.profile
            p.fwd_seconds = m.fwd_seconds
            p.bwd_seconds = m.bwd_seconds
            p.stash_bytes = stash
            p.output_bytes = traced.output_bytes(i)
            # A parameter shared by several layers (tied weights) is counted once, where first used.
            p.param_bytes = sum(t.numel() * t.element_size() for n, t in params if n not in counted_params)
            counted_params.update(n for n, _ in params)
    finally:
        for param, g in grads.items():
            param.grad = g
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])
    return Profile(spec, measurements, traced)


def profile(
    model: nn.Module,
    example_inputs: Any,
    sample_target: Any = None,
    loss_fn: Optional[Callable[..., torch.Tensor]] = None,
    repeats: int = 5,
    state_bytes_per_param_byte: float = DEFAULT_STATE_BYTES_PER_PARAM_BYTE,
    name: str = "",
    warmup: int = 2,
    example_kwargs: Optional[Dict[str, Any]] = None,
    leaf_modules: Sequence[LeafSpec] = (),
) -> pb.ModelSpec:
    """``measure(...).spec``: the planner's ``pb.ModelSpec`` of ``model`` (see ``measure``)."""
    return measure(model, example_inputs, sample_target, loss_fn, repeats, warmup, state_bytes_per_param_byte,
                   name, example_kwargs, leaf_modules).spec
