"""Interventions: edits to a pipeline call's attention, kept apart from recording.

``Edit`` is the value (frozen, validated, JSON round trip); ``editing(pipe, edits)`` installs edits on
a stock pipeline for the calls made inside the block and removes them afterwards.
"""

from .apply import editing
from .edit import Edit, EditError, EditTypeError

__all__ = ["Edit", "EditError", "EditTypeError", "editing"]
