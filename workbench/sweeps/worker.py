"""A sweep worker: one loaded pipeline that runs requests one at a time and says how each ended.

The same class runs in the driver's process (the local executor) and inside a Ray actor (one per
worker), so both executors make the same runs the same way. A run that raises is a failed outcome
with its error, not a crash; a run stopped by the sweep's cancel is a cancelled outcome and is not kept.

Example:
    worker = Worker("toy", policy=RecordingPolicy())
    outcome = worker.run(Job("3f0c…", Request("a red circle", seed=0, steps=6)), out="runs/sweep")
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from PIL import Image

from workbench.core.policy import RecordingPolicy
from workbench.core.request import Request, RequestError
from workbench.core.run import Run

from .options import ExecutorOptions
from .record import finished_fields, save_finished
from .spec import for_spec


@dataclass(frozen=True)
class Job:
    """One request to run, with its stable id."""

    request_id: str
    request: Request
    edits: tuple = ()  # ``Edit`` values applied to the run


@dataclass
class Outcome:
    """How one job ended.

    Attributes:
        request_id: the job's id.
        status: ``"done"``, ``"failed"`` or ``"cancelled"`` (stopped by the sweep's cancel; not kept).
        fields: what the worker knows for the index row: ``error``, ``image_sha256``,
            ``attention_sha256``, the run's size, ``thumb``/``words``/``word_mass``
            (``analysis.sweeps.run_summary``), ``worker``, ``seconds``.
        run: the run, unless the worker saved it itself (then ``fields["path"]`` says where); a failed
            outcome carries the run when it ran to a stop (its ``failure`` says why) and was not saved.
        image: the final image (for apps that show the latest runs).
    """

    request_id: str
    status: str
    fields: dict = field(default_factory=dict)
    run: Run | None = None
    image: Image.Image | None = None


@contextmanager
def _noting_ctrl_c(seen: threading.Event):
    """Note a Ctrl-C that arrives during the block (Python raises ``KeyboardInterrupt`` as usual), so a
    run the interrupt made fail is not taken for a failed request. Main thread only (signals arrive
    there); elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # ignored, or left to the system: nothing to note
        yield
        return

    def note(signum, frame):
        seen.set()
        previous(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Worker:
    """Holds one pipeline (loaded once) and runs jobs on it, each on ``options.threads`` torch threads.

    Args:
        model: the model source (``load_pipeline``'s), or a label when ``pipe`` is given.
        policy: the sweep's recording policy.
        options: the sweep's ``ExecutorOptions``: ``device`` and ``dtype`` for ``load_pipeline``
            (defaults: CUDA and float16 when a GPU is visible), ``threads`` for every run.
        pipe: an already loaded pipeline to use instead of loading ``model``.
        name: how the worker is shown (``"local"``, ``"ray-0"``).
        cancel: an event that stops the current run after its current step and every later one.
        on_step: called after every denoising step of every run (progress of apps that count steps).
    """

    def __init__(
        self,
        model: str,
        *,
        policy: RecordingPolicy | None = None,
        options: ExecutorOptions | None = None,
        pipe=None,
        name: str = "local",
        cancel: threading.Event | None = None,
        on_step: Callable[..., None] | None = None,
    ):
        from workbench.core.loading import load_pipeline

        self.options = options if options is not None else ExecutorOptions()
        self.policy = policy if policy is not None else RecordingPolicy()
        self.model = model
        self.loads = 0 if pipe is not None else 1
        if pipe is None:
            pipe = load_pipeline(model, device=self.options.device, dtype=self.options.dtype)
        self.pipe = pipe
        self.name = name
        self.cancel_event = cancel if cancel is not None else threading.Event()
        self.on_step = on_step
        self.runs = 0

    def info(self) -> dict:
        """Who this worker is, what it loaded (the weights' hash is checked across workers) and the
        numerics every run of it has (``core.numerics.numerics``, on ``options.threads`` threads)."""
        from workbench.core.adapters import adapter_for
        from workbench.core.loading import weights_hash
        from workbench.core.numerics import numerics

        param = next(adapter_for(self.pipe).denoiser.parameters())
        here = {**numerics(param.device, param.dtype), "threads": self.options.threads}
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": here["device"],
            "dtype": here["dtype"],
            "threads": here["threads"],
            "numerics": here,
            "weights_sha256": weights_hash(self.pipe),
            "loads": self.loads,
            "runs": self.runs,
        }

    def estimate(self, requests: list[Request]) -> list[int | RequestError | None]:
        """Bytes each request's run folder will take (the model's ``RequestError`` for a request it
        refuses; None for one that cannot be sized)."""
        from .estimate import run_bytes

        return [run_bytes(self.pipe, r, self.policy) for r in requests]

    def edit_problems(self, planned: list[tuple[Request, tuple]]) -> list[str | None]:
        """Why the model would refuse each (request, edits), or None (``edits.precheck``)."""
        from workbench.edits.precheck import edit_problem

        return [edit_problem(self.pipe, request, edits) for request, edits in planned]

    def cancel(self) -> None:
        """Stop the current run after its current step, and every run after it."""
        self.cancel_event.set()

    def run(self, job: Job, out: str | os.PathLike | None = None) -> Outcome:
        """Run one job; with ``out``, save the run to ``out/runs/<id>`` (atomically) and return no run.

        Raises ``KeyboardInterrupt`` when the run was stopped by Ctrl-C (not by the sweep's cancel).
        """
        started = time.perf_counter()
        base = {"worker": self.name}
        if self.cancel_event.is_set():
            return Outcome(job.request_id, "cancelled", base)
        run, error = self._generate(job.request, job.edits)
        if error is not None:  # a run that raises is data: the sweep records it and goes on
            base.update(error=error, seconds=time.perf_counter() - started)
            return Outcome(job.request_id, "failed", base)
        if run.failure:  # it ran, and stopped failed (e.g. non-finite latents)
            base.update(error=run.failure, seconds=time.perf_counter() - started)
            return Outcome(job.request_id, "failed", base, run=run if out is None else None)
        if not run.complete:
            if self.cancel_event.is_set():
                return Outcome(job.request_id, "cancelled", base)
            raise KeyboardInterrupt  # generate keeps what Ctrl-C interrupted; the sweep stops here
        fields = {**base, **finished_fields(run)}
        if out is not None:
            fields.update(save_finished(run, out, job.request_id))
        self.runs += 1
        fields["seconds"] = time.perf_counter() - started
        return Outcome(job.request_id, "done", fields, run=None if out is not None else run, image=run.image)

    def _generate(self, request: Request, edits: tuple = ()) -> tuple[Run | None, str | None]:
        """``(run, None)``, or ``(None, the error)`` when generating raised; Ctrl-C propagates."""
        from workbench.core.numerics import torch_threads
        from workbench.edits.session import generate

        step = None if self.on_step is None else (lambda *_: self.on_step())
        interrupted = threading.Event()
        try:
            # every run on the options' threads: a thread pool may run this on a fresh thread
            with _noting_ctrl_c(interrupted), torch_threads(self.options.threads):
                run = generate(
                    self.pipe,
                    request,
                    edits=edits,
                    policy=self.policy,
                    progress=False,
                    cancel=self.cancel_event,
                    on_step=step,
                )
        except Exception as err:
            if interrupted.is_set():  # Ctrl-C made it raise: the sweep stops
                raise KeyboardInterrupt from None
            if isinstance(err, RequestError):  # the model refused a setting: named as the spec names it
                return None, f"{type(err).__name__}: {for_spec(err)}"
            return None, f"{type(err).__name__}: {err}"
        if interrupted.is_set():
            raise KeyboardInterrupt  # generate keeps what Ctrl-C interrupted; the sweep stops here
        return run, None
