"""The causal word-order lab: does attention *cause* the layout? Four curves over seeds, with intervals.

For a caption A ("a red circle left of a blue square") and its object swap B ("a blue square left of a
red circle"), same seed:

1. ``inject-step``: A's run with B's object-word attention put in (``Edit.replace``) from step k on;
   y = the fraction of images placed as B says, against k.
2. ``inject-layers``: the same, at every step, into one resolution (UNet) or block (DiT) at a time.
3. ``switch``: A's conditioning switched to B from step k on (``Edit.switch``); y as in 1.
4. ``ablate``: A's first object's colour word ablated from step k on; y = the fraction of images in
   which that object still has its colour.

On the embedded models (``toy``, ``toy-dit``) the toy world's checker judges placement and colour from
the image. On any other model placement is judged by where each object word's attention mass is centred
(the run's recorded maps; a caption's two nouns), which the figure says: the switch curve over every
layer, the inject-layers curve over the layers not injected; the inject-step and ablation curves are
not drawn there, since their edit sets the very attention that would judge it.
Intervals: percentile bootstrap over (pair, seed) units.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..analysis.heatmaps import word_maps
from ..analysis.sweeps import mean_interval as bootstrap_mean
from ..core.adapters import adapter_for
from ..core.edit import Edit
from ..core.errors import FieldError
from ..core.policy import RecordingPolicy
from ..core.request import Request
from ..core.run import Run
from ..edits.session import generate
from ..toy.checker import detect
from ..toy.checker import relation_holds as centres_hold

CURVES = ("inject-step", "inject-layers", "switch", "ablate")
ATTENTION_JUDGED = ("inject-layers", "switch")  # where attention judges: the curves it can judge
CAPTION = re.compile(
    r"(?:an? (?:painting|sketch) of )?an? (?:small |big )?(\w+) (\w+) (left of|right of|above|below) "
    r"an? (?:small |big )?(\w+) (\w+)"
)
PAIRS = (
    ("a red circle left of a blue square", "a blue square left of a red circle"),
    ("a green triangle above a yellow circle", "a yellow circle above a green triangle"),
    ("a green square left of a red triangle", "a red triangle left of a green square"),
)
FULL = RecordingPolicy(heads="all", dtype="float32")  # what a replace source must keep
LIGHT = RecordingPolicy(heads="mean", dtype="float16")


@dataclass(frozen=True)
class Caption:
    """A two-object caption: (colour, shape) of each object and the relation between them."""

    first: tuple[str, str]
    relation: str
    second: tuple[str, str]

    @classmethod
    def parse(cls, text: str) -> Caption | None:
        m = CAPTION.fullmatch(text.strip().lower())
        if m is None:
            return None
        c1, s1, relation, c2, s2 = m.groups()
        return cls((c1, s1), relation, (c2, s2))


def relation_holds(run: Run, caption: str | None = None) -> bool | None:
    """Do the two coloured objects stand in the image as ``caption`` (default: the run's prompt) says?
    The toy world's colour checker; None when the caption is not a two-object toy caption or the run
    has no image."""
    parsed = Caption.parse(caption if caption is not None else run.prompt)
    if parsed is None or run.image is None:
        return None
    found = detect(np.asarray(run.image.convert("RGB")))
    a, b = parsed.first[0], parsed.second[0]
    if a not in found or b not in found:
        return False
    return bool(centres_hold(found[a].center, found[b].center, parsed.relation))


def attention_holds(run: Run, caption: str, *, skip=()) -> bool | None:
    """Placement judged by attention: is the centre of mass of the run's map of the word naming each
    object (its noun, as ``caption`` names it) placed as ``caption`` says? ``skip``: layers (paths or
    resolutions like ``"8x8"``) left out, such as the layers an attention edit set, which would
    otherwise judge the edit by itself; None when no layer is left."""
    parsed = Caption.parse(caption)
    store = run.attention
    skipped = set(skip).union(*(store.layer_names(s) for s in skip))  # a path, or a resolution's layers
    layers = [n for n in store.layer_names() if n not in skipped]
    if parsed is None or not layers:
        return None
    maps = word_maps(run, normalize="unit-sum", layers=layers)
    centres = {}
    for word, heat in zip(maps.words, maps.maps):
        h, w = heat.shape
        total = float(heat.sum())
        if total > 0 and word.lower() not in centres:
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
            )
            centres[word.lower()] = (float((heat * xs).sum()) / total, float((heat * ys).sum()) / total)
    a, b = parsed.first[1], parsed.second[1]
    if a not in centres or b not in centres or a == b:
        return None
    return bool(centres_hold(centres[a], centres[b], parsed.relation))


def colour_kept(run: Run, colour: str) -> bool | None:
    """Is ``colour`` found in the run's image (toy checker)?"""
    if run.image is None:
        return None
    return colour in detect(np.asarray(run.image.convert("RGB")))


class LabSettingsError(FieldError):
    """Lab settings that cannot be run, with the field as data."""

    label = "lab"


@dataclass(frozen=True)
class LabSettings:
    """What the lab runs, checked when made. ``pairs``: (caption, its object swap) pairs; ``seeds``:
    distinct seeds; ``ks``: the distinct steps each curve starts its edit at (``steps`` = no edit);
    ``n_boot``: bootstrap resamples of each interval."""

    pairs: tuple[tuple[str, str], ...] = PAIRS
    seeds: tuple[int, ...] = tuple(range(4))
    steps: int = 25
    ks: tuple[int, ...] = (0, 2, 5, 10, 15, 25)
    guidance_scale: float | None = None
    curves: tuple[str, ...] = CURVES
    n_boot: int = 1000

    def __post_init__(self):
        def keep(name: str, value) -> None:
            object.__setattr__(self, name, value)

        keep("pairs", _checked_pairs(self.pairs))
        keep("seeds", _distinct_ints(self.seeds, "seeds"))
        if not _whole(self.steps) or self.steps < 1:
            raise LabSettingsError("steps", f"must be a whole number of at least 1, got {self.steps!r}")
        keep("ks", _distinct_ints(self.ks, "ks"))
        late = [k for k in self.ks if not 0 <= k <= self.steps]
        if late:
            raise LabSettingsError("ks", f"must lie in 0..steps ({self.steps}); got {late}")
        keep("curves", _distinct_names(self.curves))
        if not _whole(self.n_boot) or self.n_boot < 1:
            raise LabSettingsError("n_boot", f"must be a whole number of at least 1, got {self.n_boot!r}")
        check_requests(self.pairs, self.seeds, self.steps, self.guidance_scale)

    def judged(self, judged_by_checker: bool = True) -> tuple[str, ...]:
        """The curves the lab draws: all it is given where the checker judges the images; where attention
        judges, not ``inject-step`` and ``ablate`` (their edit sets the attention that would judge it)."""
        return tuple(c for c in self.curves if judged_by_checker or c in ATTENTION_JUDGED)

    def runs(self, places: int, judged_by_checker: bool = True) -> int:
        """How many generations the lab makes, with ``places`` resolutions or blocks to inject into."""
        curves = self.judged(judged_by_checker)
        edited = [k for k in self.ks if k < self.steps]
        kinds = [c for c in ("inject-step", "switch", "ablate") if c in curves]
        per = 2 + len(edited) * len(kinds) + places * ("inject-layers" in curves)
        return per * len(self.pairs) * len(self.seeds)


def check_requests(pairs, seeds, steps: int, guidance_scale: float | None = None) -> None:
    """The captions, seeds, steps and guidance as every generation of the lab checks them (a
    ``RequestError`` naming the field)."""
    for seed in seeds:
        Request(pairs[0][0], seed=seed, steps=steps, guidance_scale=guidance_scale)
    for pair in pairs:
        for caption in pair:
            Request(caption, seed=seeds[0], steps=steps, guidance_scale=guidance_scale)


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _distinct_ints(values, field: str) -> tuple[int, ...]:
    """A non-empty tuple of distinct whole numbers (a repeat would count one unit or point twice)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list, range)):
        raise LabSettingsError(field, f"must be a list of whole numbers, got {values!r}")
    if not values or not all(_whole(v) and v >= 0 for v in values):
        raise LabSettingsError(
            field, f"must be a non-empty list of whole numbers of at least 0, got {values!r}"
        )
    repeated = sorted({int(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise LabSettingsError(field, f"must not repeat a value (each counts once); {repeated} repeat")
    return tuple(int(v) for v in values)


def _distinct_names(curves) -> tuple[str, ...]:
    if isinstance(curves, str) or not isinstance(curves, (tuple, list)) or not curves:
        raise LabSettingsError("curves", f"must be a non-empty list of the lab's curves {list(CURVES)}")
    unknown = sorted({str(c) for c in curves} - set(CURVES))
    if unknown:
        raise LabSettingsError("curves", f"has unknown curves {unknown}; the lab draws {list(CURVES)}")
    return tuple(dict.fromkeys(curves))


def _checked_pairs(pairs) -> tuple[tuple[str, str], ...]:
    """Distinct (caption, swap) pairs: two-object captions, two different objects (the judges tell them
    apart by colour and by noun), the swap the same two objects trading places."""
    shape = "must be a list of (caption, its swap) pairs, as pairs=((caption, swap),)"
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (tuple, list)) or not pairs:
        raise LabSettingsError("pairs", f"{shape}; got {pairs!r}")
    out = []
    for pair in pairs:
        if isinstance(pair, str) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise LabSettingsError("pairs", f"{shape}; got {pair!r} where a pair goes")
        a, b = pair
        if not isinstance(a, str) or not isinstance(b, str):
            raise LabSettingsError("pairs", f"{shape} of text; got {pair!r}")
        pa, pb = Caption.parse(a), Caption.parse(b)
        if pa is None or pb is None:
            raise LabSettingsError(
                "pairs", f"are two-object captions ('a red circle left of a blue square'); got {(a, b)}"
            )
        if pa.first[0] == pa.second[0] or pa.first[1] == pa.second[1]:
            raise LabSettingsError(
                "pairs",
                f"need two objects of different colours and shapes (the judges tell them apart); got {a!r}",
            )
        if {pb.first, pb.second} != {pa.first, pa.second} or same_layout(pa, pb):
            raise LabSettingsError(
                "pairs",
                f"pair each caption with a swap (its two objects placed the other way, such as "
                f"{swap_of(pa)!r}); {b!r} is not one of {a!r}",
            )
        out.append((a, b))
    repeated = sorted({p for p in out if out.count(p) > 1})
    if repeated:
        raise LabSettingsError("pairs", f"must not repeat a pair (each counts once); {repeated} repeat")
    return tuple(out)


INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def same_layout(a: Caption, b: Caption) -> bool:
    """Whether two captions place their objects the same way ("A left of B" and "B right of A")."""
    return a == b or (a.first, a.second, INVERSE[a.relation]) == (b.second, b.first, b.relation)


def swap_of(caption: Caption) -> str:
    """The object swap of a parsed caption, in the lab's plain wording."""
    (c1, s1), (c2, s2) = caption.first, caption.second
    return f"a {c2} {s2} {caption.relation} a {c1} {s1}"


@dataclass
class LabResult:
    """``rows``: one per (curve, x, pair, seed) with ``y`` (0/1) and the judge; ``summary``: per (curve,
    x) the mean with its bootstrap interval; ``judge``: what decided placement."""

    rows: pd.DataFrame
    summary: pd.DataFrame
    judge: str
    settings: LabSettings = field(default_factory=LabSettings)


def object_words(caption: str) -> list[str]:
    parsed = Caption.parse(caption)
    return [*parsed.first, *parsed.second]


def run_lab(
    pipe,
    settings: LabSettings = LabSettings(),
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
) -> LabResult:
    """Run the lab's curves on ``pipe`` (see the module docstring). ``progress(done, total)`` is called
    after every generation; a set ``cancel`` event stops after the current one, keeping what is done."""
    judge_by_checker = _is_toy_world(pipe)
    judge = (
        "the toy world's checker (image)"
        if judge_by_checker
        else "centres of the object words' attention mass (inject-layers: in the layers not injected)"
    )
    places = injection_places(pipe)
    total, done, rows = settings.runs(len(places), judge_by_checker), [0], []

    def gen(prompt: str, seed: int, edits=(), sources=None, policy=LIGHT) -> Run:
        if cancel is not None and cancel.is_set():
            raise _Cancelled
        req = Request(prompt, seed=seed, steps=settings.steps, guidance_scale=settings.guidance_scale)
        run = generate(pipe, req, edits=list(edits), sources=sources, policy=policy, progress=False)
        done[0] += 1
        if progress is not None:
            progress(done[0], total)
        return run

    def placed(run: Run, caption: str, injected=()) -> bool | None:
        if judge_by_checker:
            return relation_holds(run, caption)
        return attention_holds(run, caption, skip=injected)

    try:
        for a, b in settings.pairs:
            for seed in settings.seeds:
                unit = dict(pair=f"{a} / {b}", seed=seed)
                _unit(settings, a, b, seed, gen, placed, unit, judge_by_checker, places, rows)
    except _Cancelled:
        pass  # the points finished so far are kept
    frame = pd.DataFrame(rows, columns=["curve", "x", "pair", "seed", "y"])
    return LabResult(frame, summarize(frame, settings.n_boot), judge, settings)


class _Cancelled(Exception):
    """The lab's cancel event was set: no more generations."""


def _unit(settings, a, b, seed, gen, placed, unit, judge_by_checker, places, out: list) -> None:
    """Every curve's points for one caption pair and seed, appended to ``out`` as they are made."""
    source = gen(b, seed, policy=FULL)  # the swap: the replace source
    plain = gen(a, seed, policy=FULL if not judge_by_checker else LIGHT)
    words = object_words(a)
    late = settings.steps

    def add(curve, x, y):
        if y is not None:
            out.append(dict(curve=curve, x=x, y=float(y), **unit))

    curves = settings.judged(judge_by_checker)
    for k in settings.ks:
        if "inject-step" in curves:
            run = (
                plain if k >= late else gen(a, seed, [Edit.replace(b, words, steps=range(k, late))], [source])
            )
            add("inject-step", k, placed(run, b))
        if "switch" in curves:
            run = plain if k >= late else gen(a, seed, [Edit.switch(b, k)])
            add("switch", k, placed(run, b))
        if "ablate" in curves:
            colour = Caption.parse(a).first[0]
            run = plain if k >= late else gen(a, seed, [Edit.ablate(colour, steps=range(k, late))])
            add("ablate", k, colour_kept(run, colour))
    if "inject-layers" in curves:
        for where in places:
            run = gen(a, seed, [Edit.replace(b, words, layers=[where])], [source])
            add("inject-layers", where, placed(run, b, injected=(where,)))


def lab_size(pipe, settings: LabSettings) -> int:
    """How many generations ``run_lab(pipe, settings)`` makes."""
    return settings.runs(len(injection_places(pipe)), _is_toy_world(pipe))


def injection_places(pipe) -> list[str]:
    """Where the inject-layers curve injects: each resolution of a UNet's cross-attention layers (at
    the model's own size), or each block of a DiT (whose layers share one grid)."""
    adapter = adapter_for(pipe)
    size = adapter.default_size
    hw = adapter.latent_hw(size, size)
    layers = adapter.layers()
    resolutions = list(dict.fromkeys(layer.resolution(*hw) for layer in layers))
    return resolutions if len(resolutions) > 1 else [layer.name for layer in layers]


def _is_toy_world(pipe) -> bool:
    """Whether the pipeline is one of the embedded models (``toy``, ``toy-dit``), trained on the toy world:
    its images can be judged by the checker."""
    from ..core.loading import model_source
    from ..toy.catalog import EMBEDDED

    source = str(model_source(pipe) or "").rstrip("/")
    folders = {str(m.weights) for m in EMBEDDED.values()}
    return source in EMBEDDED or source in folders or source.endswith(("toy/weights", "toy/dit/weights"))


def mean_interval(
    values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement): the sweep
    analyses' own (``analysis.sweeps.mean_interval``) with a seeded generator; NaN for no values."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    return bootstrap_mean(values, np.random.default_rng(seed), n_boot, level)


def summarize(rows: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Per (curve, x): n, mean y and its 95% bootstrap interval over (pair, seed) units."""
    out = []
    for (curve, x), g in rows.groupby(["curve", "x"], sort=False):
        low, high = mean_interval(g.y.to_numpy(), n_boot=n_boot)
        out.append(dict(curve=curve, x=x, n=len(g), mean=float(g.y.mean()), low=low, high=high))
    return pd.DataFrame(out, columns=["curve", "x", "n", "mean", "low", "high"])
