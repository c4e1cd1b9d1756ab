"""Placing edits on one pipeline call: which layers, heads and text positions each edit acts on.

A call's prompt, size and text lengths are known when it starts (``check_inputs``); from them every
edit becomes a ``Placed`` value that the attention hooks read at each layer and step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..core.edit import Edit, EditError
from ..core.errors import FieldError
from ..core.layers import select_layers
from ..core.tokens import align_word_groups, word_groups


@dataclass(frozen=True)
class Pairs:
    """Replace: target text positions and the source positions whose attention they take."""

    target: torch.Tensor  # (n,) long
    source: torch.Tensor  # (n,) long


@dataclass(frozen=True)
class Placed:
    """One edit placed on one call.

    Attributes:
        edit: the edit.
        layers: the module paths it acts on.
        log_weights: reweight/ablate: (prompts, text positions) float64, log(factor) on the words and 0
            elsewhere; None for other kinds.
        pairs: replace: one ``Pairs`` per prompt; empty for other kinds.
    """

    edit: Edit
    layers: frozenset[str]
    log_weights: torch.Tensor | None = None
    pairs: tuple[Pairs, ...] = field(default_factory=tuple)

    def acts(self, layer: str, step: int) -> bool:
        steps = self.edit.steps
        return layer in self.layers and (steps is None or step in steps)


@dataclass(frozen=True)
class CallText:
    """What a call's text looks like to the denoiser: its prompts and their token tables."""

    prompts: tuple[str, ...]
    positions: int  # text key positions the denoiser sees
    groups: tuple[list[dict], ...]  # per prompt: word groups (``core.tokens.word_groups``)
    cut: tuple[frozenset[str], ...] = ()  # per prompt: words past the text encoder's length (no keys)


def call_text(adapter, prompt, lengths: dict) -> CallText:
    """The prompts of a call (``prompt`` as the call got it) and their word groups."""
    if prompt is None:
        raise FieldError(
            "prompt_embeds",
            "cannot be edited: an edit finds its words in the prompt's text; pass prompt=... instead",
        )
    prompts = (prompt,) if isinstance(prompt, str) else tuple(prompt)
    tables = [adapter.table(p, lengths) for p in prompts]
    groups = tuple(word_groups(t, include_special=False) for t in tables)
    cut = tuple(frozenset(str(w) for w in t.word[t.kind == "cut"]) for t in tables)
    return CallText(prompts, max(sum(lengths.values()), 1), groups, cut)


def place(edit: Edit, text: CallText, grids: dict, heads: dict, sources: dict) -> Placed:
    """One edit on one call; ``grids``/``heads``: layer -> query grid / head count, ``sources``:
    source prompt -> its recorded ``Run`` (for replace edits)."""
    layers = placed_layers(edit, grids, heads)
    if edit.kind in ("reweight", "ablate"):
        return Placed(edit, frozenset(layers), log_weights=_log_weights(edit, text))
    if edit.kind == "replace":
        return Placed(edit, frozenset(layers), pairs=_pairs(edit, text, sources))
    return Placed(edit, frozenset())  # switch: acts on the conditioning, not on a layer


def layer_shapes(adapter, latent_hw: tuple[int, int]) -> tuple[dict, dict]:
    """(layer -> query grid, layer -> head count) of the model's attention layers at ``latent_hw``."""
    layers = adapter.layers()
    return {layer.name: layer.grid(*latent_hw) for layer in layers}, {
        layer.name: layer.heads for layer in layers
    }


def placed_layers(edit: Edit, grids: dict, heads: dict) -> list[str]:
    """The layers ``edit`` acts on, its heads checked against them; ``EditError`` naming the field."""
    try:
        layers = select_layers(edit.layers, grids, label="edit layers", among="attention layer")
    except (TypeError, ValueError) as err:
        raise EditError("layers", str(err).removeprefix("edit layers ")) from None
    if edit.heads is not None:
        fewest = min(heads[name] for name in layers) if layers else 0
        over = [h for h in edit.heads if h >= fewest]
        if over:
            raise EditError("heads", f"{over} name heads past the last of these layers (they have {fewest})")
    return layers


def check_words(edit: Edit, text: CallText) -> None:
    """Refuse a word of ``edit`` that no prompt of the call has (or that the text encoder cut off)."""
    for row in range(len(text.prompts)):
        for word in edit.words or ():
            _spots(text, row, word)


def _spots(text: CallText, row: int, word: str) -> list[int]:
    found = text.groups[row]
    spots = [p for g in found if g["word"].lower() == word.lower() for p in g["positions"]]
    if not spots and text.cut and word.lower() in {w.lower() for w in text.cut[row]}:
        raise EditError(
            "words",
            f"{word!r} was cut off: it lies past the {text.positions} tokens the text encoder reads of "
            f"{text.prompts[row]!r}, so no attention reaches it",
        )
    if not spots:
        named = list(dict.fromkeys(g["word"] for g in found))
        raise EditError(
            "words", f"{word!r} is not a word of the prompt {text.prompts[row]!r}; its words are {named}"
        )
    return spots


def _log_weights(edit: Edit, text: CallText) -> torch.Tensor:
    log_weights = torch.zeros(len(text.prompts), text.positions, dtype=torch.float64)
    log_factor = math.log(edit.factor) if edit.factor > 0 else -math.inf
    for row in range(len(text.prompts)):
        for word in edit.words:
            log_weights[row, _spots(text, row, word)] = log_factor
    return log_weights


def _pairs(edit: Edit, text: CallText, sources: dict) -> tuple[Pairs, ...]:
    run = sources.get(edit.source)
    if run is None:
        raise EditError(
            "source",
            f"no attention of the source prompt {edit.source!r} was given: run edited calls with "
            "workbench.edits.generate (which generates the source first), or pass "
            "editing(..., sources={prompt: run})",
        )
    source_groups = word_groups(run.tokens, include_special=False)
    out = []
    for row, groups in enumerate(text.groups):
        aligned = align_word_groups(groups, source_groups)
        if edit.words is not None:
            for word in edit.words:
                _spots(text, row, word)  # a word the prompt lacks is named
            wanted = {w.lower() for w in edit.words}
            aligned = [(a, b) for a, b in aligned if a["word"].lower() in wanted]
            missing = sorted(wanted - {a["word"].lower() for a, _ in aligned})
            if missing:
                raise EditError("words", f"{missing} are not words of the source prompt {edit.source!r}")
        target, source = [], []
        for a, b in aligned:
            if len(a["positions"]) != len(b["positions"]):
                continue  # tokenized differently: no position-by-position correspondence
            target += a["positions"]
            source += b["positions"]
        if not target:
            raise EditError(
                "source",
                f"{edit.source!r} shares no word (tokenized alike) with the prompt {text.prompts[row]!r}: "
                "the replace would change nothing",
            )
        out.append(Pairs(torch.tensor(target, dtype=torch.long), torch.tensor(source, dtype=torch.long)))
    return tuple(out)
