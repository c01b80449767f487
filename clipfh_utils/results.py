"""Metrics files of a run, the comparison table that gathers them, and the published numbers.

Every metrics file records the data and the weights that produced it; tables built from them
carry those columns, so a number from synthetic data or random weights is labelled as such.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .atomic import atomic_path, atomic_write_json
from .config import REPO_ROOT
from .evaluation import METRICS, format_mean_sd, summarize

# 11k Hands numbers from the papers (reference notes section 7), kept as data, not code.
PUBLISHED_CSV = REPO_ROOT / "data" / "published_11k.csv"
PROTOCOL_LABELS = {"mbanet": "mbanet: gallery_all, trapezoid AP",
                   "clipfh": "clipfh: single-aspect gallery, standard AP"}


def published_table() -> pd.DataFrame:
    """The published numbers, each labelled with the protocol it was measured under."""
    df = pd.read_csv(PUBLISHED_CSV)
    unknown = set(df["protocol"]) - set(PROTOCOL_LABELS)
    if unknown:
        raise ValueError(f"{PUBLISHED_CSV}: unknown protocol(s) {sorted(unknown)}; "
                         f"use one of {sorted(PROTOCOL_LABELS)}")
    df["protocol"] = df["protocol"].map(PROTOCOL_LABELS)
    return df


def metrics_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "metrics"


def save_metrics(run_dir: str | Path, stage: str, model: str, per_split: pd.DataFrame,
                 info: dict) -> Path:
    """Write `<stage>__<model>.json` (+ .csv of the per-split rows) under run_dir/metrics."""
    d = metrics_dir(run_dir)
    stem = f"{stage}__{model}".replace("/", "-").replace(" ", "_")
    summary = summarize(per_split)
    payload = {
        "stage": stage, "model": model, **info,
        "per_split": per_split.to_dict(orient="records"),
        "summary": {p: {m: {"mean": float(summary.loc[p, ("mean", m)]),
                            "sd": float(summary.loc[p, ("sd", m)])} for m in METRICS}
                    for p in summary.index},
    }
    atomic_write_json(d / f"{stem}.json", payload)
    with atomic_path(d / f"{stem}.csv") as tmp:
        per_split.to_csv(tmp, index=False)
    return d / f"{stem}.json"


def load_metrics(run_dir: str | Path) -> list[dict]:
    files = sorted(metrics_dir(run_dir).glob("*.json"))
    return [json.loads(f.read_text()) for f in files]


def comparison_table(run_dir: str | Path, protocol: str = "clipfh") -> pd.DataFrame:
    """One row per (stage, model): mean ± sd over splits (and seeds), with data and weights."""
    rows = []
    for m in load_metrics(run_dir):
        per = pd.DataFrame(m["per_split"])
        per = per[per["protocol"] == protocol]
        if per.empty:
            continue
        s = summarize(per)
        row = {"stage": m["stage"], "model": m["model"], "backbone": m.get("backbone", m["model"])}
        row.update(format_mean_sd(s).iloc[0].to_dict())
        row.update({"mAP_mean": float(s[("mean", "mAP")].iloc[0]),
                    "mAP_sd": float(s[("sd", "mAP")].iloc[0]),
                    "rank1_mean": float(s[("mean", "rank1")].iloc[0]),
                    "rank1_sd": float(s[("sd", "rank1")].iloc[0]),
                    "n": int(s[("n", "")].iloc[0]), "data": m.get("data", "?"),
                    "weights": m.get("weights", "?")})
        rows.append(row)
    return pd.DataFrame(rows)
