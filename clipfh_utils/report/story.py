"""The "reading the results" text at the end of each notebook, written from the numbers.

Each function returns Markdown: which model is best and by how much, whether a difference is
larger than the spread between training seeds, whether its bootstrap interval excludes zero, and,
always first when it applies, that the data are synthetic or the weights random.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..evaluation.spread import excludes_zero
from .display import interval, metric, sd, signed
from .results import PROTOCOL_LABELS, best_row, concat_tables
from .style import STAGE_NAMES


def caveat(real_data: bool, random_weights: Sequence[str] = ()) -> str:
    """The sentence that keeps a demo number from being read as a hand-identification result."""
    parts = []
    if not real_data:
        parts.append("the images are **synthetic** hands")
    if random_weights:
        parts.append("the backbones (" + ", ".join(sorted(set(random_weights))) + ") start from **random "
                     "weights**, not pretrained CLIP")
    if not parts:
        return ""
    return ("**These numbers are not a hand-identification result:** " + " and ".join(parts)
            + ". They show that the pipeline runs end to end and which way the comparisons point on this data.")


def _join(parts: list[str]) -> str:
    return " ".join(p for p in parts if p)


def _caveat_of(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    random_w = table.loc[~table["pretrained"].astype(bool), "backbone"].tolist()
    return caveat(bool(table["real_data"].astype(bool).all()), random_w)


def _label(row: pd.Series) -> str:
    """The model's name as its table row shows it (the internal name where the table has no labels)."""
    return row["label"] if isinstance(row.get("label"), str) else row.get("model", row.name)


def _names(table: pd.DataFrame) -> dict[str, str]:
    """internal model name -> the label its table row shows."""
    return dict(zip(table["model"], table["label"] if "label" in table else table["model"]))


def _shown(x: float) -> float:
    """A metric as its table cell shows it (1 decimal): differences quoted in the text are
    differences of the cells a reader sees."""
    return float(metric(x))


def _best_numbers(row: pd.Series) -> str:
    return (f"mAP {metric(row['mAP_mean'])} % {interval(row['mAP_ci_lo'], row['mAP_ci_hi'])}, "
            f"Rank-1 {metric(row['rank1_mean'])} %")


def _pair_sentence(p: pd.Series, table: pd.DataFrame) -> str:
    """One paired difference and one conclusion: B better / A better only when the interval
    excludes 0 and the difference is larger than the seed-to-seed spread; otherwise not
    resolved, with the reason."""
    rows = table.set_index("model")
    names = {m: _names(table).get(m, m) for m in (p["A"], p["B"])}
    sds = [float(sd(rows.loc[m, "mAP_seed_sd"])) for m in (p["A"], p["B"])
           if m in rows.index and pd.notna(rows.loc[m, "mAP_seed_sd"])]
    d, lo, hi = float(signed(p["d_mAP"])), p["d_mAP_lo"], p["d_mAP_hi"]
    excludes = excludes_zero(lo, hi)
    winner = names[p["B"]] if d > 0 else names[p["A"]]
    larger = max(sds) if sds else None
    if not excludes:
        verdict = "not resolved: the interval includes 0"
    elif larger is None:
        verdict = (f"**{winner}** is better on these test identities (the interval excludes 0); with one "
                   "training seed per model, how much another seed would move it is not measured")
    elif abs(d) > larger:
        verdict = (f"**{winner}** is better: the interval excludes 0 and the difference is "
                   f"{abs(d) / larger:.1f}× the larger seed sd ({sd(larger)})" if larger > 0 else
                   f"**{winner}** is better: the interval excludes 0 and the seed sd is 0")
    else:
        verdict = (f"not resolved: the interval excludes 0, but the difference is within the seed-to-seed "
                   f"spread (larger seed sd {sd(larger)}), so another training seed could reverse it")
    return (f"- **{names[p['B']]}** vs **{names[p['A']]}** ({p['backbone']}): {signed(p['d_mAP'])} mAP points "
            f"{interval(lo, hi)}, {signed(p['d_rank1'])} Rank-1 points; {verdict}.")


