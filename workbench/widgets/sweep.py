"""SweepApp: run a sweep from JupyterLab with an overall bar, each worker's status, the latest images and
Cancel (the runs finished so far stay; running the app again finishes the rest), and its HTML report.

Each image is captioned with its prompt, its seed and every setting the sweep varies (guidance, steps,
scheduler, size, edits). A sweep keeps only finished runs: the run Cancel stops midway is dropped, and
the app says so. A Run with nothing left to do keeps the images on show.

Example:
    SweepApp("sweep.json", out="runs/sweep")                                   # this kernel
    SweepApp(spec, out="runs/sweep", executor="ray", num_cpus=4)              # a local Ray instance
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import ipywidgets as W
import pandas as pd
from PIL import Image

from workbench.store.runs import IMAGE
from workbench.sweeps.folder import read_index
from workbench.sweeps.runner import SweepEvents, SweepResult, run_sweep
from workbench.sweeps.spec import SweepSpec, as_spec
from workbench.viz.export import Exportable
from workbench.viz.render import display_scale, escape, png_bytes
from workbench.widgets.base import TaskRunner, close_all
from workbench.widgets.export import ExportBar

# the report's name in the sweep's output folder (where ``workbench sweep`` writes it too)
REPORT_FILE = "report.html"

# generate's warning for a run stopped midway; a sweep drops such a run, so the app says that instead
_STOPPED = re.compile(r"generation stopped after (\d+) of (\d+) steps; the run keeps those steps")


def image_caption(spec: SweepSpec, row) -> str:
    """A run's caption: its prompt and seed, then every setting that varies in ``spec`` (its value in
    ``row``, the run's index row), so two images of one prompt and seed never look alike.

    Example:
        >>> image_caption(spec, row)  # doctest: +SKIP
        'a red circle · seed 5 · guidance 4'
    """
    parts = [f"{row['prompt']} · seed {row['seed']}"]
    if len(spec.guidance_scales) > 1:
        parts.append(f"guidance {float(row['guidance']):g}")
    if len(spec.steps) > 1:
        parts.append(f"{row['steps']} steps")
    if len(spec.schedulers) > 1:
        parts.append(f"scheduler {row['scheduler']}")
    if len(spec.sizes) > 1:
        parts.append(f"{row['width']}×{row['height']}")
    if len(spec.edits) > 1:
        parts.append(f"edits: {row['edits']}" if row["edits"] else "unedited")
    return " · ".join(parts)


def _stopped_message(message: str) -> str:
    """generate's 'the run keeps those steps' in a sweep's words (the sweep drops that run)."""
    m = _STOPPED.match(message)
    if m is None:
        return message
    return (
        f"Cancel stopped a run after {m.group(1)} of {m.group(2)} steps; a sweep keeps only finished runs, "
        "so that run was dropped (Run sweep again makes it anew)"
    )


class _AppEvents(SweepEvents):
    """Sweep events turned into widget updates (called from the sweep's thread)."""

    def __init__(self, app: SweepApp):
        self.app = app

    def planned(self, sweep_id, total, skipped, estimate):
        app = self.app
        app.task.progress.max = max(1, total)
        app.task.progress.value = skipped
        app.sweep_id = sweep_id
        note = f"; {estimate.describe()}" if estimate is not None else ""
        app.task.status.value = escape(f"sweep {sweep_id}: {total} runs, {skipped} finished before{note}")

    def workers(self, infos):
        self.app.worker_state = {
            i["name"]: {
                "host": i["host"],
                "device": i["device"],
                "threads": i["threads"],
                "runs": 0,
                "now": "starting",
            }
            for i in infos
        }
        self.app.show_workers()

    def started(self, worker, job, planned):
        r = planned.request
        self.app.worker_state[worker]["now"] = f"running “{r.prompt}”, seed {r.seed}"
        self.app.show_workers()

    def finished(self, worker, outcome, row):
        app = self.app
        state = app.worker_state[worker]
        seconds = outcome.fields.get("seconds")
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        if outcome.status == "cancelled":
            state["now"] = "cancelled"
        else:
            app.task.step()
            state["runs"] += 1
            state["now"] = f"idle (last run {outcome.status}{took})"
            app.counts[outcome.status] = app.counts.get(outcome.status, 0) + 1
            if outcome.image is not None and row is not None:
                app.add_image(outcome.image, image_caption(app.spec, row))
        app.show_workers()


class SweepApp:
    """A sweep in a notebook.

    Args:
        spec: a ``SweepSpec``, its dict or a spec file's path.
        out: the output folder (a second run of the same spec there resumes).
        latest: how many of the latest images to show.
        sweep_options: passed to ``workbench.sweep`` (``executor="ray"``, ``num_cpus=``, ``threads=``,
            ``disk_budget=``, ``retry_failed=``, ...).

    Attributes:
        report_path: the HTML report the Report button wrote last (None before).
    """

    def __init__(
        self,
        spec: SweepSpec | dict | str | os.PathLike,
        out: str | os.PathLike,
        *,
        latest: int = 8,
        **sweep_options,
    ):
        self.spec = as_spec(spec)
        self.out = out
        self.options = sweep_options
        self.latest = latest
        self.result: SweepResult | None = None
        self.sweep_id: str | None = None
        self.worker_state: dict[str, dict] = {}
        self.counts: dict[str, int] = {}
        self.report_path: Path | None = None
        planned = len(self.spec.plan())
        self.task = TaskRunner("Run sweep", description=f"{planned} runs planned; finished ones are skipped")
        self.header = W.HTML(self._header(planned))
        self.workers_html = W.HTML("")
        self.images = W.HBox([], layout=W.Layout(flex_flow="row wrap"))
        self.report_button = W.Button(
            description="Report", icon="file-text-o", tooltip="write the HTML report"
        )
        self.report_button.add_class("wb-report-button")
        self.report_link = W.HTML("")
        self.export = ExportBar(self.exportable, "sweep", ("csv",))
        self.task.run_button.on_click(lambda _: self.start())
        self.report_button.on_click(lambda _: self.write_report())
        # one job at a time: the Report button is off while a sweep (or a report) is going
        self.task.run_button.observe(
            lambda ch: setattr(self.report_button, "disabled", ch["new"]), "disabled"
        )
        self.widget = W.VBox(
            [
                self.header,
                self.task.controls(),
                W.HBox([self.report_button, self.report_link]),
                self.export.widget,
                self.workers_html,
                W.HTML("<b>latest images</b>"),
                self.images,
            ]
        )
        self.widget.add_class("wb-sweep-app")

    def _header(self, planned: int) -> str:
        s = self.spec
        prompts = len(s.prompt_list())
        settings = len(s.steps) * len(s.guidance_scales) * len(s.schedulers) * len(s.sizes) * len(s.edits)
        executor = self.options.get("executor", "local")
        where = executor if isinstance(executor, str) else getattr(executor, "name", type(executor).__name__)
        return (
            f"<b>Sweep</b> of {escape(s.model)}: {prompts} prompts × {len(s.seeds)} seeds × {settings} "
            f"settings = {planned} runs, into {escape(self.out)} ({escape(where)})"
        )

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def error(self) -> str | None:
        return self.task.error

    def start(self, *, threaded: bool = True) -> bool:
        """Start the sweep (in a thread unless ``threaded=False``); False when one is already running.
        The images on show stay until new ones come."""
        if self.task.busy:
            return False
        self.counts = {}
        return self.task.start(self._work, len(self.spec.plan()), self._finish, threaded=threaded)

    def run_sync(self) -> SweepResult | None:
        self.start(threaded=False)
        return self.result

    def wait(self, timeout: float | None = None) -> SweepResult | None:
        self.task.wait(timeout)
        return self.result

    def _work(self) -> SweepResult:
        """The sweep, in the task's thread; generate's warnings passed on in a sweep's words."""
        caught: list = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                return run_sweep(
                    self.spec,
                    self.out,
                    events=_AppEvents(self),
                    cancel=self.task.cancel_event,
                    progress=False,
                    log=None,
                    **self.options,
                )
        finally:  # outside the recording block, so the app's own recording shows them
            for w in caught:
                warnings.warn_explicit(_stopped_message(str(w.message)), w.category, w.filename, w.lineno)

    def _finish(self, result: SweepResult) -> None:
        self.result = result
        self.task.status.value = escape(self._status(result))
        for state in self.worker_state.values():
            state["now"] = "done"
        self.show_workers()
        if result.ran == 0 and not self.images.children:
            self.show_finished(result.index)

    def _status(self, result: SweepResult) -> str:
        """The status line after a Run: what is left, what Cancel kept, or the sweep's summary."""
        left = result.planned - result.done - result.failed
        if result.ran == 0 and left == 0:
            if result.failed:
                return (
                    f"nothing left to run: all {result.planned} runs have ended ({result.done} done, "
                    f"{result.failed} failed; SweepApp(..., retry_failed=True) runs the failed ones again)"
                )
            return f"nothing left to run: all {result.planned} runs are done · sweep {result.sweep_id}"
        if self.task.cancelled:
            return (
                f"cancelled with {result.done} of {result.planned} runs finished, and kept; a sweep keeps only "
                f"finished runs, so a run stopped midway is dropped; Run sweep again to run the other {left} · "
                + result.summary()
            )
        return result.summary()

    def show_workers(self) -> None:
        rows = "".join(
            f"<tr><td>{escape(name)}</td><td>{escape(s['host'])}</td><td>{escape(s['device'])}</td>"
            f"<td>{escape(s['threads'])}</td><td>{escape(s['runs'])}</td><td>{escape(s['now'])}</td></tr>"
            for name, s in self.worker_state.items()
        )
        done, failed = self.counts.get("done", 0), self.counts.get("failed", 0)
        self.workers_html.value = (
            f"<div>{done} done, {failed} failed in this session</div>"
            '<table class="wb-table"><tr><th>worker</th><th>host</th><th>device</th><th>threads</th>'
            f"<th>runs</th><th>now</th></tr>{rows}</table>"
        )

    def exportable(self) -> Exportable:
        """The sweep's index (one row per run: settings, status, hashes, paths) and the workers' table."""
        index = self.result.index if self.result is not None else read_index(self.out)
        tables = {"index": index} if not index.empty else {}
        if self.worker_state:
            tables["workers"] = pd.DataFrame(
                [{"worker": name, **state} for name, state in self.worker_state.items()]
            )
        return Exportable(tables=tables)

    def add_image(self, image, caption: str) -> None:
        """Put ``image`` first in the strip (the oldest past ``latest`` leave it, closed)."""
        tile = W.VBox(
            [
                W.Image(value=png_bytes(image, display_scale(image, 128)), format="png"),
                W.HTML(f'<div style="max-width:140px;font-size:80%">{escape(caption)}</div>'),
            ]
        )
        shown = (tile, *self.images.children)
        self.images.children = shown[: self.latest]
        close_all(shown[self.latest :])

    def show_finished(self, index: pd.DataFrame) -> None:
        """Fill the strip with the latest finished runs of ``index`` (a sweep's rows), read from their
        folders in ``out``, the newest first; runs whose image cannot be read are left out."""
        done = index[index.status == "done"].sort_values("finished", ascending=False)
        for row in reversed(done.head(self.latest).to_dict("records")):
            try:
                with Image.open(Path(self.out) / str(row["path"]) / IMAGE) as im:
                    image = im.convert("RGB")
            except OSError:
                continue
            self.add_image(image, image_caption(self.spec, row))

    # ------------------------------------------------------------- the report

    def write_report(self, *, threaded: bool = True) -> bool:
        """Write the sweep's HTML report (``report.html`` in the output folder: counts, thumbnails, the
        seed-vs-prompt and word-order analyses, the failures) and show a link to it; False when refused
        (a sweep or a report is going)."""
        return self.task.start(
            self._report, 1, self._reported, threaded=threaded, status="writing the sweep's report…"
        )

    def _report(self) -> Path:
        from workbench.report import report

        index = self.result.index if self.result is not None else read_index(self.out)
        if index.empty:
            raise ValueError("the sweep has no finished runs yet: press Run sweep first, then Report")
        ids = sorted(set(index.sweep_id))
        if len(ids) > 1:  # the folder's index, before this app ran: which sweep is this app's is not known
            raise ValueError(
                f"{self.out} holds {len(ids)} sweeps ({', '.join(ids)}): press Run sweep first (finished "
                "runs are skipped), then Report, so the report shows this spec's sweep"
            )
        title = f"Sweep {ids[0]}" + (f" · {self.spec.name}" if self.spec.name else "")
        return report([], Path(self.out) / REPORT_FILE, title=title, sweep=index, quiet=True)

    def _reported(self, path: Path) -> None:
        self.task.step()
        self.report_path = path
        self.report_link.value = _link(path)
        self.task.status.value = escape(f"report written to {path} · open it in a web browser")


def _link(path: Path) -> str:
    """A link to ``path`` (relative to the kernel's folder, as JupyterLab resolves it when it lies
    below) with its path, and how to see its figures in JupyterLab."""
    try:
        href = Path(os.path.relpath(path)).as_posix()
    except ValueError:  # another drive
        href = path.resolve().as_uri()
    if href.startswith("../"):
        href = path.resolve().as_uri()
    return (
        f'<a href="{escape(href)}" target="_blank" rel="noopener">{escape(path.name)}</a> '
        f'<span style="color:#666">({escape(path)}; in JupyterLab press “Trust HTML” to see its figures)</span>'
    )
