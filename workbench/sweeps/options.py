"""How a sweep's workers run: ``ExecutorOptions``, checked once where it is made and passed down unchanged
(command line or ``run_sweep`` -> ``make_executor`` -> ``LocalExecutor`` / ``RayExecutor`` -> ``Worker``),
and the shape every executor has (``Executor``).

Every executor runs its workers on ``threads`` torch threads each (1 unless asked otherwise), so one
request gives the same numbers on the local executor and on Ray.

Example:
    >>> ExecutorOptions(threads=2, device="cpu").threads
    2
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from workbench.core.errors import FieldError

if TYPE_CHECKING:
    from workbench.core.policy import RecordingPolicy
    from workbench.core.request import Request, RequestError

    from .worker import Job, Outcome

DEFAULT_THREADS = 1  # torch threads per worker, on every executor
RAY_ONLY = ("address", "num_cpus", "workers", "workers_write")

Started = Callable[[str, "Job"], None]  # told (worker name, job) as each job begins


class OptionsError(FieldError):
    """An executor option that cannot be used; ``field`` is the ``ExecutorOptions`` field (``"threads"``,
    ``"num_cpus"``, ...), so the command line can name its own option (``FieldError.named``)."""


def _positive(field: str, value, most: int | None = None) -> None:
    """A count in ``1..most`` (``most`` None: no upper bound), or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise OptionsError(field, f"must be >= 1, got {value!r}")
    if value is not None and most is not None and value > most:
        raise OptionsError(field, f"must be in 1..{most} (the CPU cores this machine gives), got {value}")


@dataclass(frozen=True)
class ExecutorOptions:
    """Where and how a sweep's workers run.

    Args:
        threads: torch CPU threads per worker (default 1 on every executor, so a request's numbers do not
            depend on the executor; ``None`` means the default). At most this machine's cores.
        device, dtype: where and how every worker loads the model (``load_pipeline``'s defaults).
        address: Ray: a running cluster (``"auto"``, ``"HOST:6379"``).
        num_cpus: Ray: the CPUs of a Ray instance started here (default, and at most, this machine's
            cores).
        workers: Ray: how many workers (default: one per GPU, else one per ``threads`` cores; at most
            this machine's cores unless ``address`` names a cluster).
        workers_write: Ray: workers save their runs into the output folder (default: when every node is
            this machine).

    Raises:
        OptionsError: a value that cannot be used, with its ``field``.
    """

    threads: int | None = DEFAULT_THREADS
    device: str | None = None
    dtype: str | None = None
    address: str | None = None
    num_cpus: int | None = None
    workers: int | None = None
    workers_write: bool | None = None

    def __post_init__(self):
        from workbench.core.numerics import check_threads, machine_cores

        if self.threads is None:
            object.__setattr__(self, "threads", DEFAULT_THREADS)
        try:
            check_threads(self.threads, "threads")
        except FieldError as err:
            raise OptionsError("threads", err.problem) from None
        # a Ray instance started here has this machine's cores, whatever it is told
        cores = machine_cores()
        _positive("num_cpus", self.num_cpus, cores)
        _positive("workers", self.workers, cores if self.address is None else None)
        for field in ("device", "dtype", "address"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise OptionsError(field, f"must be a str, got {value!r}")
        if self.workers_write is not None and not isinstance(self.workers_write, bool):
            raise OptionsError("workers_write", f"must be True, False or None, got {self.workers_write!r}")
        if self.address is not None and self.num_cpus is not None:
            raise OptionsError(
                "address", "names a running cluster; num_cpus starts a local instance: give one, not both"
            )

    def ray_only(self) -> list[str]:
        """The Ray-only options given (the local executor refuses them)."""
        return [f for f in RAY_ONLY if getattr(self, f) is not None]

    def replace(self, **fields) -> ExecutorOptions:
        return dataclasses.replace(self, **fields)


class Executor(Protocol):
    """What ``run_sweep`` calls on an executor, in this order.

    * ``start(model, policy, cancel)`` loads the pipeline in every worker and returns each worker's
      ``Worker.info()`` (the sweep checks that all loaded the same weights);
    * ``estimate(requests)``: bytes per request, from the model's shapes (the model's ``RequestError``
      for a request it refuses, None for one it cannot size);
    * ``edit_problems(planned)``: for each (request, edits), why the model would refuse the edits, or None;
    * ``run(jobs, out, started)`` yields ``(worker name, Outcome)`` as jobs finish; ``started(worker,
      job)`` is called as each job begins. With ``out``, the workers save their runs when the executor's
      ``workers_write`` says so (else the driver saves what comes back);
    * ``close()``, always, also after an error.
    """

    name: str
    workers_write: bool | None

    def start(self, model: str, policy: RecordingPolicy, cancel: threading.Event) -> list[dict]: ...

    def estimate(self, requests: list[Request]) -> list[int | RequestError | None]: ...

    def edit_problems(self, planned: list[tuple[Request, tuple]]) -> list[str | None]: ...

    def run(
        self, jobs: list[Job], out: str | os.PathLike | None, started: Started
    ) -> Iterator[tuple[str, Outcome]]: ...

    def close(self) -> None: ...
