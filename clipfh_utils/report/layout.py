"""Is a figure print-ready? Its texts and legends measured with matplotlib's renderer.

`layout_problems(fig)` lists what a reader would see as broken: a text or legend (partly)
outside the figure, two texts on top of each other, a legend over an axes' data area. The
export calls it for every figure it writes, and the tests for every figure function.
"""
from __future__ import annotations

from itertools import combinations

from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.transforms import Bbox

TOLERANCE_PX = 1.0


def _drawn_tick_labels(fig) -> tuple[set[int], list[Text]]:
    """(ids of every tick label, the tick labels actually drawn): matplotlib keeps labels for
    ticks outside the view limits, which never appear."""
    every, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                every.update((id(tick.label1), id(tick.label2)))
            if ax.get_visible() and ax.axison:
                for tick in axis._update_ticks():
                    drawn += [lab for lab in (tick.label1, tick.label2) if lab.get_visible()]
    return every, drawn


def _texts(fig) -> list[Text]:
    """Every visible, non-empty text the figure draws (titles, labels, tick labels, legend
    texts, annotations)."""
    every_tick, drawn = _drawn_tick_labels(fig)
    out = [t for t in fig.findobj(Text) if id(t) not in every_tick and t.get_visible()
           and t.figure is fig and _shown(t)]
    return [t for t in out + drawn if t.get_text().strip()]


def _shown(artist) -> bool:
    """False for an artist inside an invisible parent (a hidden axes' tick labels)."""
    ax = getattr(artist, "axes", None)
    return ax is None or (ax.get_visible() and ax.axison) or artist in (ax.title, ax._left_title, ax._right_title)


def _legends(fig) -> list[Legend]:
    return [lg for lg in fig.findobj(Legend) if lg.get_visible()]


def _inside(box: Bbox, outer: Bbox) -> bool:
    return (box.x0 >= outer.x0 - TOLERANCE_PX and box.y0 >= outer.y0 - TOLERANCE_PX
            and box.x1 <= outer.x1 + TOLERANCE_PX and box.y1 <= outer.y1 + TOLERANCE_PX)


def _overlap(a: Bbox, b: Bbox) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > TOLERANCE_PX
            and min(a.y1, b.y1) - max(a.y0, b.y0) > TOLERANCE_PX)


def _name(t) -> str:
    return repr(t.get_text()[:40]) if isinstance(t, Text) else type(t).__name__


def layout_problems(fig) -> list[str]:
    """What lies outside the figure, overlaps another text, or covers an axes' data area."""
    fig.canvas.draw()  # layout engines place everything on draw
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    problems = []
    texts = _texts(fig)
    boxes = {id(t): t.get_window_extent(renderer) for t in texts}
    legends = _legends(fig)
    for t in texts:
        if not _inside(boxes[id(t)], frame):
            problems.append(f"text {_name(t)} lies outside the figure")
    for lg in legends:
        if not _inside(lg.get_window_extent(renderer), frame):
            problems.append("a legend lies outside the figure")
    for a, b in combinations(texts, 2):
        if _overlap(boxes[id(a)], boxes[id(b)]):
            problems.append(f"texts {_name(a)} and {_name(b)} overlap")
    data_axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>"]
    for lg in legends:
        box = lg.get_window_extent(renderer)
        for ax in data_axes:
            if _overlap(box, ax.bbox):
                problems.append(f"a legend covers the data area of axes {ax.get_title()!r}")
    return problems
