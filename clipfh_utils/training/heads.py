"""ReID heads shared by every method: BNNeck and the identity classifiers (linear, ArcFace).

BNNeck (Luo et al. 2019, used by CLIP-ReID): a BatchNorm1d with a frozen bias between the
feature and a bias-free classifier; the triplet loss sees the feature before the BN, the ID loss
the classifier after it.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class ArcFace(nn.Module):
    """Additive angular margin classifier (s, m); plain scaled cosine when no labels are given."""

    def __init__(self, in_dim: int, n_classes: int, s: float = 30.0, m: float = 0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m = s, m

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.normalize(x.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).T
        if labels is None:
            return self.s * cos
        sin = (1 - cos.pow(2)).clamp(min=1e-7).sqrt()
        phi = cos * math.cos(self.m) - sin * math.sin(self.m)
        # past theta = pi - m, cos(theta + m) stops decreasing; fall back to a linear penalty
        phi = torch.where(cos > math.cos(math.pi - self.m), phi,
                          cos - math.sin(math.pi - self.m) * self.m)
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        return self.s * torch.where(onehot, phi, cos)


class LinearClassifier(nn.Linear):
    """Bias-free linear classifier, N(0, 0.001) init (CLIP-ReID); ignores labels."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__(in_dim, n_classes, bias=False)
        nn.init.normal_(self.weight, std=0.001)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


def bnneck(dim: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)  # BNNeck: frozen bias
    return bn


def classifier(kind: Literal["linear", "arcface"], dim: int, n_classes: int, s: float = 30.0,
               m: float = 0.5) -> nn.Module:
    return ArcFace(dim, n_classes, s, m) if kind == "arcface" else LinearClassifier(dim, n_classes)


class BNNeckHead(nn.Module):
    """feature -> BN (frozen bias) -> classifier logits."""

    def __init__(self, dim: int, n_classes: int, kind: Literal["linear", "arcface"] = "linear",
                 s: float = 30.0, m: float = 0.5):
        super().__init__()
        self.bn = bnneck(dim)
        self.classifier = classifier(kind, dim, n_classes, s, m)

    def forward(self, feature: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.bn(feature), labels)
