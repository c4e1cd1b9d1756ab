"""The additive bias an edited layer adds to its image-query × text-key scores at one step.

Every edit is a bias on the scores before the softmax, so each row stays a probability distribution
over all of its keys:

- reweight by ``w`` (ablate: ``w = 0``): ``log w`` on the word's key positions, so the row becomes
  ``p·w / Σ p·w``;
- replace: with ``p`` the row the layer would compute and ``p'`` the source's probabilities on the
  aligned positions A, the bias is ``log p' − log p`` on A and ``log(1 − Σ_A p') − log(1 − Σ_A p)`` on
  every other key (text and, in a joint softmax, image), so the row becomes exactly ``p'`` on A and
  ``p`` rescaled to the rest of the mass elsewhere. (The rest's term is kept off A: where nearly all
  of a row's mass is on A, ``1 − Σ_A p`` is mostly rounding, and it then scales only that tiny rest.)

Several edits at one layer and step act in their order: a replace takes the row as the edits before it
left it, and the keys an earlier replace set keep their probabilities (the rest of the row takes what
remains), so replaces of several word sets act as one replace of their union, and one given twice as once.
A key an earlier edit removed (an ablation) stays removed, and the rest of the row takes its share.

Shapes: ``(rows, heads | 1, queries | 1, text + 1)``: rows are the denoiser batch's rows (only the
conditional ones get a bias); the last column is the bias of every key that is not text (the image
keys of a joint softmax; a cross-attention layer has none).
"""

from __future__ import annotations

import torch

from ..core.edit import EditError
from .plan import Placed

TINY = 1e-30  # floor of 1 − Σ_A p: a row whose whole mass is on A keeps a finite bias


def text_bias(
    active: list[Placed],
    cond_rows: list[int],
    row_prompt: list[int],
    rows: int,
    heads: int,
    text: int,
    *,
    layer: str = "",
    step: int = 0,
    log_probs=None,
    sources: dict | None = None,
) -> torch.Tensor:
    """The bias of the active edits (``Placed``) at one layer and step (float32).

    Args:
        cond_rows: the denoiser rows that are conditional; ``row_prompt[i]`` is the prompt of
            ``cond_rows[i]``.
        heads, text: the layer's head count and text key positions.
        log_probs: for replace edits, a callable giving the layer's log-probabilities for the
            conditional rows: (len(cond_rows), heads, queries, text + 1) float32, the last column the
            log of the mass on every key that is not text (-inf for cross-attention).
        sources: source prompt -> its recorded ``Run``.
    """
    per_head = any(p.edit.heads is not None for p in active)
    replacing = [p for p in active if p.edit.kind == "replace"]
    logp = log_probs() if replacing else None
    queries = logp.shape[2] if logp is not None else 1
    if logp is not None and logp.shape[-1] != text + 1:
        raise RuntimeError(f"log_probs gave {logp.shape[-1]} columns for {text} text keys (+1)")
    bias = torch.zeros(rows, heads if (per_head or replacing) else 1, queries, text + 1)
    # per conditional row and head: the keys an earlier replace set, which a later one leaves as they are
    pinned = torch.zeros(len(cond_rows), bias.shape[1], 1, text + 1, dtype=torch.bool)
    for n, placed in enumerate(active):
        keep = torch.ones(bias.shape[1], dtype=torch.bool)
        if placed.edit.heads is not None:
            keep[:] = False
            keep[list(placed.edit.heads)] = True
        part = torch.zeros(len(cond_rows), bias.shape[1], queries, text + 1)
        if placed.edit.kind == "replace":
            # the row as the edits before this one left it (they act in order)
            now = logp if n == 0 else (logp + bias[cond_rows]).log_softmax(-1)
            part += _replace(placed, now, row_prompt, layer, step, sources or {}, pinned)
            for i, prompt in enumerate(row_prompt):
                cols = torch.zeros(text + 1, dtype=torch.bool)
                cols[placed.pairs[prompt].target] = True
                pinned[i] |= keep[:, None, None] & cols
        else:
            logw = _fit(placed.log_weights.float(), text)  # (prompts, text)
            part[..., :text] += logw[row_prompt][:, None, None, :]
        part[:, ~keep] = 0
        bias[cond_rows] += part
    return bias


