"""PromptSG's one training phase, handed to the shared loop.

End to end on P x K batches with Stage 2's augmentation and normalisation: image encoder at `lr`,
the new modules (inversion network, interaction module, BNNeck head) at `new_lr`, the text tower
frozen (or at `text.lr` in the unfrozen ablation); Adam; x gamma every `step_size` epochs.
"""
from __future__ import annotations


import numpy as np
import torch
from torch import nn

from ...training.augment import DeviceAugment
from ...training.data import TrainData, monitor_for
from ...training.losses import weighted_total
from ...training.loop import PartialState, Phase
from ...training.sampler import PKSampler
from ...training.schedules import step_decay
from ..base import BuildContext, TrainPlan
from .config import PromptSGCfg
from .model import PromptSG, PromptSGBaseline, promptsg_terms

Model = PromptSG | PromptSGBaseline


def model_state(cfg: PromptSGCfg, model: Model) -> PartialState:
    """Leave out what comes back from the backbone file: the text tower unless it trains, and
    the prompt templates' frozen token embeddings (the ensemble is an inference setting)."""
    exclude = ("template.", "ensemble.") + (() if cfg.text.train else ("text.",))
    return PartialState(model, exclude)


def plan(cfg: PromptSGCfg, model: Model, data: TrainData, ctx: BuildContext) -> TrainPlan:
    sampler = PKSampler(data.labels.cpu().tolist(), cfg.optim.p, cfg.optim.k, ctx.seed)
    return TrainPlan({"model": model_state(cfg, model), "sampler": sampler},
                     iter([train_phase(cfg, model, data, ctx, sampler)]))


def trainable(cfg: PromptSGCfg, model: Model) -> list[tuple[str, list[nn.Module], float]]:
    """(group name, modules, base lr) of everything that trains."""
    o = cfg.optim
    new = [m for m in (getattr(model, "inversion", None), getattr(model, "interaction", None), model.head)
           if m is not None]
    kinds = [("image_encoder", [model.backbone], o.lr), ("new_modules", new, o.new_lr)]
    if cfg.text.train:
        kinds.append(("text_encoder", [model.text], cfg.text.lr))
    return kinds


def param_groups(cfg: PromptSGCfg, model: Model) -> list[dict]:
    """One optimiser group per kind; sets requires_grad (everything else frozen, BNNeck bias too)."""
    for p in model.parameters():
        p.requires_grad_(False)
    groups = []
    for name, modules, lr in trainable(cfg, model):
        params = []
        for module in modules:
            for n, p in module.named_parameters():
                if module is model.head and n == "bn.bias":
                    continue  # BNNeck: frozen bias
                p.requires_grad_(True)
                params.append(p)
        groups.append({"name": name, "params": params, "base_lr": lr, "lr": lr,
                       "weight_decay": cfg.optim.weight_decay})
    return groups


def train_phase(cfg: PromptSGCfg, model: Model, data: TrainData, ctx: BuildContext,
                sampler: PKSampler) -> Phase:
    o = cfg.optim
    opt = torch.optim.Adam(param_groups(cfg, model), lr=o.lr, weight_decay=o.weight_decay,
                           fused=ctx.device.type == "cuda")
    aug = DeviceAugment(o.augment, ctx.clip.mean, ctx.clip.std, ctx.generator)
    cache: dict[str, torch.Tensor] = {}
    fixed_in_training = cfg.uses_prompt and not cfg.composes

    def start() -> None:
        if fixed_in_training and not cfg.text.train:  # the same for every image: encode it once
            with torch.no_grad():
                cache["fixed"] = model.fixed_prompt()

    def batches() -> torch.Tensor:
        return torch.from_numpy(np.stack(sampler.epoch())).to(ctx.device)  # one copy per epoch

    def inputs(idx: torch.Tensor) -> tuple:
        return aug(data.images[idx]), data.labels[idx]

    def loss(x: torch.Tensor, labels: torch.Tensor):
        out = model(x, labels, cache.get("fixed")) if fixed_in_training else model(x, labels)
        terms = promptsg_terms(out, labels, cfg)
        return weighted_total(terms, o.loss_weights), terms

    monitor = monitor_for(model, model.embed, data, ctx)

    terms = ["id", "triplet"] + (["supcon"] if cfg.composes else [])
    return Phase("train", o.epochs, opt,
                 lambda e: step_decay(e, o.step_size, o.gamma, o.warmup_epochs, o.warmup_factor),
                 batches, inputs, loss, terms, train_modules=[model], eval_modules=[],
                 start=start, monitor=monitor if data.val_images is not None else None,
                 monitor_every=o.monitor_every, compile=cfg.compile)
