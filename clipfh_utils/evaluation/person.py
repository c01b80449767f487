"""The standard person re-identification evaluation (Market-1501, MSMT17), as CLIP-ReID's
evaluation code and torchreid compute it: camera-aware CMC and standard AP.

For each query the gallery is ranked by descending similarity (stable: ties keep gallery order),
then the images that may not count are removed for THAT query: those of its identity taken by its
camera (the same view, trivially easy) and junk (pid -1). Distractors (Market's pid 0) stay and
never match. On what remains: the 1-based rank of the first true match (CMC, Rank-k) and standard
AP (mean of the precision at each true match). A query left without a true match is an error here
(the reference code skips it silently; the data layer rejects such listings first).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

JUNK = -1
QUERY_CHUNK_ELEMENTS = 2 ** 24   # (queries x gallery) scored at once: MSMT17 is 11,659 x 82,161


def counted_gallery(query_label: int, query_camera: int, labels: Sequence[int], cameras: Sequence[int]) -> list[int]:
    """Indices of the gallery images that count for one query (figures that show its ranking):
    neither junk nor its own identity seen by its own camera."""
    return [i for i, (g, c) in enumerate(zip(labels, cameras))
            if g != JUNK and not (g == query_label and c == query_camera)]


def camera_aware_ranks(sim: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor, q_cams: torch.Tensor,
                       g_cams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query of a (Q, G) similarity block: the rank of its first valid match and its AP in [0, 1]."""
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    gp, gc = g_pids[order], g_cams[order]                               # (Q, G) in rank order
    same = gp == q_pids[:, None]
    valid = ~(same & (gc == q_cams[:, None])) & (gp != JUNK)
    hit = (same & valid).float()
    n_rel = hit.sum(1)
    if bool((n_rel == 0).any()):
        raise ValueError(f"{int((n_rel == 0).sum())} of {len(n_rel)} queries have no match of their identity in "
                         "the gallery under another camera; every query needs one")
    position = valid.float().cumsum(1).clamp(min=1)                     # 1-based rank among valid images
    first = torch.where(hit > 0, position, torch.full_like(position, float("inf"))).min(1).values
    ap = (hit.cumsum(1) / position * hit).sum(1) / n_rel
    return first.long(), ap


def person_metrics(qf: torch.Tensor, gf: torch.Tensor, q_pids, g_pids, q_cams, g_cams,
                   ks: Sequence[int] = (1, 5, 10), return_cmc: bool = False,
                   return_per_query: bool = False, similarity=None) -> dict:
    """Rank-k and mAP in percent from query and gallery features (similarity = dot product, i.e.
    cosine for L2-normalised features; `similarity(qf, gf)` replaces it), scored in chunks of queries; the same keys as
    `rank.rank_metrics` ("cmc": percent at ranks 1..G; "rank", "ap": per query)."""
    as_t = lambda x: torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x,  # noqa: E731
                                     device=qf.device).long()
    qp, gp, qc, gc = as_t(q_pids), as_t(g_pids), as_t(q_cams), as_t(g_cams)
    if qf.shape[0] != qp.numel() or gf.shape[0] != gp.numel() or qc.numel() != qp.numel() or gc.numel() != gp.numel():
        raise ValueError(f"{qf.shape[0]} query features, {qp.numel()} ids, {qc.numel()} cameras; "
                         f"{gf.shape[0]} gallery features, {gp.numel()} ids, {gc.numel()} cameras: must agree")
    ranks, aps = [], []
    full = None if similarity is None else similarity(qf, gf)   # e.g. re-ranking: needs every query at once
    chunk = max(1, QUERY_CHUNK_ELEMENTS // max(1, gp.numel()))   # ~1 GB of intermediates per chunk
    for s in range(0, qp.numel(), chunk):
        sl = slice(s, s + chunk)
        block = qf[sl].float() @ gf.float().T if full is None else full[sl].float()
        r, a = camera_aware_ranks(block, qp[sl], gp, qc[sl], gc)
        ranks.append(r.cpu())
        aps.append(a.cpu())
    rank, ap = torch.cat(ranks).numpy(), torch.cat(aps).numpy()
    out = {f"rank{k}": float((rank <= k).mean() * 100) for k in ks}
    out["mAP"] = float(ap.mean() * 100)
    if return_cmc:
        out["cmc"] = np.bincount(rank, minlength=gp.numel() + 1)[1:gp.numel() + 1].cumsum() / len(rank) * 100
    if return_per_query:
        out["rank"], out["ap"] = rank, ap
    return out
