"""Where results live, and what names them.

outputs/<profile>/
  runs/<experiment>-<hash>/            one run: a trained model (all its seeds) and its evaluations
    run.json                           identity (what the hash covers), resolved config, provenance
    lock.json                          while a process writes the run (clipfh_utils.locks)
    seed<k>/                           checkpoint.pt while training; weights.pt, summary.json, logs
    metrics/<dataset>__<mode>__<eval>.json (+ .csv per split, .per_query.csv.gz, .features.pt)
    metrics/transfer__<dataset>__<mode>__<eval>.json   the run tested on another dataset
  invocations/<id>/manifest.json       which runs and metrics files one `run` invocation produced
  invocations/LATEST                   the id of the newest invocation

A run is named `<experiment>-<hash>`; the hash covers everything that changes the trained weights
(the method config as resolved, seeds and evaluation settings excluded; dataset and aspect; split
seed; HandInfo.csv and training-image digests; the weights file's digest). Re-running an unchanged
experiment finds its run and loads it; an ablation gets its own hash and never overwrites its
baseline; changing `n_splits` or `flip_test` only re-evaluates.

This module is the one place that composes these names (a test holds that): the identity and the
run name, run and seed folders, metrics file names and the manifest's entry keys, and the metrics
payload every writer stores (`metrics_payload`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json, atomic_write_text, inside
from .config import identity_dict, name_problem, repo_path, to_dict
from .locks import short_lock
from .provenance import environment

RUNS, INVOCATIONS = "runs", "invocations"


class RunStateError(ValueError):
    """What was asked does not fit the state of the run folder (an unfinished run without
    --resume, --resume with another configuration, --resume-from a run that cannot be resumed)."""


def identity_hash(identity: dict) -> str:
    blob = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_name(experiment: str, identity: dict) -> str:
    return f"{experiment}-{identity_hash(identity)}"


def run_identity(exp, ds) -> dict:
    """Everything that changes the trained weights of experiment `exp` on dataset `ds` (the
    module docstring says what); loads no model."""
    cfg = identity_dict(exp.cfg)
    cfg.pop("name", None)
    sha = exp.method.weights_sha256(exp.cfg)
    return {"method": exp.method.name, "config": cfg, "data": ds.identity(),
            "weights_sha256": sha or "random init (seed 0)"}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def slug(text: str, compact: bool = False) -> str:
    """A file-name part from `text`: every character but [A-Za-z0-9-_.] becomes '_' (metrics
    files, sweep jobs). `compact` (figures, tables): lower case, [a-z0-9_] only, runs of other
    characters one '_', at most 80 characters, "figure" if nothing is left."""
    if compact:
        return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:80] or "figure"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# --------------------------------------------------------------------------- run folders

def output_folder(out: str | Path) -> Path:
    """An output folder as given (--run-dir, a profile's output_dir): a folder or not there yet."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunStateError(f"{out}: is a file, not a folder; give an output folder (--run-dir)")
    return out


def run_dir(out: Path, name: str) -> Path:
    return inside(out, RUNS, name) if name else Path(out) / RUNS


def seed_dir(rdir: Path, seed: int) -> Path:
    return Path(rdir) / f"seed{seed}"


def output_dir(profile, run_dir: str | Path = "") -> Path:
    """A profile's output folder: `run_dir` if given, else its `output_dir`, else outputs/<profile>."""
    return output_folder(Path(run_dir) if run_dir else repo_path(profile.output_dir or f"outputs/{profile.name}"))


def read_run(path: Path) -> dict | None:
    """A run's record, or None where there is none. One that cannot be read is an error, never
    "no run": the caller would otherwise write a fresh record over the training history."""
    f = Path(path) / "run.json"
    if not f.exists():
        return None
    try:
        record = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        record = e
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        why = type(record).__name__ if isinstance(record, Exception) else "not a run record"
        raise RunStateError(f"{f}: cannot be read ({why}); the run's weights and metrics are kept and it is "
                            "not rewritten: restore run.json (from a backup, or the run's metrics/*.json), "
                            "or move the run folder away to train it again")
    return record


def write_run(path: Path, record: dict) -> None:
    atomic_write_json(Path(path) / "run.json", record)


def all_runs(out: Path) -> list[dict]:
    """Every run record under outputs/<profile>/runs, oldest first."""
    records = []
    for d in sorted((Path(out) / RUNS).glob("*/run.json")):
        try:
            records.append(read_run(d.parent))
        except RunStateError:  # listed by nothing, removed by nothing; named where the run is used
            continue
    return sorted(records, key=lambda r: r.get("created", ""))


def find_run(name_or_path: str | Path, search: list[Path]) -> Path:
    """A run folder from its name (looked up under each folder's runs/) or its path."""
    p = Path(name_or_path)
    if (p / "run.json").exists():
        return p
    hits = sorted({d for root in map(Path, search)
                   for d in [*root.glob(f"{RUNS}/{p.name}"), *root.glob(f"*/{RUNS}/{p.name}")]
                   if (d / "run.json").exists()})
    if not hits:
        raise FileNotFoundError(f"no run named '{name_or_path}' under {', '.join(map(str, search))}; "
                                "list runs with `ls outputs/*/runs`")
    if len(hits) > 1:
        raise FileNotFoundError(f"run name '{name_or_path}' is ambiguous: {', '.join(map(str, hits))}; "
                                "give the path")
    return hits[0]


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# --------------------------------------------------------------------------- invocations

def index_lock(out: Path) -> contextlib.AbstractContextManager:
    """Held while index.html files are written (parallel runs share the output folder)."""
    return short_lock(Path(out) / INVOCATIONS / ".index.lock")


def new_invocation(out: Path, info: dict) -> str:
    """Start an invocation (one `run` of the pipeline); it becomes LATEST."""
    inv = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    d = invocation_dir(out, inv)
    atomic_write_json(d / "manifest.json", {"id": inv, "started": now(), **info, "entries": {}})
    set_latest(out, inv)
    return inv


def set_latest(out: Path, inv: str) -> None:
    atomic_write_text(Path(out) / INVOCATIONS / "LATEST", invocation_dir(out, inv).name + "\n")


def latest_invocation(out: Path) -> str | None:
    f = Path(out) / INVOCATIONS / "LATEST"
    try:
        inv = f.read_text().strip()
    except OSError:
        return None
    if not inv or name_problem(inv):  # LATEST is a record: it names a folder, never a path
        return None
    return inv if (invocation_dir(out, inv) / "manifest.json").exists() else None


def invocation_dir(out: Path, inv: str) -> Path:
    return inside(out, INVOCATIONS, inv)


def _load_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        manifest = e
    if not isinstance(manifest, dict):
        why = type(manifest).__name__ if isinstance(manifest, Exception) else "not a manifest"
        raise RunStateError(f"{path}: cannot be read ({why}); this invocation's record is damaged: start a "
                            "new invocation (a plain `run`, without --only), or delete that invocation folder")
    return manifest


def read_manifest(out: Path, inv: str) -> dict:
    return _load_manifest(invocation_dir(out, inv) / "manifest.json")


def _manifest_lock(out: Path) -> contextlib.AbstractContextManager:
    return short_lock(Path(out) / INVOCATIONS / ".manifest.lock")


def record_entry(out: Path, inv: str, key: str, entry: dict, section: str = "entries") -> None:
    """Add (or replace) one experiment's entry in the invocation's manifest, under a lock.
    `section`: "entries" (the experiments' own evaluations) or "transfers" (cross-dataset ones)."""
    path = invocation_dir(out, inv) / "manifest.json"
    with _manifest_lock(out):
        manifest = _load_manifest(path)
        manifest.setdefault(section, {})[key] = entry
        atomic_write_json(path, manifest)


def update_manifest(out: Path, inv: str, **fields: Any) -> None:
    path = invocation_dir(out, inv) / "manifest.json"
    with _manifest_lock(out):
        manifest = _load_manifest(path)
        manifest.update(fields)
        atomic_write_json(path, manifest)


def relpath(path: Path, out: Path) -> str:
    return os.path.relpath(Path(path), Path(out))


# --------------------------------------------------------------------------- metrics files

METRICS = "metrics"
TRANSFER_PREFIX = "transfer__"
RERANK_SUFFIX = "_rerank"          # the re-ranked twin of a metrics file (evaluation.rerank)
VERIFICATION = "verification"      # per-seed 1:1 thresholds of a run (load_run(...).verify)


def metrics_stem(dataset_key: str, mode: str, n_splits: int, flip: bool) -> str:
    """'synthetic-dorsal_right__default__n10': what was evaluated, and how."""
    return f"{slug(dataset_key.replace('/', '-'))}__{mode or 'default'}__n{n_splits}" + ("_flip" if flip else "")


def metrics_path(rdir: Path, dataset_key: str, mode: str, n_splits: int, flip: bool,
                 transfer: bool = False, reranked: bool = False) -> Path:
    """The metrics file of one (dataset, mode, evaluation settings) in run folder `rdir`; the
    k-reciprocal re-ranked twin of a file is `<stem>_rerank.json` beside it."""
    stem = metrics_stem(dataset_key, mode, n_splits, flip) + (RERANK_SUFFIX if reranked else "")
    return Path(rdir) / METRICS / f"{TRANSFER_PREFIX if transfer else ''}{stem}.json"


def verification_thresholds_path(rdir: Path, seed: int, mode: str) -> Path:
    """The 1:1 operating thresholds of one seed and inference mode (from the training identities),
    read by `load_run(...).verify`."""
    return Path(rdir) / VERIFICATION / f"seed{seed}{'_' + mode if mode else ''}.json"


def metrics_files(rdir: Path, dataset_key: str, n_splits: int, flip: bool) -> list[Path]:
    """The metrics files of a run for one dataset and evaluation settings (one per inference mode)."""
    pattern = metrics_stem(dataset_key, "*", n_splits, flip) + ".json"
    return sorted((Path(rdir) / METRICS).glob(pattern))


def all_metrics_files(rdir: Path) -> list[Path]:
    """Every evaluation of a run (its own, re-evaluations, transfers), by file name."""
    return sorted((Path(rdir) / METRICS).glob("*.json"))


def run_of_metrics_file(metrics_file: str | Path) -> Path:
    """The run folder a metrics file belongs to."""
    return Path(metrics_file).parent.parent


def split_csv_path(metrics_file: str | Path) -> Path:
    """The per-split rows beside a metrics file."""
    return Path(metrics_file).with_suffix(".csv")


def per_query_path(metrics_file: str | Path) -> Path:
    """The per-query results beside a metrics file (written and read through this one rule)."""
    p = Path(metrics_file)
    return p.with_name(p.stem + ".per_query.csv.gz")


def features_path(metrics_file: str | Path) -> Path:
    """The feature bank beside a metrics file: what its numbers were computed from, so that
    figures and explorers read features instead of embedding the images again."""
    p = Path(metrics_file)
    return p.with_name(p.stem + ".features.pt")


def entry_key(experiment: str, mode: str, dataset_key: str, variant: str = "") -> str:
    """An invocation's manifest holds one entry per key: re-running replaces, a sweep variant adds."""
    return f"{experiment}{'@' + mode if mode else ''}|{dataset_key}" + (f"|{variant}" if variant else "")


def transfer_key(experiment: str, mode: str, train_dataset: str | None, test_dataset: str) -> str:
    """The manifest key of a transfer evaluation (a zero-shot model trained on nothing)."""
    return f"{experiment}{'@' + mode if mode else ''}|{train_dataset or 'zero-shot'}->{test_dataset}"


def phases_ran(summary: dict) -> dict[str, list[str]]:
    """Which training phases of a finished seed ran, and which did not (0 epochs: "this phase does
    not run"), from its summary.json; recorded with the seed, read by `weights_label`."""
    phases = summary.get("phases", {})
    return {"phases_run": [p for p, st in phases.items() if st.get("epochs", 0) > 0],
            "phases_not_run": [p for p, st in phases.items() if st.get("epochs", 0) == 0]}


def weights_label(record: dict, backbone_weights: str, trains: bool) -> str:
    """What a model's weights are: the backbone's, or trained from them (saying which phases did
    not run, and "not trained" when none did), from the seeds' records."""
    if not trains:
        return backbone_weights
    seeds = [s for s in record.get("seeds", {}).values() if "phases_run" in s]
    ran = sorted({p for s in seeds for p in s["phases_run"]})
    skipped = sorted({p for s in seeds for p in s["phases_not_run"]} - set(ran))
    if seeds and not ran:
        return f"{backbone_weights} (not trained: every training phase has 0 epochs)"
    if skipped:
        return f"trained from {backbone_weights} (phase {', '.join(skipped)} not run: 0 epochs)"
    return f"fine-tuned from {backbone_weights}"


EVALUATION_VERSION = 1  # raise when the evaluator's numbers change for the same features


def evaluation_inputs(run_name: str, protocol, cfg, device: str, seeds: list[int], variant: dict | None = None,
                      evaluation: dict | None = None) -> str:
    """The digest of what an evaluation's numbers follow from: the run (its weights), the split
    lists as evaluated, the configuration (evaluation settings included), the device, seeds and
    sweep variant. A metrics file recording the same digest (and its feature bank) is read back
    instead of embedding the images again."""
    def rows(rs) -> list:
        return [[r.image_name, r.label] for r in rs]
    splits = {k: [rows(s) for s in getattr(protocol, k)] for k in ("queries", "galleries", "galleries_all")}
    settings = to_dict(cfg)  # all of it: the payload records the config, so none of it may be stale
    return identity_hash({"version": EVALUATION_VERSION, "run": run_name, "test": rows(protocol.test),
                          "splits": splits, "seed": protocol.seed, "settings": settings, "device": device,
                          "seeds": [int(s) for s in seeds], "variant": variant or {}, "evaluation": evaluation or {}})


def metrics_payload(record: dict, mode: str, backbone, cfg, protocol, dataset, *, method_title: str,
                    trains: bool, device: str, profile: str, invocation: str, seeds: list[int],
                    **extra: Any) -> dict:
    """What every metrics file records about its numbers, whoever writes it (an experiment's own
    evaluation or a transfer): the run, the model, the data, the protocol as evaluated (its
    `n_splits` and split seed), the settings and the environment. `extra`: the writer's own keys."""
    return {
        "run": record["name"], "experiment": record["experiment"], "method": record["method"],
        "method_title": method_title, "stage": record["stage"], "mode": mode,
        "model": record["experiment"] + (f" [{mode}]" if mode else ""),
        "backbone": backbone.name,
        "weights": weights_label(record, backbone.weights, trains),
        "pretrained": backbone.pretrained, "weights_sha256": backbone.weights_sha256,
        "quick_gelu": getattr(backbone, "quick_gelu", None),
        "dataset": dataset.key, "data": dataset.description, "real_data": dataset.is_real,
        "aspect": dataset.aspect, "split_seed": protocol.seed, "n_splits": protocol.n_splits,
        "flip_test": cfg.flip_test, "device": device, "profile": profile, "seeds": list(seeds),
        "config": to_dict(cfg), "identity": record["identity"], "environment": environment(),
        "invocation": invocation, "created": record["created"], "evaluated": now(),
        "inputs_digest": evaluation_inputs(record["name"], protocol, cfg, device, seeds, extra.get("variant"),
                                            extra.get("evaluation_settings")),
        **extra,
    }
