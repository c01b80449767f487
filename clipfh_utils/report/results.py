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
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import REPO_ROOT, config_diff
from ..evaluation import METRICS, cmc_from_ranks, identity_bootstrap, paired_bootstrap, seed_split_sd
from ..evaluation.spread import excludes_zero
from ..runs import all_runs, folder_size, latest_invocation, read_manifest, run_dir, per_query_path
from . import display

# 11k Hands numbers from the papers (reference notes section 7), kept as data, not code.
PUBLISHED_CSV = REPO_ROOT / "data" / "published_11k.csv"
PROTOCOL_LABELS = {"mbanet": "mbanet: gallery_all, trapezoid AP",
                   "clipfh": "clipfh: single-aspect gallery, standard AP"}
STAGE_ORDER = {"stage1": 0, "stage2": 1, "stage3": 2, "baseline": 3}
# the identity bootstrap behind every interval: resamples and seed (fixed: tables are reproducible)
BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED = 2000, 0


def published_table() -> pd.DataFrame:
    """The published numbers, each labelled with the protocol it was measured under."""
    df = pd.read_csv(PUBLISHED_CSV)
    unknown = set(df["protocol"]) - set(PROTOCOL_LABELS)
    if unknown:
        raise ValueError(f"{PUBLISHED_CSV}: unknown protocol(s) {sorted(unknown)}; "
                         f"use one of {sorted(PROTOCOL_LABELS)}")
    df["protocol"] = df["protocol"].map(PROTOCOL_LABELS)
    return df


def recorded_payloads(out: str | Path, invocation: str | None, section: str) -> list[dict]:
    """The metrics payloads listed in one section of an invocation's manifest ("entries": the
    experiments' own evaluations, "transfers": cross-dataset ones), the newest invocation by
    default, each with "metrics_file" (its path, not stored in the file: the per-query results
    lie beside it)."""
    out = Path(out)
    inv = invocation or latest_invocation(out)
    if inv is None:
        return []
    payloads = []
    for e in read_manifest(out, inv).get(section, {}).values():
        f = out / e["metrics"]
        if f.exists():
            payloads.append({**json.loads(f.read_text()), "metrics_file": str(f), "metrics_path": e["metrics"]})
    return payloads


def invocation_metrics(out: str | Path, invocation: str | None = None) -> list[dict]:
    """The metrics payloads the invocation recorded (the newest invocation by default).

    Each payload gets "metrics_file" (its path, not stored in the file) so that the per-query
    results beside it can be found. When the invocation covers several datasets, each "model"
    label gets " · <dataset>" so that every table and figure row names one model on one dataset."""
    payloads = recorded_payloads(out, invocation, "entries")
    if len({m["dataset"] for m in payloads}) > 1:  # the same experiment on several datasets: say which
        for m in payloads:
            m["model"] = f"{m['model']} · {m['dataset']}"
    return sorted(payloads, key=lambda m: (STAGE_ORDER.get(m["stage"], 9), m["experiment"], m["mode"]))


def per_query(m: dict) -> pd.DataFrame | None:
    """The per-query results (protocol, split, query, person_id, rank, ap, seed) of a payload."""
    f = m.get("metrics_file")
    if not f:
        return None
    path = per_query_path(f)
    if not path.exists():
        return None
    key = (path, path.stat().st_mtime_ns)  # a re-evaluation rewrites the file: read it again
    if key not in _PER_QUERY:
        _PER_QUERY[key] = pd.read_csv(path, dtype={"person_id": str, "query": str})
    return _PER_QUERY[key]


