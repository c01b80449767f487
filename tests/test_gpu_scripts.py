"""The GPU measurement commands run on the CPU too (CI has no GPU): the whole-study timer."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def study(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(ROOT / ".ci" / "gpu_study.py"), "--profile", "demo",
                        "--run-dir", str(tmp_path / "study"), *args],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, json.loads(p.stdout[p.stdout.index("\n{") + 1:])


@pytest.mark.slow
def test_gpu_study_times_each_piece_and_the_reports(tmp_path):
    out, table = study(tmp_path, "--stages", "stage1,comparison,attention")
    pieces = {r["piece"]: r["seconds"] for r in table["rows"]}
    assert "stage1 zero_shot_tiny-vit (1 seed(s))" in pieces and "stage1 zero_shot_tiny-rn (1 seed(s))" in pieces
    assert any("notebook 04" in k for k in pieces) and any("notebook 05" in k for k in pieces)
    assert all(v is not None and v >= 0 for v in pieces.values())
    assert pieces["total"] >= sum(v for k, v in pieces.items() if k != "total") - 0.5
    assert table["device"] == "cpu" and table["profile"] == "demo"
    assert "mAP (clipfh, random weights, synthetic)" in out


@pytest.mark.slow
def test_gpu_study_deadline_skips_what_would_start_late_and_says_so(tmp_path):
    out, table = study(tmp_path, "--stages", "stage1,stage2,attention", "--deadline", "0")
    notes = {r["piece"]: r.get("note") for r in table["rows"]}
    assert notes["stage2 demo_tiny_vit"] == "not run (deadline)" and notes["attention"] == "not run (deadline)"
    assert "deadline: demo_tiny_vit not started" in out


@pytest.mark.slow
def test_gpu_checks_pass_as_a_dry_run_on_the_cpu():
    """.ci/gpu_check.py with the CPU standing in for CUDA: every check runs (compiled training
    through the shared loop, reload, both PromptSG modes) and passes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLIPFH_CHECK_DEVICE": "cpu"}
    p = subprocess.run([sys.executable, str(ROOT / ".ci" / "gpu_check.py")], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=900)
    assert p.returncode == 0 and "GPU CHECKS PASSED" in p.stdout, (p.stdout[-3000:], p.stderr[-2000:])
    assert p.stdout.count("reload identical=True") == 4 and "modes ['composed', 'fixed']" in p.stdout
