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
from .report import display
from .report.export import FIGURES, NOTEBOOK_ENV, TABLES, Provenance, save_figure, save_table
from .runs import invocation_dir, slug


@dataclass
class Session:
    run: Invocation
    notebook: str                     # "" -> nothing is exported
    batch: bool                       # executed by the pipeline (no widgets)
    names: dict[str, set[str]] = field(default_factory=lambda: {FIGURES: set(), TABLES: set()})
    notes: set[str] = field(default_factory=set)   # table notes shown already: each once per report

    def folder(self, kind: str) -> Path:
        return invocation_dir(self.run.run_dir, self.run.invocation) / kind / self.notebook

    def provenance(self) -> Provenance:
        synthetic, untrained = self.run.not_real()
        return Provenance.of_invocation(self.run.run_dir, self.run.invocation, self.notebook,
                                        display.mark(not synthetic, bool(untrained)))

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
        from IPython.display import Markdown
        from IPython.display import display as show
        show(Markdown(display.safe_markdown(run.banner())))
    return run


def export_open_figures() -> list[Path]:
    """Write every open, not yet exported figure (PDF, SVG, PNG) into this notebook's figures/,
    warn about any text or legend out of place (`report.layout`), then show each figure with its
    caption under it (outside the image, which a thesis captions itself)."""
    import warnings

    import matplotlib.pyplot as plt

    from .report.layout import layout_problems
    from .report.style import caption_of
    if _session is None:
        return []
    paths: list[Path] = []
    prov = None
    for num in plt.get_fignums():
        fig = plt.figure(num)
        if getattr(fig, "_clipfh_exported", False):
            continue
        fig._clipfh_exported = True
        if _session.notebook:
            title = fig.get_label() or fig.get_suptitle() or \
                next((ax.get_title() for ax in fig.axes if ax.get_title()), "figure")
            for problem in layout_problems(fig):
                warnings.warn(f"figure {title!r}: {problem}", stacklevel=1)
            prov = prov or _session.provenance()
            paths += save_figure(fig, _session.folder(FIGURES), _session.unique(FIGURES, title), prov)
        caption = caption_of(fig)
        if caption and _ipython() is not None:
            from IPython.display import Markdown
            from IPython.display import display as show
            show(fig)
            show(Markdown(f"*{display.safe_markdown(caption)}*"))
            plt.close(fig)
    return paths


def _register_figure_export(ip) -> None:
    """Export figures after each cell, before the inline backend shows and closes them."""
    callbacks = ip.events.callbacks["post_execute"]
    if export_open_figures not in callbacks:
        callbacks.insert(0, export_open_figures)  # the inline backend's flush closes figures


def show_table(df: pd.DataFrame, name: str, caption: str = "", note: str = "", data: pd.DataFrame | None = None,
               export: bool = True) -> None:
    """Show a table whole (no index, no truncated cells; it scrolls in its own box when wide),
    with human headers and numbers rounded for display, every string escaped; its note once
    per report (a later table with the same note points to it); and export it as CSV (`data`,
    the full numbers, or `df` unrounded) and LaTeX (as shown). A table another report of the
    invocation showed already becomes a link to that report (its files are exported here too)."""
    from IPython.display import HTML
    from IPython.display import display as show_
    shown = display.cells(display.human_columns(df))
    if export and _session is not None and _session.notebook:
        csv, _ = save_table(shown, _session.folder(TABLES), _session.unique(TABLES, name), _session.provenance(),
                            caption, note, df if data is None else data)
        earlier = _same_table_elsewhere(csv)
        if earlier:
            show_(HTML(f"<p><b>{display.esc(caption)}</b>: the same table as in "
                       f'<a href="{display.esc(earlier)}.html">{display.esc(earlier)}</a>.</p>'))
            return
    show_(HTML(display.table_html(shown, caption)))
    _show_note(note)


def _same_table_elsewhere(csv: Path) -> str:
    """The notebook of this invocation that exported the very same numbers already ("" if none)."""
    own = csv.read_bytes()
    for other in sorted(csv.parent.parent.glob("*/*.csv")):
        if other.parent != csv.parent and other.stat().st_size == len(own) and other.read_bytes() == own:
            return other.parent.name
    return ""


def _show_note(note: str) -> None:
    """A table's note, once per report; a later table with the same note points to it."""
    from IPython.display import HTML
    from IPython.display import display as show_
    if not note:
        return
    if _session is not None and note in _session.notes:
        show_(HTML("<p><small>Columns as explained under the first such table above.</small></p>"))
        return
    show_(HTML(f"<p><small>{display.esc(note)}</small></p>"))
    if _session is not None:
        _session.notes.add(note)


