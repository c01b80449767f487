"""Print-ready exports: figure geometry, LaTeX that fits A4, the synthetic mark, escaping,
readable labels and rounding, the reading text quoting its table, notebooks without outputs."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from clipfh_utils.report import display, export, latex, plotting, results, story  # noqa: E402
from clipfh_utils.report.layout import layout_problems  # noqa: E402
from tests.test_reports import PROV, _epochs_log, _payload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LONG = ["PromptSG · tiny-vit (composed)", "CLIP-ReID · tiny-vit", "zero-shot CLIP · tiny-rn",
        "CLIP-ReID · tiny-rn", "zero-shot CLIP · tiny-vit", "PromptSG · tiny-vit (fixed)"]


def _bank(n: int, dim: int = 8, seed: int = 0):
    from clipfh_utils.evaluation import FeatureBank
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)


def _figures(tiny_dataset):
    """One figure of every kind the reports export, with the demo's long labels."""
    from clipfh_utils.data.handinfo import load_handinfo
    from clipfh_utils.data.protocol import build_protocol
    from clipfh_utils.evaluation import FeatureBank, evaluate_protocol
    csv, _ = tiny_dataset
    proto = build_protocol(load_handinfo(csv, check_sha256=False), "dorsal right", 0, 2)
    rows = proto.eval_rows()
    bank = FeatureBank(_bank(len(rows)), {r.image_name: i for i, r in enumerate(rows)})
    pq = []
    evaluate_protocol(bank, proto, per_query=pq)
    pq = pd.concat(pq)
    images = torch.randint(0, 255, (len(rows), 3, 40, 30), dtype=torch.uint8)
    rng = np.random.default_rng(0)
    counts = pd.DataFrame({"aspect": ["dorsal right", "dorsal left", "palmar right", "palmar left"],
                           "images": [1500, 1400, 1600, 1450], "with_accessories": [100, 90, 80, 70],
                           "kept": [1400, 1310, 1520, 1380], "train_ids": [143, 140, 145, 141],
                           "test_ids": [47, 46, 48, 47]})
    curves = {lab: rng.uniform(0, 100, (10, 20)).cumsum(1).clip(0, 100) for lab in LONG}
    per_split = pd.DataFrame([{"model": lab, "protocol": p, "seed": s, "split": k, "mAP": rng.uniform(5, 60)}
                              for lab in LONG for p in ("clipfh", "mbanet") for s in (0, 1) for k in range(5)])
    table = pd.DataFrame({"model": LONG, "stage": ["stage3", "stage2", "stage1", "stage2", "stage1", "stage3"],
                          "mAP_mean": [50.0, 40, 10, 35, 12, 48], "mAP_ci_lo": [45.0, 35, 8, 30, 9, 40],
                          "mAP_ci_hi": [55.0, 45, 12, 40, 15, 56]})
    pairs = pd.DataFrame({"A": LONG[2:5], "B": LONG[:3], "d_mAP": [5.0, -3, 1], "d_mAP_lo": [1.0, -6, -2],
                          "d_mAP_hi": [9.0, -1, 4]})
    maps = {f"{lab} · Grad-CAM": torch.rand(3, 7, 7) for lab in LONG[:4]}
    regions = ["background", "fingers", "knuckles", "back of hand / palm", "wrist"]
    shares = pd.DataFrame(rng.uniform(0, 40, (6, 5)), columns=regions, index=[f"{lab} · rollout" for lab in LONG])
    area = pd.Series([60.0, 15, 5, 15, 5], index=regions)
    return [
        plotting.counts_bar(counts), plotting.images_per_id(proto),
        plotting.image_grid(images[:12], [f"id {r.person_id}" for r in rows[:12]], title="t"),
        plotting.cmc_band(curves), plotting.split_spread(per_split),
        plotting.comparison_bars(table), plotting.difference_forest(pairs),
        plotting.retrieval_figures(bank, images, proto, pq, LONG[0]),
        plotting.training_curves(_epochs_log(), title="t"),
        plotting.tsne_pair(bank.features[:40], bank.features[:40], [r.person_id for r in rows[:40]]),
        plotting.attention_grid(images[:3], maps, ["id 1", "id 2", "id 3"]),
        plotting.region_bars(shares, area)]


def test_every_figure_keeps_its_texts_and_legends_inside_and_apart(tiny_dataset):
    figs = _figures(tiny_dataset)
    try:
        problems = {f.get_label(): layout_problems(f) for f in figs}
        assert not {k: v for k, v in problems.items() if v}, problems
        for f in figs:  # the caption is outside: no suptitle, and an A4 text width at most
            assert not f.get_suptitle() and f.get_size_inches()[0] <= plotting.TEXT_WIDTH + 1e-6, f.get_label()
    finally:
        for f in figs:
            plt.close(f)


def test_layout_check_sees_overlaps_and_legends_on_data():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], label="a line")
    ax.legend(loc="center")                      # over the data area
    ax.text(0.5, 0.5, "one text"), ax.text(0.5, 0.5, "another text")
    ax.set_xlabel("x " * 200)                    # far wider than the figure
    problems = " | ".join(layout_problems(fig))
    assert "covers the data area" in problems and "overlap" in problems and "outside the figure" in problems
    plt.close(fig)


def _debug(tiny_dataset):
    for f in _figures(tiny_dataset):
        print(f.get_label(), layout_problems(f)[:6])
