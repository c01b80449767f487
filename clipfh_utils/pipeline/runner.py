"""Run the workbook's notebooks in order with papermill and render the HTML reports.

outputs/<profile>/
  index.html                              the newest invocation: reports, results, earlier runs
  runs/<experiment>-<hash>/               trained models and their metrics (see clipfh_utils.runs)
  invocations/<id>/
    manifest.json                         what this invocation ran and produced
    notebooks/<name>.ipynb                executed notebooks (<name>.failed.ipynb: partial, for inspection)
    run.log                               cell output, per-epoch progress with ETA, kernel log lines
    reports/<name>.html                   code hidden, figures embedded, nothing fetched online
    figures/<name>/<figure>.{pdf,svg,png} every figure of the notebook (clipfh_utils.workbook)
    tables/<name>/<table>.{csv,tex}       its summary tables
    index.html                            this invocation's index

The console shows one line per notebook and the report's path; the kernels talk to the runner
over local IPC sockets (no TCP port, no "running over TCP without encryption" warning), and the
whole story (papermill's cell output, per-epoch progress, the kernels' own log lines) goes to
invocations/<id>/run.log.

Every experiment config, dataset, weights file and run folder is checked before the first
notebook starts (pipeline.preflight), so a typo in a key, a missing image or an unfinished run
fails in seconds, not after an hour of training, and leaves the output folder untouched.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .. import runlog
from ..atomic import atomic_write_text
from ..config import REPO_ROOT, display_path, load_profile, resolve_config_path, to_dict
from ..provenance import environment
from ..report.export import NOTEBOOK_ENV
from ..report.index import write_index
from ..runs import (index_lock, invocation_dir, latest_invocation, new_invocation, output_dir, read_manifest,
                    update_manifest)
from .preflight import preflight

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# Large-allocation churn (feature maps freed and re-allocated every step) otherwise goes back to
# the kernel each time; on VMs where page faults are expensive that costs 10-50x on the CPU.
FAST_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "2000000000"}


class PipelineError(RuntimeError):
    """A notebook of the run failed; names the notebook, the cell and the partial output.

    `bad_input` is set when the notebook failed on bad input (a config, the data, a weights file,
    the state of a run folder) rather than in the code: the CLI exits 2 then, as for the same
    error found before the notebooks start.
    """

    def __init__(self, message: str, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input


def bad_input_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean "fix the input" (exit code 2), wherever they are raised."""
    from ..backbones.weights import WeightsMismatchError, WeightsNotFoundError
    from ..config import ConfigError
    from ..data.handinfo import HandInfoError
    from ..data.image_cache import ImageDecodeError, MissingImagesError
    from ..runs import RunStateError
    from ..training.checkpoint import CheckpointError
    return (ConfigError, HandInfoError, MissingImagesError, ImageDecodeError, FileNotFoundError,
            WeightsMismatchError, WeightsNotFoundError, RunStateError, CheckpointError)


def _keep_partial(tmp: Path, failed: Path) -> bool:
    """Keep a failed notebook's partial output for inspection, if it was written completely."""
    import nbformat
    if not tmp.exists():
        return False
    try:
        nbformat.read(tmp, as_version=4)
    except Exception:  # cut short (a full disk): invalid JSON helps nobody
        tmp.unlink()
        return False
    os.replace(tmp, failed)
    return True


def kernel_environment(out: Path) -> None:
    """Environment the notebook kernels inherit: this interpreter, figures inline, quiet bars.

    papermill asks for the kernel 'python3'; a 'python3' kernelspec elsewhere on the machine
    (a conda base, ~/.local) could start another Python without clipfh_utils. A spec of our own,
    first on JUPYTER_PATH, pins the kernel to the interpreter running this pipeline.
    """
    spec_dir = out / ".jupyter" / "kernels" / "python3"
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (clipfh)", "language": "python"}
    atomic_write_text(spec_dir / "kernel.json", json.dumps(spec, indent=1))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(out / ".jupyter"), *filter(None, [os.environ.get("JUPYTER_PATH")])])
    os.environ.pop("MPLBACKEND", None)  # Agg here would make figures vanish from reports
    os.environ.setdefault("TQDM_DISABLE", "1")
    for k, v in FAST_MALLOC_ENV.items():
        os.environ.setdefault(k, v)


TEMPLATES = Path(__file__).resolve().parents[1] / "report" / "templates"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class _NoAltTextNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Alternative text is missing" not in record.getMessage()


_NO_ALT_TEXT_NOTE = _NoAltTextNote()


def export_html(notebook: Path, target: Path) -> Path:
    """The report: code hidden, figures embedded, no script from the network (so it works
    offline), and no widget outputs or widget state (they cannot render in static HTML)."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            template_file="offline.html.j2", extra_template_paths=[str(TEMPLATES)])
    # nbconvert gives every figure a generic alt text and says so on the console, once per report
    exporter.log.addFilter(_NO_ALT_TEXT_NOTE)
    body, _ = exporter.from_notebook_node(nb)
    atomic_write_text(target, body)
    return target


def ipc_kernel_manager(folder: Path) -> type:
    """A kernel manager whose kernels listen on IPC sockets in `folder` instead of TCP ports, and
    whose process-level output (kernel log lines, e.g. the interrupt jupyter_client sends at every
    shutdown) goes to the file in the class attribute `log_file` instead of the console. Cell output is
    unaffected: it travels over the sockets into the notebook."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        log_file: Path | None = None

        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return str(folder / f"k{uuid.uuid4().hex[:8]}")

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
            if self.log_file is None:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "ab") as f:  # the child keeps its own copy of the descriptor
                return await super()._async_launch_kernel(kernel_cmd, **{**kw, "stdout": f, "stderr": f})

    return IPCKernelManager


