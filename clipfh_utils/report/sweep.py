"""A sweep's results in one table (the swept keys as columns) and one plot, written beside its manifest."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..atomic import atomic_path, atomic_write_text
from ..runs import invocation_dir
from .export import Provenance, save_figure
from .results import comparison_table, invocation_metrics


def sweep_table(out: str | Path, inv: str, keys: list[str], protocol: str = "clipfh") -> pd.DataFrame:
    """One row per (variant, experiment, mode): swept values, mean ± sd, the run it came from."""
    rows = []
    for m in invocation_metrics(out, inv):
        if not m.get("variant"):
            continue
        row = comparison_table([m], protocol)
        if not row.empty:
            rows.append(row.assign(experiment=m["experiment"], mode=m["mode"],
                                   **{k: [m["variant"].get(k)] for k in keys}))
    if not rows:
        return pd.DataFrame()
    cols = [*keys, "experiment", "mode", "rank1", "rank5", "mAP", "mAP_mean", "mAP_seed_sd", "mAP_split_sd",
            "seeds", "splits", "run"]
    return pd.concat(rows, ignore_index=True)[cols].sort_values(["experiment", "mode", *keys], kind="stable")


def sweep_plot(table: pd.DataFrame, keys: list[str], protocol: str = "clipfh"):
    """mAP (mean, bars: sd between training seeds) against the first swept key; a line per other
    setting. Without a second seed there is no seed sd and no bar."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    x = keys[0]
    group_cols = ["experiment", "mode", *keys[1:]]
    for label, g in table.groupby(group_cols, sort=False, dropna=False):
        label = label if isinstance(label, tuple) else (label,)
        name = " ".join(str(v) for v in label[:2] if v) + "".join(f", {k}={v}" for k, v in zip(keys[1:], label[2:]))
        g = g.sort_values(x)
        xs = list(range(len(g))) if g[x].dtype == object else g[x]
        sd = g["mAP_seed_sd"]
        ax.errorbar(xs, g["mAP_mean"], yerr=None if sd.isna().all() else sd.fillna(0), marker="o", capsize=3,
                    label=name)
        if g[x].dtype == object:
            ax.set_xticks(xs, [str(v) for v in g[x]])
    ax.set_xlabel(x)
    ax.set_ylabel(f"mAP (%), {protocol} protocol\nmean ± sd between seeds")
    ax.set_title("Sweep")
    ax.legend(fontsize=8)
    return fig


def write_sweep_report(out: str | Path, inv: str, keys: list[str]) -> Path | None:
    """sweep.csv, sweep.txt and sweep.{pdf,svg,png} in the invocation's folder; returns the CSV path."""
    table = sweep_table(out, inv, keys)
    if table.empty:
        return None
    d = invocation_dir(Path(out), inv)
    with atomic_path(d / "sweep.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic_write_text(d / "sweep.txt", table.drop(columns=["mAP_mean"]).to_string(index=False) + "\n")
    save_figure(sweep_plot(table, keys), d, "sweep", Provenance.of_invocation(Path(out), inv, "sweep"))
    print(table.drop(columns=["mAP_mean", "run"]).to_string(index=False), flush=True)
    return d / "sweep.csv"

