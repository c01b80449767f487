"""Metrics files of a run, the comparison table that gathers them, and the published numbers.

Every metrics file records the data and the weights that produced it; tables built from them
carry those columns, so a number from synthetic data or random weights is labelled as such.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .atomic import atomic_path, atomic_write_json
from .evaluation import METRICS, format_mean_sd, summarize

# 11k Hands, from the papers (reference notes section 7); Rank-1 / mAP in percent.
PUBLISHED: list[dict] = [
    {"method": "MBA-Net (Baisa et al. 2022)", "aspect": "dorsal right", "protocol": "mbanet: gallery_all, trapezoid AP", "rank1": 97.45, "mAP": 97.98},
    {"method": "ABD-Net (as reported by MBA-Net)", "aspect": "dorsal right", "protocol": "mbanet: gallery_all, trapezoid AP", "rank1": 95.89, "mAP": 96.76},
    {"method": "RGA-Net (as reported by MBA-Net)", "aspect": "dorsal right", "protocol": "mbanet: gallery_all, trapezoid AP", "rank1": 94.77, "mAP": 95.67},
    {"method": "GPA-Net (Baisa et al. 2022)", "aspect": "dorsal right", "protocol": "mbanet: gallery_all, trapezoid AP", "rank1": 94.8, "mAP": 95.72},
    {"method": "MBA-Net (Baisa et al. 2022)", "aspect": "dorsal left", "protocol": "mbanet: gallery_all, trapezoid AP", "rank1": 96.71, "mAP": 97.41},
    {"method": "MBA-Net (Baisa et al. 2022)", "aspect": "palmar right", "protocol": "mbanet: gallery_all, trapezoid AP", "rank1": 98.05, "mAP": 98.42},
    {"method": "MBA-Net (Baisa et al. 2022)", "aspect": "palmar left", "protocol": "mbanet: gallery_all, trapezoid AP", "rank1": 97.42, "mAP": 97.84},
    {"method": "Dissertation Stage 1 ViT-B/16 zero-shot", "aspect": "dorsal right", "protocol": "clipfh: single-aspect gallery, standard AP", "rank1": 71.42, "mAP": 78.98},
    {"method": "Dissertation Stage 1 RN50 zero-shot", "aspect": "dorsal right", "protocol": "clipfh: single-aspect gallery, standard AP", "rank1": 68.61, "mAP": 75.78},
    {"method": "Dissertation Stage 2 ViT-B/16 (v5)", "aspect": "dorsal right", "protocol": "clipfh: single-aspect gallery, standard AP", "rank1": 88.18, "mAP": 92.2},
    {"method": "Dissertation Stage 2 RN50 (v1)", "aspect": "dorsal right", "protocol": "clipfh: single-aspect gallery, standard AP", "rank1": 57.64, "mAP": 67.07},
    {"method": "Dissertation Stage 3 ViT-B/16 (v8)", "aspect": "dorsal right", "protocol": "clipfh: single-aspect gallery, standard AP", "rank1": 85.86, "mAP": 89.99},
    {"method": "Dissertation Stage 3 RN50 (v3)", "aspect": "dorsal right", "protocol": "clipfh: single-aspect gallery, standard AP", "rank1": 68.99, "mAP": 76.28},
]


def published_table() -> pd.DataFrame:
    return pd.DataFrame(PUBLISHED)


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
