"""Per-token and per-word heat maps and attention-mass tables from a run's attention store."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbench.core.run import Run
from workbench.core.tokens import TEXT_KINDS, word_groups

from .aggregate import (
    Aggregation,
    layer_grids,
    make_aggregation,
    normalize_maps,
    reduce_heads,
    resolve_layers,
    resolve_steps,
)


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
    """

    maps: torch.Tensor
    positions: list[int]
    tokens: list[str]
    kinds: list[str]
    word_indices: list[int]
    aggregation: Aggregation
    steps_used: list[int]
    layers_used: list[str]

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


@dataclass(frozen=True)
class WordMaps:
    """One heat map per word (its sub-word tokens summed), plus special positions when asked.

    Attributes:
        maps: (words, H, W) float32, normalized as ``aggregation.normalize`` says.
        words: the words as typed (``<bos>``, ``<eos>``, ``<pad>`` for special maps).
        word_indices: index of each word in the prompt (-1 for special maps).
        aggregation: the recipe used.
        labels: unique display labels (a repeated word gets ``#1``, ``#2``, ...).
        kinds: ``word`` / ``punct`` / ``bos`` / ``eos`` / ``pad``.
        positions: the encoder positions summed into each map.
        steps_used, layers_used: what the recipe resolved to on this run.
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

    def get(self, word: str, occurrence: int = 0) -> torch.Tensor:
        """The (H, W) map of ``word``."""
        return self.maps[self.index(word, occurrence)]


def _size(run: Run, size) -> tuple[int, int]:
    if size is None:
        return int(run.config.height), int(run.config.width)
    if size == "latent":
        return tuple(int(x) for x in run.latents.shape[-2:])  # type: ignore[return-value]
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(x, int) and x > 0 for x in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be None (image size), 'latent', an int or (height, width), got {size!r}")


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
    return (run.attention if branch == "cond" else run.negative_attention), table


def token_maps(
    run: Run,
    aggregation: Aggregation | str | None = None,
    *,
    steps: Iterable[int] | int | None = None,
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
        aggregation: a preset name (``"all-mean"``, ``"daam"``) or an ``Aggregation``; the keyword
            arguments override its fields.
        steps, layers, heads, normalize, upsample: see ``Aggregation``.
        size: output size: ``None`` (the image), ``"latent"``, an int or ``(height, width)``.
        branch: ``"cond"`` (the prompt) or ``"negative"`` (the unconditional branch, if recorded).

    Returns:
        ``TokenMaps`` with maps (positions, H, W).

    Example:
        >>> tm = token_maps(run, "daam")  # doctest: +SKIP
    """
    agg = make_aggregation(
        aggregation, steps=steps, layers=layers, heads=heads, normalize=normalize, upsample=upsample
    )
    store, table = _branch(run, branch)
    raw, layers_used, steps_used = layer_grids(store, agg, _size(run, size))  # (tokens, H, W)
    inside = table[table.kind != "cut"].sort_values("position")
    pos = inside.position.astype(int).tolist()
    maps = raw[pos]  # (positions, H, W)
    text = inside.kind.isin(TEXT_KINDS).to_numpy()
    text_total = raw[[p for p, t in zip(pos, text) if t]].sum(dim=0)  # (H, W)
    return TokenMaps(
        maps=normalize_maps(maps, agg.normalize, text_total),
        positions=pos,
        tokens=inside.token.tolist(),
        kinds=inside.kind.tolist(),
        word_indices=inside.word_index.astype(int).tolist(),
        aggregation=agg,
        steps_used=steps_used,
        layers_used=layers_used,
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


def unique_labels(words: list[str]) -> list[str]:
    """``["a", "red", "a"]`` -> ``["a#1", "red", "a#2"]``: repeated words numbered by occurrence."""
    counts = {w: words.count(w) for w in words}
    seen: dict[str, int] = {}
    out = []
    for w in words:
        seen[w] = seen.get(w, 0) + 1
        out.append(f"{w}#{seen[w]}" if counts[w] > 1 else w)
    return out


def word_maps(
    run: Run,
    aggregation: Aggregation | str | None = None,
    *,
    steps: Iterable[int] | int | None = None,
    layers: Iterable[str | int] | str | int | None = None,
    heads: str | Iterable[int] | None = None,
    size: int | tuple[int, int] | str | None = None,
    normalize: str | None = None,
    upsample: str | None = None,
    include_special: bool = False,
    branch: str = "cond",
) -> WordMaps:
    """Per-word heat maps: the maps of a word's sub-word tokens summed, upsampled to the image size.

    Special positions (BOS, EOS, padding summed into one ``<pad>`` map) are left out unless
    ``include_special=True``; they then follow the words. The normalization is applied to each word's
    summed map (``"share"`` divides by the sum over all word and punctuation positions).

    Args: as ``token_maps``, plus ``include_special``.

    Returns:
        ``WordMaps`` with maps (words, H, W) and the recipe used.

    Example:
        >>> wm = word_maps(run, steps=range(10, 25), layers="16x16", normalize="minmax")  # doctest: +SKIP
    """
    agg = make_aggregation(
        aggregation, steps=steps, layers=layers, heads=heads, normalize=normalize, upsample=upsample
    )
    store, table = _branch(run, branch)
    raw, layers_used, steps_used = layer_grids(store, agg, _size(run, size))  # (tokens, H, W)
    groups = word_groups(table, include_special)
    if not groups:
        raise ValueError(f"the prompt {run.prompt!r} has no words inside the encoder's context")
    summed = torch.stack([raw[g["positions"]].sum(dim=0) for g in groups])  # (words, H, W)
    text_pos = [p for g in groups if g["kind"] in TEXT_KINDS for p in g["positions"]]
    words = [g["word"] for g in groups]
    return WordMaps(
        maps=normalize_maps(summed, agg.normalize, raw[text_pos].sum(dim=0)),
        words=words,
        word_indices=[g["word_index"] for g in groups],
        aggregation=agg,
        labels=unique_labels(words),
        kinds=[g["kind"] for g in groups],
        positions=[g["positions"] for g in groups],
        steps_used=steps_used,
        layers_used=layers_used,
    )


def attention_mass(
    run: Run,
    aggregation: Aggregation | str | None = None,
    *,
    by: str = "step",
    steps: Iterable[int] | int | None = None,
    layers: Iterable[str | int] | str | int | None = None,
    heads: str | Iterable[int] | None = None,
    include_special: bool = False,
    branch: str = "cond",
) -> pd.DataFrame:
    """Attention mass per word and per step (``by="step"``), per layer (``"layer"``) or overall (``None``).

    The mass of a word at one layer and step is the attention probability its tokens receive,
    averaged over the layer's query positions (pixels of its grid) and reduced over heads by the recipe.
    Layers (for ``by="step"``) or steps (for ``by="layer"``) are then combined by the recipe's
    ``reduce``. With ``reduce="mean"`` the masses of all positions sum to 1; with ``normalize="share"``
    each word's mass is divided by the total of the word and punctuation positions. Other
    normalizations are for maps and do not change masses.

    Returns:
        Long DataFrame: ``word_index``, ``word``, ``label``, ``kind``, the ``by`` column (``step``, or
        ``layer`` and ``resolution``), ``mass``. ``df.attrs["aggregation"]`` describes the recipe.

    Example:
        >>> attention_mass(run, by="step").pivot(index="label", columns="step", values="mass")  # doctest: +SKIP
    """
    if by not in ("step", "layer", None):
        raise ValueError(f"by must be 'step', 'layer' or None, got {by!r}")
    agg = make_aggregation(aggregation, steps=steps, layers=layers, heads=heads)
    store, table = _branch(run, branch)
    rows = resolve_steps(store, agg.steps)
    names = resolve_layers(store, agg.layers)
    per_layer = []
    for name in names:
        p = reduce_heads(store, name, store.probs[name][rows].float(), agg.heads)  # (steps, queries, tokens)
        per_layer.append(p.mean(dim=1))  # (steps, tokens)
    mass = torch.stack(per_layer, dim=1)  # (steps, layers, tokens)
    red = (lambda t, d: t.mean(dim=d)) if agg.reduce == "mean" else (lambda t, d: t.sum(dim=d))
    if by == "step":
        table_mass, keys = red(mass, 1), [{"step": store.steps[r]} for r in rows]  # (steps, tokens)
    elif by == "layer":
        table_mass = red(mass, 0)  # (layers, tokens)
        keys = [{"layer": n, "resolution": "{}x{}".format(*store.shapes[n])} for n in names]
    else:
        table_mass, keys = red(red(mass, 1), 0)[None], [{}]  # (1, tokens)
    groups = word_groups(table, include_special)
    labels = unique_labels([g["word"] for g in groups])
    text_pos = [p for g in groups if g["kind"] in TEXT_KINDS for p in g["positions"]]
    text_total = table_mass[:, text_pos].sum(dim=1)  # (keys,)
    records = []
    for k, key in enumerate(keys):
        for g, label in zip(groups, labels):
            m = float(table_mass[k, g["positions"]].sum())
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
    df = pd.DataFrame.from_records(records)
    df.attrs["aggregation"] = agg.describe()
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
    steps: Iterable[int] | int | None = None,
    layers: Iterable[str | int] | str | int | None = None,
    heads: str | Iterable[int] | None = None,
    branch: str = "cond",
) -> pd.DataFrame:
    """Attention mass per encoder position (every in-context position, special ones included).

    The mass is the attention probability a position receives, averaged over each layer's queries and
    reduced over heads, steps and layers by the recipe (so with ``reduce="mean"`` it sums to 1).

    Returns:
        DataFrame: ``position``, ``token``, ``kind``, ``word_index``, ``word``, ``mass``.

    Example:
        >>> token_mass(run).plot.bar(x="position", y="mass")  # doctest: +SKIP
    """
    agg = make_aggregation(aggregation, steps=steps, layers=layers, heads=heads)
    store, table = _branch(run, branch)
    rows = resolve_steps(store, agg.steps)
    per_layer = []
    for name in resolve_layers(store, agg.layers):
        p = reduce_heads(store, name, store.probs[name][rows].float(), agg.heads)  # (steps, queries, tokens)
        per_layer.append(p.mean(dim=1))  # (steps, tokens)
    mass = torch.stack(per_layer, dim=1)  # (steps, layers, tokens)
    mass = mass.mean(dim=(0, 1)) if agg.reduce == "mean" else mass.sum(dim=(0, 1))  # (tokens,)
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
            ``"share"``, the two that compare words at a pixel).

    Returns:
        DataFrame per word: ``word_index``, ``word``, ``label``, ``kind``, ``mass``, sorted by ``mass``
        (largest first); ``attrs["aggregation"]``.

    Example:
        >>> region_mass(run, scene.objects[0].mask).head(3)  # doctest: +SKIP
    """
    agg = make_aggregation(aggregation, **overrides)
    if agg.normalize not in ("mass", "share"):
        agg = make_aggregation(agg, normalize="mass")
    wm = word_maps(run, agg, include_special=include_special)
    r = torch.as_tensor(np.asarray(region), dtype=torch.float32)
    if tuple(r.shape) != tuple(wm.maps.shape[-2:]):
        raise ValueError(f"region must be image-sized {tuple(wm.maps.shape[-2:])}, got {tuple(r.shape)}")
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
