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


# ----------------------------------------------------------------- every preset it offers, on two families


@pytest.fixture(scope="module")
def toy_run():
    from workbench import load_pipeline

    pipe = load_pipeline("toy", device="cpu", dtype="float32")
    return generate(pipe, "a red circle left of a blue square", seed=0, steps=4, progress=False)


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    from tiny_families import build_sd3_folder

    from workbench import load_pipeline

    pipe = load_pipeline(build_sd3_folder(tmp_path_factory.mktemp("sd3")), dtype="float32")
    return generate(
        pipe, "a red circle left of a blue square", seed=0, steps=3, height=32, width=48, progress=False
    )


def expected_map(run, preset, word_index, **kw):
    """The preset's map of one word as the notebooks draw it: made by the recipe, expanded to the image."""
    wm = analysis.word_maps(run, preset, normalize="max", **kw)
    if tuple(wm.maps.shape[-2:]) != (run.config.height, run.config.width):
        wm = wm.expand(run)
    return wm.maps[wm.row_of(word_index)].numpy()


def check_every_offered_preset(run, offered):
    ex = AttentionExplorer(run)
    assert list(ex.preset.options) == offered
    image = (run.config.height, run.config.width)
    second_a = [i for w, i in ex.words.options if w == "a"][1]
    for preset in offered:
        ex.preset.value = preset
        own = analysis.PRESETS[preset].steps
        last = run.attention.steps[-1]
        assert ex.step_range.value == ((last, last) if own == "last" else (0, last))
        for word in (2, second_a):  # "circle", and the second "a" (a merged row in daam's maps)
            ex.words.value = word
            assert ex.error is None, (preset, ex.error)
            assert ex.current.shape == image
            np.testing.assert_allclose(ex.current, expected_map(run, preset, word), rtol=1e-5, atol=1e-7)
        assert ex.figure.layout.title.text.split("<br>")[1].startswith(f"<sup>{preset}")
        ex.by_token.value = True
        assert ex.error is None and ex.current.shape == image
        ex.by_token.value = False
    return ex


def test_toy_model_offers_the_unet_presets_that_apply_and_draws_each_at_image_size(toy_run):
    ex = check_every_offered_preset(toy_run, ["all-mean", "daam", "amd"])
    assert sorted(ex.unavailable) == ["dit-word-share", "p2p"]
    assert ex.unavailable["dit-word-share"].startswith("not for UNet runs: ")
    # the toy UNet's grids are the latent (8x8) and its half: p2p's latent/4 grid (2x2) is not among them
    assert ex.unavailable["p2p"] == (
        "not for this run: it reads the latent/4 grid (2x2 here); this model's grids are 8x8, 4x4"
    )
    assert (
        "dit-word-share (not for UNet runs" in ex.preset_note.value and "p2p (not for" in ex.preset_note.value
    )
    ex.preset.value = "daam"
    agg = ex.maps.aggregation  # made at the latent (8x8), then expanded as DAAM's expand_as does
    assert (agg.expand, agg.expanded_to) == (
        "bicubic",
        (32, 32),
    ) and "expanded bicubic" in ex.figure.layout.title.text


def test_joint_attention_run_offers_the_transformer_presets(joint_run):
    ex = check_every_offered_preset(joint_run, ["all-mean", "amd", "dit-word-share"])
    assert sorted(ex.unavailable) == ["daam", "p2p"]
    assert all(why.startswith("not for SD3/Flux runs: ") for why in ex.unavailable.values())


def test_layer_choices_are_the_recipes_own(toy_run):
    ex = AttentionExplorer(toy_run)
    ex.preset.value = "daam"
    store = toy_run.attention
    assert not [n for n in ex.layer.options if n.startswith("mid_block")]  # DAAM never hooks the mid block
    assert len(ex.layer.options) == 1 + len(store.layer_names()) - 1
    small = store.resolutions()[1]
    ex.resolution.value = small
    names = [n for n in store.layer_names(small) if not n.startswith("mid_block")]
    assert list(ex.layer.options) == ["all", *names] and ex.error is None
    np.testing.assert_allclose(ex.current, expected_map(toy_run, "daam", 0, layers=names), rtol=1e-5)
    ex.preset.value = "all-mean"  # all-mean reads the mid block too: the resolution stays, its layers grow
    assert ex.resolution.value == small and list(ex.layer.options) == ["all", *store.layer_names(small)]
    np.testing.assert_allclose(ex.current, expected_map(toy_run, "all-mean", 0, layers=small), rtol=1e-5)


