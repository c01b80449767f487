"""Stages as data: the experiments a profile lists, resolved, trained (or loaded), evaluated, recorded.

A profile's `experiments` are "stage1" (zero-shot, one experiment per profile backbone) and method
configs ("clip_reid/stage2_vitb16" = configs/clip_reid/stage2_vitb16.yaml, or a path). Overrides
address one experiment by name (`-p demo_tiny_vit.finetune.lr=1e-3`) or all of them
(`-p '*.seeds=[0]'`); a '*' override skips experiments whose config has no such section.

`run_experiment` is the same for every method: load the backbone, build the model, train each
seed through the shared loop (or load the finished run), embed the evaluation images once per
seed and inference mode, score every split with the one evaluator, write the metrics with their
provenance and record the run in the invocation's manifest.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn

from ..atomic import atomic_path, atomic_write_json, require_free_space
from ..backbones.features import embed_images
from ..backbones.loading import ClipModel
from ..config import (ConfigError, Override, Profile, build, display_path, load_yaml, merge_into,
                      parse_override, resolve_config_path, to_dict)
from ..console import note
from ..data.datasets import HandDataset
from ..data.protocol import Protocol, SplitRow
from ..evaluation import FeatureBank, evaluate_protocol, summarize
from ..locks import RunLock
from ..methods import Backbone, BuildContext, ExperimentCfg, Method, get_method
from ..provenance import environment
from ..runs import read_run, record_entry, relpath, run_name, slug, write_run, now  # noqa: F401 (run_name: re-exported)
from ..training.checkpoint import state_bytes
from ..training.data import TrainData
from ..training.loop import Trainer, is_finished, load_log, load_weights
from ..training.weights import store_half_if_exact
from .run_state import RunTarget, disk_need, plan_run, run_identity, target_name  # noqa: F401 (run_identity: re-exported)

STAGE1 = "stage1"


@dataclass
class Experiment:
    """One experiment of a profile, resolved: its method and its config with overrides applied."""
    name: str
    method: Method
    cfg: ExperimentCfg
    source: str                                   # the config file, or "profile backbones"
    overrides: list[str] = field(default_factory=list)  # the override items that changed it
    override_keys: list[str] = field(default_factory=list)  # the dotted key each of them set

    @property
    def stage(self) -> str:
        return self.method.stage

    def origin(self, key: str) -> str:
        """Where the value of dotted `key` came from: the override that set it last, or the file."""
        for source, set_key in reversed(list(zip(self.overrides, self.override_keys))):
            if key == set_key or key.startswith(set_key + "."):
                return source
        return self.source

    def check_data(self, n_classes: int) -> None:
        """The method's dataset-dependent checks, each error naming where its key was set."""
        for key, problem in self.method.check_data(self.cfg, n_classes).items():
            raise ConfigError(f"{self.origin(key)}: {key}: {problem}")


# --------------------------------------------------------------------------- resolving

def _profile_overrides(profile: Profile, profile_source: str) -> list[Override]:
    out = []
    for items, source in ((profile.overrides, profile_source), (profile.cli_overrides, None)):
        for item in items:
            key, value, src = parse_override(item, f"{source}: override '{item}'" if source else None)
            target, _, rest = key.partition(".")
            if not rest:
                raise ConfigError(f"{src}: expected <experiment>.<key>=value or '*.<key>=value'")
            out.append(Override(target, rest, value, src))
    return out


def _build_config(method: Method, data: dict, where: str) -> ExperimentCfg:
    cfg = build(method.config_cls, data, where)
    method.validate(cfg, where)
    problem = method.input_problem(cfg)
    if problem:
        key, text = problem
        raise ConfigError(f"{where}.{key}: {text}")
    return cfg


