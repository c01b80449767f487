"""The one import of every notebook: open the run, show what produced its numbers, export.

    from clipfh_utils import workbook as wb
    run = wb.start(profile, run_dir, overrides, invocation)

`start` sets figures inline in the print style, opens the run context and displays the banner
that says which data and weights produced the numbers (and when they mean nothing for hands).

Exports. When the notebook knows its name (the pipeline runner sets it for each notebook; pass
`notebook=` in an interactive session to export too), every figure a cell draws is also written
to `invocations/<id>/figures/<notebook>/<label>.{pdf,svg,png}` (the label the plotting function
gave it), and `wb.show_table(...)` writes `invocations/<id>/tables/<notebook>/<name>.{csv,tex}`.
`wb.reading(text)` closes a notebook with its "reading the results" section; `wb.explorer(...)`
shows an interactive explorer in JupyterLab and a pointer to it in batch reports (widgets do not
render in static HTML).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .pipeline.context import Invocation, open_run
from .report.export import FIGURES, NOTEBOOK_ENV, TABLES, Provenance, save_figure, save_table
from .runs import invocation_dir, slug


@dataclass
class Session:
    run: Invocation
    notebook: str                     # "" -> nothing is exported
    batch: bool                       # executed by the pipeline (no widgets)
    names: dict[str, set[str]] = field(default_factory=lambda: {FIGURES: set(), TABLES: set()})

    def folder(self, kind: str) -> Path:
        return invocation_dir(self.run.run_dir, self.run.invocation) / kind / self.notebook

    def provenance(self) -> Provenance:
        return Provenance.of_invocation(self.run.run_dir, self.run.invocation, self.notebook)

    def unique(self, kind: str, name: str) -> str:
        """A file name not yet used by this notebook for a figure (or a table): name, name_2, ..."""
        base, n = slug(name, compact=True), 2
        name = base
        while name in self.names[kind]:
            name, n = f"{base}_{n}", n + 1
        self.names[kind].add(name)
        return name


_session: Session | None = None


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python
        return None
    return get_ipython()


def start(profile: str | Path = "demo", run_dir: str | Path = "", overrides: list[str] | None = None,
          invocation: str = "", notebook: str = "") -> Invocation:
    global _session
    from .report.plotting import use_print_style
    ip = _ipython()
    if ip is not None:
        ip.run_line_magic("matplotlib", "inline")
    use_print_style()  # after the inline backend, which sets its own rc
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.width", 250)
    run = open_run(profile, run_dir, overrides, invocation)
    batch = bool(os.environ.get(NOTEBOOK_ENV))
    _session = Session(run, notebook or os.environ.get(NOTEBOOK_ENV, ""), batch)
    if _session.notebook:
        for kind in (FIGURES, TABLES):  # this notebook's exports of an earlier execution, same invocation
            shutil.rmtree(_session.folder(kind), ignore_errors=True)
        if ip is not None:
            _register_figure_export(ip)
    if ip is not None:
        from IPython.display import Markdown, display
        display(Markdown(run.banner()))
    return run


def export_open_figures() -> list[Path]:
    """Write every open, not yet exported figure (PDF, SVG, PNG) into this notebook's figures/."""
    import matplotlib.pyplot as plt
    if _session is None or not _session.notebook:
        return []
    paths: list[Path] = []
    prov = None
    for num in plt.get_fignums():
        fig = plt.figure(num)
        if getattr(fig, "_clipfh_exported", False):
            continue
        title = fig.get_label() or fig.get_suptitle() or \
            next((ax.get_title() for ax in fig.axes if ax.get_title()), "figure")
        prov = prov or _session.provenance()
        paths += save_figure(fig, _session.folder(FIGURES), _session.unique(FIGURES, title), prov)
        fig._clipfh_exported = True
    return paths


def _register_figure_export(ip) -> None:
    """Export figures after each cell, before the inline backend shows and closes them."""
    callbacks = ip.events.callbacks["post_execute"]
    if export_open_figures not in callbacks:
        callbacks.insert(0, export_open_figures)  # the inline backend's flush closes figures


def show_table(df: pd.DataFrame, name: str, caption: str = "", note: str = "", data: pd.DataFrame | None = None
          ) -> None:
    """Show a table whole (no truncated cells, no wrapped values, no index) with its note, and
    export it as CSV (`data`, the full numbers, if given) and LaTeX."""
    from IPython.display import HTML, Markdown, display
    styled = (df.style.hide(axis="index")
              .set_table_styles([{"selector": "th, td", "props": "white-space: nowrap; padding: 2px 8px;"},
                                 {"selector": "caption", "props": "caption-side: top; font-weight: bold;"}]))
    if caption:
        styled = styled.set_caption(caption)
    display(HTML(styled.to_html()))
    if note:
        display(Markdown(f"<small>{note}</small>"))
    if _session is not None and _session.notebook:
        save_table(df, _session.folder(TABLES), _session.unique(TABLES, name), _session.provenance(), caption,
                   note, data)


def reading(text: str) -> None:
    """The notebook's closing section: what the numbers say (text generated from them)."""
    from IPython.display import Markdown, display
    display(Markdown("## Reading the results\n\n" + text))


