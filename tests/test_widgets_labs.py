"""WordOrderLab and SeedLab: batches in a thread, figures afterwards, errors in the widget."""

import threading

import plotly.graph_objects as go
import pytest

from workbench.widgets import SeedLab, WordOrderLab
from workbench.widgets.labs import parse_seeds


def test_word_order_lab_runs_orders_with_one_seed(tiny_pipe):
    lab = WordOrderLab(tiny_pipe, prompt="a painting of a horse", seed=5, steps=3)
    assert lab.orders.value.splitlines() == ["a painting of a horse", "a horse of a painting"]
    lab.task.run_button.click()
    runs = lab.wait(120)
    assert lab.error is None
    assert [r.prompt for r in runs] == ["a painting of a horse", "a horse of a painting"]
    assert {r.seed for r in runs} == {5}
    assert lab.task.progress.value == 6 and lab.task.progress.bar_style == "success"
    figures = [c for c in lab.results.children if isinstance(c, go.FigureWidget)]
    assert len(figures) == 3  # side by side, map pairs, divergence
    assert any("horse" in str(c.value) for c in lab.results.children if not isinstance(c, go.FigureWidget))


def test_word_order_lab_suggests_relation_swaps(tiny_pipe):
    lab = WordOrderLab(tiny_pipe, prompt="a sketch of a red circle left of a blue square")
    assert lab.suggest_orders() == [
        "a sketch of a red circle left of a blue square",
        "a sketch of a blue square left of a red circle",
    ]


def test_word_order_lab_needs_two_orders(tiny_pipe):
    lab = WordOrderLab(tiny_pipe, orders=["a red circle"], steps=2)
    assert lab.start() is False
    assert "at least two word orders" in lab.error
    assert not lab.task.run_button.disabled


def test_seed_lab_grid_trajectories_and_commitment(tiny_pipe):
    lab = SeedLab(tiny_pipe, prompt="a red circle", second_prompt="a blue square", seeds="0-1", steps=3)
    runs = lab.run_sync()
    assert lab.error is None
    assert [(r.prompt, r.seed) for r in runs] == [
        ("a red circle", 0),
        ("a red circle", 1),
        ("a blue square", 0),
        ("a blue square", 1),
    ]
    html = " ".join(str(c.value) for c in lab.results.children if not isinstance(c, go.FigureWidget))
    assert "commitment_step" in html
    figures = [c for c in lab.results.children if isinstance(c, go.FigureWidget)]
    assert len(figures) == 3  # grid, trajectory distances, variance split per step


def test_seed_lab_bad_seeds_show_error(tiny_pipe):
    lab = SeedLab(tiny_pipe, seeds="1, two")
    assert lab.start() is False
    assert "two" in lab.error and "two" in lab.task.error_area.value


def test_parse_seeds():
    assert parse_seeds("0, 1 5-7") == [0, 1, 5, 6, 7]
    assert parse_seeds("3,3") == [3]


def test_seed_lab_cancel_keeps_finished_runs(tiny_pipe):
    lab = SeedLab(tiny_pipe, prompt="a red circle", seeds="0-3", steps=2)
    second_run_started = threading.Event()
    original = lab.task.step

    def step(n=1):
        original(n)
        if lab.task.progress.value == 3:  # first step of the second run
            lab.task.cancel_button.click()
            second_run_started.set()

    lab.task.step = step
    with pytest.warns(UserWarning, match="stopped after"):
        runs = lab.run_sync()
    assert second_run_started.is_set()
    assert [r.seed for r in runs] == [
        0
    ]  # the finished run is kept, the cancelled one dropped, no more started
    assert lab.task.progress.bar_style == "warning" and not lab.task.run_button.disabled
