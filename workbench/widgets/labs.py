"""WordOrderLab and SeedLab: several runs from one form, then figures that compare them.

Both run their batch in a thread with one progress bar over all steps of all runs; Cancel stops after
the current step and the runs finished so far are kept.

Example:
    WordOrderLab(pipe, prompt="a painting of a red circle", seed=0)
    SeedLab(pipe, prompt="a blue square above a red circle", seeds="0, 1, 2, 3")
"""

from __future__ import annotations

import re

import ipywidgets as W
import plotly.graph_objects as go

from workbench.analysis.seeds import seed_study
from workbench.analysis.trajectory import COMMIT_THRESHOLD
from workbench.analysis.word_order import compare_to_first, permutations
from workbench.core.loading import model_source
from workbench.core.run import Run
from workbench.sweep.executors import LocalExecutor
from workbench.sweep.runner import SweepEvents, run_sweep
from workbench.sweep.spec import SweepSpec
from workbench.viz.panels import Panel, seed_panels, word_order_panels
from workbench.viz.render import escape, table_html
from workbench.widgets.base import TaskRunner

_STYLE = {"description_width": "90px"}


def parse_seeds(text: str) -> list[int]:
    """'0, 1, 5-7' -> [0, 1, 5, 6, 7]; a clear ValueError for anything else."""
    seeds: list[int] = []
    for part in [p.strip() for p in re.split(r"[,\s]+", text.strip()) if p.strip()]:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(
                f"seeds must be non-negative integers or ranges like 3-6, separated by commas; got {part!r}"
            )
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi - lo > 256:
            raise ValueError(f"seed range {part!r} must go upwards and hold at most 257 seeds")
        seeds += range(lo, hi + 1)
    if not seeds:
        raise ValueError("give at least one seed, e.g. '0, 1, 2'")
    return list(dict.fromkeys(seeds))


class _RunStatus(SweepEvents):
    """'run 2 of 6: “prompt”, seed 1' in the app's status line as each run of the sweep starts."""

    def __init__(self, task: TaskRunner, total: int):
        self.task, self.total, self.count = task, total, 0

    def started(self, worker, job, planned):
        self.count += 1
        r = planned.request
        self.task.status.value = f"run {self.count} of {self.total}: “{escape(r.prompt)}”, seed {r.seed}"


