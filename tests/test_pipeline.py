"""The workbook end to end: papermill runs of the demo notebooks, reports, metrics, failures."""
import contextlib
import json
import os
import re
import sys

import nbformat
import pytest
import torch
from jupyter_client.kernelspec import KernelSpecManager

from clipfh_utils.config import ConfigError, load_profile
from clipfh_utils.report.results import comparison_table, invocation_metrics
from clipfh_utils.runs import latest_invocation, read_manifest
from clipfh_utils.pipeline.runner import NOTEBOOK_DIR, PipelineError, kernel_environment, run_pipeline

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("profile", "run_dir", "overrides", "invocation"):
        assert re.search(rf"^{name} = ", tagged[0].source, re.M), name
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None
            # the story lives here, the logic in clipfh_utils
            assert not re.search(r"^\s*(def|class|for .* in range)\s", c.source, re.M), c.source
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "wb.start(profile, run_dir, overrides, invocation)" in nb.cells[2].source  # one way in


@contextlib.contextmanager
def console_to(path):
    """Everything this process prints (sys.stdout/stderr, which pytest replaces) and everything
    written to its stdout/stderr file descriptors (so by the kernels it starts) goes to `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved, streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    with open(path, "wb") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stdout = sys.stderr = open(os.dup(f.fileno()), "w", buffering=1, encoding="utf-8")
        try:
            yield
        finally:
            sys.stdout.close()
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def test_console_capture_sees_prints_and_child_processes(tmp_path):
    import subprocess
    with console_to(tmp_path / "c.txt"):
        print("[clipfh] from python")
        subprocess.run([sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"])
    text = (tmp_path / "c.txt").read_text()
    assert "[clipfh] from python" in text and "child out" in text and "child err" in text


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_run")
    console = out.parent / f"{out.name}.console.txt"
    with console_to(console):
        index = run_pipeline("demo", run_dir=out)
    return out, index, console.read_text()


@pytest.mark.slow
def test_demo_run_writes_reports_with_figures_and_index(demo_run):
    out, index, _ = demo_run
    names = load_profile("demo").notebooks
    inv = latest_invocation(out)
    html = index.read_text()
    assert "Not a hand-identification result" in html and "synthetic" in html.lower()
    assert "}}" not in html and "fine-tuned from random init" in html
    for name in names:
        assert f'href="invocations/{inv}/reports/{name}.html"' in html
        report = (out / "invocations" / inv / "reports" / f"{name}.html").read_text()
        assert report.count("data:image/png") >= 1, name
        assert "Traceback" not in report and "Not a hand-identification result" in report
        assert (out / "invocations" / inv / "notebooks" / f"{name}.ipynb").exists()
    status = read_manifest(out, inv)["notebooks"]
    assert all(status[n]["ok"] and status[n]["seconds"] > 0 for n in names)


@pytest.mark.slow
def test_demo_metrics_say_what_produced_them(demo_run):
    out, _, _ = demo_run
    metrics = invocation_metrics(out)
    assert {(m["stage"], m["experiment"]) for m in metrics} == {
        ("stage1", "zero_shot_tiny-vit"), ("stage1", "zero_shot_tiny-rn"),
        ("stage2", "demo_tiny_vit"), ("stage2", "demo_tiny_rn"), ("stage3", "stage3_demo_tiny_vit")}
    assert {m["mode"] for m in metrics if m["stage"] == "stage3"} == {"composed", "fixed"}
    for m in metrics:
        assert m["real_data"] is False and m["pretrained"] is False
        assert "SYNTHETIC" in m["data"] and "random init" in m["weights"]
        assert {r["protocol"] for r in m["per_split"]} == {"clipfh", "mbanet"}
        assert len(m["per_split"]) == 2 * 10 * len(m["seeds"])
        env = m["environment"]
        assert len(env["git_commit"]) == 40 and isinstance(env["git_dirty"], bool)
        assert env["torch"] == torch.__version__ and env["open_clip"] and env["python"]
        assert any(p.startswith("torch==") for p in env["pip_freeze"])
        ident = m["identity"]
        assert len(ident["data"]["handinfo_sha256"]) == 64 and len(ident["data"]["train_images_sha256"]) == 64
        assert ident["weights_sha256"].startswith("random init") and m["run"].startswith(m["experiment"] + "-")
        assert "seeds" not in ident["config"] and "n_splits" not in json.dumps(ident)
        run_dir = out / "runs" / m["run"]
        assert json.loads((run_dir / "run.json").read_text())["identity"] == ident
        per_query = run_dir / "metrics" / f"synthetic-dorsal_right__{m['mode'] or 'default'}__n10.per_query.csv.gz"
        assert per_query.exists()
    trained = [m for m in metrics if m["stage"] in ("stage2", "stage3")]
    assert all(m["train"] and all(t["images_per_s"] > 0 for t in m["train"].values()) for m in trained)
    assert all(v > 0 for m in metrics for v in m["embed_images_per_s"].values())


@pytest.mark.slow
@pytest.mark.parametrize("backbone, stage2", [("zero_shot_tiny-vit", "demo_tiny_vit"),
                                              ("zero_shot_tiny-rn", "demo_tiny_rn")])
def test_demo_stage2_beats_stage1_by_20_map_points(demo_run, backbone, stage2):
    out, _, _ = demo_run
    t = comparison_table(invocation_metrics(out), "clipfh").set_index("model")
    assert t.loc[stage2, "mAP_mean"] >= t.loc[backbone, "mAP_mean"] + 20, t[["mAP_mean"]]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["composed", "fixed"])
def test_demo_stage3_beats_stage1_by_20_map_points(demo_run, mode):
    """PromptSG on the tiny ViT, in both inference modes, against the same backbone zero-shot."""
    out, _, _ = demo_run
    t = comparison_table(invocation_metrics(out), "clipfh").set_index("model")
    assert t.loc[f"stage3_demo_tiny_vit [{mode}]", "mAP_mean"] >= t.loc["zero_shot_tiny-vit", "mAP_mean"] + 20, \
        t[["mAP_mean"]]


@pytest.mark.slow
def test_demo_reports_are_clean_and_work_offline(demo_run):
    """No stderr, warning, traceback or widget state in any executed notebook; no script fetched
    from the network in any report; each report ends with its generated reading of the results."""
    out, _, _ = demo_run
    inv = latest_invocation(out)
    for name in load_profile("demo").notebooks:
        nb = nbformat.read(out / "invocations" / inv / "notebooks" / f"{name}.ipynb", as_version=4)
        assert "widgets" not in nb.metadata, name
        for cell in nb.cells:
            for o in cell.get("outputs", []):
                assert o.output_type != "error", (name, o.get("ename"))
                assert not (o.output_type == "stream" and o.name == "stderr"), (name, o.text[:500])
                text = o.get("text", "") + "".join(str(v) for v in o.get("data", {}).values()
                                                   if isinstance(v, str) and not v.startswith("iVBOR"))
                assert not re.search(r"Warning|warnings.warn|Traceback", text), (name, text[:500])
                assert "application/vnd.jupyter.widget-view+json" not in o.get("data", {}), name
        html = (out / "invocations" / inv / "reports" / f"{name}.html").read_text()
        assert not re.search(r"<script[^>]+src=[\"']https?:", html), name   # MathJax, require.js, widgets
        assert "cdnjs" not in html and "unpkg" not in html, name
        assert "Reading the results" in html and "data:image/png" in html, name


@pytest.mark.slow
def test_demo_console_shows_progress_and_report_paths_only(demo_run):
    out, _, console = demo_run
    lines = [ln for ln in console.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("[clipfh]") for ln in lines), console[-2000:]
    names = load_profile("demo").notebooks
    for i, name in enumerate(names, 1):
        assert f"{i}/{len(names)} {name}" in console and f"reports/{name}.html" in console
    assert "without encryption" not in console and "KeyboardInterrupt" not in console


@pytest.mark.slow
def test_demo_exports_figures_and_tables_for_a_dissertation(demo_run):
    from tests.test_reports import parse_latex_table
    out, index, _ = demo_run
    inv = latest_invocation(out)
    root = out / "invocations" / inv
    html = index.read_text()
    for name in load_profile("demo").notebooks:
        figures = sorted((root / "figures" / name).iterdir())
        stems = {f.stem for f in figures}
        assert stems, name
        for stem in stems:
            assert {f.suffix for f in figures if f.stem == stem} == {".pdf", ".svg", ".png"}, stem
            assert f'href="invocations/{inv}/figures/{name}/{stem}.pdf"' in html
    for tex in root.glob("tables/*/*.tex"):
        head, rows = parse_latex_table(tex.read_text())
        assert head and rows, tex
        body = [ln for ln in tex.read_text().splitlines() if not ln.startswith("%")]
        assert all(ln.isascii() for ln in body), (tex, [ln for ln in body if not ln.isascii()][:2])  # pdflatex
        full = re.search(r"full numbers: (\S+\.csv)", tex.read_text().splitlines()[1]).group(1)
        assert (tex.parent / full).exists() and (full == f"{tex.stem}.csv" or tex.stem.startswith(full[:-4] + "_"))
        assert f'href="invocations/{inv}/tables/{tex.parent.name}/{tex.name}"' in html
    head, rows = parse_latex_table((root / "tables" / "04_comparison" / "comparison_clipfh.tex").read_text())
    assert head[0] == "model" and len(rows) == len(invocation_metrics(out))  # a row per experiment
    attention = {f.stem for f in (root / "figures" / "05_attention_visualisation").iterdir()}
    assert {"maps_tiny_vit", "maps_tiny_rn", "attention_by_region"} <= attention
    shares = [ln for ln in (root / "tables" / "05_attention_visualisation" / "attention_by_region.csv").read_text().splitlines()]
    assert any("Grad-CAM" in ln for ln in shares) and any("attention rollout" in ln for ln in shares)
    # Stage 3's map, under its readable label, the internal name beside it in the CSV
    assert any(ln.startswith("PromptSG · tiny-vit") and ",stage3_demo_tiny_vit," in ln and ",cross-attention," in ln
               for ln in shares), shares
    assert {"cross_attention_stage3_demo_tiny_vit", "stage1_2_3_clipfh_map"} <= {
        f.stem for f in (root / "figures" / "03_stage3_promptsg").iterdir()}


@pytest.mark.slow
def test_a_missing_weights_file_stops_only_before_any_notebook_runs(tmp_path):
    """`run --only` checks the backbones the selected notebooks need before the first one starts."""
    from clipfh_utils.backbones.weights import WeightsNotFoundError
    with pytest.raises(WeightsNotFoundError, match="nope.pt: file not found"):
        run_pipeline("demo", only=["01_stage1_zero_shot"], run_dir=tmp_path,
                     params=[f"backbones=[{{name: tiny-vit, weights: {tmp_path / 'nope.pt'}}}]"])
    assert latest_invocation(tmp_path) is None  # nothing ran: no invocation became the newest


@pytest.mark.slow
def test_failing_notebook_names_itself_and_keeps_partial_output(tmp_path, monkeypatch):
    """A notebook that fails on bad input inside a cell: named with the cell, partial output kept."""
    import json
    import shutil
    from clipfh_utils.pipeline import runner
    nbs = tmp_path / "notebooks"
    shutil.copytree(runner.NOTEBOOK_DIR, nbs)
    nb = json.loads((nbs / "01_stage1_zero_shot.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]
    code[1]["source"] = ["from clipfh_utils.config import ConfigError\n",  # after the start cell
                         "raise ConfigError('planted.pt: file not found')\n"]
    (nbs / "01_stage1_zero_shot.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nbs)
    out = tmp_path / "out"
    with pytest.raises(PipelineError) as e:
        run_pipeline("demo", only=["01_stage1_zero_shot"], run_dir=out)
    msg = str(e.value)
    assert "01_stage1_zero_shot" in msg and "cell" in msg and "planted.pt: file not found" in msg
    assert e.value.bad_input  # the CLI exits 2: the input was wrong, not the code
    inv = latest_invocation(out)
    assert (out / "invocations" / inv / "notebooks" / "01_stage1_zero_shot.failed.ipynb").exists()
    assert not (out / "invocations" / inv / "notebooks" / "01_stage1_zero_shot.ipynb").exists()
    assert "FAILED" in (out / "index.html").read_text()


def test_bad_config_fails_before_any_notebook_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"-p 'demo_tiny_rn.finetune.lrr=1': finetune: unknown key 'lrr'"):
        run_pipeline("demo", run_dir=tmp_path, params=["demo_tiny_rn.finetune.lrr=1"])
    assert not (tmp_path / "invocations").exists()


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


@pytest.mark.slow
def test_missing_real_images_are_listed_before_models_load(tmp_path, monkeypatch):
    from clipfh_utils.data.image_cache import MissingImagesError
    from clipfh_utils.methods import base
    from clipfh_utils.pipeline import open_run

    run = open_run("full", tmp_path, [f"data.images_dir={tmp_path / 'Hands'}", "device=cpu"])
    (tmp_path / "Hands").mkdir()
    monkeypatch.setattr(base, "load_clip", lambda *a, **k: pytest.fail("model loaded first"))
    for stage in ("stage1", "stage2", "stage3"):
        with pytest.raises(MissingImagesError, match=r"(\d+) of \1 images missing .*first: Hand_"):
            run.run_stage(stage)


@pytest.mark.slow  # the full_rendered profile's data: every protocol image rendered (~40 s)
def test_rendered_11k_dataset_is_labelled_synthetic_and_renders_only_protocol_rows(tmp_path):
    from clipfh_utils.pipeline import open_run

    run = open_run("full_rendered", tmp_path / "run",
                   ["data.render_size=[64, 48]", f"data.synthetic_dir={tmp_path / 'synth'}",
                    f"data.cache_dir={tmp_path / 'cache'}", "protocol.n_splits=1", "device=cpu"])
    ds = run.dataset
    assert ds.kind == "11k-rendered" and not ds.is_real and "SYNTHETIC" in ds.description
    proto = run.protocol()
    assert proto.summary()["test_images"] == 1042  # the real protocol, from the committed lists
    rendered = {p.name for p in ds.images_dir.iterdir()}
    needed = {r.image_name for r in proto.train + proto.val + proto.eval_rows()}
    assert rendered == needed
    ds.require_images()
    assert "Not a hand-identification result" in run.banner()
    exps = {e.name: e for e in run.experiments()}
    assert exps["stage2_vitb16"].cfg.backbone.weights is None and exps["stage2_vitb16"].cfg.seeds == [0, 1, 2]


def test_training_data_holds_training_identities_only(tmp_path):
    from clipfh_utils.pipeline import open_run

    run = open_run("demo", tmp_path)
    proto = run.protocol()
    data = run.train_data(run.dataset, (64, 64))
    test_ids = {r.person_id for r in proto.test}
    assert set(data.class_ids) == {r.person_id for r in proto.train}
    assert not set(data.class_ids) & test_ids
    assert data.images.shape == (len(proto.train), 3, 64, 64) and data.images.dtype == torch.uint8
    assert data.labels.max() == data.n_classes - 1 and len(data.val_labels) == len(proto.val)
    # the monitor's queries are the validation images of those same training identities
    assert sorted(data.val_labels.tolist()) == sorted(data.class_ids.index(r.person_id) for r in proto.val)


def test_report_html_is_offline_and_has_no_widgets(tmp_path):
    from clipfh_utils.pipeline.runner import export_html
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
    nb = new_notebook(cells=[new_markdown_cell("A formula $a^2$ stays text."), new_code_cell("x", outputs=[
        new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "abc"},
                                         "text/plain": "VBox(children=(Dropdown(...)))"}),
        new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, tmp_path / "x.ipynb")
    html = export_html(tmp_path / "x.ipynb", tmp_path / "x.html").read_text()
    assert not re.search(r"<script[^>]+src=[\"']https?:", html) and "cdnjs" not in html and "unpkg" not in html
    assert "VBox(children" not in html and "widget-state" not in html and "model_id" not in html
    assert "data:image/png;base64,iVBORw0KGgo=" in html and "A formula" in html


@pytest.mark.slow
def test_kernels_use_ipc_and_keep_their_log_off_the_console(tmp_path, capfd):
    import papermill as pm
    from nbformat.v4 import new_code_cell, new_notebook
    from clipfh_utils.pipeline.runner import ipc_kernel_manager
    nb = new_notebook(cells=[new_code_cell("import sys; print('out'); print('err', file=sys.stderr)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    manager = ipc_kernel_manager(tmp_path)
    manager.log_file = tmp_path / "kernel.log"
    kernel_environment(tmp_path / "run")
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        progress_bar=False, kernel_manager_class=manager)
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [("stdout", "out\n"), ("stderr", "err\n")]  # cells unaffected
    console = capfd.readouterr()
    assert "without encryption" not in console.out + console.err + manager.log_file.read_text()
    assert not list(tmp_path.glob("k*-[0-9]*"))  # the IPC socket files are cleaned up


@pytest.mark.slow
def test_interactive_explorer_over_the_demo_runs(demo_run):
    """What JupyterLab shows instead of the batch pointer: features from the finished runs."""
    from clipfh_utils import workbook as wb
    from clipfh_utils.pipeline import open_run
    out, _, _ = demo_run
    run = open_run("demo", out)
    metrics = invocation_metrics(out, run.invocation)
    ex = wb.retrieval_explorer(run, metrics)
    assert list(ex.models) == [m["model"] for m in metrics] and ex.last == "explorer_retrieval"
    bank, _, _, proto = ex.models["demo_tiny_vit"]
    assert proto.n_splits == run.protocol().n_splits and proto.queries == run.protocol().queries
    ev_rows = run.protocol().eval_rows()
    assert bank.features.shape[0] == len(ev_rows)
    ex.model.value = "demo_tiny_vit"
    ex.view.value = "worst failures"
    assert ex.last == "explorer_failures"


@pytest.mark.slow
def test_demo_exports_are_print_ready(demo_run, tmp_path):
    """Every exported table fits an A4 text width (pdflatex), carries the synthetic mark in its
    caption; every exported figure carries it inside (the SVG's text); every report's tables
    scroll in their own box and no free text became a live element."""
    from bs4 import BeautifulSoup
    from tests.test_print import PDFLATEX, live_injections, overfull
    out, index, _ = demo_run
    root = out / "invocations" / latest_invocation(out)
    tex = sorted(root.glob("tables/*/*.tex"))
    assert tex
    for t in tex:
        caption = re.search(r"\\caption\{(.*)\}", t.read_text()).group(1)
        assert "NOT A HAND-IDENTIFICATION RESULT: synthetic images and random weights" in caption, t
    if PDFLATEX:
        assert not overfull(tex, tmp_path / "latex")
    for svg in root.glob("figures/*/*.svg"):
        assert "NOT A HAND-IDENTIFICATION RESULT" in svg.read_text(), svg
    for page in [index, *root.glob("reports/*.html")]:
        html = page.read_text()
        assert not live_injections(html), page
        soup = BeautifulSoup(html, "html.parser")
        for table in soup.find_all("table"):  # in its own box that scrolls sideways: the page never widens
            box = table.find_parent("div", class_="clipfh-table")
            small = page == index and table.find("th") and table.find("th").text in ("notebook",)
            assert small or (box is not None and "overflow-x:auto" in box.get("style", "")), (page, str(table)[:200])
