"""SweepApp: the overall bar, each worker's status, the latest images, Cancel keeping finished runs."""

import ipywidgets as W

from workbench.sweeps import read_index
from workbench.sweeps.executors import LocalExecutor
from workbench.sweeps.spec import SweepSpec
from workbench.widgets import SweepApp
from workbench.widgets.sweep import image_caption

PROMPTS = ["a red circle left of a blue square", "a painting of a horse"]


def spec_for(model, seeds):
    return {"model": str(model), "prompts": PROMPTS, "seeds": seeds, "steps": 3, "guidance_scales": [4.0]}


def captions(app) -> list[str]:
    """The captions of the images on show, the newest first."""
    return [tile.children[1].value.split(">")[1].split("<")[0] for tile in app.images.children]


def test_sweep_app_runs_shows_workers_and_latest_images(tiny_folder, tmp_path):
    app = SweepApp(spec_for(tiny_folder, [0, 1, 2]), tmp_path, latest=4)
    assert "2 prompts × 3 seeds × 1 settings = 6 runs" in app.header.value
    app.task.run_button.click()
    result = app.wait(120)
    assert app.error is None and result.done == 6
    assert (app.task.progress.value, app.task.progress.max, app.task.progress.bar_style) == (6, 6, "success")
    assert "local" in app.workers_html.value and "6 done, 0 failed" in app.workers_html.value
    assert len(app.images.children) == 4 and all(
        isinstance(t.children[0], W.Image) for t in app.images.children
    )
    assert "seed 2" in app.images.children[0].children[1].value  # the newest first
    assert len(read_index(tmp_path)) == 6
    # a second run skips everything: the bar starts full, the images stay, the status says why
    tiles = app.images.children
    app.run_sync()
    assert app.result.skipped == 6 and app.task.progress.value == 6 and app.images.children == tiles
    assert app.task.status.value.startswith("nothing left to run: all 6 runs are done")
    # a new app on the finished folder shows the finished runs' latest images
    again = SweepApp(spec_for(tiny_folder, [0, 1, 2]), tmp_path, latest=4)
    again.run_sync()
    assert again.task.status.value.startswith("nothing left to run: all 6 runs are done")
    assert captions(again) == captions(app)  # the same four, the newest first


def test_sweep_app_cancel_keeps_finished_runs(tiny_folder, tmp_path):
    app = SweepApp(spec_for(tiny_folder, list(range(6))), tmp_path)
    original = app.add_image

    def add_image(image, caption):
        original(image, caption)
        if len(app.images.children) == 3:
            app.task.cancel_button.click()

    app.add_image = add_image
    result = app.run_sync()
    assert result.cancelled and result.done == 3 and app.task.progress.bar_style == "warning"
    assert len(read_index(tmp_path)) == 3 and len(list((tmp_path / "runs").iterdir())) == 3
    assert not app.task.run_button.disabled


def test_sweep_app_shows_a_disk_budget_refusal(tiny_folder, tmp_path):
    app = SweepApp({**spec_for(tiny_folder, [0]), "disk_budget": "1KB"}, tmp_path)
    app.run_sync()
    assert "DiskBudgetError" in app.error and "disk budget" in app.task.error_area.value


def test_captions_name_every_setting_the_sweep_varies(tiny_folder, tmp_path):
    spec = {**spec_for(tiny_folder, [5]), "prompts": PROMPTS[:1], "steps": 2, "guidance_scales": [2.0, 4.0]}
    app = SweepApp(spec, tmp_path)
    app.run_sync()
    assert app.error is None and app.result.done == 2
    assert sorted(captions(app)) == [f"{PROMPTS[0]} · seed 5 · guidance {g}" for g in (2, 4)]


def test_image_caption_names_steps_scheduler_size_and_edits_when_they_vary():
    spec = SweepSpec(
        model="toy",
        prompts=["a red circle"],
        steps=[2, 3],
        guidance_scales=[4.0],
        schedulers=["euler", None],
        sizes=[None, [16, 24]],
        edits=[[], [{"kind": "ablate", "words": ["red"]}]],
    )
    row = {"prompt": "a red circle", "seed": 0, "guidance": 4.0, "steps": 3, "scheduler": "euler"}
    assert image_caption(spec, {**row, "height": 16, "width": 24, "edits": ""}) == (
        "a red circle · seed 0 · 3 steps · scheduler euler · 24×16 · unedited"
    )
    assert image_caption(spec, {**row, "height": 16, "width": 24, "edits": "ablate red"}).endswith(
        " · edits: ablate red"
    )
    one = SweepSpec(model="toy", prompts=["a red circle"], steps=[3], guidance_scales=[4.0])
    assert image_caption(one, {**row, "height": 16, "width": 16, "edits": ""}) == "a red circle · seed 0"


def test_sweep_app_cancel_midway_says_the_stopped_run_is_dropped(tiny_folder, tmp_path):
    steps = []

    def on_step():
        steps.append(1)
        if len(steps) == 4:  # the first step of the second run
            app.task.cancel_button.click()

    app = SweepApp(spec_for(tiny_folder, [0, 1]), tmp_path, executor=LocalExecutor(on_step=on_step))
    assert "(local)" in app.header.value
    result = app.run_sync()
    assert result.cancelled and result.done == 1 and len(list((tmp_path / "runs").iterdir())) == 1
    assert not any("the run keeps those steps" in w for w in app.task.warnings)
    assert any(
        "Cancel stopped a run after 1 of 3 steps; a sweep keeps only finished runs, so that run was dropped"
        in w
        for w in app.task.warnings
    ), app.task.warnings
    assert app.task.status.value.startswith(
        "cancelled with 1 of 4 runs finished, and kept; a sweep keeps only finished runs"
    )


def test_report_button_writes_the_sweeps_report_into_its_folder(tiny_folder, tmp_path):
    app = SweepApp(spec_for(tiny_folder, [0, 1]), tmp_path)
    app.report_button.click()  # nothing run yet: refused, saying what to do
    app.wait(60)
    assert "no finished runs yet: press Run sweep first" in app.error and app.report_path is None
    app.run_sync()
    assert app.error is None
    app.report_button.click()
    app.wait(120)
    assert app.error is None and app.report_path == tmp_path / "report.html"
    page = app.report_path.read_text(encoding="utf-8")
    assert f"<title>Sweep {app.result.sweep_id}</title>" in page and "<h2>Sweep</h2>" in page
    assert f"sweep {app.result.sweep_id}" in page and all(p in page for p in PROMPTS)
    assert "report.html</a>" in app.report_link.value and str(app.report_path) in app.report_link.value
    assert app.task.status.value.startswith("report written to")
