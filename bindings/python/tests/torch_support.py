"""Shared by the vpipe.torch tests (imported only after pytest.importorskip("torch"))."""

from __future__ import annotations

import pytest
import torch

from vpipe import pb


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: exact (bitwise) comparisons need the same kernels, and the
    machine's two cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hand_plan(stages, schedule=pb.SCHEDULE_GPIPE, micro_batches=1) -> pb.Plan:
    """stages: [(first, [policy, ...]), ...], stage i on device i."""
    plan = pb.Plan(schedule=schedule, micro_batches=micro_batches)
    for device, (first, policies) in enumerate(stages):
        plan.stages.add(device=device, first_layer=first, last_layer=first + len(policies) - 1, policy=policies)
    return plan
