"""ReID losses, and the one registry of named loss terms.

Every term a method can weight is registered here once, with the label the plots and reports use.
A config's `loss_weights` is a mapping checked against the terms its method uses; the training
log has one column per term under the same name. Adding a term = one `register_term` call plus
its function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError


@dataclass(frozen=True)
class LossTerm:
    name: str    # key in configs and column in logs
    label: str   # axis / legend label in figures and reports
    doc: str


LOSS_TERMS: dict[str, LossTerm] = {}


def register_term(name: str, label: str, doc: str) -> LossTerm:
    if name in LOSS_TERMS and LOSS_TERMS[name] != LossTerm(name, label, doc):
        raise ValueError(f"loss term '{name}' is already registered with another meaning")
    LOSS_TERMS[name] = LossTerm(name, label, doc)
    return LOSS_TERMS[name]


register_term("id", "ID cross-entropy", "label-smoothed cross-entropy of the identity classifier(s)")
register_term("triplet", "batch-hard triplet", "hardest positive vs hardest negative, Euclidean, margin")
register_term("i2t", "image-to-text CE", "cross-entropy of image features against every identity's text feature")
register_term("center", "centre loss", "squared distance of each feature to its identity's learnt centre")
register_term("supcon", "SupCon image↔text", "symmetric supervised contrastive loss, same identity = positive")


def term_label(name: str) -> str:
    """The label of a logged column: a registered term's label, 'total' for the weighted sum."""
    return LOSS_TERMS[name].label if name in LOSS_TERMS else name


def check_loss_weights(weights: Mapping[str, float], allowed: Sequence[str], where: str) -> None:
    """Every key must be a registered term this method computes; weights must be >= 0."""
    for key, w in weights.items():
        if key not in allowed:
            known = "registered but not used by this method" if key in LOSS_TERMS else "not a loss term"
            raise ConfigError(f"{where}.{key}: unknown loss term ({known}); "
                              f"this method's terms: {', '.join(allowed)}")
        if w < 0:
            raise ConfigError(f"{where}.{key}: a loss weight must be >= 0, got {w}")


def weighted_total(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """sum_k weights[k] * terms[k] (a term absent from `weights` has weight 0)."""
    return sum(weights.get(name, 0.0) * value for name, value in terms.items())


# --------------------------------------------------------------------------- the terms

def supcon_loss(anchors: torch.Tensor, candidates: torch.Tensor, anchor_labels: torch.Tensor,
                candidate_labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """One direction of the supervised contrastive loss: every same-label candidate is a positive.

    -mean over anchors of the mean log-softmax (over candidates) at the positives. Features are
    used as given (CLIP-ReID does not normalise them).
    """
    logits = anchors.float() @ candidates.float().T / temperature
    log_prob = logits.log_softmax(dim=1)
    pos = (anchor_labels[:, None] == candidate_labels[None, :]).float()
    return -((pos * log_prob).sum(1) / pos.sum(1).clamp(min=1)).mean()


def symmetric_supcon(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    """SupCon image->text plus text->image (CLIP-ReID's prompt stage, PromptSG's L_SupCon)."""
    return (supcon_loss(image, text, labels, labels, temperature)
            + supcon_loss(text, image, labels, labels, temperature))


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances, with the sqrt kept away from 0 so gradients stay finite."""
    x = x.float()
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.T
    return d2.clamp(min=1e-12).sqrt()


def triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss: hardest positive vs hardest negative per anchor."""
    d = pairwise_distances(features)
    same = labels[:, None] == labels[None, :]
    hardest_pos = torch.where(same, d, torch.zeros_like(d)).max(1).values
    hardest_neg = torch.where(same, torch.full_like(d, float("inf")), d).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def id_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def image_to_text_loss(image_proj: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                       label_smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy of each image against ALL identities' text features (CLIP-ReID's L_i2tce)."""
    return id_loss(image_proj.float() @ text_features.float().T, labels, label_smoothing)


class CenterLoss(nn.Module):
    """Mean squared distance of each feature to its identity's learnable centre."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(n_classes, dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ((features.float() - self.centers[labels]) ** 2).sum(1).mean()
