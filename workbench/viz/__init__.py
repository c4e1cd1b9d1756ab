"""Figures: plotly builders from analysis results; every builder returns a ``go.Figure``.

Example:
    >>> from workbench.viz import word_overlay, filmstrip_figure  # doctest: +SKIP
"""

from .attribution import attribution_bar, attribution_vs_attention_figure
from .compare import divergence_figure, map_pairs, mass_comparison, side_by_side
from .maps import word_layer_matrix, word_overlay, word_step_matrix
from .seeds import seed_grid_figure, trajectory_distance_figure, variance_figure
from .steps import change_curve_figure, filmstrip_figure

__all__ = [
    "attribution_bar",
    "attribution_vs_attention_figure",
    "change_curve_figure",
    "divergence_figure",
    "filmstrip_figure",
    "map_pairs",
    "mass_comparison",
    "seed_grid_figure",
    "side_by_side",
    "trajectory_distance_figure",
    "variance_figure",
    "word_layer_matrix",
    "word_overlay",
    "word_step_matrix",
]
