"""Figures for the reports. Each function draws one figure and returns it (static PNG in HTML)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..data.protocol import Protocol
from ..evaluation import FeatureBank
from ..training.losses import LOSS_TERMS, term_label

sns.set_theme(style="whitegrid", context="notebook")


def _to_img(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).cpu().numpy()


def counts_bar(counts: pd.DataFrame):
    """Images kept / removed (accessories) per aspect, with train/test identity counts."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    df = counts.set_index("aspect")[["kept", "with_accessories"]]
    df.plot.bar(stacked=True, ax=ax, color=["#4c72b0", "#dd8452"], rot=0)
    for i, r in enumerate(counts.itertuples()):
        ax.text(i, r.images + 10, f"{r.train_ids}/{r.test_ids} ids", ha="center", fontsize=9)
    ax.set_ylabel("images")
    ax.set_ylim(0, counts["images"].max() * 1.12)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title("Images per aspect (kept vs. with accessories); train/test identities")
    fig.tight_layout()
    return fig


def images_per_id(proto: Protocol):
    """How many images each identity has, training vs test side."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for name, rows in (("train + val", proto.train + proto.val), ("test", proto.test)):
        counts = pd.Series([r.person_id for r in rows]).value_counts()
        ax.hist(counts.values, bins=range(1, counts.max() + 2), alpha=0.6, label=name)
    ax.set_xlabel("images per identity")
    ax.set_ylabel("identities")
    ax.legend()
    ax.set_title(f"{proto.aspect}: images per identity")
    fig.tight_layout()
    return fig


def image_grid(images: torch.Tensor, titles: Sequence[str], ncols: int = 6, title: str = ""):
    n = len(images)
    nrows = max(1, (n + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 1.7 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(_to_img(img))
        ax.set_title(t, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def cmc_curves(curves: dict[str, np.ndarray], max_rank: int = 20, title: str = "CMC"):
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, cmc in curves.items():
        k = min(max_rank, len(cmc))
        ax.plot(np.arange(1, k + 1), cmc[:k], marker="o", ms=3, label=name)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 101)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def mean_cmc(per_split: pd.DataFrame, protocol: str) -> np.ndarray:
    return np.mean(np.stack(per_split.loc[per_split["protocol"] == protocol, "cmc"].to_list()), 0)


def split_spread(per_split: pd.DataFrame, hue: str = "model", metric: str = "mAP"):
    """Per-split (and per-seed) values: how much the Monte Carlo draw alone moves the metric."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.boxplot(data=per_split, x="protocol", y=metric, hue=hue, ax=ax, fliersize=0)
    sns.stripplot(data=per_split, x="protocol", y=metric, hue=hue, dodge=True, ax=ax,
                  color="k", size=3, legend=False)
    ax.set_title(f"{metric} over the Monte Carlo splits")
    fig.tight_layout()
    return fig


def retrieval_examples(bank: FeatureBank, images: torch.Tensor, proto: Protocol, split: int = 0,
                       n_queries: int = 4, k: int = 5, seed: int = 0, title: str = ""):
    """Queries and their top-k gallery matches; green frame = same identity, red = different."""
    queries, gallery = proto.queries[split], proto.galleries[split]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(queries), size=min(n_queries, len(queries)), replace=False)
    gf, gl = bank.take(gallery)
    k = min(k, len(gallery))
    fig, axes = plt.subplots(len(picks), k + 1, figsize=(1.8 * (k + 1), 1.7 * len(picks)),
                             squeeze=False)
    for row, qi in zip(axes, picks):
        q = queries[qi]
        qf, _ = bank.take([q])
        order = torch.sort((qf @ gf.T)[0], descending=True, stable=True).indices[:k]
        row[0].imshow(_to_img(images[bank.index[q.image_name]]))
        row[0].set_title(f"query {q.person_id}", fontsize=8)
        for ax, gi in zip(row[1:], order.tolist()):
            g = gallery[gi]
            ax.imshow(_to_img(images[bank.index[g.image_name]]))
            ok = g.label == q.label
            for s in ax.spines.values():
                s.set_edgecolor("#2ca02c" if ok else "#d62728")
                s.set_linewidth(4)
            ax.set_title(("✓ " if ok else "✗ ") + g.person_id, fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title or f"Top-{k} retrievals, split {split}")
    fig.tight_layout()
    return fig


