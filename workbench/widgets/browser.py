"""ExperimentBrowser: the saved runs under a folder as one list with thumbnails; filter, sort, open one
in the explorer, or tick two or more and compare them side by side.

The comparison is the one HTML reports open with (``workbench.report.compare_section``): the request
fields (those that differ highlighted), the final images, the shared words' maps on one colour scale and
the absolute difference of the final images; *save comparison* writes it as a report beside the runs.

Example:
    ExperimentBrowser("runs/")
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import ipywidgets as W
import numpy as np
import pandas as pd
from PIL import Image

from workbench.analysis.trajectory import as_pipes
from workbench.core.run import Run
from workbench.report import (
    compare_maps_figure,
    compare_strips,
    final_image_difference,
    report,
    request_differences,
)
from workbench.store.index import COLUMNS, filter_index, load_index
from workbench.store.runs import IMAGE, load_run
from workbench.viz import side_by_side
from workbench.viz.export import Exportable, MapExport
from workbench.viz.render import display_scale, escape, png_bytes, run_image
from workbench.widgets.base import FigureView, TaskRunner, close_all
from workbench.widgets.export import ExportBar
from workbench.widgets.sweep import _link

SHOWN_ROWS = 40  # rows listed at once; the filter narrows the rest
THUMB = 64  # px of a thumbnail's longer side
DIFF_SIDE = 192  # px of a difference image's longer side, about (whole-number enlargements only)
_DIFFERS = "background:#fff1a8;font-weight:600"  # a request field that differs between compared runs
_CELL = "border:1px solid #ddd;padding:2px 6px;vertical-align:top;overflow-wrap:anywhere"


STRIPS_HINT = "ExperimentBrowser(folder, pipes=[pipe]) with the runs' pipeline"


def _when(value) -> str:
    """A timestamp to the minute, in UTC (the index keeps microseconds)."""
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return ""
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


def fields_html(diff: pd.DataFrame, names: list[str]) -> str:
    """The request fields of compared runs (``report.request_differences``) as a table for the app: a
    column per run headed by its folder (``names``), the rows that differ highlighted (class
    ``differs``), and a line naming what differs and what is the same."""
    runs = [c for c in diff.columns if c != "differs"]
    head = "".join(f'<th style="{_CELL}">{escape(c)}<br>{escape(n)}</th>' for c, n in zip(runs, names))
    rows = []
    for field, row in diff.iterrows():
        mark = f' class="differs" style="{_DIFFERS}"' if row.differs else ""
        cells = "".join(f'<td style="{_CELL}">{escape(row[c])}</td>' for c in runs)
        rows.append(f'<tr{mark}><td style="{_CELL}">{escape(field)}</td>{cells}</tr>')
    differ = ", ".join(escape(f) for f in diff.index[diff.differs]) or "nothing"
    same = ", ".join(escape(f) for f in diff.index[~diff.differs]) or "nothing"
    return (
        f"<p>Differ: <b>{differ}</b>. The same in every run: {same}.</p>"
        '<div style="max-width:100%;overflow-x:auto"><table class="wb-compare-fields" '
        f'style="border-collapse:collapse;font-size:90%"><thead><tr><th style="{_CELL}">field</th>{head}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _difference_view(run: Run, first: Run, what: str) -> tuple[np.ndarray | None, W.Widget]:
    """``|run − first|`` of the final images, and a widget showing it with its mean, largest value and
    what was resized (or why there is none: an interrupted run)."""
    try:
        diff, note = final_image_difference(run, first)
    except ValueError as err:
        return None, W.HTML(f"<p>{escape(what)}: {escape(err)}</p>")
    image = Image.fromarray(diff)
    scale = display_scale(image, DIFF_SIDE)
    shown = W.Image(value=png_bytes(image, scale), format="png")
    shown.layout = W.Layout(width=f"{image.width * scale}px", height=f"{image.height * scale}px")
    shown.add_class("wb-difference")
    caption = f"{what}: mean {diff.mean():.2f}, largest {int(diff.max())} of 255" + (
        f"; {note}" if note else ""
    )
    text = W.HTML(f'<span style="font-size:90%">{escape(caption)}</span>', layout=W.Layout(width="260px"))
    return diff, W.VBox([shown, text])


def _free_path(folder: Path, stem: str) -> Path:
    """``folder/stem.html``, or ``stem-2.html``, ``stem-3.html``… when that file exists already."""
    path, n = folder / f"{stem}.html", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.html"
    return path


class ExperimentBrowser:
    """Browse the experiment index of ``root``, open any run in an ``AttentionExplorer``, compare runs.

    Every run is one row: a *compare* box, its thumbnail, prompt, settings, when it was saved and an
    *open* button. *Compare* loads the ticked runs (two or more) and shows them side by side; *save
    comparison* writes that comparison as an HTML report into ``root``.

    Attributes:
        compared: the runs of the comparison shown (in the order they were ticked; empty before one).
        compared_paths: their folders, relative to ``root``.
        differences: ``|run k − run 1|`` of the final images for each later run, as shown (uint8,
            None where a run has no final image).
        saved: the last comparison page written (None before one).
    """

    def __init__(self, root: str | Path = "runs", *, pipes=()):
        self.root = Path(root)
        self.pipes = as_pipes(pipes)
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
        self._compare_widgets()

        self.refresh_button.on_click(lambda _: self.refresh())
        for control in (self.filter, self.sort_by, self.ascending):
            control.observe(lambda _: self.apply(), names="value")

        self.widget = W.VBox(
            [
                W.HBox([self.filter, self.sort_by, self.ascending, self.refresh_button]),
                self.summary,
                self.run_list,
                W.HBox([self.compare_button, self.save_button, self.ticked_note]),
                # Each row has its own open button: the task shows only progress, status and errors.
                W.VBox([self.task.progress, self.task.status, self.task.warning_area, self.task.error_area]),
                self.comparison,
                self.export.widget,
                self.opened,
            ]
        )
        self.widget.add_class("wb-browser")
        self.refresh()

    def _compare_widgets(self) -> None:
        """The compare boxes' column beside the rows, the Compare and save buttons, the comparison."""
        self._ticked: list[str] = []
        self.compared: list[Run] = []
        self.compared_paths: list[str] = []
        self.differences: list[np.ndarray | None] = []
        self.saved: Path | None = None
        # The boxes and the rows are one grid: row i's box sits in grid row i, beside it, whatever its height.
        self.ticks = W.VBox([], layout=W.Layout(display="contents"))
        self.rows.layout.display = "contents"
        self.run_list = W.GridBox(
            [self.ticks, self.rows], layout=W.Layout(grid_template_columns="auto auto", align_items="center")
        )
        self.compare_button = W.Button(
            description="Compare", icon="columns", tooltip="compare the ticked runs side by side"
        )
        self.compare_button.add_class("wb-compare")
        self.save_button = W.Button(
            description="save comparison",
            icon="save",
            disabled=True,
            tooltip="write the comparison as an HTML page into the browsed folder",
        )
        self.ticked_note = W.HTML("")
        self.compare_fields = W.HTML("")
        self.compare_images = FigureView("wb-compare-images")
        self.compare_maps = FigureView("wb-compare-maps")
        self.compare_strips = FigureView("wb-compare-strips")
        self.strips_note = W.HTML("")
        self.maps_note = W.HTML("")
        self.compare_diffs = W.HBox([], layout=W.Layout(flex_flow="row wrap"))
        self.saved_link = W.HTML("")
        self.comparison = W.VBox([])
        self.comparison.add_class("wb-comparison")
        self.export = ExportBar(self.exportable, "comparison", ("png", "svg", "npy", "csv"))
        self.compare_button.on_click(lambda _: self.compare())
        self.save_button.on_click(lambda _: self.save_comparison())
        self._note_ticked()

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
            self._show_rows([], [])
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
        listed = set(self.index.path)
        self._ticked = [p for p in self._ticked if p in listed]  # runs gone from the folder
        self._note_ticked()
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
        listed = list(shown.itertuples())
        self._show_rows([self._row(r) for r in listed], [self._tick(r.path) for r in listed])

    def _show_rows(self, rows: list[W.Widget], ticks: list[W.Widget]) -> None:
        """List ``rows``, each with its compare box (``ticks``, same order) in front of it."""
        for i, (tick, row) in enumerate(zip(ticks, rows)):
            tick.layout.grid_row = row.layout.grid_row = str(i + 1)
            tick.layout.grid_column, row.layout.grid_column = "1", "2"
        old = [*self.rows.children, *self.ticks.children]
        self.rows.children = rows
        self.ticks.children = ticks
        close_all(old)

    def _tick(self, path: str) -> W.Checkbox:
        """The compare box of the run at ``path``: ticked when the run is ticked (kept across filters)."""
        box = W.Checkbox(
            value=path in self._ticked, description="compare", indent=False, layout=W.Layout(width="auto")
        )
        box.add_class("wb-compare-tick")
        box.observe(lambda change, path=path: self.tick(path, change["new"]), names="value")
        return box

    @property
    def ticked(self) -> list[str]:
        """The runs ticked for comparing (folders relative to the root), in the order they were ticked."""
        return list(self._ticked)

    def tick(self, path: str, on: bool = True) -> None:
        """Tick (or untick) the run at ``path`` for comparing, as its compare box does."""
        if on and path not in self._ticked:
            self._ticked.append(path)
        elif not on and path in self._ticked:
            self._ticked.remove(path)
        self._note_ticked()

    def _note_ticked(self) -> None:
        n = len(self._ticked)
        if n == 0:
            self.ticked_note.value = (
                "tick the <i>compare</i> box of two or more runs, then press <i>Compare</i>"
            )
            return
        names = ", ".join(escape(p) for p in self._ticked)
        self.ticked_note.value = f"{n} run{'' if n == 1 else 's'} ticked: {names}"

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

    # ------------------------------------------------------------- comparing runs

    def compare(self, *, threaded: bool = True) -> bool:
        """Load the ticked runs (two or more) in the worker thread and show them side by side; False when
        refused (fewer than two ticked, or the browser is busy)."""
        if self.task.busy:
            return False
        paths = list(self._ticked)
        if len(paths) < 2:
            got = f"only {paths[0]} is ticked" if paths else "none is ticked"
            self.task.refuse(
                ValueError(
                    f"comparing needs 2 or more runs and {got}: tick the compare box of two or more "
                    "runs, then press Compare"
                )
            )
            return False
        return self.task.start(
            lambda: self._load(paths),
            len(paths) + 1,
            self._show_comparison,
            threaded=threaded,
            status=f"loading {len(paths)} runs to compare…",
        )

    def _load(self, paths: list[str]) -> tuple[list[str], list[Run]]:
        runs = []
        for path in paths:
            runs.append(load_run(self.root / path))
            self.task.step()
        return paths, runs

    def _show_comparison(self, loaded: tuple[list[str], list[Run]]) -> None:
        """Show the comparison of the loaded runs (built first, so a failure leaves the last one shown)."""
        paths, runs = loaded
        fields = fields_html(request_differences(runs), paths)
        titles = [f"run {i + 1}: {p} · seed {r.seed}" for i, (p, r) in enumerate(zip(paths, runs))]
        images = side_by_side([np.asarray(run_image(r)) for r in runs], titles)
        try:
            maps, why = compare_maps_figure(runs), ""
        except ValueError as err:
            maps, why = None, f"<p>Not shown: {escape(err)}</p>"
        strips, strips_note = compare_strips(runs, self.pipes, titles, STRIPS_HINT)
        diffs = [_difference_view(r, runs[0], f"|run {k + 1} − run 1|") for k, r in enumerate(runs[1:], 1)]
        self.compared, self.compared_paths = runs, paths
        self.differences = [d for d, _ in diffs]
        self.compare_fields.value = fields
        self.compare_images.show(images)
        if maps is None:
            self.compare_maps.clear()
        else:
            self.compare_maps.show(maps)
        self.maps_note.value = why
        if strips is None:
            self.compare_strips.clear()
        else:
            self.compare_strips.show(strips)
        self.strips_note.value = f"<p>{escape(strips_note)}</p>" if strips_note else ""
        old = self.compare_diffs.children
        self.compare_diffs.children = [w for _, w in diffs]
        close_all(old)
        self.saved_link.value = ""
        self._lay_out_comparison()
        self.save_button.disabled = False
        self.task.step()
        self.task.status.value = escape(f"comparing {len(runs)} runs: {', '.join(paths)}")

    def _lay_out_comparison(self) -> None:
        if self.comparison.children:
            return

        def head(text: str) -> W.HTML:
            return W.HTML(f"<h4>{escape(text)}</h4>")

        self.comparison.children = [
            head("Compare: request fields"),
            self.compare_fields,
            head("Final images"),
            self.compare_images.widget,
            head("x0 filmstrips, side by side"),
            self.strips_note,
            self.compare_strips.widget,
            head("Shared words' maps, one colour scale"),
            self.maps_note,
            self.compare_maps.widget,
            head("Absolute difference of the final images"),
            W.HTML("<p>Per pixel and channel, on the 0–255 scale: black where the images agree.</p>"),
            self.compare_diffs,
            self.saved_link,
        ]

    def exportable(self) -> Exportable:
        """For the export row: the comparison's figures, each run's shared-word maps as arrays (the
        values the maps figure draws), and the index as listed (filter and sort applied)."""
        what = Exportable(tables={"index": self.view} if self.view is not None else {})
        if not self.compared:
            return what
        what.figures["images"] = self.compare_images.figure
        if self.compare_strips.figure is not None:
            what.figures["filmstrips"] = self.compare_strips.figure
        maps = self.compare_maps.figure
        if maps is not None:
            what.figures["maps"] = maps
            heat = [t for t in maps.data if t.type == "heatmap"]
            per_run = len(heat) // len(self.compared)
            for k, path in enumerate(self.compared_paths):
                panels = heat[k * per_run : (k + 1) * per_run]
                meta = {"run": path, "scale": "one colour scale across runs", "title": maps.layout.title.text}
                what.maps[f"run-{k + 1}"] = MapExport(
                    np.stack([np.asarray(t.z, dtype=np.float32) for t in panels]),
                    [t.name for t in panels],
                    meta,
                )
        return what

    def save_comparison(self, *, threaded: bool = True) -> bool:
        """Write the comparison shown as an HTML report (``workbench.report.report``) into the browsed
        folder, as ``comparison-<UTC time>.html``, and show where; False when refused (nothing compared
        yet, or the browser is busy)."""
        if self.task.busy:
            return False
        if not self.compared:
            self.task.refuse(ValueError("there is no comparison to save: press Compare first"))
            return False
        runs, paths = list(self.compared), list(self.compared_paths)
        return self.task.start(
            lambda: self._write(runs, paths),
            1,
            self._written,
            threaded=threaded,
            status="writing the comparison page…",
        )

    def _write(self, runs: list[Run], paths: list[str]) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        notes = f"The runs {', '.join(paths)} of the folder {self.root}, compared side by side."
        title = f"Comparison of {len(runs)} runs"
        path = _free_path(self.root, f"comparison-{stamp}")
        return report(runs, path, title=title, notes=notes, quiet=True, pipes=self.pipes)

    def _written(self, path: Path) -> None:
        self.task.step()
        self.saved = path
        self.saved_link.value = "<p>Saved: " + _link(path) + "</p>"
        self.task.status.value = escape(f"comparison written to {path} · open it in a web browser")
