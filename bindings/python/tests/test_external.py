"""Host-defined layers from Python, and live migration through the Python binding."""
from __future__ import annotations

import numpy as np
import pytest

import vpipe
from vpipe import pb


def tanh_forward(x, y):
    np.tanh(x, out=y)


def tanh_backward(x, y, dy, dx):
    np.multiply(dy, 1 - y * y, out=dx)


def config(callback: str, stages: int, plan_starts) -> pb.SessionConfig:
    c = pb.SessionConfig()
    c.model.layers.add(name="fc1").linear.CopyFrom(pb.Linear(in_features=8, out_features=16))
    c.model.layers.add(name="act").external.CopyFrom(pb.External(callback=callback, in_features=16, out_features=16))
    c.model.layers.add(name="fc2").linear.CopyFrom(pb.Linear(in_features=16, out_features=4))
    c.model.layers.add(name="loss").softmax_cross_entropy.SetInParent()
    for i in range(stages):
        c.cluster.devices.add(name=f"cpu{i}", memory_bytes=1 << 30, host_bandwidth=1e10)
    for i in range(stages - 1):
        c.cluster.links.add(bandwidth=1e10)
    c.training.micro_batches = 4
    c.training.seed = 3
    c.training.sgd.lr = 0.1
    c.training.sgd.momentum = 0.9
    c.plan.CopyFrom(plan(plan_starts))
    return c


def plan(starts) -> pb.Plan:
    p = pb.Plan(schedule=pb.SCHEDULE_1F1B, micro_batches=4)
    ends = list(starts[1:]) + [4]
    for i, (s, e) in enumerate(zip(starts, ends)):
        p.stages.add(device=i, first_layer=s, last_layer=e - 1, policy=[pb.MEMORY_POLICY_KEEP] * (e - s))
    return p


def data(k: int):
    rng = np.random.default_rng(k % 2)
    return rng.standard_normal((16, 8)).astype(np.float32), rng.integers(0, 4, 16)


def train(session: vpipe.Session, steps: int, migrate=None):
    losses = []
    for k in range(steps):
        if migrate and k in migrate:
            session.apply_plan(plan(migrate[k]))
        losses.append(session.step(*data(k)))
    return losses


def test_python_layer_trains_and_places_anywhere():
    vpipe.register_layer("py.tanh", tanh_forward, tanh_backward)
    with vpipe.Session(config("py.tanh", 1, [0])) as one, vpipe.Session(config("py.tanh", 2, [0, 2])) as two:
        a, b = train(one, 5), train(two, 5)
    assert a == b, f"1 stage {a} vs 2 stages {b}"
    assert a[-1] < a[0], f"loss did not fall: {a}"


def test_python_exception_ends_the_step_with_its_message():
    def broken(x, y, dy, dx):
        raise ValueError("gradient unavailable")
    vpipe.register_layer("py.broken", tanh_forward, broken)
    with vpipe.Session(config("py.broken", 2, [0, 2])) as s:
        with pytest.raises(vpipe.VPipeError) as info:
            s.step(*data(0))
    assert "gradient unavailable" in info.value.message and "stage 0" in info.value.message, info.value.message


def test_apply_plan_keeps_the_loss_trajectory():
    vpipe.register_layer("py.tanh", tanh_forward, tanh_backward)
    with vpipe.Session(config("py.tanh", 2, [0, 2])) as still, vpipe.Session(config("py.tanh", 2, [0, 2])) as moving:
        a = train(still, 6)
        b = train(moving, 6, migrate={1: [0, 1], 3: [0, 3]})
        decisions = moving.stats().decisions
    assert a == b, f"with migrations {b} vs without {a}"
    assert [d.applied for d in decisions] == [True, True], decisions
    with pytest.raises(TypeError):
        moving.apply_plan(b"not a plan")


def test_reregistering_while_a_session_uses_the_layer_is_safe():
    import gc
    vpipe.register_layer("py.rereg", tanh_forward, tanh_backward)
    with vpipe.Session(config("py.rereg", 2, [0, 2])) as s:
        s.step(*data(0))
        vpipe.register_layer("py.rereg", tanh_forward, tanh_backward)
        gc.collect()
        s.step(*data(1))  # still calls the first trampolines, which must be alive


def test_a_callback_calling_back_into_its_session_is_refused_not_deadlocked():
    holder = {}

    def forward(x, y):
        holder["s"].stats()  # would wait on the step that waits for this callback
        np.tanh(x, out=y)

    vpipe.register_layer("py.reentrant", forward, tanh_backward)
    with vpipe.Session(config("py.reentrant", 2, [0, 2])) as s:
        holder["s"] = s
        with pytest.raises(vpipe.VPipeError) as info:
            s.step(*data(0))
    assert "inside a layer callback" in info.value.message, info.value.message


def test_set_parameters_refuses_non_finite_weights_and_changes_nothing():
    vpipe.register_layer("py.tanh", tanh_forward, tanh_backward)
    with vpipe.Session(config("py.tanh", 1, [0])) as s:
        before = s.parameters(0)
        bad = [np.array(a, copy=True) for a in before]
        bad[0].flat[3] = np.nan
        with pytest.raises(vpipe.VPipeError) as info:
            s.set_parameters(0, bad)
        assert "tensors[0].values[3]" in info.value.message, info.value.message
        after = s.parameters(0)
        assert all(np.array_equal(a, b) for a, b in zip(before, after)), "a refused set_parameters changed weights"
