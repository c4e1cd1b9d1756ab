"""On the embedded toy model (skipped until its weights exist): words get different maps; each shape word's
map scores against the checker's segmentation of the generated image."""

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
    """The shape words' maps land on the objects the model drew: IoU against the checker's segmentation of
    the generated image is well above a floor (the model card reports ~0.7 for the evaluation's rule),
    and near 0 against the other object's mask."""
    from workbench.analysis import score_maps, word_maps
    from workbench.toy.checker import detect

    _, run = toy
    found = detect(np.asarray(run.image.convert("RGB")))
    assert {"green", "yellow"} <= set(found), f"the model did not draw both objects: {sorted(found)}"
    circle, triangle = found["green"], found["yellow"]
    assert (circle.shape, triangle.shape) == ("circle", "triangle")
    assert circle.center[0] < triangle.center[0]  # left of, as the caption says
    right = {"circle": circle.mask, "triangle": triangle.mask}
    swapped = {"circle": triangle.mask, "triangle": circle.mask}
    # the toy evaluation's rule (min-max, 0.5) on all-mean maps at the image size, and DAAM's own: its
    # maps at the latent size, expanded bicubically by score_maps, rescaled min to max and cut at > 0.4
    for recipe, threshold, rule in (("all-mean", 0.5, "fraction-of-range"), ("daam", None, None)):
        maps = word_maps(run, recipe, size=(32, 32)) if recipe == "all-mean" else word_maps(run, recipe)
        good = score_maps(maps, right, threshold=threshold, rule=rule)
        bad = score_maps(maps, swapped, threshold=threshold, rule=rule)
        assert good.word.tolist() == ["circle", "triangle"]
        assert (good.iou >= 0.5).all(), f"{recipe}: IoU with the drawn objects {good.iou.tolist()}"
        assert (bad.iou <= 0.1).all(), f"{recipe}: IoU with the other object {bad.iou.tolist()}"
        assert good.attrs["miou"] >= 0.5
        assert good.rule.iloc[0] == (
            "fraction-of-range" if recipe == "all-mean" else "fraction-of-range-strict"
        )
