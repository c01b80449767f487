"""Optimiser parameter groups the way the ReID reference code builds them (CLIP-ReID and the BoT
baseline share `make_optimizer`): one group per kind of module and per weights/biases."""
from __future__ import annotations

from typing import Sequence

from torch import nn

# (group name, modules, base lr, weight decay)
Kind = tuple[str, Sequence[nn.Module], float, float]


def param_groups(kinds: Sequence[Kind], bias_lr_factor: float = 1.0, weight_decay_bias: float = 0.0) -> list[dict]:
    """A parameter whose name contains "bias" trains at lr x bias_lr_factor with weight_decay_bias;
    frozen parameters (BNNeck biases) are left out; every group carries its own base lr."""
    groups = []
    for name, modules, lr, wd in kinds:
        named = [(n, p) for m in modules for n, p in m.named_parameters() if p.requires_grad]
        weights = [p for n, p in named if "bias" not in n]
        biases = [p for n, p in named if "bias" in n]
        for suffix, params, glr, gwd in (("", weights, lr, wd), ("_bias", biases, lr * bias_lr_factor,
                                                                   weight_decay_bias)):
            if params:
                groups.append({"name": name + suffix, "params": params, "base_lr": glr, "lr": glr,
                               "weight_decay": gwd})
    return groups
