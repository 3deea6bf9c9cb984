"""vpipe.Session through the real library: training an MLP and a tiny GPT on pipeline stages.

What is checked: a pipeline is transparent (the same seed gives exactly the same losses on
one stage and on two, with a hand-made plan, a planned one, or none: profile then plan);
training makes progress; statistics, parameters and traces come back sane; and every
misuse (bad configs, dtypes, shapes, sizes, a closed session) raises a clear error.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest

import vpipe
from vpipe import pb

MiB = 1 << 20
KEEP = pb.MEMORY_POLICY_KEEP
STEPS = 5


# ---------------------------------------------------------------- models and configs


def mlp_layers() -> List[pb.LayerSpec]:
    """Linear 8->16, ReLU, Linear 16->4, softmax cross-entropy."""
    return [
        pb.LayerSpec(name="fc1", linear=pb.Linear(in_features=8, out_features=16)),
        pb.LayerSpec(name="relu", activation=pb.Activation(kind=pb.ACTIVATION_RELU)),
        pb.LayerSpec(name="fc2", linear=pb.Linear(in_features=16, out_features=4)),
        pb.LayerSpec(name="loss", softmax_cross_entropy=pb.SoftmaxCrossEntropy()),
    ]


def gpt_layers(heads: int = 2) -> List[pb.LayerSpec]:
    """Embedding (vocabulary 13, 16 features, sequences of 4), one block, LN, head, loss."""
    return [
        pb.LayerSpec(name="embed", embedding=pb.Embedding(vocabulary=13, features=16, sequence_length=4)),
        pb.LayerSpec(name="block", transformer_block=pb.TransformerBlock(features=16, heads=heads, sequence_length=4)),
        pb.LayerSpec(name="ln_f", layer_norm=pb.LayerNorm(features=16)),
        pb.LayerSpec(name="head", linear=pb.Linear(in_features=16, out_features=13)),
        pb.LayerSpec(name="loss", softmax_cross_entropy=pb.SoftmaxCrossEntropy()),
    ]


def config(layers: List[pb.LayerSpec], devices: int, plan: Optional[pb.Plan] = None, seed: int = 7,
           adam: bool = False, micro_batches: int = 2) -> pb.SessionConfig:
    c = pb.SessionConfig()
    c.model.name = "test"
    c.model.layers.extend(layers)
    for d in range(devices):
        c.cluster.devices.add(name=f"dev{d}", memory_bytes=64 * MiB, host_bandwidth=10e9)
    for _ in range(devices - 1):
        c.cluster.links.add(bandwidth=10e9)
    if plan is not None:
        c.plan.CopyFrom(plan)
    c.training.schedule = pb.SCHEDULE_1F1B
    c.training.micro_batches = micro_batches
    c.training.seed = seed
    if adam:
        c.training.adam.lr = 0.01
    else:
        c.training.sgd.lr = 0.1
    return c


def hand_plan(ranges: List[tuple], micro_batches: int = 2) -> pb.Plan:
    plan = pb.Plan(schedule=pb.SCHEDULE_1F1B, micro_batches=micro_batches)
    for d, (first, last) in enumerate(ranges):
        plan.stages.add(device=d, first_layer=first, last_layer=last, policy=[KEEP] * (last - first + 1))
    return plan


def uniform_plan(layers: List[pb.LayerSpec], devices: int, micro_batches: int = 2) -> pb.Plan:
    """vpipe.plan with PLANNER_UNIFORM on a request with made-up profiles (uniform ignores times)."""
    request = pb.PlanRequest()
    request.model.layers.extend(layers)
    for layer in request.model.layers:
        layer.profile.fwd_seconds, layer.profile.bwd_seconds = 1e-4, 2e-4
        layer.profile.stash_bytes = layer.profile.output_bytes = 4096
        layer.profile.param_bytes = 4096
    request.model.input_bytes = 4096
    request.cluster.CopyFrom(config(layers, devices).cluster)
    request.options.micro_batches = micro_batches
    request.options.schedule = pb.SCHEDULE_1F1B
    request.options.planner = pb.PLANNER_UNIFORM
    return vpipe.plan(request)


def mlp_batch(rows: int = 16):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 8)).astype(np.float32)
    y = (np.arange(rows) % 4).astype(np.int64)  # any integer dtype is accepted
    return x, y


def gpt_batch(batch: int = 4):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 13, size=(batch, 4))  # int64, [batch, seq]
    targets = (tokens + 1) % 13  # predict the next id
    return tokens, targets


def train(c: pb.SessionConfig, inputs, targets, steps: int = STEPS) -> List[float]:
    with vpipe.Session(c) as s:
        return [s.step(inputs, targets) for _ in range(steps)]


def expect_error(cls, fn, needle: str):
    with pytest.raises(cls) as info:
        fn()
    assert needle in info.value.message, f"expected the message to name {needle!r}, got {info.value.message!r}"
    return info.value


# ---------------------------------------------------------------- transparency and progress


def test_mlp_two_stages_equal_one_stage_exactly() -> None:
    x, y = mlp_batch()
    one = train(config(mlp_layers(), 1, hand_plan([(0, 3)])), x, y)
    two = train(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)])), x, y)
    assert one == two, f"expected the same losses on 1 and 2 stages, got {one} and {two}"
    assert all(b < a for a, b in zip(two, two[1:])), f"expected the loss to fall on a fixed batch, got {two}"


def test_gpt_two_stages_equal_one_stage_exactly() -> None:
    tokens, targets = gpt_batch()
    layers = gpt_layers()
    plan = uniform_plan(layers, 2)
    assert [(s.first_layer, s.last_layer) for s in plan.stages] == [(0, 1), (2, 4)], f"unexpected plan {plan}"
    one = train(config(layers, 1, uniform_plan(layers, 1), adam=True), tokens, targets)
    two = train(config(layers, 2, plan, adam=True), tokens, targets)
    assert one == two, f"expected the same losses on 1 and 2 stages, got {one} and {two}"
    assert two[-1] < two[0], f"expected the loss to fall on a fixed batch, got {two}"
    # Token ids as [rows] with targets as [rows] are the same batch.
    flat = train(config(layers, 2, plan, adam=True), tokens.ravel(), targets.ravel())
    assert flat == two, f"expected [rows] ids to train as [batch, seq] ids, got {flat} vs {two}"


@pytest.mark.parametrize("model", ["mlp", "gpt"])
def test_without_plan_profiles_then_plans(model: str) -> None:
    layers = mlp_layers() if model == "mlp" else gpt_layers()
    inputs, targets = mlp_batch() if model == "mlp" else gpt_batch()
    planned = train(config(layers, 2, hand_plan([(0, 1), (2, len(layers) - 1)]), adam=True), inputs, targets)
    c = config(layers, 2, adam=True)
    c.training.profile_iterations = 2
    with vpipe.Session(c) as s:
        losses = [s.step(inputs, targets) for _ in range(STEPS)]
        stats = s.stats()
    assert losses == planned, f"expected profiling steps to be real steps (same losses as a plan), got {losses} vs {planned}"
    assert stats.plan.planner == pb.PLANNER_VPIPE, f"expected a VPIPE plan after profiling, got {stats.plan}"
    assert len(stats.stages) == len(stats.plan.stages) >= 1, f"stats and plan disagree: {stats}"
    assert stats.stages[-1].last_layer == len(layers) - 1, f"the stages must cover every layer: {stats.stages}"
    assert len(stats.measured_profiles) == len(layers)
    assert all(p.fwd_seconds > 0 for p in stats.measured_profiles), f"expected measured times, got {stats.measured_profiles}"


def test_stats_are_sane() -> None:
    x, y = mlp_batch()
    with vpipe.Session(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))) as s:
        before = s.stats()
        assert before.iterations == 0, f"expected 0 iterations before any step, got {before.iterations}"
        losses = [s.step(x, y) for _ in range(3)]
        stats = s.stats()
    assert stats.iterations == 3, f"expected 3 iterations, got {stats.iterations}"
    assert stats.last_loss == pytest.approx(losses[-1], rel=0, abs=0), f"last_loss {stats.last_loss} vs {losses[-1]}"
    assert stats.last_iteration_seconds > 0 and stats.mean_iteration_seconds > 0
    assert [(st.first_layer, st.last_layer) for st in stats.stages] == [(0, 1), (2, 3)]
    for st in stats.stages:
        assert 0 < st.peak_device_bytes <= st.capacity_bytes, f"stage {st.stage}: peak {st.peak_device_bytes} of {st.capacity_bytes}"
        assert st.capacity_bytes == 64 * MiB, f"stage {st.stage}: capacity {st.capacity_bytes}"
        assert st.compute_seconds > 0 and st.swapped_bytes == 0 and st.recomputed_layers == 0, str(st)
    assert len(stats.plan.stages) == 2 and stats.plan.micro_batches == 2


# ---------------------------------------------------------------- parameters and traces


def test_parameters_round_trip() -> None:
    x, y = mlp_batch()
    with vpipe.Session(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))) as s:
        s.step(x, y)
        w, b = s.parameters(2)
        assert w.shape == (4, 16) and b.shape == (4,) and w.dtype == np.float32, f"got {w.shape} {b.shape} {w.dtype}"
        assert s.parameters(1) == [] and s.parameters(3) == [], "ReLU and the loss have no parameters"
        new = [w * 0.5 + 1, np.asfortranarray(b[:, None] - 2)[:, 0]]  # a non-contiguous view too
        s.set_parameters(2, new)
        got = s.parameters(2)
        assert all(np.array_equal(g, n.astype(np.float32)) for g, n in zip(got, new)), "set then get must round-trip"
        s.set_parameters(2, [w, b])
        assert all(np.array_equal(g, o) for g, o in zip(s.parameters(2), [w, b])), "restoring must round-trip"
        expect_error(vpipe.InvalidRequestError, lambda: s.parameters(4), "layer")


def test_set_parameters_wrong_shape_changes_nothing() -> None:
    with vpipe.Session(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))) as s:
        w, b = s.parameters(0)
        expect_error(vpipe.InvalidRequestError, lambda: s.set_parameters(0, [w.T, b]), "tensors[0]")
        expect_error(vpipe.InvalidRequestError, lambda: s.set_parameters(0, [np.zeros_like(w), b[:-1]]), "tensors[1]")
        expect_error(vpipe.InvalidRequestError, lambda: s.set_parameters(0, [w]), "tensors")
        after = s.parameters(0)
        assert np.array_equal(after[0], w) and np.array_equal(after[1], b), "a rejected set_parameters changed the weights"
        with pytest.raises(TypeError):
            s.set_parameters(0, [np.array(["a"]), b])


def test_write_trace(tmp_path: Path) -> None:
    x, y = mlp_batch()
    with vpipe.Session(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))) as s:
        s.step(x, y)
        s.write_trace(tmp_path / "trace.json")
        s.write_trace(str(tmp_path / "timeline.svg"))
        expect_error(vpipe.InvalidRequestError, lambda: s.write_trace(tmp_path / "missing" / "t.json"), "path")
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert any(e.get("ph") == "X" for e in trace["traceEvents"]), f"expected timed events, got {str(trace)[:200]}"
    svg = (tmp_path / "timeline.svg").read_text()
    assert "<svg" in svg[:200] and svg.rstrip().endswith("</svg>"), f"expected an SVG, got {svg[:100]!r}"


# ---------------------------------------------------------------- errors


def _no_optimizer() -> pb.SessionConfig:
    c = config(mlp_layers(), 1)
    c.training.ClearField("sgd")
    return c


def _bad_heads() -> pb.SessionConfig:
    return config(gpt_layers(heads=3), 1)


def _no_loss() -> pb.SessionConfig:
    return config(mlp_layers()[:3], 1)


def _no_kind() -> pb.SessionConfig:
    layers = mlp_layers()
    layers[1] = pb.LayerSpec(name="mystery")
    return config(layers, 1)


def _replan_every_too_large() -> pb.SessionConfig:
    c = config(mlp_layers(), 1)
    c.training.replan_every = 2_000_000  # the window would grow without bound: refused, not clamped
    return c


BAD_CONFIGS = [
    ("no optimizer", _no_optimizer, "training.optimizer"),
    ("replan_every beyond a million steps", _replan_every_too_large, "training.replan_every"),
    ("heads do not divide features", _bad_heads, "model.layers[1].transformer_block.heads"),
    ("last layer not a loss", _no_loss, "model.layers[2]"),
    ("layer without kind", _no_kind, "model.layers[1]"),
]


@pytest.mark.parametrize("what,make,field", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_names_the_field(what: str, make, field: str) -> None:
    err = expect_error(vpipe.VPipeError, lambda: vpipe.Session(make()), field)
    assert err.status == vpipe.ERR_INVALID_REQUEST, f"{what}: expected VP_ERR_INVALID_REQUEST, got {err}"


def test_config_must_be_a_session_config() -> None:
    with pytest.raises(TypeError, match="SessionConfig"):
        vpipe.Session(config(mlp_layers(), 1).SerializeToString())
    with pytest.raises(TypeError, match="SessionConfig"):
        vpipe.Session(pb.PlanRequest())


def test_use_after_close() -> None:
    x, y = mlp_batch()
    s = vpipe.Session(config(mlp_layers(), 1))
    s.step(x, y)
    s.close()
    s.close()  # idempotent
    assert s.closed
    for call in (lambda: s.step(x, y), s.stats, lambda: s.parameters(0), lambda: s.set_parameters(0, []),
                 lambda: s.write_trace("/tmp/never.json")):
        expect_error(vpipe.InvalidArgumentError, call, "closed")
    with vpipe.Session(config(mlp_layers(), 1)) as t:
        pass
    assert t.closed, "leaving a with block must close the session"
    u = vpipe.Session(config(mlp_layers(), 1))
    del u  # __del__ closes it; nothing to see but nothing may crash


def test_wrong_sizes_are_refused_naming_the_argument() -> None:
    # Checked against the model before the call: the first layer's width (8), the
    # micro-batch count (2) and one target per row; the library checks the same again.
    x, y = mlp_batch()
    with vpipe.Session(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))) as s:
        with pytest.raises(ValueError, match=r"inputs must have shape \[rows, 8\].*got \(16, 7\)"):
            s.step(x[:, :7], y)
        with pytest.raises(ValueError, match=r"inputs must have shape \[rows, 8\].*got \(8, 16\) \(transposed"):
            s.step(x.T, y)  # (8, 16) with 16 targets: used to be read as 16 rows of 8
        with pytest.raises(ValueError, match="inputs has 15 rows, which do not split into training.micro_batches = 2"):
            s.step(x[:15], y[:15])
        with pytest.raises(ValueError, match=r"targets must hold one class per row of inputs \(16\), got 8"):
            s.step(x, y[:8])
        first = s.step(x, y)  # nothing above changed the weights
    assert first == train(config(mlp_layers(), 1), x, y, steps=1)[0]


def test_dtypes_and_shapes_are_checked() -> None:
    x, y = mlp_batch()
    with vpipe.Session(config(mlp_layers(), 1)) as s:
        with pytest.raises(TypeError, match="targets must be integers"):
            s.step(x, y.astype(np.float32))
        with pytest.raises(TypeError, match="inputs must be floats"):
            s.step(x.astype(np.int32), y)
        with pytest.raises(ValueError, match=r"shape \[rows, features\]"):
            s.step(x.ravel(), y)
        with pytest.raises(ValueError, match="targets must have shape"):
            s.step(x, y[:, None])
        with pytest.raises(ValueError, match="int32"):
            s.step(x, y + (1 << 40))
        # float64 and non-contiguous inputs are converted, giving the same step.
        wide = np.asfortranarray(x.astype(np.float64))
        assert s.step(wide, y.astype(np.uint8)) == train(config(mlp_layers(), 1), x, y, steps=1)[0]
    tokens, targets = gpt_batch()
    with vpipe.Session(config(gpt_layers(), 1)) as s:
        with pytest.raises(TypeError, match="token ids"):
            s.step(tokens.astype(np.float32), targets)
        with pytest.raises(ValueError, match="token ids must have shape"):
            s.step(tokens[None], targets)
        # Values are the library's to check: bad ids and classes fail the step naming the row.
        expect_error(vpipe.TrainingError, lambda: s.step(tokens + 13, targets), "token id")
        expect_error(vpipe.TrainingError, lambda: s.step(tokens, targets + 13), "is not a class in 0..<13")


def test_injected_failure_names_the_stage_and_changes_nothing() -> None:
    x, y = mlp_batch()
    c = config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))
    c.training.fail_iteration, c.training.fail_stage, c.training.fail_micro_batch = 2, 1, 1
    clean = train(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)])), x, y, steps=2)
    with vpipe.Session(c) as s:
        assert s.step(x, y) == clean[0]
        expect_error(vpipe.TrainingError, lambda: s.step(x, y), "stage 1")
        assert s.step(x, y) == clean[1], "a failed step must not change the weights"


# ---------------------------------------------------------------- concurrency


@pytest.mark.parametrize("inputs", ["rows", "tokens"])
def test_apply_plan_from_another_thread_while_stepping(inputs: str) -> None:
    """vpipe.h allows apply_plan from another thread while a step runs: thousands of requests
    (each re-applying the running plan) during hundreds of steps must neither crash nor
    fail, and the losses must equal a run without requests (re-applying moves no layer).
    Both step entries: vp_session_step (an MLP on rows) and vp_session_step_tokens (a GPT
    on token ids)."""
    if inputs == "rows":
        x, y = mlp_batch()
        plan = hand_plan([(0, 1), (2, 3)])
        c = config(mlp_layers(), 2, plan)
    else:
        x, y = gpt_batch()
        plan = hand_plan([(0, 1), (2, 4)])
        c = config(gpt_layers(), 2, plan)
    applies, burst, min_steps = 4000, 20, 100
    steps_started = 0
    stepping_over = threading.Event()
    errors: List[str] = []

    def apply_in_bursts(s: vpipe.Session) -> None:
        # One burst per step, once that step has started: an apply is much faster than a
        # step, so a plain loop would be over within the first few steps.
        seen = -1
        for i in range(applies):
            if i % burst == 0:
                while steps_started == seen and not stepping_over.is_set():
                    time.sleep(0)
                seen = steps_started
            try:
                s.apply_plan(plan)
            except vpipe.VPipeError as e:
                errors.append(e.message)

    losses: List[float] = []
    with vpipe.Session(c) as s:
        losses += [s.step(x, y) for _ in range(3)]
        applier = threading.Thread(target=apply_in_bursts, args=(s,))
        applier.start()
        while len(losses) < min_steps or applier.is_alive():
            steps_started += 1
            losses.append(s.step(x, y))
        stepping_over.set()
        applier.join()
        kept = len(s.stats().decisions)
    assert not errors, f"expected every apply_plan of the running plan to succeed; {len(errors)} of {applies} failed, the first: {errors[0]}"
    assert 0 < kept <= 1000, f"expected the stats to keep at most 1000 of the {applies} decisions, got {kept}"
    clean = train(c, x, y, steps=len(losses))
    assert clean == losses, f"expected the losses of a run without apply_plan, first difference at step {next(i for i, (a, b) in enumerate(zip(clean, losses)) if a != b)}"


# ---------------------------------------------------------------- schedules as data

HAND_WRITTEN_1F1B = """# 1F1B p=2 m=2
0: 0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1
1: 1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1
"""


def test_session_runs_a_hand_written_schedule() -> None:
    """training.schedule_text: the session runs the host's schedule IR (here stage 0
    forwards both micro-batches before its first backward); backwards in micro-batch order,
    so the losses equal the generated 1F1B's."""
    x, y = mlp_batch()
    plan = hand_plan([(0, 1), (2, 3)])
    c = config(mlp_layers(), 2, plan)
    generated = train(c, x, y)
    c.training.schedule_text = HAND_WRITTEN_1F1B
    hand = train(c, x, y)
    assert hand == generated, f"expected the generated schedule's losses {generated}, got {hand}"