def show(df: pd.DataFrame) -> None:
    """A small table (settings, runs) without its index, "—" for a missing value; not exported."""
    from IPython.display import HTML
    from IPython.display import display as show_
    show_(HTML(display.table_html(display.cells(display.human_columns(df)))))


def markdown(text: str) -> None:
    """Generated Markdown (names, paths and other free text in it shown as text, never as HTML)."""
    from IPython.display import Markdown
    from IPython.display import display as show_
    show_(Markdown(display.safe_markdown(text)))


def reading(text: str) -> None:
    """The notebook's closing section: what the numbers say (text generated from them)."""
    from IPython.display import Markdown
    from IPython.display import display as show
    show(Markdown("## Reading the results\n\n" + display.safe_markdown(text)))


def explorer(factory: Callable[..., object], what: str, *args, **kwargs) -> None:
    """Show an interactive explorer (`factory(*args, **kwargs)` returns an object with `.widget`,
    see clipfh_utils.report.explorer) in JupyterLab; in a batch report, where widgets cannot
    render, say where to find it instead (and build nothing: no widget state in the report)."""
    from IPython.display import Markdown
    from IPython.display import display as show
    if _session is not None and _session.batch:
        show(Markdown(f"*Interactive explorer ({what}): open this notebook in JupyterLab "
                      "(`make lab`) and run it; the static figures above show the same data.*"))
        return
    show(factory(*args, **kwargs).widget)


def comparison(metrics: list[dict], name: str, same_backbone: bool = True) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per protocol: the comparison table (means, sd between seeds, sd between splits, bootstrap
    intervals; shown and exported), its bar chart, and the paired differences (table and forest
    plot) where there are pairs. Returns {protocol: (table, pairs)} for the reading text."""
    from IPython.display import Markdown
    from IPython.display import display as show
    from .report import plotting, results
    out = {}
    for proto in results.protocols_of(metrics) or list(results.PROTOCOL_LABELS)[:1]:
        label = results.PROTOCOL_LABELS[proto]
        table = results.comparison_table(metrics, proto)
        show(Markdown(f"### {display.safe_markdown(label)}"))
        if table.empty:
            show(Markdown("*No results in this invocation yet: run the stage notebooks first.*"))
            continue
        pairs = results.paired_table(metrics, proto, same_backbone=same_backbone)
        provenance = "; ".join(sorted(set(table["data"]))) + " · weights: " + "; ".join(sorted(set(table["weights"])))
        shown = results.display_table(table)
        show_table(shown, f"{name}_{proto}", caption=f"{label}",
                   note=results.table_note(table) + f" Data and weights: {provenance}.", data=table)
        plotting.comparison_bars(table, "mAP", title=f"mAP, {label}", name=f"{name}_{proto}_map",
                                 labels=shown["model"])
        if not pairs.empty:
            shown_pairs = results.display_pairs(pairs, table)
            show_table(shown_pairs, f"{name}_{proto}_differences",
                       caption=f"Paired differences, {label}", note=results.PAIRS_NOTE, data=pairs)
            plotting.difference_forest(pairs, "mAP", title=f"mAP differences, {label}",
                                       name=f"{name}_{proto}_differences",
                                       labels=[f"{b}\n−  {a}" for a, b in zip(shown_pairs["A"], shown_pairs["B"])])
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
    picked, seen = [], set()
    for m in metrics:
        if m["run"] in seen or m["dataset"] != run.dataset.key:
            continue
        seen.add(m["run"])
        picked.append(m)
    out = []
    for m, label in zip(picked, display.model_labels(picked)):  # readable labels; the CSV keeps the experiment
        _, bank, images = _saved(run, m, split)
        tm = run.trained_model(m["run"], m["seeds"][0], m["mode"])
        out.append(ModelEntry(label, m["stage"], tm.model, image_tower(tm.model, tm.clip), tm.clip.mean,
                              tm.clip.std, bank, images, tm.clip.name, tm.clip.pretrained, tm.embedder,
                              experiment=m["experiment"]))
    return out


def retrieval_explorer(run: Invocation, metrics: list[dict]):
    """A RetrievalExplorer over the invocation's models (the features their evaluations saved)."""
    from .report.explorer import RetrievalExplorer
    from .report.results import per_query
    models = {}
    for m in metrics:
        if per_query(m) is None:  # metrics written before per-query results were saved: nothing to rank
            continue
        if (m.get("evaluation") or {}).get("reranked"):  # its ranks are not the features' ranking
            continue
        _, bank, images = _saved(run, m, split=None)  # every split
        models[m["model"]] = (bank, images, per_query(m), run.protocol(run.dataset_named(m["dataset"])))
    return RetrievalExplorer(models)
