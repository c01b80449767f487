"""The CLIP-ReID model: image encoder + BNNeck heads, identity prompts, the text tower.

Three image features, as in CLIP-ReID (through the backbone adapter):
- ViT: CLS after the second-to-last block, CLS after the last block + ln_post, projected CLS.
- ResNet: pooled layer3, pooled layer4, attnpool output (the projected feature).
The triplet loss sees all three pre-BN features; the classifiers see the BN'd final and
projected features; inference uses concat(pre-BN final, pre-BN projected), L2-normalised.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...backbones.adapters import VisionAdapter
from ...backbones.loading import ClipModel
from ...backbones.text import TextEncoder
from ...training.heads import BNNeckHead
from ...training.losses import CenterLoss, id_loss, image_to_text_loss, triplet_loss
from .config import ClipReidCfg
from .prompts import PromptLearner


@dataclass
class ReIDOutput:
    feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (mid, final, proj), pre-BN
    logits: tuple[torch.Tensor, torch.Tensor]                # (final, proj) classifiers

    @property
    def proj(self) -> torch.Tensor:
        return self.feats[2]


class ReIDImageModel(nn.Module):
    """Backbone adapter + a BNNeck head on the final and on the projected feature."""

    def __init__(self, clip: ClipModel, n_classes: int, classifier: str = "linear",
                 arcface_s: float = 30.0, arcface_m: float = 0.5):
        super().__init__()
        self.backbone = VisionAdapter(clip)
        _, d_final, d_proj = self.dims = self.backbone.dims
        self.head = BNNeckHead(d_final, n_classes, classifier, arcface_s, arcface_m)
        self.head_proj = BNNeckHead(d_proj, n_classes, classifier, arcface_s, arcface_m)
        self.to(next(self.backbone.parameters()).device)

    @property
    def embed_dim(self) -> int:
        return self.dims[1] + self.dims[2]

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> ReIDOutput:
        f = self.backbone(x)
        logits = (self.head(f.final, labels), self.head_proj(f.proj, labels))
        return ReIDOutput((f.mid, f.final, f.proj), logits)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Inference feature: concat(pre-BN final, pre-BN projected); the caller L2-normalises."""
        f = self.backbone(x)
        return torch.cat([f.final, f.proj], dim=1)


class ClipReid(nn.Module):
    """Everything CLIP-ReID trains or reads: image model, identity prompts, text tower, centres."""

    def __init__(self, cfg: ClipReidCfg, clip: ClipModel, n_classes: int):
        super().__init__()
        ft = cfg.finetune
        self.image = ReIDImageModel(clip, n_classes, ft.classifier, ft.arcface_s, ft.arcface_m)
        self.prompts = PromptLearner(clip, n_classes, cfg.prompt.template, cfg.prompt.n_ctx)
        self.text = TextEncoder(clip.model)
        self.center = CenterLoss(n_classes, self.image.dims[1]) if ft.loss_weights.get("center", 0) > 0 else None
        self.to(next(self.image.parameters()).device)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.image.embed(x)


def reid_terms(out: ReIDOutput, labels: torch.Tensor, text_features: torch.Tensor, cfg: ClipReidCfg,
               center: CenterLoss | None) -> dict[str, torch.Tensor]:
    """Stage 2b's loss terms, unweighted: ID on both classifiers, triplet on all three pre-BN
    features, image-to-text CE of the projected feature, and the optional centre loss."""
    ft = cfg.finetune
    terms = {
        "id": sum(id_loss(lg, labels, ft.label_smoothing) for lg in out.logits),
        "triplet": sum(triplet_loss(f, labels, ft.triplet_margin) for f in out.feats),
        "i2t": image_to_text_loss(out.proj, text_features, labels, ft.label_smoothing),
    }
    if center is not None:
        terms["center"] = center(out.feats[1], labels)
    return terms
