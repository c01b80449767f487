"""What produced a number: code version, software, hardware, and digests of the inputs.

Every run record, metrics file and report carries `environment()`; run hashes use the file
digests here (content hashes, cached by path, size and mtime so that a 300 MB weights file or a
thousand photos are read once per machine, not once per run).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterable

from .atomic import atomic_write_json
from .config import REPO_ROOT


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def _static_environment() -> dict:
    import torch
    try:
        import open_clip
        oc = open_clip.__version__
    except ImportError:  # pragma: no cover - open_clip is a dependency
        oc = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    cuda = torch.cuda.is_available()
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": oc,
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "platform": platform.platform(),
        "pip_freeze": sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                             if d.metadata["Name"]),
    }


def environment() -> dict:
    """Commit (+ dirty flag), date, Python/torch/open_clip/CUDA versions, GPU, installed packages."""
    return {**_static_environment(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


# what a run's numbers depend on most; `clipfh` notes when a run is reproduced with other versions
KEY_PACKAGES = ("torch", "torchvision", "open-clip-torch", "numpy", "scipy", "scikit-learn", "pillow", "pandas",
                "timm")


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def package_versions(freeze: Iterable[str], names: Iterable[str] = KEY_PACKAGES) -> dict[str, str]:
    """{name: version} of `names` in `pip freeze` lines ("Name==1.2.3")."""
    wanted = {_canonical(n) for n in names}
    out = {}
    for line in freeze:
        name, sep, version = line.partition("==")
        if sep and _canonical(name) in wanted:
            out[_canonical(name)] = version.strip()
    return out


def version_drift(recorded: dict, current: dict | None = None) -> dict[str, tuple[str | None, str | None]]:
    """The key packages (and Python) whose version differs between a run's recorded environment and
    `current` (default: this one): {name: (recorded, now)}. A record without `pip_freeze` has none."""
    if not recorded.get("pip_freeze"):
        return {}
    current = current or _static_environment()
    then, now = package_versions(recorded["pip_freeze"]), package_versions(current.get("pip_freeze", []))
    drift = {n: (then.get(n), now.get(n)) for n in sorted(set(then) | set(now)) if then.get(n) != now.get(n)}
    if recorded.get("python") and recorded.get("python") != current.get("python"):
        drift["python"] = (recorded["python"], current.get("python"))
    return drift


def short_environment(env: dict) -> str:
    """One line for figure metadata and report footers."""
    commit = (env.get("git_commit") or "unknown")[:10] + ("+dirty" if env.get("git_dirty") else "")
    dev = env.get("gpu") or "cpu"
    return (f"commit {commit} · torch {env.get('torch')} · open_clip {env.get('open_clip')} · "
            f"{dev} · {env.get('date', '')}")


# --------------------------------------------------------------------------- file digests

def _digest_cache_path() -> Path:
    return Path(os.environ.get("CLIPFH_DIGEST_CACHE", REPO_ROOT / "data" / "cache" / "digests.json"))


_cache: dict[str, str] | None = None


def _load_cache() -> dict[str, str]:
    global _cache
    if _cache is None:
        try:
            _cache = json.loads(_digest_cache_path().read_text())
        except (OSError, json.JSONDecodeError):  # none yet, or broken: rebuilt as we go
            _cache = {}
    return _cache


def _flush_cache() -> None:
    try:
        atomic_write_json(_digest_cache_path(), _load_cache())
    except OSError:  # a read-only checkout still works, just slower next time
        pass


def file_sha256(path: str | Path, _flush: bool = True) -> str:
    """sha256 of a file's content, remembered per (absolute path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache = _load_cache()
    if key not in cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        cache[key] = h.hexdigest()
        if _flush:
            _flush_cache()
    return cache[key]


def files_digest(root: str | Path, names: Iterable[str]) -> str:
    """One sha256 over (name, content digest) of many files: the identity of an image set."""
    root = Path(root)
    h = hashlib.sha256()
    before = len(_load_cache())
    for n in sorted(names):
        h.update(f"{n}\0{file_sha256(root / n, _flush=False)}\n".encode())
    if len(_load_cache()) != before:
        _flush_cache()
    return h.hexdigest()