class _BatchApp:
    """Shared wiring: a prompts × seeds sweep on the app's pipeline in a thread, then ``show(runs)``."""

    def __init__(self, pipe, steps: int, guidance_scale: float):
        self.pipe = pipe
        self.runs: list[Run] = []
        self.steps = W.BoundedIntText(
            value=steps, min=1, max=1000, description="steps", style=_STYLE, layout=W.Layout(width="200px")
        )
        self.guidance = W.BoundedFloatText(
            value=guidance_scale,
            min=0,
            max=50,
            step=0.5,
            description="guidance",
            style=_STYLE,
            layout=W.Layout(width="200px"),
        )
        self.task = TaskRunner("Run")
        self.results = W.VBox([])
        self.task.run_button.on_click(lambda _: self.start())

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def error(self) -> str | None:
        return self.task.error

    def jobs(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def start(self, *, threaded: bool = True) -> bool:
        try:
            jobs = self.jobs()
        except ValueError as err:
            self.task.show_error(err)
            return False
        steps, guidance = self.steps.value, self.guidance.value
        return self.task.start(
            lambda: self._batch(jobs, steps, guidance), steps * len(jobs), self._finish, threaded=threaded
        )

    def run_sync(self) -> list[Run]:
        self.start(threaded=False)
        return self.runs

    def wait(self, timeout: float | None = None) -> list[Run]:
        self.task.wait(timeout)
        return self.runs

    def _batch(self, jobs, steps, guidance) -> list[Run]:
        """The jobs (a prompts × seeds grid) as a sweep on this pipeline, in this thread; the finished
        runs in the jobs' order (a run stopped by Cancel is dropped)."""
        prompts = list(dict.fromkeys(p for p, _ in jobs))
        seeds = list(dict.fromkeys(s for _, s in jobs))
        spec = SweepSpec(
            model=model_source(self.pipe), prompts=prompts, seeds=seeds, steps=steps, guidance_scales=guidance
        )
        result = run_sweep(
            spec,
            executor=LocalExecutor(pipe=self.pipe, on_step=self.task.step),
            events=_RunStatus(self.task, len(spec.plan())),
            cancel=self.task.cancel_event,
            progress=False,
            log=None,
        )
        failed = result.index[result.index.status == "failed"]
        if len(failed):  # shown in the app, as an error raised by a run always was
            first = failed.iloc[0]
            raise RuntimeError(
                f"{len(failed)} of {len(jobs)} runs failed; “{first.prompt}”, seed {first.seed}: {first.error}"
            )
        order = {(p, s): i for i, (p, s) in enumerate(jobs)}
        finished = [r for r in result.runs.values() if r.complete]
        return sorted(finished, key=lambda r: order[(r.prompt, r.seed)])

    def _finish(self, runs: list[Run]) -> None:
        self.runs = runs
        if not runs:
            self.results.children = []
            return
        self.task.status.value = f"{len(runs)} run(s) done"
        self.results.children = [_as_widget(p) for p in self.panels(runs)]

    def panels(self, runs: list[Run]) -> list[Panel]:
        raise NotImplementedError


def _as_widget(panel: Panel) -> W.Widget:
    """A figure panel as a live figure; a table panel as its bold caption, note and table."""
    if panel.figure is not None:
        return go.FigureWidget(panel.figure)
    note = f" ({escape(panel.note)})" if panel.note else ""
    return W.HTML(f"<b>{escape(panel.caption)}</b>{note}:" + table_html(panel.table))


def _suggested_orders(prompt: str) -> list[str]:
    """The prompt and its relation swap (nothing for an empty prompt)."""
    return permutations(prompt, kind="relation") if prompt.strip() else []


class WordOrderLab(_BatchApp):
    """One seed, a prompt in several word orders: images side by side, map pairs, divergence per step.

    Args:
        pipe: a pipeline from ``load_pipeline``.
        prompt: the base prompt; its suggested orders fill the list (edit it freely, one per line).
        orders: the word orders to run (default: suggested from ``prompt``).
        seed: the one seed every order runs with (same initial noise).
    """

    def __init__(
        self,
        pipe,
        *,
        prompt: str = "a red circle left of a blue square",
        orders: list[str] | None = None,
        seed: int = 0,
        steps: int = 20,
        guidance_scale: float = 4.0,
    ):
        super().__init__(pipe, steps, guidance_scale)
        self.prompt = W.Text(value=prompt, description="prompt", style=_STYLE, layout=W.Layout(width="90%"))
        self.suggest = W.Button(description="suggest orders", icon="exchange")
        self.orders = W.Textarea(
            value="\n".join(orders or _suggested_orders(prompt)),
            description="orders",
            rows=3,
            style=_STYLE,
            layout=W.Layout(width="90%"),
        )
        self.seed = W.IntText(value=seed, description="seed", style=_STYLE, layout=W.Layout(width="200px"))
        self.suggest.on_click(lambda _: self.suggest_orders())
        self.widget = W.VBox(
            [
                W.HBox([self.prompt, self.suggest]),
                self.orders,
                W.HBox([self.seed, self.steps, self.guidance]),
                self.task.controls(),
                self.results,
            ]
        )
        self.widget.add_class("wb-word-order-lab")

    def suggest_orders(self) -> list[str]:
        orders = _suggested_orders(self.prompt.value)
        self.orders.value = "\n".join(orders)
        return orders

    def jobs(self) -> list[tuple[str, int]]:
        orders = [line.strip() for line in self.orders.value.splitlines() if line.strip()]
        if len(orders) < 2:
            raise ValueError("give at least two word orders, one per line (or press 'suggest orders')")
        if self.seed.value < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed.value}")
        return [(o, self.seed.value) for o in orders]

    def panels(self, runs: list[Run]) -> list[Panel]:
        return word_order_panels(runs, compare_to_first(runs, self.pipe, normalize="max"))


class SeedLab(_BatchApp):
    """A prompt (or two) over a list of seeds: the grid, x0 trajectories and the commitment step.

    Args:
        pipe: a pipeline from ``load_pipeline``.
        prompt: the first prompt.
        second_prompt: optional second prompt (then the seed-vs-prompt variance split is shown too).
        seeds: the seeds, as text: ``"0, 1, 2"`` or ``"0-3"``.
    """

    def __init__(
        self,
        pipe,
        *,
        prompt: str = "a red circle left of a blue square",
        second_prompt: str = "",
        seeds: str = "0, 1, 2, 3",
        steps: int = 20,
        guidance_scale: float = 4.0,
        threshold: float = COMMIT_THRESHOLD,
    ):
        super().__init__(pipe, steps, guidance_scale)
        self.prompt = W.Text(value=prompt, description="prompt", style=_STYLE, layout=W.Layout(width="90%"))
        self.second_prompt = W.Text(
            value=second_prompt,
            description="2nd prompt",
            placeholder="optional",
            style=_STYLE,
            layout=W.Layout(width="90%"),
        )
        self.seeds = W.Text(value=seeds, description="seeds", style=_STYLE, layout=W.Layout(width="400px"))
        self.threshold = W.BoundedFloatText(
            value=threshold,
            min=0.001,
            max=1.0,
            step=0.01,
            description="commit at",
            style=_STYLE,
            layout=W.Layout(width="200px"),
        )
        self.widget = W.VBox(
            [
                self.prompt,
                self.second_prompt,
                W.HBox([self.seeds, self.steps, self.guidance, self.threshold]),
                self.task.controls(),
                self.results,
            ]
        )
        self.widget.add_class("wb-seed-lab")

    def jobs(self) -> list[tuple[str, int]]:
        prompts = [p for p in (self.prompt.value.strip(), self.second_prompt.value.strip()) if p]
        if not prompts:
            raise ValueError("give a prompt")
        return [(p, s) for p in prompts for s in parse_seeds(self.seeds.value)]

    def panels(self, runs: list[Run]) -> list[Panel]:
        return seed_panels(seed_study(runs, threshold=self.threshold.value))
