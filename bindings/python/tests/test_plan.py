"""Tests of vpipe.plan / vpipe.evaluate against an independent implementation of cost model v1.

The oracle below is written from docs/cost-model.md (the contract), not from the library's
source: ``expected_plan`` recomputes every number a Plan reports from the request and the
plan's ranges and policies, and the brute-force planners enumerate every partition to find
what each baseline planner must choose. Agreement is required to 1e-9 relative, as the
cost model's contract says (peak memory additionally to the nearest byte, since the wire
carries whole bytes).

Run:  VPIPE_LIBRARY=.build/release/libvpipe.so PYTHONPATH=bindings/python \
          python3 -m pytest -q bindings/python/tests
"""

from __future__ import annotations

import itertools
import math
import os
import random
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, List, Optional, Sequence, Tuple

import pytest

import vpipe
from vpipe import pb

MiB = 1 << 20
GiB = 1 << 30
REL = 1e-9

KEEP, SWAP, RECOMPUTE = pb.MEMORY_POLICY_KEEP, pb.MEMORY_POLICY_SWAP, pb.MEMORY_POLICY_RECOMPUTE
SCHEDULES = [pb.SCHEDULE_UNSPECIFIED, pb.SCHEDULE_GPIPE, pb.SCHEDULE_1F1B, pb.SCHEDULE_PIPEDREAM_ASYNC]
BASELINES = [pb.PLANNER_UNIFORM, pb.PLANNER_PARAMETERS, pb.PLANNER_TIME_BALANCED, pb.PLANNER_GPIPE]


def sname(schedule: int) -> str:
    return pb.Schedule.Name(schedule)


def pname(planner: int) -> str:
    return pb.Planner.Name(planner)


# ---------------------------------------------------------------- the oracle: cost model v1


@dataclass
class StageExpect:
    compute_seconds: float
    swap_seconds: float
    stage_seconds: float
    link_seconds: float
    peak_memory_bytes: Fraction  # exact; the library rounds up to a whole byte
    memory_bytes: int

    @property
    def fits(self) -> bool:
        return math.ceil(self.peak_memory_bytes) <= self.memory_bytes


@dataclass
class PlanExpect:
    stages: List[StageExpect]
    bottleneck_seconds: float
    iteration_seconds: float

    @property
    def feasible(self) -> bool:
        return all(s.fits for s in self.stages)


Ranges = List[Tuple[int, int]]  # (first_layer, last_layer), inclusive


def effective_schedule(schedule: int) -> int:
    return pb.SCHEDULE_1F1B if schedule == pb.SCHEDULE_UNSPECIFIED else schedule


def in_flight(schedule: int, m: int, p: int, i: int) -> Tuple[int, int]:
    """(n_i, v_i) from the cost model's table."""
    schedule = effective_schedule(schedule)
    if schedule == pb.SCHEDULE_GPIPE:
        return m, 1
    if schedule == pb.SCHEDULE_1F1B:
        return min(m, p - i), 1
    assert schedule == pb.SCHEDULE_PIPEDREAM_ASYNC, schedule
    return min(m, p - i), min(m, p - i)


def layer_input(model: pb.ModelSpec, l: int) -> int:
    """x_l: x_0 = input_bytes, x_l = o_{l-1}."""
    return model.input_bytes if l == 0 else model.layers[l - 1].profile.output_bytes


def expected_plan(model: pb.ModelSpec, cluster: pb.ClusterSpec, schedule: int, m: int,
                  ranges: Ranges, policies: Sequence[int]) -> PlanExpect:
    """Every number of a Plan, from docs/cost-model.md. ``policies`` has one entry per layer."""
    kappa = Fraction(model.state_bytes_per_param_byte or 4)
    p = len(ranges)
    stages: List[StageExpect] = []
    for i, (s, e) in enumerate(ranges):
        dev = cluster.devices[i]
        sigma = dev.speed or 1.0
        n, v = in_flight(schedule, m, p, i)
        layers = range(s, e + 1)
        prof = [model.layers[l].profile for l in layers]
        pol = [policies[l] for l in layers]

        compute = (sum(q.fwd_seconds + q.bwd_seconds for q in prof)
                   + sum(q.fwd_seconds for q, k in zip(prof, pol) if k == RECOMPUTE)) / sigma
        swapped = sum(q.stash_bytes for q, k in zip(prof, pol) if k == SWAP)
        swap = 2 * swapped / dev.host_bandwidth if swapped else 0.0
        link = 0.0
        if i < p - 1:
            lk = cluster.links[i]
            link = 2 * (lk.latency + model.layers[e].profile.output_bytes / lk.bandwidth)

        # Segments: maximal runs of consecutive RECOMPUTE layers inside the stage.
        segments: List[List[int]] = []
        for l, k in zip(layers, pol):
            if k == RECOMPUTE:
                if segments and segments[-1][-1] == l - 1:
                    segments[-1].append(l)
                else:
                    segments.append([l])
        kept = sum(q.stash_bytes for q, k in zip(prof, pol) if k == KEEP)
        seg_inputs = sum(layer_input(model, g[0]) for g in segments)
        largest_segment = max((sum(model.layers[l].profile.stash_bytes for l in g) for g in segments), default=0)
        largest_swap = max((q.stash_bytes for q, k in zip(prof, pol) if k == SWAP), default=0)
        memory = (sum(q.param_bytes for q in prof) * (kappa + v - 1)
                  + n * (kept + seg_inputs)
                  + largest_segment
                  + 2 * largest_swap
                  + layer_input(model, s) + model.layers[e].profile.output_bytes
                  + dev.reserved_bytes)
        stages.append(StageExpect(compute, swap, max(compute, swap), link, Fraction(memory), dev.memory_bytes))

    tau = max(max(st.stage_seconds for st in stages), max((st.link_seconds for st in stages[:-1]), default=0.0))
    t_iter = (m - 1) * tau + sum(st.stage_seconds for st in stages) + sum(st.link_seconds for st in stages[:-1])
    return PlanExpect(stages, tau, t_iter)


# ---------------------------------------------------------------- the oracle: baseline planners


def partitions(L: int, p: int) -> List[Ranges]:
    """Every way to cut layers 0..L-1 into p contiguous non-empty stages."""
    out = []
    for cuts in itertools.combinations(range(1, L), p - 1):
        bounds = (0,) + cuts + (L,)
        out.append([(bounds[k], bounds[k + 1] - 1) for k in range(p)])
    return out


