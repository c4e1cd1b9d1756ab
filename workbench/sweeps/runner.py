"""``sweep``: expand a spec, skip what is finished, check the disk budget, run the rest, stream the store.

The steps, in order:

1. expand the spec into requests (``SweepSpec.plan``) and start the executor's workers (the model
   loads once per worker); every worker must have loaded the same weights;
2. give every request its id (request, policy, weights' hash) and look in the output folder for what
   is finished: finished runs are skipped, and so are failed ones unless ``retry_failed``;
3. print the disk estimate (the model's shapes × runs) and refuse when it exceeds the disk budget;
4. run the rest; as each run ends its folder is saved (atomically) and its row goes into
   ``index.parquet``; a run that raises is a failed row with its error and the sweep goes on.

Cancel (the ``cancel`` event, the apps' Cancel button, Ctrl-C) stops every worker after its current
step; the runs finished so far stay, and a rerun of the same sweep finishes the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .estimate import DiskEstimate, human
from .executors import make_executor
from .folder import SweepFolder
from .spec import PlannedRun, SweepSpec, as_spec, parse_bytes, policy_key, request_id
from .worker import RUNS_DIR, Job, Outcome, run_path


class DiskBudgetError(ValueError):
    """The sweep's estimated size exceeds its disk budget."""


class SweepEvents:
    """What a sweep tells its onlookers (a progress bar, an app). Every method does nothing here."""

    def planned(self, sweep_id: str, total: int, skipped: int, estimate: DiskEstimate | None) -> None: ...

    def workers(self, infos: list[dict]) -> None: ...

    def started(self, worker: str, job: Job, planned: PlannedRun) -> None: ...

    def finished(self, worker: str, outcome: Outcome, row: dict | None) -> None: ...


class ProgressBar(SweepEvents):
    """One tqdm bar over the sweep's runs (finished ones counted from the start), failures in its postfix."""

    def __init__(self):
        self.bar = None
        self.failed = 0

    def planned(self, sweep_id, total, skipped, estimate):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=skipped, desc=f"sweep {sweep_id}", unit="run", smoothing=0.1)

    def finished(self, worker, outcome, row):
        if outcome.status == "failed":
            self.failed += 1
            self.bar.set_postfix(failed=self.failed)
        if outcome.status != "cancelled":
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


@dataclass
class SweepResult:
    """What a sweep did.

    Attributes:
        sweep_id: the sweep's id (a hash of its spec and the weights).
        out: the output folder (None for a sweep kept in memory).
        index: this sweep's rows of the index, one per ended run (done or failed).
        planned: how many runs the spec expands to.
        skipped: runs finished (or failed) before this call, not run again.
        ran: runs that ended in this call (done or failed).
        cancelled: whether the sweep was stopped before every run ended.
        runs: request id -> Run, for a sweep kept in memory (``out=None``): the finished runs, and the
            failed ones that ran to a stop (their ``failure`` says why), in the spec's order.
        estimate: the disk estimate.
        workers: each worker's ``info()``.
        seconds: wall time of the call.
    """

    sweep_id: str
    out: Path | None
    index: pd.DataFrame
    planned: int
    skipped: int
    ran: int
    cancelled: bool
    runs: dict = field(default_factory=dict)
    estimate: DiskEstimate | None = None
    workers: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return int((self.index.status == "done").sum())

    @property
    def failed(self) -> int:
        return int((self.index.status == "failed").sum())

    def summary(self) -> str:
        left = self.planned - self.done - self.failed
        return (
            f"sweep {self.sweep_id}: {self.done} done, {self.failed} failed, {left} not run"
            f" ({self.skipped} finished before, {self.ran} ended now, {self.seconds:.1f} s)"
        )


def scheduler_label(spec) -> str:
    """A scheduler spec as one word for the index: its name, its class, or ``default``."""
    if spec is None:
        return "default"
    return spec if isinstance(spec, str) else str(spec.get("class"))


