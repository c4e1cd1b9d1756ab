"""Cross-attention with explicit probabilities, for training supervision and a fallback recorder.

`ProbsCrossAttnProcessor` computes the same output as diffusers' stock attention processors
(softmax(Q K^T * attn.scale) V, then to_out), but materialises the probabilities and hands them to
a shared `ProbsSink`. Training uses them for the attention-localisation loss; evaluation can use
them to record maps when the workbench core is not available. The shipped model always runs on
the stock processors: these are only installed temporarily.

Example:
    sink = ProbsSink()
    originals = install(unet, sink)
    unet(latents, t, text)          # sink.probs[layer] -> (batch, heads, queries, tokens)
    restore(unet, originals)
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention


class ProbsSink:
    """Holds cross-attention probabilities per layer: the latest call's (kept with grad when
    training), or with accumulate=True the detached sum over calls and the number of calls."""

    def __init__(self, detach: bool = False, accumulate: bool = False) -> None:
        self.detach = detach or accumulate
        self.accumulate = accumulate
        self.probs: dict[str, torch.Tensor] = {}  # layer -> (batch, heads, queries, tokens)
        self.calls: dict[str, int] = {}

    def clear(self) -> None:
        self.probs = {}
        self.calls = {}

    def put(self, name: str, probs: torch.Tensor) -> None:
        if self.detach:
            probs = probs.detach()
        if self.accumulate and name in self.probs:
            self.probs[name] = self.probs[name] + probs
        else:
            self.probs[name] = probs
        self.calls[name] = self.calls.get(name, 0) + 1

    def mean(self) -> dict[str, torch.Tensor]:
        """Accumulated probabilities divided by the number of calls per layer."""
        return {k: v / self.calls[k] for k, v in self.probs.items()}


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


def cross_attention_layers(unet: torch.nn.Module) -> list[str]:
    """Processor keys of the cross-attention (attn2) layers."""
    return [k for k in unet.attn_processors if ".attn2." in k]


def install(unet, sink: ProbsSink) -> dict:
    """Put probability-recording processors on every attn2 layer; returns the originals."""
    originals = dict(unet.attn_processors)
    procs = dict(originals)
    for key in cross_attention_layers(unet):
        procs[key] = ProbsCrossAttnProcessor(key.removesuffix(".processor"), sink)
    unet.set_attn_processor(procs)
    return originals


def restore(unet, originals: dict) -> None:
    """Put back the processors returned by install (a copy is passed: diffusers pops entries)."""
    unet.set_attn_processor(dict(originals))


def layer_resolution(queries: int) -> int:
    """Side of the square latent grid a layer with this many queries attends over."""
    side = int(round(queries**0.5))
    if side * side != queries:
        raise ValueError(f"{queries} queries is not a square grid")
    return side
