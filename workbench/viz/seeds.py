"""Figures of seed studies: the grid of images, trajectory distances, the variance split."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.analysis.seeds import SeedGrid

from ._common import as_image, grid, hide_image_axes, titled


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
    titles = [f"seed {sd}" if i == 0 else "" for i in range(p) for sd in seed_grid.seeds]
    fig = grid(fig, p, s, titles, horizontal_spacing=0.01, vertical_spacing=0.04)
    for i, row in enumerate(seed_grid.runs):
        for j, run in enumerate(row):
            fig.add_trace(
                go.Image(z=as_image(run), name=f"{run.prompt} | seed {run.seed}"), row=i + 1, col=j + 1
            )
        fig.update_yaxes(title_text=seed_grid.prompts[i], row=i + 1, col=1)
    hide_image_axes(fig)
    return titled(fig, "Prompts × seeds", "rows: prompts; columns: seeds")


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
    fig = fig if fig is not None else go.Figure()
    for (pa, pb), g in distances.groupby(["prompt_a", "prompt_b"], sort=False):
        stats = g.groupby("step").x0_latent_rms.agg(["mean", "min", "max"])
        name = pa if pa == pb else f"{pa} vs {pb}"
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
    fig.update_yaxes(title_text="x0 RMS between runs (latent units)")
    return titled(
        fig, "Distance between trajectories of different seeds", "mean over pairs; bars: min to max"
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
    fig = fig if fig is not None else go.Figure()
    for comp in ("prompt", "seed", "interaction"):
        part = df[df.component == comp]
        x = part[key].tolist() if key else [split.attrs.get("what", "values")]
        fig.add_trace(go.Bar(x=x, y=part.share.tolist(), name=comp))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="share of total variance (fraction)", range=[0, 1])
    fig.update_xaxes(title_text={"step": "denoising step (index)", "word": "word", None: ""}[key])
    sub = "two-way split without replication: prompt + seed main effects, interaction = the rest"
    if "aggregation" in split.attrs:
        sub += f" | maps: {split.attrs['aggregation']}"
    return titled(fig, "How much is seed, how much is prompt", sub)
