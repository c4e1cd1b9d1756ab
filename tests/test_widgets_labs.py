"""WordOrderLab and SeedLab: batches in a thread, figures afterwards, errors and warnings in the widget,
Cancel keeps and shows what finished, a new Run clears the last results and leaves no widget behind."""

import threading

import ipywidgets as W
import pytest
from ipywidgets.widgets.widget import _instances

from workbench.core.adapters import adapter_for, set_model_defaults
from workbench.core.request import EMPTY_PROMPT_NOTE, MAX_PROMPT_CHARS, RequestError
from workbench.names import DEFAULT_PROMPT
from workbench.viz.render import escape
from workbench.widgets import SeedLab, WordOrderLab
from workbench.widgets.labs import LAB_SEEDS, check_orders, largest_grid


def figures(lab):
    """The plotly figures the lab shows (each in an Output widget, as plotly display data)."""
    out = []
    children = []
    for child in lab.results.children:  # a figure with a note comes in a box, under its note
        children += child.children if isinstance(child, W.VBox) else [child]
    for child in children:
        if isinstance(child, W.Output):
            (item,) = child.outputs
            out.append(item["data"]["application/vnd.plotly.v1+json"])
    return out


def tables(lab) -> str:
    return " ".join(str(c.value) for c in lab.results.children if isinstance(c, W.HTML))


def cancel_at(lab, step: int) -> threading.Event:
    """Press Cancel when the progress bar reaches ``step`` (a step of the batch, counted over all runs)."""
    pressed = threading.Event()
    original = lab.task.step

    def step_and_maybe_cancel(n=1):
        original(n)
        if lab.task.progress.value == step and not pressed.is_set():
            lab.task.cancel_button.click()
            pressed.set()

    lab.task.step = step_and_maybe_cancel
    return pressed


def test_word_order_lab_runs_orders_with_one_seed(tiny_pipe):
    lab = WordOrderLab(tiny_pipe, prompt="a painting of a horse", seed=5, steps=3)
    assert lab.orders.value.splitlines() == ["a painting of a horse", "a horse of a painting"]
    lab.task.run_button.click()
    runs = lab.wait(120)
    assert lab.error is None
    assert [r.prompt for r in runs] == ["a painting of a horse", "a horse of a painting"]
    assert {r.seed for r in runs} == {5}
    assert lab.task.progress.value == 6 and lab.task.progress.bar_style == "success"
    shown = figures(lab)
    assert [f["layout"]["title"]["text"].split("<br>")[0] for f in shown] == [
        "Final images",
        "Each word's map in both word orders",
        "Divergence of the two trajectories per step",
    ]
    assert all(f["layout"]["width"] and f["layout"]["height"] for f in shown)  # sized by their builders
    assert "horse" in tables(lab)
    assert lab.task.status.value.startswith("done: 2 runs")


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
    assert lab.task.status.value.startswith("failed")
    assert not lab.task.run_button.disabled


@pytest.mark.parametrize("lab_class", [WordOrderLab, SeedLab])
def test_zero_steps_is_an_error_not_a_silent_one(tiny_pipe, lab_class):
    lab = lab_class(tiny_pipe, steps=2)
    lab.run_sync()
    assert len(figures(lab)) > 0
    lab.steps.value = 0
    assert lab.start() is False
    assert "steps" in lab.error and lab.task.progress.bar_style == "danger" and lab.task.progress.value == 0
    assert lab.results.children == () and lab.runs == []  # the last batch's figures are gone


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
    assert "commitment_step" in tables(lab)
    assert len(figures(lab)) == 3  # grid, trajectory distances, variance split per step


def test_seed_lab_bad_seeds_show_error(tiny_pipe):
    lab = SeedLab(tiny_pipe, seeds="1, two")
    assert lab.start() is False
    assert "two" in lab.error and "two" in lab.task.error_area.value


def test_seed_lab_reads_seeds_with_the_one_parse_seeds_and_the_lab_bound(tiny_pipe):
    lab = SeedLab(tiny_pipe, prompt="a red circle", seeds="0, 1 5-7")
    assert lab.jobs() == [("a red circle", s) for s in (0, 1, 5, 6, 7)]
    lab.seeds.value = f"0-{LAB_SEEDS - 1}"
    assert [s for _, s in lab.jobs()] == list(range(LAB_SEEDS))
    # the bound is on the lab's whole list, counted before any seed is made, not on each range
    for text, message in [
        ("0-200, 201-400", "seeds name 401 seeds; at most 257 may be given at once"),
        ("0-999999999999", "seeds name 1,000,000,000,000 seeds; at most 257"),
        ("3, 3", "seeds must be distinct; repeated: 3"),
    ]:
        lab.seeds.value = text
        assert lab.start() is False
        assert message in lab.error and escape(message) in lab.task.error_area.value.split("<details>")[0]
        assert lab.task.status.value.startswith("failed")