def uniform_partition(L: int, p: int) -> Ranges:
    """Equal counts; the last L mod p stages get one layer more."""
    base, extra = divmod(L, p)
    ranges, s = [], 0
    for i in range(p):
        size = base + (1 if i >= p - extra else 0)
        ranges.append((s, s + size - 1))
        s += size
    return ranges


def near_min(values: Sequence[float], x: float) -> bool:
    return math.isclose(x, min(values), rel_tol=REL, abs_tol=0.0)


def acceptable_partitions(request: pb.PlanRequest) -> Tuple[List[Ranges], Optional[Ranges]]:
    """(the partitions the request's planner may return, a partition to explain infeasibility).

    An empty first list means the planner must fail with VP_ERR_INFEASIBLE. Near-ties
    (1e-9 relative) are all acceptable: the library may sum in another order.
    """
    model, cluster, opt = request.model, request.cluster, request.options
    L, p = len(model.layers), len(cluster.devices)
    policy = RECOMPUTE if opt.planner == pb.PLANNER_GPIPE else KEEP
    evals = {}

    def ev(r: Ranges) -> PlanExpect:
        key = tuple(r)
        if key not in evals:
            evals[key] = expected_plan(model, cluster, opt.schedule, opt.micro_batches, r, [policy] * L)
        return evals[key]

    if opt.planner == pb.PLANNER_UNIFORM:
        r = uniform_partition(L, p)
        return ([r] if ev(r).feasible else []), r
    every = partitions(L, p)
    if opt.planner == pb.PLANNER_PARAMETERS:
        cost = [max(sum(model.layers[l].profile.param_bytes for l in range(s, e + 1)) for s, e in r) for r in every]
        best = [r for r, c in zip(every, cost) if c == min(cost)]
        return [r for r in best if ev(r).feasible], best[0]
    assert opt.planner in (pb.PLANNER_TIME_BALANCED, pb.PLANNER_GPIPE), opt.planner
    feasible = [r for r in every if ev(r).feasible]
    if not feasible:
        taus = [ev(r).bottleneck_seconds for r in every]
        return [], every[taus.index(min(taus))]
    taus = [ev(r).bottleneck_seconds for r in feasible]
    return [r for r, t in zip(feasible, taus) if near_min(taus, t)], None


# ---------------------------------------------------------------- comparing


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=REL, abs_tol=0.0)


def bytes_close(got: int, want: Fraction) -> bool:
    """The library reports Mem_i rounded up to a whole byte (docs/cost-model.md)."""
    return abs(got - math.ceil(want)) <= want * Fraction(REL)


def ranges_of(plan: pb.Plan) -> Ranges:
    return [(s.first_layer, s.last_layer) for s in plan.stages]


def policies_of(plan: pb.Plan) -> List[int]:
    return [k for s in plan.stages for k in s.policy]


def check_numbers(plan: pb.Plan, want: PlanExpect, context: str) -> None:
    """Every number of ``plan`` against the oracle; failures say expected and got."""
    assert len(plan.stages) == len(want.stages), \
        f"{context}: expected {len(want.stages)} stages, got {len(plan.stages)}"
    for i, (got, exp) in enumerate(zip(plan.stages, want.stages)):
        where = f"{context}: stage {i}"
        assert got.device == i, f"{where} device: expected {i}, got {got.device}"
        for field in ("compute_seconds", "swap_seconds", "stage_seconds", "link_seconds"):
            g, w = getattr(got, field), getattr(exp, field)
            assert close(g, w), f"{where} {field}: expected {w!r}, got {g!r}"
        assert bytes_close(got.peak_memory_bytes, exp.peak_memory_bytes), \
            f"{where} peak_memory_bytes: expected {float(exp.peak_memory_bytes)!r}, got {got.peak_memory_bytes}"
        assert got.memory_bytes == exp.memory_bytes, \
            f"{where} memory_bytes: expected {exp.memory_bytes}, got {got.memory_bytes}"
    assert close(plan.bottleneck_seconds, want.bottleneck_seconds), \
        f"{context} bottleneck_seconds: expected {want.bottleneck_seconds!r}, got {plan.bottleneck_seconds!r}"
    assert close(plan.iteration_seconds, want.iteration_seconds), \
        f"{context} iteration_seconds: expected {want.iteration_seconds!r}, got {plan.iteration_seconds!r}"
    assert plan.cost_model_version == 1, f"{context} cost_model_version: expected 1, got {plan.cost_model_version}"


def check_plan(request: pb.PlanRequest, plan: pb.Plan, context: str) -> None:
    """A successful plan: the planner's choice, its settings and every number."""
    opt = request.options
    allowed, _ = acceptable_partitions(request)
    assert allowed, f"{context}: the oracle finds no feasible plan, but the library returned {ranges_of(plan)}"
    assert ranges_of(plan) in allowed, f"{context} partition: expected one of {allowed}, got {ranges_of(plan)}"
    policy = RECOMPUTE if opt.planner == pb.PLANNER_GPIPE else KEEP
    L = len(request.model.layers)
    assert policies_of(plan) == [policy] * L, \
        f"{context} policies: expected all {pb.MemoryPolicy.Name(policy)}, got {policies_of(plan)}"
    assert plan.schedule == effective_schedule(opt.schedule), \
        f"{context} schedule: expected {sname(effective_schedule(opt.schedule))}, got {sname(plan.schedule)}"
    assert plan.micro_batches == opt.micro_batches, \
        f"{context} micro_batches: expected {opt.micro_batches}, got {plan.micro_batches}"
    assert plan.planner == opt.planner, f"{context} planner: expected {pname(opt.planner)}, got {pname(plan.planner)}"
    assert plan.planning_seconds >= 0, f"{context} planning_seconds: expected >= 0, got {plan.planning_seconds}"
    want = expected_plan(request.model, request.cluster, opt.schedule, opt.micro_batches,
                         ranges_of(plan), policies_of(plan))
    assert want.feasible, f"{context}: the library returned a plan the oracle finds over memory: {want}"
    check_numbers(plan, want, context)


def expect_error(status: int, call: Callable[[], object], *needles: str) -> vpipe.VPipeError:
    """Runs ``call``; it must raise VPipeError with ``status`` and every needle in its message."""
    with pytest.raises(vpipe.VPipeError) as info:
        result = call()
        print(f"expected {vpipe.STATUS_NAMES[status]}, got a result: {result}")
    err = info.value
    assert err.status == status, \
        f"status: expected {status} ({vpipe.STATUS_NAMES[status]}), got {err.status} ({err.status_name}): {err.message}"
    assert err.status_name == vpipe.STATUS_NAMES[status]
    for needle in needles:
        assert needle in err.message, f"message: expected it to contain {needle!r}, got {err.message!r}"
    return err