# ----------------------------------------------------------------- the view kept across runs


def test_view_persists_when_following_the_generate_app(tiny_pipe):
    from workbench.widgets import GenerateApp
    from workbench.widgets.explorer import map_recipe

    app = GenerateApp(tiny_pipe, prompt="a red circle left of a blue square", seed=1, steps=4)
    app.run_sync()
    ex = AttentionExplorer(app)
    ex.words.value = 5  # the second "a"
    ex.preset.value = "daam"
    res = ex.resolution.options[1]
    ex.resolution.value = res
    layer = ex.layer.options[1]
    ex.layer.value = layer
    ex.step_range.value = (1, 2)
    app.seed.value = 2
    app.run_sync()
    assert ex.run is app.run and ex.run.seed == 2 and ex.error is None
    assert (ex.words.value, ex.preset.value, ex.resolution.value, ex.layer.value) == (5, "daam", res, layer)
    assert ex.step_range.value == (1, 2)
    wm = analysis.word_maps(app.run, **map_recipe(app.run, **ex.selection())).expand(app.run)
    np.testing.assert_allclose(ex.current, wm.maps[wm.row_of(5)].numpy(), rtol=1e-5)
    app.prompt.value, app.steps.value = "a yellow triangle", 2  # no second "a"; steps 1..2 not all kept
    app.run_sync()
    assert ex.run.prompt == "a yellow triangle" and ex.error is None
    assert ex.words.value == 0 and ex.preset.value == "daam" and ex.layer.value == layer
    assert ex.step_range.value == (0, 1)


def test_heads_token_and_whole_range_persist_across_runs(tiny_pipe, run_all_heads):
    ex = AttentionExplorer(run_all_heads)
    ex.head.value = 1
    ex.words.value = 2  # "triangle"
    policy = RecordingPolicy(heads="all")
    longer = generate(tiny_pipe, "a yellow triangle", seed=5, steps=5, policy=policy, progress=False)
    ex.set_run(longer)
    assert ex.head.value == 1 and ex.words.value == 2 and ex.error is None
    assert ex.step_range.value == (0, 4)  # the whole range stays the whole range
    expected = analysis.word_maps(longer, heads=[1], normalize="max").get("triangle").numpy()
    np.testing.assert_allclose(ex.current, expected, rtol=1e-6)
    ex.by_token.value = True
    ex.tokens.value = ex.tokens.options[-1][1]  # EOS
    ex.set_run(run_all_heads)
    assert ex.by_token.value and ex.tokens.value == ex.tokens.options[-1][1] and ex.error is None


def test_a_recipe_own_steps_follow_the_recipe(toy_run):
    ex = AttentionExplorer(toy_run)
    ex.preset.value = "amd"  # attention-map-diffusers reads the last step
    assert ex.step_range.value == (3, 3) and ex.figure.layout.title.text.split("<br>")[1].startswith(
        "<sup>amd*"
    )
    np.testing.assert_allclose(ex.current, expected_map(toy_run, "amd", 0), rtol=1e-5)
    ex.preset.value = "all-mean"
    assert ex.step_range.value == (0, 3)
    ex.step_range.value = (1, 2)
    ex.preset.value = "amd"  # a range the user chose stays
    assert ex.step_range.value == (1, 2) and ex.error is None


# ----------------------------------------------------------------- messages and long prompts


def test_a_previous_runs_warning_does_not_stay_above_the_next_error(tiny_pipe):
    long = "a red circle left of a blue square and a yellow triangle below a green circle on the moon"
    with pytest.warns(UserWarning, match="cut off"):
        cut = generate(tiny_pipe, long, seed=1, steps=2, progress=False)
    ex = AttentionExplorer(cut)
    assert "moon" in ex.notes.value and ex.error is None
    with pytest.warns(UserWarning, match="empty"):
        empty = generate(tiny_pipe, "", seed=1, steps=2, progress=False)
    ex.set_run(empty)
    assert ex.error is not None and "no words to show" in ex.error
    assert ex.warnings == [] and ex.notes.value == "" and ex.figure is None and ex.current is None
    ex.set_run(cut)
    assert ex.error is None and ex.message.value == "" and "moon" in ex.notes.value


