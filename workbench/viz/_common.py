"""Shared bits of the figure builders: titles carrying the recipe, image conversion."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def as_image(image) -> np.ndarray:
    """PIL image, (H, W, 3) array or a Run -> (H, W, 3) uint8."""
    if hasattr(image, "image") and hasattr(image, "config"):  # a Run
        if image.image is None:
            raise ValueError("the run has no final image (it was interrupted)")
        image = image.image
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise TypeError(f"image must be uint8 RGB, got {arr.dtype}")
    return arr


def titled(fig: go.Figure, title: str, subtitle: str | None = None) -> go.Figure:
    """Set a title with the aggregation (or other provenance) as a smaller second line."""
    text = title if not subtitle else f"{title}<br><sup>{subtitle}</sup>"
    fig.update_layout(title={"text": text})
    return fig


def grid(fig: go.Figure | None, rows: int, cols: int, titles: list[str] | None = None, **kwargs) -> go.Figure:
    """The caller's figure, or a new subplot grid of ``rows`` × ``cols``."""
    if fig is not None:
        if not isinstance(fig, go.Figure):
            raise TypeError(f"fig must be a plotly go.Figure, got {type(fig).__name__}")
        return fig
    return make_subplots(rows=rows, cols=cols, subplot_titles=titles, **kwargs)


def hide_image_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)


def image_axes(fig: go.Figure) -> None:
    """Square pixels and row 0 at the top, in every subplot (each y axis anchored to its own x axis)."""
    for key in list(fig.layout):
        if key.startswith("yaxis"):
            fig.layout[key].update(
                autorange="reversed", scaleanchor="x" + key[len("yaxis") :], constrain="domain"
            )
