"""Per-epoch learning-rate factors (pure functions of the epoch, so resuming needs no state).

Every parameter group keeps its own configured base lr in `group["base_lr"]`; an epoch sets
`group["lr"] = group["base_lr"] * factor`. Nothing overrides one group's lr with another's.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import Sequence

import torch


def warmup_multistep(epoch: int, milestones: Sequence[int], gamma: float = 0.1,
                     warmup_epochs: int = 10, warmup_factor: float = 0.1) -> float:
    """CLIP-ReID Stage 2b: linear warm-up from warmup_factor, then x gamma at each milestone."""
    factor = 1.0
    if epoch < warmup_epochs:
        alpha = epoch / warmup_epochs
        factor = warmup_factor * (1 - alpha) + alpha
    return factor * gamma ** bisect_right(list(milestones), epoch)


def warmup_cosine(epoch: int, base_lr: float, epochs: int, warmup_epochs: int = 5,
                  warmup_lr: float = 1e-5, min_lr: float = 1e-6) -> float:
    """CLIP-ReID Stage 2a: linear warm-up from warmup_lr, then cosine to min_lr (absolute lr)."""
    if epoch < warmup_epochs:
        return warmup_lr + epoch * (base_lr - warmup_lr) / warmup_epochs
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> list[float]:
    """Scale each group's own base lr; returns the lrs set (for the log)."""
    lrs = []
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
        lrs.append(group["lr"])
    return lrs
