"""Comparison figures carry the compared data."""

import numpy as np
import pytest
from test_analysis_fakes import one_thread  # noqa: F401  (autouse fixture)
from test_analysis_word_order import word_order_pair

from workbench.analysis import compare_word_order
from workbench.viz import divergence_figure, map_pairs, side_by_side


def test_comparison_figures():
    a, b = word_order_pair()
    cmp = compare_word_order(a, b, upsample="nearest")
    fig = side_by_side(cmp)
    assert len(fig.data) == 2 and np.array_equal(np.asarray(fig.data[0].z), cmp.image_a)
    assert fig.layout.annotations[0].text == a.prompt
    pairs = map_pairs(cmp, words=["circle"])
    assert [t.name for t in pairs.data] == ["circle", "circle"]
    assert np.allclose(np.asarray(pairs.data[0].z), cmp.maps_a.get("circle").numpy())
    assert np.allclose(np.asarray(pairs.data[1].z), cmp.maps_b.get("circle").numpy())
    assert "IoU 1.00" in pairs.layout.annotations[0].text
    with pytest.raises(ValueError, match="\\['horse'\\] are not in the compared prompts"):
        map_pairs(cmp, words=["horse"])
    div = divergence_figure(cmp)
    assert list(div.data[0].y) == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert div.layout.xaxis.title.text == "denoising step (index)"
