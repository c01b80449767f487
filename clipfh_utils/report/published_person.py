"""The person-ReID numbers the methods were published with (data/published_person.csv), in the shape
of the published table that notebook 04 puts beside this invocation's numbers."""
from __future__ import annotations

import pandas as pd

from ..config import REPO_ROOT

PUBLISHED_PERSON_CSV = REPO_ROOT / "data" / "published_person.csv"
PERSON_COLUMNS = ["method", "backbone", "dataset", "mAP", "R1", "source", "settings"]


def published_person(protocol_label: str) -> pd.DataFrame:
    """The rows with the benchmark as `aspect`, method and backbone as `method`, the settings
    beside the source, all labelled with `protocol_label` (the camera-aware protocol)."""
    df = pd.read_csv(PUBLISHED_PERSON_CSV)
    if list(df.columns) != PERSON_COLUMNS:
        raise ValueError(f"{PUBLISHED_PERSON_CSV}: columns {list(df.columns)}; expected {PERSON_COLUMNS}")
    return pd.DataFrame({"method": df["method"] + " " + df["backbone"], "aspect": df["dataset"],
                         "protocol": protocol_label, "rank1": df["R1"], "mAP": df["mAP"],
                         "source": df["source"] + " (" + df["settings"] + ")"})
