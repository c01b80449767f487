"""Differences between groups of test identities (what NIST's face evaluations call demographic
effects): Rank-1, mAP and FNMR at the EER threshold per gender, skin colour and age band, from the
per-query results, each with its identity count, query count and identity bootstrap interval.

The attributes come from HandInfo.csv (one value per identity; an identity with two values is an
error naming it). HD has no such metadata: `identity_attributes` says so instead of guessing.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import pandas as pd

from .spread import identity_bootstrap

ATTRIBUTES: dict[str, str] = {"gender": "gender", "skin colour": "skinColor", "age band": "age"}
AGE_EDGES: tuple[int, ...] = (21, 26)   # 18-20, 21-25, 26+ (the test ids are mostly 20-22 years old)
GROUP_METRICS: tuple[str, ...] = ("rank1", "mAP", "fnmr_eer")


class NoMetadata(ValueError):
    """The dataset has no identity attributes to group by."""


def age_band(age: int, edges: Sequence[int] = AGE_EDGES) -> str:
    lows = [None, *edges]
    for lo, hi in zip(lows, [*edges, None]):
        if hi is None or age < hi:
            return f"{lo}+" if hi is None else (f"<{hi}" if lo is None else f"{lo}-{hi - 1}")
    raise AssertionError("unreachable")


def identity_attributes(handinfo: Path, ids: Sequence[str], age_edges: Sequence[int] = AGE_EDGES) -> pd.DataFrame:
    """One row per identity of `ids` (index person_id): gender, skin colour, age band."""
    handinfo = Path(handinfo)
    if not handinfo.is_file():
        raise NoMetadata(f"{handinfo}: no HandInfo.csv; this dataset has no identity metadata (HD has none), "
                         "so there are no group differences to report")
    with open(handinfo, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ATTRIBUTES.values() if c not in (reader.fieldnames or [])]
        if missing:
            raise NoMetadata(f"{handinfo}: no {', '.join(missing)} column(s); this dataset has no identity "
                             "metadata (HD has none), so there are no group differences to report")
        values: dict[str, dict[str, str]] = {}
        for line_no, row in enumerate(reader, start=2):
            pid = row["id"].strip()
            got = {name: row[col].strip() for name, col in ATTRIBUTES.items()}
            seen = values.setdefault(pid, got)
            if seen != got:
                raise ValueError(f"{handinfo} row {line_no}: identity {pid} has {got} but an earlier row "
                                 f"{seen}; one person has one gender, skin colour and age: fix the row")
    absent = [p for p in ids if p not in values]
    if absent:
        raise ValueError(f"{handinfo}: test identities {', '.join(absent[:5])} are not listed; "
                         "the metrics do not belong to this HandInfo.csv")
    out = pd.DataFrame([{"person_id": p, **values[p]} for p in ids]).set_index("person_id")
    try:
        out["age band"] = [age_band(int(a), age_edges) for a in out["age band"]]
    except ValueError:
        raise ValueError(f"{handinfo}: column 'age' holds a value that is not an integer") from None
    return out


def group_table(per_query: pd.DataFrame, attributes: pd.DataFrame, metrics: Sequence[str] = GROUP_METRICS,
                n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per protocol, attribute and group: identities, queries and for each metric the estimate and
    its 95 % identity bootstrap interval (percent). `per_query` needs `rejected_at_eer` for fnmr_eer."""
    rows = []
    pq = per_query.assign(person_id=per_query["person_id"].astype(str))
    for protocol, sub in pq.groupby("protocol", sort=False):
        for attr in attributes.columns:
            for value, members in attributes.groupby(attr).groups.items():
                part = sub[sub["person_id"].isin(set(members))]
                if part.empty:
                    continue
                row = {"protocol": protocol, "attribute": attr, "group": value,
                       "n_ids": part["person_id"].nunique(), "n_queries": part["query"].nunique()}
                for m in metrics:
                    iv = identity_bootstrap(part, m, n_boot=n_boot, seed=seed)
                    row.update({m: iv.estimate, f"{m}_lo": iv.lo, f"{m}_hi": iv.hi})
                rows.append(row)
    return pd.DataFrame(rows)
