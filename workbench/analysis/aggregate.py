"""How per-layer, per-step, per-head attention becomes one heat map: the ``Aggregation`` recipe.

Every heat map in the workbench is made by one explicit recipe, recorded with the result and shown on
every figure. A recipe says which denoising steps, layers and heads are used, how they are combined
(mean or sum), how each layer's grid is upsampled to the image, and how the final map is normalized.

Normalizations (applied after the sub-word tokens of a word are summed):
    ``"mass"``: none; a map holds softmax probability mass (at every pixel the maps of all positions,
        special ones included, sum to 1 when the reduction is a mean).
    ``"minmax"``: each map rescaled to [0, 1] by its own minimum and maximum.
    ``"max"``: each map divided by its own maximum (so a threshold of 0.4 means "0.4 of the peak").
    ``"unit-sum"``: each map divided by its own sum, so it is a distribution over pixels.
    ``"share"``: at every pixel, each map divided by the sum over the non-special positions (words and
        punctuation): the share a word gets of the attention that goes to the prompt's text.

Presets (``PRESETS``):
    ``"all-mean"``: every kept step, every layer and head, averaged; bilinear upsampling; ``"mass"``.
    ``"daam"``: the recipe described in Tang et al., "What the DAAM: Interpreting Stable Diffusion
        Using Cross Attention" (ACL 2023), section 3: each layer's per-head maps are upsampled
        bicubically to the image size, then summed over heads, layers and time steps, sub-word tokens
        of a word are summed, and the map is scaled by its maximum (the paper binarizes at
        ``tau * max`` with ``tau = 0.4``). Negative values from bicubic overshoot are clipped to 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from workbench.core.attention import AttentionStore
from workbench.core.layers import select_layers

NORMALIZATIONS = ("mass", "minmax", "max", "unit-sum", "share")
UPSAMPLE_MODES = ("nearest", "bilinear", "bicubic")
REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class Aggregation:
    """An explicit heat-map recipe.

    Args:
        steps: denoising step indices to use (``None``: every step the run kept).
        layers: ``None`` for every layer, or module paths and/or resolutions (``"8x8"``, or an int
            for the grid's larger side).
        heads: ``"mean"`` / ``"sum"`` over heads, or head indices (needs a store recorded with
            ``heads="all"``).
        reduce: how steps and layers are combined: ``"mean"`` or ``"sum"``.
        upsample: ``"nearest"``, ``"bilinear"`` or ``"bicubic"`` (to the map size).
        normalize: one of ``NORMALIZATIONS`` (see the module docstring).
        name: the preset's name, or ``"custom"``.

    Example:
        >>> Aggregation(steps=(10, 11, 12), layers=("16x16",), normalize="minmax")  # doctest: +SKIP
    """

    steps: tuple[int, ...] | None = None
    layers: tuple[str | int, ...] | None = None
    heads: str | tuple[int, ...] = "mean"
    reduce: str = "mean"
    upsample: str = "bilinear"
    normalize: str = "mass"
    name: str = "custom"

    def __post_init__(self):
        if self.steps is not None:
            steps = [self.steps] if isinstance(self.steps, int) else list(self.steps)
            if not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
                raise TypeError(f"aggregation steps must be ints, got {self.steps!r}")
            object.__setattr__(self, "steps", tuple(steps))
        if self.layers is not None:
            layers = [self.layers] if isinstance(self.layers, (str, int)) else list(self.layers)
            object.__setattr__(self, "layers", tuple(layers))
        if isinstance(self.heads, str):
            if self.heads not in ("mean", "sum"):
                raise ValueError(f"heads must be 'mean', 'sum' or head indices, got {self.heads!r}")
        else:
            heads = [self.heads] if isinstance(self.heads, int) else list(self.heads)
            if not heads or not all(isinstance(h, int) and h >= 0 for h in heads):
                raise ValueError(
                    f"heads must be 'mean', 'sum' or non-negative head indices, got {self.heads!r}"
                )
            object.__setattr__(self, "heads", tuple(heads))
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")

    def describe(self) -> str:
        """One line for figure subtitles, e.g. ``daam: steps all, layers all, heads sum, ...``."""
        steps = "all" if self.steps is None else _span(self.steps)
        layers = "all" if self.layers is None else ",".join(str(x) for x in self.layers)
        heads = self.heads if isinstance(self.heads, str) else ",".join(str(h) for h in self.heads)
        return (
            f"{self.name}: steps {steps}, layers {layers}, heads {heads}, {self.reduce} over steps/layers, "
            f"{self.upsample} upsampling, normalize {self.normalize}"
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "steps": None if self.steps is None else list(self.steps),
            "layers": None if self.layers is None else list(self.layers),
            "heads": self.heads if isinstance(self.heads, str) else list(self.heads),
            "reduce": self.reduce,
            "upsample": self.upsample,
            "normalize": self.normalize,
        }


PRESETS: dict[str, Aggregation] = {
    "all-mean": Aggregation(name="all-mean"),
    "daam": Aggregation(heads="sum", reduce="sum", upsample="bicubic", normalize="max", name="daam"),
}


def _span(steps: tuple[int, ...]) -> str:
    if len(steps) > 2 and list(steps) == list(range(steps[0], steps[-1] + 1)):
        return f"{steps[0]}-{steps[-1]}"
    return ",".join(str(s) for s in steps)


def make_aggregation(
    aggregation: Aggregation | str | None = None,
    *,
    steps: Iterable[int] | int | None = None,
    layers: Iterable[str | int] | str | int | None = None,
    heads: str | Iterable[int] | int | None = None,
    normalize: str | None = None,
    upsample: str | None = None,
    reduce: str | None = None,
) -> Aggregation:
    """A recipe from a preset name (or an ``Aggregation``) with any field overridden.

    Example:
        >>> make_aggregation("daam", steps=range(5, 10))  # doctest: +SKIP
    """
    if aggregation is None:
        base = PRESETS["all-mean"]
    elif isinstance(aggregation, Aggregation):
        base = aggregation
    elif isinstance(aggregation, str):
        if aggregation not in PRESETS:
            raise ValueError(f"unknown aggregation preset {aggregation!r}; choose one of {sorted(PRESETS)}")
        base = PRESETS[aggregation]
    else:
        raise TypeError(
            f"aggregation must be a preset name or an Aggregation, got {type(aggregation).__name__}"
        )
    changes = {}
    if steps is not None:
        changes["steps"] = (steps,) if isinstance(steps, int) else tuple(steps)
    if layers is not None:
        changes["layers"] = (layers,) if isinstance(layers, (str, int)) else tuple(layers)
    for key, value in (
        ("heads", heads),
        ("normalize", normalize),
        ("upsample", upsample),
        ("reduce", reduce),
    ):
        if value is not None:
            changes[key] = value
    if not changes:
        return base
    return replace(base, name=base.name if base.name == "custom" else f"{base.name}*", **changes)


def resolve_steps(store: AttentionStore, steps: tuple[int, ...] | None) -> list[int]:
    """Row indices into the store for the requested steps; a step not kept raises naming the kept ones."""
    if not store.steps:
        raise ValueError("the run's attention store holds no steps (was attention recorded?)")
    if steps is None:
        return list(range(len(store.steps)))
    row_of = {s: i for i, s in enumerate(store.steps)}
    missing = [s for s in steps if s not in row_of]
    if missing:
        raise ValueError(
            f"steps {missing} are not in the run's attention store; kept steps are {_span(tuple(store.steps))}"
        )
    if not steps:
        raise ValueError("steps is empty; pass None for every kept step")
    return [row_of[s] for s in steps]


def resolve_layers(store: AttentionStore, layers: tuple[str | int, ...] | None) -> list[str]:
    """Layer paths for the requested names/resolutions, in the store's order."""
    if not store.probs:
        raise ValueError("the run's attention store holds no layers (was attention recorded?)")
    return select_layers(layers, {n: tuple(store.shapes[n]) for n in store.probs}, among="recorded layer")


def reduce_heads(
    store: AttentionStore, layer: str, p: torch.Tensor, heads: str | tuple[int, ...]
) -> torch.Tensor:
    """(steps, heads, queries, tokens) -> (steps, queries, tokens) by the recipe's head rule."""
    if isinstance(heads, str):
        return p.mean(dim=1) if heads == "mean" else p.sum(dim=1)
    if store.heads != "all":
        raise ValueError(
            f"heads={list(heads)} needs attention recorded per head (RecordingPolicy(heads='all')); "
            "this run averaged heads while recording: use heads='mean'"
        )
    n = p.shape[1]
    bad = [h for h in heads if h >= n]
    if bad:
        raise ValueError(f"heads {bad} out of range for layer {layer} with {n} heads (0..{n - 1})")
    return p[:, list(heads)].sum(dim=1) if len(heads) > 1 else p[:, heads[0]]


def layer_grids(
    store: AttentionStore, agg: Aggregation, size: tuple[int, int]
) -> tuple[torch.Tensor, list[str], list[int]]:
    """Aggregate the store into one (tokens, H, W) float32 map per text position, unnormalized.

    Steps and heads are reduced on each layer's own grid (``store.shapes[layer]``, row-major queries),
    the result is upsampled to ``size`` and layers are combined. All of these are linear, so the order
    does not change the result (except bicubic overshoot, clipped at 0 at the end).

    Returns:
        (maps, layers used, step indices used).
    """
    rows = resolve_steps(store, agg.steps)
    layers = resolve_layers(store, agg.layers)
    total = None
    for name in layers:
        p = store.probs[name][rows].float()  # (steps, heads, queries, tokens)
        p = reduce_heads(store, name, p, agg.heads)  # (steps, queries, tokens)
        p = p.mean(dim=0) if agg.reduce == "mean" else p.sum(dim=0)  # (queries, tokens)
        h, w = store.shapes[name]
        grid = p.T.reshape(1, p.shape[-1], h, w)  # (1, tokens, rows, cols), queries row-major
        up = upsample(grid, size, agg.upsample)[0]  # (tokens, H, W)
        total = up if total is None else total + up
    assert total is not None
    if agg.reduce == "mean":
        total = total / len(layers)
    if agg.upsample == "bicubic":
        total = total.clamp_min(0)
    return total, layers, [store.steps[r] for r in rows]


def upsample(grid: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(N, C, rows, cols) -> (N, C, H, W) by ``mode``; identity when the size already matches."""
    if tuple(grid.shape[-2:]) == tuple(size):
        return grid
    if mode == "nearest":
        return F.interpolate(grid, size=size, mode="nearest")
    return F.interpolate(grid, size=size, mode=mode, align_corners=False)


def normalize_maps(maps: torch.Tensor, how: str, text_total: torch.Tensor | None = None) -> torch.Tensor:
    """Normalize (N, H, W) maps; ``text_total`` (H, W) is the sum over non-special positions for ``share``."""
    eps = 1e-12
    if how == "mass":
        return maps
    if how == "minmax":
        lo = maps.amin(dim=(-2, -1), keepdim=True)  # (N, 1, 1)
        hi = maps.amax(dim=(-2, -1), keepdim=True)  # (N, 1, 1)
        return (maps - lo) / (hi - lo).clamp_min(eps)
    if how == "max":
        return maps / maps.amax(dim=(-2, -1), keepdim=True).clamp_min(eps)
    if how == "unit-sum":
        return maps / maps.sum(dim=(-2, -1), keepdim=True).clamp_min(eps)
    if how == "share":
        if text_total is None:
            raise ValueError("normalize='share' needs the text positions' total")
        return maps / text_total.clamp_min(eps)
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {how!r}")
