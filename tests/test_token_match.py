"""``repeats="token-match"`` compares token strings as DAAM does: characters the vocabulary lacks are the
characters they stand for, not the one unknown token they all become, so different ones never match."""

from pathlib import Path

import pytest
import torch

import workbench
from workbench.analysis import word_maps
from workbench.analysis.grouping import map_groups, token_strings
from workbench.core.tokens import token_table

TOKENIZER = Path(workbench.__file__).parent / "toy" / "weights" / "tokenizer"
# the embedded model's vocabulary has letters only: "7", "8", "é" and "ü" are unknown to it
PROMPT = "a red 7 circle 8 left of a blue square 7"


@pytest.fixture(scope="module")
def tok():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER)


def groups(table) -> dict[str, dict]:
    return {g["word"]: g for g in map_groups(table, "token-match", include_special=False)}


def test_unknown_characters_match_only_their_own_kind(tok):
    table = token_table(tok, PROMPT, warn=False)
    unknown = table[table.token_id == tok.unk_token_id]
    sevens_and_eight = unknown[unknown.kind == "word"]
    assert sevens_and_eight.position.tolist() == [3, 6, 13]  # all three the same unknown token
    assert set(sevens_and_eight.token) == {tok.unk_token}
    strings = token_strings(table)
    assert [strings[p] for p in (3, 6, 13)] == ["7", "8", "7"]
    assert strings[4] == "ci" and strings[5] == "rcle"  # known tokens are their own strings
    found = groups(table)
    assert found["7"]["positions"] == [3, 13] and found["7"]["occurrences"] == [2, 10]
    assert found["8"]["positions"] == [6] and found["8"]["occurrences"] == [4]
    assert found["a"]["positions"] == [1, 9]


def test_a_character_split_into_byte_tokens(tok):
    table = token_table(tok, "a é red ü é8", warn=False)
    inside = table[table.kind == "word"]
    unknown = inside[~inside.word.isin(["a", "red"])]
    assert len(unknown) == 7 and (unknown.token_id == tok.unk_token_id).all()  # é, ü: 2 bytes each
    strings = token_strings(table)
    assert [strings[p] for p in (2, 3)] == [("é", 0), ("é", 1)]
    assert [strings[p] for p in (5, 6)] == [("ü", 0), ("ü", 1)]
    found = groups(table)
    assert found["é"]["positions"] == [2, 3, 7, 8]  # and the é inside "é8", as DAAM finds it
    assert found["ü"]["positions"] == [5, 6]
    assert found["é8"]["positions"] == [7, 8, 9]


def test_the_daam_maps_of_two_unknown_characters_differ():
    pipe = workbench.load_pipeline("toy", device="cpu")
    run = workbench.generate(pipe, workbench.Request(PROMPT, seed=0, steps=2), progress=False)
    daam = word_maps(run, "daam")
    each = word_maps(run, "daam", repeats="each")
    assert daam.positions[daam.index("7")] == [3, 13]
    assert daam.positions[daam.index("8")] == [6]
    # DAAM averages a word's positions: "7" is the mean of its two occurrences, "8" its own map
    assert torch.allclose(daam.get("8"), each.get("8"), rtol=1e-5, atol=1e-7)
    assert torch.allclose(daam.get("7"), (each.get("7#1") + each.get("7#2")) / 2, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(daam.get("7"), daam.get("8"))