def _resolve_one(method: Method, data: dict, where: str, aliases: set[str],
                 overrides: list[Override], used: set[int]) -> Experiment:
    cfg = _build_config(method, data, where)  # the file alone: its errors name the file
    applied, keys = [], []
    fields = set(to_dict(cfg))
    for i, o in enumerate(overrides):
        if o.target != "*" and o.target not in aliases:
            continue
        if o.target == "*" and o.key.split(".")[0] not in fields:
            continue  # e.g. '*.finetune.lr' does not concern a zero-shot experiment
        trial = merge_into(copy.deepcopy(data), o.key, o.value)
        try:
            cfg = _build_config(method, trial, where)
        except ConfigError as e:
            raise ConfigError(f"{o.source}: {str(e).removeprefix(where + '.')}") from None
        data = trial
        applied.append(o.source)
        keys.append(o.key)
        used.add(i)
    return Experiment(cfg.name, method, cfg, where, applied, keys)


def resolve_experiments(profile: Profile, profile_source: str = "profile") -> list[Experiment]:
    """Every experiment of the profile, validated; errors name the file or the `-p` override."""
    overrides = _profile_overrides(profile, profile_source)
    used: set[int] = set()
    exps: list[Experiment] = []
    for ref in profile.experiments:
        if ref == STAGE1:
            if not profile.backbones:
                raise ConfigError(f"{profile_source}: 'stage1' is listed but the profile has no backbones")
            for b in profile.backbones:
                name = f"zero_shot_{slug(b.name)}"  # 'hf-hub:org/model' is a backbone, not a folder
                data = {"name": name, "method": "zero_shot", "backbone": to_dict(b)}
                exps.append(_resolve_one(get_method("zero_shot"), data, f"{profile_source}: stage1 ({b.name})",
                                         {STAGE1, name}, overrides, used))
            continue
        path = resolve_config_path(ref, "") if ref.endswith((".yaml", ".yml")) else _method_config(ref)
        data = load_yaml(path)
        folder = path.parent.name
        method_name = data.get("method") or folder
        method = get_method(method_name)
        data.setdefault("name", path.stem)
        data.setdefault("method", method.name if method_name == folder else method_name)
        exps.append(_resolve_one(method, data, display_path(path), {data["name"]}, overrides, used))
    names = [e.name for e in exps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{profile_source}: experiment name(s) {', '.join(dupes)} appear twice; "
                          "give each config its own name")
    for i, o in enumerate(overrides):
        if i not in used:
            raise ConfigError(f"{o.source}: no experiment of this profile is named '{o.target}' or has "
                              f"'{o.key.split('.')[0]}' (experiments: {', '.join(names)}; "
                              f"'{STAGE1}' and '*' address groups)")
    return exps


def _method_config(ref: str) -> Path:
    """'clip_reid/stage2_vitb16' -> configs/clip_reid/stage2_vitb16.yaml."""
    if "/" not in ref:
        raise ConfigError(f"experiment '{ref}': write it as <method>/<config>, e.g. clip_reid/{ref}, "
                          f"or '{STAGE1}'")
    kind, name = ref.rsplit("/", 1)
    return resolve_config_path(name, kind)


# --------------------------------------------------------------------------- running

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
        return pd.concat([load_log(self.run_dir / f"seed{s}", per).assign(seed=s) for s in self.cfg.seeds],
                         ignore_index=True)

    def first_eval(self, mode: str = "") -> EvalResult:
        return self.evals[(self.cfg.seeds[0], mode)]


def load_backbone(cfg: ExperimentCfg, device: torch.device, method: Method | None = None) -> Backbone:
    """The experiment's backbone as its method loads it (CLIP unless the method brings its own,
    e.g. the CNN baseline); `method` defaults to the one the config names."""
    backbone = (method or get_method(cfg.method)).load_backbone(cfg, device)
    if cfg.channels_last and getattr(backbone, "kind", "") == "rn" and device.type == "cuda":
        backbone.model.visual.to(memory_format=torch.channels_last)  # convolutions then run NHWC
    return backbone


def experiment_run_name(run, exp: Experiment, ds: HandDataset) -> tuple[str, dict]:
    """The run `exp` on `ds` is (or would be) stored as, and its identity (nothing is loaded)."""
    name, identity, _ = target_name(run.run_dir, run.profile, exp, ds)
    return name, identity


