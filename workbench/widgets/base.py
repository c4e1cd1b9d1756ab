"""What every app shares: a Run / Cancel pair, a progress bar, an error area and one worker thread;
figures shown without figure widgets; a strip of choice buttons.

Long work runs in a thread so the kernel stays free to see a Cancel click (needs ipykernel >= 7.1 for
widget updates from threads). The Run button is disabled while work is going and a second start is
refused, so a double click never starts two runs. Any exception is shown in the app as a readable
message (and kept in ``.error``), never swallowed, and the status line says the work failed; a refused
request names the app's own box for the field (``RequestError.field`` mapped to the box's label); warnings
the work raises (words cut off by the text encoder, words the tokenizer does not know, a run stopped or
failed) are shown in the app too (and kept in ``.warnings``), not only in the kernel's log.

Figures are shown as plotly's own display data inside an ``Output`` widget (``FigureView``): one
widget per place in the app, whatever the figure, so replacing a figure opens no new widget.
"""

from __future__ import annotations

import threading
import traceback
import warnings
from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io as pio
import traitlets

from workbench.core.request import RequestError
from workbench.viz.render import escape


class TaskRunner:
    """Runs one job at a time in a thread, wired to a Run button, a Cancel button and a progress bar.

    Args:
        run_label: the Run button's label.
        description: the status line before the first run.
        labels: ``Request`` field -> the label of the app's box for it (``{"guidance_scale":
            "guidance"}``); a refused request is shown with the box's name. Fields not named keep theirs.
        hints: ``Request`` field -> how to lift a bound in this app's words, in place of the Python hint.
    """

    def __init__(
        self,
        run_label: str = "Run",
        description: str = "",
        *,
        labels: dict[str, str] | None = None,
        hints: dict[str, str] | None = None,
    ):
        self.labels, self.hints = dict(labels or {}), dict(hints or {})
        self.run_button = W.Button(description=run_label, button_style="primary", icon="play")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", bar_style="")
        self.status = W.HTML(value=escape(description))
        self.error_area = W.HTML(value="")
        self.warning_area = W.HTML(value="")
        self.cancel_event = threading.Event()
        self.error: str | None = None
        self.warnings: list[str] = []
        self._thread: threading.Thread | None = None
        self._running = False
        self._lock = threading.Lock()
        self.cancel_button.on_click(lambda _: self.cancel())
        self.run_button.add_class("wb-run-button")
        self.status.add_class("wb-status")
        self.progress.add_class("wb-progress")
        self.error_area.add_class("wb-error")
        self.warning_area.add_class("wb-warning")

    @property
    def busy(self) -> bool:
        """A job is going (in its thread, or in the caller's for ``threaded=False``)."""
        return self._running

    def controls(self) -> W.Widget:
        return W.VBox(
            [
                W.HBox([self.run_button, self.cancel_button, self.progress]),
                self.status,
                self.warning_area,
                self.error_area,
            ]
        )

    def start(
        self,
        job: Callable[[], object],
        total: int,
        on_done: Callable[[object], None],
        *,
        threaded: bool = True,
        status: str = "running…",
    ) -> bool:
        """Start ``job`` (no arguments) unless one is running; returns False when refused.

        ``on_done(result)`` runs after the job, in the same thread; it sets the final status line
        (``cancelled`` tells it whether Cancel was pressed). Warnings raised by either are shown.
        """
        with self._lock:
            if self.busy:
                return False
            self.run_button.disabled = True
            self.cancel_button.disabled = False
            self.cancel_event = threading.Event()
            self.clear_messages()
            self.status.value = escape(status)
            self.progress.max = max(1, total)
            self.progress.value = 0
            self.progress.bar_style = "info"
            self._running = True
            if threaded:
                self._thread = threading.Thread(target=self._work, args=(job, on_done), daemon=True)
                self._thread.start()
        if not threaded:
            self._work(job, on_done)
        return True

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def clear_messages(self) -> None:
        """Forget the last job's error and warnings (a new job, or new input)."""
        self.error = None
        self.error_area.value = ""
        self.warnings = []
        self.warning_area.value = ""

    def _work(self, job, on_done) -> None:
        caught: list = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                result = job()
                on_done(result)
            self.progress.bar_style = "warning" if self.cancelled else "success"
        except Exception as err:  # shown in the widget, kept in .error
            self.show_error(err)
        finally:
            self.show_warnings([str(w.message) for w in caught if issubclass(w.category, UserWarning)])
            # Under the lock: a click that arrives as soon as the button shows enabled waits here and then
            # finds the job over (a start refused as busy would do nothing the user could see).
            with self._lock:
                self._running = False
                self.run_button.disabled = False
                self.cancel_button.disabled = True

    def refuse(self, err: BaseException, label: str | None = None) -> None:
        """The inputs were refused before any work: an empty bar, the error, nothing else of the last job.
        ``label``: the box a refused request field came from, where the field alone does not say."""
        self.clear_messages()
        self.progress.value = 0
        self.show_error(err, label)

    def message(self, err: BaseException, label: str | None = None) -> str:
        """``err`` in the app's words: a refused request field named by its box's label (``label``, else
        ``labels``), the hint in the app's words where it has its own."""
        if not isinstance(err, RequestError):
            return str(err)
        return err.named(label or self.labels.get(err.field, err.field), hint=self.hints.get(err.field))

    def show_error(self, err: BaseException, label: str | None = None) -> None:
        """Show ``err`` in the app: the status says the work failed, the message is below it."""
        text = self.message(err, label)
        self.error = f"{type(err).__name__}: {text}"
        self.progress.bar_style = "danger"
        self.status.value = "failed: see the message below (nothing new is shown)"
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        self.error_area.value = (
            '<div style="color:#a00;border:1px solid #a00;padding:4px 8px;border-radius:4px">'
            f"<b>{escape(type(err).__name__)}</b>: {escape(text)}"
            f'<details><summary>details</summary><pre style="font-size:80%">{escape(detail)}</pre></details></div>'
        )

    def show_warnings(self, messages: list[str]) -> None:
        """Show warnings from the work in the app (each once, in order)."""
        self.warnings = list(dict.fromkeys(messages))
        self.warning_area.value = "".join(
            '<div style="color:#7a5300;background:#fff6db;border:1px solid #e0b000;padding:3px 8px;'
            f'border-radius:4px;margin:2px 0">⚠ {escape(m)}</div>'
            for m in self.warnings
        )

    def step(self, n: int = 1) -> None:
        self.progress.value = min(self.progress.max, self.progress.value + n)

    def cancel(self) -> None:
        if self.busy:
            self.cancel_event.set()
            self.status.value = "cancelling after the current step…"

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


