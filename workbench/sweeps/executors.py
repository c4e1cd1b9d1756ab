"""Executors: where a sweep's jobs run. ``LocalExecutor`` runs them one after another in this process.

Every executor has the same four calls, in order:

* ``start(model, policy, cancel)`` loads the pipeline in every worker and returns each worker's
  ``Worker.info()`` (the sweep checks that all loaded the same weights);
* ``estimate(requests)``: bytes per request, from the model's shapes;
* ``run(jobs, out, started)`` yields ``(worker name, Outcome)`` as jobs finish; ``started(worker, job)``
  is called as each job begins. With ``out``, runs are saved by the workers themselves when the
  executor says ``workers_write`` (else the driver saves what comes back);
* ``close()``.

``RayExecutor`` (``ray_executor.py``) runs the same ``Worker`` in Ray actors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

from workbench.core.policy import RecordingPolicy
from workbench.core.request import Request

from .worker import Job, Outcome, Worker

Started = Callable[[str, Job], None]


class LocalExecutor:
    """Runs every job in this process on one pipeline (loaded once, or the one given).

    Args:
        pipe: a pipeline already loaded (the model source in the spec is then a label).
        device, dtype: for loading the model.
        threads: torch CPU threads (``None``: torch's own setting).
        on_step: called after every denoising step (apps that count steps).
    """

    name = "local"
    workers_write = True

    def __init__(
        self,
        *,
        pipe=None,
        device: str | None = None,
        dtype: str | None = None,
        threads: int | None = None,
        on_step: Callable[[], None] | None = None,
    ):
        self.pipe, self.device, self.dtype, self.threads, self.on_step = pipe, device, dtype, threads, on_step
        self.worker: Worker | None = None

    def start(self, model: str, policy: RecordingPolicy, cancel: threading.Event) -> list[dict]:
        import torch

        self._threads_before = torch.get_num_threads()  # put back by close: this is the caller's process
        self.worker = Worker(
            model,
            policy=policy,
            device=self.device,
            dtype=self.dtype,
            threads=self.threads,
            pipe=self.pipe,
            cancel=cancel,
            on_step=self.on_step,
        )
        return [self.worker.info()]

    def estimate(self, requests: list[Request]) -> list[int | None]:
        return self.worker.estimate(requests)

    def run(
        self, jobs: list[Job], out: str | os.PathLike | None, started: Started
    ) -> Iterator[tuple[str, Outcome]]:
        for job in jobs:
            if self.worker.cancel_event.is_set():
                return
            started(self.worker.name, job)
            yield self.worker.name, self.worker.run(job, out)

    def close(self) -> None:
        import torch

        if self.threads is not None and self.worker is not None:
            torch.set_num_threads(self._threads_before)
        self.worker = None


def make_executor(
    executor,
    *,
    pipe=None,
    address: str | None = None,
    num_cpus: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    workers_write: bool | None = None,
):
    """An executor from its name (``"local"`` or ``"ray"``) and options, or the executor given."""
    if not isinstance(executor, str):
        if not all(hasattr(executor, m) for m in ("start", "estimate", "run", "close")):
            raise TypeError(f"executor must be 'local', 'ray' or an executor object, got {executor!r}")
        return executor
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    if executor == "local":
        unused = {
            "address": address,
            "num_cpus": num_cpus,
            "workers": workers,
            "workers_write": workers_write,
        }
        given = sorted(k for k, v in unused.items() if v is not None)
        if given:
            raise ValueError(f"{', '.join(given)} apply to executor='ray' only")
        return LocalExecutor(pipe=pipe, device=device, dtype=dtype, threads=threads)
    if executor == "ray":
        if pipe is not None:
            raise ValueError("pipe= is for the local executor; Ray workers load the model themselves")
        from .ray_executor import RayExecutor

        return RayExecutor(
            address=address,
            num_cpus=num_cpus,
            workers=workers,
            threads=threads,
            device=device,
            dtype=dtype,
            workers_write=workers_write,
        )
    raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
