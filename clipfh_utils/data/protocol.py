"""The 11k Hands evaluation protocol (MBA-Net / GPA-Net / CLIP-HandID / the dissertation).

Identities are split by id threshold; one seeded validation image per training id; N seeded Monte
Carlo query/gallery draws over the test ids; `gallery_all` adds the other three aspects' galleries
as distractors that can never match. Every draw comes from a numpy Generator seeded with
(seed, purpose, aspect, split), so the same seed gives the same split files byte for byte.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from .handinfo import ASPECTS, HandInfoError, HandRecord, aspect_slug

ID_THRESHOLDS: dict[str, int] = {"dorsal right": 1050, "dorsal left": 1037,
                                 "palmar right": 1051, "palmar left": 1042}
# Other aspects' identities are relabelled so that a distractor never matches a query.
DISTRACTOR_OFFSETS: tuple[int, ...] = (11_000_000, 21_000_000, 31_000_000)
SPLIT_COLUMNS: tuple[str, ...] = ("imageName", "id", "aspectOfHand", "label")


@dataclass(frozen=True)
class SplitRow:
    image_name: str
    person_id: str
    aspect: str
    label: int  # int(id) for the protocol's aspect; int(id) + offset for distractors


@dataclass
class Protocol:
    aspect: str
    seed: int
    train: list[SplitRow]
    val: list[SplitRow]
    test: list[SplitRow]
    queries: list[list[SplitRow]] = field(default_factory=list)
    galleries: list[list[SplitRow]] = field(default_factory=list)
    galleries_all: list[list[SplitRow]] = field(default_factory=list)

    @property
    def n_splits(self) -> int:
        return len(self.queries)

    @property
    def class_ids(self) -> list[str]:
        """The training identities in label order (label i = class_ids[i])."""
        return sorted({r.person_id for r in self.train}, key=int)

    def eval_rows(self) -> list[SplitRow]:
        """Every image any split evaluates on (test + distractors), each once: extract these once."""
        seen: dict[str, SplitRow] = {r.image_name: r for r in self.test}
        for g in self.galleries_all:
            for r in g:
                seen.setdefault(r.image_name, r)
        return list(seen.values())

    def summary(self) -> dict[str, int]:
        return {
            "train_ids": len(self.class_ids),
            "train_images": len(self.train),
            "val_images": len(self.val),
            "test_ids": len({r.person_id for r in self.test}),
            "test_images": len(self.test),
            "queries_per_split": len(self.queries[0]) if self.queries else 0,
            "gallery_per_split": len(self.galleries[0]) if self.galleries else 0,
            "gallery_all_per_split": len(self.galleries_all[0]) if self.galleries_all else 0,
        }


def _row(r: HandRecord, offset: int = 0) -> SplitRow:
    return SplitRow(r.image_name, r.person_id, r.aspect, r.id_int + offset)


def _pool(records: list[HandRecord], aspect: str) -> list[HandRecord]:
    rows = [r for r in records if r.aspect == aspect and r.accessories == 0]
    return sorted(rows, key=lambda r: (r.id_int, r.image_name))


def _by_id(rows: list[HandRecord]) -> dict[str, list[HandRecord]]:
    groups: dict[str, list[HandRecord]] = defaultdict(list)
    for r in rows:
        groups[r.person_id].append(r)
    return dict(sorted(groups.items(), key=lambda kv: int(kv[0])))


def _split_test(records: list[HandRecord], aspect: str, threshold: int | None) -> list[HandRecord]:
    t = ID_THRESHOLDS[aspect] if threshold is None else threshold
    return [r for r in _pool(records, aspect) if r.id_int > t]


def _draw_gallery(test: list[HandRecord], aspect: str, seed: int, split: int
                  ) -> tuple[list[HandRecord], list[HandRecord]]:
    """One random image per test id is the gallery; every other test image is a query."""
    rng = np.random.default_rng([seed, 1, ASPECTS.index(aspect), split])
    gallery, queries = [], []
    for imgs in _by_id(test).values():
        pick = int(rng.integers(len(imgs)))
        gallery.append(imgs[pick])
        queries.extend(im for j, im in enumerate(imgs) if j != pick)
    return queries, gallery


def build_protocol(records: list[HandRecord], aspect: str = "dorsal right", seed: int = 0,
                   n_splits: int = 10, thresholds: dict[str, int] | None = None) -> Protocol:
    if aspect not in ASPECTS:
        raise HandInfoError(f"aspect {aspect!r} is not one of {', '.join(ASPECTS)}")
    thresholds = {**ID_THRESHOLDS, **(thresholds or {})}
    pool = _pool(records, aspect)
    train_pool = [r for r in pool if r.id_int <= thresholds[aspect]]
    test = [r for r in pool if r.id_int > thresholds[aspect]]
    if not train_pool or not test:
        raise HandInfoError(f"aspect {aspect!r}: the id threshold {thresholds[aspect]} leaves "
                            f"{len(train_pool)} training and {len(test)} test images; need both")

    rng = np.random.default_rng([seed, 0, ASPECTS.index(aspect)])
    train, val = [], []
    for imgs in _by_id(train_pool).values():
        pick = int(rng.integers(len(imgs)))
        val.append(_row(imgs[pick]))
        train.extend(_row(im) for j, im in enumerate(imgs) if j != pick)

    others = [a for a in ASPECTS if a != aspect]
    other_tests = {a: _split_test(records, a, thresholds[a]) for a in others}
    proto = Protocol(aspect, seed, train, val, [_row(r) for r in test])
    for i in range(n_splits):
        q, g = _draw_gallery(test, aspect, seed, i)
        proto.queries.append([_row(r) for r in q])
        proto.galleries.append([_row(r) for r in g])
        g_all = [_row(r) for r in g]
        for offset, other in zip(DISTRACTOR_OFFSETS, others):
            _, g_other = _draw_gallery(other_tests[other], other, seed, i)
            g_all.extend(_row(r, offset) for r in g_other)
        proto.galleries_all.append(g_all)
    return proto


# --------------------------------------------------------------------------- split files

def _csv_text(rows: list[SplitRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SPLIT_COLUMNS)
    for r in rows:
        w.writerow([r.image_name, r.person_id, r.aspect, r.label])
    return buf.getvalue()


def split_dir(root: str | Path, aspect: str, seed: int) -> Path:
    return Path(root) / aspect_slug(aspect) / f"seed{seed}"


def write_split_files(proto: Protocol, root: str | Path) -> Path:
    """Write train/val/test and per-split query/gallery lists; returns the folder."""
    out = split_dir(root, proto.aspect, proto.seed)
    out.mkdir(parents=True, exist_ok=True)
    files = {"train.csv": proto.train, "val.csv": proto.val, "test.csv": proto.test}
    for i in range(proto.n_splits):
        files[f"query_{i:02d}.csv"] = proto.queries[i]
        files[f"gallery_{i:02d}.csv"] = proto.galleries[i]
        files[f"gallery_all_{i:02d}.csv"] = proto.galleries_all[i]
    for name, rows in files.items():
        text = _csv_text(rows)
        if not (out / name).exists() or (out / name).read_text() != text:  # the same lists stay untouched
            atomic_write_text(out / name, text)
    return out


def _read_rows(path: Path) -> list[SplitRow]:
    if not path.exists():
        raise HandInfoError(f"{path}: split file missing; re-create the split lists "
                            "(notebook 00 or `clipfh splits`)")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != list(SPLIT_COLUMNS):
            raise HandInfoError(f"{path}: header {header} != {list(SPLIT_COLUMNS)}; "
                                "re-create the split lists")
        rows = []
        for line_no, rec in enumerate(reader, start=2):
            if len(rec) != len(SPLIT_COLUMNS):
                raise HandInfoError(f"{path} row {line_no}: expected {len(SPLIT_COLUMNS)} fields")
            try:
                rows.append(SplitRow(rec[0], rec[1], rec[2], int(rec[3])))
            except ValueError:
                raise HandInfoError(f"{path} row {line_no}: label {rec[3]!r} is not an integer") from None
        return rows


def read_split_files(root: str | Path, aspect: str, seed: int) -> Protocol:
    """Load a protocol from its split lists (exactly the files others evaluate on)."""
    d = split_dir(root, aspect, seed)
    proto = Protocol(aspect, seed, _read_rows(d / "train.csv"), _read_rows(d / "val.csv"),
                     _read_rows(d / "test.csv"))
    n = len(list(d.glob("query_*.csv")))
    for i in range(n):
        proto.queries.append(_read_rows(d / f"query_{i:02d}.csv"))
        proto.galleries.append(_read_rows(d / f"gallery_{i:02d}.csv"))
        proto.galleries_all.append(_read_rows(d / f"gallery_all_{i:02d}.csv"))
    return proto


def aspect_counts(records: list[HandRecord]) -> list[dict]:
    """Per-aspect filtering counts for the data notebook's table."""
    rows = []
    for a in ASPECTS:
        all_a = [r for r in records if r.aspect == a]
        kept = _pool(records, a)
        t = ID_THRESHOLDS[a]
        rows.append({
            "aspect": a,
            "images": len(all_a),
            "with_accessories": sum(r.accessories for r in all_a),
            "kept": len(kept),
            "ids": len({r.person_id for r in kept}),
            "id_threshold": t,
            "train_ids": len({r.person_id for r in kept if r.id_int <= t}),
            "test_ids": len({r.person_id for r in kept if r.id_int > t}),
        })
    return rows
