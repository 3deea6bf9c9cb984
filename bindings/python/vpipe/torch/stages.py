"""A plan applied to a model: one ``Stage`` module per plan stage, and ``PipelinedModel``,
the stages chained in one process.

A ``Stage`` holds the model's own submodules, parameters and buffers at their original
qualified names (``blocks.3.ln1.weight``, not a wrapper's name), so ``stage.state_dict()``
uses the model's keys and loads into the model, and the model's ``state_dict()`` loads into
the stage (keys of other stages are skipped). Its layers run as segments: each maximal run
of layers with one policy is one fx.GraphModule; a RECOMPUTE run runs under activation
checkpointing (vpipe.torch.recompute: buffers updated once), a SWAP run under
``save_on_cpu`` (meaningful on an accelerator only; a CPU device forbids SWAP).

Calling convention: stage 0 takes the model's own arguments; a later stage takes the
previous stage's outputs positionally (``input_names`` order) and the model inputs it uses
as keyword arguments (``side_inputs``). A stage returns one value or a tuple
(``output_names``); the last stage returns the model's output.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.fx as fx
from torch import nn

from .. import pb
from .errors import bad
from .planning import KEEP, RECOMPUTE, SWAP, policy_name
from .recompute import run_checkpointed
from .segments import Segment, build_segment, used_after
from .tracing import LeafSpec, TracedModel, bind_inputs


def check_plan_shape(plan: Any, layers: int, where: str) -> None:
    """The plan's stages cover the layers in order, one known policy per layer."""
    if not isinstance(plan, pb.Plan) and getattr(getattr(plan, "DESCRIPTOR", None), "full_name", "") != "vpipe.Plan":
        raise bad(where, f"plan must be a vpipe.pb.Plan, got {type(plan).__name__}")
    if not plan.stages:
        raise bad(where, "the plan has no stages")
    expected = 0
    for i, st in enumerate(plan.stages):
        if st.first_layer != expected or st.last_layer < st.first_layer or st.last_layer >= layers:
            raise bad(where, f"stage {i} covers layers {st.first_layer}..{st.last_layer}, expected a range "
                             f"starting at {expected} within the model's {layers} layers")
        count = st.last_layer - st.first_layer + 1
        if len(st.policy) != count:
            raise bad(where, f"stage {i} has {len(st.policy)} policies for {count} layers")
        for k, p in enumerate(st.policy):
            if p not in (KEEP, SWAP, RECOMPUTE):
                raise bad(where, f"layer {st.first_layer + k} (stage {i}) has policy {policy_name(p)}")
        expected = st.last_layer + 1
    if expected != layers:
        raise bad(where, f"the plan's stages end at layer {expected - 1}, the model has {layers} layers")


def _owner_and_leaf(root: nn.Module, target: str) -> Tuple[nn.Module, str]:
    *path, leaf = target.split(".")
    return (root.get_submodule(".".join(path)) if path else root), leaf


