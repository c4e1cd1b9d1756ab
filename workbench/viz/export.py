"""Writing what an app or report shows into files: figures as PNG or SVG, maps as ``.npy``, tables as CSV,
images as PNG.

Static figures are drawn by kaleido in a headless Chrome or Chromium found on the machine, with the
plotly.js that the ``plotly`` package ships and MathJax off, so nothing is fetched from a network. A
figure is drawn at its own layout size. Maps are written as one ``float32`` array per export (words
stacked on the first axis) with a JSON file beside it naming what each slice is; nothing is pickled.
Every name written is new: an existing file is never replaced (``-2``, ``-3``, … are added).

Example:
    >>> paths = write_figures({"maps": fig}, "exports", "explorer", "svg")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from workbench.core.errors import FieldError

FIGURE_FORMATS = ("png", "svg")
PNG_SCALE = 2  # a PNG at twice the figure's layout size, so small map panels stay sharp in a paper


class ExportError(FieldError):
    """An export that cannot be written; ``field`` names what was asked for (``"folder"``, ``"format"``,
    ``"figures"``, ``"maps"``, ``"tables"``, ``"images"``)."""


@dataclass
class MapExport:
    """Maps to write as one array: ``array`` (n, H, W), and what each of the n slices is.

    Attributes:
        array: the maps, stacked on the first axis (written as float32).
        labels: one label per slice (``"red"``, ``"a#2"``).
        meta: anything else that says how the maps were made (the recipe, the run's prompt and seed).
    """

    array: np.ndarray
    labels: list[str]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.array = np.asarray(self.array, dtype=np.float32)
        if self.array.ndim == 2:
            self.array = self.array[None]
        if self.array.ndim != 3 or self.array.shape[0] != len(self.labels):
            raise ValueError(
                f"maps must be (n, H, W) with one label per map; got shape {self.array.shape} "
                f"and {len(self.labels)} labels"
            )


@dataclass
class Exportable:
    """What an app can export now, by name: figures, maps, tables and images (each may be empty)."""

    figures: dict[str, go.Figure] = field(default_factory=dict)
    maps: dict[str, MapExport] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    images: dict[str, Image.Image] = field(default_factory=dict)


def stamp() -> str:
    """The time now (UTC) as it goes into file names: ``20261203-051502``."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()[:40] or "export"


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem.suffix``, or with ``-2``, ``-3``, … added when that name is taken."""
    path = folder / f"{stem}{suffix}"
    k = 2
    while path.exists():
        path = folder / f"{stem}-{k}{suffix}"
        k += 1
    return path


def export_folder(folder: str | os.PathLike) -> Path:
    """``folder`` made if needed; a path that is a file, or cannot be made, is refused by field."""
    text = os.fspath(folder).strip() if isinstance(folder, (str, os.PathLike)) else ""
    if not text:
        raise ExportError("folder", "is empty: name a folder to write the exports into")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ExportError("folder", f"{path} is a file: name a folder to write the exports into")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError("folder", f"{path} cannot be made: {err.strerror or err}") from err
    return path


def _names(items: dict, what: str, prefix: str, suffix: str, folder: Path) -> list[tuple[str, Path]]:
    if not items:
        raise ExportError(what, "to export: none yet (run something first)")
    when = stamp()
    out = []
    for name in items:
        path = free_path(folder, f"{_slug(prefix)}-{_slug(name)}-{when}", suffix)
        path.touch()  # the name is taken at once, so two figures never get the same one
        out.append((name, path))
    return out


def _kaleido_specs(figures: dict[str, go.Figure], named: list[tuple[str, Path]], fmt: str) -> list[dict]:
    specs = []
    for name, path in named:
        fig = figures[name]
        width, height = fig.layout.width or 760, fig.layout.height or 480
        opts = dict(format=fmt, width=int(width), height=int(height), scale=PNG_SCALE if fmt == "png" else 1)
        specs.append(dict(fig=fig.to_dict(), path=path, opts=opts))
    return specs


NO_BROWSER = (
    "needs a headless Chrome or Chromium to draw the figure and none was found: install one (e.g. "
    "`apt install chromium`), or run `plotly_get_chrome` once, or set BROWSER_PATH to one"
)


def write_figures(
    figures: dict[str, go.Figure], folder: str | os.PathLike, prefix: str, fmt: str
) -> list[Path]:
    """Write each figure as ``fmt`` (``"png"`` or ``"svg"``) into ``folder``; returns the paths.

    One headless browser draws all of them. PNGs are at twice the layout size (``PNG_SCALE``).
    """
    if fmt not in FIGURE_FORMATS:
        raise ExportError("format", f"must be one of {FIGURE_FORMATS} for figures, got {fmt!r}")
    import kaleido

    folder = export_folder(folder)
    named = _names(figures, "figures", prefix, f".{fmt}", folder)
    plotlyjs = Path(go.__file__).parents[1] / "package_data" / "plotly.min.js"
    try:
        kaleido.write_fig_from_object_sync(
            _kaleido_specs(figures, named, fmt), kopts={"mathjax": False, "plotlyjs": str(plotlyjs)}
        )
    except Exception as err:
        for _, path in named:
            if path.exists() and path.stat().st_size == 0:
                path.unlink()
        if type(err).__name__ == "ChromeNotFoundError":
            raise ExportError("format", f"{fmt.upper()} {NO_BROWSER}") from err
        raise ExportError("format", f"{fmt.upper()} could not be written: {err}") from err
    return [path for _, path in named]


def write_maps(maps: dict[str, MapExport], folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Write each ``MapExport`` as ``.npy`` (float32, no pickle) with a ``.json`` beside it holding its
    labels, shape and ``meta``; returns the ``.npy`` paths."""
    folder = export_folder(folder)
    out = []
    for name, path in _names(maps, "maps", prefix, ".npy", folder):
        m = maps[name]
        with open(path, "wb") as f:
            np.save(f, m.array, allow_pickle=False)
        about = {"labels": m.labels, "shape": list(m.array.shape), "dtype": "float32", **m.meta}
        path.with_suffix(".json").write_text(json.dumps(about, indent=1, default=str), encoding="utf-8")
        out.append(path)
    return out


def write_tables(tables: dict[str, pd.DataFrame], folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Write each table as CSV (no index column); returns the paths."""
    return _write_each(
        tables, "tables", ".csv", folder, prefix, lambda df, path: df.to_csv(path, index=False)
    )


def write_images(images: dict[str, Image.Image], folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Write each image as PNG at its own pixel size; returns the paths."""
    return _write_each(images, "images", ".png", folder, prefix, lambda im, path: im.save(path, format="PNG"))


def _write_each(items: dict, what: str, suffix: str, folder, prefix: str, write) -> list[Path]:
    folder = export_folder(folder)
    out = []
    for name, path in _names(items, what, prefix, suffix, folder):
        write(items[name], path)
        out.append(path)
    return out
