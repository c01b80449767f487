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
from .plotting import STAGE_NAMES
from .results import PROTOCOL_LABELS, best_row, concat_tables


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


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:.1f}, {hi:.1f}]"


def _best_numbers(row: pd.Series) -> str:
    return (f"mAP {row['mAP_mean']:.2f} % {_ci(row['mAP_ci_lo'], row['mAP_ci_hi'])}, "
            f"Rank-1 {row['rank1_mean']:.2f} %")


def _pair_sentence(p: pd.Series, table: pd.DataFrame) -> str:
    rows = table.set_index("model")
    sds = [rows.loc[m, "mAP_seed_sd"] for m in (p["A"], p["B"]) if m in rows.index]
    sds = [s for s in sds if pd.notna(s)]
    d = p["d_mAP"]
    verdict = ("its interval excludes 0" if excludes_zero(p["d_mAP_lo"], p["d_mAP_hi"])
               else "its interval includes 0, so the data do not separate the two")
    if sds:
        sd = max(sds)
        seed_part = (f"{abs(d) / sd:.1f}× the larger seed sd ({sd:.2f})" if sd > 0 else "the seed sd is 0")
        seed_part = ("the difference exceeds the seed-to-seed spread: " if abs(d) > sd
                     else "the difference is within the seed-to-seed spread: ") + seed_part
    else:
        seed_part = "with a single training seed on each side there is no seed sd to compare with"
    return (f"- **{p['B']}** vs **{p['A']}** ({p['backbone']}): {d:+.2f} mAP points "
            f"{_ci(p['d_mAP_lo'], p['d_mAP_hi'])}, {p['d_rank1']:+.2f} Rank-1 points; {verdict}; {seed_part}.")


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
                     f"**{best['model']}** ({STAGE_NAMES.get(best['stage'], best['stage'])}, {best['backbone']}): "
                     f"{_best_numbers(best)}.")
        others = t.drop(index=best.name)
        if len(others):
            second = others.loc[others["mAP_mean"].idxmax()]
            lines.append(f"The next best, **{second['model']}**, is {best['mAP_mean'] - second['mAP_mean']:.2f} "
                         "mAP points lower.")
    if not pairs.empty:
        lines += ["", "Paired differences (same splits, same resampled identities):"]
        lines += [_pair_sentence(p, table) for _, p in pairs.iterrows()]
    return "\n".join(lines).strip()


def read_zero_shot(table: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """Stage 1: which backbone is better zero-shot, and whether the split spread could explain it."""
    if table.empty:
        return "No zero-shot results."
    best = best_row(table)
    lines = [_caveat_of(table), "", f"Zero-shot, **{best['backbone']}** ranks best: {_best_numbers(best)} "
             f"(sd over the splits {best['mAP_split_sd']:.2f})."]
    for _, p in pairs.iterrows():
        lines.append(f"Between **{p['A']}** and **{p['B']}** the mAP difference is {p['d_mAP']:+.2f} points "
                     f"{_ci(p['d_mAP_lo'], p['d_mAP_hi'])}: "
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
            lines.append(f"- **{model}** (not trained): mAP from {d['mAP_mean'].min():.2f} to "
                         f"{d['mAP_mean'].max():.2f} % across the test sets, highest on {best['test set']}.")
            continue
        home = own.iloc[0]
        parts = [f"{r['test set']} {r['mAP_mean']:.2f} % ({r['mAP_mean'] - home['mAP_mean']:+.2f}"
                 + (f"; {int(r['removed ids'])} seen ids removed" if r["removed ids"] else "") + ")"
                 for _, r in others.sort_values("mAP_mean", ascending=False).iterrows()]
        lines.append(f"- **{model}**, trained on {home['train set']}: mAP {home['mAP_mean']:.2f} % on its own "
                     "test set" + ("; elsewhere " + ", ".join(parts) if parts else "") + ".")
    lines += ["", "Points in brackets: the difference to the model's own test set (mAP, mean over seeds and "
              "splits). Test sets differ in size and difficulty, so a drop mixes the domain shift with the "
              "task's difficulty; compare a column between models rather than a row across test sets."]
    return "\n".join(lines).strip()
