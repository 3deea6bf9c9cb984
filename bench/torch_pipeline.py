#!/usr/bin/env python3
"""vpipe.torch.Pipeline against torch.distributed.pipelining, side by side in one run.

Same model, same ranks (2 gloo processes, one thread each), same schedule, micro-batches,
optimizer and data. The peer is PyTorch's own pipeline (``pipeline()`` with an even split
of the blocks, ``build_stage``, ``ScheduleGPipe``/``Schedule1F1B``); vPipe plans the model
for per-rank memory budgets (``vt.cpu_device(budget)``: KEEP and RECOMPUTE only) and runs
its plan. Two budgets, both derived from the even split's predicted peak (cost model,
``vpipe.evaluate``): a tight one (``--tight`` x it: the even split does not fit, vPipe must
still train) and a roomy one (``--roomy`` x it: both fit, vPipe must be no slower).

Model ("funnel"): Linear 256->256, 4 heavy residual MLP blocks (hidden 2048), 4 light ones
(hidden 256), a 16-class head; micro-batch 128 rows, Adam. Per rank and configuration:

- steps/s: 1 / median wall time of ``--iters`` steps after ``--warmup`` (rank 0, after a
  barrier per step);
- measured peak: ``vt.PeakTensorBytes`` over one more step (bytes of live tensor storages:
  parameters, gradients, optimizer state, activations, received tensors, temporaries);
- predicted peak: the plan's ``peak_memory_bytes`` (the even split evaluated with the same
  cost model), and measured / predicted.

Prints one JSON line per (budget, framework, rank) and a table. Run: make bench-torch
(python3 bench/torch_pipeline.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.distributed as dist
from torch import nn

import vpipe
import vpipe.torch as vt
from vpipe import pb

IN, D, CLASSES, MB = 256, 256, 16, 128


class Block(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.ln = nn.LayerNorm(D)
        self.up, self.down = nn.Linear(D, hidden), nn.Linear(hidden, D)

    def forward(self, h):
        return h + self.down(nn.functional.gelu(self.up(self.ln(h))))


class Funnel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(IN, D)
        self.blocks = nn.Sequential(*[Block(2048) for _ in range(4)], *[Block(256) for _ in range(4)])
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x):
        return self.head(self.blocks(self.inp(x)))


def loss_fn(out, y):
    return nn.functional.cross_entropy(out, y)


def adam(params):
    return torch.optim.Adam(params, lr=1e-3)


def batch(step: int, m: int):
    g = torch.Generator().manual_seed(step)
    return torch.randn(MB * m, IN, generator=g), torch.randint(0, CLASSES, (MB * m,), generator=g)


def even_plan(layers: int, schedule: int, m: int) -> pb.Plan:
    """torch.distributed.pipelining's split below (at blocks.4) as a vPipe plan, all KEEP."""
    plan = pb.Plan(schedule=schedule, micro_batches=m)
    cut = 5  # layers: inp, blocks.0..7, head -> [inp, blocks.0..3] | [blocks.4..7, head]
    plan.stages.add(device=0, first_layer=0, last_layer=cut - 1, policy=[pb.MEMORY_POLICY_KEEP] * cut)
    plan.stages.add(device=1, first_layer=cut, last_layer=layers - 1, policy=[pb.MEMORY_POLICY_KEEP] * (layers - cut))
    return plan


def optimizer_tensors(opt) -> list:
    return [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]


