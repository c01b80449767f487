"""Interactive explorers for JupyterLab (ipywidgets), on top of the static figures.

Widgets do not render in the static HTML reports, so every notebook draws its static figures
first and the workbook shows an explorer only in an interactive session. Each explorer draws
with the same plotting functions as the reports; `last` names the figure it drew last.
"""
from __future__ import annotations

from typing import Callable, Mapping

import matplotlib.pyplot as plt
import pandas as pd
import torch

from ..data.protocol import Protocol
from ..evaluation import FeatureBank
from .plotting import attention_grid, retrieval_grid, worst_failures


WIDE = {"width": "34em"}             # room for "<image name> · id <person id>" and model labels
LABEL = {"description_width": "5em"}


class _Explorer:
    def __init__(self):
        import ipywidgets as w
        self.w = w
        self.wide = lambda: w.Layout(**WIDE)
        self.out = w.Output()
        self.last = ""
        self._busy = False  # while one choice resets others: draw once, at the end

    def _show(self, draw: Callable[[], object]) -> None:
        from IPython.display import display
        from IPython.display import Markdown

        from .display import safe_markdown
        from .style import caption_of
        fig = draw()
        self.last = fig.get_label()
        self.out.clear_output(wait=True)
        with self.out:
            display(fig)
            display(Markdown(f"*{safe_markdown(caption_of(fig))}*"))
        plt.close(fig)


class RetrievalExplorer(_Explorer):
    """Pick a model, a split and a query: its top-k gallery with similarities and the rank of its
    true match; or the split's worst failures (queries whose match ranks lowest). Each model comes
    with the protocol of the dataset it was evaluated on."""

    def __init__(self, models: Mapping[str, tuple[FeatureBank, torch.Tensor, pd.DataFrame, Protocol]],
                 protocol: str = "clipfh"):
        super().__init__()
        w = self.w
        self.models, self.protocol = models, protocol
        self.model = w.Dropdown(options=list(models), description="model", layout=self.wide(), style=LABEL)
        self.split = w.IntSlider(0, 0, self.proto.n_splits - 1, description="split", style=LABEL)
        self.view = w.ToggleButtons(options=["one query", "worst failures"], description="show", style=LABEL)
        self.query = w.Dropdown(description="query", layout=self.wide(), style=LABEL)
        self.k = w.IntSlider(5, 1, 10, description="top k", style=LABEL)
        self._set_queries()
        for c in (self.model, self.split):  # another dataset or split: other queries
            c.observe(lambda _: (self._set_queries(), self.update()), "value")
        for c in (self.view, self.query, self.k):
            c.observe(lambda _: self.update(), "value")
        self.widget = w.VBox([w.HBox([self.model, self.split]), w.HBox([self.view, self.k]), self.query, self.out])
        self.update()

    @property
    def proto(self) -> Protocol:
        return self.models[self.model.value][3]

    def _set_queries(self) -> None:
        busy, self._busy = self._busy, True
        self.split.max = self.proto.n_splits - 1  # may move the split: its own observer is held off
        qs = self.proto.queries[self.split.value]
        self.query.options = [(f"{q.image_name} · id {q.person_id}", i) for i, q in enumerate(qs)]
        self.query.value = 0 if qs else None  # the control shows the query the figure draws
        self._busy = busy

    def update(self) -> None:
        if self._busy:
            return
        self.query.disabled = self.view.value == "worst failures"  # that view picks its own queries
        bank, images, per_query, _ = self.models[self.model.value]
        split, qs = self.split.value, self.proto.queries[self.split.value]
        gallery = self.proto.galleries[split]
        if self.view.value == "worst failures":
            rows = worst_failures(per_query, qs, self.protocol, split, 4)
            self._show(lambda: retrieval_grid(bank, images, rows, gallery, k=self.k.value, name="explorer_failures",
                                              title=f"{self.model.value}: worst failures, split {split}"))
            return
        rows = [qs[self.query.value]]
        self._show(lambda: retrieval_grid(bank, images, rows, gallery, k=self.k.value,
                                          title=f"{self.model.value}: {rows[0].image_name}, split {split}",
                                          name="explorer_retrieval"))


class MapExplorer(_Explorer):
    """Pick a query, a model, a method and a layer: its map over the image (`source` is an
    `explain.MapSource`)."""

    def __init__(self, source):
        super().__init__()
        w = self.w
        self.source = source
        self.query = w.Dropdown(options=[(f"{q.image_name} · id {q.person_id}", i)
                                         for i, q in enumerate(source.queries)], value=0, description="query",
                                layout=self.wide(), style=LABEL)
        self.model = w.Dropdown(options=[e.label for e in source.entries], description="model",
                                layout=self.wide(), style=LABEL)
        self.method = w.Dropdown(description="method", layout=self.wide(), style=LABEL)
        self.layer = w.Dropdown(description="layer", layout=self.wide(), style=LABEL)
        self._set_methods()
        self.model.observe(lambda _: (self._set_methods(), self.update()), "value")
        self.method.observe(lambda _: (self._set_layers(), self.update()), "value")
        for c in (self.query, self.layer):
            c.observe(lambda _: self.update(), "value")
        self.widget = w.VBox([w.HBox([self.query, self.model]), w.HBox([self.method, self.layer]), self.out])
        self.update()

    def _set_methods(self) -> None:
        busy, self._busy = self._busy, True  # options change in steps: draw once, at the end
        methods = self.source.entry(self.model.value).methods()
        self.method.options = methods
        self.method.value = methods[0]
        self._busy = busy
        self._set_layers()

    def _set_layers(self) -> None:
        if self.method.value is None:
            return
        busy, self._busy = self._busy, True
        layers = self.source.entry(self.model.value).layers(self.method.value)
        self.layer.options = layers
        self.layer.value = layers[-1]
        self._busy = busy

    def update(self) -> None:
        if self._busy:
            return
        e = self.source.entry(self.model.value)
        i = self.query.value
        q = self.source.queries[i]
        maps = self.source.maps(e.label, self.method.value, self.layer.value)[i:i + 1]
        image = e.images[[e.bank.index[q.image_name]]]
        col = f"{e.label} · {self.method.value} · {self.layer.value}"
        self._show(lambda: attention_grid(image, {col: maps}, [f"id {q.person_id}"], name="explorer_map"))
