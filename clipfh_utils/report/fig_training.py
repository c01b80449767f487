"""Training figures: loss terms, learning rates and validation per epoch; t-SNE before/after.
Legends sit below their panel (constrained layout makes room), never over a curve."""
from __future__ import annotations

from typing import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator

from ..training.losses import LOSS_TERMS, term_label
from .style import LINESTYLES, MARKERS, OKABE_ITO, TEXT_WIDTH, named

BESIDE = {"loc": "center left", "bbox_to_anchor": (1.01, 0.5), "fontsize": 6.5}  # right of the panel


def _relative_change(series: pd.Series) -> str:
    s = series.dropna()
    if len(s) < 2 or s.iloc[0] == 0:
        return ""
    return f" ({(s.iloc[-1] / s.iloc[0] - 1) * 100:+.1f} %)"


def training_curves(epochs: pd.DataFrame, title: str = "", name: str = "training_curves"):
    """From the per-epoch log (all seeds): each phase's loss terms (mean over seeds, ±1 sd band;
    the y axis starts at 0, so a small change looks small, and the legend gives each term's change
    over the phase), the learning rate of every parameter group (identical schedules drawn once
    and named together), and the validation monitor per seed (training identities only)."""
    phases = list(dict.fromkeys(epochs["phase"]))
    val_cols = [c for c in epochs.columns if c.startswith("val_") and epochs[c].notna().any()]
    n = len(phases) + 1 + (1 if val_cols else 0)
    # one panel per row, the full text width, its legend beside it: long term names never squeeze it
    fig, axes = plt.subplots(n, 1, figsize=(TEXT_WIDTH, 2.0 * n + 0.2), squeeze=False)
    axes = axes.ravel()  # an array: indexing and slicing never depend on an iterator's position
    n_seeds = epochs["seed"].nunique() if "seed" in epochs else 1
    for ax, phase in zip(axes, phases):
        d = epochs[epochs["phase"] == phase]
        terms = [c for c in ["total", *LOSS_TERMS] if c in d.columns and d[c].notna().any()]
        if len(terms) == 2 and np.allclose(d[terms[0]], d[terms[1]]):
            terms = terms[1:]  # one weighted term: the total is the same line
        g = d.groupby("epoch")[terms]
        mean, sd = g.mean(), g.std(ddof=1).fillna(0.0)
        for i, t in enumerate(terms):
            ax.plot(mean.index, mean[t], ls=LINESTYLES[i % len(LINESTYLES)], color=OKABE_ITO[i % len(OKABE_ITO)],
                    lw=2 if t == "total" else 1.3, label=term_label(t) + _relative_change(mean[t]))
            if n_seeds > 1:
                ax.fill_between(mean.index, mean[t] - sd[t], mean[t] + sd[t], color=OKABE_ITO[i % len(OKABE_ITO)],
                                alpha=0.15, lw=0)
        ax.set_ylim(bottom=0, top=max(float((mean + sd).max().max()) * 1.05, 1e-6))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (mean per step)")
        ax.set_title(f"phase '{phase}'" + (f" · mean ± sd of {n_seeds} seeds" if n_seeds > 1 else ""))
        ax.legend(title="term (change over the phase)", title_fontsize=6.5, **BESIDE)
    ax = axes[len(phases)]
    offset, style = 0, 0
    first_seed = epochs[epochs["seed"] == epochs["seed"].min()] if "seed" in epochs else epochs
    for phase in phases:
        d = first_seed[first_seed["phase"] == phase]
        lr_cols = [c for c in d.columns if c.startswith("lr_") and d[c].notna().any()]
        lr = d.groupby("epoch")[lr_cols].first()
        groups: dict[tuple, list[str]] = {}
        for c in lr_cols:
            groups.setdefault(tuple(np.round(lr[c].to_numpy(), 15)), []).append(c[3:])
        for key, names in groups.items():
            ax.plot(lr.index + offset, key, ls=LINESTYLES[style % len(LINESTYLES)], color=OKABE_ITO[style % len(OKABE_ITO)],
                    marker=MARKERS[style % len(MARKERS)], markevery=max(1, len(lr) // 8), ms=3,
                    label=f"{phase}: {' = '.join(names)}")
            style += 1
        if len(lr):
            if offset:
                ax.axvline(offset + 0.5, color="0.6", lw=0.8, ls=":")  # where this phase starts
            offset += int(lr.index.max())
    ax.set_yscale("log")
    ax.set_xlabel("epoch (phases in sequence)")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate per group")
    ax.legend(**BESIDE)
    if val_cols:
        ax = axes[len(phases) + 1]
        d = epochs.dropna(subset=val_cols, how="all")
        seeds = list(d.groupby("seed")) if "seed" in d else [(0, d)]
        for i, col in enumerate(val_cols):        # colour = metric, line style and marker = seed
            for j, (_, ds) in enumerate(seeds):
                ax.plot(ds["epoch"], ds[col], color=OKABE_ITO[i % len(OKABE_ITO)], ls=LINESTYLES[j % len(LINESTYLES)],
                        marker=MARKERS[j % len(MARKERS)], ms=4)
        handles = ([mpl.lines.Line2D([], [], color=OKABE_ITO[i % len(OKABE_ITO)], label=c[4:]) for i, c in enumerate(val_cols)]
                   + [mpl.lines.Line2D([], [], color="0.3", ls=LINESTYLES[j % len(LINESTYLES)], marker=MARKERS[j % len(MARKERS)],
                                       label=f"seed {s}") for j, (s, _) in enumerate(seeds)])
        ax.set_ylim(0, 105)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"epoch (phase '{d['phase'].iloc[0]}')" if len(d) else "epoch")
        ax.set_ylabel("validation metric (%)")
        ax.set_title("validation (training ids, held-out images)")
        ax.legend(handles=handles, ncol=2, **BESIDE)
    for ax in axes[n:]:
        ax.axis("off")
    return named(fig, name, title)


def tsne_pair(before: torch.Tensor, after: torch.Tensor, labels: Sequence, max_ids: int = 10,
              seed: int = 0, titles: tuple[str, str] = ("before", "after"), name: str = "tsne"):
    """t-SNE of the same test images embedded by two models (first `max_ids` identities; colour
    and marker together name the identity)."""
    from sklearn.manifold import TSNE
    labels = np.asarray(labels)
    keep_ids = sorted(set(labels.tolist()))[:max_ids]
    mask = np.isin(labels, keep_ids)
    fig, axes = plt.subplots(1, 2, figsize=(TEXT_WIDTH, 3.1))
    for ax, feats, t in zip(axes, (before, after), titles):
        x = feats[torch.from_numpy(mask)].numpy()
        emb = TSNE(n_components=2, perplexity=min(30, max(5, len(x) // 4)), random_state=seed,
                   init="pca").fit_transform(x)
        for i, pid in enumerate(keep_ids):
            sel = labels[mask] == pid
            ax.scatter(emb[sel, 0], emb[sel, 1], s=14, color=OKABE_ITO[i % len(OKABE_ITO)],
                       marker=MARKERS[(i // len(OKABE_ITO)) % len(MARKERS)], label=str(pid))
        ax.set_title(t)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1 (no unit)")
        ax.set_ylabel("t-SNE 2 (no unit)")
    handles, names = axes[1].get_legend_handles_labels()
    fig.legend(handles, names, title="identity", fontsize=6, title_fontsize=7, loc="outside right center")
    return named(fig, name, f"t-SNE of test embeddings ({len(keep_ids)} identities): {titles[0]} and {titles[1]}.")
