"""Cross-attention probabilities: the store that holds them and the processor that observes them.

The observer only taps the layer (``taps.py``): the stock processor (SDPA or whatever was installed)
computes the layer's output untouched, and the probabilities softmax(Q·Kᵀ·scale) are computed beside it
from the very outputs of the same module's ``to_q``/``to_k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from . import taps
from .layers import CrossAttentionLayer
from .policy import RecordingPolicy


@dataclass
class AttentionStore:
    """Cross-attention probabilities of one branch, keyed by layer module path.

    Attributes:
        probs: layer path -> (steps, heads | 1, queries, tokens) tensor; queries run row-major over
            the layer's grid ``shapes[layer]``.
        steps: the denoising step indices kept (the first axis of every tensor).
        shapes: layer path -> (rows, cols) of the query grid.
        heads: ``"mean"`` (heads averaged at record time) or ``"all"``.
        head_counts: layer path -> how many heads the layer has (so a sum over heads can be
            recovered exactly from a mean); empty for stores saved before it was recorded.
    """

    probs: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    heads: str = "mean"
    head_counts: dict[str, int] = field(default_factory=dict)

    def layer_names(self, resolution: str | int | None = None) -> list[str]:
        """Layer paths, optionally only those of one resolution (``"16x16"`` or its larger side)."""
        if resolution is None:
            return list(self.probs)
        if isinstance(resolution, int):
            return [n for n in self.probs if max(self.shapes[n]) == resolution]
        return [n for n in self.probs if f"{self.shapes[n][0]}x{self.shapes[n][1]}" == resolution]

    def resolutions(self) -> list[str]:
        seen = dict.fromkeys(f"{h}x{w}" for h, w in self.shapes.values())
        return list(seen)

    def grid(self, layer: str) -> torch.Tensor:
        """One layer's maps on its spatial grid: (steps, heads | 1, rows, cols, tokens)."""
        h, w = self.shapes[layer]
        p = self.probs[layer]  # (steps, heads, queries, tokens)
        return p.reshape(p.shape[0], p.shape[1], h, w, p.shape[-1])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.probs.values())

    def to_dataframe(self) -> pd.DataFrame:
        """One row per (step, layer, token): the attention mass the token receives, averaged over queries."""
        frames = []
        for name, p in self.probs.items():
            mass = p.float().mean(dim=(1, 2))  # (steps, tokens)
            steps, tokens = mass.shape
            frames.append(
                pd.DataFrame(
                    {
                        "step": [s for s in self.steps for _ in range(tokens)],
                        "layer": name,
                        "resolution": f"{self.shapes[name][0]}x{self.shapes[name][1]}",
                        "position": list(range(tokens)) * steps,
                        "mass": mass.reshape(-1).tolist(),
                    }
                )
            )
        if not frames:
            return pd.DataFrame(columns=["step", "layer", "resolution", "position", "mass"])
        return pd.concat(frames, ignore_index=True)


CPU_BLOCK_BYTES = 1 << 22  # scores formed at once on a CPU: small blocks reuse warm memory (on 2 cores,
# 4 MB blocks of Flux.1 scores were twice as fast as 19 MB ones)
CPU_STACK_BYTES = 1 << 19  # deferred cross-attention on a CPU: many small layer-steps stacked (on 2 cores,
# a tiny UNet's 25 steps computed in 512 KB stacks took half the time of 4 MB ones)
DEVICE_BLOCK_BYTES = 1 << 28  # on an accelerator: few large blocks (every block is several launches)


def block_bytes(device: torch.device, stacked: bool = False) -> int:
    """The most bytes of attention scores formed at once on ``device`` (``stacked``: of deferred
    cross-attention layer-steps)."""
    if device.type != "cpu":
        return DEVICE_BLOCK_BYTES
    return CPU_STACK_BYTES if stacked else CPU_BLOCK_BYTES


