"""Sweeps: a grid of overrides expanded into named runs, dispatched, skipped when finished, gathered.

    clipfh sweep --profile full \\
        --grid 'stage2_vitb16.finetune.loss_weights.i2t=[0, 0.5, 1]' --grid 'stage2_vitb16.finetune.lr=[5e-6, 1e-5]'

Each point of the grid is a variant: the profile's `-p` items plus one value per swept key (the
same override form as `run`). A job is one experiment of one variant (only the experiments a swept
key addresses; `--experiments` to choose); its run is named `<experiment>-<hash>` like any other,
so a job whose run has finished and is evaluated with the current settings is skipped, and an
interrupted sweep, run again, redoes only what did not finish (`--resume` continues checkpoints).
Seeds are not a grid axis: every run trains its configured seeds, so seed-to-seed spread stays
measurable.

Executors: `processes` (default) runs jobs in worker processes, one per GPU (or `--workers` on the
CPU); `local` and `slurm` go through submitit (the same submit/wait/gather path; `local` runs on
this machine). A failed job is reported and does not stop the others. Everything the sweep
produced is one invocation: its comparison table (swept keys as columns) and plot are written to
`invocations/<id>/sweep.{csv,txt,png,pdf}` and shown by `04_comparison` and the index.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..atomic import atomic_write_json
from ..config import (ConfigError, display_path, load_profile, load_yaml, parse_override,
                      resolve_config_path)
from ..runs import (invocation_dir, metrics_files, new_invocation, output_dir, read_run,
                    seed_dir, slug)
from ..runs import run_dir as run_folder
from ..training.loop import is_finished
from .context import open_run
from .evaluate import record_metrics
from .experiments import experiment_run_name
from .resolve import resolve_experiments


@dataclass
class SweepJob:
    """One experiment of one variant: what a worker process runs."""
    profile: str                 # absolute profile path
    run_dir: str                 # absolute output folder
    overrides: list[str]         # the profile's `-p` items + this variant's
    experiment: str
    variant: dict[str, Any]
    invocation: str
    runs: list[str] = field(default_factory=list)   # run names, one per dataset
    status: str = "pending"      # pending | skipped | done | failed
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.experiment} {{{', '.join(f'{k}={v}' for k, v in self.variant.items())}}}"


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """`['x.lr=[1e-3, 1e-2]', 'x.k=4']` -> {'x.lr': [0.001, 0.01], 'x.k': [4]} (values are YAML)."""
    grid: dict[str, list] = {}
    for item in items:
        key, value, source = parse_override(item, f"--grid '{item}'")
        if key.split(".")[-1] == "seeds":
            raise ConfigError(f"{source}: seeds are not a grid axis; every run trains its configured "
                              "seeds (set them with -p '<experiment>.seeds=[0, 1, 2]')")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError(f"{source}: give at least one value")
        grid[key] = values
    return grid


def _override(key: str, value: Any) -> str:
    """`key=value` as a -p item (the value in YAML flow style)."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def load_sweep_file(path: str | Path) -> tuple[str | None, list[str], dict[str, list]]:
    """A sweep YAML: `profile:`, `overrides:` (list of -p items), `grid:` (key -> list of values)."""
    data = load_yaml(resolve_config_path(path, "sweeps"))
    unknown = set(data) - {"profile", "overrides", "grid"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: profile, overrides, grid)")
    grid = parse_grid([_override(k, v) for k, v in (data.get("grid") or {}).items()])
    return data.get("profile"), list(data.get("overrides") or []), grid


