"""Tiny random-weight FLUX.2 pipelines (Flux2KleinPipeline and Flux2Pipeline), built from configs offline.

Both save a complete diffusers folder that ``DiffusionPipeline.from_pretrained(folder)`` loads offline.

Transformer (both): ``Flux2Transformer2DModel`` with 1 dual-stream block (``transformer_blocks.0.attn``,
``Flux2Attention``) and 2 single-stream blocks (``single_transformer_blocks.N.attn``,
``Flux2ParallelSelfAttention``, fused ``to_qkv_mlp_proj``), 2 heads x 16 channels, rotary axes (4, 4, 4, 4)
over (T, H, W, L) ids, ``rope_theta`` 2000 as the real model. Klein: ``guidance_embeds=False`` and
``is_distilled=False`` (the "base" variant: real CFG as a second transformer call); FLUX.2-dev:
``guidance_embeds=True`` (embedded guidance, no CFG).

Text encoders: Klein = ``Qwen3ForCausalLM`` (28 layers of width 32, so the stock ``hidden_states`` layers
(9, 18, 27) exist and are intermediate ones); FLUX.2-dev = ``Mistral3ForConditionalGeneration`` (Mistral
text model with 31 layers of width 32 for layers (10, 20, 30), plus a 1-layer Pixtral vision tower).
The context is the three layers stacked on the feature axis: ``joint_attention_dim = 3 * 32``.

Tokenizers are built without training (see flux2_sana_tok.py): Klein gets a ``Qwen2Tokenizer`` (byte-level BPE,
``<|im_start|>``/``<|im_end|>``/``<think>`` tokens, a Qwen3-style chat template that honours
``enable_thinking=False``); FLUX.2-dev gets a plain byte-level ``TokenizersBackend`` (Tekken-like ids
``<unk>``=0 ``<s>``=1 ``</s>``=2 ``[INST]``=3 ``[/INST]``=4 ``[IMG]``=10 ``<pad>``=11 and
``[SYSTEM_PROMPT]``/``[/SYSTEM_PROMPT]``) with a Mistral-Small-3-style template over list-of-blocks
content. The real FLUX.2-dev "tokenizer" is a ``PixtralProcessor``; it needs torchvision, which this venv
lacks, and the text-only path of the pipeline only calls ``apply_chat_template``, which a tokenizer has too.

VAE: ``AutoencoderKLFlux2`` with two levels (vae_scale_factor 2; real: 8), 4 latent channels (real: 32),
BatchNorm running stats set to non-trivial values so that the latent de-normalisation is visible.
Sizes: multiples of ``vae_scale_factor * 2`` = 4 here (16 real); 32 x 48 gives 8 x 12 = 96 image tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_sana import bytes_to_unicode, corpus_words, prefix_merges

TEXT_HIDDEN = 32
QWEN_LAYERS = 28  # stock hidden_states_layers (9, 18, 27)
MISTRAL_LAYERS = 31  # stock hidden_states_layers (10, 20, 30)
LATENT_CHANNELS = 4
NORM_QK_SCALE = 2.0  # the RMS q/k norms' weight is scaled (a scaled projection would be normalised away)

QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set content = message['content'] %}"
    "{%- else %}{%- set content = '' %}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

MISTRAL3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set system_message = messages[0]['content'] %}"
    "{%- else %}{%- set system_message = messages[0]['content'][0]['text'] %}{%- endif %}"
    "{%- set loop_messages = messages[1:] %}"
    "{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if message['content'] is string %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST]' }}"
    "{%- for block in message['content'] %}"
    "{%- if block['type'] == 'text' %}{{- block['text'] }}"
    "{%- elif block['type'] in ['image', 'image_url'] %}{{- '[IMG]' }}{%- endif %}"
    "{%- endfor %}{{- '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if message['content'] is string %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- message['content'][0]['text'] + eos_token }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
)


# ----------------------------------------------------------------------------------------- tokenizers


def _byte_level_words(extra_text: str = "", extra_tokens=()):
    """Byte-level vocabulary: the 256 byte characters, every word with and without its leading space."""
    b2u = bytes_to_unicode()
    base = [b2u[b] for b in range(256)]

    def enc(s: str) -> str:
        return "".join(b2u[b] for b in s.encode("utf-8"))

    words = corpus_words(extra_text)
    spaced = [enc(" " + w) for w in words]
    plain = [enc(w) for w in words] + [enc(t) for t in extra_tokens]
    return prefix_merges(spaced + plain, base, first=spaced)


def build_qwen_tokenizer(folder: Path):
    """A Qwen2Tokenizer (Qwen3 special tokens and chat template) saved to ``folder`` and loaded back."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _byte_level_words("user assistant system", extra_tokens=["\n\n"])
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab.setdefault(special, len(vocab))
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=1024,
    )
    tok.add_tokens([AddedToken(t, special=True) for t in ("<|im_start|>", "<|im_end|>")], special_tokens=True)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tok.chat_template = QWEN3_CHAT_TEMPLATE
    tok.padding_side = "right"
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return Qwen2Tokenizer.from_pretrained(folder)


