"""The export row every app carries: a folder box and one button per kind of file the app can write.

The app hands the bar a function that returns what it shows now (an ``Exportable``); a button writes
that: its figures as PNG or SVG (drawn offline, ``viz.export``), its maps as ``.npy`` (with a JSON of
labels and recipe beside), its tables as CSV, its image as PNG. The bar lists the files written, or
says in one line why nothing was (nothing shown yet, no browser to draw with, a folder that is a
file). Existing files are never replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ipywidgets as W

from workbench.viz.export import (
    Exportable,
    ExportError,
    write_figures,
    write_images,
    write_maps,
    write_tables,
)
from workbench.viz.render import escape

# kind -> (button label, tooltip)
KINDS = {
    "png": ("PNG", "the figures shown, as PNG (twice their size on screen)"),
    "svg": ("SVG", "the figures shown, as SVG"),
    "npy": ("maps .npy", "the maps shown, as float32 arrays, with a JSON of what each slice is"),
    "csv": ("tables CSV", "the tables shown, as CSV"),
    "image": ("image PNG", "the image shown, at its own pixel size"),
}


class ExportBar:
    """Buttons that write what an app shows now into a folder.

    Args:
        source: returns the app's ``Exportable`` now (called on each click).
        prefix: the start of every file name (``"explorer"``).
        kinds: the buttons to show, among ``KINDS``.
        folder: the folder box's starting value (relative to the notebook's folder).

    Attributes:
        written: the files the last click wrote.
        error: why the last click wrote nothing (None when it wrote).
    """

    def __init__(
        self,
        source: Callable[[], Exportable],
        prefix: str,
        kinds: tuple[str, ...] = ("png", "svg"),
        folder: str = "exports",
    ):
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown export kinds {unknown}; the kinds are {list(KINDS)}")
        self.source, self.prefix = source, prefix
        self.written: list[Path] = []
        self.error: str | None = None
        self.folder = W.Text(value=folder, description="export to", layout=W.Layout(width="260px"))
        self.buttons: dict[str, W.Button] = {}
        for kind in kinds:
            label, tip = KINDS[kind]
            button = W.Button(description=label, icon="download", tooltip=tip, layout=W.Layout(width="auto"))
            button.add_class(f"wb-export-{kind}")
            button.on_click(lambda _, kind=kind: self.export(kind))
            self.buttons[kind] = button
        self.note = W.HTML("")
        self.note.add_class("wb-export-note")
        self.widget = W.VBox([W.HBox([self.folder, *self.buttons.values()]), self.note])
        self.widget.add_class("wb-export")

    def export(self, kind: str) -> list[Path]:
        """Write what the app shows now as ``kind``; the files written (none when refused, with
        ``error`` and the bar's note saying why)."""
        for button in self.buttons.values():
            button.disabled = True
        self.note.value = '<span style="color:#555">writing…</span>'
        try:
            self.written = self._write(kind, self.source())
        except ExportError as err:
            return self._refused(f"{err}")
        except Exception as err:  # an app's own problem (e.g. a map that cannot be made): said, not raised
            return self._refused(f"{type(err).__name__}: {err}")
        finally:
            for button in self.buttons.values():
                button.disabled = False
        self.error = None
        listed = "".join(f"<li><code>{escape(p)}</code></li>" for p in self.written)
        self.note.value = (
            f"wrote {len(self.written)} file{'s' if len(self.written) != 1 else ''}:<ul>{listed}</ul>"
        )
        return self.written

    def _refused(self, message: str) -> list[Path]:
        self.written, self.error = [], message
        self.note.value = f'<span style="color:#a00">nothing written: {escape(message)}</span>'
        return []

    def _write(self, kind: str, what: Exportable) -> list[Path]:
        folder, prefix = self.folder.value, self.prefix
        if kind in ("png", "svg"):
            return write_figures(what.figures, folder, prefix, kind)
        if kind == "npy":
            return write_maps(what.maps, folder, prefix)
        if kind == "csv":
            return write_tables(what.tables, folder, prefix)
        return write_images(what.images, folder, prefix)
