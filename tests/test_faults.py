"""Bad input and faults, table-driven: for each, the exit code (or exception), the one-line message
naming the culprit, and that nothing that existed before was changed or lost (every file of the
output folder, and of the committed split lists where the case touches metadata, hashed with its
mtime before and after).

The "world" is an output folder holding a finished run A (the FAST demo experiment) and an
unfinished run B (the same with finetune.lr=0.002, interrupted after fine-tuning epoch 1). Cases
that must write work on a copy of it. Faults: kill -9 during training then --resume (a
subprocess: bit-identical weights), a second writer while one trains (lock), a stale lock, full
disks (foreseen, and met by a patched writer), a killed notebook kernel.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat
import pandas as pd
import pytest
import torch

from clipfh_utils.atomic import DiskFullError, atomic_write_json, require_free_space
from clipfh_utils.cli import main
from clipfh_utils.config import load_profile
from clipfh_utils.data import image_cache
from clipfh_utils.data.prepare import prepare_dataset
from clipfh_utils.locks import LOCK_FILE, LockedError, RunLock
from clipfh_utils.pipeline import load_run, open_run
from clipfh_utils.pipeline import runner
from clipfh_utils.pipeline.resolve import resolve_experiments
from clipfh_utils.runs import RunStateError, read_manifest, record_entry, new_invocation, read_run
from clipfh_utils.training import checkpoint as ckpt_module
from clipfh_utils.training import loop as loop_module
from clipfh_utils.training.checkpoint import CheckpointError, checkpoint_position
from clipfh_utils.training.weights import store_half_if_exact

from .conftest import REAL_HANDINFO, REPO
from .test_events import read_events, scalars
from .test_runs import FAST

FAST_P = [x for item in FAST for x in ("-p", item)]
EXP = "demo_tiny_vit"
COMMITTED_SPLITS = REPO / "data" / "splits" / "11k"


class Interrupt(Exception):
    pass


# --------------------------------------------------------------------------- helpers

def snapshot(*roots: Path) -> dict[str, tuple[str, int]]:
    """Every file under `roots`: content hash and mtime."""
    files = {}
    for root in roots:
        for f in sorted(Path(root).rglob("*")):
            if f.is_file():
                files[str(f)] = (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
    return files


def assert_nothing_lost(before: dict, after: dict) -> None:
    changed = [k for k, v in before.items() if k in after and after[k] != v]
    lost = [k for k in before if k not in after]
    assert not changed and not lost, (changed, lost)


def fill(text: str, world: dict) -> str:
    """'{out}', '{a}', '{b}', '{inputs}', '{base}' replaced by the world's paths and run names."""
    for key, value in world.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def error_line(err: str) -> str:
    """The one error line of the CLI's stderr (notes may precede it); no traceback."""
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err
    assert "--debug" not in lines[0], lines[0]  # an anticipated error, not a crash
    return lines[0]


def run_name_of(out: Path, lr: str) -> str:
    (rec,) = [r for r in (read_run(p) for p in (out / "runs").iterdir()) if r and
              r["config"]["finetune"]["lr"] == float(lr)]
    return rec["name"]


def stop_after_finetune_epoch(n: int):
    real = loop_module.Trainer._checkpoint

    def checkpoint(self, index, phase, epoch):
        real(self, index, phase, epoch)
        if phase.name == "finetune" and epoch == n:
            raise Interrupt

    return checkpoint


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("world")
    out = base / "out"
    (a,) = open_run("demo", out, FAST).run_stage("stage2", progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop_module.Trainer, "_checkpoint", stop_after_finetune_epoch(1))
        with pytest.raises(Interrupt):
            open_run("demo", out, FAST + [f"{EXP}.finetune.lr=0.002"]).run_stage("stage2", progress=False)
    b = run_name_of(out, "0.002")
    inputs = base / "inputs"
    inputs.mkdir()
    (inputs / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 50)
    from clipfh_utils.backbones import load_clip
    torch.save(load_clip("tiny-rn").model.state_dict(), inputs / "rn.pt")
    demo = (REPO / "configs" / "profiles" / "demo.yaml").read_text()
    (inputs / "bad_yaml.yaml").write_text(demo.replace("protocol:\n", "protocol: [\n"))
    (inputs / "latin1.yaml").write_bytes(demo.replace("CPU", "CPU caf\u00e9").encode("latin-1"))
    (inputs / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + demo.encode())
    (inputs / "list_top.yaml").write_text("- name: demo\n")
    (inputs / "exp_bad.yaml").write_text("method: clip_reid\nname: exp_bad\nfinetune:\n  epochs: 2\n  lr_typo: 1\n")
    rows = REAL_HANDINFO.read_bytes()
    (inputs / "latin1.csv").write_bytes(rows.replace(b'"male"', "\"m\u00e4le\"".encode("latin-1"), 2))
    (inputs / "bom.csv").write_bytes(b"\xef\xbb\xbf" + rows)
    modified = inputs / "modified" / "HandInfo.csv"
    modified.parent.mkdir()
    lines = rows.decode().splitlines(keepends=True)
    i = next(j for j, x in enumerate(lines) if '"dorsal right"' in x and ",0,0," in x and x.startswith('"0000000"'))
    lines[i] = lines[i].replace(",0,0,", ",1,0,", 1)  # one accessories flag flipped
    modified.write_text("".join(lines))
    shutil.copy(REAL_HANDINFO.with_name("HandInfo.csv.sha256"), modified.with_name("HandInfo.csv.sha256"))
    (inputs / "bare").mkdir()
    shutil.copy(modified, inputs / "bare" / "HandInfo.csv")  # copied elsewhere without its .sha256
    return {"out": out, "a": a.run_name, "b": b, "inputs": inputs, "base": base}


@pytest.fixture()
def world_copy(world, tmp_path):
    shutil.copytree(world["out"], tmp_path / "out")
    return {**world, "out": tmp_path / "out"}


# --------------------------------------------------------------------------- the CLI table

@dataclass
class Case:
    id: str
    args: list[str]                     # after `run --profile demo --run-dir <world>` (or a full argv)
    code: int
    needles: list[str]
    setup: Callable | None = None       # (world, monkeypatch) -> teardown or None, before the snapshot
    full_argv: bool = False             # args are the whole argv ({inputs} and {out} substituted)
    roots: tuple[str, ...] = ("out",)   # what must stay unchanged ("splits": the committed lists)


def _hold_lock(world, mp):
    """Another host's job is writing B right now."""
    lock = world["out"] / "runs" / world["b"] / LOCK_FILE
    atomic_write_json(lock, {"host": "gpu-node-7", "pid": 4242, "token": "x",
                             "started": "2026-11-27T08:00:00", "heartbeat_unix": time.time()})
    return lock.unlink


