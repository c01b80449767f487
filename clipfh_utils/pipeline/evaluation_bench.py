"""Timing of the evaluation settings on the full 11k protocol sizes with random features
(`clipfh bench --verification`): speed does not depend on what the features mean."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..data.handinfo import load_handinfo
from ..data.protocol import build_protocol
from ..evaluation import FeatureBank, evaluate_protocol
from ..evaluation.biometric import evaluate_biometric
from ..evaluation.openset import draw_enrolled
from ..evaluation.reranking import k_reciprocal_distance
from ..evaluation.verification import eer_interval


def _timed(fn) -> dict:
    """Wall and CPU seconds: on a shared machine the CPU time says what the code costs."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def bench_verification(handinfo: Path, dim: int = 512, n_boot: int = 1000, seed: int = 0) -> dict:
    """Seconds for one model on dorsal right, 10 splits, both protocols: verification + open-set
    without and with the EER bootstrap, and the rank metrics with k-reciprocal re-ranking."""
    proto = build_protocol(load_handinfo(handinfo), "dorsal right", seed=seed, n_splits=10)
    rows = proto.eval_rows()
    g = torch.Generator().manual_seed(seed)
    feats = torch.nn.functional.normalize(torch.randn(len(rows), dim, generator=g), dim=1)
    bank = FeatureBank(feats, {r.image_name: i for i, r in enumerate(rows)})
    enrolled = draw_enrolled(proto, 0.5)

    def with_bootstrap() -> None:
        res = evaluate_biometric(bank, proto, enrolled=enrolled, bootstrap=True)
        for name, boots in res.boots.items():
            eer_interval(boots, len(res.ids[name]), n_boot, seed)

    def rerank() -> None:
        evaluate_protocol(bank, proto, similarity=lambda q, g_: -torch.from_numpy(k_reciprocal_distance(q, g_)))

    s = proto.summary()
    return {"queries": s["queries_per_split"], "gallery": s["gallery_per_split"],
            "gallery_all": s["gallery_all_per_split"], "splits": proto.n_splits, "dim": dim, "n_boot": n_boot,
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "verification_openset": _timed(lambda: evaluate_biometric(bank, proto, enrolled=enrolled, bootstrap=False)),
            "with_bootstrap": _timed(with_bootstrap), "rerank": _timed(rerank)}


def describe(res: dict) -> str:
    size = (f"{res['queries']} queries, gallery {res['gallery']} / gallery_all {res['gallery_all']}, "
            f"{res['splits']} splits, both protocols")
    lines = [f"one model on the full 11k protocol ({size}; {res['cpus']} CPUs, torch threads {res['torch_threads']}):"]
    for key, label, target in (("verification_openset", "verification + open-set", 2),
                               ("with_bootstrap", f"the same with the EER bootstrap ({res['n_boot']} resamples)", 20),
                               ("rerank", "rank metrics with k-reciprocal re-ranking", 10)):
        t = res[key]
        lines.append(f"  {label}: {t['cpu_s']:.2f} s CPU, {t['wall_s']:.2f} s wall (target < {target} s)")
    return "\n".join(lines)
