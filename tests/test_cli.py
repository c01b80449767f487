"""The command line: benchmark on the CPU, split lists, full-size synthetic rendering, one-line errors."""
import json

import numpy as np
import torch

from clipfh_utils.cli import main
from clipfh_utils.data.image_cache import load_images

from .conftest import REAL_HANDINFO


def test_bench_runs_on_cpu_and_reports_throughput(capsys):
    assert main(["bench", "--stage", "2", "--backbone", "tiny-vit", "--image-size", "64",
                 "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "16"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out[:out.rindex("}") + 1])
    assert res["stage"] == 2 and res["device"] == "cpu" and res["images_per_s"] > 0
    assert res["amp_bf16"] is False  # autocast is CUDA-only
    assert "img/s on cpu (batch 16, 64px, fp32, eager)" in out
    assert main(["bench", "--stage", "2", "--backbone", "tiny-rn", "--image-size", "64", "--last-stride", "1",
                 "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "16", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out[:out.rindex("}") + 1])
    assert res["last_stride"] == 1 and [x["seed"] for x in res["later_seeds"]] == [1]
    assert res["later_seeds"][0]["first_steps_img_s"] > 0 and "seed 1 (fresh model, no warm-up)" in out
    assert main(["bench", "--stage", "1", "--backbone", "tiny-rn", "--image-size", "64",
                 "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "16"]) == 0


def test_bench_stage3_times_training_and_both_inference_modes(capsys):
    assert main(["bench", "--stage", "3", "--backbone", "tiny-vit", "--image-size", "64", "--device", "cpu",
                 "--steps", "2", "--warmup", "1", "--batch", "8", "--infer-batch", "16"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out[:out.index("\n}") + 2])
    assert res["stage"] == 3 and res["images_per_s"] > 0 and res["infer_batch"] == 16
    assert set(res["inference"]) == {"composed", "fixed"}
    assert all(r["images_per_s"] > 0 and r["peak_mem_gib"] is None for r in res["inference"].values())
    for label in ("training", "inference [composed]", "inference [fixed]"):
        assert f"tiny-vit stage 3 {label}: " in out
    assert "(batch 16, 64px, fp32, eager)" in out and "(batch 8, 64px, fp32, eager)" in out


def test_splits_command_writes_all_aspects(tmp_path, capsys):
    assert main(["splits", "--profile", "full", "-p", f"data.splits_dir={tmp_path}",
                 "-p", "protocol.n_splits=2"]) == 0
    for aspect in ("dorsal_right", "dorsal_left", "palmar_right", "palmar_left"):
        files = sorted(p.name for p in (tmp_path / "11k" / aspect / "seed0").iterdir())
        assert files[:3] == ["gallery_00.csv", "gallery_01.csv", "gallery_all_00.csv"]
        assert len(files) == 3 + 3 * 2
    assert "'test_ids': 71" in capsys.readouterr().out


def test_full_size_rendering_goes_through_the_decode_path(tmp_path):
    """Real HandInfo rows rendered at 1600x1200, then JPEG-draft decoded to the model size."""
    rows = REAL_HANDINFO.read_text().splitlines()
    small = tmp_path / "HandInfo.csv"
    small.write_text("\n".join([rows[0], *rows[9285:9288]]) + "\n")  # includes the "1200000 " id
    assert main(["synth", "--handinfo", str(small), "--out", str(tmp_path / "Hands"),
                 "--size", "1600x1200"]) == 0
    names = sorted(p.name for p in (tmp_path / "Hands").iterdir())
    assert len(names) == 3
    imgs = load_images(tmp_path / "Hands", names, (224, 224), tmp_path / "cache")
    assert imgs.shape == (3, 3, 224, 224) and imgs.dtype == torch.uint8
    assert float(np.std(imgs.numpy())) > 5  # a real picture, not a blank


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert main(["run", "--profile", "demo", "--run-dir", str(tmp_path), "-p", "demo_tiny_vit.finetune.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lrr" in err and "Traceback" not in err
    assert main(["run", "--profile", "nope", "--run-dir", str(tmp_path)]) == 2
    assert "no profiles config named 'nope'" in capsys.readouterr().err


def test_the_short_command_is_what_help_and_every_suggestion_name(capsys):
    """`clipfh` (the entry point) in --help, and in every message and doc line that suggests a command."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from .conftest import REPO
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("usage: clipfh [-h]")
    script = Path(sys.executable).parent / "clipfh"  # installed by `make install` (pip install -e .)
    done = subprocess.run([str(script), "clean", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: clipfh clean"), done.stderr[-500:]
    long_form = re.compile(r"python3? -m clipfh_utils(?![.\w])")
    texts = [*REPO.glob("clipfh_utils/**/*.py"), *REPO.glob("*.md"), *REPO.glob("docs/*.md"),
             *REPO.glob("notebooks/*.ipynb"), REPO / "Makefile"]
    hits = [f"{f.relative_to(REPO)}:{i}" for f in texts for i, line in enumerate(f.read_text().splitlines(), 1)
            if long_form.search(line)]
    assert hits == ["clipfh_utils/cli.py:2"], hits  # only where the docstring names the long form