def _tiny_disk(world, mp):
    import collections
    usage = collections.namedtuple("usage", "total used free")
    mp.setattr("clipfh_utils.atomic.shutil.disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))


def _cut_run_json(world, mp):
    """The finished run A's run.json cut short (a full disk on a file server, a bad copy)."""
    f = world["out"] / "runs" / world["a"] / "run.json"
    whole = f.read_bytes()
    f.write_bytes(whole[:50])
    return lambda: f.write_bytes(whole)


def _cut_manifest(world, mp):
    (f,) = (world["out"] / "invocations").glob("*/manifest.json")
    whole = f.read_bytes()
    f.write_bytes(whole[:40])
    return lambda: f.write_bytes(whole)


def _no_slurm(world, mp):
    mp.setattr("clipfh_utils.pipeline.sweep.shutil.which", lambda name: None)


SMALL_SYNTH = ["data.synthetic_dir={base}/synth", "data.synthetic.n_train_ids=3", "data.synthetic.n_test_ids=3",
               "data.synthetic.images_per_id=[2, 3]", "data.synthetic.size=[32, 32]"]


def _missing_image(world, mp):
    synth = world["base"] / "synth"
    if not synth.exists():
        prof = load_profile("demo", [fill(x, world) for x in SMALL_SYNTH])
        ds = prepare_dataset(prof.data, prof.datasets[0], prof.protocol)
        (ds.images_dir / ds.protocol().test[3].image_name).unlink()


B = "{b}"  # the unfinished run's name, substituted
CASES = [
    # ---- profile keys, ranges and types (exit 2, the -p item named)
    Case("n_splits=-1", ["-p", "protocol.n_splits=-1"], 2, ["-p 'protocol.n_splits=-1'", "must be >= 1"]),
    Case("n_splits=0", ["-p", "protocol.n_splits=0"], 2, ["protocol.n_splits: must be >= 1, got 0"]),
    Case("n_splits=ten", ["-p", "protocol.n_splits=ten"], 2, ["protocol.n_splits: expected an integer"]),
    Case("unknown profile key, level 2", ["-p", "protocol.nsplits=3"], 2, ["unknown key 'nsplits'", "known keys"]),
    Case("unknown profile key, level 3", ["-p", "data.synthetic.n_train=3"], 2, ["data.synthetic", "unknown key 'n_train'"]),
    Case("synthetic ids < 2", ["-p", "data.synthetic.n_train_ids=1"], 2, ["n_train_ids: must be >= 2"]),
    Case("image size < 16", ["-p", "data.synthetic.size=[8, 8]"], 2, ["data.synthetic.size[0]: must be >= 16"]),
    Case("aspect", ["-p", "datasets=[{aspect: dorsal middle}]"], 2, ["aspect: must be one of"]),
    Case("no '='", ["-p", "protocol.n_splits"], 2, ["override 'protocol.n_splits'", "key=value"]),
    Case("bad YAML value", ["-p", "protocol.n_splits=[1"], 2, ["override 'protocol.n_splits=[1'", "not valid YAML"]),
    Case("bare key", ["-p", "nosuchkey=1"], 2, ["-p 'nosuchkey=1'", "expected <experiment>.<key>=value"]),
    Case("no such experiment", ["-p", "nosuch.lr=1"], 2, ["-p 'nosuch.lr=1'", "no experiment of this profile is named 'nosuch'"]),
    # ---- experiment keys (exit 2, the -p item and the dotted key named)
    Case("batch_size=0", ["-p", f"{EXP}.prompt.batch_size=0"], 2, [f"-p '{EXP}.prompt.batch_size=0'", "prompt.batch_size: must be >= 1"]),
    Case("k=1", ["-p", f"{EXP}.finetune.k=1"], 2, ["finetune.k: must be >= 2, got 1"]),
    Case("k=0", ["-p", f"{EXP}.finetune.k=0"], 2, ["finetune.k: must be >= 2, got 0"]),
    Case("p=0", ["-p", f"{EXP}.finetune.p=0"], 2, ["finetune.p: must be >= 1"]),
    Case("p > identities", ["-p", f"{EXP}.finetune.p=100"], 2, [f"error: -p '{EXP}.finetune.p=100': finetune.p: 100 identities per batch", "only 24 identities"]),
    Case("seeds empty", ["-p", "*.seeds=[]"], 2, ["-p '*.seeds=[]'", "seeds: give at least one seed"]),
    Case("seeds repeat", ["-p", f"{EXP}.seeds=[0, 0]"], 2, ["repeats a seed"]),
    Case("seed < 0", ["-p", f"{EXP}.seeds=[-1]"], 2, ["seeds[0]: must be >= 0"]),
    Case("epochs < 0", ["-p", f"{EXP}.finetune.epochs=-1"], 2, ["finetune.epochs: must be >= 0"]),
    Case("lr = 0", ["-p", f"{EXP}.finetune.lr=0"], 2, ["finetune.lr: must be > 0"]),
    Case("lr not a number", ["-p", f"{EXP}.finetune.lr=fast"], 2, ["finetune.lr: expected a number, got 'fast'"]),
    Case("unknown key, level 1", ["-p", f"{EXP}.nosuch=1"], 2, ["unknown key 'nosuch'"]),
    Case("unknown key, level 2", ["-p", f"{EXP}.finetune.lrr=1"], 2, ["finetune: unknown key 'lrr'"]),
    Case("unknown key, level 3", ["-p", f"{EXP}.finetune.augment.flipp=1"], 2, ["finetune.augment: unknown key 'flipp'"]),
    Case("milestones decrease", ["-p", f"{EXP}.finetune.milestones=[2, 1]"], 2, ["milestones: must be increasing"]),
    Case("unknown loss term", ["-p", f"{EXP}.finetune.loss_weights.idd=1"], 2, ["loss_weights.idd: unknown loss term"]),
    Case("literal", ["-p", f"{EXP}.backbone.quick_gelu=maybe"], 2, ["quick_gelu: must be one of"]),
    Case("ViT size not a patch multiple", ["-p", f"{EXP}.image_size=[60, 60]"], 2,
         ["image_size: image size 60x60 is not a multiple of tiny-vit's patch size 8", "backbone.crop: true"]),
    Case("ResNet size not a multiple of 32", ["-p", "experiments=[clip_reid/demo_tiny_rn]", "-p", "demo_tiny_rn.image_size=[48, 48]"], 2,
         ["-p 'demo_tiny_rn.image_size=[48, 48]'", "multiple of 32"]),
    Case("unknown backbone", ["-p", f"{EXP}.backbone.name=ViT-Q-99"], 2, ["backbone.name: unknown backbone 'ViT-Q-99'"]),
    Case("unknown config", ["-p", "experiments=[clip_reid/nope]"], 2, ["no clip_reid config named 'nope'"]),
    Case("experiment form", ["-p", "experiments=[nope]"], 2, ["experiment 'nope': write it as <method>/<config>"]),
    Case("config file key", ["-p", "experiments=[{inputs}/exp_bad.yaml]"], 2, ["exp_bad.yaml.finetune: unknown key 'lr_typo'"]),
    # ---- files: profiles, weights (exit 2, the file named)
    Case("no such profile", ["run", "--profile", "nope", "--run-dir", "{out}"], 2, ["no profiles config named 'nope'"], full_argv=True),
    Case("profile bad YAML", ["run", "--profile", "{inputs}/bad_yaml.yaml", "--run-dir", "{out}"], 2,
         ["bad_yaml.yaml: not valid YAML at line"], full_argv=True),
    Case("profile latin-1", ["run", "--profile", "{inputs}/latin1.yaml", "--run-dir", "{out}"], 2,
         ["latin1.yaml: not UTF-8 text", "save it as UTF-8"], full_argv=True),
    Case("profile not a mapping", ["run", "--profile", "{inputs}/list_top.yaml", "--run-dir", "{out}"], 2,
         ["list_top.yaml: expected a mapping at the top level"], full_argv=True),
    Case("garbage weights", ["-p", f"{EXP}.backbone.weights={{inputs}}/garbage.pt"], 2,
         ["garbage.pt: not a readable weights file", "replace the file"]),
    Case("ResNet weights for a ViT", ["-p", f"{EXP}.backbone.weights={{inputs}}/rn.pt"], 2,
         ["rn.pt: does not fit tiny-vit", "looks like a ResNet"]),
    Case("weights missing", ["-p", f"{EXP}.backbone.weights={{inputs}}/missing.pt"], 2, ["missing.pt: file not found"]),
    Case("missing image", [x for item in SMALL_SYNTH for x in ("-p", item)], 2, ["1 of", "images missing", "Hand_"], setup=_missing_image),
    # ---- run folders: unfinished runs, --resume, --resume-from, locks, disk (nothing touched)
    Case("unfinished without --resume", ["-p", f"{EXP}.finetune.lr=0.002"], 2,
         ["runs/{b}: seed 0 unfinished (checkpoint at phase 'finetune' epoch 1)", "continue with --resume", "--retrain"]),
    Case("--resume after a config change", ["-p", f"{EXP}.finetune.lr=0.01", "--resume"], 2,
         [f"--resume: no run of {EXP}", "the nearest, {b} (unfinished), differs in finetune.lr: 0.002 (now 0.01)",
          "--resume-from"]),
    Case("--resume, epochs and lr changed", ["-p", f"{EXP}.finetune.lr=0.01", "-p", f"{EXP}.finetune.epochs=40", "--resume"], 2,
         ["finetune.epochs: 2 (now 40)", "finetune.lr: 0.002 (now 0.01)"]),
    Case("run.json of a finished run cut short", [], 2,
         ["runs/{a}/run.json: cannot be read (JSONDecodeError)", "weights and metrics are kept", "not rewritten"],
         setup=_cut_run_json),
    Case("--resume-from a run that is not there", ["--resume-from", f"{EXP}-0000000000"], 2,
         [f"--resume-from {EXP}-0000000000: no such run", "{b}"]),
    Case("--resume-from a finished run without checkpoint", ["--resume-from", "{a}"], 2,
         ["--resume-from {a}: no checkpoint", "keep_checkpoint=true"]),
    Case("--resume-from another experiment's run", ["run", "--profile", "demo", "--run-dir", "{out}", "-p",
                                                    "experiments=[clip_reid/demo_tiny_rn]", "--resume-from", B], 2,
         ["--resume-from {b}: that is a run of experiment 'demo_tiny_vit'", "does not run"], full_argv=True),
    Case("--resume-from twice", ["--resume-from", B, "--resume-from", B], 2, ["already resumed from {b}"]),
    Case("run held by a live writer", ["-p", f"{EXP}.finetune.lr=0.002", "--resume"], 1,
         ["runs/{b}: being written by host gpu-node-7 pid 4242", "wait until it finishes"], setup=_hold_lock),
    Case("disk too small for training", ["-p", f"{EXP}.finetune.lr=0.003"], 1,
         ["not enough free disk space for training demo_tiny_vit on synthetic/dorsal_right (1 seed)",
          "needs about", "4.0 KB free"], setup=_tiny_disk),
    # ---- metadata (the committed split lists never change)
    Case("HandInfo.csv modified", ["splits", "--profile", "full", "-p", "data.handinfo={inputs}/modified/HandInfo.csv"], 2,
         ["modified/HandInfo.csv: sha256", "differs from HandInfo.csv.sha256", "never built from modified metadata",
          "allow_modified_handinfo=true"], full_argv=True, roots=("splits",)),
    Case("HandInfo.csv modified, copied without its .sha256", ["splits", "--profile", "full", "-p",
                                                              "data.handinfo={inputs}/bare/HandInfo.csv"], 2,
         ["bare/HandInfo.csv: sha256", "differs from HandInfo.csv.sha256 beside the split lists in data/splits/11k",
          "never built from modified metadata"], full_argv=True, roots=("splits",)),
    # its bytes differ from the original: refused as modified, unless allowed; then it is read and named
    Case("HandInfo.csv latin-1, refused as modified", ["splits", "--profile", "full", "-p",
                                                       "data.handinfo={inputs}/latin1.csv"], 2,
         ["latin1.csv: sha256", "never built from modified metadata"], full_argv=True, roots=("splits",)),
    Case("HandInfo.csv latin-1", ["splits", "--profile", "full", "-p", "data.handinfo={inputs}/latin1.csv", "-p",
                                  "data.allow_modified_handinfo=true", "-p", "data.splits_dir={base}/latin1_splits"], 2,
         ["latin1.csv row 2: byte 0xe4 at column", "not UTF-8"], full_argv=True, roots=("splits",)),
    Case("HandInfo.csv missing", ["splits", "--profile", "full", "-p", "data.handinfo={inputs}/none.csv"], 2,
         ["none.csv: file not found"], full_argv=True, roots=("splits",)),
    # ---- raw exceptions that became one-line errors
    Case("device=gpu", ["-p", "device=gpu"], 2, ["device 'gpu': not a device", "cpu, cuda or cuda:<index>"]),
    Case("bench --device gpu", ["bench", "--device", "gpu", "--steps", "1"], 2, ["device 'gpu': not a device"],
         full_argv=True),
    Case("run folder is a file", ["run", "--profile", "demo", "--run-dir", "{inputs}/garbage.pt", *FAST_P], 2,
         ["garbage.pt: is a file, not a folder"], full_argv=True),
    Case("synth --size 10", ["synth", "--out", "{base}/synth_out", "--size", "10"], 2,
         ["--size 10: expected WIDTHxHEIGHT"], full_argv=True),
    Case("manifest cut short, --only", ["--only", "04_comparison"], 2,
         ["manifest.json: cannot be read (JSONDecodeError)", "start a new invocation"], setup=_cut_manifest),
    Case("Slurm executor without Slurm", ["sweep", "--profile", "demo", "--run-dir", "{out}", *FAST_P, "--grid",
                                          f"{EXP}.finetune.lr=[0.1]", "--executor", "slurm"], 2,
         ["--executor slurm: Slurm is not available here"], setup=_no_slurm, full_argv=True),
    Case("--only: the selected notebook's backbone is checked first", ["--only", "02_stage2_clip_reid", "-p",
                                                                         f"{EXP}.backbone.weights={{inputs}}/garbage.pt"], 2,
         ["garbage.pt: not a readable weights file"]),
    Case("--resume with --retrain", ["--resume", "--retrain"], 2, ["retrain: cannot be combined with resume"]),
    Case("unknown notebook", ["--only", "99_nope"], 1, ["unknown notebook(s) 99_nope"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, world, capsys, monkeypatch):
    argv = [fill(x, world) for x in case.args]
    if not case.full_argv:
        argv = ["run", "--profile", "demo", "--run-dir", str(world["out"]), *FAST_P, *argv]
    teardown = case.setup(world, monkeypatch) if case.setup else None
    roots = [world["out"] if r == "out" else COMMITTED_SPLITS for r in case.roots]
    before = snapshot(*roots)
    try:
        code = main(argv)
        after = snapshot(*roots)
    finally:
        if teardown:
            teardown()
    line = error_line(capsys.readouterr().err)  # one line: what, where, how to fix
    assert code == case.code, line
    for needle in case.needles:
        assert fill(needle, world) in line, (needle, line)
    assert_nothing_lost(before, after)
    assert set(after) == set(before)  # and nothing written


# --------------------------------------------------------------------------- faults, in process

@pytest.mark.slow
def test_modified_handinfo_with_the_flag_writes_elsewhere_and_says_so(world, tmp_path, capsys):
    before = snapshot(COMMITTED_SPLITS)
    splits = tmp_path / "splits"
    assert main(["splits", "--profile", "full", "-p", f"data.handinfo={world['inputs']}/modified/HandInfo.csv",
                 "-p", "data.allow_modified_handinfo=true", "-p", f"data.splits_dir={splits}",
                 "-p", "protocol.n_splits=1"]) == 0
    captured = capsys.readouterr()
    assert "[clipfh] note:" in captured.err and "differs from HandInfo.csv.sha256" in captured.err
    (folder,) = splits.iterdir()
    assert folder.name.startswith("11k-modified-") and not (splits / "11k").exists()
    assert "'train_images': 889" in captured.out  # the flipped row is an accessory now: one fewer
    assert_nothing_lost(before, snapshot(COMMITTED_SPLITS))


def test_the_committed_split_lists_record_the_metadata_they_were_built_from():
    from clipfh_utils.data.datasets import recorded_source
    from clipfh_utils.data.handinfo import load_handinfo
    from clipfh_utils.data.protocol import _csv_text, build_protocol
    from clipfh_utils.provenance import file_sha256
    assert recorded_source(COMMITTED_SPLITS) == file_sha256(REAL_HANDINFO)
    proto = build_protocol(load_handinfo(REAL_HANDINFO), "palmar left", 0, 1)
    folder = COMMITTED_SPLITS / "palmar_left" / "seed0"
    assert (folder / "train.csv").read_text() == _csv_text(proto.train)
    assert (folder / "gallery_00.csv").read_text() == _csv_text(proto.galleries[0])


@pytest.mark.slow
def test_split_lists_record_their_source_and_refuse_other_metadata(world, tmp_path, capsys):
    splits = tmp_path / "splits"
    args = ["splits", "--profile", "full", "-p", f"data.splits_dir={splits}", "-p", "protocol.n_splits=1"]
    assert main(args) == 0
    assert (splits / "11k" / "HandInfo.csv.sha256").read_text().split()[0] == \
        REAL_HANDINFO.with_name("HandInfo.csv.sha256").read_text().split()[0]
    before = snapshot(splits)
    assert main(args + ["-p", f"data.handinfo={world['inputs']}/bare/HandInfo.csv"]) == 2
    assert "differs from HandInfo.csv.sha256 beside the split lists" in capsys.readouterr().err
    assert_nothing_lost(before, snapshot(splits))


@pytest.mark.slow
def test_handinfo_with_a_bom_is_read(world, tmp_path, capsys):
    assert main(["splits", "--profile", "full", "-p", f"data.handinfo={world['inputs']}/bom.csv",
                 "-p", f"data.splits_dir={tmp_path}", "-p", "protocol.n_splits=1"]) == 0
    assert "'train_images': 890" in capsys.readouterr().out


def test_split_lists_that_exist_are_not_rewritten(tmp_path):
    from clipfh_utils.data.handinfo import load_handinfo
    from clipfh_utils.data.protocol import build_protocol, write_split_files
    proto = build_protocol(load_handinfo(REAL_HANDINFO), "dorsal right", 0, 2)
    folder = write_split_files(proto, tmp_path)
    before = snapshot(folder)
    time.sleep(0.01)
    write_split_files(build_protocol(load_handinfo(REAL_HANDINFO), "dorsal right", 0, 3), tmp_path)
    after = snapshot(folder)
    assert_nothing_lost(before, after)  # same content: not even touched
    assert set(after) - set(before) == {str(folder / f"{k}_02.csv") for k in ("query", "gallery", "gallery_all")}


@pytest.mark.slow
def test_profile_with_a_bom_is_read(world):
    assert load_profile(world["inputs"] / "bom.yaml").name == "demo"


def test_overrides_merge_deeply_and_in_order():
    prof = load_profile("demo", [f"{EXP}.finetune={{lr: 0.5}}", f"{EXP}.finetune.k=3", f"{EXP}.finetune.augment.pad=1"])
    (exp,) = [e for e in resolve_experiments(prof) if e.name == EXP]
    ft = exp.cfg.finetune
    assert (ft.lr, ft.k, ft.augment.pad, ft.p, ft.epochs) == (0.5, 3, 1, 8, 40)  # nothing dropped


@pytest.mark.slow
def test_unfinished_run_is_refused_in_a_notebook_too(world):
    before = snapshot(world["out"] / "runs")  # (opening the run context joins the newest invocation)
    with pytest.raises(RunStateError, match=r"seed 0 unfinished .*--resume"):
        open_run("demo", world["out"], FAST + [f"{EXP}.finetune.lr=0.002"]).run_stage("stage2", progress=False)
    assert snapshot(world["out"] / "runs") == before


@pytest.mark.slow
def test_truncated_checkpoint_is_named_before_anything_runs(world_copy, capsys):
    ckpt = world_copy["out"] / "runs" / world_copy["b"] / "seed0" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:2000])
    before = snapshot(world_copy["out"])
    assert main(["run", "--profile", "demo", "--run-dir", str(world_copy["out"]), *FAST_P,
                 "-p", f"{EXP}.finetune.lr=0.002", "--resume"]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"{ckpt}: cannot read the checkpoint" in line and "delete it" in line
    assert_nothing_lost(before, snapshot(world_copy["out"]))


@pytest.mark.slow
def test_resume_from_changes_the_learning_rate_for_real_as_a_new_run(world_copy):
    out, b = world_copy["out"], world_copy["b"]
    b_before = snapshot(out / "runs" / b)
    run = open_run("demo", out, FAST + [f"{EXP}.finetune.lr=0.01", f"{EXP}.finetune.weight_decay=0.05",
                                        f"resume_from=[{b}]", "keep_checkpoint=true"])
    (res,) = run.run_stage("stage2", progress=False)
    assert res.run_name not in (b, world_copy["a"]) and res.trained_seeds == [0]
    rec = read_run(res.run_dir)
    assert rec["resumed_from"] == {"run": b, "seeds": {"0": "phase 'finetune' epoch 1"}}
    assert rec["identity"]["resumed_from"]["run"] == b
    epochs = [json.loads(x) for x in (res.run_dir / "seed0" / "epochs.jsonl").read_text().splitlines()]
    ft = {e["epoch"]: e for e in epochs if e["phase"] == "finetune"}
    assert sorted(ft) == [1, 2] and [e["phase"] for e in epochs].count("prompt") == 1
    assert ft[1]["lr_image_encoder"] == pytest.approx(0.002 * 0.55)  # B's epoch, as it ran
    assert ft[2]["lr_image_encoder"] == pytest.approx(0.01)          # the new rate, really used
    tb = scalars(read_events(res.run_dir / "seed0"))  # B's curves copied in and continued, each step once
    assert [v for _, v in tb["lr/image_encoder"]] == pytest.approx([0.002 * 0.55, 0.01])
    assert [s for s, _ in tb["loss/total"]] == list(range(sum(e["steps"] for e in epochs)))
    kept = torch.load(res.run_dir / "seed0" / "checkpoint.pt", weights_only=False)  # keep_checkpoint
    groups = {g["name"]: g for g in kept["optimizer"]["param_groups"]}
    assert groups["image_encoder"]["weight_decay"] == 0.05 and groups["image_encoder"]["base_lr"] == 0.01
    assert_nothing_lost(b_before, snapshot(out / "runs" / b))  # the source run is untouched


@pytest.mark.slow
def test_resume_from_cannot_shorten_training(world_copy):
    b = world_copy["b"]
    with pytest.raises(CheckpointError, match=r"epoch 1 of phase 'finetune' but the config asks for 0"):
        open_run("demo", world_copy["out"], FAST + [f"{EXP}.finetune.epochs=0", f"resume_from=[{b}]"]
                 ).run_stage("stage2", progress=False)


@pytest.mark.slow
def test_resume_from_a_checkpoint_of_another_shape_is_one_line(world_copy):
    b = world_copy["b"]
    with pytest.raises(CheckpointError) as e:
        open_run("demo", world_copy["out"], FAST + [f"{EXP}.prompt.n_ctx=2", f"resume_from=[{b}]",
                                                    f"{EXP}.prompt.template=A photo of a X X hand."]
                 ).run_stage("stage2", progress=False)
    msg = str(e.value)
    assert "'model' state does not fit the model as now configured" in msg and "\n" not in msg


@pytest.mark.slow
def test_full_disk_while_checkpointing_keeps_the_last_checkpoint(world_copy, monkeypatch):
    out, b = world_copy["out"], world_copy["b"]
    ckpt = out / "runs" / b / "seed0" / "checkpoint.pt"
    before = snapshot(out)

    def full_disk(state, f):
        Path(f).write_bytes(b"\x00" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_module.torch, "save", full_disk)
    with pytest.raises(DiskFullError) as e:
        open_run("demo", out, FAST + [f"{EXP}.finetune.lr=0.002", "resume=true"]).run_stage("stage2", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{ckpt.parent}: disk full while writing checkpoint.pt (needs about") and "\n" not in msg
    after = snapshot(out)
    assert after[str(ckpt)] == before[str(ckpt)]  # the previous complete checkpoint survives
    assert not list(ckpt.parent.glob(".*.tmp")) and not (out / "runs" / b / LOCK_FILE).exists()


@pytest.mark.slow
def test_full_disk_while_writing_the_manifest_keeps_the_previous_one(world_copy, monkeypatch):
    out = world_copy["out"]
    inv = new_invocation(out, {"profile": "demo"})
    manifest = out / "invocations" / inv / "manifest.json"
    before = manifest.read_bytes()
    real = Path.write_bytes

    def full_disk(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(DiskFullError, match=r"invocations/.*: disk full while writing manifest.json"):
        record_entry(out, inv, "x", {"run": "x"})
    monkeypatch.undo()
    assert manifest.read_bytes() == before and not list(manifest.parent.glob(".*.tmp"))


@pytest.mark.slow
def test_full_disk_while_logging_an_epoch_is_one_line_naming_the_folder(world_copy, monkeypatch):
    out, b = world_copy["out"], world_copy["b"]
    real = open

    def full_disk(path, mode="r", *a, **k):
        if str(path).endswith(".jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, mode, *a, **k)
    monkeypatch.setattr(loop_module, "open", full_disk, raising=False)
    with pytest.raises(DiskFullError) as e:
        open_run("demo", out, FAST + [f"{EXP}.finetune.lr=0.002", "resume=true"]).run_stage("stage2", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{out / 'runs' / b / 'seed0'}: disk full while writing log.jsonl") and "\n" not in msg
    assert "free space there" in msg and "Errno" not in msg


def test_foreseen_full_disk_names_folder_and_space():
    with pytest.raises(DiskFullError) as e:
        require_free_space(Path("/"), 1 << 60, "a test")
    assert str(e.value).startswith("/: not enough free disk space for a test: needs about 1073741824.0 GB")


def test_partial_notebook_is_kept_only_when_complete(tmp_path):
    good, cut = tmp_path / ".a.running.ipynb", tmp_path / ".b.running.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), good)
    cut.write_text(good.read_text()[:30])  # what a full disk leaves
    assert runner._keep_partial(good, tmp_path / "a.failed.ipynb") and (tmp_path / "a.failed.ipynb").exists()
    assert not runner._keep_partial(cut, tmp_path / "b.failed.ipynb")
    assert not cut.exists() and not (tmp_path / "b.failed.ipynb").exists()


@pytest.mark.slow
def test_killed_kernel_is_named_and_failed_in_the_index(world_copy, tmp_path, monkeypatch):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "demo"\nrun_dir = ""\noverrides = []\ninvocation = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nb_dir / "09_oom.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nb_dir)
    out = world_copy["out"]
    new_invocation(out, {"profile": "demo"})  # --only adds to the newest invocation: a fresh one
    with pytest.raises(runner.PipelineError) as e:
        runner.run_pipeline("demo", only=["09_oom"], run_dir=out, params=FAST)
    msg = str(e.value)
    assert msg.startswith("notebook 09_oom lost its kernel (killed: most likely out of memory)")
    assert not e.value.bad_input
    index = (out / "index.html").read_text()
    assert "09_oom" in index and "FAILED: lost its kernel" in index
    # earlier runs are listed apart, never as this invocation's results
    assert "Earlier runs in this folder" in index and world_copy["a"] in index and "Results —" not in index


def test_truncated_decode_cache_is_named_and_rebuilt(tmp_path, capsys):
    from .test_image_cache import _make_images
    names = _make_images(tmp_path / "Hands")
    a = image_cache.load_images(tmp_path / "Hands", names, (16, 16), tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("*.npy")
    cache.write_bytes(cache.read_bytes()[:200])
    b = image_cache.load_images(tmp_path / "Hands", names, (16, 16), tmp_path / "cache")
    err = capsys.readouterr().err
    assert f"{cache}: cannot read this decode cache" in err and "rebuild" in err
    assert torch.equal(a, b)
    assert torch.equal(torch.from_numpy(__import__("numpy").load(cache)).permute(0, 3, 1, 2), a)  # good again


def test_corrupt_image_names_its_file(tmp_path):
    from .test_image_cache import _make_images
    names = _make_images(tmp_path / "Hands", n=2)
    (tmp_path / "Hands" / names[0]).write_bytes(b"\xff\xd8 cut")
    with pytest.raises(image_cache.ImageDecodeError, match=f"{names[0]}: cannot decode image"):
        image_cache.load_images(tmp_path / "Hands", names, (16, 16))


# --------------------------------------------------------------------------- locks

def test_stale_lock_of_another_host_is_taken_over_with_a_note(tmp_path, capsys):
    folder = tmp_path / "runs" / "r"
    atomic_write_json(folder / LOCK_FILE, {"host": "gone-node", "pid": 1, "token": "t", "started": "then",
                                           "heartbeat_unix": time.time() - 3600})
    with RunLock(folder):
        held = json.loads((folder / LOCK_FILE).read_text())
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
    assert "took over the lock of host gone-node pid 1" in capsys.readouterr().err
    assert not (folder / LOCK_FILE).exists()


@pytest.mark.slow
def test_live_lock_stops_a_second_writer_and_a_reader_takes_none(world, tmp_path):
    folder = world["out"] / "runs" / world["a"]
    before = snapshot(world["out"])
    with RunLock(folder, heartbeat_s=0.05):
        with pytest.raises(LockedError, match=rf"being written by host {socket.gethostname()} pid {os.getpid()}"):
            RunLock(folder).acquire()
        time.sleep(0.2)  # heartbeats
        assert json.loads((folder / LOCK_FILE).read_text())["heartbeat_unix"] > time.time() - 1
        m = load_run(folder, device="cpu")  # opening a run read-only takes no lock
        assert m.name == world["a"]
    assert_nothing_lost(before, snapshot(world["out"]))


def test_a_writer_may_wait_for_the_holder(tmp_path, capsys):
    folder = tmp_path / "runs" / "r"
    holder = RunLock(folder)
    holder.acquire()
    threading.Timer(0.3, holder.release).start()
    with RunLock(folder, wait_s=30) as second:  # parallel jobs sharing an experiment take turns
        assert json.loads((folder / LOCK_FILE).read_text())["token"] == second.token
    assert "waiting up to 30 s" in capsys.readouterr().err
    holder.acquire()
    t0 = time.time()
    with pytest.raises(LockedError, match="being written by"):
        RunLock(folder, wait_s=0.2).acquire()
    assert 0.2 <= time.time() - t0 < 5
    holder.release()


@pytest.mark.slow
def test_lock_wait_s_waits_for_the_writer_then_loads_the_run_it_finished(world_copy, capsys):
    """Another process trains run A right now (its seed has a checkpoint, no weights yet); with
    lock_wait_s a second run of the same experiment waits, then loads what the first finished."""
    from clipfh_utils.pipeline.preflight import preflight
    out, a, b = world_copy["out"], world_copy["a"], world_copy["b"]
    seed = out / "runs" / a / "seed0"
    kept = out / "kept"
    kept.mkdir()
    for f in ("weights.pt", "summary.json"):
        shutil.move(seed / f, kept / f)
    shutil.copy(out / "runs" / b / "seed0" / "checkpoint.pt", seed / "checkpoint.pt")
    holder = RunLock(seed.parent)
    holder.acquire()

    def finish():
        for f in ("weights.pt", "summary.json"):
            shutil.move(kept / f, seed / f)
        (seed / "checkpoint.pt").unlink()
        holder.release()
    timer = threading.Timer(1.5, finish)
    try:
        prof = load_profile("demo", FAST + ["lock_wait_s=60"])
        preflight(prof, "demo", out)  # not "unfinished, use --resume": it is being written
        timer.start()
        (res,) = open_run("demo", out, FAST + ["lock_wait_s=60"]).run_stage("stage2", progress=False)
    finally:
        timer.cancel()
        if (seed / "checkpoint.pt").exists():  # failed before the timer ran: leave no live lock behind
            finish()
    assert res.run_name == a and res.trained_seeds == []  # loaded, not trained again
    assert "waiting up to 60 s" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_that_fails_before_any_notebook_succeeds_does_not_become_the_newest(world_copy, monkeypatch, capsys):
    from clipfh_utils.runs import latest_invocation, update_manifest
    out = world_copy["out"]
    first = latest_invocation(out)
    runs_ok: list[str] = []

    def notebooks(names, prof, profile_path, params, out_, inv, sockets):
        status = {n: {"ok": True, "seconds": 1.0} for n in runs_ok}
        status["01_stage1_zero_shot"] = {"ok": False, "seconds": 1.0, "error": "failed at cell 3 (LockedError: ...)"}
        update_manifest(out_, inv, notebooks=status)
        raise runner.PipelineError("notebook 01_stage1_zero_shot failed at cell 3 (LockedError: held)")
    monkeypatch.setattr(runner, "_run_notebooks", notebooks)
    argv = ["run", "--profile", "demo", "--run-dir", str(out), *FAST_P]
    assert main(argv) == 1
    assert latest_invocation(out) == first and "the newest invocation is " + first in capsys.readouterr().out
    assert len(list((out / "invocations").glob("*/manifest.json"))) == 2  # its own record stays
    assert f"Invocation <code>{first}</code>" in (out / "index.html").read_text()
    runs_ok.append("00_data_filtering")  # one notebook did its work: that run is the newest, failure shown
    assert main(argv) == 1
    assert latest_invocation(out) != first


def test_a_writer_that_lost_its_lock_stops(tmp_path):
    folder = tmp_path / "runs" / "r"
    lock = RunLock(folder, heartbeat_s=3600)
    lock.acquire()
    atomic_write_json(folder / LOCK_FILE, {"host": "other", "pid": 7, "token": "new", "heartbeat_unix": time.time()})
    lock.beat()
    with pytest.raises(LockedError, match="lost the lock to host other pid 7"):
        lock.check()
    lock.release()
    assert json.loads((folder / LOCK_FILE).read_text())["token"] == "new"  # the new holder's lock stays


def test_parallel_writers_lose_no_manifest_entry(tmp_path):
    inv = new_invocation(tmp_path, {"profile": "demo"})

    def writer(k):
        for i in range(15):
            record_entry(tmp_path, inv, f"{k}-{i}", {"run": f"{k}-{i}"})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_manifest(tmp_path, inv)["entries"]) == 60


# --------------------------------------------------------------------------- disk

@pytest.mark.slow
def test_finished_weights_are_fp16_only_where_exact_enough(world, tmp_path):
    saved = torch.load(world["out"] / "runs" / world["a"] / "seed0" / "weights.pt", weights_only=False)
    assert saved["weights_dtype"] == "float16"
    assert {v.dtype for v in saved["states"]["model"].values() if v.is_floating_point()} == {torch.float16}
    summary = json.loads((world["out"] / "runs" / world["a"] / "seed0" / "summary.json").read_text())
    assert 0 < summary["fp16_max_feature_diff"] <= summary["fp16_tolerance"]
    assert not (world["out"] / "runs" / world["a"] / "seed0" / "checkpoint.pt").exists()
    # a model whose features move more than the tolerance keeps fp32
    model = torch.nn.Linear(4, 4)
    ckpt_module.save_checkpoint(tmp_path / "w.pt", {"states": {"model": model.state_dict()}})
    x = torch.randn(8, 4)
    info = store_half_if_exact(tmp_path / "w.pt", model, lambda: model(x).detach(), 1e-9)
    assert info["weights_dtype"] == "float32" and info["fp16_max_feature_diff"] > 1e-9
    assert torch.load(tmp_path / "w.pt", weights_only=False)["states"]["model"]["weight"].dtype == torch.float32
    assert model.weight.dtype == torch.float32


@pytest.mark.slow
def test_clean_lists_first_and_removes_on_request(world_copy, tmp_path, capsys):
    out, a, b = world_copy["out"], world_copy["a"], world_copy["b"]
    orphan = out / "runs" / f"{EXP}-0123456789"
    shutil.copytree(out / "runs" / a, orphan)
    rec = read_run(orphan)
    atomic_write_json(orphan / "run.json", {**rec, "name": orphan.name})
    shutil.copy(out / "runs" / b / "seed0" / "checkpoint.pt", out / "runs" / a / "seed0" / "checkpoint.pt")
    (out / "invocations" / "x" / "notebooks").mkdir(parents=True)
    (out / "invocations" / "x" / "notebooks" / "02.failed.ipynb").write_text("{}")
    tmp = out / "runs" / a / ".run.json.abcd.tmp"
    tmp.write_text("half")
    os.utime(tmp, (time.time() - 3600, time.time() - 3600))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "0123.npy").write_bytes(b"x" * 10)
    argv = ["clean", "--run-dir", str(out), "-p", f"data.cache_dir={cache}"]
    before = snapshot(out, cache)
    assert main(argv) == 0
    listing = capsys.readouterr().out
    assert_nothing_lost(before, snapshot(out, cache))  # listing removes nothing
    for needle in (f"run no invocation refers to: {orphan}", f"checkpoint of a finished seed: {out / 'runs' / a}",
                   "partial notebook of a failed run", f"temp file of an interrupted write: {tmp}",
                   "decode cache (rebuilt when needed)", f"kept  {out / 'runs' / b}: unfinished (seed0)",
                   "5 item(s), ", f"`clipfh clean --remove --run-dir {out} -p data.cache_dir={cache}`"):
        assert needle in listing, needle
    assert main([*argv, "--remove"]) == 0
    assert "removed 5 item(s)" in capsys.readouterr().out
    assert not orphan.exists() and not tmp.exists() and not list(cache.iterdir())
    assert not (out / "runs" / a / "seed0" / "checkpoint.pt").exists() and (out / "runs" / a / "seed0" / "weights.pt").exists()
    assert (out / "runs" / b / "seed0" / "checkpoint.pt").exists()  # unfinished: kept


@pytest.mark.slow
def test_load_run_names_an_unreadable_run_json_and_keeps_it(world_copy):
    f = world_copy["out"] / "runs" / world_copy["a"] / "run.json"
    f.write_text('{"name": "x", "conf')
    with pytest.raises(RunStateError, match=r"run.json: cannot be read \(JSONDecodeError\)"):
        load_run(f.parent, device="cpu")
    assert f.read_text() == '{"name": "x", "conf'


@pytest.mark.slow
def test_a_missing_metrics_file_is_a_row_marked_missing_and_said_on_the_console(world_copy, capsys):
    from clipfh_utils.report.index import render_index
    from clipfh_utils.report.results import comparison_table, earlier_runs, invocation_metrics
    out, a = world_copy["out"], world_copy["a"]
    (f,) = (out / "runs" / a / "metrics").glob("*.json")
    f.unlink()
    assert invocation_metrics(out) == []  # the figures' list: nothing to plot
    assert f"{f}: metrics file of {a} missing" in capsys.readouterr().err
    table = comparison_table(invocation_metrics(out, missing=True))
    (row,) = table.to_dict(orient="records")
    rel = str(f.relative_to(out))  # as the manifest names it: no machine-specific path in a report
    assert row["run"] == a and row["missing"] == rel and row["mAP"] == "missing"
    assert rel in row["model"] and pd.isna(row["mAP_mean"])
    assert a not in set(earlier_runs(out).get("run", []))  # not passed off as an earlier run
    page = render_index(out, read_manifest(out, (out / "invocations" / "LATEST").read_text().strip())["id"])
    assert f"metrics file missing: {rel}" in page


@pytest.mark.slow
def test_load_run_names_a_backbone_change_and_the_seeds_that_really_finished(world_copy):
    out, a, b = world_copy["out"], world_copy["a"], world_copy["b"]
    with pytest.raises(FileNotFoundError, match=r"seed 0 of this run has not finished training \(finished seeds: none\)"):
        load_run(out / "runs" / b, device="cpu")
    f = out / "runs" / a / "run.json"
    rec = json.loads(f.read_text())
    rec["config"]["backbone"]["name"] = "tiny-rn"  # edited by hand after training
    f.write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match=r"weights.pt: its 'model' state does not fit the model .*run.json edited"):
        load_run(f.parent, device="cpu")


def test_a_failed_local_job_names_its_error_not_only_its_log():
    from clipfh_utils.pipeline.sweep import error_line
    text = ("Traceback (most recent call last):\n  File x\nclipfh_utils.training.loop.NonFiniteLossError: "
            "non-finite loss in phase 'finetune'\n\nYou can check full logs with 'job.stderr(0)' at paths:\n"
            "  - logs/123_0_log.err\n")
    assert error_line(text) == "clipfh_utils.training.loop.NonFiniteLossError: non-finite loss in phase 'finetune'"
    assert error_line("just a line\nlast line") == "last line"


@pytest.mark.slow
def test_clean_stops_on_a_manifest_it_cannot_read_and_removes_nothing(world_copy, capsys):
    out, a = world_copy["out"], world_copy["a"]
    orphan = out / "runs" / f"{EXP}-0123456789"
    shutil.copytree(out / "runs" / a, orphan)
    atomic_write_json(orphan / "run.json", {**read_run(orphan), "name": orphan.name})
    (manifest,) = [m for m in (out / "invocations").glob("*/manifest.json") if a in m.read_text()]
    manifest.write_text(manifest.read_text()[:40])  # cut short: whether it refers to A is unknown
    before = snapshot(out)
    for extra in ([], ["--remove"]):
        assert main(["clean", "--run-dir", str(out), *extra]) == 2
        line = error_line(capsys.readouterr().err)
        assert f"{manifest}: cannot be read" in line and "nothing was removed" in line, line
    assert_nothing_lost(before, snapshot(out))
    assert (out / "runs" / a / "seed0" / "weights.pt").exists() and orphan.exists()


# --------------------------------------------------------------------------- kill -9, a subprocess

@pytest.mark.slow
def test_kill_9_then_resume_reaches_the_same_weights(world, tmp_path, capsys):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "tests.kill_driver", str(out)], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "runs" / world["a"] / "seed0" / "checkpoint.pt"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and child.poll() is None:
            if ckpt.exists() and checkpoint_position(ckpt)["phase"] == "finetune":
                break
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        # a second writer while the child trains: stopped, the holder named
        code = main(["run", "--profile", "demo", "--run-dir", str(out), *FAST_P, "--resume"])
        line = error_line(capsys.readouterr().err)
        assert code == 1 and f"being written by host {socket.gethostname()} pid {child.pid}" in line
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert checkpoint_position(ckpt) == {"seed": 0, "phase": "finetune", "phase_index": 1, "epoch": 1}
    assert not (ckpt.parent / "weights.pt").exists() and (out / "runs" / world["a"] / LOCK_FILE).exists()
    # without --resume the interrupted run is refused, not discarded
    with pytest.raises(RunStateError, match="--resume"):
        open_run("demo", out, FAST).run_stage("stage2", progress=False)
    (res,) = open_run("demo", out, FAST + ["resume=true"]).run_stage("stage2", progress=False)
    assert f"took over the lock of host {socket.gethostname()} pid {child.pid}" in capsys.readouterr().err
    assert res.run_name == world["a"] and res.trained_seeds == [0]
    resumed = torch.load(ckpt.parent / "weights.pt", weights_only=False)["states"]["model"]
    reference = torch.load(world["out"] / "runs" / world["a"] / "seed0" / "weights.pt", weights_only=False)["states"]["model"]
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    epochs = [json.loads(x) for x in (ckpt.parent / "epochs.jsonl").read_text().splitlines()]
    assert [(e["phase"], e["epoch"]) for e in epochs] == [("prompt", 1), ("finetune", 1), ("finetune", 2)]
    # the TensorBoard curves continue across the kill: every step once, the uninterrupted run's values
    tb, ref = (scalars(read_events(d / "runs" / world["a"] / "seed0")) for d in (out, world["out"]))
    assert [s for s, _ in tb["loss/total"]] == list(range(sum(e["steps"] for e in epochs)))
    assert {t: tb[t] for t in tb if t.startswith(("loss/", "lr/"))} == {t: ref[t] for t in ref if t.startswith(("loss/", "lr/"))}


@pytest.mark.slow
def test_resume_from_leaves_the_profiles_other_experiments_alone(world_copy):
    """--resume-from names a run of one experiment; the profile's others (here Stage 1) run as usual."""
    out, b = world_copy["out"], world_copy["b"]
    run = open_run("demo", out, FAST + ["experiments=[stage1, clip_reid/demo_tiny_vit]", f"resume_from=[{b}]"])
    results = run.run_stage("stage1", progress=False)
    assert [r.experiment.stage for r in results] == ["stage1", "stage1"]


@pytest.mark.slow
def test_resume_trains_what_has_no_unfinished_run_on_its_data(world_copy, capsys):
    """--resume after an interruption on one dataset: the same experiment on another dataset has no
    run of its own to continue and trains (the unfinished run on the first dataset is not its run)."""
    out = world_copy["out"]
    run = open_run("demo", out, FAST + [f"{EXP}.finetune.lr=0.01", "resume=true",
                                        "datasets=[{dataset: synthetic, aspect: dorsal left}]"])
    (res,) = run.run_stage("stage2", progress=False)
    assert res.trained_seeds == [0] and res.dataset.aspect == "dorsal left"
    assert f"--resume: {EXP} has no run to continue; training it from the start" in capsys.readouterr().err


@pytest.mark.slow
def test_the_run_name_shown_before_running_is_the_run_made_with_resume_from(world_copy):
    """What a sweep lists and skips by (experiment_run_name) is the name the run gets, --resume-from included."""
    from clipfh_utils.pipeline.experiments import experiment_run_name
    out, b = world_copy["out"], world_copy["b"]
    run = open_run("demo", out, FAST + [f"{EXP}.finetune.lr=0.01", f"resume_from=[{b}]"])
    (exp,) = run.experiments("stage2")
    name, identity = experiment_run_name(run, exp, run.dataset)
    assert identity["resumed_from"]["run"] == b
    (res,) = run.run_stage("stage2", progress=False)
    assert res.run_name == name
