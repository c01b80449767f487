"""Where models look: maps over the images, and their share per hand region."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .style import MAP_CMAP, OKABE_ITO, TEXT_WIDTH, named, to_img, wrap


def _overlay(ax, image: torch.Tensor, m: torch.Tensor | None) -> None:
    img = to_img(image)
    ax.imshow(img)
    if m is not None:
        up = F.interpolate(m[None, None].float(), size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0]
        top = float(up.max())
        ax.imshow((up / top).numpy() if top > 0 else up.numpy(), cmap=MAP_CMAP, alpha=0.55, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def attention_grid(images: torch.Tensor, maps: Mapping[str, torch.Tensor], row_titles: Sequence[str],
                   title: str = "", name: str = "attention"):
    """Rows = query images; columns = the image, then each map (model · method) overlaid,
    scaled to its own maximum (the colour bar's 1)."""
    cols = list(maps)
    cell = min((TEXT_WIDTH - 0.8) / (len(cols) + 1), 1.5)  # inches per image; room for the colour bar
    h, w = images.shape[-2:]
    fig, axes = plt.subplots(len(images), len(cols) + 1, squeeze=False, layout="constrained",
                             figsize=(cell * (len(cols) + 1) + 0.8, cell * h / w * len(images) + 1.1))
    for r, img in enumerate(images):
        _overlay(axes[r][0], img, None)
        axes[r][0].set_ylabel(row_titles[r], fontsize=7)
        for c, col in enumerate(cols):
            _overlay(axes[r][c + 1], img, maps[col][r])
    width = max(6, int(cell * 72 / (6.5 * 0.62)))  # characters of 6.5 pt that fit above one column
    for c, col in enumerate(["image", *cols]):
        axes[0][c].set_title(wrap(col, width), fontsize=6.5)
    sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, 1), cmap=MAP_CMAP)
    fig.colorbar(sm, ax=axes, fraction=0.02, pad=0.01, label="map value (1 = its maximum)")
    return named(fig, name, title)


def region_bars(shares: pd.DataFrame, area: pd.Series, title: str = "", name: str = "attention_by_region"):
    """Mean share (%) of each map in each hand region, one bar group per region, with the
    region's share of the image area (what a uniform map gives) as a black tick."""
    regions = list(shares.columns)
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 3.2 + 0.13 * len(shares)))
    n = len(shares)
    width = 0.8 / max(1, n)
    x = np.arange(len(regions))
    for i, (label, row) in enumerate(shares.iterrows()):
        ax.bar(x - 0.4 + width * (i + 0.5), row.to_numpy(), width, label=label, color=OKABE_ITO[i % len(OKABE_ITO)],
               hatch=["", "//", "..", "xx", "\\\\", "oo"][(i // len(OKABE_ITO)) % 6])
    ax.scatter(x, area.reindex(regions).to_numpy(), marker="_", s=600, color="black", zorder=3,
               label="area share (uniform map)")
    ax.set_xticks(x, [r.replace(" / ", "\n/ ") for r in regions])
    ax.set_ylabel("share of the map (%)")
    ax.set_ylim(0, 100)
    ax.set_xlabel("hand region")
    fig.legend(fontsize=7, loc="outside lower center", ncol=2)
    return named(fig, name, title or "Where the maps fall, by hand region (mean over queries).")
