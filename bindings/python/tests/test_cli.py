"""``python -m vpipe plan`` (vpipe/__main__.py), run as a user would: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from google.protobuf import json_format

import vpipe
from vpipe import pb

BINDING_ROOT = Path(__file__).resolve().parents[1]  # bindings/python
MiB = 1 << 20


def request(planner: int = pb.PLANNER_VPIPE, memory: int = 1024 * MiB) -> pb.PlanRequest:
    """Six layers on two devices; at the default 1 GiB too small to keep every stash, so
    VPIPE must swap or recompute."""
    r = pb.PlanRequest()
    for l in range(6):
        layer = r.model.layers.add(name=f"block{l}")
        layer.profile.fwd_seconds, layer.profile.bwd_seconds = 0.01, 0.02
        layer.profile.stash_bytes, layer.profile.output_bytes, layer.profile.param_bytes = 256 * MiB, 16 * MiB, 32 * MiB
    r.model.input_bytes = 16 * MiB
    for d in range(2):
        r.cluster.devices.add(name=f"gpu{d}", memory_bytes=memory, host_bandwidth=12e9)
    r.cluster.links.add(bandwidth=10e9, latency=1e-5)
    r.options.micro_batches = 4
    r.options.planner = planner
    return r


def run(*args: str, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(BINDING_ROOT)
    env["VPIPE_LIBRARY"] = vpipe.library_path()
    return subprocess.run([sys.executable, "-m", "vpipe", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


def write(tmp_path: Path, r: pb.PlanRequest) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json_format.MessageToJson(r))
    return path


def test_plan_prints_a_table(tmp_path: Path) -> None:
    r = request()
    want = vpipe.plan(r)
    result = run("plan", str(write(tmp_path, r)))
    assert result.returncode == 0, f"expected exit 0, got {result.returncode}: {result.stderr}"
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["stage", "device", "layers", "policies"], f"unexpected header: {lines[0]!r}"
    for i, stage in enumerate(want.stages):
        letters = "".join({pb.MEMORY_POLICY_KEEP: "K", pb.MEMORY_POLICY_SWAP: "S", pb.MEMORY_POLICY_RECOMPUTE: "R"}[p]
                          for p in stage.policy)
        cells = lines[1 + i].split()
        assert cells[:4] == [str(i), str(stage.device), f"{stage.first_layer}-{stage.last_layer}", letters], \
            f"stage {i}: expected {letters} for layers {stage.first_layer}-{stage.last_layer}, got {lines[1 + i]!r}"
    assert any(set(s.policy) - {pb.MEMORY_POLICY_KEEP} for s in want.stages), "the request should need S or R somewhere"
    assert "planner PLANNER_VPIPE" in result.stdout and "GiB" in result.stdout, result.stdout


def test_plan_json_is_the_plan(tmp_path: Path) -> None:
    r = request(pb.PLANNER_TIME_BALANCED, memory=4096 * MiB)
    result = run("plan", str(write(tmp_path, r)), "--json")
    assert result.returncode == 0, f"expected exit 0, got {result.returncode}: {result.stderr}"
    got = json_format.Parse(result.stdout, pb.Plan())
    want = vpipe.plan(r)
    got.planning_seconds = want.planning_seconds = 0
    assert got == want, f"expected the library's plan, got {got}"


def test_plan_reads_stdin() -> None:
    result = run("plan", "-", stdin=json_format.MessageToJson(request(pb.PLANNER_UNIFORM, memory=4096 * MiB)))
    assert result.returncode == 0 and "0-2" in result.stdout and "3-5" in result.stdout, result.stdout + result.stderr


def test_errors_exit_1_with_the_library_message(tmp_path: Path) -> None:
    r = request()
    r.options.micro_batches = 0
    result = run("plan", str(write(tmp_path, r)))
    assert result.returncode == 1, f"expected exit 1, got {result.returncode}"
    assert "VP_ERR_INVALID_REQUEST: options.micro_batches" in result.stderr, f"got {result.stderr!r}"
    assert result.stdout == "", f"nothing may go to stdout on error, got {result.stdout!r}"

    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"layerz": []}}')
    result = run("plan", str(bad))
    assert result.returncode == 1 and "not a vpipe.PlanRequest" in result.stderr, result.stderr
    result = run("plan", str(tmp_path / "missing.json"))
    assert result.returncode == 1 and "cannot read" in result.stderr, result.stderr
    result = run("frobnicate")
    assert result.returncode == 2, f"bad usage: expected exit 2, got {result.returncode}"


# ---------------------------------------------------------------- the Swift CLI: import, then plan the file

REPO_ROOT = BINDING_ROOT.parents[1]
VPIPE_CLI = REPO_ROOT / "bin" / "vpipe"  # `make build` puts it there; `make test-python` builds first
GNMT = REPO_ROOT / "data" / "pipedream-profiles" / "gnmt" / "graph.txt"


def cli(*args: str) -> subprocess.CompletedProcess:
    assert VPIPE_CLI.exists(), f"expected the command-line tool at {VPIPE_CLI} (run `make build`)"
    return subprocess.run([str(VPIPE_CLI), *args], capture_output=True, text=True, timeout=120)


def test_import_then_plan_the_model_file(tmp_path: Path) -> None:
    model = tmp_path / "model.pb"
    imported = cli("import", "pipedream", str(GNMT), "--out", str(model))
    assert imported.returncode == 0, imported.stderr
    assert "gnmt: 37 layers from 48 nodes" in imported.stdout, imported.stdout
    spec = pb.ModelSpec()
    spec.ParseFromString(model.read_bytes())
    assert len(spec.layers) == 37 and spec.name == "gnmt", (len(spec.layers), spec.name)

    planned = cli("plan", "--model-file", str(model), "--devices", "8", "--memory-gib", "16")
    assert planned.returncode == 0, planned.stderr
    assert "plan for gnmt (37 layers) on 8 devices" in planned.stdout, planned.stdout
    # Every planner's row, PipeDream's own partitioner among them.
    rows = {line.split()[0] for line in planned.stdout.splitlines()[1:] if line[:1].isalpha()}
    assert {"VPIPE", "TIME_BALANCED", "GPIPE", "PIPEDREAM"} <= rows, planned.stdout


def test_model_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pb"
    r = cli("plan", "--model-file", str(missing))
    assert r.returncode == 1 and f"--model-file {missing}: cannot read the file" in r.stderr, r.stderr

    garbled = tmp_path / "garbled.pb"
    garbled.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    r = cli("plan", "--model-file", str(garbled))
    assert r.returncode == 1 and f"--model-file {garbled}: not a serialised vpipe.ModelSpec" in r.stderr, r.stderr

    unprofiled = tmp_path / "unprofiled.pb"
    spec = pb.ModelSpec(name="m")
    spec.layers.add(name="l0").profile.fwd_seconds = 1.0
    spec.layers.add(name="l1")  # no profile: nothing to plan with
    unprofiled.write_bytes(spec.SerializeToString())
    r = cli("plan", "--model-file", str(unprofiled))
    assert r.returncode == 1 and "model.layers[1].profile" in r.stderr, r.stderr

    negative = tmp_path / "negative.pb"
    spec = pb.ModelSpec(name="m")
    spec.layers.add(name="l0").profile.fwd_seconds = -1.0
    negative.write_bytes(spec.SerializeToString())
    r = cli("plan", "--model-file", str(negative))
    assert r.returncode == 1 and "model.layers[0].profile.fwd_seconds" in r.stderr, r.stderr


def test_pipedream_planner_through_the_library() -> None:
    plan = vpipe.plan(request(pb.PLANNER_PIPEDREAM, memory=64 * 1024 * MiB))
    assert plan.planner == pb.PLANNER_PIPEDREAM, pb.Planner.Name(plan.planner)
    assert all(p == pb.MEMORY_POLICY_KEEP for s in plan.stages for p in s.policy)
    # Memory-unaware: on 1 GiB devices its all-KEEP plan does not fit, and says where.
    try:
        vpipe.plan(request(pb.PLANNER_PIPEDREAM))
    except vpipe.InfeasibleError as e:
        assert "PIPEDREAM" in str(e) and "stage 0" in str(e), str(e)
    else:
        raise AssertionError("expected PIPEDREAM's all-KEEP plan not to fit 1 GiB devices")


def objective_request() -> pb.PlanRequest:
    """Three layers on two devices where the objectives disagree: cutting after layer 0
    gives τ 11 ms and a free link (T_iter 27 ms at m = 2); cutting after layer 1 gives τ
    10 ms but a 4 ms link (T_iter 30 ms)."""
    r = pb.PlanRequest()
    for l, (ms, out) in enumerate([(5, 1000), (5, 20_000_000), (6, 1000)]):
        layer = r.model.layers.add(name=f"l{l}")
        layer.profile.fwd_seconds, layer.profile.bwd_seconds = ms / 3e3, 2 * ms / 3e3
        layer.profile.stash_bytes, layer.profile.output_bytes, layer.profile.param_bytes = MiB, out, MiB
    r.model.input_bytes = 1000
    for d in range(2):
        r.cluster.devices.add(name=f"gpu{d}", memory_bytes=4096 * MiB, host_bandwidth=12e9)
    r.cluster.links.add(bandwidth=10e9, latency=0)
    r.options.micro_batches = 2
    return r


def test_objective_throughput_takes_the_smaller_bottleneck(tmp_path: Path) -> None:
    r = objective_request()
    fastest = vpipe.plan(r)
    assert fastest.objective == pb.OBJECTIVE_ITERATION_TIME and fastest.proven_optimal, fastest
    assert [s.last_layer for s in fastest.stages] == [0, 2], f"expected the cut after layer 0, got {fastest}"
    r.options.objective = pb.OBJECTIVE_THROUGHPUT
    steady = vpipe.plan(r)
    assert steady.objective == pb.OBJECTIVE_THROUGHPUT and steady.proven_optimal, steady
    assert [s.last_layer for s in steady.stages] == [1, 2], f"expected the cut after layer 1, got {steady}"
    assert abs(steady.bottleneck_seconds - 0.010) < 1e-9 and abs(fastest.bottleneck_seconds - 0.011) < 1e-9
    # The certificate's bound stays the T_iter optimum: the gap is what the smaller τ costs.
    assert abs(steady.lower_bound_seconds - fastest.iteration_seconds) < 1e-12, (steady.lower_bound_seconds, fastest)
    # The command line: --objective overrides the request's.
    path = write(tmp_path, objective_request())
    result = run("plan", str(path), "--objective", "throughput")
    assert result.returncode == 0, result.stderr
    assert "0-1" in result.stdout and "proven the smallest bottleneck" in result.stdout, result.stdout
    assert "11.11% above the fastest plan's" in result.stdout, result.stdout
    result = run("plan", str(path))
    assert result.returncode == 0 and "0-0" in result.stdout and "proven optimal" in result.stdout, result.stdout