# ---------------------------------------------------------------- requests


def layer(model: pb.ModelSpec, name: str, f: float, b: float, a: int, o: int, w: int) -> None:
    model.layers.add(name=name).profile.CopyFrom(
        pb.LayerProfile(fwd_seconds=f, bwd_seconds=b, stash_bytes=a, output_bytes=o, param_bytes=w))


def four_layer_request(planner: int = pb.PLANNER_TIME_BALANCED, schedule: int = pb.SCHEDULE_1F1B,
                       micro_batches: int = 4) -> pb.PlanRequest:
    """The hand-built 4-layer model on 2 devices. Chosen so the planners disagree:

    f+b per layer = 3, 1, 1, 1.6 ms; 2f+b = 4, 1.2, 1.2, 3.1 ms; params 10, 10, 10, 50 MiB.
    UNIFORM cuts 2|2. PARAMETERS cuts 3|1 (max 50 MiB beats 60 and 70). TIME_BALANCED cuts
    1|3 (max(3, 3.6) ms beats 4 and 5). GPIPE, paying the recompute, cuts 2|2 (5.2 ms beats
    5.5 and 6.4). Memory is ample; device 0 has speed 0 (meaning 1.0).
    """
    r = pb.PlanRequest()
    r.model.name = "four"
    r.model.input_bytes = 1 * MiB
    layer(r.model, "l0", 1.0e-3, 2.0e-3, 3 * MiB, 1 * MiB, 10 * MiB)
    layer(r.model, "l1", 0.2e-3, 0.8e-3, 2 * MiB, 2 * MiB, 10 * MiB)
    layer(r.model, "l2", 0.2e-3, 0.8e-3, 2 * MiB, 512 * 1024, 10 * MiB)
    layer(r.model, "l3", 1.5e-3, 0.1e-3, 1 * MiB, 256 * 1024, 50 * MiB)
    r.cluster.devices.add(name="gpu0", memory_bytes=4 * GiB, speed=0.0, host_bandwidth=8e9, reserved_bytes=64 * MiB)
    r.cluster.devices.add(name="gpu1", memory_bytes=4 * GiB, speed=1.0, host_bandwidth=8e9, reserved_bytes=32 * MiB)
    r.cluster.links.add(bandwidth=10e9, latency=1e-5)
    r.options.planner = planner
    r.options.schedule = schedule
    r.options.micro_batches = micro_batches
    return r


# ---------------------------------------------------------------- plan(): the baseline planners

HAND_CUTS = {
    pb.PLANNER_UNIFORM: [(0, 1), (2, 3)],
    pb.PLANNER_PARAMETERS: [(0, 2), (3, 3)],
    pb.PLANNER_TIME_BALANCED: [(0, 0), (1, 3)],
    pb.PLANNER_GPIPE: [(0, 1), (2, 3)],
}


@pytest.mark.parametrize("schedule", SCHEDULES, ids=sname)
@pytest.mark.parametrize("planner", BASELINES, ids=pname)
def test_four_layers_two_devices(planner: int, schedule: int) -> None:
    request = four_layer_request(planner, schedule)
    plan = vpipe.plan(request)
    context = f"{pname(planner)}/{sname(schedule)}"
    # The hand-derived cut (see four_layer_request) and the brute-force oracle agree...
    allowed, _ = acceptable_partitions(request)
    assert allowed == [HAND_CUTS[planner]], f"{context}: test design: oracle allows {allowed}, hand says {HAND_CUTS[planner]}"
    # ...and the library must too, with every number as the cost model says.
    assert ranges_of(plan) == HAND_CUTS[planner], \
        f"{context} partition: expected {HAND_CUTS[planner]}, got {ranges_of(plan)}"
    check_plan(request, plan, context)


def test_four_layers_numbers_by_hand() -> None:
    """One plan's numbers worked out by hand, so the oracle itself is checked too."""
    plan = vpipe.plan(four_layer_request(pb.PLANNER_TIME_BALANCED, pb.SCHEDULE_1F1B, micro_batches=4))
    s0, s1 = plan.stages
    # Stage 0 = layer 0 on speed 1: C = 3 ms. Stage 1 = layers 1..3: C = 1 + 1 + 1.6 ms.
    assert close(s0.compute_seconds, 3.0e-3), f"expected 3e-3, got {s0.compute_seconds}"
    assert close(s1.compute_seconds, 3.6e-3), f"expected 3.6e-3, got {s1.compute_seconds}"
    # K_0 = 2 (latency + o_0 / B) = 2 (1e-5 + 2^20 / 1e10).
    k0 = 2 * (1e-5 + MiB / 10e9)
    assert close(s0.link_seconds, k0), f"expected {k0}, got {s0.link_seconds}"
    assert s1.link_seconds == 0, f"last stage link_seconds: expected 0, got {s1.link_seconds}"
    # 1F1B, m = 4, p = 2: n_0 = 2, n_1 = 1, kappa = 4.
    # Mem_0 = 10 MiB * 4 + 2 * 3 MiB + x_0 (1 MiB) + o_0 (1 MiB) + 64 MiB = 112 MiB.
    # Mem_1 = 70 MiB * 4 + 1 * 5 MiB + x_1 (1 MiB) + o_3 (0.25 MiB) + 32 MiB = 318.25 MiB.
    assert s0.peak_memory_bytes == 112 * MiB, f"expected {112 * MiB}, got {s0.peak_memory_bytes}"
    assert s1.peak_memory_bytes == 318 * MiB + 256 * 1024, f"expected {318 * MiB + 256 * 1024}, got {s1.peak_memory_bytes}"
    assert close(plan.bottleneck_seconds, 3.6e-3), f"expected 3.6e-3, got {plan.bottleneck_seconds}"
    t_iter = 3 * 3.6e-3 + 3.0e-3 + 3.6e-3 + k0
    assert close(plan.iteration_seconds, t_iter), f"expected {t_iter}, got {plan.iteration_seconds}"


@pytest.mark.parametrize("micro_batches", [1, 2, 7])
@pytest.mark.parametrize("planner", BASELINES, ids=pname)
def test_micro_batches_and_fractional_state_factor(planner: int, micro_batches: int) -> None:
    """Odd sizes, kappa = 1.5 (fractional peak memory), a faster second device."""
    request = four_layer_request(planner, pb.SCHEDULE_PIPEDREAM_ASYNC, micro_batches)
    request.model.state_bytes_per_param_byte = 1.5
    for l, lay in enumerate(request.model.layers):
        lay.profile.param_bytes += 2 * l + 1
        lay.profile.stash_bytes += 3 * l + 1
    request.cluster.devices[1].speed = 2.0
    check_plan(request, vpipe.plan(request), f"{pname(planner)}/m={micro_batches}")


