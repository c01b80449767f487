"""Command line: `python -m clipfh_utils {run,bench,splits,synth}`.

Errors print one line (what, where, how to fix) and exit 2 for bad input, 1 for a failed run;
`--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m clipfh_utils", description=__doc__)
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the notebooks of a profile with papermill, render HTML")
    r.add_argument("--profile", default="demo", help="demo | full | path/to/profile.yaml")
    r.add_argument("--only", action="append", help="run only this notebook (repeatable); adds to the "
                                                   "newest invocation")
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile key (protocol.n_splits=3), one experiment's key "
                        "(demo_tiny_vit.finetune.lr=1e-3) or every experiment's ('*.seeds=[0]')")
    r.add_argument("--run-dir", default=None, help="output folder (default outputs/<profile>)")
    r.add_argument("--resume", action="store_true",
                   help="continue unfinished runs from their last checkpoints (= -p resume=true)")
    r.add_argument("--retrain", action="store_true",
                   help="train again even where a finished run exists: new runs, new hashes")

    b = sub.add_parser("bench", help="training / embedding throughput on this device")
    b.add_argument("--stage", type=int, default=2, choices=[1, 2, 3],
                   help="1: embedding; 2: CLIP-ReID training; 3: PromptSG training + both inference modes")
    b.add_argument("--backbone", default="ViT-B-16")
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--steps", type=int, default=30)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--image-size", type=int, default=224)
    b.add_argument("--device", default="auto")
    b.add_argument("--no-amp", action="store_true", help="fp32 instead of bf16 autocast")
    b.add_argument("--compile", action="store_true", help="torch.compile forward + losses")
    b.add_argument("--compile-mode", default="default",
                   help="torch.compile mode (default, reduce-overhead, max-autotune-no-cudagraphs)")
    b.add_argument("--last-stride", type=int, default=2, choices=[1, 2], help="ResNet layer4 stride")
    b.add_argument("--infer-batch", type=int, default=256, help="stage 3: batch of the inference modes")

    s = sub.add_parser("splits", help="write the split lists of all four aspects for a profile")
    s.add_argument("--profile", default="full")
    s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")

    g = sub.add_parser("synth", help="render synthetic hands for the rows of a HandInfo.csv")
    g.add_argument("--handinfo", default="data/11k/HandInfo.csv")
    g.add_argument("--out", required=True, help="image folder to write")
    g.add_argument("--size", default="1600x1200", help="WIDTHxHEIGHT")
    g.add_argument("--limit", type=int, default=None)
    return ap


def _run(a: argparse.Namespace) -> int:
    if a.cmd == "run":
        from .pipeline.runner import run_pipeline
        params = a.param + (["resume=true"] if a.resume else []) + (["retrain=true"] if a.retrain else [])
        index = run_pipeline(a.profile, a.only, params, a.run_dir)
        print(f"report: {index}")
    elif a.cmd == "bench":
        from .bench import bench
        res = bench(a.stage, a.backbone, a.batch, a.steps, a.warmup, a.image_size, a.device,
                    not a.no_amp, a.compile, compile_mode=a.compile_mode, last_stride=a.last_stride,
                    infer_batch=a.infer_batch)
        print(json.dumps(res, indent=2))
        what = "embedding" if a.stage == 1 else "training"
        comp = f", compiled ({a.compile_mode})" if a.compile else ", eager"
        prec = "bf16 autocast" if res["amp_bf16"] else "fp32"
        lines = [(what, res, a.batch)] + [(f"inference [{mode}]", r, a.infer_batch)
                                          for mode, r in res.get("inference", {}).items()]
        for label, r, batch in lines:
            mem = f", peak memory {r['peak_mem_gib']:.2f} GiB" if r["peak_mem_gib"] else ""
            ips = r["images_per_s"]
            rate = f"{ips:.0f}" if ips >= 10 else f"{ips:.2f}"  # a big model on a CPU: below 1 img/s
            print(f"{res['backbone']} stage {a.stage} {label}: {rate} img/s on "
                  f"{res['device_name']} (batch {batch}, {a.image_size}px, {prec}{comp}{mem})")
    elif a.cmd == "splits":
        from .config import load_profile
        from .data.datasets import prepare_dataset, write_all_splits
        prof = load_profile(a.profile, a.param)
        for ref in prof.datasets:
            ds = prepare_dataset(prof.data, ref, prof.protocol)
            for aspect, proto in write_all_splits(ds, prof.protocol.seed, prof.protocol.n_splits).items():
                print(aspect, proto.summary())
            print(f"split lists written under {ds.splits_root}")
    elif a.cmd == "synth":
        from .data.synthetic import render_images_for_handinfo
        w, h = (int(v) for v in a.size.lower().split("x"))
        n = render_images_for_handinfo(a.handinfo, a.out, size=(w, h), limit=a.limit)
        print(f"{n} images written to {a.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    from .config import ConfigError
    from .data.handinfo import HandInfoError
    from .data.image_cache import ImageDecodeError, MissingImagesError
    bad_input = (ConfigError, HandInfoError, MissingImagesError, ImageDecodeError, FileNotFoundError)
    try:
        return _run(a)
    except Exception as e:
        if a.debug:
            raise
        from .pipeline.runner import PipelineError
        from .backbones.loading import WeightsMismatchError
        if isinstance(e, PipelineError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        if isinstance(e, bad_input + (WeightsMismatchError,)):
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1
