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
from dataclasses import dataclass

from .schedulers import scheduler_spec

MAX_SEED = 2**63 - 1
MAX_STEPS = 1000
GUIDANCE_WARN_ABOVE = 50.0
SIZE_LIMIT = 2.0  # the largest side a request may have, as a multiple of the model's native size  # beyond this, guided images are saturated noise on every model we know


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``low..high``, or a ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {span}, got {value!r}")
    return int(value)


def check_size(name: str, value: int, multiple: int) -> int:
    """``value`` when it is a multiple of ``multiple``, else a ``ValueError`` suggesting the neighbours."""
    if value % multiple:
        lower, upper = value - value % multiple, value - value % multiple + multiple
        raise ValueError(
            f"{name} must be a multiple of {multiple} for this model, got {value}; try {lower or upper} or {upper}"
        )
    return value


@dataclass(frozen=True)
class Request:
    """One generation's settings.

    Args:
        prompt: the text prompt.
        seed: fixes the initial noise (0 <= seed < 2**63) through a CPU ``torch.Generator``, so the same
            seed gives the same noise on any device and for any prompt. ``None`` in a recorded run means
            the noise did not come from a seed (the caller's own ``latents`` or generator state).
        steps: number of denoising steps (1..1000).
        guidance_scale: classifier-free guidance weight (finite, >= 0; <= 1 turns guidance off).
        negative_prompt: text for the unconditional branch.
        height, width: image size in pixels; ``None``: the model's native size.
        true_cfg_scale: Flux only: above 1 with a negative prompt, the negative branch runs as a second
            denoiser call per step ("true" classifier-free guidance); ``guidance_scale`` is then Flux's
            embedded guidance. ``None`` in a recorded run: not known from the call.
        scheduler: ``None`` (the pipeline's own), a name from ``workbench.core.schedulers.SCHEDULERS``
            (``"ddim"``, ``"euler"``, ``"dpm++"``, ...), a diffusers scheduler (kept as its class and
            config) or ``{"class": "DDIMScheduler", "config": {...}}``.
    """

    prompt: str
    seed: int | None
    steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    scheduler: str | dict | None = None
    true_cfg_scale: float | None = 1.0

    def __post_init__(self):
        if not isinstance(self.prompt, str):
            raise TypeError(f"prompt must be a str, got {type(self.prompt).__name__}")
        if self.seed is not None:
            object.__setattr__(self, "seed", check_int("seed", self.seed, 0, MAX_SEED))
        object.__setattr__(self, "steps", check_int("steps", self.steps, 1, MAX_STEPS))
        g = self.guidance_scale
        if isinstance(g, bool) or not isinstance(g, numbers.Real):
            raise TypeError(f"guidance_scale must be a number, got {g!r}")
        if not math.isfinite(g):
            raise ValueError(f"guidance_scale must be a finite number, got {g!r}")
        if g < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {g!r}")
        object.__setattr__(self, "guidance_scale", float(g))
        t = self.true_cfg_scale
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t < 0:
                raise ValueError(f"true_cfg_scale must be a finite number >= 0 (or None: unknown), got {t!r}")
            object.__setattr__(self, "true_cfg_scale", float(t))
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise TypeError(
                f"negative_prompt must be a str or None, got {type(self.negative_prompt).__name__}"
            )
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_int(name, value, 1))
        object.__setattr__(self, "scheduler", scheduler_spec(self.scheduler))

    def replace(self, **fields) -> Request:
        """A copy with ``fields`` changed (validated like a new request)."""
        return dataclasses.replace(self, **fields)

    def for_model(self, adapter, *, size_limit: float | None = SIZE_LIMIT) -> Request:
        """This request with the model's native size filled in and sizes checked against the model.

        Sizes must be multiples of the model's size multiple and, unless ``size_limit`` is None, their
        larger side at most ``size_limit`` times the model's native size (far larger images take
        minutes per step and tens of GB, and models make poor images there anyway).
        """
        if self.true_cfg_scale not in (None, 1.0) and not adapter.separate_negative:
            raise ValueError(
                f"true_cfg_scale applies to Flux pipelines only; {adapter.family} guides with guidance_scale"
            )
        m = adapter.size_multiple
        height = check_size("height", self.height or adapter.default_size, m)
        width = check_size("width", self.width or adapter.default_size, m)
        native = adapter.default_size
        if size_limit is not None and max(height, width) > size_limit * native:
            side = int(size_limit * native) // m * m
            raise ValueError(
                f"{width}x{height} is more than {size_limit:g}x this model's native size {native}x{native}; "
                f"sizes up to {side}x{side} are allowed (pass size_limit=None to lift the bound)"
            )
        return self.replace(height=height, width=width)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Request:
        """A request from ``to_dict``'s output; unknown or missing fields raise ``ValueError``."""
        if not isinstance(d, dict):
            raise TypeError(f"a request must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown request fields {unknown}; fields are {sorted(names)}")
        missing = [n for n in ("prompt", "seed") if n not in d]
        if missing:
            raise ValueError(f"a request needs the fields {missing}")
        return cls(**d)
