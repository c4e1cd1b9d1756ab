"""The denoiser at one recorded step of a run, as a function of the prompt embeddings -> predicted x0.

For analyses that need fresh model calls (Integrated Gradients, occlusion): the run's recorded latent
at that step, the run's scheduler rebuilt from its config, the run's guidance, the pipeline's own text
encoding.
"""

from __future__ import annotations

import torch

from .adapters import adapter_for
from .run import Run
from .schedulers import build_scheduler, x0_from_prediction


def token_ids(pipe, prompt: str) -> torch.Tensor:
    """(1, T) ids exactly as the pipeline tokenizes the prompt (padded to the context length)."""
    tok = pipe.tokenizer
    return tok(
        prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode(pipe, prompt: str | None = None, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Prompt embeddings as ``encode_prompt`` makes them (no clip skip): (1, T, D)."""
    if ids is None:
        ids = token_ids(pipe, prompt or "")
    mask = None
    if getattr(pipe.text_encoder.config, "use_attention_mask", False):
        mask = (ids != pipe.tokenizer.pad_token_id).long().to(pipe.device)
    with torch.no_grad():
        return pipe.text_encoder(ids.to(pipe.device), attention_mask=mask)[0].to(
            adapter_for(pipe).denoiser.dtype
        )


class StepModel:
    """The denoiser at one recorded step of a run: ``x0(embeds)`` maps (B, T, D) -> (B, C, h, w)."""

    def __init__(self, pipe, run: Run, step: int):
        n = run.steps_done
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < n:
            raise ValueError(f"step must be an int in 0..{n - 1} (the run's completed steps), got {step!r}")
        adapter = adapter_for(pipe)
        self.pipe, self.run, self.step, self.denoiser = pipe, run, step, adapter.denoiser
        sched = build_scheduler(run.config.scheduler_spec(), pipe.scheduler.config)
        sched.set_timesteps(run.config.steps, device=pipe.device)
        t = sched.timesteps[step]
        if not torch.isclose(t.double(), run.timesteps[step].double(), atol=1e-3):
            raise ValueError(
                f"the scheduler rebuilt from the run's config gives timestep {float(t)} at step {step}, "
                f"the run recorded {float(run.timesteps[step])}"
            )
        self.t = t
        latent = run.latents[step][None].to(pipe.device, self.denoiser.dtype)  # (1, C, h, w)
        if float(sched.init_noise_sigma) > 1.0:  # sigma-parameterized (Euler, LMS, ...): x = x0 + sigma * eps
            sigma = sched.sigmas[step].to(torch.float64)
            alpha = float(1 / (sigma**2 + 1))
            self.scaled = latent * alpha**0.5  # what scale_model_input gives the denoiser
        else:
            alpha = float(sched.alphas_cumprod[int(t)])
            self.scaled = latent
        self.alpha_t, self.sigma_t = alpha**0.5, (1 - alpha) ** 0.5
        self.config = sched.config
        self.guidance = float(run.config.guidance_scale)
        self.guided = adapter.uses_guidance(self.guidance)
        self.uncond = None
        if self.guided:
            neg = encode(pipe, run.config.negative_prompt or "")  # (1, T, D)
            with torch.no_grad():
                self.uncond = self._denoise(neg)  # (1, C, h, w)

    def _denoise(self, embeds: torch.Tensor) -> torch.Tensor:
        x = self.scaled.expand(embeds.shape[0], -1, -1, -1)  # (B, C, h, w)
        return self.denoiser(x, self.t, encoder_hidden_states=embeds, return_dict=False)[0]  # (B, C, h, w)

    def x0(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, T, D) prompt embeddings -> (B, C, h, w) predicted clean latent at this step."""
        out = self._denoise(embeds)  # (B, C, h, w)
        if self.guided:
            out = self.uncond + self.guidance * (out - self.uncond)
        return x0_from_prediction(self.config, self.scaled, out, self.alpha_t, self.sigma_t)