def train_or_load(method: Method, cfg: ExperimentCfg, ctx: BuildContext, data_fn: Callable[[], TrainData],
                  n_classes: int, seed_dir: Path, *, resume: bool, progress: bool, label: str,
                  keep_checkpoint: bool = False, fp16_tolerance: float = 0.0,
                  on_epoch_end: Callable[[str, int], None] | None = None) -> tuple[nn.Module, bool]:
    """One seed: load its final weights if it finished, else train it (resuming if asked).

    Before training, the disk must hold its checkpoints; after it, the final weights are stored
    in fp16 where that moves no feature by more than `fp16_tolerance` (0: keep fp32).
    """
    torch.manual_seed(ctx.seed)  # head initialisation
    model = method.build(cfg, ctx, n_classes)
    if not method.trains:
        return model.eval(), False
    state = method.model_state(cfg, model)
    if is_finished(seed_dir):
        load_weights(seed_dir, {"model": state})
        return model.eval(), False
    require_free_space(seed_dir.parent, disk_need(state_bytes(state.state_dict()), 1), f"training {label}")
    data = data_fn()
    plan = method.plan(cfg, model, data, ctx)
    Trainer(seed_dir, ctx.device, plan.state, ctx.generator, seed=ctx.seed, amp=cfg.amp,
            compile_mode=cfg.compile_mode, compile_optimizer=cfg.compile_optimizer, resume=resume,
            progress=progress, checkpoint_every=cfg.checkpoint_every, label=label,
            keep_checkpoint=keep_checkpoint, on_epoch_end=on_epoch_end).fit(plan.phases)
    model.eval()
    check_images = data.val_images if data.val_images is not None else data.images[:64]

    def features() -> torch.Tensor:
        return torch.cat([embed_images(fn, check_images, ctx.clip.mean, ctx.clip.std, ctx.device, amp=False)
                          for fn in method.embedders(cfg, model).values()], dim=1)

    info = store_half_if_exact(seed_dir / Trainer.WEIGHTS, state, features, fp16_tolerance)
    summary = json.loads((seed_dir / Trainer.SUMMARY).read_text())
    atomic_write_json(seed_dir / Trainer.SUMMARY, {**summary, **info})
    return model, True


def evaluate_model(embed: Callable[[torch.Tensor], torch.Tensor], clip: ClipModel, cfg: ExperimentCfg,
                   ds: HandDataset, images_fn: Callable, device: torch.device, name: str,
                   proto: Protocol | None = None) -> EvalResult:
    """Embed every evaluation image once, then score all splits and both protocols (of `ds`, or
    `proto`: the dataset's protocol with some identities removed, for transfer)."""
    proto = proto or ds.protocol()
    rows = proto.eval_rows()
    images, index = images_fn(ds, rows, clip.image_size)
    if cfg.compile and device.type == "cuda":
        embed = torch.compile(embed)  # graphs shared across seeds and stages (dynamo caches per code)
    t0 = time.perf_counter()
    feats = embed_images(embed, images, clip.mean, clip.std, device, cfg.eval_batch_size,
                         flip=cfg.flip_test, amp=cfg.amp)
    seconds = time.perf_counter() - t0
    bank = FeatureBank(feats, index)
    per_query: list[pd.DataFrame] = []
    per_split = evaluate_protocol(bank, proto, with_cmc=True, per_query=per_query)
    return EvalResult(name, bank, images, rows, per_split, pd.concat(per_query, ignore_index=True),
                      len(images) / seconds if seconds else 0.0)


