"""GenerateApp driven as a user would: set inputs, click, wait, look at what the widget shows."""

import io
import threading

import pytest
from PIL import Image

from workbench.core.adapters import adapter_for, set_model_defaults
from workbench.core.request import EMPTY_PROMPT_NOTE
from workbench.names import DEFAULT_PROMPT
from workbench.viz.render import escape
from workbench.widgets import GenerateApp

PROMPT = "a red circle left of a blue square"


def _gate(app):
    """Hold the worker at its first step until the returned event is set."""
    gate, reached = threading.Event(), threading.Event()
    original = app._on_step

    def held(step, x0, latent):
        reached.set()
        assert gate.wait(30), "test gate never opened"
        original(step, x0, latent)

    app._on_step = held
    return gate, reached


def test_run_shows_progress_preview_and_filmstrip(tiny_pipe):
    app = GenerateApp(tiny_pipe, prompt=PROMPT, seed=3, steps=4)
    run = app.run_sync()
    assert app.error is None
    assert run is not None and run.complete and run.seed == 3 and run.prompt == PROMPT
    assert app.task.progress.value == app.task.progress.max == 4
    assert app.task.progress.bar_style == "success"
    shown = Image.open(io.BytesIO(app.preview.value))
    assert shown.size[0] >= run.image.size[0]  # the final image, enlarged for display
    assert app.step_slider.max == 3 and not app.step_slider.disabled
    final_png = app.preview.value
    app.step_slider.value = 0
    assert app.preview.value != final_png  # x0 at step 0 differs from the final image
    assert "step 0" in app.preview_label.value
    assert not app.task.run_button.disabled


def test_run_button_disabled_while_running_and_double_click_refused(tiny_pipe):
    app = GenerateApp(tiny_pipe, prompt=PROMPT, seed=1, steps=3)
    gate, reached = _gate(app)
    calls = []
    original_generate = app._generate
    app._generate = lambda params: (calls.append(params), original_generate(params))[1]
    app.task.run_button.click()
    assert reached.wait(30)
    assert app.task.run_button.disabled and not app.task.cancel_button.disabled
    app.task.run_button.click()  # a second click while running starts nothing
    assert app.start() is False
    gate.set()
    run = app.wait(60)
    assert len(calls) == 1
    assert run is not None and run.complete
    assert not app.task.run_button.disabled and app.task.cancel_button.disabled


def test_cancel_keeps_steps_done_and_says_so(tiny_pipe):
    app = GenerateApp(tiny_pipe, prompt=PROMPT, seed=2, steps=40)
    gate, reached = _gate(app)
    app.start()
    assert reached.wait(30)
    app.task.cancel_button.click()
    gate.set()
    run = app.wait(60)
    assert run is not None and not run.complete and run.steps_done < 40
    assert app.task.progress.bar_style == "warning"
    assert any("stopped after" in w for w in app.task.warnings)
    # The status and the image's label speak of the 40 steps asked for, not of the frames there are.
    assert app.task.status.value.startswith(f"cancelled after {run.steps_done} of 40 steps")
    assert f"stopped after {run.steps_done} of 40 steps" in app.preview_label.value
    assert f"of {run.steps_done}" not in app.preview_label.value.split(";")[0]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("seed", -1, "seed must be"), ("height", 12, "multiple of"), ("steps", 0, "steps must be")],
)
def test_bad_input_shows_readable_error_in_widget(tiny_pipe, field, value, message):
    app = GenerateApp(tiny_pipe, prompt=PROMPT, steps=2)
    assert app.run_sync() is not None and app.task.status.value.startswith("done")
    getattr(app, field).value = value  # no silent clamping: the request says what is wrong
    assert getattr(app, field).value == value
    assert app.run_sync() is None and app.run is None
    assert message in app.error
    assert message in app.task.error_area.value
    assert "Traceback" not in app.task.error_area.value.split("<details>")[0]
    assert app.task.progress.bar_style == "danger"
    assert app.task.status.value.startswith("failed")  # not "done: 2 of 2 steps" from the last run
    assert app.preview.layout.display == "none" and app.step_slider.disabled  # the last run's image gone
    assert not app.task.run_button.disabled  # ready for a corrected try


def test_new_seed_button_draws_a_valid_seed(tiny_pipe):
    app = GenerateApp(tiny_pipe, seed=-5)
    app.new_seed.click()
    assert 0 <= app.seed.value < 2**31


def test_scheduler_negative_prompt_and_size_reach_the_run(tiny_pipe):
    app = GenerateApp(tiny_pipe, prompt=PROMPT, steps=2)
    app.scheduler.value = "euler"
    app.negative_prompt.value = "a horse"
    app.width.value = 24
    run = app.run_sync()
    assert app.error is None
    assert run.config.scheduler == "EulerDiscreteScheduler"
    assert run.config.negative_prompt == "a horse"
    assert run.image.size == (24, 16)