class AttentionSink:
    """Preallocated storage the observers write into: per branch, layer and image, one row per kept step.

    ``layers`` are the layers the policy keeps (``policy.select_layers``, chosen once per call).
    """

    FLUSH_BYTES = 64 * 2**20  # the scores of deferred layers, at most, before they are computed

    def __init__(
        self,
        policy: RecordingPolicy,
        layers: list[CrossAttentionLayer],
        latent_hw: tuple[int, int],
        tokens: int,
        total_steps: int,
        batch: int,
        pinned: bool = False,
        separate_negative: bool = False,
        cond_first: bool = False,
    ):
        self.policy = policy
        self.pinned = pinned and policy.device == "cpu"  # the denoiser runs on CUDA: async copies land here
        self.layers = {layer.name: layer for layer in layers}
        self.kept = policy.kept_steps(total_steps)
        self.row_of = {s: i for i, s in enumerate(self.kept)}
        self.batch = batch
        self.tokens = tokens  # text key positions of the call (a single-stream block's text length)
        self.written: set[str] = set()  # branches written to (their text length is then fixed)
        # cross-attention work deferred (``defer``), done together by ``flush``
        self.pending: list[tuple] = []
        self.pending_bytes = 0  # the float32 scores the deferred layers will take, at most
        self.separate_negative = separate_negative  # the negative branch is a second call, not a batch half
        self.cond_first = cond_first  # a guidance batch is [conditional | negative] (Z-Image)
        self._step = 0  # the denoising step the denoiser is working on
        self._call = 0  # which denoiser call of this step (a negative branch may run as a second call)
        self.recording = False  # whether the call under way is recorded (its step kept, its call wanted)
        self._position()
        self.shapes = {n: layer.grid(*latent_hw) for n, layer in self.layers.items()}
        branches = ["cond", "uncond"] if policy.negative else ["cond"]
        # branch -> layer -> one (kept steps, heads | 1, queries, tokens) tensor per image
        self.buffers: dict[str, dict[str, list[torch.Tensor]]] = {b: {} for b in branches}
        for b in branches:
            for n, layer in self.layers.items():
                h, w = self.shapes[n]
                heads = layer.heads if policy.heads == "all" else 1
                shape = (len(self.kept), heads, h * w, tokens)
                self.buffers[b][n] = [self._buffer(shape) for _ in range(batch)]

    @property
    def step(self) -> int:
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        self._step = value
        self._position()

    @property
    def call(self) -> int:
        return self._call

    @call.setter
    def call(self, value: int) -> None:
        self._call = value
        self._position()

    def _position(self) -> None:
        """Decide, once per denoiser call, whether its attention is recorded (observers read ``recording``)."""
        self.recording = self._step in self.row_of and self._call < (2 if self.separate_negative else 1)

    def wants(self, layer: str) -> bool:
        return self.recording and layer in self.layers

    def branches(self, rows: int, call: int | None = None) -> dict[str, slice]:
        """Which rows of a denoiser batch belong to which branch, for the call under way (or ``call``).

        Classifier-free guidance in one batch is [unconditional | conditional]; where the negative
        branch runs as a second call, the first call is the conditional one and the second the negative.
        """
        b = self.batch
        if self.separate_negative:
            second = (self._call if call is None else call) == 1
            return {"uncond" if second else "cond": slice(0, rows)}
        if rows == 2 * b and self.cond_first:  # Z-Image: [conditional | negative]
            return {"cond": slice(0, b), "uncond": slice(b, 2 * b)}
        if rows == 2 * b:
            return {"uncond": slice(0, b), "cond": slice(b, 2 * b)}
        return {"cond": slice(0, rows)}

    def _buffer(self, shape: tuple) -> torch.Tensor:
        """A zeroed store buffer where the policy keeps attention; in pinned memory when the probabilities
        come from a GPU, so that they arrive by asynchronous copies."""
        p = self.policy
        return torch.zeros(shape, dtype=p.torch_dtype, device=p.device, pin_memory=self.pinned)

    def _resize(self, branch: str, tokens: int) -> None:
        """Give ``branch`` buffers of ``tokens`` text positions (before its first write): families whose
        text is not padded to one length (Qwen-Image) give the negative prompt its own length."""
        for layer, bufs in self.buffers[branch].items():
            shape = (*bufs[0].shape[:-1], tokens)
            self.buffers[branch][layer] = [self._buffer(shape) for _ in bufs]

    def defer(self, layer: str, q: torch.Tensor, k: torch.Tensor, heads: int, scale: float) -> None:
        """Keep a plain cross-attention layer's projections (no norms, no mask) of the whole denoiser
        batch, as they are, for ``flush``: the probabilities of many layers and steps are computed
        together, and nothing but this append runs inside the layer."""
        self.pending.append((layer, self._step, self._call, q, k, heads, scale))
        self.pending_bytes += 4 * heads * q.shape[0] * q.shape[1] * k.shape[1]  # its scores, every row

    def flush_if_due(self) -> None:
        """Flush once the deferred layers' scores would take ``FLUSH_BYTES``: small models batch many
        steps into one computation, large ones flush every step or two."""
        if self.pending_bytes >= self.FLUSH_BYTES:
            self.flush()

    @torch.no_grad()
    def flush(self, before: int | None = None) -> None:
        """Compute and write the deferred layers (of steps before ``before``, if given; the others are
        of a step the call never finished). Interrupted, it keeps them deferred: ``finish`` does them."""
        pending, pending_bytes = self.pending, self.pending_bytes
        self.pending, self.pending_bytes = [], 0
        try:
            self._compute([it for it in pending if before is None or it[1] < before])
        except BaseException:
            self.pending, self.pending_bytes = pending + self.pending, pending_bytes + self.pending_bytes
            raise

    def _compute(self, items: list) -> None:
        """Deferred layers of one shape, scale and call as one batched softmax per branch (a few MB of
        scores at a time), then written, a run of consecutive steps of a layer by one copy."""
        groups: dict[tuple, list] = {}
        for item in items:
            layer, step, call, q, k, heads, scale = item
            groups.setdefault((q.shape, k.shape, heads, scale, call), []).append(item)
        for (q_shape, k_shape, heads, scale, call), group in groups.items():
            group.sort(key=lambda it: (it[0], it[1]))  # a layer's steps in a row
            limit = block_bytes(group[0][3].device, stacked=True)
            for branch, rows in self.branches(q_shape[0], call).items():
                if branch not in self.buffers:
                    continue
                size = len(range(q_shape[0])[rows])
                chunk = max(1, limit // (4 * size * heads * q_shape[1] * k_shape[1]))
                for first in range(0, len(group), chunk):
                    part = group[first : first + chunk]
                    probs = self._probs([it[3] for it in part], [it[4] for it in part], rows, heads, scale)
                    for start, end in self._runs(part):
                        layer, step = part[start][:2]
                        self._store_rows(layer, branch, self.row_of[step], probs[start:end])

    def _runs(self, group: list):
        """(start, end) of each stretch of ``group`` (sorted by layer, step) that fills consecutive rows of
        one layer's buffers."""
        start = 0
        for i in range(1, len(group) + 1):
            a, b = group[i - 1], group[i] if i < len(group) else None
            if b is None or a[0] != b[0] or self.row_of[b[1]] != self.row_of[a[1]] + 1:
                yield start, i
                start = i

    def _probs(self, qs: list, ks: list, rows: slice, heads: int, scale: float) -> torch.Tensor:
        """softmax(Q·Kᵀ·scale) of the batch ``rows`` of projections stacked: (n, rows, heads | 1,
        queries, tokens), float32."""
        with torch.autocast(qs[0].device.type, enabled=False):  # float32 whatever the caller's autocast
            return self._float_probs(qs, ks, rows, heads, scale)

    def _float_probs(self, qs: list, ks: list, rows: slice, heads: int, scale: float) -> torch.Tensor:
        q = _stacked(qs, rows)  # (n, B, N, inner)
        k = _stacked(ks, rows)  # (n, B, T, inner)
        q = q.unflatten(-1, (heads, -1)).transpose(2, 3).float() * scale  # (n, B, H, N, D)
        k = k.unflatten(-1, (heads, -1)).transpose(2, 3).float()  # (n, B, H, T, D)
        probs = (q @ k.transpose(-1, -2)).softmax(dim=-1)  # (n, B, H, N, T)
        if self.policy.heads == "mean":
            probs = probs.mean(dim=2, keepdim=True)
        return probs

    def write(self, layer: str, branch: str, probs: torch.Tensor) -> None:
        """Store one step of one layer: probs (batch, heads, queries, tokens), float32."""
        if branch not in self.buffers:
            return
        bufs = self.buffers[branch][layer]
        if probs.shape[-1] != bufs[0].shape[-1] and branch not in self.written:
            self._resize(branch, probs.shape[-1])  # a branch whose text is as long as its own prompt
            bufs = self.buffers[branch][layer]
        self.written.add(branch)
        if probs.shape[0] != len(bufs) or probs.shape[-2] != bufs[0].shape[-2]:
            raise RuntimeError(
                f"layer {layer} produced {tuple(probs.shape)}, expected {len(bufs)} images on the grid "
                f"{self.shapes[layer]}"
            )
        if self.policy.heads == "mean" and probs.shape[1] != 1:
            probs = probs.mean(dim=1, keepdim=True)  # (batch, 1, queries, tokens)
        self._store(layer, branch, self.step, probs)

    def write_branches(self, layer: str, rows: int, device: torch.device, probs_of) -> None:
        """Write, for each recorded branch of a denoiser batch of ``rows``, ``probs_of(its rows)``:
        computed in float32 whatever the caller's autocast, and with no graph."""
        for branch, batch_rows in self.branches(rows).items():
            if branch in self.buffers:  # only the rows of a recorded branch are scored
                with torch.no_grad(), torch.autocast(device.type, enabled=False):
                    probs = probs_of(batch_rows)
                self.write(layer, branch, probs)

    def _store(self, layer: str, branch: str, step: int, probs: torch.Tensor) -> None:
        self._store_rows(layer, branch, self.row_of[step], probs.unsqueeze(0))

    def _store_rows(self, layer: str, branch: str, row: int, probs: torch.Tensor) -> None:
        """Write probs (steps, batch, heads | 1, queries, tokens) into consecutive rows from ``row``."""
        for image, buf in enumerate(self.buffers[branch][layer]):
            # one conversion; asynchronous into pinned memory
            buf[row : row + probs.shape[0]].copy_(probs[:, image], non_blocking=True)

    def finish(self, steps_done: int) -> list[dict[str, AttentionStore]]:
        """Per image, the stores of each branch holding the steps that completed (after
        ``flush(before=steps_done)``, whose copies off an accelerator the caller has waited for)."""
        rows = [i for i, s in enumerate(self.kept) if s < steps_done]
        full = len(rows) == len(self.kept)
        out = []
        for image in range(self.batch):
            stores = {}
            for branch, layers in self.buffers.items():
                probs = {n: (t[image] if full else t[image][: len(rows)].clone()) for n, t in layers.items()}
                stores[branch] = AttentionStore(
                    probs=probs,
                    steps=[self.kept[i] for i in rows],
                    shapes=dict(self.shapes),
                    heads=self.policy.heads,
                    head_counts={n: layer.heads for n, layer in self.layers.items()},
                )
            out.append(stores)
        return out


class CrossObserver:
    """Records one cross-attention layer's softmax(Q·Kᵀ·scale) beside the stock processor, by taps alone.

    The layer keeps its own processor (SDPA or whatever was installed), so every keyword argument and
    the attention kernel are exactly as without recording. Q and K are the very tensors the processor
    computed: taps on the layer's ``to_q`` and ``to_k`` hand them over, so nothing is
    projected twice. Where a processor does not call them (fused QKV projections), they are recomputed
    from the layer's inputs.
    """

    def __init__(self, attn, layer: str, sink: AttentionSink):
        self.attn, self.layer, self.sink = attn, layer, sink
        self.plain = attn.norm_q is None and attn.norm_k is None  # no norms: deferred unless masked
        self.q: torch.Tensor | None = None
        self.k: torch.Tensor | None = None

    def install(self) -> list:
        """Tap the layer and its projections; returns the handles (``handle.remove()`` undoes each)."""
        attn = self.attn
        return [
            taps.after(attn, self._after),
            taps.after(attn.to_q, self._keep_q),
            taps.after(attn.to_k, self._keep_k),
        ]

    def _keep_q(self, module, args, kwargs, output) -> None:
        self.q = output  # a reference: read by ``_after`` if the step is recorded

    def _keep_k(self, module, args, kwargs, output) -> None:
        self.k = output

    def _after(self, module, args, kwargs, output) -> None:
        q, k = self.q, self.k
        self.q = self.k = None
        if not self.sink.recording:
            return
        names = ("hidden_states", "encoder_hidden_states", "attention_mask")
        given = {**dict(zip(names, args)), **kwargs} if len(args) > 1 else kwargs  # usually by keyword
        context, mask = given.get("encoder_hidden_states"), given.get("attention_mask")
        if context is None:
            return
        if q is not None and k is not None and mask is None and self.plain:
            self.sink.defer(self.layer, q, k, self.attn.heads, self.attn.scale)
            return
        hidden_states = args[0] if args else kwargs.get("hidden_states")
        try:
            with torch.no_grad():
                self._record(hidden_states, context, mask, q, k)
        finally:  # projections recomputed here pass the taps too: none may be taken for the next call's
            self.q = self.k = None

    def _record(self, hidden_states, context, attention_mask, q, k) -> None:
        attn = self.attn
        for branch, rows in self.sink.branches(hidden_states.shape[0]).items():
            if branch not in self.sink.buffers:
                continue
            mask = (
                None
                if attention_mask is None
                else _mask_rows(attention_mask, rows, hidden_states.shape[0], attn.heads)
            )
            if q is not None and k is not None:
                probs = probs_from_projections(attn, q[rows], k[rows], mask)
            else:
                probs = attention_probs(attn, hidden_states[rows], context[rows], mask)
            self.sink.write(self.layer, branch, probs)


STACK_WHOLE_BYTES = 1 << 16  # tensors up to this size are stacked whole and cut once


def _stacked(tensors: list, rows: slice) -> torch.Tensor:
    """The batch ``rows`` of each tensor, stacked: small tensors are stacked whole and cut once (one
    operation, where cutting each costs more than copying a row too many), large ones cut first."""
    if tensors[0].numel() * tensors[0].element_size() <= STACK_WHOLE_BYTES:
        return torch.stack(tensors)[:, rows]
    return torch.stack([t[rows] for t in tensors])


def _mask_rows(mask: torch.Tensor, rows: slice, batch: int, heads: int) -> torch.Tensor:
    """The batch rows ``rows`` of an attention mask given per row (batch, ...) or per row and head
    (batch · heads, ...), in the same form."""
    if mask.shape[0] == batch * heads and heads > 1:
        return mask.unflatten(0, (batch, heads))[rows].flatten(0, 1)
    return mask[rows]


def attention_probs(attn, hidden_states, context, attention_mask=None) -> torch.Tensor:
    """softmax(Q·Kᵀ·scale) of a diffusers ``Attention`` module from its inputs, in float32.

    Returns (batch, heads, queries, tokens).
    """
    x = hidden_states
    if x.ndim == 4:  # (batch, channels, h, w) -> (batch, h*w, channels)
        x = x.flatten(2).transpose(1, 2)
    if attn.group_norm is not None:
        x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    return probs_from_projections(attn, attn.to_q(x), attn.to_k(context), attention_mask)


def _full_width(norm, width: int) -> bool:
    """Whether ``norm`` normalises a whole projection (every head at once) rather than one head."""
    if norm is None:
        return False
    weight = getattr(norm, "weight", None)
    size = weight.shape[-1] if weight is not None else getattr(norm, "dim", None)
    if isinstance(size, (tuple, list, torch.Size)):
        size = size[-1]
    return size == width


def probs_from_projections(attn, q: torch.Tensor, k: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """softmax(Q·Kᵀ·scale) from projected queries (batch, queries, inner) and keys (batch, tokens, inner)."""
    batch, heads = q.shape[0], attn.heads
    head_dim = k.shape[-1] // heads
    across = _full_width(attn.norm_q, q.shape[-1]) and heads > 1  # Sana 1.5: one norm over every head
    if across:
        q, k = attn.norm_q(q), attn.norm_k(k)
    q = q.view(batch, -1, heads, head_dim).transpose(1, 2)  # (batch, heads, queries, head_dim)
    k = k.view(batch, -1, heads, head_dim).transpose(1, 2)  # (batch, heads, tokens, head_dim)
    if attn.norm_q is not None and not across:
        q = attn.norm_q(q)
    if attn.norm_k is not None and not across:
        k = attn.norm_k(k)
    scores = (q.float() * attn.scale) @ k.float().transpose(-1, -2)  # (batch, heads, queries, tokens)
    if attention_mask is not None:
        mask = attn.prepare_attention_mask(attention_mask, k.shape[2], batch)
        scores = scores + mask.view(batch, heads, -1, mask.shape[-1]).float()
    return scores.softmax(dim=-1)
