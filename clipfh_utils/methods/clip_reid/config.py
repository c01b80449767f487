"""The CLIP-ReID experiment config (Li, Sun & Li, AAAI 2023), adapted from persons to hands.

Defaults are the reference values for ViT-B/16 (configs/person/vit_clipreid.yml of
Syliz517/CLIP-ReID); configs/clip_reid/*.yaml set the RN50 values and say where ours deviate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ...config import check_increasing, setting
from ...training.augment import AugmentCfg
from ..base import ClipBackboneCfg, ExperimentCfg


@dataclass
class PromptCfg:
    """Stage 2a: learn identity tokens with both encoders frozen."""
    template: str = "A photo of a X X X X hand."
    n_ctx: int = setting(4, ge=1)
    epochs: int = setting(120, ge=0)
    batch_size: int = setting(64, ge=1)
    lr: float = setting(3.5e-4, gt=0)
    weight_decay: float = setting(1e-4, ge=0)
    warmup_epochs: int = setting(5, ge=0)
    warmup_lr: float = setting(1e-5, ge=0)
    min_lr: float = setting(1e-6, ge=0)


@dataclass
class FinetuneCfg:
    """Stage 2b: fine-tune the image encoder against frozen identity text features."""
    epochs: int = setting(60, ge=0)
    p: int = setting(16, ge=1)               # identities per batch
    k: int = setting(4, ge=2)                # images per identity (a triplet needs a positive)
    lr: float = setting(5e-6, gt=0)
    head_lr: Optional[float] = setting(None, gt=0)  # None -> lr
    bias_lr_factor: float = setting(2.0, gt=0)      # biases train at lr x this (BIAS_LR_FACTOR)
    weight_decay: float = setting(1e-4, ge=0)
    weight_decay_bias: float = setting(1e-4, ge=0)
    milestones: list[int] = setting([30, 50], ge=1)
    gamma: float = setting(0.1, gt=0)
    warmup_epochs: int = setting(10, ge=0)
    warmup_factor: float = setting(0.1, gt=0)
    loss_weights: dict[str, float] = setting({"id": 0.25, "triplet": 1.0, "i2t": 1.0, "center": 0.0})
    triplet_margin: float = setting(0.3, ge=0)
    label_smoothing: float = setting(0.1, ge=0, le=1)
    classifier: Literal["linear", "arcface"] = "linear"
    arcface_s: float = setting(30.0, gt=0)
    arcface_m: float = setting(0.5, ge=0)
    center_lr: float = setting(0.5, gt=0)
    train_text_encoder: bool = False
    text_lr: float = setting(1e-6, gt=0)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    monitor_every: int = setting(0, ge=0, identity=False)  # epochs; validation images of TRAINING ids

    def check(self, where: str) -> None:
        check_increasing(self.milestones, f"{where}.milestones")


@dataclass
class ClipReidCfg(ExperimentCfg):
    backbone: ClipBackboneCfg = field(default_factory=ClipBackboneCfg)
    prompt: PromptCfg = field(default_factory=PromptCfg)
    finetune: FinetuneCfg = field(default_factory=FinetuneCfg)
