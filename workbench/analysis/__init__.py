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
    compare_word_order,
    permutations,
    trajectory_divergence,
    word_order_runs,
)

__all__ = [
    "Attribution",
    "attribution_vs_attention",
    "integrated_gradients",
    "occlusion",
    "SeedGrid",
    "image_variance",
    "map_variance",
    "seed_grid",
    "step_variance",
    "trajectory_distances",
    "variance_split",
    "WordOrderComparison",
    "align_words",
    "compare_word_order",
    "permutations",
    "trajectory_divergence",
    "word_order_runs",
    "token_mass",
    "check_same",
    "PRESETS",
    "Aggregation",
    "Filmstrip",
    "TokenMaps",
    "WordMaps",
    "attention_mass",
    "binarize",
    "change_curves",
    "commit_step",
    "decode_latents",
    "filmstrip",
    "iou",
    "make_aggregation",
    "miou",
    "score_maps",
    "token_maps",
    "word_layer_mass",
    "word_maps",
    "word_step_mass",
]
