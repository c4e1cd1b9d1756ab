"""Model adapters: everything the recorder needs to know about one family of pipelines.

An adapter says, for its family: the attention sites to observe (module paths in execution order, head
counts, query grids for a latent size) and how to observe them; the text positions (one token table
per text encoder, laid out on the key axis as the denoiser sees them); the guidance layout (one batch
[unconditional | conditional], or the negative branch as a second denoiser call); how the pipeline
draws and packs its initial noise; sizes; the default guidance; and how a latent is decoded. Analysis,
figures, apps and the store never branch on the family's name: where a method needs something only
some families have, it asks the adapter for that capability (``one_clip_encoder`` for word occlusion).

Families: Stable Diffusion 1.x/2.x, SDXL (UNet cross-attention), SD3/SD3.5 and Flux.1 (joint attention).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict

import pandas as pd
import torch
from diffusers.utils.torch_utils import randn_tensor

from .attention import AttentionSink, CrossObserver
from .joint import JointObserver
from .layers import CrossAttentionLayer, cross_attention_layers
from .tokens import (
    cut_message,
    front_padded_table,
    joined_table,
    sentencepiece_table,
    template_table,
    token_table,
    unknown_message,
    windowed_table,
    word_spans,
)
from .unified import UnifiedLayout, UnifiedObserver, padded

_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ADAPTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pipe -> its adapter (tables kept)
TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
TABLE_CACHE = 256  # token tables and messages kept per pipeline
_MODEL_DEFAULTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pipe -> its folder's own defaults
MODEL_DEFAULTS_FILE = "workbench_defaults.json"  # in a model folder: {"guidance_scale": 4.0}, see loading


def set_model_defaults(pipe, defaults: dict) -> None:
    """Give ``pipe`` the generation defaults its model folder declares (``MODEL_DEFAULTS_FILE``)."""
    _MODEL_DEFAULTS[pipe] = dict(defaults)


class StableDiffusionAdapter:
    """Stable Diffusion 1.x/2.x: a UNet2DConditionModel whose ``attn2`` layers read one CLIP encoder."""

    family = "Stable Diffusion 1.x/2.x"
    separate_negative = False  # the negative branch is the first half of one batch
    cond_first = (
        False  # a guidance batch is [unconditional | conditional]; Z-Image's is [conditional | negative]
    )
    attention_edits = True  # reweight / ablate / replace can bias this family's attention
    negative_prompts = True  # the pipeline takes a negative prompt (Flux.2's CFG is against "" alone)
    replays_steps = True  # a recorded step can be replayed as a function of the text (IG, step model)
    true_cfg = False  # a separate negative call scaled by ``true_cfg_scale`` (Flux.1), not by guidance_scale
    family_guidance = 7.5  # the stock pipeline's own default guidance_scale
    one_clip_encoder = True  # the text is one CLIP encoder's output from token ids (word occlusion works)
    # where ``encode_prompt``'s outputs reach the denoiser: (output index, keyword[.key]) of the
    # conditional text conditioning (what a prompt switch replaces)
    conditioning: tuple[tuple[int, str], ...] = ((0, "encoder_hidden_states"),)

    def __init__(self, pipe):
        self.pipe = pipe
        # (what, text, lengths, tokenizers) -> token table or messages, kept across calls (LRU)
        self._tables: OrderedDict = OrderedDict()

    def _cached(self, key: tuple, make):
        key = (*key, tuple(id(getattr(self.pipe, n, None)) for n in TOKENIZERS))  # a swapped tokenizer
        if key in self._tables:
            self._tables.move_to_end(key)
            return self._tables[key]
        value = self._tables[key] = make()
        if len(self._tables) > TABLE_CACHE:
            self._tables.popitem(last=False)
        return value

    def table(self, text: str, lengths: dict[str, int], negative: bool = False) -> pd.DataFrame:
        """``token_table`` (``negative_table`` for the negative prompt) of ``text``: made once per prompt
        and text lengths, for as long as the pipeline keeps its tokenizers."""
        make = self.negative_table if negative else self.token_table
        return self._cached(
            ("table", text, tuple(sorted(lengths.items())), negative), lambda: make(text, lengths)
        )

    def text_warnings(self, text: str, lengths: dict[str, int]) -> list[str]:
        """``cut_messages`` then ``unknown_messages`` of ``text``, made once per prompt and lengths."""
        key = ("warnings", text, tuple(sorted(lengths.items())))
        return self._cached(
            key, lambda: self.cut_messages(text, lengths) + self.unknown_messages(text, lengths)
        )

    def negative_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        """The negative prompt's token table: as the prompt's, in families that encode both alike."""
        return self.token_table(text, lengths)

    # ------------------------------------------------------------ sizes and latents

    @property
    def denoiser(self):
        return self.pipe.unet

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @property
    def size_multiple(self) -> int:
        # The stock pipeline requires multiples of 8; the latent grid needs the VAE's factor.
        return math.lcm(8, self.vae_scale_factor)

    @property
    def default_size(self) -> int:
        declared = _MODEL_DEFAULTS.get(self.pipe, {}).get("size")
        return int(declared) if declared else int(self.denoiser.config.sample_size) * self.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return int(self.denoiser.config.in_channels)

    @property
    def default_guidance(self) -> float:
        """The guidance a request without one gets: the model folder's own, else the family's."""
        return float(_MODEL_DEFAULTS.get(self.pipe, {}).get("guidance_scale", self.family_guidance))

    @property
    def default_true_cfg(self) -> float:
        """The true-CFG scale a request without one gets (pipelines with a separate negative call):
        the model folder's own, else 1.0 (off)."""
        return float(_MODEL_DEFAULTS.get(self.pipe, {}).get("true_cfg_scale", 1.0))

    @property
    def default_negative_prompt(self) -> str | None:
        """The negative prompt the model folder declares for its true CFG (``None``: none declared)."""
        return _MODEL_DEFAULTS.get(self.pipe, {}).get("negative_prompt")

    @property
    def text_limit(self) -> int:
        return int(self.pipe.tokenizer.model_max_length)

    def latent_hw(self, height: int, width: int) -> tuple[int, int]:
        return height // self.vae_scale_factor, width // self.vae_scale_factor

    def draw_noise(self, batch: int, channels: int, height: int, width: int, dtype, device, generator):
        """The initial noise as the pipeline's ``prepare_latents`` draws it, in the form it passes on."""
        shape = (batch, channels, *self.latent_hw(int(height), int(width)))
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    def unpack(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """A latent as the loop holds it -> (batch, C, h, w)."""
        return latents

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """(batch, C, h, w) -> the latent as the loop holds it."""
        return latents

    def prediction(self, output: torch.Tensor) -> torch.Tensor:
        """The denoiser's (guided) output as the pipeline hands it to its scheduler."""
        return output

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) latents -> (n, 3, H, W) images in [-1, 1], as the pipeline decodes."""
        vae = self.pipe.vae
        z = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        return vae.decode(z, return_dict=False)[0]

    # ------------------------------------------------------------ attention

    def layers(self) -> list[CrossAttentionLayer]:
        unet = self.denoiser
        if unet not in _LAYERS:  # a walk over every module: done once per denoiser
            _LAYERS[unet] = cross_attention_layers(unet)
        return _LAYERS[unet]

    def observe(self, sink: AttentionSink) -> list:
        """Tap observers onto the sink's layers; returns what undoes each (callables)."""
        undo = []
        for name in sink.layers:
            observer = CrossObserver(self.denoiser.get_submodule(name), name, sink)
            undo += [h.remove for h in observer.install()]
        return undo

    def uses_guidance(self, guidance_scale: float) -> bool:
        return guidance_scale > 1 and self.denoiser.config.time_cond_proj_dim is None

    # ------------------------------------------------------------ text

    empty_negative = False  # the pipeline's own "no negative prompt" is "" (recorded as None)

    def prompts_of(self, bound: dict, call: int) -> tuple[object, object] | None:
        """(prompt, negative prompt) from one ``encode_prompt`` call's arguments; None to ignore the call."""
        if call != 0:
            return None
        negative = bound.get("negative_prompt")
        return bound.get("prompt"), (None if self.empty_negative and negative == "" else negative)

    def text_lengths(self, bound: dict) -> dict[str, int]:
        """Encoder -> the number of key positions it gives, from ``encode_prompt``'s arguments."""
        return {"": self.text_limit}

    def token_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        return token_table(self.pipe.tokenizer, text, lengths[""], warn=False)

    def cut_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        message = cut_message(self.table(text, lengths), lengths[""])
        return [message] if message else []

    def unknown_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        message = unknown_message(
            token_table(self.pipe.tokenizer, text, self.pipe.tokenizer.model_max_length, warn=False),
            self.pipe.tokenizer,
        )
        return [message] if message else []

    def call_shape(self, args: tuple, kwargs: dict) -> tuple[int | None, int | None]:
        """(rows, text keys) of a denoiser call, from its arguments."""
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        context = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        rows = int(hidden.shape[0]) if isinstance(hidden, torch.Tensor) else None
        return rows, (int(context.shape[1]) if isinstance(context, torch.Tensor) else None)

    def combine(self, cond: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
        """The guided prediction from the conditional and negative predictions, as the pipeline forms it."""
        return negative + scale * (cond - negative)

    def second_call(self, request) -> float | None:
        """The scale of the negative branch where it runs as a second denoiser call per step for
        ``request`` (None: no second call; the negative branch, if any, is half of one batch)."""
        return None

    def declared_length(self, args: dict) -> dict:
        """``args`` with the text length the model folder declares it was made for, if it declares one
        (``max_sequence_length``: the pipelines pad to their own default otherwise)."""
        length = _MODEL_DEFAULTS.get(self.pipe, {}).get("max_sequence_length")
        if length:
            args["max_sequence_length"] = int(length)
        return args

    def _block_sites(self, blocks: str, module: str, factor: int) -> list[CrossAttentionLayer]:
        """``{blocks}.N.{module}`` of every block in the denoiser's ``blocks`` list, each on the latent grid
        halved ``factor`` times."""

        def make(t):
            return [
                CrossAttentionLayer(
                    name=f"{blocks}.{i}.{module}", heads=int(getattr(b, module).heads), factor=factor
                )
                for i, b in enumerate(getattr(t, blocks))
            ]

        return self._layers_once(make)

    def _layers_once(self, make) -> list[CrossAttentionLayer]:
        """The denoiser's attention sites, listed by ``make(denoiser)`` once per denoiser."""
        t = self.denoiser
        if t not in _LAYERS:
            _LAYERS[t] = make(t)
        return _LAYERS[t]

    def call_arguments(self, request) -> dict:
        """The pipeline-call keywords for a request's guidance (beyond prompt, steps, size, generator)."""
        return {"guidance_scale": request.guidance_scale, "negative_prompt": request.negative_prompt}


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    """SDXL: the same UNet cross-attention; its context joins CLIP-L and CLIP-G on the feature axis, so
    the key positions are the 77 CLIP positions (one token table; CLIP-G pads with "!", CLIP-L with EOS)."""

    family = "SDXL"
    family_guidance = 5.0
    conditioning = ((0, "encoder_hidden_states"), (2, "added_cond_kwargs.text_embeds"))
    one_clip_encoder = False

    def text_lengths(self, bound: dict) -> dict[str, int]:
        return {"CLIP": self.text_limit}

    def token_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        return token_table(self.pipe.tokenizer, text, lengths["CLIP"], warn=False)

    def cut_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        message = cut_message(self.table(text, lengths), lengths["CLIP"], "CLIP")
        return [message] if message else []


class JointAdapter(StableDiffusionAdapter):
    """What SD3 and Flux share: a transformer denoiser with a patch grid, flow matching, VAE shift."""

    text_first = False
    rotary = False
    rotary_per_stream = False  # (image, text) complex tables, each applied to its stream (Qwen-Image)
    heads_first = False  # the processor normalises q and k as (batch, heads, tokens, dim) (SD3)
    rotary_text = True  # the rotary table spans the joint sequence (CogView4's: the image tokens only)
    rotary_unbind = -1  # interleaved channel pairs; -2: the two halves (CogView4)
    norm_taps = True  # q and k may be taken from the norms' outputs (CogView4 rotates those in place)

    @property
    def denoiser(self):
        return self.pipe.transformer

    @property
    def size_multiple(self) -> int:
        return self.vae_scale_factor * self.patch

    @property
    def patch(self) -> int:
        return int(getattr(self.denoiser.config, "patch_size", 1) or 1) * self.packing

    packing = 1

    @property
    def default_size(self) -> int:
        declared = _MODEL_DEFAULTS.get(self.pipe, {}).get("size")
        return int(declared) if declared else int(self.pipe.default_sample_size) * self.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config.latent_channels)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        z = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        z = z + (vae.config.shift_factor or 0.0)
        return vae.decode(z, return_dict=False)[0]

    def uses_guidance(self, guidance_scale: float) -> bool:
        return guidance_scale > 1

    def _site(self, name: str, module) -> CrossAttentionLayer:
        halvings = int(math.log2(self.patch))
        return CrossAttentionLayer(name=name, heads=int(module.heads), factor=halvings)

    def observe(self, sink: AttentionSink) -> list:
        undo = []
        for name in sink.layers:
            attn = self.denoiser.get_submodule(name)
            block = self._single_block(name)
            observer = JointObserver(
                attn,
                name,
                sink,
                text_first=self.text_first,
                rotary=self.rotary,
                block=block,
                rotary_per_stream=self.rotary_per_stream,
                heads_first=self.heads_first,
                rotary_text=self.rotary_text,
                rotary_unbind=self.rotary_unbind,
                norm_taps=self.norm_taps,
            )
            undo += [h.remove for h in observer.install()]
        return undo

    def _single_block(self, name: str):
        return None

    @property
    def t5_tokenizer(self):
        """SD3's ``tokenizer_3``, Flux.1's ``tokenizer_2``, a T5-only pipeline's ``tokenizer``."""
        for name in ("tokenizer_3", "tokenizer_2", "tokenizer"):
            tok = getattr(self.pipe, name, None)
            if tok is not None:
                return tok
        raise AttributeError(f"{type(self.pipe).__name__} has no tokenizer")

    def _t5_table(self, text: str, length: int, spans=None) -> pd.DataFrame:
        return sentencepiece_table(self.t5_tokenizer, text, length, word_spans=spans)


