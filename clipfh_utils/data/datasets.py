"""A hand dataset (real 11k Hands, rendered or generated synthetic hands) and its images.

All of them go through the same code path: a HandInfo.csv in the real schema plus an image folder
(`prepare.prepare_dataset` makes one from a profile). `HandDataset.is_real` travels into every
metrics file so that no synthetic number is ever mistaken for a hand-identification result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import HD_KINDS, display_path
from ..provenance import file_sha256, files_digest
from .handinfo import ASPECTS, HandRecord, aspect_slug, load_handinfo
from .image_cache import check_images, load_images
from .protocol import Protocol, SplitRow, build_protocol, read_split_files, split_dir, write_split_files


@dataclass
class HandDataset:
    kind: str            # "11k" | "11k-rendered" | "synthetic" | "hd" | "hd-synthetic" (data.hd.HdDataset)
    aspect: str
    handinfo: Path
    images_dir: Path
    splits_root: Path
    cache_dir: Path
    description: str
    split_seed: int = 0
    n_splits: int = 10
    _protocol: Protocol | None = field(default=None, repr=False)

    @property
    def is_real(self) -> bool:
        return self.kind == "11k"

    @property
    def identity_space(self) -> str:
        """Datasets with the same identity space share people: an id seen in training on one is the
        same person on the other (the four aspects of one HandInfo.csv), so transfer removes it."""
        return f"{self.kind}:{display_path(self.handinfo)}"

    @property
    def key(self) -> str:
        """'synthetic/dorsal_right': names the dataset in run records, tables and file names."""
        return f"{self.kind}/{aspect_slug(self.aspect)}"

    def records(self) -> list[HandRecord]:
        return load_handinfo(self.handinfo, check_sha256=False)  # checked by prepare_dataset

    def protocol(self) -> Protocol:
        """The protocol as written in the split files (created first if they do not exist yet)."""
        if self._protocol is None:
            self._protocol = load_protocol(self, self.aspect, self.split_seed, self.n_splits)
        return self._protocol

    def require_images(self) -> None:
        """Fail before any model is loaded if an image of the protocol is missing (all listed)."""
        proto = self.protocol()
        names = dict.fromkeys(r.image_name for r in proto.train + proto.val + proto.eval_rows())
        check_images(self.images_dir, list(names))

    def identity(self) -> dict:
        """What about the data changes trained weights: goes into every run hash."""
        proto = self.protocol()
        train_names = [r.image_name for r in proto.train + proto.val]
        return {"dataset": self.kind, "aspect": self.aspect, "split_seed": self.split_seed,
                "handinfo_sha256": file_sha256(self.handinfo),
                "train_images_sha256": files_digest(self.images_dir, train_names)}


def write_all_splits(ds: HandDataset, seed: int, n_splits: int) -> dict[str, Protocol]:
    """Build and write the split lists of all four aspects (HD: of its one); returns them by aspect."""
    if ds.kind in HD_KINDS:
        return ds.write_splits(seed, n_splits)
    records = ds.records()
    out = {}
    for aspect in ASPECTS:
        proto = build_protocol(records, aspect, seed, n_splits)
        write_split_files(proto, ds.splits_root)
        out[aspect] = proto
    return out


def load_protocol(ds: HandDataset, aspect: str, seed: int, n_splits: int) -> Protocol:
    """The protocol as written in the split files (created first if they do not exist yet)."""
    d = split_dir(ds.splits_root, aspect, seed)
    held = len(list(d.glob("query_*.csv"))) if (d / "train.csv").exists() else -1
    if held < n_splits:  # none yet, or fewer than asked: split i depends on (seed, i) only, so the
        write_all_splits(ds, seed, n_splits)  # files already there come out byte-identical (kept)
    proto = read_split_files(ds.splits_root, aspect, seed)
    proto.queries, proto.galleries, proto.galleries_all = (
        proto.queries[:n_splits], proto.galleries[:n_splits], proto.galleries_all[:n_splits])
    return proto


def load_rows(ds: HandDataset, rows: list[SplitRow], size_hw: tuple[int, int]
              ) -> tuple[torch.Tensor, dict[str, int]]:
    """uint8 images (N,3,H,W) of `rows` from the decode cache, and imageName -> row index."""
    names = [r.image_name for r in rows]
    images = load_images(ds.images_dir, names, size_hw, ds.cache_dir)
    return images, {n: i for i, n in enumerate(names)}


def one_per_identity(rows: list[SplitRow], n: int, seed: int = 0) -> list[SplitRow]:
    """Up to `n` rows, each of a different identity (for sample-image figures)."""
    import numpy as np
    firsts: dict[str, SplitRow] = {}
    for r in rows:
        firsts.setdefault(r.person_id, r)
    picked = list(firsts.values())
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(picked), size=min(n, len(picked)), replace=False).tolist())
    return [picked[i] for i in idx]
