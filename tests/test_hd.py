"""The HD dataset: synthetic HD in the real layout, the checked folder listing, the split
invariants (checked against the folder itself, not against the code), distractors that never
match, byte-identical split lists, the threshold as a config key, and clear errors."""
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipfh_utils.config import ConfigError, DataCfg, DatasetRef, ProtocolCfg, build
from clipfh_utils.data.datasets import write_all_splits
from clipfh_utils.data.prepare import prepare_dataset
from clipfh_utils.data.hd import (DISTRACTOR_OFFSET, LISTING_FILE, ORIGINAL, HDLayoutError, build_hd_protocol,
                                  load_hd_protocol, scan_hd)
from clipfh_utils.data.protocol import split_dir
from clipfh_utils.data.synthetic import generate_synthetic_hd
from clipfh_utils.evaluation import FeatureBank, evaluate_protocol

N_IDS, N_EXTRA, T = 12, 4, 8
NAME = re.compile(r"^(\d+)_(\d+)\.jpg$")


@pytest.fixture(scope="module")
def hd(tmp_path_factory) -> Path:
    return generate_synthetic_hd(tmp_path_factory.mktemp("hd"), n_ids=N_IDS, n_extra_ids=N_EXTRA,
                                 images_per_id=(3, 5), size=(48, 36), seed=1)


def files_by_id(folder: Path) -> dict[int, list[str]]:
    """The folder as a brute-force reference: id -> its image names (relative to Original Images)."""
    out: dict[int, list[str]] = {}
    for f in sorted(folder.iterdir()):
        out.setdefault(int(NAME.match(f.name).group(1)), []).append(f"{folder.name}/{f.name}")
    return out


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_hd_has_the_real_layout_and_is_deterministic(hd, tmp_path):
    root = hd / ORIGINAL
    assert hd.name == "HD" and sorted(p.name for p in root.iterdir()) == [f"1-{N_IDS}", f"{N_IDS + 1}-{N_IDS + N_EXTRA}"]
    main, extra = files_by_id(root / f"1-{N_IDS}"), files_by_id(root / f"{N_IDS + 1}-{N_IDS + N_EXTRA}")
    assert sorted(main) == list(range(1, N_IDS + 1)) and sorted(extra) == list(range(N_IDS + 1, N_IDS + N_EXTRA + 1))
    for i, names in {**main, **extra}.items():
        assert 3 <= len(names) <= 5
        assert sorted(int(NAME.match(Path(n).name).group(2)) for n in names) == list(range(1, len(names) + 1))
    with Image.open(root / main[1][0]) as im:
        assert im.size == (48, 36) and im.mode == "RGB"
    again = generate_synthetic_hd(tmp_path / "again", n_ids=N_IDS, n_extra_ids=N_EXTRA, images_per_id=(3, 5),
                                  size=(48, 36), seed=1)
    assert tree_digest(again) == tree_digest(hd)  # same arguments, same bytes
    other = generate_synthetic_hd(tmp_path / "other", n_ids=N_IDS, n_extra_ids=N_EXTRA, images_per_id=(3, 5),
                                  size=(48, 36), seed=2)
    assert tree_digest(other) != tree_digest(hd)


def test_hd_split_invariants_against_the_folder(hd):
    root = hd / ORIGINAL
    main, extra = files_by_id(root / f"1-{N_IDS}"), files_by_id(root / f"{N_IDS + 1}-{N_IDS + N_EXTRA}")
    proto = build_hd_protocol(scan_hd(hd), T, seed=0, n_splits=4)
    train_ids = {r.person_id for r in proto.train + proto.val}
    test_ids = {r.person_id for r in proto.test}
    assert train_ids == {str(i) for i in main if i <= T} and test_ids == {str(i) for i in main if i > T}
    assert not train_ids & test_ids
    # one validation image per training id; train + val = every image of the training ids
    assert sorted((r.person_id for r in proto.val), key=int) == sorted(train_ids, key=int)
    assert sorted(r.image_name for r in proto.train + proto.val) == sorted(n for i in main if i <= T for n in main[i])
    assert sorted(r.image_name for r in proto.test) == sorted(n for i in main if i > T for n in main[i])
    extra_names = sorted(n for names in extra.values() for n in names)
    for q, g, g_all in zip(proto.queries, proto.galleries, proto.galleries_all):
        assert sorted((r.person_id for r in g), key=int) == sorted(test_ids, key=int)  # one gallery image per test id
        assert sorted(r.image_name for r in q + g) == sorted(r.image_name for r in proto.test)
        assert not {r.image_name for r in q} & {r.image_name for r in g}
        assert g_all[:len(g)] == g and sorted(r.image_name for r in g_all[len(g):]) == extra_names
        distractor_labels = {r.label for r in g_all[len(g):]}
        assert min(distractor_labels) > DISTRACTOR_OFFSET and not distractor_labels & {r.label for r in q}
    assert len({tuple(r.image_name for r in g) for g in proto.galleries}) > 1  # the draws differ


