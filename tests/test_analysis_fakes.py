"""Hand-made runs for analysis tests: a known token table, a known attention store, known latents."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from PIL import Image

from workbench.core.attention import AttentionStore
from workbench.core.run import Run, RunConfig

DOWN = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
MID = "mid_block.attentions.0.transformer_blocks.0.attn2"
SHAPES = {DOWN: (4, 8), MID: (2, 4)}  # a 4x8 latent; the image is 8x16 (non-square on purpose)
TOKENS = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread per test module (autouse where imported): on a shared 2-core machine tiny
    models run about 10x faster than with two threads competing for busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def token_rows(words: list[list[str]], limit: int = TOKENS) -> pd.DataFrame:
    """A token table: BOS, the words' tokens (a word may have several), EOS, padding."""
    rows = [dict(position=0, token_id=0, token="<s>", word_index=-1, word="<s>", kind="bos")]
    for wi, pieces in enumerate(words):
        for piece in pieces:
            rows.append(
                dict(
                    position=len(rows),
                    token_id=10 + len(rows),
                    token=piece,
                    word_index=wi,
                    word="".join(pieces),
                    kind="word",
                )
            )
    rows.append(dict(position=len(rows), token_id=1, token="</s>", word_index=-1, word="</s>", kind="eos"))
    while len(rows) < limit:
        rows.append(
            dict(position=len(rows), token_id=1, token="</s>", word_index=-1, word="</s>", kind="pad")
        )
    return pd.DataFrame(rows)


def fake_run(
    probs: dict[str, torch.Tensor] | None = None,
    *,
    words: list[list[str]] | None = None,
    steps: list[int] | None = None,
    heads: str = "mean",
    prompt: str | None = None,
    seed: int = 0,
    total_steps: int = 5,
    sha: str = "abc",
    latents: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
    head_counts: dict[str, int] | None = None,
) -> Run:
    """A Run with the given attention (default: everything on BOS) over 5 steps, 3 kept.

    ``head_counts`` default: the heads kept where ``heads="all"``, else one head per layer (a model
    whose layers have one head each); pass ``{}`` for a store saved before head counts were kept.
    """
    words = words or [["a"], ["re", "d"], ["circle"]]
    steps = steps if steps is not None else [0, 2, 4]
    if probs is None:
        probs = {}
        for name, (h, w) in SHAPES.items():
            p = torch.zeros(len(steps), 1, h * w, TOKENS)
            p[..., 0] = 1.0
            probs[name] = p
    text = prompt or " ".join("".join(w) for w in words)
    g = torch.Generator().manual_seed(seed)
    lat = latents if latents is not None else torch.randn(total_steps + 1, 4, 4, 8, generator=g)
    return Run(
        config=RunConfig.from_dict(
            dict(
                prompt=text,
                seed=seed,
                steps=total_steps,
                guidance_scale=1.0,
                height=8,
                width=16,
                scheduler="DDIMScheduler",
                model={"weights_sha256": sha},
            )
        ),
        tokens=token_rows(words),
        negative_tokens=None,
        timesteps=torch.linspace(900, 100, total_steps, dtype=torch.float64),
        noise=lat[0].clone(),
        latents=lat,
        x0=x0 if x0 is not None else lat[1:].clone(),
        image=Image.new("RGB", (16, 8)),
        attention=AttentionStore(
            probs=probs,
            steps=steps,
            shapes=dict(SHAPES),
            heads=heads,
            head_counts=head_counts
            if head_counts is not None
            else {n: (int(p.shape[1]) if heads == "all" else 1) for n, p in probs.items()},
        ),
    )


def on_bos(steps: int = 3, heads: int = 1) -> dict[str, torch.Tensor]:
    """Attention stores where every query attends to BOS only: (steps, heads, queries, tokens)."""
    out = {}
    for name, (h, w) in SHAPES.items():
        p = torch.zeros(steps, heads, h * w, TOKENS)
        p[..., 0] = 1.0
        out[name] = p
    return out


def test_fake_run_is_consistent():
    run = fake_run()
    assert run.words == ["a", "red", "circle"]
    for name, p in run.attention.probs.items():
        assert torch.allclose(p.sum(-1), torch.ones(()))
        assert run.attention.grid(name).shape[2:4] == SHAPES[name]
