"""Build the toy-dit model's stock diffusers/transformers components from a small config.

The toy-dit model is the toy world (``workbench.toy.world``) as a tiny Flux.1-architecture model: a
``FluxTransformer2DModel`` with dual-stream and single-stream blocks, a pooled CLIP text encoder
(``pooled_projections``), a T5 encoder whose sequence joins the image tokens in joint attention, a
one-downsampling ``AutoencoderKL`` (32x32x3 <-> 4x16x16, packed 2x2 into 8x8 tokens of 16 channels)
and a ``FlowMatchEulerDiscreteScheduler``. The CLIP side reuses the toy model's BPE tokenizer; the T5
side gets a Unigram tokenizer in which every world word is one token.

Example:
    cfg = DitConfig()
    t5_tokenizer = T5TokenizerFast.from_pretrained(save_t5_tokenizer(folder, cfg.t5_length))
    transformer = build_transformer(cfg)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from transformers import CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

from ..models import ModelConfig, build_text_encoder, small_autoencoder
from ..world import all_words, caption_corpus

T5_CORPUS_SIZE = 4000  # captions whose word counts score the Unigram pieces


@dataclass
class DitConfig:
    """Sizes of the toy-dit networks. ``tiny()`` gives a seconds-fast smoke-test variant.

    ``t5_length`` is the T5 sequence length the model is trained at (the pipeline's
    ``max_sequence_length``): T5 runs without an attention mask in FluxPipeline, so padding is part of
    what the transformer sees and generation should pass the same length.
    """

    vae_channels: tuple[int, ...] = (32, 64)  # one downsampling: 32x32 -> 16x16 latents
    vae_groups: int = 16
    latent_channels: int = 4  # packed 2x2 -> 16 channels per image token
    clip_hidden: int = 128
    clip_layers: int = 2
    clip_heads: int = 4
    t5_hidden: int = 128
    t5_layers: int = 3
    t5_heads: int = 4
    t5_length: int = 24  # longest caption: 13 words + </s>
    dit_heads: int = 4
    dit_head_dim: int = 32
    dit_rope_axes: tuple[int, int, int] = (8, 12, 12)  # sums to dit_head_dim
    dit_layers: int = 2  # dual-stream blocks
    dit_single_layers: int = 4  # single-stream blocks
    sample_shift: float = 1.0  # the sampling scheduler's sigma shift

    @classmethod
    def tiny(cls) -> DitConfig:
        return cls(
            vae_channels=(8, 16),
            vae_groups=8,
            clip_hidden=32,
            clip_layers=1,
            clip_heads=2,
            t5_hidden=32,
            t5_layers=1,
            t5_heads=2,
            dit_heads=2,
            dit_head_dim=16,
            dit_rope_axes=(4, 6, 6),
            dit_layers=2,
            dit_single_layers=2,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def build_vae(cfg: DitConfig) -> AutoencoderKL:
    """A small KL autoencoder with one downsampling: (B, 3, 32, 32) <-> (B, 4, 16, 16).

    ``shift_factor`` is 0 (FluxPipeline adds it when decoding); the scaling factor is measured after
    training (``workbench.toy.train.train_vae``).
    """
    return small_autoencoder(cfg.vae_channels, cfg.vae_groups, cfg.latent_channels, shift_factor=0.0)


def build_clip(cfg: DitConfig, tokenizer: CLIPTokenizer):
    """The CLIP text encoder whose pooled output feeds ``pooled_projections`` (the toy model's builder)."""
    sizes = ModelConfig(text_hidden=cfg.clip_hidden, text_layers=cfg.clip_layers, text_heads=cfg.clip_heads)
    return build_text_encoder(sizes, tokenizer)


def build_t5(cfg: DitConfig, tokenizer: T5TokenizerFast) -> T5EncoderModel:
    """A T5 v1.1-style encoder (gated GELU, relative position buckets, no dropout) over the word vocabulary."""
    if cfg.t5_hidden % cfg.t5_heads:
        raise ValueError(f"t5_hidden ({cfg.t5_hidden}) must be a multiple of t5_heads ({cfg.t5_heads})")
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=cfg.t5_hidden,
        d_kv=cfg.t5_hidden // cfg.t5_heads,
        d_ff=2 * cfg.t5_hidden,
        num_layers=cfg.t5_layers,
        num_heads=cfg.t5_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5EncoderModel(config)


def build_transformer(cfg: DitConfig) -> FluxTransformer2DModel:
    """The Flux transformer on 8x8 packed tokens (2x2 patches of the 16x16 latent); no embedded guidance."""
    if sum(cfg.dit_rope_axes) != cfg.dit_head_dim:
        raise ValueError(f"dit_rope_axes {cfg.dit_rope_axes} must sum to dit_head_dim ({cfg.dit_head_dim})")
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * cfg.latent_channels,
        num_layers=cfg.dit_layers,
        num_single_layers=cfg.dit_single_layers,
        attention_head_dim=cfg.dit_head_dim,
        num_attention_heads=cfg.dit_heads,
        joint_attention_dim=cfg.t5_hidden,
        pooled_projection_dim=cfg.clip_hidden,
        guidance_embeds=False,
        axes_dims_rope=cfg.dit_rope_axes,
    )


def build_scheduler(cfg: DitConfig) -> FlowMatchEulerDiscreteScheduler:
    """The sampling scheduler shipped with the pipeline: Euler on the rectified-flow ODE, fixed shift."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.sample_shift)


def t5_vocabulary(n_captions: int = T5_CORPUS_SIZE, seed: int = 0) -> list[tuple[str, float]]:
    """Unigram pieces: specials, every world word as one piece (scored by log frequency), single letters.

    Ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2 as in T5; letters (scored low) spell unknown words.
    """
    counts = Counter(w for line in caption_corpus(n_captions, seed=seed) for w in line.split())
    words = all_words()
    total = sum(counts[w] + 1 for w in words)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -8.0)]
    vocab += [(f"\u2581{w}", math.log((counts[w] + 1) / total)) for w in words]
    vocab += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return vocab


def save_t5_tokenizer(folder: str | Path, max_length: int) -> Path:
    """Write a ``T5TokenizerFast`` over the world's words into ``folder`` (``model_max_length`` = max_length)."""
    tok = T5TokenizerFast(vocab=t5_vocabulary(), extra_ids=0, model_max_length=max_length)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return folder
