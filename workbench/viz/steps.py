"""Figures of how the image forms: a filmstrip with a step slider, change curves."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.analysis.trajectory import Filmstrip

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


def _frame_name(strip: Filmstrip, k: int) -> str:
    return "noise" if strip.steps[k] < 0 else f"step {strip.steps[k]}"


def filmstrip_figure(strip: Filmstrip, *, fig: go.Figure | None = None) -> go.Figure:
    """Predicted clean image (x0) and current latent, side by side, with a step slider.

    The slider starts at the initial noise; its last position shows the final latent, which is the
    run's image.

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
        edited_line(
            "slide through the steps: “noise” is the decoded initial noise, the last step's latent is the final image",
            strip.edited,
        ),
        grow=ours,
    )


def change_curve_figure(curves: pd.DataFrame, *, fig: go.Figure | None = None) -> go.Figure:
    """Distance of each step's x0 (and current latent) to the final result, per step.

    Top: latent space (RMS, latent units). Bottom, when the curves have pixel columns: image space
    (RMS of [0, 1] intensities).

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
    return titled(fig, "When the image commits: distance to the final result per step", grow=ours)
