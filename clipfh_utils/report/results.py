"""Metrics of an invocation, the comparison table that gathers them, earlier runs, published numbers.

The comparison shows the runs of the current invocation only; runs left in the same output folder
by earlier invocations are listed separately, with their dates, hashes and the config keys in
which they differ from the current run of the same experiment, never mixed in. Every metrics file
records the data and weights that produced it; tables built from them carry those columns, so a
number from synthetic data or random weights is labelled as such.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..config import REPO_ROOT, config_diff
from ..evaluation import METRICS, format_mean_sd, summarize
from ..runs import all_runs, folder_size, latest_invocation, read_manifest, run_dir

# 11k Hands numbers from the papers (reference notes section 7), kept as data, not code.
PUBLISHED_CSV = REPO_ROOT / "data" / "published_11k.csv"
PROTOCOL_LABELS = {"mbanet": "mbanet: gallery_all, trapezoid AP",
                   "clipfh": "clipfh: single-aspect gallery, standard AP"}
STAGE_ORDER = {"stage1": 0, "stage2": 1, "stage3": 2, "baseline": 3}


def published_table() -> pd.DataFrame:
    """The published numbers, each labelled with the protocol it was measured under."""
    df = pd.read_csv(PUBLISHED_CSV)
    unknown = set(df["protocol"]) - set(PROTOCOL_LABELS)
    if unknown:
        raise ValueError(f"{PUBLISHED_CSV}: unknown protocol(s) {sorted(unknown)}; "
                         f"use one of {sorted(PROTOCOL_LABELS)}")
    df["protocol"] = df["protocol"].map(PROTOCOL_LABELS)
    return df


def invocation_metrics(out: str | Path, invocation: str | None = None) -> list[dict]:
    """The metrics payloads the invocation recorded (the newest invocation by default)."""
    out = Path(out)
    inv = invocation or latest_invocation(out)
    if inv is None:
        return []
    entries = read_manifest(out, inv)["entries"].values()
    payloads = []
    for e in entries:
        f = out / e["metrics"]
        if f.exists():
            payloads.append(json.loads(f.read_text()))
    return sorted(payloads, key=lambda m: (STAGE_ORDER.get(m["stage"], 9), m["experiment"], m["mode"]))


def comparison_table(metrics: list[dict], protocol: str = "clipfh") -> pd.DataFrame:
    """One row per (stage, experiment, mode, dataset): mean ± sd over splits (and seeds)."""
    rows = []
    for m in metrics:
        per = pd.DataFrame(m["per_split"])
        per = per[per["protocol"] == protocol]
        if per.empty:
            continue
        s = summarize(per)
        train = m.get("train") or {}
        row = {"stage": m["stage"], "model": m["model"], "mode": m.get("mode", ""),
               "method": m.get("method_title", m["method"]),
               "backbone": m["backbone"], "run": m["run"], "dataset": m["dataset"]}
        row.update(format_mean_sd(s).iloc[0].to_dict())
        for metric in METRICS:
            row[f"{metric}_mean"] = float(s[("mean", metric)].iloc[0])
            row[f"{metric}_sd"] = float(s[("sd", metric)].iloc[0])
        embed = list((m.get("embed_images_per_s") or {}).values())
        row.update({"seeds": len(m["seeds"]), "splits": m["n_splits"],
                    "embed_img_s": sum(embed) / len(embed) if embed else None,
                    "train_s": sum(t["seconds"] for t in train.values()) if train else None,
                    "train_img_s": (sum(t["images_per_s"] for t in train.values()) / len(train)) if train else None,
                    "data": m.get("data", "?"), "weights": m.get("weights", "?")})
        rows.append(row)
    return pd.DataFrame(rows)


def earlier_runs(out: str | Path, invocation: str | None = None) -> pd.DataFrame:
    """Runs in the folder that the invocation did not use: date, hash, size, differing keys."""
    out = Path(out)
    current = invocation_metrics(out, invocation)
    current_names = {m["run"] for m in current}
    current_cfg = {m["experiment"]: m["config"] for m in current}
    rows = []
    for rec in all_runs(out):
        if rec["name"] in current_names:
            continue
        ref = current_cfg.get(rec["experiment"])
        diff = config_diff(ref, rec["config"]) if ref is not None else {}
        diff = {k: v for k, v in diff.items() if k != "name"}
        rows.append({"run": rec["name"], "experiment": rec["experiment"], "created": rec.get("created"),
                     "hash": rec["name"].rsplit("-", 1)[-1], "dataset": rec.get("dataset"),
                     "differs from current": ("; ".join(f"{k}: {b!r} (current {a!r})" for k, (a, b) in diff.items())
                                              if ref is not None else "no current run of this experiment"),
                     "size_MB": round(folder_size(run_dir(out, rec["name"])) / 2**20, 1)})
    return pd.DataFrame(rows)