def test_defaults_are_the_one_prompt_and_the_models_own_guidance(tiny_pipe):
    before = adapter_for(tiny_pipe).default_guidance
    set_model_defaults(tiny_pipe, {"guidance_scale": 3.0})
    try:
        for lab in (SeedLab(tiny_pipe, seeds="0", steps=2), WordOrderLab(tiny_pipe, steps=2)):
            assert lab.prompt.value == DEFAULT_PROMPT
            assert lab.guidance.value == 3.0  # the model's, not a number of the lab's own
            runs = lab.run_sync()
            assert lab.error is None and {r.config.guidance_scale for r in runs} == {3.0}
        assert SeedLab(tiny_pipe, guidance_scale=1.5).guidance.value == 1.5
    finally:
        set_model_defaults(tiny_pipe, {"guidance_scale": before})


@pytest.mark.parametrize(
    ("lab_class", "box", "value", "message"),
    [
        (WordOrderLab, "guidance", -1.0, "guidance must be >= 0, got -1.0"),
        (WordOrderLab, "seed", -1, "seed must be in 0.."),
        (WordOrderLab, "orders", "a\n" + "b" * (MAX_PROMPT_CHARS + 1), "orders is 10,001 characters long"),
        (SeedLab, "guidance", float("nan"), "guidance must be a finite number"),
        (SeedLab, "second_prompt", "b" * (MAX_PROMPT_CHARS + 1), "2nd prompt is 10,001 characters long"),
        (SeedLab, "prompt", "b" * (MAX_PROMPT_CHARS + 1), "prompt is 10,001 characters long"),
    ],
)
def test_a_refused_request_names_the_labs_box(tiny_pipe, lab_class, box, value, message):
    lab = lab_class(tiny_pipe, steps=2)
    getattr(lab, box).value = value
    assert lab.start() is False
    assert message in lab.error and "guidance_scale" not in lab.error
    assert lab.error.startswith(("RequestError", "RequestTypeError"))


def test_seed_lab_runs_an_empty_prompt_with_a_note(tiny_pipe):
    lab = SeedLab(tiny_pipe, prompt="", second_prompt="a red circle", seeds="0", steps=2)
    runs = lab.run_sync()
    assert lab.error is None and [(r.prompt, r.seed) for r in runs] == [("", 0), ("a red circle", 0)]
    assert lab.task.warnings.count(EMPTY_PROMPT_NOTE) == 1


def test_seed_lab_cancel_keeps_and_shows_finished_runs(tiny_pipe):
    lab = SeedLab(tiny_pipe, prompt="a red circle", second_prompt="a blue square", seeds="0-2", steps=2)
    pressed = cancel_at(lab, 2 * 3 + 1)  # the first step of the fourth run (seed by seed, both prompts)
    runs = lab.run_sync()
    assert pressed.is_set() and lab.error is None
    # The three finished runs are kept (the cancelled fourth dropped, no more started) ...
    assert [(r.prompt, r.seed) for r in runs] == [
        ("a red circle", 0),
        ("a red circle", 1),
        ("a blue square", 0),
    ]
    # ... and shown: all three images, then the study of the 2 prompts × 1 seed grid they fill.
    shown = figures(lab)
    assert shown[0]["layout"]["title"]["text"].startswith("Final images") and len(shown[0]["data"]) == 3
    grid = next(f for f in shown if f["layout"]["title"]["text"].startswith("Prompts × seeds"))
    assert len(grid["data"]) == 2
    assert "cancelled after 3 of 6 runs" in lab.task.status.value
    assert any("stopped after" in w for w in lab.task.warnings)
    assert lab.task.progress.bar_style == "warning" and not lab.task.run_button.disabled


