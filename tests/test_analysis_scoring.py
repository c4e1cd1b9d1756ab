"""Threshold rules, IoU and mIoU on known masks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_analysis_fakes import DOWN, fake_run, on_bos, one_thread  # noqa: F401  (autouse fixture)

from workbench.analysis import binarize, iou, miou, score_maps, word_maps


def test_iou_of_known_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 pixels
    b[1:3, 1:3] = True  # 4 pixels, 1 shared
    assert iou(a, b) == pytest.approx(1 / 7)
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0
    assert np.isnan(iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)))
    assert miou([a, a, np.zeros((4, 4), bool)], [b, a, np.zeros((4, 4), bool)]) == pytest.approx(
        (1 / 7 + 1) / 2
    )
    with pytest.raises(ValueError, match="masks differ in shape"):
        iou(a, np.zeros((3, 3), bool))


def test_threshold_rules():
    h = torch.tensor([[0.0, 1.0], [2.0, 5.0]])
    assert binarize(h, 0.4, "fraction-of-max").tolist() == [[False, False], [True, True]]  # >= 0.4 * 5 = 2
    assert binarize(h + 10, 0.4, "fraction-of-max").all()  # scale-free, not shift-free
    assert binarize(h, 0.4, "fraction-of-max-strict").tolist() == [
        [False, False],
        [False, True],
    ]  # 2/5 > 0.4 no
    assert binarize(h + 10, 0.4, "fraction-of-range").tolist() == [[False, False], [True, True]]  # (v-10)/5
    assert binarize(h + 10, 0.4, "fraction-of-range-strict").tolist() == [[False, False], [False, True]]
    assert binarize(h, 1.0, "above-mean").tolist() == [[False, False], [False, True]]  # mean 2
    assert binarize(h, 1.0, "absolute").tolist() == [[False, True], [True, True]]
    for old, new in (("max", "fraction-of-max"), ("minmax", "fraction-of-range")):  # earlier names
        assert (binarize(h + 3, 0.4, old) == binarize(h + 3, 0.4, new)).all()
    assert not binarize(torch.zeros(2, 2)).any()
    assert not binarize(torch.ones(2, 2), 0.4, "fraction-of-range-strict").any()
    with pytest.raises(ValueError, match="rule must be one of"):
        binarize(h, 0.4, "otsu")


def test_a_map_on_a_high_floor_under_the_max_and_range_rules():
    """A map whose floor is 60% of its peak: 0.4 of the max keeps every pixel, DAAM's rule a part."""
    heat = torch.linspace(0.6, 1.0, 100).reshape(10, 10)
    assert binarize(heat, 0.4, "fraction-of-max").mean() == 1.0
    kept = binarize(heat, 0.4, "fraction-of-range-strict").mean()
    assert 0.55 <= kept <= 0.65  # (v - 0.6) / 0.4 > 0.4: v > 0.76


def test_score_maps_uses_the_recipes_rule_and_its_expansion():
    probs = on_bos()
    probs[DOWN][:, 0, 13] = 0
    probs[DOWN][:, 0, 13, 4] = 1.0  # 'circle' on grid cell (1, 5)
    run = fake_run(probs)
    maps = word_maps(run, "daam")  # at the latent size, 4x8
    truth = np.zeros((8, 16), bool)
    truth[2:4, 10:12] = True
    scores = score_maps(maps, {"circle": truth})  # expanded bicubically to 8x16 first, as DAAM's expand_as
    assert scores.rule.iloc[0] == "fraction-of-range-strict" and scores.threshold.iloc[0] == 0.4
    assert "expanded bicubic to 8x16" in scores.attrs["aggregation"]
    # DAAM's WordHeatMap.expand_as(image, threshold=0.4), written out
    im = F.interpolate(maps.get("circle")[None, None], size=(8, 16), mode="bicubic")
    im = (im - im.min()) / (im.max() - im.min() + 1e-8)
    daam = (im > 0.4).float().squeeze().numpy().astype(bool)
    assert scores.pred_pixels.iloc[0] == int(daam.sum())
    assert scores.iou.iloc[0] == pytest.approx(iou(daam, truth))
    assert score_maps(maps, {"circle": truth}, rule="absolute", threshold=0.0).rule.iloc[0] == "absolute"


def test_score_maps_on_a_one_hot_store():
    probs = on_bos()
    probs[DOWN][:, 0, 13] = 0
    probs[DOWN][:, 0, 13, 4] = 1.0  # 'circle' on grid cell (1, 5) -> pixels rows 2-3, cols 10-11
    run = fake_run(probs)
    truth = np.zeros((8, 16), bool)
    truth[2:4, 10:14] = True  # the object covers the cell and the one to its right
    scores = score_maps(word_maps(run, upsample="nearest"), {"circle": truth})
    assert scores.iou.iloc[0] == pytest.approx(4 / 8)
    assert scores.pred_pixels.iloc[0] == 4 and scores.true_pixels.iloc[0] == 8
    assert scores.attrs["miou"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="make the maps at the mask's size"):
        score_maps(word_maps(run), {"circle": np.zeros((4, 4), bool)})
    with pytest.raises(ValueError, match="'square'.*not in these maps"):
        score_maps(word_maps(run), {"square": truth})
