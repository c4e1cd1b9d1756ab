"""What to generate: one frozen, validated value that the CLI, the apps, specs and sweeps all build.

A ``Request`` checks its own fields once, when it is made, with messages that name the field and what
would work; what depends on the model (the size multiple, the default size) is checked by
``Request.for_model``. ``to_dict`` / ``from_dict`` round-trip through JSON.

Example:
    >>> req = Request("a red circle left of a blue square", seed=3, steps=25, scheduler="ddim")
    >>> Request.from_dict(req.to_dict()) == req
    True
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import reprlib
from dataclasses import dataclass

from .errors import FieldError
from .schedulers import scheduler_spec

MAX_SEED = 2**63 - 1
MAX_STEPS = 1000
MAX_PROMPT_CHARS = 10_000  # far beyond any text encoder's window (77 CLIP / 512 T5 tokens)
MAX_SEEDS = 100_000  # the most seeds one list may name
GUIDANCE_WARN_ABOVE = 50.0
SIZE_LIMIT = 2.0  # the largest side a request may have, as a multiple of the model's native size  # beyond this, guided images are saturated noise on every model we know
EMPTY_PROMPT_NOTE = "the prompt is empty: the image is what the model makes unconditioned on any text"


class RequestError(FieldError):
    """A request field that cannot be used, with the field as data (see ``FieldError``).

    ``field`` is the ``Request`` field refused (``"seed"``, ``"height"``, ...; ``"size"`` for the size
    bound on height and width together, ``"seeds"`` for a seed list).
    """


class RequestTypeError(RequestError, TypeError):
    """A request field of the wrong type (a ``RequestError`` that is also a ``TypeError``)."""


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``low..high``, or a ``RequestError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise RequestTypeError(name, f"must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        raise RequestError(name, f"must be {span}, got {value!r}")
    return int(value)


def check_size(name: str, value: int, multiple: int) -> int:
    """``value`` when it is a multiple of ``multiple``, else a ``RequestError`` suggesting the neighbours."""
    if value % multiple:
        lower, upper = value - value % multiple, value - value % multiple + multiple
        tries = f"{lower} or {upper}" if lower else f"{upper}"
        raise RequestError(name, f"must be a multiple of {multiple} for this model, got {value}; try {tries}")
    return value


def check_prompt(name: str, value) -> str:
    """A prompt (or negative prompt) as a str within ``MAX_PROMPT_CHARS``, else a ``RequestError``."""
    if not isinstance(value, str):
        raise RequestTypeError(name, f"must be a str, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(
            name,
            f"is {len(value):,} characters long; the limit is {MAX_PROMPT_CHARS:,} (a text encoder reads "
            "at most a few hundred words of it)",
        )
    return value


_SEED_PART = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")  # (a seed has at most 19 digits)


def parse_seeds(value, *, limit: int = MAX_SEEDS, field: str = "seeds") -> tuple[int, ...]:
    """Seeds from a list of ints, one int, or text such as ``"0-99"`` / ``"0, 5, 10-12"``: distinct, in order.

    Linear in the number of seeds; a list over ``limit`` seeds is refused with its count before any is
    made. Every seed must be a valid ``Request`` seed. Errors are ``RequestError`` with ``field``.

    Example:
        >>> parse_seeds("0, 5, 10-12")
        (0, 5, 10, 11, 12)
    """
    if isinstance(value, str):
        spans = []
        for part in [p for p in re.split(r"[,\s]+", value.strip()) if p]:
            m = _SEED_PART.fullmatch(part)
            if m is None or int(m.group(2) or m.group(1)) < int(m.group(1)):
                raise RequestError(
                    field, f"must be seeds or rising ranges such as 0-99; got {reprlib.repr(part)}"
                )
            spans.append((int(m.group(1)), int(m.group(2) or m.group(1))))
        _check_count(sum(hi - lo + 1 for lo, hi in spans), limit, field)
        items: list = [s for lo, hi in spans for s in range(lo, hi + 1)]
    elif isinstance(value, (list, tuple, range)):
        _check_count(len(value), limit, field)
        items = list(value)
    else:
        items = [value]
    if not items:
        raise RequestError(field, "must name at least one seed, e.g. 0, 1, 2")
    seeds = [check_int(field, s, 0, MAX_SEED) for s in items]
    seen: set[int] = set()
    repeated = list(dict.fromkeys(s for s in seeds if s in seen or seen.add(s)))
    if repeated:
        shown = ", ".join(map(str, repeated[:10])) + (" ..." if len(repeated) > 10 else "")
        raise RequestError(field, f"must be distinct; repeated: {shown}")
    return tuple(seeds)


def _check_count(count: int, limit: int, field: str) -> None:
    if count > limit:
        raise RequestError(field, f"name {count:,} seeds; at most {limit:,} may be given at once")


@dataclass(frozen=True)
class Request:
    """One generation's settings.

    Args:
        prompt: the text prompt (at most ``MAX_PROMPT_CHARS`` characters). An empty prompt is a valid
            request everywhere (the model's unconditional image) and is noted as such when it runs.
        seed: fixes the initial noise (0 <= seed < 2**63) through a CPU ``torch.Generator``, so the same
            seed gives the same noise on any device and for any prompt. ``None`` in a recorded run means
            the noise did not come from a seed (the caller's own ``latents`` or generator state).
        steps: number of denoising steps (1..1000).
        guidance_scale: classifier-free guidance weight (finite, >= 0; <= 1 turns guidance off).
            ``None``: the model's own default (its adapter's), filled in by ``for_model``.
        negative_prompt: text for the unconditional branch.
        height, width: image size in pixels; ``None``: the model's native size.
        true_cfg_scale: Flux only: above 1 with a negative prompt, the negative branch runs as a second
            denoiser call per step ("true" classifier-free guidance); ``guidance_scale`` is then Flux's
            embedded guidance. ``None``: the model's own, filled in by ``for_model`` (1.0, i.e. off,
            unless the model folder declares one, with the negative prompt it was trained for); in a
            recorded run, ``None`` means not known from the call.
        scheduler: ``None`` (the pipeline's own), a name from ``workbench.core.schedulers.SCHEDULERS``
            (``"ddim"``, ``"euler"``, ``"dpm++"``, ...), a diffusers scheduler (kept as its class and
            config) or ``{"class": "DDIMScheduler", "config": {...}}`` (scheduler classes only).

    Every refusal is a ``RequestError`` whose ``field`` names the field.
    """

    prompt: str
    seed: int | None
    steps: int = 25
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    scheduler: str | dict | None = None
    true_cfg_scale: float | None = None

    def __post_init__(self):
        check_prompt("prompt", self.prompt)
        if self.seed is not None:
            object.__setattr__(self, "seed", check_int("seed", self.seed, 0, MAX_SEED))
        object.__setattr__(self, "steps", check_int("steps", self.steps, 1, MAX_STEPS))
        if self.guidance_scale is not None:
            object.__setattr__(self, "guidance_scale", _check_guidance(self.guidance_scale))
        t = self.true_cfg_scale
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t < 0:
                raise RequestError(
                    "true_cfg_scale", f"must be a finite number >= 0 (or None: unknown), got {t!r}"
                )
            object.__setattr__(self, "true_cfg_scale", float(t))
        if self.negative_prompt is not None:
            check_prompt("negative_prompt", self.negative_prompt)
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_int(name, value, 1))
        try:
            object.__setattr__(self, "scheduler", scheduler_spec(self.scheduler))
        except FieldError as err:  # the scheduler's own checks: the same field, as a request's error
            kind = RequestTypeError if isinstance(err, TypeError) else RequestError
            raise kind("scheduler", err.problem) from None

    @property
    def notes(self) -> list[str]:
        """What a run of this request should tell its reader (an empty prompt, a guidance far out)."""
        notes = [EMPTY_PROMPT_NOTE] if not self.prompt.strip() else []
        if self.guidance_scale is not None and self.guidance_scale > GUIDANCE_WARN_ABOVE:
            notes.append(
                f"guidance_scale {self.guidance_scale} is far above the usual range (1-20); expect saturated images"
            )
        return notes

    def replace(self, **fields) -> Request:
        """A copy with ``fields`` changed (validated like a new request)."""
        return dataclasses.replace(self, **fields)

    def for_model(self, adapter, *, size_limit: float | None = SIZE_LIMIT) -> Request:
        """This request with the model's defaults (native size, guidance) filled in and sizes checked.

        Sizes must be multiples of the model's size multiple and, unless ``size_limit`` is None, their
        larger side at most ``size_limit`` times the model's native size (far larger images take
        minutes per step and tens of GB, and models make poor images there anyway).
        """
        if self.true_cfg_scale not in (None, 1.0) and not adapter.true_cfg:
            raise RequestError(
                "true_cfg_scale",
                f"applies to Flux pipelines only; {adapter.family} guides with guidance_scale",
            )
        if self.negative_prompt is not None and not adapter.negative_prompts:
            raise RequestError(
                "negative_prompt",
                f"is not taken by {adapter.family}: its guidance runs against the empty prompt",
            )
        true_cfg, negative = self._true_guidance(adapter)
        m = adapter.size_multiple
        height = check_size("height", self.height or adapter.default_size, m)
        width = check_size("width", self.width or adapter.default_size, m)
        native = adapter.default_size
        if size_limit is not None and max(height, width) > size_limit * native:
            side = int(size_limit * native) // m * m
            raise RequestError(
                "size",
                f"{width}x{height} is more than {size_limit:g}x this model's native size {native}x{native}; "
                f"sizes up to {side}x{side} are allowed",
                hint="pass size_limit=None to lift the bound",
            )
        guidance = self.guidance_scale if self.guidance_scale is not None else adapter.default_guidance
        return self.replace(
            height=height,
            width=width,
            guidance_scale=guidance,
            true_cfg_scale=true_cfg,
            negative_prompt=negative,
        )

    def _true_guidance(self, adapter) -> tuple[float, str | None]:
        """The true-CFG scale and negative prompt: the request's, else the model's declared ones (a
        declared negative prompt fills in only where true CFG is on and the request names none)."""
        if self.true_cfg_scale is not None:
            true_cfg = self.true_cfg_scale
        else:
            true_cfg = adapter.default_true_cfg if adapter.true_cfg else 1.0
        negative = self.negative_prompt
        if negative is None and true_cfg > 1:
            negative = adapter.default_negative_prompt
        return true_cfg, negative

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Request:
        """A request from ``to_dict``'s output; unknown or missing fields raise ``RequestError``."""
        if not isinstance(d, dict):
            raise RequestTypeError("request", f"must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise RequestError(unknown[0], f"is not a request field; fields are {sorted(names)}")
        missing = [n for n in ("prompt", "seed") if n not in d]
        if missing:
            raise RequestError(missing[0], f"is missing; a request needs the fields {missing}")
        return cls(**d)


def _check_guidance(g) -> float:
    if isinstance(g, bool) or not isinstance(g, numbers.Real):
        raise RequestTypeError("guidance_scale", f"must be a number, got {g!r}")
    if not math.isfinite(g):
        raise RequestError("guidance_scale", f"must be a finite number, got {g!r}")
    if g < 0:
        raise RequestError("guidance_scale", f"must be >= 0, got {g!r}")
    return float(g)