def timed(step, iters: int, warmup: int, rank: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(rank: int, world: int, args) -> list:
    schedule = pb.SCHEDULE_GPIPE if args.schedule == "gpipe" else pb.SCHEDULE_1F1B
    m = args.micro_batches
    x0, y0 = batch(0, 1)
    model = Funnel()
    traced = vt.trace(model, (x0,))
    layers = len(traced.layers)
    # Rank 0 profiles once; every budget's plan comes from the same profile.
    spec_bytes = vt.profile(model, (x0,), y0, loss_fn=loss_fn, repeats=5).SerializeToString() if rank == 0 else None
    box = [spec_bytes]
    dist.broadcast_object_list(box, src=0)
    spec = pb.ModelSpec.FromString(box[0])
    spec.state_bytes_per_param_byte = 4.0  # Adam
    big = pb.ClusterSpec()
    for r in range(world):
        big.devices.add().CopyFrom(vt.cpu_device(1 << 40, name=f"rank{r}"))
    big.links.add(bandwidth=1e9)
    even = vpipe.evaluate(spec, big, even_plan(layers, schedule, m)).plan
    even_peak = max(s.peak_memory_bytes for s in even.stages)
    rows = []
    for label, factor in (("tight", args.tight), ("roomy", args.roomy)):
        budget = int(even_peak * factor)
        cluster = pb.ClusterSpec()
        for r in range(world):
            cluster.devices.add().CopyFrom(vt.cpu_device(budget, name=f"rank{r}"))
        cluster.links.add(bandwidth=1e9)
        # ---- vPipe: plan for the budget, run it.
        request = pb.PlanRequest(model=spec, cluster=cluster)
        request.options.schedule, request.options.micro_batches = schedule, m
        plan = vpipe.plan(request)
        pipe = vt.Pipeline(Funnel(), (x0,), loss_fn, y0, optimizer=adam, cluster=cluster, plan=plan)
        step_no = [1]

        def vstep():
            x, y = batch(step_no[0], m)
            step_no[0] += 1
            return pipe.step((x,), y)

        seconds = timed(vstep, args.iters, args.warmup, rank)
        with vt.PeakTensorBytes(list(pipe.stage.parameters()) + optimizer_tensors(pipe.optimizer)) as peak:
            vstep()
        st = plan.stages[rank]
        rows.append(dict(budget=label, budget_bytes=budget, framework="vpipe.torch", rank=rank,
                         layers=f"{st.first_layer}..{st.last_layer}",
                         policies="".join(pb.MemoryPolicy.Name(p)[14] for p in st.policy),
                         steps_per_s=1 / seconds, measured_peak=peak.peak, predicted_peak=st.peak_memory_bytes,
                         fits=peak.peak <= budget))
        del pipe
        # ---- torch.distributed.pipelining, its even split.
        from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe, SplitPoint, pipeline

        peer_model = Funnel()
        pipe_ir = pipeline(peer_model, mb_args=(x0,), split_spec={"blocks.4": SplitPoint.BEGINNING})
        stage = pipe_ir.build_stage(rank, torch.device("cpu"))
        cls = ScheduleGPipe if schedule == pb.SCHEDULE_GPIPE else Schedule1F1B
        sched = cls(stage, n_microbatches=m, loss_fn=loss_fn)
        opt = adam(list(stage.submod.parameters()))

        def pstep():
            x, y = batch(step_no[0], m)
            step_no[0] += 1
            opt.zero_grad(set_to_none=True)
            if rank == 0:
                sched.step(x)
            else:
                sched.step(target=y)
            opt.step()

        step_no[0] = 1
        seconds = timed(pstep, args.iters, args.warmup, rank)
        with vt.PeakTensorBytes(list(stage.submod.parameters()) + optimizer_tensors(opt)) as peak:
            pstep()
        est = even.stages[rank]
        rows.append(dict(budget=label, budget_bytes=budget, framework="torch.distributed.pipelining", rank=rank,
                         layers=f"{est.first_layer}..{est.last_layer}", policies="K" * len(est.policy),
                         steps_per_s=1 / seconds, measured_peak=peak.peak, predicted_peak=est.peak_memory_bytes,
                         fits=peak.peak <= budget))
        dist.barrier()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--micro-batches", type=int, default=8)
    ap.add_argument("--schedule", choices=["gpipe", "1f1b"], default="gpipe")
    ap.add_argument("--tight", type=float, default=0.75, help="tight budget = this x the even split's predicted peak")
    ap.add_argument("--roomy", type=float, default=2.0, help="roomy budget = this x the even split's predicted peak")
    args = ap.parse_args()
    results = vt.spawn(run, 2, args=(args,), threads=1, timeout_s=600)
    rows = sorted((r for rank_rows in results for r in rank_rows), key=lambda r: (r["budget"] != "tight", r["framework"], r["rank"]))
    for r in rows:
        print(json.dumps({**r, "torch": torch.__version__, "schedule": args.schedule, "micro_batches": args.micro_batches}))
    print()
    print(f"| budget | framework | rank | layers | policies | steps/s | measured peak MiB | predicted MiB | measured/predicted | within budget |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['budget']} ({r['budget_bytes'] / 2**20:.1f} MiB) | {r['framework']} | {r['rank']} | {r['layers']} | "
              f"{r['policies']} | {r['steps_per_s']:.2f} | {r['measured_peak'] / 2**20:.1f} | "
              f"{r['predicted_peak'] / 2**20:.1f} | {r['measured_peak'] / r['predicted_peak']:.2f} | "
              f"{'yes' if r['fits'] else 'NO'} |")


if __name__ == "__main__":
    main()
