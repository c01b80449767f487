"""The BoT model: ResNet trunk -> global average pooling -> BNNeck -> bias-free classifier.

The triplet (and optional centre) loss sees the pooled feature before the BatchNorm, the ID loss
the classifier after it (Luo et al. 2019); retrieval uses the BN'd feature by default.
"""
from __future__ import annotations

import torch
from torch import nn

from ...training.heads import BNNeckHead
from ...training.losses import CenterLoss, id_loss, triplet_loss
from .backbone import CnnBackbone
from .config import CnnBaselineCfg


class BoT(nn.Module):
    def __init__(self, backbone: CnnBackbone, n_classes: int, neck_feat: str = "after", center: bool = False):
        super().__init__()
        self.backbone = backbone.model
        self.head = BNNeckHead(backbone.feature_dim, max(n_classes, 1))
        self.center = CenterLoss(max(n_classes, 1), backbone.feature_dim) if center else None
        self.neck_feat = neck_feat
        self.to(next(self.backbone.parameters()).device)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled feature before the BNNeck, classifier logits)."""
        f = self.backbone(x)
        return f, self.head(f, labels)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        return self.head.bn(f) if self.neck_feat == "after" else f


def bot_terms(feat: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, cfg: CnnBaselineCfg,
              center: CenterLoss | None) -> dict[str, torch.Tensor]:
    """The recipe's loss terms, unweighted: label-smoothed ID, batch-hard triplet, optional centre."""
    t = cfg.train
    terms = {"id": id_loss(logits, labels, t.label_smoothing),
             "triplet": triplet_loss(feat, labels, t.triplet_margin)}
    if center is not None:
        terms["center"] = center(feat, labels)
    return terms
