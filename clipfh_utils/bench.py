"""Throughput benchmarks on the current device (random weights: speed does not depend on them).

Stage 2: one CLIP-ReID fine-tuning step exactly as training runs it (the method's own phase:
device augmentation of uint8 images, forward, BNNeck + classifiers, ID + triplet + i2t losses,
backward, fused Adam; the loop's own `optimizer_step`). Stage 3: one PromptSG step the same way
(augmentation, image encoder, inversion network, composed prompt through the frozen text tower,
interaction module, ID + triplet + SupCon, backward, Adam), then both inference modes (composed
prompt, fixed prompt) as the evaluation runs them. Stage 1: feature extraction
(normalise + encode_image). With `seeds` > 1 every further seed builds a fresh model and phase,
as a multi-seed run does, and its first steps are timed without warm-up: compilation must be paid
once per process, not once per seed.
"""
from __future__ import annotations

import functools
import time
from typing import Callable

import torch

from .backbones.features import autocast_for, normalize
from .backbones.loading import ClipModel, load_clip, resolve_device
from .config import build
from .methods import BuildContext
from .methods.clip_reid.config import ClipReidCfg
from .methods.clip_reid.model import ClipReid
from .methods.clip_reid.train import finetune_phase
from .methods.promptsg import METHOD as PROMPTSG
from .methods.promptsg.config import PromptSGCfg
from .methods.promptsg.train import train_phase as promptsg_phase
from .training.data import TrainData
from .training.loop import Phase, optimizer_step
from .training.sampler import PKSampler


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(step: Callable[[int], None], warmup: int, steps: int, batch: int, dev: torch.device) -> dict:
    """images/s of `steps` calls after `warmup` calls, and the peak device memory of the part."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    _sync(dev)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    _sync(dev)
    sec = time.perf_counter() - t0
    return {"images_per_s": steps * batch / sec, "warmup_s": warm_s,
            "peak_mem_gib": (torch.cuda.max_memory_allocated(dev) / 2**30) if dev.type == "cuda" else None}


def _train_step(phase: Phase, dev: torch.device, amp: bool, compile: bool, compile_mode: str,
                compile_optimizer: bool = False) -> Callable[[int], None]:
    """One training step of `phase` exactly as the loop runs it."""
    loss_fn = torch.compile(phase.loss, mode=compile_mode) if compile else phase.loss
    if phase.loss_args:
        loss_fn = functools.partial(loss_fn, *phase.loss_args)
    opt_step = torch.compile(phase.optimizer.step) if compile and compile_optimizer else None
    if phase.start is not None:
        phase.start()
    batch_idx = phase.batches()

    def step(i: int) -> None:
        optimizer_step(loss_fn, phase.optimizer, phase.inputs(batch_idx[i % len(batch_idx)]),
                       phase.terms, dev, amp, opt_step)
    return step


def _embed_step(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, clip: ClipModel,
                batch: int, dev: torch.device, amp: bool) -> Callable[[int], None]:
    """Normalise + embed one batch, as `embed_images` does during evaluation."""
    @torch.inference_mode()
    def step(i: int) -> None:
        s = (i * batch) % (images.shape[0] - batch + 1)
        with autocast_for(dev, amp):
            fn(normalize(images[s:s + batch], clip.mean, clip.std))
    return step


def bench(stage: int = 2, backbone: str = "ViT-B-16", batch: int = 64, steps: int = 30,
          warmup: int = 5, image_size: int = 224, device: str = "auto", amp: bool = True,
          compile: bool = False, n_classes: int = 72, compile_mode: str = "default",
          last_stride: int = 2, infer_batch: int = 256, seeds: int = 1, compile_optimizer: bool = False,
          channels_last: bool = False) -> dict:
    """Stage 1 / 2 / 3 throughput. Stage 3 also times its two inference modes at `infer_batch`
    (result["inference"][mode]: images/s, peak memory)."""
    if stage not in (1, 2, 3):
        raise ValueError("stage must be 1, 2 or 3")
    dev = resolve_device(device)
    amp = amp and dev.type == "cuda"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    n_images = max(4 * batch, infer_batch if stage == 3 else 0, 256)
    images = torch.randint(0, 256, (n_images, 3, image_size, image_size), dtype=torch.uint8, device=dev,
                           generator=torch.Generator(device=dev).manual_seed(0))
    labels = torch.arange(images.shape[0], device=dev) % n_classes
    data = TrainData(images, labels, [str(i) for i in range(n_classes)])
    k = 4
    state: dict = {}

    def make_step(seed: int) -> Callable[[int], None]:
        """A fresh backbone (and model, phase) for `seed`, as each seed of a run builds them."""
        clip = load_clip(backbone, None, dev, (image_size, image_size), seed=seed, last_stride=last_stride)
        if channels_last and clip.kind == "rn" and dev.type == "cuda":
            clip.model.visual.to(memory_format=torch.channels_last)
        state["clip"] = clip
        if stage == 1:
            encode = torch.compile(clip.model.encode_image) if compile else clip.model.encode_image
            return _embed_step(encode, images, clip, batch, dev, amp)
        ctx = BuildContext(clip, dev, seed, torch.Generator(device=dev).manual_seed(seed), amp)
        sampler = PKSampler(labels.cpu().tolist(), batch // k, k, seed)
        torch.manual_seed(seed)
        common = {"name": "bench", "amp": amp, "compile": compile, "compile_mode": compile_mode}
        if stage == 2:
            cfg = build(ClipReidCfg, {**common, "finetune": {"p": batch // k, "k": k}}, "bench")
            model = ClipReid(cfg, clip, n_classes)
            phase = finetune_phase(cfg, model, data, ctx, sampler)
            model.image.train()
        else:
            cfg = build(PromptSGCfg, {**common, "optim": {"p": batch // k, "k": k}}, "bench")
            model = PROMPTSG.build(cfg, ctx, n_classes)
            phase = promptsg_phase(cfg, model, data, ctx, sampler)
            model.train()
        state.update(cfg=cfg, model=model)
        return _train_step(phase, dev, amp, compile, compile_mode, compile_optimizer)

    res = _timed(make_step(0), warmup, steps, batch, dev)
    inference = {}
    if stage == 3:
        model, cfg, clip = state["model"], state["cfg"], state["clip"]
        model.eval()
        for mode, fn in PROMPTSG.embedders(cfg, model).items():
            inference[mode] = _timed(_embed_step(fn, images, clip, infer_batch, dev, amp), warmup, steps,
                                     infer_batch, dev)
    later = []
    for seed in range(1, seeds):  # a fresh model, as the next seed of a run builds: no warm-up
        t = _timed(make_step(seed), 0, steps, batch, dev)
        later.append({"seed": seed, "first_steps_img_s": t["images_per_s"]})
    return {"stage": stage, "backbone": backbone, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "batch": batch, "image_size": image_size, "amp_bf16": amp, "compile": compile and compile_mode,
            "compile_optimizer": compile and compile_optimizer, "channels_last": channels_last,
            "last_stride": last_stride, "steps": steps, **res, "later_seeds": later, "torch": torch.__version__,
            **({"infer_batch": infer_batch, "inference": inference} if stage == 3 else {})}
