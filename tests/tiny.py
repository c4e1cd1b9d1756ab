"""Tiny random-weight Stable Diffusion components, built from configs and saved the real way."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CORPUS = [
    "a red circle left of a blue square",
    "a yellow triangle below a green circle",
    "a painting of a horse",
    "a horse of a painting",
    "a sketch of a yellow square above a blue triangle",
    "the quick brown fox jumps over the lazy dog",
    "an astronaut riding a horse on the moon",
]


def build_tokenizer(folder: Path, max_length: int = 16) -> Path:
    """Train a small CLIP-style BPE (``</w>`` word ends) on a fixed corpus; save vocab.json + merges.txt."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=120,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.model.save(str(folder))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": max_length, "tokenizer_class": "CLIPTokenizer"})
    )
    return folder


def build_pipeline_folder(root: Path, *, max_length: int = 16, scheduler: str = "ddim") -> Path:
    """Save a tiny StableDiffusionPipeline (random weights, fixed seeds) to ``root``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        PNDMScheduler,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(build_tokenizer(root / "_tokenizer_src", max_length))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    torch.manual_seed(1)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    torch.manual_seed(2)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=max_length,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    sched_cls = {"ddim": DDIMScheduler, "pndm": PNDMScheduler}[scheduler]
    sched = sched_cls(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    )
    return save_pipeline(root / "pipe", vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched)


def save_pipeline(folder: Path, **components) -> Path:
    """Assemble a StableDiffusionPipeline without safety checker and save it in diffusers' layout."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
