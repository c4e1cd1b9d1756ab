"""ExperimentBrowser: the saved runs under a folder as a table; filter, sort, open one in the explorer.

Example:
    ExperimentBrowser("runs/")
"""

from __future__ import annotations

from pathlib import Path

import ipywidgets as W

from workbench.store.index import COLUMNS, filter_index, load_index
from workbench.store.runs import load_run
from workbench.viz.render import escape, table_html
from workbench.widgets.base import TaskRunner

SHOWN = ["path", "prompt", "seed", "steps", "guidance", "scheduler", "model", "complete", "created"]


class ExperimentBrowser:
    """Browse the experiment index of ``root`` and open any run in an ``AttentionExplorer``."""

    def __init__(self, root: str | Path = "runs"):
        self.root = Path(root)
        self.index = None
        self.view = None
        self.explorer = None
        self.filter = W.Text(
            value="", placeholder="words in the prompt", description="filter", continuous_update=False
        )
        self.sort_by = W.Dropdown(options=COLUMNS, value="created", description="sort by")
        self.ascending = W.Checkbox(value=False, description="ascending", indent=False)
        self.refresh_button = W.Button(description="refresh", icon="refresh")
        self.table = W.HTML("")
        self.choice = W.Select(options=[], description="run", rows=6, layout=W.Layout(width="90%"))
        self.task = TaskRunner("Open", "choose a run and press Open")
        self.opened = W.VBox([])

        self.refresh_button.on_click(lambda _: self.refresh())
        for control in (self.filter, self.sort_by, self.ascending):
            control.observe(lambda _: self.apply(), names="value")
        self.task.run_button.on_click(lambda _: self.open())

        self.widget = W.VBox(
            [
                W.HBox([self.filter, self.sort_by, self.ascending, self.refresh_button]),
                self.table,
                self.choice,
                self.task.controls(),
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
        try:
            self.index = load_index(self.root, refresh=True)
        except Exception as err:
            self.task.show_error(err)
            return
        self.apply()

    def apply(self) -> None:
        """Filter and sort the table (no disk access)."""
        if self.index is None:
            return
        self.view = filter_index(
            self.index, self.filter.value, sort_by=self.sort_by.value, ascending=self.ascending.value
        )
        self.table.value = (
            f"<p>{len(self.view)} of {len(self.index)} runs in {escape(self.root)}</p>"
            + table_html(self.view[SHOWN])
        )
        self.choice.options = [
            (f"{r.path} · {r.prompt} · seed {r.seed}", r.path) for r in self.view.itertuples()
        ]

    def open(self, path: str | None = None, *, threaded: bool = True) -> bool:
        """Load the chosen run (or ``path``, relative to the root) and show it in an explorer."""
        target = path or self.choice.value
        if target is None:
            self.task.show_error(ValueError("choose a run in the list first"))
            return False
        return self.task.start(lambda: load_run(self.root / target), 1, self._show, threaded=threaded)

    def _show(self, run) -> None:
        from workbench.widgets.explorer import AttentionExplorer

        self.task.step()
        self.explorer = AttentionExplorer(run)
        self.opened.children = [self.explorer.widget]
        self.task.status.value = f"opened {escape(run.prompt)} · seed {run.seed}"

    def wait(self, timeout: float | None = None):
        self.task.wait(timeout)
        return self.explorer
