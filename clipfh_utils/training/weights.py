"""A finished seed's weights on disk: fp16 where that is exact enough, fp32 where it is not.

Halving the stored weights halves a finished run's size; whether the rounding matters is measured,
not assumed: the model embeds a fixed set of images (the validation images of the training
identities) in fp32 with its fp32 weights and again with the weights rounded to fp16. Only when
no feature (L2-normalised) moves by more than `tolerance` is weights.pt rewritten in fp16; the
model in memory keeps the rounded weights, so the numbers evaluated now are those of the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import load_checkpoint, save_checkpoint


def to_half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 tensors as fp16; everything else (counters, int buffers) unchanged."""
    return {k: v.half() if isinstance(v, torch.Tensor) and v.dtype == torch.float32 else v
            for k, v in state.items()}


def store_half_if_exact(weights_file: str | Path, model_state: Any, features: Callable[[], torch.Tensor],
                        tolerance: float) -> dict[str, Any]:
    """Rewrite the 'model' state of `weights_file` in fp16 if `features()` moves by <= tolerance.

    `model_state` is the object the file's 'model' state was saved from (state_dict /
    load_state_dict); `features()` embeds the check images with the model as it is now.
    Returns what to record: the dtype kept and the measured difference.
    """
    if tolerance <= 0:
        return {"weights_dtype": "float32"}
    saved = load_checkpoint(weights_file)
    full = saved["states"]["model"]
    reference = features()
    half = to_half(full)
    model_state.load_state_dict(half)
    diff = float((features() - reference).abs().max()) if reference.numel() else 0.0
    info = {"fp16_max_feature_diff": diff, "fp16_tolerance": tolerance}
    if diff > tolerance:
        model_state.load_state_dict(full)
        return {"weights_dtype": "float32", **info}
    saved["states"]["model"] = half
    saved["weights_dtype"] = "float16"
    save_checkpoint(weights_file, saved)
    return {"weights_dtype": "float16", **info}
