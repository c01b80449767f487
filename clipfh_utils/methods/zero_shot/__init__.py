"""Stage 1: frozen CLIP image features (`encode_image`), compared by cosine similarity. No training."""
from __future__ import annotations

from torch import nn

from ...backbones.adapters import VisionAdapter
from ..base import BuildContext, ExperimentCfg, Method


class ZeroShotModel(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.backbone = VisionAdapter(clip)

    def embed(self, x):
        return self.backbone.encode(x)


class ZeroShot(Method):
    name = "zero_shot"
    stage = "stage1"
    title = "zero-shot CLIP"
    config_cls = ExperimentCfg
    trains = False

    def build(self, cfg: ExperimentCfg, ctx: BuildContext, n_classes: int) -> nn.Module:
        return ZeroShotModel(ctx.clip).eval()


METHOD = ZeroShot()
