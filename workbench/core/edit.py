"""What to change in a pipeline call's attention: one frozen, validated value per edit.

An ``Edit`` names what it does (``kind``), which words (as the prompt's token table groups them, see
``workbench.core.tokens.word_groups``), which denoising steps, which attention layers and which heads.
Like ``Request`` it checks its fields once, when it is made, and ``to_dict`` / ``from_dict`` round-trip
through JSON. The value lives in core so that a run's config can keep it; what applies it to a
pipeline lives in ``workbench.edits`` (``editing``, ``generate``).

Example:
    >>> edit = Edit.reweight(["red"], 2.0, steps=range(0, 10), layers=["16x16"])
    >>> Edit.from_dict(edit.to_dict()) == edit
    True
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
from dataclasses import dataclass

from .errors import FieldError
from .request import MAX_PROMPT_CHARS, MAX_STEPS

KINDS = ("reweight", "ablate", "replace", "switch")
MAX_EDIT_STEPS = 2 * MAX_STEPS  # step indices one edit may name (a run has at most 2000 loop iterations)
MAX_STEP = MAX_EDIT_STEPS - 1  # the last loop step a run can have

# kind -> the fields it takes besides ``kind`` (any other field must be left None)
_TAKES = {
    "reweight": {"words", "factor", "steps", "layers", "heads"},
    "ablate": {"words", "factor", "steps", "layers", "heads"},
    "replace": {"words", "steps", "layers", "heads", "source"},
    "switch": {"prompt", "from_step"},
}


class EditError(FieldError):
    """An edit field that cannot be used; ``field`` names it (``"words"``, ``"factor"``, ``"steps"``, ...)."""

    label = "edit"


class EditTypeError(EditError, TypeError):
    """An edit field of the wrong type (an ``EditError`` that is also a ``TypeError``)."""


@dataclass(frozen=True)
class Edit:
    """One change to the attention of a pipeline call.

    Make edits with the constructors (``Edit.reweight``, ``Edit.ablate``, ``Edit.replace``,
    ``Edit.switch``); fields a kind does not take are None.

    Args:
        kind: ``"reweight"`` (scale a word's attention by ``factor``), ``"ablate"`` (remove a word's
            attention: ``factor`` 0), ``"replace"`` (take the words' attention from ``source``) or
            ``"switch"`` (condition on ``prompt`` from step ``from_step`` on).
        words: the words edited, as the prompt's token table names them (every occurrence of a word
            in the prompt is edited); for ``replace``, None means every aligned word.
        factor: finite and >= 0; 0 removes the words' attention (as ``ablate`` does).
        steps: denoising-loop step indices the edit acts on: None for every step, ``()`` for none;
            stored sorted and distinct.
        layers: None for every cross-attention layer, or module paths
            (``"up_blocks.1.attentions.0.transformer_blocks.0.attn2"``) and resolutions (``"16x16"``, or an
            int for a grid's larger side), as ``RecordingPolicy.layers`` takes them.
        heads: None for every head, or head indices (0-based) of the edited layers; a layer with fewer
            heads than an index named is refused when the call starts.
        source: for ``replace``: the prompt whose attention is taken (a ``Run`` gives its prompt).
        prompt: for ``switch``: the prompt conditioning the steps from ``from_step`` on.
        from_step: for ``switch``: the first step conditioned on ``prompt``.

    Every refusal is an ``EditError`` whose ``field`` names the field.
    """

    kind: str
    words: tuple[str, ...] | None = None
    factor: float | None = None
    steps: tuple[int, ...] | None = None
    layers: tuple[str | int, ...] | None = None
    heads: tuple[int, ...] | None = None
    source: str | None = None
    prompt: str | None = None
    from_step: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise EditError("kind", f"must be one of {list(KINDS)}, got {reprlib.repr(self.kind)}")
        for name in ("words", "factor", "steps", "layers", "heads", "source", "prompt", "from_step"):
            if name not in _TAKES[self.kind] and getattr(self, name) is not None:
                raise EditError(name, f"does not apply to a {self.kind!r} edit (leave it None)")
        if self.kind in ("reweight", "ablate"):
            self._set("words", _check_words(self.words))
            if self.kind == "ablate" and self.factor not in (None, 0):
                raise EditError("factor", f"of an ablation is 0, got {reprlib.repr(self.factor)}")
            self._set("factor", _check_factor(self.factor if self.kind == "reweight" else 0.0))
        if self.kind == "replace":
            self._set("words", None if self.words is None else _check_words(self.words))
            self._set("source", _check_prompt("source", _prompt_of(self.source), "a prompt (str) or a Run"))
        if self.kind == "switch":
            self._set("prompt", _check_prompt("prompt", self.prompt, "a prompt (str)"))
            self._set("from_step", _check_step("from_step", self.from_step))
        if self.steps is not None:
            self._set("steps", _check_steps(self.steps))
        if self.layers is not None:
            self._set("layers", _check_layers(self.layers))
        if self.heads is not None:
            self._set("heads", _check_heads(self.heads))

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------ constructors

    @classmethod
    def reweight(cls, words, factor, *, steps=None, layers=None, heads=None) -> Edit:
        """Scale the attention to ``words`` by ``factor`` (rows renormalised; see ``editing``)."""
        return cls("reweight", words=words, factor=factor, steps=steps, layers=layers, heads=heads)

    @classmethod
    def ablate(cls, words, *, steps=None, layers=None, heads=None) -> Edit:
        """Remove the attention to ``words`` (the rest of each row renormalised)."""
        return cls("ablate", words=words, factor=0.0, steps=steps, layers=layers, heads=heads)

    @classmethod
    def replace(cls, source, words=None, *, steps=None, layers=None, heads=None) -> Edit:
        """Take the attention of ``words`` (None: every aligned word) from ``source`` (a prompt or a ``Run``).

        The source is the source prompt generated with the edited call's own seed and settings (a
        ``Run`` names its prompt; ``workbench.edits.generate`` reuses that run's attention when it
        recorded what the edit needs, and generates it otherwise).
        """
        return cls("replace", words=words, steps=steps, layers=layers, heads=heads, source=source)

    @classmethod
    def switch(cls, prompt, from_step) -> Edit:
        """Condition on ``prompt`` from step ``from_step`` on."""
        return cls("switch", prompt=prompt, from_step=from_step)

    # ------------------------------------------------------------ words

    def describe(self, *, short: bool = True) -> str:
        """One line saying what the edit does, for titles, report sections and index rows; ``short=False``
        keeps prompts whole and factors exact (two different edits never read the same).

        Example:
            >>> Edit.reweight("red", 2, steps=range(0, 10), layers=["8x8"]).describe()
            "reweight 'red' ×2 · steps 0–9 · layers 8x8"
        """
        cut = _short if short else repr
        if self.kind == "switch":
            return f"switch to {cut(self.prompt)} from step {self.from_step}"
        words = "every aligned word" if self.words is None else ", ".join(repr(w) for w in self.words)
        if self.kind == "replace":
            head = f"replace {words} from {cut(self.source)}"
        else:
            factor = f"{self.factor:g}" if short else repr(self.factor)
            head = f"reweight {words} ×{factor}" if self.kind == "reweight" else f"ablate {words}"
        parts = [head]
        if self.steps is not None:
            parts.append(f"steps {_ranges(self.steps)}" if self.steps else "no steps")
        if self.layers is not None:
            parts.append(("layers " + ", ".join(str(x) for x in self.layers)) if self.layers else "no layers")
        if self.heads is not None:
            parts.append("heads " + _ranges(self.heads))
        return " · ".join(parts)

    # ------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in ("words", "steps", "layers", "heads"):
            d[name] = None if d[name] is None else list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Edit:
        """An edit from ``to_dict``'s output; unknown or missing fields raise ``EditError``."""
        if not isinstance(d, dict):
            raise EditTypeError("edit", f"must be a dict, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise EditError(unknown[0], f"is not an edit field; fields are {names}")
        if "kind" not in d:
            raise EditError("kind", f"is missing; it is one of {list(KINDS)}")
        return cls(**d)


def switch_of(edits) -> Edit | None:
    """The prompt switch among ``edits`` (a call has at most one), or None."""
    return next((e for e in edits if e.kind == "switch"), None)


def describe_edits(edits) -> str:
    """What a list of edits does, in one line ("" for none)."""
    return "; ".join(e.describe() for e in edits)


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _ranges(values: tuple[int, ...]) -> str:
    """(0, 1, 2, 5, 7, 8) -> "0–2, 5, 7–8"."""
    out, start, prev = [], None, None
    for v in (*values, None):
        if start is not None and (v is None or v != prev + 1):
            out.append(str(start) if start == prev else f"{start}–{prev}")
            start = None
        if v is not None and start is None:
            start = v
        prev = v
    return ", ".join(out)


def _prompt_of(source):
    """A ``Run``'s prompt, or ``source`` itself."""
    config = getattr(source, "config", None)
    request = getattr(config, "request", None)
    return request.prompt if request is not None else source


def _check_words(words) -> tuple[str, ...]:
    if isinstance(words, str):
        words = (words,)
    if not isinstance(words, (list, tuple)):
        raise EditTypeError("words", f"must be a word or a list of words, got {reprlib.repr(words)}")
    if not words:
        raise EditError("words", "must name at least one word")
    for w in words:
        if not isinstance(w, str) or not w.strip():
            raise EditTypeError("words", f"must be non-empty strings, got {reprlib.repr(w)}")
    words = [w.strip() for w in words]  # " red" is the word red
    lower = [w.lower() for w in words]  # words match whatever their case
    repeated = sorted({w for w in words if lower.count(w.lower()) > 1})
    if repeated:
        raise EditError("words", f"must be distinct; repeated: {repeated}")
    return tuple(words)


def _check_factor(factor) -> float:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
        raise EditTypeError("factor", f"must be a number, got {reprlib.repr(factor)}")
    if not math.isfinite(factor) or factor < 0:
        raise EditError("factor", f"must be finite and >= 0 (0 removes the words' attention), got {factor!r}")
    return float(factor)


def _check_step(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise EditTypeError(name, f"must be an int, got {reprlib.repr(value)}")
    if not 0 <= value <= MAX_STEP:
        raise EditError(name, f"must be in 0..{MAX_STEP:,}, got {reprlib.repr(value)}")
    return int(value)


def _check_steps(steps) -> tuple[int, ...]:
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__") or not hasattr(steps, "__iter__"):
        raise EditTypeError("steps", f"must be a list of step indices (or None: every step), got {steps!r}")
    if isinstance(steps, range) and not steps and (steps.stop - steps.start) * steps.step < 0:
        raise EditError(
            "steps",
            f"{steps!r} is empty: it runs the other way (an empty list selects no step on purpose)",
        )
    if len(steps) > MAX_EDIT_STEPS:
        raise EditError("steps", f"name {len(steps):,} steps; at most {MAX_EDIT_STEPS:,} may be given")
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise EditTypeError("steps", f"must be ints, got {reprlib.repr(s)}")
        if not 0 <= s <= MAX_STEP:
            raise EditError("steps", f"must be in 0..{MAX_STEP:,}, got {reprlib.repr(s)}")
    return tuple(sorted({int(s) for s in steps}))


def _check_heads(heads) -> tuple[int, ...]:
    if isinstance(heads, numbers.Integral) and not isinstance(heads, bool):
        heads = (heads,)
    if isinstance(heads, (str, bytes)) or not hasattr(heads, "__iter__") or not hasattr(heads, "__len__"):
        raise EditTypeError("heads", f"must be head indices (or None: every head), got {reprlib.repr(heads)}")
    if len(heads) > 4096:
        raise EditError("heads", f"name {len(heads):,} heads; at most 4,096 may be given")
    for h in heads:
        if isinstance(h, bool) or not isinstance(h, numbers.Integral):
            raise EditTypeError("heads", f"must be ints, got {reprlib.repr(h)}")
        if h < 0:
            raise EditError("heads", f"must be non-negative, got {h!r}")
    if not heads:
        raise EditError("heads", "must name at least one head (None: every head)")
    return tuple(sorted({int(h) for h in heads}))


def _check_layers(layers) -> tuple[str | int, ...]:
    if isinstance(layers, (str, int)) and not isinstance(layers, bool):
        layers = (layers,)  # one entry alone ("8x8") is a list of one, not of its characters
    if not isinstance(layers, (list, tuple)):
        raise EditTypeError("layers", f"must be module paths or resolutions, got {reprlib.repr(layers)}")
    for item in layers:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise EditTypeError("layers", f"entries must be str or int, got {reprlib.repr(item)}")
        if isinstance(item, int) and item < 1:
            raise EditError("layers", f"resolution entries must be >= 1, got {item}")
        if isinstance(item, str) and not item.strip():
            raise EditError("layers", "entries must not be empty")
    return tuple(layers)


def _check_prompt(name: str, value, what: str) -> str:
    if not isinstance(value, str):
        raise EditTypeError(name, f"must be {what}, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise EditError(name, f"is {len(value):,} characters long; the limit is {MAX_PROMPT_CHARS:,}")
    return value
