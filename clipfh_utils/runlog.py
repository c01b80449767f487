"""The run log: one text file per invocation that a long batch run can be followed in.

`clipfh run` points CLIPFH_RUN_LOG at invocations/<id>/run.log; the notebook
kernels append their progress lines there (per epoch: losses, seconds, ETA) and the runner adds
papermill's cell output, so `tail -f` shows a run on a remote box without touching the reports.
Interactively (no CLIPFH_RUN_LOG) nothing is written: progress bars show instead.
"""
from __future__ import annotations

import logging
import os

ENV = "CLIPFH_RUN_LOG"
FORMAT = "%(asctime)s %(name)s %(message)s"


def run_logger() -> logging.Logger:
    """The 'clipfh' logger, writing to $CLIPFH_RUN_LOG when set (never to the notebook's output)."""
    log = logging.getLogger("clipfh")
    path = os.environ.get(ENV)
    if path and not any(getattr(h, "baseFilename", None) == os.path.abspath(path) for h in log.handlers):
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    log.propagate = False  # nothing into the notebook (reports stay clean) or the console
    return log


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
