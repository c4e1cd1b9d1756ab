"""Figures of when and where the layout is decided: word × step and word × layer grids of maps."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from workbench.analysis.layout import WordGrid

from ._common import (
    COLORBAR,
    FONT,
    LINE,
    MIN_PANEL,
    colorbar,
    edited_line,
    hide_image_axes,
    image_axes,
    lines,
    normalize_title,
    panel_size,
    plot_height,
    sized_grid,
    titled,
    wrap,
)
from .steps import COMMIT_COLOR

COMMIT_NAME = "commit"  # the name of the commitment column's frames and label


def word_grid_figure(
    grid: WordGrid, *, commit_step: int | None = None, colorscale: str = "Inferno", panel: int | None = None
) -> go.Figure:
    """A word × step or word × layer grid of maps: rows are words, columns steps or layer groups.

    Every panel is drawn on one colour scale (its values normalised on their own, as the grid says);
    with ``commit_step`` (a word × step grid only) the column of that step is framed in a colour and
    labelled "commits here"; where that step is not a column, the first column after it is framed and
    its label says at which step the layout commits.

    Args:
        grid: from ``analysis.word_step_grid`` or ``analysis.word_layer_grid``.
        commit_step: the commitment step (``analysis.commit_step(analysis.change_curves(run))``).
        colorscale: the heat maps' colour scale.
        panel: px of a panel's shorter side (default and least ``MIN_PANEL``).

    Returns:
        ``go.Figure``: one ``go.Heatmap`` per panel, row by row (``data[w * columns + j]`` is word w's
        map in column j); the frames and the label are a shape / annotation named ``"commit"``.

    Example:
        >>> word_grid_figure(word_step_grid(run), commit_step=commit_step(change_curves(run)))  # doctest: +SKIP
    """
    if not isinstance(grid, WordGrid):
        raise TypeError(
            f"grid must be a WordGrid (word_step_grid / word_layer_grid), got {type(grid).__name__}"
        )
    column, note = _commit_column(grid, commit_step)
    size = panel_size(*grid.maps.shape[-2:], short=panel or MIN_PANEL)
    label = None if column is None else wrap(note, size[1], FONT)
    bottom = 10 if label is None else 14 + int(lines(label) * FONT * LINE)
    titles = [f"{w} · {c}" for w in grid.words for c in grid.columns]
    fig = sized_grid(
        len(grid.words), len(grid.columns), panel=size, titles=titles, right=COLORBAR, bottom=bottom
    )
    _panels(fig, grid, colorscale, titles)
    hide_image_axes(fig)
    image_axes(fig)
    if column is not None:
        _frame(fig, len(grid.words), column, label)
    what = "step" if grid.axis == "step" else "layer"
    sub = grid.recipe if not note else f"{grid.recipe}<br>{_summary(note, commit_step, column)}"
    return titled(fig, f"Each word's map per {what}", edited_line(sub, grid.edited), grow=True)


def _panels(fig: go.Figure, grid: WordGrid, colorscale: str, titles: list[str]) -> None:
    """One heat map per panel, all on the grid's lowest-to-highest value scale, one colour bar."""
    zmin, zmax = float(grid.maps.min()), float(grid.maps.max())
    zmax = zmax if zmax > zmin else zmin + 1.0
    bar = colorbar(normalize_title(grid.aggregation) + ", per panel", plot_height(fig))
    cols = len(grid.columns)
    for w in range(len(grid.words)):
        for j in range(cols):
            name = titles[w * cols + j]
            fig.add_trace(
                go.Heatmap(
                    z=grid.maps[w, j].numpy(),
                    zmin=zmin,
                    zmax=zmax,
                    colorscale=colorscale,
                    showscale=w == 0 and j == 0,
                    colorbar=bar,
                    name=name,
                    hovertemplate="x %{x}, y %{y}: %{z:.3g}<extra>" + name + "</extra>",
                ),
                row=w + 1,
                col=j + 1,
            )


def _commit_column(grid: WordGrid, commit_step) -> tuple[int | None, str]:
    """(0-based column to frame, its label) for ``commit_step``; (None, a note or "") when none is framed."""
    if commit_step is None:
        return None, ""
    if grid.axis != "step":
        raise ValueError("commit_step marks a step; this grid's columns are layers (use a word × step grid)")
    steps = grid.column_steps
    if isinstance(commit_step, bool) or not isinstance(commit_step, (int, np.integer)) or commit_step < 0:
        raise TypeError(f"commit_step must be a step index (an int >= 0) or None, got {commit_step!r}")
    commit = int(commit_step)
    if commit in steps:
        return steps.index(commit), "commits here"
    after = [j for j, s in enumerate(steps) if s > commit]
    if not after:
        return None, f"the layout commits at step {commit}, after the last step shown"
    return after[0], f"commits at step {commit} (not shown)"


def _summary(note: str, commit_step: int, column: int | None) -> str:
    """The subtitle's line about the commitment step (and the framed column)."""
    if column is None:
        return note
    if note == "commits here":
        return f"framed: the step the layout commits at (step {commit_step})"
    return f"framed: the first step shown after the layout commits (at step {commit_step})"


def _frame(fig: go.Figure, rows: int, column: int, label: str) -> None:
    """Frame every panel of ``column`` (0-based) and write ``label`` under the bottom one."""
    for r in range(1, rows + 1):
        fig.add_shape(
            type="rect",
            xref="x domain",
            yref="y domain",
            x0=-0.02,
            x1=1.02,
            y0=-0.02,
            y1=1.0,  # the panel's top edge: a frame above it would cross the panel's title
            line={"color": COMMIT_COLOR, "width": 3},
            name=COMMIT_NAME,
            row=r,
            col=column + 1,
        )
    fig.add_annotation(
        text=label,
        xref="x domain",
        yref="y domain",
        x=0.5,
        y=0,
        yanchor="top",
        yshift=-6,
        showarrow=False,
        font={"color": COMMIT_COLOR, "size": FONT},
        name=COMMIT_NAME,
        row=rows,
        col=column + 1,
    )
