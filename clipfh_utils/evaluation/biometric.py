"""Verification and open-set identification over a protocol's splits: the kernels of `verification`
and `openset` applied to a FeatureBank, split by split, for both protocols.

Scores are the plain cosine similarities of the L2-normalised features: a 1:1 comparison score must
not depend on who else is searched, so k-reciprocal re-ranking (which does) changes the rank
metrics only. In `mbanet` the other aspects' images of the query's own person are neither genuine
nor impostor pairs (left out, counted) and stay in the open-set gallery as distractors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..data.protocol import Protocol
from .openset import openset_split, searches
from .rank import PROTOCOLS, FeatureBank
from .spread import seed_split_sd
from .verification import (FMR_GRID, EerBootstrap, eer_interval, na_text, needed_pairs, pair_scores,
                           verification_split)


@dataclass
class BiometricResult:
    """Per split and protocol the verification and open-set numbers; per query the genuine pairs
    rejected at the EER threshold; curves on the FMR (FPIR) grid; the EER bootstrap per split."""
    per_split: pd.DataFrame
    per_query: pd.DataFrame           # protocol, split, query, person_id, rejected_at_eer
    det: dict[str, np.ndarray]        # protocol -> (n_splits, len(grid)) FNMR
    fnir: dict[str, np.ndarray]       # protocol -> (n_splits, len(grid)) FNIR
    boots: dict[str, list[EerBootstrap]] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)
    hist: dict[str, np.ndarray] = field(default_factory=dict)   # protocol -> (2, bins) genuine, impostor counts


SCORE_EDGES: np.ndarray = np.linspace(-1.0, 1.0, 201)   # cosine scores of L2-normalised features


def fmr_key(kind: str, target: float) -> str:
    """'fnmr@fmr=0.01': the per-split column of a rate at a target."""
    return f"{kind}={target:g}"


def evaluate_biometric(bank: FeatureBank, proto: Protocol, fmr_targets: Sequence[float] = (0.01, 0.001),
                       fpir_targets: Sequence[float] = (0.01, 0.1), enrolled: list[list[str]] | None = None,
                       protocols: Sequence[str] = ("clipfh", "mbanet"), bootstrap: bool = True,
                       grid: np.ndarray = FMR_GRID) -> BiometricResult:
    """Verification on every split (and open-set where `enrolled` lists per split the enrolled ids)."""
    rows, pq, det, fnir, boots, ids_of, hist = [], [], {}, {}, {}, {}, {}
    test_ids = sorted({r.person_id for r in proto.test}, key=int)
    label_of = {r.person_id: r.label for r in proto.test}
    test_labels = list(label_of.values())
    col = {p: i for i, p in enumerate(test_ids)}
    for name in protocols:
        gallery_attr = PROTOCOLS[name][0]
        curves, ocurves = [], []
        boots[name], ids_of[name] = [], test_ids
        hist[name] = np.zeros((2, len(SCORE_EDGES) - 1))
        for i in range(proto.n_splits):
            queries, gallery = proto.queries[i], getattr(proto, gallery_attr)[i]
            qf, ql = bank.take(queries)
            gf, gl = bank.take(gallery)
            sim = (qf @ gf.T).numpy()
            q_person = [r.person_id for r in queries]
            p = pair_scores(sim, ql.numpy(), gl.numpy(), q_person, [r.person_id for r in gallery])
            v = verification_split(p, fmr_targets, grid)
            row = {"protocol": name, "split": i, "eer": 100 * v["eer"], "eer_threshold": v["eer_threshold"],
                   **{fmr_key("fnmr@fmr", f): (None if x is None else 100 * x) for f, x in v["fnmr"].items()},
                   "n_genuine": v["n_genuine"], "n_impostor": v["n_impostor"], "n_excluded": v["n_excluded"]}
            curves.append(v["curve"])
            hist[name] += [np.histogram(np.clip(x, -1, 1), SCORE_EDGES)[0] for x in (p.genuine, p.impostor)]
            pq.append(pd.DataFrame({"protocol": name, "split": i, "query": [r.image_name for r in queries],
                                    "person_id": q_person, "rejected_at_eer": v["rejected_at_eer"]}))
            if bootstrap:
                boots[name].append(EerBootstrap(p, np.array([col[x] for x in q_person]), len(test_ids)))
            if enrolled is not None:
                s = searches(sim, ql.numpy(), gl.numpy(), [label_of[x] for x in enrolled[i]], test_labels)
                o = openset_split(s, fpir_targets, grid)
                row.update({fmr_key("fnir@fpir", f): (None if x is None else 100 * x) for f, x in o["fnir"].items()})
                row.update(rank1_mated=o["rank1_mated"], n_mated=o["n_mated"], n_nonmated=o["n_nonmated"])
                ocurves.append(o["curve"])
            rows.append(row)
        det[name] = np.array(curves)
        if ocurves:
            fnir[name] = np.array(ocurves)
    return BiometricResult(pd.DataFrame(rows), pd.concat(pq, ignore_index=True), det, fnir, boots, ids_of, hist)


# --------------------------------------------------------------------------- summary for the metrics file

def _json(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _curve(curves: list[np.ndarray], grid: np.ndarray, x: str, y: str) -> dict:
    """Vertical average over splits and seeds: mean and sd (ddof 1) per grid point, None where a
    split cannot resolve the rate."""
    a = np.vstack(curves)
    unresolved = np.isnan(a).any(0)
    mean = np.where(unresolved, np.nan, a.mean(0))
    sd = np.where(unresolved, np.nan, a.std(0, ddof=1)) if len(a) > 1 else np.full(a.shape[1], np.nan)
    return {x: [float(g) for g in grid], f"{y}_mean": [_json(v) for v in mean], f"{y}_sd": [_json(v) for v in sd]}


def _stat(per: pd.DataFrame, col: str, na: str | None = None) -> dict:
    """Mean, sd between seeds and between splits of a per-split column; n/a where a split has none."""
    if per[col].isna().any():
        return {"na": na or "n/a"}
    s = seed_split_sd(per, [col]).loc[col]
    return {"mean": float(s["mean"]), "seed_sd": _json(s["seed_sd"]), "split_sd": _json(s["split_sd"])}


def biometric_summary(results: dict[int, BiometricResult], fmr_targets: Sequence[float],
                      fpir_targets: Sequence[float], n_boot: int, boot_seed: int = 0,
                      grid: np.ndarray = FMR_GRID) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame]:
    """(verification, open_set, per_split, per_query) for a metrics file from each seed's result:
    per protocol mean and sds, the EER's identity bootstrap interval (all seeds and splits with the
    same resamples), curves averaged vertically; per-split and per-query rows gain a seed column."""
    per = pd.concat([r.per_split.assign(seed=s) for s, r in results.items()], ignore_index=True)
    pq = pd.concat([r.per_query.assign(seed=s) for s, r in results.items()], ignore_index=True)
    verification, open_set = {}, {}
    for name, part in per.groupby("protocol", sort=False):
        first = next(iter(results.values()))
        v = {"eer": _stat(part, "eer"), "eer_threshold": _stat(part, "eer_threshold"),
             "n_genuine": int(part["n_genuine"].iloc[0]), "n_impostor": int(part["n_impostor"].iloc[0]),
             "n_excluded": int(part["n_excluded"].iloc[0]),
             "det": _curve([r.det[name] for r in results.values()], grid, "fmr", "fnmr"),
             "histogram": {"edges": SCORE_EDGES.tolist(),
                           **dict(zip(("genuine", "impostor"),
                                      sum(r.hist[name] for r in results.values()).astype(int).tolist()))}}
        boots = [b for r in results.values() for b in r.boots.get(name, [])]
        if boots:
            iv = eer_interval(boots, len(first.ids[name]), n_boot, boot_seed)
            v["eer"].update(lo=100 * iv.lo, hi=100 * iv.hi, n_boot=n_boot, boot_seed=boot_seed, n_ids=iv.n_ids)
        for f in fmr_targets:
            v[fmr_key("fnmr@fmr", f)] = _stat(part, fmr_key("fnmr@fmr", f), na_text(f))
        verification[name] = v
        if "n_mated" in part:
            o = {"rank1_mated": _stat(part, "rank1_mated"), "n_mated": int(part["n_mated"].iloc[0]),
                 "n_nonmated": int(part["n_nonmated"].iloc[0]),
                 "fnir_fpir": _curve([r.fnir[name] for r in results.values()], grid, "fpir", "fnir")}
            for f in fpir_targets:
                o[fmr_key("fnir@fpir", f)] = _stat(part, fmr_key("fnir@fpir", f),
                                                   f"n/a (needs >= {needed_pairs(f)} non-mated searches)")
            open_set[name] = o
    return verification, open_set, per, pq
