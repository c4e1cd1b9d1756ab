"""Figures of how the image forms: a filmstrip with a step slider, change curves."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.analysis.trajectory import Filmstrip

from ._common import hide_image_axes, titled


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
    if fig is None:
        fig = make_subplots(rows=1, cols=2, subplot_titles=["predicted clean image (x0)", "current latent"])
    fig.add_trace(go.Image(z=strip.x0[0], name="x0"), row=1, col=1)
    fig.add_trace(go.Image(z=strip.latent[0], name="latent"), row=1, col=2)
    names = [_frame_name(strip, k) for k in range(len(strip.steps))]
    fig.frames = [
        go.Frame(data=[go.Image(z=strip.x0[k]), go.Image(z=strip.latent[k])], traces=[0, 1], name=names[k])
        for k in range(len(names))
    ]
    steps = [
        {
            "method": "animate",
            "label": names[k],
            "args": [[names[k]], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}],
        }
        for k in range(len(names))
    ]
    fig.update_layout(sliders=[{"active": 0, "steps": steps, "currentvalue": {"prefix": "frame: "}}])
    hide_image_axes(fig)
    return titled(
        fig, "How the image forms", "frame 0: decoded initial noise; last latent frame: the final image"
    )


def change_curve_figure(curves: pd.DataFrame, *, fig: go.Figure | None = None) -> go.Figure:
    """Distance of each step's x0 (and current latent) to the final result, per step.

    Top: latent space (RMS, latent units). Bottom, when the curves have pixel columns: image space
    (RMS of [0, 1] intensities).

    Example:
        >>> change_curve_figure(change_curves(run, pipe))  # doctest: +SKIP
    """
    pixel = "x0_pixel_rms" in curves.columns
    if fig is None:
        fig = make_subplots(rows=2 if pixel else 1, cols=1, shared_xaxes=True)
    pairs = [("x0_latent_rms", "x0 (latent)", 1), ("latent_rms", "current latent (latent)", 1)]
    if pixel:
        pairs += [("x0_pixel_rms", "x0 (pixels)", 2), ("latent_pixel_rms", "current latent (pixels)", 2)]
    for col, name, row in pairs:
        fig.add_trace(
            go.Scatter(x=curves.step, y=curves[col], mode="lines+markers", name=name), row=row, col=1
        )
    fig.update_yaxes(title_text="RMS to final latent (latent units)", row=1, col=1)
    if pixel:
        fig.update_yaxes(title_text="RMS to final image ([0, 1] intensity)", row=2, col=1)
    fig.update_xaxes(title_text="denoising step (index)", row=2 if pixel else 1, col=1)
    return titled(fig, "When the image commits: distance to the final result per step")
