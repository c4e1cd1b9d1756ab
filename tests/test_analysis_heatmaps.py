"""Heat maps of hand-made attention stores land on the pixels and words they should."""

import pytest
import torch
from test_analysis_fakes import (
    DOWN,
    MID,
    fake_run,
    on_bos,
    one_thread,  # noqa: F401  (autouse fixture)
)

from workbench.analysis import (
    Aggregation,
    attention_mass,
    dominant_words,
    prompt_words,
    region_mass,
    token_maps,
    word_maps,
    word_step_mass,
)

A, RE, D, CIRCLE, EOS = 1, 2, 3, 4, 5  # token positions of the fake prompt "a red circle" (red = re·d)


def one_hot_circle():
    """At step 2 (row 1), DOWN's query at grid (row 1, col 5) attends only to 'circle'."""
    probs = on_bos()
    q = 1 * 8 + 5  # row-major on the 4x8 grid
    probs[DOWN][1, 0, q] = 0
    probs[DOWN][1, 0, q, CIRCLE] = 1.0
    return fake_run(probs)


def test_one_hot_lands_on_right_pixels():
    run = one_hot_circle()
    wm = word_maps(run, Aggregation(steps=(2,), layers=(DOWN,), upsample="nearest"))
    assert wm.words == ["a", "red", "circle"]
    assert wm.maps.shape == (3, 8, 16)
    expected = torch.zeros(8, 16)
    expected[2:4, 10:12] = 1.0  # grid cell (1, 5) of a 4x8 grid on an 8x16 image: a 2x2 block
    assert torch.equal(wm.get("circle"), expected)
    assert wm.get("red").abs().sum() == 0 and wm.get("a").abs().sum() == 0


def test_means_over_steps_and_layers_and_minmax():
    run = one_hot_circle()
    agg = Aggregation(upsample="nearest")
    wm = word_maps(run, agg)
    # kept steps 0, 2, 4 and layers DOWN, MID: the one-hot cell carries 1 / (3 steps * 2 layers)
    assert wm.get("circle")[2:4, 10:12].eq(1 / 6).all()
    assert wm.get("circle").sum().item() == pytest.approx(4 / 6)
    mm = word_maps(run, agg, normalize="minmax")
    assert mm.get("circle").max() == 1 and mm.get("circle").min() == 0


def test_subwords_summed_and_specials_apart():
    probs = on_bos()
    probs[MID][:, 0, :, 0] = 0.5
    probs[MID][:, 0, :, RE] = 0.3
    probs[MID][:, 0, :, D] = 0.2
    run = fake_run(probs)
    wm = word_maps(run, layers=["2x4"])
    assert torch.allclose(wm.get("red"), torch.full((8, 16), 0.5))
    assert "<bos>" not in wm.words
    ws = word_maps(run, layers=["2x4"], include_special=True)
    assert ws.words == ["a", "red", "circle", "<bos>", "<eos>", "<pad>"]
    assert ws.word_indices[-3:] == [-1, -1, -1]
    assert torch.allclose(ws.get("<bos>"), torch.full((8, 16), 0.5))
    # share of non-special tokens: red gets all of the text's attention here
    sh = word_maps(run, layers=["2x4"], normalize="share")
    assert torch.allclose(sh.get("red"), torch.ones(8, 16))
    tm = token_maps(run, layers=["2x4"])
    assert tm.positions[:4] == [0, 1, 2, 3] and tm.kinds[0] == "bos"
    assert torch.allclose(tm.maps[RE], torch.full((8, 16), 0.3))


def test_share_and_unit_sum_against_hand_computation():
    probs = on_bos()
    for name in probs:
        probs[name][..., 0] = 0.4
        probs[name][..., A] = 0.45
        probs[name][..., CIRCLE] = 0.15
    run = fake_run(probs)
    sh = word_maps(run, normalize="share")
    assert torch.allclose(sh.get("a"), torch.full((8, 16), 0.75))
    assert torch.allclose(sh.get("circle"), torch.full((8, 16), 0.25))
    us = word_maps(run, normalize="unit-sum")
    assert us.get("a").sum().item() == pytest.approx(1.0)


def test_heads_selection_needs_per_head_store():
    probs = on_bos(heads=2)
    probs[DOWN][:, 1] = 0
    probs[DOWN][:, 1, :, CIRCLE] = 1.0
    run = fake_run(probs, heads="all")
    assert word_maps(run, layers=[DOWN], heads=[1]).get("circle").eq(1).all()
    assert word_maps(run, layers=[DOWN], heads="mean").get("circle").eq(0.5).all()
    with pytest.raises(ValueError, match="heads \\[5\\] out of range"):
        word_maps(run, heads=[5])
    with pytest.raises(ValueError, match="heads='all'"):
        word_maps(fake_run(), heads=[0])


