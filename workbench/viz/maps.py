"""Figures of heat maps: word overlays on the image, word × step and word × layer mass matrices."""

from __future__ import annotations

import math
import re

import pandas as pd
import plotly.graph_objects as go

from workbench.analysis.heatmaps import TokenMaps, WordMaps

from ._common import (
    COLORBAR,
    FONT,
    GLYPH,
    as_image,
    colorbar,
    edited_line,
    hide_image_axes,
    image_axes,
    normalize_title,
    own,
    panel_size,
    plot_height,
    recipe_line,
    sized_chart,
    sized_grid,
    titled,
)

SCALES = ("auto", "per-word", "shared")


def word_overlay(
    image,
    maps: WordMaps | TokenMaps,
    *,
    words: list[str] | None = None,
    opacity: float = 0.5,
    cols: int = 4,
    colorscale: str = "Inferno",
    scale: str = "auto",
    panel: int | None = None,
    fig: go.Figure | None = None,
) -> go.Figure:
    """The image with each word's heat map laid over it, one panel per word.

    Args:
        image: the run's image (PIL, (H, W, 3) uint8 array, or the Run itself).
        maps: from ``word_maps`` (or ``token_maps``: one panel per token) at the image's size.
        words: which words (or labels; positions for token maps) to show; default all.
        opacity: of the heat map over the image.
        cols: panels per row.
        scale: the colour scale: ``"per-word"`` (each map from 0 to its own maximum, which is written
            in its panel's title), ``"shared"`` (one scale, the shown maps' minimum to maximum, for all
            panels) or ``"auto"``: per word for unnormalised maps (``normalize="mass"``, whose ranges
            differ from word to word, tenfold after a sum over steps), shared for normalised ones.
        panel: px of a panel's shorter side (default ``PANEL``; at least ``MIN_PANEL``).
        fig: a figure to draw into (with a matching subplot grid); default a new one, sized to its grid.

    Returns:
        ``go.Figure``: per panel a ``go.Image`` trace then a ``go.Heatmap`` whose ``z`` is the map and
        whose ``zmin`` / ``zmax`` are its colour scale; one colour bar (its title says what the values
        are; per word its ticks read 0, ½ max, max); the recipe and the scale in the subtitle.

    Example:
        >>> word_overlay(run, word_maps(run, "daam"))  # doctest: +SKIP
        >>> word_overlay(run, word_maps(run, "daam"), scale="shared")  # compare words' values  # doctest: +SKIP
    """
    img = as_image(image)
    if tuple(maps.maps.shape[-2:]) != img.shape[:2]:
        raise ValueError(
            f"maps are {tuple(maps.maps.shape[-2:])} but the image is {img.shape[:2]}; "
            "make the maps at the image size (word_maps(..., size=None))"
        )
    rows_idx = [maps.index(w) for w in words] if words is not None else list(range(len(maps)))
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}")
    per_word = _per_word(maps, scale)
    ranges = _ranges(maps, rows_idx, per_word)
    cols = max(1, min(cols, len(rows_idx)))
    nrows = math.ceil(len(rows_idx) / cols)
    titles = None  # one panel: the figure's title names it
    if len(rows_idx) > 1:
        titles = [_panel_title(maps.labels[i], float(maps.maps[i].max()), per_word) for i in rows_idx]
    ours = own(fig)
    if ours:
        size = panel_size(*img.shape[:2], **({"short": panel} if panel else {}))
        fig = sized_grid(nrows, cols, panel=size, titles=titles, right=COLORBAR)
    bar = colorbar(normalize_title(maps.aggregation), plot_height(fig))
    if per_word and len(rows_idx) > 1:  # every panel's own range: the bar reads in fractions of a max
        bar.update(tickvals=[0, ranges[0][1] / 2, ranges[0][1]], ticktext=["0", "½ max", "max"])
    for k, (i, (lo, hi)) in enumerate(zip(rows_idx, ranges)):
        r, c = k // cols + 1, k % cols + 1
        fig.add_trace(go.Image(z=img, name=f"image {maps.labels[i]}", hoverinfo="skip"), row=r, col=c)
        heat = _heat(maps.maps[i].numpy(), maps.labels[i], (lo, hi), opacity, colorscale)
        fig.add_trace(heat.update(showscale=k == 0, colorbar=bar), row=r, col=c)
    hide_image_axes(fig)
    image_axes(fig)
    what = "word" if isinstance(maps, WordMaps) else "token"
    recipe = f"{recipe_line(maps.aggregation)}<br>colour: {scale_line(what, per_word)}"
    sub = edited_line(recipe, getattr(maps, "edited", ""))
    if len(rows_idx) == 1:
        return titled(fig, f"Where “{maps.labels[rows_idx[0]]}” looks", sub, grow=ours)
    return titled(fig, f"Where each {what} looks", sub, grow=ours)


