"""Optimizer state by parameter name, so it survives re-partitioning.

``torch.optim.Optimizer.state_dict()`` keys its per-parameter state by position in the
optimizer's parameter list, which differs between the model, a stage and a re-partitioned
stage. These two functions key it by the parameter's name in the model
(``model.named_parameters()``), the names every ``Stage`` and ``PipelinedModel`` keep.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Mapping

import torch
from torch import nn

from .errors import bad


def optimizer_state_by_name(optimizer: torch.optim.Optimizer, module: nn.Module) -> Dict[str, Any]:
    """``{"state": {name: per-parameter state}, "param_groups": [{..., "params": [names]}]}``
    for the parameters of ``module`` that ``optimizer`` holds (a copy, not the live tensors)."""
    names = {id(p): n for n, p in module.named_parameters()}
    sd = optimizer.state_dict()
    index_to_name: Dict[int, str] = {}
    position = 0
    groups = []
    for group, sd_group in zip(optimizer.param_groups, sd["param_groups"]):
        gnames = []
        for p, idx in zip(group["params"], sd_group["params"]):
            if id(p) in names:
                index_to_name[idx] = names[id(p)]
                gnames.append(names[id(p)])
            position += 1
        g = {k: v for k, v in sd_group.items() if k != "params"}
        g["params"] = gnames
        groups.append(g)
    # A copy: the optimizer's own state_dict() aliases its live tensors, which the next step changes.
    state = {index_to_name[i]: copy.deepcopy(s) for i, s in sd["state"].items() if i in index_to_name}
    return {"state": state, "param_groups": groups}


def load_optimizer_state_by_name(optimizer: torch.optim.Optimizer, module: nn.Module,
                                 state: Mapping[str, Any]) -> None:
    """Loads what ``optimizer_state_by_name`` returned into ``optimizer`` over ``module``'s
    parameters; names it does not hold (other stages') are skipped. Hyper-parameters come
    from the first saved group."""
    if not isinstance(state, Mapping) or "state" not in state or "param_groups" not in state:
        raise bad("load_optimizer_state_by_name()", "state must be what optimizer_state_by_name() returned")
    names = {id(p): n for n, p in module.named_parameters()}
    current = optimizer.state_dict()
    new_state: Dict[int, Any] = {}
    for group, sd_group in zip(optimizer.param_groups, current["param_groups"]):
        for p, idx in zip(group["params"], sd_group["params"]):
            name = names.get(id(p))
            if name is not None and name in state["state"]:
                new_state[idx] = copy.deepcopy(state["state"][name])
    groups = []
    saved_groups = list(state["param_groups"])
    for k, sd_group in enumerate(current["param_groups"]):
        g = dict(sd_group)
        if saved_groups:
            src = saved_groups[min(k, len(saved_groups) - 1)]
            g.update({key: v for key, v in src.items() if key != "params"})
        groups.append(g)
    optimizer.load_state_dict({"state": new_state, "param_groups": groups})
