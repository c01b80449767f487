"""A method that lives outside the package: the test that a new method is one module that plugs in.

A linear map on top of the frozen CLIP image embedding, trained with the batch-hard triplet loss
through the shared loop, evaluated and reported like every built-in method. It touches no package
file: the config names it with `method: tests.minimal_method`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clipfh_utils.backbones.adapters import VisionAdapter
from clipfh_utils.backbones.features import normalize
from clipfh_utils.config import setting
from clipfh_utils.methods import BuildContext, ExperimentCfg, Method, TrainPlan
from clipfh_utils.training import PKSampler, Phase, check_loss_weights, weighted_total
from clipfh_utils.training.losses import triplet_loss


@dataclass
class MinimalCfg(ExperimentCfg):
    epochs: int = setting(2, ge=0)
    lr: float = setting(1e-2, gt=0)
    dim: int = setting(32, ge=1)
    p: int = setting(4, ge=1)
    k: int = setting(2, ge=2)
    loss_weights: dict[str, float] = setting({"triplet": 1.0})


class MinimalModel(nn.Module):
    def __init__(self, clip, dim: int):
        super().__init__()
        self.backbone = VisionAdapter(clip)
        self.head = nn.Linear(self.backbone.dims[2], dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.backbone.encode(x)
        return self.head(f.float())


class Minimal(Method):
    name = "tests.minimal_method"
    stage = "baseline"
    title = "minimal (test)"
    config_cls = MinimalCfg
    loss_terms = ("triplet",)

    def validate(self, cfg, where):
        check_loss_weights(cfg.loss_weights, self.loss_terms, f"{where}.loss_weights")

    def build(self, cfg, ctx: BuildContext, n_classes: int) -> nn.Module:
        for p in ctx.clip.model.parameters():
            p.requires_grad_(False)
        return MinimalModel(ctx.clip, cfg.dim).to(ctx.device)

    def model_state(self, cfg, model):
        return model.head  # the backbone is the frozen pretrained one

    def plan(self, cfg, model, data, ctx) -> TrainPlan:
        sampler = PKSampler(data.labels.cpu().tolist(), cfg.p, cfg.k, ctx.seed)
        opt = torch.optim.Adam([{"name": "head", "params": model.head.parameters(), "base_lr": cfg.lr}], lr=cfg.lr)

        def loss(x, y):
            terms = {"triplet": triplet_loss(model.embed(x), y)}
            return weighted_total(terms, cfg.loss_weights), terms

        phase = Phase("head", cfg.epochs, opt, lambda e: 1.0,
                      lambda: [torch.as_tensor(b, device=ctx.device) for b in sampler.epoch()],
                      lambda idx: (normalize(data.images[idx], ctx.clip.mean, ctx.clip.std), data.labels[idx]),
                      loss, ["triplet"], train_modules=[model.head], eval_modules=[model.backbone])
        return TrainPlan({"model": model.head, "sampler": sampler}, iter([phase]))


METHOD = Minimal()
