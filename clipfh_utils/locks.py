"""Who may write where: one writer per run folder, short exclusive sections for shared files.

A run folder being written holds `lock.json`: host, pid, a random token and a heartbeat time that
a background thread refreshes every `HEARTBEAT_S` seconds. A second writer stops with a one-line
`LockedError` naming the holder. A lock is stale, and is taken over with a note, when its holder
is a process of this host that no longer exists (kill -9, a dead kernel) or when its heartbeat is
older than `STALE_S` (a job on another host that died). Taking a lock over is itself done under
a short lock, so two writers never both win. Reading a run (load_run, notebooks that only read
results) takes no lock.

`short_lock` is a flock held for a quick read-modify-write of a shared file (an invocation's
manifest, index.html); flock works across processes of one host and, on NFSv4, across hosts.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from .atomic import atomic_write_json
from .console import note

LOCK_FILE = "lock.json"
HEARTBEAT_S = 30.0
STALE_S = 300.0


class LockedError(RuntimeError):
    """Another live process is writing the folder."""


@contextlib.contextmanager
def short_lock(path: Path) -> Iterator[None]:
    """An exclusive lock for a quick read-modify-write of a shared file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_lock(folder: Path) -> dict | None:
    """The lock record of a folder, or None (no lock, or a lock file cut short: treated as none)."""
    try:
        info = json.loads((Path(folder) / LOCK_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def staleness(info: dict, stale_after: float = STALE_S) -> str | None:
    """Why a lock no longer protects anything ("process 123 of this host is gone"), or None if live."""
    age = time.time() - float(info.get("heartbeat_unix", 0))
    if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1))):
        return f"process {info.get('pid')} of this host is gone"
    if age > stale_after:
        return f"its heartbeat is {age:.0f} s old (stale after {stale_after:.0f} s)"
    return None


def describe(info: dict) -> str:
    age = time.time() - float(info.get("heartbeat_unix", 0))
    return (f"host {info.get('host')} pid {info.get('pid')} (since {info.get('started')}, "
            f"heartbeat {age:.0f} s ago)")


def check_unlocked(folder: Path, stale_after: float = STALE_S) -> None:
    """Raise `LockedError` if a live process is writing `folder` (a look, nothing is taken)."""
    info = read_lock(folder)
    if info is not None and staleness(info, stale_after) is None:
        raise LockedError(f"{folder}: being written by {describe(info)}; wait until it finishes, or "
                          f"run another experiment; if that process is gone, delete {LOCK_FILE} there "
                          f"(it also counts as gone once its heartbeat is {stale_after:.0f} s old)")


class RunLock:
    """Exclusive right to write one folder, kept alive by a heartbeat thread (a context manager)."""

    def __init__(self, folder: str | Path, *, heartbeat_s: float = HEARTBEAT_S, stale_after: float = STALE_S,
                 wait_s: float = 0.0):
        self.folder = Path(folder)
        self.wait_s = wait_s  # how long to wait for a live holder before giving up
        self.path = self.folder / LOCK_FILE
        self.guard = self.folder.parent / ".lock"  # serialises check-and-take between writers
        self.heartbeat_s, self.stale_after = heartbeat_s, stale_after
        self.token = secrets.token_hex(8)
        self.lost: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._info: dict = {}

    def _write(self) -> None:
        self._info["heartbeat"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._info["heartbeat_unix"] = time.time()
        atomic_write_json(self.path, self._info)

    def acquire(self) -> None:
        """Take the lock; a live holder is waited for up to `wait_s` seconds, then named in a LockedError."""
        self.folder.mkdir(parents=True, exist_ok=True)
        deadline, waiting = time.time() + self.wait_s, False
        while True:
            try:
                self._take()
                break
            except LockedError as e:
                if time.time() >= deadline:
                    raise
                if not waiting:
                    note(f"{e}".split("; wait until")[0] + f"; waiting up to {self.wait_s:.0f} s")
                    waiting = True
                time.sleep(min(2.0, max(0.05, deadline - time.time())))
        self._thread = threading.Thread(target=self._beat_forever, daemon=True, name=f"lock {self.folder.name}")
        self._thread.start()

    def _take(self) -> None:
        with short_lock(self.guard):
            held = read_lock(self.folder)
            if held is not None and held.get("token") != self.token:
                why = staleness(held, self.stale_after)
                if why is None:
                    check_unlocked(self.folder, self.stale_after)
                note(f"{self.folder}: took over the lock of {describe(held)}: {why}")
            self._info = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            self._write()

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except OSError:  # a full disk: the write that needs the space will say so
                pass

    def beat(self) -> None:
        """Refresh the heartbeat, unless another writer has taken the lock (then remember who)."""
        with short_lock(self.guard):
            held = read_lock(self.folder)
            if held is None or held.get("token") != self.token:
                self.lost = held or {"host": "?", "pid": "?", "heartbeat_unix": 0}
                self._stop.set()
                return
            self._write()

    def check(self) -> None:
        """Raise if the lock was taken over (our heartbeat stalled): stop before writing more."""
        if self.lost is not None:
            raise LockedError(f"{self.folder}: lost the lock to {describe(self.lost)} (this process's "
                              "heartbeat stalled); stopped without writing further")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with short_lock(self.guard):
            held = read_lock(self.folder)
            if held is not None and held.get("token") == self.token:
                self.path.unlink()

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
