"""Token tables: which prompt token sits at which text-encoder position, and which word it belongs to.

A CLIP-style BPE tokenizer splits words into sub-word tokens and marks the last token of each word
with ``</w>``. The token table groups sub-words back into the words the user typed, names the special
positions (BOS, EOS, padding) and lists the tokens that did not fit into the encoder's context.
"""

from __future__ import annotations

import warnings

import pandas as pd

TOKEN_COLUMNS = ["position", "token_id", "token", "word_index", "word", "kind"]
KINDS = ("bos", "word", "punct", "eos", "pad", "cut", "template")
TEXT_KINDS = ("word", "punct")
SPECIAL_KINDS = ("bos", "eos", "pad", "template")  # "template": a chat template's own tokens


MAX_WORD_CHARS = 80  # a "word" longer than this is shown shortened in the table (one copy per token)


def _clean(token: str) -> str:
    return token.replace("</w>", "")


def shown_word(word: str) -> str:
    """A word as the table keeps it: itself, or its start and length when longer than ``MAX_WORD_CHARS``.

    Every token row holds its word, so a table of a very long word stays linear in the prompt's length.
    """
    if len(word) <= MAX_WORD_CHARS:
        return word
    return f"{word[: MAX_WORD_CHARS - 20]}… ({len(word):,} characters)"


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
    words = [shown_word(text[a:b]) for a, b in word_spans]

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


