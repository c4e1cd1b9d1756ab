"""Figures of a sweep's analyses (``analysis.sweeps``): variance split and word-order effects with their
bootstrap intervals, and contact sheets of the index's thumbnails (one per settings group).

Example:
    sweep_variance_figure(sweep_variance(index))
    word_order_distance_figure(word_order_distances(index))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from workbench.analysis.sweeps import COMPONENTS, SETTINGS, done_runs, settings_label, thumbnails

from ._common import titled


def _label(row) -> str:
    return settings_label({k: _plain(row[k]) for k in SETTINGS})


def _plain(value):
    """Whole floats as ints (sizes read back from parquet), missing values as None."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


def _errors(df: pd.DataFrame, value: str) -> dict:
    return {
        "type": "data",
        "symmetric": False,
        "array": (df.ci_high - df[value]).clip(lower=0).tolist(),
        "arrayminus": (df[value] - df.ci_low).clip(lower=0).tolist(),
    }


def _interval_note(df: pd.DataFrame) -> str:
    level, n = df.attrs.get("level", 0.95), df.attrs.get("n_boot", "?")
    return f"bars: {level:.0%} bootstrap interval over seeds ({n} draws)"


def sweep_variance_figure(split: pd.DataFrame, *, fig: go.Figure | None = None) -> go.Figure:
    """Share of prompt, seed and interaction, one bar group per settings group, with intervals.

    Args:
        split: from ``analysis.sweeps.sweep_variance``.

    Example:
        >>> sweep_variance_figure(sweep_variance(index))  # doctest: +SKIP
    """
    if not {"component", "share", "ci_low", "ci_high"} <= set(split.columns):
        raise ValueError("split must come from analysis.sweeps.sweep_variance")
    fig = fig if fig is not None else go.Figure()
    for _, g in split.groupby(SETTINGS, sort=False, dropna=False):
        g = g.set_index("component").loc[list(COMPONENTS)].reset_index()
        first = g.iloc[0]
        name = f"{_label(first)} ({first.n_prompts} prompts × {first.n_seeds} seeds)"
        fig.add_trace(
            go.Bar(x=g.component.tolist(), y=g.share.tolist(), name=name, error_y=_errors(g, "share"))
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="share of total variance (fraction)", range=[0, 1])
    fig.update_xaxes(title_text="component")
    what = split.attrs.get("what", "final images")
    return titled(
        fig, "How much is seed, how much is prompt (whole sweep)", f"{what}; {_interval_note(split)}"
    )


def word_order_distance_figure(distances: pd.DataFrame, *, fig: go.Figure | None = None) -> go.Figure:
    """Per word order: mean image distance from the reference order (same seed), with intervals, beside
    the distance between two seeds of the reference.

    Args:
        distances: from ``analysis.sweeps.word_order_distances``.
    """
    if not {"order", "pixel_rms", "seed_pixel_rms"} <= set(distances.columns):
        raise ValueError("distances must come from analysis.sweeps.word_order_distances")
    fig = fig if fig is not None else go.Figure()
    for _, g in distances.groupby(SETTINGS, sort=False, dropna=False):
        label = _label(g.iloc[0])
        x = [f"{o}<br><sub>vs {r}</sub>" for o, r in zip(g.order, g.reference)]
        fig.add_trace(
            go.Bar(x=x, y=g.pixel_rms.tolist(), name=f"word order · {label}", error_y=_errors(g, "pixel_rms"))
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=g.seed_pixel_rms.tolist(),
                mode="markers",
                marker_symbol="line-ew-open",
                marker_size=30,
                name=f"another seed · {label}",
            )
        )
    fig.update_yaxes(title_text="RMS difference of final images ([0, 1] intensity)", rangemode="tozero")
    fig.update_xaxes(title_text="word order")
    sub = f"{distances.attrs.get('what', 'final images')}; {_interval_note(distances)}; markers: two seeds of the reference"
    return titled(fig, "How far a word order moves the image", sub)


def word_order_effect_figure(effects: pd.DataFrame, *, fig: go.Figure | None = None) -> go.Figure:
    """Per word: attention mass in each order minus in the reference order, mean over seeds, with intervals.

    Args:
        effects: from ``analysis.sweeps.word_order_effects``.
    """
    if not {"word", "occurrence", "mass_diff"} <= set(effects.columns):
        raise ValueError("effects must come from analysis.sweeps.word_order_effects")
    fig = fig if fig is not None else go.Figure()
    several = effects[SETTINGS].drop_duplicates().shape[0] > 1
    for _, g in effects.groupby([*SETTINGS, "order"], sort=False, dropna=False):
        first = g.iloc[0]
        words = [w if k == 0 else f"{w} ({k + 1})" for w, k in zip(g.word, g.occurrence)]
        name = f"{first.order}" + (f" · {_label(first)}" if several else "")
        fig.add_trace(go.Bar(x=words, y=g.mass_diff.tolist(), name=name, error_y=_errors(g, "mass_diff")))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="attention mass: order − reference (fraction)")
    fig.update_xaxes(title_text="word")
    sub = f"maps: {effects.attrs.get('aggregation', 'all-mean')}; {_interval_note(effects)}"
    return titled(fig, "How each word's attention moves with word order", sub)


