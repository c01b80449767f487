"""Feature banks saved once, beside the metrics file they produced.

An evaluation embeds every evaluation image of one model (seed, inference mode); the features
(float32, exactly the tensors the metrics were computed from) are stored with the image names,
the run, the mode and the input size, one bank file per metrics file and a tensor per seed.
Figures, the comparison and the explorers read these banks instead of loading the model and
embedding the images again (`runs.features_path` names the file).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from ..atomic import atomic_path
from ..data.protocol import SplitRow
from ..evaluation import FeatureBank
from ..runs import features_path

FORMAT = 1


@dataclass
class SavedBank:
    """One metrics file's features: per seed, rows in `image_names` order."""
    path: Path
    run: str
    mode: str
    dataset: str
    image_size: tuple[int, int]
    image_names: list[str]
    features: dict[int, torch.Tensor]   # seed -> (N, D) float32, L2-normalised

    def bank(self, seed: int | None = None, rows: list[SplitRow] | None = None) -> FeatureBank:
        """The FeatureBank of `seed` (the first saved by default), of `rows` only if given (in
        their order), as the evaluation held it."""
        seed = next(iter(self.features)) if seed is None else seed
        if seed not in self.features:
            raise KeyError(f"{self.path}: no features of seed {seed}; it holds seeds {sorted(self.features)}")
        feats, index = self.features[seed], {n: i for i, n in enumerate(self.image_names)}
        if rows is None:
            return FeatureBank(feats, index)
        missing = [r.image_name for r in rows if r.image_name not in index]
        if missing:
            raise KeyError(f"{self.path}: no features of {len(missing)} image(s) such as {missing[0]!r}; "
                           "the protocol changed since this evaluation: re-run the experiment")
        idx = torch.tensor([index[r.image_name] for r in rows], dtype=torch.long)
        return FeatureBank(feats[idx], {r.image_name: i for i, r in enumerate(rows)})


def save_bank(metrics_file: Path, run: str, mode: str, dataset: str, image_size: tuple[int, int],
              banks: Mapping[int, FeatureBank]) -> Path:
    """Write the features of every seed of one metrics file (atomically: all or nothing)."""
    names = None
    features = {}
    for seed, bank in banks.items():
        order = sorted(bank.index, key=bank.index.__getitem__)
        if names is None:
            names = order
        elif order != names:
            raise ValueError(f"{metrics_file}: seed {seed}'s features cover other images than seed "
                             f"{next(iter(banks))}'s; every seed is evaluated on the same images")
        features[int(seed)] = bank.features.detach().to(torch.float32).cpu().contiguous()
    path = features_path(metrics_file)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "run": run, "mode": mode, "dataset": dataset,
                    "image_size": list(image_size), "image_names": names or [], "features": features}, tmp)
    return path


def load_bank(metrics_file: str | Path) -> SavedBank:
    """The feature bank beside `metrics_file` (a clear error if it was never written)."""
    path = features_path(metrics_file)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no feature bank beside {Path(metrics_file).name} (evaluated before "
                                "banks were saved); re-run its experiment to write one")
    d = torch.load(path, map_location="cpu", weights_only=True)
    if d.get("format") != FORMAT:
        raise ValueError(f"{path}: feature bank format {d.get('format')!r}, this code reads {FORMAT}; "
                         "re-run its experiment")
    return SavedBank(path, d["run"], d["mode"], d["dataset"], tuple(d["image_size"]), list(d["image_names"]),
                     {int(s): t for s, t in d["features"].items()})