def expand(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every point of the grid (the cartesian product), in a stable order."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def plan_sweep(profile: str, params: Sequence[str], grid: dict[str, list], run_dir: str | Path | None,
               experiments: Sequence[str] | None = None, dry_run: bool = False
               ) -> tuple[Path, str, list[SweepJob]]:
    """Validate every variant, start the sweep's invocation, and list its jobs (finished ones skipped).
    `dry_run`: the same list, with nothing written (no invocation; the invocation id is "")."""
    if not grid:
        raise ConfigError("a sweep needs at least one --grid KEY=[values] (or a sweep file)")
    profile_path = resolve_config_path(profile, "profiles").resolve()
    # resolve every variant before anything runs: a typo fails now, naming the grid key
    resolved = []
    for v in expand(grid):
        swept = [_override(k, val) for k, val in v.items()]
        prof = load_profile(profile_path, list(params) + swept)
        exps = resolve_experiments(prof, display_path(profile_path))
        names = [e.name for e in exps]
        touched = [e.name for e in exps if {f"-p '{o}'" for o in swept} & set(e.overrides)]
        chosen = list(experiments) if experiments else touched
        missing = [n for n in chosen if n not in names]
        if missing:
            raise ConfigError(f"--experiments: no experiment named {', '.join(missing)} "
                              f"(experiments: {', '.join(names)})")
        if not chosen:
            raise ConfigError(f"the grid keys {', '.join(v)} change no experiment of profile {prof.name}")
        resolved.append((v, list(params) + swept, chosen, prof))
    prof = resolved[0][3]
    out = output_dir(prof, run_dir).resolve()
    inv = "" if dry_run else new_invocation(out, {"profile": prof.name, "overrides": list(params),
                                                  "sweep": {"grid": grid, "experiments": list(experiments or [])}})
    jobs = []
    for v, items, chosen, prof in resolved:
        run = open_run(profile_path, out, items, inv, read_only=dry_run)
        run.variant = v
        for exp in run.experiments():
            if exp.name not in chosen:
                continue
            job = SweepJob(str(profile_path), str(out), items, exp.name, v, inv)
            existing = []
            for ds in run.datasets:
                name, _ = experiment_run_name(run, exp, ds)
                job.runs.append(name)
                existing.append(_evaluated(run_folder(out, name), exp, ds, ds.protocol().n_splits))
            if all(existing) and not prof.retrain:
                job.status = "skipped"
                for ds, files in zip(run.datasets, existing):
                    if not dry_run:
                        _record_existing(run, exp, ds, files)
            elif prof.resume and not any(read_run(run_folder(out, n)) for n in job.runs):
                # nothing of this variant to continue: it starts (its siblings' checkpoints are not its own)
                job.overrides = [*items, "resume=false"]
            jobs.append(job)
    return out, inv, jobs


def _evaluated(rdir: Path, exp, ds, n_splits: int) -> list[Path]:
    """The run's metrics files for the current evaluation settings, if every seed has finished."""
    if read_run(rdir) is None:
        return []
    seeds = exp.cfg.seeds if exp.method.trains else exp.cfg.seeds[:1]
    if exp.method.trains and not all(is_finished(seed_dir(rdir, s)) for s in seeds):
        return []
    return metrics_files(rdir, ds.key, n_splits, exp.cfg.flip_test)


def _record_existing(run, exp, ds, files: list[Path]) -> None:
    """A skipped job's existing metrics join this invocation's manifest (so the table has them)."""
    for f in files:
        m = json.loads(f.read_text())
        record_metrics(run, exp, ds, {"name": m["run"]}, m["mode"], f, skipped=True)


# --------------------------------------------------------------------------- running a job

def run_job(job: SweepJob | dict) -> dict:
    """Run one sweep job in this process (what every executor ends up calling)."""
    job = job if isinstance(job, SweepJob) else SweepJob(**job)
    run = open_run(job.profile, job.run_dir, job.overrides, job.invocation)
    run.variant = job.variant
    (exp,) = [e for e in run.experiments() if e.name == job.experiment]
    results = [run.run_experiment(exp, ds, progress=False) for ds in run.datasets]
    return {"runs": [r.run_name for r in results], "trained": [r.trained_seeds for r in results]}


def _job_main(spec_file: str) -> int:
    """Entry point of a worker process: `python -m clipfh_utils.pipeline.sweep <spec.json>`."""
    job = SweepJob(**json.loads(Path(spec_file).read_text()))
    print(json.dumps({"pid": os.getpid(), "started": time.time()}), flush=True)
    print(json.dumps({**run_job(job), "finished": time.time()}), flush=True)
    return 0


