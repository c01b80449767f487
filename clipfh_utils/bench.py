"""Throughput benchmarks on the current device (random weights: speed does not depend on them).

Stage 2: one CLIP-ReID fine-tuning step exactly as training runs it (the method's own phase:
device augmentation of uint8 images, forward, BNNeck + classifiers, ID + triplet + i2t losses,
backward, fused Adam; the loop's own `optimizer_step`). With `seeds` > 1 every further seed
builds a fresh model and phase, as a multi-seed run does, and its first steps are timed without
warm-up: compilation must be paid once per process, not once per seed.
Stage 1: feature extraction (normalise + encode_image), as evaluation runs it.
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


def _timed(step, first: int, n: int, dev: torch.device) -> float:
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(first, first + n):
        step(i)
    _sync(dev)
    return time.perf_counter() - t0


def bench(stage: int = 2, backbone: str = "ViT-B-16", batch: int = 64, steps: int = 30,
          warmup: int = 5, image_size: int = 224, device: str = "auto", amp: bool = True,
          compile: bool = False, n_classes: int = 72, compile_mode: str = "default",
          last_stride: int = 2, seeds: int = 1, compile_optimizer: bool = False,
          channels_last: bool = False) -> dict:
    dev = resolve_device(device)
    amp = amp and dev.type == "cuda"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(dev)
    images = torch.randint(0, 256, (max(4 * batch, 256), 3, image_size, image_size), dtype=torch.uint8,
                           device=dev, generator=torch.Generator(device=dev).manual_seed(0))

    def backbone_for(seed: int):
        clip = load_clip(backbone, None, dev, (image_size, image_size), seed=seed, last_stride=last_stride)
        if channels_last and clip.kind == "rn" and dev.type == "cuda":
            clip.model.visual.to(memory_format=torch.channels_last)
        return clip

    def make_step(seed: int):
        clip = backbone_for(seed)
        if stage == 1:
            encode = torch.compile(clip.model.encode_image) if compile else clip.model.encode_image

            @torch.inference_mode()
            def step(i: int) -> None:
                s = (i * batch) % (images.shape[0] - batch + 1)
                with autocast_for(dev, amp):
                    encode(normalize(images[s:s + batch], clip.mean, clip.std))
            return step
        k = 4
        cfg = build(ClipReidCfg, {"name": "bench", "amp": amp, "compile": compile, "compile_mode": compile_mode,
                                  "finetune": {"p": batch // k, "k": k}}, "bench")
        labels = torch.arange(images.shape[0], device=dev) % n_classes
        data = TrainData(images, labels, [str(i) for i in range(n_classes)])
        ctx = BuildContext(clip, dev, seed, torch.Generator(device=dev).manual_seed(seed), amp)
        torch.manual_seed(seed)
        model = ClipReid(cfg, clip, n_classes)
        phase = finetune_phase(cfg, model, data, ctx, PKSampler(labels.cpu().tolist(), batch // k, k, seed))
        model.image.train()
        loss_fn = functools.partial(torch.compile(phase.loss, mode=compile_mode) if compile else phase.loss,
                                    *phase.loss_args)
        opt_step = torch.compile(phase.optimizer.step) if compile and compile_optimizer else None
        batch_idx = phase.batches()

        def step(i: int) -> None:
            optimizer_step(loss_fn, phase.optimizer, phase.inputs(batch_idx[i % len(batch_idx)]),
                           phase.terms, dev, amp, opt_step)
        return step

    if stage not in (1, 2):
        raise ValueError("stage must be 1 or 2")
    step = make_step(0)
    warm_s = _timed(step, 0, warmup, dev)
    sec = _timed(step, warmup, steps, dev)
    later = []
    for seed in range(1, seeds):  # a fresh model, as the next seed of a run builds: no warm-up
        step = make_step(seed)
        first = _timed(step, 0, steps, dev)
        last = _timed(step, steps, steps, dev)
        later.append({"seed": seed, "first_steps_img_s": steps * batch / first, "next_steps_img_s": steps * batch / last})
    return {"stage": stage, "backbone": backbone, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "batch": batch, "image_size": image_size, "amp_bf16": amp, "compile": compile and compile_mode,
            "compile_optimizer": compile and compile_optimizer, "channels_last": channels_last,
            "last_stride": last_stride, "steps": steps, "images_per_s": steps * batch / sec,
            "warmup_s": warm_s, "later_seeds": later,
            "peak_mem_gib": (torch.cuda.max_memory_allocated(dev) / 2**30) if dev.type == "cuda" else None,
            "torch": torch.__version__}
