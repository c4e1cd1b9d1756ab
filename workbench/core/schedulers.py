"""Scheduler names a user can pass, and x0 for schedulers that do not report it."""

from __future__ import annotations

import torch

from workbench.names import SCHEDULERS  # the names live in a torch-free module for the CLI

from .errors import FieldError, FieldTypeError

MAX_TRAIN_TIMESTEPS = 10_000  # 1000 in every released model; the scheduler allocates tables this long
MAX_CONFIG_LIST = MAX_TRAIN_TIMESTEPS  # the longest list a scheduler config may hold (trained_betas)
MAX_CONFIG_TEXT = 1_000  # the longest string a scheduler config may hold
MAX_CONFIG_INT = 100_000  # the largest whole number (Flux's max_image_seq_len is 4096)
MAX_SOLVER_ORDER = 8  # multistep solvers keep this many past outputs (2 or 3 in every released config)


def scheduler_spec(scheduler) -> str | dict | None:
    """A scheduler as a JSON-ready spec: ``None``, a known short name, or ``{"class", "config"}``.

    Accepts what ``Request.scheduler`` accepts: ``None``, a name from ``SCHEDULERS`` (any case), a
    diffusers scheduler instance (kept as its class name and config) or a ``{"class", "config"}`` dict.
    """
    if scheduler is None:
        return None
    if isinstance(scheduler, str):
        key = scheduler.lower()
        if key not in SCHEDULERS:
            raise FieldError("scheduler", f"{scheduler!r} is not known; choose one of {sorted(SCHEDULERS)}")
        return key
    if isinstance(scheduler, dict):
        if set(scheduler) != {"class", "config"} or not isinstance(scheduler["class"], str):
            raise FieldError(
                "scheduler",
                "spec dict must be {'class': '<diffusers scheduler class>', 'config': {...}}, "
                f"got keys {sorted(scheduler)}",
            )
        if not isinstance(scheduler["config"], dict):
            raise FieldTypeError(
                "scheduler", f"spec 'config' must be a dict, got {type(scheduler['config']).__name__}"
            )
        check_scheduler_class(scheduler["class"])
        check_scheduler_config(scheduler["config"])
        return {"class": scheduler["class"], "config": jsonable(scheduler["config"])}
    if hasattr(scheduler, "step") and hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "config"):
        return {"class": type(scheduler).__name__, "config": jsonable(dict(scheduler.config))}
    raise FieldTypeError(
        "scheduler", f"must be a name, a diffusers scheduler or a spec dict, got {type(scheduler).__name__}"
    )


def scheduler_classes() -> frozenset[str]:
    """The names of the scheduler classes this diffusers ships (subclasses of ``SchedulerMixin``)."""
    global _CLASSES
    if _CLASSES is None:
        import inspect

        import diffusers
        from diffusers import SchedulerMixin

        found = set()
        for name in dir(diffusers):
            if not name.endswith("Scheduler") or name == "SchedulerMixin":
                continue
            try:
                cls = getattr(diffusers, name)
            except (ImportError, AttributeError, RuntimeError):  # an optional dependency missing
                continue
            if inspect.isclass(cls) and issubclass(cls, SchedulerMixin):
                found.add(name)
        _CLASSES = frozenset(found)
    return _CLASSES


_CLASSES: frozenset[str] | None = None


def check_scheduler_class(name: str) -> None:
    """Refuse any class but a diffusers scheduler: a spec may build schedulers and nothing else."""
    if name not in scheduler_classes():
        raise FieldError(
            "scheduler",
            f"class {name!r} is not a scheduler of this diffusers; a spec may name scheduler "
            f"classes only, such as {', '.join(sorted({c for c, _ in SCHEDULERS.values()}))} (or a short "
            f"name: {', '.join(sorted(SCHEDULERS))})",
        )


def check_scheduler_config(config: dict) -> None:
    """Bound what a scheduler config may ask to allocate or loop over, before the scheduler is built.

    ``num_train_timesteps`` is 1..``MAX_TRAIN_TIMESTEPS`` and ``trained_betas`` (when given) that long;
    ``solver_order`` 1..``MAX_SOLVER_ORDER``; whole numbers within ``MAX_CONFIG_INT``; no NaN; lists and
    strings short.
    """
    n = _config_int(config, "num_train_timesteps", 1, MAX_TRAIN_TIMESTEPS)
    _config_int(config, "solver_order", 1, MAX_SOLVER_ORDER)
    for key, value in config.items():
        if not isinstance(key, str):
            raise FieldTypeError("scheduler", f"config keys must be str, got {key!r}")
        items = value if isinstance(value, (list, tuple)) else [value]
        if len(items) > MAX_CONFIG_LIST:
            raise FieldError(
                "scheduler", f"config {key!r} holds {len(items):,} values; at most {MAX_CONFIG_LIST:,}"
            )
        for v in items:
            _check_config_value(key, v)
    betas = config.get("trained_betas")
    if betas is not None and n is not None and len(betas) != n:
        raise FieldError(
            "scheduler",
            f"config trained_betas holds {len(betas):,} values for num_train_timesteps {n:,}; "
            "it needs one per training timestep",
        )


