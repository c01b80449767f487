"""What a method trains on: decoded training images on the device, labels 0..C-1, and the
validation images of the same (training) identities for the monitor. Never a test identity."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..backbones.features import embed_images
from ..evaluation import rank_metrics


@dataclass
class TrainData:
    images: torch.Tensor               # uint8 (N,3,H,W) on the training device
    labels: torch.Tensor               # long (N,), 0..C-1
    class_ids: list[str]               # person id of each label
    val_images: Optional[torch.Tensor] = None
    val_labels: Optional[torch.Tensor] = None

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)


@torch.no_grad()
def validation_metrics(embed: Callable[[torch.Tensor], torch.Tensor], data: TrainData,
                       mean: Sequence[float], std: Sequence[float], device: torch.device,
                       amp: bool, batch_size: int = 256) -> dict[str, float]:
    """Validation images of TRAINING identities as queries vs the training images: never test ids."""
    q = embed_images(embed, data.val_images, mean, std, device, batch_size, amp=amp)
    g = embed_images(embed, data.images, mean, std, device, batch_size, amp=amp)
    res = rank_metrics(q @ g.T, data.val_labels.cpu(), data.labels.cpu())
    return {f"val_{k}": v for k, v in res.items()}


def monitor_for(module: torch.nn.Module, embed: Callable[[torch.Tensor], torch.Tensor], data: TrainData,
                ctx) -> Callable[[], dict[str, float]]:
    """The training loop's validation monitor: `module` in eval mode for the measurement and back
    in training mode after; `ctx` gives the backbone's normalisation (ctx.clip.mean/std), the
    device and autocast (a method's BuildContext)."""
    def monitor() -> dict[str, float]:
        module.eval()
        try:
            return validation_metrics(embed, data, ctx.clip.mean, ctx.clip.std, ctx.device, ctx.amp)
        finally:
            module.train()
    return monitor