def _row(sweep_id: str, rid: str, planned: PlannedRun, fields: dict, status: str) -> dict:
    r = planned.request
    return {
        "height": r.height,
        "width": r.width,
        **fields,
        "sweep_id": sweep_id,
        "request_id": rid,
        "status": status,
        "prompt": r.prompt,
        "prompt_index": planned.prompt_index,
        "base_prompt": planned.base_prompt,
        "negative_prompt": r.negative_prompt,
        "seed": r.seed,
        "steps": r.steps,
        "guidance": r.guidance_scale,
        "scheduler": scheduler_label(r.scheduler),
        "finished": fields.get("finished") or datetime.now(timezone.utc),
    }


def _estimate(executor, plan: list[PlannedRun], todo: set[int]) -> DiskEstimate:
    """Bytes of every planned run; the model is asked once per distinct setting (prompts and seeds
    do not change the size)."""
    settings = [p.request.replace(prompt="", seed=0) for p in plan]
    keys = [json.dumps(r.to_dict(), sort_keys=True) for r in settings]
    distinct = dict(zip(keys, settings))  # one request per distinct setting
    sizes = dict(zip(distinct, executor.estimate(list(distinct.values()))))
    per_run = [sizes[k] for k in keys]
    return DiskEstimate(
        runs=len(plan),
        total_bytes=sum(b or 0 for b in per_run),
        todo_runs=len(todo),
        todo_bytes=sum(per_run[i] or 0 for i in todo),
        refused=sum(b is None for b in per_run),
    )


def _same_weights(infos: list[dict]) -> str:
    hashes = {i["weights_sha256"] for i in infos}
    if len(hashes) != 1:
        by = ", ".join(f"{i['name']} on {i['host']}: {i['weights_sha256'][:12]}" for i in infos)
        raise RuntimeError(f"the workers loaded different weights ({by}); install the same model everywhere")
    return hashes.pop()