def _run_processes(jobs: list[SweepJob], slots: list[str | None], logs: Path) -> None:
    """One worker process per job, at most one per slot (a GPU id, or None on the CPU) at a time."""
    free = list(slots)
    import threading
    lock = threading.Lock()

    def work(job: SweepJob) -> None:
        with lock:
            slot = free.pop()
        try:
            spec = logs / f"{_slug(job.label)}.json"
            atomic_write_json(spec, asdict(job))
            env = dict(os.environ)
            if slot is not None:
                env["CUDA_VISIBLE_DEVICES"] = slot
            with open(logs / f"{_slug(job.label)}.log", "w") as log:
                rc = subprocess.call([sys.executable, "-m", "clipfh_utils.pipeline.sweep", str(spec)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
            job.status = "done" if rc == 0 else "failed"
            if rc:
                job.error = _last_line(logs / f"{_slug(job.label)}.log")
        finally:
            with lock:
                free.append(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        list(pool.map(work, jobs))


def _run_submitit(jobs: list[SweepJob], executor: str, logs: Path, partition: str | None,
                  gpus_per_job: int, time_min: int) -> None:
    import submitit
    ex = submitit.AutoExecutor(folder=str(logs / "submitit"), cluster=executor)
    params: dict[str, Any] = {"timeout_min": time_min}
    if executor == "slurm":
        params.update(slurm_partition=partition, gpus_per_node=gpus_per_job, tasks_per_node=1)
    elif gpus_per_job:
        params.update(gpus_per_node=gpus_per_job)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    submitted = [(job, ex.submit(run_job, asdict(job))) for job in jobs]
    for job, handle in submitted:
        try:
            handle.result()
            job.status = "done"
        except Exception as e:  # one failed job does not stop the others
            job.status, job.error = "failed", error_line(_job_stderr(handle) or str(e)) or type(e).__name__


def _slug(text: str) -> str:
    """A job's file name: runs.slug, kept short; a long label keeps a digest so names stay distinct."""
    s = slug(text)
    return s if len(s) <= 120 else f"{s[:111]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _job_stderr(handle: Any) -> str:
    try:
        return handle.stderr() or ""
    except Exception:  # no log (the job never started): the exception's text is all there is
        return ""


def error_line(text: str) -> str:
    """The last 'SomeError: message' line of a job's output (submitit's own message ends with log
    paths, which say where to look but not what went wrong), else its last line."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    errors = [x for x in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b.*:", x)]
    return (errors or lines or [""])[-1][:300]


def _last_line(path: Path) -> str:
    lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    return lines[-1][:300] if lines else "no output"


def run_sweep(profile: str, grid: dict[str, list], params: Sequence[str] = (), run_dir: str | Path | None = None,
              experiments: Sequence[str] | None = None, executor: str = "processes", workers: int | None = None,
              gpus: Sequence[str] | None = None, partition: str | None = None, gpus_per_job: int = 1,
              time_min: int = 240, dry_run: bool = False) -> tuple[Path, list[SweepJob]]:
    """Plan, dispatch, gather; returns the sweep's invocation folder and its jobs with their status
    (a dry run: the output folder, in which it wrote nothing, and the jobs it would run)."""
    if executor == "slurm" and not dry_run and shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm: Slurm is not available here (no sbatch on PATH); run on a "
                          "Slurm login node, or use --executor processes (or local)")
    out, inv, jobs = plan_sweep(profile, params, grid, run_dir, experiments, dry_run)
    todo = [j for j in jobs if j.status == "pending"]
    print(f"[clipfh] sweep {inv or '(dry run)'}: {len(jobs)} job(s), {len(jobs) - len(todo)} already finished",
          flush=True)
    for j in jobs:
        print(f"[clipfh]   {j.status:8s} {j.label} -> {', '.join(j.runs)}", flush=True)
    if dry_run:
        print("[clipfh] dry run: nothing was run or written", flush=True)
        return out, jobs
    d = invocation_dir(out, inv)
    if todo:
        logs = d / "sweep_jobs"
        logs.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if executor == "processes":
            if gpus is None:
                import torch
                gpus = [str(i) for i in range(torch.cuda.device_count())]
            slots = list(gpus) if gpus else [None] * max(1, workers or 1)
            _run_processes(todo, slots, logs)
        elif executor in ("local", "slurm"):
            _run_submitit(todo, executor, logs, partition, gpus_per_job, time_min)
        else:
            raise ConfigError(f"--executor {executor}: use processes, local or slurm")
        print(f"[clipfh] sweep jobs finished in {time.perf_counter() - t0:.0f} s", flush=True)
        for j in todo:
            print(f"[clipfh]   {j.status:8s} {j.label}" + (f": {j.error}" if j.error else ""), flush=True)
    atomic_write_json(d / "sweep.json", {"grid": grid, "jobs": [asdict(j) for j in jobs]})
    from ..report.sweep import write_sweep_report
    write_sweep_report(out, inv, list(grid))
    return d, jobs


if __name__ == "__main__":
    sys.exit(_job_main(sys.argv[1]))
