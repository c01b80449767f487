"""Sweeps: grid expansion and naming, skipping finished runs, parallel worker processes on the CPU,
a failed job that does not stop the others, resuming an interrupted sweep, submitit's local path."""
import json
import os

import pytest

from clipfh_utils.config import ConfigError
from clipfh_utils.pipeline.sweep import expand, parse_grid, plan_sweep, run_sweep

FAST = ["experiments=[stage1, clip_reid/demo_tiny_vit]", "demo_tiny_vit.prompt.epochs=1",
        "demo_tiny_vit.finetune.epochs=2", "demo_tiny_vit.seeds=[0]", "protocol.n_splits=2"]
LR = "demo_tiny_vit.finetune.lr"


def test_grid_expansion_and_validation(tmp_path):
    grid = parse_grid([f"{LR}=[0.001, 0.003]", "demo_tiny_vit.finetune.augment.erase=[0, 0.5]", "x.y=3"])
    assert grid == {LR: [0.001, 0.003], "demo_tiny_vit.finetune.augment.erase": [0, 0.5], "x.y": [3]}
    points = expand(grid)
    assert len(points) == 4 and points[0] == {LR: 0.001, "demo_tiny_vit.finetune.augment.erase": 0, "x.y": 3}
    assert len({json.dumps(p, sort_keys=True) for p in points}) == 4
    with pytest.raises(ConfigError, match="seeds are not a grid axis"):
        parse_grid(["demo_tiny_vit.seeds=[[0], [1]]"])
    with pytest.raises(ConfigError, match=r"-p 'demo_tiny_vit.finetune.lrr=0.1': finetune: unknown key 'lrr'"):
        plan_sweep("demo", FAST, parse_grid(["demo_tiny_vit.finetune.lrr=[0.1]"]), tmp_path)
    out, inv, jobs = plan_sweep("demo", FAST, parse_grid([f"{LR}=[0.001, 0.003]"]), tmp_path)
    assert [j.experiment for j in jobs] == ["demo_tiny_vit", "demo_tiny_vit"]  # zero-shot is not swept
    assert len({j.runs[0] for j in jobs}) == 2 and all(j.runs[0].startswith("demo_tiny_vit-") for j in jobs)
    assert all(j.status == "pending" for j in jobs)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    folder, jobs = run_sweep("demo", parse_grid([f"{LR}=[0.003, 1.0e+30]"]), FAST, out, workers=2)
    return out, folder, jobs


@pytest.mark.slow
def test_workers_run_jobs_in_parallel_and_a_failure_does_not_stop_the_others(swept):
    out, folder, jobs = swept
    good, bad = jobs
    assert good.status == "done" and bad.status == "failed" and "non-finite loss" in bad.error
    logs = sorted((folder / "sweep_jobs").glob("*.log"))
    starts = [json.loads(p.read_text().splitlines()[0]) for p in logs]
    assert len({s["pid"] for s in starts}) == 2 and os.getpid() not in {s["pid"] for s in starts}
    finished = json.loads(next(p for p in logs if "0.003" in p.name).read_text().splitlines()[-1])["finished"]
    assert max(s["started"] for s in starts) < finished  # both were running at once
    table = (folder / "sweep.csv").read_text().splitlines()
    assert table[0].startswith(f"{LR},experiment,mode") and len(table) == 2 and table[1].startswith("0.003,")
    assert all((folder / f"sweep.{ext}").exists() for ext in ("pdf", "svg", "png"))


@pytest.mark.slow
def test_an_interrupted_sweep_redoes_only_what_did_not_finish(swept):
    out, _, first = swept
    good_run = out / "runs" / first[0].runs[0]
    weights = good_run / "seed0" / "weights.pt"
    stamp = weights.stat().st_mtime_ns
    # a second sweep: the finished run is skipped, the new point trains
    folder, jobs = run_sweep("demo", parse_grid([f"{LR}=[0.003, 0.002]"]), FAST, out, workers=2)
    assert [j.status for j in jobs] == ["skipped", "done"]
    assert weights.stat().st_mtime_ns == stamp
    # interrupt the second one (no final weights yet) and run again: only it trains
    second = out / "runs" / jobs[1].runs[0] / "seed0"
    (second / "weights.pt").unlink()
    (second / "summary.json").unlink()
    folder, jobs = run_sweep("demo", parse_grid([f"{LR}=[0.003, 0.002]"]), FAST, out, workers=2)
    assert [j.status for j in jobs] == ["skipped", "done"] and (second / "weights.pt").exists()
    rows = (folder / "sweep.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == ["0.002", "0.003"]  # skipped runs are in the table too


@pytest.mark.slow
def test_submitit_local_executor_runs_the_same_path(tmp_path):
    folder, jobs = run_sweep("demo", parse_grid([f"{LR}=[0.001, 0.003]"]), FAST, tmp_path, executor="local",
                             time_min=10)
    assert [j.status for j in jobs] == ["done", "done"], [j.error for j in jobs]
    assert len((folder / "sweep.csv").read_text().splitlines()) == 3
    assert list((folder / "sweep_jobs" / "submitit").glob("*_result.pkl"))


def test_sweep_resume_continues_only_the_variants_that_have_a_run(tmp_path):
    """--resume on a sweep: a variant with a run of its own continues it; a variant that never
    started trains (a sibling variant's unfinished run is not the one it would continue)."""
    grid = parse_grid([f"{LR}=[0.001, 0.003]"])
    _, _, jobs = plan_sweep("demo", FAST + ["resume=true"], grid, tmp_path)
    assert all(j.overrides[-1] == "resume=false" for j in jobs)
    started = tmp_path / "runs" / jobs[0].runs[0]
    started.mkdir(parents=True)
    (started / "run.json").write_text(json.dumps({"name": jobs[0].runs[0], "experiment": "demo_tiny_vit"}))
    _, _, jobs = plan_sweep("demo", FAST + ["resume=true"], grid, tmp_path)
    assert "resume=false" not in jobs[0].overrides and jobs[1].overrides[-1] == "resume=false"


def test_a_dry_run_lists_the_jobs_and_writes_nothing(tmp_path, capsys):
    from clipfh_utils.cli import main
    from clipfh_utils.runs import latest_invocation, new_invocation
    out = tmp_path / "out"
    argv = ["sweep", "--profile", "demo", "--grid", f"{LR}=[0.001, 0.003]", "--run-dir", str(out),
            *(x for item in FAST for x in ("-p", item)), "--dry-run"]
    assert main(argv) == 0
    assert not out.exists()  # not even the folder
    assert capsys.readouterr().out.count("pending  demo_tiny_vit {") == 2
    inv = new_invocation(out, {"profile": "demo"})  # an earlier `run`: still the newest afterwards
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(argv) == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert latest_invocation(out) == inv
