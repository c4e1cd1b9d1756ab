"""Observing a single-stream DiT with no text stream (Z-Image): image and text tokens in one sequence.

Per image the main layers attend over [image | image pad | caption | caption pad | batch pad]: the image
is padded to a multiple of 32 tokens, the caption likewise (pads are learned tokens, real keys that take
attention mass); only batch padding is masked. The layout exists only at the transformer's input (a
list of latents and a list of captions of their own lengths), so a pre-hook on the transformer reads
it for the call; each attention module's observer then takes its image rows × the caption columns
(caption pads included) of the softmax the processor computed, from the very ``to_q``/``to_k`` outputs,
with the module's own q/k norms and the complex rotary (``freqs_cis``) it was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import taps
from .attention import AttentionSink

MULTIPLE = 32  # diffusers' SEQ_MULTI_OF: image and caption are padded to a multiple of this many tokens
HEAD_CHUNK = 4


def padded(n: int) -> int:
    return -(-n // MULTIPLE) * MULTIPLE


@dataclass
class UnifiedLayout:
    """Where the image and each caption sit in a call's unified sequences (set by the transformer hook)."""

    n_image: int = 0
    captions: list[int] = field(default_factory=list)  # real caption tokens of each batch row

    @property
    def text_start(self) -> int:
        return padded(self.n_image)

    def text_keys(self, rows: slice) -> int:
        """The caption keys (caption pads included) of the longest caption among ``rows``."""
        return max((padded(n) for n in self.captions[rows]), default=0)

    def read(self, module, args, kwargs, patch: int) -> None:
        images = kwargs.get("x", args[0] if args else None)
        captions = kwargs.get("cap_feats", args[2] if len(args) > 2 else None)
        c, f, h, w = images[0].shape
        self.n_image = f * (h // patch) * (w // patch)
        self.captions = [int(cap.shape[0]) for cap in captions]


class UnifiedObserver:
    """Records one unified-sequence attention module's image → caption probabilities into a sink."""

    def __init__(self, attn, name: str, sink: AttentionSink, layout: UnifiedLayout):
        self.attn, self.name, self.sink, self.layout = attn, name, sink, layout
        self.heads = int(attn.heads)
        self._reset()

    def _reset(self) -> None:
        self.q = self.k = self.mask = self.freqs = None

    def install(self) -> list:
        attn = self.attn
        return [
            taps.before(attn, self._before),
            taps.after(attn, self._after),
            taps.after(attn.to_q, self._keep("q")),
            taps.after(attn.to_k, self._keep("k")),
        ]

    def _keep(self, slot: str):
        def keep(module, args, kwargs, output):
            if self.sink.wants(self.name):
                setattr(self, slot, output)

        return keep

    def _before(self, module, args, kwargs) -> None:
        self._reset()
        self.mask = kwargs.get("attention_mask")
        self.freqs = kwargs.get("freqs_cis")

    def _after(self, module, args, kwargs, output) -> None:
        if self.sink.wants(self.name) and self.q is not None and self.k is not None:
            self.sink.write_branches(  # (rows, heads | 1, image, the caption keys of these rows)
                self.name,
                self.q.shape[0],
                self.q.device,
                lambda rows: self.probs(rows)[..., : self.layout.text_keys(rows)],
            )
        self._reset()

    def _heads(self, x: torch.Tensor, norm, rows: slice) -> torch.Tensor:
        x = x[rows].unflatten(-1, (self.heads, -1))  # (B, S, H, D)
        if norm is not None:
            x = norm(x)
        if self.freqs is not None:  # adjacent channel pairs turned by complex frequencies (B, S, D/2)
            freqs = self.freqs[rows] if self.freqs.shape[0] > 1 else self.freqs
            pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
            x = torch.view_as_real(pairs * freqs[:, :, None]).flatten(3).type_as(x)
        return x

    def probs(self, rows: slice = slice(None)) -> torch.Tensor:
        """The image-query × caption-key block of the joint softmax for the batch rows ``rows``."""
        q = self._heads(self.q, self.attn.norm_q, rows).float()
        k = self._heads(self.k, self.attn.norm_k, rows).float()
        mask = None if self.mask is None else self.mask.bool()[rows]
        n, start = self.layout.n_image, self.layout.text_start
        scale = q.shape[-1] ** -0.5
        mean = self.sink.policy.heads == "mean"
        parts = []
        for h in range(0, self.heads, HEAD_CHUNK):
            hs = slice(h, min(h + HEAD_CHUNK, self.heads))
            scores = torch.einsum("bnhd,bshd->bhns", q[:, :n, hs], k[:, :, hs]) * scale  # (B, h, N, S)
            if mask is not None:  # batch padding: a boolean key mask (B, S)
                scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
            p = scores.softmax(dim=-1)[..., start:]
            parts.append(p.sum(dim=1, keepdim=True) if mean else p)
        if mean:
            return torch.stack(parts).sum(dim=0) / self.heads
        return torch.cat(parts, dim=1)