class Stage(nn.Module):
    """Layers ``first..last`` of a traced model with their memory policies (module docstring)."""

    def __init__(self, traced: TracedModel, index: int, first: int, last: int, policies: Sequence[int],
                 pin_memory: bool = False):
        super().__init__()
        self.index = index
        self.first_layer = first
        self.last_layer = last
        self.policies = list(policies)
        self.pin_memory = pin_memory
        self.is_first = first == 0
        self.is_last = last == len(traced.layers) - 1
        self.input_names = traced.stage_inputs(first)
        self.output_names = [] if self.is_last else list(traced.live_after[last])
        # model inputs this stage reads: placeholder node name -> forward argument name
        self._side = {ph: traced.placeholders[ph].meta["vpipe_input"] for ph in traced.side_inputs(first, last)}
        self.side_inputs = list(self._side.values())
        object.__setattr__(self, "_signature_model", traced.model)
        object.__setattr__(self, "_model_keys", frozenset(traced.model.state_dict().keys()))
        object.__setattr__(self, "_output_structure", traced.output_node.args[0] if self.is_last else None)
        # Segments: maximal runs of one policy.
        runs: List[Tuple[int, List[int]]] = []
        for layer, policy in zip(range(first, last + 1), self.policies):
            if runs and runs[-1][0] == policy:
                runs[-1][1].append(layer)
            else:
                runs.append((policy, [layer]))
        segments = []
        for k, (policy, layers) in enumerate(runs):
            later = [l for _, ls in runs[k + 1:] for l in ls]
            outputs = used_after(traced, layers, later, self.output_names, model_output=self.is_last)
            segments.append((policy, build_segment(traced, layers, outputs)))
        object.__setattr__(self, "segments", segments)  # not submodules: the stage owns the modules
        self._install(traced)

    # ------------------------------------------------------------ original names

    def _install(self, traced: TracedModel) -> None:
        root = traced.module
        # In graph order (so state_dict() lists keys as the model runs them), ancestors first.
        modules = sorted(dict.fromkeys(str(n.target) for _, seg in self.segments for n in seg.module.graph.nodes
                                       if n.op == "call_module"), key=lambda t: t.count("."))
        attrs = list(dict.fromkeys(str(n.target) for _, seg in self.segments for n in seg.module.graph.nodes
                                   if n.op == "get_attr"))
        installed: List[str] = []

        def covered(target: str) -> bool:
            return any(target == m or target.startswith(m + ".") for m in installed)

        def parent_for(target: str) -> Tuple[nn.Module, str]:
            *path, leaf = target.split(".")
            cur: nn.Module = self
            for p in path:
                if p not in cur._modules:
                    cur.add_module(p, nn.Module())
                cur = cur._modules[p]
            return cur, leaf

        for target in modules:
            if covered(target):
                continue
            parent, leaf = parent_for(target)
            parent.add_module(leaf, root.get_submodule(target))
            installed.append(target)
        for target in attrs:
            if covered(target):
                continue
            owner, leaf = _owner_and_leaf(traced.model, target)
            parent, _ = parent_for(target)
            if leaf in owner._parameters:
                parent.register_parameter(leaf, owner._parameters[leaf])
            elif leaf in owner._buffers:
                parent.register_buffer(leaf, owner._buffers[leaf], persistent=leaf not in owner._non_persistent_buffers_set)
            else:  # a plain tensor attribute (a constant): shared, not state
                setattr(parent, leaf, getattr(owner, leaf))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Loads the stage's own entries; the model's other keys (other stages') are skipped."""
        own = set(self.state_dict().keys())
        unknown = [k for k in state_dict if k not in own and k not in self._model_keys]
        if strict and unknown:
            raise bad("Stage.load_state_dict()", f"unexpected keys {unknown[:5]} (not parameters or buffers of "
                                                 f"{type(self._signature_model).__name__})")
        mine = {k: v for k, v in state_dict.items() if k in own}
        return super().load_state_dict(mine, strict=strict, assign=assign)

    # ------------------------------------------------------------ running

    def _bind(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if self.is_first:
            bound = bind_inputs(self._signature_model, args, kwargs, "Stage.forward()")
            env = {ph: bound[name] for ph, name in self._side.items()}
        else:
            if len(args) != len(self.input_names):
                raise bad("Stage.forward()", f"stage {self.index} takes {len(self.input_names)} values from the "
                                             f"previous stage ({', '.join(self.input_names)}), got {len(args)}")
            env = dict(zip(self.input_names, args))
            for ph, name in self._side.items():
                if name not in kwargs:
                    raise bad("Stage.forward()", f"stage {self.index} needs the model input '{name}' as a keyword argument")
                env[ph] = kwargs[name]
        return env

    def run_segments(self, env: Dict[str, Any]) -> Dict[str, Any]:
        grad = torch.is_grad_enabled()
        for policy, seg in self.segments:
            args = [env[n] for n in seg.inputs]
            if policy == RECOMPUTE and grad:
                buffers = [b for b in seg.module.buffers()]
                outs = run_checkpointed(seg.module, buffers, *args)
            elif policy == SWAP and grad:
                with torch.autograd.graph.save_on_cpu(pin_memory=self.pin_memory):
                    outs = seg.module(*args)
            else:
                outs = seg.module(*args)
            env.update(zip(seg.outputs, outs))
        return env

    def outputs_from(self, env: Dict[str, Any]) -> Any:
        if self.is_last:
            return fx.node.map_arg(self._output_structure, lambda n: env[n.name])
        out = tuple(env[n] for n in self.output_names)
        return out[0] if len(out) == 1 else out

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.outputs_from(self.run_segments(self._bind(args, kwargs)))

    def extra_repr(self) -> str:
        segs = ", ".join(f"{policy_name(p)}[{s.layers[0]}..{s.layers[-1]}]" for p, s in self.segments)
        return f"stage={self.index}, layers={self.first_layer}..{self.last_layer}, segments=({segs})"


def apply_plan(model: nn.Module, plan: pb.Plan, example_inputs: Any = None, pin_memory: bool = False,
               example_kwargs: Optional[Dict[str, Any]] = None, leaf_modules: Sequence[LeafSpec] = (),
               traced: Optional[TracedModel] = None) -> List[Stage]:
    """Cuts ``model`` into the plan's stages (one ``Stage`` each, pipeline order), applying
    each layer's policy. ``example_inputs`` (one micro-batch) is needed to trace a model that
    is not an ``nn.Sequential``; the layers are those ``profile`` measured for the same inputs.
    The stages share the model's modules and parameters: nothing is copied."""
    where = "apply_plan()"
    if traced is None:
        if not isinstance(model, nn.Module):
            raise bad(where, f"model must be a torch.nn.Module, got {type(model).__name__}")
        if example_inputs is None and example_kwargs is None and not isinstance(model, nn.Sequential):
            raise bad(where, f"{type(model).__name__} is not an nn.Sequential: give example_inputs (one micro-batch) "
                             "so it can be traced")
        traced = TracedModel(model, example_inputs, example_kwargs, leaf_modules, where=where)
    check_plan_shape(plan, len(traced.layers), where)
    return [Stage(traced, i, st.first_layer, st.last_layer, st.policy, pin_memory) for i, st in enumerate(plan.stages)]


class PipelinedModel(nn.Module):
    """The plan's stages chained in one process: a drop-in for the model.

    Holds the model's own top-level children, parameters and buffers, in the model's order,
    so ``state_dict()`` has exactly the model's keys, ``load_state_dict`` works both ways,
    and ``parameters()`` comes in the model's order (an optimizer's state_dict is
    interchangeable between the two). ``stages`` are the ``Stage`` modules.
    """

    def __init__(self, model: nn.Module, plan: pb.Plan, example_inputs: Any = None, pin_memory: bool = False,
                 example_kwargs: Optional[Dict[str, Any]] = None, leaf_modules: Sequence[LeafSpec] = ()):
        super().__init__()
        stages = apply_plan(model, plan, example_inputs, pin_memory, example_kwargs, leaf_modules)
        for name, p in model._parameters.items():
            self.register_parameter(name, p)
        for name, b in model._buffers.items():
            self.register_buffer(name, b, persistent=name not in model._non_persistent_buffers_set)
        for name, m in model._modules.items():
            self.add_module(name, m)
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "_model", model)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        bound = bind_inputs(self._model, args, kwargs, "PipelinedModel.forward()")
        out: Any = None
        for stage in self.stages:
            side = {name: bound[name] for name in stage.side_inputs}
            if stage.is_first:
                out = stage(*args, **kwargs)
            else:
                received = out if len(stage.input_names) != 1 else (out,)
                out = stage(*received, **side)
        return out