def test_core_warnings_show_in_the_app(tiny_pipe):
    from workbench.widgets import GenerateApp

    long = "a red circle left of a blue square and a yellow triangle below a green circle on the moon"
    app = GenerateApp(tiny_pipe, prompt=long, seed=1, steps=2)
    app.run_sync()
    assert app.error is None and any("cut off" in w and "moon" in w for w in app.task.warnings)
    assert "moon" in app.task.warning_area.value
    app.prompt.value = "!!!"
    app.run_sync()
    assert any("!!!" in w for w in app.task.warnings), app.task.warnings  # an unreadable prompt is said
    app.prompt.value = "a red circle"
    app.run_sync()
    assert app.task.warnings == [] and app.task.warning_area.value == ""  # a new run clears them


def test_empty_prompt_runs_with_a_note(tiny_pipe):
    app = GenerateApp(tiny_pipe, prompt="  ", seed=1, steps=2)
    run = app.run_sync()
    assert run is not None and app.error is None
    assert [w for w in app.task.warnings if "prompt is empty" in w] == [EMPTY_PROMPT_NOTE]  # the one note
    assert escape(EMPTY_PROMPT_NOTE) in app.task.warning_area.value


def test_defaults_are_the_one_prompt_and_the_models_own_guidance(tiny_pipe):
    before = adapter_for(tiny_pipe).default_guidance
    set_model_defaults(tiny_pipe, {"guidance_scale": 3.0})
    try:
        app = GenerateApp(tiny_pipe, steps=2)
        assert app.prompt.value == DEFAULT_PROMPT
        assert app.guidance.value == 3.0  # the model's, not a number of the app's own
        run = app.run_sync()
        assert app.error is None and run.config.guidance_scale == 3.0
        assert GenerateApp(tiny_pipe, guidance_scale=1.5).guidance.value == 1.5
    finally:
        set_model_defaults(tiny_pipe, {"guidance_scale": before})


@pytest.mark.parametrize(
    ("box", "value", "message"),
    [
        ("guidance", -2.0, "guidance must be >= 0, got -2.0"),
        ("negative_prompt", "x" * 10_001, "negative prompt is 10,001 characters long"),
        ("height", 64, "width/height 16x64 is more than 2x this model's native size"),
    ],
)
def test_a_refused_request_names_the_apps_box(tiny_pipe, box, value, message):
    app = GenerateApp(tiny_pipe, steps=2)
    getattr(app, box).value = value
    assert app.run_sync() is None
    assert message in app.error and escape(message) in app.task.error_area.value.split("<details>")[0]
    assert "guidance_scale" not in app.error and "negative_prompt" not in app.error
    assert "pass size_limit=None" not in app.error  # a hint in the app's words, not Python's


def test_followers_see_every_finished_run(tiny_pipe):
    app = GenerateApp(tiny_pipe, prompt=PROMPT, seed=1, steps=2)
    seen = []
    app.on_run(seen.append)
    app.run_sync()
    app.seed.value = 2
    app.run_sync()
    assert [r.seed for r in seen] == [1, 2]


def test_a_click_as_soon_as_run_shows_enabled_starts_a_run(tiny_pipe):
    """The Run button is enabled only once the last job is over, so the first click it allows is not
    refused as busy (which would do nothing the user could see)."""
    app = GenerateApp(tiny_pipe, prompt=PROMPT, seed=1, steps=2)
    busy_when_enabled = []

    def enabled(change):
        if not change["new"]:
            busy_when_enabled.append(app.task.busy)

    app.task.run_button.observe(enabled, names="disabled")
    app.task.run_button.click()
    assert app.wait(60) is not None and app.run.complete
    assert busy_when_enabled == [False]


def test_the_image_keeps_the_runs_aspect_ratio_during_and_after_the_run(tiny_pipe):
    app = GenerateApp(tiny_pipe, prompt=PROMPT, seed=1, steps=2)
    app.height.value, app.width.value = 16, 24  # not square
    shown = []
    original = app._show

    def show(image, label):
        original(image, label)
        png = Image.open(io.BytesIO(app.preview.value)).size
        shown.append((label, app.preview.layout.width, app.preview.layout.height, png))

    app._show = show
    run = app.run_sync()
    assert app.error is None and run.image.size == (24, 16)
    assert [label.split(":")[0] for label, *_ in shown[:2]] == ["live preview"] * 2
    assert shown[-1][0].startswith("final image")
    app.step_slider.value = 0
    assert "step 0" in shown[-1][0]
    for _, width, height, png in shown:  # every preview, the final image, and x0 at a step
        assert (width, height) == (f"{png[0]}px", f"{png[1]}px") == ("240px", "160px")
        assert png[0] / png[1] == run.config.width / run.config.height == 1.5


def test_the_step_slider_shows_only_with_a_runs_steps(tiny_pipe):
    app = GenerateApp(tiny_pipe, prompt=PROMPT, seed=1, steps=2)
    assert app.step_slider.layout.display == "none"  # no run yet
    app.run_sync()
    assert app.step_slider.layout.display is None and app.step_slider.max == 1
    app.guidance.value = -2.0  # the next run is refused: no slider is left over from the last one
    assert app.run_sync() is None and app.error
    assert app.step_slider.layout.display == "none"