def _heat(z, label: str, zrange: tuple[float, float], opacity: float, colorscale: str) -> go.Heatmap:
    """One panel's heat map, coloured from ``zrange[0]`` to ``zrange[1]``, its value on hover."""
    return go.Heatmap(
        z=z,
        zmin=zrange[0],
        zmax=zrange[1],
        opacity=opacity,
        colorscale=colorscale,
        name=label,
        hovertemplate="x %{x} px, y %{y} px: %{z:.3g}<extra>" + label + "</extra>",
    )


def _per_word(maps: WordMaps | TokenMaps, scale: str) -> bool:
    """Whether ``word_overlay`` gives each map its own colour scale (``scale``: one of ``SCALES``)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if scale == "auto":
        return maps.aggregation.normalize == "mass"
    return scale == "per-word"


def _ranges(maps: WordMaps | TokenMaps, rows_idx: list[int], per_word: bool) -> list[tuple[float, float]]:
    """(zmin, zmax) of each shown map: 0 (or a lower minimum) to its own maximum, or one shared range."""
    sel = maps.maps[rows_idx]  # (shown, H, W)
    if not per_word:
        lo, hi = float(sel.min()), float(sel.max())
        return [(lo, hi if hi > lo else lo + 1.0)] * len(rows_idx)
    out = []
    for m in sel:
        lo, hi = min(0.0, float(m.min())), float(m.max())
        out.append((lo, hi if hi > lo else lo + 1.0))  # an all-zero map still gets a scale
    return out


def _panel_title(label: str, top: float, per_word: bool) -> str:
    """A panel's title: the label, and its scale's maximum when each panel has its own scale."""
    return f"{label} (max {top:.3g})" if per_word else label


def scale_line(what: str, per_word: bool) -> str:
    """The colour scale in words, for a subtitle: ``"each word on its own scale (0 to its max)"`` or
    ``"one scale for all words"``."""
    return f"each {what} on its own scale (0 to its max)" if per_word else f"one scale for all {what}s"


def _sub(maps) -> str | None:
    """The maps' recipe, under a line saying the run was edited when it was."""
    return edited_line(recipe_line(maps.aggregation), getattr(maps, "edited", ""))


def _ordered_labels(df: pd.DataFrame) -> list[str]:
    order = df.drop_duplicates("label").copy()
    order["special"] = order.word_index < 0
    return order.sort_values(["special", "word_index"]).label.tolist()


