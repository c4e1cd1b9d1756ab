"""Token tables: BPE sub-words grouped into the words the user typed; special and cut tokens named."""

import warnings

import pytest
from transformers import CLIPTokenizer

from workbench import generate, token_table
from workbench.core.tokens import dropped_words, word_positions


@pytest.fixture(scope="module")
def tok(tiny_folder):
    return CLIPTokenizer.from_pretrained(tiny_folder.parent / "pipe" / "tokenizer")


def test_sub_words_share_their_word(tok):
    table = token_table(tok, "An astronaut jumps")
    words = table[table.kind == "word"]
    assert tok.tokenize("astronaut") == ["astro", "nau", "t</w>"]  # a real multi-token split
    astro = words[words.word == "astronaut"]
    assert astro.token.tolist() == ["astro", "nau", "t"]
    assert astro.position.tolist() == [2, 3, 4] and set(astro.word_index) == {1}
    jumps = words[words.word == "jumps"]
    assert "".join(jumps.token) == "jumps" and len(jumps) == 3 and set(jumps.word_index) == {2}
    # the word column keeps the user's casing; the tokens are the tokenizer's
    assert words.iloc[0].word == "An" and words.iloc[0].token == "an"
    assert word_positions(table) == {0: [1], 1: [2, 3, 4], 2: [5, 6, 7]}


def test_special_positions_named(tok):
    table = token_table(tok, "a red circle")
    assert table.kind.tolist()[:5] == ["bos", "word", "word", "word", "eos"]
    assert (table.kind.iloc[5:] == "pad").all()
    assert len(table) == tok.model_max_length
    assert table.position.tolist() == list(range(tok.model_max_length))
    ids = tok("a red circle", padding="max_length", max_length=tok.model_max_length)["input_ids"]
    assert table.token_id.tolist() == ids  # exactly what the pipeline feeds the encoder


def test_long_prompt_warns_and_marks_cut_words(tiny_pipe):
    prompt = "a red circle left of a blue square and a yellow triangle below a green circle on the moon"
    with pytest.warns(UserWarning, match=r"cut off.*'moon'"):
        run = generate(tiny_pipe, prompt, seed=0, steps=2, progress=False)
    table = run.tokens
    cut = table[table.kind == "cut"]
    assert len(cut) > 0 and "moon" in cut.word.tolist()
    assert (cut.position >= 16).all()  # outside the encoder's context: can never index a map
    inside = table[table.kind != "cut"]
    assert len(inside) == 16 and inside.kind.iloc[-1] == "eos"
    assert dropped_words(table)[-1] == "moon"
    for probs in run.attention.probs.values():
        assert probs.shape[-1] == 16


def test_short_prompt_does_not_warn(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        token_table(tok, "a horse")


def test_cut_warning_points_at_the_caller(tiny_pipe):
    long = "a red circle left of a blue square and a yellow triangle below a green circle on the moon"
    with pytest.warns(UserWarning, match="negative_prompt is longer") as record:
        generate(tiny_pipe, "a red circle", negative_prompt=long, seed=0, steps=1, progress=False)
    assert record[0].filename == __file__
