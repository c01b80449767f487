"""The ReID evaluator: CMC Rank-k and mAP, one implementation for every stage.

Two published ways of computing AP exist for 11k Hands and they are not the same measurement:
- "standard" (torchreid, sklearn): mean precision at the relevant positions; with one relevant
  gallery image AP = 1/rank. Used by the dissertation on the single-aspect gallery.
- "trapezoid" (MBA-Net / CLIP-HandID evaluation code): AP += d_recall * (prev_precision +
  precision) / 2 with prev_precision = 1 at rank 1; with one relevant image 1/(2*rank) beyond
  rank 1. Used by MBA-Net on `gallery_all`.
Ranking is a stable sort on descending similarity, so ties keep gallery order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .data.protocol import Protocol, SplitRow

# name -> (gallery lists of the protocol, AP flavour)
PROTOCOLS: dict[str, tuple[str, str]] = {
    "clipfh": ("galleries", "standard"),      # single-aspect gallery, standard AP (dissertation)
    "mbanet": ("galleries_all", "trapezoid"),  # gallery_all, trapezoid AP (MBA-Net, published SOTA)
}
METRICS: tuple[str, ...] = ("rank1", "rank5", "rank10", "mAP")


def _as_tensor(x, device=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device) if device is not None else t


def rank_metrics(sim, query_ids, gallery_ids, ks: Sequence[int] = (1, 5, 10),
                 ap: str = "standard", return_cmc: bool = False, return_per_query: bool = False) -> dict:
    """Rank-k accuracies and mAP in percent for a (Q, G) similarity matrix.

    `return_per_query` adds "rank" (1-based rank of each query's first match) and "ap" (each
    query's AP in [0, 1]): what a bootstrap over identities resamples.

    A query without any match in the gallery is an error: silently skipping it inflates scores.
    """
    if ap not in ("standard", "trapezoid"):
        raise ValueError(f"ap must be 'standard' or 'trapezoid', got {ap!r}")
    sim = _as_tensor(sim).float()
    q = _as_tensor(query_ids, sim.device).long()
    g = _as_tensor(gallery_ids, sim.device).long()
    if sim.shape != (q.numel(), g.numel()):
        raise ValueError(f"sim has shape {tuple(sim.shape)} but there are {q.numel()} queries "
                         f"and {g.numel()} gallery items")
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    matches = g[order] == q[:, None]                       # (Q, G) bool, in rank order
    n_rel = matches.sum(1)
    if bool((n_rel == 0).any()):
        bad = int((n_rel == 0).sum())
        raise ValueError(f"{bad} of {q.numel()} queries have no matching identity in the gallery; "
                         "every query id must appear in the gallery")
    first = matches.float().argmax(1)                      # 0-based rank of the first hit
    out = {f"rank{k}": float((first < k).float().mean() * 100) for k in ks}

    m = matches.float()
    hits_so_far = m.cumsum(1)                              # j at each hit position (1-based)
    pos = torch.arange(1, m.shape[1] + 1, device=m.device, dtype=m.dtype)  # 1-based rank
    precision = hits_so_far / pos
    if ap == "standard":
        ap_q = (precision * m).sum(1) / n_rel
    else:
        prev_rank = pos - 1
        prev_precision = torch.where(prev_rank > 0, (hits_so_far - 1) / prev_rank.clamp(min=1),
                                     torch.ones_like(precision))
        ap_q = ((prev_precision + precision) / 2 * m).sum(1) / n_rel
    out["mAP"] = float(ap_q.mean() * 100)
    if return_cmc:
        cmc = torch.zeros(m.shape[1], device=m.device)
        cmc.index_add_(0, first, torch.ones_like(first, dtype=torch.float))
        out["cmc"] = (cmc.cumsum(0) / q.numel() * 100).cpu().numpy()
    if return_per_query:
        out["rank"] = (first + 1).cpu().numpy()
        out["ap"] = ap_q.cpu().numpy()
    return out


@dataclass
class FeatureBank:
    """Features of every evaluation image, extracted once; splits only index into it."""
    features: torch.Tensor            # (N, D), L2-normalised
    index: dict[str, int]             # imageName -> row

    def take(self, rows: list[SplitRow]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.tensor([self.index[r.image_name] for r in rows])
        labels = torch.tensor([r.label for r in rows])
        return self.features[idx], labels


def evaluate_protocol(bank: FeatureBank, proto: Protocol,
                      protocols: Sequence[str] = ("clipfh", "mbanet"),
                      ks: Sequence[int] = (1, 5, 10), with_cmc: bool = False,
                      per_query: list | None = None) -> pd.DataFrame:
    """Per-split metrics for each protocol: columns protocol, split, rank1, rank5, rank10, mAP.

    With a list as `per_query`, one DataFrame per (protocol, split) is appended to it: query
    image, identity, rank of the first match, AP.
    """
    rows = []
    for name in protocols:
        gallery_attr, ap = PROTOCOLS[name]
        for i in range(proto.n_splits):
            queries = proto.queries[i]
            qf, ql = bank.take(queries)
            gf, gl = bank.take(getattr(proto, gallery_attr)[i])
            res = rank_metrics(qf @ gf.T, ql, gl, ks=ks, ap=ap, return_cmc=with_cmc,
                               return_per_query=per_query is not None)
            if per_query is not None:
                per_query.append(pd.DataFrame({
                    "protocol": name, "split": i, "query": [r.image_name for r in queries],
                    "person_id": [r.person_id for r in queries],
                    "rank": res.pop("rank"), "ap": res.pop("ap")}))
            rows.append({"protocol": name, "split": i, **res})
    return pd.DataFrame(rows)


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
    within the top k; mAP -> 100 * its AP. A split's metric is the mean of these over its queries."""
    if metric == "mAP":
        return 100.0 * per_query["ap"].to_numpy(dtype=float)
    if metric.startswith("rank") and metric[4:].isdigit():
        return 100.0 * (per_query["rank"].to_numpy() <= int(metric[4:]))
    raise ValueError(f"unknown metric {metric!r}; expected 'mAP' or 'rank<k>'")


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


@dataclass
class Interval:
    estimate: float
    lo: float
    hi: float
    n_ids: int
    n_boot: int
    seed: int

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


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


def cmc_from_ranks(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """CMC in percent at ranks 1..max_rank from each query's 1-based rank of its first match
    (the same curve `rank_metrics(return_cmc=True)` gives for those queries)."""
    ranks = np.asarray(ranks)
    return np.array([(ranks <= k).mean() * 100 for k in range(1, max_rank + 1)])
