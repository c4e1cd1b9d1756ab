"""Tiny random-weight SanaPipeline, built from configs offline.

Transformer: ``SanaTransformer2DModel`` with 2 blocks; each has a linear (ReLU-kernel) self-attention
``attn1`` (``SanaLinearAttnProcessor2_0``, no softmax, sees no text) and a softmax cross-attention
``attn2`` (``SanaAttnProcessor2_0``) whose keys are the Gemma-2 states; 2 heads x 16 channels for both,
patch 1, ``sample_size`` 32 (the 1024px value, so resolution binning accepts the config), no positional
embedding (``interpolation_scale=None``, like Sana 1.0). ``qk_norm=None`` is Sana 1.0/1.6B;
``qk_norm="rms_norm_across_heads"`` (Sana 1.5) can be asked for with ``build_sana_folder(root, qk_norm=...)``.

Text: ``Gemma2Model`` (2 layers, width 32 = ``caption_channels``) and a ``GemmaTokenizer`` (BPE with
byte fallback, "▁" for spaces, ``<bos>`` added, ``<pad>`` id 0) built without training from the corpus
plus the words of the pipeline's default complex human instruction, so that instruction costs ~1 token
per word, as with the real tokenizer.

VAE: ``AutoencoderDC`` with 3 levels (vae_scale_factor 4; real DC-AE: 32), 4 latent channels (real: 32),
scaling factor 0.41407 as the real one. Sizes must be multiples of 32 (``check_inputs`` raises) whatever
the VAE; 32 x 64 gives an 8 x 16 latent = 128 image tokens. Call with ``use_resolution_binning=False``:
the default snaps the size to the 1024px aspect-ratio bins.

Scheduler: ``DPMSolverMultistepScheduler`` in flow mode (``use_flow_sigmas``, ``flow_shift=3``,
``prediction_type="flow_prediction"``) as the released Sana checkpoints.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from tiny import CORPUS

TEXT_HIDDEN = 32
LATENT_CHANNELS = 4
CROSS_QK_SCALE = 8.0  # plain q/k projections of attn2 (no norm): scaled like SDXL's cross-attention
NORM_QK_SCALE = 2.0  # with qk_norm the norm's weight is scaled instead

DEFAULT_CHI = None  # filled lazily from the pipeline signature


def default_complex_human_instruction() -> list[str]:
    import inspect

    from diffusers import SanaPipeline

    return inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default


def build_gemma_tokenizer(folder: Path):
    """GemmaTokenizer: <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4, byte-fallback <0x00>..<0xFF>, then pieces."""
    from transformers import GemmaTokenizer

    chi = "\n".join(default_complex_human_instruction())
    text = " ".join(CORPUS) + " " + chi
    words = sorted({w for w in re.split(r"[^A-Za-z0-9']+", text) if w})
    chars = sorted({c for c in text if c not in " \n"})
    base = (
        ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁"] + chars
    )
    spaced = ["▁" + w for w in words] + ["▁" + w.lower() for w in words]
    plain = words + [w.lower() for w in words]
    vocab, merges = prefix_merges(spaced + plain, base, first=spaced)
    tok = GemmaTokenizer(
        vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False, model_max_length=1024
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"  # as gemma-2's own config: BOS added, no EOS
    config = json.loads(config_path.read_text())
    config.update(add_bos_token=True, add_eos_token=False)
    config_path.write_text(json.dumps(config, indent=2))
    return GemmaTokenizer.from_pretrained(folder)


@torch.no_grad()
def sharpen_attention(model: torch.nn.Module) -> None:
    """attn2 only (attn1 is linear attention: a common scale of q and k cancels in its normaliser)."""
    for name, module in model.named_modules():
        if not name.endswith("attn2"):
            continue
        for proj, norm in (("to_q", "norm_q"), ("to_k", "norm_k")):
            n = getattr(module, norm, None)
            if getattr(n, "weight", None) is not None:
                n.weight.mul_(NORM_QK_SCALE)
            else:
                layer = getattr(module, proj)
                layer.weight.mul_(CROSS_QK_SCALE)
                if layer.bias is not None:
                    layer.bias.mul_(CROSS_QK_SCALE)


def build_transformer(qk_norm: str | None = None, seed: int = 0):
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(seed)
    t = SanaTransformer2DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=16,
        cross_attention_dim=32,  # = heads * head dim (the caption is projected to the inner width)
        caption_channels=TEXT_HIDDEN,
        mlp_ratio=2.5,
        attention_bias=False,
        sample_size=32,
        patch_size=1,
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        interpolation_scale=None,
        qk_norm=qk_norm,
    )
    sharpen_attention(t)
    return t


def build_sana_folder(root: Path, qk_norm: str | None = None) -> Path:
    """Save a tiny SanaPipeline under ``root / "sana"`` (``"sana-qknorm"`` with a q/k norm)."""
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline
    from transformers import Gemma2Config, Gemma2Model

    root = Path(root)
    tok = build_gemma_tokenizer(root / "_sana_tokenizer")
    torch.manual_seed(2)
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tok),
            hidden_size=TEXT_HIDDEN,
            intermediate_size=2 * TEXT_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=1024,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
    torch.manual_seed(1)
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=LATENT_CHANNELS,
        attention_head_dim=8,
        encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8, 16),
        decoder_block_out_channels=(8, 8, 16),
        encoder_layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), (5,)),
        decoder_qkv_multiscales=((), (), (5,)),
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.0001,
        beta_end=0.02,
        algorithm_type="dpmsolver++",
        solver_order=2,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        final_sigmas_type="zero",
        lower_order_final=True,
        timestep_spacing="linspace",
    )
    pipe = SanaPipeline(
        tokenizer=tok,
        text_encoder=text_encoder,
        vae=vae,
        transformer=build_transformer(qk_norm),
        scheduler=scheduler,
    )
    folder = root / ("sana" if qk_norm is None else "sana-qknorm")
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# Offline tokenizer building blocks: every corpus word one token, by prefix merges in a fixed order
# (the tokenizers BPE trainer orders ties in hash order; this build is the same every time).


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel pre-tokenizers use)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def prefix_merges(words: list[str], base: list[str], first: list[str] | None = None):
    """(vocab, merges) for a BPE whose vocabulary is ``base`` plus every prefix of every word.

    ``first``: words whose merges get the lowest ranks (e.g. space-prefixed words, so that "Ġred" is
    built before a plain "red" could claim the pair "r e").
    """
    vocab: dict[str, int] = {}
    for t in base:
        vocab.setdefault(t, len(vocab))

    def chain(word_list):
        out = []
        for w in sorted(set(word_list)):
            for i in range(2, len(w) + 1):
                out.append((w[: i - 1], w[i - 1], w[:i]))
        # shorter results first, so each prefix exists before it is extended
        return sorted(set(out), key=lambda m: (len(m[2]), m[2]))

    merges = []
    seen = set()
    groups = [first or [], [w for w in words if w not in set(first or [])]]
    for group in groups:
        for a, b, ab in chain(group):
            if (a, b) in seen:
                continue
            seen.add((a, b))
            merges.append((a, b))
            vocab.setdefault(a, len(vocab))
            vocab.setdefault(b, len(vocab))
            vocab.setdefault(ab, len(vocab))
    return vocab, merges


def corpus_words(extra_text: str = "") -> list[str]:
    words = {w for line in CORPUS for w in line.split()}
    words |= set(extra_text.split())
    return sorted(words)
