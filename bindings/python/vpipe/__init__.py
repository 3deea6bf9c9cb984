"""vpipe: Python binding of libvpipe, the vPipe pipeline-parallel training planner and runtime.

The binding is thin on purpose: requests and replies are the protobuf messages of
proto/vpipe.proto (``vpipe.pb``), which cross the C ABI (include/vpipe.h) as bytes through
ctypes. Every number a plan reports comes from the library's cost model
(docs/cost-model.md); nothing is computed here.

    import vpipe
    from vpipe import pb

    request = pb.PlanRequest()
    for l in range(4):
        layer = request.model.layers.add(name=f"block{l}")
        layer.profile.fwd_seconds, layer.profile.bwd_seconds = 0.01, 0.02
        layer.profile.stash_bytes = layer.profile.output_bytes = 1 << 20
        layer.profile.param_bytes = 4 << 20
    for d in range(2):
        request.cluster.devices.add(memory_bytes=1 << 30, host_bandwidth=10e9)
    request.cluster.links.add(bandwidth=10e9)
    request.options.micro_batches = 8
    request.options.planner = pb.PLANNER_TIME_BALANCED

    plan = vpipe.plan(request)       # a pb.Plan, or raises vpipe.VPipeError
    for stage in plan.stages:
        print(stage.first_layer, stage.last_layer, stage.stage_seconds)

Training: ``vpipe.Session(config)`` opens a training session on a ``pb.SessionConfig``
(``vp_session_*``) and trains it step by step on numpy arrays; see ``vpipe.session``.

Errors: every failure raises ``VPipeError`` (or its per-status subclass) carrying
``status``, ``status_name`` and the library's ``message``, which names the field, layer,
stage or device at fault. Passing something that is not the expected protobuf message
raises ``TypeError`` before the library is called.

The library is found via ``$VPIPE_LIBRARY``, a ``libvpipe.so`` bundled in this package, the
repository's ``.build/release`` (source checkouts) or the system library path, and loaded
on first use (see ``vpipe._native``). Calls are thread-safe, as the library's are.
"""

from __future__ import annotations

from typing import Type, TypeVar, Union

from google.protobuf import message as _message

from . import pb
from ._errors import (
    ERR_DECODE,
    ERR_INFEASIBLE,
    ERR_INTERNAL,
    ERR_INVALID_ARGUMENT,
    ERR_INVALID_REQUEST,
    ERR_NOT_IMPLEMENTED,
    ERR_RUNTIME,
    ERR_CHECKPOINT,
    LOAD_ERROR,
    OK,
    STATUS_NAMES,
    CheckpointError,
    DecodeError,
    InfeasibleError,
    InternalError,
    InvalidArgumentError,
    InvalidRequestError,
    LoadError,
    NotImplementedByLibraryError,
    TrainingError,
    VPipeError,
)
from ._native import ABI_VERSION, LIBRARY_ENV
from ._native import load as _load

__version__ = "0.1.0"

__all__ = [
    "pb",
    "plan",
    "plan_bytes",
    "evaluate",
    "evaluate_bytes",
    "version",
    "abi_version",
    "library_path",
    "ABI_VERSION",
    "LIBRARY_ENV",
    "VPipeError",
    "InvalidArgumentError",
    "DecodeError",
    "InvalidRequestError",
    "InfeasibleError",
    "NotImplementedByLibraryError",
    "InternalError",
    "TrainingError",
    "CheckpointError",
    "LoadError",
    "STATUS_NAMES",
    "OK",
    "ERR_INVALID_ARGUMENT",
    "ERR_DECODE",
    "ERR_INVALID_REQUEST",
    "ERR_INFEASIBLE",
    "ERR_NOT_IMPLEMENTED",
    "ERR_INTERNAL",
    "ERR_CHECKPOINT",
    "ERR_RUNTIME",
    "LOAD_ERROR",
    "Session",
]

BytesLike = Union[bytes, bytearray, memoryview]
_M = TypeVar("_M", bound=_message.Message)


def plan(request: pb.PlanRequest) -> pb.Plan:
    """Plans a pipeline: ``vp_plan`` on ``request``.

    Args:
        request: the model, the cluster and the options (``micro_batches`` >= 1 is
            required; ``planner`` chooses the algorithm, ``schedule`` the pipeline schedule,
            ``objective`` what VPIPE and EXACT minimise: ``OBJECTIVE_ITERATION_TIME``, the
            default, or ``OBJECTIVE_THROUGHPUT``, the bottleneck first).

    Returns:
        The plan: one ``StagePlan`` per device with its layer range, per-layer memory
        policies and cost-model numbers, plus the bottleneck and iteration time.

    Raises:
        TypeError: ``request`` is not a ``vpipe.pb.PlanRequest``.
        InvalidRequestError: a field's value is invalid (the message names the field).
        InfeasibleError: no plan of the chosen planner fits the devices' memory.
        NotImplementedByLibraryError: the planner is not available in this library.
        VPipeError: any other failure, including a library that cannot be loaded.
    """
    _require(request, pb.PlanRequest, "vpipe.plan()", "request", "vpipe.plan_bytes()")
    return _parse(pb.Plan, plan_bytes(request.SerializeToString()))


