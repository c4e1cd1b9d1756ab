"""ExperimentBrowser: the saved runs under a folder as one list with thumbnails; filter, sort, open one
in the explorer.

Example:
    ExperimentBrowser("runs/")
"""

from __future__ import annotations

from pathlib import Path

import ipywidgets as W
import pandas as pd
from PIL import Image

from workbench.store.index import COLUMNS, filter_index, load_index
from workbench.store.runs import IMAGE, load_run
from workbench.viz.render import display_scale, escape, png_bytes
from workbench.widgets.base import TaskRunner, close_all

SHOWN_ROWS = 40  # rows listed at once; the filter narrows the rest
THUMB = 64  # px of a thumbnail's longer side


def _when(value) -> str:
    """A timestamp to the minute, in UTC (the index keeps microseconds)."""
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return ""
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


class ExperimentBrowser:
    """Browse the experiment index of ``root`` and open any run in an ``AttentionExplorer``.

    Every run is one row: its thumbnail, prompt, settings, when it was saved and an *open* button.
    """

    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)
        self.index = None
        self.view = None
        self.explorer = None
        self._thumbs: dict[tuple[str, float], tuple[bytes, tuple[int, int]]] = {}
        self.filter = W.Text(
            value="", placeholder="words in the prompt", description="filter", continuous_update=False
        )
        self.sort_by = W.Dropdown(options=COLUMNS, value="created", description="sort by")
        self.ascending = W.Checkbox(value=False, description="ascending", indent=False)
        self.refresh_button = W.Button(description="refresh", icon="refresh")
        self.summary = W.HTML("")
        self.rows = W.VBox([])
        self.rows.add_class("wb-run-list")
        self.task = TaskRunner("Open", "")
        self.opened = W.VBox([])

        self.refresh_button.on_click(lambda _: self.refresh())
        for control in (self.filter, self.sort_by, self.ascending):
            control.observe(lambda _: self.apply(), names="value")

        self.widget = W.VBox(
            [
                W.HBox([self.filter, self.sort_by, self.ascending, self.refresh_button]),
                self.summary,
                self.rows,
                # Each row has its own open button: the task shows only progress, status and errors.
                W.VBox([self.task.progress, self.task.status, self.task.warning_area, self.task.error_area]),
                self.opened,
            ]
        )
        self.widget.add_class("wb-browser")
        self.refresh()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def error(self) -> str | None:
        return self.task.error

    def refresh(self) -> None:
        """Re-scan the folder (writes ``index.parquet`` beside the runs)."""
        if not self.root.is_dir():
            self.index = None
            self._show_rows([])
            self.summary.value = (
                f"<p>No runs under <code>{escape(self.root)}</code> yet. Save runs there with "
                f"<code>workbench.save_run(run, {escape(repr(str(self.root / 'name')))})</code>, "
                "then press <i>refresh</i>.</p>"
            )
            return
        try:
            self.index = load_index(self.root, refresh=True)
        except Exception as err:
            self.task.show_error(err)
            return
        self.apply()

    def apply(self) -> None:
        """Filter and sort the list (no disk access but the thumbnails)."""
        if self.index is None:
            return
        self.view = filter_index(
            self.index, self.filter.value, sort_by=self.sort_by.value, ascending=self.ascending.value
        )
        shown = self.view.head(SHOWN_ROWS)
        more = (
            f"; the first {len(shown)} are listed (filter to narrow)" if len(shown) < len(self.view) else ""
        )
        self.summary.value = (
            f"<p>{len(self.view)} of {len(self.index)} runs in <code>{escape(self.root)}</code>{more}</p>"
        )
        self._show_rows([self._row(r) for r in shown.itertuples()])

    def _show_rows(self, rows: list[W.Widget]) -> None:
        old = self.rows.children
        self.rows.children = rows
        close_all(old)

    def _row(self, r) -> W.Widget:
        png, (w, h) = self._thumbnail(r.path)
        size = {"width": f"{w}px", "height": f"{h}px", "min_width": f"{w}px", "border": "1px solid #ddd"}
        thumb = W.Image(value=png, format="png", layout=W.Layout(**size))
        state = "" if r.complete else " · <b>incomplete</b>"
        edits = getattr(r, "edits", None)  # index files written before edits existed have no column
        if isinstance(edits, str) and edits:
            state += f" · <b>edited:</b> {escape(edits)}"
        text = W.HTML(
            f"<b>{escape(r.prompt)}</b><br>seed {escape(r.seed)} · {escape(r.steps)} steps · guidance "
            f"{escape(r.guidance)} · {escape(r.scheduler)} · {escape(r.model)}{state}<br>"
            f'<span style="color:#666">{escape(r.path)} · saved {escape(_when(r.created))}</span>',
            layout=W.Layout(width="640px"),
        )
        button = W.Button(description="open", icon="folder-open", layout=W.Layout(width="90px"))
        button.add_class("wb-open")
        button.on_click(lambda _, path=r.path: self.open(path))
        row = W.HBox([thumb, text, button], layout=W.Layout(align_items="center"))
        row.add_class("wb-run-row")
        return row

    def _thumbnail(self, path: str) -> tuple[bytes, tuple[int, int]]:
        """PNG bytes of the run's final image enlarged to about ``THUMB`` px, and their (width, height)."""
        file = self.root / path / IMAGE
        try:
            key = (str(file), file.stat().st_mtime)
        except OSError:  # an incomplete run has no final image
            key = (str(file), -1.0)
        if key not in self._thumbs:
            if key[1] < 0:
                image = Image.new("RGB", (THUMB, THUMB), (200, 200, 200))
            else:
                with Image.open(file) as im:
                    image = im.convert("RGB")
            scale = display_scale(image, THUMB)
            self._thumbs[key] = (png_bytes(image, scale), (image.width * scale, image.height * scale))
        return self._thumbs[key]

    def open(self, path: str | None = None, *, threaded: bool = True) -> bool:
        """Load the run at ``path`` (relative to the root) and show it in an explorer."""
        if path is None:
            self.task.show_error(ValueError("choose a run: press the open button of its row"))
            return False
        return self.task.start(
            lambda: load_run(self.root / path),
            1,
            self._show,
            threaded=threaded,
            status=f"opening {path}…",
        )

    def _show(self, run) -> None:
        from workbench.widgets.explorer import AttentionExplorer

        self.task.step()
        old = self.opened.children
        self.explorer = AttentionExplorer(run)
        self.opened.children = [self.explorer.widget]
        close_all(old)
        edited = f" · edited: {escape(run.config.edit_label)}" if run.config.edits else ""
        self.task.status.value = f"opened “{escape(run.prompt)}” · seed {escape(run.seed)}{edited}"

    def wait(self, timeout: float | None = None):
        self.task.wait(timeout)
        return self.explorer
