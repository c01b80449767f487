"""TensorBoard event files of one seed's training, next to its JSON-lines logs.

Tags (one step axis per seed: the optimiser steps of all its phases, counted from 0):
  loss/<term>          every step: the weighted `total` and each term by its loss-registry name
  lr/<group>           per epoch: the learning rate of every named parameter group
  speed/images_per_s   per epoch
  monitor/<metric>     per monitored epoch: the validation metrics (training identities only)
  config               text at step 0: the run's resolved config
Per-epoch values sit at the epoch's last step. Nothing is written while a step runs: the loop
hands over the epoch's terms after its one host sync, and the file is flushed once per epoch.

Resuming from a checkpoint taken after global step T opens the writer with `purge_step=T`:
TensorBoard hides whatever an interrupted process wrote from step T on, so the resumed curves
continue without a gap or a duplicated step. A fresh start removes the folder's old event files
(as the JSON-lines logs start empty). Without the `tensorboard` package the loop trains as
before and says once that it writes no event files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..console import note

EVENTS_GLOB = "events.out.tfevents.*"
_noted = False


def _summary_writer_class():
    """torch's SummaryWriter, or None (with a one-line note, once per process) without tensorboard."""
    global _noted
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _noted:
            note("tensorboard is not installed: no TensorBoard event files are written "
                 "(pip install tensorboard, or `make install`)")
            _noted = True
        return None
    return SummaryWriter


def _after_existing(out_dir: Path) -> None:
    """TensorBoard reads a folder's event files in name order, and a name starts with the second the
    file was created: a resume within the same second as the interrupted writer (a quick kill -9)
    would sort before it and its purge would come first. Wait for the next second then."""
    newest = max((int(f.name.split(".")[3]) for f in out_dir.glob(EVENTS_GLOB)
                  if f.name.split(".")[3:4] and f.name.split(".")[3].isdigit()), default=0)
    while int(time.time()) <= newest:
        time.sleep(0.05)


def config_markdown(config: Mapping[str, Any]) -> str:
    """The config as YAML in a markdown code block (TensorBoard renders text as markdown)."""
    plain = json.loads(json.dumps(dict(config), default=str))  # tuples, paths -> YAML-safe types
    text = yaml.safe_dump(plain, sort_keys=False, default_flow_style=None)
    return "\n".join("    " + line for line in text.splitlines())


class EventLog:
    """The SummaryWriter of one seed folder; a no-op where tensorboard is missing."""

    def __init__(self, out_dir: Path, resume_step: int | None, config: Mapping[str, Any] | None = None):
        writer_cls = _summary_writer_class()
        self.writer = None
        if writer_cls is None:
            return
        if resume_step is None:
            for old in Path(out_dir).glob(EVENTS_GLOB):
                old.unlink()
        else:
            _after_existing(Path(out_dir))
        # a queue large enough that only flush() (once per epoch) or close() writes to disk
        self.writer = writer_cls(str(out_dir), purge_step=resume_step, max_queue=1 << 16, flush_secs=3600)
        if resume_step is None and config is not None:
            self.writer.add_text("config", config_markdown(config), 0)

    def epoch(self, first_step: int, names: Sequence[str], terms: Sequence[Sequence[float]],
              lrs: Mapping[str, float], images_per_s: float, monitor: Mapping[str, float]) -> None:
        """One epoch: `terms[i]` holds the values of `names` at global step first_step + i."""
        if self.writer is None or not len(terms):
            return
        w = self.writer
        for i, row in enumerate(terms):
            for name, value in zip(names, row):
                w.add_scalar(f"loss/{name}", float(value), first_step + i)
        last = first_step + len(terms) - 1
        for group, lr in lrs.items():
            w.add_scalar(f"lr/{group}", lr, last)
        w.add_scalar("speed/images_per_s", images_per_s, last)
        for key, value in monitor.items():
            w.add_scalar(f"monitor/{key}", float(value), last)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
