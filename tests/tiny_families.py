"""Tiny random-weight SDXL, SD3(.5) and FLUX.1 pipelines, built from configs and saved the real way.

Each builder saves a complete diffusers pipeline folder (``model_index.json`` plus one sub-folder per
component) that ``DiffusionPipeline.from_pretrained(folder)`` loads offline. The shapes follow the real
models' configs (two CLIP encoders joined on the feature axis for SDXL, CLIP padded to the T5 width for
SD3, pooled CLIP + T5 for Flux, 16-channel VAEs with shift/scaling factors) at a size that runs a
denoising step on one CPU core in a few milliseconds.

The VAEs have two levels, so ``vae_scale_factor`` is 2 (the real models have 8). Image sizes:

- SDXL: height and width multiples of 8 (``check_inputs`` raises otherwise); default 64 x 64
  (``unet.config.sample_size * vae_scale_factor``); 64 x 96 gives latents 32 x 48 and attention at
  16 x 24 and 8 x 12; the smallest non-square size is 8 x 16.
- SD3: multiples of ``vae_scale_factor * patch_size`` = 4 (raises otherwise); default 32 x 32
  (``transformer.config.sample_size * vae_scale_factor``); 32 x 48 gives 8 x 12 image tokens; the
  smallest non-square size is 4 x 8; latents up to 64 x 64 fit ``pos_embed_max_size``.
- Flux: multiples of ``vae_scale_factor * 2`` = 4 (other sizes are rounded down, with a warning);
  default 256 x 256 (the pipeline's fixed ``default_sample_size = 128`` times ``vae_scale_factor``);
  32 x 48 gives 8 x 12 packed image tokens; the smallest non-square size is 4 x 8.

SD3 and Flux pad T5 to the call's ``max_sequence_length`` (defaults 256 and 512), not to the tokenizer's
``model_max_length``: pass ``max_sequence_length=T5_MAX_LENGTH`` for short runs.

Example:
    folder = build_flux_folder(tmp_path)
    pipe = DiffusionPipeline.from_pretrained(folder)
    images = run_stock(pipe, "a red circle", height=32, width=48, max_sequence_length=T5_MAX_LENGTH)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch
from tiny import CORPUS, build_tokenizer

CLIP_MAX_LENGTH = 16  # tokenizer.model_max_length of every CLIP tokenizer (real models: 77)
T5_MAX_LENGTH = 32  # tokenizer model_max_length; the pipelines pad T5 to `max_sequence_length` instead
CLIP_L_HIDDEN = 32  # stands in for CLIP ViT-L/14's 768
CLIP_G_HIDDEN = 48  # stands in for OpenCLIP ViT-bigG/14's 1280
T5_HIDDEN = 96  # stands in for T5-XXL's 4096; SD3 needs it >= CLIP_L_HIDDEN + CLIP_G_HIDDEN

# Random weights give logits near zero, so every attention map would be close to uniform. The map
# right before the dot product is scaled on queries and keys alike, so logits grow by the factor
# squared. Plain projections (SDXL's UNet): x8 where the keys come from the text (attn2; CLIP states are
# small), x4 in self-attention (x8 there makes each query put ~90% on one key). Where an RMS q/k norm
# follows the projection (SD3, Flux) a scaled projection would be normalized away, so the norm's weight
# is scaled instead. On the suggested sizes this gives a mean normalized entropy of about 0.65 (SDXL
# cross), 0.35 (SDXL self), 0.55 (SD3 joint) and 0.45 (Flux joint), against 0.9-1.0 unscaled.
CROSS_QK_SCALE = 8.0
SELF_QK_SCALE = 4.0
NORM_QK_SCALE = 2.0


def build_sdxl_folder(root: Path) -> Path:
    """Save a tiny StableDiffusionXLPipeline (random weights, fixed seeds) under ``root / "sdxl"``.

    UNet: three levels as in SDXL base (DownBlock2D, then two cross-attention levels with 4 and 8 heads of
    8 channels and transformer depth 1 and 2; the mid block as the last level), ``text_time`` added
    conditioning from the pooled CLIP-G projection and the six size/crop numbers. Text: CLIP-L
    (``CLIPTextModel``) + CLIP-G (``CLIPTextModelWithProjection``); the context is both penultimate
    layers joined on the feature axis (``CLIP_L_HIDDEN + CLIP_G_HIDDEN`` features, ``CLIP_MAX_LENGTH``
    positions), and ``tokenizer_2`` pads with ``"!"`` like SDXL's CLIP-G tokenizer.

    Returns:
        The pipeline folder.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tok_l, tok_g = _clip_tokenizers(root / "_sdxl_tokenizers")
    time_embed_dim = 8  # SDXL: 256 per size/crop number, six numbers
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 8),  # diffusers reads this as the number of heads per level
        use_linear_projection=True,
        cross_attention_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        # pooled CLIP-G projection + (original size, crop top-left, target size) embedded
        projection_class_embeddings_input_dim=CLIP_G_HIDDEN + 6 * time_embed_dim,
        norm_num_groups=8,
    )
    _sharpen_attention(unet)
    vae = _vae(latent_channels=4, scaling_factor=0.13025, shift_factor=None, quant_conv=True, seed=1)
    text_l = _clip_text(tok_l, hidden=CLIP_L_HIDDEN, projection=False, act="quick_gelu", seed=2)
    text_g = _clip_text(tok_g, hidden=CLIP_G_HIDDEN, projection=True, act="gelu", seed=3)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_l,
        text_encoder_2=text_g,
        tokenizer=tok_l,
        tokenizer_2=tok_g,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    return _save(pipe, root / "sdxl")


