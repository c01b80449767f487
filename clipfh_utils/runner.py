"""Run the workbook's notebooks in order with papermill and render the HTML reports.

outputs/<profile>/
  notebooks/<name>.ipynb   executed notebooks (a failed one is kept, partial, for inspection)
  reports/<name>.html      code hidden, figures embedded
  metrics/*.json|csv       written by the notebooks through clipfh_utils.results
  index.html               links, summary table, data and weights used, durations
"""
from __future__ import annotations

import html
import json
import os
import sys
import time
from pathlib import Path


from .atomic import atomic_write_text
from .config import REPO_ROOT, load_profile, parse_overrides, repo_path, resolve_config_path
from .results import PROTOCOL_LABELS, comparison_table, load_metrics

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# Large-allocation churn (feature maps freed and re-allocated every step) otherwise goes back to
# the kernel each time; on VMs where page faults are expensive that costs 10-50x on the CPU.
FAST_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "2000000000"}


class PipelineError(RuntimeError):
    """A notebook of the run failed; names the notebook, the cell and the partial output."""


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


def export_html(notebook: Path, target: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(notebook, as_version=4)
    body, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(nb)
    atomic_write_text(target, body)
    return target


def run_pipeline(profile: str = "demo", only: list[str] | None = None,
                 params: list[str] | None = None, run_dir: str | Path | None = None) -> Path:
    """Execute the profile's notebooks; returns the path of index.html."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    prof = load_profile(profile, params)
    profile_path = resolve_config_path(profile, "profiles").resolve()
    out = Path(run_dir) if run_dir else repo_path(prof.output_dir or f"outputs/{prof.name}")
    out = out.resolve()
    names = only or prof.notebooks
    unknown = [n for n in names if not (NOTEBOOK_DIR / f"{n}.ipynb").exists()]
    if unknown:
        have = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
        raise PipelineError(f"unknown notebook(s) {', '.join(unknown)}; available: {', '.join(have)}")
    kernel_environment(out)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    status_path = out / "notebook_status.json"
    status = json.loads(status_path.read_text()) if status_path.exists() and only else {}
    overrides = {k: v for k, v in _flatten(parse_overrides(params)).items()}
    for name in names:
        src, dst = NOTEBOOK_DIR / f"{name}.ipynb", out / "notebooks" / f"{name}.ipynb"
        print(f"[clipfh] running {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(src), str(dst), kernel_name="python3", cwd=str(NOTEBOOK_DIR),
                                progress_bar=False,
                                parameters={"profile": str(profile_path), "run_dir": str(out),
                                            "overrides": overrides})
        except PapermillExecutionError as e:
            status[name] = {"ok": False, "seconds": time.perf_counter() - t0,
                            "error": f"cell {e.cell_index}: {e.ename}: {e.evalue}"}
            atomic_write_text(status_path, json.dumps(status, indent=2))
            write_index(out, prof.name, status)
            raise PipelineError(f"notebook {name} failed at cell {e.cell_index} ({e.ename}: "
                                f"{e.evalue}); partial executed notebook: {dst}") from None
        seconds = time.perf_counter() - t0
        export_html(dst, out / "reports" / f"{name}.html")
        status[name] = {"ok": True, "seconds": seconds}
        atomic_write_text(status_path, json.dumps(status, indent=2))
        print(f"[clipfh]   done in {seconds:.1f} s", flush=True)
    return write_index(out, prof.name, status)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def write_index(out: Path, profile_name: str, status: dict) -> Path:
    """index.html: the reports, what data and weights produced the numbers, and the durations."""
    info = json.loads((out / "run_info.json").read_text()) if (out / "run_info.json").exists() else {}
    metrics = load_metrics(out)
    synthetic = info.get("real_data") is False
    random_w = sorted({f"{m['model']} ({m['stage']})" for m in metrics if not m.get("pretrained", True)})
    parts = [f"<h1>CLIP-FH run: <code>{html.escape(profile_name)}</code></h1>"]
    if synthetic or random_w:
        parts.append('<p style="background:#fff3cd;padding:8px;border:1px solid #e0c36c">'
                     "<b>Not a hand-identification result.</b> "
                     + ("The images are synthetic. " if synthetic else "")
                     + (f"Random (not pretrained) weights: {html.escape(', '.join(random_w))}. "
                        if random_w else "")
                     + "These numbers only show that the pipeline runs end to end.</p>")
    parts.append(f"<p><b>Data:</b> {html.escape(str(info.get('data', '?')))}<br>"
                 f"<b>Device:</b> {html.escape(str(info.get('device', '?')))} · "
                 f"<b>torch</b> {html.escape(str(info.get('torch', '?')))}</p>")
    rows = []
    for name, st in status.items():
        link = f'<a href="reports/{name}.html">{name}</a>' if st["ok"] else \
            f'{name} (<a href="notebooks/{name}.ipynb">partial notebook</a>)'
        rows.append(f"<tr><td>{link}</td><td>{'ok' if st['ok'] else 'FAILED: ' + html.escape(st['error'])}"
                    f"</td><td>{st['seconds']:.1f} s</td></tr>")
    parts.append("<h2>Reports</h2><table border=1 cellpadding=4><tr><th>notebook</th><th>status</th>"
                 "<th>duration</th></tr>" + "".join(rows) + "</table>")
    for proto in ("clipfh", "mbanet"):
        label = PROTOCOL_LABELS[proto]
        table = comparison_table(out, proto)
        if not table.empty:
            cols = ["stage", "model", "rank1", "rank5", "rank10", "mAP", "n", "weights", "data"]
            parts.append(f"<h2>Summary — {label} (mean ± sd over splits and seeds)</h2>"
                         + table[cols].to_html(index=False, escape=True))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>CLIP-FH "
            f"{html.escape(profile_name)}</title><style>body{{font-family:sans-serif;margin:2em;"
            "max-width:1200px} table{border-collapse:collapse}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    atomic_write_text(out / "index.html", page)
    return out / "index.html"
