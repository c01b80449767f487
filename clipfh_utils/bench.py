"""Throughput benchmarks on the current device (random weights: speed does not depend on them).

Stage 2: one full training step as `train_stage2` runs it (device augmentation of uint8
images, forward, BNNeck + classifiers, ID + triplet + i2t losses, backward, Adam step).
Stage 1: feature extraction (normalise + encode_image).
"""
from __future__ import annotations

import time

import torch

from .augment import DeviceAugment
from .config import FinetuneCfg
from .features import autocast_for, normalize
from .models import load_clip, resolve_device
from .reid_model import ReIDModel
from .train_stage2 import make_loss_fn, make_optimizer, param_groups, train_step


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench(stage: int = 2, backbone: str = "ViT-B-16", batch: int = 64, steps: int = 30,
          warmup: int = 5, image_size: int = 224, device: str = "auto", amp: bool = True,
          compile: bool = False, n_classes: int = 72, compile_mode: str = "default") -> dict:
    dev = resolve_device(device)
    torch.manual_seed(0)
    clip = load_clip(backbone, None, dev, (image_size, image_size))
    images = torch.randint(0, 256, (max(4 * batch, 256), 3, image_size, image_size),
                           dtype=torch.uint8, device=dev)
    labels = torch.arange(batch, device=dev) % n_classes
    amp = amp and dev.type == "cuda"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(dev)
    if stage == 2:
        cfg = FinetuneCfg()
        model = ReIDModel(clip, n_classes).to(dev).train()
        opt = make_optimizer(param_groups(model, cfg, None, None), cfg, dev)
        g = torch.Generator(device=dev).manual_seed(0)
        aug = DeviceAugment(cfg.augment, clip.mean, clip.std, g)
        loss_fn = make_loss_fn(model, cfg, None)
        if compile:
            loss_fn = torch.compile(loss_fn, mode=compile_mode)
        text = torch.randn(n_classes, model.dims[2], device=dev)

        def step(i: int) -> None:
            s = (i * batch) % (images.shape[0] - batch + 1)
            train_step(loss_fn, opt, aug, images[s:s + batch], labels, text, dev, amp)
    elif stage == 1:
        encode = torch.compile(clip.model.encode_image) if compile else clip.model.encode_image

        @torch.inference_mode()
        def step(i: int) -> None:
            s = (i * batch) % (images.shape[0] - batch + 1)
            with autocast_for(dev, amp):
                encode(normalize(images[s:s + batch], clip.mean, clip.std))
    else:
        raise ValueError("stage must be 1 or 2")
    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    _sync(dev)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    _sync(dev)
    sec = time.perf_counter() - t0
    result = {"stage": stage, "backbone": backbone, "device": str(dev),
              "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "batch": batch, "image_size": image_size, "amp_bf16": amp, "compile": compile and compile_mode,
              "steps": steps, "images_per_s": steps * batch / sec, "warmup_s": warm_s,
              "peak_mem_gib": (torch.cuda.max_memory_allocated(dev) / 2**30) if dev.type == "cuda" else None,
              "torch": torch.__version__}
    return result
