"""vpipe.torch: plan a PyTorch ``nn.Sequential`` with vPipe and apply the plan with PyTorch's
own mechanisms.

This is how a GPU user gets vPipe's plans today: PyTorch runs the model, libvpipe only
decides. Three steps:

    import vpipe.torch as vt
    from vpipe import pb

    spec = vt.profile(model, x_micro_batch, y_micro_batch, loss_fn=nn.CrossEntropyLoss())
    plan = vt.plan_for(model, x_micro_batch, devices=[(80 << 30, 25e9)] * 2,
                       links=[(50e9, 5e-6)], schedule=pb.SCHEDULE_1F1B, micro_batches=8,
                       model_spec=spec)
    stages = vt.apply_plan(model, plan)       # one nn.Sequential per pipeline stage

``profile`` measures each child of the ``nn.Sequential`` for ONE micro-batch and fills the
``LayerProfile`` fields of docs/cost-model.md; ``apply_plan`` cuts the model into stages and
wraps RECOMPUTE runs in ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` and
SWAP layers in ``torch.autograd.graph.save_on_cpu``. The stage modules are ordinary
``nn.Module``s, ready for ``torch.distributed.pipelining.PipelineStage`` (see docs/torch.md).

On a CPU-only machine ``save_on_cpu`` changes nothing for memory: it moves every tensor
autograd saves to host memory, which is where a CPU tensor already is (the hook copies it to
a fresh CPU tensor, so the saved bytes stay the same and only a copy is added). SWAP is
meaningful only for a model on an accelerator.

PyTorch is an optional dependency of the binding: importing this module without it raises
an ``ImportError`` that says how to install it; ``import vpipe`` never imports torch.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

try:
    import torch
    from torch import nn
    from torch.utils.checkpoint import checkpoint as _checkpoint
except ImportError as _e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "vpipe.torch needs PyTorch, which is an optional dependency of the vpipe binding "
        f"({_e}). Install a CPU build with `pip install 'torch==2.13.0+cpu' --index-url "
        "https://download.pytorch.org/whl/cpu` or a CUDA build from pytorch.org; "
        "`import vpipe` itself works without it."
    ) from _e

from . import pb

__all__ = [
    "profile",
    "apply_plan",
    "plan_for",
    "Recompute",
    "SwapToHost",
    "saved_tensor_bytes",
    "DEFAULT_STATE_BYTES_PER_PARAM_BYTE",
]

DEFAULT_STATE_BYTES_PER_PARAM_BYTE = 4.0  # Adam: weights + gradients + two moments

KEEP = pb.MEMORY_POLICY_KEEP
SWAP = pb.MEMORY_POLICY_SWAP
RECOMPUTE = pb.MEMORY_POLICY_RECOMPUTE


# ---------------------------------------------------------------- measuring


def _tensors(value: Any) -> List["torch.Tensor"]:
    """The tensors in a module's output (a tensor, or nested tuples/lists/dicts of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _storage_key(t: "torch.Tensor") -> Tuple[str, int]:
    s = t.untyped_storage()
    return (str(t.device), s.data_ptr())


