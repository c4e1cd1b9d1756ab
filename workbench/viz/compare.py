"""Figures comparing runs: images side by side, a word's map in two prompts, divergence per step."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.analysis.word_order import WordOrderComparison

from ._common import as_image, grid, hide_image_axes, image_axes, titled


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
    fig = grid(fig, 1, len(images), titles)
    for i, im in enumerate(images):
        fig.add_trace(go.Image(z=as_image(im), name=titles[i]), row=1, col=i + 1)
    hide_image_axes(fig)
    return titled(fig, "Final images")


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
        titles += [f"{r.label_a} in a (corr {r.map_corr:.2f}, IoU {r.map_iou:.2f})", f"{r.label_b} in b"]
    fig = grid(fig, len(rows), 2, titles)
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
                    z=z, zmin=zmin, zmax=zmax, colorscale=colorscale, showscale=k == 0 and c == 0, name=label
                ),
                row=k + 1,
                col=c + 1,
            )
    hide_image_axes(fig)
    image_axes(fig)
    sub = f"a: {cmp.prompts[0]!r} | b: {cmp.prompts[1]!r} | {cmp.aggregation.describe()}; IoU at {cmp.rule} {cmp.threshold}"
    return titled(fig, "Each word's map in both word orders", sub)


def divergence_figure(steps, *, fig: go.Figure | None = None) -> go.Figure:
    """Distance between two runs' trajectories at every step: where do they part?

    Args:
        steps: a ``WordOrderComparison`` or its ``steps`` DataFrame (or ``trajectory_divergence``'s).

    Example:
        >>> divergence_figure(cmp)  # doctest: +SKIP
    """
    sub = None
    if isinstance(steps, WordOrderComparison):
        sub = f"a: {steps.prompts[0]!r} | b: {steps.prompts[1]!r}"
        steps = steps.steps
    if not isinstance(steps, pd.DataFrame) or "x0_latent_rms" not in steps.columns:
        raise ValueError("steps must be a WordOrderComparison or a DataFrame from trajectory_divergence")
    pixel = "x0_pixel_rms" in steps.columns
    if fig is None:
        fig = make_subplots(rows=2 if pixel else 1, cols=1, shared_xaxes=True)
    fig.add_trace(
        go.Scatter(x=steps.step, y=steps.x0_latent_rms, mode="lines+markers", name="x0 (latent)"),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(x=steps.step, y=steps.latent_rms, mode="lines+markers", name="latent"), row=1, col=1
    )
    fig.update_yaxes(title_text="RMS between runs (latent units)", row=1, col=1)
    if pixel:
        fig.add_trace(
            go.Scatter(x=steps.step, y=steps.x0_pixel_rms, mode="lines+markers", name="x0 (pixels)"),
            row=2,
            col=1,
        )
        fig.update_yaxes(title_text="RMS between runs ([0, 1] intensity)", row=2, col=1)
    fig.update_xaxes(title_text="denoising step (index)", row=2 if pixel else 1, col=1)
    if sub is None and "prompts" in steps.attrs:
        sub = "a: {!r} | b: {!r}".format(*steps.attrs["prompts"])
    return titled(fig, "Divergence of the two trajectories per step", sub)


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
    fig = fig if fig is not None else go.Figure()
    fig.add_trace(go.Bar(x=x, y=df.mass_a.tolist(), name=f"a: {cmp.prompts[0]}"))
    fig.add_trace(go.Bar(x=x, y=df.mass_b.tolist(), name=f"b: {cmp.prompts[1]}"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text=title)
    fig.update_yaxes(title_text="attention mass (probability, mean over pixels)")
    return titled(fig, f"Attention mass per {by} in both word orders", cmp.aggregation.describe())
