"""Sequences of figures and tables for a study, each with its caption: what a lab or a report lays out.

A ``Panel`` holds a figure or a table, never markup; apps and reports decide how to show it.

Example:
    >>> panels = word_order_panels(runs, compare_to_first(runs, pipe, normalize="max"))  # doctest: +SKIP
    >>> [p.caption for p in panels]  # doctest: +SKIP
    ['Final images', "Each word's map in both word orders", ..., 'Aligned words']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from workbench.analysis.seeds import SeedStudy
from workbench.analysis.word_order import WordOrderComparison
from workbench.core.run import Run

from .compare import divergence_figure, map_pairs, side_by_side
from .seeds import seed_grid_figure, trajectory_distance_figure, variance_figure


@dataclass(frozen=True)
class Panel:
    """A figure or a table, with its caption.

    Attributes:
        caption: plain text; for a figure, the first line of its own title.
        figure: the figure (None for a table).
        table: the table (None for a figure).
        note: plain text that qualifies the caption (which prompts, which threshold).
    """

    caption: str
    figure: go.Figure | None = None
    table: pd.DataFrame | None = None
    note: str = ""

    def __post_init__(self):
        if (self.figure is None) == (self.table is None):
            raise ValueError("a Panel holds exactly one of figure= or table=")

    @classmethod
    def of(cls, figure: go.Figure, note: str = "") -> Panel:
        """A figure panel captioned with the first line of the figure's title."""
        title = (figure.layout.title.text or "").split("<br>")[0]
        return cls(caption=title, figure=figure, note=note)


def word_order_panels(runs: Sequence[Run], comparisons: Sequence[WordOrderComparison]) -> list[Panel]:
    """The runs' images side by side, then per comparison: map pairs, divergence, the aligned words.

    Args:
        runs: the word-order runs, the reference first.
        comparisons: the reference against each later run (``analysis.compare_to_first``).

    Example:
        >>> word_order_panels(runs, compare_to_first(runs, pipe, normalize="max"))  # doctest: +SKIP
    """
    panels = [Panel.of(side_by_side(list(runs)))]
    for cmp in comparisons:
        panels += [
            Panel.of(map_pairs(cmp)),
            Panel.of(divergence_figure(cmp)),
            Panel("Aligned words", table=cmp.words.round(3), note="“{}” vs “{}”".format(*cmp.prompts)),
        ]
    return panels


def seed_panels(study: SeedStudy) -> list[Panel]:
    """The seed grid, distances between seed trajectories, commitment steps and the variance per step.

    Distances and the variance split appear when the study has them (see ``analysis.seed_study``).

    Example:
        >>> seed_panels(seed_study(runs, threshold=0.25))  # doctest: +SKIP
    """
    panels = [Panel.of(seed_grid_figure(study.grid))]
    if study.distances is not None:
        panels.append(Panel.of(trajectory_distance_figure(study.distances)))
    panels.append(
        Panel(
            "Commitment step",
            table=study.commit_steps,
            note=f"first step from which x0 stays within {study.threshold} of the initial noise's "
            "distance from the final latent",
        )
    )
    if study.step_variance is not None:
        panels.append(Panel.of(variance_figure(study.step_variance)))
    return panels