def test_bad_schedule_text_is_refused_naming_the_action() -> None:
    c = config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))
    c.training.schedule_text = HAND_WRITTEN_1F1B.replace("1B1 1SEND_B1", "1SEND_B1")
    e = expect_error(vpipe.InvalidRequestError, lambda: vpipe.Session(c), "training.schedule_text")
    assert "stage 1, micro-batch 1" in e.message, f"expected the message to name stage 1, micro-batch 1, got {e.message!r}"


# ---------------------------------------------------------------- Open MPI loaded on demand


def test_mpi_transport_without_open_mpi_is_a_clear_error(tmp_path: Path) -> None:
    """libvpipe.so does not link libmpi; the first TRANSPORT_MPI session loads it. Where it
    cannot be loaded (here: VPIPE_MPI_LIBRARY names a file that does not exist), opening the
    session fails with an error naming the library and the package, and the process lives."""
    import os
    import subprocess
    import sys
    code = ("import vpipe, sys; from vpipe import pb\n"
            "c = pb.SessionConfig(); c.model.name = 'm'\n"
            "c.model.layers.add(name='fc', linear=pb.Linear(in_features=2, out_features=2))\n"
            "c.model.layers.add(name='loss', softmax_cross_entropy=pb.SoftmaxCrossEntropy())\n"
            "c.cluster.devices.add(name='d', memory_bytes=1 << 26, host_bandwidth=1e9)\n"
            "c.training.micro_batches = 1; c.training.sgd.lr = 0.1; c.training.transport = pb.TRANSPORT_MPI\n"
            "try:\n    vpipe.Session(c)\nexcept vpipe.VPipeError as e:\n    print(e); sys.exit(0)\n"
            "print('opened'); sys.exit(1)\n")
    missing = str(tmp_path / "no-such-libmpi.so.40")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VPIPE_MPI_LIBRARY": missing})
    assert run.returncode == 0, f"expected a VPipeError, got rc {run.returncode}: {run.stdout!r} {run.stderr[-2000:]!r}"
    for part in ("TRANSPORT_MPI", "libmpi.so.40", missing, "libopenmpi3", "VPIPE_MPI_LIBRARY"):
        assert part in run.stdout, f"expected {part!r} in the error, got {run.stdout!r}"


