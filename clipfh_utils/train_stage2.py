"""Stage 2: CLIP-ReID two-stage training, as two plain loops.

2a learns identity prompts with both encoders frozen (only the text encoder runs: the image
features of the training set are computed once). 2b fine-tunes the image encoder against the
frozen identity text features with ID + triplet + image-to-text losses.

Speed: images stay on the device as uint8 and are augmented there; bf16 autocast and fused
Adam on CUDA; loss terms go into a device buffer and the host reads them once per epoch (for
the log and the NaN check). Every epoch ends with an atomic checkpoint that holds everything
needed to continue bit-for-bit (weights, optimiser, sampler, RNG).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from .config import FinetuneCfg, PromptCfg, Stage2Cfg, to_dict
from .evaluation import rank_metrics
from .features import autocast_for, embed_images
from .losses import CenterLoss, reid_losses, supcon_loss
from .models import ClipModel
from .prompts import PromptLearner, TextEncoder, encode_all_identities
from .reid_model import ReIDModel
from .sampler import PKSampler
from .schedules import set_lr, warmup_cosine, warmup_multistep
from .augment import DeviceAugment


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/inf; the run stops and the last good checkpoint is kept."""


@dataclass
class TrainData:
    images: torch.Tensor               # uint8 (N,3,H,W) on the training device
    labels: torch.Tensor               # long (N,), 0..C-1
    class_ids: list[str]               # person id of each label
    val_images: Optional[torch.Tensor] = None
    val_labels: Optional[torch.Tensor] = None

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)


@dataclass
class Stage2Result:
    clip: ClipModel
    model: ReIDModel
    prompts: PromptLearner
    text: TextEncoder
    out_dir: Path
    seed: int


class JsonlLog:
    """Per-step and per-epoch records. A fresh run starts empty (no appending across runs);
    a resumed run keeps only the records before the epoch it resumes from."""

    def __init__(self, path: Path, resume_from: tuple[str, int] | None):
        self.path = path
        kept = []
        if resume_from is not None and path.exists():
            order = {"prompt": 0, "finetune": 1}
            phase, epoch = resume_from
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the interruption
                    continue
                if (order[rec["phase"]], rec["epoch"]) <= (order[phase], epoch):
                    kept.append(line)
        path.write_text("".join(k + "\n" for k in kept))

    def write(self, records: list[dict]) -> None:
        with open(self.path, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")


class TrainLog:
    """log.jsonl: one record per step; epochs.jsonl: per-epoch means, lrs and monitor values."""

    def __init__(self, out_dir: Path, resume_from: tuple[str, int] | None):
        self.steps = JsonlLog(out_dir / "log.jsonl", resume_from)
        self.epochs = JsonlLog(out_dir / "epochs.jsonl", resume_from)

    def write(self, records: list[dict], **epoch_extra) -> None:
        self.steps.write(records)
        keys = [k for k, v in records[0].items() if isinstance(v, float)]
        summary = {"phase": records[0]["phase"], "epoch": records[0]["epoch"], "steps": len(records),
                   **{k: sum(r[k] for r in records) / len(records) for k in keys}, **epoch_extra}
        self.epochs.write([summary])


def _check_finite(terms: torch.Tensor, names: list[str], phase: str, epoch: int) -> None:
    bad = (~torch.isfinite(terms)).any(1).nonzero()
    if len(bad):
        step = int(bad[0])
        values = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, terms[step].tolist()))
        raise NonFiniteLossError(f"non-finite loss in stage 2{'a' if phase == 'prompt' else 'b'} "
                                 f"at epoch {epoch} step {step}: {values}; lower the learning rate "
                                 "(or set amp: false) and resume from the last checkpoint")


def _bar(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, leave=False)


# --------------------------------------------------------------------------- stage 2a

