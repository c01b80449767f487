"""Run identity: what the hash covers, finished runs are loaded (never retrained), ablations and
re-evaluations sit beside their baseline, earlier runs are listed apart, load_run gives a model."""
import pytest
import torch

from clipfh_utils.pipeline import experiments as exp_module
from clipfh_utils.pipeline import load_run, open_run
from clipfh_utils.report.results import comparison_table, earlier_runs, invocation_metrics
from clipfh_utils.runs import new_invocation
from clipfh_utils.training import loop as loop_module

FAST = ["experiments=[clip_reid/demo_tiny_vit]", "demo_tiny_vit.prompt.epochs=1", "demo_tiny_vit.finetune.epochs=2",
        "demo_tiny_vit.seeds=[0]", "demo_tiny_vit.finetune.monitor_every=0", "protocol.n_splits=2"]


def names(out, items, invocation=""):
    run = open_run("demo", out, FAST + items, invocation)
    (e,) = run.experiments("stage2")
    return exp_module.experiment_run_name(run, e, run.dataset)[0]


def test_the_hash_covers_what_changes_the_weights_and_nothing_else(tmp_path):
    base = names(tmp_path, [])
    assert base == names(tmp_path, [])  # stable
    assert base.startswith("demo_tiny_vit-")
    same = ["demo_tiny_vit.seeds=[0, 1]", "protocol.n_splits=3", "demo_tiny_vit.flip_test=true",
            "demo_tiny_vit.eval_batch_size=7", "demo_tiny_vit.compile=true", "demo_tiny_vit.finetune.monitor_every=5"]
    for item in same:
        assert names(tmp_path, [item]) == base, item
    different = ["demo_tiny_vit.finetune.lr=0.01", "demo_tiny_vit.amp=true", "protocol.seed=1",
                 "demo_tiny_vit.backbone.quick_gelu=false", "demo_tiny_vit.finetune.loss_weights.center=0.5",
                 "data.synthetic.seed=1"]
    hashes = {names(tmp_path, [item]) for item in different}
    assert base not in hashes and len(hashes) == len(different)


def test_weights_file_digest_is_part_of_the_identity(tmp_path):
    from safetensors.torch import save_file
    from clipfh_utils.backbones import load_clip
    clip = load_clip("tiny-vit")
    sd = {k: v.contiguous() for k, v in clip.model.state_dict().items()}
    save_file(sd, str(tmp_path / "a.safetensors"))
    sd["logit_scale"] = sd["logit_scale"] + 1
    save_file(sd, str(tmp_path / "b.safetensors"))
    a = names(tmp_path, [f"demo_tiny_vit.backbone.weights={tmp_path / 'a.safetensors'}"])
    b = names(tmp_path, [f"demo_tiny_vit.backbone.weights={tmp_path / 'b.safetensors'}"])
    assert a != b and names(tmp_path, []) not in (a, b)