def close_all(widgets) -> None:
    """Close widgets that are no longer shown (with the widgets inside them and their layout and style
    objects, which are widgets too), so the kernel lets them go."""
    for w in widgets:
        if isinstance(w, W.Box):
            close_all(w.children)
        if isinstance(w, W.Widget):
            parts = [getattr(w, name, None) for name in ("layout", "style")]
            w.close()
            for part in parts:
                if isinstance(part, W.Widget):
                    part.close()


def plotly_bundle(fig: go.Figure) -> dict:
    """The display data a notebook shows for ``fig``: plotly's own mime type, and a line of text."""
    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())
    title = (fig.layout.title.text or "figure").split("<br>")[0]
    return {**bundle, "text/plain": f"<plotly figure: {title}>"}


class FigureView:
    """One place in an app where a plotly figure is shown; ``show(fig)`` replaces what is there.

    The figure goes into an ``Output`` widget as display data (rendered by JupyterLab's plotly
    renderer), so no widget is made per figure and nothing is left behind when it is replaced.

    Attributes:
        widget: the ``Output`` widget to lay out.
        figure: the ``go.Figure`` shown now (None when empty).
    """

    def __init__(self, css_class: str | None = None):
        self.widget = W.Output()
        if css_class:
            self.widget.add_class(css_class)
        self.figure: go.Figure | None = None

    def show(self, fig: go.Figure) -> None:
        self.widget.outputs = ({"output_type": "display_data", "data": plotly_bundle(fig), "metadata": {}},)
        self.figure = fig

    def clear(self) -> None:
        self.widget.outputs = ()
        self.figure = None


class ChoiceStrip(W.HBox):
    """A row of buttons, one per option, of which the clicked one is selected (``value``).

    Every option is its own button, so repeated labels (the two “a” of “a red circle left of a blue
    square”) each select their own value; ``ToggleButtons`` finds its buttons by label and would not.

    Args:
        options: ``(label, value)`` pairs.
        value: the selected value (None: none).
        description: a label in front of the buttons.
    """

    options = traitlets.List()
    value = traitlets.Any(allow_none=True)

    def __init__(self, options=(), value=None, description: str = "", **kwargs):
        self._label = W.Label(description, layout=W.Layout(width="90px"))
        self._buttons: list[W.Button] = []
        super().__init__(**kwargs)
        self.add_class("wb-choice-strip")
        self.layout.flex_flow = "row wrap"
        self.options = list(options)
        self.value = value

    @traitlets.observe("options")
    def _rebuild(self, change) -> None:
        close_all(self._buttons)
        self._buttons = []
        for i, (label, _) in enumerate(self.options):
            button = W.Button(description=str(label), layout=W.Layout(width="auto"), tooltip=str(label))
            button.on_click(lambda _, i=i: self._pick(i))
            self._buttons.append(button)
        self.children = [self._label, *self._buttons]
        self._restyle()

    def _pick(self, i: int) -> None:
        self.value = self.options[i][1]

    @traitlets.observe("value")
    def _value_changed(self, change) -> None:
        self._restyle()

    def _restyle(self) -> None:
        for button, (_, value) in zip(self._buttons, self.options):
            chosen = value == self.value and self.value is not None
            button.button_style = "primary" if chosen else ""
            (button.add_class if chosen else button.remove_class)("wb-selected")
