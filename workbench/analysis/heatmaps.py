"""Per-token and per-word heat maps and attention-mass tables from a run's attention store.

Maps are made at the recipe's size (``Aggregation.size``: the image, the latent, or the largest layer
grid); ``WordMaps.expand`` / ``TokenMaps.expand`` are the separate, named step that expands finished maps
to a larger size (the image, a mask), as DAAM's ``WordHeatMap.expand_as`` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from PIL import Image

from workbench.core.run import Run
from workbench.core.tokens import TEXT_KINDS, word_groups

from .aggregate import (
    Aggregation,
    layer_grids,
    layer_values,
    make_aggregation,
    normalize_maps,
    resolve_layers,
    resolve_steps,
    upsample,
)
from .grouping import map_groups, unique_labels
from .switched import in_prompt_positions

__all__ = [  # word_groups and unique_labels are imported from here by other modules
    "TEXT_KINDS",
    "TokenMaps",
    "WordMaps",
    "attention_mass",
    "branch_tokens",
    "dominant_words",
    "expand_maps",
    "map_groups",
    "prompt_words",
    "region_mass",
    "token_maps",
    "token_mass",
    "unique_labels",
    "word_groups",
    "word_layer_mass",
    "word_maps",
    "word_step_mass",
]


@dataclass(frozen=True)
class TokenMaps:
    """One heat map per text-encoder position.

    Attributes:
        maps: (positions, H, W) float32.
        positions: encoder position of each map.
        tokens: token text of each map.
        kinds: ``bos`` / ``word`` / ``punct`` / ``eos`` / ``pad``.
        word_indices: the word each token belongs to (-1 for special positions).
        aggregation: the recipe used (steps/layers resolved in ``steps_used`` / ``layers_used``).
        edited: the run's edits in words (``RunConfig.edit_label``); "" for an unedited run.
    """

    maps: torch.Tensor
    positions: list[int]
    tokens: list[str]
    kinds: list[str]
    word_indices: list[int]
    aggregation: Aggregation
    steps_used: list[int]
    layers_used: list[str]
    edited: str = ""  # what edits changed the run's attention, in words ("" for an unedited run)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def labels(self) -> list[str]:
        """Display labels ``"position:token"``, e.g. ``"3:yel"``."""
        return [f"{p}:{t}" for p, t in zip(self.positions, self.tokens)]

    def index(self, label: str | int) -> int:
        """Row of an encoder position (int) or a label like ``"3:yel"``."""
        if isinstance(label, int) and label in self.positions:
            return self.positions.index(label)
        if label in self.labels:
            return self.labels.index(label)
        raise ValueError(
            f"token {label!r} is not in these maps; positions are {self.positions}, labels {self.labels}"
        )

    def get(self, label: str | int) -> torch.Tensor:
        """The (H, W) map of an encoder position or label."""
        return self.maps[self.index(label)]

    def expand(self, size, mode: str | None = None) -> TokenMaps:
        """These maps expanded to ``size`` (see ``expand_maps``), the step named in the recipe."""
        maps, agg = expand_maps(self.maps, self.aggregation, size, mode)
        return replace(self, maps=maps, aggregation=agg)


@dataclass(frozen=True)
class WordMaps:
    """One heat map per word (its sub-word tokens summed), plus special positions when asked.

    Attributes:
        maps: (words, H, W) float32, normalized as ``aggregation.normalize`` says.
        words: the words as typed (``<bos>``, ``<eos>``, ``<pad>`` for special maps).
        word_indices: index of each word in the prompt (-1 for special maps).
        aggregation: the recipe used.
        labels: unique display labels (a repeated word gets ``#1``, ``#2``, ... unless merged).
        kinds: ``word`` / ``punct`` / ``bos`` / ``eos`` / ``pad``.
        positions: the encoder positions combined into each map (``aggregation.words``: summed or
            averaged; a position may repeat where ``repeats="token-match"`` found overlapping matches).
        steps_used, layers_used: what the recipe resolved to on this run.
        occurrences: per map, the word indices merged into it (``None``: one word per map, its
            ``word_indices`` entry); see ``Aggregation.repeats``.
        edited: the run's edits in words (``RunConfig.edit_label``); "" for an unedited run.
    """

    maps: torch.Tensor
    words: list[str]
    word_indices: list[int]
    aggregation: Aggregation
    labels: list[str]
    kinds: list[str]
    positions: list[list[int]]
    steps_used: list[int]
    layers_used: list[str]
    occurrences: list[list[int]] | None = None
    edited: str = ""  # what edits changed the run's attention, in words ("" for an unedited run)

    def __len__(self) -> int:
        return len(self.words)

    def index(self, word: str, occurrence: int = 0) -> int:
        """Row of ``word`` (case-insensitive; a label like ``a#2`` also works)."""
        if word in self.labels:
            return self.labels.index(word)
        hits = [i for i, w in enumerate(self.words) if w.lower() == word.lower()]
        if len(hits) <= occurrence:
            raise ValueError(
                f"word {word!r} (occurrence {occurrence}) is not in these maps; words are {self.labels}"
            )
        return hits[occurrence]

    def row_of(self, word_index: int) -> int:
        """Row of the map that holds the prompt's word ``word_index`` (merged maps hold several)."""
        for row, held in enumerate(self.occurrences or [[i] for i in self.word_indices]):
            if word_index in held:
                return row
        raise ValueError(
            f"word index {word_index} is not in these maps; word indices are {self.word_indices}"
        )

    def get(self, word: str, occurrence: int = 0) -> torch.Tensor:
        """The (H, W) map of ``word``."""
        return self.maps[self.index(word, occurrence)]

    def expand(self, size, mode: str | None = None) -> WordMaps:
        """These maps expanded to ``size`` (see ``expand_maps``), the step named in the recipe.

        Example:
            >>> word_maps(run, "daam").expand(run)  # DAAM's maps at the image size  # doctest: +SKIP
        """
        maps, agg = expand_maps(self.maps, self.aggregation, size, mode)
        return replace(self, maps=maps, aggregation=agg)


def expand_maps(maps: torch.Tensor, agg: Aggregation, size, mode: str | None = None):
    """Expand finished (N, h, w) maps to a larger ``size``: the recipe's separate expansion step.

    Like DAAM's ``WordHeatMap.expand_as``: an interpolation of the finished maps, nothing clipped.

    Args:
        maps: (N, h, w).
        agg: their recipe (its ``expand`` names the interpolation, else its ``upsample``).
        size: a ``Run`` (its image size), a PIL image, an int or (height, width).
        mode: the interpolation, overriding the recipe's.

    Returns:
        ((N, H, W) maps, the recipe with ``expanded_to`` set, so ``describe()`` says so).
    """
    if isinstance(size, Run):
        size = (int(size.config.height), int(size.config.width))
    elif isinstance(size, Image.Image):
        size = (int(size.size[1]), int(size.size[0]))
    elif isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not (
        isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(x, int) and x > 0 for x in size)
    ):
        raise ValueError(f"size must be a Run, an image, an int or (height, width), got {size!r}")
    size = (int(size[0]), int(size[1]))
    h, w = maps.shape[-2:]
    if size[0] < h or size[1] < w:
        raise ValueError(f"expand makes maps larger; these are {h}x{w} and {size[0]}x{size[1]} is smaller")
    mode = mode or agg.expand or agg.upsample
    out = upsample(maps[None], size, mode)[0]  # (N, H, W)
    return out, replace(agg, expand=mode, expanded_to=size)


def _size(run: Run, size) -> tuple[int, int] | str:
    """A recipe's ``size`` on this run: (height, width), or ``"largest"`` (resolved from the layers)."""
    if size == "image":
        return int(run.config.height), int(run.config.width)
    if size == "latent":
        return tuple(int(x) for x in run.latents.shape[-2:])  # type: ignore[return-value]
    return size


def _size_override(size):
    """``word_maps``' ``size`` argument as a recipe field (None keeps the recipe's own)."""
    if size is None or isinstance(size, str):
        return size
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(x, int) and x > 0 for x in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(
        f"size must be None (the recipe's), 'image', 'latent', 'largest', an int or (height, width), got {size!r}"
    )


def _latent_hw(run: Run) -> tuple[int, int]:
    return int(run.latents.shape[-2]), int(run.latents.shape[-1])


def _text_positions(table: pd.DataFrame) -> list[int]:
    inside = table[table.kind.isin(TEXT_KINDS)]
    return sorted(inside.position.astype(int).tolist())


def branch_tokens(run: Run, branch: str = "cond") -> pd.DataFrame:
    """The token table of a branch: the prompt's (``"cond"``) or the negative prompt's (``"negative"``)."""
    if branch == "cond":
        return run.tokens
    if branch == "negative":
        return run.negative_tokens
    raise ValueError(f"branch must be 'cond' or 'negative', got {branch!r}")


def _branch(run: Run, branch: str):
    table = branch_tokens(run, branch)
    if branch == "negative" and run.negative_attention is None:
        raise ValueError(
            "this run has no negative-branch attention; record with RecordingPolicy(negative=True)"
        )
    if branch == "cond":
        return in_prompt_positions(run, run.attention), table  # a switched run read by its own words
    return run.negative_attention, table


def token_maps(
    run: Run,
    aggregation: Aggregation | str | None = None,
    *,
    steps: Iterable[int] | int | str | None = None,
    layers: Iterable[str | int] | str | int | None = None,
    heads: str | Iterable[int] | None = None,
    size: int | tuple[int, int] | str | None = None,
    normalize: str | None = None,
    upsample: str | None = None,
    branch: str = "cond",
) -> TokenMaps:
    """Heat maps of every in-context position (BOS, tokens, EOS, padding), by an explicit recipe.

    Args:
        run: a recorded run.
        aggregation: a preset name (``"all-mean"``, ``"daam"``, ``"p2p"``, ``"amd"``,
            ``"dit-word-share"``) or an ``Aggregation``; the keyword arguments override its fields.
        steps, layers, heads, normalize, upsample: see ``Aggregation``.
        size: ``None`` (the recipe's own), ``"image"``, ``"latent"``, ``"largest"``, an int or
            ``(height, width)``: where the layers' maps are combined. To expand finished maps, use
            ``TokenMaps.expand``.
        branch: ``"cond"`` (the prompt) or ``"negative"`` (the unconditional branch, if recorded).

    Returns:
        ``TokenMaps`` with maps (positions, H, W).

    Example:
        >>> tm = token_maps(run, "p2p")  # doctest: +SKIP
    """
    agg = make_aggregation(
        aggregation,
        steps=steps,
        layers=layers,
        heads=heads,
        normalize=normalize,
        upsample=upsample,
        size=_size_override(size),
    )
    store, table = _branch(run, branch)
    text = _text_positions(table)
    raw, layers_used, steps_used = layer_grids(
        store, agg, _size(run, agg.size), latent_hw=_latent_hw(run), text_positions=text
    )  # (tokens, H, W)
    inside = table[table.kind != "cut"].sort_values("position")
    pos = inside.position.astype(int).tolist()
    maps = raw[pos]  # (positions, H, W)
    return TokenMaps(
        maps=normalize_maps(maps, agg.normalize, raw[text].sum(dim=0)),
        positions=pos,
        tokens=inside.token.tolist(),
        kinds=inside.kind.tolist(),
        word_indices=inside.word_index.astype(int).tolist(),
        aggregation=agg,
        steps_used=steps_used,
        layers_used=layers_used,
        edited=run.config.edit_label,
    )


def prompt_words(run: Run, branch: str = "cond") -> list[tuple[str, int]]:
    """(word as typed, word index) of every in-context word and punctuation mark, in prompt order.

    The words ``word_maps`` makes a map for (``word_groups`` without the special positions); a word
    cut off by the encoder's context is left out. ``branch="negative"`` lists the negative prompt's.

    Example:
        >>> prompt_words(run)[:3]  # doctest: +SKIP
        [('a', 0), ('red', 1), ('circle', 2)]
    """
    groups = word_groups(branch_tokens(run, branch), include_special=False)
    return [(g["word"], g["word_index"]) for g in groups]


def word_maps(
    run: Run,
    aggregation: Aggregation | str | None = None,
    *,
    steps: Iterable[int] | int | str | None = None,
    layers: Iterable[str | int] | str | int | None = None,
    heads: str | Iterable[int] | None = None,
    size: int | tuple[int, int] | str | None = None,
    normalize: str | None = None,
    upsample: str | None = None,
    repeats: str | None = None,
    words: str | None = None,
    include_special: bool = False,
    branch: str = "cond",
) -> WordMaps:
    """Per-word heat maps: the maps of a word's tokens combined, at the recipe's size.

    A word's tokens are summed or averaged (``words``); a repeated word gets one map per occurrence or
    one merged map (``repeats``; the ``"daam"`` preset merges as DAAM does). Special positions (BOS,
    EOS, padding combined into one ``<pad>`` map) are left out unless ``include_special=True``; they
    then follow the words. The normalization is applied to each word's map (``"share"`` divides by the
    sum over all word and punctuation positions).

    Args: as ``token_maps``, plus ``repeats``, ``words`` (see ``Aggregation``) and ``include_special``.

    Returns:
        ``WordMaps`` with maps (words, H, W) and the recipe used.

    Example:
        >>> wm = word_maps(run, steps=range(10, 25), layers="16x16", normalize="minmax")  # doctest: +SKIP
        >>> daam = word_maps(run, "daam").expand(run)  # DAAM's maps, then expanded to the image
    """
    agg = make_aggregation(
        aggregation,
        steps=steps,
        layers=layers,
        heads=heads,
        normalize=normalize,
        upsample=upsample,
        size=_size_override(size),
        repeats=repeats,
        words=words,
    )
    store, table = _branch(run, branch)
    text = _text_positions(table)
    raw, layers_used, steps_used = layer_grids(
        store, agg, _size(run, agg.size), latent_hw=_latent_hw(run), text_positions=text
    )  # (tokens, H, W)
    groups = map_groups(table, agg.repeats, include_special)
    if not groups:
        raise ValueError(f"the prompt {run.prompt!r} has no words inside the encoder's context")
    combine = (lambda m: m.mean(dim=0)) if agg.words == "mean" else (lambda m: m.sum(dim=0))
    combined = torch.stack([combine(raw[g["positions"]]) for g in groups])  # (words, H, W)
    names = [g["word"] for g in groups]
    merged = agg.repeats != "each"
    return WordMaps(
        maps=normalize_maps(combined, agg.normalize, raw[text].sum(dim=0)),
        words=names,
        word_indices=[g["word_index"] for g in groups],
        aggregation=agg,
        labels=unique_labels(names),
        kinds=[g["kind"] for g in groups],
        positions=[g["positions"] for g in groups],
        steps_used=steps_used,
        layers_used=layers_used,
        occurrences=[g["occurrences"] for g in groups] if merged else None,
        edited=run.config.edit_label,
    )


def _layer_masses(run: Run, agg: Aggregation, branch: str):
    """Per step and layer, the mass each position receives: (steps, layers, tokens), with the layers'
    weights (their ``count`` in a mean over layers), names, kept step rows, the store and table."""
    store, table = _branch(run, branch)
    rows = resolve_steps(store, agg.steps)
    names = resolve_layers(store, agg, latent_hw=_latent_hw(run))
    text = _text_positions(table)
    per_layer, counts = [], []
    for name in names:
        values, count = layer_values(store, name, rows, agg, text)  # (steps, queries, tokens)
        per_layer.append(values.mean(dim=1))  # (steps, tokens)
        counts.append(count)
    mass = torch.stack(per_layer, dim=1)  # (steps, layers, tokens)
    return mass, torch.tensor(counts, dtype=mass.dtype), names, rows, store, table


def _over_layers(mass: torch.Tensor, counts: torch.Tensor, agg: Aggregation) -> torch.Tensor:
    """(..., layers, tokens) -> (..., tokens) by the recipe's layer reduction."""
    total = mass.sum(dim=-2)
    return total / counts.sum() if agg.layer_reduce == "mean" else total


def _over_steps(mass: torch.Tensor, agg: Aggregation) -> torch.Tensor:
    return mass.mean(dim=0) if agg.step_reduce == "mean" else mass.sum(dim=0)


def attention_mass(
    run: Run,
    aggregation: Aggregation | str | None = None,
    *,
    by: str = "step",
    steps: Iterable[int] | int | str | None = None,
    layers: Iterable[str | int] | str | int | None = None,
    heads: str | Iterable[int] | None = None,
    include_special: bool = False,
    branch: str = "cond",
) -> pd.DataFrame:
    """Attention mass per word and per step (``by="step"``), per layer (``"layer"``) or overall (``None``).

    The mass of a word at one layer and step is the attention probability its tokens receive,
    averaged over the layer's query positions (pixels of its grid) and reduced over heads by the recipe.
    Layers (for ``by="step"``) or steps (for ``by="layer"``; a layer's mass is then its heads' mean
    under ``heads="pool"``) are combined by the recipe's ``layer_reduce`` / ``step_reduce``. A word's
    tokens and repeats are combined as in ``word_maps``. With every reduction a mean the masses of all
    positions sum to 1; with ``normalize="share"`` each word's mass is divided by the total of the word
    and punctuation positions. Other normalizations are for maps and do not change masses.

    Returns:
        Long DataFrame: ``word_index``, ``word``, ``label``, ``kind``, the ``by`` column (``step``, or
        ``layer`` and ``resolution``), ``mass``. ``df.attrs["aggregation"]`` describes the recipe.

    Example:
        >>> attention_mass(run, by="step").pivot(index="label", columns="step", values="mass")  # doctest: +SKIP
    """
    if by not in ("step", "layer", None):
        raise ValueError(f"by must be 'step', 'layer' or None, got {by!r}")
    agg = make_aggregation(aggregation, steps=steps, layers=layers, heads=heads)
    mass, counts, names, rows, store, table = _layer_masses(run, agg, branch)
    if by == "step":
        table_mass = _over_layers(mass, counts, agg)  # (steps, tokens)
        keys = [{"step": store.steps[r]} for r in rows]
    elif by == "layer":
        table_mass = _over_steps(mass, agg) / counts[:, None]  # (layers, tokens)
        keys = [{"layer": n, "resolution": "{}x{}".format(*store.shapes[n])} for n in names]
    else:
        table_mass, keys = _over_layers(_over_steps(mass, agg), counts, agg)[None], [{}]  # (1, tokens)
    groups = map_groups(table, agg.repeats, include_special)
    labels = unique_labels([g["word"] for g in groups])
    text_total = table_mass[:, _text_positions(table)].sum(dim=1)  # (keys,)
    records = []
    for k, key in enumerate(keys):
        for g, label in zip(groups, labels):
            picked = table_mass[k, g["positions"]]
            m = float(picked.mean() if agg.words == "mean" else picked.sum())
            if agg.normalize == "share":
                m = m / max(float(text_total[k]), 1e-12)
            records.append(
                {
                    "word_index": g["word_index"],
                    "word": g["word"],
                    "label": label,
                    "kind": g["kind"],
                    **key,
                    "mass": m,
                }
            )
    columns = ["word_index", "word", "label", "kind", *(keys[0] if keys else {}), "mass"]
    df = pd.DataFrame.from_records(records, columns=columns)  # the columns also for a prompt without words
    df.attrs["aggregation"] = agg.describe()
    df.attrs["edited"] = run.config.edit_label  # what edits changed the run ("" for none)
    return df


def word_step_mass(run: Run, aggregation: Aggregation | str | None = None, **kwargs) -> pd.DataFrame:
    """Word × step attention mass (long form; see ``attention_mass``).

    Example:
        >>> word_step_mass(run, layers="8x8")  # doctest: +SKIP
    """
    return attention_mass(run, aggregation, by="step", **kwargs)


def word_layer_mass(run: Run, aggregation: Aggregation | str | None = None, **kwargs) -> pd.DataFrame:
    """Word × layer attention mass (long form; see ``attention_mass``).

    Example:
        >>> word_layer_mass(run, steps=range(5))  # doctest: +SKIP
    """
    return attention_mass(run, aggregation, by="layer", **kwargs)


def token_mass(
    run: Run,
    aggregation: Aggregation | str | None = None,
    *,
    steps: Iterable[int] | int | str | None = None,
    layers: Iterable[str | int] | str | int | None = None,
    heads: str | Iterable[int] | None = None,
    branch: str = "cond",
) -> pd.DataFrame:
    """Attention mass per encoder position (every in-context position, special ones included).

    The mass is the attention probability a position receives, averaged over each layer's queries and
    reduced over heads, steps and layers by the recipe (so with every reduction a mean it sums to 1).

    Returns:
        DataFrame: ``position``, ``token``, ``kind``, ``word_index``, ``word``, ``mass``.

    Example:
        >>> token_mass(run).plot.bar(x="position", y="mass")  # doctest: +SKIP
    """
    agg = make_aggregation(aggregation, steps=steps, layers=layers, heads=heads)
    mass, counts, _, _, _, table = _layer_masses(run, agg, branch)
    mass = _over_layers(_over_steps(mass, agg), counts, agg)  # (tokens,)
    inside = table[table.kind != "cut"].sort_values("position")
    df = inside[["position", "token", "kind", "word_index", "word"]].reset_index(drop=True).copy()
    df["mass"] = mass[df.position.astype(int).tolist()].numpy()
    df.attrs["aggregation"] = agg.describe()
    return df


def dominant_words(maps: WordMaps) -> torch.Tensor:
    """For every pixel, the row of the word whose map is largest there: (H, W) long.

    The maps are compared as given, so use a normalization that is comparable across words
    (``"mass"`` or ``"share"``); after ``"minmax"`` each word is rescaled on its own.

    Example:
        >>> wm = word_maps(run, normalize="share"); wm.labels[dominant_words(wm)[10, 20]]  # doctest: +SKIP
    """
    if maps.aggregation.normalize in ("minmax", "max", "unit-sum"):
        warnings.warn(
            f"dominant_words compares maps normalized with {maps.aggregation.normalize!r} (each map on its own "
            "scale); normalize='mass' or 'share' compares attention itself",
            stacklevel=2,
        )
    return maps.maps.argmax(dim=0)  # (H, W)


def region_mass(
    run: Run,
    region,
    aggregation: Aggregation | str | None = None,
    *,
    include_special: bool = False,
    **overrides,
) -> pd.DataFrame:
    """Which words a region attends to: each word's mean attention mass over the region's pixels.

    Args:
        run: a recorded run.
        region: (H, W) mask at the image size (bool or weights in [0, 1]).
        aggregation, overrides: the recipe (its normalization is replaced by ``"mass"`` or kept when
            ``"share"``, the two that compare words at a pixel; a recipe made at another size is made
            at the image size here).

    Returns:
        DataFrame per word: ``word_index``, ``word``, ``label``, ``kind``, ``mass``, sorted by ``mass``
        (largest first); ``attrs["aggregation"]``.

    Example:
        >>> region_mass(run, scene.objects[0].mask).head(3)  # doctest: +SKIP
    """
    agg = make_aggregation(aggregation, **overrides)
    if agg.normalize not in ("mass", "share"):
        agg = make_aggregation(agg, normalize="mass")
    image = (int(run.config.height), int(run.config.width))
    r = torch.as_tensor(np.asarray(region), dtype=torch.float32)
    if tuple(r.shape) != image:
        raise ValueError(f"region must be image-sized {image}, got {tuple(r.shape)}")
    if _size(run, agg.size) != image:  # a recipe made at another size is made at the region's here
        agg = make_aggregation(agg, size="image")
    wm = word_maps(run, agg, include_special=include_special)
    if float(r.sum()) <= 0:
        raise ValueError("region is empty (all zero)")
    inside = (wm.maps * r).sum(dim=(-2, -1)) / r.sum()  # (words,)
    df = pd.DataFrame(
        {
            "word_index": wm.word_indices,
            "word": wm.words,
            "label": wm.labels,
            "kind": wm.kinds,
            "mass": inside.numpy(),
        }
    )
    df = df.sort_values("mass", ascending=False, kind="stable").reset_index(drop=True)
    df.attrs["aggregation"] = agg.describe()
    return df
