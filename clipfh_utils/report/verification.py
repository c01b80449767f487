"""Verification and open-set tables, DET / ROC / score-histogram figures and their reading, and the
group differences, from the metrics payloads (notebook 04 and the index). Nothing is recomputed
here except the per-group bootstrap, which reads the per-query results beside each payload."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import DetCurveDisplay

from ..evaluation.groups import NoMetadata, group_table, identity_attributes
from .display import model_labels
from .style import LINESTYLES, OKABE_ITO, TEXT_WIDTH, named
from .results import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, per_query


VERIFICATION_NOTE = (
    "1:1 comparisons of every query with every gallery image of its split, cosine score, accepted at or above "
    "the threshold. EER: FMR = FNMR, linearly interpolated between the two thresholds bracketing the crossing; "
    "mean ± sd over splits and seeds, [a, b]: 95 % bootstrap interval over test identities (each with all its "
    "queries, the gallery fixed). FNMR @ FMR: at the lowest threshold whose FMR does not exceed the target, no "
    "interpolation (NIST); n/a where there are fewer impostor pairs than 1/FMR. In mbanet the gallery images of "
    "the query's own person from other aspects are neither genuine nor impostor pairs: left out, counted.")
OPENSET_NOTE = (
    "Per split a seeded share of the test identities is enrolled (their gallery images kept; in mbanet the "
    "distractors stay); the others' queries are non-mated searches. Candidate list length 1: FPIR = non-mated "
    "searches whose top score reaches the threshold; FNIR = mated searches whose top candidate is not the mate "
    "or scores below it; read at the lowest threshold with FPIR <= target; n/a below 1/FPIR non-mated searches. "
    "Rank-1 mated: closed-set Rank-1 of the mated searches over the enrolled gallery. Mean ± sd over splits.")
GROUPS_NOTE = (
    "Per group of test identities (HandInfo.csv): Rank-1, mAP and FNMR at each split's EER threshold, the "
    "mean over splits and seeds with a 95 % bootstrap interval over the group's identities. Small groups give "
    "wide intervals: a difference counts only where the intervals do not overlap.")


def plain(metrics: list[dict]) -> list[dict]:
    """The payloads without the re-ranked twins: what features alone rank (retrieval figures)."""
    return [m for m in metrics if not (m.get("evaluation") or {}).get("reranked")]


def _plain(metrics: list[dict], protocol: str, key: str) -> list[dict]:
    """Payloads that carry `key` for `protocol` (re-ranked twins carry none: 1:1 scores are plain)."""
    return [m for m in metrics if protocol in (m.get(key) or {})]


def _labelled(ms: list[dict]) -> list[tuple[dict, str]]:
    """Each payload with its readable model label (the internal name stays in the `experiment` column)."""
    return list(zip(ms, model_labels(ms)))


def _legend(fig, ax, title: str = "") -> None:
    """The key below the axes (constrained layout), never over a curve or an axis label."""
    handles, names = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncol=_key_columns(names),
                   title=title or None, title_fontsize=7, frameon=False)


def _key_columns(names: Sequence[str]) -> int:
    """Two columns of entries where the labels are short enough to sit side by side, else one."""
    return 1 if len(names) < 2 or max(len(n) for n in names) > 30 else 2


def _key_height(ms: list) -> float:
    """Inches the key below the axes takes, so the axes keep their size however many models."""
    return 0.18 * -(-len(ms) // _key_columns(model_labels(ms))) + 0.3


def _cell(stat: dict, digits: int = 2) -> str:
    if "na" in stat:
        return stat["na"]
    sd = stat.get("split_sd")
    return f"{stat['mean']:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def _targets(metrics: list[dict], protocol: str, key: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for m in metrics:
        keys += [k for k in m[key][protocol] if k.startswith(prefix) and k not in keys]
    return keys


def _percent(key: str) -> str:
    kind, value = key.split("=")
    return f"{kind.upper().replace('@', ' @ ')} = {float(value) * 100:g} %"


def verification_table(metrics: list[dict], protocol: str) -> pd.DataFrame:
    """Per model: EER (mean ± sd over splits, 95 % identity bootstrap interval), FNMR at each FMR
    target (or why it is n/a) and the pair counts per split. Numeric columns keep the numbers."""
    rows = []
    ms = _plain(metrics, protocol, "verification")
    keys = _targets(ms, protocol, "verification", "fnmr@fmr=")
    for m, model in _labelled(ms):
        v = m["verification"][protocol]
        e = v["eer"]
        row = {"model": model, "experiment": m["model"], "EER (%)": _cell(e) + (f" [{e['lo']:.2f}, {e['hi']:.2f}]" if "lo" in e else ""),
               "eer_mean": e["mean"], "eer_lo": e.get("lo", np.nan), "eer_hi": e.get("hi", np.nan)}
        for k in keys:
            stat = v.get(k, {"na": "—"})
            row[f"{_percent(k)} (%)"] = _cell(stat)
            row[f"{k}_mean"] = stat.get("mean", np.nan)
        row.update({"genuine pairs": v["n_genuine"], "impostor pairs": v["n_impostor"],
                    "left out (same person, other aspect)": v["n_excluded"], "data": m.get("data", "?"),
                    "weights": m.get("weights", "?")})
        rows.append(row)
    return pd.DataFrame(rows)


def openset_table(metrics: list[dict], protocol: str) -> pd.DataFrame:
    """Per model: FNIR at each FPIR target with a candidate list of length 1, Rank-1 of the mated
    searches (closed-set over the enrolled gallery), the search counts per split."""
    rows = []
    ms = _plain(metrics, protocol, "open_set")
    keys = _targets(ms, protocol, "open_set", "fnir@fpir=")
    for m, model in _labelled(ms):
        o = m["open_set"][protocol]
        row = {"model": model, "experiment": m["model"]}
        for k in keys:
            stat = o.get(k, {"na": "—"})
            row[f"{_percent(k)} (%)"] = _cell(stat)
            row[f"{k}_mean"] = stat.get("mean", np.nan)
        row.update({"Rank-1 mated (%)": _cell(o["rank1_mated"]), "mated searches": o["n_mated"],
                    "non-mated searches": o["n_nonmated"], "enrolled share": o["enrolled_share"],
                    "lists": o["lists"]})
        rows.append(row)
    return pd.DataFrame(rows)


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The display columns of a verification or open-set table (the numeric ones, the internal name and
    the provenance columns stay in the CSV; the caption carries the synthetic mark)."""
    return table[[c for c in table.columns if not c.endswith(("_mean", "_lo", "_hi"))
                  and c not in ("experiment", "data", "weights", "lists")]]