def _unique_bytes(tensors: Iterable["torch.Tensor"], exclude: Optional[set] = None) -> int:
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

    Every tensor that autograd packs (``torch.autograd.graph.saved_tensors_hooks``) is
    recorded; ``bytes`` is the size of the distinct storages among them, ``exclude`` (e.g.
    a module's parameters, which the cost model counts as ``param_bytes``) left out. This
    is the stash of the cost model: what the forward keeps alive for the backward. It is the
    proxy for device memory on a CPU, where PyTorch has no peak-memory counter.

        with saved_tensor_bytes(exclude=model.parameters()) as saved:
            loss = model(x).sum()
        print(saved.bytes)
    """

    def __init__(self, exclude: Iterable["torch.Tensor"] = ()):
        self._exclude = {_storage_key(p) for p in exclude}
        self._saved: List["torch.Tensor"] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: "torch.Tensor") -> "torch.Tensor":
        self._saved.append(t)
        return t

    @staticmethod
    def _unpack(t: "torch.Tensor") -> "torch.Tensor":
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


def _sync(device: "torch.device") -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu" and hasattr(torch, "xpu"):  # pragma: no cover
        torch.xpu.synchronize(device)


def _device_of(x: Any) -> "torch.device":
    ts = _tensors(x)
    return ts[0].device if ts else torch.device("cpu")


def _nbytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(value))


def _param_bytes(module: "nn.Module") -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _as_input(x: "torch.Tensor") -> "torch.Tensor":
    """A fresh leaf copy of a recorded activation, requiring grad when it can carry one."""
    x = x.detach()
    if x.is_floating_point() or x.is_complex():
        x.requires_grad_(True)
    return x


def profile(
    model: "nn.Sequential",
    sample_input: "torch.Tensor",
    sample_target: Optional["torch.Tensor"] = None,
    loss_fn: Optional[Callable[..., "torch.Tensor"]] = None,
    repeats: int = 3,
    state_bytes_per_param_byte: float = DEFAULT_STATE_BYTES_PER_PARAM_BYTE,
    name: str = "",
) -> pb.ModelSpec:
    """Measures every child of ``model`` for one micro-batch and returns a ``pb.ModelSpec``.

    ``sample_input`` is ONE micro-batch (the batch dimension the pipeline will use per
    micro-batch), on the device the model lives on. For each child module ``l``, on the
    input it receives in a plain forward of ``sample_input``:

    - ``fwd_seconds``: the module's forward with autograd recording, in isolation on a
      detached copy of its input (requiring grad if floating point);
    - ``bwd_seconds``: the backward of that forward, from a fixed random output gradient
      (input and weight gradients together);
    - ``stash_bytes``: the distinct storages autograd saves during the forward
      (``saved_tensors_hooks``), parameters excluded (they are ``param_bytes``); the layer's
      input is included when the backward needs it;
    - ``output_bytes``: the size of its output tensors;
    - ``param_bytes``: the size of its parameters.

    Times are the median of ``repeats`` runs after one warm-up (synchronising CUDA).
    With ``loss_fn`` and ``sample_target`` the loss is folded into the last layer: its
    forward, backward (from the scalar loss) and saved tensors are added to the last layer's.
    ``input_bytes`` is the size of ``sample_input``.

    The model's parameters, their ``.grad`` and its buffers (e.g. BatchNorm running
    statistics) are restored afterwards; the RNG state is not (dropout draws numbers).
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"vpipe.torch.profile(): model must be an nn.Sequential, got {type(model).__name__}")
    if len(model) == 0:
        raise ValueError("vpipe.torch.profile(): the model has no layers")
    if repeats < 1:
        raise ValueError(f"vpipe.torch.profile(): repeats must be >= 1, got {repeats}")
    if (loss_fn is None) != (sample_target is None):
        raise ValueError("vpipe.torch.profile(): give both loss_fn and sample_target, or neither")

    device = _device_of(sample_input)
    grads = {p: p.grad for p in model.parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}

    spec = pb.ModelSpec(name=name, input_bytes=_nbytes(sample_input),
                        state_bytes_per_param_byte=float(state_bytes_per_param_byte))
    try:
        # Inputs of every layer, from one plain forward.
        inputs = []
        with torch.no_grad():
            x = sample_input
            for layer in model:
                inputs.append(x)
                x = layer(x)
        generator = torch.Generator(device="cpu").manual_seed(0)
        children = list(model.named_children())
        for index, (child_name, layer) in enumerate(children):
            last = index == len(children) - 1
            params = list(layer.parameters())
            fwd, bwd = [], []
            stash = out_bytes = 0
            for r in range(repeats + 1):  # run 0 warms up
                x = inputs[index]
                x = _as_input(x) if isinstance(x, torch.Tensor) else x
                with saved_tensor_bytes(exclude=params) as saved:
                    _sync(device)
                    t0 = time.perf_counter()
                    out = layer(x)
                    if last and loss_fn is not None:
                        loss = loss_fn(out, sample_target)
                    _sync(device)
                    t1 = time.perf_counter()
                outs = _tensors(out)
                out_bytes = _nbytes(out)
                stash = saved.bytes
                if last and loss_fn is not None:
                    roots, root_grads = [loss], [None]
                else:
                    roots = [t for t in outs if t.requires_grad]
                    root_grads = [
                        torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)
                        if t.is_floating_point() else None
                        for t in roots
                    ]
                t2 = t3 = 0.0
                if roots:
                    _sync(device)
                    t2 = time.perf_counter()
                    torch.autograd.backward(roots, root_grads)
                    _sync(device)
                    t3 = time.perf_counter()
                for p in params:
                    p.grad = None
                del out, outs, roots, root_grads
                if r > 0:
                    fwd.append(t1 - t0)
                    bwd.append(t3 - t2)
            layer_spec = spec.layers.add(name=child_name if not child_name.isdigit()
                                         else f"{child_name}:{type(layer).__name__}")
            p = layer_spec.profile
            p.fwd_seconds = statistics.median(fwd)
            p.bwd_seconds = statistics.median(bwd)
            p.stash_bytes = stash
            p.output_bytes = out_bytes
            p.param_bytes = _param_bytes(layer)
    finally:
        for param, g in grads.items():
            param.grad = g
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])
    return spec


