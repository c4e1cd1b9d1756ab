"""Build the toy model's stock diffusers/transformers components from a small config."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


@dataclass
class ModelConfig:
    """Sizes of the three networks. `tiny()` gives a seconds-fast smoke-test variant."""

    vae_channels: tuple[int, ...] = (16, 32, 64)  # three blocks: 32x32 -> 8x8 latents
    vae_groups: int = 16
    unet_channels: tuple[int, ...] = (64, 128)
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    unet_groups: int = 32
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    prediction_type: str = "v_prediction"

    @classmethod
    def tiny(cls) -> ModelConfig:
        return cls(
            vae_channels=(8, 16, 16),
            vae_groups=8,
            unet_channels=(16, 32),
            unet_heads=2,
            unet_groups=8,
            text_hidden=32,
            text_layers=1,
            text_heads=2,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def build_vae(cfg: ModelConfig) -> AutoencoderKL:
    """A small KL autoencoder: (B, 3, 32, 32) <-> (B, 4, 8, 8)."""
    return small_autoencoder(cfg.vae_channels, cfg.vae_groups)


def small_autoencoder(channels, groups: int, latent_channels: int = 4, **config) -> AutoencoderKL:
    """A KL autoencoder of 32×32 images with one block (and one layer) per entry of ``channels``: it
    halves the image once per block after the first. ``config``: more AutoencoderKL settings."""
    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=groups,
        sample_size=32,
        **config,
    )


def build_text_encoder(cfg: ModelConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A causal CLIP text transformer over the toy vocabulary."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=4 * cfg.text_hidden,
        projection_dim=cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet(cfg: ModelConfig) -> UNet2DConditionModel:
    """A small text-conditioned UNet on 4x8x8 latents; cross-attention at 8x8 and 4x4."""
    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads,  # diffusers reads this as the number of heads here
        norm_num_groups=cfg.unet_groups,
    )


_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def build_train_scheduler(cfg: ModelConfig) -> DDPMScheduler:
    """The noise schedule used for training."""
    return DDPMScheduler(**_SCHEDULE, prediction_type=cfg.prediction_type)


def build_sample_scheduler(cfg: ModelConfig) -> DDIMScheduler:
    """The scheduler shipped with the pipeline (same schedule; DDIM returns x0 at every step)."""
    return DDIMScheduler(
        **_SCHEDULE,
        prediction_type=cfg.prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="trailing",
    )