class StableDiffusion3Adapter(JointAdapter):
    """SD3/SD3.5: ``transformer_blocks.N.attn`` with joint attention over [image | CLIP 77 | T5] keys.

    SD3.5's ``attn2`` (image-only) is not text attention and is not recorded. The last block is
    ``context_pre_only`` but its image queries still attend to the text keys. T5 padding positions take
    real attention mass (no mask is applied); the token table names them ``pad``.
    """

    family = "SD3/SD3.5"
    family_guidance = 7.0
    heads_first = True
    conditioning = ((0, "encoder_hidden_states"), (2, "pooled_projections"))
    one_clip_encoder = False

    def layers(self) -> list[CrossAttentionLayer]:
        def make(t):
            return [
                self._site(f"transformer_blocks.{i}.attn", b.attn) for i, b in enumerate(t.transformer_blocks)
            ]

        return self._layers_once(make)

    @property
    def text_limit(self) -> int:
        return int(self.pipe.tokenizer_max_length) + 256

    def text_lengths(self, bound: dict) -> dict[str, int]:
        t5 = bound.get("max_sequence_length") or 256
        return {"CLIP": int(self.pipe.tokenizer_max_length), "T5": int(t5)}

    def token_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        clip = token_table(self.pipe.tokenizer, text, lengths["CLIP"], warn=False)
        t5 = self._t5_table(text, lengths["T5"], word_spans(self.pipe.tokenizer, text))
        return joined_table([("CLIP", clip), ("T5", t5)])

    def cut_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        clip = token_table(self.pipe.tokenizer, text, lengths["CLIP"], warn=False)
        t5 = self._t5_table(text, lengths["T5"], word_spans(self.pipe.tokenizer, text))
        found = [cut_message(clip, lengths["CLIP"], "CLIP"), cut_message(t5, lengths["T5"], "T5")]
        return [m for m in found if m]

    def unknown_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        clip = token_table(self.pipe.tokenizer, text, lengths["CLIP"], warn=False)
        message = unknown_message(clip, self.pipe.tokenizer)
        return [message] if message else []


