"""The Stage 2 image model: CLIP image encoder + BNNeck + identity classifiers.

Three features per image, as in CLIP-ReID:
- ViT: CLS after the second-to-last block, CLS after the last block + ln_post, projected CLS.
- RN50: pooled layer3, pooled layer4, attnpool output (the projected feature).
The triplet loss sees all three pre-BN features; the classifiers see the BN'd final and
projected features; inference uses concat(pre-BN final, pre-BN projected), L2-normalised.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .models import ClipModel


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


def _bnneck(dim: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)  # BNNeck: frozen bias
    return bn


@dataclass
class ReIDOutput:
    feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (mid, final, proj), pre-BN
    logits: tuple[torch.Tensor, torch.Tensor]                # (final, proj) classifiers

    @property
    def proj(self) -> torch.Tensor:
        return self.feats[2]


class ReIDModel(nn.Module):
    def __init__(self, clip: ClipModel, n_classes: int, classifier: str = "linear",
                 arcface_s: float = 30.0, arcface_m: float = 0.5):
        super().__init__()
        self.visual = clip.model.visual
        self.kind = clip.kind
        with torch.no_grad():
            x = torch.zeros(1, 3, *clip.image_size, device=next(self.visual.parameters()).device)
            was_training = self.visual.training
            self.visual.eval()
            mid, final, proj = self.backbone_features(x)
            self.visual.train(was_training)
        self.dims = (mid.shape[1], final.shape[1], proj.shape[1])
        self.bn = _bnneck(self.dims[1])
        self.bn_proj = _bnneck(self.dims[2])
        head = (lambda d: ArcFace(d, n_classes, arcface_s, arcface_m)) if classifier == "arcface" \
            else (lambda d: LinearClassifier(d, n_classes))
        self.classifier = head(self.dims[1])
        self.classifier_proj = head(self.dims[2])
        self.to(x.device)

    @property
    def embed_dim(self) -> int:
        return self.dims[1] + self.dims[2]

    def backbone_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = self.visual
        if self.kind == "vit":
            x = v.conv1(x)
            x = x.flatten(2).transpose(1, 2)
            cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
            x = v.ln_pre(v.patch_dropout(x))
            blocks = v.transformer.resblocks
            for blk in blocks[:-1]:
                x = blk(x)
            mid = x[:, 0]
            x = v.ln_post(blocks[-1](x))
            final = x[:, 0]
            return mid, final, final @ v.proj
        x = v.stem(x)
        x = v.layer3(v.layer2(v.layer1(x)))
        mid = x.mean((2, 3))
        x = v.layer4(x)
        return mid, x.mean((2, 3)), v.attnpool(x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> ReIDOutput:
        mid, final, proj = self.backbone_features(x)
        logits = (self.classifier(self.bn(final), labels),
                  self.classifier_proj(self.bn_proj(proj), labels))
        return ReIDOutput((mid, final, proj), logits)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Inference feature: concat(pre-BN final, pre-BN projected); the caller L2-normalises."""
        _, final, proj = self.backbone_features(x)
        return torch.cat([final, proj], dim=1)
