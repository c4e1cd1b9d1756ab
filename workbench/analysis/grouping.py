"""Which encoder positions make each word's map: a word's sub-word tokens, and repeated words.

A word's map combines the maps of its tokens (``word_groups`` in ``core.tokens`` decides what a word
is). A word that occurs more than once gets one map per occurrence, or one merged map
(``Aggregation.repeats``): by the word as typed (``"merge"``), or as DAAM's
``compute_token_merge_indices`` finds it, by its token sequence (``"token-match"``).

Token sequences compare the tokenizer's token strings, as DAAM does: a token the vocabulary lacks is
the characters it stands for, not the unknown token it becomes (every unknown character is the same
``<|endoftext|>`` id on a CLIP tokenizer), so two different unknown characters do not match.
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
    ``compute_token_merge_indices``: every place the word's token sequence (lower case; token strings
    as ``token_strings`` spells them) occurs among the prompt's tokens, which also catches a matching
    token inside another word.
    """
    groups = [dict(g, occurrences=[g["word_index"]]) for g in word_groups(table, include_special)]
    words = [g for g in groups if g["kind"] in TEXT_KINDS]
    special = [g for g in groups if g["kind"] not in TEXT_KINDS]
    if repeats == "each":
        return groups
    if repeats not in ("merge", "token-match"):
        raise ValueError(f"repeats must be 'each', 'merge' or 'token-match', got {repeats!r}")
    token_of = token_strings(table) if repeats == "token-match" else {}
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


def token_strings(table: pd.DataFrame) -> dict:
    """Each in-context text position's token string (lower case), by position: what DAAM compares.

    A token that spells its word's next characters is its own string. One that does not is a token
    the vocabulary lacks (the table holds the unknown token it became): it is the characters it
    stands for, so different unknown characters differ. A run of such tokens stands for the text up to
    the next token that spells on: one character (or one UTF-8 byte) each when the counts agree, else
    ``(word, i)`` for the word's i-th token. Words are spelled per encoder where the table joins
    several.
    """
    inside = table[table.kind.isin(TEXT_KINDS)]
    keys = ["encoder", "word_index"] if "encoder" in inside.columns else ["word_index"]
    out: dict = {}
    for _, rows in inside.groupby(keys, sort=False):
        rows = rows.sort_values("position")
        spelled = _spelled(str(rows.word.iloc[0]), rows.token.astype(str).str.lower().tolist())
        out.update(zip(rows.position.astype(int), spelled))
    return dict(sorted(out.items()))


def _spelled(word: str, tokens: list[str]) -> list:
    """The strings a word's tokens stand for (see ``token_strings``), in order."""
    text, out, at, i = word.lower(), [], 0, 0
    while i < len(tokens):
        if tokens[i] and text.startswith(tokens[i], at):
            out.append(tokens[i])
            at, i = at + len(tokens[i]), i + 1
            continue
        j, end = i + 1, len(text)  # the run of tokens that do not spell the text, and where it ends
        while j < len(tokens) and (not tokens[j] or text.find(tokens[j], at + 1) < 0):
            j += 1
        if j < len(tokens):
            end = text.find(tokens[j], at + 1)
        out += _unknown_strings(text[at:end], j - i) or [(text, k) for k in range(i, j)]
        at, i = end, j
    return out


def _unknown_strings(segment: str, n: int) -> list:
    """The strings of ``n`` unknown tokens standing for ``segment``; empty when they cannot be told.

    One character per token, or one byte per token (``(character, byte index)`` for a character of
    several UTF-8 bytes, as a byte-level tokenizer splits it).
    """
    if len(segment) == n:
        return list(segment)
    sizes = [len(c.encode("utf-8")) for c in segment]
    if sum(sizes) == n:
        return [c if size == 1 else (c, b) for c, size in zip(segment, sizes) for b in range(size)]
    return []


def _token_matches(token_of: dict, key: tuple) -> list[int]:
    """Every run of consecutive positions whose tokens spell ``key``, all their positions in order."""
    order = list(token_of)  # text positions, ascending
    found = []
    for start in range(len(order) - len(key) + 1):
        run = order[start : start + len(key)]
        if run == list(range(run[0], run[0] + len(key))) and tuple(token_of[p] for p in run) == key:
            found += run
    return found
