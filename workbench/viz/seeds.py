"""Figures of seed studies: the grid of images, trajectory distances, the variance split."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.analysis.seeds import SeedGrid

from ._common import (
    FONT,
    as_image,
    axis_title,
    own,
    panel_size,
    sized_chart,
    sized_grid,
    titled,
    wrap,
)

ROW_LABELS = 170  # px left of a seed grid for its prompts (horizontal, wrapped)


def seed_grid_figure(seed_grid: SeedGrid, *, fig: go.Figure | None = None) -> go.Figure:
    """Final images of a grid: prompts down, seeds across.

    Returns:
        ``go.Figure`` with one ``go.Image`` per run, row-major (prompt 0 seed 0, prompt 0 seed 1, ...).

    Example:
        >>> seed_grid_figure(seed_grid(pipe, prompts, seeds=[0, 1, 2]))  # doctest: +SKIP
    """
    if not isinstance(seed_grid, SeedGrid):
        raise TypeError(f"seed_grid must be a SeedGrid, got {type(seed_grid).__name__}")
    p, s = len(seed_grid.prompts), len(seed_grid.seeds)
    cells = [[as_image(run) for run in row] for row in seed_grid.runs]
    ours = own(fig)
    if ours:
        short = 144 if s <= 6 else 128
        fig = sized_grid(
            p,
            s,
            panel=panel_size(*cells[0][0].shape[:2], short=short),
            titles=[f"seed {sd}" for sd in seed_grid.seeds] + [""] * (p - 1) * s,
            left=ROW_LABELS,
            hgap=8,
        )
    for i, row in enumerate(seed_grid.runs):
        for j, run in enumerate(row):
            fig.add_trace(
                go.Image(z=cells[i][j], name=f"{run.prompt} | seed {run.seed}"), row=i + 1, col=j + 1
            )
        # The prompt, horizontal and wrapped, left of its row (a rotated axis title would be as long
        # as the prompt and run into the next row's).
        axis = fig.get_subplot(i + 1, 1).yaxis
        fig.add_annotation(
            text=wrap(seed_grid.prompts[i], ROW_LABELS - 20, FONT),
            xref="paper",
            x=0,
            xanchor="right",
            xshift=-10,
            yref="paper",
            y=sum(axis.domain) / 2,
            yanchor="middle",
            align="right",
            showarrow=False,
            font={"size": FONT},
        )
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    return titled(fig, "Prompts × seeds", "rows: prompts; columns: seeds", grow=ours)


def trajectory_distance_figure(distances: pd.DataFrame, *, fig: go.Figure | None = None) -> go.Figure:
    """Mean (and range) over pairs of the x0 distance per step, one line per prompt pair.

    Args:
        distances: from ``trajectory_distances``.

    Example:
        >>> trajectory_distance_figure(trajectory_distances(grid))  # doctest: +SKIP
    """
    need = {"step", "prompt_a", "prompt_b", "x0_latent_rms"}
    if not need <= set(distances.columns):
        raise ValueError(f"distances must come from trajectory_distances (columns {sorted(need)})")
    ours = own(fig)
    if ours:
        fig = sized_chart(go.Figure())
    for (pa, pb), g in distances.groupby(["prompt_a", "prompt_b"], sort=False):
        stats = g.groupby("step").x0_latent_rms.agg(["mean", "min", "max"])
        name = wrap(pa if pa == pb else f"{pa} vs {pb}", 170)
        fig.add_trace(
            go.Scatter(
                x=stats.index,
                y=stats["mean"],
                mode="lines+markers",
                name=name,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": stats["max"] - stats["mean"],
                    "arrayminus": stats["mean"] - stats["min"],
                },
            )
        )
    fig.update_xaxes(title_text="denoising step (index)")
    fig.update_yaxes(title_text=axis_title("x0 RMS between runs (latent units)", 320))
    return titled(
        fig,
        "Distance between trajectories of different seeds",
        "mean over pairs; bars: min to max",
        grow=ours,
    )


def variance_figure(split: pd.DataFrame, *, fig: go.Figure | None = None) -> go.Figure:
    """Stacked bars of the seed / prompt / interaction shares.

    Args:
        split: ``variance_split`` / ``image_variance`` (one bar), or ``step_variance`` (a bar per step)
            or ``map_variance`` (a bar per word).

    Example:
        >>> variance_figure(step_variance(grid))  # doctest: +SKIP
    """
    df = split.reset_index() if "component" not in split.columns else split
    key = "step" if "step" in df.columns else "word" if "word" in df.columns else None
    df = df[df.component != "total"]
    ours = own(fig)
    if ours:
        fig = sized_chart(go.Figure(), width=640 if key else 480)
    for comp in ("prompt", "seed", "interaction"):
        part = df[df.component == comp]
        x = part[key].tolist() if key else [split.attrs.get("what", "values")]
        fig.add_trace(go.Bar(x=x, y=part.share.tolist(), name=comp))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text=axis_title("share of total variance (fraction)", 320), range=[0, 1])
    fig.update_xaxes(title_text={"step": "denoising step (index)", "word": "word", None: ""}[key])
    sub = "two-way split without replication: prompt + seed main effects, interaction = the rest"
    if "aggregation" in split.attrs:
        sub += f" | maps: {split.attrs['aggregation']}"
    return titled(fig, "How much is seed, how much is prompt", sub, grow=ours)
