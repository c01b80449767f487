"""`clipfh clean`: what in an output folder can go, listed first, removed on request.

Removable: resumable checkpoints of finished seeds (the final weights stay), temp files left by
interrupted writes, partial notebooks of failed runs, stale lock files, the decode caches (rebuilt
when needed), and finished runs that no invocation's manifest refers to (a run becomes referred
to once an invocation has evaluated it). Never removed: unfinished
runs (they can be resumed; listed as kept) and anything in a run folder that a live process holds.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..locks import LOCK_FILE, STALE_S, read_lock, staleness
from ..runs import INVOCATIONS, all_runs, folder_size, run_dir
from ..training.loop import Trainer, is_finished


@dataclass
class Removable:
    kind: str
    path: Path
    size: int


def _size(p: Path) -> int:
    return folder_size(p) if p.is_dir() else p.stat().st_size


def _referenced_runs(out: Path) -> set[str]:
    names = set()
    for f in (out / INVOCATIONS).glob("*/manifest.json"):
        try:
            entries = json.loads(f.read_text()).get("entries", {})
        except (OSError, json.JSONDecodeError):
            continue
        names.update(e.get("run") for e in entries.values())
    return names


def _live(folder: Path) -> bool:
    info = read_lock(folder)
    return info is not None and staleness(info) is None


def _old_temps(folder: Path) -> list[Removable]:
    """Temp files of atomic writes (.name.XXXX.tmp) that no write is still using: a write takes
    seconds, so one older than the lock's stale time was left by a killed process."""
    cutoff = time.time() - STALE_S
    return [Removable("temp file of an interrupted write", t, _size(t))
            for t in sorted(folder.rglob(".*.tmp")) if t.stat().st_mtime < cutoff]


def removable(out: Path, cache_dir: Path | None = None) -> tuple[list[Removable], list[str]]:
    """What can be removed under `out` (and the decode caches in `cache_dir`), and what is kept, why."""
    out = Path(out)
    items: list[Removable] = []
    kept: list[str] = []
    used = _referenced_runs(out)
    for rec in all_runs(out):
        rdir = run_dir(out, rec["name"])
        if _live(rdir):
            kept.append(f"{rdir}: being written by a live process")
            continue
        if (rdir / LOCK_FILE).exists():
            items.append(Removable("stale lock file", rdir / LOCK_FILE, _size(rdir / LOCK_FILE)))
        seeds = sorted(p for p in rdir.glob("seed*") if p.is_dir())
        unfinished = [s for s in seeds if not is_finished(s) and (s / Trainer.CHECKPOINT).exists()]
        if unfinished:
            kept.append(f"{rdir}: unfinished ({', '.join(s.name for s in unfinished)}); continue it with "
                        "--resume, or delete the folder by hand")
        elif rec["name"] not in used:
            items.append(Removable("run no invocation refers to", rdir, _size(rdir)))
            continue
        items += [Removable("checkpoint of a finished seed", s / Trainer.CHECKPOINT, _size(s / Trainer.CHECKPOINT))
                  for s in seeds if is_finished(s) and (s / Trainer.CHECKPOINT).exists()]
        items += _old_temps(rdir)
    for nb in sorted((out / INVOCATIONS).glob("*/notebooks/*.failed.ipynb")):
        items.append(Removable("partial notebook of a failed run", nb, _size(nb)))
    items += _old_temps(out / INVOCATIONS)
    if cache_dir is not None and Path(cache_dir).is_dir():
        items += [Removable("decode cache (rebuilt when needed)", f, _size(f))
                  for f in sorted(Path(cache_dir).glob("*.npy"))]
    return items, kept


def remove(items: list[Removable]) -> int:
    """Delete the items (a run folder only if still not held); returns the bytes freed."""
    freed = 0
    for item in items:
        if not item.path.exists():
            continue
        if item.path.is_dir():
            if _live(item.path):
                continue
            shutil.rmtree(item.path)
        else:
            item.path.unlink()
        freed += item.size
    return freed
