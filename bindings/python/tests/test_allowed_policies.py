"""DeviceSpec.allowed_policies: a device that forbids SWAP gets no SWAP layer from any
planner, and a plan that gives one anyway is refused, naming the layer (the honest-memory
rule vpipe.torch relies on: SWAP frees nothing on a CPU)."""

from __future__ import annotations

import pytest

import vpipe
from vpipe import pb

KEEP, SWAP, RECOMPUTE = pb.MEMORY_POLICY_KEEP, pb.MEMORY_POLICY_SWAP, pb.MEMORY_POLICY_RECOMPUTE


def tight_request(allowed, memory=5_000, planner=pb.PLANNER_VPIPE) -> pb.PlanRequest:
    """Six layers whose stashes do not fit under KEEP: SWAP is the planner's cheapest
    answer (a fast copy engine hides it), RECOMPUTE the other."""
    r = pb.PlanRequest()
    r.model.input_bytes = 100
    for i in range(6):
        l = r.model.layers.add(name=f"l{i}")
        l.profile.fwd_seconds, l.profile.bwd_seconds = 1e-3, 2e-3
        l.profile.stash_bytes, l.profile.output_bytes, l.profile.param_bytes = 1000, 100, 100
    for i in range(2):
        d = r.cluster.devices.add(name=f"cpu{i}", memory_bytes=memory, host_bandwidth=1e12)
        d.allowed_policies.extend(allowed)
    r.cluster.links.add(bandwidth=1e9)
    r.options.micro_batches = 4
    r.options.schedule = pb.SCHEDULE_1F1B
    r.options.planner = planner
    return r


def policies(plan):
    return [p for s in plan.stages for p in s.policy]


def test_planner_uses_swap_where_allowed_and_never_where_forbidden():
    free = vpipe.plan(tight_request([]))
    assert SWAP in policies(free), f"expected the unconstrained plan to swap, got {policies(free)}"
    cpu = vpipe.plan(tight_request([KEEP, RECOMPUTE]))
    assert SWAP not in policies(cpu), f"a device that forbids SWAP got a SWAP layer: {policies(cpu)}"
    assert RECOMPUTE in policies(cpu), policies(cpu)


def test_exact_planner_honours_allowed_policies_too():
    cpu = vpipe.plan(tight_request([KEEP, RECOMPUTE], planner=pb.PLANNER_EXACT))
    assert SWAP not in policies(cpu), policies(cpu)


def test_evaluating_a_plan_with_a_forbidden_policy_names_the_layer():
    request = tight_request([KEEP, RECOMPUTE])
    plan = vpipe.plan(tight_request([]))
    swapped = [(s, k) for s, st in enumerate(plan.stages) for k, p in enumerate(st.policy) if p == SWAP]
    s, k = swapped[0]
    layer = plan.stages[s].first_layer + k
    with pytest.raises(vpipe.InvalidRequestError, match=rf"layer {layer} \(l{layer}\) uses swap, which device {s} \(cpu{s}\) does not allow"):
        vpipe.evaluate(request.model, request.cluster, plan)


def test_allowed_policies_without_keep_is_refused():
    with pytest.raises(vpipe.InvalidRequestError, match=r"cluster.devices\[0\].allowed_policies: must include MEMORY_POLICY_KEEP"):
        vpipe.plan(tight_request([RECOMPUTE]))