def test_a_long_prompt_is_shown_once_and_shortened(tiny_pipe):
    words = "red circle blue square yellow triangle green".split()
    filler = " ".join(words[i % len(words)] for i in range(1000))
    prompt = ("a painting of a horse " + filler)[:5000]
    with pytest.warns(UserWarning, match="cut off"):
        run = generate(tiny_pipe, prompt, seed=0, steps=2, progress=False)
    ex = AttentionExplorer(run)
    assert ex.error is None and len(run.prompt) == 5000
    assert f"{prompt[:120].rstrip()}… (5,000 characters)" in ex.header.value
    texts = [ex.header.value, ex.notes.value, ex.message.value, ex.preset_note.value, ex.head_note.value]
    assert sum(len(t) for t in texts) < 1500
    assert sum(t.count(prompt[:60]) for t in texts) == 1  # the prompt's start, in the header only
    assert len(ex.warnings) == 1 and ex.warnings[0].endswith(" words)")


def test_a_run_without_head_counts_lists_the_head_summing_presets_with_the_reason(toy_run):
    from dataclasses import replace

    old = replace(
        toy_run, attention=replace(toy_run.attention, head_counts={})
    )  # saved before they were kept
    ex = AttentionExplorer(old)
    assert list(ex.preset.options) == ["all-mean", "amd"] and ex.error is None
    assert "head counts" in ex.unavailable["daam"]


def test_experiment_browser_says_which_runs_were_edited(tmp_path, tiny_pipe):
    from workbench import Edit, generate

    plain = generate(tiny_pipe, "a red circle", seed=0, steps=2, progress=False)
    edited = generate(tiny_pipe, "a red circle", seed=0, steps=2, edits=[Edit.ablate("red")], progress=False)
    save_run(plain, tmp_path / "plain")
    save_run(edited, tmp_path / "edited")
    br = ExperimentBrowser(tmp_path)
    texts = {r.children[1].value for r in br.rows.children}
    assert sum("<b>edited:</b> ablate &#x27;red&#x27;" in t for t in texts) == 1
    br.open("edited", threaded=False)
    assert "edited: ablate" in br.task.status.value


# ----------------------------------------------------------------- comparing saved runs in the browser

PAIR_PROMPT = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory, run, tiny_pipe):
    """Two saved runs that differ only in their seed (0 and 1)."""
    folder = tmp_path_factory.mktemp("pair")
    other = generate(tiny_pipe, PAIR_PROMPT, seed=1, steps=4, progress=False)
    save_run(run, folder / "seed0")
    save_run(other, folder / "seed1")
    return folder


def tick_rows(br, *paths):
    """Tick the compare box of each run's row, as a click does."""
    listed = br.view.path.tolist()
    for path in paths:
        br.ticks.children[listed.index(path)].value = True


def field_rows(html):
    """field -> (highlighted, [its value in each run]) of the compare table."""
    out = {}
    for mark, field, cells in re.findall(r"<tr([^>]*)><td[^>]*>([^<]*)</td>(.*?)</tr>", html):
        out[field] = ('class="differs"' in mark, re.findall(r"<td[^>]*>([^<]*)</td>", cells))
    return out


def final_image(folder, path):
    from workbench.store.runs import IMAGE

    return np.asarray(Image.open(folder / path / IMAGE).convert("RGB"), dtype=np.int16)


