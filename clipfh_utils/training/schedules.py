"""Per-epoch learning-rate factors, as the reference code steps them (pure functions of the epoch).

Epochs are numbered 1..E, the way CLIP-ReID steps its schedulers (`scheduler.step()` before each
epoch): the first fine-tuning epoch runs at 0.19x the base rate with a 10-epoch warm-up from 0.1,
not at 0.1x, and the prompt stage's first epoch at 7.8e-5, not at the warm-up start 1e-5.
Every parameter group keeps its own configured base lr in `group["base_lr"]`; an epoch sets
`group["lr"] = group["base_lr"] * factor` (`set_lr`, the one place that multiplies). Nothing
overrides one group's lr with another's.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import Sequence

import torch


def warmup_multistep(epoch: int, milestones: Sequence[int], gamma: float = 0.1,
                     warmup_epochs: int = 10, warmup_factor: float = 0.1) -> float:
    """Factor at 1-based `epoch`: linear warm-up from warmup_factor, x gamma from each milestone on.

    CLIP-ReID's WarmupMultiStepLR with last_epoch = epoch.
    """
    factor = 1.0
    if epoch < warmup_epochs:
        alpha = epoch / warmup_epochs
        factor = warmup_factor * (1 - alpha) + alpha
    return factor * gamma ** bisect_right(list(milestones), epoch)


def step_decay(epoch: int, step_size: int, gamma: float = 0.1, warmup_epochs: int = 0,
               warmup_factor: float = 0.1) -> float:
    """Factor at 1-based `epoch`: x gamma after every `step_size` epochs (PromptSG's "x0.1 every
    20 epochs", PyTorch's StepLR: epochs 1..step_size at the base rate, the next step_size at
    gamma, ...), with `warmup_multistep`'s optional linear warm-up.
    """
    return warmup_multistep(epoch, range(step_size + 1, epoch + 1, step_size), gamma,
                            warmup_epochs, warmup_factor)


def warmup_cosine(epoch: int, epochs: int, warmup_epochs: int = 5, warmup_factor: float = 1e-5 / 3.5e-4,
                  min_factor: float = 1e-6 / 3.5e-4) -> float:
    """Factor at 1-based `epoch`: linear warm-up from warmup_factor, then cosine to min_factor
    (CLIP-ReID's warmup_lr and min_lr are these factors times its base lr, 3.5e-4).

    timm's CosineLRScheduler as CLIP-ReID configures it (t_initial = epochs, one cycle, no
    warm-up prefix): the cosine runs over the whole epoch count, warm-up included.
    """
    if epoch < warmup_epochs:
        return warmup_factor + epoch * (1 - warmup_factor) / warmup_epochs
    if epoch >= epochs:
        return min_factor
    return min_factor + 0.5 * (1 - min_factor) * (1 + math.cos(math.pi * epoch / epochs))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> list[float]:
    """Scale each group's own base lr; returns the lrs set (for the log)."""
    lrs = []
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
        lrs.append(group["lr"])
    return lrs