def _inside(x: Sequence[float]) -> np.ndarray:
    """Rates strictly inside (0, 1): the normal-deviate axes cannot show 0 or 1."""
    a = np.array([np.nan if v is None else v for v in x], dtype=float)
    return np.where((a > 0) & (a < 1), a, np.nan)


def det_figure(metrics: list[dict], protocol: str, label: str, name: str):
    """DET curves of every model (FNMR against FMR on normal-deviate axes, ISO/IEC 19795-1), the
    mean over splits and seeds at a fixed FMR grid (vertical averaging) with a ±1 sd band."""
    ms = _plain(metrics, protocol, "verification")
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH * 0.8, 3.2 + _key_height(ms)))
    for i, (m, model) in enumerate(_labelled(ms)):
        d = m["verification"][protocol]["det"]
        fmr, mean, sd = np.array(d["fmr"]), _inside(d["fnmr_mean"]), _inside(d["fnmr_sd"])
        ok = ~np.isnan(mean)
        if not ok.any():
            continue
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        DetCurveDisplay(fpr=fmr[ok], fnr=mean[ok], estimator_name=model).plot(
            ax=ax, color=colour, ls=LINESTYLES[i % len(LINESTYLES)])
        band = ok & ~np.isnan(sd)
        if band.any():
            lo = np.clip(mean[band] - sd[band], 1e-6, 1 - 1e-6)
            hi = np.clip(mean[band] + sd[band], 1e-6, 1 - 1e-6)
            ax.fill_between(norm.ppf(fmr[band]), norm.ppf(lo), norm.ppf(hi), color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("FMR (false match rate)")
    ax.set_ylabel("FNMR (false non-match rate)")
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    _legend(fig, ax, "mean ± 1 sd over splits × seeds")
    return named(fig, name, f"DET curves, {label}")


def roc_and_histograms(metrics: list[dict], protocol: str, label: str, name: str):
    """ROC (TAR = 1 - FNMR against FAR = FMR, log FAR axis) of every model, and each model's genuine
    and impostor score histograms (all splits and seeds pooled)."""
    ms = _plain(metrics, protocol, "verification")
    fig, axes = plt.subplots(1, 2, figsize=(TEXT_WIDTH, 2.8 + _key_height(ms)))
    for i, (m, model) in enumerate(_labelled(ms)):
        v = m["verification"][protocol]
        fmr, fnmr = np.array(v["det"]["fmr"]), np.array([np.nan if x is None else x for x in v["det"]["fnmr_mean"]])
        colour, ls = OKABE_ITO[i % len(OKABE_ITO)], LINESTYLES[i % len(LINESTYLES)]
        axes[0].plot(fmr, 1 - fnmr, color=colour, ls=ls, label=model)
        h = v["histogram"]
        centres = (np.array(h["edges"][:-1]) + np.array(h["edges"][1:])) / 2
        for kind, style in (("genuine", "-"), ("impostor", ":")):
            counts = np.array(h[kind], dtype=float)
            axes[1].plot(centres, counts / max(counts.sum(), 1), color=colour, ls=style)
    used = [ln.get_xdata()[ln.get_ydata() > 0] for ln in axes[1].get_lines()]
    used = np.concatenate(used) if used else np.array([])
    if used.size:  # the occupied score range, a bin either side
        step = np.diff(ms[0]["verification"][protocol]["histogram"]["edges"][:2])[0]
        axes[1].set_xlim(used.min() - step, used.max() + step)
    axes[0].set_xscale("log")
    axes[0].set(xlabel="FAR (= FMR)", ylabel="TAR (= 1 − FNMR)", ylim=(0, 1.02))
    axes[1].set(xlabel="cosine score", ylabel="share of pairs")
    _legend(fig, axes[0], "colour = model; right: genuine (solid), impostor (dotted)")
    return named(fig, name, f"ROC (left) and genuine / impostor score distributions (right), {label}")


def openset_figure(metrics: list[dict], protocol: str, label: str, name: str):
    """FNIR against FPIR (candidate list length 1), mean over splits and seeds, log FPIR axis."""
    ms = _plain(metrics, protocol, "open_set")
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH * 0.8, 3.0 + _key_height(ms)))
    for i, (m, model) in enumerate(_labelled(ms)):
        c = m["open_set"][protocol]["fnir_fpir"]
        y = np.array([np.nan if v is None else v for v in c["fnir_mean"]], dtype=float)
        ax.plot(c["fpir"], y, color=OKABE_ITO[i % len(OKABE_ITO)], ls=LINESTYLES[i % len(LINESTYLES)],
                label=model)
    ax.set_xscale("log")
    ax.set(xlabel="FPIR (non-mated searches returning a candidate)", ylabel="FNIR (mated searches missed)",
           ylim=(0, 1.02))
    _legend(fig, ax)
    return named(fig, name, f"Open-set identification (FNIR against FPIR, candidate list length 1), {label}")


