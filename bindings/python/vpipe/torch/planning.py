"""Planning a traced model: devices (with the memory policies each can deliver), links, and
``plan_for``, which profiles and calls the planner (``vpipe.plan``).

Honest memory: on a CPU, SWAP moves the stash to host memory, which is where it already is;
it frees nothing. ``cpu_device`` therefore allows only KEEP and RECOMPUTE
(``DeviceSpec.allowed_policies``), the planners never give a layer there a policy its device
forbids, and ``check_plan_policies`` refuses a plan that does, naming the layer.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import pb
from .errors import bad, check_number, check_positive_int
from .profiling import DEFAULT_STATE_BYTES_PER_PARAM_BYTE, profile
from .tracing import LeafSpec

KEEP = pb.MEMORY_POLICY_KEEP
SWAP = pb.MEMORY_POLICY_SWAP
RECOMPUTE = pb.MEMORY_POLICY_RECOMPUTE
ALL_POLICIES = (KEEP, SWAP, RECOMPUTE)
CPU_POLICIES = (KEEP, RECOMPUTE)

DeviceLike = Union[pb.DeviceSpec, Tuple[float, float], Tuple[float, float, float]]
LinkLike = Union[pb.LinkSpec, Tuple[float, float], float]


def policy_name(p: int) -> str:
    try:
        return pb.MemoryPolicy.Name(p).replace("MEMORY_POLICY_", "")
    except ValueError:
        return str(p)


def cpu_device(memory_bytes: int, speed: float = 1.0, name: str = "cpu", host_bandwidth: float = 10e9) -> pb.DeviceSpec:
    """A CPU as a pipeline device: ``memory_bytes`` of budget, KEEP and RECOMPUTE only."""
    where = "cpu_device()"
    if isinstance(memory_bytes, bool) or not isinstance(memory_bytes, int) or memory_bytes <= 0:
        raise bad(where, f"memory_bytes must be a positive integer, got {memory_bytes!r}")
    spec = pb.DeviceSpec(name=name, memory_bytes=memory_bytes,
                         host_bandwidth=check_number(where, "host_bandwidth", host_bandwidth, strict=True),
                         speed=check_number(where, "speed", speed, strict=True))
    spec.allowed_policies.extend(CPU_POLICIES)
    return spec


def device_spec(d: Any, i: int, where: str = "plan_for()") -> pb.DeviceSpec:
    """A ``pb.DeviceSpec`` from one entry of ``devices``, every number checked."""
    if isinstance(d, pb.DeviceSpec):
        spec = pb.DeviceSpec()
        spec.CopyFrom(d)
    else:
        try:
            t = tuple(d)
        except TypeError:
            raise bad(where, f"devices[{i}] must be a pb.DeviceSpec or (memory_bytes, host_bandwidth[, speed]), "
                             f"got {d!r}") from None
        if len(t) not in (2, 3):
            raise bad(where, f"devices[{i}] must be (memory_bytes, host_bandwidth[, speed]), got {t}")
        spec = pb.DeviceSpec(name=f"device{i}")
        memory = check_number(where, f"devices[{i}].memory_bytes", t[0], strict=True)
        if memory >= 2 ** 64:
            raise bad(where, f"devices[{i}].memory_bytes must be < 2**64, got {t[0]!r}")
        spec.memory_bytes = int(memory)
        spec.host_bandwidth = check_number(where, f"devices[{i}].host_bandwidth", t[1], strict=True)
        if len(t) == 3:
            spec.speed = check_number(where, f"devices[{i}].speed", t[2], strict=True)
    for p in spec.allowed_policies:
        if p not in ALL_POLICIES:
            raise bad(where, f"devices[{i}].allowed_policies holds {policy_name(p)}; allowed are KEEP, SWAP, RECOMPUTE")
    return spec


def link_spec(k: Any, i: int, where: str = "plan_for()") -> pb.LinkSpec:
    if isinstance(k, pb.LinkSpec):
        check_number(where, f"links[{i}].bandwidth", k.bandwidth, strict=True)
        check_number(where, f"links[{i}].latency", k.latency)
        return k
    if isinstance(k, (int, float)) and not isinstance(k, bool):
        return pb.LinkSpec(bandwidth=check_number(where, f"links[{i}].bandwidth", k, strict=True))
    try:
        t = tuple(k)
    except TypeError:
        raise bad(where, f"links[{i}] must be a bandwidth, (bandwidth, latency) or a pb.LinkSpec, got {k!r}") from None
    if len(t) != 2:
        raise bad(where, f"links[{i}] must be (bandwidth, latency), got {t}")
    return pb.LinkSpec(bandwidth=check_number(where, f"links[{i}].bandwidth", t[0], strict=True),
                       latency=check_number(where, f"links[{i}].latency", t[1]))


def cluster_spec(devices: Sequence[Any], links: Optional[Sequence[Any]], where: str = "plan_for()") -> pb.ClusterSpec:
    if isinstance(devices, pb.ClusterSpec):
        cluster = pb.ClusterSpec()
        cluster.CopyFrom(devices)
        devices, links = list(cluster.devices), list(cluster.links)
    devices = list(devices)
    if not devices:
        raise bad(where, "devices is empty: give one device per pipeline stage")
    links = list(links or [])
    if len(links) != len(devices) - 1:
        raise bad(where, f"{len(devices)} devices need {len(devices) - 1} links, got {len(links)}")
    cluster = pb.ClusterSpec()
    for i, d in enumerate(devices):
        cluster.devices.add().CopyFrom(device_spec(d, i, where))
    for i, k in enumerate(links):
        cluster.links.add().CopyFrom(link_spec(k, i, where))
    return cluster


def check_plan_policies(plan: pb.Plan, cluster: pb.ClusterSpec, model: Optional[pb.ModelSpec] = None) -> None:
    """Refuses a plan that gives a layer a policy its stage's device does not allow."""
    for s, st in enumerate(plan.stages):
        if st.device >= len(cluster.devices):
            raise bad("check_plan_policies()", f"stage {s} runs on device {st.device}; the cluster has "
                                               f"{len(cluster.devices)} devices")
        dev = cluster.devices[st.device]
        allowed = set(dev.allowed_policies) or set(ALL_POLICIES)
        for k, p in enumerate(st.policy):
            if p not in allowed:
                layer = st.first_layer + k
                lname = f" ({model.layers[layer].name})" if model is not None and layer < len(model.layers) else ""
                raise bad("check_plan_policies()",
                          f"layer {layer}{lname} in stage {s} uses {policy_name(p)}, which device {st.device} "
                          f"({dev.name or 'unnamed'}) does not allow (allowed: "
                          f"{', '.join(policy_name(q) for q in sorted(allowed))})")


