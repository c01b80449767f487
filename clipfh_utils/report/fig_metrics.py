"""Figures of the results: CMC curves, the spread over splits, the comparison and its differences.
Every legend sits outside the axes (constrained layout), so it never covers a curve or a label."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..evaluation.spread import excludes_zero
from .style import LINESTYLES, MARKERS, OKABE_ITO, STAGE_NAMES, TEXT_WIDTH, cycle, named, stage_colours, wrap

PROTOCOL_SHORT = {"clipfh": "CLIP-FH protocol", "mbanet": "MBA-Net protocol"}


def cmc_band(curves: Mapping[str, np.ndarray], max_rank: int = 20, title: str = "CMC",
             name: str = "cmc"):
    """CMC per model: the mean over splits (and seeds) with a ±1 sd band; `curves[label]` is
    (n_curves, K) in percent."""
    rows = len(curves) if max((len(str(lab)) for lab in curves), default=0) > 30 else -(-len(curves) // 2)
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH * 0.8, 3.0 + 0.18 * rows))
    for i, (label, c) in enumerate(curves.items()):
        c = np.atleast_2d(np.asarray(c, dtype=float))[:, :max_rank]
        k = np.arange(1, c.shape[1] + 1)
        mean = c.mean(0)
        sd = c.std(0, ddof=1) if len(c) > 1 else np.zeros_like(mean)
        colour = cycle(OKABE_ITO, i)
        ax.plot(k, mean, color=colour, ls=cycle(LINESTYLES, i), marker=cycle(MARKERS, i),
                ms=3, label=f"{label} (n = {len(c)})")
        ax.fill_between(k, np.clip(mean - sd, 0, 100), np.clip(mean + sd, 0, 100), color=colour, alpha=0.18, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("rank k")
    ax.set_ylabel("queries matched within rank k (%)")
    if curves:
        long = max(len(str(lab)) for lab in curves) > 30  # side by side only where the labels are short
        fig.legend(loc="outside lower center", ncol=1 if long else (2 if len(curves) > 2 else len(curves)),
                   title="mean ± 1 sd over splits × seeds", title_fontsize=7, frameon=False)
    return named(fig, name, title)


def split_spread(per_split: pd.DataFrame, metric: str = "mAP", by: str = "model",
                 protocols: Sequence[str] = ("clipfh", "mbanet", "person"), name: str = "split_spread", seed: int = 0):
    """Per-split values as box + strip plots, one panel per protocol: how much the Monte Carlo
    draw (and the training seed: marker shape) moves the metric. (A person benchmark has one fixed
    split: its panel shows the spread over training seeds only.)"""
    protocols = [p for p in protocols if p in set(per_split["protocol"])]
    labels = list(dict.fromkeys(per_split[by]))
    fig, axes = plt.subplots(1, len(protocols), figsize=(TEXT_WIDTH, 2.6 + 0.075 * max(map(len, labels))),
                             squeeze=False, sharey=True)
    rng = np.random.default_rng(seed)
    seeds = sorted(per_split["seed"].unique()) if "seed" in per_split else [0]
    for ax, proto in zip(axes[0], protocols):
        d = per_split[per_split["protocol"] == proto]
        values = [d.loc[d[by] == lab, metric].to_numpy() for lab in labels]
        ax.boxplot(values, positions=range(len(labels)), widths=0.5, showfliers=False,
                   medianprops={"color": "black"}, boxprops={"color": "0.4"}, whiskerprops={"color": "0.4"},
                   capprops={"color": "0.4"})
        for i, lab in enumerate(labels):
            di = d[d[by] == lab]
            for j, s in enumerate(seeds):
                v = di.loc[di["seed"] == s, metric] if "seed" in di else di[metric]
                ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=12, color=cycle(OKABE_ITO, i),
                           marker=cycle(MARKERS, j), alpha=0.8, lw=0, label=f"seed {s}" if i == 0 else None)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)  # upright labels never overlap
        ax.set_title(PROTOCOL_SHORT.get(proto, proto))
        ax.set_ylabel(f"{metric} per split (%)")
    top = float(per_split[metric].max())
    axes[0][0].set_ylim(0, min(100.0, 10 * np.ceil(top / 10 + 0.5)))  # from 0, room above the highest
    if len(seeds) > 1:
        handles, names = axes[0][-1].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside upper center", title="marker = training seed",
                   title_fontsize=7, ncol=min(len(seeds), 6))
    return named(fig, name, f"{metric} over the Monte Carlo splits (one point per split and seed).")


def comparison_bars(table: pd.DataFrame, metric: str = "mAP", title: str = "", name: str = "comparison",
                    labels: Sequence[str] | None = None):
    """Mean per model with its 95 % bootstrap interval over test identities, coloured by stage."""
    ticks = [wrap(str(t), 34) for t in (list(labels) if labels is not None else table["model"])]
    lines = sum(t.count("\n") + 1 for t in ticks)  # long labels wrap: the bars keep their room
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 0.2 * lines + 0.14 * len(table) + 1.6))
    colours = stage_colours(table["stage"])
    y = np.arange(len(table))
    mean = table[f"{metric}_mean"].to_numpy()
    err = np.vstack([mean - table[f"{metric}_ci_lo"].to_numpy(), table[f"{metric}_ci_hi"].to_numpy() - mean])
    ax.barh(y, mean, color=[colours[s] for s in table["stage"]], height=0.6)
    ax.errorbar(mean, y, xerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=3, lw=1)
    right = np.fmax(mean, np.nan_to_num(table[f"{metric}_ci_hi"].to_numpy(), nan=0.0))
    for yi, v, x in zip(y, mean, right):
        ax.text(x + 1.5, yi, f"{v:.1f}", va="center", ha="left", fontsize=7)
    ax.set_yticks(y, ticks)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel(f"{metric} (%)\nerror bars: 95 % bootstrap interval over test identities")
    handles = [mpl.patches.Patch(color=c, label=STAGE_NAMES.get(s, s)) for s, c in colours.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4))
    return named(fig, name, title)


def difference_forest(pairs: pd.DataFrame, metric: str = "mAP", title: str = "", name: str = "differences",
                      labels: Sequence[str] | None = None):
    """Paired differences B − A with their 95 % bootstrap intervals; 0 = no difference."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 0.5 * len(pairs) + 1.7))
    y = np.arange(len(pairs))
    d = pairs[f"d_{metric}"].to_numpy()
    lo, hi = pairs[f"d_{metric}_lo"].to_numpy(), pairs[f"d_{metric}_hi"].to_numpy()
    resolved = excludes_zero(lo, hi)
    ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.scatter(d, y, c=[OKABE_ITO[0] if r else OKABE_ITO[1] for r in resolved], zorder=3, s=25)
    ax.axvline(0, color="0.3", lw=1, ls="--")
    ax.set_yticks(y, list(labels) if labels is not None else [f"{b}\n−  {a}" for a, b in zip(pairs["A"], pairs["B"])],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference in {metric} (percentage points)\nerror bars: 95 % paired bootstrap interval")
    span = max(5.0, float(np.nanmax(np.abs(np.concatenate([lo, hi])))) * 1.1) if len(pairs) else 5.0
    ax.set_xlim(-span, span)
    key = [mpl.lines.Line2D([], [], ls="", marker="o", color=OKABE_ITO[0], label="interval excludes 0"),
           mpl.lines.Line2D([], [], ls="", marker="o", color=OKABE_ITO[1], label="interval includes 0")]
    fig.legend(handles=key, loc="outside lower center", ncol=2)
    return named(fig, name, title or f"{metric}: B − A")
