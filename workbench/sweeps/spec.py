"""The sweep spec: what to run, as one frozen value with a JSON round trip, and its expansion into requests.

A spec names a model source and lists of values; the sweep is every combination. The smallest spec file:

    {"model": "toy", "prompts": ["a red circle left of a blue square"], "seeds": [0, 1], "steps": 6,
     "guidance_scales": [4.0]}

``prompts`` may be replaced by one ``prompt``, and ``word_orders`` derives the orders of every prompt
(``analysis.permutations`` kinds: ``"relation"``, ``"all"``, ``"of"``, or ``{"kind": "swap", "words":
["red", "blue"]}``). Lists may be written as one value (``"steps": 6``); seeds also as ranges
(``"seeds": "0-99"`` or ``"0, 5, 10-12"``).

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
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.policy import RecordingPolicy
from workbench.core.request import Request
from workbench.core.schedulers import scheduler_spec

ORDER_KINDS = ("relation", "all", "of", "swap")
ID_CHARS = 16  # hex digits of a request id: 64 bits, collision-free for any sweep one could run
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_UNITS.update({"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4})


class SpecError(ValueError):
    """A sweep spec (or spec file) that cannot be run, with the field and what would work."""


def parse_bytes(value) -> int | None:
    """A byte count from an int or a string such as ``"500MB"``, ``"2 GiB"`` (None stays None).

    Example:
        >>> parse_bytes("1.5GB"), parse_bytes("10 MiB"), parse_bytes(4096)
        (1500000000, 10485760, 4096)
    """
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value <= 0:
            raise SpecError(f"disk_budget must be positive, got {value!r}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if m is None or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise SpecError(f"disk_budget must be a positive size such as 500MB, 2GB or 1GiB, got {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_seeds(value) -> tuple[int, ...]:
    """Seeds from a list of ints, one int, or text such as ``"0-99"`` / ``"0, 5, 10-12"``; distinct, in order."""
    if isinstance(value, str):
        seeds: list[int] = []
        for part in [p for p in re.split(r"[,\s]+", value.strip()) if p]:
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if m is None or int(m.group(2) or m.group(1)) < int(m.group(1)):
                raise SpecError(f"seeds: {part!r} is neither a seed nor a rising range such as 0-99")
            seeds += range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1)
        value = seeds
    items = _as_list(value, "seeds")
    for s in items:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise SpecError(f"seeds must be non-negative ints, got {s!r}")
    return _distinct([int(s) for s in items], "seeds")


def _as_list(value, name: str) -> list:
    if value is None:
        raise SpecError(f"{name} must not be null")
    out = list(value) if isinstance(value, (list, tuple)) else [value]
    if not out:
        raise SpecError(f"{name} must hold at least one value")
    return out


def _distinct(items: list, name: str) -> tuple:
    keys = [json.dumps(x, sort_keys=True) for x in items]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise SpecError(f"{name} must be distinct; repeated: {', '.join(repeated)}")
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
        raise SpecError(f"sizes entries must be null, an int or [height, width], got {value!r}")
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise SpecError(f"sizes entries must hold positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _orders(value) -> dict | None:
    """``word_orders`` as ``{"kind": ..., **options}`` for ``analysis.permutations``."""
    if value is None:
        return None
    d = {"kind": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else None
    if d is None or d.get("kind") not in ORDER_KINDS:
        raise SpecError(f"word_orders must be one of {ORDER_KINDS} or {{'kind': ..., ...}}, got {value!r}")
    unknown = sorted(set(d) - {"kind", "words", "max_orders", "seed"})
    if unknown:
        raise SpecError(f"word_orders has unknown options {unknown}; options are words, max_orders, seed")
    if d["kind"] == "swap" and not (isinstance(d.get("words"), (list, tuple)) and len(d["words"]) == 2):
        raise SpecError('word_orders "swap" needs "words": [word_a, word_b]')
    if "words" in d:
        d["words"] = list(d["words"])
    return d


@dataclass(frozen=True)
class PlannedRun:
    """One request of a sweep, with where its prompt came from."""

    request: Request
    prompt_index: int  # position of the prompt in the expanded prompt list
    base_prompt: str  # the prompt its word order was derived from (itself when none)


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs: a model and every combination of the listed values.

    Args:
        model: ``"toy"``, a local diffusers folder or a hub id (as ``load_pipeline`` takes it).
        prompts: the prompts (or give ``prompt``, one prompt).
        seeds: the seeds; each prompt and setting runs once per seed.
        steps, guidance_scales, schedulers: lists of settings (one value is a list of one).
            ``schedulers`` entries are names (``"ddim"``, ``"euler"``, ...), ``null`` for the model's
            own, or ``{"class": ..., "config": ...}``.
        sizes: ``null`` (the model's own size), an int (square) or ``[height, width]``.
        negative_prompt: one negative prompt for every run.
        prompt: one prompt, instead of ``prompts``.
        word_orders: derive the word orders of every prompt (``"relation"``, ``"all"``, ``"of"``, or
            ``{"kind": "swap", "words": [a, b]}``; ``"all"`` takes ``max_orders`` and ``seed``).
        policy: what attention every run keeps (``RecordingPolicy`` or its dict).
        disk_budget: refuse to start when the sweep's estimated size exceeds this (bytes, or "2GB").
        name: a label for people; it is not part of the sweep's id.
    """

    model: str
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    steps: tuple[int, ...] = (25,)
    guidance_scales: tuple[float, ...] = (7.5,)
    schedulers: tuple[str | dict | None, ...] = (None,)
    sizes: tuple[tuple[int, int] | None, ...] = (None,)
    negative_prompt: str | None = None
    prompt: str | None = None
    word_orders: dict | None = None
    policy: RecordingPolicy = field(default_factory=RecordingPolicy)
    disk_budget: int | None = None
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.model, (str, os.PathLike)) or not os.fspath(self.model).strip():
            raise SpecError(f"model must name a model ('toy', a folder or a hub id), got {self.model!r}")
        object.__setattr__(self, "model", os.fspath(self.model))
        if self.prompt is not None and self.prompts:
            raise SpecError("give prompts or prompt, not both")
        if self.prompt is None and not self.prompts:
            raise SpecError('a sweep needs prompts (e.g. "prompts": ["a red circle"]) or one prompt')
        texts = [self.prompt] if self.prompt is not None else _as_list(self.prompts, "prompts")
        if not all(isinstance(p, str) and p.strip() for p in texts):
            raise SpecError(f"prompts must be non-empty strings, got {texts!r}")
        if self.prompt is None:
            object.__setattr__(self, "prompts", _distinct(texts, "prompts"))
        object.__setattr__(self, "seeds", parse_seeds(self.seeds))
        object.__setattr__(self, "steps", _distinct(_as_list(self.steps, "steps"), "steps"))
        guidance = [_number(g) for g in _as_list(self.guidance_scales, "guidance_scales")]
        object.__setattr__(self, "guidance_scales", _distinct(guidance, "guidance_scales"))
        try:
            schedulers = [scheduler_spec(s) for s in _as_list(self.schedulers, "schedulers")]
        except (TypeError, ValueError) as err:
            raise SpecError(f"schedulers: {err}") from None
        object.__setattr__(self, "schedulers", _distinct(schedulers, "schedulers"))
        object.__setattr__(
            self, "sizes", _distinct([_size(s) for s in _as_list(self.sizes, "sizes")], "sizes")
        )
        object.__setattr__(self, "word_orders", _orders(self.word_orders))
        policy = self.policy
        if isinstance(policy, dict):
            try:
                policy = RecordingPolicy.from_dict(policy)
            except (TypeError, ValueError) as err:
                raise SpecError(f"policy: {err}") from None
        if not isinstance(policy, RecordingPolicy):
            raise SpecError(f"policy must be a RecordingPolicy or its dict, got {type(policy).__name__}")
        object.__setattr__(self, "policy", policy)
        object.__setattr__(self, "disk_budget", parse_bytes(self.disk_budget))
        if not isinstance(self.name, str):
            raise SpecError(f"name must be a str, got {self.name!r}")
        self.plan()  # every request is checked now, with the field it came from named

    # ------------------------------------------------------------ expansion

    def prompt_list(self) -> list[tuple[str, str]]:
        """(prompt, the prompt it was derived from) for every prompt the sweep runs, in order."""
        bases = [self.prompt] if self.prompt is not None else list(self.prompts)
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
                raise SpecError(f"word_orders for {base!r}: {err}") from None
            for order in orders:
                out.setdefault(order, base)
        return list(out.items())

    def plan(self) -> list[PlannedRun]:
        """Every request of the sweep, in its fixed order (see the module docstring)."""
        prompts = self.prompt_list()
        planned = []
        for seed in self.seeds:
            for size in self.sizes:
                for scheduler in self.schedulers:
                    for steps in self.steps:
                        for guidance in self.guidance_scales:
                            for i, (text, base) in enumerate(prompts):
                                request = self._request(text, seed, steps, guidance, scheduler, size)
                                planned.append(PlannedRun(request, i, base))
        return planned

    def requests(self) -> list[Request]:
        return [p.request for p in self.plan()]

    def _request(self, prompt, seed, steps, guidance, scheduler, size) -> Request:
        fields = dict(
            prompt=prompt,
            seed=seed,
            steps=steps,
            guidance_scale=guidance,
            scheduler=scheduler,
            negative_prompt=self.negative_prompt,
            height=None if size is None else size[0],
            width=None if size is None else size[1],
        )
        try:
            return Request(**fields)
        except (TypeError, ValueError) as err:
            message = str(err)
            for request_field, spec_field in (
                ("guidance_scale", "guidance_scales"),
                ("scheduler", "schedulers"),
                ("steps", "steps"),
                ("height", "sizes"),
                ("width", "sizes"),
            ):
                if message.startswith(request_field) or f" {request_field} " in message:
                    message = f"{spec_field}: {message}"
                    break
            raise SpecError(message) from None

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
            raise SpecError(f"unknown spec fields {unknown}; fields are {names}")
        if "model" not in d:
            raise SpecError('a sweep spec needs "model" ("toy", a diffusers folder or a hub id)')
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


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read a sweep spec file (JSON); problems raise ``SpecError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SpecError(f"{path} is not a JSON file ({err})") from None
    try:
        return SweepSpec.from_dict(data)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None


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


def request_id(request: Request, policy: RecordingPolicy, weights_sha256: str) -> str:
    """The stable id of one run: a hash of the request, the policy and the weights' hash.

    Example:
        >>> request_id(Request("a red circle", seed=0), RecordingPolicy(), "ab" * 32)  # doctest: +SKIP
        '3f0c...'
    """
    return _digest(
        {"request": request.to_dict(), "policy": policy_key(policy), "weights_sha256": weights_sha256}
    )[:ID_CHARS]