def plan_for(
    model: nn.Module,
    example_inputs: Any,
    devices: Sequence[DeviceLike],
    links: Optional[Sequence[LinkLike]] = None,
    schedule: int = pb.SCHEDULE_1F1B,
    micro_batches: int = 1,
    planner: int = pb.PLANNER_VPIPE,
    sample_target: Any = None,
    loss_fn: Optional[Callable[..., torch.Tensor]] = None,
    repeats: int = 5,
    state_bytes_per_param_byte: float = DEFAULT_STATE_BYTES_PER_PARAM_BYTE,
    model_spec: Optional[pb.ModelSpec] = None,
    example_kwargs: Optional[Dict[str, Any]] = None,
    leaf_modules: Sequence[LeafSpec] = (),
) -> pb.Plan:
    """Profiles ``model`` (unless ``model_spec`` is given) and plans it with ``vpipe.plan``.

    ``devices``: one entry per stage, a ``pb.DeviceSpec`` (e.g. ``cpu_device(...)``),
    ``(memory_bytes, host_bandwidth)`` or ``(memory_bytes, host_bandwidth, speed)``.
    ``links``: ``len(devices) - 1`` entries, ``(bandwidth, latency)``, a bandwidth, or a
    ``pb.LinkSpec``. Raises ``TorchAdapterError`` naming a bad field, and what ``vpipe.plan``
    raises (``InfeasibleError`` when nothing fits).
    """
    from .. import plan as _plan

    where = "plan_for()"
    cluster = cluster_spec(devices, links, where)
    check_positive_int(where, "micro_batches", micro_batches)
    if schedule not in pb.Schedule.values():
        raise bad(where, f"schedule must be a pb.Schedule value, got {schedule!r}")
    if planner not in pb.Planner.values():
        raise bad(where, f"planner must be a pb.Planner value, got {planner!r}")
    if model_spec is None:
        model_spec = profile(model, example_inputs, sample_target, loss_fn, repeats=repeats,
                             state_bytes_per_param_byte=state_bytes_per_param_byte,
                             example_kwargs=example_kwargs, leaf_modules=leaf_modules)
    request = pb.PlanRequest()
    request.model.CopyFrom(model_spec)
    request.cluster.CopyFrom(cluster)
    request.options.schedule = schedule
    request.options.micro_batches = micro_batches
    request.options.planner = planner
    result = _plan(request)
    check_plan_policies(result, cluster, model_spec)
    return result
