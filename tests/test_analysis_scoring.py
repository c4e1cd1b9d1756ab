"""Threshold rules, IoU and mIoU on known masks."""

import numpy as np
import pytest
import torch
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
    assert binarize(h, 0.4, "max").tolist() == [[False, False], [True, True]]  # >= 0.4 * 5 = 2
    assert binarize(h + 10, 0.4, "max").all()  # scale-free, not shift-free
    assert binarize(h + 10, 0.4, "minmax").tolist() == [[False, False], [True, True]]  # (v - 10) / 5 >= 0.4
    assert binarize(h, 1.0, "absolute").tolist() == [[False, True], [True, True]]
    assert not binarize(torch.zeros(2, 2)).any()
    with pytest.raises(ValueError, match="rule must be one of"):
        binarize(h, 0.4, "otsu")


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
