"""The train-set x test-set table of an invocation's transfer evaluations (pipeline/transfer.py).

Rows are models with the dataset they trained on ("none (zero-shot)" for zero-shot ones), columns
the test sets; a cell is mAP / Rank-1 (mean over splits and seeds) of one protocol, with the
number of test identities removed because the model saw them in training.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .results import comparison_table, recorded_payloads

ZERO_SHOT_TRAIN = "none (zero-shot)"


def invocation_transfers(out: str | Path, invocation: str | None = None) -> list[dict]:
    """The transfer metrics payloads the invocation recorded (the newest invocation by default)."""
    return recorded_payloads(out, invocation, "transfers")


def transfer_table(metrics: list[dict], protocol: str = "clipfh") -> pd.DataFrame:
    """One row per (model, train set, test set): the comparison table's columns (means, seed and
    split sd, bootstrap intervals, provenance) plus the train and test sets and how many seen identities were removed."""
    base = comparison_table(metrics, protocol)
    if base.empty:
        return base
    sets = pd.DataFrame([{"run": m["run"], "model": m["model"], "dataset": m["test_dataset"],
                          "train set": m["train_dataset"] or ZERO_SHOT_TRAIN, "test set": m["test_dataset"],
                          "removed ids": m["transfer"]["n_removed_ids"], "test ids": m["transfer"]["test_ids"]}
                         for m in metrics])
    return base.merge(sets, on=["run", "model", "dataset"]).sort_values(["model", "train set", "test set"],
                                                                        ignore_index=True)


def transfer_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """(model, train set) x test set; cells 'mAP / R1', '(-k ids)' where k seen identities were removed."""
    if table.empty:
        return table
    cell = table.apply(lambda r: f"{r['mAP_mean']:.1f} / {r['rank1_mean']:.1f}"
                       + (f" (-{r['removed ids']} ids)" if r["removed ids"] else ""), axis=1)
    return (table.assign(cell=cell).pivot(index=["model", "train set"], columns="test set", values="cell")
            .fillna("–").rename_axis(columns="test set → (mAP / R1)"))


def transfer_heatmap(table: pd.DataFrame, metric: str = "mAP", title: str = "", name: str = "transfer"):
    """The table's `metric` (mean) as a (model, train set) x test set heatmap, 0-100."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    grid = table.pivot_table(index=["model", "train set"], columns="test set", values=f"{metric}_mean")
    grid.index = [f"{model} · {train}" for model, train in grid.index]
    grid.columns = [c.replace("/", "/\n") for c in grid.columns]  # long test-set names side by side
    fig, ax = plt.subplots(figsize=(2.5 + 1.6 * grid.shape[1], 1.2 + 0.5 * grid.shape[0]))
    sns.heatmap(grid, annot=True, fmt=".1f", vmin=0, vmax=100, cmap="viridis", ax=ax,
                cbar_kws={"label": f"{metric} (%)"})
    ax.grid(False)  # the print style's grid would cross the cells
    ax.set_ylabel("model · train set")
    ax.set_xlabel("test set")
    ax.set_title(title or f"{metric}: trained on (rows) x tested on (columns)")
    fig.set_label(name)
    return fig
