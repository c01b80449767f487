"""Image normalisation and batched feature extraction.

`normalize` is the ONE place pixels become model inputs, for training and for testing alike:
the study's own code normalised at test time only, and that mismatch is easy to reintroduce.
"""
from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


@lru_cache(maxsize=16)
def _channel_stats(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # built once per device: torch.tensor(..., device="cuda") is a blocking host-to-device copy,
    # and one per training step would stall the CPU until the GPU has drained its queue
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    return m, s


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B,3,H,W) in [0,255] or float in [0,1] -> float normalised with the weights' mean/std."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    m, s = _channel_stats(tuple(mean), tuple(std), x.device)
    return (x - m) / s


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; plain fp32 elsewhere (CPU bf16 is slow and not what we report)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.inference_mode()
def embed_images(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                 mean: Sequence[float], std: Sequence[float], device: torch.device,
                 batch_size: int = 256, flip: bool = False, amp: bool = True,
                 progress: bool = False, normalize_output: bool = True) -> torch.Tensor:
    """L2-normalised float32 features (N, D) on the CPU for uint8 images (N,3,H,W).

    With `flip`, features of the image and its mirror are averaged before normalising.
    `normalize_output=False` keeps raw features (CLIP-ReID's prompt stage uses them unnormalised).
    """
    feats = []
    starts = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="features", leave=False)
    for s in starts:
        x = normalize(images[s:s + batch_size].to(device, non_blocking=True), mean, std)
        with autocast_for(device, amp):
            f = fn(x).float()
            if flip:
                f = f + fn(x.flip(3)).float()
        feats.append((F.normalize(f, dim=1) if normalize_output else f).cpu())
    return torch.cat(feats)