@pytest.fixture()
def step_spy(monkeypatch):
    calls = []
    real = loop_module.optimizer_step
    monkeypatch.setattr(loop_module, "optimizer_step", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


@pytest.mark.slow
def test_rerun_loads_finished_runs_and_ablations_sit_beside_them(tmp_path, step_spy):
    out = tmp_path / "out"
    run = open_run("demo", out, FAST)
    (first,) = run.run_stage("stage2", progress=False)
    trained_steps = len(step_spy)
    assert first.trained_seeds == [0] and trained_steps > 0
    # the same notebook cell again (re-executing notebook 02): no training step, same numbers
    (again,) = open_run("demo", out, FAST).run_stage("stage2", progress=False)
    assert len(step_spy) == trained_steps and again.trained_seeds == []
    assert again.run_name == first.run_name
    assert again.per_split["mAP"].tolist() == first.per_split["mAP"].tolist()
    # more splits: the same run, re-evaluated (a new metrics file), never retrained
    (more,) = open_run("demo", out, FAST + ["protocol.n_splits=3"]).run_stage("stage2", progress=False)
    assert more.run_name == first.run_name and len(step_spy) == trained_steps
    assert more.metrics_files[""].name.endswith("__n3.json") and first.metrics_files[""].exists()
    # an ablation in a new invocation: a new run beside the baseline, which stays untouched
    baseline_weights = (first.run_dir / "seed0" / "weights.pt").read_bytes()
    inv = new_invocation(out, {"profile": "demo"})
    (abl,) = open_run("demo", out, FAST + ["demo_tiny_vit.finetune.lr=0.02"], inv).run_stage("stage2", progress=False)
    assert abl.run_name != first.run_name and len(step_spy) > trained_steps
    assert (first.run_dir / "seed0" / "weights.pt").read_bytes() == baseline_weights
    current = invocation_metrics(out, inv)
    assert [m["run"] for m in current] == [abl.run_name]
    table = comparison_table(current, "clipfh")
    assert list(table["run"]) == [abl.run_name]
    earlier = earlier_runs(out, inv)
    row = earlier.set_index("run").loc[first.run_name]
    assert "finetune.lr: 0.001 (current 0.02)" in row["differs from current"]
    assert row["hash"] == first.run_name.rsplit("-", 1)[1] and row["created"]


@pytest.mark.slow
def test_retrain_makes_a_new_run(tmp_path, step_spy):
    out = tmp_path / "out"
    (a,) = open_run("demo", out, FAST).run_stage("stage2", progress=False)
    n = len(step_spy)
    (b,) = open_run("demo", out, FAST + ["retrain=true"]).run_stage("stage2", progress=False)
    assert b.run_name != a.run_name and len(step_spy) == 2 * n
    assert (a.run_dir / "seed0" / "weights.pt").exists() and (b.run_dir / "seed0" / "weights.pt").exists()


@pytest.mark.slow
def test_load_run_embeds_and_searches_like_the_pipeline(tmp_path):
    out = tmp_path / "out"
    run = open_run("demo", out, FAST)
    (res,) = run.run_stage("stage2", progress=False)
    m = load_run(res.run_name, search=[tmp_path], device="cpu")
    ev = res.first_eval()
    q_rows, g_rows = res.dataset.protocol().queries[0][:5], res.dataset.protocol().galleries[0]
    q_img = ev.images[[ev.bank.index[r.image_name] for r in q_rows]]
    g_img = ev.images[[ev.bank.index[r.image_name] for r in g_rows]]
    feats = m.embed(q_img)
    assert torch.allclose(feats, ev.bank.take(q_rows)[0], atol=1e-5)  # the same features as evaluated
    scores, idx = m.search(q_img, g_img, k=3)
    brute = ev.bank.take(q_rows)[0] @ ev.bank.take(g_rows)[0].T
    for qi in range(5):
        order = sorted(range(len(g_rows)), key=lambda j: -float(brute[qi, j]))[:3]
        assert idx[qi].tolist() == order
        assert torch.allclose(scores[qi], brute[qi, order], atol=1e-5)
    # file paths work too (decoded and resized like the pipeline's cache)
    paths = [res.dataset.images_dir / r.image_name for r in q_rows[:2]]
    assert m.embed(paths).shape == feats[:2].shape
    with pytest.raises(FileNotFoundError, match="no run named"):
        load_run("nope-123", search=[tmp_path])


def test_joining_an_invocation_adds_what_it_lacks_and_never_relabels_it(tmp_path):
    from clipfh_utils.runs import read_manifest
    inv = new_invocation(tmp_path, {"profile": "demo", "profile_config": {"name": "demo"}})
    open_run("demo", tmp_path, FAST, inv)
    first = read_manifest(tmp_path, inv)
    assert "SYNTHETIC" in first["data"][0] and first["device"] == "cpu" and first["profile"] == "demo"
    open_run("demo_ablations", tmp_path, ["device=cpu"], inv)  # another profile joins the same invocation
    again = read_manifest(tmp_path, inv)
    assert again["profile"] == "demo" and again["profile_config"] == {"name": "demo"}
    assert again["data"] == first["data"] and again["device"] == first["device"]


@pytest.mark.slow
def test_a_run_that_loses_its_lock_mid_training_stops_without_writing_more(tmp_path, monkeypatch):
    """Another writer takes the run folder over (our heartbeat looked stalled): at the next epoch
    end this process notices, stops with a message naming the new holder, and writes no weights,
    no metrics, and leaves the other writer's lock in place."""
    import functools
    import json
    import time
    from clipfh_utils.locks import LOCK_FILE, LockedError, RunLock
    monkeypatch.setattr(exp_module, "RunLock", functools.partial(RunLock, heartbeat_s=0.05))
    real = exp_module.train_or_load

    def stolen_after_first_epoch(*args, on_epoch_end=None, **kwargs):
        lock_file = args[5].parent / LOCK_FILE  # args[5]: the seed folder, inside the run folder

        def callback(phase, epoch):
            info = json.loads(lock_file.read_text())
            lock_file.write_text(json.dumps({**info, "token": "other-writer", "host": "elsewhere", "pid": 4242}))
            time.sleep(0.5)  # several heartbeats: ours sees the foreign token
            on_epoch_end(phase, epoch)
        return real(*args, on_epoch_end=callback, **kwargs)

    monkeypatch.setattr(exp_module, "train_or_load", stolen_after_first_epoch)
    run = open_run("demo", tmp_path, FAST)
    with pytest.raises(LockedError, match=r"lost the lock to .*elsewhere.*stopped without writing further"):
        run.run_stage("stage2", progress=False)
    (rdir,) = [d for d in (tmp_path / "runs").iterdir() if d.name.startswith("demo_tiny_vit-")]
    assert not list(rdir.rglob("weights.pt")) and not list(rdir.rglob("*.per_query.csv.gz"))
    assert json.loads((rdir / LOCK_FILE).read_text())["token"] == "other-writer"  # theirs, untouched