def run_experiment(run, exp: Experiment, ds: HandDataset | None = None, *, progress: bool = True
                   ) -> ExperimentResult:
    """Train (or load) every seed of `exp` on `ds`, evaluate, write metrics, record the run.

    `run` is the pipeline context (clipfh_utils.pipeline.context.Run). The run folder is locked
    while this writes to it; what may happen to it is decided first (run_state.plan_run).
    """
    ds = ds or run.dataset
    ds.require_images()
    profile = run.profile
    clip0 = load_backbone(exp.cfg, run.device, exp.method)
    class_ids = sorted({r.person_id for r in ds.protocol().train}, key=int)
    exp.check_data(len(class_ids))
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
    if record is None:
        record = {"name": name, "experiment": cfg.name, "method": method.name, "stage": method.stage,
                  "created": now(), "identity": target.identity, "config": to_dict(cfg),
                  "config_source": exp.source, "overrides": exp.overrides, "dataset": ds.key,
                  "data": ds.description, "real_data": ds.is_real, "backbone": clip0.record(),
                  "n_classes": len(class_ids), "seeds": {}, "environment": environment()}
        if "resumed_from" in target.identity:
            record["resumed_from"] = target.identity["resumed_from"]
    # who the model saw in training: transfer removes them from another dataset's test set
    record.setdefault("train_ids", class_ids if method.trains else [])
    record.setdefault("identity_space", ds.identity_space)
    write_run(rdir, record)

    evals: dict[tuple[int, str], EvalResult] = {}
    per_split, per_query, trained, first_model = [], [], [], None
    seeds = cfg.seeds if method.trains else cfg.seeds[:1]
    for seed in seeds:
        clip = clip0 if seed == seeds[0] else load_backbone(cfg, run.device, method)
        g = torch.Generator(device=run.device).manual_seed(seed)
        ctx = BuildContext(clip, run.device, seed, g, cfg.amp and run.device.type == "cuda")
        seed_dir = target.seed_dir(seed)
        target.prepare_seed(seed)
        model, did_train = train_or_load(method, cfg, ctx, lambda: run.train_data(ds, clip.image_size),
                                         len(class_ids), seed_dir, resume=target.resume,
                                         progress=progress, label=f"{cfg.name} seed {seed}",
                                         keep_checkpoint=profile.keep_checkpoint,
                                         fp16_tolerance=profile.fp16_tolerance,
                                         on_epoch_end=lambda phase, epoch: lock.check())
        if did_train:
            trained.append(seed)
            summary = json.loads((seed_dir / Trainer.SUMMARY).read_text())
            record["seeds"][str(seed)] = {"finished": True, "trained": now(), "environment": environment(),
                                          **{k: summary[k] for k in summary if k.startswith(("weights_", "fp16_"))}}
            write_run(rdir, record)
        first_model = first_model or model
        for mode, embed in method.embedders(cfg, model).items():
            label = cfg.name + (f" [{mode}]" if mode else "") + (f" seed {seed}" if method.trains else "")
            ev = evaluate_model(embed, clip, cfg, ds, run.images, run.device, label)
            evals[(seed, mode)] = ev
            per_split.append(ev.per_split.assign(seed=seed, mode=mode))
            per_query.append(ev.per_query.assign(seed=seed, mode=mode))
    per_split_df = pd.concat(per_split, ignore_index=True)
    per_query_df = pd.concat(per_query, ignore_index=True)
    lock.check()
    files = save_metrics(run, exp, ds, rdir, record, clip0, per_split_df, per_query_df, evals)
    return ExperimentResult(exp, name, rdir, ds, clip0, first_model, evals, per_split_df, per_query_df,
                            files, trained, len(class_ids))


def metrics_stem(dataset_key: str, mode: str, n_splits: int, flip: bool) -> str:
    """'synthetic-dorsal_right__default__n10': what was evaluated, and how."""
    return f"{slug(dataset_key.replace('/', '-'))}__{mode or 'default'}__n{n_splits}" + ("_flip" if flip else "")


def metrics_files(rdir: Path, dataset_key: str, n_splits: int, flip: bool) -> list[Path]:
    """The metrics files of a run for one dataset and evaluation settings (one per inference mode)."""
    pattern = metrics_stem(dataset_key, "*", n_splits, flip) + ".json"
    return sorted((Path(rdir) / "metrics").glob(pattern))


def entry_key(experiment: str, mode: str, dataset_key: str, variant: str = "") -> str:
    """An invocation's manifest holds one entry per key: re-running replaces, a sweep variant adds."""
    return f"{experiment}{'@' + mode if mode else ''}|{dataset_key}" + (f"|{variant}" if variant else "")