def test_distractors_never_match_even_when_they_look_identical(hd):
    """Two extra subjects get the exact feature of a test id's queries, closer to them than that
    id's own gallery image: in `mbanet` they rank first and must not count as a hit."""
    proto = build_hd_protocol(scan_hd(hd), T, seed=0, n_splits=1)
    test_ids = sorted({r.person_id for r in proto.test}, key=int)
    g, g_all = proto.galleries[0], proto.galleries_all[0]
    extras = sorted({r.person_id for r in g_all[len(g):]}, key=int)
    dim = len(test_ids) + 1
    basis = {pid: torch.eye(dim)[i] for i, pid in enumerate(test_ids)}
    look_alike = {extras[0]: test_ids[0], extras[1]: test_ids[1]}
    gallery0 = {r.image_name for r in g}
    feats, index = [], {}
    for r in proto.eval_rows():
        if r.person_id in look_alike:
            f = basis[look_alike[r.person_id]]
        elif r.person_id in extras:
            f = -torch.ones(dim)                        # far from everyone
        elif r.image_name in gallery0:
            f = basis[r.person_id] + 0.2 * torch.eye(dim)[-1]  # the true match: close, not identical
        else:
            f = basis[r.person_id]
        index[r.image_name] = len(feats)
        feats.append(torch.nn.functional.normalize(f, dim=0))
    res = evaluate_protocol(FeatureBank(torch.stack(feats), index), proto).set_index("protocol")
    queries = proto.queries[0]
    fooled = 100 * sum(r.person_id in look_alike.values() for r in queries) / len(queries)
    assert res.loc["clipfh", "rank1"] == 100.0 and 0 < fooled < 100
    assert res.loc["mbanet", "rank1"] == pytest.approx(100.0 - fooled)


def test_same_seed_same_split_files_byte_for_byte(hd, tmp_path):
    listing = scan_hd(hd)
    a, b, c = (load_hd_protocol(listing, tmp_path / n, T, seed, 3) for n, seed in (("a", 0), ("b", 0), ("c", 1)))
    files_a, files_b = (tree_digest(split_dir(tmp_path / n, "dorsal", 0)) for n in ("a", "b"))
    assert files_a == files_b and len(files_a) == 3 + 3 * 3 + 1
    files_c = tree_digest(split_dir(tmp_path / "c", "dorsal", 1))
    assert {k: v for k, v in files_c.items() if k.startswith("gallery_0")} != \
           {k: v for k, v in files_a.items() if k.startswith("gallery_0")}
    more = build_hd_protocol(listing, T, seed=0, n_splits=5)  # more splits keep the first ones
    assert more.galleries[:3] == a.galleries and more.queries[:3] == a.queries


def test_counts_are_printed_and_recorded_and_a_changed_folder_rewrites_the_lists(hd, tmp_path, capsys):
    copy = tmp_path / "HD"
    shutil.copytree(hd, copy)
    listing = scan_hd(copy)
    load_hd_protocol(listing, tmp_path / "splits", T, 0, 2)
    printed = capsys.readouterr().out
    d = split_dir(tmp_path / "splits", "dorsal", 0)
    rec = __import__("json").loads((d / LISTING_FILE).read_text())
    main = files_by_id(copy / ORIGINAL / f"1-{N_IDS}")
    n_extra_images = len(list((copy / ORIGINAL / f"{N_IDS + 1}-{N_IDS + N_EXTRA}").iterdir()))
    assert rec["counts"] == {"main_ids": N_IDS, "main_images": sum(map(len, main.values())),
                             "train_ids": T, "images_of_train_ids": sum(len(v) for i, v in main.items() if i <= T),
                             "test_ids": N_IDS - T, "images_of_test_ids": sum(len(v) for i, v in main.items() if i > T),
                             "extra_ids": N_EXTRA, "extra_images": n_extra_images}
    assert rec["hd_id_threshold"] == T and f"{N_IDS} subjects" in printed and f"{N_EXTRA} extra subjects" in printed
    load_hd_protocol(listing, tmp_path / "splits", T, 0, 2)
    assert capsys.readouterr().out == ""  # the lists exist and match: nothing rewritten
    victim = main[N_IDS][-1]
    (copy / ORIGINAL / victim).unlink()
    proto = load_hd_protocol(scan_hd(copy), tmp_path / "splits", T, 0, 2)
    assert "split lists written" in capsys.readouterr().out
    assert victim not in {r.image_name for r in proto.test}


