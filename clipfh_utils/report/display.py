"""The display layer: how every report table, caption, note and reading text is shown.

One place for what a reader sees, so that reports, exports and the reading text agree:

* `esc` / `safe_markdown`: every user-controlled string (names, paths, descriptions, prompt
  templates, metadata fields) is HTML-escaped here before it reaches a report; nothing else in
  the package writes raw HTML from such a string.
* rounding: metrics with 1 decimal, sds with 2, intervals with 1 (`metric`, `sd`, `interval`);
  the reading text formats its numbers with the same functions, so a sentence quotes the cell.
* readable model labels (`model_label`) from the method's title, backbone, mode and variant;
  internal names stay in the CSV and the metadata.
* the synthetic / random-weights mark (`mark`) that travels inside every exported figure and
  table caption.
* `table_html`: a table that scrolls inside its own box, never widening the page.
"""
from __future__ import annotations

import html
import math
import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

STAGE_LABELS = {"stage1": "Stage 1", "stage2": "Stage 2", "stage3": "Stage 3", "baseline": "Baseline"}


def esc(text: object) -> str:
    """`text` as inert HTML: <, >, & and quotes escaped."""
    return html.escape(str(text), quote=True)


_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def safe_markdown(text: str) -> str:
    """Generated Markdown with no live HTML: outside code spans, every '<' and '&' is escaped
    (the package's Markdown never needs raw HTML, so a name such as `<img onerror=...>` shows as
    text, never as an element); inside code spans Markdown shows the characters as they are."""
    out, last = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(text[last:m.start()].replace("&", "&amp;").replace("<", "&lt;"))
        out.append(m.group(0))
        last = m.end()
    out.append(text[last:].replace("&", "&amp;").replace("<", "&lt;"))
    return "".join(out)


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x)) or x is pd.NA


def metric(x: float | None) -> str:
    """A metric in % as every table and sentence shows it: 1 decimal."""
    return "—" if _missing(x) else f"{x:.1f}"


def sd(x: float | None) -> str:
    """A standard deviation: 2 decimals ("—" where there is none, e.g. one seed)."""
    return "—" if _missing(x) else f"{x:.2f}"


def interval(lo: float | None, hi: float | None) -> str:
    return f"[{metric(lo)}, {metric(hi)}]"


def signed(x: float | None) -> str:
    """A difference in points: 1 decimal with its sign."""
    return "—" if _missing(x) else f"{x:+.1f}"


def model_label(method: str, backbone: str, mode: str = "", variant: str = "") -> str:
    """"CLIP-ReID · tiny-vit", "PromptSG · tiny-vit (composed)": what a thesis calls the model."""
    extra = ", ".join(p for p in (mode, variant) if p)
    return f"{method} · {backbone}" + (f" ({extra})" if extra else "")


def model_labels(rows: Sequence[Mapping]) -> list[str]:
    """A readable label per payload or table row; rows whose labels coincide (two experiments of
    one method on one backbone) add the experiment name, so every label names one model."""
    def variant(r: Mapping) -> str:
        v = r.get("variant") or {}
        return ", ".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, Mapping) else str(v or "")
    labels = [model_label(r.get("method_title") or r.get("method") or r.get("experiment", "?"),
                          r.get("backbone", "?"), r.get("mode") or "", variant(r)) for r in rows]
    seen: dict[str, int] = {}
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
    labels = [lab if seen[lab] == 1 else f"{lab} [{r.get('experiment', r.get('model', '?'))}]"
              for lab, r in zip(labels, rows)]
    if "dataset" in (rows[0] if rows else {}) and len({r["dataset"] for r in rows}) > 1:
        labels = [f"{lab} · {r['dataset']}" for lab, r in zip(labels, rows)]
    return labels


def mark(real_data: bool, random_weights: bool) -> str:
    """The short line that travels with every exported figure and table: "" for real data and
    pretrained weights."""
    parts = (["synthetic images"] if not real_data else []) + (["random weights"] if random_weights else [])
    return ("NOT A HAND-IDENTIFICATION RESULT: " + " and ".join(parts)) if parts else ""


def header(name: str) -> str:
    """A column name for readers: snake_case to words ("train_ids" -> "train ids")."""
    return re.sub(r"_+", " ", str(name)).strip()


def human_columns(df: pd.DataFrame) -> pd.DataFrame:
    return df.rename(columns={c: header(c) for c in df.columns})


def cells(df: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A table as the reader sees it: floats rounded for display (the CSV keeps them whole),
    integers as integers, missing values as "—"; the same text in HTML and LaTeX."""
    def one(v: object) -> str:
        if _missing(v):
            return "—"
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.{digits}f}"
        return str(v)
    return pd.DataFrame({c: [one(v) for v in df[c]] for c in df.columns}, index=df.index)


SCROLL_STYLE = "overflow-x:auto;max-width:100%"


def table_html(df: pd.DataFrame, caption: str = "") -> str:
    """A table without its index, every cell and header escaped, inside a box that scrolls
    sideways when the table is wider than the page."""
    styled = (df.style.hide(axis="index").format(na_rep="—", escape="html").format_index(escape="html", axis=1)
              .set_table_styles([{"selector": "th, td", "props": "white-space: nowrap; padding: 2px 8px;"},
                                 {"selector": "caption", "props": "caption-side: top; font-weight: bold; "
                                                                  "text-align: left;"}]))
    if caption:
        styled = styled.set_caption(esc(caption))
    return f'<div class="clipfh-table" style="{SCROLL_STYLE}">{styled.to_html()}</div>'
