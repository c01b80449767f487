"""Grad-CAM for identity matching, through the `grad-cam` package (pytorch_grad_cam).

The target is the identity similarity: the cosine between the query's embedding and a gallery
feature (normally its true match), so the map shows which parts of the query make the two hands
match. ResNet towers use a layer's feature map; ViT towers a block's token sequence, reshaped to
the patch grid (CLS dropped). The package is imported only here and only when a map is asked for:
it needs OpenCV, which fails to load on some headless machines.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ExplainDependencyError(ImportError):
    """An optional package a map needs (grad-cam and its OpenCV) cannot be imported."""


def _gradcam_class():
    try:
        from pytorch_grad_cam import GradCAM
    except (ImportError, OSError) as e:  # OpenCV without libGL raises ImportError; some builds OSError
        raise ExplainDependencyError(
            f"Grad-CAM maps need the 'grad-cam' package and its OpenCV dependency, and importing them "
            f"failed ({type(e).__name__}: {e}). Install with `pip install grad-cam`; on a headless machine "
            "without libGL use opencv-python-headless (`pip uninstall opencv-python && pip install "
            "opencv-python-headless`). Attention rollout and cross-attention maps work without it.") from None
    return GradCAM


class SimilarityTarget:
    """Grad-CAM target: cosine similarity of the (unnormalised) embedding with a fixed feature."""

    def __init__(self, feature: torch.Tensor):
        self.feature = F.normalize(feature.detach().float().flatten(), dim=0)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return F.normalize(output.float(), dim=-1) @ self.feature.to(output.device)


class _Embedder(nn.Module):
    """What Grad-CAM calls: images -> embeddings."""

    def __init__(self, owner: nn.Module, embed: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.owner, self._embed = owner, embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed(x)


def _graph_from(layer: nn.Module):
    """A forward hook that starts the autograd graph at `layer`'s output: with every parameter
    frozen, the backward pass then runs from the similarity to that layer and no further (no
    weight gradients, nothing below the layer), which is all Grad-CAM reads."""
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not output.requires_grad:
            output.requires_grad_(True)
    return layer.register_forward_hook(hook)


def gradcam_layers(visual: nn.Module) -> dict[str, nn.Module]:
    """Layers a Grad-CAM map can be taken at, by name, the default (deepest) last."""
    if hasattr(visual, "layer4"):  # open_clip's ModifiedResNet or a torchvision ResNet
        return {"layer3": visual.layer3[-1], "layer4": visual.layer4[-1]}
    return {f"block {i + 1}": b.ln_1 for i, b in enumerate(visual.transformer.resblocks)}


def _token_reshape(grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    def reshape(t: torch.Tensor) -> torch.Tensor:  # (B, 1 + h*w, C), batch first -> (B, C, h, w)
        return t[:, 1:, :].reshape(t.shape[0], grid[0], grid[1], t.shape[2]).permute(0, 3, 1, 2)
    return reshape


def similarity_gradcam(model: nn.Module, embed: Callable[[torch.Tensor], torch.Tensor], visual: nn.Module,
                       x: torch.Tensor, targets: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """(B, H, W) Grad-CAM maps (in [0, 1], at the input size) of cos(embed(x[i]), targets[i]).

    `model` owns the parameters `embed` uses; `visual` is its image tower (where the layer is);
    `targets` (B, D) are the features to match, e.g. each query's true gallery match.
    """
    GradCAM = _gradcam_class()
    layers = gradcam_layers(visual)
    name = layer or list(layers)[-1]
    if name not in layers:
        raise ValueError(f"no layer {name!r} for Grad-CAM; choose one of {', '.join(layers)}")
    reshape = None
    if hasattr(visual, "transformer"):
        ph, pw = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
        reshape = _token_reshape((x.shape[2] // ph, x.shape[3] // pw))
    was_training = model.training
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    start = _graph_from(layers[name])  # registered before Grad-CAM's own hooks, so it runs first
    try:
        with torch.enable_grad(), GradCAM(_Embedder(model, embed), [layers[name]], reshape_transform=reshape) as cam:
            maps = cam(x.detach(), [SimilarityTarget(t) for t in targets])
    finally:
        start.remove()
        for p in params:
            p.requires_grad_(True)
        model.train(was_training)
    return torch.from_numpy(np.ascontiguousarray(maps)).float()
