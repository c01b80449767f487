"""Spread and uncertainty of the evaluator's numbers: mean ± sd over splits and seeds,
identity bootstrap intervals and paired differences, all from per-split and per-query results."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .rank import METRICS


def summarize(per_split: pd.DataFrame, by: Sequence[str] = ("protocol",)) -> pd.DataFrame:
    """Mean and sample sd over splits (and seeds, if present) per protocol."""
    metrics = [m for m in METRICS if m in per_split.columns]
    g = per_split.groupby(list(by), sort=False)[metrics]
    mean, sd = g.mean(), g.std(ddof=1).fillna(0.0)
    out = pd.concat({"mean": mean, "sd": sd}, axis=1)
    out[("n", "")] = g.size()
    return out


# --------------------------------------------------------------------------- uncertainty
# Two kinds of spread are reported apart because they answer different questions: the sd between
# training seeds (how much a re-training moves the result) and the sd between Monte Carlo splits
# (how much the query/gallery draw moves it). Neither says how much the result would move with
# other people: the splits reuse the same test identities. The bootstrap over test identities
# (identities drawn with replacement, each with all its queries, the gallery fixed) does.

def seed_split_sd(per_split: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Per metric: the mean, the sd between seeds (sd of each seed's mean over splits) and the sd
    between splits (mean over seeds of the sd over splits), both ddof=1; NaN where there is only
    one seed or one split. `per_split` holds one protocol; a missing `seed` column is one seed."""
    df = per_split if "seed" in per_split.columns else per_split.assign(seed=0)
    metrics = [m for m in metrics if m in df.columns]
    by_seed = df.groupby("seed")[metrics]
    seed_means = by_seed.mean()
    out = pd.DataFrame({"mean": seed_means.mean(),
                        "seed_sd": seed_means.std(ddof=1) if len(seed_means) > 1 else np.nan,
                        "split_sd": by_seed.std(ddof=1).mean(),
                        "n_seeds": len(seed_means), "n_splits": int(by_seed.size().min())})
    out.index.name = "metric"
    return out


def query_values(per_query: pd.DataFrame, metric: str) -> np.ndarray:
    """Each query's contribution to `metric`, in percent: rank<k> -> 100 if its first match is
    within the top k; mAP -> 100 * its AP; fnmr_eer -> 100 * the share of its genuine pairs rejected
    at the split's EER threshold. A split's metric is the mean of these over its queries."""
    if metric == "mAP":
        return 100.0 * per_query["ap"].to_numpy(dtype=float)
    if metric == "fnmr_eer":
        return 100.0 * per_query["rejected_at_eer"].to_numpy(dtype=float)
    if metric.startswith("rank") and metric[4:].isdigit():
        return 100.0 * (per_query["rank"].to_numpy() <= int(metric[4:]))
    raise ValueError(f"unknown metric {metric!r}; expected 'mAP', 'fnmr_eer' or 'rank<k>'")


@dataclass
class IdentityScores:
    """Per-query results laid out for the bootstrap: per (seed, split) group and test identity,
    the sum of a metric over the identity's queries and their number."""
    ids: list[str]
    sums: np.ndarray          # (G, n_ids)
    counts: np.ndarray        # (G, n_ids)

    def statistic(self, weights: np.ndarray) -> np.ndarray:
        """The metric for identity weights (B, n_ids): per group the weighted mean over queries,
        then the mean over groups. All-ones weights give the reported metric."""
        w = np.atleast_2d(np.asarray(weights, dtype=float))
        num, den = w @ self.sums.T, w @ self.counts.T                  # (B, G)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_group = num / den
        return np.nanmean(per_group, axis=1)


def identity_scores(per_query: pd.DataFrame, metric: str, ids: Sequence[str] | None = None) -> IdentityScores:
    """Group one protocol's per-query rows (columns split, person_id, rank, ap, optional seed)."""
    df = per_query if "seed" in per_query.columns else per_query.assign(seed=0)
    ids = sorted(set(df["person_id"].astype(str))) if ids is None else list(ids)
    col = {pid: i for i, pid in enumerate(ids)}
    values = query_values(df, metric)
    groups = df.groupby(["seed", "split"], sort=True).indices
    sums, counts = np.zeros((len(groups), len(ids))), np.zeros((len(groups), len(ids)))
    pids = df["person_id"].astype(str).to_numpy()
    for g, rows in enumerate(groups.values()):
        cols = np.array([col[p] for p in pids[rows]])
        np.add.at(sums[g], cols, values[rows])
        np.add.at(counts[g], cols, 1.0)
    return IdentityScores(ids, sums, counts)


def bootstrap_weights(n_ids: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_ids) multiplicities of identities drawn with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_ids, np.full(n_ids, 1.0 / n_ids), size=n_boot).astype(float)


def excludes_zero(lo, hi):
    """Whether the interval [lo, hi] lies wholly on one side of 0 (floats, or arrays elementwise)."""
    return (lo > 0) | (hi < 0)


@dataclass
class Interval:
    estimate: float
    lo: float
    hi: float
    n_ids: int
    n_boot: int
    seed: int

    def excludes_zero(self) -> bool:
        return bool(excludes_zero(self.lo, self.hi))


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(stats, [a, 100 - a])
    return float(lo), float(hi)


def identity_bootstrap(per_query: pd.DataFrame, metric: str, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Interval:
    """Percentile interval of `metric` over test identities resampled with their queries."""
    s = identity_scores(per_query, metric)
    est = float(s.statistic(np.ones(len(s.ids)))[0])
    lo, hi = _percentiles(s.statistic(bootstrap_weights(len(s.ids), n_boot, seed)), level)
    return Interval(est, lo, hi, len(s.ids), n_boot, seed)


def paired_bootstrap(per_query_a: pd.DataFrame, per_query_b: pd.DataFrame, metric: str,
                     n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """B minus A on the same splits, with the same identity resamples applied to both, so the
    interval reflects how consistently B differs from A, identity by identity."""
    ids_a, ids_b = set(per_query_a["person_id"].astype(str)), set(per_query_b["person_id"].astype(str))
    if ids_a != ids_b:
        raise ValueError(f"paired comparison needs the same test identities ({len(ids_a ^ ids_b)} differ)")
    ids = sorted(ids_a)
    a, b = identity_scores(per_query_a, metric, ids), identity_scores(per_query_b, metric, ids)
    ones = np.ones(len(ids))
    est = float(b.statistic(ones)[0] - a.statistic(ones)[0])
    w = bootstrap_weights(len(ids), n_boot, seed)
    lo, hi = _percentiles(b.statistic(w) - a.statistic(w), level)
    return Interval(est, lo, hi, len(ids), n_boot, seed)
