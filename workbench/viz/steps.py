"""Figures of how the image forms: a filmstrip with a step slider, change curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.analysis.trajectory import COMMIT_THRESHOLD, Filmstrip

from ._common import (
    axis_title,
    edited_line,
    hide_image_axes,
    own,
    panel_size,
    sized_chart,
    sized_grid,
    titled,
)

SLIDER = 96  # px under the images for the step slider and its value
COMMIT_COLOR = "#00b7ff"  # the commitment step's marks (a line, a frame), apart from Inferno and the curves


def _frame_name(strip: Filmstrip, k: int) -> str:
    return "noise" if strip.steps[k] < 0 else f"step {strip.steps[k]}"


def _check_commit(commit_step, steps) -> int:
    """``commit_step`` as an int among ``steps`` (the steps a figure shows); anything else raises."""
    if isinstance(commit_step, bool) or not isinstance(commit_step, (int, np.integer)):
        raise TypeError(f"commit_step must be a step index (int) or None, got {commit_step!r}")
    shown = [int(s) for s in steps if int(s) >= 0]
    if int(commit_step) not in shown:
        raise ValueError(f"commit_step {commit_step} is not a step shown here; the steps are {shown}")
    return int(commit_step)


def filmstrip_figure(
    strip: Filmstrip, *, commit_step: int | None = None, fig: go.Figure | None = None
) -> go.Figure:
    """Predicted clean image (x0) and current latent, side by side, with a step slider.

    The slider starts at the initial noise; its last position shows the final latent, which is the
    run's image. With ``commit_step`` (e.g. ``commit_step(change_curves(run))``) that step's slider
    label reads "N (commits)" and the subtitle says where the layout commits.

    Returns:
        ``go.Figure`` with two ``go.Image`` traces and one frame per slider position:
        ``fig.frames[k].data`` = (x0 frame k, latent frame k).

    Example:
        >>> filmstrip_figure(filmstrip(pipe, run))  # doctest: +SKIP
    """
    titles = ["predicted clean image (x0)", "current latent"]
    ours = own(fig)
    if ours:
        fig = sized_grid(
            1,
            2,
            panel=panel_size(*strip.x0.shape[1:3], short=240),
            titles=titles,
            hgap=24,
            bottom=SLIDER,
            left=20,
            right=20,
        )
    fig.add_trace(go.Image(z=strip.x0[0], name="x0"), row=1, col=1)
    fig.add_trace(go.Image(z=strip.latent[0], name="latent"), row=1, col=2)
    names = [_frame_name(strip, k) for k in range(len(strip.steps))]
    fig.frames = [
        go.Frame(data=[go.Image(z=strip.x0[k]), go.Image(z=strip.latent[k])], traces=[0, 1], name=names[k])
        for k in range(len(names))
    ]
    labels = ["noise" if strip.steps[k] < 0 else str(strip.steps[k]) for k in range(len(names))]
    sub = "slide through the steps: “noise” is the decoded initial noise, the last step's latent is the final image"
    if commit_step is not None:
        commit = _check_commit(commit_step, strip.steps)
        labels[strip.steps.index(commit)] = f"{commit} (commits)"
        sub += f"; the layout commits at step {commit} (slider label “{commit} (commits)”)"
    steps = [
        {
            "method": "animate",
            "label": labels[k],
            "args": [[names[k]], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}],
        }
        for k in range(len(names))
    ]
    slider = {"active": 0, "steps": steps, "currentvalue": {"prefix": "step: "}, "pad": {"t": 10}}
    # plotly writes every n-th step's label when the ticks are too close for all of them.
    fig.update_layout(sliders=[slider])
    hide_image_axes(fig)
    return titled(
        fig,
        "How the image forms",
        edited_line(sub, strip.edited),
        grow=ours,
    )


def change_curve_figure(
    curves: pd.DataFrame, *, commit_step: int | None = None, fig: go.Figure | None = None
) -> go.Figure:
    """Distance of each step's x0 (and current latent) to the final result, per step.

    Top: latent space (RMS, latent units). Bottom, when the curves have pixel columns: image space
    (RMS of [0, 1] intensities). With ``commit_step`` a dashed vertical line (shape ``name="commit"``)
    marks that step in every panel, labelled "commits (step N)" in the top one.

    Example:
        >>> change_curve_figure(change_curves(run, pipe))  # doctest: +SKIP
    """
    pixel = "x0_pixel_rms" in curves.columns
    row_px = 200
    ours = own(fig)
    if ours:
        fig = sized_chart(
            make_subplots(rows=2 if pixel else 1, cols=1, shared_xaxes=True, vertical_spacing=0.08),
            plot_height=(2 * row_px + 34) if pixel else row_px,
        )
    pairs = [("x0_latent_rms", "x0 (latent)", 1), ("latent_rms", "current latent (latent)", 1)]
    if pixel:
        pairs += [("x0_pixel_rms", "x0 (pixels)", 2), ("latent_pixel_rms", "current latent (pixels)", 2)]
    for col, name, row in pairs:
        fig.add_trace(
            go.Scatter(x=curves.step, y=curves[col], mode="lines+markers", name=name), row=row, col=1
        )
    fig.update_yaxes(title_text=axis_title("RMS to final latent (latent units)", row_px), row=1, col=1)
    if pixel:
        fig.update_yaxes(title_text=axis_title("RMS to final image ([0, 1] intensity)", row_px), row=2, col=1)
    fig.update_xaxes(title_text="denoising step (index)", row=2 if pixel else 1, col=1)
    if commit_step is not None:
        _commit_line(fig, _check_commit(commit_step, curves.step), rows=2 if pixel else 1)
    sub = edited_line(None, curves.attrs.get("edited", ""))
    return titled(fig, "When the image commits: distance to the final result per step", sub, grow=ours)


def _commit_line(fig: go.Figure, step: int, rows: int) -> None:
    """A dashed vertical line at ``step`` in each of ``rows`` panels, labelled in the top one."""
    for row in range(1, rows + 1):
        label = {"annotation_text": f"commits (step {step})", "annotation_font_color": COMMIT_COLOR}
        fig.add_vline(
            x=step,
            line={"color": COMMIT_COLOR, "dash": "dash", "width": 2},
            name="commit",
            row=row,
            col=1,
            **(label if row == 1 else {}),
        )


def filmstrip_rows_figure(
    frames: list[np.ndarray],
    steps: list[list[int]],
    titles: list[str],
    commits: list[int | None] | None = None,
) -> go.Figure:
    """Several runs' x0 filmstrips side by side: one row per run, one column per shown step.

    Args:
        frames: per run, its decoded x0 frames (k, H, W, 3) at ``steps[i]`` (all runs the same k).
        steps: per run, the step of each frame.
        titles: per run, what it is (``"run 2: a red circle · seed 0"``), shown over its first panel.
        commits: per run, its commitment step (its panel's title says "commits"), or None.
    """
    if not frames or len({len(s) for s in steps}) != 1:
        raise ValueError("every run needs the same number of frames")
    commits = commits or [None] * len(frames)
    cols = len(steps[0])
    panel_titles = [
        (f"{titles[k]}<br>" if j == 0 else "<br>") + f"step {s}" + (" (commits)" if commits[k] == s else "")
        for k in range(len(frames))
        for j, s in enumerate(steps[k])
    ]
    fig = sized_grid(
        len(frames),
        cols,
        panel=panel_size(*frames[0].shape[1:3], short=128),
        titles=panel_titles,
        hgap=12,
    )
    for k, row in enumerate(frames):
        for j, frame in enumerate(row):
            fig.add_trace(go.Image(z=frame, name=panel_titles[k * cols + j]), row=k + 1, col=j + 1)
    hide_image_axes(fig)
    sub = "predicted clean image (x0) at the same fractions of each run's schedule"
    if any(c is not None for c in commits):
        sub += f"; “commits”: the step the layout commits at (x0 within {COMMIT_THRESHOLD:g} of the noise's distance)"
    return titled(fig, "How each run's image forms", sub, grow=True)
