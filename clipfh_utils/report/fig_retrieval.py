"""Retrieval figures: a query, its top-k gallery with similarities, and where its true match ranks."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..data.protocol import Protocol, SplitRow
from ..evaluation import FeatureBank
from .style import CORRECT, TEXT_WIDTH, WRONG, named, to_img


def _frame(ax, colour: str) -> None:
    for s in ax.spines.values():
        s.set_visible(True)
        s.set_edgecolor(colour)
        s.set_linewidth(3)


def similarity_digits(values: Sequence[float], lo: int = 2, hi: int = 4) -> int:
    """The fewest decimals (from `lo`, at most `hi`) at which distinct similarities stay distinct:
    a top-5 that rounds to 1.00 everywhere would hide its own ranking."""
    vals = [float(v) for v in values]
    for d in range(lo, hi + 1):
        if len({round(v, d) for v in vals}) == len(set(vals)):
            return d
    return hi


def retrieval_grid(bank: FeatureBank, images: torch.Tensor, queries: Sequence[SplitRow],
                   gallery: Sequence[SplitRow], k: int = 5, title: str = "", name: str = "retrievals"):
    """Per query: the image, its top-k gallery matches with their cosine similarity (blue ✓ =
    same identity, vermillion ✗ = another), and, last, its true match with its rank."""
    gf, _ = bank.take(list(gallery))
    k = min(k, len(gallery))
    fig, axes = plt.subplots(len(queries), k + 2, figsize=(TEXT_WIDTH, 1.3 * len(queries) + 0.4),
                             squeeze=False)
    for row, q in zip(axes, queries):
        qf, _ = bank.take([q])
        sims = (qf @ gf.T)[0]
        order = torch.sort(sims, descending=True, stable=True).indices
        true_pos = next(i for i, gi in enumerate(order.tolist()) if gallery[gi].label == q.label)
        true_gi = int(order[true_pos])
        digits = similarity_digits([float(sims[gi]) for gi in order[:k].tolist()] + [float(sims[true_gi])])
        row[0].imshow(to_img(images[bank.index[q.image_name]]))
        row[0].set_title(f"query · id {q.person_id}", fontsize=6.5)
        _frame(row[0], "black")
        for ax, gi in zip(row[1:k + 1], order[:k].tolist()):
            g = gallery[gi]
            ok = g.label == q.label
            ax.imshow(to_img(images[bank.index[g.image_name]]))
            _frame(ax, CORRECT if ok else WRONG)
            ax.set_title(f"{'✓' if ok else '✗'} {float(sims[gi]):.{digits}f}", fontsize=6.5,
                         color=CORRECT if ok else WRONG)
        last = row[k + 1]
        last.imshow(to_img(images[bank.index[gallery[true_gi].image_name]]))
        _frame(last, CORRECT)
        last.set_title(f"true match: rank {true_pos + 1}\nsim {float(sims[true_gi]):.{digits}f}", fontsize=6.5)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    for j, head in enumerate(["query", *[f"#{i + 1}" for i in range(k)], "true match"]):
        axes[-1][j].set_xlabel(head, fontsize=6.5)
    return named(fig, name, title or f"Top-{k} retrievals (cosine similarity)")


def worst_failures(per_query: pd.DataFrame, queries: Sequence[SplitRow], protocol: str = "clipfh",
                   split: int = 0, n: int = 4) -> list[SplitRow]:
    """The `n` queries of a split whose true match ranks lowest (first training seed; ties by name)."""
    df = per_query[(per_query["protocol"] == protocol) & (per_query["split"] == split)]
    if "seed" in df.columns:
        df = df[df["seed"] == df["seed"].min()]
    by_name = {q.image_name: q for q in queries}
    return [by_name[q] for q in df.sort_values(["rank", "query"], ascending=[False, True])["query"].head(n)]


def retrieval_figures(bank: FeatureBank, images: torch.Tensor, proto: Protocol, per_query: pd.DataFrame,
                      label: str, split: int = 0, n: int = 2, seed: int = 0, protocol: str = "clipfh",
                      k: int = 5):
    """One retrieval grid for a model: `n` queries of different identities (seeded), then the
    split's `n` hardest failures (the queries whose true match ranks lowest)."""
    queries, gallery = proto.queries[split], proto.galleries[split]
    rng = np.random.default_rng(seed)
    first: dict[str, SplitRow] = {}
    for q in queries:
        first.setdefault(q.person_id, q)
    picked = [list(first.values())[i] for i in sorted(rng.choice(len(first), min(n, len(first)), replace=False))]
    worst = worst_failures(per_query, queries, protocol, split, n)
    slug = "".join(c if c.isalnum() else "_" for c in label).strip("_")
    return retrieval_grid(bank, images, picked + worst, gallery, k,
                          f"{label}, split {split}: {len(picked)} queries drawn at random, then the "
                          f"{len(worst)} hardest failures", name=f"retrievals_{slug}")
