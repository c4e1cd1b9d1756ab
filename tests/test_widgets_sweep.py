"""SweepApp: the overall bar, each worker's status, the latest images, Cancel keeping finished runs."""

import ipywidgets as W

from workbench.sweeps import read_index
from workbench.widgets import SweepApp

PROMPTS = ["a red circle left of a blue square", "a painting of a horse"]


def spec_for(model, seeds):
    return {"model": str(model), "prompts": PROMPTS, "seeds": seeds, "steps": 3, "guidance_scales": [4.0]}


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
    # a second run skips everything: the bar starts full
    app.run_sync()
    assert app.result.skipped == 6 and app.task.progress.value == 6 and not app.images.children


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
