"""The diffusion attention workbench: record, analyse and show what a diffusion model does at every step."""

from ._version import __version__  # noqa: F401  (the package version)
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
from .core.loading import register_model  # noqa: E402
from .store.runs import RunLoadError, load_run, save_run  # noqa: E402
from .toy import WEIGHTS_DIR as _TOY_WEIGHTS  # noqa: E402

register_model(
    "toy",
    _TOY_WEIGHTS,
    missing_hint="train them with `python -m workbench.toy.train` or reinstall the package",
)

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
    "register_model",
    "save_run",
    "token_table",
]
