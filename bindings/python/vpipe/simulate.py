"""``vpipe.simulate``: play a plan in libvpipe's discrete-event simulator (``vp_simulate``).

Kept in its own module so that the public ``vpipe`` package only has to import it
(``from .simulate import simulate, simulate_bytes``). It relies on ``vpipe._native`` for
loading the library and for the ownership of returned buffers, and declares the one C
function it adds.

    import vpipe
    from vpipe import vpipe_pb2 as pb

    plan = vpipe.plan(request)
    report = vpipe.simulate(request.model, request.cluster, plan)
    print(report.iteration_seconds, report.cost_model_iteration_seconds)
    open("trace.json", "w").write(report.chrome_trace_json)   # ui.perfetto.dev
    open("timeline.svg", "w").write(report.svg)
"""

from __future__ import annotations

import ctypes
from typing import Union

from google.protobuf import message as _message

from . import vpipe_pb2 as _pb
from ._errors import ERR_INTERNAL, InternalError
from ._native import VpBytes
from ._native import load as _load

__all__ = ["simulate", "simulate_bytes"]

BytesLike = Union[bytes, bytearray, memoryview]


def simulate(model: "_pb.ModelSpec", cluster: "_pb.ClusterSpec", plan: "_pb.Plan") -> "_pb.SimulationReport":
    """Plays ``plan`` for ``model`` on ``cluster`` in the discrete-event simulator.

    Only the plan's decisions are read (stage ranges, per-layer policies, schedule,
    micro_batches). The simulator generates the schedule's per-stage action lists and plays
    them with durations from the layer profiles, each stage's compute, copy engine and each
    link as separate resources.

    Returns:
        A ``SimulationReport``: ``iteration_seconds``, the cost model's
        ``cost_model_iteration_seconds`` for comparison, per stage ``busy_fraction``,
        ``idle_fraction``, ``bubble_fraction``, ``swap_stall_fraction`` and
        ``peak_memory_bytes``, a Chrome trace (``chrome_trace_json``), an SVG timeline
        (``svg``) and the per-stage action lists (``schedule``, e.g. ``"0F0 0SEND_F0 ..."``).

    Raises:
        TypeError: an argument is not the expected protobuf message.
        InvalidRequestError: the model, cluster or plan is invalid; the message names the field.
        VPipeError: any other failure, including a library that cannot be loaded.
    """
    for value, cls, name in ((model, _pb.ModelSpec, "model"), (cluster, _pb.ClusterSpec, "cluster"), (plan, _pb.Plan, "plan")):
        if not (isinstance(value, _message.Message) and value.DESCRIPTOR.full_name == cls.DESCRIPTOR.full_name):
            raise TypeError(
                f"vpipe.simulate(): {name} must be a {cls.DESCRIPTOR.full_name} message, got {type(value).__name__} "
                "(for serialised bytes use vpipe.simulate_bytes())"
            )
    request = _pb.SimulationRequest()
    request.model.CopyFrom(model)
    request.cluster.CopyFrom(cluster)
    request.plan.CopyFrom(plan)
    report = _pb.SimulationReport()
    data = simulate_bytes(request.SerializeToString())
    try:
        report.ParseFromString(data)
    except _message.DecodeError as e:
        raise InternalError(ERR_INTERNAL, f"vp_simulate returned bytes that are not a vpipe.SimulationReport: {e}") from None
    return report


def simulate_bytes(data: BytesLike) -> bytes:
    """``vp_simulate`` on serialised bytes: a ``SimulationRequest`` in, a ``SimulationReport`` out."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"vpipe.simulate_bytes(): expected bytes, got {type(data).__name__}")
    lib = _load()
    return lib.call(_function(lib), bytes(data))


def _function(lib: object) -> "ctypes._CFuncPtr":
    """``vp_simulate`` of the loaded library, with its signature declared (once per library)."""
    fn = getattr(lib, "_vp_simulate", None)
    if fn is None:
        try:
            fn = lib._cdll.vp_simulate  # type: ignore[attr-defined]
        except AttributeError:
            raise InternalError(
                ERR_INTERNAL, f"{lib.path}: this libvpipe has no vp_simulate; use a library built with the simulator"  # type: ignore[attr-defined]
            ) from None
        fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(VpBytes)]
        fn.restype = ctypes.c_int32
        setattr(lib, "_vp_simulate", fn)
    return fn
