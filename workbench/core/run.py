"""The record of one generation: its full configuration and everything observed at every step."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from PIL import Image

from .attention import AttentionStore

SCHEMA_VERSION = 1


@dataclass
class RunConfig:
    """Everything needed to say what a run was and to run it again."""

    prompt: str
    seed: int
    steps: int
    guidance_scale: float
    height: int
    width: int
    negative_prompt: str | None = None
    scheduler: str = ""  # scheduler class name
    scheduler_config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)  # source, pipeline class, weights hash
    dtype: str = "float32"
    device: str = "cpu"
    versions: dict = field(default_factory=dict)  # torch, diffusers, transformers, workbench
    policy: dict = field(default_factory=dict)
    batch: dict | None = None  # for runs made together by generate_batch: size, prompts, seeds


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
        complete: False when the run stopped early (Ctrl-C or cancel); the steps done are kept.
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

    @property
    def steps_done(self) -> int:
        return int(self.x0.shape[0])

    @property
    def prompt(self) -> str:
        return self.config.prompt

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def words(self) -> list[str]:
        """The in-context words of the prompt, in order."""
        w = self.tokens[self.tokens.kind == "word"].drop_duplicates("word_index")
        return w.word.tolist()

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"incomplete ({self.steps_done}/{self.config.steps} steps)"
        return (
            f"Run(prompt={self.config.prompt!r}, seed={self.config.seed}, steps={self.config.steps}, "
            f"guidance={self.config.guidance_scale}, {self.config.width}x{self.config.height}, "
            f"{self.config.scheduler}, {state}, attention={self.attention.nbytes() / 1024**2:.1f} MB)"
        )
