"""Analysis: pure functions from runs to tensors and DataFrames.

Example:
    >>> from workbench.analysis import word_maps, filmstrip, change_curves  # doctest: +SKIP
"""

from .aggregate import PRESETS, Aggregation, make_aggregation
from .attribution import Attribution, attribution_vs_attention, integrated_gradients, occlusion
from .checks import check_same
from .heatmaps import (
    TokenMaps,
    WordMaps,
    attention_mass,
    token_maps,
    token_mass,
    word_layer_mass,
    word_maps,
    word_step_mass,
)
from .scoring import binarize, iou, miou, score_maps
from .seeds import (
    SeedGrid,
    image_variance,
    map_variance,
    seed_grid,
    step_variance,
    trajectory_distances,
    variance_split,
)
from .trajectory import Filmstrip, change_curves, commit_step, decode_latents, filmstrip
from .word_order import (
    WordOrderComparison,
    align_words,
    compare_orders,
    compare_word_order,
    permutations,
    trajectory_divergence,
    word_order_runs,
)

__all__ = [
    "Aggregation",
    "Attribution",
    "Filmstrip",
    "PRESETS",
    "SeedGrid",
    "TokenMaps",
    "WordMaps",
    "WordOrderComparison",
    "align_words",
    "attention_mass",
    "attribution_vs_attention",
    "binarize",
    "change_curves",
    "check_same",
    "commit_step",
    "compare_orders",
    "compare_word_order",
    "decode_latents",
    "filmstrip",
    "image_variance",
    "integrated_gradients",
    "iou",
    "make_aggregation",
    "map_variance",
    "miou",
    "occlusion",
    "permutations",
    "score_maps",
    "seed_grid",
    "step_variance",
    "token_maps",
    "token_mass",
    "trajectory_distances",
    "trajectory_divergence",
    "variance_split",
    "word_layer_mass",
    "word_maps",
    "word_order_runs",
    "word_step_mass",
]