def save_metrics(run, exp: Experiment, ds: HandDataset, rdir: Path, record: dict, clip: ClipModel,
                 per_split: pd.DataFrame, per_query: pd.DataFrame, evals: dict) -> dict[str, Path]:
    """One metrics file per inference mode, with everything that produced its numbers."""
    method, cfg = exp.method, exp.cfg
    files = {}
    for mode in per_split["mode"].unique():
        rows = per_split[per_split["mode"] == mode].drop(columns=["cmc", "mode"])
        queries = per_query[per_query["mode"] == mode].drop(columns="mode")
        stem = metrics_stem(ds.key, mode, run.profile.protocol.n_splits, cfg.flip_test)
        path = rdir / "metrics" / f"{stem}.json"
        train = {}
        for s in cfg.seeds if method.trains else []:
            f = rdir / f"seed{s}" / Trainer.SUMMARY
            if f.exists():
                t = json.loads(f.read_text())
                train[str(s)] = {"seconds": t["seconds"], "images_per_s": t["images_per_s"]}
        weights = clip.weights if not method.trains else f"fine-tuned from {clip.weights}"
        payload = {
            "run": record["name"], "experiment": cfg.name, "method": method.name,
            "method_title": method.title, "stage": method.stage, "mode": mode,
            "model": cfg.name + (f" [{mode}]" if mode else "") + (f" {{{run.variant_label}}}" if run.variant else ""),
            "variant": run.variant,
            "backbone": clip.name, "weights": weights, "pretrained": clip.pretrained,
            "weights_sha256": clip.weights_sha256, "quick_gelu": getattr(clip, "quick_gelu", None),
            "dataset": ds.key, "data": ds.description, "real_data": ds.is_real, "aspect": ds.aspect,
            "split_seed": ds.split_seed, "n_splits": run.profile.protocol.n_splits,
            "flip_test": cfg.flip_test, "device": str(run.device), "profile": run.profile.name,
            "seeds": list(cfg.seeds if method.trains else cfg.seeds[:1]),
            "config": to_dict(cfg), "config_source": exp.source, "overrides": exp.overrides,
            "identity": record["identity"], "environment": environment(), "invocation": run.invocation,
            "created": record["created"], "evaluated": now(), "train": train,
            "embed_images_per_s": {str(s): ev.images_per_s for (s, m), ev in evals.items() if m == mode},
        }
        write_metrics(path, payload, rows, queries)
        files[mode] = path
        record_entry(run.run_dir, run.invocation, entry_key(cfg.name, mode, ds.key, run.variant_label), {
            "run": record["name"], "experiment": cfg.name, "mode": mode, "stage": method.stage,
            "method": method.name, "dataset": ds.key, "metrics": relpath(path, run.run_dir),
            "variant": run.variant, "recorded": now()})
    return files


def write_metrics(path: Path, payload: dict, per_split: pd.DataFrame, per_query: pd.DataFrame) -> None:
    """A metrics file (payload + per-split rows + their summary) and its .csv / .per_query.csv.gz."""
    summary = summarize(per_split)
    payload = {**payload, "per_split": per_split.to_dict(orient="records"),
               "summary": {p: {m: {"mean": float(summary.loc[p, ("mean", m)]),
                                   "sd": float(summary.loc[p, ("sd", m)])}
                               for m in ("rank1", "rank5", "rank10", "mAP")} for p in summary.index}}
    atomic_write_json(path, payload)
    with atomic_path(path.with_suffix(".csv")) as tmp:
        per_split.to_csv(tmp, index=False)
    with atomic_path(path.with_name(path.stem + ".per_query.csv.gz")) as tmp:
        per_query.to_csv(tmp, index=False, compression="gzip")


def before_training(run, result: ExperimentResult) -> EvalResult:
    """The experiment's backbone as loaded, before any training, on the same evaluation images
    (not recorded as a result: a reference view for figures such as t-SNE before/after)."""
    cfg = result.cfg
    zero_shot = get_method("zero_shot")
    clip = load_backbone(cfg, run.device, zero_shot)
    ctx = BuildContext(clip, run.device, 0, torch.Generator(device=run.device).manual_seed(0), False)
    model = zero_shot.build(cfg, ctx, 0)
    return evaluate_model(model.embed, clip, cfg, result.dataset, run.images, run.device,
                          f"{cfg.backbone.name} before training")