def test_threshold_is_a_config_key_defaulting_to_the_scripts_code(tmp_path):
    assert DataCfg().hd_id_threshold == 447 and DataCfg().hd_dir == "data/HD"

    def train_ids(threshold):
        data = build(DataCfg, {"synthetic_dir": str(tmp_path / "s"), "cache_dir": str(tmp_path / "c"),
                               "splits_dir": str(tmp_path / "splits"), "hd_id_threshold": threshold,
                               "synthetic_hd": {"n_ids": 10, "n_extra_ids": 2, "size": [40, 30]}})
        ds = prepare_dataset(data, build(DatasetRef, {"dataset": "hd-synthetic"}), ProtocolCfg(n_splits=2))
        return {r.person_id for r in ds.protocol().train}, ds

    ids6, ds = train_ids(6)
    assert ids6 == {str(i) for i in range(1, 7)} and ds.counts()["test_ids"] == 4
    assert train_ids(8)[0] == {str(i) for i in range(1, 9)}
    assert ds.key == "hd-synthetic/dorsal" and not ds.is_real and "SYNTHETIC" in ds.description
    assert set(write_all_splits(ds, 0, 2)) == {"dorsal"}
    with pytest.raises(ConfigError, match=r"data.hd_id_threshold = 447 leaves 10 training and 0 test subjects"):
        train_ids(447)


def test_dataset_ref_aspect_defaults_and_checks():
    assert build(DatasetRef, {"dataset": "hd"}).aspect == "dorsal"
    assert build(DatasetRef, {"dataset": "11k"}).aspect == "dorsal right"
    with pytest.raises(ConfigError, match=r"hd has no aspect 'dorsal right'"):
        build(DatasetRef, {"dataset": "hd", "aspect": "dorsal right"})
    with pytest.raises(ConfigError, match=r"11k has no aspect 'dorsal'"):
        build(DatasetRef, {"dataset": "11k", "aspect": "dorsal"})


def broken(hd: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / how / "HD"
    shutil.copytree(hd, copy)
    root = copy / ORIGINAL
    if how == "no_extras":
        shutil.rmtree(root / f"{N_IDS + 1}-{N_IDS + N_EXTRA}")
    elif how == "missing_subject":
        for f in (root / f"1-{N_IDS}").glob("5_*.jpg"):
            f.unlink()
    elif how == "bad_name":
        shutil.copy(next((root / f"1-{N_IDS}").glob("*.jpg")), root / f"1-{N_IDS}" / "hand 7.jpg")
    elif how == "wrong_folder":
        shutil.move(root / f"1-{N_IDS}" / "3_1.jpg", root / f"{N_IDS + 1}-{N_IDS + N_EXTRA}" / "3_1.jpg")
    return copy


@pytest.mark.parametrize("how, message", [
    ("missing", r"HD image folder not found; put the HD dataset there"),
    ("no_extras", r"expected two folders, the main subjects '1-<n>' and the extra subjects"),
    ("missing_subject", rf"no images of 1 of its {N_IDS} subjects \(first: 5\); copy the complete HD folder"),
    ("bad_name", r"hand 7.jpg: not named <id>_<k>.jpg like the HD images; rename or remove it"),
    ("wrong_folder", r"ids \[3\] are in the wrong range folder"),
])
def test_missing_or_incomplete_hd_folder_is_a_one_line_error(hd, tmp_path, how, message):
    folder = tmp_path / "nowhere" / "HD" if how == "missing" else broken(hd, tmp_path, how)
    with pytest.raises(HDLayoutError, match=message) as e:
        scan_hd(folder)
    assert "\n" not in str(e.value) and str(folder) in str(e.value)


def test_cli_reports_a_missing_hd_folder_in_one_line(tmp_path, capsys):
    from clipfh_utils.cli import main
    profile = tmp_path / "p.yaml"
    profile.write_text(f"name: p\ndata: {{hd_dir: {tmp_path / 'HD'}}}\ndatasets: [{{dataset: hd}}]\n")
    assert main(["splits", "--profile", str(profile)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and str(tmp_path / "HD" / ORIGINAL) in err


@pytest.mark.slow
def test_hd_runs_through_the_pipeline_with_both_protocols(hd, tmp_path):
    from clipfh_utils.pipeline import open_run
    run = open_run("demo", tmp_path / "out", [
        "experiments=[stage1]", "backbones=[{name: tiny-vit}]", "protocol.n_splits=2",
        "datasets=[{dataset: hd-synthetic}]", f"data.synthetic_dir={tmp_path / 's'}", "data.hd_id_threshold=6",
        "data.synthetic_hd={n_ids: 10, n_extra_ids: 3, size: [48, 36]}"])
    (res,) = run.run_stage("stage1", progress=False)
    proto = res.dataset.protocol()
    assert res.dataset.key == "hd-synthetic/dorsal"
    q = res.per_query[res.per_query["split"] == 0]
    assert set(q["protocol"]) == {"clipfh", "mbanet"} and (q["protocol"] == "mbanet").sum() == len(proto.queries[0])
    payload = __import__("json").loads(res.metrics_files[""].read_text())
    assert payload["dataset"] == "hd-synthetic/dorsal" and payload["real_data"] is False
    assert payload["identity"]["data"]["hd_id_threshold"] == 6 and len(payload["identity"]["data"]["listing_sha256"]) == 64
    # mbanet's gallery holds the 3 extra subjects: it can only rank the true match lower
    ranks = res.per_query.pivot_table(index=["split", "query"], columns="protocol", values="rank")
    assert (ranks["mbanet"] >= ranks["clipfh"]).all() and np.isfinite(ranks.values).all()
