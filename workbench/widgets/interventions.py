"""InterventionLab: the causal word-order lab (``workbench.lab``) from a form, with its curves afterwards.

The form holds caption pairs (a two-object caption and its object swap, one pair per line of the two
boxes), seeds, steps, the steps k each curve starts its edit at, and which curves to draw. Run goes
through every generation in a thread with one progress bar; Cancel stops after the current generation
and the points finished so far are kept and shown. A refused form names its box.

Example:
    InterventionLab(pipe, seeds="0-3", ks="0, 15, 21, 25")
"""

from __future__ import annotations

import re

import ipywidgets as W
import pandas as pd

from workbench.analysis.word_order import relation_swap
from workbench.core.errors import FieldError
from workbench.core.request import parse_seeds
from workbench.lab import CURVES, PAIRS, Caption, LabResult, LabSettings, LabSettingsError, lab_size, run_lab
from workbench.lab.causal import check_requests, same_layout
from workbench.viz.export import Exportable
from workbench.viz.interventions import lab_curves_figure
from workbench.viz.render import escape, table_html
from workbench.widgets.base import FigureView, TaskRunner, close_all
from workbench.widgets.export import ExportBar
from workbench.widgets.labs import LAB_SEEDS

_STYLE = {"description_width": "90px"}
EXAMPLE = "a red circle left of a blue square"


class FormError(FieldError):
    """A box of the lab's form that cannot be used; ``field`` is the box's label."""


def object_swap(caption: str) -> str | None:
    """The caption with its two objects trading places (the relation kept); None when ``caption`` is
    not a two-object caption.

    Example:
        >>> object_swap("a sketch of a red circle above a blue square")
        'a sketch of a blue square above a red circle'
    """
    parsed = Caption.parse(caption)
    if parsed is None:
        return None
    swapped = relation_swap(caption)
    other = Caption.parse(swapped) if swapped is not None else None
    if other is None or (other.first, other.second) != (parsed.second, parsed.first):
        return None
    return swapped


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_pairs(captions: str, swaps: str) -> tuple[tuple[str, str], ...]:
    """(caption, swap) pairs from the two boxes' text (one per line, in the same order); a
    ``FormError`` naming ``captions`` or ``swaps`` when they cannot make the lab's pairs."""
    a, b = _lines(captions), _lines(swaps)
    if not a:
        raise FormError("captions", f"must hold at least one two-object caption, e.g. '{EXAMPLE}'")
    _check_captions("captions", a)
    if len(b) != len(a):
        counts = f"{_count(len(a), 'caption')}, {_count(len(b), 'swap')}"
        raise FormError(
            "swaps", f"must hold one swap per caption ({counts}); press 'suggest swaps' to write them"
        )
    _check_captions("swaps", b)
    for i, (x, y) in enumerate(zip(a, b), start=1):
        cx, cy = Caption.parse(x), Caption.parse(y)
        if {cx.first, cx.second} != {cy.first, cy.second}:
            raise FormError(
                "swaps",
                f"line {i} ({y!r}) must name the caption's two objects, "
                f"{' '.join(cx.first)} and {' '.join(cx.second)}",
            )
        if same_layout(cx, cy):
            raise FormError(
                "swaps",
                f"line {i} ({y!r}) places the objects as its caption does; "
                "the swap must place them the other way",
            )
    return tuple(zip(a, b))


def _check_captions(box: str, texts: list[str]) -> None:
    for i, text in enumerate(texts, start=1):
        if Caption.parse(text) is None:
            raise FormError(
                box,
                f"line {i} ({text!r}) is not a two-object caption such as '{EXAMPLE}' "
                "(colour shape, then left of / right of / above / below, then colour shape)",
            )


def read_ks(text: str, steps: int) -> tuple[int, ...]:
    """The steps k to start edits at, from ``"0, 10, 25"``: distinct ints in 0..steps, in rising order."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise FormError("ks", f"must name at least one step, e.g. 0, {steps // 2}, {steps}")
    bad = [p for p in parts if not re.fullmatch(r"[+-]?\d+", p)]
    if bad:
        raise FormError("ks", f"must be whole numbers separated by commas; got {bad[0]!r}")
    ks = [int(p) for p in parts]
    outside = [k for k in ks if not 0 <= k <= steps]
    if outside:
        raise FormError("ks", f"must lie in 0..{steps} (the steps box); got {outside}")
    repeated = sorted({k for k in ks if ks.count(k) > 1})
    if repeated:
        raise FormError("ks", f"must be distinct; repeated: {repeated}")
    return tuple(sorted(ks))


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The lab's summary with its fractions rounded for reading."""
    return summary.round({"mean": 3, "low": 3, "high": 3})


