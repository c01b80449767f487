"""Checks a `run` makes before its first notebook starts: bad input fails in seconds, with nothing
in the output folder touched, instead of inside a notebook after an hour of training.

For every dataset and experiment of the profile: the metadata (a modified HandInfo.csv is refused,
or its split lists go elsewhere, said on the console), the images (all present), the backbone (the
weights file exists and fits the architecture), data-dependent settings (identities per batch),
what may happen to the run folder (run_state.plan_run: unfinished runs, --resume, --resume-from,
locks, damaged checkpoints) and the disk space that training will need.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import require_free_space
from ..backbones.loading import resolve_device
from ..config import Profile
from ..console import note
from ..data.prepare import prepare_dataset
from ..training.checkpoint import state_bytes
from .resolve import resolve_experiments
from .run_state import disk_need, plan_run, resume_sources
from .seed_model import build_seed_model, load_backbone, seed_context


# the stages whose experiments a notebook builds models of (None: every experiment's, e.g. to
# embed with the trained runs); a notebook not listed builds none (data, comparison tables)
NOTEBOOK_STAGES: dict[str, tuple[str, ...] | None] = {
    "01_stage1_zero_shot": ("stage1",), "02_stage2_clip_reid": ("stage2",), "03_stage3_promptsg": ("stage3",),
    "06_cnn_baseline": ("baseline",), "05_attention_visualisation": None, "07_transfer": None}


def preflight(prof: Profile, profile_source: str, out: Path, *, only: list[str] | None = None) -> None:
    """Raise the first problem found (ConfigError, HandInfoError, RunStateError, LockedError,
    DiskFullError, ...); print notes. `only` (an `--only` run, which may not touch every
    experiment): the configs and metadata, and the backbones of what those notebooks build."""
    resolve_device(prof.device)
    exps = resolve_experiments(prof, profile_source)
    datasets = [prepare_dataset(prof.data, ref, prof.protocol) for ref in prof.datasets]
    if only is not None:
        wanted = [NOTEBOOK_STAGES[n] for n in only if n in NOTEBOOK_STAGES]
        for exp in exps:
            if any(stages is None or exp.stage in stages for stages in wanted):
                load_backbone(exp.cfg, torch.device("cpu"))
        return
    sources = resume_sources(out, prof, [e.name for e in exps])
    cpu = torch.device("cpu")
    need, training = 0, []
    classes = {}
    for ds in datasets:
        ds.require_images()
        classes[ds.key] = len(ds.protocol().class_ids)
    for exp in exps:
        clip = load_backbone(exp.cfg, cpu)  # once per experiment (one at a time), not per dataset
        for ds in datasets:
            n_classes = classes[ds.key]
            exp.check_data(n_classes)
            target = plan_run(out, prof, exp, ds, sources)
            for line in target.notes:
                note(line)
            seeds = target.to_train()
            if seeds:
                model = build_seed_model(exp.method, exp.cfg, seed_context(exp.cfg, cpu, seeds[0], clip),
                                         n_classes)
                need += disk_need(state_bytes(exp.method.model_state(exp.cfg, model).state_dict()), len(seeds))
                training.append(f"{exp.name} on {ds.key} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
    if need:
        require_free_space(out, need, "training " + ", ".join(training))
