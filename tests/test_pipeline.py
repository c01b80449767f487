"""The workbook end to end: papermill runs of the demo notebooks, reports, metrics, failures."""
import json
import os
import re
import sys

import nbformat
import pytest
import torch
from jupyter_client.kernelspec import KernelSpecManager

from clipfh_utils.config import load_profile
from clipfh_utils.results import comparison_table, load_metrics
from clipfh_utils.runner import (
    NOTEBOOK_DIR,
    PipelineError,
    kernel_environment,
    run_pipeline,
)

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "profile" in tagged[0].source and "run_dir" in tagged[0].source
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None
            # the story lives here, the logic in clipfh_utils
            assert not re.search(r"^\s*(def|class)\s", c.source, re.M), c.source
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_run")
    index = run_pipeline("demo", run_dir=out)
    return out, index


@pytest.mark.slow
def test_demo_run_writes_reports_with_figures_and_index(demo_run):
    out, index = demo_run
    names = load_profile("demo").notebooks
    html = index.read_text()
    assert "Not a hand-identification result" in html and "synthetic" in html.lower()
    assert "}}" not in html and "fine-tuned from random init" in html
    for name in names:
        assert f'href="reports/{name}.html"' in html
        report = (out / "reports" / f"{name}.html").read_text()
        assert report.count("data:image/png") >= 1, name
        assert "Traceback" not in report
        assert (out / "notebooks" / f"{name}.ipynb").exists()
    status = json.loads((out / "notebook_status.json").read_text())
    assert all(status[n]["ok"] and status[n]["seconds"] > 0 for n in names)


@pytest.mark.slow
def test_demo_metrics_say_what_produced_them(demo_run):
    out, _ = demo_run
    metrics = load_metrics(out)
    stages = {(m["stage"], m["model"]) for m in metrics}
    assert {("stage1", "tiny-vit"), ("stage1", "tiny-rn"),
            ("stage2", "demo_tiny_vit"), ("stage2", "demo_tiny_rn")} <= stages
    for m in metrics:
        assert m["real_data"] is False and m["pretrained"] is False
        assert "SYNTHETIC" in m["data"] and "random init" in m["weights"]
        assert {r["protocol"] for r in m["per_split"]} == {"clipfh", "mbanet"}
        assert len(m["per_split"]) == 2 * 10 * len(m.get("seeds", [0]))
    assert (out / "metrics" / "stage1__tiny-vit.csv").exists()


@pytest.mark.slow
def test_demo_stage2_beats_stage1_by_20_map_points(demo_run):
    out, _ = demo_run
    t = comparison_table(out, "clipfh").set_index("model")
    stage1, stage2 = t.loc["tiny-vit", "mAP_mean"], t.loc["demo_tiny_vit", "mAP_mean"]
    assert stage2 >= stage1 + 20, (stage1, stage2)


@pytest.mark.slow
def test_failing_notebook_names_itself_and_keeps_partial_output(tmp_path):
    with pytest.raises(PipelineError) as e:
        run_pipeline("demo", only=["01_stage1_zero_shot"], run_dir=tmp_path,
                     params=["backbones=[{name: ViT-Q-99}]"])
    msg = str(e.value)
    assert "01_stage1_zero_shot" in msg and "cell" in msg and "unknown backbone" in msg
    assert (tmp_path / "notebooks" / "01_stage1_zero_shot.ipynb").exists()
    assert "FAILED" in (tmp_path / "index.html").read_text()


def test_unknown_notebook_is_rejected(tmp_path):
    with pytest.raises(PipelineError, match="unknown notebook"):
        run_pipeline("demo", only=["99_nope"], run_dir=tmp_path)


def test_kernel_is_pinned_to_this_interpreter(tmp_path, monkeypatch):
    # a foreign 'python3' kernelspec earlier on the path must not win
    foreign = tmp_path / "foreign" / "kernels" / "python3"
    foreign.mkdir(parents=True)
    (foreign / "kernel.json").write_text(json.dumps({"argv": ["/nonexistent/python", "-m", "ipykernel_launcher",
                                                              "-f", "{connection_file}"],
                                                     "display_name": "x", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "foreign"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    kernel_environment(tmp_path / "run")
    assert "MPLBACKEND" not in os.environ
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable


def test_missing_real_images_are_listed_before_models_load(tmp_path, monkeypatch):
    from clipfh_utils import stages
    from clipfh_utils.image_cache import MissingImagesError
    from clipfh_utils.workbook import open_run

    run = open_run("full", tmp_path, {"data.images_dir": str(tmp_path / "Hands"), "device": "cpu"})
    (tmp_path / "Hands").mkdir()
    monkeypatch.setattr(stages, "load_clip", lambda *a, **k: pytest.fail("model loaded first"))
    with pytest.raises(MissingImagesError, match=r"(\d+) of \1 images missing .*first: Hand_"):
        stages.run_zero_shot(run, run.profile.backbones[0])
    with pytest.raises(MissingImagesError, match="missing"):
        stages.run_stage2(run, "stage2_vitb16")


def test_rendered_11k_dataset_is_labelled_synthetic_and_renders_only_protocol_rows(tmp_path):
    from clipfh_utils.config import load_stage2
    from clipfh_utils.workbook import open_run

    run = open_run("full_rendered", tmp_path / "run",
                   {"data.render_size": [64, 48], "data.synthetic_dir": str(tmp_path / "synth"),
                    "data.cache_dir": str(tmp_path / "cache"), "protocol.n_splits": 1, "device": "cpu"})
    ds = run.dataset
    assert ds.kind == "11k-rendered" and not ds.is_real and "SYNTHETIC" in ds.description
    proto = run.protocol()
    assert proto.summary()["test_images"] == 1042  # the real protocol, from the committed lists
    rendered = {p.name for p in ds.images_dir.iterdir()}
    needed = {r.image_name for r in proto.train + proto.val + proto.eval_rows()}
    assert rendered == needed
    run.require_images()
    assert "Not a hand-identification result" in run.banner()
    cfg = load_stage2(run.profile.stage2[0], run.profile.stage2_overrides)
    assert cfg.backbone.weights is None and cfg.seeds == [0]


def test_stage2_training_data_holds_training_identities_only(tmp_path):
    from clipfh_utils.stages import make_train_data
    from clipfh_utils.workbook import open_run

    run = open_run("demo", tmp_path)
    proto = run.protocol()
    data = make_train_data(run, (64, 64))
    test_ids = {r.person_id for r in proto.test}
    assert set(data.class_ids) == {r.person_id for r in proto.train}
    assert not set(data.class_ids) & test_ids
    assert data.images.shape == (len(proto.train), 3, 64, 64) and data.images.dtype == torch.uint8
    assert data.labels.max() == data.n_classes - 1 and len(data.val_labels) == len(proto.val)
    # the monitor's queries are the validation images of those same training identities
    assert sorted(data.val_labels.tolist()) == sorted(data.class_ids.index(r.person_id) for r in proto.val)
