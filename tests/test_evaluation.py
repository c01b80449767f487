import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from clipfh_utils.evaluation import FeatureBank, evaluate_protocol, rank_metrics, summarize
from clipfh_utils.data.protocol import build_protocol


def brute_force(sim, q_ids, g_ids, ks=(1, 5, 10), ap="standard"):
    """Independent loop implementation: stable ranking, first hit, AP by definition."""
    ranks, aps = [], []
    for i in range(len(q_ids)):
        order = sorted(range(len(g_ids)), key=lambda j: -sim[i][j])  # sorted() is stable
        rel = [g_ids[j] == q_ids[i] for j in order]
        first = rel.index(True)
        ranks.append(first)
        hits, total = 0, 0.0
        n_rel = sum(rel)
        for pos, r in enumerate(rel):
            if not r:
                continue
            hits += 1
            precision = hits / (pos + 1)
            if ap == "standard":
                total += precision
            else:
                prev = 1.0 if pos == 0 else (hits - 1) / pos
                total += (prev + precision) / 2
        aps.append(total / n_rel)
    out = {f"rank{k}": 100 * np.mean([r < k for r in ranks]) for k in ks}
    out["mAP"] = 100 * np.mean(aps)
    return out


def random_case(seed, n_q=40, n_g=30, n_ids=8, ties=False):
    rng = np.random.default_rng(seed)
    g_ids = rng.integers(0, n_ids, n_g)
    g_ids[:n_ids] = np.arange(n_ids)  # every id present in the gallery
    q_ids = rng.integers(0, n_ids, n_q)
    sim = rng.normal(size=(n_q, n_g))
    if ties:
        sim = np.round(sim, 0)  # many exact ties
    return sim.astype(np.float32), q_ids, g_ids


@pytest.mark.parametrize("seed", range(5))
def test_standard_ap_matches_sklearn_without_ties(seed):
    sim, q, g = random_case(seed)
    res = rank_metrics(sim, q, g)
    sk = np.mean([average_precision_score(g == q[i], sim[i]) for i in range(len(q))]) * 100
    assert res["mAP"] == pytest.approx(sk, abs=1e-4)
    assert res == pytest.approx(brute_force(sim.tolist(), q.tolist(), g.tolist()), abs=1e-4)


@pytest.mark.parametrize("ap", ["standard", "trapezoid"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_with_ties(seed, ap):
    sim, q, g = random_case(seed, ties=True)
    assert (sim[:, :, None] == sim[:, None, :]).sum() > sim.size  # there are ties
    res = rank_metrics(sim, q, g, ap=ap)
    assert res == pytest.approx(brute_force(sim.tolist(), q.tolist(), g.tolist(), ap=ap), abs=1e-4)


def test_hand_computed_single_relevant():
    # one relevant gallery item per query, at rank 1, 2 and 4
    sim = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.1, 0.9, 0.2, 0.3], [0.9, 0.8, 0.7, 0.1]])
    q = torch.tensor([0, 2, 3])
    g = torch.tensor([0, 1, 2, 3])
    std = rank_metrics(sim, q, g, ks=(1, 2, 4))
    trap = rank_metrics(sim, q, g, ks=(1, 2, 4), ap="trapezoid")
    # ranks: q0 -> 1, q1 (id 2, sim 0.2) -> 3, q2 (id 3, sim 0.1) -> 4
    assert std["rank1"] == pytest.approx(100 / 3)
    assert std["rank2"] == pytest.approx(100 / 3)
    assert std["rank4"] == pytest.approx(100)
    assert std["mAP"] == pytest.approx(100 * (1 + 1 / 3 + 1 / 4) / 3)
    assert trap["mAP"] == pytest.approx(100 * (1 + 1 / 6 + 1 / 8) / 3)


def test_ties_keep_gallery_order():
    sim = torch.zeros(1, 3)
    assert rank_metrics(sim, [5], [5, 1, 2], ks=(1,))["rank1"] == 100
    assert rank_metrics(sim, [5], [1, 5, 2], ks=(1,))["rank1"] == 0


def test_query_without_match_is_an_error():
    with pytest.raises(ValueError, match="1 of 2 queries have no matching identity"):
        rank_metrics(torch.zeros(2, 2), [0, 9], [0, 1])
    with pytest.raises(ValueError, match="shape"):
        rank_metrics(torch.zeros(2, 3), [0, 1], [0, 1])


def test_cmc_is_monotone_and_consistent():
    sim, q, g = random_case(11)
    res = rank_metrics(sim, q, g, return_cmc=True)
    cmc = res["cmc"]
    assert np.all(np.diff(cmc) >= 0) and cmc[-1] == pytest.approx(100)
    assert cmc[0] == pytest.approx(res["rank1"]) and cmc[4] == pytest.approx(res["rank5"])


def test_evaluate_protocol_indexes_one_feature_matrix(real_records):
    proto = build_protocol(real_records, "dorsal right", seed=0, n_splits=3)
    rows = proto.eval_rows()
    assert len(rows) == len({r.image_name for r in rows})
    rng = np.random.default_rng(0)
    # features that carry identity: a per-person vector plus noise
    person = {pid: rng.normal(size=16) for pid in {r.person_id for r in rows}}
    feats = torch.tensor(np.stack([person[r.person_id] + rng.normal(size=16) for r in rows]), dtype=torch.float32)
    feats = torch.nn.functional.normalize(feats, dim=1)
    bank = FeatureBank(feats, {r.image_name: i for i, r in enumerate(rows)})
    df = evaluate_protocol(bank, proto)
    assert set(df["protocol"]) == {"clipfh", "mbanet"} and len(df) == 6
    i = 1
    qf, ql = bank.take(proto.queries[i])
    gf, gl = bank.take(proto.galleries_all[i])
    direct = rank_metrics(qf @ gf.T, ql, gl, ap="trapezoid")
    row = df[(df.protocol == "mbanet") & (df.split == i)].iloc[0]
    assert row["mAP"] == pytest.approx(direct["mAP"]) and row["rank1"] == pytest.approx(direct["rank1"])
    s = summarize(df)
    assert s.loc["clipfh", ("mean", "mAP")] == pytest.approx(df[df.protocol == "clipfh"]["mAP"].mean())
    assert s.loc["clipfh", ("sd", "mAP")] == pytest.approx(df[df.protocol == "clipfh"]["mAP"].std(ddof=1))


def test_published_numbers_are_labelled_with_their_protocol():
    from clipfh_utils.report.results import published_table
    t = published_table()
    assert t["protocol"].notna().all()
    mba = t[(t.method.str.startswith("MBA-Net")) & (t.aspect == "dorsal right")].iloc[0]
    assert mba["protocol"].startswith("mbanet") and (mba["rank1"], mba["mAP"]) == (97.45, 97.98)
    diss = t[t.method.str.startswith("Dissertation Stage 1 ViT")].iloc[0]
    assert diss["protocol"].startswith("clipfh") and diss["mAP"] == 78.98
