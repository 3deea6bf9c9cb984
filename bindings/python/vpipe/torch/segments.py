"""A runnable piece of a traced graph: the nodes of a run of layers as an fx.GraphModule.

A segment takes the values it needs from outside (earlier layers' outputs and model inputs,
in ``inputs`` order) and returns the values later code needs (``outputs`` order) as a tuple.
Parameters and buffers it reads are the model's own objects (``GraphModule`` installs the
same submodules at the same qualified names), so nothing is copied and a segment trains the
model's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch.fx as fx

from .tracing import TracedModel


@dataclass
class Segment:
    module: fx.GraphModule
    inputs: List[str]   # node names, in the order the module takes them
    outputs: List[str]  # node names, in the order the module returns them (a tuple)
    layers: List[int]


def build_segment(traced: TracedModel, layers: Sequence[int], outputs: Sequence[str]) -> Segment:
    nodes = [n for i in layers for n in traced.layers[i].nodes]
    inside = set(nodes)
    inputs: List[fx.Node] = []
    attrs: List[fx.Node] = []
    for n in nodes:
        for a in n.all_input_nodes:
            if a in inside:
                continue
            if a.op == "get_attr":
                if a not in attrs:
                    attrs.append(a)
            elif a not in inputs:
                inputs.append(a)
    graph = fx.Graph()
    env = {}
    for a in inputs:
        env[a] = graph.placeholder(a.name)
    for a in attrs:
        env[a] = graph.get_attr(str(a.target))
    for n in nodes:
        env[n] = graph.node_copy(n, lambda x: env[x])
    by_name = {n.name: n for n in list(inside) + inputs}
    graph.output(tuple(env[by_name[o]] for o in outputs))
    return Segment(fx.GraphModule(traced.module, graph), [a.name for a in inputs], list(outputs), list(layers))


def used_after(traced: TracedModel, layers: Sequence[int], later: Sequence[int], stage_outputs: Sequence[str],
               model_output: bool) -> List[str]:
    """Values computed in ``layers`` that ``later`` layers, the stage's outputs or (for the
    last stage) the model's output use, in topological order."""
    later_nodes = {n for i in later for n in traced.layers[i].nodes}
    wanted = set(stage_outputs)
    if model_output:
        wanted |= {n.name for n in traced.output_node.all_input_nodes}
    out = []
    for i in layers:
        for n in traced.layers[i].nodes:
            if n.name in wanted or any(u in later_nodes for u in n.users):
                out.append(n.name)
    return out
