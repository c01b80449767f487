"""Group differences: identity attributes from HandInfo.csv and per-group metrics with intervals."""
import numpy as np
import pandas as pd
import pytest

from clipfh_utils.evaluation.groups import NoMetadata, age_band, group_table, identity_attributes
from tests.conftest import REAL_HANDINFO


def test_age_bands():
    assert [age_band(a) for a in (18, 20, 21, 25, 26, 75)] == ["<21", "<21", "21-25", "21-25", "26+", "26+"]
    assert age_band(40, (30, 50)) == "30-49"


def test_attributes_of_the_real_test_identities(real_records):
    ids = sorted({r.person_id for r in real_records if r.aspect == "dorsal right" and r.accessories == 0
                  and r.id_int > 1050}, key=int)
    attrs = identity_attributes(REAL_HANDINFO, ids)
    raw = pd.read_csv(REAL_HANDINFO, dtype={"id": str})
    raw["id"] = raw["id"].str.strip()
    first = raw.groupby("id").first().loc[ids]
    assert attrs["gender"].value_counts().to_dict() == first["gender"].value_counts().to_dict()
    assert attrs["skin colour"].value_counts().to_dict() == first["skinColor"].value_counts().to_dict()
    assert (attrs["age band"] == "<21").sum() == (first["age"] < 21).sum()
    assert (attrs["age band"] == "26+").sum() == (first["age"] >= 26).sum()


def test_missing_metadata_and_inconsistent_rows_are_errors(tmp_path):
    hd = tmp_path / "hd.csv"
    hd.write_text("id,aspectOfHand,imageName,accessories\n1,dorsal,1_1.jpg,0\n")
    with pytest.raises(NoMetadata, match="HD has none"):
        identity_attributes(hd, ["1"])
    bad = tmp_path / "HandInfo.csv"
    bad.write_text("id,age,gender,skinColor\n1,20,male,fair\n1,20,female,fair\n")
    with pytest.raises(ValueError, match=r"HandInfo.csv row 3: identity 1 has"):
        identity_attributes(bad, ["1"])
    ok = tmp_path / "ok.csv"
    ok.write_text("id,age,gender,skinColor\n1,20,male,fair\n")
    with pytest.raises(ValueError, match="test identities 2 are not listed"):
        identity_attributes(ok, ["1", "2"])


def test_group_metrics_are_the_group_means_with_intervals():
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(12)]
    rows = []
    for split in range(3):
        for k in range(60):
            pid = ids[k % 12]
            rows.append({"protocol": "clipfh", "split": split, "query": f"q{k}", "person_id": pid,
                         "rank": int(rng.integers(1, 4)), "ap": float(rng.random()),
                         "rejected_at_eer": float(rng.random() < 0.3)})
    pq = pd.DataFrame(rows)
    attrs = pd.DataFrame({"gender": ["female" if int(p) < 5 else "male" for p in ids]},
                         index=pd.Index(ids, name="person_id"))
    t = group_table(pq, attrs, n_boot=300).set_index("group")
    for g, members in (("female", ids[:5]), ("male", ids[5:])):
        part = pq[pq["person_id"].isin(members)]
        assert t.loc[g, "rank1"] == pytest.approx(part.groupby("split").apply(lambda d: (d["rank"] == 1).mean()).mean() * 100)
        assert t.loc[g, "mAP"] == pytest.approx(part.groupby("split")["ap"].mean().mean() * 100)
        assert t.loc[g, "fnmr_eer"] == pytest.approx(part.groupby("split")["rejected_at_eer"].mean().mean() * 100)
        assert t.loc[g, "n_ids"] == len(members) and t.loc[g, "n_queries"] == len(members) * 5
        for m in ("rank1", "mAP", "fnmr_eer"):
            assert t.loc[g, f"{m}_lo"] <= t.loc[g, m] <= t.loc[g, f"{m}_hi"]
            assert t.loc[g, f"{m}_hi"] > t.loc[g, f"{m}_lo"]
