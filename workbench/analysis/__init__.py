"""Analysis: pure functions from runs to tensors and DataFrames.

Example:
    >>> from workbench.analysis import word_maps, filmstrip, change_curves  # doctest: +SKIP
"""

from .aggregate import PRESETS, Aggregation, make_aggregation
from .heatmaps import (
    TokenMaps,
    WordMaps,
    attention_mass,
    token_maps,
    word_layer_mass,
    word_maps,
    word_step_mass,
)
from .scoring import binarize, iou, miou, score_maps
from .trajectory import Filmstrip, change_curves, commit_step, decode_latents, filmstrip

__all__ = [
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
