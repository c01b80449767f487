"""Feature banks saved once: what an evaluation scored is stored beside its metrics file, the
metrics recomputed from it equal the file, and notebook 04's code embeds nothing again."""
import json
import sys
from pathlib import Path

import matplotlib
import nbformat
import pandas as pd
import pytest
import torch

from clipfh_utils.backbones import features as features_module
from clipfh_utils.evaluation import evaluate_protocol
from clipfh_utils.pipeline import open_run
from clipfh_utils.pipeline.banks import load_bank
from clipfh_utils.pipeline.trained import TrainedModel
from clipfh_utils.report.results import invocation_metrics
from clipfh_utils.runs import features_path, split_csv_path

matplotlib.use("Agg")

FAST = ["experiments=[stage1, clip_reid/demo_tiny_vit]", "backbones=[{name: tiny-vit, weights: null}]", "demo_tiny_vit.prompt.epochs=1",
        "demo_tiny_vit.finetune.epochs=2", "demo_tiny_vit.seeds=[0, 1]", "demo_tiny_vit.finetune.monitor_every=0",
        "protocol.n_splits=2"]
NB04 = Path(__file__).resolve().parents[1] / "notebooks" / "04_comparison.ipynb"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("banks") / "out"
    run = open_run("demo", out, FAST)
    results = run.run_stage("stage1", progress=False) + run.run_stage("stage2", progress=False)
    return out, run, results


@pytest.mark.slow
def test_each_metrics_file_has_the_features_it_was_scored_from(finished):
    out, run, results = finished
    res = next(r for r in results if r.name == "demo_tiny_vit")
    saved = load_bank(res.metrics_files[""])
    assert saved.path == features_path(res.metrics_files[""]) and saved.run == res.run_name and saved.mode == ""
    assert sorted(saved.features) == [0, 1] and saved.image_size == tuple(res.clip.image_size)
    for seed in (0, 1):
        ev = res.evals[(seed, "")]
        bank = saved.bank(seed)
        assert bank.features.dtype == torch.float32 and bank.index == ev.bank.index
        assert torch.equal(bank.features, ev.bank.features)  # exactly what was scored


@pytest.mark.slow
def test_metrics_recomputed_from_the_saved_bank_equal_the_metrics_file(finished):
    out, run, results = finished
    proto = run.protocol()
    for res in results:
        path = res.metrics_files[""]
        saved, rows = load_bank(path), pd.read_csv(split_csv_path(path))
        for seed in saved.features:
            again = evaluate_protocol(saved.bank(seed), proto).assign(seed=seed)
            mine = rows[rows["seed"] == seed].reset_index(drop=True)
            cols = ["protocol", "split", "rank1", "rank5", "rank10", "mAP"]
            pd.testing.assert_frame_equal(again[cols], mine[cols], check_exact=False, rtol=1e-12, atol=0)
            # rank-1 of split 0 by a brute-force loop over the saved features (clipfh protocol)
            bank = saved.bank(seed)
            gallery = proto.galleries[0]
            hits = 0
            for q in proto.queries[0]:
                qf = bank.features[bank.index[q.image_name]]
                best = max(gallery, key=lambda g: float(qf @ bank.features[bank.index[g.image_name]]))
                hits += best.label == q.label
            r1 = mine[(mine["protocol"] == "clipfh") & (mine["split"] == 0)]["rank1"].item()
            assert abs(100 * hits / len(proto.queries[0]) - r1) < 1e-4  # the evaluator works in float32
        payload = json.loads(path.read_text())
        assert payload["run"] == saved.run


@pytest.fixture()
def embed_spy(monkeypatch):
    """Counts every embedding: the one function (wherever it was imported) and load_run's embed."""
    calls = []
    real = features_module.embed_images

    def spy(*a, **k):
        calls.append("embed_images")
        return real(*a, **k)
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("clipfh_utils") and getattr(mod, "embed_images", None) is real:
            monkeypatch.setattr(mod, "embed_images", spy)
    real_embed = TrainedModel.embed
    monkeypatch.setattr(TrainedModel, "embed", lambda self, *a, **k: (calls.append("load_run"), real_embed(self, *a, **k))[1])
    return calls


