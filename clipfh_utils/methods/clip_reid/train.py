"""CLIP-ReID's two training phases, handed to the shared loop.

2a ("prompt") learns identity prompts with both encoders frozen: only the text tower runs, the
image features of the training set are computed once (image encoder in eval mode, no
augmentation, as the test transform). 2b ("finetune") fine-tunes the image encoder against the
frozen identity text features with ID + triplet + image-to-text losses on P x K batches.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ...backbones.features import embed_images
from ...training import optim
from ...training.augment import DeviceAugment
from ...training.data import TrainData, monitor_for
from ...training.losses import symmetric_supcon, weighted_total
from ...training.loop import PartialState, Phase
from ...training.sampler import PKSampler
from ...training.schedules import warmup_cosine, warmup_multistep
from ..base import BuildContext, TrainPlan
from .config import ClipReidCfg
from .model import ClipReid, reid_terms
from .prompts import encode_all_identities


def model_state(cfg: ClipReidCfg, model: ClipReid) -> PartialState:
    """The frozen text tower is the pretrained one: not saved unless it is fine-tuned."""
    return PartialState(model, () if cfg.finetune.train_text_encoder else ("text.",))


def plan(cfg: ClipReidCfg, model: ClipReid, data: TrainData, ctx: BuildContext) -> TrainPlan:
    sampler = PKSampler(data.labels.cpu().tolist(), cfg.finetune.p, cfg.finetune.k, ctx.seed)

    def phases() -> Iterator[Phase]:
        yield prompt_phase(cfg, model, data, ctx)
        yield finetune_phase(cfg, model, data, ctx, sampler)

    return TrainPlan({"model": model_state(cfg, model), "sampler": sampler}, phases())


def prompt_phase(cfg: ClipReidCfg, model: ClipReid, data: TrainData, ctx: BuildContext) -> Phase:
    pc = cfg.prompt
    for p in model.parameters():
        p.requires_grad_(False)
    model.prompts.ctx.requires_grad_(True)
    opt = torch.optim.Adam([{"name": "prompts", "params": [model.prompts.ctx], "base_lr": pc.lr}],
                           lr=pc.lr, weight_decay=pc.weight_decay)
    cache: dict[str, torch.Tensor] = {}

    def start() -> None:
        model.image.eval()  # frozen features, BatchNorm with its running statistics
        cache["features"] = embed_images(model.image.backbone.encode, data.images, ctx.clip.mean,
                                         ctx.clip.std, ctx.device, normalize_output=False,
                                         amp=ctx.amp).to(ctx.device)

    def batches() -> list[torch.Tensor]:
        perm = torch.randperm(len(data.labels), generator=ctx.generator, device=ctx.device)
        return list(perm.split(pc.batch_size))  # the last batch is partial, never empty

    def inputs(idx: torch.Tensor) -> tuple:
        return cache["features"][idx], data.labels[idx]

    def loss(image_features: torch.Tensor, labels: torch.Tensor):
        text_features = model.text(*model.prompts(labels)).float()
        supcon = symmetric_supcon(image_features, text_features, labels)
        return supcon, {"supcon": supcon}

    return Phase("prompt", pc.epochs, opt, lambda e: warmup_cosine(e, pc.epochs, pc.warmup_epochs,
                                                                    pc.warmup_lr / pc.lr, pc.min_lr / pc.lr),
                 batches, inputs, loss, ["supcon"], train_modules=[model.prompts],
                 eval_modules=[model.image, model.text], start=start)


def param_groups(cfg: ClipReidCfg, model: ClipReid) -> list[dict]:
    """One group per kind of module and per weights/biases, each with its configured lr
    (CLIP-ReID's make_optimizer: biases at lr x bias_lr_factor with weight_decay_bias)."""
    ft = cfg.finetune
    kinds = [("image_encoder", [model.image.backbone], ft.lr, ft.weight_decay),
             ("heads", [model.image.head, model.image.head_proj], ft.head_lr or ft.lr, ft.weight_decay)]
    if model.center is not None:
        kinds.append(("center", [model.center], ft.center_lr, 0.0))  # no biases: weight_decay_bias unused
    if ft.train_text_encoder:
        kinds.append(("text_encoder", [model.text], ft.text_lr, ft.weight_decay))
    return optim.param_groups(kinds, ft.bias_lr_factor, ft.weight_decay_bias)


def finetune_loss(model: ClipReid, cfg: ClipReidCfg, text_features: torch.Tensor | None,
                  all_ids: torch.Tensor, x: torch.Tensor, labels: torch.Tensor):
    """Stage 2b's objective: the unit `torch.compile` sees (module level: compiled once per process).

    `text_features` are the frozen identity features, or None when the text tower is fine-tuned
    (then they are computed from the prompts at every step)."""
    if text_features is None:
        text_features = model.text(*model.prompts(all_ids)).float()
    out = model.image(x, labels)
    terms = reid_terms(out, labels, text_features, cfg, model.center)
    return weighted_total(terms, cfg.finetune.loss_weights), terms


def finetune_phase(cfg: ClipReidCfg, model: ClipReid, data: TrainData, ctx: BuildContext,
                   sampler: PKSampler) -> Phase:
    ft = cfg.finetune
    for p in model.parameters():
        p.requires_grad_(False)
    for module in (model.image.backbone, model.image.head, model.image.head_proj, model.center):
        for n, p in (module.named_parameters() if module is not None else []):
            p.requires_grad_(not n.endswith("bn.bias"))  # BNNeck biases stay frozen
    trainable_text = ft.train_text_encoder
    if trainable_text:
        for p in model.text.parameters():
            p.requires_grad_(True)
    opt = torch.optim.Adam(param_groups(cfg, model), lr=ft.lr, weight_decay=ft.weight_decay,
                           fused=ctx.device.type == "cuda")
    aug = DeviceAugment(ft.augment, ctx.clip.mean, ctx.clip.std, ctx.generator)
    all_ids = torch.arange(data.n_classes, device=ctx.device)
    frozen = None if trainable_text else encode_all_identities(model.prompts, model.text, data.n_classes)

    def batches() -> torch.Tensor:
        return torch.from_numpy(np.stack(sampler.epoch())).to(ctx.device)  # one copy per epoch

    def inputs(idx: torch.Tensor) -> tuple:
        return aug(data.images[idx]), data.labels[idx]

    monitor = monitor_for(model.image, model.image.embed, data, ctx)

    terms = ["id", "triplet", "i2t"] + (["center"] if model.center is not None else [])
    train = [model.image] + ([model.text] if trainable_text else [])
    return Phase("finetune", ft.epochs, opt,
                 lambda e: warmup_multistep(e, ft.milestones, ft.gamma, ft.warmup_epochs, ft.warmup_factor),
                 batches, inputs, finetune_loss, terms, loss_args=(model, cfg, frozen, all_ids),
                 train_modules=train, eval_modules=[],
                 monitor=monitor if data.val_images is not None else None,
                 monitor_every=ft.monitor_every, compile=cfg.compile)