def build_sd3_folder(root: Path) -> Path:
    """Save a tiny StableDiffusion3Pipeline (SD3.5-style, random weights, fixed seeds) under ``root / "sd3"``.

    Transformer: 3 joint blocks of 2 heads x 16 channels, patch 2, ``qk_norm="rms_norm"``; block 0 also
    has SD3.5's image-only ``attn2``; the last block is ``context_pre_only``. Text: CLIP-L and CLIP-G
    (both ``CLIPTextModelWithProjection``) joined on the feature axis and zero-padded to the T5 width,
    then the T5 positions appended: ``CLIP_MAX_LENGTH + max_sequence_length`` context tokens in all.

    Returns:
        The pipeline folder.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tok_l, tok_g = _clip_tokenizers(root / "_sd3_tokenizers")
    tok_t5 = _t5_tokenizer(root / "_sd3_tokenizers" / "t5")
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_HIDDEN,
        caption_projection_dim=32,  # = heads * head dim, as in SD3
        pooled_projection_dim=CLIP_L_HIDDEN + CLIP_G_HIDDEN,
        pos_embed_max_size=32,  # latents up to 64 x 64 (images up to 128 x 128)
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    _sharpen_attention(transformer)
    vae = _vae(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, quant_conv=False, seed=1)
    text_l = _clip_text(tok_l, hidden=CLIP_L_HIDDEN, projection=True, act="quick_gelu", seed=2)
    text_g = _clip_text(tok_g, hidden=CLIP_G_HIDDEN, projection=True, act="gelu", seed=3)
    text_t5 = _t5_encoder(tok_t5, seed=4)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=text_l,
        tokenizer=tok_l,
        text_encoder_2=text_g,
        tokenizer_2=tok_g,
        text_encoder_3=text_t5,
        tokenizer_3=tok_t5,
    )
    return _save(pipe, root / "sd3")


def build_flux_folder(root: Path) -> Path:
    """Save a tiny FluxPipeline (FLUX.1-dev-like, random weights, fixed seeds) under ``root / "flux"``.

    Transformer: 1 dual-stream and 2 single-stream blocks of 2 heads x 16 channels, rotary axes
    (4, 6, 6), embedded guidance (``guidance_embeds=True``). Text: pooled CLIP-L and T5 states
    (``max_sequence_length`` positions). VAE: 16 latent channels, Flux's shift and scaling factors;
    latents are packed 2 x 2 into 64 channels. Scheduler: FLUX.1-dev's dynamic shifting.

    Returns:
        The pipeline folder.
    """
    from diffusers import FluxPipeline, FluxTransformer2DModel

    tok_l, _ = _clip_tokenizers(root / "_flux_tokenizers")
    tok_t5 = _t5_tokenizer(root / "_flux_tokenizers" / "t5")
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels packed 2 x 2
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_HIDDEN,
        pooled_projection_dim=CLIP_L_HIDDEN,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
    )
    _sharpen_attention(transformer)
    vae = _vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False, seed=1)
    text_l = _clip_text(tok_l, hidden=CLIP_L_HIDDEN, projection=False, act="quick_gelu", seed=2)
    text_t5 = _t5_encoder(tok_t5, seed=4)
    scheduler = flux_scheduler()
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_l,
        tokenizer=tok_l,
        text_encoder_2=text_t5,
        tokenizer_2=tok_t5,
        transformer=transformer,
    )
    return _save(pipe, root / "flux")


def build_pixart_sigma_folder(root: Path) -> Path:
    """Save a tiny PixArtSigmaPipeline (random weights, fixed seeds) under ``root / "pixart-sigma"``.

    Transformer: 2 blocks of 2 heads x 16 channels, patch 2, ``ada_norm_single``, learned sigma (8 output
    channels for 4 latent ones), cross-attention ``attn2`` over T5 states (``caption_channels`` wide,
    padding masked). VAE: 4 latent channels, SD's scaling factor. Scheduler: DPM-Solver++ as PixArt-Σ.
    Sizes are multiples of 8 (``vae_scale_factor * patch_size`` = 4 on this VAE); 32 x 48 gives 8 x 12
    image tokens.
    """
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    tok = _t5_tokenizer(root / "_pixart_tokenizer")
    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=32,
        sample_size=16,
        patch_size=2,
        caption_channels=T5_HIDDEN,
        interpolation_scale=1,
        use_additional_conditions=False,
    )
    _sharpen_attention(transformer)
    vae = _vae(latent_channels=4, scaling_factor=0.13025, shift_factor=None, quant_conv=True, seed=1)
    text = _t5_encoder(tok, seed=4)
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02
    )
    pipe = PixArtSigmaPipeline(
        tokenizer=tok, text_encoder=text, vae=vae, transformer=transformer, scheduler=scheduler
    )
    return _save(pipe, root / "pixart-sigma")


def build_chroma_folder(root: Path) -> Path:
    """Save a tiny ChromaPipeline (Chroma1-HD-like, random weights, fixed seeds) under ``root / "chroma"``.

    Transformer: Flux.1's layout without CLIP or embedded guidance: 1 dual-stream and 2 single-stream
    blocks of 2 heads x 16 channels, rotary axes (4, 6, 6), a 2-layer distilled-guidance approximator.
    Text: T5 alone, padded to ``max_sequence_length`` with padding past the first pad masked (the
    pipeline's float mask). VAE and packing as Flux's; sizes multiples of 4 here.
    """
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    tok_t5 = _t5_tokenizer(root / "_chroma_tokenizers" / "t5")
    torch.manual_seed(0)
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_HIDDEN,
        axes_dims_rope=(4, 6, 6),
        approximator_num_channels=16,
        approximator_hidden_dim=32,
        approximator_layers=2,
    )
    _sharpen_attention(transformer)
    vae = _vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False, seed=1)
    scheduler = flux_scheduler()
    pipe = ChromaPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=_t5_encoder(tok_t5, seed=4),
        tokenizer=tok_t5,
        transformer=transformer,
    )
    return _save(pipe, root / "chroma")


def flux_scheduler():
    """FLUX.1-dev's flow-matching scheduler with dynamic shifting (Chroma's tiny builder uses it too)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def build_t5_tokenizer(folder: Path, max_length: int = T5_MAX_LENGTH) -> Path:
    """Save a T5-style Unigram tokenizer (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2) that T5TokenizerFast loads.

    The pieces are CORPUS's words (``"▁red"``, scored by log frequency) and its single characters (scored
    low), so known words are one token and unknown words split into characters, as sub-words.
    """
    from transformers import T5TokenizerFast

    words = Counter(word for line in CORPUS for word in line.split())
    total = sum(words.values())
    chars = sorted({c for line in CORPUS for c in line if not c.isspace()})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    vocab += [(f"▁{w}", math.log(n / total)) for w, n in sorted(words.items())]
    vocab += [(c, -10.0) for c in chars]
    tok = T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return folder


