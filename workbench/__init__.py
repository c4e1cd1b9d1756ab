"""The diffusion attention workbench: record, analyse and show what a diffusion model does at every step.

The names below load on first use (``workbench.generate`` imports torch then), so that the command
line's ``workbench --help`` answers without importing torch.

Importing workbench before torch sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is set already: OpenMP
threads that busy-wait make small models several times slower whenever another process shares the
cores (``benchmarks/omp_wait.py``). Set ``OMP_WAIT_POLICY=ACTIVE`` to keep busy waits.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import TYPE_CHECKING

# OpenMP reads its wait policy once, when torch loads it: the default has to be in place before that.
if "OMP_WAIT_POLICY" not in os.environ:
    if "torch" in sys.modules:
        warnings.warn(
            "torch was imported before workbench, so its OpenMP threads busy-wait, which makes small "
            "models several times slower when other processes share the CPU. Import workbench first, "
            "or set OMP_WAIT_POLICY=PASSIVE before Python starts (for a notebook: in the kernel's "
            "environment).",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from ._version import __version__  # noqa: F401  (the package version)
from .names import register_model
from .toy.catalog import EMBEDDED as _EMBEDDED

if TYPE_CHECKING:  # what the lazy names below resolve to, for readers and type checkers
    from .core import (
        AttentionStore,
        BudgetError,
        MemoryPreflightError,
        ModelNotAvailableError,
        RecordingPolicy,
        Request,
        RequestError,
        Run,
        RunConfig,
        load_pipeline,
        token_table,
    )
    from .edits import Edit, EditError, editing, generate, record
    from .store.runs import RunLoadError, load_run, save_run
    from .sweeps import SweepSpec
    from .sweeps import run_sweep as sweep

for _model in _EMBEDDED.values():  # "toy" (UNet) and "toy-dit" (Flux-architecture MM-DiT)
    register_model(_model.name, _model.weights, missing_hint=_model.missing_hint)
del _model

# public name -> the module that defines it
_LAZY = {
    **dict.fromkeys(
        [
            "AttentionStore",
            "BudgetError",
            "MemoryPreflightError",
            "ModelNotAvailableError",
            "RecordingPolicy",
            "Request",
            "RequestError",
            "Run",
            "RunConfig",
            "load_pipeline",
            "token_table",
        ],
        "workbench.core",
    ),
    **dict.fromkeys(["Edit", "EditError", "editing", "generate", "record"], "workbench.edits"),
    **dict.fromkeys(["RunLoadError", "load_run", "save_run"], "workbench.store.runs"),
    "SweepSpec": "workbench.sweeps",
}
_RENAMED = {"sweep": ("workbench.sweeps", "run_sweep")}  # ``workbench.sweep(spec, out=...)``


def __getattr__(name: str):
    if name in _RENAMED:
        module, attribute = _RENAMED[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    if name not in _LAZY:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_RENAMED))


__all__ = [
    "AttentionStore",
    "BudgetError",
    "Edit",
    "EditError",
    "MemoryPreflightError",
    "ModelNotAvailableError",
    "RecordingPolicy",
    "Request",
    "RequestError",
    "Run",
    "RunConfig",
    "RunLoadError",
    "SweepSpec",
    "editing",
    "generate",
    "load_pipeline",
    "load_run",
    "record",
    "register_model",
    "save_run",
    "sweep",
    "token_table",
]
