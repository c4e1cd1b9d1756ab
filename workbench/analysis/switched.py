"""A switched run's attention indexed by its own prompt's tokens.

From a prompt switch's step on (``Edit.switch``), the denoiser's conditional text is the switched-to
prompt's, so the token axis of the recorded attention holds that prompt's positions
(``run.switch_tokens``). Analysis reads a run by its own prompt's words: here the steps from the switch
on are re-indexed so that each token of the prompt holds the attention of the same token of the same word
in the switched-to prompt (``core.tokens.aligned_positions``: words aligned by identity, repeats in
order, special tokens by kind). A word the switched-to prompt lacks has no attention from the switch on;
the attention to its own extra words is not shown. The recorded store is left as it is.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch

from ..core.attention import AttentionStore
from ..core.run import Run
from ..core.tokens import aligned_positions


def in_prompt_positions(run: Run, store: AttentionStore) -> AttentionStore:
    """``store`` (the run's conditional attention) with the steps from the run's prompt switch on
    re-indexed by the run's own prompt's tokens; ``store`` itself for a run that was not switched."""
    step = run.switch_step
    if step is not None and run.switch_tokens is None:
        warnings.warn(
            f"this run's prompt was switched at step {step}, but it was saved before runs kept the "
            "switched-to prompt's tokens: from that step on its maps show that prompt's attention under "
            "this prompt's words (generate it again to read them by word)",
            stacklevel=3,
        )
    if step is None or run.switch_tokens is None or not store.probs:
        return store
    first = next((i for i, s in enumerate(store.steps) if s >= step), None)
    if first is None:
        return store
    a, b = (torch.tensor(p, dtype=torch.long) for p in aligned_positions(run.tokens, run.switch_tokens))
    probs = {}
    for name, t in store.probs.items():
        out = t.clone()
        out[first:] = 0
        out[first:, ..., a] = t[first:, ..., b]
        probs[name] = out
    return replace(store, probs=probs)