def build_mistral_tokenizer(folder: Path):
    """A Tekken-like byte-level tokenizer with Mistral-Small-3's special ids and chat template."""
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = {
        "<unk>": 0, "<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "[IMG]": 10, "<pad>": 11,
        "[SYSTEM_PROMPT]": 17, "[/SYSTEM_PROMPT]": 18,
    }  # fmt: skip
    words_vocab, merges = _byte_level_words(SYSTEM_MESSAGE.replace(",", " ").replace(".", " "))
    vocab = {f"<control_{i}>": i for i in range(20)}
    for name, i in specials.items():
        vocab.pop(f"<control_{i}>")
        vocab[name] = i
    for t in words_vocab:
        vocab.setdefault(t, len(vocab))
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(
                    r"""[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
                ),
                behavior="isolated",
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t in vocab
            if t.startswith(("<", "[")) and (t in specials or t.startswith("<control_"))
        ]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=1024,
    )
    tok.chat_template = MISTRAL3_CHAT_TEMPLATE
    tok.padding_side = "right"
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)


# ----------------------------------------------------------------------------------------- models


def _transformer(*, guidance_embeds: bool, seed: int = 0):
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    t = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,  # latents are patchified 2 x 2 before packing
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * TEXT_HIDDEN,  # three text-encoder layers stacked on the feature axis
        timestep_guidance_channels=256,
        mlp_ratio=3.0,
        axes_dims_rope=(4, 4, 4, 4),  # (T, H, W, L), sums to attention_head_dim
        rope_theta=2000,
        guidance_embeds=guidance_embeds,
    )
    sharpen_attention(t)
    return t


@torch.no_grad()
def sharpen_attention(model: torch.nn.Module, scale: float = NORM_QK_SCALE) -> None:
    """Scale the weight of every q/k RMS norm (dual and single stream alike): logits grow by scale**2."""
    for module in model.modules():
        for name in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            norm = getattr(module, name, None)
            if getattr(norm, "weight", None) is not None:
                norm.weight.mul_(scale)


def _vae(seed: int = 1):
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=32,
        use_quant_conv=True,
        use_post_quant_conv=True,
        patch_size=(2, 2),
    )
    with torch.no_grad():  # the running stats the pipeline de-normalises latents with (real: fitted)
        n = vae.bn.running_mean.numel()
        vae.bn.running_mean.copy_(0.1 * torch.randn(n))
        vae.bn.running_var.copy_(0.5 + torch.rand(n))
    return vae


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # FLUX.2's scheduler config: the pipeline passes sigmas and an empirical mu (dynamic shifting)
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )


def build_flux2_klein_folder(root: Path) -> Path:
    """Save a tiny Flux2KleinPipeline (base, non-distilled: real CFG) under ``root / "flux2-klein"``."""
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    root = Path(root)
    tok = build_qwen_tokenizer(root / "_flux2_klein_tokenizer")
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=QWEN_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(2)
    text_encoder = Qwen3ForCausalLM(config)
    pipe = Flux2KleinPipeline(
        scheduler=_scheduler(),
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tok,
        transformer=_transformer(guidance_embeds=False),
        is_distilled=False,
    )
    folder = root / "flux2-klein"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_flux2_folder(root: Path) -> Path:
    """Save a tiny Flux2Pipeline (FLUX.2-dev-like: Mistral3 text encoder, embedded guidance) under
    ``root / "flux2"``."""
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    root = Path(root)
    tok = build_mistral_tokenizer(root / "_flux2_tokenizer")
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tok),
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 2 * TEXT_HIDDEN,
            "num_hidden_layers": MISTRAL_LAYERS,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 1024,
            "rms_norm_eps": 1e-5,
            "rope_theta": 1e9,
            "sliding_window": None,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 11,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 8,
            "image_size": 32,
            "patch_size": 8,
            "num_channels": 3,
        },
        image_token_index=10,
        spatial_merge_size=2,
        vision_feature_layer=-1,
        multimodal_projector_bias=False,
    )
    torch.manual_seed(2)
    text_encoder = Mistral3ForConditionalGeneration(config)
    pipe = Flux2Pipeline(
        scheduler=_scheduler(),
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tok,
        transformer=_transformer(guidance_embeds=True),
    )
    folder = root / "flux2"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
