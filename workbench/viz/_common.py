"""Shared bits of the figure builders: titles carrying the recipe, image conversion, and sizes.

Every builder that makes its own figure sizes it from its grid: image panels get ``PANEL`` pixels on
their shorter side (never fewer than ``MIN_PANEL``), margins make room for the title, subplot titles,
row labels and colour bar, and text is wrapped to the room it has. Text widths are estimated from the
font size (``GLYPH``), a little generously; the browser test measures what is really drawn.
"""

from __future__ import annotations

import math
import re
import textwrap

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PANEL = 176  # px: the shorter side of an image panel in a grid
MIN_PANEL = 128  # px: no image panel is drawn smaller than this
FONT = 12  # px: plotly's default font (ticks, legends, annotations)
AXIS_FONT = 14  # px: plotly's default axis-title font
TITLE_FONT = 17  # px: plotly's default title font
LINE = 1.3  # plotly's line spacing: a line of text takes 1.3 × its font size
GLYPH = 0.6  # average glyph width per px of font size (Open Sans; a little generous)
COLORBAR = 110  # px: right margin that holds a colour bar with a two-line title
MODEBAR = 28  # px: the band at a figure's top right where plotly shows its toolbar (on hover)


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


_KEEP = "\x00"  # stands for a space that must not become a line break
_BRACKETED = (re.compile(r"\[[^\[\]]*\]"), re.compile(r"\([^()]*\)"))  # [...] groups, then (...) ones


def _bind_brackets(text: str, chars: int) -> str:
    """``text`` with the spaces inside each bracketed group of at most ``chars`` characters bound
    (``_KEEP``), so that a unit such as "([0, 1] intensity)" is never broken inside its brackets: the
    square brackets are bound first, so "[0, 1]" stays whole even where its round ones do not fit."""

    def bind(match: re.Match) -> str:
        group = match.group(0)
        return group.replace(" ", _KEEP) if len(group) <= chars else group

    for pattern in _BRACKETED:
        text = pattern.sub(bind, text)
    return text


def wrap(text: str, width_px: float, font_px: float = FONT) -> str:
    """``text`` with ``<br>`` line breaks so that no line is wider than ``width_px`` (estimated).

    Existing ``<br>`` breaks are kept, and a bracketed group that fits on a line is never broken
    inside. Example: ``wrap("a red circle left of a blue square", 100)``.
    """
    chars = max(6, int(width_px / (font_px * GLYPH)))
    lines = []
    for part in str(text).split("<br>"):
        bound = _bind_brackets(part, chars)
        lines += [
            line.replace(_KEEP, " ") for line in textwrap.wrap(bound, chars, break_on_hyphens=False)
        ] or [""]
    return "<br>".join(lines)


def lines(text: str | None) -> int:
    """How many lines a (wrapped) label takes."""
    return 0 if not text else text.count("<br>") + 1


def title_text(title: str, subtitle: str | None, width_px: float | None) -> str:
    """The title, and the subtitle as smaller lines under it, wrapped to ``width_px`` when given."""
    if width_px is None:
        return title if not subtitle else f"{title}<br><sup>{subtitle}</sup>"
    text = wrap(title, width_px, TITLE_FONT)
    if subtitle:
        # A <sup> line is drawn at 70 % of the title's size.
        sub = wrap(subtitle, width_px, TITLE_FONT * 0.7)
        text += "<br>" + "<br>".join(f"<sup>{line}</sup>" for line in sub.split("<br>"))
    return text


def edited_line(subtitle: str | None, edited: str) -> str | None:
    """``subtitle``, with "EDITED RUN: …" on top when the run's attention or conditioning was edited."""
    if not edited:
        return subtitle
    return f"EDITED RUN: {edited}" + (f"<br>{subtitle}" if subtitle else "")


def titled(fig: go.Figure, title: str, subtitle: str | None = None, *, grow: bool = False) -> go.Figure:
    """Set a title with the aggregation (or other provenance) as smaller lines under it.

    With ``grow`` (a builder's own, sized figure) the text is wrapped to the figure's width and the
    figure grows at the top to hold it, above whatever the builder reserved there; the title starts
    under a ``MODEBAR`` band, where plotly's toolbar shows, so the toolbar never covers it. A caller's
    figure keeps its layout.
    """
    width = fig.layout.width if grow else None
    text = title_text(title, subtitle, width - 20 if width else None)
    fig.update_layout(title={"text": text})
    if width and fig.layout.height:
        block = math.ceil(lines(text) * TITLE_FONT * LINE) + 16 + MODEBAR
        top = fig.layout.margin.t or 0
        height = fig.layout.height + block
        fig.update_layout(
            # plotly draws a top-anchored title's first line about 15 px above its anchor: a 22 px
            # pad puts the text's top edge some 7 px under the band that holds the toolbar.
            modebar={"orientation": "h"},
            title={
                "x": 0,
                "xref": "container",
                "xanchor": "left",
                "y": 1,
                "yref": "container",
                "yanchor": "top",
                "pad": {"l": 10, "t": 22 + MODEBAR},
            },
            margin={"t": top + block},
            height=height,
        )
    return fig