def word_step_matrix(
    mass: pd.DataFrame, *, colorscale: str = "Viridis", fig: go.Figure | None = None
) -> go.Figure:
    """Heat map of attention mass: words down, denoising steps across.

    Args:
        mass: from ``word_step_mass`` (or ``attention_mass(by="step")``).

    Returns:
        ``go.Figure`` with one ``go.Heatmap``: ``z[i][j]`` is word ``y[i]``'s mass at step ``x[j]``.

    Example:
        >>> word_step_matrix(word_step_mass(run))  # doctest: +SKIP
    """
    if "step" not in mass.columns:
        raise ValueError("mass must have a 'step' column: use word_step_mass(run)")
    labels = _ordered_labels(mass)
    table = mass.pivot(index="label", columns="step", values="mass").loc[labels]
    ours = own(fig)
    fig = _matrix_figure(fig, len(labels))
    fig.add_trace(
        go.Heatmap(
            z=table.to_numpy(),
            x=[int(s) for s in table.columns],
            y=labels,
            colorscale=colorscale,
            colorbar=colorbar(MASS_TITLE, plot_height(fig)),
            hovertemplate="%{y}, step %{x}: %{z:.3g}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="denoising step (index)")
    fig.update_yaxes(title_text="word", autorange="reversed")
    sub = edited_line(mass_line(mass.attrs.get("aggregation"), by="step"), mass.attrs.get("edited", ""))
    return titled(fig, "Attention mass per word and step", sub, grow=ours)


MASS_TITLE = "mean attention probability"

# The parts of a recipe's description (``Aggregation.describe``) that are about maps, not masses: a
# mass is a mean over a layer's own query grid, so nothing is upsampled, expanded, normalised per map
# or thresholded.
_MAP_ONLY = (
    re.compile(
        r", (nearest|bilinear|bicubic) to (the image|the latent|the largest layer grid|\d+x\d+)"
        r"(, clipped at 0 per map)?"
    ),
    re.compile(r", threshold \S+ [^,]+"),
    re.compile(r", expanded \S+ to \d+x\d+"),
)
_NORMALIZE = re.compile(r", normalize (\S+)")
_KEPT_APART = {  # the reduction a table keeps apart, one column per step or per layer
    "step": (re.compile(r": steps (.+?) \((averaged|summed)\)"), r": steps \1 (a column each)"),
    "layer": (re.compile(r", layers (.+?) \((averaged|summed)\)"), r", layers \1 (a column each)"),
}
_POOLED = re.compile(r", layers (.+?), every \(layer, head\) map (averaged|summed)")


def mass_line(description: str | None, by: str) -> str | None:
    """A recipe's description (``mass.attrs["aggregation"]``) cut to what an attention-mass table
    uses: its steps, layers and heads, the kept-apart ``by`` (``"step"`` or ``"layer"``) as one column
    each, and how a word's tokens (and repeats) are combined; a share of the words when normalised so.

    Example: ``"all-mean: steps all (a column each), layers all (averaged), heads mean, a word's
    tokens summed"``.
    """
    if not description:
        return description
    if by not in _KEPT_APART:
        raise ValueError(f"by must be 'step' or 'layer', got {by!r}")
    text = description
    for pattern in _MAP_ONLY:
        text = pattern.sub("", text)
    share = ", each word's mass as a share of the words'"
    text = _NORMALIZE.sub(lambda m: share if m.group(1) == "share" else "", text)
    if by == "layer" and _POOLED.search(text):  # a layer's own mass is its heads' mean
        return _POOLED.sub(r", layers \1 (a column each), heads averaged", text, count=1)
    pattern, replacement = _KEPT_APART[by]
    return pattern.sub(replacement, text, count=1)


def _matrix_figure(fig: go.Figure | None, rows: int, bottom: int = 60) -> go.Figure:
    """A word × something matrix: 26 px per word row (at least 200 px of plot)."""
    if fig is not None:
        return fig
    return sized_chart(go.Figure(), plot_height=max(200, 26 * rows), bottom=bottom)


def word_layer_matrix(
    mass: pd.DataFrame, *, colorscale: str = "Viridis", fig: go.Figure | None = None
) -> go.Figure:
    """Heat map of attention mass: words down, cross-attention layers across (labelled by resolution).

    Args:
        mass: from ``word_layer_mass`` (or ``attention_mass(by="layer")``).

    Returns:
        ``go.Figure`` with one ``go.Heatmap``; ``customdata`` holds the full layer paths.

    Example:
        >>> word_layer_matrix(word_layer_mass(run))  # doctest: +SKIP
    """
    if "layer" not in mass.columns:
        raise ValueError("mass must have a 'layer' column: use word_layer_mass(run)")
    labels = _ordered_labels(mass)
    layers = list(dict.fromkeys(mass.layer))
    table = mass.pivot(index="label", columns="layer", values="mass").loc[labels, layers]
    res = mass.drop_duplicates("layer").set_index("layer").resolution
    short = [
        f"{i}: {res[name]} {name.split('.')[0].replace('_blocks', '').replace('_block', '')}"
        for i, name in enumerate(layers)
    ]
    slanted = len(short) * max(len(x) for x in short) * FONT * GLYPH > 600  # plotly slants crowded names
    ours = own(fig)
    fig = _matrix_figure(fig, len(labels), bottom=150 if slanted else 70)
    fig.add_trace(
        go.Heatmap(
            z=table.to_numpy(),
            x=short,
            y=labels,
            customdata=[layers] * len(labels),
            colorscale=colorscale,
            colorbar=colorbar(MASS_TITLE, plot_height(fig)),
            hovertemplate="%{y}, %{customdata}: %{z:.3g}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="layer (execution order: grid rows×cols, block)")
    fig.update_yaxes(title_text="word", autorange="reversed")
    sub = edited_line(mass_line(mass.attrs.get("aggregation"), by="layer"), mass.attrs.get("edited", ""))
    return titled(fig, "Attention mass per word and layer", sub, grow=ours)


def dominant_word_figure(
    image, maps: WordMaps, *, opacity: float = 0.6, fig: go.Figure | None = None
) -> go.Figure:
    """Which word each pixel attends to most: a categorical map over the image.

    Returns:
        ``go.Figure`` with a ``go.Image`` and a ``go.Heatmap`` whose ``z`` is the word row per pixel
        (``dominant_words``) and whose hover names the word.

    Example:
        >>> dominant_word_figure(run, word_maps(run, normalize="share"))  # doctest: +SKIP
    """
    from workbench.analysis.heatmaps import dominant_words

    img = as_image(image)
    idx = dominant_words(maps).numpy()  # (H, W)
    if idx.shape != img.shape[:2]:
        raise ValueError(
            f"maps are {idx.shape} but the image is {img.shape[:2]}; make the maps at the image size"
        )
    n = len(maps.labels)
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    scale = []
    for i in range(n):  # a stepped colour scale: one flat colour per word row
        c = palette[i % len(palette)]
        scale += [[i / n, c], [(i + 1) / n, c]]
    labels = [[maps.labels[k] for k in row] for row in idx]
    ours = own(fig)
    if ours:
        fig = sized_grid(1, 1, panel=panel_size(*img.shape[:2], short=320), right=COLORBAR)
    fig.add_trace(go.Image(z=img, name="image", hoverinfo="skip"))
    fig.add_trace(
        go.Heatmap(
            z=idx,
            customdata=labels,
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=scale,
            opacity=opacity,
            colorbar=colorbar("word", plot_height(fig), tickvals=list(range(n)), ticktext=maps.labels),
            hovertemplate="x %{x} px, y %{y} px: %{customdata}<extra></extra>",
            name="dominant word",
        )
    )
    hide_image_axes(fig)
    image_axes(fig)
    return titled(fig, "Which word each pixel attends to most", _sub(maps), grow=ours)