def training_curves(logs: pd.DataFrame, title: str = ""):
    """Per training phase, each loss term per epoch (mean over steps and seeds); then the
    learning rate of every parameter group. Term names and labels come from the loss registry."""
    phases = list(dict.fromkeys(logs["phase"]))
    fig, axes = plt.subplots(1, len(phases) + 1, figsize=(4.6 * (len(phases) + 1), 3.6), squeeze=False)
    axes = axes[0]
    for ax, phase in zip(axes, phases):
        d = logs[logs["phase"] == phase]
        terms = [c for c in ["total", *LOSS_TERMS] if c in d.columns and d[c].notna().any()]
        per_epoch = d.groupby("epoch")[terms].mean()
        for t in terms:
            ax.plot(per_epoch.index, per_epoch[t], label=term_label(t), lw=2 if t == "total" else 1.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (mean over steps and seeds)")
        ax.set_title(f"phase '{phase}'")
        ax.legend(fontsize=8)
    ax = axes[-1]
    offset = 0
    for phase in phases:
        d = logs[logs["phase"] == phase]
        lr_cols = [c for c in d.columns if c.startswith("lr_") and d[c].notna().any()]
        lr = d.groupby("epoch")[lr_cols].first()
        for c in lr_cols:
            ax.plot(lr.index + offset, lr[c], label=f"{phase}: {c[3:]}")
        offset += int(lr.index.max())
    ax.set_yscale("log")
    ax.set_xlabel("epoch (phases in sequence)")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate per parameter group")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def tsne_pair(before: torch.Tensor, after: torch.Tensor, labels: Sequence, max_ids: int = 20,
              seed: int = 0, titles: tuple[str, str] = ("before", "after")):
    """t-SNE of the same test images embedded by two models (first `max_ids` identities)."""
    from sklearn.manifold import TSNE
    labels = np.asarray(labels)
    keep_ids = sorted(set(labels.tolist()))[:max_ids]
    mask = np.isin(labels, keep_ids)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, feats, t in zip(axes, (before, after), titles):
        x = feats[torch.from_numpy(mask)].numpy()
        emb = TSNE(n_components=2, perplexity=min(30, max(5, len(x) // 4)), random_state=seed,
                   init="pca").fit_transform(x)
        codes = pd.Categorical(labels[mask]).codes
        ax.scatter(emb[:, 0], emb[:, 1], c=codes, cmap="tab20", s=14)
        ax.set_title(t)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"t-SNE of test embeddings ({len(keep_ids)} identities, colour = identity)")
    fig.tight_layout()
    return fig


def comparison_bars(table: pd.DataFrame, metric: str = "mAP", title: str = ""):
    """Mean ± sd (over splits and seeds) per stage and model, coloured by stage."""
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(table) + 1.5))
    labels = table["stage"] + " · " + table["model"]
    palette = dict(zip(sorted(table["stage"].unique()), sns.color_palette("deep")))
    ax.barh(labels, table[f"{metric}_mean"], xerr=table[f"{metric}_sd"], capsize=3,
            color=[palette[s] for s in table["stage"]])
    ax.set_xlabel(f"{metric} (%), mean ± sd")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def attention_overlay(images: torch.Tensor, maps, titles: Sequence[str], title: str = ""):
    """Attention maps over the patch grid drawn on their images (upsampled, bilinear).

    `images` uint8 (N, 3, H, W); `maps` (N, h, w), or a mapping label -> (N, h, w) drawn as one
    row per label (e.g. the composed and the fixed prompt); `titles` one per image.
    """
    rows = dict(maps) if isinstance(maps, dict) else {"": maps}
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n, 2.0 * len(rows)), squeeze=False)
    for r, (label, m) in enumerate(rows.items()):
        m = torch.as_tensor(m).float().cpu()
        for c in range(n):
            ax = axes[r, c]
            h, w = images[c].shape[1:]
            ax.imshow(_to_img(images[c]))
            ax.imshow(m[c].numpy(), cmap="jet", alpha=0.45, extent=(0, w, h, 0), interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
            if c == 0 and label:
                ax.set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
