"""InterventionLab on the embedded model: a tiny lab from the form, its curves and table shown; refused
forms name their box and start nothing; Cancel keeps the points finished so far."""

import threading

import ipywidgets as W
import pytest

from workbench.lab import CURVES, LabResult
from workbench.widgets import InterventionLab
from workbench.widgets.interventions import object_swap, read_ks

PAIR = ("a red circle left of a blue square", "a blue square left of a red circle")
TINY = dict(pairs=[PAIR], seeds="0", steps=6, ks="0,6", curves=["inject-step", "switch"])


@pytest.fixture(scope="module")
def pipe():
    from workbench import load_pipeline
    from workbench.toy import weights_available

    if not weights_available():
        pytest.skip("the embedded model's weights (workbench/toy/weights/) are absent")
    return load_pipeline("toy")


def shown_figures(lab) -> list[dict]:
    """The plotly figures the lab shows (plotly display data in Output widgets)."""
    return [
        item["data"]["application/vnd.plotly.v1+json"]
        for child in lab.results.children
        if isinstance(child, W.Output)
        for item in child.outputs
    ]


def shown_table(lab) -> str:
    return " ".join(c.value for c in lab.results.children if isinstance(c, W.HTML))


def test_object_swap_and_the_form_it_fills(pipe):
    assert object_swap(PAIR[0]) == PAIR[1]
    assert object_swap("a sketch of a green triangle above a yellow circle") == (
        "a sketch of a yellow circle above a green triangle"
    )
    assert object_swap("a painting of a horse") is None
    lab = InterventionLab(pipe)
    assert lab.captions.value == PAIR[0] and lab.swaps.value == PAIR[1]  # the lab's first pair
    assert [c for c, box in lab.curves.items() if box.value] == list(CURVES)
    lab.captions.value = "a green square above a red triangle"  # the suggested swap follows the caption
    assert lab.swaps.value == "a red triangle above a green square"
    lab.swaps.value = "a red triangle below a green square"  # ... until the swap is typed in
    lab.captions.value = PAIR[0]
    assert lab.swaps.value == "a red triangle below a green square"
    assert lab.suggest_swaps() == [PAIR[1]] and lab.swaps.value == PAIR[1]


def test_run_sync_shows_the_curves_and_the_table(pipe):
    lab = InterventionLab(pipe, **TINY)
    result = lab.run_sync()
    assert lab.error is None and isinstance(result, LabResult) and lab.result is result
    summary = result.summary
    assert sorted(set(summary.curve)) == ["inject-step", "switch"]
    assert sorted(summary.x.unique()) == [0, 6] and set(summary.n) == {1}
    assert set(summary.loc[summary.x == 6, "mean"]) == {0.0}  # no edit: placed as the caption, not the swap
    assert result.settings.pairs == (PAIR,) and result.settings.seeds == (0,) and result.settings.steps == 6
    (fig,) = shown_figures(lab)
    assert fig["layout"]["title"]["text"].startswith("Does attention cause the layout?")
    assert "toy world's checker" in fig["layout"]["title"]["text"]
    assert [len(trace["x"]) for trace in fig["data"]] == [2, 2]
    assert "inject-step" in shown_table(lab) and "switch" in shown_table(lab)
    # A k = steps point reuses the plain run: 2 plain generations and one per curve at k = 0.
    assert (
        lab.planned == lab.done == 4 and lab.task.status.value == "done: 4 generations; the curves are below"
    )
    assert lab.task.progress.bar_style == "success" and lab.task.progress.value == lab.task.progress.max


@pytest.mark.parametrize(
    ("box", "value", "message"),
    [
        (
            "captions",
            "a painting of a horse",
            "captions line 1 ('a painting of a horse') is not a two-object caption",
        ),
        ("captions", "  ", "captions must hold at least one two-object caption"),
        ("swaps", "", "swaps must hold one swap per caption (1 caption, 0 swaps)"),
        (
            "swaps",
            "a green square left of a red circle",
            "swaps line 1 ('a green square left of a red circle') must name the caption's two objects",
        ),
        ("swaps", "a blue square right of a red circle", "places the objects as its caption does"),
        ("seeds", "", "seeds must name at least one seed"),
        ("seeds", "0, two", "seeds must be seeds or rising ranges"),
        ("steps", 0, "steps must be in 1..1000, got 0"),
        ("ks", "0, 7", "ks must lie in 0..6 (the steps box); got [7]"),
        ("ks", "-1", "ks must lie in 0..6 (the steps box); got [-1]"),
        ("ks", "0, x", "ks must be whole numbers separated by commas; got 'x'"),
        ("ks", "", "ks must name at least one step"),
        ("ks", "3, 3", "ks must be distinct; repeated: [3]"),
    ],
)
def test_a_refused_form_names_its_box_and_starts_nothing(pipe, box, value, message):
    lab = InterventionLab(pipe, **TINY)
    getattr(lab, box).value = value
    assert lab.start() is False
    assert message in lab.error and lab.task.status.value.startswith("failed")
    assert lab.result is None and lab.done == 0 and lab.results.children == ()
    assert lab.task.progress.value == 0 and not lab.task.busy and not lab.task.run_button.disabled


def test_what_the_lab_settings_refuse_is_named_as_the_forms_box(pipe):
    lab = InterventionLab(pipe, **TINY)
    lab.captions.value = "a red circle left of a red square"
    lab.swaps.value = "a red square left of a red circle"
    assert lab.start() is False
    assert (
        "captions need two objects of different colours and shapes" in lab.error and "pairs" not in lab.error
    )


def test_curves_refused_until_the_form_says_which(pipe):
    lab = InterventionLab(pipe, **TINY)
    for box in lab.curves.values():
        box.value = False
    assert lab.start() is False and "curves must have at least one ticked" in lab.error
    lab = InterventionLab(pipe, **{**TINY, "curves": ["switch", "rotate"]})
    assert "curves has unknown curves ['rotate']" in lab.error  # said as soon as the app is made
    assert lab.start() is False and "curves has unknown curves ['rotate']" in lab.error and lab.done == 0
    lab.curves["inject-step"].value = True  # ticking a box: the form now says which curves
    assert lab.settings().curves == ("inject-step", "switch")


def test_read_ks_sorts():
    assert read_ks("25, 0 15", 25) == (0, 15, 25)


def test_cancel_keeps_the_finished_points(pipe):
    lab = InterventionLab(pipe, **{**TINY, "ks": "0, 3, 6"})  # 2 plain generations, 2 at k = 0, 2 at k = 3
    pressed = threading.Event()
    original = lab._progress

    def progress_and_cancel(done, total):
        original(done, total)
        if done == 3:  # source and plain run made, and the first edited generation
            lab.task.cancel_button.click()
            pressed.set()

    lab._progress = progress_and_cancel
    lab.start()
    result = lab.wait(120)
    assert pressed.is_set() and lab.error is None and lab.result is result
    summary = result.summary
    assert ("inject-step", 0) in set(zip(summary.curve, summary.x))  # finished before Cancel: kept
    assert set(summary.x) == {0} and 3 <= lab.done < 6 and lab.planned == 6  # nothing after k = 0
    assert lab.task.status.value == (
        f"stopped after {lab.done} of 6 generations; the points finished so far are shown below"
    )
    (fig,) = shown_figures(lab)
    assert {len(trace["x"]) for trace in fig["data"]} == {1}
    assert lab.task.progress.bar_style == "warning" and not lab.task.run_button.disabled
