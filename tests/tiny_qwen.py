"""A tiny random-weight Qwen-Image pipeline (``QwenImagePipeline``), built from configs and saved the real way.

``build_qwenimage_folder(root)`` saves a complete diffusers pipeline folder (``model_index.json`` plus
``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) that
``DiffusionPipeline.from_pretrained(folder)`` loads offline. Every component is the real class:

- transformer: ``QwenImageTransformer2DModel``, 2 dual-stream blocks of 2 heads x 16 channels, patch 2
  (``in_channels`` 64 = 16 latent channels packed 2 x 2), rotary axes (4, 6, 6) (real: (16, 56, 56) for
  head dim 128), ``joint_attention_dim`` = the text encoder's width, RMS q/k norms (image and text stream),
  no guidance embedding (as Qwen-Image);
- text encoder: ``Qwen2_5_VLForConditionalGeneration``, a 2-layer text model of width 32 (2 query heads,
  1 key/value head, multimodal rotary sections (2, 3, 3)), and a 1-block vision tower of width 16 with
  2 x 2 patches (never run: the pipeline passes text only);
- tokenizer: ``Qwen2Tokenizer`` (byte-level BPE with Qwen's pre-tokenizer regex) whose merges are learned
  here, deterministically, from the words of Qwen-Image's prompt template and ``tiny.CORPUS``, so every
  template word and corpus word is one token and unknown words split into sub-words / bytes (never an
  unknown token). Specials ``<|endoftext|>`` (pad, eos), ``<|im_start|>``, ``<|im_end|>``. The template's
  system prefix tokenizes to exactly 34 tokens, as with the real Qwen2.5-VL tokenizer, so the pipeline's
  hard-coded ``prompt_template_encode_start_idx = 34`` drops exactly that prefix (asserted below);
- VAE: ``AutoencoderKLQwenImage`` with two levels (``dim_mult`` (1, 2), one 2-D downsample, so
  ``vae_scale_factor`` = 2 ** len(temperal_downsample) = 2; real: 8), z_dim 16 and the real
  ``latents_mean`` / ``latents_std``;
- scheduler: ``FlowMatchEulerDiscreteScheduler`` with Qwen-Image's config (dynamic exponential shift,
  base/max shift 0.5/0.9 over 256..8192 tokens, shift_terminal 0.02).

Sizes: height and width should be multiples of ``vae_scale_factor * 2`` = 4 (others are rounded down,
with a warning); 32 x 48 gives latents 16 x 24 and 8 x 12 = 96 image tokens. The default size would be
``default_sample_size (128) * vae_scale_factor`` = 256 x 256 (too large for quick CPU runs: pass a size).
Text: a prompt of n tokens reaches the transformer as n + 5 key positions (the prompt, then the
template's ``<|im_end|>``, ``\\n``, ``<|im_start|>``, ``assistant``, ``\\n``); nothing is padded for a
single prompt.

The scheduler leaves out Qwen-Image's ``shift_terminal`` (0.02), with which a 1-step schedule's sigma is
NaN (stock behaviour), so that the family tests can run single steps.

Example:
    folder = build_qwenimage_folder(tmp_path)
    pipe = DiffusionPipeline.from_pretrained(folder)
    images = run_stock(pipe, "a red circle", height=32, width=48)
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch
from tiny import CORPUS
from tiny_families import _sharpen_attention
from tiny_sana import bytes_to_unicode

QWEN_HIDDEN = 32  # stands in for Qwen2.5-VL-7B's 3584 (the transformer's joint_attention_dim)
QWEN_VISION_HIDDEN = 16
TEMPLATE_DROP = 34  # QwenImagePipeline.prompt_template_encode_start_idx (the real tokenizer's count)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# QwenImagePipeline.prompt_template_encode (pipeline_qwenimage.py:175), copied so that the tokenizer can be
# trained on it before a pipeline exists; `_check_template` compares it with the pipeline's own.
TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)

# Qwen-Image's scheduler_config.json
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=0.9,
    base_image_seq_len=256,
    max_image_seq_len=8192,
    shift_terminal=None,  # Qwen-Image's 0.02 makes a 1-step schedule NaN (stock); the tests run 1 step
    time_shift_type="exponential",
    invert_sigmas=False,
    stochastic_sampling=False,
    use_karras_sigmas=False,
    use_exponential_sigmas=False,
    use_beta_sigmas=False,
)


def build_qwenimage_folder(root: Path) -> Path:
    """Save a tiny QwenImagePipeline (random weights, fixed seeds) under ``root / "qwenimage"``.

    Returns:
        The pipeline folder.
    """
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    root = Path(root)
    tok = build_qwen_tokenizer(root / "_qwenimage_tokenizer")
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,  # 16 latent channels packed 2 x 2
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=QWEN_HIDDEN,
        guidance_embeds=False,
        axes_dims_rope=(4, 6, 6),  # (frame, height, width) rotary channels; sums to attention_head_dim
    )
    _sharpen_attention(transformer)  # RMS q/k norms (norm_q/k, norm_added_q/k): their weights x2
    vae = _qwen_vae(seed=1)
    text_encoder = _qwen_text_encoder(tok, seed=2)
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        transformer=transformer,
    )
    _check_template(pipe)
    folder = root / "qwenimage"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# ---------------------------------------------------------------------------------------------- tokenizer


def _pre_tokenizer():
    """Qwen2Tokenizer's own pre-tokenizer: the Qwen regex split, then byte-level characters."""
    from tokenizers import Regex, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _learn_bpe(words: Counter) -> list[tuple[str, str]]:
    """Plain BPE training on byte-level words, with ties broken by the pair's text (deterministic);
    stops when every word is one token."""
    split = {w: list(w) for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter = Counter()
        for w, parts in split.items():
            for a, b in zip(parts, parts[1:]):
                pairs[(a, b)] += words[w]
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, parts in split.items():
            i, out = 0, []
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            split[w] = out


def build_qwen_tokenizer(folder: Path):
    """Save and return a byte-level BPE ``Qwen2Tokenizer`` trained on the prompt template and CORPUS.

    Ids: the 256 byte characters (in byte order), the merged pieces in merge order, then
    ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` (the real tokenizer also puts them after its BPE
    vocabulary). Padding with ``<|endoftext|>`` on the right.
    """
    from transformers import Qwen2Tokenizer

    pre = _pre_tokenizer()
    specials = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + ")")
    words: Counter = Counter()
    for line in [TEMPLATE.format(c) for c in CORPUS]:
        for part in specials.split(line):
            if part and part not in SPECIAL_TOKENS:
                words.update(piece for piece, _ in pre.pre_tokenize_str(part))
    merges = _learn_bpe(words)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode()[b] for b in range(256))}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for s in SPECIAL_TOKENS:
        vocab[s] = len(vocab)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=32768,
        padding_side="right",
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return Qwen2Tokenizer.from_pretrained(folder)


