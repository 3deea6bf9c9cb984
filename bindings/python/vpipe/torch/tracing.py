"""Tracing any ``nn.Module`` with torch.fx and linearising its graph into the chain of layers
the planner cuts.

The graph is a DAG; the planner plans a chain. The linearisation (the same definition as the
PipeDream import of docs/pipedream-import.md: side inputs dropped, nodes in topological order,
a cut is a boundary in that order):

1. The model's inputs (fx placeholders) are side inputs: every stage receives the ones it
   uses directly (each rank is given the batch), so they never count as crossing a cut.
   Parameters and buffers read with ``get_attr`` belong to no layer: a stage reads its own.
2. The other nodes keep fx's topological order (the order the forward runs them). Each
   ``call_module`` node of a leaf module starts a layer; the functions and methods after it
   (residual adds, reshapes, activations written as functions) join it, and the nodes before
   the first module join the first layer.
3. The *live set* after layer ``i`` is every value computed in layers ``0..i`` and used by a
   later layer or by the model's output. Cutting there is always a valid split of the graph
   (a prefix of a topological order is closed under predecessors), and the live set is
   exactly what the next stage receives. A cut whose live set holds a value that is not a
   tensor or a (nested) tuple/list/dict of tensors (an ``int`` from ``x.size(0)``, ``None``)
   is not offered: its two layers are merged. ``output_bytes`` of layer ``i`` is the bytes of
   its live set, so the cost model's transfer is what the pipeline really sends.

Leaf modules: fx's own (the ``torch.nn`` layers), every child of an ``nn.Sequential``,
``nn.ModuleList`` or ``nn.ModuleDict`` (the blocks of a model, and the layers of a plain
``nn.Sequential`` model, as before), and whatever ``leaf_modules`` names (types or qualified
names): a leaf is traced as one call and may contain control flow fx cannot trace.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.fx as fx
from torch import nn
from torch.utils._pytree import tree_flatten

from .errors import bad

LeafSpec = Union[str, type]


@dataclass
class Layer:
    """One element of the chain: a run of graph nodes in topological order."""

    index: int
    name: str
    nodes: List[fx.Node]
    modules: List[str] = field(default_factory=list)  # qualified names of the leaf modules it calls


def _tensor_leaves_only(value: Any) -> bool:
    leaves, _ = tree_flatten(value)
    return bool(leaves) and all(isinstance(t, torch.Tensor) for t in leaves)


def value_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor or a nested tuple/list/dict of them)."""
    leaves, _ = tree_flatten(value)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


class _Tracer(fx.Tracer):
    def __init__(self, leaf_names: Set[str], leaf_types: Tuple[type, ...], blocks: Set[str]):
        super().__init__()
        self.leaf_names = leaf_names
        self.leaf_types = leaf_types
        self.blocks = blocks
        self.stack: List[str] = []  # qualified names being traced, for error messages
        self.failed_in: Optional[str] = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_names or qualname in self.blocks:
            return True
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module where tracing failed
                self.failed_in = self.stack[-1]
            raise
        finally:
            self.stack.pop()


def _block_names(model: nn.Module) -> Set[str]:
    """Qualified names of the children of every Sequential/ModuleList/ModuleDict in ``model``."""
    out: Set[str] = set()
    for name, m in model.named_modules():
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            for child, _ in m.named_children():
                out.add(f"{name}.{child}" if name else child)
    return out


