"""Figures of notebook 00: what the data hold before any model sees them."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator

from ..data.protocol import Protocol
from .style import OKABE_ITO, TEXT_WIDTH, named, to_img


def counts_bar(counts: pd.DataFrame, name: str = "images_per_aspect"):
    """Images kept / removed (accessories) per aspect, with train/test identity counts."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 3.0))
    df = counts.set_index("aspect")[["kept", "with_accessories"]]
    df.columns = ["kept (no accessories)", "removed (accessories)"]
    df.plot.bar(stacked=True, ax=ax, color=[OKABE_ITO[0], OKABE_ITO[1]], rot=0, width=0.6, legend=False)
    for i, r in enumerate(counts.itertuples()):  # two short lines: never wider than a bar's slot
        ax.text(i, r.images * 1.02, f"{r.train_ids} train ids\n{r.test_ids} test ids", ha="center",
                va="bottom", fontsize=6.5)
    ax.set_xlabel("aspect")
    ax.set_ylabel("images")
    ax.set_ylim(0, counts["images"].max() * 1.3)
    fig.legend(loc="outside upper center", ncol=2)
    return named(fig, name, "Images per aspect after the accessories filter, with the identities on each side.")


def images_per_id(proto: Protocol, name: str = "images_per_identity"):
    """How many images each identity has, training vs test side."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 2.8))
    sides = (("training + validation", proto.train + proto.val), ("test", proto.test))
    counts = [pd.Series([r.person_id for r in rows]).value_counts() for _, rows in sides]
    top = max(int(c.max()) for c in counts)
    bins = np.arange(0.5, top + 1.5)
    ax.hist([c.values for c in counts], bins=bins, label=[s for s, _ in sides], color=OKABE_ITO[:2])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("images per identity")
    ax.set_ylabel("identities")
    fig.legend(loc="outside upper center", ncol=2)
    return named(fig, name, f"{proto.aspect}: images per identity, training and test side.")


def image_grid(images: torch.Tensor, titles: Sequence[str], ncols: int = 6, title: str = "",
               name: str = "image_grid"):
    n = len(images)
    nrows = max(1, (n + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(TEXT_WIDTH, TEXT_WIDTH / ncols * 0.95 * nrows + 0.3),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(to_img(img))
        ax.set_title(t, fontsize=7)
    return named(fig, name, title)
