"""AttentionExplorer and ExperimentBrowser on a recorded tiny run (no model call after recording)."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from workbench import analysis, generate, save_run
from workbench.core.policy import RecordingPolicy
from workbench.widgets import AttentionExplorer, ExperimentBrowser


@pytest.fixture(scope="module")
def run(tiny_pipe):
    return generate(tiny_pipe, "a red circle left of a blue square", seed=0, steps=4, progress=False)


@pytest.fixture(scope="module")
def run_all_heads(tiny_pipe):
    policy = RecordingPolicy(heads="all")
    return generate(tiny_pipe, "a yellow triangle", seed=1, steps=3, policy=policy, progress=False)


def test_word_strip_is_the_prompt_as_typed(run):
    ex = AttentionExplorer(run)
    assert [label for label, _ in ex.words.options] == "a red circle left of a blue square".split()
    assert ex.error is None


def test_overlay_follows_word_and_recipe_without_the_model(run):
    ex = AttentionExplorer(run)
    ex.words.value = 2  # "circle"
    expected = analysis.word_maps(run, normalize="max").get("circle").numpy()
    np.testing.assert_allclose(ex.current, expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ex.figure.data[1].z), expected, rtol=1e-6)
    ex.step_range.value = (1, 1)
    ex.resolution.value = run.attention.resolutions()[0]
    layers = run.attention.layer_names(run.attention.resolutions()[0])
    assert list(ex.layer.options) == ["all", *layers]
    expected = analysis.word_maps(run, steps=[1], layers=run.attention.resolutions()[0], normalize="max")
    np.testing.assert_allclose(ex.current, expected.get("circle").numpy(), rtol=1e-6)
    assert "steps 1" in ex.figure.layout.title.text


def test_opacity_changes_only_the_overlay(run):
    ex = AttentionExplorer(run)
    before = np.asarray(ex.figure.data[1].z).copy()
    ex.opacity.value = 0.2
    assert ex.figure.data[1].opacity == pytest.approx(0.2)
    np.testing.assert_array_equal(np.asarray(ex.figure.data[1].z), before)


def test_token_mode_shows_sub_words_and_specials(run):
    ex = AttentionExplorer(run)
    ex.by_token.value = True
    labels = [label for label, _ in ex.tokens.options]
    assert labels[0].endswith("[bos]") and labels[-1].endswith("[eos]")
    ex.tokens.value = 0
    expected = analysis.token_maps(run, normalize="max")
    np.testing.assert_allclose(ex.current, expected.maps[expected.positions.index(0)].numpy(), rtol=1e-6)


def test_heads_selector_offers_recorded_heads(run, run_all_heads):
    mean_only = AttentionExplorer(run)
    assert list(mean_only.head.options) == ["mean"] and "heads='all'" in mean_only.head_note.value
    ex = AttentionExplorer(run_all_heads)
    heads = run_all_heads.attention.probs[run_all_heads.attention.layer_names()[0]].shape[1]
    assert list(ex.head.options) == ["mean", "sum", *range(heads)] and ex.head_note.value == ""
    ex.head.value = 1
    assert ex.error is None
    expected = analysis.word_maps(run_all_heads, heads=[1], normalize="max").get("triangle").numpy()
    ex.words.value = 2
    np.testing.assert_allclose(ex.current, expected, rtol=1e-6)


def test_experiment_browser_lists_runs_once_with_thumbnails_and_opens(tmp_path, run, run_all_heads):
    save_run(run, tmp_path / "one")
    save_run(run_all_heads, tmp_path / "two")
    (tmp_path / "not-a-run").mkdir()
    br = ExperimentBrowser(tmp_path)
    assert br.error is None and len(br.view) == 2
    assert (tmp_path / "index.parquet").exists()
    rows = br.rows.children
    assert len(rows) == 2  # one row per run, and no second list of them
    thumb, text, button = rows[0].children
    assert max(Image.open(io.BytesIO(thumb.value)).size) == 64  # the final image, enlarged
    assert re.search(r"saved \d{4}-\d\d-\d\d \d\d:\d\d UTC<", text.value)  # minutes, no microseconds
    br.filter.value = "TRIANGLE"
    assert br.view.path.tolist() == ["two"] and len(br.rows.children) == 1
    br.filter.value = ""
    br.sort_by.value, br.ascending.value = "seed", True
    assert br.view.seed.tolist() == [0, 1]
    br.rows.children[0].children[2].click()  # "open" on the row of run "one"
    explorer = br.wait(30)
    assert br.error is None and explorer is not None
    assert explorer.run.prompt == run.prompt
    assert br.opened.children == (explorer.widget,)
    first = explorer.widget
    br.open("two", threaded=False)
    assert br.explorer.run.prompt == run_all_heads.prompt and first.comm is None  # the old one closed


def test_experiment_browser_without_runs_gives_a_hint_not_an_error(tmp_path):
    br = ExperimentBrowser(tmp_path / "nothing-here")
    assert br.error is None and br.task.error_area.value == ""
    assert "nothing-here" in br.summary.value and "save_run" in br.summary.value


def test_experiment_browser_open_without_a_choice_says_so(tmp_path, run):
    save_run(run, tmp_path / "one")
    br = ExperimentBrowser(tmp_path)
    assert br.open() is False
    assert "choose a run" in br.error


def test_repeated_words_select_their_own_button(run):
    ex = AttentionExplorer(run)
    labels = [label for label, _ in ex.words.options]
    first, second = [i for i, label in enumerate(labels) if label == "a"]
    buttons = ex.words.children[1:]
    buttons[second].click()
    assert ex.words.value == ex.words.options[second][1]
    assert [b.button_style for b in buttons].count("primary") == 1 and buttons[
        second
    ].button_style == "primary"
    expected = analysis.word_maps(run, normalize="max")
    np.testing.assert_allclose(ex.current, expected.maps[expected.word_indices.index(ex.words.value)].numpy())
    buttons[first].click()
    assert ex.words.value == ex.words.options[first][1] and buttons[first].button_style == "primary"
    assert buttons[second].button_style == ""


def test_explorer_follows_the_generate_app(tiny_pipe):
    from workbench.widgets import GenerateApp

    app = GenerateApp(tiny_pipe, prompt="a red circle", seed=1, steps=2)
    with pytest.raises(ValueError, match="press its Run button"):
        AttentionExplorer(app)
    app.run_sync()
    ex = AttentionExplorer(app, word="circle")
    assert ex.run is app.run and ex.words.value == 2
    app.prompt.value = "a blue square above a yellow triangle"
    app.seed.value = 4
    app.run_sync()
    assert ex.run is app.run and ex.run.seed == 4
    assert [w for w, _ in ex.words.options] == "a blue square above a yellow triangle".split()
    assert "seed 4" in ex.header.value and ex.error is None
    expected = analysis.word_maps(app.run, normalize="max").maps[0].numpy()
    np.testing.assert_allclose(ex.current, expected, rtol=1e-6)


def test_token_mode_title_names_the_token(run):
    ex = AttentionExplorer(run)
    ex.by_token.value = True
    ex.tokens.value = 0
    assert "word" not in ex.figure.layout.title.text.split("<br>")[0]
    assert ex.tokens.options[0][0] in ex.figure.layout.title.text


def test_negative_branch_when_recorded(tiny_pipe, run):
    assert AttentionExplorer(run).branch.layout.display == "none"
    policy = RecordingPolicy(negative=True)
    neg = generate(
        tiny_pipe,
        "a red circle",
        negative_prompt="a blue square",
        seed=2,
        steps=2,
        policy=policy,
        progress=False,
    )
    ex = AttentionExplorer(neg)
    assert ex.branch.layout.display != "none"
    ex.branch.value = "negative"
    assert [w for w, _ in ex.words.options] == ["a", "blue", "square"]
    ex.words.value = 2
    expected = analysis.word_maps(neg, normalize="max", branch="negative").get("square").numpy()
    np.testing.assert_allclose(ex.current, expected, rtol=1e-6)
    ex.branch.value = "cond"
    assert [w for w, _ in ex.words.options] == ["a", "red", "circle"] and ex.error is None


def test_explorer_says_what_the_run_lacks(tiny_pipe):
    long = "a red circle left of a blue square and a yellow triangle below a green circle on the moon"
    with pytest.warns(UserWarning, match="cut off"):
        run = generate(tiny_pipe, long, seed=1, steps=2, progress=False)
    ex = AttentionExplorer(run)
    assert ex.error is None
    assert any(w.endswith("below a green circle on the moon") for w in ex.warnings), ex.warnings
    assert "moon" in ex.notes.value
    assert "moon" not in [w for w, _ in ex.words.options]
