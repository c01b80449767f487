"""Stage 3: PromptSG (Yang et al., CVPR 2024) for hands.

config.py (the experiment schema, every open choice a key), templates.py (prompt template sets,
data/prompt_templates.yaml), model.py (inversion network, composed prompt, interaction module,
the loss terms), train.py (one phase on the shared loop).

Inference modes: "composed" (the image's own prompt, one text pass per image) and "fixed" (the
fixed prompt, encoded once). Without the inversion network only "fixed" exists; the baseline
variant and the variant without the interaction module have one mode, the projected image feature.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ...training.data import TrainData
from ...training.losses import check_loss_weights
from ..base import BuildContext, Method, TrainPlan
from . import train
from .config import PromptSGCfg
from .model import PromptSG, PromptSGBaseline, promptsg_terms
from .templates import check_template, load_template_set

__all__ = ["METHOD", "PromptSG", "PromptSGBaseline", "PromptSGCfg", "promptsg_terms"]


class PromptSGMethod(Method):
    name = "promptsg"
    stage = "stage3"
    title = "PromptSG"
    config_cls = PromptSGCfg
    loss_terms = ("id", "triplet", "supcon")
    p_key = "optim.p"

    def validate(self, cfg: PromptSGCfg, where: str) -> None:
        check_loss_weights(cfg.optim.loss_weights, self.loss_terms, f"{where}.optim.loss_weights")
        check_template(cfg.prompt.template, f"{where}.prompt.template")
        if cfg.prompt.ensemble is not None:
            load_template_set(cfg.prompt.ensemble)

    def build(self, cfg: PromptSGCfg, ctx: BuildContext, n_classes: int) -> nn.Module:
        ctx.clip.model.requires_grad_(False)  # the plan unfreezes what trains
        if not cfg.uses_prompt:
            return PromptSGBaseline(ctx.clip, n_classes)
        ensemble = load_template_set(cfg.prompt.ensemble) if cfg.prompt.ensemble else None
        return PromptSG(cfg, ctx.clip, n_classes, ensemble)

    def plan(self, cfg: PromptSGCfg, model: nn.Module, data: TrainData, ctx: BuildContext) -> TrainPlan:
        return train.plan(cfg, model, data, ctx)

    def embedders(self, cfg: PromptSGCfg, model: nn.Module) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        if not cfg.interacts:  # the baseline, or no interaction module: the projected feature only
            return {"": model.embed}
        with torch.no_grad():
            fixed = model.fixed_prompt(inference=True)  # encoded once for the whole evaluation

        def embed_fixed(x: torch.Tensor) -> torch.Tensor:
            return model.embed(x, fixed)

        modes = {"composed": model.embed} if cfg.composes else {}
        return {**modes, "fixed": embed_fixed}

    def model_state(self, cfg: PromptSGCfg, model: nn.Module):
        return train.model_state(cfg, model)


METHOD = PromptSGMethod()
