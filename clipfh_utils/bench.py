"""Throughput benchmarks on the current device (random weights: speed does not depend on them).

Stage 2: one CLIP-ReID fine-tuning step exactly as training runs it (the method's own phase:
device augmentation of uint8 images, forward, BNNeck + classifiers, ID + triplet + i2t losses,
backward, fused Adam; the loop's own `phase_step`), the model built as every run builds it
(`build_seed_model`). Stage 3: one PromptSG step the same way
(augmentation, image encoder, inversion network, composed prompt through the frozen text tower,
interaction module, ID + triplet + SupCon, backward, Adam), then both inference modes (composed
prompt, fixed prompt) as the evaluation runs them. Stage 1: feature extraction
(normalise + encode_image). With `seeds` > 1 every further seed builds a fresh model and phase,
as a multi-seed run does, and its first steps are timed without warm-up: compilation must be paid
once per process, not once per seed.

`time_reruns` (`clipfh bench --rerun-demo`) times the `clipfh run --profile demo` command twice
into one output folder (a temporary one unless given) and reports both wall times: the second is
the unchanged re-run (nothing trains, unchanged evaluations are read back). Wall time on a shared
machine varies: it reports the load with it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from .backbones.features import autocast_for, normalize
from .backbones.loading import ClipModel, load_clip, resolve_device
from .config import build
from .methods import get_method
from .pipeline.seed_model import build_seed_model, seed_context
from .training.data import TrainData
from .training.loop import phase_step


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

    method = get_method({1: "zero_shot", 2: "clip_reid", 3: "promptsg"}[stage])
    section = {2: "finetune", 3: "optim"}.get(stage)
    cfg = build(method.config_cls, {
        "name": "bench", "method": method.name, "amp": amp, "compile": compile, "compile_mode": compile_mode,
        "compile_optimizer": compile_optimizer, "channels_last": channels_last,
        "backbone": {"name": backbone, "weights": None, "last_stride": last_stride},
        "image_size": [image_size, image_size], **({section: {"p": batch // k, "k": k}} if section else {})}, "bench")

    def make_step(seed: int) -> Callable[[int], None]:
        """A fresh backbone (and model, phase) for `seed`, as each seed of a run builds them."""
        clip = load_clip(backbone, None, dev, (image_size, image_size), seed=seed, last_stride=last_stride)
        ctx = seed_context(cfg, dev, seed, clip, method)
        model = build_seed_model(method, cfg, ctx, n_classes, train=stage != 1)
        state.update(clip=ctx.clip, model=model)
        if stage == 1:
            (encode,) = method.embedders(cfg, model).values()
            return _embed_step(torch.compile(encode) if compile else encode, images, ctx.clip, batch, dev, amp)
        phase = list(method.plan(cfg, model, data, ctx).phases)[-1]  # CLIP-ReID: fine-tuning, after the prompts
        if phase.start is not None:
            phase.start()
        phase.set_modes()
        train_step = phase_step(phase, dev, amp, compile_mode, compile_optimizer)
        batch_idx = phase.batches()

        def step(i: int) -> None:
            train_step(phase.inputs(batch_idx[i % len(batch_idx)]))
        return step

    res = _timed(make_step(0), warmup, steps, batch, dev)
    inference = {}
    if stage == 3:
        model, clip = state["model"], state["clip"]
        model.eval()
        for mode, fn in method.embedders(cfg, model).items():
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


def time_reruns(profile: str = "demo", run_dir: str | None = None, times: int = 2) -> dict:
    """Wall seconds of `times` consecutive `run --profile` invocations into one output folder."""
    with tempfile.TemporaryDirectory(prefix="clipfh-rerun-") as tmp:
        out = Path(run_dir) if run_dir else Path(tmp) / profile
        seconds = []
        for i in range(times):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "clipfh_utils", "run", "--profile", profile,
                                   "--run-dir", str(out)], env=os.environ.copy())
            seconds.append(round(time.perf_counter() - t0, 1))
            if done.returncode:
                raise RuntimeError(f"run {i + 1} of profile {profile} failed (exit {done.returncode}); "
                                   f"its output folder: {out}")
        return {"profile": profile, "run_dir": str(out) if run_dir else "(temporary)", "seconds": seconds,
                "rerun_s": seconds[-1], "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2)}
