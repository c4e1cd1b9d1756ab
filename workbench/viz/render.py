"""Turning results into what a page or an image widget shows: PNG bytes, escaped text, HTML tables.

``escape`` is the one HTML escaping of the workbench: reports and apps pass every piece of user text
(prompts, words, config values, error messages) through it.

Example:
    >>> escape("a <b> horse")
    'a &lt;b&gt; horse'
"""

from __future__ import annotations

import html
import io

import pandas as pd
from PIL import Image

from workbench.core.run import Run


def escape(text) -> str:
    """``str(text)`` with ``&``, ``<``, ``>`` and both quote characters escaped for HTML."""
    return html.escape(str(text), quote=True)


# How every table reads wherever it is shown (an app's HTML widget has no page stylesheet): columns
# apart, headers over their columns.
TABLE_STYLE = (
    "<style>table.wb-table{border-collapse:collapse}"
    "table.wb-table th,table.wb-table td{padding:2px 8px;text-align:left;vertical-align:top}"
    "table.wb-table thead th{border-bottom:1px solid #bbb}</style>"
)


def table_html(df: pd.DataFrame) -> str:
    """A DataFrame as an HTML table (class ``wb-table``, no index, with its style); every cell escaped."""
    return df.to_html(index=False, escape=True, border=0, classes="wb-table") + TABLE_STYLE


def png_bytes(image: Image.Image, scale: int = 1) -> bytes:
    """PNG bytes of ``image``, enlarged ``scale`` times with nearest-neighbour (small images stay crisp)."""
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def display_scale(image: Image.Image, target: int = 256) -> int:
    """The largest whole-number enlargement that keeps ``image``'s longer side within ``target`` (at least 1)."""
    return max(1, target // max(image.width, image.height))


def run_image(run: Run) -> Image.Image:
    """The run's final image in RGB, or a grey stand-in of the right size for an incomplete run."""
    if run.image is not None:
        return run.image.convert("RGB")
    return Image.new("RGB", (run.config.width, run.config.height), (128, 128, 128))
