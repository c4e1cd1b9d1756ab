"""The sweep spec: what to run, as one frozen value with a JSON round trip, and its expansion into requests.

A spec names a model source and lists of values; the sweep is every combination. The smallest spec file:

    {"model": "toy", "prompts": ["a red circle left of a blue square"], "seeds": [0, 1], "steps": 6,
     "guidance_scales": [4.0]}

``prompts`` may be replaced by one ``prompt``, and ``word_orders`` derives the orders of every prompt
(``analysis.permutations`` kinds: ``"relation"``, ``"all"``, ``"of"``, or ``{"kind": "swap", "words":
["red", "blue"]}``). Lists may be written as one value (``"steps": 6``); seeds also as ranges
(``"seeds": "0-99"`` or ``"0, 5, 10-12"``). ``guidance_scales`` left out means the model's own default.

Expansion is bounded before anything is made: at most ``MAX_SEEDS`` seeds (``core.request``), at most
``MAX_ORDERS`` word orders per prompt, at most ``MAX_RUNS`` runs in all; a spec beyond is refused with
its count.

Expansion is deterministic: seeds outermost, then sizes, schedulers, steps and guidance, then the
prompts innermost, so the runs of one seed finish together (a word-order pair, a variance grid) even
when a sweep is stopped half way. Every request gets a stable id: a hash of the request, the recording
policy (less its byte budget, which does not change what is kept) and the weights' hash.

Example:
    >>> spec = SweepSpec.from_dict({"model": "toy", "prompts": ["a red circle"], "seeds": [0, 1], "steps": 6})
    >>> [(r.prompt, r.seed) for r in spec.requests()]
    [('a red circle', 0), ('a red circle', 1)]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from workbench.core.edit import Edit, EditError
from workbench.core.policy import RecordingPolicy
from workbench.core.request import SIZE_LIMIT, Request, RequestError, parse_seeds
from workbench.core.schedulers import scheduler_spec

ORDER_KINDS = ("relation", "all", "of", "swap")
MAX_ORDERS = 1000  # word orders per prompt (``"all"``'s max_orders)
MAX_RUNS = 100_000  # runs one spec may expand to (planning them takes a few seconds)
# The spec field a Request's refused field comes from (``RequestError.field``).
SPEC_FIELDS = {
    "prompt": "prompts",
    "negative_prompt": "negative_prompt",
    "seed": "seeds",
    "seeds": "seeds",
    "steps": "steps",
    "guidance_scale": "guidance_scales",
    "scheduler": "schedulers",
    "height": "sizes",
    "width": "sizes",
    "size": "sizes",
}
# How a bound a Request's Python hint lifts is worded for a spec (a spec has no such argument).
SPEC_HINTS = {"size": f"a sweep keeps to {SIZE_LIMIT:g}x the model's native size"}
ID_CHARS = 16  # hex digits of a request id: 64 bits, collision-free for any sweep one could run
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_UNITS.update({"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4})


class SpecError(ValueError):
    """A sweep spec (or spec file) that cannot be run, with what would work.

    Attributes:
        field: the spec field at fault (``"seeds"``, ``"sizes"``, ...), or None when the spec as a whole is.
    """

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def spec_field(err: RequestError) -> str:
    """The spec field a refused request field comes from (``"height"`` -> ``"sizes"``)."""
    return SPEC_FIELDS.get(err.field, err.field)


def for_spec(err: RequestError) -> str:
    """A model's refusal of a request, worded for the spec: its field and a hint a spec can follow."""
    return err.named(spec_field(err), hint=SPEC_HINTS.get(err.field, ""))


