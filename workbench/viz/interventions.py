"""The causal word-order lab's curves: one panel per curve, the mean over (pair, seed) units with its
bootstrap interval, y a fraction of images."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._common import FONT, axis_title, titled, wrap

PANEL_W, PANEL_H = 280, 220  # px of one curve's plot area

TITLES = {
    "inject-step": ("swap's object-word attention injected from step k", "k (first injected step)"),
    "inject-layers": ("injected at every step, into one resolution / block", "where injected"),
    "switch": ("prompt switched to the swap from step k", "k (first step on the swap)"),
    "ablate": ("first object's colour word ablated from step k", "k (first ablated step)"),
}
Y_TITLES = {
    "inject-step": "placed as the swap says",
    "inject-layers": "placed as the swap says",
    "switch": "placed as the swap says",
    "ablate": "object keeps its colour",
}


def lab_curves_figure(summary: pd.DataFrame, *, judge: str, units: int | None = None) -> go.Figure:
    """The lab's curves (``workbench.lab.run_lab(...).summary``), one panel per curve, two to a row.

    Args:
        summary: columns ``curve``, ``x``, ``n``, ``mean``, ``low``, ``high``.
        judge: what decided placement (said in the subtitle).
        units: how many (pair, seed) units each point averages (said in the subtitle).
    """
    if not {"curve", "x", "mean", "low", "high"} <= set(summary.columns):
        raise ValueError("summary must come from workbench.lab.run_lab(...).summary")
    curves = list(dict.fromkeys(summary.curve)) or ["inject-step"]
    cols = min(2, len(curves))
    rows = -(-len(curves) // cols)
    titles = [wrap(TITLES.get(c, (c,))[0], PANEL_W - 10) for c in curves]
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.2, vertical_spacing=0.5 / rows
    )
    for i, curve in enumerate(curves):
        _panel(fig, summary[summary.curve == curve], curve, row=i // cols + 1, col=i % cols + 1)
    fig.update_annotations(font_size=FONT)
    fig.update_layout(
        width=760, height=rows * (PANEL_H + 120) + 40, margin={"t": 60, "l": 70, "r": 20, "b": 60}
    )
    n = f"{units} (pair, seed) units per point; " if units else ""
    return titled(
        fig,
        "Does attention cause the layout? (causal word-order lab)",
        f"placement judged by {judge}; {n}bars: 95% bootstrap interval",
        grow=True,
    )


def _panel(fig: go.Figure, g: pd.DataFrame, curve: str, *, row: int, col: int) -> None:
    """One curve: the mean per x with its interval as error bars."""
    categorical = curve == "inject-layers"
    x = [str(v) for v in g.x] if categorical else [int(v) for v in g.x]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=g["mean"].tolist(),
            mode="markers" if categorical else "lines+markers",
            name=curve,
            showlegend=False,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (g["high"] - g["mean"]).tolist(),
                "arrayminus": (g["mean"] - g["low"]).tolist(),
            },
        ),
        row=row,
        col=col,
    )
    fig.update_xaxes(
        title_text=axis_title(TITLES.get(curve, (curve, "x"))[1], PANEL_W),
        type="category" if categorical else "linear",
        row=row,
        col=col,
    )
    fig.update_yaxes(
        title_text=axis_title(f"{Y_TITLES.get(curve, 'fraction')} (fraction)", PANEL_H),
        range=[-0.05, 1.05],
        row=row,
        col=col,
    )
