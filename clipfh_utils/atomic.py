"""Atomic file writes: a crash, Ctrl-C or a full disk never leaves a half-written output behind.

Every output goes to a temp file in the same folder and replaces the target only once complete,
so a failed write leaves the previous complete file (or none). A full disk is a `DiskFullError`
that names the folder and the space needed, not a bare `OSError: [Errno 28]`.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .console import size_text

_UMASK = os.umask(0)
os.umask(_UMASK)


class DiskFullError(OSError):
    """Not enough disk space for an output (foreseen, or met while writing)."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def free_bytes(folder: str | Path) -> int:
    """Free space on the disk holding `folder` (or its nearest existing parent)."""
    p = Path(folder).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def require_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Stop before work starts when its outputs cannot fit on the disk."""
    free = free_bytes(folder)
    if free < needed:
        raise DiskFullError(f"{folder}: not enough free disk space for {what}: needs about "
                            f"{size_text(needed)}, {size_text(free)} free; free space there "
                            "(`clipfh clean`) or write elsewhere (--run-dir)")


@contextmanager
def atomic_path(path: str | Path, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temp path in the same folder; it replaces `path` only if the block succeeds.

    `size_hint` (bytes) is what a full-disk error says is needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs are for sharing
        os.replace(tmp, path)
    except Exception as e:
        # torch and numpy writers wrap ENOSPC in their own errors: a full disk is also told by
        # the free space left beside the (still present) temp file
        full = getattr(e, "errno", None) == errno.ENOSPC or bool(size_hint and free_bytes(path.parent) < size_hint)
        if not full or isinstance(e, DiskFullError):
            raise
        need = f"needs about {size_text(size_hint)}, " if size_hint else ""
        raise DiskFullError(f"{path.parent}: disk full while writing {path.name} ({need}"
                            f"{size_text(free_bytes(path.parent))} free); the previous {path.name}, if "
                            "any, is intact: free space there (`clipfh clean`) or write "
                            "elsewhere (--run-dir)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy a file so that `dst` is either complete or absent."""
    with atomic_path(dst, Path(src).stat().st_size) as tmp:
        shutil.copyfile(src, tmp)
