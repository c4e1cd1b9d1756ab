"""WordOrderLab and SeedLab: several runs from one form, then figures that compare them.

Both run their batch in a thread with one progress bar over all steps of all runs; Cancel stops after
the current step and the runs finished so far are kept and shown (with the analyses they allow). A new
Run clears the last results first, so what is shown always belongs to the current batch.

The guidance box starts at the model's own default unless a value is given. A refused request names
the lab's box for the field (``RequestError.field`` mapped to its label).

Example:
    WordOrderLab(pipe, prompt="a painting of a red circle", seed=0)
    SeedLab(pipe, prompt="a blue square above a red circle", seeds="0, 1, 2, 3")
"""

from __future__ import annotations

import re
from collections import Counter

import ipywidgets as W

from workbench.analysis.seeds import SeedGrid, seed_study
from workbench.analysis.trajectory import COMMIT_THRESHOLD
from workbench.analysis.word_order import compare_to_first, permutations
from workbench.core.adapters import adapter_for
from workbench.core.loading import model_source
from workbench.core.request import Request, RequestError, parse_seeds
from workbench.core.run import Run
from workbench.names import DEFAULT_PROMPT
from workbench.sweeps.executors import LocalExecutor
from workbench.sweeps.runner import SweepEvents, run_sweep
from workbench.sweeps.spec import SweepSpec
from workbench.viz.compare import side_by_side
from workbench.viz.export import Exportable
from workbench.viz.panels import Panel, seed_panels, word_order_panels
from workbench.viz.render import escape, table_html
from workbench.widgets.base import FigureView, TaskRunner, close_all
from workbench.widgets.export import ExportBar

_STYLE = {"description_width": "90px"}
LAB_SEEDS = 257  # the most seeds one lab runs (each seed is a full run per prompt)


class _RunStatus(SweepEvents):
    """'run 2 of 6: “prompt”, seed 1' in the app's status line as each run of the sweep starts."""

    def __init__(self, task: TaskRunner, total: int):
        self.task, self.total, self.count = task, total, 0

    def started(self, worker, job, planned):
        self.count += 1
        r = planned.request
        self.task.status.value = f"run {self.count} of {self.total}: “{escape(r.prompt)}”, seed {r.seed}"


