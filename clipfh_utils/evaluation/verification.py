"""Biometric verification (1:1) from the protocol's query-gallery similarities, in ISO/IEC 19795-1 terms.

A comparison is accepted when its score is at or above the threshold. FMR (false match rate) is the
share of impostor pairs accepted, FNMR (false non-match rate) the share of genuine pairs rejected.
- EER: where FMR = FNMR, by linear interpolation between the two consecutive thresholds that bracket
  the crossing (FMR - FNMR changes sign between them).
- FNMR@FMR=x: FNMR at the lowest observed threshold whose FMR does not exceed x (no interpolation,
  as NIST reports it); "n/a (needs >= N impostor pairs)" when fewer than N = ceil(1/x) impostor
  pairs exist, i.e. when the set cannot resolve that FMR.
- Curves over splits and seeds are averaged vertically: FNMR read at a fixed grid of FMR values by
  the same rule, then mean and sd per grid point.
The threshold sweep itself is scikit-learn's `roc_curve` (every observed score is a threshold).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_curve

from .spread import Interval, _percentiles, bootstrap_weights

FMR_GRID: np.ndarray = np.logspace(-4, 0, 33)  # vertical averaging of DET / FNIR-FPIR curves


@dataclass
class Tradeoff:
    """FMR and FNMR at every observed threshold, thresholds descending (the first is +inf)."""
    thresholds: np.ndarray
    fmr: np.ndarray    # non-decreasing along the array
    fnmr: np.ndarray   # non-increasing along the array
    n_genuine: int     # genuine attempts, including those never accepted
    n_impostor: int


def tradeoff(genuine: np.ndarray, impostor: np.ndarray, n_never: int = 0) -> Tradeoff:
    """The error trade-off of genuine and impostor scores. `n_never` counts genuine attempts that no
    threshold accepts (open-set: a mated search whose top candidate is someone else)."""
    genuine = np.asarray(genuine, dtype=np.float64).ravel()
    impostor = np.asarray(impostor, dtype=np.float64).ravel()
    if impostor.size == 0:
        raise ValueError("no impostor scores: FMR is undefined (the gallery needs other identities)")
    n_gen = genuine.size + n_never
    if n_gen == 0:
        raise ValueError("no genuine attempts: FNMR is undefined")
    if genuine.size == 0:  # roc_curve needs both classes; nothing is ever a true accept
        thr = np.concatenate([[np.inf], np.unique(impostor)[::-1]])
        fmr = (impostor.size - np.searchsorted(np.sort(impostor), thr, side="left")) / impostor.size
        return Tradeoff(thr, fmr, np.ones_like(fmr), n_gen, impostor.size)
    y = np.concatenate([np.ones(genuine.size, bool), np.zeros(impostor.size, bool)])
    scores = np.concatenate([genuine, impostor])
    order = np.argsort(scores)  # roc_curve's own stable sort is then linear on presorted scores
    fmr, tar, thr = roc_curve(y[order], scores[order], drop_intermediate=False)
    accepted = np.rint(tar * genuine.size)  # counts, so that FNMR is (rejected / attempts) exactly
    return Tradeoff(thr, fmr, (n_gen - accepted) / n_gen, n_gen, impostor.size)


def needed_pairs(target: float) -> int:
    """Impostor pairs (or non-mated searches) a set needs to resolve an FMR (FPIR) of `target`."""
    return math.ceil(1.0 / target - 1e-9)


def rate_at(t: Tradeoff, target: float) -> float | None:
    """FNMR at the lowest threshold whose FMR <= target; None where the set cannot resolve it."""
    if t.n_impostor < needed_pairs(target):
        return None
    k = int(np.searchsorted(t.fmr, target, side="right")) - 1  # last index with fmr <= target
    return float(t.fnmr[k])


def rates_on_grid(t: Tradeoff, grid: np.ndarray = FMR_GRID) -> np.ndarray:
    """FNMR at each FMR of the grid (the rule of `rate_at`), NaN where the set cannot resolve it."""
    k = np.searchsorted(t.fmr, grid, side="right") - 1
    out = t.fnmr[k].astype(float)
    out[t.n_impostor < np.array([needed_pairs(g) for g in grid])] = np.nan
    return out


def equal_error(t: Tradeoff) -> tuple[float, float]:
    """(EER, threshold): the threshold is the highest one whose FMR >= FNMR (the lower end of the
    bracket), the operating point "at the EER" for per-group FNMR."""
    d = t.fmr - t.fnmr
    j = int(np.argmax(d >= 0))  # d is non-decreasing, -1 at +inf and >= 0 at the lowest threshold
    if d[j] == 0 or j == 0:
        return float(t.fmr[j]), float(t.thresholds[j])
    a = -d[j - 1] / (d[j] - d[j - 1])
    return float(t.fmr[j - 1] + a * (t.fmr[j] - t.fmr[j - 1])), float(t.thresholds[j])


def na_text(target: float) -> str:
    return f"n/a (needs >= {needed_pairs(target)} impostor pairs)"


# --------------------------------------------------------------------------- pairs of one split

@dataclass
class PairScores:
    """Genuine and impostor scores of one split, each with the index of its query."""
    genuine: np.ndarray
    genuine_query: np.ndarray
    impostor: np.ndarray
    impostor_query: np.ndarray
    n_excluded: int   # same person, another aspect (mbanet distractors): neither genuine nor impostor
    n_queries: int = 0


def pair_scores(sim: np.ndarray, q_labels: np.ndarray, g_labels: np.ndarray,
                q_person: Sequence[str] | None = None, g_person: Sequence[str] | None = None) -> PairScores:
    """Split a (Q, G) similarity matrix into genuine (same label) and impostor pairs (another
    person); pairs of the same person under another label are left out and counted."""
    sim = np.asarray(sim, dtype=np.float32)
    same = np.asarray(q_labels)[:, None] == np.asarray(g_labels)[None, :]
    if q_person is not None and g_person is not None:
        person = np.asarray(q_person, dtype=object)[:, None] == np.asarray(g_person, dtype=object)[None, :]
    else:
        person = same
    impostor = ~person
    excluded = person & ~same
    qi = np.broadcast_to(np.arange(sim.shape[0])[:, None], sim.shape)
    return PairScores(sim[same], qi[same], sim[impostor], qi[impostor], int(excluded.sum()), sim.shape[0])


def verification_split(p: PairScores, fmr_targets: Sequence[float], grid: np.ndarray = FMR_GRID) -> dict:
    """One split's numbers: EER and its threshold, FNMR at each FMR target (None: n/a), the DET curve
    on the grid, pair counts, and per query the share of its genuine pairs rejected at the EER."""
    t = tradeoff(p.genuine, p.impostor)
    eer, thr = equal_error(t)
    n_q = max(p.n_queries, int(p.genuine_query.max(initial=-1)) + 1)
    rejected = np.bincount(p.genuine_query, weights=(p.genuine < thr).astype(float), minlength=n_q)
    per_query = rejected / np.maximum(np.bincount(p.genuine_query, minlength=n_q), 1)
    return {"eer": eer, "eer_threshold": thr, "fnmr": {f: rate_at(t, f) for f in fmr_targets},
            "curve": rates_on_grid(t, grid), "n_genuine": t.n_genuine, "n_impostor": t.n_impostor,
            "n_excluded": p.n_excluded, "rejected_at_eer": per_query}


# --------------------------------------------------------------------------- identity bootstrap

class EerBootstrap:
    """EER of one split under identity weights (identities resampled with all their queries, the
    gallery fixed). Per bootstrap sample the crossing is found by bisection over the observed
    thresholds, counting each identity's accepted pairs with a binary search: exact, no binning."""

    def __init__(self, p: PairScores, owner: np.ndarray, n_ids: int):
        """`owner[q]`: the identity column (0..n_ids-1) of query q."""
        self.thresholds = np.concatenate([[np.inf], np.unique(np.concatenate([p.genuine, p.impostor]))[::-1]])
        g_own, i_own = owner[p.genuine_query], owner[p.impostor_query]
        self.gen = [np.sort(p.genuine[g_own == i]).astype(np.float64) for i in range(n_ids)]
        self.imp = [np.sort(p.impostor[i_own == i]).astype(np.float64) for i in range(n_ids)]
        self.n_gen = np.array([a.size for a in self.gen], dtype=float)
        self.n_imp = np.array([a.size for a in self.imp], dtype=float)

    def _rates(self, w: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.thresholds[k]
        acc_g, acc_i = np.zeros(len(k)), np.zeros(len(k))
        for i in np.flatnonzero(w.any(0)):
            acc_g += w[:, i] * (self.gen[i].size - np.searchsorted(self.gen[i], t, side="left"))
            acc_i += w[:, i] * (self.imp[i].size - np.searchsorted(self.imp[i], t, side="left"))
        w_gen = w @ self.n_gen
        return acc_i / (w @ self.n_imp), (w_gen - acc_g) / w_gen

    def eer(self, weights: np.ndarray) -> np.ndarray:
        """(B,) EER for identity weights (B, n_ids); all-ones weights give `equal_error`'s."""
        w = np.atleast_2d(np.asarray(weights, dtype=float))
        lo = np.zeros(len(w), dtype=np.int64)                     # d(lo) < 0 (+inf: FMR 0, FNMR 1)
        hi = np.full(len(w), len(self.thresholds) - 1, np.int64)  # d(hi) >= 0 (everything accepted)
        while True:
            open_ = hi - lo > 1
            if not open_.any():
                break
            mid = (lo + hi) // 2
            fmr, fnmr = self._rates(w, mid)
            up = (fmr - fnmr >= 0) & open_
            hi = np.where(up, mid, hi)
            lo = np.where(~up & open_, mid, lo)
        f0, n0 = self._rates(w, lo)
        f1, n1 = self._rates(w, hi)
        d0, d1 = f0 - n0, f1 - n1
        a = np.where(d1 == 0, 1.0, -d0 / np.where(d1 - d0 == 0, 1.0, d1 - d0))
        return f0 + a * (f1 - f0)


def eer_interval(boots: Sequence[EerBootstrap], n_ids: int, n_boot: int, seed: int,
                 level: float = 0.95) -> Interval:
    """Identity bootstrap interval of the EER averaged over splits (and seeds): every split is
    reweighted with the same identity resample, like `spread.identity_bootstrap`."""
    ones = np.ones((1, n_ids))
    est = float(np.mean([b.eer(ones)[0] for b in boots]))
    w = bootstrap_weights(n_ids, n_boot, seed)
    stats = np.mean([b.eer(w) for b in boots], axis=0)
    lo, hi = _percentiles(stats, level)
    return Interval(est, lo, hi, n_ids, n_boot, seed)


def training_thresholds(feats: np.ndarray, labels: np.ndarray, fmr_targets: Sequence[float]) -> dict:
    """Operating thresholds from all pairs (i < j) of images of the TRAINING identities (genuine
    pairs exist only there: validation holds one image per identity; test identities are never
    used): the EER threshold and the one at each FMR target, with the FMR and FNMR each had there."""
    feats, labels = np.asarray(feats, np.float32), np.asarray(labels)
    i, j = np.triu_indices(len(labels), k=1)
    sim = (feats @ feats.T)[i, j]
    same = labels[i] == labels[j]
    t = tradeoff(sim[same], sim[~same])

    def point(k: int) -> dict:
        return {"threshold": float(t.thresholds[k]), "fmr": float(t.fmr[k]), "fnmr": float(t.fnmr[k])}

    eer, thr = equal_error(t)
    out = {"eer": {**point(int(np.flatnonzero(t.thresholds == thr)[0])), "eer": eer},
           "n_genuine": int(same.sum()), "n_impostor": int((~same).sum()), "fmr_targets": {}}
    for f in fmr_targets:
        if t.n_impostor >= needed_pairs(f):
            out["fmr_targets"][f"{f:g}"] = point(int(np.searchsorted(t.fmr, f, side="right")) - 1)
    return out
