"""Open-set identification: FNIR/FPIR against a brute-force loop; the seeded enrolment lists."""
import math
from pathlib import Path

import numpy as np
import pytest

from clipfh_utils.data.protocol import build_protocol, split_dir, write_split_files
from clipfh_utils.evaluation.openset import (draw_enrolled, n_enrolled, openset_dir, openset_split, read_enrolled,
                                             searches, write_enrolled)


def brute_force(sim, q_labels, g_labels, enrolled, test_labels, fpir_target):
    """Loops: the gallery kept, each search's top candidate (first of equal maxima), then every top
    score as a threshold."""
    keep = [j for j, lab in enumerate(g_labels) if lab in enrolled or lab not in test_labels]
    mated, nonmated = [], []
    for i, q in enumerate(q_labels):
        best = keep[0]
        for j in keep:
            if sim[i][j] > sim[i][best]:
                best = j
        (mated if q in enrolled else nonmated).append((sim[i][best], g_labels[best] == q))
    thresholds = sorted({s for s, _ in mated + nonmated} | {math.inf}, reverse=True)
    fpir = {t: sum(s >= t for s, _ in nonmated) / len(nonmated) for t in thresholds}
    fnir = {t: sum(not (hit and s >= t) for s, hit in mated) / len(mated) for t in thresholds}
    t = min(t for t in thresholds if fpir[t] <= fpir_target)
    return fnir[t], sum(hit for _, hit in mated) / len(mated) * 100


def hand_case(seed, ties):
    rng = np.random.default_rng(seed)
    test_labels = list(range(10))
    g_labels = test_labels + [11_000_000 + k for k in range(3)]       # three distractors
    q_labels = rng.integers(0, 10, 80)
    sim = rng.normal(size=(80, len(g_labels))) + 1.5 * (q_labels[:, None] == np.array(g_labels)[None, :])
    if ties:
        sim = np.round(sim, 0)
    enrolled = [0, 2, 3, 5, 8]
    return sim.astype(np.float32), q_labels, np.array(g_labels), enrolled, test_labels


def test_hand_made_gallery():
    # gallery: persons 1, 2 (enrolled) and 3 (not); queries: 1 (hit at .9), 2 (top is person 1 at .6),
    # 3 (non-mated, top .7), 3 (non-mated, top .2)
    sim = np.array([[.9, .1, .3], [.6, .5, .0], [.1, .7, .95], [.2, .1, .8]], np.float32)
    s = searches(sim, np.array([1, 2, 3, 3]), np.array([1, 2, 3]), [1, 2], [1, 2, 3])
    assert s.mated_hit.tolist() == [True, False]
    np.testing.assert_allclose(s.nonmated_score, [.7, .2])     # person 3's own image was removed
    o = openset_split(s, [0.5, 0.1])
    # FPIR <= 50 % for thresholds in (.2, .7]: at any of them query 1 (.9) is accepted and query 2
    # (wrong top candidate) never is -> FNIR 1/2
    assert o["fnir"][0.5] == pytest.approx(0.5) and o["fnir"][0.1] is None   # 2 non-mated < 10
    assert o["rank1_mated"] == pytest.approx(50.0) and (o["n_mated"], o["n_nonmated"]) == (2, 2)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_fnir_at_fpir_matches_brute_force(seed, ties):
    sim, q, g, enrolled, test_labels = hand_case(seed, ties)
    s = searches(sim, q, g, enrolled, test_labels)
    for target in (0.05, 0.1, 0.3):
        o = openset_split(s, [target])
        want, rank1 = brute_force(sim.tolist(), q.tolist(), g.tolist(), enrolled, test_labels, target)
        assert o["fnir"][target] == pytest.approx(want)
        assert o["rank1_mated"] == pytest.approx(rank1)


def test_enrolment_is_seeded_per_split_and_checked(real_records):
    proto = build_protocol(real_records, "dorsal right", seed=0, n_splits=3)
    a, b = draw_enrolled(proto, 0.5), draw_enrolled(proto, 0.5)
    assert a == b and a[0] != a[1]
    assert all(len(e) == round(0.5 * 71) for e in a)
    assert draw_enrolled(build_protocol(real_records, "dorsal right", seed=1, n_splits=3), 0.5) != a
    with pytest.raises(ValueError, match=r"^evaluation\.enrolled_share: 0\.001 of 71 .* enrols 0"):
        n_enrolled(71, 0.001)
    with pytest.raises(ValueError, match="evaluation.enrolled_share"):
        n_enrolled(1, 0.5)


def test_lists_are_written_as_a_set_beside_the_split_lists(real_records, tmp_path, monkeypatch):
    proto = build_protocol(real_records, "dorsal right", seed=0, n_splits=3)
    folder = write_split_files(proto, tmp_path)
    closed = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    enrolled = draw_enrolled(proto, 0.5)
    out = write_enrolled(folder, 0.5, enrolled)
    assert out == openset_dir(split_dir(tmp_path, "dorsal right", 0), 0.5) and out.parent == folder
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(first) == ["enrolled_00.csv", "enrolled_01.csv", "enrolled_02.csv"]
    assert read_enrolled(out) == enrolled
    write_enrolled(folder, 0.5, draw_enrolled(proto, 0.5))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first           # byte for byte
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == closed  # untouched

    # an interrupted rewrite leaves the previous complete set and no temp folder
    real_write = Path.write_text
    calls = []

    def failing(self, text, *a, **k):
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(KeyboardInterrupt):
        write_enrolled(folder, 0.5, [e[:-1] for e in enrolled])
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [out.name]
