"""The ``Aggregation`` recipe: how per-layer, per-step, per-head attention becomes one heat map.

Every heat map in the workbench is made by one explicit recipe, recorded with the result and shown on
every figure (``Aggregation.describe``). A recipe says, in the order they are applied:

1. which denoising steps (``steps``) and layers (``layers`` less ``skip``) are used;
2. how the heads of a layer are reduced (``heads``): ``"mean"``, ``"sum"``, ``"pool"`` (every head
   is one map among the layers' maps, so a mean over layers is the mean over every (layer, head) map
   and layers weigh by their head counts), or head indices (those heads summed). On a store recorded
   with heads averaged, a sum is the mean times the layer's head count (``AttentionStore.head_counts``),
   which is exact; where a store does not know its head counts a sum is refused, never relabelled;
3. optionally, each (step, layer) map renormalized over the prompt's words (``per_map="share"``);
4. how steps are combined (``step_reduce``: mean or sum);
5. how each layer's grid is upsampled to the recipe's ``size`` (``upsample``); each upsampled map is
   clipped at 0 (bicubic overshoot) before heads and layers are combined, per head where the store
   keeps heads;
6. how layers are combined (``layer_reduce``);
7. how a word's tokens are combined (``words``: sum or mean) and what happens to a word that occurs
   more than once (``repeats``);
8. the normalization of each word's map (``normalize``);
9. the threshold rule that turns a map into a mask for scoring (``threshold_rule``, ``threshold``), and
   the interpolation that expands maps to a mask's size first (``expand``; None: maps must already be
   at the mask's size).

Normalizations (``normalize``):
    ``"mass"``: none; a map holds softmax probability mass (at every pixel the maps of all positions,
        special ones included, sum to 1 when heads, steps and layers are averaged).
    ``"minmax"``: each map rescaled to [0, 1] by its own minimum and maximum.
    ``"max"``: each map divided by its own maximum.
    ``"unit-sum"``: each map divided by its own sum, so it is a distribution over pixels.
    ``"share"``: at every pixel, each map divided by the sum over the non-special positions (words and
        punctuation): the share a word gets of the attention that goes to the prompt's text.

Threshold rules (``THRESHOLD_RULES``, see ``scoring.binarize``), named by what they do:
    ``"fraction-of-max"``: value >= threshold * max.
    ``"fraction-of-max-strict"``: value / max > threshold.
    ``"fraction-of-range"``: (value - min) / (max - min) >= threshold.
    ``"fraction-of-range-strict"``: (value - min) / (max - min + 1e-8) > threshold, in float32.
    ``"above-mean"``: value > threshold * mean.
    ``"absolute"``: value >= threshold.

Layer entries (``layers`` and ``skip``): a module path, a resolution ``"HxW"``, an int (a grid's larger
side), ``"latent/N"`` (the grid of the latent halved log2(N) times: ``"latent/8"`` is 8x8 for a 64x64
latent), or the start of module paths (``"mid_block"``, ``"up_blocks.1"``, ``"transformer_blocks"``).
"""

from __future__ import annotations

from dataclasses import dataclass

NORMALIZATIONS = ("mass", "minmax", "max", "unit-sum", "share")
UPSAMPLE_MODES = ("nearest", "bilinear", "bicubic")
REDUCTIONS = ("mean", "sum")
HEAD_RULES = ("mean", "sum", "pool")
SIZES = ("image", "latent", "largest")
PER_MAP = ("none", "share")
WORD_RULES = ("sum", "mean")
REPEAT_RULES = ("each", "merge", "token-match")
ARCHITECTURES = ("unet", "dit")
THRESHOLD_RULES = (
    "fraction-of-max",
    "fraction-of-max-strict",
    "fraction-of-range",
    "fraction-of-range-strict",
    "above-mean",
    "absolute",
)
RULE_ALIASES = {"max": "fraction-of-max", "minmax": "fraction-of-range"}  # earlier names, still accepted


def threshold_rule(rule: str) -> str:
    """The rule's name in ``THRESHOLD_RULES`` (``"max"`` and ``"minmax"`` are accepted for the first and
    third); anything else raises naming the rules."""
    rule = RULE_ALIASES.get(rule, rule)
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    return rule


def _choice(value, allowed: tuple, what: str):
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")


