"""AttentionExplorer and ExperimentBrowser on a recorded tiny run (no model call after recording)."""

import numpy as np
import pytest

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
    assert list(AttentionExplorer(run).head.options) == ["mean"]
    ex = AttentionExplorer(run_all_heads)
    assert len(ex.head.options) > 2
    ex.head.value = 1
    assert ex.error is None
    expected = analysis.word_maps(run_all_heads, heads=[1], normalize="max").get("triangle").numpy()
    ex.words.value = 2
    np.testing.assert_allclose(ex.current, expected, rtol=1e-6)


def test_experiment_browser_filters_sorts_and_opens(tmp_path, run, run_all_heads):
    save_run(run, tmp_path / "one")
    save_run(run_all_heads, tmp_path / "two")
    (tmp_path / "not-a-run").mkdir()
    br = ExperimentBrowser(tmp_path)
    assert br.error is None and len(br.view) == 2
    assert (tmp_path / "index.parquet").exists()
    br.filter.value = "TRIANGLE"
    assert br.view.path.tolist() == ["two"]
    br.filter.value = ""
    br.sort_by.value, br.ascending.value = "seed", True
    assert br.view.seed.tolist() == [0, 1]
    br.choice.value = "one"
    br.task.run_button.click()
    explorer = br.wait(30)
    assert br.error is None and explorer is not None
    assert explorer.run.prompt == run.prompt
    assert br.opened.children == (explorer.widget,)


def test_experiment_browser_reports_missing_folder(tmp_path):
    br = ExperimentBrowser(tmp_path / "nothing-here")
    assert "nothing-here" in br.error


def test_experiment_browser_open_without_a_choice_says_so(tmp_path, run):
    save_run(run, tmp_path / "one")
    br = ExperimentBrowser(tmp_path)
    br.choice.value = None
    assert br.open() is False
    assert "choose a run" in br.error


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