def plan_bytes(data: BytesLike) -> bytes:
    """``vp_plan`` on already serialised bytes: a ``PlanRequest`` in, a ``Plan`` out.

    The low-level path for hosts that hold serialised messages (or tests that send
    malformed ones): the bytes go to the library unchecked.

    Raises:
        TypeError: ``data`` is not bytes-like.
        DecodeError: the bytes are not a ``vpipe.PlanRequest``.
        VPipeError: as ``plan``.
    """
    return _load().call(_load().plan, _as_bytes(data, "vpipe.plan_bytes()"))


def evaluate(model: pb.ModelSpec, cluster: pb.ClusterSpec, plan: pb.Plan) -> pb.Evaluation:
    """Re-evaluates ``plan`` for ``model`` on ``cluster`` with the cost model: ``vp_evaluate``.

    Only the plan's decisions are read (stage ranges, per-layer policies, schedule,
    micro_batches); every number is recomputed. Use it to check a plan made elsewhere or
    by hand, or to compare alternatives.

    Returns:
        An ``Evaluation``: the plan with its numbers recomputed, ``feasible``, and one line
        in ``violations`` per stage over its device's memory. An infeasible plan is not an
        error here.

    Raises:
        TypeError: an argument is not the expected ``vpipe.pb`` message.
        InvalidRequestError: the model, the cluster or the plan is invalid (e.g. stages that
            do not cover the layers); the message names the field.
        VPipeError: any other failure.
    """
    _require(model, pb.ModelSpec, "vpipe.evaluate()", "model", "vpipe.evaluate_bytes()")
    _require(cluster, pb.ClusterSpec, "vpipe.evaluate()", "cluster", "vpipe.evaluate_bytes()")
    _require(plan, pb.Plan, "vpipe.evaluate()", "plan", "vpipe.evaluate_bytes()")
    request = pb.EvaluationRequest()
    request.model.CopyFrom(model)
    request.cluster.CopyFrom(cluster)
    request.plan.CopyFrom(plan)
    return _parse(pb.Evaluation, evaluate_bytes(request.SerializeToString()))


def evaluate_bytes(data: BytesLike) -> bytes:
    """``vp_evaluate`` on already serialised bytes: an ``EvaluationRequest`` in, an
    ``Evaluation`` out. Raises as ``plan_bytes``."""
    return _load().call(_load().evaluate, _as_bytes(data, "vpipe.evaluate_bytes()"))


def version() -> str:
    """The loaded library's version, e.g. ``"0.1.0"`` (``vp_version``)."""
    return _load().version().decode("utf-8")


def abi_version() -> int:
    """The loaded library's ABI version (``vp_abi_version``); loading checks it equals ``ABI_VERSION``."""
    return int(_load().abi_version())


def library_path() -> str:
    """The path (or soname) the library was loaded from, loading it if need be."""
    return _load().path


# ---------------------------------------------------------------- internals


def _require(value: object, cls: Type[_message.Message], where: str, name: str, low_level: str) -> None:
    """Raises TypeError unless ``value`` is a ``cls`` message.

    A message of the same full name from another generated copy of vpipe.proto is
    accepted too: it serialises to the same bytes.
    """
    if isinstance(value, cls):
        return
    full_name = cls.DESCRIPTOR.full_name
    if isinstance(value, _message.Message) and value.DESCRIPTOR.full_name == full_name:
        return
    got = type(value).__name__
    if isinstance(value, _message.Message):
        got = f"a {value.DESCRIPTOR.full_name} message"
    hint = f" (for serialised bytes use {low_level})" if isinstance(value, (bytes, bytearray, memoryview)) else ""
    raise TypeError(f"{where}: {name} must be a vpipe.pb.{cls.DESCRIPTOR.name} ({full_name}), got {got}{hint}")


def _as_bytes(data: object, where: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{where}: data must be bytes (a serialised protobuf message), got {type(data).__name__}")


def _parse(cls: Type[_M], data: bytes) -> _M:
    try:
        return cls.FromString(data)
    except _message.DecodeError as e:
        raise InternalError(
            ERR_INTERNAL, f"the library's reply ({len(data)} bytes) is not a {cls.DESCRIPTOR.full_name}: {e}"
        ) from None
from .simulate import simulate, simulate_bytes  # noqa: E402,F401
from .session import Session  # noqa: E402,F401
from .external import register_layer  # noqa: E402,F401
