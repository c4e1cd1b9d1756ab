"""Where an edit's bias goes, per kind of attention layer.

- ``CrossSite`` (UNet cross-attention, SD 1.x/2.x and SDXL): the stock processor adds an
  ``attention_mask`` to its scores; the bias is passed as one, per head: (rows · heads, queries | 1, text).
- ``JointSite`` (SD3, Flux): one softmax over [image | text] (SD3) or [text | image] (Flux) keys; the
  bias fills the image-query × text-key block of a (rows, heads | 1, L, L) mask and is 0 elsewhere
  (text queries are never edited). Flux's processor takes the mask as it is; SD3's stock processor
  ignores masks, so on SD3 an edited call of a layer runs ``masked_joint_attention`` (the same math
  with the mask), and every other call the stock processor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.edit import EditError
from ..core.joint import JointObserver


class CrossSite:
    """A UNet cross-attention layer (``attn2``)."""

    def __init__(self, attn):
        self.attn = attn

    def sizes(self, given: dict) -> tuple[int, int] | None:
        """(rows, text keys) of this call, or None when it is not a cross-attention call."""
        context = given.get("encoder_hidden_states")
        return None if context is None else (given["hidden_states"].shape[0], context.shape[1])

    def log_probs(self, given: dict, rows: list[int]) -> torch.Tensor:
        """log softmax(Q·Kᵀ·scale) of the given rows: (rows, heads, queries, text + 1) float32, computed
        as the recorder computes the probabilities; the last column (the keys that are not text) is -inf."""
        attn = self.attn
        if attn.group_norm is not None or attn.spatial_norm is not None or attn.norm_cross:
            raise EditError("kind", "replace edits need a cross-attention layer without input norms")
        x, context = given["hidden_states"][rows], given["encoder_hidden_states"][rows]
        q = attn.to_q(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2).float()
        k = attn.to_k(context).unflatten(-1, (attn.heads, -1)).transpose(1, 2).float()
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        scores = q @ k.transpose(-1, -2) * attn.scale
        # log of the very probabilities an observer records (so a source that is this call's own maps
        # gives a bias of exactly 0); log_softmax where a probability underflowed to 0
        p = scores.softmax(dim=-1)
        logp = torch.where(p > 0, p.log(), scores.log_softmax(dim=-1))
        return torch.nn.functional.pad(logp, (0, 1), value=-torch.inf)  # no keys but text

    def apply(self, given: dict, bias: torch.Tensor) -> dict:
        """``given`` with the bias added to its attention mask."""
        hidden = given["hidden_states"]
        heads = self.attn.heads
        bias = bias[..., :-1]  # no keys but text here
        rows, _, queries, text = bias.shape
        mask = bias.expand(rows, heads, queries, text).reshape(rows * heads, queries, text)
        mask = mask.to(device=hidden.device, dtype=hidden.dtype)
        old = given.get("attention_mask")
        if old is not None:
            old = self.attn.prepare_attention_mask(old, text, rows)  # (rows · heads, 1 | queries, text)
            mask = old + mask
        return {**given, "attention_mask": mask}

    def restore(self) -> None:
        pass


class JointSite:
    """A joint-attention layer of SD3 or Flux (dual- or single-stream)."""

    def __init__(self, attn, *, text_first: bool, rotary: bool, needs_processor: bool):
        self.attn, self.text_first, self.rotary = attn, text_first, rotary
        self.text_len = 0  # the call's text positions: set when a call starts
        self.stock = None
        if needs_processor:  # SD3: the stock processor ignores masks
            self.stock = attn.processor
            attn.processor = _MaskedJoint(self.stock)

    def sizes(self, given: dict) -> tuple[int, int] | None:
        context = given.get("encoder_hidden_states")  # None in a single-stream block: text is joined in
        return given["hidden_states"].shape[0], (self.text_len if context is None else context.shape[1])

    def log_probs(self, given: dict, rows: list[int]) -> torch.Tensor:
        """log of the image-query rows of the joint softmax at the text keys, and of their total on the
        image keys: (rows, heads, image queries, text + 1) float32. Q and K are formed as the processor forms them (projections, q/k norms,
        and on Flux the rotary embedding), by the same code that records joint attention."""
        attn = self.attn
        x = given["hidden_states"][rows]
        context = given.get("encoder_hidden_states")
        observer = JointObserver(attn, "", None, text_first=self.text_first, rotary=self.rotary)
        observer.q, observer.k = attn.to_q(x), attn.to_k(x)
        if context is not None:
            observer.text_k = attn.add_k_proj(context[rows])
        observer.text_len = self.text_len
        observer.rotary_emb = given.get("image_rotary_emb")
        q_image, k, text_len, first_image = observer.queries_and_keys()
        n_image = q_image.shape[1]
        q_image = q_image.float().transpose(1, 2)  # (B, H, N, D)
        scores = q_image @ k.float().permute(0, 2, 3, 1) * q_image.shape[-1] ** -0.5  # (B, H, N, S)
        p = scores.softmax(dim=-1)
        logp = torch.where(p > 0, p.log(), scores.log_softmax(dim=-1))
        text = slice(0, text_len) if self.text_first else slice(n_image, n_image + text_len)
        image = slice(text_len, None) if self.text_first else slice(0, n_image)
        others = scores[..., image].logsumexp(-1, keepdim=True) - scores.logsumexp(-1, keepdim=True)
        return torch.cat([logp[..., text], others], dim=-1)

    def apply(self, given: dict, bias: torch.Tensor) -> dict:
        hidden = given["hidden_states"]
        others = bias[..., -1:]  # the bias of the image keys
        bias = bias[..., :-1]
        rows, heads, queries, text = bias.shape
        context = given.get("encoder_hidden_states")
        total = hidden.shape[1] + (context.shape[1] if context is not None else 0)
        image = total - text
        if given.get("attention_mask") is not None:
            raise EditError(
                "kind", "this joint-attention call already has an attention mask; it cannot be edited"
            )
        mask = torch.zeros(rows, heads, total, total, dtype=torch.float32)
        image_rows = slice(text, total) if self.text_first else slice(0, image)
        text_cols = slice(0, text) if self.text_first else slice(image, total)
        image_cols = slice(text, total) if self.text_first else slice(0, image)
        mask[:, :, image_rows, text_cols] = bias  # queries | 1 broadcast over the image rows
        mask[:, :, image_rows, image_cols] = others
        return {**given, "attention_mask": mask.to(device=hidden.device, dtype=hidden.dtype)}

    def restore(self) -> None:
        if self.stock is not None:
            self.attn.processor = self.stock
            self.stock = None


class _MaskedJoint:
    """SD3's joint attention: the stock processor, or the same math with a mask when one is given."""

    def __init__(self, stock):
        self.stock = stock

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if attention_mask is None:
            return self.stock(attn, hidden_states, encoder_hidden_states, None, *args, **kwargs)
        return masked_joint_attention(attn, hidden_states, encoder_hidden_states, attention_mask)