def _check_config_value(key: str, v) -> None:
    import math

    if isinstance(v, float) and math.isnan(v):  # (infinities are legitimate: lambda_min_clipped)
        raise FieldError("scheduler", f"config {key!r} must be a number, got {v!r}")
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_CONFIG_INT:
        raise FieldError(
            "scheduler", f"config {key!r} is {v:,}; whole numbers there are at most {MAX_CONFIG_INT:,}"
        )
    if isinstance(v, str) and len(v) > MAX_CONFIG_TEXT:
        raise FieldError("scheduler", f"config {key!r} is a string of {len(v):,} characters")


def _config_int(config: dict, key: str, low: int, high: int) -> int | None:
    value = config.get(key)
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
    ):
        raise FieldError("scheduler", f"config {key} must be an int in {low}..{high:,}, got {value!r}")
    return value


def build_scheduler(spec, base_config):
    """A fresh scheduler from a spec (see ``scheduler_spec``) on ``base_config``; ``None`` for ``None``.

    A name takes the pipeline's own config (``base_config``) with the name's settings on top; a
    ``{"class", "config"}`` spec takes its own config on top of ``base_config``.
    """
    import diffusers

    spec = scheduler_spec(spec)
    if spec is None:
        return None
    if isinstance(spec, str):
        cls_name, extra = SCHEDULERS[spec]
        return getattr(diffusers, cls_name).from_config(base_config, **extra)
    check_scheduler_class(spec["class"])
    cls = getattr(diffusers, spec["class"])
    # Private keys (``_use_default_values`` above all) would make diffusers reset the listed fields.
    config = {k: v for k, v in {**dict(base_config), **spec["config"]}.items() if not k.startswith("_")}
    check_scheduler_config(config)
    try:
        return cls.from_config(config)
    except MemoryError:
        raise
    except Exception as err:  # a config the class cannot take: one line naming it, not its traceback
        raise FieldError(
            "scheduler", f"{spec['class']} cannot be built from this config ({type(err).__name__}: {err})"
        ) from None


def jsonable(d: dict) -> dict:
    """A config dict with every value JSON-ready (scalars and lists kept, anything else as text)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (str, int, float, bool)) or x is None else str(x) for x in v]
        else:
            out[k] = str(v)
    return out


def x0_from_output(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
    """Predicted clean sample for schedulers whose ``step`` does not return it.

    Uses the scheduler's own noise level at this step: ``sample = alpha_t * x0 + sigma_t * eps``.
    """
    if type(scheduler).__name__.startswith("FlowMatch"):
        # Flow matching: sample = (1 - sigma) * x0 + sigma * noise and the model predicts v = noise - x0.
        sigma = _level(scheduler.sigmas[scheduler.step_index - 1], sample, sample.dtype)
        return sample - sigma * model_output
    if hasattr(scheduler, "_sigma_to_alpha_sigma_t") and getattr(scheduler, "step_index", None) is not None:
        # Called after ``step``: the index it used is one behind.
        sigma = _level(scheduler.sigmas[scheduler.step_index - 1], sample)
        alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigma)
    else:
        # a timestep on an accelerator is read on the host here; PNDM, which comes here, reads it there
        # itself in the same step
        acp = _level(scheduler.alphas_cumprod[int(timestep)], sample, torch.float32)
        alpha_t, sigma_t = acp.sqrt(), (1 - acp).sqrt()
    return x0_from_prediction(scheduler.config, sample, model_output, alpha_t, sigma_t)


def _level(value: torch.Tensor, sample: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A step's noise level (0-dim) ready to combine with ``sample``: one on the CPU stays there, where an
    accelerator's kernels take it as a number (copying it over would make the host wait every step)."""
    if value.device.type == "cpu" and value.dim() == 0:
        return value if dtype is None else value.to(dtype)
    return value.to(sample.device, dtype)


def x0_from_prediction(
    config, sample: torch.Tensor, model_output: torch.Tensor, alpha_t, sigma_t
) -> torch.Tensor:
    """x0 from a denoiser's output on a variance-preserving ``sample = alpha_t * x0 + sigma_t * eps``.

    ``config`` is the scheduler's config; its ``prediction_type`` says what the output is.
    """
    pred = config.get("prediction_type", "epsilon")
    if pred == "epsilon":
        return (sample - sigma_t * model_output) / alpha_t
    if pred == "v_prediction":
        return alpha_t * sample - sigma_t * model_output
    if pred == "sample":
        return model_output
    if (
        pred == "flow_prediction"
    ):  # flow sigmas (Sana's DPM-Solver): sample = (1 - σ) x0 + σ noise, v = noise - x0
        return sample - sigma_t * model_output
    raise ValueError(f"cannot derive x0 for prediction_type {pred!r}")
