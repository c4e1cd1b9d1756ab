"""ipywidgets apps: each holds UI state and wiring, and calls core / analysis / viz / store for the work.

Show one in a notebook with one line (the app itself, or its ``.widget``)::

    from workbench.widgets import GenerateApp
    GenerateApp(pipe)
"""

from .browser import ExperimentBrowser
from .explorer import AttentionExplorer
from .generate import GenerateApp
from .interventions import InterventionLab
from .labs import SeedLab, WordOrderLab
from .sweep import SweepApp

__all__ = [
    "AttentionExplorer",
    "ExperimentBrowser",
    "GenerateApp",
    "InterventionLab",
    "SeedLab",
    "SweepApp",
    "WordOrderLab",
]
