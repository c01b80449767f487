"""The one import of every notebook: open the run, show what produced its numbers.

    from clipfh_utils import workbook as wb
    run = wb.start(profile, run_dir, overrides, invocation)

`start` sets figures inline, opens the run context and displays the banner that says which data
and weights produced the numbers (and when they mean nothing for hands).
"""
from __future__ import annotations

from pathlib import Path

from .pipeline.context import Run, open_run


def start(profile: str | Path = "demo", run_dir: str | Path = "", overrides: list[str] | None = None,
          invocation: str = "") -> Run:
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
        ip = get_ipython()
    except ImportError:  # plain Python: no display
        ip = None
    if ip is not None:
        ip.run_line_magic("matplotlib", "inline")
    run = open_run(profile, run_dir, overrides, invocation)
    if ip is not None:
        display(Markdown(run.banner()))
    return run
