"""The record of one generation: its full configuration and everything observed at every step."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import pandas as pd
import torch
from PIL import Image

from .attention import AttentionStore
from .edit import Edit, EditError, describe_edits, switch_of
from .policy import RecordingPolicy
from .request import Request
from .tokens import word_groups

SCHEMA_VERSION = 1


@dataclass
class Provenance:
    """What a run was made with, beyond what was asked for.

    Attributes:
        scheduler, scheduler_config: the class name and config of the scheduler that ran.
        model: ``source``, ``pipeline`` class and ``weights_sha256``.
        dtype, device: of the denoiser.
        versions: torch, diffusers, transformers, workbench.
        batch: for images made in one batched call: ``size``, ``prompts``, ``seeds``.
        noise: where the initial noise came from: ``"seed"`` (a fresh CPU generator seeded with the
            request's seed), ``"latents"`` (the caller's own), ``"generator"`` (a generator whose seed
            does not reproduce it: used before, or on another device) or ``"global"`` (torch's global RNG).
        numerics: what else decided the numbers (``core.numerics.numerics``): torch ``threads``,
            ``device``, ``dtype``, ``attention_backend``, ``deterministic``, ``versions``; empty for
            runs saved before it was recorded.
    """

    scheduler: str = ""
    scheduler_config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    dtype: str = "float32"
    device: str = "cpu"
    versions: dict = field(default_factory=dict)
    batch: dict | None = None
    noise: str = "seed"
    numerics: dict = field(default_factory=dict)


_REQUEST_FIELDS = {f.name for f in fields(Request)}
_PROVENANCE_FIELDS = {f.name for f in fields(Provenance)}


@dataclass
class RunConfig:
    """Everything needed to say what a run was and to run it again: what was asked for (``request``),
    what was kept (``policy``), and what it ran on (``provenance``).

    The request's and the provenance's fields read through: ``config.prompt``, ``config.seed``, ...,
    ``config.scheduler`` (the class that ran), ``config.model``, ``config.device``, ...
    """

    request: Request
    policy: RecordingPolicy = field(default_factory=RecordingPolicy)
    provenance: Provenance = field(default_factory=Provenance)
    edits: tuple[Edit, ...] = ()

    @property
    def edited(self) -> bool:
        """Whether edits changed this run's attention or conditioning (``edits`` says how)."""
        return bool(self.edits)

    @property
    def edit_label(self) -> str:
        """What the edits did, in one line ("" for an unedited run)."""
        return describe_edits(self.edits)

    # What was asked for, read through.
    prompt = property(lambda self: self.request.prompt)
    seed = property(lambda self: self.request.seed)
    steps = property(lambda self: self.request.steps)
    guidance_scale = property(lambda self: self.request.guidance_scale)
    negative_prompt = property(lambda self: self.request.negative_prompt)
    height = property(lambda self: self.request.height)
    width = property(lambda self: self.request.width)
    # What it ran on, read through (``scheduler`` is the class that ran, not the request's spec).
    scheduler = property(lambda self: self.provenance.scheduler)
    scheduler_config = property(lambda self: self.provenance.scheduler_config)
    model = property(lambda self: self.provenance.model)
    dtype = property(lambda self: self.provenance.dtype)
    device = property(lambda self: self.provenance.device)
    versions = property(lambda self: self.provenance.versions)
    batch = property(lambda self: self.provenance.batch)

    def scheduler_spec(self) -> dict:
        """The scheduler that ran, as a spec ``build_scheduler`` rebuilds exactly."""
        return {"class": self.provenance.scheduler, "config": dict(self.provenance.scheduler_config)}

    def to_dict(self) -> dict:
        """One flat JSON-ready dict (``run.json``'s and the re-run spec's form): the request's fields, its
        scheduler spec as ``request_scheduler``, the policy, and the provenance's fields (``scheduler``
        is the class that ran)."""
        request = self.request.to_dict()
        flat = {k: v for k, v in request.items() if k != "scheduler"}
        return {
            **flat,
            "request_scheduler": request["scheduler"],
            "policy": self.policy.to_dict(),
            **asdict(self.provenance),
            **({"edits": [e.to_dict() for e in self.edits]} if self.edits else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """From ``to_dict``'s output (runs saved before ``request_scheduler`` and ``noise`` existed load too)."""
        if not isinstance(d, dict):
            raise TypeError(f"a run config must be a dict, got {type(d).__name__}")
        known = _REQUEST_FIELDS | _PROVENANCE_FIELDS | {"policy", "request_scheduler", "edits"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TypeError(f"unknown run config fields {unknown}")
        if not isinstance(d.get("policy", {}), dict):
            raise TypeError("a run config's policy must be a dict")
        request = {k: v for k, v in d.items() if k in _REQUEST_FIELDS and k != "scheduler"}
        edits = d.get("edits") or []
        if not isinstance(edits, list):
            raise EditError("edits", f"must be a list of edits, got {type(edits).__name__}")
        return cls(
            request=Request.from_dict({**request, "scheduler": d.get("request_scheduler")}),
            policy=RecordingPolicy.from_dict(d.get("policy") or {}),
            provenance=Provenance(**{k: v for k, v in d.items() if k in _PROVENANCE_FIELDS}),
            edits=tuple(_edit_from(i, e) for i, e in enumerate(edits)),
        )


def _edit_from(index: int, d) -> Edit:
    """The ``index``-th edit of a run config, its errors naming it (``edits[0].factor``)."""
    try:
        return Edit.from_dict(d)
    except EditError as err:
        raise type(err)(f"edits[{index}].{err.field}", err.problem, hint=err.hint) from None


@dataclass
class Run:
    """One recorded generation.

    Attributes:
        config: the full configuration (see ``RunConfig``).
        tokens: the prompt's token table (see ``workbench.core.tokens.token_table``).
        negative_tokens: the negative prompt's token table (the empty prompt's when none was given).
        timesteps: (iterations,) the timestep of every denoising-loop iteration. Most schedulers make
            one iteration per step; PNDM repeats a timestep and second-order ones evaluate twice.
        noise: (C, h, w) the initial noise as drawn from the seed, before ``init_noise_sigma``.
        latents: (iterations + 1, C, h, w) the latent the loop starts from, then after every iteration.
        x0: (iterations, C, h, w) the predicted clean latent at every iteration.
        image: the final image as the stock pipeline returns it (``None`` if interrupted before the end).
        attention: cross-attention of the conditional branch.
        negative_attention: cross-attention of the unconditional / negative branch, if recorded.
        complete: False when the run stopped early (Ctrl-C, cancel or a failure); the steps done are kept.
        failure: why the run failed (e.g. its latents turned non-finite at a step), or None. A failed
            run is kept for inspection and is never a finding.
        switch_tokens: for a run whose prompt was switched (``Edit.switch``), the switched-to prompt's
            token table: the text positions of the conditional attention from the switch's step on are
            its positions (the maps read them by word; ``analysis.in_prompt_positions``).
    """

    config: RunConfig
    tokens: pd.DataFrame
    negative_tokens: pd.DataFrame | None
    timesteps: torch.Tensor
    noise: torch.Tensor
    latents: torch.Tensor
    x0: torch.Tensor
    image: Image.Image | None
    attention: AttentionStore
    negative_attention: AttentionStore | None = None
    complete: bool = True
    failure: str | None = None
    switch_tokens: pd.DataFrame | None = None

    @property
    def switch_step(self) -> int | None:
        """The step from which a switched run's prompt was the switch's (None: not switched)."""
        switch = switch_of(self.config.edits)
        return None if switch is None else switch.from_step

    @property
    def steps_done(self) -> int:
        return int(self.x0.shape[0])

    @property
    def prompt(self) -> str:
        return self.config.prompt

    @property
    def seed(self) -> int | None:
        return self.config.seed

    @property
    def words(self) -> list[str]:
        """The in-context words (and punctuation marks) of the prompt as typed, in order."""
        return [g["word"] for g in word_groups(self.tokens, include_special=False)]

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"incomplete ({self.steps_done}/{self.config.steps} steps)"
        if self.failure:
            state = f"FAILED: {self.failure}"
        return (
            f"Run(prompt={self.config.prompt!r}, seed={self.config.seed}, steps={self.config.steps}, "
            f"guidance={self.config.guidance_scale}, {self.config.width}x{self.config.height}, "
            f"{self.config.scheduler}, {state}, attention={self.attention.nbytes() / 1024**2:.1f} MB"
            + (f", edited: {self.config.edit_label}" if self.config.edits else "")
            + ")"
        )
