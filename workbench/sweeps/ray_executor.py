"""The Ray executor: one Ray actor per worker, each holding its own loaded pipeline.

The model loads once per worker (in the actor's constructor), not per run. Each actor reserves
``threads`` CPUs from Ray and sets ``torch.set_num_threads(threads)``, so workers never ask for more
cores than there are; when the cluster has GPUs, each actor takes one (``num_gpus=1``) and the model
goes on it. Runs are saved by the workers when the output folder is on the same machine (a local Ray
instance, or a cluster whose nodes all run on this host) or when told that every node sees the folder
at the same path (``workers_write=True``); otherwise the run travels back and the driver saves it.

Where Ray comes from:

* ``address="auto"`` or ``"HOST:6379"``: a running cluster (``ray start --head`` on one node,
  ``ray start --address HOST:6379`` on the others); the workbench must be installed on every node;
* ``num_cpus=N``: a Ray instance started here, with N CPUs, listening on 127.0.0.1 only;
* Ray already initialised in this process (``ray.init(...)`` beforehand): used as it is, left running.

Each actor has a second, one-thread concurrency group for control calls (``info``, ``cancel``), so a
Cancel reaches a worker in the middle of a run; runs themselves go one at a time, two queued per
worker so no worker waits for the driver between runs.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from workbench.core.policy import RecordingPolicy
from workbench.core.request import Request

from .executors import Started
from .worker import Job, Outcome, Worker

QUEUE_DEPTH = 2  # jobs handed to a worker at once: the one running and the next


def _positive(name: str, value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class RayExecutor:
    """Runs a sweep's jobs on Ray actors (see the module docstring).

    Args:
        address: a running cluster's address (``"auto"``, ``"HOST:6379"``); None starts a local instance.
        num_cpus: CPUs of the local instance (default: this machine's count).
        workers: how many actors (default: one per GPU, else CPUs // threads).
        threads: torch threads (and Ray CPUs) per worker (default: 1 on CPU; CPUs // GPUs with GPUs).
        device, dtype: for loading the model in each worker.
        workers_write: workers save their runs into the output folder (default: when every node runs on
            this machine).
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        workers: int | None = None,
        threads: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        workers_write: bool | None = None,
    ):
        if address is not None and num_cpus is not None:
            raise ValueError("give address (a running cluster) or num_cpus (a local instance), not both")
        self.address = address
        self.num_cpus = _positive("num_cpus", num_cpus)
        self.workers = _positive("workers", workers)
        self.threads = _positive("threads", threads)
        self.device, self.dtype = device, dtype
        self.workers_write = workers_write
        self.actors: list = []
        self.names: list[str] = []
        self._owns_ray = False

    # ------------------------------------------------------------ starting

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise ImportError('the Ray executor needs Ray: pip install "workbench[ray]"') from None
        if ray.is_initialized():
            return ray
        if self.address is not None:
            ray.init(address=self.address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=self.num_cpus or os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",  # a local instance is reachable from this machine only
            )
        self._owns_ray = True
        return ray

    def _shape(self, ray) -> tuple[int, int, int]:
        """(workers, threads each, GPUs each) that fit the cluster."""
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        use_gpu = gpus > 0 and not (self.device or "").startswith("cpu")
        if use_gpu:
            workers = self.workers or gpus
            threads = self.threads or max(1, cpus // workers)
        else:
            threads = self.threads or 1
            workers = self.workers or max(1, cpus // threads)
        if workers * threads > cpus or (use_gpu and workers > gpus):
            have = f"{cpus} CPUs" + (f" and {gpus} GPUs" if use_gpu else "")
            raise ValueError(
                f"{workers} workers × {threads} threads{' and a GPU each' if use_gpu else ''} do not fit this "
                f"Ray cluster ({have}); ask for fewer workers or threads"
            )
        return workers, threads, 1 if use_gpu else 0

    def start(self, model: str, policy: RecordingPolicy, cancel: threading.Event) -> list[dict]:
        ray = self._connect()
        self.cancel_event = cancel
        workers, threads, gpus = self._shape(ray)
        if self.workers_write is None:
            hosts = {n["NodeManagerHostname"] for n in ray.nodes() if n.get("Alive")}
            self.workers_write = hosts == {socket.gethostname()}
        actor = ray.remote(concurrency_groups={"control": 1})(Worker).options(
            num_cpus=threads, num_gpus=gpus, max_restarts=2
        )
        if Path(model).exists():  # a local folder: the same absolute path on every node
            model = str(Path(model).resolve())
        self.names = [f"ray-{i}" for i in range(workers)]
        self._deaths = [0] * workers
        self.actors = [
            actor.remote(
                model, policy=policy, device=self.device, dtype=self.dtype, threads=threads, name=name
            )
            for name in self.names
        ]
        try:
            return ray.get([self._control(a, "info") for a in self.actors])
        except ray.exceptions.RayError as err:
            raise RuntimeError(f"the Ray workers could not load {model!r}: {_cause(err)}") from None

    def _control(self, actor, method: str, *args):
        return getattr(actor, method).options(concurrency_group="control").remote(*args)

    def estimate(self, requests: list[Request]) -> list[int | None]:
        import ray

        return ray.get(self._control(self.actors[0], "estimate", requests))

    # ------------------------------------------------------------ running

    def run(self, jobs: list[Job], out, started: Started) -> Iterator[tuple[str, Outcome]]:
        import ray

        # a worker's working folder need not be this one: it gets the folder's absolute path
        target = None if out is None or not self.workers_write else str(Path(out).resolve())
        pending = deque(jobs)
        queues: list[list] = [[] for _ in self.actors]  # refs handed to each worker; the first is running
        inflight: dict = {}  # object ref -> (worker index, job)
        usable = [True] * len(self.actors)  # a worker that died twice without a run between is dropped
        stopping = False

        def fill(i: int) -> None:
            while usable[i] and pending and len(queues[i]) < QUEUE_DEPTH and not stopping:
                job = pending.popleft()
                ref = self.actors[i].run.remote(job, target)
                inflight[ref] = (i, job)
                queues[i].append(ref)
                if len(queues[i]) == 1:
                    started(self.names[i], job)

        for i in range(len(self.actors)):
            fill(i)
        while inflight:
            if self.cancel_event.is_set() and not stopping:
                stopping = True
                pending.clear()
                for a in self.actors:
                    self._control(a, "cancel")
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.2)
            for ref in ready:
                if ref not in inflight:  # given back to the queue when its worker died
                    continue
                i, job = inflight.pop(ref)
                queues[i].remove(ref)
                try:
                    outcome = ray.get(ref)
                    self._deaths[i] = 0
                except ray.exceptions.RayActorError as err:
                    outcome = self._died(i, job, err, queues, inflight, pending)
                    usable[i] = self._deaths[i] < 2
                    if not any(usable):
                        raise RuntimeError(f"every Ray worker died; the last said: {_cause(err)}") from None
                except ray.exceptions.RayTaskError as err:
                    if isinstance(err.cause, KeyboardInterrupt):
                        raise KeyboardInterrupt from None
                    raise err.as_instanceof_cause() from None
                if queues[i]:
                    started(self.names[i], inflight[queues[i][0]][1])
                fill(i)
                if not usable[i]:  # its share goes to the others
                    for k in range(len(self.actors)):
                        fill(k)
                yield self.names[i], outcome

    def _died(self, i: int, job: Job, err, queues, inflight, pending) -> Outcome:
        """The run a worker died in is a failed row; the runs queued behind it go back to the queue."""
        self._deaths[i] += 1
        for ref in reversed(queues[i]):
            pending.appendleft(inflight.pop(ref)[1])
        queues[i].clear()
        error = f"the worker running it died ({_cause(err)})"
        return Outcome(job.request_id, "failed", {"worker": self.names[i], "error": error})

    def close(self) -> None:
        if not self.actors and not self._owns_ray:
            return
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


def _cause(err) -> str:
    """The first line that says what went wrong inside a worker."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line or "Exception:" in line]
    return (errors or lines or [type(err).__name__])[-1]