# ---------------------------------------------------------------- applying a plan


class Recompute(nn.Module):
    """A RECOMPUTE segment: its forward runs under activation checkpointing.

    ``torch.utils.checkpoint.checkpoint(run, x, use_reentrant=False)`` keeps only the
    segment's input for the backward and runs the segment's forward again, transiently,
    when the backward reaches it — exactly the cost model's segment (keeps x_first(g),
    rematerialises Σ a_l during its backward, costs one extra forward). The RNG state is
    preserved, so dropout draws the same mask twice.
    """

    def __init__(self, segment: "nn.Sequential"):
        super().__init__()
        self.segment = segment

    def forward(self, x: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.segment(x)
        return _checkpoint(self.segment, x, use_reentrant=False)


class SwapToHost(nn.Module):
    """A SWAP layer: the tensors its forward saves for the backward live in host memory.

    The forward runs under ``torch.autograd.graph.save_on_cpu(pin_memory=...)``: every tensor
    autograd packs is copied to the CPU, and copied back when the backward unpacks it. Unlike
    vPipe's runtime the copies are not prefetched on a separate copy engine; they are
    synchronous with the compute stream unless ``pin_memory=True`` (then device->host copies
    are non-blocking). On a CPU it is a no-op for memory (a CPU tensor is already in host
    memory; it only adds a copy).
    """

    def __init__(self, module: "nn.Module", pin_memory: bool = False):
        super().__init__()
        self.module = module
        self.pin_memory = pin_memory

    def forward(self, x: Any) -> Any:
        with torch.autograd.graph.save_on_cpu(pin_memory=self.pin_memory):
            return self.module(x)


def _policy_name(p: int) -> str:
    try:
        return pb.MemoryPolicy.Name(p)
    except ValueError:
        return str(p)


def apply_plan(model: "nn.Sequential", plan: pb.Plan, pin_memory: bool = False) -> List["nn.Sequential"]:
    """Cuts ``model`` into the plan's stages and applies its memory policies.

    Returns one ``nn.Sequential`` per stage, in pipeline order, holding layers
    ``first_layer..last_layer`` of ``model``:

    - KEEP layers unchanged, under their own name;
    - each maximal run of RECOMPUTE layers inside a stage wrapped in one ``Recompute``
      (activation checkpointing, named ``recompute_<first>_<last>``);
    - each SWAP layer wrapped in a ``SwapToHost`` (``save_on_cpu``), under its own name.

    The stage modules share the layer objects (and so the parameters) with ``model``:
    nothing is copied. Move each stage to its device yourself (``stage.to(device)``).
    A plan whose stages do not cover ``model``'s layers in order, or whose policy lists
    have the wrong length or an unknown policy, raises ``ValueError``.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"vpipe.torch.apply_plan(): model must be an nn.Sequential, got {type(model).__name__}")
    if not isinstance(plan, pb.Plan) and getattr(getattr(plan, "DESCRIPTOR", None), "full_name", "") != "vpipe.Plan":
        raise TypeError(f"vpipe.torch.apply_plan(): plan must be a vpipe.pb.Plan, got {type(plan).__name__}")
    children = list(model.named_children())
    n = len(children)
    if not plan.stages:
        raise ValueError("vpipe.torch.apply_plan(): the plan has no stages")
    expected_first = 0
    stages = []
    for i, st in enumerate(plan.stages):
        if st.first_layer != expected_first or st.last_layer < st.first_layer or st.last_layer >= n:
            raise ValueError(
                f"vpipe.torch.apply_plan(): stage {i} covers layers {st.first_layer}..{st.last_layer}, "
                f"expected a range starting at {expected_first} within the model's {n} layers"
            )
        count = st.last_layer - st.first_layer + 1
        if len(st.policy) != count:
            raise ValueError(
                f"vpipe.torch.apply_plan(): stage {i} has {len(st.policy)} policies for {count} layers"
            )
        stage = nn.Sequential()
        run: List[int] = []

        def flush() -> None:
            if run:
                segment = nn.Sequential()
                for l in run:
                    segment.add_module(children[l][0], children[l][1])
                stage.add_module(f"recompute_{run[0]}_{run[-1]}", Recompute(segment))
                run.clear()

        for l, policy in zip(range(st.first_layer, st.last_layer + 1), st.policy):
            child_name, layer = children[l]
            if policy == RECOMPUTE:
                run.append(l)
                continue
            flush()
            if policy == KEEP:
                stage.add_module(child_name, layer)
            elif policy == SWAP:
                stage.add_module(child_name, SwapToHost(layer, pin_memory=pin_memory))
            else:
                raise ValueError(
                    f"vpipe.torch.apply_plan(): layer {l} (stage {i}) has policy {_policy_name(policy)}"
                )
        flush()
        stages.append(stage)
        expected_first = st.last_layer + 1
    if expected_first != n:
        raise ValueError(
            f"vpipe.torch.apply_plan(): the plan's stages end at layer {expected_first - 1}, "
            f"the model has {n} layers"
        )
    return stages


# ---------------------------------------------------------------- planning


DeviceLike = Union[pb.DeviceSpec, Tuple[float, float], Tuple[float, float, float]]
LinkLike = Union[pb.LinkSpec, Tuple[float, float], float]


def _device(d: DeviceLike, i: int) -> pb.DeviceSpec:
    if isinstance(d, pb.DeviceSpec):
        return d
    d = tuple(d)
    if len(d) not in (2, 3):
        raise ValueError(f"vpipe.torch.plan_for(): device {i} must be (memory_bytes, host_bandwidth[, speed]), got {d}")
    spec = pb.DeviceSpec(name=f"device{i}", memory_bytes=int(d[0]), host_bandwidth=float(d[1]))
    if len(d) == 3:
        spec.speed = float(d[2])
    return spec


def _link(k: LinkLike, i: int) -> pb.LinkSpec:
    if isinstance(k, pb.LinkSpec):
        return k
    if isinstance(k, (int, float)):
        return pb.LinkSpec(bandwidth=float(k))
    k = tuple(k)
    if len(k) != 2:
        raise ValueError(f"vpipe.torch.plan_for(): link {i} must be (bandwidth, latency), got {k}")
    return pb.LinkSpec(bandwidth=float(k[0]), latency=float(k[1]))


def plan_for(
    model: "nn.Sequential",
    sample_input: "torch.Tensor",
    devices: Sequence[DeviceLike],
    links: Optional[Sequence[LinkLike]] = None,
    schedule: int = pb.SCHEDULE_1F1B,
    micro_batches: int = 1,
    planner: int = pb.PLANNER_VPIPE,
    sample_target: Optional["torch.Tensor"] = None,
    loss_fn: Optional[Callable[..., "torch.Tensor"]] = None,
    repeats: int = 3,
    state_bytes_per_param_byte: float = DEFAULT_STATE_BYTES_PER_PARAM_BYTE,
    model_spec: Optional[pb.ModelSpec] = None,
) -> pb.Plan:
    """Profiles ``model`` (unless ``model_spec`` is given) and plans it with ``vpipe.plan``.

    ``devices``: one entry per pipeline stage, ``(memory_bytes, host_bandwidth)`` or
    ``(memory_bytes, host_bandwidth, speed)`` or a ``pb.DeviceSpec``. ``links``:
    ``len(devices) - 1`` entries, ``(bandwidth, latency)``, a bandwidth alone, or a
    ``pb.LinkSpec``; may be omitted for one device. Raises what ``vpipe.plan`` raises
    (``InfeasibleError`` when nothing fits).
    """
    from . import plan as _plan  # the package's vpipe.plan

    devices = list(devices)
    links = list(links or [])
    if len(links) != max(len(devices) - 1, 0):
        raise ValueError(
            f"vpipe.torch.plan_for(): {len(devices)} devices need {max(len(devices) - 1, 0)} links, got {len(links)}"
        )
    if model_spec is None:
        model_spec = profile(model, sample_input, sample_target, loss_fn, repeats=repeats,
                             state_bytes_per_param_byte=state_bytes_per_param_byte)
    request = pb.PlanRequest()
    request.model.CopyFrom(model_spec)
    for i, d in enumerate(devices):
        request.cluster.devices.add().CopyFrom(_device(d, i))
    for i, k in enumerate(links):
        request.cluster.links.add().CopyFrom(_link(k, i))
    request.options.schedule = schedule
    request.options.micro_batches = micro_batches
    request.options.planner = planner
    return _plan(request)
