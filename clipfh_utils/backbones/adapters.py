"""One interface over CLIP image towers (ViT and ModifiedResNet) for every method.

`VisionAdapter(clip)(x)` gives the four things ReID methods read from an image encoder:

| feature | ViT                                        | ModifiedResNet            |
|---------|--------------------------------------------|---------------------------|
| mid     | CLS after the second-to-last block         | layer3, average-pooled    |
| final   | CLS after the last block + ln_post         | layer4, average-pooled    |
| proj    | final @ proj (= `encode_image`)            | attnpool output (= `encode_image`) |
| tokens  | patch tokens after ln_post (no CLS)        | layer4 map, one token per cell |

The forward goes through open_clip's own `forward_intermediates`, so the library's model code
runs unchanged (attention kernels, patch dropout, grad checkpointing); nothing is re-implemented.
`project_tokens` maps tokens into the joint image-text space (ViT: `@ proj`; ResNet: the
attnpool's value and output projections, i.e. the path each token's own value takes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .loading import ClipModel


@dataclass
class VisionFeatures:
    mid: torch.Tensor       # (B, D_mid)
    final: torch.Tensor     # (B, D)
    proj: torch.Tensor      # (B, E)  joint image-text space
    tokens: torch.Tensor    # (B, N, D_tok), N = grid h * w
    grid: tuple[int, int]   # (h, w) of the token grid


class VisionAdapter(nn.Module):
    """The image tower of a ClipModel, returning `VisionFeatures`."""

    def __init__(self, clip: ClipModel):
        super().__init__()
        self.visual = clip.model.visual
        self.kind = clip.kind
        self.image_size = clip.image_size
        with torch.no_grad():
            was_training = self.visual.training
            self.visual.eval()
            dev = next(self.visual.parameters()).device
            f = self(torch.zeros(1, 3, *clip.image_size, device=dev))
            self.visual.train(was_training)
        self.dims = (f.mid.shape[1], f.final.shape[1], f.proj.shape[1])
        self.token_dim = f.tokens.shape[2]
        self.grid = f.grid

    def forward(self, x: torch.Tensor) -> VisionFeatures:
        v = self.visual
        if self.kind == "vit":
            n = len(v.transformer.resblocks)
            out = v.forward_intermediates(x, indices=[n - 2, n - 1], output_fmt="NLC",
                                          output_extra_tokens=True)
            cls_mid, cls_last = out["image_intermediates_prefix"]   # (B, 1, D) each
            last = v.ln_post(torch.cat([cls_last, out["image_intermediates"][1]], dim=1))
            h, w = x.shape[2] // v.patch_size[0], x.shape[3] // v.patch_size[1]
            return VisionFeatures(cls_mid[:, 0], last[:, 0], out["image_features"], last[:, 1:], (h, w))
        out = v.forward_intermediates(x, indices=[3, 4])
        layer3, layer4 = out["image_intermediates"]                  # (B, C, h, w)
        tokens = layer4.flatten(2).transpose(1, 2)                   # (B, h*w, C)
        return VisionFeatures(layer3.mean((2, 3)), layer4.mean((2, 3)), out["image_features"],
                              tokens, tuple(layer4.shape[2:]))

    def project_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D_tok) -> (B, N, E): tokens in the joint space the text features live in."""
        v = self.visual
        if self.kind == "vit":
            return tokens @ v.proj
        pool = v.attnpool
        x = tokens + pool.positional_embedding[1:].to(tokens.dtype)
        return pool.c_proj(pool.v_proj(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The plain CLIP image embedding (`encode_image`), unnormalised."""
        return self.visual(x)