def panel_size(height: int, width: int, short: int = PANEL, longest: int | None = None) -> tuple[int, int]:
    """(panel height, panel width) in px for an image of ``height`` × ``width``: the shorter side
    ``short`` px, the longer side in proportion (at most ``longest``, never making the shorter side
    fall under ``MIN_PANEL``)."""
    short = max(short, MIN_PANEL)
    longest = longest or 3 * short
    if height <= width:
        ph, pw = short, short * width / height
        if pw > longest:
            ph, pw = max(MIN_PANEL, short * longest / pw), longest
    else:
        pw, ph = short, short * height / width
        if ph > longest:
            pw, ph = max(MIN_PANEL, short * longest / ph), longest
    return int(round(ph)), int(round(pw))


def sized_grid(
    rows: int,
    cols: int,
    *,
    panel: tuple[int, int],
    titles: list[str] | None = None,
    left: int = 10,
    right: int = 10,
    bottom: int = 10,
    hgap: int = 16,
    **kwargs,
) -> go.Figure:
    """A ``rows`` × ``cols`` subplot grid whose panels are ``panel`` = (height, width) px.

    Subplot titles are wrapped to the panel's width; the gaps between rows and the top margin make
    room for them. ``titled`` later adds the room for the figure's own title.
    """
    ph, pw = panel
    titles = [wrap(t, pw, FONT) for t in titles] if titles is not None else None
    head = max((lines(t) for t in titles), default=0) if titles else 0
    head_px = math.ceil(head * FONT * LINE) + (6 if head else 0)
    vgap = head_px + 10
    plot_w = cols * pw + (cols - 1) * hgap
    plot_h = rows * ph + (rows - 1) * vgap
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=hgap / plot_w if cols > 1 else 0.0,
        vertical_spacing=vgap / plot_h if rows > 1 else 0.0,
        **kwargs,
    )
    fig.update_annotations(font_size=FONT)
    fig.update_layout(
        width=left + plot_w + right,
        height=head_px + plot_h + bottom,
        margin={"l": left, "r": right, "t": head_px, "b": bottom, "autoexpand": False},
    )
    return fig


def sized_chart(fig: go.Figure, *, width: int = 760, plot_height: int = 320, bottom: int = 60) -> go.Figure:
    """Give a chart (lines, bars, a matrix) a size: ``plot_height`` px of plot area under the title."""
    fig.update_layout(width=width, height=plot_height + bottom + 10, margin={"t": 10, "b": bottom})
    return fig


def plot_height(fig: go.Figure, default: float = PANEL) -> float:
    """The px height of the figure's plot area (``default`` when the figure has no size yet)."""
    if not fig.layout.height:
        return default
    return fig.layout.height - (fig.layout.margin.t or 0) - (fig.layout.margin.b or 0)


def axis_title(text: str, length_px: float) -> str:
    """An axis title wrapped to the axis' length (so a y title never runs past its subplot)."""
    return wrap(text, max(60, length_px - 10), AXIS_FONT)


def colorbar(title: str, length_px: float = 176, **kwargs) -> dict:
    """A colour bar just right of the plot area, its title along the bar (wrapped to the bar's
    ``length_px``, the plot area's height)."""
    return {
        "title": {"text": wrap(title, length_px - 10, FONT), "side": "right"},
        "x": 1.0,
        "xanchor": "left",
        "xpad": 12,
        "thickness": 14,
        **kwargs,
    }


NORMALIZE_TITLES = {
    "mass": "attention probability",
    "max": "fraction of the map's peak",
    "minmax": "rescaled: min 0, max 1",
    "unit-sum": "fraction of the map's total",
    "share": "share of the text's attention",
}


def normalize_title(aggregation) -> str:
    """What a recipe's heat-map values are, in words, for its colour bar (``"max"``: a fraction of the
    map's peak; ``"mass"`` after a sum over steps, layers or heads: summed probability)."""
    normalize = aggregation.normalize
    if normalize == "mass":
        reductions = {
            getattr(aggregation, name, None) for name in ("reduce", "step_reduce", "layer_reduce", "heads")
        }
        if "sum" in reductions:
            return "attention probability, summed"
    return NORMALIZE_TITLES.get(normalize, normalize)


def recipe_line(aggregation) -> str:
    """The recipe as one subtitle line; a changed preset (``all-mean*``) says what the star means."""
    text = aggregation.describe()
    if aggregation.name.endswith("*"):
        text += f" ({aggregation.name}: the {aggregation.name.rstrip('*')} preset with fields changed)"
    return text


def grid(fig: go.Figure | None, rows: int, cols: int, titles: list[str] | None = None, **kwargs) -> go.Figure:
    """The caller's figure, or a new subplot grid of ``rows`` × ``cols``."""
    if fig is not None:
        if not isinstance(fig, go.Figure):
            raise TypeError(f"fig must be a plotly go.Figure, got {type(fig).__name__}")
        return fig
    return make_subplots(rows=rows, cols=cols, subplot_titles=titles, **kwargs)


def own(fig: go.Figure | None) -> bool:
    """True when the builder makes the figure (and so sizes it); a caller's figure keeps its layout."""
    if fig is not None and not isinstance(fig, go.Figure):
        raise TypeError(f"fig must be a plotly go.Figure, got {type(fig).__name__}")
    return fig is None


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
