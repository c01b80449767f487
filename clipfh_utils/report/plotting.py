"""Figures for the reports. Each function draws one figure and returns it.

Made for print as well as the screen: sizes for an A4 text width (6.3 in), print-sized fonts,
the Okabe-Ito colour-blind-safe palette (and line styles or markers where colour alone would have
to carry a distinction), labelled axes with units, scales that start where the quantity does. Each
figure carries a file name in its label (`fig.get_label()`), under which the workbook exports it
as PDF, SVG and PNG.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator

from ..data.protocol import Protocol, SplitRow
from ..evaluation import FeatureBank
from ..evaluation.spread import excludes_zero
from ..training.losses import LOSS_TERMS, term_label

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
CORRECT, WRONG = "#0072B2", "#D55E00"      # blue / vermillion, plus ✓ / ✗ in the text
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
TEXT_WIDTH = 6.3                            # inches: A4 with 2.5 cm margins
MAP_CMAP = "inferno"                        # perceptually uniform, readable in greyscale
STAGE_NAMES = {"stage1": "Stage 1 (zero-shot)", "stage2": "Stage 2 (CLIP-ReID)",
               "stage3": "Stage 3 (PromptSG)", "baseline": "baseline"}


def use_print_style() -> None:
    """matplotlib settings for every report figure (called on import)."""
    mpl.rcParams.update({
        "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
        "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 10,
        "axes.prop_cycle": mpl.cycler(color=OKABE_ITO), "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.5,
        "figure.dpi": 110, "savefig.dpi": 300, "pdf.fonttype": 42, "ps.fonttype": 42,
        "svg.fonttype": "none", "legend.frameon": False, "image.cmap": MAP_CMAP})


use_print_style()


def _named(fig, name: str):
    fig.set_label(name)
    return fig


def _to_img(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).cpu().numpy()


def _stage_colours(stages: Sequence[str]) -> dict[str, str]:
    order = [s for s in STAGE_NAMES if s in set(stages)] + sorted(set(stages) - set(STAGE_NAMES))
    return dict(zip(order, OKABE_ITO))


# --------------------------------------------------------------------------- data

def counts_bar(counts: pd.DataFrame, name: str = "images_per_aspect"):
    """Images kept / removed (accessories) per aspect, with train/test identity counts."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 2.8))
    df = counts.set_index("aspect")[["kept", "with_accessories"]]
    df.columns = ["kept (no accessories)", "removed (accessories)"]
    df.plot.bar(stacked=True, ax=ax, color=[OKABE_ITO[0], OKABE_ITO[1]], rot=0, width=0.6)
    for i, r in enumerate(counts.itertuples()):
        ax.text(i, r.images * 1.02, f"{r.train_ids} train / {r.test_ids} test ids", ha="center", fontsize=7)
    ax.set_xlabel("aspect")
    ax.set_ylabel("images")
    ax.set_ylim(0, counts["images"].max() * 1.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Images per aspect after the accessories filter")
    fig.tight_layout()
    return _named(fig, name)


def images_per_id(proto: Protocol, name: str = "images_per_identity"):
    """How many images each identity has, training vs test side."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 2.6))
    sides = (("training + validation", proto.train + proto.val), ("test", proto.test))
    counts = [pd.Series([r.person_id for r in rows]).value_counts() for _, rows in sides]
    top = max(int(c.max()) for c in counts)
    bins = np.arange(0.5, top + 1.5)
    ax.hist([c.values for c in counts], bins=bins, label=[s for s, _ in sides], color=OKABE_ITO[:2])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("images per identity")
    ax.set_ylabel("identities")
    ax.legend()
    ax.set_title(f"{proto.aspect}: images per identity")
    fig.tight_layout()
    return _named(fig, name)


def image_grid(images: torch.Tensor, titles: Sequence[str], ncols: int = 6, title: str = "",
               name: str = "image_grid"):
    n = len(images)
    nrows = max(1, (n + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(TEXT_WIDTH, TEXT_WIDTH / ncols * 0.95 * nrows + 0.3),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(_to_img(img))
        ax.set_title(t, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _named(fig, name)


# --------------------------------------------------------------------------- metrics

def cmc_band(curves: Mapping[str, np.ndarray], max_rank: int = 20, title: str = "CMC",
             name: str = "cmc"):
    """CMC per model: the mean over splits (and seeds) with a ±1 sd band; `curves[label]` is
    (n_curves, K) in percent."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH * 0.62, 3.0))
    for i, (label, c) in enumerate(curves.items()):
        c = np.atleast_2d(np.asarray(c, dtype=float))[:, :max_rank]
        k = np.arange(1, c.shape[1] + 1)
        mean = c.mean(0)
        sd = c.std(0, ddof=1) if len(c) > 1 else np.zeros_like(mean)
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        ax.plot(k, mean, color=colour, ls=LINESTYLES[i % len(LINESTYLES)], marker=MARKERS[i % len(MARKERS)],
                ms=3, label=f"{label} (n = {len(c)})")
        ax.fill_between(k, np.clip(mean - sd, 0, 100), np.clip(mean + sd, 0, 100), color=colour, alpha=0.18, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("rank k")
    ax.set_ylabel("queries matched within rank k (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", title="mean ± 1 sd over splits × seeds", title_fontsize=7)
    fig.tight_layout()
    return _named(fig, name)


def split_spread(per_split: pd.DataFrame, metric: str = "mAP", by: str = "model",
                 protocols: Sequence[str] = ("clipfh", "mbanet"), name: str = "split_spread", seed: int = 0):
    """Per-split values as box + strip plots, one panel per protocol: how much the Monte Carlo
    draw (and the training seed: marker shape) moves the metric."""
    protocols = [p for p in protocols if p in set(per_split["protocol"])]
    labels = list(dict.fromkeys(per_split[by]))
    fig, axes = plt.subplots(1, len(protocols), figsize=(TEXT_WIDTH, 2.4 + 0.15 * max(map(len, labels))),
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
                ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=12, color=OKABE_ITO[i % len(OKABE_ITO)],
                           marker=MARKERS[j % len(MARKERS)], alpha=0.8, lw=0,
                           label=f"seed {s}" if i == 0 else None)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(proto)
        ax.set_ylabel(f"{metric} per split (%)")
    top = float(per_split[metric].max())
    axes[0][0].set_ylim(0, min(100.0, 10 * np.ceil(top / 10 + 0.5)))  # from 0, room above the highest
    if len(seeds) > 1:
        axes[0][-1].legend(loc="lower right", title="marker = training seed", title_fontsize=7)
    fig.suptitle(f"{metric} over the Monte Carlo splits (one point per split and seed)")
    fig.tight_layout()
    return _named(fig, name)


def comparison_bars(table: pd.DataFrame, metric: str = "mAP", title: str = "", name: str = "comparison"):
    """Mean per model with its 95 % bootstrap interval over test identities, coloured by stage."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 0.32 * len(table) + 1.5))
    colours = _stage_colours(table["stage"])
    y = np.arange(len(table))
    mean = table[f"{metric}_mean"].to_numpy()
    err = np.vstack([mean - table[f"{metric}_ci_lo"].to_numpy(), table[f"{metric}_ci_hi"].to_numpy() - mean])
    ax.barh(y, mean, color=[colours[s] for s in table["stage"]], height=0.6)
    ax.errorbar(mean, y, xerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=3, lw=1)
    right = np.fmax(mean, np.nan_to_num(table[f"{metric}_ci_hi"].to_numpy(), nan=0.0))
    for yi, v, x in zip(y, mean, right):
        ax.text(x + 1.5, yi, f"{v:.1f}", va="center", ha="left", fontsize=7)
    ax.set_yticks(y, table["model"])
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel(f"{metric} (%) · error bars: 95 % bootstrap interval over test identities")
    handles = [mpl.patches.Patch(color=c, label=STAGE_NAMES.get(s, s)) for s, c in colours.items()]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.5 / (0.32 * len(table) + 0.4)),
              ncol=min(len(handles), 4))  # below the axis label: never on a bar or its value
    ax.set_title(title)
    fig.tight_layout()
    return _named(fig, name)


def difference_forest(pairs: pd.DataFrame, metric: str = "mAP", title: str = "", name: str = "differences"):
    """Paired differences B − A with their 95 % bootstrap intervals; 0 = no difference."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 0.35 * len(pairs) + 1.5))
    y = np.arange(len(pairs))
    d = pairs[f"d_{metric}"].to_numpy()
    lo, hi = pairs[f"d_{metric}_lo"].to_numpy(), pairs[f"d_{metric}_hi"].to_numpy()
    resolved = excludes_zero(lo, hi)
    ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.scatter(d, y, c=[OKABE_ITO[0] if r else OKABE_ITO[1] for r in resolved], zorder=3, s=25)
    ax.axvline(0, color="0.3", lw=1, ls="--")
    ax.set_yticks(y, [f"{b}  −  {a}" for a, b in zip(pairs["A"], pairs["B"])])
    ax.invert_yaxis()
    ax.set_xlabel(f"difference in {metric} (percentage points) · 95 % paired bootstrap interval")
    span = max(5.0, float(np.nanmax(np.abs(np.concatenate([lo, hi])))) * 1.1) if len(pairs) else 5.0
    ax.set_xlim(-span, span)
    key = [mpl.lines.Line2D([], [], ls="", marker="o", color=OKABE_ITO[0], label="interval excludes 0"),
           mpl.lines.Line2D([], [], ls="", marker="o", color=OKABE_ITO[1], label="interval includes 0")]
    ax.legend(handles=key, loc="upper center", bbox_to_anchor=(0.5, -0.45 / (0.35 * len(pairs) + 0.4)), ncol=2)
    ax.set_title(title or f"{metric}: B − A")
    fig.tight_layout()
    return _named(fig, name)


# --------------------------------------------------------------------------- retrievals

def _frame(ax, colour: str) -> None:
    for s in ax.spines.values():
        s.set_visible(True)
        s.set_edgecolor(colour)
        s.set_linewidth(3)


def retrieval_grid(bank: FeatureBank, images: torch.Tensor, queries: Sequence[SplitRow],
                   gallery: Sequence[SplitRow], k: int = 5, title: str = "", name: str = "retrievals"):
    """Per query: the image, its top-k gallery matches with their cosine similarity (blue ✓ =
    same identity, vermillion ✗ = another), and, last, its true match with its rank."""
    gf, _ = bank.take(list(gallery))
    k = min(k, len(gallery))
    fig, axes = plt.subplots(len(queries), k + 2, figsize=(TEXT_WIDTH, 1.25 * len(queries) + 0.5),
                             squeeze=False)
    for row, q in zip(axes, queries):
        qf, _ = bank.take([q])
        sims = (qf @ gf.T)[0]
        order = torch.sort(sims, descending=True, stable=True).indices
        true_pos = next(i for i, gi in enumerate(order.tolist()) if gallery[gi].label == q.label)
        true_gi = int(order[true_pos])
        row[0].imshow(_to_img(images[bank.index[q.image_name]]))
        row[0].set_title(f"query · id {q.person_id}", fontsize=7)
        _frame(row[0], "black")
        for ax, gi in zip(row[1:k + 1], order[:k].tolist()):
            g = gallery[gi]
            ok = g.label == q.label
            ax.imshow(_to_img(images[bank.index[g.image_name]]))
            _frame(ax, CORRECT if ok else WRONG)
            ax.set_title(f"{'✓' if ok else '✗'} {float(sims[gi]):.2f}", fontsize=7,
                         color=CORRECT if ok else WRONG)
        last = row[k + 1]
        last.imshow(_to_img(images[bank.index[gallery[true_gi].image_name]]))
        _frame(last, CORRECT)
        last.set_title(f"true match: rank {true_pos + 1}\nsim {float(sims[true_gi]):.2f}", fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    for j, head in enumerate(["query", *[f"#{i + 1}" for i in range(k)], "true match"]):
        axes[-1][j].set_xlabel(head, fontsize=7)
    fig.suptitle(title or f"Top-{k} retrievals (cosine similarity)")
    fig.tight_layout()
    return _named(fig, name)


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


# --------------------------------------------------------------------------- training

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
    if epochs.empty or "phase" not in epochs:  # every phase has 0 epochs: nothing was trained
        fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no training epochs: every phase of this run has 0 epochs", ha="center", va="center")
        return _named(fig, name)
    phases = list(dict.fromkeys(epochs["phase"]))
    val_cols = [c for c in epochs.columns if c.startswith("val_") and epochs[c].notna().any()]
    n = len(phases) + 1 + (1 if val_cols else 0)
    ncols = 2
    nrows = (n + 1) // 2
    fig, axes = plt.subplots(nrows, ncols, figsize=(TEXT_WIDTH, 2.8 * nrows), squeeze=False)
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
        ax.set_ylim(bottom=0, top=max(float((mean + sd).max().max()) * (1.25 + 0.15 * len(terms)), 1e-6))  # legend room
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (mean per step)")
        ax.set_title(f"phase '{phase}'" + (f" · mean ± sd of {n_seeds} seeds" if n_seeds > 1 else ""))
        ax.legend(fontsize=6.5, title="term (change over the phase)", title_fontsize=6.5, loc="upper right",
                  frameon=True, framealpha=0.9, edgecolor="none")
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
    ax.legend(fontsize=6.5, loc="best", frameon=True, framealpha=0.9, edgecolor="none")
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
        ax.legend(handles=handles, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    for ax in axes[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _named(fig, name)


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
    axes[1].legend(title="identity", fontsize=6, title_fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"t-SNE of test embeddings ({len(keep_ids)} identities)")
    fig.tight_layout()
    return _named(fig, name)


# --------------------------------------------------------------------------- where models look

def _overlay(ax, image: torch.Tensor, m: torch.Tensor | None) -> None:
    img = _to_img(image)
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


def _wrap(label: str, width: int) -> str:
    """A column title in lines of at most `width` characters, broken after '_', '-' or spaces
    (model names are long and have no spaces)."""
    lines = []
    for part in label.split("\n"):
        line = ""
        for piece in re.findall(r"[^_\- ]+[_\- ]?|[_\- ]", part):
            if line and len(line) + len(piece.rstrip()) > width:
                lines.append(line.rstrip())
                line = ""
            line += piece
        lines.append(line.rstrip())
    return "\n".join(lines)


def attention_grid(images: torch.Tensor, maps: Mapping[str, torch.Tensor], row_titles: Sequence[str],
                   title: str = "", name: str = "attention"):
    """Rows = query images; columns = the image, then each map (model · method) overlaid,
    scaled to its own maximum (the colour bar's 1)."""
    cols = list(maps)
    cell = min((TEXT_WIDTH - 0.8) / (len(cols) + 1), 1.5)  # inches per image; room for the colour bar
    h, w = images.shape[-2:]
    fig, axes = plt.subplots(len(images), len(cols) + 1, squeeze=False, layout="constrained",
                             figsize=(cell * (len(cols) + 1) + 0.8, cell * h / w * len(images) + 0.9))
    for r, img in enumerate(images):
        _overlay(axes[r][0], img, None)
        axes[r][0].set_ylabel(row_titles[r], fontsize=7)
        for c, col in enumerate(cols):
            _overlay(axes[r][c + 1], img, maps[col][r])
    width = max(8, int(120 / (len(cols) + 1)))  # characters that fit above one column at 7 pt
    for c, col in enumerate(["image", *cols]):
        axes[0][c].set_title(_wrap(col, width), fontsize=7)
    sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, 1), cmap=MAP_CMAP)
    fig.colorbar(sm, ax=axes, fraction=0.02, pad=0.01, label="map value (1 = its maximum)")
    if title:
        fig.suptitle(title)
    return _named(fig, name)


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
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    ax.set_title(title or "Where the maps fall, by hand region (mean over queries)")
    fig.tight_layout()
    return _named(fig, name)
