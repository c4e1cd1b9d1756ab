"""Interventions: edits to a pipeline call's attention and conditioning, kept apart from recording.

``Edit`` is the value (``workbench.core.edit``: frozen, validated, JSON round trip, kept in a run's
config); ``editing(pipe, edits)`` installs edits on a stock pipeline for the calls made inside the
block and removes them afterwards; ``generate`` and ``record`` are core's, with ``edits=``.
"""

from ..core.edit import Edit, EditError, EditTypeError
from .apply import check_edits, editing
from .session import generate, record, source_runs

__all__ = [
    "Edit",
    "EditError",
    "EditTypeError",
    "check_edits",
    "editing",
    "generate",
    "record",
    "source_runs",
]
