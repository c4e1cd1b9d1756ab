"""How per-layer, per-step, per-head attention becomes one heat map: the ``Aggregation`` recipe at work.

The recipe (``Aggregation``, in ``recipe.py``) says what is done; the presets (``PRESETS``, in
``presets.py``) are recipes written from the code of the methods they are named after. This module
applies a recipe to an ``AttentionStore``: steps and layers resolved, heads reduced exactly (or refused),
each layer's grid upsampled and layers combined.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

import torch
import torch.nn.functional as F

from workbench.core.attention import AttentionStore
from workbench.core.layers import select_layers

from .presets import PRESETS, SOURCES
from .recipe import (
    NORMALIZATIONS,
    REDUCTIONS,
    THRESHOLD_RULES,
    UPSAMPLE_MODES,
    Aggregation,
    _span,
)

__all__ = [
    "NORMALIZATIONS",
    "PRESETS",
    "REDUCTIONS",
    "SOURCES",
    "THRESHOLD_RULES",
    "UPSAMPLE_MODES",
    "Aggregation",
    "head_units",
    "layer_grids",
    "layer_values",
    "make_aggregation",
    "normalize_maps",
    "resolve_layers",
    "resolve_steps",
    "upsample",
]

_RESOLUTION = re.compile(r"^\d+x\d+$")
UNET_BLOCKS = ("down_blocks", "mid_block", "up_blocks")
DIT_BLOCKS = ("transformer_blocks", "single_transformer_blocks", "layers")  # layers: Z-Image's main blocks


def make_aggregation(
    aggregation: Aggregation | str | None = None,
    *,
    steps: Iterable[int] | int | str | None = None,
    layers: Iterable[str | int] | str | int | None = None,
    heads: str | Iterable[int] | int | None = None,
    normalize: str | None = None,
    upsample: str | None = None,
    reduce: str | None = None,
    size: str | tuple[int, int] | None = None,
    **fields,
) -> Aggregation:
    """A recipe from a preset name (or an ``Aggregation``) with any field overridden.

    ``reduce`` sets both ``step_reduce`` and ``layer_reduce``; other ``Aggregation`` fields may be given
    by name (``skip=``, ``words=``, ``repeats=``, ...). A changed preset is named with a ``*``.

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
    unknown = sorted(set(fields) - set(Aggregation.__dataclass_fields__) - {"name"})
    if unknown:
        raise TypeError(
            f"unknown aggregation fields {unknown}; fields are {sorted(Aggregation.__dataclass_fields__)}"
        )
    changes = {k: v for k, v in fields.items() if v is not None}
    if steps is not None:
        changes["steps"] = steps if isinstance(steps, (int, str)) else tuple(steps)
    if layers is not None:
        changes["layers"] = (layers,) if isinstance(layers, (str, int)) else tuple(layers)
    if reduce is not None:
        changes["step_reduce"] = changes["layer_reduce"] = reduce
    for key, value in (("heads", heads), ("normalize", normalize), ("upsample", upsample), ("size", size)):
        if value is not None:
            changes[key] = value
    if not changes:
        return base
    name = changes.pop("name", base.name if base.name == "custom" else f"{base.name.rstrip('*')}*")
    return replace(base, name=name, **changes)


def resolve_steps(store: AttentionStore, steps: tuple[int, ...] | str | None) -> list[int]:
    """Row indices into the store for the requested steps (``"last"``: the last kept step); a step not
    kept raises naming the kept ones."""
    if not store.steps:
        raise ValueError("the run's attention store holds no steps (was attention recorded?)")
    if steps is None:
        return list(range(len(store.steps)))
    if steps == "last":
        return [len(store.steps) - 1]
    row_of = {s: i for i, s in enumerate(store.steps)}
    missing = [s for s in steps if s not in row_of]
    if missing:
        raise ValueError(
            f"steps {missing} are not in the run's attention store; kept steps are {_span(tuple(store.steps))}"
        )
    if not steps:
        raise ValueError("steps is empty; pass None for every kept step")
    return [row_of[s] for s in steps]


def layer_family(names: Iterable[str]) -> str | None:
    """``"unet"`` or ``"dit"`` (SD3/Flux joint attention) from recorded layers' names; None if neither."""
    roots = {n.split(".")[0] for n in names}
    if roots & set(UNET_BLOCKS):
        return "unet"
    if roots & set(DIT_BLOCKS):
        return "dit"
    return None


