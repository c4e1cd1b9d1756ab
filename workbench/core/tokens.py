"""Token tables: which prompt token sits at which text-encoder position, and which word it belongs to.

A CLIP-style BPE tokenizer splits words into sub-word tokens and marks the last token of each word
with ``</w>``. The token table groups sub-words back into the words the user typed, names the special
positions (BOS, EOS, padding) and lists the tokens that did not fit into the encoder's context.
"""

from __future__ import annotations

import warnings

import pandas as pd

TOKEN_COLUMNS = ["position", "token_id", "token", "word_index", "word", "kind"]
KINDS = ("bos", "word", "punct", "eos", "pad", "cut")


def _clean(token: str) -> str:
    return token.replace("</w>", "")


def token_table(tokenizer, text: str, max_length: int | None = None, *, warn: bool = True) -> pd.DataFrame:
    """Align a prompt's tokens with its words, exactly as the pipeline tokenizes it.

    Args:
        tokenizer: a ``CLIPTokenizer`` (or any tokenizer that returns offsets and BOS/EOS ids).
        text: the prompt as the user typed it.
        max_length: the text encoder's context length; defaults to ``tokenizer.model_max_length``.
        warn: warn when words are cut off (see ``cut_message``).

    Returns:
        DataFrame with one row per position the text encoder sees, then one row per token cut off:
        ``position`` (encoder position; cut tokens are numbered on from ``max_length``, outside
        the encoder's context, so they can never index a map),
        ``token_id``, ``token`` (text without the ``</w>`` marker), ``word_index`` (index of the word
        in the prompt, -1 for special positions), ``word`` (the word as typed), and ``kind``
        (``bos``, ``word``, ``punct``, ``eos``, ``pad`` or ``cut``).

    Example:
        >>> token_table(pipe.tokenizer, "a yellow circle")  # doctest: +SKIP
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    limit = int(max_length or tokenizer.model_max_length)
    enc = tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    pieces = tokenizer.convert_ids_to_tokens(ids)

    # Group sub-word tokens into words: a word ends at a token carrying the end-of-word marker, or
    # where the text has white space before the next token.
    word_of: list[int] = []
    word_spans: list[list[int]] = []
    for i in range(len(pieces)):
        starts_new = i == 0 or pieces[i - 1].endswith("</w>") or offsets[i][0] > offsets[i - 1][1]
        if starts_new:
            word_spans.append([offsets[i][0], offsets[i][1]])
        else:
            word_spans[-1][1] = offsets[i][1]
        word_of.append(len(word_spans) - 1)
    words = [text[a:b] for a, b in word_spans]

    room = limit - 2  # BOS and EOS always take a position each
    rows: list[dict] = [_special(0, tokenizer.bos_token_id, tokenizer.bos_token, "bos")]
    for i, (tid, piece) in enumerate(zip(ids, pieces)):
        word = words[word_of[i]]
        kind = "word" if any(ch.isalnum() for ch in word) else "punct"
        rows.append(
            {
                "position": i + 1,
                "token_id": int(tid),
                "token": _clean(piece),
                "word_index": word_of[i],
                "word": word,
                "kind": kind if i < room else "cut",
            }
        )
    kept = min(len(ids), room)
    eos_pos = kept + 1
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_tok = tokenizer.convert_ids_to_tokens([pad_id])[0]
    specials = [_special(eos_pos, tokenizer.eos_token_id, tokenizer.eos_token, "eos")]
    specials += [_special(p, pad_id, pad_tok, "pad") for p in range(eos_pos + 1, limit)]
    cut = [r for r in rows if r["kind"] == "cut"]
    for r in cut:  # numbered on past the context: position max_length is the first cut token
        r["position"] = limit + r["position"] - eos_pos
    table = pd.DataFrame([r for r in rows if r["kind"] != "cut"] + specials + cut, columns=TOKEN_COLUMNS)
    table = table.reset_index(drop=True)
    if warn and cut:
        warnings.warn(cut_message(table, limit), stacklevel=2)
    return table


def cut_message(table: pd.DataFrame, limit: int) -> str | None:
    """The warning for a prompt whose words did not all fit the encoder's context, or None."""
    if not (table["kind"].to_numpy() == "cut").any():
        return None
    lost = dropped_words(table)
    return (
        f"prompt is longer than the text encoder's limit of {limit} tokens; "
        f"these words are cut off and get no attention maps: {lost}"
    )


def _special(position: int, token_id: int, token: str, kind: str) -> dict:
    return {
        "position": position,
        "token_id": int(token_id),
        "token": _clean(token),
        "word_index": -1,
        "word": token,
        "kind": kind,
    }


def dropped_words(table: pd.DataFrame) -> list[str]:
    """Words (as typed) that lost at least one token to the encoder's context limit."""
    cut = table[table.kind == "cut"]
    return list(dict.fromkeys(cut.word.tolist()))


def word_positions(table: pd.DataFrame) -> dict[int, list[int]]:
    """Map each in-context word index to the encoder positions of its tokens."""
    inside = table[table.kind.isin(["word", "punct"])]
    return {int(w): g.position.astype(int).tolist() for w, g in inside.groupby("word_index", sort=True)}
