"""Verification (1:1) kernels against scikit-learn and against brute-force threshold sweeps."""
import math

import numpy as np
import pytest
from sklearn.metrics import det_curve, roc_curve

from clipfh_utils.evaluation.verification import (FMR_GRID, EerBootstrap, PairScores, eer_interval, equal_error,
                                                  training_thresholds,
                                                  na_text, pair_scores, rate_at, rates_on_grid, tradeoff,
                                                  verification_split)


def sweep(genuine, impostor):
    """Brute force: every observed score (and +inf) as a threshold, accept iff score >= threshold."""
    thresholds = sorted(set(genuine) | set(impostor) | {math.inf}, reverse=True)
    fmr = [sum(s >= t for s in impostor) / len(impostor) for t in thresholds]
    fnmr = [sum(s < t for s in genuine) / len(genuine) for t in thresholds]
    return thresholds, fmr, fnmr


def brute_eer(genuine, impostor):
    thr, fmr, fnmr = sweep(genuine, impostor)
    for j in range(1, len(thr)):
        d0, d1 = fmr[j - 1] - fnmr[j - 1], fmr[j] - fnmr[j]
        if d0 < 0 <= d1:  # the bracket of the crossing
            a = -d0 / (d1 - d0)
            return fmr[j - 1] + a * (fmr[j] - fmr[j - 1]), thr[j]
    raise AssertionError("no crossing")


def brute_fnmr_at(genuine, impostor, target):
    thr, fmr, fnmr = sweep(genuine, impostor)
    ok = [k for k in range(len(thr)) if fmr[k] <= target]
    return fnmr[min(ok, key=lambda k: thr[k])]  # the lowest threshold that keeps FMR <= target


def random_scores(seed, n_gen=30, n_imp=400, ties=False):
    rng = np.random.default_rng(seed)
    g, i = rng.normal(1.0, 1.0, n_gen), rng.normal(0.0, 1.0, n_imp)
    if ties:
        g, i = np.round(g, 1), np.round(i, 1)  # equal scores across genuine and impostor pairs
    return g, i


