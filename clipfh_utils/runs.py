"""Where results live, and what names them.

outputs/<profile>/
  runs/<experiment>-<hash>/            one run: a trained model (all its seeds) and its evaluations
    run.json                           identity (what the hash covers), resolved config, provenance
    lock.json                          while a process writes the run (clipfh_utils.locks)
    seed<k>/                           checkpoint.pt while training; weights.pt, summary.json, logs
    metrics/<dataset>__<mode>__<eval>.json (+ .csv per split, .per_query.csv.gz)
  invocations/<id>/manifest.json       which runs and metrics files one `run` invocation produced
  invocations/LATEST                   the id of the newest invocation

A run is named `<experiment>-<hash>`; the hash covers everything that changes the trained weights
(the method config as resolved, seeds and evaluation settings excluded; dataset and aspect; split
seed; HandInfo.csv and training-image digests; the weights file's digest). Re-running an unchanged
experiment finds its run and loads it; an ablation gets its own hash and never overwrites its
baseline; changing `n_splits` or `flip_test` only re-evaluates.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json, atomic_write_text, inside
from .config import name_problem
from .locks import short_lock

RUNS, INVOCATIONS = "runs", "invocations"


class RunStateError(ValueError):
    """What was asked does not fit the state of the run folder (an unfinished run without
    --resume, --resume with another configuration, --resume-from a run that cannot be resumed)."""


def identity_hash(identity: dict) -> str:
    blob = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_name(experiment: str, identity: dict) -> str:
    return f"{experiment}-{identity_hash(identity)}"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def slug(text: str) -> str:
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
