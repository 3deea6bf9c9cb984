"""vpipe.torch: vPipe plans for any PyTorch ``nn.Module``, applied with PyTorch's own mechanisms,
in one process or as a pipeline across ranks.

    import vpipe.torch as vt

    spec = vt.profile(model, (x,), y, loss_fn=nn.CrossEntropyLoss())    # per traced layer
    plan = vt.plan_for(model, (x,), devices=[vt.cpu_device(8 << 30)] * 2, links=[1e9],
                       micro_batches=4, model_spec=spec)
    stages = vt.apply_plan(model, plan, (x,))       # one vt.Stage per pipeline stage
    applied = vt.PipelinedModel(model, plan, (x,))  # the stages chained, in one process

    pipe = vt.Pipeline(model, (x,), loss_fn, y, cluster=[vt.cpu_device(8 << 30)] * world)
    loss = pipe.step((xb,), yb)                     # on every rank (torchrun or vt.spawn)

One module per concept: ``tracing`` (torch.fx trace, DAG linearisation into layers and
valid cuts), ``profiling`` (medians of warmed-up per-layer measurements), ``planning``
(devices, allowed policies, ``plan_for``), ``stages`` (a stage module per plan stage, original
parameter names), ``recompute`` (checkpointing that updates buffers once), ``state``
(optimizer state by parameter name), ``pipeline`` (the distributed engine and its
schedules), ``migration`` (moving layers with weights and optimizer state between ranks),
``launcher`` (spawning gloo ranks). docs/torch.md is the user's guide.

PyTorch is an optional dependency of the binding: importing this package without it raises
an ``ImportError`` that says how to install it; ``import vpipe`` never imports torch.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as _e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "vpipe.torch needs PyTorch, which is an optional dependency of the vpipe binding "
        f"({_e}). Install a CPU build with `pip install 'torch==2.13.0+cpu'` (from the "
        "PyTorch CPU wheel index) or a CUDA build from pytorch.org; "
        "`import vpipe` itself works without it."
    ) from _e

from .errors import TorchAdapterError
from .tracing import TracedModel, trace
from .profiling import LayerMeasurement, Profile, measure, profile, saved_tensor_bytes
from .planning import DEFAULT_STATE_BYTES_PER_PARAM_BYTE, cpu_device, plan_for, check_plan_policies
from .stages import PipelinedModel, Stage, apply_plan
from .state import load_optimizer_state_by_name, optimizer_state_by_name
from .pipeline import Pipeline
from .launcher import spawn
from .memory import PeakTensorBytes

__all__ = [
    "TorchAdapterError",
    "TracedModel",
    "trace",
    "LayerMeasurement",
    "Profile",
    "measure",
    "profile",
    "saved_tensor_bytes",
    "DEFAULT_STATE_BYTES_PER_PARAM_BYTE",
    "cpu_device",
    "plan_for",
    "check_plan_policies",
    "Stage",
    "PipelinedModel",
    "apply_plan",
    "optimizer_state_by_name",
    "load_optimizer_state_by_name",
    "Pipeline",
    "spawn",
    "PeakTensorBytes",
]