def cut_message(table: pd.DataFrame, limit: int, encoder: str = "") -> str | None:
    """The warning for a prompt whose words did not all fit the encoder's context, or None.

    ``encoder`` names the text encoder (``"CLIP"``, ``"T5"``) where a model has more than one.
    """
    if not (table["kind"].to_numpy() == "cut").any():
        return None
    lost = dropped_words(table)
    which = f"{encoder} text encoder" if encoder else "text encoder"
    return (
        f"prompt is longer than the {which}'s limit of {limit} tokens; "
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


def word_groups(table: pd.DataFrame, include_special: bool) -> list[dict]:
    """Word groups (positions summed together), then special groups when asked.

    What counts as a word of a prompt is decided here and nowhere else: the in-context positions of
    kind ``word`` or ``punct`` (``TEXT_KINDS``), grouped by ``word_index``, in order; each group is a
    dict with ``word`` (as typed), ``word_index``, ``kind`` and ``positions``.
    """
    inside = table[table.kind != "cut"]
    groups = []
    for wi, g in inside[inside.kind.isin(TEXT_KINDS)].groupby("word_index", sort=True):
        groups.append(
            {
                "word": str(g.word.iloc[0]),
                "word_index": int(wi),
                "kind": str(g.kind.iloc[0]),
                "positions": g.position.astype(int).tolist(),
            }
        )
    if include_special:
        for kind in SPECIAL_KINDS:
            g = inside[inside.kind == kind]
            if len(g):
                groups.append(
                    {
                        "word": f"<{kind}>",
                        "word_index": -1,
                        "kind": kind,
                        "positions": g.position.astype(int).tolist(),
                    }
                )
    return groups


def occurrence_keys(words: list[str]) -> list[tuple[str, int]]:
    """Each word's alignment key: (lowercased word, how many times it came before). Two prompts' words
    align when their keys are equal: by identity, repeats by order of occurrence."""
    seen: dict[str, int] = {}
    keys = []
    for w in words:
        k = w.lower()
        keys.append((k, seen.get(k, 0)))
        seen[k] = seen.get(k, 0) + 1
    return keys


def align_word_groups(groups_a: list[dict], groups_b: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of word groups (``word_groups``) of two prompts that align (``occurrence_keys``), in a's order."""
    keyed_b = dict(zip(occurrence_keys([g["word"] for g in groups_b]), groups_b))
    keys_a = occurrence_keys([g["word"] for g in groups_a])
    return [(g, keyed_b[k]) for k, g in zip(keys_a, groups_a) if k in keyed_b]


def aligned_positions(table_a: pd.DataFrame, table_b: pd.DataFrame) -> tuple[list[int], list[int]]:
    """The text positions of two prompts that hold the same token: ``a[i]`` and ``b[i]``. The tokens of
    aligned words (``align_word_groups``; a word tokenized differently has no token-by-token match),
    then each special kind's positions in order (BOS with BOS, the first pad with the first pad, ...)."""
    a, b = [], []
    groups = (word_groups(table_a, include_special=False), word_groups(table_b, include_special=False))
    for ga, gb in align_word_groups(*groups):
        if len(ga["positions"]) == len(gb["positions"]):
            a += ga["positions"]
            b += gb["positions"]
    encoders = list(dict.fromkeys(table_a["encoder"])) if "encoder" in table_a else [None]
    for encoder in encoders:  # each text encoder's specials with its own (SD3: CLIP pads with CLIP pads)
        for kind in SPECIAL_KINDS:
            pa, pb = (_special_positions(t, kind, encoder) for t in (table_a, table_b))
            n = min(len(pa), len(pb))
            a += pa[:n]
            b += pb[:n]
    return a, b


def _special_positions(table: pd.DataFrame, kind: str, encoder) -> list[int]:
    rows = table.kind == kind
    if encoder is not None:
        rows &= table.encoder == encoder
    return table.position[rows].astype(int).tolist()


def unknown_message(table: pd.DataFrame, tokenizer) -> str | None:
    """The warning for a prompt the tokenizer cannot read, or None.

    A prompt is unreadable when every one of its tokens is the tokenizer's unknown token (emoji or
    another script on a tokenizer that lacks them), or when it yields no word tokens at all (only
    punctuation, such as ``"!!!"``): its attention maps then say nothing about words. An empty prompt
    has no tokens and gives None.

    Args:
        table: the prompt's token table (see ``token_table``).
        tokenizer: the tokenizer that made it.

    Example:
        >>> unknown_message(token_table(tok, "🙂🙂"), tok)  # doctest: +SKIP
        "prompt '🙂🙂' is made only of tokens the tokenizer does not know ..."
    """
    own = table[table["kind"].isin(["word", "punct", "cut"])]  # the prompt's tokens, specials left out
    if own.empty:
        return None
    words = own.drop_duplicates("word_index").sort_values("word_index")["word"].tolist()
    prompt = " ".join(str(w) for w in words)
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and (own["token_id"].to_numpy() == unk).all():
        return (
            f"prompt {prompt!r} is made only of tokens the tokenizer does not know (each became "
            f"{tokenizer.unk_token!r}); its attention maps say nothing about its words. "
            "Write the prompt in words the model was trained on"
        )
    if not (own["kind"].to_numpy() == "word").any():
        return (
            f"prompt {prompt!r} has no word tokens (only punctuation or symbols); its attention maps "
            "say nothing about words. Write the prompt in words the model was trained on"
        )
    return None


def sentencepiece_table(
    tokenizer, text: str, max_length: int, *, word_spans: list[tuple[int, int]] | None = None
) -> pd.DataFrame:
    """The token table of a T5-style (SentencePiece) tokenizer: no BOS, ``▁`` starts a word, EOS, padding.

    Args:
        tokenizer: a ``T5TokenizerFast`` (or any tokenizer returning offsets, with EOS and pad tokens).
        text: the prompt as typed.
        max_length: the encoder's sequence length (the pipeline's ``max_sequence_length``).
        word_spans: (start, end) character spans of the prompt's words as another encoder's table
            grouped them (see ``word_spans``): tokens then take the index of the word they overlap,
            so the same word has the same ``word_index`` in both tables.

    Returns:
        Columns as ``token_table``'s; cut tokens are numbered on from ``max_length``.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    enc = tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    spans: list[list[int]] = []
    word_of: list[int] = []
    ends = [e for _, e in word_spans] if word_spans is not None else []
    for i, piece in enumerate(pieces):
        a, b = offsets[i]
        if word_spans is not None:
            word_of.append(_overlapping(word_spans, ends, a, max(b, a + 1), word_of))
            continue
        if i == 0 or piece.startswith("\u2581") or a > offsets[i - 1][1]:
            spans.append([a, b])
        else:
            spans[-1][1] = b
        word_of.append(len(spans) - 1)
    spans_used = [list(sp) for sp in word_spans] if word_spans is not None else spans
    words = [shown_word(text[a:b].strip()) for a, b in spans_used]
    room = max_length - 1  # EOS takes a position
    rows = []
    for i, (tid, piece) in enumerate(zip(ids, pieces)):
        word = words[word_of[i]] if words else ""
        kind = "word" if any(ch.isalnum() for ch in word) else "punct"
        rows.append(
            {
                "position": i,
                "token_id": int(tid),
                "token": piece.replace("\u2581", ""),
                "word_index": word_of[i],
                "word": word,
                "kind": kind if i < room else "cut",
            }
        )
    kept = min(len(ids), room)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_tok = tokenizer.convert_ids_to_tokens([pad_id])[0]
    specials = [_special(kept, tokenizer.eos_token_id, tokenizer.eos_token, "eos")]
    specials += [_special(p, pad_id, pad_tok, "pad") for p in range(kept + 1, max_length)]
    cut = [r for r in rows if r["kind"] == "cut"]
    for r in cut:
        r["position"] = max_length + r["position"] - kept
    return pd.DataFrame([r for r in rows if r["kind"] != "cut"] + specials + cut, columns=TOKEN_COLUMNS)


def _overlapping(spans, ends: list[int], a: int, b: int, word_of: list[int]) -> int:
    """The first of ``spans`` (sorted, disjoint) that overlaps [a, b), found by bisection; else the
    previous token's word."""
    import bisect

    w = bisect.bisect_right(ends, a)  # the first span ending after a
    if w < len(spans) and spans[w][0] < b:
        return w
    return word_of[-1] if word_of else 0


def word_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the prompt's words as ``token_table`` groups them."""
    enc = tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    pieces = tokenizer.convert_ids_to_tokens(list(enc["input_ids"]))
    spans: list[list[int]] = []
    for i in range(len(pieces)):
        if i == 0 or pieces[i - 1].endswith("</w>") or offsets[i][0] > offsets[i - 1][1]:
            spans.append(list(offsets[i]))
        else:
            spans[-1][1] = offsets[i][1]
    return [tuple(sp) for sp in spans]


def joined_table(parts: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Token tables of several encoders laid end to end on one key axis, with an ``encoder`` column.

    Each part's in-context positions are shifted by the lengths before it; cut tokens are numbered on
    past the whole axis, so they can never index a map.
    """
    frames, offset = [], 0
    for encoder, table in parts:
        inside = table[table.kind != "cut"].copy()
        inside["position"] = inside["position"] + offset
        inside["encoder"] = encoder
        frames.append(inside)
        offset += len(inside)
    cut = pd.concat([table[table.kind == "cut"].assign(encoder=encoder) for encoder, table in parts])
    cut["position"] = range(offset, offset + len(cut))
    return pd.concat([*frames, cut], ignore_index=True)


def template_table(
    tokenizer,
    template: str,
    drop: int,
    text: str,
    max_length: int,
    pad_to: int | None = None,
    add_special_tokens: bool = True,
) -> pd.DataFrame:
    """The token table of a prompt put into a chat template whose first ``drop`` tokens the pipeline
    drops (Qwen-Image's system prefix): the prompt's tokens as words, then the template's own tokens
    after it (kind ``template``), cut at ``max_length``, padded (kind ``pad``) to ``pad_to``.

    Words are the prompt's whitespace-separated spans; a token belongs to the word its characters
    overlap (byte-level offsets include the leading space, which belongs to no word).
    """
    import re

    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    start = template.index("{}")
    formatted = template.replace("{}", text, 1) if template.count("{}") == 1 else template.format(text)
    enc = tokenizer(
        formatted, truncation=False, return_offsets_mapping=True, add_special_tokens=add_special_tokens
    )
    ids = list(enc["input_ids"])[drop:]
    offsets = [(a - start, b - start) for a, b in enc["offset_mapping"]][drop:]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    ends = [e for _, e in spans]
    words = [shown_word(text[a:b]) for a, b in spans]
    rows, word_of = [], []
    for i, (tid, piece, (a, b)) in enumerate(zip(ids, pieces, offsets)):
        inside = b > 0 and a < len(text) and spans
        w = _overlapping(spans, ends, max(a, 0), max(b, a + 1), word_of) if inside else -1
        if inside:
            word_of.append(w)
        rows.append(_template_row(i, tid, piece, w, words, cut=i >= max_length))
    kept = min(len(rows), max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_tok = tokenizer.convert_ids_to_tokens([pad_id])[0]
    pads = [_special(p, pad_id, pad_tok, "pad") for p in range(kept, max(kept, pad_to or 0))]
    cut = [r for r in rows if r["kind"] == "cut"]
    for k, r in enumerate(cut):
        r["position"] = max(kept, pad_to or 0) + k
    return pd.DataFrame([r for r in rows if r["kind"] != "cut"] + pads + cut, columns=TOKEN_COLUMNS)


def _template_row(position: int, token_id, piece: str, w: int, words: list[str], cut: bool) -> dict:
    """A token of a prompt in a template: of the prompt's word ``w`` (``word`` or ``punct``), or one of
    the template's own tokens (``w`` -1: kind ``template``); kind ``cut`` past the text limit."""
    word = words[w] if w >= 0 else piece
    kind = ("word" if any(ch.isalnum() for ch in word) else "punct") if w >= 0 else "template"
    return {
        "position": position,
        "token_id": int(token_id),
        "token": piece.replace("\u0120", " ").strip() or piece,
        "word_index": w,
        "word": word,
        "kind": "cut" if cut else kind,
    }


def windowed_table(tokenizer, prefix: str, text: str, max_length: int) -> pd.DataFrame:
    """Sana's token table: the prompt lower-cased and stripped after an instruction ``prefix`` (which the
    encoder reads, causally), tokenized with BOS and padded to the prefix's length plus
    ``max_length - 2``; then BOS and the last ``max_length - 1`` positions are the keys. Without a prefix
    (the negative prompt): BOS, the tokens, padding, ``max_length`` in all.

    Key rows: ``bos``, the prompt's tokens as words (the last instruction token, where the window starts,
    is kind ``template``), ``pad``; tokens past the padded length are ``cut``.
    """
    import re

    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    text = text.lower().strip()
    n_prefix = len(tokenizer.encode(prefix)) if prefix else 0  # BOS included
    total = n_prefix + max_length - 2 if prefix else max_length
    enc = tokenizer(prefix + text, truncation=False, return_offsets_mapping=True)
    ids, start = list(enc["input_ids"]), len(prefix)
    offsets = [(a - start, b - start) for a, b in enc["offset_mapping"]]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    ends, words = [e for _, e in spans], [shown_word(text[a:b]) for a, b in spans]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_tok = tokenizer.convert_ids_to_tokens([pad_id])[0]
    rows, word_of = [], []

    def row(position: int, i: int, kind: str) -> dict:
        a, b = offsets[i]
        if kind == "word" and b > 0 and a < len(text) and spans:
            w = _overlapping(spans, ends, max(a, 0), max(b, a + 1), word_of)
            word_of.append(w)
            word = words[w]
            return {
                "position": position,
                "token_id": int(ids[i]),
                "token": pieces[i].replace("\u2581", ""),
                "word_index": w,
                "word": word,
                "kind": "word" if any(ch.isalnum() for ch in word) else "punct",
            }
        kind = "bos" if i == 0 else ("template" if kind == "word" else kind)
        return {
            "position": position,
            "token_id": int(ids[i]),
            "token": pieces[i],
            "word_index": -1,
            "word": pieces[i],
            "kind": kind,
        }

    for position, i in enumerate([0, *range(total - max_length + 1, total)]):
        rows.append(row(position, i, "word") if i < len(ids) else _special(position, pad_id, pad_tok, "pad"))
    cut = [row(max_length + k, i, "word") | {"kind": "cut"} for k, i in enumerate(range(total, len(ids)))]
    return pd.DataFrame(rows + cut, columns=TOKEN_COLUMNS)


def front_padded_table(tokenizer, text: str, max_length: int, total: int | None = None) -> pd.DataFrame:
    """CogView4's token table: the tokenizer's own special tokens (kind ``template``) and the prompt's
    tokens, cut at ``max_length``, after padding put in front to ``total`` positions (kind ``pad``: real
    keys, unmasked)."""
    import re

    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    enc = tokenizer(text, truncation=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    ends, words = [e for _, e in spans], [shown_word(text[a:b]) for a, b in spans]
    kept = min(len(ids), max_length)
    pads = max(kept, total or 0) - kept
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_tok = tokenizer.convert_ids_to_tokens([pad_id])[0]
    rows = [_special(p, pad_id, pad_tok, "pad") for p in range(pads)]
    word_of: list[int] = []
    for i, (tid, piece, (a, b)) in enumerate(zip(ids, pieces, offsets)):
        inside = b > a and spans
        w = _overlapping(spans, ends, a, b, word_of) if inside else -1
        if inside:
            word_of.append(w)
        position = pads + i if i < kept else max_length + pads + i - kept
        rows.append(_template_row(position, tid, piece, w, words, cut=i >= kept))
    return pd.DataFrame(rows, columns=TOKEN_COLUMNS)
