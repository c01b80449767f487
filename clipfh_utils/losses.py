"""ReID losses: SupCon (image<->text), batch-hard triplet, label-smoothed ID / i2t, centre loss.

ArcFace is a classifier head (it needs labels to place its margin), so it lives in reid_model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def supcon_loss(anchors: torch.Tensor, candidates: torch.Tensor, anchor_labels: torch.Tensor,
                candidate_labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Supervised contrastive loss: every candidate with the anchor's label is a positive.

    -mean over anchors of the mean log-softmax (over candidates) at the positives. Features are
    used as given (CLIP-ReID does not normalise them).
    """
    logits = anchors.float() @ candidates.float().T / temperature
    log_prob = logits.log_softmax(dim=1)
    pos = (anchor_labels[:, None] == candidate_labels[None, :]).float()
    return -((pos * log_prob).sum(1) / pos.sum(1).clamp(min=1)).mean()


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


def reid_losses(out, labels: torch.Tensor, text_features: torch.Tensor, weights, margin: float,
                label_smoothing: float, center: CenterLoss | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 2b objective: weighted ID + triplet + image-to-text (+ centre) terms.

    `out` is a reid_model.ReIDOutput; `weights` a config.LossWeights. Returns the total and
    the unweighted terms (for logging).
    """
    terms = {
        "id": sum(id_loss(lg, labels, label_smoothing) for lg in out.logits),
        "triplet": sum(triplet_loss(f, labels, margin) for f in out.feats),
        "i2t": image_to_text_loss(out.proj, text_features, labels, label_smoothing),
    }
    if center is not None:
        terms["center"] = center(out.feats[1], labels)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, terms
