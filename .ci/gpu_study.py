"""Time the whole study on a GPU box, in process: `python .ci/gpu_study.py [--profile full_rendered]`.

Runs exactly what the notebooks compute (`run.run_stage(...)`: rendering and decoding, Stage 1,
Stage 2 and Stage 3 with every seed of the profile; then notebook 04's comparison tables with their
bootstrap intervals and notebook 05's maps and region table), without papermill and figures, and
prints one line per piece with its wall time, plus a JSON table at the end. `--deadline S` stops
before a stage that would start after S seconds (a lent GPU's command limit), saying so.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "33554432")
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "2000000000")

ap = argparse.ArgumentParser()
ap.add_argument("--profile", default="full_rendered")
ap.add_argument("--run-dir", default="/tmp/study")
ap.add_argument("--deadline", type=float, default=1e9)
ap.add_argument("--stages", default="stage1,stage2,stage3,comparison,attention")
ap.add_argument("-p", "--param", action="append", default=[])
a = ap.parse_args()

t_start = time.perf_counter()
rows = []


def piece(name, fn):
    t0 = time.perf_counter()
    out = fn()
    rows.append({"piece": name, "seconds": round(time.perf_counter() - t0, 1)})
    print(f"[study] {name}: {rows[-1]['seconds']} s", flush=True)
    return out


import torch  # noqa: E402
from clipfh_utils.pipeline import open_run  # noqa: E402

run = piece("open run + render images", lambda: open_run(a.profile, a.run_dir, a.param))
ds = run.dataset
proto = ds.protocol()
piece("decode train images (224)", lambda: run.train_data(ds, (224, 224)))
piece("decode eval images (224)", lambda: run.images(ds, proto.eval_rows(), (224, 224)))


def comparison():
    from clipfh_utils.report import results
    metrics = results.invocation_metrics(run.run_dir, run.invocation)
    return {p: (results.comparison_table(metrics, p), results.paired_table(metrics, p)) for p in results.PROTOCOL_LABELS}


def attention():
    from clipfh_utils import explain, workbook as wb
    from clipfh_utils.report import results
    metrics = results.invocation_metrics(run.run_dir, run.invocation)
    source = explain.MapSource.for_split(wb.map_entries(run, metrics, split=0), run.protocol(), split=0)
    labels = explain.dataset_regions(run.dataset, source.queries, source.query_images())
    return source.region_table(labels)


REPORTS = {"comparison": ("comparison tables, bootstrap, paired differences (notebook 04)", comparison),
           "attention": ("every map of split 0 and the region table (notebook 05)", attention)}
for stage in a.stages.split(","):
    if stage in REPORTS:
        if time.perf_counter() - t_start > a.deadline:
            rows.append({"piece": stage, "seconds": None, "note": "not run (deadline)"})
            continue
        piece(REPORTS[stage][0], REPORTS[stage][1])
        continue
    for exp in run.experiments(stage):
        elapsed = time.perf_counter() - t_start
        if elapsed > a.deadline:
            print(f"[study] deadline: {exp.name} not started ({elapsed:.0f} s elapsed)", flush=True)
            rows.append({"piece": f"{stage} {exp.name}", "seconds": None, "note": "not run (deadline)"})
            continue
        res = piece(f"{stage} {exp.name} ({len(exp.cfg.seeds)} seed(s))", lambda: run.run_experiment(exp, progress=False))
        summary = res.per_split[res.per_split.protocol == "clipfh"].groupby("mode")["mAP"].mean().round(2).to_dict()
        print(f"[study]   mAP (clipfh, random weights, synthetic) {summary}", flush=True)
rows.append({"piece": "total", "seconds": round(time.perf_counter() - t_start, 1)})
print(json.dumps({"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                  "torch": torch.__version__, "profile": a.profile, "params": a.param, "rows": rows}, indent=1))
sys.exit(0)