def run_sweep(
    spec: SweepSpec | dict | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    executor="local",
    pipe=None,
    address: str | None = None,
    num_cpus: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    workers_write: bool | None = None,
    disk_budget: int | str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    events: SweepEvents | None = None,
    cancel: threading.Event | None = None,
    log=print,
) -> SweepResult:
    """Run every request of a sweep spec, resuming what an earlier call left.

    Args:
        spec: a ``SweepSpec``, its dict, or a spec file's path.
        out: the output folder (runs, ``index.parquet``); None keeps the runs in memory
            (``result.runs``) and writes nothing.
        executor: ``"local"`` (this process), ``"ray"``, or an executor object.
        pipe: for the local executor: a pipeline already loaded (the spec's model is then a label).
        address: Ray: a running cluster (``"auto"``, ``"HOST:6379"``); else a local instance starts.
        num_cpus: Ray: the local instance's CPUs (default: all).
        workers, threads: Ray: how many workers, and torch threads each (default: 1 thread per
            worker, a worker per CPU; with GPUs a worker per GPU). ``threads`` also sets the local
            executor's torch threads.
        device, dtype: where and how every worker loads the model.
        workers_write: Ray: workers save their runs (default: when every node is this machine).
        disk_budget: refuse to start when the estimate exceeds it (bytes or ``"2GB"``); default the
            spec's own.
        retry_failed: run the requests that failed before again.
        progress: show a tqdm bar over the runs.
        events: a ``SweepEvents`` to tell about plans, workers and runs (apps).
        cancel: a ``threading.Event``; setting it stops the sweep (finished runs stay).
        log: where the disk estimate and the summary go (``print``; ``None`` for silence).

    Returns:
        A ``SweepResult``; ``result.index`` holds this sweep's rows.

    Raises:
        DiskBudgetError: the estimate exceeds the disk budget (nothing was run).

    Example:
        >>> result = sweep({"model": "toy", "prompts": ["a red circle"], "seeds": [0, 1], "steps": 6},
        ...                out="runs/sweep")  # doctest: +SKIP
    """
    spec = as_spec(spec)
    budget = parse_bytes(disk_budget) if disk_budget is not None else spec.disk_budget
    say = log or (lambda *_: None)
    plan = spec.plan()
    ex = make_executor(
        executor,
        pipe=pipe,
        address=address,
        num_cpus=num_cpus,
        workers=workers,
        threads=threads,
        device=device,
        dtype=dtype,
        workers_write=workers_write,
    )
    cancel = cancel if cancel is not None else threading.Event()
    listeners = [e for e in (events, ProgressBar() if progress else None) if e is not None]
    folder = SweepFolder(out)
    started_at = time.perf_counter()
    sweep_id, skipped, ran, estimate, infos, runs = "", 0, 0, None, [], {}
    try:
        infos = ex.start(spec.model, spec.policy, cancel)
        weights = _same_weights(infos)
        sweep_id = spec.sweep_id(weights)
        ids = [request_id(p.request, spec.policy, weights) for p in plan]
        todo = []
        for i, (rid, planned) in enumerate(zip(ids, plan)):
            known = folder.finished(sweep_id, rid, retry_failed=retry_failed)
            if known is None:
                todo.append(i)
            else:
                folder.add(_row(sweep_id, rid, planned, known, known["status"]))
        skipped = len(plan) - len(todo)
        if out is not None:
            estimate = _estimate(ex, plan, set(todo))
            say(estimate.describe(budget))
            if budget is not None and estimate.total_bytes > budget:
                raise DiskBudgetError(
                    f"the sweep would take about {human(estimate.total_bytes)}, over its disk budget of "
                    f"{human(budget)}; raise disk_budget, or record less (a policy with fewer steps or "
                    "layers) or fewer runs"
                )
            free = shutil.disk_usage(Path(out)).free
            if estimate.todo_bytes > free:
                say(f"warning: the disk holding {out} has {human(free)} free, less than the estimate")
            folder.record_plan(sweep_id, _plan_record(spec, sweep_id, weights, ids, plan, infos))
        for e in listeners:
            e.workers(infos)
            e.planned(sweep_id, len(plan), skipped, estimate)
        jobs = [Job(ids[i], plan[i].request) for i in todo]
        by_id = {ids[i]: plan[i] for i in todo}

        def started(worker: str, job: Job) -> None:
            for e in listeners:
                e.started(worker, job, by_id[job.request_id])

        for worker, outcome in ex.run(jobs, out, started):
            row = None
            if outcome.status != "cancelled":
                if outcome.status == "done" and outcome.run is not None and out is not None:
                    # the driver saves what came back
                    from workbench.store.runs import save_run

                    save_run(outcome.run, run_path(out, outcome.request_id), overwrite=True)
                    outcome.fields["path"] = f"{RUNS_DIR}/{outcome.request_id}"
                    outcome.run = None
                if outcome.run is not None and out is None:
                    runs[outcome.request_id] = outcome.run
                row = _row(
                    sweep_id, outcome.request_id, by_id[outcome.request_id], outcome.fields, outcome.status
                )
                folder.add(row)
                ran += 1
            for e in listeners:
                e.finished(worker, outcome, row)
    finally:
        ex.close()
        folder.close()
        for e in listeners:
            if hasattr(e, "close"):
                e.close()
    index = folder.frame(sweep_id)
    result = SweepResult(
        sweep_id=sweep_id,
        out=None if out is None else Path(out),
        index=index,
        planned=len(plan),
        skipped=skipped,
        ran=ran,
        cancelled=len(index) < len(plan),
        runs={rid: runs[rid] for rid in ids if rid in runs} if runs else {},
        estimate=estimate,
        workers=infos,
        seconds=time.perf_counter() - started_at,
    )
    say(result.summary())
    return result


def _plan_record(spec: SweepSpec, sweep_id: str, weights: str, ids: list[str], plan, infos) -> dict:
    return {
        "sweep_id": sweep_id,
        "spec": spec.to_dict(),
        "policy_key": policy_key(spec.policy),
        "weights_sha256": weights,
        "workers": infos,
        "created": datetime.now(timezone.utc).isoformat(),
        "requests": [
            {
                "request_id": rid,
                "prompt_index": p.prompt_index,
                "base_prompt": p.base_prompt,
                "request": p.request.to_dict(),
            }
            for rid, p in zip(ids, plan)
        ],
    }
