"""Stage 2: CLIP-ReID (Li, Sun & Li, AAAI 2023) for hands.

config.py (the experiment schema), prompts.py (identity tokens), model.py (image model with
BNNeck heads, the loss terms), train.py (the two phases on the shared loop).
"""
from __future__ import annotations

from torch import nn

from ...training.data import TrainData
from ...training.losses import check_loss_weights
from ..base import BuildContext, Method, TrainPlan
from . import train
from .config import ClipReidCfg
from .model import ClipReid


class ClipReidMethod(Method):
    name = "clip_reid"
    stage = "stage2"
    title = "CLIP-ReID"
    config_cls = ClipReidCfg
    loss_terms = ("id", "triplet", "i2t", "center")
    p_key = "finetune.p"

    def validate(self, cfg: ClipReidCfg, where: str) -> None:
        check_loss_weights(cfg.finetune.loss_weights, self.loss_terms, f"{where}.finetune.loss_weights")

    def build(self, cfg: ClipReidCfg, ctx: BuildContext, n_classes: int) -> nn.Module:
        return ClipReid(cfg, ctx.clip, n_classes)

    def plan(self, cfg: ClipReidCfg, model: ClipReid, data: TrainData, ctx: BuildContext) -> TrainPlan:
        return train.plan(cfg, model, data, ctx)

    def model_state(self, cfg: ClipReidCfg, model: ClipReid):
        return train.model_state(cfg, model)


METHOD = ClipReidMethod()
