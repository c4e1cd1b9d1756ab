"""Word orders to compare; alignment across prompts; comparisons checked against hand computations."""

import math

import numpy as np
import pytest
import torch
from test_analysis_fakes import (
    DOWN,
    fake_run,
    on_bos,
    one_thread,  # noqa: F401  (autouse fixture)
)

from workbench.analysis import (
    align_words,
    compare_orders,
    compare_to_first,
    compare_word_order,
    permutations,
    relation_swap,
    word_order_runs,
)


def test_permutations_all_sampled_swap_and_of():
    orders = permutations("red circle left")
    assert orders[0] == "red circle left" and len(orders) == 6 == len(set(orders))
    assert sorted(" ".join(sorted(o.split())) for o in orders) == ["circle left red"] * 6
    assert len(permutations("a red a")) == 3  # repeated words: 3!/2! distinct orders
    long = "one two three four five six seven eight nine ten"
    sampled = permutations(long, max_orders=10, seed=1)
    assert len(sampled) == 10 and sampled[0] == long and len(set(sampled)) == 10
    assert sampled == permutations(long, max_orders=10, seed=1)
    assert math.factorial(10) > 10
    assert permutations("a red circle left of a blue square", kind="swap", words=("red", "blue")) == [
        "a red circle left of a blue square",
        "a blue circle left of a red square",
    ]
    assert permutations("a painting of a horse", kind="of")[1] == "a horse of a painting"
    with pytest.raises(ValueError, match="\\['green'\\] are not in the prompt"):
        permutations("a red circle", kind="swap", words=("red", "green"))
    with pytest.raises(ValueError, match="'X of Y'"):
        permutations("a red circle", kind="of")


def test_permutations_relation_swaps_the_phrases_around_the_relation():
    assert permutations("a red circle left of a blue square", kind="relation") == [
        "a red circle left of a blue square",
        "a blue square left of a red circle",
    ]
    assert permutations("a yellow triangle below a green circle", kind="relation") == [
        "a yellow triangle below a green circle",
        "a green circle below a yellow triangle",
    ]
    # A leading style phrase stays in front ...
    assert permutations("a sketch of a red circle left of a blue square", kind="relation") == [
        "a sketch of a red circle left of a blue square",
        "a sketch of a blue square left of a red circle",
    ]
    assert permutations("a painting of a big red circle right of a small blue square", kind="relation")[
        1
    ] == ("a painting of a small blue square right of a big red circle")
    # ... unless its own "of" is the relation: then it is "X of Y" -> "Y of X".
    assert permutations("a painting of a horse", kind="relation") == [
        "a painting of a horse",
        "a horse of a painting",
    ]
    assert permutations("a red circle", kind="relation") == ["a red circle"]  # nothing to swap
    assert relation_swap("a red  circle above   a cat") == "a cat above a red circle"  # spaces collapsed
    assert relation_swap("a cat") is None
    with pytest.raises(ValueError, match="non-empty"):
        permutations("  ", kind="relation")


def test_align_words_handles_repeats():
    a = fake_run(words=[["a"], ["re", "d"], ["circle"], ["a"]])
    b = fake_run(words=[["a"], ["circle"], ["a"], ["re", "d"]])
    df = align_words(a, b)
    assert df.word.tolist() == ["a", "red", "circle", "a"]
    assert df.occurrence.tolist() == [0, 0, 0, 1]
    assert df.index_a.tolist() == [0, 1, 2, 3] and df.index_b.tolist() == [0, 3, 1, 2]


def word_order_pair():
    """'a red circle' and 'circle a red': circle looks at grid cell (1, 5) in both; a/red elsewhere."""
    pa, pb = on_bos(), on_bos()
    for probs, circle, red in ((pa, 4, (2, 3)), (pb, 1, (3, 4))):
        probs[DOWN][:, 0, 13] = 0
        probs[DOWN][:, 0, 13, circle] = 1.0
        probs[DOWN][:, 0, 0] = 0
        probs[DOWN][:, 0, 0, red[0]] = 0.5
        probs[DOWN][:, 0, 0, red[1]] = 0.5
    lat_a = torch.zeros(6, 4, 4, 8)
    lat_b = lat_a.clone()
    lat_b[3:] = 1.0  # trajectories part at step 2 (latent after step 2 = index 3)
    a = fake_run(pa, words=[["a"], ["re", "d"], ["circle"]], latents=lat_a)
    b = fake_run(pb, words=[["circle"], ["a"], ["re", "d"]], latents=lat_b)
    return a, b


