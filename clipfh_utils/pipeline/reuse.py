"""Evaluations read back instead of recomputed, when nothing they follow from has changed.

A metrics file records the digest of its inputs (`runs.evaluation_inputs`: the run, the split
lists, the evaluation settings, device and seeds). Re-running an unchanged experiment finds the
file with the same digest and its feature bank, scores the saved features (the numbers equal the
file's: the same float32 features through the same evaluator) and embeds nothing; the metrics
file itself is kept as written when it was evaluated and only listed in the new invocation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import to_dict
from ..data.datasets import HandDataset
from ..runs import evaluation_inputs, features_path, metrics_files
from .banks import SavedBank, load_bank
from .evaluate import EvalResult, score_bank


@dataclass
class Kept:
    """One mode's metrics file whose inputs are unchanged, with its saved features."""
    path: Path
    payload: dict
    bank: SavedBank

    def result(self, seed: int, ds: HandDataset, images_fn: Callable, name: str, settings=None) -> EvalResult:
        proto = ds.protocol()
        rows = proto.eval_rows()
        images, _ = images_fn(ds, rows, self.bank.image_size)
        speed = float((self.payload.get("embed_images_per_s") or {}).get(str(seed), 0.0))
        return score_bank(name, self.bank.bank(seed, rows), images, proto, speed, ds, settings)


def unchanged_evaluations(rdir: Path, ds: HandDataset, cfg, run_name: str, device: str,
                          seeds: list[int], variant: dict | None = None, settings=None) -> dict[str, Kept]:
    """Per inference mode, the metrics file of run `rdir` on `ds` that recorded these same inputs
    and whose feature bank holds every seed; a mode missing here is evaluated again."""
    proto = ds.protocol()
    if settings is not None and settings.rerank:
        return {}  # its re-ranked twin file is written with the plain one: evaluated again
    digest = evaluation_inputs(run_name, proto, cfg, device, seeds, variant, to_dict(settings) if settings else None)
    kept = {}
    for f in metrics_files(rdir, ds.key, proto.n_splits, cfg.flip_test):
        try:
            payload = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # unreadable: evaluated again and rewritten
        if payload.get("inputs_digest") != digest or not features_path(f).exists():
            continue
        try:
            bank = load_bank(f)
        except (OSError, ValueError, RuntimeError, KeyError):
            continue  # an unreadable or older bank: evaluated again and rewritten
        if sorted(bank.features) == sorted(int(s) for s in seeds) and bank.run == run_name:
            kept[payload["mode"]] = Kept(f, payload, bank)
    return kept
