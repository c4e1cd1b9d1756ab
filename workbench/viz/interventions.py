"""The causal word-order lab's curves: one panel per curve, the mean over (pair, seed) units with its
bootstrap interval, y a fraction of images."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._common import titled

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
    """The lab's curves (``workbench.lab.run_lab(...).summary``), one panel per curve.

    Args:
        summary: columns ``curve``, ``x``, ``n``, ``mean``, ``low``, ``high``.
        judge: what decided placement (said in the subtitle).
        units: how many (pair, seed) units each point averages (said in the subtitle).
    """
    if not {"curve", "x", "mean", "low", "high"} <= set(summary.columns):
        raise ValueError("summary must come from workbench.lab.run_lab(...).summary")
    curves = list(dict.fromkeys(summary.curve))
    fig = make_subplots(
        rows=1,
        cols=max(len(curves), 1),
        subplot_titles=[TITLES.get(c, (c,))[0] for c in curves],
        horizontal_spacing=0.08,
    )
    for i, curve in enumerate(curves, start=1):
        g = summary[summary.curve == curve]
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
            row=1,
            col=i,
        )
        fig.update_xaxes(
            title_text=TITLES.get(curve, (curve, "x"))[1],
            row=1,
            col=i,
            type="category" if categorical else "linear",
        )
        fig.update_yaxes(
            title_text=f"{Y_TITLES.get(curve, 'fraction')} (fraction)", range=[-0.05, 1.05], row=1, col=i
        )
    fig.update_annotations(font_size=12)
    fig.update_layout(width=max(360 * len(curves), 420), height=420, margin={"t": 60})
    n = f"{units} (pair, seed) units per point; " if units else ""
    return titled(
        fig,
        "Does attention cause the layout? (causal word-order lab)",
        f"placement judged by {judge}; {n}bars: 95% bootstrap interval",
        grow=True,
    )