def test_compare_word_order_numbers():
    a, b = word_order_pair()
    cmp = compare_word_order(a, b, upsample="nearest")
    w = cmp.words.set_index("word")
    assert w.loc["circle", "map_corr"] == pytest.approx(1.0) and w.loc["circle", "map_iou"] == 1.0
    assert w.loc["circle", "index_a"] == 2 and w.loc["circle", "index_b"] == 0
    assert w.loc["circle", "mass_a"] == pytest.approx(1 / 32 / 2)  # one of 32 queries, 2 layers averaged
    assert w.loc["red", "mass_b"] == pytest.approx(1 / 32 / 2)
    assert np.isnan(w.loc["a", "map_corr"])  # 'a' gets nothing in either prompt: a constant map
    pos = cmp.positions.set_index("position")
    assert pos.loc[4, "mass_a"] == pytest.approx(1 / 64) and pos.loc[1, "mass_b"] == pytest.approx(1 / 64)
    assert pos.loc[4, "token_a"] == "circle" and pos.loc[4, "token_b"] == "d"
    # x0 is the latent after each step here: identical until step 2, then 1.0 apart
    assert cmp.steps.x0_latent_rms.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert cmp.divergence_step == 2
    assert cmp.images["identical"] and cmp.images["latent_rms"] == pytest.approx(1.0)
    assert "all-mean" in cmp.words.attrs["aggregation"]


def test_compare_refuses_mismatched_runs():
    a, b = word_order_pair()
    other_model = fake_run(b.attention.probs, words=[["circle"], ["a"], ["re", "d"]], sha="zzz")
    with pytest.raises(ValueError, match="same model weights"):
        compare_word_order(a, other_model)
    other_seed = fake_run(b.attention.probs, words=[["circle"], ["a"], ["re", "d"]], seed=9)
    with pytest.raises(ValueError, match="same seed"):
        compare_word_order(a, other_seed)
    with pytest.raises(ValueError, match="only in 'a red square': \\['square'\\]"):
        compare_word_order(a, fake_run(words=[["a"], ["re", "d"], ["square"]]))


def test_word_order_on_tiny_model(tiny_pipe):
    prompts = permutations("a painting of a horse", kind="of")
    runs = word_order_runs(tiny_pipe, prompts, seed=3, steps=3, guidance_scale=1.0)
    assert [r.prompt for r in runs] == prompts
    assert torch.equal(runs[0].noise, runs[1].noise)
    cmp = compare_word_order(*runs, pipe=tiny_pipe)
    assert set(cmp.words.word) == {"a", "painting", "of", "horse"}
    assert len(cmp.words) == 5  # 'a' twice
    ref = (runs[0].x0 - runs[1].x0).pow(2).flatten(1).mean(1).sqrt()
    assert np.allclose(cmp.steps.x0_latent_rms.to_numpy(), ref.numpy())
    assert cmp.steps.x0_pixel_rms.notna().all()
    summary = compare_orders(runs)
    assert summary.prompt.tolist() == [prompts[1]]
    assert [c.prompts for c in compare_to_first(runs)] == [tuple(prompts)]
    assert compare_to_first(runs[:1]) == []
    assert summary.mean_map_corr.iloc[0] == pytest.approx(cmp.words.map_corr.mean())
    assert summary.image_pixel_rms.iloc[0] == pytest.approx(cmp.images["pixel_rms"])


@pytest.mark.parametrize(
    "preset", ["daam", "all-mean"]
)  # p2p needs latent/4 layers, which the tiny UNet lacks
def test_word_order_comparison_with_every_unet_preset(tiny_pipe, preset):
    from workbench import generate
    from workbench.analysis import compare_word_order

    a = generate(tiny_pipe, "a red circle left of a blue square", seed=0, steps=3, progress=False)
    b = generate(tiny_pipe, "a blue square left of a red circle", seed=0, steps=3, progress=False)
    cmp = compare_word_order(a, b, aggregation=preset)
    assert len(cmp.words) == 8  # both "a"s are compared, each with its own map
