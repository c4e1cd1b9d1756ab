"""Model adapters: what the recorder needs to know about one family of pipelines.

Stable Diffusion 1.x/2.x (a UNet2DConditionModel with one CLIP text encoder) is the first family.
SDXL (two text encoders) and joint-attention transformers (SD3, Flux) fit behind the same interface.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

from diffusers.utils.torch_utils import randn_tensor

from .layers import CrossAttentionLayer, cross_attention_layers

_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class StableDiffusionAdapter:
    """Shapes and names of a Stable Diffusion 1.x/2.x pipeline."""

    pipe: object

    @property
    def denoiser(self):
        return self.pipe.unet

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @property
    def size_multiple(self) -> int:
        # The stock pipeline requires multiples of 8; the latent grid needs the VAE's factor.
        return math.lcm(8, self.vae_scale_factor)

    @property
    def default_size(self) -> int:
        return int(self.pipe.unet.config.sample_size) * self.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.unet.config.in_channels)

    @property
    def text_limit(self) -> int:
        return int(self.pipe.tokenizer.model_max_length)

    def latent_hw(self, height: int, width: int) -> tuple[int, int]:
        return height // self.vae_scale_factor, width // self.vae_scale_factor

    def draw_noise(self, batch: int, channels: int, height: int, width: int, dtype, device, generator):
        """The initial latent noise, drawn as the pipeline's ``prepare_latents`` draws it: (batch, C, h, w)."""
        shape = (batch, channels, *self.latent_hw(int(height), int(width)))
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    def layers(self) -> list[CrossAttentionLayer]:
        unet = self.pipe.unet
        if unet not in _LAYERS:  # a walk over every module: done once per denoiser
            _LAYERS[unet] = cross_attention_layers(unet)
        return _LAYERS[unet]

    def uses_guidance(self, guidance_scale: float) -> bool:
        return guidance_scale > 1 and self.pipe.unet.config.time_cond_proj_dim is None


def adapter_for(pipe) -> StableDiffusionAdapter:
    """The adapter for a pipeline, or a ``NotImplementedError`` naming what is supported."""
    name = type(pipe).__name__
    if name == "StableDiffusionPipeline":
        return StableDiffusionAdapter(pipe)
    raise NotImplementedError(f"{name} is not supported yet; supported: StableDiffusionPipeline (SD 1.x/2.x)")
