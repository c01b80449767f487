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
    return {"model": model, "method_title": model.title(), "backbone": "tiny-vit", "verification": v,
            "open_set": o, "data": "synthetic", "weights": "random init"}


@pytest.fixture(scope="module")
def metrics(real_records):
    return [payload(real_records, "weak", 0.3), payload(real_records, "strong", 1.5, seed=1)]


def test_tables_carry_the_payload_numbers(metrics):
    shown = vr.verification_table(metrics, "clipfh")
    assert list(shown["model"]) == ["Weak · tiny-vit", "Strong · tiny-vit"]  # readable; internal names kept apart
    assert "experiment" not in vr.shown(shown).columns
    t = shown.set_index("experiment")
    for m in metrics:
        v = m["verification"]["clipfh"]
        assert t.loc[m["model"], "eer_mean"] == v["eer"]["mean"]
        assert t.loc[m["model"], "EER (%)"].startswith(f"{v['eer']['mean']:.2f} ± ")
        assert t.loc[m["model"], "genuine pairs"] == 971
    assert "FNMR @ FMR = 0.1 % (%)" in t.columns
    o = vr.openset_table(metrics, "mbanet").set_index("experiment")
    assert o.loc["strong", "fnir@fpir=0.1_mean"] < o.loc["weak", "fnir@fpir=0.1_mean"]
    assert o.loc["strong", "non-mated searches"] > 0


def test_reading_names_the_best_and_says_whether_intervals_separate(metrics):
    t = vr.verification_table(metrics, "clipfh")
    text = vr.reading(t, "clipfh")
    assert "lowest error is **Strong · tiny-vit**" in text and "At FNMR @ FMR = 1 %" in text
    assert "they are separated" in text  # signal 1.5 vs 0.3: far apart
    close = t.copy()
    close.loc[:, "eer_lo"], close.loc[:, "eer_hi"] = 1.0, 9.0
    assert "do not separate them" in vr.reading(close, "clipfh")


def test_figures_draw_one_curve_per_model(metrics):
    fig = vr.det_figure(metrics, "mbanet", "mbanet", "det_mbanet")
    assert fig.get_label() == "det_mbanet" and len(fig.axes[0].get_lines()) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["Weak · tiny-vit", "Strong · tiny-vit"]
    assert fig.axes[0].get_legend() is None and fig.axes[0].get_title() == ""  # key and caption outside the axes
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


def test_verification_figures_keep_texts_and_legends_inside_and_apart(metrics):
    from clipfh_utils.report.layout import layout_problems
    from clipfh_utils.report.style import TEXT_WIDTH, caption_of
    import matplotlib.pyplot as plt
    figs = [vr.det_figure(metrics, "mbanet", "mbanet", "det"), vr.roc_and_histograms(metrics, "clipfh", "clipfh", "roc"),
            vr.openset_figure(metrics, "clipfh", "clipfh", "os")]
    try:
        problems = {f.get_label(): layout_problems(f) for f in figs}
        assert not {k: v for k, v in problems.items() if v}, problems
        for f in figs:  # the caption travels beside the figure, not in it
            assert caption_of(f) and not f.get_suptitle() and f.get_size_inches()[0] <= TEXT_WIDTH + 1e-6
            assert all(ax.get_title() == "" for ax in f.axes)
    finally:
        for f in figs:
            plt.close(f)


def test_verification_figures_stay_readable_with_the_demos_six_models(metrics):
    """Six models (the demo): the key grows the figure, the axes and their labels stay inside."""
    from clipfh_utils.report.layout import layout_problems
    import matplotlib.pyplot as plt
    many = [{**m, "model": f"{m['model']}{i}", "method_title": f"A method with a long title {i}"}
            for i in range(3) for m in metrics]
    figs = [vr.det_figure(many, "mbanet", "mbanet", "det"), vr.roc_and_histograms(many, "clipfh", "clipfh", "roc"),
            vr.openset_figure(many, "clipfh", "clipfh", "os")]
    try:
        problems = {f.get_label(): layout_problems(f) for f in figs}
        assert not {k: v for k, v in problems.items() if v}, problems
        assert all(len(f.legends[0].get_texts()) == 6 for f in figs)
    finally:
        for f in figs:
            plt.close(f)