def _check_template(pipe) -> None:
    """The pipeline's template is the one the tokenizer learned, and its system prefix is
    ``prompt_template_encode_start_idx`` tokens long, so the drop lands exactly on the user prompt."""
    assert pipe.prompt_template_encode == TEMPLATE, "QwenImagePipeline's prompt template changed"
    prefix = TEMPLATE.split("{}")[0]
    n = len(pipe.tokenizer(prefix).input_ids)
    assert n == pipe.prompt_template_encode_start_idx == TEMPLATE_DROP, (
        n,
        pipe.prompt_template_encode_start_idx,
    )


# ---------------------------------------------------------------------------------------------- models


def _qwen_text_encoder(tok, *, seed: int):
    """Qwen2.5-VL with a 2-layer text model (GQA 2/1 heads of 16 channels, mrope sections (2, 3, 3))
    and a 1-block vision tower (never run by the pipeline)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=QWEN_HIDDEN,
            intermediate_size=2 * QWEN_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=2048,
            max_window_layers=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tok.pad_token_id,
            use_cache=False,
        ),
        vision_config=dict(
            depth=1,
            hidden_size=QWEN_VISION_HIDDEN,
            intermediate_size=2 * QWEN_VISION_HIDDEN,
            num_heads=2,
            patch_size=2,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=8,
            fullatt_block_indexes=[0],
            out_hidden_size=QWEN_HIDDEN,
        ),
        # vision placeholder ids: no such tokens in this vocabulary, so text never matches them
        image_token_id=len(tok) + 4,
        video_token_id=len(tok) + 5,
        vision_start_token_id=len(tok) + 6,
        vision_end_token_id=len(tok) + 7,
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _qwen_vae(*, seed: int):
    """A two-level AutoencoderKLQwenImage (one 2-D downsample: vae_scale_factor 2) with z_dim 16."""
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False],
    )  # latents_mean / latents_std: the real model's (the class defaults)
