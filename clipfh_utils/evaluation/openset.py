"""Open-set identification (1:N) in the terms of NIST's 1:N evaluations, candidate list length 1.

Per split a seeded share of the test identities is enrolled: their gallery images stay, the others'
are removed (in `mbanet` the other aspects' distractors stay). Searches by enrolled identities are
mated, the others non-mated. At threshold t (accept the top candidate when its score >= t):
- FPIR(t): share of non-mated searches whose top candidate scores >= t;
- FNIR(t): share of mated searches whose top candidate is not their mate or scores < t.
FNIR@FPIR=x is read at the lowest threshold whose FPIR <= x (the verification rule; "n/a" below
ceil(1/x) non-mated searches). The enrolled lists are written beside the split lists, seeded,
byte-identical across runs, as one set (a folder replaced in one rename).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.protocol import Protocol
from .verification import FMR_GRID, rate_at, rates_on_grid, tradeoff


def n_enrolled(n_ids: int, share: float) -> int:
    """Enrolled identities for a share; an error naming the key when a side would be empty (the
    pipeline reports it as a config error)."""
    k = int(round(share * n_ids))
    if not 1 <= k <= n_ids - 1:
        raise ValueError(f"evaluation.enrolled_share: {share} of {n_ids} test identities enrols {k}; the "
                          "open-set protocol needs at least one enrolled and one non-enrolled identity "
                          "(choose a share strictly between 1/n and 1 - 1/n, or a dataset with more test ids)")
    return k


def draw_enrolled(proto: Protocol, share: float) -> list[list[str]]:
    """Per split the enrolled person ids (sorted by id), redrawn per split from the split's seed."""
    ids = sorted({r.person_id for r in proto.test}, key=int)
    k = n_enrolled(len(ids), share)
    out = []
    for i in range(proto.n_splits):
        rng = np.random.default_rng([proto.seed, 2, zlib.crc32(proto.aspect.encode()), i])
        out.append(sorted((ids[j] for j in rng.choice(len(ids), size=k, replace=False)), key=int))
    return out


def openset_dir(split_folder: Path, share: float) -> Path:
    return Path(split_folder) / f"openset_share{share:g}"


def _text(ids: list[str]) -> str:
    return "id\n" + "".join(f"{p}\n" for p in ids)


def write_enrolled(split_folder: Path, share: float, enrolled: list[list[str]]) -> Path:
    """Write enrolled_NN.csv per split into their own folder beside the split lists. The folder is
    built aside and renamed into place, so the set is complete or absent; identical lists stay."""
    out = openset_dir(split_folder, share)
    files = {f"enrolled_{i:02d}.csv": _text(ids) for i, ids in enumerate(enrolled)}
    if out.is_dir() and sorted(p.name for p in out.iterdir()) == sorted(files) and all(
            (out / n).read_text() == t for n, t in files.items()):
        return out
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=split_folder))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=split_folder))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def read_enrolled(folder: Path) -> list[list[str]]:
    files = sorted(Path(folder).glob("enrolled_*.csv"))
    out = []
    for f in files:
        lines = f.read_text().splitlines()
        if not lines or lines[0] != "id":
            raise ValueError(f"{f}: expected a header 'id'; delete the folder to have it written again")
        out.append(lines[1:])
    return out


# --------------------------------------------------------------------------- metrics of one split

@dataclass
class Searches:
    """Top candidates of the mated and non-mated searches of one split."""
    mated_score: np.ndarray
    mated_hit: np.ndarray      # the top candidate is the mate
    nonmated_score: np.ndarray


def searches(sim: np.ndarray, q_labels: np.ndarray, g_labels: np.ndarray, enrolled_labels: Sequence[int],
             test_labels: Sequence[int]) -> Searches:
    """Keep the gallery images of enrolled identities and every non-test label (distractors); a
    query is mated when its label is enrolled."""
    sim, ql, gl = np.asarray(sim, np.float32), np.asarray(q_labels), np.asarray(g_labels)
    enrolled = np.isin(gl, np.asarray(enrolled_labels))
    keep = enrolled | ~np.isin(gl, np.asarray(test_labels))
    s, lab = sim[:, keep], gl[keep]
    top = np.argmax(s, axis=1)  # first of equal maxima: the stable ranking's rank 1
    score, who = s[np.arange(len(ql)), top], lab[top]
    mated = np.isin(ql, np.asarray(enrolled_labels))
    return Searches(score[mated], who[mated] == ql[mated], score[~mated])


def openset_split(s: Searches, fpir_targets: Sequence[float], grid: np.ndarray = FMR_GRID) -> dict:
    """FNIR at each FPIR target (None: n/a), the FNIR-FPIR curve on the grid, the closed-set Rank-1
    of the mated searches (percent) and the search counts."""
    t = tradeoff(s.mated_score[s.mated_hit], s.nonmated_score, n_never=int((~s.mated_hit).sum()))
    return {"fnir": {f: rate_at(t, f) for f in fpir_targets}, "curve": rates_on_grid(t, grid),
            "rank1_mated": float(s.mated_hit.mean() * 100), "n_mated": int(s.mated_hit.size),
            "n_nonmated": int(s.nonmated_score.size)}