def _clip_tokenizers(folder: Path):
    """CLIP-L and CLIP-G tokenizers from one trained BPE; the second pads with "!" as SDXL's CLIP-G does."""
    from transformers import CLIPTokenizer

    src = build_tokenizer(folder, CLIP_MAX_LENGTH)
    _renumber_vocab(src)
    return CLIPTokenizer.from_pretrained(src), CLIPTokenizer.from_pretrained(src, pad_token="!")


def _renumber_vocab(folder: Path) -> None:
    """Rewrite ``vocab.json`` with ids that do not depend on the BPE trainer's order of ties.

    The trainer orders equally frequent pieces in hash order, which changes from build to build, while
    the set of pieces does not; ordering by (length, text) after the two special tokens gives a prompt
    the same ids, and so the same embedding rows, in every build.
    """
    path = folder / "vocab.json"
    vocab = json.loads(path.read_text())
    special = ["<|startoftext|>", "<|endoftext|>"]
    rest = sorted((token for token in vocab if token not in special), key=lambda token: (len(token), token))
    path.write_text(json.dumps({token: i for i, token in enumerate(special + rest)}))


def _t5_tokenizer(folder: Path):
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(build_t5_tokenizer(folder))


def _clip_text(tok, *, hidden: int, projection: bool, act: str, seed: int):
    """A 2-layer CLIP text encoder with heads of 16 channels; ``projection`` adds the pooled projection."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        projection_dim=hidden,
        num_hidden_layers=2,
        num_attention_heads=hidden // 16,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act=act,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _t5_encoder(tok, *, seed: int):
    """A 2-layer T5 v1.1-style encoder (gated GELU) of width ``T5_HIDDEN``."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tok),
        d_model=T5_HIDDEN,
        d_kv=16,
        d_ff=2 * T5_HIDDEN,
        num_layers=2,
        num_heads=T5_HIDDEN // 16,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(config)