@pytest.mark.parametrize("L,p,sizes", [(4, 2, [2, 2]), (5, 2, [2, 3]), (7, 3, [2, 2, 3]), (8, 3, [2, 3, 3]),
                                       (3, 3, [1, 1, 1]), (5, 1, [5])])
def test_uniform_gives_extra_layers_to_last_stages(L: int, p: int, sizes: List[int]) -> None:
    request = random_request(random.Random(L * 10 + p), L, p, pb.PLANNER_UNIFORM, memory_scale=100.0)
    plan = vpipe.plan(request)
    got = [s.last_layer - s.first_layer + 1 for s in plan.stages]
    assert got == sizes, f"UNIFORM L={L} p={p}: expected stage sizes {sizes}, got {got}"
    check_plan(request, plan, f"UNIFORM L={L} p={p}")


def test_time_balanced_respects_memory() -> None:
    """Device 1 is too small for the fastest cut (1|3): TIME_BALANCED must take the best that fits."""
    request = four_layer_request(pb.PLANNER_TIME_BALANCED)
    unconstrained = HAND_CUTS[pb.PLANNER_TIME_BALANCED]
    keep = [KEEP] * 4
    need = expected_plan(request.model, request.cluster, request.options.schedule, 4, unconstrained, keep)
    request.cluster.devices[1].memory_bytes = int(need.stages[1].peak_memory_bytes) - 1
    allowed, _ = acceptable_partitions(request)
    assert allowed and unconstrained not in allowed, f"test design: allowed {allowed}"
    plan = vpipe.plan(request)
    check_plan(request, plan, "TIME_BALANCED under memory")
    assert ranges_of(plan) != unconstrained, f"expected a cut other than {unconstrained}, got {ranges_of(plan)}"


def test_gpipe_fits_where_keep_does_not() -> None:
    """Memory for the best RECOMPUTE plan only: GPIPE fits where TIME_BALANCED (KEEP) does not."""
    request = four_layer_request(pb.PLANNER_GPIPE, pb.SCHEDULE_GPIPE, micro_batches=32)
    L, p = 4, 2
    tightest = min(max(st.peak_memory_bytes for st in expected_plan(
        request.model, request.cluster, pb.SCHEDULE_GPIPE, 32, r, [RECOMPUTE] * L).stages) for r in partitions(L, p))
    for d in request.cluster.devices:
        d.memory_bytes = math.ceil(tightest)
    check_plan(request, vpipe.plan(request), f"GPIPE in {math.ceil(tightest)} bytes")
    request.options.planner = pb.PLANNER_TIME_BALANCED
    assert acceptable_partitions(request)[0] == [], "test design: KEEP should not fit"
    expect_error(vpipe.ERR_INFEASIBLE, lambda: vpipe.plan(request), "TIME_BALANCED", "stage", "bytes")


def random_request(rng: random.Random, L: int, p: int, planner: int, memory_scale: float) -> pb.PlanRequest:
    """A random valid request; memory_bytes is memory_scale times a typical stage's need."""
    r = pb.PlanRequest()
    r.model.input_bytes = rng.randrange(1, 8 * MiB)
    r.model.state_bytes_per_param_byte = rng.choice([0.0, 2.0, 3.0, 4.0, 1.5])
    for l in range(L):
        layer(r.model, f"l{l}", rng.uniform(0, 5e-3), rng.uniform(0, 1e-2), rng.randrange(0, 64 * MiB),
              rng.randrange(1, 16 * MiB), rng.randrange(0, 256 * MiB))
    total = sum(x.profile.param_bytes * 4 + x.profile.stash_bytes * 4 for x in r.model.layers)
    for i in range(p):
        r.cluster.devices.add(
            name=f"d{i}", memory_bytes=max(1, int(memory_scale * total / p)),
            speed=rng.choice([0.0, 1.0, 0.5, 2.0, rng.uniform(0.3, 3)]),
            host_bandwidth=rng.uniform(1e9, 3e10), reserved_bytes=rng.randrange(0, 512 * MiB))
    for _ in range(p - 1):
        r.cluster.links.add(bandwidth=rng.uniform(1e9, 1e11), latency=rng.choice([0.0, rng.uniform(0, 1e-4)]))
    r.options.planner = planner
    r.options.schedule = rng.choice(SCHEDULES)
    r.options.micro_batches = rng.choice([1, 2, 3, 4, 8, 16])
    return r


@pytest.mark.parametrize("seed", range(40))
def test_random_requests_against_oracle(seed: int) -> None:
    """Random models and clusters, some tight on memory: each baseline planner's choice and
    numbers, or its VP_ERR_INFEASIBLE, must be what the brute-force oracle says."""
    rng = random.Random(seed)
    L = rng.randrange(1, 9)
    p = rng.randrange(1, min(L, 4) + 1)
    scale = rng.choice([0.3, 0.6, 1.0, 1.5, 10.0])
    for planner in BASELINES:
        request = random_request(random.Random(seed), L, p, planner, scale)
        context = f"seed {seed} {pname(planner)} L={L} p={p} {sname(request.options.schedule)} " \
                  f"m={request.options.micro_batches} scale={scale}"
        allowed, _ = acceptable_partitions(request)
        if allowed:
            check_plan(request, vpipe.plan(request), context)
        else:
            expect_error(vpipe.ERR_INFEASIBLE, lambda: vpipe.plan(request), "stage", "bytes")


@pytest.mark.parametrize("planner", [pb.PLANNER_VPIPE, pb.PLANNER_EXACT, pb.PLANNER_UNSPECIFIED], ids=pname)
def test_search_planners_beat_every_baseline(planner: int) -> None:
    """VPIPE (the default) and EXACT: numbers equal cost model v1 for the returned ranges and
    policies, the plan fits, and it is no slower than any baseline that fits."""
    request = four_layer_request(planner)
    plan = vpipe.plan(request)
    want = expected_plan(request.model, request.cluster, request.options.schedule, request.options.micro_batches,
                         ranges_of(plan), policies_of(plan))
    assert want.feasible, f"{pname(planner)}: the oracle finds the plan over memory: {want}"
    check_numbers(plan, want, pname(planner))
    expected_planner = pb.PLANNER_VPIPE if planner == pb.PLANNER_UNSPECIFIED else planner
    assert plan.planner == expected_planner, f"planner: expected {pname(expected_planner)}, got {pname(plan.planner)}"
    for baseline in BASELINES:
        request.options.planner = baseline
        try:
            other = vpipe.plan(request)
        except vpipe.InfeasibleError:
            continue
        assert plan.iteration_seconds <= other.iteration_seconds * (1 + 1e-9), \
            f"{pname(planner)} {plan.iteration_seconds} slower than {pname(baseline)} {other.iteration_seconds}"


