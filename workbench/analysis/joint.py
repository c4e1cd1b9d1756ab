"""Joint attention (SD3, Flux): the recorded text block, and the same block renormalised over text.

What is recorded for a joint-attention model is the image-query × text-key block of the joint softmax
over [image | text] keys: what the model computed. Each row of it sums to the share of attention the
query gives the text, not to 1. Some analyses want "where would this query attend among the words
alone": a softmax over the text keys only. Dividing each recorded row by its own sum gives exactly that
(exp(s_j) / Σ_text exp(s_k)), so it is offered here as a named, explicit step, never done silently.
"""

from __future__ import annotations

import dataclasses

import torch

from workbench.core.attention import AttentionStore
from workbench.core.run import Run


def text_share(store: AttentionStore) -> dict[str, torch.Tensor]:
    """Per layer, the share of each query's attention that went to the text keys: (steps, heads | 1, queries).

    1 everywhere for UNet cross-attention (its keys are all text); below 1 for joint attention.
    """
    return {name: p.float().sum(dim=-1) for name, p in store.probs.items()}


def over_text(run: Run) -> Run:
    """The run with every attention row renormalised over the text keys (a softmax over text alone).

    Returns a new ``Run`` whose stores hold float32 ``p / p.sum(-1)`` per query; the original is
    untouched. For UNet cross-attention this changes nothing but float rounding.

    Example:
        >>> maps = word_maps(over_text(run), "all-mean")  # doctest: +SKIP
    """

    def renormalised(store: AttentionStore | None) -> AttentionStore | None:
        if store is None:
            return None
        probs = {}
        for name, p in store.probs.items():
            p = p.float()  # (steps, heads | 1, queries, tokens)
            probs[name] = p / p.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        return dataclasses.replace(store, probs=probs)

    return dataclasses.replace(
        run, attention=renormalised(run.attention), negative_attention=renormalised(run.negative_attention)
    )