class _BatchApp:
    """Shared wiring: a prompts × seeds sweep on the app's pipeline in a thread, then ``show(runs)``.

    ``guidance_scale`` None: the box starts at the model's own default guidance.
    """

    labels = {"guidance_scale": "guidance"}  # Request field -> the lab's box for it

    def __init__(self, pipe, steps: int, guidance_scale: float | None):
        self.pipe = pipe
        self.runs: list[Run] = []
        if guidance_scale is None:
            guidance_scale = adapter_for(pipe).default_guidance
        # Plain number boxes (a bounded one silently clamps); every run's request is checked at Run.
        self.steps = W.IntText(value=steps, description="steps", style=_STYLE, layout=W.Layout(width="200px"))
        self.guidance = W.FloatText(
            value=guidance_scale,
            step=0.5,
            description="guidance",
            style=_STYLE,
            layout=W.Layout(width="200px"),
        )
        self.task = TaskRunner("Run", labels=self.labels)
        self.results = W.VBox([])
        self.results.add_class("wb-results")
        self.shown_panels: list[Panel] = []
        self.export = ExportBar(self.exportable, self.export_prefix, ("png", "svg", "csv"))
        self.planned = 0
        self.task.run_button.on_click(lambda _: self.start())

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def error(self) -> str | None:
        return self.task.error

    def jobs(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def check(self, jobs: list[tuple[str, int]]) -> None:
        """Refuse (with a ``ValueError`` naming the box) jobs whose batch could show nothing; run after
        every request is checked, before any generation. Nothing to refuse here."""

    def prompt_label(self, prompt: str) -> str:
        """The label of the box ``prompt`` came from (named when a request refuses it)."""
        return "prompt"

    def start(self, *, threaded: bool = True) -> bool:
        """Check the form, clear the last results, and run the batch; False when refused."""
        if self.task.busy:
            return False
        steps, guidance = self.steps.value, self.guidance.value
        prompt = None
        try:
            jobs = self.jobs()
            for prompt, seed in jobs:  # every request checked before the first run
                Request(prompt, seed=seed, steps=steps, guidance_scale=guidance)
            prompt = None
            self.check(jobs)
        except (ValueError, TypeError) as err:
            self.clear_results()
            named = isinstance(err, RequestError) and err.field == "prompt" and prompt is not None
            self.task.refuse(err, self.prompt_label(prompt) if named else None)
            return False
        self.clear_results()
        self.planned = len(jobs)
        return self.task.start(
            lambda: self._batch(jobs, steps, guidance),
            steps * len(jobs),
            self._finish,
            threaded=threaded,
            status=f"starting {len(jobs)} runs…",
        )

    def clear_results(self) -> None:
        """Remove (and close) the last batch's figures and tables."""
        old = self.results.children
        self.results.children = []
        close_all(old)
        self.runs, self.shown_panels = [], []

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
        cancelled = self.task.cancelled
        if not runs:
            self.task.status.value = (
                "cancelled before the first run finished: nothing to show"
                if cancelled
                else "no run finished: nothing to show"
            )
            return
        self.task.status.value = f"{len(runs)} of {self.planned} runs finished; making the figures…"
        self.shown_panels = self.panels(runs)
        self.results.children = [_as_widget(p) for p in self.shown_panels]
        if cancelled or len(runs) < self.planned:
            self.task.status.value = (
                f"cancelled after {len(runs)} of {self.planned} runs: the finished runs are shown below"
                if cancelled
                else f"{len(runs)} of {self.planned} runs finished: they are shown below"
            )
        else:
            self.task.status.value = f"done: {len(runs)} runs; the figures are below"

    def panels(self, runs: list[Run]) -> list[Panel]:
        raise NotImplementedError

    export_prefix = "lab"

    def exportable(self) -> Exportable:
        """The figures and tables shown now, named by their captions, for the export row."""
        return panels_exportable(self.shown_panels)


def _as_widget(panel: Panel) -> W.Widget:
    """A figure panel as its figure (in an Output widget); a table panel as its caption, note and table."""
    if panel.figure is not None:
        view = FigureView("wb-figure")
        view.show(panel.figure)
        if not panel.note:
            return view.widget
        return W.VBox([W.HTML(f"<i>{escape(panel.note)}</i>"), view.widget])
    note = f" ({escape(panel.note)})" if panel.note else ""
    return W.HTML(f"<b>{escape(panel.caption)}</b>{note}:" + table_html(panel.table))


def panels_exportable(panels: list[Panel]) -> Exportable:
    """Figure and table panels as an ``Exportable``, each named by its caption (repeats numbered)."""
    what = Exportable()
    for panel in panels:
        into = what.figures if panel.figure is not None else what.tables
        name, k = panel.caption or "panel", 2
        while name in into:
            name, k = f"{panel.caption or 'panel'} {k}", k + 1
        into[name] = panel.figure if panel.figure is not None else panel.table
    return what


def _finished_runs(runs: list[Run], note: str) -> Panel:
    """The final images of runs that do not make a full study, each titled with its prompt and seed."""
    titles = [f"{r.prompt} · seed {r.seed}" for r in runs]
    return Panel.of(side_by_side(list(runs), titles), note=note)


def largest_grid(runs: list[Run]) -> list[Run]:
    """The runs of the largest full prompts × seeds grid inside ``runs`` (which may have holes).

    Either every prompt with the seeds all of them finished, or the prompts that finished every seed;
    whichever holds more runs. Example: after a Cancel, ``largest_grid(lab.runs)``.
    """
    prompts = list(dict.fromkeys(r.prompt for r in runs))
    seeds = list(dict.fromkeys(r.seed for r in runs))
    done = {(r.prompt, r.seed): r for r in runs}
    common = [s for s in seeds if all((p, s) in done for p in prompts)]
    full = [p for p in prompts if all((p, s) in done for s in seeds)]
    a, b = (prompts, common), (full, seeds)
    ps, ss = max(a, b, key=lambda g: len(g[0]) * len(g[1]))
    return [done[(p, s)] for p in ps for s in ss]


def order_words(order: str) -> list[str]:
    """The words of a word order as the lab compares them, in order: lowercased runs of letters, single
    digits and single other marks (white space only separates). Prompts with the same words hold the
    same of these (the comparison aligns the tokenizer's words, lowercased, by identity)."""
    return re.findall(r"[^\W\d_]+|\d|[^\w\s]|_", order.lower())


def _quoted(order: str, limit: int = 60) -> str:
    return f"“{order if len(order) <= limit else order[: limit - 1] + '…'}”"


def check_orders(orders: list[str]) -> None:
    """Refuse word orders that would give nothing new, before any of them is generated.

    Raises ``RequestError`` (field ``"orders"``) when every order is the first one again (white space
    and case aside), when a line repeats an earlier order, or when a line does not hold the first
    line's words (so it is no word order of it and cannot be compared with it).

    Example:
        >>> check_orders(["a painting of a horse", "a horse of a painting"])
    """
    keys = [tuple(order_words(o)) for o in orders]
    if len(set(keys)) < 2:
        raise RequestError(
            "orders",
            f"give nothing new: every line is the word order of line 1 ({_quoted(orders[0])}); give at "
            "least two different word orders, one per line (or press 'suggest orders')",
        )
    first = Counter(keys[0])
    for i, key in enumerate(keys[1:], start=1):
        if key in keys[:i]:
            j = keys.index(key)
            raise RequestError(
                "orders",
                f"have line {i + 1} ({_quoted(orders[i])}) repeat the word order of line {j + 1} "
                f"({_quoted(orders[j])}): it gives nothing new; give each word order once",
            )
        words = Counter(key)
        if words != first:
            only_first = ", ".join(_quoted(w, 20) for w in (first - words).elements()) or "nothing"
            only_here = ", ".join(_quoted(w, 20) for w in (words - first).elements()) or "nothing"
            raise RequestError(
                "orders",
                f"have line {i + 1} ({_quoted(orders[i])}) that is no word order of line 1 "
                f"({_quoted(orders[0])}), so the two cannot be compared: only in line 1: {only_first}; "
                f"only in line {i + 1}: {only_here}",
            )


def _suggested_orders(prompt: str) -> list[str]:
    """The prompt and its relation swap (nothing for an empty prompt)."""
    return permutations(prompt, kind="relation") if prompt.strip() else []


class WordOrderLab(_BatchApp):
    """One seed, a prompt in several word orders: images side by side, map pairs, divergence per step.

    The orders are checked at Run, before anything is generated (``check_orders``): each line must be
    another order of the first line's words; a list that gives nothing new is refused, naming the box.

    Args:
        pipe: a pipeline from ``load_pipeline``.
        prompt: the base prompt; its suggested orders fill the list (edit it freely, one per line).
        orders: the word orders to run (default: suggested from ``prompt``).
        seed: the one seed every order runs with (same initial noise).
        guidance_scale: ``None``: the model's own default.
    """

    export_prefix = "word-order-lab"

    def __init__(
        self,
        pipe,
        *,
        prompt: str = DEFAULT_PROMPT,
        orders: list[str] | None = None,
        seed: int = 0,
        steps: int = 20,
        guidance_scale: float | None = None,
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
                self.export.widget,
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
            raise RequestError(
                "orders", "must hold at least two word orders, one per line (or press 'suggest orders')"
            )
        return [(o, self.seed.value) for o in orders]  # the seed is checked with each request

    def check(self, jobs: list[tuple[str, int]]) -> None:
        """The orders must compare: each a new order of the first one's words (see ``check_orders``)."""
        check_orders([prompt for prompt, _ in jobs])

    def prompt_label(self, prompt: str) -> str:
        return "orders"  # what runs are the orders, not the base prompt

    def panels(self, runs: list[Run]) -> list[Panel]:
        if len(runs) < 2:
            return [_finished_runs(runs, "one word order finished: the comparisons need two")]
        return word_order_panels(runs, compare_to_first(runs, self.pipe, normalize="max"))


class SeedLab(_BatchApp):
    """A prompt (or two) over a list of seeds: the grid, x0 trajectories and the commitment step.

    Args:
        pipe: a pipeline from ``load_pipeline``.
        prompt: the first prompt (an empty one runs, with a note: the model's unconditional images).
        second_prompt: optional second prompt (then the seed-vs-prompt variance split is shown too).
        seeds: the seeds, as text: ``"0, 1, 2"`` or ``"0-3"``; distinct, at most ``LAB_SEEDS``.
        guidance_scale: ``None``: the model's own default.
    """

    export_prefix = "seed-lab"

    def __init__(
        self,
        pipe,
        *,
        prompt: str = DEFAULT_PROMPT,
        second_prompt: str = "",
        seeds: str = "0, 1, 2, 3",
        steps: int = 20,
        guidance_scale: float | None = None,
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
                self.export.widget,
            ]
        )
        self.widget.add_class("wb-seed-lab")

    def jobs(self) -> list[tuple[str, int]]:
        second = self.second_prompt.value.strip()  # optional: blank means no second prompt
        prompts = [self.prompt.value.strip(), *([second] if second else [])]
        seeds = parse_seeds(self.seeds.value, limit=LAB_SEEDS, field="seeds")
        return [(p, s) for p in prompts for s in seeds]

    def prompt_label(self, prompt: str) -> str:
        first = self.prompt.value.strip()
        return "2nd prompt" if prompt != first else "prompt"

    def panels(self, runs: list[Run]) -> list[Panel]:
        """The study's panels; after a Cancel, every finished image, then the study of the largest
        full grid among them."""
        grid = largest_grid(runs)
        if len(grid) == len(runs):
            return seed_panels(seed_study(runs, threshold=self.threshold.value))
        full = SeedGrid.from_runs(grid) if grid else None
        note = f"{len(runs)} of {self.planned} runs finished" + (
            f"; below, the study of the {len(full.prompts)} × {len(full.seeds)} grid they fill"
            if full is not None
            else ""
        )
        panels = [_finished_runs(runs, note)]
        if full is not None:
            panels += seed_panels(seed_study(grid, threshold=self.threshold.value))
        return panels