def _latent_grid(entry: str, latent_hw: tuple[int, int] | None) -> tuple[int, int]:
    try:
        n = int(entry.split("/", 1)[1])
    except ValueError:
        n = 0
    if n < 1 or n & (n - 1):
        raise ValueError(f"layer entry {entry!r} must be 'latent/N' with N a power of two (1, 2, 4, 8, ...)")
    if latent_hw is None:
        raise ValueError(
            f"layer entry {entry!r} needs the run's latent size; use word_maps/token_maps on the run "
            "(or pass latent_hw)"
        )
    h, w = latent_hw
    while n > 1:  # stride-2 convolutions with padding 1 map n to ceil(n / 2), as core.layers does
        h, w, n = -(-h // 2), -(-w // 2), n // 2
    return h, w


def _matches(entry, grids: dict, latent_hw, *, strict: bool, label: str) -> set[str]:
    """The layers one entry picks; with ``strict`` an entry that picks none raises, naming the choices."""
    if isinstance(entry, str) and entry.startswith("latent/"):
        target = _latent_grid(entry, latent_hw)
        hits = {n for n, g in grids.items() if tuple(g) == target}
    elif (
        isinstance(entry, str)
        and not _RESOLUTION.match(entry)
        and entry.removesuffix(".processor") not in grids
    ):
        prefix = entry.removesuffix(".processor") + "."
        hits = {n for n in grids if n.startswith(prefix)}
    else:
        try:
            hits = set(select_layers(entry, grids, label=label, among="recorded layer"))
        except ValueError:
            if strict:
                raise
            return set()
    if not hits and strict:
        resolutions = sorted({f"{h}x{w}" for h, w in grids.values()})
        raise ValueError(
            f"{label} entry {entry!r} matches no recorded layer; resolutions here are {resolutions}, "
            f"layer names e.g. {list(grids)[:3]}"
        )
    return hits


def resolve_layers(
    store: AttentionStore,
    layers: tuple[str | int, ...] | Aggregation | None,
    *,
    latent_hw: tuple[int, int] | None = None,
) -> list[str]:
    """Layer paths a recipe uses, in the store's order: its ``layers`` less its ``skip``.

    Args:
        store: the attention store.
        layers: layer entries, or a whole ``Aggregation`` (then ``skip`` and ``applies_to`` count too).
        latent_hw: the run's latent (height, width), needed by ``"latent/N"`` entries.

    Raises ``ValueError`` naming the entry and the choices, or (for a recipe written for one family of
    denoisers) naming the family this store's layers belong to.
    """
    if not store.probs:
        raise ValueError("the run's attention store holds no layers (was attention recorded?)")
    agg = layers if isinstance(layers, Aggregation) else None
    entries = agg.layers if agg is not None else layers
    grids = {n: tuple(store.shapes[n]) for n in store.probs}
    if agg is not None and agg.applies_to is not None:
        _check_family(agg, list(grids))
    if entries is None:
        wanted = set(grids)
    else:
        entries = (entries,) if isinstance(entries, (str, int)) else entries
        wanted = set()
        for entry in entries:
            wanted |= _matches(entry, grids, latent_hw, strict=True, label="layers")
    for entry in agg.skip if agg is not None else ():
        wanted -= _matches(entry, grids, latent_hw, strict=False, label="skip")
    chosen = [n for n in grids if n in wanted]
    if not chosen:
        raise ValueError(
            f"the recipe {agg.name if agg else 'custom'!r} leaves no recorded layer "
            f"(layers {entries}, skip {agg.skip if agg else ()}); recorded layers e.g. {list(grids)[:3]}"
        )
    return chosen


def _check_family(agg: Aggregation, names: list[str]) -> None:
    family = layer_family(names)
    if family is None or family == agg.applies_to:
        return
    source = SOURCES.get(agg.name.rstrip("*"), "code written for another family of denoisers")
    if agg.applies_to == "unet":
        raise ValueError(
            f"the {agg.name!r} preset follows {source}, which reads a UNet's cross-attention "
            f"(down_blocks/mid_block/up_blocks ...attn2); this run's layers are a transformer's joint "
            f"attention (transformer_blocks.N.attn, single_transformer_blocks.N.attn: SD3/Flux), e.g. "
            f"{names[:2]}. Use 'dit-word-share', 'amd' or 'all-mean'"
        )
    raise ValueError(
        f"the {agg.name!r} preset is for a transformer's joint attention (transformer_blocks.N.attn: "
        f"SD3/Flux); this run's layers are a UNet's cross-attention (down_blocks/mid_block/up_blocks "
        f"...attn2), e.g. {names[:2]}. Use 'daam', 'p2p', 'amd' or 'all-mean'"
    )


def head_units(
    store: AttentionStore, layer: str, p: torch.Tensor, heads: str | tuple[int, ...]
) -> tuple[torch.Tensor, float, int]:
    """A layer's heads as units to sum, the factor to apply after summing, and the heads they stand for.

    The layer's head reduction is ``scale * units.sum(dim=1)``; ``count`` is its weight in a mean over
    layers (the layer's head count for ``heads="pool"``, else 1). Keeping units apart until after
    upsampling lets overshoot be clipped per head, as DAAM does.

    Args:
        p: (steps, heads | 1, queries, tokens) as stored.

    Returns:
        (units (steps, U, queries, tokens), scale, count).

    Raises ``ValueError`` where the store cannot give the reduction exactly: head indices or a sum
    over heads from a store that averaged heads and does not know the layer's head count.
    """
    known = store.head_counts.get(layer)
    if store.heads == "all":
        n = p.shape[1]
        if known is not None and known != n:
            raise ValueError(f"layer {layer} holds {n} heads but the store says it has {known}")
        if isinstance(heads, tuple):
            bad = [h for h in heads if h >= n]
            if bad:
                raise ValueError(f"heads {bad} out of range for layer {layer} with {n} heads (0..{n - 1})")
            return p[:, list(heads)], 1.0, 1
        if heads == "mean":
            return p, 1.0 / n, 1
        return p, 1.0, (n if heads == "pool" else 1)
    if isinstance(heads, tuple):
        raise ValueError(
            f"heads={list(heads)} needs attention recorded per head (RecordingPolicy(heads='all')); "
            "this run averaged heads while recording: use heads='mean'"
        )
    if heads == "mean":
        return p, 1.0, 1
    if known is None:
        raise ValueError(
            f"heads={heads!r} needs the sum over layer {layer}'s heads, which is its recorded head mean "
            "times its head count; this run averaged heads while recording and does not store the head "
            "counts (saved before they were kept). Use heads='mean', or record again (a new run stores "
            "them), or record with RecordingPolicy(heads='all')"
        )
    return p, float(known), (known if heads == "pool" else 1)


def _share(values: torch.Tensor, text_positions: list[int] | None) -> torch.Tensor:
    """(..., tokens) -> each position divided by the text positions' total at that pixel."""
    if not text_positions:
        raise ValueError("per_map='share' needs the prompt's text positions (it has no words)")
    return values / values[..., text_positions].sum(dim=-1, keepdim=True).clamp_min(1e-12)


def layer_values(
    store: AttentionStore,
    layer: str,
    rows: list[int],
    agg: Aggregation,
    text_positions: list[int] | None = None,
) -> tuple[torch.Tensor, int]:
    """One layer's maps on its own grid with heads reduced (and ``per_map`` applied), steps kept apart.

    Returns:
        ((steps, queries, tokens) float32, count: the layer's weight in a mean over layers).
    """
    units, scale, count = head_units(store, layer, store.probs[layer][rows].float(), agg.heads)
    values = units.sum(dim=1) * scale  # (steps, queries, tokens)
    if agg.per_map == "share":
        values = _share(values, text_positions)
    return values, count


def layer_grids(
    store: AttentionStore,
    agg: Aggregation,
    size: tuple[int, int] | str,
    *,
    latent_hw: tuple[int, int] | None = None,
    text_positions: list[int] | None = None,
) -> tuple[torch.Tensor, list[str], list[int]]:
    """Aggregate the store into one (tokens, H, W) float32 map per text position, unnormalized.

    Per layer: heads into units (``head_units``; ``per_map`` applied per step), steps reduced on the
    layer's own grid (``store.shapes[layer]``, row-major queries), each unit upsampled to ``size`` and
    clipped at 0 (bicubic can overshoot; per head where the store keeps heads and the upsampling is
    bicubic), units summed; then layers combined (a mean divides by the layers' summed ``count``).

    Args:
        size: (H, W), or ``"largest"``: the largest grid among the layers used.
        latent_hw: the run's latent size, for ``"latent/N"`` layer entries.
        text_positions: the prompt's text positions, for ``per_map="share"``.

    Returns:
        (maps, layers used, step indices used).
    """
    rows = resolve_steps(store, agg.steps)
    layers = resolve_layers(store, agg, latent_hw=latent_hw)
    if size == "largest":
        size = max((tuple(store.shapes[n]) for n in layers), key=lambda g: g[0] * g[1])
    total, weight = None, 0
    for name in layers:
        units, scale, count = head_units(store, name, store.probs[name][rows].float(), agg.heads)
        if agg.per_map == "share":
            units = _share(units.sum(dim=1, keepdim=True) * scale, text_positions)
            scale = 1.0
        if agg.upsample != "bicubic":  # nearest and bilinear keep maps >= 0: sum heads on the small grid
            units = units.sum(dim=1, keepdim=True)
        u = units.mean(dim=0) if agg.step_reduce == "mean" else units.sum(dim=0)  # (U, queries, tokens)
        h, w = store.shapes[name]
        grid = u.transpose(1, 2).reshape(u.shape[0], u.shape[2], h, w)  # (U, tokens, rows, cols)
        up = upsample(grid, tuple(size), agg.upsample).clamp_min(0).sum(dim=0) * scale  # (tokens, H, W)
        total = up if total is None else total + up
        weight += count
    assert total is not None
    if agg.layer_reduce == "mean":
        total = total / weight
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
