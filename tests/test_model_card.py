"""MODEL_CARD.md of a demo-like run: every section checked against the run's own files (run.json,
the metrics files and their .csv, the weights' sha256 computed here, HandInfo.csv counted here),
refreshed when the run is re-evaluated, and showing verification / per-group figures where a
metrics file has them."""
import csv
import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from huggingface_hub import ModelCard

from clipfh_utils.report.model_card import CARD, SECTIONS, write_model_card
from clipfh_utils.pipeline import load_run, open_run
from clipfh_utils.runs import read_run

from .test_runs import FAST

pytestmark = pytest.mark.slow  # the demo run's experiment, trained and re-evaluated


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "out"
    (res,) = open_run("demo", out, FAST).run_stage("stage2", progress=False)
    first = (res.run_dir / CARD).read_text()
    (again,) = open_run("demo", out, FAST + ["protocol.n_splits=3"]).run_stage("stage2", progress=False)
    assert again.run_dir == res.run_dir and again.trained_seeds == []  # loaded and re-evaluated
    return {"out": out, "res": res, "first": first}


def sections(card: ModelCard) -> dict[str, str]:
    parts = card.text.split("\n## ")[1:]
    return {p.split("\n", 1)[0]: p.split("\n", 1)[1] for p in parts}


def test_every_section_says_what_the_runs_files_say(demo):
    rdir, res = demo["res"].run_dir, demo["res"]
    rec = read_run(rdir)
    card = ModelCard.load(rdir / CARD)
    s = sections(card)
    assert list(s) == list(SECTIONS)
    assert card.data.model_name == rec["name"] and "synthetic-data" in card.data.tags

    details = s["Model details"]
    sha = hashlib.sha256((rdir / "seed0" / "weights.pt").read_bytes()).hexdigest()
    assert f"`seed0/weights.pt` ({rec['seeds']['0']['weights_dtype']}) sha256 {sha}" in details
    assert rec["environment"]["git_commit"] in details and "CLIP-ReID (`clip_reid`" in details
    assert rec["backbone"]["weights"] in details and rec["config_source"] in details

    assert "consent and a lawful basis" in s["Intended use"] and "SYNTHETIC hands" in s["Intended use"]

    # training data: identities and images counted here from HandInfo.csv (validation: one per id)
    with open(res.dataset.handinfo, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["aspectOfHand"] == res.dataset.aspect and r["accessories"] == "0"]
    train_ids = {r["id"].strip() for r in rows} & set(rec["train_ids"])
    n_images = sum(r["id"].strip() in train_ids for r in rows) - len(train_ids)
    training = s["Training data"]
    assert f"Training identities: {len(train_ids)}, training images: {n_images}" in training
    assert "SYNTHETIC" in training and f"Split seed: {rec['identity']['data']['split_seed']}" in training
    assert rec["identity"]["data"]["handinfo_sha256"] in training

    # every evaluation listed: the run's own (2 splits) and the re-evaluation (3 splits)
    files = sorted((rdir / "metrics").glob("*.json"))
    assert len(files) == 2
    table = [line for line in s["Evaluation data and protocols"].splitlines() if line.startswith("| `")]
    assert len(table) == 2
    for f, line in zip(files, table):
        m = json.loads(f.read_text())
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == f"`{f.name}`" and cells[1] == m["dataset"] and cells[3] == "default"
        assert cells[4] == "clipfh, mbanet" and cells[5] == str(m["n_splits"])

    # metrics: mean and sd between splits recomputed from each evaluation's .csv
    metrics = s["Metrics"]
    for f in files:
        block = metrics.split(f"### `{f.name}`")[1].split("### ")[0]
        per_split = pd.read_csv(f.with_suffix(".csv"))
        for proto, label in (("clipfh", "clipfh: single-aspect gallery"), ("mbanet", "mbanet: gallery_all")):
            r1 = per_split[per_split["protocol"] == proto]["rank1"].to_numpy()
            row = next(x for x in block.splitlines() if x.startswith(f"| {label}") and "| Rank-1 |" in x)
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[2:] == [f"{r1.mean():.2f}", f"{np.std(r1, ddof=1):.2f}", "n/a", str(len(r1)), "1"]
    assert "None of this run's evaluations reports per-group figures" in s["Factors"]
    assert "young adults" in s["Known limitations"] and "threshold on the id" in s["Known limitations"]
    assert "lighting" in s["Known limitations"]

    load = s["How to load"]
    assert f'load_run("{rec["name"]}", seed=0)' in load
    model = load_run(rec["name"], seed=0, search=[demo["out"]])  # what the card says works
    feats = model.embed(res.first_eval().images[:2])
    assert feats.shape[0] == 2 and "model.embed(" in load and "model.search(" in load


def test_the_card_is_refreshed_by_a_reevaluation(demo):
    now = (demo["res"].run_dir / CARD).read_text()
    assert "__n2.json" in demo["first"] and "__n3.json" not in demo["first"]
    assert "__n2.json" in now and "__n3.json" in now


def test_verification_and_group_figures_appear_where_a_metrics_file_has_them(demo, tmp_path):
    rdir = tmp_path / "run"
    shutil.copytree(demo["res"].run_dir, rdir)
    f = sorted((rdir / "metrics").glob("*.json"))[0]
    m = json.loads(f.read_text())
    eer = {("clipfh", 0): 10.0, ("clipfh", 1): 14.0, ("mbanet", 0): 20.0, ("mbanet", 1): 30.0}
    m["verification"] = {"per_split": [{"protocol": p, "split": i, "seed": 0, "eer": v} for (p, i), v in eer.items()]}
    m["groups"] = [{"factor": "gender", "group": "female", "n_ids": 5, "rank1": 41.5},
                   {"factor": "gender", "group": "male", "n_ids": 7, "rank1": 38.25}]
    f.write_text(json.dumps(m))
    s = sections(ModelCard.load(write_model_card(rdir)))
    assert "| female | 5 | 41.5 |" in s["Factors"] and "| male | 7 | 38.25 |" in s["Factors"]
    block = s["Metrics"].split(f"### `{f.name}`")[1].split("### ")[0]
    assert "verification:" in block
    assert "| eer | 12.00 | 2.83 | n/a | 2 | 1 |" in block and "| eer | 25.00 | 7.07 | n/a | 2 | 1 |" in block