def test_browser_compares_two_ticked_runs(pair_folder):
    from workbench.viz.render import display_scale

    br = ExperimentBrowser(pair_folder)
    tick_rows(br, "seed0", "seed1")
    assert br.ticked == ["seed0", "seed1"] and "2 runs ticked: seed0, seed1" in br.ticked_note.value
    br.compare_button.click()
    br.task.wait(120)
    assert br.error is None and br.compared_paths == ["seed0", "seed1"]
    assert [r.seed for r in br.compared] == [0, 1] and not br.save_button.disabled
    fields = field_rows(br.compare_fields.value)
    assert fields["seed"] == (True, ["0", "1"])
    assert fields["prompt"] == (False, [PAIR_PROMPT, PAIR_PROMPT])
    assert [f for f, (hi, _) in fields.items() if hi] == ["seed"]
    a, b = final_image(pair_folder, "seed0"), final_image(pair_folder, "seed1")
    images = [t for t in br.compare_images.figure.data if t.type == "image"]
    assert len(images) == 2
    np.testing.assert_array_equal(np.asarray(images[0].z), a)
    np.testing.assert_array_equal(np.asarray(images[1].z), b)
    heat = [t for t in br.compare_maps.figure.data if t.type == "heatmap"]
    assert len(heat) == 2 * 6  # both runs x the first 6 of the 8 shared words
    lows = [float(np.min(t.z)) for t in heat]
    highs = [float(np.max(t.z)) for t in heat]
    assert {(t.zmin, t.zmax) for t in heat} == {(min(lows), max(highs))} and max(highs) > min(lows)
    wm = analysis.word_maps(br.compared[1])
    np.testing.assert_allclose(np.asarray(heat[6 + 2].z), wm.maps[wm.row_of(2)].numpy(), rtol=1e-6)
    expected = np.abs(a - b)
    assert expected.max() > 0  # the seeds draw different images
    np.testing.assert_array_equal(br.differences[0], expected)
    shown, caption = br.compare_diffs.children[0].children
    png = np.asarray(Image.open(io.BytesIO(shown.value)).convert("RGB"))
    s = display_scale(Image.fromarray(expected.astype(np.uint8)), 192)
    np.testing.assert_array_equal(png[::s, ::s], expected)
    assert f"mean {expected.mean():.2f}, largest {int(expected.max())} of 255" in caption.value
    br.filter.value = "nothing matches this"  # the ticks outlive the filter
    br.filter.value = ""
    assert [t.value for t in br.ticks.children] == [True, True]


def test_browser_refuses_to_compare_fewer_than_two_runs(pair_folder, monkeypatch):
    import workbench.widgets.browser as browser

    loaded = []
    monkeypatch.setattr(browser, "load_run", lambda path: loaded.append(path))
    br = ExperimentBrowser(pair_folder)
    assert br.compare() is False and "none is ticked" in br.error
    tick_rows(br, "seed1")
    br.compare_button.click()
    br.task.wait(30)
    assert not br.task.busy and loaded == [] and br.compared == [] and br.comparison.children == ()
    assert "2 or more runs and only seed1 is ticked" in br.error
    assert "tick the compare box of two or more runs, then press Compare" in br.error
    assert br.task.progress.value == 0 and br.save_button.disabled


def test_browser_saves_the_comparison_as_a_page(pair_folder):
    br = ExperimentBrowser(pair_folder)
    assert br.save_comparison() is False and "press Compare first" in br.error
    tick_rows(br, "seed0", "seed1")
    assert br.compare(threaded=False) and br.error is None
    br.save_button.click()
    br.task.wait(120)
    assert br.error is None and br.saved is not None
    assert br.saved.parent == pair_folder and br.saved.name.startswith("comparison-")
    assert br.saved.name.endswith(".html") and str(br.saved) in br.task.status.value
    assert br.saved.name in br.saved_link.value
    page = br.saved.read_text(encoding="utf-8")
    assert '<tr class="differs"><td>seed</td><td>0</td><td>1</td><td>differs</td></tr>' in page
    assert "seed 0" in page and "seed 1" in page and "seed0, seed1" in page


def test_browser_compares_runs_of_different_sizes(tmp_path, run, tiny_pipe):
    tall = generate(tiny_pipe, "a red circle", seed=3, steps=2, height=32, width=16, progress=False)
    save_run(run, tmp_path / "square")
    save_run(tall, tmp_path / "tall")
    br = ExperimentBrowser(tmp_path)
    tick_rows(br, "square", "tall")
    assert br.compare(threaded=False) and br.error is None
    fields = field_rows(br.compare_fields.value)
    assert fields["size (width×height)"] == (True, ["16×16", "16×32"])
    assert br.differences[0].shape == (16, 16, 3)
    caption = br.compare_diffs.children[0].children[1].value
    assert "the images are 16×32 and 16×16: both resized to 16×16" in caption
    heat = [t for t in br.compare_maps.figure.data if t.type == "heatmap"]
    assert len(heat) == 2 * 3 and len({(t.zmin, t.zmax) for t in heat}) == 1


def test_the_header_says_a_run_was_edited_and_how_a_switch_is_read(tiny_pipe, run):
    from workbench import Edit

    switched = generate(
        tiny_pipe,
        "a red circle left of a blue square",
        seed=0,
        steps=4,
        edits=[Edit.switch("a blue square left of a red circle", 2)],
        progress=False,
    )
    header = AttentionExplorer(switched).header.value
    assert "Edited run:</b> switch to" in header and "From step 2 on" in header
    assert "Edited" not in AttentionExplorer(run).header.value
