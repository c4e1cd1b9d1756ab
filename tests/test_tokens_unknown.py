"""Prompts the tokenizer cannot read: every token unknown, or no word tokens at all."""

import pytest

from workbench.core.tokens import token_table, unknown_message


@pytest.fixture(scope="module")
def tok(tiny_pipe):
    return tiny_pipe.tokenizer


@pytest.mark.parametrize("prompt", ["🙂🙂", "猫が好き", "!!!", "🙂 !!"])
def test_unreadable_prompts_warn_naming_the_prompt(tok, prompt):
    table = token_table(tok, prompt, warn=False)
    message = unknown_message(table, tok)
    assert message is not None and repr(prompt) in message


def test_all_unknown_tokens_are_named_as_such(tok):
    table = token_table(tok, "猫が好き", warn=False)
    inside = table[table.kind.isin(["word", "punct"])]
    assert len(inside) > 0 and (inside.token_id == tok.unk_token_id).all()  # the tiny vocabulary lacks them
    assert "does not know" in unknown_message(table, tok)


def test_known_punctuation_only_has_no_word_tokens(tok):
    table = token_table(tok, "a red circle", warn=False)
    table.loc[table.kind == "word", "kind"] = "punct"  # known tokens, none of them a word
    assert not (table.token_id == tok.unk_token_id).iloc[1:4].any()
    message = unknown_message(table, tok)
    assert "no word tokens" in message and "'a red circle'" in message


def test_a_tokenizer_without_an_unknown_token(tok):
    class NoUnk:
        unk_token_id = None
        unk_token = None

    table = token_table(tok, "🙂🙂", warn=False)  # punctuation-like symbols: no word tokens either way
    assert "no word tokens" in unknown_message(table, NoUnk())
    assert unknown_message(token_table(tok, "a red circle", warn=False), NoUnk()) is None


@pytest.mark.parametrize("prompt", ["a red circle", "a red circle 🙂", "", "   "])
def test_readable_or_empty_prompts_give_none(tok, prompt):
    table = token_table(tok, prompt, warn=False)
    assert unknown_message(table, tok) is None


def test_a_prompt_with_some_known_words_gives_none(tok):
    table = token_table(tok, "🙂 circle", warn=False)
    assert (table.token_id == tok.unk_token_id).any()
    assert unknown_message(table, tok) is None