def explorer(factory: Callable[..., object], what: str, *args, **kwargs) -> None:
    """Show an interactive explorer (`factory(*args, **kwargs)` returns an object with `.widget`,
    see clipfh_utils.report.explorer) in JupyterLab; in a batch report, where widgets cannot
    render, say where to find it instead (and build nothing: no widget state in the report)."""
    from IPython.display import Markdown, display
    if _session is not None and _session.batch:
        display(Markdown(f"*Interactive explorer ({what}): open this notebook in JupyterLab "
                         "(`make lab`) and run it; the static figures above show the same data.*"))
        return
    display(factory(*args, **kwargs).widget)


def comparison(metrics: list[dict], name: str, same_backbone: bool = True) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per protocol: the comparison table (means, sd between seeds, sd between splits, bootstrap
    intervals; shown and exported), its bar chart, and the paired differences (table and forest
    plot) where there are pairs. Returns {protocol: (table, pairs)} for the reading text."""
    from IPython.display import Markdown, display
    from .report import plotting, results
    out = {}
    for proto, label in results.PROTOCOL_LABELS.items():
        table = results.comparison_table(metrics, proto)
        display(Markdown(f"### {label}"))
        if table.empty:
            display(Markdown("*No results in this invocation yet: run the stage notebooks first.*"))
            continue
        pairs = results.paired_table(metrics, proto, same_backbone=same_backbone)
        provenance = "; ".join(sorted(set(table["data"]))) + " · weights: " + "; ".join(sorted(set(table["weights"])))
        show_table(results.display_table(table), f"{name}_{proto}", caption=f"{label}",
                           note=results.table_note(table) + f" Data and weights: {provenance}.", data=table)
        plotting.comparison_bars(table, "mAP", title=f"mAP, {label}", name=f"{name}_{proto}_map")
        if not pairs.empty:
            show_table(results.display_pairs(pairs), f"{name}_{proto}_differences",
                               caption=f"Paired differences, {label}", note=results.PAIRS_NOTE, data=pairs)
            plotting.difference_forest(pairs, "mAP", title=f"mAP differences, {label}",
                                       name=f"{name}_{proto}_differences")
        out[proto] = (table, pairs)
    return out


def _payload(run: Invocation, run_name: str, mode: str, dataset: str) -> dict:
    """The invocation's metrics payload of (run, mode, dataset): where its feature bank lies."""
    from .report.results import invocation_metrics
    for m in invocation_metrics(run.run_dir, run.invocation):
        if m["run"] == run_name and m["mode"] == mode and m["dataset"] == dataset:
            return m
    raise LookupError(f"invocation {run.invocation} has no metrics of run {run_name} (mode {mode!r}) on "
                      f"{dataset}: run its experiment first")


def _saved(run: Invocation, m: dict, split: int | None = 0):
    """(SavedBank, FeatureBank, uint8 images) of payload `m`'s first seed on split `split`'s
    queries and gallery (every evaluation image with None), read from its saved feature bank."""
    from .pipeline.banks import load_bank
    ds = run.dataset_named(m["dataset"])
    proto = run.protocol(ds)
    rows = proto.eval_rows() if split is None else proto.queries[split] + proto.galleries[split]
    saved = load_bank(m["metrics_file"])
    bank = saved.bank(m["seeds"][0], rows)
    images, _ = run.images(ds, rows, saved.image_size)
    return saved, bank, images


def features_of(run: Invocation, run_name: str, mode: str = "", split: int | None = 0, dataset: str = ""):
    """(FeatureBank, uint8 images) of a finished run's first seed on one split's queries and gallery
    (every evaluation image with split=None) of `dataset` (a key; "" = the profile's first): the
    features its evaluation saved, for figures in notebooks that read results from files."""
    m = _payload(run, run_name, mode, dataset or run.dataset.key)
    _, bank, images = _saved(run, m, split)
    return bank, images


def map_entries(run: Invocation, metrics: list[dict], split: int = 0) -> list:
    """The models notebook 05 looks into: one `explain.ModelEntry` per run of the invocation on the
    profile's first dataset (first seed, first inference mode) with its saved features of the
    split's queries and gallery; the model (for the maps) is loaded once per invocation."""
    from .explain import ModelEntry
    from .explain.maps import image_tower
    if not metrics:
        raise LookupError(f"invocation {run.invocation} has no results yet: run the stage notebooks "
                          "(01, 02, 03) first, or this notebook with the whole profile")
    out, seen = [], set()
    for m in metrics:
        if m["run"] in seen or m["dataset"] != run.dataset.key:
            continue
        seen.add(m["run"])
        _, bank, images = _saved(run, m, split)
        tm = run.trained_model(m["run"], m["seeds"][0], m["mode"])
        out.append(ModelEntry(m["experiment"], m["stage"], tm.model, image_tower(tm.model, tm.clip), tm.clip.mean,
                              tm.clip.std, bank, images, tm.clip.name, tm.clip.pretrained, tm.embedder))
    return out


def retrieval_explorer(run: Invocation, metrics: list[dict]):
    """A RetrievalExplorer over the invocation's models (the features their evaluations saved)."""
    from .report.explorer import RetrievalExplorer
    from .report.results import per_query
    models = {}
    for m in metrics:
        if per_query(m) is None:  # metrics written before per-query results were saved: nothing to rank
            continue
        _, bank, images = _saved(run, m, split=None)  # every split
        models[m["model"]] = (bank, images, per_query(m), run.protocol(run.dataset_named(m["dataset"])))
    return RetrievalExplorer(models)
