"""Which encoder positions make each word's map: a word's sub-word tokens, and repeated words.

A word's map combines the maps of its tokens (``word_groups`` in ``core.tokens`` decides what a word
is). A word that occurs more than once gets one map per occurrence, or one merged map
(``Aggregation.repeats``): by the word as typed (``"merge"``), or as DAAM's
``compute_token_merge_indices`` finds it, by its token sequence (``"token-match"``).
"""

from __future__ import annotations

import pandas as pd

from workbench.core.tokens import TEXT_KINDS, word_groups


def unique_labels(words: list[str]) -> list[str]:
    """``["a", "red", "a"]`` -> ``["a#1", "red", "a#2"]``: repeated words numbered by occurrence."""
    counts = {w: words.count(w) for w in words}
    seen: dict[str, int] = {}
    out = []
    for w in words:
        seen[w] = seen.get(w, 0) + 1
        out.append(f"{w}#{seen[w]}" if counts[w] > 1 else w)
    return out


def map_groups(table: pd.DataFrame, repeats: str, include_special: bool) -> list[dict]:
    """The maps a word-level recipe makes: ``word_groups`` with repeated words handled by ``repeats``.

    Each group has ``word``, ``word_index`` (its first occurrence), ``kind``, ``positions`` (the encoder
    positions to combine; may repeat under ``"token-match"``) and ``occurrences`` (word indices merged).

    ``"merge"``: occurrences of the same word (case-insensitive) pooled. ``"token-match"``: as DAAM's
    ``compute_token_merge_indices``: every place the word's token sequence (lower case) occurs among
    the prompt's tokens, which also catches a matching token inside another word.
    """
    groups = [dict(g, occurrences=[g["word_index"]]) for g in word_groups(table, include_special)]
    words = [g for g in groups if g["kind"] in TEXT_KINDS]
    special = [g for g in groups if g["kind"] not in TEXT_KINDS]
    if repeats == "each":
        return groups
    if repeats not in ("merge", "token-match"):
        raise ValueError(f"repeats must be 'each', 'merge' or 'token-match', got {repeats!r}")
    inside = table[table.kind.isin(TEXT_KINDS)].sort_values("position")
    token_of = dict(zip(inside.position.astype(int), inside.token.astype(str).str.lower()))
    merged: dict[tuple, dict] = {}
    for g in words:
        key = (g["word"].lower(),) if repeats == "merge" else tuple(token_of[p] for p in g["positions"])
        if key in merged:
            merged[key]["occurrences"].append(g["word_index"])
            if repeats == "merge":
                merged[key]["positions"] = merged[key]["positions"] + g["positions"]
        else:
            merged[key] = dict(g, positions=list(g["positions"]))
    if repeats == "token-match":
        for key, g in merged.items():
            g["positions"] = _token_matches(token_of, key)
    return list(merged.values()) + special


def _token_matches(token_of: dict[int, str], key: tuple[str, ...]) -> list[int]:
    """Every run of consecutive positions whose tokens spell ``key``, all their positions in order."""
    order = list(token_of)  # text positions, ascending
    found = []
    for start in range(len(order) - len(key) + 1):
        run = order[start : start + len(key)]
        if run == list(range(run[0], run[0] + len(key))) and tuple(token_of[p] for p in run) == key:
            found += run
    return found
