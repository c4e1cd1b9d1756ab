"""On the embedded toy model (skipped until its weights exist): words get different maps; scoring runs
against the toy world's own masks."""

import numpy as np
import pytest
import torch
from test_analysis_fakes import one_thread  # noqa: F401  (autouse fixture)

from workbench.toy import weights_available

pytestmark = pytest.mark.skipif(not weights_available(), reason="toy model weights not exported yet")

CAPTION = "a green circle left of a yellow triangle"


@pytest.fixture(scope="module")
def toy():
    from workbench import generate, load_pipeline

    pipe = load_pipeline("toy", device="cpu", dtype="float32")
    run = generate(pipe, CAPTION, seed=0, steps=10, progress=False)
    return pipe, run


def test_different_words_get_different_maps(toy):
    from workbench.analysis import word_maps

    _, run = toy
    wm = word_maps(run, normalize="unit-sum")
    circle, triangle = wm.get("circle").flatten(), wm.get("triangle").flatten()
    corr = torch.corrcoef(torch.stack([circle, triangle]))[0, 1].item()
    assert corr < 0.99, f"'circle' and 'triangle' maps are nearly identical (corr {corr:.3f})"
    assert wm.maps.flatten(1).std(dim=0).mean() > 0  # the words' maps are not all the same


def test_scoring_against_world_masks(toy):
    from workbench.analysis import score_maps, word_maps
    from workbench.toy.world import ObjectSpec, SceneSpec, render

    _, run = toy
    spec = SceneSpec(
        objects=(ObjectSpec("green", "circle"), ObjectSpec("yellow", "triangle")), relation="left of"
    )
    scene = render(spec, np.random.default_rng(0))
    masks = {"circle": scene.objects[0].mask, "triangle": scene.objects[1].mask}
    scores = score_maps(word_maps(run, "daam"), masks, threshold=0.4, rule="max")
    assert scores.word.tolist() == ["circle", "triangle"]
    assert scores.iou.between(0, 1).all() and 0 <= scores.attrs["miou"] <= 1