def test_daam_preset_at_the_latent_size_without_the_mid_block():
    run = one_hot_circle()
    wm = word_maps(run, "daam")
    assert wm.aggregation.name == "daam"
    assert wm.layers_used == [DOWN]  # DAAM never hooks the mid block
    assert wm.maps.shape == (3, 4, 8)  # the latent's size, DAAM's; no upsampling on DOWN's own grid
    expected = torch.zeros(4, 8)
    expected[1, 5] = 1.0  # steps summed, DOWN's one head, unnormalized
    assert torch.allclose(wm.get("circle"), expected)
    big = wm.expand(run)  # the separate, named expansion to the image
    assert big.maps.shape == (3, 8, 16) and big.aggregation.expanded_to == (8, 16)
    peak = torch.nonzero(big.get("circle") == big.get("circle").max())[0].tolist()
    assert 2 <= peak[0] <= 3 and 10 <= peak[1] <= 11
    text = big.aggregation.describe()
    assert "daam" in text and "but mid_block" in text and "expanded bicubic to 8x16" in text


def test_bad_steps_layers_and_words_name_the_problem():
    run = fake_run()
    with pytest.raises(ValueError, match="steps \\[1\\] are not in .* kept steps are 0,2,4"):
        word_maps(run, steps=[1])
    with pytest.raises(ValueError, match="matches no recorded layer"):
        word_maps(run, layers=["64x64"])
    with pytest.raises(ValueError, match="'horse'.*not in these maps"):
        word_maps(run).get("horse")
    with pytest.raises(ValueError, match="normalize must be one of"):
        word_maps(run, normalize="softmax")
    with pytest.raises(ValueError, match="unknown aggregation preset"):
        word_maps(run, "dam")


def test_word_step_mass_matches_hand_computation():
    run = one_hot_circle()
    df = word_step_mass(run)
    m = df.pivot(index="label", columns="step", values="mass")
    # step 2: one of DOWN's 32 queries is on 'circle', MID has none; layers averaged
    assert m.loc["circle", 2] == pytest.approx(1 / 32 / 2)
    assert m.loc["circle", 0] == 0 and m.loc["circle", 4] == 0
    assert "all-mean" in df.attrs["aggregation"]
    by_layer = attention_mass(run, by="layer").pivot(index="label", columns="layer", values="mass")
    assert by_layer.loc["circle", DOWN] == pytest.approx(1 / 32 / 3)
    assert by_layer.loc["circle", MID] == 0


def test_repeated_words_get_unique_labels():
    run = fake_run(words=[["a"], ["circle"], ["a"], ["circle"]])
    wm = word_maps(run)
    assert wm.labels == ["a#1", "circle#1", "a#2", "circle#2"]
    assert wm.index("circle", occurrence=1) == 3 and wm.index("a#2") == 2


def test_region_mass_and_dominant_words():
    run = one_hot_circle()
    region = torch.zeros(8, 16)
    region[2:4, 10:12] = 1  # exactly the one-hot cell
    df = region_mass(run, region.numpy() > 0, Aggregation(steps=(2,), layers=(DOWN,), upsample="nearest"))
    assert df.label.tolist()[0] == "circle" and df.mass.iloc[0] == pytest.approx(1.0)
    assert df.mass.iloc[1:].sum() == 0
    wm = word_maps(run, Aggregation(steps=(2,), layers=(DOWN,), upsample="nearest"), include_special=True)
    dom = dominant_words(wm)
    assert dom.shape == (8, 16)
    assert (dom[2:4, 10:12] == wm.index("circle")).all() and (dom[0, 0] == wm.index("<bos>"))
    with pytest.raises(ValueError, match="region must be image-sized"):
        region_mass(run, torch.ones(4, 8).numpy())


def test_prompt_words_are_the_words_that_get_maps():
    run = fake_run(words=[["a"], ["re", "d"], [","], ["circle"], ["big"]])
    kinds = run.tokens.kind.to_numpy().copy()
    kinds[4] = "punct"  # ","
    kinds[6] = "cut"  # "big": past the encoder's context
    run.tokens = run.tokens.assign(kind=kinds)
    assert prompt_words(run) == [("a", 0), ("red", 1), (",", 2), ("circle", 3)]
    assert [w for w, _ in prompt_words(run)] == word_maps(run).words
    with pytest.raises(ValueError, match="branch must be"):
        prompt_words(run, "uncond")