def masked_joint_attention(attn, hidden_states, encoder_hidden_states, attention_mask):
    """SD3 joint attention over [image | text] with an additive mask on the scores.

    Q, K, V of the image stream (``to_q``/``to_k``/``to_v``, then ``norm_q``/``norm_k``) and of the text
    stream (``add_*_proj``, then ``norm_added_*``) are joined on the token axis, attended with the mask,
    split again and projected out (``to_out``; the text stream's ``to_add_out`` unless the block is
    ``context_pre_only``).
    """
    n_image = hidden_states.shape[1]

    def split(x):  # (B, L, H·D) -> (B, H, L, D)
        return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)

    q, k, v = (
        split(attn.to_q(hidden_states)),
        split(attn.to_k(hidden_states)),
        split(attn.to_v(hidden_states)),
    )
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    if encoder_hidden_states is not None:
        tq = split(attn.add_q_proj(encoder_hidden_states))
        tk = split(attn.add_k_proj(encoder_hidden_states))
        tv = split(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_added_q is not None:
            tq = attn.norm_added_q(tq)
        if attn.norm_added_k is not None:
            tk = attn.norm_added_k(tk)
        q, k, v = torch.cat([q, tq], dim=2), torch.cat([k, tk], dim=2), torch.cat([v, tv], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask.to(q.dtype))
    out = out.transpose(1, 2).flatten(2).to(q.dtype)
    image, text = out[:, :n_image], out[:, n_image:]
    image = attn.to_out[1](attn.to_out[0](image))
    if encoder_hidden_states is None:
        return image
    if not attn.context_pre_only:
        text = attn.to_add_out(text)
    return image, text