@dataclass(frozen=True)
class ContactSheet:
    """One settings group's final images (the index's thumbnails): prompts down, seeds across.

    Attributes:
        settings: the group's ``SETTINGS`` values.
        label: the settings in words (``settings_label``).
        prompts: the rows shown, in the sweep's prompt order (at most ``max_prompts``).
        seeds: the columns shown, ascending (at most ``max_seeds``).
        cells: (prompt, seed) -> the thumbnail, (size, size, 3) uint8; None where that run is not done.
        image: the sheet as one picture: each cell ``scale`` times the thumbnail's size, ``gap`` white
            pixels between cells and around them, grey where a run is not done.
        n_prompts, n_seeds: how many prompts and seeds the group has (more than shown when cut).
    """

    settings: dict
    label: str
    prompts: list[str]
    seeds: list[int]
    cells: dict
    image: Image.Image
    n_prompts: int
    n_seeds: int


def _sheet_image(
    sheet_cells: dict, prompts: list, seeds: list, side: int, scale: int, gap: int
) -> Image.Image:
    """The cells drawn on white, ``gap`` pixels apart; a missing cell is grey."""
    size = side * scale
    sheet = Image.new("RGB", (len(seeds) * (size + gap) + gap, len(prompts) * (size + gap) + gap), "white")
    for i, p in enumerate(prompts):
        for j, s in enumerate(seeds):
            t = sheet_cells.get((p, s))
            tile = (
                Image.fromarray(t).resize((size, size), Image.NEAREST)
                if t is not None
                else Image.new("RGB", (size, size), (128, 128, 128))
            )
            sheet.paste(tile, (gap + j * (size + gap), gap + i * (size + gap)))
    return sheet


def _group_sheet(g: pd.DataFrame, max_prompts: int, max_seeds: int, scale: int, gap: int) -> ContactSheet:
    """The contact sheet of one settings group's finished runs."""
    settings = {k: _plain(g.iloc[0][k]) for k in SETTINGS}
    prompts = list(dict.fromkeys(g.sort_values("prompt_index", kind="stable").prompt))
    seeds = sorted({int(s) for s in g.seed})
    thumbs = (thumbnails(g) * 255).round().astype(np.uint8)  # (runs, size, size, 3)
    every = {(p, int(s)): t for p, s, t in zip(g.prompt, g.seed, thumbs)}
    shown_p, shown_s = prompts[:max_prompts], seeds[:max_seeds]
    cells = {(p, s): every.get((p, s)) for p in shown_p for s in shown_s}
    return ContactSheet(
        settings=settings,
        label=settings_label(settings),
        prompts=shown_p,
        seeds=shown_s,
        cells=cells,
        image=_sheet_image(cells, shown_p, shown_s, thumbs.shape[1], scale, gap),
        n_prompts=len(prompts),
        n_seeds=len(seeds),
    )


def contact_sheets(
    index: pd.DataFrame,
    *,
    sweep_id: str | None = None,
    max_prompts: int = 12,
    max_seeds: int = 16,
    scale: int = 4,
    gap: int = 4,
) -> list[ContactSheet]:
    """A contact sheet per settings group of the index's finished runs, in the order the groups first
    appear in the index.

    Args:
        index: a sweep's index (``workbench.sweeps.read_index``).
        sweep_id: only this sweep's runs (default every sweep in the index).
        max_prompts, max_seeds: the most rows and columns a sheet shows (the first prompts, the lowest seeds).
        scale: each thumbnail enlarged this many times (nearest neighbour) in ``image``.
        gap: white pixels between cells in ``image``.

    Raises:
        ValueError: the index holds no finished runs, or a limit is not a positive int.

    Example:
        >>> [s.label for s in contact_sheets(read_index("runs/sweep"))]  # doctest: +SKIP
    """
    for name, value in (("max_prompts", max_prompts), ("max_seeds", max_seeds), ("scale", scale)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(gap, int) or gap < 0:
        raise ValueError(f"gap must be an int of 0 or more, got {gap!r}")
    df = done_runs(index, sweep_id)
    if df.empty:
        raise ValueError("the index holds no finished runs")
    labels = df.apply(_label, axis=1)
    return [_group_sheet(g, max_prompts, max_seeds, scale, gap) for _, g in df.groupby(labels, sort=False)]


def thumbnail_sheet(
    index: pd.DataFrame,
    *,
    sweep_id: str | None = None,
    max_prompts: int = 12,
    max_seeds: int = 16,
    scale: int = 4,
) -> tuple[Image.Image, list[str], list[int]]:
    """The first settings group's contact sheet, one white pixel between cells (``contact_sheets``
    gives every group, labelled).

    Returns:
        The sheet (a PIL image: ``scale`` times the thumbnails' size, one white pixel between cells),
        its prompts (rows) and its seeds (columns).
    """
    first = contact_sheets(
        index, sweep_id=sweep_id, max_prompts=max_prompts, max_seeds=max_seeds, scale=scale, gap=1
    )[0]
    return first.image, first.prompts, first.seeds
