"""The recording policy: what to keep of the cross-attention, and what that costs in bytes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import torch

from .errors import FieldError
from .layers import CrossAttentionLayer, select_layers

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
DEFAULT_BUDGET = 4 * 1024**3


MAX_KEPT_STEPS = 10_000  # step indices a policy may name (runs have at most 1000 steps, 2000 iterations)


class BudgetError(ValueError):
    """The policy would record more bytes than its budget allows."""


class PolicyError(FieldError):
    """A recording-policy field that cannot be used; ``field`` names it (``"heads"``, ``"steps"``, ...)."""

    label = "policy"


@dataclass(frozen=True)
class RecordingPolicy:
    """What a recorded run keeps of the cross-attention probabilities.

    Args:
        steps: denoising step indices to keep (``None``: every step).
        layers: ``None`` for every cross-attention layer, or a list of module paths
            (``"up_blocks.1.attentions.0.transformer_blocks.0.attn2"``) and/or resolutions
            (``"16x16"`` strings, or an int for the grid's larger side).
        heads: ``"mean"`` averages heads as it records; ``"all"`` keeps each head.
        dtype: storage dtype name: ``"float16"`` (default), ``"bfloat16"`` or ``"float32"``.
        device: where the store lives; ``"cpu"`` offloads each step as it is recorded.
        negative: also record the unconditional / negative-prompt branch.
        budget_bytes: the most the store may take; checked before generation starts.

    Example:
        >>> RecordingPolicy(layers=["16x16"], steps=range(10, 25), heads="all")  # doctest: +SKIP
    """

    steps: Sequence[int] | None = None
    layers: Sequence[str | int] | None = None
    heads: str = "mean"
    dtype: str = "float16"
    device: str = "cpu"
    negative: bool = False
    budget_bytes: int = DEFAULT_BUDGET
    record_attention: bool = field(default=True)

    def __post_init__(self):
        if self.heads not in ("mean", "all"):
            raise PolicyError("heads", f"must be 'mean' or 'all', got {self.heads!r}")
        if self.dtype not in _DTYPES:
            raise PolicyError("dtype", f"must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.device, str):
            raise PolicyError("device", f"must be a str such as 'cpu' or 'cuda', got {self.device!r}")
        try:  # the form only: a run recorded on a GPU still loads where there is none
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise PolicyError(
                "device", f"{self.device!r} is not a device torch knows; use 'cpu', 'cuda', 'cuda:1' or 'mps'"
            ) from None
        if not isinstance(self.budget_bytes, int) or self.budget_bytes <= 0:
            raise PolicyError("budget_bytes", f"must be a positive int, got {self.budget_bytes!r}")
        if self.steps is not None:
            count = len(self.steps) if hasattr(self.steps, "__len__") else None
            if count is None or count > MAX_KEPT_STEPS:
                raise PolicyError(
                    "steps", f"must be a list of at most {MAX_KEPT_STEPS:,} step indices, got {self.steps!r}"
                )
            steps = list(self.steps)
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps):
                raise PolicyError("steps", f"must be non-negative ints, got {self.steps!r}")
            object.__setattr__(self, "steps", tuple(sorted(set(steps))))
        if self.layers is not None:  # one entry alone ("8x8") is a list of one, not of its characters
            one = isinstance(self.layers, (str, int))
            object.__setattr__(self, "layers", (self.layers,) if one else tuple(self.layers))

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["steps"] = list(self.steps) if self.steps is not None else None
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RecordingPolicy:
        """A policy from ``to_dict``'s output; unknown fields are refused with the list of fields."""
        if not isinstance(d, dict):
            raise PolicyError("", f"must be a dict, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise PolicyError(unknown[0], f"is not a policy field; fields are {names}")
        return cls(**d)

    def kept_steps(self, total: int) -> list[int]:
        if self.steps is None:
            return list(range(total))
        bad = [s for s in self.steps if s >= total]
        if bad:
            raise ValueError(
                f"policy steps {bad} are out of range for a run of {total} steps (0..{total - 1})"
            )
        return list(self.steps)

    def select_layers(
        self, layers: list[CrossAttentionLayer], latent_hw: tuple[int, int]
    ) -> list[CrossAttentionLayer]:
        """The layers this policy keeps; unknown names or resolutions raise with the valid choices."""
        grids = {layer.name: layer.grid(*latent_hw) for layer in layers}
        keep = set(select_layers(self.layers, grids, label="policy layers", among="cross-attention layer"))
        return [layer for layer in layers if layer.name in keep]


def estimate_bytes(
    policy: RecordingPolicy,
    layers: list[CrossAttentionLayer],
    latent_hw: tuple[int, int],
    tokens: int,
    total_steps: int,
    batch: int = 1,
    *,
    kept: list[CrossAttentionLayer] | None = None,
) -> int:
    """Bytes the attention stores of ``batch`` images will take under ``policy``, from the model's shapes.

    ``kept``: the layers the policy keeps, when already selected (``policy.select_layers``).
    """
    per_step = 0
    for layer in kept if kept is not None else policy.select_layers(layers, latent_hw):
        h, w = layer.grid(*latent_hw)
        heads = layer.heads if policy.heads == "all" else 1
        per_step += heads * h * w * tokens
    branches = 2 if policy.negative else 1
    itemsize = torch.empty((), dtype=policy.torch_dtype).element_size()
    return per_step * len(policy.kept_steps(total_steps)) * branches * itemsize * batch


def check_budget(
    policy: RecordingPolicy,
    layers: list[CrossAttentionLayer],
    latent_hw: tuple[int, int],
    tokens: int,
    total_steps: int,
    batch: int = 1,
    *,
    kept: list[CrossAttentionLayer] | None = None,
) -> int:
    """Return the estimate, or raise ``BudgetError`` naming the estimate and policies that fit.

    ``kept``: the layers the policy keeps, when already selected (``policy.select_layers``).
    """
    need = (
        estimate_bytes(policy, layers, latent_hw, tokens, total_steps, batch, kept=kept)
        if policy.record_attention
        else 0
    )
    if need <= policy.budget_bytes:
        return need
    options = []
    for change in (
        {"heads": "mean"},
        {"heads": "mean", "dtype": "float16"},
        {"heads": "mean", "dtype": "float16", "negative": False},
    ):
        trial = RecordingPolicy(**{**policy.to_dict(), **change})
        cost = estimate_bytes(trial, layers, latent_hw, tokens, total_steps, batch)
        if cost <= policy.budget_bytes and trial != policy:
            options.append(f"{change} ({_mb(cost)})")
    cheapest = RecordingPolicy(**{**policy.to_dict(), "heads": "mean", "dtype": "float16", "negative": False})
    per_step = estimate_bytes(cheapest, layers, latent_hw, tokens, total_steps, batch) / max(
        1, len(cheapest.kept_steps(total_steps))
    )
    fit_steps = int(policy.budget_bytes // max(per_step, 1))
    if 0 < fit_steps < len(cheapest.kept_steps(total_steps)):  # only a real cut is an option
        options.append(f"keep at most {fit_steps} steps with heads='mean', dtype='float16' (steps=...)")
    for res in sorted({layer.resolution(*latent_hw) for layer in layers}):
        trial = RecordingPolicy(**{**cheapest.to_dict(), "layers": [res]})
        cost = estimate_bytes(trial, layers, latent_hw, tokens, total_steps, batch)
        if cost <= policy.budget_bytes:
            options.append(f"layers=[{res!r}] with heads='mean', dtype='float16' ({_mb(cost)})")
    raise BudgetError(
        f"recording would take about {_mb(need)}, over the policy's budget of {_mb(policy.budget_bytes)}. "
        f"Options that fit: {'; '.join(options) or 'none; raise budget_bytes'}"
    )


def _mb(n: float) -> str:
    return f"{n / 1024**2:,.1f} MB"
