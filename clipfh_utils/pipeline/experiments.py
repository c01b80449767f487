"""`run_experiment`: one experiment of a profile on one dataset, from config to recorded metrics.

The same for every method: name the run and decide what may happen to its folder (run_state),
build each seed's model (seed_model.build_seed_model), train it through the shared loop or load
its finished weights, evaluate it (evaluate.py: the evaluation images embedded once per seed and
inference mode, every split scored by the one evaluator), write the metrics with their provenance
and record the run in the invocation's manifest. Resolving experiments is resolve.py's job.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn

from ..atomic import atomic_write_json, require_free_space
from ..backbones.features import embed_images
from ..backbones.loading import ClipModel
from ..config import to_dict
from ..console import note
from ..data.datasets import HandDataset
from ..locks import RunLock
from ..methods import Backbone, BuildContext, ExperimentCfg, Method, get_method
from ..provenance import environment
from ..runs import now, phases_ran, read_run, seed_dir, write_run
from ..training.checkpoint import state_bytes
from ..training.data import TrainData
from ..training.loop import Trainer, is_finished, load_log
from ..training.weights import store_half_if_exact
from .banks import save_bank
from .biometrics import check_settings, write_thresholds
from .evaluate import EvalResult, evaluate_model, record_metrics, save_metrics
from .resolve import Experiment
from .reuse import unchanged_evaluations
from .run_state import RunTarget, disk_need, note_version_drift, plan_run, target_name
from .seed_model import build_seed_model, load_backbone, seed_context


@dataclass
class ExperimentResult:
    experiment: Experiment
    run_name: str
    run_dir: Path
    dataset: HandDataset
    clip: ClipModel                   # the backbone as loaded (of the first seed)
    model: nn.Module                  # the first seed's model, in eval mode
    evals: dict[tuple[int, str], EvalResult]
    per_split: pd.DataFrame           # + seed, mode columns
    per_query: pd.DataFrame
    metrics_files: dict[str, Path]
    trained_seeds: list[int]          # seeds trained in this call (empty: all loaded)
    n_classes: int = 0

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def cfg(self) -> ExperimentCfg:
        return self.experiment.cfg

    def logs(self, per: str = "step") -> pd.DataFrame | None:
        """Training logs of every seed (None for a method that does not train)."""
        if not self.experiment.method.trains:
            return None
        return pd.concat([load_log(seed_dir(self.run_dir, s), per).assign(seed=s) for s in self.cfg.seeds],
                         ignore_index=True)

    def first_eval(self, mode: str = "") -> EvalResult:
        return self.evals[(self.cfg.seeds[0], mode)]


def experiment_run_name(run, exp: Experiment, ds: HandDataset) -> tuple[str, dict]:
    """The run `exp` on `ds` is (or would be) stored as, and its identity (nothing is loaded)."""
    name, identity, _ = target_name(run.run_dir, run.profile, exp, ds)
    return name, identity


def train_or_load(method: Method, cfg: ExperimentCfg, ctx: BuildContext, data_fn: Callable[[], TrainData],
                  n_classes: int, folder: Path, *, resume: bool, progress: bool, label: str,
                  keep_checkpoint: bool = False, fp16_tolerance: float = 0.0,
                  on_epoch_end: Callable[[str, int], None] | None = None) -> tuple[nn.Module, bool]:
    """One seed: load its final weights if it finished, else train it (resuming if asked).

    Before training, the disk must hold its checkpoints; after it, the final weights are stored
    in fp16 where that moves no feature by more than `fp16_tolerance` (0: keep fp32).
    """
    if not method.trains or is_finished(folder):
        return build_seed_model(method, cfg, ctx, n_classes, weights_from=folder), False
    model = build_seed_model(method, cfg, ctx, n_classes, train=True)
    state = method.model_state(cfg, model)
    require_free_space(folder.parent, disk_need(state_bytes(state.state_dict()), 1), f"training {label}")
    data = data_fn()
    plan = method.plan(cfg, model, data, ctx)
    Trainer(folder, ctx.device, plan.state, ctx.generator, seed=ctx.seed, amp=cfg.amp,
            compile_mode=cfg.compile_mode, compile_optimizer=cfg.compile_optimizer, resume=resume,
            progress=progress, checkpoint_every=cfg.checkpoint_every, label=label,
            keep_checkpoint=keep_checkpoint, on_epoch_end=on_epoch_end, config=to_dict(cfg)).fit(plan.phases)
    model.eval()
    check_images = data.val_images if data.val_images is not None else data.images[:64]

    def features() -> torch.Tensor:
        return torch.cat([embed_images(fn, check_images, ctx.clip.mean, ctx.clip.std, ctx.device, amp=False)
                          for fn in method.embedders(cfg, model).values()], dim=1)

    info = store_half_if_exact(folder / Trainer.WEIGHTS, state, features, fp16_tolerance)
    summary = json.loads((folder / Trainer.SUMMARY).read_text())
    atomic_write_json(folder / Trainer.SUMMARY, {**summary, **info})
    return model, True


def run_experiment(run, exp: Experiment, ds: HandDataset | None = None, *, progress: bool = True
                   ) -> ExperimentResult:
    """Train (or load) every seed of `exp` on `ds`, evaluate, write metrics, record the run.

    `run` is the invocation context (clipfh_utils.pipeline.context.Invocation). The run folder is locked
    while this writes to it; what may happen to it is decided first (run_state.plan_run).
    """
    ds = ds or run.dataset
    ds.require_images()
    profile = run.profile
    clip0 = load_backbone(exp.cfg, run.device, exp.method)
    class_ids = ds.protocol().class_ids
    exp.check_data(len(class_ids))
    check_settings(profile.evaluation, ds.protocol())
    target = plan_run(run.run_dir, profile, exp, ds)
    for n in target.notes:
        note(n)
    with RunLock(target.dir, wait_s=profile.lock_wait_s) as lock:
        if target.held:  # the other writer is done: what it left decides what happens now
            target = plan_run(run.run_dir, profile, exp, ds, holding=True)
            for n in target.notes:
                note(n)
        return _run_locked(run, exp, ds, clip0, class_ids, target, lock, progress)


def _run_locked(run, exp: Experiment, ds: HandDataset, clip0: Backbone, class_ids: list[str],
                target: RunTarget, lock: RunLock, progress: bool) -> ExperimentResult:
    method, cfg, profile = exp.method, exp.cfg, run.profile
    name, rdir = target.name, target.dir
    record = read_run(rdir)
    if record is not None:
        note_version_drift(record, "resuming" if target.resume else "re-evaluating")
    else:
        record = {"name": name, "experiment": cfg.name, "method": method.name, "stage": method.stage,
                  "created": now(), "identity": target.identity, "config": to_dict(cfg),
                  "config_source": exp.source, "overrides": exp.overrides, "dataset": ds.key,
                  "data": ds.description, "real_data": ds.is_real, "backbone": clip0.record(),
                  "n_classes": len(class_ids), "seeds": {}, "environment": environment()}
        if "resumed_from" in target.identity:
            record["resumed_from"] = target.identity["resumed_from"]
    # who the model saw in training: transfer removes them from another dataset's test set
    record.setdefault("train_ids", class_ids if method.trains else [])
    record.setdefault("train_images", len(ds.protocol().train) if method.trains else 0)  # for the model card
    record.setdefault("identity_space", ds.identity_space)
    write_run(rdir, record)

    evals: dict[tuple[int, str], EvalResult] = {}
    per_split, per_query, trained, first_model = [], [], [], None
    seeds = cfg.seeds if method.trains else cfg.seeds[:1]
    kept = unchanged_evaluations(rdir, ds, cfg, name, str(run.device), list(seeds), run.variant,
                                 profile.evaluation)
    read_back = set()
    for seed in seeds:
        ctx = seed_context(cfg, run.device, seed, clip0 if seed == seeds[0] else None, method)
        clip, folder = ctx.clip, target.seed_dir(seed)
        target.prepare_seed(seed)
        model, did_train = train_or_load(method, cfg, ctx, lambda: run.train_data(ds, clip.image_size),
                                         len(class_ids), folder, resume=target.resume,
                                         progress=progress, label=f"{cfg.name} seed {seed}",
                                         keep_checkpoint=profile.keep_checkpoint,
                                         fp16_tolerance=profile.fp16_tolerance,
                                         on_epoch_end=lambda phase, epoch: lock.check())
        if did_train:
            trained.append(seed)
            summary = json.loads((folder / Trainer.SUMMARY).read_text())
            record["seeds"][str(seed)] = {"finished": True, "trained": now(), "environment": environment(),
                                          **{k: summary[k] for k in summary if k.startswith(("weights_", "fp16_"))},
                                          **phases_ran(summary)}
            write_run(rdir, record)
        first_model = first_model or model
        for mode, embed in method.embedders(cfg, model).items():
            label = cfg.name + (f" [{mode}]" if mode else "") + (f" seed {seed}" if method.trains else "")
            if mode in kept and not did_train:
                ev = kept[mode].result(seed, ds, run.images, label, profile.evaluation)
                read_back.add((seed, mode))
            else:  # (read back: its thresholds were written with it, from the same weights and settings)
                ev = evaluate_model(embed, clip, cfg, ds, run.images, run.device, label,
                                    settings=profile.evaluation)
                if profile.evaluation.verification:
                    write_thresholds(rdir, seed, mode, embed, clip, cfg, run.train_data(ds, clip.image_size),
                                     run.device, profile.evaluation, method.trains, ds.key)
            evals[(seed, mode)] = ev
            per_split.append(ev.per_split.assign(seed=seed, mode=mode))
            per_query.append(ev.per_query.assign(seed=seed, mode=mode))
    per_split_df = pd.concat(per_split, ignore_index=True)
    per_query_df = pd.concat(per_query, ignore_index=True)
    lock.check()
    if read_back == set(evals):  # nothing changed: the files stay as evaluated, listed in this invocation
        files = {mode: k.path for mode, k in kept.items() if any(m == mode for _, m in evals)}
        for mode, path in files.items():
            record_metrics(run, exp, ds, record, mode, path)
    else:
        files = save_metrics(run, exp, ds, rdir, record, clip0, per_split_df, per_query_df, evals)
        save_banks(files, evals, name, ds.key)
    return ExperimentResult(exp, name, rdir, ds, clip0, first_model, evals, per_split_df, per_query_df,
                            files, trained, len(class_ids))


def save_banks(files: dict[str, Path], evals: dict[tuple[int, str], EvalResult], run_name: str,
               dataset: str) -> None:
    """Beside each mode's metrics file, the features every seed was scored from (banks.py)."""
    for mode, path in files.items():
        of_mode = {s: ev for (s, m), ev in evals.items() if m == mode}
        size = tuple(next(iter(of_mode.values())).images.shape[2:])
        save_bank(path, run_name, mode, dataset, size, {s: ev.bank for s, ev in of_mode.items()})


def before_training(run, result: ExperimentResult) -> EvalResult:
    """The experiment's backbone as loaded, before any training, on the same evaluation images
    (not recorded as a result: a reference view for figures such as t-SNE before/after)."""
    cfg = result.cfg
    zero_shot = get_method("zero_shot")
    ctx = seed_context(cfg, run.device, 0, method=zero_shot)
    model = build_seed_model(zero_shot, cfg, ctx, 0)
    return evaluate_model(model.embed, ctx.clip, cfg, result.dataset, run.images, run.device,
                          f"{cfg.backbone.name} before training")
