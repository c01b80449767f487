"""Figures and tables to take away: every figure as PDF, SVG and a 300-dpi PNG, every summary
table as CSV and LaTeX (booktabs), each stamped with what produced it (commit, invocation, runs).

They go into the invocation's folder, so a later invocation never overwrites an earlier one's:

    invocations/<id>/figures/<notebook>/<name>.{pdf,svg,png}
    invocations/<id>/tables/<notebook>/<name>.{csv,tex}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.transforms import ScaledTranslation

from ..atomic import atomic_path, atomic_write_text
from ..provenance import environment
from ..runs import invocation_dir, read_manifest
from .latex import latex_escape, latex_parts, latex_table  # noqa: F401  (latex_escape: re-exported)

FIGURE_FORMATS: tuple[str, ...] = ("pdf", "svg", "png")
PNG_DPI = 300
FIGURES, TABLES = "figures", "tables"
# The notebook the pipeline runner is executing (set in the kernel's environment): where its
# figures and tables go, and that it runs in batch (no widgets)
NOTEBOOK_ENV = "CLIPFH_NOTEBOOK"


@dataclass
class Provenance:
    """What produced an exported file; written into its metadata (figures) or header (tables)."""
    commit: str
    dirty: bool
    invocation: str
    notebook: str
    runs: list[str] = field(default_factory=list)
    data: str = ""
    mark: str = ""     # display.mark(): shown inside every figure and table caption when not ""

    @classmethod
    def of_invocation(cls, out: Path, invocation: str, notebook: str, mark: str = "") -> "Provenance":
        """The commit running now, and the runs the invocation has recorded so far."""
        env = environment()
        manifest = read_manifest(out, invocation)
        runs = sorted({e["run"] for e in manifest.get("entries", {}).values()})
        data = "; ".join(manifest.get("data") or [])
        return cls(env.get("git_commit") or "unknown", bool(env.get("git_dirty")), invocation, notebook,
                   runs, data, mark)

    def line(self) -> str:
        commit = self.commit[:12] + ("+dirty" if self.dirty else "")
        runs = ", ".join(self.runs) if self.runs else "none"
        return (f"CLIP-FH commit {commit} · invocation {self.invocation} · notebook {self.notebook} · "
                f"runs: {runs}" + (f" · data: {self.data}" if self.data else ""))


def _metadata(fmt: str, name: str, prov: Provenance) -> dict:
    if fmt == "png":  # free-form text chunks
        return {"Title": name, "Software": "clipfh_utils", "Description": prov.line(),
                "Commit": prov.commit + ("+dirty" if prov.dirty else ""), "Invocation": prov.invocation,
                "Runs": " ".join(prov.runs), "Data": prov.data}
    if fmt == "pdf":  # the PDF info dictionary's keys only
        return {"Title": name, "Subject": prov.line(), "Keywords": " ".join([prov.commit, *prov.runs]),
                "Creator": "clipfh_utils"}
    return {"Title": name, "Description": prov.line(), "Keywords": [prov.commit, *prov.runs],
            "Creator": "clipfh_utils", "Date": None}


FOOTER_GID = "clipfh-mark"


def save_figure(fig, folder: str | Path, name: str, prov: Provenance) -> list[Path]:
    """Write `fig` as <folder>/<name>.{pdf,svg,png} (PNG at 300 dpi), atomically; with
    `prov.mark`, a small footer line below everything else says so inside the image."""
    footer = None
    if prov.mark and not any(t.get_gid() == FOOTER_GID for t in fig.texts):
        below = fig.transFigure + ScaledTranslation(0, -3 / 72, fig.dpi_scale_trans)  # 3 pt under y = 0
        footer = fig.text(0.0, 0.0, prov.mark, ha="left", va="top", fontsize=6, color="#A04000",
                          gid=FOOTER_GID, transform=below)  # the tight bounding box takes it in, under all else
    paths = []
    try:
        for fmt in FIGURE_FORMATS:
            path = Path(folder) / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.05,
                            metadata=_metadata(fmt, name, prov))
            paths.append(path)
    finally:
        if footer is not None:  # the figure on screen stays as drawn (the report has the banner)
            footer.remove()
    return paths


def save_table(df: pd.DataFrame, folder: str | Path, name: str, prov: Provenance, caption: str = "",
               note: str = "", data: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """<folder>/<name>.csv (`data` if given: the full numbers behind the shown table, plus
    `commit` and `invocation` columns) and <folder>/<name>.tex (the shown table `df`)."""
    folder = Path(folder)
    csv, tex = folder / f"{name}.csv", folder / f"{name}.tex"
    full = (df if data is None else data).assign(
        commit=prov.commit + ("+dirty" if prov.dirty else ""), invocation=prov.invocation)
    with atomic_path(csv) as tmp:
        full.to_csv(tmp, index=False)
    caption = caption + (f" ({prov.mark})" if prov.mark else "")
    parts = latex_parts(df)
    for suffix, part in parts:  # wide tables: a main table, then spread columns, each fitting A4
        what = {"": "", "_spread": " (spread and cost)"}.get(suffix.rstrip("_0123456789"), "")
        n = f" (part {suffix.rsplit('_', 1)[-1]})" if suffix[-1:].isdigit() else ""
        atomic_write_text(folder / f"{name}{suffix}.tex",
                          latex_table(part, caption + what + n, name + suffix, note,
                                      prov.line() + f" · full numbers: {csv.name}"))
    return csv, tex


def exported(out: Path, inv: str) -> dict[str, dict[str, list[Path]]]:
    """{"figures"|"tables": {notebook: [files]}} exported by an invocation (for the index)."""
    root = invocation_dir(out, inv)
    found: dict[str, dict[str, list[Path]]] = {FIGURES: {}, TABLES: {}}
    for kind in found:
        for d in sorted(p for p in (root / kind).glob("*") if p.is_dir()):
            files = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
            if files:
                found[kind][d.name] = files
    return found


