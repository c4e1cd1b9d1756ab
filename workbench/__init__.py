"""The diffusion attention workbench: record, analyse and show what a diffusion model does at every step."""

__version__ = "0.1.0"

from .core import (  # noqa: E402
    AttentionStore,
    BudgetError,
    ModelNotAvailableError,
    RecordingPolicy,
    Request,
    Run,
    RunConfig,
    generate,
    load_pipeline,
    record,
    token_table,
)
from .store.runs import RunLoadError, load_run, save_run  # noqa: E402

__all__ = [
    "AttentionStore",
    "BudgetError",
    "ModelNotAvailableError",
    "RecordingPolicy",
    "Request",
    "Run",
    "RunConfig",
    "RunLoadError",
    "generate",
    "load_pipeline",
    "load_run",
    "record",
    "save_run",
    "token_table",
]
