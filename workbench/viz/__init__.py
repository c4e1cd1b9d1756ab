"""Figures: plotly builders from analysis results; every builder returns a ``go.Figure`` (never shows it).

    Steps      filmstrip_figure(strip); change_curve_figure(curves)
    Tokens     word_overlay(run, word_maps(run)); word_step_matrix(word_step_mass(run));
               word_layer_matrix(word_layer_mass(run))
    Layout     word_grid_figure(word_step_grid(run), commit_step=commit_step(change_curves(run)))
    Word order side_by_side(cmp); map_pairs(cmp); divergence_figure(cmp); mass_comparison(cmp)
    Seeds      seed_grid_figure(grid); trajectory_distance_figure(trajectory_distances(grid));
               variance_figure(step_variance(grid))
    Attribution attribution_bar(ig); attribution_vs_attention_figure(attribution_vs_attention(ig, run))
    Panels     word_order_panels(runs, compare_to_first(runs, pipe)); seed_panels(seed_study(runs)):
               lists of ``Panel`` (a figure or a table, with its caption) for apps and reports

Each accepts an optional ``fig=`` to draw into, labels its axes with units and carries the heat-map
recipe (or other provenance) in its subtitle. A figure a builder makes is sized from its grid: image
panels at least 128 px on their shorter side, and room for every title, label and colour bar. ``workbench.viz.render`` turns images and tables into
PNG bytes and escaped HTML for apps and reports.

Example:
    >>> from workbench.viz import word_overlay, filmstrip_figure  # doctest: +SKIP
"""

from .attribution import attribution_bar, attribution_vs_attention_figure
from .compare import block_iou_figure, divergence_figure, map_pairs, mass_comparison, side_by_side
from .interventions import lab_curves_figure
from .layout import word_grid_figure
from .maps import dominant_word_figure, word_layer_matrix, word_overlay, word_step_matrix
from .panels import Panel, seed_panels, word_order_panels
from .seeds import seed_grid_figure, trajectory_distance_figure, variance_figure
from .steps import change_curve_figure, filmstrip_figure

__all__ = [
    "Panel",
    "attribution_bar",
    "attribution_vs_attention_figure",
    "block_iou_figure",
    "change_curve_figure",
    "divergence_figure",
    "dominant_word_figure",
    "filmstrip_figure",
    "lab_curves_figure",
    "map_pairs",
    "mass_comparison",
    "seed_grid_figure",
    "seed_panels",
    "side_by_side",
    "trajectory_distance_figure",
    "variance_figure",
    "word_grid_figure",
    "word_layer_matrix",
    "word_order_panels",
    "word_overlay",
    "word_step_matrix",
]