def train_prompts(clip: ClipModel, prompts: PromptLearner, text: TextEncoder, data: TrainData,
                  cfg: PromptCfg, device: torch.device, amp: bool, g: torch.Generator,
                  log: "TrainLog", checkpoint: Callable[[str, int, dict], None],
                  start_epoch: int = 0, opt_state: dict | None = None, progress: bool = False
                  ) -> None:
    img_feats = embed_images(clip.model.encode_image, data.images, clip.mean, clip.std, device,
                             normalize_output=False, amp=amp).to(device).clone()
    labels = data.labels
    opt = torch.optim.Adam([{"params": [prompts.ctx], "base_lr": cfg.lr}], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    if opt_state:
        opt.load_state_dict(opt_state)
    n = labels.shape[0]
    for epoch in _bar(range(start_epoch, cfg.epochs), progress, "stage 2a prompts"):
        (lr,) = set_lr(opt, warmup_cosine(epoch, cfg.lr, cfg.epochs, cfg.warmup_epochs,
                                          cfg.warmup_lr, cfg.min_lr) / cfg.lr)
        perm = torch.randperm(n, generator=g, device=device)
        starts = range(0, n, cfg.batch_size)  # never yields an empty batch
        terms = torch.zeros(len(starts), 1, device=device)
        for step, s in enumerate(starts):
            idx = perm[s:s + cfg.batch_size]
            y = labels[idx]
            with autocast_for(device, amp):
                tf = text(*prompts(y)).float()
            imf = img_feats[idx]
            loss = supcon_loss(imf, tf, y, y) + supcon_loss(tf, imf, y, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            terms[step, 0] = loss.detach()
        terms = terms.cpu()
        _check_finite(terms, ["supcon"], "prompt", epoch)
        log.write([{"phase": "prompt", "epoch": epoch, "step": i, "loss": float(t[0]), "lr": lr}
                   for i, t in enumerate(terms)])
        checkpoint("prompt", epoch, {"optimizer": opt.state_dict()})


# --------------------------------------------------------------------------- stage 2b

def param_groups(model: ReIDModel, cfg: FinetuneCfg, center: CenterLoss | None,
                 text: TextEncoder | None) -> list[dict]:
    """One group per kind of module, each with the lr its config names."""
    heads = [p for m in (model.bn, model.bn_proj, model.classifier, model.classifier_proj)
             for p in m.parameters() if p.requires_grad]
    groups = [{"name": "image_encoder", "params": [p for p in model.visual.parameters()],
               "base_lr": cfg.lr},
              {"name": "heads", "params": heads, "base_lr": cfg.head_lr or cfg.lr}]
    if center is not None:
        groups.append({"name": "center", "params": list(center.parameters()),
                       "base_lr": cfg.center_lr, "weight_decay": 0.0})
    if text is not None:
        groups.append({"name": "text_encoder", "params": [p for p in text.parameters()],
                       "base_lr": cfg.text_lr})
    return groups


def make_optimizer(groups: list[dict], cfg: FinetuneCfg, device: torch.device) -> torch.optim.Adam:
    for g in groups:
        g["lr"] = g["base_lr"]
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=device.type == "cuda")


def make_loss_fn(model: ReIDModel, cfg: FinetuneCfg, center: CenterLoss | None) -> Callable:
    """forward + Stage 2b losses as one function: the unit `torch.compile` sees."""
    def loss_fn(x: torch.Tensor, labels: torch.Tensor, text_features: torch.Tensor):
        out = model(x, labels)
        return reid_losses(out, labels, text_features, cfg.loss_weights, cfg.triplet_margin,
                           cfg.label_smoothing, center)
    return loss_fn


def train_step(loss_fn: Callable, opt: torch.optim.Optimizer, aug: DeviceAugment,
               images: torch.Tensor, labels: torch.Tensor, text_features: torch.Tensor,
               device: torch.device, amp: bool) -> torch.Tensor:
    """One optimisation step; returns the detached loss terms [total, id, triplet, i2t(, center)]."""
    x = aug(images)
    with autocast_for(device, amp):
        total, terms = loss_fn(x, labels, text_features)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return torch.stack([total, *terms.values()]).detach().float()


@torch.no_grad()
def monitor_val(model: ReIDModel, clip: ClipModel, data: TrainData, device: torch.device,
                amp: bool) -> dict[str, float]:
    """Validation images of TRAINING identities vs the training images: never test ids."""
    model.eval()
    q = embed_images(model.embed, data.val_images, clip.mean, clip.std, device, amp=amp)
    g = embed_images(model.embed, data.images, clip.mean, clip.std, device, amp=amp)
    model.train()
    res = rank_metrics(q @ g.T, data.val_labels.cpu(), data.labels.cpu())
    return {f"val_{k}": v for k, v in res.items()}


def train_stage2(cfg: Stage2Cfg, clip: ClipModel, data: TrainData, out_dir: str | Path,
                 device: torch.device, seed: int = 0, resume: bool = False, progress: bool = False,
                 on_epoch_end: Callable[[str, int], None] | None = None) -> Stage2Result:
    """Run 2a then 2b for one seed; checkpoints in out_dir/checkpoint.pt.

    With `resume`, continue from that checkpoint when there is one (a finished run is just
    reloaded); without one, start from scratch.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    state = load_checkpoint(ckpt_path) if resume and ckpt_path.exists() else None
    if state is not None and state["seed"] != seed:
        raise ValueError(f"{ckpt_path}: checkpoint is for seed {state['seed']}, not {seed}")
    amp = cfg.amp and device.type == "cuda"
    fcfg, pcfg = cfg.finetune, cfg.prompt

    torch.manual_seed(seed)
    for p in clip.model.parameters():
        p.requires_grad_(False)
    prompts = PromptLearner(clip, data.n_classes, pcfg.template, pcfg.n_ctx).to(device)
    text = TextEncoder(clip.model).to(device)
    model = ReIDModel(clip, data.n_classes, fcfg.classifier, fcfg.arcface_s, fcfg.arcface_m).to(device)
    center = CenterLoss(data.n_classes, model.dims[1]).to(device) if fcfg.loss_weights.center > 0 else None
    g = torch.Generator(device=device).manual_seed(seed)
    sampler = PKSampler(data.labels.cpu().tolist(), fcfg.p, fcfg.k, seed)
    log = TrainLog(out_dir, (state["phase"], state["epoch"]) if state is not None else None)

    def checkpoint(phase: str, epoch: int, extra: dict) -> None:
        save_checkpoint(ckpt_path, {
            "phase": phase, "epoch": epoch, "seed": seed, "config": to_dict(cfg),
            "prompts": prompts.state_dict(), "model": model.state_dict(),
            "center": center.state_dict() if center is not None else None,
            "text": text.state_dict() if fcfg.train_text_encoder else None,
            "sampler": sampler.state_dict(), "rng": rng_state(g), **extra})
        if on_epoch_end is not None:
            on_epoch_end(phase, epoch)

    phase, epoch0 = ("prompt", 0)
    if state is not None:
        prompts.load_state_dict(state["prompts"])
        model.load_state_dict(state["model"])
        if center is not None:
            center.load_state_dict(state["center"])
        if state["text"] is not None:
            text.load_state_dict(state["text"])
        sampler.load_state_dict(state["sampler"])
        restore_rng_state(state["rng"], g)
        phase, epoch0 = state["phase"], state["epoch"] + 1

    if phase == "prompt":
        model.eval()
        train_prompts(clip, prompts, text, data, pcfg, device, amp, g, log, checkpoint,
                      start_epoch=epoch0, opt_state=state.get("optimizer") if state else None,
                      progress=progress)
        phase, epoch0, state = "finetune", 0, None
    prompts.ctx.requires_grad_(False)

    # ---- 2b
    for p in model.visual.parameters():
        p.requires_grad_(True)
    trainable_text = text if fcfg.train_text_encoder else None
    if trainable_text is not None:
        for p in text.parameters():
            p.requires_grad_(True)
        all_ids = torch.arange(data.n_classes, device=device)
        text_features = lambda: text(*prompts(all_ids)).float()  # noqa: E731
    else:
        frozen = encode_all_identities(prompts, text, data.n_classes)
        text_features = lambda: frozen  # noqa: E731
    opt = make_optimizer(param_groups(model, fcfg, center, trainable_text), fcfg, device)
    if state is not None and phase == "finetune":
        opt.load_state_dict(state["optimizer"])
    aug = DeviceAugment(fcfg.augment, clip.mean, clip.std, g)
    loss_fn = make_loss_fn(model, fcfg, center)
    if cfg.compile and device.type == "cuda":
        loss_fn = torch.compile(loss_fn, mode=cfg.compile_mode)
    names = ["total", "id", "triplet", "i2t"] + (["center"] if center is not None else [])
    group_names = [grp["name"] for grp in opt.param_groups]

    for epoch in _bar(range(epoch0, fcfg.epochs), progress, "stage 2b fine-tune"):
        lrs = set_lr(opt, warmup_multistep(epoch, fcfg.milestones, fcfg.gamma,
                                           fcfg.warmup_epochs, fcfg.warmup_factor))
        model.train()
        batches = torch.from_numpy(np.stack(sampler.epoch())).to(device)  # one copy per epoch
        terms = torch.zeros(len(batches), len(names), device=device)
        for step, idx in enumerate(batches):
            terms[step] = train_step(loss_fn, opt, aug, data.images[idx], data.labels[idx],
                                     text_features(), device, amp)
        terms = terms.cpu()
        _check_finite(terms, names, "finetune", epoch)
        lr_log = {f"lr_{n}": lr for n, lr in zip(group_names, lrs)}
        records = [{"phase": "finetune", "epoch": epoch, "step": i,
                    **dict(zip(names, map(float, t))), **lr_log} for i, t in enumerate(terms)]
        monitor = {}
        if fcfg.monitor_every and data.val_images is not None and (epoch + 1) % fcfg.monitor_every == 0:
            monitor = monitor_val(model, clip, data, device, amp)
        log.write(records, **monitor)
        checkpoint("finetune", epoch, {"optimizer": opt.state_dict()})

    model.eval()
    return Stage2Result(clip, model, prompts, text, out_dir, seed)


def load_log(out_dir: str | Path, per: str = "step"):
    """The JSON-lines log as a DataFrame: one row per step, or per epoch (`per="epoch"`)."""
    import pandas as pd
    path = Path(out_dir) / ("log.jsonl" if per == "step" else "epochs.jsonl")
    return pd.DataFrame([json.loads(x) for x in path.read_text().splitlines()])
