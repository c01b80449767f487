"""Cross-dataset / cross-aspect transfer: seen identities removed (checked against the metadata
by brute force), distractors kept, both datasets recorded, the train-set x test-set table, and
the diagonal equal to the in-domain evaluation."""
import csv
import json

import pandas as pd
import pytest

from clipfh_utils.config import ConfigError
from clipfh_utils.data.datasets import HandDataset
from clipfh_utils.data.protocol import Protocol, SplitRow
from clipfh_utils.data.synthetic import render_images_for_handinfo
from clipfh_utils.pipeline import load_run, open_run
from clipfh_utils.pipeline.transfer import evaluate_transfer, remove_identities
from clipfh_utils.report.results import invocation_metrics
from clipfh_utils.report.transfer import invocation_transfers, transfer_matrix, transfer_table

# ids straddle the aspects' thresholds (dorsal right 1050, dorsal left 1037, palmar left 1042)
DORSAL_IDS = [1030, 1031, 1032, 1033, 1040, 1041, 1045, 1060, 1061, 1062]
PALMAR_LEFT_IDS = [1030, 1031, 1045]
PALMAR_RIGHT_IDS = [1030, 1060]  # every aspect needs a training and a test id


@pytest.fixture(scope="module")
def hands(tmp_path_factory):
    root = tmp_path_factory.mktemp("straddle")
    rows, n = [], 0
    for aspect, ids in (("dorsal right", DORSAL_IDS), ("dorsal left", DORSAL_IDS), ("palmar left", PALMAR_LEFT_IDS),
                        ("palmar right", PALMAR_RIGHT_IDS)):
        for i in ids:
            for _ in range(3):
                n += 1
                rows.append([f"{i:07d}", 30, "male", "fair", 0, 0, aspect, f"Hand_{n:07d}.jpg", 0])
    with open(root / "HandInfo.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "age", "gender", "skinColor", "accessories", "nailPolish", "aspectOfHand", "imageName",
                    "irregularities"])
        w.writerows(rows)
    render_images_for_handinfo(root / "HandInfo.csv", root / "Hands", size=(48, 36))
    return root, rows


def dataset(root, aspect) -> HandDataset:
    return HandDataset("synthetic", aspect, root / "HandInfo.csv", root / "Hands", root / "splits", root / "cache",
                       "SYNTHETIC test hands straddling the id thresholds", 0, 2)


def brute_force_seen(rows) -> list[str]:
    """Dorsal-right training ids (<= 1050) that are dorsal-left test ids (> 1037), from the CSV."""
    dr_train = {r[0] for r in rows if r[6] == "dorsal right" and int(r[0]) <= 1050}
    dl_test = {r[0] for r in rows if r[6] == "dorsal left" and int(r[0]) > 1037}
    return sorted(dr_train & dl_test, key=int)


@pytest.fixture(scope="module")
def trained(hands, tmp_path_factory):
    root, _ = hands
    run = open_run("demo", tmp_path_factory.mktemp("out"), [
        "experiments=[stage1, cnn_baseline/demo_tiny_resnet]", "backbones=[{name: tiny-vit}]", "protocol.n_splits=2",
        "demo_tiny_resnet.train.epochs=1", "demo_tiny_resnet.train.p=4", "demo_tiny_resnet.train.k=2",
        "demo_tiny_resnet.train.monitor_every=0"])
    run.datasets = [dataset(root, "dorsal right")]
    (res,) = run.run_stage("baseline", progress=False)
    (zs,) = run.run_stage("stage1", progress=False)
    return run, res, zs


