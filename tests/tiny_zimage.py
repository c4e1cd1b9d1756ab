"""Tiny random-weight ZImagePipeline (Z-Image(-Turbo)-like), built from configs offline and saved the real way.

Components (real classes, tiny configs):
- transformer: ``ZImageTransformer2DModel``, dim 32 = 2 heads x 16, 1 ``noise_refiner`` block (image only),
  1 ``context_refiner`` block (text only), 2 main ``layers`` (single stream over [image | text]), patch 2,
  rotary axes (4, 6, 6) (real: dim 3840, 30 heads, 30 layers, 2 refiners, axes (32, 48, 48)).
- text_encoder: ``Qwen3Model`` (2 layers, width ``QWEN_HIDDEN``); the pipeline reads ``hidden_states[-2]``.
- tokenizer: ``Qwen2Tokenizer`` (byte-level BPE trained offline on the tiny corpus) with ``<|im_start|>``,
  ``<|im_end|>``, ``<|endoftext|>`` (pad) and a Qwen3-style chat template.
- vae: two-level ``AutoencoderKL`` (vae_scale_factor 2), 16 latent channels, Flux's scaling/shift factors
  (Z-Image uses the FLUX.1 VAE).
- scheduler: ``FlowMatchEulerDiscreteScheduler(shift=3.0)``, no dynamic shifting (as Z-Image-Turbo).

Sizes: height and width must be multiples of ``vae_scale_factor * 2`` = 4 (the pipeline raises otherwise);
32 x 48 gives latents 16 x 24 and 8 x 12 = 96 image tokens (already a multiple of 32: no image padding);
32 x 40 gives 80 image tokens + 16 ``x_pad_token`` positions.

Run: OMP_WAIT_POLICY=PASSIVE /work/main/.venv/bin/python /tmp/fam/z_image_tiny.py [folder]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny import CORPUS
from tiny_families import NORM_QK_SCALE, _save, _vae

QWEN_HIDDEN = 32  # stands in for Qwen3-4B's 2560 (= transformer cap_feat_dim)
QWEN_MAX_LENGTH = 64  # tokenizer model_max_length; the pipeline pads to `max_sequence_length` (default 512)

# Qwen3's chat template, reduced to the part ZImagePipeline uses: one user message, generation prompt, and
# the ``enable_thinking`` switch (the pipeline passes enable_thinking=True, which adds nothing).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_qwen_tokenizer(folder: Path, max_length: int = QWEN_MAX_LENGTH) -> Path:
    """Save a byte-level BPE ``Qwen2Tokenizer`` trained on CORPUS (+ the chat template's words)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=400,  # 256 byte symbols + merges
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text tokenizes
        show_progress=False,
    )
    bpe.train_from_iterator((CORPUS + ["user\nassistant\n"]) * 4, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in state["merges"]]
    # ids independent of the trainer's tie order: by (length, text), as tiny_families._renumber_vocab does
    pieces = sorted(state["vocab"], key=lambda p: (len(p), p))
    vocab = {p: i for i, p in enumerate(pieces)}
    for s in SPECIAL:
        vocab[s] = len(vocab)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=max_length,
        padding_side="right",
    )
    tok.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return folder


def _qwen3_encoder(tok, *, seed: int):
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=QWEN_HIDDEN,
        intermediate_size=2 * QWEN_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=512,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return Qwen3Model(config)


@torch.no_grad()
def sharpen_z_image(transformer) -> None:
    """Scale the RMS q/k norms' weights of every attention module (refiners and main layers) by NORM_QK_SCALE:
    the projections are followed by RMSNorm, so scaling them would be normalized away."""
    for module in transformer.modules():
        for name in ("norm_q", "norm_k"):
            norm = getattr(module, name, None)
            if getattr(norm, "weight", None) is not None and hasattr(module, "to_q"):
                norm.weight.mul_(NORM_QK_SCALE)


def build_z_image_folder(root: Path) -> Path:
    """Save a tiny ZImagePipeline (random weights, fixed seeds) under ``root / "z_image"``; return the folder."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen2Tokenizer

    root = Path(root)
    tok = Qwen2Tokenizer.from_pretrained(build_qwen_tokenizer(root / "_z_image_tokenizer"))
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=QWEN_HIDDEN,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[4, 6, 6],  # sums to the head dim 16
        axes_lens=[1024, 64, 64],  # text positions up to ~1000; latent grids up to 128 x 128
    )
    # Random init leaves the pad tokens at zero: give them values, as a trained model has.
    with torch.no_grad():
        transformer.x_pad_token.normal_()
        transformer.cap_pad_token.normal_()
    sharpen_z_image(transformer)
    vae = _vae(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False, seed=1)
    text = _qwen3_encoder(tok, seed=2)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False
    )
    pipe = ZImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text, tokenizer=tok, transformer=transformer
    )
    return _save(pipe, root / "z_image")