# ---------------------------------------------------------------- option ranges (runtime's TrainingOptions.check)


@pytest.mark.parametrize("field, set_value", [
    ("training.sgd.lr", lambda c: setattr(c.training.sgd, "lr", -1.0)),
    ("training.sgd.momentum", lambda c: setattr(c.training.sgd, "momentum", 1.5)),
    ("training.adam.lr", lambda c: setattr(c.training.adam, "lr", float("nan"))),
    ("training.adam.beta1", lambda c: (setattr(c.training.adam, "lr", 0.01), setattr(c.training.adam, "beta1", 1.0))),
    ("training.adam.beta2", lambda c: (setattr(c.training.adam, "lr", 0.01), setattr(c.training.adam, "beta2", -0.5))),
    ("training.adam.eps", lambda c: (setattr(c.training.adam, "lr", 0.01), setattr(c.training.adam, "eps", -1e-8))),
    ("training.slowdown_factor", lambda c: setattr(c.training, "slowdown_factor", 2000.0)),
    ("training.micro_batches", lambda c: setattr(c.training, "micro_batches", 0)),
])
def test_out_of_range_training_options_name_the_field(field: str, set_value) -> None:
    c = config(mlp_layers(), 1)
    set_value(c)
    expect_error(vpipe.InvalidRequestError, lambda: vpipe.Session(c), field)


def test_adam_zero_hyper_parameters_mean_the_defaults() -> None:
    """beta1/beta2/eps of 0 mean 0.9/0.999/1e-8: the same losses as writing them out."""
    inputs, targets = mlp_batch()
    a = config(mlp_layers(), 1, adam=True)
    b = config(mlp_layers(), 1, adam=True)
    b.training.adam.beta1, b.training.adam.beta2, b.training.adam.eps = 0.9, 0.999, 1e-8
    assert train(a, inputs, targets) == train(b, inputs, targets)
