"""Loading a run folder executes no code, and names cannot leave their folder.

A run folder may come from anywhere (a colleague, a shared file server, a cluster's scratch).
Each test plants a checkpoint.pt or weights.pt whose unpickling would create a marker file
(torch.save of an object whose __reduce__ calls os.system / open), then goes through one way a
run folder is read: `load_run`, a plain `run` over the folder (the pre-run checks), `--resume`,
`--resume-from`, and re-running a profile whose finished run it is. Each must refuse the file in
one line naming it, and the marker must never appear. A control test shows the planted files do
create the marker when read the unsafe way, so the other tests can fail.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipfh_utils.pipeline import load_run, open_run
from clipfh_utils.training.checkpoint import CheckpointError

from .conftest import REPO
from .test_runs import FAST

CLI_P = [x for item in FAST for x in ("-p", item)]


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _Open:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant(path: Path, marker: Path, kind: str = "system") -> None:
    """Replace `path` by a file shaped like a checkpoint whose reading would create `marker`."""
    payload = _System(marker) if kind == "system" else _Open(marker)
    torch.save({"seed": 0, "phase": "finetune", "phase_index": 1, "epoch": 1,
                "states": {"model": {"w": torch.zeros(2)}, "x": payload}}, path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An output folder with one finished run that kept its last checkpoint (for --resume-from)."""
    out = tmp_path_factory.mktemp("sec") / "out"
    (res,) = open_run("demo", out, FAST + ["keep_checkpoint=true"]).run_stage("stage2", progress=False)
    assert (res.run_dir / "seed0" / "checkpoint.pt").exists()
    return out, res.run_name


@pytest.fixture()
def folder(finished, tmp_path):
    out, name = finished
    shutil.copytree(out, tmp_path / "out")
    return tmp_path / "out", name


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "clipfh_utils", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def refused(proc: subprocess.CompletedProcess, planted: Path, marker: Path) -> str:
    assert not marker.exists(), "code in a run folder's file was executed"
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert str(planted.relative_to(planted.parents[3])) in line or str(planted) in line, line
    assert "refused" in line and "nothing in it was run" in line, line
    return line


def test_the_planted_files_would_run_code_if_unpickled(tmp_path):
    for kind in ("system", "open"):
        marker = tmp_path / f"marker_{kind}"
        plant(tmp_path / f"{kind}.pt", marker, kind)
        torch.load(tmp_path / f"{kind}.pt", weights_only=False)  # the unsafe way, on purpose
        assert marker.exists(), kind


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["system", "open"])
def test_load_run_refuses_crafted_weights(folder, tmp_path, kind):
    out, name = folder
    marker = tmp_path / "marker"
    weights = out / "runs" / name / "seed0" / "weights.pt"
    plant(weights, marker, kind)
    with pytest.raises(CheckpointError, match=r"weights.pt: refused: .*nothing in it was run"):
        load_run(out / "runs" / name, device="cpu")
    assert not marker.exists()


@pytest.mark.slow
def test_rerunning_a_profile_refuses_its_finished_runs_crafted_weights(folder, tmp_path):
    out, name = folder
    marker = tmp_path / "marker"
    weights = out / "runs" / name / "seed0" / "weights.pt"
    plant(weights, marker, "open")
    refused(cli("run", "--profile", "demo", "--run-dir", str(out), *CLI_P), weights, marker)


def _unfinished(out: Path, name: str, marker: Path) -> Path:
    """The finished run made unfinished again, its checkpoint crafted."""
    seed = out / "runs" / name / "seed0"
    (seed / "weights.pt").unlink()
    (seed / "summary.json").unlink()
    plant(seed / "checkpoint.pt", marker)
    return seed / "checkpoint.pt"


@pytest.mark.slow
@pytest.mark.parametrize("flags", [[], ["--resume"]], ids=["run", "resume"])
def test_a_crafted_unfinished_checkpoint_is_refused_before_the_run(folder, tmp_path, flags):
    out, name = folder
    marker = tmp_path / "marker"
    ckpt = _unfinished(out, name, marker)
    refused(cli("run", "--profile", "demo", "--run-dir", str(out), *CLI_P, *flags), ckpt, marker)


@pytest.mark.slow
def test_resume_from_a_run_with_a_crafted_checkpoint_is_refused_and_copies_nothing(folder, tmp_path):
    out, name = folder
    marker = tmp_path / "marker"
    ckpt = out / "runs" / name / "seed0" / "checkpoint.pt"
    plant(ckpt, marker)
    before = sorted(p.name for p in (out / "runs").iterdir())
    proc = cli("run", "--profile", "demo", "--run-dir", str(out), *CLI_P,
               "-p", "demo_tiny_vit.finetune.lr=0.002", "--resume-from", name)
    refused(proc, ckpt, marker)
    assert sorted(p.name for p in (out / "runs").iterdir()) == before  # no new run, nothing copied


# --------------------------------------------------------------------------- names stay in their folder

def test_a_profile_name_cannot_move_the_output_folder(tmp_path):
    escaped = tmp_path / "escaped"
    name = os.path.relpath(escaped, REPO / "outputs")  # '../../..../escaped': outputs/<name> lands there
    proc = cli("run", "--profile", "demo", *CLI_P, "-p", f"name={name}", "--only", "00_data_filtering")
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert f"-p 'name={name}'" in line and "name: " in line and "not a safe folder name" in line, line
    assert "letters, digits, '-', '_' and '.'" in line, line
    assert not escaped.exists()


def test_an_experiment_name_cannot_leave_the_run_folder(tmp_path):
    out, escaped = tmp_path / "out", tmp_path / "escaped"
    proc = cli("run", "--profile", "demo", "--run-dir", str(out), *CLI_P,
               "-p", "demo_tiny_vit.name=../../escaped/x", "--only", "02_stage2_clip_reid")
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "-p 'demo_tiny_vit.name=../../escaped/x'" in line and "not a safe folder name" in line, line
    assert not escaped.exists() and not (out / "runs").exists()


def test_paths_from_names_and_records_stay_inside_their_folder(tmp_path):
    from clipfh_utils.atomic import UnsafePathError, inside
    from clipfh_utils.config import name_problem
    from clipfh_utils.runs import invocation_dir, latest_invocation, run_dir
    assert inside(tmp_path, "runs", "demo_tiny_vit-0123456789") == tmp_path / "runs" / "demo_tiny_vit-0123456789"
    for bad in ("..", "../x", "a/b", "", ".", "/etc"):
        with pytest.raises(UnsafePathError, match="would lie outside"):
            inside(tmp_path, "runs", bad)
    with pytest.raises(UnsafePathError):
        run_dir(tmp_path, "../../x")
    with pytest.raises(UnsafePathError):
        invocation_dir(tmp_path, "../x")
    assert [n for n in ("ok", "a.b-c_1", "ViT-B-16") if name_problem(n)] == []
    assert all(name_problem(n) for n in ("..", ".hidden", "a/b", "a b", "<img>", "x" * 101, ""))
    # a tampered LATEST naming a folder outside is no invocation
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "manifest.json").write_text("{}")
    (tmp_path / "out" / "invocations").mkdir(parents=True)
    (tmp_path / "out" / "invocations" / "LATEST").write_text("../../elsewhere\n")
    assert latest_invocation(tmp_path / "out") is None

