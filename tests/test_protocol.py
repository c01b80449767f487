import filecmp
from collections import Counter

import pytest

from clipfh_utils.data.handinfo import ASPECTS, HandRecord
from clipfh_utils.data.protocol import (ID_THRESHOLDS, build_protocol, read_split_files, split_dir,
                                   write_split_files)

from .conftest import REPO


def test_dorsal_right_counts_match_published_table(real_records):
    s = build_protocol(real_records, "dorsal right", seed=0, n_splits=10).summary()
    assert s["train_ids"] == 72
    assert s["train_images"] == 890 and s["val_images"] == 72
    assert s["test_ids"] == 71 and s["test_images"] == 1042
    assert s["queries_per_split"] == 971 and s["gallery_per_split"] == 71
    assert s["gallery_all_per_split"] == 290


@pytest.mark.parametrize("aspect", ASPECTS)
def test_protocol_invariants(real_records, aspect):
    p = build_protocol(real_records, aspect, seed=5, n_splits=4)
    kept = {r.image_name for r in real_records if r.aspect == aspect and r.accessories == 0}
    train_ids = {r.person_id for r in p.train + p.val}
    test_ids = {r.person_id for r in p.test}
    assert not train_ids & test_ids
    assert all(int(i) <= ID_THRESHOLDS[aspect] for i in train_ids)
    assert all(int(i) > ID_THRESHOLDS[aspect] for i in test_ids)
    # every kept image is used exactly once in train/val/test; nothing silently dropped
    names = [r.image_name for r in p.train + p.val + p.test]
    assert len(names) == len(set(names)) and set(names) == kept
    assert Counter(r.person_id for r in p.val) == Counter({i: 1 for i in train_ids})
    for q, g, g_all in zip(p.queries, p.galleries, p.galleries_all):
        assert Counter(r.person_id for r in g) == Counter({i: 1 for i in test_ids})
        qn, gn = {r.image_name for r in q}, {r.image_name for r in g}
        assert not qn & gn
        assert qn | gn == {r.image_name for r in p.test}
        # distractors (other aspects) carry labels that no query can match
        query_labels = {r.label for r in q}
        distractors = [r for r in g_all if r.aspect != aspect]
        assert distractors and not {r.label for r in distractors} & query_labels
        assert {r.aspect for r in distractors} == set(ASPECTS) - {aspect}
        assert g_all[:len(g)] == g


def test_splits_differ_between_draws_and_seeds(real_records):
    a = build_protocol(real_records, "dorsal right", seed=0, n_splits=3)
    b = build_protocol(real_records, "dorsal right", seed=1, n_splits=3)
    assert a.galleries[0] != a.galleries[1]
    assert a.galleries[0] != b.galleries[0]
    assert a.val != b.val


def test_same_seed_same_files_byte_for_byte(real_records, tmp_path):
    for root in ("a", "b"):
        write_split_files(build_protocol(real_records, "palmar left", seed=7, n_splits=10), tmp_path / root)
    da, db = split_dir(tmp_path / "a", "palmar left", 7), split_dir(tmp_path / "b", "palmar left", 7)
    files = sorted(f.name for f in da.iterdir())
    assert len(files) == 33
    match, mismatch, errors = filecmp.cmpfiles(da, db, files, shallow=False)
    assert match == files and not mismatch and not errors


def test_split_files_round_trip(real_records, tmp_path):
    p = build_protocol(real_records, "dorsal left", seed=2, n_splits=3)
    write_split_files(p, tmp_path)
    q = read_split_files(tmp_path, "dorsal left", 2)
    assert (q.train, q.val, q.test) == (p.train, p.val, p.test)
    assert q.queries == p.queries and q.galleries == p.galleries and q.galleries_all == p.galleries_all


@pytest.mark.parametrize("aspect", ASPECTS)
def test_committed_seed0_split_lists_are_current(real_records, tmp_path, aspect):
    write_split_files(build_protocol(real_records, aspect, seed=0, n_splits=10), tmp_path)
    fresh = split_dir(tmp_path, aspect, 0)
    committed = split_dir(REPO / "data" / "splits" / "11k", aspect, 0)
    files = sorted(f.name for f in fresh.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(fresh, committed, files, shallow=False)
    assert not mismatch and not errors and match == files


def test_single_image_identities_and_bad_aspect():
    recs = [HandRecord(f"h{i}.jpg", pid, "dorsal right", 0)
            for i, pid in enumerate(["0000001", "0000001", "0000002", "0001100", "0001100", "0001101"])]
    p = build_protocol(recs, "dorsal right", seed=0, n_splits=2)
    # an identity with a single test image can only be a gallery image: no query without a match
    assert all(r.person_id != "0001101" for q in p.queries for r in q)
    assert sum(r.person_id == "0001101" for r in p.galleries[0]) == 1
    with pytest.raises(ValueError, match="aspect"):
        build_protocol(recs, "dorsal up")
