"""Command line: `clipfh {run,sweep,clean,bench,splits,synth}` (the installed entry point;
`python -m clipfh_utils` runs the same without it).

Errors print one line (what, where, how to fix) and exit 2 for bad input (a config, the data, a
weights file, the state of a run folder), 1 for a failed run (a notebook, a lock held by another
process, a full disk), 130 when interrupted; `--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="clipfh", description=__doc__)
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
                   help="continue unfinished runs (same configuration) from their last checkpoints")
    r.add_argument("--resume-from", action="append", default=[], metavar="RUN",
                   help="continue RUN's checkpoints with the settings as given now (e.g. a lower lr), "
                        "as a new run (repeatable: one run per experiment)")
    r.add_argument("--retrain", action="store_true",
                   help="train again even where a finished run exists: new runs, new hashes")

    w = sub.add_parser("sweep", help="a grid of overrides as named runs, in parallel or on Slurm")
    w.add_argument("file", nargs="?", help="a sweep YAML (profile, overrides, grid) instead of --grid")
    w.add_argument("--profile", default=None, help="profile (default: the sweep file's, else demo)")
    w.add_argument("--grid", action="append", default=[], metavar="KEY=[V1, V2]",
                   help="a swept key in the -p form with a list of values (repeatable: the grid is their product)")
    w.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a fixed override for every variant")
    w.add_argument("--experiments", nargs="+", default=None,
                   help="experiments to run per variant (default: those the grid keys change)")
    w.add_argument("--run-dir", default=None)
    w.add_argument("--executor", default="processes", choices=["processes", "local", "slurm"])
    w.add_argument("--workers", type=int, default=None, help="CPU worker processes (no GPU)")
    w.add_argument("--gpus", default=None, help="GPU ids for the workers, e.g. 0,1 (default: all visible)")
    w.add_argument("--partition", default=None, help="Slurm partition")
    w.add_argument("--gpus-per-job", type=int, default=1)
    w.add_argument("--time", type=int, default=240, help="minutes per job (submitit executors)")
    w.add_argument("--resume", action="store_true", help="continue unfinished runs from their checkpoints")
    w.add_argument("--dry-run", action="store_true", help="list the jobs and which are finished; run none")
    c = sub.add_parser("clean", help="list what can be removed from an output folder; --remove removes it")
    c.add_argument("--profile", default="demo")
    c.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--run-dir", default=None, help="output folder (default outputs/<profile>)")
    c.add_argument("--remove", action="store_true", help="remove what is listed")

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
    b.add_argument("--seeds", type=int, default=1,
                   help="time the first steps of N-1 further fresh models (no recompilation expected)")
    b.add_argument("--compile-opt", action="store_true", help="also compile the optimiser step")
    b.add_argument("--channels-last", action="store_true", help="ResNet in NHWC layout (CUDA)")
    b.add_argument("--infer-batch", type=int, default=256, help="stage 3: batch of the inference modes")
    b.add_argument("--rerun-demo", action="store_true",
                   help="instead: time `run --profile demo` twice into one folder, report the re-run")
    b.add_argument("--run-dir", default=None, help="with --rerun-demo: that folder (default: a temporary one)")
    b.add_argument("--verification", action="store_true",
                   help="instead: verification, open-set and re-ranking on the full 11k protocol sizes "
                        "(random features, CPU)")
    b.add_argument("--n-boot", type=int, default=1000, help="--verification: EER bootstrap resamples")

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
        if a.resume_from:
            params.append(f"resume_from={json.dumps(a.resume_from)}")
        index = run_pipeline(a.profile, a.only, params, a.run_dir)
        print(f"report: {index}")
    elif a.cmd == "sweep":
        from .pipeline.sweep import load_sweep_file, parse_grid, run_sweep
        profile, params, grid = (load_sweep_file(a.file) if a.file else (None, [], {}))
        grid.update(parse_grid(a.grid))
        params = params + a.param + (["resume=true"] if a.resume else [])
        folder, jobs = run_sweep(a.profile or profile or "demo", grid, params, a.run_dir, a.experiments,
                                 a.executor, a.workers, a.gpus.split(",") if a.gpus else None, a.partition,
                                 a.gpus_per_job, a.time, a.dry_run)
        failed = [j for j in jobs if j.status == "failed"]
        print(f"sweep: {folder}" + (f" ({len(failed)} job(s) failed)" if failed else "")
              + (" (dry run: nothing written)" if a.dry_run else ""))
        return 1 if failed else 0
    elif a.cmd == "clean":
        _clean(a)
    elif a.cmd == "bench" and a.rerun_demo:
        from .bench import time_reruns
        res = time_reruns("demo", a.run_dir)
        print(json.dumps(res, indent=2))
        print(f"demo re-run: {res['rerun_s']:.1f} s (first run {res['seconds'][0]:.1f} s; "
              f"{res['cpus']} CPUs, load {res['load_avg_1min']})")
    elif a.cmd == "bench" and a.verification:
        from .config import repo_path
        from .pipeline.evaluation_bench import bench_verification, describe
        res = bench_verification(repo_path("data/11k/HandInfo.csv"), n_boot=a.n_boot)
        print(json.dumps(res, indent=2))
        print(describe(res))
    elif a.cmd == "bench":
        from .bench import bench
        res = bench(a.stage, a.backbone, a.batch, a.steps, a.warmup, a.image_size, a.device,
                    not a.no_amp, a.compile, compile_mode=a.compile_mode, last_stride=a.last_stride,
                    seeds=a.seeds, compile_optimizer=a.compile_opt, channels_last=a.channels_last,
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
        for x in res["later_seeds"]:
            print(f"{res['backbone']} stage {a.stage} {what}, seed {x['seed']} (fresh model, no warm-up): "
                  f"{x['first_steps_img_s']:.0f} img/s over its first {a.steps} steps")
    elif a.cmd == "splits":
        from .config import load_profile
        from .data.datasets import write_all_splits
        from .data.prepare import prepare_dataset
        prof = load_profile(a.profile, a.param)
        for ref in prof.datasets:
            ds = prepare_dataset(prof.data, ref, prof.protocol)
            for aspect, proto in write_all_splits(ds, prof.protocol.seed, prof.protocol.n_splits).items():
                print(aspect, proto.summary())
            print(f"split lists written under {ds.splits_root}")
    elif a.cmd == "synth":
        from .data.synthetic import render_images_for_handinfo
        try:
            w, h = (int(v) for v in a.size.lower().split("x"))
        except ValueError:
            from .config import ConfigError
            raise ConfigError(f"--size {a.size}: expected WIDTHxHEIGHT in pixels, e.g. 1600x1200") from None
        n = render_images_for_handinfo(a.handinfo, a.out, size=(w, h), limit=a.limit)
        print(f"{n} images written to {a.out}")
    return 0


def _clean(a: argparse.Namespace) -> None:
    from .config import load_profile, repo_path
    from .runs import output_dir
    from .console import size_text
    from .pipeline.clean import removable, remove
    prof = load_profile(a.profile, a.param)
    out = output_dir(prof, a.run_dir)
    items, kept = removable(out, repo_path(prof.data.cache_dir))
    for item in items:
        print(f"{size_text(item.size):>10}  {item.kind}: {item.path}")
    for line in kept:
        print(f"{'kept':>10}  {line}")
    total = size_text(sum(i.size for i in items))
    if not items:
        print(f"nothing to remove in {out}")
    elif a.remove:
        print(f"removed {len(items)} item(s), {size_text(remove(items))} freed")
    else:
        command = " ".join(["clipfh clean --remove", *(["--profile", a.profile] if a.profile != "demo" else []),
                            *(["--run-dir", a.run_dir] if a.run_dir else []), *(x for p in a.param for x in ("-p", p))])
        print(f"{len(items)} item(s), {total}: remove them with `{command}`")


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        return _run(a)
    except KeyboardInterrupt:
        print("interrupted: finished seeds and the last checkpoint of each unfinished one are kept; "
              "continue with --resume", file=sys.stderr)
        return 130
    except Exception as e:
        if a.debug:
            raise
        from .pipeline.runner import PipelineError, bad_input_errors
        if isinstance(e, PipelineError):
            print(f"error: {e}", file=sys.stderr)
            return 2 if e.bad_input else 1
        from .atomic import DiskFullError
        from .locks import LockedError
        if isinstance(e, bad_input_errors()):
            print(f"error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, (LockedError, DiskFullError)):
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1
