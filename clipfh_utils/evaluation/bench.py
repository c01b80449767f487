"""Timing of the evaluation settings on the full 11k protocol sizes with random features
(`python -m clipfh_utils bench --verification`): speed does not depend on what the features mean."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.handinfo import load_handinfo
from ..data.protocol import build_protocol
from .biometric import evaluate_biometric
from .openset import draw_enrolled
from .rank import FeatureBank, evaluate_protocol
from .reranking import k_reciprocal_distance
from .verification import eer_interval


def bench_verification(handinfo: Path, dim: int = 512, n_boot: int = 2000, seed: int = 0) -> dict:
    """Seconds for one model on dorsal right, 10 splits, both protocols: verification + open-set
    without and with the EER bootstrap, and the rank metrics with k-reciprocal re-ranking."""
    proto = build_protocol(load_handinfo(handinfo), "dorsal right", seed=seed, n_splits=10)
    rows = proto.eval_rows()
    g = torch.Generator().manual_seed(seed)
    feats = torch.nn.functional.normalize(torch.randn(len(rows), dim, generator=g), dim=1)
    bank = FeatureBank(feats, {r.image_name: i for i, r in enumerate(rows)})
    enrolled = draw_enrolled(proto, 0.5)
    t0 = time.perf_counter()
    evaluate_biometric(bank, proto, enrolled=enrolled, bootstrap=False)
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate_biometric(bank, proto, enrolled=enrolled, bootstrap=True)
    for name, boots in res.boots.items():
        eer_interval(boots, len(res.ids[name]), n_boot, seed)
    boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_protocol(bank, proto, similarity=lambda q, g_: -torch.from_numpy(k_reciprocal_distance(q, g_)))
    rerank = time.perf_counter() - t0
    s = proto.summary()
    return {"queries": s["queries_per_split"], "gallery": s["gallery_per_split"],
            "gallery_all": s["gallery_all_per_split"], "splits": proto.n_splits, "dim": dim, "n_boot": n_boot,
            "threads": torch.get_num_threads(), "verification_openset_s": plain,
            "with_bootstrap_s": boot, "rerank_s": rerank}
