"""What the stage notebooks run: each stage end to end, from profile to metrics files.

Features are extracted ONCE per model for every image any split uses; the 10 Monte Carlo
splits only index that feature matrix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from .config import BackboneCfg, Stage2Cfg, load_stage2
from .evaluation import FeatureBank, evaluate_protocol
from .features import embed_images
from .models import ClipModel, load_clip
from .protocol import SplitRow
from .results import save_metrics
from .train_stage2 import Stage2Result, TrainData, load_log, train_stage2
from .workbook import Run


@dataclass
class EvalResult:
    """Features and metrics of one model on the test images of every split."""
    name: str
    clip: ClipModel
    bank: FeatureBank
    images: torch.Tensor              # uint8 eval images, in bank order
    rows: list[SplitRow]
    per_split: pd.DataFrame           # protocol, [seed,] split, rank1, rank5, rank10, mAP, cmc
    metrics_file: Path | None = None


def evaluate_embedder(run: Run, fn, clip: ClipModel, flip: bool = False, batch_size: int = 256
                      ) -> tuple[FeatureBank, torch.Tensor, list[SplitRow], pd.DataFrame]:
    """Embed every evaluation image once with `fn`, then score all splits and both protocols."""
    proto = run.protocol()
    rows = proto.eval_rows()
    images, index = run.images(rows, clip.image_size)
    feats = embed_images(fn, images, clip.mean, clip.std, run.device, batch_size, flip=flip)
    bank = FeatureBank(feats, index)
    return bank, images, rows, evaluate_protocol(bank, proto, with_cmc=True)


def run_zero_shot(run: Run, backbone: BackboneCfg, save: bool = True) -> EvalResult:
    """Stage 1: frozen CLIP image features, cosine similarity (metrics file unless save=False)."""
    run.require_images()
    clip = load_clip(backbone.name, backbone.weights, run.device)
    cfg = run.profile.stage1
    bank, images, rows, per_split = evaluate_embedder(run, clip.model.encode_image, clip,
                                                      cfg.flip, cfg.batch_size)
    path = save_metrics(run.run_dir, "stage1", clip.name, per_split.drop(columns="cmc"),
                        {**run.provenance(clip), "flip": cfg.flip}) if save else None
    return EvalResult(clip.name, clip, bank, images, rows, per_split, path)


def make_train_data(run: Run, size_hw: tuple[int, int]) -> TrainData:
    """Training images of the protocol's training ids (labels 0..C-1), plus their val images."""
    proto = run.protocol()
    class_ids = sorted({r.person_id for r in proto.train}, key=int)
    label_of = {pid: i for i, pid in enumerate(class_ids)}
    val = [r for r in proto.val if r.person_id in label_of]
    images, _ = run.images(proto.train, size_hw)
    val_images, _ = run.images(val, size_hw)
    dev = run.device
    return TrainData(images.to(dev), torch.tensor([label_of[r.person_id] for r in proto.train], device=dev),
                     class_ids, val_images.to(dev),
                     torch.tensor([label_of[r.person_id] for r in val], device=dev))


@dataclass
class Stage2Report:
    cfg: Stage2Cfg
    results: list[Stage2Result] = field(default_factory=list)
    evals: list[EvalResult] = field(default_factory=list)
    per_split: pd.DataFrame | None = None
    logs: pd.DataFrame | None = None
    metrics_file: Path | None = None


def run_stage2(run: Run, config: str | Path, overrides: list[str] | dict | None = None,
               resume: bool = False, progress: bool = True) -> Stage2Report:
    """Stage 2 for every seed of the config: train, embed the test images once, score all splits."""
    cfg = load_stage2(config, overrides)
    run.require_images()
    report = Stage2Report(cfg)
    per_seed, logs = [], []
    for seed in cfg.seeds:
        clip = load_clip(cfg.backbone.name, cfg.backbone.weights, run.device, tuple(cfg.image_size))
        data = make_train_data(run, clip.image_size)
        out_dir = run.stage_dir("stage2", cfg.name, f"seed{seed}")
        result = train_stage2(cfg, clip, data, out_dir, run.device, seed, resume=resume,
                              progress=progress)
        bank, images, rows, per_split = evaluate_embedder(
            run, result.model.embed, clip, cfg.finetune.flip_test, cfg.eval_batch_size)
        per_split.insert(1, "seed", seed)
        report.results.append(result)
        report.evals.append(EvalResult(f"{cfg.name} seed {seed}", clip, bank, images, rows, per_split))
        per_seed.append(per_split)
        logs.append(load_log(out_dir).assign(seed=seed))
    report.per_split = pd.concat(per_seed, ignore_index=True)
    report.logs = pd.concat(logs, ignore_index=True)
    clip = report.results[0].clip
    report.metrics_file = save_metrics(
        run.run_dir, "stage2", cfg.name, report.per_split.drop(columns="cmc"),
        {**run.provenance(clip), "weights": f"fine-tuned from {clip.weights}",
         "seeds": list(cfg.seeds), "config": str(config)})
    return report