def reading(table: pd.DataFrame, label: str) -> str:
    """Which model is best at the operating point (FNMR at the largest FMR target every model
    resolves, 1 % by default, else the EER), and whether the EER intervals of the best two separate them."""
    if table.empty:
        return f"*{label}: no verification results in this invocation.*"
    point = next((k for k in sorted([c for c in table.columns if c.startswith("fnmr@fmr=") and c.endswith("_mean")],
                                    key=lambda c: -float(c.split("=")[1][:-5]))
                  if table[k].notna().all()), None)
    col, what = (point, _percent(point[:-5])) if point else ("eer_mean", "the EER")
    order = table.sort_values([col, "eer_mean"])
    best = order.iloc[0]
    text = f"**{label}.** At {what} the lowest error is **{best['model']}** ({best[col]:.2f} %)"
    if point is None:
        text += " (no FMR target is resolvable by every model's impostor pairs, so the EER decides)"
    if len(order) > 1:
        second = order.iloc[1]
        if np.isnan(best["eer_hi"]) or np.isnan(second["eer_lo"]):
            text += f"; the next is {second['model']} ({second[col]:.2f} %), without intervals to compare."
        elif best["eer_hi"] < second["eer_lo"] or second["eer_hi"] < best["eer_lo"]:
            text += (f"; its EER interval [{best['eer_lo']:.2f}, {best['eer_hi']:.2f}] does not overlap that of the "
                     f"next, {second['model']} [{second['eer_lo']:.2f}, {second['eer_hi']:.2f}]: they are separated.")
        else:
            text += (f"; its EER interval [{best['eer_lo']:.2f}, {best['eer_hi']:.2f}] overlaps that of the next, "
                     f"{second['model']} [{second['eer_lo']:.2f}, {second['eer_hi']:.2f}]: these test identities "
                     "do not separate them.")
    return text if text.endswith(".") else text + "."


def groups_for(metrics: list[dict], handinfo_of, age_edges: Sequence[int], n_boot: int = BOOTSTRAP_SAMPLES,
               seed: int = BOOTSTRAP_SEED) -> tuple[pd.DataFrame, list[str]]:
    """Rank-1, mAP and FNMR at the EER threshold per group for every plain payload, with counts
    and intervals; `handinfo_of(dataset_key)` gives the metadata file. Returns the table and one
    line per dataset that has no metadata (HD)."""
    frames, missing = [], []
    labels = {id(m): model for m, model in _labelled(metrics)}
    for m in metrics:
        if m.get("evaluation", {}).get("reranked") or "verification" not in m:
            continue
        pq = per_query(m)
        if pq is None or "rejected_at_eer" not in pq:
            continue
        try:
            attrs = identity_attributes(handinfo_of(m["dataset"]), sorted(set(pq["person_id"].astype(str))), age_edges)
        except NoMetadata as e:
            line = f"{m['dataset']}: {e}"
            if line not in missing:
                missing.append(line)
            continue
        frames.append(group_table(pq, attrs, n_boot=n_boot, seed=seed).assign(
            model=labels[id(m)], experiment=m["model"]))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), missing


def groups_display(table: pd.DataFrame) -> pd.DataFrame:
    out = table[["model", "protocol", "attribute", "group", "n_ids", "n_queries"]].copy()
    for m, title in (("rank1", "Rank-1 (%)"), ("mAP", "mAP (%)"), ("fnmr_eer", "FNMR at EER threshold (%)")):
        out[title] = [f"{v:.1f} [{lo:.1f}, {hi:.1f}]" for v, lo, hi in zip(table[m], table[f"{m}_lo"], table[f"{m}_hi"])]
    return out
