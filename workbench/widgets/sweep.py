"""SweepApp: run a sweep from JupyterLab with an overall bar, each worker's status, the latest images and
Cancel (the runs finished so far stay; running the app again finishes the rest).

Example:
    SweepApp("sweep.json", out="runs/sweep")                                   # this kernel
    SweepApp(spec, out="runs/sweep", executor="ray", num_cpus=4)              # a local Ray instance
"""

from __future__ import annotations

import os

import ipywidgets as W

from workbench.sweeps.runner import SweepEvents, SweepResult, run_sweep
from workbench.sweeps.spec import SweepSpec, as_spec
from workbench.viz.render import display_scale, escape, png_bytes
from workbench.widgets.base import TaskRunner


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
                app.add_image(outcome.image, f"{row['prompt']} · seed {row['seed']}")
        app.show_workers()


class SweepApp:
    """A sweep in a notebook.

    Args:
        spec: a ``SweepSpec``, its dict or a spec file's path.
        out: the output folder (a second run of the same spec there resumes).
        latest: how many of the latest images to show.
        sweep_options: passed to ``workbench.sweep`` (``executor="ray"``, ``num_cpus=``, ``threads=``,
            ``disk_budget=``, ``retry_failed=``, ...).
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
        planned = len(self.spec.plan())
        self.task = TaskRunner("Run sweep", description=f"{planned} runs planned; finished ones are skipped")
        self.header = W.HTML(self._header(planned))
        self.workers_html = W.HTML("")
        self.images = W.HBox([], layout=W.Layout(flex_flow="row wrap"))
        self.task.run_button.on_click(lambda _: self.start())
        self.widget = W.VBox(
            [
                self.header,
                self.task.controls(),
                self.workers_html,
                W.HTML("<b>latest images</b>"),
                self.images,
            ]
        )
        self.widget.add_class("wb-sweep-app")

    def _header(self, planned: int) -> str:
        s = self.spec
        prompts = len(s.prompt_list())
        settings = len(s.steps) * len(s.guidance_scales) * len(s.schedulers) * len(s.sizes)
        where = self.options.get("executor", "local")
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
        """Start the sweep (in a thread unless ``threaded=False``); False when one is already running."""
        self.counts = {}
        self.images.children = []
        return self.task.start(self._work, len(self.spec.plan()), self._finish, threaded=threaded)

    def run_sync(self) -> SweepResult | None:
        self.start(threaded=False)
        return self.result

    def wait(self, timeout: float | None = None) -> SweepResult | None:
        self.task.wait(timeout)
        return self.result

    def _work(self) -> SweepResult:
        return run_sweep(
            self.spec,
            self.out,
            events=_AppEvents(self),
            cancel=self.task.cancel_event,
            progress=False,
            log=None,
            **self.options,
        )

    def _finish(self, result: SweepResult) -> None:
        self.result = result
        self.task.status.value = escape(result.summary())
        for state in self.worker_state.values():
            state["now"] = "done"
        self.show_workers()

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

    def add_image(self, image, caption: str) -> None:
        tile = W.VBox(
            [
                W.Image(value=png_bytes(image, display_scale(image, 128)), format="png"),
                W.HTML(f'<div style="max-width:140px;font-size:80%">{escape(caption)}</div>'),
            ]
        )
        self.images.children = (tile, *self.images.children)[: self.latest]
