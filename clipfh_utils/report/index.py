"""index.html: one invocation's reports, results, the runs it did not use, and what produced them.

Written into the invocation's folder and, for the newest invocation, at outputs/<profile>/index.html.
"""
from __future__ import annotations

import html
from pathlib import Path

from ..atomic import atomic_write_text
from ..provenance import short_environment
from ..runs import folder_size, invocation_dir, latest_invocation, read_manifest, run_dir
from .display import SCROLL_STYLE
from .export import FIGURES, TABLES, exported
from .results import PROTOCOL_LABELS, comparison_table, display_table, earlier_runs, invocation_metrics, table_note
from .verification import OPENSET_NOTE, VERIFICATION_NOTE, openset_table, reading, shown, verification_table

_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1300px} table{border-collapse:collapse}"
          " td,th{padding:3px 8px;border:1px solid #bbb;white-space:nowrap} .warn{background:#fff3cd;"
          "padding:8px;border:1px solid #e0c36c} .clipfh-table{margin-bottom:1em}")
# the index's summary of a comparison; the spreads, n and timings are in the comparison report
SUMMARY = ["model", "stage", "mAP (%)", "Rank-1 (%)", "run", "size (MB)", "weights"]
FULL_REPORT = "04_comparison"


def _table(df, cols) -> str:
    """An escaped table in its own sideways-scrolling box (never wider than the page)."""
    cols = [c for c in cols if c in df.columns]
    return f'<div class="clipfh-table" style="{SCROLL_STYLE}">' + df[cols].to_html(
        index=False, escape=True, na_rep="—") + "</div>"


def _exports(out: Path, inv: str, base: str) -> str:
    """Links to every exported figure (PDF, SVG, PNG) and table (CSV, LaTeX), per notebook."""
    found = exported(out, inv)
    if not any(found.values()):
        return ""
    parts = ["<h2>Figures and tables to take away</h2><p>PNG at 300 dpi, PDF and SVG for print; "
             "tables as CSV (full numbers) and LaTeX (booktabs). Each file names the commit and runs "
             "that produced it.</p>"]
    for kind, title in ((FIGURES, "Figures"), (TABLES, "Tables")):
        rows = []
        for notebook, files in found[kind].items():
            stems: dict[str, list[Path]] = {}
            for f in files:
                stems.setdefault(f.stem, []).append(f)
            for stem, fs in stems.items():
                links = " ".join(f'<a href="{base}{kind}/{html.escape(notebook)}/{html.escape(f.name)}">'
                                 f"{f.suffix[1:]}</a>" for f in sorted(fs, key=lambda f: f.suffix))
                rows.append(f"<tr><td>{html.escape(notebook)}</td><td>{html.escape(stem)}</td><td>{links}</td></tr>")
        if rows:
            parts.append(f"<h3>{title}</h3><table><tr><th>notebook</th><th>name</th><th>files</th></tr>"
                         + "".join(rows) + "</table>")
    return "\n".join(parts)


def verification_sections(metrics: list[dict]) -> list[str]:
    """Verification and open-set tables per protocol, with the reading of notebook 04."""
    parts = []
    for proto, label in PROTOCOL_LABELS.items():
        vt = verification_table(metrics, proto)
        if vt.empty:
            continue
        part = (f"<h2>Verification (1:1) — {html.escape(label)}</h2>" + _table(shown(vt), list(shown(vt).columns))
                + f"<p><small>{html.escape(VERIFICATION_NOTE)}</small></p>"
                + f"<p>{html.escape(reading(vt, label).replace('**', ''))}</p>")
        ot = openset_table(metrics, proto)
        if not ot.empty:
            part += (f"<h3>Open-set identification (1:N) — {html.escape(label)}</h3>"
                     + _table(shown(ot), list(shown(ot).columns)) + f"<p><small>{html.escape(OPENSET_NOTE)}</small></p>")
        parts.append(part)
    return parts


def render_index(out: Path, inv: str, base: str = "") -> str:
    """The index page, its links relative to `base` (the invocation folder as seen from the page)."""
    return render_indexes(out, inv, [base])[0]


