"""``python -m vpipe``: the binding's command line.

    python -m vpipe plan request.json          # a readable table of the plan
    python -m vpipe plan request.json --json   # the vpipe.Plan as protobuf JSON
    python -m vpipe plan - < request.json      # the request on standard input

``request.json`` is a ``vpipe.PlanRequest`` in protobuf's JSON form (field names as in
proto/vpipe.proto or in lowerCamelCase, enums by name, 64-bit integers as numbers or strings),
e.g. ``{"model": {"layers": [{"profile": {"fwdSeconds": 0.01, ...}}]}, "cluster": {...},
"options": {"microBatches": 8, "planner": "PLANNER_TIME_BALANCED"}}``.

Exit status: 0 on success; 1 when the request cannot be read or the library rejects it (the
library's message, which names the field at fault, goes to standard error); 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, TextIO

from google.protobuf import json_format

from . import VPipeError, pb
from . import plan as _plan

POLICY_LETTERS = {pb.MEMORY_POLICY_KEEP: "K", pb.MEMORY_POLICY_SWAP: "S", pb.MEMORY_POLICY_RECOMPUTE: "R"}


def format_plan(plan: pb.Plan) -> str:
    """The plan as a table: one row per stage, then the pipeline's totals.

    Policies are one letter per layer of the stage: K keep, S swap, R recompute.
    """
    header = ("stage", "device", "layers", "policies", "compute", "swap", "stage time", "link", "peak memory", "capacity")
    rows: List[tuple] = []
    for i, s in enumerate(plan.stages):
        rows.append((
            str(i), str(s.device), f"{s.first_layer}-{s.last_layer}",
            "".join(POLICY_LETTERS.get(p, "?") for p in s.policy),
            _seconds(s.compute_seconds), _seconds(s.swap_seconds), _seconds(s.stage_seconds),
            _seconds(s.link_seconds) if i < len(plan.stages) - 1 else "-",
            _bytes(s.peak_memory_bytes), _bytes(s.memory_bytes),
        ))
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(header)]
    align = ["<" if k == 3 else ">" for k in range(len(header))]  # policies read left to right

    def line(cells: tuple) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    out = [line(header)] + [line(r) for r in rows]
    out.append("")
    out.append(f"planner {pb.Planner.Name(plan.planner)}, schedule {pb.Schedule.Name(plan.schedule)}, "
               f"{plan.micro_batches} micro-batches, cost model v{plan.cost_model_version}")
    out.append(f"bottleneck {_seconds(plan.bottleneck_seconds)}, iteration {_seconds(plan.iteration_seconds)} "
               f"(planned in {_seconds(plan.planning_seconds)})")
    if plan.proven_optimal and plan.objective == pb.OBJECTIVE_THROUGHPUT:
        line = (f"certificate: proven the smallest bottleneck (objective THROUGHPUT) under cost model "
                f"v{plan.cost_model_version}")
        if plan.lower_bound_seconds > 0 and plan.iteration_seconds > plan.lower_bound_seconds:
            gap = plan.iteration_seconds / plan.lower_bound_seconds - 1
            line += f"; its iteration is at most {gap * 100:.2f}% above the fastest plan's"
        out.append(line)
    elif plan.proven_optimal:
        out.append(f"certificate: proven optimal under cost model v{plan.cost_model_version}")
    elif plan.lower_bound_seconds > 0:
        gap = max(0.0, plan.iteration_seconds / plan.lower_bound_seconds - 1)
        out.append(f"certificate: no plan is faster than {_seconds(plan.lower_bound_seconds)}; "
                   f"this one is at most {gap * 100:.2f}% above the optimum")
    out.append("policies: K keep, S swap to host, R recompute")
    return "\n".join(out)


def _seconds(x: float) -> str:
    if x == 0:
        return "0"
    if x >= 1:
        return f"{x:.3f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} us"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _read(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def main(argv: Optional[List[str]] = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="python -m vpipe", description="libvpipe from the command line")
    commands = parser.add_subparsers(dest="command", required=True)
    plan_cmd = commands.add_parser("plan", help="plan a pipeline from a PlanRequest in protobuf JSON",
                                   description="Plans a pipeline (vp_plan) and prints it.")
    plan_cmd.add_argument("request", help="a vpipe.PlanRequest as protobuf JSON ('-' reads standard input)")
    plan_cmd.add_argument("--json", action="store_true", help="print the vpipe.Plan as protobuf JSON instead of a table")
    plan_cmd.add_argument("--objective", choices=["iteration-time", "throughput"],
                          help="what VPIPE and EXACT minimise (overrides the request's options.objective): "
                               "iteration-time (T_iter, the default) or throughput (the bottleneck first, then T_iter)")
    args = parser.parse_args(argv)

    try:
        request = json_format.Parse(_read(args.request, stdin), pb.PlanRequest())
    except OSError as e:
        print(f"vpipe plan: cannot read {args.request}: {e.strerror or e}", file=stderr)
        return 1
    except json_format.ParseError as e:
        print(f"vpipe plan: {args.request} is not a vpipe.PlanRequest in protobuf JSON: {e}", file=stderr)
        return 1
    if args.objective:
        request.options.objective = {"iteration-time": pb.OBJECTIVE_ITERATION_TIME,
                                     "throughput": pb.OBJECTIVE_THROUGHPUT}[args.objective]
    try:
        plan = _plan(request)
    except VPipeError as e:
        print(f"vpipe plan: {e}", file=stderr)
        return 1
    if args.json:
        print(json_format.MessageToJson(plan, preserving_proto_field_name=True), file=stdout)
    else:
        print(format_plan(plan), file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
