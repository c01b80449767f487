"""The BoT baseline's one training phase on the shared loop: P x K batches, the same on-device
augmentation as every other stage, Adam with warm-up multistep, ID + triplet (+ centre)."""
from __future__ import annotations

import numpy as np
import torch

from ...training import optim
from ...training.augment import DeviceAugment
from ...training.data import TrainData, monitor_for
from ...training.losses import weighted_total
from ...training.loop import Phase
from ...training.sampler import PKSampler
from ...training.schedules import warmup_multistep
from ..base import BuildContext, TrainPlan
from .config import CnnBaselineCfg
from .model import BoT, bot_terms


def param_groups(cfg: CnnBaselineCfg, model: BoT) -> list[dict]:
    t = cfg.train
    kinds = [("backbone", [model.backbone], t.lr, t.weight_decay), ("heads", [model.head], t.lr, t.weight_decay)]
    if model.center is not None:
        kinds.append(("center", [model.center], t.center_lr, 0.0))
    return optim.param_groups(kinds, t.bias_lr_factor, t.weight_decay_bias)


def plan(cfg: CnnBaselineCfg, model: BoT, data: TrainData, ctx: BuildContext) -> TrainPlan:
    t = cfg.train
    sampler = PKSampler(data.labels.cpu().tolist(), t.p, t.k, ctx.seed)
    opt = torch.optim.Adam(param_groups(cfg, model), lr=t.lr, weight_decay=t.weight_decay,
                           fused=ctx.device.type == "cuda")
    aug = DeviceAugment(t.augment, ctx.clip.mean, ctx.clip.std, ctx.generator)

    def batches() -> torch.Tensor:
        return torch.from_numpy(np.stack(sampler.epoch())).to(ctx.device)  # one copy per epoch

    def inputs(idx: torch.Tensor) -> tuple:
        return aug(data.images[idx]), data.labels[idx]

    def loss(x: torch.Tensor, labels: torch.Tensor):
        feat, logits = model(x, labels)
        terms = bot_terms(feat, logits, labels, cfg, model.center)
        return weighted_total(terms, t.loss_weights), terms

    monitor = monitor_for(model, model.embed, data, ctx)

    terms = ["id", "triplet"] + (["center"] if model.center is not None else [])
    phase = Phase("train", t.epochs, opt,
                  lambda e: warmup_multistep(e, t.milestones, t.gamma, t.warmup_epochs, t.warmup_factor),
                  batches, inputs, loss, terms, train_modules=[model],
                  monitor=monitor if data.val_images is not None else None,
                  monitor_every=t.monitor_every, compile=cfg.compile)
    return TrainPlan({"model": model, "sampler": sampler}, iter([phase]))
