"""Scheduler names a user can pass, and x0 for schedulers that do not report it."""

from __future__ import annotations

import torch

from workbench.names import SCHEDULERS  # the names live in a torch-free module for the CLI


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
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {sorted(SCHEDULERS)}")
        return key
    if isinstance(scheduler, dict):
        if set(scheduler) != {"class", "config"} or not isinstance(scheduler["class"], str):
            raise ValueError(
                "a scheduler spec dict must be {'class': '<diffusers scheduler class>', 'config': {...}}, "
                f"got keys {sorted(scheduler)}"
            )
        if not isinstance(scheduler["config"], dict):
            raise TypeError(
                f"scheduler spec 'config' must be a dict, got {type(scheduler['config']).__name__}"
            )
        return {"class": scheduler["class"], "config": jsonable(scheduler["config"])}
    if hasattr(scheduler, "step") and hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "config"):
        return {"class": type(scheduler).__name__, "config": jsonable(dict(scheduler.config))}
    raise TypeError(
        f"scheduler must be a name, a diffusers scheduler or a spec dict, got {type(scheduler).__name__}"
    )


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
    cls = getattr(diffusers, spec["class"], None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ValueError(
            f"scheduler class {spec['class']!r} is not in this diffusers ({diffusers.__version__})"
        )
    # Private keys (``_use_default_values`` above all) would make diffusers reset the listed fields.
    config = {k: v for k, v in {**dict(base_config), **spec["config"]}.items() if not k.startswith("_")}
    return cls.from_config(config)


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
        sigma = scheduler.sigmas[scheduler.step_index - 1].to(sample.device, sample.dtype)
        return sample - sigma * model_output
    if hasattr(scheduler, "_sigma_to_alpha_sigma_t") and getattr(scheduler, "step_index", None) is not None:
        # Called after ``step``: the index it used is one behind.
        sigma = scheduler.sigmas[scheduler.step_index - 1].to(sample.device)
        alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigma)
    else:
        acp = scheduler.alphas_cumprod[int(timestep)].to(sample.device, torch.float32)
        alpha_t, sigma_t = acp.sqrt(), (1 - acp).sqrt()
    return x0_from_prediction(scheduler.config, sample, model_output, alpha_t, sigma_t)


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
    raise ValueError(f"cannot derive x0 for prediction_type {pred!r}")
