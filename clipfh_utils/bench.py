"""Throughput benchmarks on the current device (random weights: speed does not depend on them).

Stage 2: one CLIP-ReID fine-tuning step exactly as training runs it (the method's own phase:
device augmentation of uint8 images, forward, BNNeck + classifiers, ID + triplet + i2t losses,
backward, fused Adam; the loop's own `optimizer_step`). Stage 1: feature extraction
(normalise + encode_image).
"""
from __future__ import annotations

import functools
import time

import torch

from .backbones.features import autocast_for, normalize
from .backbones.loading import load_clip, resolve_device
from .config import build
from .methods import BuildContext
from .methods.clip_reid.config import ClipReidCfg
from .methods.clip_reid.model import ClipReid
from .methods.clip_reid.train import finetune_phase
from .training.data import TrainData
from .training.loop import optimizer_step
from .training.sampler import PKSampler


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench(stage: int = 2, backbone: str = "ViT-B-16", batch: int = 64, steps: int = 30,
          warmup: int = 5, image_size: int = 224, device: str = "auto", amp: bool = True,
          compile: bool = False, n_classes: int = 72, compile_mode: str = "default",
          last_stride: int = 2) -> dict:
    dev = resolve_device(device)
    torch.manual_seed(0)
    clip = load_clip(backbone, None, dev, (image_size, image_size), last_stride=last_stride)
    images = torch.randint(0, 256, (max(4 * batch, 256), 3, image_size, image_size),
                           dtype=torch.uint8, device=dev)
    amp = amp and dev.type == "cuda"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(dev)
    if stage == 2:
        k = 4
        cfg = build(ClipReidCfg, {"name": "bench", "amp": amp, "compile": compile, "compile_mode": compile_mode,
                                  "finetune": {"p": batch // k, "k": k}}, "bench")
        labels = torch.arange(images.shape[0], device=dev) % n_classes
        data = TrainData(images, labels, [str(i) for i in range(n_classes)])
        ctx = BuildContext(clip, dev, 0, torch.Generator(device=dev).manual_seed(0), amp)
        model = ClipReid(cfg, clip, n_classes)
        phase = finetune_phase(cfg, model, data, ctx, PKSampler(labels.cpu().tolist(), batch // k, k))
        model.image.train()
        loss_fn = functools.partial(torch.compile(phase.loss, mode=compile_mode) if compile else phase.loss, *phase.loss_args)
        batch_idx = phase.batches()

        def step(i: int) -> None:
            optimizer_step(loss_fn, phase.optimizer, phase.inputs(batch_idx[i % len(batch_idx)]),
                           phase.terms, dev, amp)
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
    return {"stage": stage, "backbone": backbone, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "batch": batch, "image_size": image_size, "amp_bf16": amp, "compile": compile and compile_mode,
            "last_stride": last_stride, "steps": steps, "images_per_s": steps * batch / sec,
            "warmup_s": warm_s,
            "peak_mem_gib": (torch.cuda.max_memory_allocated(dev) / 2**30) if dev.type == "cuda" else None,
            "torch": torch.__version__}
