"""Tiny random-weight CogView4Pipeline (CogView4-6B-like), built from configs offline and saved the real way.

Components (real classes, tiny configs):
- transformer: ``CogView4Transformer2DModel``, 2 blocks of 2 heads x 32 channels (CogView4-6B, as far as
  known offline: 28 blocks of 32 heads x 128, text_embed_dim 4096), patch 2, ``text_embed_dim`` = the GLM width (32), ``time_embed_dim`` 16,
  ``condition_dim`` 8. Each block's ``attn1`` runs one joint softmax over [text | image] with
  ``CogView4AttnProcessor``; q/k LayerNorms have **no affine weights** (``elementwise_affine=False``), so the
  q/k maps cannot be sharpened by scaling (LayerNorm removes any scale): instead every head's q and k
  projections are made rank 2 within a shared per-head subspace (``sharpen_cogview4``), which makes the
  normalised q and k nearly collinear and the logits large (std ~ sqrt(head_dim / 2)).
- text_encoder: ``GlmModel`` (2 layers, width 32, GQA 2/1 heads of 16, partial rotary 0.5); the pipeline
  reads ``hidden_states[-2]``.
- tokenizer: ``PreTrainedTokenizerFast`` (transformers 5: ``TokenizersBackend``) with a byte-level BPE whose
  merges are learned here deterministically from CORPUS (every corpus word one token, anything else
  bytes: no unknown token), GLM-4's specials (``<|endoftext|>`` = pad = eos, ``[MASK]``, ``[gMASK]``,
  ``[sMASK]``, ``<sop>``, ``<eop>``) and GLM-4's post-processor: ``[gMASK] <sop>`` before every text
  (``add_special_tokens=True``); ``padding_side="left"`` as GLM-4's tokenizer.
- vae: two-level ``AutoencoderKL`` (vae_scale_factor 2: the pipeline derives it from
  ``block_out_channels``), 16 latent channels, ``scaling_factor`` 1.0 (the pipeline divides by it only).
- scheduler: ``FlowMatchEulerDiscreteScheduler`` with CogView4's dynamic linear shift (base_shift 0.25,
  max_shift 0.75, base_image_seq_len 256, ``time_shift_type="linear"``).

Sizes: multiples of 16 (``check_inputs`` raises otherwise, whatever the VAE); default 32 x 32 here
(``sample_size`` 16 x vae_scale_factor 2; real 128 x 8 = 1024). 32 x 48 gives latents 16 x 24 and 8 x 12 = 96
image tokens.

Run: OMP_WAIT_POLICY=PASSIVE /work/main/.venv/bin/python /tmp/fam2/cogview4_tiny.py [folder]
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from tiny import CORPUS
from tiny_families import _vae
from tiny_qwen import _learn_bpe, _pre_tokenizer
from tiny_sana import bytes_to_unicode

GLM_HIDDEN = 32  # stands in for GLM-4-9B's 4096 (= transformer text_embed_dim)
SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>"]
QK_RANK = 2  # rank of each head's q/k projection after sharpen_cogview4

# CogView4-6B's scheduler config (dynamic shifting with the pipeline's own calculate_shift)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.25,
    max_shift=0.75,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    time_shift_type="linear",
)


def build_glm_tokenizer(folder: Path):
    """Save and return a GLM-4-style byte-level BPE tokenizer (see the module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer()  # Qwen's regex split + byte-level characters (GLM-4's is the same kind)
    words: Counter = Counter()
    for line in CORPUS:
        words.update(piece for piece, _ in pre.pre_tokenize_str(line))
    merges = _learn_bpe(words)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode()[b] for b in range(256))}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for s in SPECIALS:
        vocab[s] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    bpe.pre_tokenizer = pre
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    bpe.post_processor = processors.TemplateProcessing(
        single="[gMASK] <sop> $A",
        pair="[gMASK] <sop> $A $B",
        special_tokens=[("[gMASK]", vocab["[gMASK]"]), ("<sop>", vocab["<sop>"])],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=2048,  # the tiny encoder's positions (the released tokenizer says 128000)
        clean_up_tokenization_spaces=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)


def _glm_encoder(tok, *, seed: int):
    from transformers import GlmConfig, GlmModel

    config = GlmConfig(
        vocab_size=len(tok),
        hidden_size=GLM_HIDDEN,
        intermediate_size=2 * GLM_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        use_cache=False,
    )
    torch.manual_seed(seed)
    return GlmModel(config).eval()


@torch.no_grad()
def sharpen_cogview4(transformer, rank: int = QK_RANK, seed: int = 5) -> None:
    """Make each head's q and k projections (weight and bias) rank ``rank`` inside one shared random
    subspace per head: W_h <- U_h U_h^T W_h (U_h: head_dim x rank, orthonormal). The q/k LayerNorms have no
    weights to scale (and would undo a scaled projection); after the norm q and k lie close to one small
    subspace, so their cosine (and the logit sqrt(D) cos) is large, as in a trained model's peaked maps.
    Mean normalised entropy of the image rows on 32 x 48: ~0.73 (unsharpened: ~0.9)."""
    g = torch.Generator().manual_seed(seed)
    for module in transformer.modules():
        if not (hasattr(module, "to_q") and hasattr(module, "norm_q")):
            continue
        heads = module.heads
        d = module.to_q.out_features // heads
        for h in range(heads):
            u, _ = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))
            proj = (u @ u.T).float()
            rows = slice(h * d, (h + 1) * d)
            for lin in (module.to_q, module.to_k):
                lin.weight[rows] = proj @ lin.weight[rows]
                if lin.bias is not None:
                    lin.bias[rows] = proj @ lin.bias[rows]


def build_cogview4_folder(root: Path) -> Path:
    """Save a tiny CogView4Pipeline (random weights, fixed seeds) under ``root / "cogview4"``; return it."""
    from diffusers import CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler

    root = Path(root)
    tok = build_glm_tokenizer(root / "_cogview4_tokenizer")
    torch.manual_seed(0)
    transformer = CogView4Transformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=32,  # the logit of unit-variance q/k is sqrt(D) cos: a wider head sharpens
        num_attention_heads=2,
        text_embed_dim=GLM_HIDDEN,
        time_embed_dim=16,
        condition_dim=8,
        pos_embed_max_size=32,
        sample_size=16,  # default size 16 * vae_scale_factor 2 = 32
        rope_axes_dim=(256, 256),  # the real value: rotary positions are rescaled onto 256 slots per axis
    )
    sharpen_cogview4(transformer)
    vae = _vae(latent_channels=16, scaling_factor=1.0, shift_factor=None, quant_conv=False, seed=1)
    pipe = CogView4Pipeline(
        tokenizer=tok,
        text_encoder=_glm_encoder(tok, seed=2),
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
    )
    folder = root / "cogview4"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
