"""Writes the seed corpus of the fuzz targets (Tests/fuzz/corpus/<target>/): small valid
messages of every shape the entry points accept, which libFuzzer then mutates. Run from the
repository root after a change to proto/vpipe.proto (`make fuzz-corpus`); the output is
checked in.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bindings/python"))
from vpipe import pb  # noqa: E402  (the generated module, no library needed)

OUT = ROOT / "Tests/fuzz/corpus"
KEEP, SWAP, RECOMPUTE = pb.MEMORY_POLICY_KEEP, pb.MEMORY_POLICY_SWAP, pb.MEMORY_POLICY_RECOMPUTE


def model(n: int = 6, params: int = 4096) -> pb.ModelSpec:
    m = pb.ModelSpec(name="seed", input_bytes=2048, state_bytes_per_param_byte=2)
    for i in range(n):
        m.layers.add(name=f"l{i}", profile=pb.LayerProfile(fwd_seconds=1e-3 * (1 + i % 3), bwd_seconds=2e-3 * (1 + i % 2),
                                                           stash_bytes=8192 * (1 + i % 4), output_bytes=4096, param_bytes=params * (i % 3)))
    return m


def cluster(p: int, memory: int = 1 << 30) -> pb.ClusterSpec:
    c = pb.ClusterSpec()
    for i in range(p):
        c.devices.add(name=f"d{i}", memory_bytes=memory, speed=1.0 + 0.5 * (i % 2), host_bandwidth=1e10, reserved_bytes=1024)
    for _ in range(p - 1):
        c.links.add(bandwidth=1e10, latency=1e-5)
    return c


def plan(starts, n: int, schedule=pb.SCHEDULE_1F1B, m: int = 4, policies=None) -> pb.Plan:
    p = pb.Plan(schedule=schedule, micro_batches=m)
    ends = list(starts[1:]) + [n]
    for d, (s, e) in enumerate(zip(starts, ends)):
        p.stages.add(device=d, first_layer=s, last_layer=e - 1, policy=(policies or [KEEP] * n)[s:e])
    return p


def mlp_session(stages: int, with_plan: bool, policies=None, adam: bool = False, schedule=pb.SCHEDULE_1F1B) -> pb.SessionConfig:
    c = pb.SessionConfig()
    c.model.name = "mlp"
    c.model.layers.add(name="fc1").linear.CopyFrom(pb.Linear(in_features=8, out_features=16))
    c.model.layers.add(name="relu").activation.kind = pb.ACTIVATION_RELU
    c.model.layers.add(name="fc2").linear.CopyFrom(pb.Linear(in_features=16, out_features=16))
    c.model.layers.add(name="gelu").activation.kind = pb.ACTIVATION_GELU
    c.model.layers.add(name="fc3").linear.CopyFrom(pb.Linear(in_features=16, out_features=4))
    c.model.layers.add(name="loss").softmax_cross_entropy.SetInParent()
    c.cluster.CopyFrom(cluster(stages, 64 << 20))
    if with_plan:
        c.plan.CopyFrom(plan([0, 3][:stages] if stages <= 2 else [0, 2, 4], 6, schedule=schedule, m=2, policies=policies))
    c.training.schedule = schedule
    c.training.micro_batches = 2
    c.training.seed = 1
    if adam:
        c.training.adam.lr = 0.01
    else:
        c.training.sgd.lr = 0.1
        c.training.sgd.momentum = 0.9
    return c


def gpt_session() -> pb.SessionConfig:
    c = pb.SessionConfig()
    c.model.name = "gpt"
    c.model.layers.add(name="embed").embedding.CopyFrom(pb.Embedding(vocabulary=13, features=16, sequence_length=4))
    c.model.layers.add(name="block").transformer_block.CopyFrom(pb.TransformerBlock(features=16, heads=2, sequence_length=4))
    c.model.layers.add(name="ln").layer_norm.features = 16
    c.model.layers.add(name="head").linear.CopyFrom(pb.Linear(in_features=16, out_features=13))
    c.model.layers.add(name="loss").softmax_cross_entropy.SetInParent()
    c.cluster.CopyFrom(cluster(2, 64 << 20))
    c.plan.CopyFrom(plan([0, 2], 5, m=2))
    c.training.micro_batches = 2
    c.training.adam.lr = 0.01
    return c


def seeds():
    n = 6
    for planner in (pb.PLANNER_UNIFORM, pb.PLANNER_PARAMETERS, pb.PLANNER_TIME_BALANCED, pb.PLANNER_GPIPE, pb.PLANNER_VPIPE, pb.PLANNER_EXACT):
        for p in (1, 3):
            r = pb.PlanRequest(model=model(n), cluster=cluster(p), options=pb.PlanOptions(schedule=pb.SCHEDULE_1F1B, micro_batches=4, planner=planner))
            yield "plan", f"planner{planner}-p{p}", r
    tight = pb.PlanRequest(model=model(n, params=1 << 20), cluster=cluster(2, memory=3 << 20),
                           options=pb.PlanOptions(schedule=pb.SCHEDULE_GPIPE, micro_batches=8, planner=pb.PLANNER_VPIPE))
    yield "plan", "memory-tight", tight
    mixed = [KEEP, SWAP, RECOMPUTE, RECOMPUTE, KEEP, SWAP]
    for schedule in (pb.SCHEDULE_GPIPE, pb.SCHEDULE_1F1B, pb.SCHEDULE_PIPEDREAM_ASYNC):
        for name, starts in (("one", [0]), ("three", [0, 2, 4])):
            p = plan(starts, n, schedule=schedule, policies=mixed)
            yield "evaluate", f"s{schedule}-{name}", pb.EvaluationRequest(model=model(n), cluster=cluster(len(starts)), plan=p)
            yield "simulate", f"s{schedule}-{name}", pb.SimulationRequest(model=model(n), cluster=cluster(len(starts)), plan=p)
    yield "session", "mlp-2-stages", mlp_session(2, True)
    yield "session", "mlp-profile-then-plan", mlp_session(2, False)
    yield "session", "mlp-3-stages-swap-recompute", mlp_session(3, True, policies=[KEEP, SWAP, RECOMPUTE, RECOMPUTE, KEEP, KEEP], adam=True)
    yield "session", "mlp-gpipe", mlp_session(2, True, schedule=pb.SCHEDULE_GPIPE)
    yield "session", "mlp-async", mlp_session(2, True, schedule=pb.SCHEDULE_PIPEDREAM_ASYNC)
    yield "session", "gpt-2-stages", gpt_session()


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    for target, name, message in seeds():
        d = OUT / target
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.pb").write_bytes(message.SerializeToString())
    d = OUT / "pipedream"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "docs/pipedream-example/graph.txt", d / "example-graph.txt")
    (d / "small.txt").write_text(
        "node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=1024.0, parameter_size=0.000\n"
        "node2 -- Linear(in_features=16, out_features=16) -- forward_compute_time=1.5, backward_compute_time=3.0, activation_size=[512.0; 512.0], parameter_size=1088.000\n"
        "node3 -- ReLU() -- forward_compute_time=0.100, backward_compute_time=0.200, activation_size=1024.0, parameter_size=0.000 -- stage_id=1\n"
        "\tnode1 -- node2\n\tnode2 -- node3\n")
    for target in sorted(p.name for p in OUT.iterdir()):
        print(f"{target}: {len(list((OUT / target).iterdir()))} seeds")


if __name__ == "__main__":
    main()
