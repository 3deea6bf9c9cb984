"""vpipe.simulate through the real library: a planned pipeline, simulated and compared."""

from __future__ import annotations

import json

import pytest

import vpipe
import vpipe._errors
import vpipe._native
from vpipe import vpipe_pb2 as pb
from vpipe.simulate import simulate

# `vpipe.simulate` is the function once vpipe/__init__.py imports it; until then (or in a
# namespace-package checkout) it is the submodule, and the function is used directly.
simulate_fn = vpipe.simulate if callable(getattr(vpipe, "simulate", None)) else simulate


def _request(p: int = 3, m: int = 6) -> pb.PlanRequest:
    request = pb.PlanRequest()
    for l in range(2 * p):
        layer = request.model.layers.add(name=f"block{l}")
        layer.profile.fwd_seconds, layer.profile.bwd_seconds = 0.01, 0.02
        layer.profile.stash_bytes = layer.profile.output_bytes = 1 << 20
        layer.profile.param_bytes = 4 << 20
    request.model.input_bytes = 1 << 20
    for _ in range(p):
        request.cluster.devices.add(memory_bytes=1 << 30, host_bandwidth=10e9)
    for _ in range(p - 1):
        request.cluster.links.add(bandwidth=10e9)
    request.options.micro_batches = m
    request.options.planner = pb.PLANNER_TIME_BALANCED
    request.options.schedule = pb.SCHEDULE_GPIPE
    return request


def test_simulate_a_plan():
    request = _request()
    plan = pb.Plan()
    plan.ParseFromString(vpipe._native.load().call(vpipe._native.load().plan, request.SerializeToString()))
    report = simulate_fn(request.model, request.cluster, plan)
    assert isinstance(report, pb.SimulationReport)
    # Three equal stages of two layers, 0.06 s per micro-batch, fast links: about (m + p - 1) * 0.06.
    assert report.iteration_seconds == pytest.approx(8 * 0.06, rel=1e-2)
    assert report.cost_model_iteration_seconds == pytest.approx(plan.iteration_seconds)
    assert len(report.stages) == 3 and len(report.schedule) == 3
    assert report.schedule[0].startswith("0F0 0SEND_F0 0F1")
    for stage in report.stages:
        assert stage.busy_fraction + stage.idle_fraction == pytest.approx(1)
        assert stage.peak_memory_bytes > 0
    trace = json.loads(report.chrome_trace_json)
    assert any(e.get("ph") == "X" for e in trace["traceEvents"])
    assert report.svg.startswith("<svg")


def test_invalid_plan_names_the_field():
    request = _request()
    plan = pb.Plan(schedule=pb.SCHEDULE_1F1B, micro_batches=4)
    plan.stages.add(device=0, first_layer=0, last_layer=2, policy=[pb.MEMORY_POLICY_KEEP] * 3)
    with pytest.raises(vpipe._errors.InvalidRequestError) as e:
        simulate_fn(request.model, request.cluster, plan)
    assert "plan.stages" in e.value.message


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError):
        simulate_fn(b"", pb.ClusterSpec(), pb.Plan())
