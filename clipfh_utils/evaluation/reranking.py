"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, CVPR 2017), vectorised with sparse matrices.

Over all probe and gallery images of a split (distractors included) with d the squared Euclidean
distance of the L2-normalised features, each row divided by its maximum:
- R(p, k1): the k-reciprocal neighbours of p (p's k1 nearest, each having p among its k1 nearest);
- R*(p): R(p, k1) joined by every R(c, k1/2), c in R(p, k1), that shares more than 2/3 of its
  members with R(p, k1);
- V_p: exp(-d(p, g)) over g in R*(p), normalised to sum 1; then local query expansion: V_p becomes
  the mean of V over p's k2 nearest neighbours;
- Jaccard distance d_J(p, g) = 1 - sum_j min(V_pj, V_gj) / sum_j max(V_pj, V_gj);
- final distance (1 - lambda) d_J + lambda d.
Neighbour lists include the point itself (rank 0), as in the paper's code.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def _nearest(dist: np.ndarray, k: int) -> np.ndarray:
    """(N, k) the first k columns of the stable ascending argsort of each row, without sorting whole
    rows: a partition, then a stable sort of the chosen; rows with a tie across the cut are sorted whole."""
    if k >= dist.shape[1]:
        return np.argsort(dist, axis=1, kind="stable")
    part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(dist, part, 1)
    order = np.lexsort((part, vals), axis=1)             # by value, ties by column: the stable order
    out = np.take_along_axis(part, order, 1)
    kth = vals.max(1, keepdims=True)
    tied = np.flatnonzero((dist == kth).sum(1) > (vals == kth).sum(1))  # an equal value left outside
    if tied.size:
        out[tied] = np.argsort(dist[tied], axis=1, kind="stable")[:, :k]
    return out


def _top_mask(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """Boolean (N, N): row i marks the first k+1 entries of its ranking."""
    n = rank.shape[0]
    cols = rank[:, :k + 1]
    return sp.csr_matrix((np.ones(cols.size, bool), (np.repeat(np.arange(n), cols.shape[1]), cols.ravel())),
                         shape=(n, n))


def _reciprocal(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """Boolean (N, N): row i marks R(i, k) = j in top-k(i) with i in top-k(j)."""
    top = _top_mask(rank, k)
    return top.multiply(top.T).tocsr()


def _min_overlap(v: sp.csr_matrix, n_q: int) -> np.ndarray:
    """(n_q, N - n_q): sum_j min(V_pj, V_gj) for every query row p and gallery row g, touching only
    the columns where both are non-zero (the inverted index of the paper's code)."""
    vc = v.tocsc()
    vc.sort_indices()                                       # per column: query rows, then gallery rows
    n_g = v.shape[0] - n_q
    counts = np.diff(vc.indptr)
    col_of = np.repeat(np.arange(v.shape[1]), counts)
    rows, vals = vc.indices, vc.data
    q = np.flatnonzero(rows < n_q)
    n_q_col = np.bincount(col_of[q], minlength=v.shape[1])
    g_start, g_count = vc.indptr[:-1] + n_q_col, counts - n_q_col
    reps = g_count[col_of[q]]                               # each query entry meets its column's gallery entries
    ends = np.cumsum(reps)
    right = np.arange(ends[-1] if len(ends) else 0) + np.repeat(g_start[col_of[q]] - (ends - reps), reps)
    left = np.repeat(q, reps)
    flat = np.bincount(rows[left] * n_g + (rows[right] - n_q), weights=np.minimum(vals[left], vals[right]),
                       minlength=n_q * n_g)
    return flat.reshape(n_q, n_g)


def k_reciprocal_distance(q_feats: torch.Tensor | np.ndarray, g_feats: torch.Tensor | np.ndarray,
                          k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """(Q, G) re-ranked distances (lower is closer) from L2-normalised query and gallery features."""
    x = np.concatenate([np.asarray(q_feats, np.float32), np.asarray(g_feats, np.float32)])
    n_q, n = len(q_feats), len(x)
    sq = (x * x).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * (x @ x.T), 0).astype(np.float32)
    dist = dist / dist.max(axis=1, keepdims=True)
    rank = _nearest(dist, max(k1 + 1, k2))
    kr = _reciprocal(rank, k1)
    kr_half = _reciprocal(rank, int(np.around(k1 / 2)))
    size_half = np.asarray(kr_half.sum(1)).ravel()
    shared = (kr.astype(np.float32) @ kr_half.T.astype(np.float32)).multiply(kr).tocoo()  # |R(c,k1/2) ∩ R(p,k1)|
    ok = shared.data > 2.0 / 3.0 * size_half[shared.col]
    take = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (shared.row[ok], shared.col[ok])), shape=(n, n))
    expansion = ((kr.astype(np.float32) + take @ kr_half.astype(np.float32)) > 0).tocsr()
    rows, cols = expansion.nonzero()
    w = np.exp(-dist[rows, cols])
    v = sp.csr_matrix((w, (rows, cols)), shape=(n, n), dtype=np.float32)
    v = sp.diags(1.0 / np.asarray(v.sum(1)).ravel().astype(np.float32)) @ v
    if k2 != 1:
        qe = sp.csr_matrix((np.full(n * k2, 1.0 / k2, np.float32),
                            (np.repeat(np.arange(n), k2), rank[:, :k2].ravel())), shape=(n, n))
        v = (qe @ v).tocsr()
    v = v.astype(np.float32)
    v.eliminate_zeros()
    overlap = _min_overlap(v, n_q)
    jaccard = 1 - overlap / (2 - overlap)
    final = jaccard * (1 - lambda_value) + dist[:n_q, n_q:].astype(np.float64) * lambda_value
    return final.astype(np.float32)
