"""The print style every report figure shares: sizes for an A4 text width, print-sized fonts,
the Okabe-Ito colour-blind-safe palette, constrained layout (legends outside the axes, nothing
clipped), and the caption kept outside the figure (a thesis writes its own)."""
from __future__ import annotations

import re
from typing import Sequence

import matplotlib as mpl
import numpy as np
import torch

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
CORRECT, WRONG = "#0072B2", "#D55E00"      # blue / vermillion, plus ✓ / ✗ in the text
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
TEXT_WIDTH = 6.3                            # inches: A4 with 2.5 cm margins (16 cm)
MAP_CMAP = "inferno"                        # perceptually uniform, readable in greyscale
STAGE_NAMES = {"stage1": "Stage 1 (zero-shot)", "stage2": "Stage 2 (CLIP-ReID)",
               "stage3": "Stage 3 (PromptSG)", "baseline": "baseline"}
CAPTION_ATTR = "_clipfh_caption"


def use_print_style() -> None:
    """matplotlib settings for every report figure (called on import)."""
    mpl.rcParams.update({
        "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 7.5,
        "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 10,
        "axes.prop_cycle": mpl.cycler(color=OKABE_ITO), "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.5,
        "figure.dpi": 110, "savefig.dpi": 300, "pdf.fonttype": 42, "ps.fonttype": 42,
        "svg.fonttype": "none", "legend.frameon": False, "image.cmap": MAP_CMAP,
        "figure.constrained_layout.use": True})


use_print_style()


def named(fig, name: str, caption: str = ""):
    """Label a figure with its export file name and its caption (shown under it, never in it)."""
    fig.set_label(name)
    setattr(fig, CAPTION_ATTR, caption)
    return fig


def caption_of(fig) -> str:
    return getattr(fig, CAPTION_ATTR, "") or ""


def to_img(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).cpu().numpy()


def stage_colours(stages: Sequence[str]) -> dict[str, str]:
    order = [s for s in STAGE_NAMES if s in set(stages)] + sorted(set(stages) - set(STAGE_NAMES))
    return dict(zip(order, OKABE_ITO))


def cycle(seq: Sequence, i: int):
    return seq[i % len(seq)]


def wrap(label: str, width: int) -> str:
    """A column title in lines of at most `width` characters, broken after '_', '-' or spaces
    (model names are long and have no spaces)."""
    lines = []
    for part in label.split("\n"):
        line = ""
        for piece in re.findall(r"[^_\- ]+[_\- ]?|[_\- ]", part):
            if line and len(line) + len(piece.rstrip()) > width:
                lines.append(line.rstrip())
                line = ""
            line += piece
        lines.append(line.rstrip())
    return "\n".join(lines)
