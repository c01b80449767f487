"""k-reciprocal re-ranking against torchreid's float32 `re_ranking`, and on a case built so that it
must change the ranking."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from clipfh_utils.evaluation.reranking import _nearest, k_reciprocal_distance


def torchreid_re_ranking():
    """torchreid's rerank module, loaded from its file: the package's __init__ imports dataset
    downloaders (gdown, ...) that re-ranking does not need."""
    spec = importlib.util.find_spec("torchreid")
    if spec is None:
        pytest.fail("torchreid is a dev dependency (pip install -e '.[dev]')")
    path = Path(spec.submodule_search_locations[0]) / "reid" / "utils" / "rerank.py"
    mod_spec = importlib.util.spec_from_file_location("torchreid_rerank", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.re_ranking


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (7, 1, 0.5), (12, 3, 0.0)])
@pytest.mark.parametrize("seed", range(2))
def test_matches_torchreid(seed, k1, k2, lam):
    rng = np.random.default_rng(seed)
    n_q, n_g, n_ids = 90, 50, 12
    centres = rng.normal(size=(n_ids, 24))
    x = unit(centres[rng.integers(0, n_ids, n_q + n_g)] + rng.normal(size=(n_q + n_g, 24)))
    d = np.sqrt(np.maximum(((x[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1), 0))
    # torchreid squares the distances it is given: hand it Euclidean ones
    want = torchreid_re_ranking()(d[:n_q, n_q:], d[:n_q, :n_q], d[n_q:, n_q:], k1=k1, k2=k2, lambda_value=lam)
    got = k_reciprocal_distance(x[:n_q], x[n_q:], k1=k1, k2=k2, lambda_value=lam)
    assert got.dtype == np.float32 and got.shape == (n_q, n_g)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_nearest_is_the_stable_argsort_also_with_ties():
    rng = np.random.default_rng(0)
    d = np.round(rng.random((60, 60)), 1).astype(np.float32)     # many ties across the cut
    for k in (1, 7, 21, 60):
        np.testing.assert_array_equal(_nearest(d, k), np.argsort(d, axis=1, kind="stable")[:, :k])


def test_changes_the_ranking_where_it_should():
    """Identity A is spread along an arc, identity B a tight clump just beyond A's end. A's last
    image is nearer to B's gallery image than to A's, but only A's images are its k-reciprocal
    neighbours: re-ranking must put A's gallery image first."""
    a = np.linspace(0.0, 0.3, 10)                       # angles of A's images; gallery: the one at 0.2
    b = 0.39 + np.linspace(-0.005, 0.005, 12)           # B's clump; gallery: one in its middle
    angles = np.r_[a, b]
    x = unit(np.c_[np.cos(angles), np.sin(angles)])
    ga, gb = 6, 10 + 6
    q = [i for i in range(len(angles)) if i not in (ga, gb)]
    probe = q.index(9)                                  # A's image at 0.3
    raw = 2 - 2 * x[q] @ x[[ga, gb]].T
    assert raw[probe, 1] < raw[probe, 0]                # before: B's image is nearer
    rr = k_reciprocal_distance(x[q], x[[ga, gb]], k1=5, k2=2, lambda_value=0.3)
    assert rr[probe, 0] < rr[probe, 1]                  # after: A's image comes first