def render_indexes(out: Path, inv: str, bases: list[str]) -> list[str]:
    """The index page once per link base; the tables (bootstrap intervals), folder sizes and
    earlier runs are computed once for all of them."""
    manifest = read_manifest(out, inv)
    metrics = invocation_metrics(out, inv)
    synthetic = any(not m.get("real_data", False) for m in metrics) or manifest.get("real_data") is False
    random_w = sorted({m["backbone"] for m in metrics if not m.get("pretrained", True)})
    env = manifest.get("environment", {})
    head = [f"<h1>CLIP-FH run: <code>{html.escape(manifest.get('profile', '?'))}</code></h1>",
            f"<p>Invocation <code>{html.escape(inv)}</code>, started {html.escape(manifest.get('started', '?'))}"
            f"{' · overrides: <code>' + html.escape(' '.join(manifest['overrides'])) + '</code>' if manifest.get('overrides') else ''}"
            f"<br><small>{html.escape(short_environment(env))}</small></p>"]
    if synthetic or random_w:
        head.append('<p class="warn"><b>Not a hand-identification result.</b> '
                    + ("The images are synthetic. " if synthetic else "")
                    + (f"Random (not pretrained) weights: {html.escape(', '.join(random_w))}. " if random_w else "")
                    + "These numbers only show that the pipeline runs end to end.</p>")
    data = manifest.get("data") or []
    head.append(f"<p><b>Data:</b> {html.escape('; '.join(data) if isinstance(data, list) else str(data))}<br>"
                f"<b>Device:</b> {html.escape(str(manifest.get('device', '?')))}</p>")
    results = []
    full = manifest.get("notebooks", {}).get(FULL_REPORT, {}).get("ok")
    for proto, label in PROTOCOL_LABELS.items():
        table = comparison_table(metrics, proto)
        if not table.empty:
            view = display_table(table)
            view["run"] = table["run"]
            view["size (MB)"] = [round(folder_size(run_dir(out, r)) / 2**20, 1) for r in table["run"]]
            view["weights"] = table["weights"]
            results.append((label, view, table))
    verification = verification_sections(metrics)
    earlier = earlier_runs(out, inv)
    tail = [] if earlier.empty else ["<h2>Earlier runs in this folder (not part of this invocation)</h2>"
                                     + _table(earlier, list(earlier.columns))]
    pages = []
    for base in bases:
        rows = []
        for name, st in manifest.get("notebooks", {}).items():
            link = (f'<a href="{base}reports/{name}.html">{name}</a>' if st["ok"] else
                    f'{name} (<a href="{base}notebooks/{name}.failed.ipynb">partial notebook</a>)')
            state = "ok" if st["ok"] else "FAILED: " + html.escape(st["error"])
            rows.append(f"<tr><td>{link}</td><td>{state}</td><td>{st['seconds']:.1f} s</td></tr>")
        reports = ("<h2>Reports</h2><table><tr><th>notebook</th><th>status</th><th>duration</th></tr>"
                   + "".join(rows) + "</table>")
        summary = []
        for i, (label, view, table) in enumerate(results):  # the full tables with spreads: the comparison report
            where = (f'All columns (sds, n, timings) and paired differences: <a href="{base}reports/{FULL_REPORT}.html">'
                     f"{FULL_REPORT}</a>. " if full else "")
            note = html.escape(table_note(table)) if i == 0 else "Columns as under the first results table."
            summary.append(f"<h2>Results — {html.escape(label)}</h2>" + _table(view, SUMMARY)
                           + f"<p><small>{where}{note}</small></p>")
        parts = [*head, reports, *summary, *verification, _exports(out, inv, base), *tail]
        pages.append("<!doctype html><html><head><meta charset='utf-8'><title>CLIP-FH "
                     f"{html.escape(manifest.get('profile', ''))}</title><style>{_STYLE}</style></head><body>"
                     + "\n".join(parts) + "</body></html>\n")
    return pages


def write_index(out: str | Path, inv: str) -> Path:
    out = Path(out)
    newest = latest_invocation(out) == inv
    pages = render_indexes(out, inv, ["", f"invocations/{inv}/"] if newest else [""])
    atomic_write_text(invocation_dir(out, inv) / "index.html", pages[0])
    if newest:
        atomic_write_text(out / "index.html", pages[1])
        return out / "index.html"
    return invocation_dir(out, inv) / "index.html"
