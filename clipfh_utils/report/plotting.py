"""Figures for the reports. Each function draws one figure and returns it.

Made for print as well as the screen (`style`): sizes for an A4 text width (16 cm), print-sized
fonts, the Okabe-Ito colour-blind-safe palette (and line styles or markers where colour alone
would have to carry a distinction), labelled axes with units, scales that start where the
quantity does, legends outside the axes, and the title as a caption outside the figure. Each
figure carries a file name in its label (`fig.get_label()`), under which the workbook exports
it as PDF, SVG and PNG. The figures live in modules by job; this module gathers them.
"""
from __future__ import annotations

from .fig_data import counts_bar, image_grid, images_per_id
from .fig_maps import attention_grid, region_bars
from .fig_metrics import cmc_band, comparison_bars, difference_forest, split_spread
from .fig_retrieval import retrieval_figures, retrieval_grid, similarity_digits, worst_failures
from .fig_training import training_curves, tsne_pair
from .style import (CORRECT, LINESTYLES, MAP_CMAP, MARKERS, OKABE_ITO, STAGE_NAMES, TEXT_WIDTH, WRONG,
                    caption_of, use_print_style)

__all__ = ["counts_bar", "image_grid", "images_per_id", "attention_grid", "region_bars", "cmc_band",
           "comparison_bars", "difference_forest", "split_spread", "retrieval_figures", "retrieval_grid",
           "similarity_digits", "worst_failures", "training_curves", "tsne_pair", "CORRECT", "LINESTYLES",
           "MAP_CMAP", "MARKERS", "OKABE_ITO", "STAGE_NAMES", "TEXT_WIDTH", "WRONG", "caption_of",
           "use_print_style"]
