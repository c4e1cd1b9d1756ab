"""Comparison figures carry the compared data."""

import numpy as np
import pytest
from test_analysis_fakes import one_thread  # noqa: F401  (autouse fixture)
from test_analysis_word_order import word_order_pair

from workbench.analysis import compare_word_order
from workbench.viz import Panel, divergence_figure, map_pairs, side_by_side, word_order_panels


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
    assert "IoU 1.00" in pairs.layout.annotations[1].text and "in a" in pairs.layout.annotations[0].text
    with pytest.raises(ValueError, match="\\['horse'\\] are not in the compared prompts"):
        map_pairs(cmp, words=["horse"])
    div = divergence_figure(cmp)
    assert list(div.data[0].y) == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert div.layout.xaxis.title.text == "denoising step (index)"


def test_word_order_panels_are_figures_and_a_table_with_captions():
    a, b = word_order_pair()
    cmp = compare_word_order(a, b, upsample="nearest")
    panels = word_order_panels([a, b], [cmp])
    assert [p.caption for p in panels] == [
        "Final images",
        "Each word's map in both word orders",
        "Divergence of the two trajectories per step",
        "Aligned words",
    ]
    assert all(p.figure is not None and p.table is None for p in panels[:3])
    pairs = panels[1].figure  # three aligned words: two pairs (a, b, a, b) per row, two rows
    assert len(pairs.data) == 6 and pairs.data[5].xaxis == "x6"
    assert pairs.layout.xaxis5.domain == pairs.layout.xaxis.domain  # the third word starts the second row
    assert panels[3].figure is None and panels[3].table.equals(cmp.words.round(3))
    assert panels[3].note == "“a red circle” vs “circle a red”"
    assert [p.caption for p in word_order_panels([a], [])] == ["Final images"]
    with pytest.raises(ValueError, match="exactly one of figure= or table="):
        Panel("empty")