def _fit(t: torch.Tensor, n: int) -> torch.Tensor:
    """Pad or cut the last axis to ``n``."""
    return torch.nn.functional.pad(t, (0, max(n - t.shape[-1], 0)))[..., :n]


def _replace(
    placed: Placed,
    logp: torch.Tensor,
    row_prompt: list[int],
    layer: str,
    step: int,
    sources,
    pinned: torch.Tensor,
) -> torch.Tensor:
    """(cond rows, heads, queries, text + 1): the bias that puts the source's probabilities on the pairs.

    ``logp`` is the row as it stands; ``pinned`` (cond rows, heads, 1, text + 1) marks keys an earlier
    replace set: they keep their probabilities, and the rest of the row (neither the pairs nor pinned)
    takes what remains, so replaces of several word sets act as one replace of their union."""
    edit = placed.edit
    run = sources[edit.source]
    store = run.attention
    if layer not in store.probs or step not in store.steps:
        raise EditError(
            "source",
            f"the source run of {edit.source!r} did not record layer {layer} at step {step}; record it "
            "with heads='all', dtype='float32' at the edited layers and steps",
        )
    src = store.probs[layer][store.steps.index(step)].float()  # (heads | 1, queries, source text)
    out = torch.zeros_like(logp)
    text = logp.shape[-1] - 1
    for i, prompt in enumerate(row_prompt):
        pairs = placed.pairs[prompt]
        if not len(pairs.target):
            continue
        wanted = src[..., pairs.source].clamp_min(0)  # (heads | 1, queries, n)
        if wanted.shape[-2] != logp.shape[2]:
            raise EditError("source", f"the source's grid at {layer} differs from this call's (sizes differ)")
        have = logp[i][..., pairs.target]  # (heads, queries, n)
        outside = torch.ones(text + 1, dtype=torch.bool)
        outside[pairs.target] = False
        held = pinned[i] & outside  # (heads, 1, text + 1): set by an earlier replace, not by this one
        rest = outside & ~held
        # the mass of the rest, summed directly (not 1 − Σ_A p, which is rounding where A holds nearly all)
        if held.any():
            rest_have = logp[i].masked_fill(~rest, -torch.inf).logsumexp(-1, keepdim=True)
        else:
            rest_have = logp[i][..., outside].logsumexp(-1, keepdim=True)
        kept = torch.ones(src.shape[-1], dtype=torch.bool)
        kept[pairs.source] = False
        beyond = (1 - src.sum(-1, keepdim=True)).clamp_min(0)  # the source's non-text keys (joint)
        rest_want = src[..., kept].clamp_min(0).sum(-1, keepdim=True) + beyond
        if held.any():  # what the pinned keys hold is not the rest's to take
            rest_want = rest_want - logp[i].masked_fill(~held, -torch.inf).exp().sum(-1, keepdim=True)
            rest_want = rest_want.clamp_min(0)
        removed = torch.isneginf(have)  # keys of A an earlier edit removed: their share goes to the rest
        if removed.any():
            rest_want = rest_want + (wanted * removed).sum(-1, keepdim=True)
        rest_bias = rest_want.log() - rest_have  # -inf: A takes all
        # a rest (or a key of A) an earlier edit removed (-inf) stays removed: no bias could bring it back
        rest_bias = torch.where(torch.isneginf(rest_have), 0.0, rest_bias)
        out[i] = rest_bias.expand(*have.shape[:-1], text + 1)
        out[i][held.expand_as(out[i])] = 0.0
        out[i][..., pairs.target] = torch.where(removed, 0.0, wanted.log() - have)
    return out
