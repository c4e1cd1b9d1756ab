"""Figures comparing runs: images side by side, a word's map in two prompts, divergence per step."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.analysis.word_order import WordOrderComparison

from ._common import (
    COLORBAR,
    as_image,
    axis_title,
    colorbar,
    hide_image_axes,
    image_axes,
    normalize_title,
    own,
    panel_size,
    plot_height,
    recipe_line,
    sized_chart,
    sized_grid,
    titled,
    wrap,
)

PER_ROW = 4  # image panels per row before a new row starts


def side_by_side(images, titles: list[str] | None = None, *, fig: go.Figure | None = None) -> go.Figure:
    """Final images in one row.

    Args:
        images: a ``WordOrderComparison``, a list of Runs, or a list of PIL images / uint8 arrays.
        titles: one per image; default the runs' prompts.

    Returns:
        ``go.Figure`` with one ``go.Image`` per image, in order.

    Example:
        >>> side_by_side(compare_word_order(a, b))  # doctest: +SKIP
    """
    if isinstance(images, WordOrderComparison):
        titles = titles or list(images.prompts)
        images = [images.image_a, images.image_b]
    images = list(images)
    if not images:
        raise ValueError("side_by_side needs at least one image")
    if titles is None:
        titles = [getattr(getattr(im, "config", None), "prompt", f"image {i}") for i, im in enumerate(images)]
    if len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    arrays = [as_image(im) for im in images]
    cols = min(len(arrays), PER_ROW)
    ours = own(fig)
    if ours:
        size = panel_size(*arrays[0].shape[:2], short=224)
        fig = sized_grid(-(-len(arrays) // cols), cols, panel=size, titles=titles, hgap=24)
    for i, arr in enumerate(arrays):
        fig.add_trace(go.Image(z=arr, name=titles[i]), row=i // cols + 1, col=i % cols + 1)
    hide_image_axes(fig)
    return titled(fig, "Final images", grow=ours)


def map_pairs(
    cmp: WordOrderComparison,
    *,
    words: list[str] | None = None,
    colorscale: str = "Inferno",
    fig: go.Figure | None = None,
) -> go.Figure:
    """Each aligned word's heat map in prompt a (left) and prompt b (right), with correlation and IoU.

    Returns:
        ``go.Figure``: per word, two ``go.Heatmap`` traces (a then b) named by the word's labels.

    Example:
        >>> map_pairs(cmp, words=["circle", "square"])  # doctest: +SKIP
    """
    rows = cmp.words if words is None else cmp.words[cmp.words.word.isin([w.lower() for w in words])]
    if words is not None:
        missing = sorted({w.lower() for w in words} - set(rows.word))
        if missing:
            raise ValueError(
                f"words {missing} are not in the compared prompts; words are {sorted(set(cmp.words.word))}"
            )
    titles = []
    for r in rows.itertuples():
        titles += [f"“{r.label_a}” in a", f"“{r.label_b}” in b: corr {r.map_corr:.2f}, IoU {r.map_iou:.2f}"]
    pairs = 2 if len(rows) > 1 else 1  # word pairs per row: a, b, a, b
    ours = own(fig)
    if ours:
        size = panel_size(*cmp.maps_a.maps.shape[-2:])
        fig = sized_grid(
            -(-len(rows) // pairs), 2 * pairs, panel=size, titles=titles, right=COLORBAR, hgap=20
        )
    both = [cmp.maps_a.maps, cmp.maps_b.maps]
    zmax = float(max(m.max() for m in both))
    zmin = float(min(m.min() for m in both))
    for k, r in enumerate(rows.itertuples()):
        for c, (maps, idx, label) in enumerate(
            ((cmp.maps_a, r.index_a, r.label_a), (cmp.maps_b, r.index_b, r.label_b))
        ):
            z = maps.maps[maps.word_indices.index(int(idx))].numpy()
            fig.add_trace(
                go.Heatmap(
                    z=z,
                    zmin=zmin,
                    zmax=zmax,
                    colorscale=colorscale,
                    showscale=k == 0 and c == 0,
                    colorbar=colorbar(normalize_title(cmp.aggregation), plot_height(fig)),
                    name=label,
                ),
                row=k // pairs + 1,
                col=2 * (k % pairs) + c + 1,
            )
    hide_image_axes(fig)
    image_axes(fig)
    sub = (
        f"a: “{cmp.prompts[0]}” | b: “{cmp.prompts[1]}” | corr: correlation of the two maps; "
        f"IoU of their masks at {cmp.rule} {cmp.threshold} | {recipe_line(cmp.aggregation)}"
    )
    return titled(fig, "Each word's map in both word orders", sub, grow=ours)


def divergence_figure(steps, *, fig: go.Figure | None = None) -> go.Figure:
    """Distance between two runs' trajectories at every step: where do they part?

    Args:
        steps: a ``WordOrderComparison`` or its ``steps`` DataFrame (or ``trajectory_divergence``'s).

    Example:
        >>> divergence_figure(cmp)  # doctest: +SKIP
    """
    sub = None
    if isinstance(steps, WordOrderComparison):
        sub = f"a: “{steps.prompts[0]}” | b: “{steps.prompts[1]}”"
        steps = steps.steps
    if not isinstance(steps, pd.DataFrame) or "x0_latent_rms" not in steps.columns:
        raise ValueError("steps must be a WordOrderComparison or a DataFrame from trajectory_divergence")
    pixel = "x0_pixel_rms" in steps.columns
    row_px = 200
    ours = own(fig)
    if ours:
        fig = sized_chart(
            make_subplots(rows=2 if pixel else 1, cols=1, shared_xaxes=True, vertical_spacing=0.08),
            plot_height=(2 * row_px + 34) if pixel else row_px,
        )
    fig.add_trace(
        go.Scatter(x=steps.step, y=steps.x0_latent_rms, mode="lines+markers", name="x0 (latent)"),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(x=steps.step, y=steps.latent_rms, mode="lines+markers", name="latent"), row=1, col=1
    )
    fig.update_yaxes(title_text=axis_title("RMS between runs (latent units)", row_px), row=1, col=1)
    if pixel:
        fig.add_trace(
            go.Scatter(x=steps.step, y=steps.x0_pixel_rms, mode="lines+markers", name="x0 (pixels)"),
            row=2,
            col=1,
        )
        fig.update_yaxes(title_text=axis_title("RMS between runs ([0, 1] intensity)", row_px), row=2, col=1)
    fig.update_xaxes(title_text="denoising step (index)", row=2 if pixel else 1, col=1)
    if sub is None and "prompts" in steps.attrs:
        sub = "a: “{}” | b: “{}”".format(*steps.attrs["prompts"])
    return titled(fig, "Divergence of the two trajectories per step", sub, grow=ours)


def mass_comparison(cmp: WordOrderComparison, *, by: str = "word", fig: go.Figure | None = None) -> go.Figure:
    """Attention mass of each aligned word (``by="word"``) or encoder position (``"position"``), a vs b.

    Returns:
        ``go.Figure`` with two ``go.Bar`` traces (a, then b).

    Example:
        >>> mass_comparison(cmp, by="position")  # doctest: +SKIP
    """
    if by == "word":
        df = cmp.words
        x = [f"{w}#{o + 1}" if (df.word == w).sum() > 1 else w for w, o in zip(df.word, df.occurrence)]
        title = "x-axis: word (aligned by identity)"
    elif by == "position":
        df = cmp.positions
        x = [f"{p}: {a} | {b}" for p, a, b in zip(df.position, df.token_a, df.token_b)]
        title = "encoder position: token in a | token in b"
    else:
        raise ValueError(f"by must be 'word' or 'position', got {by!r}")
    ours = own(fig)
    if ours:
        fig = sized_chart(go.Figure(), bottom=130)
    fig.add_trace(go.Bar(x=x, y=df.mass_a.tolist(), name=wrap(f"a: {cmp.prompts[0]}", 160)))
    fig.add_trace(go.Bar(x=x, y=df.mass_b.tolist(), name=wrap(f"b: {cmp.prompts[1]}", 160)))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text=title)
    fig.update_yaxes(title_text=axis_title("attention mass (probability, mean over pixels)", 320))
    return titled(
        fig, f"Attention mass per {by} in both word orders", recipe_line(cmp.aggregation), grow=ours
    )


def block_iou_figure(table: pd.DataFrame, *, fig: go.Figure | None = None) -> go.Figure:
    """Word-map IoU per block or resolution, one bar group per model: where each model localises words.

    Args:
        table: one row per (model, layers) with ``model``, ``layers`` (a block / resolution label, in
            depth order per model), ``iou`` and ``role`` (``"colour"`` / ``"shape"``).
    """
    ours = own(fig)
    if ours:
        fig = sized_chart(go.Figure(), width=760, plot_height=300, bottom=90)
    for (model, role), g in table.groupby(["model", "role"], sort=False):
        fig.add_trace(
            go.Bar(
                x=[f"{model} · {layer}" for layer in g["layers"]],
                y=g["iou"],
                name=f"{model}: {role} words",
                offsetgroup=role,  # one slot per role: each model's bars sit under its own labels
                hovertemplate="%{x}: IoU %{y:.2f}<extra>" + f"{role} words</extra>",
            )
        )
    fig.update_layout(barmode="group", legend_orientation="h", legend_y=-0.35)
    fig.update_yaxes(range=[0, 1], title_text=axis_title("IoU with the object's mask", plot_height(fig)))
    return titled(
        fig,
        "Where each model localises words: IoU per block / resolution",
        "each bar: that group of layers' word maps alone (all steps and heads), min-max, threshold 0.5, "
        "against the generated object's segmented mask",
        grow=ours,
    )