def test_word_order_lab_cancel_with_one_finished_order_shows_it(tiny_pipe):
    lab = WordOrderLab(tiny_pipe, prompt="a painting of a horse", seed=1, steps=2)
    cancel_at(lab, 3)
    runs = lab.run_sync()
    assert [r.prompt for r in runs] == ["a painting of a horse"] and lab.error is None
    (shown,) = figures(lab)
    assert len(shown["data"]) == 1 and "a painting of a horse · seed 1" in str(shown["layout"]["annotations"])
    assert "cancelled after 1 of 2 runs" in lab.task.status.value
    assert "the comparisons need two" in str(lab.results.children[0].children[0].value)


def test_largest_grid():
    class R:
        def __init__(self, prompt, seed):
            self.prompt, self.seed = prompt, seed

    runs = [R("a", 0), R("a", 1), R("a", 2), R("b", 0)]
    assert [(r.prompt, r.seed) for r in largest_grid(runs)] == [("a", 0), ("a", 1), ("a", 2)]
    runs += [R("b", 1)]
    assert [(r.prompt, r.seed) for r in largest_grid(runs)] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_core_warnings_show_in_the_lab(tiny_pipe):
    long = "a red circle left of a blue square and a yellow triangle below a green circle on the moon"
    lab = SeedLab(tiny_pipe, prompt=long, seeds="0", steps=2)
    lab.run_sync()
    assert lab.error is None and any("cut off" in w and "moon" in w for w in lab.task.warnings)
    assert "moon" in lab.task.warning_area.value


def test_new_run_clears_old_results_and_leaves_no_widget_behind(tiny_pipe):
    lab = WordOrderLab(tiny_pipe, prompt="a painting of a horse", steps=2)
    lab.run_sync()
    first = list(lab.results.children)
    live = len(_instances)
    gate, reached = threading.Event(), threading.Event()
    original = lab.task.step

    def held(n=1):
        reached.set()
        assert gate.wait(30)
        original(n)

    lab.task.step = held
    lab.start()
    assert reached.wait(30)
    assert lab.results.children == () and lab.runs == []  # nothing of the last batch while this one runs
    assert all(w.comm is None for w in first)  # closed, so the kernel lets them go
    gate.set()
    lab.wait(60)
    assert len(figures(lab)) == 3
    assert len(_instances) == live  # as many live widgets as after the first batch


@pytest.mark.parametrize(
    ("orders", "message"),
    [
        (["a painting of a horse", "a painting of a horse"], "orders give nothing new: every line is"),
        (["a painting of a horse", "A  painting of a horse"], "orders give nothing new: every line is"),
        (
            ["a painting of a horse", "a horse of a painting", "a painting of a horse"],
            "orders have line 3 (“a painting of a horse”) repeat the word order of line 1",
        ),
        (
            ["a painting of a horse", "a horse of a cow"],
            "orders have line 2 (“a horse of a cow”) that is no word order of line 1 (“a painting of a "
            "horse”), so the two cannot be compared: only in line 1: “painting”; only in line 2: “cow”",
        ),
    ],
)
def test_word_order_lab_refuses_orders_that_give_nothing_new_before_any_generation(
    tiny_pipe, orders, message
):
    lab = WordOrderLab(tiny_pipe, orders=orders, steps=2)
    batches = []
    lab._batch = lambda *args: batches.append(args)  # what a started batch would call
    lab.task.run_button.click()
    assert batches == [] and not lab.task.busy  # refused at Run: nothing generated
    assert lab.error.startswith("RequestError: orders ") and message in lab.error
    assert escape(message) in lab.task.error_area.value.split("<details>")[0]
    assert lab.task.status.value.startswith("failed") and lab.task.progress.value == 0
    assert lab.runs == [] and lab.results.children == () and not lab.task.run_button.disabled


def test_word_order_lab_with_only_its_prompt_is_refused_naming_the_orders_box(tiny_pipe):
    lab = WordOrderLab(tiny_pipe, prompt="a red circle", steps=2)  # no relation word: no other order
    assert lab.orders.value == "a red circle"
    assert lab.start() is False and not lab.task.busy
    assert "orders must hold at least two word orders" in lab.error


def test_word_orders_are_words_moved_not_white_space_or_punctuation():
    check_orders(["a horse, a cow", "a cow , a horse"])  # the same words in another order
    check_orders(["a horse, a cow", "a horse a, cow"])  # the comma moved: another order
    for orders in (["a horse, a cow", "a horse ,a cow"], ["A horse", "a  HORSE"]):
        with pytest.raises(RequestError, match="give nothing new") as caught:
            check_orders(orders)
        assert caught.value.field == "orders"
