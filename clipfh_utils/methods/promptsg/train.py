"""PromptSG's one training phase, handed to the shared loop.

End to end on P x K batches with Stage 2's augmentation and normalisation: image encoder at `lr`,
the new modules (inversion network, interaction module, BNNeck head) at `new_lr`, the text tower
frozen (or at `text.lr` in the unfrozen ablation); Adam; x gamma every `step_size` epochs.
"""
from __future__ import annotations


import numpy as np
import torch

from ...training import optim
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


def trainable(cfg: PromptSGCfg, model: Model) -> list[optim.Kind]:
    """(group name, modules, base lr, weight decay) of everything that trains."""
    o = cfg.optim
    new = [m for m in (getattr(model, "inversion", None), getattr(model, "interaction", None), model.head)
           if m is not None]
    kinds = [("image_encoder", [model.backbone], o.lr, o.weight_decay),
             ("new_modules", new, o.new_lr, o.weight_decay)]
    if cfg.text.train:
        kinds.append(("text_encoder", [model.text], cfg.text.lr, o.weight_decay))
    return kinds


def param_groups(cfg: PromptSGCfg, model: Model) -> list[dict]:
    """The shared optimiser groups (weights and biases alike: the paper gives one rate per kind);
    sets requires_grad first: what `trainable` names trains, everything else is frozen, the
    BNNeck bias too."""
    kinds = trainable(cfg, model)
    for p in model.parameters():
        p.requires_grad_(False)
    for _, modules, _, _ in kinds:
        for module in modules:
            module.requires_grad_(True)
    model.head.bn.bias.requires_grad_(False)  # BNNeck: frozen bias
    return optim.param_groups(kinds, bias_lr_factor=1.0, weight_decay_bias=cfg.optim.weight_decay)


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
        terms = promptsg_terms(out, labels, cfg, getattr(model, "supcon_temperature", None))
        return weighted_total(terms, o.loss_weights), terms

    monitor = monitor_for(model, model.embed, data, ctx)

    terms = ["id", "triplet"] + (["supcon"] if cfg.composes else [])
    return Phase("train", o.epochs, opt,
                 lambda e: step_decay(e, o.step_size, o.gamma, o.warmup_epochs, o.warmup_factor),
                 batches, inputs, loss, terms, train_modules=[model], eval_modules=[],
                 start=start, monitor=monitor if data.val_images is not None else None,
                 monitor_every=o.monitor_every, compile=cfg.compile)
