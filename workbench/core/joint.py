"""Observing joint attention (SD3, Flux): image-query × text-key probabilities, from taps alone.

In an MM-DiT, image and text tokens attend together: one softmax over [image | text] keys (SD3) or
[text | image] keys (Flux). What the model computed for "image region → prompt token" is the
image-query × text-key block **of that joint softmax**, which is what is recorded here (with the
additive ``attention_mask`` the call passed, if any: an edit's bias is part of what was computed).

Nothing of the attention module is replaced: the stock processor (and whichever attention backend it
dispatches to) computes the output. Taps (``taps.py``) hand over the very projections it computed (``to_q``,
``to_k`` and, for the text stream, ``add_q_proj``/``add_k_proj``); the module's own q/k norms and, for
Flux, diffusers' own rotary embedding are applied to them exactly as the processor does, and the
probabilities are formed beside it in float32, a few heads at a time.
"""

from __future__ import annotations

import torch

from . import dispatch, taps
from .attention import AttentionSink, block_bytes


class JointObserver:
    """Records one joint-attention module's image → text probabilities into a sink.

    Args:
        attn: the attention module (``Attention`` with ``JointAttnProcessor2_0``, or ``FluxAttention``).
        name: its module path inside the denoiser.
        sink: where the probabilities go.
        text_first: key order is [text | image] (Flux) rather than [image | text] (SD3).
        rotary: the processor applies rotary embeddings (``image_rotary_emb``) to Q and K (Flux).
        rotary_per_stream: the rotary embedding is a pair (image table, text table) of complex
            frequencies applied to each stream before they are joined (Qwen-Image).
        block: for single-stream blocks, the block whose ``encoder_hidden_states`` say how many of
            the concatenated tokens are text; ``None`` where the text stream has its own projections.
    """

    def __init__(
        self,
        attn,
        name: str,
        sink: AttentionSink,
        *,
        text_first: bool,
        rotary: bool,
        block=None,
        rotary_per_stream: bool = False,
        heads_first: bool = False,
        rotary_text: bool = True,
        rotary_unbind: int = -1,
        norm_taps: bool = True,
    ):
        self.attn, self.name, self.sink = attn, name, sink
        self.text_first, self.rotary, self.block = text_first, rotary, block
        self.rotary_per_stream = rotary_per_stream
        self.heads_first = heads_first  # the processor normalises (batch, heads, tokens, dim) (SD3)
        self.rotary_text = rotary_text  # the rotary turns the text tokens too (Flux); CogView4: image only
        self.rotary_unbind = rotary_unbind  # -1: interleaved pairs (Flux); -2: halves (CogView4)
        self.norm_taps = norm_taps  # False where the processor changes the norms' outputs in place
        self.normed = False  # q and k are taken after the module's own q/k norms (set by ``install``)
        self.watching = False  # the processor's kernel inputs reach ``kernel_inputs`` (set by ``install``)
        self.heads = int(attn.heads)
        self._reset()

    def _reset(self) -> None:
        self.q = self.k = self.text_k = self.rotary_emb = self.mask = self.text_mask = None
        self.kernel: tuple[torch.Tensor, torch.Tensor] | None = None  # (query, key) the kernel got
        self.text_len: int | None = None

    def install(self) -> list:
        """Tap the module and its projections; returns the handles (``handle.remove()`` undoes each)."""
        attn = self.attn
        handles = [taps.before(attn, self._before), taps.after(attn, self._after)]
        watch = dispatch.watch(attn.processor)  # q and k as the kernel gets them, where it can be read
        self.watching = watch is not None
        handles += [watch] if watch is not None else []
        stream = getattr(attn, "add_k_proj", None) is not None and self.block is None  # text has its own
        norms = [attn.norm_q, attn.norm_k] + ([getattr(attn, "norm_added_k", None)] if stream else [])
        self.normed = self.norm_taps and all(n is not None for n in norms)
        if self.normed:  # the processor's own normalised q and k, (batch, tokens, heads, head_dim)
            slots = ["q", "k", "text_k"][: len(norms)]
            handles += [taps.after(n, self._keep(slot)) for n, slot in zip(norms, slots)]
            return handles + self._block_tap()
        fused = getattr(attn, "to_qkv_mlp_proj", None)  # Flux.2's single-stream blocks: one projection
        if fused is not None:
            handles.append(taps.after(fused, self._keep_fused))
        else:
            handles += [
                taps.after(attn.to_q, self._keep("q")),
                taps.after(attn.to_k, self._keep("k")),
            ]
        if stream:
            handles.append(taps.after(attn.add_k_proj, self._keep("text_k")))
        return handles + self._block_tap()

    def _block_tap(self) -> list:
        if self.block is None:
            return []
        return [taps.before(self.block, self._block_text)]

    def _keep(self, slot: str):
        def keep(module, args, kwargs, output):
            if self.sink.wants(self.name):
                setattr(self, slot, output)

        return keep

    def _keep_fused(self, module, args, kwargs, output) -> None:
        """Q and K from a fused [q | k | v | mlp] projection: its first two ``inner_dim`` column blocks,
        as the processor splits them."""
        if self.sink.wants(self.name):
            inner = int(self.attn.inner_dim)
            self.q, self.k = output[..., :inner], output[..., inner : 2 * inner]

    def _block_text(self, module, args, kwargs) -> None:
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        self.text_len = None if context is None else int(context.shape[1])

    def _before(self, module, args, kwargs) -> None:
        text_len = self.text_len
        self._reset()
        self.text_len = text_len
        if self.watching and self.sink.wants(self.name):
            dispatch.expect(self)
        self.rotary_emb = kwargs.get("image_rotary_emb", args[3] if len(args) > 3 else None)
        self.mask = kwargs.get("attention_mask", args[2] if len(args) > 2 else None)  # an edit's bias
        context = kwargs.get("encoder_hidden_states")
        if context is not None and getattr(module, "add_k_proj", None) is None:  # joined in the processor
            self.text_len = int(context.shape[1])  # (CogView4: one projection over [text | image])
        self.text_mask = kwargs.get("encoder_hidden_states_mask")  # (batch, text) keys kept (Qwen-Image)

    def kernel_inputs(self, query: torch.Tensor, key: torch.Tensor) -> None:
        """The joint query and key the processor handed its attention kernel: (batch, tokens, heads,
        head_dim) each, after every norm, join and rotary (kept only in that layout)."""
        if query.ndim == 4 and query.shape[2] == self.heads and key.shape[:1] == query.shape[:1]:
            self.kernel = (query, key)

    def _after(self, module, args, kwargs, output) -> None:
        if self.watching:
            dispatch.expect(None)
        if not self.sink.wants(self.name) or self.q is None or self.k is None:
            self._reset()
            return
        # (rows, heads | 1, image queries, text keys), float32
        self.sink.write_branches(self.name, self.q.shape[0], self.q.device, self.probs)
        self._reset()

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, heads · head_dim) -> (batch, tokens, heads, head_dim)."""
        return x.unflatten(-1, (self.heads, -1))

    def queries_and_keys(self, rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """The image queries and every key of the joint sequence as the processor forms them (q/k norms,
        rotary), for the batch rows ``rows``: (rows, image tokens, heads, head_dim) and (rows, tokens,
        heads, head_dim), plus the number of text tokens and the index of the first image token in the
        sequence. Text queries are not formed: no recorded probability reads them."""
        read = self._from_kernel(rows) if self.kernel is not None else None
        if read is not None:
            return read
        attn = self.attn
        normed = self.normed  # taken after the norms already: nothing to split or normalise
        q, k = self._per_head(self.q[rows]), self._per_head(self.k[rows])
        if self.text_k is not None:  # a separate text stream: q and k of the image, the text's own keys
            tk = self._per_head(self.text_k[rows])
            text_len, n_image = tk.shape[1], q.shape[1]
            if not normed:
                q, k = _norm(attn.norm_q, q), _norm(attn.norm_k, k)
                tk = _norm(getattr(attn, "norm_added_k", None), tk)
            if self.rotary_per_stream and self.rotary_emb is not None:
                q, k, tk = _rotate_streams(q, k, tk, self.rotary_emb)
            k = torch.cat([tk, k] if self.text_first else [k, tk], dim=1)
        else:  # single stream: [text | image] concatenated by the block
            text_len = self._text_len()
            n_image = q.shape[1] - text_len
            start = text_len if self.text_first else 0
            q = q[:, start : start + n_image]  # the norm is per token: the image rows alone
            if not normed:
                q, k = _norm(attn.norm_q, q), _norm(attn.norm_k, k)
        first_image = text_len if self.text_first else 0
        if self.rotary and not self.rotary_per_stream and self.rotary_emb is not None:
            from diffusers.models.embeddings import apply_rotary_emb

            turn = dict(sequence_dim=1, use_real_unbind_dim=self.rotary_unbind)
            if self.rotary_text:  # one table over the joint sequence
                image = slice(first_image, first_image + n_image)
                q = apply_rotary_emb(q, tuple(t[image] for t in self.rotary_emb), **turn)
                k = apply_rotary_emb(k, self.rotary_emb, **turn)
            else:  # a table of the image tokens alone; the text keys are not turned
                q = apply_rotary_emb(q, self.rotary_emb, **turn)
                kt, ki = (
                    (k[:, :text_len], k[:, text_len:])
                    if self.text_first
                    else (k[:, n_image:], k[:, :n_image])
                )
                ki = apply_rotary_emb(ki, self.rotary_emb, **turn)
                k = torch.cat([kt, ki] if self.text_first else [ki, kt], dim=1)
        return q, k, text_len, first_image

    def _from_kernel(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:
        """``queries_and_keys`` read from the kernel's own inputs (nothing is formed again); None unless
        they are the whole joint sequence, queries and keys alike."""
        query, key = self.kernel
        n_image, keys = self._sizes()
        if not query.shape[1] == key.shape[1] == keys:
            return None
        text_len = keys - n_image
        first_image = text_len if self.text_first else 0
        return query[rows, first_image : first_image + n_image], key[rows], text_len, first_image

    def _per_head(self, x: torch.Tensor) -> torch.Tensor:
        """A kept projection as (batch, tokens, heads, head_dim)."""
        if self.normed:  # a normalised q or k, in whichever layout the processor used
            return x.transpose(1, 2) if self.heads_first else x
        return self._split(x)

    def _sizes(self) -> tuple[int, int]:
        """(image queries, joint keys) of the call under way."""
        tokens_dim = 2 if self.normed and self.heads_first else 1
        queries, keys = self.q.shape[tokens_dim], self.k.shape[tokens_dim]
        if self.text_k is not None:
            return queries, keys + self.text_k.shape[tokens_dim]
        return queries - self._text_len(), keys

    def _text_len(self) -> int:
        if self.text_len is not None:  # from the block's own text input
            return self.text_len
        if getattr(self.sink, "tokens", None):  # the block gets no text input: the call's text length
            return int(self.sink.tokens)
        raise RuntimeError(f"cannot tell the text tokens of {self.name}: it has no text stream")

    def probs(self, rows: slice = slice(None)) -> torch.Tensor:
        """The image-query × text-key block of the joint softmax, for the batch rows ``rows``:
        (rows, heads | 1, queries, text), float32."""
        batch = len(range(self.q.shape[0])[rows])
        n_image, keys = self._sizes()
        # score blocks of at most ``block_bytes``: several heads at once on small models, some query rows
        # of one head at a time on large ones (a softmax is per query row: row blocks change only rounding)
        limit = block_bytes(self.q.device)
        per_head = batch * n_image * keys * 4
        heads_at_once = max(1, min(self.heads, limit // max(per_head, 1)))
        rows_at_once = n_image if per_head <= limit else max(1, limit // (batch * keys * 4))
        mean = self.sink.policy.heads == "mean"
        mask = self.mask
        if mask is not None and mask.shape[0] > 1:
            mask = mask[rows]
        q_image, k, text_len, first_image = self.queries_and_keys(rows)
        text = slice(0, text_len) if self.text_first else slice(n_image, n_image + text_len)
        keep = self._text_keys(rows, batch, text_len, n_image)  # (B, 1, 1, S) kept, or None
        scale = q_image.shape[-1] ** -0.5  # the attention kernels' default scale
        q_image = (q_image.float() * scale).transpose(1, 2)  # (B, H, N, D), the scale folded in
        k = k.float().permute(0, 2, 3, 1)  # (B, H, D, S)
        parts = []
        for h in range(0, self.heads, heads_at_once):
            hs = slice(h, min(h + heads_at_once, self.heads))
            m = None if mask is None else (mask[:, hs] if mask.shape[1] > 1 else mask)
            blocks = [
                _block(q_image[:, hs], k[:, hs], slice(r, r + rows_at_once), m, keep, first_image, text)
                for r in range(0, n_image, rows_at_once)
            ]
            p = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)  # (B, h, N, T)
            parts.append(p.sum(dim=1, keepdim=True) if mean else p)
        if mean:
            total = parts[0] if len(parts) == 1 else torch.stack(parts).sum(dim=0)
            return total / self.heads  # (B, 1, N, T)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, H, N, T)

    def _text_keys(self, rows: slice, batch: int, text_len: int, n_image: int) -> torch.Tensor | None:
        """The joint keys a boolean text mask keeps for the batch rows ``rows`` (text positions as
        masked, every image key): (batch, 1, 1, keys), or None without a text mask."""
        if self.text_mask is None:
            return None
        text = self.text_mask.bool()
        text = (text[rows] if text.shape[0] > 1 else text).reshape(batch, text_len)
        image = text.new_ones(batch, n_image)
        joint = torch.cat([text, image] if self.text_first else [image, text], dim=1)
        return joint[:, None, None, :]


def _block(q_image, k, queries: slice, mask, keep, first_image: int, text: slice) -> torch.Tensor:
    """Text probabilities of the image query rows ``queries``: (B, h, n, T), from q (B, h, N, D) with the
    scale folded in, k (B, h, D, S), the processor's mask for these heads (or None) and the kept keys."""
    scores = q_image[:, :, queries] @ k  # (B, h, n, S)
    if mask is not None:  # the mask the processor got (an edit; Chroma's padding), image rows
        if mask.shape[2] > 1:
            start = first_image + (queries.start or 0)
            mask = mask[:, :, start : start + scores.shape[2]]
        if mask.dtype == torch.bool:  # kept where True, as the attention kernel reads a boolean mask
            scores = scores.masked_fill(~mask, float("-inf"))
        else:  # a float mask is added to the scores
            scores = scores + mask.float()
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.softmax(dim=-1)[..., text]


def _norm(norm, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)


def _rotate_streams(q, k, tk, rotary_emb):
    """Qwen-Image's rotary: (image table, text table) of complex frequencies, each multiplied into its
    stream's interleaved channel pairs; (batch, tokens, heads, head_dim) in and out, dtypes kept."""
    image, text = rotary_emb

    def rotate(x, freqs):
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * freqs[None, :, None]).flatten(3).to(x.dtype)

    return rotate(q, image), rotate(k, image), rotate(tk, text)
