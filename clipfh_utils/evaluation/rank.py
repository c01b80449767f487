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
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..data.protocol import Protocol, SplitRow

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
                      per_query: list | None = None,
                      similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                      ) -> pd.DataFrame:
    """Per-split metrics for each protocol: columns protocol, split, rank1, rank5, rank10, mAP.

    With a list as `per_query`, one DataFrame per (protocol, split) is appended to it: query
    image, identity, rank of the first match, AP. `similarity(query_feats, gallery_feats)` replaces
    the cosine similarity (k-reciprocal re-ranking passes minus its distance).
    """
    rows = []
    for name in protocols:
        gallery_attr, ap = PROTOCOLS[name]
        for i in range(proto.n_splits):
            queries = proto.queries[i]
            qf, ql = bank.take(queries)
            gf, gl = bank.take(getattr(proto, gallery_attr)[i])
            sim = qf @ gf.T if similarity is None else similarity(qf, gf)
            res = rank_metrics(sim, ql, gl, ks=ks, ap=ap, return_cmc=with_cmc,
                               return_per_query=per_query is not None)
            if per_query is not None:
                per_query.append(pd.DataFrame({
                    "protocol": name, "split": i, "query": [r.image_name for r in queries],
                    "person_id": [r.person_id for r in queries],
                    "rank": res.pop("rank"), "ap": res.pop("ap")}))
            rows.append({"protocol": name, "split": i, **res})
    return pd.DataFrame(rows)


def cmc_from_ranks(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """CMC in percent at ranks 1..max_rank from each query's 1-based rank of its first match
    (the same curve `rank_metrics(return_cmc=True)` gives for those queries)."""
    ranks = np.asarray(ranks)
    return np.array([(ranks <= k).mean() * 100 for k in range(1, max_rank + 1)])