class FluxAdapter(JointAdapter):
    """Flux.1: dual-stream ``transformer_blocks.N.attn`` and single-stream ``single_transformer_blocks.N.attn``,
    both over [text | image] keys with rotary embeddings on Q and K. Text is T5 only (CLIP is pooled).

    FLUX.1-dev embeds its guidance (no negative batch); ``true_cfg_scale > 1`` with a negative prompt runs
    the negative branch as a second transformer call per step, recorded as the negative branch.
    Latents are packed 2×2 into tokens; runs hold them unpacked as (C, h, w).
    """

    family = "Flux.1"
    family_guidance = 3.5
    conditioning = ((0, "encoder_hidden_states"), (1, "pooled_projections"))
    one_clip_encoder = False
    text_first = True
    rotary = True
    separate_negative = True
    true_cfg = True
    packing = 2

    @property
    def latent_channels(self) -> int:
        return int(self.denoiser.config.in_channels) // 4

    @property
    def text_limit(self) -> int:
        return 512

    def latent_hw(self, height: int, width: int) -> tuple[int, int]:
        f = self.vae_scale_factor * 2
        return 2 * (height // f), 2 * (width // f)

    def layers(self) -> list[CrossAttentionLayer]:
        def make(t):
            dual = [
                self._site(f"transformer_blocks.{i}.attn", b.attn) for i, b in enumerate(t.transformer_blocks)
            ]
            single = [
                self._site(f"single_transformer_blocks.{i}.attn", b.attn)
                for i, b in enumerate(t.single_transformer_blocks)
            ]
            return dual + single

        return self._layers_once(make)

    def _site(self, name: str, module) -> CrossAttentionLayer:
        return CrossAttentionLayer(name=name, heads=int(module.heads), factor=1)  # 2×2 packing

    def _single_block(self, name: str):
        return self.denoiser.get_submodule(name.removesuffix(".attn")) if name.startswith("single_") else None

    def draw_noise(self, batch: int, channels: int, height: int, width: int, dtype, device, generator):
        h, w = self.latent_hw(int(height), int(width))
        noise = randn_tensor((batch, channels, h, w), generator=generator, device=device, dtype=dtype)
        return self.pack(noise)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, h, w = latents.shape
        return self.pipe._pack_latents(latents, b, c, h, w)

    def unpack(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # (batch, tokens, C·4) -> (batch, C, h, w): the pipeline's own unpacking
        return self.pipe._unpack_latents(latents, height, width, self.vae_scale_factor)

    def prompts_of(self, bound: dict, call: int):
        # True CFG encodes the negative prompt in a second ``encode_prompt`` call, as its ``prompt``.
        if call == 0:
            return bound.get("prompt"), None
        if call == 1:
            return None, bound.get("prompt")
        return None

    def text_lengths(self, bound: dict) -> dict[str, int]:
        return {"T5": int(bound.get("max_sequence_length") or 512)}

    def token_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        return joined_table([("T5", self._t5_table(text, lengths["T5"]))])

    def cut_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        message = cut_message(self._t5_table(text, lengths["T5"]), lengths["T5"], "T5")
        return [message] if message else []

    def unknown_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        message = unknown_message(self._t5_table(text, lengths["T5"]), self.t5_tokenizer)
        return [message] if message else []

    def uses_guidance(self, guidance_scale: float) -> bool:
        return False  # embedded guidance: no negative batch (true CFG is a second call, see above)

    def second_call(self, request) -> float | None:
        on = request.negative_prompt is not None and (request.true_cfg_scale or 1.0) > 1
        return float(request.true_cfg_scale) if on else None

    def call_arguments(self, request) -> dict:
        args = {"guidance_scale": request.guidance_scale}
        if request.negative_prompt is not None and (request.true_cfg_scale or 1.0) > 1:
            args.update(negative_prompt=request.negative_prompt, true_cfg_scale=request.true_cfg_scale)
        return self.declared_length(args)


class CrossDiTAdapter(StableDiffusionAdapter):
    """What cross-attention DiTs share (PixArt-Σ, Sana): a transformer whose blocks' ``attn2`` read the
    text states as keys (no joint sequence, so no text queries), on one patch grid; the text encoder's
    padding is masked out of those keys by an additive ``encoder_attention_mask``, which the recorded
    probabilities include (padding positions get ~0). CFG is one batch [unconditional | conditional]."""

    text_name = "T5"  # the token table's encoder name
    empty_negative = True
    default_text_length = 300  # the pipeline's own ``max_sequence_length`` default
    conditioning = ((0, "encoder_hidden_states"), (1, "encoder_attention_mask"))
    one_clip_encoder = False

    @property
    def denoiser(self):
        return self.pipe.transformer

    @property
    def patch(self) -> int:
        return int(getattr(self.denoiser.config, "patch_size", 1) or 1)

    @property
    def size_multiple(self) -> int:
        return math.lcm(8, self.vae_scale_factor * self.patch)

    @property
    def text_limit(self) -> int:
        return self.default_text_length

    def layers(self) -> list[CrossAttentionLayer]:
        return self._block_sites("transformer_blocks", "attn2", int(math.log2(self.patch)))

    def uses_guidance(self, guidance_scale: float) -> bool:
        return guidance_scale > 1

    def call_arguments(self, request) -> dict:
        # the pipeline's own default negative prompt is "" (None fails in its text preprocessing)
        negative = "" if request.negative_prompt is None else request.negative_prompt
        return {"guidance_scale": request.guidance_scale, "negative_prompt": negative}

    def prediction(self, output: torch.Tensor) -> torch.Tensor:
        # a learned-sigma transformer (twice the latent channels out): the pipeline keeps the first half
        learned_sigma = int(self.denoiser.config.out_channels) == 2 * self.latent_channels
        return output.chunk(2, dim=1)[0] if learned_sigma else output

    def text_lengths(self, bound: dict) -> dict[str, int]:
        return {self.text_name: int(bound.get("max_sequence_length") or self.default_text_length)}

    def _text_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        return sentencepiece_table(self.pipe.tokenizer, text, lengths[self.text_name])

    def token_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        return joined_table([(self.text_name, self._text_table(text, lengths))])

    def cut_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        length = lengths[self.text_name]
        message = cut_message(self._text_table(text, lengths), length, self.text_name)
        return [message] if message else []

    def unknown_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        message = unknown_message(self._text_table(text, lengths), self.pipe.tokenizer)
        return [message] if message else []


class PixArtSigmaAdapter(CrossDiTAdapter):
    """PixArt-Σ: ``transformer_blocks.N.attn2`` cross-attention over T5 (300 positions, padding masked).

    The call is made at the requested size (``use_resolution_binning=False``: the stock default snaps
    the size to an aspect-ratio bin and resizes the image back) with the prompt as typed
    (``clean_caption=False``), so the token table is the prompt the encoder saw.
    """

    family = "PixArt-Σ"
    family_guidance = 4.5

    def call_arguments(self, request) -> dict:
        return {
            **super().call_arguments(request),
            "use_resolution_binning": False,
            "clean_caption": False,
        }


class ChromaAdapter(FluxAdapter):
    """Chroma: Flux.1's attention (dual- and single-stream blocks, [text | image], rotary) over T5 alone,
    with real CFG as a second transformer call per step (``guidance_scale > 1``, conditional call first).

    The pipeline masks T5 padding past the first pad with a float 0/1 mask that the attention kernel
    adds to the scores (so "masked" pads are down-weighted by e⁻¹, not dropped): the recorded
    probabilities are the ones that kernel computed, pads included. Single-stream blocks get no
    ``encoder_hidden_states``; their text length is the call's T5 length.
    """

    family = "Chroma"
    family_guidance = 5.0
    empty_negative = True
    conditioning = ((0, "encoder_hidden_states"),)
    true_cfg = False

    def _single_block(self, name: str):
        return None  # the text length comes from the call (the sink's token count)

    def uses_guidance(self, guidance_scale: float) -> bool:
        return guidance_scale > 1

    def second_call(self, request) -> float | None:
        return float(request.guidance_scale) if request.guidance_scale > 1 else None

    def call_arguments(self, request) -> dict:
        args = {"guidance_scale": request.guidance_scale, "negative_prompt": request.negative_prompt}
        return self.declared_length(args)

    prompts_of = StableDiffusionAdapter.prompts_of  # one encoding of both prompts (not Flux.1's two)


class QwenImageAdapter(FluxAdapter):
    """Qwen-Image: dual-stream ``transformer_blocks.N.attn`` over [text | image], rotary per stream.

    The text is Qwen2.5-VL's last layer over the prompt in a chat template, the template's system
    prefix dropped: the keys are the prompt's tokens, then the template's closing tokens (kind
    ``template``), as many as the prompt needs (no padding but in a batch of prompts of unequal length,
    where the pipeline masks it). True CFG (a negative prompt and ``true_cfg_scale > 1``) runs the
    negative prompt as a second call, with its own text length, combined with the pipeline's norm
    rescale. ``guidance_scale`` does nothing on Qwen-Image and is not passed.
    """

    family = "Qwen-Image"
    family_guidance = 1.0
    attention_edits = False  # its processor refuses an attention_mask
    conditioning = ((0, "encoder_hidden_states"),)
    rotary_per_stream = True
    packing = 1  # the transformer's own patch_size (2) is the 2×2 packing
    text_name = "Qwen"

    @property
    def text_limit(self) -> int:
        return 512

    @property
    def latent_channels(self) -> int:
        return int(self.denoiser.config.in_channels) // 4

    def layers(self) -> list[CrossAttentionLayer]:
        return self._block_sites("transformer_blocks", "attn", 1)  # tokens are 2×2 latent patches

    def unpack(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.pipe._unpack_latents(latents, height, width, self.vae_scale_factor)[:, :, 0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        z = latents.to(device=vae.device, dtype=vae.dtype)[:, :, None]  # (n, C, 1, h, w): one frame
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(z.device, z.dtype)
        std = torch.tensor(vae.config.latents_std).view(shape).to(z.device, z.dtype)
        return vae.decode(z / (1.0 / std) + mean, return_dict=False)[0][:, :, 0]

    def combine(self, cond: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
        combined = negative + scale * (cond - negative)
        norm = torch.norm(cond, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True)
        return combined * norm  # rescaled per token to the conditional prediction's norm

    def _qwen_table(self, text: str, length: int, pad_to: int | None = None) -> pd.DataFrame:
        """The prompt's table inside the chat template (made once per prompt: every call asks its length)."""
        pipe = self.pipe
        drop = int(pipe.prompt_template_encode_start_idx)
        return self._cached(
            ("qwen", text, length, pad_to),
            lambda: template_table(pipe.tokenizer, pipe.prompt_template_encode, drop, text, length, pad_to),
        )

    def text_lengths(self, bound: dict) -> dict[str, int]:
        limit = int(bound.get("max_sequence_length") or 512)
        prompt = bound.get("prompt")
        texts = [prompt] if isinstance(prompt, str) else [t for t in (prompt or []) if isinstance(t, str)]
        kept = [self._kept(t, limit) for t in texts]
        return {"Qwen": limit, "padded": max(kept, default=0)}

    def _kept(self, text: str, limit: int) -> int:
        return self._cached(
            ("kept", text, limit), lambda: int((self._qwen_table(text, limit).kind != "cut").sum())
        )

    def token_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        table = self._qwen_table(text, lengths["Qwen"], lengths.get("padded"))
        return joined_table([("Qwen", table)])

    def cut_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        message = cut_message(self._qwen_table(text, lengths["Qwen"]), lengths["Qwen"], "Qwen")
        return [message] if message else []

    def unknown_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        return []  # a byte-level tokenizer has no unknown token

    def call_arguments(self, request) -> dict:
        args = {"true_cfg_scale": 1.0}  # off unless asked for (the pipeline's own default is 4.0)
        if request.negative_prompt is not None and (request.true_cfg_scale or 1.0) > 1:
            args.update(negative_prompt=request.negative_prompt, true_cfg_scale=request.true_cfg_scale)
        return self.declared_length(args)


class SanaAdapter(CrossDiTAdapter):
    """Sana: ``transformer_blocks.N.attn2`` cross-attention over Gemma-2 states (``attn1`` is linear
    attention over the image alone: no softmax, nothing to record). The prompt is lower-cased and read
    after an instruction prefix; the keys are BOS and the last ``max_sequence_length - 1`` positions
    (the prompt, padding masked). The negative prompt has no prefix. Sizes are multiples of 32; the call
    is made at the requested size (no resolution binning) with the prompt as typed (no caption cleaning).
    Sana 1.5's q/k norm spans all heads and is applied before the heads are split, as its processor does.
    """

    family = "Sana"
    family_guidance = 4.5
    text_name = "Gemma"

    @property
    def size_multiple(self) -> int:
        return math.lcm(32, self.vae_scale_factor * self.patch)  # the pipeline's check_inputs asks for 32

    @property
    def instruction(self) -> str:
        """The default instruction prefix (the pipeline's ``complex_human_instruction``), one string."""
        import inspect

        lines = inspect.signature(type(self.pipe).__call__).parameters["complex_human_instruction"].default
        return "\n".join(lines or [])

    def text_lengths(self, bound: dict) -> dict[str, int]:
        given = bound.get("complex_human_instruction", True)  # absent: the call's default, which is on
        return {"Gemma": int(bound.get("max_sequence_length") or 300), "instruction": int(bool(given))}

    def _text_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        prefix = self.instruction if lengths.get("instruction", 1) else ""
        return windowed_table(self.pipe.tokenizer, prefix, text, lengths["Gemma"])

    def negative_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        table = windowed_table(self.pipe.tokenizer, "", text, lengths["Gemma"])
        return joined_table([("Gemma", table)])

    def unknown_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        return []  # byte fallback: no unknown token

    def call_arguments(self, request) -> dict:
        return {**super().call_arguments(request), "use_resolution_binning": False, "clean_caption": False}


class ZImageAdapter(JointAdapter):
    """Z-Image: a single-stream DiT with no text stream; ``layers.N.attention`` attend over [image |
    caption] in one sequence (the ``noise_refiner`` / ``context_refiner`` blocks see one modality and are
    not text attention). The caption is Qwen3's second-to-last layer over the prompt in its chat template
    (template tokens kept, padding dropped), padded by the transformer to a multiple of 32 with a
    learned pad token that takes real attention mass (kind ``pad`` in the table). CFG (any
    ``guidance_scale > 0``) is one batch [conditional | negative].
    """

    family = "Z-Image"
    family_guidance = 5.0
    cond_first = True
    conditioning = ()  # the captions reach the transformer as a list: no prompt switch
    attention_edits = False
    replays_steps = False
    one_clip_encoder = False
    text_name = "Qwen3"

    @property
    def patch(self) -> int:
        return int(self.denoiser.config.all_patch_size[0])

    @property
    def default_size(self) -> int:
        declared = _MODEL_DEFAULTS.get(self.pipe, {}).get("size")
        return int(declared) if declared else 1024  # the pipeline's own, whatever the config

    @property
    def text_limit(self) -> int:
        return 512

    def latent_hw(self, height: int, width: int) -> tuple[int, int]:
        f = self.vae_scale_factor * 2
        return 2 * (height // f), 2 * (width // f)

    def layers(self) -> list[CrossAttentionLayer]:
        return self._block_sites("layers", "attention", int(math.log2(self.patch)))

    def observe(self, sink: AttentionSink) -> list:
        layout = self._layout  # read from the call under way (``call_shape``), then from each next call
        hook = self.denoiser.register_forward_pre_hook(
            lambda m, a, k: layout.read(m, a, k, self.patch), with_kwargs=True, prepend=True
        )
        undo = [hook.remove]
        for name in sink.layers:
            observer = UnifiedObserver(self.denoiser.get_submodule(name), name, sink, layout)
            undo += [h.remove for h in observer.install()]
        return undo

    def call_shape(self, args: tuple, kwargs: dict) -> tuple[int | None, int | None]:
        self._layout = UnifiedLayout()
        self._layout.read(None, args, kwargs, self.patch)
        images = kwargs.get("x", args[0] if args else None)
        captions = kwargs.get("cap_feats", args[2] if len(args) > 2 else None)
        if not isinstance(images, list) or not isinstance(captions, list):
            return None, None
        return len(images), max((padded(int(c.shape[0])) for c in captions), default=0)

    def uses_guidance(self, guidance_scale: float) -> bool:
        return guidance_scale > 0

    def combine(self, cond: torch.Tensor, negative: torch.Tensor, scale: float) -> torch.Tensor:
        return cond + scale * (cond - negative)

    @property
    def template(self) -> str:
        """The chat template around a prompt, ``{}`` where the prompt goes."""
        messages = [{"role": "user", "content": "{}"}]
        tok = self.pipe.tokenizer
        return tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=True
        )

    def _table(self, text: str, limit: int, pad_to: int | None = None) -> pd.DataFrame:
        """The prompt's table inside the chat template (made once per prompt: every call asks its length)."""
        return self._cached(
            ("template", text, limit, pad_to),
            lambda: template_table(self.pipe.tokenizer, self.template, 0, text, limit, pad_to),
        )

    def _padded(self, texts, limit: int) -> int:
        texts = [texts] if isinstance(texts, str) else [t for t in (texts or []) if isinstance(t, str)]
        return max((padded(self._kept(t, limit)) for t in texts), default=0)

    def _kept(self, text: str, limit: int) -> int:
        return self._cached(
            ("kept", text, limit), lambda: int((self._table(text, limit).kind != "cut").sum())
        )

    def text_lengths(self, bound: dict) -> dict[str, int]:
        limit = int(bound.get("max_sequence_length") or 512)
        prompts = bound.get("prompt")
        negatives = bound.get("negative_prompt")
        if negatives is None:
            negatives = [""] * (1 if isinstance(prompts, str) else len(prompts or []))
        return {
            "Qwen3": limit,
            "padded": self._padded(prompts, limit),
            "negative": self._padded(negatives, limit),
        }

    def token_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        return joined_table([("Qwen3", self._table(text, lengths["Qwen3"], lengths.get("padded")))])

    def negative_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        return joined_table([("Qwen3", self._table(text, lengths["Qwen3"], lengths.get("negative")))])

    def cut_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        message = cut_message(self._table(text, lengths["Qwen3"]), lengths["Qwen3"], "Qwen3")
        return [message] if message else []

    def unknown_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        return []  # byte-level: no unknown token

    def call_arguments(self, request) -> dict:
        args = {"guidance_scale": request.guidance_scale, "negative_prompt": request.negative_prompt}
        return self.declared_length(args)


class Flux2Adapter(FluxAdapter):
    """Flux.2 [klein] (``Flux2KleinPipeline``; Qwen3) and Flux.2 [dev] (``Flux2Pipeline``; Mistral 3):
    dual-stream ``transformer_blocks.N.attn`` and single-stream ``single_transformer_blocks.N.attn``
    (one fused q/k/v/MLP projection) over [text | image], Flux's rotary.

    The text is the prompt in the text encoder's chat template, padded to ``max_sequence_length``
    (512) with padding the transformer does not mask: every position is a key, template tokens
    (kind ``template``) and padding (``pad``) included, and takes real attention mass. [klein] guides with
    a second call per step against the empty prompt (no negative prompt); [dev] embeds its guidance.
    Latents are drawn patchified (4 × the latent channels at half the size), packed into tokens, and
    batch-normalised by the VAE's statistics; runs hold them unpatchified (C, h, w), still normalised.
    """

    family = "Flux.2"
    family_guidance = 4.0
    conditioning = ((0, "encoder_hidden_states"),)
    true_cfg = False
    negative_prompts = False
    attention_edits = False  # the single-stream blocks' q and k come from one fused projection
    text_name = "Qwen3"

    def _single_block(self, name: str):
        return None  # the single blocks get no text states: the call's text length

    def draw_noise(self, batch: int, channels: int, height: int, width: int, dtype, device, generator):
        h, w = self.latent_hw(int(height), int(width))
        shape = (batch, channels * 4, h // 2, w // 2)  # as the pipeline draws it: patchified
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        return self.pipe._pack_latents(self.pipe._patchify_latents(latents))

    def unpack(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        h, w = self.latent_hw(height, width)
        if latents.ndim == 3:  # tokens (B, N, 4C), row-major over the half-size grid
            latents = latents.permute(0, 2, 1).reshape(latents.shape[0], -1, h // 2, w // 2)
        return self.pipe._unpatchify_latents(latents)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) latents of the loop -> the VAE's own latent space (its batch-norm undone)."""
        vae = self.pipe.vae
        z = self.pipe._patchify_latents(latents.to(device=vae.device, dtype=vae.dtype))
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(z.device, z.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(
            z.device, z.dtype
        )
        return self.pipe._unpatchify_latents(z * std + mean)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.pipe.vae.decode(self.denormalize(latents), return_dict=False)[0]

    def uses_guidance(self, guidance_scale: float) -> bool:
        return False  # [klein]: a second call per step; [dev]: embedded

    def second_call(self, request) -> float | None:
        distilled = bool(getattr(self.pipe.config, "is_distilled", True))
        separate = type(self.pipe).__name__ == "Flux2KleinPipeline" and not distilled
        return float(request.guidance_scale) if separate and request.guidance_scale > 1 else None

    def prompts_of(self, bound: dict, call: int):
        if call == 0:
            return bound.get("prompt"), None
        return None  # the second encoding is the pipeline's own empty prompt

    @property
    def template(self) -> str:
        """The chat template around a prompt, ``{}`` where the prompt goes, as the pipeline renders it."""
        tok = self.pipe.tokenizer
        if type(self.pipe).__name__ == "Flux2KleinPipeline":
            messages = [{"role": "user", "content": "{}"}]
            return tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input

        messages = format_input(["{}"], system_message=self.pipe.system_message)[0]
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def _table(self, text: str, length: int) -> pd.DataFrame:
        dev = type(self.pipe).__name__ == "Flux2Pipeline"
        text = text.replace("[IMG]", "") if dev else text  # the pipeline drops it
        return template_table(
            self.pipe.tokenizer, self.template, 0, text, length, length, add_special_tokens=not dev
        )

    def text_lengths(self, bound: dict) -> dict[str, int]:
        return {self.text_name: int(bound.get("max_sequence_length") or 512)}

    def token_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        return joined_table([(self.text_name, self._table(text, lengths[self.text_name]))])

    def cut_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        length = lengths[self.text_name]
        message = cut_message(self._table(text, length), length, self.text_name)
        return [message] if message else []

    def unknown_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        return []

    def call_arguments(self, request) -> dict:
        args = {"guidance_scale": request.guidance_scale}
        return self.declared_length(args)


class Flux2DevAdapter(Flux2Adapter):
    """Flux.2 [dev]: Mistral 3's chat template with its system message; guidance embedded."""

    text_name = "Mistral3"


class CogView4Adapter(JointAdapter):
    """CogView4: ``transformer_blocks.N.attn1``, one softmax over [text | image] from one set of q/k
    projections over the joined sequence (the processor joins them), per-head LayerNorm, rotary on the
    image tokens alone (the two-halves form). The text is GLM-4's second-to-last layer over the prompt
    with its special tokens, padded in front to a multiple of 16: the pads are real keys (kind ``pad``).
    CFG is a second call per step (conditional first), the negative prompt at its own length.
    """

    family = "CogView4"
    family_guidance = 5.0
    empty_negative = True
    conditioning = ()  # the two prompts' texts may differ in length: no prompt switch
    text_first = True
    rotary = True
    rotary_text = False
    rotary_unbind = -2
    norm_taps = False
    separate_negative = True
    attention_edits = False  # a mask reaches its kernel as a float 0/1 matrix added to the scores
    one_clip_encoder = False

    @property
    def size_multiple(self) -> int:
        return math.lcm(16, self.vae_scale_factor * self.patch)  # check_inputs asks for 16

    @property
    def default_size(self) -> int:
        declared = _MODEL_DEFAULTS.get(self.pipe, {}).get("size")
        return int(declared) if declared else int(self.denoiser.config.sample_size) * self.vae_scale_factor

    @property
    def text_limit(self) -> int:
        return 1024

    def layers(self) -> list[CrossAttentionLayer]:
        return self._block_sites("transformer_blocks", "attn1", int(math.log2(self.patch)))

    def uses_guidance(self, guidance_scale: float) -> bool:
        return False  # a second call per step

    def second_call(self, request) -> float | None:
        return float(request.guidance_scale) if request.guidance_scale > 1 else None

    def _count(self, texts, limit: int) -> int:
        texts = [texts] if isinstance(texts, str) else [t for t in (texts or []) if isinstance(t, str)]
        n = max((min(self._tokens(t), limit) for t in texts), default=0)
        return n + (16 - n % 16) % 16

    def _tokens(self, text: str) -> int:
        return self._cached(("tokens", text), lambda: len(self.pipe.tokenizer(text)["input_ids"]))

    def text_lengths(self, bound: dict) -> dict[str, int]:
        limit = int(bound.get("max_sequence_length") or 1024)
        prompts = bound.get("prompt")
        negatives = bound.get("negative_prompt") or ""
        return {
            "GLM": limit,
            "padded": self._count(prompts, limit),
            "negative": self._count(negatives, limit),
        }

    def token_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        return joined_table(
            [("GLM", front_padded_table(self.pipe.tokenizer, text, lengths["GLM"], lengths.get("padded")))]
        )

    def negative_table(self, text: str, lengths: dict[str, int]) -> pd.DataFrame:
        table = front_padded_table(self.pipe.tokenizer, text, lengths["GLM"], lengths.get("negative"))
        return joined_table([("GLM", table)])

    def cut_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        message = cut_message(
            front_padded_table(self.pipe.tokenizer, text, lengths["GLM"]), lengths["GLM"], "GLM"
        )
        return [message] if message else []

    def unknown_messages(self, text: str, lengths: dict[str, int]) -> list[str]:
        return []

    def call_arguments(self, request) -> dict:
        negative = "" if request.negative_prompt is None else request.negative_prompt
        return self.declared_length({"guidance_scale": request.guidance_scale, "negative_prompt": negative})


ADAPTERS = {
    "StableDiffusionPipeline": StableDiffusionAdapter,
    "StableDiffusionXLPipeline": StableDiffusionXLAdapter,
    "StableDiffusion3Pipeline": StableDiffusion3Adapter,
    "FluxPipeline": FluxAdapter,
    "PixArtSigmaPipeline": PixArtSigmaAdapter,
    "ChromaPipeline": ChromaAdapter,
    "QwenImagePipeline": QwenImageAdapter,
    "SanaPipeline": SanaAdapter,
    "ZImagePipeline": ZImageAdapter,
    "Flux2KleinPipeline": Flux2Adapter,
    "Flux2Pipeline": Flux2DevAdapter,
    "CogView4Pipeline": CogView4Adapter,
}


def adapter_for(pipe) -> StableDiffusionAdapter:
    """The adapter for a pipeline, or a ``NotImplementedError`` naming what is supported."""
    cls = ADAPTERS.get(type(pipe).__name__)
    if cls is None:
        raise NotImplementedError(f"{type(pipe).__name__} is not supported; supported: {sorted(ADAPTERS)}")
    try:
        known = _ADAPTERS.get(pipe)
    except TypeError:  # a pipeline that cannot be weakly referenced: a fresh adapter each time
        return cls(pipe)
    if type(known) is not cls:
        known = _ADAPTERS[pipe] = cls(pipe)
    return known
