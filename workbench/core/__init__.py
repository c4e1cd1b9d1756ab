"""Generation core: load a stock pipeline, run it, record every step."""

from .attention import AttentionStore
from .edit import Edit, EditError
from .errors import FieldError
from .generate import draw_noise, generate, generate_batch, replay
from .loading import ModelNotAvailableError, load_pipeline
from .memory import MemoryPreflightError
from .policy import BudgetError, RecordingPolicy, estimate_bytes
from .recorder import record
from .request import Request, RequestError
from .run import Provenance, Run, RunConfig
from .tokens import token_table

__all__ = [
    "AttentionStore",
    "BudgetError",
    "Edit",
    "EditError",
    "FieldError",
    "MemoryPreflightError",
    "ModelNotAvailableError",
    "Provenance",
    "RecordingPolicy",
    "Request",
    "RequestError",
    "Run",
    "RunConfig",
    "draw_noise",
    "estimate_bytes",
    "generate",
    "generate_batch",
    "load_pipeline",
    "record",
    "replay",
    "token_table",
]
