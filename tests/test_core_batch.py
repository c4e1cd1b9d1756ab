"""Batches: one stock batched call, recorded per image."""

import numpy as np
import pytest
import torch

from workbench import RecordingPolicy, generate
from workbench.core import generate_batch

PROMPTS = [
    "a red circle left of a blue square",
    "a horse of a painting",
    "a red circle left of a blue square",
]
SEEDS = [1, 2, 3]


def test_batch_equals_stock_batched_call(tiny_pipe):
    policy = RecordingPolicy(dtype="float32", negative=True)
    runs = generate_batch(
        tiny_pipe, PROMPTS, seeds=SEEDS, steps=4, guidance_scale=3.0, policy=policy, progress=False
    )
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    out = tiny_pipe(PROMPTS, num_inference_steps=4, guidance_scale=3.0, generator=gens)
    assert len(runs) == 3
    for run, image in zip(runs, out.images):
        assert np.array_equal(np.asarray(run.image), np.asarray(image))
    singles = [
        generate(tiny_pipe, p, seed=s, steps=4, guidance_scale=3.0, policy=policy, progress=False)
        for p, s in zip(PROMPTS, SEEDS)
    ]
    for run, single in zip(runs, singles):
        assert torch.equal(run.noise, single.noise)  # each image starts from its own seed's noise
        assert run.tokens.equals(single.tokens)
        assert run.config.batch == {"size": 3, "prompts": PROMPTS, "seeds": SEEDS}
        for name, probs in run.attention.probs.items():
            # batched kernels may differ from single ones in the last bits, not more
            assert torch.allclose(probs, single.attention.probs[name], atol=1e-4)
            assert torch.allclose(
                run.negative_attention.probs[name], single.negative_attention.probs[name], atol=1e-4
            )
        assert torch.allclose(run.latents, single.latents, atol=1e-4)
    # the two images with the same prompt but different seeds differ; their maps differ too
    name = next(iter(runs[0].attention.probs))
    assert not torch.allclose(runs[0].attention.probs[name], runs[2].attention.probs[name])


def test_batch_live_callback_gets_batches(tiny_pipe):
    seen = []
    generate_batch(
        tiny_pipe,
        PROMPTS[:2],
        seeds=[0, 1],
        steps=2,
        progress=False,
        on_step=lambda s, x0, lat: seen.append(x0.shape),
    )
    assert seen == [(2, 4, 8, 8)] * 2


def test_batch_bad_input(tiny_pipe):
    with pytest.raises(ValueError, match="seeds must be a list as long as prompts"):
        generate_batch(tiny_pipe, PROMPTS, seeds=[1, 2], progress=False)
    with pytest.raises(TypeError, match="prompts must be a list of str"):
        generate_batch(tiny_pipe, "a red circle", seeds=[1], progress=False)
    with pytest.raises(ValueError, match="seed"):
        generate_batch(tiny_pipe, PROMPTS[:1], seeds=[-4], progress=False)
