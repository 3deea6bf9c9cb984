"""Session.save / Session.load through the real library (docs/checkpoint.md).

Resume is exact (the losses after a load equal those of the session that went on), also
under another plan; a damaged checkpoint or one of another model raises CheckpointError
naming what is wrong, and the session is untouched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vpipe
from vpipe import pb

from test_session import config, expect_error, gpt_batch, gpt_layers, hand_plan, mlp_batch, mlp_layers


def test_resume_is_exact_and_survives_a_new_plan(tmp_path: Path) -> None:
    tokens, targets = gpt_batch()
    layers = gpt_layers()
    path = tmp_path / "gpt.vpck"
    with vpipe.Session(config(layers, 2, hand_plan([(0, 1), (2, 4)]), adam=True)) as s:
        for _ in range(3):
            s.step(tokens, targets)
        s.save(path)
        continued = [s.step(tokens, targets) for _ in range(3)]
    for plan, devices in [(hand_plan([(0, 1), (2, 4)]), 2), (hand_plan([(0, 0), (1, 2), (3, 4)]), 3), (hand_plan([(0, 4)]), 1)]:
        with vpipe.Session(config(layers, devices, plan, adam=True)) as fresh:
            fresh.load(path)
            assert fresh.stats().iterations == 3
            resumed = [fresh.step(tokens, targets) for _ in range(3)]
        assert resumed == continued, f"{devices} stages: expected the continued losses {continued}, got {resumed}"


def test_bad_checkpoints_raise_and_leave_the_session_alone(tmp_path: Path) -> None:
    x, y = mlp_batch()
    path = tmp_path / "mlp.vpck"
    with vpipe.Session(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))) as s:
        s.step(x, y)
        s.save(path)
    good = path.read_bytes()
    bad = tmp_path / "bad.vpck"
    with vpipe.Session(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]))) as s:
        before = [p.copy() for p in s.parameters(0)]
        bad.write_bytes(good[: len(good) // 2])
        err = expect_error(vpipe.CheckpointError, lambda: s.load(bad), "truncated")
        assert err.status == vpipe.ERR_CHECKPOINT and err.status_name == "VP_ERR_CHECKPOINT"
        flipped = bytearray(good)
        flipped[16 + 8] ^= 1
        bad.write_bytes(bytes(flipped))
        expect_error(vpipe.CheckpointError, lambda: s.load(bad), "checksum mismatch")
        expect_error(vpipe.CheckpointError, lambda: s.load(tmp_path / "missing"), "cannot open")
        assert all(np.array_equal(a, b) for a, b in zip(before, s.parameters(0))), "a refused load changed the weights"
        assert s.stats().iterations == 0
    other = mlp_layers()
    other[2].linear.out_features = 5
    other[2].name = "fc2"
    with vpipe.Session(config(other, 2, hand_plan([(0, 1), (2, 3)]))) as s:
        expect_error(vpipe.CheckpointError, lambda: s.load(path), "layer 2 (\"fc2\") is linear(16, 4) in the checkpoint, linear(16, 5)")
    with vpipe.Session(config(mlp_layers(), 2, hand_plan([(0, 1), (2, 3)]), adam=True)) as s:
        expect_error(vpipe.CheckpointError, lambda: s.load(path), "optimizer state is for sgd, the session trains with adam")
