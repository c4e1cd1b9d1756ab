"""Each preset against values worked out by hand on small synthetic stores: layers with different head
counts, a mid block off the latent / 8 grid (as SDXL's), a latent / 8 layer, repeated words and
punctuation; head reductions exact from head means, or refused; DiT stores refused by UNet presets."""

import pytest
import torch
import torch.nn.functional as F
from test_analysis_fakes import (
    fake_run,
    one_thread,  # noqa: F401  (autouse fixture)
    token_rows,
)

from workbench.analysis import PRESETS, make_aggregation, token_maps, word_maps
from workbench.core.attention import AttentionStore

# A UNet on an 8x8 latent: (grid, heads, a factor that makes layers differ).
LAYERS = {
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2": ((8, 8), 2, 1.0),
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2": ((4, 4), 4, 1.1),
    "down_blocks.2.attentions.0.transformer_blocks.0.attn2": ((2, 2), 8, 1.2),
    "down_blocks.3.attentions.0.transformer_blocks.0.attn2": ((1, 1), 8, 1.3),  # latent / 8
    "mid_block.attentions.0.transformer_blocks.0.attn2": ((2, 2), 8, 1.4),  # latent / 4, as in SDXL
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2": ((2, 2), 8, 1.5),
    "up_blocks.3.attentions.0.transformer_blocks.0.attn2": ((8, 8), 2, 1.6),
}
D3, MID = (
    "down_blocks.3.attentions.0.transformer_blocks.0.attn2",
    "mid_block.attentions.0.transformer_blocks.0.attn2",
)
D2, U1 = (
    "down_blocks.2.attentions.0.transformer_blocks.0.attn2",
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
)
ROWS = 3  # kept steps 0, 2, 4
# token positions: 0 BOS, 1 "a", 2 "re", 3 "d" (the word "red"), 4 "a", 5 ",", 6 EOS, 7 pad
WORDS = [["a"], ["re", "d"], ["a"], [","]]


def mass(name: str, head: int, row: int) -> list[float]:
    """The attention a query of ``name`` gives each of the 8 positions (the same at every query)."""
    f = LAYERS[name][2]
    p = [0.0, 0.015 * (head + 1) * (row + 1) * f, 0.03, 0.05 * (head % 2), 0.01 * (row + 1), 0.04, 0.1, 0.0]
    p[0] = 1 - sum(p)
    return p


def synthetic_run(heads: str = "all", head_counts: bool = True, words=WORDS):
    probs = {}
    for name, ((h, w), n, _) in LAYERS.items():
        p = torch.tensor(
            [[mass(name, k, r) for k in range(n)] for r in range(ROWS)]
        )  # (steps, heads, tokens)
        p = p[:, :, None, :].expand(ROWS, n, h * w, 8).clone()  # (steps, heads, queries, tokens)
        probs[name] = p if heads == "all" else p.mean(dim=1, keepdim=True)
    run = fake_run(words=words, latents=torch.zeros(6, 4, 8, 8))
    tokens = token_rows(words)
    tokens.loc[tokens.word == ",", "kind"] = "punct"
    run.tokens = tokens
    run.attention = AttentionStore(
        probs=probs,
        steps=[0, 2, 4],
        shapes={n: g for n, (g, _, _) in LAYERS.items()},
        heads=heads,
        head_counts={n: c for n, (_, c, _) in LAYERS.items()} if head_counts else {},
    )
    return run


def pooled(layers, token: int, rows=range(ROWS), step="sum") -> float:
    """Mean over every (layer, head) map of the steps' sum (or mean) at one position: by hand."""
    total = sum(mass(n, k, r)[token] for n in layers for k in range(LAYERS[n][1]) for r in rows)
    if step == "mean":
        total /= len(rows)
    return total / sum(LAYERS[n][1] for n in layers)


