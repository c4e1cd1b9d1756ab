"""Executors: where a sweep's jobs run. ``LocalExecutor`` runs them one after another in this process;
``RayExecutor`` (``ray_executor.py``) runs the same ``Worker`` in Ray actors. Both have the calls
``options.Executor`` lists, and both take their settings as one ``ExecutorOptions``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack

from workbench.core.policy import RecordingPolicy
from workbench.core.request import Request, RequestError

from .options import ExecutorOptions, Started
from .worker import Job, Outcome, Worker


class LocalExecutor:
    """Runs every job in this process on one pipeline (loaded once, or the one given).

    The whole sweep runs on ``options.threads`` torch threads (1 by default, as on Ray); the caller's
    count is put back when the sweep ends.

    Args:
        pipe: a pipeline already loaded (the model source in the spec is then a label).
        options: threads, device and dtype (the Ray-only options are refused by ``make_executor``).
        on_step: called after every denoising step (apps that count steps).
    """

    name = "local"
    workers_write = True

    def __init__(
        self,
        *,
        pipe=None,
        options: ExecutorOptions | None = None,
        on_step: Callable[[], None] | None = None,
    ):
        self.pipe, self.on_step = pipe, on_step
        self.options = options if options is not None else ExecutorOptions()
        self.worker: Worker | None = None
        self._threads = ExitStack()

    def start(self, model: str, policy: RecordingPolicy, cancel: threading.Event) -> list[dict]:
        from workbench.core.numerics import torch_threads

        self._threads.enter_context(torch_threads(self.options.threads))  # left by close
        self.worker = Worker(
            model, policy=policy, options=self.options, pipe=self.pipe, cancel=cancel, on_step=self.on_step
        )
        return [self.worker.info()]

    def estimate(self, requests: list[Request]) -> list[int | RequestError | None]:
        return self.worker.estimate(requests)

    def edit_problems(self, planned: list[tuple[Request, tuple]]) -> list[str | None]:
        return self.worker.edit_problems(planned)

    def run(
        self, jobs: list[Job], out: str | os.PathLike | None, started: Started
    ) -> Iterator[tuple[str, Outcome]]:
        for job in jobs:
            if self.worker.cancel_event.is_set():
                return
            started(self.worker.name, job)
            yield self.worker.name, self.worker.run(job, out)

    def close(self) -> None:
        self._threads.close()  # the caller's torch threads back
        self.worker = None


def make_executor(executor, options: ExecutorOptions, *, pipe=None):
    """An executor from its name (``"local"`` or ``"ray"``) and options, or the executor object given.

    Example:
        >>> make_executor("local", ExecutorOptions(threads=1)).name  # doctest: +SKIP
        'local'
    """
    if not isinstance(executor, str):
        if not all(hasattr(executor, m) for m in ("start", "estimate", "run", "close")):
            raise TypeError(f"executor must be 'local', 'ray' or an executor object, got {executor!r}")
        return executor
    if executor == "local":
        given = options.ray_only()
        if given:
            raise ValueError(f"{', '.join(given)} apply to executor='ray' only")
        return LocalExecutor(pipe=pipe, options=options)
    if executor == "ray":
        if pipe is not None:
            raise ValueError("pipe= is for the local executor; Ray workers load the model themselves")
        from .ray_executor import RayExecutor

        return RayExecutor(options)
    raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
