"""``vt.Pipeline``: a pipeline-parallel training engine across torch.distributed ranks.

One object per rank, built with the same arguments on every rank (``torchrun`` or
``vt.spawn`` start them):

1. rank 0 traces and profiles the model (vpipe.torch.profiling) and plans it
   (``vpipe.plan``) unless a plan is given; the plan (and the profile, for re-planning) is
   broadcast, so every rank runs the same plan;
2. rank ``i`` builds stage ``i`` (vpipe.torch.stages: the plan's per-layer KEEP/RECOMPUTE/
   SWAP), releases the tensors of the layers it does not own, and builds its optimizer over
   its stage's parameters (``optimizer``, a function of the parameters);
3. ``step(inputs, target)`` splits the batch into the plan's micro-batches and runs the
   plan's schedule: GPipe (all forwards, then all backwards) or 1F1B (PipeDream-Flush:
   ``S - i - 1`` warm-up forwards, then one forward one backward, then the drain), sending
   each cut's live set forward and its gradients back (vpipe.torch.wire), then steps the
   optimizer. Every rank returns the step's mean loss.
4. ``apply_plan(new_plan)`` between steps moves the layers whose rank changes with their
   weights, buffers and optimizer state (vpipe.torch.migration) and rebuilds each stage.
   With ``replan_every=k`` the pipeline does it by itself: every k steps the ranks share
   their measured compute seconds per step, rank 0 turns them into relative device speeds,
   re-plans, and migrates when the new plan's predicted iteration is faster by more than
   ``replan_threshold`` (a fraction).

The loss of micro-batch ``j`` is ``loss_fn(output_j, target_j) / micro_batches`` and the
gradients accumulate over the micro-batches, so a step equals one optimizer step over the
mean of the micro-batch losses, as in one process.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from .. import pb
from . import wire
from .errors import bad, check_number, check_positive_int
from .migration import Ownership, layer_state_keys, migrate
from .planning import check_plan_policies, cluster_spec, cpu_device
from .profiling import measure
from .stages import Stage, check_plan_shape
from .state import load_optimizer_state_by_name, optimizer_state_by_name
from .tracing import LeafSpec, TracedModel

SCHEDULES = {pb.SCHEDULE_GPIPE: "GPipe", pb.SCHEDULE_1F1B: "1F1B", pb.SCHEDULE_UNSPECIFIED: "1F1B"}


def _default_optimizer(params: List[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01)


class Pipeline:
    """A pipeline-parallel training engine over the ranks of the default process group
    (module docstring). Arguments:

    - ``model``: any ``nn.Module`` vpipe.torch can trace, the same initial weights on every
      rank (build it with a fixed seed, or load one state dict);
    - ``example_inputs``/``example_kwargs``: ONE micro-batch of the forward's arguments;
      ``sample_target``: one micro-batch of targets (profiling folds the loss in);
    - ``loss_fn(output, target)``: the loss of one micro-batch;
    - ``optimizer``: ``params -> torch.optim.Optimizer`` (default SGD, lr 0.01);
    - ``cluster``: a ``pb.ClusterSpec`` or a list of devices (``vt.cpu_device``), one per
      rank; default ``cpu_device(memory_bytes)`` per rank with 1 GB/s links;
    - ``plan``: a ``pb.Plan`` to use instead of planning; ``schedule``, ``micro_batches``,
      ``planner`` for the planner otherwise;
    - ``replan_every``, ``replan_threshold``: online re-planning (0 = off);
    - ``slowdown``: ``{rank: factor}``, from step ``slowdown_from``: that rank sleeps
      ``factor - 1`` times its compute time after each computation (fault injection for
      tests and demos, as the native runtime's ``slowdown_factor``).
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        sample_target: Any,
        optimizer: Callable[[List[nn.Parameter]], torch.optim.Optimizer] = _default_optimizer,
        cluster: Any = None,
        plan: Optional[pb.Plan] = None,
        schedule: int = pb.SCHEDULE_1F1B,
        micro_batches: int = 4,
        planner: int = pb.PLANNER_VPIPE,
        example_kwargs: Optional[Dict[str, Any]] = None,
        leaf_modules: Sequence[LeafSpec] = (),
        memory_bytes: int = 8 << 30,
        repeats: int = 5,
        replan_every: int = 0,
        replan_threshold: float = 0.1,
        slowdown: Optional[Dict[int, float]] = None,
        slowdown_from: int = 0,
    ):
        where = "Pipeline()"
        if not dist.is_available():
            raise bad(where, "torch.distributed is not available in this PyTorch build")
        if not dist.is_initialized():
            if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
                dist.init_process_group("gloo")
            else:
                raise bad(where, "no process group: start the ranks with torchrun or vpipe.torch.spawn(), "
                                 "or call torch.distributed.init_process_group() first")
        if not callable(loss_fn):
            raise bad(where, f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if not callable(optimizer):
            raise bad(where, "optimizer must be a function of the parameters returning a torch.optim.Optimizer")
        check_positive_int(where, "replan_every", replan_every, minimum=0)
        check_number(where, "replan_threshold", replan_threshold)
        check_positive_int(where, "slowdown_from", slowdown_from, minimum=0)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.slowdown = {}
        for r, f in (slowdown or {}).items():
            if not isinstance(r, int) or not 0 <= r < self.world:
                raise bad(where, f"slowdown names rank {r!r}; the ranks are 0..{self.world - 1}")
            self.slowdown[r] = check_number(where, f"slowdown[{r}]", f, minimum=1.0)
        self.slowdown_from = slowdown_from
        self.loss_fn = loss_fn
        self.make_optimizer = optimizer
        self.replan_every = replan_every
        self.replan_threshold = replan_threshold
        self.steps = 0
        self.migrations = 0
        self.step_compute_seconds: List[float] = []  # this rank's compute per step (slowdown included)
        self.model = model

        # Every rank traces (the same graph everywhere); rank 0 alone measures and plans.
        self.traced = TracedModel(model, example_inputs, example_kwargs, leaf_modules, where=where)
        self.example_inputs = dict(self.traced.inputs)
        if cluster is None:
            self.cluster = cluster_spec([cpu_device(memory_bytes, name=f"rank{r}") for r in range(self.world)],
                                        [1e9] * (self.world - 1), where)
        elif isinstance(cluster, pb.ClusterSpec):
            self.cluster = cluster_spec(cluster, None, where)
        else:
            self.cluster = cluster_spec(list(cluster), [1e9] * (len(list(cluster)) - 1), where)
        if len(self.cluster.devices) != self.world:
            raise bad(where, f"the cluster has {len(self.cluster.devices)} devices and the process group "
                             f"{self.world} ranks: one device per rank")
        failure: Optional[str] = None
        spec = None
        if self.rank == 0:
            try:
                if plan is None:
                    spec = measure(model, example_inputs, sample_target, loss_fn, repeats=repeats,
                                   example_kwargs=example_kwargs, traced=self.traced).spec
                    plan = self._plan(spec, schedule, micro_batches, planner)
            except Exception as e:  # every rank must hear about it, or the others wait forever
                failure = f"{type(e).__name__}: {e}"
        failure, plan_bytes, spec_bytes = wire.broadcast_object(
            (failure, plan.SerializeToString() if plan is not None and failure is None else None,
             spec.SerializeToString() if spec is not None else None))
        if failure is not None:
            raise bad(where, f"planning on rank 0 failed: {failure}")
        self.plan = pb.Plan.FromString(plan_bytes)
        self.spec = pb.ModelSpec.FromString(spec_bytes) if spec_bytes is not None else None
        self._check_plan(self.plan, where)
        self.micro_batches = self.plan.micro_batches or micro_batches
        self.schedule = self.plan.schedule
        # Shapes of every value crossing a cut, for the receiving side (one micro-batch).
        self._cut_meta: Dict[str, Tuple[Any, List[torch.Tensor]]] = {}
        for names in self.traced.live_after:
            for n in names:
                leaves, spec_tree = tree_flatten(self.traced.values[n])
                self._cut_meta[n] = (spec_tree, [torch.empty(0).new_empty(t.shape, dtype=t.dtype) for t in leaves])
        self._input_meta = {k: v.shape for k, v in self.example_inputs.items() if isinstance(v, torch.Tensor)}
        self.traced.values.clear()  # one micro-batch of every activation: not kept
        self._layer_keys = layer_state_keys(self.traced)
        self.ownership = Ownership(model)
        self._build(self.plan)
        self.optimizer = self.make_optimizer(list(self.stage.parameters()))

    # ------------------------------------------------------------ planning

    def _plan(self, spec: pb.ModelSpec, schedule: int, micro_batches: int, planner: int) -> pb.Plan:
        from .. import plan as _plan

        request = pb.PlanRequest()
        request.model.CopyFrom(spec)
        request.cluster.CopyFrom(self.cluster)
        request.options.schedule = schedule
        request.options.micro_batches = micro_batches
        request.options.planner = planner
        return _plan(request)

    def _check_plan(self, plan: pb.Plan, where: str) -> None:
        check_plan_shape(plan, len(self.traced.layers), where)
        if len(plan.stages) != self.world:
            raise bad(where, f"the plan has {len(plan.stages)} stages and the process group {self.world} ranks: "
                             "one stage per rank")
        if plan.schedule not in SCHEDULES:
            raise bad(where, f"schedule {pb.Schedule.Name(plan.schedule)} is not run by vpipe.torch.Pipeline "
                             "(GPipe and 1F1B are)")
        check_plan_policies(plan, self.cluster, self.spec)
        # A parameter used by layers on two ranks (tied embeddings) would need its gradients
        # summed across ranks every step; refused, naming the modules.
        owner = {}
        for s, st in enumerate(plan.stages):
            for l in range(st.first_layer, st.last_layer + 1):
                owner[l] = s
        for name, layers in self.traced.shared_parameters().items():
            ranks = sorted({owner[l] for l in layers})
            if len(ranks) > 1:
                users = ", ".join(f"{self.traced.module_using(name, l)} (layer {l}, rank {owner[l]})" for l in layers)
                raise bad(where, f"parameter '{name}' is shared by {users}: tied parameters must stay on one rank; "
                                 "plan them onto one stage or untie them")

    # ------------------------------------------------------------ stages

    def _build(self, plan: pb.Plan) -> None:
        st = plan.stages[self.rank]
        self.stage = Stage(self.traced, self.rank, st.first_layer, st.last_layer, st.policy)
        own = {k for l in range(st.first_layer, st.last_layer + 1) for k in self._layer_keys[l]}
        self.ownership.keep_only(own)
        self._recv_names = self.stage.input_names
        self._send_names = self.stage.output_names
        self._measured_from = len(self.step_compute_seconds) + 1

    def state_dict(self) -> Dict[str, Any]:
        """This rank's stage state, under the model's keys."""
        return self.stage.state_dict()

    def full_state_dict(self) -> Optional[Dict[str, Any]]:
        """The whole model's state dict on rank 0 (None elsewhere), gathered from the stages."""
        if self.rank != 0:
            works = wire.send_object({k: v.detach() for k, v in self.stage.state_dict().items()}, 0)
            for w in works:
                w.wait()
            return None
        full = {k: v.detach().clone() for k, v in self.stage.state_dict().items()}
        for src in range(1, self.world):
            full.update(wire.recv_object(src))
        return full

    # ------------------------------------------------------------ a training step

    def _split(self, value: Any, what: str) -> List[Any]:
        m = self.micro_batches
        leaves, spec = tree_flatten(value)
        parts = []
        for t in leaves:
            if isinstance(t, torch.Tensor):
                if t.dim() == 0 or t.shape[0] % m:
                    raise bad("Pipeline.step()", f"{what}: a tensor of shape {tuple(t.shape)} cannot be split into "
                                                 f"{m} micro-batches along dim 0")
                parts.append(t.chunk(m))
            else:
                parts.append([t] * m)
        return [tree_unflatten([p[j] for p in parts], spec) for j in range(m)]

    def _inputs_per_micro_batch(self, inputs: Any, kwargs: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
        from .tracing import bind_inputs
        bound = bind_inputs(self.model, inputs, kwargs, "Pipeline.step()")
        per = [dict() for _ in range(self.micro_batches)]
        for name in self.stage.side_inputs:
            chunks = self._split(bound[name], f"input '{name}'")
            want = self._input_meta.get(name)
            if want is not None and tuple(chunks[0].shape) != tuple(want):
                raise bad("Pipeline.step()", f"input '{name}': a micro-batch has shape {tuple(chunks[0].shape)}, the "
                                             f"pipeline was built for {tuple(want)} (batch = micro_batches x the "
                                             "example's batch)")
            for j in range(self.micro_batches):
                per[j][name] = chunks[j]
        return per

    def _compute(self, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        spent = time.perf_counter() - t0
        factor = self.slowdown.get(self.rank, 1.0) if self.steps >= self.slowdown_from else 1.0
        if factor > 1.0:
            time.sleep(spent * (factor - 1.0))
            spent *= factor
        self._compute_seconds += spent
        return out

    def _forward(self, j: int, side: Dict[str, Any], target: Any) -> None:
        env: Dict[str, Any] = {}
        received: List[torch.Tensor] = []
        if self._recv_names:
            for name in self._recv_names:
                spec_tree, like = self._cut_meta[name]
                tensors = wire.recv_tensors(like, self.rank - 1, wire.tag(wire.TAG_FORWARD, j))
                for t in tensors:
                    if t.is_floating_point() or t.is_complex():
                        t.requires_grad_(True)
                received += tensors
                env[name] = tree_unflatten(tensors, spec_tree)
        for ph, arg in self.stage._side.items():
            env[ph] = side[arg]

        def run() -> Any:
            values = self.stage.run_segments(env)
            if self.stage.is_last:
                return self.loss_fn(self.stage.outputs_from(values), target)
            return [t for n in self._send_names for t in tree_flatten(values[n])[0]]

        out = self._compute(run)
        if self.stage.is_last:
            self._losses.append(out.detach())
            self._pending[j] = (received, [out / self.micro_batches])
        else:
            self._sends += wire.send_tensors(out, self.rank + 1, wire.tag(wire.TAG_FORWARD, j))
            self._pending[j] = (received, out)

    def _backward(self, j: int) -> None:
        received, outputs = self._pending.pop(j)
        if self.stage.is_last:
            roots, grads = outputs, [None]
        else:
            like = [o for o in outputs if o.is_floating_point() or o.is_complex()]
            got = wire.recv_tensors(like, self.rank + 1, wire.tag(wire.TAG_BACKWARD, j))
            pairs = [(o, g) for o, g in zip(like, got) if o.requires_grad]
            roots, grads = [o for o, _ in pairs], [g for _, g in pairs]

        def run() -> None:
            if roots:
                torch.autograd.backward(roots, grads)

        self._compute(run)
        if self.rank > 0:
            back = [t.grad if t.grad is not None else torch.zeros_like(t)
                    for t in received if t.is_floating_point() or t.is_complex()]
            self._sends += wire.send_tensors(back, self.rank - 1, wire.tag(wire.TAG_BACKWARD, j))

    def step(self, inputs: Any, target: Any = None, kwargs: Optional[Dict[str, Any]] = None) -> float:
        """One training step on a batch (``micro_batches`` x the example's batch), on every rank.

        ``inputs``/``kwargs``: the forward's arguments for the whole batch (each rank uses
        the ones its stage reads); ``target``: the batch's targets (the last rank uses them).
        Returns the mean micro-batch loss on every rank."""
        side = self._inputs_per_micro_batch(inputs, kwargs)
        targets = self._split(target, "target") if self.stage.is_last else [None] * self.micro_batches
        self.optimizer.zero_grad(set_to_none=True)
        self._pending: Dict[int, Any] = {}
        self._sends: List[Any] = []
        self._losses: List[torch.Tensor] = []
        self._compute_seconds = 0.0
        m, s = self.micro_batches, self.world
        if self.schedule == pb.SCHEDULE_GPIPE:
            for j in range(m):
                self._forward(j, side[j], targets[j])
            for j in range(m):
                self._backward(j)
        else:  # 1F1B (PipeDream-Flush)
            warmup = min(s - self.rank - 1, m)
            for j in range(warmup):
                self._forward(j, side[j], targets[j])
            for k in range(m - warmup):
                self._forward(warmup + k, side[warmup + k], targets[warmup + k])
                self._backward(k)
            for k in range(m - warmup, m):
                self._backward(k)
        for w in self._sends:
            w.wait()
        self._sends = []
        self.optimizer.step()
        loss = torch.zeros(1, dtype=torch.float64)
        if self.stage.is_last:
            loss[0] = float(torch.stack(self._losses).double().mean())
        dist.broadcast(loss, src=self.world - 1)
        self.step_compute_seconds.append(self._compute_seconds)
        self.steps += 1
        if self.replan_every and self.steps % self.replan_every == 0:
            self.replan()
        return float(loss[0])

    # ------------------------------------------------------------ re-partitioning

    def apply_plan(self, new_plan: pb.Plan) -> None:
        """Re-partitions across the ranks between steps (call it on every rank with the same
        plan): moves each layer whose rank changes, with its weights, buffers and optimizer
        state, and rebuilds every stage and optimizer."""
        self._check_plan(new_plan, "Pipeline.apply_plan()")
        if [(s.first_layer, s.last_layer, list(s.policy)) for s in new_plan.stages] == \
                [(s.first_layer, s.last_layer, list(s.policy)) for s in self.plan.stages]:
            return
        own_state = optimizer_state_by_name(self.optimizer, self.stage)
        groups = own_state["param_groups"]
        received = migrate(self.rank, self.plan, new_plan, self._layer_keys, self.ownership, own_state)
        self.plan = new_plan
        self.schedule = new_plan.schedule
        self._build(new_plan)
        self.optimizer = self.make_optimizer(list(self.stage.parameters()))
        load_optimizer_state_by_name(self.optimizer, self.stage,
                                     {"state": {**own_state["state"], **received}, "param_groups": groups})
        self.migrations += 1

    def replan(self, window: int = 0) -> bool:
        """Re-plans from the measured compute seconds of the last ``window`` steps (default
        ``replan_every``) and migrates when the plan's predicted iteration improves by more
        than ``replan_threshold``. Every rank calls it together; returns whether it moved."""
        from .. import evaluate

        window = window or self.replan_every or 1
        # The steps since the stages were last built, the first one left out (it warms up:
        # allocations, first-call overheads), at most ``window`` of them. Every rank has
        # run the same steps, so every rank takes the same branch. The fastest of them is
        # this rank's compute: a preemption or a garbage-collection pause only ever adds
        # time to one step, while a device that really slowed down is slow in every step
        # (a mean let one stalled step on a fast rank hide a 4x slower one).
        recent = self.step_compute_seconds[max(self._measured_from, len(self.step_compute_seconds) - window):]
        if not recent:
            return False
        mine = torch.tensor([min(recent)], dtype=torch.float64)
        measured = [torch.zeros(1, dtype=torch.float64) for _ in range(self.world)]
        dist.all_gather(measured, mine)
        decision: Optional[bytes] = None
        if self.rank == 0 and self.spec is not None:
            cluster = pb.ClusterSpec()
            cluster.CopyFrom(self.cluster)
            for st, got in zip(self.plan.stages, measured):
                # predicted compute per step at speed s is C_i / s; the measurement gives the speed.
                predicted = st.compute_seconds * (cluster.devices[st.device].speed or 1.0)
                seconds = float(got[0])
                if predicted > 0 and seconds > 0:
                    cluster.devices[st.device].speed = predicted / seconds
            # Only relative speeds matter: normalise the fastest to 1.
            fastest = max(d.speed or 1.0 for d in cluster.devices)
            for d in cluster.devices:
                d.speed = (d.speed or 1.0) / fastest
            self.cluster = cluster  # what was measured stays true whatever is decided
            current = evaluate(self.spec, cluster, self.plan).plan.iteration_seconds
            candidate = self._plan(self.spec, self.plan.schedule, self.plan.micro_batches, self.plan.planner or
                                   pb.PLANNER_VPIPE)
            if candidate.iteration_seconds < current * (1.0 - self.replan_threshold):
                decision = candidate.SerializeToString()
        decision = wire.broadcast_object(decision)
        if decision is None:
            return False
        self.apply_plan(pb.Plan.FromString(decision))
        return True
