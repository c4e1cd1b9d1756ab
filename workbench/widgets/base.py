"""What every app shares: a Run / Cancel pair, a progress bar, an error area and one worker thread.

Long work runs in a thread so the kernel stays free to see a Cancel click (needs ipykernel >= 7.1 for
widget updates from threads). The Run button is disabled while work is going and a second start is
refused, so a double click never starts two runs. Any exception is shown in the app as a readable
message (and kept in ``.error``), never swallowed; warnings the work raises (words cut off by the text
encoder, words the tokenizer does not know, a run stopped or failed) are shown in the app too (and kept
in ``.warnings``), not only in the kernel's log.
"""

from __future__ import annotations

import threading
import traceback
import warnings
from collections.abc import Callable

import ipywidgets as W

from workbench.viz.render import escape


class TaskRunner:
    """Runs one job at a time in a thread, wired to a Run button, a Cancel button and a progress bar."""

    def __init__(self, run_label: str = "Run", description: str = ""):
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
        self._lock = threading.Lock()
        self.cancel_button.on_click(lambda _: self.cancel())
        self.run_button.add_class("wb-run-button")
        self.progress.add_class("wb-progress")
        self.error_area.add_class("wb-error")
        self.warning_area.add_class("wb-warning")

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

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
    ) -> bool:
        """Start ``job`` (no arguments) unless one is running; returns False when refused."""
        with self._lock:
            if self.busy:
                return False
            self.run_button.disabled = True
            self.cancel_button.disabled = False
            self.cancel_event = threading.Event()
            self.error = None
            self.error_area.value = ""
            self.warnings = []
            self.warning_area.value = ""
            self.progress.max = max(1, total)
            self.progress.value = 0
            self.progress.bar_style = "info"
            if threaded:
                self._thread = threading.Thread(target=self._work, args=(job, on_done), daemon=True)
                self._thread.start()
        if not threaded:
            self._work(job, on_done)
        return True

    def _work(self, job, on_done) -> None:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                result = job()
            self.show_warnings([str(w.message) for w in caught if issubclass(w.category, UserWarning)])
            on_done(result)
            cancelled = self.cancel_event.is_set()
            self.progress.bar_style = "warning" if cancelled else "success"
            if cancelled:
                self.status.value = "cancelled; the steps done so far are kept"
        except Exception as err:  # shown in the widget, kept in .error
            self.show_error(err)
        finally:
            self.run_button.disabled = False
            self.cancel_button.disabled = True

    def show_error(self, err: BaseException) -> None:
        self.error = f"{type(err).__name__}: {err}"
        self.progress.bar_style = "danger"
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        self.error_area.value = (
            '<div style="color:#a00;border:1px solid #a00;padding:4px 8px;border-radius:4px">'
            f"<b>{escape(type(err).__name__)}</b>: {escape(err)}"
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
        self.cancel_event.set()
        self.status.value = "cancelling after the current step…"

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
