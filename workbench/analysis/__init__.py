"""Analysis: pure functions from runs to tensors and DataFrames; figures for them live in ``workbench.viz``.

One line each, from a notebook (``pipe`` only where the model must run again or decode):

    Steps      strip = filmstrip(pipe, run); change_curves(run, strip=strip); commit_step(curves)
               commit_steps(runs)
    Tokens     word_maps(run, "daam").expand(run); token_maps(run, steps=range(5, 10), layers="16x16")
               word_step_mass(run); word_layer_mass(run); token_mass(run); prompt_words(run)
    Layout     word_step_grid(run, ["circle"]); word_layer_grid(run): each word's map per step / per layer
    Scoring    score_maps(word_maps(run), {"circle": mask}); iou(a, b); miou(preds, truths); binarize(m)
    Word order permutations(prompt, kind="relation"); word_order_runs(pipe, prompts, seed=0)
               (word_order_requests(...): the same runs as a plan of Requests any executor can run)
               compare_word_order(a, b, pipe); compare_to_first(runs, pipe); compare_orders(runs)
               align_words(a, b); trajectory_divergence(a, b)
    Seeds      grid = seed_grid(pipe, prompts, seeds) or SeedGrid.from_runs(runs); seed_study(runs)
               (seed_grid_requests(...): the grid as a plan of Requests any executor can run)
               trajectory_distances(grid); image_variance(grid); step_variance(grid); map_variance(grid)
               variance_split(values)
    Attribution integrated_gradients(pipe, run, step=3, region=mask); occlusion(pipe, run, step=3)
               attribution_vs_attention(ig, run)

Every heat map follows an explicit ``Aggregation`` recipe, returned with the result
(``WordMaps.aggregation``, ``df.attrs["aggregation"]``). Presets (``PRESETS``), each written from its
source's code (``SOURCES``; see ``presets.py``): ``"all-mean"``, ``"daam"`` (DAAM 0.2.0), ``"p2p"``
(prompt-to-prompt's ``aggregate_attention``), ``"amd"`` (attention-map-diffusers' default),
``"dit-word-share"`` (SD3/Flux joint attention, shaped like ConceptAttention's aggregation).

Example:
    >>> from workbench.analysis import word_maps, filmstrip, change_curves  # doctest: +SKIP
"""

from .aggregate import PRESETS, SOURCES, THRESHOLD_RULES, Aggregation, make_aggregation
from .attribution import Attribution, attribution_vs_attention, integrated_gradients, occlusion
from .checks import check_same
from .heatmaps import (
    TokenMaps,
    WordMaps,
    attention_mass,
    dominant_words,
    expand_maps,
    prompt_words,
    region_mass,
    token_maps,
    token_mass,
    word_layer_mass,
    word_maps,
    word_step_mass,
)
from .joint import over_text, text_share
from .layout import WordGrid, block_groups, spread_steps, word_layer_grid, word_step_grid
from .scoring import binarize, iou, miou, score_maps
from .seeds import (
    SeedGrid,
    SeedStudy,
    image_variance,
    map_variance,
    seed_grid,
    seed_grid_requests,
    seed_study,
    step_variance,
    trajectory_distances,
    variance_split,
)
from .switched import in_prompt_positions
from .trajectory import (
    COMMIT_THRESHOLD,
    Filmstrip,
    change_curves,
    commit_step,
    commit_steps,
    decode_latents,
    filmstrip,
)
from .word_order import (
    WordOrderComparison,
    align_words,
    compare_orders,
    compare_to_first,
    compare_word_order,
    permutations,
    relation_swap,
    trajectory_divergence,
    word_order_requests,
    word_order_runs,
)

__all__ = [
    "over_text",
    "text_share",
    "COMMIT_THRESHOLD",
    "Aggregation",
    "Attribution",
    "Filmstrip",
    "PRESETS",
    "SOURCES",
    "THRESHOLD_RULES",
    "SeedGrid",
    "SeedStudy",
    "TokenMaps",
    "WordMaps",
    "WordGrid",
    "WordOrderComparison",
    "align_words",
    "attention_mass",
    "attribution_vs_attention",
    "block_groups",
    "binarize",
    "change_curves",
    "check_same",
    "commit_step",
    "commit_steps",
    "compare_orders",
    "compare_to_first",
    "compare_word_order",
    "decode_latents",
    "dominant_words",
    "expand_maps",
    "filmstrip",
    "image_variance",
    "in_prompt_positions",
    "integrated_gradients",
    "iou",
    "make_aggregation",
    "map_variance",
    "miou",
    "occlusion",
    "permutations",
    "prompt_words",
    "region_mass",
    "relation_swap",
    "score_maps",
    "seed_grid",
    "seed_grid_requests",
    "seed_study",
    "spread_steps",
    "step_variance",
    "token_maps",
    "token_mass",
    "trajectory_distances",
    "trajectory_divergence",
    "variance_split",
    "word_layer_grid",
    "word_layer_mass",
    "word_maps",
    "word_order_requests",
    "word_order_runs",
    "word_step_grid",
    "word_step_mass",
]