# ---------------------------------------------------------------- plan(): infeasible requests


@pytest.mark.parametrize("planner", BASELINES, ids=pname)
def test_tiny_memory_is_infeasible(planner: int) -> None:
    request = four_layer_request(planner)
    for d in request.cluster.devices:
        d.memory_bytes = 1000
    err = expect_error(vpipe.ERR_INFEASIBLE, lambda: vpipe.plan(request), "stage 0", "bytes", "memory_bytes")
    assert isinstance(err, vpipe.InfeasibleError), f"expected InfeasibleError, got {type(err)}"
    # The message names how much each stage needs and how far over it is, in bytes.
    _, explained = acceptable_partitions(request)
    policy = RECOMPUTE if planner == pb.PLANNER_GPIPE else KEEP
    if planner in (pb.PLANNER_UNIFORM, pb.PLANNER_PARAMETERS):
        want = expected_plan(request.model, request.cluster, request.options.schedule, 4, explained, [policy] * 4)
        for i, st in enumerate(want.stages):
            need = round(st.peak_memory_bytes)
            assert f"stage {i}" in err.message, f"expected 'stage {i}' in {err.message!r}"
            assert f"needs {need} bytes" in err.message, f"expected 'needs {need} bytes' in {err.message!r}"
            assert f"{need - 1000} bytes" in err.message, f"expected '{need - 1000} bytes' over in {err.message!r}"


def test_infeasible_names_only_the_stage_that_does_not_fit() -> None:
    request = four_layer_request(pb.PLANNER_UNIFORM)
    want = expected_plan(request.model, request.cluster, request.options.schedule, 4, [(0, 1), (2, 3)], [KEEP] * 4)
    need = int(want.stages[1].peak_memory_bytes)
    request.cluster.devices[1].memory_bytes = need - 5
    err = expect_error(vpipe.ERR_INFEASIBLE, lambda: vpipe.plan(request), "stage 1", "layers 2-3", "5 bytes")
    assert "stage 0" not in err.message, f"stage 0 fits, but the message names it: {err.message!r}"
    request.cluster.devices[1].memory_bytes = need  # exactly full fits (Mem <= M)
    check_plan(request, vpipe.plan(request), "UNIFORM, stage 1 exactly full")


# ---------------------------------------------------------------- plan(): invalid input


def mutate(fn: Callable[[pb.PlanRequest], None]) -> pb.PlanRequest:
    r = four_layer_request(pb.PLANNER_UNIFORM)
    fn(r)
    return r


def _no_layers(r): del r.model.layers[:]
def _no_devices(r): del r.cluster.devices[:]; del r.cluster.links[:]
def _three_devices_two_layers(r):
    del r.model.layers[2:]
    r.cluster.devices.add(memory_bytes=GiB, host_bandwidth=1e9)
    r.cluster.links.add(bandwidth=1e9)
def _set(path: str, value) -> Callable[[pb.PlanRequest], None]:
    def fn(r):
        *parents, leaf = path.split(".")
        obj = r
        for part in parents:
            if part.endswith("]"):
                name, idx = part[:-1].split("[")
                obj = getattr(obj, name)[int(idx)]
            else:
                obj = getattr(obj, part)
        setattr(obj, leaf, value)
    return fn


INVALID = [
    ("zero layers", _no_layers, "model.layers"),
    ("zero devices", _no_devices, "cluster.devices"),
    ("more devices than layers", _three_devices_two_layers, "cluster.devices"),
    ("negative fwd_seconds", _set("model.layers[1].profile.fwd_seconds", -1.0), "model.layers[1].profile.fwd_seconds"),
    ("NaN bwd_seconds", _set("model.layers[1].profile.bwd_seconds", math.nan), "model.layers[1].profile.bwd_seconds"),
    ("infinite fwd_seconds", _set("model.layers[3].profile.fwd_seconds", math.inf), "model.layers[3].profile.fwd_seconds"),
    ("stash over 2^53", _set("model.layers[0].profile.stash_bytes", 2**64 - 1), "model.layers[0].profile.stash_bytes"),
    ("kappa 0.5", _set("model.state_bytes_per_param_byte", 0.5), "model.state_bytes_per_param_byte"),
    ("kappa NaN", _set("model.state_bytes_per_param_byte", math.nan), "model.state_bytes_per_param_byte"),
    ("zero link bandwidth", _set("cluster.links[0].bandwidth", 0.0), "cluster.links[0].bandwidth"),
    ("NaN link latency", _set("cluster.links[0].latency", math.nan), "cluster.links[0].latency"),
    ("zero host_bandwidth", _set("cluster.devices[0].host_bandwidth", 0.0), "cluster.devices[0].host_bandwidth"),
    ("infinite host_bandwidth", _set("cluster.devices[1].host_bandwidth", math.inf), "cluster.devices[1].host_bandwidth"),
    ("zero memory_bytes", _set("cluster.devices[1].memory_bytes", 0), "cluster.devices[1].memory_bytes"),
    ("memory_bytes over 2^53", _set("cluster.devices[0].memory_bytes", 2**63), "cluster.devices[0].memory_bytes"),
    ("negative speed", _set("cluster.devices[0].speed", -2.0), "cluster.devices[0].speed"),
    ("micro_batches 0", _set("options.micro_batches", 0), "options.micro_batches"),
    ("micro_batches huge", _set("options.micro_batches", 2**32 - 1), "options.micro_batches"),
    ("no links", lambda r: r.cluster.ClearField("links"), "cluster.links"),
    ("two links for two devices", lambda r: r.cluster.links.add(bandwidth=1e9), "cluster.links"),
    ("unknown planner", _set("options.planner", 99), "options.planner"),
    ("unknown schedule", _set("options.schedule", 7), "options.schedule"),
    ("cost model version 2", _set("options.cost_model_version", 2), "options.cost_model_version"),
    ("missing options", lambda r: r.ClearField("options"), "options"),
    ("missing cluster", lambda r: r.ClearField("cluster"), "cluster"),
    ("missing profile", lambda r: r.model.layers[2].ClearField("profile"), "model.layers[2].profile"),
]


