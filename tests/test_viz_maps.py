"""Map and step figures carry the data they were given, and the recipe that made it."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_analysis_fakes import (
    DOWN,
    MID,
    fake_run,
    on_bos,
    one_thread,  # noqa: F401  (autouse fixture)
)

from workbench.analysis import (
    Filmstrip,
    change_curves,
    token_maps,
    word_layer_mass,
    word_maps,
    word_step_mass,
)
from workbench.viz import (
    change_curve_figure,
    dominant_word_figure,
    filmstrip_figure,
    word_layer_matrix,
    word_overlay,
    word_step_matrix,
)
from workbench.viz.maps import mass_line

CIRCLE = 4


def circle_run():
    probs = on_bos()
    probs[DOWN][1, 0, 13] = 0
    probs[DOWN][1, 0, 13, CIRCLE] = 1.0
    return fake_run(probs)


def test_word_overlay_holds_maps_and_image():
    run = circle_run()
    run.image = Image.fromarray(np.full((8, 16, 3), 7, dtype=np.uint8))
    wm = word_maps(run, "daam").expand(run)  # DAAM's maps are at the latent size; expanded to the image
    fig = word_overlay(run, wm, words=["red", "circle"])
    heat = [t for t in fig.data if t.type == "heatmap"]
    images = [t for t in fig.data if t.type == "image"]
    assert [t.name for t in heat] == ["red", "circle"]
    assert np.allclose(np.asarray(heat[1].z), wm.get("circle").numpy())
    assert np.array_equal(np.asarray(images[0].z), np.asarray(run.image))
    assert "daam" in fig.layout.title.text
    assert fig.layout.yaxis2.scaleanchor == "x2" and fig.layout.yaxis2.autorange == "reversed"
    tm = word_overlay(run, token_maps(run, upsample="nearest"), words=[4])
    assert tm.data[1].name == "4:circle" and np.asarray(tm.data[1].z)[2:4, 10:12].min() > 0
    with pytest.raises(ValueError, match="maps are \\(4, 8\\) but the image is \\(8, 16\\)"):
        word_overlay(run, word_maps(run, size="latent"))


def two_range_run():
    """Circle gets all of a query's attention at step 2; 'a' a quarter of another's: ranges 4x apart."""
    probs = on_bos()
    probs[DOWN][1, 0, 13] = 0
    probs[DOWN][1, 0, 13, CIRCLE] = 1.0
    probs[DOWN][1, 0, 0] = 0
    probs[DOWN][1, 0, 0, 0], probs[DOWN][1, 0, 0, 1] = 0.75, 0.25  # position 1: 'a'
    return fake_run(probs)


def heat_ranges(fig) -> list[tuple[float, float]]:
    return [(t.zmin, t.zmax) for t in fig.data if t.type == "heatmap"]


def test_unnormalised_maps_get_a_scale_per_word():
    run = two_range_run()
    wm = word_maps(run, upsample="nearest")  # normalize="mass": unnormalised
    tops = [float(m.max()) for m in wm.maps]
    assert tops == pytest.approx([0.25 / 6, 0, 1 / 6])  # 'a', 'red', 'circle': one step of 3, one layer of 2
    fig = word_overlay(run, wm)
    assert heat_ranges(fig) == [(0.0, pytest.approx(tops[0])), (0.0, 1.0), (0.0, pytest.approx(tops[2]))]
    assert [a.text for a in fig.layout.annotations] == ["a (max 0.0417)", "red (max 0)", "circle (max 0.167)"]
    assert "each word on its own scale (0 to its max)" in fig.layout.title.text
    bar = fig.data[1].colorbar
    assert list(bar.ticktext) == ["0", "½ max", "max"] and bar.tickvals[-1] == pytest.approx(tops[0])
    shared = word_overlay(run, wm, scale="shared")
    assert heat_ranges(shared) == [(0.0, pytest.approx(1 / 6))] * 3
    assert [a.text for a in shared.layout.annotations] == ["a", "red", "circle"]
    assert "one scale for all words" in shared.layout.title.text
    assert shared.data[1].colorbar.ticktext is None
    with pytest.raises(ValueError, match="scale must be one of"):
        word_overlay(run, wm, scale="each")


def test_normalised_maps_share_one_scale_unless_asked():
    run = two_range_run()
    wm = word_maps(run, upsample="nearest", normalize="max")
    assert heat_ranges(word_overlay(run, wm)) == [(0.0, 1.0)] * 3
    per = word_overlay(run, wm, words=["a", "circle"], scale="per-word")
    assert heat_ranges(per) == [(0.0, 1.0), (0.0, 1.0)]
    tm = token_maps(run, upsample="nearest")
    fig = word_overlay(run, tm, words=[1, 4])
    assert heat_ranges(fig) == [(0.0, pytest.approx(0.25 / 6)), (0.0, pytest.approx(1 / 6))]
    assert "each token on its own scale (0 to its max)" in fig.layout.title.text


def test_mass_subtitles_name_only_what_a_mass_table_uses():
    run = circle_run()
    step = word_step_matrix(word_step_mass(run)).layout.title.text
    layer = word_layer_matrix(word_layer_mass(run)).layout.title.text
    for text in (step, layer):
        assert not any(w in text for w in ("bilinear", "threshold", "normalize", "to the image"))
    assert (
        "all-mean: steps all (a column each), layers all (averaged), heads mean, a word's tokens summed"
        in step
    )
    assert (
        "all-mean: steps all (averaged), layers all (a column each), heads mean, a word's tokens summed"
        in layer
    )
    daam = (
        "daam: steps all (summed), layers all but mid_block, latent/8, every (layer, head) map averaged, "
        "bicubic to the latent, clipped at 0 per map, a word's tokens averaged, repeated words merged by "
        "token match, normalize share, threshold fraction-of-range-strict 0.4, expanded bicubic to 32x32"
    )
    assert mass_line(daam, "layer") == (
        "daam: steps all (summed), layers all but mid_block, latent/8 (a column each), heads averaged, "
        "a word's tokens averaged, repeated words merged by token match, each word's mass as a share of "
        "the words'"
    )
    assert mass_line(daam, "step").startswith("daam: steps all (a column each), layers all but mid_block")
    with pytest.raises(ValueError, match="by must be"):
        mass_line(daam, "head")


def test_word_step_and_layer_matrices():
    run = circle_run()
    fig = word_step_matrix(word_step_mass(run))
    hm = fig.data[0]
    assert list(hm.y) == ["a", "red", "circle"] and list(hm.x) == [0, 2, 4]
    z = np.asarray(hm.z)
    assert z[2, 1] == pytest.approx(1 / 64) and z[2, 0] == 0
    assert fig.layout.xaxis.title.text.startswith("denoising step")
    assert "all-mean" in fig.layout.title.text
    lf = word_layer_matrix(word_layer_mass(run))
    assert np.asarray(lf.data[0].z)[2, 0] == pytest.approx(1 / 96)
    assert list(lf.data[0].customdata[0]) == [DOWN, MID]
    with pytest.raises(ValueError, match="'layer' column"):
        word_layer_matrix(word_step_mass(run))


def test_filmstrip_and_curve_figures():
    frames = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    strip = Filmstrip(
        x0=frames, latent=frames[::-1].copy(), steps=[-1, 0, 1], timesteps=[float("nan"), 500.0, 1.0]
    )
    fig = filmstrip_figure(strip)
    assert len(fig.frames) == 3 and [f.name for f in fig.frames] == ["noise", "step 0", "step 1"]
    assert np.array_equal(np.asarray(fig.frames[2].data[0].z), frames[2])
    assert np.array_equal(np.asarray(fig.frames[2].data[1].z), frames[0])
    assert len(fig.layout.sliders[0].steps) == 3
    run = fake_run(latents=torch.randn(6, 4, 4, 8))
    curves = change_curves(run)
    cf = change_curve_figure(curves)
    assert np.allclose(np.asarray(cf.data[0].y), curves.x0_latent_rms.to_numpy())
    assert "latent units" in cf.layout.yaxis.title.text


def test_dominant_word_figure():
    run = circle_run()
    run.image = Image.fromarray(np.zeros((8, 16, 3), dtype=np.uint8))
    wm = word_maps(run, steps=[2], layers=[DOWN], upsample="nearest", include_special=True)
    fig = dominant_word_figure(run, wm)
    hm = fig.data[1]
    assert np.asarray(hm.z)[2, 10] == wm.index("circle") and hm.customdata[2][10] == "circle"
    assert list(hm.colorbar.ticktext) == wm.labels
