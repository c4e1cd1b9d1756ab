"""The Ray executor: one Ray actor per worker, each holding its own loaded pipeline.

The model loads once per worker (in the actor's constructor), not per run. Each actor reserves
``threads`` CPUs from Ray (``ExecutorOptions.threads``, 1 by default as on the local executor) and runs
on that many torch threads, so workers never ask for more cores than there are; when the cluster has
GPUs, each actor takes one (``num_gpus=1``) and the model goes on it. Runs are saved by the workers when the output folder is on the same machine (a local Ray
instance, or a cluster whose nodes all run on this host) or when told that every node sees the folder
at the same path (``workers_write=True``); otherwise the run travels back and the driver saves it.

Where Ray comes from:

* ``address="auto"`` or ``"HOST:6379"``: a running cluster (``ray start --head`` on one node,
  ``ray start --address HOST:6379`` on the others); the workbench must be installed on every node.
  A cluster with token authentication (Ray's default from 2.60) needs its token and
  ``RAY_AUTH_MODE=token`` on every node and here; without them the sweep stops with one line saying so;
* ``num_cpus=N``: a Ray instance started here, with N CPUs, listening on 127.0.0.1 only;
* Ray already initialised in this process (``ray.init(...)`` beforehand): used as it is, left running.

Each actor has a second, one-thread concurrency group for control calls (``info``, ``cancel``), so a
Cancel reaches a worker in the middle of a run; runs themselves go one at a time, two queued per
worker so no worker waits for the driver between runs.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from workbench.core.policy import RecordingPolicy
from workbench.core.request import Request, RequestError

from .options import ExecutorOptions, Started
from .worker import Job, Outcome, Worker

QUEUE_DEPTH = 2  # jobs handed to a worker at once: the one running and the next


class RayAuthenticationError(ConnectionError):
    """The Ray cluster refused this process: it uses token authentication and this machine lacks the
    token (or ``RAY_AUTH_MODE=token``)."""

    def __init__(self, address: str | None):
        where = f"the Ray cluster at {address}" if address else "the Ray cluster"
        super().__init__(
            f"{where} uses token authentication: copy the head node's token (its ~/.ray/auth_token, or what "
            "`ray get-auth-token` prints there) to ~/.ray/auth_token here (or set RAY_AUTH_TOKEN), and set "
            "RAY_AUTH_MODE=token here and on every node before `ray start`"
        )


def _is_authentication_error(err: BaseException) -> bool:
    """Whether Ray refused the connection for want of its token (Ray's own ``AuthenticationError``)."""
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:  # a Ray without token authentication
        return False
    return isinstance(err, AuthenticationError) or isinstance(
        getattr(err, "cause", None), AuthenticationError
    )


class RayExecutor:
    """Runs a sweep's jobs on Ray actors (see the module docstring).

    Args:
        options: ``address`` (a running cluster; None starts a local instance with ``num_cpus``),
            ``workers`` (default: one per GPU, else CPUs // threads), ``threads`` (torch threads and Ray
            CPUs per worker), ``device``, ``dtype``, ``workers_write`` (default: when every node runs on
            this machine).
    """

    name = "ray"

    def __init__(self, options: ExecutorOptions | None = None):
        self.options = options if options is not None else ExecutorOptions()
        self.workers_write = self.options.workers_write
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
        o = self.options
        try:
            if o.address is not None:
                ray.init(address=o.address, log_to_driver=False)
            else:
                from workbench.core.numerics import machine_cores

                ray.init(
                    num_cpus=o.num_cpus or machine_cores(),
                    include_dashboard=False,
                    log_to_driver=False,
                    _node_ip_address="127.0.0.1",  # a local instance is reachable from this machine only
                )
        except Exception as err:
            if _is_authentication_error(err):
                raise RayAuthenticationError(o.address) from None
            raise
        self._owns_ray = True
        return ray

    def _shape(self, ray) -> tuple[int, int]:
        """(workers, GPUs each) that fit the cluster, each worker on ``options.threads`` CPUs."""
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        threads = self.options.threads
        use_gpu = gpus > 0 and not (self.options.device or "").startswith("cpu")
        workers = self.options.workers or (gpus if use_gpu else max(1, cpus // threads))
        if workers * threads > cpus or (use_gpu and workers > gpus):
            have = f"{cpus} CPUs" + (f" and {gpus} GPUs" if use_gpu else "")
            raise ValueError(
                f"{workers} workers × {threads} threads{' and a GPU each' if use_gpu else ''} do not fit this "
                f"Ray cluster ({have}); ask for fewer workers or threads"
            )
        return workers, 1 if use_gpu else 0

    def start(self, model: str, policy: RecordingPolicy, cancel: threading.Event) -> list[dict]:
        ray = self._connect()
        self.cancel_event = cancel
        workers, gpus = self._shape(ray)
        if self.workers_write is None:
            hosts = {n["NodeManagerHostname"] for n in ray.nodes() if n.get("Alive")}
            self.workers_write = hosts == {socket.gethostname()}
        actor = ray.remote(concurrency_groups={"control": 1})(Worker).options(
            num_cpus=self.options.threads, num_gpus=gpus, max_restarts=2
        )
        if Path(model).exists():  # a local folder: the same absolute path on every node
            model = str(Path(model).resolve())
        self.names = [f"ray-{i}" for i in range(workers)]
        self._deaths = [0] * workers
        self.actors = [
            actor.remote(model, policy=policy, options=self.options, name=name) for name in self.names
        ]
        try:
            return ray.get([self._control(a, "info") for a in self.actors])
        except ray.exceptions.RayError as err:
            if _is_authentication_error(err):
                raise RayAuthenticationError(self.options.address) from None
            raise RuntimeError(f"the Ray workers could not load {model!r}: {_cause(err)}") from None

    def _control(self, actor, method: str, *args):
        return getattr(actor, method).options(concurrency_group="control").remote(*args)

    def estimate(self, requests: list[Request]) -> list[int | RequestError | None]:
        import ray

        return ray.get(self._control(self.actors[0], "estimate", requests))

    def edit_problems(self, planned: list[tuple[Request, tuple]]) -> list[str | None]:
        import ray

        return ray.get(self._control(self.actors[0], "edit_problems", planned))

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
