"""Training augmentation on the device, on uint8 batches from the decode cache.

Flip -> pad + random crop -> normalise (the same `normalize` as at test time) -> random
erasing, the CLIP-ReID order. All randomness comes from one torch.Generator whose state is
checkpointed. Vectorised over the batch: no per-image Python work on the hot path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..backbones.features import normalize
from ..config import setting


@dataclass
class AugmentCfg:
    flip: float = setting(0.5, ge=0, le=1)    # horizontal flip probability
    pad: int = setting(10, ge=0)              # zero padding before the random crop, pixels
    erase: float = setting(0.5, ge=0, le=1)   # random erasing probability (per-pixel noise)


class DeviceAugment:
    def __init__(self, cfg: AugmentCfg, mean: Sequence[float], std: Sequence[float],
                 generator: torch.Generator):
        self.cfg, self.mean, self.std, self.g = cfg, mean, std, generator

    def _rand(self, *shape: int, device) -> torch.Tensor:
        return torch.rand(*shape, generator=self.g, device=device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        dev = images.device
        x = images
        if self.cfg.flip > 0:
            flip = (self._rand(b, device=dev) < self.cfg.flip)[:, None, None, None]
            x = torch.where(flip, x.flip(3), x)
        p = self.cfg.pad
        if p > 0:
            padded = F.pad(x, (p, p, p, p))
            oy = (self._rand(b, device=dev) * (2 * p + 1)).long().clamp(max=2 * p)
            ox = (self._rand(b, device=dev) * (2 * p + 1)).long().clamp(max=2 * p)
            rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]     # (B,H,1)
            cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]     # (B,1,W)
            bidx = torch.arange(b, device=dev)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[bidx, rows, cols].permute(0, 3, 1, 2)
        x = normalize(x, self.mean, self.std)
        if self.cfg.erase > 0:
            x = self._erase(x)
        return x

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        """Random erasing with per-pixel normal noise, area 2-33 %, aspect 0.3-3.3."""
        b, c, h, w = x.shape
        dev = x.device
        apply = self._rand(b, device=dev) < self.cfg.erase
        area = (0.02 + self._rand(b, device=dev) * (1 / 3 - 0.02)) * h * w
        log_r = math.log(0.3) + self._rand(b, device=dev) * (math.log(1 / 0.3) - math.log(0.3))
        eh = (area * log_r.exp()).sqrt().round().clamp(1, h)
        ew = (area / log_r.exp()).sqrt().round().clamp(1, w)
        top = (self._rand(b, device=dev) * (h - eh + 1)).floor()
        left = (self._rand(b, device=dev) * (w - ew + 1)).floor()
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        mask = ((ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
                & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None])
                & apply[:, None, None])[:, None]
        noise = torch.randn(x.shape, generator=self.g, device=dev, dtype=x.dtype)
        return torch.where(mask, noise, x)
