"""Names a user can type: scheduler short names and named models.

A leaf module (standard library only), so the command line can build its options and help without
importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PROMPT = "a red circle left of a blue square"  # the one default prompt: CLI, apps, study

# short name -> (diffusers scheduler class, settings on top of the pipeline's own scheduler config)
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

# model name -> (diffusers folder, what to do when its weights are missing)
NAMED_MODELS: dict[str, tuple[Path, str]] = {}


def register_model(name: str, folder: str | os.PathLike, *, missing_hint: str = "") -> None:
    """Make ``load_pipeline(name)`` load the diffusers folder ``folder`` (e.g. ``"toy"``, the embedded model)."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"a model name must be a non-empty str without '/', got {name!r}")
    NAMED_MODELS[name] = (Path(folder), missing_hint)
