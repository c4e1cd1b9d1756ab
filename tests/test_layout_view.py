"""When and where the layout is decided: word × step and word × layer grids of maps, the commitment step
marked on the grids, the filmstrip and the change curves, in the report and the explorer."""

import numpy as np
import pytest
import torch

from workbench import Request, generate, load_pipeline
from workbench.analysis import (
    block_groups,
    change_curves,
    commit_step,
    filmstrip,
    spread_steps,
    word_layer_grid,
    word_maps,
    word_step_grid,
)
from workbench.report import report
from workbench.viz import change_curve_figure, filmstrip_figure, word_grid_figure
from workbench.widgets import AttentionExplorer

PROMPT = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def run(tiny_pipe):
    return generate(tiny_pipe, PROMPT, seed=0, steps=8, progress=False)


@pytest.fixture(scope="module")
def commit(run):
    step = commit_step(change_curves(run))
    assert step is not None  # the last step's x0 is the final latent, so a complete run always commits
    return step


def _panel_axes(fig, row: int, col: int) -> tuple[str, str]:
    """The x and y axis ids ("x3", "y3") of the subplot at (row, col), 1-based."""
    sub = fig.get_subplot(row, col)
    return sub.xaxis.plotly_name.replace("axis", ""), sub.yaxis.plotly_name.replace("axis", "")


def _plain(title: str) -> str:
    """A figure's title and subtitle as one line of text (the wrapping undone)."""
    return title.replace("</sup><br><sup>", " ").replace("<br>", " ")


def test_spread_steps_includes_the_ends_and_asked_steps():
    assert spread_steps(range(50)) == [0, 10, 20, 29, 39, 49]
    assert spread_steps(range(8)) == [0, 1, 3, 4, 6, 7]
    assert spread_steps([0, 2, 4], count=6) == [0, 2, 4]
    assert spread_steps(range(8), include=[2, 99]) == [0, 1, 2, 3, 4, 6, 7]  # 99 was not recorded
    with pytest.raises(ValueError, match="count must be a positive int"):
        spread_steps(range(8), count=0)


def test_step_grid_panels_are_word_maps_of_that_step_alone(run):
    grid = word_step_grid(run, ["circle", "square"])
    assert grid.axis == "step" and grid.words == ["circle", "square"]
    assert grid.column_steps == [0, 1, 3, 4, 6, 7] and grid.columns[2] == "step 3"
    assert tuple(grid.maps.shape) == (2, 6, 8, 8)  # the largest layer grid of the tiny UNet
    for j, step in enumerate(grid.column_steps):
        alone = word_maps(run, steps=[step], size=(8, 8), normalize="max")
        for w, word in enumerate(grid.words):
            torch.testing.assert_close(grid.maps[w, j], alone.get(word), rtol=1e-6, atol=0)
            assert float(grid.maps[w, j].max()) == pytest.approx(1.0)  # each panel on its own scale
    assert "one step per column" in grid.recipe and "each panel normalised on its own" in grid.recipe


def test_step_grid_takes_word_indices_and_refuses_unrecorded_steps(run):
    grid = word_step_grid(run, [2], steps=[5])
    torch.testing.assert_close(
        grid.maps[0, 0], word_maps(run, steps=[5], size=(8, 8), normalize="max").maps[2], rtol=1e-6, atol=0
    )
    with pytest.raises(ValueError, match=r"steps \[9\] were not recorded"):
        word_step_grid(run, steps=[9])
    with pytest.raises(ValueError, match="not in these maps"):
        word_step_grid(run, ["horse"])


def test_unet_layer_grid_has_a_column_per_resolution(run):
    grid = word_layer_grid(run, ["circle"])
    assert grid.axis == "layer" and grid.columns == ["8x8", "4x4"]
    assert [len(layers) for layers in grid.layers] == [3, 1]
    assert grid.layers[1] == ["mid_block.attentions.0.transformer_blocks.0.attn2"]
    for j, resolution in enumerate(grid.columns):
        alone = word_maps(run, layers=resolution, size=(8, 8), normalize="max").get("circle")
        torch.testing.assert_close(grid.maps[0, j], alone, rtol=1e-6, atol=0)
    assert grid.steps[0] == list(range(8))  # the recipe's own steps: all of them
    assert "one resolution per column" in grid.recipe


def test_block_groups_put_a_blocks_layers_together():
    shapes = {n: (4, 4) for n in ("transformer_blocks.0.attn", "transformer_blocks.0.attn2")}
    shapes |= {"transformer_blocks.1.attn": (4, 4), "single_transformer_blocks.0.attn": (4, 4)}
    assert block_groups(list(shapes), shapes) == [
        ("dual 0", ["transformer_blocks.0.attn", "transformer_blocks.0.attn2"]),
        ("dual 1", ["transformer_blocks.1.attn"]),
        ("single 0", ["single_transformer_blocks.0.attn"]),
    ]
    sd3 = {"transformer_blocks.0.attn": (4, 4), "transformer_blocks.1.attn": (4, 4)}
    assert [label for label, _ in block_groups(list(sd3), sd3)] == ["block 0", "block 1"]
    other = {"encoder.attn": (2, 2)}
    assert block_groups(list(other), other) == [("encoder.attn", ["encoder.attn"])]


