"""Cross-attention with explicit probabilities, for the training-time attention supervision.

`ProbsCrossAttnProcessor` computes the same output as diffusers' stock attention processors
(softmax(Q K^T * attn.scale) V, then to_out), but materialises the probabilities, with their
gradients, and hands them to a shared `ProbsSink`; training pulls them towards the objects' masks.
Recording for analysis goes through the workbench core instead (`workbench.generate`), which keeps
the stock processors and computes the probabilities beside them. These processors are only
installed for training; the shipped model runs on the stock ones.

Each layer is one of `workbench.core.layers.cross_attention_layers(unet)`: its `name` keys the sink
and its `grid(latent_h, latent_w)` says how the queries lie on the latent.

Example:
    sink = ProbsSink()
    originals = install(unet, sink)
    unet(latents, t, text)          # sink.probs[layer] -> (batch, heads, queries, tokens)
    restore(unet, originals)
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention

from workbench.core.layers import cross_attention_layers


class ProbsSink:
    """Holds the latest call's cross-attention probabilities per layer (with grad unless detach)."""

    def __init__(self, detach: bool = False) -> None:
        self.detach = detach
        self.probs: dict[str, torch.Tensor] = {}  # layer -> (batch, heads, queries, tokens)

    def clear(self) -> None:
        self.probs = {}

    def put(self, name: str, probs: torch.Tensor) -> None:
        self.probs[name] = probs.detach() if self.detach else probs


class ProbsCrossAttnProcessor:
    """Stock attention math with the probabilities computed explicitly and sent to a sink."""

    def __init__(self, name: str, sink: ProbsSink) -> None:
        self.name = name
        self.sink = sink

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,  # (batch, queries, channels)
        encoder_hidden_states: torch.Tensor | None = None,  # (batch, tokens, text channels)
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
            raise ValueError("ProbsCrossAttnProcessor supports transformer-block cross-attention only")
        if attention_mask is not None:
            raise ValueError("ProbsCrossAttnProcessor does not support attention masks")
        residual = hidden_states
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        b, q_len, _ = hidden_states.shape
        heads = attn.heads
        q = attn.to_q(hidden_states)  # (b, queries, inner)
        k = attn.to_k(context)  # (b, tokens, inner)
        v = attn.to_v(context)  # (b, tokens, inner)
        d = q.shape[-1] // heads
        q = q.view(b, q_len, heads, d).transpose(1, 2)  # (b, heads, queries, d)
        k = k.view(b, -1, heads, d).transpose(1, 2)  # (b, heads, tokens, d)
        v = v.view(b, -1, heads, d).transpose(1, 2)  # (b, heads, tokens, d)
        probs = torch.softmax((q @ k.transpose(-1, -2)) * attn.scale, dim=-1)  # (b, heads, queries, tokens)
        self.sink.put(self.name, probs)
        out = (probs @ v).transpose(1, 2).reshape(b, q_len, heads * d)  # (b, queries, inner)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install(unet, sink: ProbsSink) -> dict:
    """Put probability-recording processors on every cross-attention layer; returns the originals."""
    originals = dict(unet.attn_processors)
    procs = dict(originals)
    for layer in cross_attention_layers(unet):
        procs[f"{layer.name}.processor"] = ProbsCrossAttnProcessor(layer.name, sink)
    unet.set_attn_processor(procs)
    return originals


def restore(unet, originals: dict) -> None:
    """Put back the processors returned by install (a copy is passed: diffusers pops entries)."""
    unet.set_attn_processor(dict(originals))
