"""Generation core: load a stock pipeline, run it, record every step."""

from .attention import AttentionStore
from .generate import draw_noise, generate, generate_batch
from .loading import ModelNotAvailableError, load_pipeline
from .policy import BudgetError, RecordingPolicy, estimate_bytes
from .run import Run, RunConfig
from .tokens import token_table

__all__ = [
    "AttentionStore",
    "BudgetError",
    "ModelNotAvailableError",
    "RecordingPolicy",
    "Run",
    "RunConfig",
    "draw_noise",
    "estimate_bytes",
    "generate",
    "generate_batch",
    "load_pipeline",
    "token_table",
]
