"""Attribution figures and the rank comparison, on hand-made attributions."""

import numpy as np
import pandas as pd
import pytest
from test_analysis_fakes import DOWN, fake_run, on_bos, one_thread  # noqa: F401  (autouse fixture)
from test_analysis_word_order import word_order_pair

from workbench.analysis import Attribution, attribution_vs_attention, compare_word_order
from workbench.viz import attribution_bar, attribution_vs_attention_figure, mass_comparison


def hand_attribution(values: list[float]) -> tuple:
    probs = on_bos()
    probs[DOWN][:, 0, :4] = 0
    probs[DOWN][:, 0, :4, 1] = 1.0  # 'a' gets 4 queries
    probs[DOWN][:, 0, 4:6] = 0
    probs[DOWN][:, 0, 4:6, 4] = 1.0  # 'circle' gets 2
    probs[DOWN][:, 0, 6:7] = 0
    probs[DOWN][:, 0, 6:7, 2] = 1.0  # 'red' (first sub-word) gets 1
    run = fake_run(probs)
    words = pd.DataFrame(
        {
            "word_index": [0, 1, 2, -1],
            "word": ["a", "red", "circle", "<bos>"],
            "label": ["a", "red", "circle", "<bos>"],
            "kind": ["word", "word", "word", "bos"],
            "attribution": values + [5.0],
        }
    )
    tokens = pd.DataFrame(
        {
            "position": [0, 1, 2],
            "token": ["<s>", "a", "re"],
            "kind": ["bos", "word", "word"],
            "attribution": [5.0, 1, 2],
        }
    )
    attr = Attribution(
        tokens=tokens,
        words=words,
        method="integrated_gradients",
        target="t",
        step=2,
        delta=0.01,
        output_input=8.0,
        output_baseline=0.0,
    )
    return run, attr


def test_rank_agreement_by_hand_and_figures():
    run, attr = hand_attribution([3.0, 1.0, 2.0])  # same order as attention: a > circle > red
    table = attribution_vs_attention(attr, run)
    assert table.label.tolist() == ["a", "red", "circle"]  # special positions left out
    assert table.rank_attention.tolist() == [1, 3, 2] and table.rank_attribution.tolist() == [1, 3, 2]
    assert table.attrs["spearman"] == pytest.approx(1.0)
    assert "steps 2" in table.attrs["aggregation"]
    _, reversed_attr = hand_attribution([1.0, 3.0, 2.0])
    assert attribution_vs_attention(reversed_attr, run).attrs["spearman"] == pytest.approx(-1.0)
    fig = attribution_vs_attention_figure(table)
    assert list(fig.data[1].text) == ["a", "red", "circle"] and list(fig.data[1].x) == [1, 3, 2]
    bar = attribution_bar(attr)
    assert list(bar.data[0].x) == ["a", "red", "circle", "<bos>"] and list(bar.data[0].y) == [3, 1, 2, 5]
    assert "convergence delta" in bar.layout.title.text
    words_only = attribution_bar(attr, include_special=False)
    assert list(words_only.data[0].x) == ["a", "red", "circle"]


def test_ranks_are_by_magnitude_unless_signed_is_asked():
    run, attr = hand_attribution([3.0, -2.5, 1.0])  # 'red' pulls back hard: second by size, last by sign
    table = attribution_vs_attention(attr, run)
    assert table.rank_attribution.tolist() == [1, 2, 3] and table.attrs["ranked_by"] == "|attribution|"
    fig = attribution_vs_attention_figure(table)
    assert list(fig.data[1].y) == [1, 2, 3] and list(fig.data[1].customdata) == [3.0, -2.5, 1.0]
    assert "largest |attribution|" in fig.layout.yaxis.title.text.replace("<br>", " ")
    assert "words ranked by |attribution|" in fig.layout.title.text
    signed = attribution_vs_attention(attr, run, by="signed")
    assert signed.rank_attribution.tolist() == [1, 3, 2] and signed.attrs["ranked_by"] == "signed attribution"
    sfig = attribution_vs_attention_figure(signed)
    assert "most positive" in sfig.layout.yaxis.title.text.replace("<br>", " ")
    assert "words ranked by signed attribution" in sfig.layout.title.text
    with pytest.raises(ValueError, match="by must be"):
        attribution_vs_attention(attr, run, by="size")


def test_mass_comparison_figure():
    a, b = word_order_pair()
    cmp = compare_word_order(a, b)
    fig = mass_comparison(cmp)
    assert np.allclose(fig.data[0].y, cmp.words.mass_a) and np.allclose(fig.data[1].y, cmp.words.mass_b)
    pos = mass_comparison(cmp, by="position")
    assert pos.data[0].x[4] == "4: circle | d"
