"""When and where the layout is decided: each word's map at a handful of steps, and per layer.

``word_step_grid`` makes a word × step grid of maps (each panel from that one step only) and
``word_layer_grid`` a word × layer grid (each panel from one resolution of a UNet, or one block of an
SD3/Flux transformer). Every panel is ``word_maps`` with the recipe restricted to its step or its
layers and nothing else changed, except that each panel is normalised on its own (``normalize="max"``
by default: a fraction of the panel's own peak), so that every panel is readable: the panels show
*where* a word looks at each step or layer, not how much attention it gets compared with another panel.

Example:
    >>> grid = word_step_grid(run, words=["circle"])  # doctest: +SKIP
    >>> grid.maps.shape  # (words, columns, H, W)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workbench.core.run import Run

from .aggregate import DIT_BLOCKS, UNET_BLOCKS, Aggregation, make_aggregation, resolve_layers
from .heatmaps import WordMaps, _branch, _latent_hw, word_maps

__all__ = ["GRID_STEPS", "WordGrid", "block_groups", "spread_steps", "word_layer_grid", "word_step_grid"]

GRID_STEPS = 6  # how many steps a word × step grid shows by default
_BLOCK = re.compile(r"^(.*?\.\d+)(\.|$)")  # a layer path up to its first index: its block


@dataclass(frozen=True)
class WordGrid:
    """Maps of some words, one per column: a step each (``axis="step"``) or a layer group each.

    Attributes:
        maps: (words, columns, H, W) float32, each (H, W) panel normalised on its own.
        words: the row labels (unique: a repeated word reads ``a#2``).
        word_indices: the prompt's word index of each row.
        columns: the column labels (``"step 5"``; ``"16x16"`` for a UNet resolution, ``"dual 0"`` /
            ``"single 3"`` / ``"block 2"`` for a transformer block).
        axis: ``"step"`` or ``"layer"``.
        steps: per column, the denoising steps its maps use.
        layers: per column, the layer paths its maps use.
        aggregation: the recipe every panel shares (before its step or layers are restricted).
        recipe: the recipe in one line, saying what varies per column and how panels are normalised.
        edited: the run's edits in words ("" for an unedited run).
    """

    maps: torch.Tensor
    words: list[str]
    word_indices: list[int]
    columns: list[str]
    axis: str
    steps: list[list[int]]
    layers: list[list[str]]
    aggregation: Aggregation
    recipe: str
    edited: str = ""

    @property
    def column_steps(self) -> list[int]:
        """The step of each column of a word × step grid."""
        if self.axis != "step":
            raise ValueError(f"column_steps needs a word × step grid; this grid's columns are {self.axis}s")
        return [s[0] for s in self.steps]


def spread_steps(kept: Sequence[int], count: int = GRID_STEPS, include: Iterable[int] = ()) -> list[int]:
    """``count`` of the ``kept`` steps spread evenly from the first to the last (both included), plus
    any of ``include`` that were kept, in order.

    Example: ``spread_steps(range(50))`` is ``[0, 10, 20, 29, 39, 49]``.
    """
    kept = sorted(int(s) for s in kept)
    if not kept:
        raise ValueError("the run's attention store holds no steps (was attention recorded?)")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    picks = np.linspace(0, len(kept) - 1, min(count, len(kept))).round().astype(int)
    chosen = {kept[i] for i in picks} | {int(s) for s in include if s in kept}
    return sorted(chosen)


def _base(run: Run, aggregation, normalize: str, size, branch: str) -> Aggregation:
    """The shared recipe, made at one size for every panel (``"largest"``: the largest grid among the
    layers the recipe reads, so that a per-layer panel is not made at its own grid)."""
    agg = make_aggregation(aggregation, normalize=normalize)
    size = agg.size if size is None else size
    if size == "largest":
        store, _ = _branch(run, branch)
        names = resolve_layers(store, agg, latent_hw=_latent_hw(run))
        size = max((tuple(store.shapes[n]) for n in names), key=lambda g: g[0] * g[1])
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (str, tuple, list)):
        raise ValueError(
            f"size must be 'largest', None, 'image', 'latent', an int or (height, width), got {size!r}"
        )
    return make_aggregation(agg, size=size if isinstance(size, str) else tuple(size))


def _rows(maps: WordMaps, words) -> list[int]:
    """Rows of ``maps`` for ``words``: None (every word), or words / labels (str) and prompt word
    indices (int), alone or in a list."""
    if words is None:
        return list(range(len(maps)))
    items = [words] if isinstance(words, (str, int)) else list(words)
    if not items:
        raise ValueError("words is empty; pass None for every word")
    rows = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise TypeError(f"words entries must be words (str) or word indices (int), got {item!r}")
        rows.append(maps.index(item) if isinstance(item, str) else maps.row_of(item))
    return rows


def _grid(columns: list[WordMaps], words) -> tuple[torch.Tensor, list[int], WordMaps]:
    """(words, columns, H, W) from one ``WordMaps`` per column, the rows picked, and the first column."""
    first = columns[0]
    rows = _rows(first, words)
    stacked = torch.stack([wm.maps[rows] for wm in columns], dim=1)  # (words, columns, H, W)
    return stacked, rows, first


_STEPS = re.compile(r"^(\S+: )steps .+? \((averaged|summed)\)")
_LAYERS = re.compile(r", layers (.+?) \((averaged|summed)\)")
_POOLED = re.compile(r", layers (.+?), every \(layer, head\) map (averaged|summed)")


def _recipe(agg: Aggregation, axis: str, per: str) -> str:
    """The shared recipe's line with the kept-apart axis as "one per column" and the normalisation said."""
    text = agg.describe()
    if axis == "step":
        text = _STEPS.sub(r"\1one step per column (that step only)", text, count=1)
    elif _POOLED.search(text):
        text = _POOLED.sub(rf", layers \1: one {per} per column, its (layer, head) maps \2", text, count=1)
    else:
        text = _LAYERS.sub(rf", layers \1: one {per} per column, its layers \2", text, count=1)
    return (
        f"{text}; each panel normalised on its own (normalize {agg.normalize}) so every panel is "
        "readable: panels show where a word looks, not how much compared with other panels"
    )


def word_step_grid(
    run: Run,
    words=None,
    steps: Iterable[int] | None = None,
    *,
    aggregation: Aggregation | str | None = None,
    normalize: str = "max",
    size: int | tuple[int, int] | str | None = "largest",
    branch: str = "cond",
) -> WordGrid:
    """Each word's map at each of a handful of steps: panel (w, j) is ``word_maps`` of step j alone.

    Args:
        run: a recorded run.
        words: None (every word), or words / labels (str) and prompt word indices (int).
        steps: recorded steps, one per column; default ``spread_steps``: ``GRID_STEPS`` steps spread
            from the first recorded step to the last.
        aggregation: the recipe (default ``"all-mean"``); only its steps are replaced, per column.
        normalize: each panel's normalisation (default ``"max"``: a fraction of its own peak).
        size: where maps are made: ``"largest"`` (default: the largest grid the recipe reads, the
            attention's own resolution), None (the recipe's own), ``"image"``, ``"latent"`` or (H, W).
        branch: ``"cond"`` or ``"negative"``.

    Returns:
        ``WordGrid`` with ``axis="step"``.

    Example:
        >>> word_step_grid(run, ["circle", "square"], steps=[0, 5, 10])  # doctest: +SKIP
    """
    store, _ = _branch(run, branch)
    kept = list(store.steps)
    chosen = spread_steps(kept) if steps is None else _steps(steps, kept)
    agg = _base(run, aggregation, normalize, size, branch)
    columns = [word_maps(run, agg, steps=[s], branch=branch) for s in chosen]
    maps, rows, first = _grid(columns, words)
    return WordGrid(
        maps=maps,
        words=[first.labels[r] for r in rows],
        word_indices=[first.word_indices[r] for r in rows],
        columns=[f"step {s}" for s in chosen],
        axis="step",
        steps=[[s] for s in chosen],
        layers=[list(wm.layers_used) for wm in columns],
        aggregation=agg,
        recipe=_recipe(agg, "step", ""),
        edited=first.edited,
    )


def _steps(steps, kept: list[int]) -> list[int]:
    """``steps`` checked against the recorded ones (ints, at least one, each recorded)."""
    items = [steps] if isinstance(steps, int) else list(steps)
    if not items or not all(isinstance(s, int) and not isinstance(s, bool) for s in items):
        raise ValueError(f"steps must be recorded step indices (ints), got {steps!r}")
    missing = [s for s in items if s not in kept]
    if missing:
        raise ValueError(f"steps {missing} were not recorded; the recorded steps are {kept}")
    return list(dict.fromkeys(items))


def block_groups(names: Sequence[str], shapes: dict[str, tuple[int, int]]) -> list[tuple[str, list[str]]]:
    """The layers as columns of a word × layer grid: (label, layer paths), in the layers' order.

    A UNet's layers (``down_blocks``, ``mid_block``, ``up_blocks``) are grouped by resolution
    (``"16x16"``); a transformer's (``transformer_blocks.N``, ``single_transformer_blocks.N``) by block:
    the layers whose paths share a block and its index (``"dual N"`` and ``"single N"`` where a model
    has both streams, as Flux does; ``"block N"`` otherwise); any other layer is a column of its own.
    """
    roots = {n.split(".")[0] for n in names}
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(_group_label(name, shapes[name], roots), []).append(name)
    return list(groups.items())


def _group_label(name: str, shape: tuple[int, int], roots: set[str]) -> str:
    root = name.split(".")[0]
    if root in UNET_BLOCKS:
        return "{}x{}".format(*shape)
    block = _BLOCK.match(name)
    if root in DIT_BLOCKS and block:
        index = block.group(1).rsplit(".", 1)[1]
        if root == "single_transformer_blocks":
            return f"single {index}"
        return f"dual {index}" if "single_transformer_blocks" in roots else f"block {index}"
    return name


def word_layer_grid(
    run: Run,
    words=None,
    *,
    aggregation: Aggregation | str | None = None,
    normalize: str = "max",
    size: int | tuple[int, int] | str | None = "largest",
    branch: str = "cond",
) -> WordGrid:
    """Each word's map per layer group: panel (w, j) is ``word_maps`` of group j's layers alone.

    Groups (``block_groups``): a UNet's resolutions, a transformer's blocks, among the layers the recipe
    reads; each panel uses the recipe's own steps.

    Args: as ``word_step_grid`` (less ``steps``).

    Returns:
        ``WordGrid`` with ``axis="layer"``.

    Example:
        >>> word_layer_grid(run, ["circle"]).columns  # ['8x8', '4x4', ...]  # doctest: +SKIP
    """
    store, _ = _branch(run, branch)
    agg = _base(run, aggregation, normalize, size, branch)
    names = resolve_layers(store, agg, latent_hw=_latent_hw(run))
    groups = block_groups(names, store.shapes)
    columns = [word_maps(run, agg, layers=tuple(layers), branch=branch) for _, layers in groups]
    maps, rows, first = _grid(columns, words)
    unet = any(n.split(".")[0] in UNET_BLOCKS for n in names)
    return WordGrid(
        maps=maps,
        words=[first.labels[r] for r in rows],
        word_indices=[first.word_indices[r] for r in rows],
        columns=[label for label, _ in groups],
        axis="layer",
        steps=[list(wm.steps_used) for wm in columns],
        layers=[list(layers) for _, layers in groups],
        aggregation=agg,
        recipe=_recipe(agg, "layer", "resolution" if unet else "block"),
        edited=first.edited,
    )
