"""SDXL-, SD3- and Flux-architecture pipelines with random weights, for benchmarks (nothing is downloaded).

Widths, head counts and text lengths are the published models'; depth is reduced so that a few steps
fit two CPU cores, and each builder's docstring says what was reduced.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _tokenizers(root: Path, t5: bool = False):
    from tiny import build_tokenizer
    from tiny_families import _renumber_vocab, build_t5_tokenizer
    from transformers import CLIPTokenizer, T5TokenizerFast

    src = build_tokenizer(root / "clip", max_length=77)
    _renumber_vocab(src)
    clip_l, clip_g = CLIPTokenizer.from_pretrained(src), CLIPTokenizer.from_pretrained(src, pad_token="!")
    t5_tok = T5TokenizerFast.from_pretrained(build_t5_tokenizer(root / "t5", max_length=512)) if t5 else None
    return clip_l, clip_g, t5_tok


def _clip(tok, hidden: int, heads: int, ffn: int, *, projection: int | None, layers: int = 2):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        projection_dim=projection or hidden,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _t5():
    """T5-XXL's width (4096 features, 64 heads, gated-GELU 10240) with one layer instead of 24."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=32128,
        d_model=4096,
        d_ff=10240,
        d_kv=64,
        num_heads=64,
        num_layers=1,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _vae(latent_channels: int, scaling: float, shift: float | None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        layers_per_block=2,
        scaling_factor=scaling,
        shift_factor=shift,
        use_quant_conv=shift is None,
        use_post_quant_conv=shift is None,
    )


def sdxl(root: Path) -> Path:
    """SDXL base: UNet widths (320, 640, 1280), heads of 64 channels, 2048-feature context, text_time
    conditioning. Reduced: transformer depth (1, 2, 2) instead of (1, 2, 10); CLIP-L and CLIP-G 2 layers
    each instead of 12 and 32."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tok_l, tok_g, _ = _tokenizers(root / "tok")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 2),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        layers_per_block=2,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(4, 0.13025, None),
        text_encoder=_clip(tok_l, 768, 12, 3072, projection=None),
        text_encoder_2=_clip(tok_g, 1280, 20, 5120, projection=1280),
        tokenizer=tok_l,
        tokenizer_2=tok_g,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="leading",
            steps_offset=1,
        ),
        add_watermarker=False,
    )
    pipe.save_pretrained(root / "sdxl", safe_serialization=True)
    return root / "sdxl"


def sd3(root: Path) -> Path:
    """SD3 medium: joint transformer of 1536 features (24 heads of 64), patch 2, 4096-feature text
    context of 77 CLIP + 256 T5 positions. Reduced: 4 blocks instead of 24; CLIP-L/G 2 layers each; T5 1
    layer of T5-XXL's width instead of 24."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tok_l, tok_g, tok_t5 = _tokenizers(root / "tok", t5=True)
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        num_layers=4,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=192,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(16, 1.5305, 0.0609),
        text_encoder=_clip(tok_l, 768, 12, 3072, projection=768),
        tokenizer=tok_l,
        text_encoder_2=_clip(tok_g, 1280, 20, 5120, projection=1280),
        tokenizer_2=tok_g,
        text_encoder_3=_t5(),
        tokenizer_3=tok_t5,
    )
    pipe.save_pretrained(root / "sd3", safe_serialization=True)
    return root / "sd3"


def flux(root: Path) -> Path:
    """FLUX.1-dev: 3072 features (24 heads of 128), rotary axes (16, 56, 56), embedded guidance, T5
    context of 512 positions. Reduced: 1 dual-stream and 2 single-stream blocks instead of 19 and 38; CLIP-L
    2 layers; T5 1 layer of T5-XXL's width instead of 24."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tok_l, _, tok_t5 = _tokenizers(root / "tok", t5=True)
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        ),
        vae=_vae(16, 0.3611, 0.1159),
        text_encoder=_clip(tok_l, 768, 12, 3072, projection=None),
        tokenizer=tok_l,
        text_encoder_2=_t5(),
        tokenizer_2=tok_t5,
        transformer=transformer,
    )
    pipe.save_pretrained(root / "flux", safe_serialization=True)
    return root / "flux"