def _entries(value, what: str) -> tuple:
    items = [value] if isinstance(value, (str, int)) else list(value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise TypeError(f"{what} entries must be str or int, got {item!r}")
    return tuple(items)


@dataclass(frozen=True)
class Aggregation:
    """An explicit heat-map recipe (see the module docstring for the order of the steps).

    Args:
        steps: denoising step indices to use (``None``: every step the run kept; ``"last"``: the last
            kept step).
        layers: ``None`` for every layer, or layer entries (module paths, ``"HxW"``, ints,
            ``"latent/N"``, path prefixes such as ``"up_blocks"``).
        heads: ``"mean"``, ``"sum"``, ``"pool"`` or head indices (summed; needs ``heads="all"`` stores).
        step_reduce, layer_reduce: ``"mean"`` or ``"sum"`` over steps and over layers.
        upsample: ``"nearest"``, ``"bilinear"`` or ``"bicubic"`` (each layer's grid to ``size``).
        normalize: one of ``NORMALIZATIONS``.
        name: the preset's name, or ``"custom"``.
        skip: layer entries to leave out (entries that match nothing are ignored).
        size: where layer maps are combined: ``"image"``, ``"latent"``, ``"largest"`` (the largest grid
            among the layers used) or ``(height, width)``.
        per_map: ``"none"``, or ``"share"``: every (step, layer) map normalized as ``normalize="share"``
            does (at every pixel, each position divided by the total of the prompt's word and punctuation
            positions), before steps and layers are combined.
        words: how a word's token maps are combined: ``"sum"`` or ``"mean"``.
        repeats: a word that occurs more than once: ``"each"`` (one map per occurrence, labels
            ``a#1``, ``a#2``), ``"merge"`` (one map from the tokens of every occurrence of the same word,
            case-insensitive) or ``"token-match"`` (one map from every place the word's token sequence
            occurs in the prompt's tokens, which can also catch a matching token inside another word).
        threshold_rule, threshold: how ``scoring`` turns a map into a mask (``THRESHOLD_RULES``).
        expand: the interpolation that expands maps to a larger size (a mask's, the image's) as a
            separate step; ``None``: the recipe names none and maps must be made at that size.
        expanded_to: set by ``WordMaps.expand``: the (height, width) the maps were expanded to.
        applies_to: ``"unet"`` or ``"dit"`` where the recipe follows code written for one family of
            denoisers; ``None``: any.

    Example:
        >>> Aggregation(steps=(10, 11, 12), layers=("16x16",), normalize="minmax")  # doctest: +SKIP
    """

    steps: tuple[int, ...] | str | None = None
    layers: tuple[str | int, ...] | None = None
    heads: str | tuple[int, ...] = "mean"
    step_reduce: str = "mean"
    layer_reduce: str = "mean"
    upsample: str = "bilinear"
    normalize: str = "mass"
    name: str = "custom"
    skip: tuple[str | int, ...] = ()
    size: str | tuple[int, int] = "image"
    per_map: str = "none"
    words: str = "sum"
    repeats: str = "each"
    threshold_rule: str = "fraction-of-max"
    threshold: float = 0.4
    expand: str | None = None
    expanded_to: tuple[int, int] | None = None
    applies_to: str | None = None

    def __post_init__(self):
        if self.steps is not None and self.steps != "last":
            if isinstance(self.steps, str):
                raise ValueError(f"aggregation steps must be ints, 'last' or None, got {self.steps!r}")
            steps = [self.steps] if isinstance(self.steps, int) else list(self.steps)
            if not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
                raise TypeError(f"aggregation steps must be ints, got {self.steps!r}")
            object.__setattr__(self, "steps", tuple(steps))
        if self.layers is not None:
            object.__setattr__(self, "layers", _entries(self.layers, "layers"))
        object.__setattr__(self, "skip", _entries(self.skip, "skip"))
        if isinstance(self.heads, str):
            if self.heads not in HEAD_RULES:
                raise ValueError(f"heads must be 'mean', 'sum', 'pool' or head indices, got {self.heads!r}")
        else:
            heads = [self.heads] if isinstance(self.heads, int) else list(self.heads)
            if not heads or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in heads):
                raise ValueError(
                    f"heads must be 'mean', 'sum', 'pool' or non-negative head indices, got {self.heads!r}"
                )
            object.__setattr__(self, "heads", tuple(heads))
        _choice(self.step_reduce, REDUCTIONS, "step_reduce")
        _choice(self.layer_reduce, REDUCTIONS, "layer_reduce")
        _choice(self.upsample, UPSAMPLE_MODES, "upsample")
        _choice(self.normalize, NORMALIZATIONS, "normalize")
        _choice(self.per_map, PER_MAP, "per_map")
        _choice(self.words, WORD_RULES, "words")
        _choice(self.repeats, REPEAT_RULES, "repeats")
        if self.expand is not None:
            _choice(self.expand, UPSAMPLE_MODES, "expand")
        if self.applies_to is not None:
            _choice(self.applies_to, ARCHITECTURES, "applies_to")
        object.__setattr__(self, "threshold_rule", threshold_rule(self.threshold_rule))
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise TypeError(f"threshold must be a number, got {self.threshold!r}")
        if isinstance(self.size, str):
            _choice(self.size, SIZES, "size")
        else:
            size = tuple(self.size)
            if len(size) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in size
            ):
                raise ValueError(f"size must be one of {SIZES} or (height, width), got {self.size!r}")
            object.__setattr__(self, "size", size)

    def describe(self) -> str:
        """One line for figure subtitles: every step of the recipe, in order.

        Example:
            ``daam: steps all (summed), layers all but mid_block, latent/8, every (layer, head) map
            averaged, bicubic to the latent size, clipped at 0 per map, ...``
        """
        steps = "all" if self.steps is None else self.steps if self.steps == "last" else _span(self.steps)
        layers = "all" if self.layers is None else ", ".join(str(x) for x in self.layers)
        if self.skip:
            layers += " but " + ", ".join(str(x) for x in self.skip)
        parts = [f"steps {steps} ({_verb(self.step_reduce)})"]
        if self.heads == "pool":
            parts += [f"layers {layers}", f"every (layer, head) map {_verb(self.layer_reduce)}"]
        elif isinstance(self.heads, tuple):
            heads = ",".join(str(h) for h in self.heads)
            parts += [f"layers {layers} ({_verb(self.layer_reduce)})", f"heads {heads} summed"]
        else:
            parts += [f"layers {layers} ({_verb(self.layer_reduce)})", f"heads {self.heads}"]
        if self.per_map == "share":
            parts.append("each step and layer as a share of the words")
        size = {"image": "the image", "latent": "the latent", "largest": "the largest layer grid"}.get(
            self.size if isinstance(self.size, str) else "", "{}x{}".format(*self.size)
        )
        clip = ", clipped at 0 per map" if self.upsample == "bicubic" else ""
        parts.append(f"{self.upsample} to {size}{clip}")
        parts.append(f"a word's tokens {_verb(self.words)}")
        if self.repeats != "each":
            parts.append(f"repeated words merged{' by token match' if self.repeats == 'token-match' else ''}")
        parts.append(f"normalize {self.normalize}")
        parts.append(f"threshold {self.threshold_rule} {self.threshold:g}")
        if self.expanded_to is not None:
            parts.append("expanded {} to {}x{}".format(self.expand, *self.expanded_to))
        return f"{self.name}: " + ", ".join(parts)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "steps": self.steps if self.steps is None or self.steps == "last" else list(self.steps),
            "layers": None if self.layers is None else list(self.layers),
            "skip": list(self.skip),
            "heads": self.heads if isinstance(self.heads, str) else list(self.heads),
            "step_reduce": self.step_reduce,
            "layer_reduce": self.layer_reduce,
            "per_map": self.per_map,
            "upsample": self.upsample,
            "size": self.size if isinstance(self.size, str) else list(self.size),
            "words": self.words,
            "repeats": self.repeats,
            "normalize": self.normalize,
            "threshold_rule": self.threshold_rule,
            "threshold": self.threshold,
            "expand": self.expand,
            "expanded_to": None if self.expanded_to is None else list(self.expanded_to),
            "applies_to": self.applies_to,
        }


def _verb(reduction: str) -> str:
    return {"mean": "averaged", "sum": "summed"}[reduction]


def _span(steps: tuple[int, ...]) -> str:
    if len(steps) > 2 and list(steps) == list(range(steps[0], steps[-1] + 1)):
        return f"{steps[0]}-{steps[-1]}"
    return ",".join(str(s) for s in steps)
