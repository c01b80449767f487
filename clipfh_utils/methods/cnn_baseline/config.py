"""The CNN baseline's experiment config: the "bag of tricks" recipe (Luo et al. 2019, the
reid-strong-baseline code) for a torchvision ResNet, adapted to hands like every other stage.

Defaults are the recipe's person values; configs/cnn_baseline/*.yaml say where ours deviate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config import BackboneCfg, check_increasing, setting
from ...training.augment import AugmentCfg
from ..base import ExperimentCfg


@dataclass
class BotTrainCfg:
    epochs: int = setting(120, ge=0)
    p: int = setting(16, ge=1)               # identities per batch
    k: int = setting(4, ge=2)                # images per identity (a triplet needs a positive)
    lr: float = setting(3.5e-4, gt=0)        # Adam
    bias_lr_factor: float = setting(1.0, gt=0)
    weight_decay: float = setting(5e-4, ge=0)
    weight_decay_bias: float = setting(5e-4, ge=0)
    milestones: list[int] = setting([40, 70], ge=1)
    gamma: float = setting(0.1, gt=0)
    warmup_epochs: int = setting(10, ge=0)
    warmup_factor: float = setting(0.01, gt=0)  # linear warm-up from 0.01 x lr
    loss_weights: dict[str, float] = setting({"id": 1.0, "triplet": 1.0, "center": 0.0})
    label_smoothing: float = setting(0.1, ge=0, le=1)
    triplet_margin: float = setting(0.3, ge=0)
    center_lr: float = setting(0.5, gt=0)    # the centres' own lr (the recipe: SGD 0.5, weight 5e-4)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    monitor_every: int = setting(0, ge=0, identity=False)  # epochs; validation images of TRAINING ids

    def check(self, where: str) -> None:
        check_increasing(self.milestones, f"{where}.milestones")


@dataclass
class CnnBaselineCfg(ExperimentCfg):
    backbone: BackboneCfg = field(default_factory=lambda: BackboneCfg("resnet50", "IMAGENET1K_V1", last_stride=1))
    # the retrieval feature: "after" the BNNeck's BatchNorm (the recipe's TEST.NECK_FEAT) or "before"
    neck_feat: Literal["after", "before"] = setting("after", identity=False)
    train: BotTrainCfg = field(default_factory=BotTrainCfg)
