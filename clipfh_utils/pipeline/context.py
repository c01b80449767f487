"""The run context every notebook opens first: profile, output folder, device, datasets, invocation.

`open_run("demo")` in JupyterLab and papermill's absolute `run_dir` in batch runs give the same
object, so a notebook holds no path or device logic of its own. An invocation groups what one
`clipfh run` produced; interactively, notebooks add to the newest invocation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..backbones.loading import resolve_device
from ..config import Profile, display_path, load_profile, resolve_config_path, to_dict
from ..data.datasets import HandDataset, load_rows
from ..data.prepare import prepare_dataset
from ..data.protocol import Protocol, SplitRow
from ..provenance import environment
from ..runs import latest_invocation, new_invocation, output_dir, read_manifest, update_manifest
from ..runs import run_dir as run_folder
from ..training.data import TrainData
from .experiments import ExperimentResult, run_experiment
from .resolve import Experiment, resolve_experiments


@dataclass
class Invocation:
    """One invocation's context: the profile, its output folder, device and datasets, and the
    invocation id its results are recorded under (a "run" is a trained model's folder)."""
    profile: Profile
    run_dir: Path                     # outputs/<profile>
    device: torch.device
    datasets: list[HandDataset]
    invocation: str
    profile_source: str = "profile"
    variant: dict = field(default_factory=dict)   # a sweep's swept keys and values for this run
    _images: dict = field(default_factory=dict, repr=False)
    _train: dict = field(default_factory=dict, repr=False)
    _experiments: list[Experiment] | None = field(default=None, repr=False)
    _models: dict = field(default_factory=dict, repr=False)

    @property
    def variant_label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.variant.items())

    @property
    def dataset(self) -> HandDataset:
        """The first dataset of the profile (the one the stage notebooks train on)."""
        return self.datasets[0]

    def dataset_named(self, key: str) -> HandDataset:
        """The profile's dataset with this key (a metrics payload's "dataset")."""
        for ds in self.datasets:
            if ds.key == key:
                return ds
        raise LookupError(f"no dataset '{key}' in profile {self.profile.name}; it has "
                          f"{', '.join(d.key for d in self.datasets)}")

    def protocol(self, ds: HandDataset | None = None) -> Protocol:
        return (ds or self.dataset).protocol()

    def images(self, ds: HandDataset, rows: list[SplitRow], size_hw: tuple[int, int]
               ) -> tuple[torch.Tensor, dict[str, int]]:
        """uint8 images of `rows` (decode cache on disk, shared in memory within the run)."""
        key = (ds.key, tuple(r.image_name for r in rows), tuple(size_hw))
        if key not in self._images:
            self._images[key] = load_rows(ds, rows, size_hw)
        return self._images[key]

    def trained_model(self, run_name: str, seed: int | None = None, mode: str = ""):
        """A finished run of this output folder as a model (pipeline.trained.TrainedModel), loaded
        once per (run, seed, mode) in this invocation: maps of several figures share it."""
        from .trained import TrainedModel
        key = (run_name, seed, mode)
        if key not in self._models:
            self._models[key] = TrainedModel(run_folder(self.run_dir, run_name), seed, str(self.device), mode)
        return self._models[key]

    def train_data(self, ds: HandDataset, size_hw: tuple[int, int]) -> TrainData:
        """Training images of the protocol's training ids (labels 0..C-1), plus their val images."""
        key = (ds.key, tuple(size_hw))
        if key not in self._train:
            proto = ds.protocol()
            class_ids = proto.class_ids
            label_of = {pid: i for i, pid in enumerate(class_ids)}
            val = [r for r in proto.val if r.person_id in label_of]
            images, _ = self.images(ds, proto.train, size_hw)
            val_images, _ = self.images(ds, val, size_hw)
            dev = self.device
            self._train[key] = TrainData(
                images.to(dev), torch.tensor([label_of[r.person_id] for r in proto.train], device=dev),
                class_ids, val_images.to(dev), torch.tensor([label_of[r.person_id] for r in val], device=dev))
        return self._train[key]

    def experiments(self, stage: str | None = None) -> list[Experiment]:
        """The profile's experiments, resolved and validated (optionally one stage's)."""
        if self._experiments is None:
            self._experiments = resolve_experiments(self.profile, self.profile_source)
        return [e for e in self._experiments if stage is None or e.stage == stage]

    def run_stage(self, stage: str, progress: bool | None = None) -> list[ExperimentResult]:
        """Every experiment of `stage` on every dataset of the profile (progress bars: see `_bars`)."""
        return [run_experiment(self, e, ds, progress=_bars(progress))
                for e in self.experiments(stage) for ds in self.datasets]

    def run_experiment(self, exp: Experiment, ds: HandDataset | None = None,
                       progress: bool | None = None) -> ExperimentResult:
        return run_experiment(self, exp, ds, progress=_bars(progress))

    def not_real(self) -> tuple[bool, list[str]]:
        """(any dataset synthetic, the backbones with random weights): what keeps a number from
        being a hand-identification result."""
        untrained = sorted({e.cfg.backbone.name for e in self.experiments() if not e.cfg.backbone.weights})
        return any(not ds.is_real for ds in self.datasets), untrained

    def banner(self) -> str:
        """Markdown header for reports: the data, and whether numbers mean anything for hands."""
        data = "; ".join(f"{ds.description} · aspect {ds.aspect}" for ds in self.datasets)
        lines = [f"**Profile** `{self.profile.name}` · **data** {data} · **device** `{self.device}` · "
                 f"**invocation** `{self.invocation}`"]
        synthetic, untrained = self.not_real()
        if synthetic or untrained:
            lines.append("> **Not a hand-identification result.** "
                         + ("The images are synthetic. " if synthetic else "")
                         + (f"Backbones with random weights: {', '.join(untrained)}. " if untrained else "")
                         + "These numbers only show that the pipeline runs end to end.")
        return "\n\n".join(lines)


def _bars(progress: bool | None) -> bool:
    """Progress bars by default, except in batch runs (the runner sets TQDM_DISABLE): tqdm's
    notebook bars ignore that variable and would leave widget state in the reports."""
    return (not os.environ.get("TQDM_DISABLE")) if progress is None else progress


def open_run(profile: str | Path = "demo", run_dir: str | Path = "", overrides: list[str] | None = None,
             invocation: str = "", *, read_only: bool = False) -> Invocation:
    """Load the profile, prepare its datasets and output folder, and join (or start) an invocation.
    `read_only`: touch nothing in the output folder (no invocation: `sweep --dry-run` plans with it)."""
    prof = load_profile(profile, overrides)
    source = display_path(resolve_config_path(profile, "profiles"))
    out = output_dir(prof, run_dir)
    device = resolve_device(prof.device)
    datasets = [prepare_dataset(prof.data, ref, prof.protocol) for ref in prof.datasets]
    if read_only:
        return Invocation(prof, out, device, datasets, invocation, source)
    out.mkdir(parents=True, exist_ok=True)
    info = {"profile": prof.name, "profile_config": to_dict(prof), "overrides": list(overrides or []),
            "data": [ds.description for ds in datasets], "real_data": all(ds.is_real for ds in datasets),
            "device": str(device), "environment": environment()}
    inv = invocation or latest_invocation(out) or new_invocation(out, info)
    # joining an invocation adds what it lacks (the runner records no data or device) and never
    # relabels it: what started it stays recorded; each metrics file carries its own provenance
    have = read_manifest(out, inv)
    update_manifest(out, inv, **{k: v for k, v in info.items() if k != "overrides" and k not in have})
    return Invocation(prof, out, device, datasets, inv, source)
