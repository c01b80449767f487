"""Reports a dissertation can use: the uncertainty numbers, the tables and their exports, figures,
the generated reading text, the index and the interactive explorer."""
import json
import re
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from clipfh_utils.evaluation import (cmc_from_ranks, identity_bootstrap, identity_scores,  # noqa: E402
                                     paired_bootstrap, seed_split_sd)
from clipfh_utils.report import export, plotting, results, story  # noqa: E402


# --------------------------------------------------------------------------- sd decomposition

def test_seed_and_split_sd_against_a_hand_computed_case():
    # seed 0: splits 1, 2, 3 (mean 2, sd 1); seed 1: 4, 6, 8 (mean 6, sd 2)
    per = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "split": [0, 1, 2] * 2,
                        "mAP": [1.0, 2.0, 3.0, 4.0, 6.0, 8.0]})
    s = seed_split_sd(per, ["mAP"]).loc["mAP"]
    assert s["mean"] == pytest.approx(4.0)
    assert s["seed_sd"] == pytest.approx(np.sqrt(8.0))  # sd([2, 6], ddof=1) = 2*sqrt(2)
    assert s["split_sd"] == pytest.approx(1.5)          # mean(1, 2)
    assert (s["n_seeds"], s["n_splits"]) == (2, 3)
    one = seed_split_sd(per[per.seed == 0], ["mAP"]).loc["mAP"]
    assert np.isnan(one["seed_sd"]) and one["split_sd"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- bootstrap

def _per_query():
    """Two splits, three identities: a (2 queries), b (1), c (1); values hand-picked."""
    return pd.DataFrame({
        "protocol": "clipfh", "seed": 0,
        "split": [0, 0, 0, 0, 1, 1, 1, 1],
        "query": ["a1", "a2", "b1", "c1", "a1", "a2", "b1", "c1"],
        "person_id": ["a", "a", "b", "c", "a", "a", "b", "c"],
        "rank": [1, 3, 1, 6, 2, 1, 1, 1],
        "ap": [1.0, 1 / 3, 1.0, 1 / 6, 0.5, 1.0, 1.0, 1.0]})


def test_bootstrap_statistic_with_explicit_identity_weights():
    s = identity_scores(_per_query(), "mAP")
    assert s.ids == ["a", "b", "c"]
    # all weights 1: the reported mAP = mean over splits of the mean over queries
    split0 = (1 + 1 / 3 + 1 + 1 / 6) / 4 * 100
    split1 = (0.5 + 1 + 1 + 1) / 4 * 100
    assert s.statistic(np.ones(3))[0] == pytest.approx((split0 + split1) / 2)
    # resample {a, a, c}: a's two queries count twice, b is gone
    w = np.array([[2.0, 0.0, 1.0]])
    s0 = (2 * (1 + 1 / 3) + 1 / 6) / 5 * 100
    s1 = (2 * (0.5 + 1) + 1) / 5 * 100
    assert s.statistic(w)[0] == pytest.approx((s0 + s1) / 2)
    r5 = identity_scores(_per_query(), "rank5")  # rank <= 5: every query but c1 in split 0
    assert r5.statistic(np.ones(3))[0] == pytest.approx((75.0 + 100.0) / 2)


def test_bootstrap_interval_is_seeded_and_covers_the_possible_resamples():
    rng = np.random.default_rng(0)
    many = pd.DataFrame({"split": 0, "person_id": [f"p{i % 40}" for i in range(200)],
                         "rank": rng.integers(1, 20, 200), "ap": rng.uniform(0, 1, 200)})
    first = identity_bootstrap(many, "mAP", n_boot=300, seed=7)
    assert first == identity_bootstrap(many, "mAP", n_boot=300, seed=7)    # seeded: reproducible
    assert first != identity_bootstrap(many, "mAP", n_boot=300, seed=8)
    pq = _per_query()
    a = identity_bootstrap(pq, "mAP", n_boot=4000, seed=7)
    assert a.n_ids == 3 and a.lo <= a.estimate <= a.hi
    # with 3 identities there are 10 possible resamples; the extremes are all-c and all-b/all-a
    s = identity_scores(pq, "mAP")
    singles = [s.statistic(np.eye(3)[i:i + 1] * 3)[0] for i in range(3)]
    assert min(singles) - 1e-9 <= a.lo and a.hi <= max(singles) + 1e-9
    # a single identity: every resample is the same, the interval collapses
    only_b = pq[pq.person_id == "b"]
    b = identity_bootstrap(only_b, "mAP", n_boot=100, seed=0)
    assert b.lo == b.hi == b.estimate == pytest.approx(100.0)


def _map_by_hand(pq: pd.DataFrame, counts: dict[str, int]) -> float:
    """mAP (%) of a resample in which identity i appears counts[i] times: per split, the mean AP
    over the resampled queries; then the mean over splits. Plain loops, independent of the code."""
    per_split = []
    for split in sorted(set(pq["split"])):
        num = den = 0.0
        for _, row in pq[pq["split"] == split].iterrows():
            num += counts[row["person_id"]] * row["ap"]
            den += counts[row["person_id"]]
        per_split.append(num / den * 100)
    return sum(per_split) / len(per_split)


def test_bootstrap_interval_against_the_exact_resampling_distribution():
    """3 identities: 10 possible resamples, each with probability ≥ 1/27 > 2.5 %, so the 95 %
    percentile interval is exactly [smallest, largest] resample mAP, computed here by hand."""
    import itertools
    pq = _per_query()
    values = [_map_by_hand(pq, {i: combo.count(i) for i in "abc"})
              for combo in itertools.combinations_with_replacement("abc", 3)]
    a = identity_bootstrap(pq, "mAP", n_boot=20000, seed=3)
    assert a.estimate == pytest.approx(_map_by_hand(pq, {"a": 1, "b": 1, "c": 1}))
    assert a.lo == pytest.approx(min(values)) and a.hi == pytest.approx(max(values))


def test_paired_bootstrap_uses_the_same_resamples_for_both():
    better = _per_query()
    worse = better.assign(ap=better["ap"] - 0.05)  # A: every query 5 AP points lower
    d = paired_bootstrap(worse, better, "mAP", n_boot=2000, seed=0)
    direct = identity_scores(better, "mAP").statistic(np.ones(3))[0] - identity_scores(worse, "mAP").statistic(np.ones(3))[0]
    assert d.estimate == pytest.approx(direct)
    assert d.lo == pytest.approx(5.0) and d.hi == pytest.approx(5.0) and d.excludes_zero()
    # unpaired intervals overlap here although B beats A on every identity: pairing is what resolves it
    a, b = identity_bootstrap(worse, "mAP", 2000, 0), identity_bootstrap(better, "mAP", 2000, 0)
    assert b.lo < a.hi
    pq = better
    same = paired_bootstrap(pq, pq, "mAP", n_boot=500, seed=0)
    assert same.lo == same.hi == same.estimate == 0.0  # identical models: no spread at all
    with pytest.raises(ValueError, match="same test identities"):
        paired_bootstrap(pq, pq[pq.person_id != "c"], "mAP")


def test_cmc_from_ranks_matches_the_definition():
    ranks = np.array([1, 2, 2, 5, 9])
    assert cmc_from_ranks(ranks, 5).tolist() == [20.0, 60.0, 60.0, 60.0, 80.0]


# --------------------------------------------------------------------------- comparison tables

def _payload(tmp: Path, model: str, stage: str, shift: float, seeds=(0,), backbone="tiny-vit") -> dict:
    """A metrics payload plus its per-query file, as the pipeline writes them."""
    rng = np.random.default_rng(zlib.crc32(model.encode()))  # str hash() differs per process
    rows, queries = [], []
    for s in seeds:
        for split in range(3):
            for proto in ("clipfh", "mbanet"):
                ranks = np.clip(rng.integers(1, 6, 12) - (shift > 0) * rng.integers(0, 2, 12), 1, None)
                q = pd.DataFrame({"protocol": proto, "split": split, "query": [f"q{i}" for i in range(12)],
                                  "person_id": [f"{1100 + i % 4:07d}" for i in range(12)], "rank": ranks,
                                  "ap": 1.0 / ranks, "seed": s})
                queries.append(q)
                rows.append({"protocol": proto, "split": split, "seed": s, "rank1": (ranks <= 1).mean() * 100,
                             "rank5": (ranks <= 5).mean() * 100, "rank10": (ranks <= 10).mean() * 100,
                             "mAP": q["ap"].mean() * 100})
    f = tmp / f"{model}.json"
    pd.concat(queries).to_csv(tmp / f"{model}.per_query.csv.gz", index=False, compression="gzip")
    m = {"run": f"{model}-abc", "experiment": model, "model": model, "method": "x", "stage": stage, "mode": "",
         "backbone": backbone, "dataset": "synthetic/dorsal_right", "split_seed": 0, "n_splits": 3,
         "seeds": list(seeds), "per_split": rows, "data": "SYNTHETIC", "weights": "random init",
         "real_data": False, "pretrained": False, "train": {str(s): {"seconds": 10.0 + s, "images_per_s": 100.0}
                                                            for s in seeds} if stage != "stage1" else {},
         "embed_images_per_s": {"0": 500.0}}
    f.write_text(json.dumps(m))
    return {**m, "metrics_file": str(f)}


def test_comparison_table_reports_both_sds_and_an_interval(tmp_path):
    zs = _payload(tmp_path, "zero_shot", "stage1", 0.0)
    ft = _payload(tmp_path, "fine_tuned", "stage2", 1.0, seeds=(0, 1))
    t = results.comparison_table([zs, ft], "clipfh", n_boot=500).set_index("model")
    per = pd.DataFrame(ft["per_split"])
    per = per[per.protocol == "clipfh"]
    by_seed = per.groupby("seed")["mAP"]
    assert t.loc["fine_tuned", "mAP_mean"] == pytest.approx(by_seed.mean().mean())
    assert t.loc["fine_tuned", "mAP_seed_sd"] == pytest.approx(by_seed.mean().std(ddof=1))
    assert t.loc["fine_tuned", "mAP_split_sd"] == pytest.approx(by_seed.std(ddof=1).mean())
    assert np.isnan(t.loc["zero_shot", "mAP_seed_sd"])  # one seed: no seed sd, never a pooled one
    for m in ("rank1", "rank5", "mAP"):
        assert (t[f"{m}_ci_lo"] <= t[f"{m}_mean"] + 1e-9).all() and (t[f"{m}_mean"] <= t[f"{m}_ci_hi"] + 1e-9).all()
    assert t.loc["fine_tuned", "train_s"] == pytest.approx(10.5) and t.loc["fine_tuned", "test_ids"] == 4
    shown = results.display_table(t.reset_index())
    assert "mAP sd seeds" in shown and "mAP sd splits" in shown and "n (seeds × splits)" in shown
    # readable labels (method · backbone); two experiments of one method on one backbone add their name
    assert list(shown["model"]) == ["x · tiny-vit [zero_shot]", "x · tiny-vit [fine_tuned]"]
    assert shown.set_index("model").loc["x · tiny-vit [zero_shot]", "mAP sd seeds"] == "—"
    assert shown.set_index("model").loc["x · tiny-vit [fine_tuned]", "n (seeds × splits)"] == "2 × 3"
    # displayed rounding: metric 1 decimal with a 1-decimal interval, sd 2 decimals
    ft_row = t.loc["fine_tuned"]
    assert shown.set_index("model").loc["x · tiny-vit [fine_tuned]", "mAP (%)"] == \
        f"{ft_row['mAP_mean']:.1f} [{ft_row['mAP_ci_lo']:.1f}, {ft_row['mAP_ci_hi']:.1f}]"
    assert shown.set_index("model").loc["x · tiny-vit [fine_tuned]", "mAP sd seeds"] == f"{ft_row['mAP_seed_sd']:.2f}"
    note = results.table_note(t)
    assert "4 test identities" in note and "understates" in note and "n = seeds × splits" in note


def test_paired_table_pairs_same_backbone_and_gives_a_verdict(tmp_path):
    zs = _payload(tmp_path, "zero_shot", "stage1", 0.0)
    ft = _payload(tmp_path, "fine_tuned", "stage2", 1.0)
    other = _payload(tmp_path, "rn", "stage1", 0.0, backbone="tiny-rn")
    pairs = results.paired_table([zs, ft, other], "clipfh", n_boot=300)
    assert list(zip(pairs["A"], pairs["B"])) == [("zero_shot", "fine_tuned")]
    row = pairs.iloc[0]
    assert row["d_mAP_lo"] <= row["d_mAP"] <= row["d_mAP_hi"]
    assert row["verdict"] == ("B better" if row["d_mAP_lo"] > 0 else "A better" if row["d_mAP_hi"] < 0
                              else "not resolved")
    assert row["verdict"] == "B better" and row["d_mAP_lo"] > 0  # the fine-tuned payload ranks its matches higher
    # the same queries under another name: no difference, an interval of [0, 0], nothing resolved
    same = results.paired_table([zs, {**zs, "model": "zs_again", "run": "zs_again-abc"}], "clipfh", n_boot=100)
    assert same.iloc[0][["d_mAP", "d_mAP_lo", "d_mAP_hi"]].tolist() == [0.0, 0.0, 0.0]
    assert same.iloc[0]["verdict"] == "not resolved"
    backwards = results.paired_table([ft, zs], "clipfh", n_boot=300).iloc[0]
    assert backwards["verdict"] == "A better" and backwards["d_mAP"] == pytest.approx(-row["d_mAP"])
    assert len(results.paired_table([zs, ft, other], "clipfh", same_backbone=False, n_boot=50)) == 3


def test_reading_text_follows_the_numbers():
    table = pd.DataFrame({"model": ["zs", "ft"], "stage": ["stage1", "stage2"], "backbone": ["b", "b"],
                          "protocol": "clipfh", "mAP_mean": [20.0, 60.0], "mAP_ci_lo": [15.0, 50.0],
                          "mAP_ci_hi": [25.0, 70.0], "rank1_mean": [10.0, 40.0], "mAP_seed_sd": [np.nan, 2.0],
                          "mAP_split_sd": [1.0, 3.0], "real_data": False, "pretrained": False})
    pairs = pd.DataFrame({"A": ["zs"], "B": ["ft"], "backbone": ["b"], "d_mAP": [40.0], "d_mAP_lo": [30.0],
                          "d_mAP_hi": [50.0], "d_rank1": [30.0]})
    text = story.read_comparison(table, pairs)
    assert "not a hand-identification result" in text and "synthetic" in text and "random weights" in text
    assert "**ft**" in text.split("\n\n")[1] and "40.0 mAP points lower" in text
    assert "+40.0 mAP points" in text and "**ft** is better: the interval excludes 0 and the difference is 20.0× " \
        "the larger seed sd (2.00)" in text
    close = pairs.assign(d_mAP=[1.0], d_mAP_lo=[-2.0], d_mAP_hi=[4.0])
    text = story.read_comparison(table, close)
    assert "; not resolved: the interval includes 0." in text and "better" not in text  # one conclusion
    inside = pairs.assign(d_mAP=[1.0], d_mAP_lo=[0.5], d_mAP_hi=[1.5])  # resolved interval, within the seed sd
    text = story.read_comparison(table, inside)
    assert "not resolved: the interval excludes 0, but the difference is within the seed-to-seed spread" in text
    assert "better" not in text
    real = table.assign(real_data=True, pretrained=True)
    assert "not a hand-identification" not in story.read_comparison(real, pairs)
    # two datasets: a best model on each, never one test set's number against another's
    two = pd.concat([table.assign(dataset="11k"), table.assign(dataset="hd", mAP_mean=[30.0, 35.0])],
                    ignore_index=True)
    text = story.read_comparison(two, pairs.iloc[:0])
    assert "protocol on 11k the best model is **ft**" in text and "protocol on hd the best model is **ft**" in text
    assert "40.0 mAP points lower" in text and "5.0 mAP points lower" in text


def test_published_numbers_are_like_for_like_only_on_real_data(tmp_path):
    t = results.comparison_table([_payload(tmp_path, "zs", "stage1", 0.0)], "clipfh", n_boot=50)
    pub = results.published_comparison(t)
    assert (pub["protocol"] == results.PROTOCOL_LABELS["clipfh"]).sum() == 7  # 6 published + ours
    assert set(pub["benchmark"]) == {"dorsal right"}
    assert "No comparison with a published number is like-for-like" in results.like_for_like(t)
    real = t.assign(real_data=True, pretrained=True)
    text = results.like_for_like(real)
    assert "Like-for-like" in text and "Dissertation Stage 1 ViT-B/16 zero-shot" in text and "MBA-Net" not in text


def test_published_numbers_sit_beside_ours_per_benchmark(tmp_path):
    """All four 11k aspects and HD: each of our models beside the published numbers of its own
    aspect only (MBA-Net publishes one per 11k aspect), and HD said to have none."""
    payloads = []
    for ds, aspect in (("11k/dorsal_right", "dorsal right"), ("11k/palmar_left", "palmar left"), ("hd/dorsal", "dorsal")):
        m = _payload(tmp_path, f"zs_{aspect.replace(' ', '_')}", "stage1", 0.0)
        payloads.append({**m, "dataset": ds, "aspect": aspect, "real_data": True, "pretrained": True})
    mb = results.comparison_table(payloads, "mbanet", n_boot=20)
    pub = results.published_comparison(mb)
    assert list(dict.fromkeys(pub["benchmark"])) == ["dorsal right", "palmar left", "HD dorsal"]
    mba = pub[pub["method"].str.startswith("MBA-Net")]
    assert list(mba["benchmark"]) == ["dorsal right", "palmar left"]
    assert list(mba["mAP (%)"]) == ["97.98", "97.84"]  # data/published_11k.csv, per aspect
    ours = pub[pub["method"].str.endswith("(this run)")]
    assert list(zip(ours["benchmark"], ours["method"])) == [
        ("dorsal right", "zs_dorsal_right (this run)"), ("palmar left", "zs_palmar_left (this run)"),
        ("HD dorsal", "zs_dorsal (this run)")]
    text = results.like_for_like(mb)
    assert "- palmar left, mbanet: gallery_all, trapezoid AP: ours (zs_palmar_left) vs MBA-Net" in text
    assert "- HD dorsal: no published number to compare with." in text and "zs_palmar_left) vs ABD" not in text


# --------------------------------------------------------------------------- exports

PROV = export.Provenance("0123456789abcdef" * 2 + "01234567", False, "20260101-000000-abcd", "nb",
                         ["demo_tiny_vit-1a2b3c4d5e", "zero_shot_tiny-vit-9f8e7d6c5b"], "SYNTHETIC")


def test_each_figure_is_written_in_three_formats_with_provenance(tmp_path):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [1, 4, 9])
    paths = export.save_figure(fig, tmp_path / "figs", "curve", PROV)
    assert [p.suffix for p in paths] == [".pdf", ".svg", ".png"] and all(p.stat().st_size > 0 for p in paths)
    with Image.open(tmp_path / "figs" / "curve.png") as im:
        assert im.info["dpi"][0] == pytest.approx(300, abs=1)
        assert im.info["Commit"] == PROV.commit and "demo_tiny_vit-1a2b3c4d5e" in im.info["Runs"]
    pdf = (tmp_path / "figs" / "curve.pdf").read_bytes()
    assert PROV.commit[:12].encode() in pdf and b"demo_tiny_vit-1a2b3c4d5e" in pdf
    svg = (tmp_path / "figs" / "curve.svg").read_text()
    assert "demo_tiny_vit-1a2b3c4d5e" in svg and PROV.commit in svg
    assert not list((tmp_path / "figs").glob(".*"))  # no temporary files left behind
    plt.close(fig)


