"""Evaluate a model on a dataset's protocol and write its metrics.

The evaluation images are embedded once per model (seed, mode); every split of both protocols is
scored from that one feature bank by the one evaluator. Metrics files are named and filled by
clipfh_utils.runs (`metrics_path`, `metrics_payload`); this module writes them atomically with
their per-split and per-query tables and records them in the invocation's manifest.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from ..atomic import atomic_path, atomic_write_json
from ..backbones.features import embed_images
from ..backbones.loading import ClipModel
from ..data.datasets import HandDataset
from ..config import EvaluationCfg, to_dict
from ..data.protocol import Protocol, SplitRow
from ..methods import ExperimentCfg
from ..evaluation import FeatureBank, evaluate_protocol, summarize
from ..report.model_card import write_model_card
from ..runs import (entry_key, metrics_path, metrics_payload, now, per_query_path, read_run, record_entry, relpath,
                   run_of_metrics_file, seed_dir, split_csv_path)
from ..training.loop import Trainer
from .biometrics import Extra, add_biometrics, evaluate_extra, reranked_payload


@dataclass
class EvalResult:
    """Features of one model (seed, mode) on every evaluation image, and its metrics per split."""
    name: str
    bank: FeatureBank
    images: torch.Tensor              # uint8 eval images, in bank order
    rows: list[SplitRow]
    per_split: pd.DataFrame           # protocol, split, rank1, rank5, rank10, mAP, cmc
    per_query: pd.DataFrame           # protocol, split, query, person_id, rank, ap
    images_per_s: float
    protocol: Protocol                # as evaluated (its n_splits and split seed go in the metrics)
    extra: Extra = field(default_factory=Extra)   # what the profile's evaluation settings add


def evaluate_model(embed: Callable[[torch.Tensor], torch.Tensor], clip: ClipModel, cfg: ExperimentCfg,
                   ds: HandDataset, images_fn: Callable, device: torch.device, name: str,
                   proto: Protocol | None = None, settings: EvaluationCfg | None = None) -> EvalResult:
    """Embed every evaluation image once, then score all splits and both protocols (of `ds`, or
    `proto`: the dataset's protocol with some identities removed, for transfer); with `settings`
    also verification, open-set and re-ranking from the same features."""
    proto = proto or ds.protocol()
    rows = proto.eval_rows()
    images, index = images_fn(ds, rows, clip.image_size)
    if cfg.compile and device.type == "cuda":
        embed = torch.compile(embed)  # graphs shared across seeds and stages (dynamo caches per code)
    t0 = time.perf_counter()
    feats = embed_images(embed, images, clip.mean, clip.std, device, cfg.eval_batch_size,
                         flip=cfg.flip_test, amp=cfg.amp)
    seconds = time.perf_counter() - t0
    return score_bank(name, FeatureBank(feats, index), images, proto, len(images) / seconds if seconds else 0.0,
                      ds, settings)


def score_bank(name: str, bank: FeatureBank, images: torch.Tensor, proto: Protocol, images_per_s: float,
               ds: HandDataset, settings: EvaluationCfg | None = None) -> EvalResult:
    """Every split of both protocols scored from one feature bank (just embedded, or read back)."""
    per_query: list[pd.DataFrame] = []
    per_split = evaluate_protocol(bank, proto, with_cmc=True, per_query=per_query)
    return EvalResult(name, bank, images, proto.eval_rows(), per_split, pd.concat(per_query, ignore_index=True),
                      images_per_s, proto, evaluate_extra(bank, proto, ds, settings))


def save_metrics(run, exp, ds: HandDataset, rdir: Path, record: dict, clip: ClipModel,
                 per_split: pd.DataFrame, per_query: pd.DataFrame, evals: dict[tuple[int, str], EvalResult]
                 ) -> dict[str, Path]:
    """One metrics file per inference mode of experiment `exp`'s run `rdir` on `ds`, with
    everything that produced its numbers; each is recorded in the invocation's manifest."""
    method, cfg = exp.method, exp.cfg
    files = {}
    for mode in per_split["mode"].unique():
        rows = per_split[per_split["mode"] == mode].drop(columns=["cmc", "mode"])
        queries = per_query[per_query["mode"] == mode].drop(columns="mode")
        proto = next(ev.protocol for (_, m), ev in evals.items() if m == mode)
        path = metrics_path(rdir, ds.key, mode, proto.n_splits, cfg.flip_test)
        payload = metrics_payload(
            record, mode, clip, cfg, proto, ds, method_title=method.title, trains=method.trains,
            device=str(run.device), profile=run.profile.name, invocation=run.invocation,
            seeds=list(cfg.seeds if method.trains else cfg.seeds[:1]),
            model=cfg.name + (f" [{mode}]" if mode else "") + (f" {{{run.variant_label}}}" if run.variant else ""),
            variant=run.variant, config_source=exp.source, overrides=exp.overrides,
            train=_train_times(rdir, cfg.seeds if method.trains else []),
            embed_images_per_s={str(s): ev.images_per_s for (s, m), ev in evals.items() if m == mode},
            evaluation_settings=to_dict(run.profile.evaluation))
        extras = {s: ev.extra for (s, m), ev in evals.items() if m == mode}
        payload, rows, queries = add_biometrics(payload, rows, queries, extras, run.profile.evaluation)
        write_metrics(path, payload, rows, queries)
        files[mode] = path
        entry = record_metrics(run, exp, ds, record, mode, path)
        twin = reranked_payload(payload, extras, run.profile.evaluation)
        if twin is not None:  # its own file and manifest entry: beside the plain numbers, never instead
            rr_path = metrics_path(rdir, ds.key, mode, proto.n_splits, cfg.flip_test, reranked=True)
            write_metrics(rr_path, *twin)
            record_entry(run.run_dir, run.invocation,
                         entry_key(cfg.name, mode, ds.key, "+".join(filter(None, [run.variant_label, "rerank"]))),
                         {**entry, "metrics": relpath(rr_path, run.run_dir)})
    return files


def record_metrics(run, exp, ds: HandDataset, record: dict, mode: str, path: Path, **extra) -> None:
    """List one metrics file of run `record["name"]` in the invocation's manifest (written now,
    read back unchanged, or a sweep job's existing result: `skipped=True`)."""
    cfg, method = exp.cfg, exp.method
    entry = {
        "run": record["name"], "experiment": cfg.name, "mode": mode, "stage": method.stage,
        "method": method.name, "dataset": ds.key, "metrics": relpath(path, run.run_dir),
        "variant": run.variant, "recorded": now(), **extra}
    record_entry(run.run_dir, run.invocation, entry_key(cfg.name, mode, ds.key, run.variant_label), entry)
    return entry


def _train_times(rdir: Path, seeds) -> dict[str, dict]:
    """Training seconds and images/s of each finished seed (its summary.json)."""
    train = {}
    for s in seeds:
        f = seed_dir(rdir, s) / Trainer.SUMMARY
        if f.exists():
            t = json.loads(f.read_text())
            train[str(s)] = {"seconds": t["seconds"], "images_per_s": t["images_per_s"]}
    return train


def write_metrics(path: Path, payload: dict, per_split: pd.DataFrame, per_query: pd.DataFrame) -> None:
    """A metrics file (payload + per-split rows + their summary) and its .csv / .per_query.csv.gz."""
    summary = summarize(per_split)
    payload = {**payload, "per_split": per_split.to_dict(orient="records"),
               "summary": {p: {m: {"mean": float(summary.loc[p, ("mean", m)]),
                                   "sd": float(summary.loc[p, ("sd", m)])}
                               for m in ("rank1", "rank5", "rank10", "mAP")} for p in summary.index}}
    atomic_write_json(path, payload)
    with atomic_path(split_csv_path(path)) as tmp:
        per_split.to_csv(tmp, index=False)
    with atomic_path(per_query_path(path)) as tmp:
        per_query.to_csv(tmp, index=False, compression="gzip")
    rdir = run_of_metrics_file(path)
    if read_run(rdir) is not None:  # the run's card lists every evaluation, this one included
        write_model_card(rdir)