@pytest.mark.slow
def test_identities_seen_in_training_are_removed_and_both_datasets_recorded(hands, trained):
    root, rows = hands
    run, res, _ = trained
    dl = dataset(root, "dorsal left")
    expected = brute_force_seen(rows)
    assert expected == ["0001040", "0001041", "0001045"]
    (tr,) = evaluate_transfer(run, res, dl)
    assert tr.removed_ids == expected and tr.train_dataset == "synthetic/dorsal_right" and tr.test_dataset == dl.key
    left = {f"{i:07d}" for i in (1060, 1061, 1062)}
    for proto_name in ("clipfh", "mbanet"):
        q = tr.per_query[(tr.per_query["protocol"] == proto_name) & (tr.per_query["split"] == 0)]
        assert set(q["person_id"]) == left and len(q) == 3 * (3 - 1)  # 3 ids x (3 images - 1 gallery)
    payload = json.loads(tr.metrics_file.read_text())
    assert tr.metrics_file.parent == res.run_dir / "metrics" and tr.metrics_file.name.startswith("transfer__")
    assert payload["train_dataset"] == "synthetic/dorsal_right" and payload["test_dataset"] == "synthetic/dorsal_left"
    assert payload["transfer"]["removed_ids"] == expected and payload["transfer"]["test_ids"] == 3
    assert payload["real_data"] is False and "SYNTHETIC" in payload["data"] and payload["run"] == res.run_name
    assert len(payload["environment"]["git_commit"]) == 40 and payload["invocation"] == run.invocation
    # the comparison of in-domain results does not mix transfers in
    assert {m["dataset"] for m in invocation_metrics(run.run_dir, run.invocation)} == {"synthetic/dorsal_right"}