def test_daam_pools_heads_sums_steps_and_leaves_out_the_mid_block_and_the_latent_8_grid():
    run = synthetic_run()
    wm = word_maps(run, "daam")
    used = [n for n in LAYERS if n not in (D3, MID)]
    assert wm.layers_used == used
    assert wm.maps.shape == (3, 8, 8)  # the latent size
    assert wm.words == ["a", "red", ","]  # one map per distinct word
    assert wm.occurrences == [[0, 2], [1], [3]] and wm.row_of(2) == 0
    g = [pooled(used, t) for t in range(8)]
    expected = {"a": (g[1] + g[4]) / 2, "red": (g[2] + g[3]) / 2, ",": g[5]}  # DAAM: mean over positions
    for word, value in expected.items():
        assert torch.allclose(wm.get(word), torch.full((8, 8), value), rtol=1e-6), word
    # the same from a store that averaged heads while recording: the head sum is mean x head count
    mean_store = word_maps(synthetic_run(heads="mean"), "daam")
    assert torch.allclose(mean_store.maps, wm.maps, rtol=1e-6)
    # one map per occurrence when asked
    each = word_maps(run, "daam", repeats="each")
    assert each.labels == ["a#1", "red", "a#2", ","]
    assert torch.allclose(each.get("a#2"), torch.full((8, 8), g[4]), rtol=1e-6)


def test_daam_clips_each_head_where_heads_are_kept():
    """A spike in one head undershoots below 0 under bicubic upsampling; DAAM clips that head alone."""
    run = synthetic_run()
    spike = torch.zeros(ROWS, 8, 4, 8)
    spike[:, 0, :, 0] = 1.0
    spike[:, 0, 3, 0], spike[:, 0, 3, 1] = 0.0, 1.0  # head 0: all on "a" at one cell of four
    spike[:, 1:, :, 0] = 1.0
    spike[:, 1:, :, 1] = 0.05  # the other heads: a little everywhere
    spike[:, 1:, :, 0] = 0.95
    run.attention.probs[U1] = spike
    got = word_maps(run, "daam", layers=[U1], repeats="each").get("a#1")
    heads = spike.sum(dim=0)[:, :, 1].reshape(8, 1, 2, 2)  # (heads, 1, rows, cols), steps summed
    up = F.interpolate(heads, size=(8, 8), mode="bicubic", align_corners=False).clamp_min(0)
    assert torch.allclose(got, up.sum(dim=0)[0] / 8, atol=1e-6)
    assert (F.interpolate(heads[:1], size=(8, 8), mode="bicubic", align_corners=False) < 0).any()
    # a head-averaged store clips the heads' sum instead: not DAAM's where one head dips below 0 alone
    run.attention = AttentionStore(
        probs={U1: spike.mean(dim=1, keepdim=True)},
        steps=[0, 2, 4],
        shapes={U1: (2, 2)},
        heads="mean",
        head_counts={U1: 8},
    )
    mean = word_maps(run, "daam", repeats="each").get("a#1")
    summed = F.interpolate(heads.sum(0, keepdim=True), size=(8, 8), mode="bicubic", align_corners=False)
    assert torch.allclose(mean, summed.clamp_min(0)[0, 0] / 8, atol=1e-6)
    assert not torch.allclose(mean, got, atol=1e-6)


def test_p2p_averages_the_latent_4_maps_of_down_and_up():
    run = synthetic_run()
    wm = word_maps(run, "p2p")
    assert wm.layers_used == [D2, U1]  # 16x16 at 512x512 SD; not the mid block at the same grid
    assert wm.maps.shape == (3, 2, 2)
    g = [pooled([D2, U1], t, step="mean") for t in range(8)]
    assert torch.allclose(wm.get("a"), torch.full((2, 2), g[1] + g[4]), rtol=1e-6)  # occurrences summed
    assert torch.allclose(wm.get("red"), torch.full((2, 2), g[2] + g[3]), rtol=1e-6)
    tm = token_maps(run, "p2p")  # aggregate_attention's own per-token maps
    assert torch.allclose(tm.maps[4], torch.full((2, 2), g[4]), rtol=1e-6)


def test_amd_averages_the_layers_last_step_at_the_largest_grid():
    run = synthetic_run()
    wm = word_maps(run, "amd")
    assert wm.layers_used == list(LAYERS) and wm.steps_used == [4] and wm.maps.shape == (4, 8, 8)

    def head_mean(token):  # per layer the heads' mean, then every layer weighs the same
        return sum(
            sum(mass(n, k, ROWS - 1)[token] for k in range(LAYERS[n][1])) / LAYERS[n][1] for n in LAYERS
        ) / len(LAYERS)

    assert torch.allclose(wm.get("a#1"), torch.full((8, 8), head_mean(1)), rtol=1e-6)
    assert torch.allclose(wm.get("a#2"), torch.full((8, 8), head_mean(4)), rtol=1e-6)
    assert torch.allclose(wm.get("red"), torch.full((8, 8), head_mean(2) + head_mean(3)), rtol=1e-6)


