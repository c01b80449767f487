"""The profile's evaluation settings: validated keys, outside the run hash, re-evaluating a finished
run (never retraining it) with verification, open-set and re-ranked metrics written beside the plain."""
import json

import pandas as pd
import pytest

from clipfh_utils.config import ConfigError, load_profile
from clipfh_utils.pipeline import open_run
from clipfh_utils.report.results import comparison_table, invocation_metrics
from clipfh_utils.runs import new_invocation
from tests.test_runs import FAST, names, step_spy  # noqa: F401 (step_spy: a fixture)


@pytest.mark.parametrize("item,message", [
    ("evaluation.fmr_targets=[0.01, 1.5]", r"evaluation\.fmr_targets\[1\]: must be strictly between 0 and 1"),
    ("evaluation.fpir_targets=[0]", r"evaluation\.fpir_targets\[0\]: must be strictly between 0 and 1"),
    ("evaluation.k1=0", r"evaluation\.k1: must be >= 1, got 0"),
    ("evaluation.k2=0", r"evaluation\.k2: must be >= 1"),
    ("evaluation.lambda_value=1.5", r"evaluation\.lambda_value: must be <= 1"),
    ("evaluation.enrolled_share=0", r"evaluation\.enrolled_share: must be strictly between 0 and 1"),
    ("evaluation.enrolled_share=1", r"evaluation\.enrolled_share: must be strictly between 0 and 1"),
    ("evaluation.age_bands=[30, 21]", r"evaluation\.age_bands: must be increasing"),
    ("evaluation.rerank_k1=5", r"evaluation: unknown key 'rerank_k1'"),
])
def test_bad_settings_are_one_line_errors_naming_the_key(item, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_profile("demo", [item])
    assert "\n" not in str(e.value) and item in str(e.value)


@pytest.mark.slow
def test_too_few_test_identities_for_the_open_set_share_fail_before_training(tmp_path, step_spy):
    run = open_run("demo", tmp_path, FAST + ["evaluation.enrolled_share=0.01"])
    with pytest.raises(ConfigError, match=r"^evaluation\.enrolled_share: 0\.01 of 24 test identities enrols 0"):
        run.run_stage("stage2", progress=False)
    assert not step_spy


def test_settings_are_outside_the_run_hash(tmp_path):
    base = names(tmp_path, [])
    for item in ("evaluation.rerank=true", "evaluation.k1=5", "evaluation.enrolled_share=0.3",
                 "evaluation.verification=false", "evaluation.n_boot=10"):
        assert names(tmp_path, [item]) == base, item


@pytest.mark.slow
def test_reevaluation_adds_verification_open_set_and_reranked_metrics_without_training(tmp_path, step_spy):
    out = tmp_path / "out"
    (first,) = open_run("demo", out, FAST).run_stage("stage2", progress=False)
    steps = len(step_spy)
    assert first.trained_seeds == [0] and steps > 0
    split_dir = first.dataset.splits_root / "dorsal_right" / "seed0"
    closed = {p.name: p.read_bytes() for p in split_dir.glob("*.csv")}
    lists = split_dir / "openset_share0.5"
    enrolled = {p.name: p.read_bytes() for p in lists.iterdir()}
    assert sorted(enrolled) == ["enrolled_00.csv", "enrolled_01.csv"]

    plain = json.loads(first.metrics_files[""].read_text())
    assert plain["evaluation"]["reranked"] is False
    for proto in ("clipfh", "mbanet"):
        v = plain["verification"][proto]
        assert 0 <= v["eer"]["mean"] <= 100 and v["eer"]["lo"] <= v["eer"]["mean"] <= v["eer"]["hi"]
        assert v["fnmr@fmr=0.001"] == {"na": "n/a (needs >= 1000 impostor pairs)"} or v["n_impostor"] >= 1000
        o = plain["open_set"][proto]
        assert o["fnir@fpir=0.01"]["na"].startswith("n/a (needs >= 100 non-mated")  # the demo is small
        assert "mean" in o["fnir@fpir=0.1"] and o["n_mated"] > 0 and o["n_nonmated"] > 0
    assert plain["verification"]["mbanet"]["n_excluded"] > 0          # own person, other aspects
    per_split = pd.read_csv(first.metrics_files[""].with_suffix(".csv"))
    assert {"eer", "fnmr@fmr=0.01", "fnir@fpir=0.1", "rank1_mated"} <= set(per_split.columns)

    inv = new_invocation(out, {"profile": "demo"})
    (again,) = open_run("demo", out, FAST + ["evaluation.rerank=true"], inv).run_stage("stage2", progress=False)
    assert again.trained_seeds == [] and len(step_spy) == steps and again.run_name == first.run_name
    rr_file = first.metrics_files[""].with_name(first.metrics_files[""].stem + "_rerank.json")
    rr = json.loads(rr_file.read_text())
    assert rr["evaluation"]["reranked"] is True and rr["evaluation"]["k1"] == 20
    assert "verification" not in rr and rr["model"].endswith("k-reciprocal re-ranked")
    assert {p.name: p.read_bytes() for p in split_dir.glob("*.csv")} == closed
    assert {p.name: p.read_bytes() for p in lists.iterdir()} == enrolled      # byte for byte
    table = comparison_table(invocation_metrics(out, inv))
    assert sorted(table["model"]) == ["demo_tiny_vit", "demo_tiny_vit · k-reciprocal re-ranked"]
    plain_row, rr_row = (table.set_index("model").loc[m] for m in sorted(table["model"]))
    assert plain_row["mAP_mean"] == pytest.approx(first.per_split.query("protocol == 'clipfh'")["mAP"].mean())
    assert rr_row["mAP_mean"] != plain_row["mAP_mean"]
    from clipfh_utils.report.index import render_index
    html = render_index(out, inv)
    assert "Verification (1:1)" in html and "Open-set identification (1:N)" in html


@pytest.mark.slow
def test_load_run_verifies_at_a_threshold_from_the_training_identities(tmp_path):
    import numpy as np
    from sklearn.metrics import roc_curve
    from clipfh_utils.pipeline import load_run
    run = open_run("demo", tmp_path, FAST)
    (res,) = run.run_stage("stage2", progress=False)
    m = load_run(res.run_name, search=[tmp_path], device="cpu")
    proto = res.dataset.protocol()
    rows = proto.train + proto.val
    feats = m.embed([res.dataset.images_dir / r.image_name for r in rows]).numpy()
    labels = np.array([r.label for r in rows])
    i, j = np.triu_indices(len(rows), 1)
    scores, same = (feats @ feats.T)[i, j], labels[i] == labels[j]
    fpr, tpr, thr = roc_curve(same, scores, drop_intermediate=False)
    eer_thr = thr[np.argmax(fpr >= 1 - tpr)]           # the highest threshold with FMR >= FNMR
    test = [res.dataset.images_dir / r.image_name for r in proto.queries[0][:2]]
    v = m.verify(test[0], test[1])
    assert v.threshold == pytest.approx(eer_thr, abs=1e-4) and v.operating_point == "EER"
    assert v.match == (v.score >= v.threshold)
    assert v.score == pytest.approx(float(m.embed(test)[0] @ m.embed(test)[1]), abs=1e-5)
    assert "training identities" in str(v) and "trained on them" in str(v) and "FMR" in str(v)
    assert m.verify(test[0], test[1], fmr=0.01).fmr_at_threshold <= 0.01
    with pytest.raises(ValueError, match="thresholds exist for FMR 0.001, 0.01 "):
        m.verify(test[0], test[1], fmr=0.2)
