#!/usr/bin/env python3
"""Writes a vpipe.SessionConfig for the MPI tests: a 6-layer MLP (Linear ReLU Linear ReLU
Linear softmax_cross_entropy) on P uniform devices, with a plan (an even split, all KEEP) or,
with --profiles, per-layer profiles only (rank 0 plans)."""
import argparse, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bindings", "python", "vpipe"))
import vpipe_pb2 as pb

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--stages", type=int, required=True)
ap.add_argument("--transport", choices=["mpi", "in-process"], default="mpi")
ap.add_argument("--schedule", choices=["1f1b", "gpipe"], default="1f1b")
ap.add_argument("--micro-batches", type=int, default=4)
ap.add_argument("--profiles", action="store_true", help="no plan: profiles, rank 0 plans")
ap.add_argument("--width", type=int, default=16)
ap.add_argument("--fail", help="iteration:stage:micro_batch")
ap.add_argument("--timeout", type=float, default=0)
ap.add_argument("--split", help="first layer of each stage, comma-separated (default: an even split)")
ap.add_argument("--memory", help="stage:bytes, memory_bytes of that device (default 1 GiB)")
ap.add_argument("--plan-only", action="store_true", help="write only the vpipe.Plan (for vpipe train --migrate-plan)")
ap.add_argument("--replan-every", type=int, default=0, help="online re-planning every N iterations")
ap.add_argument("--slowdown", help="stage:factor:from_iteration, an injected slowdown")
a = ap.parse_args()

w = a.width
c = pb.SessionConfig()
m = c.model
m.name = "mlp6"
kinds = [("linear", (8, w)), ("relu", None), ("linear", (w, w)), ("relu", None), ("linear", (w, 4)), ("loss", None)]
for i, (k, arg) in enumerate(kinds):
    l = m.layers.add()
    l.name = f"l{i}"
    if k == "linear":
        l.linear.in_features, l.linear.out_features = arg
    elif k == "relu":
        l.activation.kind = pb.ACTIVATION_RELU
    else:
        l.softmax_cross_entropy.SetInParent()
    if a.profiles:
        l.profile.fwd_seconds = 1e-5 * (3 if k == "linear" else 1)
        l.profile.bwd_seconds = 2e-5 * (3 if k == "linear" else 1)
        l.profile.stash_bytes = 4 * 8 * w
        l.profile.output_bytes = 4 * 8 * w
        l.profile.param_bytes = 4 * (arg[0] * arg[1] + arg[1]) if k == "linear" else 0
m.input_bytes = 4 * 8 * 8
for i in range(a.stages):
    d = c.cluster.devices.add()
    d.name = f"cpu{i}"
    d.memory_bytes = int(a.memory.split(":")[1]) if a.memory and int(a.memory.split(":")[0]) == i else 1 << 30
    d.host_bandwidth = 1e10
for i in range(a.stages - 1):
    c.cluster.links.add(bandwidth=1e10)
t = c.training
t.schedule = pb.SCHEDULE_GPIPE if a.schedule == "gpipe" else pb.SCHEDULE_1F1B
t.micro_batches = a.micro_batches
t.seed = 7
t.adam.lr = 0.01
t.transport = pb.TRANSPORT_MPI if a.transport == "mpi" else pb.TRANSPORT_IN_PROCESS
t.failure_timeout_seconds = a.timeout
if a.fail:
    t.fail_iteration, t.fail_stage, t.fail_micro_batch = map(int, a.fail.split(":"))
t.replan_every = a.replan_every
if a.slowdown:
    st, f, frm = a.slowdown.split(":")
    t.slowdown_stage, t.slowdown_factor, t.slowdown_from_iteration = int(st), float(f), int(frm)
if not a.profiles or a.plan_only:
    L = len(kinds)
    firsts = [int(x) for x in a.split.split(",")] if a.split else [i * L // a.stages for i in range(a.stages)]
    assert len(firsts) == a.stages and firsts[0] == 0, "--split: one first layer per stage, starting at 0"
    p = c.plan
    p.schedule = t.schedule
    p.micro_batches = a.micro_batches
    for i in range(a.stages):
        s = p.stages.add()
        s.device = i
        s.first_layer = firsts[i]
        s.last_layer = (firsts[i + 1] if i + 1 < a.stages else L) - 1
        s.policy.extend([pb.MEMORY_POLICY_KEEP] * (s.last_layer - s.first_layer + 1))
open(a.out, "wb").write((c.plan if a.plan_only else c).SerializeToString())
