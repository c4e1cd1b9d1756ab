"""Labs that intervene: the causal word-order lab (``causal``), on edits (``workbench.edits``)."""

from .causal import (
    CURVES,
    PAIRS,
    Caption,
    LabResult,
    LabSettings,
    LabSettingsError,
    attention_holds,
    lab_size,
    relation_holds,
    run_lab,
    summarize,
)

__all__ = [
    "CURVES",
    "PAIRS",
    "Caption",
    "LabResult",
    "LabSettings",
    "LabSettingsError",
    "attention_holds",
    "lab_size",
    "relation_holds",
    "run_lab",
    "summarize",
]