class InterventionLab:
    """The causal word-order lab as an app: a form, Run / Cancel, then the curves and their table.

    Args:
        pipe: a pipeline from ``load_pipeline``.
        pairs: (caption, swap) pairs, one per line of the two boxes (default: the lab's first pair).
        seeds: the seeds, as text (``"0-3"``, ``"0, 5, 9"``) or a list of ints.
        steps: denoising steps of every generation.
        ks: the steps each curve starts its edit at, as text (``"0, 15, 25"``) or a list of ints.
        curves: the curves ticked (default: all of ``workbench.lab.CURVES``).

    Attributes:
        result: the last run's ``LabResult`` (None before a run, or after a refused one).
        widget: the app's box.
    """

    def __init__(
        self, pipe, *, pairs=None, seeds="0-3", steps: int = 25, ks="0,10,15,18,21,23,25", curves=None
    ):
        self.pipe = pipe
        self.result: LabResult | None = None
        self.planned = self.done = 0
        pairs = list(PAIRS[:1] if pairs is None else pairs)
        text = dict(style=_STYLE, layout=W.Layout(width="90%"))
        self.captions = W.Textarea(
            value="\n".join(a for a, _ in pairs), description="captions", rows=2, **text
        )
        self.swaps = W.Textarea(value="\n".join(b for _, b in pairs), description="swaps", rows=2, **text)
        self.suggest = W.Button(description="suggest swaps", icon="exchange")
        self.seeds = W.Text(
            value=_as_text(seeds), description="seeds", style=_STYLE, layout=W.Layout(width="300px")
        )
        self.steps = W.IntText(value=steps, description="steps", style=_STYLE, layout=W.Layout(width="200px"))
        self.ks = W.Text(value=_as_text(ks), description="ks", style=_STYLE, layout=W.Layout(width="400px"))
        asked = list(CURVES if curves is None else curves)
        self.unknown_curves = [c for c in asked if c not in CURVES]
        self.curves = {
            c: W.Checkbox(value=c in asked, description=c, indent=False, layout=W.Layout(width="auto"))
            for c in CURVES
        }
        self.task = TaskRunner("Run lab", "press Run lab: every curve's generations, then the figure")
        self.results = W.VBox([])
        self.results.add_class("wb-results")
        self.shown_figure = None  # the curves shown now (None before a result)
        self.export = ExportBar(self.exportable, "intervention-lab", ("png", "svg", "csv"))
        self._wire()
        self.widget = W.VBox(
            [
                self.captions,
                W.HBox([self.swaps, self.suggest]),
                W.HBox([self.seeds, self.steps, self.ks]),
                W.HBox([W.Label("curves", layout=W.Layout(width="90px")), *self.curves.values()]),
                self.task.controls(),
                self.results,
                self.export.widget,
            ]
        )
        self.widget.add_class("wb-intervention-lab")
        if self.unknown_curves:
            self.task.refuse(self._unknown_curves_error())

    def _wire(self) -> None:
        self.suggest.on_click(lambda _: self.suggest_swaps())
        self.captions.observe(self._captions_changed, names="value")
        self.task.run_button.on_click(lambda _: self.start())
        for box in self.curves.values():
            box.observe(lambda _: self.unknown_curves.clear(), names="value")  # the form now says which

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def error(self) -> str | None:
        return self.task.error

    # ------------------------------------------------------------ the form

    def suggest_swaps(self) -> list[str]:
        """Fill the swaps box with each caption's object swap (a line that is no caption is kept blank)."""
        swaps = [object_swap(c) or "" for c in _lines(self.captions.value)]
        self.swaps.value = "\n".join(swaps)
        return swaps

    def _captions_changed(self, change) -> None:
        """Keep the swaps box following the captions while it holds the suggested swaps (or nothing)."""
        before = "\n".join(object_swap(c) or "" for c in _lines(change["old"]))
        if self.swaps.value.strip() in ("", before.strip()):
            self.suggest_swaps()

    def _unknown_curves_error(self) -> FormError:
        return FormError("curves", f"has unknown curves {self.unknown_curves}; the lab draws {list(CURVES)}")

    def settings(self) -> LabSettings:
        """The form as the lab's settings; a ``FormError`` (or ``RequestError``) naming the box when refused."""
        if self.unknown_curves:
            raise self._unknown_curves_error()
        pairs = read_pairs(self.captions.value, self.swaps.value)
        seeds = parse_seeds(self.seeds.value, limit=LAB_SEEDS, field="seeds")
        steps = self.steps.value
        check_requests(pairs, seeds, steps)  # before the ks, which are read against the steps
        ks = read_ks(self.ks.value, steps)
        curves = tuple(c for c, box in self.curves.items() if box.value)
        if not curves:
            raise FormError("curves", f"must have at least one ticked; the lab draws {list(CURVES)}")
        try:
            return LabSettings(pairs=pairs, seeds=seeds, steps=steps, ks=ks, curves=curves)
        except LabSettingsError as err:  # the lab's field as the form's box ("pairs": the captions)
            raise FormError({"pairs": "captions"}.get(err.field, err.field), err.problem) from None

    # ------------------------------------------------------------ running

    def start(self, *, threaded: bool = True) -> bool:
        """Check the form, clear the last results, and run the lab; False when refused (nothing runs)."""
        if self.task.busy:
            return False
        try:
            settings = self.settings()
        except (ValueError, TypeError) as err:
            self.clear_results()
            self.task.refuse(err)
            return False
        self.clear_results()
        self.planned, self.done = lab_size(self.pipe, settings), 0
        return self.task.start(
            lambda: run_lab(self.pipe, settings, progress=self._progress, cancel=self.task.cancel_event),
            self.planned,
            self._finish,
            threaded=threaded,
            status=f"starting the lab: {self.planned} generations…",
        )

    def _progress(self, done: int, total: int) -> None:
        """After each generation: the bar and 'generation 12 of 96' (called from the lab's thread)."""
        self.done, self.planned = done, total
        self.task.progress.max = max(1, total, done)
        self.task.progress.value = done
        if not self.task.cancelled:
            self.task.status.value = f"generation {done} of {total}"

    def run_sync(self) -> LabResult | None:
        self.start(threaded=False)
        return self.result

    def wait(self, timeout: float | None = None) -> LabResult | None:
        self.task.wait(timeout)
        return self.result

    def clear_results(self) -> None:
        """Remove (and close) the last run's figure and table."""
        old = self.results.children
        self.results.children = []
        close_all(old)
        self.result = None

    def _finish(self, result: LabResult) -> None:
        self.result = result
        stopped = self.task.cancelled
        said = (
            f"stopped after {self.done} of {self.planned} generations"
            if stopped
            else f"done: {self.done} generations"
        )
        if result.summary.empty:
            self.task.status.value = f"{said}: no point finished, nothing to show"
            return
        if not stopped:
            self.task.progress.value = self.task.progress.max
        self.results.children = self._shown(result)
        kept = "; the points finished so far are shown below" if stopped else "; the curves are below"
        self.task.status.value = said + kept

    def _shown(self, result: LabResult) -> list[W.Widget]:
        """The curves (in an Output widget) and the summary table."""
        counts = result.summary["n"].unique()
        units = int(counts[0]) if len(counts) == 1 else None
        view = FigureView("wb-figure")
        view.show(lab_curves_figure(result.summary, judge=result.judge, units=units))
        self.shown_figure = view.figure
        missing = [c for c in result.settings.curves if c not in set(result.summary.curve)]
        note = (
            f" (not judged on this model: {', '.join(missing)})"
            if missing and not self.task.cancelled
            else ""
        )
        table = W.HTML(
            f"<b>Summary</b>: per curve and x, the mean over (caption pair, seed) units and its 95% "
            f"interval{escape(note)}:" + table_html(summary_table(result.summary))
        )
        return [view.widget, table]

    def exportable(self) -> Exportable:
        """The curves shown, the summary table and every judged point (rows), for the export row."""
        if self.result is None or self.shown_figure is None:
            return Exportable()
        return Exportable(
            figures={"curves": self.shown_figure},
            tables={"summary": self.result.summary, "rows": self.result.rows},
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _as_text(value) -> str:
    """A box's text from a text or a list of ints."""
    return value if isinstance(value, str) else ", ".join(str(v) for v in value)
