"""Verification tables, figures and reading from metrics payloads (built from real kernels)."""
import matplotlib
import pytest
import torch

from clipfh_utils.data.protocol import build_protocol
from clipfh_utils.evaluation.biometric import biometric_summary, evaluate_biometric
from clipfh_utils.evaluation.openset import draw_enrolled
from clipfh_utils.evaluation.rank import FeatureBank
from clipfh_utils.report import verification as vr

matplotlib.use("Agg")


def payload(real_records, model, signal, seed=0):
    """A metrics payload of features with `signal` x identity direction + noise, 2 splits."""
    proto = build_protocol(real_records, "dorsal right", seed=0, n_splits=2)
    rows = proto.eval_rows()
    g = torch.Generator().manual_seed(seed)
    ids = sorted({r.label for r in rows})
    centre = {lab: torch.randn(32, generator=g) for lab in ids}
    x = torch.stack([signal * centre[r.label] + torch.randn(32, generator=g) for r in rows])
    bank = FeatureBank(torch.nn.functional.normalize(x, dim=1), {r.image_name: i for i, r in enumerate(rows)})
    res = evaluate_biometric(bank, proto, enrolled=draw_enrolled(proto, 0.5))
    v, o, _, _ = biometric_summary({0: res}, (0.01, 0.001), (0.01, 0.1), n_boot=200)
    for p in o.values():
        p.update(enrolled_share=0.5, lists="splits/x")
    return {"model": model, "verification": v, "open_set": o, "data": "synthetic", "weights": "random init"}


@pytest.fixture(scope="module")
def metrics(real_records):
    return [payload(real_records, "weak", 0.3), payload(real_records, "strong", 1.5, seed=1)]


def test_tables_carry_the_payload_numbers(metrics):
    t = vr.verification_table(metrics, "clipfh").set_index("model")
    for m in metrics:
        v = m["verification"]["clipfh"]
        assert t.loc[m["model"], "eer_mean"] == v["eer"]["mean"]
        assert t.loc[m["model"], "EER (%)"].startswith(f"{v['eer']['mean']:.2f} ± ")
        assert t.loc[m["model"], "genuine pairs"] == 971
    assert "FNMR @ FMR = 0.1 % (%)" in t.columns
    o = vr.openset_table(metrics, "mbanet").set_index("model")
    assert o.loc["strong", "fnir@fpir=0.1_mean"] < o.loc["weak", "fnir@fpir=0.1_mean"]
    assert o.loc["strong", "non-mated searches"] > 0


def test_reading_names_the_best_and_says_whether_intervals_separate(metrics):
    t = vr.verification_table(metrics, "clipfh")
    text = vr.reading(t, "clipfh")
    assert "lowest error is **strong**" in text and "At FNMR @ FMR = 1 %" in text
    assert "they are separated" in text  # signal 1.5 vs 0.3: far apart
    close = t.copy()
    close.loc[:, "eer_lo"], close.loc[:, "eer_hi"] = 1.0, 9.0
    assert "do not separate them" in vr.reading(close, "clipfh")


def test_figures_draw_one_curve_per_model(metrics):
    fig = vr.det_figure(metrics, "mbanet", "mbanet", "det_mbanet")
    assert fig.get_label() == "det_mbanet" and len(fig.axes[0].get_lines()) == 2
    fig = vr.roc_and_histograms(metrics, "clipfh", "clipfh", "roc")
    assert len(fig.axes[0].get_lines()) == 2 and len(fig.axes[1].get_lines()) == 4
    fig = vr.openset_figure(metrics, "clipfh", "clipfh", "os")
    assert len(fig.axes[0].get_lines()) == 2
    h = metrics[0]["verification"]["clipfh"]["histogram"]
    assert sum(h["genuine"]) == 2 * 971 and sum(h["impostor"]) == 2 * 971 * 70


def test_groups_say_when_a_dataset_has_no_metadata(tmp_path):
    hd = tmp_path / "HD"
    hd.mkdir()
    m = {"model": "x", "dataset": "hd/dorsal", "verification": {}, "metrics_file": str(tmp_path / "m.json")}
    import pandas as pd
    pd.DataFrame({"protocol": ["clipfh"], "split": [0], "query": ["a"], "person_id": ["1"], "rank": [1],
                  "ap": [1.0], "rejected_at_eer": [0.0]}).to_csv(tmp_path / "m.per_query.csv.gz", index=False)
    table, missing = vr.groups_for([m], lambda key: hd, (21, 26))
    assert table.empty and len(missing) == 1 and "HD has none" in missing[0]


def test_plain_leaves_out_the_reranked_twins(metrics):
    twin = {**metrics[0], "model": "weak · k-reciprocal re-ranked", "evaluation": {"reranked": True}}
    assert [m["model"] for m in vr.plain([*metrics, twin])] == ["weak", "strong"]