@pytest.mark.slow
def test_a_run_on_its_own_dataset_gets_its_in_domain_numbers(trained):
    run, res, _ = trained
    (tr,) = evaluate_transfer(run, res.run_name, run.dataset)
    assert tr.removed_ids == []
    own = res.per_split.drop(columns=["cmc", "mode"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(tr.per_split[own.columns].reset_index(drop=True), own)


@pytest.mark.slow
def test_zero_shot_transfers_remove_nobody(hands, trained):
    root, _ = hands
    run, _, zs = trained
    (tr,) = evaluate_transfer(run, load_run(zs.run_dir, device="cpu"), dataset(root, "dorsal left"))
    assert tr.removed_ids == [] and tr.train_dataset is None
    q = tr.per_query[tr.per_query["split"] == 0]
    assert len(set(q["person_id"])) == 6  # every dorsal-left test id is kept


@pytest.mark.slow
def test_everything_seen_is_an_error_and_old_runs_say_what_to_do(hands, trained):
    root, _ = hands
    run, res, _ = trained
    with pytest.raises(ValueError, match="trained on every test identity of synthetic/palmar_left"):
        evaluate_transfer(run, res, dataset(root, "palmar left"))  # its one test id, 1045, was seen
    rec_file = res.run_dir / "run.json"
    rec = json.loads(rec_file.read_text())
    rec_file.write_text(json.dumps({k: v for k, v in rec.items() if k != "train_ids"}))
    try:
        with pytest.raises(ConfigError, match="does not list its training identities"):
            evaluate_transfer(run, res, dataset(root, "dorsal left"))
    finally:
        rec_file.write_text(json.dumps(rec))


@pytest.mark.slow
def test_the_train_by_test_table_says_how_many_were_removed(hands, trained):
    root, _ = hands
    run, res, zs = trained
    dr, dl = run.dataset, dataset(root, "dorsal left")
    for source in (res, zs):
        for target in (dr, dl):
            evaluate_transfer(run, source, target)
    metrics = invocation_transfers(run.run_dir, run.invocation)
    table = transfer_table(metrics, "clipfh")
    assert len(table) == 4
    cell = table.set_index(["model", "train set", "test set"])
    assert cell.loc[("demo_tiny_resnet", dr.key, dl.key), "removed ids"] == 3
    assert cell.loc[("demo_tiny_resnet", dr.key, dr.key), "removed ids"] == 0
    assert cell.loc[("zero_shot_tiny-vit", "none (zero-shot)", dl.key), "test ids"] == 6
    mine = json.loads(res.metrics_files[""].read_text())["summary"]["clipfh"]["mAP"]["mean"]
    assert cell.loc[("demo_tiny_resnet", dr.key, dr.key), "mAP_mean"] == pytest.approx(mine)
    matrix = transfer_matrix(table)
    assert list(matrix.columns) == sorted([dr.key, dl.key]) and len(matrix) == 2
    assert matrix.loc[("demo_tiny_resnet", dr.key), dl.key].endswith("(-3 ids)")
    assert "ids" not in matrix.loc[("demo_tiny_resnet", dr.key), dr.key]
    assert len(transfer_table(metrics, "mbanet")) == 4


def test_remove_identities_keeps_distractors_even_of_removed_people():
    def row(name, pid, label=None, aspect="dorsal left"):
        return SplitRow(name, pid, aspect, int(pid) if label is None else label)
    test = [row("a1", "7"), row("a2", "7"), row("b1", "8"), row("b2", "8")]
    distractors = [row("x7", "7", 11_000_007, "dorsal right"), row("x9", "9", 11_000_009, "dorsal right")]
    proto = Protocol("dorsal left", 0, [], [], test, [[test[1], test[3]]], [[test[0], test[2]]],
                     [[test[0], test[2], *distractors]])
    out = remove_identities(proto, ["7"])
    assert [r.image_name for r in out.test] == ["b1", "b2"]
    assert [r.image_name for r in out.queries[0]] == ["b2"] and [r.image_name for r in out.galleries[0]] == ["b1"]
    assert [r.image_name for r in out.galleries_all[0]] == ["b1", "x7", "x9"]
    assert [r.image_name for r in proto.test] == ["a1", "a2", "b1", "b2"]  # the original is untouched


@pytest.mark.slow
def test_demo_beyond_runs_its_notebooks_and_the_comparison_shows_the_transfer_table(tmp_path):
    """The HD + transfer + baseline demo profile end to end (papermill), shrunk; `demo` untouched."""
    from clipfh_utils.config import load_profile
    from clipfh_utils.pipeline.runner import run_pipeline
    from clipfh_utils.runs import latest_invocation, read_manifest

    demo = load_profile("demo")
    assert [(d.dataset, d.aspect) for d in demo.datasets] == [("synthetic", "dorsal right")]
    assert not any(e.startswith("cnn_baseline") for e in demo.experiments) and not demo.transfer.targets
    assert not {"06_cnn_baseline", "07_transfer"} & set(demo.notebooks)

    out = tmp_path / "out"
    run_pipeline("demo_beyond", only=["00_data_filtering", "06_cnn_baseline", "07_transfer", "04_comparison"],
                 run_dir=out, params=[
        f"data.synthetic_dir={tmp_path / 'synth'}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.synthetic={n_train_ids: 8, n_test_ids: 8, images_per_id: [4, 5], size: [64, 48]}",
        "data.synthetic_hd={n_ids: 12, n_extra_ids: 3, size: [64, 48]}", "data.hd_id_threshold=8",
        "protocol.n_splits=2", "demo_tiny_resnet.train.epochs=2", "demo_tiny_resnet.train.p=4"])
    inv = latest_invocation(out)
    manifest = read_manifest(out, inv)
    assert all(s["ok"] for s in manifest["notebooks"].values()) and len(manifest["notebooks"]) == 4
    metrics = invocation_transfers(out, inv)
    pairs = {(m["experiment"], m["train_dataset"], m["test_dataset"]) for m in metrics}
    tests = {"synthetic/dorsal_right", "hd-synthetic/dorsal", "synthetic/dorsal_left"}
    assert pairs == {("demo_tiny_resnet", train, t) for train in ("synthetic/dorsal_right", "hd-synthetic/dorsal")
                     for t in tests}  # (zero-shot's notebook 01 is left out here to save time)
    reports = out / "invocations" / inv / "reports"
    comparison = (reports / "04_comparison.html").read_text()
    assert "Cross-dataset transfer" in comparison
    assert "hd-synthetic/dorsal" in comparison, "the transfer table names the train and test sets"
    assert "ResNet BoT (Luo et al. 2019) · tiny-resnet" in comparison  # the readable label, not demo_tiny_resnet
    baseline = (reports / "06_cnn_baseline.html").read_text()  # 04 links the tables 06 already showed
    assert ">Baseline<" in baseline  # its stage, as the display layer names it
    assert "data.hd_id_threshold" in (reports / "00_data_filtering.html").read_text()
    for name in ("06_cnn_baseline", "07_transfer"):
        html = (reports / f"{name}.html").read_text()
        assert "data:image/png" in html and "Traceback" not in html and "Not a hand-identification result" in html


def test_only_datasets_that_share_people_remove_identities(hands):
    from clipfh_utils.pipeline.transfer import seen_test_identities
    root, _ = hands
    dl = dataset(root, "dorsal left")
    record = {"name": "r", "method": "cnn_baseline", "train_ids": ["0001030", "0001040", "0001062"],
              "identity_space": dl.identity_space}
    assert seen_test_identities(record, dl) == ["0001040", "0001062"]  # 1030 is a dorsal-left training id
    assert seen_test_identities({**record, "identity_space": "hd:data/HD"}, dl) == []
    assert seen_test_identities({**record, "method": "zero_shot"}, dl) == []


def test_the_study_profiles_resolve():
    from clipfh_utils.config import load_profile
    from clipfh_utils.pipeline.resolve import resolve_experiments
    from clipfh_utils.pipeline.runner import NOTEBOOK_DIR
    full_all = load_profile("full_all")
    assert [(d.dataset, d.aspect) for d in full_all.datasets] == [
        ("11k", "dorsal right"), ("11k", "dorsal left"), ("11k", "palmar right"), ("11k", "palmar left"), ("hd", "dorsal")]
    assert full_all.data.hd_id_threshold == 447
    stages = {e.name: e.stage for e in resolve_experiments(full_all)}
    assert stages["resnet50_bot"] == "baseline" and stages["stage2_vitb16"] == "stage2"
    beyond = load_profile("demo_beyond")
    assert {e.stage for e in resolve_experiments(beyond)} == {"stage1", "baseline"}
    for prof in (full_all, beyond):
        assert all((NOTEBOOK_DIR / f"{n}.ipynb").exists() for n in prof.notebooks)
        order = prof.notebooks  # the comparison reads what the transfer and baseline notebooks recorded
        assert order.index("04_comparison") > max(order.index("07_transfer"), order.index("06_cnn_baseline"))
    assert [(d.dataset, d.aspect) for d in load_profile("full").datasets] == [("11k", "dorsal right")]


def test_transfer_reading_gives_each_models_drop_from_its_own_test_set():
    import pandas as pd
    from clipfh_utils.report.story import read_transfer
    rows = [("ft", "11k-dr", "11k-dr", 80.0, 0), ("ft", "11k-dr", "hd", 55.5, 0), ("ft", "11k-dr", "11k-dl", 61.25, 3),
            ("zs", "none (zero-shot)", "11k-dr", 20.0, 0), ("zs", "none (zero-shot)", "hd", 30.0, 0),
            ("ft", "hd", "hd", 70.0, 0), ("ft", "hd", "11k-dr", 40.0, 0)]  # the same config trained on HD
    table = pd.DataFrame(rows, columns=["model", "train set", "test set", "mAP_mean", "removed ids"]).assign(
        real_data=False, pretrained=False, backbone="tiny")
    text = read_transfer(table)
    assert "synthetic" in text
    # own-set number, then the others best first, each with its difference (hand-computed), all as the
    # matrix's cells show them (1 decimal: 61.25 shows as 61.2, so its difference to 80.0 is -18.8)
    assert "**ft**, trained on 11k-dr: mAP 80.0 % on its own test set; elsewhere 11k-dl 61.2 % (-18.8; " \
           "3 seen ids removed), hd 55.5 % (-24.5)." in text
    assert "**ft**, trained on hd: mAP 70.0 % on its own test set; elsewhere 11k-dr 40.0 % (-30.0)." in text
    assert "**zs** (not trained): mAP from 20.0 to 30.0 % across the test sets, highest on hd." in text