@pytest.mark.slow
def test_re_executing_notebook_04_embeds_nothing(finished, embed_spy, tmp_path):
    out, run, results = finished
    nb = nbformat.read(NB04, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code[0].lstrip().startswith("# Parameters")
    ns = {}
    exec(f"profile = 'demo'\nrun_dir = {str(out)!r}\noverrides = {FAST!r}\ninvocation = {run.invocation!r}", ns)
    for src in code[1:]:
        exec(compile(src, str(NB04), "exec"), ns)
    assert embed_spy == []
    assert "tables" in ns and "clipfh" in ns["tables"] and "bank" in ns  # the retrieval cell ran
    # ... and read what the evaluation scored: the best model's first-seed features of split 0
    best = next(r for r in results if r.run_name == ns["best"]["run"])
    rows = run.protocol().queries[0] + run.protocol().galleries[0]
    assert torch.equal(ns["bank"].take(rows)[0], best.first_eval().bank.take(rows)[0])


@pytest.mark.slow
def test_notebook_05_loads_each_model_once_and_embeds_nothing(finished, embed_spy, monkeypatch):
    from clipfh_utils import workbook as wb
    out, run, results = finished
    run = open_run("demo", out, FAST, run.invocation)
    loads = []
    real_init = TrainedModel.__init__
    monkeypatch.setattr(TrainedModel, "__init__", lambda self, *a, **k: (loads.append(a[0]), real_init(self, *a, **k))[1])
    metrics = invocation_metrics(out, run.invocation)
    entries = wb.map_entries(run, metrics)
    again = wb.map_entries(run, metrics)  # a second figure of the same invocation
    assert [e.experiment for e in entries] == ["zero_shot_tiny-vit", "demo_tiny_vit"]
    assert [e.label for e in entries] == ["zero-shot CLIP · tiny-vit", "CLIP-ReID · tiny-vit"]  # what a reader sees
    assert len(loads) == 2 and all(a.model is b.model for a, b in zip(entries, again))
    assert embed_spy == []


def test_a_missing_bank_is_named_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no feature bank beside x\.json.*re-run its experiment"):
        load_bank(tmp_path / "x.json")


@pytest.mark.slow
def test_the_inputs_digest_follows_the_split_lists_settings_and_seeds(finished):
    import copy
    import dataclasses
    from clipfh_utils.config import to_dict
    from clipfh_utils.runs import evaluation_inputs
    out, run, results = finished
    res = next(r for r in results if r.name == "demo_tiny_vit")
    proto, cfg = run.protocol(), res.cfg
    base = evaluation_inputs(res.run_name, proto, cfg, "cpu", [0, 1], None, to_dict(run.profile.evaluation))
    assert json.loads(res.metrics_files[""].read_text())["inputs_digest"] == base
    swapped = copy.deepcopy(proto)
    swapped.galleries[1][0], swapped.galleries[1][1] = swapped.galleries[1][1], swapped.galleries[1][0]
    moved = copy.deepcopy(proto)
    moved.queries[0] = moved.queries[0][1:]
    ev = to_dict(run.profile.evaluation)
    others = [evaluation_inputs(res.run_name, swapped, cfg, "cpu", [0, 1], None, ev),
              evaluation_inputs(res.run_name, moved, cfg, "cpu", [0, 1], None, ev),
              evaluation_inputs(res.run_name, proto, dataclasses.replace(cfg, flip_test=not cfg.flip_test), "cpu", [0, 1], None, ev),
              evaluation_inputs(res.run_name, proto, dataclasses.replace(cfg, eval_batch_size=7), "cpu", [0, 1], None, ev),
              evaluation_inputs(res.run_name, proto, cfg, "cuda", [0, 1], None, ev),
              evaluation_inputs(res.run_name, proto, cfg, "cpu", [0], None, ev),
              evaluation_inputs(res.run_name + "x", proto, cfg, "cpu", [0, 1], None, ev)]
    others.append(evaluation_inputs(res.run_name, proto, cfg, "cpu", [0, 1], None, {**ev, "open_set": not ev["open_set"]}))
    assert base not in others and len(set(others)) == len(others)


@pytest.mark.slow
def test_an_unchanged_rerun_reads_evaluations_back_and_a_changed_setting_re_evaluates(finished, embed_spy):
    from clipfh_utils.runs import new_invocation, read_manifest
    out, run, results = finished
    before = {r.name: (r.metrics_files[""].read_bytes(), r.metrics_files[""].stat().st_mtime_ns) for r in results}
    inv = new_invocation(out, {"profile": "demo"})
    again = open_run("demo", out, FAST, inv)
    rerun = again.run_stage("stage1", progress=False) + again.run_stage("stage2", progress=False)
    assert embed_spy == []  # nothing embedded: every evaluation was read back
    for r, old in zip(rerun, results):
        assert (r.metrics_files[""].read_bytes(), r.metrics_files[""].stat().st_mtime_ns) == before[r.name]
        rows = pd.read_csv(split_csv_path(r.metrics_files[""]))
        cols = ["protocol", "split", "rank1", "rank5", "rank10", "mAP"]
        mine = r.per_split.drop(columns=["cmc", "mode"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine[cols + ["seed"]], rows[cols + ["seed"]], check_exact=False, rtol=1e-12)
        assert torch.equal(r.first_eval().bank.features, old.first_eval().bank.features)
        pd.testing.assert_frame_equal(r.first_eval().per_query, old.first_eval().per_query)
    entries = read_manifest(out, inv)["entries"]
    assert sorted(e["run"] for e in entries.values()) == sorted(r.run_name for r in results)
    # an evaluation setting that names neither another run nor another metrics file: evaluated again
    changed = open_run("demo", out, FAST + ["demo_tiny_vit.eval_batch_size=7"], inv)
    (res,) = changed.run_stage("stage2", progress=False)
    # both seeds' evaluation images, and their verification thresholds' training images
    assert embed_spy.count("embed_images") == 2 * (1 + changed.profile.evaluation.verification)
    payload = json.loads(res.metrics_files[""].read_text())
    assert payload["config"]["eval_batch_size"] == 7 and payload["inputs_digest"] != json.loads(before["demo_tiny_vit"][0])["inputs_digest"]
