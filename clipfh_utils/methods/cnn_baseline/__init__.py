"""RQ6's like-for-like CNN baseline: a torchvision ResNet trained with the ReID "bag of tricks"
(Luo et al. 2019): last stride 1, BNNeck, label-smoothed ID + batch-hard triplet, warm-up, random
erasing, centre loss optional (off). Same splits, seeds, augmentation, loop and evaluator as the
CLIP stages; it brings its own backbone (`load_backbone`), not a CLIP model.

backbone.py (torchvision ResNets offline, last stride), config.py, model.py (BoT + loss terms),
train.py (one phase on the shared loop).
"""
from __future__ import annotations

import torch
from torch import nn

from ...config import ConfigError
from ...provenance import file_sha256
from ...training.data import TrainData
from ...training.losses import check_loss_weights
from ..base import BuildContext, Method, TrainPlan
from . import train
from .backbone import ARCHS, TINY, CnnBackbone, load_resnet, weights_path
from .config import CnnBaselineCfg
from .model import BoT


class CnnBaseline(Method):
    name = "cnn_baseline"
    stage = "baseline"
    title = "ResNet BoT (Luo et al. 2019)"
    config_cls = CnnBaselineCfg
    loss_terms = ("id", "triplet", "center")
    p_key = "train.p"

    def validate(self, cfg: CnnBaselineCfg, where: str) -> None:
        check_loss_weights(cfg.train.loss_weights, self.loss_terms, f"{where}.train.loss_weights")
        if cfg.backbone.quick_gelu != "auto":
            raise ConfigError(f"{where}.backbone.quick_gelu: a CLIP setting; a CNN backbone has none, remove it")

    def load_backbone(self, cfg: CnnBaselineCfg, device: torch.device) -> CnnBackbone:
        b = cfg.backbone
        return load_resnet(b.name, b.weights, device, cfg.image_size, last_stride=b.last_stride)

    def input_problem(self, cfg: CnnBaselineCfg) -> tuple[str, str] | None:
        name = cfg.backbone.name
        if name not in ARCHS and name != TINY:
            return "backbone.name", f"unknown CNN backbone '{name}' (known: {', '.join([*ARCHS, TINY])})"
        return None  # a ResNet with a global pool takes any input size

    def weights_sha256(self, cfg: CnnBaselineCfg) -> str | None:
        path = weights_path(cfg.backbone.name, cfg.backbone.weights)
        return file_sha256(path) if path is not None else None

    def build(self, cfg: CnnBaselineCfg, ctx: BuildContext, n_classes: int) -> nn.Module:
        return BoT(ctx.clip, n_classes, cfg.neck_feat, center=cfg.train.loss_weights.get("center", 0) > 0)

    def plan(self, cfg: CnnBaselineCfg, model: BoT, data: TrainData, ctx: BuildContext) -> TrainPlan:
        return train.plan(cfg, model, data, ctx)


METHOD = CnnBaseline()