def test_flux_layer_grid_groups_dual_and_single_stream_blocks(tmp_path_factory):
    from tiny_families import build_flux_folder

    pipe = load_pipeline(build_flux_folder(tmp_path_factory.mktemp("flux")), device="cpu", dtype="float32")
    flux = generate(pipe, Request(PROMPT, seed=1, steps=2, height=32, width=48), progress=False)
    grid = word_layer_grid(flux, ["circle", "square"])
    assert grid.columns == ["dual 0", "single 0", "single 1"]
    assert grid.layers == [
        ["transformer_blocks.0.attn"],
        ["single_transformer_blocks.0.attn"],
        ["single_transformer_blocks.1.attn"],
    ]
    size = tuple(grid.maps.shape[-2:])
    assert size == tuple(flux.attention.shapes["transformer_blocks.0.attn"])
    for j, layers in enumerate(grid.layers):
        alone = word_maps(flux, layers=layers, size=size, normalize="max")
        for w, word in enumerate(grid.words):
            torch.testing.assert_close(grid.maps[w, j], alone.get(word), rtol=1e-6, atol=0)
    assert "one block per column" in grid.recipe


def test_grid_figure_frames_the_commitment_column(run):
    commit = 3  # any step: the figure frames the column of the step it is given
    grid = word_step_grid(run, ["circle", "square"], steps=[0, commit, 7])
    fig = word_grid_figure(grid, commit_step=commit)
    assert len(fig.data) == 6  # 2 words × 3 steps, row by row
    np.testing.assert_array_equal(np.asarray(fig.data[4].z), grid.maps[1, 1].numpy())
    frames = [s for s in fig.layout.shapes if s.name == "commit"]
    expected = [_panel_axes(fig, row, 2) for row in (1, 2)]  # column 2 holds the commitment step
    assert [(s.xref, s.yref) for s in frames] == [(f"{x} domain", f"{y} domain") for x, y in expected]
    (label,) = [a for a in fig.layout.annotations if a.name == "commit"]
    assert label.text == "commits here" and label.xref == f"{expected[1][0]} domain"
    assert f"the step the layout commits at (step {commit})" in _plain(fig.layout.title.text)
    plain = word_grid_figure(grid)
    assert not plain.layout.shapes and "commits" not in plain.layout.title.text


def test_grid_figure_frames_the_first_column_after_an_unshown_commitment(run):
    commit = 2
    grid = word_step_grid(run, ["circle"], steps=[0, 7])
    fig = word_grid_figure(grid, commit_step=commit)
    (frame,) = [s for s in fig.layout.shapes if s.name == "commit"]
    assert frame.xref == _panel_axes(fig, 1, 2)[0] + " domain"
    (label,) = [a for a in fig.layout.annotations if a.name == "commit"]
    assert label.text.replace("<br>", " ") == f"commits at step {commit} (not shown)"
    after = word_grid_figure(grid, commit_step=9)  # past the last step shown: nothing framed, said so
    assert not after.layout.shapes and "commits at step 9, after the last step shown" in _plain(
        after.layout.title.text
    )
    with pytest.raises(ValueError, match="commit_step marks a step"):
        word_grid_figure(word_layer_grid(run, ["circle"]), commit_step=commit)


def test_change_curves_and_filmstrip_mark_the_commitment_step(tiny_pipe, run, commit):
    curves = change_curves(run)
    fig = change_curve_figure(curves, commit_step=commit)
    (line,) = [s for s in fig.layout.shapes if s.name == "commit"]
    assert line.x0 == line.x1 == commit
    assert [a.text for a in fig.layout.annotations] == [f"commits (step {commit})"]
    assert not change_curve_figure(curves).layout.shapes  # the default draws no marker
    strip = filmstrip(tiny_pipe, run)
    labels = [s.label for s in filmstrip_figure(strip, commit_step=commit).layout.sliders[0].steps]
    assert labels[strip.steps.index(commit)] == f"{commit} (commits)"
    assert labels.count(f"{commit} (commits)") == 1
    plain = [s.label for s in filmstrip_figure(strip).layout.sliders[0].steps]
    assert plain == ["noise", *map(str, range(8))]
    with pytest.raises(ValueError, match="commit_step 12 is not a step shown here"):
        change_curve_figure(curves, commit_step=12)


def test_report_holds_the_when_and_where_block(tmp_path, run, commit):
    page = report(run, tmp_path / "r.html", quiet=True).read_text()
    assert "<h3>When and where the layout is decided</h3>" in page
    assert 'id="layout-steps-0"' in page and 'id="layout-layers-0"' in page
    assert f"the commitment step, step {commit}:" in page
    assert page.index("maps-0") < page.index("layout-steps-0") < page.index("Token table")


def test_explorer_layout_toggle_shows_both_grids(run, commit):
    ex = AttentionExplorer(run)
    assert ex.layout_box.layout.display == "none" and ex.layout_steps.figure is None
    ex.words.value = 2  # "circle"
    ex.show_layout.value = True
    assert ex.layout_error is None and ex.layout_box.layout.display is None
    steps_fig, layers_fig = ex.layout_steps.figure, ex.layout_layers.figure
    shown = spread_steps(range(8), include=[commit])
    assert len(steps_fig.data) == len(shown) and len(layers_fig.data) == 2
    j = shown.index(commit)
    alone = word_maps(run, steps=[commit], size=(8, 8), normalize="max").get("circle")
    np.testing.assert_allclose(np.asarray(steps_fig.data[j].z), alone.numpy(), rtol=1e-6)
    (frame,) = [s for s in steps_fig.layout.shapes if s.name == "commit"]
    assert frame.xref == _panel_axes(steps_fig, 1, j + 1)[0] + " domain"
    ex.words.value = 7  # "square": the grids follow the word strip
    alone = word_maps(run, layers="4x4", size=(8, 8), normalize="max").get("square")
    np.testing.assert_allclose(np.asarray(ex.layout_layers.figure.data[1].z), alone.numpy(), rtol=1e-6)
    ex.show_layout.value = False
    assert ex.layout_box.layout.display == "none"