@pytest.mark.parametrize("what,fn,field", INVALID, ids=[x[0] for x in INVALID])
def test_invalid_request_names_the_field(what: str, fn, field: str) -> None:
    request = mutate(fn)
    err = expect_error(vpipe.ERR_INVALID_REQUEST, lambda: vpipe.plan(request), field)
    assert err.message.startswith(field), f"{what}: expected the message to start with {field!r}, got {err.message!r}"
    assert isinstance(err, vpipe.InvalidRequestError), f"expected InvalidRequestError, got {type(err)}"


@pytest.mark.parametrize("planner", [pb.PLANNER_TIME_BALANCED, pb.PLANNER_GPIPE], ids=pname)
def test_overflowing_stage_time_does_not_crash(planner: int) -> None:
    """fwd_seconds = bwd_seconds = 1e308 are finite, so valid, but their sum is inf. The call
    must come back (a plan or a VPipeError), not kill the process: run it in a subprocess."""
    import subprocess
    import sys
    from pathlib import Path
    code = (
        "import vpipe\nfrom vpipe import pb\n"
        "r = pb.PlanRequest()\n"
        "r.model.layers.add().profile.CopyFrom(pb.LayerProfile(fwd_seconds=1e308, bwd_seconds=1e308))\n"
        "r.cluster.devices.add(memory_bytes=1 << 30, host_bandwidth=1e9)\n"
        f"r.options.micro_batches = 1\nr.options.planner = {planner}\n"
        "try:\n    print(vpipe.plan(r).bottleneck_seconds)\n"
        "except vpipe.VPipeError as e:\n    print(e)\n"
    )
    env = dict(os.environ, VPIPE_LIBRARY=vpipe.library_path(),
               PYTHONPATH=str(Path(vpipe.__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"expected the call to return, got exit status {result.returncode} {result.stderr!r}"


def test_truncated_bytes() -> None:
    data = four_layer_request().SerializeToString()
    for cut in (1, len(data) // 2, len(data) - 1):
        expect_error(vpipe.ERR_DECODE, lambda: vpipe.plan_bytes(data[:cut]), "vpipe.PlanRequest")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(seed: int) -> None:
    data = bytes([0xFF]) + random.Random(seed).randbytes(63)  # 0xFF: field 31 with wire type 7, never valid
    err = expect_error(vpipe.ERR_DECODE, lambda: vpipe.plan_bytes(data), "vpipe.PlanRequest")
    assert isinstance(err, vpipe.DecodeError), f"expected DecodeError, got {type(err)}"


def test_random_bytes_never_crash() -> None:
    """Arbitrary garbage comes back as a status, never a crash (any status but OK is fine)."""
    rng = random.Random(1234)
    for _ in range(300):
        data = rng.randbytes(rng.randrange(0, 200))
        try:
            vpipe.plan_bytes(data)
        except vpipe.VPipeError as err:
            assert err.status in (vpipe.ERR_DECODE, vpipe.ERR_INVALID_REQUEST), f"{data!r}: {err}"
            assert err.message, f"{data!r}: empty message"


def test_empty_bytes_name_the_missing_model() -> None:
    expect_error(vpipe.ERR_INVALID_REQUEST, lambda: vpipe.plan_bytes(b""), "model")


def test_plan_bytes_round_trip() -> None:
    request = four_layer_request(pb.PLANNER_UNIFORM)
    plan = pb.Plan.FromString(vpipe.plan_bytes(bytearray(request.SerializeToString())))
    check_plan(request, plan, "plan_bytes")


@pytest.mark.parametrize("bad", [None, b"\x0a\x00", "request", 42, pb.Plan(), pb.ModelSpec()],
                         ids=["None", "bytes", "str", "int", "Plan", "ModelSpec"])
def test_plan_rejects_non_requests(bad) -> None:
    with pytest.raises(TypeError) as info:
        vpipe.plan(bad)
    assert "PlanRequest" in str(info.value), f"expected the message to name PlanRequest, got {info.value}"
    if isinstance(bad, bytes):
        assert "plan_bytes" in str(info.value), f"expected a pointer to plan_bytes, got {info.value}"


@pytest.mark.parametrize("bad", [None, "text", 3.0, pb.PlanRequest()], ids=["None", "str", "float", "message"])
def test_plan_bytes_rejects_non_bytes(bad) -> None:
    with pytest.raises(TypeError) as info:
        vpipe.plan_bytes(bad)
    assert "bytes" in str(info.value), f"expected the message to say bytes, got {info.value}"


# ---------------------------------------------------------------- evaluate()


def hand_plan(ranges: Ranges, policies: Sequence[int], schedule: int, m: int) -> pb.Plan:
    plan = pb.Plan(schedule=schedule, micro_batches=m)
    for i, (s, e) in enumerate(ranges):
        plan.stages.add(device=i, first_layer=s, last_layer=e, policy=policies[s:e + 1])
    return plan


def eight_layer_setup() -> Tuple[pb.ModelSpec, pb.ClusterSpec]:
    rng = random.Random(8)
    r = random_request(rng, 8, 3, pb.PLANNER_UNIFORM, memory_scale=10.0)
    r.cluster.devices[2].host_bandwidth = 2e8  # slow copies: stage 2's swap time beats its compute
    return r.model, r.cluster


# Two segments split by KEEP in stage 0, SWAP before a segment in stage 1, all SWAP in stage 2.
MIXED_RANGES = [(0, 2), (3, 5), (6, 7)]
MIXED_POLICIES = [RECOMPUTE, KEEP, RECOMPUTE, SWAP, RECOMPUTE, RECOMPUTE, SWAP, SWAP]


@pytest.mark.parametrize("schedule", SCHEDULES[1:], ids=sname)
@pytest.mark.parametrize("m", [1, 3, 16])
def test_evaluate_mixed_policies(schedule: int, m: int) -> None:
    model, cluster = eight_layer_setup()
    ev = vpipe.evaluate(model, cluster, hand_plan(MIXED_RANGES, MIXED_POLICIES, schedule, m))
    want = expected_plan(model, cluster, schedule, m, MIXED_RANGES, MIXED_POLICIES)
    context = f"evaluate mixed {sname(schedule)} m={m}"
    assert ranges_of(ev.plan) == MIXED_RANGES, f"{context}: expected {MIXED_RANGES}, got {ranges_of(ev.plan)}"
    assert policies_of(ev.plan) == MIXED_POLICIES, f"{context}: expected {MIXED_POLICIES}, got {policies_of(ev.plan)}"
    assert ev.plan.schedule == schedule, f"{context} schedule: expected {sname(schedule)}, got {sname(ev.plan.schedule)}"
    assert ev.plan.micro_batches == m, f"{context} micro_batches: expected {m}, got {ev.plan.micro_batches}"
    check_numbers(ev.plan, want, context)
    assert want.stages[2].swap_seconds > want.stages[2].compute_seconds, "test design: stage 2 should be copy-bound"
    assert ev.feasible == want.feasible, f"{context} feasible: expected {want.feasible}, got {ev.feasible}"
    assert len(ev.violations) == sum(not s.fits for s in want.stages), f"{context} violations: {list(ev.violations)}"


def test_evaluate_unspecified_schedule_means_1f1b() -> None:
    model, cluster = eight_layer_setup()
    ev = vpipe.evaluate(model, cluster, hand_plan(MIXED_RANGES, MIXED_POLICIES, pb.SCHEDULE_UNSPECIFIED, 4))
    check_numbers(ev.plan, expected_plan(model, cluster, pb.SCHEDULE_1F1B, 4, MIXED_RANGES, MIXED_POLICIES),
                  "evaluate with SCHEDULE_UNSPECIFIED")


def test_evaluate_over_full_stage() -> None:
    model, cluster = eight_layer_setup()
    want = expected_plan(model, cluster, pb.SCHEDULE_1F1B, 4, MIXED_RANGES, MIXED_POLICIES)
    cluster.devices[1].memory_bytes = int(want.stages[1].peak_memory_bytes) - 12345
    ev = vpipe.evaluate(model, cluster, hand_plan(MIXED_RANGES, MIXED_POLICIES, pb.SCHEDULE_1F1B, 4))
    assert ev.feasible is False, f"feasible: expected False, got {ev.feasible}"
    assert len(ev.violations) == 1, f"violations: expected 1 line, got {list(ev.violations)}"
    line = ev.violations[0]
    for needle in ("stage 1", "layers 3-5", "12345 bytes", "bytes"):
        assert needle in line, f"violation: expected {needle!r} in {line!r}"
    want = expected_plan(model, cluster, pb.SCHEDULE_1F1B, 4, MIXED_RANGES, MIXED_POLICIES)
    check_numbers(ev.plan, want, "evaluate over-full")


def test_evaluate_round_trips_a_plan() -> None:
    request = four_layer_request(pb.PLANNER_GPIPE, pb.SCHEDULE_GPIPE)
    plan = vpipe.plan(request)
    ev = vpipe.evaluate(request.model, request.cluster, plan)
    assert ev.feasible and not ev.violations, f"expected feasible, got {ev.feasible} {list(ev.violations)}"
    for field in ("bottleneck_seconds", "iteration_seconds"):
        assert close(getattr(ev.plan, field), getattr(plan, field)), \
            f"{field}: plan says {getattr(plan, field)}, evaluate says {getattr(ev.plan, field)}"
    check_numbers(ev.plan, expected_plan(request.model, request.cluster, pb.SCHEDULE_GPIPE, 4,
                                         ranges_of(plan), policies_of(plan)), "evaluate(plan())")


def keep_plan(ranges: Ranges, m: int = 4) -> pb.Plan:
    """A plan with the given ranges (which need not be valid), every layer KEEP."""
    plan = pb.Plan(schedule=pb.SCHEDULE_1F1B, micro_batches=m)
    for i, (s, e) in enumerate(ranges):
        plan.stages.add(device=i, first_layer=s, last_layer=e, policy=[KEEP] * max(0, e - s + 1))
    return plan


BAD_PLANS = [
    ("overlap", [(0, 1), (1, 2)], "plan.stages[1].first_layer"),
    ("gap", [(0, 0), (2, 4)], "plan.stages[1].first_layer"),
    ("does not start at 0", [(1, 2), (3, 4)], "plan.stages[0].first_layer"),
    ("short", [(0, 1), (2, 2)], "plan.stages[].policy"),  # the policy count check comes first
    ("past the end", [(0, 1), (2, 4)], "plan.stages[].policy"),
    ("last before first", [(0, 1), (3, 2)], "plan.stages[1].last_layer"),
    ("more stages than devices", [(0, 1), (2, 2), (3, 3)], "plan.stages"),
    ("no stages", [], "plan.stages"),
]


@pytest.mark.parametrize("what,ranges,field", BAD_PLANS, ids=[x[0] for x in BAD_PLANS])
def test_evaluate_invalid_plan_names_the_field(what: str, ranges: Ranges, field: str) -> None:
    request = four_layer_request()
    plan = keep_plan(ranges)
    err = expect_error(vpipe.ERR_INVALID_REQUEST, lambda: vpipe.evaluate(request.model, request.cluster, plan), field)
    assert err.message.startswith(field), f"{what}: expected the message to start with {field!r}, got {err.message!r}"


def test_evaluate_checks_plan_details() -> None:
    request = four_layer_request()
    plan = keep_plan([(0, 1), (2, 3)])
    plan.stages[1].device = 0
    expect_error(vpipe.ERR_INVALID_REQUEST, lambda: vpipe.evaluate(request.model, request.cluster, plan),
                 "plan.stages[1].device")
    plan = keep_plan([(0, 1), (2, 3)], m=0)
    expect_error(vpipe.ERR_INVALID_REQUEST, lambda: vpipe.evaluate(request.model, request.cluster, plan),
                 "plan.micro_batches")
    plan = keep_plan([(0, 1), (2, 3)])
    del plan.stages[0].policy[1:]
    expect_error(vpipe.ERR_INVALID_REQUEST, lambda: vpipe.evaluate(request.model, request.cluster, plan),
                 "plan.stages[0].policy")
    plan = keep_plan([(0, 1), (2, 3)])
    plan.stages[0].policy[1] = pb.MEMORY_POLICY_UNSPECIFIED
    expect_error(vpipe.ERR_INVALID_REQUEST, lambda: vpipe.evaluate(request.model, request.cluster, plan),
                 "plan.stages[0].policy[1]")
    plan = keep_plan([(0, 1), (2, 3)])
    bad_model = mutate(_set("model.layers[1].profile.fwd_seconds", -1.0)).model
    expect_error(vpipe.ERR_INVALID_REQUEST, lambda: vpipe.evaluate(bad_model, request.cluster, plan),
                 "model.layers[1].profile.fwd_seconds")
    bad_cluster = mutate(_set("cluster.links[0].bandwidth", 0.0)).cluster
    expect_error(vpipe.ERR_INVALID_REQUEST, lambda: vpipe.evaluate(request.model, bad_cluster, plan),
                 "cluster.links[0].bandwidth")


def test_evaluate_rejects_wrong_types() -> None:
    request = four_layer_request()
    plan = hand_plan([(0, 1), (2, 3)], [KEEP] * 4, pb.SCHEDULE_1F1B, 4)
    for args, name in [((request, request.cluster, plan), "model"),
                       ((request.model, None, plan), "cluster"),
                       ((request.model, request.cluster, plan.SerializeToString()), "plan")]:
        with pytest.raises(TypeError) as info:
            vpipe.evaluate(*args)
        assert name in str(info.value), f"expected the message to name {name!r}, got {info.value}"


def test_evaluate_bytes_decode_error() -> None:
    expect_error(vpipe.ERR_DECODE, lambda: vpipe.evaluate_bytes(b"\xff\x01\x02"), "vpipe.EvaluationRequest")


# ---------------------------------------------------------------- the library itself


def test_version() -> None:
    assert vpipe.version() == vpipe.__version__, f"expected the package's version {vpipe.__version__!r}, the library says {vpipe.version()!r}"
    assert vpipe.abi_version() == vpipe.ABI_VERSION == 1, f"expected ABI 1, got {vpipe.abi_version()}"


def test_status_constants() -> None:
    got = (vpipe.OK, vpipe.ERR_INVALID_ARGUMENT, vpipe.ERR_DECODE, vpipe.ERR_INVALID_REQUEST,
           vpipe.ERR_INFEASIBLE, vpipe.ERR_NOT_IMPLEMENTED, vpipe.ERR_INTERNAL)
    assert got == (0, 1, 2, 3, 4, 5, 6), f"expected 0..6, got {got}"
    err = vpipe.VPipeError.from_status(99, "future")
    assert type(err) is vpipe.VPipeError and err.status == 99 and "99" in err.status_name, repr(err)
    assert str(vpipe.VPipeError.from_status(3, "x: bad")) == "VP_ERR_INVALID_REQUEST: x: bad"


def test_returned_buffers_are_freed() -> None:
    """Every call hands its buffer to vp_bytes_free, on success and on failure."""
    lib = vpipe._native.load()
    original = lib.bytes_free
    calls = []

    def counting(ptr):
        calls.append(1)
        original(ptr)

    lib.bytes_free = counting
    try:
        vpipe.plan(four_layer_request(pb.PLANNER_UNIFORM))
        assert len(calls) == 1, f"after a success: expected 1 vp_bytes_free, got {len(calls)}"
        broken = four_layer_request(pb.PLANNER_UNIFORM)
        broken.options.micro_batches = 0
        with pytest.raises(vpipe.VPipeError):
            vpipe.plan(broken)
        assert len(calls) == 2, f"after a failure: expected 2 vp_bytes_free, got {len(calls)}"
    finally:
        lib.bytes_free = original


def test_threads_get_their_own_errors() -> None:
    """vp_last_error is per thread: concurrent failures must not see each other's messages."""
    cases = [(fn, field) for _, fn, field in INVALID[3:11]]
    failures: List[str] = []

    def worker(k: int) -> None:
        fn, field = cases[k % len(cases)]
        bad, good = mutate(fn), four_layer_request(pb.PLANNER_TIME_BALANCED)
        for _ in range(40):
            try:
                vpipe.plan(bad)
                failures.append(f"thread {k}: expected an error for {field}")
            except vpipe.VPipeError as err:
                if not err.message.startswith(field):
                    failures.append(f"thread {k}: expected {field!r}, got {err.message!r}")
            plan = vpipe.plan(good)
            if ranges_of(plan) != HAND_CUTS[pb.PLANNER_TIME_BALANCED]:
                failures.append(f"thread {k}: unexpected plan {ranges_of(plan)}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, "\n".join(failures[:10])


def test_null_pointers_are_invalid_arguments() -> None:
    """The C-level contract the binding relies on, exercised through the raw ctypes functions."""
    import ctypes
    lib = vpipe._native.load()
    out = vpipe._native.VpBytes()
    status = lib.plan(None, 10, ctypes.byref(out))
    message = lib.last_error().decode()
    assert status == vpipe.ERR_INVALID_ARGUMENT, f"NULL request with length 10: expected 1, got {status} ({message})"
    assert "request" in message, f"expected the message to name request, got {message!r}"
    assert not out.data and out.len == 0, f"expected {{NULL, 0}} on failure, got {out.data}, {out.len}"
    status = lib.plan(b"x", 1, None)
    message = lib.last_error().decode()
    assert status == vpipe.ERR_INVALID_ARGUMENT and "plan_out" in message, f"NULL plan_out: got {status} {message!r}"
    status = lib.evaluate(b"", 0, None)
    message = lib.last_error().decode()
    assert status == vpipe.ERR_INVALID_ARGUMENT and "evaluation_out" in message, \
        f"NULL evaluation_out: got {status} {message!r}"
    status = lib.plan(None, 0, ctypes.byref(out))
    message = lib.last_error().decode()
    assert status == vpipe.ERR_INVALID_REQUEST and message.startswith("model"), \
        f"(NULL, 0) is an empty request: expected 3 naming model, got {status} {message!r}"
    # vp_bytes_free: NULL and {NULL, 0} are no-ops; a second free after the reset is harmless.
    lib.bytes_free(None)
    lib.bytes_free(ctypes.byref(out))
    request = four_layer_request(pb.PLANNER_UNIFORM).SerializeToString()
    assert lib.plan(request, len(request), ctypes.byref(out)) == vpipe.OK
    assert out.data and out.len > 0, f"expected a buffer, got {out.data}, {out.len}"
    lib.bytes_free(ctypes.byref(out))
    assert not out.data and out.len == 0, f"expected the free to reset to {{NULL, 0}}, got {out.data}, {out.len}"
    lib.bytes_free(ctypes.byref(out))


@pytest.mark.parametrize("planner", [pb.PLANNER_VPIPE, pb.PLANNER_EXACT, pb.PLANNER_UNIFORM], ids=pname)
def test_plans_carry_a_certificate(planner: int) -> None:
    """Every plan states a proven lower bound on iteration_seconds; VPIPE and EXACT prove
    their plan optimal on this small instance, so the bound is the plan's own time."""
    plan = vpipe.plan(four_layer_request(planner, pb.SCHEDULE_1F1B, micro_batches=4))
    bound = plan.lower_bound_seconds
    assert 0 < bound <= plan.iteration_seconds * (1 + 1e-12), \
        f"{pname(planner)}: expected 0 < lower_bound_seconds <= {plan.iteration_seconds}, got {bound}"
    if planner != pb.PLANNER_UNIFORM:
        assert plan.proven_optimal, f"{pname(planner)}: expected proven_optimal, got a bound of {bound} for {plan.iteration_seconds}"
        assert bound == plan.iteration_seconds, f"{pname(planner)}: proven plan's bound {bound} != {plan.iteration_seconds}"
