"""Sweeps: hundreds of runs from one spec — prompts × word orders × seeds × settings — on one machine or a
Ray cluster, streamed into a resumable store.

    import workbench
    result = workbench.sweep("sweep.json", out="runs/sweep")                 # this process
    result = workbench.sweep(spec, out="runs/sweep", executor="ray", num_cpus=8)  # a local Ray instance
    result = workbench.sweep(spec, out="/shared/sweep", executor="ray", address="auto")  # a cluster

The pieces: ``SweepSpec`` (spec.py: the spec, its JSON, its expansion and ids), ``ExecutorOptions``
(options.py: how workers run, checked once), ``Worker`` (worker.py: one loaded pipeline running jobs),
``LocalExecutor`` / ``RayExecutor`` (where workers run), ``SweepPlan`` (plan.py: ids, what to resume,
the numerics, the estimate), ``SweepFolder`` (folder.py: ``index.parquet``), record.py (a finished
run's folder and its index row, the row's schema), ``run_sweep`` (runner.py: the steps).
The analyses of a finished sweep read its index alone: ``workbench.analysis.sweeps``.

``workbench.sweep`` is ``run_sweep``. The names below load on first use, so importing the package
imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .executors import LocalExecutor
    from .folder import SweepBusyError, SweepIndexError, read_index
    from .options import ExecutorOptions, OptionsError
    from .plan import NumericsChangedError, SweepPlan
    from .ray_executor import RayExecutor
    from .runner import DiskBudgetError, SweepEvents, SweepResult, run_sweep
    from .spec import SpecError, SweepSpec, load_spec, request_id
    from .worker import Job, Outcome, Worker

_LAZY = {
    **dict.fromkeys(["SpecError", "SweepSpec", "load_spec", "request_id"], "spec"),
    **dict.fromkeys(["DiskBudgetError", "SweepEvents", "SweepResult", "run_sweep"], "runner"),
    **dict.fromkeys(["SweepBusyError", "SweepIndexError", "read_index"], "folder"),
    **dict.fromkeys(["Job", "Outcome", "Worker"], "worker"),
    **dict.fromkeys(["ExecutorOptions", "OptionsError"], "options"),
    **dict.fromkeys(["NumericsChangedError", "SweepPlan"], "plan"),
    "LocalExecutor": "executors",
    "RayExecutor": "ray_executor",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'workbench.sweeps' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DiskBudgetError",
    "ExecutorOptions",
    "Job",
    "LocalExecutor",
    "NumericsChangedError",
    "OptionsError",
    "Outcome",
    "RayExecutor",
    "SpecError",
    "SweepBusyError",
    "SweepEvents",
    "SweepIndexError",
    "SweepPlan",
    "SweepResult",
    "SweepSpec",
    "Worker",
    "load_spec",
    "read_index",
    "request_id",
    "run_sweep",
]
