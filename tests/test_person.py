"""Person re-identification benchmarks: Market-1501 / MSMT17 listings, the camera-aware evaluation
(cross-checked against a brute-force loop written from the protocol's definition), synthetic
people in Market's layout, and the whole path through the pipeline."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from clipfh_utils.config import SyntheticPersonCfg
from clipfh_utils.data.person import (BENCHMARKS, PersonLayoutError, PersonListing, build_person_protocol,
                                      check_published, scan_market, scan_msmt17)
from clipfh_utils.data.synthetic_person import generate_synthetic_person, layout
from clipfh_utils.evaluation import FeatureBank, evaluate_protocol, person_metrics

CFG = SyntheticPersonCfg(n_train_ids=5, n_test_ids=6, n_cameras=4, images_per_camera=2, n_distractors=3,
                         n_junk=3, size=(24, 48), seed=1)


# --------------------------------------------------------------------------- the evaluation

def brute_force(sim, q_pids, g_pids, q_cams, g_cams):
    """Per query, straight from the definition: rank the gallery (ties: gallery order), drop junk and
    the query identity's same-camera images, then the first match's rank and the mean precision at
    every match."""
    ranks, aps = [], []
    for i in range(len(q_pids)):
        order = sorted(range(len(g_pids)), key=lambda j: -sim[i][j])  # sorted() is stable
        kept = [j for j in order if g_pids[j] != -1 and not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        hits = [pos + 1 for pos, j in enumerate(kept) if g_pids[j] == q_pids[i]]
        ranks.append(hits[0])
        aps.append(sum((n + 1) / pos for n, pos in enumerate(hits)) / len(hits))
    return np.array(ranks), np.array(aps)


def random_case(rng, n_q=40, n_g=120, n_ids=8, n_cams=4, decimals=None):
    q_pids = rng.integers(1, n_ids + 1, n_q)
    g_pids = np.concatenate([np.arange(1, n_ids + 1).repeat(2), rng.choice([-1, 0, *range(1, n_ids + 1)], n_g - 2 * n_ids)])
    q_cams = rng.integers(1, n_cams + 1, n_q)
    g_cams = np.concatenate([np.tile([1, 2], n_ids), rng.integers(1, n_cams + 1, n_g - 2 * n_ids)])
    qf = torch.nn.functional.normalize(torch.randn(n_q, 16, generator=torch.Generator().manual_seed(int(rng.integers(1e6)))), dim=1)
    gf = torch.nn.functional.normalize(torch.randn(n_g, 16, generator=torch.Generator().manual_seed(int(rng.integers(1e6)))), dim=1)
    if decimals is not None:  # coarse similarities: many ties, exact in float32 whatever the summation
        step = 2.0 ** -(3 * decimals + 1)  # order of the matrix product (dyadic steps: 1/16 or 1/2)
        qf, gf = torch.round(qf / step) * step, torch.round(gf / step) * step
    return qf, gf, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed, decimals", [(0, None), (1, None), (2, 1), (3, 0)])
def test_camera_aware_metrics_match_a_brute_force_loop(seed, decimals, monkeypatch):
    import clipfh_utils.evaluation.person as person
    monkeypatch.setattr(person, "QUERY_CHUNK_ELEMENTS", 7 * 120)  # chunks of 7 queries, a ragged last one
    qf, gf, qp, gp, qc, gc = random_case(np.random.default_rng(seed), decimals=decimals)
    sim = (qf.float() @ gf.float().T).tolist()
    ranks, aps = brute_force(sim, qp.tolist(), gp.tolist(), qc.tolist(), gc.tolist())
    got = person_metrics(qf, gf, qp, gp, qc, gc, ks=(1, 5, 10), return_cmc=True, return_per_query=True)
    np.testing.assert_array_equal(got["rank"], ranks)
    np.testing.assert_allclose(got["ap"], aps, rtol=1e-6)
    for k in (1, 5, 10):
        assert got[f"rank{k}"] == pytest.approx((ranks <= k).mean() * 100)
    assert got["mAP"] == pytest.approx(aps.mean() * 100)
    assert got["cmc"][0] == pytest.approx(got["rank1"]) and got["cmc"][-1] == pytest.approx(100)
    assert 0 < got["rank1"] < 100  # a case where the removal and the ranking both matter


def test_ap_agrees_with_sklearn_on_each_querys_kept_gallery():
    qf, gf, qp, gp, qc, gc = random_case(np.random.default_rng(7))
    got = person_metrics(qf, gf, qp, gp, qc, gc, return_per_query=True)
    sim = (qf @ gf.T).numpy()
    for i in range(len(qp)):
        keep = (gp != -1) & ~((gp == qp[i]) & (gc == qc[i]))
        assert got["ap"][i] == pytest.approx(average_precision_score(gp[keep] == qp[i], sim[i, keep]), rel=1e-6)


def test_hand_computed_case_same_camera_junk_and_distractor():
    # gallery ranked by similarity: [same id, same cam] [junk] [distractor 0] [same id, other cam] [other id]
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.9, 0.44], [0.8, 0.6], [0.0, 1.0]])
    res = person_metrics(q, g, [5], [5, -1, 0, 5, 7], [1], [1, 2, 3, 2, 1], return_per_query=True)
    # removed: the same-camera match and the junk; kept order: distractor, match, other -> rank 2, AP 1/2
    assert res["rank"].tolist() == [2] and res["ap"].tolist() == [0.5] and res["rank1"] == 0.0 and res["rank5"] == 100.0
    with pytest.raises(ValueError, match="1 of 1 queries have no match of their identity in the gallery under another camera"):
        person_metrics(q, g[:1], [5], [5], [1], [1])


# --------------------------------------------------------------------------- synthetic Market layout

@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return generate_synthetic_person(tmp_path_factory.mktemp("person"), CFG)


def test_synthetic_people_have_markets_layout_and_are_deterministic(market, tmp_path):
    listing = scan_market(market, "market1501-synthetic")
    c = listing.counts()
    assert c["train_ids"] == 5 and c["query_ids"] == 6 and c["junk_images"] == 3 and c["distractor_images"] == 3
    cams: dict[int, set] = {}
    for im in listing.train + listing.query + listing.gallery:
        cams.setdefault(im.pid, set()).add(im.camera)
    assert all(len(v) >= 2 for pid, v in cams.items() if pid > 0)  # several cameras per identity
    assert any(q.camera in {g.camera for g in listing.gallery if g.pid == q.pid} for q in listing.query)
    again = generate_synthetic_person(tmp_path, CFG)
    files = sorted(p.relative_to(market) for p in market.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((market / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_person_protocol_is_one_fixed_split_scored_camera_aware(market):
    proto = build_person_protocol(scan_market(market, "market1501-synthetic"))
    assert proto.n_splits == 1 and proto.evaluations == ("person",)
    assert not any(r.person_id == "-1" for r in proto.galleries[0]) and any(r.label == 0 for r in proto.galleries[0])
    rng = np.random.default_rng(0)
    names = [r.image_name for r in proto.eval_rows()]
    bank = FeatureBank(torch.nn.functional.normalize(torch.tensor(rng.normal(size=(len(names), 8)), dtype=torch.float32), dim=1),
                       {n: i for i, n in enumerate(names)})
    pq: list = []
    df = evaluate_protocol(bank, proto, with_cmc=True, per_query=pq)
    assert df["protocol"].tolist() == ["person"] and len(pq[0]) == len(proto.queries[0])
    qf, ql = bank.take(proto.queries[0])
    gf, gl = bank.take(proto.galleries[0])
    ranks, aps = brute_force((qf @ gf.T).tolist(), ql.tolist(), gl.tolist(),
                             [proto.cameras[r.image_name] for r in proto.queries[0]],
                             [proto.cameras[r.image_name] for r in proto.galleries[0]])
    assert pq[0]["rank"].tolist() == ranks.tolist() and df["mAP"].iloc[0] == pytest.approx(aps.mean() * 100)


# --------------------------------------------------------------------------- bad input

def _copy(market: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(market, tmp_path / "Market"))


@pytest.mark.parametrize("how, message, names", [
    ("no_query", r"query: folder not found; a Market-1501 folder holds", "query"),
    ("bad_name", r"person 7.jpg: not named <pid>_c<cam>s<seq>_<frame>_<box>.jpg like Market-1501", "person 7.jpg"),
    ("camera", r"0001_c9s1_000001_00.jpg: camera 9 is outside 1..6", "0001_c9s1_000001_00.jpg"),
    ("absent", r"identity 99 is not in the gallery at all, so this query cannot be evaluated", "0099_c1s1_000001_00.jpg"),
    ("same_cam_only", r"is not in the gallery under no other camera", ""),
    ("junk_in_train", r"pid -1 \(junk/distractor\) in bounding_box_train/", "-1_c1s1_000001_00.jpg"),
])
def test_wrong_market_layout_is_a_one_line_error_naming_the_file(market, tmp_path, how, message, names):
    root = _copy(market, tmp_path)
    some = next((root / "query").glob("*.jpg"))
    if how == "no_query":
        shutil.rmtree(root / "query")
    elif how == "bad_name":
        shutil.copy(some, root / "bounding_box_train" / "person 7.jpg")
    elif how == "camera":
        shutil.copy(some, root / "bounding_box_test" / "0001_c9s1_000001_00.jpg")
    elif how == "absent":
        shutil.copy(some, root / "query" / "0099_c1s1_000001_00.jpg")
    elif how == "same_cam_only":
        pid, cam = some.name[:4], some.name[6]
        for g in (root / "bounding_box_test").glob(f"{pid}_*.jpg"):
            if g.name[6] != cam:
                g.unlink()
        message = rf"{some.name}: identity {int(pid)} is not in the gallery under no other camera"
    elif how == "junk_in_train":
        shutil.copy(some, root / "bounding_box_train" / "-1_c1s1_000001_00.jpg")
    with pytest.raises(PersonLayoutError, match=message) as e:
        scan_market(root, "market1501-synthetic")
    assert "\n" not in str(e.value) and names in str(e.value) and str(root) in str(e.value)


def _msmt(tmp_path: Path, extra: str = "") -> Path:
    root = tmp_path / "MSMT17"
    for d in ("train", "test"):
        (root / d).mkdir(parents=True)
    (root / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n0001/0001_000_02_0303morning_0016_0.jpg 1\n")
    (root / "list_val.txt").write_text("0000/0000_001_03_0303morning_0017_0.jpg 0\n")
    (root / "list_query.txt").write_text("0000/0000_000_01_0303noon_0001_0.jpg 0\n" + extra)
    (root / "list_gallery.txt").write_text("0000/0000_001_05_0303noon_0002_0.jpg 0\n0000/0000_002_01_0303noon_0003_0.jpg 0\n")
    return root


def test_msmt17_lists_are_read_as_clip_reid_reads_them_and_checked(tmp_path):
    listing = scan_msmt17(_msmt(tmp_path))
    c = listing.counts()
    assert (c["train_ids"], c["train_images"], c["query_images"], c["gallery_images"]) == (2, 3, 1, 2)  # train + val
    assert listing.query[0].name == "test/0000/0000_000_01_0303noon_0001_0.jpg" and listing.query[0].camera == 1
    with pytest.raises(PersonLayoutError, match=r"list_query.txt line 2: 'oops' is not '<folder>/<pid>_<k>_<cam>_"):
        scan_msmt17(_msmt(tmp_path / "a", "oops\n"))
    with pytest.raises(PersonLayoutError, match=r"list_query.txt line 2: camera 16 is outside 1..15"):
        scan_msmt17(_msmt(tmp_path / "b", "0000/0000_000_16_0303noon_0001_0.jpg 0\n"))
    root = _msmt(tmp_path / "c")
    (root / "list_val.txt").unlink()
    with pytest.raises(PersonLayoutError, match=r"list_val.txt: list file not found; an MSMT17 folder holds"):
        scan_msmt17(root)


def test_published_counts_are_checked_and_every_difference_named(market):
    listing = scan_market(market, "market1501-synthetic")
    real = PersonListing("market1501", listing.root, listing.train, listing.query, listing.gallery)
    with pytest.raises(PersonLayoutError, match=r"train_ids 5 \(published 751\); train_images \d+ \(published 12,936\);.*"
                                                r"not the complete Market-1501"):
        check_published(real)
    assert BENCHMARKS["msmt17"].published["query_images"] == 11659


# --------------------------------------------------------------------------- through the pipeline

@pytest.mark.slow
def test_person_dataset_runs_through_the_pipeline_camera_aware(tmp_path, capsys):
    from clipfh_utils.pipeline import open_run
    run = open_run("demo", tmp_path / "out", [
        "experiments=[stage1]", "backbones=[{name: tiny-vit}]", "protocol.n_splits=3",
        "datasets=[{dataset: market1501-synthetic}]", f"data.synthetic_dir={tmp_path / 's'}",
        "data.synthetic_person={n_train_ids: 4, n_test_ids: 5, size: [24, 48], seed: 2}"])
    out = capsys.readouterr()
    assert "SYNTHETIC people in the Market-1501 layout" in out.out
    assert "protocol.n_splits = 3 does not apply to market1501-synthetic" in out.out + out.err
    (res,) = run.run_stage("stage1", progress=False)
    assert res.dataset.key == "market1501-synthetic/person"
    payload = json.loads(res.metrics_files[""].read_text())
    assert {r["protocol"] for r in payload["per_split"]} == {"person"} and payload["real_data"] is False
    assert len(payload["identity"]["data"]["listing_sha256"]) == 64 and payload["n_splits"] == 1
    pq = res.per_query
    assert set(pq["protocol"]) == {"person"} and len(pq) == len(res.dataset.protocol().queries[0])
    # the published person table beside ours, on the benchmark the synthetic data stands in for
    from clipfh_utils.report import results
    table = results.comparison_table(results.invocation_metrics(tmp_path / "out"), "person", n_boot=50)
    assert list(table["benchmark"]) == ["Market-1501"] and results.protocols_of(results.invocation_metrics(tmp_path / "out")) == ["person"]
    pub = results.published_comparison(table)
    assert set(pub["benchmark"]) == {"Market-1501"} and set(pub["protocol"]) == {results.PROTOCOL_LABELS["person"]}
    theirs = pub[pub["source"].str.startswith("published")].set_index("method")
    assert (theirs.loc["CLIP-ReID ViT-B/16", "mAP (%)"], theirs.loc["PromptSG ViT-B/16", "Rank-1 (%)"]) == ("89.60", "97.00")
    assert len(theirs) == 4 and "SYNTHETIC images" in pub["source"].iloc[-1]  # Market's rows only, then ours
    assert "No comparison with a published number is like-for-like" in results.like_for_like(table)
    text = results.like_for_like(table.assign(real_data=True, pretrained=True))
    assert (f"- Market-1501, {results.PROTOCOL_LABELS['person']}: ours (zero_shot_tiny-vit) vs CLIP-ReID RN50, "
            "CLIP-ReID ViT-B/16, PromptSG RN50, PromptSG ViT-B/16.") in text


def test_published_person_csv_holds_the_papers_numbers():
    from clipfh_utils.report.results import PROTOCOL_LABELS, published_person
    t = published_person(PROTOCOL_LABELS["person"]).set_index(["aspect", "method"])
    assert len(t) == 8 and t["protocol"].str.startswith("person").all()
    assert (t.loc[("MSMT17", "CLIP-ReID ViT-B/16"), "mAP"], t.loc[("MSMT17", "CLIP-ReID ViT-B/16"), "rank1"]) == (73.4, 88.7)
    assert (t.loc[("MSMT17", "PromptSG ViT-B/16"), "mAP"], t.loc[("Market-1501", "PromptSG RN50"), "mAP"]) == (87.2, 91.8)


def test_person_profiles_carry_each_papers_settings():
    from clipfh_utils.backbones.loading import load_clip
    from clipfh_utils.config import load_profile
    from clipfh_utils.pipeline.resolve import resolve_experiments
    for name in ("market1501", "msmt17"):
        prof = load_profile(name)
        assert prof.protocol.n_splits == 1 and prof.datasets[0].dataset == name
        exps = {e.name: e.cfg for e in resolve_experiments(prof)}
        assert all(c.image_size == (256, 128) for c in exps.values()) and len(exps) == 6
        assert {n: c.backbone.normalize for n, c in exps.items()} == {
            "zero_shot_ViT-B-16": "half", "zero_shot_RN50": "imagenet", "stage2_person_vitb16": "half",
            "stage2_person_rn50": "imagenet", "stage3_person_vitb16": "half", "stage3_person_rn50": "imagenet"}
        vit, rn = exps["stage2_person_vitb16"], exps["stage2_person_rn50"]
        assert vit.prompt.template == "A photo of a X X X X person." and (vit.finetune.p, vit.finetune.k) == (16, 4)
        assert (vit.finetune.lr, vit.finetune.epochs, vit.finetune.milestones, vit.prompt.epochs) == (5e-6, 60, [30, 50], 120)
        assert (rn.finetune.lr, rn.finetune.epochs, rn.finetune.milestones, rn.backbone.last_stride) == (3.5e-4, 120, [40, 70], 1)
        for n in ("stage3_person_vitb16", "stage3_person_rn50"):
            o = exps[n].optim
            assert (o.lr, o.new_lr, o.epochs, o.step_size, o.gamma, o.p, o.k) == (5e-6, 5e-5, 60, 20, 0.1, 16, 4)
            assert exps[n].prompt.template == "A photo of a X person." and o.loss_weights["supcon"] == 0.5
    assert load_clip("tiny-vit", normalize="half").mean == (0.5, 0.5, 0.5)
    assert load_clip("tiny-rn", normalize="imagenet").std == (0.229, 0.224, 0.225)
    assert load_clip("tiny-vit").mean != (0.5, 0.5, 0.5)  # the model's own (CLIP's) by default


def test_retrieval_figure_shows_the_evaluated_rank_on_a_person_benchmark(market):
    import matplotlib
    matplotlib.use("Agg")
    from clipfh_utils.report.plotting import retrieval_grid
    proto = build_person_protocol(scan_market(market, "market1501-synthetic"))
    names = [r.image_name for r in proto.eval_rows()]
    feats = torch.nn.functional.normalize(torch.tensor(np.random.default_rng(1).normal(size=(len(names), 8)), dtype=torch.float32), dim=1)
    bank = FeatureBank(feats, {n: i for i, n in enumerate(names)})
    queries, gallery = proto.queries[0], proto.galleries[0]
    qf, ql = bank.take(queries)
    gf, gl = bank.take(gallery)
    ranks, _ = brute_force((qf @ gf.T).tolist(), ql.tolist(), gl.tolist(), [proto.cameras[r.image_name] for r in queries],
                           [proto.cameras[r.image_name] for r in gallery])
    fig = retrieval_grid(bank, torch.zeros(len(names), 3, 8, 4, dtype=torch.uint8), queries, gallery, k=3,
                         cameras=proto.cameras)
    shown = [int(ax.get_title().split("rank ")[1].split("\n")[0]) for ax in fig.axes if ax.get_title().startswith("true match")]
    assert shown == ranks.tolist() and max(shown) > 1


def test_an_interrupted_generation_leaves_no_dataset_that_looks_finished(tmp_path, monkeypatch):
    import clipfh_utils.data.synthetic_person as sp
    calls = {"n": 0}
    real = sp.draw_person

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sp, "draw_person", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_person(tmp_path, CFG)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" not in p.name]  # only the temporary folder
    monkeypatch.setattr(sp, "draw_person", real)
    root = generate_synthetic_person(tmp_path, CFG)
    assert scan_market(root, "market1501-synthetic").counts()["query_ids"] == 6 and not list(tmp_path.glob("*.tmp-*"))


def test_zero_shot_reading_of_one_fixed_split_names_no_split_sd():
    import pandas as pd
    from clipfh_utils.report import story
    row = {"model": "zs", "backbone": "tiny-vit", "stage": "stage1", "mAP_mean": 8.0, "mAP_ci_lo": 6.0, "mAP_ci_hi": 10.0,
           "rank1_mean": 3.0, "real_data": False, "pretrained": False}
    one = story.read_zero_shot(pd.DataFrame([{**row, "mAP_split_sd": float("nan")}]), pd.DataFrame())
    assert "(one fixed query/gallery split)" in one and "nan" not in one
    many = story.read_zero_shot(pd.DataFrame([{**row, "mAP_split_sd": 1.5}]), pd.DataFrame())
    assert "(sd over the splits 1.50)" in many and "the split sd only reflects" in many


def test_transfer_removal_of_seen_identities_keeps_the_camera_aware_evaluation(market):
    from clipfh_utils.pipeline.transfer import remove_identities
    proto = build_person_protocol(scan_market(market, "market1501-synthetic"))
    seen = sorted({r.person_id for r in proto.queries[0]})[:2]
    cut = remove_identities(proto, seen)
    assert type(cut) is type(proto) and cut.evaluations == ("person",) and cut.cameras == proto.cameras
    assert not {r.person_id for r in cut.queries[0] + cut.galleries[0]} & set(seen)
    assert len(cut.queries[0]) < len(proto.queries[0]) and any(r.label == 0 for r in cut.galleries[0])


@pytest.mark.parametrize("method, hand, person", [
    ("clip_reid", "stage2_vitb16", "stage2_person_vitb16"), ("clip_reid", "stage2_rn50", "stage2_person_rn50"),
    ("promptsg", "stage3_vitb16", "stage3_person_vitb16"), ("promptsg", "stage3_rn50", "stage3_person_rn50")])
def test_person_configs_differ_from_the_hand_recipes_only_in_the_person_settings(method, hand, person):
    """The recipes themselves live in the hand configs: a change there must reach the person copy."""
    import yaml
    from clipfh_utils.config import CONFIG_DIR
    a, b = (yaml.safe_load((CONFIG_DIR / method / f"{n}.yaml").read_text()) for n in (hand, person))
    assert b["image_size"] == [256, 128] and b["backbone"]["normalize"] in ("half", "imagenet")
    assert "person." in b["prompt"]["template"] and ("fixed" not in b["prompt"] or b["prompt"]["fixed"] == "A photo of a person.")
    for d in (a, b):
        for k in ("name", "image_size"):
            d.pop(k)
        d["backbone"].pop("normalize", None)
        d["prompt"] = {k: v for k, v in d["prompt"].items() if k not in ("template", "fixed")}
    assert a == b


def test_a_replacement_similarity_is_ranked_camera_aware_too():
    qf, gf, qp, gp, qc, gc = random_case(np.random.default_rng(5))
    flipped = lambda q, g: -(q @ g.T)  # noqa: E731
    got = person_metrics(qf, gf, qp, gp, qc, gc, return_per_query=True, similarity=flipped)
    ranks, aps = brute_force((-(qf @ gf.T)).tolist(), qp.tolist(), gp.tolist(), qc.tolist(), gc.tolist())
    assert got["rank"].tolist() == ranks.tolist() and got["mAP"] == pytest.approx(aps.mean() * 100)