def parse_bytes(value, *, name: str = "disk_budget") -> int | None:
    """A byte count from an int or a string such as ``"500MB"``, ``"2 GiB"`` (None stays None).

    Errors name the value ``name`` (``"--disk-budget"`` on the command line).

    Example:
        >>> parse_bytes("1.5GB"), parse_bytes("10 MiB"), parse_bytes(4096)
        (1500000000, 10485760, 4096)
    """
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value <= 0:
            raise SpecError(f"{name} must be positive, got {value!r}", field="disk_budget")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if m is None or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise SpecError(
            f"{name} must be a positive size such as 500MB, 2GB or 1GiB, got {value!r}", field="disk_budget"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _seeds(value) -> tuple[int, ...]:
    """The spec's seeds through the one ``core.request.parse_seeds`` (bounded before any is made)."""
    try:
        return parse_seeds(value)
    except RequestError as err:
        raise SpecError(err.named("seeds"), field="seeds") from None


def _as_list(value, name: str, *, nullable: bool = False) -> list:
    if value is None and not nullable:
        raise SpecError(f"{name} must not be null", field=name)
    out = list(value) if isinstance(value, (list, tuple)) else [value]
    if not out:
        raise SpecError(f"{name} must hold at least one value", field=name)
    return out


def _distinct(items: list, name: str) -> tuple:
    """``items`` as a tuple, refused when two are equal (linear: one pass over their JSON)."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for x in items:
        key = json.dumps(x, sort_keys=True)
        if key in seen:
            repeated[key] = None
        seen.add(key)
    if repeated:
        shown = list(repeated)[:10]
        more = " ..." if len(repeated) > 10 else ""
        raise SpecError(f"{name} must be distinct; repeated: {', '.join(shown)}{more}", field=name)
    return tuple(items)


def _number(value):
    """A guidance value as a float (so 4 and 4.0 are one value); anything else is left to ``Request``."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value


def _size(value) -> tuple[int, int] | None:
    """A size entry: null (the model's own), one int (square) or [height, width]."""
    if value is None:
        return None
    pair = [value, value] if isinstance(value, numbers.Integral) else value
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise SpecError(
            f"sizes entries must be null, an int or [height, width], got {value!r}", field="sizes"
        )
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise SpecError(f"sizes entries must hold positive ints, got {value!r}", field="sizes")
    return int(pair[0]), int(pair[1])


def _policy(value) -> RecordingPolicy:
    """The spec's policy: a ``RecordingPolicy`` or its dict (the JSON edge)."""
    if isinstance(value, dict):
        try:
            value = RecordingPolicy.from_dict(value)
        except (TypeError, ValueError) as err:
            raise SpecError(f"policy: {err}", field="policy") from None
    if not isinstance(value, RecordingPolicy):
        raise SpecError(
            f"policy must be a RecordingPolicy or its dict, got {type(value).__name__}", field="policy"
        )
    return value


def _orders(value) -> dict | None:
    """``word_orders`` as ``{"kind": ..., **options}`` for ``analysis.permutations``."""
    if value is None:
        return None
    d = {"kind": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else None
    if d is None or d.get("kind") not in ORDER_KINDS:
        raise SpecError(
            f"word_orders must be one of {ORDER_KINDS} or {{'kind': ..., ...}}, got {value!r}",
            field="word_orders",
        )
    unknown = sorted(set(d) - {"kind", "words", "max_orders", "seed"})
    if unknown:
        raise SpecError(
            f"word_orders has unknown options {unknown}; options are words, max_orders, seed",
            field="word_orders",
        )
    if d["kind"] == "swap" and not (isinstance(d.get("words"), (list, tuple)) and len(d["words"]) == 2):
        raise SpecError('word_orders "swap" needs "words": [word_a, word_b]', field="word_orders")
    n = d.get("max_orders", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ORDERS:
        raise SpecError(
            f"word_orders max_orders must be an int in 1..{MAX_ORDERS}, got {n!r}", field="word_orders"
        )
    if "words" in d:
        d["words"] = list(d["words"])
    return d


@dataclass(frozen=True)
class PlannedRun:
    """One request of a sweep, with where its prompt came from."""

    request: Request
    prompt_index: int  # position of the prompt in the expanded prompt list
    base_prompt: str  # the prompt its word order was derived from (itself when none)
    edits: tuple[Edit, ...] = ()  # the edits applied to the run (``SweepSpec.edits``)


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs: a model and every combination of the listed values.

    Args:
        model: ``"toy"``, a local diffusers folder or a hub id (as ``load_pipeline`` takes it).
        prompts: the prompts (or give ``prompt``, one prompt).
        seeds: the seeds; each prompt and setting runs once per seed.
        steps, guidance_scales, schedulers: lists of settings (one value is a list of one).
            ``guidance_scales`` entries may be ``null``: the model's own default (the default).
            ``schedulers`` entries are names (``"ddim"``, ``"euler"``, ...), ``null`` for the model's
            own, or ``{"class": ..., "config": ...}``.
        sizes: ``null`` (the model's own size), an int (square) or ``[height, width]``.
        negative_prompt: one negative prompt for every run.
        prompt: one prompt, instead of ``prompts``.
        word_orders: derive the word orders of every prompt (``"relation"``, ``"all"``, ``"of"``, or
            ``{"kind": "swap", "words": [a, b]}``; ``"all"`` takes ``max_orders`` (at most
            ``MAX_ORDERS``) and ``seed``).
        policy: what attention every run keeps (``RecordingPolicy`` or its dict).
        edits: edit lists, one more axis: every request runs once per list (``[]``: unedited; the
            default is one empty list). Entries are ``Edit`` values or their dicts, e.g.
            ``[[], [{"kind": "ablate", "words": ["red"]}]]``; each run's ``config.edits`` and index row
            say which list it ran with.
        disk_budget: refuse to start when the sweep's estimated size exceeds this (bytes, or "2GB").
        name: a label for people; it is not part of the sweep's id.
    """

    model: str
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    steps: tuple[int, ...] = (25,)
    guidance_scales: tuple[float | None, ...] = (None,)
    schedulers: tuple[str | dict | None, ...] = (None,)
    sizes: tuple[tuple[int, int] | None, ...] = (None,)
    negative_prompt: str | None = None
    prompt: str | None = None
    word_orders: dict | None = None
    policy: RecordingPolicy = field(default_factory=RecordingPolicy)
    disk_budget: int | None = None
    name: str = ""
    edits: tuple[tuple[Edit, ...], ...] = ((),)

    def __post_init__(self):
        if not isinstance(self.model, (str, os.PathLike)) or not os.fspath(self.model).strip():
            raise SpecError(
                f"model must name a model ('toy', a folder or a hub id), got {self.model!r}", field="model"
            )
        object.__setattr__(self, "model", os.fspath(self.model))
        self._check_prompts()
        object.__setattr__(self, "seeds", _seeds(self.seeds))
        object.__setattr__(self, "steps", _distinct(_as_list(self.steps, "steps"), "steps"))
        guidance = [_number(g) for g in _as_list(self.guidance_scales, "guidance_scales", nullable=True)]
        object.__setattr__(self, "guidance_scales", _distinct(guidance, "guidance_scales"))
        try:
            schedulers = [scheduler_spec(s) for s in _as_list(self.schedulers, "schedulers", nullable=True)]
        except (TypeError, ValueError) as err:
            raise SpecError(f"schedulers: {err}", field="schedulers") from None
        object.__setattr__(self, "schedulers", _distinct(schedulers, "schedulers"))
        sizes = [_size(s) for s in _as_list(self.sizes, "sizes", nullable=True)]
        object.__setattr__(self, "sizes", _distinct(sizes, "sizes"))
        object.__setattr__(self, "word_orders", _orders(self.word_orders))
        object.__setattr__(self, "policy", _policy(self.policy))
        object.__setattr__(self, "edits", _edit_lists(self.edits))
        object.__setattr__(self, "disk_budget", parse_bytes(self.disk_budget))
        if not isinstance(self.name, str):
            raise SpecError(f"name must be a str, got {self.name!r}", field="name")
        self.plan()  # every request is made (once) and checked now, with the field it came from named

    def _check_prompts(self) -> None:
        if self.prompt is not None and self.prompts:
            raise SpecError("give prompts or prompt, not both", field="prompts")
        if self.prompt is None and not self.prompts:
            raise SpecError(
                'a sweep needs prompts (e.g. "prompts": ["a red circle"]) or one prompt', field="prompts"
            )
        texts = [self.prompt] if self.prompt is not None else _as_list(self.prompts, "prompts")
        if not all(isinstance(p, str) for p in texts):
            raise SpecError(f"prompts must be strings, got {texts!r}", field="prompts")
        if self.prompt is None:
            object.__setattr__(self, "prompts", _distinct(texts, "prompts"))

    # ------------------------------------------------------------ expansion

    @property
    def settings_count(self) -> int:
        """Runs per prompt: seeds × sizes × schedulers × steps × guidance scales × edit lists."""
        return math.prod(
            len(v)
            for v in (self.seeds, self.sizes, self.schedulers, self.steps, self.guidance_scales, self.edits)
        )

    def _check_runs(self, prompts: int, *, more: bool = False) -> None:
        runs = prompts * self.settings_count
        if runs > MAX_RUNS:
            raise SpecError(
                f"the sweep expands to {'more than ' if more else ''}{runs:,} runs ({prompts:,} prompts × "
                f"{self.settings_count:,} seeds and settings); at most {MAX_RUNS:,} may be planned at once: "
                "split it into several sweeps",
                field="seeds" if len(self.seeds) > 1 else "prompts",
            )

    def prompt_list(self) -> list[tuple[str, str]]:
        """(prompt, the prompt it was derived from) for every prompt the sweep runs, in order."""
        bases = [self.prompt] if self.prompt is not None else list(self.prompts)
        self._check_runs(len(bases))  # every base prompt is one prompt at least
        if self.word_orders is None:
            return [(p, p) for p in bases]
        from workbench.analysis.word_order import permutations

        out: dict[str, str] = {}
        options = {k: v for k, v in self.word_orders.items() if k != "kind"}
        if "words" in options:
            options["words"] = tuple(options["words"])
        for base in bases:
            try:
                orders = permutations(base, kind=self.word_orders["kind"], **options)
            except ValueError as err:
                raise SpecError(f"word_orders for {base!r}: {err}", field="word_orders") from None
            for order in orders:
                out.setdefault(order, base)
            self._check_runs(len(out), more=base != bases[-1])
        return list(out.items())

    @cached_property
    def _planned(self) -> tuple[PlannedRun, ...]:
        prompts = self.prompt_list()
        planned = []
        for seed in self.seeds:
            for size in self.sizes:
                for scheduler in self.schedulers:
                    for steps in self.steps:
                        for guidance in self.guidance_scales:
                            for edits in self.edits:
                                for i, (text, base) in enumerate(prompts):
                                    request = self._request(text, seed, steps, guidance, scheduler, size)
                                    planned.append(PlannedRun(request, i, base, edits))
        return tuple(planned)

    def plan(self) -> list[PlannedRun]:
        """Every request of the sweep, in its fixed order (see the module docstring); made once."""
        return list(self._planned)

    def requests(self) -> list[Request]:
        return [p.request for p in self._planned]

    def _request(self, prompt, seed, steps, guidance, scheduler, size) -> Request:
        try:
            return Request(
                prompt=prompt,
                seed=seed,
                steps=steps,
                guidance_scale=guidance,
                scheduler=scheduler,
                negative_prompt=self.negative_prompt,
                height=None if size is None else size[0],
                width=None if size is None else size[1],
            )
        except RequestError as err:
            raise SpecError(f"{spec_field(err)}: {err}", field=spec_field(err)) from None

    # ------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        """A JSON-ready dict that ``from_dict`` turns back into an equal spec."""
        d = {
            "model": self.model,
            "prompts": list(self.prompts),
            "seeds": list(self.seeds),
            "steps": list(self.steps),
            "guidance_scales": list(self.guidance_scales),
            "schedulers": list(self.schedulers),
            "sizes": [None if s is None else list(s) for s in self.sizes],
            "negative_prompt": self.negative_prompt,
            "prompt": self.prompt,
            "word_orders": None if self.word_orders is None else dict(self.word_orders),
            "policy": self.policy.to_dict(),
            "disk_budget": self.disk_budget,
            "name": self.name,
        }
        if self.edits != ((),):  # a sweep without edits keeps the id it had before edits existed
            d["edits"] = [[e.to_dict() for e in edits] for edits in self.edits]
        if self.prompt is not None:
            del d["prompts"]
        else:
            del d["prompt"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        """A spec from a dict (a spec file's content); unknown fields raise ``SpecError`` naming them."""
        if not isinstance(d, dict):
            raise SpecError(f"a sweep spec must be a JSON object, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise SpecError(f"unknown spec fields {unknown}; fields are {names}", field=unknown[0])
        if "model" not in d:
            raise SpecError(
                'a sweep spec needs "model" ("toy", a diffusers folder or a hub id)', field="model"
            )
        try:
            return cls(**d)
        except SpecError:
            raise
        except (TypeError, ValueError) as err:
            raise SpecError(str(err)) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    def replace(self, **fields) -> SweepSpec:
        return dataclasses.replace(self, **fields)

    # ------------------------------------------------------------ ids

    def sweep_id(self, weights_sha256: str) -> str:
        """The sweep's id: a hash of what it runs (not its name or budget) and the weights."""
        d = self.to_dict()
        for key in ("name", "disk_budget"):
            d.pop(key, None)
        d["policy"] = policy_key(self.policy)
        return _digest({"spec": d, "weights_sha256": weights_sha256})[:12]


def _edit_lists(value) -> tuple[tuple[Edit, ...], ...]:
    """The spec's ``edits``: a list of edit lists, each entry an ``Edit`` or its dict."""
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError(
            f"edits must be a non-empty list of edit lists (e.g. [[]]), got {value!r}"[:300], field="edits"
        )
    if len(value) > 10_000:
        raise SpecError(f"edits names {len(value):,} edit lists; at most 10,000", field="edits")
    out = []
    for i, edits in enumerate(value):
        if not isinstance(edits, (list, tuple)):
            raise SpecError(
                f"edits[{i}] must be a list of edits ([] for none), got {type(edits).__name__}", field="edits"
            )
        try:
            out.append(tuple(e if isinstance(e, Edit) else Edit.from_dict(e) for e in edits))
        except EditError as err:
            raise SpecError(f"edits[{i}]: {err}", field="edits") from None
    if len(set(out)) != len(out):
        raise SpecError("edits lists the same edit list twice", field="edits")
    return tuple(out)


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read a sweep spec file (JSON); problems raise ``SpecError`` naming the file."""
    from workbench.store.runs import cannot_read, read_small_file

    path = Path(path)
    if not os.path.lexists(path):
        raise SpecError(f"spec file {path} does not exist")
    try:
        data = json.loads(read_small_file(path))  # a regular file under the size cap only
    except OSError as err:
        raise SpecError(cannot_read(path, err)) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise SpecError(f"{path} is not a JSON file ({err})") from None
    try:
        return SweepSpec.from_dict(data)
    except SpecError as err:
        raise SpecError(f"{path}: {err}", field=err.field) from None


def as_spec(spec) -> SweepSpec:
    """A ``SweepSpec`` from a spec, its dict or a spec file's path."""
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, dict):
        return SweepSpec.from_dict(spec)
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    raise TypeError(f"spec must be a SweepSpec, a dict or a spec file's path, got {type(spec).__name__}")


def policy_key(policy: RecordingPolicy) -> dict:
    """The policy's fields that decide what a run keeps (its byte budget does not)."""
    d = policy.to_dict()
    d.pop("budget_bytes", None)
    return d


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def request_fields(request: Request) -> dict:
    """``request.to_dict()`` as JSON writes it, made fast: a sweep makes one per run (``Request``'s fields
    are plain values, lists and dicts, so the shallow copy and ``dataclasses.asdict``'s deep one write
    the same JSON)."""
    return {name: getattr(request, name) for name in _REQUEST_FIELDS}


_REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(Request))


def request_id(request: Request, policy: RecordingPolicy, weights_sha256: str) -> str:
    """The stable id of one run: a hash of the request, the policy and the weights' hash.

    Example:
        >>> request_id(Request("a red circle", seed=0), RecordingPolicy(), "ab" * 32)  # doctest: +SKIP
        '3f0c...'
    """
    return request_ids([request], policy, weights_sha256)[0]


def request_ids(
    requests: list[Request], policy: RecordingPolicy, weights_sha256: str, edits: list | None = None
) -> list[str]:
    """``request_id`` of every request (the policy's part made once: a sweep has one per run);
    ``edits[i]`` are request i's edits (an unedited request's id is the one it always had)."""
    key = policy_key(policy)
    out = []
    for i, r in enumerate(requests):
        d = {"request": request_fields(r), "policy": key, "weights_sha256": weights_sha256}
        if edits is not None and edits[i]:
            d["edits"] = [e.to_dict() for e in edits[i]]
        out.append(_digest(d)[:ID_CHARS])
    return out