def test_head_sums_are_exact_from_means_or_refused():
    all_heads, means = synthetic_run(), synthetic_run(heads="mean")
    for recipe in ("all-mean", "daam"):
        a = word_maps(all_heads, recipe, heads="sum")
        m = word_maps(means, recipe, heads="sum")
        assert torch.allclose(a.maps, m.maps, rtol=1e-6)
        assert "heads sum" in m.aggregation.describe()
    d0 = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    by_hand = sum(mass(d0, k, r)[1] for k in range(2) for r in range(ROWS)) / ROWS  # 2 heads summed
    got = word_maps(means, layers=[d0], heads="sum", repeats="each").get("a#1")
    assert torch.allclose(got, torch.full((8, 16), by_hand), rtol=1e-6)
    old = synthetic_run(heads="mean", head_counts=False)  # saved before head counts were kept
    with pytest.raises(ValueError, match="head counts"):
        word_maps(old, "daam")
    with pytest.raises(ValueError, match="head counts"):
        word_maps(old, heads="sum")
    word_maps(old, "all-mean")  # a mean needs no counts


def test_token_match_catches_a_token_inside_another_word_as_daam_does():
    run = synthetic_run(words=[["a"], ["re", "d"], ["d"], [","]])
    daam = word_maps(run, "daam")
    assert daam.positions[daam.index("d")] == [3, 4]  # the "d" of "red" too
    merged = word_maps(run, "daam", repeats="merge")
    assert merged.positions[merged.index("d")] == [4]


def dit_run():
    names = ["transformer_blocks.0.attn", "transformer_blocks.1.attn", "single_transformer_blocks.0.attn"]
    probs = {}
    for i, name in enumerate(names):
        p = torch.zeros(ROWS, 1, 16, 8)
        for r in range(ROWS):
            p[r, 0, :, 1] = 0.1 * (i + 1) * (r + 1)
            p[r, 0, :, 2:6] = 0.05
            p[r, 0, :, 6] = 1 - float(p[r, 0, 0, 1:6].sum())
        probs[name] = p
    run = synthetic_run()
    run.attention = AttentionStore(
        probs=probs,
        steps=[0, 2, 4],
        shapes={n: (4, 4) for n in names},
        heads="mean",
        head_counts={n: 2 for n in names},
    )
    return run


def test_dit_word_share_renormalizes_each_step_and_joint_layer_over_the_text():
    run = dit_run()
    wm = word_maps(run, "dit-word-share")
    assert wm.layers_used == ["transformer_blocks.0.attn", "transformer_blocks.1.attn"]
    assert wm.maps.shape == (4, 4, 4)
    share = [0.1 * (i + 1) * (r + 1) / (0.1 * (i + 1) * (r + 1) + 0.2) for i in range(2) for r in range(ROWS)]
    assert torch.allclose(wm.get("a#1"), torch.full((4, 4), sum(share) / 6), rtol=1e-6)
    text = wm.maps.sum(dim=0)  # a, red, a, ",": every text position once
    assert torch.allclose(text, torch.ones(4, 4), rtol=1e-6)


def test_presets_refuse_the_other_family_naming_its_layers():
    with pytest.raises(ValueError, match="daam.*transformer_blocks.N.attn.*dit-word-share"):
        word_maps(dit_run(), "daam")
    with pytest.raises(ValueError, match="p2p.*UNet"):
        word_maps(dit_run(), "p2p")
    with pytest.raises(ValueError, match="dit-word-share.*down_blocks"):
        word_maps(synthetic_run(), "dit-word-share")
    amd = word_maps(dit_run(), "amd")  # attention-map-diffusers reads both, less Flux's single blocks
    assert amd.layers_used == ["transformer_blocks.0.attn", "transformer_blocks.1.attn"]


def test_every_preset_names_its_source_and_its_rules():
    for name, agg in PRESETS.items():
        text = agg.describe()
        assert text.startswith(f"{name}: ") and "threshold" in text
    assert PRESETS["daam"].threshold_rule == "fraction-of-range-strict" and PRESETS["daam"].threshold == 0.4
    assert PRESETS["all-mean"] == make_aggregation(None)
    with pytest.raises(ValueError, match="matches no recorded layer"):
        word_maps(synthetic_run(), layers=["up_block"])  # a typo for up_blocks
    with pytest.raises(ValueError, match="power of two"):
        word_maps(synthetic_run(), layers=["latent/3"])