def test_hand_computed_case_with_a_genuine_impostor_tie():
    g, i = [0.9, 0.8, 0.4], [0.7, 0.4, 0.3, 0.1]
    t = tradeoff(g, i)
    # thresholds inf .9 .8 .7 .4 .3 .1: FMR 0 0 0 1/4 2/4 3/4 1, FNMR 1 2/3 1/3 1/3 0 0 0
    np.testing.assert_allclose(t.fmr, [0, 0, 0, .25, .5, .75, 1])
    np.testing.assert_allclose(t.fnmr, [1, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    eer, thr = equal_error(t)
    assert eer == pytest.approx(2 / 7) and thr == 0.4  # crossing between .7 and .4, a = 1/7
    assert rate_at(t, 0.25) == pytest.approx(1 / 3)   # 4 impostors resolve 25 %
    assert rate_at(t, 0.1) is None and na_text(0.1) == "n/a (needs >= 10 impostor pairs)"


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_tradeoff_matches_sklearn_and_brute_force(seed, ties):
    g, i = random_scores(seed, ties=ties)
    t = tradeoff(g, i)
    thr, fmr, fnmr = sweep(g.tolist(), i.tolist())
    np.testing.assert_allclose(t.thresholds, thr)
    np.testing.assert_allclose(t.fmr, fmr)
    np.testing.assert_allclose(t.fnmr, fnmr)
    y = np.r_[np.ones(len(g)), np.zeros(len(i))]
    s = np.r_[g, i]
    sk_fpr, sk_tpr, sk_thr = roc_curve(y, s)           # sklearn's own (intermediate points dropped)
    k = [list(t.thresholds).index(x) for x in sk_thr]
    np.testing.assert_allclose(t.fmr[k], sk_fpr)
    np.testing.assert_allclose(1 - t.fnmr[k], sk_tpr)
    d_fpr, d_fnr, d_thr = det_curve(y, s)
    k = [list(t.thresholds).index(x) for x in d_thr]
    np.testing.assert_allclose(t.fmr[k], d_fpr)
    np.testing.assert_allclose(t.fnmr[k], d_fnr)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_eer_and_fnmr_at_fmr_match_brute_force(seed, ties):
    g, i = random_scores(seed, ties=ties)
    t = tradeoff(g, i)
    eer, thr = equal_error(t)
    b_eer, b_thr = brute_eer(g.tolist(), i.tolist())
    assert eer == pytest.approx(b_eer, abs=1e-12) and thr == b_thr
    for target in (0.01, 0.05, 0.3):
        assert rate_at(t, target) == pytest.approx(brute_fnmr_at(g.tolist(), i.tolist(), target))
    assert rate_at(t, 0.001) is None  # 400 impostor pairs cannot resolve 0.1 %


def test_grid_reads_the_same_rule_and_marks_what_cannot_be_resolved():
    g, i = random_scores(1, n_imp=500)
    t = tradeoff(g, i)
    curve = rates_on_grid(t, FMR_GRID)
    for f, c in zip(FMR_GRID, curve):
        r = rate_at(t, f)
        assert (np.isnan(c) and r is None) or c == pytest.approx(r)
    assert np.isnan(curve[0]) and not np.isnan(curve[-1])


def test_pairs_leave_out_the_same_person_under_another_label():
    sim = np.arange(12, dtype=np.float32).reshape(3, 4)
    q_labels, g_labels = np.array([1, 2, 2]), np.array([1, 2, 11_000_001, 3])
    p = pair_scores(sim, q_labels, g_labels, ["1", "2", "2"], ["1", "2", "1", "3"])
    assert sorted(p.genuine.tolist()) == [0, 5, 9]
    assert p.n_excluded == 1                      # query 0 (person 1) vs the distractor of person 1
    assert sorted(p.impostor.tolist()) == [1, 3, 4, 6, 7, 8, 10, 11]
    assert p.genuine_query.tolist() == [0, 1, 2]


def test_per_query_rejection_at_the_eer_threshold():
    g, i = np.array([0.9, 0.8, 0.4]), np.array([0.7, 0.4, 0.3, 0.1])
    p = PairScores(g, np.array([0, 1, 2]), i, np.array([0, 0, 1, 2]), 0)
    v = verification_split(p, [0.25])
    assert v["eer_threshold"] == 0.4 and v["rejected_at_eer"].tolist() == [0, 0, 0]
    assert v["n_genuine"] == 3 and v["n_impostor"] == 4


def weighted_eer_by_replication(p, owner, w):
    """Independent path: replicate each identity's pairs by its integer weight, then sklearn."""
    gen = np.concatenate([np.repeat(p.genuine[owner[p.genuine_query] == k], int(c)) for k, c in enumerate(w)])
    imp = np.concatenate([np.repeat(p.impostor[owner[p.impostor_query] == k], int(c)) for k, c in enumerate(w)])
    return equal_error(tradeoff(gen, imp))[0]


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_eer_is_the_weighted_eer(ties):
    rng = np.random.default_rng(5)
    n_ids, n_q, n_g = 6, 30, 6
    owner = rng.integers(0, n_ids, n_q)
    owner[:n_ids] = np.arange(n_ids)
    sim = rng.normal(size=(n_q, n_g)) + 2.0 * (owner[:, None] == np.arange(n_g)[None, :])
    if ties:
        sim = np.round(sim, 1)
    p = pair_scores(sim, owner, np.arange(n_g))
    b = EerBootstrap(p, owner, n_ids)
    assert b.eer(np.ones((1, n_ids)))[0] == pytest.approx(equal_error(tradeoff(p.genuine, p.impostor))[0])
    w = rng.multinomial(n_ids, np.full(n_ids, 1 / n_ids), size=8).astype(float)
    w[w.sum(1) == 0] = 1
    got = b.eer(w)
    want = [weighted_eer_by_replication(p, owner, row) for row in w]
    np.testing.assert_allclose(got, want, atol=1e-6)
    iv = eer_interval([b, b], n_ids, 200, seed=0)
    assert iv.lo <= iv.estimate <= iv.hi and iv.hi > iv.lo
    assert iv.estimate == pytest.approx(b.eer(np.ones((1, n_ids)))[0])


def test_training_thresholds_from_all_pairs_of_training_images():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(8), 5)
    centres = rng.normal(size=(8, 16))
    x = centres[labels] + rng.normal(size=(40, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    t = training_thresholds(x, labels, [0.01, 0.0001])
    gen, imp = [], []
    for a in range(40):                      # brute force over the pairs a < b
        for b in range(a + 1, 40):
            (gen if labels[a] == labels[b] else imp).append(float(x[a] @ x[b]))
    assert (t["n_genuine"], t["n_impostor"]) == (len(gen), len(imp)) == (80, 700)
    eer, thr = brute_eer(gen, imp)
    assert t["eer"]["eer"] == pytest.approx(eer) and t["eer"]["threshold"] == pytest.approx(thr, abs=1e-6)
    p = t["fmr_targets"]["0.01"]
    assert p["fmr"] <= 0.01 and p["fnmr"] == pytest.approx(brute_fnmr_at(gen, imp, 0.01))
    assert np.mean(np.array(imp) >= p["threshold"] - 1e-7) == pytest.approx(p["fmr"])
    assert "0.0001" not in t["fmr_targets"]  # 700 impostor pairs cannot resolve it


def test_eer_interval_is_seeded():
    rng = np.random.default_rng(9)
    owner = np.repeat(np.arange(5), 6)
    sim = rng.normal(size=(30, 5)) + 1.5 * (owner[:, None] == np.arange(5)[None, :])
    b = EerBootstrap(pair_scores(sim, owner, np.arange(5)), owner, 5)
    a1, a2, other = (eer_interval([b], 5, 300, seed=s) for s in (3, 3, 4))
    assert (a1.lo, a1.hi) == (a2.lo, a2.hi) and (a1.lo, a1.hi) != (other.lo, other.hi)