def bind_inputs(model: nn.Module, example_inputs: Any, example_kwargs: Optional[Dict[str, Any]], where: str) -> Dict[str, Any]:
    """The forward's arguments by name, defaults applied: ``example_inputs`` is a tensor or a
    tuple/list of positional arguments, ``example_kwargs`` the keyword arguments."""
    if isinstance(example_inputs, torch.Tensor):
        args: Tuple[Any, ...] = (example_inputs,)
    elif isinstance(example_inputs, (tuple, list)):
        args = tuple(example_inputs)
    elif example_inputs is None:
        args = ()
    else:
        raise bad(where, f"example_inputs must be a tensor or a tuple of the forward's positional arguments, "
                         f"got {type(example_inputs).__name__}")
    kwargs = dict(example_kwargs or {})
    signature = inspect.signature(model.forward)
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise bad(where, f"{type(model).__name__}.forward takes *{p.name}; vpipe.torch traces forwards "
                             "with named parameters only (wrap the model in a module whose forward names them)")
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as e:
        raise bad(where, f"the example inputs do not match {type(model).__name__}.forward{signature}: {e}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def _check_measurable(inputs: Dict[str, Any], model: nn.Module, where: str) -> None:
    for name, value in inputs.items():
        leaves, _ = tree_flatten(value)
        for t in leaves:
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                raise bad(where, f"input '{name}' is on the meta device: vpipe.torch runs the model to measure and "
                                 "split it; give real tensors (cpu or cuda) of one micro-batch")
    for pname, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.device.type == "meta":
            raise bad(where, f"parameter or buffer '{pname}' is on the meta device: materialise the model "
                             "(model.to_empty(device=...) and initialise it) before profiling or planning it")


class TracedModel:
    """A model traced by torch.fx and linearised into ``layers`` (see the module docstring).

    ``values`` holds every node's value from one forward of the example inputs under
    ``no_grad`` (one micro-batch): the shapes each cut carries and the inputs each layer's
    measurement starts from.
    """

    def __init__(self, model: nn.Module, example_inputs: Any = None, example_kwargs: Optional[Dict[str, Any]] = None,
                 leaf_modules: Iterable[LeafSpec] = (), where: str = "trace()"):
        if not isinstance(model, nn.Module):
            raise bad(where, f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, nn.Sequential) and len(model) == 0:
            raise bad(where, "the model has no layers (an empty nn.Sequential)")
        self.model = model
        # An nn.Sequential can be split without example inputs (nothing is measured then).
        self.symbolic = example_inputs is None and not example_kwargs and isinstance(model, nn.Sequential)
        if self.symbolic:
            self.inputs: Dict[str, Any] = {"input": torch.empty(0)}
        else:
            self.inputs = bind_inputs(model, example_inputs, example_kwargs, where)
            _check_measurable(self.inputs, model, where)
        leaf_names = {x for x in leaf_modules if isinstance(x, str)}
        leaf_types = tuple(x for x in leaf_modules if isinstance(x, type))
        known = dict(model.named_modules())
        for n in leaf_names:
            if n not in known:
                raise bad(where, f"leaf_modules names '{n}', which is not a submodule of {type(model).__name__}")
        # Tensors are traced; anything else (flags, None) is specialised to its example value.
        concrete = {k: v for k, v in self.inputs.items() if not _tensor_leaves_only(v)}
        tracer = _Tracer(leaf_names, leaf_types, _block_names(model))
        try:
            graph = tracer.trace(model, concrete_args=concrete or None)
        except Exception as e:  # fx raises many kinds (TraceError, TypeError, ...)
            inside = f" inside module '{tracer.failed_in}'" if tracer.failed_in else ""
            hint = (f"; pass leaf_modules=['{tracer.failed_in}'] to run it as one layer" if inside
                    else "; pass leaf_modules=[...] naming the submodule with data-dependent control flow")
            raise bad(where, f"torch.fx could not trace {type(model).__name__}{inside}: {type(e).__name__}: {e}{hint}") from e
        self._drop_specialised_inputs(graph, list(self.inputs), set(concrete))
        self.graph = graph
        self.module = fx.GraphModule(model, graph)  # shares every submodule with ``model``
        self.tensor_inputs = [k for k in self.inputs if k not in concrete]
        self.placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
        self.values = {} if self.symbolic else self._run()
        self.layers = self._linearise(where)
        self.live_after = self._live_sets()

    # ------------------------------------------------------------ graph clean-up

    @staticmethod
    def _drop_specialised_inputs(graph: fx.Graph, names: List[str], concrete: Set[str]) -> None:
        """fx keeps a placeholder and an assert for each specialised (concrete) argument;
        the pipeline binds its inputs by name, so those nodes go."""
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        for name, node in zip(names, placeholders):
            node.meta["vpipe_input"] = name
            if name not in concrete:
                continue
            for user in list(node.users):
                chain = [user] + list(user.users)
                for u in reversed(chain):
                    if not u.users:
                        graph.erase_node(u)
            if not node.users:
                graph.erase_node(node)
        graph.lint()

    # ------------------------------------------------------------ example values

    def _run(self) -> Dict[str, Any]:
        values: Dict[str, Any] = {}
        module = self.module

        class Recorder(fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                values[n.name] = out
                return out

        args = [self.inputs[n.meta["vpipe_input"]] for n in self.graph.nodes if n.op == "placeholder"]
        buffers = {k: b.detach().clone() for k, b in self.model.named_buffers()}
        try:
            with torch.no_grad():
                Recorder(module).run(*args)
        finally:  # a traced forward must not move BatchNorm statistics
            with torch.no_grad():
                for k, b in self.model.named_buffers():
                    if k in buffers:
                        b.copy_(buffers[k])
        return values

    # ------------------------------------------------------------ linearisation

    def _linearise(self, where: str) -> List[Layer]:
        groups: List[List[fx.Node]] = []
        current: List[fx.Node] = []
        seen_module = False
        for n in self.graph.nodes:
            if n.op in ("placeholder", "output", "get_attr"):
                continue
            if n.op == "call_module" and seen_module:
                groups.append(current)
                current = []
            if n.op == "call_module":
                seen_module = True
            current.append(n)
        if current:
            groups.append(current)
        if not groups:
            raise bad(where, f"{type(self.model).__name__}'s forward computes nothing (no operations were traced)")
        # Merge across cuts that would carry a value the pipeline cannot send.
        merged: List[List[fx.Node]] = [groups[0]]
        for g in groups[1:]:
            if self._cut_is_sendable([n for grp in merged for n in grp], g):
                merged.append(g)
            else:
                merged[-1] = merged[-1] + g
        layers = []
        for i, nodes in enumerate(merged):
            modules = [str(n.target) for n in nodes if n.op == "call_module"]
            if modules:
                first = modules[0]
                name = first if not first.replace(".", "").isdigit() else \
                    f"{first}:{type(self.module.get_submodule(first)).__name__}"
            else:
                name = nodes[0].name
            layers.append(Layer(i, name, nodes, modules))
        return layers

    def _cut_is_sendable(self, before: List[fx.Node], after_first: List[fx.Node]) -> bool:
        done = set(before)
        for n in before:
            for u in n.users:
                if u not in done and not self.symbolic and not _tensor_leaves_only(self.values.get(n.name)):
                    return False
        return True

    def _live_sets(self) -> List[List[str]]:
        position: Dict[fx.Node, int] = {}
        for layer in self.layers:
            for n in layer.nodes:
                position[n] = layer.index
        end = len(self.layers)
        live: List[List[str]] = [[] for _ in self.layers]
        for layer in self.layers:
            for n in layer.nodes:
                last_use = max((end if u.op == "output" else position.get(u, layer.index) for u in n.users),
                               default=layer.index)
                for c in range(layer.index, min(last_use, end - 1)):
                    live[c].append(n.name)
        return live

    # ------------------------------------------------------------ queries

    @property
    def output_node(self) -> fx.Node:
        return next(n for n in reversed(self.graph.nodes) if n.op == "output")

    def output_bytes(self, i: int) -> int:
        """Bytes crossing the cut after layer ``i``; for the last layer, the model's output."""
        if i == len(self.layers) - 1:
            return value_bytes(self.values_of_output())
        return sum(value_bytes(self.values[name]) for name in self.live_after[i])

    def values_of_output(self) -> Any:
        return fx.node.map_arg(self.output_node.args[0], lambda n: self.values[n.name])

    def input_bytes(self) -> int:
        return sum(value_bytes(self.inputs[k]) for k in self.tensor_inputs)

    def stage_inputs(self, first: int) -> List[str]:
        """Node names a stage starting at layer ``first`` receives from the previous stage."""
        return [] if first == 0 else list(self.live_after[first - 1])

    def side_inputs(self, first: int, last: int) -> List[str]:
        """Placeholders (model inputs) that layers ``first..last`` use directly."""
        nodes = {n for layer in self.layers[first:last + 1] for n in layer.nodes}
        used = []
        for name, ph in self.placeholders.items():
            if any(u in nodes for u in ph.users):
                used.append(name)
        return used

    def parameters_of(self, first: int, last: int) -> Dict[str, nn.Parameter]:
        """The parameters layers ``first..last`` use, by their name in the model."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        out: Dict[str, nn.Parameter] = {}
        for layer in self.layers[first:last + 1]:
            for n in layer.nodes:
                if n.op == "call_module":
                    for p in self.module.get_submodule(str(n.target)).parameters():
                        out[names[id(p)]] = p
                for a in n.all_input_nodes:
                    if a.op == "get_attr":
                        obj = _get_attr(self.module, str(a.target))
                        if isinstance(obj, nn.Parameter):
                            out[names[id(obj)]] = obj
        return out

    def shared_parameters(self) -> Dict[str, List[int]]:
        """Parameters used by more than one layer (tied weights): name -> the layers using them."""
        users: Dict[str, List[int]] = {}
        for layer in self.layers:
            for name in self.parameters_of(layer.index, layer.index):
                users.setdefault(name, []).append(layer.index)
        return {k: v for k, v in users.items() if len(v) > 1}

    def module_using(self, param_name: str, layer: int) -> str:
        """A readable name of what in ``layer`` uses ``param_name`` (for error messages)."""
        p = dict(self.model.named_parameters())[param_name]
        for n in self.layers[layer].nodes:
            if n.op == "call_module" and any(q is p for q in self.module.get_submodule(str(n.target)).parameters()):
                return str(n.target)
            for a in n.all_input_nodes:
                if a.op == "get_attr" and _get_attr(self.module, str(a.target)) is p:
                    return f"{n.name} (reads {a.target})"
        return self.layers[layer].name


def _get_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def trace(model: nn.Module, example_inputs: Any = None, example_kwargs: Optional[Dict[str, Any]] = None,
          leaf_modules: Sequence[LeafSpec] = ()) -> TracedModel:
    """Traces ``model`` on one micro-batch of example inputs and linearises it (module docstring)."""
    return TracedModel(model, example_inputs, example_kwargs, leaf_modules)
