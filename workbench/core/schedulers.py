"""Scheduler names a user can pass, and x0 for schedulers that do not report it."""

from __future__ import annotations

import torch

SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name_or_scheduler, base_config):
    """A scheduler from a short name (see ``SCHEDULERS``) or a scheduler instance, on ``base_config``."""
    import diffusers

    if not isinstance(name_or_scheduler, str):
        if not hasattr(name_or_scheduler, "step") or not hasattr(name_or_scheduler, "set_timesteps"):
            raise TypeError(
                f"scheduler must be a name or a diffusers scheduler, got {type(name_or_scheduler).__name__}"
            )
        return name_or_scheduler
    key = name_or_scheduler.lower()
    if key not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name_or_scheduler!r}; choose one of {sorted(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[key]
    return getattr(diffusers, cls_name).from_config(base_config, **extra)


def x0_from_output(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
    """Predicted clean sample for schedulers whose ``step`` does not return it.

    Uses the scheduler's own noise level at this step: ``sample = alpha_t * x0 + sigma_t * eps``.
    """
    cfg = scheduler.config
    if hasattr(scheduler, "_sigma_to_alpha_sigma_t") and getattr(scheduler, "step_index", None) is not None:
        # Called after ``step``: the index it used is one behind.
        sigma = scheduler.sigmas[scheduler.step_index - 1].to(sample.device)
        alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigma)
    else:
        acp = scheduler.alphas_cumprod[int(timestep)].to(sample.device, torch.float32)
        alpha_t, sigma_t = acp.sqrt(), (1 - acp).sqrt()
    pred = cfg.get("prediction_type", "epsilon")
    if pred == "epsilon":
        return (sample - sigma_t * model_output) / alpha_t
    if pred == "v_prediction":
        return alpha_t * sample - sigma_t * model_output
    if pred == "sample":
        return model_output
    raise ValueError(f"cannot derive x0 for prediction_type {pred!r}")
