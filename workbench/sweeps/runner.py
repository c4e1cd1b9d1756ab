"""``sweep``: expand a spec, skip what is finished, check the disk budget, run the rest, stream the store.

``run_sweep`` is these steps, in order:

1. ``make_executor``: the executor, from its name and one ``ExecutorOptions`` (1 torch thread per
   worker unless told otherwise, on every executor);
2. ``executor.start``: every worker loads the model once; all must load the same weights;
3. ``plan_sweep``: every request's id (request, policy, weights' hash) and what the output folder
   holds: finished runs (folders that load and hash to what was recorded) are skipped, and so are
   failed ones unless ``retry_failed``; a damaged run folder is made again; numerics other than those
   the earlier runs were made with are refused (a sweep never mixes them);
4. ``estimate_disk``: the model sizes every distinct setting once, refusing a spec whose setting it
   refuses (before any run); ``check_edit_lists``: the model checks every edit list on every request
   to run (words, steps, layers, heads, family), refusing the spec naming ``edits[i]``;
   ``_check_disk``: print the disk estimate (the model's shapes × runs), refuse it over the disk
   budget, and write the plan record (``sweeps/<sweep id>.json``, with the numerics of every run);
5. ``_run_jobs``: run the rest; as each run ends, ``record_ended`` saves it (atomically) when it came
   back to this process and writes its row into ``index.parquet``; a run that raises is a failed row
   with its error and the sweep goes on.

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
from pathlib import Path

import pandas as pd

from .estimate import DiskEstimate, estimate_disk, human
from .executors import make_executor
from .folder import SweepFolder
from .options import ExecutorOptions
from .plan import SweepPlan, common_numerics, numerics_words, plan_sweep
from .record import index_row, save_finished
from .spec import PlannedRun, SpecError, SweepSpec, as_spec, parse_bytes, request_fields
from .worker import Job, Outcome


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
        numerics: what decided every run's numbers besides its request (threads, device, dtype, ...).
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
    numerics: dict = field(default_factory=dict)

    @property
    def done(self) -> int:
        return int((self.index.status == "done").sum())

    @property
    def failed(self) -> int:
        return int((self.index.status == "failed").sum())

    def summary(self) -> str:
        left = self.planned - self.done - self.failed
        numerics = f"; {numerics_words(self.numerics)}" if self.numerics else ""
        return (
            f"sweep {self.sweep_id}: {self.done} done, {self.failed} failed, {left} not run"
            f" ({self.skipped} finished before, {self.ran} ended now, {self.seconds:.1f} s{numerics})"
        )


def run_sweep(
    spec: SweepSpec | dict | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    executor="local",
    pipe=None,
    options: ExecutorOptions | None = None,
    disk_budget: int | str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    events: SweepEvents | None = None,
    cancel: threading.Event | None = None,
    log=print,
    **executor_options,
) -> SweepResult:
    """Run every request of a sweep spec, resuming what an earlier call left.

    Args:
        spec: a ``SweepSpec``, its dict, or a spec file's path.
        out: the output folder (runs, ``index.parquet``); None keeps the runs in memory
            (``result.runs``) and writes nothing.
        executor: ``"local"`` (this process), ``"ray"``, or an executor object.
        pipe: for the local executor: a pipeline already loaded (the spec's model is then a label).
        options: an ``ExecutorOptions``; or give its fields as keywords (``executor_options``):
            ``threads`` (torch threads per worker, default 1 on every executor), ``device``, ``dtype``,
            and for Ray ``address``, ``num_cpus``, ``workers``, ``workers_write``.
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
        DiskBudgetError: the estimate exceeds the disk budget (nothing was run, no index written).
        SpecError: the model refuses one of the spec's settings (a size over its bound; nothing was run).
        NumericsChangedError: the folder's earlier runs were made on other numerics (threads, device,
            dtype, versions); a sweep does not mix them.
        SweepIndexError: ``out/index.parquet`` is not a sweep's index.

    Example:
        >>> import workbench
        >>> result = workbench.sweep({"model": "toy", "prompts": ["a red circle"], "seeds": [0, 1],
        ...                           "steps": 6}, out="runs/sweep")  # doctest: +SKIP
    """
    spec = as_spec(spec)
    budget = parse_bytes(disk_budget) if disk_budget is not None else spec.disk_budget
    ex = make_executor(executor, _options(options, executor_options), pipe=pipe)
    say = log or (lambda *_: None)
    cancel = cancel if cancel is not None else threading.Event()
    listeners = [e for e in (events, ProgressBar() if progress else None) if e is not None]
    folder = SweepFolder(out)
    clock = time.perf_counter()
    try:
        infos = ex.start(spec.model, spec.policy, cancel)
        plan = plan_sweep(spec, infos, folder, retry_failed=retry_failed)
        _warn(plan, infos, say)
        estimate = estimate_disk(ex.estimate, plan.runs, plan.todo)  # every setting checked by the model
        check_edit_lists(ex, spec, [plan.runs[i] for i in plan.todo])  # and every edit list to run
        if out is not None:
            plan = _check_disk(plan, estimate, out, budget, say)
            folder.record_plan(plan.sweep_id, plan.record(spec, infos))
        _carry_over(plan, folder)
        for e in listeners:
            e.workers(infos)
            e.planned(plan.sweep_id, len(plan.runs), plan.skipped, plan.estimate)
        ran, runs = _run_jobs(ex, plan, folder, out, listeners)
    finally:
        ex.close()
        folder.close()
        for e in listeners:
            if hasattr(e, "close"):
                e.close()
    result = _result(plan, folder, out, ran, runs, infos, time.perf_counter() - clock)
    say(result.summary())
    return result


def check_edit_lists(ex, spec: SweepSpec, planned: list) -> None:
    """Refuse the spec (``SpecError`` naming ``edits``) when the model would refuse one of its edit lists
    on one of the requests to run; each distinct (prompt, setting, edit list) is asked once, before any
    run. An executor without ``edit_problems`` is not asked (its runs fail one by one instead)."""
    problems = getattr(ex, "edit_problems", None)
    distinct = {}
    for p in planned:
        if p.edits:
            setting = {k: v for k, v in request_fields(p.request).items() if k != "seed"}
            distinct.setdefault((json.dumps(setting, sort_keys=True), p.edits), p)
    if not distinct or problems is None:
        return
    found = problems([(p.request, p.edits) for p in distinct.values()])
    for p, problem in zip(distinct.values(), found):
        if problem is not None:
            i = spec.edits.index(p.edits)
            raise SpecError(f"edits[{i}] on the prompt {p.request.prompt!r}: {problem}", field="edits")


def _options(options: ExecutorOptions | None, fields: dict) -> ExecutorOptions:
    if options is None:
        return ExecutorOptions(**fields)
    if fields:
        raise TypeError(f"give options= or its fields ({', '.join(sorted(fields))}), not both")
    if not isinstance(options, ExecutorOptions):
        raise TypeError(f"options must be an ExecutorOptions, got {type(options).__name__}")
    return options


def _warn(plan: SweepPlan, infos: list[dict], say) -> None:
    """Say which run folders were damaged (they are made again) and which numerics the workers differ in
    (numerics other than an earlier call's are refused by ``plan_sweep``)."""
    if plan.damaged:
        rid, why = next(iter(plan.damaged.items()))
        say(f"{len(plan.damaged)} run folders are damaged and will be made again (first: {rid}: {why})")
    _, differ = common_numerics(infos)
    for key, values in differ.items():
        by = ", ".join(f"{i['name']}: {v}" for i, v in zip(infos, values))
        say(f"warning: the workers differ in {key} ({by}); the same request may hash differently on each")


def _check_disk(plan: SweepPlan, estimate: DiskEstimate, out, budget: int | None, say) -> SweepPlan:
    """The plan with its disk estimate, printed; refused over the budget; warned about a fuller disk."""
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
    return plan.with_estimate(estimate)


def _carry_over(plan: SweepPlan, folder: SweepFolder) -> None:
    """This sweep's rows for the runs an earlier call ended."""
    for i, row in plan.known.items():
        folder.add(index_row(plan.sweep_id, plan.ids[i], plan.runs[i], row, row["status"]))


def _run_jobs(ex, plan: SweepPlan, folder: SweepFolder, out, listeners) -> tuple[int, dict]:
    """Run the plan's jobs; ``(runs ended, {request id: Run} kept in memory)``."""
    by_id = plan.by_id()

    def started(worker: str, job: Job) -> None:
        for e in listeners:
            e.started(worker, job, by_id[job.request_id])

    ran, runs = 0, {}
    for worker, outcome in ex.run(plan.jobs(), out, started):
        row = None
        if outcome.status != "cancelled":
            row = record_ended(folder, plan.sweep_id, by_id[outcome.request_id], outcome, out)
            if outcome.run is not None and out is None:
                runs[outcome.request_id] = outcome.run
            ran += 1
        for e in listeners:
            e.finished(worker, outcome, row)
    return ran, runs


def record_ended(folder: SweepFolder, sweep_id: str, planned: PlannedRun, outcome: Outcome, out) -> dict:
    """Keep one ended run: a finished run that came back to this process is saved into ``out`` (its
    worker saved it otherwise), and its row goes into the index. Returns the row."""
    if outcome.status == "done" and outcome.run is not None and out is not None:
        outcome.fields.update(save_finished(outcome.run, out, outcome.request_id))
        outcome.run = None
    row = index_row(sweep_id, outcome.request_id, planned, outcome.fields, outcome.status)
    folder.add(row)
    return row


def _result(plan: SweepPlan, folder: SweepFolder, out, ran: int, runs: dict, infos, seconds: float):
    index = folder.frame(plan.sweep_id)
    return SweepResult(
        sweep_id=plan.sweep_id,
        out=None if out is None else Path(out),
        index=index,
        planned=len(plan.runs),
        skipped=plan.skipped,
        ran=ran,
        cancelled=len(index) < len(plan.runs),
        runs={rid: runs[rid] for rid in plan.ids if rid in runs},
        estimate=plan.estimate,
        workers=infos,
        seconds=seconds,
        numerics=plan.numerics,
    )