def read_comparison(table: pd.DataFrame, pairs: pd.DataFrame, protocol_label: str = "",
                    with_caveat: bool = True) -> str:
    """Best model overall, and each paired difference with its interval and the seed sd."""
    if table.empty:
        return "No results in this invocation yet."
    lines = [_caveat_of(table) if with_caveat else "", ""]
    groups = list(table.groupby("dataset", sort=False)) if "dataset" in table else [("", table)]
    for dataset, t in groups:  # a best model per dataset: numbers on different test sets do not compare
        best = best_row(t)
        where = f" on {dataset}" if len(groups) > 1 else ""
        lines.append(f"On the {protocol_label or best['protocol']} protocol{where} the best model is "
                     f"**{_label(best)}** ({STAGE_NAMES.get(best['stage'], best['stage'])}, {best['backbone']}): "
                     f"{_best_numbers(best)}.")
        others = t.drop(index=best.name)
        if len(others):
            second = others.loc[others["mAP_mean"].idxmax()]
            gap = _shown(best["mAP_mean"]) - _shown(second["mAP_mean"])
            lines.append(f"The next best, **{_label(second)}**, is {gap:.1f} mAP points lower.")
    if not pairs.empty:
        lines += ["", "Paired differences (same splits, same resampled identities):"]
        lines += [_pair_sentence(p, table) for _, p in pairs.iterrows()]
    return "\n".join(lines).strip()


