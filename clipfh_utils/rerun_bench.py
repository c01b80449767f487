"""How long a re-run of an unchanged profile takes: `python -m clipfh_utils bench --rerun-demo`.

Runs `python -m clipfh_utils run --profile <profile>` twice into one output folder (a fresh
temporary one unless given) and reports both wall times; the second is the number that matters
(nothing trains, unchanged evaluations are read back). Wall time on a shared machine varies:
report the load with it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_reruns(profile: str = "demo", run_dir: str | None = None, times: int = 2) -> dict:
    """Wall seconds of `times` consecutive `run --profile` invocations into one output folder."""
    with tempfile.TemporaryDirectory(prefix="clipfh-rerun-") as tmp:
        out = Path(run_dir) if run_dir else Path(tmp) / profile
        seconds = []
        for i in range(times):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "clipfh_utils", "run", "--profile", profile,
                                   "--run-dir", str(out)], env=os.environ.copy())
            seconds.append(round(time.perf_counter() - t0, 1))
            if done.returncode:
                raise RuntimeError(f"run {i + 1} of profile {profile} failed (exit {done.returncode}); "
                                   f"its output folder: {out}")
        return {"profile": profile, "run_dir": str(out) if run_dir else "(temporary)", "seconds": seconds,
                "rerun_s": seconds[-1], "cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2)}
