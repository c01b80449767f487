"""The one recipe that builds one seed's model, for every caller: training, loading a finished run
(the pipeline, `load_run`, transfer), the preflight's size estimate and the benchmark.

The backbone as the method loads it (channels_last where the config asks and it helps), the
build context of the seed, the head initialised from the seed, the method's model, its finished
weights when a seed folder is given, and eval mode unless the caller trains it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..methods import Backbone, BuildContext, ExperimentCfg, Method, get_method
from ..training.loop import is_finished, load_weights


def load_backbone(cfg: ExperimentCfg, device: torch.device, method: Method | None = None) -> Backbone:
    """The experiment's backbone as its method loads it (CLIP unless the method brings its own,
    e.g. the CNN baseline); `method` defaults to the one the config names."""
    backbone = (method or get_method(cfg.method)).load_backbone(cfg, device)
    return with_memory_format(backbone, cfg, device)


def with_memory_format(backbone: Backbone, cfg: ExperimentCfg, device: torch.device) -> Backbone:
    """channels_last for a ResNet CLIP on CUDA when the config asks (convolutions then run NHWC)."""
    if cfg.channels_last and getattr(backbone, "kind", "") == "rn" and device.type == "cuda":
        backbone.model.visual.to(memory_format=torch.channels_last)
    return backbone


def seed_context(cfg: ExperimentCfg, device: torch.device, seed: int, clip: Backbone | None = None,
                 method: Method | None = None) -> BuildContext:
    """What seed `seed` builds on: the backbone (loaded here if None), its generator, autocast."""
    clip = load_backbone(cfg, device, method) if clip is None else with_memory_format(clip, cfg, device)
    return BuildContext(clip, device, seed, torch.Generator(device=device).manual_seed(seed),
                        cfg.amp and device.type == "cuda")


def build_seed_model(method: Method, cfg: ExperimentCfg, ctx: BuildContext, n_classes: int, *,
                     weights_from: Path | None = None, train: bool = False) -> nn.Module:
    """Seed `ctx.seed`'s model of `method` with `cfg`: its head initialised from the seed, the
    finished weights of seed folder `weights_from` loaded (None: as built), in eval mode unless
    the caller trains it (`train`)."""
    torch.manual_seed(ctx.seed)  # head initialisation
    model = method.build(cfg, ctx, n_classes)
    if weights_from is not None and method.trains:
        if not is_finished(weights_from):
            raise FileNotFoundError(f"{weights_from}: this seed has not finished training")
        load_weights(weights_from, {"model": method.model_state(cfg, model)})
    if not train:
        model.eval()
    return model