def run_pipeline(profile: str = "demo", only: list[str] | None = None,
                 params: list[str] | None = None, run_dir: str | Path | None = None) -> Path:
    """Execute the profile's notebooks; returns the path of index.html.

    A full run starts a new invocation; `only` adds to the newest one (so `--only 04_comparison`
    compares what the last run produced).
    """
    params = list(params or [])
    prof = load_profile(profile, params)
    profile_path = resolve_config_path(profile, "profiles").resolve()
    out = output_dir(prof, run_dir).resolve()
    names = only or prof.notebooks
    unknown = [n for n in names if not (NOTEBOOK_DIR / f"{n}.ipynb").exists()]
    if unknown:
        have = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
        raise PipelineError(f"unknown notebook(s) {', '.join(unknown)}; available: {', '.join(have)}")
    # every config, dataset, weights file and run folder checked before anything is written
    preflight(prof, display_path(profile_path), out, run_states=not only)
    kernel_environment(out)
    inv = latest_invocation(out) if only else None
    if inv is None:
        inv = new_invocation(out, {"profile": prof.name, "profile_config": to_dict(prof),
                                   "overrides": params, "environment": environment()})
    print(f"[clipfh] profile {prof.name} · invocation {inv} · output {display_path(out)}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="clipfh-kernels-") as sockets:
            _run_notebooks(names, prof, profile_path, params, out, inv, Path(sockets))
    finally:
        os.environ.pop(NOTEBOOK_ENV, None)
    with index_lock(out):
        return write_index(out, inv)


def _run_notebooks(names: list[str], prof, profile_path: Path, params: list[str], out: Path, inv: str,
                   sockets: Path) -> None:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    inv_dir = invocation_dir(out, inv)
    status = read_manifest(out, inv).get("notebooks", {})
    log_path = inv_dir / "run.log"
    os.environ[runlog.ENV] = str(log_path)  # the kernels append their progress there
    cells = logging.getLogger("papermill")   # papermill's cell output, into the same file
    handler = logging.FileHandler(log_path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(runlog.FORMAT, "%Y-%m-%d %H:%M:%S"))
    cells.addHandler(handler)
    cells.setLevel(logging.INFO)
    cells.propagate = False
    print(f"[clipfh] follow the run: tail -f {display_path(log_path)}", flush=True)
    manager = ipc_kernel_manager(sockets)
    manager.log_file = log_path  # the kernel process's own lines (not cell output) go there too
    try:
        for i, name in enumerate(names, 1):
            src, dst = NOTEBOOK_DIR / f"{name}.ipynb", inv_dir / "notebooks" / f"{name}.ipynb"
            dst.parent.mkdir(parents=True, exist_ok=True)
            print(f"[clipfh] {i}/{len(names)} {name} ...", flush=True)
            os.environ[NOTEBOOK_ENV] = name  # the kernel inherits it: figures/<name>/, no widgets
            t0 = time.perf_counter()
            tmp, failed = dst.with_name(f".{name}.running.ipynb"), dst.with_name(f"{name}.failed.ipynb")
            try:
                pm.execute_notebook(str(src), str(tmp), kernel_name="python3", cwd=str(NOTEBOOK_DIR),
                                    progress_bar=False, log_output=True, kernel_manager_class=manager,
                                    parameters={"profile": str(profile_path), "run_dir": str(out),
                                                "overrides": params, "invocation": inv})
            except Exception as e:
                kept = _keep_partial(tmp, failed)
                bad_input = False
                if isinstance(e, PapermillExecutionError):
                    what = f"failed at cell {e.cell_index} ({e.ename}: {e.evalue})"
                    bad_input = e.ename in {c.__name__ for c in bad_input_errors()}
                elif type(e).__name__ == "DeadKernelError":
                    what = "lost its kernel (killed: most likely out of memory)"
                else:
                    what = f"failed ({type(e).__name__}: {e})"
                status[name] = {"ok": False, "seconds": time.perf_counter() - t0, "error": what}
                update_manifest(out, inv, notebooks=status)
                with index_lock(out):
                    write_index(out, inv)
                partial = f"partial executed notebook: {display_path(failed)}" if kept else "no partial notebook"
                raise PipelineError(f"notebook {name} {what}; {partial}", bad_input) from None
            os.replace(tmp, dst)
            failed.unlink(missing_ok=True)
            seconds = time.perf_counter() - t0
            report = export_html(dst, inv_dir / "reports" / f"{name}.html")
            status[name] = {"ok": True, "seconds": seconds}
            update_manifest(out, inv, notebooks=status)
            print(f"[clipfh]   done in {seconds:.1f} s: {display_path(report)}", flush=True)
    finally:
        cells.removeHandler(handler)
        handler.close()
        os.environ.pop(runlog.ENV, None)