def _vae(
    *, latent_channels: int, scaling_factor: float, shift_factor: float | None, quant_conv: bool, seed: int
):
    """A two-level AutoencoderKL (vae_scale_factor 2) with the family's latent channels and factors."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=quant_conv,
        use_post_quant_conv=quant_conv,
    )


@torch.no_grad()
def _sharpen_attention(model: torch.nn.Module) -> None:
    """Scale the query and key maps of every attention module of ``model`` (see CROSS_QK_SCALE)."""
    pairs = (
        ("to_q", "norm_q"),
        ("to_k", "norm_k"),
        ("add_q_proj", "norm_added_q"),
        ("add_k_proj", "norm_added_k"),
    )
    for module in model.modules():
        proj_scale = CROSS_QK_SCALE if getattr(module, "is_cross_attention", False) else SELF_QK_SCALE
        for proj_name, norm_name in pairs:
            proj = getattr(module, proj_name, None)
            if not isinstance(proj, torch.nn.Linear):
                continue
            norm = getattr(module, norm_name, None)
            if getattr(norm, "weight", None) is not None:
                norm.weight.mul_(NORM_QK_SCALE)
            else:
                proj.weight.mul_(proj_scale)
                if proj.bias is not None:
                    proj.bias.mul_(proj_scale)


def _save(pipe, folder: Path) -> Path:
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def run_stock(pipe, prompt, *, height: int, width: int, steps: int = 2, seed: int = 0, **kw):
    """Call the pipeline as a user would, with a seeded CPU generator; return the images (N, H, W, 3) float.

    Extra keywords go to the pipeline unchanged (``guidance_scale``, ``negative_prompt``,
    ``max_sequence_length``, ``true_cfg_scale``, ``callback_on_step_end``, ...).
    """
    generator = torch.Generator().manual_seed(seed)
    out = pipe(
        prompt,
        height=height,
        width=width,
        num_inference_steps=steps,
        generator=generator,
        output_type="np",
        **kw,
    )
    return out.images
