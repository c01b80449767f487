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
from .verification import FMR_GRID, EerBootstrap, pair_scores, verification_split


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


def fmr_key(kind: str, target: float) -> str:
    """'fnmr@fmr=0.01': the per-split column of a rate at a target."""
    return f"{kind}={target:g}"


def evaluate_biometric(bank: FeatureBank, proto: Protocol, fmr_targets: Sequence[float] = (0.01, 0.001),
                       fpir_targets: Sequence[float] = (0.01, 0.1), enrolled: list[list[str]] | None = None,
                       protocols: Sequence[str] = ("clipfh", "mbanet"), bootstrap: bool = True,
                       grid: np.ndarray = FMR_GRID) -> BiometricResult:
    """Verification on every split (and open-set where `enrolled` lists per split the enrolled ids)."""
    rows, pq, det, fnir, boots, ids_of = [], [], {}, {}, {}, {}
    test_ids = sorted({r.person_id for r in proto.test}, key=int)
    label_of = {r.person_id: r.label for r in proto.test}
    test_labels = list(label_of.values())
    col = {p: i for i, p in enumerate(test_ids)}
    for name in protocols:
        gallery_attr = PROTOCOLS[name][0]
        curves, ocurves = [], []
        boots[name], ids_of[name] = [], test_ids
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
    return BiometricResult(pd.DataFrame(rows), pd.concat(pq, ignore_index=True), det, fnir, boots, ids_of)
