"""LaTeX tables that fit an A4 text width: booktabs rules through pandas' `Styler.to_latex`.

A table goes into a thesis unchanged when it is `\\input` into a plain article (A4, 2.5 cm
margins, \\usepackage{booktabs}): the spread columns (sds, n, timings) go into a table of their
own, and what is still wider than the text width is split into parts that each repeat the
label column. Nothing is scaled; numbers arrive already rounded as displayed (the CSV keeps the
full precision).
"""
from __future__ import annotations

import re
from functools import lru_cache

import pandas as pd

TEXT_WIDTH_PT = 455.0         # A4 (210 mm) minus 2 x 2.5 cm margins = 16 cm
SMALL_PT = 9.0                # \small in a 10 pt article
MARGIN = 1.08                 # the measure against Computer Modern as pdflatex sets it: a little wider
COLSEP_PT = 12.0              # 2 x \tabcolsep
# columns that describe the spread and the cost of a number, not the number: a table of their own
SPREAD_COLUMN = re.compile(r"\bsd\b|^n \(|img/s|s/seed|^size|^seeds$|^splits$")

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "×": r"$\times$", "−": r"$-$", "—": "---", "–": "--", "Δ": r"$\Delta$",
                  "≥": r"$\geq$", "≤": r"$\leq$", "·": r"$\cdot$", "✓": r"yes", "✗": r"no",
                  "λ": r"$\lambda$", "↔": r"$\leftrightarrow$", "→": r"$\rightarrow$", "≈": r"$\approx$",
                  "<": r"\textless{}", ">": r"\textgreater{}"}
_LATEX_RE = re.compile("|".join(map(re.escape, _LATEX_SPECIAL)))


def latex_escape(text: object) -> str:
    """Plain text as LaTeX (ASCII only: the symbols the reports use become commands; anything
    else outside ASCII becomes '?', never a character pdflatex cannot set)."""
    out = _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], str(text))
    return out.encode("ascii", "replace").decode("ascii")


def latex_comment(text: object) -> str:
    """Text for a `%` comment line: as written (file names keep their underscores), one line, ASCII."""
    plain = {"·": "-", "—": "--", "–": "-", "±": "+/-", "×": "x"}
    out = re.sub("[·—–±×]", lambda m: plain[m.group()], " ".join(str(text).splitlines()))
    return out.encode("ascii", "replace").decode("ascii")


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) or col.astype(str).str.match(r"^[-−+]?[\d.,]+$|^—$").all()


def _cell(v: object) -> str:
    return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)


@lru_cache(maxsize=4096)
def text_pt(text: str) -> float:
    """The width of `text` in \\small Computer Modern, measured with matplotlib's copy of cmr10
    (symbols it lacks come from its fallback font, which is wider: an upper estimate)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath
    if not text:
        return 0.0
    font = FontProperties(family=["cmr10", "DejaVu Sans"], size=SMALL_PT)  # symbols: the fallback
    w, _, _ = TextToPath().get_text_width_height_descent(text, font, ismath=False)
    return w * MARGIN


def header_lines(df: pd.DataFrame, col: str) -> list[str]:
    """A header wider than its column's cells goes on two lines (split at the space nearest its
    middle), so that a long name does not widen a column of short numbers."""
    text = str(col)
    cells = max([0.0, *(text_pt(_cell(v)) for v in df[col])])
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if text_pt(text) <= cells or not spaces:
        return [text]
    cut = min(spaces, key=lambda i: abs(i - len(text) / 2))
    return [text[:cut], text[cut + 1:]]


def width_pt(df: pd.DataFrame, col: str) -> float:
    """An upper estimate of a column's width in \\small: its widest cell or header line."""
    return max([*(text_pt(h) for h in header_lines(df, col)), *(text_pt(_cell(v)) for v in df[col])]) + COLSEP_PT


def _header(df: pd.DataFrame, col: str, align: str) -> str:
    lines = [latex_escape(h) for h in header_lines(df, col)]
    return lines[0] if len(lines) == 1 else f"\\shortstack[{align}]{{{lines[0]}\\\\ {lines[1]}}}"


def split_for_width(df: pd.DataFrame, keep: int = 1) -> list[pd.DataFrame]:
    """`df` as one or more tables, each narrower than the text width: the first `keep` columns
    (the labels) in each, the other columns in order, as many per table as fit."""
    if df.shape[1] <= keep:
        return [df]
    head = list(df.columns[:keep])
    base = sum(width_pt(df, c) for c in head)
    parts, current, used = [], [], base
    for c in df.columns[keep:]:
        w = width_pt(df, c)
        if current and used + w > TEXT_WIDTH_PT:
            parts.append(current)
            current, used = [], base
        current.append(c)
        used += w
    parts.append(current)
    return [df[head + p] for p in parts]


def redundant(df: pd.DataFrame) -> list[str]:
    """Columns that the label column already says in every row (the backbone of "CLIP-ReID ·
    tiny-vit"): on paper they only take width."""
    labels = df.iloc[:, 0].astype(str)
    return [c for c in df.columns[1:] if len(df) and all(str(v) and str(v) in lab for v, lab in zip(df[c], labels))]


def latex_parts(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(suffix, table) pairs: the main table ("" then "_2", ...), then its spread columns
    ("_spread", "_spread_2", ...), each fitting the text width."""
    df = df.drop(columns=redundant(df))
    spread = [c for c in df.columns[1:] if SPREAD_COLUMN.search(str(c))]
    main = df.drop(columns=spread)
    out = []
    for kind, table in (("", main), ("_spread", df[[df.columns[0], *spread]] if spread else None)):
        if table is None:
            continue
        for i, part in enumerate(split_for_width(table)):
            out.append((kind + (f"_{i + 1}" if i else ""), part))
    return out


def latex_table(df: pd.DataFrame, caption: str = "", label: str = "", note: str = "",
                provenance: str = "") -> str:
    """One booktabs table (`Styler.to_latex`): a header row, one row per DataFrame row, the
    caption (escaped) above, the label `tab:<label>`, the note in small print below."""
    align = "".join("r" if _is_numeric(df[c]) else "l" for c in df.columns)
    shown = pd.DataFrame([[latex_escape(_cell(v)) for v in row] for row in df.itertuples(index=False)],
                         columns=[_header(df, c, a) for c, a in zip(df.columns, align)])
    body = shown.style.hide(axis="index").to_latex(
        column_format=align, hrules=True, position="htbp", position_float="centering",
        caption=latex_escape(caption) if caption else None, label=f"tab:{label}" if label else None)
    body = body.replace("\\centering\n", "\\centering\n\\small\n", 1)
    if note:
        body = body.replace("\\end{table}", "\\par\\smallskip\\parbox{\\linewidth}{\\footnotesize "
                            + latex_escape(note) + "}\n\\end{table}")
    head = ["% generated by clipfh_utils; needs \\usepackage{booktabs}"] + ([f"% {latex_comment(provenance)}"]
                                                                          if provenance else [])
    return "\n".join(head) + "\n" + body
