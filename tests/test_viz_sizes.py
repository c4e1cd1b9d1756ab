"""Figures size themselves from their grids: image panels of at least 128 px, room for every label.

Panel sizes are computed here from the layout (axis domains × plot area); the browser test measures
what Chromium draws.
"""

import math

import numpy as np
import pytest
from PIL import Image
from test_analysis_fakes import fake_run, on_bos, one_thread  # noqa: F401  (autouse fixture)
from test_analysis_word_order import word_order_pair

from workbench.analysis import Filmstrip, SeedGrid, compare_word_order, word_maps
from workbench.viz import filmstrip_figure, map_pairs, seed_grid_figure, side_by_side, word_overlay
from workbench.viz._common import AXIS_FONT, FONT, GLYPH, LINE, MIN_PANEL, MODEBAR, TITLE_FONT, wrap


def panels(fig) -> list[tuple[float, float]]:
    """(width, height) in px of every subplot that shows an image or an image-like heat map."""
    plot_w = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
    plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    out = []
    for trace in fig.data:
        if trace.type not in ("image", "heatmap"):
            continue
        xa = fig.layout["xaxis" + (trace.xaxis or "x")[1:]]
        ya = fig.layout["yaxis" + (trace.yaxis or "y")[1:]]
        out.append(((xa.domain[1] - xa.domain[0]) * plot_w, (ya.domain[1] - ya.domain[0]) * plot_h))
    return out


def image_run(h=8, w=16, **kwargs):
    """A fake run (latents 4 × 8, images 8 × 16) with a flat grey image."""
    run = fake_run(on_bos(), **kwargs)
    run.image = Image.fromarray(np.full((h, w, 3), 90, dtype=np.uint8))
    return run


def test_word_overlay_grows_with_its_words():
    run = image_run()
    wm = word_maps(run, upsample="nearest")
    one = word_overlay(run, wm, words=[wm.labels[0]])
    three = word_overlay(run, wm, cols=2)
    assert three.layout.height > one.layout.height  # two rows of panels against one
    for fig in (one, three):
        sizes = panels(fig)
        assert sizes and min(min(s) for s in sizes) >= MIN_PANEL - 1
        for w, h in sizes:  # square pixels: the panel has the image's aspect (8 × 16)
            assert w / h == pytest.approx(2, rel=0.02)
    big = word_overlay(run, wm, words=[wm.labels[0]], panel=320)
    assert min(panels(big)[0]) == pytest.approx(320, abs=1)


def test_map_pairs_two_pairs_a_row_and_titles_fit():
    a, b = word_order_pair()
    cmp = compare_word_order(a, b, upsample="nearest")
    fig = map_pairs(cmp)
    rows = math.ceil(len(cmp.words) / 2)
    assert len(panels(fig)) == 2 * len(cmp.words)
    assert min(min(s) for s in panels(fig)) >= MIN_PANEL - 1
    width = panels(fig)[0][0]
    for note in fig.layout.annotations:  # every subplot title wrapped to its panel's width
        assert all(len(line) * FONT * GLYPH <= width + 1 for line in note.text.split("<br>"))
    assert fig.layout.height > rows * MIN_PANEL


def test_seed_grid_and_side_by_side_panels():
    runs = [
        [image_run(prompt=p, seed=s) for s in range(5)] for p in ("a red circle left of a blue square", "b")
    ]
    fig = seed_grid_figure(
        SeedGrid(prompts=["a red circle left of a blue square", "b"], seeds=list(range(5)), runs=runs)
    )
    assert min(min(s) for s in panels(fig)) >= MIN_PANEL - 1
    assert fig.layout.margin.l >= 150  # room for the prompts, written left of their rows
    side = side_by_side(
        [r for r in runs[0]], titles=[f"a long title number {i} for the image" for i in range(5)]
    )
    assert min(min(s) for s in panels(side)) >= MIN_PANEL - 1
    assert side.data[4].xaxis == "x5" and side.layout.xaxis5.anchor == "y5"  # a second row after four


def test_filmstrip_panels_and_titles():
    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    strip = Filmstrip(
        x0=frames, latent=frames.copy(), steps=[-1, 0, 1, 2], timesteps=[float("nan"), 3.0, 2.0, 1.0]
    )
    fig = filmstrip_figure(strip)
    assert min(min(s) for s in panels(fig)) >= 200
    assert fig.layout.sliders[0].active == 0 and [s.label for s in fig.layout.sliders[0].steps][:2] == [
        "noise",
        "0",
    ]
    assert "noise" in fig.layout.title.text


def test_wrap_breaks_long_text_and_keeps_breaks():
    text = wrap("a red circle left of a blue square", 100)
    assert "<br>" in text and text.replace("<br>", " ") == "a red circle left of a blue square"
    assert all(len(line) * FONT * GLYPH <= 100 for line in text.split("<br>"))
    assert wrap("one<br>two", 500) == "one<br>two"


def test_wrap_never_breaks_inside_brackets_that_fit_a_line():
    title = "RMS to final image ([0, 1] intensity)"
    for width in range(90, 400, 10):  # from 10 characters a line: no word is longer than a line
        lines = wrap(title, width, AXIS_FONT).split("<br>")
        assert " ".join(lines) == title
        assert any("[0, 1]" in line for line in lines)  # the brackets are never split
        chars = int(width / (AXIS_FONT * GLYPH))
        if chars >= len("([0, 1] intensity)"):
            assert any(line.endswith("([0, 1] intensity)") for line in lines)
    assert wrap("a b (c d)", 60, FONT) == "a b<br>(c d)"  # 8 characters a line


def test_the_title_starts_under_the_toolbar_band():
    run = image_run()
    fig = word_overlay(run, word_maps(run))
    lines = fig.layout.title.text.count("<br>") + 1
    assert fig.layout.title.pad.t == 22 + MODEBAR and fig.layout.title.yanchor == "top"
    # the first line's top edge is about 15 px above its anchor: it still clears the toolbar's band
    assert fig.layout.title.pad.t - 15 >= MODEBAR
    assert fig.layout.margin.t >= MODEBAR + lines * TITLE_FONT * LINE


def test_titles_wrap_to_the_figure_and_the_top_margin_holds_them():
    run = image_run()
    fig = word_overlay(run, word_maps(run))
    width = fig.layout.width
    for line in fig.layout.title.text.split("<br>"):
        plain = line.replace("<sup>", "").replace("</sup>", "")
        size = 17 * (0.7 if line.startswith("<sup>") else 1)
        assert len(plain) * size * GLYPH <= width
    lines = fig.layout.title.text.count("<br>") + 1
    assert fig.layout.margin.t >= lines * 17 * 1.3


def test_a_callers_figure_keeps_its_layout():
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    run = image_run()
    wm = word_maps(run)
    mine = make_subplots(rows=1, cols=len(wm))
    mine.update_layout(width=300, height=200)
    out = word_overlay(run, wm, fig=mine)
    assert out is mine and out.layout.width == 300 and out.layout.height == 200
    with pytest.raises(TypeError, match="go.Figure"):
        word_overlay(run, wm, fig=go.Layout())