def read_zero_shot(table: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """Stage 1: which backbone is better zero-shot, and whether the split spread could explain it."""
    if table.empty:
        return "No zero-shot results."
    best = best_row(table)
    names = _names(table)
    lines = [_caveat_of(table), "", f"Zero-shot, **{best['backbone']}** ranks best: mAP {metric(best['mAP_mean'])} % "
             f"{interval(best['mAP_ci_lo'], best['mAP_ci_hi'])} (sd over the splits {sd(best['mAP_split_sd'])}), "
             f"Rank-1 {metric(best['rank1_mean'])} %"
             + (f" (sd over the splits {sd(best['rank1_split_sd'])})" if "rank1_split_sd" in best else "") + "."]
    for _, p in pairs.iterrows():
        lines.append(f"Between **{names.get(p['A'], p['A'])}** and **{names.get(p['B'], p['B'])}** the mAP difference "
                     f"is {signed(p['d_mAP'])} points {interval(p['d_mAP_lo'], p['d_mAP_hi'])}: "
                     + ("the interval excludes 0." if excludes_zero(p["d_mAP_lo"], p["d_mAP_hi"]) else
                        "the interval includes 0, so the two backbones are not separated by these data."))
    lines.append("Zero-shot models are not trained, so there is no seed-to-seed spread; the split sd only "
                 "reflects the query/gallery draw over the same test identities.")
    return "\n".join(lines).strip()


def read_data(summary: dict, real_data: bool, n_splits: int) -> str:
    """Notebook 00: the protocol's counts in one paragraph."""
    text = (f"The protocol keeps **{summary['train_ids']}** training identities ({summary['train_images']} training "
            f"and {summary['val_images']} validation images) and **{summary['test_ids']}** test identities "
            f"({summary['test_images']} images). Each of the {n_splits} splits uses "
            f"{summary['queries_per_split']} queries against {summary['gallery_per_split']} gallery images "
            f"({summary['gallery_all_per_split']} with the other aspects' distractors). Every split draws from the "
            "same test identities: splits vary which image is the gallery, not who is tested.")
    return _join([caveat(real_data) if not real_data else "", "\n\n" + text]).strip()


def read_attention(table: pd.DataFrame, area: pd.Series, real_data: bool, random_weights: Sequence[str] = ()) -> str:
    """Notebook 05: for each map, the hand region it over-weights most relative to the region's
    area and its background share; then, per backbone and map, how training moved it (each later
    stage against the zero-shot model). `table` has model, stage, backbone, map and one column per
    region (%), as `explain.MapSource.region_table` gives it; `area` the regions' area shares."""
    regions = list(area.index)
    hand = [r for r in regions if r != "background"]
    lines = [caveat(real_data, random_weights), ""]
    table = table.copy()
    table[regions] = table[regions].astype(float).round(1)  # the numbers as the table shows them
    area = area.astype(float).round(1)
    for label, row in table.iterrows():
        ratio = (row[hand].astype(float) / area[hand].replace(0, np.nan)).dropna()
        if ratio.empty:
            continue
        top = ratio.idxmax()
        lines.append(f"- **{label}**: {row[top]:.1f} % on the {top} ({ratio[top]:.1f}× its {area[top]:.1f} % of "
                     f"the image), {row['background']:.1f} % on the background ({area['background']:.1f} % of the image).")
    moves = []
    for (backbone, method), g in table.groupby(["backbone", "map"], sort=False):
        base = g[g["stage"] == "stage1"]
        for _, later in g[g["stage"] != "stage1"].iterrows():
            for _, b in base.iterrows():
                shift = later[hand].astype(float) - b[hand].astype(float)
                region = shift.abs().idxmax()
                moves.append(f"- {method} on {backbone}: **{later['model']}** puts {later['background']:.1f} % on the "
                             f"background against {b['background']:.1f} % zero-shot; the largest change on the hand is "
                             f"the {region} ({shift[region]:+.1f} points).")
    if moves:
        lines += ["", "What training changed (same backbone, same map):", *moves]
    lines += ["", "A share above the area share means the map concentrates there; the black ticks in the "
              "figure mark where a map that looks everywhere equally would be."]
    return "\n".join(lines).strip()


def read_protocols(tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> str:
    """`read_comparison` for each protocol's (table, pairs), the dissertation's protocol first,
    with the caveat once."""
    order = sorted(tables, key=lambda k: k != "clipfh")
    head = _caveat_of(concat_tables(tables))
    return "\n\n".join([head, *(read_comparison(*tables[k], PROTOCOL_LABELS.get(k, k), with_caveat=False)
                                 for k in order)]).strip()


def read_transfer(table: pd.DataFrame) -> str:
    """Notebook 07: for each model and the set it trained on, mAP on that set's test protocol
    against each other test set (the difference in points), best first. `table`: `report.transfer.transfer_table`."""
    if table.empty:
        return "No transfer results in this invocation."
    lines = [_caveat_of(table), ""]
    for (model, _), d in table.groupby(["model", "train set"], sort=False):  # a run: model + its train set
        own = d[d["train set"] == d["test set"]]
        others = d[d["train set"] != d["test set"]]
        if own.empty:  # zero-shot: nothing trained, so no home set
            best = d.loc[d["mAP_mean"].idxmax()]
            lines.append(f"- **{model}** (not trained): mAP from {metric(d['mAP_mean'].min())} to "
                         f"{metric(d['mAP_mean'].max())} % across the test sets, highest on {best['test set']}.")
            continue
        home = own.iloc[0]
        parts = [f"{r['test set']} {metric(r['mAP_mean'])} % ({_shown(r['mAP_mean']) - _shown(home['mAP_mean']):+.1f}"
                 + (f"; {int(r['removed ids'])} seen ids removed" if r["removed ids"] else "") + ")"
                 for _, r in others.sort_values("mAP_mean", ascending=False).iterrows()]
        lines.append(f"- **{model}**, trained on {home['train set']}: mAP {metric(home['mAP_mean'])} % on its own "
                     "test set" + ("; elsewhere " + ", ".join(parts) if parts else "") + ".")
    lines += ["", "Points in brackets: the difference to the model's own test set (mAP, mean over seeds and "
              "splits). Test sets differ in size and difficulty, so a drop mixes the domain shift with the "
              "task's difficulty; compare a column between models rather than a row across test sets."]
    return "\n".join(lines).strip()