def parse_latex_table(tex: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and body rows of a booktabs tabular (fails unless the structure is right)."""
    assert tex.count("\\begin{tabular}") == 1 and tex.count("\\end{tabular}") == 1
    body = tex[tex.index("\\begin{tabular}"):tex.index("\\end{tabular}")]
    ncols = len(re.match(r"\\begin\{tabular\}\{([lrc]+)\}", body).group(1))
    head = body[body.index("\\toprule") + len("\\toprule"):body.index("\\midrule")]
    rows = body[body.index("\\midrule") + len("\\midrule"):body.index("\\bottomrule")]

    def cells(line: str) -> list[str]:
        parts = re.split(r"(?<!\\)&", line.strip().removesuffix("\\\\").strip())
        assert len(parts) == ncols, line
        return [p.strip() for p in parts]
    head_lines = [ln for ln in head.strip().splitlines() if ln.strip()]
    assert len(head_lines) == 1
    return cells(head_lines[0]), [cells(ln) for ln in rows.strip().splitlines() if ln.strip()]


def test_latex_table_parses_with_a_header_and_a_row_per_experiment(tmp_path):
    zs = _payload(tmp_path, "zero_shot_tiny-vit", "stage1", 0.0)
    ft = _payload(tmp_path, "demo_tiny_vit", "stage2", 1.0, seeds=(0, 1))
    table = results.comparison_table([zs, ft], "clipfh", n_boot=100)
    shown = results.display_table(table)
    csv, tex = export.save_table(shown, tmp_path / "tables", "comparison_clipfh", PROV, caption="Results 100% & more",
                                 note="a_b ± c", data=table)
    parts = sorted(tex.parent.glob("comparison_clipfh*.tex"))
    assert tex in parts and any(p.stem.endswith("_spread") for p in parts)  # wide: split, spread apart
    heads = []
    for part in parts:  # each part: the label column first, a row per experiment
        head, rows = parse_latex_table(part.read_text())
        assert head[0] == "model" and [r[0] for r in rows] == [
            "x $\\cdot$ tiny-vit [zero\\_shot\\_tiny-vit]", "x $\\cdot$ tiny-vit [demo\\_tiny\\_vit]"]
        heads += [re.sub(r"^\\shortstack\[[lr]\]\{(.*)\\\\ (.*)\}$", r"\1 \2", h) for h in head[1:]]  # 2-line headers
    # every column once, but the backbone, which each label already names
    assert sorted(heads) == sorted(export.latex_escape(c) for c in shown.columns[1:] if c != "backbone")
    text = tex.read_text()
    assert "\\toprule" in text and "\\caption{Results 100\\% \\& more}" in text and "$\\pm$" in text
    assert PROV.commit[:12] in text.splitlines()[1]
    back = pd.read_csv(csv)
    assert len(back) == 2 and back["mAP_mean"].tolist() == pytest.approx(table["mAP_mean"].tolist())
    assert (back["commit"] == PROV.commit).all() and (back["invocation"] == PROV.invocation).all()


def test_latex_escaping():
    assert export.latex_escape("a_b & 5% #1 {x} ~ ^ \\") == \
        "a\\_b \\& 5\\% \\#1 \\{x\\} \\textasciitilde{} \\textasciicircum{} \\textbackslash{}"
    assert export.latex_escape("71.4 ± 1.0 — 3 × 4") == "71.4 $\\pm$ 1.0 --- 3 $\\times$ 4"
    assert export.latex_escape("λ (supcon) ↔ text") == "$\\lambda$ (supcon) $\\leftrightarrow$ text"


def test_ablation_settings_in_a_table_read_as_configured():
    """Settings merged beside the metrics: 2 (not 2.0) blocks, "—" where a setting does not apply."""
    table = pd.DataFrame({"model": ["a", "b"], "stage": ["stage3"] * 2, "backbone": ["vit"] * 2,
                          "blocks": [2.0, None], "λ (supcon)": [0.5, 0.0]})
    for m in results.METRICS:
        table[m], table[f"{m}_seed_sd"], table[f"{m}_split_sd"] = "x", float("nan"), 1.0
    table = table.assign(seeds=1, splits=10, train_s=None, train_img_s=None, embed_img_s=None)
    shown = results.display_table(table, extra=["blocks", "λ (supcon)"])
    assert list(shown.columns[:5]) == ["model", "stage", "backbone", "blocks", "λ (supcon)"]
    assert list(shown["blocks"]) == ["2", "—"] and list(shown["λ (supcon)"]) == ["0.5", "0"]
    assert export.latex_table(shown).isascii()


def test_index_links_exported_figures_and_tables(tmp_path):
    from clipfh_utils.report.index import render_index
    from clipfh_utils.runs import new_invocation
    out = tmp_path / "out"
    inv = new_invocation(out, {"profile": "demo"})
    fig, ax = plt.subplots()
    export.save_figure(fig, out / "invocations" / inv / "figures" / "01_x", "cmc_clipfh", PROV)
    export.save_table(pd.DataFrame({"a": [1]}), out / "invocations" / inv / "tables" / "04_y", "comparison", PROV)
    plt.close(fig)
    html = render_index(out, inv, base=f"invocations/{inv}/")
    for suffix in ("pdf", "svg", "png"):
        assert f'href="invocations/{inv}/figures/01_x/cmc_clipfh.{suffix}"' in html
    assert f'href="invocations/{inv}/tables/04_y/comparison.tex"' in html
    assert f'href="invocations/{inv}/tables/04_y/comparison.csv"' in html


# --------------------------------------------------------------------------- figures

def test_cmc_band_has_integer_rank_ticks_and_a_band():
    curves = {"m": np.array([[10, 50, 80.0], [20, 60, 70.0]])}  # 3 ranks: matplotlib alone ticks 1.5, 2.5
    fig = plotting.cmc_band(curves, max_rank=3)
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ax.get_ylim() == (0, 100) and ax.get_xlabel() and ax.get_ylabel()
    assert len(ax.collections) == 1  # the ±sd band
    assert np.allclose(ax.lines[0].get_ydata(), [15, 55, 75])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(15 - np.std([10, 20], ddof=1)) and band.max() == pytest.approx(75 + np.std([80, 70], ddof=1))
    assert fig.get_label() == "cmc"
    plt.close(fig)


def _epochs_log() -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for e in range(1, 6):
            rows.append({"phase": "prompt", "epoch": e, "seed": seed, "total": 8.30 - 0.001 * e,
                         "lr_prompt": 1e-3 * e / 5})
        for e in range(1, 9):
            rows.append({"phase": "finetune", "epoch": e, "seed": seed, "total": 5.0 / e, "id": 3.0 / e,
                         "lr_weights": 1e-4, "lr_heads": 1e-4, "lr_bias": 2e-4,
                         **({"val_mAP": 20.0 + 5 * e + seed, "val_rank1": 10.0 + 4 * e} if e % 4 == 0 else {})})
    return pd.DataFrame(rows)


def test_training_curves_are_labelled_honest_and_distinguishable():
    fig = plotting.training_curves(_epochs_log(), title="t")
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(axes) == 4 and all(ax.get_ylabel() and ax.get_xlabel() for ax in axes)
    prompt = axes[0]
    assert prompt.get_ylim()[0] == 0  # a 0.06 % change does not fill the panel
    assert "-0.0 %" in prompt.get_legend().get_texts()[0].get_text()
    lr = axes[2]
    labels = [t.get_text() for t in lr.get_legend().get_texts()]
    assert "finetune: weights = heads" in labels and "finetune: bias" in labels  # equal schedules named together
    curves = [line for line in lr.lines if not line.get_label().startswith("_")]
    styles = {(str(line.get_linestyle()), line.get_color(), line.get_marker()) for line in curves}
    assert len(curves) == 3 and len(styles) == 3  # no two learning-rate lines look alike
    val = axes[3]
    assert len(val.lines) == 4 and "validation" in val.get_title()  # 2 metrics × 2 seeds
    plt.close(fig)


def test_retrieval_grid_shows_similarity_marks_and_the_true_match_rank():
    from clipfh_utils.data.protocol import SplitRow
    from clipfh_utils.evaluation import FeatureBank
    q = SplitRow("q.jpg", "0001100", "dorsal right", 1100)
    gallery = [SplitRow(f"g{i}.jpg", f"{1100 + i:07d}", "dorsal right", 1100 + i) for i in range(4)]
    feats = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0, 0], [0.2, 1, 0], [0.9, 0.1, 0], [0.1, 0, 1], [0.5, 0.5, 0.5]]), dim=1)
    bank = FeatureBank(feats, {"q.jpg": 0, **{g.image_name: i + 1 for i, g in enumerate(gallery)}})
    images = torch.zeros(5, 3, 8, 8, dtype=torch.uint8)
    fig = plotting.retrieval_grid(bank, images, [q], gallery, k=2)
    titles = [ax.get_title() for ax in fig.axes]
    sims = (feats[0] @ feats[1:].T).tolist()
    order = sorted(range(4), key=lambda i: -sims[i])
    true_rank = order.index(0) + 1
    assert titles[1].startswith("✗") and f"{sims[order[0]]:.2f}" in titles[1]
    assert f"true match: rank {true_rank}" in titles[-1]
    plt.close(fig)


def test_explorer_draws_the_chosen_query_and_the_worst_failures(tiny_dataset):
    from clipfh_utils.data.handinfo import load_handinfo
    from clipfh_utils.data.protocol import build_protocol
    from clipfh_utils.evaluation import FeatureBank, evaluate_protocol
    from clipfh_utils.report.explorer import RetrievalExplorer
    csv, _ = tiny_dataset
    proto = build_protocol(load_handinfo(csv, check_sha256=False), "dorsal right", 0, 2)
    rows = proto.eval_rows()
    feats = torch.nn.functional.normalize(torch.randn(len(rows), 8, generator=torch.Generator().manual_seed(0)), dim=1)
    bank = FeatureBank(feats, {r.image_name: i for i, r in enumerate(rows)})
    pq = []
    evaluate_protocol(bank, proto, per_query=pq)
    ex = RetrievalExplorer({"m": (bank, torch.zeros(len(rows), 3, 8, 8, dtype=torch.uint8), pd.concat(pq), proto)})
    assert ex.last == "explorer_retrieval"
    # the controls show what is drawn: the first query, named in the figure's title; wide enough
    assert ex.query.value == 0 and ex.query.label.startswith(proto.queries[0][0].image_name)
    assert not ex.query.disabled and ex.query.layout.width == "34em"
    ex.view.value = "worst failures"
    assert ex.last == "explorer_failures" and ex.query.disabled  # inert in this view: disabled
    ex.view.value = "one query"
    assert not ex.query.disabled
    ex.split.value = 1
    assert len(ex.query.options) == len(proto.queries[1]) and ex.last == "explorer_retrieval"
    # a model evaluated on another protocol (another dataset): its own splits and queries
    other = build_protocol(load_handinfo(csv, check_sha256=False), "dorsal right", 1, 3)
    rows2 = other.eval_rows()
    bank2 = FeatureBank(torch.nn.functional.normalize(torch.randn(len(rows2), 8), dim=1), {r.image_name: i for i, r in enumerate(rows2)})
    pq2 = []
    evaluate_protocol(bank2, other, per_query=pq2)
    ex = RetrievalExplorer({"m": (bank, torch.zeros(len(rows), 3, 8, 8, dtype=torch.uint8), pd.concat(pq), proto),
                            "n": (bank2, torch.zeros(len(rows2), 3, 8, 8, dtype=torch.uint8), pd.concat(pq2), other)})
    assert ex.split.max == 1
    ex.query.value = 3  # a query picked: a model change resets it, which must not draw on its own
    draws = []
    show = ex._show
    ex._show = lambda draw: (draws.append(1), show(draw))
    ex.model.value = "n"
    assert ex.split.max == 2 and len(draws) == 1  # one change, one figure (not one per reset widget)
    ex.split.value = 2
    assert [q for _, q in ex.query.options] == list(range(len(other.queries[2]))) and len(draws) == 2


def test_attention_reading_names_the_concentrated_region_and_what_training_changed():
    regions = ["background", "fingers", "knuckles", "back of hand / palm", "wrist"]
    area = pd.Series([70.0, 10.0, 5.0, 10.0, 5.0], index=regions)
    table = pd.DataFrame([["zs", "stage1", "vit", "rollout", 70.0, 10.0, 5.0, 10.0, 5.0, 9],
                          ["ft", "stage2", "vit", "rollout", 40.0, 10.0, 30.0, 15.0, 5.0, 9]],
                         columns=["model", "stage", "backbone", "map", *regions, "maps"],
                         index=["zs · rollout", "ft · rollout"])
    text = story.read_attention(table, area, real_data=False)
    assert "synthetic" in text
    assert "**ft · rollout**: 30.0 % on the knuckles (6.0× its 5.0 % of the image)" in text
    assert "**ft** puts 40.0 % on the background against 70.0 % zero-shot" in text
    assert "the knuckles (+25.0 points)" in text