_PER_QUERY: dict[tuple[Path, int], pd.DataFrame] = {}


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def comparison_table(metrics: list[dict], protocol: str = "clipfh", n_boot: int = BOOTSTRAP_SAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """One row per (stage, experiment, mode, dataset): per metric the mean, the sd between
    training seeds and the sd between splits (ddof 1), and a 95 % bootstrap interval over test
    identities (`n_boot` resamples, seeded); training time and speed."""
    rows = []
    for m in metrics:
        per = pd.DataFrame(m["per_split"])
        per = per[per["protocol"] == protocol]
        if per.empty:
            continue
        sds = seed_split_sd(per)
        pq = per_query(m)
        pq = pq[pq["protocol"] == protocol] if pq is not None else None
        train = m.get("train") or {}
        row = {"stage": m["stage"], "model": m["model"], "experiment": m.get("experiment", m["model"]),
               "variant": m.get("variant") or "", "mode": m.get("mode", ""),
               "benchmark": benchmark(m["dataset"], m.get("aspect") or ""), "method": m.get("method_title", m["method"]),
               "backbone": m["backbone"], "run": m["run"], "dataset": m["dataset"], "protocol": protocol}
        for metric in METRICS:
            row[f"{metric}_mean"] = float(sds.loc[metric, "mean"])
            row[f"{metric}_seed_sd"] = float(sds.loc[metric, "seed_sd"])
            row[f"{metric}_split_sd"] = float(sds.loc[metric, "split_sd"])
            ci = identity_bootstrap(pq, metric, n_boot, seed) if pq is not None and len(pq) else None
            row[f"{metric}_ci_lo"] = ci.lo if ci else float("nan")
            row[f"{metric}_ci_hi"] = ci.hi if ci else float("nan")
            row[metric] = (f"{display.metric(row[f'{metric}_mean'])} "  # as shown
                           f"{display.interval(row[f'{metric}_ci_lo'], row[f'{metric}_ci_hi'])}")
        row.update({"seeds": int(sds["n_seeds"].iloc[0]), "splits": m["n_splits"],
                    "test_ids": per_query_ids(pq), "n_boot": n_boot, "boot_seed": seed,
                    "train_s": _mean(t["seconds"] for t in train.values()),
                    "train_img_s": _mean(t["images_per_s"] for t in train.values()),
                    "embed_img_s": _mean((m.get("embed_images_per_s") or {}).values()),
                    "data": m.get("data", "?"), "weights": m.get("weights", "?"),
                    "real_data": m.get("real_data", False), "pretrained": m.get("pretrained", False),
                    "split_seed": m.get("split_seed"),
                    "metrics_file": m.get("metrics_path") or m.get("metrics_file")})  # relative: no machine paths
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out.insert(2, "label", display.model_labels(out.to_dict("records")))
    return out


def per_query_ids(pq: pd.DataFrame | None) -> int | None:
    return int(pq["person_id"].nunique()) if pq is not None and len(pq) else None


def _setting(v: object) -> object:
    """A config value in a table: "—" where it does not apply, 2 rather than 2.0 (a merge with
    missing values turns integer columns into floats)."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "—"
    return f"{v:g}" if isinstance(v, float) else v  # as text: pandas would make 0 next to 0.5 a 0.0


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or pd.isna(x) else f"{x:.{digits}f}"


METRIC_LABELS = {"mAP": "mAP", "rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10"}  # the headline first


def display_table(table: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The comparison as a reader sees it: mean [95 % interval] per metric, the two sds of mAP
    and Rank-1, n, time and speed (column meanings: `table_note`). `extra`: columns of `table`
    shown after the backbone (e.g. an ablation's settings)."""
    out = pd.DataFrame({"model": _labels(table), "stage": table["stage"].map(lambda s: display.STAGE_LABELS.get(s, s)),
                        "backbone": table["backbone"]})
    for c in extra:
        out[c] = table[c].map(_setting)
    for m, label in METRIC_LABELS.items():
        out[f"{label} (%)"] = table[m]
    for m in ("mAP", "rank1"):
        out[f"{METRIC_LABELS[m]} sd seeds"] = table[f"{m}_seed_sd"].map(display.sd)
        out[f"{METRIC_LABELS[m]} sd splits"] = table[f"{m}_split_sd"].map(display.sd)
    out["n (seeds × splits)"] = [f"{a} × {b}" for a, b in zip(table["seeds"], table["splits"])]
    out["training s/seed"] = table["train_s"].map(lambda v: _fmt(v, 0))
    out["training img/s"] = table["train_img_s"].map(lambda v: _fmt(v, 0))
    out["embedding img/s"] = table["embed_img_s"].map(lambda v: _fmt(v, 0))
    return out


def _labels(table: pd.DataFrame) -> pd.Series:
    """The readable model labels of a comparison table (internal names where it has none)."""
    return table["label"] if "label" in table else table["model"]


def table_note(table: pd.DataFrame) -> str:
    """What the comparison table's columns mean, with this table's numbers (ids, resamples)."""
    ids = sorted({int(v) for v in table["test_ids"].dropna()}) if "test_ids" in table else []
    n_ids = " / ".join(map(str, ids)) or "the"
    n_boot = int(table["n_boot"].iloc[0]) if len(table) else BOOTSTRAP_SAMPLES
    seed = int(table["boot_seed"].iloc[0]) if len(table) else BOOTSTRAP_SEED
    return (f"Mean over training seeds and Monte Carlo splits, in %. [a, b]: 95 % percentile bootstrap "
            f"interval over the {n_ids} test identities ({n_boot} resamples, seed {seed}; identities drawn "
            "with replacement together with all their queries, gallery fixed). sd seeds: sd between training "
            "seeds of each seed's mean over the splits; sd splits: mean over seeds of the sd over the splits "
            "(both ddof 1; — with one seed). The splits reuse the same test identities, so the split sd "
            "understates the uncertainty of a new set of people; the bootstrap interval is the one to "
            "quote. n = seeds × splits behind each mean. Training time and images/s: mean per seed; "
            "embedding images/s: evaluation feature extraction.")


def paired_table(metrics: list[dict], protocol: str = "clipfh", same_backbone: bool = True,
                 n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """B − A in mAP and Rank-1 with paired bootstrap intervals, for every two experiments on the
    same dataset and splits (and backbone, with `same_backbone`); A comes first in `metrics`
    (the earlier stage). "B better" needs the whole interval above zero."""
    items = [(m, per_query(m)) for m in metrics]
    items = [(m, pq[pq["protocol"] == protocol]) for m, pq in items if pq is not None]
    keys = ("dataset", "split_seed", "n_splits") + (("backbone",) if same_backbone else ())
    rows = []
    for i, (a, qa) in enumerate(items):
        for b, qb in items[i + 1:]:
            same = all(a.get(k) == b.get(k) for k in keys)
            if not same or qa.empty or qb.empty:
                continue
            row = {"A": a["model"], "B": b["model"], "stage A": a["stage"], "stage B": b["stage"],
                   "backbone": a["backbone"] if a["backbone"] == b["backbone"] else f"{a['backbone']} / {b['backbone']}",
                   "protocol": protocol}
            for metric in ("mAP", "rank1"):
                d = paired_bootstrap(qa, qb, metric, n_boot, seed)
                row.update({f"d_{metric}": d.estimate, f"d_{metric}_lo": d.lo, f"d_{metric}_hi": d.hi})
            lo, hi = row["d_mAP_lo"], row["d_mAP_hi"]
            row["verdict"] = ("B better" if lo > 0 else "A better") if excludes_zero(lo, hi) else "not resolved"
            rows.append(row)
    return pd.DataFrame(rows)


def display_pairs(pairs: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paired differences as shown: A and B by their labels in `table` (the comparison they
    come from), differences and intervals in points with 1 decimal."""
    names = dict(zip(table["model"], _labels(table))) if table is not None and len(table) else {}
    return pd.DataFrame({
        "A": pairs["A"].map(lambda m: names.get(m, m)), "B": pairs["B"].map(lambda m: names.get(m, m)),
        "backbone": pairs["backbone"],
        "ΔmAP (B − A)": pairs["d_mAP"].map(display.signed),
        "ΔmAP 95 % interval": [display.interval(lo, hi) for lo, hi in zip(pairs["d_mAP_lo"], pairs["d_mAP_hi"])],
        "ΔRank-1 (B − A)": pairs["d_rank1"].map(display.signed),
        "ΔRank-1 95 % interval": [display.interval(lo, hi) for lo, hi in zip(pairs["d_rank1_lo"], pairs["d_rank1_hi"])],
        "mAP verdict": pairs["verdict"]})


PAIRS_NOTE = ("Differences in percentage points, B minus A, on the same splits (each experiment "
              "averaged over its seeds). Intervals: paired 95 % bootstrap over test identities (the same "
              "resampled identities for A and B). 'B better' / 'A better' only when the whole mAP interval "
              "lies on one side of zero.")


def benchmark(dataset_key: str, aspect: str) -> str:
    """The published table's `aspect` for a dataset: the 11k aspect ("dorsal right"; real or
    synthetic 11k hands alike) or "HD dorsal" for the HD dataset."""
    kind, _, slug_ = dataset_key.partition("/")
    aspect = aspect or slug_.replace("_", " ")  # payloads before "aspect" was recorded
    return f"HD {aspect}" if kind.startswith("hd") else aspect


def published_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark (11k aspect, HD) of the invocation, the published numbers beside ours, each
    labelled with its protocol; dorsal right when the table is empty."""
    pub = published_table()
    rows = []
    for bench in sorted(set(table["benchmark"]), key=_bench_rank) if len(table) else ["dorsal right"]:
        rows += [{"benchmark": bench, "protocol": r.protocol, "method": r.method, "Rank-1 (%)": f"{r.rank1:.2f}",
                  "mAP (%)": f"{r.mAP:.2f}", "source": f"published: {r.source}"}
                 for r in pub[pub["aspect"] == bench].itertuples()]
        rows += [{"benchmark": bench, "protocol": PROTOCOL_LABELS[r.protocol], "method": f"{r.model} (this run)",
                  "Rank-1 (%)": display.metric(r.rank1_mean), "mAP (%)": display.metric(r.mAP_mean),
                  "source": ("real images" if r.real_data else "SYNTHETIC images") + " · "
                  + ("pretrained" if r.pretrained else "random-init") + " weights"}
                 for r in table[table["benchmark"] == bench].itertuples()] if len(table) else []
    return pd.DataFrame(rows).sort_values(["benchmark", "protocol"], kind="stable",
                                          key=lambda c: c.map(_bench_rank) if c.name == "benchmark" else c
                                          ).reset_index(drop=True)


BENCHMARK_ORDER = ("dorsal right", "dorsal left", "palmar right", "palmar left")  # the study's first


def _bench_rank(bench: str) -> tuple[int, str]:
    return (BENCHMARK_ORDER.index(bench), "") if bench in BENCHMARK_ORDER else (len(BENCHMARK_ORDER), bench)


def of_stages(metrics: list[dict], *stages: str) -> list[dict]:
    """The payloads of the given stages (all of them without stages), in table order."""
    return [m for m in metrics if not stages or m["stage"] in stages]


def per_split_frame(metrics: list[dict]) -> pd.DataFrame:
    """Every payload's per-split rows (protocol, split, seed, metrics) with a `model` column (its
    readable label; the internal name in `experiment`)."""
    labels = display.model_labels(metrics)  # figures name models as the tables do
    frames = [pd.DataFrame(m["per_split"]).assign(model=label, experiment=m["model"], stage=m["stage"])
              for m, label in zip(metrics, labels)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def cmc_curves(metrics: list[dict], protocol: str = "clipfh", max_rank: int = 20) -> dict[str, np.ndarray]:
    """model label -> (seeds × splits, max_rank) CMC curves in percent, from the per-query ranks."""
    out = {}
    for m, label in zip(metrics, display.model_labels(metrics)):  # keyed by the tables' labels
        pq = per_query(m)
        if pq is None:
            continue
        pq = pq[pq["protocol"] == protocol]
        groups = pq.groupby(["seed", "split"] if "seed" in pq else ["split"])["rank"]
        out[label] = np.stack([cmc_from_ranks(r.to_numpy(), max_rank) for _, r in groups])
    return out


def per_seed_table(m: dict) -> pd.DataFrame:
    """One experiment per training seed and protocol: mean and sd over the splits."""
    per = pd.DataFrame(m["per_split"])
    rows = []
    for (proto, seed), d in per.groupby(["protocol", "seed"], sort=True):
        sds = seed_split_sd(d)
        row = {"protocol": proto, "seed": seed}
        for metric, label in METRIC_LABELS.items():
            row[f"{label} (%)"] = f"{display.metric(sds.loc[metric, 'mean'])} ± {display.sd(sds.loc[metric, 'split_sd'])}"
        rows.append(row)
    return pd.DataFrame(rows)


PER_SEED_NOTE = ("Mean ± sd over the Monte Carlo splits (ddof 1) for each training seed: the seed-to-seed "
                 "differences here are what the comparison table's 'sd seeds' summarises.")


def best_row(table: pd.DataFrame, metric: str = "mAP") -> pd.Series:
    return table.loc[table[f"{metric}_mean"].idxmax()]


def like_for_like(table: pd.DataFrame) -> str:
    """Which of this run's numbers may be compared with which published ones."""
    if table.empty:
        return "No results of this invocation to compare."
    real = bool(table["real_data"].astype(bool).all())
    pretrained = bool(table["pretrained"].astype(bool).all())
    if not real or not pretrained:
        why = " and ".join((["the images are synthetic"] if not real else [])
                           + (["the weights are random"] if not pretrained else []))
        return (f"**No comparison with a published number is like-for-like in this invocation:** {why}. "
                "The table only shows where each number sits and under which protocol it was measured.")
    pub = published_table()
    lines = ["Like-for-like comparisons (same benchmark, same protocol, real images, pretrained weights):"]
    for bench in sorted(set(table["benchmark"]), key=_bench_rank):
        here = pub[pub["aspect"] == bench]
        if here.empty:
            lines.append(f"- {bench}: no published number to compare with.")
        for proto, label in PROTOCOL_LABELS.items():
            ours = sorted(table.loc[(table["protocol"] == proto) & (table["benchmark"] == bench), "model"])
            theirs = sorted(here.loc[here["protocol"] == label, "method"])
            if ours and theirs:
                lines.append(f"- {bench}, {label}: ours ({', '.join(ours)}) vs {', '.join(theirs)}.")
    lines.append("Numbers across benchmarks or protocols are different measurements and are never compared.")
    return "\n".join(lines)


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


def concat_tables(tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """The comparison tables of several protocols ({protocol: (table, pairs)}) in one frame."""
    frames = [t for t, _ in tables.values() if not t.empty]  # (pandas warns on concatenating empties)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def payload_of(metrics: list[dict], model: str) -> dict:
    return next(m for m in metrics if m["model"] == model)
